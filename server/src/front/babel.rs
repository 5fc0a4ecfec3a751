//! The babel front-end (seed 001): HelloConnect on accept, Login, the contact
//! list pushed from hub presence (every user a babel client can call,
//! whatever its dialect), and call set-up (CallRequest/CallRefused) routed
//! through the hub's call model. One thread per connection. Voice flows
//! peer to peer, or through the media relay (`media`) for calls it relays.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use chinwag_proto::babel::Frame;

use super::{Conn, End};
use crate::hub::{Dialect, Entry, Event, LoginError, Media, Peer, Refusal, Session};
use crate::net::Outbound;
use crate::Shared;

/// A babel session's outlet: presence becomes Add/DelContact, call events
/// become CallRequest/CallRefused.
struct BabelPeer {
    out: Arc<Outbound>,
}

impl Peer for BabelPeer {
    fn deliver(&self, event: &Event<'_>) -> bool {
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
            // Babel has no text chat and no relayed connections; an answer
            // or a hang-up is the voice connection opening or closing.
            _ => return true,
        };
        self.out.enqueue(|b| frame.encode(b))
    }

    fn disconnect(&self) {
        self.out.disconnect();
    }
}

enum State {
    Anonymous { deadline: Instant },
    Identified(Arc<Session>),
}

pub fn serve(stream: Arc<TcpStream>, shared: Arc<Shared>) {
    let Some(conn) = Conn::open(stream, &shared, Dialect::Babel) else {
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
    let end = conn.frames::<Frame, _>(&shared, &mut state, deadline, |st, frame, _| {
        handle(frame, &shared, &conn, st)
    });
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
                server_ip: conn.stream.local_addr().ok().map(|a| a.ip()),
                ..Entry::new(Dialect::Babel, ip, Arc::new(BabelPeer { out: out.clone() }))
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
                    crate::logs::peer_log!(
                        log::Level::Info,
                        ip,
                        "login",
                        "babel {ip}: logged in as {name}"
                    );
                    *state = State::Identified(session);
                }
                Err(why) => {
                    let reason = match why {
                        LoginError::Taken => "username already used",
                        LoginError::Invalid => "invalid username",
                        LoginError::Reserved => "username belongs to a registered account",
                        LoginError::Banned => "banned",
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
            let media = Media::BabelListen { host, port };
            if let Err(why) = hub.offer_call(Instant::now(), me, &contact, media) {
                let what = match why {
                    Refusal::Limit => format!("too many calls ringing; cannot call {contact}"),
                    Refusal::Busy => format!("already in a call with {contact}"),
                    _ => format!("{contact} is not connected"),
                };
                out.enqueue(|b| Frame::ErrorResponse { what }.encode(b));
            }
            Ok(())
        }
        (Frame::CallRefused { contact }, State::Identified(me)) => {
            if let Err(why) = hub.answer_call(Instant::now(), me, &contact, None) {
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
