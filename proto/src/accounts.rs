//! The accounts dialect (seed 000). The seed fixes instruction codes and field
//! order only; chinwag fixes the bytes (docs/protocols/accounts.md):
//!
//! frame  = magic:u32 code:u16 length:u32 payload[length]   (big-endian)
//! string = u16 byte length + UTF-8;  list = u16 count + items
//!
//! The length lets a reader bound and skip a frame before parsing it. Like
//! every codec here this owns bytes only: no I/O, no policy, no clock.

use crate::cursor::{Layout, Order, Prefix, Reader, Short, Writer};
use crate::DecodeError;

/// "CWAC": first four bytes of every accounts frame.
pub const MAGIC: u32 = 0x4357_4143;
/// "CWVC": first four bytes of every UDP voice packet.
pub const VOICE_MAGIC: u32 = 0x4357_5643;
/// magic + code + length.
pub const HEADER_LEN: usize = 10;
/// Largest payload either side sends (a full history page fits).
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// RFC 5321's limit for a whole address.
pub const MAX_EMAIL: usize = 254;
/// Pseudos share the online name space with chatos, whose logins stop at 30.
pub const MAX_PSEUDO: usize = 30;
/// Passwords are hashed, never stored; this bounds hashing work.
pub const MAX_PASSWORD: usize = 128;
pub const MAX_MESSAGE: usize = 2048;
/// Address text of a call end point (an IPv6 literal fits).
pub const MAX_ADDR: usize = 64;
/// Free text of a refusal reason.
pub const MAX_REASON: usize = 200;
/// Messages in one history reply (161); see the paging rule in the docs.
pub const HISTORY_PAGE: usize = 50;
/// Names in one list reply (171, 181).
pub const MAX_LIST: usize = 1000;
/// Feature bits a HELLO may ask for and its 201 grants (chinwag
/// extension; docs/protocols/accounts.md, "Features").
pub mod feature {
    /// 151 and 161 carry the time each message was stored.
    pub const STAMPS: u32 = 1;
    /// Every bit this codec knows.
    pub const ALL: u32 = STAMPS;
}
/// Largest voice payload accepted in one UDP packet.
pub const MAX_VOICE: usize = 1275; // Opus's largest single frame

/// One stored time (feature STAMPS): a u64 of seconds.
const STAMP_LEN: usize = 8;
/// The feature bits of an extended HELLO or 201: a u32.
const FEATURES_LEN: usize = 4;

/// Instruction codes, exactly as seed 000 numbers them (104 is chinwag's).
pub mod code {
    pub const REGISTER: u16 = 100;
    pub const REGISTERED: u16 = 101;
    pub const EMAIL_TAKEN: u16 = 102;
    pub const PSEUDO_TAKEN: u16 = 103;
    pub const REGISTER_REFUSED: u16 = 104;
    pub const LOGIN: u16 = 110;
    pub const LOGIN_OK: u16 = 111;
    pub const LOGIN_FAILED: u16 = 112;
    pub const FRIEND_REQUEST: u16 = 120;
    pub const FRIEND_REQUEST_SENT: u16 = 121;
    pub const NO_SUCH_USER: u16 = 122;
    pub const ALREADY_FRIENDS: u16 = 123;
    pub const FRIEND_ACCEPTED: u16 = 124;
    pub const FRIEND_REFUSED: u16 = 125;
    pub const FRIEND_REQUESTED: u16 = 130;
    pub const ACCEPT_FRIEND: u16 = 131;
    pub const REFUSE_FRIEND: u16 = 132;
    pub const CALL: u16 = 140;
    pub const CALL_ACCEPTED: u16 = 141;
    pub const CALL_FAILED: u16 = 142;
    pub const INCOMING_CALL: u16 = 143;
    pub const ANSWER_CALL: u16 = 144;
    pub const DECLINE_CALL: u16 = 145;
    pub const HANGUP: u16 = 146;
    pub const HUNG_UP: u16 = 147;
    pub const SEND_MESSAGE: u16 = 150;
    pub const MESSAGE: u16 = 151;
    pub const MESSAGE_STORED: u16 = 152;
    pub const MESSAGE_FAILED: u16 = 153;
    pub const HISTORY: u16 = 160;
    pub const HISTORY_PAGE: u16 = 161;
    pub const LIST_FRIENDS: u16 = 170;
    pub const FRIENDS: u16 = 171;
    pub const LIST_REQUESTS: u16 = 180;
    pub const REQUESTS: u16 = 181;
    pub const HELLO: u16 = 200;
    pub const HELLO_ACK: u16 = 201;
}

/// One message of a conversation, as history carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Store-wide message id, increasing with time; the paging cursor.
    pub id: u64,
    /// Account id of the sender (as given by 111).
    pub sender_id: u64,
    pub text: String,
    /// When the server stored it: seconds since the Unix epoch (UTC).
    /// Present only on a connection granted [`feature::STAMPS`].
    pub stamp: Option<u64>,
}

