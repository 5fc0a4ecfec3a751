//! Seed 003's reliability (§3.2) as one sans-IO state machine that serves
//! both ends, a client or the server: NUM_SEQ numbering, retransmission
//! every T, at most M sends and then a give-up, duplicate suppression and
//! an answer cache for retransmitted requests. Time is always passed in and
//! nothing here touches a socket; the caller drains [`Endpoint::poll_transmit`]
//! and [`Endpoint::poll_event`] after each call.
//!
//! Peers are whatever key the caller chooses (a socket address, a user id).
//! Every structure is bounded per peer and in total, and every operation
//! costs O(1) amortised, whatever the number of peers or of messages in
//! flight.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::{answer_kind, is_answer, kind, Body, Header, Message};
use crate::DecodeError;

/// T, seed 003 §3.2: "T = 100 ms pour des raisons des tests".
pub const RETRY_EVERY: Duration = Duration::from_millis(100);
/// M, which the seed leaves to the sender. At 20 % loss each way a send
/// fails to arrive 1 time in 5, so M = 10 loses a message 0.2^10 ≈ 1 in 10
/// million times (M = 5 lost 1 in 3,000), and a sender hears no answer at
/// all (0.36^10) about 1 time in 28,000, in which case the message has most
/// likely arrived anyway. The give-up comes after M x T = 1 s.
pub const TRIES: u32 = 10;
/// How long an answer is kept for a retransmitted request: far longer than
/// any sender retransmits (M x T), short enough that a client restarting at
/// the same NUM_SEQ soon gets a fresh answer.
pub const ANSWER_TTL: Duration = Duration::from_secs(10);
/// Requests remembered per peer (their answers replayed). A request
/// forgotten while its sender still retransmits it would be executed twice,
/// so this must cover every request a peer sends within M x T: 256 in 1 s,
/// more than a server lets one client send (see its per-client rate).
pub const ANSWERS_PER_PEER: usize = 256;
/// Bytes of cached answers in all, across peers (the oldest go first).
pub const ANSWER_BYTES: usize = 8 << 20;
/// Requests remembered in all, across peers (the oldest go first).
pub const ANSWERS_TOTAL: usize = 65_536;
/// Messages awaiting their answer per peer; more are refused with `Busy`.
pub const OUTSTANDING_PER_PEER: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// T: the time between two sends of one message.
    pub retry_every: Duration,
    /// M: sends of one message in all (at least 1).
    pub tries: u32,
    pub answer_ttl: Duration,
    pub answers_per_peer: usize,
    pub answers_total: usize,
    pub answer_bytes: usize,
    pub outstanding_per_peer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retry_every: RETRY_EVERY,
            tries: TRIES,
            answer_ttl: ANSWER_TTL,
            answers_per_peer: ANSWERS_PER_PEER,
            answers_total: ANSWERS_TOTAL,
            answer_bytes: ANSWER_BYTES,
            outstanding_per_peer: OUTSTANDING_PER_PEER,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    pub to: P,
    pub bytes: Vec<u8>,
    pub role: Role,
}

/// Why a datagram is sent (a caller may treat retransmissions apart, for
/// example to cap what goes to an address not yet known to receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The first send of a message this end started.
    First,
    /// A later send of it, its answer not yet heard.
    Retry,
    /// An answer to a request of the peer, or the same answer again for a
    /// copy of that request.
    Answer,
}

/// What became of a message this end sent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// No answer after M sends: retransmission stopped. The message may
    /// well have arrived (only the answers may have been lost), so tell the
    /// application "unconfirmed", never "failed, send it again".
    Unanswered { to: P, seq: u16, kind: u8 },
}

/// What a received datagram is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A request seen for the first time: act on it once, then [`Endpoint::answer`]
    /// it (now or later; until then its copies are suppressed).
    Request(Message),
    /// A request (or a type nobody defined) whose header reads but whose
    /// body does not; also seen for the first time, and may be answered.
    Unreadable { header: Header, error: DecodeError },
    /// A copy of a request already seen: its answer, if it has one yet, is
    /// queued again; do nothing else.
    Duplicate { replayed: bool },
    /// The answer (or an ERREUR) to a message this end sent: its
    /// retransmission stopped. `request` is the type that was sent.
    Answer { request: u8, message: Message },
    /// An answer to nothing outstanding: late (after the give-up), a copy,
    /// of the wrong type, or forged. Never answered.
    Stray(Message),
    /// Not a readable seed-003 datagram, or an answer that does not decode.
    Junk(DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// `outstanding_per_peer` messages already await this peer's answers.
    Busy,
    /// An answer type: answers go through [`Endpoint::answer`].
    NotARequest,
}

