//! The one call model of every dialect that calls (babel and accounts):
//! who calls whom, ringing / answered, and how the media goes (peer to
//! peer, or through the server's media relay). It never touches a socket:
//! a relayed call asks the installed [`MediaRelay`] for an allocation, with
//! no hub lock held, and the relay reports back through
//! [`Hub::relay_answered`] and [`Hub::relay_ended`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Dialect, Event, Hub, Refusal, Session, SessionId};

pub type CallId = u64;

/// How long a call can ring (and a babel offer be refused).
pub const RING_TTL: Duration = Duration::from_secs(60);

/// Which calls the server relays (`call_relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// Every call: no party learns another's address.
    All,
    /// Calls between dialects only (they cannot go peer to peer).
    #[default]
    Cross,
    /// None: calls between dialects are refused.
    Off,
}

impl RelayMode {
    pub fn parse(s: &str) -> Option<RelayMode> {
        match s {
            "all" => Some(RelayMode::All),
            "cross" => Some(RelayMode::Cross),
            "off" => Some(RelayMode::Off),
            _ => None,
        }
    }

    /// Whether a call between these dialects is relayed, refused (None) or
    /// peer to peer.
    pub fn transport(self, a: Dialect, b: Dialect) -> Option<Transport> {
        match (self, a == b) {
            (RelayMode::All, _) | (RelayMode::Cross, false) => Some(Transport::Relayed),
            (_, true) => Some(Transport::Direct),
            (RelayMode::Off, false) => None,
        }
    }
}

/// Where a party's voice goes, as its dialect says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// accounts: a UDP voice address (140 / 144); an empty `addr` means the
    /// address its connection comes from.
    Udp { addr: String, port: u16 },
    /// A babel caller listens on host:port for the callee (CallRequest);
    /// an empty host means the address its connection comes from.
    BabelListen { host: String, port: u16 },
    /// A babel callee answers by connecting; the server never sees a
    /// peer-to-peer answer.
    BabelConnect,
}

/// One side of a relayed call, as the relay must set it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leg {
    /// An accounts party: datagrams accepted from `peer` only (None until
    /// the callee answered).
    Udp { peer: Option<SocketAddr> },
    /// A babel caller listening at `to`: the relay dials it once the callee
    /// answered.
    Dial { to: SocketAddr },
    /// A babel callee: the relay accepts one TCP connection from `from`.
    Accept { from: IpAddr },
}

/// A leg and the server address its party reached the server at (what it
/// is told to send to when the relay listens on every address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegSpec {
    pub leg: Leg,
    pub server_ip: Option<IpAddr>,
}

/// What the relay opened: the address each side is told to use (a UDP
/// port for an accounts side, a TCP port for a babel callee; None for a
/// babel caller, which the relay dials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    pub caller: Option<SocketAddr>,
    pub callee: Option<SocketAddr>,
}

/// The relay has no room for another call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayFull;

/// Which side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Callee,
}

/// The media relay, as the hub sees it (`media::Relay`; a fake in tests).
/// Called with no hub lock held; it must not call the hub back from inside
/// these calls.
pub trait MediaRelay: Send + Sync {
    fn open(&self, call: CallId, caller: LegSpec, callee: LegSpec) -> Result<Opened, RelayFull>;
    /// The callee answered; `callee` is its UDP voice address when it is
    /// an accounts party. From now on media flows.
    fn answered(&self, call: CallId, callee: Option<SocketAddr>);
    /// The call is over: release everything (sockets closed, a babel leg's
    /// connection shut, which is babel's hang-up).
    fn close(&self, call: CallId);
    /// Cluster mode: the babel callee of `call`, a user of another node,
    /// connects from `ip` (its node says so; the hub's stand-in has no
    /// address).
    fn callee_at(&self, call: CallId, ip: IpAddr) {
        let _ = (call, ip);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Direct,
    Relayed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Ringing { until: Instant },
    Answered,
}

#[derive(Debug, Clone)]
pub struct Party {
    pub session: Arc<Session>,
    pub media: Media,
}

impl Party {
    fn name(&self) -> &str {
        &self.session.name
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub id: CallId,
    pub caller: Party,
    pub callee: Party,
    pub state: CallState,
    pub transport: Transport,
    /// What the relay opened (relayed calls, once it has).
    pub relay: Option<Opened>,
}

impl Call {
    fn involves(&self, s: SessionId) -> bool {
        self.caller.session.id == s || self.callee.session.id == s
    }

