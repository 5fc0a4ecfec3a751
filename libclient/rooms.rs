//! The rooms dialect (seed 003) over UDP: `RoomsClient`, one socket, one
//! library thread that reads it and runs the timers (retransmission, keep-alive), and the
//! blocking requests of the API. Every byte goes through
//! `chinwag_proto::rooms`; this file must never block the reader on the
//! application, nor trust a datagram's source beyond what it can check.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{
    kind, valid_room_name, valid_user_name, Access, Body, Creation, Message, Mode, Peer,
    Registration, MAX_CHAT, MAX_DATAGRAM, MAX_ROOM_NAME, MAX_ROOM_SIZE, MAX_USER_NAME,
    MIN_ROOM_SIZE, UNREGISTERED,
};
use parking_lot::{Condvar, Mutex};

pub use chinwag_proto::rooms::RoomInfo as RoomEntry;

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
        self.link.st.lock().dead = true;
        self.link.answered.notify_all();
    }

    fn goodbye(&self) {
        self.link.say_goodbye();
    }
}

/// Seed 003: a request is sent again every T = 100 ms until its answer
/// (same NUM_SEQ) arrives...
pub const ROOMS_RETRY_EVERY: Duration = Duration::from_millis(100);
/// ... at most M = 5 sends in all; then the call fails with `CW_TIMEOUT`.
pub const ROOMS_TRIES: u32 = 5;
/// Seed 003: a registered client says CONNEXION this often so the server
/// keeps it (chinwagd drops a client silent for 100 s).
pub const ROOMS_KEEPALIVE: Duration = Duration::from_secs(45);
/// The reader's receive timeout: the resolution of the timers, and how
/// soon a close is noticed.
const TICK: Duration = Duration::from_millis(20);
/// Datagrams remembered to suppress retransmitted duplicates. The server
/// retransmits for 0.5 s, so this covers far more than a burst.
const SEEN_KEPT: usize = 1024;
/// Requests and peer texts in flight at once per client.
const MAX_OUTSTANDING: usize = 1024;
/// Unanswered invitations kept (the oldest are forgotten).
const INVITATIONS_KEPT: usize = 64;
/// A decentralised room holds at most 254 members, so at most 253 peers;
/// the list learned from texts is capped at this too.
const MAX_PEERS: usize = MAX_ROOM_SIZE as usize;
/// After accepting an invitation, how often and how long apart the
/// library asks for the room's members to see whether the server moved it.
const ACCEPT_CHECKS: u32 = 4;
const ACCEPT_CHECK_GAP: Duration = Duration::from_millis(30);

/// The room this client is in, as the library last learned it.
#[derive(Clone)]
struct Room {
    /// Empty: the public room.
    name: String,
    mode: Mode,
    /// Decentralised rooms: where the other members listen.
    peers: Vec<Peer>,
}

impl Room {
    fn public() -> Room {
        Room {
            name: String::new(),
            mode: Mode::Centralised,
            peers: Vec::new(),
        }
    }
}

/// A datagram this client sent first and sends again until answered.
struct Outstanding {
    bytes: Vec<u8>,
    /// The kind of the answer that settles it.
    expect: u8,
    tries: u32,
    next_at: Instant,
    /// A keep-alive: nobody waits for it.
    keepalive: bool,
}

enum Outcome {
    Answer(Body),
    GaveUp,
}

struct Invitation {
    seq: u16,
    from: String,
    room: String,
    mode: Mode,
    /// The application's answer, replayed if the server sends the
    /// invitation again (our answer was lost).
    answer: Option<bool>,
}

struct State {
    /// ID_USER; 0 until registered.
    id: u8,
    name: Option<String>,
    logging_in: bool,
    next_seq: u16,
    outstanding: HashMap<(SocketAddr, u16), Outstanding>,
    outcomes: HashMap<(SocketAddr, u16), Outcome>,
    room: Room,
    /// Ids whose names the library has learned (its own, and peers of
    /// decentralised rooms whose texts came from a listed address).
    names: HashMap<u8, String>,
    seen: VecDeque<(SocketAddr, u8, u16)>,
    seen_set: HashSet<(SocketAddr, u8, u16)>,
    invitations: VecDeque<Invitation>,
    last_keepalive: Instant,
    dead: bool,
}

