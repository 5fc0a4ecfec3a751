//! Babel call set-up peer to peer, on library threads: the caller's
//! listener (`ring`), the callee's dialer (`dial`), and the TCP transport of
//! an established call (VoiceData frames). No lock is held across socket I/O.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::babel::{Decoder, Frame, MAX_VOICE};
use parking_lot::Mutex;

use super::Babel;
use crate::call::{VoiceIn, VoiceOut};
use crate::core::tcp::{self, Silence};
use crate::core::{Error, ErrorKind, Result, CONNECT_TIMEOUT};

/// A placed call's listener waits this long for the callee to connect; the
/// server relays a refusal only within 60 s of the request, too.
const RING_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a ringing listener looks for the callee and for a cancellation.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// The callee waits this long for ConnectionEstablished once connected;
/// the caller's library sends it as soon as it accepts.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer that takes nothing for this long is gone; a send fails then
/// rather than stalling the application's audio thread for ever.
const VOICE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the peer per call.
const READ_CHUNK: usize = 16 * 1024;
/// Reads the thread that plays makes at most per pull (each up to
/// READ_CHUNK bytes: far more than the voice of one pull).
const READS_PER_PULL: usize = 4;

/// Where to listen for the callee, and the host to put in CallRequest.
pub(super) fn listen_address(
    server: &TcpStream,
    host: &str,
    port: u16,
) -> Result<(SocketAddr, String)> {
    if host.is_empty() {
        // The interface that reaches the server is the one the server sees
        // us at, and the host it fills in for the callee.
        let local = server
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, format!("socket: {e}")))?;
        return Ok((SocketAddr::new(local.ip(), port), String::new()));
    }
    let invalid = |what: String| Error::new(ErrorKind::InvalidArgument, what);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("{host} has no address")))?;
    // A wildcard cannot be dialled: let the server fill in what it sees.
    let advertised = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => String::new(),
        _ => host.to_owned(),
    };
    Ok((addr, advertised))
}

/// The caller's side: wait for the callee's connection, greet it with
/// ConnectionEstablished, and hand the call over.
pub(super) fn ring(
    babel: &Arc<Babel>,
    peer: &str,
    token: u64,
    cancel: &AtomicBool,
    listener: TcpListener,
) {
    let deadline = Instant::now() + RING_TIMEOUT;
    let sock = loop {
        if cancel.load(Ordering::Acquire) || babel.core.closed_locally() {
            return;
        }
        match listener.accept() {
            Ok((sock, from)) => {
                log::debug!("call with {peer}: connection from {from}");
                break sock;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = Error::new(ErrorKind::Io, format!("call listener failed: {e}"));
                return babel.call_failed(peer, token, e);
            }
        }
        if Instant::now() >= deadline {
            let e = Error::new(
                ErrorKind::Timeout,
                format!("{peer} did not connect within {} s", RING_TIMEOUT.as_secs()),
            );
            return babel.call_failed(peer, token, e);
        }
        std::thread::sleep(ACCEPT_POLL);
    };
    // One connection per call: the listener closes here.
    drop(listener);
    let greeted = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .and_then(|()| (&sock).write_all(&Frame::ConnectionEstablished.to_bytes()));
    if let Err(e) = greeted {
        let e = Error::new(
            ErrorKind::Io,
            format!("greeting {peer}'s connection failed: {e}"),
        );
        return babel.call_failed(peer, token, e);
    }
    babel.establish_call(peer, token, cancel, sock, Decoder::new());
}

/// The callee's side: connect to the caller, wait for ConnectionEstablished,
/// and hand the call over. On failure the caller is told (CallRefused), so
/// it stops ringing.
pub(super) fn dial(
    babel: &Arc<Babel>,
    peer: &str,
    token: u64,
    cancel: &AtomicBool,
    host: &str,
    port: u16,
) {
    match connect_to_caller(babel, token, host, port) {
        Ok((sock, decoder)) => babel.establish_call(peer, token, cancel, sock, decoder),
        Err(e) => {
            if cancel.load(Ordering::Acquire) || babel.core.closed_locally() {
                return;
            }
            let _ = babel.send(&Frame::CallRefused {
                contact: peer.to_owned(),
            });
            babel.call_failed(peer, token, e);
        }
    }
}

