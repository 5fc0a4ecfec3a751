//! Hardening tests against an in-process chinwagd on 127.0.0.1: slow
//! readers, login limits under parallel bursts, names that look alike,
//! history under load. Each waits on states with deadlines, never on
//! fixed sleeps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{Command, Decoder};
use chinwagd::{Config, Server};

mod common;
use common::WAIT;

fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    f(&mut cfg);
    Server::start(cfg).expect("server starts")
}

/// Log in over a fresh chatos connection and read LOGIN_ACCEPTED.
fn chatos_login(stream: TcpStream, name: &str) -> TcpStream {
    let mut s = stream;
    s.set_nodelay(true).unwrap();
    s.write_all(&Command::Login { login: name.into() }.to_bytes())
        .unwrap();
    let mut one = [0u8; 1];
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.read_exact(&mut one).unwrap();
    assert_eq!(one, [1], "{name} is accepted");
    s
}

/// Count the MESSAGE frames a connection receives until `stop` or EOF.
fn count_messages(mut s: TcpStream, got: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while !stop.load(Ordering::Acquire) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                dec.push(&buf[..n]);
                while let Some(c) = dec.next_command().expect("valid bytes") {
                    if matches!(c, Command::Message { .. }) {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// NATS-style slow consumer: one client with a small receive buffer that
/// never reads, among 50 that read, while one of them sends 100 texts of
/// 100 bytes a second. With the server's defaults the slow one is cut
/// within 5 s of the first text, and every fast one gets every text.
#[test]
fn a_reader_that_stops_reading_is_cut_within_five_seconds() {
    let srv = server_with(|_| {});
    let addr: SocketAddr = srv.chatos_addr();
    const FAST: usize = 50;
    let stop = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::new();
    let mut readers = Vec::new();
    let mut sender = None;
    for i in 0..FAST {
        let s = chatos_login(TcpStream::connect(addr).unwrap(), &format!("fast{i}"));
        if i == 0 {
            sender = Some(s.try_clone().unwrap());
        }
        let got = Arc::new(AtomicUsize::new(0));
        counters.push(got.clone());
        let stop = stop.clone();
        readers.push(thread::spawn(move || count_messages(s, got, stop)));
    }
    // The slow consumer: a small receive buffer set before connecting, so
    // the window it advertises stays small; it reads its login answer only.
    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow.set_recv_buffer_size(4096).unwrap();
    slow.connect(&addr.into()).unwrap();
    let _slow = chatos_login(slow.into(), "slow");
    assert!(srv.hub().online("slow").is_some());

    let mut sender = sender.unwrap();
    let text = "x".repeat(100);
    let frame = Command::Message {
        from: "fast0".into(),
        text,
    }
    .to_bytes();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut cut_after = None;
    // Send at 100/s until the slow one is cut (and one more second, so the
    // fast ones are tested after the cut too), for 8 s at most.
    while started.elapsed() < Duration::from_secs(8) {
        let due = started + Duration::from_millis(10 * sent as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        sender.write_all(&frame).unwrap();
        sent += 1;
        if cut_after.is_none() && srv.hub().online("slow").is_none() {
            cut_after = Some(started.elapsed());
        }
        if cut_after.is_some_and(|c| started.elapsed() > c + Duration::from_secs(1)) {
            break;
        }
    }
    let cut_after = cut_after.expect("the slow consumer was cut while the texts flowed");
    eprintln!("slow consumer cut after {cut_after:?}");
    assert!(
        cut_after <= Duration::from_secs(5),
        "the slow consumer was cut only after {cut_after:?}"
    );
    // Every fast receiver gets every text.
    let deadline = Instant::now() + WAIT;
    for (i, got) in counters.iter().enumerate() {
        while got.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(got.load(Ordering::Relaxed), sent, "fast{i} got every text");
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
}

mod accounts {
    use super::*;
    use chinwag_proto::accounts::Frame;
    use std::net::IpAddr;

    pub type Acc = common::Wire<Frame>;

    /// HELLO over a connection made from `from` (any 127.0.0.0/8 address).
    pub fn connect_from(addr: SocketAddr, from: &str) -> Acc {
        let from: IpAddr = from.parse().unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(from, 0).into()).unwrap();
        s.connect(&addr.into()).unwrap();
        let mut a = Acc::new(s.into());
        a.send_bytes(&Frame::Hello.to_bytes());
        assert_eq!(a.recv(), Frame::HelloAck);
        a
    }

    pub fn register(addr: SocketAddr, email: &str, pseudo: &str, pw: &str) -> Frame {
        let mut a = connect_from(addr, "127.0.0.1");
        a.send_bytes(
            &Frame::Register {
                email: email.into(),
                pseudo: pseudo.into(),
                password: pw.into(),
            }
            .to_bytes(),
        );
        a.recv()
    }

    pub fn login_from(addr: SocketAddr, from: &str, email: &str, pw: &str) -> (Acc, Frame) {
        let mut a = connect_from(addr, from);
        a.send_bytes(
            &Frame::Login {
                email: email.into(),
                password: pw.into(),
            }
            .to_bytes(),
        );
        let r = a.recv();
        (a, r)
    }

    /// The server's count of accounts logins refused for a bad password
    /// (each one is an Argon2id verification that ran).
    pub fn bad_passwords(srv: &Server) -> u64 {
        let text = srv.hub().metrics().render();
        text.lines()
            .find(|l| l.contains("dialect=\"accounts\"") && l.contains("result=\"bad_password\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// 40 wrong guesses sent at once from one address: only the allowance (5)
/// is checked, because attempts in flight count against the limit.
#[test]
fn a_parallel_burst_of_guesses_gets_only_the_allowance() {
    use chinwag_proto::accounts::Frame;
    let srv = server_with(|_| {});
    let addr = srv.accounts_addr();
    assert_eq!(
        accounts::register(addr, "burst@example.org", "burst", "correct horse"),
        Frame::Registered
    );
    let mut conns: Vec<accounts::Acc> = (0..40)
        .map(|_| accounts::connect_from(addr, "127.0.0.1"))
        .collect();
    let wrong = Frame::Login {
        email: "burst@example.org".into(),
        password: "wrong guess".into(),
    }
    .to_bytes();
    for c in &mut conns {
        c.send_bytes(&wrong);
    }
    for c in &mut conns {
        assert_eq!(c.recv(), Frame::LoginFailed);
    }
    let checked = accounts::bad_passwords(&srv);
    assert!(checked <= 5, "{checked} guesses were checked, not 5");
}

/// Strangers guessing an account lock it for strangers only: the owner's
/// address, which logged in lately, still gets in with the right password.
#[test]
fn strangers_cannot_lock_the_owner_out() {
    use chinwag_proto::accounts::Frame;
    let srv = server_with(|_| {});
    let addr = srv.accounts_addr();
    let email = "owner@example.org";
    assert_eq!(
        accounts::register(addr, email, "owner", "correct horse"),
        Frame::Registered
    );
    let (home, r) = accounts::login_from(addr, "127.0.0.1", email, "correct horse");
    assert!(matches!(r, Frame::LoginOk { .. }), "{r:?}");
    drop(home);
    for i in 2..7 {
        let (_a, r) = accounts::login_from(addr, &format!("127.0.0.{i}"), email, "guess");
        assert_eq!(r, Frame::LoginFailed);
    }
    // The account is locked for an address it has not been used from...
    let (_a, r) = accounts::login_from(addr, "127.0.0.9", email, "correct horse");
    assert_eq!(r, Frame::LoginFailed, "a stranger's address is locked out");
    // ...but not for its owner's (the session may still be closing: retry).
    let deadline = Instant::now() + WAIT;
    loop {
        let (_a, r) = accounts::login_from(addr, "127.0.0.1", email, "correct horse");
        if matches!(r, Frame::LoginOk { .. }) {
            break;
        }
        assert!(Instant::now() < deadline, "the owner was locked out: {r:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// What each dialect answers to a login (registration for accounts and
/// rooms) under `name`: true if accepted. Connections are kept open in
/// `keep` so accepted names stay online.
struct Dialects {
    chatos: SocketAddr,
    babel: SocketAddr,
    accounts: SocketAddr,
    rooms: SocketAddr,
    keep: Vec<Box<dyn std::any::Any>>,
}

impl Dialects {
    fn new(srv: &Server) -> Dialects {
        Dialects {
            chatos: srv.chatos_addr(),
            babel: srv.babel_addr(),
            accounts: srv.accounts_addr(),
            rooms: srv.rooms_addr(),
            keep: Vec::new(),
        }
    }

    fn chatos(&mut self, name: &str) -> bool {
        let mut s = TcpStream::connect(self.chatos).unwrap();
        s.write_all(&Command::Login { login: name.into() }.to_bytes())
            .unwrap();
        let mut one = [0u8; 1];
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.read_exact(&mut one).unwrap();
        self.keep.push(Box::new(s));
        one == [1]
    }

    fn babel(&mut self, name: &str) -> Result<(), String> {
        use chinwag_proto::babel::Frame;
        let mut b = common::Wire::<Frame>::new(TcpStream::connect(self.babel).unwrap());
        assert_eq!(b.recv(), Frame::HelloConnect);
        b.send_bytes(&Frame::Login { name: name.into() }.to_bytes());
        let r = b.recv();
        self.keep.push(Box::new(b));
        match r {
            Frame::LoginSuccess => Ok(()),
            Frame::LoginFailed { reason } => Err(reason),
            other => panic!("babel answered {other:?}"),
        }
    }

    fn accounts(&mut self, name: &str) -> chinwag_proto::accounts::Frame {
        let email = format!("{}@example.org", rand::random::<u32>());
        accounts::register(self.accounts, &email, name, "correct horse")
    }

    fn rooms(&mut self, name: &str) -> chinwag_proto::rooms::Registration {
        use chinwag_proto::rooms::{self as wire, Body, Message};
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let m = Message {
            user: wire::UNREGISTERED,
            seq: 1,
            body: Body::Connexion {
                name: Some(name.into()),
            },
        };
        let mut buf = [0u8; 2048];
        for _ in 0..50 {
            s.send_to(&m.to_bytes(), self.rooms).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let got = Message::decode(&buf[..n]).expect("valid answer");
                if let Body::Registered { status, .. } = got.body {
                    self.keep.push(Box::new(s));
                    return status;
                }
            }
        }
        panic!("no rooms answer for {name:?}");
    }
}

/// The identifier policy holds in every dialect: invisible characters,
/// joiners, byte-order marks, bidirectional controls and lone combining
/// marks are refused, each dialect answering in its own way.
#[test]
fn every_dialect_refuses_names_against_the_policy() {
    use chinwag_proto::accounts::Frame as Acc;
    use chinwag_proto::rooms::Registration;
    let srv = server_with(|_| {});
    let mut d = Dialects::new(&srv);
    // Each short enough for rooms (10 bytes) and free of '#'.
    let bad = [
        "ab\u{200B}c",
        "ab\u{200D}c",
        "ab\u{200C}c",
        "\u{FEFF}abc",
        "abc\u{202E}",
        "\u{2066}abc",
        "\u{301}abc",
        "ab\u{AD}c",
        "zoe\u{301}",
    ];
    for name in bad {
        assert!(!d.chatos(name), "chatos accepted {name:?}");
        assert_eq!(
            d.babel(name),
            Err("invalid username".into()),
            "babel {name:?}"
        );
        assert_eq!(d.rooms(name), Registration::InvalidName, "rooms {name:?}");
        assert_eq!(d.accounts(name), Acc::PseudoTaken, "accounts {name:?}");
    }
    // The same names in NFC and without the invisible parts are fine.
    assert!(d.chatos("zoé"));
    assert_eq!(d.babel("abc"), Ok(()));
}

/// A name that looks like one in use (case, Cyrillic look-alikes, I/l) is
/// taken, across dialects and against registered accounts.
#[test]
fn look_alike_names_are_taken() {
    use chinwag_proto::accounts::Frame as Acc;
    use chinwag_proto::rooms::Registration;
    let srv = server_with(|_| {});
    let mut d = Dialects::new(&srv);
    assert!(d.chatos("alice"));
    assert!(!d.chatos("Alice"), "case");
    assert!(!d.chatos("\u{430}lice"), "Cyrillic a");
    assert_eq!(
        d.babel("AIice"),
        Err("username already used".into()),
        "capital I for l"
    );
    assert_eq!(d.rooms("ALICE"), Registration::NameTaken);
    assert_eq!(d.accounts("\u{430}lice"), Acc::PseudoTaken);
    // A registered pseudo reserves its look-alikes from password-less logins.
    assert_eq!(d.accounts("paypal"), Acc::Registered);
    assert_eq!(
        d.babel("\u{440}\u{430}y\u{440}al"),
        Err("username belongs to a registered account".into())
    );
    assert!(!d.chatos("PayPal"));
    assert_eq!(d.accounts("PAYPAL"), Acc::PseudoTaken);
    // Different names stay different.
    assert!(d.chatos("alicia"));
}

/// With a database file, history is read off the store thread, yet a page
/// asked right behind a burst of messages still comes after their 152s and
/// holds every one of them (answers keep the order of requests).
#[test]
fn history_read_off_the_store_thread_keeps_request_order() {
    use chinwag_proto::accounts::Frame;
    let dir = common::temp_dir("hist");
    let srv = server_with(|c| c.db_path = dir.join("h.db"));
    let addr = srv.accounts_addr();
    for (e, p) in [("ha@example.org", "hista"), ("hb@example.org", "histb")] {
        assert_eq!(
            accounts::register(addr, e, p, "correct horse"),
            Frame::Registered
        );
    }
    let (mut a, r) = accounts::login_from(addr, "127.0.0.1", "ha@example.org", "correct horse");
    assert!(matches!(r, Frame::LoginOk { .. }));
    let (mut b, r) = accounts::login_from(addr, "127.0.0.1", "hb@example.org", "correct horse");
    assert!(matches!(r, Frame::LoginOk { .. }));
    a.send_bytes(
        &Frame::FriendRequest {
            pseudo: "histb".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        a.recv(),
        Frame::FriendRequestSent {
            pseudo: "histb".into()
        }
    );
    assert_eq!(
        b.recv(),
        Frame::FriendRequested {
            pseudo: "hista".into()
        }
    );
    b.send_bytes(
        &Frame::AcceptFriend {
            pseudo: "hista".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        a.recv(),
        Frame::FriendAccepted {
            pseudo: "histb".into()
        }
    );
    for round in 0..5 {
        let mut burst = Vec::new();
        for i in 0..40 {
            Frame::SendMessage {
                pseudo: "histb".into(),
                text: format!("r{round} m{i}"),
            }
            .encode(&mut burst);
        }
        Frame::History {
            pseudo: "histb".into(),
            before: 0,
        }
        .encode(&mut burst);
        a.send_bytes(&burst);
        for i in 0..40 {
            assert_eq!(a.recv(), Frame::MessageStored, "round {round}, 152 #{i}");
        }
        let Frame::HistoryPage { entries, .. } = a.recv() else {
            panic!("expected the history page after the 152s");
        };
        let last: Vec<String> = entries
            .iter()
            .rev()
            .take(40)
            .map(|e| e.text.clone())
            .collect();
        let want: Vec<String> = (0..40).rev().map(|i| format!("r{round} m{i}")).collect();
        assert_eq!(last, want, "round {round}: the page holds the burst");
    }
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