/// Every accounts frame, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello,
    HelloAck,
    /// chinwag extension: a HELLO (200) asking for feature bits.
    HelloWith {
        features: u32,
    },
    /// chinwag extension: the answer (201) to `HelloWith`, granting the
    /// bits the server supports among those asked.
    HelloAckWith {
        features: u32,
    },
    Register {
        email: String,
        pseudo: String,
        password: String,
    },
    Registered,
    EmailTaken,
    PseudoTaken,
    /// chinwag extension: the password (or another field) is unacceptable.
    RegisterRefused {
        reason: String,
    },
    Login {
        email: String,
        password: String,
    },
    LoginOk {
        pseudo: String,
        id: u64,
    },
    LoginFailed,
    FriendRequest {
        pseudo: String,
    },
    FriendRequestSent {
        pseudo: String,
    },
    NoSuchUser {
        pseudo: String,
    },
    AlreadyFriends {
        pseudo: String,
    },
    FriendAccepted {
        pseudo: String,
    },
    FriendRefused {
        pseudo: String,
    },
    FriendRequested {
        pseudo: String,
    },
    AcceptFriend {
        pseudo: String,
    },
    RefuseFriend {
        pseudo: String,
    },
    /// `addr` empty means "the address the server sees me at".
    Call {
        pseudo: String,
        addr: String,
        port: u16,
    },
    CallAccepted {
        pseudo: String,
        addr: String,
        port: u16,
    },
    CallFailed {
        pseudo: String,
    },
    IncomingCall {
        pseudo: String,
        addr: String,
        port: u16,
    },
    AnswerCall {
        pseudo: String,
        addr: String,
        port: u16,
    },
    DeclineCall {
        pseudo: String,
    },
    Hangup {
        pseudo: String,
    },
    HungUp {
        pseudo: String,
    },
    SendMessage {
        pseudo: String,
        text: String,
    },
    Message {
        pseudo: String,
        text: String,
    },
    /// chinwag extension (feature STAMPS): 151 with the time the message
    /// was stored, seconds since the Unix epoch (UTC), after the text.
    StampedMessage {
        pseudo: String,
        text: String,
        stamp: u64,
    },
    MessageStored,
    MessageFailed,
    /// `before` = 0 asks for the newest page; otherwise messages with id < before.
    History {
        pseudo: String,
        before: u64,
    },
    /// Entries all stamped (feature STAMPS) carry their times in a block
    /// after the entries; otherwise the page is the seed's layout.
    HistoryPage {
        pseudo: String,
        entries: Vec<HistoryEntry>,
    },
    ListFriends,
    Friends {
        pseudos: Vec<String>,
    },
    ListRequests,
    Requests {
        pseudos: Vec<String>,
    },
}

/// Big-endian; strings and lists carry u16 counts; inside a frame (whose
/// length is known) running out of bytes is truncation.
const LAYOUT: Layout = Layout {
    order: Order::Big,
    prefix: Prefix::U16,
    short: Short::Truncated,
};

/// Bytes of the smallest string (its u16 length) and history entry.
const MIN_STRING: usize = 2;
const MIN_ENTRY: usize = 8 + 8 + MIN_STRING;

fn names(w: &mut Writer<'_>, names: &[String]) {
    w.list(names, |w, n| {
        w.str(n);
    });
}

impl Frame {
    pub fn code(&self) -> u16 {
        use code::*;
        match self {
            Frame::Hello | Frame::HelloWith { .. } => HELLO,
            Frame::HelloAck | Frame::HelloAckWith { .. } => HELLO_ACK,
            Frame::Register { .. } => REGISTER,
            Frame::Registered => REGISTERED,
            Frame::EmailTaken => EMAIL_TAKEN,
            Frame::PseudoTaken => PSEUDO_TAKEN,
            Frame::RegisterRefused { .. } => REGISTER_REFUSED,
            Frame::Login { .. } => LOGIN,
            Frame::LoginOk { .. } => LOGIN_OK,
            Frame::LoginFailed => LOGIN_FAILED,
            Frame::FriendRequest { .. } => FRIEND_REQUEST,
            Frame::FriendRequestSent { .. } => FRIEND_REQUEST_SENT,
            Frame::NoSuchUser { .. } => NO_SUCH_USER,
            Frame::AlreadyFriends { .. } => ALREADY_FRIENDS,
            Frame::FriendAccepted { .. } => FRIEND_ACCEPTED,
            Frame::FriendRefused { .. } => FRIEND_REFUSED,
            Frame::FriendRequested { .. } => FRIEND_REQUESTED,
            Frame::AcceptFriend { .. } => ACCEPT_FRIEND,
            Frame::RefuseFriend { .. } => REFUSE_FRIEND,
            Frame::Call { .. } => CALL,
            Frame::CallAccepted { .. } => CALL_ACCEPTED,
            Frame::CallFailed { .. } => CALL_FAILED,
            Frame::IncomingCall { .. } => INCOMING_CALL,
            Frame::AnswerCall { .. } => ANSWER_CALL,
            Frame::DeclineCall { .. } => DECLINE_CALL,
            Frame::Hangup { .. } => HANGUP,
            Frame::HungUp { .. } => HUNG_UP,
            Frame::SendMessage { .. } => SEND_MESSAGE,
            Frame::Message { .. } | Frame::StampedMessage { .. } => MESSAGE,
            Frame::MessageStored => MESSAGE_STORED,
            Frame::MessageFailed => MESSAGE_FAILED,
            Frame::History { .. } => HISTORY,
            Frame::HistoryPage { .. } => HISTORY_PAGE,
            Frame::ListFriends => LIST_FRIENDS,
            Frame::Friends { .. } => FRIENDS,
            Frame::ListRequests => LIST_REQUESTS,
            Frame::Requests { .. } => REQUESTS,
        }
    }

