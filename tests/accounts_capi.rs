//! The accounts dialect through the C ABI, called exactly as C would,
//! against an in-process chinwagd on 127.0.0.1 (and a few scripted fake
//! servers for timing cases): registration and login answers, friends,
//! acknowledged messages online and offline, history paging, lists, call
//! signalling with voice addresses, cross-dialect CW_UNSUPPORTED, and
//! several threads sharing one client.

mod ffi_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::ptr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag::ffi::codes::{cw_dialect, cw_event_type as K, cw_result as R};
use chinwag::ffi::*;
use chinwag_proto::accounts::{Decoder, Frame};
use ffi_common::{cs, last_error, proc_state, text, C};

const MS: i32 = 10_000;

impl C {
    fn connect(port: u16, dialect: cw_dialect) -> C {
        C::connect_to("127.0.0.1", port, dialect)
    }

    fn accounts(port: u16) -> C {
        C::connect(port, cw_dialect::CW_DIALECT_ACCOUNTS)
    }

    fn register(&self, email: &str, pseudo: &str, pw: &str) -> R {
        let (e, p, w) = (cs(email), cs(pseudo), cs(pw));
        unsafe { cw_client_register(self.0, e.as_ptr(), p.as_ptr(), w.as_ptr(), MS) }
    }

    fn login(&self, email: &str, pw: &str) -> R {
        let (e, w) = (cs(email), cs(pw));
        unsafe { cw_client_login_password(self.0, e.as_ptr(), w.as_ptr(), MS) }
    }

    fn name(&self) -> Option<String> {
        let mut out = ptr::null_mut();
        if unsafe { cw_client_login_name(self.0, &mut out) } != R::CW_OK {
            return None;
        }
        let s = text(out);
        unsafe { cw_string_free(out) };
        s
    }

    fn id(&self) -> Result<u64, R> {
        let mut id = 0u64;
        match unsafe { cw_client_account_id(self.0, &mut id) } {
            R::CW_OK => Ok(id),
            r => Err(r),
        }
    }

    fn request_friend(&self, pseudo: &str) -> R {
        let p = cs(pseudo);
        unsafe { cw_client_request_friend(self.0, p.as_ptr(), MS) }
    }

    fn accept_friend(&self, pseudo: &str) -> R {
        let p = cs(pseudo);
        unsafe { cw_client_accept_friend(self.0, p.as_ptr(), MS) }
    }

    fn refuse_friend(&self, pseudo: &str) -> R {
        let p = cs(pseudo);
        unsafe { cw_client_refuse_friend(self.0, p.as_ptr(), MS) }
    }

    fn list(&self, requests: bool) -> Result<Vec<String>, R> {
        let mut l = ptr::null_mut();
        let r = unsafe {
            if requests {
                cw_client_list_friend_requests(self.0, MS, &mut l)
            } else {
                cw_client_list_friends(self.0, MS, &mut l)
            }
        };
        if r != R::CW_OK {
            assert!(l.is_null(), "out-parameter written on failure");
            return Err(r);
        }
        let n = unsafe { cw_strings_count(l) };
        let v = (0..n)
            .map(|i| text(unsafe { cw_strings_get(l, i) }).unwrap())
            .collect();
        assert!(unsafe { cw_strings_get(l, n) }.is_null());
        unsafe { cw_strings_free(l) };
        Ok(v)
    }

    fn friends(&self) -> Vec<String> {
        self.list(false).unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.list(true).unwrap()
    }

    fn send(&self, to: &str, msg: &str) -> R {
        let (t, m) = (cs(to), cs(msg));
        unsafe { cw_client_send_to_friend(self.0, t.as_ptr(), m.as_ptr(), MS) }
    }

    /// (id, sender id, text) of one page.
    fn history(&self, pseudo: &str, before: u64) -> Result<Vec<(u64, u64, String)>, R> {
        let p = cs(pseudo);
        let mut h = ptr::null_mut();
        let r = unsafe { cw_client_history(self.0, p.as_ptr(), before, MS, &mut h) };
        if r != R::CW_OK {
            assert!(h.is_null());
            return Err(r);
        }
        let n = unsafe { cw_history_count(h) };
        let v = (0..n)
            .map(|i| unsafe {
                (
                    cw_history_id(h, i),
                    cw_history_sender_id(h, i),
                    text(cw_history_text(h, i)).unwrap(),
                )
            })
            .collect();
        unsafe {
            assert_eq!(cw_history_id(h, n), 0);
            assert!(cw_history_text(h, n).is_null());
            cw_history_free(h);
        }
        Ok(v)
    }

