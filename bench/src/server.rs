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
    /// The rooms dialect's UDP socket, when known.
    pub rooms: Option<SocketAddr>,
    /// The metrics endpoint, when the server was started with one.
    pub metrics: Option<SocketAddr>,
    pub pid: Option<u32>,
    child: Option<Child>,
    /// The server's peak RSS and threads since it started (or since this
    /// workload attached to it).
    peak: Option<PeakSampler>,
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

/// What a workload asks of the server it starts.
#[derive(Default)]
pub struct Start<'a> {
    /// Keep the store in this file (a real file, so commits reach the
    /// disk); in memory otherwise.
    pub db: Option<&'a std::path::Path>,
    /// More chinwagd flags (`--spare-threads 0`, `--rooms-workers 4`).
    pub flags: Vec<String>,
    /// Serve /metrics on a free loopback port.
    pub metrics: bool,
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
            max_connections: 12_000,
        })
    }

    pub fn start(&self) -> Result<Target, String> {
        self.start_with(Start::default())
    }

    pub fn start_with_db(&self, db: Option<&std::path::Path>) -> Result<Target, String> {
        self.start_with(Start {
            db,
            ..Start::default()
        })
    }

    /// Start (or attach to) the server. An external server is used as it
    /// is: `how` is then ignored.
    pub fn start_with(&self, how: Start<'_>) -> Result<Target, String> {
        match self {
            Spec::External {
                addr,
                accounts,
                pid,
            } => Ok(Target {
                addr: *addr,
                accounts: *accounts,
                babel: None,
                rooms: None,
                metrics: None,
                pid: *pid,
                child: None,
                peak: pid.map(PeakSampler::start),
            }),
            Spec::Spawn {
                binary,
                max_connections,
            } => spawn_retrying(binary, *max_connections, &how, Ports::fresh),
        }
    }
}

/// Ports for one start of chinwagd.
#[derive(Clone, Copy, Debug)]
struct Ports {
    chatos: u16,
    accounts: u16,
    babel: u16,
    rooms: u16,
    metrics: u16,
}

impl Ports {
    /// Ports the kernel just gave out (and took back): free a moment ago.
    fn fresh() -> Result<Ports, String> {
        Ok(Ports {
            chatos: free_port()?,
            accounts: free_port()?,
            babel: free_port()?,
            rooms: free_udp_port()?,
            metrics: free_port()?,
        })
    }
}

/// Why one start failed.
enum StartError {
    /// chinwagd ended before it accepted: most likely one of its ports was
    /// taken between `Ports::fresh` and its bind (other processes, e.g.
    /// tests running in parallel, bind port 0 too). Worth another try.
    ExitedAtStart(String),
    Other(String),
}

/// Starts before giving up when chinwagd keeps ending at start-up.
const START_ATTEMPTS: usize = 5;

/// Start chinwagd on ports from `ports`, again on new ones when it ends at
/// start-up (a port taken meanwhile), up to [`START_ATTEMPTS`] times.
fn spawn_retrying(
    binary: &std::path::Path,
    max_connections: usize,
    how: &Start<'_>,
    mut ports: impl FnMut() -> Result<Ports, String>,
) -> Result<Target, String> {
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        match spawn_once(binary, max_connections, how, ports()?) {
            Ok(t) => return Ok(t),
            Err(StartError::ExitedAtStart(e)) => last = e,
            Err(StartError::Other(e)) => return Err(e),
        }
    }
    Err(format!("{last} ({START_ATTEMPTS} attempts on fresh ports)"))
}

