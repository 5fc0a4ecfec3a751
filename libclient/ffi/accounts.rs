//! C functions of the accounts dialect: registration, password login,
//! friends, stored messages, history, call signalling, and the voice packet
//! format; plus the two list handles they return (`cw_strings`,
//! `cw_history`), which own their text so every getter is a borrow.

use std::ffi::{c_char, CString};
use std::ptr;

use chinwag_proto::accounts::{decode_voice, encode_voice, MAX_VOICE};

use super::client::cw_client;
use super::codes::cw_result;
use super::Failure;
use super::{arg_ref, arg_str, c_string, check_out, guard, null, run, timeout};
use chinwag_proto::accounts::HistoryEntry;

/// Bytes before the audio in a voice packet (the "CWVC" magic).
pub const CW_VOICE_HEADER: usize = 4;
/// The largest compressed frame a voice packet carries (Opus's largest).
pub const CW_VOICE_MAX_FRAME: usize = 1275;
// The header needs a literal; the codec owns the limit.
const _VOICE_LIMIT_IS_THE_CODECS: () = assert!(CW_VOICE_MAX_FRAME == MAX_VOICE);
/// The largest voice packet: header plus the largest frame.
pub const CW_VOICE_MAX_PACKET: usize = CW_VOICE_HEADER + CW_VOICE_MAX_FRAME;

/// A list of strings returned by the library (opaque), for example the
/// friends of an account.
pub struct cw_strings {
    items: Vec<CString>,
}

/// One page of a conversation's history (opaque), oldest first.
pub struct cw_history {
    ids: Vec<u64>,
    senders: Vec<u64>,
    texts: Vec<CString>,
}

impl cw_history {
    fn new(entries: Vec<HistoryEntry>) -> Self {
        cw_history {
            ids: entries.iter().map(|e| e.id).collect(),
            senders: entries.iter().map(|e| e.sender_id).collect(),
            texts: entries.iter().map(|e| c_string(&e.text)).collect(),
        }
    }
}

/// An optional address argument: NULL and "" both mean "the address the
/// server sees this client at".
unsafe fn arg_addr<'a>(p: *const c_char) -> Result<&'a str, Failure> {
    if p.is_null() {
        Ok("")
    } else {
        // SAFETY: not NULL; the caller promises a NUL-terminated string.
        unsafe { arg_str(p, "addr") }
    }
}

/// Accounts: create an account and wait for the server's verdict.
///
/// Works before or after logging in. Waits at most `timeout_ms`
/// milliseconds (negative: without limit); Argon2id hashing makes this
/// take tens of milliseconds. Note that the server closes a connection
/// that has not logged in within 10 s.
/// Returns: CW_OK once the account is stored; CW_EMAIL_TAKEN (taken, or
/// not an email address); CW_PSEUDO_TAKEN (taken by an account, online
/// now, or invalid); CW_REGISTER_REFUSED with the server's reason in
/// cw_last_error (for example a password shorter than 8 bytes);
/// CW_INVALID_ARGUMENT for an empty field; CW_TOO_LONG (email 254, pseudo
/// 30, password 128 bytes); CW_BUSY while another registration on this
/// client waits; CW_UNSUPPORTED on a client of another dialect; CW_TIMEOUT;
/// CW_CLOSED.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_register(
    client: *const cw_client,
    email: *const c_char,
    pseudo: *const c_char,
    password: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.register(
            arg_str(email, "email")?,
            arg_str(pseudo, "pseudo")?,
            arg_str(password, "password")?,
            timeout(timeout_ms),
        )
    })
}

