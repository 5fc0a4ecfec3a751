//! The babel front-end (seed 001): HelloConnect on accept, Login, the contact
//! list pushed from hub presence, and call set-up (CallRequest/CallRefused)
//! routed through the hub. One thread per connection. Voice itself flows
//! peer to peer and never touches the server.

use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use chinwag_proto::babel::{Decoder, Frame};

use crate::hub::{Dialect, Entry, Event, LoginError, Peer, Refusal, Session};
use crate::net::{self, Outbound, ReadEnd};
use crate::Shared;

/// A babel session's outlet: presence becomes Add/DelContact, call events
/// become CallRequest/CallRefused.
struct BabelPeer {
    out: Arc<Outbound>,
}

impl Peer for BabelPeer {
    fn deliver(&self, event: &Event<'_>) {
        let frame = match *event {
            Event::Presence { name, online: true } => Frame::AddContact {
                contacts: vec![name.into()],
            },
            Event::Presence {
                name,
                online: false,
            } => Frame::DelContact {
                contacts: vec![name.into()],
            },
            Event::CallOffer { from, host, port } => Frame::CallRequest {
                contact: from.into(),
                host: host.into(),
                port,
            },
            Event::CallRefused { by } => Frame::CallRefused { contact: by.into() },
            // Babel has no text chat and no relayed connections.
            _ => return,
        };
        self.out.enqueue(|b| frame.encode(b));
    }
}

enum State {
    Anonymous { deadline: Instant },
    Identified(Arc<Session>),
}

pub fn serve(stream: Arc<TcpStream>, shared: Arc<Shared>) {
    let Ok(peer_addr) = stream.peer_addr() else {
        return;
    };
    let label = format!("babel {peer_addr}");
    let _ = stream.set_nodelay(true);
    let out = Outbound::new(
        stream.clone(),
        &shared.flush,
        shared.cfg.outbound_limit,
        shared.cfg.write_timeout(),
        label.clone(),
    );
    log::info!("{label}: connected");
    // The client must not send anything before this.
    out.reply(&Frame::HelloConnect.to_bytes());
    let mut state = State::Anonymous {
        deadline: Instant::now() + shared.cfg.login_timeout(),
    };
    let mut decoder = Decoder::new();
    let mut rbuf = net::ReadBuf::default();
    let why: String = 'conn: loop {
        let deadline = match &state {
            State::Anonymous { deadline } => Some(*deadline),
            State::Identified(_) => {
                out.throttle(shared.cfg.write_timeout());
                None
            }
        };
        let bytes = match rbuf.read(&stream, deadline) {
            Ok(b) => b,
            Err(ReadEnd::Eof) => break "disconnected".into(),
            Err(ReadEnd::Io(e)) => break format!("connection error: {e}"),
            Err(ReadEnd::Deadline) => break "closed: no login within the deadline".into(),
        };
        decoder.push(bytes);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    log::trace!("{label}: {frame:?}");
                    if let Err(why) =
                        handle(frame, &shared, &out, &mut state, peer_addr.ip(), &stream)
                    {
                        break 'conn why;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn format!("closed: framing error: {e}"),
            }
        }
    };
    if let State::Identified(s) = &state {
        // Everyone else hears DelContact.
        shared.hub.logout(s);
    }
    out.close();
    let _ = stream.shutdown(Shutdown::Both);
    let who = match &state {
        State::Identified(s) => s.name.as_str(),
        State::Anonymous { .. } => "-",
    };
    if why.starts_with("closed: framing") || why.starts_with("closed: protocol") {
        log::warn!("{label} ({who}): {why}");
    } else {
        log::info!("{label} ({who}): {why}");
    }
}

fn handle(
    frame: Frame,
    shared: &Arc<Shared>,
    out: &Arc<Outbound>,
    state: &mut State,
    ip: IpAddr,
    stream: &TcpStream,
) -> Result<(), String> {
    let hub = &shared.hub;
    match (frame, &*state) {
        (Frame::Login { name }, State::Anonymous { .. }) => {
            let entry = Entry {
                dialect: Dialect::Babel,
                ip,
                peer: Arc::new(BabelPeer { out: out.clone() }),
                global_chat: false,
                presence: true,
                has_password: false,
            };
            // LoginSuccess and the contact list go out before anything
            // another user's actions may queue.
            let mut held = false;
            let welcome = |others: &[String]| {
                let mut bytes = Frame::LoginSuccess.to_bytes();
                Frame::AddContact {
                    contacts: others.to_vec(),
                }
                .encode(&mut bytes);
                held = out.hold(&bytes);
            };
            match hub.login_with(&name, entry, welcome) {
                Ok(session) => {
                    if held {
                        out.flush_held();
                    }
                    let _ = stream.set_read_timeout(None);
                    log::info!("babel {ip}: logged in as {name}");
                    *state = State::Identified(session);
                }
                Err(why) => {
                    let reason = match why {
                        LoginError::Taken => "username already used",
                        LoginError::Invalid => "invalid username",
                        LoginError::Reserved => "username belongs to a registered account",
                    };
                    out.reply(
                        &Frame::LoginFailed {
                            reason: reason.into(),
                        }
                        .to_bytes(),
                    );
                }
            }
            Ok(())
        }
        (Frame::Login { .. }, State::Identified(_)) => {
            out.reply(
                &Frame::LoginFailed {
                    reason: "already logged in".into(),
                }
                .to_bytes(),
            );
            Ok(())
        }
        (
            Frame::CallRequest {
                contact,
                host,
                port,
            },
            State::Identified(me),
        ) => {
            if let Err(why) = hub.offer_call(Instant::now(), me, &contact, &host, port) {
                let what = match why {
                    Refusal::Limit => format!("too many calls ringing; cannot call {contact}"),
                    _ => format!("{contact} is not connected"),
                };
                out.enqueue(|b| Frame::ErrorResponse { what }.encode(b));
            }
            Ok(())
        }
        (Frame::CallRefused { contact }, State::Identified(me)) => {
            if let Err(why) = hub.refuse_call(Instant::now(), me, &contact) {
                log::debug!(
                    "babel {ip} ({}): CallRefused for {contact} ignored: {why:?}",
                    me.name
                );
            }
            Ok(())
        }
        (f @ (Frame::CallRequest { .. } | Frame::CallRefused { .. }), State::Anonymous { .. }) => {
            Err(format!(
                "closed: protocol: opcode {} before Login",
                f.opcode()
            ))
        }
        (other, _) => Err(format!(
            "closed: protocol: opcode {} is not for the server",
            other.opcode()
        )),
    }
}
