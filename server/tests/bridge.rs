//! One server, one raw client of each dialect (docs/bridging.md): public
//! text between chatos and rooms, private text between chatos and accounts
//! (online and offline), a babel user calling an accounts user (and back)
//! with voice checked byte for byte through the media relay, hang-ups from
//! each side, a relayed accounts call in which neither side learns the
//! other's address, and hostile packets at the relay. Every socket is on
//! 127.0.0.1; every wait is bounded.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::babel::Frame as Babel;
use chinwag_proto::chatos::{self, Command};
use chinwag_proto::rooms::{self as wire, Body};
use chinwag_proto::voice::VoicePacket;
use chinwagd::metrics::RelayDrop;
use chinwagd::{Config, Server};

#[path = "common/budget.rs"]
mod budget;
mod common;
use common::{babel, chatos, friends, login, register, send, Wire, WAIT};
use common::{datagram, media, udp};
mod rooms_support;
use rooms_support::Client as Rooms;

fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    cfg.login_timeout_ms = common::LOGIN_TIMEOUT_MS;
    f(&mut cfg);
    Server::start(cfg).expect("server starts")
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---- public text ----

#[test]
fn public_text_crosses_between_chatos_and_rooms_with_the_authors_name() {
    let srv = server_with(|_| {});
    let mut alice = chatos(srv.chatos_addr(), "alice");
    let mut roo = Rooms::register(srv.rooms_addr(), "roo");
    // chatos -> rooms: a TEXTE from the server, the author's name first.
    alice.send_bytes(
        &chatos::Command::Message {
            from: "alice".into(),
            text: "hi all".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        alice.recv(),
        Command::Message {
            from: "alice".into(),
            text: "hi all".into()
        },
        "the chatos echo"
    );
    let m = roo.expect("alice's text", |b| matches!(b, Body::Text { .. }));
    assert_eq!(m.user, wire::SERVER);
    assert_eq!(
        m.body,
        Body::Text {
            chat: "alice: hi all".into()
        }
    );
    // The bytes docs/bridging.md shows (seq aside).
    let bytes = m.to_bytes();
    assert_eq!(bytes[..2], [0x78, 0xff]);
    assert_eq!(bytes[4..], *b"\x00\x0dalice: hi all");
    // rooms -> chatos: a MESSAGE with the rooms author's name.
    assert_eq!(
        roo.ask(Body::Text {
            chat: "hello".into()
        }),
        Body::TextAck
    );
    assert_eq!(
        alice.recv(),
        Command::Message {
            from: "roo".into(),
            text: "hello".into()
        }
    );
    // A CHAT longer than chatos's 1,024 bytes comes as two MESSAGEs.
    let long = "é".repeat(600);
    assert_eq!(roo.ask(Body::Text { chat: long.clone() }), Body::TextAck);
    let mut got = String::new();
    for _ in 0..2 {
        let Command::Message { from, text } = alice.recv() else {
            panic!()
        };
        assert_eq!(from, "roo");
        assert!(text.len() <= chatos::MAX_TEXT);
        got.push_str(&text);
    }
    assert_eq!(got, long);
    // Once alice leaves, roo talks to nobody.
    drop(alice);
    eventually("alice gone", || srv.hub().online("alice").is_none());
    assert_eq!(
        roo.ask(Body::Text { chat: "?".into() }),
        Body::Error {
            refused: wire::kind::TEXTE,
            reason: wire::Reason::NoRecipient
        }
    );
}

// ---- private text ----

#[test]
fn private_text_crosses_between_chatos_and_accounts_online_and_offline() {
    let srv = server_with(|_| {});
    let (c_addr, a_addr) = (srv.chatos_addr(), srv.accounts_addr());
    register(a_addr, "carol");
    let mut gus = chatos(c_addr, "gus");
    // carol is offline: kept for her next login.
    let to_carol = |text: &str| {
        Command::MessagePrivate {
            from: "gus".into(),
            to: "carol".into(),
            text: text.into(),
        }
        .to_bytes()
    };
    gus.send_bytes(&to_carol("while you were out"));
    // Nothing answers a MESSAGE_PRIVATE; gus's echo of a MESSAGE sent after
    // it says the server has handled it (one thread per connection, in
    // order), so its store job is queued ahead of carol's login.
    let echo = Command::Message {
        from: "gus".into(),
        text: "sync".into(),
    };
    gus.send_bytes(&echo.to_bytes());
    assert_eq!(gus.recv(), echo);
    let mut carol = login(a_addr, "carol");
    assert_eq!(
        carol.recv(),
        Acc::Message {
            pseudo: "gus".into(),
            text: "while you were out".into()
        }
    );
    // Online: at once, as the bytes docs/bridging.md shows.
    gus.send_bytes(&to_carol("hi"));
    let hi = carol.recv();
    assert_eq!(
        hi.to_bytes(),
        b"CWAC\x00\x97\x00\x00\x00\x09\x00\x03gus\x00\x02hi".to_vec()
    );
    // carol answers the guest: MESSAGE_PRIVATE, and 152.
    send(
        &mut carol,
        Acc::SendMessage {
            pseudo: "gus".into(),
            text: "yo !".into(),
        },
    );
    assert_eq!(carol.recv(), Acc::MessageStored);
    assert_eq!(
        gus.recv(),
        Command::MessagePrivate {
            from: "carol".into(),
            to: "gus".into(),
            text: "yo !".into()
        }
    );
    // A long text from accounts comes to chatos in pieces.
    let long = "x".repeat(2000);
    send(
        &mut carol,
        Acc::SendMessage {
            pseudo: "gus".into(),
            text: long.clone(),
        },
    );
    assert_eq!(carol.recv(), Acc::MessageStored);
    let mut got = String::new();
    while got.len() < long.len() {
        let Command::MessagePrivate { text, .. } = gus.recv() else {
            panic!()
        };
        got.push_str(&text);
    }
    assert_eq!(got, long);
    // No offline delivery to a guest: once gus is gone, 153.
    drop(gus);
    eventually("gus gone", || srv.hub().online("gus").is_none());
    send(
        &mut carol,
        Acc::SendMessage {
            pseudo: "gus".into(),
            text: "still there?".into(),
        },
    );
    assert_eq!(carol.recv(), Acc::MessageFailed);
    // Guest mail is not history.
    send(
        &mut carol,
        Acc::History {
            pseudo: "gus".into(),
            before: 0,
        },
    );
    assert_eq!(
        carol.recv(),
        Acc::HistoryPage {
            pseudo: "gus".into(),
            entries: vec![]
        }
    );
}

#[test]
fn a_full_guest_mailbox_drops_and_counts() {
    let srv = server_with(|_| {});
    let (c_addr, a_addr) = (srv.chatos_addr(), srv.accounts_addr());
    register(a_addr, "dora");
    let mut gus = chatos(c_addr, "gus");
    const LIMIT: usize = chinwagd::front::accounts::service::GUEST_MAIL_PER_ACCOUNT;
    for i in 0..LIMIT + 5 {
        gus.send_bytes(
            &Command::MessagePrivate {
                from: "gus".into(),
                to: "dora".into(),
                text: format!("{i}"),
            }
            .to_bytes(),
        );
    }
    let m = srv.hub().metrics().clone();
    eventually("five dropped", || {
        m.render()
            .contains("chinwag_drops_total{reason=\"guest_mail_full\"} 5")
    });
    let mut dora = login(a_addr, "dora");
    for i in 0..LIMIT {
        assert_eq!(
            dora.recv(),
            Acc::Message {
                pseudo: "gus".into(),
                text: format!("{i}")
            }
        );
    }
    dora.expect_silence();
}

// ---- calls through the relay ----

fn relay_at(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(host.parse().unwrap(), port)
}

#[test]
fn a_babel_user_calls_an_accounts_user_voice_both_ways_and_hang_ups() {
    let srv = server_with(|_| {});
    let (b_addr, a_addr) = (srv.babel_addr(), srv.accounts_addr());
    register(a_addr, "carol");
    let (mut bob, contacts) = babel(b_addr, "bob");
    assert!(contacts.is_empty());
    let mut carol = login(a_addr, "carol");
    // bob's contact list now shows carol, whom he can call.
    assert_eq!(
        bob.recv(),
        Babel::AddContact {
            contacts: vec!["carol".into()]
        }
    );
    let m = srv.hub().metrics().clone();
    for hang_up_from_babel in [false, true] {
        // Counted from before the call: the relay counts a packet towards
        // babel just after queueing it, so a count read once the first
        // packet arrived could still miss that one.
        let before = m.relay_packets();
        let mut call = common::babel_calls_accounts(&mut bob, "bob", &mut carol, "carol");
        let seqs = common::voice_both_ways(&mut call);
        for w in seqs.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
            assert_eq!(w[1].1, w[0].1.wrapping_add(960));
        }
        // Counted once sent (just after it left): the probes that found
        // the voice connection open (one, or more on a loaded machine),
        // then ten.
        let carried = 10 + call.probes;
        eventually(&format!("{carried} packets counted"), || {
            m.relay_packets() - before == carried
        });
        if hang_up_from_babel {
            drop(call);
            assert_eq!(
                carol.recv(),
                Acc::HungUp {
                    pseudo: "bob".into()
                }
            );
        } else {
            send(
                &mut carol,
                Acc::Hangup {
                    pseudo: "bob".into(),
                },
            );
            // babel's hang-up: the voice connection closes.
            common::expect_eof(&mut call.peer.s, "bob's voice connection");
        }
        eventually("the allocation released", || srv.relayed_calls() == 0);
    }
}

