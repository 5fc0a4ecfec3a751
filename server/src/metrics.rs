//! Counters for operators, and the HTTP endpoint that serves them in the
//! Prometheus (OpenMetrics) text format with a `/health` check beside it.
//! Hot paths only touch pre-made atomic counters (one `fetch_add`, no lock,
//! no label lookup); what is cheaper to read than to count (who is online,
//! queue depths) is read when a scrape arrives. The endpoint is off unless
//! `metrics_addr` is set, and never holds a lock while it does socket I/O.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::front::accounts::service::Accounts;
use crate::hub::{Dialect, Hub, LoginError};
use crate::net::SmallListener;
use crate::store::Store;

/// Every dialect, in the order the per-dialect arrays use.
pub const DIALECTS: [Dialect; 4] = [
    Dialect::Chatos,
    Dialect::Babel,
    Dialect::Accounts,
    Dialect::Rooms,
];

/// A dialect's place in `DIALECTS` (and in every per-dialect array).
pub fn dialect_index(d: Dialect) -> usize {
    match d {
        Dialect::Chatos => 0,
        Dialect::Babel => 1,
        Dialect::Accounts => 2,
        Dialect::Rooms => 3,
    }
}

/// Why a connection (or, for rooms, a datagram) was dropped by the server.
/// The order is that of `DROP_REASONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its outbound queue passed `outbound_limit`.
    SlowReader,
    /// A write failed or stalled past `write_timeout_ms`.
    WriteFailed,
    /// Bytes that do not decode, or a frame out of place.
    Protocol,
    /// No login within `login_timeout_ms`.
    LoginTimeout,
    /// `max_connections` reached at accept.
    ConnectionLimit,
    /// From a banned address, closed at accept.
    Banned,
    /// Closed by an operator (kick, ban, account deletion).
    Kicked,
    /// A rooms client silent past `rooms_idle_timeout_ms`.
    RoomsIdle,
    /// A rooms datagram dropped because the workers were behind.
    RoomsInboxFull,
    /// A store job refused because the store queue stayed full.
    StoreBusy,
    /// A guest's private text to an offline account whose guest mailbox
    /// is full (docs/bridging.md).
    GuestMailFull,
    /// Cluster mode: a bus command or event dropped because its channel
    /// to or from the `cw-bus` thread was full.
    BusFull,
    /// Cluster mode: a login refused or an event to another node dropped
    /// because the bus was unreachable.
    BusDown,
    /// Cluster mode: a node-to-node connection whose proxy handshake was
    /// bad (wrong secret, stale, malformed) or came past the limit.
    ProxyHandshake,
    /// A thread for a connection, a media relay babel leg or a cluster
    /// proxy refused: the thread budget (`max_threads`, `vm.max_map_count`)
    /// was spent; its connection was closed (a leg's call refused or ended).
    ThreadBudget,
    /// Cluster mode: a rooms envelope from the bus that does not hold (an
    /// unknown room, a user not in it, an unknown request): refused.
    BusRefused,
}

const DROP_REASONS: [(DropReason, &str); 16] = [
    (DropReason::SlowReader, "slow_reader"),
    (DropReason::WriteFailed, "write_failed"),
    (DropReason::Protocol, "protocol"),
    (DropReason::LoginTimeout, "login_timeout"),
    (DropReason::ConnectionLimit, "connection_limit"),
    (DropReason::Banned, "banned"),
    (DropReason::Kicked, "kicked"),
    (DropReason::RoomsIdle, "rooms_idle"),
    (DropReason::RoomsInboxFull, "rooms_inbox_full"),
    (DropReason::StoreBusy, "store_busy"),
    (DropReason::GuestMailFull, "guest_mail_full"),
    (DropReason::BusFull, "bus_full"),
    (DropReason::BusDown, "bus_down"),
    (DropReason::ProxyHandshake, "proxy_handshake"),
    (DropReason::ThreadBudget, "thread_budget"),
    (DropReason::BusRefused, "bus_refused"),
];

/// Why the media relay dropped a packet (docs/bridging.md, "The media relay").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDrop {
    /// From an address that is not a party of the call (a third address,
    /// a forged source, a guessed port).
    Stray,
    /// Not one well-formed voice packet (or VoiceData) of the leg's dialect.
    Malformed,
    /// Over the call's `relay_packets_per_second`.
    Rate,
    /// Nothing to carry it to: the other side has no form for it (a
    /// receiver report towards babel), it is older than what was sent
    /// (babel has no sequence numbers), or the other side is not connected
    /// yet.
    Unbridged,
    /// The other side's socket or queue was full.
    Full,
}