    fn other(&self, s: SessionId) -> &Party {
        if self.caller.session.id == s {
            &self.callee
        } else {
            &self.caller
        }
    }

    /// Whether the server learns of the answer (so a ringing call that
    /// expires was really never answered): not for a peer-to-peer babel
    /// callee, which answers by connecting to the caller.
    fn answer_visible(&self) -> bool {
        !(self.transport == Transport::Direct && self.callee.session.dialect == Dialect::Babel)
    }
}

/// Every call, by id. Sans-IO: the hub holds it in a mutex (`Hub.calls`).
#[derive(Default)]
pub struct Calls {
    by_id: HashMap<CallId, Call>,
    next: CallId,
}

impl Calls {
    /// `caller`'s call to `callee` that is ringing, if any.
    fn ringing(&self, caller: SessionId, callee: SessionId) -> Option<CallId> {
        self.by_id
            .values()
            .find(|c| {
                c.caller.session.id == caller
                    && c.callee.session.id == callee
                    && matches!(c.state, CallState::Ringing { .. })
            })
            .map(|c| c.id)
    }

    /// Whether `a` and `b` are known to be in a call: answered, or ringing
    /// where the server would see the answer. (A peer-to-peer babel call
    /// may have been answered and hung up without the server seeing it:
    /// it blocks nothing.)
    fn busy(&self, a: SessionId, b: SessionId) -> bool {
        self.by_id.values().any(|c| {
            c.involves(a) && c.involves(b) && (c.state == CallState::Answered || c.answer_visible())
        })
    }

    fn ringing_from(&self, caller: SessionId) -> usize {
        self.by_id
            .values()
            .filter(|c| {
                c.caller.session.id == caller && matches!(c.state, CallState::Ringing { .. })
            })
            .count()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn answered(&self) -> usize {
        self.by_id
            .values()
            .filter(|c| c.state == CallState::Answered)
            .count()
    }

    /// Remove and return the calls `session` is part of.
    fn take_of(&mut self, session: SessionId) -> Vec<Call> {
        let ids: Vec<CallId> = self
            .by_id
            .values()
            .filter(|c| c.involves(session))
            .map(|c| c.id)
            .collect();
        ids.iter().filter_map(|id| self.by_id.remove(id)).collect()
    }

    /// Remove and return the ringing calls past their time.
    fn take_expired(&mut self, now: Instant) -> Vec<Call> {
        let ids: Vec<CallId> = self
            .by_id
            .values()
            .filter(|c| matches!(c.state, CallState::Ringing { until } if until <= now))
            .map(|c| c.id)
            .collect();
        ids.iter().filter_map(|id| self.by_id.remove(id)).collect()
    }
}

/// The address a party's connection comes from, when `given` is empty.
fn fill(given: &str, seen: IpAddr) -> String {
    if given.is_empty() {
        seen.to_string()
    } else {
        given.to_owned()
    }
}

/// The relay's plan for one party.
fn leg_of(p: &Party) -> Result<LegSpec, Refusal> {
    let s = &p.session;
    let leg = match &p.media {
        Media::Udp { addr, port } => Leg::Udp {
            // A callee's address comes with its answer.
            peer: match (addr.is_empty(), *port) {
                (_, 0) => None,
                (true, port) => Some(SocketAddr::new(s.ip, port)),
                (false, port) => Some(SocketAddr::new(
                    addr.parse().map_err(|_| Refusal::Offline)?,
                    port,
                )),
            },
        },
        // Only the address its connection comes from: the server dials no
        // third party, whatever the CallRequest says.
        Media::BabelListen { port, .. } => Leg::Dial {
            to: SocketAddr::new(s.ip, *port),
        },
        Media::BabelConnect => Leg::Accept { from: s.ip },
    };
    Ok(LegSpec {
        leg,
        server_ip: s.server_ip,
    })
}

/// What each party is told, from what the relay opened (or the peer's own
/// address for a direct call).
fn endpoint_for(call: &Call, side: Side) -> (String, u16) {
    let other = match side {
        Side::Caller => &call.callee,
        Side::Callee => &call.caller,
    };
    if call.transport == Transport::Relayed {
        // Never the other party's address: the relay's, or nothing (a babel
        // caller, whom the relay dials).
        let at = call.relay.and_then(|o| match side {
            Side::Caller => o.caller,
            Side::Callee => o.callee,
        });
        return at.map_or((String::new(), 0), |a| (a.ip().to_string(), a.port()));
    }
    match &other.media {
        Media::Udp { addr, port } => (fill(addr, other.session.ip), *port),
        Media::BabelListen { host, port } => (fill(host, other.session.ip), *port),
        Media::BabelConnect => (String::new(), 0),
    }
}

impl Hub {
    fn relay(&self) -> Option<Arc<dyn MediaRelay>> {
        self.relay.read().clone()
    }

