//! The rooms client library against seed 003 and chinwag's types 23-27,
//! through the C ABI: texts over 1,200 bytes refused before sending, the
//! list of every user, FERMETURE read and acknowledged, ERREUR mapped to
//! result codes, the keep-alive right after login, a text never
//! acknowledged reported as unconfirmed, a server named by a v4-mapped
//! address, and no success for a text nobody received. Against an
//! in-process chinwagd and scripted servers, all on 127.0.0.1.

mod ffi_common;
mod rooms_ffi;
/// How slow the machine runs now.
#[path = "common/tools.rs"]
mod tools;

use std::time::{Duration, Instant};

use chinwag::ffi::codes::{cw_event_type as K, cw_result as R, cw_room_mode};
use chinwag::ffi::*;
use chinwag_proto::rooms::{kind, Access, Body, Mode, Peer, Reason, SERVER};
use chinwagd::{Config, Server};
use ffi_common::{cs, last_error, text, C};
use rooms_ffi::{server, Fake, MS};

const QUIET: Duration = Duration::from_millis(300);

/// The next datagram of `kind` the fake receives, skipping others
/// (keep-alives, retransmissions).
fn recv_kind(fake: &Fake, k: u8) -> chinwag_proto::rooms::Message {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some((m, _)) = fake.recv(Duration::from_millis(100)) {
            if m.body.kind() == k {
                return m;
            }
        }
    }
    panic!("no datagram of type {k}");
}

#[test]
fn a_text_over_1200_bytes_is_refused_before_anything_is_sent() {
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    let to = fake.login(&c);
    assert_eq!(c.send(&"x".repeat(1201)), R::CW_TOO_LONG);
    assert!(last_error().contains("1200"), "{}", last_error());
    assert!(fake.recv(QUIET).is_none(), "nothing went out");
    std::thread::scope(|s| {
        let t = s.spawn(|| c.send(&"y".repeat(1200)));
        let m = recv_kind(&fake, kind::TEXTE);
        assert!(matches!(&m.body, Body::Text { chat } if chat.len() == 1200));
        fake.send(to, SERVER, m.seq, Body::TextAck);
        assert_eq!(t.join().unwrap(), R::CW_OK);
    });
}

#[test]
fn every_connected_user_is_listed_whatever_their_room() {
    let srv = server();
    let addr = srv.rooms_addr();
    let [b, a, c] = C::all(addr, ["bo", "al", "cy"]);
    a.create("den", cw_room_mode::CW_ROOM_CENTRALISED, 5)
        .unwrap();
    // A chatos user is online but not a rooms user.
    let chat = C::connect(srv.chatos_addr(), chinwag::Dialect::CW_DIALECT_CHATOS);
    assert_eq!(chat.login("ch"), R::CW_OK);
    assert_eq!(c.users(), ["al", "bo", "cy"]);
    assert_eq!(a.users(), ["al", "bo", "cy"]);
    unsafe { cw_client_close(b.0) };
    let t0 = Instant::now();
    while c.users().len() != 2 {
        assert!(t0.elapsed() < Duration::from_secs(3), "bo never left");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.users(), ["al", "cy"]);
    let fresh = C::rooms(addr);
    let mut l = std::ptr::null_mut();
    assert_eq!(
        unsafe { cw_client_room_users(fresh.0, &mut l) },
        R::CW_NOT_LOGGED_IN
    );
    assert_eq!(
        unsafe { cw_client_room_users(chat.0, &mut l) },
        R::CW_UNSUPPORTED
    );
    assert_eq!(
        unsafe { cw_client_room_users(c.0, std::ptr::null_mut()) },
        R::CW_NULL_ARGUMENT
    );
}

