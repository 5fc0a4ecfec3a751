//! End-to-end tests of the rooms dialect (seed 003) over UDP on 127.0.0.1:
//! registration, rooms, invitations, texts with acknowledgement, the replay
//! of retransmitted requests, server retransmission, keep-alive expiry.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{self as wire, Access, Body, Creation, Message, Mode, Registration};
use chinwagd::{Config, Server};

fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    f(&mut cfg);
    Server::start(cfg).expect("server starts")
}

struct Client {
    s: UdpSocket,
    server: SocketAddr,
    id: u8,
    seq: u16,
    /// Requests sent again for want of an answer.
    resends: usize,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        Client {
            s,
            server,
            id: 0,
            seq: 0,
            resends: 0,
        }
    }

    fn register(server: SocketAddr, name: &str) -> Client {
        let mut c = Client::new(server);
        match c.ask(Body::Connexion {
            name: Some(name.into()),
        }) {
            Body::Registered {
                status: Registration::Accepted,
                user,
            } => c.id = user,
            other => panic!("register {name}: {other:?}"),
        }
        c
    }

    fn send_raw(&self, m: &Message) {
        self.s.send_to(&m.to_bytes(), self.server).unwrap();
    }

    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send a request and wait for the answer with its NUM_SEQ, retrying
    /// every 100 ms as the seed asks; other messages are acknowledged and
    /// kept out of the way.
    fn ask(&mut self, body: Body) -> Body {
        let seq = self.next_seq();
        let m = Message {
            user: self.id,
            seq,
            body,
        };
        for attempt in 0..20 {
            if attempt > 0 {
                self.resends += 1;
            }
            self.send_raw(&m);
            let deadline = Instant::now() + Duration::from_millis(100);
            while let Some(got) = self.recv_until(deadline) {
                if got.user == wire::SERVER && got.seq == seq {
                    return got.body;
                }
            }
        }
        panic!("no answer to {m:?}");
    }

    fn recv_until(&self, deadline: Instant) -> Option<Message> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 8192];
        let (n, _) = self.s.recv_from(&mut buf).ok()?;
        Some(Message::decode(&buf[..n]).expect("valid rooms datagram from the server"))
    }

    /// The next message the server starts (not an answer), acknowledged.
    fn incoming(&self) -> Message {
        let m = self
            .recv_until(Instant::now() + Duration::from_secs(5))
            .expect("a message");
        self.ack(&m);
        m
    }

    fn ack(&self, m: &Message) {
        let body = match m.body {
            Body::Text { .. } => Body::TextAck,
            Body::Invitation { .. } => return, // answered explicitly
            _ => return,
        };
        self.send_raw(&Message {
            user: self.id,
            seq: m.seq,
            body,
        });
    }

    fn silence(&self, wait: Duration) -> Option<Message> {
        self.recv_until(Instant::now() + wait)
    }
}

#[test]
fn registration_answers() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let a = Client::register(addr, "alice");
    assert!((1..=254).contains(&a.id));
    let mut b = Client::new(addr);
    assert!(matches!(
        b.ask(Body::Connexion {
            name: Some("alice".into())
        }),
        Body::Registered {
            status: Registration::NameTaken,
            ..
        }
    ));
    assert!(matches!(
        b.ask(Body::Connexion {
            name: Some("eleven_char".into())
        }),
        Body::Registered {
            status: Registration::InvalidName,
            ..
        }
    ));
    // The name space is shared: a chatos user's name is taken here too.
    assert!(srv.hub().online("alice").is_some());
    // Keep-alive: same id, STATUT_CONNEXION success.
    let mut a = a;
    assert_eq!(
        a.ask(Body::Connexion { name: None }),
        Body::KeptAlive { ok: true }
    );
    // Disconnect frees the name.
    assert_eq!(a.ask(Body::Disconnect), Body::DisconnectAnswer { ok: true });
    assert!(srv.hub().online("alice").is_none());
    let c = Client::register(addr, "alice");
    assert!(c.id > 0);
}

#[test]
fn public_room_texts_are_forwarded_and_acknowledged() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let b = Client::register(addr, "bob");
    let c = Client::register(addr, "carol");
    assert_eq!(
        a.ask(Body::Text {
            chat: "salut".into()
        }),
        Body::TextAck
    );
    for x in [&b, &c] {
        let m = x.incoming();
        assert_eq!(
            m.body,
            Body::Text {
                chat: "salut".into()
            }
        );
        assert_eq!(m.user, a.id, "the author's id is in the header");
    }
    let mut names = match a.ask(Body::ListClients {
        room: String::new(),
    }) {
        Body::ClientList { names } => names,
        other => panic!("{other:?}"),
    };
    names.sort();
    assert_eq!(names, vec!["alice", "bob", "carol"]);
}