    /// Install the media relay (done once at start; without one, every call
    /// that would be relayed is refused).
    pub fn set_relay(&self, relay: Arc<dyn MediaRelay>) {
        *self.relay.write() = Some(relay);
    }

    /// Which calls are relayed.
    pub fn relay_mode(&self) -> RelayMode {
        self.cfg.call_relay
    }

    /// `from` calls `to`, with its voice end as its dialect gives it. The
    /// callee must be online in a dialect that takes calls; between two
    /// dialects the call is relayed (or refused when the relay is off). A
    /// second offer to someone still ringing rings again. Checks that need
    /// the store (accounts friendship) are the caller's.
    pub fn offer_call(
        &self,
        now: Instant,
        from: &Arc<Session>,
        to: &str,
        media: Media,
    ) -> Result<CallId, Refusal> {
        if to == from.name {
            return Err(Refusal::SelfTarget);
        }
        // Calls that rang out no longer count (or block a new one).
        self.expire_calls(now);
        let callee = self
            .online(to)
            .filter(|s| s.reach().calls)
            .ok_or(Refusal::Offline)?;
        let mut transport = self
            .cfg
            .call_relay
            .transport(from.dialect, callee.dialect)
            .ok_or(Refusal::Offline)?;
        // Cluster mode: a call with a user of another node is signalled
        // across (each node keeps its half). A relayed one is relayed by
        // the caller's node alone (docs/scaling.md): the callee's node
        // keeps a half that passes the caller's media (the relay's address
        // for the callee) and the callee's answer through, as a direct
        // call does. `call_relay` is the same on every node.
        if transport == Transport::Relayed {
            // A babel callee of another node connects to this node's relay
            // from an address its node tells (`remote_callee_at`).
            if from.remote.is_some() {
                transport = Transport::Direct;
            }
        }
        let callee_media = match callee.dialect {
            Dialect::Babel => Media::BabelConnect,
            _ => Media::Udp {
                addr: String::new(),
                port: 0,
            },
        };
        let call = {
            let mut calls = self.calls.lock();
            if let Some(id) = calls.ringing(from.id, callee.id) {
                // Ring again, with the caller's new end point.
                let c = calls.by_id.get_mut(&id).expect("found");
                c.state = CallState::Ringing {
                    until: now + RING_TTL,
                };
                if c.transport == Transport::Direct {
                    c.caller.media = media.clone();
                }
                Some(c.clone())
            } else {
                if calls.busy(from.id, callee.id) {
                    return Err(Refusal::Busy);
                }
                if calls.ringing_from(from.id) >= self.cfg.max_pending_requests {
                    return Err(Refusal::Limit);
                }
                calls.next += 1;
                let id = calls.next;
                let call = Call {
                    id,
                    caller: Party {
                        session: from.clone(),
                        media,
                    },
                    callee: Party {
                        session: callee.clone(),
                        media: callee_media,
                    },
                    state: CallState::Ringing {
                        until: now + RING_TTL,
                    },
                    transport,
                    relay: None,
                };
                calls.by_id.insert(id, call.clone());
                drop(calls);
                if transport == Transport::Relayed {
                    match self.open_relay(&call) {
                        Ok(opened) => {
                            let mut calls = self.calls.lock();
                            match calls.by_id.get_mut(&id) {
                                Some(c) => {
                                    c.relay = Some(opened);
                                    Some(c.clone())
                                }
                                // Hung up meanwhile.
                                None => {
                                    drop(calls);
                                    self.close_relay(id);
                                    None
                                }
                            }
                        }
                        Err(why) => {
                            self.calls.lock().by_id.remove(&id);
                            return Err(why);
                        }
                    }
                } else {
                    Some(call)
                }
            }
        };
        let Some(call) = call else {
            return Err(Refusal::Offline);
        };
        self.metrics.call(from.dialect);
        let (host, port) = endpoint_for(&call, Side::Callee);
        callee.peer.deliver(&Event::CallOffer {
            from: &from.name,
            host: &host,
            port,
        });
        Ok(call.id)
    }

