//! Edges of the rooms codec that the round trips in `src/rooms.rs` do not
//! reach: every status of every answer, both room modes wherever a mode is
//! carried, and limits taken exactly at and just past their values.

use std::net::Ipv4Addr;

use chinwag_proto::rooms::{
    Access, Body, Creation, Message, Mode, Peer, Registration, MAX_CHAT, MAX_DATAGRAM,
    MAX_ROOM_NAME, MAX_USER_NAME, SERVER,
};
use chinwag_proto::DecodeError;

fn round_trip(body: Body) {
    let m = Message {
        user: SERVER,
        seq: 7,
        body,
    };
    assert_eq!(Message::decode(&m.to_bytes()), Ok(m.clone()), "{m:?}");
}

fn peers(n: usize, name_len: usize) -> Vec<Peer> {
    (0..n)
        .map(|i| Peer {
            ip: Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8),
            port: 40_000 + i as u16,
            name: format!("{:0>width$}", i, width = name_len),
        })
        .collect()
}

#[test]
fn every_status_and_mode_round_trips() {
    for status in [
        Registration::Accepted,
        Registration::InvalidName,
        Registration::NameTaken,
    ] {
        round_trip(Body::Registered { status, user: 3 });
    }
    for status in [
        Creation::Created,
        Creation::BadName,
        Creation::NameExists,
        Creation::MaxTooSmall,
    ] {
        round_trip(Body::CreateAnswer { status, room: 9 });
    }
    for status in [Access::Granted, Access::NoSuchRoom, Access::Full] {
        for (mode, peers) in [
            (Mode::Centralised, vec![]),
            (Mode::Decentralised, peers(3, 4)),
        ] {
            round_trip(Body::AccessAnswer {
                mode,
                status,
                peers: peers.clone(),
            });
            round_trip(Body::ChangeAnswer {
                mode,
                status,
                peers,
            });
        }
    }
    for mode in [Mode::Centralised, Mode::Decentralised] {
        round_trip(Body::Invitation {
            from: "alice".into(),
            mode,
            room: "club".into(),
        });
        round_trip(Body::CreateRoom {
            mode,
            name: "club".into(),
            max: 5,
        });
    }
    for yes in [true, false] {
        round_trip(Body::KeptAlive { ok: yes });
        round_trip(Body::InvitationAnswer { accept: yes });
        round_trip(Body::LeaveAnswer { ok: yes });
    }
}

#[test]
fn the_largest_datagram_is_a_full_access_answer_and_fits() {
    let full = Message {
        user: SERVER,
        seq: 1,
        body: Body::AccessAnswer {
            mode: Mode::Decentralised,
            status: Access::Granted,
            peers: peers(254, MAX_USER_NAME),
        },
    };
    let bytes = full.to_bytes();
    assert_eq!(bytes.len(), MAX_DATAGRAM);
    assert_eq!(Message::decode(&bytes), Ok(full));
    let mut over = bytes;
    over.push(0);
    assert!(matches!(
        Message::decode(&over),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn chat_and_name_limits_are_inclusive() {
    round_trip(Body::Text {
        chat: "c".repeat(MAX_CHAT),
    });
    let mut over = Message {
        user: 1,
        seq: 1,
        body: Body::Text {
            chat: "c".repeat(MAX_CHAT),
        },
    }
    .to_bytes();
    // Claim one byte more than the limit, and carry it.
    let n = (MAX_CHAT as u16 + 1).to_be_bytes();
    over[4..6].copy_from_slice(&n);
    over.push(b'c');
    assert!(matches!(
        Message::decode(&over),
        Err(DecodeError::TooLong { field: "CHAT", .. })
    ));

    round_trip(Body::AccessRoom {
        name: "r".repeat(MAX_ROOM_NAME),
    });
    round_trip(Body::Invite {
        user: "u".repeat(MAX_USER_NAME),
    });
    // INVITER's USER_NAME is bare (the seed's diagram): exactly the limit
    // is a name, past it too long; a '#' after it is a byte left over.
    let invite = |name: &[u8]| {
        let mut d = Message {
            user: 1,
            seq: 1,
            body: Body::Invite { user: "x".into() },
        }
        .to_bytes();
        d.truncate(4);
        d.extend_from_slice(name);
        Message::decode(&d)
    };
    assert_eq!(
        invite(&[b'u'; MAX_USER_NAME]).map(|m| m.body),
        Ok(Body::Invite {
            user: "u".repeat(MAX_USER_NAME)
        })
    );
    assert!(matches!(
        invite(&[b'u'; MAX_USER_NAME + 1]),
        Err(DecodeError::TooLong { .. })
    ));
    assert_eq!(
        invite(&[&[b'u'; MAX_USER_NAME][..], b"#"].concat()),
        Err(DecodeError::TrailingBytes(1))
    );
}
