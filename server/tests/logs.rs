//! What chinwagd logs: everything at trace level is captured during a
//! chatos, a babel and an accounts exchange, and no message body, voice
//! payload or password may appear in it. Its own test binary, because it
//! installs the process's one logger.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::babel::Frame as Bab;
use chinwag_proto::chatos::Command;
use chinwagd::{Config, Server};

mod common;
use common::{Wire, WAIT};
#[path = "common/postgres.rs"]
mod testpg;

/// Every record, at every level, formatted as an operator would see it.
struct Capture(Mutex<Vec<String>>);

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        self.0.lock().unwrap().push(line);
    }

    fn flush(&self) {}
}

fn captured() -> Vec<String> {
    CAPTURE.0.lock().unwrap().clone()
}

/// Install the capture (once: the tests of this binary share it) at trace.
fn capture_everything() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("the only logger in this binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Secrets that must never reach a log line.
const CHATOS_BODY: &str = "chatos-global-body-5e1f";
const CHATOS_PRIVATE_BODY: &str = "chatos-private-body-77a0";
const CHATOS_FORGED_BODY: &str = "chatos-forged-body-0b3c";
const ACCOUNTS_PASSWORD: &str = "accounts-password-d41c";
const ACCOUNTS_WRONG_PASSWORD: &str = "accounts-wrong-guess-92fe";
const ACCOUNTS_BODY: &str = "accounts-message-body-3a9d";
const VOICE: &[u8] = b"babel-voice-payload-c0de";

fn chatos_exchange(addr: SocketAddr) {
    let login = |name: &str| {
        let mut c = Wire::<Command>::new(TcpStream::connect(addr).unwrap());
        c.send_bytes(&Command::Login { login: name.into() }.to_bytes());
        assert_eq!(c.recv(), Command::LoginAccepted);
        c
    };
    let mut a = login("alice");
    let mut b = login("bob");
    let m = Command::Message {
        from: "alice".into(),
        text: CHATOS_BODY.into(),
    };
    a.send_bytes(&m.to_bytes());
    assert_eq!(b.recv(), m);
    let pm = Command::MessagePrivate {
        from: "alice".into(),
        to: "bob".into(),
        text: CHATOS_PRIVATE_BODY.into(),
    };
    a.send_bytes(&pm.to_bytes());
    assert_eq!(b.recv(), pm);
    // A forgery is logged as one; its text must still not be.
    let forged = Command::Message {
        from: "bob".into(),
        text: CHATOS_FORGED_BODY.into(),
    };
    a.send_bytes(&forged.to_bytes());
    a.send_bytes(&m.to_bytes());
    assert_eq!(b.recv(), m);
}

fn babel_exchange(addr: SocketAddr) {
    let login = |name: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut hello = [0u8; 10];
        s.read_exact(&mut hello).unwrap();
        let mut c = Wire::<Bab>::new(s);
        c.send_bytes(&Bab::Login { name: name.into() }.to_bytes());
        assert_eq!(c.recv(), Bab::LoginSuccess);
        assert!(matches!(c.recv(), Bab::AddContact { .. }));
        c
    };
    let mut a = login("carol");
    let mut b = login("dave");
    assert!(matches!(a.recv(), Bab::AddContact { .. }));
    a.send_bytes(
        &Bab::CallRequest {
            contact: "dave".into(),
            host: String::new(),
            port: 4000,
        }
        .to_bytes(),
    );
    assert!(matches!(b.recv(), Bab::CallRequest { .. }));
    // Voice goes peer to peer; sent to the server it closes the connection,
    // and its payload stays out of the log.
    a.send_bytes(
        &Bab::VoiceData {
            data: VOICE.to_vec(),
        }
        .to_bytes(),
    );
    a.expect_closed();
}

