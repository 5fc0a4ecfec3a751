//! C functions on `cw_stream`, the byte stream of an established private
//! connection: read with a time limit, write, shutdown-write, close, free.

use std::ffi::{c_char, CString};
use std::ptr;

use super::codes::cw_result;
use super::Failure;
use super::{arg_ref, c_string, check_out, guard, run, timeout};
use crate::chatos::Stream;

/// The byte stream of an established private connection (opaque).
pub struct cw_stream {
    inner: Stream,
    peer: CString,
}

impl cw_stream {
    pub(crate) fn new(inner: Stream) -> Self {
        let peer = c_string(inner.peer());
        cw_stream { inner, peer }
    }
}

/// Read at most `cap` bytes into `buf`, waiting at most `timeout_ms`
/// milliseconds (0: poll; negative: without limit).
///
/// Returns: CW_OK and `*got` > 0; CW_TIMEOUT when nothing arrived;
/// CW_CLOSED when the peer finished sending (its shutdown-write) or the
/// stream was closed; CW_INVALID_ARGUMENT when `cap` is 0; CW_IO.
/// Ownership: `buf` is borrowed for the call.
/// Threads: any thread; reads are serialised with each other but may run
/// alongside a write.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_read(
    stream: *const cw_stream,
    buf: *mut u8,
    cap: usize,
    timeout_ms: i32,
    got: *mut usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        check_out(got, "got")?;
        check_out(buf, "buf")?;
        let s = arg_ref(stream, "stream")?;
        if cap == 0 {
            return Err(Failure::new(cw_result::CW_INVALID_ARGUMENT, "cap is 0"));
        }
        let slice = std::slice::from_raw_parts_mut(buf, cap);
        let n = s.inner.read(slice, timeout(timeout_ms))?;
        *got = n;
        Ok(())
    })
}

/// Write all `len` bytes of `data` to the peer, blocking while the relay is
/// full.
///
/// Returns: CW_OK; CW_CLOSED after cw_stream_shutdown_write or close, or
/// when the connection was torn down; CW_IO.
/// Ownership: `data` is borrowed for the call (NULL is allowed when `len` is 0).
/// Threads: any thread; writes are serialised with each other.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_write(
    stream: *const cw_stream,
    data: *const u8,
    len: usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        let s = arg_ref(stream, "stream")?;
        if len == 0 {
            return Ok(());
        }
        if data.is_null() {
            return Err(super::null("data"));
        }
        Ok(s.inner.write(std::slice::from_raw_parts(data, len))?)
    })
}

/// Finish sending: the peer reads CW_CLOSED after the bytes already
/// written. Reading from the peer goes on. Idempotent.
///
/// Returns: CW_OK; CW_CLOSED after cw_stream_close; CW_IO.
/// Ownership: `stream` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_shutdown_write(stream: *const cw_stream) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe { Ok(arg_ref(stream, "stream")?.inner.shutdown_write()?) })
}

/// Close both directions; blocked reads and writes wake with CW_CLOSED.
/// Unless both sides had finished sending, the server is asked to tear the
/// connection down, and both users get CW_EVENT_PRIVATE_CLOSED. For an
/// orderly end, shut down writing, read until CW_CLOSED, then close.
///
/// Returns: CW_OK (also when already closed); CW_NULL_ARGUMENT.
/// Ownership: the handle stays valid; release it with cw_stream_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_close(stream: *const cw_stream) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        arg_ref(stream, "stream")?.inner.close();
        Ok(())
    })
}

/// The login of the user at the other end.
///
/// Returns: a NUL-terminated UTF-8 login; NULL for NULL.
/// Ownership: borrowed; valid until cw_stream_free(stream).
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_peer(stream: *const cw_stream) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match stream.as_ref() {
            Some(s) => s.peer.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// The server's connect id of this private connection.
///
/// Returns: CW_OK and `*out` set; CW_NULL_ARGUMENT.
/// Ownership: `stream` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_connect_id(
    stream: *const cw_stream,
    out: *mut i64,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        *out = arg_ref(stream, "stream")?.inner.connect_id();
        Ok(())
    })
}

/// Close (if needed) and release a stream.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `stream`; freeing it twice is undefined behaviour.
/// Threads: must not race other calls on the same stream.
#[no_mangle]
pub unsafe extern "C" fn cw_stream_free(stream: *mut cw_stream) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !stream.is_null() {
            drop(Box::from_raw(stream));
        }
    })
}
