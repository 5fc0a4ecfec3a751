//! The babel dialect (seed 001), as the original project's code frames it
//! (shared/seeds/NOTES.md): `[u64 length][u16 opcode][payload]`, all
//! little-endian, the length counting opcode and payload. Strings and lists
//! carry u64 counts. Every count is checked against its limit before any
//! allocation: a 64-bit length is the easiest lie to tell.
//!
//! The same frames run client-server and peer-to-peer (VoiceData and
//! ConnectionEstablished travel between the two ends of a call).

use crate::cursor::{Layout, Order, Prefix, Reader, Short, Writer};
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

/// Little-endian; strings, blobs and lists carry u64 counts; inside a
/// frame (whose length is known) running out of bytes is truncation.
const LAYOUT: Layout = Layout {
    order: Order::Little,
    prefix: Prefix::U64,
    short: Short::Truncated,
};

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
        let mut w = Writer::new(out, LAYOUT);
        let len = w.slot(Prefix::U64);
        w.u16(self.opcode());
        match self {
            Frame::HelloConnect | Frame::LoginSuccess | Frame::ConnectionEstablished => {}
            Frame::Login { name } => {
                w.str(name);
            }
            Frame::LoginFailed { reason } => {
                w.str(reason);
            }
            Frame::AddContact { contacts } | Frame::DelContact { contacts } => {
                w.list(contacts, |w, s| {
                    w.str(s);
                });
            }
            Frame::CallRequest {
                contact,
                host,
                port,
            } => {
                w.str(contact).str(host).u16(*port);
            }
            Frame::VoiceData { data } => {
                w.blob(data);
            }
            Frame::ErrorResponse { what } => {
                w.str(what);
            }
            Frame::CallRefused { contact } => {
                w.str(contact);
            }
        }
        w.fill(len);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode(&mut v);
        v
    }

    /// Decode one frame from the front of `buf`: the frame and the bytes
    /// used, or `Incomplete`. The length is checked before waiting for the
    /// body, and the body must be used exactly.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
        let mut head = Reader::new(buf, LAYOUT);
        let len = match head.len("frame", MAX_FRAME) {
            Err(DecodeError::Truncated) => return Err(DecodeError::Incomplete),
            other => other?,
        };
        if len < 2 {
            return Err(DecodeError::Truncated);
        }
        let body = head.take(len).map_err(|_| DecodeError::Incomplete)?;
        let opcode = u16::from_le_bytes([body[0], body[1]]);
        let frame = Frame::decode_payload(opcode, &body[2..])?;
        Ok((frame, head.pos()))
    }

    /// Decode a buffer holding exactly one frame.
    pub fn decode_exact(buf: &[u8]) -> Result<Frame, DecodeError> {
        crate::decode_exact(buf)
    }

    /// Decode the payload of a frame whose opcode is `opcode`.
    pub fn decode_payload(opcode: u16, payload: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(payload, LAYOUT);
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
                contacts: names(&mut r)?,
            },
            op::CALL_REQUEST => Frame::CallRequest {
                contact: r.str("contact", MAX_NAME)?,
                host: r.str("host", MAX_HOST)?,
                port: r.u16()?,
            },
            op::VOICE_DATA => Frame::VoiceData {
                data: r.blob("voice data", MAX_VOICE)?.to_vec(),
            },
            op::ERROR_RESPONSE => Frame::ErrorResponse {
                what: r.str("what", MAX_TEXT)?,
            },
            op::CALL_REFUSED => Frame::CallRefused {
                contact: r.str("contact", MAX_NAME)?,
            },
            op::DEL_CONTACT => Frame::DelContact {
                contacts: names(&mut r)?,
            },
            op::CONNECTION_ESTABLISHED => Frame::ConnectionEstablished,
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        r.finish()?;
        Ok(f)
    }
}

/// A contact list: each name takes at least its 8-byte length, so a count
/// that cannot fit in what is left is a lie, refused before reserving.
fn names(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    r.list("contacts", MAX_CONTACTS, LENGTH_LEN, |r| {
        r.str("contact", MAX_NAME)
    })
}

impl crate::Decode for Frame {
    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        Frame::decode(buf)
    }
}

// The server reads these frames owned (no borrowed form yet).
crate::owned_frames!(Frame);

/// Incremental reader for a babel stream.
pub type Decoder = crate::Decoder<Frame>;

impl Decoder {
    /// The next whole frame; see [`crate::Decoder::next_message`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        self.next_message()
    }
}

impl crate::Redact for Frame {
    /// Voice data is shown by its length only.
    fn redacted(&self) -> String {
        match self {
            Frame::VoiceData { data } => {
                format!("VoiceData {{ data: {} }}", crate::redacted_len(data.len()))
            }
            other => format!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Redact;
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