#[test]
fn an_accounts_user_calls_a_babel_user_who_connects_to_the_relay() {
    let srv = server_with(|_| {});
    let (b_addr, a_addr) = (srv.babel_addr(), srv.accounts_addr());
    register(a_addr, "carol");
    let mut carol = login(a_addr, "carol");
    let (mut bob, contacts) = babel(b_addr, "bob");
    assert_eq!(contacts, vec!["carol"]);
    // bob accepts by connecting; the relay greets him.
    let common::BabelToAccounts {
        relay,
        mut peer,
        voice,
        ..
    } = common::accounts_calls_babel(&mut carol, "carol", &mut bob, "bob");
    let vport = voice.local_addr().unwrap().port();
    voice.send_to(&media(1, &[0xfc, 1]), relay).unwrap();
    assert_eq!(
        peer.recv(),
        Babel::VoiceData {
            data: vec![0xfc, 1]
        }
    );
    peer.send_bytes(
        &Babel::VoiceData {
            data: vec![0xfc, 2],
        }
        .to_bytes(),
    );
    let (d, _) = datagram(&voice);
    assert!(matches!(
        VoicePacket::decode(&d).unwrap(),
        VoicePacket::Media {
            opus: [0xfc, 2],
            ..
        }
    ));
    // A babel refusal reaches carol as 142.
    drop(peer);
    assert_eq!(
        carol.recv(),
        Acc::HungUp {
            pseudo: "bob".into()
        }
    );
    common::call(&mut carol, "bob", vport);
    assert!(matches!(bob.recv(), Babel::CallRequest { .. }));
    bob.send_bytes(
        &Babel::CallRefused {
            contact: "carol".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        carol.recv(),
        Acc::CallFailed {
            pseudo: "bob".into()
        }
    );
    eventually("released", || srv.relayed_calls() == 0);
}

/// `an` calls its friend `bn` through the relay (`call_relay = "all"`):
/// the two voice sockets and where each must send.
fn relayed_call(
    a: &mut Wire<Acc>,
    an: &str,
    b: &mut Wire<Acc>,
    bn: &str,
) -> [(UdpSocket, SocketAddr); 2] {
    let (va, pa) = udp();
    let (vb, pb) = udp();
    send(
        a,
        Acc::Call {
            pseudo: bn.into(),
            addr: String::new(),
            port: pa,
        },
    );
    let Acc::IncomingCall { addr, port, .. } = b.recv() else {
        panic!("143")
    };
    assert_ne!(port, pa, "{bn} is not told {an}'s port");
    let to_b = relay_at(&addr, port);
    send(
        b,
        Acc::AnswerCall {
            pseudo: an.into(),
            addr: String::new(),
            port: pb,
        },
    );
    let Acc::CallAccepted { addr, port, .. } = a.recv() else {
        panic!("141")
    };
    assert_ne!(port, pb, "{an} is not told {bn}'s port");
    [(va, relay_at(&addr, port)), (vb, to_b)]
}

#[test]
fn a_relayed_accounts_call_hides_each_sides_address_and_hostile_packets_are_dropped() {
    let srv = server_with(|c| {
        c.call_relay = "all".into();
        c.relay_packets_per_second = 200;
    });
    let a_addr = srv.accounts_addr();
    let (mut al, mut bo) = friends(a_addr, ("al", a_addr), ("bo", a_addr));
    let [(va, a_to), (vb, b_to)] = relayed_call(&mut al, "al", &mut bo, "bo");
    // Voice both ways, the very bytes, always from the relay.
    for i in 0..5u16 {
        let p = media(i, &[0xfc, i as u8]);
        va.send_to(&p, a_to).unwrap();
        let (d, from) = datagram(&vb);
        assert_eq!((d, from), (p, b_to));
        let q = media(100 + i, &[0xfc, 9]);
        vb.send_to(&q, b_to).unwrap();
        let (d, from) = datagram(&va);
        assert_eq!((d, from), (q, a_to));
    }
    let m = srv.hub().metrics().clone();
    // A third address: dropped, counted, never forwarded, never answered.
    let (eve, _) = udp();
    let stray = m.relay_drops(RelayDrop::Stray);
    for i in 0..50u16 {
        eve.send_to(&media(i, &[0xfc, 0xee]), a_to).unwrap();
    }
    eventually("strays counted", || {
        m.relay_drops(RelayDrop::Stray) >= stray + 50
    });
    eve.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(eve.recv_from(&mut [0u8; 64]).is_err(), "eve got an answer");
    // A guessed port nearby: nothing is there for eve either.
    for p in [a_to.port().wrapping_add(1), a_to.port().wrapping_sub(1)] {
        let _ = eve.send_to(&media(0, &[0xfc]), relay_at("127.0.0.1", p));
    }
    // Junk from a party: dropped as malformed.
    let bad = m.relay_drops(RelayDrop::Malformed);
    va.send_to(b"not a voice packet", a_to).unwrap();
    eventually("junk counted", || m.relay_drops(RelayDrop::Malformed) > bad);
    // Nothing of eve's (or the junk) reached bo: the next datagram is al's.
    let p = media(42, &[0xfc, 42]);
    va.send_to(&p, a_to).unwrap();
    assert_eq!(datagram(&vb).0, p);
    // A second call goes on while the first floods past its rate.
    let (mut cy, mut di) = friends(a_addr, ("cy", a_addr), ("di", a_addr));
    let [(vc, c_to), (vd, d_to)] = relayed_call(&mut cy, "cy", &mut di, "di");
    let rate = m.relay_drops(RelayDrop::Rate);
    for i in 0..1000u16 {
        let _ = va.send_to(&media(i, &[0xfc]), a_to);
    }
    eventually("the flood is cut", || m.relay_drops(RelayDrop::Rate) > rate);
    for i in 0..5u16 {
        let p = media(i, &[0xfc, 0xcc]);
        vc.send_to(&p, c_to).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let (d, from) = datagram(&vd);
            assert_eq!(from, d_to);
            if d == p {
                break;
            }
            assert!(Instant::now() < deadline);
        }
    }
    // Hang-up ends the allocation; its port takes nothing any more.
    send(
        &mut al,
        Acc::Hangup {
            pseudo: "bo".into(),
        },
    );
    assert_eq!(
        bo.recv(),
        Acc::HungUp {
            pseudo: "al".into()
        }
    );
    eventually("one allocation left", || srv.relayed_calls() == 1);
}

