//! The chatos dialect (seeds 004 and 002): one codec for both directions.
//! Owns the byte layout and the per-field limits; it never does I/O and
//! never decides policy (who may send what is the server's business).
//!
//! Layout: 1-byte opcode, INT = i32 big-endian, LONG = i64 big-endian
//! (see shared/seeds/NOTES.md: the texts say 4 bytes, every real peer uses 8),
//! STRING = INT byte length + UTF-8 bytes.

use crate::cursor::{Layout, Order, Prefix, Reader, Short, Writer};
use crate::DecodeError;

/// Opcodes, one list for the dialect (seed 004 §1-4, seed 002 adds 11 and 12).
pub mod op {
    pub const LOGIN: u8 = 0;
    pub const LOGIN_ACCEPTED: u8 = 1;
    pub const LOGIN_REFUSED: u8 = 2;
    pub const MESSAGE: u8 = 3;
    pub const MESSAGE_PRIVATE: u8 = 4;
    pub const REQUEST_PRIVATE: u8 = 5;
    pub const OK_PRIVATE: u8 = 6;
    pub const KO_PRIVATE: u8 = 7;
    pub const ID_PRIVATE: u8 = 8;
    pub const LOGIN_PRIVATE: u8 = 9;
    pub const ESTABLISHED: u8 = 10;
    pub const CLOSE_CONNECTION: u8 = 11;
    pub const ACCEPT_CLOSE_CONNECTION: u8 = 12;
}

/// A login "ne peut pas occuper plus de 30 octets" (seed 004 §1).
pub const MAX_LOGIN: usize = 30;
/// A message "ne peut pas occuper plus de 1024 octets" (seed 004 §2).
pub const MAX_TEXT: usize = 1024;
/// The largest frame the dialect allows: MESSAGE_PRIVATE with every field full.
pub const MAX_FRAME: usize = 1 + 3 * 4 + 2 * MAX_LOGIN + MAX_TEXT;

/// One chatos command. The same type serves both directions, because the
/// seed gives client and server frames one shared layout. Its strings are
/// of type `S`: owned in a [`Command`], borrowed from the received bytes in
/// a [`CommandRef`] (what the server decodes: no allocation per frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOf<S> {
    Login {
        login: S,
    },
    LoginAccepted,
    LoginRefused,
    Message {
        from: S,
        text: S,
    },
    MessagePrivate {
        from: S,
        to: S,
        text: S,
    },
    RequestPrivate {
        requester: S,
        target: S,
    },
    OkPrivate {
        requester: S,
        target: S,
    },
    KoPrivate {
        requester: S,
        target: S,
    },
    IdPrivate {
        requester: S,
        target: S,
        connect_id: i64,
    },
    LoginPrivate {
        connect_id: i64,
    },
    Established,
    CloseConnection {
        connect_id: i64,
        requester: S,
        target: S,
    },
    AcceptCloseConnection {
        login: S,
    },
}

/// A command that owns its strings.
pub type Command = CommandOf<String>;

/// A command whose strings point into the bytes it was decoded from.
pub type CommandRef<'a> = CommandOf<&'a str>;

/// Big-endian; STRING = INT length (signed) + bytes; a frame has no outer
/// length, so running out of bytes means "wait for more".
const LAYOUT: Layout = Layout {
    order: Order::Big,
    prefix: Prefix::I32,
    short: Short::Incomplete,
};

fn writer(out: &mut Vec<u8>) -> Writer<'_> {
    Writer::new(out, LAYOUT)
}

/// MESSAGE(3) straight into `out`: the server's broadcast path uses this so a
/// delivery costs one append and no intermediate allocation.
pub fn encode_message(out: &mut Vec<u8>, from: &str, text: &str) {
    // The frame's size at once (op, two length-prefixed strings): a queue
    // emptied by its last send would otherwise grow 8 -> 16 -> 32 -> ...
    out.reserve(1 + 4 + from.len() + 4 + text.len());
    writer(out).u8(op::MESSAGE).str(from).str(text);
}

