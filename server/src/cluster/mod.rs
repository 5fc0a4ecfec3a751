//! Cluster mode (`bus_url`): several chinwagd nodes as one service over a
//! NATS bus and one PostgreSQL store (docs/scaling.md). This is the
//! adapter around the hub: one more source of hub commands and one more
//! consumer of hub events; the hub stays sans-IO.
//!
//! Threads and channels (docs/architecture.md, "Cluster mode"):
//! - `cw-bus` (bus.rs): the NATS client on a current-thread tokio
//!   runtime, the only async code in the server. Takes [`bus::BusCmd`]s
//!   from a bounded crossbeam channel (`CMD_QUEUE`), woken by a `Notify`.
//! - `cw-bus-in` (here): a plain thread that reads [`bus::BusEvent`]s from
//!   a bounded channel (`EVENT_QUEUE`) and calls the hub, as a connection
//!   thread does: stand-ins for other nodes' users (`Hub::login_remote`),
//!   private texts and public-room texts for local users, accounts pokes,
//!   and the node-death timer.
//! - Connection threads call [`Cluster`] through the hub's
//!   [`ClusterLink`]: a login's name claim waits on a bounded(1) reply
//!   channel for at most `bus_timeout_ms`; everything else is `try_send`.
//!
//! Locks: `claims` (a leaf: never held across a channel wait or a hub
//! call). The replica is owned by `cw-bus-in` alone, without a lock.

pub mod bus;
pub mod pokes;
pub mod proxy;
pub mod recheck;
pub mod taken;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chinwag_proto::bus::{call, private, room, Envelope};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::front::accounts::service::Accounts;
use crate::guard::{supervise, Fatal, Turn};
use crate::hub::{
    names, AccessRefusal, ClusterLink, Dialect, Event, Hub, Media, Peer, RoomInfo, RoomMode,
    RoomPeer, Session, ToHome, Transport,
};
use crate::metrics::{DropReason, Metrics};
use bus::{BusCmd, BusEvent};

/// Cluster mode's settings (config.rs: `bus_url`, `node_name`,
/// `cluster_name`, `node_timeout_ms`, `bus_timeout_ms`, `node_index`,
/// `cluster_addr`, `cluster_secret_file`, and the `bus_*` credentials and
/// TLS files).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub urls: Vec<String>,
    pub node: String,
    pub cluster: String,
    pub node_timeout: Duration,
    pub bus_timeout: Duration,
    /// The top byte of the connect ids this node issues.
    pub index: u8,
    /// The node-to-node listener's address as bound (empty: none).
    pub addr: String,
    /// The proxy handshake's shared secret (None: private connections do
    /// not cross nodes).
    pub secret: Option<Secret>,
    /// How the node logs in to the bus and protects the link.
    pub access: bus::Access,
}