struct Sent {
    bytes: Vec<u8>,
    kind: u8,
    sends: u32,
    serial: u64,
}

struct Seen {
    serial: u64,
    answer: Option<Vec<u8>>,
}

/// A request as remembered: its NUM_SEQ and a digest of its bytes. Two
/// requests with one NUM_SEQ but other bytes are two requests, so that a
/// forged datagram cannot push a real one out and have its copy executed
/// again.
type Key = (u16, u64);

#[derive(Default)]
struct PeerState {
    /// The last NUM_SEQ this end used towards the peer.
    last_seq: Option<u16>,
    outstanding: HashMap<u16, Sent>,
    received: HashMap<Key, Seen>,
    /// The digest of the latest request seen with each NUM_SEQ: the one an
    /// answer with that NUM_SEQ belongs to.
    latest: HashMap<u16, u64>,
    /// `received` in arrival order; entries whose serial no longer matches
    /// are stale and skipped.
    order: VecDeque<(Key, u64)>,
}

impl PeerState {
    fn idle(&self) -> bool {
        self.last_seq.is_none() && self.outstanding.is_empty() && self.received.is_empty()
    }
}

/// A retransmission time, in time order.
struct Due<P> {
    at: Instant,
    peer: P,
    seq: u16,
    serial: u64,
}

/// When a request was remembered, in time order.
struct Age<P> {
    at: Instant,
    peer: P,
    key: Key,
    serial: u64,
}

/// One end's reliability state towards all its peers.
pub struct Endpoint<P> {
    cfg: Config,
    /// The latest time seen: a clock that goes back is read as standing still.
    clock: Option<Instant>,
    peers: HashMap<P, PeerState>,
    /// Retransmission times. T is fixed and the clock never goes back, so
    /// pushing at the back keeps this sorted.
    retries: VecDeque<Due<P>>,
    /// Requests remembered, oldest first (for ageing and the total caps).
    ages: VecDeque<Age<P>>,
    live_outstanding: usize,
    live_answers: usize,
    answer_bytes: usize,
    serial: u64,
    transmits: VecDeque<Transmit<P>>,
    events: VecDeque<Event<P>>,
}

fn digest(d: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    d.hash(&mut h);
    h.finish()
}

impl<P: Copy + Eq + Hash> Endpoint<P> {
    pub fn new(mut cfg: Config) -> Self {
        cfg.tries = cfg.tries.max(1);
        cfg.outstanding_per_peer = cfg.outstanding_per_peer.clamp(1, 32_768);
        cfg.answers_per_peer = cfg.answers_per_peer.max(1);
        Endpoint {
            cfg,
            clock: None,
            peers: HashMap::new(),
            retries: VecDeque::new(),
            ages: VecDeque::new(),
            live_outstanding: 0,
            live_answers: 0,
            answer_bytes: 0,
            serial: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let t = self.clock.map_or(now, |c| c.max(now));
        self.clock = Some(t);
        t
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Make the next message sent to `peer` carry `seq` (for example a
    /// random start, so that a forged answer must guess it).
    pub fn set_next_seq(&mut self, peer: P, seq: u16) {
        self.peers.entry(peer).or_default().last_seq = Some(seq.wrapping_sub(1));
    }

    /// Send `body` to `to` as a request, under the next NUM_SEQ towards
    /// that peer and with `user` as ID_USER; it is sent again every T until
    /// answered, M sends in all. Returns its NUM_SEQ.
    pub fn send(&mut self, now: Instant, to: P, user: u8, body: Body) -> Result<u16, SendError> {
        let k = body.kind();
        if is_answer(k) {
            return Err(SendError::NotARequest);
        }
        let now = self.advance(now);
        let cap = self.cfg.outstanding_per_peer;
        let serial = self.next_serial();
        let peer = self.peers.entry(to).or_default();
        if peer.outstanding.len() >= cap {
            return Err(SendError::Busy);
        }
        let mut seq = peer.last_seq.map_or(1, |s| s.wrapping_add(1));
        // Skip a NUM_SEQ still awaiting its answer (after a wrap).
        while peer.outstanding.contains_key(&seq) {
            seq = seq.wrapping_add(1);
        }
        peer.last_seq = Some(seq);
        let bytes = Message { user, seq, body }.to_bytes();
        peer.outstanding.insert(
            seq,
            Sent {
                bytes: bytes.clone(),
                kind: k,
                sends: 1,
                serial,
            },
        );
        self.live_outstanding += 1;
        self.retries.push_back(Due {
            at: now + self.cfg.retry_every,
            peer: to,
            seq,
            serial,
        });
        self.transmits.push_back(Transmit {
            to,
            bytes,
            role: Role::First,
        });
        Ok(seq)
    }

    /// Stop retransmitting a message (its sender no longer waits for it).
    /// No event follows. False if it was not outstanding.
    pub fn cancel(&mut self, peer: P, seq: u16) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let found = p.outstanding.remove(&seq).is_some();
        if found {
            self.live_outstanding -= 1;
            self.drop_if_idle(peer);
        }
        found
    }

    /// Messages sent to `peer` that still await their answer. O(1).
    pub fn outstanding(&self, peer: P) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.outstanding.len())
    }