    /// Append the whole frame, header included, to `out`. Strings longer
    /// than u16::MAX cannot be framed; callers validate lengths against
    /// the field limits first, so truncation never happens.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out, LAYOUT);
        w.u32(MAGIC).u16(self.code());
        let len = w.slot(Prefix::U32);
        match self {
            Frame::Hello
            | Frame::HelloAck
            | Frame::Registered
            | Frame::EmailTaken
            | Frame::PseudoTaken
            | Frame::LoginFailed
            | Frame::MessageStored
            | Frame::MessageFailed
            | Frame::ListFriends
            | Frame::ListRequests => {}
            Frame::Register {
                email,
                pseudo,
                password,
            } => {
                w.str(email).str(pseudo).str(password);
            }
            Frame::RegisterRefused { reason } => {
                w.str(reason);
            }
            Frame::Login { email, password } => {
                w.str(email).str(password);
            }
            Frame::HelloWith { features } | Frame::HelloAckWith { features } => {
                w.u32(*features);
            }
            Frame::LoginOk { pseudo, id } => {
                w.str(pseudo).u64(*id);
            }
            Frame::FriendRequest { pseudo }
            | Frame::FriendRequestSent { pseudo }
            | Frame::NoSuchUser { pseudo }
            | Frame::AlreadyFriends { pseudo }
            | Frame::FriendAccepted { pseudo }
            | Frame::FriendRefused { pseudo }
            | Frame::FriendRequested { pseudo }
            | Frame::AcceptFriend { pseudo }
            | Frame::RefuseFriend { pseudo }
            | Frame::CallFailed { pseudo }
            | Frame::DeclineCall { pseudo }
            | Frame::Hangup { pseudo }
            | Frame::HungUp { pseudo } => {
                w.str(pseudo);
            }
            Frame::Call { pseudo, addr, port }
            | Frame::CallAccepted { pseudo, addr, port }
            | Frame::IncomingCall { pseudo, addr, port }
            | Frame::AnswerCall { pseudo, addr, port } => {
                w.str(pseudo).str(addr).u16(*port);
            }
            Frame::SendMessage { pseudo, text } | Frame::Message { pseudo, text } => {
                w.str(pseudo).str(text);
            }
            Frame::StampedMessage {
                pseudo,
                text,
                stamp,
            } => {
                w.str(pseudo).str(text).u64(*stamp);
            }
            Frame::History { pseudo, before } => {
                w.str(pseudo).u64(*before);
            }
            Frame::HistoryPage { pseudo, entries } => {
                w.str(pseudo).list(entries, |w, e| {
                    w.u64(e.id).u64(e.sender_id).str(&e.text);
                });
                let stamps: Option<Vec<u64>> = entries.iter().map(|e| e.stamp).collect();
                match stamps {
                    Some(stamps) if !stamps.is_empty() => {
                        for s in stamps {
                            w.u64(s);
                        }
                    }
                    _ => {}
                }
            }
            Frame::Friends { pseudos } | Frame::Requests { pseudos } => names(&mut w, pseudos),
        }
        w.fill(len);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.encode(&mut v);
        v
    }

    /// The frame for a log line: like `Debug`, but never a password and
    /// never a message text (shown by its length).
    pub fn redacted(&self) -> String {
        let len = crate::redacted_len;
        match self {
            Frame::Register { email, pseudo, .. } => {
                format!("Register {{ email: {email:?}, pseudo: {pseudo:?}, password: <redacted> }}")
            }
            Frame::Login { email, .. } => {
                format!("Login {{ email: {email:?}, password: <redacted> }}")
            }
            Frame::SendMessage { pseudo, text } => {
                format!(
                    "SendMessage {{ pseudo: {pseudo:?}, text: {} }}",
                    len(text.len())
                )
            }
            Frame::Message { pseudo, text } => {
                format!(
                    "Message {{ pseudo: {pseudo:?}, text: {} }}",
                    len(text.len())
                )
            }
            Frame::HistoryPage { pseudo, entries } => format!(
                "HistoryPage {{ pseudo: {pseudo:?}, entries: {} ({}) }}",
                entries.len(),
                len(entries.iter().map(|e| e.text.len()).sum())
            ),
            other => format!("{other:?}"),
        }
    }

    /// Read a header: (code, payload length). Fails on a bad magic or a length
    /// above [`MAX_PAYLOAD`] before any payload is read.
    pub fn decode_header(buf: &[u8]) -> Result<(u16, usize), DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Incomplete);
        }
        let mut r = Reader::new(&buf[..HEADER_LEN], LAYOUT);
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let code = r.u16()?;
        let len = r.u32()? as usize;
        if len > MAX_PAYLOAD {
            return Err(DecodeError::TooLong {
                field: "payload",
                len: len as u64,
                max: MAX_PAYLOAD as u64,
            });
        }
        Ok((code, len))
    }

    /// Decode one frame from the front of `buf`: the frame and the bytes used,
    /// or `Incomplete`. The payload must be used exactly.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
        let (code, len) = Frame::decode_header(buf)?;
        let total = HEADER_LEN + len;
        if buf.len() < total {
            return Err(DecodeError::Incomplete);
        }
        let frame = Frame::decode_payload(code, &buf[HEADER_LEN..total])?;
        Ok((frame, total))
    }

    /// Decode a buffer holding exactly one frame.
    pub fn decode_exact(buf: &[u8]) -> Result<Frame, DecodeError> {
        crate::decode_exact(buf)
    }

    /// Decode a payload whose header said `code`.
    pub fn decode_payload(op: u16, payload: &[u8]) -> Result<Frame, DecodeError> {
        use crate::accounts::code as c;
        let mut r = Reader::new(payload, LAYOUT);
        let pseudo = |r: &mut Reader| r.str("pseudo", MAX_PSEUDO);
        let names = |r: &mut Reader| {
            r.list("list", MAX_LIST, MIN_STRING, |r| {
                r.str("pseudo", MAX_PSEUDO)
            })
        };
        let f = match op {
            // A HELLO or its answer carries feature bits (a u32) or
            // nothing; whatever follows is left over for `finish`.
            c::HELLO | c::HELLO_ACK if r.left() >= FEATURES_LEN => {
                let features = r.u32()?;
                match op {
                    c::HELLO => Frame::HelloWith { features },
                    _ => Frame::HelloAckWith { features },
                }
            }
            c::HELLO => Frame::Hello,
            c::HELLO_ACK => Frame::HelloAck,
            c::REGISTER => Frame::Register {
                email: r.str("email", MAX_EMAIL)?,
                pseudo: pseudo(&mut r)?,
                password: r.str("password", MAX_PASSWORD)?,
            },
            c::REGISTERED => Frame::Registered,
            c::EMAIL_TAKEN => Frame::EmailTaken,
            c::PSEUDO_TAKEN => Frame::PseudoTaken,
            c::REGISTER_REFUSED => Frame::RegisterRefused {
                reason: r.str("reason", MAX_REASON)?,
            },
            c::LOGIN => Frame::Login {
                email: r.str("email", MAX_EMAIL)?,
                password: r.str("password", MAX_PASSWORD)?,
            },
            c::LOGIN_OK => Frame::LoginOk {
                pseudo: pseudo(&mut r)?,
                id: r.u64()?,
            },
            c::LOGIN_FAILED => Frame::LoginFailed,
            c::FRIEND_REQUEST => Frame::FriendRequest {
                pseudo: pseudo(&mut r)?,
            },
            c::FRIEND_REQUEST_SENT => Frame::FriendRequestSent {
                pseudo: pseudo(&mut r)?,
            },
            c::NO_SUCH_USER => Frame::NoSuchUser {
                pseudo: pseudo(&mut r)?,
            },
            c::ALREADY_FRIENDS => Frame::AlreadyFriends {
                pseudo: pseudo(&mut r)?,
            },
            c::FRIEND_ACCEPTED => Frame::FriendAccepted {
                pseudo: pseudo(&mut r)?,
            },
            c::FRIEND_REFUSED => Frame::FriendRefused {
                pseudo: pseudo(&mut r)?,
            },
            c::FRIEND_REQUESTED => Frame::FriendRequested {
                pseudo: pseudo(&mut r)?,
            },
            c::ACCEPT_FRIEND => Frame::AcceptFriend {
                pseudo: pseudo(&mut r)?,
            },
            c::REFUSE_FRIEND => Frame::RefuseFriend {
                pseudo: pseudo(&mut r)?,
            },
            c::CALL | c::CALL_ACCEPTED | c::INCOMING_CALL | c::ANSWER_CALL => {
                let pseudo = pseudo(&mut r)?;
                let addr = r.str("addr", MAX_ADDR)?;
                let port = r.u16()?;
                match op {
                    c::CALL => Frame::Call { pseudo, addr, port },
                    c::CALL_ACCEPTED => Frame::CallAccepted { pseudo, addr, port },
                    c::INCOMING_CALL => Frame::IncomingCall { pseudo, addr, port },
                    _ => Frame::AnswerCall { pseudo, addr, port },
                }
            }
            c::CALL_FAILED => Frame::CallFailed {
                pseudo: pseudo(&mut r)?,
            },
            c::DECLINE_CALL => Frame::DeclineCall {
                pseudo: pseudo(&mut r)?,
            },
            c::HANGUP => Frame::Hangup {
                pseudo: pseudo(&mut r)?,
            },
            c::HUNG_UP => Frame::HungUp {
                pseudo: pseudo(&mut r)?,
            },
            c::SEND_MESSAGE => Frame::SendMessage {
                pseudo: pseudo(&mut r)?,
                text: r.str("message", MAX_MESSAGE)?,
            },
            c::MESSAGE => {
                let pseudo = pseudo(&mut r)?;
                let text = r.str("message", MAX_MESSAGE)?;
                if r.left() >= STAMP_LEN {
                    Frame::StampedMessage {
                        pseudo,
                        text,
                        stamp: r.u64()?,
                    }
                } else {
                    Frame::Message { pseudo, text }
                }
            }
            c::MESSAGE_STORED => Frame::MessageStored,
            c::MESSAGE_FAILED => Frame::MessageFailed,
            c::HISTORY => Frame::History {
                pseudo: pseudo(&mut r)?,
                before: r.u64()?,
            },
            c::HISTORY_PAGE => {
                let pseudo = pseudo(&mut r)?;
                let mut entries = r.list("list", HISTORY_PAGE, MIN_ENTRY, |r| {
                    Ok(HistoryEntry {
                        id: r.u64()?,
                        sender_id: r.u64()?,
                        text: r.str("message", MAX_MESSAGE)?,
                        stamp: None,
                    })
                })?;
                // Stamps, when present, are one u64 per entry, in order;
                // anything else left over fails in `finish`.
                if !entries.is_empty() && r.left() >= STAMP_LEN * entries.len() {
                    for e in &mut entries {
                        e.stamp = Some(r.u64()?);
                    }
                }
                Frame::HistoryPage { pseudo, entries }
            }
            c::LIST_FRIENDS => Frame::ListFriends,
            c::FRIENDS => Frame::Friends {
                pseudos: names(&mut r)?,
            },
            c::LIST_REQUESTS => Frame::ListRequests,
            c::REQUESTS => Frame::Requests {
                pseudos: names(&mut r)?,
            },
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        r.finish()?;
        Ok(f)
    }
}