/// Accounts: log in with an email and a password, and wait for the answer.
///
/// On success the account's pseudo is cw_client_login_name and its id
/// cw_client_account_id. What waited while the account was offline
/// (friend requests, answers to requests, messages) arrives as events
/// right after. Waits at most `timeout_ms` milliseconds (negative: without
/// limit).
/// Returns: CW_OK; CW_LOGIN_REFUSED for every failure (wrong password,
/// unknown email, account already online, too many failures: the server
/// does not tell them apart); CW_ALREADY_LOGGED_IN; CW_BUSY while another
/// login on this client waits; CW_TOO_LONG; CW_INVALID_ARGUMENT;
/// CW_UNSUPPORTED on a client of another dialect; CW_TIMEOUT (a late
/// acceptance still logs the client in); CW_CLOSED.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_login_password(
    client: *const cw_client,
    email: *const c_char,
    password: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .login_password(
                arg_str(email, "email")?,
                arg_str(password, "password")?,
                timeout(timeout_ms),
            )
            .map(drop)
    })
}

/// Accounts: the id of the logged-in account (the sender ids of history
/// entries are account ids).
///
/// Returns: CW_OK and `*out` set; CW_NOT_LOGGED_IN; CW_UNSUPPORTED on a
/// client of another dialect; CW_CLOSED.
/// Ownership: `client` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_account_id(
    client: *const cw_client,
    out: *mut u64,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        *out = arg_ref(client, "client")?.inner.account_id()?;
        Ok(())
    })
}

/// Accounts: ask `pseudo` to be a friend, and wait until the server has
/// recorded the request. The target gets CW_EVENT_FRIEND_REQUEST (now, or
/// at its next login); its answer comes back as CW_EVENT_FRIEND_ACCEPTED or
/// CW_EVENT_FRIEND_REFUSED. If `pseudo` had already asked you, you become
/// friends at once and CW_EVENT_FRIEND_ACCEPTED follows.
///
/// Returns: CW_OK once recorded; CW_NO_SUCH_USER (also for yourself);
/// CW_ALREADY_FRIENDS; CW_NOT_LOGGED_IN; CW_TOO_LONG; CW_UNSUPPORTED;
/// CW_TIMEOUT; CW_CLOSED.
/// Ownership: `pseudo` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_request_friend(
    client: *const cw_client,
    pseudo: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .request_friend(arg_str(pseudo, "pseudo")?, timeout(timeout_ms))
    })
}

/// Accounts: accept `pseudo`'s pending friend request. The requester gets
/// CW_EVENT_FRIEND_ACCEPTED (now, or at its next login).
///
/// The server does not answer this, so the library checks that the
/// request is pending: against the requests it has seen, and otherwise by
/// asking the server for the list (waiting at most `timeout_ms`).
/// Returns: CW_OK once sent; CW_NO_SUCH_REQUEST; CW_NOT_LOGGED_IN;
/// CW_UNSUPPORTED; CW_TIMEOUT; CW_CLOSED.
/// Ownership: `pseudo` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_accept_friend(
    client: *const cw_client,
    pseudo: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .accept_friend(arg_str(pseudo, "pseudo")?, timeout(timeout_ms))
    })
}

/// Accounts: refuse `pseudo`'s pending friend request. The requester gets
/// CW_EVENT_FRIEND_REFUSED (now, or at its next login). Checked like
/// cw_client_accept_friend.
///
/// Returns: CW_OK once sent; CW_NO_SUCH_REQUEST; CW_NOT_LOGGED_IN;
/// CW_UNSUPPORTED; CW_TIMEOUT; CW_CLOSED.
/// Ownership: `pseudo` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_refuse_friend(
    client: *const cw_client,
    pseudo: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .refuse_friend(arg_str(pseudo, "pseudo")?, timeout(timeout_ms))
    })
}

/// Accounts: the friends of the logged-in account, sorted by pseudo.
///
/// Waits at most `timeout_ms` milliseconds (negative: without limit).
/// Returns: CW_OK and `*out` set (possibly an empty list);
/// CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_TIMEOUT; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_list_friends(
    client: *const cw_client,
    timeout_ms: i32,
    out: *mut *mut cw_strings,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(client, "client")?;
        let names = c.inner.list_friends(timeout(timeout_ms))?;
        *out = strings(names);
        Ok(())
    })
}

