//! The numbers of the C API: result codes, event kinds and dialects, and
//! the one mapping from the Rust core's error and event kinds to them.
//! Numbers are part of the ABI: they never change, and a retired number
//! stays reserved.

use crate::core::{ErrorKind, EventKind};

/// Outcome of every fallible function. 0 is success; every other area of
/// the library owns one block of 100.
///
/// - 0..99: general outcomes
/// - 100..199: bad arguments and calls the dialect cannot do
/// - 200..299: the connection to the server
/// - 300..399: the session (login)
/// - 400..499: private connections
/// - 500..599: calls and audio (accounts and babel)
/// - 600..699: accounts (registration, friends, stored messages, history)
/// - 700..799: rooms
/// - 800..899: audio devices (speakers and microphones)
/// - 900..999: faults inside the library
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum cw_result {
    /// Success.
    CW_OK = 0,
    /// Nothing happened before the time limit.
    CW_TIMEOUT = 1,
    /// The client or stream is closed, by the application or by the peer.
    CW_CLOSED = 2,
    /// A required pointer argument was NULL.
    CW_NULL_ARGUMENT = 100,
    /// A string argument was not valid UTF-8.
    CW_INVALID_UTF8 = 101,
    /// An argument was out of range or did not fit the call.
    CW_INVALID_ARGUMENT = 102,
    /// A string argument was longer than the dialect allows.
    CW_TOO_LONG = 103,
    /// The dialect cannot do this (or is not implemented yet).
    CW_UNSUPPORTED = 104,
    /// The server could not be resolved or reached.
    CW_CONNECT_FAILED = 200,
    /// A socket operation failed.
    CW_IO = 201,
    /// The server sent bytes that break the protocol.
    CW_PROTOCOL = 202,
    /// The server refused the login (for chatos: the name is taken).
    CW_LOGIN_REFUSED = 300,
    /// The call needs a successful login first.
    CW_NOT_LOGGED_IN = 301,
    /// This client has already logged in.
    CW_ALREADY_LOGGED_IN = 302,
    /// Another login (or, for accounts, registration) on this client is
    /// still waiting for its answer.
    CW_BUSY = 303,
    /// No pending request from that user (private connection, or friendship).
    CW_NO_SUCH_REQUEST = 400,
    /// No call with that user is ringing or going on (accounts, babel).
    CW_NO_SUCH_CALL = 500,
    /// A call with that user is already ringing or going on (accounts, babel).
    CW_CALL_IN_PROGRESS = 501,
    /// Registration: the email is taken, or is not an email address (accounts 102).
    CW_EMAIL_TAKEN = 600,
    /// Registration: the pseudo is taken, online now, or invalid (accounts 103).
    CW_PSEUDO_TAKEN = 601,
    /// Registration refused for another reason; cw_last_error has the server's reason (accounts 104).
    CW_REGISTER_REFUSED = 602,
    /// Friend request: no account has that pseudo, or it is yours (accounts 122).
    CW_NO_SUCH_USER = 603,
    /// Friend request: you are already friends (accounts 123).
    CW_ALREADY_FRIENDS = 604,
    /// The server did not store the message: not a friend, no such user,
    /// yourself, or a storage failure (accounts 153).
    CW_MESSAGE_FAILED = 605,
    /// Rooms: a room with that name exists, or the server has no room id left.
    CW_ROOM_EXISTS = 700,
    /// Rooms: no private room has that name.
    CW_NO_SUCH_ROOM = 701,
    /// Rooms: the room is full (or, accepting an invitation: the server did
    /// not move this client in: full, gone, or the invitation expired).
    CW_ROOM_FULL = 702,
    /// Rooms: the call needs a private room and this client is in the public one.
    CW_NOT_IN_ROOM = 703,
    /// Rooms: nobody would receive the text (alone in the room, or no peer
    /// known in a decentralised room); nothing was delivered.
    CW_NO_RECIPIENT = 704,
    /// Rooms: a limit of the server was reached (registrations from this
    /// address, requests per second, a recipient too far behind); try again
    /// later.
    CW_LIMITED = 705,
    /// Rooms: the server refused the request as unknown, malformed or not
    /// for it (an ERREUR); the library and the server disagree.
    CW_REFUSED = 706,
    /// Rooms: the text was sent CW_ROOMS_TRIES times and never acknowledged
    /// (by the server, or by some peers: cw_last_error names them). It may
    /// well have arrived, only the acknowledgements lost: do not simply
    /// send it again.
    CW_UNCONFIRMED = 707,
    /// Audio: no such speaker or microphone, or none at all (a machine
    /// without a sound card); cw_last_error names the device.
    CW_NO_DEVICE = 800,
    /// Audio: the device exists but could not be opened or stopped working.
    CW_DEVICE_FAILED = 801,
    /// Audio: this libchinwag was built without device support (cargo
    /// feature `device`); the PCM functions work.
    CW_NO_DEVICE_SUPPORT = 802,
    /// A panic was caught at the C boundary; the handle may be unusable.
    /// As the cw_event_result of a CW_EVENT_ERROR: a library thread
    /// panicked, and the client is closed.
    CW_PANIC = 900,
    /// An internal error (a thread could not be started, for example).
    CW_INTERNAL = 901,
}

