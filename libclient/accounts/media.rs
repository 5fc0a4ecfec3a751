//! The media path of an accounts call the library carries: one UDP socket
//! per call, datagrams sent to the end point the call signalling gave
//! (141/143), and only datagrams from that same end point taken in (the
//! peer sends from the socket it named), so nobody else can play into a
//! call without spoofing its peer. It moves
//! whole datagrams; what they carry is `call::wire`'s business. A server
//! relay would be another pair of `VoiceOut`/`VoiceIn` over the same units.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chinwag_proto::voice::MAX_MEDIA_PACKET;

use crate::call::{VoiceIn, VoiceOut};
use crate::core::{Error, ErrorKind, Result};

/// How long the call's thread waits for a datagram before doing its
/// periodic work (the receiver report) and looking for a hang-up.
const RECV_POLL: Duration = Duration::from_millis(50);
/// A send that cannot leave within this is a broken socket, not a slow one.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

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

impl VoiceIn for Datagrams {
    fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the call is over"));
        }
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) if canonical(from) == self.peer && n <= MAX_MEDIA_PACKET => {
                Ok(Some(self.buf[..n].to_vec()))
            }
            Ok((n, from)) => {
                self.strangers += 1;
                if self.strangers.is_power_of_two() {
                    log::debug!(
                        "call socket: {} datagrams dropped (latest: {n} bytes from {from})",
                        self.strangers
                    );
                }
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
