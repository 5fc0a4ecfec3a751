//! Cluster mode end to end (docs/scaling.md): a real nats-server (JetStream
//! in a temporary directory) and a real PostgreSQL, both from Debian's
//! packages, and two or three chinwagd nodes on 127.0.0.1 with port 0.
//! Users on different nodes chat in every bridged form; a name is unique
//! across nodes under a login race; a node killed with SIGKILL leaves the
//! others' presence within the documented bound with nothing acknowledged
//! lost; accounts data written through one node is read through another;
//! the bus stopped: logins refused, local chat flowing, reconciliation;
//! a chatos private connection proxied to the node that issued its id (and
//! forged proxy handshakes refused); a relayed call between nodes through
//! the caller's node's relay.
//! Every wait polls with a deadline; every child process is stopped on
//! drop.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::babel::Frame as Babel;
use chinwag_proto::chatos::Command;
use chinwag_proto::rooms::Body;
use chinwagd::{Config, Server};

#[path = "common/budget.rs"]
mod budget;
#[path = "common/certs.rs"]
mod certs;
mod common;
use common::{babel, chatos, friends, login, register, send, Wire, WAIT};
use rand::{RngCore, SeedableRng};
mod rooms_support;
#[path = "common/nats.rs"]
mod testnats;
#[path = "common/postgres.rs"]
mod testpg;
use rooms_support::Client as Rooms;

/// The node timeout the tests run with (the smallest allowed).
const NODE_TIMEOUT_MS: u64 = 2_000;

struct Cluster {
    nats: testnats::Nats,
    pg: Arc<testpg::Postgres>,
    store_url: String,
    schema: String,
}

/// A bus and a database schema of its own; None when a tool is missing and
/// the tests are to skip.
fn cluster() -> Option<Cluster> {
    cluster_on(testnats::Nats::start()?)
}

impl Cluster {
    fn config(&self, node: &str) -> Config {
        Config {
            bus_url: self.nats.url(),
            node_name: node.into(),
            store_url: self.store_url.clone(),
            node_timeout_ms: NODE_TIMEOUT_MS,
            ..Config::ephemeral()
        }
    }

    fn node(&self, name: &str) -> Server {
        Server::start(self.config(name)).expect("node starts")
    }

    /// A node that takes chatos private connections proxied from others
    /// (`cluster_addr` on port 0, the secret in `secret`).
    fn proxy_node(&self, name: &str, index: u8, secret: &std::path::Path) -> Server {
        Server::start(self.proxy_config(name, index, secret)).expect("node starts")
    }

    fn proxy_config(&self, name: &str, index: u8, secret: &std::path::Path) -> Config {
        Config {
            node_index: index,
            cluster_addr: "127.0.0.1:0".into(),
            cluster_secret_file: secret.display().to_string(),
            ..self.config(name)
        }
    }

    /// A node as a process of its own (to be killed).
    fn process(&self, name: &str) -> Process {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chinwagd"));
        cmd.args(["--bind", "127.0.0.1", "--admin-socket", "off"])
            .args(["--chatos-port", "0", "--babel-port", "0"])
            .args(["--accounts-port", "0", "--rooms-port", "0"])
            .args(["--bus-url", &self.nats.url(), "--node-name", name])
            .args(["--store-url", &self.store_url])
            .args(["--node-timeout-ms", &NODE_TIMEOUT_MS.to_string()]);
        Process(common::Chinwagd::spawn(&mut cmd))
    }
}

/// A cluster secret file (mode 0600), removed on drop.
struct SecretFile(std::path::PathBuf);

impl SecretFile {
    fn new(tag: &str) -> SecretFile {
        use std::os::unix::fs::PermissionsExt;
        let path = common::temp_dir(tag).join("cluster.secret");
        std::fs::write(&path, b"a shared secret of this test cluster\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        SecretFile(path)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A chinwagd process, killed on drop (a failing test leaves none behind).
struct Process(common::Chinwagd);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// A cluster with nodes a and b in this process.
fn two_nodes() -> Option<(Cluster, Server, Server)> {
    let c = cluster()?;
    let (a, b) = (c.node("a"), c.node("b"));
    Some((c, a, b))
}

/// Nodes a and b relaying every call (`call_relay = "all"`).
fn two_relaying_nodes() -> Option<(Cluster, Server, Server)> {
    let c = cluster()?;
    let node = |name: &str| {
        Server::start(Config {
            call_relay: "all".into(),
            ..c.config(name)
        })
        .expect("node starts")
    };
    let (a, b) = (node("a"), node("b"));
    Some((c, a, b))
}

/// Friends with accounts: carol logged in on `a`, dave on `b`.
fn carol_on_a_dave_on_b(a: &Server, b: &Server) -> (Wire<Acc>, Wire<Acc>) {
    let at = a.accounts_addr();
    friends(at, ("carol", at), ("dave", b.accounts_addr()))
}

/// A relayed call between an accounts user (`acc`) and babel user `bab`
/// ends: babel's hang-up (its voice connection closes), which the accounts
/// user hears, or the accounts user's, which closes babel's connection.
fn hang_up(call: common::BabelToAccounts, acc: &mut Wire<Acc>, bab: &str, from_babel: bool) {
    if from_babel {
        drop(call);
        assert_eq!(acc.recv(), Acc::HungUp { pseudo: bab.into() });
    } else {
        send(acc, Acc::Hangup { pseudo: bab.into() });
        let mut s = call.peer.s;
        common::expect_eof(&mut s, &format!("{bab}'s voice connection"));
    }
}

/// Two relayed calls through `a`'s relay between an accounts user and a
/// babel user (the babel one calling when `babel_calls`): voice both ways
/// byte for byte, then a hang-up from the accounts side, then from babel.
fn calls_through_a(
    a: &Server,
    b: &Server,
    (acc, accn): (&mut Wire<Acc>, &str),
    (bab, babn): (&mut Wire<Babel>, &str),
    babel_calls: bool,
) {
    for from_babel in [false, true] {
        let mut call = if babel_calls {
            common::babel_calls_accounts(bab, babn, acc, accn)
        } else {
            common::accounts_calls_babel(acc, accn, bab, babn)
        };
        assert_eq!((a.relayed_calls(), b.relayed_calls()), (1, 0), "a relays");
        common::voice_both_ways(&mut call);
        if !babel_calls {
            // The babel callee answered through a's relay: b learns it.
            both_halves_answered(a, b);
        }
        hang_up(call, acc, babn, from_babel);
        calls_end(a, b);
    }
}

/// The one call on `a` and `b` is answered on both nodes (the callee's
/// node included, when the callee answered through the caller's relay),
/// and counted as active there, long before a ringing call's 60 s.
fn both_halves_answered(a: &Server, b: &Server) {
    let answered = |s: &Server| {
        let calls = s.hub().calls();
        calls.len() == 1 && calls[0].state == chinwagd::hub::calls::CallState::Answered
    };
    eventually("both halves answered", WAIT, || answered(a) && answered(b));
    assert_eq!((a.hub().calls_answered(), b.hub().calls_answered()), (1, 1));
}

/// Every call on `a` and `b` ends, and `a`'s relay allocations with them.
fn calls_end(a: &Server, b: &Server) {
    eventually("both halves and the allocation end", WAIT, || {
        a.relayed_calls() == 0 && a.hub().calls().is_empty() && b.hub().calls().is_empty()
    });
}

/// chatos MESSAGE_PRIVATE.
fn private(from: &str, to: &str, text: &str) -> Command {
    Command::MessagePrivate {
        from: from.into(),
        to: to.into(),
        text: text.into(),
    }
}

/// Until `w` hears `DelContact` for `name` (other contact changes skipped).
fn hears_gone(w: &mut Wire<Babel>, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match w.try_recv(deadline.saturating_duration_since(Instant::now())) {
            Some(Babel::DelContact { contacts }) if contacts == [name] => return,
            Some(_) => {}
            None => panic!("no DelContact for {name}"),
        }
    }
}

fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what} (waited {within:?})");
        thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Until `srv` shows `name` as a user of another node (or not at all).
fn sees(srv: &Server, name: &str, online: bool) {
    eventually(
        &format!("{name} {}", if online { "shown" } else { "gone" }),
        WAIT,
        || srv.hub().online(name).is_some_and(|s| s.remote.is_some()) == online,
    );
}

// ---- raw clients ----

fn chatos_try(addr: SocketAddr, name: &str) -> (Wire<Command>, Command) {
    let mut c = Wire::<Command>::new(TcpStream::connect(addr).unwrap());
    c.send_bytes(&Command::Login { login: name.into() }.to_bytes());
    let answer = c.recv();
    (c, answer)
}

fn say(w: &mut Wire<Acc>, to: &str, text: &str) {
    send(
        w,
        Acc::SendMessage {
            pseudo: to.into(),
            text: text.into(),
        },
    );
}

fn heard(from: &str, text: &str) -> Acc {
    Acc::Message {
        pseudo: from.into(),
        text: text.into(),
    }
}

/// Every page of the history with `pseudo`, oldest first.
fn history(a: &mut Wire<Acc>, pseudo: &str) -> Vec<String> {
    send(
        a,
        Acc::History {
            pseudo: pseudo.into(),
            before: 0,
        },
    );
    let Acc::HistoryPage { entries, .. } = a.recv() else {
        panic!("161")
    };
    entries.into_iter().map(|e| e.text).collect()
}

// ---- every bridged form across two nodes ----

#[test]
fn public_text_crosses_nodes_between_chatos_and_rooms() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let mut alice = chatos(a.chatos_addr(), "alice");
    let mut bob = chatos(b.chatos_addr(), "bob");
    let roo = Rooms::register(b.rooms_addr(), "roo");
    sees(&a, "bob", true);
    sees(&a, "roo", true);
    // chatos on A -> chatos and rooms on B.
    alice.send_bytes(
        &Command::Message {
            from: "alice".into(),
            text: "hi all".into(),
        }
        .to_bytes(),
    );
    let hi = Command::Message {
        from: "alice".into(),
        text: "hi all".into(),
    };
    assert_eq!(alice.recv(), hi, "the local echo");
    assert_eq!(bob.recv(), hi, "chatos on the other node");
    let m = roo.expect("alice's text on the other node", |b| {
        matches!(b, Body::Text { .. })
    });
    assert_eq!(
        m.body,
        Body::Text {
            chat: "alice: hi all".into()
        }
    );
    // rooms on B -> chatos on A (and B).
    let mut roo = roo;
    assert_eq!(
        roo.ask(Body::Text {
            chat: "from the room".into()
        }),
        Body::TextAck
    );
    let from_roo = Command::Message {
        from: "roo".into(),
        text: "from the room".into(),
    };
    assert_eq!(alice.recv(), from_roo);
    assert_eq!(bob.recv(), from_roo);
    // Nothing came twice.
    alice.expect_silence();
    bob.expect_silence();
}

#[test]
fn private_text_crosses_nodes_between_chatos_and_accounts_online_and_offline() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    // chatos <-> chatos.
    let mut alice = chatos(a.chatos_addr(), "alice");
    let mut bob = chatos(b.chatos_addr(), "bob");
    sees(&a, "bob", true);
    sees(&b, "alice", true);
    alice.send_bytes(&private("alice", "bob", "psst").to_bytes());
    assert_eq!(bob.recv(), private("alice", "bob", "psst"));
    // chatos on A <-> accounts on B.
    register(a.accounts_addr(), "dave");
    let mut dave = login(b.accounts_addr(), "dave");
    sees(&a, "dave", true);
    alice.send_bytes(&private("alice", "dave", "to an account").to_bytes());
    assert_eq!(dave.recv(), heard("alice", "to an account"));
    say(&mut dave, "alice", "to a guest");
    assert_eq!(dave.recv(), Acc::MessageStored);
    assert_eq!(alice.recv(), private("dave", "alice", "to a guest"));
    // Offline: dave leaves B; alice's text waits in the shared store and
    // reaches dave when he logs in on A.
    drop(dave);
    sees(&a, "dave", false);
    alice.send_bytes(&private("alice", "dave", "while you were out").to_bytes());
    // Stored as guest mail by A's store thread, whose queue the login's
    // flush on A follows.
    let mut dave = login(a.accounts_addr(), "dave");
    assert_eq!(dave.recv(), heard("alice", "while you were out"));
}

