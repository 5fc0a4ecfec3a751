//! The rooms front-end's state (chinwagd's front/rooms/state.rs) driven by
//! an arbitrary sequence of datagrams (raw bytes, or well-formed requests
//! and acknowledgements from clients that use the ids they were given), time
//! passing, hub verdicts and hub answers completed in any order, hub events
//! (texts, invitations, closings) for any client, operators' kicks and
//! repairs. After every step: no panic, the state's invariants hold
//! (`Rooms::check`), every datagram it sends decodes, and a session is
//! logged out only once and only if it was given; at the end every
//! session given is logged out exactly once (no name is leaked).
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::reliable;
use chinwag_proto::rooms::{
    is_answer, kind, Body, Creation, Message, Mode, Reason, Registration, SERVER,
};
use chinwagd::front::rooms::state::{Job, Output, Rooms, Settings, Ticket, Verdict, Work};
use chinwagd::hub::{Event, RoomMode};
use libfuzzer_sys::fuzz_target;

#[path = "../common/input.rs"]
mod input;
use input::Input;

const NAMES: [&str; 6] = ["al", "bo", "cy", "al", "a#b", "dee"];
const ROOMS: [&str; 3] = ["den", "loft", ""];

fn addrs() -> Vec<SocketAddr> {
    let v4 = Ipv4Addr::new(10, 0, 0, 1);
    vec![
        SocketAddr::new(IpAddr::V4(v4), 1),
        SocketAddr::new(IpAddr::V4(v4), 2),
        // The same host as the first two, written v4-mapped.
        SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), 1),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 1),
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            1,
        ),
    ]
}

/// The hub, as far as names go, and the sessions it handed out.
#[derive(Default)]
struct Hub {
    names: HashMap<u32, String>,
    next: u32,
    given: u32,
}

impl Hub {
    fn verdict(&mut self, name: &str) -> Verdict<u32> {
        if name.is_empty() || name.len() > 10 || name.contains('#') {
            return Verdict::Invalid;
        }
        if self.names.values().any(|n| n == name) {
            return Verdict::Taken;
        }
        self.next += 1;
        self.given += 1;
        self.names.insert(self.next, name.to_owned());
        Verdict::Welcome(self.next)
    }
}

struct World {
    rooms: Rooms<u32>,
    hub: Hub,
    now: Instant,
    addrs: Vec<SocketAddr>,
    /// The id each address was last given, and the last NUM_SEQ the
    /// server used towards it with the kind sent.
    ids: HashMap<SocketAddr, u8>,
    from_server: HashMap<SocketAddr, Vec<Message>>,
    tickets: Vec<Ticket>,
    jobs: Vec<Job<u32>>,
    logged_out: HashSet<u32>,
}

impl World {
    fn settle(&mut self, out: Output<u32>) {
        for s in out.logouts {
            assert!(
                self.hub.names.remove(&s).is_some(),
                "session {s} logged out twice or never given"
            );
            assert!(self.logged_out.insert(s));
        }
        for (to, bytes) in out.datagrams {
            let m = Message::decode(&bytes).unwrap_or_else(|e| {
                panic!("the server sends valid datagrams: {e:?} in {bytes:02x?}")
            });
            // Its own id, but on a forwarded text the author's.
            assert!(m.user == SERVER || m.body.kind() == chinwag_proto::rooms::kind::TEXTE);
            if let Body::Registered {
                status: Registration::Accepted,
                user,
            } = m.body
            {
                self.ids.insert(to, user);
            }
            if !is_answer(m.body.kind()) {
                let v = self.from_server.entry(to).or_default();
                v.push(m);
                if v.len() > 16 {
                    v.remove(0);
                }
            }
        }
    }

    fn step(&mut self) {
        self.rooms.check().expect("the state's invariants");
        let out = self.rooms.take_output();
        self.settle(out);
    }
}

