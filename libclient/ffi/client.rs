//! C functions on `cw_client`: connect, login, send, private-connection
//! negotiation, events, close and free.

use std::ffi::c_char;

use super::codes::{cw_dialect, cw_result};
use super::event::cw_event;
use super::{arg_ref, arg_str, check_out, run, timeout};
use super::{Client, Failure};

/// A connection to a chinwag server (opaque).
pub struct cw_client {
    pub(crate) inner: Client,
}

/// Connect to a chinwag server.
///
/// `host` is a name or address, `port` a TCP port (rooms: UDP), `dialect`
/// one of cw_dialect (passed as an int so that an out-of-range value is an
/// error, not undefined behaviour). All four dialects are implemented; for
/// accounts this also sends HELLO and waits (up to 5 s) for the server's
/// answer, and for babel it waits (up to 5 s) for the server's
/// HelloConnect. Rooms has no handshake: a UDP socket is bound and nothing
/// is sent until cw_client_login. Functions of one dialect called on a
/// client of another return CW_UNSUPPORTED.
/// Returns: CW_OK and `*out` set; CW_INVALID_ARGUMENT for an unknown dialect;
/// CW_CONNECT_FAILED (also: no answer to HELLO); CW_PROTOCOL (a wrong
/// answer to HELLO or HelloConnect); CW_NULL_ARGUMENT; CW_INVALID_UTF8.
/// Ownership: `*out` is owned by the caller; release it with cw_client_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_connect(
    host: *const c_char,
    port: u16,
    dialect: i32,
    out: *mut *mut cw_client,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    // SAFETY: the same contract as cw_client_connect_with's.
    unsafe { cw_client_connect_with(host, port, dialect, 0, out) }
}

/// Connect as cw_client_connect does, asking for chinwag's extensions.
///
/// `features` is a set of CW_ACCOUNTS_* bits, for accounts clients only
/// (0: exactly cw_client_connect). CW_ACCOUNTS_STAMPS asks that messages
/// (CW_EVENT_PRIVATE_MESSAGE) and history entries carry the time the
/// server stored them (cw_event_time, cw_history_time). The server grants
/// what it has (cw_client_features); a server older than the extension
/// hangs up on the request, and the library then connects once more
/// without it.
/// Returns: as cw_client_connect; CW_INVALID_ARGUMENT for unknown bits
/// or bits on a client of another dialect.
/// Ownership: `*out` is owned by the caller; release it with cw_client_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_connect_with(
    host: *const c_char,
    port: u16,
    dialect: i32,
    features: u32,
    out: *mut *mut cw_client,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let host = arg_str(host, "host")?;
        let dialect = cw_dialect::from_i32(dialect).ok_or_else(|| {
            Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                format!("unknown dialect {dialect}"),
            )
        })?;
        let client = Client::connect_with(host, port, dialect, features)?;
        *out = Box::into_raw(Box::new(cw_client { inner: client }));
        Ok(())
    })
}

/// A file descriptor that is readable while an event waits on this client
/// (and once the client is over, when cw_client_next_event answers
/// CW_CLOSED at once), for select/poll/epoll loops and GUI toolkits: when
/// it is readable, call cw_client_next_event with timeout 0. It is made on
/// the first call (an eventfd on Linux, a pipe elsewhere).
///
/// Returns: CW_OK and `*out` set; CW_IO when no descriptor can be made;
/// CW_NULL_ARGUMENT.
/// Ownership: the client owns the descriptor and closes it in
/// cw_client_free: never read, write or close it yourself.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_event_fd(
    client: *const cw_client,
    out: *mut std::ffi::c_int,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(client, "client")?;
        *out = c.inner.event_fd()?;
        Ok(())
    })
}