/// Accounts: the pseudos whose friend request to this account waits for
/// an answer, oldest first.
///
/// Waits at most `timeout_ms` milliseconds (negative: without limit).
/// Returns: CW_OK and `*out` set (possibly an empty list);
/// CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_TIMEOUT; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_list_friend_requests(
    client: *const cw_client,
    timeout_ms: i32,
    out: *mut *mut cw_strings,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(client, "client")?;
        let names = c.inner.list_requests(timeout(timeout_ms))?;
        *out = strings(names);
        Ok(())
    })
}

pub(super) fn strings(names: Vec<String>) -> *mut cw_strings {
    let items = names.iter().map(|n| c_string(n)).collect();
    Box::into_raw(Box::new(cw_strings { items }))
}

/// The number of strings in a list.
///
/// Returns: the count; 0 for NULL.
/// Ownership: `list` is borrowed.
/// Threads: any thread; a list is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_strings_count(list: *const cw_strings) -> usize {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe { list.as_ref().map_or(0, |l| l.items.len()) })
}

/// The string at `index` (0-based) of a list.
///
/// Returns: NUL-terminated UTF-8; NULL for NULL or an index out of range.
/// Ownership: borrowed; valid until cw_strings_free(list).
/// Threads: any thread; a list is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_strings_get(list: *const cw_strings, index: usize) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match list.as_ref().and_then(|l| l.items.get(index)) {
            Some(s) => s.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// Release a list and its strings.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `list`; freeing it twice is undefined behaviour.
/// Threads: must not race other calls on the same list.
#[no_mangle]
pub unsafe extern "C" fn cw_strings_free(list: *mut cw_strings) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !list.is_null() {
            drop(Box::from_raw(list));
        }
    })
}

/// Accounts: send `text` to the friend `pseudo` and wait for the server's
/// verdict. The friend gets CW_EVENT_PRIVATE_MESSAGE now, or at its next
/// login; the message is kept in the history either way.
///
/// Waits at most `timeout_ms` milliseconds (negative: without limit).
/// Returns: CW_OK once the server stored the message (152);
/// CW_MESSAGE_FAILED when it did not (153: not a friend, no such user,
/// yourself, storage failure); CW_TOO_LONG (more than 2048 bytes);
/// CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_TIMEOUT (the message may still be
/// stored); CW_CLOSED.
/// Ownership: `pseudo` and `text` are borrowed for the call.
/// Threads: any thread; each waiting call gets its own message's verdict.
#[no_mangle]
pub unsafe extern "C" fn cw_client_send_to_friend(
    client: *const cw_client,
    pseudo: *const c_char,
    text: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.send_to_friend(
            arg_str(pseudo, "pseudo")?,
            arg_str(text, "text")?,
            timeout(timeout_ms),
        )
    })
}

/// Accounts: one page (at most 50 messages) of the conversation with
/// `pseudo`, oldest first. `before` 0 gives the newest page; to go further
/// back, pass the id of the first entry of the page you have. A page with
/// fewer than 50 entries is the start of the conversation.
///
/// Waits at most `timeout_ms` milliseconds (negative: without limit).
/// Returns: CW_OK and `*out` set (empty for a stranger or no messages);
/// CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_TIMEOUT; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_history_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_history(
    client: *const cw_client,
    pseudo: *const c_char,
    before: u64,
    timeout_ms: i32,
    out: *mut *mut cw_history,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(client, "client")?;
        let entries = c
            .inner
            .history(arg_str(pseudo, "pseudo")?, before, timeout(timeout_ms))?;
        *out = Box::into_raw(Box::new(cw_history::new(entries)));
        Ok(())
    })
}

/// The number of entries in a history page.
///
/// Returns: the count; 0 for NULL.
/// Ownership: `page` is borrowed.
/// Threads: any thread; a page is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_history_count(page: *const cw_history) -> usize {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe { page.as_ref().map_or(0, |p| p.ids.len()) })
}

