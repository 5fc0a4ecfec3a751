//! Hub unit tests: recording peers stand in for connections.

use super::*;
use std::net::{Ipv4Addr, TcpListener};
use std::thread;

/// A peer that records every event it is given (shared with core_tests).
#[derive(Default)]
pub(super) struct Recorder {
    seen: Mutex<Vec<String>>,
}

impl Peer for Recorder {
    fn deliver(&self, event: &Event<'_>) -> bool {
        self.seen.lock().push(format!("{event:?}"));
        true
    }
}

impl Recorder {
    pub(super) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock())
    }
}

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A babel caller's end: it listens on host:port.
fn babel(host: &str, port: u16) -> Media {
    Media::BabelListen {
        host: host.into(),
        port,
    }
}

fn hub() -> Hub {
    Hub::new(HubConfig::default())
}

fn join(hub: &Hub, name: &str) -> (Arc<Session>, Arc<Recorder>) {
    let r = Arc::new(Recorder::default());
    let s = hub
        .login(name, Dialect::Chatos, IP, r.clone(), true, false)
        .unwrap();
    (s, r)
}

#[test]
fn names_are_unique_across_dialects() {
    let h = hub();
    let (a, _) = join(&h, "alice");
    let r = Arc::new(Recorder::default());
    assert_eq!(
        h.login("alice", Dialect::Babel, IP, r.clone(), false, false)
            .unwrap_err(),
        LoginError::Taken
    );
    assert_eq!(
        h.login("", Dialect::Chatos, IP, r.clone(), true, false)
            .unwrap_err(),
        LoginError::Invalid
    );
    assert_eq!(
        h.login("a b", Dialect::Chatos, IP, r.clone(), true, false)
            .unwrap_err(),
        LoginError::Invalid
    );
    assert_eq!(
        h.login("x\u{7}", Dialect::Chatos, IP, r.clone(), true, false)
            .unwrap_err(),
        LoginError::Invalid
    );
    h.logout(&a);
    assert!(h
        .login("alice", Dialect::Babel, IP, r, false, false)
        .is_ok());
}

#[test]
fn reserved_names_need_a_password() {
    let h = hub();
    h.set_reserved_names(Arc::new(|n: &str| n == "owner"));
    let r = Arc::new(Recorder::default());
    assert_eq!(
        h.login("owner", Dialect::Chatos, IP, r.clone(), true, false)
            .unwrap_err(),
        LoginError::Reserved
    );
    assert!(h
        .login("owner", Dialect::Accounts, IP, r, false, true)
        .is_ok());
}

