//! The library's Rust error: a kind to match on and a sentence for people.
//! It never names a C type; `ffi` maps each kind to one `cw_result`.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing happened before the time limit.
    Timeout,
    /// The client, stream or call is closed, by the application or the peer.
    Closed,
    /// An argument was out of range or did not fit the call.
    InvalidArgument,
    /// A string argument is longer than the dialect allows.
    TooLong,
    /// The server (or a peer) could not be resolved or reached.
    ConnectFailed,
    /// A socket operation failed.
    Io,
    /// The server or a peer sent bytes that break the protocol.
    Protocol,
    /// The server refused the login.
    LoginRefused,
    /// The call needs a successful login first.
    NotLoggedIn,
    /// This client has already logged in.
    AlreadyLoggedIn,
    /// Another login or registration on this client waits for its answer
    /// (rooms: too many requests wait).
    Busy,
    /// No pending request from that user (private connection, friendship,
    /// invitation).
    NoSuchRequest,
    /// No call with that user is ringing or going on.
    NoSuchCall,
    /// A call with that user is already ringing or going on.
    CallInProgress,
    /// Accounts: the email is taken or is not an email address.
    EmailTaken,
    /// Accounts: the pseudo is taken, online now, or invalid.
    PseudoTaken,
    /// Accounts: registration refused for another reason.
    RegisterRefused,
    /// Accounts: no account has that pseudo, or it is yours.
    NoSuchUser,
    /// Accounts: already friends.
    AlreadyFriends,
    /// Accounts: the server did not store the message.
    MessageFailed,
    /// Rooms: a room with that name exists, or no room id is left.
    RoomExists,
    /// Rooms: no private room has that name.
    NoSuchRoom,
    /// Rooms: the room is full (or an accepted invitation did not move us).
    RoomFull,
    /// Rooms: the call needs a private room.
    NotInRoom,
    /// Rooms: nobody would receive the text (alone in the room, or no
    /// peer known in a decentralised one); it was not sent.
    NoRecipient,
    /// Rooms: a limit of the server was reached (registrations from this
    /// address, requests per second, a recipient too far behind); try
    /// again later.
    Limited,
    /// Rooms: the server refused the request as unknown, malformed or not
    /// for it (an ERREUR); the library and server disagree.
    Refused,
    /// Rooms: a text was sent M times and never acknowledged. It may well
    /// have arrived (only the acknowledgements may have been lost), so do
    /// not simply send it again.
    Unconfirmed,
    /// Audio: no such device, or no device at all (no sound card).
    NoDevice,
    /// Audio: the device exists but failed to open or stopped working.
    DeviceFailed,
    /// Audio: the library was built without device support (its `device`
    /// cargo feature); PCM calls still work.
    DeviceSupportMissing,
    /// A library thread panicked; the client is closed.
    Panic,
    /// Something inside the library failed (a thread could not start).
    Internal,
}

/// A failure: its kind, and a sentence saying what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is (named `code` for the callers that
    /// compare it with a C result code).
    pub code: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.code
    }

    pub(crate) fn closed() -> Self {
        Error::new(ErrorKind::Closed, "the client is closed")
    }

    pub(crate) fn not_logged_in() -> Self {
        Error::new(ErrorKind::NotLoggedIn, "log in first")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
