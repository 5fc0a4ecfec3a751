//! The rooms client's protocol core with a scripted clock and no sockets.

use std::net::{Ipv4Addr, Ipv6Addr};

use chinwag_proto::rooms::kind;

use super::*;

const MS: Duration = Duration::from_millis(1);

fn server() -> SocketAddr {
    "127.0.0.1:7004".parse().unwrap()
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

struct T {
    m: Machine,
    now: Instant,
}

impl T {
    fn new() -> T {
        T {
            m: Machine::new(server(), 100),
            now: Instant::now(),
        }
    }

    /// Registered as id 7, the keep-alive that follows answered.
    fn registered() -> T {
        let mut t = T::new();
        t.m.begin_login().unwrap();
        let login = t.request(Body::Connexion {
            name: Some("me".into()),
        });
        t.m.registered(t.now, 7, "me");
        assert!(t.m.reply(login).is_none(), "not answered yet");
        t.m.abandon(login);
        let sent = t.out();
        let ka = sent.last().expect("a keep-alive at once");
        assert_eq!(
            (ka.1.user, &ka.1.body),
            (7, &Body::Connexion { name: None })
        );
        let seq = ka.1.seq;
        t.server_says(SERVER, seq, Body::KeptAlive { ok: true });
        t
    }

    fn request(&mut self, body: Body) -> Ticket {
        self.m.request(self.now, server(), body).unwrap()
    }

    fn out(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut v = Vec::new();
        while let Some((to, b)) = self.m.poll_transmit() {
            v.push((
                to,
                Message::decode(&b).expect("the client sends valid datagrams"),
            ));
        }
        v
    }

    fn from(&mut self, from: SocketAddr, user: u8, seq: u16, body: Body) {
        let d = Message { user, seq, body }.to_bytes();
        self.m.datagram(self.now, from, &d);
    }

    fn server_says(&mut self, user: u8, seq: u16, body: Body) {
        self.from(server(), user, seq, body);
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        self.m.tick(self.now);
    }
}

#[test]
fn a_keep_alive_follows_the_login_at_once_then_every_interval() {
    let mut t = T::registered();
    t.m.set_keepalive(Duration::from_secs(1));
    t.tick(999 * MS);
    assert!(t.out().is_empty());
    t.tick(MS);
    let sent = t.out();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.body, Body::Connexion { name: None });
    // Answered "unknown": the client is lost, once.
    let seq = sent[0].1.seq;
    t.server_says(SERVER, seq, Body::KeptAlive { ok: false });
    assert!(t.m.take_lost().is_some());
    assert!(t.m.take_lost().is_none());
    assert!(t.m.is_closed());
}

#[test]
fn a_server_silent_for_three_keep_alives_in_a_row_is_gone() {
    let mut t = T::registered();
    t.m.set_keepalive(Duration::from_secs(1));
    // Keep-alives until one has been sent M times and given up; `answer`
    // answers its first copy instead.
    let round = |t: &mut T, answer: bool| {
        let mut sends = 0;
        for _ in 0..1000 {
            t.tick(10 * MS);
            for (_, m) in t.out() {
                assert_eq!(m.body, Body::Connexion { name: None });
                sends += 1;
                if answer {
                    t.server_says(SERVER, m.seq, Body::KeptAlive { ok: true });
                    return;
                }
            }
            if sends == TRIES {
                // Given up once every send's time has passed.
                t.tick(RETRY_EVERY);
                return;
            }
        }
        panic!("no keep-alive round");
    };
    round(&mut t, false);
    round(&mut t, false);
    // An answer in between starts the count again.
    round(&mut t, true);
    round(&mut t, false);
    round(&mut t, false);
    assert!(!t.m.is_closed(), "two in a row are not enough");
    assert!(t.m.take_lost().is_none());
    round(&mut t, false);
    assert!(t.m.is_closed(), "three in a row: the server is gone");
    let why = t.m.take_lost().expect("said once");
    assert!(
        why.contains("answered none of the last 3 keep-alives"),
        "{why}"
    );
    assert!(t.m.take_lost().is_none());
}

#[test]
fn an_erreur_settles_the_request_it_names() {
    let mut t = T::registered();
    let r = t.request(Body::Text { chat: "x".into() });
    let seq = t.out()[0].1.seq;
    let refusal = Body::Error {
        refused: kind::TEXTE,
        reason: Reason::NoRecipient,
    };
    t.server_says(SERVER, seq, refusal.clone());
    assert_eq!(t.m.reply(r), Some(Reply::Answer(refusal)));
    assert_eq!(t.m.waiting(), 0);
    // No retransmission after it.
    t.tick(RETRY_EVERY * 3);
    assert!(t.out().is_empty());
}

