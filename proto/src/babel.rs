//! The babel dialect (seed 001), as the original project's code frames it
//! (shared/seeds/NOTES.md): `[u64 length][u16 opcode][payload]`, all
//! little-endian, the length counting opcode and payload. Strings and lists
//! carry u64 counts. Every count is checked against its limit before any
//! allocation: a 64-bit length is the easiest lie to tell.
//!
//! The same frames run client-server and peer-to-peer (VoiceData and
//! ConnectionEstablished travel between the two ends of a call).

use crate::DecodeError;

pub mod op {
    pub const HELLO_CONNECT: u16 = 1;
    pub const LOGIN: u16 = 2;
    pub const LOGIN_SUCCESS: u16 = 3;
    pub const LOGIN_FAILED: u16 = 4;
    pub const ADD_CONTACT: u16 = 5;
    pub const CALL_REQUEST: u16 = 6;
    pub const VOICE_DATA: u16 = 7;
    pub const ERROR_RESPONSE: u16 = 8;
    pub const CALL_REFUSED: u16 = 9;
    pub const DEL_CONTACT: u16 = 10;
    /// Spelled `ConnectionEtablished` in the original.
    pub const CONNECTION_ESTABLISHED: u16 = 11;
}

/// The u64 length before the opcode.
pub const LENGTH_LEN: usize = 8;
/// Largest value of the length field (opcode + payload) accepted.
pub const MAX_FRAME: usize = 1 << 20;
/// Names share the online name space with chatos logins (30 bytes).
pub const MAX_NAME: usize = 30;
pub const MAX_HOST: usize = 255;
pub const MAX_TEXT: usize = 1024;
/// Names in one AddContact / DelContact.
pub const MAX_CONTACTS: usize = 20_000;
/// Bytes of one VoiceData payload.
pub const MAX_VOICE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    HelloConnect,
    Login {
        name: String,
    },
    LoginSuccess,
    LoginFailed {
        reason: String,
    },
    AddContact {
        contacts: Vec<String>,
    },
    /// Client to server: `contact` is the callee; server to callee: the caller.
    /// `host` may be empty from a client: the server fills in what it sees.
    CallRequest {
        contact: String,
        host: String,
        port: u16,
    },
    VoiceData {
        data: Vec<u8>,
    },
    ErrorResponse {
        what: String,
    },
    CallRefused {
        contact: String,
    },
    DelContact {
        contacts: Vec<String>,
    },
    ConnectionEstablished,
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn len(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn names(&mut self, v: &[String]) {
        self.len(v.len());
        for s in v {
            self.str(s);
        }
    }
}

impl Frame {
    pub fn opcode(&self) -> u16 {
        match self {
            Frame::HelloConnect => op::HELLO_CONNECT,
            Frame::Login { .. } => op::LOGIN,
            Frame::LoginSuccess => op::LOGIN_SUCCESS,
            Frame::LoginFailed { .. } => op::LOGIN_FAILED,
            Frame::AddContact { .. } => op::ADD_CONTACT,
            Frame::CallRequest { .. } => op::CALL_REQUEST,
            Frame::VoiceData { .. } => op::VOICE_DATA,
            Frame::ErrorResponse { .. } => op::ERROR_RESPONSE,
            Frame::CallRefused { .. } => op::CALL_REFUSED,
            Frame::DelContact { .. } => op::DEL_CONTACT,
            Frame::ConnectionEstablished => op::CONNECTION_ESTABLISHED,
        }
    }

    /// Append the whole frame, length included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; LENGTH_LEN]);
        out.extend_from_slice(&self.opcode().to_le_bytes());
        let mut w = Writer(out);
        match self {
            Frame::HelloConnect | Frame::LoginSuccess | Frame::ConnectionEstablished => {}
            Frame::Login { name } => w.str(name),
            Frame::LoginFailed { reason } => w.str(reason),
            Frame::AddContact { contacts } | Frame::DelContact { contacts } => w.names(contacts),
            Frame::CallRequest {
                contact,
                host,
                port,
            } => {
                w.str(contact);
                w.str(host);
                w.0.extend_from_slice(&port.to_le_bytes());
            }
            Frame::VoiceData { data } => {
                w.len(data.len());
                w.0.extend_from_slice(data);
            }
            Frame::ErrorResponse { what } => w.str(what),
            Frame::CallRefused { contact } => w.str(contact),
        }
        let len = (out.len() - start - LENGTH_LEN) as u64;
        out[start..start + LENGTH_LEN].copy_from_slice(&len.to_le_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode(&mut v);
        v
    }

    /// The frame for a log line: like `Debug`, but voice is only its
    /// length. Payloads are never logged.
    pub fn redacted(&self) -> String {
        match self {
            Frame::VoiceData { data } => format!("VoiceData {{ data: <{} bytes> }}", data.len()),
            other => format!("{other:?}"),
        }
    }

