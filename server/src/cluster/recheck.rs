//! The re-check of stored items (docs/scaling.md, "Delivery"): a poke is at
//! most once, so a node also asks the store, on a slow timer, whether its
//! logged-in accounts users have items no poke delivered, and flushes
//! those. This is the pacing: one batch of at most `BATCH` users every
//! `EVERY`, going through every user in turn (a pass), and a fresh pass at
//! once when the bus comes back (pokes sent meanwhile were lost). Sans-IO:
//! `cw-bus-in` owns it and runs what it answers.

use std::time::{Duration, Instant};

/// How often one batch is checked.
pub const EVERY: Duration = Duration::from_secs(1);
/// Users asked about in one query at most.
pub const BATCH: usize = 1_000;

#[derive(Default)]
pub struct Recheck {
    /// The users of this pass (ids, ascending), and how far it has come.
    pass: Vec<u64>,
    next: usize,
    /// When the next batch is due (None: at once).
    due: Option<Instant>,
}

impl Recheck {
    /// The bus came back: a new pass starts at the next tick.
    pub fn restart(&mut self) {
        self.pass.clear();
        self.next = 0;
        self.due = None;
    }

    /// The batch to check at `now`, if one is due: the next users of the
    /// pass, or of a new pass (of `users()`, read only then) once the last
    /// one is done. None when nothing is due or nobody is here.
    pub fn batch(&mut self, now: Instant, users: impl FnOnce() -> Vec<u64>) -> Option<Vec<u64>> {
        if self.due.is_some_and(|d| now < d) {
            return None;
        }
        self.due = Some(now + EVERY);
        if self.next >= self.pass.len() {
            self.pass = users();
            self.pass.sort_unstable();
            self.next = 0;
        }
        let end = (self.next + BATCH).min(self.pass.len());
        let batch = self.pass[self.next..end].to_vec();
        self.next = end;
        (!batch.is_empty()).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_through_every_user_in_turn_one_per_interval() {
        let t0 = Instant::now();
        let mut r = Recheck::default();
        let n = 2 * BATCH as u64 + 5;
        let reads = std::cell::Cell::new(0);
        let users = || {
            reads.set(reads.get() + 1);
            (0..n).rev().collect::<Vec<u64>>()
        };
        let first = r.batch(t0, users).unwrap();
        assert_eq!(first, (0..BATCH as u64).collect::<Vec<_>>());
        // Not again before the interval.
        assert_eq!(r.batch(t0 + EVERY / 2, users), None);
        let second = r.batch(t0 + EVERY, users).unwrap();
        assert_eq!(second[0], BATCH as u64);
        let third = r.batch(t0 + EVERY * 2, users).unwrap();
        assert_eq!(third, (2 * BATCH as u64..n).collect::<Vec<_>>());
        assert_eq!(reads.get(), 1, "one read of the users per pass");
        // The pass is over: the next batch starts a new one.
        assert_eq!(r.batch(t0 + EVERY * 3, users).unwrap(), first);
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn the_bus_back_starts_a_new_pass_at_once_and_nobody_here_is_no_batch() {
        let t0 = Instant::now();
        let mut r = Recheck::default();
        assert_eq!(r.batch(t0, Vec::new), None);
        assert_eq!(r.batch(t0 + EVERY / 2, || vec![1]), None, "paced");
        assert_eq!(r.batch(t0 + EVERY, || vec![3, 1, 2]), Some(vec![1, 2, 3]));
        r.restart();
        assert_eq!(r.batch(t0 + EVERY, || vec![7]), Some(vec![7]));
    }
}
