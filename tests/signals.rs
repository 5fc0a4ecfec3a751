//! A signal never breaks a session. This process catches SIGUSR1 with a
//! no-op handler installed WITHOUT SA_RESTART (as C and Python programs
//! often do), and a storm thread sends it to every thread of the process
//! (the library's readers, call threads, jitter and mixer threads, and the
//! in-process chinwagd's acceptors, readers, flushers and relays) about
//! every millisecond, while clients of each dialect exchange messages and
//! a call of each carrying dialect exchanges payloads. Every message and
//! payload must arrive, every call must succeed, and no client or call may
//! end or report an error.
//!
//! Without a retry every interrupted read, recv, accept or send would
//! surface EINTR: a reader thread taking it for the end of the connection,
//! a timed read waiting again from the start, a relay leg dropping its call.

mod common;

use std::time::{Duration, Instant};

use chinwag::{AccountsClient, BabelClient, Call, ChatosClient, Event, RoomsClient};
use common::storm::{catch_without_restart, Storm, CAUGHT};
use common::{account_email, account_password, befriend};

const LIMIT: Option<Duration> = Some(Duration::from_secs(20));
/// Texts each way per dialect, and payloads each way per call.
const COUNT: usize = 60;
/// Between two texts or payloads: the exchange spans many signals.
const PACE: Duration = Duration::from_millis(3);

/// The texts `next` delivers until `want` have come from `from` (rooms:
/// or `#<id>`, the author as a client that never learned its name shows
/// it), failing at once on an event that ends or breaks the client.
fn texts(
    who: &str,
    from: &[&str],
    want: usize,
    next: impl Fn(Option<Duration>) -> chinwag::Result<Event>,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{who}: {} of {want} texts", got.len());
        match next(Some(left)) {
            Ok(Event::Message { from: f, text }) if from.contains(&&*f) => got.push(text),
            Ok(Event::PrivateMessage { from: f, text, .. }) if from.contains(&&*f) => {
                got.push(text)
            }
            Ok(e @ (Event::Error { .. } | Event::Disconnected { .. } | Event::Overflow { .. })) => {
                panic!("{who}: {e:?}")
            }
            Ok(e @ (Event::CallEnded { .. } | Event::CallFailed { .. })) => panic!("{who}: {e:?}"),
            Ok(_) => {}
            Err(e) => panic!("{who}: waiting for a text: {e}"),
        }
    }
    got
}

/// COUNT numbered texts each way, `a`'s and `b`'s in turn, paced; the
/// texts each sent.
fn exchange(tag: &str, a: impl Fn(&str), b: impl Fn(&str)) -> (Vec<String>, Vec<String>) {
    let numbered =
        |who: &str| -> Vec<String> { (0..COUNT).map(|i| format!("{tag} {who} {i}")).collect() };
    let (sa, sb) = (numbered("a"), numbered("b"));
    for (x, y) in sa.iter().zip(&sb) {
        a(x);
        b(y);
        std::thread::sleep(PACE);
    }
    (sa, sb)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `a` and `b` send each other COUNT payloads, one at a time each way,
/// once the path carries something both ways (a relay learns where each
/// party is from its first datagram, so those may be lost).
fn payloads(what: &str, a: &Call, b: &Call) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut a_heard, mut b_heard) = (false, false);
    while !(a_heard && b_heard) {
        assert!(Instant::now() < deadline, "{what}: no path both ways");
        a.send(b"warm").unwrap();
        b.send(b"warm").unwrap();
        let tick = Some(Duration::from_millis(50));
        a_heard |= a.recv(tick).is_ok_and(|p| p == b"warm");
        b_heard |= b.recv(tick).is_ok_and(|p| p == b"warm");
    }
    for i in 0..COUNT {
        let (x, y) = (format!("{what} a{i}"), format!("{what} b{i}"));
        a.send(x.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: send {i}: {e}"));
        b.send(y.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: send {i}: {e}"));
        assert_eq!(payload(what, b, i, deadline), x.as_bytes(), "{what}");
        assert_eq!(payload(what, a, i, deadline), y.as_bytes(), "{what}");
        std::thread::sleep(PACE);
    }
}

/// The next payload of `c` that is neither a receiver report (accounts: a
/// library peer sends those too, kind 2, 23 bytes) nor left from warming
/// up.
fn payload(what: &str, c: &Call, i: usize, deadline: Instant) -> Vec<u8> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = c
            .recv(Some(left))
            .unwrap_or_else(|e| panic!("{what}: payload {i}: {e}"));
        if !(p.len() == 23 && p[0] == 2) && p != b"warm" {
            return p;
        }
    }
}