impl crate::Decode for Frame {
    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        Frame::decode(buf)
    }
}

// The server reads these frames owned (no borrowed form yet).
crate::owned_frames!(Frame);

/// Incremental reader for an accounts TCP stream. A bad header fails as
/// soon as its 10 bytes are in.
pub type Decoder = crate::Decoder<Frame>;

impl Decoder {
    /// The next whole frame; see [`crate::Decoder::next_message`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        self.next_message()
    }
}

/// A UDP voice packet: magic, then one compressed audio frame.
pub fn encode_voice(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&VOICE_MAGIC.to_be_bytes());
    out.extend_from_slice(frame);
}

/// The compressed frame inside a voice packet.
pub fn decode_voice(packet: &[u8]) -> Result<&[u8], DecodeError> {
    if packet.len() < 4 {
        return Err(DecodeError::Truncated);
    }
    let magic = u32::from_be_bytes(packet[..4].try_into().expect("4 bytes"));
    if magic != VOICE_MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let body = &packet[4..];
    if body.len() > MAX_VOICE {
        return Err(DecodeError::TooLong {
            field: "voice",
            len: body.len() as u64,
            max: MAX_VOICE as u64,
        });
    }
    Ok(body)
}

impl crate::Redact for Frame {
    fn redacted(&self) -> String {
        Frame::redacted(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello,
            Frame::HelloAck,
            Frame::HelloWith {
                features: feature::STAMPS,
            },
            Frame::HelloAckWith { features: 0 },
            Frame::Register {
                email: s("a@b.c"),
                pseudo: s("alice"),
                password: s("hunter22"),
            },
            Frame::Registered,
            Frame::EmailTaken,
            Frame::PseudoTaken,
            Frame::RegisterRefused {
                reason: s("password too short"),
            },
            Frame::Login {
                email: s("a@b.c"),
                password: s("pw"),
            },
            Frame::LoginOk {
                pseudo: s("alice"),
                id: 7,
            },
            Frame::LoginFailed,
            Frame::FriendRequest { pseudo: s("bob") },
            Frame::FriendRequestSent { pseudo: s("bob") },
            Frame::NoSuchUser { pseudo: s("zed") },
            Frame::AlreadyFriends { pseudo: s("bob") },
            Frame::FriendAccepted { pseudo: s("bob") },
            Frame::FriendRefused { pseudo: s("bob") },
            Frame::FriendRequested { pseudo: s("alice") },
            Frame::AcceptFriend { pseudo: s("alice") },
            Frame::RefuseFriend { pseudo: s("alice") },
            Frame::Call {
                pseudo: s("bob"),
                addr: s(""),
                port: 5000,
            },
            Frame::CallAccepted {
                pseudo: s("bob"),
                addr: s("127.0.0.1"),
                port: 5001,
            },
            Frame::CallFailed { pseudo: s("bob") },
            Frame::IncomingCall {
                pseudo: s("alice"),
                addr: s("::1"),
                port: 1,
            },
            Frame::AnswerCall {
                pseudo: s("alice"),
                addr: s(""),
                port: 65535,
            },
            Frame::DeclineCall { pseudo: s("alice") },
            Frame::Hangup { pseudo: s("bob") },
            Frame::HungUp { pseudo: s("alice") },
            Frame::SendMessage {
                pseudo: s("bob"),
                text: s("salut é"),
            },
            Frame::Message {
                pseudo: s("alice"),
                text: "x".repeat(MAX_MESSAGE),
            },
            Frame::MessageStored,
            Frame::MessageFailed,
            Frame::History {
                pseudo: s("bob"),
                before: 0,
            },
            Frame::HistoryPage {
                pseudo: s("bob"),
                entries: vec![
                    HistoryEntry {
                        id: 1,
                        sender_id: 7,
                        text: s("hi"),
                        stamp: None,
                    },
                    HistoryEntry {
                        id: 2,
                        sender_id: 8,
                        text: s(""),
                        stamp: None,
                    },
                ],
            },
            Frame::StampedMessage {
                pseudo: s("alice"),
                text: s("at noon"),
                stamp: 1_700_000_000,
            },
            Frame::HistoryPage {
                pseudo: s("bob"),
                entries: vec![
                    HistoryEntry {
                        id: 3,
                        sender_id: 7,
                        text: s("x"),
                        stamp: Some(1),
                    },
                    HistoryEntry {
                        id: 4,
                        sender_id: 8,
                        text: s(""),
                        stamp: Some(u64::MAX),
                    },
                ],
            },
            Frame::HistoryPage {
                pseudo: s("bob"),
                entries: vec![],
            },
            Frame::ListFriends,
            Frame::Friends {
                pseudos: vec![s("bob"), s("carol")],
            },
            Frame::ListRequests,
            Frame::Requests { pseudos: vec![] },
        ]
    }

