//! Moves bytes of an established private connection from one socket to the
//! other, untouched, and forwards a half-close. On Linux the bytes go through
//! a pipe with splice(2), so they are never copied into user space.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Bytes moved per splice call; also the pipe's requested capacity.
const CHUNK: usize = 1 << 20;

/// Pump `src` into `dst` until `src` reaches end of stream, then shut down
/// `dst` for writing. `pending` goes out first: bytes the peer sent before the
/// relay existed. Returns bytes moved.
pub fn pump(src: &TcpStream, dst: &TcpStream, pending: &[u8]) -> io::Result<u64> {
    let mut moved = 0u64;
    if !pending.is_empty() {
        (&*dst).write_all(pending)?;
        moved += pending.len() as u64;
    }
    moved += splice_all(src, dst)?;
    let _ = dst.shutdown(Shutdown::Write);
    Ok(moved)
}

#[cfg(target_os = "linux")]
fn splice_all(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return copy_all(src, dst);
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe means fewer system calls per megabyte; failure is harmless.
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };

    let mut total = 0u64;
    loop {
        // SAFETY: splice between descriptors we hold open; null offsets are
        // required for sockets and pipes.
        let n = unsafe {
            libc::splice(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                CHUNK,
                libc::SPLICE_F_MOVE,
            )
        };
        if n == 0 {
            return Ok(total);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL) | Some(libc::ENOSYS) if total == 0 => return copy_all(src, dst),
                _ => return Err(e),
            }
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            if m < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            if m == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= m as usize;
        }
        total += n as u64;
    }
}

#[cfg(not(target_os = "linux"))]
fn splice_all(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    copy_all(src, dst)
}

/// What ended a first end's wait for its partner ([`await_partner`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Awaited {
    /// The hub let go of this end: the hand-over is in its channel, or the
    /// id was cancelled (the channel is disconnected).
    Woken,
    /// This end's own client went away: a reset, or end of stream with
    /// nothing sent for the partner.
    ClientGone,
    Deadline,
}

/// End of stream from the peer, where poll(2) can report it apart from
/// readable bytes; elsewhere only a full hang-up or an error is seen.
#[cfg(any(target_os = "linux", target_os = "android"))]
const PEER_HUNG_UP: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const PEER_HUNG_UP: libc::c_short = 0;

/// Wait, blocked in one poll(2) (no wake-up while nothing happens), until
/// `woken` hangs up, `client` goes away, or `deadline`. Bytes the client
/// sends meanwhile stay in its socket for the relay and wake nothing.
/// `sent`: bytes for the partner were already read off `client`, so its end
/// of stream is a half-close after a message, not a departure; so is an end
/// of stream behind unread bytes. After either, only `woken` is watched.
pub fn await_partner(
    client: &TcpStream,
    woken: &UnixStream,
    deadline: Instant,
    sent: bool,
) -> Awaited {
    let mut watch_client = true;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Awaited::Deadline;
        }
        // Rounded up, so the deadline is never polled for in a busy loop.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        let mut fds = [
            libc::pollfd {
                fd: woken.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is skipped by poll(2).
                fd: if watch_client { client.as_raw_fd() } else { -1 },
                events: PEER_HUNG_UP,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two entries of the array we pass,
        // whose descriptors stay open for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Cannot watch: wait on the hand-over alone, as without poll.
            return Awaited::Woken;
        }
        if fds[0].revents != 0 {
            return Awaited::Woken;
        }
        if fds[1].revents == 0 {
            continue;
        }
        let mut one = 0u8;
        // SAFETY: a one-byte peek into a byte we own; never blocks.
        let got = unsafe {
            libc::recv(
                client.as_raw_fd(),
                (&mut one as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match got {
            0 if !sent => return Awaited::ClientGone,
            n if n >= 0 => watch_client = false,
            _ => match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => watch_client = false,
                _ => return Awaited::ClientGone,
            },
        }
    }
}

/// Portable fallback: copy through a user-space buffer.
fn copy_all(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match (&*src).read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        (&*dst).write_all(&buf[..n])?;
        total += n as u64;
    }
}
