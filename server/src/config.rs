//! Start-up settings: defaults, an optional TOML file, and command-line flags
//! on top. Owns no runtime state; everything here is read once at start.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use chinwag_proto::rooms::reliable;
use serde::{Deserialize, Serialize};

/// Everything an operator can set. Durations are whole milliseconds in the
/// file and on the command line. `dist/chinwagd.toml` lists every key with
/// its default (a test keeps the two equal).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every listener binds to.
    pub bind: IpAddr,
    /// TCP port of the chatos dialect (0 picks a free port).
    pub chatos_port: u16,
    /// TCP port of the babel dialect (0 picks a free port).
    pub babel_port: u16,
    /// TCP port of the accounts dialect (0 picks a free port).
    pub accounts_port: u16,
    /// UDP port of the rooms dialect (0 picks a free port).
    pub rooms_port: u16,
    /// A rooms client silent for this long (no keep-alive) is dropped.
    pub rooms_idle_timeout_ms: u64,
    /// Rooms T: milliseconds between two sends of a message the server
    /// starts (seed 003: 100).
    pub rooms_retry_ms: u64,
    /// Rooms M: sends of such a message in all before the server gives up.
    pub rooms_tries: u32,
    /// Rooms clients registered at once from one IPv4 address (or IPv6 /64).
    pub rooms_max_per_ip: usize,
    /// Rooms registrations one address may attempt per minute.
    pub rooms_registrations_per_minute: u32,
    /// Requests one rooms client may make per second (bursts of twice that).
    pub rooms_requests_per_second: u32,
    /// Threads applying rooms datagrams (they share one state lock; more
    /// than the cores rarely helps, see the README's rooms benchmark).
    pub rooms_workers: usize,
    /// SQLite database file (":memory:" keeps nothing); used when
    /// `store_url` is empty.
    pub db_path: PathBuf,
    /// Empty: the store is the SQLite file `db_path` (the embedded default).
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?...]`: the store is that
    /// PostgreSQL database (docs/operations.md, "PostgreSQL"); `sslmode`
    /// and `sslrootcert` as libpq reads them.
    pub store_url: String,
    /// File (mode 0600) holding the PostgreSQL password, so that
    /// `store_url` need not (not with a password in `store_url`).
    pub store_password_file: String,
    /// Empty: one node, no cluster (the default). `nats://HOST:PORT`
    /// (several, comma-separated): cluster mode over that NATS bus
    /// (docs/scaling.md, docs/operations.md "A cluster"); needs `store_url`
    /// and `node_name`.
    pub bus_url: String,
    /// This node's name in the cluster, unique per node: letters, digits,
    /// '-' and '_', at most 64.
    pub node_name: String,
    /// The cluster's name: the prefix of its bus subjects and buckets, so
    /// several clusters can share one bus.
    pub cluster_name: String,
    /// A node silent on the bus this long is dead to the others (its users
    /// leave their presence); at least 2,000 (heartbeats go every second).
    pub node_timeout_ms: u64,
    /// A name claim the bus has not answered by then refuses the login.
    pub bus_timeout_ms: u64,
    /// 0-255, unique per node: the top byte of the chatos connect ids this
    /// node issues (cluster mode).
    pub node_index: u8,
    /// `HOST:PORT` of the node-to-node listener that takes chatos private
    /// connections proxied from other nodes (port 0 picks a free port).
    /// Empty: chatos private connections do not cross to or from this node.
    pub cluster_addr: String,
    /// File (mode 0600) holding the cluster's shared secret for the proxy
    /// handshake, at least 16 bytes; required with `cluster_addr`.
    pub cluster_secret_file: String,
    /// File (mode 0600) holding the bus's token (nats-server's
    /// `authorization { token }`). Not with `bus_user`.
    pub bus_token_file: String,
    /// The user this node logs in to the bus as; its password is in
    /// `bus_password_file`.
    pub bus_user: String,
    /// File (mode 0600) holding `bus_user`'s password.
    pub bus_password_file: String,
    /// File (mode 0600) holding this node's nkey seed (`SU...`), for a bus
    /// whose users are nkeys (nats-server's `users = [{ nkey: "U..." }]`).
    pub bus_nkey_seed_file: String,
    /// TLS to the bus (also implied by `tls://` in `bus_url`); a bus that
    /// asks for TLS gets it either way.
    pub bus_tls: bool,
    /// PEM file of the CA(s) the bus's certificate must chain to. Empty:
    /// the system's CA store.
    pub bus_tls_ca_file: String,
    /// PEM certificate this node shows the bus (mutual TLS); with
    /// `bus_tls_key_file`.
    pub bus_tls_cert_file: String,
    /// PEM private key (mode 0600) of `bus_tls_cert_file`.
    pub bus_tls_key_file: String,
    /// Connections open at once, all dialects together; more are closed at accept.
    pub max_connections: usize,
    /// A connection that has not identified by then is closed.
    pub login_timeout_ms: u64,
    /// Bytes queued towards one peer before it is dropped as a slow reader.
    pub outbound_limit: usize,
    /// A write to a peer that makes no progress for this long drops the peer.
    pub write_timeout_ms: u64,
    /// Kernel send buffer asked for each accepted socket (SO_SNDBUF; Linux
    /// doubles it for its own bookkeeping). Counted in `outbound_limit`:
    /// the queue holds what the kernel buffer does not.
    pub send_buffer: usize,
    /// Lifetime of an unused private-connection id.
    pub connect_id_ttl_ms: u64,
    /// Private relays established at once.
    pub max_relays: usize,
    /// Private-connection requests pending per user.
    pub max_pending_requests: usize,
    /// Accounts one IP address may register per minute.
    pub registrations_per_minute: u32,
    /// Threads sending queued output for all connections (one per core is plenty).
    pub flush_threads: usize,
    /// Connection threads kept started and parked, ready for new
    /// connections (each costs two stack pages and a kernel stack); a
    /// thread whose connection ended waits here for the next one. At most
    /// `max_connections` are kept.
    pub spare_threads: usize,
    /// Threads started per connection or call leg (connection threads,
    /// backlog writers, the media relay's babel legs, cluster proxies) alive
    /// at once; past it one is refused (its connection closed, counted).
    /// 0: as many as `vm.max_map_count` leaves room for (and never more).
    pub max_threads: usize,
    /// Unix socket for `chinwagctl` (created mode 0600). Empty: next to the
    /// database, `<db_path>.sock` (none for ":memory:"); "off": no socket.
    pub admin_socket: PathBuf,
    /// `host:port` of the Prometheus endpoint (`/metrics`, `/health`).
    /// Empty: off. Meant for 127.0.0.1; port 0 picks a free port.
    pub metrics_addr: String,
    /// Which calls go through the server's media relay: "all" (no party
    /// learns another's address), "cross" (calls between dialects) or
    /// "off" (calls between dialects are refused). docs/bridging.md.
    pub call_relay: String,
    /// Calls with a relay allocation at once (ringing or answered).
    pub relay_max_calls: usize,
    /// Packets one relayed call may carry per second, both directions
    /// together; more are dropped.
    pub relay_packets_per_second: u32,
    /// An answered relayed call that carries no packet this long is ended.
    pub relay_idle_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            chatos_port: 7001,
            babel_port: 7002,
            accounts_port: 7003,
            rooms_port: 7004,
            rooms_idle_timeout_ms: 100_000,
            rooms_retry_ms: reliable::RETRY_EVERY.as_millis() as u64,
            rooms_tries: reliable::TRIES,
            rooms_max_per_ip: 16,
            rooms_registrations_per_minute: 20,
            rooms_requests_per_second: 50,
            rooms_workers: 2,
            db_path: PathBuf::from("chinwag.db"),
            store_url: String::new(),
            store_password_file: String::new(),
            bus_url: String::new(),
            node_name: String::new(),
            cluster_name: "chinwag".into(),
            node_timeout_ms: 5_000,
            bus_timeout_ms: 2_000,
            node_index: 0,
            cluster_addr: String::new(),
            cluster_secret_file: String::new(),
            bus_token_file: String::new(),
            bus_user: String::new(),
            bus_password_file: String::new(),
            bus_nkey_seed_file: String::new(),
            bus_tls: false,
            bus_tls_ca_file: String::new(),
            bus_tls_cert_file: String::new(),
            bus_tls_key_file: String::new(),
            max_connections: 20_000,
            login_timeout_ms: 10_000,
            outbound_limit: 1 << 20,
            write_timeout_ms: 2_000,
            send_buffer: 8 * 1024,
            connect_id_ttl_ms: 60_000,
            max_relays: 1_000,
            max_pending_requests: 16,
            flush_threads: 2,
            spare_threads: 256,
            max_threads: 0,
            registrations_per_minute: 20,
            admin_socket: PathBuf::new(),
            metrics_addr: String::new(),
            call_relay: "cross".into(),
            relay_max_calls: 1_000,
            // 50 media packets a second each way, a report a second each
            // way, and room for bursts after a stall.
            relay_packets_per_second: 300,
            relay_idle_timeout_ms: 30_000,
        }
    }
}

