//! A storm of signals into every thread of a process, for the tests that
//! prove a signal never ends a session (tests/signals.rs, and chinwagd's
//! server/tests/signals.rs, which includes this file), or into one thread
//! (the unit tests of timed writes in libclient/core/tcp.rs and
//! server/src/net.rs include it too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Signals the no-op handler of [`catch_without_restart`] has run for.
pub static CAUGHT: AtomicU64 = AtomicU64::new(0);

extern "C" fn count(_: libc::c_int) {
    CAUGHT.fetch_add(1, Ordering::Relaxed);
}

/// Catch `sig` in this process with a handler that does nothing but count,
/// installed as a C or Python application may: WITHOUT `SA_RESTART`, so
/// any blocking call of the thread it lands on returns `EINTR`.
pub fn catch_without_restart(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handler only touches an
    // atomic (async-signal-safe); sa_flags 0: no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(sig, &sa, std::ptr::null_mut()),
            0,
            "sigaction"
        );
    }
}

/// Send `sig` to thread `tid` of this process about every millisecond while
/// `go` says so, for at most `limit`.
pub fn pester(tid: libc::pthread_t, sig: libc::c_int, limit: Duration, go: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while go() && Instant::now() < end {
        // SAFETY: the caller keeps the thread joinable (not yet joined)
        // while `go` holds, so its id stays valid.
        unsafe { libc::pthread_kill(tid, sig) };
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Threads of process `pid` (`/proc/<pid>/task`).
fn threads(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Sends `sig` to every thread of a process about every millisecond, from
/// a thread of its own (which it spares), until stopped or dropped.
pub struct Storm {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Storm {
    /// At most `limit` long, so a test that fails midway still ends.
    pub fn start(pid: libc::pid_t, sig: libc::c_int, limit: Duration) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("signal-storm".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let me = unsafe { libc::gettid() };
                let end = Instant::now() + limit;
                let mut sent = 0u64;
                let mut tids = Vec::new();
                let mut rounds_left = 0u32;
                while !stop2.load(Ordering::Acquire) && Instant::now() < end {
                    // The list of threads, fresh every 10 rounds: sessions
                    // start threads as they go.
                    if rounds_left == 0 {
                        tids = threads(pid);
                        rounds_left = 10;
                    }
                    rounds_left -= 1;
                    for &tid in tids.iter().filter(|&&t| t != me) {
                        // SAFETY: tgkill only sends a signal; a thread
                        // that has ended meanwhile gives ESRCH.
                        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } == 0 {
                            sent += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent
            })
            .expect("storm thread");
        Storm {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop; the number of signals sent.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("storm thread"))
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.halt();
    }
}