#[test]
fn accounts_friends_on_two_nodes_message_each_other_online_and_offline() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut carol, mut dave) = carol_on_a_dave_on_b(&a, &b);
    say(&mut carol, "dave", "hello across");
    assert_eq!(carol.recv(), Acc::MessageStored);
    assert_eq!(dave.recv(), heard("carol", "hello across"));
    say(&mut dave, "carol", "and back");
    assert_eq!(dave.recv(), Acc::MessageStored);
    assert_eq!(carol.recv(), heard("dave", "and back"));
    // Offline on every node: stored, delivered at the login on A.
    drop(dave);
    sees(&a, "dave", false);
    say(&mut carol, "dave", "stored for later");
    assert_eq!(carol.recv(), Acc::MessageStored);
    let mut dave = login(a.accounts_addr(), "dave");
    assert_eq!(dave.recv(), heard("carol", "stored for later"));
    // Accounts data written through A is read through B.
    drop(carol);
    let mut carol_b = login(b.accounts_addr(), "carol");
    assert_eq!(
        history(&mut carol_b, "dave"),
        ["hello across", "and back", "stored for later"]
    );
    send(&mut carol_b, Acc::ListFriends);
    assert_eq!(
        carol_b.recv(),
        Acc::Friends {
            pseudos: vec!["dave".into()]
        }
    );
    drop(dave);
}

/// Until `srv` shows `name` as a user of node `node`.
fn sees_on(srv: &Server, name: &str, node: &str) {
    eventually(&format!("{name} shown on {node}"), WAIT, || {
        srv.hub()
            .online(name)
            .is_some_and(|s| s.remote.as_deref() == Some(node))
    });
}

/// Until `w`'s node has run its login's offline flush: a store job queued
/// after it (a friend request to nobody) is answered.
fn flushed(w: &mut Wire<Acc>) {
    send(
        w,
        Acc::FriendRequest {
            pseudo: "nobody".into(),
        },
    );
    assert_eq!(
        w.recv(),
        Acc::NoSuchUser {
            pseudo: "nobody".into()
        }
    );
}

/// B's view of the `names` bucket frozen (the test hook holds back every
/// login and logout of other nodes): what B's users send `to` is sent as
/// to someone B does not see where it is. Then the view catches up.
fn with_presence_held(b: &Server, f: impl FnOnce()) {
    b.cluster().unwrap().hold_presence(true);
    f();
    b.cluster().unwrap().hold_presence(false);
}

/// B's view released: once B sees dave on A, `send` has `from` send him
/// "after", and that is the next and last thing dave hears (nothing from
/// the window came twice).
fn then_only_after(b: &Server, dave: &mut Wire<Acc>, from: &str, send: impl FnOnce()) {
    b.cluster().unwrap().hold_presence(false);
    sees_on(b, "dave", "a");
    send();
    assert_eq!(dave.recv(), heard(from, "after"));
    assert_eq!(dave.try_recv(Duration::from_millis(300)), None);
}

/// The window between a login on A and B hearing of it (the bus brings
/// presence a moment later): an accounts message sent from B in it is
/// stored, acknowledged, and reaches the recipient at once, exactly once;
/// not at the next login.
#[test]
fn an_accounts_message_sent_before_the_recipients_login_is_seen_reaches_it_at_once() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut carol, dave) = friends(
        b.accounts_addr(),
        ("carol", b.accounts_addr()),
        ("dave", a.accounts_addr()),
    );
    drop(dave);
    sees(&b, "dave", false);
    with_presence_held(&b, || {
        let mut dave = login(a.accounts_addr(), "dave");
        flushed(&mut dave);
        assert!(b.hub().online("dave").is_none(), "B must not see dave yet");
        say(&mut carol, "dave", "in the window");
        assert_eq!(carol.recv(), Acc::MessageStored);
        assert_eq!(dave.recv(), heard("carol", "in the window"));
        // A burst: B's pokes for dave are limited (one per 100 ms, the
        // rest deferred and coalesced), yet every message arrives, in order.
        for i in 0..5 {
            say(&mut carol, "dave", &format!("burst {i}"));
        }
        for i in 0..5 {
            assert_eq!(carol.recv(), Acc::MessageStored);
            assert_eq!(dave.recv(), heard("carol", &format!("burst {i}")));
        }
        assert!(b.hub().online("dave").is_none(), "still held");
        then_only_after(&b, &mut dave, "carol", || {
            say(&mut carol, "dave", "after");
            assert_eq!(carol.recv(), Acc::MessageStored);
        });
    });
}

/// The same window for a chatos guest's private text to a registered
/// accounts user: kept as guest mail by B, then delivered by A at once.
#[test]
fn a_guests_text_sent_before_the_recipients_login_is_seen_reaches_it_at_once() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    register(a.accounts_addr(), "dave");
    let mut alice = chatos(b.chatos_addr(), "alice");
    with_presence_held(&b, || {
        let mut dave = login(a.accounts_addr(), "dave");
        flushed(&mut dave);
        assert!(b.hub().online("dave").is_none(), "B must not see dave yet");
        alice.send_bytes(&private("alice", "dave", "in the window").to_bytes());
        assert_eq!(dave.recv(), heard("alice", "in the window"));
        then_only_after(&b, &mut dave, "alice", || {
            alice.send_bytes(&private("alice", "dave", "after").to_bytes());
        });
    });
}

/// The same window for what is not stored: B treats bob (chatos, on A) as
/// offline, as one node does just before a login. A chatos text and a
/// REQUEST_PRIVATE are dropped without an answer (chatos has none), an
/// accounts message to a guest is answered 153. Once B sees bob, they flow.
#[test]
fn live_texts_sent_before_the_recipients_login_is_seen_are_answered_as_offline() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    register(b.accounts_addr(), "carol");
    let mut carol = login(b.accounts_addr(), "carol");
    let mut alice = chatos(b.chatos_addr(), "alice");
    with_presence_held(&b, || {
        let mut bob = chatos(a.chatos_addr(), "bob");
        assert!(b.hub().online("bob").is_none(), "B must not see bob yet");
        alice.send_bytes(&private("alice", "bob", "lost").to_bytes());
        alice.send_bytes(
            &Command::RequestPrivate {
                requester: "alice".into(),
                target: "bob".into(),
            }
            .to_bytes(),
        );
        say(&mut carol, "bob", "to a guest");
        assert_eq!(carol.recv(), Acc::MessageFailed);
        b.cluster().unwrap().hold_presence(false);
        sees_on(&b, "bob", "a");
        alice.send_bytes(&private("alice", "bob", "now").to_bytes());
        assert_eq!(bob.recv(), private("alice", "bob", "now"));
        assert_eq!(alice.try_recv(Duration::from_millis(300)), None);
    });
}

/// A stale view: B still sees dave on C, which he left for A. The message
/// is poked to C, which does not have him: C passes the poke on to every
/// node, and A delivers it at once, exactly once.
#[test]
fn an_accounts_message_poked_to_a_node_the_recipient_left_reaches_it_on_its_new_node() {
    let Some(c) = cluster() else {
        return;
    };
    let (a, b, node_c) = (c.node("a"), c.node("b"), c.node("c"));
    let (mut carol, dave) = friends(
        b.accounts_addr(),
        ("carol", b.accounts_addr()),
        ("dave", node_c.accounts_addr()),
    );
    sees_on(&b, "dave", "c");
    with_presence_held(&b, || {
        drop(dave);
        sees(&a, "dave", false);
        let mut dave = login(a.accounts_addr(), "dave");
        flushed(&mut dave);
        sees_on(&node_c, "dave", "a");
        assert!(
            b.hub()
                .online("dave")
                .is_some_and(|s| s.remote.as_deref() == Some("c")),
            "B must still see dave on C"
        );
        say(&mut carol, "dave", "to the old node");
        assert_eq!(carol.recv(), Acc::MessageStored);
        assert_eq!(dave.recv(), heard("carol", "to the old node"));
        then_only_after(&b, &mut dave, "carol", || {
            say(&mut carol, "dave", "after");
            assert_eq!(carol.recv(), Acc::MessageStored);
        });
    });
}

/// A poke is at most once: when it is lost on the bus, the recipient's
/// node still finds the stored message on its re-check of its users'
/// stored items (one batch a second), and delivers it exactly once.
#[test]
fn an_accounts_message_whose_poke_is_lost_on_the_bus_still_reaches_the_recipient() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut carol, mut dave) = carol_on_a_dave_on_b(&a, &b);
    sees_on(&a, "dave", "b");
    flushed(&mut dave);
    let node_a = a.cluster().unwrap();
    node_a.lose_pokes(1);
    let sent = Instant::now();
    say(&mut carol, "dave", "its poke was lost");
    assert_eq!(carol.recv(), Acc::MessageStored);
    // The poke follows the acknowledgement.
    eventually("the poke lost", WAIT, || node_a.pokes_to_lose() == 0);
    assert_eq!(dave.recv(), heard("carol", "its poke was lost"));
    eprintln!("delivered {:?} after its lost poke", sent.elapsed());
    assert_eq!(dave.try_recv(Duration::from_millis(1_500)), None, "once");
    // With its poke, the next one is there at once.
    say(&mut carol, "dave", "poked");
    assert_eq!(carol.recv(), Acc::MessageStored);
    assert_eq!(dave.recv(), heard("carol", "poked"));
}

/// Look-alike pseudos registered through two nodes at the same moment
/// (within one bus round trip, before either node hears of the other's):
/// the store settles it, exactly one is registered and the other hears the
/// dialect's "pseudo taken" (103), round after round.
#[test]
fn look_alike_pseudos_registered_through_two_nodes_at_once_register_once() {
    let Some((c, a, b)) = two_nodes() else { return };
    let addrs = [a.accounts_addr(), b.accounts_addr()];
    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        let pseudos = [format!("twin{round}"), format!("TWIN{round}")];
        let gate = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let (gate, at) = (gate.clone(), addrs[i]);
                let (email, pseudo) = (format!("twin{round}.{i}@example.org"), pseudos[i].clone());
                thread::spawn(move || {
                    let mut w = common::accounts(at);
                    let hello = Acc::Register {
                        email,
                        pseudo,
                        password: "correct horse".into(),
                    }
                    .to_bytes();
                    gate.wait();
                    w.send_bytes(&hello);
                    w.recv()
                })
            })
            .collect();
        let answers: Vec<Acc> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let won = answers.iter().filter(|f| **f == Acc::Registered).count();
        assert_eq!(won, 1, "round {round}: exactly one registers: {answers:?}");
        assert!(
            answers.contains(&Acc::PseudoTaken),
            "round {round}: {answers:?}"
        );
        // Both nodes keep the winner's name (and its look-alikes) for its
        // account, the loser's node included.
        let winner = &pseudos[answers.iter().position(|f| *f == Acc::Registered).unwrap()];
        for node in [&a, &b] {
            eventually("the winner's pseudo is reserved", WAIT, || {
                chatos_try(node.chatos_addr(), winner).1 == Command::LoginRefused
            });
        }
    }
    let registered = c.pg.session(&c.schema).query_one(
        "SELECT count(*) FROM accounts WHERE pseudo LIKE 'twin%' OR pseudo LIKE 'TWIN%'",
        &[],
    );
    assert_eq!(registered.unwrap().get::<_, i64>(0), ROUNDS as i64);
}

