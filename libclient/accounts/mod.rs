//! The accounts dialect (seed 000): `AccountsClient`, the HELLO handshake,
//! the reader's handling of server frames, the requests that wait for the
//! server's verdict, and the local call/friend-request state. Calls the
//! library carries run over `media.rs` (UDP between the peers). Bytes go through
//! `chinwag_proto::accounts` only, and no lock here is held across a wait
//! for the server except `write_lock`, which only ever covers one write.
//!
//! Replies carry no request id. The server answers the requests that need
//! an answer in the order it got them, so each kind of answer has a FIFO of
//! waiters; the waiter is queued under `write_lock`, in the same critical
//! section as the write, so queue order is wire order. A waiter that gave
//! up stays queued (abandoned) until its late answer arrives, so that
//! answer is never taken for the next request's.

mod media;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use chinwag_proto::accounts::feature;
use chinwag_proto::accounts::{
    Decoder, Frame, HistoryEntry, MAX_ADDR, MAX_EMAIL, MAX_MESSAGE, MAX_PASSWORD, MAX_PSEUDO,
};
use parking_lot::{Condvar, Mutex};

use crate::audio::Profile;
use crate::call::{Call, CallLink, CallOwner};
use crate::core::tcp::{self, Frames, Tcp};
use crate::core::{
    end, sealed, threads, wait_until, Connection, Core, Error, ErrorKind, Event, Result,
    VoicePorts, CONNECT_TIMEOUT, DEFAULT_CAPACITY,
};

const DIALECT: &str = "the accounts dialect";

/// An accounts client: registration and password login, friends, stored
/// messages, history, and call signalling.
pub type AccountsClient = Connection<Accounts>;

/// What a queued request waits for. Friend and history answers name the
/// pseudo they are about, so they are matched on it too.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Register,
    Login,
    Friend(String),
    Message,
    History(String),
    Friends,
    Requests,
}

impl Want {
    fn same_kind(&self, other: &Want) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// Register and login answers may be produced before an earlier one of
    /// the same kind (the server validates some fields at once), so only
    /// one of each is ever in flight.
    fn exclusive(&self) -> bool {
        matches!(self, Want::Register | Want::Login)
    }

    /// The waiter kind an answer frame belongs to, and the pseudo it names.
    fn of_answer(f: &Frame) -> Option<(Want, Option<&str>)> {
        Some(match f {
            Frame::Registered
            | Frame::EmailTaken
            | Frame::PseudoTaken
            | Frame::RegisterRefused { .. } => (Want::Register, None),
            Frame::LoginOk { .. } | Frame::LoginFailed => (Want::Login, None),
            Frame::FriendRequestSent { pseudo }
            | Frame::NoSuchUser { pseudo }
            | Frame::AlreadyFriends { pseudo } => (Want::Friend(String::new()), Some(pseudo)),
            Frame::MessageStored | Frame::MessageFailed => (Want::Message, None),
            Frame::HistoryPage { pseudo, .. } => (Want::History(String::new()), Some(pseudo)),
            Frame::Friends { .. } => (Want::Friends, None),
            Frame::Requests { .. } => (Want::Requests, None),
            _ => return None,
        })
    }

    fn pseudo(&self) -> Option<&str> {
        match self {
            Want::Friend(p) | Want::History(p) => Some(p),
            _ => None,
        }
    }
}

struct Waiter {
    ticket: u64,
    want: Want,
    abandoned: bool,
}

#[derive(Default)]
struct Replies {
    next: u64,
    queue: VecDeque<Waiter>,
    answers: HashMap<u64, Frame>,
    dead: bool,
}

/// Where a call with one peer stands, as far as this client knows. A call
/// the application carries itself (it gave its own port) has no media
/// here; one the library carries has its socket, then its `Call`.
enum Stage {
    /// We rang them (140 sent); the socket waits for their answer.
    Outgoing {
        media: Option<UdpSocket>,
        token: u64,
    },
    /// They ring us (143 received) from this voice end point.
    Incoming { addr: String, port: u16 },
    /// Answered either way.
    Active { call: Option<(u64, CallLink)> },
}

