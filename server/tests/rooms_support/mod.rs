//! Shared by the rooms end-to-end tests (rooms.rs, rooms_seed.rs,
//! rooms_abuse.rs): a raw seed-003 client over UDP on loopback, checking
//! every byte through the proto codec, and a seeded lossy proxy. Every wait
//! is bounded.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{self as wire, Body, Message, Registration};
use chinwagd::{Config, Server};

/// How long a test waits for something that must happen: only a failing
/// test waits it out, so it is far longer than anything takes on a loaded
/// machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// Tests re-run in a network namespace of their own, shared with the
/// library's tests.
#[path = "../../../tests/common/netns.rs"]
#[allow(clippy::duplicate_mod)]
mod netns;
#[allow(unused_imports)]
pub use netns::in_own_netns;

/// Processes with time limits and this machine's speed now, shared with
/// the library's tests.
#[path = "../../../tests/common/tools.rs"]
#[allow(clippy::duplicate_mod)]
mod tools;
#[allow(unused_imports)]
pub use tools::stretch;

pub fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    f(&mut cfg);
    Server::start(cfg).expect("server starts")
}

pub struct Client {
    pub s: UdpSocket,
    pub server: SocketAddr,
    pub id: u8,
    pub seq: u16,
    /// Requests `ask` sent again for want of an answer.
    pub resends: usize,
}

impl Client {
    /// A client on `ip` (any loopback address), port chosen by the system.
    pub fn on(ip: IpAddr, server: SocketAddr) -> Client {
        let s = UdpSocket::bind((ip, 0)).expect("bind a loopback client");
        Client {
            s,
            server,
            id: 0,
            seq: 0,
            resends: 0,
        }
    }

    pub fn new(server: SocketAddr) -> Client {
        Client::on([127, 0, 0, 1].into(), server)
    }

    /// Registered, and confirmed (its id back to the server) as any
    /// seed-003 client does with its first request or keep-alive.
    pub fn register(server: SocketAddr, name: &str) -> Client {
        let mut c = Client::new(server);
        c.login(name);
        c.ask(Body::Connexion { name: None });
        c
    }

    /// Registered only: its id never sent back, so the server has not
    /// seen this address receive (docs/protocols/rooms.md caps what it
    /// sends there).
    pub fn unconfirmed(server: SocketAddr, name: &str) -> Client {
        let mut c = Client::new(server);
        c.login(name);
        c
    }

    pub fn login(&mut self, name: &str) {
        match self.ask(Body::Connexion {
            name: Some(name.into()),
        }) {
            Body::Registered {
                status: Registration::Accepted,
                user,
            } => self.id = user,
            other => panic!("register {name}: {other:?}"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.s.local_addr().unwrap()
    }

    pub fn send_raw(&self, b: &[u8]) {
        self.s.send_to(b, self.server).unwrap();
    }

    pub fn send(&self, m: &Message) {
        self.send_raw(&m.to_bytes());
    }

    pub fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send a request and wait for the answer with its NUM_SEQ, retrying
    /// every 100 ms as the seed asks; other messages are acknowledged.
    pub fn ask(&mut self, body: Body) -> Body {
        let seq = self.next_seq();
        let m = Message {
            user: self.id,
            seq,
            body,
        };
        let (answer, resent) = self.answer(seq, &m.to_bytes());
        self.resends += resent;
        answer
    }

    /// `bytes` as a request with NUM_SEQ `seq`; its answer.
    pub fn ask_bytes(&self, seq: u16, bytes: &[u8]) -> Body {
        self.answer(seq, bytes).0
    }

    /// The answer to `bytes` (sent again every 100 ms until it comes, for
    /// up to [`WAIT`]: 50 tries, 5 s, are little on a loaded machine),
    /// and how many times they were sent again.
    fn answer(&self, seq: u16, bytes: &[u8]) -> (Body, usize) {
        let give_up = Instant::now() + WAIT;
        let mut attempt = 0;
        while Instant::now() < give_up {
            self.send_raw(bytes);
            let deadline = Instant::now() + Duration::from_millis(100);
            while let Some(got) = self.recv_until(deadline) {
                if got.user == wire::SERVER && got.seq == seq && wire::is_answer(got.body.kind()) {
                    return (got.body, attempt);
                }
                self.ack(&got);
            }
            attempt += 1;
        }
        panic!("no answer to seq {seq} within {WAIT:?}");
    }

    pub fn recv_until(&self, deadline: Instant) -> Option<Message> {
        self.recv_raw_until(deadline)
            .map(|b| Message::decode(&b).expect("valid rooms datagram from the server"))
    }

    pub fn recv_raw_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 8192];
        let (n, _) = self.s.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    }

    /// Acknowledge what the server starts (texts, notices); invitations
    /// are answered explicitly.
    pub fn ack(&self, m: &Message) {
        let body = match m.body {
            Body::Text { .. } => Body::TextAck,
            Body::RoomClosed { .. } => Body::RoomClosedAck,
            _ => return,
        };
        self.send_raw(
            &Message {
                user: self.id,
                seq: m.seq,
                body,
            }
            .to_bytes(),
        );
    }

    /// The next message the server starts whose body `want` accepts,
    /// acknowledging everything on the way.
    pub fn expect(&self, what: &str, want: impl Fn(&Body) -> bool) -> Message {
        let deadline = Instant::now() + WAIT;
        while let Some(m) = self.recv_until(deadline) {
            self.ack(&m);
            if want(&m.body) {
                return m;
            }
        }
        panic!("no {what} within {WAIT:?}");
    }

