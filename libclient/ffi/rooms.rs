//! C functions of the rooms dialect (seed 003): rooms, member lists,
//! invitations, and `cw_rooms`, the handle of a room list. Login, texts,
//! events and close share the generic client functions.

use std::ffi::{c_char, CString};
use std::ptr;

use chinwag_proto::rooms::Mode;

use super::accounts::{cw_strings, strings};
use super::client::cw_client;
use super::codes::{cw_result, cw_room_mode};
use super::event::cw_event;
use super::Client;
use super::Failure;
use super::{arg_ref, arg_str, c_string, check_out, guard, run};

/// Seed 003's retransmission period T in milliseconds: a request is sent
/// again this often until answered.
pub const CW_ROOMS_RETRY_MS: u32 = 100;
/// Seed 003's M: a request is sent at most this many times in all; then
/// the call returns CW_UNCONFIRMED for a text, CW_TIMEOUT for anything
/// else (after about CW_ROOMS_TRIES * CW_ROOMS_RETRY_MS).
pub const CW_ROOMS_TRIES: u32 = 10;
const _RETRY: () =
    assert!(CW_ROOMS_RETRY_MS as u128 == crate::rooms::ROOMS_RETRY_EVERY.as_millis());
const _TRIES: () = assert!(CW_ROOMS_TRIES == crate::rooms::ROOMS_TRIES);

/// A list of private rooms (opaque, read-only): name, mode and member count.
pub struct cw_rooms {
    items: Vec<(CString, cw_room_mode, u8)>,
}

fn mode_of(m: Mode) -> cw_room_mode {
    match m {
        Mode::Centralised => cw_room_mode::CW_ROOM_CENTRALISED,
        Mode::Decentralised => cw_room_mode::CW_ROOM_DECENTRALISED,
    }
}

fn mode_arg(mode: i32) -> Result<Mode, Failure> {
    match mode {
        0 => Ok(Mode::Centralised),
        1 => Ok(Mode::Decentralised),
        m => Err(Failure::new(
            cw_result::CW_INVALID_ARGUMENT,
            format!("unknown room mode {m}"),
        )),
    }
}

/// Rooms: this client's ID_USER (1 to 254), given by the server at login.
///
/// Returns: CW_OK and `*out` set; CW_NOT_LOGGED_IN; CW_UNSUPPORTED on a
/// client of another dialect; CW_CLOSED.
/// Ownership: `client` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_user_id(
    client: *const cw_client,
    out: *mut u8,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        *out = arg_ref(client, "client")?.inner.room_user_id()?;
        Ok(())
    })
}

/// Rooms: create the private room `name` (1 to 50 bytes, no '#') of
/// `mode` (a cw_room_mode, as an int) for at most `max` members (2 to 254;
/// 255 counts as 254), and move into it.
///
/// Like every rooms request, it is sent every CW_ROOMS_RETRY_MS until
/// answered, at most CW_ROOMS_TRIES times.
/// Returns: CW_OK and `*room_id` set (1 to 255); CW_ROOM_EXISTS;
/// CW_INVALID_ARGUMENT (bad name, mode or `max`); CW_TOO_LONG;
/// CW_NOT_LOGGED_IN; CW_TIMEOUT; CW_UNSUPPORTED on a client of another
/// dialect; CW_CLOSED.
/// Ownership: `name` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_create(
    client: *const cw_client,
    name: *const c_char,
    mode: i32,
    max: u8,
    room_id: *mut u8,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(room_id, "room_id")?;
        let c = arg_ref(client, "client")?;
        let name = arg_str(name, "name")?;
        *room_id = c.inner.room_create(name, mode_arg(mode)?, max)?;
        Ok(())
    })
}

/// Rooms: the private rooms on the server, sorted by name (the public
/// room is not listed).
///
/// Returns: CW_OK and `*out` set; CW_NOT_LOGGED_IN; CW_TIMEOUT;
/// CW_UNSUPPORTED on a client of another dialect; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_rooms_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_list(
    client: *const cw_client,
    out: *mut *mut cw_rooms,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let rooms = arg_ref(client, "client")?.inner.room_list()?;
        let items = rooms
            .into_iter()
            .map(|r| (c_string(&r.name), mode_of(r.mode), r.clients))
            .collect();
        *out = Box::into_raw(Box::new(cw_rooms { items }));
        Ok(())
    })
}

