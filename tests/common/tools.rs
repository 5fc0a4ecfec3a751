//! The tools the tests need (a missing one fails, unless CHINWAG_SKIP_TOOLS
//! names it), processes with time limits, and how slow the machine runs
//! now. Plain std and libc, so that the server's own tests can include this
//! file too.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Names the tools this machine lacks on purpose, comma-separated
/// (`CHINWAG_SKIP_TOOLS=cc,python3`): the tests that need one of them are
/// skipped. Any other missing tool fails its test.
pub const SKIP_TOOLS: &str = "CHINWAG_SKIP_TOOLS";

/// Whether `tool` runs. A missing tool fails the test unless
/// `CHINWAG_SKIP_TOOLS` names it, in which case the caller skips (false).
pub fn require(tool: &str) -> bool {
    let skip = std::env::var(SKIP_TOOLS).unwrap_or_default();
    require_with(tool, runs(tool), &skip)
}

/// Whether `tool --version` runs and succeeds.
pub fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// [`require`] with what the machine and the environment say passed in.
pub fn require_with(tool: &str, runs: bool, skip_list: &str) -> bool {
    if runs {
        return true;
    }
    if skip_list.split(',').any(|t| t.trim() == tool) {
        eprintln!("SKIPPED: {tool} not available, and {SKIP_TOOLS} says so");
        return false;
    }
    panic!(
        "{tool} is required but does not run; to skip the tests that need it, \
         set {SKIP_TOOLS}={tool}"
    );
}

/// Run to completion within `limit`, or kill it and fail.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_within(child, limit)
}

pub fn wait_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_t.join().unwrap_or_default();
            panic!(
                "process exceeded {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// How many times slower than on an idle machine this process runs now:
/// the wall time of a fixed piece of work (about 20 ms of one core) over
/// the CPU time it took, at least 1. A test that loads the server at a
/// rate set in wall-clock time scales that rate and its bounds by this, so
/// that a machine that gives the test a hundredth of a core (the suite at
/// `nice -n 19` beside busy loops) asks no more of it than an idle one.
pub fn stretch() -> f64 {
    let thread_cpu = || cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let mut x = 0u64;
    while thread_cpu() - cpu < Duration::from_millis(20) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    (wall.elapsed().as_secs_f64() / (thread_cpu() - cpu).as_secs_f64()).max(1.0)
}

/// Set in a test process re-run on its own (see [`alone`]).
const ALONE: &str = "CHINWAG_TEST_ALONE";

/// Run the calling test (`name`, as libtest names it) in a process of its
/// own, for a test that measures the CPU time the process spends, which
/// the other tests of its binary would add to: the test binary runs again
/// with only that test. True in that child (run the body there), false in
/// the parent, which has checked that the child ran the test and passed.
pub fn alone(name: &str) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = output_within(
        std::process::Command::new(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(ALONE, "1"),
        Duration::from_secs(600),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.contains("1 passed"),
        "{name} in a process of its own: {}\n{said}",
        out.status
    );
    false
}

/// The CPU time all threads of this process have used.
pub fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The time of a CPU-time clock (this thread's or this process's).
fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on this frame.
    let rc = unsafe { libc::clock_gettime(clock, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
