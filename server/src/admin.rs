//! The operator's socket: a Unix domain socket, mode 0600 and checked
//! against the caller's uid, speaking JSON lines (one request object per
//! line, one answer object per line; see docs/operations.md). It lists who
//! is online, kicks, bans and unbans, deletes accounts, resets passwords,
//! takes online backups and answers a health check, on a running server.
//! It decides nothing the hub or the accounts service decides: it calls
//! them, and keeps the store's copy of the bans in step with the hub's.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::eintr;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::front::accounts::service::Accounts;
use crate::hub::bans::{canonical, Ban, MAX_BANS};
use crate::hub::{valid_name, Hub};
use crate::net::{Registry, SmallListener};
use crate::store::Store;

/// Admin connections served at once; more are closed at accept.
const AT_ONCE: usize = 4;
/// Longest request line.
pub const MAX_LINE: usize = 64 * 1024;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How long the health check waits for the store thread.
const STORE_PING: Duration = Duration::from_secs(2);
/// Longest path a Unix socket can have (sun_path, less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One request. The `cmd` field says which; names are kebab-case.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Everyone online, in every dialect.
    Who,
    /// Close `name`'s connection.
    Kick {
        name: String,
    },
    /// Ban a name or an address (exactly one), persisted, and close the
    /// matching connections.
    Ban {
        name: Option<String>,
        ip: Option<String>,
        #[serde(default)]
        reason: String,
    },
    Unban {
        name: Option<String>,
        ip: Option<String>,
    },
    /// Every ban in force.
    Bans,
    /// Delete an accounts-dialect account and everything stored about it.
    DeleteAccount {
        name: String,
    },
    ResetPassword {
        name: String,
        password: String,
    },
    /// Online copy of the database into a new file (absolute path, on the
    /// server's machine).
    Backup {
        path: PathBuf,
    },
    Health,
}

impl Request {
    /// What the log says about a request: never a password.
    fn describe(&self) -> String {
        match self {
            Request::ResetPassword { name, .. } => format!("reset-password {name}"),
            other => format!("{other:?}"),
        }
    }
}

/// What the admin commands act on.
pub struct Admin {
    pub hub: Arc<Hub>,
    pub store: Store,
    pub accounts: Option<Arc<Accounts>>,
    pub registry: Arc<Registry>,
    pub started: Instant,
}

fn fail(msg: impl Into<String>) -> Value {
    json!({ "ok": false, "error": msg.into() })
}

/// Exactly one of `name` and `ip`, as a ban.
fn ban_target(name: Option<String>, ip: Option<String>) -> Result<Ban, String> {
    match (name, ip) {
        (Some(n), None) => {
            if valid_name(&n) {
                Ok(Ban::Name(n))
            } else {
                Err(format!("{n:?} is not a valid name"))
            }
        }
        (None, Some(ip)) => ip
            .parse::<IpAddr>()
            .map(|a| Ban::Ip(canonical(a)))
            .map_err(|_| format!("{ip:?} is not an IP address")),
        _ => Err("give exactly one of \"name\" and \"ip\"".into()),
    }
}

impl Admin {
    /// Load the stored bans into the hub (at start).
    pub fn load_bans(&self) -> Result<usize, String> {
        let bans = self
            .store
            .call(|db| db.bans())
            .map_err(|_| "the store is busy".to_owned())?;
        let n = bans.len();
        self.hub
            .bans()
            .replace_all(bans.into_iter().map(|(b, _)| b));
        Ok(n)
    }

