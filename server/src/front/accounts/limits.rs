//! The counters behind the accounts rate limits: failed logins per address
//! and per email, registrations per address. Each key counts events in its
//! current window. The clock is passed in, so the rules are tested with a
//! scripted clock; this never reads the time, never does I/O.

use std::collections::HashMap;
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
}
