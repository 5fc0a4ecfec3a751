//! End-to-end tests of the accounts dialect (seed 000) against chinwagd on
//! 127.0.0.1: in-process servers, restarts on one database file, and a real
//! chinwagd process killed with SIGKILL mid-traffic; the same on a
//! PostgreSQL store (a server the tests start, tests/common/postgres.rs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command as Proc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::{Frame, HISTORY_PAGE};
use chinwag_proto::chatos;
use chinwagd::{Config, Server};
use rand::{Rng, SeedableRng};

fn server_on(db: &Path) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    cfg.login_timeout_ms = common::LOGIN_TIMEOUT_MS;
    cfg.db_path = db.to_path_buf();
    Server::start(cfg).expect("server starts")
}

fn mem_server() -> Server {
    server_on(Path::new(":memory:"))
}

/// A server whose store is the PostgreSQL database at `url`.
fn pg_server(url: &str) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    cfg.login_timeout_ms = common::LOGIN_TIMEOUT_MS;
    cfg.store_url = url.to_owned();
    Server::start(cfg).expect("server starts")
}

mod common;
use common::{temp_dir, WAIT};
#[path = "common/postgres.rs"]
mod testpg;

type Acc = common::Wire<Frame>;

impl Acc {
    fn connect(addr: SocketAddr) -> Acc {
        let mut a = Acc::new(TcpStream::connect(addr).unwrap());
        a.send(&Frame::Hello);
        assert_eq!(a.recv(), Frame::HelloAck);
        a
    }

    fn send(&mut self, f: &Frame) {
        self.s.write_all(&f.to_bytes()).unwrap();
    }

    fn register(addr: SocketAddr, email: &str, pseudo: &str, pw: &str) -> Frame {
        let mut a = Acc::connect(addr);
        a.send(&Frame::Register {
            email: email.into(),
            pseudo: pseudo.into(),
            password: pw.into(),
        });
        a.recv()
    }

    fn login(addr: SocketAddr, email: &str, pw: &str) -> (Acc, Frame) {
        let mut a = Acc::connect(addr);
        a.send(&Frame::Login {
            email: email.into(),
            password: pw.into(),
        });
        let r = a.recv();
        (a, r)
    }

    fn logged_in(addr: SocketAddr, email: &str, pw: &str) -> Acc {
        let (a, r) = Acc::login(addr, email, pw);
        assert!(matches!(r, Frame::LoginOk { .. }), "login {email}: {r:?}");
        a
    }
}

/// Wait until the server has noticed that `pseudo` left.
fn offline(srv: &Server, pseudo: &str) {
    let deadline = Instant::now() + WAIT;
    while srv.hub().online(pseudo).is_some() {
        assert!(Instant::now() < deadline, "{pseudo} still online");
        thread::sleep(Duration::from_millis(5));
    }
}

fn p(s: &str) -> String {
    s.to_string()
}

/// Register alice and bob and make them friends; both logged in.
fn friends(addr: SocketAddr) -> (Acc, Acc) {
    assert_eq!(
        Acc::register(addr, "alice@example.org", "alice", "correct horse"),
        Frame::Registered
    );
    assert_eq!(
        Acc::register(addr, "bob@example.org", "bob", "battery staple"),
        Frame::Registered
    );
    let mut a = Acc::logged_in(addr, "alice@example.org", "correct horse");
    let mut b = Acc::logged_in(addr, "bob@example.org", "battery staple");
    a.send(&Frame::FriendRequest { pseudo: p("bob") });
    assert_eq!(a.recv(), Frame::FriendRequestSent { pseudo: p("bob") });
    assert_eq!(b.recv(), Frame::FriendRequested { pseudo: p("alice") });
    b.send(&Frame::AcceptFriend { pseudo: p("alice") });
    assert_eq!(a.recv(), Frame::FriendAccepted { pseudo: p("bob") });
    (a, b)
}

