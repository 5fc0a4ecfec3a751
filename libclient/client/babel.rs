//! The client side of babel (seed 001): the HelloConnect handshake, the
//! reader thread (login answers, contacts, call signalling), and call
//! set-up peer to peer: a listener for a call we place, a dialer for a call
//! we accept. Bytes go through `chinwag_proto::babel` only, and no lock here
//! is held across socket I/O.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::babel::{Decoder, Frame, MAX_HOST, MAX_NAME};
use parking_lot::Mutex;

use super::call::{Call, CallLink};
use super::{closed_error, Client, Error, Event, Result, Shared, CONNECT_TIMEOUT};
use crate::ffi::codes::{cw_dialect, cw_result};

/// A placed call's listener waits this long for the callee to connect; the
/// server relays a refusal only within 60 s of the request, too.
const RING_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a ringing listener looks for the callee and for a cancellation.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// The callee waits this long for ConnectionEstablished once connected;
/// the caller's library sends it as soon as it accepts.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a call with one contact stands, as far as this client knows.
enum CallState {
    /// We rang (CallRequest sent); a listener thread waits for the callee.
    Ringing { token: u64, cancel: Arc<AtomicBool> },
    /// They ring us; accepting dials `host`:`port`.
    Incoming { host: String, port: u16 },
    /// We accepted; a dialer thread connects to the caller.
    Dialing { token: u64, cancel: Arc<AtomicBool> },
    /// The peer-to-peer connection is open.
    Active { token: u64, link: CallLink },
}

impl CallState {
    fn token(&self) -> Option<u64> {
        match self {
            CallState::Ringing { token, .. }
            | CallState::Dialing { token, .. }
            | CallState::Active { token, .. } => Some(*token),
            CallState::Incoming { .. } => None,
        }
    }
}

/// Babel state shared by the application's threads, the reader and the
/// call threads. Locks are never nested.
#[derive(Default)]
pub(super) struct State {
    /// Babel users online, as the server last told.
    contacts: Mutex<BTreeSet<String>>,
    /// LoginSuccess arrived; the login completes with the initial AddContact.
    awaiting_list: Mutex<bool>,
    /// The server's reason for the last LoginFailed.
    refusal: Mutex<Option<String>>,
    calls: Mutex<HashMap<String, CallState>>,
}

impl State {
    /// The call with `peer` identified by `token` is over: forget it.
    pub(super) fn call_over(&self, peer: &str, token: u64) {
        let mut calls = self.calls.lock();
        if calls.get(peer).and_then(CallState::token) == Some(token) {
            calls.remove(peer);
        }
    }

    /// Stop and forget the placed call to `peer`, if it still rings.
    fn stop_ringing(&self, peer: &str) -> bool {
        let mut calls = self.calls.lock();
        if let Some(CallState::Ringing { cancel, .. }) = calls.get(peer) {
            cancel.store(true, Ordering::Release);
            calls.remove(peer);
            true
        } else {
            false
        }
    }
}

/// Wait for HelloConnect on the fresh socket, before the reader exists.
/// Returns the decoder, holding anything read past it.
pub(super) fn handshake(sock: &TcpStream) -> Result<Decoder> {
    let fail = |code, what: String| Error::new(code, format!("babel handshake: {what}"));
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; 512];
    let result = loop {
        match decoder.next_frame() {
            Ok(Some(Frame::HelloConnect)) => break Ok(()),
            Ok(Some(other)) => {
                break Err(fail(
                    cw_result::CW_PROTOCOL,
                    format!(
                        "expected HelloConnect, the server sent opcode {}",
                        other.opcode()
                    ),
                ))
            }
            Ok(None) => {}
            Err(e) => {
                break Err(fail(
                    cw_result::CW_PROTOCOL,
                    format!("malformed frame from server: {e}"),
                ))
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(fail(
                cw_result::CW_CONNECT_FAILED,
                "no HelloConnect in time".into(),
            ));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| fail(cw_result::CW_IO, format!("socket: {e}")))?;
        match (&*sock).read(&mut chunk) {
            Ok(0) => {
                break Err(fail(
                    cw_result::CW_CONNECT_FAILED,
                    "the server closed the connection".into(),
                ))
            }
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(fail(cw_result::CW_CONNECT_FAILED, format!("reading: {e}"))),
        }
    };
    sock.set_read_timeout(None)
        .map_err(|e| fail(cw_result::CW_IO, format!("socket: {e}")))?;
    result.map(|()| decoder)
}