impl Stage {
    fn active_token(&self) -> Option<u64> {
        match self {
            Stage::Active {
                call: Some((token, _)),
            } => Some(*token),
            _ => None,
        }
    }
}

/// The state of an accounts client, shared by its handle and its reader.
pub struct Accounts {
    core: Core,
    tcp: Tcp,
    /// The account id the server gave with the login.
    account_id: Mutex<Option<u64>>,
    replies: Mutex<Replies>,
    arrived: Condvar,
    /// Pseudos whose friend request to us is pending, as last seen (130
    /// adds, 181 replaces, answering or 124 removes).
    requests: Mutex<HashSet<String>>,
    calls: Mutex<HashMap<String, Stage>>,
    /// Feature bits the server granted at HELLO (`feature::*`).
    features: u32,
    /// Where library-carried calls listen and the port they name.
    voice_ports: Mutex<VoicePorts>,
}

impl sealed::Protocol for Accounts {
    fn core(&self) -> &Core {
        &self.core
    }

    fn shut(&self) {
        self.replies.lock().dead = true;
        self.arrived.notify_all();
        self.tcp.shutdown();
        // Calls need the signalling connection (the peer learns of the end
        // through the server): they end with it.
        let links: Vec<CallLink> = self
            .calls
            .lock()
            .drain()
            .filter_map(|(_, st)| match st {
                Stage::Active {
                    call: Some((_, link)),
                } => Some(link),
                _ => None,
            })
            .collect();
        for link in links {
            link.end(Error::new(
                ErrorKind::Closed,
                "the connection to the server ended",
            ));
        }
    }
}

impl CallOwner for Accounts {
    fn call_ended(&self, peer: &str, token: u64, why: &Error, local: bool) {
        let current = {
            let mut calls = self.calls.lock();
            let current = calls.get(peer).and_then(Stage::active_token) == Some(token);
            if current {
                calls.remove(peer);
            }
            current
        };
        if !current {
            // Hung up by name, by the peer (147) or with the client.
            return;
        }
        // The server must learn that the call is over, whichever side ended it.
        let _ = self.tcp.write(
            &self.core,
            &Frame::Hangup {
                pseudo: peer.to_owned(),
            }
            .to_bytes(),
        );
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

impl Accounts {
    /// Hand an answer to the oldest waiter of its kind (naming the same
    /// pseudo, when it names one). False when nobody waits for it.
    fn answer(&self, f: Frame) -> bool {
        let Some((kind, pseudo)) = Want::of_answer(&f) else {
            return false;
        };
        let mut r = self.replies.lock();
        let matching = |w: &Waiter| w.want.same_kind(&kind);
        let pos = match pseudo {
            Some(p) => r
                .queue
                .iter()
                .position(|w| matching(w) && w.want.pseudo() == Some(p))
                .or_else(|| r.queue.iter().position(matching)),
            None => r.queue.iter().position(matching),
        };
        let Some(pos) = pos else {
            return false;
        };
        let w = r.queue.remove(pos).expect("position is in range");
        if !w.abandoned {
            r.answers.insert(w.ticket, f);
            drop(r);
            self.arrived.notify_all();
        }
        true
    }
}

/// Send HELLO (asking for `features`, unless 0: then the seed's plain
/// HELLO) and wait for its answer on the fresh socket, before the reader
/// exists. Returns the features granted and the decoder, holding anything
/// read past 201. `Err(None)`: the server hung up on a HELLO that asked
/// for features (a server older than them), so a plain one may be tried.
fn handshake(
    tcp: &Tcp,
    core: &Core,
    features: u32,
) -> std::result::Result<(u32, Decoder), Option<Error>> {
    let hello = match features {
        0 => Frame::Hello,
        features => Frame::HelloWith { features },
    };
    tcp.write(core, &hello.to_bytes()).map_err(|e| {
        Some(Error::new(
            ErrorKind::ConnectFailed,
            format!("accounts handshake: sending HELLO: {}", e.message),
        ))
    })?;
    match tcp::first_frame(tcp.socket(), CONNECT_TIMEOUT) {
        Ok((Frame::HelloAck, decoder)) => Ok((0, decoder)),
        // Never more than asked: a server granting others is broken.
        Ok((Frame::HelloAckWith { features: got }, decoder)) if got & !features == 0 => {
            Ok((got, decoder))
        }
        Err(tcp::Silence::Eof) if features != 0 => Err(None),
        Ok((other, _)) => Err(Some(Error::new(
            ErrorKind::Protocol,
            format!("accounts handshake: expected 201, the server sent {other:?}"),
        ))),
        Err(silence) => Err(Some(tcp::greeting_failed(
            "accounts",
            "no answer to HELLO",
            silence,
        ))),
    }
}

impl Frames for Accounts {
    type Frame = Frame;

    fn frame(self: &Arc<Self>, frame: Frame) -> std::result::Result<(), String> {
        handle(self, frame)
    }
}

impl Accounts {
    /// Start the media of a call the library carries over `sock`, towards
    /// the peer's end point; the call is then `Active`. Runs under the
    /// calls lock, so its events are queued before its thread can end it.
    fn start_call(
        self: &Arc<Self>,
        calls: &mut HashMap<String, Stage>,
        pseudo: &str,
        token: u64,
        sock: UdpSocket,
        addr: &str,
        port: u16,
    ) -> Result<Call> {
        let peer = media::peer_end_point(pseudo, addr, port)?;
        let (out, input) = media::transport(sock, peer)?;
        let owner: Arc<dyn CallOwner> = self.clone();
        let (call, link) = Call::start(
            pseudo.to_owned(),
            token,
            Profile::Accounts,
            out,
            input,
            Arc::downgrade(&owner),
        )?;
        calls.insert(
            pseudo.to_owned(),
            Stage::Active {
                call: Some((token, link)),
            },
        );
        log::info!("call with {pseudo} established, voice to {peer}");
        Ok(call)
    }

    /// The socket of a call the library carries, and the port to name for it.
    fn bind_voice(&self) -> Result<(UdpSocket, u16)> {
        let ports = *self.voice_ports.lock();
        let ip = self
            .tcp
            .socket()
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, format!("socket: {e}")))?
            .ip();
        let sock = media::bind(ip, ports.local)?;
        let port = match ports.advertised {
            0 => media::port_of(&sock)?,
            p => p,
        };
        Ok((sock, port))
    }
}

