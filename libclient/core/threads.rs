//! The panic boundary of the threads the library starts itself. A panic in
//! one is caught and turned into a value; it must never end a thread in
//! silence, and never unwind into code the library does not own.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use super::{Error, ErrorKind, Event, Result};

/// The text of a caught panic.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Run `f`; a panic becomes `Err` with its message. The locks the library
/// uses do not poison, and every caller ends its client or call after a
/// panic, so state left half-changed is never used again.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// The terminal event of a client whose `thread` panicked with `why`.
pub(crate) fn panic_event(thread: &str, why: &str) -> Event {
    Event::Error {
        code: ErrorKind::Panic,
        text: format!("the library's {thread} thread panicked: {why}"),
    }
}

/// Start a named thread; `f` must catch its own panics (see `catch`).
pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start a thread: {e}")))
}
