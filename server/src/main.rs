//! chinwagd: parse flags, start the server, wait for SIGINT or SIGTERM
//! (SIGHUP re-reads the configuration and says what would change).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chinwagd::{Config, Server};
use clap::Parser;

/// The chinwag server. Flags override the config file, which overrides defaults.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML config file with any of the settings below (snake_case keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to bind every listener to.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// chatos TCP port.
    #[arg(long)]
    chatos_port: Option<u16>,
    /// babel TCP port.
    #[arg(long)]
    babel_port: Option<u16>,
    /// accounts TCP port.
    #[arg(long)]
    accounts_port: Option<u16>,
    /// rooms UDP port.
    #[arg(long)]
    rooms_port: Option<u16>,
    /// Milliseconds a silent rooms client is kept.
    #[arg(long)]
    rooms_idle_timeout_ms: Option<u64>,
    /// Rooms T: milliseconds between two sends of a server message.
    #[arg(long)]
    rooms_retry_ms: Option<u64>,
    /// Rooms M: sends of a server message in all.
    #[arg(long)]
    rooms_tries: Option<u32>,
    /// Rooms clients registered at once from one IPv4 address (or IPv6 /64).
    #[arg(long)]
    rooms_max_per_ip: Option<usize>,
    /// Rooms registrations one address may attempt per minute.
    #[arg(long)]
    rooms_registrations_per_minute: Option<u32>,
    /// Requests one rooms client may make per second.
    #[arg(long)]
    rooms_requests_per_second: Option<u32>,
    /// Threads applying rooms datagrams.
    #[arg(long)]
    rooms_workers: Option<usize>,
    /// SQLite database file.
    #[arg(long)]
    db: Option<PathBuf>,
    /// PostgreSQL store instead of SQLite: postgres://USER@HOST:PORT/DB
    /// [?sslmode=verify-full&sslrootcert=FILE] (a password here shows in
    /// `ps`: use --store-password-file).
    #[arg(long)]
    store_url: Option<String>,
    /// File (0600) holding the PostgreSQL password.
    #[arg(long)]
    store_password_file: Option<String>,
    /// Cluster mode: the NATS bus, nats://HOST:PORT or tls://HOST:PORT
    /// [,...] (empty: one node).
    #[arg(long)]
    bus_url: Option<String>,
    /// File (0600) holding the bus's token.
    #[arg(long)]
    bus_token_file: Option<String>,
    /// The bus user this node logs in as (password: --bus-password-file).
    #[arg(long)]
    bus_user: Option<String>,
    /// File (0600) holding the bus user's password.
    #[arg(long)]
    bus_password_file: Option<String>,
    /// File (0600) holding this node's nkey seed for the bus.
    #[arg(long)]
    bus_nkey_seed_file: Option<String>,
    /// TLS to the bus (as a tls:// URL does).
    #[arg(long)]
    bus_tls: Option<bool>,
    /// PEM file of the bus's CA (default: the system's CAs).
    #[arg(long)]
    bus_tls_ca_file: Option<String>,
    /// PEM certificate this node shows the bus (mutual TLS).
    #[arg(long)]
    bus_tls_cert_file: Option<String>,
    /// PEM key (0600) of --bus-tls-cert-file.
    #[arg(long)]
    bus_tls_key_file: Option<String>,
    /// This node's unique name in the cluster.
    #[arg(long)]
    node_name: Option<String>,
    /// The cluster's name (prefix of its bus subjects).
    #[arg(long)]
    cluster_name: Option<String>,
    /// Milliseconds of silence after which another node counts as dead.
    #[arg(long)]
    node_timeout_ms: Option<u64>,
    /// Milliseconds a login waits for its cluster-wide name claim.
    #[arg(long)]
    bus_timeout_ms: Option<u64>,
    /// 0-255, unique per node: the top byte of its chatos connect ids.
    #[arg(long)]
    node_index: Option<u8>,
    /// HOST:PORT of the node-to-node listener (chatos private connections
    /// proxied from other nodes).
    #[arg(long)]
    cluster_addr: Option<String>,
    /// File (0600) holding the cluster's shared secret.
    #[arg(long)]
    cluster_secret_file: Option<String>,
    /// Maximum open connections, all dialects together.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Milliseconds a new connection has to identify.
    #[arg(long)]
    login_timeout_ms: Option<u64>,
    /// Bytes queued for one slow reader before it is dropped.
    #[arg(long)]
    outbound_limit: Option<usize>,
    /// Milliseconds a stalled write may last before the peer is dropped.
    #[arg(long)]
    write_timeout_ms: Option<u64>,
    /// Kernel send buffer per accepted socket, bytes (counted in the outbound limit).
    #[arg(long)]
    send_buffer: Option<usize>,
    /// Milliseconds an unused private-connection id stays valid.
    #[arg(long)]
    connect_id_ttl_ms: Option<u64>,
    /// Maximum private relays at once.
    #[arg(long)]
    max_relays: Option<usize>,
    /// Private-connection requests (and babel call offers) pending per user.
    #[arg(long)]
    max_pending_requests: Option<usize>,
    /// Accounts one IP address may register per minute.
    #[arg(long)]
    registrations_per_minute: Option<u32>,
    /// Threads that send queued output for all connections.
    #[arg(long)]
    flush_threads: Option<usize>,
    /// Connection threads kept started and parked for new connections.
    #[arg(long)]
    spare_threads: Option<usize>,
    /// Per-connection threads alive at once (0: what vm.max_map_count allows).
    #[arg(long)]
    max_threads: Option<usize>,
    /// Unix socket for chinwagctl ("off": none; default: <db>.sock).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// host:port of the Prometheus endpoint (default: off).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Which calls the media relay carries: all, cross (between dialects), off.
    #[arg(long)]
    call_relay: Option<String>,
    /// Relayed calls at once.
    #[arg(long)]
    relay_max_calls: Option<usize>,
    /// Packets one relayed call may carry per second.
    #[arg(long)]
    relay_packets_per_second: Option<u32>,
    /// Milliseconds an answered relayed call may stay silent.
    #[arg(long)]
    relay_idle_timeout_ms: Option<u64>,
}