impl cw_result {
    /// Every defined code, for `cw_result_str` and the tests.
    pub const ALL: [cw_result; 37] = [
        cw_result::CW_OK,
        cw_result::CW_TIMEOUT,
        cw_result::CW_CLOSED,
        cw_result::CW_NULL_ARGUMENT,
        cw_result::CW_INVALID_UTF8,
        cw_result::CW_INVALID_ARGUMENT,
        cw_result::CW_TOO_LONG,
        cw_result::CW_UNSUPPORTED,
        cw_result::CW_CONNECT_FAILED,
        cw_result::CW_IO,
        cw_result::CW_PROTOCOL,
        cw_result::CW_LOGIN_REFUSED,
        cw_result::CW_NOT_LOGGED_IN,
        cw_result::CW_ALREADY_LOGGED_IN,
        cw_result::CW_BUSY,
        cw_result::CW_NO_SUCH_REQUEST,
        cw_result::CW_NO_SUCH_CALL,
        cw_result::CW_CALL_IN_PROGRESS,
        cw_result::CW_EMAIL_TAKEN,
        cw_result::CW_PSEUDO_TAKEN,
        cw_result::CW_REGISTER_REFUSED,
        cw_result::CW_NO_SUCH_USER,
        cw_result::CW_ALREADY_FRIENDS,
        cw_result::CW_MESSAGE_FAILED,
        cw_result::CW_ROOM_EXISTS,
        cw_result::CW_NO_SUCH_ROOM,
        cw_result::CW_ROOM_FULL,
        cw_result::CW_NOT_IN_ROOM,
        cw_result::CW_NO_RECIPIENT,
        cw_result::CW_LIMITED,
        cw_result::CW_REFUSED,
        cw_result::CW_UNCONFIRMED,
        cw_result::CW_NO_DEVICE,
        cw_result::CW_DEVICE_FAILED,
        cw_result::CW_NO_DEVICE_SUPPORT,
        cw_result::CW_PANIC,
        cw_result::CW_INTERNAL,
    ];

