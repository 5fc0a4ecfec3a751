//! C functions for the library's log lines (`crate::logs`): a level to set,
//! a polled queue of lines with a descriptor, and the line getters. Lines
//! are never called back: the host reads them when it chooses.

use std::ffi::{c_char, c_int, CString};
use std::ptr;

use log::{Level, LevelFilter};

use super::codes::cw_result;
use super::{c_string, check_out, guard, run, timeout, Failure};
use crate::logs::{self, LogLine};

/// How much the library logs (cw_log_set_level). The numbers are the
/// usual severity order: a level includes every level below it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cw_log_level {
    /// Nothing is queued (the default).
    CW_LOG_OFF = 0,
    /// The client cannot go on (a broken protocol, a panic).
    CW_LOG_ERROR = 1,
    /// Something went wrong and was handled (a keep-alive unanswered).
    CW_LOG_WARN = 2,
    /// Connections opened and ended, logins.
    CW_LOG_INFO = 3,
    /// Answers nobody waited for, retries.
    CW_LOG_DEBUG = 4,
    /// Every frame.
    CW_LOG_TRACE = 5,
}

fn filter(level: c_int) -> Option<LevelFilter> {
    Some(match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        5 => LevelFilter::Trace,
        _ => return None,
    })
}

fn c_level(level: Level) -> cw_log_level {
    match level {
        Level::Error => cw_log_level::CW_LOG_ERROR,
        Level::Warn => cw_log_level::CW_LOG_WARN,
        Level::Info => cw_log_level::CW_LOG_INFO,
        Level::Debug => cw_log_level::CW_LOG_DEBUG,
        Level::Trace => cw_log_level::CW_LOG_TRACE,
    }
}

/// One log line of the library (opaque).
pub struct cw_log_line {
    level: cw_log_level,
    target: CString,
    text: CString,
}

/// Queue the library's log lines at `level` (a cw_log_level, passed as an
/// int) and above, for cw_log_next; CW_LOG_OFF stops. Once this returns,
/// no line below the new level is queued, not even one another thread
/// was logging at that moment. The queue holds 1024 lines; beyond that
/// the oldest are dropped, and the next line read is a CW_LOG_WARN saying
/// how many were lost. Message bodies and passwords are never logged.
///
/// Returns: CW_OK; CW_INVALID_ARGUMENT for a level outside cw_log_level;
/// CW_UNSUPPORTED when the process already has another Rust `log` logger
/// (a Rust host: the lines go to it).
/// Ownership: nothing is kept.
/// Threads: any thread; the level is process-wide.
#[no_mangle]
pub extern "C" fn cw_log_set_level(level: c_int) -> cw_result {
    run(|| {
        let f = filter(level).ok_or_else(|| {
            Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                format!("unknown log level {level}"),
            )
        })?;
        logs::set_level(f).map_err(|_| {
            Failure::new(
                cw_result::CW_UNSUPPORTED,
                "another logger is installed in this process; the library's lines go there",
            )
        })
    })
}

/// The level set with cw_log_set_level.
///
/// Returns: a cw_log_level; CW_LOG_OFF until a level was set.
/// Ownership: nothing to release.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn cw_log_get_level() -> cw_log_level {
    guard(cw_log_level::CW_LOG_OFF, || match logs::level() {
        LevelFilter::Off => cw_log_level::CW_LOG_OFF,
        LevelFilter::Error => cw_log_level::CW_LOG_ERROR,
        LevelFilter::Warn => cw_log_level::CW_LOG_WARN,
        LevelFilter::Info => cw_log_level::CW_LOG_INFO,
        LevelFilter::Debug => cw_log_level::CW_LOG_DEBUG,
        LevelFilter::Trace => cw_log_level::CW_LOG_TRACE,
    })
}

/// Take the next log line, waiting at most `timeout_ms` (negative: without
/// limit; 0: poll).
///
/// Returns: CW_OK and `*out` set; CW_TIMEOUT when no line came;
/// CW_NULL_ARGUMENT.
/// Ownership: `*out` is owned by the caller; release it with
/// cw_log_line_free.
/// Threads: any thread; each line goes to one caller.
#[no_mangle]
pub unsafe extern "C" fn cw_log_next(timeout_ms: i32, out: *mut *mut cw_log_line) -> cw_result {
    run(|| {
        check_out(out, "out")?;
        let LogLine {
            level,
            target,
            text,
        } = logs::next_line(timeout(timeout_ms))?;
        let line = cw_log_line {
            level: c_level(level),
            target: c_string(&target),
            text: c_string(&text),
        };
        // SAFETY: `out` was checked for NULL; the caller promises it points
        // to writable storage for one pointer.
        unsafe { *out = Box::into_raw(Box::new(line)) };
        Ok(())
    })
}

/// A file descriptor that is readable while a log line waits, for
/// select/poll/epoll: when it is readable, call cw_log_next with timeout 0.
///
/// Returns: CW_OK and `*out` set; CW_IO when no descriptor can be made;
/// CW_NULL_ARGUMENT.
/// Ownership: the library owns the descriptor, for the life of the
/// process: never read, write or close it.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_log_fd(out: *mut c_int) -> cw_result {
    run(|| {
        check_out(out, "out")?;
        let fd = logs::fd()?;
        // SAFETY: checked for NULL above; the caller promises storage.
        unsafe { *out = fd };
        Ok(())
    })
}

/// The severity of a log line.
///
/// Returns: its cw_log_level; CW_LOG_OFF for NULL.
/// Ownership: `line` is borrowed.
/// Threads: the thread that owns the line.
#[no_mangle]
pub unsafe extern "C" fn cw_log_line_level(line: *const cw_log_line) -> cw_log_level {
    // SAFETY: the caller promises NULL or a live line from cw_log_next.
    guard(cw_log_level::CW_LOG_OFF, || unsafe {
        line.as_ref().map_or(cw_log_level::CW_LOG_OFF, |l| l.level)
    })
}

/// Where a log line comes from: a module path such as "chinwag::core".
///
/// Returns: NUL-terminated UTF-8; NULL for NULL.
/// Ownership: borrowed; valid until cw_log_line_free(line).
/// Threads: the thread that owns the line.
#[no_mangle]
pub unsafe extern "C" fn cw_log_line_target(line: *const cw_log_line) -> *const c_char {
    // SAFETY: the caller promises NULL or a live line from cw_log_next.
    guard(ptr::null(), || unsafe {
        line.as_ref().map_or(ptr::null(), |l| l.target.as_ptr())
    })
}

/// The text of a log line.
///
/// Returns: NUL-terminated UTF-8; NULL for NULL.
/// Ownership: borrowed; valid until cw_log_line_free(line).
/// Threads: the thread that owns the line.
#[no_mangle]
pub unsafe extern "C" fn cw_log_line_text(line: *const cw_log_line) -> *const c_char {
    // SAFETY: the caller promises NULL or a live line from cw_log_next.
    guard(ptr::null(), || unsafe {
        line.as_ref().map_or(ptr::null(), |l| l.text.as_ptr())
    })
}

/// Release a log line.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `line`; freeing it twice is undefined behaviour.
/// Threads: the thread that owns the line.
#[no_mangle]
pub unsafe extern "C" fn cw_log_line_free(line: *mut cw_log_line) {
    guard((), || {
        if !line.is_null() {
            // SAFETY: `line` came from Box::into_raw in cw_log_next and, by
            // the contract above, is freed once.
            drop(unsafe { Box::from_raw(line) });
        }
    })
}
