//! Stored times of accounts messages (the STAMPS extension) through the C
//! API: cw_client_connect_with(CW_ACCOUNTS_STAMPS), cw_client_features,
//! cw_event_time on live and offline messages, cw_history_time; a plain
//! client sees 0; a server older than the extension is connected to again
//! without it.

mod ffi_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::ptr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chinwag::ffi::codes::{cw_dialect, cw_event_type as K, cw_result as R};
use chinwag::ffi::*;
use chinwag_proto::accounts::{Decoder, Frame};
use ffi_common::{cs, last_error, text, C};

const STEP: i32 = 10_000;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn connect(port: u16, features: u32) -> C {
    let h = cs("127.0.0.1");
    let mut c = ptr::null_mut();
    let r = unsafe {
        cw_client_connect_with(
            h.as_ptr(),
            port,
            cw_dialect::CW_DIALECT_ACCOUNTS as i32,
            features,
            &mut c,
        )
    };
    assert_eq!(r, R::CW_OK, "{}", last_error());
    C(c)
}

fn features(c: &C) -> u32 {
    let mut f = 99;
    assert_eq!(unsafe { cw_client_features(c.0, &mut f) }, R::CW_OK);
    f
}

fn account(port: u16, features: u32, email: &str, pseudo: &str) -> C {
    let c = connect(port, features);
    let (e, p, pw) = (cs(email), cs(pseudo), cs("correct horse"));
    let r = unsafe { cw_client_register(c.0, e.as_ptr(), p.as_ptr(), pw.as_ptr(), STEP) };
    assert!(
        matches!(r, R::CW_OK | R::CW_EMAIL_TAKEN),
        "{}",
        last_error()
    );
    login(&c, email);
    c
}

fn login(c: &C, email: &str) {
    let (e, pw) = (cs(email), cs("correct horse"));
    let r = unsafe { cw_client_login_password(c.0, e.as_ptr(), pw.as_ptr(), STEP) };
    assert_eq!(r, R::CW_OK, "{}", last_error());
}

/// The next private message: (text, cw_event_time).
fn message(c: &C) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_millis(STEP as u64);
    loop {
        assert!(Instant::now() < deadline, "no message");
        let mut ev = ptr::null_mut();
        if unsafe { cw_client_next_event(c.0, 1000, &mut ev) } != R::CW_OK {
            continue;
        }
        let kind = unsafe { cw_event_kind(ev) };
        let got = (text(unsafe { cw_event_text(ev) }), unsafe {
            cw_event_time(ev)
        });
        unsafe { cw_event_free(ev) };
        if kind == K::CW_EVENT_PRIVATE_MESSAGE {
            return (got.0.unwrap(), got.1);
        }
    }
}

fn send(c: &C, to: &str, body: &str) {
    let (t, m) = (cs(to), cs(body));
    assert_eq!(
        unsafe { cw_client_send_to_friend(c.0, t.as_ptr(), m.as_ptr(), STEP) },
        R::CW_OK,
        "{}",
        last_error()
    );
}

