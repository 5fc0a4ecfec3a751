//! The bounded event queue between the library's threads (producers) and
//! the application (consumer). It never runs user code and never blocks a
//! producer: when full it drops the oldest droppable event and counts it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::bell::Bell;
use super::{Error, ErrorKind, Result};
use crate::call::Call;
use crate::chatos::Stream;

/// Events queued per client before the oldest are dropped. Large enough for
/// a burst of a busy room, small enough that a stalled application costs at
/// most about a megabyte of text.
pub const DEFAULT_CAPACITY: usize = 1024;

/// One thing that happened on a client.
#[derive(Debug)]
pub enum Event {
    /// `dropped` events were lost because the queue was full.
    Overflow {
        dropped: u64,
    },
    /// The server broke the protocol; the client is closed (terminal).
    Error {
        code: ErrorKind,
        text: String,
    },
    /// The connection ended; the client is closed (terminal).
    Disconnected {
        code: ErrorKind,
        text: String,
    },
    Message {
        from: String,
        text: String,
    },
    PrivateMessage {
        from: String,
        to: String,
        text: String,
        /// Accounts with the STAMPS feature: when the server stored the
        /// message, in seconds since the Unix epoch (UTC).
        stamp: Option<u64>,
    },
    PrivateRequest {
        from: String,
    },
    PrivateRefused {
        peer: String,
    },
    /// The stream is `None` once the application has taken it.
    PrivateEstablished {
        peer: String,
        connect_id: i64,
        stream: Option<Stream>,
    },
    PrivateClosed {
        peer: String,
    },
    PrivateFailed {
        peer: String,
        connect_id: i64,
        code: ErrorKind,
        text: String,
    },
    /// Babel: `name` is online.
    ContactAdded {
        name: String,
    },
    /// Babel: `name` went offline.
    ContactRemoved {
        name: String,
    },
    /// `peer` is calling from the end point `addr`:`port` (accounts: its
    /// UDP voice socket; babel: the TCP port to dial when accepting).
    CallIncoming {
        peer: String,
        addr: String,
        port: u16,
    },
    /// Accounts: `peer` answered; its UDP end point is `addr`:`port`.
    CallAccepted {
        peer: String,
        addr: String,
        port: u16,
    },
    /// The call to or from `peer` cannot happen or was declined; `code`
    /// is the cause (`None` for a plain refusal), `text` explains.
    CallFailed {
        peer: String,
        code: Option<ErrorKind>,
        text: String,
    },
    /// `peer` hung up, cancelled its ringing call, or the peer-to-peer
    /// connection failed (`code`: CW_CLOSED, CW_PROTOCOL, CW_IO).
    CallEnded {
        peer: String,
        code: ErrorKind,
        text: String,
    },
    /// Babel: the peer-to-peer connection with `peer` is open. The call is
    /// `None` once the application has taken it.
    CallEstablished {
        peer: String,
        call: Option<Call>,
    },
    /// Accounts: `from` asks to be a friend.
    FriendRequest {
        from: String,
    },
    /// Accounts: `peer` accepted this user's friend request.
    FriendAccepted {
        peer: String,
    },
    /// Accounts: `peer` refused this user's friend request.
    FriendRefused {
        peer: String,
    },
    /// Rooms: `from` invites this user into the private room `room`.
    RoomInvitation {
        from: String,
        room: String,
        mode: chinwag_proto::rooms::Mode,
    },
    /// Rooms: the private room `room` closed with this user its last
    /// member; the server moved it to the public room.
    RoomClosed {
        room: String,
    },
}