#[test]
fn a_silent_relayed_call_ends_for_both_sides() {
    let srv = server_with(|c| {
        c.call_relay = "all".into();
        c.relay_idle_timeout_ms = 300;
    });
    let at = srv.accounts_addr();
    let (mut al, mut bo) = friends(at, ("al", at), ("bo", at));
    let _legs = relayed_call(&mut al, "al", &mut bo, "bo");
    assert_eq!(
        al.recv(),
        Acc::HungUp {
            pseudo: "bo".into()
        }
    );
    assert_eq!(
        bo.recv(),
        Acc::HungUp {
            pseudo: "al".into()
        }
    );
    eventually("released", || srv.relayed_calls() == 0);
    assert_eq!(srv.hub().calls_answered(), 0);
}

#[test]
fn a_spent_thread_budget_refuses_babel_legs_cleanly_and_counts_them() {
    use chinwagd::metrics::DropReason;
    // No spare threads: a connection thread ends with its connection, and
    // none is started in the background, so the budget holds still.
    let srv = server_with(|c| {
        c.max_threads = 40;
        c.spare_threads = 0;
    });
    let (b_addr, a_addr) = (srv.babel_addr(), srv.accounts_addr());
    register(a_addr, "carol");
    let mut carol = login(a_addr, "carol");
    let (mut bob, contacts) = babel(b_addr, "bob");
    assert_eq!(contacts, vec!["carol"]);
    let m = srv.hub().metrics().clone();
    // The registration's connection thread is gone: carol's and bob's
    // are the budget's only threads.
    eventually("two connection threads", || {
        srv.connections() == 2 && srv.thread_budget().live() == 2
    });
    let spent = budget::spend(&srv);
    // carol calls bob: no thread to take bob's voice connection, so the
    // call is refused as bob unreachable (bob is never rung).
    let (_voice, vport) = udp();
    common::call(&mut carol, "bob", vport);
    assert_eq!(
        carol.recv(),
        Acc::CallFailed {
            pseudo: "bob".into()
        }
    );
    assert_eq!(m.drops(DropReason::ThreadBudget), 1);
    assert_eq!(srv.relayed_calls(), 0);
    // bob calls carol, who answers: no thread to dial bob, so the call
    // ends (carol hears a hang-up) instead of staying half made.
    let (_l, lport) = common::listen();
    bob.send_bytes(
        &Babel::CallRequest {
            contact: "carol".into(),
            host: String::new(),
            port: lport,
        }
        .to_bytes(),
    );
    assert!(matches!(carol.recv(), Acc::IncomingCall { .. }));
    send(
        &mut carol,
        Acc::AnswerCall {
            pseudo: "bob".into(),
            addr: String::new(),
            port: vport,
        },
    );
    assert_eq!(
        carol.recv(),
        Acc::HungUp {
            pseudo: "bob".into()
        }
    );
    assert_eq!(m.drops(DropReason::ThreadBudget), 2);
    eventually("both calls gone", || {
        srv.relayed_calls() == 0 && srv.hub().calls().is_empty()
    });
    // Nothing else was harmed: with threads back, a call goes through.
    drop(spent);
    let mut call = common::accounts_calls_babel(&mut carol, "carol", &mut bob, "bob");
    common::voice_both_ways(&mut call);
}

