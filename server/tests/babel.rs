//! End-to-end tests of the babel dialect against an in-process chinwagd on
//! 127.0.0.1, with a raw-socket client checking little-endian bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::babel::Frame;
use chinwag_proto::chatos;
use chinwagd::{Config, Server};

fn server() -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    Server::start(Config::ephemeral()).expect("server starts")
}

mod common;
use common::WAIT;

type Bab = common::Wire<Frame>;

impl Bab {
    /// Connect and check the HelloConnect bytes the original server sends.
    fn connect(addr: SocketAddr) -> Bab {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut hello = [0u8; 10];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(hello, [2, 0, 0, 0, 0, 0, 0, 0, 1, 0], "HelloConnect");
        Bab::new(s)
    }

    fn login(addr: SocketAddr, name: &str) -> (Bab, Vec<String>) {
        let mut b = Bab::connect(addr);
        b.send(&Frame::Login { name: name.into() });
        assert_eq!(b.recv(), Frame::LoginSuccess, "login {name}");
        let Frame::AddContact { contacts } = b.recv() else {
            panic!("AddContact after LoginSuccess")
        };
        (b, contacts)
    }

    fn send(&mut self, f: &Frame) {
        self.s.write_all(&f.to_bytes()).unwrap();
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn login_and_contact_lists() {
    let srv = server();
    let addr = srv.babel_addr();
    let (mut a, first) = Bab::login(addr, "alice");
    assert!(first.is_empty());
    let (mut b, list) = Bab::login(addr, "bob");
    assert_eq!(list, names(&["alice"]));
    assert_eq!(
        a.recv(),
        Frame::AddContact {
            contacts: names(&["bob"])
        }
    );
    let (_c, mut list) = Bab::login(addr, "carol");
    list.sort();
    assert_eq!(list, names(&["alice", "bob"]));
    assert_eq!(
        a.recv(),
        Frame::AddContact {
            contacts: names(&["carol"])
        }
    );
    assert_eq!(
        b.recv(),
        Frame::AddContact {
            contacts: names(&["carol"])
        }
    );
    // A duplicate name: the original server's words, and the client may retry.
    let mut d = Bab::connect(addr);
    d.send(&Frame::Login {
        name: "alice".into(),
    });
    assert_eq!(
        d.recv(),
        Frame::LoginFailed {
            reason: "username already used".into()
        }
    );
    d.send(&Frame::Login { name: "a b".into() });
    assert_eq!(
        d.recv(),
        Frame::LoginFailed {
            reason: "invalid username".into()
        }
    );
    d.send(&Frame::Login {
        name: "dave".into(),
    });
    assert_eq!(d.recv(), Frame::LoginSuccess);
    assert!(matches!(d.recv(), Frame::AddContact { .. }));
    d.send(&Frame::Login {
        name: "dave2".into(),
    });
    assert_eq!(
        d.recv(),
        Frame::LoginFailed {
            reason: "already logged in".into()
        }
    );
    // Answered, not obeyed: dave is still dave, and nobody is dave2.
    assert!(srv.hub().online("dave2").is_none());
    assert!(srv.hub().online("dave").is_some());
    // Leaving: the others hear DelContact.
    drop(d);
    for x in [&mut a, &mut b] {
        assert_eq!(
            x.recv(),
            Frame::AddContact {
                contacts: names(&["dave"])
            }
        );
        assert_eq!(
            x.recv(),
            Frame::DelContact {
                contacts: names(&["dave"])
            }
        );
    }
}

#[test]
fn names_are_shared_with_other_dialects_but_contacts_are_babel_only() {
    let srv = server();
    // A chatos user holds "zoe".
    let mut z = TcpStream::connect(srv.chatos_addr()).unwrap();
    z.write_all(
        &chatos::Command::Login {
            login: "zoe".into(),
        }
        .to_bytes(),
    )
    .unwrap();
    let mut one = [0u8; 1];
    z.read_exact(&mut one).unwrap();
    assert_eq!(one, [1]);
    let mut b = Bab::connect(srv.babel_addr());
    b.send(&Frame::Login { name: "zoe".into() });
    assert_eq!(
        b.recv(),
        Frame::LoginFailed {
            reason: "username already used".into()
        }
    );
    // And zoe is not a babel contact.
    let (_a, list) = Bab::login(srv.babel_addr(), "alice");
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn call_request_is_forwarded_with_the_host_filled_in() {
    let srv = server();
    let addr = srv.babel_addr();
    let (mut a, _) = Bab::login(addr, "alice");
    let (mut b, _) = Bab::login(addr, "bob");
    assert!(matches!(a.recv(), Frame::AddContact { .. }));
    a.send(&Frame::CallRequest {
        contact: "bob".into(),
        host: "".into(),
        port: 4000,
    });
    assert_eq!(
        b.recv(),
        Frame::CallRequest {
            contact: "alice".into(),
            host: "127.0.0.1".into(),
            port: 4000
        }
    );
    a.send(&Frame::CallRequest {
        contact: "bob".into(),
        host: "10.0.0.7".into(),
        port: 4001,
    });
    assert_eq!(
        b.recv(),
        Frame::CallRequest {
            contact: "alice".into(),
            host: "10.0.0.7".into(),
            port: 4001
        }
    );
    // Refused: the caller hears who refused.
    b.send(&Frame::CallRefused {
        contact: "alice".into(),
    });
    assert_eq!(
        a.recv(),
        Frame::CallRefused {
            contact: "bob".into()
        }
    );
    // A refusal for a call that is not ringing any more is dropped.
    b.send(&Frame::CallRefused {
        contact: "alice".into(),
    });
    a.expect_silence();
    // Calling someone not online, or oneself: ErrorResponse.
    a.send(&Frame::CallRequest {
        contact: "nobody".into(),
        host: "".into(),
        port: 1,
    });
    assert_eq!(
        a.recv(),
        Frame::ErrorResponse {
            what: "nobody is not connected".into()
        }
    );
    a.send(&Frame::CallRequest {
        contact: "alice".into(),
        host: "".into(),
        port: 1,
    });
    assert!(matches!(a.recv(), Frame::ErrorResponse { .. }));
}

#[test]
fn bad_input_closes_only_the_offender_and_others_hear_del_contact() {
    let srv = server();
    let addr = srv.babel_addr();
    let (mut a, _) = Bab::login(addr, "alice");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown opcode", vec![2, 0, 0, 0, 0, 0, 0, 0, 99, 0]),
        ("huge length", vec![0xff; 8]),
        ("length below 2", vec![1, 0, 0, 0, 0, 0, 0, 0, 2]),
        (
            "lying string length",
            [vec![10, 0, 0, 0, 0, 0, 0, 0, 9, 0], vec![0xff; 8]].concat(),
        ),
        ("peer-only opcode", Frame::ConnectionEstablished.to_bytes()),
        ("server-only opcode", Frame::LoginSuccess.to_bytes()),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let name = format!("m{i}");
        let (mut m, _) = Bab::login(addr, &name);
        assert_eq!(
            a.recv(),
            Frame::AddContact {
                contacts: vec![name.clone()]
            },
            "{what}"
        );
        m.s.write_all(&bytes).unwrap();
        m.expect_closed();
        assert_eq!(
            a.recv(),
            Frame::DelContact {
                contacts: vec![name]
            },
            "{what}"
        );
    }
    // Before login, anything but Login closes the connection.
    let mut early = Bab::connect(addr);
    early.send(&Frame::CallRequest {
        contact: "alice".into(),
        host: "".into(),
        port: 1,
    });
    early.expect_closed();
    a.expect_silence();
    // The survivor still works.
    let (_b, list) = Bab::login(addr, "bob");
    assert_eq!(list, names(&["alice"]));
}

#[test]
fn silent_connections_are_closed_after_the_login_deadline() {
    let mut cfg = Config::ephemeral();
    cfg.login_timeout_ms = 300;
    let srv = Server::start(cfg).unwrap();
    let mut b = Bab::connect(srv.babel_addr());
    let start = Instant::now();
    b.expect_closed();
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// While other babel users keep coming and going, 200 clients log in: each
/// gets LoginSuccess and then its contact list before any AddContact or
/// DelContact caused by someone else.
#[test]
fn no_presence_change_overtakes_the_login_answer() {
    let srv = server();
    let addr = srv.babel_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..2)
        .map(|t| {
            let (stop, cycles) = (stop.clone(), cycles.clone());
            thread::spawn(move || {
                // A fresh name each time: the last one may still be online.
                for k in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let (b, _) = Bab::login(addr, &format!("churn{t}.{k}"));
                    drop(b);
                    cycles.fetch_add(1, Ordering::Release);
                }
            })
        })
        .collect();
    common::wait_started(&cycles, "the churn");
    common::logins_under_load(200, move |i| {
        let mut c = Bab::connect(addr);
        c.send(&Frame::Login {
            name: format!("c{i}"),
        });
        assert_eq!(c.recv(), Frame::LoginSuccess, "client {i}'s first frame");
        let list = c.recv();
        assert!(
            matches!(&list, Frame::AddContact { .. }),
            "client {i}'s second frame: {list:?}"
        );
        c.try_recv(Duration::from_millis(500)).is_some()
    });
    stop.store(true, Ordering::Release);
    for c in churners {
        c.join().unwrap();
    }
}
