//! Pokes ("user X has stored items": docs/scaling.md, "Delivery") at most
//! one per `GAP` per user and subject. A poke asked for within `GAP` of the
//! last one sent is not dropped but deferred: it goes once the gap is over
//! (on the next tick), and any number of pokes asked for meanwhile go as
//! that one. Coalescing loses nothing: a poke is asked for only after its
//! items are committed, and the flush it causes takes every item committed
//! before it, so one later poke covers all of them. Sans-IO: the caller
//! holds it in a mutex and publishes what it answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The least time between two pokes for one user on one subject.
pub const GAP: Duration = Duration::from_millis(100);
/// Users (per subject) tracked at once; past that a poke is sent at once,
/// untracked (the bus command queue still bounds the whole).
pub const MAX_TRACKED: usize = 10_000;

struct Track {
    last: Instant,
    /// A poke was asked for since `last`: send it once the gap is over.
    deferred: bool,
}

/// The pokes recently sent, by (subject, user).
#[derive(Default)]
pub struct Pokes {
    sent: HashMap<(String, String), Track>,
}

impl Pokes {
    /// A poke for `name` on `subject` is asked for at `now`: true to send
    /// it now, false when it is deferred to [`Pokes::due`].
    pub fn ask(&mut self, now: Instant, subject: &str, name: &str) -> bool {
        let key = (subject.to_owned(), name.to_owned());
        match self.sent.get_mut(&key) {
            Some(t) if now.saturating_duration_since(t.last) < GAP => {
                t.deferred = true;
                false
            }
            Some(t) => {
                t.last = now;
                t.deferred = false;
                true
            }
            None => {
                if self.sent.len() < MAX_TRACKED {
                    self.sent.insert(
                        key,
                        Track {
                            last: now,
                            deferred: false,
                        },
                    );
                }
                true
            }
        }
    }

    /// The deferred pokes whose gap is over at `now`, as (subject, user),
    /// marked sent; entries idle for a gap are forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.sent.retain(|key, t| {
            if now.saturating_duration_since(t.last) < GAP {
                return true;
            }
            if t.deferred {
                t.deferred = false;
                t.last = now;
                out.push(key.clone());
                return true;
            }
            false
        });
        out
    }

    /// Entries tracked (tests).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pokes_within_the_gap_go_as_one_once_it_is_over() {
        let t0 = Instant::now();
        let mut p = Pokes::default();
        assert!(p.ask(t0, "s", "dave"));
        // Another user, another subject: not limited by dave's.
        assert!(p.ask(t0, "s", "carol"));
        assert!(p.ask(t0, "g", "dave"));
        for ms in [1, 10, 99] {
            assert!(!p.ask(t0 + Duration::from_millis(ms), "s", "dave"));
        }
        assert_eq!(p.due(t0 + Duration::from_millis(50)), []);
        let t1 = t0 + GAP;
        assert_eq!(p.due(t1), [("s".to_owned(), "dave".to_owned())]);
        // The deferred one counted as sent at t1; nothing more is due.
        assert!(!p.ask(t1 + Duration::from_millis(1), "s", "dave"));
        assert_eq!(p.due(t1 + Duration::from_millis(50)), []);
        assert_eq!(
            p.due(t1 + GAP),
            [("s".to_owned(), "dave".to_owned())],
            "asked again within the new gap"
        );
        // Idle for a gap: forgotten, and the next poke goes at once.
        let later = t1 + GAP * 3;
        assert_eq!(p.due(later), []);
        assert_eq!(p.tracked(), 0);
        assert!(p.ask(later, "s", "dave"));
    }

    #[test]
    fn past_the_tracked_users_a_poke_goes_at_once_untracked() {
        let t0 = Instant::now();
        let mut p = Pokes::default();
        for i in 0..MAX_TRACKED {
            assert!(p.ask(t0, "s", &format!("u{i}")));
        }
        assert!(p.ask(t0, "s", "extra"));
        assert!(p.ask(t0, "s", "extra"), "untracked: never deferred");
        assert_eq!(p.tracked(), MAX_TRACKED);
    }
}
