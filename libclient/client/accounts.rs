//! The client side of the accounts dialect (seed 000): the HELLO handshake,
//! the reader thread, the requests that wait for the server's verdict, and
//! the local call/friend-request state. Bytes go through
//! `chinwag_proto::accounts` only, and no lock here is held across a wait
//! for the server except `write_lock`, which only ever covers one write.
//!
//! Replies carry no request id. The server answers the requests that need
//! an answer in the order it got them, so each kind of answer has a FIFO of
//! waiters; the waiter is queued under `write_lock`, in the same critical
//! section as the write, so queue order is wire order. A waiter that gave
//! up stays queued (abandoned) until its late answer arrives, so that
//! answer is never taken for the next request's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::{
    Decoder, Frame, HistoryEntry, MAX_ADDR, MAX_EMAIL, MAX_MESSAGE, MAX_PASSWORD, MAX_PSEUDO,
};
use parking_lot::{Condvar, Mutex};

use super::{closed_error, Client, Error, Event, Result, Shared, CONNECT_TIMEOUT};
use crate::ffi::codes::{cw_dialect, cw_result};

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

/// Where a call with one peer stands, as far as this client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// We rang them (140 sent).
    Outgoing,
    /// They ring us (143 received).
    Incoming,
    /// Answered either way.
    Active,
}

/// Accounts state shared by the application's threads and the reader.
#[derive(Default)]
pub(super) struct State {
    replies: Mutex<Replies>,
    arrived: Condvar,
    /// Pseudos whose friend request to us is pending, as last seen (130
    /// adds, 181 replaces, answering or 124 removes).
    requests: Mutex<HashSet<String>>,
    calls: Mutex<HashMap<String, Call>>,
}

