//! chinwagd as a library: start the listeners over one shared hub, and stop
//! them cleanly. `main.rs` only parses flags and calls [`Server::start`];
//! tests and benchmarks start servers in-process the same way.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod front;
pub mod guard;
pub mod hub;
pub mod logs;
pub mod media;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod store;
pub mod tls;

// The fuzz targets run as ordinary tests (fuzz_targets.rs): they name the
// crate as the fuzz crate does, and find their `fuzz_target!` and
// `arbitrary` under the name libfuzzer-sys gives them.
#[cfg(test)]
extern crate self as chinwagd;
#[cfg(test)]
extern crate self as libfuzzer_sys;
#[cfg(test)]
pub use arbitrary;
#[cfg(test)]
mod fuzz_targets;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use config::Config;
use hub::{Hub, HubConfig};
use metrics::DropReason;
use net::{FlushPool, Registry};
use pool::{ConnPool, ThreadBudget};
use store::{Store, StoreThread};

/// How often expired requests and connect ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long shutdown waits for connection threads to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State every connection thread can reach.
pub struct Shared {
    pub hub: Arc<Hub>,
    /// The accounts service (store-backed); None only in hub-less unit tests.
    pub accounts: Option<Arc<front::accounts::service::Accounts>>,
    pub cfg: Config,
    pub registry: Arc<Registry>,
    /// The threads that send every connection's queued bytes.
    pub flush: Arc<FlushPool>,
    /// Where every TCP connection's thread comes from.
    pub conn_threads: ConnPool,
    /// Every per-connection thread counts here: connection threads, backlog
    /// writers, the media relay's babel legs, cluster proxies.
    pub budget: Arc<ThreadBudget>,
}

/// A running server. Dropping it shuts it down.
pub struct Server {
    shared: Arc<Shared>,
    chatos_addr: SocketAddr,
    babel_addr: SocketAddr,
    accounts_addr: SocketAddr,
    rooms: front::rooms::RoomsServer,
    relay: Arc<media::Relay>,
    /// Cluster mode's adapter (None for a single node).
    cluster: Option<Arc<cluster::Cluster>>,
    /// Cluster mode: the node-to-node listener (`cluster_addr`), if any.
    proxy_addr: Option<SocketAddr>,
    store: Store,
    store_thread: Option<StoreThread>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    admin: Option<admin::AdminSocket>,
    metrics: Option<metrics::Endpoint>,
    /// Parts that cannot go on ask the server to stop through this.
    fatal: guard::Fatal,
    failed: crossbeam_channel::Receiver<String>,
}

type ServeFn = fn(Arc<TcpStream>, Arc<Shared>);