#[test]
fn registration_and_login_answers() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    assert_eq!(
        Acc::register(addr, "alice@example.org", "alice", "correct horse"),
        Frame::Registered
    );
    assert_eq!(
        Acc::register(addr, "ALICE@example.org", "alice2", "correct horse"),
        Frame::EmailTaken
    );
    assert_eq!(
        Acc::register(addr, "other@example.org", "alice", "correct horse"),
        Frame::PseudoTaken
    );
    assert_eq!(
        Acc::register(addr, "not-an-email", "carol", "correct horse"),
        Frame::EmailTaken
    );
    assert_eq!(
        Acc::register(addr, "c@example.org", "has space", "correct horse"),
        Frame::PseudoTaken
    );
    assert!(matches!(
        Acc::register(addr, "c@example.org", "carol", "short"),
        Frame::RegisterRefused { .. }
    ));
    // A name held by a chatos guest right now cannot be registered.
    let mut guest = TcpStream::connect(srv.chatos_addr()).unwrap();
    guest
        .write_all(&chatos::Command::Login { login: p("guest") }.to_bytes())
        .unwrap();
    let mut one = [0u8; 1];
    guest.read_exact(&mut one).unwrap();
    assert_eq!(one, [1]);
    assert_eq!(
        Acc::register(addr, "g@example.org", "guest", "correct horse"),
        Frame::PseudoTaken
    );

    let (_a, r) = Acc::login(addr, "alice@example.org", "correct horse");
    let Frame::LoginOk { pseudo, id } = r else {
        panic!("{r:?}")
    };
    assert_eq!(pseudo, "alice");
    assert!(id > 0);
    // One session per account.
    assert_eq!(
        Acc::login(addr, "alice@example.org", "correct horse").1,
        Frame::LoginFailed
    );
    assert_eq!(
        Acc::login(addr, "alice@example.org", "wrong").1,
        Frame::LoginFailed
    );
    assert_eq!(
        Acc::login(addr, "nobody@example.org", "whatever").1,
        Frame::LoginFailed
    );
}

#[test]
fn a_second_login_is_answered_not_obeyed() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    for (email, pseudo) in [("a@example.org", "ann"), ("b@example.org", "ben")] {
        assert_eq!(
            Acc::register(addr, email, pseudo, "correct horse"),
            Frame::Registered
        );
    }
    let mut a = Acc::logged_in(addr, "a@example.org", "correct horse");
    a.send(&Frame::Login {
        email: p("b@example.org"),
        password: p("correct horse"),
    });
    assert_eq!(a.recv(), Frame::LoginFailed);
    assert!(
        srv.hub().online("ben").is_none(),
        "ben registered in the hub"
    );
    assert!(srv.hub().online("ann").is_some());
    // ben's account is free to log in from its own connection.
    drop(Acc::logged_in(addr, "b@example.org", "correct horse"));
}

