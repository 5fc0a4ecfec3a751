//! Per-connection plumbing shared by every TCP front-end: the bounded
//! outbound queue with its writer, and the registry of live connections used
//! for the connection limit and for shutdown. Knows nothing of dialects.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

/// Stack for connection threads: they keep their buffers on the heap, so a
/// small stack keeps 10,000 idle connections cheap.
pub const CONN_STACK: usize = 128 * 1024;
/// A writer's spare buffer is returned to the allocator above this size.
const SPARE_KEEP: usize = 256 * 1024;

struct OutState {
    buf: Vec<u8>,
    /// Someone (the writer thread, or the reader answering inline) owns the
    /// socket's write side right now; others only append.
    flushing: bool,
    closed: bool,
    bell: Option<Sender<()>>,
}

/// Bytes waiting to go out on one connection.
///
/// Anyone may append (the hub delivering from another user's thread); the
/// appender never writes to the socket, so a slow reader delays nobody. A
/// writer thread, started the first time another thread queues something,
/// sends the whole queue with one write per wake-up. When the queue would
/// pass `limit` bytes the peer is dropped instead.
pub struct Outbound {
    stream: Arc<TcpStream>,
    state: Mutex<OutState>,
    /// Signalled by the writer each time it hands a batch to the kernel.
    drained: Condvar,
    limit: usize,
    label: String,
}

impl Outbound {
    pub fn new(
        stream: Arc<TcpStream>,
        limit: usize,
        write_timeout: Duration,
        label: String,
    ) -> Arc<Self> {
        let _ = stream.set_write_timeout(Some(write_timeout));
        Arc::new(Outbound {
            stream,
            state: Mutex::new(OutState {
                buf: Vec::new(),
                flushing: false,
                closed: false,
                bell: None,
            }),
            drained: Condvar::new(),
            limit,
            label,
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
        if st.buf.len() > self.limit {
            st.closed = true;
            st.buf = Vec::new();
            st.bell = None;
            drop(st);
            self.drained.notify_all();
            log::warn!(
                "{}: dropped, {} bytes queued for a reader that does not read",
                self.label,
                self.limit
            );
            let _ = self.stream.shutdown(Shutdown::Both);
            return false;
        }
        if st.flushing {
            return true;
        }
        st.flushing = true;
        self.ring(st)
    }

    /// Send a reply from the connection's own reader thread. When nothing is
    /// queued the bytes are written inline, so a connection that only ever
    /// hears answers to its own requests never needs a writer thread.
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
        if st.buf.is_empty() || st.closed {
            st.flushing = false;
            return !st.closed;
        }
        self.ring(st)
    }

    /// Wake (or start) the writer; `st.flushing` is already set.
    fn ring(self: &Arc<Self>, mut st: parking_lot::MutexGuard<'_, OutState>) -> bool {
        if let Some(bell) = &st.bell {
            let bell = bell.clone();
            drop(st);
            let _ = bell.try_send(());
            return true;
        }
        let (tx, rx) = bounded(1);
        st.bell = Some(tx);
        drop(st);
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name("cw-writer".into())
            .stack_size(CONN_STACK)
            .spawn(move || me.writer(rx));
        if let Err(e) = spawned {
            self.fail(&e);
            return false;
        }
        true
    }

    fn writer(&self, bell: Receiver<()>) {
        let mut spare = Vec::new();
        // The first wake-up is implied: we were started because bytes are queued.
        loop {
            loop {
                {
                    let mut st = self.state.lock();
                    if st.closed {
                        return;
                    }
                    if st.buf.is_empty() {
                        st.flushing = false;
                        break;
                    }
                    std::mem::swap(&mut st.buf, &mut spare);
                }
                self.drained.notify_all();
                if let Err(e) = (&*self.stream).write_all(&spare) {
                    self.fail(&e);
                    return;
                }
                spare.clear();
                if spare.capacity() > SPARE_KEEP {
                    spare = Vec::new();
                }
            }
            if bell.recv().is_err() {
                return;
            }
        }
    }

    fn fail(&self, e: &io::Error) {
        let mut st = self.state.lock();
        if !st.closed {
            st.closed = true;
            st.buf = Vec::new();
            st.bell = None;
            drop(st);
            self.drained.notify_all();
            log::info!("{}: write failed ({e}); closing", self.label);
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    /// Stop the writer and refuse further bytes. Queued bytes are discarded:
    /// this is called when the connection is already going away.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.buf = Vec::new();
        st.bell = None; // dropping the sender ends the writer's wait
        drop(st);
        self.drained.notify_all();
    }

    /// Block the connection's own reader while its queue is over half full,
    /// so a client that sends faster than it reads its own echoes is slowed
    /// down by TCP instead of being dropped. Gives up after `limit`.
    pub fn throttle(&self, limit: Duration) {
        let mut st = self.state.lock();
        if st.buf.len() <= self.limit / 2 {
            return;
        }
        let deadline = std::time::Instant::now() + limit;
        while !st.closed && st.buf.len() > self.limit / 4 {
            if self.drained.wait_until(&mut st, deadline).timed_out() {
                return;
            }
        }
    }

    /// Bytes queued and not yet handed to the kernel.
    pub fn queued(&self) -> usize {
        self.state.lock().buf.len()
    }
}

/// Live connections, all dialects together: admission against the limit,
/// and the sockets to shut when the server stops.
pub struct Registry {
    max: usize,
    next: AtomicU64,
    inner: Mutex<HashMap<u64, Arc<TcpStream>>>,
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
        if self.stopping.load(Ordering::Acquire) {
            return None;
        }
        let clone = stream.clone();
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
        for s in self.inner.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
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

/// Read the next chunk from a connection, at most until `deadline` when one
/// is given. Interrupted reads are retried; a read timeout only returns
/// `Deadline` once the deadline has really passed.
pub fn read_chunk(
    stream: &TcpStream,
    buf: &mut [u8],
    deadline: Option<std::time::Instant>,
) -> Result<usize, ReadEnd> {
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Deadline);
            }
            let _ = stream.set_read_timeout(Some(left));
        }
        match (&*stream).read(buf) {
            Ok(0) => return Err(ReadEnd::Eof),
            Ok(n) => return Ok(n),
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
