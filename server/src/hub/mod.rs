//! The hub: the one core every dialect shares. Who is online, in which
//! dialect and reachable for what (`Reach`); the public room (chatos global
//! chat and the rooms public room are one) and the private rooms (`rooms`);
//! private text; every call of every dialect (`calls`); chatos's
//! private-connection requests, connect ids and relays (`private`). It is
//! protocol-agnostic and does no I/O: front-ends call it with decoded
//! commands and it hands events to each session's `Peer`, which turns them
//! into that dialect's bytes (docs/bridging.md says what crosses).
//!
//! Lock order (never take an earlier lock while holding a later one):
//! `users`, then `global`, then `presence`, then `rooms`, then `private`,
//! then `calls`. Leaves, taken alone or last: `bans` (read under `users` at
//! login), `reserved`, `relay`, `mailbox`, `cluster` (each an
//! `RwLock<Option<..>>`, cloned out and released before use). In cluster
//! mode a login's name claim waits on the bus before any hub lock is taken. No front-end holds a lock of its own
//! while it calls the hub; a `Peer` may take its own front-end's lock inside
//! `deliver` (that lock then comes after all of these), never a hub lock.
//! The media relay (`MediaRelay`) is called with no hub lock held and calls
//! the hub back only from its own threads, holding none of its locks.
//!
//! Peers are called with no hub lock held, except in four places: a
//! broadcast (and a text to the public room) delivers under the read side
//! of `global`, a departure is announced under the read side of
//! `presence`, and a login's `welcome` queues its answer under `users`.
//! That is safe because delivering never blocks (it appends to a bounded
//! queue and at most hands the work to another thread), and copying 10,000
//! listeners per login or per broadcast to avoid those read locks would
//! cost far more than it saves.

pub mod bans;
pub mod calls;
pub mod names;
pub mod private;
pub mod rooms;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::metrics::{LoginOutcome, Metrics};
use bans::Bans;
pub use calls::{
    CallId, CallState, Leg, LegSpec, Media, MediaRelay, Opened, RelayFull, RelayMode, Side,
    Transport, RING_TTL,
};
use private::Private;
pub use private::{CloseOutcome, Handover, RelayJoin};
pub use rooms::{AccessRefusal, CreateRefusal, RoomInfo, RoomMode, RoomPeer, PUBLIC};

pub type SessionId = u64;

/// Issued, unused connect ids allowed per allowed relay.
const TICKETS_PER_RELAY: usize = 4;

/// How long a call offer can be refused (and so is remembered).
pub const CALL_OFFER_TTL: Duration = RING_TTL;

pub use names::MAX_NAME;

/// The wire dialect a session speaks; the hub uses it only for logs and
/// for deciding which sessions hear which kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Chatos,
    Babel,
    Accounts,
    Rooms,
}

/// What a session can be reached for: what its dialect has frames for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Hears the public room (chatos MESSAGE, rooms TEXTE in the public room).
    pub public_text: bool,
    /// Takes private texts (chatos MESSAGE_PRIVATE, accounts 151).
    pub private_text: bool,
    /// Takes calls (babel CallRequest, accounts 143).
    pub calls: bool,
    /// Takes part in private rooms (rooms only).
    pub rooms: bool,
}

impl Dialect {
    pub fn reach(self) -> Reach {
        let r = Reach {
            public_text: false,
            private_text: false,
            calls: false,
            rooms: false,
        };
        match self {
            Dialect::Chatos => Reach {
                public_text: true,
                private_text: true,
                ..r
            },
            Dialect::Babel => Reach { calls: true, ..r },
            Dialect::Accounts => Reach {
                private_text: true,
                calls: true,
                ..r
            },
            Dialect::Rooms => Reach {
                public_text: true,
                rooms: true,
                ..r
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Chatos => "chatos",
            Dialect::Babel => "babel",
            Dialect::Accounts => "accounts",
            Dialect::Rooms => "rooms",
        }
    }
}

/// Something the hub tells a session. Borrowed, so a broadcast to many peers
/// allocates nothing: each peer encodes straight into its own queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Message {
        from: &'a str,
        text: &'a str,
    },
    PrivateMessage {
        from: &'a str,
        to: &'a str,
        text: &'a str,
    },
    PrivateRequest {
        requester: &'a str,
        target: &'a str,
    },
    PrivateRefused {
        requester: &'a str,
        target: &'a str,
    },
    PrivateId {
        requester: &'a str,
        target: &'a str,
        connect_id: i64,
    },
    /// The private connection with `peer` was closed by request.
    PrivateClosed {
        connect_id: i64,
        peer: &'a str,
    },
    Presence {
        name: &'a str,
        online: bool,
    },
    /// `from` calls you; send your voice to host:port (the caller's own
    /// end for a peer-to-peer call, the relay's for a relayed one).
    CallOffer {
        from: &'a str,
        host: &'a str,
        port: u16,
    },
    /// `by` answered your call; send your voice to host:port.
    CallAnswered {
        by: &'a str,
        host: &'a str,
        port: u16,
    },
    /// `by` refused your call (or left while it rang).
    CallRefused {
        by: &'a str,
    },
    /// `by` hung up (or left, or the call went silent).
    CallEnded {
        by: &'a str,
    },
    /// Cluster mode, to the stand-in of a babel callee only: it answered
    /// `caller`'s relayed call by connecting to this node's relay (its own
    /// node, which holds the other half of the call, learns it so).
    CallTaken {
        caller: &'a str,
    },
    /// `from` invites you into private room `room`; answer with `token`.
    RoomInvitation {
        from: &'a str,
        room: &'a str,
        mode: RoomMode,
        token: u64,
    },
    /// The private room you were in closed (you were its last member); you
    /// are in the public room.
    RoomClosed {
        room: &'a str,
    },
    /// `from`'s text in private room `room`, where you are (a stand-in
    /// forwards it to its node; a `Message` is a public-room text).
    RoomMessage {
        from: &'a str,
        room: &'a str,
        text: &'a str,
    },
}

