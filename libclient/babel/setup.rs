//! Babel call set-up peer to peer, on library threads: the caller's
//! listener (`ring`), the callee's dialer (`dial`), and the TCP transport of
//! an established call (VoiceData frames). No lock is held across socket I/O.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::babel::{Decoder, Frame, MAX_VOICE};
use chinwag_proto::eintr;
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
        match eintr::retry(|| listener.accept()) {
            Ok((sock, from)) => {
                log::debug!("call with {peer}: connection from {from}");
                break sock;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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
    let input = VoiceFrames {
        sock: sock.try_clone().map_err(io)?,
        peer: peer.to_owned(),
        decoder,
        chunk: vec![0; READ_CHUNK],
        read_at: Instant::now(),
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
        // Signals neither fail the send nor stretch its time-out.
        eintr::write_all_within(
            VOICE_WRITE_TIMEOUT,
            |left| self.sock.set_write_timeout(Some(left)),
            |b| (&self.sock).write(b),
            &bytes,
        )
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
    /// When the latest read returned: the arrival of every frame it
    /// completed, also those decoded from the buffer later.
    read_at: Instant,
}

impl VoiceIn for VoiceFrames {
    fn recv(&mut self) -> Result<Option<(Vec<u8>, Instant)>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(Frame::VoiceData { data })) => return Ok(Some((data, self.read_at))),
                // Harmless repetition of the greeting.
                Ok(Some(Frame::ConnectionEstablished)) => return Ok(None),
                Ok(Some(other)) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "{} sent opcode {} on the call, which only the server sends",
                            self.peer,
                            other.opcode()
                        ),
                    ))
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("malformed frame from {}: {e}", self.peer),
                    ))
                }
            }
            match eintr::retry(|| self.sock.read(&mut self.chunk)) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        format!("{} hung up", self.peer),
                    ))
                }
                Ok(n) => {
                    self.read_at = Instant::now();
                    self.decoder.push(&self.chunk[..n]);
                }
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
