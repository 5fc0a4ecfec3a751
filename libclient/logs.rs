//! The library's own log lines for hosts that have no Rust logger (C, C++,
//! Python): a `log` logger that queues each line (level, target, text) in
//! one bounded process-wide queue the application polls, with a descriptor
//! readable while lines wait. Like events, lines are never called back: no
//! application code runs on a library thread. A Rust host that installs
//! its own logger gets the lines there instead, and this stays unused.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::{Condvar, Mutex};

use crate::core::bell::Bell;
use crate::core::{wait_until, Error, ErrorKind, Result};

/// Lines kept before the oldest are dropped: a burst of connection
/// failures fits; a host that never reads costs at most ~1,000 lines.
pub const LOG_CAPACITY: usize = 1024;

/// One log line of the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    /// Where it comes from, a module path such as `chinwag::core`.
    pub target: String,
    pub text: String,
}

struct Lines {
    lines: VecDeque<LogLine>,
    dropped: u64,
    bell: Bell,
}

static QUEUE: Mutex<Lines> = Mutex::new(Lines {
    lines: VecDeque::new(),
    dropped: 0,
    bell: Bell::new(),
});
static ARRIVED: Condvar = Condvar::new();
/// The queue is `log`'s logger (set once, never unset).
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct Capture;

static CAPTURE: Capture = Capture;

/// Only the library's lines: its crates' targets start with "chinwag".
fn ours(target: &str) -> bool {
    target.starts_with("chinwag")
}

impl Log for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level() && ours(m.target())
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = LogLine {
            level: r.level(),
            target: r.target().to_owned(),
            text: r.args().to_string(),
        };
        let mut q = QUEUE.lock();
        // Again under the lock: a line whose logging began before
        // `set_level` lowered the level (another thread, held up between
        // the check above and here) is not queued after it returned.
        if r.level() > log::max_level() {
            return;
        }
        if q.lines.len() >= LOG_CAPACITY {
            q.lines.pop_front();
            q.dropped += 1;
        }
        q.lines.push_back(line);
        q.bell.set(true);
        drop(q);
        ARRIVED.notify_one();
    }

    fn flush(&self) {}
}

/// Queue the library's lines at `level` and above (`LevelFilter::Off`:
/// none). The first call with a level other than Off makes this queue the
/// process's `log` logger; `OtherLogger` when another logger already is
/// (a Rust host's own: the lines go there), and nothing changes. Once it
/// returns, no line below `level` is queued, not even one another thread
/// was logging at the time.
pub fn set_level(level: LevelFilter) -> std::result::Result<(), OtherLogger> {
    if level != LevelFilter::Off && !INSTALLED.load(Ordering::Acquire) {
        log::set_logger(&CAPTURE).map_err(|_| OtherLogger)?;
        INSTALLED.store(true, Ordering::Release);
    }
    if INSTALLED.load(Ordering::Acquire) {
        // Under the queue's lock, where `Capture::log` checks it again.
        let _q = QUEUE.lock();
        log::set_max_level(level);
    }
    Ok(())
}

/// The process has another `log` logger: the library's lines go there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherLogger;

/// The level lines are queued at now.
pub fn level() -> LevelFilter {
    if INSTALLED.load(Ordering::Acquire) {
        log::max_level()
    } else {
        LevelFilter::Off
    }
}

/// The next line, waiting at most `timeout` (`None`: without limit);
/// `Timeout` when none came. Lines lost to a full queue are reported by a
/// WARN line of target `chinwag` saying how many.
pub fn next_line(timeout: Option<Duration>) -> Result<LogLine> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut q = QUEUE.lock();
    loop {
        let line = if q.dropped > 0 {
            let n = std::mem::take(&mut q.dropped);
            Some(LogLine {
                level: Level::Warn,
                target: "chinwag".into(),
                text: format!("{n} log lines dropped: the queue was full"),
            })
        } else {
            q.lines.pop_front()
        };
        if let Some(line) = line {
            let on = !q.lines.is_empty() || q.dropped > 0;
            q.bell.set(on);
            return Ok(line);
        }
        if wait_until(&ARRIVED, &mut q, deadline) && q.lines.is_empty() && q.dropped == 0 {
            return Err(Error::new(
                ErrorKind::Timeout,
                "no log line before the time limit",
            ));
        }
    }
}

/// A descriptor readable while a line waits; process-wide, never closed.
pub fn fd() -> Result<RawFd> {
    let mut q = QUEUE.lock();
    let on = !q.lines.is_empty() || q.dropped > 0;
    q.bell.fd(on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::sync::mpsc;

    /// Formats only once let go: holds a logging thread between the
    /// level check and the queue for as long as the test wants.
    struct Held {
        inside: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
    }

    impl fmt::Display for Held {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let _ = self.inside.send(());
            let _ = self.go.recv_timeout(Duration::from_secs(10));
            f.write_str("held")
        }
    }

    /// A line another thread was logging while the level went Off is not
    /// queued after `set_level` returned (cw_log_set_level(CW_LOG_OFF)
    /// "stops"): drained, the queue stays empty.
    #[test]
    fn no_line_is_queued_once_the_level_went_off() {
        set_level(LevelFilter::Debug).unwrap();
        let (inside_tx, inside) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let held = Held {
            inside: inside_tx,
            go: go_rx,
        };
        let logger = std::thread::spawn(move || {
            log::debug!(target: "chinwag::logs::test", "{held}");
        });
        inside
            .recv_timeout(Duration::from_secs(10))
            .expect("the line is being logged");
        set_level(LevelFilter::Off).unwrap();
        while next_line(Some(Duration::ZERO)).is_ok() {}
        go.send(()).unwrap();
        logger.join().unwrap();
        let late = next_line(Some(Duration::ZERO));
        assert!(late.is_err(), "queued after Off: {late:?}");
    }
}