/// The call `c` is handed in CallEstablished, accepting the ringing one
/// with `answer`.
fn take_call(
    who: &str,
    next: impl Fn(Option<Duration>) -> chinwag::Result<Event>,
    answer: impl Fn(&str),
) -> Call {
    loop {
        match next(LIMIT) {
            Ok(Event::CallIncoming { peer, .. }) => answer(&peer),
            Ok(Event::CallEstablished { call, .. }) => return call.expect("the call"),
            Ok(Event::CallAccepted { .. } | Event::ContactAdded { .. }) => {}
            Ok(e) => panic!("{who}: {e:?} while waiting for the call"),
            Err(e) => panic!("{who}: waiting for the call: {e}"),
        }
    }
}

fn chatos(srv: &chinwagd::Server) {
    let port = srv.chatos_addr().port();
    let (a, b) = (
        ChatosClient::connect("127.0.0.1", port).unwrap(),
        ChatosClient::connect("127.0.0.1", port).unwrap(),
    );
    a.login("sigchat_a", LIMIT).unwrap();
    b.login("sigchat_b", LIMIT).unwrap();
    let (sa, sb) = exchange(
        "chatos",
        |x| a.send_message(x).unwrap(),
        |y| b.send_private("sigchat_a", y).unwrap(),
    );
    assert_eq!(
        texts("chatos b", &["sigchat_a"], COUNT, |t| b.next_event(t)),
        sa
    );
    assert_eq!(
        texts("chatos a", &["sigchat_b"], COUNT, |t| a.next_event(t)),
        sb
    );
    // A private connection through the server's relay: bytes both ways,
    // read with a time limit (the timed read a signal must not restart).
    a.request_private("sigchat_b").unwrap();
    let stream = |who: &str, c: &ChatosClient, accept: bool| loop {
        match c.next_event(LIMIT) {
            Ok(Event::PrivateRequest { from }) if accept => c.accept_private(&from).unwrap(),
            Ok(Event::PrivateEstablished { stream, .. }) => return stream.expect("stream"),
            Ok(Event::Message { .. } | Event::PrivateMessage { .. }) => {}
            other => panic!("{who}: {other:?} while waiting for the private connection"),
        }
    };
    let tb = stream("chatos b", &b, true);
    let ta = stream("chatos a", &a, false);
    for i in 0..COUNT {
        let x = format!("chatos stream {i};");
        ta.write(x.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < x.len() {
            let n = tb
                .read(&mut buf, Some(Duration::from_secs(20)))
                .unwrap_or_else(|e| panic!("chatos stream read {i}: {e}"));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, x.as_bytes());
        std::thread::sleep(PACE);
    }
    // Nothing more comes: a read with a time limit still returns in time,
    // however many signals restart it.
    let t = Instant::now();
    let quiet = tb.read(&mut [0u8; 16], Some(Duration::from_millis(300)));
    assert_eq!(quiet.unwrap_err().code, chinwag::ErrorKind::Timeout);
    // Three seconds on an idle machine, as much of this one's time now.
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3).mul_f64(common::stretch()),
        "a 300 ms read took {took:?}"
    );
    assert!(!a.is_closed() && !b.is_closed());
}

