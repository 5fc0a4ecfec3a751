//! Failures inside the server's own threads. A worker's loop runs behind a
//! panic boundary ([`supervise`]); shared state that a panic may leave half
//! updated sits behind a [`Guarded`] lock, which remembers the panic
//! (parking_lot's locks, unlike std's, do not poison). A panic that did not
//! touch guarded state is logged and the worker goes on with its next item;
//! one that did poisons the state, and the server stops loudly through
//! [`Fatal`] (an error in the log, then the same orderly shutdown as SIGTERM,
//! and chinwagd exits with status 70) rather than serve from a broken state.
//!
//! The store thread uses its own, finer containment (a savepoint per job,
//! see `store::guard`).

use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Mutex, MutexGuard};

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

/// The lock on a shared state was held by a thread that panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poisoned;

/// A mutex that remembers a panic inside a critical section.
pub struct Guarded<T> {
    inner: Mutex<T>,
    poisoned: AtomicBool,
}

/// The lock of a [`Guarded`]; a panic while it is held poisons the state.
pub struct GuardedLock<'a, T> {
    guard: MutexGuard<'a, T>,
    poisoned: &'a AtomicBool,
}

impl<T> Guarded<T> {
    pub fn new(value: T) -> Self {
        Guarded {
            inner: Mutex::new(value),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Lock the state, unless a panic left it half updated.
    pub fn lock(&self) -> Result<GuardedLock<'_, T>, Poisoned> {
        let guard = self.inner.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Poisoned);
        }
        Ok(GuardedLock {
            guard,
            poisoned: &self.poisoned,
        })
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

impl<T> Deref for GuardedLock<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for GuardedLock<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for GuardedLock<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.poisoned.store(true, Ordering::Release);
        }
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
    use std::sync::Arc;

    #[test]
    fn a_panic_outside_the_state_is_contained_and_the_loop_goes_on() {
        let (fatal, stopped) = Fatal::new();
        let state = Arc::new(Guarded::new(0u32));
        let mut items = vec![3, 0, 2, 1].into_iter();
        let s = state.clone();
        supervise(
            "test-worker",
            &fatal,
            || s.is_poisoned(),
            || {
                let Some(n) = items.next() else {
                    return Turn::Stop;
                };
                // A bad item panics before it touches the state.
                let step = 6 / n;
                *s.lock().unwrap() += step;
                Turn::Continue
            },
        );
        assert_eq!(*state.lock().unwrap(), 2 + 3 + 6);
        assert!(stopped.try_recv().is_err(), "the server was not stopped");
    }

    #[test]
    fn a_panic_inside_the_state_poisons_it_and_stops_the_server() {
        let (fatal, stopped) = Fatal::new();
        let state = Arc::new(Guarded::new(vec![1, 2, 3]));
        let s = state.clone();
        let mut turns = 0;
        supervise(
            "test-worker",
            &fatal,
            || s.is_poisoned(),
            || {
                turns += 1;
                let mut st = s.lock().unwrap();
                st.push(4);
                // Half updated, then a panic.
                let i = st.len() + 10;
                st[i] = 0;
                Turn::Continue
            },
        );
        assert_eq!(turns, 1, "the loop ended at the first poisoning panic");
        assert!(stopped.try_recv().unwrap().contains("test-worker"));
        assert_eq!(state.lock().err(), Some(Poisoned));
    }
}