/// The number of rooms in a list.
///
/// Returns: the count; 0 for NULL.
/// Ownership: `list` is borrowed.
/// Threads: any thread; a list is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_rooms_count(list: *const cw_rooms) -> usize {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe { list.as_ref().map_or(0, |l| l.items.len()) })
}

/// The name of room `index` (0-based) of a list.
///
/// Returns: NUL-terminated UTF-8; NULL for NULL or an index out of range.
/// Ownership: borrowed; valid until cw_rooms_free(list).
/// Threads: any thread; a list is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_rooms_name(list: *const cw_rooms, index: usize) -> *const c_char {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(ptr::null(), || unsafe {
        match list.as_ref().and_then(|l| l.items.get(index)) {
            Some((s, _, _)) => s.as_ptr(),
            None => ptr::null(),
        }
    })
}

/// The mode of room `index` of a list.
///
/// Returns: CW_ROOM_CENTRALISED or CW_ROOM_DECENTRALISED (as an int); -1
/// for NULL or an index out of range.
/// Ownership: `list` is borrowed.
/// Threads: any thread; a list is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_rooms_mode(list: *const cw_rooms, index: usize) -> i32 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(-1, || unsafe {
        list.as_ref()
            .and_then(|l| l.items.get(index))
            .map_or(-1, |(_, m, _)| *m as i32)
    })
}

/// How many members room `index` of a list had.
///
/// Returns: the count; 0 for NULL or an index out of range.
/// Ownership: `list` is borrowed.
/// Threads: any thread; a list is read-only.
#[no_mangle]
pub unsafe extern "C" fn cw_rooms_clients(list: *const cw_rooms, index: usize) -> u32 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(0, || unsafe {
        list.as_ref()
            .and_then(|l| l.items.get(index))
            .map_or(0, |(_, _, n)| u32::from(*n))
    })
}

/// Release a room list.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `list`; freeing it twice is undefined behaviour.
/// Threads: must not race other calls on the same list.
#[no_mangle]
pub unsafe extern "C" fn cw_rooms_free(list: *mut cw_rooms) {
    // SAFETY: the handle came from Box::into_raw in this library and, by the contract above, is
    // released once and used no more.
    guard((), || unsafe {
        if !list.is_null() {
            drop(Box::from_raw(list));
        }
    })
}

/// Rooms: ask for access to the private room `name` (DEMANDE_ACCES) and
/// move into it. For a decentralised room the server's answer lists the
/// other members' addresses; the library keeps them and sends texts there
/// (cw_client_room_peers names them).
///
/// Returns: CW_OK; CW_NO_SUCH_ROOM; CW_ROOM_FULL; CW_INVALID_ARGUMENT (an
/// empty name: use cw_client_room_leave for the public room); CW_TOO_LONG;
/// CW_NOT_LOGGED_IN; CW_TIMEOUT; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `name` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_join(
    client: *const cw_client,
    name: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.room_join(arg_str(name, "name")?)
    })
}

/// Rooms: move from the current room to the private room `name`
/// (CHANGER_MESSAGERIE). chinwagd treats it as cw_client_room_join.
///
/// Returns: as cw_client_room_join.
/// Ownership: `name` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_change(
    client: *const cw_client,
    name: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.room_change(arg_str(name, "name")?)
    })
}

/// Rooms: leave the private room for the public room.
///
/// Returns: CW_OK; CW_NOT_IN_ROOM when already in the public room;
/// CW_NOT_LOGGED_IN; CW_TIMEOUT; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `client` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_leave(client: *const cw_client) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe { arg_ref(client, "client")?.inner.room_leave() })
}

/// Rooms: the room this client is in, as the library last learned it.
///
/// Returns: CW_OK, `*name` set ("" for the public room) and `*mode` set
/// (a cw_room_mode; centralised for the public room); CW_NOT_LOGGED_IN;
/// CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `*name` is owned by the caller; release it with cw_string_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_current(
    client: *const cw_client,
    name: *mut *mut c_char,
    mode: *mut i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(name, "name")?;
        check_out(mode, "mode")?;
        let (n, m) = arg_ref(client, "client")?.inner.room_current()?;
        *name = c_string(&n).into_raw();
        *mode = mode_of(m) as i32;
        Ok(())
    })
}

