//! Sans-IO wire codecs for every chinwag dialect, shared by the server and the
//! client library so that each byte layout lives in exactly one place.
//! Nothing here touches a socket or reads the clock.

pub mod accounts;
pub mod chatos;

use std::fmt;

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
        }
    }
}

impl std::error::Error for DecodeError {}
