//! The babel dialect through the C ABI, called exactly as C would, against
//! an in-process chinwagd on 127.0.0.1 and scripted fake servers and peers:
//! login (with the server's reason for a refusal), contact events and
//! lists across three clients, a whole peer-to-peer call with voice both
//! ways, refusal, a call to an offline user, cross-dialect CW_UNSUPPORTED,
//! and malformed bytes from a server or a peer.

mod ffi_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use chinwag::ffi::codes::{cw_dialect, cw_event_type as K, cw_result as R};
use chinwag::ffi::*;
use chinwag_proto::babel::{Decoder, Frame};
use ffi_common::{cs, last_error, proc_state, text, C};

const MS: i32 = 10_000;

impl C {
    fn connect(port: u16, dialect: cw_dialect) -> C {
        C::connect_to("127.0.0.1", port, dialect)
    }

    fn babel(port: u16) -> C {
        C::connect(port, cw_dialect::CW_DIALECT_BABEL)
    }

    fn login(&self, name: &str) -> R {
        let n = cs(name);
        unsafe { cw_client_login(self.0, n.as_ptr(), MS) }
    }

    fn contacts(&self) -> Result<Vec<String>, R> {
        let mut l = ptr::null_mut();
        let r = unsafe { cw_client_contacts(self.0, &mut l) };
        if r != R::CW_OK {
            assert!(l.is_null(), "out-parameter written on failure");
            return Err(r);
        }
        let n = unsafe { cw_strings_count(l) };
        let v = (0..n)
            .map(|i| text(unsafe { cw_strings_get(l, i) }).unwrap())
            .collect();
        unsafe { cw_strings_free(l) };
        Ok(v)
    }

    fn place_call(&self, callee: &str) -> R {
        let n = cs(callee);
        unsafe { cw_client_place_call(self.0, n.as_ptr(), ptr::null(), 0) }
    }

    fn accept_call(&self, caller: &str) -> R {
        let n = cs(caller);
        unsafe { cw_client_accept_call(self.0, n.as_ptr()) }
    }

    fn refuse_call(&self, caller: &str) -> R {
        let n = cs(caller);
        unsafe { cw_client_refuse_call(self.0, n.as_ptr()) }
    }

    fn hangup_call(&self, peer: &str) -> R {
        let n = cs(peer);
        unsafe { cw_client_hangup_call(self.0, n.as_ptr()) }
    }
}

fn babel_user(port: u16, name: &str) -> C {
    let c = C::babel(port);
    assert_eq!(c.login(name), R::CW_OK, "{}", last_error());
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
    fn result(&self) -> R {
        unsafe { cw_event_result(self.0) }
    }
    fn take_call(&self) -> Call {
        let mut call = ptr::null_mut();
        assert_eq!(
            unsafe { cw_event_take_call(self.0, &mut call) },
            R::CW_OK,
            "{}",
            last_error()
        );
        Call(call)
    }
}

/// An owned call handle that frees itself.
struct Call(*mut cw_call);
unsafe impl Send for Call {}
impl Drop for Call {
    fn drop(&mut self) {
        unsafe { cw_call_free(self.0) }
    }
}
impl Call {
    fn send(&self, data: &[u8]) -> R {
        unsafe { cw_call_send_voice(self.0, data.as_ptr(), data.len()) }
    }
    fn recv(&self, ms: i32) -> Result<Vec<u8>, R> {
        let mut buf = vec![0u8; CW_BABEL_MAX_VOICE];
        let mut got = usize::MAX;
        match unsafe { cw_call_recv_voice(self.0, buf.as_mut_ptr(), buf.len(), ms, &mut got) } {
            R::CW_OK => {
                buf.truncate(got);
                Ok(buf)
            }
            r => {
                assert_eq!(got, usize::MAX, "out-parameter written on failure");
                Err(r)
            }
        }
    }
    fn peer(&self) -> String {
        text(unsafe { cw_call_peer(self.0) }).unwrap()
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

/// The next event of `kind`, skipping others; fails after 10 s.
fn wait_for(c: &C, kind: K) -> Ev {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut skipped = Vec::new();
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        match next(c, left.max(1)) {
            Ok(ev) if ev.kind() == kind => return ev,
            Ok(ev) => skipped.push((ev.kind(), ev.peer(), ev.text())),
            Err(r) => panic!("waiting for {kind:?}: {r:?}; skipped {skipped:?}"),
        }
    }
}

/// Every CONTACT_ADDED / CONTACT_REMOVED name until `n` have come.
fn contact_events(c: &C, kind: K, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|_| wait_for(c, kind).peer().unwrap()).collect();
    v.sort();
    v
}