#[test]
fn a_retransmitted_request_is_answered_again_but_done_once() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let a = Client::register(addr, "alice");
    let b = Client::register(addr, "bob");
    let m = Message {
        user: a.id,
        seq: 77,
        body: Body::Text {
            chat: "once".into(),
        },
    };
    a.send_raw(&m);
    a.send_raw(&m); // as if the first answer was lost
    let mut answers = 0;
    while let Some(got) = a.silence(Duration::from_millis(300)) {
        assert_eq!((got.seq, got.body), (77, Body::TextAck));
        answers += 1;
    }
    assert_eq!(answers, 2);
    let first = b.incoming();
    assert_eq!(
        first.body,
        Body::Text {
            chat: "once".into()
        }
    );
    // bob may see retransmissions of the one forward (same NUM_SEQ) until
    // his acknowledgement lands, but never a second forward.
    while let Some(m) = b.silence(Duration::from_millis(300)) {
        assert_eq!(m.seq, first.seq, "forwarded twice: {m:?}");
        b.ack(&m);
    }
}

#[test]
fn the_server_retransmits_until_acknowledged_then_gives_up() {
    // M is the server's setting (default 10); this test sets 5.
    let srv = server_with(|c| c.rooms_tries = 5);
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let mut b = Client::register(addr, "bob");
    // bob shows it receives (its id back): retransmissions to an address
    // that has not are capped by what it sent (docs/protocols/rooms.md).
    b.ask(Body::Connexion { name: None });
    assert_eq!(
        a.ask(Body::Text {
            chat: "are you there".into()
        }),
        Body::TextAck
    );
    // bob never acknowledges: the same message comes M = 5 times, 100 ms apart.
    let mut copies = Vec::new();
    while let Some(m) = b.silence(Duration::from_millis(400)) {
        copies.push(m);
    }
    assert_eq!(copies.len(), 5, "{copies:?}");
    assert!(copies.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn private_rooms_create_list_access_change_leave() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let mut b = Client::register(addr, "bob");
    let mut c = Client::register(addr, "carol");
    assert_eq!(
        a.ask(Body::CreateRoom {
            mode: Mode::Centralised,
            name: "salon".into(),
            max: 1
        }),
        Body::CreateAnswer {
            status: Creation::MaxTooSmall,
            room: 0
        }
    );
    assert_eq!(
        a.ask(Body::CreateRoom {
            mode: Mode::Centralised,
            name: "".into(),
            max: 3
        }),
        Body::CreateAnswer {
            status: Creation::BadName,
            room: 0
        }
    );
    let Body::CreateAnswer {
        status: Creation::Created,
        room,
    } = a.ask(Body::CreateRoom {
        mode: Mode::Centralised,
        name: "salon".into(),
        max: 2,
    })
    else {
        panic!("create")
    };
    assert!(room >= 1);
    assert_eq!(
        b.ask(Body::CreateRoom {
            mode: Mode::Centralised,
            name: "salon".into(),
            max: 2
        }),
        Body::CreateAnswer {
            status: Creation::NameExists,
            room: 0
        }
    );
    match b.ask(Body::ListRooms) {
        Body::RoomList { rooms } => {
            assert_eq!(rooms.len(), 1);
            assert_eq!((rooms[0].name.as_str(), rooms[0].clients), ("salon", 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.ask(Body::AccessRoom {
            name: "nowhere".into()
        }),
        Body::AccessAnswer {
            mode: Mode::Centralised,
            status: Access::NoSuchRoom,
            peers: vec![]
        }
    );
    assert_eq!(
        b.ask(Body::AccessRoom {
            name: "salon".into()
        }),
        Body::AccessAnswer {
            mode: Mode::Centralised,
            status: Access::Granted,
            peers: vec![]
        }
    );
    // Full at two.
    assert_eq!(
        c.ask(Body::ChangeRoom {
            name: "salon".into()
        }),
        Body::ChangeAnswer {
            mode: Mode::Centralised,
            status: Access::Full,
            peers: vec![]
        }
    );
    // Texts stay in the room: bob hears alice, carol (public) does not.
    assert_eq!(
        a.ask(Body::Text {
            chat: "entre nous".into()
        }),
        Body::TextAck
    );
    assert_eq!(
        b.incoming().body,
        Body::Text {
            chat: "entre nous".into()
        }
    );
    assert!(c.silence(Duration::from_millis(300)).is_none());
    assert_eq!(a.ask(Body::Leave), Body::LeaveAnswer { ok: true });
    assert_eq!(a.ask(Body::Leave), Body::LeaveAnswer { ok: false });
    // bob is left alone: the room closes and bob is back in the public
    // room (seed 003 §2.2), so there is nothing for bob to leave.
    assert_eq!(b.ask(Body::Leave), Body::LeaveAnswer { ok: false });
    assert_eq!(c.ask(Body::ListRooms), Body::RoomList { rooms: vec![] });
}

#[test]
fn decentralised_rooms_give_the_members_addresses() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let mut b = Client::register(addr, "bob");
    assert!(matches!(
        a.ask(Body::CreateRoom {
            mode: Mode::Decentralised,
            name: "p2p".into(),
            max: 5
        }),
        Body::CreateAnswer {
            status: Creation::Created,
            ..
        }
    ));
    let Body::AccessAnswer {
        mode: Mode::Decentralised,
        status: Access::Granted,
        peers,
    } = b.ask(Body::AccessRoom { name: "p2p".into() })
    else {
        panic!("access")
    };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].name, "alice");
    assert_eq!(
        SocketAddr::from((peers[0].ip, peers[0].port)),
        a.s.local_addr().unwrap()
    );
}

#[test]
fn invitations_move_the_invitee_when_accepted() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let mut b = Client::register(addr, "bob");
    assert!(matches!(
        a.ask(Body::CreateRoom {
            mode: Mode::Centralised,
            name: "club".into(),
            max: 3
        }),
        Body::CreateAnswer {
            status: Creation::Created,
            ..
        }
    ));
    assert_eq!(a.ask(Body::Invite { user: "bob".into() }), Body::InviteAck);
    let inv = b.incoming();
    assert_eq!(
        inv.body,
        Body::Invitation {
            from: "alice".into(),
            mode: Mode::Centralised,
            room: "club".into()
        }
    );
    b.send_raw(&Message {
        user: b.id,
        seq: inv.seq,
        body: Body::InvitationAnswer { accept: true },
    });
    // Accepted: bob is now in club, and hears alice there.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Body::ClientList { names } = b.ask(Body::ListClients {
            room: "club".into(),
        }) {
            if names.len() == 2 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "bob never joined");
    }
    assert_eq!(
        a.ask(Body::Text {
            chat: "bienvenue".into()
        }),
        Body::TextAck
    );
    assert_eq!(
        b.incoming().body,
        Body::Text {
            chat: "bienvenue".into()
        }
    );
}

