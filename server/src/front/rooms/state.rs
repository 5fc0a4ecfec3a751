//! The rooms policy (seed 003): users, rooms, invitations, who hears which
//! text, and the abuse bounds, driven by datagrams and a clock passed in.
//! It does no I/O and never calls the hub: a registration is a ticket the
//! caller completes after asking the hub for the name, and sessions to log
//! out are handed back, so the caller holds no lock of ours across a hub
//! call. Every datagram leaves through one gate (return routability).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::reliable::{
    self, Endpoint, Event as LinkEvent, Incoming, Role, SendError,
};
use chinwag_proto::rooms::{
    self as wire, kind, Access, Body, Creation, Header, Message, Mode, Peer as WirePeer, Reason,
    Registration, RoomInfo,
};
use chinwag_proto::DecodeError;
use rand::{Rng, SeedableRng};

use super::guard::{canonical, ip_key, Bucket, Guard};

/// The public room.
pub const PUBLIC: u8 = 0;
/// How long an invitation can be accepted, whatever its retransmissions.
pub const INVITATION_TTL: Duration = Duration::from_secs(60);
/// Invitations kept per invitee (the oldest go first).
pub const INVITATIONS_KEPT: usize = 16;
/// Datagrams with a wrong ID_USER that cancel a registration not yet
/// confirmed (an id is drawn among up to 254: a blind guesser has about
/// 3 chances in 254).
pub const ID_STRIKES: u8 = 3;
/// Forwarded texts in a row left unacknowledged after all M sends that
/// make the server drop a client (it is gone, or it never acknowledges).
pub const UNANSWERED_TEXTS: u32 = 4;
/// Registrations not yet confirmed at once from one address; a new one
/// makes the oldest give way (a forger cannot pile them up).
pub const UNCONFIRMED_PER_IP: usize = 4;
/// Messages in flight to a client not yet confirmed (each sent once: its
/// retransmissions are paid from its address's credit).
pub const UNCONFIRMED_IN_FLIGHT: usize = 4;
/// How long an address that proved it receives keeps counting as proved
/// after its client left (so a late DECONNEXION or keep-alive is answered).
pub const PROVED_FOR: Duration = Duration::from_secs(600);
const PROVED_KEPT: usize = 4096;
/// How often idle clients, old invitations and per-address state are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The rooms settings, from `Config::rooms` (where the defaults are).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A client silent this long (no keep-alive) is dropped.
    pub idle_timeout: Duration,
    /// T, M and the answer cache's bounds.
    pub link: reliable::Config,
    /// Clients registered at once from one IPv4 address or IPv6 /64.
    pub max_per_ip: usize,
    /// Registrations one address may attempt per minute (token bucket).
    pub registrations_per_minute: u32,
    /// Requests one client may make per second (bursts of twice that).
    pub requests_per_second: u32,
}

struct User<S> {
    name: String,
    addr: SocketAddr,
    room: u8,
    last_seen: Instant,
    registered_at: Instant,
    session: S,
    /// A datagram from its address carried its ID_USER: it receives.
    confirmed: bool,
    id_strikes: u8,
    unanswered_texts: u32,
    invitations: VecDeque<Invitation>,
    requests: Bucket,
}

/// An invitation bound to a room's identity (`uid`, never reused), not to
/// its id (reused once the room is gone).
struct Invitation {
    seq: u16,
    room: u8,
    uid: u64,
    until: Instant,
}

struct Room {
    uid: u64,
    name: String,
    mode: Mode,
    max: u8,
    members: BTreeSet<u8>,
    /// The most members it ever had: a room that had two or more and is
    /// down to one closes (§2.2); a new room alone with its creator does not.
    peak: usize,
}

impl Room {
    /// The public room (id 0): no name, no limit, never closed.
    fn public() -> Room {
        Room {
            uid: 0,
            name: String::new(),
            mode: Mode::Centralised,
            max: u8::MAX,
            members: BTreeSet::new(),
            peak: 0,
        }
    }
}

/// A registration that waits for the hub's verdict on the name.
#[derive(Debug)]
pub struct Ticket {
    pub from: SocketAddr,
    pub name: String,
    id: u8,
    seq: u16,
    carried: usize,
}

impl Ticket {
    /// The id the client gets if the hub welcomes its name.
    pub fn id(&self) -> u8 {
        self.id
    }
}

/// The hub's verdict on a ticket's name.
pub enum Verdict<S> {
    Welcome(S),
    Taken,
    Invalid,
}

/// What the caller must do once it has released the state.
pub struct Output<S> {
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    pub logouts: Vec<S>,
    /// What to add to the operator's metrics.
    pub tally: Tally,
}

/// Events the operator's metrics count, since the last `take_output`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Clients registered.
    pub registered: u32,
    /// Texts accepted for forwarding.
    pub messages: u32,
    /// Copies of those texts sent to recipients.
    pub delivered: usize,
    /// Clients dropped for silence.
    pub idle: u32,
}

