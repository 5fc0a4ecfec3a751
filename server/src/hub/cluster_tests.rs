//! The hub's side of cluster mode without a bus: a recording stand-in for
//! the cluster adapter (`ClusterLink`) and recording peers. A local login
//! is claimed first and released when it fails or ends; stand-ins of
//! other nodes' users are listed for babel, keep their names, take private
//! texts, and are refused what cannot cross nodes; public-room texts go
//! out once and come in to local listeners only.

use super::tests::Recorder;
use super::*;
use std::net::Ipv4Addr;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Default)]
struct FakeBus {
    log: Mutex<Vec<String>>,
    /// Names another node holds: their claims fail.
    elsewhere: Mutex<Vec<String>>,
}

impl ClusterLink for FakeBus {
    fn claim(&self, name: &str, _dialect: Dialect) -> bool {
        self.log.lock().push(format!("claim {name}"));
        !self.elsewhere.lock().iter().any(|n| n == name)
    }
    fn release(&self, name: &str) {
        self.log.lock().push(format!("release {name}"));
    }
    fn public_text(&self, from: &str, text: &str) {
        self.log.lock().push(format!("public {from}: {text}"));
    }
    fn poke(&self, node: Option<&str>, name: &str) {
        self.log.lock().push(format!("poke {name}@{node:?}"));
    }
    fn account(&self, pseudo: &str, registered: bool) {
        self.log
            .lock()
            .push(format!("account {pseudo} {registered}"));
    }
    fn ban(&self, ban: &bans::Ban, added: bool) {
        self.log.lock().push(format!("ban {ban:?} {added}"));
    }
}

impl FakeBus {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock())
    }
}

fn clustered() -> (Hub, Arc<FakeBus>) {
    let h = Hub::new(HubConfig::default());
    let bus = Arc::new(FakeBus::default());
    h.set_cluster(bus.clone());
    (h, bus)
}

fn join(h: &Hub, name: &str, d: Dialect) -> Result<(Arc<Session>, Arc<Recorder>), LoginError> {
    let r = Arc::new(Recorder::default());
    let s = h.login_with(name, Entry::new(d, IP, r.clone()), |_| {})?;
    Ok((s, r))
}

fn remote(h: &Hub, name: &str, d: Dialect) -> (Arc<Session>, Arc<Recorder>) {
    let r = Arc::new(Recorder::default());
    let s = h.login_remote(name, d, "b", r.clone()).unwrap();
    (s, r)
}

#[test]
fn a_local_login_is_claimed_first_and_released_when_it_ends() {
    let (h, bus) = clustered();
    let (alice, _) = join(&h, "alice", Dialect::Chatos).unwrap();
    assert_eq!(bus.take(), ["claim alice"]);
    h.logout(&alice);
    assert_eq!(bus.take(), ["release alice"]);
    // Held by another node: refused as taken, nothing inserted.
    bus.elsewhere.lock().push("bob".into());
    assert_eq!(
        join(&h, "bob", Dialect::Chatos).err(),
        Some(LoginError::Taken)
    );
    assert!(h.online("bob").is_none());
    assert_eq!(bus.take(), ["claim bob"]);
}

#[test]
fn a_claimed_login_that_fails_here_gives_the_name_back() {
    let (h, bus) = clustered();
    h.bans().add(bans::Ban::Name("mallory".into()));
    assert_eq!(
        join(&h, "mallory", Dialect::Chatos).err(),
        Some(LoginError::Banned)
    );
    assert_eq!(bus.take(), ["claim mallory", "release mallory"]);
    // Invalid names and names held here need no bus round trip.
    assert_eq!(
        join(&h, "no spaces", Dialect::Chatos).err(),
        Some(LoginError::Invalid)
    );
    let (_a, _) = join(&h, "alice", Dialect::Chatos).unwrap();
    bus.take();
    assert_eq!(
        join(&h, "ALICE", Dialect::Babel).err(),
        Some(LoginError::Taken)
    );
    assert!(bus.take().is_empty());
}