/// Nothing more of `kind` within a short while.
fn none_of(c: &C, kind: K, ms: i32) {
    while let Ok(ev) = next(c, ms) {
        assert_ne!(
            ev.kind(),
            kind,
            "unexpected {:?} {:?}",
            ev.peer(),
            ev.text()
        );
    }
}

fn server() -> (chinwagd::Server, u16) {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.babel_addr().port();
    (srv, port)
}

#[test]
fn login_and_a_duplicate_name_refused_with_the_reason() {
    let (_srv, port) = server();
    let a = C::babel(port);
    assert_eq!(a.contacts().err(), Some(R::CW_NOT_LOGGED_IN));
    assert_eq!(a.place_call("x"), R::CW_NOT_LOGGED_IN);
    assert_eq!(a.login("alice"), R::CW_OK, "{}", last_error());
    assert_eq!(a.contacts().unwrap(), Vec::<String>::new());
    assert_eq!(a.login("again"), R::CW_ALREADY_LOGGED_IN);
    let mut name = ptr::null_mut();
    assert_eq!(unsafe { cw_client_login_name(a.0, &mut name) }, R::CW_OK);
    assert_eq!(text(name).as_deref(), Some("alice"));
    unsafe { cw_string_free(name) };

    let b = C::babel(port);
    assert_eq!(b.login("alice"), R::CW_LOGIN_REFUSED);
    assert!(
        last_error().contains("username already used"),
        "{}",
        last_error()
    );
    assert_eq!(b.login("has space"), R::CW_LOGIN_REFUSED);
    assert!(
        last_error().contains("invalid username"),
        "{}",
        last_error()
    );
    // Refused locally: the server would drop the connection.
    assert_eq!(b.login(&"x".repeat(31)), R::CW_TOO_LONG);
    assert_eq!(b.login(""), R::CW_INVALID_ARGUMENT);
    // The client may try again after a refusal.
    assert_eq!(b.login("bob"), R::CW_OK, "{}", last_error());
    assert_eq!(b.contacts().unwrap(), vec!["alice"]);
}

#[test]
fn contacts_come_and_go_across_three_clients() {
    let (_srv, port) = server();
    let a = babel_user(port, "ann");
    let b = babel_user(port, "ben");
    assert_eq!(
        contact_events(&a, K::CW_EVENT_CONTACT_ADDED, 1),
        vec!["ben"]
    );
    // The initial list also arrives as events.
    assert_eq!(
        contact_events(&b, K::CW_EVENT_CONTACT_ADDED, 1),
        vec!["ann"]
    );
    assert_eq!(b.contacts().unwrap(), vec!["ann"]);

    let c = babel_user(port, "cat");
    assert_eq!(c.contacts().unwrap(), vec!["ann", "ben"]);
    assert_eq!(
        contact_events(&c, K::CW_EVENT_CONTACT_ADDED, 2),
        vec!["ann", "ben"]
    );
    assert_eq!(
        contact_events(&a, K::CW_EVENT_CONTACT_ADDED, 1),
        vec!["cat"]
    );
    assert_eq!(
        contact_events(&b, K::CW_EVENT_CONTACT_ADDED, 1),
        vec!["cat"]
    );
    assert_eq!(a.contacts().unwrap(), vec!["ben", "cat"]);

    // Users of another dialect share the names but are not contacts.
    let chatos_port = _srv.chatos_addr().port();
    let other = C::connect(chatos_port, cw_dialect::CW_DIALECT_CHATOS);
    assert_eq!(other.login("dan"), R::CW_OK);
    assert_eq!(C::babel(port).login("dan"), R::CW_LOGIN_REFUSED);

    drop(c);
    assert_eq!(
        contact_events(&a, K::CW_EVENT_CONTACT_REMOVED, 1),
        vec!["cat"]
    );
    assert_eq!(
        contact_events(&b, K::CW_EVENT_CONTACT_REMOVED, 1),
        vec!["cat"]
    );
    assert_eq!(a.contacts().unwrap(), vec!["ben"]);
    assert_eq!(b.contacts().unwrap(), vec!["ann"]);
    none_of(&a, K::CW_EVENT_CONTACT_ADDED, 200);
}

