//! The rooms client's protocol core, without sockets, threads or a clock
//! of its own: datagrams and the time go in, datagrams to send, events for
//! the application and the answers its requests wait for come out. The
//! reliability (numbering, T and M, duplicates, the answer cache) is
//! proto's `reliable::Endpoint`, the same machine the server drives; this
//! file adds what a client knows: its id, its room and peers, the names it
//! learned, the invitations it holds and the keep-alive.
//!
//! Every structure is bounded: the endpoint's caps, 64 invitations, 254
//! peers, one name per id, one keep-alive in flight, and the requests of
//! the callers (each removed by its caller).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::reliable::{
    self, Endpoint, Event as LinkEvent, Incoming, SendError, RETRY_EVERY, TRIES,
};
use chinwag_proto::rooms::{
    kind, split_bridged, Body, Message, Mode, Peer, Reason, MAX_ROOM_SIZE, SERVER, UNREGISTERED,
};

use crate::core::{Error, ErrorKind, Event, Result};

/// Seed 003: a registered client says CONNEXION this often so the server
/// keeps it (chinwagd drops a client silent for 100 s).
pub const KEEPALIVE: Duration = Duration::from_secs(45);
/// Keep-alives in a row the server leaves unanswered (each sent M times)
/// before the client counts it gone: at the default interval, 90 s without
/// a word, by when chinwagd (which drops a client silent for 100 s, and
/// sends nothing when it stops: seed 003 has no such message) has
/// forgotten this one anyway.
pub const KEEPALIVES_UNANSWERED: u32 = 3;
/// How long an invitation may be answered (chinwagd keeps it this long).
pub const INVITATION_TTL: Duration = Duration::from_secs(60);
/// Unanswered invitations kept (the oldest are forgotten).
const INVITATIONS_KEPT: usize = 64;
/// How long after accepting an invitation into a decentralised room (or
/// asking for access to a room) peers' texts are taken as the room's
/// while the library has not yet entered it: the server moves a client
/// when it reads the answer, and its members may write at once, before
/// the access answer that tells this client it is in.
const JOIN_GRACE: Duration = Duration::from_secs(10);
/// How long a decentralised room's texts go to the known peers without
/// asking the server first, after it left such a question unanswered (a
/// server that takes no second access request would otherwise cost every
/// text the whole wait).
pub const REFRESH_QUIET: Duration = Duration::from_secs(60);
/// A room holds at most 254 members: at most 253 peers, and the list
/// learned from texts is capped at this too.
const MAX_PEERS: usize = MAX_ROOM_SIZE as usize - 1;

/// How long a caller may wait for one request: M sends T apart, and a
/// margin that only matters if the reader thread died.
pub fn request_limit() -> Duration {
    RETRY_EVERY * (TRIES + 10)
}

/// The endpoint's bounds for a client: requests remembered for duplicate
/// suppression cover a busy room's texts for longer than any sender
/// retransmits; answers are small.
fn link_config() -> reliable::Config {
    reliable::Config {
        answers_per_peer: 1024,
        answers_total: 4096,
        answer_bytes: 1 << 20,
        outstanding_per_peer: 256,
        ..reliable::Config::default()
    }
}

/// An address as the protocol sees it: an IPv4 peer reached through an
/// IPv6 socket or name (`::ffff:a.b.c.d`) is the IPv4 address it is.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn peer_addr(p: &Peer) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(p.ip), p.port)
}

/// The room this client is in, as the library last learned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// Empty: the public room.
    pub name: String,
    pub mode: Mode,
    /// Decentralised rooms: where the other members listen.
    pub peers: Vec<Peer>,
}

impl Room {
    pub fn public() -> Room {
        Room {
            name: String::new(),
            mode: Mode::Centralised,
            peers: Vec::new(),
        }
    }

    fn decentralised(&self) -> bool {
        !self.name.is_empty() && self.mode == Mode::Decentralised
    }
}

/// A request a caller waits for. Its NUM_SEQ towards `to` may be used
/// again once it is settled (a peer forgotten starts its numbering over),
/// so a ticket is also told apart by a serial number of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub to: SocketAddr,
    pub seq: u16,
    serial: u64,
}

