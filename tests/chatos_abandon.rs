//! libchinwag gives up a private connection it accepted or asked for
//! (its end refused, its 30 s wait for the peer over, its thread not
//! started): it tells the server with CLOSE_CONNECTION, so the peer's side
//! is freed at once, not after its own time-out (docs/library.md).
//! The library through its Rust API, its peers as raw chatos sockets, and
//! an in-process chinwagd on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chinwag::{ChatosClient, ErrorKind, Event};
use chinwag_proto::chatos::{Command, Decoder};

const WAIT: Duration = Duration::from_secs(10);

/// A chatos user on a raw socket.
struct Raw {
    s: TcpStream,
    dec: Decoder,
}

impl Raw {
    fn login(addr: SocketAddr, name: &str) -> Raw {
        let mut r = Raw {
            s: TcpStream::connect(addr).unwrap(),
            dec: Decoder::new(),
        };
        r.send(Command::Login { login: name.into() });
        assert_eq!(r.recv(), Some(Command::LoginAccepted), "login {name}");
        r
    }

    fn send(&mut self, cmd: Command) {
        self.s.write_all(&cmd.to_bytes()).unwrap();
    }

    /// The next command within `WAIT`, or None (nothing came).
    fn recv(&mut self) -> Option<Command> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(cmd) = self.dec.next_command().unwrap() {
                return Some(cmd);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 512];
            match self.s.read(&mut buf) {
                Ok(0) => panic!("the server closed a chat connection"),
                Ok(n) => self.dec.push(&buf[..n]),
                Err(_) => return None,
            }
        }
    }
}

fn open_private(addr: SocketAddr, id: i64) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&Command::LoginPrivate { connect_id: id }.to_bytes())
        .unwrap();
    s
}

/// The server closes `s` without a byte within `WAIT`.
fn closed_without_a_byte(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut one = [0u8; 1];
    match s.read(&mut one) {
        Ok(0) => t.elapsed(),
        other => panic!("expected the end to be closed, got {other:?}"),
    }
}

fn wait_in_use(srv: &chinwagd::Server, n: usize) {
    let deadline = Instant::now() + WAIT;
    while srv.hub().relays_in_use() != n {
        assert!(
            Instant::now() < deadline,
            "{} in use",
            srv.hub().relays_in_use()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The library's events until `pick` takes one, within `WAIT`.
fn event<T>(c: &ChatosClient, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = c.next_event(Some(left)).expect("an event in time");
        if let Some(t) = pick(ev) {
            return t;
        }
    }
}

/// alice (libchinwag) asks bob (raw) for a private connection while the
/// server's one relay slot is taken by carol's end waiting for dave: the
/// server refuses alice's end (no slot), so her library gives up. It tells
/// the server, which cancels the id at once: bob learns it on his chat
/// connection (ACCEPT_CLOSE_CONNECTION), and his end, presented once the
/// slot is free, is closed at once instead of waiting a minute for alice.
#[test]
fn a_private_connection_the_library_gives_up_is_closed_for_the_peer_at_once() {
    let mut cfg = chinwagd::Config::ephemeral();
    cfg.max_relays = 1;
    assert!(cfg.connect_id_ttl_ms >= 60_000);
    let srv = chinwagd::Server::start(cfg).unwrap();
    let addr = srv.chatos_addr();

    // carol's end takes the only slot.
    let mut carol = Raw::login(addr, "carol");
    let mut dave = Raw::login(addr, "dave");
    carol.send(Command::RequestPrivate {
        requester: "carol".into(),
        target: "dave".into(),
    });
    assert!(matches!(dave.recv(), Some(Command::RequestPrivate { .. })));
    dave.send(Command::OkPrivate {
        requester: "carol".into(),
        target: "dave".into(),
    });
    let Some(Command::IdPrivate { connect_id: cd, .. }) = carol.recv() else {
        panic!("carol's id")
    };
    let _carol_end = open_private(addr, cd);
    wait_in_use(&srv, 1);

    let alice = ChatosClient::connect("127.0.0.1", addr.port()).unwrap();
    alice.login("alice", Some(WAIT)).unwrap();
    let mut bob = Raw::login(addr, "bob");
    alice.request_private("bob").unwrap();
    assert_eq!(
        bob.recv(),
        Some(Command::RequestPrivate {
            requester: "alice".into(),
            target: "bob".into()
        })
    );
    bob.send(Command::OkPrivate {
        requester: "alice".into(),
        target: "bob".into(),
    });
    let Some(Command::IdPrivate { connect_id: id, .. }) = bob.recv() else {
        panic!("bob's id")
    };
    // alice's end is refused: her library gives up (as before) ...
    let (code, failed_id) = event(&alice, |ev| match ev {
        Event::PrivateFailed {
            peer,
            connect_id,
            code,
            ..
        } => {
            assert_eq!(peer, "bob");
            Some((code, connect_id))
        }
        Event::PrivateEstablished { .. } => panic!("no slot: not established"),
        _ => None,
    });
    assert_eq!((code, failed_id), (ErrorKind::Closed, id));
    // ... and tells the server, which confirms to both.
    let told = Instant::now();
    assert_eq!(
        bob.recv(),
        Some(Command::AcceptCloseConnection {
            login: "alice".into()
        }),
        "bob is told at once that alice closed the id"
    );
    eprintln!(
        "bob told {:?} after alice's failure was read",
        told.elapsed()
    );
    let peer = event(&alice, |ev| match ev {
        Event::PrivateClosed { peer } => Some(peer),
        _ => None,
    });
    assert_eq!(peer, "bob");
    // The slot comes back (carol gives up on dave); bob's end, coming
    // now, is closed at once: the id is gone, it waits for nobody.
    carol.send(Command::CloseConnection {
        connect_id: cd,
        requester: "carol".into(),
        target: "dave".into(),
    });
    wait_in_use(&srv, 0);
    let mut pb = open_private(addr, id);
    let took = closed_without_a_byte(&mut pb);
    assert!(took < Duration::from_secs(5), "{took:?}");
    wait_in_use(&srv, 0);
}
