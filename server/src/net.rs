//! Per-connection plumbing shared by every TCP front-end: the bounded
//! outbound queue and the threads that drain it, and the registry of live
//! connections used for the connection limit and for shutdown. Knows nothing
//! of dialects.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::metrics::{DropReason, Metrics};

/// Stack for connection threads: they keep their buffers on the heap, so a
/// small stack keeps 10,000 idle connections cheap.
pub const CONN_STACK: usize = 128 * 1024;
/// The most one blocking write of a backlog is given at once.
const BLOCKING_CHUNK: usize = 16 * 1024;
/// A flusher's spare buffer is returned to the allocator above this size.
const SPARE_KEEP: usize = 256 * 1024;

/// Fix an accepted socket's kernel send buffer at `bytes` (SO_SNDBUF, which
/// also turns off the kernel's autotuning, that would grow it to megabytes)
/// and return what the kernel really reserves (Linux doubles the figure).
/// A reader that stops reading then fills it in moments, and the write
/// timeout, not megabytes of kernel memory, decides when it is cut.
pub fn bound_send_buffer(stream: &TcpStream, bytes: usize) -> usize {
    let sock = socket2::SockRef::from(stream);
    if let Err(e) = sock.set_send_buffer_size(bytes) {
        log::debug!("cannot set SO_SNDBUF: {e}");
    }
    sock.send_buffer_size().unwrap_or(bytes)
}

/// Give a socket that became one end of a relay the largest send buffer the
/// system allows (capped by net.core.wmem_max): bulk bytes, not chat.
pub fn widen_send_buffer(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(RELAY_SEND_BUFFER);
}

/// Asked for relay ends; the kernel caps it at net.core.wmem_max.
const RELAY_SEND_BUFFER: usize = 4 << 20;

impl OutState {
    /// Everything not yet written: the queue and what a writer holds.
    fn queued(&self) -> usize {
        self.buf.len() + self.in_flight
    }
}

struct OutState {
    buf: Vec<u8>,
    /// Someone owns the socket's write side right now (a pool flusher, the
    /// connection's own backlog writer, or its reader answering inline);
    /// everyone else only appends. This one flag keeps the bytes in order.
    flushing: bool,
    closed: bool,
    /// Bytes a writer took out of `buf` and has not written yet: still
    /// queued, so they count against the limit.
    in_flight: usize,
    /// Doorbell of the connection's backlog writer, once it exists.
    bell: Option<Sender<()>>,
}

/// Bytes waiting to go out on one connection.
///
/// Anyone may append (the hub delivering from another user's thread); the
/// appender never writes to the socket, so a slow reader delays nobody. A
/// connection with bytes to send is handed once to the shared [`FlushPool`],
/// whose few threads send each queue with one non-blocking `send`, however
/// many frames piled up meanwhile. Only a connection whose socket buffer is
/// full gets a thread of its own (started on first need) that waits for the
/// reader with blocking writes. When the queue would pass `limit` bytes the
/// peer is dropped instead.
pub struct Outbound {
    stream: Arc<TcpStream>,
    state: Mutex<OutState>,
    /// Signalled each time a batch is handed to the kernel.
    drained: Condvar,
    pool: Arc<FlushPool>,
    limit: usize,
    label: String,
    /// Counts why the server dropped this peer.
    metrics: Arc<Metrics>,
}

impl Outbound {
    pub fn new(
        stream: Arc<TcpStream>,
        pool: &Arc<FlushPool>,
        limit: usize,
        write_timeout: Duration,
        label: String,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let _ = stream.set_write_timeout(Some(write_timeout));
        Arc::new(Outbound {
            stream,
            state: Mutex::new(OutState {
                buf: Vec::new(),
                flushing: false,
                closed: false,
                in_flight: 0,
                bell: None,
            }),
            drained: Condvar::new(),
            pool: pool.clone(),
            limit,
            label,
            metrics,
        })
    }

    /// Queue bytes written by `encode`. Returns false if the connection is
    /// closed or was just dropped for exceeding its queue bound.
    pub fn enqueue(self: &Arc<Self>, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        encode(&mut st.buf);
        if st.queued() > self.limit {
            drop(st);
            self.drop_peer(&format!(
                "dropped, {} bytes queued for a reader that does not read",
                self.limit
            ));
            return false;
        }
        if st.flushing {
            return true;
        }
        st.flushing = true;
        drop(st);
        self.pool.schedule(self.clone());
        true
    }