/// How a decentralised text ended, peer by peer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Peers that acknowledged it (REPONSE_TEXTE).
    pub acked: usize,
    /// Peers that acknowledged nothing (or answered something else): they
    /// may have it.
    pub silent: Vec<String>,
    /// Members the server listed for this text that refused it (ERREUR
    /// `[TEXTE] 5`: in no decentralised room by their own account).
    pub missed: Vec<String>,
    /// Peers known only from earlier that refused it: they left.
    pub stale: Vec<String>,
}

impl Delivery {
    /// Every peer that should have read it did.
    pub fn complete(&self) -> bool {
        self.silent.is_empty() && self.missed.is_empty()
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Its answer, or an ERREUR naming it.
    Answer(Body),
    /// M sends and no answer, or the caller's time ran out: it may have
    /// been carried out all the same.
    Unanswered,
}

struct Invitation {
    seq: u16,
    from: String,
    room: String,
    mode: Mode,
    until: Instant,
    answered: bool,
}

pub struct Machine {
    link: Endpoint<SocketAddr>,
    server: SocketAddr,
    /// ID_USER; 0 until registered.
    id: u8,
    name: Option<String>,
    logging_in: bool,
    room: Room,
    /// Until when a peer's text counts as the room's although no
    /// decentralised room is entered yet (see [`JOIN_GRACE`]).
    joining_until: Option<Instant>,
    /// Until when this room's member list is not asked for before a text
    /// (see [`REFRESH_QUIET`]); entering another room ends it.
    refresh_quiet_until: Option<Instant>,
    /// Names learned per id: its own, and peers of decentralised rooms
    /// whose texts came from a listed address.
    names: HashMap<u8, String>,
    invitations: VecDeque<Invitation>,
    /// Requests a caller waits for (by serial), and their replies.
    waiting: HashMap<u64, Option<Reply>>,
    /// The requests still in flight: who answers them is whose serial.
    live: HashMap<(SocketAddr, u16), u64>,
    serial: u64,
    /// The keep-alive in flight, if any.
    keepalive: Option<u16>,
    keepalive_every: Duration,
    last_keepalive: Option<Instant>,
    /// Keep-alives given up in a row, since the server last sent anything.
    keepalives_unanswered: u32,
    events: Vec<Event>,
    /// Why the server no longer knows this client.
    lost: Option<String>,
    closed: bool,
}

impl Machine {
    /// A client of the server at `server`; `first_seq` is the NUM_SEQ of
    /// its first request (random, so a forged answer must guess it).
    pub fn new(server: SocketAddr, first_seq: u16) -> Machine {
        let server = canonical(server);
        let mut link = Endpoint::new(link_config());
        link.set_next_seq(server, first_seq);
        Machine {
            link,
            server,
            id: UNREGISTERED,
            name: None,
            logging_in: false,
            room: Room::public(),
            joining_until: None,
            refresh_quiet_until: None,
            names: HashMap::new(),
            invitations: VecDeque::new(),
            waiting: HashMap::new(),
            live: HashMap::new(),
            serial: 0,
            keepalive: None,
            keepalive_every: KEEPALIVE,
            last_keepalive: None,
            keepalives_unanswered: 0,
            events: Vec::new(),
            lost: None,
            closed: false,
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Nothing more is sent or received; callers waiting are told so.
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn set_keepalive(&mut self, every: Duration) {
        self.keepalive_every = every.max(Duration::from_millis(1));
    }

    // ---- what comes out ------------------------------------------------

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.link.poll_transmit().map(|t| (t.to, t.bytes))
    }

    /// Events for the application, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Why the server no longer knows this client, once.
    pub fn take_lost(&mut self) -> Option<String> {
        self.lost.take()
    }

    // ---- requests ------------------------------------------------------

    /// Send `body` to `to` reliably; its reply comes through [`Machine::reply`].
    pub fn request(&mut self, now: Instant, to: SocketAddr, body: Body) -> Result<Ticket> {
        if self.closed {
            return Err(Error::closed());
        }
        let to = canonical(to);
        match self.link.send(now, to, self.id, body) {
            Ok(seq) => {
                self.serial += 1;
                let t = Ticket {
                    to,
                    seq,
                    serial: self.serial,
                };
                if let Some(old) = self.live.insert((to, seq), t.serial) {
                    // Not in flight any more, whatever the endpoint says.
                    self.settle_serial(old, Reply::Unanswered);
                }
                self.waiting.insert(t.serial, None);
                Ok(t)
            }
            Err(SendError::Busy) => Err(Error::new(
                ErrorKind::Busy,
                "too many requests are waiting for their answers",
            )),
            Err(SendError::NotARequest) => Err(Error::new(
                ErrorKind::InvalidArgument,
                "an answer is not a request",
            )),
        }
    }

    /// The reply to `t`, once there is one (then `t` is done).
    pub fn reply(&mut self, t: Ticket) -> Option<Reply> {
        if !matches!(self.waiting.get(&t.serial), Some(Some(_))) {
            return None;
        }
        self.waiting.remove(&t.serial).flatten()
    }

    /// The caller stops waiting for `t`: it is not sent again.
    pub fn abandon(&mut self, t: Ticket) {
        self.waiting.remove(&t.serial);
        if self.live.get(&(t.to, t.seq)) == Some(&t.serial) {
            self.live.remove(&(t.to, t.seq));
            self.link.cancel(t.to, t.seq);
        }
    }

    fn settle_serial(&mut self, serial: u64, r: Reply) {
        if let Some(w) = self.waiting.get_mut(&serial) {
            w.get_or_insert(r);
        }
    }

    /// The request `seq` to `to` ended with `r`.
    fn settle(&mut self, to: SocketAddr, seq: u16, r: Reply) {
        if let Some(serial) = self.live.remove(&(to, seq)) {
            self.settle_serial(serial, r);
        }
    }

    /// Requests whose caller still waits (for tests and bounds).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Invitations held, answered or not (for tests and bounds).
    pub fn invitations(&self) -> usize {
        self.invitations.len()
    }

    // ---- login and goodbye ---------------------------------------------

    /// A login may start: not registered, none under way.
    pub fn begin_login(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::closed());
        }
        if self.id != UNREGISTERED {
            return Err(Error::new(ErrorKind::AlreadyLoggedIn, "already logged in"));
        }
        if self.logging_in {
            return Err(Error::new(
                ErrorKind::Busy,
                "another login is waiting for its answer",
            ));
        }
        self.logging_in = true;
        Ok(())
    }