/// Cluster mode: what a member's node tells the home of a rooms private
/// room about its local user `from` (docs/scaling.md).
#[derive(Debug, Clone, Copy)]
pub enum ToHome<'a> {
    /// `from` left `room`.
    Leave { room: &'a str, from: &'a str },
    /// `from`'s text in `room`.
    Text {
        room: &'a str,
        from: &'a str,
        text: &'a str,
    },
    /// `from`, in `room`, invites `to`.
    Invite {
        room: &'a str,
        from: &'a str,
        to: &'a str,
    },
    /// `from` answers the home's invitation `token`; `endpoint`: where its
    /// datagrams come from.
    Answer {
        from: &'a str,
        token: u64,
        accept: bool,
        endpoint: Option<SocketAddr>,
    },
}

/// A session's outlet. `deliver` must not block: it queues bytes and, when
/// the queue is over its bound, drops the peer rather than wait. It returns
/// whether the event was taken (false: the peer is gone or too far behind;
/// an event its dialect has no frame for counts as taken).
pub trait Peer: Send + Sync {
    fn deliver(&self, event: &Event<'_>) -> bool;
    /// Close this session's connection (an operator's kick or ban). The
    /// front-end's own clean-up then logs the session out as usual.
    fn disconnect(&self) {}
}

/// One identified user on one connection.
pub struct Session {
    pub id: SessionId,
    pub name: String,
    pub dialect: Dialect,
    pub ip: IpAddr,
    pub peer: Arc<dyn Peer>,
    /// Hears MESSAGE broadcasts (chatos).
    pub global_chat: bool,
    /// Hears callable sessions come and go (babel contact lists).
    pub presence: bool,
    /// The server address this session's connection reached (where to tell
    /// it to send relayed voice when the server listens on every address).
    pub server_ip: Option<IpAddr>,
    /// Its datagram address (rooms): where the other members of a
    /// decentralised room reach it.
    pub endpoint: Option<SocketAddr>,
    /// Cluster mode: the node this user is really on, for a stand-in of a
    /// user of another node (see [`Hub::login_remote`]); None for a local
    /// session.
    pub remote: Option<Arc<str>>,
}

impl Session {
    pub fn reach(&self) -> Reach {
        self.dialect.reach()
    }
}

/// How a connection joins the hub.
pub struct Entry {
    pub dialect: Dialect,
    pub ip: IpAddr,
    pub peer: Arc<dyn Peer>,
    pub global_chat: bool,
    pub presence: bool,
    /// Logged in with a password (may take a registered name).
    pub has_password: bool,
    pub server_ip: Option<IpAddr>,
    pub endpoint: Option<SocketAddr>,
    /// The user's node, for a stand-in of a user of another node.
    pub remote: Option<Arc<str>>,
}

impl Entry {
    /// An entry with what the dialect implies: chatos and rooms sessions
    /// are in the public room, babel sessions hear presence, accounts
    /// sessions have a password.
    pub fn new(dialect: Dialect, ip: IpAddr, peer: Arc<dyn Peer>) -> Entry {
        Entry {
            dialect,
            ip,
            peer,
            global_chat: dialect.reach().public_text,
            presence: dialect == Dialect::Babel,
            has_password: dialect == Dialect::Accounts,
            server_ip: None,
            endpoint: None,
            remote: None,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}({})", self.name, self.id, self.dialect.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// Someone online, in any dialect, already has the name, or one that
    /// looks the same (see `names::skeleton`).
    Taken,
    /// Against the identifier policy (see `names`).
    Invalid,
    /// The name belongs to a registered account and this login has no password.
    Reserved,
    /// The name or the address is banned by an operator.
    Banned,
}

/// Why a command was not carried out. The front-end logs it; the peer gets
/// whatever its dialect says for the case (often nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A sender or requester field that is not the session's own name.
    Forged,
    /// The target is not online.
    Offline,
    /// No such pending request or connection between those users.
    NotPending,
    /// Asking oneself.
    SelfTarget,
    /// A per-user or global bound was reached.
    Limit,
    /// Already in a call with that user.
    Busy,
    /// Nobody else is there to hear it (or texts go peer to peer there).
    NoRecipient,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub connect_id_ttl: Duration,
    pub max_relays: usize,
    pub max_pending_requests: usize,
    /// Which calls go through the media relay.
    pub call_relay: RelayMode,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            connect_id_ttl: Duration::from_secs(60),
            max_relays: 1_000,
            max_pending_requests: 16,
            call_relay: RelayMode::default(),
        }
    }
}