/// MESSAGE_PRIVATE(4) straight into `out`.
pub fn encode_message_private(out: &mut Vec<u8>, from: &str, to: &str, text: &str) {
    out.reserve(1 + 4 + from.len() + 4 + to.len() + 4 + text.len());
    writer(out)
        .u8(op::MESSAGE_PRIVATE)
        .str(from)
        .str(to)
        .str(text);
}

/// `text` in pieces of at most [`MAX_TEXT`] bytes, cut at character
/// boundaries, in order: how a longer text from another dialect (a rooms
/// CHAT holds 1,200 bytes, an accounts message 2,048) reaches a chatos
/// client as several MESSAGE or MESSAGE_PRIVATE frames. An empty text is
/// one empty piece.
pub fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        if t.len() <= MAX_TEXT {
            rest = None;
            return Some(t);
        }
        let mut cut = MAX_TEXT;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        rest = Some(&t[cut..]);
        Some(&t[..cut])
    })
}

fn encode_pair<'a>(out: &'a mut Vec<u8>, opcode: u8, a: &str, b: &str) -> Writer<'a> {
    let mut w = writer(out);
    w.u8(opcode).str(a).str(b);
    w
}

impl<S> CommandOf<S> {
    /// The same command with each string passed through `f`, in wire order.
    pub fn map<T>(self, mut f: impl FnMut(S) -> T) -> CommandOf<T> {
        use CommandOf as C;
        match self {
            C::Login { login } => C::Login { login: f(login) },
            C::LoginAccepted => C::LoginAccepted,
            C::LoginRefused => C::LoginRefused,
            C::Message { from, text } => C::Message {
                from: f(from),
                text: f(text),
            },
            C::MessagePrivate { from, to, text } => C::MessagePrivate {
                from: f(from),
                to: f(to),
                text: f(text),
            },
            C::RequestPrivate { requester, target } => C::RequestPrivate {
                requester: f(requester),
                target: f(target),
            },
            C::OkPrivate { requester, target } => C::OkPrivate {
                requester: f(requester),
                target: f(target),
            },
            C::KoPrivate { requester, target } => C::KoPrivate {
                requester: f(requester),
                target: f(target),
            },
            C::IdPrivate {
                requester,
                target,
                connect_id,
            } => C::IdPrivate {
                requester: f(requester),
                target: f(target),
                connect_id,
            },
            C::LoginPrivate { connect_id } => C::LoginPrivate { connect_id },
            C::Established => C::Established,
            C::CloseConnection {
                connect_id,
                requester,
                target,
            } => C::CloseConnection {
                connect_id,
                requester: f(requester),
                target: f(target),
            },
            C::AcceptCloseConnection { login } => C::AcceptCloseConnection { login: f(login) },
        }
    }

    /// The command's name as the seed spells its opcode.
    pub fn name(&self) -> &'static str {
        use CommandOf as C;
        match self {
            C::Login { .. } => "LOGIN",
            C::LoginAccepted => "LOGIN_ACCEPTED",
            C::LoginRefused => "LOGIN_REFUSED",
            C::Message { .. } => "MESSAGE",
            C::MessagePrivate { .. } => "MESSAGE_PRIVATE",
            C::RequestPrivate { .. } => "REQUEST_PRIVATE",
            C::OkPrivate { .. } => "OK_PRIVATE",
            C::KoPrivate { .. } => "KO_PRIVATE",
            C::IdPrivate { .. } => "ID_PRIVATE",
            C::LoginPrivate { .. } => "LOGIN_PRIVATE",
            C::Established => "ESTABLISHED",
            C::CloseConnection { .. } => "CLOSE_CONNECTION",
            C::AcceptCloseConnection { .. } => "ACCEPT_CLOSE_CONNECTION",
        }
    }
}

