//! Reads of sockets that their owner armed with a read time-out, kept to
//! that time-out whatever interrupts them. The benchmark catches no signal,
//! but a process stopped and continued (Ctrl-Z and `fg`, a debugger, a
//! cgroup freezer: SIGSTOP/SIGTSTP then SIGCONT) sees a socket call with a
//! time-out fail with EINTR all the same (signal(7), "Interruption of
//! system calls and library functions by stop signals"). Such a read is
//! made again for what is left of its time-out (retrying it as it is would
//! start the whole time-out again): [`chinwag_proto::eintr`] does the
//! waiting, as in the server and the library.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use chinwag_proto::eintr;

/// A socket with a read time-out of its own (SO_RCVTIMEO).
pub trait Timed {
    fn read_timeout(&self) -> io::Result<Option<Duration>>;
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Timed for TcpStream {
    fn read_timeout(&self) -> io::Result<Option<Duration>> {
        TcpStream::read_timeout(self)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
}

impl Timed for UdpSocket {
    fn read_timeout(&self) -> io::Result<Option<Duration>> {
        UdpSocket::read_timeout(self)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UdpSocket::set_read_timeout(self, t)
    }
}

/// `op`, a blocking call on `s` that started at `since`, made again after an
/// interruption for what is left of `s`'s read time-out from `since`; the
/// socket is armed with its whole time-out again afterwards. A call no
/// interruption reaches costs nothing more than a clock read.
fn within<S: Timed, T>(
    s: &S,
    since: Instant,
    first: io::Result<T>,
    op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    match first {
        Err(e) if eintr::interrupted(&e) => {}
        r => return r,
    }
    let Some(limit) = s.read_timeout()? else {
        // No time-out: nothing to keep, the call only starts again.
        return eintr::retry(op);
    };
    let r = eintr::retry_until(since + limit, |left| s.set_read_timeout(Some(left)), op);
    let restored = s.set_read_timeout(Some(limit));
    r.and_then(|v| restored.map(|()| v))
}

/// One wait of `poll` for at most `t`; an interrupted wait is an empty
/// one (every caller loops, looking at its own clock and deadline).
pub fn poll(poll: &mut mio::Poll, events: &mut mio::Events, t: Option<Duration>) -> io::Result<()> {
    match poll.poll(events, t) {
        Err(e) if eintr::interrupted(&e) => {
            events.clear();
            Ok(())
        }
        r => r,
    }
}

/// One `read` of `s` (`TimedOut`/`WouldBlock` once its time-out passed).
pub fn read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let since = Instant::now();
    let first = (&*s).read(buf);
    within(s, since, first, || (&*s).read(buf))
}

/// All of `buf` from `s`, each read within `s`'s time-out from its start.
pub fn read_exact(s: &TcpStream, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match read(s, buf)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// One `recv_from` of `s`.
pub fn recv_from(s: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let since = Instant::now();
    let first = s.recv_from(buf);
    within(s, since, first, || s.recv_from(buf))
}

/// One `recv` of a connected `s`.
pub fn recv(s: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
    let since = Instant::now();
    let first = s.recv(buf);
    within(s, since, first, || s.recv(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Stopped and continued over and over (SIGSTOP then SIGCONT, no
    /// handler anywhere), a read armed with 2 s ends with a time-out in
    /// about that, not with EINTR (a plain read) and not once the stops
    /// end (a read made again with its whole time-out). Run in a child
    /// process: the stops would stop this one's other tests too.
    #[test]
    fn a_read_keeps_its_time_out_while_the_process_is_stopped_and_continued() {
        const CHILD: &str = "CHINWAG_BENCH_STOPPED_CHILD";
        // Far longer than the gaps between stops, even on a loaded machine.
        const LIMIT: Duration = Duration::from_secs(2);
        if std::env::var_os(CHILD).is_some() {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let _peer = l.accept().unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            // Told to the parent: the stops begin.
            println!("ready");
            let t = Instant::now();
            let e = read(&s, &mut [0u8; 16]).unwrap_err();
            let took = t.elapsed();
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{e}"
            );
            assert_eq!(s.read_timeout().unwrap(), Some(LIMIT));
            println!("took {}", took.as_millis());
            return;
        }
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let name =
            "wait::tests::a_read_keeps_its_time_out_while_the_process_is_stopped_and_continued";
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let mut lines = io::BufReader::new(child.stdout.take().unwrap()).lines();
        // libtest writes the test's name on the same line first.
        assert!(lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.ends_with("ready")));
        // Stops until it ends, for at most `storm`: with a read made again
        // with its whole time-out, it would end only once they stopped.
        let storm = Duration::from_secs(30);
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > storm {
                // SAFETY: kill only sends a signal to our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break child.wait().unwrap();
            }
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
                libc::kill(pid, libc::SIGCONT);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let said: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(status.success(), "{status}: {said:?}");
        let took: u64 = said
            .iter()
            .find_map(|l| l.split("took ").nth(1)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("the child never read: {said:?}"));
        assert!(
            Duration::from_millis(took) < storm / 2,
            "a {LIMIT:?} read took {took} ms: about as long as the stops lasted"
        );
    }
}
