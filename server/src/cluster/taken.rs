//! The `taken` envelope (Call op 5) sent again until acknowledged. The bus
//! delivers at most once: a lost `taken` would leave the callee's node's
//! half of a relayed call ringing (wrongly busy, then silently gone after
//! the ring time while the call goes on). The caller's node sends it, then
//! again after 250 ms, 500 ms, 1 s, 2 s and 4 s (six sends in 7.75 s at
//! most) until the callee's node answers `taken_ack` (op 6), which it does
//! for every `taken` it gets; receiving `taken` twice changes nothing. A
//! later event of the same call pair (an `ended`, a new `offer`) stops the
//! retries first, so a stale `taken` never follows it on the bus (one
//! publisher, one subject: NATS keeps their order). Sans-IO: the caller
//! holds it in a mutex and publishes while holding it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The wait before the first repeat; doubled after each.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Sends of one `taken` in all, the first included.
pub const MAX_SENDS: u32 = 6;
/// Calls whose `taken` is awaiting its acknowledgement at once; past that a
/// `taken` is sent once, as before.
pub const MAX_PENDING: usize = 4096;

/// One `taken` awaiting its acknowledgement.
struct Pending {
    /// The callee's node's subject.
    subject: String,
    sends: u32,
    next: Instant,
}

/// What [`Retries::due`] asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send the `taken` of (caller, callee) again, on this subject.
    Resend {
        subject: String,
        caller: String,
        callee: String,
    },
    /// Sent `MAX_SENDS` times, never acknowledged: given up.
    GaveUp { caller: String, callee: String },
}

/// The `taken` envelopes awaiting acknowledgement, by (caller, callee):
/// names are unique across the cluster, and a pair has one call at a time.
#[derive(Default)]
pub struct Retries {
    pending: HashMap<(String, String), Pending>,
}

impl Retries {
    /// `taken` for `caller`'s call to `callee` was just sent on `subject`:
    /// await its acknowledgement (false: too many pending, not tracked).
    pub fn sent(&mut self, now: Instant, subject: &str, caller: &str, callee: &str) -> bool {
        let key = (caller.to_owned(), callee.to_owned());
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            return false;
        }
        self.pending.insert(
            key,
            Pending {
                subject: subject.to_owned(),
                sends: 1,
                next: now + FIRST_RETRY,
            },
        );
        true
    }

    /// The callee's node acknowledged, or the pair moved on (ended, a new
    /// offer): no more sends.
    pub fn done(&mut self, caller: &str, callee: &str) {
        self.pending.remove(&(caller.to_owned(), callee.to_owned()));
    }

    /// What is due at `now`: the repeats to send (counted as sent) and the
    /// ones given up (forgotten).
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        self.pending.retain(|(caller, callee), p| {
            if p.next > now {
                return true;
            }
            if p.sends >= MAX_SENDS {
                out.push(Due::GaveUp {
                    caller: caller.clone(),
                    callee: callee.clone(),
                });
                return false;
            }
            out.push(Due::Resend {
                subject: p.subject.clone(),
                caller: caller.clone(),
                callee: callee.clone(),
            });
            p.next = now + FIRST_RETRY * 2u32.pow(p.sends);
            p.sends += 1;
            true
        });
        out
    }

    /// `taken` envelopes awaiting acknowledgement.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resend(caller: &str, callee: &str) -> Due {
        Due::Resend {
            subject: "s".into(),
            caller: caller.into(),
            callee: callee.into(),
        }
    }

    #[test]
    fn a_taken_is_sent_again_with_backoff_then_given_up() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        assert!(r.sent(t0, "s", "fern", "yves"));
        assert!(r
            .due(t0 + FIRST_RETRY - Duration::from_millis(1))
            .is_empty());
        // Repeats at 250 ms, then 500 ms, 1 s, 2 s and 4 s after the last.
        let mut at = t0;
        for gap in [250, 500, 1000, 2000, 4000] {
            let gap = Duration::from_millis(gap);
            let early = at + gap - Duration::from_millis(1);
            assert!(r.due(early).is_empty(), "nothing before {gap:?}");
            at += gap;
            assert_eq!(r.due(at), vec![resend("fern", "yves")], "after {gap:?}");
        }
        assert_eq!(
            r.due(at + Duration::from_secs(8)),
            vec![Due::GaveUp {
                caller: "fern".into(),
                callee: "yves".into()
            }]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn an_acknowledgement_or_a_later_event_stops_the_repeats() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.sent(t0, "s", "fern", "yves");
        r.sent(t0, "s", "zed", "yves");
        r.done("fern", "yves");
        assert_eq!(r.due(t0 + FIRST_RETRY), vec![resend("zed", "yves")]);
        r.done("zed", "yves");
        assert!(r.due(t0 + Duration::from_secs(60)).is_empty());
        // An acknowledgement of nothing pending changes nothing.
        r.done("nobody", "yves");
        assert!(r.is_empty());
    }

    #[test]
    fn pending_acknowledgements_are_bounded() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        for i in 0..MAX_PENDING {
            assert!(r.sent(t0, "s", &format!("c{i}"), "x"));
        }
        assert!(!r.sent(t0, "s", "one-more", "x"), "past the bound");
        // The same pair again replaces its entry.
        assert!(r.sent(t0, "s", "c0", "x"));
        assert_eq!(r.len(), MAX_PENDING);
    }
}