    fn call(&self, pseudo: &str, addr: Option<&str>, port: u16) -> R {
        let p = cs(pseudo);
        let a = addr.map(cs);
        let ap = a.as_ref().map_or(ptr::null(), |a| a.as_ptr());
        unsafe { cw_client_place_call(self.0, p.as_ptr(), ap, port) }
    }

    fn answer(&self, pseudo: &str, addr: Option<&str>, port: u16) -> R {
        let p = cs(pseudo);
        let a = addr.map(cs);
        let ap = a.as_ref().map_or(ptr::null(), |a| a.as_ptr());
        unsafe { cw_client_answer_call(self.0, p.as_ptr(), ap, port) }
    }

    fn refuse_call(&self, pseudo: &str) -> R {
        let p = cs(pseudo);
        unsafe { cw_client_refuse_call(self.0, p.as_ptr()) }
    }

    fn hangup(&self, pseudo: &str) -> R {
        let p = cs(pseudo);
        unsafe { cw_client_hangup_call(self.0, p.as_ptr()) }
    }

    fn next(&self, ms: i32) -> Result<Ev, R> {
        let mut ev = ptr::null_mut();
        match unsafe { cw_client_next_event(self.0, ms, &mut ev) } {
            R::CW_OK => Ok(Ev(ev)),
            other => Err(other),
        }
    }

    /// The next event of `kind`, skipping others; fails after 10 s.
    fn wait_for(&self, kind: K) -> Ev {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as i32;
            match self.next(left.max(1)) {
                Ok(ev) if ev.kind() == kind => return ev,
                Ok(_) => continue,
                Err(r) => panic!("waiting for {kind:?}: {r:?}"),
            }
        }
    }

    /// No event at all for a short while.
    fn quiet(&self) {
        if let Ok(ev) = self.next(200) {
            panic!("unexpected {:?} from {:?}", ev.kind(), ev.peer());
        }
    }
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
    fn address(&self) -> Option<String> {
        text(unsafe { cw_event_address(self.0) })
    }
    fn port(&self) -> u16 {
        unsafe { cw_event_port(self.0) }
    }
}

fn server() -> (chinwagd::Server, u16) {
    // These tests register and fail logins on one anonymous connection
    // before it logs in: a dozen Argon2 hashes, each slowed by the other
    // tests' own under a loaded machine, took longer than the default
    // 10 s login deadline once (the next login answered CW_CLOSED). The
    // deadline has its own tests (server/tests/chatos.rs, babel.rs).
    let mut cfg = chinwagd::Config::ephemeral();
    cfg.login_timeout_ms = 120_000;
    let srv = chinwagd::Server::start(cfg).unwrap();
    let port = srv.accounts_addr().port();
    (srv, port)
}

fn email(pseudo: &str) -> String {
    format!("{pseudo}@example.org")
}

fn password(pseudo: &str) -> String {
    format!("{pseudo} secret password")
}

/// Register `pseudo` on a throwaway connection.
fn register(port: u16, pseudo: &str) {
    let c = C::accounts(port);
    assert_eq!(
        c.register(&email(pseudo), pseudo, &password(pseudo)),
        R::CW_OK,
        "{}",
        last_error()
    );
}

fn logged_in(port: u16, pseudo: &str) -> C {
    let c = C::accounts(port);
    assert_eq!(
        c.login(&email(pseudo), &password(pseudo)),
        R::CW_OK,
        "{}",
        last_error()
    );
    c
}

/// Register both, log both in, make them friends.
fn friends(port: u16, a: &str, b: &str) -> (C, C) {
    register(port, a);
    register(port, b);
    let ca = logged_in(port, a);
    let cb = logged_in(port, b);
    assert_eq!(ca.request_friend(b), R::CW_OK, "{}", last_error());
    assert_eq!(cb.wait_for(K::CW_EVENT_FRIEND_REQUEST).peer().unwrap(), a);
    assert_eq!(cb.accept_friend(a), R::CW_OK, "{}", last_error());
    assert_eq!(ca.wait_for(K::CW_EVENT_FRIEND_ACCEPTED).peer().unwrap(), b);
    (ca, cb)
}

