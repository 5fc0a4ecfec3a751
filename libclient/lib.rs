//! libchinwag, the chinwag client library. `client` owns the sockets, the
//! library threads and the event queue, and speaks each dialect through
//! `chinwag_proto` (never its own byte layouts); `ffi` is the C ABI over it
//! and must never let a panic, a NULL or a bad string through.

pub mod audio;
pub mod client;
pub mod ffi;

pub use client::{Call, Client, Error, Event, Stream};
pub use ffi::codes::{cw_dialect as Dialect, cw_event_type as EventKind, cw_result as Code};

/// The crate version, which is also the C header's `CW_VERSION_*`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