    /// Decode one frame from the front of `buf`: the frame and the bytes
    /// used, or `Incomplete`. The length is checked before waiting for the
    /// body, and the body must be used exactly.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
        if buf.len() < LENGTH_LEN {
            return Err(DecodeError::Incomplete);
        }
        let len = u64::from_le_bytes(buf[..LENGTH_LEN].try_into().expect("8 bytes"));
        if len > MAX_FRAME as u64 {
            return Err(DecodeError::TooLong {
                field: "frame",
                len,
                max: MAX_FRAME as u64,
            });
        }
        if len < 2 {
            return Err(DecodeError::Truncated);
        }
        let total = LENGTH_LEN + len as usize;
        if buf.len() < total {
            return Err(DecodeError::Incomplete);
        }
        let body = &buf[LENGTH_LEN..total];
        let opcode = u16::from_le_bytes([body[0], body[1]]);
        let frame = Frame::decode_payload(opcode, &body[2..])?;
        Ok((frame, total))
    }

    /// Decode a buffer holding exactly one frame.
    pub fn decode_exact(buf: &[u8]) -> Result<Frame, DecodeError> {
        crate::decode_exact(buf)
    }

    /// Decode the payload of a frame whose opcode is `opcode`.
    pub fn decode_payload(opcode: u16, payload: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let f = match opcode {
            op::HELLO_CONNECT => Frame::HelloConnect,
            op::LOGIN => Frame::Login {
                name: r.str("name", MAX_NAME)?,
            },
            op::LOGIN_SUCCESS => Frame::LoginSuccess,
            op::LOGIN_FAILED => Frame::LoginFailed {
                reason: r.str("reason", MAX_TEXT)?,
            },
            op::ADD_CONTACT => Frame::AddContact {
                contacts: r.names()?,
            },
            op::CALL_REQUEST => Frame::CallRequest {
                contact: r.str("contact", MAX_NAME)?,
                host: r.str("host", MAX_HOST)?,
                port: r.u16()?,
            },
            op::VOICE_DATA => {
                let n = r.count("voice data", MAX_VOICE)?;
                Frame::VoiceData {
                    data: r.take(n)?.to_vec(),
                }
            }
            op::ERROR_RESPONSE => Frame::ErrorResponse {
                what: r.str("what", MAX_TEXT)?,
            },
            op::CALL_REFUSED => Frame::CallRefused {
                contact: r.str("contact", MAX_NAME)?,
            },
            op::DEL_CONTACT => Frame::DelContact {
                contacts: r.names()?,
            },
            op::CONNECTION_ESTABLISHED => Frame::ConnectionEstablished,
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        if r.pos != payload.len() {
            return Err(DecodeError::TrailingBytes(payload.len() - r.pos));
        }
        Ok(f)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    /// A u64 count, refused above `max` before anything is allocated.
    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        if n > max as u64 {
            return Err(DecodeError::TooLong {
                field,
                len: n,
                max: max as u64,
            });
        }
        Ok(n as usize)
    }
    fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let n = self.count(field, max)?;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8(field))
    }
    fn names(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count("contacts", MAX_CONTACTS)?;
        // Each name takes at least its 8-byte length: a count that cannot
        // fit in what is left is a lie, refused before reserving memory.
        if n > (self.buf.len() - self.pos) / LENGTH_LEN {
            return Err(DecodeError::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.str("contact", MAX_NAME)?);
        }
        Ok(v)
    }
}

impl crate::Decode for Frame {
    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        Frame::decode(buf)
    }
}

/// Incremental reader for a babel stream.
pub type Decoder = crate::Decoder<Frame>;