/// A connection to `addr` from loopback address `from` (127.0.0.0/8 is all
/// this host's), greeted: the rate limits count each source apart.
fn connect_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> Acc {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut a = Acc::new(sock.into());
    a.send(&Frame::Hello);
    assert_eq!(a.recv(), Frame::HelloAck);
    a
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

/// Both kinds of failed login do the same work: one Argon2id verification
/// each (skipping it for an unknown email would be ~100x cheaper, and
/// tell an attacker which emails have accounts). Measured as the CPU time
/// the whole process (the server and this client) uses from the request
/// to its answer, in a process of its own: unlike the time on the wall,
/// that does not change with what else the machine runs (on a loaded
/// machine the wall-clock medians were once 3x apart). Work the server
/// did after answering would land in the next attempt's window and show
/// as well.
#[test]
fn unknown_email_and_wrong_password_cost_the_same() {
    if !common::alone("unknown_email_and_wrong_password_cost_the_same") {
        return;
    }
    /// Source addresses, and wrong-password attempts of each kind from
    /// each: under the 5 failures an address may have in a window.
    const SOURCES: u8 = 6;
    const EACH: usize = 2;
    let srv = mem_server();
    let addr = srv.accounts_addr();
    assert_eq!(
        Acc::register(addr, "t@example.org", "timer", "correct horse"),
        Frame::Registered
    );
    let attempt = |from, email: &str, password: &str| {
        let mut a = connect_from(addr, from);
        let (wall, cpu) = (Instant::now(), common::process_cpu());
        a.send(&Frame::Login {
            email: email.into(),
            password: password.into(),
        });
        let answer = a.recv();
        ((common::process_cpu() - cpu, wall.elapsed()), answer)
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for n in 0..SOURCES {
        let from = std::net::Ipv4Addr::new(127, 0, 0, 10 + n);
        // A success from this address first: it spares the address the
        // account's own limit, so every source may fail on the account.
        let (_, ok) = attempt(from, "t@example.org", "correct horse");
        assert!(matches!(ok, Frame::LoginOk { .. }), "{ok:?}");
        // Interleaved, so drift in machine load hits both kinds alike.
        for i in 0..EACH {
            let (t, r) = attempt(from, "t@example.org", "wrong password");
            assert_eq!(r, Frame::LoginFailed);
            known.push(t);
            let (t, r) = attempt(from, &format!("u{n}.{i}@example.org"), "wrong password");
            assert_eq!(r, Frame::LoginFailed);
            unknown.push(t);
        }
    }
    let cpu = |v: &[(Duration, Duration)]| median(v.iter().map(|t| t.0).collect());
    let wall = |v: &[(Duration, Duration)]| median(v.iter().map(|t| t.1).collect());
    // Medians of 12 each: a stray burst of work on a few attempts of one
    // kind moves neither.
    let (k, u) = (cpu(&known), cpu(&unknown));
    eprintln!(
        "medians: CPU known {k:.4}s, unknown {u:.4}s; wall known {:.4}s, unknown {:.4}s",
        wall(&known),
        wall(&unknown)
    );
    assert!(
        u > k / 3.0 && k > u / 3.0,
        "CPU time: known {k:.4}s vs unknown {u:.4}s (medians)"
    );
}

#[test]
fn repeated_failures_are_rate_limited() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    assert_eq!(
        Acc::register(addr, "r@example.org", "rated", "correct horse"),
        Frame::Registered
    );
    for _ in 0..5 {
        assert_eq!(
            Acc::login(addr, "r@example.org", "bad guess").1,
            Frame::LoginFailed
        );
    }
    // Now even the right password is refused for this address and email.
    assert_eq!(
        Acc::login(addr, "r@example.org", "correct horse").1,
        Frame::LoginFailed
    );
}

#[test]
fn registered_pseudos_are_closed_to_passwordless_logins() {
    let srv = mem_server();
    assert_eq!(
        Acc::register(
            srv.accounts_addr(),
            "o@example.org",
            "owner",
            "correct horse"
        ),
        Frame::Registered
    );
    let mut c = TcpStream::connect(srv.chatos_addr()).unwrap();
    c.write_all(&chatos::Command::Login { login: p("owner") }.to_bytes())
        .unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    assert_eq!(one, [2], "chatos LOGIN as a registered pseudo is refused");
}

#[test]
fn friends_flow() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    a.send(&Frame::FriendRequest { pseudo: p("bob") });
    assert_eq!(a.recv(), Frame::AlreadyFriends { pseudo: p("bob") });
    a.send(&Frame::FriendRequest { pseudo: p("alice") });
    assert_eq!(a.recv(), Frame::NoSuchUser { pseudo: p("alice") });
    a.send(&Frame::FriendRequest { pseudo: p("zed") });
    assert_eq!(a.recv(), Frame::NoSuchUser { pseudo: p("zed") });
    a.send(&Frame::ListFriends);
    assert_eq!(
        a.recv(),
        Frame::Friends {
            pseudos: vec![p("bob")]
        }
    );
    b.send(&Frame::ListFriends);
    assert_eq!(
        b.recv(),
        Frame::Friends {
            pseudos: vec![p("alice")]
        }
    );

    // carol asks alice while alice is online; alice refuses.
    assert_eq!(
        Acc::register(addr, "carol@example.org", "carol", "correct horse"),
        Frame::Registered
    );
    let mut c = Acc::logged_in(addr, "carol@example.org", "correct horse");
    c.send(&Frame::FriendRequest { pseudo: p("alice") });
    assert_eq!(c.recv(), Frame::FriendRequestSent { pseudo: p("alice") });
    assert_eq!(a.recv(), Frame::FriendRequested { pseudo: p("carol") });
    a.send(&Frame::ListRequests);
    assert_eq!(
        a.recv(),
        Frame::Requests {
            pseudos: vec![p("carol")]
        }
    );
    a.send(&Frame::RefuseFriend { pseudo: p("carol") });
    assert_eq!(c.recv(), Frame::FriendRefused { pseudo: p("alice") });
    a.send(&Frame::ListRequests);
    assert_eq!(a.recv(), Frame::Requests { pseudos: vec![] });
    // Answering a request that does not exist does nothing.
    a.send(&Frame::AcceptFriend { pseudo: p("carol") });
    c.expect_silence();
}

#[test]
fn offline_friend_requests_and_answers_wait_for_login() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    assert_eq!(
        Acc::register(addr, "a@example.org", "ann", "correct horse"),
        Frame::Registered
    );
    assert_eq!(
        Acc::register(addr, "d@example.org", "dan", "correct horse"),
        Frame::Registered
    );
    let mut a = Acc::logged_in(addr, "a@example.org", "correct horse");
    a.send(&Frame::FriendRequest { pseudo: p("dan") });
    assert_eq!(a.recv(), Frame::FriendRequestSent { pseudo: p("dan") });
    drop(a);
    offline(&srv, "ann");
    let mut d = Acc::logged_in(addr, "d@example.org", "correct horse");
    assert_eq!(d.recv(), Frame::FriendRequested { pseudo: p("ann") });
    d.send(&Frame::AcceptFriend { pseudo: p("ann") });
    d.send(&Frame::ListFriends);
    assert_eq!(
        d.recv(),
        Frame::Friends {
            pseudos: vec![p("ann")]
        }
    );
    let mut a = Acc::logged_in(addr, "a@example.org", "correct horse");
    assert_eq!(a.recv(), Frame::FriendAccepted { pseudo: p("dan") });
}