    /// Send a reply from the connection's own reader thread. When nothing is
    /// queued the bytes are written inline: the reply is on its way before
    /// the reader reads again, with no hand-off to another thread.
    pub fn reply(self: &Arc<Self>, bytes: &[u8]) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        if st.flushing || !st.buf.is_empty() {
            drop(st);
            return self.enqueue(|b| b.extend_from_slice(bytes));
        }
        st.flushing = true;
        drop(st);
        if let Err(e) = (&*self.stream).write_all(bytes) {
            self.fail(&e);
            return false;
        }
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        if st.buf.is_empty() {
            st.flushing = false;
            return true;
        }
        drop(st);
        self.pool.schedule(self.clone());
        true
    }

    /// Queue `bytes` and take the write side for the calling (reader)
    /// thread, which must then call [`Outbound::flush_held`]. For answers
    /// that must precede anything other users may queue: take it while the
    /// connection is still invisible to them. Returns false if someone
    /// already owned the write side (the bytes are queued all the same).
    pub fn hold(&self, bytes: &[u8]) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        st.buf.extend_from_slice(bytes);
        if st.flushing {
            return false;
        }
        st.flushing = true;
        true
    }

    /// Write everything queued on the calling thread, then give the write
    /// side back. Only after a successful [`Outbound::hold`].
    pub fn flush_held(self: &Arc<Self>) {
        self.drain_blocking(&mut Vec::new());
    }

    /// Blocking writes by the thread that owns the write side, until the
    /// queue is empty (the write side is then released: true) or the
    /// connection fails or closes (false).
    fn drain_blocking(&self, spare: &mut Vec<u8>) -> bool {
        loop {
            {
                let mut st = self.state.lock();
                if st.closed {
                    return false;
                }
                if st.buf.is_empty() {
                    st.flushing = false;
                    return true;
                }
                std::mem::swap(&mut st.buf, spare);
                st.in_flight = spare.len();
            }
            // Bounded writes (a blocking write returns only once all it was
            // given is in the socket buffer), so that what this writer still
            // holds, which counts as queued, shrinks as it goes.
            let mut at = 0;
            while at < spare.len() {
                let end = spare.len().min(at + BLOCKING_CHUNK);
                match (&*self.stream).write(&spare[at..end]) {
                    Ok(0) => {
                        self.fail(&io::ErrorKind::WriteZero.into());
                        return false;
                    }
                    Ok(n) => {
                        at += n;
                        self.state.lock().in_flight -= n;
                        self.drained.notify_all();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.fail(&e);
                        return false;
                    }
                }
            }
            spare.clear();
            if spare.capacity() > SPARE_KEEP {
                *spare = Vec::new();
            }
        }
    }

    /// One pass by a pool flusher: send what is queued without blocking.
    /// Returns true if more bytes arrived meanwhile (the caller requeues).
    fn flush_nonblocking(self: &Arc<Self>, spare: &mut Vec<u8>) -> bool {
        {
            let mut st = self.state.lock();
            if st.closed {
                return false;
            }
            if st.buf.is_empty() {
                st.flushing = false;
                return false;
            }
            std::mem::swap(&mut st.buf, spare);
            st.in_flight = spare.len();
        }
        let mut sent = 0;
        while sent < spare.len() {
            // SAFETY: send(2) on a socket this Outbound keeps open, reading
            // from a live buffer of the given length.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    spare[sent..].as_ptr().cast(),
                    spare.len() - sent,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => {
                    spare.clear();
                    self.fail(&e);
                    return false;
                }
            }
        }
        let mut st = self.state.lock();
        // What was not sent goes back in front of the queue, below.
        st.in_flight = 0;
        self.drained.notify_all();
        if st.closed {
            spare.clear();
            return false;
        }
        if sent < spare.len() {
            // The peer's socket buffer is full: keep the rest in front of
            // whatever arrived meanwhile and let the backlog writer wait.
            let mut rest = spare.split_off(sent);
            rest.extend_from_slice(&st.buf);
            st.buf = rest;
            spare.clear();
            return self.ring_backlog_writer(st);
        }
        spare.clear();
        if spare.capacity() > SPARE_KEEP {
            *spare = Vec::new();
        }
        if st.buf.is_empty() {
            st.flushing = false;
            false
        } else {
            true
        }
    }

    /// Wake (or start) this connection's backlog writer; `flushing` stays set.
    fn ring_backlog_writer(
        self: &Arc<Self>,
        mut st: parking_lot::MutexGuard<'_, OutState>,
    ) -> bool {
        if let Some(bell) = &st.bell {
            let bell = bell.clone();
            drop(st);
            let _ = bell.try_send(());
            return false;
        }
        let (tx, rx) = bounded(1);
        st.bell = Some(tx);
        drop(st);
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name("cw-backlog".into())
            .stack_size(CONN_STACK)
            .spawn(move || me.backlog_writer(rx));
        if let Err(e) = spawned {
            self.fail(&e);
        }
        false
    }

    /// Blocking writes for a peer that reads slowly; ends when the queue is
    /// empty again, and sleeps until the next backlog.
    fn backlog_writer(&self, bell: Receiver<()>) {
        let mut spare = Vec::new();
        // The first wake-up is implied: we were started because of a backlog.
        loop {
            if !self.drain_blocking(&mut spare) {
                return;
            }
            if bell.recv().is_err() {
                return;
            }
        }
    }

    fn mark_closed(&self) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        st.closed = true;
        st.buf = Vec::new();
        st.bell = None; // dropping the sender ends the backlog writer's wait
        drop(st);
        self.drained.notify_all();
        true
    }

    fn drop_peer(&self, why: &str) {
        if self.mark_closed() {
            self.metrics.dropped(DropReason::SlowReader);
            log::warn!("{}: {why}", self.label);
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    fn fail(&self, e: &io::Error) {
        if self.mark_closed() {
            self.metrics.dropped(DropReason::WriteFailed);
            log::info!("{}: write failed ({e}); closing", self.label);
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    /// Close the connection on an operator's request: queued bytes are
    /// discarded and the socket is shut, which ends its reader (which then
    /// logs the session out as for any other end).
    pub fn disconnect(&self) {
        if self.mark_closed() {
            log::info!("{}: closed by an operator", self.label);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Stop the writers and refuse further bytes. Queued bytes are
    /// discarded: this is called when the connection is already going away.
    pub fn close(&self) {
        self.mark_closed();
    }

    /// Block the connection's own reader while its queue is over half full,
    /// so a client that sends faster than it reads its own echoes is slowed
    /// down by TCP instead of being dropped. Gives up after `limit`. What
    /// a writer holds counts as queued.
    pub fn throttle(&self, limit: Duration) {
        let mut st = self.state.lock();
        if st.queued() <= self.limit / 2 {
            return;
        }
        let deadline = std::time::Instant::now() + limit;
        while !st.closed && st.queued() > self.limit / 4 {
            if self.drained.wait_until(&mut st, deadline).timed_out() {
                return;
            }
        }
    }
}

/// A few threads that send every connection's queued bytes. A broadcast to
/// a thousand peers costs a thousand appends and at most one wake-up here,
/// instead of a thousand threads woken; and a busy pool batches: the longer
/// a queue waits, the more frames one `send` carries.
pub struct FlushPool {
    tx: Mutex<Option<Sender<Arc<Outbound>>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl FlushPool {
    pub fn new(threads: usize) -> io::Result<Arc<Self>> {
        let (tx, rx) = unbounded::<Arc<Outbound>>();
        let pool = Arc::new(FlushPool {
            tx: Mutex::new(Some(tx.clone())),
            threads: Mutex::new(Vec::new()),
        });
        drop(tx);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let me = pool.clone();
            let t = thread::Builder::new()
                .name(format!("cw-flush-{i}"))
                .spawn(move || {
                    let mut spare = Vec::new();
                    for out in rx.iter() {
                        // Requeue rather than loop, so one chatty peer
                        // cannot hold a flusher while others wait.
                        if out.flush_nonblocking(&mut spare) {
                            me.schedule(out);
                        }
                    }
                })?;
            pool.threads.lock().push(t);
        }
        Ok(pool)
    }

    fn schedule(&self, out: Arc<Outbound>) {
        let sent = match &*self.tx.lock() {
            Some(tx) => tx.send(out).is_ok(),
            None => false,
        };
        if !sent {
            log::debug!("flush pool stopped; output discarded");
        }
    }

    /// Stop the flushers: the channel disconnects once its last queued
    /// connection has been served (closed connections are skipped at once).
    pub fn stop(&self) {
        self.tx.lock().take();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Live connections, all dialects together: admission against the limit,
/// and the sockets to shut when the server stops.
/// Something the registry counts against `max_connections` and stops at
/// shutdown: a TCP connection, or a rooms client (UDP has no connection).
pub trait Member: Send + Sync {
    /// Stop it (wakes a TCP connection's thread; forgets a rooms client).
    /// Called with no registry lock held.
    fn shut(&self);
    /// Where it comes from (for an operator's ban).
    fn ip(&self) -> Option<std::net::IpAddr>;
}

impl Member for TcpStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }

    fn ip(&self) -> Option<std::net::IpAddr> {
        self.peer_addr().ok().map(|a| a.ip())
    }
}

pub struct Registry {
    max: usize,
    next: AtomicU64,
    inner: Mutex<HashMap<u64, Arc<dyn Member>>>,
    idle: Condvar,
    stopping: AtomicBool,
}

/// Held by a connection's thread; unregisters on drop.
pub struct Admission {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock();
        inner.remove(&self.id);
        if inner.is_empty() {
            self.registry.idle.notify_all();
        }
    }
}

impl Registry {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Registry {
            max,
            next: AtomicU64::new(1),
            inner: Mutex::new(HashMap::new()),
            idle: Condvar::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Admit a new connection, or None when full or stopping.
    pub fn admit(self: &Arc<Self>, stream: &Arc<TcpStream>) -> Option<Admission> {
        self.admit_member(stream.clone())
    }

    /// Admit any member (a rooms client), or None when full or stopping.
    pub fn admit_member(self: &Arc<Self>, member: Arc<dyn Member>) -> Option<Admission> {
        if self.stopping.load(Ordering::Acquire) {
            return None;
        }
        let clone = member;
        let mut inner = self.inner.lock();
        if inner.len() >= self.max {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        inner.insert(id, clone);
        Some(Admission {
            registry: self.clone(),
            id,
        })
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Refuse new connections and shut every live socket, which wakes each
    /// connection thread out of its blocking read.
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::Release);
        // Shut outside the lock: a member's shut may release its admission.
        let all: Vec<Arc<dyn Member>> = self.inner.lock().values().cloned().collect();
        for m in all {
            m.shut();
        }
    }

    /// Shut every live connection from `ip` (an operator's ban); returns how many.
    pub fn shutdown_from(&self, ip: std::net::IpAddr) -> usize {
        let ip = crate::hub::bans::canonical(ip);
        let hit: Vec<Arc<dyn Member>> = self
            .inner
            .lock()
            .values()
            .filter(|m| m.ip().is_some_and(|a| crate::hub::bans::canonical(a) == ip))
            .cloned()
            .collect();
        for m in &hit {
            m.shut();
        }
        hit.len()
    }

    /// Wait until every connection thread has let go, at most `limit`.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let mut inner = self.inner.lock();
        if inner.is_empty() {
            return true;
        }
        let deadline = std::time::Instant::now() + limit;
        while !inner.is_empty() {
            if self.idle.wait_until(&mut inner, deadline).timed_out() {
                return inner.is_empty();
            }
        }
        true
    }
}

/// Why a connection's read side ended.
pub enum ReadEnd {
    Eof,
    Io(io::Error),
    /// The deadline passed with nothing (or not enough) read.
    Deadline,
}

/// A connection's read buffer. It starts small, since an idle chat
/// connection reads a login and little else, and grows (to `MAX_READ`) the
/// first time a read fills it, so busy senders still read in big batches.
pub struct ReadBuf {
    buf: Vec<u8>,
    filled_last: bool,
}

const FIRST_READ: usize = 512;
const MAX_READ: usize = 16 * 1024;

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf {
            buf: vec![0; FIRST_READ],
            filled_last: false,
        }
    }
}

impl ReadBuf {
    /// Read the next chunk from a connection, at most until `deadline` when
    /// one is given. Interrupted reads are retried; a read timeout only
    /// returns `Deadline` once the deadline has really passed.
    pub fn read(
        &mut self,
        stream: &TcpStream,
        deadline: Option<std::time::Instant>,
    ) -> Result<&[u8], ReadEnd> {
        if self.buf.len() < MAX_READ && self.filled_last {
            self.buf.resize((self.buf.len() * 4).min(MAX_READ), 0);
        }
        loop {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(ReadEnd::Deadline);
                }
                let _ = stream.set_read_timeout(Some(left));
            }
            match (&*stream).read(&mut self.buf) {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(n) => {
                    self.filled_last = n == self.buf.len();
                    return Ok(&self.buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        }
    }
}

/// The accept loop of a small listener for operators (the admin socket, the
/// metrics endpoint): at most `at_once` short-lived connection threads;
/// a connection past that is handed to `full` (to say so) and closed.
pub struct SmallListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SmallListener {
    /// `accept` blocks for the next connection; `admit` may refuse one
    /// (closed at once); `serve` runs on the connection's own thread.
    pub fn start<C: Send + 'static>(
        name: &str,
        at_once: usize,
        mut accept: impl FnMut() -> io::Result<C> + Send + 'static,
        admit: impl Fn(&C) -> bool + Send + 'static,
        full: impl Fn(C) + Send + 'static,
        serve: impl Fn(C) + Send + Sync + 'static,
    ) -> io::Result<SmallListener> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let serve = Arc::new(serve);
        let conn_name = format!("{name}-conn");
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || loop {
                let conn = accept();
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else {
                    // EMFILE and friends: back off instead of spinning.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if !admit(&conn) {
                    continue;
                }
                if busy.fetch_add(1, Ordering::AcqRel) >= at_once {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    full(conn);
                    continue;
                }
                let (busy2, serve) = (busy.clone(), serve.clone());
                let spawned = thread::Builder::new()
                    .name(conn_name.clone())
                    .spawn(move || {
                        serve(conn);
                        busy2.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            })?;
        Ok(SmallListener {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop accepting: `wake` must unblock `accept` (a connection of our
    /// own); connection threads already running finish on their own.
    pub fn stop(&mut self, wake: impl FnOnce()) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection to a peer that never reads, and its Outbound; the flush
    /// pool is stopped, so only the test's own calls write.
    fn stalled(limit: usize) -> (Arc<Outbound>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        peer.set_recv_buffer_size(4096).unwrap();
        peer.connect(&l.local_addr().unwrap().into()).unwrap();
        let peer: TcpStream = peer.into();
        let (ours, _) = l.accept().unwrap();
        bound_send_buffer(&ours, 4096);
        let pool = FlushPool::new(1).unwrap();
        pool.stop();
        let out = Outbound::new(
            Arc::new(ours),
            &pool,
            limit,
            Duration::from_secs(10),
            "test".into(),
            Arc::new(Metrics::new()),
        );
        (out, peer)
    }

    /// Bytes a writer has taken out of the queue but not yet written still
    /// count against the bound: a second burst may not pile up behind a
    /// blocked write.
    #[test]
    fn bytes_held_by_a_blocked_writer_count_against_the_limit() {
        const LIMIT: usize = 64 * 1024;
        let (out, peer) = stalled(LIMIT);
        assert!(out.enqueue(|b| b.extend_from_slice(&[1; 40 * 1024])));
        // The write side is owned (the stopped pool never runs): hand it to
        // a blocking writer, which takes the 40 KiB and stalls on the peer.
        let writer = {
            let out = out.clone();
            thread::spawn(move || out.drain_blocking(&mut Vec::new()))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = out.state.lock();
            if st.buf.is_empty() && st.in_flight > 0 {
                break;
            }
            drop(st);
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never took the queue"
            );
            thread::sleep(Duration::from_millis(5));
        }
        // 30 KiB more: 70 KiB would be queued in all, over the limit.
        assert!(
            !out.enqueue(|b| b.extend_from_slice(&[2; 30 * 1024])),
            "accepted past the limit while a writer held bytes"
        );
        drop(peer);
        let _ = writer.join();
    }
}