#[test]
fn a_request_unanswered_after_m_sends_is_given_up() {
    let mut t = T::registered();
    let r = t.request(Body::ListUsers);
    let mut sends = t.out().len();
    for _ in 0..TRIES + 2 {
        t.tick(RETRY_EVERY);
        sends += t.out().len();
    }
    assert_eq!(sends as u32, TRIES);
    assert_eq!(t.m.reply(r), Some(Reply::Unanswered));
}

#[test]
fn a_room_closed_is_acknowledged_and_moves_to_the_public_room_once() {
    let mut t = T::registered();
    t.m.enter("den", Mode::Centralised, Vec::new());
    for _ in 0..2 {
        t.server_says(SERVER, 900, Body::RoomClosed { room: "den".into() });
        let sent = t.out();
        assert_eq!(sent.len(), 1, "every copy acknowledged");
        assert_eq!(
            (sent[0].1.seq, &sent[0].1.body),
            (900, &Body::RoomClosedAck)
        );
    }
    assert_eq!(t.m.room(), &Room::public());
    let ev = t.m.take_events();
    assert_eq!(ev.len(), 1, "one event for two copies: {ev:?}");
    assert!(matches!(&ev[0], Event::RoomClosed { room } if room == "den"));
    // The notice of a room this client already left changes nothing.
    t.m.enter("loft", Mode::Centralised, Vec::new());
    t.server_says(SERVER, 901, Body::RoomClosed { room: "den".into() });
    assert_eq!(t.m.room().name, "loft");
    // Nobody but the server closes rooms.
    t.from(
        peer(9),
        3,
        902,
        Body::RoomClosed {
            room: "loft".into(),
        },
    );
    assert_eq!(t.m.room().name, "loft");
}

#[test]
fn invitations_are_answered_once_replayed_to_copies_and_last_60_s() {
    let mut t = T::registered();
    let inv = Body::Invitation {
        from: "al".into(),
        mode: Mode::Centralised,
        room: "den".into(),
    };
    t.server_says(SERVER, 50, inv.clone());
    t.server_says(SERVER, 50, inv.clone());
    assert_eq!(t.m.take_events().len(), 1);
    assert!(t.out().is_empty(), "the application answers");
    assert_eq!(
        t.m.answer_invitation(t.now, "den", false).unwrap(),
        ("den".into(), Mode::Centralised)
    );
    assert_eq!(t.out()[0].1.body, Body::InvitationAnswer { accept: false });
    t.server_says(SERVER, 50, inv.clone());
    assert_eq!(
        t.out()[0].1,
        Message {
            user: 7,
            seq: 50,
            body: Body::InvitationAnswer { accept: false }
        }
    );
    let again = t.m.answer_invitation(t.now, "den", true).unwrap_err();
    assert_eq!(again.code, ErrorKind::NoSuchRequest);
    // Another one, too old to answer.
    t.server_says(SERVER, 51, inv);
    t.tick(INVITATION_TTL);
    let late = t.m.answer_invitation(t.now, "", true).unwrap_err();
    assert!(late.message.contains("60 s"), "{}", late.message);
}

#[test]
fn invitations_kept_are_bounded() {
    let mut t = T::registered();
    for i in 0..(INVITATIONS_KEPT as u16 + 10) {
        let inv = Body::Invitation {
            from: "al".into(),
            mode: Mode::Centralised,
            room: format!("r{i}"),
        };
        t.server_says(SERVER, 1000 + i, inv);
    }
    assert_eq!(t.m.invitations.len(), INVITATIONS_KEPT);
    assert!(t.m.answer_invitation(t.now, "r0", true).is_err());
    assert!(t.m.answer_invitation(t.now, "r73", true).is_ok());
}

