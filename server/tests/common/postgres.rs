//! A throwaway PostgreSQL server for tests: Debian's `postgresql` package
//! (installed by scripts/install-deps.sh), a cluster made by `initdb` in a
//! temporary directory, listening on 127.0.0.1 only, on a port the kernel
//! said was free (a start that loses the port to someone else retries on
//! another), with its Unix socket in that directory. Each test gets a
//! schema of its own (`fresh_url`), so tests share one server without
//! seeing each other's tables.
//!
//! Lifetime: one server per test process at a time, shared by the tests
//! holding it; the last one to let go stops it (fast shutdown) and removes
//! its directory, on success and on panic alike. Should the test process
//! die outright, the server gets SIGTERM from the kernel (parent-death
//! signal) and the next run removes what is left. As root, the server runs
//! as the `postgres` user (or `nobody`): PostgreSQL refuses to run as root.
//!
//! Used by the store's unit tests and the server's end-to-end tests (each
//! includes this file with `#[path]`).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Names tools a machine lacks on purpose (see the README); "postgres"
/// skips the tests that need a PostgreSQL server.
const SKIP_TOOLS: &str = "CHINWAG_SKIP_TOOLS";
/// Where Debian puts the server's programs (not on PATH).
const DEBIAN_BINS: &str = "/usr/lib/postgresql";
/// How long a server may take to start or stop on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// Starts that lose their port to another process before giving up.
const PORT_TRIES: usize = 5;
/// The superuser initdb creates (trust authentication, loopback only).
pub const USER: &str = "chinwag";

pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    /// Settings beyond the usual ones (`-c NAME=VALUE` each).
    extra: Vec<String>,
    child: Mutex<Child>,
    schemas: AtomicU64,
}

static CURRENT: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());

/// The running test server, started if none is; None when PostgreSQL is
/// missing and `CHINWAG_SKIP_TOOLS` names "postgres" (the caller skips). A
/// missing PostgreSQL otherwise fails the test.
pub fn server() -> Option<Arc<Postgres>> {
    let bin = match bin_dir() {
        Some(b) => b,
        None => {
            let skip = std::env::var(SKIP_TOOLS).unwrap_or_default();
            if skip.split(',').any(|t| t.trim() == "postgres") {
                eprintln!("SKIPPED: PostgreSQL not installed, and {SKIP_TOOLS} says so");
                return None;
            }
            panic!(
                "PostgreSQL (initdb, postgres) is required: scripts/install-deps.sh installs \
                 Debian's postgresql; to skip these tests set {SKIP_TOOLS}=postgres"
            );
        }
    };
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = current.upgrade() {
        return Some(pg);
    }
    let pg = Arc::new(Postgres::start(&bin, &|_| Vec::new()));
    *current = Arc::downgrade(&pg);
    Some(pg)
}

/// A server of its own, for a test that stops or restarts it.
pub fn private_server() -> Option<Postgres> {
    private_server_with(|_| Vec::new())
}

/// A server of its own set up by `setup`, which runs after initdb with the
/// server's directory (the cluster is in its `data`; pg_hba.conf may be
/// edited there) and returns settings to start it with (`NAME=VALUE`).
/// Files `setup` writes directly into the directory are handed to the
/// server's user (a TLS key must be the server's, mode 0600).
pub fn private_server_with(setup: impl Fn(&Path) -> Vec<String>) -> Option<Postgres> {
    server()?; // the same checks; the shared one is not used
    Some(Postgres::start(&bin_dir().expect("checked"), &setup))
}

/// The directory holding initdb and postgres: `CHINWAG_PG_BIN`, else the
/// newest of Debian's versions, else PATH.
fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CHINWAG_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_BINS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("postgres").exists())
    })
}

/// The user the server runs as: ourselves, or when we are root the
/// `postgres` user the package made (else `nobody`).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: getpwnam with a NUL-terminated name; the record is read
        // at once, before any other call could reuse its storage.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null result of getpwnam.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Some((uid, gid));
        }
    }
    panic!("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL");
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Spawns processes from one thread that lives as long as the test
/// process: the parent-death signal fires when the spawning *thread* ends,
/// and a test's own thread ends with the test.
pub fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    type Ask = (Command, Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<Sender<Ask>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = channel::<Ask>();
        std::thread::Builder::new()
            .name("pg-keeper".into())
            .spawn(move || {
                for (mut cmd, answer) in rx {
                    let _ = answer.send(cmd.spawn());
                }
            })
            .expect("keeper thread");
        Mutex::new(tx)
    });
    let (tx, rx) = channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .expect("keeper alive");
    rx.recv().expect("keeper answers")
}

