//! Shared by the rooms C-ABI tests: the rooms calls on a `C` handle as a
//! C program makes them, events read through the getters, and `Fake`, a
//! scripted rooms server on 127.0.0.1.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::ptr;
use std::time::{Duration, Instant};

use chinwag::ffi::codes::{cw_dialect, cw_event_type as K, cw_result as R, cw_room_mode};
use chinwag::ffi::*;
use chinwag_proto::rooms::{kind, Body, Message, Registration, SERVER};
use chinwagd::{Config, Server};

use crate::ffi_common::{cs, last_error, text, C};

pub const MS: i32 = 5_000;

pub fn server() -> Server {
    Server::start(Config::ephemeral()).expect("server starts")
}

#[derive(Debug)]
pub struct Ev {
    pub kind: K,
    pub peer: Option<String>,
    pub text: Option<String>,
    pub mode: i32,
}

impl C {
    pub fn connect(addr: SocketAddr, dialect: cw_dialect) -> C {
        C::connect_to(&addr.ip().to_string(), addr.port(), dialect)
    }

    pub fn rooms(addr: SocketAddr) -> C {
        C::connect(addr, cw_dialect::CW_DIALECT_ROOMS)
    }

    pub fn login(&self, name: &str) -> R {
        let n = cs(name);
        unsafe { cw_client_login(self.0, n.as_ptr(), MS) }
    }

    pub fn named(addr: SocketAddr, name: &str) -> C {
        let c = C::rooms(addr);
        assert_eq!(c.login(name), R::CW_OK, "{name}: {}", last_error());
        c
    }

    /// Clients logged in at `addr` under `names`, in that order (the
    /// server numbers them so).
    pub fn all<const N: usize>(addr: SocketAddr, names: [&str; N]) -> [C; N] {
        names.map(|n| C::named(addr, n))
    }

    pub fn id(&self) -> u8 {
        let mut id = 0;
        assert_eq!(unsafe { cw_client_room_user_id(self.0, &mut id) }, R::CW_OK);
        id
    }

    pub fn send(&self, t: &str) -> R {
        let t = cs(t);
        unsafe { cw_client_send_message(self.0, t.as_ptr()) }
    }

    pub fn create(&self, name: &str, mode: cw_room_mode, max: u8) -> Result<u8, R> {
        let n = cs(name);
        let mut id = 0;
        match unsafe { cw_client_room_create(self.0, n.as_ptr(), mode as i32, max, &mut id) } {
            R::CW_OK => Ok(id),
            r => Err(r),
        }
    }

    pub fn join(&self, name: &str) -> R {
        let n = cs(name);
        unsafe { cw_client_room_join(self.0, n.as_ptr()) }
    }

    pub fn change(&self, name: &str) -> R {
        let n = cs(name);
        unsafe { cw_client_room_change(self.0, n.as_ptr()) }
    }

    pub fn leave(&self) -> R {
        unsafe { cw_client_room_leave(self.0) }
    }

    pub fn strings(l: *mut cw_strings) -> Vec<String> {
        let n = unsafe { cw_strings_count(l) };
        let v = (0..n)
            .map(|i| text(unsafe { cw_strings_get(l, i) }).unwrap())
            .collect();
        unsafe { cw_strings_free(l) };
        v
    }

    pub fn members(&self, room: &str) -> HashSet<String> {
        let n = cs(room);
        let mut l = ptr::null_mut();
        let r = unsafe { cw_client_room_members(self.0, n.as_ptr(), &mut l) };
        assert_eq!(r, R::CW_OK, "{}", last_error());
        C::strings(l).into_iter().collect()
    }

    pub fn users(&self) -> Vec<String> {
        let mut l = ptr::null_mut();
        let r = unsafe { cw_client_room_users(self.0, &mut l) };
        assert_eq!(r, R::CW_OK, "{}", last_error());
        C::strings(l)
    }

    pub fn peers(&self) -> Vec<String> {
        let mut l = ptr::null_mut();
        assert_eq!(unsafe { cw_client_room_peers(self.0, &mut l) }, R::CW_OK);
        C::strings(l)
    }

    pub fn current(&self) -> (String, i32) {
        let mut n = ptr::null_mut();
        let mut m = -1;
        assert_eq!(
            unsafe { cw_client_room_current(self.0, &mut n, &mut m) },
            R::CW_OK
        );
        let name = text(n).unwrap();
        unsafe { cw_string_free(n) };
        (name, m)
    }

    pub fn list(&self) -> Vec<(String, i32, u32)> {
        let mut l = ptr::null_mut();
        assert_eq!(unsafe { cw_client_room_list(self.0, &mut l) }, R::CW_OK);
        let n = unsafe { cw_rooms_count(l) };
        let v = (0..n)
            .map(|i| unsafe {
                (
                    text(cw_rooms_name(l, i)).unwrap(),
                    cw_rooms_mode(l, i),
                    cw_rooms_clients(l, i),
                )
            })
            .collect();
        assert!(unsafe { cw_rooms_name(l, n) }.is_null());
        assert_eq!(unsafe { cw_rooms_mode(l, n) }, -1);
        unsafe { cw_rooms_free(l) };
        v
    }

    pub fn invite(&self, user: &str) -> R {
        let u = cs(user);
        unsafe { cw_client_room_invite(self.0, u.as_ptr()) }
    }