#[test]
fn register_and_login_answers() {
    let (_srv, port) = server();
    let c = C::accounts(port);
    assert_eq!(
        c.register("al@example.org", "al", "correct horse"),
        R::CW_OK
    );
    assert_eq!(
        c.register("al@example.org", "al2", "correct horse"),
        R::CW_EMAIL_TAKEN
    );
    assert_eq!(
        c.register("al2@example.org", "al", "correct horse"),
        R::CW_PSEUDO_TAKEN
    );
    assert_eq!(
        c.register("not an email", "al3", "correct horse"),
        R::CW_EMAIL_TAKEN
    );
    assert_eq!(
        c.register("al3@example.org", "al3", "short"),
        R::CW_REGISTER_REFUSED
    );
    assert!(last_error().contains("at least 8"), "{}", last_error());
    // Oversize fields never reach the server (it would drop the connection).
    let long = "p".repeat(31);
    assert_eq!(
        c.register("al4@example.org", &long, "correct horse"),
        R::CW_TOO_LONG
    );
    assert_eq!(
        c.register("", "al4", "correct horse"),
        R::CW_INVALID_ARGUMENT
    );
    assert_eq!(c.id(), Err(R::CW_NOT_LOGGED_IN));
    assert_eq!(c.name(), None);

    // Wrong password and unknown email: both simply refused.
    assert_eq!(
        c.login("al@example.org", "wrong horse"),
        R::CW_LOGIN_REFUSED
    );
    assert_eq!(
        c.login("nobody@example.org", "correct horse"),
        R::CW_LOGIN_REFUSED
    );
    assert_eq!(c.login("al@example.org", "correct horse"), R::CW_OK);
    assert_eq!(c.name().as_deref(), Some("al"));
    let id = c.id().unwrap();
    assert!(id > 0);
    assert_eq!(
        c.login("al@example.org", "correct horse"),
        R::CW_ALREADY_LOGGED_IN
    );
    // One session per account.
    let again = C::accounts(port);
    assert_eq!(
        again.login("al@example.org", "correct horse"),
        R::CW_LOGIN_REFUSED
    );
    drop(c);
    // Once the first session is gone, the account logs in again, same id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = again.login("al@example.org", "correct horse");
        if r == R::CW_OK {
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(again.id(), Ok(id));
}

#[test]
fn friend_requests_lists_and_answers() {
    let (_srv, port) = server();
    for p in ["ann", "ben", "cat", "dan"] {
        register(port, p);
    }
    let ann = logged_in(port, "ann");
    let ben = logged_in(port, "ben");
    let cat = logged_in(port, "cat");
    assert_eq!(ann.request_friend("nobody"), R::CW_NO_SUCH_USER);
    assert_eq!(ann.request_friend("ann"), R::CW_NO_SUCH_USER);
    assert_eq!(ann.request_friend("ben"), R::CW_OK);
    assert_eq!(cat.request_friend("ben"), R::CW_OK);
    let ev = ben.wait_for(K::CW_EVENT_FRIEND_REQUEST);
    assert_eq!(ev.peer().as_deref(), Some("ann"));
    assert_eq!(ben.requests(), vec!["ann", "cat"]);
    assert!(ben.friends().is_empty());

    assert_eq!(ben.accept_friend("ann"), R::CW_OK);
    assert_eq!(
        ann.wait_for(K::CW_EVENT_FRIEND_ACCEPTED).peer().as_deref(),
        Some("ben")
    );
    assert_eq!(ben.refuse_friend("cat"), R::CW_OK);
    assert_eq!(
        cat.wait_for(K::CW_EVENT_FRIEND_REFUSED).peer().as_deref(),
        Some("ben")
    );
    // Nothing is pending any more: the library says so instead of a silent no-op.
    assert_eq!(ben.accept_friend("ann"), R::CW_NO_SUCH_REQUEST);
    assert_eq!(ben.refuse_friend("cat"), R::CW_NO_SUCH_REQUEST);
    assert_eq!(ben.accept_friend("dan"), R::CW_NO_SUCH_REQUEST);
    assert!(ben.requests().is_empty());
    assert_eq!(ben.friends(), vec!["ann"]);
    assert_eq!(ann.friends(), vec!["ben"]);
    assert_eq!(ann.request_friend("ben"), R::CW_ALREADY_FRIENDS);
    assert_eq!(ben.request_friend("ann"), R::CW_ALREADY_FRIENDS);

    // A request to someone offline arrives at its next login; the
    // requester learns the answer at its own next login.
    assert_eq!(cat.request_friend("dan"), R::CW_OK);
    drop(cat);
    let dan = logged_in(port, "dan");
    assert_eq!(
        dan.wait_for(K::CW_EVENT_FRIEND_REQUEST).peer().as_deref(),
        Some("cat")
    );
    assert_eq!(dan.accept_friend("cat"), R::CW_OK);
    let cat = logged_in(port, "cat");
    assert_eq!(
        cat.wait_for(K::CW_EVENT_FRIEND_ACCEPTED).peer().as_deref(),
        Some("dan")
    );
    assert_eq!(cat.friends(), vec!["dan"]);

    // A request is notified once; on a later connection the library
    // finds it in the server's list and can still answer it.
    assert_eq!(ann.request_friend("dan"), R::CW_OK);
    dan.wait_for(K::CW_EVENT_FRIEND_REQUEST);
    drop(dan);
    let dan = logged_in(port, "dan");
    dan.quiet();
    assert_eq!(dan.accept_friend("ann"), R::CW_OK);
    assert_eq!(
        ann.wait_for(K::CW_EVENT_FRIEND_ACCEPTED).peer().as_deref(),
        Some("dan")
    );
    assert_eq!(dan.friends(), vec!["ann", "cat"]);
}

#[test]
fn messages_online_offline_and_refused() {
    let (_srv, port) = server();
    let (eve, fay) = friends(port, "eve", "fay");
    register(port, "gus");
    assert_eq!(eve.send("fay", "hello fay"), R::CW_OK, "{}", last_error());
    let ev = fay.wait_for(K::CW_EVENT_PRIVATE_MESSAGE);
    assert_eq!(ev.peer().as_deref(), Some("eve"));
    assert_eq!(ev.text().as_deref(), Some("hello fay"));
    assert_eq!(fay.send("eve", "hi eve"), R::CW_OK);
    assert_eq!(
        eve.wait_for(K::CW_EVENT_PRIVATE_MESSAGE).text().as_deref(),
        Some("hi eve")
    );
    // Strangers, unknown users and yourself: 153.
    assert_eq!(eve.send("gus", "hi gus"), R::CW_MESSAGE_FAILED);
    assert_eq!(eve.send("nobody", "hi"), R::CW_MESSAGE_FAILED);
    assert_eq!(eve.send("eve", "me"), R::CW_MESSAGE_FAILED);
    assert_eq!(eve.send("fay", &"x".repeat(2049)), R::CW_TOO_LONG);
    assert_eq!(eve.send("fay", &"x".repeat(2048)), R::CW_OK);
    fay.wait_for(K::CW_EVENT_PRIVATE_MESSAGE);

    // Offline: stored now, delivered in order at the next login.
    drop(fay);
    for i in 0..3 {
        assert_eq!(eve.send("fay", &format!("offline {i}")), R::CW_OK);
    }
    let fay = logged_in(port, "fay");
    for i in 0..3 {
        let ev = fay.wait_for(K::CW_EVENT_PRIVATE_MESSAGE);
        assert_eq!(ev.peer().as_deref(), Some("eve"));
        assert_eq!(ev.text(), Some(format!("offline {i}")));
    }
    fay.quiet();
    // Exactly once: not again at the login after.
    drop(fay);
    let fay = logged_in(port, "fay");
    fay.quiet();
}

#[test]
fn history_pages_oldest_first() {
    let (_srv, port) = server();
    let (hal, ida) = friends(port, "hal", "ida");
    let (hal_id, ida_id) = (hal.id().unwrap(), ida.id().unwrap());
    assert_ne!(hal_id, ida_id);
    assert!(hal.history("ida", 0).unwrap().is_empty());
    let total = 60;
    for i in 0..total {
        let (from, to) = if i % 3 == 2 {
            (&ida, "hal")
        } else {
            (&hal, "ida")
        };
        assert_eq!(from.send(to, &format!("m{i}")), R::CW_OK);
    }
    let newest = hal.history("ida", 0).unwrap();
    assert_eq!(newest.len(), 50);
    for (k, (id, sender, text)) in newest.iter().enumerate() {
        let i = total - 50 + k;
        assert_eq!(text, &format!("m{i}"));
        assert_eq!(*sender, if i % 3 == 2 { ida_id } else { hal_id });
        if k > 0 {
            assert!(*id > newest[k - 1].0);
        }
    }
    let older = hal.history("ida", newest[0].0).unwrap();
    assert_eq!(older.len(), 10);
    let texts: Vec<_> = older.iter().map(|e| e.2.clone()).collect();
    assert_eq!(texts, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(hal.history("ida", older[0].0).unwrap().is_empty());
    // The other side sees the same conversation.
    assert_eq!(ida.history("hal", 0).unwrap(), newest);
    // A stranger's history is empty, not an error.
    assert!(hal.history("nobody", 0).unwrap().is_empty());
}

#[test]
fn call_signalling_with_voice_addresses() {
    let (_srv, port) = server();
    let (jo, kim) = friends(port, "jo", "kim");
    register(port, "lou");
    let jo_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let kim_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let jo_port = jo_udp.local_addr().unwrap().port();
    let kim_port = kim_udp.local_addr().unwrap().port();

    assert_eq!(kim.answer("jo", None, kim_port), R::CW_NO_SUCH_CALL);
    assert_eq!(kim.refuse_call("jo"), R::CW_NO_SUCH_CALL);
    assert_eq!(jo.hangup("kim"), R::CW_NO_SUCH_CALL);
    assert_eq!(jo.call("jo", None, jo_port), R::CW_INVALID_ARGUMENT);
    assert_eq!(jo.call("kim", None, 0), R::CW_INVALID_ARGUMENT);

    // Ring with an empty address: the server fills in what it sees.
    assert_eq!(jo.call("kim", None, jo_port), R::CW_OK);
    assert_eq!(jo.call("kim", Some(""), jo_port), R::CW_CALL_IN_PROGRESS);
    let ring = kim.wait_for(K::CW_EVENT_CALL_INCOMING);
    assert_eq!(ring.peer().as_deref(), Some("jo"));
    assert_eq!(ring.address().as_deref(), Some("127.0.0.1"));
    assert_eq!(ring.port(), jo_port);
    // Answer with an explicit address.
    assert_eq!(kim.answer("jo", Some("127.0.0.1"), kim_port), R::CW_OK);
    let ok = jo.wait_for(K::CW_EVENT_CALL_ACCEPTED);
    assert_eq!(ok.peer().as_deref(), Some("kim"));
    let (addr, p) = (ok.address().unwrap(), ok.port());
    assert_eq!((addr.as_str(), p), ("127.0.0.1", kim_port));
    assert_eq!(kim.answer("jo", None, kim_port), R::CW_NO_SUCH_CALL);

    // Voice packets go peer to peer, in the documented format.
    let frame = b"opus frame bytes";
    let mut packet = [0u8; CW_VOICE_MAX_PACKET];
    let mut n = 0usize;
    assert_eq!(
        unsafe {
            cw_voice_packet_encode(
                frame.as_ptr(),
                frame.len(),
                packet.as_mut_ptr(),
                packet.len(),
                &mut n,
            )
        },
        R::CW_OK
    );
    assert_eq!(&packet[..4], b"CWVC");
    jo_udp.send_to(&packet[..n], (addr.as_str(), p)).unwrap();
    kim_udp
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (got, from) = kim_udp.recv_from(&mut buf).unwrap();
    assert_eq!(from.port(), ring.port());
    let (mut off, mut len) = (0usize, 0usize);
    assert_eq!(
        unsafe { cw_voice_packet_decode(buf.as_ptr(), got, &mut off, &mut len) },
        R::CW_OK
    );
    assert_eq!(&buf[off..off + len], frame);
    assert_eq!(
        unsafe { cw_voice_packet_decode(b"XXXXab".as_ptr(), 6, &mut off, &mut len) },
        R::CW_PROTOCOL
    );
    assert_eq!(
        unsafe {
            cw_voice_packet_encode(
                frame.as_ptr(),
                CW_VOICE_MAX_FRAME + 1,
                packet.as_mut_ptr(),
                packet.len(),
                &mut n,
            )
        },
        R::CW_TOO_LONG
    );

    // Hang up: the other side hears about it, and the call is gone.
    assert_eq!(jo.hangup("kim"), R::CW_OK);
    assert_eq!(
        kim.wait_for(K::CW_EVENT_CALL_ENDED).peer().as_deref(),
        Some("jo")
    );
    assert_eq!(kim.hangup("jo"), R::CW_NO_SUCH_CALL);

    // Declined.
    assert_eq!(kim.call("jo", None, kim_port), R::CW_OK);
    jo.wait_for(K::CW_EVENT_CALL_INCOMING);
    assert_eq!(jo.refuse_call("kim"), R::CW_OK);
    assert_eq!(
        kim.wait_for(K::CW_EVENT_CALL_FAILED).peer().as_deref(),
        Some("jo")
    );
    // Cancelled while ringing.
    assert_eq!(kim.call("jo", None, kim_port), R::CW_OK);
    jo.wait_for(K::CW_EVENT_CALL_INCOMING);
    assert_eq!(kim.hangup("jo"), R::CW_OK);
    jo.wait_for(K::CW_EVENT_CALL_ENDED);
    assert_eq!(jo.answer("kim", None, jo_port), R::CW_NO_SUCH_CALL);

    // Not a friend, or offline: 142.
    assert_eq!(jo.call("lou", None, jo_port), R::CW_OK);
    assert_eq!(
        jo.wait_for(K::CW_EVENT_CALL_FAILED).peer().as_deref(),
        Some("lou")
    );
    assert_eq!(jo.call("kim", None, jo_port), R::CW_OK);
    kim.wait_for(K::CW_EVENT_CALL_INCOMING);
    assert_eq!(kim.answer("jo", None, kim_port), R::CW_OK);
    jo.wait_for(K::CW_EVENT_CALL_ACCEPTED);
    // A peer that drops mid-call ends it.
    drop(kim);
    assert_eq!(
        jo.wait_for(K::CW_EVENT_CALL_ENDED).peer().as_deref(),
        Some("kim")
    );
    assert_eq!(jo.call("kim", None, jo_port), R::CW_OK);
    jo.wait_for(K::CW_EVENT_CALL_FAILED);
    unsafe {
        assert!(cw_event_address(ptr::null()).is_null());
        assert_eq!(cw_event_port(ptr::null()), 0);
    }
}

#[test]
fn functions_of_the_other_dialect_are_unsupported() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let acc_port = srv.accounts_addr().port();
    register(acc_port, "mia");
    let acc = logged_in(acc_port, "mia");
    let (n, t) = (cs("someone"), cs("text"));
    unsafe {
        for r in [
            cw_client_login(acc.0, n.as_ptr(), MS),
            cw_client_send_message(acc.0, t.as_ptr()),
            cw_client_send_private(acc.0, n.as_ptr(), t.as_ptr()),
            cw_client_request_private(acc.0, n.as_ptr()),
            cw_client_accept_private(acc.0, n.as_ptr()),
            cw_client_refuse_private(acc.0, n.as_ptr()),
        ] {
            assert_eq!(r, R::CW_UNSUPPORTED);
        }
    }
    assert!(last_error().contains("accounts"), "{}", last_error());
    // The accounts client still works after all that.
    assert_eq!(acc.friends(), Vec::<String>::new());

    let chat = C::connect(srv.chatos_addr().port(), cw_dialect::CW_DIALECT_CHATOS);
    assert_eq!(
        unsafe { cw_client_login(chat.0, n.as_ptr(), MS) },
        R::CW_OK,
        "{}",
        last_error()
    );
    let mut id = 0;
    let mut l = ptr::null_mut();
    let mut h = ptr::null_mut();
    unsafe {
        for r in [
            chat.register("x@example.org", "x", "password1"),
            chat.login("x@example.org", "password1"),
            cw_client_account_id(chat.0, &mut id),
            chat.request_friend("mia"),
            chat.accept_friend("mia"),
            chat.refuse_friend("mia"),
            cw_client_list_friends(chat.0, MS, &mut l),
            cw_client_list_friend_requests(chat.0, MS, &mut l),
            chat.send("mia", "hi"),
            cw_client_history(chat.0, n.as_ptr(), 0, MS, &mut h),
            chat.call("mia", None, 5000),
            chat.answer("mia", None, 5000),
            chat.refuse_call("mia"),
            chat.hangup("mia"),
        ] {
            assert_eq!(r, R::CW_UNSUPPORTED);
        }
    }
    assert!(l.is_null() && h.is_null());
    assert!(last_error().contains("chatos"), "{}", last_error());
}

#[test]
fn calls_before_login_and_bad_arguments() {
    let (_srv, port) = server();
    let c = C::accounts(port);
    assert_eq!(c.request_friend("x"), R::CW_NOT_LOGGED_IN);
    assert_eq!(c.send("x", "hi"), R::CW_NOT_LOGGED_IN);
    assert_eq!(c.history("x", 0), Err(R::CW_NOT_LOGGED_IN));
    assert_eq!(c.list(false), Err(R::CW_NOT_LOGGED_IN));
    assert_eq!(c.call("x", None, 1), R::CW_NOT_LOGGED_IN);
    assert_eq!(c.hangup("x"), R::CW_NOT_LOGGED_IN);
    let bad = [0xffu8, 0];
    unsafe {
        assert_eq!(
            cw_client_login_password(c.0, bad.as_ptr().cast(), bad.as_ptr().cast(), MS),
            R::CW_INVALID_UTF8
        );
        assert_eq!(
            cw_client_register(ptr::null(), ptr::null(), ptr::null(), ptr::null(), MS),
            R::CW_NULL_ARGUMENT
        );
        let mut l = ptr::null_mut();
        assert_eq!(
            cw_client_list_friends(c.0, MS, ptr::null_mut()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_client_list_friends(ptr::null(), MS, &mut l),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(cw_strings_count(ptr::null()), 0);
        assert!(cw_strings_get(ptr::null(), 0).is_null());
        assert_eq!(cw_history_count(ptr::null()), 0);
        assert_eq!(cw_history_sender_id(ptr::null(), 0), 0);
        cw_strings_free(ptr::null_mut());
        cw_history_free(ptr::null_mut());
        let mut n = 0usize;
        let mut small = [0u8; 4];
        assert_eq!(
            cw_voice_packet_encode(b"ab".as_ptr(), 2, small.as_mut_ptr(), 4, &mut n),
            R::CW_INVALID_ARGUMENT
        );
        assert_eq!(
            cw_voice_packet_encode(ptr::null(), 0, small.as_mut_ptr(), 4, &mut n),
            R::CW_OK
        );
        assert_eq!(n, 4);
    }
    // Too long for the wire: refused locally, the connection lives on.
    assert_eq!(
        c.login(&format!("{}@example.org", "e".repeat(250)), "password1"),
        R::CW_TOO_LONG
    );
    assert_eq!(c.login("a@example.org", &"p".repeat(129)), R::CW_TOO_LONG);
    register(port, "ned");
    assert_eq!(c.login(&email("ned"), &password("ned")), R::CW_OK);
    assert_eq!(c.call("ned", Some(&"1".repeat(65)), 1), R::CW_TOO_LONG);
    assert_eq!(c.friends(), Vec::<String>::new());
}

#[test]
fn several_threads_share_one_client() {
    let (_srv, port) = server();
    let (oli, pam) = friends(port, "oli", "pam");
    register(port, "quin");
    let oli = Arc::new(oli);
    const THREADS: usize = 4;
    const EACH: usize = 20;
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let c = oli.clone();
        handles.push(thread::spawn(move || {
            for i in 0..EACH {
                assert_eq!(c.send("pam", &format!("{t}:{i}")), R::CW_OK, "{t}:{i}");
                // Interleaved with answers of other kinds and other verdicts.
                match i % 4 {
                    0 => assert_eq!(c.send("quin", "stranger"), R::CW_MESSAGE_FAILED),
                    1 => assert_eq!(c.request_friend(&format!("ghost{t}")), R::CW_NO_SUCH_USER),
                    2 => assert_eq!(c.friends(), vec!["pam"]),
                    _ => assert_eq!(c.request_friend("pam"), R::CW_ALREADY_FRIENDS),
                }
            }
        }));
    }
    // Another thread reads history while the senders run.
    let c = oli.clone();
    handles.push(thread::spawn(move || {
        for _ in 0..10 {
            let page = c.history("pam", 0).unwrap();
            assert!(page.len() <= 50);
            assert!(page.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }));
    for h in handles {
        h.join().unwrap();
    }
    // Pam got every message, each thread's in its order.
    let mut next = [0usize; THREADS];
    for _ in 0..THREADS * EACH {
        let ev = pam.wait_for(K::CW_EVENT_PRIVATE_MESSAGE);
        let text = ev.text().unwrap();
        let (t, i) = text.split_once(':').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "{text}");
        next[t] += 1;
    }
    assert_eq!(next, [EACH; THREADS]);
    // And several threads waiting on events at once each get their own.
    let pam = Arc::new(pam);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let p = pam.clone();
            thread::spawn(move || p.wait_for(K::CW_EVENT_PRIVATE_MESSAGE).text().unwrap())
        })
        .collect();
    for i in 0..3 {
        assert_eq!(oli.send("pam", &format!("w{i}")), R::CW_OK);
    }
    let mut got: Vec<String> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, vec!["w0", "w1", "w2"]);
}