#[test]
fn a_pseudo_registered_through_one_node_is_reserved_on_the_other() {
    let Some((c, a, b)) = two_nodes() else { return };
    let mut bob = chatos(b.chatos_addr(), "bob");
    register(a.accounts_addr(), "gail");
    // B started before gail existed; the announcement reaches it.
    eventually("B reserves gail for her account", WAIT, || {
        chatos_try(b.chatos_addr(), "gail").1 == Command::LoginRefused
    });
    assert_eq!(
        chatos_try(b.chatos_addr(), "GAIL").1,
        Command::LoginRefused,
        "look-alikes too"
    );
    // A guest on B writes to gail, offline: kept for her, read through A.
    bob.send_bytes(&private("bob", "gail", "welcome").to_bytes());
    bob.expect_silence();
    let mut db = c.pg.session(&c.schema);
    eventually("the guest's text is stored", WAIT, || {
        let n: i64 = db
            .query_one("SELECT count(*) FROM guest_mail", &[])
            .unwrap()
            .get(0);
        n == 1
    });
    let mut gail = login(a.accounts_addr(), "gail");
    assert_eq!(gail.recv(), heard("bob", "welcome"));
}

#[test]
fn accounts_users_on_two_nodes_call_each_other_peer_to_peer() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut carol, mut dave) = carol_on_a_dave_on_b(&a, &b);
    sees(&a, "dave", true);
    // carol on A calls dave on B: B's half of the call tells dave where
    // carol's voice is (her address as A saw it).
    common::call(&mut carol, "dave", 4001);
    assert_eq!(
        dave.recv(),
        Acc::IncomingCall {
            pseudo: "carol".into(),
            addr: "127.0.0.1".into(),
            port: 4001
        }
    );
    send(
        &mut dave,
        Acc::AnswerCall {
            pseudo: "carol".into(),
            addr: String::new(),
            port: 4002,
        },
    );
    assert_eq!(
        carol.recv(),
        Acc::CallAccepted {
            pseudo: "dave".into(),
            addr: "127.0.0.1".into(),
            port: 4002
        }
    );
    assert_eq!((a.hub().calls_answered(), b.hub().calls_answered()), (1, 1));
    // A hang-up on B reaches A.
    send(
        &mut dave,
        Acc::Hangup {
            pseudo: "carol".into(),
        },
    );
    assert_eq!(
        carol.recv(),
        Acc::HungUp {
            pseudo: "dave".into()
        }
    );
    eventually("both halves ended", WAIT, || {
        a.hub().calls().is_empty() && b.hub().calls().is_empty()
    });
    // Declined on B: carol on A hears it.
    common::call(&mut carol, "dave", 4003);
    assert!(matches!(dave.recv(), Acc::IncomingCall { .. }));
    send(
        &mut dave,
        Acc::DeclineCall {
            pseudo: "carol".into(),
        },
    );
    assert!(
        matches!(carol.recv(), Acc::CallFailed { .. }),
        "the caller hears the refusal"
    );
    // dave's node dies mid-call: carol hears a hang-up (the stand-in left).
    common::call(&mut carol, "dave", 4004);
    assert!(matches!(dave.recv(), Acc::IncomingCall { .. }));
    drop(dave);
    let got = carol.recv();
    assert!(
        matches!(got, Acc::CallFailed { .. } | Acc::HungUp { .. }),
        "{got:?}"
    );
}

#[test]
fn babel_users_on_two_nodes_ring_each_other_and_refuse() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut zed, _) = babel(a.babel_addr(), "zed");
    sees(&b, "zed", true);
    let (mut yan, contacts) = babel(b.babel_addr(), "yan");
    assert_eq!(contacts, ["zed"]);
    sees(&a, "yan", true);
    zed.send_bytes(
        &Babel::CallRequest {
            contact: "yan".into(),
            host: String::new(),
            port: 4100,
        }
        .to_bytes(),
    );
    // yan on B is rung with zed's listening end, as A saw it.
    let ring = common::babel_recv_past_contacts(&mut yan);
    assert_eq!(
        ring,
        Babel::CallRequest {
            contact: "zed".into(),
            host: "127.0.0.1".into(),
            port: 4100
        }
    );
    yan.send_bytes(
        &Babel::CallRefused {
            contact: "zed".into(),
        }
        .to_bytes(),
    );
    let refused = common::babel_recv_past_contacts(&mut zed);
    assert_eq!(
        refused,
        Babel::CallRefused {
            contact: "yan".into()
        }
    );
    eventually("both halves ended", WAIT, || {
        a.hub().calls().is_empty() && b.hub().calls().is_empty()
    });
}

#[test]
fn babel_contact_lists_show_callable_users_of_other_nodes() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    register(a.accounts_addr(), "erin");
    let erin = login(a.accounts_addr(), "erin");
    let (_zed_a, _) = babel(a.babel_addr(), "zed");
    sees(&b, "erin", true);
    sees(&b, "zed", true);
    let (mut yan, contacts) = babel(b.babel_addr(), "yan");
    let mut listed = contacts.clone();
    listed.sort();
    assert_eq!(
        listed,
        ["erin", "zed"],
        "users of node A that babel can call"
    );
    // A user of A leaves: B's babel client hears it.
    drop(erin);
    hears_gone(&mut yan, "erin");
    // A call to a user of another node answers as offline (calls between
    // nodes are not built; docs/scaling.md).
    assert!(b.hub().online("zed").is_some_and(|s| s.remote.is_some()));
}

