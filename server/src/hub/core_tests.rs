//! The one core without sockets: presence across dialects, the call model
//! (with a recording stand-in for the media relay), the rooms model, and
//! private texts between dialects. Recording peers stand in for
//! connections.

use super::tests::Recorder;
use super::*;
use std::net::Ipv4Addr;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn hub_with(mode: RelayMode) -> Hub {
    Hub::new(HubConfig {
        call_relay: mode,
        ..HubConfig::default()
    })
}

fn join(h: &Hub, name: &str, d: Dialect) -> (Arc<Session>, Arc<Recorder>) {
    let r = Arc::new(Recorder::default());
    let entry = Entry {
        server_ip: Some(IP),
        endpoint: (d == Dialect::Rooms).then(|| SocketAddr::new(IP, 4000 + name.len() as u16)),
        ..Entry::new(d, IP, r.clone())
    };
    let s = h.login_with(name, entry, |_| {}).unwrap();
    (s, r)
}

/// What the relay was asked, in order.
#[derive(Default)]
struct FakeRelay {
    log: Mutex<Vec<String>>,
    full: std::sync::atomic::AtomicBool,
}

const RELAY_UDP: u16 = 40_000;
const RELAY_TCP: u16 = 40_001;

impl MediaRelay for FakeRelay {
    fn open(&self, call: CallId, caller: LegSpec, callee: LegSpec) -> Result<Opened, RelayFull> {
        if self.full.load(Ordering::Relaxed) {
            return Err(RelayFull);
        }
        self.log
            .lock()
            .push(format!("open {call} {:?} {:?}", caller.leg, callee.leg));
        let at = |l: &Leg| match l {
            Leg::Udp { .. } => Some(SocketAddr::new(IP, RELAY_UDP)),
            Leg::Accept { .. } => Some(SocketAddr::new(IP, RELAY_TCP)),
            Leg::Dial { .. } => None,
        };
        Ok(Opened {
            caller: at(&caller.leg),
            callee: at(&callee.leg),
        })
    }

    fn answered(&self, call: CallId, callee: Option<SocketAddr>) {
        self.log.lock().push(format!("answered {call} {callee:?}"));
    }

    fn close(&self, call: CallId) {
        self.log.lock().push(format!("close {call}"));
    }

    fn callee_at(&self, call: CallId, ip: std::net::IpAddr) {
        self.log.lock().push(format!("callee_at {call} {ip}"));
    }
}

impl FakeRelay {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock())
    }
}

fn relayed(mode: RelayMode) -> (Hub, Arc<FakeRelay>) {
    let h = hub_with(mode);
    let relay = Arc::new(FakeRelay::default());
    h.set_relay(relay.clone());
    (h, relay)
}

fn udp(addr: &str, port: u16) -> Media {
    Media::Udp {
        addr: addr.into(),
        port,
    }
}

fn listen(port: u16) -> Media {
    Media::BabelListen {
        host: String::new(),
        port,
    }
}

// ---- presence ----

#[test]
fn babel_lists_every_user_it_can_call_whatever_the_dialect() {
    let h = hub_with(RelayMode::Cross);
    let (_c, _) = join(&h, "chatter", Dialect::Chatos);
    let (_r, _) = join(&h, "roomer", Dialect::Rooms);
    let (acc, _) = join(&h, "carol", Dialect::Accounts);
    // A new babel user hears the callable ones: carol, not chatter or roomer.
    let r = Arc::new(Recorder::default());
    let mut seen = Vec::new();
    let bob = h
        .login_with("bob", Entry::new(Dialect::Babel, IP, r.clone()), |o| {
            seen = o.to_vec()
        })
        .unwrap();
    assert_eq!(seen, vec!["carol"]);
    // Accounts users come and go in the list; others never show.
    let (dave, _) = join(&h, "dave", Dialect::Accounts);
    let (eve, _) = join(&h, "eve", Dialect::Babel);
    let (chat2, _) = join(&h, "chat2", Dialect::Chatos);
    h.logout(&dave);
    h.logout(&acc);
    h.logout(&chat2);
    assert_eq!(
        r.take(),
        vec![
            r#"Presence { name: "dave", online: true }"#,
            r#"Presence { name: "eve", online: true }"#,
            r#"Presence { name: "dave", online: false }"#,
            r#"Presence { name: "carol", online: false }"#,
        ]
    );
    h.logout(&eve);
    h.logout(&bob);
    r.take();
    // With the relay off, nobody of another dialect can be called: babel
    // lists babel users only.
    let off = hub_with(RelayMode::Off);
    let (_a, _) = join(&off, "carol", Dialect::Accounts);
    let mut seen = vec!["x".to_owned()];
    off.login_with("bob", Entry::new(Dialect::Babel, IP, r.clone()), |o| {
        seen = o.to_vec()
    })
    .unwrap();
    assert!(seen.is_empty(), "{seen:?}");
    join(&off, "dan", Dialect::Accounts);
    assert_eq!(r.take(), Vec::<String>::new());
}