/// A scripted accounts server on 127.0.0.1: answers HELLO and LOGIN, then
/// hands every later frame to `script` with the socket.
fn fake_server(
    script: impl FnOnce(&mut TcpStream, &mut Decoder) + Send + 'static,
) -> (u16, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        assert_eq!(recv(&mut s, &mut dec), Frame::Hello);
        s.write_all(&Frame::HelloAck.to_bytes()).unwrap();
        assert!(matches!(recv(&mut s, &mut dec), Frame::Login { .. }));
        s.write_all(
            &Frame::LoginOk {
                pseudo: "me".into(),
                id: 7,
            }
            .to_bytes(),
        )
        .unwrap();
        script(&mut s, &mut dec);
    });
    (port, t)
}

fn recv(s: &mut TcpStream, dec: &mut Decoder) -> Frame {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = dec.next_frame().unwrap() {
            return f;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "client hung up");
        dec.push(&buf[..n]);
    }
}

#[test]
fn a_late_answer_goes_to_the_request_that_timed_out() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (port, t) = fake_server(move |s, dec| {
        // Two messages; answer only after the client gave up on the first.
        assert!(matches!(recv(s, dec), Frame::SendMessage { .. }));
        rx.recv().unwrap();
        assert!(matches!(recv(s, dec), Frame::SendMessage { .. }));
        let mut both = Frame::MessageStored.to_bytes();
        Frame::MessageFailed.encode(&mut both);
        s.write_all(&both).unwrap();
        // Hold the connection until the client leaves.
        let _ = s.read(&mut [0u8; 16]);
    });
    let c = C::accounts(port);
    assert_eq!(c.login("me@example.org", "password1"), R::CW_OK);
    assert_eq!(c.id(), Ok(7));
    let (to, m) = (cs("you"), cs("first"));
    assert_eq!(
        unsafe { cw_client_send_to_friend(c.0, to.as_ptr(), m.as_ptr(), 100) },
        R::CW_TIMEOUT
    );
    tx.send(()).unwrap();
    // The 152 belongs to the first message; this one gets the 153.
    assert_eq!(c.send("you", "second"), R::CW_MESSAGE_FAILED);
    drop(c);
    t.join().unwrap();
}

