//! The rooms threads with a panic injected (the state's test-only trap):
//! the workers and the timer carry on with a repaired state, over real
//! UDP on 127.0.0.1.

use std::time::Duration;

use chinwag_proto::rooms::{is_answer, Registration, SERVER};

use super::*;
use crate::hub::HubConfig;

fn start() -> RoomsServer {
    let hub = Arc::new(Hub::new(HubConfig::default()));
    let at: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let registry = crate::net::Registry::new(100);
    RoomsServer::start(hub, registry, at, crate::Config::ephemeral().rooms(), 2).unwrap()
}

/// A raw seed-003 client that acknowledges nothing unless asked.
struct Raw {
    s: UdpSocket,
    to: SocketAddr,
    id: u8,
    seq: u16,
}

impl Raw {
    fn new(to: SocketAddr) -> Raw {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Raw {
            s,
            to,
            id: 0,
            seq: 0,
        }
    }

    fn recv(&self, within: Duration) -> Option<wire::Message> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.s.recv_from(&mut buf) {
                return Some(wire::Message::decode(&buf[..n]).unwrap());
            }
        }
        None
    }

    /// Send `body`, `tries` times 100 ms apart until answered.
    fn ask_tries(&mut self, body: wire::Body, tries: u32) -> Option<wire::Body> {
        self.seq += 1;
        let d = wire::Message {
            user: self.id,
            seq: self.seq,
            body,
        }
        .to_bytes();
        for _ in 0..tries {
            self.s.send_to(&d, self.to).unwrap();
            let deadline = Instant::now() + Duration::from_millis(100);
            while let Some(m) = self.recv(deadline.saturating_duration_since(Instant::now())) {
                if m.user == SERVER && m.seq == self.seq && is_answer(m.body.kind()) {
                    return Some(m.body);
                }
            }
        }
        None
    }

    fn ask(&mut self, body: wire::Body) -> wire::Body {
        self.ask_tries(body, 30).expect("an answer")
    }

    fn register(to: SocketAddr, name: &str) -> Raw {
        let mut c = Raw::new(to);
        match c.ask(wire::Body::Connexion {
            name: Some(name.into()),
        }) {
            wire::Body::Registered {
                status: Registration::Accepted,
                user,
            } => c.id = user,
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.ask(wire::Body::Connexion { name: None }),
            wire::Body::KeptAlive { ok: true }
        );
        c
    }
}

fn arm(srv: &RoomsServer, at: &'static str) {
    srv.ctx.state.lock().trap = Some(at);
}

fn recoveries(srv: &RoomsServer) -> u64 {
    srv.ctx.state.lock().counters().recoveries
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn create(name: &str) -> wire::Body {
    wire::Body::CreateRoom {
        mode: wire::Mode::Centralised,
        name: name.into(),
        max: 5,
    }
}

#[test]
fn a_worker_that_panics_carries_on_with_a_repaired_state_and_its_sender_dropped() {
    let srv = start();
    let addr = srv.addr();
    let mut a = Raw::register(addr, "al");
    let mut b = Raw::register(addr, "bo");
    let mut c = Raw::register(addr, "cy");
    // Two panics, half-way through taking out a client that registers
    // again from its address: more than the two workers could survive if
    // a panic killed its worker.
    for (n, x) in [&mut a, &mut b].into_iter().enumerate() {
        arm(&srv, "remove_user");
        let id = std::mem::replace(&mut x.id, 0);
        let again = wire::Body::Connexion {
            name: Some(format!("x{n}")),
        };
        assert_eq!(x.ask_tries(again, 1), None, "no answer");
        x.id = id;
        wait_for("the repair", || recoveries(&srv) == n as u64 + 1);
        assert_eq!(srv.ctx.state.lock().check(), Ok(()));
    }
    // Their senders are gone, their names free; the others are served.
    assert!(srv.ctx.hub.online("al").is_none() && srv.ctx.hub.online("bo").is_none());
    assert_eq!(
        a.ask(wire::Body::Connexion { name: None }),
        wire::Body::KeptAlive { ok: false }
    );
    assert_eq!(
        c.ask(wire::Body::ListUsers),
        wire::Body::UserList {
            names: vec!["cy".into()]
        }
    );
    assert!(matches!(
        c.ask(create("den")),
        wire::Body::CreateAnswer {
            status: wire::Creation::Created,
            ..
        }
    ));
    let again = Raw::register(addr, "al");
    assert_ne!(again.id, 0);
    assert_eq!(srv.ctx.state.lock().check(), Ok(()));
}

#[test]
fn the_timer_that_panics_carries_on() {
    let srv = start();
    let addr = srv.addr();
    arm(&srv, "tick");
    wait_for("the repair", || recoveries(&srv) == 1);
    // Retransmissions still run: a text to a client that never
    // acknowledges arrives again and again.
    let mut a = Raw::register(addr, "al");
    let b = Raw::register(addr, "bo");
    assert_eq!(
        a.ask(wire::Body::Text { chat: "hi".into() }),
        wire::Body::TextAck
    );
    let mut copies = 0;
    while let Some(m) = b.recv(Duration::from_millis(500)) {
        if matches!(m.body, wire::Body::Text { .. }) {
            copies += 1;
        }
        if copies >= 3 {
            break;
        }
    }
    assert!(copies >= 3, "{copies} copies: the timer stopped");
}

#[test]
fn the_socket_holds_a_full_rooms_burst_of_acknowledgements() {
    // A text to a room of 254 comes back as 253 acknowledgements at once,
    // several texts in flight make thousands: the socket must hold them
    // (the kernel's default, about 200 KiB, dropped most of such a burst).
    let srv = start();
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(RECV_BUFFER);
    let got = socket2::SockRef::from(&srv.ctx.sock)
        .recv_buffer_size()
        .unwrap();
    // Linux reports twice what was asked (its bookkeeping share).
    assert!(
        got >= 2 * RECV_BUFFER.min(rmem_max),
        "SO_RCVBUF is {got} bytes"
    );
    const { assert!(RECV_BUFFER >= 2 << 20) };
}
