//! Shared by the server's TCP end-to-end tests: a raw client for any framed
//! dialect, checking bytes through the proto codecs, with bounded waits.
#![allow(dead_code)]

use std::fmt::Debug;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chinwag_proto::{Decode, Decoder};

/// A fresh directory for one test's files, unique across runs and processes.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cw-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Wire<T> {
    pub s: TcpStream,
    pub dec: Decoder<T>,
}

impl<T: Decode + Debug> Wire<T> {
    pub fn new(s: TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Wire {
            s,
            dec: Decoder::new(),
        }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next message, or None if nothing arrives within `wait` or the
    /// connection ends. Bytes the codec refuses fail the test.
    pub fn try_recv(&mut self, wait: Duration) -> Option<T> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 8192];
        loop {
            if let Some(m) = self
                .dec
                .next_message()
                .expect("the server sent valid bytes")
            {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    pub fn recv(&mut self) -> T {
        self.try_recv(WAIT).expect("a message within the wait")
    }

    pub fn expect_silence(&mut self) {
        if let Some(m) = self.try_recv(Duration::from_millis(250)) {
            panic!("expected nothing, got {m:?}");
        }
    }

    /// The server closes the connection: EOF (or reset) within the wait,
    /// with no complete message before it.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 256];
        loop {
            if let Ok(Some(m)) = self.dec.next_message() {
                panic!("expected the connection to close, got {m:?}");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not close the connection"
            );
            self.s
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}