    /// Carry out one request and give its answer.
    pub fn handle(&self, req: Request) -> Value {
        log::info!("admin: {}", req.describe());
        match req {
            Request::Who => {
                let users: Vec<Value> = self
                    .hub
                    .sessions()
                    .into_iter()
                    .map(|(name, d, ip)| {
                        json!({ "name": name, "dialect": d.name(), "ip": canonical(ip).to_string() })
                    })
                    .collect();
                json!({ "ok": true, "users": users })
            }
            Request::Kick { name } => match self.hub.kick(&name) {
                Some(d) => json!({ "ok": true, "dialect": d.name() }),
                None => fail(format!("{name} is not online")),
            },
            Request::Ban { name, ip, reason } => match ban_target(name, ip) {
                Ok(ban) => self.ban(ban, reason),
                Err(e) => fail(e),
            },
            Request::Unban { name, ip } => match ban_target(name, ip) {
                Ok(ban) => self.unban(ban),
                Err(e) => fail(e),
            },
            Request::Bans => match self.store.call(|db| db.bans()) {
                Ok(bans) => {
                    let list: Vec<Value> = bans
                        .into_iter()
                        .map(|(b, reason)| match b {
                            Ban::Name(n) => json!({ "name": n, "reason": reason }),
                            Ban::Ip(ip) => json!({ "ip": ip.to_string(), "reason": reason }),
                        })
                        .collect();
                    json!({ "ok": true, "bans": list })
                }
                Err(_) => fail("the store is busy"),
            },
            Request::DeleteAccount { name } => match &self.accounts {
                None => fail("this server has no accounts service"),
                Some(a) => match a.delete_account(&name) {
                    Ok(true) => json!({ "ok": true }),
                    Ok(false) => fail(format!("no account named {name}")),
                    Err(e) => fail(e),
                },
            },
            Request::ResetPassword { name, password } => match &self.accounts {
                None => fail("this server has no accounts service"),
                Some(a) => match a.reset_password(&name, password) {
                    Ok(true) => json!({ "ok": true }),
                    Ok(false) => fail(format!("no account named {name}")),
                    Err(e) => fail(e),
                },
            },
            Request::Backup { path } => match self.store.backup(&path) {
                Ok(bytes) => {
                    log::info!(
                        "admin: backup written to {} ({bytes} bytes)",
                        path.display()
                    );
                    json!({ "ok": true, "path": path, "bytes": bytes })
                }
                Err(e) => fail(e),
            },
            Request::Health => {
                let store = self.store.ping(STORE_PING);
                json!({
                    "ok": store,
                    "error": if store { Value::Null } else { "the store thread is not responding".into() },
                    "store": if store { "ok" } else { "not responding" },
                    "connections": self.registry.len(),
                    "online": self.hub.online_count(),
                    "uptime_s": self.started.elapsed().as_secs(),
                    "version": env!("CARGO_PKG_VERSION"),
                })
            }
        }
    }

    fn ban(&self, ban: Ban, reason: String) -> Value {
        if self.hub.bans().len() >= MAX_BANS {
            return fail(format!("the ban list is full ({MAX_BANS} bans)"));
        }
        let b = ban.clone();
        let added = match self.store.call_committed(move |db| db.add_ban(&b, &reason)) {
            Ok((added, true)) => added,
            _ => return fail("the store could not record the ban"),
        };
        self.hub.bans().add(ban.clone());
        self.hub.announce_ban(&ban, true);
        let kicked = match &ban {
            Ban::Name(n) => self.hub.kick(n).map(|_| n.clone()).into_iter().collect(),
            Ban::Ip(ip) => {
                let names = self.hub.kick_ip(*ip);
                // Connections that have not logged in (or relay ends) too.
                self.registry.shutdown_from(*ip);
                names
            }
        };
        json!({ "ok": true, "new": added, "kicked": kicked })
    }

    fn unban(&self, ban: Ban) -> Value {
        let b = ban.clone();
        match self.store.call_committed(move |db| db.remove_ban(&b)) {
            Ok((removed, true)) => {
                let in_hub = self.hub.bans().remove(&ban);
                self.hub.announce_ban(&ban, false);
                if removed || in_hub {
                    json!({ "ok": true })
                } else {
                    fail("no such ban")
                }
            }
            _ => fail("the store could not remove the ban"),
        }
    }
}

/// The listening admin socket and its accept thread.
pub struct AdminSocket {
    path: PathBuf,
    listener: SmallListener,
}