impl<S: AsRef<str>> CommandOf<S> {
    /// Append this command's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use CommandOf as C;
        match self {
            C::Login { login } => {
                writer(out).u8(op::LOGIN).str(login.as_ref());
            }
            C::LoginAccepted => out.push(op::LOGIN_ACCEPTED),
            C::LoginRefused => out.push(op::LOGIN_REFUSED),
            C::Message { from, text } => encode_message(out, from.as_ref(), text.as_ref()),
            C::MessagePrivate { from, to, text } => {
                encode_message_private(out, from.as_ref(), to.as_ref(), text.as_ref())
            }
            C::RequestPrivate { requester, target } => {
                encode_pair(
                    out,
                    op::REQUEST_PRIVATE,
                    requester.as_ref(),
                    target.as_ref(),
                );
            }
            C::OkPrivate { requester, target } => {
                encode_pair(out, op::OK_PRIVATE, requester.as_ref(), target.as_ref());
            }
            C::KoPrivate { requester, target } => {
                encode_pair(out, op::KO_PRIVATE, requester.as_ref(), target.as_ref());
            }
            C::IdPrivate {
                requester,
                target,
                connect_id,
            } => {
                encode_pair(out, op::ID_PRIVATE, requester.as_ref(), target.as_ref())
                    .i64(*connect_id);
            }
            C::LoginPrivate { connect_id } => {
                writer(out).u8(op::LOGIN_PRIVATE).i64(*connect_id);
            }
            C::Established => out.push(op::ESTABLISHED),
            C::CloseConnection {
                connect_id,
                requester,
                target,
            } => {
                writer(out)
                    .u8(op::CLOSE_CONNECTION)
                    .i64(*connect_id)
                    .str(requester.as_ref())
                    .str(target.as_ref());
            }
            C::AcceptCloseConnection { login } => {
                writer(out)
                    .u8(op::ACCEPT_CLOSE_CONNECTION)
                    .str(login.as_ref());
            }
        }
    }

    /// Convenience: the bytes of this command in a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.encode(&mut v);
        v
    }
}

impl<'a> CommandRef<'a> {
    /// Decode one command from the front of `buf`, its strings pointing
    /// into `buf`.
    ///
    /// Returns the command and how many bytes it used. `Err(Incomplete)` means
    /// more bytes are needed; every other error is final for the stream. A
    /// length prefix is checked against its field's limit before the bytes
    /// behind it are awaited, so a lying length never makes a reader buffer.
    pub fn decode(buf: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        use CommandOf as C;
        let mut r = Reader::new(buf, LAYOUT);
        let opcode = r.u8()?;
        let cmd = match opcode {
            op::LOGIN => C::Login {
                login: r.str_ref("login", MAX_LOGIN)?,
            },
            op::LOGIN_ACCEPTED => C::LoginAccepted,
            op::LOGIN_REFUSED => C::LoginRefused,
            op::MESSAGE => C::Message {
                from: r.str_ref("login", MAX_LOGIN)?,
                text: r.str_ref("msg", MAX_TEXT)?,
            },
            op::MESSAGE_PRIVATE => C::MessagePrivate {
                from: r.str_ref("login_sender", MAX_LOGIN)?,
                to: r.str_ref("login_target", MAX_LOGIN)?,
                text: r.str_ref("msg", MAX_TEXT)?,
            },
            op::REQUEST_PRIVATE | op::OK_PRIVATE | op::KO_PRIVATE | op::ID_PRIVATE => {
                let requester = r.str_ref("login_requester", MAX_LOGIN)?;
                let target = r.str_ref("login_target", MAX_LOGIN)?;
                match opcode {
                    op::REQUEST_PRIVATE => C::RequestPrivate { requester, target },
                    op::OK_PRIVATE => C::OkPrivate { requester, target },
                    op::KO_PRIVATE => C::KoPrivate { requester, target },
                    _ => C::IdPrivate {
                        requester,
                        target,
                        connect_id: r.i64()?,
                    },
                }
            }
            op::LOGIN_PRIVATE => C::LoginPrivate {
                connect_id: r.i64()?,
            },
            op::ESTABLISHED => C::Established,
            op::CLOSE_CONNECTION => C::CloseConnection {
                connect_id: r.i64()?,
                requester: r.str_ref("login_requester", MAX_LOGIN)?,
                target: r.str_ref("login_target", MAX_LOGIN)?,
            },
            op::ACCEPT_CLOSE_CONNECTION => C::AcceptCloseConnection {
                login: r.str_ref("login_target", MAX_LOGIN)?,
            },
            other => return Err(DecodeError::UnknownOpcode(other as u16)),
        };
        Ok((cmd, r.pos()))
    }