/// The message id of entry `index`: increasing with time, and the
/// `before` cursor for the previous page.
///
/// Returns: the id; 0 for NULL or an index out of range.
/// Ownership: `page` is borrowed.
/// Threads: any thread; a page is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_history_id(page: *const cw_history, index: usize) -> u64 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe {
        page.as_ref()
            .and_then(|p| p.ids.get(index).copied())
            .unwrap_or(0)
    })
}

/// The account id of the sender of entry `index` (compare it with
/// cw_client_account_id).
///
/// Returns: the id; 0 for NULL or an index out of range.
/// Ownership: `page` is borrowed.
/// Threads: any thread; a page is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_history_sender_id(page: *const cw_history, index: usize) -> u64 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe {
        page.as_ref()
            .and_then(|p| p.senders.get(index).copied())
            .unwrap_or(0)
    })
}

/// The text of entry `index`. A NUL byte inside it is shown as U+FFFD.
///
/// Returns: NUL-terminated UTF-8; NULL for NULL or an index out of range.
/// Ownership: borrowed; valid until cw_history_free(page).
/// Threads: any thread; a page is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_history_text(page: *const cw_history, index: usize) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match page.as_ref().and_then(|p| p.texts.get(index)) {
            Some(s) => s.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// Release a history page.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `page`; freeing it twice is undefined behaviour.
/// Threads: must not race other calls on the same page.
#[no_mangle]
pub unsafe extern "C" fn cw_history_free(page: *mut cw_history) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !page.is_null() {
            drop(Box::from_raw(page));
        }
    })
}

/// Accounts: ring the friend `pseudo`. Its library gets
/// CW_EVENT_CALL_INCOMING with this client's voice end point `addr`:`port`
/// (UDP; `addr` NULL or "" means the address the server sees this client
/// at). The outcome arrives as CW_EVENT_CALL_ACCEPTED (with the peer's end
/// point) or CW_EVENT_CALL_FAILED (offline, not a friend, declined).
/// Signalling only: the application owns the UDP socket.
///
/// Babel: ring the contact `pseudo` peer to peer. The library listens on
/// TCP `addr`:`port` (`addr` NULL or "": the interface that reaches the
/// server, and the server gives the callee the address it sees; port 0:
/// a free port) for one connection, at most 60 s, and sends CallRequest.
/// The outcome arrives as CW_EVENT_CALL_ESTABLISHED (take its cw_call) or
/// CW_EVENT_CALL_FAILED (refused, not online: the server's text, or nobody
/// connected in 60 s).
///
/// Returns: CW_OK once sent; CW_CALL_IN_PROGRESS when a call with `pseudo`
/// is already ringing or going on; CW_INVALID_ARGUMENT for yourself or
/// (accounts) port 0, or an address that does not resolve (babel);
/// CW_TOO_LONG (addr over 64 bytes; babel: host over 255); CW_IO (babel:
/// cannot listen); CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_place_call(
    client: *const cw_client,
    pseudo: *const c_char,
    addr: *const c_char,
    port: u16,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .place_call(arg_str(pseudo, "pseudo")?, arg_addr(addr)?, port)
    })
}

/// Accounts: answer `pseudo`'s ringing call (from CW_EVENT_CALL_INCOMING).
/// Babel clients use cw_client_accept_call.
/// The caller gets CW_EVENT_CALL_ACCEPTED with this client's voice end
/// point `addr`:`port` (`addr` NULL or "": the address the server sees).
///
/// Returns: CW_OK once sent; CW_NO_SUCH_CALL when no call from `pseudo`
/// rings; CW_INVALID_ARGUMENT for port 0; CW_TOO_LONG; CW_NOT_LOGGED_IN;
/// CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: the strings are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_answer_call(
    client: *const cw_client,
    pseudo: *const c_char,
    addr: *const c_char,
    port: u16,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .answer_call(arg_str(pseudo, "pseudo")?, arg_addr(addr)?, port)
    })
}

