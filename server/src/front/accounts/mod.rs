//! The accounts front-end (seed 000): one thread per TCP connection turning
//! accounts frames into calls on the accounts service. It owns the order of
//! the dialect (HELLO first, LOGIN before the rest) and closes connections
//! that send bad bytes; policy lives in `service`.

mod limits;
mod password;
pub mod service;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use chinwag_proto::accounts::{feature, Frame};

use super::{Conn, End};
use crate::Shared;
use service::{Accounts, Member};

enum State {
    /// Waiting for HELLO (200).
    Greeting,
    /// HELLO done; REGISTER and LOGIN allowed. `features`: the bits
    /// granted to this connection (`feature::*`), fixed at login.
    Anonymous {
        features: u32,
    },
    Member(Arc<Member>),
}

/// Answer a HELLO: a plain one with a plain 201 (the seed's bytes, for
/// clients that know no features); one asking for features with the
/// subset this server has. Returns the bits granted.
fn greet(out: &Arc<crate::net::Outbound>, asked: Option<u32>) -> u32 {
    match asked {
        None => {
            out.reply(&Frame::HelloAck.to_bytes());
            0
        }
        Some(bits) => {
            let features = bits & feature::ALL;
            out.reply(&Frame::HelloAckWith { features }.to_bytes());
            features
        }
    }
}

/// The features a HELLO asks for: None for the seed's plain HELLO.
fn hello(frame: &Frame) -> Option<Option<u32>> {
    match frame {
        Frame::Hello => Some(None),
        Frame::HelloWith { features } => Some(Some(*features)),
        _ => None,
    }
}

pub fn serve(stream: Arc<TcpStream>, shared: Arc<Shared>) {
    let Some(accounts) = shared.accounts.clone() else {
        return;
    };
    let Some(conn) = Conn::open(stream, &shared, crate::hub::Dialect::Accounts) else {
        return;
    };
    let login_by = Instant::now() + shared.cfg.login_timeout();
    let mut state = State::Greeting;
    let deadline = |st: &State| match st {
        State::Member(_) => None,
        _ => Some(login_by),
    };
    let end = conn.frames::<Frame, _>(&shared, &mut state, deadline, |st, frame, _| {
        handle(frame, &accounts, &conn, st)
    });
    let who = match &state {
        State::Member(m) => {
            accounts.logout(m);
            m.pseudo.as_str()
        }
        _ => "-",
    };
    conn.finish(end, who);
}

fn handle(
    frame: Frame,
    accounts: &Arc<Accounts>,
    conn: &Conn,
    state: &mut State,
) -> Result<(), End> {
    let (out, ip) = (&conn.out, conn.ip);
    let code = frame.code();
    let me = match state {
        State::Greeting => {
            let Some(asked) = hello(&frame) else {
                return Err(End::Protocol(format!("instruction {code} before HELLO")));
            };
            *state = State::Anonymous {
                features: greet(out, asked),
            };
            return Ok(());
        }
        State::Anonymous { features } => {
            let features = *features;
            match frame {
                Frame::Hello | Frame::HelloWith { .. } => {
                    // A repeated HELLO may change what is asked before login.
                    *state = State::Anonymous {
                        features: greet(out, hello(&frame).flatten()),
                    };
                }
                Frame::Register {
                    email,
                    pseudo,
                    password,
                } => accounts.register(Instant::now(), ip, email, pseudo, password, out),
                Frame::Login { email, password } => {
                    if let Some(m) = accounts.login(
                        Instant::now(),
                        &email,
                        &password,
                        ip,
                        out,
                        features,
                        conn.stream.local_addr().ok().map(|a| a.ip()),
                    ) {
                        let _ = conn.stream.set_read_timeout(None);
                        *state = State::Member(m);
                    }
                }
                _ if is_server_only(&frame) => {
                    return Err(End::Protocol(format!(
                        "server-only instruction {code} from a client"
                    )))
                }
                _ => return Err(End::Protocol(format!("instruction {code} before LOGIN"))),
            }
            return Ok(());
        }
        State::Member(m) => m.clone(),
    };
    match frame {
        Frame::Hello => {
            out.reply(&Frame::HelloAck.to_bytes());
        }
        // Features are fixed at login; the answer says which are in force.
        Frame::HelloWith { .. } => {
            out.reply(
                &Frame::HelloAckWith {
                    features: me.features(),
                }
                .to_bytes(),
            );
        }
        Frame::Login { .. } => {
            out.reply(&Frame::LoginFailed.to_bytes());
        }
        Frame::Register {
            email,
            pseudo,
            password,
        } => accounts.register(Instant::now(), ip, email, pseudo, password, out),
        Frame::FriendRequest { pseudo } => accounts.friend_request(&me, pseudo),
        Frame::AcceptFriend { pseudo } => accounts.answer_friend(&me, pseudo, true),
        Frame::RefuseFriend { pseudo } => accounts.answer_friend(&me, pseudo, false),
        Frame::SendMessage { pseudo, text } => accounts.send_message(&me, pseudo, text),
        Frame::History { pseudo, before } => accounts.history(&me, pseudo, before),
        Frame::ListFriends => accounts.list(&me, true),
        Frame::ListRequests => accounts.list(&me, false),
        Frame::Call { pseudo, addr, port } => accounts.call(&me, pseudo, addr, port),
        Frame::AnswerCall { pseudo, addr, port } => {
            accounts.answer_call(&me, &pseudo, Some((addr, port)))
        }
        Frame::DeclineCall { pseudo } => accounts.answer_call(&me, &pseudo, None),
        Frame::Hangup { pseudo } => accounts.hangup(&me, &pseudo),
        other => {
            return Err(End::Protocol(format!(
                "server-only instruction {} from a client",
                other.code()
            )));
        }
    }
    Ok(())
}

fn is_server_only(f: &Frame) -> bool {
    !matches!(
        f,
        Frame::Hello
            | Frame::HelloWith { .. }
            | Frame::Register { .. }
            | Frame::Login { .. }
            | Frame::FriendRequest { .. }
            | Frame::AcceptFriend { .. }
            | Frame::RefuseFriend { .. }
            | Frame::SendMessage { .. }
            | Frame::History { .. }
            | Frame::ListFriends
            | Frame::ListRequests
            | Frame::Call { .. }
            | Frame::AnswerCall { .. }
            | Frame::DeclineCall { .. }
            | Frame::Hangup { .. }
    )
}