impl Server {
    /// Bind every listener and start serving. Returns once the sockets are bound.
    pub fn start(cfg: Config) -> io::Result<Server> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let started = Instant::now();
        let hub = Arc::new(Hub::new(HubConfig {
            connect_id_ttl: cfg.connect_id_ttl(),
            max_relays: cfg.max_relays,
            max_pending_requests: cfg.max_pending_requests,
            call_relay: cfg.relay_mode(),
        }));
        let registry = Registry::new(cfg.max_connections);
        let mut target = store::Target::from_settings(&cfg.db_path, &cfg.store_url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if !cfg.store_password_file.is_empty() {
            target
                .read_password(Path::new(&cfg.store_password_file))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let (store, store_thread) =
            Store::open_target(&target, Some(hub.metrics().commit_seconds.clone()))
                .map_err(|e| io::Error::other(format!("cannot open {}: {e}", target.shown())))?;
        let accounts = front::accounts::service::Accounts::new(
            hub.clone(),
            store.clone(),
            cfg.registrations_per_minute,
        );
        // Cluster mode: on the bus before any listener, so every login is
        // claimed cluster-wide.
        let (fatal, failed) = guard::Fatal::new();
        let mut proxy_listener = None;
        let mut cluster = ClusterGuard(match cfg.cluster() {
            Some(mut c) => {
                if !cfg.cluster_secret_file.is_empty() {
                    c.secret = Some(cluster::read_secret(Path::new(&cfg.cluster_secret_file))?);
                }
                c.access = cluster::bus::Access::load(&cfg)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                if !cfg.cluster_addr.is_empty() {
                    let at: SocketAddr = cfg.cluster_addr.parse().expect("validated");
                    let l = TcpListener::bind(at)
                        .map_err(|e| cannot_listen(e, "cluster", at, "tcp"))?;
                    c.addr = l.local_addr()?.to_string();
                    proxy_listener = Some(l);
                }
                let cluster = cluster::Cluster::start(c, &hub, &fatal)?;
                cluster.set_accounts(&accounts);
                Some(cluster)
            }
            None => None,
        });
        let chatos = listen(cfg.bind, cfg.chatos_port, "chatos")?;
        let chatos_addr = chatos.local_addr()?;
        let babel = listen(cfg.bind, cfg.babel_port, "babel")?;
        let babel_addr = babel.local_addr()?;
        let accounts_l = listen(cfg.bind, cfg.accounts_port, "accounts")?;
        let accounts_addr = accounts_l.local_addr()?;
        let rooms_at = SocketAddr::new(cfg.bind, cfg.rooms_port);
        let rooms = front::rooms::RoomsServer::start(
            hub.clone(),
            registry.clone(),
            rooms_at,
            cfg.rooms(),
            cfg.rooms_workers,
        )
        .map_err(|e| cannot_listen(e, "rooms", rooms_at, "udp"))?;
        let metrics_listener = match cfg.metrics_addr.as_str() {
            "" => None,
            a => {
                let at: SocketAddr = a.parse().expect("validated");
                if !at.ip().is_loopback() {
                    log::warn!("metrics_addr {at} is not a loopback address: anyone who can reach it can read the counters");
                }
                Some(TcpListener::bind(at).map_err(|e| cannot_listen(e, "metrics", at, "tcp"))?)
            }
        };
        let budget = thread_budget(&cfg);
        let flush = FlushPool::with_budget(cfg.flush_threads, budget.clone())?;
        let spare = cfg.spare_threads.min(cfg.max_connections);
        // Parked spares wait on futexes, and so may any connection thread
        // on a lock: a bucket each (see `pool::size_futex_hash`).
        pool::size_futex_hash(spare + cfg.max_connections);
        let conn_threads = ConnPool::new(spare, budget.clone())?;
        let relay = media::Relay::start(
            cfg.relay(),
            &hub,
            media::LegConns {
                registry: registry.clone(),
                flush: flush.clone(),
                budget: budget.clone(),
                outbound_limit: cfg.outbound_limit,
                write_timeout: cfg.write_timeout(),
            },
            fatal.clone(),
        )?;
        hub.set_relay(relay.clone());
        let admin = Arc::new(admin::Admin {
            hub: hub.clone(),
            store: store.clone(),
            accounts: Some(accounts.clone()),
            registry: registry.clone(),
            started,
        });
        let bans = admin.load_bans().map_err(io::Error::other)?;
        if bans > 0 {
            log::info!("{bans} bans in force");
        }
        let admin_socket = match cfg.admin_socket_path() {
            Some(path) => Some(admin::AdminSocket::start(&path, admin)?),
            None => None,
        };
        let metrics = match metrics_listener {
            Some(l) => Some(metrics::Endpoint::start(
                l,
                metrics::pages(hub.clone(), store.clone(), Some(accounts.clone())),
            )?),
            None => None,
        };
        let shared = Arc::new(Shared {
            flush,
            conn_threads,
            budget,
            hub,
            accounts: Some(accounts),
            cfg,
            registry,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        threads.push(spawn_acceptor(
            "chatos",
            chatos,
            shared.clone(),
            front::chatos::serve,
        )?);
        threads.push(spawn_acceptor(
            "babel",
            babel,
            shared.clone(),
            front::babel::serve,
        )?);
        threads.push(spawn_acceptor(
            "accounts",
            accounts_l,
            shared.clone(),
            front::accounts::serve,
        )?);
        let proxy_addr = match proxy_listener {
            Some(l) => {
                let at = l.local_addr()?;
                let secret = cluster
                    .0
                    .as_ref()
                    .and_then(|c| c.secret())
                    .ok_or_else(|| io::Error::other("cluster_addr without a secret"))?;
                let (shared, stop) = (shared.clone(), stop.clone());
                threads.push(
                    thread::Builder::new()
                        .name("cw-proxy-accept".into())
                        .spawn(move || cluster::proxy::accept_loop(l, shared, secret, stop))?,
                );
                Some(at)
            }
            None => None,
        };
        {
            let shared = shared.clone();
            let stop = stop.clone();
            threads.push(
                thread::Builder::new()
                    .name("cw-sweep".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            thread::park_timeout(SWEEP_EVERY);
                            shared.hub.sweep(Instant::now());
                            logs::flush(Instant::now());
                        }
                    })?,
            );
        }
        let mut listeners = vec![
            ("chatos", chatos_addr),
            ("babel", babel_addr),
            ("accounts", accounts_addr),
            ("rooms", rooms.addr()),
        ];
        listeners.extend(metrics.as_ref().map(|m| ("metrics", m.addr())));
        listeners.extend(proxy_addr.map(|a| ("cluster", a)));
        log::info!(target: LISTENING_TARGET, "{}", listening_line(&listeners));
        Ok(Server {
            fatal,
            failed,
            shared,
            chatos_addr,
            babel_addr,
            accounts_addr,
            rooms,
            relay,
            cluster: cluster.0.take(),
            proxy_addr,
            store,
            store_thread: Some(store_thread),
            stop,
            threads,
            admin: admin_socket,
            metrics,
        })
    }

    /// The handle a part of the server uses to stop it loudly (see `guard`).
    pub fn fatal(&self) -> guard::Fatal {
        self.fatal.clone()
    }

    /// Receives the reason once a part of the server asked it to stop.
    pub fn failed(&self) -> &crossbeam_channel::Receiver<String> {
        &self.failed
    }

    /// The admin socket's path, when there is one.
    pub fn admin_socket(&self) -> Option<&Path> {
        self.admin.as_ref().map(|a| a.path())
    }

    /// The metrics endpoint's address, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr())
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    pub fn chatos_addr(&self) -> SocketAddr {
        self.chatos_addr
    }

    pub fn babel_addr(&self) -> SocketAddr {
        self.babel_addr
    }

    pub fn accounts_addr(&self) -> SocketAddr {
        self.accounts_addr
    }

    /// Calls the media relay carries now (ringing or answered).
    pub fn relayed_calls(&self) -> usize {
        self.relay.calls()
    }

    /// The rooms dialect's UDP socket.
    pub fn rooms_addr(&self) -> SocketAddr {
        self.rooms.addr()
    }

    /// Cluster mode: the node-to-node listener's address (`cluster_addr`).
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy_addr
    }

