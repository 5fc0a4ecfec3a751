//! The shared client core: what every dialect has in common. It owns the
//! lifecycle of a client (open, ended by the server, closed by the
//! application), the library threads and their panic boundary, the bounded
//! event queue, the login state and the Rust error type. It knows nothing
//! of C (the `ffi` layer maps its types) and nothing of any dialect's bytes.
//!
//! A dialect plugs in by implementing [`Protocol`] for its shared state; the
//! application holds a [`Connection`] of it (`ChatosClient` is
//! `Connection<Chatos>`), whose methods are the dialect's own.

pub(crate) mod bell;
mod error;
mod events;
mod login;
pub(crate) mod stamp;
pub(crate) mod tcp;
pub(crate) mod threads;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

pub use error::{Error, ErrorKind, Result};
pub(crate) use events::EventQueue;
pub use events::{Event, EventKind, DEFAULT_CAPACITY};
pub(crate) use login::Login;

/// How long a connection attempt (to a server or a peer) may take.
/// Where the library's own call media listens, and the port it names to
/// the peer in call signalling. Both 0 (the default): any free port, named
/// as it is. Set `advertised` when a NAT forwards another port to `local`,
/// or a relay (or a test's lossy forwarder) sits in front of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoicePorts {
    pub local: u16,
    pub advertised: u16,
}

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every client has, whatever its dialect: the events for the
/// application, the login, and the library threads. Opaque outside the crate.
pub struct Core {
    events: EventQueue,
    pub(crate) login: Login,
    /// The application closed the client.
    closed: AtomicBool,
    /// The connection is over, either way; set once, by `end` or `close`.
    dead: AtomicBool,
    threads: Mutex<Threads>,
    /// Test hook: the next `checkpoint` of a library thread panics.
    #[cfg(test)]
    panic_soon: AtomicBool,
}

/// Library threads to join when the client is dropped, and sockets being
/// opened by them, shut when the client closes so that they wake.
#[derive(Default)]
struct Threads {
    next_token: u64,
    running: Vec<JoinHandle<()>>,
    sockets: Vec<(u64, TcpStream)>,
}

impl Core {
    pub(crate) fn new(capacity: usize) -> Core {
        Core {
            events: EventQueue::new(capacity),
            login: Login::default(),
            closed: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            threads: Mutex::new(Threads::default()),
            #[cfg(test)]
            panic_soon: AtomicBool::new(false),
        }
    }

    /// Queue an event; one the queue refuses (closed) is dropped here,
    /// outside the queue's lock.
    pub(crate) fn emit(&self, ev: Event) {
        drop(self.events.push(ev));
    }

    /// Queue an event and hand back one the queue refused, for a caller
    /// that must drop it at a moment of its choosing.
    pub(crate) fn push(&self, ev: Event) -> Option<Event> {
        self.events.push(ev)
    }

    /// The application closed the client.
    pub(crate) fn closed_locally(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The connection is over (ended by the server, a panic, or closed).
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// A number naming one socket being opened, or one call.
    pub(crate) fn next_token(&self) -> u64 {
        let mut t = self.threads.lock();
        t.next_token += 1;
        t.next_token
    }

    /// Register a socket being opened by a library thread, so that closing
    /// the client wakes whatever waits on it. Fails once the client is closed.
    pub(crate) fn watch_socket(&self, token: u64, sock: &TcpStream) -> Result<()> {
        let mut t = self.threads.lock();
        if self.closed_locally() {
            let _ = sock.shutdown(Shutdown::Both);
            return Err(Error::closed());
        }
        let copy = sock
            .try_clone()
            .map_err(|e| Error::new(ErrorKind::Io, format!("socket: {e}")))?;
        t.sockets.push((token, copy));
        Ok(())
    }

    pub(crate) fn unwatch_socket(&self, token: u64) {
        self.threads.lock().sockets.retain(|(t, _)| *t != token);
    }

    /// Test hook: make the next `checkpoint` of a library thread panic.
    #[cfg(test)]
    pub(crate) fn inject_panic(&self) {
        self.panic_soon.store(true, Ordering::Release);
    }

    /// Where library threads may be made to panic by a test.
    #[inline]
    pub(crate) fn checkpoint(&self) {
        #[cfg(test)]
        if self.panic_soon.swap(false, Ordering::AcqRel) {
            panic!("panic injected by a test");
        }
    }
}

/// Internals a dialect gives the core; sealed, so nothing outside the
/// crate can implement [`Protocol`].
pub(crate) mod sealed {
    pub trait Protocol: Send + Sync + 'static {
        fn core(&self) -> &super::Core;
        /// The connection is over: shut its sockets and wake every thread
        /// waiting on the dialect's own state. Called once.
        fn shut(&self);
        /// Last words before the application closes the client (rooms
        /// says DECONNEXION); nothing by default.
        fn goodbye(&self) {}
    }
}