/// One JSON request on the admin socket at `sock`; its answer.
fn admin(sock: &std::path::Path, request: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    writeln!(s, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn an_operators_ban_and_kick_through_one_node_reach_users_of_the_other() {
    let Some(c) = cluster() else { return };
    let dir = common::temp_dir("cluster-admin");
    let sock = dir.join("a.sock");
    let a = Server::start(Config {
        admin_socket: sock.clone(),
        ..c.config("a")
    })
    .expect("node a starts");
    let b = c.node("b");
    let mut eve = chatos(b.chatos_addr(), "eve");
    let mut kim = chatos(b.chatos_addr(), "kim");
    sees(&a, "eve", true);
    sees(&a, "kim", true);
    // A kick through A closes kim's connection on B.
    let answer = admin(&sock, r#"{"cmd":"kick","name":"kim"}"#);
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    kim.expect_closed();
    // A name ban through A: eve is closed on B and cannot log in there again.
    let answer = admin(&sock, r#"{"cmd":"ban","name":"eve","reason":"spam"}"#);
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    eve.expect_closed();
    eventually("B refuses eve", WAIT, || {
        b.hub().online("eve").is_none()
            && chatos_try(b.chatos_addr(), "eve").1 == Command::LoginRefused
    });
    // Unbanned through A: B admits eve again.
    let answer = admin(&sock, r#"{"cmd":"unban","name":"eve"}"#);
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    eventually("B admits eve again", WAIT, || {
        chatos_try(b.chatos_addr(), "eve").1 == Command::LoginAccepted
    });
    drop(a);
    let _ = std::fs::remove_dir_all(dir);
}

/// Names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn a_node_that_cannot_start_leaves_the_bus() {
    let Some(c) = cluster() else { return };
    let a = c.node("a");
    // Thread names carry the node's (as far as 15 bytes go): no other test
    // runs a node with this one.
    let ours = |t: &String| t == "cw-bus-zq" || t == "cw-bus-in-zq";
    // Its chatos port is A's: the start fails after joining the bus.
    let err = Server::start(Config {
        chatos_port: a.chatos_addr().port(),
        ..c.config("zq")
    })
    .err()
    .expect("a port in use stops the start");
    assert!(err.to_string().contains("chatos"), "{err}");
    eventually("its bus threads end", WAIT, || !threads().iter().any(ours));
    // And the one that started is still on the bus alone.
    let _alice = chatos(a.chatos_addr(), "alice");
}

// ---- one name across the cluster ----

#[test]
fn a_name_is_unique_across_nodes_under_a_login_race() {
    let Some(c) = cluster() else { return };
    let nodes = [c.node("a"), c.node("b"), c.node("c")];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.chatos_addr()).collect();
    for round in 0..12 {
        // Odd rounds race look-alikes ("racer1", "RACER1", "Racer1": one
        // skeleton), even rounds the same name.
        let name = |i: usize| match (round % 2, i) {
            (0, _) | (_, 0) => format!("racer{round}"),
            (_, 1) => format!("RACER{round}"),
            _ => format!("Racer{round}"),
        };
        let gate = Arc::new(Barrier::new(addrs.len()));
        let racers: Vec<_> = (0..addrs.len())
            .map(|i| {
                let (gate, at, name) = (gate.clone(), addrs[i], name(i));
                thread::spawn(move || {
                    gate.wait();
                    chatos_try(at, &name)
                })
            })
            .collect();
        let mut results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let won: Vec<usize> = (0..addrs.len())
            .filter(|&i| results[i].1 == Command::LoginAccepted)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one of three logins wins"
        );
        for (i, (_, answer)) in results.iter().enumerate() {
            if i != won[0] {
                assert_eq!(*answer, Command::LoginRefused, "round {round}, node {i}");
            }
        }
        // A loser's node gets the name once the winner leaves.
        let (winner, _) = results.remove(won[0]);
        drop(winner);
        let loser = (won[0] + 1) % addrs.len();
        eventually("a loser logs in after the winner left", WAIT, || {
            chatos_try(addrs[loser], &name(loser)).1 == Command::LoginAccepted
        });
    }
}

// ---- node death ----

#[test]
fn sigkill_of_a_node_removes_its_users_within_the_timeout_and_loses_nothing_acknowledged() {
    let Some(c) = cluster() else { return };
    let a = c.node("a");
    let mut b = c.process("b");
    let mut alice = chatos(a.chatos_addr(), "alice");
    let mut amy = chatos(a.chatos_addr(), "amy");
    let _bea = chatos(b.0.chatos, "bea");
    let (mut carol, mut dave) = friends(
        a.accounts_addr(),
        ("carol", a.accounts_addr()),
        ("dave", b.0.accounts),
    );
    let (mut zed, _) = babel(a.babel_addr(), "zed");
    sees(&a, "bea", true);
    sees(&a, "dave", true);
    // Acknowledged through B just before it dies.
    let acked: Vec<String> = (0..5).map(|i| format!("acked {i}")).collect();
    for t in &acked {
        say(&mut dave, "carol", t);
        assert_eq!(dave.recv(), Acc::MessageStored);
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(b.0.child.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let _ = b.0.child.wait();
    // Documented bound: node_timeout_ms + one heartbeat (1 s), plus the
    // detector's 200 ms tick; a loaded machine gets 2 s more.
    let bound = Duration::from_millis(NODE_TIMEOUT_MS + 1_000 + 200);
    let slack = Duration::from_secs(2);
    eventually("bea leaves A's presence", bound + slack, || {
        a.hub().online("bea").is_none() && a.hub().online("dave").is_none()
    });
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(NODE_TIMEOUT_MS) - Duration::from_millis(1_100),
        "removed before the timeout could pass: {took:?}"
    );
    eprintln!("users of the killed node left A's presence {took:?} after SIGKILL");
    // A's babel client heard dave leave.
    hears_gone(&mut zed, "dave");
    // Nothing acknowledged is lost: carol heard some live (each 152 went
    // out before its poke, so the last pokes may have died with B); the
    // rest reach her at her next login, through A; the history read
    // through A has them all, once each.
    // Every poke B sent before it died reached A long before its users
    // left (the bus is quicker than node_timeout_ms); the flushes they
    // started have run once a job queued now is committed.
    a.store().call_committed(|_| ()).expect("A's store answers");
    let mut got: Vec<String> = Vec::new();
    while let Some(m) = carol.try_recv(Duration::from_millis(500)) {
        let Acc::Message { pseudo, text } = m else {
            panic!("{m:?}")
        };
        assert_eq!(pseudo, "dave");
        got.push(text);
    }
    drop(carol);
    eventually("carol's old session gone", WAIT, || {
        a.hub().online("carol").is_none()
    });
    let mut carol = login(a.accounts_addr(), "carol");
    while got.len() < acked.len() {
        let Some(Acc::Message { text, .. }) = carol.try_recv(WAIT) else {
            panic!("acknowledged messages missing: have {got:?}")
        };
        got.push(text);
    }
    assert_eq!(got, acked, "every acknowledged message once, in order");
    let h = history(&mut carol, "dave");
    assert_eq!(h[h.len() - acked.len()..], acked[..]);
    // A's own users are untouched.
    alice.send_bytes(&private("alice", "amy", "still here").to_bytes());
    assert_eq!(amy.recv(), private("alice", "amy", "still here"));
    // The dead node's names were freed: bea and dave log in on A.
    eventually("bea's name freed", WAIT, || {
        chatos_try(a.chatos_addr(), "bea").1 == Command::LoginAccepted
    });
    let _dave = login(a.accounts_addr(), "dave");
}

// ---- the bus unreachable ----

#[test]
fn without_the_bus_logins_are_refused_local_chat_flows_and_names_hold() {
    let Some((c, a, b)) = two_nodes() else { return };
    let mut alice = chatos(a.chatos_addr(), "alice");
    let mut amy = chatos(a.chatos_addr(), "amy");
    let _bob = chatos(b.chatos_addr(), "bob");
    sees(&a, "bob", true);
    c.nats.kill();
    let cl = a.cluster().expect("cluster mode");
    eventually("A notices the bus is gone", WAIT, || !cl.bus_up());
    // New logins are refused (each dialect's usual refusal).
    let (_, answer) = chatos_try(a.chatos_addr(), "newcomer");
    assert_eq!(answer, Command::LoginRefused);
    // Local traffic goes on.
    alice.send_bytes(
        &Command::Message {
            from: "alice".into(),
            text: "local still works".into(),
        }
        .to_bytes(),
    );
    let local = Command::Message {
        from: "alice".into(),
        text: "local still works".into(),
    };
    assert_eq!(alice.recv(), local);
    assert_eq!(amy.recv(), local);
    // Longer than node_timeout_ms: nobody can tell a dead node from its
    // own outage, so nobody is judged; bob stays listed on A.
    thread::sleep(Duration::from_millis(NODE_TIMEOUT_MS + 1_500));
    assert!(a.hub().online("bob").is_some_and(|s| s.remote.is_some()));
    c.nats.restart();
    eventually("A is back on the bus", WAIT, || cl.bus_up());
    eventually("a new login is admitted again", WAIT, || {
        chatos_try(a.chatos_addr(), "newcomer").1 == Command::LoginAccepted
    });
    // The names held before the outage are still held.
    assert_eq!(
        chatos_try(b.chatos_addr(), "alice").1,
        Command::LoginRefused
    );
    assert_eq!(chatos_try(a.chatos_addr(), "bob").1, Command::LoginRefused);
    sees(&b, "alice", true);
}

/// A TCP relay between one node and the bus that the test can cut: the
/// node alone loses the bus.
struct Link {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Link {
    fn to(upstream: u16) -> Link {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, s, cs) = (open.clone(), stop.clone(), conns.clone());
        let accept = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((down, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if !o.load(Ordering::SeqCst) {
                    continue; // refused: closed at once
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                down.set_nonblocking(false).unwrap();
                let mut guard = cs.lock().unwrap();
                guard.push(down.try_clone().unwrap());
                guard.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Link {
            addr,
            open,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_node_cut_off_the_bus_loses_its_users_elsewhere_then_reconciles() {
    let Some(c) = cluster() else { return };
    let link = Link::to(c.nats.port);
    let a = Server::start(Config {
        bus_url: link.url(),
        ..c.config("a")
    })
    .expect("node a starts");
    let b = c.node("b");
    let mut alice = chatos(a.chatos_addr(), "alice");
    let mut amy = chatos(a.chatos_addr(), "amy");
    sees(&b, "alice", true);
    sees(&b, "amy", true);
    link.cut();
    let cl = a.cluster().expect("cluster mode");
    eventually("A notices the bus is gone", WAIT, || !cl.bus_up());
    assert_eq!(
        chatos_try(a.chatos_addr(), "newcomer").1,
        Command::LoginRefused
    );
    // B, still on the bus, finds A dead and frees its names.
    sees(&b, "alice", false);
    sees(&b, "amy", false);
    eventually("amy's name freed on B", WAIT, || {
        chatos_try(b.chatos_addr(), "amy").1 == Command::LoginAccepted
    });
    let mut amy_b = None;
    // The login above was dropped at once; take the name for good now.
    eventually("a second amy logs in on B", WAIT, || {
        let (w, answer) = chatos_try(b.chatos_addr(), "amy");
        amy_b = Some(w);
        answer == Command::LoginAccepted
    });
    // Local chat on A goes on meanwhile.
    alice.send_bytes(&private("alice", "amy", "cut off").to_bytes());
    assert!(matches!(amy.recv(), Command::MessagePrivate { .. }));
    link.heal();
    eventually("A is back on the bus", WAIT, || cl.bus_up());
    // Reconciled: alice claimed her freed name again and B shows her; the
    // name amy was taken by the newer login on B, so A's amy is
    // disconnected and B's amy is shown on A.
    sees(&b, "alice", true);
    amy.expect_closed();
    sees(&a, "amy", true);
    assert_eq!(
        chatos_try(b.chatos_addr(), "alice").1,
        Command::LoginRefused
    );
    drop(amy_b);
}

// ---- chatos private connections across nodes ----

/// Nodes a (index 1) and b (index 2) that proxy private connections, each
/// knowing the other's node-to-node listener, with chatos users alice on a
/// and bob on b who see each other.
fn proxied_pair(
    c: &Cluster,
    secret: &SecretFile,
) -> (Server, Server, Wire<Command>, Wire<Command>) {
    proxied_pair_with(c, secret, |_| {})
}

/// The same, node a's configuration changed by `tweak_a`.
fn proxied_pair_with(
    c: &Cluster,
    secret: &SecretFile,
    tweak_a: impl FnOnce(&mut Config),
) -> (Server, Server, Wire<Command>, Wire<Command>) {
    let mut cfg_a = c.proxy_config("a", 1, &secret.0);
    tweak_a(&mut cfg_a);
    let a = Server::start(cfg_a).expect("node starts");
    let b = c.proxy_node("b", 2, &secret.0);
    for (here, there) in [(&a, &b), (&b, &a)] {
        let name = there.cluster().unwrap().node().to_owned();
        eventually("the other node's listener advertised", WAIT, || {
            here.cluster().unwrap().peer_addr(&name) == there.proxy_addr()
        });
    }
    let alice = chatos(a.chatos_addr(), "alice");
    let bob = chatos(b.chatos_addr(), "bob");
    sees(&a, "bob", true);
    sees(&b, "alice", true);
    (a, b, alice, bob)
}

/// alice (on a) asks bob (on b), bob accepts: both get one connect id.
fn negotiate_across(alice: &mut Wire<Command>, bob: &mut Wire<Command>) -> i64 {
    let ask = Command::RequestPrivate {
        requester: "alice".into(),
        target: "bob".into(),
    };
    alice.send_bytes(&ask.to_bytes());
    assert_eq!(bob.recv(), ask);
    bob.send_bytes(
        &Command::OkPrivate {
            requester: "alice".into(),
            target: "bob".into(),
        }
        .to_bytes(),
    );
    let Command::IdPrivate {
        requester,
        target,
        connect_id,
    } = alice.recv()
    else {
        panic!("ID_PRIVATE for alice")
    };
    assert_eq!((requester.as_str(), target.as_str()), ("alice", "bob"));
    assert_eq!(
        bob.recv(),
        Command::IdPrivate {
            requester: "alice".into(),
            target: "bob".into(),
            connect_id
        }
    );
    connect_id
}

/// alice sends CLOSE_CONNECTION for `id` (with bob): both hear
/// ACCEPT_CLOSE_CONNECTION.
fn alice_closes(alice: &mut Wire<Command>, bob: &mut Wire<Command>, id: i64) {
    alice.send_bytes(
        &Command::CloseConnection {
            connect_id: id,
            requester: "alice".into(),
            target: "bob".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        alice.recv(),
        Command::AcceptCloseConnection {
            login: "bob".into()
        }
    );
    assert_eq!(
        bob.recv(),
        Command::AcceptCloseConnection {
            login: "alice".into()
        }
    );
}

fn open_private(addr: SocketAddr, id: i64) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&Command::LoginPrivate { connect_id: id }.to_bytes())
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn expect_established(s: &mut TcpStream) {
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    assert_eq!(one, [0x0a], "ESTABLISHED");
}

#[test]
fn a_chatos_private_connection_between_nodes_is_proxied_to_the_issuing_node() {
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("proxied");
    let (a, b, mut alice, mut bob) = proxied_pair(&c, &secret);
    let id = negotiate_across(&mut alice, &mut bob);
    assert_eq!(
        id as u64 >> 56,
        2,
        "the id names b, the node that issued it"
    );

    // Each end's LOGIN_PRIVATE goes to its own node; alice's is proxied.
    let mut pa = open_private(a.chatos_addr(), id);
    let mut pb = open_private(b.chatos_addr(), id);
    expect_established(&mut pa);
    expect_established(&mut pb);
    assert_eq!(a.hub().proxy_count(), 1, "a proxies alice's end");
    assert_eq!(b.hub().relay_count(), 1, "b relays");

    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut from_a = vec![0u8; 300_000];
    let mut from_b = vec![0u8; 300_000];
    rng.fill_bytes(&mut from_a);
    rng.fill_bytes(&mut from_b);
    let exchange = |mine: &TcpStream, out: Vec<u8>| {
        let mut w = mine.try_clone().unwrap();
        let mut r = mine.try_clone().unwrap();
        thread::spawn(move || {
            let n = out.len();
            let writer = thread::spawn(move || {
                for chunk in out.chunks(7919) {
                    w.write_all(chunk).unwrap();
                }
            });
            let mut got = vec![0u8; n];
            r.read_exact(&mut got).unwrap();
            writer.join().unwrap();
            got
        })
    };
    let ta = exchange(&pa, from_a.clone());
    let tb = exchange(&pb, from_b.clone());
    assert!(
        ta.join().unwrap() == from_b,
        "alice got bob's bytes exactly"
    );
    assert!(
        tb.join().unwrap() == from_a,
        "bob got alice's bytes exactly"
    );

    // alice closes through her own node: b holds the relay, closes it, and
    // both hear ACCEPT_CLOSE_CONNECTION; both private sockets end.
    alice_closes(&mut alice, &mut bob, id);
    for (s, who) in [(&mut pa, "alice"), (&mut pb, "bob")] {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{who}'s private socket ends: {rest:?}");
    }
    // Both sides are shut at once, as on one node: the proxy ends while
    // alice still holds her socket.
    eventually("the proxy and the relay end", WAIT, || {
        a.hub().proxy_count() == 0 && b.hub().relay_count() == 0
    });
    drop((pa, pb));

    // The id was single use, through either node.
    for addr in [a.chatos_addr(), b.chatos_addr()] {
        let mut again = open_private(addr, id);
        common::expect_eof(&mut again, "a used connect id");
    }

    // A second connection, the other way round (bob asks, so a issues),
    // closed by the user of the issuing node.
    let ask = Command::RequestPrivate {
        requester: "bob".into(),
        target: "alice".into(),
    };
    bob.send_bytes(&ask.to_bytes());
    assert_eq!(alice.recv(), ask);
    alice.send_bytes(
        &Command::OkPrivate {
            requester: "bob".into(),
            target: "alice".into(),
        }
        .to_bytes(),
    );
    let Command::IdPrivate {
        connect_id: id2, ..
    } = bob.recv()
    else {
        panic!("ID_PRIVATE for bob")
    };
    assert!(matches!(alice.recv(), Command::IdPrivate { connect_id, .. } if connect_id == id2));
    assert_eq!(id2 as u64 >> 56, 1, "issued by a");
    let mut pb = open_private(b.chatos_addr(), id2);
    let mut pa = open_private(a.chatos_addr(), id2);
    expect_established(&mut pb);
    expect_established(&mut pa);
    pb.write_all(b"ping from bob").unwrap();
    let mut got = [0u8; 13];
    pa.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping from bob");
    pa.write_all(b"pong").unwrap();
    let mut got = [0u8; 4];
    pb.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    alice_closes(&mut alice, &mut bob, id2);
    for s in [&mut pa, &mut pb] {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    eventually("b's proxy and a's relay end", WAIT, || {
        b.hub().proxy_count() == 0 && a.hub().relay_count() == 0
    });
}

/// One direction ended (`shutdown(SHUT_WR)` by `closer`): the other still
/// carries bytes (4 MiB, so a relay end torn down when the first direction
/// ended cannot carry it all in the meantime), then ends in turn.
fn half_close(closer: &mut TcpStream, other: &mut TcpStream, what: &str) {
    closer.write_all(what.as_bytes()).unwrap();
    closer.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    other.read_to_end(&mut got).unwrap();
    assert_eq!(
        got,
        what.as_bytes(),
        "{what}: the bytes, then end of stream"
    );
    let answer: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut w = other.try_clone().unwrap();
    let expected = answer.clone();
    let writer = thread::spawn(move || {
        let sent = w.write_all(&answer);
        let _ = w.shutdown(Shutdown::Write);
        sent
    });
    let mut back = Vec::new();
    let read = closer.read_to_end(&mut back);
    let sent = writer.join().unwrap();
    assert!(
        sent.is_ok() && read.is_ok() && back == expected,
        "{what}: the other direction outlives the first one's end \
         (sent {sent:?}, read {read:?}, {} of {} bytes back)",
        back.len(),
        expected.len()
    );
}

#[test]
fn a_proxied_private_connection_half_closes_each_direction_independently() {
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("half-close");
    let (a, b, mut alice, mut bob) = proxied_pair(&c, &secret);
    // The proxied end (alice's, on a) closes first, then the issuing
    // node's end (bob's, on b) does.
    for alice_first in [true, false] {
        let id = negotiate_across(&mut alice, &mut bob);
        let mut pa = open_private(a.chatos_addr(), id);
        let mut pb = open_private(b.chatos_addr(), id);
        expect_established(&mut pa);
        expect_established(&mut pb);
        if alice_first {
            half_close(&mut pa, &mut pb, "alice closes first");
        } else {
            half_close(&mut pb, &mut pa, "bob closes first");
        }
        eventually("the proxy and the relay end", WAIT, || {
            a.hub().proxy_count() == 0 && b.hub().relay_count() == 0
        });
    }
}

#[test]
fn a_forged_proxy_handshake_is_refused_and_counted() {
    use chinwagd::cluster::proxy::{encode, Hello};
    use chinwagd::metrics::DropReason;
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("forged");
    let (_a, b, mut alice, mut bob) = proxied_pair(&c, &secret);
    let id = negotiate_across(&mut alice, &mut bob);
    let hello = Hello {
        connect_id: id,
        ip: "127.0.0.1".parse().unwrap(),
        node: "a".into(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let to = b.proxy_addr().unwrap();
    let drops = || b.hub().metrics().drops(DropReason::ProxyHandshake);
    // A wrong secret, a stale handshake and garbage: each dropped without
    // a byte, counted, and the id still unused.
    let forged = [
        encode(b"not the cluster's secret at all", &hello, now),
        encode(b"a shared secret of this test cluster", &hello, now - 3600),
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    ];
    for (i, bytes) in forged.iter().enumerate() {
        let mut s = TcpStream::connect(to).unwrap();
        s.write_all(bytes).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        common::expect_eof(&mut s, "a forged handshake");
        eventually("the bad handshake counted", WAIT, || {
            drops() == i as u64 + 1
        });
    }
    assert_eq!(b.hub().relay_count(), 0);
    // The genuine ends still meet.
    let mut pa = open_private(_a.chatos_addr(), id);
    let mut pb = open_private(b.chatos_addr(), id);
    expect_established(&mut pa);
    expect_established(&mut pb);
}

/// Across nodes too, a private end whose partner's session ends before
/// the partner's end came is closed at once and its slots given back on
/// both nodes (docs/protocols/chatos.md): alice's end, proxied from a to
/// the issuing node b, when bob leaves b; then bob's end, waiting on b,
/// when alice leaves a (b learns it over the bus).
#[test]
fn a_private_end_across_nodes_whose_partner_leaves_is_closed_at_once() {
    let Some(c) = cluster() else {
        return;
    };
    let secret = SecretFile::new("proxy-partner-left");
    let (a, b, mut alice, mut bob) = proxied_pair(&c, &secret);
    let in_use = |n: usize| a.hub().relays_in_use() == n && b.hub().relays_in_use() == n;
    let id = negotiate_across(&mut alice, &mut bob);
    let mut pa = open_private(a.chatos_addr(), id);
    eventually("alice's end proxied and waiting", WAIT, || in_use(1));
    let left = Instant::now();
    drop(bob);
    common::expect_eof(&mut pa, "alice's end, once bob left");
    let took = left.elapsed();
    eventually("both nodes' slots given back", WAIT, || in_use(0));
    let mut bob = chatos(b.chatos_addr(), "bob");
    sees(&a, "bob", true);
    let id = negotiate_across(&mut alice, &mut bob);
    let mut pb = open_private(b.chatos_addr(), id);
    eventually("bob's end waiting", WAIT, || b.hub().relays_in_use() == 1);
    let left = Instant::now();
    drop(alice);
    common::expect_eof(&mut pb, "bob's end, once alice left");
    eprintln!(
        "ends closed {took:?} after bob left b, {:?} after alice left a",
        left.elapsed()
    );
    eventually("b's slot given back", WAIT, || in_use(0));
}

/// A node whose thread budget is spent closes a node-to-node connection
/// at once, counted, instead of starting a thread outside the budget; with
/// threads back it serves them again.
#[test]
fn a_proxied_connection_past_the_thread_budget_is_closed_and_counted() {
    use chinwagd::metrics::DropReason;
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("budget");
    // No spare threads: nothing starts or ends in the background.
    let b = Server::start(Config {
        max_threads: 16,
        spare_threads: 0,
        cluster_addr: "127.0.0.1:0".into(),
        cluster_secret_file: secret.0.display().to_string(),
        ..c.config("b")
    })
    .expect("node starts");
    let (to, m) = (b.proxy_addr().unwrap(), b.hub().metrics().clone());
    let spent = budget::spend(&b);
    // No byte sent: a served connection would wait 5 s for its handshake.
    let mut s = TcpStream::connect(to).unwrap();
    eventually("the connection refused a thread, counted", WAIT, || {
        m.drops(DropReason::ThreadBudget) == 1
    });
    common::expect_eof(&mut s, "a proxied connection without a thread");
    drop(spent);
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    common::expect_eof(&mut s, "a bad handshake");
    eventually("read and refused by a thread", WAIT, || {
        m.drops(DropReason::ProxyHandshake) == 1
    });
    assert_eq!(m.drops(DropReason::ThreadBudget), 1);
}

/// The proxying node with its thread budget spent: a LOGIN_PRIVATE for an
/// id of another node gets its (parked) connection thread, but no thread
/// for the proxy's other direction; the client's connection is closed,
/// counted, and nothing else is harmed.
#[test]
fn a_proxy_refused_a_thread_on_the_proxying_node_is_closed_and_counted() {
    use chinwagd::metrics::DropReason;
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("budget-out");
    let (a, _b, mut alice, mut bob) = proxied_pair_with(&c, &secret, |cfg| {
        cfg.max_threads = 32;
        cfg.spare_threads = 1;
    });
    let id = negotiate_across(&mut alice, &mut bob);
    // alice's connection thread and one parked spare, then nothing left.
    eventually("one spare parked", WAIT, || a.parked_threads() == 1);
    let spent = budget::spend(&a);
    let m = a.hub().metrics().clone();
    let mut pa = open_private(a.chatos_addr(), id);
    let mut got = Vec::new();
    let _ = pa.read_to_end(&mut got);
    assert!(got.is_empty(), "closed without ESTABLISHED: {got:?}");
    assert_eq!(m.drops(DropReason::ThreadBudget), 1);
    assert_eq!(a.hub().relay_count(), 0);
    drop(spent);
    // alice's chatos session goes on.
    alice.send_bytes(&private("alice", "bob", "still here").to_bytes());
    assert_eq!(bob.recv(), private("alice", "bob", "still here"));
}

// ---- relayed calls across nodes ----

#[test]
fn a_babel_user_on_one_node_calls_an_accounts_user_on_another_through_the_callers_relay() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    register(b.accounts_addr(), "erin");
    let mut erin = login(b.accounts_addr(), "erin");
    let (mut zed, _) = babel(a.babel_addr(), "zed");
    sees(&a, "erin", true);
    // erin, on b, is told a's relay address (never zed's end point);
    // voice goes both ways through it, byte for byte.
    calls_through_a(&a, &b, (&mut erin, "erin"), (&mut zed, "zed"), true);
}

/// fern, an accounts user, logged in on `a`; yves, a babel user, on `b`;
/// each sees the other.
fn fern_on_a_yves_on_b(a: &Server, b: &Server) -> (Wire<Acc>, Wire<Babel>) {
    register(a.accounts_addr(), "fern");
    let fern = login(a.accounts_addr(), "fern");
    let (mut yves, contacts) = babel(b.babel_addr(), "yves");
    sees(a, "yves", true);
    // yves may hear of fern (on a) after his login's list: a call from
    // fern must not be mistaken for that AddContact.
    common::babel_waits_for_contact(&mut yves, &contacts, "fern");
    (fern, yves)
}

#[test]
fn an_accounts_user_on_one_node_calls_a_babel_user_on_another_through_the_callers_relay() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut fern, mut yves) = fern_on_a_yves_on_b(&a, &b);
    // yves, on b, is told a's relay (never fern's end point) and answers
    // by connecting to it, as on one node.
    calls_through_a(&a, &b, (&mut fern, "fern"), (&mut yves, "yves"), false);
    // A babel refusal reaches fern through b.
    let (_voice, vport) = common::udp();
    common::call(&mut fern, "yves", vport);
    assert!(matches!(yves.recv(), Babel::CallRequest { .. }));
    yves.send_bytes(
        &Babel::CallRefused {
            contact: "fern".into(),
        }
        .to_bytes(),
    );
    assert_eq!(
        fern.recv(),
        Acc::CallFailed {
            pseudo: "yves".into()
        }
    );
    calls_end(&a, &b);
}

#[test]
fn accounts_users_on_two_nodes_call_through_the_callers_relay_with_call_relay_all() {
    let Some((_c, a, b)) = two_relaying_nodes() else {
        return;
    };
    let (mut carol, mut dave) = carol_on_a_dave_on_b(&a, &b);
    let (vc, pc) = common::udp();
    let (vd, pd) = common::udp();
    common::call(&mut carol, "dave", pc);
    let Acc::IncomingCall { addr, port, .. } = dave.recv() else {
        panic!("143")
    };
    assert_ne!(port, pc, "dave is not told carol's port");
    assert_eq!((a.relayed_calls(), b.relayed_calls()), (1, 0), "a relays");
    let d_to = SocketAddr::new(addr.parse().unwrap(), port);
    send(
        &mut dave,
        Acc::AnswerCall {
            pseudo: "carol".into(),
            addr: String::new(),
            port: pd,
        },
    );
    let Acc::CallAccepted { addr, port, .. } = carol.recv() else {
        panic!("141")
    };
    assert_ne!(port, pd, "carol is not told dave's port");
    let c_to = SocketAddr::new(addr.parse().unwrap(), port);
    // Voice both ways, the very bytes, always from the relay.
    for i in 0..5u16 {
        let p = common::media(i, &[0xfc, i as u8]);
        vc.send_to(&p, c_to).unwrap();
        let (d, from) = common::datagram(&vd);
        assert_eq!((d, from), (p, d_to));
        let q = common::media(100 + i, &[0xfc, 9]);
        vd.send_to(&q, d_to).unwrap();
        let (d, from) = common::datagram(&vc);
        assert_eq!((d, from), (q, c_to));
    }
    // dave hangs up through his node; carol hears it, the allocation goes.
    send(
        &mut dave,
        Acc::Hangup {
            pseudo: "carol".into(),
        },
    );
    assert_eq!(
        carol.recv(),
        Acc::HungUp {
            pseudo: "dave".into()
        }
    );
    calls_end(&a, &b);
}

#[test]
fn babel_users_on_two_nodes_call_through_the_callers_relay_with_call_relay_all() {
    let Some((_c, a, b)) = two_relaying_nodes() else {
        return;
    };
    let (mut zed, _) = babel(a.babel_addr(), "zed");
    let (mut yves, contacts) = babel(b.babel_addr(), "yves");
    sees(&a, "yves", true);
    // yves may hear of zed (on a) after his login's list: a call from
    // zed must not be mistaken for that AddContact.
    common::babel_waits_for_contact(&mut yves, &contacts, "zed");
    // Twice: zed (the caller) hangs up, then yves (the callee), by
    // closing his voice connection; the other's goes too, and both nodes
    // forget the call (b learnt of yves's answer through a's relay).
    for callee_hangs_up in [false, true] {
        let (l, lport) = common::listen();
        zed.send_bytes(
            &Babel::CallRequest {
                contact: "yves".into(),
                host: String::new(),
                port: lport,
            }
            .to_bytes(),
        );
        let Babel::CallRequest {
            contact,
            host,
            port,
        } = yves.recv()
        else {
            panic!("CallRequest")
        };
        assert_eq!(contact, "zed");
        assert_ne!(port, lport, "never zed's own end point");
        assert_eq!((a.relayed_calls(), b.relayed_calls()), (1, 0), "a relays");
        // yves connects to a's relay; the relay then dials zed.
        let at = SocketAddr::new(host.parse().unwrap(), port);
        let mut to_yves = Wire::<Babel>::new(TcpStream::connect(at).unwrap());
        assert_eq!(to_yves.recv(), Babel::ConnectionEstablished);
        let mut to_zed = Wire::<Babel>::new(common::accept_within(&l));
        to_zed.send_bytes(&Babel::ConnectionEstablished.to_bytes());
        // Voice sent before the relay has read zed's greeting may be dropped:
        // send until one is through, then byte for byte both ways.
        let mut n = 0u8;
        loop {
            to_yves.send_bytes(
                &Babel::VoiceData {
                    data: vec![0xfc, n],
                }
                .to_bytes(),
            );
            n += 1;
            if to_zed.try_recv(Duration::from_millis(50)).is_some() {
                break;
            }
            assert!(n < 200, "the relay never carried voice to zed");
        }
        for i in 0..5u8 {
            let v = Babel::VoiceData {
                data: vec![0xfc, i, 0x11],
            };
            to_zed.send_bytes(&v.to_bytes());
            assert_eq!(to_yves.recv(), v);
            let w = Babel::VoiceData {
                data: vec![0xfc, i, 0x22, 0x33],
            };
            to_yves.send_bytes(&w.to_bytes());
            // Past any late warm-up packet (two bytes).
            let got = loop {
                match to_zed.recv() {
                    Babel::VoiceData { data } if data.len() == 2 => continue,
                    f => break f,
                }
            };
            assert_eq!(got, w);
        }
        both_halves_answered(&a, &b);
        if callee_hangs_up {
            drop(to_yves);
            common::expect_eof(&mut to_zed.s, "zed's voice connection");
        } else {
            drop(to_zed);
            common::expect_eof(&mut to_yves.s, "yves's voice connection");
        }
        calls_end(&a, &b);
    }
}

/// The chinwagd binary as node `l` of `c` with a node-to-node listener on
/// port 0 and the cluster secret `secret`.
fn proxy_node_command(c: &Cluster, secret: &SecretFile) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chinwagd"));
    cmd.args(common::ALL_PORTS_FREE)
        .args(["--admin-socket", "off", "--node-index", "3"])
        .args(["--bus-url", &c.nats.url(), "--node-name", "l"])
        .args(["--store-url", &c.store_url])
        .args(["--cluster-addr", "127.0.0.1:0", "--cluster-secret-file"])
        .arg(&secret.0);
    cmd
}

/// A node's `listening:` line names its node-to-node listener too, with
/// the port it bound (docs/operations.md).
#[test]
fn the_listening_line_names_the_cluster_listener() {
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("listening");
    let mut cmd = proxy_node_command(&c, &secret);
    let node = Process(common::Chinwagd::spawn(&mut cmd));
    let at = node.0.cluster.expect("the cluster listener is in the line");
    assert_ne!(at.port(), 0);
    TcpStream::connect(at).expect("the node-to-node listener accepts");
}

/// A cluster secret others can read stops the start like any other secret
/// file (it only drew a warning before): one line naming the key, the file
/// and the fix, exit status 1, the secret nowhere.
#[test]
fn a_cluster_secret_others_can_read_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let Some(c) = cluster() else { return };
    let secret = SecretFile::new("loose-secret");
    std::fs::set_permissions(&secret.0, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(
        Config {
            cluster_addr: "127.0.0.1:0".into(),
            cluster_secret_file: secret.0.display().to_string(),
            ..c.config("a")
        },
        &["shared secret"],
    );
    assert!(err.contains("cluster_secret_file"), "{err}");
    assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
    let mut cmd = proxy_node_command(&c, &secret);
    let err = common::Chinwagd::try_spawn(&mut cmd, "error", false)
        .err()
        .expect("the process must not start");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(
        err.contains("cluster_secret_file") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(err.contains(&secret.0.display().to_string()), "{err}");
    assert!(!err.contains(" | "), "one line: {err}");
    assert!(!err.contains("shared secret"), "{err}");
    // Made 0600, the same file serves.
    std::fs::set_permissions(&secret.0, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Process(common::Chinwagd::spawn(&mut cmd));
    assert!(node.0.cluster.is_some());
}

/// The bus loses the `taken` envelope (Call op 5) of a relayed call to a
/// babel callee of another node: the callee's node still learns that its
/// half was answered, well within a ringing call's 60 s.
#[test]
fn a_lost_taken_envelope_still_answers_the_callees_half() {
    use chinwag_proto::bus::call;
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut fern, mut yves) = fern_on_a_yves_on_b(&a, &b);
    // The first `taken` is lost, and so is the acknowledgement of the
    // second: a sends it a third time, b acknowledges again.
    a.cluster().unwrap().lose_calls(call::TAKEN, 1);
    b.cluster().unwrap().lose_calls(call::TAKEN_ACK, 1);
    let mut voice = common::accounts_calls_babel(&mut fern, "fern", &mut yves, "yves");
    common::voice_both_ways(&mut voice);
    // Within the first repeats (250 ms, then 500 ms later), not 60 s.
    let took = eventually("b's half answered", WAIT, || {
        b.hub().calls().first().map(|c| c.state) == Some(chinwagd::hub::calls::CallState::Answered)
    });
    assert!(took < Duration::from_secs(5), "b learnt it after {took:?}");
    both_halves_answered(&a, &b);
    eventually("a's repeats acknowledged", WAIT, || {
        a.cluster().unwrap().taken_pending() == 0
    });
    hang_up(voice, &mut fern, "yves", false);
    calls_end(&a, &b);
}

// ---- rooms private rooms across nodes ----

use chinwag_proto::rooms::{Access, Creation, Mode};

/// `c` creates private room `name` on its node; its answer.
fn create_room(c: &mut Rooms, name: &str, mode: Mode, max: u8) -> Creation {
    match c.ask(Body::CreateRoom {
        mode,
        name: name.into(),
        max,
    }) {
        Body::CreateAnswer { status, .. } => status,
        other => panic!("create {name}: {other:?}"),
    }
}

/// How many members `c`'s node lists for room `name` (None: not listed).
fn room_listed(c: &mut Rooms, name: &str) -> Option<u8> {
    match c.ask(Body::ListRooms) {
        Body::RoomList { rooms } => rooms
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.clients),
        other => panic!("list: {other:?}"),
    }
}

fn join_room(c: &mut Rooms, name: &str) -> Body {
    c.ask(Body::AccessRoom { name: name.into() })
}

fn granted(mode: Mode) -> Body {
    Body::AccessAnswer {
        mode,
        status: Access::Granted,
        peers: vec![],
    }
}

/// The next text `c` hears: from the server, named in the text.
fn hears_text(c: &Rooms, chat: &str) {
    let m = c.expect(chat, |b| matches!(b, Body::Text { .. }));
    assert_eq!(
        m.body,
        Body::Text { chat: chat.into() },
        "a text of another node's member is named in the text"
    );
    assert_eq!(m.user, chinwag_proto::rooms::SERVER);
}

fn hears_closed(c: &Rooms, room: &str) {
    let m = c.expect("the room closing", |b| matches!(b, Body::RoomClosed { .. }));
    assert_eq!(m.body, Body::RoomClosed { room: room.into() });
}

fn room_of(srv: &Server, name: &str) -> Option<String> {
    let s = srv.hub().online(name)?;
    srv.hub().room_name_of(&s)
}

/// ann on a and bob on b, registered rooms users each node shows the other.
fn ann_on_a_bob_on_b(a: &Server, b: &Server) -> (Rooms, Rooms) {
    let ann = Rooms::register(a.rooms_addr(), "ann");
    let bob = Rooms::register(b.rooms_addr(), "bob");
    sees(a, "bob", true);
    sees(b, "ann", true);
    (ann, bob)
}

#[test]
fn a_private_room_of_one_node_is_listed_joined_and_talked_in_from_another() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut ann, mut bob) = ann_on_a_bob_on_b(&a, &b);
    let mut cy = chatos(b.chatos_addr(), "cy");
    assert_eq!(
        create_room(&mut ann, "the club", Mode::Centralised, 5),
        Creation::Created
    );
    // Listed on b, with its one member; its name is taken there too.
    eventually("b lists a's room", WAIT, || {
        room_listed(&mut bob, "the club") == Some(1)
    });
    assert_eq!(
        create_room(&mut bob, "the club", Mode::Centralised, 5),
        Creation::NameExists
    );
    // bob enters it from b.
    assert_eq!(join_room(&mut bob, "the club"), granted(Mode::Centralised));
    assert_eq!(room_of(&b, "bob").as_deref(), Some("the club"));
    assert_eq!(
        a.hub().room_members("the club"),
        Some(vec!["ann".into(), "bob".into()])
    );
    eventually("b lists two members", WAIT, || {
        room_listed(&mut bob, "the club") == Some(2)
    });
    // Asking again changes nothing.
    assert_eq!(join_room(&mut bob, "the club"), granted(Mode::Centralised));
    // Texts both ways.
    assert_eq!(
        ann.ask(Body::Text {
            chat: "hi bob".into()
        }),
        Body::TextAck
    );
    hears_text(&bob, "ann: hi bob");
    assert_eq!(ann.silence(Duration::from_millis(200)), None);
    assert_eq!(
        bob.ask(Body::Text {
            chat: "hi ann".into()
        }),
        Body::TextAck
    );
    hears_text(&ann, "bob: hi ann");
    // bob is out of b's public room: cy's public text does not reach him.
    cy.send_bytes(
        &Command::Message {
            from: "cy".into(),
            text: "public".into(),
        }
        .to_bytes(),
    );
    assert!(matches!(cy.recv(), Command::Message { .. }), "cy's echo");
    assert_eq!(bob.silence(Duration::from_millis(500)), None);
    assert_eq!(ann.silence(Duration::from_millis(100)), None);
    // bob leaves: the room is down to ann, and closes.
    assert_eq!(bob.ask(Body::Leave), Body::LeaveAnswer { ok: true });
    hears_closed(&ann, "the club");
    assert_eq!(room_of(&a, "ann"), None);
    assert_eq!(room_of(&b, "bob"), None);
    eventually("b no longer lists it", WAIT, || {
        room_listed(&mut bob, "the club").is_none()
    });
    // bob is back in b's public room.
    cy.send_bytes(
        &Command::Message {
            from: "cy".into(),
            text: "again".into(),
        }
        .to_bytes(),
    );
    hears_text(&bob, "cy: again");
    a.hub().check_rooms().unwrap();
    b.hub().check_rooms().unwrap();
}

#[test]
fn a_room_down_to_a_member_of_another_node_closes_for_it() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut ann, mut bob) = ann_on_a_bob_on_b(&a, &b);
    // The home's member leaves: bob, on b, is told.
    assert_eq!(
        create_room(&mut ann, "den", Mode::Centralised, 3),
        Creation::Created
    );
    eventually("b lists den", WAIT, || {
        room_listed(&mut bob, "den").is_some()
    });
    assert_eq!(join_room(&mut bob, "den"), granted(Mode::Centralised));
    assert_eq!(ann.ask(Body::Leave), Body::LeaveAnswer { ok: true });
    hears_closed(&bob, "den");
    assert_eq!(room_of(&b, "bob"), None);
    assert_eq!(
        bob.ask(Body::Leave),
        Body::LeaveAnswer { ok: false },
        "bob is in the public room again"
    );
    // The member of b disconnects: ann, at the home, is told.
    assert_eq!(
        create_room(&mut ann, "nook", Mode::Centralised, 3),
        Creation::Created
    );
    eventually("b lists nook", WAIT, || {
        room_listed(&mut bob, "nook").is_some()
    });
    assert_eq!(join_room(&mut bob, "nook"), granted(Mode::Centralised));
    assert!(matches!(
        bob.ask(Body::Disconnect),
        Body::DisconnectAnswer { ok: true }
    ));
    hears_closed(&ann, "nook");
    // Full: a room of 2 refuses a third member from another node.
    let mut cat = Rooms::register(b.rooms_addr(), "cat");
    let mut dan = Rooms::register(a.rooms_addr(), "dan");
    assert_eq!(
        create_room(&mut ann, "pair", Mode::Centralised, 2),
        Creation::Created
    );
    assert_eq!(join_room(&mut dan, "pair"), granted(Mode::Centralised));
    eventually("b lists pair full", WAIT, || {
        room_listed(&mut cat, "pair") == Some(2)
    });
    assert!(matches!(
        join_room(&mut cat, "pair"),
        Body::AccessAnswer {
            status: Access::Full,
            ..
        }
    ));
    assert!(matches!(
        join_room(&mut cat, "no such room"),
        Body::AccessAnswer {
            status: Access::NoSuchRoom,
            ..
        }
    ));
    a.hub().check_rooms().unwrap();
    b.hub().check_rooms().unwrap();
}

/// `c` answers invitation `inv` (the server's request).
fn answer_invitation(c: &Rooms, inv: &chinwag_proto::rooms::Message, accept: bool) {
    c.send(&chinwag_proto::rooms::Message {
        user: c.id,
        seq: inv.seq,
        body: Body::InvitationAnswer { accept },
    });
}

fn invited(c: &Rooms, from: &str, room: &str) -> chinwag_proto::rooms::Message {
    let inv = c.expect("an invitation", |b| matches!(b, Body::Invitation { .. }));
    assert_eq!(
        inv.body,
        Body::Invitation {
            from: from.into(),
            mode: Mode::Centralised,
            room: room.into(),
        }
    );
    inv
}

fn members(srv: &Server, room: &str) -> Vec<String> {
    let mut m = srv.hub().room_members(room).unwrap_or_default();
    m.sort();
    m
}

#[test]
fn invitations_cross_nodes_refused_and_accepted_and_from_a_member_elsewhere() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut ann, mut bob) = ann_on_a_bob_on_b(&a, &b);
    let cat = Rooms::register(b.rooms_addr(), "cat");
    sees(&a, "cat", true);
    assert_eq!(
        create_room(&mut ann, "club", Mode::Centralised, 5),
        Creation::Created
    );
    // Refused: bob stays where he is.
    assert_eq!(
        ann.ask(Body::Invite { user: "bob".into() }),
        Body::InviteAck
    );
    let inv = invited(&bob, "ann", "club");
    answer_invitation(&bob, &inv, false);
    // Accepted: bob is in a's room, and hears it.
    assert_eq!(
        ann.ask(Body::Invite { user: "bob".into() }),
        Body::InviteAck
    );
    let inv = invited(&bob, "ann", "club");
    assert_eq!(members(&a, "club"), ["ann"], "the refusal let nobody in");
    answer_invitation(&bob, &inv, true);
    eventually("bob in a's room", WAIT, || {
        room_of(&b, "bob").as_deref() == Some("club") && members(&a, "club") == ["ann", "bob"]
    });
    assert_eq!(
        ann.ask(Body::Text {
            chat: "welcome".into()
        }),
        Body::TextAck
    );
    hears_text(&bob, "ann: welcome");
    // bob, a member on b, invites cat (on b too): through the room's home.
    assert_eq!(
        bob.ask(Body::Invite { user: "cat".into() }),
        Body::InviteAck
    );
    let inv = invited(&cat, "bob", "club");
    answer_invitation(&cat, &inv, true);
    eventually("cat in a's room", WAIT, || {
        members(&a, "club") == ["ann", "bob", "cat"]
    });
    assert_eq!(room_of(&b, "cat").as_deref(), Some("club"));
    // b lists the room's members as its home does.
    eventually("b lists the members", WAIT, || {
        members(&b, "club") == ["ann", "bob", "cat"]
    });
    assert_eq!(
        bob.ask(Body::Text {
            chat: "hi cat".into()
        }),
        Body::TextAck
    );
    hears_text(&ann, "bob: hi cat");
    // cat's node has bob as a client of its own: named by his ID_USER.
    let m = cat.expect("bob's text", |b| matches!(b, Body::Text { .. }));
    assert_eq!(
        (m.user, m.body),
        (
            bob.id,
            Body::Text {
                chat: "hi cat".into()
            }
        )
    );
    // bob leaves (two stay); then ann: cat, on b, is the last and is told.
    assert_eq!(bob.ask(Body::Leave), Body::LeaveAnswer { ok: true });
    eventually("bob out", WAIT, || members(&a, "club") == ["ann", "cat"]);
    assert_eq!(ann.ask(Body::Leave), Body::LeaveAnswer { ok: true });
    hears_closed(&cat, "club");
    assert_eq!(room_of(&b, "cat"), None);
    a.hub().check_rooms().unwrap();
    b.hub().check_rooms().unwrap();
}

fn peer_of(c: &Rooms, name: &str) -> chinwag_proto::rooms::Peer {
    let std::net::IpAddr::V4(ip) = c.addr().ip() else {
        panic!("IPv4 loopback")
    };
    chinwag_proto::rooms::Peer {
        ip,
        port: c.addr().port(),
        name: name.into(),
    }
}

#[test]
fn a_decentralised_room_across_nodes_lists_every_members_end_point() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut ann, mut bob) = ann_on_a_bob_on_b(&a, &b);
    let mut cat = Rooms::register(a.rooms_addr(), "cat");
    assert_eq!(
        create_room(&mut ann, "mesh", Mode::Decentralised, 5),
        Creation::Created
    );
    eventually("b lists mesh", WAIT, || {
        room_listed(&mut bob, "mesh").is_some()
    });
    // bob, on b, is told where ann is (as a saw her).
    assert_eq!(
        join_room(&mut bob, "mesh"),
        Body::AccessAnswer {
            mode: Mode::Decentralised,
            status: Access::Granted,
            peers: vec![peer_of(&ann, "ann")],
        }
    );
    // The peers a decentralised access answer lists, by name.
    let peers_in = |who: &mut Rooms| {
        let Body::AccessAnswer {
            mode: Mode::Decentralised,
            status: Access::Granted,
            mut peers,
        } = join_room(who, "mesh")
        else {
            panic!("access to mesh refused")
        };
        peers.sort_by(|x, y| x.name.cmp(&y.name));
        peers
    };
    // cat, on a, is told where ann and bob are (bob as b saw him).
    let got = peers_in(&mut cat);
    assert_eq!(got, vec![peer_of(&ann, "ann"), peer_of(&bob, "bob")]);
    // bob, already in, asks again (as the library does before each text)
    // and learns of cat, who came after; his membership is unchanged.
    let got = peers_in(&mut bob);
    assert_eq!(got, vec![peer_of(&ann, "ann"), peer_of(&cat, "cat")]);
    // Texts go peer to peer: the server refuses them from either node.
    let no_recipient = Body::Error {
        refused: chinwag_proto::rooms::kind::TEXTE,
        reason: chinwag_proto::rooms::Reason::NoRecipient,
    };
    assert_eq!(bob.ask(Body::Text { chat: "hi".into() }), no_recipient);
    assert_eq!(cat.ask(Body::Text { chat: "hi".into() }), no_recipient);
    a.hub().check_rooms().unwrap();
    b.hub().check_rooms().unwrap();
}