impl Config {
    /// A configuration for tests: every port 0 (the OS picks), in-memory store.
    pub fn ephemeral() -> Self {
        Config {
            chatos_port: 0,
            babel_port: 0,
            accounts_port: 0,
            rooms_port: 0,
            db_path: PathBuf::from(":memory:"),
            // Every test client comes from 127.0.0.1.
            registrations_per_minute: 10_000,
            rooms_max_per_ip: 254,
            rooms_registrations_per_minute: 10_000,
            // Tests start many servers in one process: a few spares each.
            spare_threads: 4,
            ..Config::default()
        }
    }
    pub fn login_timeout(&self) -> Duration {
        Duration::from_millis(self.login_timeout_ms)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    pub fn connect_id_ttl(&self) -> Duration {
        Duration::from_millis(self.connect_id_ttl_ms)
    }
    /// `call_relay` parsed (validated at start; "cross" if unreadable).
    pub fn relay_mode(&self) -> crate::hub::RelayMode {
        crate::hub::RelayMode::parse(&self.call_relay).unwrap_or_default()
    }
    /// The media relay's settings.
    pub fn relay(&self) -> crate::media::Settings {
        crate::media::Settings {
            bind: self.bind,
            max_calls: self.relay_max_calls,
            packets_per_second: self.relay_packets_per_second,
            idle_timeout: Duration::from_millis(self.relay_idle_timeout_ms),
            ring_timeout: crate::hub::RING_TTL,
        }
    }
    /// The rooms front-end's settings.
    pub fn rooms(&self) -> crate::front::rooms::Settings {
        crate::front::rooms::Settings {
            idle_timeout: Duration::from_millis(self.rooms_idle_timeout_ms),
            link: reliable::Config {
                retry_every: Duration::from_millis(self.rooms_retry_ms.max(1)),
                tries: self.rooms_tries.max(1),
                ..reliable::Config::default()
            },
            max_per_ip: self.rooms_max_per_ip,
            registrations_per_minute: self.rooms_registrations_per_minute,
            requests_per_second: self.rooms_requests_per_second,
        }
    }
    /// Parse a TOML configuration file's text. A refusal is one line that
    /// names the line of the file and its key (toml's own text is several
    /// lines with a drawing of the place, and lists all 60 keys for a
    /// misspelt one), as every other start-up error is.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| toml_error_line(text, &e))
    }