/// What an event is about, without its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    Overflow,
    Error,
    Disconnected,
    Message,
    PrivateMessage,
    PrivateRequest,
    PrivateRefused,
    PrivateEstablished,
    PrivateClosed,
    PrivateFailed,
    ContactAdded,
    ContactRemoved,
    CallIncoming,
    CallAccepted,
    CallFailed,
    CallEnded,
    CallEstablished,
    FriendRequest,
    FriendAccepted,
    FriendRefused,
    RoomInvitation,
    RoomClosed,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Overflow { .. } => EventKind::Overflow,
            Event::Error { .. } => EventKind::Error,
            Event::Disconnected { .. } => EventKind::Disconnected,
            Event::Message { .. } => EventKind::Message,
            Event::PrivateMessage { .. } => EventKind::PrivateMessage,
            Event::PrivateRequest { .. } => EventKind::PrivateRequest,
            Event::PrivateRefused { .. } => EventKind::PrivateRefused,
            Event::PrivateEstablished { .. } => EventKind::PrivateEstablished,
            Event::PrivateClosed { .. } => EventKind::PrivateClosed,
            Event::PrivateFailed { .. } => EventKind::PrivateFailed,
            Event::CallIncoming { .. } => EventKind::CallIncoming,
            Event::CallAccepted { .. } => EventKind::CallAccepted,
            Event::CallFailed { .. } => EventKind::CallFailed,
            Event::CallEnded { .. } => EventKind::CallEnded,
            Event::CallEstablished { .. } => EventKind::CallEstablished,
            Event::ContactAdded { .. } => EventKind::ContactAdded,
            Event::ContactRemoved { .. } => EventKind::ContactRemoved,
            Event::FriendRequest { .. } => EventKind::FriendRequest,
            Event::FriendAccepted { .. } => EventKind::FriendAccepted,
            Event::FriendRefused { .. } => EventKind::FriendRefused,
            Event::RoomInvitation { .. } => EventKind::RoomInvitation,
            Event::RoomClosed { .. } => EventKind::RoomClosed,
        }
    }

    /// The other user the event is about.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Event::Message { from, .. }
            | Event::PrivateMessage { from, .. }
            | Event::PrivateRequest { from }
            | Event::FriendRequest { from }
            | Event::RoomInvitation { from, .. } => Some(from),
            Event::PrivateRefused { peer }
            | Event::PrivateEstablished { peer, .. }
            | Event::PrivateClosed { peer }
            | Event::PrivateFailed { peer, .. }
            | Event::CallIncoming { peer, .. }
            | Event::CallAccepted { peer, .. }
            | Event::CallFailed { peer, .. }
            | Event::CallEnded { peer, .. }
            | Event::CallEstablished { peer, .. }
            | Event::ContactAdded { name: peer }
            | Event::ContactRemoved { name: peer }
            | Event::FriendAccepted { peer }
            | Event::FriendRefused { peer } => Some(peer),
            _ => None,
        }
    }

    /// The peer's voice end point (UDP) of a call event: address and port.
    pub fn voice_endpoint(&self) -> Option<(&str, u16)> {
        match self {
            Event::CallIncoming { addr, port, .. } | Event::CallAccepted { addr, port, .. } => {
                Some((addr, *port))
            }
            _ => None,
        }
    }

    /// The message body, or the explanation of an error.
    pub fn text(&self) -> Option<&str> {
        match self {
            Event::Message { text, .. }
            | Event::PrivateMessage { text, .. }
            | Event::Error { text, .. }
            | Event::Disconnected { text, .. }
            | Event::PrivateFailed { text, .. }
            | Event::CallFailed { text, .. }
            | Event::CallEnded { text, .. } => Some(text),
            Event::RoomInvitation { room, .. } | Event::RoomClosed { room } => Some(room),
            _ => None,
        }
    }

    /// When the server stored a message (accounts, STAMPS feature):
    /// seconds since the Unix epoch (UTC).
    pub fn stamp(&self) -> Option<u64> {
        match self {
            Event::PrivateMessage { stamp, .. } => *stamp,
            _ => None,
        }
    }

    /// Rooms: the mode of the room of an invitation.
    pub fn room_mode(&self) -> Option<chinwag_proto::rooms::Mode> {
        match self {
            Event::RoomInvitation { mode, .. } => Some(*mode),
            _ => None,
        }
    }

    /// The cause carried by an ERROR, DISCONNECTED, PRIVATE_FAILED,
    /// CALL_FAILED (none for a plain refusal) or CALL_ENDED event.
    pub fn code(&self) -> Option<ErrorKind> {
        match self {
            Event::Error { code, .. }
            | Event::Disconnected { code, .. }
            | Event::PrivateFailed { code, .. }
            | Event::CallEnded { code, .. } => Some(*code),
            Event::CallFailed { code, .. } => *code,
            _ => None,
        }
    }

    /// A stream or call would be closed by dropping, and a terminal event is the
    /// last word on a client: neither may be dropped on overflow.
    fn droppable(&self) -> bool {
        !matches!(
            self,
            Event::PrivateEstablished { .. }
                | Event::CallEstablished { .. }
                | Event::Error { .. }
                | Event::Disconnected { .. }
        )
    }
}

struct State {
    events: VecDeque<Event>,
    /// Dropped since the last overflow event was handed out.
    dropped: u64,
    /// A terminal event was queued: nothing follows it.
    ended: bool,
    /// The application closed the client: nothing more is handed out.
    closed: bool,
    /// Readable while `pop` would return at once (an event, or the end).
    bell: Bell,
}

impl State {
    /// Whether `pop` would return without waiting.
    fn something(&self) -> bool {
        !self.events.is_empty() || self.dropped > 0 || self.ended || self.closed
    }
}