/// Counters for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams the gate kept from an address not proved to receive.
    pub withheld: u64,
    /// Messages not sent because their recipient had too many in flight.
    pub busy: u64,
    /// Clients dropped for leaving texts unacknowledged.
    pub unresponsive: u64,
    /// Times the state was repaired after a panic in one of its calls.
    pub recoveries: u64,
}

pub struct Rooms<S> {
    set: Settings,
    link: Endpoint<SocketAddr>,
    users: HashMap<u8, User<S>>,
    by_addr: HashMap<SocketAddr, u8>,
    /// Ids promised to tickets still at the hub.
    reserved: HashMap<u8, SocketAddr>,
    rooms: HashMap<u8, Room>,
    next_uid: u64,
    guard: Guard,
    /// Addresses that proved they receive, and until when that counts
    /// once their client is gone.
    proved: HashMap<SocketAddr, Instant>,
    proved_order: VecDeque<SocketAddr>,
    /// The datagram being handled: its sender and its size.
    current: Option<(SocketAddr, usize)>,
    next_sweep: Option<Instant>,
    rng: rand::rngs::StdRng,
    out: Vec<(SocketAddr, Vec<u8>)>,
    logouts: Vec<S>,
    tally: Tally,
    counters: Counters,
    /// Test hook: the named place panics once (see `trap`).
    #[cfg(test)]
    pub(crate) trap: Option<&'static str>,
}

/// What answers a request whose body does not decode: for the types whose
/// answer has a code for a bad name, that code (01); else an ERREUR.
fn refusal(k: u8, error: &DecodeError) -> Body {
    let name_error = matches!(
        error,
        DecodeError::TooLong { .. } | DecodeError::InvalidUtf8(_) | DecodeError::Truncated
    );
    let no_room =
        |change| Body::access_answer(change, Mode::Centralised, Access::NoSuchRoom, Vec::new());
    match k {
        kind::CREER_MESSAGERIE_PRIVEE if name_error => Body::CreateAnswer {
            status: Creation::BadName,
            room: 0,
        },
        kind::DEMANDE_ACCES_MESSAGERIE_PRIVEE if name_error => no_room(false),
        kind::CHANGER_MESSAGERIE if name_error => no_room(true),
        _ => Body::Error {
            refused: k,
            reason: Reason::for_error(error),
        },
    }
}

fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

