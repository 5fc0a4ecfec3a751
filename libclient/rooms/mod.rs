//! The rooms dialect (seed 003) over UDP: `RoomsClient`, one socket, one
//! library thread that reads it and runs the timers, and the blocking
//! requests of the API. The protocol itself (reliability, room, peers,
//! invitations, keep-alive) is `machine.rs`, which does no I/O; this file
//! moves its datagrams and events and waits for its replies. It never
//! blocks the reader on the application, and never holds the machine's
//! lock across a socket call or an event push.

pub mod machine;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::rooms::reliable::{RETRY_EVERY, TRIES};
use chinwag_proto::rooms::{
    valid_room_name, valid_user_name, Access, Body, Creation, Mode, Reason, Registration, MAX_CHAT,
    MAX_DATAGRAM, MAX_ROOM_NAME, MAX_USER_NAME, MIN_ROOM_SIZE, SERVER, UNREGISTERED,
};
use parking_lot::{Condvar, Mutex};

pub use chinwag_proto::rooms::RoomInfo as RoomEntry;
use machine::{canonical, request_limit, Machine, Reply};

use crate::core::{
    end, sealed, spawn, Connection, Core, Error, ErrorKind, Event, Result, DEFAULT_CAPACITY,
};

/// A rooms client: a public room, private rooms and invitations over
/// reliable UDP.
pub type RoomsClient = Connection<Rooms>;

/// The state of a rooms client, shared by its handle and its reader.
pub struct Rooms {
    core: Core,
    link: Link,
}

impl sealed::Protocol for Rooms {
    fn core(&self) -> &Core {
        &self.core
    }

    fn shut(&self) {
        self.link.m.lock().close();
        self.link.answered.notify_all();
    }

    fn goodbye(&self) {
        self.link.say_goodbye();
    }
}

/// Seed 003's T: a request is sent again this often until its answer
/// (same NUM_SEQ) arrives (proto's `reliable::RETRY_EVERY`, which the
/// server uses too)...
pub const ROOMS_RETRY_EVERY: Duration = RETRY_EVERY;
/// ... at most M sends in all (proto's `reliable::TRIES`); then the call
/// fails: `Unconfirmed` for a text, `Timeout` for anything else.
pub const ROOMS_TRIES: u32 = TRIES;
/// Seed 003: a registered client says CONNEXION this often so the server
/// keeps it (chinwagd drops a client silent for 100 s).
pub const ROOMS_KEEPALIVE: Duration = machine::KEEPALIVE;
/// The reader's receive timeout: the resolution of the timers, and how
/// soon a close is noticed.
const TICK: Duration = Duration::from_millis(20);
/// After accepting an invitation, how often and how long apart the
/// library asks for the room's members to see whether the server moved it.
const ACCEPT_CHECKS: u32 = 4;
const ACCEPT_CHECK_GAP: Duration = Duration::from_millis(30);

/// The UDP side of a rooms client.
pub(crate) struct Link {
    sock: UdpSocket,
    m: Mutex<Machine>,
    /// Wakes callers waiting for a reply.
    answered: Condvar,
    said_goodbye: AtomicBool,
}

/// The error for a refusal the server gave as an ERREUR, or for an answer
/// of the wrong type to `what`.
fn refusal(what: &str, body: Body) -> Error {
    match body {
        Body::Error { reason, .. } => {
            let (kind, why) = match reason {
                Reason::NoRecipient => (ErrorKind::NoRecipient, "nobody would receive it"),
                Reason::Limit => (
                    ErrorKind::Limited,
                    "a limit was reached (registrations from this address, requests \
                     per second, or a recipient too far behind); try again later",
                ),
                Reason::TooLong => (ErrorKind::TooLong, "a field is too long"),
                Reason::UnknownType => (ErrorKind::Refused, "it does not know the type"),
                Reason::Malformed => (ErrorKind::Refused, "it cannot read it"),
                Reason::NotAccepted => (ErrorKind::Refused, "it does not take it from a client"),
            };
            Error::new(kind, format!("the server refused the {what}: {why}"))
        }
        other => Error::new(
            ErrorKind::Protocol,
            format!("unexpected answer to {what}: {other:?}"),
        ),
    }
}