    #[test]
    fn log_form_hides_passwords() {
        let r = Frame::Register {
            email: s("a@b.c"),
            pseudo: s("al"),
            password: s("hunter22"),
        };
        let l = Frame::Login {
            email: s("a@b.c"),
            password: s("hunter22"),
        };
        for f in [r, l] {
            assert!(!f.redacted().contains("hunter22"), "{}", f.redacted());
            assert!(f.redacted().contains("a@b.c"));
        }
    }

    #[test]
    fn frames_appended_to_a_buffer_decode_in_turn() {
        let mut v = Vec::new();
        Frame::Hello.encode(&mut v);
        Frame::SendMessage {
            pseudo: s("bob"),
            text: s("hi"),
        }
        .encode(&mut v);
        let (first, used) = Frame::decode(&v).unwrap();
        assert_eq!(first, Frame::Hello);
        let (second, rest) = Frame::decode(&v[used..]).unwrap();
        assert_eq!(used + rest, v.len());
        assert!(matches!(second, Frame::SendMessage { .. }));
    }

    #[test]
    fn limits_are_inclusive() {
        // A payload of exactly MAX_PAYLOAD is allowed (and awaited).
        let mut h = MAGIC.to_be_bytes().to_vec();
        h.extend_from_slice(&code::SEND_MESSAGE.to_be_bytes());
        h.extend_from_slice(&(MAX_PAYLOAD as u32).to_be_bytes());
        assert_eq!(
            Frame::decode_header(&h),
            Ok((code::SEND_MESSAGE, MAX_PAYLOAD))
        );
        h[6..10].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(matches!(
            Frame::decode_header(&h),
            Err(DecodeError::TooLong { .. })
        ));
        // A list of exactly MAX_LIST names decodes; one more does not.
        let names = |n: usize| Frame::Friends {
            pseudos: (0..n).map(|i| format!("p{i}")).collect(),
        };
        let full = names(MAX_LIST);
        assert_eq!(Frame::decode(&full.to_bytes()).unwrap().0, full);
        let mut over = Vec::new();
        over.extend_from_slice(&((MAX_LIST + 1) as u16).to_be_bytes());
        for i in 0..=MAX_LIST {
            let p = format!("p{i}");
            over.extend_from_slice(&(p.len() as u16).to_be_bytes());
            over.extend_from_slice(p.as_bytes());
        }
        let mut frame = MAGIC.to_be_bytes().to_vec();
        frame.extend_from_slice(&code::FRIENDS.to_be_bytes());
        frame.extend_from_slice(&(over.len() as u32).to_be_bytes());
        frame.extend_from_slice(&over);
        assert!(matches!(
            Frame::decode(&frame),
            Err(DecodeError::TooLong { field: "list", .. })
        ));
        // Voice: an empty frame and a frame of exactly MAX_VOICE bytes pass.
        for n in [0, MAX_VOICE] {
            let mut p = Vec::new();
            encode_voice(&mut p, &vec![7; n]);
            assert_eq!(decode_voice(&p).unwrap().len(), n);
        }
        let mut p = Vec::new();
        encode_voice(&mut p, &vec![7; MAX_VOICE + 1]);
        assert!(matches!(decode_voice(&p), Err(DecodeError::TooLong { .. })));
        assert_eq!(decode_voice(&p[..3]), Err(DecodeError::Truncated));
    }

