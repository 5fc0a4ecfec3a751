//! A babel call once its peer-to-peer TCP connection is open: VoiceData
//! frames both ways, one reader thread per call that queues what arrives.
//! Owns its socket; it reaches the client only weakly (to report the end of
//! the call), so a call never keeps a freed client alive, and never holds a
//! lock across socket I/O except its own write lock.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chinwag_proto::babel::{Decoder, Frame, MAX_VOICE};
use parking_lot::{Condvar, Mutex};

use super::{Error, Event, Result, Shared};
use crate::ffi::codes::cw_result;

/// Voice payloads received and not yet taken: about 5 s of 20 ms frames.
/// On overflow the oldest is dropped, because late voice is useless.
const VOICE_QUEUE: usize = 256;
/// A peer that takes nothing for this long is gone; a send fails then
/// rather than stalling the application's audio thread for ever.
const VOICE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the peer per call.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Default)]
struct Inbox {
    packets: VecDeque<Vec<u8>>,
    /// Packets dropped because the application did not take them in time.
    dropped: u64,
    /// Why the call is over, once it is.
    ended: Option<Error>,
}

struct Inner {
    peer: String,
    sock: TcpStream,
    write_lock: Mutex<()>,
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    /// Hung up locally: the end is not reported as an event.
    hung_up: AtomicBool,
}

/// An open babel call. Any thread may send while another receives; sends
/// are serialised with each other, and so are receives.
pub struct Call {
    inner: Arc<Inner>,
    token: u64,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

/// What the client keeps of an open call, to hang it up by name.
#[derive(Clone)]
pub(super) struct CallLink(Weak<Inner>);

impl CallLink {
    pub(super) fn hangup(&self) {
        if let Some(inner) = self.0.upgrade() {
            inner.hangup();
        }
    }
}

impl Inner {
    fn hangup(&self) {
        if self.hung_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        let mut inbox = self.inbox.lock();
        if inbox.ended.is_none() {
            inbox.ended = Some(Error::new(cw_result::CW_CLOSED, "the call was hung up"));
        }
        drop(inbox);
        self.arrived.notify_all();
    }
}

impl Call {
    /// Start the reader of an established connection. `decoder` holds any
    /// bytes read past ConnectionEstablished.
    pub(super) fn start(
        sock: TcpStream,
        peer: String,
        token: u64,
        decoder: Decoder,
        client: Weak<Shared>,
    ) -> Result<(Call, CallLink)> {
        let io = |e: io::Error| Error::new(cw_result::CW_IO, format!("call socket: {e}"));
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(None).map_err(io)?;
        sock.set_write_timeout(Some(VOICE_WRITE_TIMEOUT))
            .map_err(io)?;
        let reader_sock = sock.try_clone().map_err(io)?;
        let inner = Arc::new(Inner {
            peer,
            sock,
            write_lock: Mutex::new(()),
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            hung_up: AtomicBool::new(false),
        });
        let i2 = inner.clone();
        let reader = std::thread::Builder::new()
            .name("chinwag-call".into())
            .spawn(move || read_loop(i2, reader_sock, decoder, token, client))
            .map_err(|e| {
                Error::new(
                    cw_result::CW_INTERNAL,
                    format!("cannot start a call thread: {e}"),
                )
            })?;
        let link = CallLink(Arc::downgrade(&inner));
        Ok((
            Call {
                inner,
                token,
                reader: Mutex::new(Some(reader)),
            },
            link,
        ))
    }

    /// The name of the user at the other end.
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// Send one VoiceData payload (one Opus packet in the original client).
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_VOICE {
            return Err(Error::new(
                cw_result::CW_TOO_LONG,
                format!(
                    "voice payload is {} bytes; babel allows at most {MAX_VOICE}",
                    payload.len()
                ),
            ));
        }
        if let Some(e) = self.inner.inbox.lock().ended.clone() {
            return Err(Error::new(cw_result::CW_CLOSED, e.message));
        }
        let bytes = Frame::VoiceData {
            data: payload.to_vec(),
        }
        .to_bytes();
        let _g = self.inner.write_lock.lock();
        (&self.inner.sock).write_all(&bytes).map_err(|e| {
            if self.inner.hung_up.load(Ordering::Acquire) {
                Error::new(cw_result::CW_CLOSED, "the call was hung up")
            } else {
                Error::new(cw_result::CW_IO, format!("sending voice failed: {e}"))
            }
        })
    }

