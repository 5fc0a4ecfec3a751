//! The rooms client's protocol core (libchinwag's rooms/machine.rs)
//! driven without sockets by an arbitrary sequence of: the application's
//! calls (requests, replies taken or abandoned, logins, rooms entered with
//! arbitrary peer lists, invitations answered, peers dropped, goodbye),
//! datagrams from the server or from peers (raw bytes, or answers,
//! texts, invitations, room closures and ERREURs shaped on what the
//! client sent), and time passing. After every step: no panic, every
//! datagram it sends decodes, one reply per request and only once, and
//! every bound holds (requests waiting, invitations, peers).
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag::rooms::machine::{Machine, Reply, Ticket};
use chinwag_proto::rooms::{is_answer, Body, Message, Mode, Peer, Reason, Registration, SERVER};
use libfuzzer_sys::fuzz_target;

#[path = "../common/input.rs"]
mod input;
use input::Input;

fn server() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 7004)
}

fn peer(i: u8) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 1, i % 4)),
        5000 + u16::from(i % 3),
    )
}

fn some_body(input: &mut Input) -> Body {
    match input.or0() % 9 {
        0 => Body::ListRooms,
        1 => Body::ListUsers,
        2 => Body::Leave,
        3 => Body::Text {
            chat: "t".repeat(input.or0() as usize),
        },
        4 => Body::AccessRoom { name: "den".into() },
        5 => Body::CreateRoom {
            mode: Mode::Decentralised,
            name: "den".into(),
            max: input.or0(),
        },
        6 => Body::Invite { user: "bo".into() },
        7 => Body::Connexion {
            name: Some("me".into()),
        },
        _ => Body::TextAck, // not a request: refused
    }
}

/// Something a server or a peer may say, shaped on what the client sent.
fn reply_to(input: &mut Input, sent: &[Message]) -> Message {
    let m = sent
        .get(input.or0() as usize % sent.len().max(1))
        .cloned()
        .unwrap_or(Message {
            user: 0,
            seq: 0,
            body: Body::ListRooms,
        });
    let body = match input.or0() % 12 {
        0 => Body::Registered {
            status: Registration::Accepted,
            user: input.or0(),
        },
        1 => Body::KeptAlive {
            ok: input.or0() % 4 != 0,
        },
        2 => Body::TextAck,
        3 => Body::Error {
            refused: m.body.kind(),
            reason: match input.or0() % 6 {
                0 => Reason::UnknownType,
                1 => Reason::Malformed,
                2 => Reason::TooLong,
                3 => Reason::NotAccepted,
                4 => Reason::NoRecipient,
                _ => Reason::Limit,
            },
        },
        4 => Body::Text { chat: "hi".into() },
        5 => Body::Invitation {
            from: "al".into(),
            mode: Mode::Decentralised,
            room: ["den", "loft"][input.or0() as usize % 2].into(),
        },
        6 => Body::RoomClosed { room: "den".into() },
        7 => Body::AccessAnswer {
            mode: Mode::Decentralised,
            status: chinwag_proto::rooms::Access::Granted,
            peers: peers(input),
        },
        8 => Body::UserList {
            names: vec!["al".into()],
        },
        9 => Body::LeaveAnswer { ok: true },
        10 => Body::Connexion { name: None },
        _ => Body::DisconnectAnswer { ok: true },
    };
    let seq = if input.or0() % 4 == 0 {
        u16::from(input.or0())
    } else {
        m.seq
    };
    Message {
        user: if input.or0() % 2 == 0 {
            SERVER
        } else {
            input.or0()
        },
        seq,
        body,
    }
}