/// 141: our call was answered. A call the library carries starts now.
fn call_accepted(acc: &Arc<Accounts>, pseudo: String, addr: String, port: u16) {
    let mut calls = acc.calls.lock();
    // Told first in every case (a call cancelled meanwhile included).
    acc.core.emit(Event::CallAccepted {
        peer: pseudo.clone(),
        addr: addr.clone(),
        port,
    });
    let Some(stage) = calls.get_mut(&pseudo) else {
        return;
    };
    let media = match stage {
        Stage::Outgoing { media, token } => media.take().map(|m| (m, *token)),
        _ => None,
    };
    let Some((sock, token)) = media else {
        *stage = Stage::Active { call: None };
        return;
    };
    let refused = match acc.start_call(&mut calls, &pseudo, token, sock, &addr, port) {
        Ok(call) => acc.core.push(Event::CallEstablished {
            peer: pseudo,
            call: Some(call),
        }),
        Err(e) => {
            calls.remove(&pseudo);
            drop(calls);
            log::info!("call with {pseudo} failed: {}", e.message);
            let _ = acc.tcp.write(
                &acc.core,
                &Frame::Hangup {
                    pseudo: pseudo.clone(),
                }
                .to_bytes(),
            );
            acc.core.emit(Event::CallFailed {
                peer: pseudo,
                code: Some(e.code),
                text: e.message,
            });
            return;
        }
    };
    drop(calls);
    // A call the closed queue refused hangs up here, outside the lock its
    // thread needs.
    drop(refused);
}

