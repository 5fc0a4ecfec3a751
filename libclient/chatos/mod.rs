//! The chatos dialect (seeds 004 and 002): `ChatosClient`, its reader's
//! handling of server commands, and the openers that dial the second TCP
//! connection of a private connection. Bytes go through
//! `chinwag_proto::chatos` only; a malformed or out-of-place command ends
//! the client with an error event.

mod stream;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use chinwag_proto::chatos::{op, Command, Decoder, MAX_LOGIN, MAX_TEXT};
use parking_lot::Mutex;

use crate::core::tcp::{self, Frames, Tcp};
use crate::core::{
    check_field, check_len, sealed, spawn, Connection, Core, Error, ErrorKind, Event, Result,
    DEFAULT_CAPACITY,
};

pub use stream::Stream;

/// How long the second end of a private connection waits for ESTABLISHED.
/// The peer's library dials as soon as it gets the same ID_PRIVATE, so this
/// only runs out when the peer is gone; the server keeps ids for 60 s.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

const DIALECT: &str = "chatos";

/// A chatos client: global and private messages, and relayed private
/// connections with a byte stream.
pub type ChatosClient = Connection<Chatos>;

/// The state of a chatos client, shared by its handle, its reader and its
/// openers (and, weakly, by its streams).
pub struct Chatos {
    core: Core,
    tcp: Tcp,
    /// Users whose private-connection request we have not answered yet.
    incoming: Mutex<HashSet<String>>,
}

impl sealed::Protocol for Chatos {
    fn core(&self) -> &Core {
        &self.core
    }

    fn shut(&self) {
        self.tcp.shutdown();
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    check_field(DIALECT, what, name, MAX_LOGIN)
}

fn check_text(text: &str) -> Result<()> {
    check_len(DIALECT, "message", text, MAX_TEXT)
}

impl Chatos {
    /// Write one command on the main connection.
    fn send(&self, cmd: &Command) -> Result<()> {
        self.tcp.write(&self.core, &cmd.to_bytes())
    }

    /// Ask the server to tear down a private connection (opcode 11).
    fn close_private(&self, connect_id: i64, peer: &str) -> Result<()> {
        let me = self.core.login.name().ok_or_else(Error::closed)?;
        self.send(&Command::CloseConnection {
            connect_id,
            requester: me,
            target: peer.to_owned(),
        })
    }
}

impl Frames for Chatos {
    type Frame = Command;