#[test]
fn the_relay_off_refuses_calls_between_dialects() {
    let srv = server_with(|c| c.call_relay = "off".into());
    register(srv.accounts_addr(), "carol");
    let mut carol = login(srv.accounts_addr(), "carol");
    let (mut bob, contacts) = babel(srv.babel_addr(), "bob");
    assert!(contacts.is_empty(), "nobody bob can call");
    bob.send_bytes(
        &Babel::CallRequest {
            contact: "carol".into(),
            host: String::new(),
            port: 1,
        }
        .to_bytes(),
    );
    assert_eq!(
        bob.recv(),
        Babel::ErrorResponse {
            what: "carol is not connected".into()
        }
    );
    common::call(&mut carol, "bob", 1);
    assert_eq!(
        carol.recv(),
        Acc::CallFailed {
            pseudo: "bob".into()
        }
    );
}

#[test]
fn bridged_bytes_match_the_docs() {
    // The example of docs/bridging.md: MESSAGE_PRIVATE alice -> bob "hi".
    let mut out = Vec::new();
    chatos::encode_message_private(&mut out, "alice", "bob", "hi");
    assert_eq!(
        out,
        b"\x04\x00\x00\x00\x05alice\x00\x00\x00\x03bob\x00\x00\x00\x02hi".to_vec()
    );
    let s = Acc::Message {
        pseudo: "alice".into(),
        text: "hi".into(),
    }
    .to_bytes();
    assert_eq!(
        s,
        b"CWAC\x00\x97\x00\x00\x00\x0b\x00\x05alice\x00\x02hi".to_vec()
    );
    // 150 "alice" "yo !" and the 152 that answers it.
    let s = Acc::SendMessage {
        pseudo: "alice".into(),
        text: "yo !".into(),
    }
    .to_bytes();
    assert_eq!(
        s,
        b"CWAC\x00\x96\x00\x00\x00\x0d\x00\x05alice\x00\x04yo !".to_vec()
    );
    assert_eq!(
        Acc::MessageStored.to_bytes(),
        b"CWAC\x00\x98\x00\x00\x00\x00".to_vec()
    );
}