fn accounts_exchange(addr: SocketAddr) {
    let connect = || {
        let mut c = Wire::<Acc>::new(TcpStream::connect(addr).unwrap());
        c.send_bytes(&Acc::Hello.to_bytes());
        assert_eq!(c.recv(), Acc::HelloAck);
        c
    };
    for (email, pseudo) in [("e@example.org", "erin"), ("f@example.org", "frank")] {
        let mut c = connect();
        c.send_bytes(
            &Acc::Register {
                email: email.into(),
                pseudo: pseudo.into(),
                password: ACCOUNTS_PASSWORD.into(),
            }
            .to_bytes(),
        );
        assert_eq!(c.recv(), Acc::Registered);
    }
    let login = |email: &str, password: &str| {
        let mut c = connect();
        c.send_bytes(
            &Acc::Login {
                email: email.into(),
                password: password.into(),
            }
            .to_bytes(),
        );
        let answer = c.recv();
        (c, answer)
    };
    assert_eq!(
        login("e@example.org", ACCOUNTS_WRONG_PASSWORD).1,
        Acc::LoginFailed
    );
    let (mut e, answer) = login("e@example.org", ACCOUNTS_PASSWORD);
    assert!(matches!(answer, Acc::LoginOk { .. }));
    let (mut f, answer) = login("f@example.org", ACCOUNTS_PASSWORD);
    assert!(matches!(answer, Acc::LoginOk { .. }));
    e.send_bytes(
        &Acc::FriendRequest {
            pseudo: "frank".into(),
        }
        .to_bytes(),
    );
    assert!(matches!(e.recv(), Acc::FriendRequestSent { .. }));
    assert!(matches!(f.recv(), Acc::FriendRequested { .. }));
    f.send_bytes(
        &Acc::AcceptFriend {
            pseudo: "erin".into(),
        }
        .to_bytes(),
    );
    assert!(matches!(e.recv(), Acc::FriendAccepted { .. }));
    e.send_bytes(
        &Acc::SendMessage {
            pseudo: "frank".into(),
            text: ACCOUNTS_BODY.into(),
        }
        .to_bytes(),
    );
    assert_eq!(e.recv(), Acc::MessageStored);
    assert!(matches!(f.recv(), Acc::Message { .. }));
    f.send_bytes(
        &Acc::History {
            pseudo: "erin".into(),
            before: 0,
        }
        .to_bytes(),
    );
    assert!(matches!(f.recv(), Acc::HistoryPage { entries, .. } if entries.len() == 1));
    // A second LOGIN on a logged-in connection carries a password too.
    f.send_bytes(
        &Acc::Login {
            email: "e@example.org".into(),
            password: ACCOUNTS_PASSWORD.into(),
        }
        .to_bytes(),
    );
    assert_eq!(f.recv(), Acc::LoginFailed);
}

#[test]
fn no_body_payload_or_password_is_logged_even_at_trace() {
    capture_everything();
    let srv = Server::start(Config::ephemeral()).expect("server starts");
    chatos_exchange(srv.chatos_addr());
    babel_exchange(srv.babel_addr());
    accounts_exchange(srv.accounts_addr());
    // Let the connections' last lines (closes, logouts) be written.
    srv.shutdown();

    let lines = captured();
    // The capture really saw every frame at trace level, or it proves nothing.
    for dialect in ["chatos", "babel", "accounts"] {
        let traced = lines
            .iter()
            .filter(|l| l.starts_with("TRACE") && l.contains(&format!("{dialect} 127.0.0.1")))
            .count();
        assert!(traced >= 3, "only {traced} trace lines for {dialect}");
    }
    assert_no_secrets(&lines);
}

/// With the store on PostgreSQL, its client traces every statement with
/// its parameters: those lines show lengths, never message bodies.
#[test]
fn no_body_or_password_is_logged_with_the_store_on_postgres() {
    capture_everything();
    let Some(pg) = testpg::server() else { return };
    let (url, _) = pg.fresh_url();
    let mut cfg = Config::ephemeral();
    cfg.store_url = url;
    let srv = Server::start(cfg).expect("server starts");
    accounts_exchange(srv.accounts_addr());
    srv.shutdown();
    let lines = captured();
    // The database client's statement lines were captured, or this proves
    // nothing.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tokio_postgres") && l.contains("with parameters")),
        "no statement was traced"
    );
    assert_no_secrets(&lines);
}

fn assert_no_secrets(lines: &[String]) {
    let voice_debug = format!("{VOICE:?}");
    let voice_numbers = voice_debug.trim_matches(|c| c == '[' || c == ']');
    let secrets = [
        CHATOS_BODY,
        CHATOS_PRIVATE_BODY,
        CHATOS_FORGED_BODY,
        ACCOUNTS_PASSWORD,
        ACCOUNTS_WRONG_PASSWORD,
        ACCOUNTS_BODY,
        std::str::from_utf8(VOICE).unwrap(),
        voice_numbers,
    ];
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|l| secrets.iter().any(|s| l.contains(s)))
        .collect();
    assert!(leaks.is_empty(), "secrets in the log: {leaks:#?}");
}
