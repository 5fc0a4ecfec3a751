//! The C API's edge cases, called through the exported functions exactly as
//! C would: NULL handles, invalid UTF-8, free(NULL), events after close,
//! several threads on one client, overflow, private streams, and servers
//! that send garbage. Every server here listens on 127.0.0.1.

mod ffi_common;

use std::ffi::c_char;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag::ffi::codes::{cw_dialect, cw_event_type as K, cw_result as R};
use chinwag::ffi::*;
use chinwag_proto::chatos::Command;
use ffi_common::{cs, last_error, proc_state, text, C};

fn connect(port: u16) -> C {
    let mut c = ptr::null_mut();
    let host = cs("127.0.0.1");
    let r = unsafe {
        cw_client_connect(
            host.as_ptr(),
            port,
            cw_dialect::CW_DIALECT_CHATOS as i32,
            &mut c,
        )
    };
    assert_eq!(r, R::CW_OK, "{}", last_error());
    C(c)
}

fn login(port: u16, name: &str) -> C {
    let c = connect(port);
    let n = cs(name);
    assert_eq!(
        unsafe { cw_client_login(c.0, n.as_ptr(), 5000) },
        R::CW_OK,
        "{}",
        last_error()
    );
    c
}

struct Ev(*mut cw_event);
impl Drop for Ev {
    fn drop(&mut self) {
        unsafe { cw_event_free(self.0) }
    }
}
impl Ev {
    fn kind(&self) -> K {
        unsafe { cw_event_kind(self.0) }
    }
    fn peer(&self) -> Option<String> {
        text(unsafe { cw_event_peer(self.0) })
    }
    fn text(&self) -> Option<String> {
        text(unsafe { cw_event_text(self.0) })
    }
}

fn next(c: &C, ms: i32) -> Result<Ev, R> {
    let mut ev = ptr::null_mut();
    match unsafe { cw_client_next_event(c.0, ms, &mut ev) } {
        R::CW_OK => Ok(Ev(ev)),
        other => {
            assert!(ev.is_null(), "out-parameter written on failure");
            Err(other)
        }
    }
}

/// The next event of `kind`, skipping others; fails after 5 s.
fn wait_for(c: &C, kind: K) -> Ev {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        match next(c, left.max(1)) {
            Ok(ev) if ev.kind() == kind => return ev,
            Ok(_) => continue,
            Err(r) => panic!("waiting for {kind:?}: {r:?}"),
        }
    }
}

fn server() -> (chinwagd::Server, u16) {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.chatos_addr().port();
    (srv, port)
}