#[test]
fn rooms_clients_count_in_max_connections_and_are_stopped_with_the_server() {
    let srv = server_with(|c| c.max_connections = 2);
    let _alice = chatos(srv.chatos_addr(), "alice");
    let mut roo = Rooms::register(srv.rooms_addr(), "roo");
    assert_eq!(srv.connections(), 2, "a TCP connection and a rooms client");
    // The server is full: a second rooms client is refused as over a limit.
    let mut late = Rooms::new(srv.rooms_addr());
    assert_eq!(
        late.ask(Body::Connexion {
            name: Some("late".into())
        }),
        Body::Error {
            refused: wire::kind::CONNEXION,
            reason: wire::Reason::Limit
        }
    );
    // A client that leaves frees its place.
    assert_eq!(
        roo.ask(Body::Disconnect),
        Body::DisconnectAnswer { ok: true }
    );
    eventually("roo's place freed", || srv.connections() == 1);
    late.login("late");
    assert_eq!(srv.connections(), 2);
    // Shutdown stops rooms clients through the registry, like connections:
    // the hub has nobody left.
    let hub = srv.hub().clone();
    assert!(hub.online("late").is_some());
    srv.shutdown();
    assert_eq!(hub.online_count(), 0);
}

/// Records the CallOffer a stand-in of another node is given.
#[derive(Default)]
struct Offers(std::sync::Mutex<Vec<(String, u16)>>);