#[test]
fn a_closed_room_moves_its_last_member_to_the_public_room_with_an_event() {
    let srv = server();
    let addr = srv.rooms_addr();
    let [a, b] = C::all(addr, ["al", "bo"]);
    a.create("den", cw_room_mode::CW_ROOM_CENTRALISED, 5)
        .unwrap();
    assert_eq!(b.join("den"), R::CW_OK);
    assert_eq!(b.leave(), R::CW_OK);
    let e = a.event(MS).unwrap();
    assert_eq!(
        (e.kind, e.text.as_deref(), e.peer.as_deref()),
        (K::CW_EVENT_ROOM_CLOSED, Some("den"), None)
    );
    assert_eq!(a.current(), (String::new(), 0));
    assert_eq!(a.leave(), R::CW_NOT_IN_ROOM);
    // Both in the public room again: texts flow.
    assert_eq!(a.send("back"), R::CW_OK);
    assert_eq!(b.expect_message().1, "back");
    a.expect_quiet(300);

    // The acknowledgement (24) carries the notice's NUM_SEQ, for each copy.
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    let to = fake.login(&c);
    for _ in 0..2 {
        fake.send(to, SERVER, 77, Body::RoomClosed { room: "x".into() });
        let m = recv_kind(&fake, kind::REPONSE_FERMETURE_MESSAGERIE);
        assert_eq!((m.user, m.seq), (7, 77));
    }
    let e = c.event(MS).unwrap();
    assert_eq!(
        (e.kind, e.text.as_deref()),
        (K::CW_EVENT_ROOM_CLOSED, Some("x"))
    );
    c.expect_quiet(300);
}

/// `c`'s request of type `k` answered by the fake with an ERREUR of `reason`.
fn refused_with(
    fake: &Fake,
    to: std::net::SocketAddr,
    k: u8,
    reason: Reason,
    call: impl FnOnce() -> R + Send,
) -> (R, String) {
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let r = call();
            (r, last_error())
        });
        let m = recv_kind(fake, k);
        fake.send(to, SERVER, m.seq, Body::Error { refused: k, reason });
        t.join().unwrap()
    })
}

#[test]
fn erreur_answers_map_to_result_codes() {
    // Real server: alone in the public room, a text reaches nobody, and
    // the answer says so at once (not after the retries).
    let srv = server();
    let a = C::named(srv.rooms_addr(), "al");
    // (A give-up after the retries would be CW_UNCONFIRMED.)
    assert_eq!(a.send("anyone?"), R::CW_NO_RECIPIENT);
    assert!(last_error().contains("nobody"), "{}", last_error());

    // Real server: a registration over the address's rate.
    let mut cfg = Config::ephemeral();
    cfg.rooms_registrations_per_minute = 1;
    let strict = Server::start(cfg).unwrap();
    let _first = C::named(strict.rooms_addr(), "one");
    let second = C::rooms(strict.rooms_addr());
    assert_eq!(second.login("two"), R::CW_LIMITED);
    assert!(last_error().contains("try again later"), "{}", last_error());

    // Scripted: each reason of type 27.
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    let to = fake.login(&c);
    let cases = [
        (Reason::Limit, R::CW_LIMITED),
        (Reason::NoRecipient, R::CW_NO_RECIPIENT),
        (Reason::TooLong, R::CW_TOO_LONG),
        (Reason::Malformed, R::CW_REFUSED),
        (Reason::UnknownType, R::CW_REFUSED),
        (Reason::NotAccepted, R::CW_REFUSED),
    ];
    for (reason, want) in cases {
        let (r, why) = refused_with(&fake, to, kind::TEXTE, reason, || c.send("x"));
        assert_eq!(r, want, "{reason:?}: {why}");
    }
    let (r, _) = refused_with(
        &fake,
        to,
        kind::DEMANDER_LISTE_MESSAGERIE,
        Reason::Limit,
        || {
            let (c, mut l): (&C, _) = (&c, std::ptr::null_mut());
            unsafe { cw_client_room_list(c.0, &mut l) }
        },
    );
    assert_eq!(r, R::CW_LIMITED);
    let name = cs("den");
    let (r, _) = refused_with(
        &fake,
        to,
        kind::CREER_MESSAGERIE_PRIVEE,
        Reason::Malformed,
        || {
            let (c, mut id): (&C, _) = (&c, 0);
            unsafe { cw_client_room_create(c.0, name.as_ptr(), 0, 4, &mut id) }
        },
    );
    assert_eq!(r, R::CW_REFUSED);
    assert_eq!(
        text(cw_result_str(R::CW_UNCONFIRMED as i32)).unwrap(),
        "sent but unconfirmed: it may have arrived"
    );
}