fn peers(input: &mut Input) -> Vec<Peer> {
    (0..input.or0() % 6)
        .map(|_| {
            let a = peer(input.or0());
            let ip = match a.ip() {
                IpAddr::V4(ip) if input.or0() % 5 != 0 => ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            Peer {
                ip,
                port: a.port(),
                name: "p".into(),
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut now = Instant::now();
    let mut m = Machine::new(server(), u16::from(input.or0()) << 8);
    m.set_keepalive(Duration::from_millis(50 + u64::from(input.or0()) * 10));
    let mut tickets: Vec<Ticket> = Vec::new();
    let mut settled: HashSet<Ticket> = HashSet::new();
    let mut sent: Vec<Message> = Vec::new();
    let mut steps = 0;
    while !input.done() && steps < 3000 {
        steps += 1;
        match input.or0() % 11 {
            0 => {
                let to = if input.or0() % 3 == 0 {
                    peer(input.or0())
                } else {
                    server()
                };
                let body = some_body(&mut input);
                if let Ok(t) = m.request(now, to, body) {
                    assert!(!tickets.contains(&t), "a ticket handed out twice");
                    tickets.push(t);
                }
            }
            1 => {
                if !tickets.is_empty() {
                    let i = input.or0() as usize % tickets.len();
                    let t = tickets[i];
                    match m.reply(t) {
                        Some(r) => {
                            if let Reply::Answer(b) = &r {
                                assert!(is_answer(b.kind()), "{b:?} settled a request");
                            }
                            assert!(settled.insert(t), "two replies for one request");
                            tickets.swap_remove(i);
                            assert_eq!(m.reply(t), None);
                        }
                        None => {
                            if input.or0() % 4 == 0 {
                                m.abandon(t);
                                tickets.swap_remove(i);
                            }
                        }
                    }
                }
            }
            2 | 3 => {
                let from = match input.or0() % 4 {
                    0 => peer(input.or0()),
                    1 => SocketAddr::new(
                        IpAddr::V6(Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped()),
                        7004,
                    ),
                    _ => server(),
                };
                let d = reply_to(&mut input, &sent).to_bytes();
                m.datagram(now, from, &d);
            }
            4 => {
                let n = input.or0() as usize;
                let d = input.take(n).to_vec();
                let from = if input.or0() % 2 == 0 {
                    server()
                } else {
                    peer(input.or0())
                };
                m.datagram(now, from, &d);
            }
            5 | 6 => {
                now += Duration::from_millis(u64::from(input.or0()) * 4);
                m.tick(now);
            }
            7 => {
                if m.begin_login().is_ok() {
                    if input.or0() % 2 == 0 {
                        m.registered(now, 1 + input.or0() % 254, "me");
                    } else {
                        m.end_login();
                    }
                }
            }
            8 => {
                let name = ["den", "", "loft"][input.or0() as usize % 3];
                let ps = peers(&mut input);
                m.enter(name, Mode::Decentralised, ps);
            }
            9 => {
                let room = ["den", "", "loft"][input.or0() as usize % 3];
                let _ = m.answer_invitation(now, room, input.or0() % 2 == 0);
            }
            _ => match input.or0() % 3 {
                0 => {
                    // A decentralised text's outcome: peers that
                    // acknowledged it, or stayed silent (then dropped).
                    let sent = m.peer_addrs();
                    let k = input.or0() as usize % (sent.len() + 1);
                    let replies: Vec<Reply> = sent[..k]
                        .iter()
                        .map(|_| match input.or0() % 2 {
                            0 => Reply::Unanswered,
                            _ => Reply::Answer(Body::TextAck),
                        })
                        .collect();
                    let d = m.delivered(&sent[..k], &replies, input.or0() % 2 == 0);
                    assert!(d.acked + d.silent.len() + d.missed.len() + d.stale.len() <= k);
                }
                1 => m.to_public(),
                _ => {
                    if input.or0() % 8 == 0 {
                        if let Some(b) = m.goodbye(now) {
                            assert_eq!(Message::decode(&b).unwrap().body, Body::Disconnect);
                        }
                    }
                }
            },
        }
        while let Some((_, b)) = m.poll_transmit() {
            let msg = Message::decode(&b).expect("the client sends valid datagrams");
            if !is_answer(msg.body.kind()) {
                sent.push(msg);
                if sent.len() > 32 {
                    sent.remove(0);
                }
            }
        }
        let _ = m.take_events();
        let _ = m.take_lost();
        assert!(
            m.waiting() <= tickets.len(),
            "{} waiting, {} held",
            m.waiting(),
            tickets.len()
        );
        assert!(m.invitations() <= 64);
        assert!(m.room().peers.len() <= 253);
        assert!(m
            .room()
            .peers
            .iter()
            .all(|p| !p.ip.is_unspecified() && p.port != 0));
    }
});