impl AdminSocket {
    /// Bind `path` (mode 0600; a stale socket from a killed server is
    /// replaced, a live one is an error) and serve `admin` on it.
    pub fn start(path: &Path, admin: Arc<Admin>) -> io::Result<AdminSocket> {
        let listener = bind_owner_only(path)?;
        let listener = SmallListener::start(
            "cw-admin",
            AT_ONCE,
            move || listener.accept().map(|(s, _)| s),
            caller_allowed,
            |mut s: UnixStream| {
                let _ = writeln!(s, "{}", fail("too many admin connections"));
            },
            move |s| serve(s, &admin),
        )?;
        log::info!("admin socket at {}", path.display());
        Ok(AdminSocket {
            path: path.to_owned(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stop(&mut self) {
        let path = self.path.clone();
        self.listener.stop(|| {
            let _ = UnixStream::connect(&path);
        });
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Only the server's own user (and root) may use the socket; the file mode
/// already says so, and this holds even if someone loosens it.
fn caller_allowed(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which lives
    // on this stack frame; the descriptor is the stream's own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let ok = rc == 0 && (cred.uid == me || cred.uid == 0);
    if !ok {
        log::warn!(
            "admin: refused a connection from uid {} (pid {})",
            cred.uid,
            cred.pid
        );
    }
    ok
}

fn serve(stream: UnixStream, admin: &Admin) {
    serve_lines(&stream, IDLE, |text| {
        match serde_json::from_str::<Request>(text) {
            Ok(req) => admin.handle(req),
            Err(e) => fail(format!("bad request: {e}")),
        }
        .to_string()
    });
}

/// One admin connection: each request line `answer`ed with one line, until
/// the peer closes, sends a line longer than [`MAX_LINE`], or makes no
/// progress for `idle` either way. The idle time counts from the last
/// progress however many signals interrupt the wait (each would restart
/// SO_RCVTIMEO or SO_SNDTIMEO whole: see chinwag_proto::eintr).
fn serve_lines(stream: &UnixStream, idle: Duration, mut answer: impl FnMut(&str) -> String) {
    let _ = stream.set_read_timeout(Some(idle));
    let _ = stream.set_write_timeout(Some(idle));
    let arm_read = |left| stream.set_read_timeout(Some(left));
    let arm_write = |left| stream.set_write_timeout(Some(left));
    let mut pending = Vec::new();
    let mut closed = false;
    loop {
        let line = loop {
            if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                break pending.drain(..=end).collect::<Vec<u8>>();
            }
            if pending.len() > MAX_LINE || closed {
                // A last line without its newline is served, as one with it.
                break std::mem::take(&mut pending);
            }
            let mut chunk = [0u8; 4096];
            match eintr::retry_within(idle, arm_read, || (&*stream).read(&mut chunk)) {
                Ok(0) => closed = true,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                Err(_) => return,
            }
        };
        if line.is_empty() {
            return;
        }
        let reply = if line.len() > MAX_LINE {
            fail("request line too long").to_string()
        } else {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            answer(text)
        };
        let reply = format!("{reply}\n");
        let sent =
            eintr::write_all_within(idle, arm_write, |b| (&*stream).write(b), reply.as_bytes());
        if sent.is_err() || line.len() > MAX_LINE {
            return;
        }
    }
}

/// Bind the socket so that it is never reachable with a looser mode: it is
/// bound inside a fresh 0700 directory, made 0600, then renamed into place.
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    let too_long = |p: &Path| p.as_os_str().len() > MAX_SOCKET_PATH;
    if too_long(path) {
        return Err(io::Error::other(format!(
            "admin socket path {} is longer than {MAX_SOCKET_PATH} bytes; set admin_socket to a shorter path",
            path.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::other(format!(
                "admin socket {} is in use by another process (another chinwagd on this database?)",
                path.display()
            )))
            }
            Err(_) => {
                log::info!("removing stale admin socket {}", path.display());
                std::fs::remove_file(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot remove the stale admin socket {}: {e}",
                            path.display()
                        ),
                    )
                })?;
            }
        },
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket; set admin_socket elsewhere",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // Unique per process and per bind (tests start several servers at once).
    static BINDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BINDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let private = parent.join(format!(".chinwagd-admin-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    // The one step that needs the directory: its failure (no such
    // directory, no write permission) names the path and the key, as
    // every start-up error does, not a bare "No such file or directory".
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "admin socket {}: cannot create it in {}: {e} (set by admin_socket)",
                    path.display(),
                    parent.display()
                ),
            )
        })?;
    let tmp = private.join("s");
    let bound = (|| {
        if too_long(&tmp) {
            return Err(io::Error::other(format!(
                "admin socket directory {} is too deep for a socket path; set admin_socket to a shorter path",
                parent.display()
            )));
        }
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound.map_err(|e| io::Error::new(e.kind(), format!("admin socket {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::storm::{catch_without_restart, pester};

    /// How long the signals may last: far longer than any time-out here.
    const STORM: Duration = Duration::from_secs(30);

    /// `serve_lines` with idle time-out `idle` on a thread of its own,
    /// answering "got" and the request; and the client's end.
    fn served(idle: Duration) -> (std::thread::JoinHandle<()>, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server =
            std::thread::spawn(move || serve_lines(&ours, idle, |text| format!("got {text}")));
        (server, theirs)
    }

    /// How long `serve` took on a thread of its own while SIGUSR2, caught
    /// without SA_RESTART, hit that thread about every millisecond (for
    /// [`STORM`] at most). SIGUSR2 goes to one thread at a time only.
    fn under_storm(serve: impl FnOnce() + Send + 'static) -> Duration {
        catch_without_restart(libc::SIGUSR2);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let server = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
            serve();
        });
        let tid = tid_rx.recv().unwrap();
        pester(tid, libc::SIGUSR2, STORM, || !server.is_finished());
        let took = started.elapsed();
        server.join().unwrap();
        took
    }

    #[test]
    fn lines_are_answered_one_by_one_and_a_last_line_without_newline_too() {
        let (server, mut c) = served(Duration::from_secs(60));
        c.write_all(b"one\n\n  two  \nthree").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut said = String::new();
        c.read_to_string(&mut said).unwrap();
        assert_eq!(said, "got one\ngot two\ngot three\n");
        server.join().unwrap();
    }

    #[test]
    fn a_line_over_the_limit_is_refused_and_ends_the_connection() {
        let (server, c) = served(Duration::from_secs(60));
        let writer = {
            let mut c = c.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = c.write_all(&vec![b'x'; MAX_LINE + 10]);
            })
        };
        let mut said = String::new();
        (&c).read_to_string(&mut said).unwrap();
        assert!(said.contains("request line too long"), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        server.join().unwrap();
        writer.join().unwrap();
    }

    /// A connection that sends nothing is closed after the idle time-out
    /// even while signals keep interrupting the wait: std's `read_until`
    /// retried each EINTR with SO_RCVTIMEO's whole time again, so the
    /// connection stayed for as long as the signals lasted. Compared with
    /// the storm's length, not a few seconds: a loaded machine may be slow
    /// to run the thread at all.
    #[test]
    fn an_idle_connection_is_closed_in_time_under_a_stream_of_signals() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let took =
            under_storm(move || serve_lines(&ours, Duration::from_millis(300), |t| t.to_owned()));
        assert!(
            took < STORM,
            "a 300 ms idle time-out took {took:?}: as long as the signals lasted"
        );
    }

    /// An answer to a client that never reads fails after the idle time-out
    /// under the same storm (std's `write_all` restarted SO_SNDTIMEO).
    #[test]
    fn an_answer_nobody_reads_fails_in_time_under_a_stream_of_signals() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // One request whose answer is far more than the socket buffers hold.
        theirs.write_all(b"big\n").unwrap();
        let took = under_storm(move || {
            serve_lines(&ours, Duration::from_millis(300), |_| "x".repeat(64 << 20))
        });
        assert!(
            took < STORM,
            "a 300 ms write time-out took {took:?}: as long as the signals lasted"
        );
    }
}