/// One dialect's shared state: what a [`Connection`] is made of.
pub trait Protocol: sealed::Protocol {}
impl<P: sealed::Protocol> Protocol for P {}

/// The connection ended without the application asking (the server hung
/// up or broke the protocol, or a library thread panicked): wake everyone
/// and queue `terminal` as the last event, unless the application closed
/// the client first. Idempotent.
pub(crate) fn end<P: Protocol>(p: &P, terminal: Event) {
    let core = p.core();
    if core.dead.swap(true, Ordering::AcqRel) {
        return;
    }
    core.login.end();
    p.shut();
    if !core.closed_locally() {
        if matches!(terminal, Event::Error { .. }) {
            log::warn!("closing: {:?}", terminal.text());
        } else {
            log::info!("connection ended: {:?}", terminal.text());
        }
        core.emit(terminal);
    }
}

/// The application closes the client: say goodbye, wake every thread
/// blocked in it, and discard queued events. Idempotent.
fn close<P: Protocol>(p: &P) {
    let core = p.core();
    if core.closed.swap(true, Ordering::AcqRel) {
        return;
    }
    p.goodbye();
    if !core.dead.swap(true, Ordering::AcqRel) {
        core.login.end();
        p.shut();
    }
    for (_, s) in core.threads.lock().sockets.drain(..) {
        let _ = s.shutdown(Shutdown::Both);
    }
    drop(core.events.close());
}

/// Start a library thread that `Connection`'s drop joins. A panic in it
/// ends the client with an error event (kind `Panic`), never silently.
pub(crate) fn spawn<P: Protocol>(
    p: &Arc<P>,
    name: &'static str,
    f: impl FnOnce(&Arc<P>) + Send + 'static,
) -> Result<()> {
    let p2 = p.clone();
    let handle = threads::spawn(name, move || {
        if let Err(why) = threads::catch(|| f(&p2)) {
            end(&*p2, threads::panic_event(name, &why));
        }
    })?;
    let mut t = p.core().threads.lock();
    t.running.retain(|h| !h.is_finished());
    t.running.push(handle);
    Ok(())
}

/// A client of one dialect. Every method takes `&self`: any thread may call
/// any method at any time. Dropping it closes it and joins its threads.
pub struct Connection<P: Protocol> {
    proto: Arc<P>,
}

impl<P: Protocol> Connection<P> {
    pub(crate) fn new(proto: Arc<P>) -> Self {
        Connection { proto }
    }

    pub(crate) fn proto(&self) -> &Arc<P> {
        &self.proto
    }

    pub(crate) fn core(&self) -> &Core {
        self.proto.core()
    }

    /// The accepted login, if any (accounts: the account's pseudo).
    pub fn login_name(&self) -> Option<String> {
        self.core().login.name()
    }

    /// The next event, waiting at most `timeout` (`None`: without limit).
    /// `Timeout` when nothing came; `Closed` once the client is closed or
    /// the terminal event has been handed out.
    pub fn next_event(&self, timeout: Option<Duration>) -> Result<Event> {
        self.core().events.pop(timeout)
    }

    /// A file descriptor that is readable while an event waits (and once
    /// the client is over, when `next_event` answers `Closed` at once):
    /// poll it, then call `next_event` with a zero timeout. Owned by the
    /// client and closed when it is dropped; never read or write it.
    pub fn event_fd(&self) -> Result<std::os::fd::RawFd> {
        self.core().events.fd()
    }