    /// Cluster mode's adapter, when `bus_url` is set.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The per-connection thread budget (see `pool::ThreadBudget`).
    pub fn thread_budget(&self) -> &Arc<ThreadBudget> {
        &self.shared.budget
    }

    /// Connection threads parked right now, ready for a connection.
    pub fn parked_threads(&self) -> usize {
        self.shared.conn_threads.idle()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// The store, for test hooks such as [`Store::fail_commits`]; no client
    /// can reach it.
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Connections currently open, all dialects together.
    pub fn connections(&self) -> usize {
        self.shared.registry.len()
    }

    /// Connection threads started so far, and how many wait parked now
    /// (see `pool`).
    pub fn conn_threads(&self) -> (u64, usize) {
        let p = &self.shared.conn_threads;
        (p.started(), p.idle())
    }

    /// Stop accepting, close every connection, join the threads.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        log::info!("shutting down");
        if let Some(mut a) = self.admin.take() {
            a.stop();
        }
        if let Some(mut m) = self.metrics.take() {
            m.stop();
        }
        self.shared.registry.stop_all();
        // Wake each acceptor out of accept() with a connection of our own.
        let proxy = self.proxy_addr.into_iter();
        for addr in [self.chatos_addr, self.babel_addr, self.accounts_addr]
            .into_iter()
            .chain(proxy)
        {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
        if !self.shared.registry.wait_idle(SHUTDOWN_GRACE) {
            log::warn!(
                "{} connections still open after shutdown grace",
                self.shared.registry.len()
            );
        }
        self.shared.conn_threads.stop();
        self.rooms.stop();
        self.relay.stop();
        // After every session ended, so their names went back to the bus.
        if let Some(c) = self.cluster.take() {
            c.stop();
        }
        self.shared.flush.stop();
        // Last: every acknowledged row is already committed; this checkpoints and closes.
        self.store.stop();
        if let Some(t) = self.store_thread.take() {
            t.join();
        }
        log::info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The log target of the `listening:` line, so that a filter such as
/// `RUST_LOG=warn,chinwagd::listening=info` keeps it and little else.
pub const LISTENING_TARGET: &str = "chinwagd::listening";

/// The one line that says where every listener of a started server is
/// bound (docs/operations.md, "Start-up"): `listening: ` then `NAME ADDR`
/// pairs joined by `, `, in the order chatos, babel, accounts, rooms (UDP),
/// then metrics and cluster when they are on. With port 0 these are the
/// ports the system gave. Programs read it: its form is an interface.
pub fn listening_line(listeners: &[(&str, SocketAddr)]) -> String {
    let parts: Vec<String> = listeners
        .iter()
        .map(|(name, addr)| format!("{name} {addr}"))
        .collect();
    format!("listening: {}", parts.join(", "))
}

/// Stops the cluster adapter's threads when `Server::start` fails after
/// starting them (a port in use, say); a started server takes it out.
struct ClusterGuard(Option<Arc<cluster::Cluster>>);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.stop();
        }
    }
}