    /// The next payload into `buf`, waiting at most `timeout` (`None`:
    /// without limit). `CW_TOO_LONG` leaves a payload larger than `buf`
    /// queued; `CW_CLOSED` once the call is over and nothing is left.
    pub fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inbox = self.inner.inbox.lock();
        loop {
            if let Some(p) = inbox.packets.front() {
                if p.len() > buf.len() {
                    return Err(Error::new(
                        cw_result::CW_TOO_LONG,
                        format!(
                            "the next voice payload is {} bytes; the buffer holds {}",
                            p.len(),
                            buf.len()
                        ),
                    ));
                }
                let p = inbox.packets.pop_front().expect("front exists");
                buf[..p.len()].copy_from_slice(&p);
                return Ok(p.len());
            }
            if let Some(e) = &inbox.ended {
                return Err(Error::new(cw_result::CW_CLOSED, e.message.clone()));
            }
            match deadline {
                None => self.inner.arrived.wait(&mut inbox),
                Some(d) => {
                    let expired = Instant::now() >= d
                        || self.inner.arrived.wait_until(&mut inbox, d).timed_out();
                    if expired && inbox.packets.is_empty() && inbox.ended.is_none() {
                        return Err(Error::new(
                            cw_result::CW_TIMEOUT,
                            "no voice before the time limit",
                        ));
                    }
                }
            }
        }
    }

    /// The next payload as a vector; see [`Call::recv_into`].
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; MAX_VOICE];
        let n = self.recv_into(&mut buf, timeout)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Payloads dropped so far because they were not taken in time.
    pub fn dropped(&self) -> u64 {
        self.inner.inbox.lock().dropped
    }

    /// Hang up: close the peer-to-peer connection (the peer gets
    /// CALL_ENDED). Idempotent; blocked receivers wake with `CW_CLOSED`.
    pub fn hangup(&self) {
        self.inner.hangup();
    }

    pub(super) fn token(&self) -> u64 {
        self.token
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.inner.hangup();
        if let Some(t) = self.reader.lock().take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn read_loop(
    inner: Arc<Inner>,
    mut sock: TcpStream,
    mut decoder: Decoder,
    token: u64,
    client: Weak<Shared>,
) {
    let mut chunk = vec![0u8; READ_CHUNK];
    let end: Error = 'read: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(Frame::VoiceData { data })) => {
                    let mut inbox = inner.inbox.lock();
                    if inbox.packets.len() >= VOICE_QUEUE {
                        inbox.packets.pop_front();
                        inbox.dropped += 1;
                    }
                    inbox.packets.push_back(data);
                    drop(inbox);
                    inner.arrived.notify_one();
                }
                // Harmless repetition of the greeting.
                Ok(Some(Frame::ConnectionEstablished)) => {}
                Ok(Some(other)) => {
                    break 'read Error::new(
                        cw_result::CW_PROTOCOL,
                        format!(
                            "{} sent opcode {} on the call, which only the server sends",
                            inner.peer,
                            other.opcode()
                        ),
                    )
                }
                Ok(None) => break,
                Err(e) => {
                    break 'read Error::new(
                        cw_result::CW_PROTOCOL,
                        format!("malformed frame from {}: {e}", inner.peer),
                    )
                }
            }
        }
        match sock.read(&mut chunk) {
            Ok(0) => break Error::new(cw_result::CW_CLOSED, format!("{} hung up", inner.peer)),
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                break Error::new(
                    cw_result::CW_IO,
                    format!("the connection with {} failed: {e}", inner.peer),
                )
            }
        }
    };
    let local = inner.hung_up.load(Ordering::Acquire);
    if end.code == cw_result::CW_PROTOCOL {
        log::warn!("call ended: {}", end.message);
    } else if !local {
        log::info!("call ended: {}", end.message);
    }
    let _ = inner.sock.shutdown(Shutdown::Both);
    {
        let mut inbox = inner.inbox.lock();
        if inbox.ended.is_none() {
            inbox.ended = Some(end.clone());
        }
    }
    inner.arrived.notify_all();
    if let Some(shared) = client.upgrade() {
        shared.babel.call_over(&inner.peer, token);
        if !local {
            shared.emit(Event::CallEnded {
                peer: inner.peer.clone(),
                code: end.code,
                text: end.message,
            });
        }
    }
}
