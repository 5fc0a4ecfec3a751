//! Log lines a stranger can cause are rate-limited per source address, so
//! the log cannot be used as an amplifier (a 5-byte LOGIN must not buy a
//! 100-byte line each time). Each address gets `PER_WINDOW` lines of each
//! kind per `WINDOW`; the rest are counted, and once the window is over one
//! summary line says how many were left out. The sweep thread calls
//! [`flush`] every second to write those summaries. Lines about the server
//! as a whole that a flood from many addresses could repeat (a connection
//! refused for want of a thread) are limited the same way, per kind only:
//! [`server_log!`].
//!
//! Per-datagram and per-frame noise is at debug level instead (and never
//! shows a text or a password: see `chinwag_proto::Redact`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lines of one kind one address may cause per window.
pub const PER_WINDOW: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past that the oldest windows are closed early.
const MAX_KEYS: usize = 10_000;

struct Slot {
    since: Instant,
    logged: u32,
    suppressed: u64,
}

/// A window that ended with lines left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// None: a server-wide kind ([`allow_server`]).
    pub ip: Option<IpAddr>,
    pub kind: &'static str,
    pub suppressed: u64,
}

/// The counting behind [`allow`]; the clock is passed in.
pub struct Limiter {
    slots: HashMap<(Option<IpAddr>, &'static str), Slot>,
    max_keys: usize,
    /// Summaries of windows closed early to make room, for the next flush.
    closed: Vec<Summary>,
}

impl Limiter {
    pub fn new(max_keys: usize) -> Limiter {
        Limiter {
            slots: HashMap::new(),
            max_keys: max_keys.max(1),
            closed: Vec::new(),
        }
    }

    /// May a line of `kind` caused by `ip` be written at `now`?
    pub fn allow(&mut self, now: Instant, ip: IpAddr, kind: &'static str) -> bool {
        self.allow_from(now, Some(crate::hub::bans::canonical(ip)), kind)
    }

    /// May a line of `kind` about the server as a whole be written at `now`?
    pub fn allow_server(&mut self, now: Instant, kind: &'static str) -> bool {
        self.allow_from(now, None, kind)
    }

    fn allow_from(&mut self, now: Instant, ip: Option<IpAddr>, kind: &'static str) -> bool {
        if !self.slots.contains_key(&(ip, kind)) && self.slots.len() >= self.max_keys {
            let mut summaries = self.flush(now);
            self.closed.append(&mut summaries);
            if self.slots.len() >= self.max_keys {
                let oldest = self
                    .slots
                    .iter()
                    .min_by_key(|(_, s)| s.since)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    let s = self.slots.remove(&k).expect("just found");
                    if s.suppressed > 0 {
                        self.closed.push(Summary {
                            ip: k.0,
                            kind: k.1,
                            suppressed: s.suppressed,
                        });
                    }
                }
            }
        }
        let slot = self.slots.entry((ip, kind)).or_insert(Slot {
            since: now,
            logged: 0,
            suppressed: 0,
        });
        if slot.logged < PER_WINDOW {
            slot.logged += 1;
            true
        } else {
            slot.suppressed += 1;
            false
        }
    }

    /// Close the windows that are over at `now`: the summaries of those
    /// that left lines out.
    pub fn flush(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = std::mem::take(&mut self.closed);
        self.slots.retain(|(ip, kind), s| {
            if now.saturating_duration_since(s.since) < WINDOW {
                return true;
            }
            if s.suppressed > 0 {
                out.push(Summary {
                    ip: *ip,
                    kind,
                    suppressed: s.suppressed,
                });
            }
            false
        });
        out
    }
}

fn global() -> &'static Mutex<Limiter> {
    static LIMITER: OnceLock<Mutex<Limiter>> = OnceLock::new();
    LIMITER.get_or_init(|| Mutex::new(Limiter::new(MAX_KEYS)))
}

