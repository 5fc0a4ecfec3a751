//! The chatos front-end: turns chatos frames into hub calls and hub events
//! into chatos frames, on one thread per connection. It decides nothing the
//! hub decides (names, routing, ids); it owns only the dialect's rules of
//! order (LOGIN first, once) and the rule that bad bytes close the connection.

use std::io;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{self, Command, CommandRef};
use crossbeam_channel::RecvTimeoutError;

use super::relay::{self, Awaited};
use super::{Conn, End};
use crate::hub::{Dialect, Entry, Event, Peer, RelayJoin, Session};
use crate::metrics::DropReason;
use crate::net::Outbound;
use crate::Shared;

/// Extra time the first end of a relay waits for the second end's hand-over
/// after the ticket's deadline, covering a join that raced the deadline.
const HANDOVER_GRACE: Duration = Duration::from_secs(1);

/// A chatos session's outlet: encodes hub events into its outbound queue.
struct ChatosPeer {
    out: Arc<Outbound>,
}

impl Peer for ChatosPeer {
    fn deliver(&self, event: &Event<'_>) -> bool {
        self.out.enqueue(|buf| match *event {
            // A text from another dialect may be longer than chatos's
            // 1,024 bytes: it goes as several frames (docs/bridging.md).
            Event::Message { from, text } => {
                for piece in chatos::pieces(text) {
                    chatos::encode_message(buf, from, piece)
                }
            }
            Event::PrivateMessage { from, to, text } => {
                for piece in chatos::pieces(text) {
                    chatos::encode_message_private(buf, from, to, piece)
                }
            }
            Event::PrivateRequest { requester, target } => Command::RequestPrivate {
                requester: requester.into(),
                target: target.into(),
            }
            .encode(buf),
            Event::PrivateRefused { requester, target } => Command::KoPrivate {
                requester: requester.into(),
                target: target.into(),
            }
            .encode(buf),
            Event::PrivateId {
                requester,
                target,
                connect_id,
            } => Command::IdPrivate {
                requester: requester.into(),
                target: target.into(),
                connect_id,
            }
            .encode(buf),
            Event::PrivateClosed { peer, .. } => {
                Command::AcceptCloseConnection { login: peer.into() }.encode(buf)
            }
            // Chatos has no presence, call or room frames.
            Event::Presence { .. }
            | Event::CallOffer { .. }
            | Event::CallAnswered { .. }
            | Event::CallRefused { .. }
            | Event::CallEnded { .. }
            | Event::CallTaken { .. }
            | Event::RoomInvitation { .. }
            | Event::RoomClosed { .. }
            | Event::RoomMessage { .. } => {}
        })
    }

    fn disconnect(&self) {
        self.out.disconnect();
    }
}

enum State {
    Anonymous { deadline: Instant },
    Identified(Arc<Session>),
}

/// Serve one accepted chatos connection until it ends.
pub fn serve(stream: Arc<TcpStream>, shared: Arc<Shared>) {
    let Some(conn) = Conn::open(stream, &shared, Dialect::Chatos) else {
        return;
    };
    let mut state = State::Anonymous {
        deadline: Instant::now() + shared.cfg.login_timeout(),
    };
    let deadline = |st: &State| match st {
        State::Anonymous { deadline } => Some(*deadline),
        State::Identified(_) => None,
    };
    let end = conn.frames::<Command, _>(&shared, &mut state, deadline, |st, cmd, rest| {
        handle(cmd, &conn, &shared, st, rest)
    });
    let who = match &state {
        State::Identified(session) => {
            shared.hub.logout(session);
            session.name.as_str()
        }
        State::Anonymous { .. } => "-",
    };
    conn.finish(end, who);
}

