//! Sans-IO wire codecs for every chinwag dialect, shared by the server and the
//! client library so that each byte layout lives in exactly one place.
//! Nothing here touches a socket or reads the clock, except [`eintr`]: the
//! one rule, shared by both, for a system call a signal interrupted.

pub mod accounts;
pub mod babel;
pub mod bus;
pub mod chatos;
pub mod cursor;
pub mod eintr;
pub mod rooms;
pub mod voice;

use std::fmt;
use std::marker::PhantomData;

/// A message type that can be parsed from the front of a byte buffer.
pub trait Decode: Sized {
    /// The message and how many bytes it used, or `Incomplete` for "need
    /// more bytes", or a final error.
    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError>;
}

/// A message type whose frames can also be decoded in place: a
/// `Frame<'a>` borrows its strings from the bytes it was decoded from, so
/// a server that only reads them (routing a text to its recipient) copies
/// nothing per frame. Errors and bytes used are exactly those of the owned
/// decode. A dialect without a borrowed form uses [`owned_frames!`].
pub trait DecodeRef {
    type Frame<'a>: Redact;
    /// The frame and how many bytes it used; errors as [`Decode::decode`].
    fn decode_ref(buf: &[u8]) -> Result<(Self::Frame<'_>, usize), DecodeError>;
}

/// A frame decoded in place, and the bytes buffered behind it.
pub type InPlace<'a, T> = (<T as DecodeRef>::Frame<'a>, &'a [u8]);

/// `DecodeRef` for a message type whose in-place frame is the owned one.
#[macro_export]
macro_rules! owned_frames {
    ($t:ty) => {
        impl $crate::DecodeRef for $t {
            type Frame<'a> = $t;

            fn decode_ref(buf: &[u8]) -> Result<($t, usize), $crate::DecodeError> {
                <$t as $crate::Decode>::decode(buf)
            }
        }
    };
}

/// How a message is written into a log: names and codes, never a password,
/// a chat text or voice data (those are shown by their length only). The
/// server's trace of every frame goes through this and nothing else.
pub trait Redact {
    fn redacted(&self) -> String;
}

/// A text or blob as a log shows it.
pub fn redacted_len(len: usize) -> String {
    format!("<{len} bytes>")
}

/// Decode a buffer that must hold exactly one message: a shorter one is
/// `Truncated`, a longer one `TrailingBytes`.
pub fn decode_exact<T: Decode>(buf: &[u8]) -> Result<T, DecodeError> {
    match T::decode(buf) {
        Ok((msg, used)) if used == buf.len() => Ok(msg),
        Ok((_, used)) => Err(DecodeError::TrailingBytes(buf.len() - used)),
        Err(DecodeError::Incomplete) => Err(DecodeError::Truncated),
        Err(e) => Err(e),
    }
}

/// Incremental decoder for a byte stream of `T`s: push what the socket gave,
/// pull whole messages. Once everything pushed is decoded the buffer starts
/// afresh; otherwise it keeps at most 4 KiB of decoded bytes ahead of the
/// partial message before moving that down.
#[derive(Debug)]
pub struct Decoder<T> {
    buf: Vec<u8>,
    start: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Default for Decoder<T> {
    fn default() -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            _t: PhantomData,
        }
    }
}

