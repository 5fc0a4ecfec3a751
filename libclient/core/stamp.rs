//! Kernel receive times (SO_TIMESTAMPNS): a socket stamps each datagram or
//! TCP segment when it arrives, so a thread that reads it later (the one
//! that plays a call) still learns when it came, as the jitter buffer needs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A kernel receive time older than this is a stepped wall clock, not data
/// that waited: it counts as received now.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Have the kernel stamp what `fd` receives.
pub(crate) fn enable(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket with a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Both clocks read once, to turn the kernel's wall-clock stamps of one
/// batch into `Instant`s.
pub(crate) struct Clocks {
    now: Instant,
    wall: Duration,
}

impl Clocks {
    pub(crate) fn now() -> Self {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clocks { now, wall }
    }

    /// When something stamped `stamp` arrived (now without a stamp, or for
    /// a stamp from a wall clock that stepped since).
    pub(crate) fn arrival(&self, stamp: Option<Duration>) -> Instant {
        let age = stamp.map_or(Duration::ZERO, |s| self.wall.saturating_sub(s));
        if age > MAX_AGE {
            return self.now;
        }
        self.now.checked_sub(age).unwrap_or(self.now)
    }
}

/// Read what is waiting on `fd` into `buf` without waiting (recvmsg with
/// MSG_DONTWAIT): the bytes read, the sender (datagram sockets) and the
/// kernel receive time (wall clock since the epoch; for TCP, that of the
/// last segment read).
pub(crate) fn recv(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Option<Duration>)> {
    recv_flags(fd, buf, libc::MSG_DONTWAIT)
}

/// As [`recv`], but waiting as long as the socket's receive timeout
/// allows (then `WouldBlock`).
pub(crate) fn recv_wait(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Option<Duration>)> {
    recv_flags(fd, buf, 0)
}

fn recv_flags(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, Option<SocketAddr>, Option<Duration>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS (a timespec), 8-byte aligned.
    let mut control = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at a live buffer of the length
    // given, for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = if msg.msg_namelen > 0 {
        socket_addr(&addr)
    } else {
        None
    };
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within msg_controllen; a timespec is read unaligned from its data.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, from, stamp))
}

/// The address a `recvmsg` filled in.
fn socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))),
                u16::from_be(v4.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)),
                u16::from_be(v6.sin6_port),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_become_instants_and_a_stepped_clock_counts_as_now() {
        let c = Clocks::now();
        assert_eq!(c.arrival(None), c.now);
        let at = c.arrival(Some(c.wall - Duration::from_millis(30)));
        assert_eq!(c.now - at, Duration::from_millis(30));
        // From the future (the clock stepped back) or long ago (forward).
        assert_eq!(c.arrival(Some(c.wall + Duration::from_secs(5))), c.now);
        assert_eq!(c.arrival(Some(c.wall - Duration::from_secs(5))), c.now);
    }
}