    /// Where the admin socket goes, if anywhere (see `admin_socket`).
    pub fn admin_socket_path(&self) -> Option<PathBuf> {
        if self.admin_socket.as_os_str() == "off" {
            return None;
        }
        if !self.admin_socket.as_os_str().is_empty() {
            return Some(self.admin_socket.clone());
        }
        if self.db_path.as_os_str() == ":memory:" {
            return None;
        }
        let mut p = self.db_path.clone().into_os_string();
        p.push(".sock");
        Some(PathBuf::from(p))
    }

    /// The keys whose values differ between two configurations.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        let table = |c: &Config| match toml::Value::try_from(c) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::map::Map::new(),
        };
        let (a, b) = (table(self), table(other));
        let mut keys: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Refuse settings that cannot work: a zero limit, or one so large it
    /// is surely a typo. The message names the key and its bounds.
    pub fn validate(&self) -> Result<(), String> {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let ranges: [(&str, u64, u64, u64); 22] = [
            ("max_connections", self.max_connections as u64, 1, 1_000_000),
            ("login_timeout_ms", self.login_timeout_ms, 1, DAY_MS),
            (
                "outbound_limit",
                self.outbound_limit as u64,
                MIN_OUTBOUND,
                1 << 30,
            ),
            ("write_timeout_ms", self.write_timeout_ms, 1, DAY_MS),
            (
                "send_buffer",
                self.send_buffer as u64,
                MIN_SEND_BUFFER,
                (self.outbound_limit as u64 / 4).max(MIN_SEND_BUFFER),
            ),
            ("connect_id_ttl_ms", self.connect_id_ttl_ms, 1, DAY_MS),
            ("max_relays", self.max_relays as u64, 1, 1_000_000),
            (
                "max_pending_requests",
                self.max_pending_requests as u64,
                1,
                10_000,
            ),
            (
                "registrations_per_minute",
                self.registrations_per_minute as u64,
                1,
                1_000_000,
            ),
            ("flush_threads", self.flush_threads as u64, 1, 256),
            ("spare_threads", self.spare_threads as u64, 0, 100_000),
            ("max_threads", self.max_threads as u64, 0, 10_000_000),
            (
                "rooms_idle_timeout_ms",
                self.rooms_idle_timeout_ms,
                1,
                DAY_MS,
            ),
            ("rooms_retry_ms", self.rooms_retry_ms, 1, 60_000),
            ("rooms_tries", self.rooms_tries as u64, 1, 1_000),
            ("rooms_max_per_ip", self.rooms_max_per_ip as u64, 1, 254),
            (
                "rooms_registrations_per_minute",
                self.rooms_registrations_per_minute as u64,
                1,
                1_000_000,
            ),
            (
                "rooms_requests_per_second",
                self.rooms_requests_per_second as u64,
                1,
                1_000_000,
            ),
            ("rooms_workers", self.rooms_workers as u64, 1, 64),
            ("relay_max_calls", self.relay_max_calls as u64, 1, 100_000),
            (
                "relay_packets_per_second",
                self.relay_packets_per_second as u64,
                1,
                100_000,
            ),
            (
                "relay_idle_timeout_ms",
                self.relay_idle_timeout_ms,
                1,
                DAY_MS,
            ),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                return Err(format!(
                    "{key} = {value} is out of range: it must be between {min} and {max}"
                ));
            }
        }
        if crate::hub::RelayMode::parse(&self.call_relay).is_none() {
            return Err(format!(
                "call_relay = {:?} must be \"all\", \"cross\" or \"off\"",
                self.call_relay
            ));
        }
        if !self.metrics_addr.is_empty()
            && self.metrics_addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "metrics_addr = {:?} is not an address such as \"127.0.0.1:9464\" (empty turns it off)",
                self.metrics_addr
            ));
        }
        if !self.store_url.is_empty() {
            // The URL's password is never echoed: the parser's message
            // names what is wrong, not the text.
            let target = crate::store::PgTarget::parse(&self.store_url)?;
            if !self.store_password_file.is_empty() && target.has_password() {
                return Err(
                    "store_url holds a password and store_password_file names another: keep one"
                        .into(),
                );
            }
        } else if !self.store_password_file.is_empty() {
            return Err("store_password_file needs a postgres:// store_url".into());
        }
        self.validate_cluster()
    }

    /// Cluster mode's keys (all ignored while `bus_url` is empty, except
    /// that their values must still be sane).
    fn validate_cluster(&self) -> Result<(), String> {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token(&self.cluster_name) {
            return Err("cluster_name must be 1-64 letters, digits, '-' or '_'".into());
        }
        if !(2_000..=600_000).contains(&self.node_timeout_ms) {
            return Err("node_timeout_ms must be within 2000..=600000".into());
        }
        if !(100..=60_000).contains(&self.bus_timeout_ms) {
            return Err("bus_timeout_ms must be within 100..=60000".into());
        }
        if !self.cluster_addr.is_empty() {
            if self.cluster_addr.parse::<std::net::SocketAddr>().is_err() {
                return Err("cluster_addr must be HOST:PORT (an IP address)".into());
            }
            if self.cluster_secret_file.is_empty() {
                return Err("cluster_addr needs cluster_secret_file".into());
            }
        }
        if self.bus_url.is_empty() {
            return Ok(());
        }
        for u in self.bus_url.split(',') {
            let u = u.trim();
            let rest = u
                .strip_prefix("nats://")
                .or_else(|| u.strip_prefix("tls://"))
                .unwrap_or("");
            if rest.is_empty() {
                return Err("bus_url must be nats://HOST:PORT or tls://HOST:PORT[,...]".into());
            }
            // The client would ignore credentials here; never echo them.
            if rest.contains('@') {
                return Err(
                    "bus_url must not hold credentials: use bus_token_file, or bus_user and \
                     bus_password_file"
                        .into(),
                );
            }
        }
        let ways = [
            &self.bus_token_file,
            &self.bus_user,
            &self.bus_nkey_seed_file,
        ];
        if ways.iter().filter(|w| !w.is_empty()).count() > 1 {
            return Err(
                "bus_token_file, bus_user and bus_nkey_seed_file exclude each other: the bus \
                 takes one"
                    .into(),
            );
        }
        if self.bus_user.is_empty() != self.bus_password_file.is_empty() {
            return Err("bus_user and bus_password_file go together".into());
        }
        if self.bus_tls_cert_file.is_empty() != self.bus_tls_key_file.is_empty() {
            return Err("bus_tls_cert_file and bus_tls_key_file go together".into());
        }
        if !token(&self.node_name) {
            return Err(
                "node_name must be 1-64 letters, digits, '-' or '_' in cluster mode".into(),
            );
        }
        if self.store_url.is_empty() {
            return Err("bus_url needs store_url: a cluster shares one PostgreSQL store".into());
        }
        Ok(())
    }

    /// Cluster mode's settings, or None for a single node.
    pub fn cluster(&self) -> Option<crate::cluster::ClusterConfig> {
        if self.bus_url.is_empty() {
            return None;
        }
        Some(crate::cluster::ClusterConfig {
            urls: self
                .bus_url
                .split(',')
                .map(|u| u.trim().to_owned())
                .collect(),
            node: self.node_name.clone(),
            cluster: self.cluster_name.clone(),
            node_timeout: Duration::from_millis(self.node_timeout_ms),
            bus_timeout: Duration::from_millis(self.bus_timeout_ms),
            index: self.node_index,
            // Filled in with the bound address at start.
            addr: String::new(),
            secret: None,
            // Read from their files at start (cluster::Access::load).
            access: Default::default(),
        })
    }

    /// Whether the bus is to be reached over TLS (`bus_tls`, or a `tls://`
    /// URL; a bus that asks for TLS gets it regardless).
    pub fn bus_wants_tls(&self) -> bool {
        self.bus_tls
            || self
                .bus_url
                .split(',')
                .any(|u| u.trim().starts_with("tls://"))
    }
}

