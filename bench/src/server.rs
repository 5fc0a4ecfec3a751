//! The server under test: either a chinwagd this program starts (found next
//! to its own executable) or an external one given by address and pid. Also
//! the /proc readings (RSS, threads, CPU time) and the descriptor limit.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Target {
    pub addr: SocketAddr,
    /// The accounts dialect's listener, when known.
    pub accounts: Option<SocketAddr>,
    /// The babel dialect's listener, when known.
    pub babel: Option<SocketAddr>,
    pub pid: Option<u32>,
    child: Option<Child>,
}

/// How to reach a server for one workload.
#[derive(Clone, Debug)]
pub enum Spec {
    /// Start our own chinwagd for each workload.
    Spawn {
        binary: PathBuf,
        max_connections: usize,
    },
    External {
        addr: SocketAddr,
        accounts: Option<SocketAddr>,
        pid: Option<u32>,
    },
}

impl Spec {
    pub fn from_args(
        addr: Option<SocketAddr>,
        accounts: Option<SocketAddr>,
        pid: Option<u32>,
        server: Option<PathBuf>,
    ) -> Result<Spec, String> {
        if let Some(addr) = addr {
            for a in std::iter::once(addr).chain(accounts) {
                if !a.ip().is_loopback() {
                    return Err(format!(
                        "{a}: the benchmark only talks to loopback addresses"
                    ));
                }
            }
            return Ok(Spec::External {
                addr,
                accounts,
                pid,
            });
        }
        let binary = match server {
            Some(p) => p,
            None => {
                let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                me.with_file_name("chinwagd")
            }
        };
        if !binary.exists() {
            return Err(format!(
                "{} not found; build it with `cargo build --release -p chinwagd -p chinwag-bench`, \
                 pass --server PATH, or target a running server with --addr HOST:PORT [--pid PID]",
                binary.display()
            ));
        }
        Ok(Spec::Spawn {
            binary,
            max_connections: 19_000,
        })
    }

    pub fn start(&self) -> Result<Target, String> {
        self.start_with_db(None)
    }

    /// Start (or attach to) the server; a spawned one keeps its store in
    /// `db` (a real file, so commits really reach the disk) or in memory.
    pub fn start_with_db(&self, db: Option<&std::path::Path>) -> Result<Target, String> {
        match self {
            Spec::External {
                addr,
                accounts,
                pid,
            } => Ok(Target {
                addr: *addr,
                accounts: *accounts,
                babel: None,
                pid: *pid,
                child: None,
            }),
            Spec::Spawn {
                binary,
                max_connections,
            } => {
                let port = free_port()?;
                let accounts_port = free_port()?;
                let babel_port = free_port()?;
                let mut cmd = Command::new(binary);
                cmd.args([
                    "--bind",
                    "127.0.0.1",
                    "--chatos-port",
                    &port.to_string(),
                    "--babel-port",
                    &babel_port.to_string(),
                    "--rooms-port",
                    "0",
                    "--registrations-per-minute",
                    "100000",
                    "--accounts-port",
                    &accounts_port.to_string(),
                    "--db",
                ])
                .arg(db.map_or_else(|| ":memory:".into(), |p| p.as_os_str().to_owned()))
                .args(["--max-connections", &max_connections.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
                if std::env::var_os("RUST_LOG").is_none() {
                    cmd.env("RUST_LOG", "warn");
                }
                let child = cmd
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
                let pid = child.id();
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let mut t = Target {
                    addr,
                    accounts: Some(([127, 0, 0, 1], accounts_port).into()),
                    babel: Some(([127, 0, 0, 1], babel_port).into()),
                    pid: Some(pid),
                    child: Some(child),
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        break;
                    }
                    if let Some(c) = t.child.as_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            t.child = None;
                            return Err(format!("chinwagd exited at start-up: {status}"));
                        }
                    }
                    if Instant::now() > deadline {
                        return Err("chinwagd did not accept connections within 10 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(t)
            }
        }
    }
}

impl Target {
    pub fn stats(&self) -> Option<ProcStats> {
        self.pid.and_then(proc_stats)
    }

    /// Stop a server we started: SIGTERM, then SIGKILL if it lingers.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    eprintln!("chinwag-bench: chinwagd did not stop on SIGTERM, killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bind 127.0.0.1:0, read the port, let it go.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub threads: u64,
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut st = ProcStats::default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            st.rss_kib = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Threads:") {
            st.threads = v.trim().parse().ok()?;
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    st.cpu = Duration::from_micros((utime + stime) * 1_000_000 / hz);
    Some(st)
}

/// CPU time used by this process so far.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raise the soft descriptor limit to the hard one; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

/// Busy CPU time of the whole machine so far (all cores, from /proc/stat).
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(busy * 1_000_000 / hz))
}