/// The UDP side of a rooms client.
pub(crate) struct Link {
    sock: UdpSocket,
    server: SocketAddr,
    st: Mutex<State>,
    answered: Condvar,
    keepalive_ms: AtomicU64,
    said_goodbye: AtomicBool,
}

fn encode(user: u8, seq: u16, body: Body) -> Vec<u8> {
    Message { user, seq, body }.to_bytes()
}

/// The kind of the answer to a request of kind `k`.
fn answer_kind(k: u8) -> u8 {
    k + 1
}

fn name_of(st: &State, user: u8) -> String {
    st.names
        .get(&user)
        .cloned()
        .unwrap_or_else(|| format!("#{user}"))
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

impl Link {
    fn lost(&self, shared: &Rooms, why: &str) {
        self.st.lock().dead = true;
        self.answered.notify_all();
        end(
            shared,
            Event::Disconnected {
                code: ErrorKind::Closed,
                text: why.into(),
            },
        );
    }

    fn send_to(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.sock.send_to(bytes, to) {
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
        let bytes = {
            let mut st = self.st.lock();
            st.dead = true;
            st.outstanding.clear();
            st.outcomes.clear();
            if st.id == UNREGISTERED {
                None
            } else {
                st.next_seq = st.next_seq.wrapping_add(1);
                Some(encode(st.id, st.next_seq, Body::Disconnect))
            }
        };
        self.answered.notify_all();
        if let Some(b) = bytes {
            self.send_to(self.server, &b);
            self.send_to(self.server, &b);
        }
    }

    /// Send each `(destination, body)` reliably and wait for every answer
    /// (or the end of the retries, or `deadline`). Results are in order.
    fn exchange(
        &self,
        shared: &Rooms,
        requests: Vec<(SocketAddr, Body)>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Result<Body>>> {
        let now = Instant::now();
        let mut keys = Vec::with_capacity(requests.len());
        let mut sends = Vec::with_capacity(requests.len());
        {
            let mut st = self.st.lock();
            if st.dead || shared.core.closed_locally() {
                return Err(Error::closed());
            }
            if st.outstanding.len() + requests.len() > MAX_OUTSTANDING {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "too many requests are waiting for their answers",
                ));
            }
            for (to, body) in requests {
                st.next_seq = st.next_seq.wrapping_add(1);
                let seq = st.next_seq;
                let expect = answer_kind(body.kind());
                let bytes = encode(st.id, seq, body);
                st.outstanding.insert(
                    (to, seq),
                    Outstanding {
                        bytes: bytes.clone(),
                        expect,
                        tries: 1,
                        next_at: now + ROOMS_RETRY_EVERY,
                        keepalive: false,
                    },
                );
                keys.push((to, seq));
                sends.push((to, bytes));
            }
        }
        for (to, bytes) in &sends {
            self.send_to(*to, bytes);
        }
        // The reader settles every key within M x T; the margin only
        // guards against a reader that died.
        let limit = now + ROOMS_RETRY_EVERY * (ROOMS_TRIES + 10);
        let limit = deadline.map_or(limit, |d| d.min(limit));
        let mut results: Vec<Option<Result<Body>>> = keys.iter().map(|_| None).collect();
        let mut st = self.st.lock();
        loop {
            for (i, k) in keys.iter().enumerate() {
                if results[i].is_none() {
                    match st.outcomes.remove(k) {
                        Some(Outcome::Answer(b)) => results[i] = Some(Ok(b)),
                        Some(Outcome::GaveUp) => {
                            results[i] = Some(Err(Error::new(
                                ErrorKind::Timeout,
                                format!("no answer from {} after {ROOMS_TRIES} tries", k.0),
                            )))
                        }
                        None => {}
                    }
                }
            }
            if results.iter().all(Option::is_some) {
                return Ok(results.into_iter().map(Option::unwrap).collect());
            }
            if st.dead {
                for k in &keys {
                    st.outstanding.remove(k);
                    st.outcomes.remove(k);
                }
                return Err(Error::closed());
            }
            if Instant::now() >= limit {
                for (i, k) in keys.iter().enumerate() {
                    st.outstanding.remove(k);
                    st.outcomes.remove(k);
                    if results[i].is_none() {
                        results[i] = Some(Err(Error::new(
                            ErrorKind::Timeout,
                            format!("no answer from {} before the time limit", k.0),
                        )));
                    }
                }
                return Ok(results.into_iter().map(Option::unwrap).collect());
            }
            self.answered.wait_until(&mut st, limit);
        }
    }

    /// One request to the server; its answer.
    fn request(&self, shared: &Rooms, body: Body, deadline: Option<Instant>) -> Result<Body> {
        self.exchange(shared, vec![(self.server, body)], deadline)?
            .pop()
            .expect("one result per request")
    }

    /// Retransmissions, give-ups and the keep-alive.
    fn tick(&self, now: Instant) {
        let mut out = Vec::new();
        let mut notify = false;
        {
            let mut st = self.st.lock();
            if st.dead {
                return;
            }
            let mut given_up = Vec::new();
            for (key, o) in st.outstanding.iter_mut() {
                if o.next_at <= now {
                    if o.tries >= ROOMS_TRIES {
                        given_up.push((*key, o.keepalive));
                    } else {
                        o.tries += 1;
                        o.next_at = now + ROOMS_RETRY_EVERY;
                        out.push((key.0, o.bytes.clone()));
                    }
                }
            }
            for (key, keepalive) in given_up {
                st.outstanding.remove(&key);
                if keepalive {
                    log::warn!("rooms: keep-alive unanswered by {}", key.0);
                } else {
                    st.outcomes.insert(key, Outcome::GaveUp);
                    notify = true;
                }
            }
            let every = Duration::from_millis(self.keepalive_ms.load(Ordering::Relaxed));
            if st.id != UNREGISTERED && now.duration_since(st.last_keepalive) >= every {
                st.last_keepalive = now;
                st.next_seq = st.next_seq.wrapping_add(1);
                let seq = st.next_seq;
                let bytes = encode(st.id, seq, Body::Connexion { name: None });
                if st.outstanding.len() < MAX_OUTSTANDING {
                    st.outstanding.insert(
                        (self.server, seq),
                        Outstanding {
                            bytes: bytes.clone(),
                            expect: kind::REPONSE_CONNEXION,
                            tries: 1,
                            next_at: now + ROOMS_RETRY_EVERY,
                            keepalive: true,
                        },
                    );
                }
                out.push((self.server, bytes));
            }
        }
        if notify {
            self.answered.notify_all();
        }
        for (to, bytes) in out {
            self.send_to(to, &bytes);
        }
    }

    /// Remember `key`; false when it was seen already (a retransmission).
    fn first_time(st: &mut State, key: (SocketAddr, u8, u16)) -> bool {
        if !st.seen_set.insert(key) {
            return false;
        }
        st.seen.push_back(key);
        if st.seen.len() > SEEN_KEPT {
            if let Some(old) = st.seen.pop_front() {
                st.seen_set.remove(&old);
            }
        }
        true
    }

    /// One datagram from anywhere. Anything that does not decode, or does
    /// not fit what this client expects, is dropped.
    fn datagram(&self, shared: &Rooms, from: SocketAddr, d: &[u8]) {
        let msg = match Message::decode(d) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("rooms: datagram from {from} dropped: {e}");
                return;
            }
        };
        let Message { user, seq, body } = msg;
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut event = None;
        {
            let mut st = self.st.lock();
            if st.dead {
                return;
            }
            let from_server = from == self.server;
            match body {
                Body::Text { chat } => {
                    if st.id == UNREGISTERED {
                        return;
                    }
                    // Acknowledge every copy: our previous ack may be the one lost.
                    out.push(encode(st.id, seq, Body::TextAck));
                    let fresh = Self::first_time(&mut st, (from, kind::TEXTE, seq));
                    let author = if from_server {
                        Some(name_of(&st, user))
                    } else if st.room.mode == Mode::Decentralised && !st.room.name.is_empty() {
                        Some(self.peer_author(&mut st, from, user))
                    } else {
                        // Not in a decentralised room: a stale peer; its
                        // retries stop, the text is not ours to show.
                        None
                    };
                    if let (true, Some(author)) = (fresh, author) {
                        event = Some(Event::Message {
                            from: author,
                            text: chat,
                        });
                    }
                }
                Body::Invitation {
                    from: inviter,
                    mode,
                    room,
                } if from_server => {
                    if !Self::first_time(&mut st, (from, kind::DEMANDE_MESSAGERIE_PRIVEE, seq)) {
                        if let Some(inv) = st.invitations.iter().find(|i| i.seq == seq) {
                            if let Some(accept) = inv.answer {
                                out.push(encode(st.id, seq, Body::InvitationAnswer { accept }));
                            }
                        }
                    } else {
                        if st.invitations.len() >= INVITATIONS_KEPT {
                            st.invitations.pop_front();
                        }
                        st.invitations.push_back(Invitation {
                            seq,
                            from: inviter.clone(),
                            room: room.clone(),
                            mode,
                            answer: None,
                        });
                        event = Some(Event::RoomInvitation {
                            from: inviter,
                            room,
                            mode,
                        });
                    }
                }
                body => {
                    let key = (from, seq);
                    let expected = st.outstanding.get(&key).map(|o| (o.expect, o.keepalive));
                    match expected {
                        Some((expect, keepalive)) if expect == body.kind() => {
                            st.outstanding.remove(&key);
                            if keepalive {
                                if let Body::KeptAlive { ok: false } = body {
                                    drop(st);
                                    self.lost(
                                        shared,
                                        "the server no longer knows this client \
                                         (expired, or replaced by a new login from this address)",
                                    );
                                    return;
                                }
                            } else {
                                st.outcomes.insert(key, Outcome::Answer(body));
                                drop(st);
                                self.answered.notify_all();
                                return;
                            }
                        }
                        _ => log::debug!(
                            "rooms: unexpected type {} seq {seq} from {from} dropped",
                            body.kind()
                        ),
                    }
                }
            }
        }
        for b in out {
            self.send_to(from, &b);
        }
        if let Some(ev) = event {
            shared.core.emit(ev);
        }
    }

    /// The name of a peer's text, learning what the datagram tells: the
    /// address's name gives the id's name, and an unlisted address (a
    /// member who joined after us) joins the peer list.
    fn peer_author(&self, st: &mut State, from: SocketAddr, user: u8) -> String {
        if let Some(p) = st
            .room
            .peers
            .iter()
            .find(|p| SocketAddr::new(IpAddr::V4(p.ip), p.port) == from)
        {
            let name = p.name.clone();
            if user != UNREGISTERED && user != st.id {
                st.names.insert(user, name.clone());
            }
            return name;
        }
        let name = name_of(st, user);
        if let (IpAddr::V4(ip), true) = (from.ip(), st.room.peers.len() < MAX_PEERS) {
            st.room.peers.push(Peer {
                ip,
                port: from.port(),
                name: name.clone(),
            });
        }
        name
    }
}