fn handle(acc: &Arc<Accounts>, frame: Frame) -> std::result::Result<(), String> {
    let core = &acc.core;
    match frame {
        Frame::HelloAck | Frame::HelloAckWith { .. } => {}
        Frame::LoginOk { ref pseudo, id } => {
            // Before the waiter wakes, and before the offline items that
            // follow 111, so both see the client logged in.
            *acc.account_id.lock() = Some(id);
            core.login.set(pseudo);
            log::info!("logged in as {pseudo} (account {id})");
            acc.answer(frame);
        }
        Frame::Requests { ref pseudos } => {
            *acc.requests.lock() = pseudos.iter().cloned().collect();
            acc.answer(frame);
        }
        f @ (Frame::Registered
        | Frame::EmailTaken
        | Frame::PseudoTaken
        | Frame::RegisterRefused { .. }
        | Frame::LoginFailed
        | Frame::FriendRequestSent { .. }
        | Frame::NoSuchUser { .. }
        | Frame::AlreadyFriends { .. }
        | Frame::MessageStored
        | Frame::MessageFailed
        | Frame::HistoryPage { .. }
        | Frame::Friends { .. }) => {
            let code = f.code();
            if !acc.answer(f) {
                log::debug!("answer {code} that no request waits for, ignored");
            }
        }
        Frame::Message { pseudo, text } => {
            let to = core.login.name().unwrap_or_default();
            core.emit(Event::PrivateMessage {
                from: pseudo,
                to,
                text,
                stamp: None,
            });
        }
        Frame::StampedMessage {
            pseudo,
            text,
            stamp,
        } => {
            let to = core.login.name().unwrap_or_default();
            core.emit(Event::PrivateMessage {
                from: pseudo,
                to,
                text,
                stamp: Some(stamp),
            });
        }
        Frame::FriendRequested { pseudo } => {
            acc.requests.lock().insert(pseudo.clone());
            core.emit(Event::FriendRequest { from: pseudo });
        }
        Frame::FriendAccepted { pseudo } => {
            // Asking someone who had asked us befriends at once.
            acc.requests.lock().remove(&pseudo);
            core.emit(Event::FriendAccepted { peer: pseudo });
        }
        Frame::FriendRefused { pseudo } => core.emit(Event::FriendRefused { peer: pseudo }),
        Frame::IncomingCall { pseudo, addr, port } => {
            acc.calls.lock().insert(
                pseudo.clone(),
                Stage::Incoming {
                    addr: addr.clone(),
                    port,
                },
            );
            core.emit(Event::CallIncoming {
                peer: pseudo,
                addr,
                port,
            });
        }
        Frame::CallAccepted { pseudo, addr, port } => call_accepted(acc, pseudo, addr, port),
        Frame::CallFailed { pseudo } => {
            let mut calls = acc.calls.lock();
            if matches!(calls.get(&pseudo), Some(Stage::Outgoing { .. })) {
                calls.remove(&pseudo);
            }
            drop(calls);
            core.emit(Event::CallFailed {
                peer: pseudo,
                code: None,
                text: "the call cannot happen: offline, not a friend, or declined".into(),
            });
        }
        Frame::HungUp { pseudo } => {
            let stage = acc.calls.lock().remove(&pseudo);
            if let Some(Stage::Active {
                call: Some((_, link)),
            }) = stage
            {
                link.end(Error::new(ErrorKind::Closed, format!("{pseudo} hung up")));
            }
            core.emit(Event::CallEnded {
                peer: pseudo,
                code: ErrorKind::Closed,
                text: "the peer hung up".into(),
            });
        }
        other => {
            return Err(format!(
                "the server sent instruction {} that only clients send",
                other.code()
            ))
        }
    }
    Ok(())
}

fn check_field(what: &str, value: &str, max: usize) -> Result<()> {
    crate::core::check_field(DIALECT, what, value, max)
}

fn check_len(what: &str, value: &str, max: usize) -> Result<()> {
    crate::core::check_len(DIALECT, what, value, max)
}

fn check_pseudo(what: &str, pseudo: &str) -> Result<()> {
    check_field(what, pseudo, MAX_PSEUDO)
}

impl Connection<Accounts> {
    /// Connect to an accounts server: HELLO is sent and its answer awaited
    /// (at most 5 s) before this returns. The seed's plain HELLO: no
    /// feature is asked for (see [`Self::connect_with_features`]).
    pub fn connect(host: &str, port: u16) -> Result<Self> {
        Self::connect_with_features(host, port, 0)
    }