#[test]
fn v4_mapped_addresses_are_the_ipv4_addresses_they_are() {
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        server().port(),
    );
    let mut t = T {
        m: Machine::new(mapped, 1),
        now: Instant::now(),
    };
    assert_eq!(t.m.server(), server());
    t.m.begin_login().unwrap();
    let login = t.m.request(
        t.now,
        mapped,
        Body::Connexion {
            name: Some("me".into()),
        },
    );
    let login = login.unwrap();
    assert_eq!(t.out()[0].0, server(), "sent to the IPv4 address");
    // The answer from the same host written either way settles it.
    let answer = Body::Registered {
        status: chinwag_proto::rooms::Registration::Accepted,
        user: 7,
    };
    t.from(mapped, SERVER, login.seq, answer.clone());
    assert_eq!(t.m.reply(login), Some(Reply::Answer(answer)));
    t.m.registered(t.now, 7, "me");
    // A decentralised peer's text through a dual-stack socket is its
    // listed IPv4 peer.
    t.m.enter(
        "den",
        Mode::Decentralised,
        vec![Peer {
            ip: Ipv4Addr::LOCALHOST,
            port: 5000,
            name: "al".into(),
        }],
    );
    let p = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 5000);
    t.from(p, 3, 1, Body::Text { chat: "hi".into() });
    let ev = t.m.take_events();
    assert!(
        matches!(&ev[..], [Event::Message { from, .. }] if from == "al"),
        "{ev:?}"
    );
    assert_eq!(t.m.room().peers.len(), 1, "not listed twice");
    // A true IPv6 sender is never added to the IPv4 peer list.
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5001);
    t.from(v6, 4, 1, Body::Text { chat: "yo".into() });
    assert_eq!(t.m.room().peers.len(), 1);
}

#[test]
fn unreachable_and_repeated_peers_are_left_out_and_forgotten_peers_settle() {
    let mut t = T::registered();
    let p = |ip: [u8; 4], port: u16, name: &str| Peer {
        ip: Ipv4Addr::from(ip),
        port,
        name: name.into(),
    };
    t.m.enter(
        "den",
        Mode::Decentralised,
        vec![
            p([0, 0, 0, 0], 5000, "zero"),
            p([127, 0, 0, 1], 0, "noport"),
            p([127, 0, 0, 1], 5001, "al"),
            p([127, 0, 0, 1], 5001, "al2"),
            p([127, 0, 0, 1], 7004, "server"),
            p([127, 0, 0, 1], 5002, "bo"),
        ],
    );
    assert_eq!(t.m.peer_addrs(), vec![peer(5001), peer(5002)]);
    let to_al =
        t.m.request(t.now, peer(5001), Body::Text { chat: "x".into() });
    let to_al = to_al.unwrap();
    // al leaves the list: whoever waits on it hears "unanswered" now.
    t.m.enter(
        "den",
        Mode::Decentralised,
        vec![p([127, 0, 0, 1], 5002, "bo")],
    );
    assert_eq!(t.m.reply(to_al), Some(Reply::Unanswered));
    let d = t.m.delivered(&[peer(5002)], &[Reply::Unanswered], true);
    assert_eq!(d.silent, vec!["bo".to_string()]);
    assert!(!d.complete());
    assert!(t.m.peer_addrs().is_empty());
}

#[test]
fn a_text_from_another_dialect_is_shown_with_its_authors_name() {
    let mut t = T::registered();
    // As chinwagd forwards a chatos MESSAGE into the public room.
    t.server_says(
        SERVER,
        41,
        Body::Text {
            chat: "alice: hi all".into(),
        },
    );
    assert_eq!(t.out().len(), 1, "acknowledged");
    let ev = t.m.take_events();
    assert!(
        matches!(&ev[..], [Event::Message { from, text }] if from == "alice" && text == "hi all"),
        "{ev:?}"
    );
    // From a rooms user (its id), the same words are just its text.
    t.server_says(
        3,
        42,
        Body::Text {
            chat: "alice: hi all".into(),
        },
    );
    t.out();
    let ev = t.m.take_events();
    assert!(
        matches!(&ev[..], [Event::Message { from, text }] if from == "#3" && text == "alice: hi all"),
        "{ev:?}"
    );
}

#[test]
fn texts_are_acknowledged_per_copy_and_shown_once() {
    let mut t = T::registered();
    for _ in 0..3 {
        t.server_says(
            3,
            40,
            Body::Text {
                chat: "once".into(),
            },
        );
    }
    let acks = t.out();
    assert_eq!(acks.len(), 3);
    assert!(acks
        .iter()
        .all(|(_, m)| (m.user, m.seq, &m.body) == (7, 40, &Body::TextAck)));
    let ev = t.m.take_events();
    assert!(
        matches!(&ev[..], [Event::Message { from, text }] if from == "#3" && text == "once"),
        "{ev:?}"
    );
    // A stranger's text outside a decentralised room: refused, not shown.
    t.from(
        peer(6000),
        9,
        1,
        Body::Text {
            chat: "psst".into(),
        },
    );
    assert_eq!(t.out().len(), 1);
    assert!(t.m.take_events().is_empty());
}

