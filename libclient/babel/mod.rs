//! The babel dialect (seed 001): `BabelClient`, the HelloConnect handshake,
//! the reader's handling of server frames (login answers, contacts, call
//! signalling), and the API of calls. Call set-up peer to peer lives in
//! `setup.rs`. Bytes go through `chinwag_proto::babel` only, and no lock
//! here is held across socket I/O.
//!
//! Real Babel servers differ from chinwagd in two ways this side accepts:
//! they send no AddContact after LoginSuccess when nobody else is online,
//! and they send contact updates (with an empty name for a connection that
//! has not logged in) to connections that have not logged in yet.

mod setup;

use std::collections::{BTreeSet, HashMap};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chinwag_proto::babel::{Frame, MAX_HOST, MAX_NAME};
use parking_lot::Mutex;

use crate::audio::Profile;
use crate::call::{Call, CallLink, CallOwner};
use crate::core::tcp::{self, Frames, Tcp};
use crate::core::{
    check_field, check_len, end, sealed, spawn, threads, Connection, Core, Error, ErrorKind, Event,
    Result, VoicePorts, CONNECT_TIMEOUT, DEFAULT_CAPACITY,
};

const DIALECT: &str = "babel";

/// A babel client: anonymous login, the contact list the server pushes,
/// and calls set up through the server, carried peer to peer.
pub type BabelClient = Connection<Babel>;

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

/// The state of a babel client, shared by its handle, its reader and its
/// call threads. Locks are never nested.
pub struct Babel {
    core: Core,
    tcp: Tcp,
    /// Babel users online, as the server last told.
    contacts: Mutex<BTreeSet<String>>,
    /// LoginSuccess arrived and the login call still waits: it is answered
    /// by the initial AddContact, or once nothing more is buffered (a real
    /// Babel server sends no AddContact when nobody else is online).
    awaiting_list: AtomicBool,
    /// The server's reason for the last LoginFailed.
    refusal: Mutex<Option<String>>,
    calls: Mutex<HashMap<String, CallState>>,
    /// Where placed calls listen when no port is given, and the port
    /// CallRequest names instead of the one listened on (0: unset).
    voice_ports: Mutex<VoicePorts>,
}

impl sealed::Protocol for Babel {
    fn core(&self) -> &Core {
        &self.core
    }

    fn shut(&self) {
        self.tcp.shutdown();
    }
}

impl CallOwner for Babel {
    fn call_ended(&self, peer: &str, token: u64, why: &Error, local: bool) {
        self.call_over(peer, token);
        if why.code == ErrorKind::Panic {
            end(self, threads::panic_event("chinwag-call", &why.message));
        } else if !local {
            self.core.emit(Event::CallEnded {
                peer: peer.to_owned(),
                code: why.code,
                text: why.message.clone(),
            });
        }
    }
}

impl Babel {
    /// Write one frame on the connection to the server.
    fn send(&self, frame: &Frame) -> Result<()> {
        self.tcp.write(&self.core, &frame.to_bytes())
    }

    /// The call with `peer` identified by `token` is over: forget it.
    fn call_over(&self, peer: &str, token: u64) {
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

    /// Answer the waiting login call, if LoginSuccess left it waiting.
    fn complete_login(&self) {
        if self.awaiting_list.swap(false, Ordering::AcqRel) {
            self.core.login.answer(true);
        }
    }

    /// Names of a contact update worth keeping: a real Babel server sends an
    /// empty name for a connection that has not logged in, and may name
    /// this client itself.
    fn named(&self, contacts: Vec<String>) -> Vec<String> {
        let me = self.core.login.name();
        contacts
            .into_iter()
            .filter(|n| !n.is_empty() && Some(n) != me.as_ref())
            .collect()
    }

    fn contact_update(&self, frame: &str, contacts: Vec<String>, added: bool) {
        if !self.core.login.is_logged_in() {
            // Real Babel servers tell every connection, logged in or not;
            // the list that follows LoginSuccess is the one that counts.
            log::debug!("{frame} before the login ignored");
            return;
        }
        let contacts = self.named(contacts);
        {
            let mut set = self.contacts.lock();
            for name in &contacts {
                if added {
                    set.insert(name.clone());
                } else {
                    set.remove(name);
                }
            }
        }
        for name in contacts {
            self.core.emit(if added {
                Event::ContactAdded { name }
            } else {
                Event::ContactRemoved { name }
            });
        }
    }

    /// The peer of an ErrorResponse: the server only answers a CallRequest
    /// this way, with "<contact> is not connected"; match the name when it
    /// is there, else the oldest call still ringing.
    fn refused_peer(&self, what: &str) -> Option<String> {
        let calls = self.calls.lock();
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
    }
}

impl Frames for Babel {
    type Frame = Frame;

