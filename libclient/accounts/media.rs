//! The media path of an accounts call the library carries: one UDP socket
//! per call, datagrams sent to the end point the call signalling gave
//! (141/143), and only datagrams from that same end point taken in (the
//! peer sends from the socket it named), so nobody else can play into a
//! call without spoofing its peer. It moves
//! whole datagrams; what they carry is `call::wire`'s business. A server
//! relay would be another pair of `VoiceOut`/`VoiceIn` over the same units.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::voice::MAX_MEDIA_PACKET;

use crate::call::{VoiceIn, VoiceOut};
use crate::core::{stamp, Error, ErrorKind, Result};

/// How long the call's thread waits for a datagram before doing its
/// periodic work (the receiver report) and looking for a hang-up.
const RECV_POLL: Duration = Duration::from_millis(50);
/// A send that cannot leave within this is a broken socket, not a slow one.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Datagrams one `try_recv` takes at most (the jitter buffer holds 64).
const DRAIN_MAX: usize = 64;

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
    // The kernel stamps each datagram when it arrives, so the thread that
    // plays can take datagrams that waited, and the jitter buffer still
    // sees when each arrived.
    stamp::enable(sock.as_raw_fd()).map_err(io)?;
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
        // SEND_TIMEOUT counts from here however many signals interrupt the
        // wait (each would restart SO_SNDTIMEO whole); a send no signal
        // interrupts makes no system call more.
        let sent = chinwag_proto::eintr::retry_within(
            SEND_TIMEOUT,
            |left| self.sock.set_write_timeout(Some(left)),
            || self.sock.send_to(unit, self.peer),
        );
        match sent {
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

impl Datagrams {
    fn stranger(&mut self, n: usize, from: Option<SocketAddr>) {
        self.strangers += 1;
        if self.strangers.is_power_of_two() {
            log::debug!(
                "call socket: {} datagrams dropped (latest: {n} bytes from {from:?})",
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
        let clock = stamp::Clocks::now();
        let mut taken = 0;
        for _ in 0..DRAIN_MAX {
            match stamp::recv(self.sock.as_raw_fd(), &mut self.buf) {
                Ok((n, Some(from), stamp))
                    if canonical(from) == self.peer && n <= MAX_MEDIA_PACKET =>
                {
                    take(&self.buf[..n], clock.arrival(stamp));
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

    fn recv(&mut self) -> Result<Option<(Vec<u8>, Instant)>> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the call is over"));
        }
        // Stamped as `try_recv` stamps: a datagram that waited while this
        // thread was busy (the call's first ones, before anyone plays)
        // keeps its kernel receive time, not the time it was read.
        match stamp::recv_wait(self.sock.as_raw_fd(), &mut self.buf) {
            Ok((n, Some(from), stamp)) if canonical(from) == self.peer && n <= MAX_MEDIA_PACKET => {
                // The clocks are read after the datagram: its stamp is in
                // their past.
                let at = stamp::Clocks::now().arrival(stamp);
                Ok(Some((self.buf[..n].to_vec(), at)))
            }
            Ok((n, from, _)) => {
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
    use std::net::Ipv4Addr;

    /// Enabling SO_TIMESTAMPNS turns the kernel's receive stamping on
    /// through a deferred static key (net_enable_timestamp): until its
    /// work item runs, a datagram is stamped when it is read instead.
    /// Under load that window is long; wait until a probe from `peer` to
    /// `to` comes back stamped with its arrival, not its reading.
    /// Enabling SO_TIMESTAMPNS turns the kernel's receive stamping on
    /// through a deferred static key (net_enable_timestamp): until its work
    /// item runs, a datagram is stamped when it is read instead. Under load
    /// that window is long; wait until a probe comes back stamped with its
    /// arrival, not its reading.
    fn stamping_on(input: &mut dyn VoiceIn, peer: &UdpSocket, to: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            peer.send_to(b"CWVC-probe", to).unwrap();
            let sent = Instant::now();
            std::thread::sleep(Duration::from_millis(20));
            let mut probe = Vec::new();
            input.try_recv(&mut |_, at| probe.push(at)).unwrap();
            if !probe.is_empty()
                && probe
                    .iter()
                    .all(|at| *at <= sent + Duration::from_millis(10))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the kernel never stamped on arrival"
            );
        }
    }

    /// A call's receiving half on 127.0.0.1 with kernel stamping on, the
    /// peer's socket, and the address the peer sends to.
    fn stamped_input() -> (UdpSocket, SocketAddr, Box<dyn VoiceIn>) {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ours = bind(lo, 0).unwrap();
        let peer = UdpSocket::bind((lo, 0)).unwrap();
        let to = SocketAddr::new(lo, port_of(&ours).unwrap());
        let (_out, mut input) = transport(ours, peer.local_addr().unwrap()).unwrap();
        stamping_on(&mut *input, &peer, to);
        (peer, to, input)
    }

    /// A datagram that waited in the socket, read by the call's own
    /// thread (`recv`), keeps its kernel arrival time, as `try_recv`'s do.
    #[test]
    fn a_datagram_the_call_thread_reads_late_keeps_its_kernel_arrival_time() {
        let (peer, to, mut input) = stamped_input();
        let before = Instant::now();
        peer.send_to(b"CWVC-late", to).unwrap();
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(80));
        let (unit, at) = input.recv().unwrap().expect("the datagram");
        assert_eq!(unit, b"CWVC-late");
        assert!(at + Duration::from_millis(1) >= before, "{at:?} {before:?}");
        assert!(at <= sent + Duration::from_millis(1), "{at:?} {sent:?}");
        // Nothing waiting: a short wait, then nothing.
        assert!(input.recv().unwrap().is_none());
    }

    /// The call's first datagrams, which wait in the socket while its
    /// thread is busy (here: its first receiver report's send stalls), are
    /// stamped with their arrival: the jitter buffer sees them 20 ms apart
    /// as sent, not as one burst at the time they were read.
    #[test]
    fn a_calls_first_datagrams_are_stamped_with_their_arrival_not_their_reading() {
        use crate::audio::{EncodedFrame, Profile};
        use crate::call::{Call, CallOwner};
        use crossbeam_channel::{bounded, Receiver, Sender};

        /// Stalls the first send (the call's first receiver report) until
        /// released.
        struct Stall {
            entered: Sender<()>,
            release: Receiver<()>,
        }
        impl VoiceOut for Stall {
            fn send(&self, _: &[u8]) -> Result<()> {
                let _ = self.entered.try_send(());
                let _ = self.release.recv_timeout(Duration::from_secs(20));
                Ok(())
            }
            fn shutdown(&self) {}
        }
        struct Nobody;
        impl CallOwner for Nobody {
            fn call_ended(&self, _: &str, _: u64, _: &Error, _: bool) {}
        }

        let (peer, to, input) = stamped_input();
        let (entered_tx, entered) = bounded(1);
        let (release, release_rx) = bounded::<()>(0);
        let owner: Arc<dyn CallOwner> = Arc::new(Nobody);
        let stall = Stall {
            entered: entered_tx,
            release: release_rx,
        };
        let (call, _) = Call::start(
            "peer".into(),
            1,
            Profile::Accounts,
            Box::new(stall),
            input,
            Arc::downgrade(&owner),
        )
        .unwrap();
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the call's thread sends its first report");
        // The call's thread is held: these wait in the socket. Each
        // carries the media time it was sent at, so on their kernel
        // arrival times they show no jitter, however the sleeps run.
        let frames = 10u16;
        let first = Instant::now();
        for seq in 0..frames {
            let elapsed = first.elapsed().as_micros() as u64;
            let frame = EncodedFrame {
                seq,
                timestamp: (elapsed * 48 / 1000) as u32,
                opus: vec![0xf8, 0xff, 0xfe],
            };
            peer.send_to(&frame.accounts_packet(), to).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(release);
        let deadline = Instant::now() + Duration::from_secs(10);
        while call.stats().packets_received < u64::from(frames) {
            assert!(Instant::now() < deadline, "{:?}", call.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        // Read as one burst at their reading, 20 ms of media apart, they
        // would show about 9 ms of jitter (RFC 3550 over 9 gaps of 20 ms).
        let jitter = call.stats().jitter_ms;
        eprintln!("jitter of the first datagrams: {jitter} ms");
        assert!(jitter < 4.0, "jitter {jitter} ms");
    }

    /// A datagram that waited in the socket keeps the time the kernel
    /// received it; a stranger's is dropped; nothing waiting is no wait.
    #[test]
    fn waiting_datagrams_are_taken_with_their_kernel_arrival_time() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ours = bind(lo, 0).unwrap();
        // Far longer than any scheduling delay: a wait would show.
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
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
            started.elapsed() < Duration::from_secs(10),
            "taking nothing does not wait"
        );

        stamping_on(&mut *input, &peer, to);

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

    /// A send that cannot leave fails after SEND_TIMEOUT even while signals
    /// keep interrupting it (SIGUSR2, caught without SA_RESTART, sent only
    /// to the sending thread): retried with the socket's whole time-out
    /// after each EINTR, it hung for as long as the signals lasted. In a
    /// network namespace of its own whose loopback holds every datagram
    /// (a token bucket of one byte a second), so the socket's send buffer
    /// fills and a send blocks.
    #[test]
    fn a_send_that_cannot_leave_fails_in_time_under_a_stream_of_signals() {
        const NAME: &str = "accounts::media::tests::\
                            a_send_that_cannot_leave_fails_in_time_under_a_stream_of_signals";
        if !netns::in_own_netns_with(
            NAME,
            "tc qdisc add dev lo root tbf rate 8bit burst 1600 limit 10000000",
        ) {
            return;
        }
        storm::catch_without_restart(libc::SIGUSR2);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ours = bind(lo, 0).unwrap();
        let peer = UdpSocket::bind((lo, 0)).unwrap();
        let (out, _input) = transport(ours, peer.local_addr().unwrap()).unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
            // Until the send buffer is full and a send fails (bounded:
            // the buffer holds a few hundred).
            for sent in 0..100_000u32 {
                if let Err(e) = out.send(&[0xfc; 100]) {
                    return (sent, e);
                }
            }
            panic!("100,000 datagrams left a loopback that holds them all");
        });
        let tid = tid_rx.recv().unwrap();
        // Compared with the storm's length, not a few seconds: a loaded
        // machine may be slow to run the thread at all.
        let storm = Duration::from_secs(30);
        storm::pester(tid, libc::SIGUSR2, storm, || !sender.is_finished());
        let took = started.elapsed();
        let (sent, e) = sender.join().unwrap();
        assert_eq!(e.code, ErrorKind::Io, "after {sent} datagrams: {e:?}");
        assert!(sent > 0, "not one datagram left");
        assert!(
            took < storm,
            "a {SEND_TIMEOUT:?} send time-out took {took:?}: as long as the signals lasted"
        );
    }
}

/// Signals for the tests (tests/common/storm.rs, shared with the
/// integration tests).
#[cfg(test)]
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../tests/common/storm.rs"]
mod storm;

/// Tests in a network namespace of their own (tests/common/netns.rs).
#[cfg(test)]
#[path = "../../tests/common/netns.rs"]
mod netns;