fn check_room_name(name: &str) -> Result<()> {
    if name.len() > MAX_ROOM_NAME {
        return Err(Error::new(
            ErrorKind::TooLong,
            format!(
                "room name is {} bytes; rooms allows at most {MAX_ROOM_NAME}",
                name.len()
            ),
        ));
    }
    if !valid_room_name(name) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a room name is 1 to 50 bytes without '#'",
        ));
    }
    Ok(())
}

fn check_user_name(name: &str) -> Result<()> {
    if name.len() > MAX_USER_NAME {
        return Err(Error::new(
            ErrorKind::TooLong,
            format!(
                "name is {} bytes; rooms allows at most {MAX_USER_NAME}",
                name.len()
            ),
        ));
    }
    if !valid_user_name(name) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a rooms name is 1 to 10 bytes without '#'",
        ));
    }
    Ok(())
}

impl Link {
    /// Run `f` on the machine, then (its lock released) send what it
    /// queued, hand its events to the application, and wake the callers.
    fn with<T>(&self, shared: &Rooms, f: impl FnOnce(&mut Machine) -> T) -> T {
        let (value, out, events, lost) = {
            let mut m = self.m.lock();
            let value = f(&mut m);
            let mut out = Vec::new();
            while let Some(t) = m.poll_transmit() {
                out.push(t);
            }
            (value, out, m.take_events(), m.take_lost())
        };
        for (to, bytes) in out {
            self.send_to(to, &bytes);
        }
        for ev in events {
            shared.core.emit(ev);
        }
        self.answered.notify_all();
        if let Some(why) = lost {
            end(
                shared,
                Event::Disconnected {
                    code: ErrorKind::Closed,
                    text: why,
                },
            );
        }
        value
    }

    fn send_to(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(e) = chinwag_proto::eintr::retry(|| self.sock.send_to(bytes, to)) {
            log::debug!("rooms: send to {to} failed: {e}");
        }
    }

    /// The application closed the client: tell the server once (twice, in
    /// case one is lost; a repeat is answered harmlessly) so the name is
    /// freed at once rather than after the server's idle timeout.
    fn say_goodbye(&self) {
        if self.said_goodbye.swap(true, Ordering::AcqRel) {
            return;
        }
        let (server, bytes) = {
            let mut m = self.m.lock();
            (m.server(), m.goodbye(Instant::now()))
        };
        self.answered.notify_all();
        if let Some(b) = bytes {
            self.send_to(server, &b);
            self.send_to(server, &b);
        }
    }

    /// Send each `(destination, body)` reliably and wait for every reply
    /// (or the end of the retries, or `deadline`). Replies are in order.
    fn exchange(
        &self,
        shared: &Rooms,
        requests: Vec<(SocketAddr, Body)>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Reply>> {
        let now = Instant::now();
        let tickets = self.with(shared, |m| {
            if shared.core.closed_locally() {
                return Err(Error::closed());
            }
            let mut tickets = Vec::with_capacity(requests.len());
            for (to, body) in requests {
                match m.request(now, to, body) {
                    Ok(t) => tickets.push(t),
                    Err(e) => {
                        for t in tickets {
                            m.abandon(t);
                        }
                        return Err(e);
                    }
                }
            }
            Ok(tickets)
        })?;
        // The reader settles every ticket within M x T; the margin only
        // guards against a reader that died.
        let limit = now + request_limit();
        let limit = deadline.map_or(limit, |d| d.min(limit));
        let mut replies: Vec<Option<Reply>> = tickets.iter().map(|_| None).collect();
        let mut m = self.m.lock();
        loop {
            for (r, t) in replies.iter_mut().zip(&tickets) {
                if r.is_none() {
                    *r = m.reply(*t);
                }
            }
            if replies.iter().all(Option::is_some) {
                return Ok(replies.into_iter().map(Option::unwrap).collect());
            }
            let over = Instant::now() >= limit;
            if m.is_closed() || over {
                for (r, t) in replies.iter_mut().zip(&tickets) {
                    if r.is_none() {
                        m.abandon(*t);
                        *r = Some(Reply::Unanswered);
                    }
                }
                if m.is_closed() {
                    return Err(Error::closed());
                }
                return Ok(replies.into_iter().map(Option::unwrap).collect());
            }
            self.answered.wait_until(&mut m, limit);
        }
    }

    /// One request to the server; its answer, or `Timeout` when none came
    /// (it may have been carried out all the same).
    fn request(
        &self,
        shared: &Rooms,
        what: &str,
        body: Body,
        deadline: Option<Instant>,
    ) -> Result<Body> {
        let server = self.m.lock().server();
        match self.exchange(shared, vec![(server, body)], deadline)?.pop() {
            Some(Reply::Answer(b)) => Ok(b),
            _ => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no answer from {server} to the {what} (sent {ROOMS_TRIES} times \
                     or until the time limit; it may have been carried out)"
                ),
            )),
        }
    }
}