pub(super) fn read_loop(shared: Arc<Shared>, sock: TcpStream, decoder: Decoder) {
    super::read_frames(shared, sock, decoder, handle);
}

fn handle(shared: &Arc<Shared>, frame: Frame) -> std::result::Result<(), String> {
    let b = &shared.babel;
    let logged_in = || shared.session.lock().login.is_some();
    let opcode = frame.opcode();
    match frame {
        Frame::LoginSuccess => {
            let mut s = shared.session.lock();
            let Some(name) = s.pending.take() else {
                return Err("the server sent LoginSuccess without a Login".into());
            };
            log::info!("logged in as {name}");
            s.login = Some(name);
            drop(s);
            // The answer waits for the contact list that follows at once.
            *b.awaiting_list.lock() = true;
        }
        Frame::LoginFailed { reason } => {
            if shared.session.lock().pending.is_none() {
                return Err(format!(
                    "the server sent LoginFailed ({reason}) without a Login"
                ));
            }
            *b.refusal.lock() = Some(reason);
            let mut s = shared.session.lock();
            s.pending = None;
            s.answer = Some(false);
            drop(s);
            shared.answered.notify_all();
        }
        Frame::AddContact { contacts } => {
            let initial = std::mem::take(&mut *b.awaiting_list.lock());
            if !initial && !logged_in() {
                return Err("the server sent AddContact before the login succeeded".into());
            }
            b.contacts.lock().extend(contacts.iter().cloned());
            for name in contacts {
                shared.emit(Event::ContactAdded { name });
            }
            if initial {
                shared.session.lock().answer = Some(true);
                shared.answered.notify_all();
            }
        }
        Frame::DelContact { contacts } => {
            if !logged_in() {
                return Err("the server sent DelContact before the login succeeded".into());
            }
            {
                let mut c = b.contacts.lock();
                for name in &contacts {
                    c.remove(name);
                }
            }
            for name in contacts {
                shared.emit(Event::ContactRemoved { name });
            }
        }
        Frame::CallRequest {
            contact,
            host,
            port,
        } => {
            if !logged_in() {
                return Err("the server sent CallRequest before the login succeeded".into());
            }
            let mut calls = b.calls.lock();
            match calls.get(&contact) {
                None | Some(CallState::Incoming { .. }) => {
                    calls.insert(
                        contact.clone(),
                        CallState::Incoming {
                            host: host.clone(),
                            port,
                        },
                    );
                    drop(calls);
                    shared.emit(Event::CallIncoming {
                        peer: contact,
                        addr: host,
                        port,
                    });
                }
                Some(_) => {
                    // Already ringing them or talking to them: the caller
                    // will see its own attempt time out or be refused.
                    log::info!("call request from {contact} ignored: a call with it exists");
                }
            }
        }
        Frame::ErrorResponse { what } => {
            if !logged_in() {
                return Err(format!(
                    "the server sent ErrorResponse ({what}) before the login succeeded"
                ));
            }
            // The server only answers a CallRequest this way, with
            // "<contact> is not connected"; match the name when it is
            // there, else the oldest call still ringing.
            let peer = {
                let calls = b.calls.lock();
                let ringing = calls.iter().filter_map(|(name, st)| match st {
                    CallState::Ringing { token, .. } => Some((name, *token)),
                    _ => None,
                });
                let named = ringing
                    .clone()
                    .filter(|(name, _)| {
                        what.strip_prefix(name.as_str())
                            .is_some_and(|rest| rest.starts_with(' '))
                    })
                    .max_by_key(|(name, _)| name.len());
                named
                    .or_else(|| ringing.min_by_key(|(_, token)| *token))
                    .map(|(name, _)| name.clone())
            };
            let peer = match peer {
                Some(p) => {
                    b.stop_ringing(&p);
                    p
                }
                None => String::new(),
            };
            shared.emit(Event::CallFailed {
                peer,
                code: cw_result::CW_OK,
                text: what,
            });
        }
        Frame::CallRefused { contact } => {
            if !logged_in() {
                return Err("the server sent CallRefused before the login succeeded".into());
            }
            if b.stop_ringing(&contact) {
                shared.emit(Event::CallFailed {
                    text: format!("{contact} refused the call"),
                    peer: contact,
                    code: cw_result::CW_OK,
                });
            } else {
                log::debug!("refusal from {contact} for no ringing call, ignored");
            }
        }
        Frame::HelloConnect
        | Frame::Login { .. }
        | Frame::VoiceData { .. }
        | Frame::ConnectionEstablished => {
            return Err(format!(
                "the server sent opcode {opcode}, which it never sends after HelloConnect"
            ));
        }
    }
    Ok(())
}