impl chinwagd::hub::Peer for Offers {
    fn deliver(&self, event: &chinwagd::hub::Event<'_>) -> bool {
        if let chinwagd::hub::Event::CallOffer { host, port, .. } = event {
            self.0.lock().unwrap().push((host.to_string(), *port));
        }
        true
    }
}

#[test]
fn a_babel_callee_of_another_node_is_taken_from_the_address_its_node_tells_even_if_told_late() {
    let srv = server_with(|_| {});
    let a_addr = srv.accounts_addr();
    register(a_addr, "carol");
    let mut carol = login(a_addr, "carol");
    // yan, a babel user of node b, as cluster mode shows it here.
    let offers = Arc::new(Offers::default());
    let yan = srv
        .hub()
        .login_remote("yan", chinwagd::hub::Dialect::Babel, "b", offers.clone())
        .unwrap();
    let (_voice, vport) = udp();
    for told_late in [false, true] {
        common::call(&mut carol, "yan", vport);
        let mut at = None;
        eventually("the offer to yan's stand-in", || {
            at = offers.0.lock().unwrap().pop();
            at.is_some()
        });
        let (host, port) = at.unwrap();
        if told_late {
            // Connected before its node told the address: held, then taken.
            let mut peer = Wire::<Babel>::new(TcpStream::connect(relay_at(&host, port)).unwrap());
            assert!(peer.try_recv(Duration::from_millis(300)).is_none());
            srv.hub()
                .remote_callee_at(&yan, "carol", "127.0.0.1".parse().unwrap());
            assert_eq!(peer.recv(), Babel::ConnectionEstablished);
        } else {
            // Told another address: a connection from here is closed.
            srv.hub()
                .remote_callee_at(&yan, "carol", "10.9.9.9".parse().unwrap());
            let mut s = TcpStream::connect(relay_at(&host, port)).unwrap();
            common::expect_eof(&mut s, "a stray voice connection");
            send(
                &mut carol,
                Acc::Hangup {
                    pseudo: "yan".into(),
                },
            );
            eventually("released", || srv.relayed_calls() == 0);
            continue;
        }
        assert!(matches!(carol.recv(), Acc::CallAccepted { .. }));
    }
}