pub(crate) struct EventQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        EventQueue {
            state: Mutex::new(State {
                events: VecDeque::new(),
                dropped: 0,
                ended: false,
                closed: false,
                bell: Bell::new(),
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queue an event. Returns it back when the queue takes no more events,
    /// so that the caller drops it (and any stream in it) outside the lock.
    pub(crate) fn push(&self, ev: Event) -> Option<Event> {
        let mut st = self.state.lock();
        if st.closed || st.ended {
            return Some(ev);
        }
        let mut evicted = None;
        if st.events.len() >= self.capacity {
            if let Some(i) = st.events.iter().position(Event::droppable) {
                evicted = st.events.remove(i);
                st.dropped += 1;
            }
        }
        if matches!(ev, Event::Error { .. } | Event::Disconnected { .. }) {
            st.ended = true;
        }
        st.events.push_back(ev);
        st.bell.set(true);
        drop(st);
        self.ready.notify_one();
        evicted
    }

    /// A descriptor readable while `pop` would return at once; owned by
    /// the queue (closed when it is dropped).
    pub(crate) fn fd(&self) -> Result<std::os::fd::RawFd> {
        let mut st = self.state.lock();
        let on = st.something();
        st.bell.fd(on)
    }

    /// The next event, waiting at most `timeout` (`None`: without limit).
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Result<Event> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.state.lock();
        loop {
            if st.closed {
                return Err(Error::closed());
            }
            if st.dropped > 0 {
                let dropped = std::mem::take(&mut st.dropped);
                let on = st.something();
                st.bell.set(on);
                return Ok(Event::Overflow { dropped });
            }
            if let Some(ev) = st.events.pop_front() {
                if st.ended && st.events.is_empty() {
                    // Wake other waiters so they see the end too.
                    self.ready.notify_all();
                }
                let on = st.something();
                st.bell.set(on);
                return Ok(ev);
            }
            if st.ended {
                return Err(Error::closed());
            }
            if super::wait_until(&self.ready, &mut st, deadline) {
                if st.closed {
                    return Err(Error::closed());
                }
                if st.dropped == 0 && st.events.is_empty() {
                    return Err(if st.ended {
                        Error::closed()
                    } else {
                        Error::new(ErrorKind::Timeout, "no event before the time limit")
                    });
                }
            }
        }
    }

    /// Stop handing out events and wake every waiter. Queued events are
    /// returned so the caller drops them outside the lock.
    pub(crate) fn close(&self) -> VecDeque<Event> {
        let mut st = self.state.lock();
        st.closed = true;
        st.bell.set(true);
        let left = std::mem::take(&mut st.events);
        drop(st);
        self.ready.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Event {
        Event::Message {
            from: "a".into(),
            text: i.to_string(),
        }
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let q = EventQueue::new(3);
        for i in 0..5 {
            q.push(msg(i));
        }
        let first = q.pop(Some(Duration::ZERO)).unwrap();
        assert!(matches!(first, Event::Overflow { dropped: 2 }), "{first:?}");
        for i in 2..5 {
            match q.pop(Some(Duration::ZERO)).unwrap() {
                Event::Message { text, .. } => assert_eq!(text, i.to_string()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            q.pop(Some(Duration::ZERO)).unwrap_err().code,
            ErrorKind::Timeout
        );
    }

    #[test]
    fn terminal_event_is_kept_and_ends_the_queue() {
        let q = EventQueue::new(1);
        q.push(msg(0));
        q.push(Event::Disconnected {
            code: ErrorKind::Closed,
            text: "bye".into(),
        });
        assert!(q.push(msg(1)).is_some(), "nothing is queued after the end");
        assert!(matches!(
            q.pop(None).unwrap(),
            Event::Overflow { dropped: 1 }
        ));
        assert!(matches!(q.pop(None).unwrap(), Event::Disconnected { .. }));
        assert_eq!(q.pop(None).unwrap_err().code, ErrorKind::Closed);
    }

    #[test]
    fn close_wakes_a_waiter() {
        let q = std::sync::Arc::new(EventQueue::new(4));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop(None));
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(t.join().unwrap().unwrap_err().code, ErrorKind::Closed);
    }

    #[test]
    fn the_descriptor_is_readable_while_events_wait_and_at_the_end() {
        use crate::core::bell::readable;
        let q = EventQueue::new(2);
        let fd = q.fd().unwrap();
        assert!(!readable(fd));
        q.push(msg(0));
        assert!(readable(fd));
        q.push(msg(1));
        q.pop(Some(Duration::ZERO)).unwrap();
        assert!(readable(fd), "one still waits");
        q.pop(Some(Duration::ZERO)).unwrap();
        assert!(!readable(fd), "drained");
        // Overflow counts as something to read.
        for i in 0..3 {
            q.push(msg(i));
        }
        assert!(readable(fd));
        assert!(matches!(
            q.pop(None).unwrap(),
            Event::Overflow { dropped: 1 }
        ));
        q.pop(None).unwrap();
        q.pop(None).unwrap();
        assert!(!readable(fd));
        // The end stays readable, so a poll loop learns of it.
        q.push(Event::Disconnected {
            code: ErrorKind::Closed,
            text: "bye".into(),
        });
        q.pop(None).unwrap();
        assert!(readable(fd));
        assert_eq!(q.pop(None).unwrap_err().code, ErrorKind::Closed);
        // A descriptor asked for late starts in the right state.
        let q2 = EventQueue::new(2);
        q2.push(msg(0));
        assert!(readable(q2.fd().unwrap()));
        let q3 = EventQueue::new(2);
        let fd3 = q3.fd().unwrap();
        q3.close();
        assert!(readable(fd3), "closed: next_event answers at once");
    }

    #[test]
    fn timeout_is_honoured() {
        let q = EventQueue::new(4);
        let t0 = Instant::now();
        assert_eq!(
            q.pop(Some(Duration::from_millis(50))).unwrap_err().code,
            ErrorKind::Timeout
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }
}