#[test]
fn null_handles_and_out_parameters() {
    let host = cs("127.0.0.1");
    let s = cs("x");
    unsafe {
        let mut c = ptr::null_mut();
        assert_eq!(
            cw_client_connect(ptr::null(), 1, 1, &mut c),
            R::CW_NULL_ARGUMENT
        );
        assert!(c.is_null());
        assert!(last_error().contains("host"), "{}", last_error());
        assert_eq!(
            cw_client_connect(host.as_ptr(), 1, 1, ptr::null_mut()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_login(ptr::null(), s.as_ptr(), 0),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_send_message(ptr::null(), s.as_ptr()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_send_private(ptr::null(), s.as_ptr(), s.as_ptr()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_request_private(ptr::null(), s.as_ptr()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_accept_private(ptr::null(), s.as_ptr()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_refuse_private(ptr::null(), s.as_ptr()),
            R::CW_NULL_ARGUMENT
        );
        let mut ev = ptr::null_mut();
        assert_eq!(
            cw_client_next_event(ptr::null(), 0, &mut ev),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(cw_client_close(ptr::null()), R::CW_NULL_ARGUMENT);
        let mut name = ptr::null_mut();
        assert_eq!(
            cw_client_login_name(ptr::null(), &mut name),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(cw_event_kind(ptr::null()), K::CW_EVENT_NONE);
        assert!(cw_event_peer(ptr::null()).is_null());
        assert!(cw_event_text(ptr::null()).is_null());
        assert_eq!(cw_event_count(ptr::null()), 0);
        assert_eq!(cw_event_result(ptr::null()), R::CW_NULL_ARGUMENT);
        let mut id = 0i64;
        assert_eq!(
            cw_event_connect_id(ptr::null(), &mut id),
            R::CW_NULL_ARGUMENT
        );
        let mut st = ptr::null_mut();
        assert_eq!(
            cw_event_take_stream(ptr::null_mut(), &mut st),
            R::CW_NULL_ARGUMENT
        );
        let mut buf = [0u8; 4];
        let mut got = 0usize;
        assert_eq!(
            cw_stream_read(ptr::null(), buf.as_mut_ptr(), 4, 0, &mut got),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_stream_write(ptr::null(), buf.as_ptr(), 4),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(cw_stream_shutdown_write(ptr::null()), R::CW_NULL_ARGUMENT);
        assert_eq!(cw_stream_close(ptr::null()), R::CW_NULL_ARGUMENT);
        assert!(cw_stream_peer(ptr::null()).is_null());
        assert_eq!(
            cw_stream_connect_id(ptr::null(), &mut id),
            R::CW_NULL_ARGUMENT
        );
        // free(NULL) is allowed everywhere.
        cw_client_free(ptr::null_mut());
        cw_event_free(ptr::null_mut());
        cw_stream_free(ptr::null_mut());
        cw_string_free(ptr::null_mut());
    }
}

#[test]
fn result_strings_and_dialects() {
    for code in R::ALL {
        let s = text(cw_result_str(code as i32)).unwrap();
        assert!(!s.is_empty() && s != "unknown result code", "{code:?}");
    }
    assert_eq!(text(cw_result_str(12345)).unwrap(), "unknown result code");
    assert_eq!(text(cw_result_str(-1)).unwrap(), "unknown result code");
    let host = cs("127.0.0.1");
    // Every dialect is implemented (tests/accounts_capi.rs, babel_capi.rs,
    // rooms_capi.rs); rooms has no handshake, so connecting sends nothing
    // and succeeds even where nobody listens.
    let d = cw_dialect::CW_DIALECT_ROOMS;
    let mut c = ptr::null_mut();
    let r = unsafe { cw_client_connect(host.as_ptr(), 7, d as i32, &mut c) };
    assert_eq!(r, R::CW_OK, "{d:?}: {}", last_error());
    assert!(!c.is_null());
    unsafe { cw_client_free(c) };
    for bad in [0, 5, -1, 99] {
        let mut c = ptr::null_mut();
        let r = unsafe { cw_client_connect(host.as_ptr(), 7, bad, &mut c) };
        assert_eq!(r, R::CW_INVALID_ARGUMENT, "{bad}");
    }
    // Nothing listens on this freshly released port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = ptr::null_mut();
    let r = unsafe { cw_client_connect(host.as_ptr(), port, 1, &mut c) };
    assert_eq!(r, R::CW_CONNECT_FAILED);
    assert!(c.is_null());
    // The address is named once (the resolved one only where it differs).
    let e = last_error();
    assert_eq!(e.matches(&format!("127.0.0.1:{port}")).count(), 1, "{e}");
    assert!(e.contains("refused"), "{e}");
}

#[test]
fn invalid_utf8_arguments_are_refused() {
    let (_srv, port) = server();
    let bad = [0x61u8, 0xff, 0xfe, 0];
    let bad = bad.as_ptr() as *const c_char;
    let mut c = ptr::null_mut();
    unsafe {
        assert_eq!(cw_client_connect(bad, port, 1, &mut c), R::CW_INVALID_UTF8);
        assert!(c.is_null());
    }
    let anon = connect(port);
    unsafe {
        assert_eq!(cw_client_login(anon.0, bad, 1000), R::CW_INVALID_UTF8);
        assert!(last_error().contains("UTF-8"));
    }
    let a = login(port, "utf8-alice");
    let ok = cs("é ok");
    unsafe {
        assert_eq!(cw_client_send_message(a.0, bad), R::CW_INVALID_UTF8);
        assert_eq!(
            cw_client_send_private(a.0, bad, ok.as_ptr()),
            R::CW_INVALID_UTF8
        );
        assert_eq!(
            cw_client_send_private(a.0, ok.as_ptr(), bad),
            R::CW_INVALID_UTF8
        );
        assert_eq!(cw_client_request_private(a.0, bad), R::CW_INVALID_UTF8);
        assert_eq!(cw_client_send_message(a.0, ok.as_ptr()), R::CW_OK);
    }
    let ev = wait_for(&a, K::CW_EVENT_MESSAGE);
    assert_eq!(ev.text().unwrap(), "é ok");
}

#[test]
fn login_rules() {
    let (_srv, port) = server();
    let a = connect(port);
    let t = cs("hello");
    let long = cs(&"x".repeat(31));
    let empty = cs("");
    let name = cs("login-alice");
    unsafe {
        assert_eq!(cw_client_send_message(a.0, t.as_ptr()), R::CW_NOT_LOGGED_IN);
        let mut out = ptr::null_mut();
        assert_eq!(cw_client_login_name(a.0, &mut out), R::CW_NOT_LOGGED_IN);
        assert!(out.is_null());
        assert_eq!(cw_client_login(a.0, long.as_ptr(), 1000), R::CW_TOO_LONG);
        assert_eq!(
            cw_client_login(a.0, empty.as_ptr(), 1000),
            R::CW_INVALID_ARGUMENT
        );
        assert_eq!(cw_client_login(a.0, name.as_ptr(), 5000), R::CW_OK);
        assert_eq!(
            cw_client_login(a.0, name.as_ptr(), 5000),
            R::CW_ALREADY_LOGGED_IN
        );
        assert_eq!(cw_client_login_name(a.0, &mut out), R::CW_OK);
        assert_eq!(text(out).unwrap(), "login-alice");
        cw_string_free(out);
        let big = cs(&"y".repeat(1025));
        assert_eq!(cw_client_send_message(a.0, big.as_ptr()), R::CW_TOO_LONG);
        let full = cs(&"y".repeat(1024));
        assert_eq!(cw_client_send_message(a.0, full.as_ptr()), R::CW_OK);
    }
    // The same name from another client is refused, and another name then works.
    let b = connect(port);
    unsafe {
        assert_eq!(
            cw_client_login(b.0, name.as_ptr(), 5000),
            R::CW_LOGIN_REFUSED
        );
        let other = cs("login-bob");
        assert_eq!(cw_client_login(b.0, other.as_ptr(), 5000), R::CW_OK);
    }
}

#[test]
fn messages_and_private_messages_arrive_as_events() {
    let (_srv, port) = server();
    let a = login(port, "msg-alice");
    let b = login(port, "msg-bob");
    let hi = cs("hi all");
    let to = cs("msg-bob");
    let psst = cs("psst");
    unsafe {
        assert_eq!(cw_client_send_message(a.0, hi.as_ptr()), R::CW_OK);
        assert_eq!(
            cw_client_send_private(a.0, to.as_ptr(), psst.as_ptr()),
            R::CW_OK
        );
    }
    let ev = wait_for(&b, K::CW_EVENT_MESSAGE);
    assert_eq!(
        (ev.peer().unwrap().as_str(), ev.text().unwrap().as_str()),
        ("msg-alice", "hi all")
    );
    assert_eq!(unsafe { cw_event_result(ev.0) }, R::CW_OK);
    let ev = wait_for(&b, K::CW_EVENT_PRIVATE_MESSAGE);
    assert_eq!(
        (ev.peer().unwrap().as_str(), ev.text().unwrap().as_str()),
        ("msg-alice", "psst")
    );
    // The sender gets its own global message back.
    let ev = wait_for(&a, K::CW_EVENT_MESSAGE);
    assert_eq!(ev.peer().unwrap(), "msg-alice");
    assert_eq!(next(&b, 100).err(), Some(R::CW_TIMEOUT));
}

#[test]
fn private_connection_refuse_accept_stream_and_close() {
    let (_srv, port) = server();
    let a = login(port, "priv-alice");
    let b = login(port, "priv-bob");
    let an = cs("priv-alice");
    let bn = cs("priv-bob");
    unsafe {
        assert_eq!(
            cw_client_accept_private(b.0, an.as_ptr()),
            R::CW_NO_SUCH_REQUEST
        );
        assert_eq!(
            cw_client_request_private(a.0, an.as_ptr()),
            R::CW_INVALID_ARGUMENT
        );
        // Refused.
        assert_eq!(cw_client_request_private(a.0, bn.as_ptr()), R::CW_OK);
        let req = wait_for(&b, K::CW_EVENT_PRIVATE_REQUEST);
        assert_eq!(req.peer().unwrap(), "priv-alice");
        assert_eq!(cw_client_refuse_private(b.0, an.as_ptr()), R::CW_OK);
        assert_eq!(
            cw_client_refuse_private(b.0, an.as_ptr()),
            R::CW_NO_SUCH_REQUEST
        );
        let no = wait_for(&a, K::CW_EVENT_PRIVATE_REFUSED);
        assert_eq!(no.peer().unwrap(), "priv-bob");
        // Accepted.
        assert_eq!(cw_client_request_private(a.0, bn.as_ptr()), R::CW_OK);
        wait_for(&b, K::CW_EVENT_PRIVATE_REQUEST);
        assert_eq!(cw_client_accept_private(b.0, an.as_ptr()), R::CW_OK);
    }
    let ea = wait_for(&a, K::CW_EVENT_PRIVATE_ESTABLISHED);
    let eb = wait_for(&b, K::CW_EVENT_PRIVATE_ESTABLISHED);
    assert_eq!(ea.peer().unwrap(), "priv-bob");
    assert_eq!(eb.peer().unwrap(), "priv-alice");
    let (mut sa, mut sb) = (ptr::null_mut(), ptr::null_mut());
    unsafe {
        let (mut ida, mut idb) = (0i64, 1i64);
        assert_eq!(cw_event_connect_id(ea.0, &mut ida), R::CW_OK);
        assert_eq!(cw_event_connect_id(eb.0, &mut idb), R::CW_OK);
        assert_eq!(ida, idb);
        assert_eq!(cw_event_take_stream(ea.0, &mut sa), R::CW_OK);
        let mut again = ptr::null_mut();
        assert_eq!(
            cw_event_take_stream(ea.0, &mut again),
            R::CW_INVALID_ARGUMENT
        );
        assert!(again.is_null());
        assert_eq!(cw_event_take_stream(eb.0, &mut sb), R::CW_OK);
        assert_eq!(text(cw_stream_peer(sa)).unwrap(), "priv-bob");
        let mut sid = 0i64;
        assert_eq!(cw_stream_connect_id(sb, &mut sid), R::CW_OK);
        assert_eq!(sid, ida);

        let mut buf = [0u8; 64];
        let mut got = 0usize;
        assert_eq!(
            cw_stream_read(sb, buf.as_mut_ptr(), 64, 50, &mut got),
            R::CW_TIMEOUT
        );
        assert_eq!(
            cw_stream_read(sb, buf.as_mut_ptr(), 64, 0, &mut got),
            R::CW_TIMEOUT
        );
        assert_eq!(
            cw_stream_read(sb, buf.as_mut_ptr(), 0, 0, &mut got),
            R::CW_INVALID_ARGUMENT
        );
        assert_eq!(cw_stream_write(sa, b"ping".as_ptr(), 4), R::CW_OK);
        assert_eq!(cw_stream_write(sa, ptr::null(), 0), R::CW_OK);
        let mut all = Vec::new();
        while all.len() < 4 {
            assert_eq!(
                cw_stream_read(sb, buf.as_mut_ptr(), 64, 5000, &mut got),
                R::CW_OK
            );
            all.extend_from_slice(&buf[..got]);
        }
        assert_eq!(all, b"ping");
        // Half-close: b sees the end, and can still answer.
        assert_eq!(cw_stream_shutdown_write(sa), R::CW_OK);
        assert_eq!(cw_stream_shutdown_write(sa), R::CW_OK);
        assert_eq!(cw_stream_write(sa, b"x".as_ptr(), 1), R::CW_CLOSED);
        assert_eq!(
            cw_stream_read(sb, buf.as_mut_ptr(), 64, 5000, &mut got),
            R::CW_CLOSED
        );
        assert_eq!(cw_stream_write(sb, b"pong".as_ptr(), 4), R::CW_OK);
        let mut all = Vec::new();
        while all.len() < 4 {
            assert_eq!(
                cw_stream_read(sa, buf.as_mut_ptr(), 64, 5000, &mut got),
                R::CW_OK
            );
            all.extend_from_slice(&buf[..got]);
        }
        assert_eq!(all, b"pong");
        // b closes before finishing: the server tears down and tells both.
        assert_eq!(cw_stream_close(sb), R::CW_OK);
        assert_eq!(cw_stream_close(sb), R::CW_OK);
        assert_eq!(
            cw_stream_read(sb, buf.as_mut_ptr(), 64, 0, &mut got),
            R::CW_CLOSED
        );
    }
    let ca = wait_for(&a, K::CW_EVENT_PRIVATE_CLOSED);
    assert_eq!(ca.peer().unwrap(), "priv-bob");
    let cb = wait_for(&b, K::CW_EVENT_PRIVATE_CLOSED);
    assert_eq!(cb.peer().unwrap(), "priv-alice");
    unsafe {
        let mut buf = [0u8; 8];
        let mut got = 0usize;
        assert_eq!(
            cw_stream_read(sa, buf.as_mut_ptr(), 8, 5000, &mut got),
            R::CW_CLOSED
        );
        cw_stream_free(sa);
        cw_stream_free(sb);
    }
}

#[test]
fn events_after_close() {
    let (_srv, port) = server();
    let a = Arc::new(login(port, "close-alice"));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = {
        let a = a.clone();
        std::thread::spawn(move || {
            tid_tx.send(proc_state::my_tid()).unwrap();
            next(&a, -1).err()
        })
    };
    let tid = tid_rx.recv().unwrap();
    proc_state::wait_steady("the waiter blocks", 3, || proc_state::blocked(tid));
    unsafe {
        assert_eq!(cw_client_close(a.0), R::CW_OK);
        assert_eq!(cw_client_close(a.0), R::CW_OK);
    }
    assert_eq!(
        waiter.join().unwrap(),
        Some(R::CW_CLOSED),
        "a blocked waiter wakes"
    );
    assert_eq!(next(&a, 0).err(), Some(R::CW_CLOSED));
    assert_eq!(next(&a, -1).err(), Some(R::CW_CLOSED));
    let t = cs("late");
    unsafe {
        assert_eq!(cw_client_send_message(a.0, t.as_ptr()), R::CW_CLOSED);
        assert_eq!(cw_client_request_private(a.0, t.as_ptr()), R::CW_CLOSED);
        assert_eq!(cw_client_login(a.0, t.as_ptr(), 100), R::CW_CLOSED);
    }
}

#[test]
fn server_shutdown_is_an_event() {
    let (srv, port) = server();
    let a = login(port, "down-alice");
    srv.shutdown();
    let ev = wait_for(&a, K::CW_EVENT_DISCONNECTED);
    assert_eq!(unsafe { cw_event_result(ev.0) }, R::CW_CLOSED);
    assert!(ev.text().unwrap().contains("closed"));
    assert_eq!(next(&a, 1000).err(), Some(R::CW_CLOSED));
    let t = cs("x");
    assert_eq!(
        unsafe { cw_client_send_message(a.0, t.as_ptr()) },
        R::CW_CLOSED
    );
}

#[test]
fn many_threads_on_one_client() {
    const THREADS: usize = 8;
    const EACH: usize = 50;
    let (_srv, port) = server();
    let a = Arc::new(login(port, "mt-alice"));
    let b = login(port, "mt-bob");
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let a = a.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..EACH {
                let m = cs(&format!("{t}-{i}"));
                let to = cs("mt-bob");
                unsafe {
                    assert_eq!(cw_client_send_message(a.0, m.as_ptr()), R::CW_OK);
                    assert_eq!(
                        cw_client_send_private(a.0, to.as_ptr(), m.as_ptr()),
                        R::CW_OK
                    );
                    let mut name = ptr::null_mut();
                    assert_eq!(cw_client_login_name(a.0, &mut name), R::CW_OK);
                    cw_string_free(name);
                }
                // Pollers race each other and the senders on the same queue.
                let _ = next(&a, 0);
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let mut global = std::collections::HashSet::new();
    let mut private = 0;
    while global.len() < THREADS * EACH || private < THREADS * EACH {
        let ev = next(&b, 5000).expect("every message arrives");
        match ev.kind() {
            K::CW_EVENT_MESSAGE => assert!(global.insert(ev.text().unwrap()), "duplicate"),
            K::CW_EVENT_PRIVATE_MESSAGE => private += 1,
            other => panic!("{other:?}"),
        }
    }
    // Closing while other threads wait on the same client.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let (a, tid_tx) = (a.clone(), tid_tx.clone());
            std::thread::spawn(move || {
                tid_tx.send(proc_state::my_tid()).unwrap();
                loop {
                    match next(&a, -1) {
                        Ok(_) => continue,
                        Err(r) => return r,
                    }
                }
            })
        })
        .collect();
    let tids: Vec<u32> = tid_rx.iter().take(4).collect();
    proc_state::wait_steady("the waiters block", 3, || {
        tids.iter().all(|t| proc_state::blocked(*t))
    });
    unsafe { cw_client_close(a.0) };
    for w in waiters {
        assert_eq!(w.join().unwrap(), R::CW_CLOSED);
    }
}

#[test]
fn full_queue_overflows_with_a_count() {
    const SENT: u64 = 1100;
    let (_srv, port) = server();
    let a = login(port, "of-alice");
    let b = login(port, "of-bob");
    for i in 0..SENT {
        let m = cs(&i.to_string());
        assert_eq!(unsafe { cw_client_send_message(a.0, m.as_ptr()) }, R::CW_OK);
    }
    let to = cs("of-bob");
    let done = cs("done");
    assert_eq!(
        unsafe { cw_client_send_private(a.0, to.as_ptr(), done.as_ptr()) },
        R::CW_OK
    );
    // Wait until b's queue has surely taken everything: the private
    // message is the last thing sent to b, and a sees its own last broadcast.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_seen = false;
    while !last_seen && Instant::now() < deadline {
        if let Ok(ev) = next(&a, 1000) {
            last_seen = ev.text().as_deref() == Some(&(SENT - 1).to_string()[..]);
        }
    }
    // And until no byte is left in flight to b or unread by its library
    // (its reader queues or drops each event before reading on).
    proc_state::wait_steady("everything for of-bob read", 5, || {
        proc_state::idle_connections(port)
    });
    let first = next(&b, 1000).unwrap();
    assert_eq!(first.kind(), K::CW_EVENT_OVERFLOW);
    let dropped = unsafe { cw_event_count(first.0) };
    let mut kept = 0u64;
    let mut last = None;
    loop {
        match next(&b, 300) {
            Ok(ev) => {
                assert_ne!(ev.kind(), K::CW_EVENT_OVERFLOW);
                kept += 1;
                last = Some((ev.kind(), ev.text()));
            }
            Err(R::CW_TIMEOUT) => break,
            Err(r) => panic!("{r:?}"),
        }
    }
    assert_eq!(kept, chinwag::client::DEFAULT_CAPACITY as u64);
    assert_eq!(
        dropped + kept,
        SENT + 1,
        "every event is either kept or counted"
    );
    assert_eq!(
        last,
        Some((K::CW_EVENT_PRIVATE_MESSAGE, Some("done".into()))),
        "newest kept"
    );
}

/// A fake server on 127.0.0.1 that accepts one client, answers its LOGIN
/// with LOGIN_ACCEPTED, then sends `bytes`. Returns the port.
fn fake_server(bytes: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let mut seen = Vec::new();
        while Command::decode(&seen).is_err() {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = s.write_all(&[1]);
        let _ = s.write_all(&bytes);
        // Keep the socket open until the client hangs up.
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    (port, t)
}

#[test]
fn malformed_frames_give_an_error_event_and_a_closed_client() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x7f], "unknown opcode"),
        (vec![13], "unknown opcode"),
        (
            vec![3, 0, 0, 0, 1, b'a', 0x7f, 0xff, 0xff, 0xff],
            "exceeds limit",
        ),
        (
            vec![3, 0, 0, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff],
            "negative length",
        ),
        (vec![4, 0, 0, 0, 2, 0xc3, 0x28], "UTF-8"),
        (
            Command::Login { login: "x".into() }.to_bytes(),
            "only clients send",
        ),
        (Command::Established.to_bytes(), "only clients send"),
    ];
    for (bytes, why) in cases {
        let (port, t) = fake_server(bytes.clone());
        let a = login(port, "victim");
        let ev = wait_for(&a, K::CW_EVENT_ERROR);
        assert_eq!(unsafe { cw_event_result(ev.0) }, R::CW_PROTOCOL);
        let text = ev.text().unwrap();
        assert!(text.contains(why), "{bytes:02x?}: {text}");
        drop(ev);
        assert_eq!(next(&a, 1000).err(), Some(R::CW_CLOSED));
        let m = cs("still there?");
        assert_eq!(
            unsafe { cw_client_send_message(a.0, m.as_ptr()) },
            R::CW_CLOSED
        );
        drop(a);
        t.join().unwrap();
    }
}

#[test]
fn random_bytes_from_a_server_never_crash() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    for _ in 0..40 {
        let len = rng.gen_range(1..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        bytes[0] %= 14;
        let (port, t) = fake_server(bytes);
        let a = login(port, "fuzz");
        // Whatever arrives, the client ends with an error event or keeps
        // running; it never panics or hangs.
        while let Ok(ev) = next(&a, 200) {
            let _ = (ev.kind(), ev.peer(), ev.text());
            let mut s = ptr::null_mut();
            if unsafe { cw_event_take_stream(ev.0, &mut s) } == R::CW_OK {
                unsafe { cw_stream_free(s) };
            }
        }
        unsafe { cw_client_close(a.0) };
        drop(a);
        t.join().unwrap();
    }
}

#[test]
fn server_hanging_up_during_login() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        // Read the LOGIN first, so the hang-up is an orderly end of stream
        // rather than a reset for unread bytes.
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        drop(s);
    });
    let a = connect(port);
    let n = cs("nobody");
    assert_eq!(
        unsafe { cw_client_login(a.0, n.as_ptr(), 5000) },
        R::CW_CLOSED
    );
    let ev = wait_for(&a, K::CW_EVENT_DISCONNECTED);
    assert_eq!(unsafe { cw_event_result(ev.0) }, R::CW_CLOSED);
    t.join().unwrap();
}

/// The /proc readings the tests above wait on can say "no" as well as "yes".
#[test]
fn proc_state_readings_tell_both_ways() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // A spinning thread is not blocked; one waiting on a channel is.
    let stop = Arc::new(AtomicBool::new(false));
    let (spin_tx, spin_rx) = std::sync::mpsc::channel();
    let spinner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            spin_tx.send(proc_state::my_tid()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    let (sleep_tx, sleep_rx) = std::sync::mpsc::channel();
    let sleeper = std::thread::spawn(move || {
        sleep_tx.send(proc_state::my_tid()).unwrap();
        let _ = wake_rx.recv();
    });
    let (spin_tid, sleep_tid) = (spin_rx.recv().unwrap(), sleep_rx.recv().unwrap());
    proc_state::wait_steady("the sleeper blocks", 3, || proc_state::blocked(sleep_tid));
    // A spinner may be preempted now and then, but not at every look.
    assert!(
        (0..50).any(|_| !proc_state::blocked(spin_tid)),
        "a spinning thread reads as blocked"
    );
    stop.store(true, Ordering::Relaxed);
    drop(wake_tx);
    spinner.join().unwrap();
    sleeper.join().unwrap();
    // Listening, then not.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(proc_state::listening(port));
    // Unread bytes make a connection busy until they are read.
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = l.accept().unwrap();
    drop(l);
    assert!(!proc_state::listening(port));
    client.write_all(b"unread").unwrap();
    proc_state::wait_steady("the bytes reach the server side", 1, || {
        !proc_state::idle_connections(port)
    });
    let mut six = [0u8; 6];
    server.read_exact(&mut six).unwrap();
    proc_state::wait_steady("the bytes are read", 1, || {
        proc_state::idle_connections(port)
    });
}