    /// Whether `d` from `from` is a copy of a request already seen (so
    /// [`Endpoint::receive`] would call it a duplicate). Changes nothing.
    pub fn is_retransmission(&self, from: P, d: &[u8]) -> bool {
        let Ok(h) = Header::peek(d) else {
            return false;
        };
        !is_answer(h.kind)
            && self
                .peers
                .get(&from)
                .is_some_and(|p| p.received.contains_key(&(h.seq, digest(d))))
    }

    /// One datagram from `from`.
    pub fn receive(&mut self, now: Instant, from: P, d: &[u8]) -> Incoming {
        let now = self.advance(now);
        let header = match Header::peek(d) {
            Ok(h) => h,
            Err(e) => return Incoming::Junk(e),
        };
        if is_answer(header.kind) {
            let message = match Message::decode(d) {
                Ok(m) => m,
                Err(e) => return Incoming::Junk(e),
            };
            let settles = self
                .peers
                .get(&from)
                .and_then(|p| p.outstanding.get(&header.seq))
                .is_some_and(|s| {
                    header.kind == kind::ERREUR || answer_kind(s.kind) == Some(header.kind)
                });
            if !settles {
                return Incoming::Stray(message);
            }
            let peer = self.peers.get_mut(&from).expect("checked");
            let sent = peer.outstanding.remove(&header.seq).expect("checked");
            self.live_outstanding -= 1;
            self.drop_if_idle(from);
            return Incoming::Answer {
                request: sent.kind,
                message,
            };
        }
        // A request, or a type nobody defined: one execution per copy set.
        let key = (header.seq, digest(d));
        if let Some(seen) = self.peers.get(&from).and_then(|p| p.received.get(&key)) {
            let replayed = match &seen.answer {
                Some(bytes) => {
                    let bytes = bytes.clone();
                    self.transmits.push_back(Transmit {
                        to: from,
                        bytes,
                        role: Role::Answer,
                    });
                    true
                }
                None => false,
            };
            return Incoming::Duplicate { replayed };
        }
        self.remember_request(now, from, key);
        match Message::decode_lenient(d) {
            Ok(m) => Incoming::Request(m),
            Err(error) => Incoming::Unreadable { header, error },
        }
    }

    fn remember_request(&mut self, now: Instant, from: P, key: Key) {
        let serial = self.next_serial();
        let per_peer = self.cfg.answers_per_peer;
        let peer = self.peers.entry(from).or_default();
        peer.received.insert(
            key,
            Seen {
                serial,
                answer: None,
            },
        );
        peer.latest.insert(key.0, key.1);
        peer.order.push_back((key, serial));
        self.live_answers += 1;
        // Per peer: the oldest request goes.
        while peer.received.len() > per_peer {
            let Some((k, ser)) = peer.order.pop_front() else {
                break;
            };
            if peer.received.get(&k).is_some_and(|x| x.serial == ser) {
                let gone = peer.received.remove(&k).expect("checked");
                if peer.latest.get(&k.0) == Some(&k.1) {
                    peer.latest.remove(&k.0);
                }
                self.live_answers -= 1;
                self.answer_bytes -= gone.answer.map_or(0, |a| a.len());
            }
        }
        if peer.order.len() > 2 * per_peer + 8 {
            let received = &peer.received;
            peer.order
                .retain(|(k, ser)| received.get(k).is_some_and(|x| x.serial == *ser));
        }
        self.ages.push_back(Age {
            at: now,
            peer: from,
            key,
            serial,
        });
        self.enforce_totals();
    }

    /// Drop the oldest remembered requests while over the total caps, and
    /// compact the age list when stale entries dominate it.
    fn enforce_totals(&mut self) {
        while self.live_answers > self.cfg.answers_total
            || self.answer_bytes > self.cfg.answer_bytes
        {
            let Some(a) = self.ages.pop_front() else {
                break;
            };
            self.expire(a);
        }
        if self.ages.len() > 2 * self.live_answers + 1024 {
            let peers = &self.peers;
            self.ages.retain(|a| {
                peers
                    .get(&a.peer)
                    .and_then(|p| p.received.get(&a.key))
                    .is_some_and(|s| s.serial == a.serial)
            });
        }
    }

