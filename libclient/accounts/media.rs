//! The media path of an accounts call the library carries: one UDP socket
//! per call, datagrams sent to the end point the call signalling gave
//! (141/143), and only datagrams from that same end point taken in (the
//! peer sends from the socket it named), so nobody else can play into a
//! call without spoofing its peer. It moves
//! whole datagrams; what they carry is `call::wire`'s business. A server
//! relay would be another pair of `VoiceOut`/`VoiceIn` over the same units.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chinwag_proto::voice::MAX_MEDIA_PACKET;

use crate::call::{VoiceIn, VoiceOut};
use crate::core::{Error, ErrorKind, Result};

/// How long the call's thread waits for a datagram before doing its
/// periodic work (the receiver report) and looking for a hang-up.
const RECV_POLL: Duration = Duration::from_millis(50);
/// A send that cannot leave within this is a broken socket, not a slow one.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Datagrams one `try_recv` takes at most (the jitter buffer holds 64).
const DRAIN_MAX: usize = 64;
/// A kernel receive time older than this is a stepped wall clock, not a
/// datagram that waited: it counts as received now.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Bind the socket of a call the library carries: on `ip` (the interface
/// that reaches the server), at `port` (0: any free one).
pub(super) fn bind(ip: IpAddr, port: u16) -> Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::new(ip, port)).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot bind a UDP socket for the call on {ip}:{port}: {e}"),
        )
    })?;
    let io = |e: io::Error| Error::new(ErrorKind::Io, format!("call socket: {e}"));
    sock.set_read_timeout(Some(RECV_POLL)).map_err(io)?;
    sock.set_write_timeout(Some(SEND_TIMEOUT)).map_err(io)?;
    // The kernel stamps each datagram when it arrives (SO_TIMESTAMPNS), so
    // the thread that plays can take datagrams that waited, and the jitter
    // buffer still sees when each arrived.
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on our socket with a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io(io::Error::last_os_error()));
    }
    Ok(sock)
}

/// The local port of a bound call socket.
pub(super) fn port_of(sock: &UdpSocket) -> Result<u16> {
    sock.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::new(ErrorKind::Io, format!("call socket: {e}")))
}

/// The peer's voice end point from the signalling: an IP address (the
/// server fills in the one it sees when the peer left it empty) and a port.
pub(super) fn peer_end_point(pseudo: &str, addr: &str, port: u16) -> Result<SocketAddr> {
    let ip: IpAddr = addr.parse().map_err(|_| {
        Error::new(
            ErrorKind::ConnectFailed,
            format!("{pseudo}'s voice address {addr:?} is not an IP address"),
        )
    })?;
    if port == 0 || ip.is_unspecified() {
        return Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("{pseudo}'s voice end point {addr}:{port} cannot be reached"),
        ));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Both halves of the transport between `sock` and `peer`.
pub(super) fn transport(
    sock: UdpSocket,
    peer: SocketAddr,
) -> Result<(Box<dyn VoiceOut>, Box<dyn VoiceIn>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let input = Datagrams {
        sock: sock
            .try_clone()
            .map_err(|e| Error::new(ErrorKind::Io, format!("call socket: {e}")))?,
        peer: canonical(peer),
        stop: stop.clone(),
        // One byte more than the largest voice packet, to see a bigger one.
        buf: vec![0; MAX_MEDIA_PACKET + 1],
        strangers: 0,
    };
    Ok((Box::new(Sender { sock, peer, stop }), Box::new(input)))
}

struct Sender {
    sock: UdpSocket,
    peer: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl VoiceOut for Sender {
    fn send(&self, unit: &[u8]) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the call is over"));
        }
        match self.sock.send_to(unit, self.peer) {
            Ok(_) => Ok(()),
            // The peer's port is closed (an ICMP answer to an earlier
            // datagram): it may be starting or gone; signalling decides.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(Error::new(
                ErrorKind::Io,
                format!("sending voice to {} failed: {e}", self.peer),
            )),
        }
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so both spellings compare equal.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

