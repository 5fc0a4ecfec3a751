//! The rooms dialect under abuse (issue 10), end to end over UDP on
//! 127.0.0.1: many clients that never acknowledge, forged registrations,
//! unauthenticated datagrams, per-address and per-client limits, delivery
//! at 20 % loss each way, and no log line above debug for per-datagram
//! noise. The two tests whose property is per IP address (a forger's
//! "victim", and "another address is not affected") need a second source
//! address: they run in a network namespace of their own, where
//! 127.0.0.2 is on a loopback nobody else shares.

mod rooms_support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{kind, Body, Message, Mode, Reason, Registration};
use chinwagd::front::rooms::state::{UNANSWERED_TEXTS, UNCONFIRMED_IN_FLIGHT, UNCONFIRMED_PER_IP};
use rooms_support::{
    in_own_netns, server_with, stretch, texts_reach_both_once, Client, LossyProxy,
};

/// Records at WARN or above from the rooms front-end, process-wide.
static LOUD: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl log::Log for Counting {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.level() <= log::Level::Warn && r.target().starts_with("chinwagd::front::rooms") {
            LOUD.fetch_add(1, Ordering::Relaxed);
            eprintln!("{} {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

static COUNTING: Counting = Counting;

fn count_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&COUNTING).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn forwarding_stays_fast_while_many_clients_never_acknowledge() {
    count_logs();
    let srv = server_with(|c| c.rooms_requests_per_second = 100_000);
    let addr = srv.rooms_addr();
    // 200 clients register, show they receive, then never read again.
    let silent: Vec<Client> = (0..200)
        .map(|i| Client::register(addr, &format!("s{i}")))
        .collect();
    // An honest pair in a room of its own, away from the flood.
    let mut honest = Client::register(addr, "honest");
    let mut other = Client::register(addr, "other");
    assert!(matches!(
        honest.ask(Body::CreateRoom {
            mode: Mode::Centralised,
            name: "quiet".into(),
            max: 2
        }),
        Body::CreateAnswer { .. }
    ));
    other.ask(Body::AccessRoom {
        name: "quiet".into(),
    });
    // Times below are an idle machine's, scaled by how much slower this
    // one runs now: the flood asks for as much of the machine's time and
    // the bounds allow as much (once, at `nice -n 19` beside two busy
    // loops, the fixed 200 texts a second were more than the server's
    // share of the cores could carry).
    let slow = stretch();
    let scaled = |d: Duration| d.mul_f64(slow);
    eprintln!("this machine runs {slow:.1}x slower than an idle one");
    // The flood: 200 texts a second for 2 s into the public room, sent
    // without waiting (the answers are not read).
    let author = Client::register(addr, "author");
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let (pace, length) = (
            scaled(Duration::from_millis(5)),
            scaled(Duration::from_secs(2)),
        );
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut seq = 1000u16;
            while !stop.load(Ordering::Acquire) && t0.elapsed() < length {
                seq += 1;
                author.send_raw(
                    &Message {
                        user: author.id,
                        seq,
                        body: Body::Text {
                            chat: "x".repeat(100),
                        },
                    }
                    .to_bytes(),
                );
                std::thread::sleep(pace); // pacing, not waiting
            }
            author
        })
    };
    let mut rtts = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < scaled(Duration::from_millis(2500)) {
        let t = Instant::now();
        assert_eq!(
            honest.ask(Body::Connexion { name: None }),
            Body::KeptAlive { ok: true }
        );
        rtts.push(t.elapsed());
        std::thread::sleep(scaled(Duration::from_millis(10)));
    }
    stop.store(true, Ordering::Release);
    let _author = flood.join().unwrap();
    rtts.sort();
    let p50 = rtts[rtts.len() / 2];
    let p99 = rtts[rtts.len() * 99 / 100];
    let max = *rtts.last().unwrap();
    eprintln!(
        "honest keep-alive round trips under the flood: n={} p50={p50:?} p99={p99:?} max={max:?}",
        rtts.len()
    );
    // Before: seconds on an idle machine (every send counted one
    // recipient's messages by scanning all of them, under the state lock).
    // The load may have grown since the start: the larger of the two.
    let slow = slow.max(stretch());
    let scaled = |d: Duration| d.mul_f64(slow);
    assert!(
        max < scaled(Duration::from_millis(1500)),
        "max {max:?} ({slow:.1}x)"
    );
    assert!(
        p50 < scaled(Duration::from_millis(100)),
        "p50 {p50:?} ({slow:.1}x)"
    );
    // The clients that never acknowledge were dropped.
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while srv.hub().online("s0").is_some() {
        assert!(Instant::now() < deadline, "silent clients kept");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
}