/// The bytes the machine sends next, with their destination.
fn raw_out(t: &mut T) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| t.m.poll_transmit()).collect()
}

#[test]
fn a_peer_text_outside_a_decentralised_room_is_refused_not_confirmed() {
    let mut t = T::registered();
    let psst = || Body::Text {
        chat: "psst".into(),
    };
    // In the public room (never joined, or left): ERREUR [TEXTE] 5, the
    // answer the server gives a text nobody would hear; each copy the same.
    for _ in 0..2 {
        t.from(peer(6000), 9, 0x0102, psst());
        assert_eq!(
            raw_out(&mut t),
            vec![(peer(6000), vec![0xd8, 7, 0x01, 0x02, 0x78, 0x05])]
        );
    }
    assert!(t.m.take_events().is_empty());
    // In a centralised private room: the same.
    t.m.enter("club", Mode::Centralised, Vec::new());
    t.from(peer(6000), 9, 2, psst());
    assert_eq!(
        raw_out(&mut t),
        vec![(peer(6000), vec![0xd8, 7, 0, 2, 0x78, 0x05])]
    );
    // In a decentralised room: acknowledged (REPONSE_TEXTE) and shown.
    let bo = Peer {
        ip: Ipv4Addr::LOCALHOST,
        port: 6000,
        name: "bo".into(),
    };
    t.m.enter("den", Mode::Decentralised, vec![bo]);
    t.from(peer(6000), 9, 3, psst());
    assert_eq!(raw_out(&mut t), vec![(peer(6000), vec![0x80, 7, 0, 3])]);
    let ev = t.m.take_events();
    assert!(
        matches!(&ev[..], [Event::Message { from, text }] if from == "bo" && text == "psst"),
        "{ev:?}"
    );
    // Left again: refused again, and not shown.
    t.m.to_public();
    t.from(peer(6000), 9, 4, psst());
    assert_eq!(
        raw_out(&mut t),
        vec![(peer(6000), vec![0xd8, 7, 0, 4, 0x78, 0x05])]
    );
    assert!(t.m.take_events().is_empty());
    // The server's own texts are still acknowledged from the public room.
    t.server_says(3, 5, psst());
    assert_eq!(raw_out(&mut t), vec![(server(), vec![0x80, 7, 0, 5])]);
}

#[test]
fn a_peer_text_just_after_accepting_a_decentralised_invitation_is_taken() {
    let mut t = T::registered();
    let psst = || Body::Text {
        chat: "psst".into(),
    };
    t.server_says(
        SERVER,
        50,
        Body::Invitation {
            from: "al".into(),
            mode: Mode::Decentralised,
            room: "den".into(),
        },
    );
    t.m.take_events();
    t.m.answer_invitation(t.now, "den", true).unwrap();
    raw_out(&mut t);
    // The server moved this client when it read the answer; a member may
    // write before the access answer enters the room here: acknowledged
    // and shown, not refused as from outside any room.
    t.from(peer(6000), 9, 1, psst());
    assert_eq!(raw_out(&mut t), vec![(peer(6000), vec![0x80, 7, 0, 1])]);
    let ev = t.m.take_events();
    assert!(
        matches!(&ev[..], [Event::Message { text, .. }] if text == "psst"),
        "{ev:?}"
    );
    // Not moved after all: refused again at once.
    t.m.not_joining();
    t.from(peer(6000), 9, 2, psst());
    assert_eq!(
        raw_out(&mut t),
        vec![(peer(6000), vec![0xd8, 7, 0, 2, 0x78, 0x05])]
    );
    // An access asked for: the same grace, which ends by itself.
    t.m.joining(t.now);
    t.from(peer(6000), 9, 3, psst());
    assert_eq!(raw_out(&mut t), vec![(peer(6000), vec![0x80, 7, 0, 3])]);
    t.tick(JOIN_GRACE);
    t.from(peer(6000), 9, 4, psst());
    assert_eq!(
        raw_out(&mut t),
        vec![(peer(6000), vec![0xd8, 7, 0, 4, 0x78, 0x05])]
    );
}