#[test]
fn a_whole_call_between_two_library_clients() {
    let (_srv, port) = server();
    let a = babel_user(port, "caller");
    let b = babel_user(port, "callee");

    assert_eq!(a.place_call("callee"), R::CW_OK, "{}", last_error());
    assert_eq!(a.place_call("callee"), R::CW_CALL_IN_PROGRESS);
    assert_eq!(a.place_call("caller"), R::CW_INVALID_ARGUMENT);
    let ring = wait_for(&b, K::CW_EVENT_CALL_INCOMING);
    assert_eq!(ring.peer().as_deref(), Some("caller"));
    // The host was left empty: the server filled in what it sees.
    assert_eq!(
        text(unsafe { cw_event_address(ring.0) }).as_deref(),
        Some("127.0.0.1")
    );
    assert_ne!(unsafe { cw_event_port(ring.0) }, 0);
    drop(ring);
    assert_eq!(b.accept_call("nobody"), R::CW_NO_SUCH_CALL);
    assert_eq!(b.accept_call("caller"), R::CW_OK, "{}", last_error());
    assert_eq!(b.accept_call("caller"), R::CW_NO_SUCH_CALL);

    let ea = wait_for(&a, K::CW_EVENT_CALL_ESTABLISHED);
    let eb = wait_for(&b, K::CW_EVENT_CALL_ESTABLISHED);
    assert_eq!(ea.peer().as_deref(), Some("callee"));
    assert_eq!(eb.peer().as_deref(), Some("caller"));
    let ca = ea.take_call();
    let mut again = ptr::null_mut();
    assert_eq!(
        unsafe { cw_event_take_call(ea.0, &mut again) },
        R::CW_INVALID_ARGUMENT
    );
    let cb = eb.take_call();
    drop((ea, eb));
    assert_eq!(ca.peer(), "callee");
    assert_eq!(cb.peer(), "caller");

    // Voice both ways, in order, payloads as they are.
    let big = vec![0xa5u8; CW_BABEL_MAX_VOICE];
    for i in 0..50u8 {
        assert_eq!(ca.send(&[i; 160]), R::CW_OK);
    }
    assert_eq!(ca.send(&[]), R::CW_OK);
    assert_eq!(ca.send(&big), R::CW_OK);
    assert_eq!(ca.send(&vec![0; CW_BABEL_MAX_VOICE + 1]), R::CW_TOO_LONG);
    for i in 0..50u8 {
        assert_eq!(cb.recv(MS).unwrap(), vec![i; 160]);
    }
    assert_eq!(cb.recv(MS).unwrap(), Vec::<u8>::new());
    // A buffer too small leaves the payload queued.
    let mut small = [0u8; 16];
    let mut got = 0usize;
    assert_eq!(
        unsafe { cw_call_recv_voice(cb.0, small.as_mut_ptr(), small.len(), MS, &mut got) },
        R::CW_TOO_LONG
    );
    assert_eq!(cb.recv(MS).unwrap(), big);
    assert_eq!(cb.recv(50).err(), Some(R::CW_TIMEOUT));
    assert_eq!(cb.send(b"opus packet"), R::CW_OK);
    assert_eq!(ca.recv(MS).unwrap(), b"opus packet");

    // Only one call per peer at a time.
    assert_eq!(b.place_call("caller"), R::CW_CALL_IN_PROGRESS);

    // Hanging up closes the connection: the other side gets CALL_ENDED.
    assert_eq!(unsafe { cw_call_hangup(ca.0) }, R::CW_OK);
    let ended = wait_for(&b, K::CW_EVENT_CALL_ENDED);
    assert_eq!(ended.peer().as_deref(), Some("caller"));
    assert_eq!(ended.result(), R::CW_CLOSED);
    assert_eq!(cb.recv(MS).err(), Some(R::CW_CLOSED));
    assert_eq!(cb.send(b"late"), R::CW_CLOSED);
    assert_eq!(ca.send(b"late"), R::CW_CLOSED);
    none_of(&a, K::CW_EVENT_CALL_ENDED, 200);

    // Both sides forgot the call: a new one can be placed, and ended by name.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.hangup_call("caller") != R::CW_NO_SUCH_CALL {
        assert!(Instant::now() < deadline, "the ended call is still known");
        thread::sleep(Duration::from_millis(10));
    }
    drop((ca, cb));
    assert_eq!(b.place_call("caller"), R::CW_OK, "{}", last_error());
    wait_for(&a, K::CW_EVENT_CALL_INCOMING);
    assert_eq!(a.accept_call("callee"), R::CW_OK);
    let eb = wait_for(&b, K::CW_EVENT_CALL_ESTABLISHED);
    let ea = wait_for(&a, K::CW_EVENT_CALL_ESTABLISHED);
    let cb = eb.take_call();
    assert_eq!(b.hangup_call("caller"), R::CW_OK);
    assert_eq!(wait_for(&a, K::CW_EVENT_CALL_ENDED).result(), R::CW_CLOSED);
    assert_eq!(cb.recv(MS).err(), Some(R::CW_CLOSED));
    // An established call never taken is hung up when its event is freed.
    drop(ea);
}