    /// Close the connection and wake every thread blocked in this client.
    /// Idempotent. Streams and calls already handed out stay open.
    pub fn close(&self) {
        close(&*self.proto);
    }

    /// Closed by the application, or ended by the server.
    pub fn is_closed(&self) -> bool {
        self.core().is_dead()
    }

    /// Test hook: the next checkpoint of a library thread (the reader's,
    /// after its next read) panics.
    #[cfg(test)]
    pub(crate) fn inject_panic(&self) {
        self.core().inject_panic();
    }
}

impl<P: Protocol> Drop for Connection<P> {
    fn drop(&mut self) {
        close(&*self.proto);
        let running = std::mem::take(&mut self.core().threads.lock().running);
        let me = std::thread::current().id();
        for t in running {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// Wait on `cv` until notified or `deadline` (`None`: without limit).
/// True when the deadline has passed: the caller then looks at its state
/// once more before giving up.
pub(crate) fn wait_until<T>(
    cv: &parking_lot::Condvar,
    guard: &mut parking_lot::MutexGuard<'_, T>,
    deadline: Option<std::time::Instant>,
) -> bool {
    match deadline {
        None => {
            cv.wait(guard);
            false
        }
        Some(d) => std::time::Instant::now() >= d || cv.wait_until(guard, d).timed_out(),
    }
}

/// Refuse an empty `value` or one longer than the dialect's `max` bytes.
pub(crate) fn check_field(dialect: &str, what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} is empty"),
        ));
    }
    check_len(dialect, what, value, max)
}

/// Refuse a `value` longer than the dialect's `max` bytes.
pub(crate) fn check_len(dialect: &str, what: &str, value: &str, max: usize) -> Result<()> {
    check_len_bytes(dialect, what, value.len(), max)
}

/// Refuse `len` bytes of `what` above the dialect's `max`.
pub(crate) fn check_len_bytes(dialect: &str, what: &str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::new(
            ErrorKind::TooLong,
            format!("{what} is {len} bytes; {dialect} allows at most {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dialect with nothing of its own, to watch the core alone.
    struct Bare {
        core: Core,
        shut: AtomicBool,
    }

    impl sealed::Protocol for Bare {
        fn core(&self) -> &Core {
            &self.core
        }
        fn shut(&self) {
            self.shut.store(true, Ordering::Release);
        }
    }

    fn bare() -> Connection<Bare> {
        Connection::new(Arc::new(Bare {
            core: Core::new(8),
            shut: AtomicBool::new(false),
        }))
    }

    #[test]
    fn a_panic_in_a_library_thread_ends_the_client_with_an_error_event() {
        let c = bare();
        spawn(c.proto(), "chinwag-private", |_| panic!("opener bug")).unwrap();
        match c.next_event(Some(Duration::from_secs(10))).unwrap() {
            Event::Error { code, text } => {
                assert_eq!(code, ErrorKind::Panic);
                assert!(
                    text.contains("chinwag-private") && text.contains("opener bug"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            c.proto().shut.load(Ordering::Acquire),
            "the sockets were shut"
        );
        assert!(c.is_closed());
        assert_eq!(c.next_event(None).unwrap_err().code, ErrorKind::Closed);
        assert_eq!(c.core().login.me().unwrap_err().code, ErrorKind::Closed);
    }

    #[test]
    fn a_panic_after_a_local_close_queues_nothing() {
        let c = bare();
        c.close();
        spawn(c.proto(), "chinwag-private", |_| panic!("late bug")).unwrap();
        drop(c); // joins the thread; nothing may be left to report
    }

    #[test]
    fn the_end_is_reported_once() {
        let c = bare();
        end(
            &**c.proto(),
            Event::Disconnected {
                code: ErrorKind::Closed,
                text: "first".into(),
            },
        );
        end(
            &**c.proto(),
            Event::Error {
                code: ErrorKind::Protocol,
                text: "second".into(),
            },
        );
        let ev = c.next_event(Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.text(), Some("first"));
        assert_eq!(c.next_event(None).unwrap_err().code, ErrorKind::Closed);
    }
}