fn body(input: &mut Input, world: &World, to: SocketAddr) -> Body {
    let pick = |input: &mut Input, n: usize| input.byte().unwrap_or(0) as usize % n;
    let name = |input: &mut Input| NAMES[pick(input, NAMES.len())].to_string();
    let room = |input: &mut Input| ROOMS[pick(input, ROOMS.len())].to_string();
    let mode = |input: &mut Input| {
        if pick(input, 2) == 0 {
            Mode::Centralised
        } else {
            Mode::Decentralised
        }
    };
    match pick(input, 14) {
        0 => Body::Connexion {
            name: Some(name(input)),
        },
        1 => Body::Connexion { name: None },
        2 => Body::CreateRoom {
            mode: mode(input),
            name: room(input),
            max: input.byte().unwrap_or(2) % 6,
        },
        3 => Body::ListRooms,
        4 => Body::AccessRoom { name: room(input) },
        5 => Body::ChangeRoom { name: room(input) },
        6 => Body::ListClients { room: room(input) },
        7 => Body::Invite { user: name(input) },
        8 => Body::Text {
            chat: "x".repeat(pick(input, 1300)),
        },
        9 => Body::Leave,
        10 => Body::Disconnect,
        11 => Body::ListUsers,
        // An acknowledgement of something the server sent this address.
        _ => {
            let sent = world.from_server.get(&to);
            let Some(m) = sent.and_then(|v| v.get(pick(input, v.len().max(1)))) else {
                return Body::TextAck;
            };
            match &m.body {
                Body::Text { .. } => Body::TextAck,
                Body::RoomClosed { .. } => Body::RoomClosedAck,
                _ => Body::InvitationAnswer {
                    accept: pick(input, 2) == 0,
                },
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(a), Some(b), Some(c)) = (input.byte(), input.byte(), input.byte()) else {
        return;
    };
    let set = Settings {
        idle_timeout: Duration::from_millis(500 + 500 * (a % 8) as u64),
        link: reliable::Config {
            tries: 1 + (a >> 4) as u32 % 10,
            outstanding_per_peer: 1 + (b % 8) as usize,
            answers_per_peer: 1 + (b >> 3) as usize % 32,
            answers_total: 64,
            answer_bytes: 4096,
            ..reliable::Config::default()
        },
        max_per_ip: 1 + (c % 4) as usize,
        registrations_per_minute: 1 + (c >> 2) as u32 % 30,
        requests_per_second: 1 + (c >> 5) as u32 * 4,
    };
    let mut w = World {
        rooms: Rooms::new(set, u64::from(a) << 8 | u64::from(b)),
        hub: Hub::default(),
        now: Instant::now(),
        addrs: addrs(),
        ids: HashMap::new(),
        from_server: HashMap::new(),
        tickets: Vec::new(),
        jobs: Vec::new(),
        logged_out: HashSet::new(),
    };
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        let who = w.addrs[(op >> 4) as usize % w.addrs.len()];
        match op % 8 {
            // Raw bytes.
            0 => {
                let n = input.byte().unwrap_or(0) as usize;
                let d = input.take(n).to_vec();
                match w.rooms.datagram(w.now, who, &d) {
                    Some(Work::Register(t)) => w.tickets.push(t),
                    Some(Work::Job(j)) => w.jobs.push(j),
                    None => {}
                }
            }
            // A request or acknowledgement, with this address's id or
            // another, and a NUM_SEQ chosen by the input.
            1 | 2 => {
                let body = body(&mut input, &w, who);
                let id = w.ids.get(&who).copied().unwrap_or(0);
                let user = match input.byte().unwrap_or(0) % 8 {
                    0 => input.byte().unwrap_or(0),
                    _ if matches!(body, Body::Connexion { name: Some(_) }) => 0,
                    _ => id,
                };
                let seq = match &body {
                    Body::TextAck | Body::RoomClosedAck | Body::InvitationAnswer { .. } => w
                        .from_server
                        .get(&who)
                        .and_then(|v| v.last())
                        .map_or(0, |m| m.seq),
                    _ => u16::from(input.byte().unwrap_or(0)),
                };
                let d = Message { user, seq, body }.to_bytes();
                match w.rooms.datagram(w.now, who, &d) {
                    Some(Work::Register(t)) => w.tickets.push(t),
                    Some(Work::Job(j)) => w.jobs.push(j),
                    None => {}
                }
            }
            // The hub answers a registration (any of those waiting).
            3 => {
                if !w.tickets.is_empty() {
                    let i = input.byte().unwrap_or(0) as usize % w.tickets.len();
                    let t = w.tickets.swap_remove(i);
                    let v = w.hub.verdict(&t.name);
                    w.rooms.registered(w.now, t, v);
                }
            }
            // Time passes.
            4 | 5 => {
                let ms = u64::from(input.byte().unwrap_or(0)) * 8;
                w.now += Duration::from_millis(ms);
                w.rooms.tick(w.now);
            }
            // An operator's kick, or the hub's answer to a request (any of
            // those waiting), or a hub event for this address's client.
            6 => match input.byte().unwrap_or(0) % 4 {
                0 => {
                    let id = w.ids.get(&who).copied().unwrap_or(1);
                    w.rooms.kick(w.now, id, who);
                }
                1 if !w.jobs.is_empty() => {
                    let i = input.byte().unwrap_or(0) as usize % w.jobs.len();
                    let j = w.jobs.swap_remove(i);
                    let answer = match input.byte().unwrap_or(0) % 4 {
                        0 => Body::TextAck,
                        1 => Body::Error {
                            refused: kind::TEXTE,
                            reason: Reason::NoRecipient,
                        },
                        2 => Body::CreateAnswer {
                            status: Creation::Created,
                            room: 1,
                        },
                        _ => Body::LeaveAnswer { ok: true },
                    };
                    w.rooms.answered(w.now, j, answer);
                }
                _ => {
                    let id = w.ids.get(&who).copied().unwrap_or(1);
                    let from = NAMES[input.byte().unwrap_or(0) as usize % NAMES.len()];
                    let ev = match input.byte().unwrap_or(0) % 3 {
                        0 => Event::Message { from, text: "hi" },
                        1 => Event::RoomInvitation {
                            from,
                            room: "den",
                            mode: RoomMode::Centralised,
                            token: u64::from(input.byte().unwrap_or(0)),
                        },
                        _ => Event::RoomClosed { room: "den" },
                    };
                    w.rooms.event(w.now, id, who, &ev);
                }
            },
            // A repair, as after a panic.
            _ => {
                let culprit = (input.byte().unwrap_or(0) % 2 == 0).then_some(who);
                w.rooms.recover(w.now, culprit);
            }
        }
        w.step();
    }
    // Registrations still at the hub finish; then the server stops.
    for t in std::mem::take(&mut w.tickets) {
        let v = w.hub.verdict(&t.name);
        w.rooms.registered(w.now, t, v);
        w.step();
    }
    for s in w.rooms.shutdown() {
        assert!(
            w.hub.names.remove(&s).is_some(),
            "session {s} handed back twice"
        );
        assert!(w.logged_out.insert(s));
    }
    assert!(
        w.hub.names.is_empty(),
        "names never given back: {:?}",
        w.hub.names
    );
    assert_eq!(w.logged_out.len() as u32, w.hub.given);
});
