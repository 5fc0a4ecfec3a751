//! The accounts STAMPS feature end to end (docs/protocols/accounts.md,
//! "Features"): a connection that asks for it at HELLO gets the stored
//! time on live and offline 151 and on every 161 entry; one that does not
//! sees exactly the seed's bytes.

use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use chinwag_proto::accounts::{feature, Frame};
use chinwagd::{Config, Server};

mod common;

type Acc = common::Wire<Frame>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn open(addr: SocketAddr, features: Option<u32>) -> Acc {
    let mut a = Acc::new(TcpStream::connect(addr).unwrap());
    match features {
        None => {
            a.send_bytes(&Frame::Hello.to_bytes());
            assert_eq!(a.recv(), Frame::HelloAck);
        }
        Some(bits) => {
            a.send_bytes(&Frame::HelloWith { features: bits }.to_bytes());
            assert_eq!(
                a.recv(),
                Frame::HelloAckWith {
                    features: bits & feature::ALL
                }
            );
        }
    }
    a
}

fn register(addr: SocketAddr, email: &str, pseudo: &str) {
    let mut a = open(addr, None);
    a.send_bytes(
        &Frame::Register {
            email: email.into(),
            pseudo: pseudo.into(),
            password: "correct horse".into(),
        }
        .to_bytes(),
    );
    assert_eq!(a.recv(), Frame::Registered);
}

fn login(addr: SocketAddr, email: &str, features: Option<u32>) -> Acc {
    let mut a = open(addr, features);
    a.send_bytes(
        &Frame::Login {
            email: email.into(),
            password: "correct horse".into(),
        }
        .to_bytes(),
    );
    assert!(matches!(a.recv(), Frame::LoginOk { .. }));
    a
}

#[test]
fn stamps_come_only_to_connections_that_asked() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = Config::ephemeral();
    cfg.login_timeout_ms = common::LOGIN_TIMEOUT_MS;
    let srv = Server::start(cfg).unwrap();
    let addr = srv.accounts_addr();
    register(addr, "al@example.org", "al");
    register(addr, "bo@example.org", "bo");

    // Unknown bits are not granted; STAMPS is.
    let mut al = login(addr, "al@example.org", Some(feature::STAMPS | 0x8000_0000));
    let mut bo = login(addr, "bo@example.org", None);
    al.send_bytes(
        &Frame::FriendRequest {
            pseudo: "bo".into(),
        }
        .to_bytes(),
    );
    assert!(matches!(al.recv(), Frame::FriendRequestSent { .. }));
    assert!(matches!(bo.recv(), Frame::FriendRequested { .. }));
    bo.send_bytes(
        &Frame::AcceptFriend {
            pseudo: "al".into(),
        }
        .to_bytes(),
    );
    assert!(matches!(al.recv(), Frame::FriendAccepted { .. }));

    // Live: bo (plain) gets the seed's 151, al (stamps) a stamped one.
    let before = now();
    al.send_bytes(
        &Frame::SendMessage {
            pseudo: "bo".into(),
            text: "to bo".into(),
        }
        .to_bytes(),
    );
    assert_eq!(al.recv(), Frame::MessageStored);
    assert_eq!(
        bo.recv(),
        Frame::Message {
            pseudo: "al".into(),
            text: "to bo".into()
        }
    );
    bo.send_bytes(
        &Frame::SendMessage {
            pseudo: "al".into(),
            text: "to al".into(),
        }
        .to_bytes(),
    );
    assert_eq!(bo.recv(), Frame::MessageStored);
    expect_stamped(&mut al, "bo", "to al", before);

    // Offline: al leaves, bo writes, al comes back asking for stamps.
    drop(al);
    wait_offline(&srv, "al");
    bo.send_bytes(
        &Frame::SendMessage {
            pseudo: "al".into(),
            text: "while away".into(),
        }
        .to_bytes(),
    );
    assert_eq!(bo.recv(), Frame::MessageStored);
    let mut al = login(addr, "al@example.org", Some(feature::STAMPS));
    expect_stamped(&mut al, "bo", "while away", before);
    // History: stamped for al, plain for bo.
    al.send_bytes(
        &Frame::History {
            pseudo: "bo".into(),
            before: 0,
        }
        .to_bytes(),
    );
    let Frame::HistoryPage { entries, .. } = al.recv() else {
        panic!("a history page")
    };
    let texts: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["to bo", "to al", "while away"]);
    for e in &entries {
        let s = e.stamp.expect("every entry stamped");
        assert!(s >= before && s <= now(), "{e:?}");
    }
    bo.send_bytes(
        &Frame::History {
            pseudo: "al".into(),
            before: 0,
        }
        .to_bytes(),
    );
    match bo.recv() {
        Frame::HistoryPage { entries, .. } => {
            assert_eq!(entries.len(), 3);
            assert!(entries.iter().all(|e| e.stamp.is_none()));
        }
        other => panic!("{other:?}"),
    }
    // A plain client logging in gets offline messages in the seed's bytes.
    drop(bo);
    wait_offline(&srv, "bo");
    al.send_bytes(
        &Frame::SendMessage {
            pseudo: "bo".into(),
            text: "plain".into(),
        }
        .to_bytes(),
    );
    assert_eq!(al.recv(), Frame::MessageStored);
    let mut bo = login(addr, "bo@example.org", None);
    assert_eq!(
        bo.recv(),
        Frame::Message {
            pseudo: "al".into(),
            text: "plain".into()
        }
    );
}

/// The next frame must be a stamped 151 from `from` saying `text`, stored
/// between `since` and now.
fn expect_stamped(me: &mut Acc, from: &str, text: &str, since: u64) {
    match me.recv() {
        Frame::StampedMessage {
            pseudo,
            text: got,
            stamp,
        } => {
            assert_eq!((pseudo.as_str(), got.as_str()), (from, text));
            assert!(stamp >= since && stamp <= now(), "{stamp}");
        }
        other => panic!("{other:?}"),
    }
}

/// Wait (bounded) until the server has seen `who` go: a message to them
/// is stored for later from then on.
fn wait_offline(srv: &Server, who: &str) {
    let deadline = std::time::Instant::now() + common::WAIT;
    while srv.hub().online(who).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{who} never went offline"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
