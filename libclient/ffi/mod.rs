//! The C ABI: opaque handles over the typed clients (one dispatch enum,
//! `dispatch::Client`), result codes, the thread-local last error and the
//! panic boundary. Every exported body runs inside `guard`; nothing here may
//! unwind into C or trust a pointer unchecked. The Rust error becomes a
//! `cw_result` in one place (`codes.rs`, `From<ErrorKind>`).
//! cbindgen reads this folder to write include/chinwag.h.

// The C names are the ABI: cw_client, not CwClient.
#![allow(non_camel_case_types)]
// Each function's Ownership and Threads lines (copied into the header) are
// its safety contract; a separate `# Safety` heading would only repeat them.
#![allow(clippy::missing_safety_doc)]
// Every unsafe operation sits in its own block with the reason it is sound.
#![deny(unsafe_op_in_unsafe_fn)]

mod accounts;
mod babel;
mod call;
mod client;
pub mod codes;
mod dispatch;
mod event;
mod logs;
mod rooms;
mod stream;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;
use std::time::Duration;

use crate::core::threads;
use codes::cw_result;

pub use dispatch::Client;

pub use accounts::*;
pub use babel::*;
pub use call::*;
pub use client::*;
pub use event::*;
pub use logs::*;
pub use rooms::*;
pub use stream::*;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// A failure as the C API reports it: a result code and the text
/// `cw_last_error` gives. Made from the Rust `Error` by `From`, which maps
/// its kind through `codes.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: cw_result,
    pub message: String,
}

impl Failure {
    pub fn new(code: cw_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::core::Error> for Failure {
    fn from(e: crate::core::Error) -> Self {
        Failure {
            code: e.code.into(),
            message: e.message,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for Failure {}

/// The panic boundary: run `f`, and turn a panic into `fallback`.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    threads::catch(f).unwrap_or_else(|why| {
        set_last_error(&format!("panic inside libchinwag: {why}"));
        fallback
    })
}

/// The panic boundary for functions that return `cw_result`; a failure's
/// text becomes the calling thread's last error.
fn run(f: impl FnOnce() -> Result<(), Failure>) -> cw_result {
    guard(cw_result::CW_PANIC, || match f() {
        Ok(()) => cw_result::CW_OK,
        Err(e) => {
            set_last_error(&e.message);
            e.code
        }
    })
}

fn null(what: &str) -> Failure {
    Failure::new(cw_result::CW_NULL_ARGUMENT, format!("{what} is NULL"))
}

/// A borrowed, validated UTF-8 argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: `p` is not NULL, and the caller promises a NUL-terminated
    // string that stays valid for the call.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| {
        Failure::new(
            cw_result::CW_INVALID_UTF8,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// A borrowed handle.
///
/// # Safety
/// `p` is NULL or a live handle of type `T` from this library.
unsafe fn arg_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller promises NULL or a live handle of type `T`.
    unsafe { p.as_ref() }.ok_or_else(|| null(what))
}

/// Write an out-parameter; checked for NULL before any work is done.
fn check_out<T>(p: *mut T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(null(what))
    } else {
        Ok(())
    }
}

/// A borrowed buffer argument of `len` elements: NULL is allowed (and
/// refused) only where `len` says so.
///
/// # Safety
/// `p` is NULL or valid for reading `len` elements for the call.
unsafe fn arg_slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T], Failure> {
    if len == 0 {
        Ok(&[])
    } else if p.is_null() {
        Err(null(what))
    } else {
        // SAFETY: not NULL, and the caller promises `len` readable elements.
        Ok(unsafe { std::slice::from_raw_parts(p, len) })
    }
}

/// A borrowed output buffer of `len` elements; see [`arg_slice`].
///
/// # Safety
/// `p` is NULL or valid for writing `len` elements for the call.
unsafe fn arg_slice_mut<'a, T>(p: *mut T, len: usize, what: &str) -> Result<&'a mut [T], Failure> {
    if len == 0 {
        Ok(&mut [])
    } else if p.is_null() {
        Err(null(what))
    } else {
        // SAFETY: not NULL, and the caller promises `len` writable elements.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
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
    // SAFETY: the string came from CString::into_raw in this library and, by the contract above,
    // is released once.
    guard((), || unsafe {
        if !s.is_null() {
            // SAFETY: `s` came from `CString::into_raw` in this library
            // and is released once, as the contract above requires.
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
            run(|| Err(Failure::new(cw_result::CW_TIMEOUT, "slow"))),
            cw_result::CW_TIMEOUT
        );
        assert_eq!(last(), "slow");
    }
}
