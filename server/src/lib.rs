//! chinwagd as a library: start the listeners over one shared hub, and stop
//! them cleanly. `main.rs` only parses flags and calls [`Server::start`];
//! tests and benchmarks start servers in-process the same way.

pub mod config;
pub mod front;
pub mod hub;
pub mod net;
pub mod store;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use config::Config;
use hub::{Hub, HubConfig};
use net::{FlushPool, Registry};
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
}

/// A running server. Dropping it shuts it down.
pub struct Server {
    shared: Arc<Shared>,
    chatos_addr: SocketAddr,
    babel_addr: SocketAddr,
    accounts_addr: SocketAddr,
    rooms: front::rooms::RoomsServer,
    store: Store,
    store_thread: Option<StoreThread>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

type ServeFn = fn(Arc<TcpStream>, Arc<Shared>);

impl Server {
    /// Bind every listener and start serving. Returns once the sockets are bound.
    pub fn start(cfg: Config) -> io::Result<Server> {
        let hub = Arc::new(Hub::new(HubConfig {
            connect_id_ttl: cfg.connect_id_ttl(),
            max_relays: cfg.max_relays,
            max_pending_requests: cfg.max_pending_requests,
        }));
        let registry = Registry::new(cfg.max_connections);
        let (store, store_thread) = Store::open(&cfg.db_path)
            .map_err(|e| io::Error::other(format!("cannot open {}: {e}", cfg.db_path.display())))?;
        let accounts = front::accounts::service::Accounts::new(
            hub.clone(),
            store.clone(),
            cfg.registrations_per_minute,
        );
        let chatos = listen(cfg.bind, cfg.chatos_port)?;
        let chatos_addr = chatos.local_addr()?;
        let babel = listen(cfg.bind, cfg.babel_port)?;
        let babel_addr = babel.local_addr()?;
        let accounts_l = listen(cfg.bind, cfg.accounts_port)?;
        let accounts_addr = accounts_l.local_addr()?;
        let rooms = front::rooms::RoomsServer::start(
            hub.clone(),
            SocketAddr::new(cfg.bind, cfg.rooms_port),
            Duration::from_millis(cfg.rooms_idle_timeout_ms),
        )?;
        let flush = FlushPool::new(cfg.flush_threads)?;
        let shared = Arc::new(Shared {
            flush,
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
                        }
                    })?,
            );
        }
        log::info!("listening: chatos {chatos_addr}, babel {babel_addr}, accounts {accounts_addr}");
        Ok(Server {
            shared,
            chatos_addr,
            babel_addr,
            accounts_addr,
            rooms,
            store,
            store_thread: Some(store_thread),
            stop,
            threads,
        })
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

    /// The rooms dialect's UDP socket.
    pub fn rooms_addr(&self) -> SocketAddr {
        self.rooms.addr()
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

    /// Stop accepting, close every connection, join the threads.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        log::info!("shutting down");
        self.shared.registry.stop_all();
        // Wake each acceptor out of accept() with a connection of our own.
        for addr in [self.chatos_addr, self.babel_addr, self.accounts_addr] {
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
        self.rooms.stop();
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

/// Pending connections the kernel holds per listener: std's default of 128
/// overflows when thousands of clients connect at once.
const LISTEN_BACKLOG: i32 = 4096;

fn listen(ip: std::net::IpAddr, port: u16) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Restarting right after a stop must not fail on TIME_WAIT sockets.
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

fn spawn_acceptor(
    dialect: &'static str,
    listener: TcpListener,
    shared: Arc<Shared>,
    serve: ServeFn,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("cw-accept-{dialect}"))
        .spawn(move || {
            for conn in listener.incoming() {
                if shared.registry.stopping() {
                    break;
                }
                let stream = match conn {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("{dialect}: accept failed: {e}");
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Some(admission) = shared.registry.admit(&stream) else {
                    log::warn!("{dialect}: connection limit reached, closing new connection");
                    continue;
                };
                let shared2 = shared.clone();
                let spawned = thread::Builder::new()
                    .name(format!("cw-{dialect}"))
                    .stack_size(net::CONN_STACK)
                    .spawn(move || {
                        let _admission = admission;
                        serve(stream, shared2);
                    });
                if let Err(e) = spawned {
                    log::warn!("{dialect}: cannot start a connection thread: {e}");
                }
            }
        })
}