    #[test]
    fn golden_bytes() {
        assert_eq!(Frame::Hello.to_bytes(), hex("43574143 00c8 00000000"));
        assert_eq!(Frame::HelloAck.to_bytes(), hex("43574143 00c9 00000000"));
        assert_eq!(
            Frame::FriendRequest { pseudo: s("bob") }.to_bytes(),
            hex("43574143 0078 00000005 0003 626f62")
        );
        assert_eq!(
            Frame::LoginOk {
                pseudo: s("al"),
                id: 258
            }
            .to_bytes(),
            hex("43574143 006f 0000000c 0002 616c 0000000000000102")
        );
        assert_eq!(
            Frame::Call {
                pseudo: s("bob"),
                addr: s(""),
                port: 0x1388
            }
            .to_bytes(),
            hex("43574143 008c 00000009 0003 626f62 0000 1388")
        );
        assert_eq!(
            Frame::SendMessage {
                pseudo: s("bob"),
                text: s("hi")
            }
            .to_bytes(),
            hex("43574143 0096 00000009 0003 626f62 0002 6869")
        );
        assert_eq!(
            Frame::Friends {
                pseudos: vec![s("a"), s("bc")]
            }
            .to_bytes(),
            hex("43574143 00ab 00000009 0002 0001 61 0002 6263")
        );
        let mut v = Vec::new();
        encode_voice(&mut v, &[1, 2, 3]);
        assert_eq!(v, hex("43575643 010203"));
        assert_eq!(decode_voice(&v).unwrap(), &[1, 2, 3]);
    }