/// The reader thread: datagrams and timers until the client closes.
fn read_loop(shared: &Rooms) {
    let link = &shared.link;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while !shared.core.closed_locally() && !link.m.lock().is_closed() {
        match link.sock.recv_from(&mut buf) {
            Ok((n, from)) if n <= MAX_DATAGRAM => {
                let d = &buf[..n];
                link.with(shared, |m| m.datagram(Instant::now(), from, d));
            }
            Ok((_, from)) => log::debug!("rooms: oversized datagram from {from} dropped"),
            // Nothing within the tick, or a signal: the timers are due
            // either way (a retry would wait a whole tick again, so a
            // steady stream of signals would starve them).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // ICMP errors surface here on some systems: not fatal for UDP.
            Err(e) => {
                log::debug!("rooms: receive failed: {e}");
                std::thread::sleep(TICK);
            }
        }
        link.with(shared, |m| m.tick(Instant::now()));
        shared.core.checkpoint();
    }
    link.answered.notify_all();
}

impl Connection<Rooms> {
    /// Rooms has no handshake: resolve the server (IPv4, or IPv4 written
    /// as `::ffff:a.b.c.d`: the protocol's peer addresses are IPv4), bind
    /// a UDP socket and start the reader.
    pub fn connect(host: &str, port: u16) -> Result<Self> {
        if host.is_empty() || port == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "empty host or port 0",
            ));
        }
        let server = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(
                    ErrorKind::ConnectFailed,
                    format!("cannot resolve {host}: {e}"),
                )
            })?
            .map(canonical)
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ConnectFailed,
                    format!("{host} has no IPv4 address (rooms is IPv4 only)"),
                )
            })?;
        let io_err = |e: io::Error| Error::new(ErrorKind::Io, format!("UDP socket: {e}"));
        // A server on this machine's loopback is reached, and its rooms'
        // peers listed, on loopback: nothing beyond it needs to reach us.
        let local = if server.ip().is_loopback() {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(local), 0)).map_err(io_err)?;
        sock.set_read_timeout(Some(TICK)).map_err(io_err)?;
        let link = Link {
            sock,
            m: Mutex::new(Machine::new(server, rand::random())),
            answered: Condvar::new(),
            said_goodbye: AtomicBool::new(false),
        };
        let rooms = Arc::new(Rooms {
            core: Core::new(DEFAULT_CAPACITY),
            link,
        });
        spawn(&rooms, "chinwag-rooms", |rooms| read_loop(rooms))?;
        log::info!("rooms client for {server}");
        Ok(Connection::new(rooms))
    }

    fn link(&self) -> &Link {
        &self.proto().link
    }

    /// The link of a registered rooms client.
    fn registered(&self) -> Result<&Link> {
        let link = self.link();
        let m = link.m.lock();
        if m.is_closed() || self.core().closed_locally() {
            return Err(Error::closed());
        }
        if m.id() == UNREGISTERED {
            return Err(Error::not_logged_in());
        }
        Ok(link)
    }

    /// One request to the server as a registered client.
    fn ask(&self, what: &str, body: Body) -> Result<Body> {
        self.registered()?.request(self.proto(), what, body, None)
    }

    /// Shorten or lengthen the keep-alive interval (default
    /// [`ROOMS_KEEPALIVE`]); for tests.
    #[doc(hidden)]
    pub fn set_keepalive(&self, every: Duration) {
        self.link().m.lock().set_keepalive(every);
    }

    /// Rooms: the first CONNEXION. `Ok` with the name registered (and a
    /// keep-alive sent at once, which confirms this address to the
    /// server); `LoginRefused` (invalid or taken, said in the message);
    /// `Limited` (too many registrations from this address).
    pub fn login(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        let link = self.link();
        check_user_name(name)?;
        link.m.lock().begin_login()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let body = Body::Connexion {
            name: Some(name.to_owned()),
        };
        let answer = link.request(self.proto(), "login", body, deadline);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                link.m.lock().end_login();
                return Err(e);
            }
        };
        match answer {
            Body::Registered {
                status: Registration::Accepted,
                user,
            } if user != UNREGISTERED && user != SERVER => {
                link.with(self.proto(), |m| m.registered(Instant::now(), user, name));
                self.core().login.set(name);
                log::info!("rooms: registered as {name} (id {user})");
                Ok(())
            }
            other => {
                link.m.lock().end_login();
                Err(match other {
                    Body::Registered {
                        status: Registration::NameTaken,
                        ..
                    } => Error::new(
                        ErrorKind::LoginRefused,
                        format!(
                            "the server refused the login {name:?}: name taken (or no id left)"
                        ),
                    ),
                    Body::Registered { .. } => Error::new(
                        ErrorKind::LoginRefused,
                        format!("the server refused the login {name:?}: invalid name"),
                    ),
                    other => refusal("login", other),
                })
            }
        }
    }

    /// Rooms: this client's ID_USER (1-254).
    pub fn room_user_id(&self) -> Result<u8> {
        let link = self.registered()?;
        let id = link.m.lock().id();
        Ok(id)
    }

    /// Rooms: create a private room and move into it; its ID_MESSAGERIE.
    pub fn room_create(&self, name: &str, mode: Mode, max: u8) -> Result<u8> {
        check_room_name(name)?;
        if max < MIN_ROOM_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("a room holds at least {MIN_ROOM_SIZE} members"),
            ));
        }
        let body = Body::CreateRoom {
            mode,
            name: name.to_owned(),
            max,
        };
        match self.ask("room creation", body)? {
            Body::CreateAnswer {
                status: Creation::Created,
                room,
            } => {
                self.link().m.lock().enter(name, mode, Vec::new());
                Ok(room)
            }
            Body::CreateAnswer {
                status: Creation::NameExists,
                ..
            } => Err(Error::new(
                ErrorKind::RoomExists,
                format!("a room named {name:?} exists (or no room id is left)"),
            )),
            Body::CreateAnswer { status, .. } => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the server refused the room: {status:?}"),
            )),
            other => Err(refusal("room creation", other)),
        }
    }

    /// Rooms: the private rooms (the public one is not listed).
    pub fn room_list(&self) -> Result<Vec<RoomEntry>> {
        match self.ask("room list", Body::ListRooms)? {
            Body::RoomList { rooms } => Ok(rooms),
            other => Err(refusal("room list", other)),
        }
    }

    /// Rooms: DEMANDE_ACCES (`change` false) or CHANGER_MESSAGERIE (true).
    fn room_enter(&self, name: &str, change: bool) -> Result<()> {
        check_room_name(name)?;
        let body = if change {
            Body::ChangeRoom { name: name.into() }
        } else {
            Body::AccessRoom { name: name.into() }
        };
        self.link().m.lock().joining(Instant::now());
        let answer = self.ask("room access", body).and_then(|b| {
            b.into_access()
                .map_err(|other| refusal("room access", other))
        });
        if !matches!(answer, Ok((_, Access::Granted, _))) {
            // Not moved: a peer's text is refused again.
            self.link().m.lock().not_joining();
        }
        let (mode, status, peers) = answer?;
        match status {
            Access::Granted => {
                self.link().m.lock().enter(name, mode, peers);
                Ok(())
            }
            Access::NoSuchRoom => Err(Error::new(
                ErrorKind::NoSuchRoom,
                format!("no room named {name:?}"),
            )),
            Access::Full => Err(Error::new(
                ErrorKind::RoomFull,
                format!("the room {name:?} is full"),
            )),
        }
    }

    /// Rooms: ask for access to a private room (DEMANDE_ACCES) and move in.
    pub fn room_join(&self, name: &str) -> Result<()> {
        self.room_enter(name, false)
    }

    /// Rooms: move to another private room (CHANGER_MESSAGERIE).
    pub fn room_change(&self, name: &str) -> Result<()> {
        self.room_enter(name, true)
    }

    /// Rooms: back to the public room. `NotInRoom` when already there.
    pub fn room_leave(&self) -> Result<()> {
        match self.ask("room leave", Body::Leave)? {
            Body::LeaveAnswer { ok } => {
                self.link().m.lock().to_public();
                if ok {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::NotInRoom,
                        "already in the public room",
                    ))
                }
            }
            other => Err(refusal("room leave", other)),
        }
    }

    /// Rooms: the room this client is in as (name, mode); "" is the public room.
    pub fn room_current(&self) -> Result<(String, Mode)> {
        let link = self.registered()?;
        let m = link.m.lock();
        Ok((m.room().name.clone(), m.room().mode))
    }

    /// Rooms: the peers of the current decentralised room as the library
    /// knows them (the access answer, plus members whose texts arrived).
    pub fn room_peers(&self) -> Result<Vec<String>> {
        let link = self.registered()?;
        let m = link.m.lock();
        Ok(m.room().peers.iter().map(|p| p.name.clone()).collect())
    }

    /// Rooms: the members of room `name` ("" for the public room); empty
    /// for a room that does not exist.
    pub fn room_members(&self, name: &str) -> Result<Vec<String>> {
        if !name.is_empty() {
            check_room_name(name)?;
        }
        let body = Body::ListClients {
            room: name.to_owned(),
        };
        match self.ask("member list", body)? {
            Body::ClientList { names } => Ok(names),
            other => Err(refusal("member list", other)),
        }
    }

    /// Rooms: every user registered on the server, whatever its room
    /// (DEMANDER_LISTE_UTILISATEURS, chinwag's type 25), sorted by name.
    pub fn room_users(&self) -> Result<Vec<String>> {
        match self.ask("user list", Body::ListUsers)? {
            Body::UserList { mut names } => {
                names.sort();
                Ok(names)
            }
            other => Err(refusal("user list", other)),
        }
    }

    /// Rooms: invite `user` into the current private room. The server
    /// acknowledges every invitation; it forwards it only when `user` is
    /// online, so `Ok` does not mean it was delivered.
    pub fn room_invite(&self, user: &str) -> Result<()> {
        check_user_name(user)?;
        if self.registered()?.m.lock().room().name.is_empty() {
            return Err(Error::new(
                ErrorKind::NotInRoom,
                "invitations are into a private room: join or create one first",
            ));
        }
        let body = Body::Invite {
            user: user.to_owned(),
        };
        match self.ask("invitation", body)? {
            Body::InviteAck => Ok(()),
            other => Err(refusal("invitation", other)),
        }
    }

    /// Rooms: answer the latest unanswered invitation into `room` ("" for
    /// the latest of all), within 60 s of it. Accepting waits until the
    /// server has moved this client (checked with member lists) and, for a
    /// decentralised room, fetches the peers.
    pub fn room_answer_invitation(&self, room: &str, accept: bool) -> Result<()> {
        let link = self.registered()?;
        let (inv_room, mode) = link.with(self.proto(), |m| {
            m.answer_invitation(Instant::now(), room, accept)
        })?;
        if !accept {
            return Ok(());
        }
        let me = link.m.lock().name().unwrap_or_default().to_owned();
        let mut members = Vec::new();
        for i in 0..ACCEPT_CHECKS {
            // The server's workers may take the list request before the answer.
            std::thread::sleep(if i == 0 {
                ACCEPT_CHECK_GAP / 3
            } else {
                ACCEPT_CHECK_GAP
            });
            members = self.room_members(&inv_room)?;
            if members.contains(&me) {
                break;
            }
        }
        if !members.contains(&me) {
            link.m.lock().to_public();
            return Err(Error::new(
                ErrorKind::RoomFull,
                format!(
                    "not moved into {inv_room:?}: the room is full or gone, or the invitation \
                     expired (the server keeps an invitation 60 s)"
                ),
            ));
        }
        link.m.lock().enter(&inv_room, mode, Vec::new());
        if mode == Mode::Decentralised && members.len() > 1 {
            // Accepting gives no peer list; asking for access again from
            // inside the room does, and keeps us there.
            self.room_join(&inv_room)?;
        }
        Ok(())
    }

    /// Ask the server who is in the decentralised room `name` now: the
    /// protocol announces no arrival or departure, and chinwagd answers
    /// DEMANDE_ACCES for the room a client is already in with its current
    /// members, changing nothing. `true`: the peers are now the server's
    /// list; `false`: the server gave none (no answer, an ERREUR: a server
    /// that takes no second access request) and the known peers stand.
    /// A room that is gone or turns this client away: it is in the public
    /// room now, and the text is not sent.
    fn refresh_peers(&self, name: &str) -> Result<bool> {
        if !self.link().m.lock().should_refresh(Instant::now()) {
            return Ok(false);
        }
        match self.room_join(name) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::NoSuchRoom | ErrorKind::RoomFull) => {
                self.link().m.lock().to_public();
                Err(Error::new(
                    e.kind(),
                    format!(
                        "this client is no longer in {name:?} ({}); the text was not sent",
                        e.message
                    ),
                ))
            }
            Err(e) if e.kind() == ErrorKind::Closed => Err(e),
            Err(e) => {
                log::debug!("rooms: the server gave no member list for {name:?}: {e}");
                if e.kind() == ErrorKind::Timeout {
                    self.link().m.lock().refresh_unanswered(Instant::now());
                }
                Ok(false)
            }
        }
    }

    /// Rooms: a TEXTE in the current room, at most 1,200 bytes (refused
    /// before anything is sent). Public or centralised: to the server,
    /// which forwards it. Decentralised: the server is asked who is in the
    /// room now (the protocol announces no arrival or departure), then the
    /// text goes to every one of them directly, each acknowledging. `Ok`
    /// only when every member acknowledged it. Never `Ok` when nobody
    /// received it: `NoRecipient` when nobody would (alone, or every peer
    /// known left), `Unconfirmed` when the server or some member never
    /// acknowledged, or a member refused it as not in the room (those
    /// peers are dropped from the list and named; a silent one may well
    /// have it).
    pub fn send_message(&self, text: &str) -> Result<()> {
        if text.len() > MAX_CHAT {
            return Err(Error::new(
                ErrorKind::TooLong,
                format!(
                    "text is {} bytes; rooms allows at most {MAX_CHAT}",
                    text.len()
                ),
            ));
        }
        let link = self.registered()?;
        let body = || Body::Text {
            chat: text.to_owned(),
        };
        let mut room = link.m.lock().room().clone();
        let mut listed = false;
        if room.mode == Mode::Decentralised && !room.name.is_empty() {
            listed = self.refresh_peers(&room.name)?;
            room = link.m.lock().room().clone();
        }
        if room.mode == Mode::Centralised || room.name.is_empty() {
            let server = link.m.lock().server();
            return match link
                .exchange(self.proto(), vec![(server, body())], None)?
                .pop()
            {
                Some(Reply::Answer(Body::TextAck)) => Ok(()),
                Some(Reply::Answer(other)) => Err(refusal("text", other)),
                _ => Err(Error::new(
                    ErrorKind::Unconfirmed,
                    format!(
                        "the server did not acknowledge the text after {ROOMS_TRIES} tries; \
                         it may have arrived"
                    ),
                )),
            };
        }
        let targets = link.m.lock().peer_addrs();
        if targets.is_empty() {
            return Err(Error::new(
                ErrorKind::NoRecipient,
                format!("nobody else is in {:?}: the text was not sent", room.name),
            ));
        }
        let replies = link.exchange(
            self.proto(),
            targets.iter().map(|t| (*t, body())).collect(),
            None,
        )?;
        let d = link.m.lock().delivered(&targets, &replies, listed);
        if d.complete() && d.acked > 0 {
            return Ok(());
        }
        if d.complete() {
            return Err(Error::new(
                ErrorKind::NoRecipient,
                format!(
                    "nobody in {:?} took the text: {} left the room (removed from the peer list)",
                    room.name,
                    d.stale.join(", ")
                ),
            ));
        }
        let mut why = Vec::new();
        if !d.silent.is_empty() {
            why.push(format!(
                "no acknowledgement from {} after {ROOMS_TRIES} tries (they may have it)",
                d.silent.join(", ")
            ));
        }
        if !d.missed.is_empty() {
            why.push(format!(
                "{} refused it as not in the room (leaving or joining just then)",
                d.missed.join(", ")
            ));
        }
        Err(Error::new(
            ErrorKind::Unconfirmed,
            format!(
                "{}; removed from the peer list; {} of {} peers acknowledged",
                why.join("; "),
                d.acked,
                targets.len()
            ),
        ))
    }
}
