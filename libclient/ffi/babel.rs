//! C functions of the babel dialect: the contact list, accepting a call
//! peer to peer, and `cw_call`, the handle of an open call that carries
//! VoiceData payloads. Placing, refusing and hanging up share the accounts
//! functions (`cw_client_place_call`, ...), whose meaning fits.

use std::ffi::{c_char, CString};
use std::ptr;

use chinwag_proto::babel::MAX_VOICE;

use super::accounts::{cw_strings, strings};
use super::client::cw_client;
use super::codes::cw_result;
use super::event::cw_event;
use super::Failure;
use super::{arg_ref, arg_str, c_string, check_out, guard, run, timeout};
use crate::call::Call;
use crate::core::Event;

/// The largest VoiceData payload babel carries (64 KiB); a buffer this
/// large always holds the next payload of cw_call_recv_voice.
pub const CW_BABEL_MAX_VOICE: usize = 65536;
// The header needs a literal; the codec owns the limit.
const _BABEL_VOICE_LIMIT_IS_THE_CODECS: () = assert!(CW_BABEL_MAX_VOICE == MAX_VOICE);

/// An open babel call: the peer-to-peer TCP connection of two clients
/// (opaque).
pub struct cw_call {
    inner: Call,
    peer: CString,
}

/// Babel: the babel users online now (this client excluded), sorted. The
/// list follows CW_EVENT_CONTACT_ADDED and CW_EVENT_CONTACT_REMOVED; it is
/// complete when cw_client_login returns.
///
/// Returns: CW_OK and `*out` set; CW_NOT_LOGGED_IN; CW_UNSUPPORTED on a
/// client of another dialect; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_contacts(
    client: *const cw_client,
    out: *mut *mut cw_strings,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let names = arg_ref(client, "client")?.inner.contacts()?;
        *out = strings(names);
        Ok(())
    })
}

/// Babel: accept `caller`'s ringing call (from CW_EVENT_CALL_INCOMING).
/// The library connects by TCP to the end point the event gave (5 s
/// limit) and waits for the caller's ConnectionEstablished (5 s). The
/// outcome arrives as CW_EVENT_CALL_ESTABLISHED (take its cw_call) or
/// CW_EVENT_CALL_FAILED; on failure the caller is sent a refusal so it
/// stops ringing.
///
/// Returns: CW_OK once the library started connecting; CW_NO_SUCH_CALL
/// when no call from `caller` rings; CW_NOT_LOGGED_IN; CW_UNSUPPORTED on a
/// client of another dialect (accounts: cw_client_answer_call);
/// CW_CLOSED.
/// Ownership: `caller` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_accept_call(
    client: *const cw_client,
    caller: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.accept_call(arg_str(caller, "caller")?)
    })
}

/// Take the call of a CW_EVENT_CALL_ESTABLISHED event. Until it is taken,
/// the call belongs to the event, and cw_event_free hangs it up.
///
/// Returns: CW_OK and `*out` set; CW_INVALID_ARGUMENT for other kinds or
/// when the call was already taken.
/// Ownership: `*out` is owned by the caller; release it with cw_call_free.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_take_call(
    ev: *mut cw_event,
    out: *mut *mut cw_call,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let e = ev.as_mut().ok_or_else(|| super::null("ev"))?;
        match e.inner_mut() {
            Event::CallEstablished { call, .. } => {
                let call = call.take().ok_or_else(|| {
                    Failure::new(cw_result::CW_INVALID_ARGUMENT, "the call was already taken")
                })?;
                let peer = c_string(call.peer());
                *out = Box::into_raw(Box::new(cw_call { inner: call, peer }));
                Ok(())
            }
            _ => Err(Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                "this event carries no call",
            )),
        }
    })
}

/// The name of the user at the other end of a call.
///
/// Returns: a NUL-terminated UTF-8 name; NULL for NULL.
/// Ownership: borrowed; valid until cw_call_free(call).
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_peer(call: *const cw_call) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match call.as_ref() {
            Some(c) => c.peer.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// Send one voice payload of `len` bytes to the peer as one VoiceData
/// frame. A payload is one Opus packet (48 kHz, stereo, 20 ms frames, as
/// the original babel client); the library does not encode audio yet and
/// carries the bytes as they are.
///
/// Returns: CW_OK once written; CW_TOO_LONG over CW_BABEL_MAX_VOICE;
/// CW_CLOSED after a hang-up (either side); CW_IO (also when the peer
/// takes nothing for 5 s).
/// Ownership: `data` is borrowed for the call (NULL is allowed when `len` is 0).
/// Threads: any thread; sends are serialised with each other and may run
/// alongside a receive.
#[no_mangle]
pub unsafe extern "C" fn cw_call_send_voice(
    call: *const cw_call,
    data: *const u8,
    len: usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        let c = arg_ref(call, "call")?;
        let payload = if len == 0 {
            &[][..]
        } else if data.is_null() {
            return Err(super::null("data"));
        } else {
            std::slice::from_raw_parts(data, len)
        };
        Ok(c.inner.send(payload)?)
    })
}

/// Take the next voice payload the peer sent, in order, waiting at most
/// `timeout_ms` milliseconds (0: poll; negative: without limit). The
/// library queues up to 256 payloads (about 5 s of voice) and drops the
/// oldest beyond that.
///
/// Returns: CW_OK and `*got` = the payload's size (0 is a valid, empty
/// payload); CW_TIMEOUT; CW_TOO_LONG when the next payload is larger than
/// `cap` (it stays queued: pass CW_BABEL_MAX_VOICE bytes); CW_CLOSED once
/// the call is over and every payload has been taken (the peer hung up,
/// broke the protocol, or this side hung up).
/// Ownership: `buf` is borrowed for the call (NULL is allowed when `cap` is 0).
/// Threads: any thread; receives are serialised with each other.
#[no_mangle]
pub unsafe extern "C" fn cw_call_recv_voice(
    call: *const cw_call,
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
        let c = arg_ref(call, "call")?;
        let slice = if cap == 0 {
            &mut [][..]
        } else if buf.is_null() {
            return Err(super::null("buf"));
        } else {
            std::slice::from_raw_parts_mut(buf, cap)
        };
        *got = c.inner.recv_into(slice, timeout(timeout_ms))?;
        Ok(())
    })
}

/// Hang up: close the peer-to-peer connection. The peer gets
/// CW_EVENT_CALL_ENDED; this side gets no event. Blocked receives wake with
/// CW_CLOSED. Idempotent. cw_client_hangup_call(client, peer) does the same
/// by name.
///
/// Returns: CW_OK (also when already over); CW_NULL_ARGUMENT.
/// Ownership: the handle stays valid; release it with cw_call_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_call_hangup(call: *const cw_call) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        arg_ref(call, "call")?.inner.hangup();
        Ok(())
    })
}

/// Hang up (if needed) and release a call. A call outlives its client: it
/// is peer to peer.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `call`; freeing it twice is undefined behaviour.
/// Threads: must not race other calls on the same call.
#[no_mangle]
pub unsafe extern "C" fn cw_call_free(call: *mut cw_call) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !call.is_null() {
            drop(Box::from_raw(call));
        }
    })
}