    /// The next message the server starts, whatever it is, acknowledged.
    pub fn incoming(&self) -> Message {
        self.expect("message", |_| true)
    }

    pub fn silence(&self, wait: Duration) -> Option<Message> {
        self.recv_until(Instant::now() + wait)
    }
}

/// Receive texts on a thread of their own until `n` distinct ones came (or
/// `within` passed), as a receiver under loss does: acknowledge every copy
/// and keep each server NUM_SEQ once. Joins to the texts, in NUM_SEQ order,
/// and the copies seen again (the server's retransmissions).
pub fn collect_texts(x: Client, n: usize, within: Duration) -> JoinHandle<(Vec<String>, usize)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeMap::new();
        let mut copies = 0;
        let deadline = Instant::now() + within;
        while seen.len() < n && Instant::now() < deadline {
            if let Some(m) = x.recv_until(Instant::now() + Duration::from_millis(200)) {
                x.ack(&m);
                if let Body::Text { chat } = m.body {
                    if seen.insert(m.seq, chat).is_some() {
                        copies += 1;
                    }
                }
            }
        }
        (seen.into_values().collect(), copies)
    })
}

/// Counters of a [`LossyProxy`].
#[derive(Default)]
pub struct ProxyCounts {
    pub up_dropped: AtomicU64,
    pub down_dropped: AtomicU64,
    pub up_passed: AtomicU64,
    pub down_passed: AtomicU64,
}

/// The directions of a [`LossyProxy`]'s flows, as its seeds use them.
const UP: u64 = 0;
const DOWN: u64 = 1;

/// A UDP forwarder between clients and the server on 127.0.0.1 that drops
/// `loss_pct` % of the datagrams in each direction. Each client gets its
/// own upstream socket, so the server sees one address per client, and
/// each direction of each client its own generator, seeded from `seed` and
/// the client's rank (order of first datagram): a flow's n-th datagram
/// meets the same fate in every run, whatever the threads' timing. Stops
/// when dropped.
pub struct LossyProxy {
    front: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub counts: Arc<ProxyCounts>,
}

impl LossyProxy {
    pub fn start(server: SocketAddr, loss_pct: u32, seed: u64) -> LossyProxy {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(ProxyCounts::default());
        let rng_for = move |rank: u64, dir: u64| {
            StdRng::seed_from_u64(seed ^ (rank << 8 | dir).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        };
        // Whether the next datagram of a flow passes; counted either way.
        let passes = move |rng: &mut StdRng, dropped: &AtomicU64, passed: &AtomicU64| {
            let lost = rng.gen_range(0..100) < loss_pct;
            (if lost { dropped } else { passed }).fetch_add(1, Ordering::Relaxed);
            !lost
        };
        let (f2, s2, c2) = (front.clone(), stop.clone(), counts.clone());
        let main = std::thread::spawn(move || {
            let mut ups: HashMap<SocketAddr, (Arc<UdpSocket>, StdRng)> = HashMap::new();
            let mut backs = Vec::new();
            let mut buf = [0u8; 8192];
            while !s2.load(Ordering::Acquire) {
                let Ok((n, client)) = f2.recv_from(&mut buf) else {
                    continue;
                };
                let rank = ups.len() as u64;
                let (up, up_rng) = ups.entry(client).or_insert_with(|| {
                    let u = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                    u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let (u2, f3, s3, c3) = (u.clone(), f2.clone(), s2.clone(), c2.clone());
                    let mut down_rng = rng_for(rank, DOWN);
                    backs.push(std::thread::spawn(move || {
                        let mut b = [0u8; 8192];
                        while !s3.load(Ordering::Acquire) {
                            let Ok((m, _)) = u2.recv_from(&mut b) else {
                                continue;
                            };
                            if passes(&mut down_rng, &c3.down_dropped, &c3.down_passed) {
                                let _ = f3.send_to(&b[..m], client);
                            }
                        }
                    }));
                    (u, rng_for(rank, UP))
                });
                if passes(up_rng, &c2.up_dropped, &c2.up_passed) {
                    let _ = up.send_to(&buf[..n], server);
                }
            }
            for b in backs {
                let _ = b.join();
            }
        });
        LossyProxy {
            front,
            stop,
            threads: vec![main],
            counts,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `a` sends `n` texts ("m0", "m1", ...) to the public room while `b` and
/// `c` collect them (at most `within`); each receiver must get every text
/// exactly once. Returns the copies seen again (the server's
/// retransmissions), both receivers together.
pub fn texts_reach_both_once(
    a: &mut Client,
    b: Client,
    c: Client,
    n: usize,
    within: Duration,
) -> usize {
    let (tb, tc) = (collect_texts(b, n, within), collect_texts(c, n, within));
    for i in 0..n {
        assert_eq!(
            a.ask(Body::Text {
                chat: format!("m{i}")
            }),
            Body::TextAck
        );
    }
    let want: std::collections::BTreeSet<String> = (0..n).map(|i| format!("m{i}")).collect();
    let mut copies = 0;
    for (got, again) in [tb.join().unwrap(), tc.join().unwrap()] {
        assert_eq!(got.len(), n, "each text exactly once: {got:?}");
        assert_eq!(
            got.into_iter().collect::<std::collections::BTreeSet<_>>(),
            want
        );
        copies += again;
    }
    copies
}