    fn frame(self: &Arc<Self>, frame: Frame) -> std::result::Result<(), String> {
        let core = &self.core;
        let logged_in = || core.login.is_logged_in();
        let opcode = frame.opcode();
        match frame {
            Frame::LoginSuccess => {
                let Some(name) = core.login.settle(true) else {
                    return Err("the server sent LoginSuccess without a Login".into());
                };
                log::info!("logged in as {name}");
                self.awaiting_list.store(true, Ordering::Release);
            }
            Frame::LoginFailed { reason } => {
                if !core.login.has_pending() {
                    return Err(format!(
                        "the server sent LoginFailed ({reason}) without a Login"
                    ));
                }
                *self.refusal.lock() = Some(reason);
                core.login.settle(false);
                core.login.answer(false);
            }
            Frame::AddContact { contacts } => {
                self.contact_update("AddContact", contacts, true);
                self.complete_login();
            }
            Frame::DelContact { contacts } => self.contact_update("DelContact", contacts, false),
            Frame::CallRequest {
                contact,
                host,
                port,
            } => {
                if !logged_in() {
                    return Err("the server sent CallRequest before the login succeeded".into());
                }
                let mut calls = self.calls.lock();
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
                        core.emit(Event::CallIncoming {
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
                let peer = match self.refused_peer(&what) {
                    Some(p) => {
                        self.stop_ringing(&p);
                        p
                    }
                    None => String::new(),
                };
                core.emit(Event::CallFailed {
                    peer,
                    code: None,
                    text: what,
                });
            }
            Frame::CallRefused { contact } => {
                if !logged_in() {
                    return Err("the server sent CallRefused before the login succeeded".into());
                }
                if self.stop_ringing(&contact) {
                    core.emit(Event::CallFailed {
                        text: format!("{contact} refused the call"),
                        peer: contact,
                        code: None,
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

    fn drained(&self) {
        self.complete_login();
    }
}

fn check_contact(what: &str, name: &str) -> Result<()> {
    check_field(DIALECT, what, name, MAX_NAME)
}

/// Wait for HelloConnect on the fresh socket, before the reader exists.
/// Returns the decoder, holding anything read past it.
fn handshake(tcp: &Tcp) -> Result<chinwag_proto::babel::Decoder> {
    match tcp::first_frame(tcp.socket(), CONNECT_TIMEOUT) {
        Ok((Frame::HelloConnect, decoder)) => Ok(decoder),
        Ok((other, _)) => Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "babel handshake: expected HelloConnect, the server sent opcode {}",
                other.opcode()
            ),
        )),
        Err(silence) => Err(tcp::greeting_failed("babel", "no HelloConnect", silence)),
    }
}

impl Connection<Babel> {
    /// Connect to a babel server and wait (at most 5 s) for its HelloConnect.
    pub fn connect(host: &str, port: u16) -> Result<Self> {
        let tcp = Tcp::connect(host, port)?;
        let decoder = handshake(&tcp)?;
        let babel = Arc::new(Babel {
            core: Core::new(DEFAULT_CAPACITY),
            tcp,
            contacts: Mutex::new(BTreeSet::new()),
            awaiting_list: AtomicBool::new(false),
            refusal: Mutex::new(None),
            calls: Mutex::new(HashMap::new()),
            voice_ports: Mutex::new(VoicePorts::default()),
        });
        tcp::start_reader(&babel, babel.tcp.socket(), decoder)?;
        log::info!("connected to {} (babel)", babel.tcp.server());
        Ok(Connection::new(babel))
    }

    fn state(&self) -> &Arc<Babel> {
        self.proto()
    }

    /// Propose `login` and wait for the answer. `Ok` means accepted, and
    /// the contact list the server sends with the acceptance has arrived; a
    /// refusal is `LoginRefused` with the server's reason, after which
    /// another name may be tried. On `Timeout` the answer may still arrive
    /// and count.
    pub fn login(&self, login: &str, timeout: Option<Duration>) -> Result<()> {
        check_contact("login", login)?;
        let b = self.state();
        let send = || {
            b.send(&Frame::Login {
                name: login.to_owned(),
            })
        };
        if b.core.login.request(login, timeout, send)? {
            return Ok(());
        }
        let reason = b
            .refusal
            .lock()
            .take()
            .unwrap_or_else(|| "no reason given".into());
        Err(Error::new(
            ErrorKind::LoginRefused,
            format!("the server refused the login {login:?}: {reason}"),
        ))
    }

    /// The babel users online, sorted (this client excluded).
    pub fn contacts(&self) -> Result<Vec<String>> {
        let b = self.state();
        b.core.login.me()?;
        Ok(b.contacts.lock().iter().cloned().collect())
    }

    /// Where the library listens for placed calls when `place_call` is
    /// given port 0 (`local`; 0: any free port), and the port CallRequest
    /// names instead of the one listened on (`advertised`; 0: that one), for
    /// a port forwarded through a NAT or a relay in front.
    pub fn set_voice_ports(&self, ports: VoicePorts) {
        *self.state().voice_ports.lock() = ports;
    }

    /// Ring `contact`. The library listens on `host`:`port` (host empty:
    /// the interface that reaches the server, and the server tells the
    /// callee the address it sees; port 0: the local voice port, else any
    /// free port) and sends CallRequest. Returns the port listened on. The
    /// outcome arrives as CallEstablished or CallFailed.
    pub fn place_call(&self, contact: &str, host: &str, port: u16) -> Result<u16> {
        let b = self.state();
        let me = b.core.login.me()?;
        check_contact("contact", contact)?;
        check_len(DIALECT, "host", host, MAX_HOST)?;
        if me == contact {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "cannot call yourself",
            ));
        }
        let ports = *b.voice_ports.lock();
        let port = if port == 0 { ports.local } else { port };
        let (bind, advertised) = setup::listen_address(b.tcp.socket(), host, port)?;
        let listener = TcpListener::bind(bind).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot listen on {bind} for the call: {e}"),
            )
        })?;
        let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("call listener: {e}"));
        listener.set_nonblocking(true).map_err(io)?;
        let port = listener.local_addr().map_err(io)?.port();
        let named_port = if ports.advertised == 0 {
            port
        } else {
            ports.advertised
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let token = {
            let mut calls = b.calls.lock();
            if calls.contains_key(contact) {
                return Err(Error::new(
                    ErrorKind::CallInProgress,
                    format!("a call with {contact:?} is already ringing or going on"),
                ));
            }
            let token = b.core.next_token();
            calls.insert(
                contact.to_owned(),
                CallState::Ringing {
                    token,
                    cancel: cancel.clone(),
                },
            );
            token
        };
        let (peer, c2) = (contact.to_owned(), cancel.clone());
        if let Err(e) = spawn(b, "chinwag-ring", move |b| {
            setup::ring(b, &peer, token, &c2, listener)
        }) {
            b.call_over(contact, token);
            return Err(e);
        }
        let sent = b.send(&Frame::CallRequest {
            contact: contact.to_owned(),
            host: advertised,
            port: named_port,
        });
        if let Err(e) = sent {
            cancel.store(true, Ordering::Release);
            b.call_over(contact, token);
            return Err(e);
        }
        log::info!("ringing {contact}, listening on port {port}");
        Ok(port)
    }