/// Read a secret from `path` (what it holds is `what`, for the messages):
/// its bytes without trailing newlines, never empty. Every secret file
/// (`cluster_secret_file`, `bus_token_file`, `bus_password_file`,
/// `bus_nkey_seed_file`, `bus_tls_key_file`, `store_password_file`) comes
/// through here, under one rule: a file with any group or other permission
/// is refused before its contents are read, as the secret may already be
/// known. No message carries the file's contents.
pub fn read_secret_file(path: &std::path::Path, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let fail = |why: String| std::io::Error::other(format!("{}: {why}", path.display()));
    let cannot = |e: std::io::Error| fail(format!("cannot read {what}: {e}"));
    // The mode of the file opened, not of whatever the path names later.
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(cannot)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "{what} must be readable by its owner only (mode {:o}; chmod 600)",
                mode & 0o777
            )));
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(cannot)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(fail(format!("{what} is empty")));
    }
    Ok(bytes)
}

/// One line for a file toml refused: `line N: KEY: WHY`, or `line N:
/// unknown key KEY (...)` for a key that is not a setting.
fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let why = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(span) = e.span() else {
        return why;
    };
    let start = span.start.min(text.len());
    let line_no = text.as_bytes()[..start]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1;
    if let Some(rest) = why.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        return format!(
            "line {line_no}: unknown key {key} (dist/chinwagd.toml lists every key with its default)"
        );
    }
    // The key of the line the error is on, when it is `key = value`.
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    match key {
        Some(key) => format!("line {line_no}: {key}: {why}"),
        None => format!("line {line_no}: {why}"),
    }
}