#[test]
fn a_keep_alive_follows_the_login_at_once() {
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    // The default interval is 45 s; the first keep-alive must not wait.
    let to = fake.register(&c);
    let t0 = Instant::now();
    let (m, from) = fake.recv(Duration::from_secs(10)).expect("a keep-alive");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "not the 45 s interval"
    );
    assert_eq!(from, to);
    assert_eq!((m.user, m.body), (7, Body::Connexion { name: None }));
    fake.send(to, SERVER, m.seq, Body::KeptAlive { ok: true });
    assert!(fake.recv(QUIET).is_none(), "answered: not sent again");
}

#[test]
fn an_unacknowledged_text_is_unconfirmed_not_a_timeout() {
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    fake.login(&c);
    let t0 = Instant::now();
    assert_eq!(c.send("hello?"), R::CW_UNCONFIRMED);
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(
        last_error().contains("may have arrived"),
        "{}",
        last_error()
    );
    let mut copies = 0;
    while let Some((m, _)) = fake.recv(QUIET) {
        copies += (m.body.kind() == kind::TEXTE) as u32;
    }
    assert_eq!(copies, CW_ROOMS_TRIES);
    // Anything else unanswered is still a plain timeout.
    assert_eq!(c.leave(), R::CW_TIMEOUT);
    assert!(
        last_error().contains("may have been carried out"),
        "{}",
        last_error()
    );
}

#[test]
fn a_server_named_by_a_v4_mapped_address_is_reached_over_ipv4() {
    let srv = server();
    let port = srv.rooms_addr().port();
    let mapped = C::connect_to("::ffff:127.0.0.1", port, chinwag::Dialect::CW_DIALECT_ROOMS);
    assert_eq!(mapped.login("six"), R::CW_OK, "{}", last_error());
    let plain = C::named(srv.rooms_addr(), "four");
    assert_eq!(mapped.send("over v4"), R::CW_OK, "{}", last_error());
    assert_eq!(plain.expect_message().1, "over v4");
    assert_eq!(plain.send("and back"), R::CW_OK);
    assert_eq!(mapped.expect_message().1, "and back");
    // A true IPv6 address is refused at once: rooms is IPv4 only.
    let mut h = std::ptr::null_mut();
    let six = cs("::1");
    let r = unsafe {
        cw_client_connect(
            six.as_ptr(),
            port,
            chinwag::Dialect::CW_DIALECT_ROOMS as i32,
            &mut h,
        )
    };
    assert_eq!(r, R::CW_CONNECT_FAILED);
}

#[test]
fn a_decentralised_text_nobody_received_is_never_a_success() {
    let srv = server();
    let addr = srv.rooms_addr();
    let [a, b] = C::all(addr, ["al", "bo"]);
    a.create("den", cw_room_mode::CW_ROOM_DECENTRALISED, 5)
        .unwrap();
    assert_eq!(a.send("alone"), R::CW_NO_RECIPIENT);
    assert!(last_error().contains("not sent"), "{}", last_error());
    // bo joins; al was told nothing (the protocol announces no newcomer)
    // but asks the server again before giving up, and finds bo.
    assert_eq!(b.join("den"), R::CW_OK);
    assert!(a.peers().is_empty());
    assert_eq!(a.send("found you"), R::CW_OK, "{}", last_error());
    // bo knows al's address, hence its name, from its access answer.
    assert_eq!(b.expect_message(), ("al".into(), "found you".into()));
    assert_eq!(a.peers(), ["bo"]);
}