impl State {
    pub(super) fn connection_ended(&self) {
        self.replies.lock().dead = true;
        self.arrived.notify_all();
    }

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

/// Send HELLO and wait for its answer on the fresh socket, before the
/// reader exists. Returns the decoder, holding anything read past 201.
pub(super) fn handshake(sock: &TcpStream) -> Result<Decoder> {
    let io_err = |what: &str, e: io::Error| {
        Error::new(
            cw_result::CW_CONNECT_FAILED,
            format!("accounts handshake: {what}: {e}"),
        )
    };
    (&*sock)
        .write_all(&Frame::Hello.to_bytes())
        .map_err(|e| io_err("sending HELLO", e))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; 512];
    let result = loop {
        match decoder.next_frame() {
            Ok(Some(Frame::HelloAck)) => break Ok(()),
            Ok(Some(other)) => {
                break Err(Error::new(
                    cw_result::CW_PROTOCOL,
                    format!("accounts handshake: expected 201, the server sent {other:?}"),
                ))
            }
            Ok(None) => {}
            Err(e) => {
                break Err(Error::new(
                    cw_result::CW_PROTOCOL,
                    format!("accounts handshake: malformed frame from server: {e}"),
                ))
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(Error::new(
                cw_result::CW_CONNECT_FAILED,
                "accounts handshake: no answer to HELLO in time",
            ));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| io_err("socket", e))?;
        match (&*sock).read(&mut chunk) {
            Ok(0) => {
                break Err(Error::new(
                    cw_result::CW_CONNECT_FAILED,
                    "accounts handshake: the server closed the connection",
                ))
            }
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(io_err("reading", e)),
        }
    };
    sock.set_read_timeout(None)
        .map_err(|e| io_err("socket", e))?;
    result.map(|()| decoder)
}

pub(super) fn read_loop(shared: Arc<Shared>, sock: TcpStream, decoder: Decoder) {
    super::read_frames(shared, sock, decoder, |s, frame| handle(s, frame));
}

fn handle(shared: &Shared, frame: Frame) -> std::result::Result<(), String> {
    let acc = &shared.accounts;
    match frame {
        Frame::HelloAck => {}
        Frame::LoginOk { ref pseudo, id } => {
            // Before the waiter wakes, and before the offline items that
            // follow 111, so both see the client logged in.
            let mut s = shared.session.lock();
            s.login = Some(pseudo.clone());
            s.account_id = Some(id);
            drop(s);
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
            let to = shared.session.lock().login.clone().unwrap_or_default();
            shared.emit(Event::PrivateMessage {
                from: pseudo,
                to,
                text,
            });
        }
        Frame::FriendRequested { pseudo } => {
            acc.requests.lock().insert(pseudo.clone());
            shared.emit(Event::FriendRequest { from: pseudo });
        }
        Frame::FriendAccepted { pseudo } => {
            // Asking someone who had asked us befriends at once.
            acc.requests.lock().remove(&pseudo);
            shared.emit(Event::FriendAccepted { peer: pseudo });
        }
        Frame::FriendRefused { pseudo } => shared.emit(Event::FriendRefused { peer: pseudo }),
        Frame::IncomingCall { pseudo, addr, port } => {
            acc.calls.lock().insert(pseudo.clone(), Call::Incoming);
            shared.emit(Event::CallIncoming {
                peer: pseudo,
                addr,
                port,
            });
        }
        Frame::CallAccepted { pseudo, addr, port } => {
            if let Some(c) = acc.calls.lock().get_mut(&pseudo) {
                *c = Call::Active;
            }
            shared.emit(Event::CallAccepted {
                peer: pseudo,
                addr,
                port,
            });
        }
        Frame::CallFailed { pseudo } => {
            let mut calls = acc.calls.lock();
            if calls.get(&pseudo) == Some(&Call::Outgoing) {
                calls.remove(&pseudo);
            }
            drop(calls);
            shared.emit(Event::CallFailed {
                peer: pseudo,
                code: cw_result::CW_OK,
                text: "the call cannot happen: offline, not a friend, or declined".into(),
            });
        }
        Frame::HungUp { pseudo } => {
            acc.calls.lock().remove(&pseudo);
            shared.emit(Event::CallEnded {
                peer: pseudo,
                code: cw_result::CW_CLOSED,
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
    if value.is_empty() {
        return Err(Error::new(
            cw_result::CW_INVALID_ARGUMENT,
            format!("{what} is empty"),
        ));
    }
    check_len(what, value, max)
}

fn check_len(what: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::new(
            cw_result::CW_TOO_LONG,
            format!(
                "{what} is {} bytes; the accounts dialect allows at most {max}",
                value.len()
            ),
        ));
    }
    Ok(())
}

impl Client {
    /// Send `frame` and wait for the answer of kind `want`.
    fn request(&self, frame: &Frame, want: Want, timeout: Option<Duration>) -> Result<Frame> {
        let shared = &self.shared;
        let acc = &shared.accounts;
        let bytes = frame.to_bytes();
        let ticket = {
            let _w = shared.write_lock.lock();
            let ticket = {
                let mut r = acc.replies.lock();
                if r.dead {
                    return Err(closed_error());
                }
                if want.exclusive() && r.queue.iter().any(|w| w.want.same_kind(&want)) {
                    return Err(Error::new(
                        cw_result::CW_BUSY,
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
            if let Err(e) = shared.write_locked(&bytes) {
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
                return Err(closed_error());
            }
            match deadline {
                None => acc.arrived.wait(&mut r),
                Some(d) => {
                    if Instant::now() >= d || acc.arrived.wait_until(&mut r, d).timed_out() {
                        if let Some(f) = r.answers.remove(&ticket) {
                            return Ok(f);
                        }
                        if let Some(w) = r.queue.iter_mut().find(|w| w.ticket == ticket) {
                            w.abandoned = true;
                        }
                        return Err(Error::new(
                            cw_result::CW_TIMEOUT,
                            "no answer from the server before the time limit",
                        ));
                    }
                }
            }
        }
    }

    /// Write a frame that has no answer.
    fn post(&self, frame: &Frame) -> Result<()> {
        let bytes = frame.to_bytes();
        let _w = self.shared.write_lock.lock();
        self.shared.write_locked(&bytes)
    }

    fn unexpected(f: Frame) -> Error {
        Error::new(
            cw_result::CW_PROTOCOL,
            format!("unexpected answer {}", f.code()),
        )
    }

    /// Accounts: the logged-in pseudo, for calls that need a session.
    fn member(&self, what: &str) -> Result<String> {
        self.accounts_only(what)?;
        self.me()
    }

    fn check_pseudo(&self, what: &str, pseudo: &str) -> Result<()> {
        check_field(what, pseudo, MAX_PSEUDO)
    }

    /// Accounts: create an account. `Ok` once the server committed it;
    /// `CW_EMAIL_TAKEN`, `CW_PSEUDO_TAKEN`, or `CW_REGISTER_REFUSED` with
    /// the server's reason. Allowed before or after logging in.
    pub fn register(
        &self,
        email: &str,
        pseudo: &str,
        password: &str,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.accounts_only("registration")?;
        check_field("email", email, MAX_EMAIL)?;
        self.check_pseudo("pseudo", pseudo)?;
        check_field("password", password, MAX_PASSWORD)?;
        let f = Frame::Register {
            email: email.into(),
            pseudo: pseudo.into(),
            password: password.into(),
        };
        match self.request(&f, Want::Register, timeout)? {
            Frame::Registered => Ok(()),
            Frame::EmailTaken => Err(Error::new(
                cw_result::CW_EMAIL_TAKEN,
                format!("the email {email:?} is taken or is not an email address"),
            )),
            Frame::PseudoTaken => Err(Error::new(
                cw_result::CW_PSEUDO_TAKEN,
                format!("the pseudo {pseudo:?} is taken, online now, or invalid"),
            )),
            Frame::RegisterRefused { reason } => Err(Error::new(
                cw_result::CW_REGISTER_REFUSED,
                format!("registration refused: {reason}"),
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: log in with email and password. `Ok` gives the pseudo and
    /// account id (also kept: `login_name`, `account_id`); every failure is
    /// `CW_LOGIN_REFUSED`, as the server does not say why. On `CW_TIMEOUT`
    /// a late acceptance still logs the client in.
    pub fn login_password(
        &self,
        email: &str,
        password: &str,
        timeout: Option<Duration>,
    ) -> Result<(String, u64)> {
        self.accounts_only("a password login")?;
        check_field("email", email, MAX_EMAIL)?;
        check_field("password", password, MAX_PASSWORD)?;
        {
            let s = self.shared.session.lock();
            if s.dead {
                return Err(closed_error());
            }
            if s.login.is_some() {
                return Err(Error::new(
                    cw_result::CW_ALREADY_LOGGED_IN,
                    "already logged in",
                ));
            }
        }
        let f = Frame::Login {
            email: email.into(),
            password: password.into(),
        };
        match self.request(&f, Want::Login, timeout)? {
            Frame::LoginOk { pseudo, id } => Ok((pseudo, id)),
            Frame::LoginFailed => Err(Error::new(
                cw_result::CW_LOGIN_REFUSED,
                "login failed: wrong email or password, already online, or too many failures",
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: the account id given at login.
    pub fn account_id(&self) -> Result<u64> {
        self.accounts_only("an account id")?;
        self.me()?;
        self.shared
            .session
            .lock()
            .account_id
            .ok_or_else(|| Error::new(cw_result::CW_NOT_LOGGED_IN, "log in first"))
    }

    /// Accounts: ask `pseudo` to be a friend. `Ok` once recorded (the
    /// answer comes later as an event); `CW_NO_SUCH_USER` (also for
    /// yourself); `CW_ALREADY_FRIENDS`.
    pub fn request_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        self.member("a friend request")?;
        self.check_pseudo("pseudo", pseudo)?;
        let f = Frame::FriendRequest {
            pseudo: pseudo.into(),
        };
        match self.request(&f, Want::Friend(pseudo.into()), timeout)? {
            Frame::FriendRequestSent { .. } => Ok(()),
            Frame::NoSuchUser { .. } => Err(Error::new(
                cw_result::CW_NO_SUCH_USER,
                format!("no account is called {pseudo:?} (or it is yours)"),
            )),
            Frame::AlreadyFriends { .. } => Err(Error::new(
                cw_result::CW_ALREADY_FRIENDS,
                format!("already friends with {pseudo:?}"),
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: accept `pseudo`'s pending friend request.
    pub fn accept_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        self.answer_friend(pseudo, true, timeout)
    }

    /// Accounts: refuse `pseudo`'s pending friend request.
    pub fn refuse_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        self.answer_friend(pseudo, false, timeout)
    }

    /// The server answers 131/132 with nothing and ignores a request that
    /// is not pending, so the library checks first: against what it has
    /// seen, and else against the server's list (one round trip).
    fn answer_friend(&self, pseudo: &str, accept: bool, timeout: Option<Duration>) -> Result<()> {
        self.member("a friend request")?;
        self.check_pseudo("pseudo", pseudo)?;
        let take = || self.shared.accounts.requests.lock().remove(pseudo);
        if !take() {
            self.list_requests(timeout)?;
            if !take() {
                return Err(Error::new(
                    cw_result::CW_NO_SUCH_REQUEST,
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

    /// Accounts: the friends of this account, sorted.
    pub fn list_friends(&self, timeout: Option<Duration>) -> Result<Vec<String>> {
        self.member("a friend list")?;
        match self.request(&Frame::ListFriends, Want::Friends, timeout)? {
            Frame::Friends { pseudos } => Ok(pseudos),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: who asked to be friends and waits for an answer, oldest first.
    pub fn list_requests(&self, timeout: Option<Duration>) -> Result<Vec<String>> {
        self.member("a friend-request list")?;
        match self.request(&Frame::ListRequests, Want::Requests, timeout)? {
            Frame::Requests { pseudos } => Ok(pseudos),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: send `text` to the friend `pseudo`. `Ok` once the server
    /// stored it (152); `CW_MESSAGE_FAILED` when it did not (153). On
    /// `CW_TIMEOUT` the message may still have been stored.
    pub fn send_to_friend(
        &self,
        pseudo: &str,
        text: &str,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.member("a stored message")?;
        self.check_pseudo("pseudo", pseudo)?;
        check_len("message", text, MAX_MESSAGE)?;
        let f = Frame::SendMessage {
            pseudo: pseudo.into(),
            text: text.into(),
        };
        match self.request(&f, Want::Message, timeout)? {
            Frame::MessageStored => Ok(()),
            Frame::MessageFailed => Err(Error::new(
                cw_result::CW_MESSAGE_FAILED,
                format!(
                    "the server did not store the message to {pseudo:?} \
                     (not a friend, no such user, or storage failure)"
                ),
            )),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: one page of the conversation with `pseudo`, oldest first:
    /// the newest page for `before` = 0, else the messages with an id
    /// below `before` (pass the first id of the page you have).
    pub fn history(
        &self,
        pseudo: &str,
        before: u64,
        timeout: Option<Duration>,
    ) -> Result<Vec<HistoryEntry>> {
        self.member("history")?;
        self.check_pseudo("pseudo", pseudo)?;
        let f = Frame::History {
            pseudo: pseudo.into(),
            before,
        };
        match self.request(&f, Want::History(pseudo.into()), timeout)? {
            Frame::HistoryPage { entries, .. } => Ok(entries),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Accounts: ring the friend `pseudo`, who can reach this client's
    /// voice socket at `addr`:`port` (`addr` empty: the address the server
    /// sees). The outcome arrives as CALL_ACCEPTED or CALL_FAILED.
    ///
    /// Babel: ring `pseudo` peer to peer; the library listens on
    /// `addr`:`port` (see `babel_place_call`).
    pub fn place_call(&self, pseudo: &str, addr: &str, port: u16) -> Result<()> {
        if self.dialect() == cw_dialect::CW_DIALECT_BABEL {
            return self.babel_place_call(pseudo, addr, port).map(drop);
        }
        let me = self.member("a call")?;
        self.check_pseudo("pseudo", pseudo)?;
        check_len("address", addr, MAX_ADDR)?;
        if port == 0 {
            return Err(Error::new(cw_result::CW_INVALID_ARGUMENT, "port 0"));
        }
        if me == pseudo {
            return Err(Error::new(
                cw_result::CW_INVALID_ARGUMENT,
                "cannot call yourself",
            ));
        }
        {
            let mut calls = self.shared.accounts.calls.lock();
            if calls.contains_key(pseudo) {
                return Err(Error::new(
                    cw_result::CW_CALL_IN_PROGRESS,
                    format!("a call with {pseudo:?} is already ringing or going on"),
                ));
            }
            calls.insert(pseudo.to_owned(), Call::Outgoing);
        }
        let sent = self.post(&Frame::Call {
            pseudo: pseudo.into(),
            addr: addr.into(),
            port,
        });
        if sent.is_err() {
            self.shared.accounts.calls.lock().remove(pseudo);
        }
        sent
    }

    /// Accounts: answer `pseudo`'s ringing call; the caller will send its
    /// voice to `addr`:`port` (`addr` empty: the address the server sees).
    pub fn answer_call(&self, pseudo: &str, addr: &str, port: u16) -> Result<()> {
        self.member("a call")?;
        self.check_pseudo("pseudo", pseudo)?;
        check_len("address", addr, MAX_ADDR)?;
        if port == 0 {
            return Err(Error::new(cw_result::CW_INVALID_ARGUMENT, "port 0"));
        }
        self.ringing_to_us(pseudo, Some(Call::Active))?;
        self.post(&Frame::AnswerCall {
            pseudo: pseudo.into(),
            addr: addr.into(),
            port,
        })
    }

    /// Accounts: decline `pseudo`'s ringing call; the caller gets CALL_FAILED.
    /// Babel: refuse it (CallRefused).
    pub fn refuse_call(&self, pseudo: &str) -> Result<()> {
        if self.dialect() == cw_dialect::CW_DIALECT_BABEL {
            return self.babel_refuse_call(pseudo);
        }
        self.member("a call")?;
        self.check_pseudo("pseudo", pseudo)?;
        self.ringing_to_us(pseudo, None)?;
        self.post(&Frame::DeclineCall {
            pseudo: pseudo.into(),
        })
    }

    /// Move an incoming call to `next` (None: forget it), or fail.
    fn ringing_to_us(&self, pseudo: &str, next: Option<Call>) -> Result<()> {
        let mut calls = self.shared.accounts.calls.lock();
        if calls.get(pseudo) != Some(&Call::Incoming) {
            return Err(Error::new(
                cw_result::CW_NO_SUCH_CALL,
                format!("no call from {pseudo:?} is ringing"),
            ));
        }
        match next {
            Some(c) => calls.insert(pseudo.to_owned(), c),
            None => calls.remove(pseudo),
        };
        Ok(())
    }

    /// Accounts: end the call with `pseudo`, cancel our ringing call to
    /// it, or (like refusing) drop its ringing call; it gets CALL_ENDED.
    /// Babel: close the call's connection, or stop it ringing or dialing.
    pub fn hangup_call(&self, pseudo: &str) -> Result<()> {
        if self.dialect() == cw_dialect::CW_DIALECT_BABEL {
            return self.babel_hangup_call(pseudo);
        }
        self.member("a call")?;
        self.check_pseudo("pseudo", pseudo)?;
        if self.shared.accounts.calls.lock().remove(pseudo).is_none() {
            return Err(Error::new(
                cw_result::CW_NO_SUCH_CALL,
                format!("no call with {pseudo:?}"),
            ));
        }
        self.post(&Frame::Hangup {
            pseudo: pseudo.into(),
        })
    }
}
