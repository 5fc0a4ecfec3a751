//! `pool::no_signal_stacks`, hooked in as chinwagd's binary hooks it (an
//! `.init_array` entry, run before Rust's runtime starts): threads get no
//! signal stack, and a fault still ends the process, by SIGSEGV, at once.
//! The faulting cases run in a child process (this test binary, started
//! again with `CW_FAULT` set).

use std::process::Command;
use std::time::{Duration, Instant};

#[used]
#[unsafe(link_section = ".init_array")]
static NO_SIGNAL_STACKS: extern "C" fn() = chinwagd::pool::no_signal_stacks;

#[inline(never)]
fn deep(n: u64) -> u64 {
    let a = std::hint::black_box([n as u8; 512]);
    if n == 0 {
        a[0] as u64
    } else {
        deep(n - 1).wrapping_add(a[n as usize % 512] as u64)
    }
}

/// Run in the child: overflow a thread's stack.
fn overflow() {
    let t = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| deep(u64::MAX / 2))
        .unwrap();
    let _ = t.join();
    unreachable!("the overflow did not end the process");
}

/// Start this test again in a child that runs `case`; its exit status and
/// standard error, within 30 s.
fn child(test: &str, case: &str) -> (std::process::ExitStatus, String) {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("CW_FAULT", case)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("the child of {case} did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    use std::io::Read as _;
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, err)
}

#[test]
fn a_stack_overflow_still_ends_the_process_by_sigsegv() {
    if std::env::var("CW_FAULT").as_deref() == Ok("overflow") {
        overflow();
    }
    use std::os::unix::process::ExitStatusExt as _;
    let (status, err) = child(
        "a_stack_overflow_still_ends_the_process_by_sigsegv",
        "overflow",
    );
    // Rust's own handler would have printed "has overflowed its stack" and
    // aborted (SIGABRT): the hook took the signal over, and the kernel, unable
    // to run a handler on the overflowed stack, ends the process by SIGSEGV.
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}\n{err}");
    assert!(!err.contains("overflowed its stack"), "{err}");
}

#[test]
fn threads_get_no_signal_stack() {
    assert_eq!(chinwagd::pool::maps_per_thread(), 2);
    // A signal stack is set per thread with sigaltstack(2): none here.
    let on = std::thread::spawn(|| {
        // SAFETY: stack_t is plain data; all zeros is a valid value.
        let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: reads the calling thread's alternate stack into `ss`.
        assert_eq!(unsafe { libc::sigaltstack(std::ptr::null(), &mut ss) }, 0);
        ss.ss_flags & libc::SS_DISABLE == 0
    })
    .join()
    .unwrap();
    assert!(!on, "a new thread has a signal stack");
}
