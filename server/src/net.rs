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
/// A backlog writer's spare buffer is returned to the allocator above this size.
const SPARE_KEEP: usize = 256 * 1024;
/// A queue emptied by its writer keeps its buffer, for its next delivery,
/// while the buffer's capacity is at most this; a bigger one is freed. So
/// a busy recipient's deliveries do not allocate, and what a queue keeps
/// between them is bounded (a connection that never received anything
/// past its login keeps nothing).
///
/// 8 KiB with musl, 1 KiB with glibc: glibc keeps a freed buffer in its
/// arenas, for the next allocation, where musl's allocator gives the
/// group a buffer of a few KiB lived in back to the kernel (`munmap`,
/// whose TLB shoot-down interrupts the other CPU) and maps it again at the
/// next burst: with 1 KiB the fan-out at saturation delivered 1.5-1.6 M/s
/// against glibc's 2.2-3.2 (README, "idle memory", the musl build).
pub const QUEUE_KEEP: usize = if cfg!(target_env = "musl") {
    8 * 1024
} else {
    1024
};

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

/// Bytes of a refused connection read and thrown away before it is closed.
const REFUSE_DRAIN: usize = 4096;

/// Close a connection refused at accept (no room, no thread) as cleanly as
/// a thread-less acceptor can: a FIN first, so the peer reads the end of
/// the stream rather than a reset, then the bytes it already sent are read
/// (at most [`REFUSE_DRAIN`], without waiting), since closing a socket with
/// unread bytes makes the kernel send a reset. The caller's drop closes it.
pub fn refuse(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut buf = [0u8; 1024];
        let mut left = REFUSE_DRAIN;
        while left > 0 {
            match (&*stream).read(&mut buf) {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }
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
    /// A blocking write that makes no progress this long fails.
    write_timeout: Duration,
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
            write_timeout,
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
        if !batch::owe(self) {
            self.pool.schedule(self.clone());
        }
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
                    if st.buf.capacity() > QUEUE_KEEP {
                        // The writer's spare, swapped in: bigger than a
                        // released queue may keep.
                        st.buf = Vec::new();
                    }
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
                // The write time-out counts from here however many signals
                // interrupt the wait (each would restart SO_SNDTIMEO whole);
                // a write no signal interrupts makes no system call more.
                let written = chinwag_proto::eintr::retry_within(
                    self.write_timeout,
                    |left| self.stream.set_write_timeout(Some(left)),
                    || (&*self.stream).write(&spare[at..end]),
                );
                match written {
                    Ok(0) => {
                        self.fail(&io::ErrorKind::WriteZero.into());
                        return false;
                    }
                    Ok(n) => {
                        at += n;
                        self.state.lock().in_flight -= n;
                        self.drained.notify_all();
                    }
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

    /// One non-blocking pass by whoever took the write side (a pool
    /// flusher, or the thread whose batch owes the queue): send what is
    /// queued. Returns true if more bytes arrived meanwhile (the caller
    /// requeues). The queue's buffer itself is sent and, once empty, given
    /// back to the queue (up to [`QUEUE_KEEP`]): the next delivery encodes
    /// into it without allocating.
    fn flush_nonblocking(self: &Arc<Self>) -> bool {
        let mut out = {
            let mut st = self.state.lock();
            if st.closed {
                return false;
            }
            if st.buf.is_empty() {
                st.flushing = false;
                return false;
            }
            let out = std::mem::take(&mut st.buf);
            st.in_flight = out.len();
            out
        };
        let mut sent = 0;
        while sent < out.len() {
            // SAFETY: send(2) on a socket this Outbound keeps open, reading
            // from a live buffer of the given length.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    out[sent..].as_ptr().cast(),
                    out.len() - sent,
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
            return false;
        }
        if sent < out.len() {
            // The peer's socket buffer is full: keep the rest in front of
            // whatever arrived meanwhile and let the backlog writer wait.
            out.drain(..sent);
            out.extend_from_slice(&st.buf);
            st.buf = out;
            return self.ring_backlog_writer(st);
        }
        if !st.buf.is_empty() {
            return true;
        }
        st.flushing = false;
        if out.capacity() <= QUEUE_KEEP && st.buf.capacity() == 0 {
            out.clear();
            st.buf = out;
        }
        // A bigger buffer is freed once the lock is released.
        false
    }

    /// Send this queue from the thread whose batch owes it (see [`Batch`]):
    /// one non-blocking pass, as a pool flusher would make. Bytes that
    /// arrived meanwhile go to the pool; a full socket buffer goes to the
    /// backlog writer. Never blocks.
    fn send_owed(self: &Arc<Self>) {
        if self.flush_nonblocking() {
            self.pool.schedule(self.clone());
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
        let builder = thread::Builder::new()
            .name("cw-backlog".into())
            .stack_size(CONN_STACK);
        let spawned = self
            .pool
            .budget
            .spawn(builder, move || me.backlog_writer(rx));
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

    /// Whether the peer has already shut its side (a FIN or a reset waits
    /// on the socket), which the connection's reader may not have reached.
    /// One non-blocking `poll`; on Linux (POLLRDHUP) an end is seen even
    /// behind bytes not read yet, elsewhere only ahead of them.
    pub fn peer_closed(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let events = libc::POLLIN | libc::POLLRDHUP;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let events = libc::POLLIN;
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd, zero timeout.
        if unsafe { libc::poll(&mut fd, 1, 0) } <= 0 {
            return false;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
        if fd.revents & libc::POLLIN == 0 {
            return false;
        }
        // Elsewhere: an end of stream (or an error) ahead of any data.
        let mut byte = 0u8;
        // SAFETY: recv(2) of at most one byte into a live local.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
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

/// Sending from the thread that already holds the bytes.
///
/// A connection thread that handles a frame delivers to other connections'
/// queues. When a recipient's queue was idle (nobody owned its write side),
/// the delivering thread takes the write side into its batch instead of
/// waking a pool flusher, and sends it itself with one non-blocking `send`
/// once it has handled every frame of its read, just before it reads again:
/// no thread wake-up between a sender's bytes and the recipient's socket,
/// and several frames to one recipient leave in one `send`. A batch owes at
/// most [`INLINE_MAX`] queues; past that (a broadcast) the pool takes the
/// rest at once, so a fan-out is spread over the flushers as before. A send
/// that would block hands the rest to the backlog writer: a slow peer never
/// blocks the thread that delivered to it.
pub use batch::{Batch, INLINE_MAX};

mod batch {
    use std::cell::RefCell;
    use std::marker::PhantomData;
    use std::sync::Arc;

    use arrayvec::ArrayVec;

    use super::Outbound;

    /// Queues one batch sends itself; the pool takes the others.
    pub const INLINE_MAX: usize = 16;

    /// The queues owed, in the order they were owed: inline (16 pointers in
    /// the thread's static TLS, in a page its stack uses anyway), so no
    /// read allocates a list and no thread keeps a heap block for one.
    type Queues = ArrayVec<Arc<Outbound>, INLINE_MAX>;

    struct Owed {
        /// A batch is open on this thread.
        open: bool,
        queues: Queues,
    }

    thread_local! {
        static OWED: RefCell<Owed> = const {
            RefCell::new(Owed {
                open: false,
                queues: ArrayVec::new_const(),
            })
        };
    }

    /// Take `out`'s write side into this thread's open batch, if it has one
    /// with room. `out` must have just been marked `flushing` by the caller.
    pub(super) fn owe(out: &Arc<Outbound>) -> bool {
        OWED.with(|o| {
            let Ok(mut o) = o.try_borrow_mut() else {
                return false;
            };
            o.open && o.queues.try_push(out.clone()).is_ok()
        })
    }

    /// An open batch on the current thread (not `Send`): deliveries made
    /// while it is open may be owed to it; [`Batch::send`] (or dropping it)
    /// sends them. Opening a batch where one is open already gives an
    /// inert handle; the outer batch sends.
    pub struct Batch {
        outer: bool,
        _not_send: PhantomData<*const ()>,
    }

    impl Batch {
        pub fn open() -> Batch {
            let outer = OWED.with(|o| {
                let mut o = o.borrow_mut();
                !std::mem::replace(&mut o.open, true)
            });
            Batch {
                outer,
                _not_send: PhantomData,
            }
        }

        /// Send every queue owed so far; the batch stays open.
        pub fn send(&self) {
            if !self.outer {
                return;
            }
            // Taken out while sending (a send delivers nothing, but the list
            // must not be borrowed across it), in the order they were owed.
            let queues = OWED.with(|o| std::mem::take(&mut o.borrow_mut().queues));
            for out in queues {
                out.send_owed();
            }
        }
    }

    impl Drop for Batch {
        fn drop(&mut self) {
            if self.outer {
                self.send();
                // Sent, the list is empty: a thread between batches (an
                // idle connection blocked in its read) holds no queue.
                OWED.with(|o| o.borrow_mut().open = false);
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
    /// Backlog writers are per-connection threads: they count here.
    budget: Arc<crate::pool::ThreadBudget>,
}

impl FlushPool {
    /// A pool whose backlog writers are not counted (tests, fuzzing).
    pub fn new(threads: usize) -> io::Result<Arc<Self>> {
        Self::with_budget(threads, crate::pool::ThreadBudget::new(usize::MAX))
    }

    pub fn with_budget(
        threads: usize,
        budget: Arc<crate::pool::ThreadBudget>,
    ) -> io::Result<Arc<Self>> {
        let (tx, rx) = unbounded::<Arc<Outbound>>();
        let pool = Arc::new(FlushPool {
            tx: Mutex::new(Some(tx.clone())),
            threads: Mutex::new(Vec::new()),
            budget,
        });
        drop(tx);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let me = pool.clone();
            let t = thread::Builder::new()
                .name(format!("cw-flush-{i}"))
                .spawn(move || {
                    for out in rx.iter() {
                        // Requeue rather than loop, so one chatty peer
                        // cannot hold a flusher while others wait.
                        if out.flush_nonblocking() {
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

/// A connection's read buffer. An idle chat connection reads a login and
/// little else, so it reads into a small buffer on its own stack (in a page
/// the thread touches anyway) and holds no heap for reading; the second
/// read in a row that fills it moves to a heap buffer that grows (to
/// `MAX_READ`) while reads keep filling it, so busy senders read in big
/// batches, and is given back once a read is small again. (A burst of up
/// to two stack buffers, a few frames sent at once, is read in two reads
/// and allocates nothing.)
#[derive(Default)]
pub struct ReadBuf {
    heap: Vec<u8>,
    /// Reads in a row that filled their buffer (the stack's while `heap` is
    /// empty: it empties only after a read that did not fill it).
    filled_in_a_row: u8,
}

/// The stack buffer of [`ReadBuf::read`]'s caller. Half a KiB: an idle
/// connection's reads are a login and the odd small frame, and with musl
/// the whole idle chain, thread block included, then fits in the stack's
/// top page (1 KiB did not, by 136 bytes: docs/architecture.md); two reads
/// in a row that fill it move to the heap buffer.
pub const STACK_READ: usize = 512;
const FIRST_HEAP_READ: usize = 4 * 1024;
const MAX_READ: usize = 16 * 1024;

impl ReadBuf {
    /// Read the next chunk from a connection, into `small` or the heap
    /// buffer, at most until `deadline` when one is given. Interrupted
    /// reads are retried; a read timeout only returns `Deadline` once the
    /// deadline has really passed.
    pub fn read<'a>(
        &'a mut self,
        small: &'a mut [u8; STACK_READ],
        stream: &TcpStream,
        deadline: Option<std::time::Instant>,
    ) -> Result<&'a [u8], ReadEnd> {
        let to_grow = if self.heap.is_empty() { 2 } else { 1 };
        if self.filled_in_a_row >= to_grow {
            let len = (self.heap.len() * 4).clamp(FIRST_HEAP_READ, MAX_READ);
            self.heap.resize(len, 0);
        }
        loop {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(ReadEnd::Deadline);
                }
                let _ = stream.set_read_timeout(Some(left));
            }
            let buf: &mut [u8] = if self.heap.is_empty() {
                &mut small[..]
            } else {
                &mut self.heap[..]
            };
            match (&*stream).read(buf) {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(n) => {
                    self.filled_in_a_row = if n == buf.len() {
                        self.filled_in_a_row.saturating_add(1)
                    } else {
                        0
                    };
                    if self.filled_in_a_row == 0 && n <= STACK_READ / 2 && !self.heap.is_empty() {
                        // Quiet again: the next read goes to the stack buffer.
                        small[..n].copy_from_slice(&self.heap[..n]);
                        self.heap = Vec::new();
                        return Ok(&small[..n]);
                    }
                    let buf: &[u8] = if self.heap.is_empty() {
                        &small[..]
                    } else {
                        &self.heap[..]
                    };
                    return Ok(&buf[..n]);
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
                // A signal is no failure: no back-off for it.
                let conn = chinwag_proto::eintr::retry(&mut accept);
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

/// Signals for the tests (tests/common/storm.rs, shared with the
/// integration tests).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/storm.rs"]
pub(crate) mod storm;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    use storm::{catch_without_restart, pester};

    /// A connected pair: the server's end (as `Outbound` sees it) and the
    /// client's.
    fn pair() -> (Arc<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (Arc::new(server), client)
    }

    fn outbound(stream: &Arc<TcpStream>, pool: &Arc<FlushPool>, limit: usize) -> Arc<Outbound> {
        Outbound::new(
            stream.clone(),
            pool,
            limit,
            Duration::from_secs(10),
            "test".into(),
            Arc::new(Metrics::new()),
        )
    }

    /// Read exactly `n` bytes, or fail the test after 10 s.
    fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0; n];
        s.read_exact(&mut got).expect("the bytes arrive");
        got
    }

    /// Polls until `f` holds, or fails after 10 s.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_peer_close_is_seen_before_the_reader_reads_it() {
        let pool = FlushPool::new(1).unwrap();
        let (server, mut client) = pair();
        let out = outbound(&server, &pool, 1 << 20);
        assert!(!out.peer_closed());
        // Unread bytes alone are not an end.
        client.write_all(b"hello").unwrap();
        eventually("the bytes arrive", || {
            server.peek(&mut [0u8; 5]).map(|n| n == 5).unwrap_or(false)
        });
        assert!(!out.peer_closed());
        // An end behind unread bytes is (POLLRDHUP).
        client.shutdown(Shutdown::Write).unwrap();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        eventually("the end is seen", || out.peer_closed());
        drop(client);
        assert!(out.peer_closed());
        // A reset too.
        let (server, client) = pair();
        let out = outbound(&server, &pool, 1 << 20);
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        eventually("the reset is seen", || out.peer_closed());
        pool.stop();
    }

    /// A queue whose flush pool is stopped and sends nothing: whatever
    /// arrives at the client was sent inline, by a batch.
    fn unpooled() -> (Arc<Outbound>, TcpStream) {
        let pool = FlushPool::new(1).unwrap();
        pool.stop();
        let (server, client) = pair();
        (outbound(&server, &pool, 1 << 20), client)
    }

    #[test]
    fn a_delivery_in_a_batch_leaves_from_the_delivering_thread() {
        let (out, mut client) = unpooled();
        {
            let batch = Batch::open();
            assert!(out.enqueue(|b| b.extend_from_slice(b"one ")));
            assert!(out.enqueue(|b| b.extend_from_slice(b"two")));
            // Nested batches are inert: the outer one sends.
            drop(Batch::open());
            batch.send();
            assert!(out.enqueue(|b| b.extend_from_slice(b" three")));
        }
        assert_eq!(read_n(&mut client, 13), b"one two three");
        // The write side was given back: the next batch sends again.
        {
            let _batch = Batch::open();
            assert!(out.enqueue(|b| b.extend_from_slice(b"!")));
        }
        assert_eq!(read_n(&mut client, 1), b"!");
        // Without a batch the pool is asked (and, stopped, discards).
        assert!(out.enqueue(|b| b.extend_from_slice(b"lost")));
        client
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(client.read(&mut [0u8; 4]).is_err());
    }

    /// The capacity of `out`'s buffer once its write side is released.
    fn kept(out: &Outbound) -> usize {
        eventually("the write side is released", || !out.state.lock().flushing);
        out.state.lock().buf.capacity()
    }

    #[test]
    fn an_emptied_queue_keeps_a_small_buffer_for_its_next_delivery() {
        let (out, mut client) = unpooled();
        {
            let _batch = Batch::open();
            assert!(out.enqueue(|b| b.extend_from_slice(&[7; 100])));
        }
        assert_eq!(read_n(&mut client, 100), [7; 100]);
        let small = kept(&out);
        assert!((100..=QUEUE_KEEP).contains(&small), "kept {small}");
        // A burst bigger than QUEUE_KEEP is not kept.
        {
            let _batch = Batch::open();
            assert!(out.enqueue(|b| b.extend_from_slice(&[8; BIG])));
        }
        assert_eq!(read_n(&mut client, BIG), [8; BIG]);
        assert_eq!(kept(&out), 0);
    }

    #[test]
    fn two_stack_buffers_are_read_on_the_stack_and_a_stream_moves_to_the_heap() {
        let (server, mut client) = pair();
        let mut rbuf = ReadBuf::default();
        let mut small = [0u8; STACK_READ];
        let small_at = small.as_ptr() as usize;
        let on_stack = |p: usize| (small_at..small_at + STACK_READ).contains(&p);
        let mut read = |rbuf: &mut ReadBuf| {
            let Ok(bytes) = rbuf.read(&mut small, &server, None) else {
                panic!("the read failed");
            };
            (bytes.len(), bytes.as_ptr() as usize)
        };
        // A burst of a few frames, up to two buffers: no heap.
        client.write_all(&[1; STACK_READ + 100]).unwrap();
        let mut got = 0;
        while got < STACK_READ + 100 {
            let (n, p) = read(&mut rbuf);
            assert!(on_stack(p), "read {n} bytes off the stack");
            got += n;
        }
        assert!(rbuf.heap.is_empty());
        // A stream: after two full stack reads, bigger reads from the heap.
        client.write_all(&[2; 16 * STACK_READ]).unwrap();
        eventually("the stream is queued", || {
            let mut n = 0;
            // SAFETY: FIONREAD writes the queued byte count into `n`.
            unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&*server),
                    libc::FIONREAD,
                    &mut n,
                )
            };
            n as usize >= 16 * STACK_READ
        });
        let reads: Vec<(usize, usize)> = (0..3).map(|_| read(&mut rbuf)).collect();
        assert_eq!(reads[0].0, STACK_READ);
        assert_eq!(reads[1].0, STACK_READ);
        assert!(
            !on_stack(reads[2].1) && reads[2].0 > STACK_READ,
            "{reads:?}"
        );
    }

    /// A burst well past [`QUEUE_KEEP`] (8 KiB with glibc, as before).
    const BIG: usize = 8 * QUEUE_KEEP;

    /// With musl a queue keeps the few KiB a fan-out burst grows it to
    /// (see [`QUEUE_KEEP`]): freeing them costs a `munmap` there.
    #[cfg(target_env = "musl")]
    #[test]
    fn with_musl_a_queue_keeps_a_burst_of_a_few_kib() {
        let (out, mut client) = unpooled();
        {
            let _batch = Batch::open();
            assert!(out.enqueue(|b| b.extend_from_slice(&[5; 4096])));
        }
        assert_eq!(read_n(&mut client, 4096), [5; 4096]);
        assert!(kept(&out) >= 4096, "kept {}", kept(&out));
    }

    #[test]
    fn a_queue_sent_by_the_pool_keeps_its_own_small_buffer_and_no_bigger_one() {
        let pool = FlushPool::new(1).unwrap();
        let (server, mut client) = pair();
        let out = outbound(&server, &pool, 1 << 20);
        // No batch: the pool's flusher sends.
        assert!(out.enqueue(|b| b.extend_from_slice(&[1; BIG])));
        assert_eq!(read_n(&mut client, BIG), [1; BIG]);
        assert_eq!(kept(&out), 0, "a big buffer is freed");
        assert!(out.enqueue(|b| b.extend_from_slice(&[2; 100])));
        assert_eq!(read_n(&mut client, 100), [2; 100]);
        // Not the flusher's big buffer from the send before: its own.
        let small = kept(&out);
        assert!((100..=QUEUE_KEEP).contains(&small), "kept {small}");
        pool.stop();
    }

    #[test]
    fn a_batch_owes_at_most_inline_max_queues_and_the_pool_sends_the_rest() {
        let pool = FlushPool::new(1).unwrap();
        let ends: Vec<_> = (0..INLINE_MAX + 4).map(|_| pair()).collect();
        let outs: Vec<_> = ends
            .iter()
            .map(|(s, _)| outbound(s, &pool, 1 << 20))
            .collect();
        {
            let _batch = Batch::open();
            for (i, out) in outs.iter().enumerate() {
                assert!(out.enqueue(|b| b.extend_from_slice(&[i as u8; 3])));
            }
            pool.stop(); // the pool sends what it was given, then stops
                         // Only the queues past INLINE_MAX went to the pool...
            for (i, (_, client)) in ends.iter().enumerate().skip(INLINE_MAX) {
                let mut c = client.try_clone().unwrap();
                assert_eq!(read_n(&mut c, 3), vec![i as u8; 3]);
            }
            // ...the others wait for the batch.
            for (_, client) in ends.iter().take(INLINE_MAX) {
                client.set_nonblocking(true).unwrap();
                let e = (&*client).read(&mut [0u8; 3]).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                client.set_nonblocking(false).unwrap();
            }
        }
        for (i, (_, client)) in ends.iter().enumerate().take(INLINE_MAX) {
            let mut c = client.try_clone().unwrap();
            assert_eq!(read_n(&mut c, 3), vec![i as u8; 3]);
        }
    }

    #[test]
    fn a_full_socket_never_blocks_the_batch_and_the_bytes_arrive_in_order() {
        let pool = FlushPool::new(1).unwrap();
        let (server, mut client) = pair();
        bound_send_buffer(&server, 4096);
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        let out = outbound(&server, &pool, 8 << 20);
        // Far more than the two kernel buffers hold, in numbered chunks.
        let chunks = 2000usize;
        let chunk = |i: usize| format!("{i:07}|").repeat(16).into_bytes();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let out2 = out.clone();
        let sender = thread::spawn(move || {
            let batch = Batch::open();
            for i in 0..chunks / 2 {
                out2.enqueue(|b| b.extend_from_slice(&chunk(i)));
            }
            let t = Instant::now();
            drop(batch);
            done_tx.send(t.elapsed()).unwrap();
            // Appended while the backlog writer owns the write side.
            for i in chunks / 2..chunks {
                out2.enqueue(|b| b.extend_from_slice(&chunk(i)));
            }
        });
        // The batch's send returns although nobody reads yet.
        let took = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the batch's send did not block on a full socket");
        assert!(took < Duration::from_secs(2), "{took:?}");
        sender.join().unwrap();
        let want: Vec<u8> = (0..chunks).flat_map(chunk).collect();
        assert_eq!(read_n(&mut client, want.len()), want);
        pool.stop();
    }

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
        (outbound(&Arc::new(ours), &pool, limit), peer)
    }

    /// A blocking write to a peer that never reads fails after the write
    /// time-out even while signals keep interrupting it: SO_SNDTIMEO starts
    /// again from zero after each one, so without a deadline of its own a
    /// steady stream of signals (here SIGUSR2, caught without SA_RESTART,
    /// sent only to the writer's thread) kept the peer forever.
    #[test]
    fn a_stalled_write_times_out_under_a_stream_of_signals() {
        // No other test sends SIGUSR2.
        catch_without_restart(libc::SIGUSR2);
        let (out, _peer) = stalled(1 << 20);
        // As Outbound::new would have set it for this time-out.
        out.stream
            .set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let out = Arc::new(Outbound {
            write_timeout: Duration::from_millis(300),
            stream: out.stream.clone(),
            state: Mutex::new(OutState {
                buf: vec![7; 256 * 1024],
                flushing: true,
                closed: false,
                in_flight: 0,
                bell: None,
            }),
            drained: Condvar::new(),
            pool: out.pool.clone(),
            limit: out.limit,
            label: "test".into(),
            metrics: out.metrics.clone(),
        });
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let writer = {
            let out = out.clone();
            thread::spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
                out.drain_blocking(&mut Vec::new())
            })
        };
        let tid = tid_rx.recv().unwrap();
        pester(tid, libc::SIGUSR2, Duration::from_secs(5), || {
            !writer.is_finished()
        });
        let took = started.elapsed();
        assert!(
            !writer.join().unwrap(),
            "the write to a stalled peer failed"
        );
        assert!(
            took < Duration::from_secs(3),
            "a 300 ms write time-out took {took:?} under signals"
        );
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = out.state.lock();
            if st.buf.is_empty() && st.in_flight > 0 {
                break;
            }
            drop(st);
            assert!(Instant::now() < deadline, "the writer never took the queue");
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