const RELAY_DROPS: [(RelayDrop, &str); 5] = [
    (RelayDrop::Stray, "stray"),
    (RelayDrop::Malformed, "malformed"),
    (RelayDrop::Rate, "rate"),
    (RelayDrop::Unbridged, "unbridged"),
    (RelayDrop::Full, "full"),
];

/// A login's outcome, as counted.
const LOGIN_RESULTS: [&str; 6] = [
    "ok",
    "taken",
    "invalid",
    "reserved",
    "banned",
    "bad_password",
];

/// Which `LOGIN_RESULTS` entry an outcome is.
pub enum LoginOutcome {
    Ok,
    Refused(LoginError),
    /// accounts: unknown email or wrong password.
    BadPassword,
}

fn login_index(o: &LoginOutcome) -> usize {
    match o {
        LoginOutcome::Ok => 0,
        LoginOutcome::Refused(LoginError::Taken) => 1,
        LoginOutcome::Refused(LoginError::Invalid) => 2,
        LoginOutcome::Refused(LoginError::Reserved) => 3,
        LoginOutcome::Refused(LoginError::Banned) => 4,
        LoginOutcome::BadPassword => 5,
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// The server's counters. Cheap to share (`Arc`); each handle is an atomic
/// that the registry reads at scrape time.
pub struct Metrics {
    registry: Registry,
    connections: [Gauge; 4],
    accepted: [Counter; 4],
    logins: [[Counter; LOGIN_RESULTS.len()]; 4],
    messages: [Counter; 4],
    deliveries: Counter,
    drops: [Counter; DROP_REASONS.len()],
    relays: Counter,
    calls: [Counter; 4],
    relay_packets: Counter,
    relay_drops: [Counter; RELAY_DROPS.len()],
    relay_calls: Gauge,
    // Read at scrape time.
    online: [Gauge; 4],
    relays_active: Gauge,
    calls_active: Gauge,
    store_queue: Gauge,
    hash_queue: Gauge,
    rooms_inbox_peak: Gauge,
    bans: Gauge,
    /// The store thread's group commits, in seconds.
    pub commit_seconds: Histogram,
}

fn per_dialect<M>(registry: &mut Registry, name: &str, help: &str) -> [M; 4]
where
    M: Clone
        + Default
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
        + prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    DIALECTS.map(|d| family.get_or_create_owned(&vec![("dialect", d.name())]))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("chinwag");
        let connections = per_dialect::<Gauge>(
            &mut r,
            "connections",
            "Open TCP connections (rooms: registered UDP clients)",
        );
        let accepted = per_dialect::<Counter>(
            &mut r,
            "connections_accepted",
            "Connections accepted (rooms: registrations)",
        );
        let login_family = Family::<Labels, Counter>::default();
        r.register(
            "logins",
            "Login attempts by dialect and result",
            login_family.clone(),
        );
        let logins = DIALECTS.map(|d| {
            LOGIN_RESULTS.map(|res| {
                login_family.get_or_create_owned(&vec![("dialect", d.name()), ("result", res)])
            })
        });
        let messages = per_dialect::<Counter>(
            &mut r,
            "messages",
            "Chat messages accepted from clients (chatos global and private, accounts stored, rooms texts)",
        );
        let deliveries = Counter::default();
        r.register(
            "deliveries",
            "Messages queued to recipients (a broadcast counts once per listener)",
            deliveries.clone(),
        );
        let drop_family = Family::<Labels, Counter>::default();
        r.register(
            "drops",
            "Connections (rooms: datagrams or clients; guest_mail_full: texts) dropped by the server, by reason",
            drop_family.clone(),
        );
        let drops =
            DROP_REASONS.map(|(_, why)| drop_family.get_or_create_owned(&vec![("reason", why)]));
        let relays = Counter::default();
        r.register(
            "relays",
            "Private relays established (chatos)",
            relays.clone(),
        );
        let calls = per_dialect::<Counter>(
            &mut r,
            "calls",
            "Calls offered to an online callee (babel, accounts)",
        );
        let relay_packets = Counter::default();
        r.register(
            "relay_packets",
            "Voice packets the media relay carried to a party of their call",
            relay_packets.clone(),
        );
        let relay_family = Family::<Labels, Counter>::default();
        r.register(
            "relay_dropped",
            "Packets the media relay dropped, by reason",
            relay_family.clone(),
        );
        let relay_drops =
            RELAY_DROPS.map(|(_, why)| relay_family.get_or_create_owned(&vec![("reason", why)]));
        let relay_calls = Gauge::default();
        r.register(
            "relay_calls",
            "Calls with a media relay allocation now (ringing or answered)",
            relay_calls.clone(),
        );
        let online = per_dialect::<Gauge>(&mut r, "online_users", "Users logged in");
        let relays_active = Gauge::default();
        r.register(
            "relays_active",
            "Private relays open now",
            relays_active.clone(),
        );
        let calls_active = Gauge::default();
        r.register(
            "calls_active",
            "Calls (every dialect) answered and not yet over",
            calls_active.clone(),
        );
        let store_queue = Gauge::default();
        r.register(
            "store_queue_depth",
            "Jobs waiting for the store thread",
            store_queue.clone(),
        );
        let hash_queue = Gauge::default();
        r.register(
            "hash_queue_depth",
            "Password hashes waiting for a hashing thread",
            hash_queue.clone(),
        );
        let rooms_inbox_peak = Gauge::default();
        r.register(
            "rooms_inbox_peak_depth",
            "Most rooms datagrams waiting for a worker at once since start",
            rooms_inbox_peak.clone(),
        );
        let bans = Gauge::default();
        r.register("bans", "Bans in force (names and addresses)", bans.clone());
        // 100 µs .. ~3.3 s: an fsync on a good disk to a disk in trouble.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register(
            "store_commit_seconds",
            "Time to run and commit one group of store jobs",
            commit_seconds.clone(),
        );
        Metrics {
            registry: r,
            connections,
            accepted,
            logins,
            messages,
            deliveries,
            drops,
            relays,
            calls,
            relay_packets,
            relay_drops,
            relay_calls,
            online,
            relays_active,
            calls_active,
            store_queue,
            hash_queue,
            rooms_inbox_peak,
            bans,
            commit_seconds,
        }
    }

    pub fn connection_opened(&self, d: Dialect) {
        self.connections[dialect_index(d)].inc();
        self.accepted[dialect_index(d)].inc();
    }

    /// The rooms inbox holds `depth` datagrams now (called by its one
    /// receiving thread, the only writer of the peak).
    pub fn rooms_inbox(&self, depth: usize) {
        if depth as i64 > self.rooms_inbox_peak.get() {
            self.rooms_inbox_peak.set(depth as i64);
        }
    }

    /// A rooms client registered (it has no connection to count).
    pub fn registered(&self, d: Dialect) {
        self.accepted[dialect_index(d)].inc();
    }

    pub fn connection_closed(&self, d: Dialect) {
        self.connections[dialect_index(d)].dec();
    }

    pub fn login(&self, d: Dialect, outcome: LoginOutcome) {
        self.logins[dialect_index(d)][login_index(&outcome)].inc();
    }

    pub fn message(&self, d: Dialect) {
        self.messages[dialect_index(d)].inc();
    }

    pub fn delivered(&self, n: usize) {
        self.deliveries.inc_by(n as u64);
    }

    /// Messages accepted from `d` so far (tests).
    pub fn messages_of(&self, d: Dialect) -> u64 {
        self.messages[dialect_index(d)].get()
    }

    /// Deliveries so far (tests).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    pub fn dropped(&self, why: DropReason) {
        self.drops[why as usize].inc();
    }

    /// Connections dropped for `why` so far.
    pub fn drops(&self, why: DropReason) -> u64 {
        self.drops[why as usize].get()
    }

    pub fn relay_established(&self) {
        self.relays.inc();
    }

    pub fn call(&self, d: Dialect) {
        self.calls[dialect_index(d)].inc();
    }

    /// The media relay carried `n` packets.
    pub fn relayed(&self, n: u64) {
        self.relay_packets.inc_by(n);
    }

    pub fn relay_dropped(&self, why: RelayDrop) {
        self.relay_drops[why as usize].inc();
    }

    /// Relay allocations opened (+1) or closed (-1).
    pub fn relay_calls(&self, delta: i64) {
        self.relay_calls.inc_by(delta);
    }

    /// Packets relayed so far (tests, the benchmark).
    pub fn relay_packets(&self) -> u64 {
        self.relay_packets.get()
    }

    /// Packets the relay dropped for `why` so far.
    pub fn relay_drops(&self, why: RelayDrop) -> u64 {
        self.relay_drops[why as usize].get()
    }

    /// Relay allocations open now.
    pub fn relay_calls_open(&self) -> i64 {
        self.relay_calls.get()
    }

    /// The values read at scrape time.
    pub fn set_gauges(&self, g: &Snapshot) {
        for (i, n) in g.online.iter().enumerate() {
            self.online[i].set(*n as i64);
        }
        // A rooms "connection" is a registered client.
        self.connections[dialect_index(Dialect::Rooms)]
            .set(g.online[dialect_index(Dialect::Rooms)] as i64);
        self.relays_active.set(g.relays_active as i64);
        self.calls_active.set(g.calls_active as i64);
        self.store_queue.set(g.store_queue as i64);
        self.hash_queue.set(g.hash_queue as i64);
        self.bans.set(g.bans as i64);
    }

    /// The OpenMetrics text of every counter.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

