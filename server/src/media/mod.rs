//! The media relay (see docs/bridging.md).

use std::net::IpAddr;
use std::time::Duration;

/// The relay's settings, from `Config::relay`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: IpAddr,
    pub max_calls: usize,
    pub packets_per_second: u32,
    pub idle_timeout: Duration,
    pub ring_timeout: Duration,
}
