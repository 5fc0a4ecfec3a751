//! The server under test: either a chinwagd this program starts (found next
//! to its own executable) or an external one given by address and pid. Also
//! the /proc readings (RSS, threads, CPU time) and the descriptor limit.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{map_range, syscall_sp, tasks_named};

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
            } => spawn_once(binary, *max_connections, &how, Ports::default()),
        }
    }
}

/// Ports asked of chinwagd. Every start asks for 0 on each: chinwagd binds
/// what the system gives and says which in its `listening:` line, so no
/// port is found free here and then rebound there, and nothing else
/// listening on a port can be taken for it. (Tests ask for a given one.)
#[derive(Clone, Copy, Debug, Default)]
struct Ports {
    chatos: u16,
    accounts: u16,
    babel: u16,
    rooms: u16,
    metrics: u16,
}

/// Start chinwagd and wait for its own report of what it bound (see
/// `common::Chinwagd::try_spawn`): Err with its last words if it ends or
/// stays silent first.
fn spawn_once(
    binary: &std::path::Path,
    max_connections: usize,
    how: &Start<'_>,
    ports: Ports,
) -> Result<Target, String> {
    let mut cmd = Command::new(binary);
    cmd.args(["--bind", "127.0.0.1"])
        .args(["--chatos-port", &ports.chatos.to_string()])
        .args(["--babel-port", &ports.babel.to_string()])
        .args(["--rooms-port", &ports.rooms.to_string()])
        .args(["--accounts-port", &ports.accounts.to_string()])
        .args(["--registrations-per-minute", "100000", "--db"])
        .arg(
            how.db
                .map_or_else(|| ":memory:".into(), |p| p.as_os_str().to_owned()),
        )
        .args(["--max-connections", &max_connections.to_string()]);
    if how.metrics {
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{}", ports.metrics)]);
    }
    cmd.args(&how.flags).stdin(Stdio::null());
    // Its warnings reach our stderr as they did when it inherited it.
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let c = crate::common::Chinwagd::try_spawn(&mut cmd, &log, true)
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if how.metrics && c.metrics.is_none() {
        return Err("chinwagd did not report its metrics endpoint".into());
    }
    let pid = c.child.id();
    Ok(Target {
        addr: c.chatos,
        accounts: Some(c.accounts),
        babel: Some(c.babel),
        rooms: Some(c.rooms),
        metrics: c.metrics,
        pid: Some(pid),
        child: Some(c.child),
        // chinwagd has exec'd and bound its sockets: its RSS is its own.
        peak: Some(PeakSampler::start(pid)),
    })
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

/// GET `path` from the server's metrics endpoint; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match crate::wait::read(&s, &mut buf).map_err(|e| e.to_string())? {
            0 => break,
            n => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
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
/// its connection-thread stacks (anonymous mappings of the stack
/// mapping's size, see [`stack_map_bytes`]), how many such stacks, and all
/// other anonymous memory (the heap, the allocator's arenas, other
/// threads' stacks).
pub struct MemSplit {
    pub stacks: u64,
    pub stack_kib: u64,
    pub other_anon_kib: u64,
    /// The size of one connection thread's stack mapping, guard excluded.
    pub map_kib: u64,
}

pub fn mem_split(pid: u32, stack_kib: u64) -> Option<MemSplit> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let map_kib = stack_map_bytes(&vmas(&maps), stack_kib * 1024) / 1024;
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
                if size == map_kib {
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
        map_kib,
    })
}

/// One line of /proc/PID/maps.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Vma {
    lo: u64,
    hi: u64,
    /// "rw-p" with no path: a thread stack's usable part, or heap.
    rw_anon: bool,
    /// "---p" with no path: a guard.
    guard: bool,
}

fn vmas(maps: &str) -> Vec<Vma> {
    maps.lines()
        .filter_map(|line| {
            let (lo, hi) = map_range(line)?;
            let mut f = line.split_whitespace();
            let perms = f.nth(1)?;
            let anon = f.nth(3).is_none();
            Some(Vma {
                lo,
                hi,
                rw_anon: anon && perms == "rw-p",
                guard: anon && perms == "---p",
            })
        })
        .collect()
}