/// Chatos, babel and rooms: log in as `login` and wait for the server's
/// answer (accounts clients use cw_client_login_password).
///
/// Waits at most `timeout_ms` milliseconds (negative: without limit).
/// Babel: returns once the server's first contact list has arrived too,
/// so cw_client_contacts is complete. Rooms: the first CONNEXION, sent
/// every CW_ROOMS_RETRY_MS at most CW_ROOMS_TRIES times (CW_TIMEOUT
/// after that even if `timeout_ms` is longer); names are 1 to 10 bytes
/// without '#' (else CW_INVALID_ARGUMENT or CW_TOO_LONG); a refusal says
/// "invalid name" or "name taken" in cw_last_error; cw_client_room_user_id
/// gives the id, and a keep-alive goes at once so the server counts this
/// address as proved.
/// Returns: CW_OK when accepted; CW_LOGIN_REFUSED when refused (try another
/// name; babel: the server's reason, such as "username already used", is
/// in cw_last_error); CW_TOO_LONG (more than 30 bytes); CW_ALREADY_LOGGED_IN;
/// CW_BUSY while another login waits; CW_TIMEOUT (a late answer still
/// counts; rooms: none); CW_LIMITED (rooms: too many registrations from
/// this address); CW_UNSUPPORTED on an accounts client; CW_CLOSED.
/// Ownership: `login` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_login(
    client: *const cw_client,
    login: *const c_char,
    timeout_ms: i32,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        let login = arg_str(login, "login")?;
        c.inner.login(login, timeout(timeout_ms))
    })
}

/// The name this client is logged in as (accounts: the account's pseudo).
///
/// Returns: CW_OK and `*out` set; CW_NOT_LOGGED_IN.
/// Ownership: `*out` is owned by the caller; release it with cw_string_free.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_login_name(
    client: *const cw_client,
    out: *mut *mut c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(client, "client")?;
        let name = c
            .inner
            .login_name()
            .ok_or_else(|| Failure::new(cw_result::CW_NOT_LOGGED_IN, "not logged in"))?;
        *out = super::c_string(&name).into_raw();
        Ok(())
    })
}

/// Chatos: send `text` to every connected user; the sender receives it as
/// well. Rooms: send `text` to everyone in this client's room (the sender
/// does not receive it): through the server in the public room and in
/// centralised rooms, directly to each peer in a decentralised room (the
/// server is asked for the room's members first).
///
/// Returns: CW_OK once written to the server (rooms: once acknowledged by
/// the server, or by every member of a decentralised room); CW_UNSUPPORTED
/// on an accounts or babel client; CW_NOT_LOGGED_IN; CW_TOO_LONG (chatos:
/// more than 1024 bytes; rooms: 1200, refused before anything is sent);
/// rooms: CW_NO_RECIPIENT (nobody else in the room: nothing was
/// delivered), CW_NO_SUCH_ROOM or CW_ROOM_FULL (the decentralised room is
/// gone, or no longer takes this client: now in the public room, nothing
/// sent), CW_LIMITED (a server limit: try later), CW_UNCONFIRMED (no
/// acknowledgement after CW_ROOMS_TRIES sends: it may have arrived; in a
/// decentralised room the members that did not acknowledge, or refused it
/// as not in the room, are named in cw_last_error and dropped from the
/// peer list); CW_CLOSED; CW_IO.
/// Ownership: `text` is borrowed for the call.
/// Threads: any thread; concurrent sends are written whole, one after another.
#[no_mangle]
pub unsafe extern "C" fn cw_client_send_message(
    client: *const cw_client,
    text: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.send_message(arg_str(text, "text")?)
    })
}

/// Chatos: send `text` to the user `to` only. The server drops it silently
/// when nobody has that name (accounts clients use cw_client_send_to_friend,
/// which waits for the server's verdict).
///
/// Returns: CW_OK once written to the server; CW_UNSUPPORTED on an
/// accounts client; CW_NOT_LOGGED_IN;
/// CW_TOO_LONG; CW_CLOSED; CW_IO.
/// Ownership: `to` and `text` are borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_send_private(
    client: *const cw_client,
    to: *const c_char,
    text: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner
            .send_private(arg_str(to, "to")?, arg_str(text, "text")?)
    })
}

