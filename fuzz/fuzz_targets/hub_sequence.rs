//! Arbitrary sequences of hub calls (logins in every dialect, logouts,
//! chat, private requests and answers, relay joins, closes, call offers,
//! kicks, bans, sweeps with a clock that moves by the input's steps) on a
//! fresh hub with recording peers. Nothing may panic, and the hub's own
//! view must agree with the sessions the sequence holds.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chinwagd::hub::{Dialect, Entry, Event, Hub, HubConfig, Peer, Session};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Names worth colliding: look-alikes, bad forms, and one from the input.
const NAMES: [&str; 10] = [
    "alice",
    "Alice",
    "\u{430}lice",
    "bob",
    "b\u{200D}ob",
    "",
    "zoe\u{301}",
    "zoé",
    "AIice",
    "rn",
];

#[derive(Arbitrary, Debug)]
enum Op {
    Login {
        name: u8,
        dialect: u8,
        global: bool,
        presence: bool,
        password: bool,
        ip: u8,
    },
    LoginRaw {
        name: String,
    },
    Logout {
        who: u8,
    },
    Broadcast {
        who: u8,
        claimed: u8,
        text: String,
    },
    Private {
        who: u8,
        to: u8,
        text: String,
    },
    Request {
        who: u8,
        target: u8,
    },
    Answer {
        who: u8,
        requester: u8,
        accept: bool,
    },
    Join {
        id: u8,
        ip: u8,
    },
    Abandon {
        id: u8,
    },
    HalfDone {
        id: u8,
    },
    Close {
        who: u8,
        id: u8,
        target: u8,
    },
    Offer {
        who: u8,
        to: u8,
        port: u16,
    },
    Refuse {
        who: u8,
        caller: u8,
    },
    Kick {
        who: u8,
    },
    KickIp {
        ip: u8,
    },
    BanName {
        name: u8,
    },
    Sweep,
    Wait {
        ms: u16,
    },
}

struct Recorder(Mutex<usize>);

impl Peer for Recorder {
    fn deliver(&self, _event: &Event<'_>) -> bool {
        *self.0.lock().unwrap() += 1;
        true
    }
}

fn stream() -> Arc<TcpStream> {
    static S: OnceLock<Arc<TcpStream>> = OnceLock::new();
    S.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        std::mem::forget(l.accept().unwrap());
        Arc::new(s)
    })
    .clone()
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n % 4))
}

fuzz_target!(|ops: Vec<Op>| {
    let hub = Hub::new(HubConfig {
        connect_id_ttl: Duration::from_secs(5),
        max_relays: 4,
        max_pending_requests: 4,
        ..HubConfig::default()
    });
    let mut now = Instant::now();
    let mut sessions: Vec<Arc<Session>> = Vec::new();
    let mut ids: Vec<i64> = Vec::new();
    let pick = |s: &Vec<Arc<Session>>, i: u8| s.get(i as usize % s.len().max(1)).cloned();
    let name = |i: u8| NAMES[i as usize % NAMES.len()];
    for op in ops.into_iter().take(256) {
        match op {
            Op::Login {
                name: n,
                dialect,
                global,
                presence,
                password,
                ip: a,
            } => {
                let dialect = [
                    Dialect::Chatos,
                    Dialect::Babel,
                    Dialect::Accounts,
                    Dialect::Rooms,
                ][dialect as usize % 4];
                let entry = Entry {
                    global_chat: global,
                    presence,
                    has_password: password,
                    ..Entry::new(dialect, ip(a), Arc::new(Recorder(Mutex::new(0))))
                };
                if let Ok(s) = hub.login_with(name(n), entry, |_| {}) {
                    sessions.push(s);
                }
            }
            Op::LoginRaw { name } => {
                let peer = Arc::new(Recorder(Mutex::new(0)));
                if let Ok(s) = hub.login(&name, Dialect::Chatos, ip(0), peer, true, false) {
                    assert!(chinwagd::hub::valid_name(&name));
                    sessions.push(s);
                }
            }
            Op::Logout { who } => {
                if !sessions.is_empty() {
                    let s = sessions.remove(who as usize % sessions.len());
                    hub.logout(&s);
                }
            }
            Op::Broadcast { who, claimed, text } => {
                if let (Some(s), Some(c)) = (pick(&sessions, who), pick(&sessions, claimed)) {
                    let _ = hub.broadcast(&s, &c.name, &text);
                }
            }
            Op::Private { who, to, text } => {
                if let (Some(s), Some(t)) = (pick(&sessions, who), pick(&sessions, to)) {
                    let _ = hub.private_message(&s, &s.name, &t.name, &text);
                }
            }
            Op::Request { who, target } => {
                if let (Some(s), Some(t)) = (pick(&sessions, who), pick(&sessions, target)) {
                    let _ = hub.request_private(now, &s, &s.name, &t.name);
                }
            }
            Op::Answer {
                who,
                requester,
                accept,
            } => {
                if let (Some(s), Some(r)) = (pick(&sessions, who), pick(&sessions, requester)) {
                    if let Ok(Some(id)) = hub.answer_private(now, &s, &r.name, &s.name, accept) {
                        ids.push(id);
                    }
                }
            }
            Op::Join { id, ip: a } => {
                if let Some(&id) = ids.get(id as usize % ids.len().max(1)) {
                    let _ = hub.relay_join(now, id, ip(a), stream());
                }
            }
            Op::Abandon { id } => {
                if let Some(&id) = ids.get(id as usize % ids.len().max(1)) {
                    let _ = hub.relay_abandon(id);
                }
            }
            Op::HalfDone { id } => {
                if let Some(&id) = ids.get(id as usize % ids.len().max(1)) {
                    hub.relay_half_done(now, id);
                }
            }
            Op::Close { who, id, target } => {
                if let (Some(s), Some(t), Some(&id)) = (
                    pick(&sessions, who),
                    pick(&sessions, target),
                    ids.get(id as usize % ids.len().max(1)),
                ) {
                    let _ = hub.close_private(&s, id, &s.name, &t.name);
                }
            }
            Op::Offer { who, to, port } => {
                if let (Some(s), Some(t)) = (pick(&sessions, who), pick(&sessions, to)) {
                    let media = chinwagd::hub::Media::BabelListen {
                        host: String::new(),
                        port,
                    };
                    let _ = hub.offer_call(now, &s, &t.name, media);
                }
            }
            Op::Refuse { who, caller } => {
                if let (Some(s), Some(c)) = (pick(&sessions, who), pick(&sessions, caller)) {
                    let _ = hub.answer_call(now, &s, &c.name, None);
                }
            }
            Op::Kick { who } => {
                if let Some(s) = pick(&sessions, who) {
                    hub.kick(&s.name);
                }
            }
            Op::KickIp { ip: a } => {
                hub.kick_ip(ip(a));
            }
            Op::BanName { name: n } => {
                let _ = hub
                    .bans()
                    .add(chinwagd::hub::bans::Ban::Name(name(n).to_owned()));
            }
            Op::Sweep => hub.sweep(now),
            Op::Wait { ms } => now += Duration::from_millis(ms as u64 * 10),
        }
        // The hub sees exactly the sessions still held, and no two of them
        // look alike.
        assert_eq!(hub.online_count(), sessions.len());
        for s in &sessions {
            assert!(hub.online(&s.name).is_some_and(|o| o.id == s.id));
        }
        assert!(hub.relay_count() <= 4);
    }
    for s in &sessions {
        hub.logout(s);
    }
    assert_eq!(hub.online_count(), 0);
});