    fn open_relay(&self, call: &Call) -> Result<Opened, Refusal> {
        let relay = self.relay().ok_or(Refusal::Offline)?;
        let (a, mut b) = (leg_of(&call.caller)?, leg_of(&call.callee)?);
        if call.callee.session.remote.is_some() {
            // A user of another node: told the address of this node that
            // the caller reached (its stand-in has none).
            b.server_ip = call.caller.session.server_ip;
        }
        // A full relay: the callee cannot be reached now.
        relay
            .open(call.id, a, b)
            .map_err(|RelayFull| Refusal::Offline)
    }

    fn close_relay(&self, id: CallId) {
        if let Some(r) = self.relay() {
            r.close(id);
        }
    }

    /// The callee answers `caller`'s ringing call: `Some(media)` accepts
    /// (the caller hears where to send), `None` refuses (the caller hears
    /// a refusal). Only a call really ringing from that caller counts.
    pub fn answer_call(
        &self,
        now: Instant,
        from: &Session,
        caller: &str,
        media: Option<Media>,
    ) -> Result<(), Refusal> {
        let mut calls = self.calls.lock();
        let id = calls
            .by_id
            .values()
            .find(|c| {
                c.callee.session.id == from.id
                    && c.caller.name() == caller
                    && matches!(c.state, CallState::Ringing { until } if until > now)
            })
            .map(|c| c.id)
            .ok_or(Refusal::NotPending)?;
        let Some(media) = media else {
            let call = calls.by_id.remove(&id).expect("found");
            drop(calls);
            if call.transport == Transport::Relayed {
                self.close_relay(id);
            }
            call.caller
                .session
                .peer
                .deliver(&Event::CallRefused { by: &from.name });
            return Ok(());
        };
        let c = calls.by_id.get_mut(&id).expect("found");
        c.callee.media = media;
        c.state = CallState::Answered;
        let call = c.clone();
        drop(calls);
        if call.transport == Transport::Relayed {
            let peer = match leg_of(&call.callee) {
                Ok(LegSpec {
                    leg: Leg::Udp { peer },
                    ..
                }) => peer,
                _ => None,
            };
            if let Some(r) = self.relay() {
                r.answered(id, peer);
            }
        }
        self.tell_answered(&call);
        Ok(())
    }

    fn tell_answered(&self, call: &Call) {
        let (host, port) = endpoint_for(call, Side::Caller);
        call.caller.session.peer.deliver(&Event::CallAnswered {
            by: call.callee.name(),
            host: &host,
            port,
        });
    }

    /// `from` hangs up on `other` (an answered call, or a ringing one either
    /// way): the other side hears it. False when there was no such call.
    pub fn hang_up(&self, from: &Session, other: &str) -> bool {
        let call = {
            let mut calls = self.calls.lock();
            let Some(id) = calls
                .by_id
                .values()
                .find(|c| c.involves(from.id) && c.other(from.id).name() == other)
                .map(|c| c.id)
            else {
                return false;
            };
            calls.by_id.remove(&id).expect("found")
        };
        if call.transport == Transport::Relayed {
            self.close_relay(call.id);
        }
        call.other(from.id)
            .session
            .peer
            .deliver(&Event::CallEnded { by: &from.name });
        true
    }

    /// Cluster mode: `callee`, the stand-in of a babel user of another
    /// node, connects from `ip` to the relay of its relayed call from
    /// local user `caller` (its node tells before it rings).
    pub fn remote_callee_at(&self, callee: &Session, caller: &str, ip: IpAddr) {
        if callee.remote.is_none() {
            return;
        }
        let id = self
            .calls
            .lock()
            .by_id
            .values()
            .find(|c| {
                c.callee.session.id == callee.id
                    && c.caller.name() == caller
                    && c.caller.session.remote.is_none()
                    && c.transport == Transport::Relayed
            })
            .map(|c| c.id);
        if let (Some(id), Some(r)) = (id, self.relay()) {
            r.callee_at(id, ip);
        }
    }