/// Rooms: the names of the members of room `name` ("" for the public
/// room), this client included when it is there.
///
/// Returns: CW_OK and `*out` set (empty for a room that does not exist);
/// CW_INVALID_ARGUMENT; CW_TOO_LONG; CW_NOT_LOGGED_IN; CW_TIMEOUT;
/// CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `name` is borrowed; `*out` is owned by the caller, release
/// it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_members(
    client: *const cw_client,
    name: *const c_char,
    out: *mut *mut cw_strings,
) -> cw_result {
    // SAFETY: the caller keeps the contract above, which is what names_out asks
    // (and `name` NULL or a C string).
    unsafe { names_out(client, out, |c| c.room_members(arg_str(name, "name")?)) }
}

/// Rooms: every user registered on the server, whatever its room
/// (DEMANDER_LISTE_UTILISATEURS), this client included, sorted by name.
///
/// Returns: CW_OK and `*out` set; CW_NOT_LOGGED_IN; CW_TIMEOUT;
/// CW_LIMITED; CW_UNSUPPORTED on a client of another dialect; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_users(
    client: *const cw_client,
    out: *mut *mut cw_strings,
) -> cw_result {
    // SAFETY: the caller keeps the contract above, which is what names_out asks.
    unsafe { names_out(client, out, |c| c.room_users()) }
}

/// Rooms: the other members of the current decentralised room that the
/// library sends texts to: those the access answer listed, plus members
/// whose texts arrived since (the protocol announces no newcomers), minus
/// those that stopped acknowledging.
///
/// Returns: CW_OK and `*out` set (empty outside a decentralised room);
/// CW_NOT_LOGGED_IN; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `*out` is owned by the caller; release it with cw_strings_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_peers(
    client: *const cw_client,
    out: *mut *mut cw_strings,
) -> cw_result {
    // SAFETY: the caller keeps the contract above, which is what names_out asks.
    unsafe { names_out(client, out, |c| c.room_peers()) }
}

/// The body of the functions that hand out a list of names: `names` asks
/// the client, the list goes to `*out`.
///
/// # Safety
/// `client` is NULL or a live cw_client; `out` is NULL or writable.
unsafe fn names_out(
    client: *const cw_client,
    out: *mut *mut cw_strings,
    names: impl FnOnce(&Client) -> Result<Vec<String>, Failure>,
) -> cw_result {
    // SAFETY: the caller keeps the contract above; NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        *out = strings(names(&arg_ref(client, "client")?.inner)?);
        Ok(())
    })
}

/// Rooms: invite `user` into the current private room. The server
/// acknowledges every invitation and forwards it only if `user` is online
/// (the invitee gets CW_EVENT_ROOM_INVITATION), so CW_OK does not mean it
/// was delivered.
///
/// Returns: CW_OK once acknowledged; CW_NOT_IN_ROOM (in the public room);
/// CW_INVALID_ARGUMENT; CW_TOO_LONG (over 10 bytes); CW_NOT_LOGGED_IN;
/// CW_TIMEOUT; CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `user` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_invite(
    client: *const cw_client,
    user: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.room_invite(arg_str(user, "user")?)
    })
}

/// Rooms: answer the latest unanswered invitation into `room` (the
/// cw_event_text of CW_EVENT_ROOM_INVITATION; "" or NULL: the latest of
/// all). `accept` non-zero accepts: the library then checks with member
/// lists that the server moved this client in, and for a decentralised
/// room fetches the peers. Answer within 60 s of the event: the server
/// (and the library) forget an invitation after that.
///
/// Returns: CW_OK (accepted: now in the room); CW_NO_SUCH_REQUEST (no such
/// unanswered invitation, or older than 60 s); CW_ROOM_FULL (accepted but
/// not moved in: full, gone or expired); CW_NOT_LOGGED_IN; CW_TIMEOUT;
/// CW_UNSUPPORTED; CW_CLOSED.
/// Ownership: `room` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_room_answer_invitation(
    client: *const cw_client,
    room: *const c_char,
    accept: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        let room = if room.is_null() {
            ""
        } else {
            arg_str(room, "room")?
        };
        c.inner.room_answer_invitation(room, accept != 0)
    })
}

/// The room mode of a CW_EVENT_ROOM_INVITATION event.
///
/// Returns: CW_ROOM_CENTRALISED or CW_ROOM_DECENTRALISED (as an int); -1
/// for NULL or other kinds.
/// Ownership: `ev` is borrowed.
/// Threads: the thread that owns the event.
#[no_mangle]
pub unsafe extern "C" fn cw_event_room_mode(ev: *const cw_event) -> i32 {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    guard(-1, || unsafe {
        ev.as_ref()
            .and_then(|e| e.inner().room_mode())
            .map_or(-1, |m| mode_of(m) as i32)
    })
}