/// What a scrape reads from the running server.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Users online per dialect, in `DIALECTS` order.
    pub online: [usize; 4],
    pub relays_active: usize,
    pub calls_active: usize,
    pub store_queue: usize,
    pub hash_queue: usize,
    pub bans: usize,
}

/// How long `/health` waits for the store thread.
const HEALTH_WAIT: Duration = Duration::from_secs(2);

/// The endpoint's pages over a running server: `/metrics` (gauges read
/// now, then every counter) and `/health` (200 "ok" when the store thread
/// answers within 2 s, 503 otherwise).
pub fn pages(hub: Arc<Hub>, store: Store, accounts: Option<Arc<Accounts>>) -> Pages {
    Arc::new(move |path: &str| match path {
        "/metrics" => {
            let m = hub.metrics();
            m.set_gauges(&Snapshot {
                online: hub.online_per_dialect(),
                relays_active: hub.relay_count(),
                calls_active: hub.calls_answered(),
                store_queue: store.queue_len(),
                hash_queue: accounts.as_ref().map_or(0, |a| a.hash_queue()),
                bans: hub.bans().len(),
            });
            (200, OPENMETRICS, m.render())
        }
        "/health" => {
            if store.ping(HEALTH_WAIT) {
                (200, "text/plain; charset=utf-8", "ok\n".into())
            } else {
                (
                    503,
                    "text/plain; charset=utf-8",
                    "store not responding\n".into(),
                )
            }
        }
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found; try /metrics or /health\n".into(),
        ),
    })
}