struct Datagrams {
    sock: UdpSocket,
    peer: SocketAddr,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    /// Datagrams dropped because they came from elsewhere or were too big.
    strangers: u64,
}

/// One datagram waiting on `sock`, without waiting: its length, sender and
/// kernel receive time (wall clock, since the epoch), when stamped.
fn recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
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
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = socket_addr(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from no address"))?;
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

impl Datagrams {
    fn stranger(&mut self, n: usize, from: SocketAddr) {
        self.strangers += 1;
        if self.strangers.is_power_of_two() {
            log::debug!(
                "call socket: {} datagrams dropped (latest: {n} bytes from {from})",
                self.strangers
            );
        }
    }
}

impl VoiceIn for Datagrams {
    fn stamped(&self) -> bool {
        true
    }

    fn try_recv(&mut self, take: &mut dyn FnMut(&[u8], Instant)) -> Result<usize> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the call is over"));
        }
        // One reading of both clocks turns every kernel stamp of this batch
        // into an Instant.
        let (now, wall) = (Instant::now(), SystemTime::now());
        let wall = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut taken = 0;
        for _ in 0..DRAIN_MAX {
            match recv_stamped(&self.sock, &mut self.buf) {
                Ok((n, from, stamp)) if canonical(from) == self.peer && n <= MAX_MEDIA_PACKET => {
                    let age = stamp.map_or(Duration::ZERO, |s| wall.saturating_sub(s));
                    let at = if age > MAX_AGE {
                        now
                    } else {
                        now.checked_sub(age).unwrap_or(now)
                    };
                    take(&self.buf[..n], at);
                    taken += 1;
                }
                Ok((n, from, _)) => self.stranger(n, from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP answer to an earlier send, reported once.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("the call's UDP socket failed: {e}"),
                    ))
                }
            }
        }
        Ok(taken)
    }

    fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the call is over"));
        }
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) if canonical(from) == self.peer && n <= MAX_MEDIA_PACKET => {
                Ok(Some(self.buf[..n].to_vec()))
            }
            Ok((n, from)) => {
                self.stranger(n, from);
                Ok(None)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new(
                ErrorKind::Io,
                format!("the call's UDP socket failed: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram that waited in the socket keeps the time the kernel
    /// received it; a stranger's is dropped; nothing waiting is no wait.
    #[test]
    fn waiting_datagrams_are_taken_with_their_kernel_arrival_time() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ours = bind(lo, 0).unwrap();
        let peer = UdpSocket::bind((lo, 0)).unwrap();
        let stranger = UdpSocket::bind((lo, 0)).unwrap();
        let to = SocketAddr::new(lo, port_of(&ours).unwrap());
        let (_out, mut input) = transport(ours, peer.local_addr().unwrap()).unwrap();
        assert!(input.stamped());

        let mut got = Vec::new();
        let started = Instant::now();
        assert_eq!(
            input
                .try_recv(&mut |u, at| got.push((u.to_vec(), at)))
                .unwrap(),
            0
        );
        assert!(
            started.elapsed() < RECV_POLL,
            "taking nothing does not wait"
        );

        let before = Instant::now();
        stranger.send_to(b"CWVC-not-yours", to).unwrap();
        peer.send_to(b"CWVC-first", to).unwrap();
        peer.send_to(b"CWVC-second", to).unwrap();
        let sent = Instant::now();
        // Loopback delivers within send_to; the datagrams now age in the
        // socket, and the age is what is checked.
        std::thread::sleep(Duration::from_millis(80));
        let n = input
            .try_recv(&mut |u, at| got.push((u.to_vec(), at)))
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(got[0].0, b"CWVC-first");
        assert_eq!(got[1].0, b"CWVC-second");
        for (_, at) in &got {
            // Stamped by the kernel (the wall clock may be a little off the
            // monotonic one: a millisecond of slack).
            assert!(
                *at + Duration::from_millis(1) >= before,
                "{at:?} {before:?}"
            );
            assert!(*at <= sent + Duration::from_millis(1), "{at:?} {sent:?}");
        }
    }
}
