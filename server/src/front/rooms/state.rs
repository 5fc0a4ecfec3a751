//! The rooms front-end's state (seed 003): its clients (ID_USER, address,
//! session), the reliability machine, the return-routability gate and the
//! per-address bounds, driven by datagrams and a clock passed in. The rooms
//! themselves (public, private, members, invitations, who hears a text) are
//! the hub's: a request that needs them comes back as a [`Job`] that the
//! caller carries out at the hub without our lock, then answers through
//! [`Rooms::answered`]; what the hub tells a client comes in through
//! [`Rooms::event`]. It does no I/O and never calls the hub: a registration
//! is a ticket the caller completes at the hub, and sessions to log out are
//! handed back. Every datagram leaves through one gate (return routability).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chinwag_proto::rooms::reliable::{
    self, Endpoint, Event as LinkEvent, Incoming, Role, SendError,
};
use chinwag_proto::rooms::{
    self as wire, kind, Access, Body, Creation, Header, Message, Mode, Reason, Registration,
};
use chinwag_proto::DecodeError;
use rand::{Rng, SeedableRng};

use super::guard::{canonical, ip_key, Bucket, Guard};
use crate::hub::rooms::{INVITATIONS_KEPT, INVITATION_TTL};
use crate::hub::{Event, RoomMode};
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
/// Copies of a request at the hub answered once its answer is in (a client
/// retransmits every T; more than this would only be a flood).
const COPIES_WHILE_AT_HUB: u8 = 4;
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

/// An invitation the server sent with `seq`: its answer names the hub's
/// invitation `token` (the hub binds it to the room itself).
struct Invitation {
    seq: u16,
    token: u64,
    until: Instant,
}

/// A request for the hub's rooms, decoded. See [`Job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Create {
        mode: Mode,
        name: String,
        max: u8,
    },
    ListRooms,
    /// DEMANDE_ACCES (`change` false) or CHANGER (true).
    Join {
        name: String,
        change: bool,
    },
    ListClients {
        room: String,
    },
    Invite {
        user: String,
    },
    Text {
        chat: String,
    },
    Leave,
    /// REPONSE_MESSAGERIE_PRIVEE to the hub's invitation `token`: an answer
    /// itself, so nothing is sent back.
    Answer {
        token: u64,
        accept: bool,
    },
}

/// Work for the hub from one client: carry out `cmd` as `session`, then,
/// unless it is an [`Cmd::Answer`], hand the answer to [`Rooms::answered`].
#[derive(Debug)]
pub struct Job<S> {
    pub session: S,
    pub cmd: Cmd,
    id: u8,
    addr: SocketAddr,
    seq: u16,
    carried: usize,
}

/// What one datagram asks of the caller, with our lock released.
#[derive(Debug)]
pub enum Work<S> {
    /// A registration: ask the hub for the name, then [`Rooms::registered`].
    Register(Ticket),
    Job(Job<S>),
}