#[test]
fn a_refused_call_and_a_call_to_an_offline_user_fail() {
    let (_srv, port) = server();
    let a = babel_user(port, "rita");
    let b = babel_user(port, "sam");

    assert_eq!(a.place_call("sam"), R::CW_OK);
    wait_for(&b, K::CW_EVENT_CALL_INCOMING);
    assert_eq!(b.refuse_call("rita"), R::CW_OK, "{}", last_error());
    assert_eq!(b.refuse_call("rita"), R::CW_NO_SUCH_CALL);
    let failed = wait_for(&a, K::CW_EVENT_CALL_FAILED);
    assert_eq!(failed.peer().as_deref(), Some("sam"));
    assert!(
        failed.text().unwrap().contains("refused"),
        "{:?}",
        failed.text()
    );
    assert_eq!(failed.result(), R::CW_OK);
    drop(failed);

    // Hanging up a ringing incoming call refuses it, too.
    assert_eq!(a.place_call("sam"), R::CW_OK);
    wait_for(&b, K::CW_EVENT_CALL_INCOMING);
    assert_eq!(b.hangup_call("rita"), R::CW_OK);
    wait_for(&a, K::CW_EVENT_CALL_FAILED);

    assert_eq!(a.place_call("ghost"), R::CW_OK);
    let failed = wait_for(&a, K::CW_EVENT_CALL_FAILED);
    assert_eq!(failed.peer().as_deref(), Some("ghost"));
    assert_eq!(failed.text().as_deref(), Some("ghost is not connected"));
    drop(failed);

    // Other dialects' users cannot take a babel call.
    let chatos = C::connect(_srv.chatos_addr().port(), cw_dialect::CW_DIALECT_CHATOS);
    assert_eq!(chatos.login("tom"), R::CW_OK);
    assert_eq!(a.place_call("tom"), R::CW_OK);
    let failed = wait_for(&a, K::CW_EVENT_CALL_FAILED);
    assert_eq!(failed.peer().as_deref(), Some("tom"));

    // A ringing call stopped by its caller lets the callee's accept fail.
    assert_eq!(a.place_call("sam"), R::CW_OK);
    let ring = wait_for(&b, K::CW_EVENT_CALL_INCOMING);
    let call_port = unsafe { cw_event_port(ring.0) };
    drop(ring);
    assert_eq!(a.hangup_call("sam"), R::CW_OK);
    assert_eq!(a.hangup_call("sam"), R::CW_NO_SUCH_CALL);
    proc_state::wait_steady("the caller's call listener closes", 1, || {
        !proc_state::listening(call_port)
    });
    assert_eq!(b.accept_call("rita"), R::CW_OK);
    let failed = wait_for(&b, K::CW_EVENT_CALL_FAILED);
    assert_eq!(failed.peer().as_deref(), Some("rita"));
    assert_eq!(failed.result(), R::CW_CONNECT_FAILED, "{:?}", failed.text());
}

