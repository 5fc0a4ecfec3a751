//! The one rule for a system call that a signal interrupted (`EINTR`,
//! [`io::ErrorKind::Interrupted`]): nothing failed, the call is made again.
//!
//! A signal caught by a handler installed without `SA_RESTART` (common in
//! the applications libchinwag is embedded in: Python, timers, profilers)
//! makes a blocking `read`, `recv`, `accept`, `send` or `poll` of whichever
//! thread it lands on return `EINTR`; with `SA_RESTART` (chinwagd's own
//! handlers) a socket call with a time-out (`SO_RCVTIMEO`) still does, see
//! signal(7). std retries it inside `read_exact`, `write_all`, `read_until`
//! and `connect_timeout`, but not in a plain `read`, `recv_from`, `accept`
//! or `send_to`. Every such call in the server and the library goes
//! through one of these functions, or through a loop that takes
//! `Interrupted` for "nothing yet" and then looks at its clock and flags.
//!
//! A non-blocking call (`O_NONBLOCK`, `MSG_DONTWAIT`) never sleeps, so it
//! is never interrupted.
//!
//! This is the only code in this crate that is about I/O; it touches no
//! socket itself.

use std::io;
use std::time::{Duration, Instant};

/// Whether `e` only says that a signal handler ran during the call.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// `r`, unless it only says that a signal interrupted the call (`None`:
/// try again).
fn unless_interrupted<T>(r: io::Result<T>) -> Option<io::Result<T>> {
    match r {
        Err(e) if interrupted(&e) => None,
        r => Some(r),
    }
}

/// `op` again for as long as a signal interrupts it; any other result,
/// success or error, is returned.
pub fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        if let Some(r) = unless_interrupted(op()) {
            return r;
        }
    }
}

/// A blocking call that must end by `deadline`, whose wait is bounded by a
/// time-out of its own (a socket's read time-out): `arm` is given the time
/// left before every attempt, so a retry after a signal waits only for the
/// rest. The kernel restarts an interrupted `SO_RCVTIMEO` wait with the
/// whole time-out, so retrying without re-arming would let a steady stream
/// of signals push the deadline back without end. Once the deadline has
/// passed, the result is `ErrorKind::TimedOut` without calling `op`; the
/// time-out of `op` itself shows as `op` reports it (`WouldBlock` for a
/// socket).
pub fn retry_until<T>(
    deadline: Instant,
    mut arm: impl FnMut(Duration) -> io::Result<()>,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        arm(left)?;
        if let Some(r) = unless_interrupted(op()) {
            return r;
        }
    }
}

/// [`retry_until`] `limit` from now, for a socket its owner armed with
/// `limit` once: the first attempt runs as armed (a call no signal
/// interrupts costs no system call more), and only after an interruption
/// is each attempt re-armed with what is left; the socket is then armed
/// with `limit` again before this returns.
pub fn retry_within<T>(
    limit: Duration,
    mut arm: impl FnMut(Duration) -> io::Result<()>,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let deadline = Instant::now() + limit;
    if let Some(r) = unless_interrupted(op()) {
        return r;
    }
    let r = retry_until(deadline, &mut arm, op);
    let restored = arm(limit);
    r.and_then(|v| restored.map(|()| v))
}

/// All of `buf` through `write` (one `write(2)` on a socket whose send
/// time-out its owner set to `limit`), where a write that makes no progress
/// for `limit` fails: each call is a [`retry_within`] of its own from the
/// last progress, so signals neither fail the write nor stretch the
/// time-out. std's `write_all` also retries `EINTR`, but restarts the
/// socket's whole time-out each time.
pub fn write_all_within(
    limit: Duration,
    mut arm: impl FnMut(Duration) -> io::Result<()>,
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    buf: &[u8],
) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match retry_within(limit, &mut arm, || write(&buf[at..]))? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => at += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn eintr() -> io::Error {
        io::Error::from_raw_os_error(4)
    }

    #[test]
    fn retry_runs_an_interrupted_call_again_and_returns_anything_else() {
        let calls = Cell::new(0);
        let r = retry(|| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(eintr())
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.get(), 3);
        calls.set(0);
        let e = retry::<()>(|| {
            calls.set(calls.get() + 1);
            Err(io::ErrorKind::WouldBlock.into())
        });
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn retry_until_arms_each_attempt_with_what_is_left_and_stops_at_the_deadline() {
        // Long beside the 5 ms attempts: with 60 ms, a loaded machine held
        // the first attempt past the deadline once, and there was no second.
        let limit = Duration::from_secs(1);
        let deadline = Instant::now() + limit;
        let armed = std::cell::RefCell::new(Vec::new());
        let r = retry_until::<()>(
            deadline,
            |left| {
                armed.borrow_mut().push(left);
                Ok(())
            },
            || {
                std::thread::sleep(Duration::from_millis(5));
                Err(eintr())
            },
        );
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() >= deadline);
        let armed = armed.into_inner();
        assert!(armed.len() >= 2, "{armed:?}");
        assert!(armed.windows(2).all(|w| w[1] < w[0]), "{armed:?}");
        assert!(armed[0] <= limit);
    }

    #[test]
    fn write_all_within_writes_everything_through_signals_and_short_writes() {
        let mut out = Vec::new();
        let mut calls = 0;
        write_all_within(
            Duration::from_secs(60),
            |_| Ok(()),
            |b| {
                calls += 1;
                if calls % 2 == 1 {
                    return Err(eintr());
                }
                let n = b.len().min(3);
                out.extend_from_slice(&b[..n]);
                Ok(n)
            },
            b"hello, world",
        )
        .unwrap();
        assert_eq!(out, b"hello, world");
        let e = write_all_within(Duration::from_secs(60), |_| Ok(()), |_| Ok(0), b"x");
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn write_all_within_fails_once_no_progress_is_made_for_the_limit() {
        let t = Instant::now();
        let e = write_all_within(
            Duration::from_millis(50),
            |_| Ok(()),
            |_| {
                std::thread::sleep(Duration::from_millis(2));
                Err(eintr())
            },
            b"stalled",
        );
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    /// The hot path (a write no signal interrupts) arms nothing; after an
    /// interruption the attempts are armed with what is left, and the
    /// socket gets its whole time-out back at the end.
    #[test]
    fn retry_within_arms_only_after_an_interruption_and_restores_the_limit() {
        let limit = Duration::from_secs(60);
        let armed = std::cell::RefCell::new(Vec::new());
        let arm = |d| {
            armed.borrow_mut().push(d);
            Ok(())
        };
        assert_eq!(retry_within(limit, arm, || Ok(5)).unwrap(), 5);
        assert!(armed.borrow().is_empty(), "{:?}", armed.borrow());
        let calls = Cell::new(0);
        let r = retry_within(limit, arm, || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(eintr())
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.unwrap(), 7);
        let armed = armed.into_inner();
        assert_eq!(armed.len(), 3, "two retries, then the limit: {armed:?}");
        assert!(armed[0] < limit && armed[1] <= armed[0], "{armed:?}");
        assert_eq!(armed[2], limit);
    }

    #[test]
    fn retry_until_passes_on_errors_of_arm_and_op() {
        let far = Instant::now() + Duration::from_secs(60);
        let e = retry_until::<()>(
            far,
            |_| Err(io::ErrorKind::InvalidInput.into()),
            || unreachable!(),
        );
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let e = retry_until::<()>(far, |_| Ok(()), || Err(io::ErrorKind::WouldBlock.into()));
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