#[test]
fn a_room_name_raced_on_two_nodes_is_created_once() {
    let Some((_c, a, b)) = two_nodes() else {
        return;
    };
    let (mut ann, mut bob) = ann_on_a_bob_on_b(&a, &b);
    for round in 0..5 {
        let name = format!("race {round}");
        let both = Barrier::new(2);
        let (x, y) = thread::scope(|s| {
            let x = s.spawn(|| {
                both.wait();
                create_room(&mut ann, &name, Mode::Centralised, 4)
            });
            let y = s.spawn(|| {
                both.wait();
                create_room(&mut bob, &name, Mode::Centralised, 4)
            });
            (x.join().unwrap(), y.join().unwrap())
        });
        let mut got = [x, y];
        got.sort_by_key(|c| *c as u8);
        assert_eq!(
            got,
            [Creation::Created, Creation::NameExists],
            "round {round}: one room of that name"
        );
        let (winner, loser) = if x == Creation::Created {
            (&mut ann, &mut bob)
        } else {
            (&mut bob, &mut ann)
        };
        // The room closes (left empty): its name is free again, there too.
        assert_eq!(winner.ask(Body::Leave), Body::LeaveAnswer { ok: true });
        eventually("the name free again", WAIT, || {
            create_room(loser, &name, Mode::Centralised, 4) == Creation::Created
        });
        assert_eq!(loser.ask(Body::Leave), Body::LeaveAnswer { ok: true });
    }
    a.hub().check_rooms().unwrap();
    b.hub().check_rooms().unwrap();
}