    pub fn answer(&self, room: &str, accept: bool) -> R {
        let r = cs(room);
        unsafe { cw_client_room_answer_invitation(self.0, r.as_ptr(), accept as i32) }
    }

    pub fn event(&self, ms: i32) -> Result<Ev, R> {
        let mut ev = ptr::null_mut();
        let r = unsafe { cw_client_next_event(self.0, ms, &mut ev) };
        if r != R::CW_OK {
            return Err(r);
        }
        let e = unsafe {
            Ev {
                kind: cw_event_kind(ev),
                peer: text(cw_event_peer(ev)),
                text: text(cw_event_text(ev)),
                mode: cw_event_room_mode(ev),
            }
        };
        unsafe { cw_event_free(ev) };
        Ok(e)
    }

    pub fn expect_message(&self) -> (String, String) {
        let e = self.event(MS).expect("an event");
        assert_eq!(e.kind, K::CW_EVENT_MESSAGE, "{e:?}");
        (e.peer.unwrap(), e.text.unwrap())
    }

    pub fn expect_quiet(&self, ms: i32) {
        match self.event(ms) {
            Err(R::CW_TIMEOUT) => {}
            other => panic!("expected no event, got {other:?}"),
        }
    }
}

/// A scripted server on 127.0.0.1: answers the first CONNEXION with id 7
/// and the keep-alive that follows at once, and returns the client's
/// address.
pub struct Fake {
    pub s: UdpSocket,
}

impl Fake {
    pub fn new() -> Fake {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Fake { s }
    }

    pub fn addr(&self) -> SocketAddr {
        self.s.local_addr().unwrap()
    }

    pub fn recv(&self, within: Duration) -> Option<(Message, SocketAddr)> {
        let t0 = Instant::now();
        let mut buf = [0u8; 2048];
        while t0.elapsed() < within {
            if let Ok((n, from)) = self.s.recv_from(&mut buf) {
                return Some((
                    Message::decode(&buf[..n]).expect("client bytes decode"),
                    from,
                ));
            }
        }
        None
    }

    pub fn send(&self, to: SocketAddr, user: u8, seq: u16, body: Body) {
        self.s
            .send_to(&Message { user, seq, body }.to_bytes(), to)
            .unwrap();
    }

    /// Log `c` in through this fake (the registration, then the keep-alive
    /// the library sends at once); the client's address.
    pub fn login(&self, c: &C) -> SocketAddr {
        let from = self.register(c);
        let (m, _) = self
            .recv(Duration::from_secs(5))
            .expect("a keep-alive right after the login");
        assert_eq!((m.user, m.body), (7, Body::Connexion { name: None }));
        self.send(from, SERVER, m.seq, Body::KeptAlive { ok: true });
        from
    }

    /// Answer the first CONNEXION that comes with id 7; the client's address.
    pub fn accept_registration(&self) -> SocketAddr {
        let (m, from) = self.recv(Duration::from_secs(5)).expect("CONNEXION");
        assert_eq!(m.user, 0);
        assert!(matches!(m.body, Body::Connexion { name: Some(_) }));
        self.send(
            from,
            SERVER,
            m.seq,
            Body::Registered {
                status: Registration::Accepted,
                user: 7,
            },
        );
        from
    }

    /// Answer `c`'s first CONNEXION with id 7; the client's address.
    pub fn register(&self, c: &C) -> SocketAddr {
        std::thread::scope(|s| {
            let t = s.spawn(|| self.accept_registration());
            assert_eq!(c.login("me"), R::CW_OK, "{}", last_error());
            assert_eq!(c.id(), 7);
            t.join().unwrap()
        })
    }
}

/// A rooms client that does what seed 003 says and no more, on its own
/// socket: it registers, proves its address with a keep-alive, asks what
/// it is told to, and answers nothing it is sent (a peer that never
/// acknowledges a text).
pub struct Raw {
    pub f: Fake,
    pub server: SocketAddr,
    pub id: u8,
    seq: std::cell::Cell<u16>,
}

impl Raw {
    pub fn login(server: SocketAddr, name: &str) -> Raw {
        let mut r = Raw {
            f: Fake::new(),
            server,
            id: 0,
            seq: std::cell::Cell::new(1),
        };
        let name = Some(name.to_owned());
        match r.ask(Body::Connexion { name }) {
            Body::Registered {
                status: Registration::Accepted,
                user,
            } => r.id = user,
            other => panic!("registration refused: {other:?}"),
        }
        assert_eq!(
            r.ask(Body::Connexion { name: None }),
            Body::KeptAlive { ok: true }
        );
        r
    }

    /// `body` to the server, sent again every 100 ms (at most 10 times)
    /// until its answer; what the server sends first is not answered.
    pub fn ask(&self, body: Body) -> Body {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        for _ in 0..10 {
            self.f.send(self.server, self.id, seq, body.clone());
            let until = Instant::now() + Duration::from_millis(100);
            while let Some((m, from)) = self.f.recv(until.saturating_duration_since(Instant::now()))
            {
                let answer = m.body.kind() % 2 == 0 || m.body.kind() == kind::ERREUR;
                if from == self.server && m.seq == seq && answer {
                    return m.body;
                }
            }
        }
        panic!("no answer from the server to {body:?}");
    }
}