#[test]
fn messages_online_offline_and_to_strangers() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("hello bob"),
    });
    assert_eq!(a.recv(), Frame::MessageStored);
    assert_eq!(
        b.recv(),
        Frame::Message {
            pseudo: p("alice"),
            text: p("hello bob")
        }
    );
    // To a stranger, to nobody, to oneself: 153.
    assert_eq!(
        Acc::register(addr, "s@example.org", "stranger", "correct horse"),
        Frame::Registered
    );
    for to in ["stranger", "nobody", "alice"] {
        a.send(&Frame::SendMessage {
            pseudo: p(to),
            text: p("hi"),
        });
        assert_eq!(a.recv(), Frame::MessageFailed, "to {to}");
    }
    // bob goes offline; alice's messages wait, in order, each once.
    drop(b);
    offline(&srv, "bob");
    for i in 0..5 {
        a.send(&Frame::SendMessage {
            pseudo: p("bob"),
            text: format!("offline {i}"),
        });
    }
    for _ in 0..5 {
        assert_eq!(a.recv(), Frame::MessageStored);
    }
    let mut b = Acc::logged_in(addr, "bob@example.org", "battery staple");
    for i in 0..5 {
        assert_eq!(
            b.recv(),
            Frame::Message {
                pseudo: p("alice"),
                text: format!("offline {i}")
            }
        );
    }
    b.expect_silence();
    drop(b);
    offline(&srv, "bob");
    let mut b = Acc::logged_in(addr, "bob@example.org", "battery staple");
    b.expect_silence();
    // History: oldest first, both directions.
    b.send(&Frame::SendMessage {
        pseudo: p("alice"),
        text: p("back"),
    });
    assert_eq!(b.recv(), Frame::MessageStored);
    b.send(&Frame::History {
        pseudo: p("alice"),
        before: 0,
    });
    let Frame::HistoryPage { pseudo, entries } = b.recv() else {
        panic!("161")
    };
    assert_eq!(pseudo, "alice");
    let texts: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "hello bob",
            "offline 0",
            "offline 1",
            "offline 2",
            "offline 3",
            "offline 4",
            "back"
        ]
    );
}

/// A 152 promises the row is committed. When the commit fails (forced
/// through the store's test hook) the sender hears 153 and never 152, the
/// recipient hears nothing, and the history holds nothing.
/// A recipient that has already closed its connection, before the server's
/// reader for it saw the end, is offline for delivery: a message sent in that
/// window is stored and comes at its next login, once, instead of being
/// queued to a dead socket and marked delivered. Bob's reader is held in the
/// back-pressure pause (a queue of replies he does not read) while his FIN
/// waits behind it.
#[test]
fn a_message_to_a_member_who_just_closed_waits_for_the_next_login() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    cfg.db_path = Path::new(":memory:").to_path_buf();
    cfg.outbound_limit = 512 * 1024;
    // Long enough that only Bob's reset, never the pause's own limit, ends it.
    cfg.write_timeout_ms = 60_000;
    let srv = Server::start(cfg).expect("server starts");
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    // A full history page of long texts: each History answer is ~100 KB.
    let long = "x".repeat(2000);
    for _ in 0..HISTORY_PAGE {
        a.send(&Frame::SendMessage {
            pseudo: p("bob"),
            text: long.clone(),
        });
        assert_eq!(a.recv(), Frame::MessageStored);
        assert!(matches!(b.recv(), Frame::Message { .. }));
    }
    drop(b);
    offline(&srv, "bob");
    // Bob again, with a small receive buffer so that his answers stay queued
    // in the server.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut b = Acc::new(sock.into());
    b.send(&Frame::Hello);
    assert_eq!(b.recv(), Frame::HelloAck);
    b.send(&Frame::Login {
        email: p("bob@example.org"),
        password: p("battery staple"),
    });
    assert!(matches!(b.recv(), Frame::LoginOk { .. }));
    // ~400 KB of answers Bob does not read (over half the queue's bound, under
    // all of it), then a text to Alice: once she has it, the answers before
    // it are queued.
    let mut burst = Vec::new();
    for _ in 0..4 {
        burst.extend(
            Frame::History {
                pseudo: p("alice"),
                before: 0,
            }
            .to_bytes(),
        );
    }
    burst.extend(
        Frame::SendMessage {
            pseudo: p("alice"),
            text: p("sync"),
        }
        .to_bytes(),
    );
    b.s.write_all(&burst).unwrap();
    assert_eq!(
        a.recv(),
        Frame::Message {
            pseudo: p("bob"),
            text: p("sync")
        }
    );
    // One more frame: after it the reader pauses for the queue before it
    // reads again, so it cannot see the end that follows.
    b.send(&Frame::ListFriends);
    b.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(srv.hub().online("bob").is_some());
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("offline 0"),
    });
    assert_eq!(a.recv(), Frame::MessageStored);
    // The old code delivered it live, to a connection nobody reads any more.
    assert!(
        srv.hub().online("bob").is_some(),
        "the reader was not held: the test proves nothing"
    );
    drop(b);
    offline(&srv, "bob");
    let mut b = Acc::logged_in(addr, "bob@example.org", "battery staple");
    assert_eq!(
        b.recv(),
        Frame::Message {
            pseudo: p("alice"),
            text: p("offline 0")
        }
    );
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("online 1"),
    });
    assert_eq!(a.recv(), Frame::MessageStored);
    // Exactly once: the next thing Bob gets is the live one.
    assert_eq!(
        b.recv(),
        Frame::Message {
            pseudo: p("alice"),
            text: p("online 1")
        }
    );
}