    /// Static, NUL-terminated description of the code.
    pub fn describe(self) -> &'static str {
        use cw_result::*;
        match self {
            CW_OK => "ok\0",
            CW_TIMEOUT => "timed out\0",
            CW_CLOSED => "closed\0",
            CW_NULL_ARGUMENT => "a required argument is NULL\0",
            CW_INVALID_UTF8 => "a string argument is not valid UTF-8\0",
            CW_INVALID_ARGUMENT => "invalid argument\0",
            CW_TOO_LONG => "a string argument is too long for the dialect\0",
            CW_UNSUPPORTED => "not supported by this dialect\0",
            CW_CONNECT_FAILED => "cannot connect to the server\0",
            CW_IO => "socket error\0",
            CW_PROTOCOL => "the server broke the protocol\0",
            CW_LOGIN_REFUSED => "login refused\0",
            CW_NOT_LOGGED_IN => "not logged in\0",
            CW_ALREADY_LOGGED_IN => "already logged in\0",
            CW_BUSY => "another login or registration is in progress\0",
            CW_NO_SUCH_REQUEST => "no pending request from that user\0",
            CW_NO_SUCH_CALL => "no call with that user\0",
            CW_CALL_IN_PROGRESS => "a call with that user is already ringing or going on\0",
            CW_EMAIL_TAKEN => "email taken or invalid\0",
            CW_PSEUDO_TAKEN => "pseudo taken or invalid\0",
            CW_REGISTER_REFUSED => "registration refused\0",
            CW_NO_SUCH_USER => "no such user\0",
            CW_ALREADY_FRIENDS => "already friends\0",
            CW_MESSAGE_FAILED => "the server did not store the message\0",
            CW_ROOM_EXISTS => "a room with that name exists\0",
            CW_NO_SUCH_ROOM => "no such room\0",
            CW_ROOM_FULL => "the room is full\0",
            CW_NOT_IN_ROOM => "not in a private room\0",
            CW_NO_RECIPIENT => "nobody would receive the text\0",
            CW_LIMITED => "a server limit was reached; try again later\0",
            CW_REFUSED => "the server refused the request\0",
            CW_UNCONFIRMED => "sent but unconfirmed: it may have arrived\0",
            CW_NO_DEVICE => "no such audio device\0",
            CW_DEVICE_FAILED => "the audio device failed\0",
            CW_NO_DEVICE_SUPPORT => "built without audio device support\0",
            CW_PANIC => "internal panic caught at the C boundary\0",
            CW_INTERNAL => "internal error\0",
        }
    }

    pub fn from_i32(code: i32) -> Option<cw_result> {
        cw_result::ALL.iter().copied().find(|c| *c as i32 == code)
    }
}

/// What an event is about. Blocks of 100 per area, like `cw_result`.
///
/// - 0..99: the event queue and the connection itself
/// - 100..199: chat messages
/// - 200..299: private connections
/// - 300..399: contacts and presence (babel)
/// - 400..499: calls (accounts and babel)
/// - 500..599: friends (accounts)
/// - 600..699: rooms
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum cw_event_type {
    /// Not an event: what `cw_event_kind(NULL)` returns.
    CW_EVENT_NONE = 0,
    /// The queue was full and dropped its oldest events; `cw_event_count` says how many.
    CW_EVENT_OVERFLOW = 1,
    /// The server broke the protocol; the client is closed. `cw_event_text` says how.
    /// Also the last event when a library thread panicked (cw_event_result: CW_PANIC).
    CW_EVENT_ERROR = 2,
    /// The server closed the connection, or it failed; the client is closed.
    CW_EVENT_DISCONNECTED = 3,
    /// A global message: `cw_event_peer` sent `cw_event_text` to everyone.
    CW_EVENT_MESSAGE = 100,
    /// A private message: `cw_event_peer` sent `cw_event_text` to this user.
    CW_EVENT_PRIVATE_MESSAGE = 101,
    /// `cw_event_peer` asks for a private connection: accept or refuse it.
    CW_EVENT_PRIVATE_REQUEST = 200,
    /// `cw_event_peer` refused this user's private-connection request.
    CW_EVENT_PRIVATE_REFUSED = 201,
    /// A private connection with `cw_event_peer` is open: take its stream.
    CW_EVENT_PRIVATE_ESTABLISHED = 202,
    /// The private connection with `cw_event_peer` was closed (by either side).
    CW_EVENT_PRIVATE_CLOSED = 203,
    /// A negotiated private connection with `cw_event_peer` could not be opened.
    CW_EVENT_PRIVATE_FAILED = 204,
    /// Babel: `cw_event_peer` is now online (one event per name, also for
    /// the list the server sends right after login).
    CW_EVENT_CONTACT_ADDED = 300,
    /// Babel: `cw_event_peer` went offline.
    CW_EVENT_CONTACT_REMOVED = 301,
    /// `cw_event_peer` is calling; its end point is `cw_event_address` and
    /// `cw_event_port` (accounts 143: its UDP voice socket; babel: the TCP
    /// port the library dials when you accept). Answer or refuse the call.
    CW_EVENT_CALL_INCOMING = 400,
    /// `cw_event_peer` answered your call; send voice to `cw_event_address`
    /// and `cw_event_port` (UDP) (accounts 141).
    CW_EVENT_CALL_ACCEPTED = 401,
    /// The call to `cw_event_peer` cannot happen: offline, not a friend,
    /// already in a call with you, or declined (accounts 142). Babel: the
    /// callee refused or is not online (the server's ErrorResponse), nobody
    /// connected within 60 s, or the connection to the caller failed;
    /// `cw_event_text` says which and `cw_event_result` gives the cause.
    CW_EVENT_CALL_FAILED = 402,
    /// `cw_event_peer` hung up, cancelled its ringing call, or dropped its
    /// connection mid-call (accounts 147). Babel: the peer-to-peer
    /// connection ended; `cw_event_result` is CW_CLOSED when the peer hung
    /// up, CW_PROTOCOL when it sent malformed bytes, CW_IO on a socket error.
    CW_EVENT_CALL_ENDED = 403,
    /// Babel: the peer-to-peer connection with `cw_event_peer` is open (both
    /// sides get it): take its cw_call with cw_event_take_call to exchange voice.
    CW_EVENT_CALL_ESTABLISHED = 404,
    /// `cw_event_peer` asks to be your friend: accept or refuse (accounts 130).
    CW_EVENT_FRIEND_REQUEST = 500,
    /// `cw_event_peer` accepted your friend request (accounts 124).
    CW_EVENT_FRIEND_ACCEPTED = 501,
    /// `cw_event_peer` refused your friend request (accounts 125).
    CW_EVENT_FRIEND_REFUSED = 502,
    /// Rooms: `cw_event_peer` invites this user into the private room
    /// `cw_event_text`, whose mode is `cw_event_room_mode`. Answer with
    /// cw_client_room_answer_invitation within 60 s: the server forgets an
    /// invitation 60 s after sending it.
    CW_EVENT_ROOM_INVITATION = 600,
    /// Rooms: the private room `cw_event_text` closed with this user its
    /// last member (FERMETURE_MESSAGERIE): the server moved it to the
    /// public room, and cw_client_room_current says so.
    CW_EVENT_ROOM_CLOSED = 601,
}