/// A set of sessions with O(1) insert and remove, iterated as a slice.
#[derive(Default)]
struct Listeners {
    sessions: Vec<Arc<Session>>,
    index: HashMap<SessionId, usize>,
}

impl Listeners {
    fn insert(&mut self, s: Arc<Session>) {
        self.index.insert(s.id, self.sessions.len());
        self.sessions.push(s);
    }

    fn remove(&mut self, id: SessionId) {
        let Some(i) = self.index.remove(&id) else {
            return;
        };
        self.sessions.swap_remove(i);
        if let Some(moved) = self.sessions.get(i) {
            self.index.insert(moved.id, i);
        }
    }
}

/// Names that password-less logins may not take (registered accounts).
pub type ReservedNames = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Keeps a private text from a guest (a session without an account) for an
/// offline registered user: (from, to, text) -> whether it was taken.
pub type Mailbox = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// Cluster mode's side of the hub (server/src/cluster): the hub asks it
/// before admitting a local login and tells it what other nodes must
/// hear. Every method returns quickly (a queued bus command) except
/// `claim`, which waits for the bus up to the configured bound; none calls
/// the hub back.
pub trait ClusterLink: Send + Sync {
    /// Claim `name` (and its look-alikes) cluster-wide for a local login;
    /// false when another node holds it or the bus cannot say.
    fn claim(&self, name: &str, dialect: Dialect) -> bool;
    /// A local session with `name` ended (or its login failed after the claim).
    fn release(&self, name: &str);
    /// A text in the public room from a local user.
    fn public_text(&self, from: &str, text: &str);
    /// Tell node `node` (every node, when None) that its accounts user
    /// `name` has stored items.
    fn poke(&self, node: Option<&str>, name: &str);
    /// Accounts pseudo `pseudo` was registered (or deleted) here.
    fn account(&self, pseudo: &str, registered: bool);
    /// An operator added (or removed) `ban` here.
    fn ban(&self, ban: &bans::Ban, added: bool);
    /// REQUEST_PRIVATE from local user `requester` (connected from `ip`)
    /// to `target`, a user of node `node`; false when private connections
    /// cannot cross to that node (then it is answered as offline).
    fn private_request(&self, node: &str, requester: &str, target: &str, ip: IpAddr) -> bool {
        let _ = (node, requester, target, ip);
        false
    }
    /// CLOSE_CONNECTION from local user `from` of connection `id` with
    /// `target`, a user of node `node` that holds the relay.
    fn private_close(&self, node: &str, from: &str, target: &str, id: i64) -> bool {
        let _ = (node, from, target, id);
        false
    }
    /// LOGIN_PRIVATE with connect id `id` from `ip`: None when this node
    /// issued the id (or cannot tell); otherwise a connection to the node
    /// that did, its handshake sent, or why it could not be made.
    fn proxy_dial(&self, id: i64, ip: IpAddr) -> Option<std::io::Result<std::net::TcpStream>> {
        let _ = (id, ip);
        None
    }
    /// Rooms private rooms of other nodes, as their homes list them.
    fn remote_rooms(&self) -> Vec<RoomInfo> {
        Vec::new()
    }
    /// The members of `room`, a private room of another node, as its home
    /// lists them.
    fn remote_room_members(&self, room: &str) -> Option<Vec<String>> {
        let _ = room;
        None
    }
    /// The home node of `room`, a private room of another node.
    fn room_home(&self, room: &str) -> Option<String> {
        let _ = room;
        None
    }
    /// Claim rooms private room `name` cluster-wide for a room of this
    /// node (waits up to `bus_timeout_ms`); true when this node holds it.
    fn room_claim(&self, name: &str) -> bool {
        let _ = name;
        true
    }
    /// Whether this node holds the claim of room `name`.
    fn room_claim_held(&self, name: &str) -> bool {
        let _ = name;
        true
    }
    /// Room `name` of this node is gone: give its claim back.
    fn room_unclaim(&self, name: &str) {
        let _ = name;
    }
    /// Whether private rooms may be created and joined now (the bus is up).
    fn rooms_open(&self) -> bool {
        true
    }
    /// Ask `node`, the home of `room`, to let local `member` (datagrams
    /// from `endpoint`) in; waits for its answer (`bus_timeout_ms`).
    fn room_join(
        &self,
        node: &str,
        room: &str,
        member: &str,
        endpoint: Option<SocketAddr>,
    ) -> Result<(RoomMode, Vec<RoomPeer>), AccessRefusal> {
        let _ = (node, room, member, endpoint);
        Err(AccessRefusal::NoSuchRoom)
    }
    /// Tell `node`, the home of a room, about a local member; false when
    /// it could not be sent.
    fn room_to_home(&self, node: &str, msg: ToHome<'_>) -> bool {
        let _ = (node, msg);
        false
    }
}

/// Who hears whom come and go: babel sessions listen; every session a babel
/// client can call is listed.
#[derive(Default)]
struct Presence {
    listeners: Listeners,
    callable: Listeners,
}