    pub fn end_login(&mut self) {
        self.logging_in = false;
    }

    /// The server accepted `name` as `id`. A keep-alive goes at once: the
    /// server then knows this address receives (its first datagram with the
    /// new id), so what it sends here is not held back as to an unproved
    /// address.
    pub fn registered(&mut self, now: Instant, id: u8, name: &str) {
        self.logging_in = false;
        self.id = id;
        self.name = Some(name.to_owned());
        self.names.insert(id, name.to_owned());
        self.room = Room::public();
        self.send_keepalive(now);
    }

    /// DECONNEXION, once, for the caller to send (the machine is closed
    /// after it: nothing waits for the answer). The caller has sent what
    /// was queued before; this is the last datagram.
    pub fn goodbye(&mut self, now: Instant) -> Option<Vec<u8>> {
        let open = !std::mem::replace(&mut self.closed, true);
        if !open || self.id == UNREGISTERED {
            return None;
        }
        let server = self.server;
        self.link
            .send(now, server, self.id, Body::Disconnect)
            .ok()?;
        let mut last = None;
        while let Some((_, b)) = self.poll_transmit() {
            last = Some(b);
        }
        last
    }

    // ---- the room ------------------------------------------------------

    pub fn room(&self) -> &Room {
        &self.room
    }

