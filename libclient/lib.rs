//! libchinwag, the chinwag client library.
//!
//! - `core`: what every client shares (lifecycle, library threads and their
//!   panic boundary, the event queue, the login, the Rust error); no C.
//! - `chatos`, `babel`, `accounts`, `rooms`: one typed client per dialect
//!   (`ChatosClient`, ...), each owning only its own state and speaking its
//!   dialect through `chinwag_proto` (never its own byte layouts).
//! - `call`: an open call over a transport its dialect provides.
//! - `logs`: the library's log lines, queued for hosts without a Rust
//!   logger (C, Python).
//! - `ffi`: the C ABI over them: one dispatch enum, one error mapping, and
//!   never a panic, a NULL or a bad string through.

pub mod accounts;
pub mod audio;
pub mod babel;
pub mod call;
pub mod chatos;
pub mod core;
pub mod ffi;
pub mod logs;
pub mod rooms;

pub use accounts::AccountsClient;
pub use babel::BabelClient;
pub use call::{Call, CallStats, Side};
pub use chatos::{ChatosClient, Stream};
pub use core::{Connection, Error, ErrorKind, Event, EventKind, Result, VoicePorts};
pub use rooms::RoomsClient;

/// C names kept for Rust callers of [`Client`].
pub use ffi::codes::{cw_dialect as Dialect, cw_result as Code};
/// The client of a dialect chosen at run time, as the C API sees it.
pub use ffi::Client;

/// Paths of the Rust API kept from before the typed clients.
pub mod client {
    pub use crate::call::Call;
    pub use crate::chatos::Stream;
    pub use crate::core::{Error, Event, Result, DEFAULT_CAPACITY};
    pub use crate::ffi::Client;
    pub use crate::rooms::{RoomEntry, ROOMS_KEEPALIVE, ROOMS_RETRY_EVERY, ROOMS_TRIES};
    pub use chinwag_proto::accounts::HistoryEntry;
    pub use chinwag_proto::rooms::Mode as RoomMode;
}

/// The crate version, which is also the C header's `CW_VERSION_*`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