    /// Connect, asking the server for chinwag's extensions `features`
    /// (bits of [`feature`]; [`feature::STAMPS`]: messages and history
    /// carry the time they were stored). [`Self::features`] says what was
    /// granted. A server older than the features hangs up on such a HELLO;
    /// the library then connects once more with a plain one (nothing
    /// granted).
    pub fn connect_with_features(host: &str, port: u16, features: u32) -> Result<Self> {
        if features & !feature::ALL != 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "unknown accounts feature bits {:#x}",
                    features & !feature::ALL
                ),
            ));
        }
        let mut tcp = Tcp::connect(host, port)?;
        let core = Core::new(DEFAULT_CAPACITY);
        let (features, decoder) = match handshake(&tcp, &core, features) {
            Ok(done) => done,
            Err(Some(e)) => return Err(e),
            Err(None) => {
                log::info!("the server hung up on HELLO with features; trying a plain one");
                tcp = Tcp::connect(host, port)?;
                handshake(&tcp, &core, 0).map_err(|e| {
                    e.unwrap_or_else(|| Error::new(ErrorKind::ConnectFailed, "hung up"))
                })?
            }
        };
        let acc = Arc::new(Accounts {
            core,
            tcp,
            account_id: Mutex::new(None),
            replies: Mutex::new(Replies::default()),
            arrived: Condvar::new(),
            requests: Mutex::new(HashSet::new()),
            calls: Mutex::new(HashMap::new()),
            features,
            voice_ports: Mutex::new(VoicePorts::default()),
        });
        tcp::start_reader(&acc, acc.tcp.socket(), decoder)?;
        log::info!("connected to {} (accounts)", acc.tcp.server());
        Ok(Connection::new(acc))
    }

    /// The feature bits the server granted at HELLO (`feature::*`).
    pub fn features(&self) -> u32 {
        self.proto().features
    }

    /// Send `frame` and wait for the answer of kind `want`.
    fn request(&self, frame: &Frame, want: Want, timeout: Option<Duration>) -> Result<Frame> {
        let acc = &**self.proto();
        let bytes = frame.to_bytes();
        let ticket = {
            let _w = acc.tcp.lock_writes();
            let ticket = {
                let mut r = acc.replies.lock();
                if r.dead {
                    return Err(Error::closed());
                }
                if want.exclusive() && r.queue.iter().any(|w| w.want.same_kind(&want)) {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!("another {want:?} on this client waits for its answer"),
                    ));
                }
                let ticket = r.next;
                r.next += 1;
                r.queue.push_back(Waiter {
                    ticket,
                    want,
                    abandoned: false,
                });
                ticket
            };
            if let Err(e) = acc.tcp.write_locked(&acc.core, &bytes) {
                acc.replies.lock().queue.retain(|w| w.ticket != ticket);
                return Err(e);
            }
            ticket
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut r = acc.replies.lock();
        loop {
            if let Some(f) = r.answers.remove(&ticket) {
                return Ok(f);
            }
            if r.dead {
                r.queue.retain(|w| w.ticket != ticket);
                return Err(Error::closed());
            }
            if wait_until(&acc.arrived, &mut r, deadline) {
                if let Some(f) = r.answers.remove(&ticket) {
                    return Ok(f);
                }
                if let Some(w) = r.queue.iter_mut().find(|w| w.ticket == ticket) {
                    w.abandoned = true;
                }
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "no answer from the server before the time limit",
                ));
            }
        }
    }

    /// Write a frame that has no answer.
    fn post(&self, frame: &Frame) -> Result<()> {
        let acc = self.proto();
        acc.tcp.write(&acc.core, &frame.to_bytes())
    }

    fn unexpected(f: Frame) -> Error {
        Error::new(
            ErrorKind::Protocol,
            format!("unexpected answer {}", f.code()),
        )
    }

    /// The logged-in pseudo, for calls that need a session.
    fn member(&self) -> Result<String> {
        self.core().login.me()
    }

    /// create an account. `Ok` once the server committed it;
    /// `EmailTaken`, `PseudoTaken`, or `RegisterRefused` with
    /// the server's reason. Allowed before or after logging in.
    pub fn register(
        &self,
        email: &str,
        pseudo: &str,
        password: &str,
        timeout: Option<Duration>,
    ) -> Result<()> {
        check_field("email", email, MAX_EMAIL)?;
        check_pseudo("pseudo", pseudo)?;
        check_field("password", password, MAX_PASSWORD)?;
        let f = Frame::Register {
            email: email.into(),
            pseudo: pseudo.into(),
            password: password.into(),
        };
        match self.request(&f, Want::Register, timeout)? {
            Frame::Registered => Ok(()),
            Frame::EmailTaken => Err(Error::new(
                ErrorKind::EmailTaken,
                format!("the email {email:?} is taken or is not an email address"),
            )),
            Frame::PseudoTaken => Err(Error::new(
                ErrorKind::PseudoTaken,
                format!("the pseudo {pseudo:?} is taken, online now, or invalid"),
            )),
            Frame::RegisterRefused { reason } => Err(Error::new(
                ErrorKind::RegisterRefused,
                format!("registration refused: {reason}"),
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Log in with email and password. `Ok` gives the pseudo and
    /// account id (also kept: `login_name`, `account_id`); every failure is
    /// `LoginRefused`, as the server does not say why. On `Timeout`
    /// a late acceptance still logs the client in.
    pub fn login_password(
        &self,
        email: &str,
        password: &str,
        timeout: Option<Duration>,
    ) -> Result<(String, u64)> {
        check_field("email", email, MAX_EMAIL)?;
        check_field("password", password, MAX_PASSWORD)?;
        self.core().login.check_free()?;
        let f = Frame::Login {
            email: email.into(),
            password: password.into(),
        };
        match self.request(&f, Want::Login, timeout)? {
            Frame::LoginOk { pseudo, id } => Ok((pseudo, id)),
            Frame::LoginFailed => Err(Error::new(
                ErrorKind::LoginRefused,
                "login failed: wrong email or password, already online, or too many failures",
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// the account id given at login.
    pub fn account_id(&self) -> Result<u64> {
        self.member()?;
        self.proto()
            .account_id
            .lock()
            .ok_or_else(Error::not_logged_in)
    }

    /// ask `pseudo` to be a friend. `Ok` once recorded (the
    /// answer comes later as an event); `NoSuchUser` (also for
    /// yourself); `AlreadyFriends`.
    pub fn request_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        let f = Frame::FriendRequest {
            pseudo: pseudo.into(),
        };
        match self.request(&f, Want::Friend(pseudo.into()), timeout)? {
            Frame::FriendRequestSent { .. } => Ok(()),
            Frame::NoSuchUser { .. } => Err(Error::new(
                ErrorKind::NoSuchUser,
                format!("no account is called {pseudo:?} (or it is yours)"),
            )),
            Frame::AlreadyFriends { .. } => Err(Error::new(
                ErrorKind::AlreadyFriends,
                format!("already friends with {pseudo:?}"),
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// accept `pseudo`'s pending friend request.
    pub fn accept_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        self.answer_friend(pseudo, true, timeout)
    }

    /// refuse `pseudo`'s pending friend request.
    pub fn refuse_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        self.answer_friend(pseudo, false, timeout)
    }

    /// The server answers 131/132 with nothing and ignores a request that
    /// is not pending, so the library checks first: against what it has
    /// seen, and else against the server's list (one round trip).
    fn answer_friend(&self, pseudo: &str, accept: bool, timeout: Option<Duration>) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        let take = || self.proto().requests.lock().remove(pseudo);
        if !take() {
            self.list_requests(timeout)?;
            if !take() {
                return Err(Error::new(
                    ErrorKind::NoSuchRequest,
                    format!("{pseudo:?} has no pending friend request to you"),
                ));
            }
        }
        let pseudo = pseudo.to_owned();
        self.post(&if accept {
            Frame::AcceptFriend { pseudo }
        } else {
            Frame::RefuseFriend { pseudo }
        })
    }

    /// the friends of this account, sorted.
    pub fn list_friends(&self, timeout: Option<Duration>) -> Result<Vec<String>> {
        self.member()?;
        match self.request(&Frame::ListFriends, Want::Friends, timeout)? {
            Frame::Friends { pseudos } => Ok(pseudos),
            other => Err(Self::unexpected(other)),
        }
    }

    /// who asked to be friends and waits for an answer, oldest first.
    pub fn list_requests(&self, timeout: Option<Duration>) -> Result<Vec<String>> {
        self.member()?;
        match self.request(&Frame::ListRequests, Want::Requests, timeout)? {
            Frame::Requests { pseudos } => Ok(pseudos),
            other => Err(Self::unexpected(other)),
        }
    }

    /// send `text` to the friend `pseudo`. `Ok` once the server
    /// stored it (152); `MessageFailed` when it did not (153). On
    /// `Timeout` the message may still have been stored.
    pub fn send_to_friend(
        &self,
        pseudo: &str,
        text: &str,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        check_len("message", text, MAX_MESSAGE)?;
        let f = Frame::SendMessage {
            pseudo: pseudo.into(),
            text: text.into(),
        };
        match self.request(&f, Want::Message, timeout)? {
            Frame::MessageStored => Ok(()),
            Frame::MessageFailed => Err(Error::new(
                ErrorKind::MessageFailed,
                format!(
                    "the server did not store the message to {pseudo:?} \
                     (not a friend, no such user, or storage failure)"
                ),
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// one page of the conversation with `pseudo`, oldest first:
    /// the newest page for `before` = 0, else the messages with an id
    /// below `before` (pass the first id of the page you have).
    pub fn history(
        &self,
        pseudo: &str,
        before: u64,
        timeout: Option<Duration>,
    ) -> Result<Vec<HistoryEntry>> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        let f = Frame::History {
            pseudo: pseudo.into(),
            before,
        };
        match self.request(&f, Want::History(pseudo.into()), timeout)? {
            Frame::HistoryPage { entries, .. } => Ok(entries),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Ring the friend `pseudo`, who can reach this client's voice socket
    /// at `addr`:`port` (`addr` empty: the address the server sees). The
    /// application carries the voice (its own UDP socket); for a call the
    /// library carries, see [`Self::place_voice_call`]. The outcome arrives
    /// as CallAccepted or CallFailed.
    pub fn place_call(&self, pseudo: &str, addr: &str, port: u16) -> Result<()> {
        if port == 0 {
            return Err(Error::new(ErrorKind::InvalidArgument, "port 0"));
        }
        self.ring(pseudo, addr, port, None)
    }

    /// Ring the friend `pseudo` for a call the library carries: it binds a
    /// UDP socket (see [`Self::set_voice_ports`]) and names it, with `addr`
    /// (empty: the address the server sees), in the call request. When the
    /// friend answers, CallAccepted is followed by CallEstablished with
    /// the [`Call`]; else CallFailed.
    pub fn place_voice_call(&self, pseudo: &str, addr: &str) -> Result<()> {
        let (sock, port) = self.proto().bind_voice()?;
        self.ring(pseudo, addr, port, Some(sock))
    }

    fn ring(&self, pseudo: &str, addr: &str, port: u16, media: Option<UdpSocket>) -> Result<()> {
        let me = self.member()?;
        check_pseudo("pseudo", pseudo)?;
        check_len("address", addr, MAX_ADDR)?;
        if me == pseudo {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "cannot call yourself",
            ));
        }
        let acc = self.proto();
        let token = acc.core.next_token();
        {
            let mut calls = acc.calls.lock();
            if calls.contains_key(pseudo) {
                return Err(Error::new(
                    ErrorKind::CallInProgress,
                    format!("a call with {pseudo:?} is already ringing or going on"),
                ));
            }
            calls.insert(pseudo.to_owned(), Stage::Outgoing { media, token });
        }
        let sent = self.post(&Frame::Call {
            pseudo: pseudo.into(),
            addr: addr.into(),
            port,
        });
        if sent.is_err() {
            acc.calls.lock().remove(pseudo);
        }
        sent
    }

    /// answer `pseudo`'s ringing call; the caller will send its
    /// voice to `addr`:`port` (`addr` empty: the address the server sees).
    /// The application carries the voice; see [`Self::answer_voice_call`].
    pub fn answer_call(&self, pseudo: &str, addr: &str, port: u16) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        check_len("address", addr, MAX_ADDR)?;
        if port == 0 {
            return Err(Error::new(ErrorKind::InvalidArgument, "port 0"));
        }
        self.ringing_to_us(pseudo, Some(Stage::Active { call: None }))?;
        self.post(&Frame::AnswerCall {
            pseudo: pseudo.into(),
            addr: addr.into(),
            port,
        })
    }

    /// Answer `pseudo`'s ringing call with a call the library carries: it
    /// binds a UDP socket (see [`Self::set_voice_ports`]), starts the call
    /// towards the caller's voice end point, and names its socket, with
    /// `addr` (empty: the address the server sees), in the answer.
    /// CallEstablished with the [`Call`] follows. `ConnectFailed` when the
    /// caller's end point is not an IP address and port (the call still
    /// rings: refuse it).
    pub fn answer_voice_call(&self, pseudo: &str, addr: &str) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        check_len("address", addr, MAX_ADDR)?;
        let acc = self.proto();
        let (sock, port) = acc.bind_voice()?;
        let token = acc.core.next_token();
        let call = {
            let mut calls = acc.calls.lock();
            let Some(Stage::Incoming {
                addr: peer_addr,
                port: peer_port,
            }) = calls.get(pseudo)
            else {
                return Err(Error::new(
                    ErrorKind::NoSuchCall,
                    format!("no call from {pseudo:?} is ringing"),
                ));
            };
            let (peer_addr, peer_port) = (peer_addr.clone(), *peer_port);
            acc.start_call(&mut calls, pseudo, token, sock, &peer_addr, peer_port)?
        };
        let sent = self.post(&Frame::AnswerCall {
            pseudo: pseudo.into(),
            addr: addr.into(),
            port,
        });
        if let Err(e) = sent {
            acc.calls.lock().remove(pseudo);
            return Err(e);
        }
        // Queued after the answer went out; dropped (hung up) here if the
        // client closed meanwhile.
        drop(acc.core.push(Event::CallEstablished {
            peer: pseudo.to_owned(),
            call: Some(call),
        }));
        Ok(())
    }

    /// Where calls the library carries listen (`local`; 0: any free UDP
    /// port) and the port their signalling names (`advertised`; 0: the
    /// local one).
    pub fn set_voice_ports(&self, ports: VoicePorts) {
        *self.proto().voice_ports.lock() = ports;
    }

    /// Decline `pseudo`'s ringing call; the caller gets CallFailed.
    pub fn refuse_call(&self, pseudo: &str) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        self.ringing_to_us(pseudo, None)?;
        self.post(&Frame::DeclineCall {
            pseudo: pseudo.into(),
        })
    }

    /// Move an incoming call to `next` (None: forget it), or fail.
    fn ringing_to_us(&self, pseudo: &str, next: Option<Stage>) -> Result<()> {
        let mut calls = self.proto().calls.lock();
        if !matches!(calls.get(pseudo), Some(Stage::Incoming { .. })) {
            return Err(Error::new(
                ErrorKind::NoSuchCall,
                format!("no call from {pseudo:?} is ringing"),
            ));
        }
        match next {
            Some(c) => calls.insert(pseudo.to_owned(), c),
            None => calls.remove(pseudo),
        };
        Ok(())
    }

    /// End the call with `pseudo`, cancel our ringing call to it, or (like
    /// refusing) drop its ringing call; it gets CallEnded.
    pub fn hangup_call(&self, pseudo: &str) -> Result<()> {
        self.member()?;
        check_pseudo("pseudo", pseudo)?;
        let stage = self.proto().calls.lock().remove(pseudo);
        match stage {
            None => {
                return Err(Error::new(
                    ErrorKind::NoSuchCall,
                    format!("no call with {pseudo:?}"),
                ))
            }
            Some(Stage::Active {
                call: Some((_, link)),
            }) => link.hangup(),
            Some(_) => {}
        }
        self.post(&Frame::Hangup {
            pseudo: pseudo.into(),
        })
    }
}
