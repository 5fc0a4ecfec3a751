//! The C ABI: opaque handles over `crate::client`, result codes, the
//! thread-local last error and the panic boundary. Every exported body runs
//! inside `guard`; nothing here may unwind into C or trust a pointer unchecked.
//! cbindgen reads this folder to write include/chinwag.h.

// The C names are the ABI: cw_client, not CwClient.
#![allow(non_camel_case_types)]
// Each function's Ownership and Threads lines (copied into the header) are
// its safety contract; a separate `# Safety` heading would only repeat them.
#![allow(clippy::missing_safety_doc)]

mod accounts;
mod babel;
mod client;
pub mod codes;
mod event;
mod rooms;
mod stream;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::client::Error;
use codes::cw_result;

pub use accounts::*;
pub use babel::*;
pub use client::*;
pub use event::*;
pub use rooms::*;
pub use stream::*;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// The panic boundary: run `f`, and turn a panic into `fallback`.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            set_last_error(&format!("panic inside libchinwag: {}", panic_text(&*p)));
            fallback
        }
    }
}

/// The panic boundary for functions that return `cw_result`; a failure's
/// text becomes the calling thread's last error.
fn run(f: impl FnOnce() -> Result<(), Error>) -> cw_result {
    guard(cw_result::CW_PANIC, || match f() {
        Ok(()) => cw_result::CW_OK,
        Err(e) => {
            set_last_error(&e.message);
            e.code
        }
    })
}

fn null(what: &str) -> Error {
    Error::new(cw_result::CW_NULL_ARGUMENT, format!("{what} is NULL"))
}

/// A borrowed, validated UTF-8 argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(null(what));
    }
    CStr::from_ptr(p).to_str().map_err(|_| {
        Error::new(
            cw_result::CW_INVALID_UTF8,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// A borrowed handle.
///
/// # Safety
/// `p` is NULL or a live handle of type `T` from this library.
unsafe fn arg_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    p.as_ref().ok_or_else(|| null(what))
}

/// Write an out-parameter; checked for NULL before any work is done.
fn check_out<T>(p: *mut T, what: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(null(what))
    } else {
        Ok(())
    }
}

/// A negative timeout waits without limit; 0 polls.
fn timeout(ms: i32) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Text for C: interior NULs (legal in UTF-8, impossible in a C string)
/// become U+FFFD.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

static VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library's version at run time, for example "0.1.0".
///
/// Returns: a static NUL-terminated string; compare it with the
/// CW_VERSION_* macros to detect a header/library mismatch.
/// Ownership: static, never free it.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn cw_version() -> *const c_char {
    VERSION_C.as_ptr().cast()
}

/// A static description of a result code.
///
/// Returns: text for `code` (any value of cw_result), or
/// "unknown result code" for a value that is not one.
/// Ownership: static, never free it.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn cw_result_str(code: c_int) -> *const c_char {
    let text = match cw_result::from_i32(code) {
        Some(c) => c.describe(),
        None => "unknown result code\0",
    };
    text.as_ptr().cast()
}

/// The text of the calling thread's last failure.
///
/// Returns: a NUL-terminated string, "" when no call on this thread has
/// failed yet. Successful calls leave it unchanged.
/// Ownership: borrowed; valid until the next failing call on this thread.
/// Threads: thread-local; each thread sees only its own failures.
#[no_mangle]
pub extern "C" fn cw_last_error() -> *const c_char {
    guard(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// Release a string the library handed out as owned.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `s`, which must come from this library (never pass a
/// string from malloc, and never release a library string with free()).
/// Releasing the same string twice is undefined behaviour.
/// Threads: any thread, once per string.
#[no_mangle]
pub unsafe extern "C" fn cw_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        unsafe { CStr::from_ptr(cw_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_cw_panic_and_a_message_never_an_unwind() {
        let r = run(|| panic!("boom at depth"));
        assert_eq!(r, cw_result::CW_PANIC);
        assert!(
            last().contains("panic inside libchinwag: boom at depth"),
            "{}",
            last()
        );
        // A formatted panic message too, and a fallback value of another type.
        let p = guard(std::ptr::null::<c_char>(), || {
            panic!("{} {}", "formatted", 7)
        });
        assert!(p.is_null());
        assert!(last().contains("formatted 7"), "{}", last());
        // The boundary stays usable after a panic.
        assert_eq!(run(|| Ok(())), cw_result::CW_OK);
        assert_eq!(
            run(|| Err(Error::new(cw_result::CW_TIMEOUT, "slow"))),
            cw_result::CW_TIMEOUT
        );
        assert_eq!(last(), "slow");
    }
}