    /// Now in room `name` ("" public) with these peers (decentralised).
    /// Peers the protocol cannot reach (address 0.0.0.0, port 0) and
    /// repeats are left out; peers no longer listed are forgotten.
    pub fn enter(&mut self, name: &str, mode: Mode, peers: Vec<Peer>) {
        let mut kept: Vec<Peer> = Vec::new();
        for p in peers {
            let a = peer_addr(&p);
            if p.ip.is_unspecified()
                || p.port == 0
                || a == self.server
                || kept.iter().any(|k| peer_addr(k) == a)
                || kept.len() >= MAX_PEERS
            {
                continue;
            }
            kept.push(p);
        }
        let gone: Vec<SocketAddr> = self
            .room
            .peers
            .iter()
            .map(peer_addr)
            .filter(|a| !kept.iter().any(|k| peer_addr(k) == *a))
            .collect();
        for a in gone {
            self.forget_peer(a);
        }
        if self.room.name != name {
            self.refresh_quiet_until = None;
        }
        self.room = Room {
            name: name.to_owned(),
            mode,
            peers: kept,
        };
        self.joining_until = None;
    }

    /// About to be moved into a room (an invitation accepted, an access
    /// asked for): until [`Machine::enter`] (or [`JOIN_GRACE`]), a peer's
    /// text is acknowledged and shown, not refused.
    pub fn joining(&mut self, now: Instant) {
        self.joining_until = Some(now + JOIN_GRACE);
    }

    /// The server left a question for this room's members unanswered:
    /// texts go to the known peers unasked for [`REFRESH_QUIET`].
    pub fn refresh_unanswered(&mut self, now: Instant) {
        self.refresh_quiet_until = Some(now + REFRESH_QUIET);
    }

    /// Whether a text should ask the server for the members first.
    pub fn should_refresh(&self, now: Instant) -> bool {
        self.refresh_quiet_until.is_none_or(|u| now >= u)
    }

    /// Not moved after all (refused, no answer).
    pub fn not_joining(&mut self) {
        self.joining_until = None;
    }

    /// Back in the public room.
    pub fn to_public(&mut self) {
        self.enter("", Mode::Centralised, Vec::new());
    }