/// The per-connection threads this process can have (see
/// `pool::ThreadBudget`); says so at start when `max_connections` could
/// need more.
fn thread_budget(cfg: &Config) -> Arc<ThreadBudget> {
    let set = match cfg.max_threads {
        0 => usize::MAX,
        n => n,
    };
    let Some(fit) = ThreadBudget::from_system() else {
        return ThreadBudget::new(set);
    };
    if set < fit {
        return ThreadBudget::new(set);
    }
    let want = cfg.max_connections + cfg.spare_threads.min(cfg.max_connections);
    if want > fit {
        log::warn!(
            "max_connections = {} (and spare_threads = {}) could need {want} connection threads, \
             {} memory maps each, but vm.max_map_count leaves room for {fit}: \
             connections past that are closed at once; raise vm.max_map_count to serve more",
            cfg.max_connections,
            cfg.spare_threads,
            pool::maps_per_thread()
        );
    }
    ThreadBudget::set_by(fit, "vm.max_map_count")
}

/// Pending connections the kernel holds per listener: std's default of 128
/// overflows when thousands of clients connect at once.
const LISTEN_BACKLOG: i32 = 4096;

fn listen(ip: std::net::IpAddr, port: u16, dialect: &str) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let bound = (|| {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // Restarting right after a stop must not fail on TIME_WAIT sockets.
        sock.set_reuse_address(true)?;
        sock.bind(&addr.into())?;
        sock.listen(LISTEN_BACKLOG)?;
        Ok(sock.into())
    })();
    bound.map_err(|e| cannot_listen(e, dialect, addr, "tcp"))
}

/// A start-up error that names the listener, its address and the setting
/// to change: "chatos: cannot listen on 127.0.0.1:7001/tcp (chatos_port): ...".
fn cannot_listen(e: io::Error, what: &str, addr: SocketAddr, proto: &str) -> io::Error {
    let key = if what == "metrics" {
        "metrics_addr".to_owned()
    } else if e.kind() == io::ErrorKind::AddrNotAvailable {
        // The address, not the port: no interface has it.
        "bind".to_owned()
    } else {
        format!("{what}_port")
    };
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => " (another program, or another chinwagd, is using it)",
        io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
        _ => "",
    };
    io::Error::new(
        e.kind(),
        format!("{what}: cannot listen on {addr}/{proto} (set by {key}): {e}{hint}"),
    )
}

fn spawn_acceptor(
    dialect: &'static str,
    listener: TcpListener,
    shared: Arc<Shared>,
    serve: ServeFn,
) -> io::Result<JoinHandle<()>> {
    let thread_name = match dialect {
        "chatos" => "cw-chatos",
        "babel" => "cw-babel",
        _ => "cw-accounts",
    };
    thread::Builder::new()
        .name(format!("cw-accept-{dialect}"))
        .spawn(move || {
            loop {
                let conn = chinwag_proto::eintr::retry(|| listener.accept().map(|(s, _)| s));
                if shared.registry.stopping() {
                    break;
                }
                let stream = match conn {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("{dialect}: accept failed: {e}");
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                // A banned address is closed before it costs a thread.
                if stream
                    .peer_addr()
                    .is_ok_and(|a| shared.hub.bans().ip_banned(a.ip()))
                {
                    shared.hub.metrics().dropped(DropReason::Banned);
                    log::debug!("{dialect}: connection from a banned address closed");
                    continue;
                }
                let stream = Arc::new(stream);
                let Some(admission) = shared.registry.admit(&stream) else {
                    shared.hub.metrics().dropped(DropReason::ConnectionLimit);
                    if let Ok(peer) = stream.peer_addr() {
                        logs::peer_log!(
                            log::Level::Warn,
                            peer.ip(),
                            "connection limit",
                            "{dialect}: connection limit reached, closing a new connection from {peer}"
                        );
                    }
                    net::refuse(&stream);
                    continue;
                };
                let shared2 = shared.clone();
                let refused = stream.clone();
                let started = shared.conn_threads.run(thread_name, move || {
                    let _admission = admission;
                    serve(stream, shared2);
                });
                if let Err(e) = started {
                    if shared.registry.stopping() {
                        break;
                    }
                    // No thread to be had (the budget, `max_threads` or
                    // `vm.max_map_count`, or the system's): the job and its
                    // admission are gone; the peer gets a FIN, not a reset.
                    shared.hub.metrics().dropped(DropReason::ThreadBudget);
                    logs::server_log!(
                        log::Level::Warn,
                        "no connection thread",
                        "{dialect}: no thread for a new connection, closing it: {e} \
                         (chinwag_drops_total{{reason=\"thread_budget\"}} counts them)"
                    );
                    net::refuse(&refused);
                }
            }
        })
}
