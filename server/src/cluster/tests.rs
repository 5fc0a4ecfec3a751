//! `cw-bus-in`'s decisions without a bus: the replica is fed the events the
//! bus thread would hand it, with times chosen by the test, and the
//! commands it sends towards the bus are read from the channel. Stand-ins,
//! node death, which survivor frees a dead node's names, a node's own
//! claims from an earlier life, and no judgement while cut off.

use super::*;
use crate::hub::HubConfig;

const TIMEOUT: Duration = Duration::from_secs(5);

/// An adapter with no threads: its commands land in the returned receiver.
fn detached(me: &str) -> (Arc<Cluster>, Arc<Hub>, Receiver<BusCmd>) {
    let hub = Arc::new(Hub::new(HubConfig::default()));
    let (tx, rx) = bounded(64);
    let cluster = Arc::new(Cluster {
        cfg: ClusterConfig {
            urls: vec![],
            node: me.into(),
            cluster: "t".into(),
            node_timeout: TIMEOUT,
            bus_timeout: Duration::from_secs(1),
            index: 0,
            addr: String::new(),
            secret: None,
            access: Default::default(),
        },
        epoch: 7,
        out: Outbox {
            cmds: tx,
            wake: Arc::new(Notify::new()),
            up: Arc::new(AtomicBool::new(true)),
            metrics: hub.metrics().clone(),
            lose: Arc::new(Mutex::new(None)),
            lose_pokes: Default::default(),
        },
        claims: Mutex::new(HashMap::new()),
        accounts: RwLock::new(None),
        peers: RwLock::new(HashMap::new()),
        taken: Arc::new(Mutex::new(taken::Retries::default())),
        rooms: Mutex::new(HashMap::new()),
        room_claims: Mutex::new(HashMap::new()),
        joins: Mutex::new(HashMap::new()),
        next_req: std::sync::atomic::AtomicU64::new(1),
        pokes: Mutex::new(pokes::Pokes::default()),
        hold: AtomicBool::new(false),
        stop: Arc::new(AtomicBool::new(false)),
        threads: Mutex::new(Vec::new()),
    });
    hub.set_cluster(cluster.clone());
    (cluster, hub, rx)
}

fn claim(r: &mut Replica, node: &str, epoch: u64, name: &str, revision: u64) {
    for key in name_keys(name) {
        let value = Envelope::Claim {
            node: node.into(),
            epoch,
            dialect: 0,
            name: name.into(),
        }
        .to_bytes();
        r.handle(BusEvent::Put {
            key,
            revision,
            value,
        });
    }
}

fn beat(r: &mut Replica, node: &str) {
    r.handle(BusEvent::Message {
        subject: "cw.t.hb".into(),
        payload: Envelope::Heartbeat {
            node: node.into(),
            epoch: 1,
            index: 9,
            addr: "127.0.0.1:7777".into(),
        }
        .to_bytes(),
    });
}

/// The keys of every Release queued, in order.
fn released(rx: &Receiver<BusCmd>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let Ok(cmd) = rx.try_recv() {
        if let BusCmd::Release { keys } = cmd {
            out.extend(keys);
        }
    }
    out.sort();
    out
}

fn shown(hub: &Hub, name: &str) -> bool {
    hub.online(name).is_some_and(|s| s.remote.is_some())
}