    /// Where texts go in a decentralised room.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.room.peers.iter().map(peer_addr).collect()
    }

    /// How a decentralised text sent to `sent` ended (`replies` in the
    /// same order). A peer that answered ERREUR `[TEXTE] 5` says it is in
    /// no decentralised room: it did not take the text and is dropped; so
    /// is a peer that acknowledged nothing after M sends (or answered
    /// anything else). `listed`: the peers came from the server's answer
    /// for this very text, so a refusal is a member missing the text (it
    /// left or joined meanwhile), not a stale address.
    pub fn delivered(&mut self, sent: &[SocketAddr], replies: &[Reply], listed: bool) -> Delivery {
        let mut d = Delivery::default();
        let mut gone = Vec::new();
        for (a, r) in sent.iter().zip(replies) {
            let name = || {
                self.room
                    .peers
                    .iter()
                    .find(|p| peer_addr(p) == *a)
                    .map_or_else(|| a.to_string(), |p| p.name.clone())
            };
            match r {
                Reply::Answer(Body::TextAck) => d.acked += 1,
                Reply::Answer(Body::Error {
                    reason: Reason::NoRecipient,
                    ..
                }) => {
                    if listed {
                        d.missed.push(name());
                    } else {
                        d.stale.push(name());
                    }
                    gone.push(*a);
                }
                _ => {
                    d.silent.push(name());
                    gone.push(*a);
                }
            }
        }
        self.room.peers.retain(|p| !gone.contains(&peer_addr(p)));
        for a in gone {
            self.forget_peer(a);
        }
        d
    }

    /// Nothing more to or from `a`; whoever waits on it hears "unanswered".
    fn forget_peer(&mut self, a: SocketAddr) {
        if a == self.server {
            return;
        }
        self.link.forget(a);
        let gone: Vec<(SocketAddr, u16)> = self.live.keys().filter(|k| k.0 == a).copied().collect();
        for (to, seq) in gone {
            self.settle(to, seq, Reply::Unanswered);
        }
    }

    fn name_of(&self, user: u8) -> String {
        self.names
            .get(&user)
            .cloned()
            .unwrap_or_else(|| format!("#{user}"))
    }

    /// The name of a peer's text, learning what the datagram tells: the
    /// address's name gives the id's name, and an unlisted address (a
    /// member who joined after us) joins the peer list.
    fn peer_author(&mut self, from: SocketAddr, user: u8) -> String {
        if let Some(p) = self.room.peers.iter().find(|p| peer_addr(p) == from) {
            let name = p.name.clone();
            if user != UNREGISTERED && user != SERVER && user != self.id {
                self.names.insert(user, name.clone());
            }
            return name;
        }
        let name = self.name_of(user);
        if let (IpAddr::V4(ip), true) = (from.ip(), self.room.peers.len() < MAX_PEERS) {
            if !ip.is_unspecified() && from.port() != 0 {
                self.room.peers.push(Peer {
                    ip,
                    port: from.port(),
                    name: name.clone(),
                });
            }
        }
        name
    }

    // ---- invitations ---------------------------------------------------

    /// Answer the latest unanswered invitation into `room` ("" any): the
    /// answer is sent (and sent again by the endpoint for each copy of the
    /// invitation the server retransmits). Returns the room and its mode.
    pub fn answer_invitation(
        &mut self,
        now: Instant,
        room: &str,
        accept: bool,
    ) -> Result<(String, Mode)> {
        if self.closed {
            return Err(Error::closed());
        }
        let inv = self
            .invitations
            .iter_mut()
            .rev()
            .find(|i| !i.answered && i.until > now && (room.is_empty() || i.room == room))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NoSuchRequest,
                    format!("no unanswered invitation into {room:?} (they last 60 s)"),
                )
            })?;
        inv.answered = true;
        log::debug!("rooms: answering {}'s invitation: {accept}", inv.from);
        let (seq, name, mode) = (inv.seq, inv.room.clone(), inv.mode);
        if accept {
            self.joining(now);
        }
        let m = Message {
            user: self.id,
            seq,
            body: Body::InvitationAnswer { accept },
        };
        self.link.answer(now, self.server, &m);
        Ok((name, mode))
    }

    // ---- datagrams and time --------------------------------------------

    fn answer(&mut self, now: Instant, to: SocketAddr, seq: u16, body: Body) {
        let m = Message {
            user: self.id,
            seq,
            body,
        };
        self.link.answer(now, to, &m);
    }

    /// One datagram from `from`. Anything that does not decode, or does
    /// not fit what this client expects, is dropped.
    pub fn datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) {
        if self.closed {
            return;
        }
        let from = canonical(from);
        let from_server = from == self.server;
        if from_server {
            self.keepalives_unanswered = 0;
        }
        match self.link.receive(now, from, d) {
            Incoming::Request(m) => self.request_in(now, from, m),
            Incoming::Unreadable { header, error } => {
                log::debug!(
                    "rooms: type {} from {from} unreadable: {error}",
                    header.kind
                );
                if from_server && self.id != UNREGISTERED {
                    let reason = Reason::for_error(&error);
                    let refused = header.kind;
                    self.answer(now, from, header.seq, Body::Error { refused, reason });
                }
            }
            Incoming::Answer { message, .. } => {
                if from_server && self.keepalive == Some(message.seq) {
                    self.keepalive = None;
                    match message.body {
                        Body::KeptAlive { ok: false } => {
                            self.lost = Some(
                                "the server no longer knows this client (expired, \
                                 closed by an operator, or replaced by a new login \
                                 from this address)"
                                    .into(),
                            );
                            self.closed = true;
                        }
                        Body::KeptAlive { ok: true } => {}
                        other => log::debug!("rooms: keep-alive answered {other:?}"),
                    }
                } else {
                    self.settle(from, message.seq, Reply::Answer(message.body));
                }
            }
            Incoming::Stray(m) => log::debug!(
                "rooms: unexpected type {} seq {} from {from} dropped",
                m.body.kind(),
                m.seq
            ),
            Incoming::Duplicate { .. } => {}
            Incoming::Junk(e) => log::debug!("rooms: datagram from {from} dropped: {e}"),
        }
    }

    /// A request seen for the first time.
    fn request_in(&mut self, now: Instant, from: SocketAddr, m: Message) {
        let from_server = from == self.server;
        if self.id == UNREGISTERED {
            log::debug!("rooms: type {} before login dropped", m.body.kind());
            return;
        }
        let Message { user, seq, body } = m;
        match body {
            Body::Text { .. }
                if !from_server
                    && !self.room.decentralised()
                    && self.joining_until.is_none_or(|u| now >= u) =>
            {
                // A peer's text while this client is in no decentralised
                // room (it left, or never joined): nobody here reads it,
                // so it is refused as the server refuses a text nobody
                // would hear, ERREUR [TEXTE] 5, and its sender does not
                // count it as read.
                log::debug!("rooms: text from {from} outside a decentralised room refused");
                let refused = kind::TEXTE;
                let reason = Reason::NoRecipient;
                self.answer(now, from, seq, Body::Error { refused, reason });
            }
            Body::Text { chat } => {
                // Acknowledged even when not shown, so its sender stops.
                self.answer(now, from, seq, Body::TextAck);
                // A text the server forwards for a user of another dialect
                // (docs/bridging.md) names its author in the text.
                if let Some((author, text)) =
                    split_bridged(&chat).filter(|_| from_server && user == SERVER)
                {
                    self.events.push(Event::Message {
                        from: author.to_owned(),
                        text: text.to_owned(),
                    });
                    return;
                }
                let author = if from_server {
                    self.name_of(user)
                } else {
                    self.peer_author(from, user)
                };
                self.events.push(Event::Message {
                    from: author,
                    text: chat,
                });
            }
            Body::Invitation {
                from: inviter,
                mode,
                room,
            } if from_server => {
                // Answered by the application, later.
                if self.invitations.len() >= INVITATIONS_KEPT {
                    self.invitations.pop_front();
                }
                self.invitations.push_back(Invitation {
                    seq,
                    from: inviter.clone(),
                    room: room.clone(),
                    mode,
                    until: now + INVITATION_TTL,
                    answered: false,
                });
                self.events.push(Event::RoomInvitation {
                    from: inviter,
                    room,
                    mode,
                });
            }
            Body::RoomClosed { room } if from_server => {
                self.answer(now, from, seq, Body::RoomClosedAck);
                // Only if it is the room we think we are in: a room change
                // answered meanwhile stands.
                if !self.room.name.is_empty() && self.room.name == room {
                    self.to_public();
                }
                self.events.push(Event::RoomClosed { room });
            }
            other if from_server => {
                let refused = other.kind();
                log::debug!("rooms: the server sent type {refused}, not for a client");
                let reason = Reason::NotAccepted;
                self.answer(now, from, seq, Body::Error { refused, reason });
            }
            other => log::debug!("rooms: type {} from {from} dropped", other.kind()),
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        self.last_keepalive = Some(now);
        if self.keepalive.is_some() {
            return;
        }
        let server = self.server;
        match self
            .link
            .send(now, server, self.id, Body::Connexion { name: None })
        {
            Ok(seq) => self.keepalive = Some(seq),
            Err(e) => log::debug!("rooms: keep-alive not sent: {e:?}"),
        }
    }

    /// Retransmissions, give-ups, expired invitations and the keep-alive.
    pub fn tick(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.link.handle_timeout(now);
        while let Some(LinkEvent::Unanswered { to, seq, .. }) = self.link.poll_event() {
            if to == self.server && self.keepalive == Some(seq) {
                self.keepalive = None;
                self.keepalives_unanswered += 1;
                log::warn!(
                    "rooms: keep-alive unanswered by {to} ({} in a row)",
                    self.keepalives_unanswered
                );
                if self.keepalives_unanswered >= KEEPALIVES_UNANSWERED {
                    self.lost = Some(format!(
                        "the server answered none of the last {KEEPALIVES_UNANSWERED} \
                         keep-alives: it stopped, or the network between is down"
                    ));
                    self.closed = true;
                    return;
                }
            } else {
                self.settle(to, seq, Reply::Unanswered);
            }
        }
        while self.invitations.front().is_some_and(|i| i.until <= now) {
            self.invitations.pop_front();
        }
        let due = self
            .last_keepalive
            .is_some_and(|t| now.saturating_duration_since(t) >= self.keepalive_every);
        if self.id != UNREGISTERED && due {
            self.send_keepalive(now);
        }
    }
}

#[cfg(test)]
mod tests;
