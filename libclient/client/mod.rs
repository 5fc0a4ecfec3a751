//! The client: one connection to a server, the library threads that read
//! it, and the API the C layer wraps. Dialect-specific reading lives in one
//! file per dialect (`chatos.rs`, `accounts.rs`, `babel.rs` with `call.rs`);
//! this file owns the shared state and must never encode or decode bytes itself.

mod accounts;
mod babel;
mod call;
mod chatos;
mod events;
mod rooms;
mod stream;

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{Command, MAX_LOGIN, MAX_TEXT};
use parking_lot::{Condvar, Mutex};

pub use call::Call;
pub use chinwag_proto::accounts::HistoryEntry;
pub use chinwag_proto::rooms::Mode as RoomMode;
pub use events::{Event, DEFAULT_CAPACITY};
pub use rooms::{RoomEntry, ROOMS_KEEPALIVE, ROOMS_RETRY_EVERY, ROOMS_TRIES};
pub use stream::Stream;

use crate::ffi::codes::{cw_dialect, cw_result};
use events::{Empty, EventQueue};

/// How long a connection attempt to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to the server that makes no progress for this long fails, so a
/// stalled server never hangs the application's thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure: the code the C API returns and the text `cw_last_error` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: cw_result,
    pub message: String,
}

impl Error {
    pub fn new(code: cw_result, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Login state, guarded by one lock and watched by `Shared::answered`.
#[derive(Default)]
struct Session {
    /// The accepted login (for accounts: the account's pseudo).
    login: Option<String>,
    /// Accounts: the account id the server gave with the login.
    account_id: Option<u64>,
    /// A LOGIN sent and not yet answered.
    pending: Option<String>,
    /// The last answer, for the waiting `login` call.
    answer: Option<bool>,
    /// Users whose private-connection request we have not answered yet.
    incoming: HashSet<String>,
    /// The connection is gone (closed locally or by the server).
    dead: bool,
}

/// Threads and sockets of private connections still being opened.
#[derive(Default)]
struct Openers {
    next: u64,
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<(u64, TcpStream)>,
}

/// State shared by the application's handle, the reader thread, the
/// private-connection openers and the streams (weakly).
pub(crate) struct Shared {
    dialect: cw_dialect,
    server: SocketAddr,
    /// The TCP connection of chatos, accounts and babel; `None` for rooms,
    /// which speaks UDP through `rooms`.
    sock: Option<TcpStream>,
    write_lock: Mutex<()>,
    session: Mutex<Session>,
    answered: Condvar,
    events: EventQueue,
    closed: AtomicBool,
    openers: Mutex<Openers>,
    /// Replies awaited and local call/friend state; unused by chatos.
    accounts: accounts::State,
    /// Contacts and call set-up; used by babel only.
    babel: babel::State,
    /// The UDP socket and reliability state; rooms only.
    rooms: Option<rooms::Link>,
}

/// A connection to a chinwag server. Every method takes `&self`: any thread
/// may call any method at any time.
pub struct Client {
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::new(
            cw_result::CW_INVALID_ARGUMENT,
            format!("{what} is empty"),
        ));
    }
    if name.len() > MAX_LOGIN {
        return Err(Error::new(
            cw_result::CW_TOO_LONG,
            format!(
                "{what} is {} bytes; chatos allows at most {MAX_LOGIN}",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<()> {
    if text.len() > MAX_TEXT {
        return Err(Error::new(
            cw_result::CW_TOO_LONG,
            format!(
                "message is {} bytes; chatos allows at most {MAX_TEXT}",
                text.len()
            ),
        ));
    }
    Ok(())
}

fn closed_error() -> Error {
    Error::new(cw_result::CW_CLOSED, "the client is closed")
}

/// Bytes read from the server per call.
const READ_CHUNK: usize = 8192;

/// A TCP dialect's reader thread: decode what the server sends (starting
/// with whatever the greeting left in `decoder`) and give each message to
/// `handle`, until the connection ends or `handle` refuses a message.
fn read_frames<T: chinwag_proto::Decode>(
    shared: Arc<Shared>,
    mut sock: TcpStream,
    mut decoder: chinwag_proto::Decoder<T>,
    handle: impl Fn(&Arc<Shared>, T) -> std::result::Result<(), String>,
) {
    let mut chunk = vec![0u8; READ_CHUNK];
    let end = 'read: loop {
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    if let Err(why) = handle(&shared, msg) {
                        break 'read End::Protocol(why);
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read End::Protocol(format!("malformed frame from server: {e}")),
            }
        }
        match io::Read::read(&mut sock, &mut chunk) {
            Ok(0) => break End::Eof,
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break End::Io(e),
        }
    };
    reader_finished(&shared, end);
}

/// Why a reader thread stopped.
enum End {
    Eof,
    Io(io::Error),
    Protocol(String),
}

/// The reader's last act: queue the terminal event and mark the client dead.
fn reader_finished(shared: &Shared, end: End) {
    let local = shared.closed.load(Ordering::Acquire);
    let terminal = match end {
        End::Eof => Event::Disconnected {
            code: cw_result::CW_CLOSED,
            text: "the server closed the connection".into(),
        },
        End::Io(e) => Event::Disconnected {
            code: cw_result::CW_IO,
            text: format!("connection to the server failed: {e}"),
        },
        End::Protocol(why) => {
            log::warn!("closing: {why}");
            Event::Error {
                code: cw_result::CW_PROTOCOL,
                text: why,
            }
        }
    };
    if !local {
        log::info!("connection ended: {:?}", terminal.text());
    }
    shared.connection_ended(Some(terminal));
}

fn unsupported(dialect: cw_dialect, what: &str) -> Error {
    Error::new(
        cw_result::CW_UNSUPPORTED,
        format!("{what} is not part of the {} dialect", dialect.name()),
    )
}

impl Client {
    /// Connect to `host:port` speaking `dialect` (accounts: HELLO is sent
    /// and its answer awaited here; babel: HelloConnect is awaited; rooms:
    /// a UDP socket is bound, nothing is sent).
    pub fn connect(host: &str, port: u16, dialect: cw_dialect) -> Result<Client> {
        Self::connect_with_capacity(host, port, dialect, DEFAULT_CAPACITY)
    }

    /// As [`Client::connect`], with an event queue of `capacity` events.
    pub fn connect_with_capacity(
        host: &str,
        port: u16,
        dialect: cw_dialect,
        capacity: usize,
    ) -> Result<Client> {
        if host.is_empty() || port == 0 {
            return Err(Error::new(
                cw_result::CW_INVALID_ARGUMENT,
                "empty host or port 0",
            ));
        }
        if dialect == cw_dialect::CW_DIALECT_ROOMS {
            return Self::rooms_connect(host, port, capacity);
        }
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(
                    cw_result::CW_CONNECT_FAILED,
                    format!("cannot resolve {host}: {e}"),
                )
            })?
            .collect();
        let mut last = None;
        let mut sock = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        let sock = sock.ok_or_else(|| {
            Error::new(
                cw_result::CW_CONNECT_FAILED,
                format!(
                    "cannot connect to {host}:{port}: {}",
                    last.unwrap_or_else(|| "no address".into())
                ),
            )
        })?;
        let io_err = |e: io::Error| Error::new(cw_result::CW_IO, format!("socket setup: {e}"));
        let server = sock.peer_addr().map_err(io_err)?;
        let _ = sock.set_nodelay(true);
        sock.set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(io_err)?;
        let reader_sock = sock.try_clone().map_err(io_err)?;
        let greeted = match dialect {
            cw_dialect::CW_DIALECT_ACCOUNTS => Greeted::Accounts(accounts::handshake(&sock)?),
            cw_dialect::CW_DIALECT_BABEL => Greeted::Babel(babel::handshake(&sock)?),
            _ => Greeted::Chatos,
        };
        let shared = Arc::new(Shared {
            dialect,
            server,
            sock: Some(sock),
            write_lock: Mutex::new(()),
            session: Mutex::new(Session::default()),
            answered: Condvar::new(),
            events: EventQueue::new(capacity),
            closed: AtomicBool::new(false),
            openers: Mutex::new(Openers::default()),
            accounts: accounts::State::default(),
            babel: babel::State::default(),
            rooms: None,
        });
        let s2 = shared.clone();
        let reader = std::thread::Builder::new()
            .name("chinwag-reader".into())
            .spawn(move || match greeted {
                Greeted::Accounts(decoder) => accounts::read_loop(s2, reader_sock, decoder),
                Greeted::Babel(decoder) => babel::read_loop(s2, reader_sock, decoder),
                Greeted::Chatos => chatos::read_loop(s2, reader_sock),
            })
            .map_err(|e| {
                Error::new(
                    cw_result::CW_INTERNAL,
                    format!("cannot start reader thread: {e}"),
                )
            })?;
        log::info!("connected to {server} ({})", dialect.name());
        Ok(Client {
            shared,
            reader: Mutex::new(Some(reader)),
        })
    }

    pub fn dialect(&self) -> cw_dialect {
        self.shared.dialect
    }

    /// The accepted login, if any.
    pub fn login_name(&self) -> Option<String> {
        self.shared.session.lock().login.clone()
    }

    /// Propose `login` (chatos, babel) and wait for the answer. `Ok` means
    /// accepted (babel: and the initial contact list has arrived); a
    /// refusal is `CW_LOGIN_REFUSED` (babel: with the server's reason),
    /// after which another name may be tried. On `CW_TIMEOUT` the answer
    /// may still arrive and count.
    pub fn login(&self, login: &str, timeout: Option<Duration>) -> Result<()> {
        if self.shared.dialect == cw_dialect::CW_DIALECT_ROOMS {
            return self.rooms_login(login, timeout);
        }
        let babel = self.shared.dialect == cw_dialect::CW_DIALECT_BABEL;
        if babel {
            Self::babel_check_login(login)?;
        } else {
            self.chatos_only("a password-less login (use login_password)")?;
            check_name("login", login)?;
        }
        {
            let mut s = self.shared.session.lock();
            if s.dead {
                return Err(closed_error());
            }
            if s.login.is_some() {
                return Err(Error::new(
                    cw_result::CW_ALREADY_LOGGED_IN,
                    "already logged in",
                ));
            }
            if s.pending.is_some() {
                return Err(Error::new(
                    cw_result::CW_BUSY,
                    "another login is waiting for its answer",
                ));
            }
            s.pending = Some(login.to_owned());
            s.answer = None;
        }
        let sent = if babel {
            self.shared.send_babel(&chinwag_proto::babel::Frame::Login {
                name: login.to_owned(),
            })
        } else {
            self.shared.send(&Command::Login {
                login: login.to_owned(),
            })
        };
        if let Err(e) = sent {
            self.shared.session.lock().pending = None;
            return Err(e);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.shared.session.lock();
        loop {
            if let Some(ok) = s.answer.take() {
                return if ok {
                    log::info!("logged in as {login}");
                    Ok(())
                } else if babel {
                    drop(s);
                    Err(Error::new(
                        cw_result::CW_LOGIN_REFUSED,
                        format!(
                            "the server refused the login {login:?}: {}",
                            self.babel_refusal()
                        ),
                    ))
                } else {
                    Err(Error::new(
                        cw_result::CW_LOGIN_REFUSED,
                        format!("the server refused the login {login:?}"),
                    ))
                };
            }
            if s.dead {
                return Err(closed_error());
            }
            match deadline {
                None => self.shared.answered.wait(&mut s),
                Some(d) => {
                    let expired = Instant::now() >= d
                        || self.shared.answered.wait_until(&mut s, d).timed_out();
                    if expired && s.answer.is_none() && !s.dead {
                        return Err(Error::new(
                            cw_result::CW_TIMEOUT,
                            "no answer to LOGIN before the time limit",
                        ));
                    }
                }
            }
        }
    }

    /// Fails with `CW_UNSUPPORTED` unless this is a chatos client.
    fn chatos_only(&self, what: &str) -> Result<()> {
        match self.shared.dialect {
            cw_dialect::CW_DIALECT_CHATOS => Ok(()),
            d => Err(unsupported(d, what)),
        }
    }

    /// Fails with `CW_UNSUPPORTED` unless this is an accounts client.
    fn accounts_only(&self, what: &str) -> Result<()> {
        match self.shared.dialect {
            cw_dialect::CW_DIALECT_ACCOUNTS => Ok(()),
            d => Err(unsupported(d, what)),
        }
    }

    fn me(&self) -> Result<String> {
        let s = self.shared.session.lock();
        if s.dead {
            return Err(closed_error());
        }
        s.login
            .clone()
            .ok_or_else(|| Error::new(cw_result::CW_NOT_LOGGED_IN, "log in first"))
    }

    /// Send `text` to every connected user (the sender receives it too).
    /// Rooms: send `text` to everyone in this client's room (the sender
    /// does not receive it); see `rooms_send_text`.
    pub fn send_message(&self, text: &str) -> Result<()> {
        if self.shared.dialect == cw_dialect::CW_DIALECT_ROOMS {
            return self.rooms_send_text(text);
        }
        self.chatos_only("a message to everyone")?;
        check_text(text)?;
        let from = self.me()?;
        self.shared.send(&Command::Message {
            from,
            text: text.to_owned(),
        })
    }

    /// Send `text` to the user `to` only. Unknown users are ignored by the server.
    pub fn send_private(&self, to: &str, text: &str) -> Result<()> {
        self.chatos_only("an unacknowledged private message (use send_to_friend)")?;
        check_name("recipient", to)?;
        check_text(text)?;
        let from = self.me()?;
        self.shared.send(&Command::MessagePrivate {
            from,
            to: to.to_owned(),
            text: text.to_owned(),
        })
    }

    /// Ask `target` for a private connection. The answer arrives as a
    /// PRIVATE_ESTABLISHED, PRIVATE_REFUSED or PRIVATE_FAILED event.
    pub fn request_private(&self, target: &str) -> Result<()> {
        self.chatos_only("a private connection")?;
        check_name("target", target)?;
        let me = self.me()?;
        if me == target {
            return Err(Error::new(
                cw_result::CW_INVALID_ARGUMENT,
                "cannot open a private connection to yourself",
            ));
        }
        self.shared.send(&Command::RequestPrivate {
            requester: me,
            target: target.to_owned(),
        })
    }

    /// Accept the pending request of `requester`; the stream arrives as a
    /// PRIVATE_ESTABLISHED event.
    pub fn accept_private(&self, requester: &str) -> Result<()> {
        self.answer_private(requester, true)
    }

    /// Refuse the pending request of `requester`.
    pub fn refuse_private(&self, requester: &str) -> Result<()> {
        self.answer_private(requester, false)
    }

    fn answer_private(&self, requester: &str, accept: bool) -> Result<()> {
        self.chatos_only("a private connection")?;
        check_name("requester", requester)?;
        let me = self.me()?;
        if !self.shared.session.lock().incoming.remove(requester) {
            return Err(Error::new(
                cw_result::CW_NO_SUCH_REQUEST,
                format!("{requester:?} has no pending private-connection request"),
            ));
        }
        let (requester, target) = (requester.to_owned(), me);
        self.shared.send(&if accept {
            Command::OkPrivate { requester, target }
        } else {
            Command::KoPrivate { requester, target }
        })
    }

    /// The next event, waiting at most `timeout` (`None`: without limit).
    /// `CW_TIMEOUT` when nothing came; `CW_CLOSED` once the client is closed
    /// or the terminal event has been handed out.
    pub fn next_event(&self, timeout: Option<Duration>) -> Result<Event> {
        self.shared.events.pop(timeout).map_err(|e| match e {
            Empty::Timeout => Error::new(cw_result::CW_TIMEOUT, "no event before the time limit"),
            Empty::Closed => closed_error(),
        })
    }

    /// Close the connection and wake every thread blocked in this client.
    /// Idempotent. Streams already handed out stay open.
    pub fn close(&self) {
        self.shared.close();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.shared.session.lock().dead
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.close();
        if let Some(t) = self.reader.lock().take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut self.shared.openers.lock().threads);
        for t in threads {
            let _ = t.join();
        }
    }
}

/// What the connection step read before the reader thread takes over.
enum Greeted {
    Chatos,
    Accounts(chinwag_proto::accounts::Decoder),
    Babel(chinwag_proto::babel::Decoder),
}

impl Shared {
    /// A number naming one opener socket or one call.
    fn next_token(&self) -> u64 {
        let mut o = self.openers.lock();
        o.next += 1;
        o.next
    }

