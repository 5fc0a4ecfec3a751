//! The accounts rate limits: registrations per address (`Counters`, events
//! per window) and password logins (`LoginLimits`: attempts in flight and
//! failures per source address and per account, with lock-outs that double).
//! The clock is passed in, so the rules are tested with a scripted clock;
//! this never reads the time, never does I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub(super) struct Counters {
    window: Duration,
    /// Keys kept at most; beyond, expired windows go first, then the oldest.
    max_keys: usize,
    counts: HashMap<String, (u32, Instant)>,
}

impl Counters {
    pub(super) fn new(window: Duration, max_keys: usize) -> Self {
        Counters {
            window,
            max_keys: max_keys.max(1),
            counts: HashMap::new(),
        }
    }

    /// Whether any of `keys` has been counted `allowed` times in its
    /// window at `now`.
    pub(super) fn limited(&self, now: Instant, keys: &[String], allowed: u32) -> bool {
        keys.iter().any(|k| {
            self.counts.get(k).is_some_and(|(n, since)| {
                *n >= allowed && now.saturating_duration_since(*since) < self.window
            })
        })
    }

    /// Count one event against each of `keys` at `now`. A key whose window
    /// has passed starts a new one.
    pub(super) fn record(&mut self, now: Instant, keys: &[String]) {
        for k in keys {
            if !self.counts.contains_key(k) {
                self.make_room(now);
            }
            let e = self.counts.entry(k.clone()).or_insert((0, now));
            if now.saturating_duration_since(e.1) >= self.window {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    fn make_room(&mut self, now: Instant) {
        if self.counts.len() < self.max_keys {
            return;
        }
        let window = self.window;
        self.counts
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
        if self.counts.len() >= self.max_keys {
            let oldest = self
                .counts
                .iter()
                .min_by_key(|(_, (_, since))| *since)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.counts.remove(&k);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }
}

/// The rules of [`LoginLimits`].
#[derive(Debug, Clone, Copy)]
pub(super) struct LoginRules {
    /// Failures (attempts in flight included) one key may reach in a window.
    pub allowed: u32,
    pub window: Duration,
    /// The first lock-out of a key; each further one doubles, up to `max_lock`.
    pub first_lock: Duration,
    pub max_lock: Duration,
    /// A key free of lock-outs for this long starts again at `first_lock`.
    pub forgive_after: Duration,
    /// A success from an address spares it the account's limit this long.
    pub trust_for: Duration,
    /// Keys kept at most, per kind (addresses, accounts, trusted pairs).
    pub max_keys: usize,
}

pub(super) const LOGIN_RULES: LoginRules = LoginRules {
    allowed: 5,
    window: Duration::from_secs(60),
    first_lock: Duration::from_secs(60),
    max_lock: Duration::from_secs(3600),
    forgive_after: Duration::from_secs(24 * 3600),
    trust_for: Duration::from_secs(30 * 24 * 3600),
    max_keys: 100_000,
};

/// The part of an address a limit counts: an IPv4 address, or the /64 of an
/// IPv6 one (a single host is usually given a whole /64).
pub(super) fn address_key(ip: IpAddr) -> String {
    match crate::hub::bans::canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[derive(Debug, Clone)]
struct Key {
    /// Failures in the window that started at `since`.
    failures: u32,
    since: Instant,
    /// Attempts begun and not yet finished: they count as failures until
    /// they are known not to be, so a parallel burst gets no more guesses
    /// than a sequence of attempts.
    in_flight: u32,
    /// Lock-outs so far (the next one lasts `first_lock` × 2^strikes).
    strikes: u32,
    locked_until: Option<Instant>,
}

impl Key {
    fn new(now: Instant) -> Key {
        Key {
            failures: 0,
            since: now,
            in_flight: 0,
            strikes: 0,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    fn roll(&mut self, now: Instant, r: &LoginRules) {
        if now.saturating_duration_since(self.since) >= r.window {
            self.failures = 0;
            self.since = now;
        }
        if let Some(t) = self.locked_until {
            if now.saturating_duration_since(t) >= r.forgive_after {
                self.strikes = 0;
                self.locked_until = None;
            }
        }
    }

    fn fail(&mut self, now: Instant, r: &LoginRules) {
        self.roll(now, r);
        self.failures += 1;
        if self.failures >= r.allowed {
            let lock = r
                .first_lock
                .saturating_mul(1u32 << self.strikes.min(16))
                .min(r.max_lock);
            self.locked_until = Some(now + lock);
            self.strikes = self.strikes.saturating_add(1);
            self.failures = 0;
            self.since = now;
        }
    }

    /// Nothing about this key is worth remembering any more.
    fn idle(&self, now: Instant, r: &LoginRules) -> bool {
        self.in_flight == 0
            && now.saturating_duration_since(self.since) >= r.window
            && !matches!(self.locked_until, Some(t) if now.saturating_duration_since(t) < r.forgive_after)
    }
}

/// Keys of one kind, bounded: idle keys go first, then the oldest window
/// with nothing in flight.
struct Keys {
    map: HashMap<String, Key>,
}

impl Keys {
    fn get_mut(&mut self, k: &str, now: Instant, r: &LoginRules) -> &mut Key {
        if !self.map.contains_key(k) {
            if self.map.len() >= r.max_keys {
                self.map.retain(|_, v| !v.idle(now, r));
            }
            if self.map.len() >= r.max_keys {
                let oldest = self
                    .map
                    .iter()
                    .filter(|(_, v)| v.in_flight == 0)
                    .min_by_key(|(_, v)| v.since)
                    .map(|(k, _)| k.clone());
                if let Some(o) = oldest {
                    self.map.remove(&o);
                }
            }
            self.map.insert(k.to_owned(), Key::new(now));
        }
        let e = self.map.get_mut(k).expect("inserted above");
        e.roll(now, r);
        e
    }
}

/// What `LoginLimits::begin` says about a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Go ahead: check the password, then `finish` this attempt.
    Go(Attempt),
    /// Attempts in flight fill the allowance: wait for one to finish.
    Wait,
    /// Locked out until then.
    Locked(Instant),
}

/// An attempt in flight: the keys it counts against.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Attempt {
    address: String,
    /// None when the address logged in to this account recently.
    account: Option<String>,
    trust: (String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    Failure,
    /// Neither: the attempt could not be judged (store busy, shutting down).
    Abandoned,
}

/// Password-login limits. Per source address: `allowed` failures per
/// window, then a lock-out that doubles each time. Per account: the same,
/// but only for addresses that have not logged in to that account lately,
/// so strangers guessing an account cannot lock its owner out. Attempts in
/// flight count as failures until they finish.
pub(super) struct LoginLimits {
    rules: LoginRules,
    addresses: Keys,
    accounts: Keys,
    /// (account, address) -> last success.
    trusted: HashMap<(String, String), Instant>,
}

impl LoginLimits {
    pub(super) fn new(rules: LoginRules) -> Self {
        LoginLimits {
            rules,
            addresses: Keys {
                map: HashMap::new(),
            },
            accounts: Keys {
                map: HashMap::new(),
            },
            trusted: HashMap::new(),
        }
    }

    /// May a login to `account` from `ip` start at `now`?
    pub(super) fn begin(&mut self, now: Instant, ip: IpAddr, account: &str) -> Verdict {
        let r = self.rules;
        let address = address_key(ip);
        let account = account.to_lowercase();
        let trust = (account.clone(), address.clone());
        let trusted = self
            .trusted
            .get(&trust)
            .is_some_and(|t| now.saturating_duration_since(*t) < r.trust_for);
        let a = self.addresses.get_mut(&address, now, &r).clone();
        let b = if trusted {
            None
        } else {
            Some(self.accounts.get_mut(&account, now, &r).clone())
        };
        let keys = [Some(&a), b.as_ref()];
        let lock = keys
            .iter()
            .flatten()
            .filter_map(|k| k.locked_until.filter(|_| k.locked(now)))
            .max();
        if let Some(until) = lock {
            return Verdict::Locked(until);
        }
        if keys
            .iter()
            .flatten()
            .any(|k| k.failures + k.in_flight >= r.allowed)
        {
            return Verdict::Wait;
        }
        self.addresses.get_mut(&address, now, &r).in_flight += 1;
        if !trusted {
            self.accounts.get_mut(&account, now, &r).in_flight += 1;
        }
        Verdict::Go(Attempt {
            address,
            account: (!trusted).then_some(account),
            trust,
        })
    }

    /// The attempt ended at `now` with `outcome`.
    pub(super) fn finish(&mut self, now: Instant, attempt: Attempt, outcome: Outcome) {
        let r = self.rules;
        let mut keys = vec![self.addresses.get_mut(&attempt.address, now, &r)];
        let account = attempt
            .account
            .as_deref()
            .map(|a| self.accounts.get_mut(a, now, &r));
        keys.extend(account);
        for k in keys {
            k.in_flight = k.in_flight.saturating_sub(1);
            if outcome == Outcome::Failure {
                k.fail(now, &r);
            }
        }
        if outcome == Outcome::Success {
            if !self.trusted.contains_key(&attempt.trust) && self.trusted.len() >= r.max_keys {
                let ttl = r.trust_for;
                self.trusted
                    .retain(|_, t| now.saturating_duration_since(*t) < ttl);
                if self.trusted.len() >= r.max_keys {
                    let oldest = self
                        .trusted
                        .iter()
                        .min_by_key(|(_, t)| **t)
                        .map(|(k, _)| k.clone());
                    if let Some(o) = oldest {
                        self.trusted.remove(&o);
                    }
                }
            }
            self.trusted.insert(attempt.trust, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_limit_holds_for_one_window_then_lifts() {
        let t0 = Instant::now();
        let mut c = Counters::new(MIN, 100);
        let ip = keys(&["ip:1"]);
        for i in 0..4 {
            c.record(t0 + Duration::from_secs(i), &ip);
            assert!(!c.limited(t0 + Duration::from_secs(i), &ip, 5));
        }
        c.record(t0 + Duration::from_secs(10), &ip);
        assert!(c.limited(t0 + Duration::from_secs(10), &ip, 5));
        // Still within the window that started at t0.
        assert!(c.limited(t0 + MIN - Duration::from_millis(1), &ip, 5));
        // The window started at the first event, not the last.
        assert!(!c.limited(t0 + MIN, &ip, 5));
        // A new event after the window starts counting again from one.
        c.record(t0 + MIN, &ip);
        assert!(!c.limited(t0 + MIN, &ip, 2));
        c.record(t0 + MIN + Duration::from_secs(1), &ip);
        assert!(c.limited(t0 + MIN + Duration::from_secs(1), &ip, 2));
    }

    #[test]
    fn any_limited_key_limits() {
        let t0 = Instant::now();
        let mut c = Counters::new(MIN, 100);
        c.record(t0, &keys(&["ip:1", "email:a@b.c"]));
        c.record(t0, &keys(&["ip:2", "email:a@b.c"]));
        // Two addresses, one email: the email is at its limit of two.
        assert!(c.limited(t0, &keys(&["ip:3", "email:a@b.c"]), 2));
        assert!(!c.limited(t0, &keys(&["ip:1", "email:x@y.z"]), 2));
        assert!(c.limited(t0, &keys(&["ip:1"]), 1));
    }

    #[test]
    fn a_clock_that_steps_back_never_panics_or_unlimits() {
        let t0 = Instant::now() + MIN;
        let mut c = Counters::new(MIN, 100);
        let ip = keys(&["ip:1"]);
        c.record(t0, &ip);
        assert!(c.limited(t0 - Duration::from_secs(5), &ip, 1));
        c.record(t0 - Duration::from_secs(5), &ip);
        assert!(c.limited(t0, &ip, 2));
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let t0 = Instant::now();
        let mut c = Counters::new(MIN, 3);
        for i in 0..3 {
            c.record(t0 + Duration::from_secs(i), &keys(&[&format!("ip:{i}")]));
        }
        assert_eq!(c.len(), 3);
        // Full, none expired: the oldest window (ip:0) makes room.
        c.record(t0 + Duration::from_secs(5), &keys(&["ip:9"]));
        assert_eq!(c.len(), 3);
        assert!(!c.limited(t0 + Duration::from_secs(5), &keys(&["ip:0"]), 1));
        assert!(c.limited(t0 + Duration::from_secs(5), &keys(&["ip:1"]), 1));
        // Later, every old window has expired: they all go at once.
        c.record(t0 + MIN + Duration::from_secs(3), &keys(&["ip:8"]));
        assert_eq!(c.len(), 2, "ip:9 is still in its window, ip:8 is new");
    }

    const RULES: LoginRules = LOGIN_RULES;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn go(v: Verdict) -> Attempt {
        match v {
            Verdict::Go(a) => a,
            other => panic!("expected Go, got {other:?}"),
        }
    }

    #[test]
    fn attempts_in_flight_count_so_a_parallel_burst_gets_five_guesses() {
        let t0 = Instant::now();
        let mut l = LoginLimits::new(RULES);
        let burst: Vec<Verdict> = (0..258)
            .map(|_| l.begin(t0, ip("192.0.2.1"), "owner@x.org"))
            .collect();
        let started: Vec<Attempt> = burst
            .into_iter()
            .filter_map(|v| match v {
                Verdict::Go(a) => Some(a),
                Verdict::Wait => None,
                Verdict::Locked(_) => panic!("nothing failed yet"),
            })
            .collect();
        assert_eq!(started.len(), 5, "only the allowance is in flight");
        for a in started {
            l.finish(t0, a, Outcome::Failure);
        }
        // The five failed: the address is locked now, and no sixth guess starts.
        assert!(matches!(
            l.begin(t0, ip("192.0.2.1"), "owner@x.org"),
            Verdict::Locked(_)
        ));
    }

    #[test]
    fn an_attempt_that_is_not_a_failure_frees_its_place() {
        let t0 = Instant::now();
        let mut l = LoginLimits::new(RULES);
        let a: Vec<Attempt> = (0..5)
            .map(|_| go(l.begin(t0, ip("192.0.2.1"), "a@x.org")))
            .collect();
        assert_eq!(l.begin(t0, ip("192.0.2.1"), "a@x.org"), Verdict::Wait);
        let mut a = a.into_iter();
        l.finish(t0, a.next().unwrap(), Outcome::Success);
        go(l.begin(t0, ip("192.0.2.1"), "a@x.org"));
        l.finish(t0, a.next().unwrap(), Outcome::Abandoned);
        go(l.begin(t0, ip("192.0.2.1"), "a@x.org"));
    }

    #[test]
    fn strangers_cannot_lock_the_owner_out() {
        let t0 = Instant::now();
        let mut l = LoginLimits::new(RULES);
        // The owner logs in from home once.
        let a = go(l.begin(t0, ip("198.51.100.7"), "Owner@x.org"));
        l.finish(t0, a, Outcome::Success);
        // Attackers from many addresses guess until the account is locked
        // for strangers.
        let mut t = t0;
        for i in 0..5 {
            t += Duration::from_secs(1);
            let a = go(l.begin(t, ip(&format!("203.0.113.{i}")), "owner@x.org"));
            l.finish(t, a, Outcome::Failure);
        }
        assert!(matches!(
            l.begin(t, ip("203.0.113.200"), "owner@x.org"),
            Verdict::Locked(_)
        ));
        // The owner's address, with its recent success, still gets in.
        let a = go(l.begin(t, ip("198.51.100.7"), "owner@x.org"));
        l.finish(t, a, Outcome::Success);
        // Other accounts are not affected from the attackers' addresses.
        go(l.begin(t, ip("203.0.113.200"), "someone@x.org"));
    }

    #[test]
    fn lock_outs_double_up_to_the_cap_and_are_forgiven_later() {
        let t0 = Instant::now();
        let mut l = LoginLimits::new(RULES);
        let who = ip("192.0.2.9");
        let mut t = t0;
        let mut locks = Vec::new();
        for round in 0..8 {
            // A different account each round: only the address is limited.
            let acct = format!("a{round}@x.org");
            for _ in 0..5 {
                let a = go(l.begin(t, who, &acct));
                l.finish(t, a, Outcome::Failure);
            }
            let Verdict::Locked(until) = l.begin(t, who, &acct) else {
                panic!("locked after five failures");
            };
            locks.push(until - t);
            // Just before the end it still holds; at the end it lifts.
            assert!(matches!(
                l.begin(until - Duration::from_millis(1), who, &acct),
                Verdict::Locked(_)
            ));
            t = until;
        }
        let secs: Vec<u64> = locks.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
        // A day without a lock-out: back to the first lock's length.
        t += RULES.forgive_after;
        for _ in 0..5 {
            let a = go(l.begin(t, who, "z@x.org"));
            l.finish(t, a, Outcome::Failure);
        }
        let Verdict::Locked(until) = l.begin(t, who, "z@x.org") else {
            panic!("locked again");
        };
        assert_eq!(until - t, RULES.first_lock);
    }

    #[test]
    fn failures_spread_over_windows_do_not_lock() {
        let t0 = Instant::now();
        let mut l = LoginLimits::new(RULES);
        let mut t = t0;
        for _ in 0..20 {
            for _ in 0..4 {
                let a = go(l.begin(t, ip("192.0.2.1"), "a@x.org"));
                l.finish(t, a, Outcome::Failure);
            }
            t += RULES.window;
        }
        go(l.begin(t, ip("192.0.2.1"), "a@x.org"));
    }

    #[test]
    fn one_ipv6_host_is_one_address_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = LoginLimits::new(LoginRules {
            max_keys: 4,
            ..RULES
        });
        // Five failures from five addresses of one /64 lock that /64.
        for i in 0..5 {
            let a = go(l.begin(
                t0,
                ip(&format!("2001:db8:1:2::{i}")),
                &format!("u{i}@x.org"),
            ));
            l.finish(t0, a, Outcome::Failure);
        }
        assert!(matches!(
            l.begin(t0, ip("2001:db8:1:2:ffff::1"), "v@x.org"),
            Verdict::Locked(_)
        ));
        assert!(l.addresses.map.len() <= 4 && l.accounts.map.len() <= 4);
        // IPv4-mapped addresses count as their IPv4 address.
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }
}