pub struct Hub {
    users: RwLock<Users>,
    /// The public room: chatos sessions, and rooms sessions in no private
    /// room, in no particular order.
    global: RwLock<Listeners>,
    presence: RwLock<Presence>,
    /// The private rooms and invitations.
    rooms: Mutex<rooms::RoomSet>,
    private: Mutex<Private>,
    /// Every call, ringing or answered.
    calls: Mutex<calls::Calls>,
    next_session: AtomicU64,
    reserved: RwLock<Option<ReservedNames>>,
    mailbox: RwLock<Option<Mailbox>>,
    relay: RwLock<Option<Arc<dyn MediaRelay>>>,
    cluster: RwLock<Option<Arc<dyn ClusterLink>>>,
    /// Cluster mode: LOGIN_PRIVATE connections this node proxies to the
    /// node that issued their connect id (counted in `max_relays`).
    /// The client's socket of each, by connect id (CLOSE_CONNECTION on the
    /// issuing node shuts it, as a local relay's ends are shut).
    proxies: Mutex<HashMap<i64, Arc<TcpStream>>>,
    cfg: HubConfig,
    /// Checked under `users` at every login (a leaf lock).
    bans: Bans,
    metrics: Arc<Metrics>,
}

/// Whether a name is acceptable to the hub at all (see `names`).
pub fn valid_name(name: &str) -> bool {
    names::check(name).is_ok()
}

/// Who is online, by name and by the skeleton of the name (one entry each).
#[derive(Default)]
struct Users {
    by_name: HashMap<String, Arc<Session>>,
    /// Each of `names::skeletons(name)` -> name.
    by_skeleton: HashMap<String, String>,
}