/// The size of a connection thread's stack mapping (its usable part, the
/// guard below it excluded): the commonest size of a read-write anonymous
/// mapping right above a guard, from `stack` (the size asked for) to 64
/// KiB more; `stack` when there is none. glibc maps exactly the size
/// asked for, its thread block and TLS inside it; musl maps its thread
/// block, TLS and key slots on top of it (one page more for chinwagd).
fn stack_map_bytes(vmas: &[Vma], stack: u64) -> u64 {
    let mut sizes = std::collections::BTreeMap::<u64, usize>::new();
    for w in vmas.windows(2) {
        let (below, v) = (w[0], w[1]);
        let size = v.hi - v.lo;
        if below.guard
            && below.hi == v.lo
            && v.rw_anon
            && (stack..=stack + (64 << 10)).contains(&size)
        {
            *sizes.entry(size).or_default() += 1;
        }
    }
    sizes
        .into_iter()
        .max_by_key(|&(size, n)| (n, std::cmp::Reverse(size)))
        .map_or(stack, |(size, _)| size)
}

/// The top of the thread stack holding `sp`: the end of its mapping, or,
/// where the kernel merged the stack with a read-write anonymous mapping
/// just above it (a stack has its guard below, nothing above: seen with
/// musl, whose allocator maps small regions next to the stacks), the
/// stack's own end, a stack mapping's size (`map`) above its guard.
fn stack_top(vmas: &[Vma], sp: u64, map: u64) -> Option<u64> {
    let i = vmas.iter().position(|v| (v.lo..v.hi).contains(&sp))?;
    let v = vmas[i];
    let above_guard = i > 0 && vmas[i - 1].guard && vmas[i - 1].hi == v.lo;
    if above_guard && v.hi - v.lo > map && sp < v.lo + map {
        Some(v.lo + map)
    } else {
        Some(v.hi)
    }
}

