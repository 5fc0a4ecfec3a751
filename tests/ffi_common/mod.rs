//! Shared by the C-ABI tests: C strings in and out, and an owned client
//! handle that frees itself, so a failing test leaks nothing.
#![allow(dead_code)]

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use chinwag::ffi::codes::{cw_dialect, cw_result as R};
use chinwag::ffi::*;

pub fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// A borrowed C string as an owned Rust one; None for NULL.
pub fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        Some(unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned())
    }
}

pub fn last_error() -> String {
    text(cw_last_error()).unwrap()
}

pub struct C(pub *mut cw_client);
unsafe impl Send for C {}
unsafe impl Sync for C {}
impl Drop for C {
    fn drop(&mut self) {
        unsafe { cw_client_free(self.0) }
    }
}

impl C {
    /// Connect to `host:port` in `dialect`; the test fails if that fails.
    pub fn connect_to(host: &str, port: u16, dialect: cw_dialect) -> C {
        let mut c = ptr::null_mut();
        let h = cs(host);
        let r = unsafe { cw_client_connect(h.as_ptr(), port, dialect as i32, &mut c) };
        assert_eq!(r, R::CW_OK, "{}", last_error());
        C(c)
    }
}

/// What the kernel says about this process (Linux `/proc`), so that tests
/// wait for a state instead of sleeping and hoping.
pub mod proc_state {
    use std::time::{Duration, Instant};

    /// The calling thread's id.
    pub fn my_tid() -> u32 {
        // /proc/thread-self -> "<pid>/task/<tid>"
        let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        let tid = link.file_name().expect("a task id").to_string_lossy();
        tid.parse().expect("a numeric task id")
    }

    /// Whether thread `tid` of this process is blocked (state S or D).
    pub fn blocked(tid: u32) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        // "tid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "S" || s == "D")
    }

    /// One TCP socket of this network namespace, as /proc/net/tcp{,6} lists it.
    #[derive(Debug)]
    pub struct Sock {
        pub local_port: u16,
        pub remote_port: u16,
        /// Kernel state number: 1 established, 10 listening.
        pub state: u8,
        /// Bytes sent but not acknowledged (listeners: nothing meaningful).
        pub tx_queue: u64,
        /// Bytes received but not yet read by the application.
        pub rx_queue: u64,
    }

    pub const ESTABLISHED: u8 = 1;
    pub const LISTEN: u8 = 10;

    pub fn tcp_sockets() -> Vec<Sock> {
        let mut out = Vec::new();
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 5 {
                    continue;
                }
                let port = |addr: &str| {
                    addr.rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                };
                let queues = f[4].split_once(':');
                let (Some(local_port), Some(remote_port), Ok(state), Some((tx, rx))) =
                    (port(f[1]), port(f[2]), u8::from_str_radix(f[3], 16), queues)
                else {
                    continue;
                };
                out.push(Sock {
                    local_port,
                    remote_port,
                    state,
                    tx_queue: u64::from_str_radix(tx, 16).unwrap_or(u64::MAX),
                    rx_queue: u64::from_str_radix(rx, 16).unwrap_or(u64::MAX),
                });
            }
        }
        out
    }

    /// Whether something listens on TCP `port`.
    pub fn listening(port: u16) -> bool {
        tcp_sockets()
            .iter()
            .any(|s| s.state == LISTEN && s.local_port == port)
    }

    /// Whether no byte is in flight on any established connection to or
    /// from `port`: all sent bytes acknowledged and all received bytes read.
    pub fn idle_connections(port: u16) -> bool {
        tcp_sockets()
            .iter()
            .filter(|s| s.state == ESTABLISHED && (s.local_port == port || s.remote_port == port))
            .all(|s| s.tx_queue == 0 && s.rx_queue == 0)
    }

    /// Wait until `holds` is true at `times` checks in a row, 20 ms apart;
    /// fail after 10 s.
    pub fn wait_steady(what: &str, times: u32, holds: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut streak = 0;
        while streak < times {
            assert!(Instant::now() < deadline, "{what}: not reached within 10 s");
            streak = if holds() { streak + 1 } else { 0 };
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