/// Chatos: ask `target` for a private connection.
///
/// The outcome arrives as an event: CW_EVENT_PRIVATE_ESTABLISHED (take the
/// stream), CW_EVENT_PRIVATE_REFUSED, or CW_EVENT_PRIVATE_FAILED. The server
/// ignores requests to users who are not connected, so no event may come.
/// Returns: CW_OK once sent; CW_INVALID_ARGUMENT for yourself;
/// CW_UNSUPPORTED on an accounts client; CW_NOT_LOGGED_IN; CW_CLOSED.
/// Ownership: `target` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_request_private(
    client: *const cw_client,
    target: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.request_private(arg_str(target, "target")?)
    })
}

/// Chatos: accept the pending private-connection request of `requester` (from a
/// CW_EVENT_PRIVATE_REQUEST). The library opens the connection itself; the
/// stream arrives as CW_EVENT_PRIVATE_ESTABLISHED.
///
/// Returns: CW_OK once sent; CW_NO_SUCH_REQUEST when `requester` has no
/// unanswered request; CW_UNSUPPORTED on an accounts client;
/// CW_NOT_LOGGED_IN; CW_CLOSED.
/// Ownership: `requester` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_accept_private(
    client: *const cw_client,
    requester: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.accept_private(arg_str(requester, "requester")?)
    })
}

/// Chatos: refuse the pending private-connection request of `requester`.
///
/// Returns: CW_OK once sent; CW_NO_SUCH_REQUEST; CW_UNSUPPORTED on an
/// accounts client; CW_NOT_LOGGED_IN; CW_CLOSED.
/// Ownership: `requester` is borrowed for the call.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn cw_client_refuse_private(
    client: *const cw_client,
    requester: *const c_char,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        let c = arg_ref(client, "client")?;
        c.inner.refuse_private(arg_str(requester, "requester")?)
    })
}

/// Take the next event, waiting at most `timeout_ms` milliseconds
/// (0: poll; negative: without limit).
///
/// When the queue overflowed, the next event is CW_EVENT_OVERFLOW with the
/// number of events dropped. The last event of a connection the server
/// ended is CW_EVENT_ERROR or CW_EVENT_DISCONNECTED.
/// Returns: CW_OK and `*out` set; CW_TIMEOUT; CW_CLOSED once the client is
/// closed (by cw_client_close, which also wakes waiting threads, or after
/// the last event of an ended connection).
/// Ownership: `*out` is owned by the caller; release it with cw_event_free.
/// Threads: any thread; several threads may wait at once, and each event
/// goes to exactly one of them.
#[no_mangle]
pub unsafe extern "C" fn cw_client_next_event(
    client: *const cw_client,
    timeout_ms: i32,
    out: *mut *mut cw_event,
) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        check_out(out, "out")?;
        let c = arg_ref(client, "client")?;
        let ev = c.inner.next_event(timeout(timeout_ms))?;
        *out = Box::into_raw(Box::new(cw_event::new(ev)));
        Ok(())
    })
}

/// Close the connection (rooms: send DECONNEXION without waiting, so the
/// name is free at once): every later call on the client returns
/// CW_CLOSED, and threads blocked in cw_client_next_event, cw_client_login
/// or any other call waiting for the server wake with CW_CLOSED. Queued
/// events are discarded.
/// Streams already taken stay open until closed themselves.
///
/// Returns: CW_OK (also when already closed); CW_NULL_ARGUMENT.
/// Ownership: the handle stays valid; release it with cw_client_free.
/// Threads: any thread; the way to stop threads that use the client.
#[no_mangle]
pub unsafe extern "C" fn cw_client_close(client: *const cw_client) -> cw_result {
    // SAFETY: the caller keeps the contract above (every pointer NULL or valid as its Ownership
    // line says); NULLs are refused before use.
    run(|| unsafe {
        arg_ref(client, "client")?.inner.close();
        Ok(())
    })
}