#[test]
fn stand_ins_are_listed_for_babel_and_hold_their_names_but_are_not_local() {
    let (h, bus) = clustered();
    let (_zed, zed) = join(&h, "zed", Dialect::Babel).unwrap();
    zed.take();
    let (erin, _) = remote(&h, "erin", Dialect::Accounts);
    assert_eq!(zed.take(), [r#"Presence { name: "erin", online: true }"#]);
    // Not claimed by this node, not counted as its session.
    assert_eq!(bus.take(), ["claim zed"]);
    assert_eq!(h.sessions().len(), 1);
    assert_eq!(h.online_count(), 1);
    assert_eq!(h.online_per_dialect(), [0, 1, 0, 0]);
    // Its name and its look-alikes are taken here without a bus round trip.
    assert_eq!(
        join(&h, "Erin", Dialect::Chatos).err(),
        Some(LoginError::Taken)
    );
    assert!(bus.take().is_empty());
    // Leaving releases nothing (its node does that) and tells babel.
    h.logout(&erin);
    assert!(bus.take().is_empty());
    assert_eq!(zed.take(), [r#"Presence { name: "erin", online: false }"#]);
}

#[test]
fn peer_to_peer_calls_reach_stand_ins_and_each_side_keeps_its_half() {
    let (h, _bus) = clustered();
    let (carol, _) = join(&h, "carol", Dialect::Accounts).unwrap();
    let (dave, d) = remote(&h, "dave", Dialect::Accounts);
    let now = Instant::now();
    let media = Media::Udp {
        addr: "10.0.0.1".into(),
        port: 4000,
    };
    h.offer_call(now, &carol, "dave", media).unwrap();
    assert_eq!(
        d.take(),
        [r#"CallOffer { from: "carol", host: "10.0.0.1", port: 4000 }"#]
    );
    // The answer the other node forwards, as the stand-in's.
    let answer = Media::Udp {
        addr: "10.0.0.2".into(),
        port: 4001,
    };
    h.answer_call(now, &dave, "carol", Some(answer)).unwrap();
    assert_eq!(h.calls_answered(), 1);
    assert!(h.hang_up(&dave, "carol"));
    assert!(h.calls().is_empty());
}

#[test]
fn private_texts_and_room_invitations_reach_stand_ins_and_relayed_calls_and_connections_do_not() {
    let (h, _bus) = clustered();
    let (alice, _) = join(&h, "alice", Dialect::Chatos).unwrap();
    let (_bob, bob) = remote(&h, "bob", Dialect::Chatos);
    h.private_message(&alice, "alice", "bob", "psst").unwrap();
    assert_eq!(
        bob.take(),
        [r#"PrivateMessage { from: "alice", to: "bob", text: "psst" }"#]
    );
    let now = Instant::now();
    assert_eq!(
        h.request_private(now, &alice, "alice", "bob"),
        Err(Refusal::Offline)
    );
    // A call that needs a relay, on a node without one (relayed calls to
    // users of another node cross through the caller's relay: core_tests).
    let (_yan, _) = remote(&h, "yan", Dialect::Babel);
    let (carl, _) = join(&h, "carl", Dialect::Accounts).unwrap();
    let media = Media::Udp {
        addr: "127.0.0.1".into(),
        port: 9,
    };
    assert_eq!(
        h.offer_call(now, &carl, "yan", media),
        Err(Refusal::Offline)
    );
    let (roo, _) = join(&h, "roo", Dialect::Rooms).unwrap();
    let (_rex, rex) = remote(&h, "rex", Dialect::Rooms);
    h.room_create(&roo, RoomMode::Centralised, "den", 3)
        .unwrap();
    // A room invitation crosses (its node tells rex: docs/scaling.md).
    assert!(h.room_invite(now, &roo, "rex"));
    let inv = rex.take();
    assert_eq!(inv.len(), 1);
    assert!(
        inv[0].starts_with(r#"RoomInvitation { from: "roo", room: "den""#),
        "{inv:?}"
    );
    assert!(bob.take().is_empty());
}

#[test]
fn public_texts_go_out_once_and_come_in_to_local_listeners_only() {
    let (h, bus) = clustered();
    let (alice, a) = join(&h, "alice", Dialect::Chatos).unwrap();
    let (_bob, bob) = remote(&h, "bob", Dialect::Chatos);
    bus.take();
    h.broadcast(&alice, "alice", "hi").unwrap();
    assert_eq!(bus.take(), ["public alice: hi"]);
    assert_eq!(a.take(), [r#"Message { from: "alice", text: "hi" }"#]);
    assert!(
        bob.take().is_empty(),
        "stand-ins are not in the public room"
    );
    // A rooms user alone in the public room on this node still has
    // listeners elsewhere.
    let (roo, _) = join(&h, "roo", Dialect::Rooms).unwrap();
    assert!(h.room_text(&roo, "from the room").is_ok());
    assert_eq!(bus.take(), ["claim roo", "public roo: from the room"]);
    assert_eq!(
        a.take(),
        [r#"Message { from: "roo", text: "from the room" }"#]
    );
    h.logout(&alice);
    let (_amy, a) = join(&h, "amy", Dialect::Chatos).unwrap();
    assert_eq!(
        h.room_text(&roo, "amy is here").unwrap(),
        2,
        "amy and the bus"
    );
    a.take();
    bus.take();
    // In from another node: local listeners only, never out again.
    assert_eq!(h.public_remote("carl", "hello"), 2, "amy and roo");
    assert_eq!(a.take(), [r#"Message { from: "carl", text: "hello" }"#]);
    assert!(bus.take().is_empty());
}

#[test]
fn pokes_go_to_the_users_node_or_everywhere_when_unknown() {
    let (h, bus) = clustered();
    let (_dave, _) = remote(&h, "dave", Dialect::Accounts);
    let (_carol, _) = join(&h, "carol", Dialect::Accounts).unwrap();
    bus.take();
    assert!(h.poke_remote("dave"));
    assert!(h.poke_remote("nobody"));
    assert!(!h.poke_remote("carol"), "local: delivered live, no poke");
    assert_eq!(bus.take(), [r#"poke dave@Some("b")"#, "poke nobody@None"]);
    // A single node pokes nobody.
    let single = Hub::new(HubConfig::default());
    assert!(!single.poke_remote("dave"));
}