/// The smallest `outbound_limit`: a queue that holds only a few chatos
/// frames (1,097 bytes each) would drop any peer sent a short burst.
const MIN_OUTBOUND: u64 = 4096;
/// The smallest `send_buffer`: about one chatos frame. (The kernel's own
/// floor is lower, but a smaller buffer only costs system calls.)
const MIN_SEND_BUFFER: u64 = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_t_and_m_come_from_proto_and_can_be_set() {
        let d = Config::default().rooms();
        assert_eq!(d.link.retry_every, reliable::RETRY_EVERY);
        assert_eq!(d.link.tries, reliable::TRIES);
        let c = Config::from_toml(
            "rooms_retry_ms = 250\nrooms_tries = 3\nrooms_max_per_ip = 2\n\
             rooms_registrations_per_minute = 7\nrooms_requests_per_second = 9\n\
             rooms_idle_timeout_ms = 5000\n",
        )
        .unwrap()
        .rooms();
        assert_eq!(c.link.retry_every, Duration::from_millis(250));
        assert_eq!(c.link.tries, 3);
        assert_eq!(
            (
                c.max_per_ip,
                c.registrations_per_minute,
                c.requests_per_second
            ),
            (2, 7, 9)
        );
        assert_eq!(c.idle_timeout, Duration::from_millis(5000));
        // Nonsense is refused at start, with the key named.
        for (text, key) in [
            ("rooms_retry_ms = 0", "rooms_retry_ms"),
            ("rooms_tries = 0", "rooms_tries"),
            ("rooms_max_per_ip = 0", "rooms_max_per_ip"),
            ("rooms_max_per_ip = 255", "rooms_max_per_ip"),
            (
                "rooms_registrations_per_minute = 0",
                "rooms_registrations_per_minute",
            ),
            ("rooms_requests_per_second = 0", "rooms_requests_per_second"),
            ("rooms_workers = 0", "rooms_workers"),
            ("rooms_workers = 65", "rooms_workers"),
            ("spare_threads = 100001", "spare_threads"),
        ] {
            let err = Config::from_toml(text).unwrap().validate().unwrap_err();
            assert!(err.starts_with(&format!("{key} = ")), "{text}: {err}");
        }
        assert!(Config::default().validate().is_ok());
        assert!(Config::ephemeral().validate().is_ok());
    }

    #[test]
    fn a_file_refused_by_toml_gives_one_line_naming_the_line_and_key() {
        let cases = [
            (
                "bind = \"127.0.0.1\"\nmax_conections = 5\n",
                "line 2: unknown key max_conections (",
            ),
            (
                "chatos_port = 0\n\nmax_connections = \"many\"\n",
                "line 3: max_connections: invalid type: string \"many\"",
            ),
            ("chatos_port = 70000\n", "line 1: chatos_port: "),
            ("bind = \"localhost\"\n", "line 1: bind: "),
            ("rooms_port = 1\nthis is not toml\n", "line 2: "),
        ];
        for (text, want) in cases {
            let err = Config::from_toml(text).unwrap_err();
            assert!(!err.contains('\n'), "one line: {err:?}");
            assert!(err.starts_with(want), "{text:?}: {err:?}");
            // Not the list of every key toml would give.
            assert!(err.len() < 200, "{err:?}");
        }
    }

    #[test]
    fn the_relay_settings_are_read_and_checked() {
        let c = Config::from_toml(
            "call_relay = \"all\"\nrelay_max_calls = 3\nrelay_packets_per_second = 7\n\
             relay_idle_timeout_ms = 900\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.relay_mode(), crate::hub::RelayMode::All);
        let r = c.relay();
        assert_eq!((r.max_calls, r.packets_per_second), (3, 7));
        assert_eq!(r.idle_timeout, Duration::from_millis(900));
        assert_eq!(Config::default().relay_mode(), crate::hub::RelayMode::Cross);
        for (text, key) in [
            ("call_relay = \"sometimes\"", "call_relay"),
            ("relay_max_calls = 0", "relay_max_calls"),
            ("relay_packets_per_second = 0", "relay_packets_per_second"),
            ("relay_idle_timeout_ms = 0", "relay_idle_timeout_ms"),
        ] {
            let err = Config::from_toml(text).unwrap().validate().unwrap_err();
            assert!(err.starts_with(&format!("{key} = ")), "{text}: {err}");
        }
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_checked_when_on() {
        let d = Config::default();
        assert!(d.validate().is_ok());
        assert!(d.cluster().is_none());
        let on = Config::from_toml(
            "bus_url = \"nats://127.0.0.1:4222\"\nnode_name = \"a-1\"\n\
             store_url = \"postgres://chinwag@127.0.0.1:5432/chinwag\"",
        )
        .unwrap();
        assert!(on.validate().is_ok());
        let c = on.cluster().unwrap();
        assert_eq!(c.urls, ["nats://127.0.0.1:4222"]);
        assert_eq!((c.node.as_str(), c.cluster.as_str()), ("a-1", "chinwag"));
        for (bad, why) in [
            ("node_name = \"\"", "node_name"),
            ("node_name = \"a.b\"", "node_name"),
            ("store_url = \"\"", "store_url"),
            ("bus_url = \"redis://h\"", "bus_url"),
            ("node_timeout_ms = 500", "node_timeout_ms"),
            ("cluster_name = \"c>\"", "cluster_name"),
        ] {
            let mut c = on.clone();
            let patch = Config::from_toml(bad).unwrap();
            let key = bad.split(' ').next().unwrap();
            match key {
                "node_name" => c.node_name = patch.node_name,
                "store_url" => c.store_url = patch.store_url,
                "bus_url" => c.bus_url = patch.bus_url,
                "node_timeout_ms" => c.node_timeout_ms = patch.node_timeout_ms,
                _ => c.cluster_name = patch.cluster_name,
            }
            let err = c.validate().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_proxy_listener_needs_an_address_and_a_secret() {
        let on = Config::from_toml(
            "bus_url = \"nats://127.0.0.1:4222\"\nnode_name = \"a\"\n\
             store_url = \"postgres://chinwag@127.0.0.1:5432/chinwag\"\n\
             node_index = 7\ncluster_addr = \"127.0.0.1:0\"\n\
             cluster_secret_file = \"/etc/chinwag/cluster.secret\"",
        )
        .unwrap();
        assert!(on.validate().is_ok());
        assert_eq!(on.cluster().unwrap().index, 7);
        let mut c = on.clone();
        c.cluster_secret_file.clear();
        assert!(c.validate().unwrap_err().contains("cluster_secret_file"));
        let mut c = on.clone();
        c.cluster_addr = "somewhere:7100".into();
        assert!(c.validate().unwrap_err().contains("cluster_addr"));
        assert!(Config::from_toml("node_index = 256").is_err());
    }

    #[test]
    fn the_bus_credentials_and_tls_keys_are_checked() {
        let on = Config::from_toml(
            "bus_url = \"nats://127.0.0.1:4222\"\nnode_name = \"a\"\n\
             store_url = \"postgres://chinwag@127.0.0.1:5432/chinwag\"",
        )
        .unwrap();
        assert!(!on.bus_wants_tls());
        let with = |text: &str| {
            let patch = Config::from_toml(text).unwrap();
            Config {
                bus_url: if patch.bus_url.is_empty() {
                    on.bus_url.clone()
                } else {
                    patch.bus_url.clone()
                },
                node_name: on.node_name.clone(),
                store_url: on.store_url.clone(),
                ..patch
            }
        };
        for good in [
            "bus_token_file = \"/etc/chinwag/bus.token\"",
            "bus_user = \"node-a\"\nbus_password_file = \"/etc/chinwag/bus.pw\"",
            "bus_nkey_seed_file = \"/etc/chinwag/bus.nk\"",
            "bus_tls = true\nbus_tls_ca_file = \"/etc/chinwag/ca.pem\"",
            "bus_tls_cert_file = \"c.pem\"\nbus_tls_key_file = \"c.key\"",
            "bus_url = \"tls://10.0.0.1:4222,nats://10.0.0.2:4222\"",
        ] {
            assert_eq!(with(good).validate(), Ok(()), "{good}");
        }
        assert!(with("bus_tls = true").bus_wants_tls());
        assert!(with("bus_url = \"nats://h:1, tls://h:2\"").bus_wants_tls());
        for (bad, why) in [
            (
                "bus_token_file = \"t\"\nbus_user = \"u\"\nbus_password_file = \"p\"",
                "exclude each other",
            ),
            (
                "bus_token_file = \"t\"\nbus_nkey_seed_file = \"s\"",
                "exclude each other",
            ),
            ("bus_user = \"u\"", "go together"),
            ("bus_password_file = \"p\"", "go together"),
            ("bus_tls_cert_file = \"c.pem\"", "go together"),
            ("bus_tls_key_file = \"c.key\"", "go together"),
            ("bus_url = \"nats://node:hunter2@h:4222\"", "credentials"),
            ("bus_url = \"tls://s3cret-token@h:4222\"", "credentials"),
            ("bus_url = \"tls://\"", "bus_url"),
        ] {
            let err = with(bad).validate().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn store_password_file_needs_postgres_and_a_url_without_a_password() {
        let c = |text: &str| Config::from_toml(text).unwrap().validate();
        assert_eq!(
            c("store_url = \"postgres://u@h/d\"\nstore_password_file = \"/etc/pw\""),
            Ok(())
        );
        let err = c("store_password_file = \"/etc/pw\"").unwrap_err();
        assert!(err.contains("postgres://"), "{err}");
        let err = c("store_url = \"postgres://u:hunter2@h/d\"\nstore_password_file = \"/etc/pw\"")
            .unwrap_err();
        assert!(
            err.contains("keep one") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_file_loses_its_newline_and_a_loose_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "cw-secretfile-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let write = |text: &[u8], mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(b"tok\r\n", 0o600);
        assert_eq!(read_secret_file(&path, "x").unwrap(), b"tok");
        write(b"tok\n", 0o400);
        assert_eq!(read_secret_file(&path, "x").unwrap(), b"tok", "0400");
        write(b"tok\n", 0o604);
        let err = read_secret_file(&path, "the token").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("chmod 600") && err.contains("604"), "{err}");
        assert!(!err.contains("tok\n") && !err.ends_with("tok"), "{err}");
        for mode in [0o640, 0o644, 0o660, 0o610, 0o601, 0o602] {
            write(b"tok", mode);
            let err = read_secret_file(&path, "x").unwrap_err().to_string();
            assert!(err.contains(&format!("{mode:o}")), "{mode:o}: {err}");
        }
        write(b"\n", 0o600);
        let err = read_secret_file(&path, "the token").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(read_secret_file(&dir.join("none"), "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_url_is_empty_or_a_postgres_url_we_can_use() {
        assert_eq!(Config::default().store_url, "");
        let ok =
            Config::from_toml("store_url = \"postgres://chinwag@127.0.0.1:5432/chinwag\"").unwrap();
        assert!(ok.validate().is_ok());
        for bad in [
            "store_url = \"sqlite:chinwag.db\"",
            "store_url = \"postgres://u:hunter2@h/d?sslmode=verify-full\"",
            "store_url = \"postgres://u:hunter2@h/d?sslmode=maybe\"",
            "store_url = \"postgres://u:hunter2@h:port/d\"",
        ] {
            let err = Config::from_toml(bad).unwrap().validate().unwrap_err();
            assert!(err.starts_with("store_url"), "{bad}: {err}");
            assert!(
                !err.contains("hunter2"),
                "the password is never echoed: {err}"
            );
        }
    }
}