/// Close (if needed) and release a client, joining the library's threads.
///
/// Returns: nothing. NULL is accepted and does nothing.
/// Ownership: takes `client`; it must not be used afterwards, and freeing
/// it twice is undefined behaviour.
/// Threads: must not race any other call on the same client: call
/// cw_client_close, join your threads, then cw_client_free.
#[no_mangle]
pub unsafe extern "C" fn cw_client_free(client: *mut cw_client) {
    super::guard((), || {
        if !client.is_null() {
            // SAFETY: `client` came from Box::into_raw in cw_client_connect
            // and, by the contract above, is freed once and used no more.
            drop(unsafe { Box::from_raw(client) });
        }
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket};
    use std::ptr;
    use std::sync::mpsc;

    use super::*;
    use crate::ffi::codes::cw_event_type;
    use crate::ffi::event::{cw_event_free, cw_event_kind, cw_event_result, cw_event_text};

    /// Connect a client of `dialect` to 127.0.0.1:`port` through the C API.
    fn connect(port: u16, dialect: cw_dialect) -> *mut cw_client {
        let host = CString::new("127.0.0.1").unwrap();
        let mut c = ptr::null_mut();
        let r = unsafe { cw_client_connect(host.as_ptr(), port, dialect as i32, &mut c) };
        assert_eq!(r, cw_result::CW_OK);
        c
    }

    fn inject_panic(c: *mut cw_client) {
        match unsafe { &(*c).inner } {
            Client::Chatos(x) => x.inject_panic(),
            Client::Babel(x) => x.inject_panic(),
            Client::Accounts(x) => x.inject_panic(),
            Client::Rooms(x) => x.inject_panic(),
        }
    }

    /// The next event must be ERROR with CW_PANIC, and then the client
    /// says CW_CLOSED to everything.
    fn expect_panic_then_closed(c: *mut cw_client) {
        let mut ev = ptr::null_mut();
        assert_eq!(
            unsafe { cw_client_next_event(c, 10_000, &mut ev) },
            cw_result::CW_OK
        );
        assert_eq!(unsafe { cw_event_kind(ev) }, cw_event_type::CW_EVENT_ERROR);
        assert_eq!(unsafe { cw_event_result(ev) }, cw_result::CW_PANIC);
        let text = unsafe { std::ffi::CStr::from_ptr(cw_event_text(ev)) };
        let text = text.to_str().unwrap();
        assert!(
            text.contains("panicked") && text.contains("injected"),
            "{text}"
        );
        unsafe { cw_event_free(ev) };
        let mut ev = ptr::null_mut();
        assert_eq!(
            unsafe { cw_client_next_event(c, 1000, &mut ev) },
            cw_result::CW_CLOSED
        );
        assert!(ev.is_null());
        let t = CString::new("after the panic").unwrap();
        assert_eq!(
            unsafe { cw_client_send_message(c, t.as_ptr()) },
            cw_result::CW_CLOSED
        );
        unsafe { cw_client_free(c) };
    }

    #[test]
    fn a_panic_in_the_tcp_reader_is_an_error_event_then_closed() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (go_tx, go) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            go.recv().unwrap();
            // LOGIN_ACCEPTED unasked for: harmless, it only wakes the reader.
            s.write_all(&[1]).unwrap();
            // Until the client's socket is shut.
            let _ = s.read(&mut [0u8; 16]);
        });
        let c = connect(port, cw_dialect::CW_DIALECT_CHATOS);
        inject_panic(c);
        go_tx.send(()).unwrap();
        expect_panic_then_closed(c);
        server.join().unwrap();

        // The process lives on, and so does the library: a new client works.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut login = [0u8; 7]; // LOGIN "al": opcode, INT length, 2 bytes
            s.read_exact(&mut login).unwrap();
            s.write_all(&[1]).unwrap();
            let _ = s.read(&mut [0u8; 16]);
        });
        let c = connect(port, cw_dialect::CW_DIALECT_CHATOS);
        let name = CString::new("al").unwrap();
        assert_eq!(
            unsafe { cw_client_login(c, name.as_ptr(), 10_000) },
            cw_result::CW_OK
        );
        unsafe { cw_client_free(c) };
        server.join().unwrap();
    }

    #[test]
    fn a_panic_in_the_rooms_reader_is_an_error_event_then_closed() {
        let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = fake.local_addr().unwrap().port();
        let c = connect(port, cw_dialect::CW_DIALECT_ROOMS);
        // The rooms reader wakes every tick: the next one panics.
        inject_panic(c);
        expect_panic_then_closed(c);
    }
}
