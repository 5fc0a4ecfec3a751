//! The client side of chatos: the reader thread that turns server commands
//! into events, and the openers that dial the second TCP connection of a
//! private connection. Bytes go through `chinwag_proto::chatos` only; a
//! malformed or out-of-place command ends the client with an error event.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chinwag_proto::chatos::{op, Command, Decoder};

use super::{Error, Event, Result, Shared, Stream, CONNECT_TIMEOUT};
use crate::ffi::codes::cw_result;

/// How long the second end of a private connection waits for ESTABLISHED.
/// The peer's library dials as soon as it gets the same ID_PRIVATE, so this
/// only runs out when the peer is gone; the server keeps ids for 60 s.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn read_loop(shared: Arc<Shared>, sock: TcpStream) {
    super::read_frames(shared, sock, Decoder::new(), handle);
}

fn handle(shared: &Arc<Shared>, cmd: Command) -> std::result::Result<(), String> {
    match cmd {
        Command::LoginAccepted | Command::LoginRefused => {
            let ok = matches!(cmd, Command::LoginAccepted);
            let mut s = shared.session.lock();
            match s.pending.take() {
                Some(name) => {
                    if ok {
                        s.login = Some(name);
                    }
                    s.answer = Some(ok);
                    drop(s);
                    shared.answered.notify_all();
                }
                // The server answers a LOGIN we did not send: harmless, and
                // chatos servers also answer a repeated LOGIN this way.
                None => log::debug!("unsolicited login answer ignored"),
            }
        }
        Command::Message { from, text } => shared.emit(Event::Message { from, text }),
        Command::MessagePrivate { from, to, text } => {
            shared.emit(Event::PrivateMessage { from, to, text })
        }
        Command::RequestPrivate { requester, .. } => {
            shared.session.lock().incoming.insert(requester.clone());
            shared.emit(Event::PrivateRequest { from: requester });
        }
        Command::KoPrivate { target, .. } => shared.emit(Event::PrivateRefused { peer: target }),
        Command::IdPrivate {
            requester,
            target,
            connect_id,
        } => {
            let me = shared.session.lock().login.clone();
            let peer = if me.as_deref() == Some(requester.as_str()) {
                target
            } else {
                requester
            };
            spawn_opener(shared, peer, connect_id);
        }
        Command::AcceptCloseConnection { login } => {
            shared.emit(Event::PrivateClosed { peer: login })
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

/// Dial the private connection on a short-lived thread, so the reader never
/// waits for the peer.
fn spawn_opener(shared: &Arc<Shared>, peer: String, connect_id: i64) {
    let mut openers = shared.openers.lock();
    openers.threads.retain(|t| !t.is_finished());
    let token = openers.next;
    openers.next += 1;
    let s2 = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("chinwag-private".into())
        .spawn(move || {
            let result = establish(&s2, token, connect_id);
            s2.openers.lock().sockets.retain(|(t, _)| *t != token);
            match result {
                Ok(sock) => {
                    log::info!("private connection with {peer} established");
                    let stream = Stream::new(sock, peer.clone(), connect_id, Arc::downgrade(&s2));
                    s2.emit(Event::PrivateEstablished {
                        peer,
                        connect_id,
                        stream: Some(stream),
                    });
                }
                Err(e) => {
                    log::info!("private connection with {peer} failed: {}", e.message);
                    s2.emit(Event::PrivateFailed {
                        peer,
                        connect_id,
                        code: e.code,
                        text: e.message,
                    });
                }
            }
        });
    match spawned {
        Ok(t) => openers.threads.push(t),
        Err(e) => {
            drop(openers);
            shared.emit(Event::PrivateFailed {
                peer: String::new(),
                connect_id,
                code: cw_result::CW_INTERNAL,
                text: format!("cannot start a thread: {e}"),
            });
        }
    }
}

/// Open the second TCP connection, present the id, and wait for ESTABLISHED.
/// Reads exactly one byte, so relayed bytes behind it stay in the socket.
fn establish(shared: &Shared, token: u64, connect_id: i64) -> Result<TcpStream> {
    let io = |what: &str, e: io::Error| Error::new(cw_result::CW_IO, format!("{what}: {e}"));
    let sock = TcpStream::connect_timeout(&shared.server, CONNECT_TIMEOUT).map_err(|e| {
        Error::new(
            cw_result::CW_CONNECT_FAILED,
            format!("private connection: {e}"),
        )
    })?;
    {
        let mut openers = shared.openers.lock();
        if shared.closed.load(Ordering::Acquire) {
            let _ = sock.shutdown(Shutdown::Both);
            return Err(Error::new(cw_result::CW_CLOSED, "the client was closed"));
        }
        openers
            .sockets
            .push((token, sock.try_clone().map_err(|e| io("socket", e))?));
    }
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
                cw_result::CW_PROTOCOL,
                format!("expected ESTABLISHED, the server sent opcode {}", first[0]),
            ))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Error::new(cw_result::CW_TIMEOUT, "the peer never joined"))
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(Error::new(
                cw_result::CW_CLOSED,
                "the server closed the private connection before ESTABLISHED",
            ))
        }
        Err(e) => return Err(io("waiting for ESTABLISHED", e)),
    }
    sock.set_read_timeout(None).map_err(|e| io("socket", e))?;
    Ok(sock)
}