/// May a line of `kind` caused by `ip` be written now? (Process-wide.)
pub fn allow(ip: IpAddr, kind: &'static str) -> bool {
    global().lock().allow(Instant::now(), ip, kind)
}

/// May a line of server-wide `kind` be written now? (Process-wide.)
pub fn allow_server(kind: &'static str) -> bool {
    global().lock().allow_server(Instant::now(), kind)
}

/// Write the summaries of windows that are over (called every second).
pub fn flush(now: Instant) {
    let summaries = global().lock().flush(now);
    for s in summaries {
        match s.ip {
            Some(ip) => log::warn!(
                "{ip}: {} more \"{}\" log lines from this address left out in the last {} s",
                s.suppressed,
                s.kind,
                WINDOW.as_secs()
            ),
            None => log::warn!(
                "{} more \"{}\" log lines left out in the last {} s",
                s.suppressed,
                s.kind,
                WINDOW.as_secs()
            ),
        }
    }
}

/// `log!` for a line a peer can cause: at most `PER_WINDOW` lines of this
/// kind per address per window, and nothing at all when the level is off.
macro_rules! peer_log {
    ($lvl:expr, $ip:expr, $kind:expr, $($arg:tt)+) => {
        if log::log_enabled!($lvl) && $crate::logs::allow($ip, $kind) {
            log::log!($lvl, $($arg)+);
        }
    };
}
pub(crate) use peer_log;

/// `log!` for a line about the server as a whole that a flood can repeat
/// (from any number of addresses): at most `PER_WINDOW` lines of this kind
/// per window, then one summary.
macro_rules! server_log {
    ($lvl:expr, $kind:expr, $($arg:tt)+) => {
        if log::log_enabled!($lvl) && $crate::logs::allow_server($kind) {
            log::log!($lvl, $($arg)+);
        }
    };
}
pub(crate) use server_log;

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_server_wide_kind_is_limited_whatever_the_addresses() {
        let t0 = Instant::now();
        let mut l = Limiter::new(100);
        let allowed = (0..1000).filter(|_| l.allow_server(t0, "x")).count();
        assert_eq!(allowed, PER_WINDOW as usize);
        // An address's lines of the same kind are counted apart.
        assert!(l.allow(t0, ip("192.0.2.1"), "x"));
        assert_eq!(
            l.flush(t0 + WINDOW),
            vec![Summary {
                ip: None,
                kind: "x",
                suppressed: 1000 - PER_WINDOW as u64
            }]
        );
    }

    #[test]
    fn each_address_gets_its_lines_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(100);
        let a = ip("192.0.2.1");
        let allowed = (0..1000).filter(|_| l.allow(t0, a, "login")).count();
        assert_eq!(allowed, PER_WINDOW as usize);
        // Another kind and another address have their own budgets.
        assert!(l.allow(t0, a, "connect"));
        assert!(l.allow(t0, ip("192.0.2.2"), "login"));
        // Nothing to summarise before the window ends.
        assert!(l.flush(t0 + WINDOW - Duration::from_millis(1)).is_empty());
        let s = l.flush(t0 + WINDOW);
        assert_eq!(
            s,
            vec![Summary {
                ip: Some(a),
                kind: "login",
                suppressed: 1000 - PER_WINDOW as u64
            }]
        );
        // A new window starts afresh.
        assert!(l.allow(t0 + WINDOW, a, "login"));
    }

    #[test]
    fn the_number_of_addresses_tracked_is_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3);
        for i in 0..3 {
            for _ in 0..20 {
                l.allow(t0, ip(&format!("192.0.2.{i}")), "x");
            }
        }
        assert!(l.allow(t0, ip("192.0.2.200"), "x"));
        assert_eq!(l.slots.len(), 3);
        // The evicted window's count is not lost: it is summarised.
        let s = l.flush(t0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, 20 - PER_WINDOW as u64);
    }
}