#[test]
fn an_accepted_invitation_that_moves_nobody_says_60_s() {
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    let to = fake.login(&c);
    let inv = Body::Invitation {
        from: "al".into(),
        mode: Mode::Centralised,
        room: "den".into(),
    };
    fake.send(to, SERVER, 60, inv);
    assert_eq!(c.event(MS).unwrap().kind, K::CW_EVENT_ROOM_INVITATION);
    let (r, why) = std::thread::scope(|s| {
        let t = s.spawn(|| (c.answer("den", true), last_error()));
        // The answer, then member lists that never name this client.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() && Instant::now() < deadline {
            if let Some((m, _)) = fake.recv(Duration::from_millis(50)) {
                if m.body.kind() == kind::DEMANDER_LISTE_CLIENT {
                    let names = vec!["al".to_string()];
                    fake.send(to, SERVER, m.seq, Body::ClientList { names });
                }
            }
        }
        t.join().unwrap()
    });
    assert_eq!(r, R::CW_ROOM_FULL);
    assert!(why.contains("60 s") && !why.contains("0.5 s"), "{why}");
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/chinwag.h")).unwrap();
    assert!(!header.contains("0.5 s"), "the header still says 0.5 s");
    assert!(header.contains("within 60 s"));
}

/// While `busy` runs: every DEMANDE_ACCES `fake` gets is answered with
/// `answer` (none: left unanswered), and every TEXTE `peer` gets is
/// acknowledged; the texts `peer` got.
fn serve_access<T: Send>(
    fake: &Fake,
    to: std::net::SocketAddr,
    peer: &Fake,
    answer: impl Fn() -> Option<Body>,
    busy: impl FnOnce() -> T + Send,
) -> (T, Vec<String>) {
    let mut texts = Vec::new();
    let got = std::thread::scope(|s| {
        let t = s.spawn(busy);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() && Instant::now() < deadline {
            if let Some((m, _)) = fake.recv(Duration::from_millis(20)) {
                if let (kind::DEMANDE_ACCES_MESSAGERIE_PRIVEE, Some(b)) = (m.body.kind(), answer())
                {
                    fake.send(to, SERVER, m.seq, b);
                }
            }
            if let Some((m, from)) = peer.recv(Duration::from_millis(20)) {
                if let Body::Text { chat } = m.body {
                    assert_eq!((from, m.user), (to, 7));
                    texts.push(chat);
                    peer.send(from, 9, m.seq, Body::TextAck);
                }
            }
        }
        t.join().unwrap()
    });
    (got, texts)
}