fn rooms(srv: &chinwagd::Server) {
    let port = srv.rooms_addr().port();
    let (a, b) = (
        RoomsClient::connect("127.0.0.1", port).unwrap(),
        RoomsClient::connect("127.0.0.1", port).unwrap(),
    );
    a.login("sigrooma", LIMIT).unwrap();
    b.login("sigroomb", LIMIT).unwrap();
    let (sa, sb) = exchange(
        "rooms",
        |x| a.send_message(x).unwrap(),
        |y| b.send_message(y).unwrap(),
    );
    let ida = format!("#{}", a.room_user_id().unwrap());
    let idb = format!("#{}", b.room_user_id().unwrap());
    // Datagrams: the order may change, nothing may be missing.
    let got = texts("rooms b", &["sigrooma", &ida], COUNT, |t| b.next_event(t));
    assert_eq!(sorted(got), sorted(sa));
    let got = texts("rooms a", &["sigroomb", &idb], COUNT, |t| a.next_event(t));
    assert_eq!(sorted(got), sorted(sb));
    assert!(!a.is_closed() && !b.is_closed());
}

fn accounts(srv: &chinwagd::Server) {
    befriend(srv, "sigacca", "sigaccb");
    let port = srv.accounts_addr().port();
    let login = |name: &str| {
        let c = AccountsClient::connect("127.0.0.1", port).unwrap();
        c.login_password(&account_email(name), &account_password(name), LIMIT)
            .unwrap();
        c
    };
    let (a, b) = (login("sigacca"), login("sigaccb"));
    // Each acknowledged (MessageStored) before the next.
    let (sa, sb) = exchange(
        "accounts",
        |x| a.send_to_friend("sigaccb", x, LIMIT).unwrap(),
        |y| b.send_to_friend("sigacca", y, LIMIT).unwrap(),
    );
    assert_eq!(
        texts("accounts b", &["sigacca"], COUNT, |t| b.next_event(t)),
        sa
    );
    assert_eq!(
        texts("accounts a", &["sigaccb"], COUNT, |t| a.next_event(t)),
        sb
    );
    // A call the library carries: UDP between the two clients.
    a.place_voice_call("sigaccb", "").unwrap();
    let cb = take_call(
        "accounts b",
        |t| b.next_event(t),
        |p| b.answer_voice_call(p, "").unwrap(),
    );
    let ca = take_call("accounts a", |t| a.next_event(t), |_| {});
    payloads("accounts call", &ca, &cb);
    assert!(!a.is_closed() && !b.is_closed());
}

fn babel(srv: &chinwagd::Server) {
    let port = srv.babel_addr().port();
    let (a, b) = (
        BabelClient::connect("127.0.0.1", port).unwrap(),
        BabelClient::connect("127.0.0.1", port).unwrap(),
    );
    a.login("sigbabela", LIMIT).unwrap();
    b.login("sigbabelb", LIMIT).unwrap();
    // Through the server's media relay (TCP legs).
    a.place_call("sigbabelb", "", 0).unwrap();
    let cb = take_call(
        "babel b",
        |t| b.next_event(t),
        |p| b.accept_call(p).unwrap(),
    );
    let ca = take_call("babel a", |t| a.next_event(t), |_| {});
    payloads("babel call", &ca, &cb);
    assert!(!a.is_closed() && !b.is_closed());
}

#[test]
fn a_signal_storm_breaks_no_session_of_any_dialect() {
    catch_without_restart(libc::SIGUSR1);
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    // Babel calls through the server's media relay (its TCP legs), with
    // room for the test's pace.
    let relayed = chinwagd::Server::start(chinwagd::Config {
        call_relay: "all".into(),
        relay_packets_per_second: 10_000,
        ..chinwagd::Config::ephemeral()
    })
    .unwrap();
    // SAFETY: getpid has no preconditions.
    let storm = Storm::start(
        unsafe { libc::getpid() },
        libc::SIGUSR1,
        Duration::from_secs(40),
    );
    let caught = CAUGHT.load(std::sync::atomic::Ordering::Relaxed);
    chatos(&srv);
    rooms(&srv);
    accounts(&srv);
    babel(&relayed);
    let sent = storm.stop();
    let caught = CAUGHT.load(std::sync::atomic::Ordering::Relaxed) - caught;
    eprintln!("{sent} signals sent, {caught} caught");
    assert!(caught > 1000, "only {caught} signals caught: no storm");
}