/// How deep the stacks of a process's threads named `comm` reach while
/// they wait in a system call: for each, the bytes from the top of the
/// mapping holding its stack pointer (the one /proc/PID/task/TID/syscall
/// reports for the call) down to that pointer (see [`stack_top`]). That
/// includes the C library's thread block and static TLS at the top
/// (README, "idle memory"): 4,864 bytes with glibc, 1,920 with musl. Threads
/// running or not in a system call are skipped. The deepest and how many
/// were read; None when none could be.
pub fn blocked_stack_depth(pid: u32, comm: &str, stack_kib: u64) -> Option<StackDepth> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let vmas = vmas(&maps);
    let map = stack_map_bytes(&vmas, stack_kib * 1024);
    let mut depth = StackDepth::default();
    for dir in tasks_named(pid, comm) {
        let Some(sp) = std::fs::read_to_string(dir.join("syscall"))
            .ok()
            .and_then(|t| syscall_sp(&t))
        else {
            continue;
        };
        if let Some(end) = stack_top(&vmas, sp, map) {
            depth.threads += 1;
            depth.max_bytes = depth.max_bytes.max(end - sp);
        }
    }
    (depth.threads > 0).then_some(depth)
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StackDepth {
    pub threads: u64,
    pub max_bytes: u64,
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
    use std::io::Write;
    use std::net::TcpListener;

    /// chinwagd as `cargo test --workspace` builds it: in the profile
    /// directory above this test's deps/. None (the test skips) when it is
    /// not built, except under CI, where that fails the test.
    fn chinwagd() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let p = exe.parent()?.parent()?.join("chinwagd");
        if p.exists() {
            return Some(p);
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chinwagd is not built beside this test; run `cargo test --workspace`");
        }
        eprintln!("SKIPPED: chinwagd not built; run `cargo test --workspace`");
        None
    }

    #[test]
    fn a_port_another_process_listens_on_is_never_taken_for_chinwagd() {
        let Some(binary) = chinwagd() else {
            return;
        };
        // An impostor listens on the chatos port chinwagd is asked for:
        // chinwagd cannot bind it, and a probe of the port would be
        // answered by the impostor.
        let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = impostor.local_addr().unwrap().port();
        let ports = Ports {
            chatos: taken,
            ..Ports::default()
        };
        match spawn_once(&binary, 100, &Start::default(), ports) {
            Ok(t) => panic!(
                "the impostor on {} was taken for chinwagd (pid {:?})",
                t.addr, t.pid
            ),
            Err(e) => assert!(
                e.contains("exited at start-up") && e.contains("chatos"),
                "the reason is chinwagd's own, naming the listener: {e}"
            ),
        }
    }

    #[test]
    fn the_stack_pointer_is_read_only_from_a_thread_in_a_system_call() {
        let in_call = "202 0x7f3798005748 0x89 0xffffffff 0x0 0x0 0xffffffff \
                       0x7f37c02799a8 0x7f37c25cc829\n";
        assert_eq!(syscall_sp(in_call), Some(0x7f37c02799a8));
        assert_eq!(syscall_sp("-1 0x7ffc370ce328 0x559c4cd6e608\n"), None);
        assert_eq!(syscall_sp("running\n"), None);
        assert_eq!(syscall_sp(""), None);
        assert_eq!(
            map_range("7f3781b4d000-7f3781b6d000 rw-p 00000000 00:00 0"),
            Some((0x7f3781b4d000, 0x7f3781b6d000))
        );
    }

    /// /proc/PID/maps lines: a guard and the stack above it.
    fn stack_lines(lo: u64, guard: u64, size: u64) -> String {
        format!(
            "{:x}-{:x} ---p 00000000 00:00 0\n{:x}-{:x} rw-p 00000000 00:00 0\n",
            lo,
            lo + guard,
            lo + guard,
            lo + guard + size
        )
    }

    #[test]
    fn the_stack_mapping_size_is_told_apart_for_glibc_and_musl_and_merged_stacks_end_where_theirs_does(
    ) {
        const K: u64 = 1024;
        let heap = "55d0c0a00000-55d0c0b00000 rw-p 00000000 00:00 0 [heap]\n";
        // glibc: a 4 KiB guard, 128 KiB mapped for a 128 KiB stack.
        let glibc: String = (0..3)
            .map(|i| stack_lines(0x7f00_0000_0000 + i * 0x40000, 4 * K, 128 * K))
            .collect();
        let v = vmas(&format!("{heap}{glibc}"));
        assert_eq!(stack_map_bytes(&v, 128 * K), 128 * K);
        // musl: an 8 KiB guard, 132 KiB (thread block, TLS and key slots
        // on top); the lowest stack merged with 16 KiB of heap above it.
        let mut musl = String::new();
        let lo = 0x7f10_0000_0000u64;
        musl += &format!(
            "{:x}-{:x} ---p 00000000 00:00 0\n{:x}-{:x} rw-p 00000000 00:00 0\n",
            lo,
            lo + 8 * K,
            lo + 8 * K,
            lo + 8 * K + 148 * K
        );
        for i in 1..4 {
            musl += &stack_lines(lo + i * 0x40000, 8 * K, 132 * K);
        }
        musl += "7f2000000000-7f2000001000 r--p 00000000 08:01 42 /usr/lib/x\n";
        let v = vmas(&musl);
        assert_eq!(stack_map_bytes(&v, 128 * K), 132 * K);
        // A thread of the merged stack 4,232 bytes below its top.
        let top = lo + 8 * K + 132 * K;
        assert_eq!(stack_top(&v, top - 4232, 132 * K), Some(top));
        // One of an ordinary stack: the mapping's end.
        let top1 = lo + 0x40000 + 8 * K + 132 * K;
        assert_eq!(stack_top(&v, top1 - 100, 132 * K), Some(top1));
        // A pointer into the merged heap part is not taken for the stack's.
        assert_eq!(
            stack_top(&v, top + 100, 132 * K),
            Some(lo + 8 * K + 148 * K)
        );
        assert_eq!(stack_top(&v, 1, 132 * K), None);
        // No stack of a plausible size: the size asked for.
        assert_eq!(stack_map_bytes(&vmas(heap), 128 * K), 128 * K);
    }

    /// A thread of this process blocked in `recv` with a known buffer on
    /// its stack is found by name, and its depth, counted from the top,
    /// covers that buffer and not much more.
    #[test]
    fn a_blocked_thread_s_stack_depth_counts_what_it_holds_on_its_stack() {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        const BUF: usize = 16 * 1024;
        let pid = std::process::id();
        let reader = std::thread::Builder::new()
            .name("cw-depth-test".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut buf = [0u8; BUF];
                let n = (&server).read(std::hint::black_box(&mut buf)).unwrap();
                n + buf[0] as usize
            })
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Until the reader waits in recvfrom (not in its thread start).
        let recvfrom = libc::SYS_recvfrom.to_string();
        let in_recv = || {
            tasks_named(pid, "cw-depth-test").iter().any(|dir| {
                let call = std::fs::read_to_string(dir.join("syscall")).unwrap_or_default();
                call.split_whitespace().next() == Some(recvfrom.as_str())
            })
        };
        while !in_recv() {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never blocked"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let depth = blocked_stack_depth(pid, "cw-depth-test", 128).expect("the reader is found");
        assert_eq!(depth.threads, 1);
        assert!(
            (BUF as u64..2 * BUF as u64).contains(&depth.max_bytes),
            "depth {} with a {BUF}-byte buffer on its 128 KiB stack",
            depth.max_bytes
        );
        (&client).write_all(b"x").unwrap();
        assert_eq!(reader.join().unwrap(), 1 + b'x' as usize);
        assert_eq!(blocked_stack_depth(pid, "cw-depth-test", 128), None);
    }

    /// The inodes of the sockets `pid` holds open.
    fn socket_inodes(pid: u32) -> Vec<u64> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|l| {
                let l = l.to_str()?.to_owned();
                l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect()
    }

    /// The inode of the socket bound to 127.0.0.1:`port` in `table`
    /// (/proc/net/tcp or udp), listening (TCP) or unconnected (UDP).
    fn bound_inode(table: &str, port: u16) -> Option<u64> {
        let text = std::fs::read_to_string(table).unwrap();
        let local = format!("0100007F:{port:04X}");
        text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && matches!(f.get(3), Some(&"0A") | Some(&"07")))
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
    }

    #[test]
    fn a_port_taken_before_chinwagd_starts_costs_nothing_every_address_is_its_own() {
        let Some(binary) = chinwagd() else {
            return;
        };
        // Ports other processes hold (as a test running in parallel would):
        // a listener, and the local end of a connection. The bench used to
        // find ports free, let them go and ask chinwagd for them; one taken
        // meanwhile cost a restart, or was taken for chinwagd.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let held = [
            listener.local_addr().unwrap().port(),
            taken.local_addr().unwrap().port(),
        ];
        let spec = Spec::Spawn {
            binary,
            max_connections: 100,
        };
        let t = spec
            .start_with(Start {
                metrics: true,
                ..Start::default()
            })
            .unwrap_or_else(|e| panic!("chinwagd starts at once: {e}"));
        let pid = t.pid.unwrap();
        let own = socket_inodes(pid);
        let tcp = [
            t.addr,
            t.accounts.unwrap(),
            t.babel.unwrap(),
            t.metrics.unwrap(),
        ];
        for a in tcp {
            assert!(!held.contains(&a.port()), "{a} is held by this test");
            let inode = bound_inode("/proc/net/tcp", a.port())
                .unwrap_or_else(|| panic!("nothing listens on {a}"));
            assert!(own.contains(&inode), "{a} is not chinwagd's socket");
        }
        let rooms = t.rooms.unwrap();
        let inode = bound_inode("/proc/net/udp", rooms.port())
            .unwrap_or_else(|| panic!("nothing bound to {rooms}/udp"));
        assert!(own.contains(&inode), "{rooms}/udp is not chinwagd's socket");
        TcpStream::connect(t.addr).expect("chinwagd accepts");
        drop((taken, listener));
    }
}