#[test]
fn a_failed_commit_answers_153_not_152() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    // A round trip each, so the logins' own store work is done.
    for x in [&mut a, &mut b] {
        x.send(&Frame::ListFriends);
        assert!(matches!(x.recv(), Frame::Friends { .. }));
    }
    srv.store().fail_commits(true);
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("lost"),
    });
    assert_eq!(a.recv(), Frame::MessageFailed);
    a.expect_silence();
    b.expect_silence();
    srv.store().fail_commits(false);
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("kept"),
    });
    assert_eq!(a.recv(), Frame::MessageStored);
    assert_eq!(
        b.recv(),
        Frame::Message {
            pseudo: p("alice"),
            text: p("kept")
        }
    );
    assert_eq!(fetch_history(&mut a, "bob"), vec!["kept"]);
}

#[test]
fn history_pages_are_capped_and_chain() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, _b) = friends(addr);
    let total = HISTORY_PAGE + 20;
    for i in 0..total {
        a.send(&Frame::SendMessage {
            pseudo: p("bob"),
            text: format!("m{i}"),
        });
    }
    for _ in 0..total {
        assert_eq!(a.recv(), Frame::MessageStored);
    }
    let all = fetch_history(&mut a, "bob");
    assert_eq!(all, (0..total).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

/// bob (of `friends`) logs in after a while away: he hears alice's
/// `offline` message, still has her as a friend, and their history is
/// `history`.
fn bob_comes_back(addr: SocketAddr, offline: &str, history: &[&str]) -> Acc {
    let mut b = Acc::logged_in(addr, "bob@example.org", "battery staple");
    assert_eq!(
        b.recv(),
        Frame::Message {
            pseudo: p("alice"),
            text: p(offline)
        }
    );
    b.send(&Frame::ListFriends);
    assert_eq!(
        b.recv(),
        Frame::Friends {
            pseudos: vec![p("alice")]
        }
    );
    assert_eq!(fetch_history(&mut b, "alice"), history);
    b
}

/// Every message with `pseudo`, following the paging rule to the start.
fn fetch_history(a: &mut Acc, pseudo: &str) -> Vec<String> {
    let mut before = 0;
    let mut pages: Vec<Vec<String>> = Vec::new();
    loop {
        a.send(&Frame::History {
            pseudo: p(pseudo),
            before,
        });
        let Frame::HistoryPage { entries, .. } = a.recv() else {
            panic!("161")
        };
        assert!(entries.len() <= HISTORY_PAGE);
        if entries.is_empty() {
            break;
        }
        before = entries[0].id;
        assert!(
            entries.windows(2).all(|w| w[0].id < w[1].id),
            "oldest first"
        );
        let short = entries.len() < HISTORY_PAGE;
        pages.push(entries.into_iter().map(|e| e.text).collect());
        if short {
            break;
        }
    }
    pages.into_iter().rev().flatten().collect()
}

#[test]
fn calls_ring_answer_refuse_and_hang_up() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    // Empty address: the server fills in what it sees (127.0.0.1 here).
    a.send(&Frame::Call {
        pseudo: p("bob"),
        addr: p(""),
        port: 40000,
    });
    assert_eq!(
        b.recv(),
        Frame::IncomingCall {
            pseudo: p("alice"),
            addr: p("127.0.0.1"),
            port: 40000
        }
    );
    b.send(&Frame::AnswerCall {
        pseudo: p("alice"),
        addr: p(""),
        port: 40001,
    });
    assert_eq!(
        a.recv(),
        Frame::CallAccepted {
            pseudo: p("bob"),
            addr: p("127.0.0.1"),
            port: 40001
        }
    );
    a.send(&Frame::Hangup { pseudo: p("bob") });
    assert_eq!(b.recv(), Frame::HungUp { pseudo: p("alice") });
    // Refused.
    a.send(&Frame::Call {
        pseudo: p("bob"),
        addr: p("10.1.2.3"),
        port: 5,
    });
    assert_eq!(
        b.recv(),
        Frame::IncomingCall {
            pseudo: p("alice"),
            addr: p("10.1.2.3"),
            port: 5
        }
    );
    b.send(&Frame::DeclineCall { pseudo: p("alice") });
    assert_eq!(a.recv(), Frame::CallFailed { pseudo: p("bob") });
    // An answer to a call that is not ringing does nothing.
    b.send(&Frame::AnswerCall {
        pseudo: p("alice"),
        addr: p(""),
        port: 1,
    });
    a.expect_silence();
    // Not a friend, and offline: 142.
    assert_eq!(
        Acc::register(addr, "s@example.org", "stranger", "correct horse"),
        Frame::Registered
    );
    a.send(&Frame::Call {
        pseudo: p("stranger"),
        addr: p(""),
        port: 1,
    });
    assert_eq!(
        a.recv(),
        Frame::CallFailed {
            pseudo: p("stranger")
        }
    );
    // A call in progress ends with 147 when one side disconnects.
    a.send(&Frame::Call {
        pseudo: p("bob"),
        addr: p(""),
        port: 2,
    });
    assert!(matches!(b.recv(), Frame::IncomingCall { .. }));
    b.send(&Frame::AnswerCall {
        pseudo: p("alice"),
        addr: p(""),
        port: 3,
    });
    assert!(matches!(a.recv(), Frame::CallAccepted { .. }));
    drop(b);
    assert_eq!(a.recv(), Frame::HungUp { pseudo: p("bob") });
    a.send(&Frame::Call {
        pseudo: p("bob"),
        addr: p(""),
        port: 1,
    });
    assert_eq!(a.recv(), Frame::CallFailed { pseudo: p("bob") });
}