impl<T> Decoder<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes received from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the
    /// error that makes the stream unusable.
    pub fn next_message(&mut self) -> Result<Option<T>, DecodeError>
    where
        T: Decode,
    {
        Ok(self.next_with(T::decode)?.map(|(msg, _)| msg))
    }

    /// As [`Decoder::next_message`], the frame decoded in place (borrowing
    /// the buffer until the next call), with the bytes buffered behind it
    /// (for a stream that stops being framed after this frame).
    pub fn next_ref(&mut self) -> Result<Option<InPlace<'_, T>>, DecodeError>
    where
        T: DecodeRef,
    {
        self.next_with(T::decode_ref)
    }

    /// The next message as `decode` reads it, and the bytes behind it.
    fn next_with<'s, M>(
        &'s mut self,
        decode: impl FnOnce(&'s [u8]) -> Result<(M, usize), DecodeError>,
    ) -> Result<Option<(M, &'s [u8])>, DecodeError> {
        let buf = &self.buf[self.start..];
        match decode(buf) {
            Ok((msg, used)) => {
                self.start += used;
                Ok(Some((msg, &buf[used..])))
            }
            Err(DecodeError::Incomplete) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes received but not yet decoded (for a stream that stops being
    /// framed, like a chatos connection after LOGIN_PRIVATE).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }

    /// How many undecoded bytes are buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Why bytes could not be decoded. `Incomplete` is the only non-final
/// variant: it asks the caller for more bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes are needed before anything can be said.
    Incomplete,
    /// A buffer that had to hold one whole command ended early.
    Truncated,
    /// A buffer that had to hold one whole command had this many bytes left over.
    TrailingBytes(usize),
    UnknownOpcode(u16),
    NegativeLength(i64),
    /// A length prefix above the field's limit; refused before allocating.
    TooLong {
        field: &'static str,
        len: u64,
        max: u64,
    },
    InvalidUtf8(&'static str),
    /// A frame that does not start with its dialect's magic code.
    BadMagic(u32),
    /// Bits that must be zero (padding) or a bit field with a value the
    /// dialect does not define.
    BadBits(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => write!(f, "incomplete frame"),
            DecodeError::Truncated => write!(f, "truncated frame"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after frame"),
            DecodeError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            DecodeError::NegativeLength(n) => write!(f, "negative length {n}"),
            DecodeError::TooLong { field, len, max } => {
                write!(f, "{field} length {len} exceeds limit {max}")
            }
            DecodeError::InvalidUtf8(field) => write!(f, "{field} is not valid UTF-8"),
            DecodeError::BadMagic(m) => write!(f, "bad magic code {m:#010x}"),
            DecodeError::BadBits(what) => write!(f, "invalid bits in {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod redact_tests {
    use super::Redact;

    const SECRET: &str = "the secret text 7f3a";

    fn hides(f: &impl Redact) {
        let line = f.redacted();
        assert!(!line.contains(SECRET), "{line}");
        assert!(!line.contains("7f3a"), "{line}");
    }

    #[test]
    fn no_log_line_shows_a_text_a_password_or_voice() {
        use crate::{accounts as a, babel as b, chatos as c};
        let s = || SECRET.to_string();
        hides(&c::Command::Message {
            from: "al".into(),
            text: s(),
        });
        hides(&c::Command::MessagePrivate {
            from: "al".into(),
            to: "bo".into(),
            text: s(),
        });
        hides(&b::Frame::VoiceData {
            data: SECRET.as_bytes().to_vec(),
        });
        for f in [
            a::Frame::Register {
                email: "a@b.c".into(),
                pseudo: "al".into(),
                password: s(),
            },
            a::Frame::Login {
                email: "a@b.c".into(),
                password: s(),
            },
            a::Frame::SendMessage {
                pseudo: "bo".into(),
                text: s(),
            },
            a::Frame::Message {
                pseudo: "bo".into(),
                text: s(),
            },
            a::Frame::HistoryPage {
                pseudo: "bo".into(),
                entries: vec![a::HistoryEntry {
                    id: 1,
                    sender_id: 2,
                    text: s(),
                    stamp: Some(1_700_000_000),
                }],
            },
        ] {
            hides(&f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chatos::Command;

    fn msg(n: usize) -> Vec<u8> {
        Command::Message {
            from: "al".into(),
            text: "x".repeat(n % 50),
        }
        .to_bytes()
    }

    #[test]
    fn a_fully_decoded_buffer_starts_afresh() {
        let mut d = Decoder::<Command>::new();
        d.push(&msg(1));
        assert!(d.next_message().unwrap().is_some());
        assert_eq!(d.buffered(), 0);
        let part = &msg(2)[..3];
        d.push(part);
        assert_eq!(d.buffered(), 3);
        assert_eq!(d.buf.len(), 3, "decoded bytes were kept");
    }

    #[test]
    fn a_long_stream_in_odd_chunks_keeps_the_buffer_small() {
        let stream: Vec<u8> = (0..5_000).flat_map(msg).collect();
        let mut d = Decoder::<Command>::new();
        let mut got = 0;
        for chunk in stream.chunks(7) {
            d.push(chunk);
            while d.next_message().unwrap().is_some() {
                got += 1;
            }
            // Decoded bytes ahead (at most 4 KiB), one partial message, one chunk.
            assert!(
                d.buf.len() <= 4096 + 70 + 7,
                "buffer grew to {}",
                d.buf.len()
            );
            assert!(d.buffered() < 70);
        }
        assert_eq!(got, 5_000);
    }

    #[test]
    fn a_stream_never_fully_decoded_still_keeps_the_buffer_small() {
        // Each push ends one byte into the next message, so something is
        // always left over and the buffer is never simply cleared.
        let msgs: Vec<Vec<u8>> = (0..3_000).map(msg).collect();
        let stream: Vec<u8> = msgs.concat();
        let mut cuts = vec![0];
        for m in &msgs {
            cuts.push(cuts.last().unwrap() + m.len());
        }
        let mut d = Decoder::<Command>::new();
        d.push(&stream[..1]);
        for w in cuts[..cuts.len() - 1].windows(2) {
            d.push(&stream[w[0] + 1..w[1] + 1]);
            assert!(d.next_message().unwrap().is_some());
            assert!(d.next_message().unwrap().is_none());
            assert_eq!(d.buffered(), 1);
            assert!(
                d.buf.len() <= 4096 + 2 * 70,
                "buffer grew to {}",
                d.buf.len()
            );
        }
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let e = DecodeError::TooLong {
            field: "text",
            len: 9,
            max: 4,
        };
        assert_eq!(e.to_string(), "text length 9 exceeds limit 4");
        assert_eq!(
            DecodeError::UnknownOpcode(99).to_string(),
            "unknown opcode 99"
        );
        assert_eq!(
            DecodeError::BadMagic(0x4357_4143).to_string(),
            "bad magic code 0x43574143"
        );
    }
}