fn spawn_once(
    binary: &std::path::Path,
    max_connections: usize,
    how: &Start<'_>,
    ports: Ports,
) -> Result<Target, StartError> {
    let port = ports.chatos;
    let accounts_port = ports.accounts;
    let babel_port = ports.babel;
    let rooms_port = ports.rooms;
    let metrics_port = how.metrics.then_some(ports.metrics);
    let mut cmd = Command::new(binary);
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--chatos-port",
        &port.to_string(),
        "--babel-port",
        &babel_port.to_string(),
        "--rooms-port",
        &rooms_port.to_string(),
        "--registrations-per-minute",
        "100000",
        "--accounts-port",
        &accounts_port.to_string(),
        "--db",
    ])
    .arg(
        how.db
            .map_or_else(|| ":memory:".into(), |p| p.as_os_str().to_owned()),
    )
    .args(["--max-connections", &max_connections.to_string()]);
    if let Some(m) = metrics_port {
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{m}")]);
    }
    cmd.args(&how.flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let child = cmd
        .spawn()
        .map_err(|e| StartError::Other(format!("cannot start {}: {e}", binary.display())))?;
    let pid = child.id();
    let local = |p: u16| -> SocketAddr { ([127, 0, 0, 1], p).into() };
    let addr = local(port);
    let mut t = Target {
        addr,
        accounts: Some(local(accounts_port)),
        babel: Some(local(babel_port)),
        rooms: Some(local(rooms_port)),
        metrics: metrics_port.map(local),
        pid: Some(pid),
        child: Some(child),
        // Started once chinwagd answers: until it has exec'd,
        // the child's RSS is a copy of this program's.
        peak: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Some(c) = t.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                t.child = None;
                return Err(StartError::ExitedAtStart(format!(
                    "chinwagd exited at start-up: {status}"
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(StartError::Other(
                "chinwagd did not accept connections within 10 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    t.peak = Some(PeakSampler::start(pid));
    Ok(t)
}

impl Target {
    pub fn stats(&self) -> Option<ProcStats> {
        self.pid.and_then(proc_stats)
    }

    /// Its RSS and threads only, cheaply (see [`proc_rss_threads`]).
    pub fn rss_threads(&self) -> Option<ProcStats> {
        self.pid.and_then(proc_rss_threads)
    }

    /// CPU time this process spent sampling the server's memory (a thread
    /// of this process, not the server's work).
    pub fn sampler_cpu(&self) -> Duration {
        self.peak.as_ref().map_or(Duration::ZERO, PeakSampler::cpu)
    }

    /// The server's peak RSS and threads so far in this workload.
    pub fn peak(&self) -> Option<ProcStats> {
        self.peak.as_ref().and_then(|p| p.peak())
    }

    /// Stop a server we started: SIGTERM, then SIGKILL if it lingers.
    pub fn stop(&mut self) {
        self.peak.take();
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

fn free_udp_port() -> Result<u16, String> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    s.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// GET `path` from the server's metrics endpoint; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => Err("metrics: no body".into()),
    }
}

/// The value of one sample in a Prometheus text page: the first line that
/// starts with `name` (labels included, as written).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// A thread that reads the server's RSS and thread count every 10 ms
/// while the server runs: the peaks of a whole workload, logins included.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::Mutex<Option<ProcStats>>>,
    /// CPU time the sampling thread has used (ns): a figure of this
    /// process's own CPU (a call's) leaves it out.
    cpu_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakSampler {
    pub fn start(pid: u32) -> PeakSampler {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::Mutex::new(None::<ProcStats>));
        let cpu_ns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop2, peak2, cpu2) = (stop.clone(), peak.clone(), cpu_ns.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                if let Some(s) = proc_rss_threads(pid) {
                    let mut guard = peak2.lock().unwrap_or_else(|e| e.into_inner());
                    let p = guard.get_or_insert(s);
                    p.rss_kib = p.rss_kib.max(s.rss_kib);
                    p.threads = p.threads.max(s.threads);
                }
                cpu2.store(thread_cpu().as_nanos() as u64, Ordering::Release);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        PeakSampler {
            stop,
            peak,
            cpu_ns,
            thread: Some(thread),
        }
    }

    /// CPU time the sampling thread has used so far (as of its last
    /// sample).
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The peaks so far.
    pub fn peak(&self) -> Option<ProcStats> {
        *self.peak.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line of /proc/meminfo, in KiB.
pub fn meminfo_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// The server's memory by kind, from /proc/PID/smaps: the resident KiB of
/// its connection-thread stacks (anonymous mappings of exactly
/// `stack_kib`), how many such stacks, and all other anonymous memory
/// (the heap, glibc's arenas, other threads' stacks).
pub struct MemSplit {
    pub stacks: u64,
    pub stack_kib: u64,
    pub other_anon_kib: u64,
}

pub fn mem_split(pid: u32, stack_kib: u64) -> Option<MemSplit> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut stacks, mut stack_rss, mut other) = (0u64, 0u64, 0u64);
    let mut size = 0u64;
    let mut anon = false;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // "start-end perms offset dev inode [path]": anonymous if no path.
            anon = line.split_whitespace().nth(5).is_none();
            continue;
        }
        let kib = || -> u64 { f.clone().next().and_then(|v| v.parse().ok()).unwrap_or(0) };
        match first {
            "Size:" => size = kib(),
            "Rss:" if anon => {
                if size == stack_kib {
                    stacks += 1;
                    stack_rss += kib();
                } else {
                    other += kib();
                }
            }
            _ => {}
        }
    }
    Some(MemSplit {
        stacks,
        stack_kib: stack_rss,
        other_anon_kib: other,
    })
}

/// Pages of memory the kernel's TCP sockets use (all of them, system-wide),
/// in KiB: the `mem` figure of /proc/net/sockstat.
pub fn tcp_socket_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            return it.next()?.parse::<u64>().ok().map(|pages| pages * 4);
        }
    }
    None
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub threads: u64,
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
}

/// RSS and threads only (`cpu` zero): /proc/PID/status, which costs the
/// same whatever the server's thread count. /proc/PID/stat sums every
/// thread's counters: 1.8 ms a read with 10,000 threads, which at the
/// peak sampler's 100 reads a second took a fifth of a core from the
/// workload it measured.
pub fn proc_rss_threads(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut st = ProcStats::default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            st.rss_kib = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Threads:") {
            st.threads = v.trim().parse().ok()?;
        }
    }
    Some(st)
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let mut st = proc_rss_threads(pid)?;
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

/// CPU time used by the calling thread so far.
pub fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the struct we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// chinwagd as `cargo test --workspace` builds it: in the profile
    /// directory above this test's deps/.
    fn chinwagd() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let p = exe.parent()?.parent()?.join("chinwagd");
        p.exists().then_some(p)
    }

    #[test]
    fn a_port_taken_before_chinwagd_binds_it_costs_a_retry_not_the_workload() {
        let Some(binary) = chinwagd() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("chinwagd is not built beside this test; run `cargo test --workspace`");
            }
            eprintln!("SKIPPED: chinwagd not built; run `cargo test --workspace`");
            return;
        };
        // Another process took the chatos port after it was found free:
        // here as the local end of a connection (as an outgoing connection
        // of a test running in parallel would), which no listener answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut calls = 0;
        let t = spawn_retrying(&binary, 100, &Start::default(), || {
            calls += 1;
            let fresh = Ports::fresh()?;
            Ok(if calls == 1 {
                Ports {
                    chatos: taken_port,
                    ..fresh
                }
            } else {
                fresh
            })
        })
        .unwrap_or_else(|e| panic!("no retry on fresh ports: {e}"));
        assert_eq!(calls, 2, "one failed start, then one on fresh ports");
        assert_ne!(t.addr.port(), taken_port);
        TcpStream::connect(t.addr).expect("the retried chinwagd accepts");
        drop((taken, listener));
    }
}