#[test]
fn bad_frames_close_only_the_offender() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "bad magic",
            vec![0xde, 0xad, 0xbe, 0xef, 0, 200, 0, 0, 0, 0],
            false,
        ),
        (
            "oversize length",
            vec![0x43, 0x57, 0x41, 0x43, 0, 150, 0x7f, 0xff, 0xff, 0xff],
            true,
        ),
        (
            "unknown instruction",
            vec![0x43, 0x57, 0x41, 0x43, 0, 99, 0, 0, 0, 0],
            true,
        ),
        (
            "server-only instruction",
            Frame::MessageStored.to_bytes(),
            true,
        ),
        (
            "login before hello",
            Frame::Login {
                email: p("a@b.c"),
                password: p("x"),
            }
            .to_bytes(),
            false,
        ),
        (
            "trailing payload",
            vec![0x43, 0x57, 0x41, 0x43, 0, 170, 0, 0, 0, 1, 0],
            true,
        ),
    ];
    for (what, bytes, hello_first) in cases {
        let mut m = if hello_first {
            Acc::connect(addr)
        } else {
            Acc::raw(TcpStream::connect(addr).unwrap())
        };
        m.s.write_all(&bytes).unwrap();
        m.expect_closed();
        a.send(&Frame::SendMessage {
            pseudo: p("bob"),
            text: p(what),
        });
        assert_eq!(a.recv(), Frame::MessageStored, "{what}");
        assert_eq!(
            b.recv(),
            Frame::Message {
                pseudo: p("alice"),
                text: p(what)
            },
            "{what}"
        );
    }
}

#[test]
fn everything_survives_a_restart() {
    let dir = temp_dir("restart");
    let db = dir.join("chinwag.db");
    {
        let srv = server_on(&db);
        let addr = srv.accounts_addr();
        let (mut a, b) = friends(addr);
        a.send(&Frame::SendMessage {
            pseudo: p("bob"),
            text: p("while online"),
        });
        assert_eq!(a.recv(), Frame::MessageStored);
        drop(b);
        offline(&srv, "bob");
        a.send(&Frame::SendMessage {
            pseudo: p("bob"),
            text: p("while offline"),
        });
        assert_eq!(a.recv(), Frame::MessageStored);
        srv.shutdown();
    }
    let srv = server_on(&db);
    let addr = srv.accounts_addr();
    bob_comes_back(addr, "while offline", &["while online", "while offline"]);
    assert_eq!(
        Acc::register(addr, "alice@example.org", "alice9", "correct horse"),
        Frame::EmailTaken
    );
    drop(srv);
    std::fs::remove_dir_all(&dir).ok();
}