#[test]
fn reach_follows_the_dialect() {
    let r = |d: Dialect| {
        let x = d.reach();
        (x.public_text, x.private_text, x.calls, x.rooms)
    };
    assert_eq!(r(Dialect::Chatos), (true, true, false, false));
    assert_eq!(r(Dialect::Babel), (false, false, true, false));
    assert_eq!(r(Dialect::Accounts), (false, true, true, false));
    assert_eq!(r(Dialect::Rooms), (true, false, false, true));
}

// ---- calls ----

#[test]
fn a_babel_user_calls_an_accounts_user_through_the_relay() {
    let (h, relay) = relayed(RelayMode::Cross);
    let now = Instant::now();
    let (bob, rb) = join(&h, "bob", Dialect::Babel);
    let (carol, rc) = join(&h, "carol", Dialect::Accounts);
    rb.take();
    let id = h.offer_call(now, &bob, "carol", listen(5000)).unwrap();
    // The relay dials bob where his babel connection comes from, and
    // carol sends to the relay, never to bob.
    assert_eq!(
        relay.take(),
        vec![format!(
            "open {id} Dial {{ to: 127.0.0.1:5000 }} Udp {{ peer: None }}"
        )]
    );
    assert_eq!(
        rc.take(),
        vec![format!(
            r#"CallOffer {{ from: "bob", host: "127.0.0.1", port: {RELAY_UDP} }}"#
        )]
    );
    h.answer_call(now, &carol, "bob", Some(udp("", 6000)))
        .unwrap();
    assert_eq!(
        relay.take(),
        vec![format!("answered {id} Some(127.0.0.1:6000)")]
    );
    // bob's "answer" is the voice connection the relay opens.
    assert_eq!(
        rb.take(),
        vec![r#"CallAnswered { by: "carol", host: "", port: 0 }"#]
    );
    assert_eq!(h.calls_answered(), 1);
    assert_eq!(h.calls()[0].transport, Transport::Relayed);
    // carol hangs up: bob's side is closed by the relay.
    assert!(h.hang_up(&carol, "bob"));
    assert_eq!(relay.take(), vec![format!("close {id}")]);
    assert_eq!(rb.take(), vec![r#"CallEnded { by: "carol" }"#]);
    assert!(h.calls().is_empty());
    assert!(!h.hang_up(&carol, "bob"), "once");
}

#[test]
fn an_accounts_user_calls_a_babel_user_who_answers_by_connecting() {
    let (h, relay) = relayed(RelayMode::Cross);
    let now = Instant::now();
    let (_bob, rb) = join(&h, "bob", Dialect::Babel);
    let (carol, rc) = join(&h, "carol", Dialect::Accounts);
    rb.take();
    let id = h
        .offer_call(now, &carol, "bob", udp("127.0.0.1", 6000))
        .unwrap();
    assert_eq!(
        relay.take(),
        vec![format!(
            "open {id} Udp {{ peer: Some(127.0.0.1:6000) }} Accept {{ from: 127.0.0.1 }}"
        )]
    );
    // bob connects to the relay's TCP port for this call.
    assert_eq!(
        rb.take(),
        vec![format!(
            r#"CallOffer {{ from: "carol", host: "127.0.0.1", port: {RELAY_TCP} }}"#
        )]
    );
    h.relay_answered(id);
    h.relay_answered(id);
    assert_eq!(
        rc.take(),
        vec![format!(
            r#"CallAnswered {{ by: "bob", host: "127.0.0.1", port: {RELAY_UDP} }}"#
        )],
        "answered once"
    );
    // bob closes his voice connection: carol hears a hang-up.
    h.relay_ended(id, Some(Side::Callee));
    assert_eq!(rc.take(), vec![r#"CallEnded { by: "bob" }"#]);
    assert_eq!(relay.take(), vec![format!("close {id}")]);
    // A call that goes silent ends for both.
    let id = h
        .offer_call(now, &carol, "bob", udp("127.0.0.1", 6000))
        .unwrap();
    h.relay_answered(id);
    rc.take();
    rb.take();
    h.relay_ended(id, None);
    assert_eq!(rc.take(), vec![r#"CallEnded { by: "bob" }"#]);
    assert_eq!(rb.take(), vec![r#"CallEnded { by: "carol" }"#]);
}

#[test]
fn calls_between_dialects_need_the_relay_and_its_room() {
    let now = Instant::now();
    let off = hub_with(RelayMode::Off);
    let (bob, _) = join(&off, "bob", Dialect::Babel);
    join(&off, "carol", Dialect::Accounts);
    assert_eq!(
        off.offer_call(now, &bob, "carol", listen(1)).unwrap_err(),
        Refusal::Offline
    );
    let (h, relay) = relayed(RelayMode::Cross);
    let (bob, _) = join(&h, "bob", Dialect::Babel);
    let (_c, rc) = join(&h, "carol", Dialect::Accounts);
    relay.full.store(true, Ordering::Relaxed);
    assert_eq!(
        h.offer_call(now, &bob, "carol", listen(1)).unwrap_err(),
        Refusal::Offline
    );
    assert!(rc.take().is_empty() && h.calls().is_empty());
    // chatos and rooms users take no calls.
    join(&h, "chatter", Dialect::Chatos);
    join(&h, "roomer", Dialect::Rooms);
    relay.full.store(false, Ordering::Relaxed);
    for who in ["chatter", "roomer", "nobody"] {
        assert_eq!(
            h.offer_call(now, &bob, who, listen(1)).unwrap_err(),
            Refusal::Offline
        );
    }
}

#[test]
fn a_peer_to_peer_babel_call_blocks_no_call_back() {
    // The server never sees a peer-to-peer babel call answered or hung up:
    // a call the other way is a new call, not "busy".
    let h = hub_with(RelayMode::Cross);
    let now = Instant::now();
    let (a, ra) = join(&h, "al", Dialect::Babel);
    let (b, _) = join(&h, "bo", Dialect::Babel);
    h.offer_call(now, &a, "bo", listen(5000)).unwrap();
    ra.take();
    h.offer_call(now, &b, "al", listen(5001)).unwrap();
    assert_eq!(
        ra.take(),
        vec![r#"CallOffer { from: "bo", host: "127.0.0.1", port: 5001 }"#]
    );
    assert_eq!(h.calls().len(), 2);
}

#[test]
fn relay_all_relays_calls_within_a_dialect_too() {
    let (h, relay) = relayed(RelayMode::All);
    let now = Instant::now();
    let (a, ra) = join(&h, "al", Dialect::Accounts);
    let (b, rb) = join(&h, "bo", Dialect::Accounts);
    h.offer_call(now, &a, "bo", udp("10.0.0.1", 7000)).unwrap();
    h.answer_call(now, &b, "al", Some(udp("10.0.0.2", 7001)))
        .unwrap();
    // Neither learns the other's address: both hear the relay's.
    let offer = rb.take().join("");
    let answer = ra.take().join("");
    for (what, text) in [("offer", &offer), ("answer", &answer)] {
        assert!(!text.contains("10.0.0."), "{what}: {text}");
        assert!(text.contains(&RELAY_UDP.to_string()), "{what}: {text}");
    }
    assert_eq!(relay.take().len(), 2);
}

#[test]
fn direct_accounts_calls_keep_seed_000s_rules() {
    let h = hub_with(RelayMode::Cross);
    let now = Instant::now();
    let (a, ra) = join(&h, "al", Dialect::Accounts);
    let (b, rb) = join(&h, "bo", Dialect::Accounts);
    h.offer_call(now, &a, "bo", udp("", 7000)).unwrap();
    assert_eq!(
        rb.take(),
        vec![r#"CallOffer { from: "al", host: "127.0.0.1", port: 7000 }"#]
    );
    // Ringing again rings again; the callee calling back is busy.
    h.offer_call(now, &a, "bo", udp("", 7002)).unwrap();
    assert_eq!(rb.take().len(), 1);
    assert_eq!(
        h.offer_call(now, &b, "al", udp("", 1)).unwrap_err(),
        Refusal::Busy
    );
    h.answer_call(now, &b, "al", Some(udp("", 7001))).unwrap();
    assert_eq!(
        ra.take(),
        vec![r#"CallAnswered { by: "bo", host: "127.0.0.1", port: 7001 }"#]
    );
    assert_eq!(
        h.offer_call(now, &a, "bo", udp("", 1)).unwrap_err(),
        Refusal::Busy,
        "already in a call"
    );
    assert_eq!(
        h.answer_call(now, &b, "al", None).unwrap_err(),
        Refusal::NotPending
    );
    // al leaves mid-call: bo hears a hang-up.
    h.logout(&a);
    assert_eq!(rb.take(), vec![r#"CallEnded { by: "al" }"#]);
    // A callee that leaves while ringing is a refusal to its caller; a
    // ringing call that times out is too, and its callee hears it end.
    let (c, rc) = join(&h, "cy", Dialect::Accounts);
    h.offer_call(now, &b, "cy", udp("", 1)).unwrap();
    h.logout(&c);
    assert_eq!(rb.take(), vec![r#"CallRefused { by: "cy" }"#]);
    let (_c, rc2) = join(&h, "cy", Dialect::Accounts);
    h.offer_call(now, &b, "cy", udp("", 1)).unwrap();
    rc2.take();
    h.sweep(now + RING_TTL);
    assert_eq!(rb.take(), vec![r#"CallRefused { by: "cy" }"#]);
    assert_eq!(rc2.take(), vec![r#"CallEnded { by: "bo" }"#]);
    assert!(rc.take().len() <= 1);
}

// ---- rooms ----

#[test]
fn the_chatos_chat_and_the_rooms_public_room_are_one_room() {
    let h = hub_with(RelayMode::Cross);
    let (c, rc) = join(&h, "chatter", Dialect::Chatos);
    let (r, rr) = join(&h, "roomer", Dialect::Rooms);
    let (_b, rb) = join(&h, "bob", Dialect::Babel);
    h.broadcast(&c, "chatter", "hi all").unwrap();
    let m = r#"Message { from: "chatter", text: "hi all" }"#;
    assert_eq!(rc.take(), vec![m], "the chatos sender hears its echo");
    assert_eq!(rr.take(), vec![m]);
    assert_eq!(h.room_text(&r, "hello"), Ok(1));
    assert_eq!(
        rc.take(),
        vec![r#"Message { from: "roomer", text: "hello" }"#]
    );
    assert!(rr.take().is_empty(), "no echo for a rooms author");
    assert!(rb.take().is_empty(), "babel has no text");
    assert_eq!(
        h.room_members("").unwrap(),
        vec!["roomer"],
        "rooms lists name rooms users"
    );
    // Alone: nobody to hear.
    h.logout(&c);
    assert_eq!(h.room_text(&r, "anyone?"), Err(Refusal::NoRecipient));
}

#[test]
fn private_rooms_take_their_members_out_of_the_public_room() {
    let h = hub_with(RelayMode::Cross);
    let now = Instant::now();
    let (c, rc) = join(&h, "chatter", Dialect::Chatos);
    let (a, ra) = join(&h, "al", Dialect::Rooms);
    let (b, rb) = join(&h, "bo", Dialect::Rooms);
    let rid = h.room_create(&a, RoomMode::Centralised, "club", 3).unwrap();
    assert_eq!(h.room_of(&a), Some((rid, "club".into())));
    assert_eq!(
        h.room_create(&b, RoomMode::Centralised, "club", 3),
        Err(CreateRefusal::NameExists)
    );
    assert_eq!(
        h.room_create(&b, RoomMode::Centralised, "x", 1),
        Err(CreateRefusal::TooSmall)
    );
    assert_eq!(
        h.room_create(&b, RoomMode::Centralised, "", 3),
        Err(CreateRefusal::BadName)
    );
    h.broadcast(&c, "chatter", "public").unwrap();
    assert!(ra.take().is_empty(), "al left the public room");
    assert_eq!(rb.take().len(), 1);
    // An invitation names the room; accepting moves bo in.
    assert!(h.room_invite(now, &a, "bo"));
    assert!(!h.room_invite(now, &a, "chatter"), "chatos takes no rooms");
    let inv = rb.take();
    assert_eq!(inv.len(), 1);
    assert!(
        inv[0].starts_with(r#"RoomInvitation { from: "al", room: "club", mode: Centralised"#),
        "{inv:?}"
    );
    let token: u64 = inv[0]
        .rsplit("token: ")
        .next()
        .unwrap()
        .trim_end_matches(" }")
        .parse()
        .unwrap();
    h.room_answer(now, &b, token + 1, true);
    assert_eq!(h.room_of(&b), None, "not someone else's token");
    h.room_answer(now, &b, token, true);
    assert_eq!(h.room_of(&b).map(|r| r.0), Some(rid));
    assert_eq!(h.room_text(&a, "in here"), Ok(1));
    assert_eq!(
        rb.take(),
        vec![r#"RoomMessage { from: "al", room: "club", text: "in here" }"#]
    );
    assert!(rc.take().iter().all(|m| !m.contains("in here")));
    assert_eq!(
        h.room_list(),
        vec![RoomInfo {
            mode: RoomMode::Centralised,
            name: "club".into(),
            members: 2
        }]
    );
    assert_eq!(h.check_rooms(), Ok(()));
    // al leaves: bo, alone after two, is back in public and told.
    assert!(h.room_leave(&a));
    assert!(!h.room_leave(&a), "already public");
    assert_eq!(rb.take(), vec![r#"RoomClosed { room: "club" }"#]);
    assert_eq!(h.room_of(&b), None);
    h.broadcast(&c, "chatter", "back").unwrap();
    assert_eq!(rb.take().len(), 1);
    assert!(h.room_list().is_empty());
    assert_eq!(h.check_rooms(), Ok(()));
}

#[test]
fn decentralised_rooms_list_peers_and_take_no_texts_and_logout_closes_rooms() {
    let h = hub_with(RelayMode::Cross);
    let (a, _) = join(&h, "al", Dialect::Rooms);
    let (b, rb) = join(&h, "bob", Dialect::Rooms);
    h.room_create(&a, RoomMode::Decentralised, "p2p", 2)
        .unwrap();
    let (mode, peers) = h.room_join(&b, "p2p").unwrap();
    assert_eq!(mode, RoomMode::Decentralised);
    assert_eq!(
        peers,
        vec![RoomPeer {
            addr: SocketAddr::new(IP, 4002),
            name: "al".into()
        }]
    );
    let (c, _) = join(&h, "cy", Dialect::Rooms);
    assert_eq!(h.room_join(&c, "p2p"), Err(AccessRefusal::Full));
    assert_eq!(h.room_join(&c, "nope"), Err(AccessRefusal::NoSuchRoom));
    assert_eq!(h.room_text(&a, "x"), Err(Refusal::NoRecipient));
    h.logout(&a);
    assert_eq!(rb.take(), vec![r#"RoomClosed { room: "p2p" }"#]);
    assert_eq!(h.room_of(&b), None);
    assert_eq!(h.check_rooms(), Ok(()));
    // A session that is gone cannot make or enter a room.
    assert_eq!(
        h.room_create(&a, RoomMode::Centralised, "late", 2),
        Err(CreateRefusal::BadName)
    );
    assert_eq!(h.check_rooms(), Ok(()));
}

// ---- private text ----

#[test]
fn private_texts_cross_between_chatos_and_accounts() {
    let h = hub_with(RelayMode::Cross);
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = kept.clone();
    h.set_mailbox(Arc::new(move |from: &str, to: &str, text: &str| {
        if to == "registered" {
            k.lock().push(format!("{from}>{to}:{text}"));
            true
        } else {
            false
        }
    }));
    let (c, rc) = join(&h, "guest", Dialect::Chatos);
    let (acc, ra) = join(&h, "carol", Dialect::Accounts);
    let (_b, _) = join(&h, "bob", Dialect::Babel);
    let (_r, _) = join(&h, "roomer", Dialect::Rooms);
    h.private_message(&c, "guest", "carol", "hi carol").unwrap();
    assert_eq!(
        ra.take(),
        vec![r#"PrivateMessage { from: "guest", to: "carol", text: "hi carol" }"#]
    );
    h.private_message(&acc, "carol", "guest", "hi guest")
        .unwrap();
    assert_eq!(
        rc.take(),
        vec![r#"PrivateMessage { from: "carol", to: "guest", text: "hi guest" }"#]
    );
    // Offline: a registered user's mailbox keeps a guest's text; nobody
    // keeps one for a guest, or from an accounts user.
    h.private_message(&c, "guest", "registered", "later")
        .unwrap();
    assert_eq!(
        h.private_message(&c, "guest", "nobody", "x"),
        Err(Refusal::Offline)
    );
    assert_eq!(
        h.private_message(&acc, "carol", "registered", "x"),
        Err(Refusal::Offline)
    );
    assert_eq!(*kept.lock(), vec!["guest>registered:later"]);
    // Dialects without private text are not reached.
    for who in ["bob", "roomer"] {
        assert_eq!(
            h.private_message(&c, "guest", who, "x"),
            Err(Refusal::Offline)
        );
    }
}

/// Cluster mode: a relayed call with a user of another node is relayed by
/// the caller's node; the callee's node passes it through as a direct call
/// (the caller's media being that relay's address); a babel callee of
/// another node is not reached through a relay.
#[test]
fn a_relayed_call_across_nodes_is_relayed_by_the_callers_node_only() {
    let now = Instant::now();
    // The caller's node: babel zed calls erin, an accounts user of node b.
    let (h, relay) = relayed(RelayMode::Cross);
    let (zed, rz) = join(&h, "zed", Dialect::Babel);
    let re = Arc::new(Recorder::default());
    let erin = h
        .login_remote("erin", Dialect::Accounts, "b", re.clone())
        .unwrap();
    h.offer_call(now, &zed, "erin", listen(9000)).unwrap();
    assert_eq!(relay.take().len(), 1, "the allocation is made here");
    // erin's stand-in hears the relay's address (this node's, as zed
    // reached it), never zed's.
    assert_eq!(
        re.take(),
        [format!(
            r#"CallOffer {{ from: "zed", host: "{IP}", port: {RELAY_UDP} }}"#
        )]
    );
    // Her answer comes back with her voice address as her node saw it.
    h.answer_call(now, &erin, "zed", Some(udp("10.0.0.9", 7001)))
        .unwrap();
    assert_eq!(relay.take(), ["answered 1 Some(10.0.0.9:7001)"]);
    assert!(
        rz.take().iter().any(|e| e.starts_with("CallAnswered")),
        "zed hears the answer"
    );
    assert!(h.hang_up(&erin, "zed"));
    assert_eq!(relay.take(), ["close 1"]);

    // The callee's node: zed's stand-in calls local erin with the relay's
    // address; no allocation here, erin is told that address.
    let (h, relay) = relayed(RelayMode::Cross);
    let (erin, re) = join(&h, "erin", Dialect::Accounts);
    let zed = h
        .login_remote("zed", Dialect::Babel, "a", Arc::new(Recorder::default()))
        .unwrap();
    let relay_a = Media::BabelListen {
        host: "10.1.1.1".into(),
        port: RELAY_UDP,
    };
    h.offer_call(now, &zed, "erin", relay_a).unwrap();
    assert!(
        relay.take().is_empty(),
        "no allocation on the callee's node"
    );
    assert_eq!(
        re.take(),
        [format!(
            r#"CallOffer {{ from: "zed", host: "10.1.1.1", port: {RELAY_UDP} }}"#
        )]
    );
    h.answer_call(now, &erin, "zed", Some(udp("", 7001)))
        .unwrap();
    assert!(h.hang_up(&erin, "zed"));
    assert!(relay.take().is_empty());

    // A babel callee of another node: allocated here, its voice connection
    // taken from the address its node tells (none known yet); it is told
    // this node's relay. Its voice connection closing ends the call on
    // both nodes.
    let (h, relay) = relayed(RelayMode::Cross);
    let (carl, rc) = join(&h, "carl", Dialect::Accounts);
    let ry = Arc::new(Recorder::default());
    let yan = h
        .login_remote("yan", Dialect::Babel, "b", ry.clone())
        .unwrap();
    let id = h.offer_call(now, &carl, "yan", udp("", 7000)).unwrap();
    assert_eq!(
        relay.take(),
        [format!(
            "open {id} Udp {{ peer: Some({IP}:7000) }} Accept {{ from: 0.0.0.0 }}"
        )]
    );
    assert_eq!(
        ry.take(),
        [format!(
            r#"CallOffer {{ from: "carl", host: "{IP}", port: {RELAY_TCP} }}"#
        )]
    );
    // Only for the call really ringing from that caller to that stand-in.
    h.remote_callee_at(&carl, "yan", "10.0.0.7".parse().unwrap());
    h.remote_callee_at(&yan, "nobody", "10.0.0.7".parse().unwrap());
    assert!(relay.take().is_empty());
    h.remote_callee_at(&yan, "carl", "10.0.0.7".parse().unwrap());
    assert_eq!(relay.take(), [format!("callee_at {id} 10.0.0.7")]);
    h.relay_answered(id);
    assert!(rc.take().iter().any(|e| e.starts_with("CallAnswered")));
    // yan's node holds the other half: it hears that yan answered here.
    assert_eq!(ry.take(), [r#"CallTaken { caller: "carl" }"#]);
    h.relay_ended(id, Some(Side::Callee));
    assert_eq!(rc.take(), [r#"CallEnded { by: "yan" }"#]);
    assert_eq!(ry.take(), [r#"CallEnded { by: "carl" }"#]);
    assert!(h.calls().is_empty());

    // yan's node: carl's stand-in rings local yan (no allocation here);
    // told that yan answered at carl's node, its half is answered too,
    // silently, and only for that caller's call to that callee.
    let (h, _relay) = relayed(RelayMode::Cross);
    let (yan, ry) = join(&h, "yan", Dialect::Babel);
    let (other, _) = join(&h, "olga", Dialect::Babel);
    let carl = h
        .login_remote(
            "carl",
            Dialect::Accounts,
            "a",
            Arc::new(Recorder::default()),
        )
        .unwrap();
    h.offer_call(now, &carl, "yan", udp("10.1.1.1", RELAY_TCP))
        .unwrap();
    ry.take();
    h.remote_call_taken(&yan, "yan");
    h.remote_call_taken(&carl, "olga");
    h.remote_call_taken(&other, "yan");
    assert_eq!(h.calls_answered(), 0);
    h.remote_call_taken(&carl, "yan");
    assert_eq!(h.calls_answered(), 1);
    assert!(ry.take().is_empty(), "yan is not told");
    h.hang_up(&carl, "yan");
    assert!(h.calls().is_empty());
}