fn load(args: &Args) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    macro_rules! set {
        ($($flag:ident => $field:ident),*) => {$(
            if let Some(v) = args.$flag.clone() { cfg.$field = v; }
        )*};
    }
    set!(bind => bind, chatos_port => chatos_port, babel_port => babel_port, accounts_port => accounts_port,
         rooms_port => rooms_port, db => db_path, store_url => store_url,
         bus_url => bus_url, node_name => node_name, cluster_name => cluster_name,
         node_timeout_ms => node_timeout_ms, bus_timeout_ms => bus_timeout_ms,
         node_index => node_index, cluster_addr => cluster_addr,
         cluster_secret_file => cluster_secret_file,
         store_password_file => store_password_file, bus_token_file => bus_token_file,
         bus_user => bus_user, bus_password_file => bus_password_file,
         bus_nkey_seed_file => bus_nkey_seed_file, bus_tls => bus_tls,
         bus_tls_ca_file => bus_tls_ca_file, bus_tls_cert_file => bus_tls_cert_file,
         bus_tls_key_file => bus_tls_key_file,
         rooms_idle_timeout_ms => rooms_idle_timeout_ms, rooms_retry_ms => rooms_retry_ms,
         rooms_tries => rooms_tries, rooms_max_per_ip => rooms_max_per_ip,
         rooms_registrations_per_minute => rooms_registrations_per_minute,
         rooms_requests_per_second => rooms_requests_per_second, rooms_workers => rooms_workers,
         max_connections => max_connections, login_timeout_ms => login_timeout_ms,
         outbound_limit => outbound_limit, write_timeout_ms => write_timeout_ms,
         send_buffer => send_buffer,
         connect_id_ttl_ms => connect_id_ttl_ms, max_relays => max_relays,
         max_pending_requests => max_pending_requests,
         flush_threads => flush_threads, spare_threads => spare_threads,
         max_threads => max_threads,
         registrations_per_minute => registrations_per_minute,
         admin_socket => admin_socket, metrics_addr => metrics_addr,
         call_relay => call_relay, relay_max_calls => relay_max_calls,
         relay_packets_per_second => relay_packets_per_second,
         relay_idle_timeout_ms => relay_idle_timeout_ms);
    cfg.validate()?;
    Ok(cfg)
}

/// SIGHUP: nothing is reloaded while running (every setting sizes a
/// thread pool, a socket or a bound fixed at start), but the file is read
/// again, so the operator learns now, not at the next restart, whether it
/// parses and which of its changes are still waiting for that restart.
fn reread(args: &Args, running: &Config) {
    match load(args) {
        Err(e) => log::error!(
            "SIGHUP: the configuration would not start: {e}; still running with the old one"
        ),
        Ok(new) => {
            let changed = running.changed_keys(&new);
            if changed.is_empty() {
                log::info!("SIGHUP: configuration unchanged; nothing to reload");
            } else {
                log::warn!(
                    "SIGHUP: {} changed; chinwagd reloads nothing while running, restart it to apply",
                    changed.join(", ")
                );
            }
        }
    }
}

/// Runs before Rust's runtime starts: no signal stack per thread (see
/// `chinwagd::pool::no_signal_stacks`), so a connection thread costs two
/// memory maps instead of four and starts about a third faster.
#[used]
#[unsafe(link_section = ".init_array")]
static NO_SIGNAL_STACKS: extern "C" fn() = chinwagd::pool::no_signal_stacks;

/// Let the process use as many descriptors as its hard limit allows: every
/// connection is one descriptor, and the soft default is often 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    raise_fd_limit();
    let args = Args::parse();
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Signals arrive on a thread of their own, so the main thread can wait
    // for a signal and for a fatal failure inside the server at once.
    let (sig_tx, sig_rx) = crossbeam_channel::bounded(8);
    let spawned = std::thread::Builder::new()
        .name("cw-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    let failed = loop {
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => match sig {
                Ok(signal_hook::consts::SIGHUP) => reread(&args, server.config()),
                Ok(sig) => {
                    log::info!("signal {sig} received");
                    break None;
                }
                Err(_) => break None,
            },
            recv(server.failed()) -> why => break why.ok(),
        }
    };
    server.shutdown();
    match failed {
        // EX_SOFTWARE: an internal failure, not an operator's stop.
        Some(why) => {
            log::error!("stopped after a fatal failure: {why}");
            ExitCode::from(70)
        }
        None => ExitCode::SUCCESS,
    }
}
