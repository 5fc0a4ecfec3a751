//! Arbitrary sequences of accounts requests (logins, friend requests and
//! answers, messages, history, lists, calls, hang-ups, logouts, account
//! deletions) against the accounts service over a fresh in-memory store
//! and hub each run. Logins skip the password (feature `fuzzing`): the
//! rules after it are what is fuzzed. Nothing may panic or stall.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chinwagd::front::accounts::service::{Accounts, Member};
use chinwagd::hub::{Hub, HubConfig};
use chinwagd::metrics::Metrics;
use chinwagd::net::{FlushPool, Outbound};
use chinwagd::store::Store;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const USERS: usize = 4;
const PSEUDOS: [&str; 6] = ["ann", "ben", "cat", "dan", "nobody", "Ann"];

#[derive(Arbitrary, Debug)]
enum Op {
    Login { who: u8 },
    Logout { who: u8 },
    Befriend { who: u8, other: u8 },
    Answer { who: u8, other: u8, accept: bool },
    Send { who: u8, other: u8, text: String },
    History { who: u8, other: u8, before: u64 },
    List { who: u8, friends: bool },
    Call { who: u8, other: u8, port: u16 },
    AnswerCall { who: u8, other: u8, accept: bool },
    Hangup { who: u8, other: u8 },
    Delete { other: u8 },
}

fn pool() -> Arc<FlushPool> {
    static P: OnceLock<Arc<FlushPool>> = OnceLock::new();
    P.get_or_init(|| FlushPool::new(1).unwrap()).clone()
}

/// An outbound queue whose far end is kept (and never read: a small
/// queue limit drops it instead, as for any slow reader).
fn outbound() -> (Arc<Outbound>, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    let out = Outbound::new(
        Arc::new(server),
        &pool(),
        64 * 1024,
        Duration::from_millis(100),
        "fuzz".into(),
        Arc::new(Metrics::new()),
    );
    (out, client)
}

fuzz_target!(|ops: Vec<Op>| {
    let hub = Arc::new(Hub::new(HubConfig::default()));
    let (store, thread) = Store::open(Path::new(":memory:")).unwrap();
    store
        .call(|db| {
            for p in &PSEUDOS[..USERS] {
                db.create_account(&format!("{p}@x.org"), p, "not a hash")
                    .unwrap();
            }
        })
        .unwrap();
    let accounts = Accounts::new(hub.clone(), store.clone(), 100);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let outs: Vec<(Arc<Outbound>, TcpStream)> = (0..USERS).map(|_| outbound()).collect();
    let mut members: Vec<Option<Arc<Member>>> = vec![None; USERS];
    let user = |i: u8| i as usize % USERS;
    let pseudo = |i: u8| PSEUDOS[i as usize % PSEUDOS.len()].to_string();
    for op in ops.into_iter().take(128) {
        match op {
            Op::Login { who } => {
                let u = user(who);
                if members[u].is_none() {
                    members[u] =
                        accounts.login_unchecked(&format!("{}@x.org", PSEUDOS[u]), ip, &outs[u].0);
                }
            }
            Op::Logout { who } => {
                if let Some(m) = members[user(who)].take() {
                    accounts.logout(&m);
                }
            }
            Op::Befriend { who, other } => {
                if let Some(m) = &members[user(who)] {
                    accounts.friend_request(m, pseudo(other));
                }
            }
            Op::Answer { who, other, accept } => {
                if let Some(m) = &members[user(who)] {
                    accounts.answer_friend(m, pseudo(other), accept);
                }
            }
            Op::Send { who, other, text } => {
                if let Some(m) = &members[user(who)] {
                    accounts.send_message(m, pseudo(other), text);
                }
            }
            Op::History { who, other, before } => {
                if let Some(m) = &members[user(who)] {
                    accounts.history(m, pseudo(other), before);
                }
            }
            Op::List { who, friends } => {
                if let Some(m) = &members[user(who)] {
                    accounts.list(m, friends);
                }
            }
            Op::Call { who, other, port } => {
                if let Some(m) = &members[user(who)] {
                    accounts.call(m, pseudo(other), String::new(), port);
                }
            }
            Op::AnswerCall { who, other, accept } => {
                if let Some(m) = &members[user(who)] {
                    let a = accept.then(|| (String::new(), 1234));
                    accounts.answer_call(m, &pseudo(other), a);
                }
            }
            Op::Hangup { who, other } => {
                if let Some(m) = &members[user(who)] {
                    accounts.hangup(m, &pseudo(other));
                }
            }
            Op::Delete { other } => {
                let _ = accounts.delete_account(&pseudo(other));
            }
        }
    }
    for m in members.into_iter().flatten() {
        accounts.logout(&m);
    }
    // Every job queued above has run once this one answers.
    assert!(store.call(|_| ()).is_ok());
    assert_eq!(hub.online_count(), 0);
    store.stop();
    thread.join();
});