#[test]
fn decentralised_texts_with_a_server_that_lists_no_members_again() {
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    let to = fake.login(&c);
    let peer = Fake::new();

    // A peer's text while this client is in no decentralised room is
    // refused as nobody's (ERREUR [TEXTE] 5), not acknowledged as read.
    peer.send(
        to,
        9,
        77,
        Body::Text {
            chat: "psst".into(),
        },
    );
    let (m, _) = peer.recv(Duration::from_secs(5)).expect("an answer");
    assert_eq!(
        (m.user, m.seq, m.body),
        (
            7,
            77,
            Body::Error {
                refused: kind::TEXTE,
                reason: Reason::NoRecipient
            }
        )
    );
    c.expect_quiet(200);

    let granted = |peers: Vec<Peer>| Body::AccessAnswer {
        mode: Mode::Decentralised,
        status: Access::Granted,
        peers,
    };
    let pe = || Peer {
        ip: std::net::Ipv4Addr::LOCALHOST,
        port: peer.addr().port(),
        name: "pe".into(),
    };
    let (r, _) = serve_access(
        &fake,
        to,
        &peer,
        || Some(granted(vec![pe()])),
        || c.join("den"),
    );
    assert_eq!(r, R::CW_OK, "{}", last_error());
    assert_eq!(c.peers(), ["pe"]);

    // Each text asks the server for the members first. A server that
    // refuses a second access request (as one that follows the seed to
    // the letter may): the known peers stand (never answered: see
    // a_server_that_leaves_the_member_question_unanswered_is_not_asked_again_at_once).
    let unknown = || {
        Some(Body::Error {
            refused: kind::DEMANDE_ACCES_MESSAGERIE_PRIVEE,
            reason: Reason::UnknownType,
        })
    };
    let t0 = Instant::now();
    let ((r, why), texts) = serve_access(&fake, to, &peer, unknown, || {
        (c.send("refused"), last_error())
    });
    assert_eq!((r, texts), (R::CW_OK, vec!["refused".to_string()]), "{why}");
    // A second on an idle machine, as much of this one's time now.
    let took = t0.elapsed();
    let slow = tools::stretch();
    assert!(
        took < Duration::from_secs(1).mul_f64(slow),
        "{took:?} ({slow:.1}x slower than idle)"
    );
    assert_eq!(c.peers(), ["pe"]);

    // The server's list no longer names the peer: nothing is sent to it.
    let ((r, why), texts) = serve_access(
        &fake,
        to,
        &peer,
        || Some(granted(vec![])),
        || (c.send("gone"), last_error()),
    );
    assert_eq!(r, R::CW_NO_RECIPIENT, "{why}");
    assert!(texts.is_empty(), "{texts:?}");
    assert!(c.peers().is_empty());

    // The room is gone: this client is in the public room, nothing sent.
    let no_room = || {
        Some(Body::AccessAnswer {
            mode: Mode::Decentralised,
            status: Access::NoSuchRoom,
            peers: vec![],
        })
    };
    let ((r, why), texts) = serve_access(&fake, to, &peer, no_room, || {
        (c.send("where?"), last_error())
    });
    assert_eq!(r, R::CW_NO_SUCH_ROOM, "{why}");
    assert!(why.contains("not sent"), "{why}");
    assert!(texts.is_empty());
    assert_eq!(c.current(), (String::new(), 0));
}

#[test]
fn a_server_that_leaves_the_member_question_unanswered_is_not_asked_again_at_once() {
    let fake = Fake::new();
    let c = C::rooms(fake.addr());
    let to = fake.login(&c);
    let peer = Fake::new();
    let pe = Peer {
        ip: std::net::Ipv4Addr::LOCALHOST,
        port: peer.addr().port(),
        name: "pe".into(),
    };
    let granted = Body::AccessAnswer {
        mode: Mode::Decentralised,
        status: Access::Granted,
        peers: vec![pe],
    };
    let (r, _) = serve_access(&fake, to, &peer, || Some(granted.clone()), || c.join("den"));
    assert_eq!(r, R::CW_OK, "{}", last_error());
    // The question before the first text goes unanswered: the text waits
    // for it (every try), then goes to the known peer.
    let asked = std::cell::Cell::new(0);
    let silent = || {
        asked.set(asked.get() + 1);
        None
    };
    let ((r, why), texts) = serve_access(&fake, to, &peer, silent, || {
        (c.send("unanswered"), last_error())
    });
    assert_eq!(
        (r, texts),
        (R::CW_OK, vec!["unanswered".to_string()]),
        "{why}"
    );
    assert!(asked.get() > 0, "the library did not ask for the members");
    // The next texts do not ask again (each would wait as long): straight
    // to the known peer.
    asked.set(0);
    for text in ["next", "and next"] {
        let ((r, why), texts) =
            serve_access(&fake, to, &peer, silent, || (c.send(text), last_error()));
        assert_eq!((r, texts), (R::CW_OK, vec![text.to_string()]), "{why}");
    }
    assert_eq!(asked.get(), 0, "asked the silent server again");
    assert_eq!(c.peers(), ["pe"]);
}