fn handle(
    cmd: CommandRef<'_>,
    conn: &Conn,
    shared: &Arc<Shared>,
    state: &mut State,
    rest: &[u8],
) -> Result<(), End> {
    let (stream, out, ip, label) = (&conn.stream, &conn.out, conn.ip, conn.label.as_str());
    let hub = &shared.hub;
    let session = match state {
        State::Anonymous { .. } => match cmd {
            CommandRef::Login { login } => {
                let entry = Entry::new(
                    Dialect::Chatos,
                    ip,
                    Arc::new(ChatosPeer { out: out.clone() }),
                );
                // LOGIN_ACCEPTED is queued before the session becomes
                // visible, so no broadcast can overtake it.
                let mut held = false;
                let welcome = |_: &[String]| held = out.hold(&[chatos::op::LOGIN_ACCEPTED]);
                match hub.login_with(login, entry, welcome) {
                    Ok(session) => {
                        if held {
                            out.flush_held();
                        }
                        let _ = stream.set_read_timeout(None);
                        crate::logs::peer_log!(
                            log::Level::Info,
                            ip,
                            "login",
                            "{label}: logged in as {login}"
                        );
                        *state = State::Identified(session);
                    }
                    Err(why) => {
                        crate::logs::peer_log!(
                            log::Level::Info,
                            ip,
                            "login refused",
                            "{label}: login {login:?} refused: {why:?}"
                        );
                        out.reply(&[chatos::op::LOGIN_REFUSED]);
                    }
                }
                return Ok(());
            }
            CommandRef::LoginPrivate { connect_id } => {
                // The bytes read behind it are the first relayed ones.
                match hub.proxy_dial(connect_id, ip) {
                    // Another node issued the id: that node relays.
                    Some(dialed) => proxy_end(stream, shared, dialed, connect_id, label, rest)?,
                    None => private_end(stream, shared, connect_id, ip, label, rest)?,
                }
                return Err(End::Relayed);
            }
            other => return Err(End::Protocol(format!("{} before LOGIN", other.name()))),
        },
        State::Identified(s) => s.clone(),
    };
    let now = Instant::now();
    let result = match cmd {
        CommandRef::Login { .. } => {
            // Identification happens once; a second LOGIN is answered, not obeyed.
            out.reply(&[chatos::op::LOGIN_REFUSED]);
            Ok(())
        }
        CommandRef::Message { from, text } => hub.broadcast(&session, from, text).map(|_| ()),
        CommandRef::MessagePrivate { from, to, text } => {
            hub.private_message(&session, from, to, text)
        }
        CommandRef::RequestPrivate { requester, target } => {
            hub.request_private(now, &session, requester, target)
        }
        CommandRef::OkPrivate { requester, target } => hub
            .answer_private(now, &session, requester, target, true)
            .map(|_| ()),
        CommandRef::KoPrivate { requester, target } => hub
            .answer_private(now, &session, requester, target, false)
            .map(|_| ()),
        CommandRef::CloseConnection {
            connect_id,
            requester,
            target,
        } => hub
            .close_private(&session, connect_id, requester, target)
            .map(|outcome| {
                for s in outcome.sockets {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }),
        CommandRef::LoginPrivate { .. } => {
            return Err(End::Protocol(
                "LOGIN_PRIVATE on an identified connection".into(),
            ))
        }
        other @ (CommandRef::LoginAccepted
        | CommandRef::LoginRefused
        | CommandRef::IdPrivate { .. }
        | CommandRef::Established
        | CommandRef::AcceptCloseConnection { .. }) => {
            return Err(End::Protocol(format!(
                "server-only {} from a client",
                other.name()
            )))
        }
    };
    if let Err(why) = result {
        // The seed answers none of these; forged fields are worth a warning.
        match why {
            crate::hub::Refusal::Forged => crate::logs::peer_log!(
                log::Level::Warn,
                ip,
                "forged",
                "{label} ({}): forged sender field, dropped",
                session.name
            ),
            other => log::debug!("{label} ({}): ignored: {other:?}", session.name),
        }
    }
    Ok(())
}

/// Cluster mode: this connection's LOGIN_PRIVATE names a connect id of
/// another node, to which `dialed` is connected (its handshake sent):
/// move bytes both ways until both directions are done. Counted in
/// `max_relays` as a relay.
fn proxy_end(
    stream: &Arc<TcpStream>,
    shared: &Arc<Shared>,
    dialed: io::Result<TcpStream>,
    id: i64,
    label: &str,
    pending: &[u8],
) -> Result<(), End> {
    let hub = &shared.hub;
    if !hub.proxy_begin(id, stream) {
        return Err(End::Protocol("relay limit reached".into()));
    }
    let node = match dialed {
        Ok(s) => Arc::new(s),
        Err(e) => {
            hub.proxy_end(id);
            return Err(End::Protocol(format!(
                "connect id {id:#x}: its node cannot be reached: {e}"
            )));
        }
    };
    let _ = stream.set_read_timeout(None);
    crate::net::widen_send_buffer(stream);
    log::info!("{label}: private connection {id:#x} proxied to its node");
    // The other direction's thread, within the thread budget; it says
    // when it is done (a budget thread has no join handle).
    let (done, back) = crossbeam_channel::bounded::<()>(1);
    let spawned = {
        let (node, stream) = (node.clone(), stream.clone());
        let builder = std::thread::Builder::new()
            .name("cw-proxy".into())
            .stack_size(crate::net::CONN_STACK);
        shared.budget.spawn(builder, move || {
            // Nothing back, not even ESTABLISHED: the issuing node refused
            // or cancelled this end (its partner left, say), so it will
            // never be relayed: closed whole, which ends the other
            // direction too and gives the slot back at once.
            if !matches!(relay::pump(&node, &stream, &[]), Ok(n) if n > 0) {
                let _ = node.shutdown(Shutdown::Both);
                let _ = stream.shutdown(Shutdown::Both);
            }
            drop(done);
        })
    };
    if let Err(e) = spawned {
        hub.proxy_end(id);
        hub.metrics().dropped(DropReason::ThreadBudget);
        let _ = node.shutdown(Shutdown::Both);
        return Err(End::Protocol(format!("no thread for a proxy: {e}")));
    }
    if let Err(e) = relay::pump(stream, &node, pending) {
        log::info!("{label}: proxy {id:#x} broken: {e}");
        let _ = node.shutdown(Shutdown::Both);
        let _ = stream.shutdown(Shutdown::Both);
    }
    // Disconnected once the thread ends (or, refused, never ran).
    let _ = back.recv();
    hub.proxy_end(id);
    Ok(())
}

/// This connection opened with LOGIN_PRIVATE: pair it with the other end and
/// relay until both directions are done.
pub(crate) fn private_end(
    stream: &Arc<TcpStream>,
    shared: &Arc<Shared>,
    id: i64,
    ip: IpAddr,
    label: &str,
    pending: &[u8],
) -> Result<(), End> {
    let hub = &shared.hub;
    let _ = stream.set_read_timeout(None);
    crate::net::widen_send_buffer(stream);
    let other = match hub.relay_join(Instant::now(), id, ip, stream.clone()) {
        RelayJoin::First {
            rx,
            woken,
            deadline,
        } => {
            log::info!("{label}: first end of private connection {id:#x}, waiting");
            let sent = !pending.is_empty();
            let handed = match relay::await_partner(stream, &woken, deadline, sent) {
                // Its slot is free at once; the id stays valid until it
                // expires, for either user to present again.
                Awaited::ClientGone if hub.relay_leave(id, stream) => {
                    return Err(End::Closed(format!(
                        "left before the other end of {id:#x} came"
                    )))
                }
                // Woken, or gone just as the second end took this one:
                // the hand-over is in the channel or on its way.
                Awaited::Woken | Awaited::ClientGone => rx.recv_timeout(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(HANDOVER_GRACE),
                ),
                Awaited::Deadline => Err(RecvTimeoutError::Timeout),
            };
            match handed {
                Ok(other) => other,
                // The hub dropped the ticket: one of the two users' chat
                // session ended, or CLOSE_CONNECTION closed the id. The
                // partner will never come: this end closes now, without
                // a byte (the seed has no frame for it).
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(End::Closed(format!(
                        "connect id {id:#x} cancelled before its second end came"
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    if hub.relay_abandon(id) {
                        return Err(End::Protocol(format!("connect id {id:#x} expired unused")));
                    }
                    // The second end took the ticket just now; its socket is on the way.
                    rx.recv_timeout(HANDOVER_GRACE)
                        .map_err(|_| End::Protocol("relay hand-over lost".into()))?
                }
            }
        }
        RelayJoin::Second { other, notify } => {
            let established = [chatos::op::ESTABLISHED];
            // Both ESTABLISHED bytes go out before either side pumps, so
            // neither client sees relayed bytes ahead of its ESTABLISHED.
            let ok = io::Write::write_all(&mut &*other, &established).is_ok()
                && io::Write::write_all(&mut &**stream, &established).is_ok();
            let _ = notify.send(stream.clone());
            if !ok {
                let _ = other.shutdown(Shutdown::Both);
                let _ = stream.shutdown(Shutdown::Both);
            }
            log::info!("{label}: private connection {id:#x} established");
            other
        }
        RelayJoin::Unknown => {
            return Err(End::Protocol(format!("unknown or used connect id {id:#x}")))
        }
        RelayJoin::Expired => return Err(End::Protocol(format!("expired connect id {id:#x}"))),
        RelayJoin::WrongAddress => {
            return Err(End::Protocol(format!(
                "connect id {id:#x} presented from {ip}, which neither user is connected from"
            )))
        }
        RelayJoin::Full => return Err(End::Protocol("relay limit reached".into())),
    };
    let result = relay::pump(stream, &other, pending);
    hub.relay_half_done(Instant::now(), id);
    match result {
        Ok(n) => log::debug!("{label}: relay {id:#x} direction done, {n} bytes"),
        Err(e) => {
            log::info!("{label}: relay {id:#x} broken: {e}");
            let _ = other.shutdown(Shutdown::Both);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    Ok(())
}
