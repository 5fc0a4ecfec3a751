//! The accounts front-end (seed 000): one thread per TCP connection turning
//! accounts frames into calls on the accounts service. It owns the order of
//! the dialect (HELLO first, LOGIN before the rest) and closes connections
//! that send bad bytes; policy lives in `service`.

mod password;
pub mod service;

use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use chinwag_proto::accounts::{Decoder, Frame};

use crate::net::{self, Outbound, ReadEnd};
use crate::Shared;
use service::{Accounts, Member};

enum State {
    /// Waiting for HELLO (200).
    Greeting,
    /// HELLO done; REGISTER and LOGIN allowed.
    Anonymous,
    Member(Arc<Member>),
}

pub fn serve(stream: Arc<TcpStream>, shared: Arc<Shared>) {
    let Ok(peer_addr) = stream.peer_addr() else {
        return;
    };
    let Some(accounts) = shared.accounts.clone() else {
        return;
    };
    let label = format!("accounts {peer_addr}");
    let _ = stream.set_nodelay(true);
    let out = Outbound::new(
        stream.clone(),
        &shared.flush,
        shared.cfg.outbound_limit,
        shared.cfg.write_timeout(),
        label.clone(),
    );
    log::info!("{label}: connected");
    let deadline = Instant::now() + shared.cfg.login_timeout();
    let mut state = State::Greeting;
    let mut decoder = Decoder::new();
    let mut rbuf = net::ReadBuf::default();
    let why: String = loop {
        let limit = match state {
            State::Member(_) => {
                out.throttle(shared.cfg.write_timeout());
                None
            }
            _ => Some(deadline),
        };
        let bytes = match rbuf.read(&stream, limit) {
            Ok(bytes) => bytes,
            Err(ReadEnd::Eof) => break "disconnected".into(),
            Err(ReadEnd::Io(e)) => break format!("connection error: {e}"),
            Err(ReadEnd::Deadline) => break "closed: no login within the deadline".into(),
        };
        decoder.push(bytes);
        let mut end = None;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(why) =
                        handle(frame, &accounts, &out, &mut state, peer_addr.ip(), &stream)
                    {
                        end = Some(why);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    end = Some(format!("closed: framing error: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = end {
            break why;
        }
    };
    if let State::Member(m) = &state {
        accounts.logout(m);
    }
    out.close();
    let _ = stream.shutdown(Shutdown::Both);
    let who = match &state {
        State::Member(m) => m.pseudo.as_str(),
        _ => "-",
    };
    if why.starts_with("closed: framing") || why.starts_with("closed: protocol") {
        log::warn!("{label} ({who}): {why}");
    } else {
        log::info!("{label} ({who}): {why}");
    }
}

fn handle(
    frame: Frame,
    accounts: &Arc<Accounts>,
    out: &Arc<Outbound>,
    state: &mut State,
    ip: IpAddr,
    stream: &TcpStream,
) -> Result<(), String> {
    let code = frame.code();
    let me = match state {
        State::Greeting => {
            if frame != Frame::Hello {
                return Err(format!("closed: protocol: instruction {code} before HELLO"));
            }
            *state = State::Anonymous;
            out.reply(&Frame::HelloAck.to_bytes());
            return Ok(());
        }
        State::Anonymous => {
            match frame {
                Frame::Hello => {
                    out.reply(&Frame::HelloAck.to_bytes());
                }
                Frame::Register {
                    email,
                    pseudo,
                    password,
                } => accounts.register(ip, email, pseudo, password, out),
                Frame::Login { email, password } => {
                    if let Some(m) = accounts.login(&email, &password, ip, out) {
                        let _ = stream.set_read_timeout(None);
                        *state = State::Member(m);
                    }
                }
                _ if is_server_only(&frame) => {
                    return Err(format!(
                        "closed: protocol: server-only instruction {code} from a client"
                    ))
                }
                _ => return Err(format!("closed: protocol: instruction {code} before LOGIN")),
            }
            return Ok(());
        }
        State::Member(m) => m.clone(),
    };
    match frame {
        Frame::Hello => {
            out.reply(&Frame::HelloAck.to_bytes());
        }
        Frame::Login { .. } => {
            out.reply(&Frame::LoginFailed.to_bytes());
        }
        Frame::Register {
            email,
            pseudo,
            password,
        } => accounts.register(ip, email, pseudo, password, out),
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
            return Err(format!(
                "closed: protocol: server-only instruction {} from a client",
                other.code()
            ));
        }
    }
    Ok(())
}

fn is_server_only(f: &Frame) -> bool {
    !matches!(
        f,
        Frame::Hello
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