    /// Accept `caller`'s ringing call: the library connects to the end
    /// point its CallRequest gave. The outcome arrives as CallEstablished
    /// or CallFailed.
    pub fn accept_call(&self, caller: &str) -> Result<()> {
        let b = self.state();
        b.core.login.me()?;
        check_contact("caller", caller)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let (token, host, port) = {
            let mut calls = b.calls.lock();
            let Some(CallState::Incoming { host, port }) = calls.get(caller) else {
                return Err(Error::new(
                    ErrorKind::NoSuchCall,
                    format!("no call from {caller:?} is ringing"),
                ));
            };
            let (host, port) = (host.clone(), *port);
            let token = b.core.next_token();
            calls.insert(
                caller.to_owned(),
                CallState::Dialing {
                    token,
                    cancel: cancel.clone(),
                },
            );
            (token, host, port)
        };
        let peer = caller.to_owned();
        let spawned = spawn(b, "chinwag-dial", move |b| {
            setup::dial(b, &peer, token, &cancel, &host, port)
        });
        if let Err(e) = spawned {
            b.call_over(caller, token);
            return Err(e);
        }
        Ok(())
    }

    /// Refuse `caller`'s ringing call; its caller gets CallFailed.
    pub fn refuse_call(&self, caller: &str) -> Result<()> {
        let b = self.state();
        b.core.login.me()?;
        check_contact("caller", caller)?;
        {
            let mut calls = b.calls.lock();
            if !matches!(calls.get(caller), Some(CallState::Incoming { .. })) {
                return Err(Error::new(
                    ErrorKind::NoSuchCall,
                    format!("no call from {caller:?} is ringing"),
                ));
            }
            calls.remove(caller);
        }
        b.send(&Frame::CallRefused {
            contact: caller.to_owned(),
        })
    }

