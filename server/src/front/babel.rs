//! The babel front-end (seed 001): HelloConnect on accept, Login, the contact
//! list pushed from hub presence, and call set-up (CallRequest/CallRefused)
//! routed through the hub. One thread per connection. Voice itself flows
//! peer to peer and never touches the server.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use chinwag_proto::babel::Frame;

use super::{Conn, End};
use crate::hub::{Dialect, Entry, Event, LoginError, Peer, Refusal, Session};
use crate::net::Outbound;
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
    let Some(conn) = Conn::open(stream, &shared, "babel") else {
        return;
    };
    // The client must not send anything before this.
    conn.out.reply(&Frame::HelloConnect.to_bytes());
    let mut state = State::Anonymous {
        deadline: Instant::now() + shared.cfg.login_timeout(),
    };
    let deadline = |st: &State| match st {
        State::Anonymous { deadline } => Some(*deadline),
        State::Identified(_) => None,
    };
    let end = conn.frames(
        &shared,
        &mut state,
        deadline,
        Frame::redacted,
        |st, frame: Frame, _| handle(frame, &shared, &conn, st),
    );
    let who = match &state {
        State::Identified(s) => {
            // Everyone else hears DelContact.
            shared.hub.logout(s);
            s.name.as_str()
        }
        State::Anonymous { .. } => "-",
    };
    conn.finish(end, who);
}

fn handle(frame: Frame, shared: &Arc<Shared>, conn: &Conn, state: &mut State) -> Result<(), End> {
    let (hub, out, ip) = (&shared.hub, &conn.out, conn.ip);
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
                    let _ = conn.stream.set_read_timeout(None);
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
            Err(End::Protocol(format!("opcode {} before Login", f.opcode())))
        }
        (other, _) => Err(End::Protocol(format!(
            "opcode {} is not for the server",
            other.opcode()
        ))),
    }
}