    /// The same command owning copies of its strings.
    pub fn into_owned(self) -> Command {
        self.map(str::to_owned)
    }
}

impl Command {
    /// Decode one command from the front of `buf`, into owned strings: see
    /// [`CommandRef::decode`], which this copies (same errors, same bytes).
    pub fn decode(buf: &[u8]) -> Result<(Command, usize), DecodeError> {
        CommandRef::decode(buf).map(|(cmd, used)| (cmd.into_owned(), used))
    }

    /// Decode a buffer that must hold exactly one command: trailing bytes are
    /// an error, and so is a truncated command.
    pub fn decode_exact(frame: &[u8]) -> Result<Command, DecodeError> {
        crate::decode_exact(frame)
    }
}

impl crate::Decode for Command {
    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        Command::decode(buf)
    }
}

impl crate::DecodeRef for Command {
    type Frame<'a> = CommandRef<'a>;

    fn decode_ref(buf: &[u8]) -> Result<(CommandRef<'_>, usize), DecodeError> {
        CommandRef::decode(buf)
    }
}

/// Incremental decoder for a chatos byte stream. Chatos frames carry no
/// outer length, so it parses from the front; after LOGIN_PRIVATE or
/// ESTABLISHED, `take_remaining` hands what arrived behind it to the relay.
pub type Decoder = crate::Decoder<Command>;

impl Decoder {
    /// The next whole command; see [`crate::Decoder::next_message`].
    pub fn next_command(&mut self) -> Result<Option<Command>, DecodeError> {
        self.next_message()
    }
}

impl<S: AsRef<str> + std::fmt::Debug> crate::Redact for CommandOf<S> {
    /// Texts are shown by their length only.
    fn redacted(&self) -> String {
        match self {
            CommandOf::Message { from, text } => format!(
                "Message {{ from: {from:?}, text: {} }}",
                crate::redacted_len(text.as_ref().len())
            ),
            CommandOf::MessagePrivate { from, to, text } => format!(
                "MessagePrivate {{ from: {from:?}, to: {to:?}, text: {} }}",
                crate::redacted_len(text.as_ref().len())
            ),
            other => format!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_texts_are_cut_into_pieces_at_character_boundaries() {
        assert_eq!(super::pieces("").collect::<Vec<_>>(), vec![""]);
        let exact = "a".repeat(MAX_TEXT);
        assert_eq!(
            super::pieces(&exact).collect::<Vec<_>>(),
            vec![exact.as_str()]
        );
        // 1,023 ASCII bytes then a 2-byte character: the cut moves back.
        let t = format!("{}é{}", "a".repeat(MAX_TEXT - 1), "b".repeat(1500));
        let p: Vec<&str> = super::pieces(&t).collect();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].len(), MAX_TEXT - 1);
        assert!(p.iter().all(|x| x.len() <= MAX_TEXT && !x.is_empty()));
        assert_eq!(p.concat(), t);
    }

    use super::*;
    use crate::Redact;