    /// The STAMPS extension's bytes, as docs/protocols/accounts.md shows them.
    #[test]
    fn golden_bytes_of_the_stamps_extension() {
        let cases = [
            (
                Frame::HelloWith {
                    features: feature::STAMPS,
                },
                "43574143 00c8 00000004 00000001",
            ),
            (
                Frame::HelloAckWith {
                    features: feature::STAMPS,
                },
                "43574143 00c9 00000004 00000001",
            ),
            (
                Frame::StampedMessage {
                    pseudo: s("bob"),
                    text: s("hi"),
                    stamp: 0x6553_f100, // 2023-11-14T22:13:20Z
                },
                "43574143 0097 00000011 0003 626f62 0002 6869 000000006553f100",
            ),
            (
                Frame::HistoryPage {
                    pseudo: s("bob"),
                    entries: vec![
                        HistoryEntry {
                            id: 1,
                            sender_id: 7,
                            text: s("hi"),
                            stamp: Some(0x6553_f100),
                        },
                        HistoryEntry {
                            id: 2,
                            sender_id: 8,
                            text: s(""),
                            stamp: Some(0x6553_f13c),
                        },
                    ],
                },
                "43574143 00a1 0000003d 0003 626f62 0002 \
                 0000000000000001 0000000000000007 0002 6869 \
                 0000000000000002 0000000000000008 0000 \
                 000000006553f100 000000006553f13c",
            ),
        ];
        for (frame, bytes) in cases {
            let bytes = hex(&bytes.replace('\\', ""));
            assert_eq!(frame.to_bytes(), bytes, "{frame:?}");
            assert_eq!(Frame::decode_exact(&bytes).unwrap(), frame);
        }
        // The seed's layouts are unchanged: what an old peer sends and
        // expects still decodes to the plain frames.
        assert_eq!(
            Frame::decode_exact(&hex("43574143 0097 00000009 0003 626f62 0002 6869")).unwrap(),
            Frame::Message {
                pseudo: s("bob"),
                text: s("hi")
            }
        );
        // A page where some entries lack a stamp is sent without any.
        let mixed = Frame::HistoryPage {
            pseudo: s("b"),
            entries: vec![
                HistoryEntry {
                    id: 1,
                    sender_id: 2,
                    text: s("a"),
                    stamp: Some(5),
                },
                HistoryEntry {
                    id: 2,
                    sender_id: 2,
                    text: s("b"),
                    stamp: None,
                },
            ],
        };
        let Frame::HistoryPage { entries, .. } = Frame::decode_exact(&mixed.to_bytes()).unwrap()
        else {
            panic!()
        };
        assert!(entries.iter().all(|e| e.stamp.is_none()));
        // A stamp block of the wrong size is left over, never misread.
        let mut b = Frame::StampedMessage {
            pseudo: s("bob"),
            text: s("hi"),
            stamp: 1,
        }
        .to_bytes();
        b.pop();
        b[9] -= 1;
        assert_eq!(Frame::decode_exact(&b), Err(DecodeError::TrailingBytes(7)));
    }