fn connect_to_caller(
    babel: &Babel,
    token: u64,
    host: &str,
    port: u16,
) -> Result<(TcpStream, Decoder)> {
    if host.is_empty() || port == 0 {
        return Err(Error::new(
            ErrorKind::ConnectFailed,
            format!("the call request gave no usable end point ({host:?}:{port})"),
        ));
    }
    let sock = tcp::dial(host, port, "the caller")?;
    // Registered so that closing the client wakes the wait below.
    babel.core.watch_socket(token, &sock)?;
    let result = tcp::first_frame::<Frame>(&sock, ESTABLISH_TIMEOUT);
    babel.core.unwatch_socket(token);
    match result {
        Ok((Frame::ConnectionEstablished, decoder)) => Ok((sock, decoder)),
        Ok((other, _)) => Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "expected ConnectionEstablished, the caller sent opcode {}",
                other.opcode()
            ),
        )),
        Err(Silence::Malformed(e)) => Err(Error::new(
            ErrorKind::Protocol,
            format!("malformed frame from the caller: {e}"),
        )),
        Err(Silence::Eof) => Err(Error::new(
            ErrorKind::Closed,
            "the caller closed the connection before ConnectionEstablished",
        )),
        Err(Silence::TimedOut) => Err(Error::new(
            ErrorKind::Timeout,
            "the caller did not send ConnectionEstablished in time",
        )),
        Err(Silence::Io(e)) => Err(Error::new(ErrorKind::Io, format!("call socket: {e}"))),
    }
}

/// The transport of an established call: VoiceData frames on `sock`;
/// `decoder` holds any bytes read past ConnectionEstablished.
pub(super) fn voice(
    sock: TcpStream,
    peer: &str,
    decoder: Decoder,
) -> Result<(Box<dyn VoiceOut>, Box<dyn VoiceIn>)> {
    let io = |e: io::Error| Error::new(ErrorKind::Io, format!("call socket: {e}"));
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(None).map_err(io)?;
    sock.set_write_timeout(Some(VOICE_WRITE_TIMEOUT))
        .map_err(io)?;
    // Segments are stamped when they arrive, so the thread that plays can
    // read frames that waited with their arrival times.
    crate::core::stamp::enable(sock.as_raw_fd()).map_err(io)?;
    let input = VoiceFrames {
        sock: sock.try_clone().map_err(io)?,
        peer: peer.to_owned(),
        decoder,
        chunk: vec![0; READ_CHUNK],
    };
    let out = VoiceSink {
        sock,
        write_lock: Mutex::new(()),
    };
    Ok((Box::new(out), Box::new(input)))
}

struct VoiceSink {
    sock: TcpStream,
    write_lock: Mutex<()>,
}

impl VoiceOut for VoiceSink {
    fn send(&self, payload: &[u8]) -> Result<()> {
        crate::core::check_len_bytes("babel", "voice payload", payload.len(), MAX_VOICE)?;
        let bytes = Frame::VoiceData {
            data: payload.to_vec(),
        }
        .to_bytes();
        let _g = self.write_lock.lock();
        (&self.sock)
            .write_all(&bytes)
            .map_err(|e| Error::new(ErrorKind::Io, format!("sending voice failed: {e}")))
    }

    fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

struct VoiceFrames {
    sock: TcpStream,
    peer: String,
    decoder: Decoder,
    chunk: Vec<u8>,
}

impl VoiceFrames {
    /// The next whole frame already read: `Some(None)` for one that
    /// carries no voice, `None` when more bytes are needed.
    fn decoded(&mut self) -> Result<Option<Option<Vec<u8>>>> {
        match self.decoder.next_frame() {
            Ok(Some(Frame::VoiceData { data })) => Ok(Some(Some(data))),
            // Harmless repetition of the greeting.
            Ok(Some(Frame::ConnectionEstablished)) => Ok(Some(None)),
            Ok(Some(other)) => Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{} sent opcode {} on the call, which only the server sends",
                    self.peer,
                    other.opcode()
                ),
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::new(
                ErrorKind::Protocol,
                format!("malformed frame from {}: {e}", self.peer),
            )),
        }
    }

    fn hung_up(&self) -> Error {
        Error::new(ErrorKind::Closed, format!("{} hung up", self.peer))
    }
}

impl VoiceIn for VoiceFrames {
    fn stamped(&self) -> bool {
        true
    }

    fn try_recv(&mut self, take: &mut dyn FnMut(&[u8], Instant)) -> Result<usize> {
        let clock = crate::core::stamp::Clocks::now();
        let mut taken = 0;
        // Frames the call's thread read past: they arrived by now.
        let mut at = clock.arrival(None);
        // Bounded: a few reads' worth per pull; the rest waits in the socket.
        for _ in 0..READS_PER_PULL {
            while let Some(frame) = self.decoded()? {
                if let Some(data) = frame {
                    take(&data, at);
                    taken += 1;
                }
            }
            match crate::core::stamp::recv(self.sock.as_raw_fd(), &mut self.chunk) {
                Ok((0, _, _)) => return Err(self.hung_up()),
                Ok((n, _, stamp)) => {
                    // A frame completed by this read arrived with its last
                    // segment, the one stamped.
                    at = clock.arrival(stamp);
                    self.decoder.push(&self.chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("the connection with {} failed: {e}", self.peer),
                    ))
                }
            }
        }
        while let Some(frame) = self.decoded()? {
            if let Some(data) = frame {
                take(&data, at);
                taken += 1;
            }
        }
        Ok(taken)
    }

    fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.decoded()? {
                return Ok(frame);
            }
            match self.sock.read(&mut self.chunk) {
                Ok(0) => return Err(self.hung_up()),
                Ok(n) => self.decoder.push(&self.chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("the connection with {} failed: {e}", self.peer),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Frames that waited in the socket are read by whoever plays, each
    /// with the kernel's receive time of its segment; the end of the
    /// connection ends the call.
    #[test]
    fn waiting_frames_are_taken_with_their_kernel_arrival_time() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.set_nodelay(true).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let (_out, mut input) = voice(ours, "bo", Decoder::new()).unwrap();
        assert!(input.stamped());
        let mut got = Vec::new();
        assert_eq!(
            input
                .try_recv(&mut |d, at| got.push((d.to_vec(), at)))
                .unwrap(),
            0
        );

        let before = Instant::now();
        for d in [&b"one"[..], b"two"] {
            let f = Frame::VoiceData { data: d.to_vec() }.to_bytes();
            peer.write_all(&f).unwrap();
        }
        let sent = Instant::now();
        // Loopback delivers within the write; the age is what is checked.
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            input
                .try_recv(&mut |d, at| got.push((d.to_vec(), at)))
                .unwrap(),
            2
        );
        assert_eq!(got[0].0, b"one");
        assert_eq!(got[1].0, b"two");
        for (_, at) in &got {
            assert!(
                *at + Duration::from_millis(1) >= before,
                "{at:?} {before:?}"
            );
            assert!(*at <= sent + Duration::from_millis(1), "{at:?} {sent:?}");
        }
        drop(peer);
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            match input.try_recv(&mut |_, _| {}) {
                Err(e) => break e,
                Ok(_) => assert!(Instant::now() < deadline, "the end was not seen"),
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(end.code, ErrorKind::Closed);
    }
}