#[test]
fn forged_registrations_reflect_little_to_their_victim() {
    if !in_own_netns("forged_registrations_reflect_little_to_their_victim") {
        return;
    }
    count_logs();
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    // The "victim": 100 ports on 127.0.0.2 (in this test's own network
    // namespace) from which an attacker forges registrations (here it
    // simply sends from them: the server cannot tell), then stays silent;
    // its credit must not be topped up by the attacker's own clients on
    // 127.0.0.1.
    let victims: Vec<Client> = (0..100).map(|_| Client::on(loopback(2), addr)).collect();
    let mut sent_to_server = 0usize;
    for (i, v) in victims.iter().enumerate() {
        let d = Message {
            user: 0,
            seq: 1,
            body: Body::Connexion {
                name: Some(format!("v{i}")),
            },
        }
        .to_bytes();
        sent_to_server += d.len();
        v.send_raw(&d);
    }
    // The attacker's own two clients talk in the public room.
    let mut a = Client::register(addr, "alice");
    let mut b = Client::register(addr, "bob");
    for i in 0..10 {
        a.ask(Body::Text {
            chat: format!("a{i}"),
        });
        b.ask(Body::Text {
            chat: format!("b{i}"),
        });
    }
    // Everything the victims receive, until the server is quiet.
    let mut texts: HashMap<(SocketAddr, u16), usize> = HashMap::new();
    let mut datagrams = 0;
    let mut bytes = 0;
    // Bytes of answers and of later copies: what the victim "paid" for.
    let mut paid = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for v in &victims {
            while let Some(d) = v.recv_raw_until(Instant::now() + Duration::from_millis(1)) {
                datagrams += 1;
                bytes += d.len();
                let m = Message::decode(&d).unwrap();
                match m.body {
                    Body::Text { .. } => {
                        let n = texts.entry((v.addr(), m.seq)).or_default();
                        *n += 1;
                        if *n > 1 {
                            paid += d.len();
                        }
                    }
                    // The answer to a 5-to-7-byte CONNEXION is 6 bytes.
                    Body::Registered { .. } | Body::Error { .. } => {
                        assert!(d.len() <= 7, "{m:?}");
                        paid += d.len();
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    eprintln!(
        "victim: {datagrams} datagrams, {bytes} bytes received ({paid} in answers and \
         retransmissions) for {sent_to_server} bytes sent; {} texts",
        texts.len()
    );
    // Before: 100 registrations x 20 texts x 5 sends = 10,000 datagrams.
    // Now answers and retransmissions together stay within what the
    // victim's address sent; only first copies of a few texts go beyond.
    assert!(paid <= sent_to_server, "{paid} bytes for {sent_to_server}");
    assert!(
        texts.len() <= 20 * UNCONFIRMED_PER_IP,
        "{} texts reached forged registrations",
        texts.len()
    );
    let per_victim = |v: &Client| texts.keys().filter(|(a, _)| *a == v.addr()).count();
    assert!(victims
        .iter()
        .all(|v| per_victim(v) <= UNCONFIRMED_IN_FLIGHT + UNANSWERED_TEXTS as usize));
    assert!(bytes <= sent_to_server + 20 * UNCONFIRMED_PER_IP * 9);
    assert_eq!(LOUD.load(Ordering::Relaxed), 0);
}

#[test]
fn an_unauthenticated_datagram_never_gets_a_larger_answer() {
    count_logs();
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    // A fresh server: nothing has given 127.0.0.1 any credit yet.
    let x = Client::new(addr);
    let requests: Vec<Vec<u8>> = vec![
        // Keep-alive and DECONNEXION for ids this address never had.
        Message {
            user: 9,
            seq: 1,
            body: Body::Connexion { name: None },
        }
        .to_bytes(),
        Message {
            user: 9,
            seq: 2,
            body: Body::Disconnect,
        }
        .to_bytes(),
        // A registration with an empty name (5 bytes; its answer has 6).
        vec![kind::CONNEXION << 3, 0, 0, 3, b'#'],
        // An empty-bodied registration, an unknown type, an answer type.
        vec![kind::CONNEXION << 3, 0, 0, 4],
        vec![30 << 3, 9, 0, 5],
        vec![kind::REPONSE_TEXTE << 3, 9, 0, 6],
    ];
    for r in &requests {
        x.send_raw(r);
        while let Some(d) = x.recv_raw_until(Instant::now() + Duration::from_millis(300)) {
            assert!(
                d.len() <= r.len(),
                "{} bytes answered {} bytes: {:02x?} -> {:02x?}",
                d.len(),
                r.len(),
                r,
                d
            );
        }
    }
    // An address that proved it receives is still told it is forgotten.
    let mut c = Client::register(addr, "carol");
    let id = c.id;
    assert_eq!(c.ask(Body::Disconnect), Body::DisconnectAnswer { ok: true });
    c.id = id;
    assert_eq!(
        c.ask(Body::Connexion { name: None }),
        Body::KeptAlive { ok: false }
    );
}

#[test]
fn registrations_per_address_are_capped_and_rate_limited() {
    if !in_own_netns("registrations_per_address_are_capped_and_rate_limited") {
        return;
    }
    count_logs();
    let limit = Body::Error {
        refused: kind::CONNEXION,
        reason: Reason::Limit,
    };
    let name = |n: &str| Body::Connexion {
        name: Some(n.into()),
    };
    // At most 3 at once from one address.
    let srv = server_with(|c| c.rooms_max_per_ip = 3);
    let addr = srv.rooms_addr();
    let mut kept: Vec<Client> = (0..3)
        .map(|i| Client::register(addr, &format!("u{i}")))
        .collect();
    assert_eq!(Client::new(addr).ask(name("u3")), limit);
    Client::on(loopback(2), addr).login("w0"); // another address: not affected
    assert_eq!(
        kept[0].ask(Body::Disconnect),
        Body::DisconnectAnswer { ok: true }
    );
    kept.remove(0);
    Client::new(addr).login("u4");
    drop(kept);

    // At most 4 attempts a minute from one address, refused ones included.
    let srv = server_with(|c| c.rooms_registrations_per_minute = 4);
    let addr = srv.rooms_addr();
    let mut first = Client::new(addr);
    first.login("r0");
    assert!(matches!(
        Client::new(addr).ask(name("r0")),
        Body::Registered {
            status: Registration::NameTaken,
            ..
        }
    ));
    Client::new(addr).login("r1");
    Client::new(addr).login("r2");
    assert_eq!(Client::new(addr).ask(name("r3")), limit);
    Client::on(loopback(2), addr).login("r4");
}

#[test]
fn one_client_can_make_only_so_many_requests_a_second() {
    count_logs();
    let srv = server_with(|c| c.rooms_requests_per_second = 5);
    let mut a = Client::register(srv.rooms_addr(), "alice");
    let mut limited = 0;
    for _ in 0..20 {
        match a.ask(Body::ListRooms) {
            Body::RoomList { .. } => {}
            Body::Error {
                refused: kind::DEMANDER_LISTE_MESSAGERIE,
                reason: Reason::Limit,
            } => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited > 0, "20 requests at once were all served");
}

#[test]
fn every_text_arrives_through_twenty_percent_loss_each_way() {
    count_logs();
    // The default M (and T): nothing set here.
    let srv = server_with(|_| {});
    let proxy = LossyProxy::start(srv.rooms_addr(), 20, 0x2020);
    let mut a = Client::register(proxy.addr(), "alice");
    let b = Client::register(proxy.addr(), "bob");
    let c = Client::register(proxy.addr(), "carol");
    const N: usize = 60;
    let again = texts_reach_both_once(&mut a, b, c, N, Duration::from_secs(60));
    let up = proxy.counts.up_dropped.load(Ordering::Relaxed);
    let down = proxy.counts.down_dropped.load(Ordering::Relaxed);
    eprintln!("dropped {up} up, {down} down; {again} texts seen again");
    assert!(
        up > 10 && down > 10,
        "the proxy dropped {up} up, {down} down"
    );
    assert!(again > 0, "no retransmission was ever needed");
}

#[test]
fn per_datagram_noise_is_logged_at_debug_only() {
    count_logs();
    let srv = server_with(|_| {});
    let addr = srv.rooms_addr();
    let a = Client::register(addr, "alice");
    let b = Client::register(addr, "bob");
    let before = LOUD.load(Ordering::Relaxed);
    for i in 0..50u16 {
        // bob's socket claims alice's id; garbage; answers to nothing.
        b.send_raw(
            &Message {
                user: a.id,
                seq: i,
                body: Body::Text {
                    chat: "je suis alice".into(),
                },
            }
            .to_bytes(),
        );
        b.send_raw(&[0xf9; 7]);
        b.send_raw(&[0x08, 0]);
        b.send_raw(
            &Message {
                user: b.id,
                seq: i,
                body: Body::TextAck,
            }
            .to_bytes(),
        );
    }
    // Everything was read: bob is still served after it.
    let mut b = b;
    assert_eq!(
        b.ask(Body::Connexion { name: None }),
        Body::KeptAlive { ok: true }
    );
    assert_eq!(
        LOUD.load(Ordering::Relaxed),
        before,
        "noise logged above debug"
    );
}