/// The wire's MODE for the hub's.
pub fn mode_of(m: RoomMode) -> Mode {
    match m {
        RoomMode::Centralised => Mode::Centralised,
        RoomMode::Decentralised => Mode::Decentralised,
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
    /// The server has no room for another client (`max_connections`, or it
    /// is stopping).
    Full,
}

/// What the caller must do once it has released the state.
pub struct Output<S> {
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    pub logouts: Vec<S>,
    /// What to add to the operator's metrics.
    pub tally: Tally,
}

/// Events the operator's metrics count, since the last `take_output`
/// (texts are counted by the hub, which routes them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Clients registered.
    pub registered: u32,
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
    /// Each client's name: the ID_USER of the author of a text.
    by_name: HashMap<String, u8>,
    /// Ids promised to tickets still at the hub.
    reserved: HashMap<u8, SocketAddr>,
    /// Requests at the hub now, and how many copies of each arrived
    /// meanwhile: each is answered too once the answer is in (a copy gets
    /// the answer again, as with any answered request).
    at_hub: HashMap<(SocketAddr, u16), u8>,
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

/// Whether a name fits a rooms `USER_NAME` or `NOM_MESSAGERIE` field: at
/// most `max` bytes and no '#', which ends the field.
fn sayable(name: &str, max: usize) -> bool {
    name.len() <= max && !name.as_bytes().contains(&wire::DELIMITER)
}

/// The CHAT of a text from a user without an ID_USER (another dialect's),
/// within the CHAT limit (a chatos text always fits: 30 + 2 + 1,024).
fn bridged(from: &str, text: &str) -> String {
    let mut chat = wire::bridged_chat(from, text);
    if chat.len() > wire::MAX_CHAT {
        let mut cut = wire::MAX_CHAT;
        while !chat.is_char_boundary(cut) {
            cut -= 1;
        }
        chat.truncate(cut);
    }
    chat
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
        Rooms {
            link: Endpoint::new(set.link.clone()),
            guard: Guard::new(set.registrations_per_minute),
            set,
            users: HashMap::new(),
            by_addr: HashMap::new(),
            by_name: HashMap::new(),
            reserved: HashMap::new(),
            at_hub: HashMap::new(),
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

    /// One datagram from `from`, and what the caller must do at the hub
    /// for it, if anything (see [`Work`]).
    pub fn datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Option<Work<S>> {
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
        let work = match self.by_addr.get(&from).copied() {
            _ if h.kind == kind::CONNEXION && h.user == wire::UNREGISTERED => {
                self.first_connexion(now, from, d).map(Work::Register)
            }
            Some(id) if h.user == id => self
                .registered_datagram(now, id, from, d, d.len())
                .map(Work::Job),
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
        work
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
                // The name space is the hub's: a name here is free there.
                if let Some(old) = self.by_name.get(&t.name).copied() {
                    self.remove_user(now, old, "its name went to a new registration");
                }
                let per_second = self.set.requests_per_second.max(1) as f64;
                self.users.insert(
                    t.id,
                    User {
                        name: t.name.clone(),
                        addr: t.from,
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
                self.by_name.insert(t.name.clone(), t.id);
                self.tally.registered += 1;
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
            Verdict::Full => self.reply(
                now,
                t.from,
                t.seq,
                Body::Error {
                    refused: kind::CONNEXION,
                    reason: Reason::Limit,
                },
            ),
        }
        self.drain(now);
        self.current = None;
    }

    fn registered_datagram(
        &mut self,
        now: Instant,
        id: u8,
        from: SocketAddr,
        d: &[u8],
        carried: usize,
    ) -> Option<Job<S>> {
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
                    self.reply(now, from, m.seq, Body::Error { refused, reason });
                    return None;
                }
                return self.request(now, id, from, m, carried);
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
                    return self.invitation_answer(now, id, message.seq, accept, carried);
                }
            }
            // An answer after the give-up: an invitation counts for 60 s.
            Incoming::Stray(Message {
                seq,
                body: Body::InvitationAnswer { accept },
                ..
            }) => return self.invitation_answer(now, id, seq, accept, carried),
            Incoming::Stray(m) => {
                log::debug!(
                    "rooms {from}: stray answer type {} seq {}",
                    m.body.kind(),
                    m.seq
                )
            }
            Incoming::Duplicate { replayed: false } => {
                if let Ok(h) = Header::peek(d) {
                    if let Some(n) = self.at_hub.get_mut(&(from, h.seq)) {
                        *n = n.saturating_add(1).min(COPIES_WHILE_AT_HUB);
                    }
                }
            }
            Incoming::Duplicate { replayed: true } => {}
            Incoming::Junk(e) => log::debug!("rooms {from}: datagram dropped: {e}"),
        }
        None
    }

    /// One new request from registered client `id`: answered here, or
    /// handed back as a job for the hub.
    fn request(
        &mut self,
        now: Instant,
        id: u8,
        from: SocketAddr,
        m: Message,
        carried: usize,
    ) -> Option<Job<S>> {
        let seq = m.seq;
        let cmd = match m.body {
            Body::Connexion { .. } => {
                self.reply(now, from, seq, Body::KeptAlive { ok: true });
                return None;
            }
            Body::ListUsers => {
                let mut names: Vec<String> = self.users.values().map(|u| u.name.clone()).collect();
                names.sort();
                self.reply(now, from, seq, Body::UserList { names });
                return None;
            }
            Body::Disconnect => {
                // Answer while the address still counts as proved, then go.
                self.reply(now, from, seq, Body::DisconnectAnswer { ok: true });
                self.remove_user(now, id, "disconnected");
                return None;
            }
            Body::CreateRoom { mode, name, max } => Cmd::Create { mode, name, max },
            Body::ListRooms => Cmd::ListRooms,
            Body::AccessRoom { name } => Cmd::Join {
                name,
                change: false,
            },
            Body::ChangeRoom { name } => Cmd::Join { name, change: true },
            Body::ListClients { room } => Cmd::ListClients { room },
            Body::Invite { user } => Cmd::Invite { user },
            Body::Text { chat } => Cmd::Text { chat },
            Body::Leave => Cmd::Leave,
            other => {
                log::debug!("rooms {from}: type {} is not for the server", other.kind());
                let refused = other.kind();
                self.reply(
                    now,
                    from,
                    seq,
                    Body::Error {
                        refused,
                        reason: Reason::NotAccepted,
                    },
                );
                return None;
            }
        };
        self.at_hub.insert((from, seq), 0);
        Some(Job {
            session: self.users[&id].session.clone(),
            cmd,
            id,
            addr: from,
            seq,
            carried,
        })
    }

    /// The hub's answer to `job`: sent to its client if that client is
    /// still the one at that id and address.
    pub fn answered(&mut self, now: Instant, job: Job<S>, body: Body) {
        let copies = self.at_hub.remove(&(job.addr, job.seq)).unwrap_or(0);
        if self.users.get(&job.id).is_none_or(|u| u.addr != job.addr) {
            return;
        }
        self.current = Some((job.addr, job.carried));
        for _ in 0..=copies {
            self.reply(now, job.addr, job.seq, body.clone());
        }
        self.current = None;
    }

    /// What the hub tells client `id` at `addr` (a text in its room, an
    /// invitation, its room closing), sent reliably. False when it was not
    /// sent (no such client, or too far behind).
    pub fn event(&mut self, now: Instant, id: u8, addr: SocketAddr, ev: &Event<'_>) -> bool {
        let addr = canonical_addr(addr);
        if self.users.get(&id).is_none_or(|u| u.addr != addr) {
            return false;
        }
        let sent = match *ev {
            Event::Message { from, text } | Event::RoomMessage { from, text, .. } => {
                // A rooms author is named by its id; anyone else (a chatos
                // user in the public room) by its name in the text, from
                // the server (docs/bridging.md).
                let (author, chat) = match self.by_name.get(from) {
                    Some(&a) => (a, text.to_owned()),
                    None => (wire::SERVER, bridged(from, text)),
                };
                self.deliver(now, id, author, Body::Text { chat }).is_some()
            }
            // A name the rooms wire cannot say (its delimiter inside, or
            // too long: another dialect's or another node's) would make a
            // datagram no client decodes: nothing is sent, as for an event
            // that has no rooms frame.
            Event::RoomInvitation { from, room, .. }
                if !sayable(from, wire::MAX_USER_NAME) || !sayable(room, wire::MAX_ROOM_NAME) =>
            {
                true
            }
            Event::RoomClosed { room } if !sayable(room, wire::MAX_ROOM_NAME) => true,
            Event::RoomInvitation {
                from,
                room,
                mode,
                token,
            } => {
                let body = Body::Invitation {
                    from: from.to_owned(),
                    mode: mode_of(mode),
                    room: room.to_owned(),
                };
                match self.deliver(now, id, wire::SERVER, body) {
                    Some(seq) => {
                        let u = self.users.get_mut(&id).expect("checked");
                        if u.invitations.len() >= INVITATIONS_KEPT {
                            u.invitations.pop_front();
                        }
                        u.invitations.push_back(Invitation {
                            seq,
                            token,
                            until: now + INVITATION_TTL,
                        });
                        true
                    }
                    None => false,
                }
            }
            Event::RoomClosed { room } => {
                let body = Body::RoomClosed {
                    room: room.to_owned(),
                };
                self.deliver(now, id, wire::SERVER, body).is_some()
            }
            // Nothing else has a rooms frame.
            _ => true,
        };
        self.drain(now);
        sent
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

    /// The invitee's REPONSE_MESSAGERIE_PRIVEE: one answer per invitation,
    /// within 60 s; the hub moves it into the very room the invitation named.
    fn invitation_answer(
        &mut self,
        now: Instant,
        id: u8,
        seq: u16,
        accept: bool,
        carried: usize,
    ) -> Option<Job<S>> {
        let u = self.users.get_mut(&id).expect("checked");
        let pos = u
            .invitations
            .iter()
            .position(|i| i.seq == seq && i.until > now)?;
        let inv = u.invitations.remove(pos).expect("found");
        Some(Job {
            session: u.session.clone(),
            cmd: Cmd::Answer {
                token: inv.token,
                accept,
            },
            id,
            addr: u.addr,
            seq,
            carried,
        })
    }

    /// Take a client out: its name, its reliability state. Its session is
    /// handed back for logout (the hub takes it out of its room).
    fn remove_user(&mut self, now: Instant, id: u8, why: &str) {
        let Some((addr, name)) = self.users.get(&id).map(|u| (u.addr, u.name.clone())) else {
            return;
        };
        self.by_addr.remove(&addr);
        if self.by_name.get(&name) == Some(&id) {
            self.by_name.remove(&name);
        }
        self.at_hub.retain(|(a, _), _| *a != addr);
        // Out of the indexes, still a user.
        self.trap("remove_user");
        let u = self.users.remove(&id).expect("checked");
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
    /// call had half done. The users are the truth: the address and name
    /// indexes are rebuilt from them. The reliability machine may have been
    /// mid-update: it starts afresh (messages in flight are not sent again;
    /// a request retransmitted after this may be carried out twice). The
    /// client at `culprit`, the sender of the datagram being handled, is
    /// dropped (its session handed back for logout), so the same datagram
    /// cannot fail again for a registered client. (The rooms themselves are
    /// the hub's, which no panic here can leave half updated.)
    pub fn recover(&mut self, now: Instant, culprit: Option<SocketAddr>) {
        self.counters.recoveries += 1;
        self.current = None;
        let culprit = culprit.map(canonical_addr);
        self.link = Endpoint::new(self.set.link.clone());
        self.at_hub.clear();
        // One user per address and per name: the lowest id keeps it.
        let mut ids: Vec<u8> = self.users.keys().copied().collect();
        ids.sort_unstable();
        self.by_addr.clear();
        self.by_name.clear();
        for id in ids {
            let (addr, name) = {
                let u = &self.users[&id];
                (u.addr, u.name.clone())
            };
            if !self.by_addr.contains_key(&addr) && !self.by_name.contains_key(&name) {
                self.by_addr.insert(addr, id);
                self.by_name.insert(name, id);
            } else if let Some(u) = self.users.remove(&id) {
                self.logouts.push(u.session);
            }
        }
        self.reserved
            .retain(|id, a| !self.users.contains_key(id) && Some(*a) != culprit);
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
    /// recovery): the address and name indexes and the users agree, no
    /// reserved id is in use.
    pub fn check(&self) -> Result<(), String> {
        if self.by_addr.len() != self.users.len() || self.by_name.len() != self.users.len() {
            return Err(format!(
                "{} addresses and {} names for {} users",
                self.by_addr.len(),
                self.by_name.len(),
                self.users.len()
            ));
        }
        for (a, id) in &self.by_addr {
            if self.users.get(id).map(|u| u.addr) != Some(*a) {
                return Err(format!("{a} indexes {id}, which is not there"));
            }
        }
        for (n, id) in &self.by_name {
            if self.users.get(id).map(|u| u.name.as_str()) != Some(n.as_str()) {
                return Err(format!("{n} indexes {id}, which is not there"));
            }
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
