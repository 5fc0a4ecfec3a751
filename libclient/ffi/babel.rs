//! C functions of the babel dialect: the contact list and accepting a call
//! peer to peer. Placing, refusing and hanging up share the accounts
//! functions (`cw_client_place_call`, ...), whose meaning fits; the open
//! call is `cw_call` (`call.rs`), shared by both dialects.

use std::ffi::c_char;

use chinwag_proto::babel::MAX_VOICE;

use super::accounts::{cw_strings, strings};
use super::client::cw_client;
use super::codes::cw_result;
use super::{arg_ref, arg_str, check_out, run};

/// The largest VoiceData payload babel carries (64 KiB); a buffer this
/// large always holds the next payload of cw_call_recv_voice.
pub const CW_BABEL_MAX_VOICE: usize = 65536;
// The header needs a literal; the codec owns the limit.
const _BABEL_VOICE_LIMIT_IS_THE_CODECS: () = assert!(CW_BABEL_MAX_VOICE == MAX_VOICE);

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