#[test]
fn racing_logins_for_one_name_have_one_winner() {
    for _ in 0..50 {
        let h = Arc::new(hub());
        let wins: usize = (0..4)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || {
                    let r = Arc::new(Recorder::default());
                    h.login("same", Dialect::Chatos, IP, r, true, false).is_ok() as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(wins, 1);
    }
}

#[test]
fn broadcast_reaches_everyone_and_forgeries_nobody() {
    let h = hub();
    let (a, ra) = join(&h, "alice");
    let (_b, rb) = join(&h, "bob");
    let rc = Arc::new(Recorder::default());
    // A session that does not take global chat hears nothing.
    let _c = h
        .login("carol", Dialect::Babel, IP, rc.clone(), false, false)
        .unwrap();
    assert_eq!(h.broadcast(&a, "alice", "hi").unwrap(), 2);
    let want = vec![r#"Message { from: "alice", text: "hi" }"#.to_string()];
    assert_eq!(ra.take(), want);
    assert_eq!(rb.take(), want);
    assert!(rc.take().is_empty());
    assert_eq!(h.broadcast(&a, "bob", "fake").unwrap_err(), Refusal::Forged);
    assert!(ra.take().is_empty() && rb.take().is_empty());
}

#[test]
fn logout_removes_from_broadcast() {
    let h = hub();
    let (a, _ra) = join(&h, "alice");
    let (b, rb) = join(&h, "bob");
    h.logout(&b);
    h.logout(&b); // twice is harmless
    assert_eq!(h.broadcast(&a, "alice", "x").unwrap(), 1);
    assert!(rb.take().is_empty());
    assert!(h.online("bob").is_none());
}

#[test]
fn private_messages_go_to_the_target_only() {
    let h = hub();
    let (a, ra) = join(&h, "alice");
    let (_b, rb) = join(&h, "bob");
    h.private_message(&a, "alice", "bob", "psst").unwrap();
    assert_eq!(
        rb.take(),
        vec![r#"PrivateMessage { from: "alice", to: "bob", text: "psst" }"#]
    );
    assert!(ra.take().is_empty());
    assert_eq!(
        h.private_message(&a, "alice", "nobody", "x").unwrap_err(),
        Refusal::Offline
    );
    assert_eq!(
        h.private_message(&a, "bob", "bob", "x").unwrap_err(),
        Refusal::Forged
    );
}

#[test]
fn private_request_ok_issues_one_id_to_both() {
    let h = hub();
    let now = Instant::now();
    let (a, ra) = join(&h, "alice");
    let (b, rb) = join(&h, "bob");
    // Answering a request that was never made does nothing.
    assert_eq!(
        h.answer_private(now, &b, "alice", "bob", true).unwrap_err(),
        Refusal::NotPending
    );
    h.request_private(now, &a, "alice", "bob").unwrap();
    assert_eq!(
        rb.take(),
        vec![r#"PrivateRequest { requester: "alice", target: "bob" }"#]
    );
    assert!(ra.take().is_empty());
    // Only the target may answer, under its own name.
    assert_eq!(
        h.answer_private(now, &a, "alice", "bob", true).unwrap_err(),
        Refusal::Forged
    );
    let id = h
        .answer_private(now, &b, "alice", "bob", true)
        .unwrap()
        .unwrap();
    let want = format!(r#"PrivateId {{ requester: "alice", target: "bob", connect_id: {id} }}"#);
    assert_eq!(ra.take(), vec![want.clone()]);
    assert_eq!(rb.take(), vec![want]);
    // The request is consumed.
    assert_eq!(
        h.answer_private(now, &b, "alice", "bob", true).unwrap_err(),
        Refusal::NotPending
    );
}

#[test]
fn private_request_ko_tells_the_requester() {
    let h = hub();
    let now = Instant::now();
    let (a, ra) = join(&h, "alice");
    let (b, _rb) = join(&h, "bob");
    assert_eq!(
        h.request_private(now, &a, "alice", "alice").unwrap_err(),
        Refusal::SelfTarget
    );
    assert_eq!(
        h.request_private(now, &a, "alice", "zed").unwrap_err(),
        Refusal::Offline
    );
    h.request_private(now, &a, "alice", "bob").unwrap();
    assert_eq!(
        h.answer_private(now, &b, "alice", "bob", false).unwrap(),
        None
    );
    assert_eq!(
        ra.take(),
        vec![r#"PrivateRefused { requester: "alice", target: "bob" }"#]
    );
}

#[test]
fn requests_expire_and_are_bounded() {
    let h = Hub::new(HubConfig {
        connect_id_ttl: Duration::from_secs(5),
        max_relays: 10,
        max_pending_requests: 2,
        ..HubConfig::default()
    });
    let now = Instant::now();
    let (a, _) = join(&h, "alice");
    let (b, _) = join(&h, "bob");
    let (_c, _) = join(&h, "carol");
    let (_d, _) = join(&h, "dave");
    h.request_private(now, &a, "alice", "bob").unwrap();
    h.request_private(now, &a, "alice", "carol").unwrap();
    assert_eq!(
        h.request_private(now, &a, "alice", "dave").unwrap_err(),
        Refusal::Limit
    );
    // Repeating a live request is not a new one.
    h.request_private(now, &a, "alice", "bob").unwrap();
    let later = now + Duration::from_secs(6);
    assert_eq!(
        h.answer_private(later, &b, "alice", "bob", true)
            .unwrap_err(),
        Refusal::NotPending
    );
    h.sweep(later);
    h.request_private(later, &a, "alice", "dave").unwrap();
}

fn socket_pair() -> (Arc<TcpStream>, Arc<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (Arc::new(a), Arc::new(b))
}

fn issued(h: &Hub, a: &Session, b: &Session) -> i64 {
    let now = Instant::now();
    h.request_private(now, a, &a.name, &b.name).unwrap();
    h.answer_private(now, b, &a.name, &b.name, true)
        .unwrap()
        .unwrap()
}

#[test]
fn connect_ids_are_single_use_and_address_bound() {
    let h = hub();
    let (a, _) = join(&h, "alice");
    let (b, _) = join(&h, "bob");
    let id = issued(&h, &a, &b);
    let now = Instant::now();
    let (s1, s2) = socket_pair();
    let elsewhere: IpAddr = "10.9.9.9".parse().unwrap();
    assert!(matches!(
        h.relay_join(now, id, elsewhere, s1.clone()),
        RelayJoin::WrongAddress
    ));
    assert!(matches!(
        h.relay_join(now, id ^ 1, IP, s1.clone()),
        RelayJoin::Unknown
    ));
    let RelayJoin::First { rx, .. } = h.relay_join(now, id, IP, s1.clone()) else {
        panic!("first")
    };
    let RelayJoin::Second { notify, .. } = h.relay_join(now, id, IP, s2.clone()) else {
        panic!("second")
    };
    notify.send(s2.clone()).unwrap();
    assert!(rx.recv().is_ok());
    assert_eq!(h.relay_count(), 1);
    // Used up: a third connection with the same id is refused.
    assert!(matches!(
        h.relay_join(now, id, IP, s1.clone()),
        RelayJoin::Unknown
    ));
    h.relay_half_done(now, id);
    h.relay_half_done(now, id);
    assert_eq!(h.relay_count(), 0);
}

#[test]
fn connect_ids_expire() {
    let h = Hub::new(HubConfig {
        connect_id_ttl: Duration::from_secs(2),
        ..HubConfig::default()
    });
    let (a, _) = join(&h, "alice");
    let (b, _) = join(&h, "bob");
    let id = issued(&h, &a, &b);
    let (s1, _s2) = socket_pair();
    let later = Instant::now() + Duration::from_secs(3);
    assert!(matches!(
        h.relay_join(later, id, IP, s1),
        RelayJoin::Expired
    ));
}

#[test]
fn close_private_checks_the_pair_and_tells_both() {
    let h = hub();
    let (a, ra) = join(&h, "alice");
    let (b, rb) = join(&h, "bob");
    let (c, _) = join(&h, "carol");
    let id = issued(&h, &a, &b);
    ra.take();
    rb.take();
    assert_eq!(
        h.close_private(&c, id, "carol", "bob").unwrap_err(),
        Refusal::NotPending
    );
    assert_eq!(
        h.close_private(&a, id, "bob", "alice").unwrap_err(),
        Refusal::Forged
    );
    let out = h.close_private(&b, id, "bob", "alice").unwrap();
    assert!(out.sockets.is_empty());
    assert_eq!(
        rb.take(),
        vec![format!(
            r#"PrivateClosed {{ connect_id: {id}, peer: "alice" }}"#
        )]
    );
    assert_eq!(
        ra.take(),
        vec![format!(
            r#"PrivateClosed {{ connect_id: {id}, peer: "bob" }}"#
        )]
    );
    assert_eq!(
        h.close_private(&b, id, "bob", "alice").unwrap_err(),
        Refusal::NotPending
    );
}

#[test]
fn relay_limit_is_enforced() {
    let h = Hub::new(HubConfig {
        max_relays: 1,
        ..HubConfig::default()
    });
    let (a, _) = join(&h, "alice");
    let (b, _) = join(&h, "bob");
    let id1 = issued(&h, &a, &b);
    let id2 = issued(&h, &a, &b);
    let (s1, _s2) = socket_pair();
    let now = Instant::now();
    assert!(matches!(
        h.relay_join(now, id1, IP, s1.clone()),
        RelayJoin::First { .. }
    ));
    assert!(matches!(
        h.relay_join(now, id2, IP, s1.clone()),
        RelayJoin::Full
    ));
    assert!(h.relay_abandon(id1));
    assert!(!h.relay_abandon(id1));
}

#[test]
fn listeners_stay_consistent_through_logins_and_logouts() {
    let h = hub();
    let mut sessions: Vec<_> = (0..6).map(|i| join(&h, &format!("u{i}"))).collect();
    // Remove from the front, the middle and the back, as swap_remove reorders.
    for idx in [0, 2, 3] {
        let (s, _) = sessions.remove(idx);
        h.logout(&s);
    }
    sessions.push(join(&h, "late"));
    let (first, _) = &sessions[0];
    assert_eq!(
        h.broadcast(first, &first.name, "x").unwrap(),
        sessions.len()
    );
    for (s, r) in &sessions {
        assert_eq!(r.take().len(), 1, "{} heard the broadcast once", s.name);
    }
}

fn join_presence(hub: &Hub, name: &str) -> (Arc<Session>, Arc<Recorder>, Vec<String>) {
    let r = Arc::new(Recorder::default());
    let mut seen = Vec::new();
    let entry = Entry::new(Dialect::Babel, IP, r.clone());
    let s = hub
        .login_with(name, entry, |others| seen = others.to_vec())
        .unwrap();
    (s, r, seen)
}

#[test]
fn presence_sessions_see_each_other_come_and_go() {
    let h = hub();
    let (_chatos, rc) = join(&h, "chatter");
    let (a, ra, seen_a) = join_presence(&h, "alice");
    assert!(seen_a.is_empty(), "non-presence users are not listed");
    let (b, _rb, seen_b) = join_presence(&h, "bob");
    assert_eq!(seen_b, vec!["alice"]);
    assert_eq!(ra.take(), vec![r#"Presence { name: "bob", online: true }"#]);
    h.logout(&b);
    assert_eq!(
        ra.take(),
        vec![r#"Presence { name: "bob", online: false }"#]
    );
    h.logout(&a);
    assert!(rc.take().is_empty(), "chatos sessions hear no presence");
}

#[test]
fn call_offers_need_a_callee_that_takes_calls_and_refusals_need_an_offer() {
    let h = hub();
    let now = Instant::now();
    let (a, ra, _) = join_presence(&h, "alice");
    let (b, rb, _) = join_presence(&h, "bob");
    let (_c, _) = join(&h, "chatter");
    ra.take();
    assert_eq!(
        h.offer_call(now, &a, "chatter", babel("", 1)).unwrap_err(),
        Refusal::Offline
    );
    assert_eq!(
        h.offer_call(now, &a, "alice", babel("", 1)).unwrap_err(),
        Refusal::SelfTarget
    );
    assert_eq!(
        h.answer_call(now, &b, "alice", None).unwrap_err(),
        Refusal::NotPending
    );
    h.offer_call(now, &a, "bob", babel("", 9)).unwrap();
    assert_eq!(
        rb.take(),
        vec![r#"CallOffer { from: "alice", host: "127.0.0.1", port: 9 }"#]
    );
    h.answer_call(now, &b, "alice", None).unwrap();
    assert_eq!(ra.take(), vec![r#"CallRefused { by: "bob" }"#]);
    assert_eq!(
        h.answer_call(now, &b, "alice", None).unwrap_err(),
        Refusal::NotPending
    );
    // Offers expire.
    h.offer_call(now, &a, "bob", babel("h", 9)).unwrap();
    let later = now + CALL_OFFER_TTL + Duration::from_secs(1);
    assert_eq!(
        h.answer_call(later, &b, "alice", None).unwrap_err(),
        Refusal::NotPending
    );
}

#[test]
fn unused_connect_ids_are_bounded() {
    let h = Hub::new(HubConfig {
        max_relays: 1,
        ..HubConfig::default()
    });
    let (a, _) = join(&h, "alice");
    let (b, _) = join(&h, "bob");
    let now = Instant::now();
    for _ in 0..4 {
        issued(&h, &a, &b);
    }
    h.request_private(now, &a, "alice", "bob").unwrap();
    assert_eq!(
        h.answer_private(now, &b, "alice", "bob", true).unwrap_err(),
        Refusal::Limit
    );
}

#[test]
fn close_private_is_confirmed_even_after_the_relay_ended_by_itself() {
    let h = hub();
    let (a, ra) = join(&h, "alice");
    let (b, rb) = join(&h, "bob");
    let id = issued(&h, &a, &b);
    let now = Instant::now();
    let (s1, s2) = socket_pair();
    let RelayJoin::First { rx, .. } = h.relay_join(now, id, IP, s1) else {
        panic!("first")
    };
    let RelayJoin::Second { notify, .. } = h.relay_join(now, id, IP, s2.clone()) else {
        panic!("second")
    };
    notify.send(s2).unwrap();
    rx.recv().unwrap();
    // Both directions end (both users shut their sockets) just before
    // CLOSE_CONNECTION from one of them is handled.
    h.relay_half_done(now, id);
    h.relay_half_done(now, id);
    assert_eq!(h.relay_count(), 0);
    ra.take();
    rb.take();
    let out = h.close_private(&b, id, "bob", "alice").unwrap();
    assert!(out.sockets.is_empty());
    assert_eq!(ra.take().len(), 1);
    assert_eq!(rb.take().len(), 1);
    // Once.
    assert_eq!(
        h.close_private(&b, id, "bob", "alice").unwrap_err(),
        Refusal::NotPending
    );
}

#[test]
fn an_ended_relay_is_remembered_for_the_connect_id_lifetime_from_its_end() {
    let ttl = Duration::from_secs(60);
    let h = Hub::new(HubConfig {
        connect_id_ttl: ttl,
        ..HubConfig::default()
    });
    let (a, _ra) = join(&h, "alice");
    let (b, _rb) = join(&h, "bob");
    // Two relays between the same users, ending at different times.
    let mut ids = Vec::new();
    let t0 = Instant::now();
    for _ in 0..2 {
        let id = issued(&h, &a, &b);
        let (s1, s2) = socket_pair();
        let RelayJoin::First { rx, .. } = h.relay_join(t0, id, IP, s1) else {
            panic!("first")
        };
        let RelayJoin::Second { notify, .. } = h.relay_join(t0, id, IP, s2.clone()) else {
            panic!("second")
        };
        notify.send(s2).unwrap();
        rx.recv().unwrap();
        ids.push(id);
    }
    // The first relay ends at t0 + 10 s, the second at t0 + 40 s; the
    // memory of each runs from its own end, whatever the wall clock says.
    let end1 = t0 + Duration::from_secs(10);
    let end2 = t0 + Duration::from_secs(40);
    h.relay_half_done(end1, ids[0]);
    h.relay_half_done(end1, ids[0]);
    h.relay_half_done(end2, ids[1]);
    h.relay_half_done(end2, ids[1]);
    assert_eq!(h.relay_count(), 0);
    // Just before the first one's memory runs out, both are remembered.
    h.sweep(end1 + ttl - Duration::from_millis(1));
    // Just after, only the second is.
    h.sweep(end1 + ttl);
    assert_eq!(
        h.close_private(&a, ids[0], "alice", "bob").unwrap_err(),
        Refusal::NotPending
    );
    assert!(h.close_private(&b, ids[1], "bob", "alice").is_ok());
}

/// A peer that keeps the first thing it was given: its login answer, which
/// its `welcome` queues, or an event.
#[derive(Default)]
struct Greeted {
    first: Mutex<Option<String>>,
}

impl Peer for Greeted {
    fn deliver(&self, event: &Event<'_>) -> bool {
        self.record(|| format!("{event:?}"));
        true
    }
}

impl Greeted {
    fn record(&self, what: impl FnOnce() -> String) {
        self.first.lock().get_or_insert_with(what);
    }

    /// What a front-end's `welcome` does: build the answer (which takes a
    /// moment: long enough for another thread to run), then queue it.
    fn welcome(&self) {
        thread::yield_now();
        self.record(|| "WELCOME".into());
    }

    fn first(&self) -> Option<String> {
        self.first.lock().clone()
    }
}

/// Runs `work` on its own thread, over and over, until finished or dropped.
struct Background {
    stop: Arc<std::sync::atomic::AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Background {
    fn start(mut work: impl FnMut() + Send + 'static) -> Background {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                work();
                r.fetch_add(1, Ordering::Release);
            }
        });
        Background {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Rounds of work done so far.
    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Acquire)
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const LOGINS: usize = 1_000;

/// `LOGINS` sessions log in (and stay) while `bg` runs; each must get its
/// welcome first, and most must hear something from `bg` too, or the test
/// proved nothing.
fn logins_race(h: &Hub, bg: Background, entry: impl Fn(Arc<Greeted>) -> Entry) {
    // Wait for the other thread to get going.
    let until = Instant::now() + Duration::from_secs(10);
    while bg.rounds() == 0 {
        assert!(Instant::now() < until, "the other thread never ran");
        thread::yield_now();
    }
    let before = bg.rounds();
    let peers: Vec<Arc<Greeted>> = (0..LOGINS)
        .map(|i| {
            let peer = Arc::new(Greeted::default());
            h.login_with(&format!("n{i}"), entry(peer.clone()), |_| peer.welcome())
                .unwrap();
            peer
        })
        .collect();
    let during = bg.rounds() - before;
    bg.finish();
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(p.first().as_deref(), Some("WELCOME"), "login {i}");
    }
    eprintln!("{during} rounds during the logins");
    assert!(
        during >= 10,
        "the other thread barely overlapped the logins ({during} rounds)"
    );
}

#[test]
fn no_broadcast_overtakes_the_login_answer() {
    let h = Arc::new(hub());
    let (flooder, _) = join(&h, "flooder");
    let bg = {
        let h = h.clone();
        Background::start(move || {
            h.broadcast(&flooder, "flooder", "flood").unwrap();
        })
    };
    logins_race(&h, bg, |peer| Entry::new(Dialect::Chatos, IP, peer));
}

#[test]
fn no_presence_event_overtakes_the_contact_list() {
    let h = Arc::new(hub());
    // Another babel user comes and goes all the time.
    let bg = {
        let h = h.clone();
        Background::start(move || {
            let (s, _, _) = join_presence(&h, "churn");
            h.logout(&s);
        })
    };
    logins_race(&h, bg, |peer| Entry::new(Dialect::Babel, IP, peer));
}

#[test]
fn log_labels_name_the_dialect() {
    let names = [
        Dialect::Chatos,
        Dialect::Babel,
        Dialect::Accounts,
        Dialect::Rooms,
    ]
    .map(Dialect::name);
    assert_eq!(names, ["chatos", "babel", "accounts", "rooms"]);
    let h = hub();
    let (a, _) = join(&h, "alice");
    assert_eq!(format!("{a:?}"), format!("alice#{}(chatos)", a.id));
}

#[test]
fn a_stale_logout_leaves_the_new_session_alone() {
    let h = hub();
    let (old, _) = join(&h, "alice");
    assert_eq!(h.online_count(), 1);
    h.logout(&old);
    assert_eq!(h.online_count(), 0);
    let (new, rn) = join(&h, "alice");
    // The old connection's thread logs out again, late.
    h.logout(&old);
    assert_eq!(h.online("alice").map(|s| s.id), Some(new.id));
    assert_eq!(h.online_count(), 1);
    assert_eq!(h.broadcast(&new, "alice", "still here").unwrap(), 1);
    assert_eq!(rn.take().len(), 1);
}

#[test]
fn logout_forgets_that_users_offers_and_requests_only() {
    let h = hub();
    let now = Instant::now();
    let (alice, _, _) = join_presence(&h, "alice");
    let (bob, _, _) = join_presence(&h, "bob");
    let (carol, rc, _) = join_presence(&h, "carol");
    let (dave, _, _) = join_presence(&h, "dave");
    let (erin, _, _) = join_presence(&h, "erin");
    h.offer_call(now, &alice, "bob", babel("", 1)).unwrap();
    h.offer_call(now, &erin, "alice", babel("", 1)).unwrap();
    h.offer_call(now, &carol, "dave", babel("", 1)).unwrap();
    h.request_private(now, &alice, "alice", "bob").unwrap();
    h.request_private(now, &erin, "erin", "alice").unwrap();
    h.request_private(now, &carol, "carol", "dave").unwrap();
    h.logout(&alice);
    let (alice, _, _) = join_presence(&h, "alice");
    // Whatever involved alice, either way round, is gone...
    assert_eq!(
        h.answer_call(now, &bob, "alice", None).unwrap_err(),
        Refusal::NotPending
    );
    assert_eq!(
        h.answer_call(now, &alice, "erin", None).unwrap_err(),
        Refusal::NotPending
    );
    assert_eq!(
        h.answer_private(now, &bob, "alice", "bob", false)
            .unwrap_err(),
        Refusal::NotPending
    );
    assert_eq!(
        h.answer_private(now, &alice, "erin", "alice", false)
            .unwrap_err(),
        Refusal::NotPending
    );
    // ...and what did not is still there.
    rc.take();
    h.answer_call(now, &dave, "carol", None).unwrap();
    assert_eq!(rc.take(), vec![r#"CallRefused { by: "dave" }"#]);
    assert_eq!(
        h.answer_private(now, &dave, "carol", "dave", false),
        Ok(None)
    );
}

#[test]
fn call_offers_are_bounded_per_caller_and_live_until_their_expiry() {
    let h = Hub::new(HubConfig {
        max_pending_requests: 2,
        ..HubConfig::default()
    });
    let now = Instant::now();
    let (alice, _, _) = join_presence(&h, "alice");
    let (bob, _, _) = join_presence(&h, "bob");
    let (carol, _, _) = join_presence(&h, "carol");
    let (_dave, _, _) = join_presence(&h, "dave");
    let (erin, _, _) = join_presence(&h, "erin");
    h.offer_call(now, &alice, "bob", babel("", 1)).unwrap();
    h.offer_call(now, &alice, "carol", babel("", 1)).unwrap();
    assert_eq!(
        h.offer_call(now, &alice, "dave", babel("", 1)).unwrap_err(),
        Refusal::Limit
    );
    // Ringing again is not a new offer; other callers have their own count.
    h.offer_call(now, &alice, "bob", babel("", 2)).unwrap();
    h.offer_call(now, &erin, "bob", babel("", 1)).unwrap();
    h.offer_call(now, &erin, "carol", babel("", 1)).unwrap();
    // An offer is live while its expiry is still ahead.
    let expiry = now + CALL_OFFER_TTL;
    let just_before = expiry - Duration::from_millis(1);
    h.answer_call(just_before, &carol, "erin", None).unwrap();
    assert_eq!(
        h.answer_call(expiry, &bob, "erin", None).unwrap_err(),
        Refusal::NotPending
    );
    // At their expiry, alice's offers stop counting against her.
    h.offer_call(expiry, &alice, "dave", babel("", 1)).unwrap();
    h.offer_call(expiry, &alice, "erin", babel("", 1)).unwrap();
    // The sweep forgets expired offers, and only those.
    h.sweep(expiry);
    assert_eq!(h.calls.lock().len(), 2, "alice's two new offers");
    h.sweep(expiry + CALL_OFFER_TTL);
    assert!(h.calls.lock().is_empty());
}

#[test]
fn the_sweep_frees_room_for_new_connect_ids() {
    let h = Hub::new(HubConfig {
        max_relays: 1,
        connect_id_ttl: Duration::from_secs(5),
        ..HubConfig::default()
    });
    let (a, _) = join(&h, "alice");
    let (b, _) = join(&h, "bob");
    let now = Instant::now();
    for _ in 0..TICKETS_PER_RELAY {
        issued(&h, &a, &b);
    }
    let later = now + Duration::from_secs(6);
    h.request_private(later, &a, "alice", "bob").unwrap();
    assert_eq!(
        h.answer_private(later, &b, "alice", "bob", true)
            .unwrap_err(),
        Refusal::Limit,
        "expired but not yet swept"
    );
    h.sweep(later);
    h.request_private(later, &a, "alice", "bob").unwrap();
    assert!(h
        .answer_private(later, &b, "alice", "bob", true)
        .unwrap()
        .is_some());
}