    /// Run `f` on a library thread that `Client`'s drop joins.
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let mut openers = self.openers.lock();
        openers.threads.retain(|t| !t.is_finished());
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| {
                Error::new(
                    cw_result::CW_INTERNAL,
                    format!("cannot start a thread: {e}"),
                )
            })?;
        openers.threads.push(t);
        Ok(())
    }

    /// Write one command on the main connection.
    fn send(&self, cmd: &Command) -> Result<()> {
        let mut buf = Vec::with_capacity(64);
        cmd.encode(&mut buf);
        let _g = self.write_lock.lock();
        self.write_locked(&buf)
    }

    /// Write bytes whole; the caller holds `write_lock`.
    fn write_locked(&self, buf: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let Some(sock) = &self.sock else {
            return Err(unsupported(self.dialect, "a TCP write"));
        };
        (&*sock).write_all(buf).map_err(|e| {
            if self.closed.load(Ordering::Acquire) || self.session.lock().dead {
                closed_error()
            } else {
                Error::new(cw_result::CW_IO, format!("write to server failed: {e}"))
            }
        })
    }

    /// Ask the server to tear down a private connection (chatos opcode 11).
    pub(crate) fn close_private(&self, connect_id: i64, peer: &str) -> Result<()> {
        let me = self.session.lock().login.clone().ok_or_else(closed_error)?;
        self.send(&Command::CloseConnection {
            connect_id,
            requester: me,
            target: peer.to_owned(),
        })
    }

    /// Queue an event; anything refused is dropped here, outside the queue's lock.
    fn emit(&self, ev: Event) {
        drop(self.events.push(ev));
    }

    /// The connection is over, for `why`, unless the application closed it.
    fn connection_ended(&self, terminal: Option<Event>) {
        {
            let mut s = self.session.lock();
            s.dead = true;
            s.pending = None;
        }
        self.answered.notify_all();
        self.accounts.connection_ended();
        if let Some(sock) = &self.sock {
            let _ = sock.shutdown(Shutdown::Both);
        }
        if !self.closed.load(Ordering::Acquire) {
            if let Some(ev) = terminal {
                self.emit(ev);
            }
        }
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(link) = &self.rooms {
            link.say_goodbye();
        }
        {
            let mut s = self.session.lock();
            s.dead = true;
            s.pending = None;
        }
        self.answered.notify_all();
        self.accounts.connection_ended();
        if let Some(sock) = &self.sock {
            let _ = sock.shutdown(Shutdown::Both);
        }
        for (_, s) in self.openers.lock().sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        drop(self.events.close());
    }
}
