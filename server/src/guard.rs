//! Failures inside the server's own threads. A worker's loop runs behind a
//! panic boundary ([`supervise`]): a panic in one turn (one item of work)
//! is logged and the worker goes on with the next, unless the caller says
//! the panic left shared state half updated; then the server stops loudly
//! through [`Fatal`] (an error in the log, then the same orderly shutdown as
//! SIGTERM, and chinwagd exits with status 70) rather than serve from a
//! broken state. The media relay's threads run under it.
//!
//! The store thread uses its own, finer containment (a savepoint per job,
//! see `store::guard`), and so does the rooms front-end (its state is
//! repaired, see `front::rooms`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crossbeam_channel::{bounded, Receiver, Sender};

/// Asks the server to stop because one of its parts cannot go on. Cheap to
/// clone; the first reason wins.
#[derive(Clone)]
pub struct Fatal {
    tx: Sender<String>,
}

impl Fatal {
    /// A new channel: the sender side for the parts, the receiver for whoever
    /// waits to stop the server (`main`, or a test).
    pub fn new() -> (Fatal, Receiver<String>) {
        let (tx, rx) = bounded(1);
        (Fatal { tx }, rx)
    }

    /// Log `why` as an error and ask for the server to stop.
    pub fn stop(&self, why: &str) {
        log::error!("fatal: {why}; stopping the server");
        let _ = self.tx.try_send(why.to_owned());
    }
}

/// What one turn of a supervised loop says.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    Continue,
    Stop,
}

/// Run `turn` until it says `Stop`. A turn that panics is logged and the
/// loop goes on, unless `state_poisoned()` says the panic left shared state
/// half updated: then `fatal` stops the server and the loop ends.
pub fn supervise(
    name: &str,
    fatal: &Fatal,
    state_poisoned: impl Fn() -> bool,
    mut turn: impl FnMut() -> Turn,
) {
    loop {
        match catch_unwind(AssertUnwindSafe(&mut turn)) {
            Ok(Turn::Continue) => {}
            Ok(Turn::Stop) => return,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                if state_poisoned() {
                    fatal.stop(&format!(
                        "{name} panicked ({what}) while changing shared state"
                    ));
                    return;
                }
                log::error!("{name} panicked ({what}); the item is dropped, the thread carries on");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_panic_outside_the_state_is_contained_and_the_loop_goes_on() {
        let (fatal, stopped) = Fatal::new();
        let total = Cell::new(0u32);
        let mut items = vec![3, 0, 2, 1].into_iter();
        supervise(
            "test-worker",
            &fatal,
            || false,
            || {
                let Some(n) = items.next() else {
                    return Turn::Stop;
                };
                // A bad item panics before it touches the state.
                total.set(total.get() + 6 / n);
                Turn::Continue
            },
        );
        assert_eq!(total.get(), 2 + 3 + 6);
        assert!(stopped.try_recv().is_err(), "the server was not stopped");
    }

    #[test]
    fn a_panic_that_leaves_the_state_half_updated_stops_the_server() {
        let (fatal, stopped) = Fatal::new();
        let half_updated = Cell::new(false);
        let mut turns = 0;
        supervise(
            "test-worker",
            &fatal,
            || half_updated.get(),
            || {
                turns += 1;
                half_updated.set(true);
                panic!("in the middle of an update");
            },
        );
        assert_eq!(turns, 1, "the loop ended at the first such panic");
        assert!(stopped.try_recv().unwrap().contains("test-worker"));
    }
}