    #[test]
    fn the_largest_frame_is_a_full_message_private() {
        let full = Command::MessagePrivate {
            from: "f".repeat(MAX_LOGIN),
            to: "t".repeat(MAX_LOGIN),
            text: "x".repeat(MAX_TEXT),
        };
        assert_eq!(full.to_bytes().len(), MAX_FRAME);
        assert_eq!(MAX_FRAME, 1_097, "as docs/architecture.md says");
    }

    #[test]
    fn log_form_hides_bodies() {
        let m = Command::Message {
            from: "al".into(),
            text: "secret body".into(),
        };
        assert_eq!(m.redacted(), "Message { from: \"al\", text: <11 bytes> }");
        let pm = Command::MessagePrivate {
            from: "al".into(),
            to: "bo".into(),
            text: "secret".into(),
        };
        assert_eq!(
            pm.redacted(),
            "MessagePrivate { from: \"al\", to: \"bo\", text: <6 bytes> }"
        );
        assert_eq!(Command::LoginAccepted.redacted(), "LoginAccepted");
    }
    use rand::{Rng, SeedableRng};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn samples() -> Vec<Command> {
        let s = |x: &str| x.to_string();
        vec![
            Command::Login { login: s("alice") },
            Command::LoginAccepted,
            Command::LoginRefused,
            Command::Message {
                from: s("alice"),
                text: s("hi all"),
            },
            Command::MessagePrivate {
                from: s("alice"),
                to: s("bob"),
                text: s("psst é"),
            },
            Command::RequestPrivate {
                requester: s("alice"),
                target: s("bob"),
            },
            Command::OkPrivate {
                requester: s("alice"),
                target: s("bob"),
            },
            Command::KoPrivate {
                requester: s("alice"),
                target: s("bob"),
            },
            Command::IdPrivate {
                requester: s("alice"),
                target: s("bob"),
                connect_id: -42,
            },
            Command::LoginPrivate {
                connect_id: i64::MAX,
            },
            Command::Established,
            Command::CloseConnection {
                connect_id: 7,
                requester: s("a"),
                target: s("b"),
            },
            Command::AcceptCloseConnection { login: s("bob") },
            Command::Message {
                from: s(""),
                text: "x".repeat(MAX_TEXT),
            },
            Command::Login {
                login: "y".repeat(MAX_LOGIN),
            },
        ]
    }

    #[test]
    fn golden_bytes_from_notes() {
        assert_eq!(Command::LoginAccepted.to_bytes(), hex("01"));
        assert_eq!(Command::LoginRefused.to_bytes(), hex("02"));
        assert_eq!(Command::Established.to_bytes(), hex("0a"));
        let msg = hex("03 00000005 616c696365 00000006 686920616c6c");
        let cmd = Command::Message {
            from: "alice".into(),
            text: "hi all".into(),
        };
        assert_eq!(cmd.to_bytes(), msg);
        assert_eq!(Command::decode_exact(&msg).unwrap(), cmd);

        let id = Command::IdPrivate {
            requester: "alice".into(),
            target: "bob".into(),
            connect_id: 0x0102030405060708,
        };
        let bytes = id.to_bytes();
        assert_eq!(
            bytes.len(),
            25,
            "ID_PRIVATE alice/bob is 25 bytes with an 8-byte LONG"
        );
        assert_eq!(
            bytes,
            hex("08 00000005 616c696365 00000003 626f62 0102030405060708")
        );
        assert_eq!(
            Command::LoginPrivate { connect_id: 1 }.to_bytes(),
            hex("09 0000000000000001")
        );
        assert_eq!(
            Command::CloseConnection {
                connect_id: 2,
                requester: "a".into(),
                target: "b".into()
            }
            .to_bytes(),
            hex("0b 0000000000000002 00000001 61 00000001 62")
        );
        assert_eq!(
            Command::AcceptCloseConnection {
                login: "bob".into()
            }
            .to_bytes(),
            hex("0c 00000003 626f62")
        );
    }