/// Rooms: how a private room carries texts.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum cw_room_mode {
    /// Texts go through the server, which forwards them (MODE 0).
    CW_ROOM_CENTRALISED = 0,
    /// Members send texts to each other directly (MODE 1).
    CW_ROOM_DECENTRALISED = 1,
}

/// The wire dialect a client speaks. Numbered from 1 so that a zeroed
/// variable is never a valid dialect.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum cw_dialect {
    /// Anonymous chat with relayed private TCP connections (implemented).
    CW_DIALECT_CHATOS = 1,
    /// Contacts pushed by the server, call set-up, peer-to-peer voice over TCP (implemented).
    CW_DIALECT_BABEL = 2,
    /// Accounts with passwords, friends, stored messages and call signalling (implemented).
    CW_DIALECT_ACCOUNTS = 3,
    /// Public and private rooms over reliable UDP (implemented).
    CW_DIALECT_ROOMS = 4,
}

impl cw_dialect {
    pub fn from_i32(v: i32) -> Option<cw_dialect> {
        use cw_dialect::*;
        [
            CW_DIALECT_CHATOS,
            CW_DIALECT_BABEL,
            CW_DIALECT_ACCOUNTS,
            CW_DIALECT_ROOMS,
        ]
        .into_iter()
        .find(|d| *d as i32 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            cw_dialect::CW_DIALECT_CHATOS => "chatos",
            cw_dialect::CW_DIALECT_BABEL => "babel",
            cw_dialect::CW_DIALECT_ACCOUNTS => "accounts",
            cw_dialect::CW_DIALECT_ROOMS => "rooms",
        }
    }
}