#[test]
fn claims_of_other_nodes_are_stand_ins_until_their_keys_go() {
    let (c, hub, _rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    claim(&mut r, "b", 1, "bob", 10);
    assert!(shown(&hub, "bob"));
    assert_eq!(hub.online("bob").unwrap().remote.as_deref(), Some("b"));
    // bob has two keys: the stand-in goes with the last.
    let keys = name_keys("bob");
    r.handle(BusEvent::Delete {
        key: keys[0].clone(),
    });
    assert_eq!(shown(&hub, "bob"), keys.len() > 1);
    for k in &keys[1..] {
        r.handle(BusEvent::Delete { key: k.clone() });
    }
    assert!(!shown(&hub, "bob"));
}

#[test]
fn a_silent_node_leaves_and_only_the_smallest_live_node_frees_its_names() {
    let t0 = Instant::now();
    for (me, frees) in [("a", true), ("c", false)] {
        let (cl, hub, rx) = detached(me);
        let mut r = Replica::new(&cl, &hub);
        // b dies; a (or c) and the third node stay.
        let other = if me == "a" { "c" } else { "a" };
        claim(&mut r, "b", 1, "bob", 10);
        claim(&mut r, other, 1, "olga", 11);
        r.find_dead(t0, TIMEOUT);
        assert!(shown(&hub, "bob"), "{me}: not judged before the timeout");
        for n in ["b", other] {
            r.nodes.get_mut(n).unwrap().last = t0;
        }
        r.nodes.get_mut(other).unwrap().last = t0 + TIMEOUT;
        r.find_dead(t0 + TIMEOUT + Duration::from_millis(1), TIMEOUT);
        assert!(!shown(&hub, "bob"), "{me}: b's users leave");
        assert!(shown(&hub, "olga"), "{me}: the live node's stay");
        let want: Vec<(String, u64)> = if frees {
            name_keys("bob").into_iter().map(|k| (k, 10)).collect()
        } else {
            vec![]
        };
        assert_eq!(released(&rx), want, "{me} frees b's names: {frees}");
        // b heard again: its users are back.
        beat(&mut r, "b");
        assert!(shown(&hub, "bob"), "{me}: b is back");
    }
}

#[test]
fn this_nodes_claims_from_an_earlier_life_are_freed_after_a_node_timeout() {
    let (c, hub, rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    claim(&mut r, "a", 7, "mine", 3);
    assert!(hub.online("mine").is_none(), "no stand-in for our own user");
    claim(&mut r, "a", 6, "old", 4);
    r.tick(r.started + TIMEOUT / 2, TIMEOUT);
    assert!(released(&rx).is_empty(), "not before a node timeout");
    r.tick(r.started + TIMEOUT + Duration::from_millis(1), TIMEOUT);
    let want: Vec<(String, u64)> = name_keys("old").into_iter().map(|k| (k, 4)).collect();
    assert_eq!(released(&rx), want, "the earlier life's, never this one's");
}

#[test]
fn a_second_live_process_with_this_nodes_name_stops_the_newer_one() {
    let (c, hub, rx) = detached("a");
    // This process started at epoch 7.
    let mut r = Replica::new(&c, &hub);
    let hb = |epoch| BusEvent::Message {
        subject: "cw.t.hb".into(),
        payload: Envelope::Heartbeat {
            node: "a".into(),
            epoch,
            index: 0,
            addr: String::new(),
        }
        .to_bytes(),
    };
    // Its own heartbeat, and a newer process's (which stops itself): fine.
    r.handle(hb(7));
    r.handle(hb(8));
    assert!(r.clash.is_none());
    // An older live process: its claims are not stale, and this one stops.
    claim(&mut r, "a", 5, "theirs", 2);
    r.handle(hb(5));
    assert!(r.clash.is_some());
    r.tick(r.started + 2 * TIMEOUT, TIMEOUT);
    assert!(released(&rx).is_empty(), "the live process keeps its names");
}

#[test]
fn nobody_is_judged_while_this_node_is_off_the_bus() {
    let (c, hub, rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    claim(&mut r, "b", 1, "bob", 10);
    r.handle(BusEvent::Down);
    // A long outage: b was last heard two timeouts ago (the loop skips
    // find_dead while down). Back up, every node gets a full timeout from
    // now.
    let now = Instant::now();
    r.nodes.get_mut("b").unwrap().last = now - 2 * TIMEOUT;
    r.handle(BusEvent::Up);
    r.find_dead(now + TIMEOUT / 2, TIMEOUT);
    assert!(shown(&hub, "bob"));
    assert!(released(&rx).is_empty());
}

#[test]
fn undecodable_bus_messages_and_claims_are_ignored() {
    let (c, hub, _rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    r.handle(BusEvent::Put {
        key: "kff".into(),
        revision: 1,
        value: vec![9, 9, 9],
    });
    r.handle(BusEvent::Message {
        subject: "cw.t.global".into(),
        payload: vec![1, 200],
    });
    r.handle(BusEvent::Delete {
        key: "knone".into(),
    });
    assert_eq!(hub.online_count(), 0);
}

#[test]
fn heartbeats_tell_where_a_node_takes_proxied_private_connections() {
    let (c, hub, _rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    assert_eq!(c.peer_addr("b"), None);
    beat(&mut r, "b");
    assert_eq!(c.peer_addr("b"), Some("127.0.0.1:7777".parse().unwrap()));
    assert_eq!(c.peers.read()["b"].index, 9);
    // Without a secret this node proxies nothing, whatever the id.
    assert!(c
        .proxy_dial(9 << 56, "127.0.0.1".parse().unwrap())
        .is_none());
}

#[test]
fn a_cluster_secret_is_read_without_its_newline_and_a_short_or_loose_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "cw-secret-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let write = |text: &[u8], mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // Mode 0600: read, without its newline.
    write(b"0123456789abcdef\n", 0o600);
    assert_eq!(
        read_secret(&path).unwrap().0.as_slice(),
        b"0123456789abcdef"
    );
    // Readable by others (a plain write's 0644 under the usual umask):
    // refused like every other secret file, naming the key and the file,
    // never the secret.
    write(b"0123456789abcdef\n", 0o644);
    let err = read_secret(&path).unwrap_err().to_string();
    assert!(err.starts_with("cluster_secret_file: "), "{err}");
    assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!err.contains("0123456789"), "{err}");
    write(b"0123456789abcdef", 0o640);
    assert!(read_secret(&path).is_err(), "group");
    // Too short, even when 0600.
    write(b"0123456789abcde\n", 0o600);
    let err = read_secret(&path).unwrap_err().to_string();
    assert!(err.contains("at least 16 bytes"), "{err}");
    assert!(!err.contains("0123456789"), "{err}");
    assert!(read_secret(&dir.join("missing")).is_err());
    // Never printed.
    let s = Secret(Arc::new(b"0123456789abcdef".to_vec()));
    assert_eq!(format!("{s:?}"), "Secret(16 bytes)");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The call ops this node published, in order.
fn call_ops(rx: &Receiver<BusCmd>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(cmd) = rx.try_recv() {
        if let BusCmd::Publish { payload, .. } = cmd {
            if let Ok(Envelope::Call { op, .. }) = Envelope::decode(&payload) {
                out.push(op);
            }
        }
    }
    out
}

#[test]
fn a_taken_is_repeated_until_acknowledged_and_never_after_a_later_event() {
    let t0 = Instant::now();
    let (c, hub, rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    claim(&mut r, "b", 1, "yves", 10);
    let yves = hub.online("yves").unwrap();
    // fern's relayed call to yves (of b) was answered at a's relay.
    yves.peer.deliver(&Event::CallTaken { caller: "fern" });
    assert_eq!(call_ops(&rx), vec![call::TAKEN]);
    c.repeat_taken(t0 + Duration::from_secs(1));
    assert_eq!(call_ops(&rx), vec![call::TAKEN], "repeated");
    // b acknowledges: no more repeats.
    r.handle(BusEvent::Message {
        subject: bus::subject_node("t", "a"),
        payload: Envelope::Call {
            op: call::TAKEN_ACK,
            from: "yves".into(),
            to: "fern".into(),
            host: String::new(),
            port: 0,
        }
        .to_bytes(),
    });
    assert_eq!(c.taken_pending(), 0);
    c.repeat_taken(t0 + Duration::from_secs(30));
    assert_eq!(call_ops(&rx), Vec::<u8>::new());
    // Unacknowledged, then the call ends: the `ended` stops the repeats,
    // so no `taken` can reach b after it.
    yves.peer.deliver(&Event::CallTaken { caller: "fern" });
    yves.peer.deliver(&Event::CallEnded { by: "fern" });
    c.repeat_taken(t0 + Duration::from_secs(60));
    assert_eq!(call_ops(&rx), vec![call::TAKEN, call::ENDED]);
}

/// What a local rooms user's peer is told, as text.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl Peer for Told {
    fn deliver(&self, event: &Event<'_>) -> bool {
        self.0.lock().push(format!("{event:?}"));
        true
    }
}

/// `f`, whose one name claim a thread standing in for the bus grants.
fn claim_granted<R>(rx: &Receiver<BusCmd>, f: impl FnOnce() -> R) -> R {
    let bus = rx.clone();
    let answer = std::thread::spawn(move || {
        if let Ok(BusCmd::Claim { reply, keys, .. }) = bus.recv_timeout(TIMEOUT) {
            let _ = reply.send(Some(keys.into_iter().map(|k| (k, 1)).collect()));
        }
    });
    let r = f();
    answer.join().unwrap();
    r
}

/// A local rooms user of this detached node.
fn local_user(hub: &Hub, rx: &Receiver<BusCmd>, name: &str) -> (Arc<Session>, Arc<Told>) {
    let told = Arc::new(Told::default());
    let entry = crate::hub::Entry::new(Dialect::Rooms, "127.0.0.1".parse().unwrap(), told.clone());
    let s = claim_granted(rx, || hub.login_with(name, entry, |_| {})).expect("logged in");
    (s, told)
}

/// The `Room` ops this node published, in order.
fn room_ops(rx: &Receiver<BusCmd>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(cmd) = rx.try_recv() {
        if let BusCmd::Publish { payload, .. } = cmd {
            if let Ok(Envelope::Room { op, .. }) = Envelope::decode(&payload) {
                out.push(op);
            }
        }
    }
    out
}

/// A `Room` envelope's bytes (centralised, no request, no address).
fn room_bytes(
    op: u8,
    node: &str,
    room: &str,
    from: &str,
    to: &str,
    count: u8,
    text: &str,
) -> Vec<u8> {
    let extra = RoomExtra {
        count,
        text: text.into(),
        ..RoomExtra::default()
    };
    extra.envelope(op, node, room, from, to).to_bytes()
}

fn room_env(op: u8, node: &str, room: &str, from: &str, to: &str, text: &str) -> BusEvent {
    BusEvent::Message {
        subject: "cw.t.node.x".into(),
        payload: room_bytes(op, node, room, from, to, 0, text),
    }
}

fn refusals(hub: &Hub) -> u64 {
    hub.metrics().drops(DropReason::BusRefused)
}

#[test]
fn rooms_envelopes_that_lie_are_refused_and_counted_never_trusted() {
    let (c, hub, rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    let (ann, told_ann) = local_user(&hub, &rx, "ann");
    claim(&mut r, "b", 1, "bob", 10);
    claim(&mut r, "b", 1, "eve", 11);
    claim_granted(&rx, || {
        hub.room_create(&ann, RoomMode::Centralised, "club", 5)
    })
    .unwrap();
    let bob = hub.online("bob").unwrap();
    assert!(hub.room_join(&bob, "club").is_ok());
    told_ann.0.lock().clear();
    let _ = room_ops(&rx);
    let lies = [
        // eve is in no room here: her text, leave and invitation.
        room_env(room::TEXT, "a", "club", "eve", "", "let me in"),
        room_env(room::LEAVE, "a", "club", "eve", "", ""),
        room_env(room::INVITE, "a", "club", "eve", "ann", ""),
        // A room that does not exist; a home that is not this node.
        room_env(room::TEXT, "a", "den", "bob", "", "hi"),
        room_env(room::TEXT, "c", "club", "bob", "", "hi"),
        // Not a user of another node: ann is local, zed unknown.
        room_env(room::TEXT, "a", "club", "ann", "", "hi"),
        room_env(room::TEXT, "a", "club", "zed", "", "hi"),
        // Over the rooms text limit.
        room_env(room::TEXT, "a", "club", "bob", "", &"x".repeat(1_201)),
        // For a member of this node from a home it is not in a room of.
        room_env(room::MESSAGE, "b", "hall", "bob", "ann", "psst"),
        room_env(room::CLOSED, "b", "hall", "", "ann", ""),
        // An answer to no join.
        room_env(room::REFUSED, "b", "hall", "", "ann", ""),
    ];
    let n = lies.len() as u64;
    for lie in lies {
        r.handle(lie);
    }
    assert_eq!(refusals(&hub), n, "each refused and counted");
    assert_eq!(
        room_ops(&rx),
        [room::CLOSED, room::CLOSED, room::LEAVE],
        "eve's and bob's nodes hear they are not in those rooms; a home that \
         takes ann for a member of its room hears she is not"
    );
    assert!(told_ann.0.lock().is_empty(), "nothing reached ann");
    assert_eq!(hub.room_members("club").unwrap().len(), 2);
    // Undecodable (an op past the last, an oversize envelope): counted.
    let mut bad = room_bytes(room::TEXT, "a", "club", "bob", "", 0, "");
    bad[2] = room::LAST + 1;
    for payload in [bad, vec![1; chinwag_proto::bus::MAX_ENVELOPE + 1]] {
        r.handle(BusEvent::Message {
            subject: "cw.t.node.a".into(),
            payload,
        });
    }
    assert_eq!(refusals(&hub), n + 2);
    // The truth goes through: bob's text reaches ann.
    r.handle(room_env(room::TEXT, "a", "club", "bob", "", "hi ann"));
    assert_eq!(
        *told_ann.0.lock(),
        [r#"RoomMessage { from: "bob", room: "club", text: "hi ann" }"#]
    );
    assert_eq!(refusals(&hub), n + 2);
    hub.check_rooms().unwrap();
}

#[test]
fn a_dead_home_closes_its_rooms_for_members_here_and_is_no_longer_listed() {
    let t0 = Instant::now();
    let (c, hub, rx) = detached("b");
    let mut r = Replica::new(&c, &hub);
    let (bob, told_bob) = local_user(&hub, &rx, "bob");
    claim(&mut r, "a", 1, "ann", 10);
    let listed = |count: u8| BusEvent::Message {
        subject: "cw.t.global".into(),
        payload: room_bytes(room::LISTED, "a", "club", "", "", count, "ann\n"),
    };
    r.handle(listed(1));
    assert_eq!(c.room_home("club").as_deref(), Some("a"));
    assert_eq!(hub.room_members("club"), Some(vec!["ann".into()]));
    // bob entered it (an invitation accepted at a).
    hub.room_remote_joined(&bob, "a", "club", RoomMode::Centralised);
    assert_eq!(hub.room_name_of(&bob).as_deref(), Some("club"));
    hub.check_rooms().unwrap();
    // a goes silent: its room closes for bob, who is told, and is unlisted.
    r.nodes.get_mut("a").unwrap().last = t0;
    r.find_dead(t0 + TIMEOUT + Duration::from_millis(1), TIMEOUT);
    assert_eq!(hub.room_name_of(&bob), None);
    assert_eq!(*told_bob.0.lock(), [r#"RoomClosed { room: "club" }"#]);
    assert_eq!(c.room_home("club"), None);
    assert!(hub.room_list().is_empty());
    hub.check_rooms().unwrap();
}

#[test]
fn a_text_right_behind_a_join_answer_finds_the_member_in() {
    let (c, hub, rx) = detached("b");
    let mut r = Replica::new(&c, &hub);
    let (bob, told_bob) = local_user(&hub, &rx, "bob");
    claim(&mut r, "a", 1, "ann", 10);
    r.handle(BusEvent::Message {
        subject: "cw.t.global".into(),
        payload: room_bytes(room::LISTED, "a", "club", "", "", 1, "ann\n"),
    });
    let joining = {
        let (hub, bob) = (hub.clone(), bob.clone());
        std::thread::spawn(move || hub.room_join(&bob, "club"))
    };
    // The join b sent to a.
    let req = loop {
        let cmd = rx.recv_timeout(TIMEOUT).expect("a join");
        if let BusCmd::Publish { payload, .. } = cmd {
            if let Ok(Envelope::Room {
                op: room::JOIN,
                req,
                ..
            }) = Envelope::decode(&payload)
            {
                break req;
            }
        }
    };
    // a's answer and a text of the room right behind it, read at once.
    let joined = RoomExtra {
        req,
        ..RoomExtra::default()
    }
    .envelope(room::JOINED, "a", "club", "", "bob");
    r.handle(BusEvent::Message {
        subject: "cw.t.node.b".into(),
        payload: joined.to_bytes(),
    });
    r.handle(room_env(room::MESSAGE, "a", "club", "ann", "bob", "hi"));
    assert_eq!(
        joining.join().unwrap(),
        Ok((RoomMode::Centralised, Vec::new()))
    );
    assert_eq!(
        *told_bob.0.lock(),
        [r#"RoomMessage { from: "ann", room: "club", text: "hi" }"#]
    );
    assert_eq!(room_ops(&rx), Vec::<u8>::new(), "no leave went to a");
    assert_eq!(refusals(&hub), 0);
    hub.check_rooms().unwrap();
}

fn poke_on(r: &mut Replica, subject: &str, name: &str) {
    r.handle(BusEvent::Message {
        subject: subject.into(),
        payload: Envelope::Poke { name: name.into() }.to_bytes(),
    });
}

/// The pokes this node published, as (subject, name), in order.
fn pokes(rx: &Receiver<BusCmd>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(cmd) = rx.try_recv() {
        if let BusCmd::Publish { subject, payload } = cmd {
            if let Ok(Envelope::Poke { name }) = Envelope::decode(&payload) {
                out.push((subject, name));
            }
        }
    }
    out
}

#[test]
fn a_poke_for_a_user_who_is_not_here_is_passed_on_to_every_node_once() {
    let (c, hub, rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    // Poked as dave's node (a stale view elsewhere): passed on.
    poke_on(&mut r, "cw.t.node.a", "dave");
    assert_eq!(pokes(&rx), [("cw.t.global".to_owned(), "dave".to_owned())]);
    // A poke on the global subject is never passed on (no loop), nor one
    // for another node's subject.
    poke_on(&mut r, "cw.t.global", "dave");
    poke_on(&mut r, "cw.t.node.b", "dave");
    assert_eq!(pokes(&rx), []);
    // A user logging in here (a local session, not yet an accounts member)
    // gets its items from its login's flush: not passed on.
    let _carol = local_user(&hub, &rx, "carol");
    poke_on(&mut r, "cw.t.node.a", "carol");
    assert_eq!(pokes(&rx), []);
}

#[test]
fn held_presence_applies_in_order_once_released() {
    let (c, hub, _rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    c.hold_presence(true);
    claim(&mut r, "b", 1, "bob", 10);
    for k in name_keys("bob") {
        r.handle(BusEvent::Delete { key: k });
    }
    claim(&mut r, "c", 1, "bob", 11);
    assert!(!shown(&hub, "bob"), "held");
    c.hold_presence(false);
    r.tick(Instant::now(), TIMEOUT);
    assert_eq!(hub.online("bob").unwrap().remote.as_deref(), Some("c"));
}

#[test]
fn pokes_for_one_user_are_limited_and_the_deferred_one_goes_on_a_tick() {
    let (c, hub, rx) = detached("a");
    let mut r = Replica::new(&c, &hub);
    for _ in 0..50 {
        c.poke(Some("b"), "dave");
    }
    c.poke(None, "carol");
    assert_eq!(
        pokes(&rx),
        [
            ("cw.t.node.b".to_owned(), "dave".to_owned()),
            ("cw.t.global".to_owned(), "carol".to_owned())
        ]
    );
    r.tick(Instant::now() + pokes::GAP, TIMEOUT);
    assert_eq!(pokes(&rx), [("cw.t.node.b".to_owned(), "dave".to_owned())]);
    r.tick(Instant::now() + pokes::GAP * 3, TIMEOUT);
    assert_eq!(pokes(&rx), []);
}