    #[test]
    fn round_trips() {
        for cmd in samples() {
            let bytes = cmd.to_bytes();
            assert_eq!(Command::decode_exact(&bytes).unwrap(), cmd, "{cmd:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for cmd in samples() {
            let bytes = cmd.to_bytes();
            for cut in 0..bytes.len() {
                assert_eq!(
                    Command::decode(&bytes[..cut]).unwrap_err(),
                    DecodeError::Incomplete,
                    "{cmd:?} cut at {cut}"
                );
                assert_eq!(
                    Command::decode_exact(&bytes[..cut]),
                    Err(DecodeError::Truncated)
                );
            }
        }
    }

    /// The server's in-place decode and the owned one: the same commands,
    /// the same bytes used, the same errors, for every sample cut anywhere
    /// and for random bytes.
    #[test]
    fn in_place_and_owned_decodes_agree() {
        let same = |buf: &[u8]| {
            let owned = Command::decode(buf);
            let in_place = CommandRef::decode(buf).map(|(c, n)| (c.into_owned(), n));
            assert_eq!(owned, in_place, "{buf:02x?}");
        };
        for cmd in samples() {
            let bytes = cmd.to_bytes();
            let (r, used) = CommandRef::decode(&bytes).unwrap();
            assert_eq!((r.clone().into_owned(), used), (cmd.clone(), bytes.len()));
            assert_eq!(r.to_bytes(), bytes, "a borrowed command encodes alike");
            assert_eq!(r.name(), cmd.name());
            for cut in 0..=bytes.len() {
                same(&bytes[..cut]);
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..48);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.gen_range(0..4)).collect();
            if !buf.is_empty() {
                buf[0] = rng.gen_range(0..14);
            }
            same(&buf);
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for cmd in samples() {
            let mut bytes = cmd.to_bytes();
            bytes.push(0);
            assert_eq!(
                Command::decode_exact(&bytes),
                Err(DecodeError::TrailingBytes(1))
            );
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            Command::decode(&[0x7f]),
            Err(DecodeError::UnknownOpcode(0x7f))
        );
        assert_eq!(Command::decode(&[13]), Err(DecodeError::UnknownOpcode(13)));
        assert_eq!(
            Command::decode(&hex("00 ffffffff")),
            Err(DecodeError::NegativeLength(-1))
        );
        // An oversize length fails at once, before its bytes arrive.
        assert!(matches!(
            Command::decode(&hex("00 0000001f")),
            Err(DecodeError::TooLong {
                len: 31,
                max: 30,
                ..
            })
        ));
        assert!(matches!(
            Command::decode(&hex("03 00000001 61 7fffffff")),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(
            Command::decode(&hex("00 00000002 c328")),
            Err(DecodeError::InvalidUtf8("login"))
        );
    }

    #[test]
    fn decoder_splits_and_joins() {
        let all: Vec<u8> = samples().iter().flat_map(|c| c.to_bytes()).collect();
        for chunk in [1, 2, 3, 7, 64, all.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in all.chunks(chunk) {
                d.push(piece);
                while let Some(c) = d.next_command().unwrap() {
                    got.push(c);
                }
            }
            assert_eq!(got, samples(), "chunk {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn decoder_hands_over_relay_bytes() {
        let mut d = Decoder::new();
        let mut bytes = Command::LoginPrivate { connect_id: 5 }.to_bytes();
        bytes.extend_from_slice(b"raw");
        d.push(&bytes);
        assert_eq!(
            d.next_command().unwrap(),
            Some(Command::LoginPrivate { connect_id: 5 })
        );
        assert_eq!(d.take_remaining(), b"raw");
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xC4A7);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..64);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if !buf.is_empty() {
                buf[0] %= 14; // mostly valid opcodes, so the field parsers run
            }
            let _ = Command::decode(&buf);
            let _ = Command::decode_exact(&buf);
            let mut d = Decoder::new();
            d.push(&buf);
            while let Ok(Some(_)) = d.next_command() {}
        }
    }
}