#[test]
fn other_dialects_functions_are_unsupported() {
    let (srv, port) = server();
    let b = babel_user(port, "bee");
    let (x, y) = (cs("x"), cs("y"));
    unsafe {
        assert_eq!(cw_client_send_message(b.0, x.as_ptr()), R::CW_UNSUPPORTED);
        assert_eq!(
            cw_client_send_private(b.0, x.as_ptr(), y.as_ptr()),
            R::CW_UNSUPPORTED
        );
        assert_eq!(
            cw_client_request_private(b.0, x.as_ptr()),
            R::CW_UNSUPPORTED
        );
        assert_eq!(
            cw_client_register(b.0, x.as_ptr(), y.as_ptr(), y.as_ptr(), MS),
            R::CW_UNSUPPORTED
        );
        assert_eq!(
            cw_client_login_password(b.0, x.as_ptr(), y.as_ptr(), MS),
            R::CW_UNSUPPORTED
        );
        let mut l = ptr::null_mut();
        assert_eq!(cw_client_list_friends(b.0, MS, &mut l), R::CW_UNSUPPORTED);
        assert_eq!(
            cw_client_send_to_friend(b.0, x.as_ptr(), y.as_ptr(), MS),
            R::CW_UNSUPPORTED
        );
        assert_eq!(
            cw_client_answer_call(b.0, x.as_ptr(), ptr::null(), 9),
            R::CW_UNSUPPORTED
        );
        let mut id = 0;
        assert_eq!(cw_client_account_id(b.0, &mut id), R::CW_UNSUPPORTED);
    }
    assert!(last_error().contains("babel"), "{}", last_error());

    let chatos = C::connect(srv.chatos_addr().port(), cw_dialect::CW_DIALECT_CHATOS);
    assert_eq!(chatos.login("chat"), R::CW_OK);
    let accounts = C::connect(srv.accounts_addr().port(), cw_dialect::CW_DIALECT_ACCOUNTS);
    for c in [&chatos, &accounts] {
        assert_eq!(c.contacts().err(), Some(R::CW_UNSUPPORTED));
        assert_eq!(c.accept_call("bee"), R::CW_UNSUPPORTED);
    }
    assert_eq!(chatos.place_call("bee"), R::CW_UNSUPPORTED);
    assert_eq!(
        accounts.login("acc"),
        R::CW_UNSUPPORTED,
        "password-less login"
    );
    // NULL handles.
    unsafe {
        let mut l = ptr::null_mut();
        assert_eq!(cw_client_contacts(ptr::null(), &mut l), R::CW_NULL_ARGUMENT);
        assert_eq!(
            cw_client_contacts(b.0, ptr::null_mut()),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(
            cw_call_send_voice(ptr::null(), ptr::null(), 0),
            R::CW_NULL_ARGUMENT
        );
        let mut got = 0;
        assert_eq!(
            cw_call_recv_voice(ptr::null(), ptr::null_mut(), 0, 0, &mut got),
            R::CW_NULL_ARGUMENT
        );
        assert_eq!(cw_call_hangup(ptr::null()), R::CW_NULL_ARGUMENT);
        assert!(cw_call_peer(ptr::null()).is_null());
        cw_call_free(ptr::null_mut());
        let mut call = ptr::null_mut();
        assert_eq!(
            cw_event_take_call(ptr::null_mut(), &mut call),
            R::CW_NULL_ARGUMENT
        );
    }
}

// ---- scripted servers and peers ----

fn read_frame(s: &mut TcpStream, d: &mut Decoder) -> Option<Frame> {
    let mut buf = [0u8; 1024];
    loop {
        if let Ok(Some(f)) = d.next_frame() {
            return Some(f);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => d.push(&buf[..n]),
        }
    }
}

/// A fake babel server on 127.0.0.1 for one client: HelloConnect, then
/// LoginSuccess and an empty contact list for its Login, then `script`.
fn fake_server(
    script: impl FnOnce(&mut TcpStream, &mut Decoder) + Send + 'static,
) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut d = Decoder::new();
        s.write_all(&Frame::HelloConnect.to_bytes()).unwrap();
        match read_frame(&mut s, &mut d) {
            Some(Frame::Login { .. }) => {}
            _ => return,
        }
        let mut out = Frame::LoginSuccess.to_bytes();
        Frame::AddContact { contacts: vec![] }.encode(&mut out);
        s.write_all(&out).unwrap();
        script(&mut s, &mut d);
        // Keep the socket open until the client hangs up.
        let mut buf = [0u8; 256];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    (port, t)
}