impl Decoder {
    /// The next whole frame; see [`crate::Decoder::next_message`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        self.next_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn frames_appended_to_a_buffer_decode_in_turn() {
        let mut v = Vec::new();
        Frame::LoginSuccess.encode(&mut v);
        Frame::Login { name: s("al") }.encode(&mut v);
        let (first, used) = Frame::decode(&v).unwrap();
        assert_eq!(first, Frame::LoginSuccess);
        let (second, rest) = Frame::decode(&v[used..]).unwrap();
        assert_eq!(second, Frame::Login { name: s("al") });
        assert_eq!(used + rest, v.len());
    }

    #[test]
    fn limits_are_inclusive() {
        // The documented sizes: 64 KiB of voice, 30-byte names, 20,000 contacts.
        let voice = Frame::VoiceData {
            data: vec![1; 64 * 1024],
        };
        assert_eq!(Frame::decode(&voice.to_bytes()).unwrap().0, voice);
        let name = Frame::Login {
            name: "n".repeat(30),
        };
        assert_eq!(Frame::decode(&name.to_bytes()).unwrap().0, name);
        let mut long = Frame::Login {
            name: "n".repeat(31),
        }
        .to_bytes();
        assert!(matches!(
            Frame::decode(&long),
            Err(DecodeError::TooLong { .. })
        ));
        let contacts = Frame::AddContact {
            contacts: (0..20_000).map(|i| format!("{i}")).collect(),
        };
        assert_eq!(Frame::decode(&contacts.to_bytes()).unwrap().0, contacts);
        // A frame length of exactly MAX_FRAME is awaited, one more refused.
        long.clear();
        long.extend_from_slice(&(MAX_FRAME as u64).to_le_bytes());
        assert_eq!(Frame::decode(&long), Err(DecodeError::Incomplete));
        long.clear();
        long.extend_from_slice(&(MAX_FRAME as u64 + 1).to_le_bytes());
        assert!(matches!(
            Frame::decode(&long),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn log_form_hides_voice() {
        let v = Frame::VoiceData {
            data: b"secret".to_vec(),
        };
        assert_eq!(v.redacted(), "VoiceData { data: <6 bytes> }");
        assert_eq!(Frame::LoginSuccess.redacted(), "LoginSuccess");
    }

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
            Frame::HelloConnect,
            Frame::Login { name: s("alice") },
            Frame::LoginSuccess,
            Frame::LoginFailed {
                reason: s("username already used"),
            },
            Frame::AddContact {
                contacts: vec![s("bob"), s("carol")],
            },
            Frame::AddContact { contacts: vec![] },
            Frame::CallRequest {
                contact: s("bob"),
                host: s(""),
                port: 4242,
            },
            Frame::CallRequest {
                contact: s("alice"),
                host: s("127.0.0.1"),
                port: 1,
            },
            Frame::VoiceData {
                data: vec![1, 2, 3, 0, 255],
            },
            Frame::VoiceData { data: vec![] },
            Frame::ErrorResponse {
                what: s("bob is not connected"),
            },
            Frame::CallRefused { contact: s("bob") },
            Frame::DelContact {
                contacts: vec![s("bob")],
            },
            Frame::ConnectionEstablished,
        ]
    }

    #[test]
    fn golden_bytes() {
        // From the notes: what the original server sends on accept.
        assert_eq!(Frame::HelloConnect.to_bytes(), hex("0200000000000000 0100"));
        assert_eq!(
            Frame::Login { name: s("bob") }.to_bytes(),
            hex("0d00000000000000 0200 0300000000000000 626f62")
        );
        assert_eq!(
            Frame::CallRequest {
                contact: s("al"),
                host: s(""),
                port: 0x1234
            }
            .to_bytes(),
            hex("1600000000000000 0600 0200000000000000 616c 0000000000000000 3412")
        );
        assert_eq!(
            Frame::DelContact {
                contacts: vec![s("a")]
            }
            .to_bytes(),
            hex("1300000000000000 0a00 0100000000000000 0100000000000000 61")
        );
        assert_eq!(
            Frame::ConnectionEstablished.to_bytes(),
            hex("0200000000000000 0b00")
        );
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
            // A length that covers less than the fields need.
            if b.len() > LENGTH_LEN + 2 {
                let mut short = b[..b.len() - 1].to_vec();
                let len = (short.len() - LENGTH_LEN) as u64;
                short[..8].copy_from_slice(&len.to_le_bytes());
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
            let len = (b.len() - LENGTH_LEN) as u64;
            b[..8].copy_from_slice(&len.to_le_bytes());
            assert_eq!(
                Frame::decode_exact(&b),
                Err(DecodeError::TrailingBytes(1)),
                "{f:?}"
            );
        }
    }

    #[test]
    fn lying_lengths_fail_before_allocating() {
        assert!(matches!(
            Frame::decode(&hex("ffffffffffffffff")),
            Err(DecodeError::TooLong { field: "frame", .. })
        ));
        assert_eq!(
            Frame::decode(&hex("0100000000000000 01")),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            Frame::decode(&hex("0a00000000000000 0200 ffffffffffffffff")),
            Err(DecodeError::TooLong { field: "name", .. })
        ));
        // A contact count far above what the frame could hold.
        assert_eq!(
            Frame::decode(&hex("0a00000000000000 0500 1027000000000000")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Frame::decode(&hex("0200000000000000 6300")),
            Err(DecodeError::UnknownOpcode(99))
        );
        assert_eq!(
            Frame::decode(&hex("0c00000000000000 0200 0200000000000000 c328")),
            Err(DecodeError::InvalidUtf8("name"))
        );
    }

    #[test]
    fn decoder_splits_and_joins() {
        let all: Vec<u8> = samples().iter().flat_map(|f| f.to_bytes()).collect();
        for chunk in [1, 5, 11, all.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in all.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, samples());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xBABE);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..60);
            let payload: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let opcode = rng.gen_range(0..13);
            let _ = Frame::decode_payload(opcode, &payload);
            let mut framed = ((n + 2) as u64).to_le_bytes().to_vec();
            framed.extend_from_slice(&opcode.to_le_bytes());
            framed.extend_from_slice(&payload);
            let _ = Frame::decode(&framed);
            let _ = Frame::decode(&payload);
        }
    }
}