fn check_contact(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::new(
            cw_result::CW_INVALID_ARGUMENT,
            format!("{what} is empty"),
        ));
    }
    if name.len() > MAX_NAME {
        return Err(Error::new(
            cw_result::CW_TOO_LONG,
            format!(
                "{what} is {} bytes; babel allows at most {MAX_NAME}",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Where to listen for the callee, and the host to put in CallRequest.
fn listen_address(shared: &Shared, host: &str, port: u16) -> Result<(SocketAddr, String)> {
    if host.is_empty() {
        // The interface that reaches the server is the one the server sees
        // us at, and the host it fills in for the callee.
        let local = shared
            .sock
            .as_ref()
            .ok_or_else(|| Error::new(cw_result::CW_UNSUPPORTED, "no TCP connection"))?
            .local_addr()
            .map_err(|e| Error::new(cw_result::CW_IO, format!("socket: {e}")))?;
        return Ok((SocketAddr::new(local.ip(), port), String::new()));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::new(
                cw_result::CW_INVALID_ARGUMENT,
                format!("cannot resolve {host}: {e}"),
            )
        })?
        .next()
        .ok_or_else(|| {
            Error::new(
                cw_result::CW_INVALID_ARGUMENT,
                format!("{host} has no address"),
            )
        })?;
    // A wildcard cannot be dialled: let the server fill in what it sees.
    let advertised = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => String::new(),
        _ => host.to_owned(),
    };
    Ok((addr, advertised))
}

impl Client {
    fn babel_only(&self, what: &str) -> Result<()> {
        match self.shared.dialect {
            cw_dialect::CW_DIALECT_BABEL => Ok(()),
            d => Err(super::unsupported(d, what)),
        }
    }

    /// Babel: the babel users online, sorted (this client excluded).
    pub fn contacts(&self) -> Result<Vec<String>> {
        self.babel_only("a contact list")?;
        self.me()?;
        Ok(self.shared.babel.contacts.lock().iter().cloned().collect())
    }

    /// Babel: the server's reason for the last refused login.
    pub(super) fn babel_refusal(&self) -> String {
        self.shared
            .babel
            .refusal
            .lock()
            .take()
            .unwrap_or_else(|| "no reason given".into())
    }

    pub(super) fn babel_check_login(name: &str) -> Result<()> {
        check_contact("login", name)
    }

    /// Babel: ring `contact`. The library listens on `host`:`port` (host
    /// empty: the interface that reaches the server, and the server tells
    /// the callee the address it sees; port 0: any free port) and sends
    /// CallRequest. Returns the port listened on. The outcome arrives as
    /// CALL_ESTABLISHED or CALL_FAILED.
    pub(super) fn babel_place_call(&self, contact: &str, host: &str, port: u16) -> Result<u16> {
        let me = self.me()?;
        check_contact("contact", contact)?;
        if host.len() > MAX_HOST {
            return Err(Error::new(
                cw_result::CW_TOO_LONG,
                format!(
                    "host is {} bytes; babel allows at most {MAX_HOST}",
                    host.len()
                ),
            ));
        }
        if me == contact {
            return Err(Error::new(
                cw_result::CW_INVALID_ARGUMENT,
                "cannot call yourself",
            ));
        }
        let shared = &self.shared;
        let (bind, advertised) = listen_address(shared, host, port)?;
        let listener = TcpListener::bind(bind).map_err(|e| {
            Error::new(
                cw_result::CW_IO,
                format!("cannot listen on {bind} for the call: {e}"),
            )
        })?;
        let io = |e: io::Error| Error::new(cw_result::CW_IO, format!("call listener: {e}"));
        listener.set_nonblocking(true).map_err(io)?;
        let port = listener.local_addr().map_err(io)?.port();
        let cancel = Arc::new(AtomicBool::new(false));
        let token = {
            let mut calls = shared.babel.calls.lock();
            if calls.contains_key(contact) {
                return Err(Error::new(
                    cw_result::CW_CALL_IN_PROGRESS,
                    format!("a call with {contact:?} is already ringing or going on"),
                ));
            }
            let token = shared.next_token();
            calls.insert(
                contact.to_owned(),
                CallState::Ringing {
                    token,
                    cancel: cancel.clone(),
                },
            );
            token
        };
        let (s2, peer, c2) = (shared.clone(), contact.to_owned(), cancel.clone());
        if let Err(e) = shared.spawn("chinwag-ring", move || {
            ring(&s2, &peer, token, &c2, listener)
        }) {
            shared.babel.call_over(contact, token);
            return Err(e);
        }
        let sent = shared.send_babel(&Frame::CallRequest {
            contact: contact.to_owned(),
            host: advertised,
            port,
        });
        if let Err(e) = sent {
            cancel.store(true, Ordering::Release);
            shared.babel.call_over(contact, token);
            return Err(e);
        }
        log::info!("ringing {contact}, listening on port {port}");
        Ok(port)
    }

    /// Babel: accept `caller`'s ringing call: the library connects to the
    /// end point its CallRequest gave. The outcome arrives as
    /// CALL_ESTABLISHED or CALL_FAILED.
    pub fn accept_call(&self, caller: &str) -> Result<()> {
        self.babel_only("accepting a peer-to-peer call (accounts: use answer_call)")?;
        self.me()?;
        check_contact("caller", caller)?;
        let shared = &self.shared;
        let cancel = Arc::new(AtomicBool::new(false));
        let (token, host, port) = {
            let mut calls = shared.babel.calls.lock();
            let Some(CallState::Incoming { host, port }) = calls.get(caller) else {
                return Err(Error::new(
                    cw_result::CW_NO_SUCH_CALL,
                    format!("no call from {caller:?} is ringing"),
                ));
            };
            let (host, port) = (host.clone(), *port);
            let token = shared.next_token();
            calls.insert(
                caller.to_owned(),
                CallState::Dialing {
                    token,
                    cancel: cancel.clone(),
                },
            );
            (token, host, port)
        };
        let (s2, peer) = (shared.clone(), caller.to_owned());
        let spawned = shared.spawn("chinwag-dial", move || {
            dial(&s2, &peer, token, &cancel, &host, port)
        });
        if let Err(e) = spawned {
            shared.babel.call_over(caller, token);
            return Err(e);
        }
        Ok(())
    }

    /// Babel: refuse `caller`'s ringing call; its caller gets CALL_FAILED.
    pub(super) fn babel_refuse_call(&self, caller: &str) -> Result<()> {
        self.me()?;
        check_contact("caller", caller)?;
        {
            let mut calls = self.shared.babel.calls.lock();
            if !matches!(calls.get(caller), Some(CallState::Incoming { .. })) {
                return Err(Error::new(
                    cw_result::CW_NO_SUCH_CALL,
                    format!("no call from {caller:?} is ringing"),
                ));
            }
            calls.remove(caller);
        }
        self.shared.send_babel(&Frame::CallRefused {
            contact: caller.to_owned(),
        })
    }

    /// Babel: end the call with `peer`, whatever its stage: close the
    /// peer-to-peer connection, stop ringing, stop dialing, or refuse.
    pub(super) fn babel_hangup_call(&self, peer: &str) -> Result<()> {
        self.me()?;
        check_contact("peer", peer)?;
        let state = self.shared.babel.calls.lock().remove(peer);
        match state {
            None => Err(Error::new(
                cw_result::CW_NO_SUCH_CALL,
                format!("no call with {peer:?}"),
            )),
            Some(CallState::Incoming { .. }) => self.shared.send_babel(&Frame::CallRefused {
                contact: peer.to_owned(),
            }),
            Some(CallState::Ringing { cancel, .. }) | Some(CallState::Dialing { cancel, .. }) => {
                cancel.store(true, Ordering::Release);
                Ok(())
            }
            Some(CallState::Active { link, .. }) => {
                link.hangup();
                Ok(())
            }
        }
    }
}

impl Shared {
    /// Write one babel frame on the main connection.
    pub(super) fn send_babel(&self, frame: &Frame) -> Result<()> {
        let bytes = frame.to_bytes();
        let _g = self.write_lock.lock();
        self.write_locked(&bytes)
    }

    /// Make the call's object, record it as open and queue
    /// CALL_ESTABLISHED, unless the call was cancelled meanwhile (then the
    /// socket is dropped). The event is queued under the calls lock, so the
    /// call's reader (which takes that lock before reporting the end)
    /// cannot report its end before it.
    fn establish_call(
        self: &Arc<Self>,
        peer: &str,
        token: u64,
        cancel: &AtomicBool,
        sock: TcpStream,
        decoder: Decoder,
    ) {
        let refused = {
            let mut calls = self.babel.calls.lock();
            let current = calls.get(peer).and_then(CallState::token) == Some(token);
            if !current || cancel.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            let started = Call::start(sock, peer.to_owned(), token, decoder, Arc::downgrade(self));
            let (call, link) = match started {
                Ok(c) => c,
                Err(e) => {
                    drop(calls);
                    return self.call_failed(peer, token, e);
                }
            };
            calls.insert(peer.to_owned(), CallState::Active { token, link });
            log::info!("call with {peer} established (token {})", call.token());
            self.events.push(Event::CallEstablished {
                peer: peer.to_owned(),
                call: Some(call),
            })
        };
        // A call the closed queue refused hangs up here, outside the lock
        // its reader needs.
        drop(refused);
    }

    fn call_failed(&self, peer: &str, token: u64, e: Error) {
        self.babel.call_over(peer, token);
        log::info!("call with {peer} failed: {}", e.message);
        self.emit(Event::CallFailed {
            peer: peer.to_owned(),
            code: e.code,
            text: e.message,
        });
    }
}

/// The caller's side: wait for the callee's connection, greet it with
/// ConnectionEstablished, and hand the call over.
fn ring(shared: &Arc<Shared>, peer: &str, token: u64, cancel: &AtomicBool, listener: TcpListener) {
    let deadline = Instant::now() + RING_TIMEOUT;
    let sock = loop {
        if cancel.load(Ordering::Acquire) || shared.closed.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((sock, from)) => {
                log::debug!("call with {peer}: connection from {from}");
                break sock;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = Error::new(cw_result::CW_IO, format!("call listener failed: {e}"));
                return shared.call_failed(peer, token, e);
            }
        }
        if Instant::now() >= deadline {
            let e = Error::new(
                cw_result::CW_TIMEOUT,
                format!("{peer} did not connect within {} s", RING_TIMEOUT.as_secs()),
            );
            return shared.call_failed(peer, token, e);
        }
        std::thread::sleep(ACCEPT_POLL);
    };
    // One connection per call: the listener closes here.
    drop(listener);
    let greeted = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .and_then(|()| (&sock).write_all(&Frame::ConnectionEstablished.to_bytes()));
    if let Err(e) = greeted {
        let e = Error::new(
            cw_result::CW_IO,
            format!("greeting {peer}'s connection failed: {e}"),
        );
        return shared.call_failed(peer, token, e);
    }
    shared.establish_call(peer, token, cancel, sock, Decoder::new());
}

/// The callee's side: connect to the caller, wait for ConnectionEstablished,
/// and hand the call over. On failure the caller is told (CallRefused), so
/// it stops ringing.
fn dial(shared: &Arc<Shared>, peer: &str, token: u64, cancel: &AtomicBool, host: &str, port: u16) {
    match connect_to_caller(shared, token, host, port) {
        Ok((sock, decoder)) => shared.establish_call(peer, token, cancel, sock, decoder),
        Err(e) => {
            if cancel.load(Ordering::Acquire) || shared.closed.load(Ordering::Acquire) {
                return;
            }
            let _ = shared.send_babel(&Frame::CallRefused {
                contact: peer.to_owned(),
            });
            shared.call_failed(peer, token, e);
        }
    }
}

fn connect_to_caller(
    shared: &Shared,
    token: u64,
    host: &str,
    port: u16,
) -> Result<(TcpStream, Decoder)> {
    let connect_failed = |what: String| Error::new(cw_result::CW_CONNECT_FAILED, what);
    if host.is_empty() || port == 0 {
        return Err(connect_failed(format!(
            "the call request gave no usable end point ({host:?}:{port})"
        )));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| connect_failed(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = String::from("no address");
    let mut sock = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let sock = sock.ok_or_else(|| {
        connect_failed(format!(
            "cannot connect to the caller at {host}:{port}: {last}"
        ))
    })?;
    let io = |e: io::Error| Error::new(cw_result::CW_IO, format!("call socket: {e}"));
    {
        // Registered so that closing the client wakes the wait below.
        let mut openers = shared.openers.lock();
        if shared.closed.load(Ordering::Acquire) {
            let _ = sock.shutdown(Shutdown::Both);
            return Err(closed_error());
        }
        openers.sockets.push((token, sock.try_clone().map_err(io)?));
    }
    let result = wait_established(&sock);
    shared.openers.lock().sockets.retain(|(t, _)| *t != token);
    result.map(|decoder| (sock, decoder))
}

/// Read until the first frame, which must be ConnectionEstablished; bytes
/// after it stay in the decoder for the call.
fn wait_established(sock: &TcpStream) -> Result<Decoder> {
    let io = |e: io::Error| Error::new(cw_result::CW_IO, format!("call socket: {e}"));
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(ESTABLISH_TIMEOUT)).map_err(io)?;
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; 512];
    loop {
        match decoder.next_frame() {
            Ok(Some(Frame::ConnectionEstablished)) => return Ok(decoder),
            Ok(Some(other)) => {
                return Err(Error::new(
                    cw_result::CW_PROTOCOL,
                    format!(
                        "expected ConnectionEstablished, the caller sent opcode {}",
                        other.opcode()
                    ),
                ))
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Error::new(
                    cw_result::CW_PROTOCOL,
                    format!("malformed frame from the caller: {e}"),
                ))
            }
        }
        match (&*sock).read(&mut chunk) {
            Ok(0) => {
                return Err(Error::new(
                    cw_result::CW_CLOSED,
                    "the caller closed the connection before ConnectionEstablished",
                ))
            }
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::new(
                    cw_result::CW_TIMEOUT,
                    "the caller did not send ConnectionEstablished in time",
                ))
            }
            Err(e) => return Err(io(e)),
        }
    }
}