fn raw(len: u64, op: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(&op.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn malformed_frames_from_the_server_end_the_client_with_an_error() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw(2, 99, &[]), "unknown opcode"),
        (raw(u64::MAX, 5, &[]), "exceeds limit"),
        (raw(1, 0, &[]), "truncated"),
        // A contact list claiming more names than the frame holds.
        (raw(10, 5, &20_000u64.to_le_bytes()), "truncated"),
        (
            raw(2 + 8 + 2, 8, &[2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0x28]),
            "UTF-8",
        ),
        (raw(2 + 1, 3, &[0]), "trailing"),
        (Frame::Login { name: "x".into() }.to_bytes(), "never sends"),
        (Frame::HelloConnect.to_bytes(), "never sends"),
        (Frame::VoiceData { data: vec![1] }.to_bytes(), "never sends"),
        (Frame::LoginSuccess.to_bytes(), "without a Login"),
    ];
    for (bytes, why) in cases {
        let b2 = bytes.clone();
        let (port, t) = fake_server(move |s, _| s.write_all(&b2).unwrap());
        let a = babel_user(port, "victim");
        let ev = wait_for(&a, K::CW_EVENT_ERROR);
        assert_eq!(ev.result(), R::CW_PROTOCOL);
        let text = ev.text().unwrap();
        assert!(text.contains(why), "{bytes:02x?}: {text}");
        drop(ev);
        assert_eq!(next(&a, 1000).err(), Some(R::CW_CLOSED));
        assert_eq!(a.place_call("x"), R::CW_CLOSED);
        drop(a);
        t.join().unwrap();
    }
}

#[test]
fn a_wrong_greeting_or_a_frame_before_login_is_refused() {
    // Not HelloConnect first: connect fails.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&Frame::LoginSuccess.to_bytes()).unwrap();
        let _ = s.read(&mut [0u8; 16]);
    });
    let mut c = ptr::null_mut();
    let host = cs("127.0.0.1");
    let r = unsafe {
        cw_client_connect(
            host.as_ptr(),
            port,
            cw_dialect::CW_DIALECT_BABEL as i32,
            &mut c,
        )
    };
    assert_eq!(r, R::CW_PROTOCOL);
    assert!(c.is_null());
    assert!(last_error().contains("HelloConnect"), "{}", last_error());
    t.join().unwrap();

    // A contact list before any login: real Babel servers send contact
    // updates to connections that have not logged in yet (issue 7), so it
    // is ignored, and the client lives on.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = Frame::HelloConnect.to_bytes();
        Frame::AddContact {
            contacts: vec!["z".into()],
        }
        .encode(&mut out);
        s.write_all(&out).unwrap();
        let _ = s.read(&mut [0u8; 16]);
    });
    let a = C::babel(port);
    assert_eq!(next(&a, 300).err(), Some(R::CW_TIMEOUT));
    drop(a);
    t.join().unwrap();
}

#[test]
fn random_bytes_from_a_server_never_crash() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xBABE1);
    for _ in 0..30 {
        let len = rng.gen_range(1..120);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Plausible lengths and opcodes, so that decoding goes deeper.
        bytes.splice(0..0, raw(len as u64 + 2, rng.gen_range(1..12), &[]));
        let (port, t) = fake_server(move |s, _| {
            let _ = s.write_all(&bytes);
        });
        let a = babel_user(port, "fuzz");
        while let Ok(ev) = next(&a, 200) {
            let _ = (ev.kind(), ev.peer(), ev.text(), ev.result());
            let mut call = ptr::null_mut();
            if unsafe { cw_event_take_call(ev.0, &mut call) } == R::CW_OK {
                unsafe { cw_call_free(call) };
            }
        }
        unsafe { cw_client_close(a.0) };
        drop(a);
        t.join().unwrap();
    }
}