#[test]
fn a_delivery_tells_acknowledged_silent_missed_and_stale_peers_apart() {
    let p = |port: u16, name: &str| Peer {
        ip: Ipv4Addr::LOCALHOST,
        port,
        name: name.into(),
    };
    let room = || vec![p(5001, "al"), p(5002, "bo"), p(5003, "cy")];
    let sent = [peer(5001), peer(5002), peer(5003)];
    let refused = || {
        Reply::Answer(Body::Error {
            refused: kind::TEXTE,
            reason: Reason::NoRecipient,
        })
    };
    let mut t = T::registered();

    // The list is the server's for this text: a member that refuses it
    // missed it, and one that is silent may have it; neither is read.
    t.m.enter("den", Mode::Decentralised, room());
    let d = t.m.delivered(
        &sent,
        &[Reply::Answer(Body::TextAck), refused(), Reply::Unanswered],
        true,
    );
    assert_eq!(
        d,
        Delivery {
            acked: 1,
            silent: vec!["cy".into()],
            missed: vec!["bo".into()],
            stale: vec![],
        }
    );
    assert!(!d.complete());
    assert_eq!(t.m.peer_addrs(), vec![peer(5001)], "bo and cy dropped");

    // The server gave no list: a known peer that refuses left the room;
    // everyone else acknowledged, so the text was read by every member.
    t.m.enter("den", Mode::Decentralised, room());
    let ack = || Reply::Answer(Body::TextAck);
    let d = t.m.delivered(&sent, &[ack(), refused(), ack()], false);
    assert_eq!((d.acked, d.stale.clone()), (2, vec!["bo".to_string()]));
    assert!(d.complete());
    assert_eq!(t.m.peer_addrs(), vec![peer(5001), peer(5003)]);

    // Any other answer counts as silence (another ERREUR, a wrong type).
    let other = Reply::Answer(Body::Error {
        refused: kind::TEXTE,
        reason: Reason::Malformed,
    });
    let d = t.m.delivered(&[peer(5001)], &[other], false);
    assert_eq!(d.silent, vec!["al".to_string()]);
    assert!(!d.complete());
}

#[test]
fn before_login_nothing_is_answered_and_after_close_nothing_moves() {
    let mut t = T::new();
    t.server_says(
        3,
        40,
        Body::Text {
            chat: "early".into(),
        },
    );
    assert!(t.out().is_empty() && t.m.take_events().is_empty());
    let mut t = T::registered();
    let r = t.request(Body::ListUsers);
    t.out();
    let bye = t.m.goodbye(t.now).expect("a DECONNEXION");
    assert_eq!(Message::decode(&bye).unwrap().body, Body::Disconnect);
    assert!(t.m.goodbye(t.now).is_none(), "once");
    assert!(t.m.request(t.now, server(), Body::ListRooms).is_err());
    t.server_says(
        3,
        41,
        Body::Text {
            chat: "late".into(),
        },
    );
    t.tick(RETRY_EVERY * 20);
    assert!(t.out().is_empty() && t.m.take_events().is_empty());
    t.m.abandon(r);
    assert_eq!(t.m.waiting(), 0);
}

#[test]
fn a_numbering_started_over_never_mixes_two_requests_up() {
    // Found by the rooms_client fuzz target: a peer forgotten starts its
    // NUM_SEQ over, and the next request to it had the same (address,
    // NUM_SEQ) as one whose reply was still unclaimed.
    let mut t = T::registered();
    let p = Peer {
        ip: Ipv4Addr::LOCALHOST,
        port: 5000,
        name: "al".into(),
    };
    t.m.enter("den", Mode::Decentralised, vec![p.clone()]);
    let first = t.m.request(t.now, peer(5000), Body::ListRooms).unwrap();
    t.m.enter("den", Mode::Decentralised, Vec::new());
    t.m.enter("den", Mode::Decentralised, vec![p]);
    let second = t.m.request(t.now, peer(5000), Body::ListRooms).unwrap();
    assert_eq!(first.seq, second.seq, "the numbering started over");
    assert_ne!(first, second);
    t.out();
    let answer = Body::RoomList { rooms: Vec::new() };
    t.from(peer(5000), 3, second.seq, answer.clone());
    assert_eq!(t.m.reply(first), Some(Reply::Unanswered));
    assert_eq!(t.m.reply(second), Some(Reply::Answer(answer)));
    assert_eq!(t.m.waiting(), 0);
    // Abandoning a settled ticket cancels nothing in flight.
    let third = t.m.request(t.now, peer(5000), Body::ListRooms).unwrap();
    assert_eq!(t.out().len(), 1);
    t.m.abandon(first);
    t.tick(RETRY_EVERY);
    assert_eq!(t.out().len(), 1, "the third is still sent again");
    t.m.abandon(third);
    t.tick(RETRY_EVERY);
    assert!(t.out().is_empty());
}