    fn expire(&mut self, a: Age<P>) {
        let Some(p) = self.peers.get_mut(&a.peer) else {
            return;
        };
        if p.received.get(&a.key).is_some_and(|s| s.serial == a.serial) {
            let gone = p.received.remove(&a.key).expect("checked");
            if p.latest.get(&a.key.0) == Some(&a.key.1) {
                p.latest.remove(&a.key.0);
            }
            self.live_answers -= 1;
            self.answer_bytes -= gone.answer.map_or(0, |x| x.len());
            self.drop_if_idle(a.peer);
        }
    }

    fn drop_if_idle(&mut self, peer: P) {
        if self.peers.get(&peer).is_some_and(PeerState::idle) {
            self.peers.remove(&peer);
        }
    }

    /// Answer the request `msg.seq` from `to` (the latest one seen with that
    /// NUM_SEQ) with `msg`: sent now, and sent again for each copy of that
    /// request that arrives later (until the request is forgotten by age, by
    /// the caps, or by [`Endpoint::forget`]).
    pub fn answer(&mut self, now: Instant, to: P, msg: &Message) {
        self.advance(now);
        let bytes = msg.to_bytes();
        if let Some(seen) = self.peers.get_mut(&to).and_then(|p| {
            let key = (msg.seq, *p.latest.get(&msg.seq)?);
            p.received.get_mut(&key)
        }) {
            let old = seen.answer.replace(bytes.clone()).map_or(0, |a| a.len());
            self.answer_bytes = self.answer_bytes - old + bytes.len();
        }
        self.transmits.push_back(Transmit {
            to,
            bytes,
            role: Role::Answer,
        });
        self.enforce_totals();
    }

    /// Retransmit what is due, give up what has had its M sends, forget
    /// requests older than the answer TTL.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        while self.retries.front().is_some_and(|d| d.at <= now) {
            let due = self.retries.pop_front().expect("checked");
            let tries = self.cfg.tries;
            let Some(peer) = self.peers.get_mut(&due.peer) else {
                continue;
            };
            let Some(sent) = peer
                .outstanding
                .get_mut(&due.seq)
                .filter(|s| s.serial == due.serial)
            else {
                continue;
            };
            if sent.sends < tries {
                sent.sends += 1;
                let bytes = sent.bytes.clone();
                self.transmits.push_back(Transmit {
                    to: due.peer,
                    bytes,
                    role: Role::Retry,
                });
                self.retries.push_back(Due {
                    at: now + self.cfg.retry_every,
                    ..due
                });
            } else {
                let kind = sent.kind;
                peer.outstanding.remove(&due.seq);
                self.live_outstanding -= 1;
                self.events.push_back(Event::Unanswered {
                    to: due.peer,
                    seq: due.seq,
                    kind,
                });
                self.drop_if_idle(due.peer);
            }
        }
        if self.retries.len() > 2 * self.live_outstanding + 1024 {
            let peers = &self.peers;
            self.retries.retain(|d| {
                peers
                    .get(&d.peer)
                    .and_then(|p| p.outstanding.get(&d.seq))
                    .is_some_and(|s| s.serial == d.serial)
            });
        }
        let ttl = self.cfg.answer_ttl;
        while self.ages.front().is_some_and(|a| a.at + ttl <= now) {
            let a = self.ages.pop_front().expect("checked");
            self.expire(a);
        }
    }

    /// When [`Endpoint::handle_timeout`] next has something to do (perhaps
    /// nothing, for a timer whose message was answered since).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.retries.front().map(|d| d.at);
        let age = self.ages.front().map(|a| a.at + self.cfg.answer_ttl);
        match (retry, age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<P>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// Forget a peer entirely (it left): nothing more is retransmitted to
    /// it and no event follows, its requests and answers are forgotten, and
    /// its NUM_SEQ numbering starts over. Datagrams already queued for it
    /// (an answer to its last request) stay queued.
    pub fn forget(&mut self, peer: P) {
        if let Some(p) = self.peers.remove(&peer) {
            self.live_outstanding -= p.outstanding.len();
            self.live_answers -= p.received.len();
            self.answer_bytes -= p
                .received
                .values()
                .map(|s| s.answer.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        }
    }

    /// Peers with any state (for tests and bounds).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Requests remembered, and the bytes of their cached answers.
    pub fn remembered(&self) -> (usize, usize) {
        (self.live_answers, self.answer_bytes)
    }
}

#[cfg(test)]
mod tests;