    /// The relay accepted the babel callee's voice connection: the call is
    /// answered (the caller hears it).
    pub fn relay_answered(&self, id: CallId) {
        let call = {
            let mut calls = self.calls.lock();
            let Some(c) = calls.by_id.get_mut(&id) else {
                return;
            };
            if c.state == CallState::Answered {
                return;
            }
            c.state = CallState::Answered;
            c.clone()
        };
        self.tell_answered(&call);
        let callee = &call.callee.session;
        if callee.remote.is_some() {
            // Its node keeps a half of this call that only hears of the
            // answer from here.
            callee.peer.deliver(&Event::CallTaken {
                caller: call.caller.name(),
            });
        }
    }

    /// Cluster mode: `callee`, a local babel user, answered the relayed
    /// call of `caller` (the stand-in of a user of another node) by
    /// connecting to that node's relay, which says so. This node's half of
    /// the call is answered; nobody is told (both parties already know).
    pub fn remote_call_taken(&self, caller: &Session, callee: &str) {
        if caller.remote.is_none() {
            return;
        }
        let mut calls = self.calls.lock();
        if let Some(c) = calls.by_id.values_mut().find(|c| {
            c.caller.session.id == caller.id
                && c.callee.name() == callee
                && c.callee.session.remote.is_none()
                && matches!(c.state, CallState::Ringing { .. })
        }) {
            c.state = CallState::Answered;
        }
    }

    /// The relay ended call `id` by itself: `left` closed its voice
    /// connection (or could not be reached), or, with None, the call went
    /// silent past the idle timeout. The others hear a hang-up.
    pub fn relay_ended(&self, id: CallId, left: Option<Side>) {
        let Some(call) = self.calls.lock().by_id.remove(&id) else {
            return;
        };
        self.close_relay(id);
        let (caller, callee) = (&call.caller.session, &call.callee.session);
        match left {
            Some(Side::Caller) => {
                callee.peer.deliver(&Event::CallEnded { by: &caller.name });
            }
            Some(Side::Callee) => {
                caller.peer.deliver(&Event::CallEnded { by: &callee.name });
                if callee.remote.is_some() {
                    // Its node drops its half of the call.
                    callee.peer.deliver(&Event::CallEnded { by: &caller.name });
                }
            }
            None => {
                callee.peer.deliver(&Event::CallEnded { by: &caller.name });
                caller.peer.deliver(&Event::CallEnded { by: &callee.name });
            }
        }
    }

    /// A session left: each call it was in ends. The other side hears a
    /// hang-up (147), or, for a call that was ringing it, a refusal (142 /
    /// CallRefused).
    pub(super) fn end_calls_of(&self, session: &Session) {
        let gone = self.calls.lock().take_of(session.id);
        for call in gone {
            if call.transport == Transport::Relayed {
                self.close_relay(call.id);
            }
            let other = call.other(session.id);
            let ringing_me = call.callee.session.id == session.id
                && matches!(call.state, CallState::Ringing { .. });
            if ringing_me {
                if call.answer_visible() {
                    other
                        .session
                        .peer
                        .deliver(&Event::CallRefused { by: &session.name });
                }
            } else {
                other
                    .session
                    .peer
                    .deliver(&Event::CallEnded { by: &session.name });
            }
        }
    }

    /// Ringing calls past their time end: both sides hear it, unless the
    /// server cannot know whether a peer-to-peer babel call was answered.
    pub(super) fn expire_calls(&self, now: Instant) {
        let gone = self.calls.lock().take_expired(now);
        for call in gone {
            if call.transport == Transport::Relayed {
                self.close_relay(call.id);
            }
            if call.answer_visible() {
                call.caller.session.peer.deliver(&Event::CallRefused {
                    by: call.callee.name(),
                });
                call.callee.session.peer.deliver(&Event::CallEnded {
                    by: call.caller.name(),
                });
            }
        }
    }

    /// Calls answered and not yet over.
    pub fn calls_answered(&self) -> usize {
        self.calls.lock().answered()
    }

    /// Every call (ringing or answered), for tests and the admin socket.
    pub fn calls(&self) -> Vec<Call> {
        let mut v: Vec<Call> = self.calls.lock().by_id.values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}