/// The one mapping of the Rust error kinds to C result codes.
impl From<ErrorKind> for cw_result {
    fn from(kind: ErrorKind) -> cw_result {
        use cw_result::*;
        match kind {
            ErrorKind::Timeout => CW_TIMEOUT,
            ErrorKind::Closed => CW_CLOSED,
            ErrorKind::InvalidArgument => CW_INVALID_ARGUMENT,
            ErrorKind::TooLong => CW_TOO_LONG,
            ErrorKind::ConnectFailed => CW_CONNECT_FAILED,
            ErrorKind::Io => CW_IO,
            ErrorKind::Protocol => CW_PROTOCOL,
            ErrorKind::LoginRefused => CW_LOGIN_REFUSED,
            ErrorKind::NotLoggedIn => CW_NOT_LOGGED_IN,
            ErrorKind::AlreadyLoggedIn => CW_ALREADY_LOGGED_IN,
            ErrorKind::Busy => CW_BUSY,
            ErrorKind::NoSuchRequest => CW_NO_SUCH_REQUEST,
            ErrorKind::NoSuchCall => CW_NO_SUCH_CALL,
            ErrorKind::CallInProgress => CW_CALL_IN_PROGRESS,
            ErrorKind::EmailTaken => CW_EMAIL_TAKEN,
            ErrorKind::PseudoTaken => CW_PSEUDO_TAKEN,
            ErrorKind::RegisterRefused => CW_REGISTER_REFUSED,
            ErrorKind::NoSuchUser => CW_NO_SUCH_USER,
            ErrorKind::AlreadyFriends => CW_ALREADY_FRIENDS,
            ErrorKind::MessageFailed => CW_MESSAGE_FAILED,
            ErrorKind::RoomExists => CW_ROOM_EXISTS,
            ErrorKind::NoSuchRoom => CW_NO_SUCH_ROOM,
            ErrorKind::RoomFull => CW_ROOM_FULL,
            ErrorKind::NotInRoom => CW_NOT_IN_ROOM,
            ErrorKind::NoRecipient => CW_NO_RECIPIENT,
            ErrorKind::Limited => CW_LIMITED,
            ErrorKind::Refused => CW_REFUSED,
            ErrorKind::Unconfirmed => CW_UNCONFIRMED,
            ErrorKind::NoDevice => CW_NO_DEVICE,
            ErrorKind::DeviceFailed => CW_DEVICE_FAILED,
            ErrorKind::DeviceSupportMissing => CW_NO_DEVICE_SUPPORT,
            ErrorKind::Panic => CW_PANIC,
            ErrorKind::Internal => CW_INTERNAL,
        }
    }
}

/// Lets Rust callers of the dynamic client compare an error kind with a
/// C result code, through the mapping above.
impl PartialEq<cw_result> for ErrorKind {
    fn eq(&self, code: &cw_result) -> bool {
        cw_result::from(*self) == *code
    }
}

/// The one mapping of the Rust event kinds to C event kinds.
impl From<EventKind> for cw_event_type {
    fn from(kind: EventKind) -> cw_event_type {
        use cw_event_type::*;
        match kind {
            EventKind::Overflow => CW_EVENT_OVERFLOW,
            EventKind::Error => CW_EVENT_ERROR,
            EventKind::Disconnected => CW_EVENT_DISCONNECTED,
            EventKind::Message => CW_EVENT_MESSAGE,
            EventKind::PrivateMessage => CW_EVENT_PRIVATE_MESSAGE,
            EventKind::PrivateRequest => CW_EVENT_PRIVATE_REQUEST,
            EventKind::PrivateRefused => CW_EVENT_PRIVATE_REFUSED,
            EventKind::PrivateEstablished => CW_EVENT_PRIVATE_ESTABLISHED,
            EventKind::PrivateClosed => CW_EVENT_PRIVATE_CLOSED,
            EventKind::PrivateFailed => CW_EVENT_PRIVATE_FAILED,
            EventKind::ContactAdded => CW_EVENT_CONTACT_ADDED,
            EventKind::ContactRemoved => CW_EVENT_CONTACT_REMOVED,
            EventKind::CallIncoming => CW_EVENT_CALL_INCOMING,
            EventKind::CallAccepted => CW_EVENT_CALL_ACCEPTED,
            EventKind::CallFailed => CW_EVENT_CALL_FAILED,
            EventKind::CallEnded => CW_EVENT_CALL_ENDED,
            EventKind::CallEstablished => CW_EVENT_CALL_ESTABLISHED,
            EventKind::FriendRequest => CW_EVENT_FRIEND_REQUEST,
            EventKind::FriendAccepted => CW_EVENT_FRIEND_ACCEPTED,
            EventKind::FriendRefused => CW_EVENT_FRIEND_REFUSED,
            EventKind::RoomInvitation => CW_EVENT_ROOM_INVITATION,
            EventKind::RoomClosed => CW_EVENT_ROOM_CLOSED,
        }
    }
}

impl PartialEq<cw_event_type> for EventKind {
    fn eq(&self, kind: &cw_event_type) -> bool {
        cw_event_type::from(*self) == *kind
    }
}
