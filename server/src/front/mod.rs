//! Front-ends: one per dialect, each translating its wire format to hub calls
//! and hub events back to its wire format. Policy lives in the hub (and the
//! accounts service). This file holds what every TCP front-end shares: the
//! connection's start, its read-and-decode loop, and its end.

pub mod accounts;
pub mod babel;
pub mod chatos;
pub mod relay;
pub mod rooms;

use std::io;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use chinwag_proto::{DecodeRef, Decoder};

use crate::hub::Dialect;
use crate::metrics::{DropReason, Metrics};
use crate::net::{Batch, Outbound, ReadBuf, ReadEnd, STACK_READ};
use crate::Shared;

/// The smallest outbound queue, whatever the send buffer takes of the budget.
const MIN_QUEUE: usize = 2048;

/// Why a connection ends, for its log line.
pub enum End {
    Eof,
    Io(io::Error),
    /// Bad bytes or a frame out of place: logged at WARN.
    Protocol(String),
    /// Closed by the server for a reason that is nobody's fault (a private
    /// end whose partner will never come): logged at INFO.
    Closed(String),
    LoginTimeout,
    /// The socket became one end of a chatos private relay and was served
    /// to the end; it is not shut down again.
    Relayed,
}

/// One accepted TCP connection of some dialect.
pub struct Conn {
    pub stream: Arc<TcpStream>,
    pub out: Arc<Outbound>,
    pub ip: IpAddr,
    pub label: String,
    /// Counts the connection open until it is dropped.
    open: OpenGauge,
    /// Deliveries are sent once a whole read's frames are handled (chatos,
    /// babel: handlers never wait), not after each frame (accounts: a
    /// handler may wait for a password hash or a full store queue, and must
    /// not hold other connections' bytes meanwhile).
    batch_reads: bool,
}

/// Keeps the per-dialect connection gauge right however the thread ends.
struct OpenGauge {
    metrics: Arc<Metrics>,
    dialect: Dialect,
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.dialect);
    }
}

impl Conn {
    pub fn open(stream: Arc<TcpStream>, shared: &Shared, dialect: Dialect) -> Option<Conn> {
        let peer = stream.peer_addr().ok()?;
        let label = format!("{} {peer}", dialect.name());
        let _ = stream.set_nodelay(true);
        let metrics = shared.hub.metrics().clone();
        metrics.connection_opened(dialect);
        let open = OpenGauge {
            metrics: metrics.clone(),
            dialect,
        };
        // The kernel's buffer is part of the budget: the queue holds the rest.
        let kernel = crate::net::bound_send_buffer(&stream, shared.cfg.send_buffer);
        let out = Outbound::new(
            stream.clone(),
            &shared.flush,
            shared
                .cfg
                .outbound_limit
                .saturating_sub(kernel)
                .max(MIN_QUEUE),
            shared.cfg.write_timeout(),
            label.clone(),
            metrics,
        );
        crate::logs::peer_log!(log::Level::Info, peer.ip(), "connect", "{label}: connected");
        Some(Conn {
            stream,
            out,
            ip: peer.ip(),
            label,
            open,
            batch_reads: dialect != Dialect::Accounts,
        })
    }

    /// Read, decode and hand frames to `on_frame` until the connection
    /// ends or `on_frame` ends it. While `deadline(state)` gives a time (the
    /// login deadline) reads stop there; after it, the connection's own
    /// reading pauses while its outbound queue is over half full. Each frame
    /// is logged at trace level in its redacted form (no passwords, texts
    /// or voice data: see `chinwag_proto::Redact`). A frame is decoded in
    /// place where its dialect allows (`DecodeRef`: a chatos frame's
    /// strings point into the read buffer) and comes with the bytes read
    /// behind it, which a frame that ends the framing (LOGIN_PRIVATE) takes.
    pub fn frames<T: DecodeRef, S>(
        &self,
        shared: &Shared,
        state: &mut S,
        deadline: impl Fn(&S) -> Option<Instant>,
        mut on_frame: impl FnMut(&mut S, T::Frame<'_>, &[u8]) -> Result<(), End>,
    ) -> End {
        let mut decoder = Decoder::<T>::new();
        let mut rbuf = ReadBuf::default();
        let mut small = [0u8; STACK_READ];
        let mut logging_in = true;
        loop {
            let limit = deadline(state);
            if limit.is_none() {
                if logging_in {
                    // Logged in: most connections now wait for a long time.
                    // Give back the stack pages the login touched (names
                    // policy, hub) below this frame.
                    logging_in = false;
                    crate::pool::release_stack();
                }
                self.out.throttle(shared.cfg.write_timeout());
            }
            let bytes = match rbuf.read(&mut small, &self.stream, limit) {
                Ok(bytes) => bytes,
                Err(ReadEnd::Eof) => return End::Eof,
                Err(ReadEnd::Io(e)) => return End::Io(e),
                Err(ReadEnd::Deadline) => return End::LoginTimeout,
            };
            decoder.push(bytes);
            if let Err(end) = self.handle_read(state, &mut decoder, &mut on_frame) {
                return end;
            }
        }
    }

    /// Every whole frame of the bytes just read, through `on_frame`. Out of
    /// line: what decoding and handling keep on the stack lives below the
    /// reading frame, not in it, so an idle connection's blocked read stays
    /// within the two stack pages it touches (docs/architecture.md); and
    /// the stack pages handling touches are below that frame, where the
    /// login's release gives them back.
    #[inline(never)]
    fn handle_read<T: DecodeRef, S>(
        &self,
        state: &mut S,
        decoder: &mut Decoder<T>,
        on_frame: &mut impl FnMut(&mut S, T::Frame<'_>, &[u8]) -> Result<(), End>,
    ) -> Result<(), End> {
        // What this read's frames deliver to idle queues leaves from this
        // thread once they are all handled (or after each frame, where a
        // handler may wait), before it reads again: see `net::Batch`.
        let batch = Batch::open();
        loop {
            let (frame, rest) = match decoder.next_ref() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Protocol(format!("framing error: {e}"))),
            };
            if log::log_enabled!(log::Level::Trace) {
                use chinwag_proto::Redact;
                log::trace!("{}: {}", self.label, frame.redacted());
            }
            on_frame(state, frame, rest)?;
            if !self.batch_reads {
                batch.send();
            }
        }
    }

    /// Close the connection's output and socket, and log why it ended;
    /// `who` is the user's name once known.
    pub fn finish(&self, end: End, who: &str) {
        self.out.close();
        if !matches!(end, End::Relayed) {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        let (label, ip) = (&self.label, self.ip);
        match end {
            End::Protocol(_) => self.open.metrics.dropped(DropReason::Protocol),
            End::LoginTimeout => self.open.metrics.dropped(DropReason::LoginTimeout),
            _ => {}
        }
        use crate::logs::peer_log;
        use log::Level::{Info, Warn};
        match end {
            End::Eof => peer_log!(Info, ip, "end", "{label} ({who}): disconnected"),
            End::Io(e) => peer_log!(Info, ip, "end", "{label} ({who}): connection error: {e}"),
            End::Protocol(why) => peer_log!(Warn, ip, "protocol", "{label} ({who}): closed: {why}"),
            End::Closed(why) => peer_log!(Info, ip, "end", "{label} ({who}): closed: {why}"),
            End::LoginTimeout => peer_log!(
                Info,
                ip,
                "end",
                "{label}: closed: no login within the deadline"
            ),
            End::Relayed => peer_log!(Info, ip, "end", "{label}: private connection ended"),
        }
    }
}