    /// End the call with `peer`, whatever its stage: close the
    /// peer-to-peer connection, stop ringing, stop dialing, or refuse.
    pub fn hangup_call(&self, peer: &str) -> Result<()> {
        let b = self.state();
        b.core.login.me()?;
        check_contact("peer", peer)?;
        let state = b.calls.lock().remove(peer);
        match state {
            None => Err(Error::new(
                ErrorKind::NoSuchCall,
                format!("no call with {peer:?}"),
            )),
            Some(CallState::Incoming { .. }) => b.send(&Frame::CallRefused {
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

impl Babel {
    /// Make the call's object, record it as open and queue
    /// CallEstablished, unless the call was cancelled meanwhile (then the
    /// socket is dropped). The event is queued under the calls lock, so the
    /// call's thread (which takes that lock before reporting the end)
    /// cannot report its end before it.
    fn establish_call(
        self: &Arc<Self>,
        peer: &str,
        token: u64,
        cancel: &AtomicBool,
        sock: TcpStream,
        decoder: chinwag_proto::babel::Decoder,
    ) {
        let refused = {
            let mut calls = self.calls.lock();
            let current = calls.get(peer).and_then(CallState::token) == Some(token);
            if !current || cancel.load(Ordering::Acquire) || self.core.closed_locally() {
                let _ = sock.shutdown(std::net::Shutdown::Both);
                return;
            }
            let owner: Arc<dyn CallOwner> = self.clone();
            let started = setup::voice(sock, peer, decoder).and_then(|(out, input)| {
                Call::start(
                    peer.to_owned(),
                    token,
                    Profile::Babel,
                    out,
                    input,
                    Arc::downgrade(&owner),
                )
            });
            let (call, link) = match started {
                Ok(c) => c,
                Err(e) => {
                    drop(calls);
                    return self.call_failed(peer, token, e);
                }
            };
            calls.insert(peer.to_owned(), CallState::Active { token, link });
            log::info!("call with {peer} established (token {})", call.token());
            self.core.push(Event::CallEstablished {
                peer: peer.to_owned(),
                call: Some(call),
            })
        };
        // A call the closed queue refused hangs up here, outside the lock
        // its thread needs.
        drop(refused);
    }

    fn call_failed(&self, peer: &str, token: u64, e: Error) {
        self.call_over(peer, token);
        log::info!("call with {peer} failed: {}", e.message);
        self.core.emit(Event::CallFailed {
            peer: peer.to_owned(),
            code: Some(e.code),
            text: e.message,
        });
    }
}
