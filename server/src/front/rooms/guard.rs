//! The rooms front-end's bounds per source, with the clock passed in: how
//! fast one IP address may register, and how many bytes the server may send
//! to that address's clients that have not yet proved they receive (its
//! credit). Memory is bounded; forgetting an address only loosens its
//! bounds for a moment, never blocks anyone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Bytes of credit one address may hold: what it sent lately, at most this.
pub const CREDIT_MAX: u64 = 64 * 1024;
/// An address silent this long is forgotten (its credit and rate state).
const FORGET_AFTER: Duration = Duration::from_secs(120);
/// Addresses tracked at once; past this the idle ones go, then any.
const TRACKED: usize = 65_536;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + dt * rate >= burst
    }
}

/// One IPv4 address, or one IPv6 /64 (a host usually has a whole /64, so
/// counting single IPv6 addresses would bound nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(Ipv4Addr),
    V6([u8; 8]),
}

/// `ip` with an IPv4-mapped IPv6 address read as the IPv4 address it is
/// (the bans read addresses the same way).
pub use crate::hub::bans::canonical;

pub fn ip_key(ip: IpAddr) -> IpKey {
    match canonical(ip) {
        IpAddr::V4(v4) => IpKey::V4(v4),
        IpAddr::V6(v6) => {
            let mut p = [0u8; 8];
            p.copy_from_slice(&v6.octets()[..8]);
            IpKey::V6(p)
        }
    }
}

struct PerIp {
    registrations: Bucket,
    credit: u64,
    seen: Instant,
}

pub struct Guard {
    ips: HashMap<IpKey, PerIp>,
    per_minute: u32,
}

impl Guard {
    pub fn new(registrations_per_minute: u32) -> Guard {
        Guard {
            ips: HashMap::new(),
            per_minute: registrations_per_minute.max(1),
        }
    }

    fn rate(&self) -> (f64, f64) {
        (self.per_minute as f64 / 60.0, self.per_minute as f64)
    }

    fn entry(&mut self, now: Instant, ip: IpAddr) -> &mut PerIp {
        let key = ip_key(ip);
        if !self.ips.contains_key(&key) && self.ips.len() >= TRACKED {
            self.sweep(now);
            if self.ips.len() >= TRACKED {
                // Still full of busy addresses: forget one of them.
                if let Some(k) = self.ips.keys().next().copied() {
                    self.ips.remove(&k);
                }
            }
        }
        let burst = self.rate().1;
        self.ips.entry(key).or_insert_with(|| PerIp {
            registrations: Bucket::full(burst, now),
            credit: 0,
            seen: now,
        })
    }

    /// `len` bytes arrived from `ip`: that much more credit.
    pub fn received(&mut self, now: Instant, ip: IpAddr, len: usize) {
        let e = self.entry(now, ip);
        e.credit = (e.credit + len as u64).min(CREDIT_MAX);
        e.seen = e.seen.max(now);
    }

    /// Spend `len` bytes of `ip`'s credit, if it has them.
    pub fn spend(&mut self, now: Instant, ip: IpAddr, len: usize) -> bool {
        let e = self.entry(now, ip);
        if e.credit >= len as u64 {
            e.credit -= len as u64;
            true
        } else {
            false
        }
    }

    /// Charge `len` bytes against `ip`'s credit, as far as it goes.
    pub fn charge(&mut self, now: Instant, ip: IpAddr, len: usize) {
        let e = self.entry(now, ip);
        e.credit = e.credit.saturating_sub(len as u64);
    }

    /// One registration attempt from `ip`, if its rate allows.
    pub fn may_register(&mut self, now: Instant, ip: IpAddr) -> bool {
        let (rate, burst) = self.rate();
        self.entry(now, ip).registrations.take(now, rate, burst)
    }

    /// Forget addresses idle for a while whose registration rate has
    /// recovered (so that forgetting them loosens nothing but their credit).
    pub fn sweep(&mut self, now: Instant) {
        let (rate, burst) = self.rate();
        self.ips.retain(|_, e| {
            now.saturating_duration_since(e.seen) < FORGET_AFTER
                || !e.registrations.is_full(now, rate, burst)
        });
    }

    pub fn tracked(&self) -> usize {
        self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn registrations_are_rate_limited_per_address_with_a_clock_passed_in() {
        let t0 = Instant::now();
        let mut g = Guard::new(6); // six at once, then one every 10 s
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..6 {
            assert!(g.may_register(t0, a));
        }
        assert!(!g.may_register(t0, a));
        assert!(g.may_register(t0, b), "another address is not affected");
        assert!(!g.may_register(t0 + Duration::from_secs(9), a));
        assert!(g.may_register(t0 + Duration::from_secs(10), a));
        assert!(!g.may_register(t0 + Duration::from_secs(10), a));
        // A v4-mapped IPv6 address is the same address.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert!(!g.may_register(t0 + Duration::from_secs(10), mapped));
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let t0 = Instant::now();
        let mut g = Guard::new(1);
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(g.may_register(t0, x));
        assert!(!g.may_register(t0, y), "same /64");
        assert!(g.may_register(t0, z));
        assert_eq!(
            canonical(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
    }

    #[test]
    fn credit_is_what_the_address_sent_and_is_capped() {
        let t0 = Instant::now();
        let mut g = Guard::new(20);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!g.spend(t0, a, 1), "nothing received, nothing to send");
        g.received(t0, a, 10);
        assert!(g.spend(t0, a, 6));
        assert!(!g.spend(t0, a, 5));
        assert!(g.spend(t0, a, 4));
        g.received(t0, a, 10);
        g.charge(t0, a, 7);
        assert!(!g.spend(t0, a, 4));
        g.charge(t0, a, 7);
        assert!(!g.spend(t0, a, 1), "charged down to zero, not below");
        g.received(t0, a, 1 << 30);
        assert!(g.spend(t0, a, CREDIT_MAX as usize));
        assert!(!g.spend(t0, a, 1));
    }

    #[test]
    fn memory_is_bounded_and_idle_addresses_are_forgotten() {
        let t0 = Instant::now();
        let mut g = Guard::new(20);
        for i in 0..(TRACKED as u32 + 100) {
            g.received(t0, IpAddr::V4(Ipv4Addr::from(i)), 1);
        }
        assert!(g.tracked() <= TRACKED);
        g.sweep(t0 + FORGET_AFTER - Duration::from_secs(1));
        assert!(g.tracked() > 0);
        g.sweep(t0 + FORGET_AFTER);
        assert_eq!(g.tracked(), 0);
    }
}