/// The cluster's shared secret; never printed.
#[derive(Clone, PartialEq)]
pub struct Secret(pub Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Read `cluster_secret_file`: its bytes without a trailing newline, at
/// least [`proxy::MIN_SECRET`], from a file readable by its owner only
/// (the rule of every secret file: [`crate::config::read_secret_file`]).
/// Errors name the key and the file, never the secret.
pub fn read_secret(path: &std::path::Path) -> io::Result<Secret> {
    let named = |e: io::Error| io::Error::other(format!("cluster_secret_file: {e}"));
    let bytes = crate::config::read_secret_file(path, "the cluster secret").map_err(named)?;
    if bytes.len() < proxy::MIN_SECRET {
        return Err(named(io::Error::other(format!(
            "{}: the cluster secret must be at least {} bytes",
            path.display(),
            proxy::MIN_SECRET
        ))));
    }
    Ok(Secret(Arc::new(bytes)))
}

/// Another node as its heartbeats describe it.
#[derive(Debug, Clone)]
struct PeerNode {
    index: u8,
    addr: Option<SocketAddr>,
}

/// How often `cw-bus-in` looks for silent nodes when no event comes.
const TICK: Duration = Duration::from_millis(200);
/// Rooms private rooms: a home lists each of its rooms this often (and at
/// once, within `ROOMS_CHECK`, when one changes).
const ROOMS_EVERY: Duration = Duration::from_secs(1);
const ROOMS_CHECK: Duration = Duration::from_millis(100);
/// Joins of rooms of other nodes awaiting the home's answer at once.
const JOINS_IN_FLIGHT: usize = 1024;
/// Members listed in a `joined` envelope at most (seed 003: 254 clients).
const PEERS_LISTED: usize = 254;
/// Room name claims of other nodes a node keeps (to free a dead node's).
const ROOM_KEYS_KEPT: usize = 100_000;
/// Changes of the `names` bucket held back at most ([`Cluster::hold_presence`]).
const HELD_MAX: usize = 10_000;

/// The `names` bucket key of rooms private room `name`: `r` and the
/// name's bytes in lower-case hex (never a user's key, which starts `k`).
pub fn room_key(name: &str) -> String {
    let mut s = String::with_capacity(1 + 2 * name.len());
    s.push('r');
    for b in name.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Marks a room's name in a `Reassert` (no user name has a NUL).
const ROOM_REASSERT: &str = "\0room:";

fn is_room_key(key: &str) -> bool {
    key.starts_with('r')
}

/// A room of another node, as its home lists it.
#[derive(Debug, Clone)]
struct Listed {
    node: String,
    mode: RoomMode,
    count: u8,
    /// Its members' names (the `listed` envelope's text, one a line).
    members: Vec<String>,
    seen: Instant,
}

type JoinAnswer = Result<(RoomMode, Vec<RoomPeer>), AccessRefusal>;

/// A join of a room of another node awaiting its answer.
struct Join {
    node: String,
    room: String,
    member: String,
    reply: Sender<JoinAnswer>,
}

fn mode_code(m: RoomMode) -> u8 {
    match m {
        RoomMode::Centralised => 0,
        RoomMode::Decentralised => 1,
    }
}

fn mode_of(code: u8) -> RoomMode {
    if code == 1 {
        RoomMode::Decentralised
    } else {
        RoomMode::Centralised
    }
}

/// The members of a decentralised room in a `joined` envelope: one line
/// each, `name host port`.
fn peers_text(peers: &[RoomPeer]) -> String {
    let mut t = String::new();
    for p in peers.iter().take(PEERS_LISTED) {
        t.push_str(&format!("{} {} {}\n", p.name, p.addr.ip(), p.addr.port()));
    }
    t
}

/// Read back [`peers_text`]; a line that does not read is skipped.
fn parse_peers(text: &str) -> Vec<RoomPeer> {
    text.lines()
        .take(PEERS_LISTED)
        .filter_map(|l| {
            let mut w = l.split(' ');
            let name = w.next()?;
            let ip: IpAddr = w.next()?.parse().ok()?;
            let port: u16 = w.next()?.parse().ok()?;
            if w.next().is_some() || name.is_empty() || name.len() > names::MAX_NAME {
                return None;
            }
            Some(RoomPeer {
                addr: SocketAddr::new(ip, port),
                name: name.to_owned(),
            })
        })
        .collect()
}

fn endpoint_of(host: &str, port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(host.parse().ok()?, port))
}

fn dialect_code(d: Dialect) -> u8 {
    match d {
        Dialect::Chatos => 0,
        Dialect::Babel => 1,
        Dialect::Accounts => 2,
        Dialect::Rooms => 3,
    }
}

fn dialect_of(code: u8) -> Dialect {
    match code {
        0 => Dialect::Chatos,
        1 => Dialect::Babel,
        2 => Dialect::Accounts,
        _ => Dialect::Rooms,
    }
}

/// The `names` bucket keys of a name: its two look-alike skeletons in
/// lower-case hex (KV keys allow only `[-/_=.a-zA-Z0-9]`), sorted, without
/// repeats.
pub fn name_keys(name: &str) -> Vec<String> {
    let mut keys: Vec<String> = names::skeletons(name)
        .iter()
        .map(|k| {
            let mut s = String::with_capacity(1 + 2 * k.len());
            s.push('k');
            for b in k.bytes() {
                s.push_str(&format!("{b:02x}"));
            }
            s
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The sending half towards the bus thread.
#[derive(Clone)]
struct Outbox {
    cmds: Sender<BusCmd>,
    wake: Arc<Notify>,
    up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Test hook ([`Cluster::lose_calls`]): `Call` envelopes of one op to
    /// lose, as the bus (at most once) may lose any.
    lose: Arc<Mutex<Option<(u8, u32)>>>,
    /// Test hook ([`Cluster::lose_pokes`]): pokes to lose.
    lose_pokes: Arc<std::sync::atomic::AtomicU32>,
}

impl Outbox {
    /// Queue a command; false (counted) when the bus is down or the queue full.
    fn send(&self, cmd: BusCmd) -> bool {
        if !self.up.load(Ordering::SeqCst) {
            self.metrics.dropped(DropReason::BusDown);
            return false;
        }
        self.force(cmd)
    }

    /// Queue a command even while the bus is down (releases: the client
    /// sends them once it is back).
    fn force(&self, cmd: BusCmd) -> bool {
        match self.cmds.try_send(cmd) {
            Ok(()) => {
                self.wake.notify_one();
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.dropped(DropReason::BusFull);
                false
            }
        }
    }

    fn publish(&self, subject: String, env: &Envelope) -> bool {
        if matches!(env, Envelope::Poke { .. })
            && self
                .lose_pokes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return true;
        }
        if let Envelope::Call { op, .. } = env {
            let mut lose = self.lose.lock();
            if let Some((lost, left)) = lose.as_mut() {
                if lost == op && *left > 0 {
                    *left -= 1;
                    return true;
                }
            }
        }
        self.send(BusCmd::Publish {
            subject,
            payload: env.to_bytes(),
        })
    }
}

/// A running cluster adapter.
pub struct Cluster {
    cfg: ClusterConfig,
    epoch: u64,
    out: Outbox,
    /// Each local session's claim: name -> (key, revision).
    claims: Mutex<HashMap<String, Vec<(String, u64)>>>,
    accounts: RwLock<Option<Weak<Accounts>>>,
    /// Other nodes' `node_index` and `cluster_addr`, from their heartbeats.
    peers: RwLock<HashMap<String, PeerNode>>,
    /// `taken` envelopes sent and not yet acknowledged (see `taken`).
    taken: Arc<Mutex<taken::Retries>>,
    /// Rooms private rooms of other nodes by name (at most
    /// `hub::rooms::REMOTE_ROOMS_KEPT`; a leaf lock).
    rooms: Mutex<HashMap<String, Listed>>,
    /// This node's rooms' names claimed in the bucket: name -> key and
    /// revision (a leaf lock).
    room_claims: Mutex<HashMap<String, (String, u64)>>,
    /// Joins of rooms of other nodes awaiting an answer, by request (a leaf lock).
    joins: Mutex<HashMap<u64, Join>>,
    next_req: std::sync::atomic::AtomicU64,
    /// Pokes recently sent, to send at most one per user and subject per
    /// `pokes::GAP` (a leaf lock).
    pokes: Mutex<pokes::Pokes>,
    /// Test hook ([`Cluster::hold_presence`]): changes of the `names`
    /// bucket wait in the replica, as if the bus were slow to bring them.
    hold: AtomicBool,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Connect to the bus (failing if it cannot be reached within
    /// `bus_timeout`), start `cw-bus` and `cw-bus-in`, and hook into `hub`.
    pub fn start(cfg: ClusterConfig, hub: &Arc<Hub>, fatal: &Fatal) -> io::Result<Arc<Cluster>> {
        let metrics = hub.metrics().clone();
        let (cmd_tx, cmd_rx) = bounded(bus::CMD_QUEUE);
        let (ev_tx, ev_rx) = bounded(bus::EVENT_QUEUE);
        let wake = Arc::new(Notify::new());
        let up = Arc::new(AtomicBool::new(false));
        // Unique per start of this node: its claims from an earlier life
        // are told apart from this one's.
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let m = metrics.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let link = bus::Link {
            stop: stop.clone(),
            cmds: cmd_rx,
            wake: wake.clone(),
            events: ev_tx,
            up: up.clone(),
            dropped: Arc::new(move || m.dropped(DropReason::BusFull)),
        };
        let heartbeat = Envelope::Heartbeat {
            node: cfg.node.clone(),
            epoch,
            index: cfg.index,
            addr: cfg.addr.clone(),
        }
        .to_bytes();
        let (ready_tx, ready_rx) = bounded(1);
        let bus_cfg = cfg.clone();
        let bus_thread = std::thread::Builder::new()
            .name(format!("cw-bus-{}", cfg.node))
            .spawn({
                let fatal = fatal.clone();
                move || {
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        bus::run(bus_cfg, heartbeat, link, ready_tx)
                    }));
                    if ran.is_err() {
                        fatal.stop("the cluster bus thread panicked");
                    }
                }
            })?;
        // Connecting, the bucket, three subscriptions and the watch.
        match ready_rx.recv_timeout(cfg.bus_timeout * 4 + Duration::from_secs(2)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io::Error::other(e)),
            Err(_) => {
                return Err(io::Error::other(format!(
                    "the bus did not answer in time ({})",
                    cfg.urls.join(",")
                )))
            }
        }
        let cluster = Arc::new(Cluster {
            out: Outbox {
                cmds: cmd_tx,
                wake,
                up,
                metrics,
                lose: Arc::new(Mutex::new(None)),
                lose_pokes: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            },
            epoch,
            claims: Mutex::new(HashMap::new()),
            accounts: RwLock::new(None),
            peers: RwLock::new(HashMap::new()),
            taken: Arc::new(Mutex::new(taken::Retries::default())),
            rooms: Mutex::new(HashMap::new()),
            room_claims: Mutex::new(HashMap::new()),
            joins: Mutex::new(HashMap::new()),
            next_req: std::sync::atomic::AtomicU64::new(1),
            pokes: Mutex::new(pokes::Pokes::default()),
            hold: AtomicBool::new(false),
            stop,
            threads: Mutex::new(vec![bus_thread]),
            cfg,
        });
        let replica = Replica::new(&cluster, hub);
        let stop = cluster.stop.clone();
        let node_timeout = cluster.cfg.node_timeout;
        let inbound = std::thread::Builder::new()
            .name(format!("cw-bus-in-{}", cluster.cfg.node))
            .spawn({
                let fatal = fatal.clone();
                move || replica.run(ev_rx, stop, node_timeout, fatal)
            })?;
        cluster.threads.lock().push(inbound);
        hub.set_cluster(cluster.clone());
        hub.set_node_index(cluster.cfg.index);
        log::info!(
            "cluster {}: node {} joined the bus",
            cluster.cfg.cluster,
            cluster.cfg.node
        );
        Ok(cluster)
    }

    /// Send the pokes deferred by their gap that are due at `now` (called
    /// every tick).
    fn send_due_pokes(&self, now: Instant) {
        let due = self.pokes.lock().due(now);
        for (subject, name) in due {
            self.out.publish(subject, &Envelope::Poke { name });
        }
    }

    /// Send again the `taken` envelopes due at `now` (called every tick).
    fn repeat_taken(&self, now: Instant) {
        let mut pending = self.taken.lock();
        for due in pending.due(now) {
            match due {
                taken::Due::Resend {
                    subject,
                    caller,
                    callee,
                } => {
                    self.out.publish(
                        subject,
                        &Envelope::Call {
                            op: call::TAKEN,
                            from: caller,
                            to: callee,
                            host: String::new(),
                            port: 0,
                        },
                    );
                }
                taken::Due::GaveUp { caller, callee } => crate::logs::server_log!(
                    log::Level::Warn,
                    "taken not acknowledged",
                    "cluster: {callee}'s node never acknowledged that {caller}'s relayed call \
                     was answered ({} sends); its half rings out",
                    taken::MAX_SENDS
                ),
            }
        }
    }

    /// A `Room` envelope to node `node`.
    #[allow(clippy::too_many_arguments)]
    fn room_env(
        &self,
        node: &str,
        op: u8,
        home: &str,
        room: &str,
        from: &str,
        to: &str,
        extra: RoomExtra,
    ) -> bool {
        self.out.publish(
            bus::subject_node(&self.cfg.cluster, node),
            &extra.envelope(op, home, room, from, to),
        )
    }

    /// Node `node` lists its room `name` (`count` 0: closed) and its members.
    fn listed(&self, node: &str, name: &str, mode: RoomMode, count: u8, text: &str) {
        let members: Vec<String> = text
            .lines()
            .filter(|n| !n.is_empty() && n.len() <= names::MAX_NAME)
            .take(PEERS_LISTED)
            .map(str::to_owned)
            .collect();
        let mut rooms = self.rooms.lock();
        if count == 0 {
            if rooms.get(name).is_some_and(|l| l.node == node) {
                rooms.remove(name);
            }
            return;
        }
        let now = Instant::now();
        let fresh = |l: &Listed| now.duration_since(l.seen) <= self.cfg.node_timeout;
        match rooms.get_mut(name) {
            Some(l) if l.node == node || !fresh(l) => {
                *l = Listed {
                    node: node.to_owned(),
                    mode,
                    count,
                    members,
                    seen: now,
                };
            }
            // Two homes for one name (created at once): the first listed
            // keeps it here until it goes.
            Some(_) => {}
            None => {
                if rooms.len() >= crate::hub::rooms::REMOTE_ROOMS_KEPT {
                    rooms.retain(|_, l| fresh(l));
                }
                if rooms.len() < crate::hub::rooms::REMOTE_ROOMS_KEPT {
                    rooms.insert(
                        name.to_owned(),
                        Listed {
                            node: node.to_owned(),
                            mode,
                            count,
                            members,
                            seen: now,
                        },
                    );
                }
            }
        }
    }

    /// What `f` reads of room `room` of another node, if it was listed
    /// within `node_timeout`.
    fn listed_now<R>(&self, room: &str, f: impl FnOnce(&Listed) -> R) -> Option<R> {
        let now = Instant::now();
        self.rooms
            .lock()
            .get(room)
            .filter(|l| now.duration_since(l.seen) <= self.cfg.node_timeout)
            .map(f)
    }

    /// Count an envelope that does not hold.
    fn refused(&self, what: &str) {
        self.out.metrics.dropped(DropReason::BusRefused);
        log::debug!("cluster: refused a rooms envelope: {what}");
    }

    /// `taken` envelopes awaiting their acknowledgement.
    pub fn taken_pending(&self) -> usize {
        self.taken.lock().len()
    }

    /// Test hook: the next `count` `Call` envelopes of op `op` this node
    /// publishes are lost on the way, as the bus may lose any message.
    #[doc(hidden)]
    pub fn lose_calls(&self, op: u8, count: u32) {
        *self.out.lose.lock() = Some((op, count));
    }

    /// Test hook: the next `count` pokes this node publishes are lost on
    /// the way, as the bus may lose any message.
    #[doc(hidden)]
    pub fn lose_pokes(&self, count: u32) {
        self.out.lose_pokes.store(count, Ordering::SeqCst);
    }

    /// Pokes [`Cluster::lose_pokes`] has yet to lose (tests).
    #[doc(hidden)]
    pub fn pokes_to_lose(&self) -> u32 {
        self.out.lose_pokes.load(Ordering::SeqCst)
    }

    /// Test hook: while `held`, this node applies no change of the
    /// `names` bucket (other nodes' logins and logouts wait, in order, as
    /// if the bus were slow to bring them); released, they apply within a
    /// tick. At most `HELD_MAX` wait; past that they apply at once.
    #[doc(hidden)]
    pub fn hold_presence(&self, held: bool) {
        self.hold.store(held, Ordering::SeqCst);
    }

    /// Where pokes for accounts users go.
    pub fn set_accounts(&self, accounts: &Arc<Accounts>) {
        *self.accounts.write() = Some(Arc::downgrade(accounts));
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// The proxy handshake's secret, when configured.
    pub fn secret(&self) -> Option<Arc<Vec<u8>>> {
        self.cfg.secret.as_ref().map(|s| s.0.clone())
    }

    /// Whether the bus is reachable now.
    pub fn bus_up(&self) -> bool {
        self.out.up.load(Ordering::SeqCst)
    }

    /// Stop both threads (after the sessions have ended, so their names
    /// are released first).
    pub fn stop(&self) {
        // The flag stops both threads even when the command queue is full;
        // the command only wakes the bus thread after what is queued.
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.out.cmds.try_send(BusCmd::Stop);
        self.out.wake.notify_one();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }

    fn claim_value(&self, name: &str, dialect: Dialect) -> Vec<u8> {
        Envelope::Claim {
            node: self.cfg.node.clone(),
            epoch: self.epoch,
            dialect: dialect_code(dialect),
            name: name.to_owned(),
        }
        .to_bytes()
    }

    /// Node `node`'s node-to-node listener, if it advertises one.
    pub fn peer_addr(&self, node: &str) -> Option<SocketAddr> {
        self.peers.read().get(node).and_then(|p| p.addr)
    }

    /// Ask the bus for `keys` on behalf of `name`; waits up to `bus_timeout`.
    fn claim_keys(&self, name: &str, dialect: Dialect) -> bool {
        let (reply, answer) = bounded(1);
        let cmd = BusCmd::Claim {
            keys: name_keys(name),
            value: self.claim_value(name, dialect),
            reply,
        };
        if !self.out.send(cmd) {
            return false;
        }
        match answer.recv_timeout(self.cfg.bus_timeout) {
            Ok(Some(got)) => {
                self.claims.lock().insert(name.to_owned(), got);
                true
            }
            Ok(None) => false,
            Err(_) => {
                // The bus thread gives the name back if it wins later.
                self.out.metrics.dropped(DropReason::BusDown);
                false
            }
        }
    }
}

impl ClusterLink for Cluster {
    fn claim(&self, name: &str, dialect: Dialect) -> bool {
        self.claim_keys(name, dialect)
    }

    fn release(&self, name: &str) {
        let keys = self.claims.lock().remove(name);
        if let Some(keys) = keys {
            self.out.force(BusCmd::Release { keys });
        }
    }

    fn public_text(&self, from: &str, text: &str) {
        self.out.publish(
            bus::subject_global(&self.cfg.cluster),
            &Envelope::Public {
                node: self.cfg.node.clone(),
                from: from.to_owned(),
                text: text.to_owned(),
            },
        );
    }

    fn account(&self, pseudo: &str, registered: bool) {
        self.out.publish(
            bus::subject_global(&self.cfg.cluster),
            &Envelope::Account {
                node: self.cfg.node.clone(),
                pseudo: pseudo.to_owned(),
                registered,
            },
        );
    }

    fn ban(&self, ban: &crate::hub::bans::Ban, added: bool) {
        let (kind, value) = ban.columns();
        self.out.publish(
            bus::subject_global(&self.cfg.cluster),
            &Envelope::Ban {
                node: self.cfg.node.clone(),
                kind: kind.to_owned(),
                value,
                added,
            },
        );
    }

    fn private_request(&self, node: &str, requester: &str, target: &str, ip: IpAddr) -> bool {
        // This node proxies its user's end to the target's node, which
        // must take proxies.
        if self.cfg.secret.is_none() || self.peer_addr(node).is_none() {
            return false;
        }
        self.out.publish(
            bus::subject_node(&self.cfg.cluster, node),
            &Envelope::PrivateConn {
                op: private::REQUEST,
                requester: requester.to_owned(),
                target: target.to_owned(),
                connect_id: 0,
                ip: ip.to_string(),
            },
        )
    }

    fn private_close(&self, node: &str, from: &str, target: &str, id: i64) -> bool {
        self.out.publish(
            bus::subject_node(&self.cfg.cluster, node),
            &Envelope::PrivateConn {
                op: private::CLOSE,
                requester: from.to_owned(),
                target: target.to_owned(),
                connect_id: id,
                ip: String::new(),
            },
        )
    }

    fn proxy_dial(&self, id: i64, ip: IpAddr) -> Option<io::Result<TcpStream>> {
        let index = (id as u64 >> 56) as u8;
        if index == self.cfg.index {
            return None;
        }
        let Some(secret) = &self.cfg.secret else {
            return None;
        };
        let addr = self
            .peers
            .read()
            .values()
            .find(|p| p.index == index)
            .and_then(|p| p.addr);
        // An index no node advertises: the id is unknown here as anywhere.
        let addr = addr?;
        let hello = proxy::Hello {
            connect_id: id,
            ip,
            node: self.cfg.node.clone(),
        };
        Some(proxy::dial(addr, &secret.0, &hello, self.cfg.bus_timeout))
    }

    fn remote_rooms(&self) -> Vec<RoomInfo> {
        let now = Instant::now();
        self.rooms
            .lock()
            .iter()
            .filter(|(_, l)| now.duration_since(l.seen) <= self.cfg.node_timeout)
            .map(|(name, l)| RoomInfo {
                mode: l.mode,
                name: name.clone(),
                members: l.count as usize,
            })
            .collect()
    }

    fn remote_room_members(&self, room: &str) -> Option<Vec<String>> {
        self.listed_now(room, |l| l.members.clone())
    }

    fn room_home(&self, room: &str) -> Option<String> {
        self.listed_now(room, |l| l.node.clone())
    }

    fn rooms_open(&self) -> bool {
        self.bus_up()
    }

    fn room_claim(&self, name: &str) -> bool {
        if self.room_claims.lock().contains_key(name) {
            return true;
        }
        let (reply, answer) = bounded(1);
        let cmd = BusCmd::Claim {
            keys: vec![room_key(name)],
            value: self.claim_value(name, Dialect::Rooms),
            reply,
        };
        if !self.out.send(cmd) {
            return false;
        }
        match answer.recv_timeout(self.cfg.bus_timeout) {
            Ok(Some(mut got)) if got.len() == 1 => {
                let held = got.pop().expect("one key");
                let mut claims = self.room_claims.lock();
                if claims.contains_key(name) {
                    // Another local creation claimed it meanwhile.
                    drop(claims);
                    self.out.force(BusCmd::Release { keys: vec![held] });
                } else {
                    claims.insert(name.to_owned(), held);
                }
                true
            }
            Ok(_) => false,
            Err(_) => {
                // The bus thread gives the name back if it wins later.
                self.out.metrics.dropped(DropReason::BusDown);
                false
            }
        }
    }

    fn room_claim_held(&self, name: &str) -> bool {
        self.room_claims.lock().contains_key(name)
    }

    fn room_unclaim(&self, name: &str) {
        let held = self.room_claims.lock().remove(name);
        if let Some(key) = held {
            self.out.force(BusCmd::Release { keys: vec![key] });
        }
    }

    fn room_join(
        &self,
        node: &str,
        room: &str,
        member: &str,
        endpoint: Option<SocketAddr>,
    ) -> JoinAnswer {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = bounded(1);
        {
            let mut joins = self.joins.lock();
            if joins.len() >= JOINS_IN_FLIGHT {
                self.out.metrics.dropped(DropReason::BusFull);
                return Err(AccessRefusal::NoSuchRoom);
            }
            joins.insert(
                req,
                Join {
                    node: node.to_owned(),
                    room: room.to_owned(),
                    member: member.to_owned(),
                    reply,
                },
            );
        }
        let extra = RoomExtra {
            req,
            at: endpoint,
            ..RoomExtra::default()
        };
        let sent = self.room_env(node, room::JOIN, node, room, member, "", extra);
        let mut got = None;
        if sent {
            got = answer.recv_timeout(self.cfg.bus_timeout).ok();
        }
        if got.is_none() {
            let taken = self.joins.lock().remove(&req).is_none();
            if taken && sent {
                // `cw-bus-in` took the answer just now (and may have
                // recorded the membership): it is on its way.
                got = answer.recv_timeout(self.cfg.bus_timeout).ok();
            }
        }
        match got {
            Some(a) => a,
            None => {
                if sent {
                    // The home never answered: if it let the member in
                    // after all, it hears that the member left.
                    self.out.metrics.dropped(DropReason::BusDown);
                    self.room_env(
                        node,
                        room::LEAVE,
                        node,
                        room,
                        member,
                        "",
                        RoomExtra::default(),
                    );
                }
                Err(AccessRefusal::NoSuchRoom)
            }
        }
    }

    fn room_to_home(&self, node: &str, msg: ToHome<'_>) -> bool {
        match msg {
            ToHome::Leave { room, from } => self.room_env(
                node,
                room::LEAVE,
                node,
                room,
                from,
                "",
                RoomExtra::default(),
            ),
            ToHome::Text { room, from, text } => {
                let extra = RoomExtra {
                    text: text.to_owned(),
                    ..RoomExtra::default()
                };
                self.room_env(node, room::TEXT, node, room, from, "", extra)
            }
            ToHome::Invite { room, from, to } => self.room_env(
                node,
                room::INVITE,
                node,
                room,
                from,
                to,
                RoomExtra::default(),
            ),
            ToHome::Answer {
                from,
                token,
                accept,
                endpoint,
            } => {
                let extra = RoomExtra {
                    count: u8::from(accept),
                    req: token,
                    at: endpoint,
                    ..RoomExtra::default()
                };
                self.room_env(node, room::ANSWER, node, "", from, "", extra)
            }
        }
    }

    /// At most one per user and subject per `pokes::GAP`; one asked for
    /// sooner goes when the gap is over ([`Cluster::send_due_pokes`]).
    fn poke(&self, node: Option<&str>, name: &str) {
        let subject = match node {
            Some(node) => bus::subject_node(&self.cfg.cluster, node),
            None => bus::subject_global(&self.cfg.cluster),
        };
        let now = self.pokes.lock().ask(Instant::now(), &subject, name);
        if now {
            self.out.publish(
                subject,
                &Envelope::Poke {
                    name: name.to_owned(),
                },
            );
        }
    }
}

/// The stand-in of a user of another node: what local users send it goes
/// to that node: private texts, call signalling and chatos private
/// connections' signalling (the hub refuses room invitations to
/// stand-ins, and never makes one a listener).
/// The optional fields of a `Room` envelope.
#[derive(Default)]
struct RoomExtra {
    mode: u8,
    count: u8,
    req: u64,
    at: Option<SocketAddr>,
    text: String,
    /// The invitee of an invitation asked of a home.
    to: String,
}

impl RoomExtra {
    fn with_to(self, to: &str) -> RoomExtra {
        RoomExtra {
            to: to.to_owned(),
            ..self
        }
    }

    /// The `Room` envelope of `op` about room `room` of node `home`.
    fn envelope(self, op: u8, home: &str, room: &str, from: &str, to: &str) -> Envelope {
        Envelope::Room {
            op,
            node: home.to_owned(),
            room: room.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            mode: self.mode,
            count: self.count,
            req: self.req,
            host: self.at.map(|a| a.ip().to_string()).unwrap_or_default(),
            port: self.at.map_or(0, |a| a.port()),
            text: self.text,
        }
    }
}

struct RemotePeer {
    out: Outbox,
    subject: String,
    name: String,
    /// This node's name (the home of its rooms).
    me: String,
    /// The cluster's `taken` envelopes awaiting acknowledgement.
    taken: Arc<Mutex<taken::Retries>>,
}

impl RemotePeer {
    /// What crosses nodes: private texts, call signalling and private
    /// connections' signalling; anything else has no form on the bus (and
    /// is never given to a stand-in).
    fn forward(&self, event: &Event<'_>) -> bool {
        match *event {
            Event::PrivateMessage { from, to, text } => self.out.publish(
                self.subject.clone(),
                &Envelope::Private {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    text: text.to_owned(),
                },
            ),
            Event::CallOffer { from, host, port } => self.call(call::OFFER, from, host, port),
            Event::CallAnswered { by, host, port } => self.call(call::ANSWERED, by, host, port),
            Event::CallRefused { by } => self.call(call::REFUSED, by, "", 0),
            Event::CallEnded { by } => self.call(call::ENDED, by, "", 0),
            Event::CallTaken { caller } => {
                // Held while publishing: a repeat from the tick cannot
                // overtake an event of this pair sent meanwhile.
                let mut pending = self.taken.lock();
                let sent = self.call(call::TAKEN, caller, "", 0);
                pending.sent(Instant::now(), &self.subject, caller, &self.name);
                sent
            }
            Event::PrivateRefused { requester, target } => {
                self.private(private::REFUSED, requester, target, 0)
            }
            Event::PrivateId {
                requester,
                target,
                connect_id,
            } => self.private(private::ID, requester, target, connect_id),
            // For this user: its connection with `peer` is closed.
            Event::PrivateClosed { connect_id, peer } => {
                self.private(private::CLOSED, peer, &self.name, connect_id)
            }
            // Rooms private rooms of this node with this user a member.
            Event::RoomMessage { from, room, text } => self.room(
                room::MESSAGE,
                room,
                from,
                RoomExtra {
                    text: text.to_owned(),
                    ..RoomExtra::default()
                },
            ),
            Event::RoomClosed { room } => self.room(room::CLOSED, room, "", RoomExtra::default()),
            Event::RoomInvitation {
                from,
                room,
                mode,
                token,
            } => self.room(
                room::INVITE,
                room,
                from,
                RoomExtra {
                    mode: mode_code(mode),
                    req: token,
                    ..RoomExtra::default()
                },
            ),
            _ => true,
        }
    }

    fn room(&self, op: u8, room: &str, from: &str, extra: RoomExtra) -> bool {
        let env = extra.envelope(op, &self.me, room, from, &self.name);
        self.out.publish(self.subject.clone(), &env)
    }

    fn private(&self, op: u8, requester: &str, target: &str, connect_id: i64) -> bool {
        self.out.publish(
            self.subject.clone(),
            &Envelope::PrivateConn {
                op,
                requester: requester.to_owned(),
                target: target.to_owned(),
                connect_id,
                ip: String::new(),
            },
        )
    }

    /// A call event for this user of another node, from `other` (a user of
    /// this node). Any event of the pair but `taken` ends the repeats of
    /// its `taken` first (the call moved on).
    fn call(&self, op: u8, other: &str, host: &str, port: u16) -> bool {
        let _pending = (op != call::TAKEN).then(|| {
            let mut p = self.taken.lock();
            p.done(other, &self.name);
            p
        });
        self.out.publish(
            self.subject.clone(),
            &Envelope::Call {
                op,
                from: other.to_owned(),
                to: self.name.clone(),
                host: host.to_owned(),
                port,
            },
        )
    }
}

impl Peer for RemotePeer {
    fn deliver(&self, event: &Event<'_>) -> bool {
        self.forward(event)
    }

    /// An operator's kick of a user of another node: that node closes it.
    fn disconnect(&self) {
        self.out.publish(
            self.subject.clone(),
            &Envelope::Kick {
                name: self.name.clone(),
            },
        );
    }
}

/// One key of the `names` bucket as this node last saw it.
struct Held {
    node: String,
    name: String,
    revision: u64,
}

/// A user of another node, as this node knows it.
struct Remote {
    node: String,
    dialect: Dialect,
    /// Keys of the bucket naming it (a name has one or two).
    keys: usize,
    /// Its stand-in in the hub, while its node is alive.
    session: Option<Arc<Session>>,
}

struct NodeSeen {
    last: Instant,
    dead: bool,
}

impl Replica {
    fn new(cluster: &Arc<Cluster>, hub: &Arc<Hub>) -> Replica {
        Replica {
            cluster: Arc::downgrade(cluster),
            hub: hub.clone(),
            me: cluster.cfg.node.clone(),
            epoch: cluster.epoch,
            keys: HashMap::new(),
            users: HashMap::new(),
            nodes: HashMap::new(),
            was_down: false,
            unshown: Vec::new(),
            started: Instant::now(),
            stale: Vec::new(),
            clash: None,
            listed: HashMap::new(),
            room_keys: HashMap::new(),
            listed_all: Instant::now(),
            listed_checked: Instant::now(),
            held: Vec::new(),
            mail: recheck::Recheck::default(),
        }
    }
}

/// The node's view of the cluster, owned by `cw-bus-in`.
struct Replica {
    cluster: Weak<Cluster>,
    hub: Arc<Hub>,
    me: String,
    epoch: u64,
    keys: HashMap<String, Held>,
    users: HashMap<String, Remote>,
    nodes: HashMap<String, NodeSeen>,
    /// This node lost the bus (and has not had it back since).
    was_down: bool,
    /// Users whose stand-in the hub refused (a local session still had the
    /// name, being disconnected after an outage): tried again each tick.
    unshown: Vec<String>,
    /// When this replica started (the claims of an earlier life wait a
    /// node timeout from here).
    started: Instant,
    /// Keys claimed under this node's name by another epoch.
    stale: Vec<(String, u64)>,
    /// Set when another live process uses this node's name: stop.
    clash: Option<String>,
    /// This node's rooms as last listed on the bus: name -> (mode, members).
    listed: HashMap<String, (RoomMode, Vec<String>)>,
    /// Room names other nodes claimed: key -> (node, revision).
    room_keys: HashMap<String, (String, u64)>,
    /// When every room was last listed, and when the list was last checked.
    listed_all: Instant,
    listed_checked: Instant,
    /// Changes of the `names` bucket held back by the test hook
    /// ([`Cluster::hold_presence`]), oldest first.
    held: Vec<BusEvent>,
    /// The pacing of the re-check of local users' stored items.
    mail: recheck::Recheck,
}

impl Replica {
    /// Until `stop`. A panic here (a bug) would leave the replica half
    /// updated, and the bus thread ending unasked leaves the node unable to
    /// claim names: either stops the server loudly (`Fatal`).
    fn run(
        mut self,
        events: Receiver<BusEvent>,
        stop: Arc<AtomicBool>,
        node_timeout: Duration,
        fatal: Fatal,
    ) {
        supervise(
            "cw-bus-in",
            &fatal,
            || true,
            || {
                if stop.load(Ordering::SeqCst) {
                    return Turn::Stop;
                }
                match events.recv_timeout(TICK) {
                    Ok(ev) => self.handle(ev),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        if !stop.load(Ordering::SeqCst) {
                            fatal.stop("the cluster bus thread ended");
                        }
                        return Turn::Stop;
                    }
                }
                self.tick(Instant::now(), node_timeout);
                if let Some(why) = self.clash.take() {
                    fatal.stop(&why);
                    return Turn::Stop;
                }
                Turn::Continue
            },
        );
        // Stand-ins go with the adapter.
        for (_, r) in self.users.drain() {
            if let Some(s) = r.session {
                self.hub.logout(&s);
            }
        }
    }

    /// What the clock decides: silent nodes, this node's claims from an
    /// earlier life, stand-ins refused before.
    fn tick(&mut self, now: Instant, node_timeout: Duration) {
        self.release_held();
        // Cut off from the bus, this node cannot tell a dead node from its
        // own outage: it judges nobody until the bus is back.
        if !self.was_down {
            self.find_dead(now, node_timeout);
        }
        // Claims under this node's name with another epoch are freed once a
        // node timeout has passed without a heartbeat from another live
        // process of that name (which would make this one stop instead).
        if !self.stale.is_empty() && now.duration_since(self.started) > node_timeout {
            let keys = std::mem::take(&mut self.stale);
            if let Some(c) = self.cluster.upgrade() {
                log::warn!(
                    "cluster: freeing {} names of this node's earlier life",
                    keys.len()
                );
                c.out.force(BusCmd::Release { keys });
            }
        }
        for name in std::mem::take(&mut self.unshown) {
            self.show(&name);
        }
        if let Some(c) = self.cluster.upgrade() {
            c.repeat_taken(now);
            c.send_due_pokes(now);
        }
        self.recheck_mail(now);
        self.list_rooms(now);
    }

    /// A poke is at most once: local accounts users' stored items are
    /// also re-checked, a batch per `recheck::EVERY` (docs/scaling.md,
    /// "Delivery").
    fn recheck_mail(&mut self, now: Instant) {
        let Some(a) = self.accounts() else {
            return;
        };
        if let Some(ids) = self.mail.batch(now, || a.recheck_candidates()) {
            if a.recheck(&ids).is_none() {
                log::debug!("cluster: store queue full; stored items re-checked next pass");
            }
        }
    }

    /// List this node's rooms on the bus: those that changed (within
    /// `ROOMS_CHECK`), every one each `ROOMS_EVERY`, and count 0 for those
    /// gone. At most 255 envelopes (a node's rooms) at a time.
    fn list_rooms(&mut self, now: Instant) {
        if now.duration_since(self.listed_checked) < ROOMS_CHECK {
            return;
        }
        self.listed_checked = now;
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        if !c.bus_up() {
            return;
        }
        let all = now.duration_since(self.listed_all) >= ROOMS_EVERY;
        if all {
            self.listed_all = now;
        }
        let rooms: HashMap<String, (RoomMode, Vec<String>)> = self
            .hub
            .local_rooms_detail()
            .into_iter()
            .map(|(name, mode, members)| (name, (mode, members)))
            .collect();
        let global = bus::subject_global(&c.cfg.cluster);
        let list = |name: &str, mode: RoomMode, members: &[String]| {
            let count = members.len().min(u8::MAX as usize) as u8;
            let mut text = String::new();
            for m in members.iter().take(PEERS_LISTED) {
                text.push_str(m);
                text.push('\n');
            }
            let extra = RoomExtra {
                mode: mode_code(mode),
                count,
                text,
                ..RoomExtra::default()
            };
            c.out.publish(
                global.clone(),
                &extra.envelope(room::LISTED, &self.me, name, "", ""),
            );
        };
        for (name, (mode, members)) in &rooms {
            let same = self
                .listed
                .get(name)
                .is_some_and(|(m, was)| m == mode && was == members);
            if all || !same {
                list(name, *mode, members);
            }
        }
        for (name, (mode, _)) in &self.listed {
            if !rooms.contains_key(name) {
                list(name, *mode, &[]);
            }
        }
        self.listed = rooms;
    }

    /// A `Room` envelope (`proto::bus::room`): what does not hold (a room,
    /// member or request this node does not know) is refused and counted.
    fn room(&mut self, op: u8, node: &str, name: &str, from: &str, to: &str, x: RoomExtra) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let now = Instant::now();
        match op {
            room::LISTED => {
                if node != self.me && crate::hub::rooms::valid_room_name(name) {
                    c.listed(node, name, mode_of(x.mode), x.count, &x.text);
                }
            }
            // To this node, the room's home, about a member of another node.
            room::JOIN | room::LEAVE | room::TEXT | room::ANSWER => {
                self.as_home(&c, op, node, name, from, x, now)
            }
            room::INVITE if node == self.me => {
                let x = x.with_to(to);
                self.as_home(&c, op, node, name, from, x, now)
            }
            // From a room's home, about a member of this node.
            _ => self.as_member_node(&c, op, node, name, from, to, x, now),
        }
    }

    /// An envelope to this node, a room's home, about `from`, a member of
    /// another node (its stand-in here).
    #[allow(clippy::too_many_arguments)]
    fn as_home(
        &mut self,
        c: &Cluster,
        op: u8,
        node: &str,
        name: &str,
        from: &str,
        x: RoomExtra,
        now: Instant,
    ) {
        let stand_in = self.hub.online(from).filter(|s| s.remote.is_some());
        let Some(s) = stand_in.filter(|_| node == self.me) else {
            return c.refused("to a home, from no member of another node");
        };
        let member_node = s.remote.clone().expect("a stand-in");
        let tell = |op: u8, room: &str, extra: RoomExtra| {
            c.room_env(&member_node, op, &self.me, room, "", from, extra)
        };
        match op {
            room::JOIN => match self.hub.room_join_at(&s, name, x.at) {
                Ok((mode, peers)) => {
                    let extra = RoomExtra {
                        mode: mode_code(mode),
                        req: x.req,
                        text: peers_text(&peers),
                        ..RoomExtra::default()
                    };
                    tell(room::JOINED, name, extra);
                }
                Err(why) => {
                    let extra = RoomExtra {
                        count: if why == AccessRefusal::Full { 2 } else { 1 },
                        req: x.req,
                        ..RoomExtra::default()
                    };
                    tell(room::REFUSED, name, extra);
                }
            },
            room::LEAVE => {
                if !self.hub.room_member_leave(&s, name) {
                    c.refused("a leave of a room the member is not in");
                }
            }
            room::TEXT => {
                // No member's node sends more than a rooms client may.
                if x.text.len() > chinwag_proto::rooms::MAX_CHAT {
                    return c.refused("a text over the rooms limit");
                }
                let said = self.hub.room_member_text(&s, name, &x.text);
                if said == Err(crate::hub::Refusal::NotPending) {
                    c.refused("a text in a room its author is not in");
                    // Its node takes it for a member (this node dropped
                    // it while that node seemed dead): the room is closed
                    // for it there.
                    tell(room::CLOSED, name, RoomExtra::default());
                }
            }
            room::INVITE => {
                if self.hub.room_name_of(&s).is_some_and(|r| r == name) {
                    self.hub.room_invite(now, &s, &x.to);
                } else {
                    c.refused("an invitation from outside the room");
                }
            }
            _ => {
                let accept = x.count == 1;
                if self.hub.room_answer_at(now, &s, x.req, accept, x.at) {
                    let entered = self.hub.room_name_of(&s);
                    let peers = entered.as_deref().and_then(|r| self.hub.room_peers(r, &s));
                    if let (Some(room), Some((mode, peers))) = (entered, peers) {
                        let extra = RoomExtra {
                            mode: mode_code(mode),
                            text: peers_text(&peers),
                            ..RoomExtra::default()
                        };
                        tell(room::JOINED, &room, extra);
                    }
                }
            }
        }
    }

    /// An envelope from a room's home, about `to`, a member of this node.
    #[allow(clippy::too_many_arguments)]
    fn as_member_node(
        &mut self,
        c: &Cluster,
        op: u8,
        node: &str,
        name: &str,
        from: &str,
        to: &str,
        x: RoomExtra,
        now: Instant,
    ) {
        let user = self.hub.online(to).filter(|s| s.remote.is_none());
        let Some(s) = user.filter(|_| node != self.me) else {
            return c.refused("from a home, for no user of this node");
        };
        match op {
            room::JOINED | room::REFUSED if x.req != 0 => {
                let mut joins = c.joins.lock();
                let matches = joins
                    .get(&x.req)
                    .is_some_and(|j| j.node == node && j.room == name && j.member == to);
                if !matches {
                    drop(joins);
                    return c.refused("an answer to no join of this node");
                }
                let j = joins.remove(&x.req).expect("checked");
                drop(joins);
                let answer = if op == room::JOINED {
                    // In before the next envelope (a text of the room)
                    // is read; the waiting join then finds it so.
                    self.hub.room_remote_joined(&s, node, name, mode_of(x.mode));
                    Ok((mode_of(x.mode), parse_peers(&x.text)))
                } else if x.count == 2 {
                    Err(AccessRefusal::Full)
                } else {
                    Err(AccessRefusal::NoSuchRoom)
                };
                let _ = j.reply.try_send(answer);
            }
            room::JOINED => {
                // An invitation accepted there.
                self.hub.room_remote_joined(&s, node, name, mode_of(x.mode));
            }
            room::MESSAGE => {
                if !self.hub.room_remote_message(&s, node, name, from, &x.text) {
                    c.refused("a text of a room its recipient is not in");
                    // The home thinks it a member (this node closed the
                    // room for it while the home seemed dead): not so.
                    c.room_env(node, room::LEAVE, node, name, to, "", RoomExtra::default());
                }
            }
            room::CLOSED => {
                if !self.hub.room_remote_closed(&s, node, name) {
                    c.refused("the closing of a room its member is not in");
                }
            }
            room::INVITE => {
                let mode = mode_of(x.mode);
                let told = crate::hub::rooms::valid_room_name(name)
                    && self
                        .hub
                        .room_remote_invitation(now, &s, node, name, mode, from, x.req);
                if !told {
                    c.refused("an invitation for no rooms user");
                }
            }
            _ => c.refused("a refusal of no join"),
        }
    }

    /// Whether the test hook holds back changes of the `names` bucket.
    fn holding(&self) -> bool {
        self.held.len() < HELD_MAX
            && self
                .cluster
                .upgrade()
                .is_some_and(|c| c.hold.load(Ordering::SeqCst))
    }

    /// Apply the changes the test hook held back, once it lets go.
    fn release_held(&mut self) {
        if !self.held.is_empty() && !self.holding() {
            for ev in std::mem::take(&mut self.held) {
                self.handle(ev);
            }
        }
    }

    fn handle(&mut self, ev: BusEvent) {
        if matches!(ev, BusEvent::Put { .. } | BusEvent::Delete { .. }) {
            if self.holding() {
                self.held.push(ev);
                return;
            }
            self.release_held();
        }
        match ev {
            BusEvent::Up => {
                if std::mem::take(&mut self.was_down) {
                    log::warn!("cluster: the bus is back; reconciling this node's names");
                    // Every node gets a full node_timeout to be heard again.
                    let now = Instant::now();
                    for n in self.nodes.values_mut() {
                        n.last = now;
                    }
                    self.reconcile();
                    // Pokes sent while it was away were lost: every local
                    // user's stored items are checked again from now.
                    self.mail.restart();
                }
            }
            BusEvent::Down => {
                log::warn!("cluster: lost the bus; new logins are refused until it is back");
                self.was_down = true;
            }
            BusEvent::Put {
                key,
                revision,
                value,
            } => self.put(key, revision, &value),
            BusEvent::Delete { key } => self.delete(&key),
            BusEvent::Reasserted { name, keys } => self.reasserted(name, keys),
            BusEvent::Message { subject, payload } => match Envelope::decode(&payload) {
                Ok(env) => self.message(&subject, env),
                Err(e) => {
                    self.hub.metrics().dropped(DropReason::BusRefused);
                    log::warn!("cluster: undecodable bus message on {subject}: {e:?}")
                }
            },
        }
    }

    fn put(&mut self, key: String, revision: u64, value: &[u8]) {
        let Ok(Envelope::Claim {
            node,
            epoch,
            dialect,
            name,
        }) = Envelope::decode(value)
        else {
            log::warn!("cluster: a names key holds no claim");
            return;
        };
        if node == self.me {
            if epoch != self.epoch && self.stale.len() < 100_000 {
                // Left by this node's earlier life (killed): freed by `tick`.
                self.stale.push((key, revision));
            }
            return;
        }
        if is_room_key(&key) {
            // A room name claimed by its home: freed with a dead node's names.
            if self.room_keys.len() < ROOM_KEYS_KEPT || self.room_keys.contains_key(&key) {
                self.room_keys.insert(key, (node, revision));
            }
            return;
        }
        if let Some(old) = self.keys.remove(&key) {
            self.forget_key(&old);
        }
        let seen = self.nodes.entry(node.clone()).or_insert(NodeSeen {
            last: Instant::now(),
            dead: false,
        });
        // A new claim is a sign of life.
        seen.last = Instant::now();
        seen.dead = false;
        self.keys.insert(
            key,
            Held {
                node: node.clone(),
                name: name.clone(),
                revision,
            },
        );
        let r = self.users.entry(name.clone()).or_insert(Remote {
            node,
            dialect: dialect_of(dialect),
            keys: 0,
            session: None,
        });
        r.keys += 1;
        self.show(&name);
    }

    /// Give `name`'s stand-in to the hub if its node is alive.
    fn show(&mut self, name: &str) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let Some(r) = self.users.get_mut(name) else {
            return;
        };
        if r.session.is_some() || self.nodes.get(&r.node).is_some_and(|n| n.dead) {
            return;
        }
        let peer = Arc::new(RemotePeer {
            out: c.out.clone(),
            subject: bus::subject_node(&c.cfg.cluster, &r.node),
            name: name.to_owned(),
            me: c.cfg.node.clone(),
            taken: c.taken.clone(),
        });
        match self.hub.login_remote(name, r.dialect, &r.node, peer) {
            Ok(s) => r.session = Some(s),
            Err(e) => {
                // Tried again every tick until it works or the name goes.
                log::debug!("cluster: {name}@{} not shown here yet: {e:?}", r.node);
                if self.unshown.len() < 10_000 {
                    self.unshown.push(name.to_owned());
                }
            }
        }
    }

    fn delete(&mut self, key: &str) {
        self.room_keys.remove(key);
        if let Some(old) = self.keys.remove(key) {
            self.forget_key(&old);
        }
    }

    fn forget_key(&mut self, held: &Held) {
        let Some(r) = self.users.get_mut(&held.name) else {
            return;
        };
        r.keys = r.keys.saturating_sub(1);
        if r.keys == 0 {
            let r = self.users.remove(&held.name).expect("present");
            if let Some(s) = r.session {
                self.hub.logout(&s);
            }
        }
    }

    fn message(&mut self, subject: &str, env: Envelope) {
        match env {
            Envelope::Heartbeat {
                node,
                epoch,
                index,
                addr,
            } => {
                if node == self.me {
                    if epoch < self.epoch {
                        // An older process runs under this name: it keeps
                        // it, this one stops.
                        self.clash = Some(format!(
                            "another chinwagd runs as node_name {node:?} in this cluster"
                        ));
                        self.stale.clear();
                    }
                    return;
                }
                self.peer_seen(&node, index, &addr);
                let seen = self.nodes.entry(node.clone()).or_insert(NodeSeen {
                    last: Instant::now(),
                    dead: false,
                });
                seen.last = Instant::now();
                if std::mem::replace(&mut seen.dead, false) {
                    log::warn!("cluster: node {node} is back");
                    let back: Vec<String> = self
                        .users
                        .iter()
                        .filter(|(_, r)| r.node == node)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for name in back {
                        self.show(&name);
                    }
                }
            }
            Envelope::Public { node, from, text } => {
                if node != self.me {
                    self.hub.public_remote(&from, &text);
                }
            }
            Envelope::Private { from, to, text } => match self.hub.online(&to) {
                Some(s) if s.remote.is_none() => {
                    s.peer.deliver(&Event::PrivateMessage {
                        from: &from,
                        to: &to,
                        text: &text,
                    });
                }
                _ => log::debug!("cluster: a private text for {to}, who left"),
            },
            Envelope::Poke { name } => {
                log::debug!("cluster: poke for {name} on {subject}");
                if self.accounts().is_some_and(|a| a.flush_pending(&name)) {
                    return;
                }
                // Poked as the user's node, but the user is not here: the
                // sender's view was stale (the user left this node and
                // logged in on another one it did not see yet). Pass the
                // poke on to every node, once: a poke on the global
                // subject is never passed on again. A user still logging
                // in here gets its items from its login's own flush.
                let Some(c) = self.cluster.upgrade() else {
                    return;
                };
                let local = self.hub.online(&name).is_some_and(|s| s.remote.is_none());
                if !local && subject == bus::subject_node(&c.cfg.cluster, &self.me) {
                    log::debug!("cluster: {name} is not here; poke passed on to every node");
                    c.poke(None, &name);
                }
            }
            Envelope::Account {
                node,
                pseudo,
                registered,
            } => {
                if node != self.me {
                    if let Some(a) = self.accounts() {
                        a.note_account(&pseudo, registered);
                    }
                }
            }
            Envelope::Ban {
                node,
                kind,
                value,
                added,
            } => {
                if node != self.me {
                    match crate::hub::bans::Ban::from_columns(&kind, &value) {
                        Some(ban) => {
                            log::info!("cluster: {kind} ban {value:?} from node {node}");
                            self.hub.apply_remote_ban(ban, added);
                        }
                        None => log::warn!("cluster: a ban this node cannot read"),
                    }
                }
            }
            Envelope::Call {
                op,
                from,
                to,
                host,
                port,
            } => self.call(op, &from, &to, host, port),
            Envelope::PrivateConn {
                op,
                requester,
                target,
                connect_id,
                ip,
            } => self.private_conn(op, &requester, &target, connect_id, &ip),
            Envelope::Kick { name } => {
                if self.hub.online(&name).is_some_and(|s| s.remote.is_none()) {
                    log::info!("cluster: {name} kicked through another node");
                    self.hub.kick(&name);
                }
            }
            Envelope::Claim { .. } => {
                log::warn!("cluster: a claim sent as a message on {subject}")
            }
            Envelope::Room {
                op,
                node,
                room,
                from,
                to,
                mode,
                count,
                req,
                host,
                port,
                text,
            } => {
                let at = endpoint_of(&host, port);
                let extra = RoomExtra {
                    mode,
                    count,
                    req,
                    at,
                    text,
                    to: String::new(),
                };
                self.room(op, &node, &room, &from, &to, extra)
            }
        }
    }

    /// What a heartbeat says of node `node`'s proxy listener.
    fn peer_seen(&mut self, node: &str, index: u8, addr: &str) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let addr = addr.parse::<SocketAddr>().ok();
        let known = c.peers.read().get(node).map(|p| (p.index, p.addr));
        if known == Some((index, addr)) {
            return;
        }
        if index == c.cfg.index {
            log::warn!("cluster: node {node} has this node's node_index {index}: chatos private connections between them fail");
        }
        let mut peers = c.peers.write();
        if peers.len() < 256 || peers.contains_key(node) {
            peers.insert(node.to_owned(), PeerNode { index, addr });
        }
    }

    /// A chatos private connection's signalling between a user of another
    /// node and one of this node (`proto::bus::private`).
    fn private_conn(&mut self, op: u8, requester: &str, target: &str, id: i64, ip: &str) {
        let local = |name: &str| self.hub.online(name).filter(|s| s.remote.is_none());
        let remote = |name: &str| self.hub.online(name).filter(|s| s.remote.is_some());
        let now = Instant::now();
        match op {
            private::REQUEST => {
                let (Some(from), Ok(ip)) = (remote(requester), ip.parse::<IpAddr>()) else {
                    return;
                };
                if let Err(why) = self.hub.request_private_remote(now, &from, target, ip) {
                    log::debug!("cluster: {requester}'s private request to {target}: {why:?}");
                }
            }
            private::REFUSED => {
                if let (Some(r), Some(_)) = (local(requester), remote(target)) {
                    r.peer.deliver(&Event::PrivateRefused { requester, target });
                }
            }
            private::ID => {
                if let (Some(r), Some(_)) = (local(requester), remote(target)) {
                    r.peer.deliver(&Event::PrivateId {
                        requester,
                        target,
                        connect_id: id,
                    });
                }
            }
            private::CLOSED => {
                // The issuing node closed it: so does its proxy here.
                self.hub.proxy_shut(id);
                if let (Some(t), Some(_)) = (local(target), remote(requester)) {
                    t.peer.deliver(&Event::PrivateClosed {
                        connect_id: id,
                        peer: requester,
                    });
                }
            }
            _ => {
                let Some(from) = remote(requester) else {
                    return;
                };
                match self.hub.close_private(&from, id, requester, target) {
                    Ok(outcome) => {
                        for s in outcome.sockets {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                    }
                    Err(why) => log::debug!("cluster: {requester}'s close of {id:#x}: {why:?}"),
                }
            }
        }
    }

    /// A call event from `from`, a user of another node, for `to`, a user
    /// of this one: this node's half of the call follows it, as if the
    /// stand-in of `from` had acted here, and tells `to`.
    fn call(&mut self, op: u8, from: &str, to: &str, host: String, port: u16) {
        if op == call::TAKEN_ACK {
            // `from`, the callee over there, has its half answered.
            if let Some(c) = self.cluster.upgrade() {
                c.taken.lock().done(to, from);
            }
            return;
        }
        let (Some(remote), Some(local)) = (
            self.hub.online(from).filter(|s| s.remote.is_some()),
            self.hub.online(to).filter(|s| s.remote.is_none()),
        ) else {
            log::debug!("cluster: a call event between {from} and {to}, one of whom left");
            return;
        };
        if op == call::AT {
            if let Ok(ip) = host.parse() {
                self.hub.remote_callee_at(&remote, to, ip);
            }
            return;
        }
        if op == call::TAKEN {
            // Idempotent: a repeat finds the half answered already (or
            // gone) and changes nothing; each is acknowledged.
            self.hub.remote_call_taken(&remote, to);
            self.taken_ack(&remote, &local);
            return;
        }
        let media = match (remote.dialect, port) {
            (Dialect::Babel, 0) => Media::BabelConnect,
            (Dialect::Babel, _) => Media::BabelListen { host, port },
            _ => Media::Udp { addr: host, port },
        };
        let now = Instant::now();
        match op {
            call::OFFER => {
                let relayed = self
                    .hub
                    .relay_mode()
                    .transport(remote.dialect, local.dialect)
                    == Some(Transport::Relayed);
                if relayed && local.dialect == Dialect::Babel && port != 0 {
                    // A babel callee answers by connecting to where the
                    // offer says: the caller's node's relay, which must
                    // know its address first (sent before the offer
                    // reaches it).
                    self.callee_at(&remote, &local);
                }
                if let Err(why) = self.hub.offer_call(now, &remote, to, media) {
                    log::debug!("cluster: {from}'s call to {to} refused here: {why:?}");
                    // The caller's node hears a refusal.
                    remote.peer.deliver(&Event::CallRefused { by: to });
                }
            }
            call::ANSWERED => {
                let _ = self.hub.answer_call(now, &remote, to, Some(media));
            }
            call::REFUSED => {
                let _ = self.hub.answer_call(now, &remote, to, None);
            }
            _ => {
                self.hub.hang_up(&remote, to);
            }
        }
    }

    /// Tell `caller`'s node that `callee`, a local user, got the `taken` of
    /// its call.
    fn taken_ack(&self, caller: &Session, callee: &Session) {
        self.to_callers_node(call::TAKEN_ACK, caller, callee, String::new());
    }

    /// Tell `caller`'s node where `callee`, a local babel user, connects from.
    fn callee_at(&self, caller: &Session, callee: &Session) {
        self.to_callers_node(call::AT, caller, callee, callee.ip.to_string());
    }

    /// A `Call` envelope of `op` from `callee`, a local user, to `caller`'s
    /// node, with `host` and no port.
    fn to_callers_node(&self, op: u8, caller: &Session, callee: &Session, host: String) {
        let (Some(c), Some(node)) = (self.cluster.upgrade(), caller.remote.as_deref()) else {
            return;
        };
        c.out.publish(
            bus::subject_node(&c.cfg.cluster, node),
            &Envelope::Call {
                op,
                from: callee.name.clone(),
                to: caller.name.clone(),
                host,
                port: 0,
            },
        );
    }

    fn accounts(&self) -> Option<Arc<Accounts>> {
        self.cluster
            .upgrade()
            .and_then(|c| c.accounts.read().clone())
            .and_then(|w| w.upgrade())
    }

    /// Nodes silent past `node_timeout` are dead here: their users leave
    /// this node's presence now. The live node with the smallest name also
    /// frees their names in the bucket.
    fn find_dead(&mut self, now: Instant, node_timeout: Duration) {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead && now.duration_since(n.last) > node_timeout)
            .map(|(name, _)| name.clone())
            .collect();
        if dead.is_empty() {
            return;
        }
        for node in &dead {
            log::warn!("cluster: node {node} is silent: its users leave");
            self.nodes.get_mut(node).expect("present").dead = true;
            let gone: Vec<Arc<Session>> = self
                .users
                .values_mut()
                .filter(|r| &r.node == node)
                .filter_map(|r| r.session.take())
                .collect();
            for s in gone {
                self.hub.logout(&s);
            }
            // Its rooms are gone: closed for their members here.
            if let Some(c) = self.cluster.upgrade() {
                c.rooms.lock().retain(|_, l| &l.node != node);
            }
            self.hub.rooms_home_gone(node);
        }
        let smallest_live = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(name, _)| name.as_str())
            .chain([self.me.as_str()])
            .min()
            .map(str::to_owned);
        if smallest_live.as_deref() != Some(self.me.as_str()) {
            return;
        }
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        for node in dead {
            let keys: Vec<(String, u64)> = self
                .keys
                .iter()
                .filter(|(_, h)| h.node == node)
                .map(|(k, h)| (k.clone(), h.revision))
                .chain(
                    self.room_keys
                        .iter()
                        .filter(|(_, (n, _))| *n == node)
                        .map(|(k, (_, rev))| (k.clone(), *rev)),
                )
                .collect();
            if !keys.is_empty() {
                log::warn!("cluster: freeing {} names of node {node}", keys.len());
                c.out.force(BusCmd::Release { keys });
            }
        }
    }

    /// After an outage: every local session must still hold its name (the
    /// others may have found this node dead and freed them). The bus
    /// thread checks each claim and claims a freed key again; a name
    /// another node took meanwhile goes to that newer login (below).
    fn reconcile(&mut self) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let held: Vec<(String, Vec<(String, u64)>)> = c
            .claims
            .lock()
            .iter()
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        for (name, keys) in held {
            let Some(s) = self.hub.online(&name).filter(|s| s.remote.is_none()) else {
                continue;
            };
            let value = c.claim_value(&name, s.dialect);
            c.out.force(BusCmd::Reassert { name, keys, value });
        }
        // This node's rooms' names too (others may have freed them).
        let rooms: Vec<(String, (String, u64))> = c
            .room_claims
            .lock()
            .iter()
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        for (room, key) in rooms {
            let value = c.claim_value(&room, Dialect::Rooms);
            c.out.force(BusCmd::Reassert {
                name: format!("{ROOM_REASSERT}{room}"),
                keys: vec![key],
                value,
            });
        }
    }

    /// The answer to the re-assertion of room `room`'s claim after an
    /// outage: held still (or again), or taken by another node meanwhile
    /// (a room of that name was created there: two homes, of which other
    /// nodes list the first they heard; this one keeps its members).
    fn room_reasserted(&mut self, room: &str, keys: Option<Vec<(String, u64)>>) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let mut claims = c.room_claims.lock();
        match keys.and_then(|mut k| k.pop()) {
            Some(key) if claims.contains_key(room) => {
                claims.insert(room.to_owned(), key);
            }
            Some(key) => {
                // Closed meanwhile: give back what was claimed again.
                drop(claims);
                c.out.force(BusCmd::Release { keys: vec![key] });
            }
            None => {
                claims.remove(room);
                log::warn!("cluster: room {room:?} was created on another node during the outage");
            }
        }
    }

    fn reasserted(&mut self, name: String, keys: Option<Vec<(String, u64)>>) {
        if let Some(room) = name.strip_prefix(ROOM_REASSERT) {
            return self.room_reasserted(room, keys);
        }
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let mut claims = c.claims.lock();
        if !claims.contains_key(&name) {
            // The session ended meanwhile; its release went out with the
            // old revisions: give back what was claimed again.
            drop(claims);
            if let Some(keys) = keys {
                c.out.force(BusCmd::Release { keys });
            }
            return;
        }
        match keys {
            Some(keys) => {
                claims.insert(name, keys);
            }
            None => {
                claims.remove(&name);
                drop(claims);
                log::warn!("cluster: {name} was claimed by another node during the outage");
                self.hub.kick(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests;