/// Where a spawned chinwagd keeps its store: the flag and its value.
#[derive(Clone, Copy)]
enum StoreFlag<'a> {
    Db(&'a Path),
    Url(&'a str),
}

/// A real chinwagd on `store`, every listener on port 0 (restarts get new
/// ports), killed if the test ends early. Its login deadline is a minute
/// (`common::LOGIN_TIMEOUT_MS`: not what these tests check), and it has no
/// admin socket (with a store URL it would be `chinwag.db.sock` in the
/// working directory, shared with any other such process).
fn spawn_chinwagd(store: StoreFlag) -> common::Reaped {
    let mut cmd = Proc::new(env!("CARGO_BIN_EXE_chinwagd"));
    cmd.args(common::ALL_PORTS_FREE)
        .args(["--login-timeout-ms", &common::LOGIN_TIMEOUT_MS.to_string()])
        .args(["--admin-socket", "off"]);
    match store {
        StoreFlag::Db(db) => cmd.arg("--db").arg(db),
        StoreFlag::Url(url) => cmd.args(["--store-url", url]),
    };
    common::Reaped(common::Chinwagd::spawn(&mut cmd))
}

/// Messages flow while chinwagd is killed with SIGKILL at random moments
/// and restarted on the same store: every message that was acknowledged
/// (152) is in the history afterwards.
fn acknowledged_messages_survive_kill_9_on(store: StoreFlag) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut server = spawn_chinwagd(store);
    drop(friends(server.accounts));
    let mut acked: Vec<String> = Vec::new();
    let mut sent = 0usize;
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let mut a = Acc::logged_in(server.accounts, "alice@example.org", "correct horse");
        let kill_after = Duration::from_millis(rng.gen_range(50..400));
        let start = Instant::now();
        // Keep a few messages in flight so the kill lands between send and ack.
        let mut in_flight = std::collections::VecDeque::new();
        let mut killed = false;
        // Not before two acknowledgements this round, however slow the
        // machine: a round with none would check nothing.
        let acked_before = acked.len();
        loop {
            if !killed && start.elapsed() >= kill_after && acked.len() >= acked_before + 2 {
                server.child.kill().unwrap(); // SIGKILL
                server.child.wait().unwrap();
                killed = true;
            }
            if !killed && in_flight.len() < 8 {
                let text = format!("r{round} m{sent}");
                sent += 1;
                if a.s
                    .write_all(
                        &Frame::SendMessage {
                            pseudo: p("bob"),
                            text: text.clone(),
                        }
                        .to_bytes(),
                    )
                    .is_err()
                {
                    break;
                }
                in_flight.push_back(text);
                continue;
            }
            match a.try_recv(Duration::from_millis(if killed { 500 } else { 50 })) {
                Some(Frame::MessageStored) => {
                    acked.push(in_flight.pop_front().expect("ack for a sent message"))
                }
                Some(other) => panic!("unexpected {other:?}"),
                None if killed => break,
                None => {}
            }
        }
        server = spawn_chinwagd(store);
    }
    let mut b = Acc::logged_in(server.accounts, "bob@example.org", "battery staple");
    // Drain live deliveries (offline messages) so history replies are next.
    while b.try_recv(Duration::from_millis(300)).is_some() {}
    let history = fetch_history(&mut b, "alice");
    for m in &acked {
        assert!(history.contains(m), "acknowledged {m:?} lost after kill -9");
    }
    assert!(
        acked.len() > ROUNDS,
        "too few acknowledgements ({}) to mean anything",
        acked.len()
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    let dir = temp_dir("kill9");
    let db = dir.join("chinwag.db");
    acknowledged_messages_survive_kill_9_on(StoreFlag::Db(&db));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn acknowledged_messages_survive_kill_9_on_postgres() {
    let Some(pg) = testpg::server() else { return };
    let (url, _) = pg.fresh_url();
    acknowledged_messages_survive_kill_9_on(StoreFlag::Url(&url));
}

/// The accounts dialect end to end with its store on PostgreSQL:
/// registration, password login, friends, a message acknowledged (152)
/// and delivered, one stored for an offline friend, history; then a second
/// chinwagd on the same database serves all of it.
#[test]
fn accounts_work_end_to_end_with_the_store_on_postgres() {
    let Some(pg) = testpg::server() else { return };
    let (url, schema) = pg.fresh_url();
    let srv = pg_server(&url);
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    assert_eq!(
        Acc::register(addr, "ALICE@example.org", "alice2", "correct horse"),
        Frame::EmailTaken
    );
    let (_, refused) = Acc::login(addr, "alice@example.org", "wrong horse");
    assert_eq!(refused, Frame::LoginFailed);
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("hello over postgres"),
    });
    assert_eq!(a.recv(), Frame::MessageStored);
    assert_eq!(
        b.recv(),
        Frame::Message {
            pseudo: p("alice"),
            text: p("hello over postgres")
        }
    );
    drop(b);
    offline(&srv, "bob");
    a.send(&Frame::SendMessage {
        pseudo: p("bob"),
        text: p("while you were out"),
    });
    assert_eq!(a.recv(), Frame::MessageStored);
    assert_eq!(
        fetch_history(&mut a, "bob"),
        vec!["hello over postgres", "while you were out"]
    );
    // The rows are PostgreSQL's, committed.
    let stored: i64 = pg
        .session(&schema)
        .query_one("SELECT count(*) FROM messages", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);
    // Another chinwagd on the same database: bob's offline message, his
    // friends and the history are there.
    let other = pg_server(&url);
    bob_comes_back(
        other.accounts_addr(),
        "while you were out",
        &["hello over postgres", "while you were out"],
    );
    drop(a);
    srv.shutdown();
    other.shutdown();
}