impl<S: Clone> Rooms<S> {
    /// `seed` draws the ids and the first NUM_SEQ of each client.
    pub fn new(set: Settings, seed: u64) -> Self {
        let mut rooms = HashMap::new();
        rooms.insert(PUBLIC, Room::public());
        Rooms {
            link: Endpoint::new(set.link.clone()),
            guard: Guard::new(set.registrations_per_minute),
            set,
            users: HashMap::new(),
            by_addr: HashMap::new(),
            reserved: HashMap::new(),
            rooms,
            next_uid: 1,
            proved: HashMap::new(),
            proved_order: VecDeque::new(),
            current: None,
            next_sweep: None,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            out: Vec::new(),
            logouts: Vec::new(),
            tally: Tally::default(),
            counters: Counters::default(),
            #[cfg(test)]
            trap: None,
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn online(&self) -> usize {
        self.users.len()
    }

    /// Datagrams to send and sessions to log out, for the caller to do
    /// once it has released the state.
    pub fn take_output(&mut self) -> Output<S> {
        Output {
            datagrams: std::mem::take(&mut self.out),
            logouts: std::mem::take(&mut self.logouts),
            tally: std::mem::take(&mut self.tally),
        }
    }

    // ---- the gate ------------------------------------------------------

    fn is_proved(&self, to: SocketAddr, now: Instant) -> bool {
        self.by_addr
            .get(&to)
            .is_some_and(|id| self.users[id].confirmed)
            || self.proved.get(&to).is_some_and(|until| *until > now)
    }

    /// Everything leaves through here. To an address that has not proved it
    /// receives: an answer no larger than the datagram it answers, charged
    /// to its IP's credit (what that IP sent); retransmissions only against
    /// that credit; and the first send of a message to a registered client
    /// (few: see `deliver`), so that a seed-003 client that registers and
    /// then only listens hears the room.
    fn emit(&mut self, now: Instant, to: SocketAddr, bytes: Vec<u8>, role: Role) {
        let ok = self.is_proved(to, now)
            || match (role, self.current) {
                (Role::Answer, Some((from, carried))) if from == to => {
                    let fits = bytes.len() <= carried;
                    if fits {
                        self.guard.charge(now, to.ip(), bytes.len());
                    }
                    fits
                }
                (Role::First, _) if self.by_addr.contains_key(&to) => true,
                _ => self.guard.spend(now, to.ip(), bytes.len()),
            };
        if ok {
            self.out.push((to, bytes));
        } else {
            self.counters.withheld += 1;
            log::debug!(
                "rooms {to}: {} bytes withheld (address not proved)",
                bytes.len()
            );
        }
    }

    fn drain(&mut self, now: Instant) {
        while let Some(t) = self.link.poll_transmit() {
            self.emit(now, t.to, t.bytes, t.role);
        }
    }

    fn remember_proved(&mut self, addr: SocketAddr, now: Instant) {
        if self.proved.insert(addr, now + PROVED_FOR).is_none() {
            self.proved_order.push_back(addr);
            while self.proved_order.len() > PROVED_KEPT {
                if let Some(old) = self.proved_order.pop_front() {
                    self.proved.remove(&old);
                }
            }
        }
    }

    // ---- datagrams -----------------------------------------------------

    /// One datagram from `from`. A ticket means: ask the hub for the name,
    /// then call [`Rooms::registered`].
    pub fn datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Option<Ticket> {
        let from = canonical_addr(from);
        self.guard.received(now, from.ip(), d.len());
        let h = match Header::peek(d) {
            Ok(h) => h,
            Err(e) => {
                log::debug!("rooms {from}: datagram dropped: {e}");
                return None;
            }
        };
        self.current = Some((from, d.len()));
        let ticket = match self.by_addr.get(&from).copied() {
            _ if h.kind == kind::CONNEXION && h.user == wire::UNREGISTERED => {
                self.first_connexion(now, from, d)
            }
            Some(id) if h.user == id => {
                self.registered_datagram(now, id, from, d);
                None
            }
            Some(id) => {
                self.wrong_id(now, id, from, h);
                None
            }
            None => {
                self.stranger(now, from, h);
                None
            }
        };
        self.drain(now);
        self.current = None;
        ticket
    }

    /// An address with a client claims another id: dropped; for a client
    /// not yet confirmed, a strike (someone guessing its id blindly).
    fn wrong_id(&mut self, now: Instant, id: u8, from: SocketAddr, h: Header) {
        log::debug!(
            "rooms {from}: claims id {} but registered as {id}; dropped",
            h.user
        );
        let u = self.users.get_mut(&id).expect("by_addr and users agree");
        if !u.confirmed {
            u.id_strikes += 1;
            if u.id_strikes >= ID_STRIKES {
                self.remove_user(now, id, "wrong ids before confirming");
            }
        }
    }

    /// A datagram from an address without a client: only a keep-alive and
    /// a DECONNEXION are answered (both say "not here any more").
    fn stranger(&mut self, now: Instant, from: SocketAddr, h: Header) {
        let body = match h.kind {
            kind::CONNEXION => Body::KeptAlive { ok: false },
            kind::DECONNEXION => Body::DisconnectAnswer { ok: true },
            _ => {
                log::debug!(
                    "rooms {from}: type {} from an unknown address dropped",
                    h.kind
                );
                return;
            }
        };
        let bytes = Message {
            user: wire::SERVER,
            seq: h.seq,
            body,
        }
        .to_bytes();
        self.emit(now, from, bytes, Role::Answer);
    }

    fn reply(&mut self, now: Instant, to: SocketAddr, seq: u16, body: Body) {
        self.link.answer(
            now,
            to,
            &Message {
                user: wire::SERVER,
                seq,
                body,
            },
        );
        self.drain(now);
    }

    fn first_connexion(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Option<Ticket> {
        if self.link.is_retransmission(from, d) {
            // Its answer again (or nothing yet, while the hub decides).
            self.link.receive(now, from, d);
            return None;
        }
        // A new registration from an address replaces whoever was there.
        if let Some(old) = self.by_addr.get(&from).copied() {
            self.remove_user(now, old, "registered again from its address");
        }
        let (seq, name) = match self.link.receive(now, from, d) {
            Incoming::Request(Message {
                seq,
                body: Body::Connexion { name: Some(name) },
                ..
            }) => (seq, name),
            // No name, a name without '#', too long, not UTF-8: §5.1.1.
            Incoming::Request(Message { seq, .. })
            | Incoming::Unreadable {
                header: Header { seq, .. },
                ..
            } => {
                self.refuse_registration(now, from, seq, Registration::InvalidName);
                return None;
            }
            _ => return None,
        };
        let ip = from.ip();
        if !wire::valid_user_name(&name) {
            self.refuse_registration(now, from, seq, Registration::InvalidName);
            return None;
        }
        let at_ip = self
            .users
            .values()
            .map(|u| u.addr)
            .chain(self.reserved.values().copied())
            .filter(|a| ip_key(a.ip()) == ip_key(ip))
            .count();
        // Every attempt counts against the rate, refused ones too.
        let in_rate = self.guard.may_register(now, ip);
        if !in_rate || at_ip >= self.set.max_per_ip {
            log::debug!("rooms {from}: registration refused (limit for its address)");
            self.reply(
                now,
                from,
                seq,
                Body::Error {
                    refused: kind::CONNEXION,
                    reason: Reason::Limit,
                },
            );
            return None;
        }
        // Registrations not yet confirmed from this address: the oldest
        // gives way past a few.
        let mut pending: Vec<(Instant, u8)> = self
            .users
            .iter()
            .filter(|(_, u)| !u.confirmed && ip_key(u.addr.ip()) == ip_key(ip))
            .map(|(id, u)| (u.registered_at, *id))
            .collect();
        if pending.len() >= UNCONFIRMED_PER_IP {
            pending.sort();
            self.remove_user(now, pending[0].1, "a newer registration from its address");
        }
        let Some(id) = self.free_id(now) else {
            self.refuse_registration(now, from, seq, Registration::NameTaken);
            return None;
        };
        self.reserved.insert(id, from);
        Some(Ticket {
            from,
            name,
            id,
            seq,
            carried: d.len(),
        })
    }

    fn refuse_registration(&mut self, now: Instant, from: SocketAddr, seq: u16, r: Registration) {
        self.reply(now, from, seq, Body::Registered { status: r, user: 0 });
    }

    /// A free id, drawn at random (it is the proof a client receives). When
    /// all 254 are taken, the oldest registration not yet confirmed gives
    /// its id up, so forged registrations cannot hold the id space.
    fn free_id(&mut self, now: Instant) -> Option<u8> {
        let free: Vec<u8> = (1..=254u8)
            .filter(|i| !self.users.contains_key(i) && !self.reserved.contains_key(i))
            .collect();
        if !free.is_empty() {
            return Some(free[self.rng.gen_range(0..free.len())]);
        }
        let oldest = self
            .users
            .iter()
            .filter(|(_, u)| !u.confirmed)
            .min_by_key(|(_, u)| u.registered_at)
            .map(|(id, _)| *id)?;
        self.remove_user(
            now,
            oldest,
            "its id went to a new registration (never confirmed)",
        );
        Some(oldest)
    }

    /// The hub's verdict on a ticket's name.
    pub fn registered(&mut self, now: Instant, t: Ticket, verdict: Verdict<S>) {
        self.current = Some((t.from, t.carried));
        let kept = self.reserved.get(&t.id) == Some(&t.from);
        if kept {
            self.reserved.remove(&t.id);
        }
        match verdict {
            Verdict::Welcome(session) if kept => {
                // Another registration from this address finished first.
                if let Some(old) = self.by_addr.get(&t.from).copied() {
                    self.remove_user(now, old, "registered again from its address");
                }
                let per_second = self.set.requests_per_second.max(1) as f64;
                self.users.insert(
                    t.id,
                    User {
                        name: t.name.clone(),
                        addr: t.from,
                        room: PUBLIC,
                        last_seen: now,
                        registered_at: now,
                        session,
                        confirmed: false,
                        id_strikes: 0,
                        unanswered_texts: 0,
                        invitations: VecDeque::new(),
                        requests: Bucket::full(2.0 * per_second, now),
                    },
                );
                self.by_addr.insert(t.from, t.id);
                self.tally.registered += 1;
                self.public().members.insert(t.id);
                let first: u16 = self.rng.gen();
                self.link.set_next_seq(t.from, first);
                log::debug!("rooms {}: {} registered as {}", t.from, t.name, t.id);
                self.reply(
                    now,
                    t.from,
                    t.seq,
                    Body::Registered {
                        status: Registration::Accepted,
                        user: t.id,
                    },
                );
            }
            // Shut down or replaced meanwhile: the session goes back.
            Verdict::Welcome(session) => self.logouts.push(session),
            Verdict::Taken => self.refuse_registration(now, t.from, t.seq, Registration::NameTaken),
            Verdict::Invalid => {
                self.refuse_registration(now, t.from, t.seq, Registration::InvalidName)
            }
        }
        self.drain(now);
        self.current = None;
    }

    fn public(&mut self) -> &mut Room {
        self.rooms.get_mut(&PUBLIC).expect("the public room")
    }

    fn registered_datagram(&mut self, now: Instant, id: u8, from: SocketAddr, d: &[u8]) {
        let u = self.users.get_mut(&id).expect("by_addr and users agree");
        u.last_seen = now;
        if !u.confirmed {
            u.confirmed = true;
            log::info!("rooms {from}: {} registered as {id}", u.name);
        }
        let (rate, burst) = {
            let r = self.set.requests_per_second.max(1) as f64;
            (r, 2.0 * r)
        };
        match self.link.receive(now, from, d) {
            Incoming::Request(m) => {
                let u = self.users.get_mut(&id).expect("checked");
                if !u.requests.take(now, rate, burst) {
                    let refused = m.body.kind();
                    let reason = Reason::Limit;
                    return self.reply(now, from, m.seq, Body::Error { refused, reason });
                }
                self.request(now, id, from, m);
            }
            Incoming::Unreadable { header, error } => {
                log::debug!("rooms {from}: type {} unreadable: {error}", header.kind);
                let u = self.users.get_mut(&id).expect("checked");
                let body = if u.requests.take(now, rate, burst) {
                    refusal(header.kind, &error)
                } else {
                    Body::Error {
                        refused: header.kind,
                        reason: Reason::Limit,
                    }
                };
                self.reply(now, from, header.seq, body);
            }
            Incoming::Answer { message, .. } => {
                self.users.get_mut(&id).expect("checked").unanswered_texts = 0;
                if let Body::InvitationAnswer { accept } = message.body {
                    self.invitation_answer(now, id, message.seq, accept);
                }
            }
            // An answer after the give-up: an invitation counts for 60 s.
            Incoming::Stray(Message {
                seq,
                body: Body::InvitationAnswer { accept },
                ..
            }) => self.invitation_answer(now, id, seq, accept),
            Incoming::Stray(m) => {
                log::debug!(
                    "rooms {from}: stray answer type {} seq {}",
                    m.body.kind(),
                    m.seq
                )
            }
            Incoming::Duplicate { .. } => {}
            Incoming::Junk(e) => log::debug!("rooms {from}: datagram dropped: {e}"),
        }
    }

    /// One new request from registered client `id`, answered.
    fn request(&mut self, now: Instant, id: u8, from: SocketAddr, m: Message) {
        let seq = m.seq;
        let answer = match m.body {
            Body::Connexion { .. } => Body::KeptAlive { ok: true },
            Body::CreateRoom { mode, name, max } => self.create(now, id, mode, name, max),
            Body::ListRooms => {
                let mut rooms: Vec<RoomInfo> = self
                    .rooms
                    .iter()
                    .filter(|(rid, _)| **rid != PUBLIC)
                    .map(|(_, r)| RoomInfo {
                        mode: r.mode,
                        name: r.name.clone(),
                        clients: r.members.len() as u8,
                    })
                    .collect();
                rooms.sort_by(|a, b| a.name.cmp(&b.name));
                Body::RoomList { rooms }
            }
            Body::AccessRoom { name } => {
                let (mode, status, peers) = self.join(now, id, &name);
                Body::access_answer(false, mode, status, peers)
            }
            Body::ChangeRoom { name } => {
                let (mode, status, peers) = self.join(now, id, &name);
                Body::access_answer(true, mode, status, peers)
            }
            Body::ListClients { room } => {
                let names = self
                    .room_by_name(&room)
                    .map(|rid| self.names(self.rooms[&rid].members.iter()))
                    .unwrap_or_default();
                Body::ClientList { names }
            }
            Body::ListUsers => {
                let mut names = self.names(self.users.keys());
                names.sort();
                Body::UserList { names }
            }
            Body::Invite { user } => {
                self.invite(now, id, &user);
                Body::InviteAck
            }
            Body::Text { chat } => self.text(now, id, chat),
            Body::Leave => {
                let ok = self.users[&id].room != PUBLIC;
                if ok {
                    self.move_to(now, id, PUBLIC);
                }
                Body::LeaveAnswer { ok }
            }
            Body::Disconnect => {
                // Answer while the address still counts as proved, then go.
                self.reply(now, from, seq, Body::DisconnectAnswer { ok: true });
                self.remove_user(now, id, "disconnected");
                return;
            }
            other => {
                log::debug!("rooms {from}: type {} is not for the server", other.kind());
                Body::Error {
                    refused: other.kind(),
                    reason: Reason::NotAccepted,
                }
            }
        };
        self.reply(now, from, seq, answer);
    }

    fn names<'a>(&self, ids: impl Iterator<Item = &'a u8>) -> Vec<String> {
        ids.filter_map(|m| self.users.get(m))
            .map(|u| u.name.clone())
            .collect()
    }

    fn create(&mut self, now: Instant, id: u8, mode: Mode, name: String, max: u8) -> Body {
        let status = if !wire::valid_room_name(&name) {
            Creation::BadName
        } else if self.room_by_name(&name).is_some() {
            Creation::NameExists
        } else if max < wire::MIN_ROOM_SIZE {
            Creation::MaxTooSmall
        } else {
            Creation::Created
        };
        if status != Creation::Created {
            return Body::CreateAnswer { status, room: 0 };
        }
        // All 255 private ids in use: the seed has no better code.
        let Some(rid) = (1..=255u8).find(|r| !self.rooms.contains_key(r)) else {
            return Body::CreateAnswer {
                status: Creation::NameExists,
                room: 0,
            };
        };
        let uid = self.next_uid;
        self.next_uid += 1;
        self.rooms.insert(
            rid,
            Room {
                uid,
                name,
                mode,
                max: max.min(wire::MAX_ROOM_SIZE),
                members: BTreeSet::new(),
                peak: 0,
            },
        );
        self.move_to(now, id, rid);
        Body::CreateAnswer {
            status: Creation::Created,
            room: rid,
        }
    }

    fn room_by_name(&self, name: &str) -> Option<u8> {
        if name.is_empty() {
            return Some(PUBLIC);
        }
        self.rooms
            .iter()
            .find(|(id, r)| **id != PUBLIC && r.name == name)
            .map(|(id, _)| *id)
    }

    /// The answer to a room access or change: join when there is room.
    fn join(&mut self, now: Instant, id: u8, name: &str) -> (Mode, Access, Vec<WirePeer>) {
        let Some(rid) = self.room_by_name(name).filter(|r| *r != PUBLIC) else {
            return (Mode::Centralised, Access::NoSuchRoom, Vec::new());
        };
        let room = &self.rooms[&rid];
        let mode = room.mode;
        if !room.members.contains(&id) && room.members.len() >= room.max as usize {
            return (mode, Access::Full, Vec::new());
        }
        self.move_to(now, id, rid);
        let peers = if mode == Mode::Decentralised {
            self.peers_of(rid, id)
        } else {
            Vec::new()
        };
        (mode, Access::Granted, peers)
    }

    /// Where the other members of a decentralised room listen. The wire
    /// has 4 bytes for an address: IPv4 clients (v4-mapped ones included,
    /// for a server bound to "::") are listed; IPv6 ones cannot be.
    fn peers_of(&self, rid: u8, except: u8) -> Vec<WirePeer> {
        self.rooms[&rid]
            .members
            .iter()
            .filter(|m| **m != except)
            .filter_map(|m| self.users.get(m))
            .filter_map(|u| match u.addr.ip() {
                IpAddr::V4(ip) => Some(WirePeer {
                    ip,
                    port: u.addr.port(),
                    name: u.name.clone(),
                }),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// Move `id` into room `rid` (asking for one's own room changes nothing).
    fn move_to(&mut self, now: Instant, id: u8, rid: u8) {
        if self.users.get(&id).is_none_or(|u| u.room == rid) {
            return;
        }
        self.leave_room(now, id);
        // Out of its old room, not yet in the new one.
        self.trap("move_to");
        let rid = if self.rooms.contains_key(&rid) {
            rid
        } else {
            PUBLIC
        };
        let room = self.rooms.get_mut(&rid).expect("checked");
        room.members.insert(id);
        room.peak = room.peak.max(room.members.len());
        self.users.get_mut(&id).expect("checked").room = rid;
    }

    /// Take `id` out of its room (the caller puts it somewhere). A private
    /// room left empty disappears; one left with a single member after
    /// having had more closes, and that member is told and moved to the
    /// public room (§2.2).
    fn leave_room(&mut self, now: Instant, id: u8) {
        let Some(rid) = self.users.get(&id).map(|u| u.room) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&rid) else {
            return;
        };
        room.members.remove(&id);
        if rid == PUBLIC {
            return;
        }
        if room.members.is_empty() {
            self.rooms.remove(&rid);
        } else if room.members.len() == 1 && room.peak >= 2 {
            let room = self.rooms.remove(&rid).expect("checked");
            let last = *room.members.first().expect("one member");
            self.public().members.insert(last);
            if let Some(u) = self.users.get_mut(&last) {
                u.room = PUBLIC;
            }
            log::debug!(
                "rooms: room {} closed, its last member is back in public",
                room.name
            );
            self.deliver(
                now,
                last,
                wire::SERVER,
                Body::RoomClosed { room: room.name },
            );
        }
    }

    /// Send what the server starts (a forwarded text, an invitation, a
    /// notice) reliably; false when the recipient has too many in flight.
    fn deliver(&mut self, now: Instant, to: u8, author: u8, body: Body) -> Option<u16> {
        let u = self.users.get(&to)?;
        let addr = u.addr;
        if !u.confirmed && self.link.outstanding(addr) >= UNCONFIRMED_IN_FLIGHT {
            self.counters.busy += 1;
            log::debug!("rooms {addr}: not confirmed yet, enough in flight; not sent");
            return None;
        }
        match self.link.send(now, addr, author, body) {
            Ok(seq) => {
                self.drain(now);
                Some(seq)
            }
            Err(SendError::Busy) => {
                self.counters.busy += 1;
                log::debug!("rooms {addr}: too far behind; a message was not sent");
                None
            }
            Err(SendError::NotARequest) => unreachable!("the server only starts requests"),
        }
    }

    fn text(&mut self, now: Instant, id: u8, chat: String) -> Body {
        let nobody = Body::Error {
            refused: kind::TEXTE,
            reason: Reason::NoRecipient,
        };
        let room = &self.rooms[&self.users[&id].room];
        // In a decentralised room texts go to the peers, not through us.
        if room.mode == Mode::Decentralised {
            return nobody;
        }
        let others: Vec<u8> = room.members.iter().copied().filter(|m| *m != id).collect();
        if others.is_empty() {
            return nobody;
        }
        let mut sent = 0;
        for m in others {
            let body = Body::Text { chat: chat.clone() };
            sent += self.deliver(now, m, id, body).is_some() as usize;
        }
        if sent == 0 {
            // Every recipient is too far behind.
            return Body::Error {
                refused: kind::TEXTE,
                reason: Reason::Limit,
            };
        }
        self.tally.messages += 1;
        self.tally.delivered += sent;
        Body::TextAck
    }

    fn invite(&mut self, now: Instant, id: u8, user: &str) {
        let inviter = &self.users[&id];
        let rid = inviter.room;
        let from = inviter.name.clone();
        let Some(room) = self.rooms.get(&rid).filter(|_| rid != PUBLIC) else {
            return;
        };
        let (mode, name, uid) = (room.mode, room.name.clone(), room.uid);
        let Some(target) = self
            .users
            .iter()
            .find(|(t, u)| u.name == user && **t != id && u.room != rid)
            .map(|(t, _)| *t)
        else {
            return;
        };
        let body = Body::Invitation {
            from,
            mode,
            room: name,
        };
        if let Some(seq) = self.deliver(now, target, wire::SERVER, body) {
            let u = self.users.get_mut(&target).expect("checked");
            if u.invitations.len() >= INVITATIONS_KEPT {
                u.invitations.pop_front();
            }
            u.invitations.push_back(Invitation {
                seq,
                room: rid,
                uid,
                until: now + INVITATION_TTL,
            });
        }
    }

    /// The invitee's REPONSE_MESSAGERIE_PRIVEE: one answer per invitation,
    /// within 60 s, into the very room it named (not one that reused its id).
    fn invitation_answer(&mut self, now: Instant, id: u8, seq: u16, accept: bool) {
        let u = self.users.get_mut(&id).expect("checked");
        let Some(pos) = u
            .invitations
            .iter()
            .position(|i| i.seq == seq && i.until > now)
        else {
            return;
        };
        let inv = u.invitations.remove(pos).expect("found");
        if !accept {
            return;
        }
        let fits = self.rooms.get(&inv.room).is_some_and(|r| {
            r.uid == inv.uid && r.members.len() < r.max as usize && !r.members.contains(&id)
        });
        if fits {
            self.move_to(now, id, inv.room);
        }
    }

    /// Take a client out: its room (which may close), its name, its
    /// reliability state. Its session is handed back for logout.
    fn remove_user(&mut self, now: Instant, id: u8, why: &str) {
        self.leave_room(now, id);
        let Some(u) = self.users.remove(&id) else {
            return;
        };
        self.by_addr.remove(&u.addr);
        self.link.forget(u.addr);
        if u.confirmed {
            self.remember_proved(u.addr, now);
            log::info!("rooms {}: {} ({id}) left: {why}", u.addr, u.name);
        } else {
            log::debug!("rooms {}: {} ({id}) left: {why}", u.addr, u.name);
        }
        self.logouts.push(u.session);
    }

    /// Retransmissions and give-ups; once a second, silent clients, old
    /// invitations and per-address state.
    pub fn tick(&mut self, now: Instant) {
        self.trap("tick");
        self.link.handle_timeout(now);
        while let Some(LinkEvent::Unanswered { to, kind: k, .. }) = self.link.poll_event() {
            if k != kind::TEXTE {
                continue; // an invitation is answered by a person, later
            }
            let Some(id) = self.by_addr.get(&to).copied() else {
                continue;
            };
            let u = self.users.get_mut(&id).expect("by_addr and users agree");
            u.unanswered_texts += 1;
            if u.unanswered_texts >= UNANSWERED_TEXTS {
                self.counters.unresponsive += 1;
                self.remove_user(now, id, "left its texts unacknowledged");
            }
        }
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.next_sweep = Some(now + SWEEP_EVERY);
            let idle = self.set.idle_timeout;
            let silent: Vec<u8> = self
                .users
                .iter()
                .filter(|(_, u)| now.saturating_duration_since(u.last_seen) > idle)
                .map(|(id, _)| *id)
                .collect();
            for id in silent {
                self.tally.idle += 1;
                self.remove_user(now, id, "silent too long");
            }
            for u in self.users.values_mut() {
                u.invitations.retain(|i| i.until > now);
            }
            self.guard.sweep(now);
            self.proved.retain(|_, until| *until > now);
            let proved = &self.proved;
            self.proved_order.retain(|a| proved.contains_key(a));
        }
        self.drain(now);
    }

    /// An operator closes client `id` registered from `addr` (a kick or a
    /// ban): it is forgotten at once, as after an idle expiry. The id may
    /// have gone to someone else since; that one stays.
    pub fn kick(&mut self, now: Instant, id: u8, addr: SocketAddr) -> bool {
        let addr = canonical_addr(addr);
        if self.users.get(&id).is_none_or(|u| u.addr != addr) {
            return false;
        }
        self.remove_user(now, id, "closed by an operator");
        self.drain(now);
        true
    }

    /// Test hook: panic here if a test armed this place (once).
    #[cfg(test)]
    fn trap(&mut self, at: &'static str) {
        if self.trap == Some(at) {
            self.trap = None;
            panic!("panic injected by a test at {at}");
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn trap(&mut self, _at: &'static str) {}

    /// After a panic inside one of this state's calls, caught by the
    /// caller: make it a state that can be trusted again, whatever the
    /// call had half done. The users are the truth: the address index,
    /// every room's members and each user's room are rebuilt from them,
    /// the public room restored, empty private rooms removed. The
    /// reliability machine may have been mid-update: it starts afresh
    /// (messages in flight are not sent again; a request retransmitted
    /// after this may be carried out twice). The client at `culprit`, the
    /// sender of the datagram being handled, is dropped (its session
    /// handed back for logout), so the same datagram cannot fail again
    /// for a registered client.
    pub fn recover(&mut self, now: Instant, culprit: Option<SocketAddr>) {
        self.counters.recoveries += 1;
        self.current = None;
        let culprit = culprit.map(canonical_addr);
        self.link = Endpoint::new(self.set.link.clone());
        // One user per address: the lowest id keeps it.
        let mut ids: Vec<u8> = self.users.keys().copied().collect();
        ids.sort_unstable();
        self.by_addr.clear();
        for id in ids {
            let addr = self.users[&id].addr;
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_addr.entry(addr) {
                e.insert(id);
            } else if let Some(u) = self.users.remove(&id) {
                self.logouts.push(u.session);
            }
        }
        self.reserved
            .retain(|id, a| !self.users.contains_key(id) && Some(*a) != culprit);
        self.rooms.entry(PUBLIC).or_insert_with(Room::public);
        for room in self.rooms.values_mut() {
            room.members.clear();
        }
        for (id, u) in self.users.iter_mut() {
            let rid = if self.rooms.contains_key(&u.room) {
                u.room
            } else {
                PUBLIC
            };
            u.room = rid;
            let room = self.rooms.get_mut(&rid).expect("checked");
            room.members.insert(*id);
            room.peak = room.peak.max(room.members.len());
        }
        self.rooms
            .retain(|rid, r| *rid == PUBLIC || !r.members.is_empty());
        if let Some(id) = culprit.and_then(|a| self.by_addr.get(&a).copied()) {
            self.remove_user(now, id, "the server failed on its datagram");
        }
        // Numbering towards each client goes on from a new random point.
        let addrs: Vec<SocketAddr> = self.users.values().map(|u| u.addr).collect();
        for a in addrs {
            let first: u16 = self.rng.gen();
            self.link.set_next_seq(a, first);
        }
        self.drain(now);
    }

    /// The structure every call keeps (for tests, fuzzing and after a
    /// recovery): the address index and the users agree, every user is a
    /// member of exactly its own room, every member is a user, the public
    /// room exists, no private room is empty, no reserved id is in use.
    pub fn check(&self) -> Result<(), String> {
        if self.by_addr.len() != self.users.len() {
            return Err(format!(
                "{} addresses for {} users",
                self.by_addr.len(),
                self.users.len()
            ));
        }
        for (a, id) in &self.by_addr {
            if self.users.get(id).map(|u| u.addr) != Some(*a) {
                return Err(format!("{a} indexes {id}, which is not there"));
            }
        }
        if !self.rooms.contains_key(&PUBLIC) {
            return Err("no public room".into());
        }
        let mut seen = 0;
        for (rid, r) in &self.rooms {
            if *rid != PUBLIC && r.members.is_empty() {
                return Err(format!("private room {rid} is empty"));
            }
            for m in &r.members {
                match self.users.get(m) {
                    Some(u) if u.room == *rid => seen += 1,
                    Some(u) => return Err(format!("{m} is in {rid} and says {}", u.room)),
                    None => return Err(format!("{m} in {rid} is no user")),
                }
            }
        }
        if seen != self.users.len() {
            return Err(format!("{seen} memberships for {} users", self.users.len()));
        }
        if let Some(id) = self.reserved.keys().find(|id| self.users.contains_key(id)) {
            return Err(format!("reserved id {id} is in use"));
        }
        Ok(())
    }

    /// Everyone out (the server stops): their sessions.
    pub fn shutdown(&mut self) -> Vec<S> {
        let now = Instant::now();
        let ids: Vec<u8> = self.users.keys().copied().collect();
        for id in ids {
            self.remove_user(now, id, "server stopping");
        }
        self.out.clear();
        std::mem::take(&mut self.logouts)
    }
}

#[cfg(test)]
mod tests;