/// HTTP requests served at once; more are closed at accept.
const HTTP_AT_ONCE: usize = 4;
/// Longest request head read.
const HTTP_HEAD_MAX: usize = 8 * 1024;
/// A request must arrive, and its answer leave, within this time.
const HTTP_DEADLINE: Duration = Duration::from_secs(2);
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An answer: status, content type, body.
pub type Page = (u16, &'static str, String);
type Pages = Arc<dyn Fn(&str) -> Page + Send + Sync>;

/// The HTTP listener for `/metrics` and `/health`: one accept thread and
/// at most `HTTP_AT_ONCE` short-lived request threads, each bounded in
/// size and time. Requests are parsed with `httparse`; every answer closes
/// the connection.
pub struct Endpoint {
    addr: SocketAddr,
    listener: SmallListener,
}

impl Endpoint {
    pub fn start(listener: TcpListener, pages: Pages) -> io::Result<Endpoint> {
        let addr = listener.local_addr()?;
        let listener = SmallListener::start(
            "cw-metrics",
            HTTP_AT_ONCE,
            move || listener.accept().map(|(s, _)| s),
            |_| true,
            drop, // closes the connection
            move |s| serve_http(s, &*pages),
        )?;
        log::info!("metrics on http://{addr}/metrics");
        Ok(Endpoint { addr, listener })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        let addr = self.addr;
        self.listener.stop(|| {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        });
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_http(mut stream: TcpStream, pages: &(dyn Fn(&str) -> Page + Send + Sync)) {
    let deadline = std::time::Instant::now() + HTTP_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        // A signal neither ends the request nor restarts its deadline.
        let read = chinwag_proto::eintr::retry_until(
            deadline,
            |left| stream.set_read_timeout(Some(left)),
            || (&stream).read(&mut chunk),
        );
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                )
            }
            Ok(httparse::Status::Partial) if head.len() < HTTP_HEAD_MAX => continue,
            _ => {
                respond(
                    &mut stream,
                    (400, "text/plain", "bad request\n".into()),
                    true,
                );
                return;
            }
        }
    };
    let page = if method == "GET" || method == "HEAD" {
        // A query string (Prometheus sends none, curl users might) is ignored.
        pages(path.split('?').next().unwrap_or(""))
    } else {
        (405, "text/plain", "only GET\n".into())
    };
    let _ = stream.set_write_timeout(Some(HTTP_DEADLINE));
    respond(&mut stream, page, method != "HEAD");
}

fn respond(stream: &mut TcpStream, (code, ctype, body): Page, with_body: bool) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&out);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_are_listed_in_order() {
        for (i, (why, _)) in DROP_REASONS.iter().enumerate() {
            assert_eq!(*why as usize, i);
        }
    }

    #[test]
    fn counters_render_with_their_labels() {
        let m = Metrics::new();
        m.login(Dialect::Babel, LoginOutcome::Refused(LoginError::Banned));
        m.dropped(DropReason::Kicked);
        m.connection_opened(Dialect::Chatos);
        let text = m.render();
        assert!(text.contains("chinwag_logins_total{dialect=\"babel\",result=\"banned\"} 1"));
        assert!(text.contains("chinwag_drops_total{reason=\"kicked\"} 1"));
        assert!(text.contains("chinwag_connections{dialect=\"chatos\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