#[test]
fn close_wakes_a_thread_waiting_for_an_answer() {
    let (port, t) = fake_server(|s, dec| {
        assert!(matches!(recv(s, dec), Frame::ListFriends));
        // Never answer; wait for the client to go.
        let _ = s.read(&mut [0u8; 16]);
    });
    let c = Arc::new(C::accounts(port));
    assert_eq!(c.login("me@example.org", "password1"), R::CW_OK);
    let c2 = c.clone();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        tid_tx.send(proc_state::my_tid()).unwrap();
        let mut l = ptr::null_mut();
        let r = unsafe { cw_client_list_friends(c2.0, -1, &mut l) };
        (r, l.is_null())
    });
    let tid = tid_rx.recv().unwrap();
    proc_state::wait_steady("the waiter blocks", 3, || proc_state::blocked(tid));
    assert_eq!(unsafe { cw_client_close(c.0) }, R::CW_OK);
    assert_eq!(waiter.join().unwrap(), (R::CW_CLOSED, true));
    assert_eq!(c.send("you", "late"), R::CW_CLOSED);
    drop(c);
    t.join().unwrap();
}

#[test]
fn a_wrong_answer_to_hello_fails_the_connect() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        assert_eq!(recv(&mut s, &mut dec), Frame::Hello);
        s.write_all(&Frame::LoginFailed.to_bytes()).unwrap();
        let _ = s.read(&mut [0u8; 16]);
    });
    let host = cs("127.0.0.1");
    let mut c = ptr::null_mut();
    let r = unsafe {
        cw_client_connect(
            host.as_ptr(),
            port,
            cw_dialect::CW_DIALECT_ACCOUNTS as i32,
            &mut c,
        )
    };
    assert_eq!(r, R::CW_PROTOCOL, "{}", last_error());
    assert!(c.is_null());
    t.join().unwrap();
}