impl Users {
    fn get(&self, name: &str) -> Option<&Arc<Session>> {
        self.by_name.get(name)
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.by_name.values()
    }
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Self {
        Hub {
            users: RwLock::new(Users::default()),
            global: RwLock::new(Listeners::default()),
            presence: RwLock::new(Presence::default()),
            rooms: Mutex::new(rooms::RoomSet::default()),
            calls: Mutex::new(calls::Calls::default()),
            private: Mutex::new(Private::default()),
            next_session: AtomicU64::new(1),
            proxies: Mutex::new(HashMap::new()),
            reserved: RwLock::new(None),
            mailbox: RwLock::new(None),
            relay: RwLock::new(None),
            cluster: RwLock::new(None),
            cfg,
            bans: Bans::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The operator's bans, checked at every login.
    pub fn bans(&self) -> &Bans {
        &self.bans
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Who is online: (name, dialect, address), sorted by name.
    pub fn sessions(&self) -> Vec<(String, Dialect, IpAddr)> {
        let mut v: Vec<_> = self
            .users
            .read()
            .values()
            .filter(|s| s.remote.is_none())
            .map(|s| (s.name.clone(), s.dialect, s.ip))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Users online per dialect, in `metrics::DIALECTS` order.
    pub fn online_per_dialect(&self) -> [usize; 4] {
        let mut n = [0; 4];
        for s in self.users.read().values().filter(|s| s.remote.is_none()) {
            n[crate::metrics::dialect_index(s.dialect)] += 1;
        }
        n
    }

    /// Close the connection of `name`, if online. Returns its dialect.
    pub fn kick(&self, name: &str) -> Option<Dialect> {
        let s = self.online(name)?;
        s.peer.disconnect();
        self.metrics.dropped(crate::metrics::DropReason::Kicked);
        Some(s.dialect)
    }

    /// Close every session connected from `ip`; returns their names.
    pub fn kick_ip(&self, ip: IpAddr) -> Vec<String> {
        let ip = bans::canonical(ip);
        let hit: Vec<Arc<Session>> = self
            .users
            .read()
            .values()
            .filter(|s| bans::canonical(s.ip) == ip)
            .cloned()
            .collect();
        for s in &hit {
            s.peer.disconnect();
            self.metrics.dropped(crate::metrics::DropReason::Kicked);
        }
        hit.iter().map(|s| s.name.clone()).collect()
    }

    /// Install the check for names owned by registered accounts.
    pub fn set_reserved_names(&self, check: ReservedNames) {
        *self.reserved.write() = Some(check);
    }

    /// Identify a connection under `name` (see [`Hub::login_with`]) with no
    /// presence and nothing to send on admission.
    pub fn login(
        &self,
        name: &str,
        dialect: Dialect,
        ip: IpAddr,
        peer: Arc<dyn Peer>,
        global_chat: bool,
        has_password: bool,
    ) -> Result<Arc<Session>, LoginError> {
        let entry = Entry {
            global_chat,
            presence: false,
            has_password,
            ..Entry::new(dialect, ip, peer)
        };
        self.login_with(name, entry, |_| {})
    }

    /// Identify a connection under `name`. The name space is shared by every
    /// dialect, so the check and the insert happen under one write lock:
    /// two racing logins for one name cannot both win.
    ///
    /// `welcome` runs under that lock, before anyone else can see the new
    /// session, with the names of the sessions a presence listener can call
    /// (for a presence session; empty otherwise). Whatever it queues on the
    /// new session's connection therefore goes out before any event another
    /// user causes. It must only queue bytes, and must not call the hub (its
    /// lock is held). Then, when the new session can be called from babel,
    /// every presence listener hears `Presence { online: true }`.
    pub fn login_with(
        &self,
        name: &str,
        entry: Entry,
        welcome: impl FnOnce(&[String]),
    ) -> Result<Arc<Session>, LoginError> {
        let dialect = entry.dialect;
        let result = self.admit(name, entry, welcome);
        self.metrics.login(
            dialect,
            match &result {
                Ok(_) => LoginOutcome::Ok,
                Err(e) => LoginOutcome::Refused(*e),
            },
        );
        result
    }

    /// Cluster mode: turn on the claim before every local login and the
    /// hooks that reach other nodes.
    pub fn set_cluster(&self, link: Arc<dyn ClusterLink>) {
        *self.cluster.write() = Some(link);
    }

    /// Cluster mode: the top byte of every connect id this node issues.
    pub fn set_node_index(&self, index: u8) {
        self.private.lock().node_index = Some(index);
    }

    /// Cluster mode: the LOGIN_PRIVATE connection `client` with connect id
    /// `id` is about to be proxied to another node. False when `max_relays`
    /// relays and proxies are already running (or waiting), or `id` is
    /// proxied already; otherwise [`Hub::proxy_end`] must follow.
    pub fn proxy_begin(&self, id: i64, client: &Arc<TcpStream>) -> bool {
        let private = self.private.lock();
        let mut proxies = self.proxies.lock();
        if private.in_use() + proxies.len() >= self.cfg.max_relays || proxies.contains_key(&id) {
            return false;
        }
        proxies.insert(id, client.clone());
        true
    }

    pub fn proxy_end(&self, id: i64) {
        self.proxies.lock().remove(&id);
    }

    /// The issuing node closed private connection `id` (CLOSE_CONNECTION):
    /// shut the client's socket of its proxy here, if any.
    pub fn proxy_shut(&self, id: i64) {
        if let Some(s) = self.proxies.lock().get(&id) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// See [`ClusterLink::proxy_dial`].
    pub fn proxy_dial(&self, id: i64, ip: IpAddr) -> Option<std::io::Result<std::net::TcpStream>> {
        self.cluster().and_then(|c| c.proxy_dial(id, ip))
    }

    /// Proxies running now.
    pub fn proxy_count(&self) -> usize {
        self.proxies.lock().len()
    }

    fn cluster(&self) -> Option<Arc<dyn ClusterLink>> {
        self.cluster.read().clone()
    }

    /// Cluster mode: a stand-in for `name`, a user of node `node`, so that
    /// local users see it (babel contact lists), cannot take its name, and
    /// reach it (`peer` forwards what crosses nodes). It is not in the
    /// public room (texts there cross on the bus once per node) and is not
    /// counted among this node's sessions.
    pub fn login_remote(
        &self,
        name: &str,
        dialect: Dialect,
        node: &str,
        peer: Arc<dyn Peer>,
    ) -> Result<Arc<Session>, LoginError> {
        let entry = Entry {
            global_chat: false,
            presence: false,
            has_password: true,
            remote: Some(node.into()),
            ..Entry::new(dialect, IpAddr::from([0, 0, 0, 0]), peer)
        };
        self.admit(name, entry, |_| {})
    }

    /// Cluster mode: a public-room text from a user of another node, for
    /// every local listener.
    pub fn public_remote(&self, from: &str, text: &str) -> usize {
        let ev = Event::Message { from, text };
        let list = self.global.read();
        let took = list.sessions.iter().filter(|s| s.peer.deliver(&ev)).count();
        self.metrics.delivered(took);
        took
    }

    /// Cluster mode: `name` has stored items to deliver (accounts) and is
    /// not a local session that takes them live. If it is online on
    /// another node, tell that node; if this node does not know it (its
    /// view may lag a login elsewhere by a bus round trip), tell every
    /// node. Returns whether a poke went out.
    pub fn poke_remote(&self, name: &str) -> bool {
        let Some(c) = self.cluster() else {
            return false;
        };
        let found = self.online(name);
        log::debug!(
            "cluster: poke for {name} ({})",
            found
                .as_ref()
                .map_or("unknown here", |s| s.remote.as_deref().unwrap_or("local"))
        );
        match found {
            Some(s) => match &s.remote {
                Some(node) => c.poke(Some(node), name),
                None => return false,
            },
            None => c.poke(None, name),
        }
        true
    }

    /// Cluster mode: tell the other nodes that `pseudo` was registered
    /// (or deleted) here, so their registered-name checks follow.
    pub fn announce_account(&self, pseudo: &str, registered: bool) {
        if let Some(c) = self.cluster() {
            c.account(pseudo, registered);
        }
    }

    /// Cluster mode: tell the other nodes an operator added (or removed)
    /// `ban` here, so they apply it too.
    pub fn announce_ban(&self, ban: &bans::Ban, added: bool) {
        if let Some(c) = self.cluster() {
            c.ban(ban, added);
        }
    }

    /// Cluster mode: another node's operator added (or removed) `ban`:
    /// apply it here and close the local sessions it covers.
    pub fn apply_remote_ban(&self, ban: bans::Ban, added: bool) {
        if !added {
            self.bans.remove(&ban);
            return;
        }
        self.bans.add(ban.clone());
        match ban {
            bans::Ban::Name(n) => {
                if self.online(&n).is_some_and(|s| s.remote.is_none()) {
                    self.kick(&n);
                }
            }
            bans::Ban::Ip(ip) => {
                self.kick_ip(ip);
            }
        }
    }

    fn admit(
        &self,
        name: &str,
        entry: Entry,
        welcome: impl FnOnce(&[String]),
    ) -> Result<Arc<Session>, LoginError> {
        let claim = match (&entry.remote, self.cluster()) {
            (None, Some(c)) => {
                // A name held here (or by a stand-in) needs no bus round trip.
                if names::check(name).is_ok() && !self.name_in_use(name) {
                    if !c.claim(name, entry.dialect) {
                        return Err(LoginError::Taken);
                    }
                    Some(c)
                } else {
                    None
                }
            }
            _ => None,
        };
        let result = self.admit_here(name, entry, welcome);
        if let (Err(_), Some(c)) = (&result, claim) {
            c.release(name);
        }
        result
    }

    fn admit_here(
        &self,
        name: &str,
        entry: Entry,
        welcome: impl FnOnce(&[String]),
    ) -> Result<Arc<Session>, LoginError> {
        if let Err(why) = names::check(name) {
            log::debug!("{}: name {name:?} refused: {why}", entry.dialect.name());
            return Err(LoginError::Invalid);
        }
        let skeletons = names::skeletons(name);
        if !entry.has_password {
            let reserved = self.reserved.read().clone();
            if reserved.is_some_and(|check| check(name)) {
                return Err(LoginError::Reserved);
            }
        }
        let session = Arc::new(Session {
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            dialect: entry.dialect,
            ip: entry.ip,
            peer: entry.peer,
            global_chat: entry.global_chat,
            presence: entry.presence,
            server_ip: entry.server_ip,
            endpoint: entry.endpoint,
            remote: entry.remote,
        });
        let callable = self.callable_from_babel(&session);
        let others: Vec<Arc<Session>> = {
            let mut users = self.users.write();
            // Under `users`: a ban added before an operator's kick sweep is
            // either seen here or this session is there for the sweep.
            if self.bans.name_banned(name) || self.bans.ip_banned(session.ip) {
                return Err(LoginError::Banned);
            }
            if skeletons.iter().any(|k| users.by_skeleton.contains_key(k)) {
                return Err(LoginError::Taken);
            }
            let (names, others) = {
                let p = self.presence.read();
                let names: Vec<String> = if session.presence {
                    p.callable.sessions.iter().map(|s| s.name.clone()).collect()
                } else {
                    Vec::new()
                };
                let others = if callable {
                    p.listeners.sessions.clone()
                } else {
                    Vec::new()
                };
                (names, others)
            };
            welcome(&names);
            users.by_name.insert(name.to_owned(), session.clone());
            for k in skeletons {
                users.by_skeleton.insert(k, name.to_owned());
            }
            if session.global_chat {
                self.global.write().insert(session.clone());
            }
            if session.presence || callable {
                let mut p = self.presence.write();
                if session.presence {
                    p.listeners.insert(session.clone());
                }
                if callable {
                    p.callable.insert(session.clone());
                }
            }
            others
        };
        let ev = Event::Presence { name, online: true };
        for s in &others {
            s.peer.deliver(&ev);
        }
        Ok(session)
    }

    /// Whether babel clients list (and can call) `s`.
    fn callable_from_babel(&self, s: &Session) -> bool {
        match s.dialect {
            Dialect::Babel => true,
            d => d.reach().calls && self.cfg.call_relay != RelayMode::Off,
        }
    }

    /// Forget a session. Safe to call more than once.
    pub fn logout(&self, session: &Arc<Session>) {
        let mut closed = Vec::new();
        let mut left = rooms::AfterRooms::default();
        let callable = self.callable_from_babel(session);
        {
            let mut users = self.users.write();
            match users.get(&session.name) {
                Some(s) if s.id == session.id => {
                    users.by_name.remove(&session.name);
                    for k in names::skeletons(&session.name) {
                        if users.by_skeleton.get(&k) == Some(&session.name) {
                            users.by_skeleton.remove(&k);
                        }
                    }
                }
                _ => return,
            }
            {
                let mut global = self.global.write();
                global.remove(session.id);
                if session.reach().rooms {
                    left = self.rooms_forget(&mut global, session, &mut closed);
                }
            }
            if session.presence || callable {
                let mut p = self.presence.write();
                p.listeners.remove(session.id);
                p.callable.remove(session.id);
            }
        }
        if callable {
            let ev = Event::Presence {
                name: &session.name,
                online: false,
            };
            let p = self.presence.read();
            for s in &p.listeners.sessions {
                s.peer.deliver(&ev);
            }
        }
        self.rooms_closed(closed);
        self.rooms_left(left);
        // Connect ids of this user's not yet established: the partner's
        // end stops waiting for an end that will never come.
        let released = self.private.lock().forget_user(&session.name);
        if released > 0 {
            log::debug!(
                "{}'s session ended: {released} waiting private end(s) released",
                session.name
            );
        }
        self.end_calls_of(session);
        if session.remote.is_none() {
            if let Some(c) = self.cluster() {
                c.release(&session.name);
            }
        }
    }

    pub fn online(&self, name: &str) -> Option<Arc<Session>> {
        self.users.read().get(name).cloned()
    }

    /// Whether `name`, or a name that looks the same, is online.
    pub fn name_in_use(&self, name: &str) -> bool {
        let users = self.users.read();
        names::skeletons(name)
            .iter()
            .any(|k| users.by_skeleton.contains_key(k))
    }

    /// Users logged in on this node (stand-ins of other nodes' users,
    /// in cluster mode, are not counted).
    pub fn online_count(&self) -> usize {
        self.users
            .read()
            .values()
            .filter(|s| s.remote.is_none())
            .count()
    }

    /// MESSAGE to every global-chat listener, the sender included.
    pub fn broadcast(&self, from: &Session, claimed: &str, text: &str) -> Result<usize, Refusal> {
        if claimed != from.name {
            return Err(Refusal::Forged);
        }
        let ev = Event::Message {
            from: &from.name,
            text,
        };
        let n = {
            let list = self.global.read();
            for s in &list.sessions {
                s.peer.deliver(&ev);
            }
            list.sessions.len()
        };
        if let Some(c) = self.cluster() {
            c.public_text(&from.name, text);
        }
        self.metrics.message(from.dialect);
        self.metrics.delivered(n);
        Ok(n)
    }

    /// Install where guests' private texts to offline registered users go
    /// (the accounts service's store).
    pub fn set_mailbox(&self, mailbox: Mailbox) {
        *self.mailbox.write() = Some(mailbox);
    }

    /// A private text to one user, whatever its dialect, if that dialect
    /// takes private texts (chatos, accounts). A guest's text to a
    /// registered user who is offline goes to the mailbox (stored for its
    /// next login). Texts between two accounts users never come here: they
    /// go through the accounts service (friends, history).
    pub fn private_message(
        &self,
        from: &Session,
        claimed: &str,
        to: &str,
        text: &str,
    ) -> Result<(), Refusal> {
        if claimed != from.name {
            return Err(Refusal::Forged);
        }
        match self.online(to) {
            Some(target) if target.reach().private_text => {
                if !target.peer.deliver(&Event::PrivateMessage {
                    from: &from.name,
                    to,
                    text,
                }) {
                    return Err(Refusal::Limit);
                }
            }
            Some(_) => return Err(Refusal::Offline),
            None => {
                let mailbox = self.mailbox.read().clone();
                let guest = from.dialect != Dialect::Accounts;
                if !(guest && mailbox.is_some_and(|m| m(&from.name, to, text))) {
                    return Err(Refusal::Offline);
                }
            }
        }
        self.metrics.message(from.dialect);
        self.metrics.delivered(1);
        Ok(())
    }

    /// REQUEST_PRIVATE: remember it and pass it to the target only.
    pub fn request_private(
        &self,
        now: Instant,
        from: &Session,
        claimed: &str,
        target: &str,
    ) -> Result<(), Refusal> {
        if claimed != from.name {
            return Err(Refusal::Forged);
        }
        if target == from.name {
            return Err(Refusal::SelfTarget);
        }
        let t = self.online(target).ok_or(Refusal::Offline)?;
        if let Some(node) = &t.remote {
            // Across nodes: the target's node keeps the request and issues
            // the connect id; this node proxies its user's end there
            // (docs/scaling.md).
            let crossed = t.dialect == Dialect::Chatos
                && self
                    .cluster()
                    .is_some_and(|c| c.private_request(node, &from.name, target, from.ip));
            return if crossed {
                Ok(())
            } else {
                Err(Refusal::Offline)
            };
        }
        self.pend_request(now, &from.name, &t, None)
    }

    /// Keep `requester`'s request to local session `t` (with the address a
    /// requester of another node connects from) and pass it on.
    fn pend_request(
        &self,
        now: Instant,
        requester: &str,
        t: &Session,
        remote_ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        {
            let mut private = self.private.lock();
            private.add_request(
                now,
                requester,
                &t.name,
                now + self.cfg.connect_id_ttl,
                self.cfg.max_pending_requests,
            )?;
            if let Some(ip) = remote_ip {
                private.set_remote_ip(requester, &t.name, ip);
            }
        }
        t.peer.deliver(&Event::PrivateRequest {
            requester,
            target: &t.name,
        });
        Ok(())
    }

    /// Cluster mode: REQUEST_PRIVATE from `from`, the stand-in of a user of
    /// another node connected from `ip`, to local user `target`.
    pub fn request_private_remote(
        &self,
        now: Instant,
        from: &Session,
        target: &str,
        ip: IpAddr,
    ) -> Result<(), Refusal> {
        if from.remote.is_none() {
            return Err(Refusal::Forged);
        }
        let t = self
            .online(target)
            .filter(|t| t.remote.is_none())
            .ok_or(Refusal::Offline)?;
        self.pend_request(now, &from.name, &t, Some(ip))
    }

    /// OK_PRIVATE or KO_PRIVATE from the target of a pending request. On OK
    /// both users get a fresh single-use connect id; on KO the requester is told.
    pub fn answer_private(
        &self,
        now: Instant,
        from: &Session,
        requester: &str,
        claimed_target: &str,
        accept: bool,
    ) -> Result<Option<i64>, Refusal> {
        if claimed_target != from.name {
            return Err(Refusal::Forged);
        }
        let req = self.online(requester);
        let mut private = self.private.lock();
        let remote_ip = private.take_remote_ip(requester, &from.name);
        if !private.take_request(now, requester, &from.name) {
            return Err(Refusal::NotPending);
        }
        let Some(req) = req else {
            return Err(Refusal::Offline);
        };
        if !accept {
            drop(private);
            req.peer.deliver(&Event::PrivateRefused {
                requester,
                target: &from.name,
            });
            return Ok(None);
        }
        // Unused ids live until they expire; bound how many can pile up.
        // The request is answered all the same: the requester hears
        // KO_PRIVATE, as if refused, instead of waiting for an id that
        // never comes.
        if private.ticket_count() >= self.cfg.max_relays * TICKETS_PER_RELAY {
            drop(private);
            req.peer.deliver(&Event::PrivateRefused {
                requester,
                target: &from.name,
            });
            return Err(Refusal::Limit);
        }
        let id = private.issue_id(
            requester,
            &from.name,
            // A requester of another node: the address it connects from
            // there, which its proxied LOGIN_PRIVATE presents.
            [
                remote_ip.filter(|_| req.remote.is_some()).unwrap_or(req.ip),
                from.ip,
            ],
            now + self.cfg.connect_id_ttl,
        );
        drop(private);
        let ev = Event::PrivateId {
            requester,
            target: &from.name,
            connect_id: id,
        };
        req.peer.deliver(&ev);
        from.peer.deliver(&ev);
        Ok(Some(id))
    }

    /// A connection presents connect id `id` from `ip`. See [`RelayJoin`].
    /// `stream` is this end's socket; the hub only keeps it for hand-over and
    /// never reads or writes it.
    pub fn relay_join(
        &self,
        now: Instant,
        id: i64,
        ip: IpAddr,
        stream: Arc<TcpStream>,
    ) -> RelayJoin {
        let joined = self.private.lock().join(
            now,
            id,
            ip,
            stream,
            self.cfg.max_relays.saturating_sub(self.proxy_count()),
        );
        if matches!(joined, RelayJoin::Second { .. }) {
            self.metrics.relay_established();
        }
        joined
    }

    /// The first end of a relay gave up waiting for the second.
    /// Returns false if the second end arrived in the meantime.
    pub fn relay_abandon(&self, id: i64) -> bool {
        self.private.lock().abandon(id)
    }

    /// The waiting first end of `id` on `stream` saw its own client go
    /// away: its `max_relays` slot is free at once, and the id stays valid
    /// until it expires (either user may present it again). Returns false
    /// if the second end took `stream` meanwhile (its hand-over follows).
    pub fn relay_leave(&self, id: i64, stream: &Arc<TcpStream>) -> bool {
        self.private.lock().leave(id, stream)
    }

    /// One direction of relay `id` has finished pumping at `now`. Once
    /// both have, the relay's pair is remembered until `now` plus the
    /// connect-id lifetime, so a late CLOSE_CONNECTION is still confirmed.
    pub fn relay_half_done(&self, now: Instant, id: i64) {
        let until = now + self.cfg.connect_id_ttl;
        self.private.lock().half_done(id, until);
    }

    pub fn relay_count(&self) -> usize {
        self.private.lock().relay_count()
    }

    /// What `max_relays` bounds now: relays running, first ends waiting
    /// for their second, and ends proxied to another node.
    pub fn relays_in_use(&self) -> usize {
        let private = self.private.lock();
        private.in_use() + self.proxies.lock().len()
    }

    /// CLOSE_CONNECTION: tear relay `id` down if it really joins these two
    /// users, and tell both with `PrivateClosed`. The caller shuts down the
    /// returned sockets.
    pub fn close_private(
        &self,
        from: &Session,
        id: i64,
        claimed: &str,
        target: &str,
    ) -> Result<CloseOutcome, Refusal> {
        if claimed != from.name {
            return Err(Refusal::Forged);
        }
        let closed = self.private.lock().close(id, &from.name, target);
        let outcome = match closed {
            Ok(outcome) => outcome,
            Err(Refusal::NotPending) => {
                // Across nodes the relay is on the node that issued the id:
                // the target's node, when the target is a user of another
                // one. That node closes it and tells both users.
                let Some(node) = self.online(target).and_then(|t| t.remote.clone()) else {
                    return Err(Refusal::NotPending);
                };
                let sent = from.remote.is_none()
                    && self
                        .cluster()
                        .is_some_and(|c| c.private_close(&node, &from.name, target, id));
                return if sent {
                    Ok(CloseOutcome {
                        sockets: Vec::new(),
                    })
                } else {
                    Err(Refusal::NotPending)
                };
            }
            Err(e) => return Err(e),
        };
        from.peer.deliver(&Event::PrivateClosed {
            connect_id: id,
            peer: target,
        });
        if let Some(t) = self.online(target) {
            t.peer.deliver(&Event::PrivateClosed {
                connect_id: id,
                peer: &from.name,
            });
        }
        Ok(outcome)
    }

    /// Drop expired requests, ids, invitations and ringing calls. Called
    /// by a housekeeping thread.
    pub fn sweep(&self, now: Instant) {
        self.private.lock().sweep(now);
        self.rooms_sweep(now);
        self.expire_calls(now);
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod tests;