#[test]
fn a_ringing_call_ends_when_either_side_disconnects() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, mut b) = friends(addr);
    // The caller leaves while it rings: the callee hears 147.
    a.send(&Frame::Call {
        pseudo: p("bob"),
        addr: p(""),
        port: 7,
    });
    assert!(matches!(b.recv(), Frame::IncomingCall { .. }));
    drop(a);
    assert_eq!(b.recv(), Frame::HungUp { pseudo: p("alice") });
    // The callee leaves while it rings: the caller hears 142.
    let mut a = Acc::logged_in(addr, "alice@example.org", "correct horse");
    a.send(&Frame::Call {
        pseudo: p("bob"),
        addr: p(""),
        port: 8,
    });
    assert!(matches!(b.recv(), Frame::IncomingCall { .. }));
    drop(b);
    assert_eq!(a.recv(), Frame::CallFailed { pseudo: p("bob") });
}

#[test]
fn registrations_per_address_are_rate_limited() {
    let mut cfg = Config::ephemeral();
    cfg.registrations_per_minute = 3;
    let srv = Server::start(cfg).unwrap();
    let addr = srv.accounts_addr();
    for i in 0..3 {
        assert_eq!(
            Acc::register(
                addr,
                &format!("r{i}@example.org"),
                &format!("reg{i}"),
                "correct horse"
            ),
            Frame::Registered
        );
    }
    let r = Acc::register(addr, "r9@example.org", "reg9", "correct horse");
    assert!(
        matches!(&r, Frame::RegisterRefused { reason } if reason.contains("too many")),
        "{r:?}"
    );
}

#[test]
fn oversize_fields_close_the_connection() {
    let srv = mem_server();
    let addr = srv.accounts_addr();
    let (mut a, _b) = friends(addr);
    // Built by hand: the codec refuses to write fields past their limits.
    let frame = |code: u16, fields: &[&[u8]]| {
        let mut payload = Vec::new();
        for f in fields {
            payload.extend_from_slice(&(f.len() as u16).to_be_bytes());
            payload.extend_from_slice(f);
        }
        let mut v = chinwag_proto::accounts::MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(&payload);
        v
    };
    let (long_pseudo, long_text, long_email) = (vec![b'p'; 31], vec![b't'; 2049], vec![b'e'; 255]);
    // Before login.
    let mut m = Acc::connect(addr);
    m.send_bytes(&frame(110, &[&long_email, b"pw"]));
    m.expect_closed();
    // Logged in, each case on its own account.
    let cases: [(&str, Vec<u8>); 2] = [
        ("d1", frame(120, &[&long_pseudo])),
        ("d2", frame(150, &[b"bob", &long_text])),
    ];
    for (who, bytes) in cases {
        let email = format!("{who}@example.org");
        assert_eq!(
            Acc::register(addr, &email, who, "correct horse"),
            Frame::Registered
        );
        let mut n = Acc::logged_in(addr, &email, "correct horse");
        n.send_bytes(&bytes);
        n.expect_closed();
    }
    // Everyone else carries on.
    a.send(&Frame::ListFriends);
    assert_eq!(
        a.recv(),
        Frame::Friends {
            pseudos: vec![p("bob")]
        }
    );
}
