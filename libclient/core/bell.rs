//! A file descriptor that is readable exactly while a queue has something
//! for the application (an eventfd on Linux, a pipe elsewhere), so that
//! select/poll/epoll loops and GUI toolkits can wait on the library
//! without a blocking thread. The queue that owns a bell says when; the
//! bell never reads or runs anything else.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Error, ErrorKind, Result};

/// The descriptor and its state. Always used under its queue's lock, so
/// `ringing` and the descriptor agree.
pub(crate) struct Bell {
    /// Created on first use: a client whose fd is never asked for costs none.
    fds: Option<Fds>,
    ringing: bool,
}

struct Fds {
    /// Polled by the application.
    read: OwnedFd,
    /// Written to ring (the same descriptor as `read` for an eventfd).
    write: Option<OwnedFd>,
}

impl Bell {
    pub(crate) const fn new() -> Bell {
        Bell {
            fds: None,
            ringing: false,
        }
    }

    /// The descriptor to poll for readability, created now if needed and
    /// set to `on`.
    pub(crate) fn fd(&mut self, on: bool) -> Result<RawFd> {
        if self.fds.is_none() {
            self.fds = Some(Fds::open().map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot make an event descriptor: {e}"),
                )
            })?);
            self.ringing = false;
        }
        self.set(on);
        Ok(self.fds.as_ref().map_or(-1, |f| f.read.as_raw_fd()))
    }

    /// Make the descriptor readable (`on`) or not. Nothing without one.
    pub(crate) fn set(&mut self, on: bool) {
        let Some(fds) = &self.fds else {
            return;
        };
        if on == self.ringing {
            return;
        }
        if on {
            fds.ring();
        } else {
            fds.drain();
        }
        self.ringing = on;
    }
}

impl Fds {
    #[cfg(target_os = "linux")]
    fn open() -> io::Result<Fds> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let read = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Fds { read, write: None })
    }

    #[cfg(not(target_os = "linux"))]
    fn open() -> io::Result<Fds> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            // SAFETY: plain fcntl calls on descriptors we own.
            unsafe {
                let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Ok(Fds {
            read,
            write: Some(write),
        })
    }

    fn ring(&self) {
        let fd = self.write.as_ref().unwrap_or(&self.read).as_raw_fd();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. Non-blocking: a full
        // counter or pipe already means "readable", so a failure is fine.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live buffer of the given size; the
        // descriptor is non-blocking, so this stops when it is empty.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }
}

/// Whether `fd` is readable right now (for tests).
#[cfg(test)]
pub(crate) fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_exactly_while_on() {
        let mut b = Bell::new();
        let fd = b.fd(false).unwrap();
        assert!(!readable(fd));
        b.set(true);
        assert!(readable(fd));
        b.set(true); // idempotent: still one ring
        b.set(false);
        assert!(!readable(fd));
        assert_eq!(b.fd(true).unwrap(), fd, "one descriptor per bell");
        assert!(readable(fd));
    }
}