#[test]
fn the_home_node_killed_closes_its_rooms_for_members_elsewhere() {
    let Some(c) = cluster() else { return };
    let b = c.node("b");
    let mut a = c.process("a");
    let mut ann = Rooms::register(a.0.rooms, "ann");
    let mut bob = Rooms::register(b.rooms_addr(), "bob");
    sees(&b, "ann", true);
    assert_eq!(
        create_room(&mut ann, "club", Mode::Centralised, 4),
        Creation::Created
    );
    eventually("b lists club", WAIT, || {
        room_listed(&mut bob, "club").is_some()
    });
    assert_eq!(join_room(&mut bob, "club"), granted(Mode::Centralised));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(a.0.child.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let _ = a.0.child.wait();
    hears_closed(&bob, "club");
    let took = killed.elapsed();
    // Documented bound: node_timeout_ms + one heartbeat + the 200 ms tick;
    // a loaded machine gets 2 s more.
    assert!(
        took < Duration::from_millis(NODE_TIMEOUT_MS + 1_200 + 2_000),
        "closed {took:?} after SIGKILL"
    );
    eprintln!("the dead home's room closed for bob {took:?} after SIGKILL");
    assert_eq!(room_of(&b, "bob"), None);
    assert_eq!(room_listed(&mut bob, "club"), None);
    // Its name was freed with the dead node's names: b may have a club.
    eventually("the name freed", WAIT, || {
        create_room(&mut bob, "club", Mode::Centralised, 4) == Creation::Created
    });
    b.hub().check_rooms().unwrap();
}

#[test]
fn without_the_bus_no_room_is_created_or_joined_across_nodes_and_then_again() {
    let Some((c, a, b)) = two_nodes() else { return };
    let (mut ann, mut bob) = ann_on_a_bob_on_b(&a, &b);
    let mut amy = Rooms::register(a.rooms_addr(), "amy");
    assert_eq!(
        create_room(&mut ann, "club", Mode::Centralised, 4),
        Creation::Created
    );
    eventually("b lists club", WAIT, || {
        room_listed(&mut bob, "club").is_some()
    });
    c.nats.kill();
    for srv in [&a, &b] {
        let cl = srv.cluster().expect("cluster mode");
        eventually("the bus is gone", WAIT, || !cl.bus_up());
    }
    assert!(matches!(
        join_room(&mut bob, "club"),
        Body::AccessAnswer {
            status: Access::NoSuchRoom,
            ..
        }
    ));
    assert_eq!(
        create_room(&mut bob, "den", Mode::Centralised, 4),
        Creation::NameExists,
        "a name cannot be claimed without the bus"
    );
    assert_eq!(
        create_room(&mut amy, "den", Mode::Centralised, 4),
        Creation::NameExists
    );
    // A room of one's own node is joined as ever.
    assert_eq!(join_room(&mut amy, "club"), granted(Mode::Centralised));
    assert_eq!(
        amy.ask(Body::Text {
            chat: "local".into()
        }),
        Body::TextAck
    );
    hears_text_from(&ann, amy.id, "local");
    c.nats.restart();
    eventually("b is back on the bus", WAIT, || {
        b.cluster().unwrap().bus_up()
    });
    eventually("bob may join again", WAIT, || {
        join_room(&mut bob, "club") == granted(Mode::Centralised)
    });
    assert_eq!(members(&a, "club"), ["amy", "ann", "bob"]);
}

fn hears_text_from(c: &Rooms, author: u8, chat: &str) {
    let m = c.expect(chat, |b| matches!(b, Body::Text { .. }));
    assert_eq!((m.user, m.body), (author, Body::Text { chat: chat.into() }));
}

// ---- an authenticated, encrypted bus ----

/// A file holding `text`, mode 0600 (or `mode`), in `dir`.
fn secret_in(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// Why a node configured as `cfg` does not start; the secrets it was
/// given never appear in the message.
fn refused(cfg: Config, secrets: &[&str]) -> String {
    let err = Server::start(cfg)
        .err()
        .expect("the node must not start")
        .to_string();
    for s in secrets {
        assert!(!err.contains(s), "a secret in the message: {err}");
    }
    eprintln!("refused, as it must be: {err}");
    err
}

/// A test's own bound on its time (its servers are reused across its
/// assertions to stay within it).
fn took_less_than(started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
}

/// A cluster whose bus is `nats` (PostgreSQL as usual).
fn cluster_on(nats: testnats::Nats) -> Option<Cluster> {
    let _ = env_logger::builder().is_test(true).try_init();
    let pg = testpg::server()?;
    let (store_url, schema) = pg.fresh_url();
    Some(Cluster {
        nats,
        pg,
        store_url,
        schema,
    })
}

#[test]
fn a_bus_with_a_token_or_users_takes_the_right_credentials_and_refuses_others() {
    let started = Instant::now();
    let dir = common::temp_dir("bus-auth");
    let token = secret_in(&dir, "token", "t0ken-of-the-bus\n", 0o600);
    let wrong = secret_in(&dir, "wrong", "not-the-token", 0o600);
    let loose = secret_in(&dir, "loose", "t0ken-of-the-bus", 0o644);
    let Some(nats) =
        testnats::Nats::start_with(|_| "authorization { token: \"t0ken-of-the-bus\" }\n".into())
    else {
        return;
    };
    let Some(c) = cluster_on(nats) else { return };
    // The right token joins (the bucket, the subscriptions and the watch
    // all need an authorized connection).
    let a = Server::start(Config {
        bus_token_file: token.clone(),
        ..c.config("a")
    })
    .expect("the right token joins");
    let err = refused(
        Config {
            bus_token_file: wrong.clone(),
            ..c.config("b")
        },
        &["not-the-token", "t0ken-of-the-bus"],
    );
    assert!(err.contains("refused this node's credentials"), "{err}");
    assert!(err.contains("bus_token_file"), "{err}");
    let err = refused(c.config("b"), &[]);
    assert!(err.contains("no credentials"), "{err}");
    // The binary: one error line, and a non-zero exit.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chinwagd"));
    cmd.args(["--bind", "127.0.0.1", "--admin-socket", "off"])
        .args(["--chatos-port", "0", "--babel-port", "0"])
        .args(["--accounts-port", "0", "--rooms-port", "0"])
        .args(["--bus-url", &c.nats.url(), "--node-name", "p"])
        .args(["--store-url", &c.store_url, "--bus-token-file", &wrong]);
    let err = common::Chinwagd::try_spawn(&mut cmd, "error", false)
        .err()
        .expect("the process must not start");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(err.contains("refused this node's credentials"), "{err}");
    assert!(!err.contains(" | "), "one line: {err}");
    assert!(!err.contains("not-the-token"), "{err}");
    // A token file others can read is refused before the bus is dialled.
    let err = refused(
        Config {
            bus_token_file: loose.clone(),
            ..c.config("b")
        },
        &["t0ken-of-the-bus"],
    );
    assert!(err.contains("chmod 600") && err.contains(&loose), "{err}");
    drop(a);
    drop(c);

    // A bus with users: the right password joins, a wrong one does not.
    let pw = secret_in(&dir, "pw", "pa55-of-node\n", 0o600);
    let bad = secret_in(&dir, "bad", "pa55-of-someone", 0o600);
    let Some(nats) = testnats::Nats::start_with(|_| {
        "authorization { users = [ { user: \"node\", password: \"pa55-of-node\" } ] }\n".into()
    }) else {
        return;
    };
    let Some(c) = cluster_on(nats) else { return };
    let user = |pw: &str, node: &str| Config {
        bus_user: "node".into(),
        bus_password_file: pw.into(),
        ..c.config(node)
    };
    let a = Server::start(user(&pw, "a")).expect("the right password joins");
    let b = Server::start(user(&pw, "b")).expect("a second node too");
    // They are on one bus: a user of a is seen on b.
    let _alice = chatos(a.chatos_addr(), "alice");
    sees(&b, "alice", true);
    let err = refused(user(&bad, "c"), &["pa55-of-someone", "pa55-of-node"]);
    assert!(err.contains("refused this node's credentials"), "{err}");
    assert!(err.contains("bus_password_file"), "{err}");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
    took_less_than(started, Duration::from_secs(60));
}

#[test]
fn a_bus_of_nkey_users_takes_the_right_seed_only() {
    let started = Instant::now();
    let dir = common::temp_dir("bus-nkey");
    let node = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let seed = secret_in(&dir, "seed", &format!("{}\n", node.seed().unwrap()), 0o600);
    let other = secret_in(&dir, "other", &stranger.seed().unwrap(), 0o600);
    let junk = secret_in(&dir, "junk", "SUnot-a-seed", 0o600);
    let public = node.public_key();
    let Some(nats) = testnats::Nats::start_with(|_| {
        format!("authorization {{ users = [ {{ nkey: \"{public}\" }} ] }}\n")
    }) else {
        return;
    };
    let Some(c) = cluster_on(nats) else { return };
    let nkey = |file: &str, node: &str| Config {
        bus_nkey_seed_file: file.into(),
        ..c.config(node)
    };
    let a = Server::start(nkey(&seed, "a")).expect("the right seed joins");
    let b = Server::start(nkey(&seed, "b")).expect("a second node too");
    let _alice = chatos(a.chatos_addr(), "alice");
    sees(&b, "alice", true);
    let err = refused(nkey(&other, "c"), &[&stranger.seed().unwrap()]);
    assert!(err.contains("the nkey of bus_nkey_seed_file"), "{err}");
    let err = refused(nkey(&junk, "c"), &["SUnot-a-seed"]);
    assert!(err.contains("holds no nkey seed"), "{err}");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
    took_less_than(started, Duration::from_secs(60));
}

#[test]
fn a_bus_over_mutual_tls_takes_a_node_with_the_right_ca_and_certificate_only() {
    let started = Instant::now();
    let Some(nats) = testnats::Nats::start_with(|dir| {
        let pki = certs::make(dir);
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        )
    }) else {
        return;
    };
    let Some(c) = cluster_on(nats) else { return };
    let dir = c.nats.dir().to_path_buf();
    let file = |name: &str| dir.join(name).display().to_string();
    let tls = |node: &str, ca: &str| Config {
        bus_tls: true,
        bus_tls_ca_file: file(ca),
        bus_tls_cert_file: file("client.pem"),
        bus_tls_key_file: file("client.key"),
        ..c.config(node)
    };
    let a = Server::start(tls("a", "ca.pem")).expect("the right CA and certificate join");
    // A tls:// URL asks for TLS as bus_tls does.
    let b = Server::start(Config {
        bus_tls: false,
        bus_url: c.nats.url().replace("nats://", "tls://"),
        ..tls("b", "ca.pem")
    })
    .expect("tls:// joins too");
    let _alice = chatos(a.chatos_addr(), "alice");
    sees(&b, "alice", true);
    // No TLS configured: the bus asks for it, and the node says so.
    let err = refused(c.config("c"), &[]);
    assert!(err.contains("asks for TLS"), "{err}");
    // A CA that did not sign the bus's certificate.
    let err = refused(tls("c", "other-ca.pem"), &[]);
    assert!(err.contains("TLS with the bus failed"), "{err}");
    // Without a client certificate the bus hangs up during the handshake.
    let err = refused(
        Config {
            bus_tls_cert_file: String::new(),
            bus_tls_key_file: String::new(),
            ..tls("c", "ca.pem")
        },
        &[],
    );
    assert!(err.contains("TLS with the bus failed"), "{err}");
    // A CA file that is not one is refused before dialling.
    let err = refused(tls("c", "server.key"), &[]);
    assert!(err.contains("server.key"), "{err}");
    // So is a key others can read.
    let loose = secret_in(
        &dir,
        "loose.key",
        &std::fs::read_to_string(dir.join("client.key")).unwrap(),
        0o644,
    );
    let err = refused(
        Config {
            bus_tls_key_file: loose.clone(),
            ..tls("c", "ca.pem")
        },
        &["PRIVATE KEY"],
    );
    assert!(err.contains("chmod 600") && err.contains(&loose), "{err}");
    drop((a, b));
    took_less_than(started, Duration::from_secs(60));
}

#[test]
fn a_node_that_asks_for_tls_refuses_a_bus_without_it() {
    let Some(c) = cluster() else { return };
    let err = refused(
        Config {
            bus_tls: true,
            ..c.config("a")
        },
        &[],
    );
    assert!(err.contains("over TLS"), "{err}");
}