#[test]
fn messages_and_history_carry_the_stored_time() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.accounts_addr().port();
    let al = account(port, CW_ACCOUNTS_STAMPS, "al@example.org", "al");
    let bo = account(port, 0, "bo@example.org", "bo");
    assert_eq!(features(&al), CW_ACCOUNTS_STAMPS);
    assert_eq!(features(&bo), 0);
    let p = cs("bo");
    assert_eq!(
        unsafe { cw_client_request_friend(al.0, p.as_ptr(), STEP) },
        R::CW_OK
    );
    let p = cs("al");
    let deadline = Instant::now() + Duration::from_secs(10);
    while unsafe { cw_client_accept_friend(bo.0, p.as_ptr(), STEP) } != R::CW_OK {
        assert!(Instant::now() < deadline, "{}", last_error());
        thread::sleep(Duration::from_millis(20));
    }

    let before = now();
    // bo -> al: stamped for al; al -> bo: 0 for the plain client.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (t, m) = (cs("al"), cs("first"));
        match unsafe { cw_client_send_to_friend(bo.0, t.as_ptr(), m.as_ptr(), STEP) } {
            R::CW_OK => break,
            // The acceptance may still be on its way to the store.
            R::CW_MESSAGE_FAILED if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            r => panic!("{r:?}: {}", last_error()),
        }
    }
    let (body, at) = message(&al);
    assert_eq!(body, "first");
    assert!(at >= before && at <= now(), "{at}");
    send(&al, "bo", "second");
    assert_eq!(message(&bo), ("second".to_string(), 0));

    // History: times for al's client, 0 for bo's.
    let mut page = ptr::null_mut();
    let p = cs("bo");
    assert_eq!(
        unsafe { cw_client_history(al.0, p.as_ptr(), 0, STEP, &mut page) },
        R::CW_OK
    );
    assert_eq!(unsafe { cw_history_count(page) }, 2);
    for i in 0..2 {
        let t = unsafe { cw_history_time(page, i) };
        assert!(t >= before && t <= now(), "{t}");
    }
    assert_eq!(unsafe { cw_history_time(page, 2) }, 0, "out of range");
    assert_eq!(unsafe { cw_history_time(ptr::null(), 0) }, 0);
    unsafe { cw_history_free(page) };
    let p = cs("al");
    let mut page = ptr::null_mut();
    assert_eq!(
        unsafe { cw_client_history(bo.0, p.as_ptr(), 0, STEP, &mut page) },
        R::CW_OK
    );
    assert_eq!(unsafe { cw_history_time(page, 0) }, 0);
    unsafe { cw_history_free(page) };

    // Offline: al leaves; bo's message comes with its time at al's login.
    drop(al);
    wait_offline(&bo, "al");
    send(&bo, "al", "while away");
    let al = connect(port, CW_ACCOUNTS_STAMPS);
    login(&al, "al@example.org");
    let (body, at) = message(&al);
    assert_eq!(body, "while away");
    assert!(at >= before && at <= now(), "{at}");
}

/// Wait (bounded) until the server has seen `who` go: a call to an
/// offline friend fails at once; one still online rings, and is hung up
/// before the next try.
fn wait_offline(me: &C, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let w = cs(who);
    loop {
        assert!(Instant::now() < deadline, "{who} never went offline");
        assert_eq!(
            unsafe { cw_client_place_call(me.0, w.as_ptr(), ptr::null(), 9) },
            R::CW_OK,
            "{}",
            last_error()
        );
        let mut ev = ptr::null_mut();
        if unsafe { cw_client_next_event(me.0, 100, &mut ev) } == R::CW_OK {
            let kind = unsafe { cw_event_kind(ev) };
            unsafe { cw_event_free(ev) };
            if kind == K::CW_EVENT_CALL_FAILED {
                return;
            }
        }
        unsafe { cw_client_hangup_call(me.0, w.as_ptr()) };
    }
}

#[test]
fn bad_feature_bits_are_refused_locally() {
    let h = cs("127.0.0.1");
    let mut c = ptr::null_mut();
    for (dialect, bits) in [
        (cw_dialect::CW_DIALECT_ACCOUNTS, 0x8000_0000u32),
        (cw_dialect::CW_DIALECT_CHATOS, CW_ACCOUNTS_STAMPS),
    ] {
        let r = unsafe { cw_client_connect_with(h.as_ptr(), 1, dialect as i32, bits, &mut c) };
        assert_eq!(r, R::CW_INVALID_ARGUMENT, "{}", last_error());
        assert!(c.is_null());
    }
    // Features of a chatos client: unsupported.
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let chat = C::connect_to(
        "127.0.0.1",
        srv.chatos_addr().port(),
        cw_dialect::CW_DIALECT_CHATOS,
    );
    let mut f = 0;
    assert_eq!(
        unsafe { cw_client_features(chat.0, &mut f) },
        R::CW_UNSUPPORTED
    );
}

/// A server older than the extension closes a connection whose HELLO has
/// a payload; the library connects again with a plain HELLO.
#[test]
fn an_older_server_is_connected_to_without_the_extension() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let recv = |s: &mut std::net::TcpStream, dec: &mut Decoder| loop {
            if let Some(f) = dec.next_frame().unwrap() {
                return f;
            }
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            dec.push(&buf[..n]);
        };
        let (mut s, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        assert_eq!(recv(&mut s, &mut dec), Frame::HelloWith { features: 1 });
        drop(s); // what an old chinwagd does with trailing payload bytes
        let (mut s, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        assert_eq!(recv(&mut s, &mut dec), Frame::Hello);
        s.write_all(&Frame::HelloAck.to_bytes()).unwrap();
        let _ = s.read(&mut [0u8; 16]);
    });
    let c = connect(port, CW_ACCOUNTS_STAMPS);
    assert_eq!(features(&c), 0);
    drop(c);
    t.join().unwrap();
}