/// Remove what servers of test processes that died left behind.
fn sweep_stale(tmp: &Path) {
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("cw-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Postgres {
    fn start(bin: &Path, setup: &dyn Fn(&Path) -> Vec<String>) -> Postgres {
        let tmp = std::env::temp_dir();
        sweep_stale(&tmp);
        let dir = tmp.join(format!(
            "cw-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.join("data");
        let out = as_server_user(&mut Command::new(bin.join("initdb")), user)
            .current_dir(&dir)
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C", "-N"])
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let extra = setup(&dir);
        if let Some((uid, gid)) = user {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    std::os::unix::fs::chown(e.path(), Some(uid), Some(gid)).unwrap();
                }
            }
        }
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
            let cmd = server_command(bin, &dir, port, user, log, &extra);
            let child = spawn_kept(cmd).expect("postgres starts");
            let pg = Postgres {
                port,
                dir: dir.clone(),
                extra: extra.clone(),
                child: Mutex::new(child),
                schemas: AtomicU64::new(0),
            };
            match pg.wait_ready() {
                Ok(()) => return pg,
                Err(e) => {
                    last = e;
                    // Drop would remove the directory; keep it for a retry.
                    let child = pg.child.lock().unwrap_or_else(|e| e.into_inner());
                    stop_child(child);
                    std::mem::forget(pg);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("PostgreSQL did not start in {PORT_TRIES} tries: {last}");
    }

    /// Until a client can connect; Err if the server exited (its port was
    /// taken) or took too long.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log_tail()));
            }
            if self.admin().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in {PATIENCE:?}: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// A superuser session on the `postgres` database.
    pub fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(USER)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
    }

    /// A new, empty schema: the store URL that puts chinwag's tables in
    /// it, and its name.
    pub fn fresh_url(&self) -> (String, String) {
        let schema = format!("t{}", self.schemas.fetch_add(1, Ordering::Relaxed));
        let mut c = self.admin().expect("admin session");
        c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
        (self.url(&schema), schema)
    }

    /// The store URL for `schema`.
    pub fn url(&self, schema: &str) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/postgres?options=-c%20search_path%3D{schema}",
            self.port
        )
    }

    /// A session whose tables are those of `schema`.
    pub fn session(&self, schema: &str) -> postgres::Client {
        let mut c = self.admin().expect("session");
        c.batch_execute(&format!("SET search_path = {schema}"))
            .unwrap();
        c
    }

    /// Stop the server (fast shutdown), keeping its files.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            stop_child(child);
        }
    }

    /// Start it again on the same files and port (after `stop`).
    pub fn restart(&self) {
        let bin = bin_dir().expect("checked at start");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("postgres.log"))
            .unwrap();
        let cmd = server_command(&bin, &self.dir, self.port, server_user(), log, &self.extra);
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) =
            spawn_kept(cmd).expect("postgres restarts");
        self.wait_ready().expect("postgres back");
    }
}

/// `postgres` on the cluster in `dir`, on 127.0.0.1:`port`, logging to
/// `log`, told to stop if the test process dies.
fn server_command(
    bin: &Path,
    dir: &Path,
    port: u16,
    user: Option<(u32, u32)>,
    log: std::fs::File,
    extra: &[String],
) -> Command {
    let mut cmd = Command::new(bin.join("postgres"));
    as_server_user(&mut cmd, user)
        .current_dir(dir)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // The tests kill chinwagd, never PostgreSQL: its own crash safety
        // is not under test, and skipping its fsyncs keeps a loaded
        // machine's disk for the tests that measure one.
        .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "shared_buffers=16MB", "-c", "max_connections=200"])
        .args(extra.iter().flat_map(|e| ["-c", e.as_str()]))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd
}

/// SIGINT (fast shutdown: clients are cut, the cluster closes cleanly),
/// then SIGKILL if it has not exited within the patience.
fn stop_child(mut child: std::sync::MutexGuard<'_, Child>) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