#[test]
fn lies_and_garbage_are_dropped() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let b = Client::register(addr, "bob");
    // bob's socket claims alice's id: dropped, nothing forwarded.
    b.send_raw(&Message {
        user: a.id,
        seq: 5,
        body: Body::Text {
            chat: "je suis alice".into(),
        },
    });
    // Garbage of every size.
    for n in [0usize, 1, 3, 4, 5, 100] {
        b.s.send_to(&vec![0xf9; n], addr).unwrap();
    }
    assert!(b.silence(Duration::from_millis(300)).is_none());
    assert!(a.silence(Duration::from_millis(100)).is_none());
    // Everyone still served.
    assert_eq!(
        a.ask(Body::Connexion { name: None }),
        Body::KeptAlive { ok: true }
    );
}

#[test]
fn silent_clients_are_dropped() {
    let srv = server_with(|c| c.rooms_idle_timeout_ms = 300);
    let addr = srv.rooms_addr();
    let _a = Client::register(addr, "alice");
    assert!(srv.hub().online("alice").is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.hub().online("alice").is_some() {
        assert!(Instant::now() < deadline, "silent client never dropped");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A UDP forwarder between clients and the server that drops a share of the
/// datagrams in each direction. Each client gets its own upstream socket, so
/// the server sees one address per client, and each direction of each
/// client its own generator, seeded from `seed` and the client's rank
/// (order of first datagram): a flow's n-th datagram meets the same fate in
/// every run, whatever the threads' timing.
struct LossyProxy {
    front: std::sync::Arc<UdpSocket>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Datagrams dropped towards the server and towards the clients.
    dropped: std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const UP: usize = 0;
const DOWN: usize = 1;

impl LossyProxy {
    fn start(server: SocketAddr, loss_pct: u32, seed: u64) -> LossyProxy {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let rng_for = move |rank: u64, dir: usize| {
            StdRng::seed_from_u64(
                seed ^ (rank << 8 | dir as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )
        };
        let lose = move |rng: &mut StdRng, dropped: &[AtomicUsize; 2], dir: usize| {
            let lost = rng.gen_range(0..100) < loss_pct;
            if lost {
                dropped[dir].fetch_add(1, Ordering::Relaxed);
            }
            lost
        };
        let (f2, s2, d2) = (front.clone(), stop.clone(), dropped.clone());
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
                    let (u2, f3, s3, d3) = (u.clone(), f2.clone(), s2.clone(), d2.clone());
                    let mut down_rng = rng_for(rank, DOWN);
                    backs.push(std::thread::spawn(move || {
                        let mut b = [0u8; 8192];
                        while !s3.load(Ordering::Acquire) {
                            let Ok((m, _)) = u2.recv_from(&mut b) else {
                                continue;
                            };
                            if !lose(&mut down_rng, &d3, DOWN) {
                                let _ = f3.send_to(&b[..m], client);
                            }
                        }
                    }));
                    (u, rng_for(rank, UP))
                });
                if !lose(up_rng, &d2, UP) {
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
            dropped,
            threads: vec![main],
        }
    }

    fn addr(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }

    fn dropped(&self, dir: usize) -> usize {
        self.dropped[dir].load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn texts_arrive_exactly_once_through_ten_percent_loss() {
    let srv = server_with(|_| {});
    let proxy = LossyProxy::start(srv.rooms_addr(), 10, 0x1055);
    let mut a = Client::register(proxy.addr(), "alice");
    let b = Client::register(proxy.addr(), "bob");
    let c = Client::register(proxy.addr(), "carol");
    const N: usize = 30;
    // Receivers acknowledge every copy and keep each server NUM_SEQ once;
    // copies after the first are the server's retransmissions.
    // Both receivers are reading before alice sends: a client not yet
    // confirmed (it has sent nothing with its id) gets at most 4 texts in
    // flight, so one whose thread starts late would miss some by design.
    let ready = std::sync::Arc::new(std::sync::Barrier::new(3));
    let collect = |x: Client| {
        let ready = ready.clone();
        std::thread::spawn(move || {
            ready.wait();
            let mut seen = std::collections::BTreeMap::new();
            let mut copies = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            while seen.len() < N && Instant::now() < deadline {
                if let Some(m) = x.recv_until(Instant::now() + Duration::from_millis(200)) {
                    x.ack(&m);
                    if let Body::Text { chat } = m.body {
                        if seen.insert(m.seq, chat).is_some() {
                            copies += 1;
                        }
                    }
                }
            }
            (seen.into_values().collect::<Vec<_>>(), copies)
        })
    };
    let (tb, tc) = (collect(b), collect(c));
    ready.wait();
    for i in 0..N {
        assert_eq!(
            a.ask(Body::Text {
                chat: format!("m{i}")
            }),
            Body::TextAck
        );
    }
    let want: std::collections::BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    let mut retransmitted = 0;
    for (got, copies) in [tb.join().unwrap(), tc.join().unwrap()] {
        assert_eq!(got.len(), N, "each text once: {got:?}");
        assert_eq!(
            got.into_iter().collect::<std::collections::BTreeSet<_>>(),
            want
        );
        retransmitted += copies;
    }
    let (up, down) = (proxy.dropped(UP), proxy.dropped(DOWN));
    eprintln!(
        "dropped {up} up, {down} down; alice resent {}, the server's retransmissions seen {retransmitted}",
        a.resends
    );
    // Otherwise the test proved nothing about recovery from loss.
    assert!(up > 0 && down > 0, "nothing lost: {up} up, {down} down");
    assert!(a.resends > 0, "alice never had to resend");
    assert!(retransmitted > 0, "the server never had to retransmit");
}

#[test]
fn a_late_invitation_answer_still_counts_and_rejoining_keeps_the_room() {
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let mut a = Client::register(addr, "alice");
    let mut b = Client::register(addr, "bob");
    assert!(matches!(
        a.ask(Body::CreateRoom {
            mode: Mode::Centralised,
            name: "solo".into(),
            max: 3
        }),
        Body::CreateAnswer {
            status: Creation::Created,
            ..
        }
    ));
    // Asking for the room one is alone in keeps it.
    assert!(matches!(
        a.ask(Body::AccessRoom {
            name: "solo".into()
        }),
        Body::AccessAnswer {
            status: Access::Granted,
            ..
        }
    ));
    assert!(matches!(a.ask(Body::ListRooms), Body::RoomList { rooms } if rooms.len() == 1));
    assert_eq!(a.ask(Body::Invite { user: "bob".into() }), Body::InviteAck);
    let inv = b.incoming();
    // Let all five retransmissions pass before answering.
    while b.silence(Duration::from_millis(300)).is_some() {}
    b.send_raw(&Message {
        user: b.id,
        seq: inv.seq,
        body: Body::InvitationAnswer { accept: true },
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Body::ClientList { names } = b.ask(Body::ListClients {
            room: "solo".into(),
        }) {
            if names.len() == 2 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the late answer was ignored");
    }
}