    fn frame(self: &Arc<Self>, cmd: Command) -> std::result::Result<(), String> {
        let core = &self.core;
        match cmd {
            Command::LoginAccepted | Command::LoginRefused => {
                let ok = matches!(cmd, Command::LoginAccepted);
                if core.login.settle(ok).is_some() {
                    core.login.answer(ok);
                } else {
                    // The server answers a LOGIN we did not send: harmless,
                    // and chatos servers also answer a repeated LOGIN this way.
                    log::debug!("unsolicited login answer ignored");
                }
            }
            Command::Message { from, text } => core.emit(Event::Message { from, text }),
            Command::MessagePrivate { from, to, text } => core.emit(Event::PrivateMessage {
                from,
                to,
                text,
                stamp: None,
            }),
            Command::RequestPrivate { requester, .. } => {
                self.incoming.lock().insert(requester.clone());
                core.emit(Event::PrivateRequest { from: requester });
            }
            Command::KoPrivate { target, .. } => core.emit(Event::PrivateRefused { peer: target }),
            Command::IdPrivate {
                requester,
                target,
                connect_id,
            } => {
                let me = core.login.name();
                let peer = if me.as_deref() == Some(requester.as_str()) {
                    target
                } else {
                    requester
                };
                start_opener(self, peer, connect_id);
            }
            Command::AcceptCloseConnection { login } => {
                core.emit(Event::PrivateClosed { peer: login })
            }
            other @ (Command::Login { .. }
            | Command::OkPrivate { .. }
            | Command::LoginPrivate { .. }
            | Command::Established
            | Command::CloseConnection { .. }) => {
                return Err(format!(
                    "the server sent a command only clients send: {other:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Dial the private connection on a short-lived thread, so the reader never
/// waits for the peer.
fn start_opener(chatos: &Arc<Chatos>, peer: String, connect_id: i64) {
    let token = chatos.core.next_token();
    let p2 = peer.clone();
    let started = spawn(chatos, "chinwag-private", move |chatos| {
        let result = establish(chatos, token, connect_id);
        chatos.core.unwatch_socket(token);
        match result {
            Ok(sock) => {
                log::info!("private connection with {peer} established");
                let stream = Stream::new(sock, peer.clone(), connect_id, Arc::downgrade(chatos));
                chatos.core.emit(Event::PrivateEstablished {
                    peer,
                    connect_id,
                    stream: Some(stream),
                });
            }
            Err(e) => abandon(chatos, peer, connect_id, e),
        }
    });
    if let Err(e) = started {
        abandon(chatos, p2, connect_id, e);
    }
}

/// This side gives up private connection `connect_id` before it was
/// established: the application hears why, and the server is told
/// (CLOSE_CONNECTION), so the peer's end, waiting or yet to come, is
/// closed at once rather than after its own time-out. The server confirms
/// with ACCEPT_CLOSE_CONNECTION (a PrivateClosed event after this
/// PrivateFailed) while the id was still open; it drops the close of an
/// id already gone (cancelled, expired).
fn abandon(chatos: &Chatos, peer: String, connect_id: i64, e: Error) {
    log::info!("private connection with {peer} failed: {}", e.message);
    // Queued first, so the confirmation's PrivateClosed comes after it.
    chatos.core.emit(Event::PrivateFailed {
        peer: peer.clone(),
        connect_id,
        code: e.code,
        text: e.message,
    });
    if let Err(e) = chatos.close_private(connect_id, &peer) {
        log::debug!("CLOSE_CONNECTION not sent: {}", e.message);
    }
}

/// Open the second TCP connection, present the id, and wait for ESTABLISHED.
/// Reads exactly one byte, so relayed bytes behind it stay in the socket.
fn establish(chatos: &Chatos, token: u64, connect_id: i64) -> Result<TcpStream> {
    let io = |what: &str, e: io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    let server = chatos.tcp.server();
    let sock = TcpStream::connect_timeout(&server, crate::core::CONNECT_TIMEOUT)
        .map_err(|e| Error::new(ErrorKind::ConnectFailed, format!("private connection: {e}")))?;
    chatos.core.watch_socket(token, &sock)?;
    let _ = sock.set_nodelay(true);
    (&sock)
        .write_all(&Command::LoginPrivate { connect_id }.to_bytes())
        .map_err(|e| io("sending LOGIN_PRIVATE", e))?;
    sock.set_read_timeout(Some(ESTABLISH_TIMEOUT))
        .map_err(|e| io("socket", e))?;
    let mut first = [0u8; 1];
    match (&sock).read_exact(&mut first) {
        Ok(()) if first[0] == op::ESTABLISHED => {}
        Ok(()) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("expected ESTABLISHED, the server sent opcode {}", first[0]),
            ))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Error::new(ErrorKind::Timeout, "the peer never joined"))
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(Error::new(
                ErrorKind::Closed,
                "the server closed the private connection before ESTABLISHED",
            ))
        }
        Err(e) => return Err(io("waiting for ESTABLISHED", e)),
    }
    sock.set_read_timeout(None).map_err(|e| io("socket", e))?;
    Ok(sock)
}

impl Connection<Chatos> {
    /// Connect to a chatos server at `host`:`port`.
    pub fn connect(host: &str, port: u16) -> Result<Self> {
        let tcp = Tcp::connect(host, port)?;
        let chatos = Arc::new(Chatos {
            core: Core::new(DEFAULT_CAPACITY),
            incoming: Mutex::new(HashSet::new()),
            tcp,
        });
        tcp::start_reader(&chatos, chatos.tcp.socket(), Decoder::new())?;
        log::info!("connected to {} (chatos)", chatos.tcp.server());
        Ok(Connection::new(chatos))
    }

    fn state(&self) -> &Chatos {
        self.proto()
    }

    /// Propose `login` and wait for the answer: `Ok` when accepted,
    /// `LoginRefused` when the name is taken (another may be tried). On
    /// `Timeout` the answer may still arrive and count.
    pub fn login(&self, login: &str, timeout: Option<Duration>) -> Result<()> {
        check_name("login", login)?;
        let c = self.state();
        let send = || {
            c.send(&Command::Login {
                login: login.to_owned(),
            })
        };
        if c.core.login.request(login, timeout, send)? {
            log::info!("logged in as {login}");
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::LoginRefused,
                format!("the server refused the login {login:?}"),
            ))
        }
    }

    /// Send `text` to every connected user (the sender receives it too).
    pub fn send_message(&self, text: &str) -> Result<()> {
        check_text(text)?;
        let c = self.state();
        let from = c.core.login.me()?;
        c.send(&Command::Message {
            from,
            text: text.to_owned(),
        })
    }

    /// Send `text` to the user `to` only. Unknown users are ignored by the server.
    pub fn send_private(&self, to: &str, text: &str) -> Result<()> {
        check_name("recipient", to)?;
        check_text(text)?;
        let c = self.state();
        let from = c.core.login.me()?;
        c.send(&Command::MessagePrivate {
            from,
            to: to.to_owned(),
            text: text.to_owned(),
        })
    }

    /// Ask `target` for a private connection. The answer arrives as a
    /// PrivateEstablished, PrivateRefused or PrivateFailed event.
    pub fn request_private(&self, target: &str) -> Result<()> {
        check_name("target", target)?;
        let c = self.state();
        let me = c.core.login.me()?;
        if me == target {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "cannot open a private connection to yourself",
            ));
        }
        c.send(&Command::RequestPrivate {
            requester: me,
            target: target.to_owned(),
        })
    }

    /// Accept the pending request of `requester`; the stream arrives as a
    /// PrivateEstablished event.
    pub fn accept_private(&self, requester: &str) -> Result<()> {
        self.answer_private(requester, true)
    }

    /// Refuse the pending request of `requester`.
    pub fn refuse_private(&self, requester: &str) -> Result<()> {
        self.answer_private(requester, false)
    }

    fn answer_private(&self, requester: &str, accept: bool) -> Result<()> {
        check_name("requester", requester)?;
        let c = self.state();
        let me = c.core.login.me()?;
        if !c.incoming.lock().remove(requester) {
            return Err(Error::new(
                ErrorKind::NoSuchRequest,
                format!("{requester:?} has no pending private-connection request"),
            ));
        }
        let (requester, target) = (requester.to_owned(), me);
        c.send(&if accept {
            Command::OkPrivate { requester, target }
        } else {
            Command::KoPrivate { requester, target }
        })
    }
}
