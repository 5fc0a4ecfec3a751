//! The babel library against a scripted server that behaves like the
//! original Babel server (issue 7), not like chinwagd: no AddContact after
//! LoginSuccess when nobody else is online, and contact updates (with an
//! empty name for a connection that has not logged in) sent to connections
//! that have not logged in yet. Both must be accepted; empty names ignored.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use chinwag::{Client, Dialect, Event};
use chinwag_proto::babel::{Decoder, Frame};

const STEP: Duration = Duration::from_secs(5);

fn add(names: &[&str]) -> Frame {
    Frame::AddContact {
        contacts: names.iter().map(|s| s.to_string()).collect(),
    }
}

fn del(names: &[&str]) -> Frame {
    Frame::DelContact {
        contacts: names.iter().map(|s| s.to_string()).collect(),
    }
}

/// Read frames from the client until a Login comes (or the client leaves).
fn await_login(s: &mut TcpStream) -> Option<String> {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 256];
    loop {
        if let Some(Frame::Login { name }) = dec.next_frame().expect("client bytes decode") {
            return Some(name);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => dec.push(&buf[..n]),
        }
    }
}

/// A one-connection server: `script` runs on the accepted socket, after
/// HelloConnect. Returns its port, and a channel that says when it is done.
fn server(
    script: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> (u16, mpsc::Receiver<()>, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (done_tx, done) = mpsc::channel();
    let t = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&Frame::HelloConnect.to_bytes()).unwrap();
        script(&mut s);
        let _ = done_tx.send(());
        // Hold the connection until the client leaves.
        let _ = s.read(&mut [0u8; 64]);
    });
    (port, done, t)
}

#[test]
fn the_first_user_logs_in_without_a_contact_list() {
    let (port, _done, t) = server(|s| {
        assert_eq!(await_login(s).as_deref(), Some("first"));
        // A real Babel server with nobody else online: LoginSuccess only.
        s.write_all(&Frame::LoginSuccess.to_bytes()).unwrap();
    });
    let c = Client::connect("127.0.0.1", port, Dialect::CW_DIALECT_BABEL).unwrap();
    c.login("first", Some(STEP))
        .expect("LoginSuccess alone completes the login");
    assert_eq!(c.contacts().unwrap(), Vec::<String>::new());
    assert_eq!(c.login_name().as_deref(), Some("first"));
    c.close();
    drop(c);
    t.join().unwrap();
}

#[test]
fn contact_updates_before_the_login_and_empty_names_are_accepted() {
    let (go_tx, go) = mpsc::channel::<()>();
    let (port, done, t) = server(move |s| {
        // Others come and go while this connection has not logged in; ""
        // is a connection that has not logged in either.
        let mut out = add(&[""]).to_bytes();
        del(&[""]).encode(&mut out);
        add(&["bob"]).encode(&mut out);
        del(&["", "carol"]).encode(&mut out);
        s.write_all(&out).unwrap();
        // The client's reader has them all before it logs in.
        go.recv().unwrap();
        assert_eq!(await_login(s).as_deref(), Some("me"));
        let mut out = Frame::LoginSuccess.to_bytes();
        add(&["bob", ""]).encode(&mut out);
        s.write_all(&out).unwrap();
        let mut out = add(&[""]).to_bytes();
        add(&["dave"]).encode(&mut out);
        del(&["", "bob"]).encode(&mut out);
        s.write_all(&out).unwrap();
    });
    let c = Client::connect("127.0.0.1", port, Dialect::CW_DIALECT_BABEL).unwrap();
    // The early updates must not end the client: nothing is queued, and a
    // poll times out rather than giving ERROR or CW_CLOSED.
    match c.next_event(Some(Duration::from_millis(300))) {
        Err(e) => assert_eq!(e.code, chinwag::Code::CW_TIMEOUT, "{e}"),
        Ok(ev) => panic!("no event is due before the login: {ev:?}"),
    }
    assert!(!c.is_closed());
    go_tx.send(()).unwrap();
    c.login("me", Some(STEP)).unwrap();
    done.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match c.next_event(Some(STEP)).expect("contact events") {
            Event::ContactAdded { name } => seen.push(format!("+{name}")),
            Event::ContactRemoved { name } => seen.push(format!("-{name}")),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen, ["+bob", "+dave", "-bob"]);
    assert_eq!(c.contacts().unwrap(), vec!["dave".to_string()]);
    // Nothing else: the empty names made no events.
    match c.next_event(Some(Duration::from_millis(200))) {
        Err(e) => assert_eq!(e.code, chinwag::Code::CW_TIMEOUT, "{e}"),
        Ok(ev) => panic!("no more events: {ev:?}"),
    }
    c.close();
    drop(c);
    t.join().unwrap();
}
