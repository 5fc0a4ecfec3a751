//! C functions on `cw_event`: kind, getters, taking a stream, free. The
//! strings an event hands out are made once, when the event is wrapped, so
//! every getter is a borrow.

use std::ffi::{c_char, CString};
use std::ptr;

use super::codes::{cw_event_type, cw_result};
use super::stream::cw_stream;
use super::Failure;
use super::{arg_ref, c_string, check_out, guard, run};
use crate::core::Event;

/// One event taken from a client (opaque).
pub struct cw_event {
    inner: Event,
    peer: Option<CString>,
    text: Option<CString>,
    address: Option<CString>,
}

impl cw_event {
    pub(crate) fn inner(&self) -> &Event {
        &self.inner
    }

    pub(crate) fn inner_mut(&mut self) -> &mut Event {
        &mut self.inner
    }

    pub(crate) fn new(inner: Event) -> Self {
        let peer = inner.peer().map(c_string);
        let text = inner.text().map(c_string);
        let address = inner.voice_endpoint().map(|(a, _)| c_string(a));
        cw_event {
            inner,
            peer,
            text,
            address,
        }
    }
}

/// What the event is about.
///
/// Returns: its kind; CW_EVENT_NONE for NULL.
/// Ownership: `ev` is borrowed.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_kind(ev: *const cw_event) -> cw_event_type {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(cw_event_type::CW_EVENT_NONE, || unsafe {
        match ev.as_ref() {
            Some(e) => e.inner.kind().into(),
            None => cw_event_type::CW_EVENT_NONE,
        }
    })
}

/// The other user the event is about: the sender of a message, the user
/// asking for a private connection, the peer of a private connection, of a
/// call or of a friend request, or the contact of a CONTACT_ADDED or
/// CONTACT_REMOVED event (babel). Empty for a babel CALL_FAILED the server
/// reported when no call was ringing.
///
/// Returns: a NUL-terminated UTF-8 login; NULL for NULL or for kinds without
/// a peer (OVERFLOW, ERROR, DISCONNECTED).
/// Ownership: borrowed; valid until cw_event_free(ev).
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_peer(ev: *const cw_event) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match ev.as_ref().and_then(|e| e.peer.as_ref()) {
            Some(s) => s.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// The message of a MESSAGE or PRIVATE_MESSAGE event, or the explanation of
/// an ERROR, DISCONNECTED, PRIVATE_FAILED, CALL_FAILED or CALL_ENDED event
/// (babel: for example the server's "bob is not connected"). A NUL byte inside a
/// message (legal on the wire) is shown as U+FFFD.
///
/// Returns: NUL-terminated UTF-8; NULL for NULL or for other kinds.
/// Ownership: borrowed; valid until cw_event_free(ev).
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_text(ev: *const cw_event) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match ev.as_ref().and_then(|e| e.text.as_ref()) {
            Some(s) => s.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// The peer's address of a CALL_INCOMING or CALL_ACCEPTED event, with
/// cw_event_port: accounts, where to send UDP voice packets; babel
/// (CALL_INCOMING), the TCP end point cw_client_accept_call dials. The
/// server fills it in when the peer left it empty.
///
/// Returns: a NUL-terminated address (an IP literal, or what the peer
/// gave); NULL for NULL or for other kinds.
/// Ownership: borrowed; valid until cw_event_free(ev).
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_address(ev: *const cw_event) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match ev.as_ref().and_then(|e| e.address.as_ref()) {
            Some(s) => s.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// The peer's port of a CALL_INCOMING or CALL_ACCEPTED event (accounts:
/// UDP voice; babel: TCP).
///
/// Returns: the port; 0 for NULL or for other kinds.
/// Ownership: `ev` is borrowed.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_port(ev: *const cw_event) -> u16 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe {
        ev.as_ref()
            .and_then(|e| e.inner.voice_endpoint())
            .map_or(0, |(_, port)| port)
    })
}

/// How many events an OVERFLOW event stands for.
///
/// Returns: the number of events dropped; 0 for NULL or other kinds.
/// Ownership: `ev` is borrowed.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_count(ev: *const cw_event) -> u64 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe {
        match ev.as_ref().map(|e| &e.inner) {
            Some(Event::Overflow { dropped }) => *dropped,
            _ => 0,
        }
    })
}

/// Why an ERROR, DISCONNECTED, PRIVATE_FAILED, CALL_FAILED or CALL_ENDED
/// event happened.
///
/// Returns: the cause (for example CW_PROTOCOL for malformed bytes from the
/// server or a peer; CALL_FAILED: CW_OK when refused or reported by the
/// server, CW_TIMEOUT, CW_CONNECT_FAILED; CALL_ENDED: CW_CLOSED when the
/// peer hung up); CW_OK for other kinds; CW_NULL_ARGUMENT for NULL.
/// Ownership: `ev` is borrowed.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_result(ev: *const cw_event) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(cw_result::CW_PANIC, || unsafe {
        match ev.as_ref() {
            None => cw_result::CW_NULL_ARGUMENT,
            Some(e) => e.inner.code().map_or(cw_result::CW_OK, cw_result::from),
        }
    })
}

/// The server's connect id of a PRIVATE_ESTABLISHED or PRIVATE_FAILED
/// event. Applications rarely need it; the library presents it itself.
///
/// Returns: CW_OK and `*out` set; CW_INVALID_ARGUMENT for other kinds.
/// Ownership: `ev` is borrowed.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_connect_id(ev: *const cw_event, out: *mut i64) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        match &arg_ref(ev, "ev")?.inner {
            Event::PrivateEstablished { connect_id, .. }
            | Event::PrivateFailed { connect_id, .. } => {
                *out = *connect_id;
                Ok(())
            }
            _ => Err(Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                "this event has no connect id",
            )),
        }
    })
}

/// Take the stream of a PRIVATE_ESTABLISHED event. Until it is taken, the
/// stream belongs to the event, and cw_event_free closes it.
///
/// Returns: CW_OK and `*out` set; CW_INVALID_ARGUMENT for other kinds or
/// when the stream was already taken.
/// Ownership: `*out` is owned by the caller; release it with cw_stream_free.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_take_stream(
    ev: *mut cw_event,
    out: *mut *mut cw_stream,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let e = ev.as_mut().ok_or_else(|| super::null("ev"))?;
        match &mut e.inner {
            Event::PrivateEstablished { stream, .. } => {
                let s = stream.take().ok_or_else(|| {
                    Failure::new(
                        cw_result::CW_INVALID_ARGUMENT,
                        "the stream was already taken",
                    )
                })?;
                *out = Box::into_raw(Box::new(cw_stream::new(s)));
                Ok(())
            }
            _ => Err(Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                "this event carries no stream",
            )),
        }
    })
}

/// Release an event, and the stream in it if it was not taken.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `ev`; freeing it twice is undefined behaviour.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_free(ev: *mut cw_event) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !ev.is_null() {
            drop(Box::from_raw(ev));
        }
    })
}