/// Accounts and babel: decline `pseudo`'s ringing call; the caller gets
/// CW_EVENT_CALL_FAILED.
///
/// Returns: CW_OK once sent; CW_NO_SUCH_CALL when no call from `pseudo`
/// rings; CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `pseudo` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_refuse_call(
    client: *const cw_client,
    pseudo: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.refuse_call(arg_str(pseudo, "pseudo")?)
    })
}

/// Accounts: hang up the call with `pseudo`, or cancel one that is still
/// ringing (either way); the peer gets CW_EVENT_CALL_ENDED.
///
/// Babel: close the call's peer-to-peer connection (the peer gets
/// CW_EVENT_CALL_ENDED; same as cw_call_hangup), stop a placed call from
/// ringing (the protocol cannot tell the callee; its accept then fails),
/// stop dialing an accepted one, or refuse a ringing one.
///
/// Returns: CW_OK once sent; CW_NO_SUCH_CALL when no call with `pseudo` is
/// ringing or going on; CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `pseudo` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_hangup_call(
    client: *const cw_client,
    pseudo: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.hangup_call(arg_str(pseudo, "pseudo")?)
    })
}

/// Build a voice packet (accounts, UDP, client to client): the "CWVC"
/// magic, then one compressed audio frame of `len` bytes.
///
/// Returns: CW_OK and `*written` = CW_VOICE_HEADER + `len`;
/// CW_TOO_LONG when `len` exceeds CW_VOICE_MAX_FRAME;
/// CW_INVALID_ARGUMENT when `cap` is too small; CW_NULL_ARGUMENT.
/// Ownership: `frame` and `out` are borrowed for the call (`frame` may be
/// NULL when `len` is 0).
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_voice_packet_encode(
    frame: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        check_out(written, "written")?;
        check_out(out, "out")?;
        if len > CW_VOICE_MAX_FRAME {
            return Err(Failure::new(
                cw_result::CW_TOO_LONG,
                format!("a voice frame is at most {CW_VOICE_MAX_FRAME} bytes, not {len}"),
            ));
        }
        if cap < CW_VOICE_HEADER + len {
            return Err(Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                format!("the packet needs {} bytes", CW_VOICE_HEADER + len),
            ));
        }
        let body: &[u8] = if len == 0 {
            &[]
        } else if frame.is_null() {
            return Err(null("frame"));
        } else {
            std::slice::from_raw_parts(frame, len)
        };
        let mut packet = Vec::with_capacity(CW_VOICE_HEADER + len);
        encode_voice(&mut packet, body);
        ptr::copy_nonoverlapping(packet.as_ptr(), out, packet.len());
        *written = packet.len();
        Ok(())
    })
}

/// Check a received voice packet and find its compressed frame: the
/// frame is the `*frame_len` bytes at `packet + *frame_offset`.
///
/// Returns: CW_OK and both outputs set; CW_PROTOCOL for a packet to drop
/// (shorter than 4 bytes, another magic, or a frame over
/// CW_VOICE_MAX_FRAME); CW_NULL_ARGUMENT.
/// Ownership: `packet` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_voice_packet_decode(
    packet: *const u8,
    len: usize,
    frame_offset: *mut usize,
    frame_len: *mut usize,
) -> cw_result {
    // SAFETY: the caller keeps the contract above: handles NULL or live, and each buffer pointer
    // valid for the length passed with it (NULL is allowed, and refused, only where the length
    // says so).
    run(|| unsafe {
        check_out(frame_offset, "frame_offset")?;
        check_out(frame_len, "frame_len")?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else if packet.is_null() {
            return Err(null("packet"));
        } else {
            std::slice::from_raw_parts(packet, len)
        };
        let body = decode_voice(bytes).map_err(|e| {
            Failure::new(cw_result::CW_PROTOCOL, format!("not a voice packet: {e}"))
        })?;
        *frame_offset = len - body.len();
        *frame_len = body.len();
        Ok(())
    })
}