    #[test]
    fn voice_golden_bytes_again() {
        let mut v = Vec::new();
        encode_voice(&mut v, &[1, 2, 3]);
        assert_eq!(v, hex("43575643 010203"));
        assert_eq!(decode_voice(&v).unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn round_trips() {
        for f in samples() {
            assert_eq!(Frame::decode_exact(&f.to_bytes()).unwrap(), f, "{f:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for f in samples() {
            let b = f.to_bytes();
            for cut in 0..b.len() {
                assert_eq!(
                    Frame::decode(&b[..cut]).unwrap_err(),
                    DecodeError::Incomplete
                );
                assert_eq!(Frame::decode_exact(&b[..cut]), Err(DecodeError::Truncated));
            }
            // A header that claims less payload than the fields need.
            if b.len() > HEADER_LEN {
                let mut short = b[..b.len() - 1].to_vec();
                let len = (short.len() - HEADER_LEN) as u32;
                short[6..10].copy_from_slice(&len.to_be_bytes());
                assert!(Frame::decode_exact(&short).is_err(), "{f:?}");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for f in samples() {
            let mut b = f.to_bytes();
            b.push(0);
            assert_eq!(Frame::decode_exact(&b), Err(DecodeError::TrailingBytes(1)));
            // Inside the payload too: the header covers the extra byte.
            let len = (b.len() - HEADER_LEN) as u32;
            b[6..10].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                Frame::decode_exact(&b),
                Err(DecodeError::TrailingBytes(1)),
                "{f:?}"
            );
        }
    }

    #[test]
    fn bad_headers_fail_before_the_payload() {
        assert_eq!(
            Frame::decode(&hex("deadbeef 00c8 00000000")),
            Err(DecodeError::BadMagic(0xdeadbeef))
        );
        assert!(matches!(
            Frame::decode(&hex("43574143 0096 7fffffff")),
            Err(DecodeError::TooLong {
                field: "payload",
                ..
            })
        ));
        assert_eq!(
            Frame::decode(&hex("43574143 0001 00000000")),
            Err(DecodeError::UnknownOpcode(1))
        );
        assert!(matches!(
            Frame::decode(&hex("43574143 0078 00000005 0004 626f62")),
            Err(DecodeError::Truncated)
        ));
        assert!(matches!(
            Frame::decode(&hex("43574143 0078 00000021 001f 00000000000000000000000000000000000000000000000000000000000000")),
            Err(DecodeError::TooLong { field: "pseudo", .. })
        ));
        assert_eq!(
            Frame::decode(&hex("43574143 0078 00000004 0002 c328")),
            Err(DecodeError::InvalidUtf8("pseudo"))
        );
        assert_eq!(decode_voice(&[0x43, 0x57]), Err(DecodeError::Truncated));
        assert!(decode_voice(&hex("43574143 00")).is_err());
    }

    #[test]
    fn decoder_splits_and_joins() {
        let all: Vec<u8> = samples().iter().flat_map(|f| f.to_bytes()).collect();
        for chunk in [1, 3, 10, 97, all.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in all.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, samples());
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xACC0);
        let codes: Vec<u16> = samples().iter().map(Frame::code).collect();
        for _ in 0..20_000 {
            let n = rng.gen_range(0..80);
            let payload: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let code = codes[rng.gen_range(0..codes.len())];
            let _ = Frame::decode_payload(code, &payload);
            let mut framed = MAGIC.to_be_bytes().to_vec();
            framed.extend_from_slice(&code.to_be_bytes());
            framed.extend_from_slice(&(n as u32).to_be_bytes());
            framed.extend_from_slice(&payload);
            let _ = Frame::decode(&framed);
            let _ = decode_voice(&payload);
        }
    }
}