/// The reader thread: datagrams and timers until the client closes.
fn read_loop(shared: &Rooms) {
    let link = &shared.link;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while !shared.core.closed_locally() && !link.st.lock().dead {
        match link.sock.recv_from(&mut buf) {
            Ok((n, from)) if n <= MAX_DATAGRAM => link.datagram(shared, from, &buf[..n]),
            Ok((_, from)) => log::debug!("rooms: oversized datagram from {from} dropped"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // ICMP errors surface here on some systems: not fatal for UDP.
            Err(e) => {
                log::debug!("rooms: receive failed: {e}");
                std::thread::sleep(TICK);
            }
        }
        link.tick(Instant::now());
        shared.core.checkpoint();
    }
    link.answered.notify_all();
}

impl Connection<Rooms> {
    /// Rooms has no handshake: resolve the server (IPv4: the protocol's
    /// peer addresses are IPv4), bind a UDP socket and start the reader.
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
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ConnectFailed,
                    format!("{host} has no IPv4 address (rooms is IPv4 only)"),
                )
            })?;
        let io_err = |e: io::Error| Error::new(ErrorKind::Io, format!("UDP socket: {e}"));
        let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
            .map_err(io_err)?;
        sock.set_read_timeout(Some(TICK)).map_err(io_err)?;
        let link = Link {
            sock,
            server,
            st: Mutex::new(State {
                id: UNREGISTERED,
                name: None,
                logging_in: false,
                next_seq: 0,
                outstanding: HashMap::new(),
                outcomes: HashMap::new(),
                room: Room::public(),
                names: HashMap::new(),
                seen: VecDeque::new(),
                seen_set: HashSet::new(),
                invitations: VecDeque::new(),
                last_keepalive: Instant::now(),
                dead: false,
            }),
            answered: Condvar::new(),
            keepalive_ms: AtomicU64::new(ROOMS_KEEPALIVE.as_millis() as u64),
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
        let st = link.st.lock();
        if st.dead || self.core().closed_locally() {
            return Err(Error::closed());
        }
        if st.id == UNREGISTERED {
            return Err(Error::new(ErrorKind::NotLoggedIn, "log in first"));
        }
        Ok(link)
    }

    /// Shorten or lengthen the keep-alive interval (default
    /// [`ROOMS_KEEPALIVE`]); for tests.
    #[doc(hidden)]
    pub fn set_keepalive(&self, every: Duration) {
        self.link()
            .keepalive_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Rooms: the first CONNEXION. `Ok` with the name registered;
    /// `CW_LOGIN_REFUSED` (invalid or taken, said in the message).
    pub fn login(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        let link = self.link();
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
        {
            let mut st = link.st.lock();
            if st.dead {
                return Err(Error::closed());
            }
            if st.id != UNREGISTERED {
                return Err(Error::new(ErrorKind::AlreadyLoggedIn, "already logged in"));
            }
            if st.logging_in {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "another login is waiting for its answer",
                ));
            }
            st.logging_in = true;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let answer = link.request(
            self.proto(),
            Body::Connexion {
                name: Some(name.to_owned()),
            },
            deadline,
        );
        let mut st = link.st.lock();
        st.logging_in = false;
        match answer? {
            Body::Registered {
                status: Registration::Accepted,
                user,
            } if user != UNREGISTERED && user != chinwag_proto::rooms::SERVER => {
                st.id = user;
                st.name = Some(name.to_owned());
                st.names.insert(user, name.to_owned());
                st.room = Room::public();
                st.last_keepalive = Instant::now();
                drop(st);
                self.core().login.set(name);
                log::info!("rooms: registered as {name} (id {user})");
                Ok(())
            }
            Body::Registered {
                status: Registration::NameTaken,
                ..
            } => Err(Error::new(
                ErrorKind::LoginRefused,
                format!("the server refused the login {name:?}: name taken (or no id left)"),
            )),
            Body::Registered { .. } => Err(Error::new(
                ErrorKind::LoginRefused,
                format!("the server refused the login {name:?}: invalid name"),
            )),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected answer to CONNEXION: {other:?}"),
            )),
        }
    }

    /// Rooms: this client's ID_USER (1-254).
    pub fn room_user_id(&self) -> Result<u8> {
        let link = self.registered()?;
        let id = link.st.lock().id;
        Ok(id)
    }

    /// Rooms: create a private room and move into it; its ID_MESSAGERIE.
    pub fn room_create(&self, name: &str, mode: Mode, max: u8) -> Result<u8> {
        let link = self.link();
        check_room_name(name)?;
        if max < MIN_ROOM_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("a room holds at least {MIN_ROOM_SIZE} members"),
            ));
        }
        self.registered()?;
        let answer = link.request(
            self.proto(),
            Body::CreateRoom {
                mode,
                name: name.to_owned(),
                max,
            },
            None,
        )?;
        match answer {
            Body::CreateAnswer {
                status: Creation::Created,
                room,
            } => {
                link.st.lock().room = Room {
                    name: name.to_owned(),
                    mode,
                    peers: Vec::new(),
                };
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
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected answer to CREER_MESSAGERIE_PRIVEE: {other:?}"),
            )),
        }
    }

    /// Rooms: the private rooms (the public one is not listed).
    pub fn room_list(&self) -> Result<Vec<RoomEntry>> {
        let link = self.registered()?;
        match link.request(self.proto(), Body::ListRooms, None)? {
            Body::RoomList { rooms } => Ok(rooms),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected answer to DEMANDER_LISTE_MESSAGERIE: {other:?}"),
            )),
        }
    }

    /// Rooms: DEMANDE_ACCES (`change` false) or CHANGER_MESSAGERIE (true).
    fn room_enter(&self, name: &str, change: bool) -> Result<()> {
        let link = self.link();
        check_room_name(name)?;
        self.registered()?;
        let body = if change {
            Body::ChangeRoom {
                name: name.to_owned(),
            }
        } else {
            Body::AccessRoom {
                name: name.to_owned(),
            }
        };
        let (mode, status, peers) = match link.request(self.proto(), body, None)? {
            Body::AccessAnswer {
                mode,
                status,
                peers,
            }
            | Body::ChangeAnswer {
                mode,
                status,
                peers,
            } => (mode, status, peers),
            other => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("unexpected answer to a room access: {other:?}"),
                ))
            }
        };
        match status {
            Access::Granted => {
                let mut peers = peers;
                peers.truncate(MAX_PEERS);
                link.st.lock().room = Room {
                    name: name.to_owned(),
                    mode,
                    peers,
                };
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

    /// Rooms: back to the public room. `CW_NOT_IN_ROOM` when already there.
    pub fn room_leave(&self) -> Result<()> {
        let link = self.registered()?;
        match link.request(self.proto(), Body::Leave, None)? {
            Body::LeaveAnswer { ok: true } => {
                link.st.lock().room = Room::public();
                Ok(())
            }
            Body::LeaveAnswer { ok: false } => {
                link.st.lock().room = Room::public();
                Err(Error::new(
                    ErrorKind::NotInRoom,
                    "already in the public room",
                ))
            }
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected answer to QUITTER_MESSAGERIE_PRIVEE: {other:?}"),
            )),
        }
    }

    /// Rooms: the room this client is in as (name, mode); "" is the public room.
    pub fn room_current(&self) -> Result<(String, Mode)> {
        let link = self.registered()?;
        let st = link.st.lock();
        Ok((st.room.name.clone(), st.room.mode))
    }

    /// Rooms: the peers of the current decentralised room as the library
    /// knows them (the access answer, plus members whose texts arrived).
    pub fn room_peers(&self) -> Result<Vec<String>> {
        let link = self.registered()?;
        let st = link.st.lock();
        Ok(st.room.peers.iter().map(|p| p.name.clone()).collect())
    }

    /// Rooms: the members of room `name` ("" for the public room); empty
    /// for a room that does not exist.
    pub fn room_members(&self, name: &str) -> Result<Vec<String>> {
        let link = self.link();
        if !name.is_empty() {
            check_room_name(name)?;
        }
        self.registered()?;
        match link.request(
            self.proto(),
            Body::ListClients {
                room: name.to_owned(),
            },
            None,
        )? {
            Body::ClientList { names } => Ok(names),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected answer to DEMANDER_LISTE_CLIENT: {other:?}"),
            )),
        }
    }

    /// Rooms: invite `user` into the current private room. The server
    /// acknowledges every invitation; it forwards it only when `user` is
    /// online, so `Ok` does not mean it was delivered.
    pub fn room_invite(&self, user: &str) -> Result<()> {
        let link = self.link();
        if user.len() > MAX_USER_NAME {
            return Err(Error::new(
                ErrorKind::TooLong,
                "a rooms name has at most 10 bytes",
            ));
        }
        if !valid_user_name(user) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a rooms name is 1 to 10 bytes without '#'",
            ));
        }
        self.registered()?;
        if link.st.lock().room.name.is_empty() {
            return Err(Error::new(
                ErrorKind::NotInRoom,
                "invitations are into a private room: join or create one first",
            ));
        }
        match link.request(
            self.proto(),
            Body::Invite {
                user: user.to_owned(),
            },
            None,
        )? {
            Body::InviteAck => Ok(()),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected answer to INVITER_MESSAGERIE_PRIVEE: {other:?}"),
            )),
        }
    }

    /// Rooms: answer the latest unanswered invitation into `room` ("" for
    /// the latest of all). Accepting waits until the server has moved this
    /// client (checked with member lists) and, for a decentralised room,
    /// fetches the peers.
    pub fn room_answer_invitation(&self, room: &str, accept: bool) -> Result<()> {
        let link = self.registered()?;
        let (bytes, inv_room, mode, me) = {
            let mut st = link.st.lock();
            let id = st.id;
            let me = st.name.clone().unwrap_or_default();
            let inv = st
                .invitations
                .iter_mut()
                .rev()
                .find(|i| i.answer.is_none() && (room.is_empty() || i.room == room))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NoSuchRequest,
                        format!("no unanswered invitation into {room:?}"),
                    )
                })?;
            inv.answer = Some(accept);
            log::debug!("rooms: answering {}'s invitation: {accept}", inv.from);
            (
                encode(id, inv.seq, Body::InvitationAnswer { accept }),
                inv.room.clone(),
                inv.mode,
                me,
            )
        };
        // Sent once: if it is lost, the server's retransmitted invitation
        // gets this answer again from the reader.
        link.send_to(link.server, &bytes);
        if !accept {
            return Ok(());
        }
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
            return Err(Error::new(
                ErrorKind::RoomFull,
                format!(
                    "not moved into {inv_room:?}: the room is full or gone, or the invitation \
                     expired (the server forgets it about 0.5 s after sending it)"
                ),
            ));
        }
        link.st.lock().room = Room {
            name: inv_room.clone(),
            mode,
            peers: Vec::new(),
        };
        if mode == Mode::Decentralised && members.len() > 1 {
            // Accepting gives no peer list; asking for access again from
            // inside the room (not alone in it) does, and keeps us there.
            self.room_join(&inv_room)?;
        }
        Ok(())
    }

    /// Rooms: a TEXTE in the current room. Public or centralised: to the
    /// server, which forwards it. Decentralised: to every known peer
    /// directly, each acknowledging; peers that never acknowledge are
    /// dropped from the list and named in the `CW_TIMEOUT` error.
    pub fn send_message(&self, text: &str) -> Result<()> {
        let link = self.link();
        if text.len() > MAX_CHAT {
            return Err(Error::new(
                ErrorKind::TooLong,
                format!(
                    "text is {} bytes; rooms allows at most {MAX_CHAT}",
                    text.len()
                ),
            ));
        }
        self.registered()?;
        let room = link.st.lock().room.clone();
        let body = || Body::Text {
            chat: text.to_owned(),
        };
        if room.mode == Mode::Centralised || room.name.is_empty() {
            return match link.request(self.proto(), body(), None)? {
                Body::TextAck => Ok(()),
                other => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("unexpected answer to TEXTE: {other:?}"),
                )),
            };
        }
        let targets: Vec<SocketAddr> = room
            .peers
            .iter()
            .map(|p| SocketAddr::new(IpAddr::V4(p.ip), p.port))
            .collect();
        let results = link.exchange(
            self.proto(),
            targets.iter().map(|t| (*t, body())).collect(),
            None,
        )?;
        let failed: HashSet<SocketAddr> = targets
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(t, _)| *t)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let mut st = link.st.lock();
        let names: Vec<String> = st
            .room
            .peers
            .iter()
            .filter(|p| failed.contains(&SocketAddr::new(IpAddr::V4(p.ip), p.port)))
            .map(|p| p.name.clone())
            .collect();
        st.room
            .peers
            .retain(|p| !failed.contains(&SocketAddr::new(IpAddr::V4(p.ip), p.port)));
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "no acknowledgement from {} after {ROOMS_TRIES} tries; removed from the peer list",
                names.join(", ")
            ),
        ))
    }
}