/// A fake caller: the fake server rings the client from a fake peer that
/// behaves as `peer` says once connected.
fn ring_from_fake_peer(
    peer: impl FnOnce(TcpStream) + Send + 'static,
) -> (C, Vec<thread::JoinHandle<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_port = listener.local_addr().unwrap().port();
    let p = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        peer(s);
    });
    let (port, t) = fake_server(move |s, _| {
        let f = Frame::CallRequest {
            contact: "mallory".into(),
            host: "127.0.0.1".into(),
            port: peer_port,
        };
        s.write_all(&f.to_bytes()).unwrap();
    });
    let c = babel_user(port, "victim");
    let ring = wait_for(&c, K::CW_EVENT_CALL_INCOMING);
    assert_eq!(unsafe { cw_event_port(ring.0) }, peer_port);
    assert_eq!(c.accept_call("mallory"), R::CW_OK);
    (c, vec![p, t])
}

#[test]
fn a_peer_that_breaks_the_protocol_ends_the_call() {
    // Garbage instead of ConnectionEstablished: the call fails.
    let (c, threads) = ring_from_fake_peer(|mut s| {
        s.write_all(&raw(2, 42, &[])).unwrap();
        let _ = s.read(&mut [0u8; 16]);
    });
    let failed = wait_for(&c, K::CW_EVENT_CALL_FAILED);
    assert_eq!(failed.peer().as_deref(), Some("mallory"));
    assert_eq!(failed.result(), R::CW_PROTOCOL);
    drop((failed, c));
    threads.into_iter().for_each(|t| t.join().unwrap());

    // Established, some voice, then a lying VoiceData length: the call ends.
    let (c, threads) = ring_from_fake_peer(|mut s| {
        let mut out = Frame::ConnectionEstablished.to_bytes();
        Frame::VoiceData { data: vec![7; 3] }.encode(&mut out);
        out.extend(raw(2 + 8, 7, &u64::MAX.to_le_bytes()));
        s.write_all(&out).unwrap();
        // The library closes its end.
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let ev = wait_for(&c, K::CW_EVENT_CALL_ESTABLISHED);
    let call = ev.take_call();
    let ended = wait_for(&c, K::CW_EVENT_CALL_ENDED);
    assert_eq!(ended.result(), R::CW_PROTOCOL);
    assert!(
        ended.text().unwrap().contains("mallory"),
        "{:?}",
        ended.text()
    );
    // What arrived before the bad frame is still delivered.
    assert_eq!(call.recv(MS).unwrap(), vec![7; 3]);
    assert_eq!(call.recv(MS).err(), Some(R::CW_CLOSED));
    drop((call, ev, c));
    threads.into_iter().for_each(|t| t.join().unwrap());
}

#[test]
fn the_callers_side_greets_the_peer_and_survives_a_bad_one() {
    // The fake server hands the client's CallRequest to the test, which
    // connects as the callee would.
    let (tx, rx) = std::sync::mpsc::channel();
    let (port, t) = fake_server(move |s, d| {
        if let Some(Frame::CallRequest {
            contact,
            host,
            port,
        }) = read_frame(s, d)
        {
            tx.send((contact, host, port)).unwrap();
        }
    });
    let c = babel_user(port, "dialler");
    let host = cs("127.0.0.1");
    let who = cs("fakepeer");
    assert_eq!(
        unsafe { cw_client_place_call(c.0, who.as_ptr(), host.as_ptr(), 0) },
        R::CW_OK
    );
    let (contact, advertised, peer_port) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (contact.as_str(), advertised.as_str()),
        ("fakepeer", "127.0.0.1")
    );
    let mut s = TcpStream::connect(("127.0.0.1", peer_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut d = Decoder::new();
    // The accepting side speaks first.
    assert_eq!(
        read_frame(&mut s, &mut d),
        Some(Frame::ConnectionEstablished)
    );
    let ev = wait_for(&c, K::CW_EVENT_CALL_ESTABLISHED);
    let call = ev.take_call();
    // One connection per call: the listener is closed.
    assert!(TcpStream::connect(("127.0.0.1", peer_port)).is_err());
    assert_eq!(call.send(b"hi"), R::CW_OK);
    assert_eq!(
        read_frame(&mut s, &mut d),
        Some(Frame::VoiceData {
            data: b"hi".to_vec()
        })
    );
    s.write_all(&Frame::Login { name: "x".into() }.to_bytes())
        .unwrap();
    let ended = wait_for(&c, K::CW_EVENT_CALL_ENDED);
    assert_eq!(ended.result(), R::CW_PROTOCOL);
    assert_eq!(ended.peer().as_deref(), Some("fakepeer"));
    drop((ended, call, ev, c));
    t.join().unwrap();
}
