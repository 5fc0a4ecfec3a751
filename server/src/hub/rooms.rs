//! Rooms: the public room and the private rooms of seed 003, as hub state.
//! The public room is the hub's global chat (`Hub.global`): every chatos
//! session, and every session that takes part in rooms while it is in no
//! private room. Private rooms, their members and the invitations into them
//! live here; the rooms front-end only translates (names of at most 10 bytes,
//! room ids of one byte, NUM_SEQ of invitations). No I/O: the events to send
//! are returned and delivered by the hub after its locks are released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, Hub, Listeners, Refusal, Session, SessionId};

/// The public room's id (seed 003: ID_MESSAGERIE 0).
pub const PUBLIC: u8 = 0;
/// Private room ids are 1..=255 (one byte).
const LAST_ROOM_ID: u8 = 255;
/// How long an invitation can be accepted, whatever its retransmissions.
pub const INVITATION_TTL: Duration = Duration::from_secs(60);
/// Invitations kept per invitee (the oldest go first).
pub const INVITATIONS_KEPT: usize = 16;
/// Room names: 1..=50 bytes (seed 003 §4.3.3).
pub const MAX_ROOM_NAME: usize = 50;
/// Fewest members a room may be created for (seed 003 §5.2.3).
pub const MIN_ROOM_SIZE: u8 = 2;
/// Most members of a room (the id space of seed 003: 254 clients).
pub const MAX_ROOM_SIZE: u8 = 254;

/// Texts through the server, or peer to peer (seed 003's MODE bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    Centralised,
    Decentralised,
}

/// Why a room was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateRefusal {
    BadName,
    NameExists,
    TooSmall,
}

/// Why a room was not entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRefusal {
    NoSuchRoom,
    Full,
}

/// A private room as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub mode: RoomMode,
    pub name: String,
    pub members: usize,
}

/// A member of a decentralised room, for the others to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPeer {
    pub addr: SocketAddr,
    pub name: String,
}

struct Room {
    /// Never reused (ids are): an invitation names the room itself.
    uid: u64,
    name: String,
    mode: RoomMode,
    max: u8,
    members: BTreeMap<SessionId, Arc<Session>>,
    /// The most members it ever had: a room that had two or more and is
    /// down to one closes (§2.2); a new room alone with its creator does not.
    peak: usize,
}

struct Invitation {
    to: SessionId,
    room: u8,
    uid: u64,
    until: Instant,
}

/// A notice for a session once the locks are released.
pub(super) struct Closed {
    pub to: Arc<Session>,
    pub room: String,
}

/// The private rooms. Sans-IO; the hub holds it in a mutex (`Hub.rooms`)
/// taken after `global`.
#[derive(Default)]
pub struct RoomSet {
    rooms: HashMap<u8, Room>,
    /// Sessions in a private room (absent: in the public room, or none).
    member_of: HashMap<SessionId, u8>,
    invitations: HashMap<u64, Invitation>,
    by_invitee: HashMap<SessionId, VecDeque<u64>>,
    next_uid: u64,
    next_token: u64,
}

pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_NAME
}

impl RoomSet {
    fn by_name(&self, name: &str) -> Option<u8> {
        self.rooms
            .iter()
            .find(|(_, r)| r.name == name)
            .map(|(id, _)| *id)
    }

    /// Take `s` out of its private room, if any, into the public room (or
    /// nowhere when `back_to_public` is false: it is leaving). A room left
    /// empty goes; one left with one member after having had more closes,
    /// and that member goes back to the public room and is told.
    fn leave(
        &mut self,
        global: &mut Listeners,
        s: &Arc<Session>,
        back_to_public: bool,
        closed: &mut Vec<Closed>,
    ) {
        if let Some(rid) = self.member_of.remove(&s.id) {
            let room = self.rooms.get_mut(&rid).expect("member_of and rooms agree");
            room.members.remove(&s.id);
            if room.members.is_empty() {
                self.rooms.remove(&rid);
            } else if room.members.len() == 1 && room.peak >= 2 {
                let room = self.rooms.remove(&rid).expect("checked");
                let (&last_id, last) = room.members.iter().next().expect("one member");
                self.member_of.remove(&last_id);
                global.insert(last.clone());
                closed.push(Closed {
                    to: last.clone(),
                    room: room.name,
                });
            }
        }
        if back_to_public {
            global.insert(s.clone());
        } else {
            global.remove(s.id);
        }
    }

    /// Move `s` into private room `rid`.
    fn enter(
        &mut self,
        global: &mut Listeners,
        s: &Arc<Session>,
        rid: u8,
        closed: &mut Vec<Closed>,
    ) {
        if self.member_of.get(&s.id) == Some(&rid) {
            return;
        }
        self.leave(global, s, false, closed);
        let Some(room) = self.rooms.get_mut(&rid) else {
            global.insert(s.clone());
            return;
        };
        room.members.insert(s.id, s.clone());
        room.peak = room.peak.max(room.members.len());
        self.member_of.insert(s.id, rid);
    }

    fn forget_invitations_of(&mut self, s: SessionId) {
        if let Some(tokens) = self.by_invitee.remove(&s) {
            for t in tokens {
                self.invitations.remove(&t);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.invitations.retain(|_, i| i.until > now);
        let live = &self.invitations;
        self.by_invitee.retain(|_, q| {
            q.retain(|t| live.contains_key(t));
            !q.is_empty()
        });
    }

    /// Sessions in private rooms (for tests and checks).
    pub fn members(&self) -> usize {
        self.member_of.len()
    }

    /// The invariants: every member of a room says it is there, no private
    /// room is empty, every invitation is indexed by its invitee.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = 0;
        for (rid, r) in &self.rooms {
            if r.members.is_empty() {
                return Err(format!("private room {rid} is empty"));
            }
            for id in r.members.keys() {
                if self.member_of.get(id) != Some(rid) {
                    return Err(format!("{id} is in {rid} but member_of disagrees"));
                }
                seen += 1;
            }
        }
        if seen != self.member_of.len() {
            return Err(format!(
                "{seen} memberships for {} sessions",
                self.member_of.len()
            ));
        }
        let indexed: usize = self.by_invitee.values().map(VecDeque::len).sum();
        if indexed < self.invitations.len() {
            return Err("an invitation is not indexed by its invitee".into());
        }
        Ok(())
    }
}

impl Hub {
    fn tell_closed(&self, closed: Vec<Closed>) {
        for c in closed {
            c.to.peer.deliver(&Event::RoomClosed { room: &c.room });
        }
    }

    /// Create a private room named `name` and move `from` into it. Its id
    /// (1..=255) on success.
    pub fn room_create(
        &self,
        from: &Arc<Session>,
        mode: RoomMode,
        name: &str,
        max: u8,
    ) -> Result<u8, CreateRefusal> {
        if !valid_room_name(name) {
            return Err(CreateRefusal::BadName);
        }
        self.in_rooms(from, |global, rooms, online, closed| {
            if rooms.by_name(name).is_some() {
                return Err(CreateRefusal::NameExists);
            }
            if max < MIN_ROOM_SIZE {
                return Err(CreateRefusal::TooSmall);
            }
            if !online {
                return Err(CreateRefusal::BadName);
            }
            // All 255 ids in use: the seed has no better code.
            let rid = (1..=LAST_ROOM_ID)
                .find(|r| !rooms.rooms.contains_key(r))
                .ok_or(CreateRefusal::NameExists)?;
            rooms.next_uid += 1;
            let uid = rooms.next_uid;
            rooms.rooms.insert(
                rid,
                Room {
                    uid,
                    name: name.to_owned(),
                    mode,
                    max: max.min(MAX_ROOM_SIZE),
                    members: BTreeMap::new(),
                    peak: 0,
                },
            );
            rooms.enter(global, from, rid, closed);
            Ok(rid)
        })
    }

    /// Run `f` on the public room and the private rooms, locked in the
    /// hub's order (`users` read, so a logout cannot interleave; `global`;
    /// `rooms`), with whether `s` is still the session online under its
    /// name. Notices of rooms closed meanwhile are sent after the locks go.
    fn in_rooms<R>(
        &self,
        s: &Session,
        f: impl FnOnce(&mut Listeners, &mut RoomSet, bool, &mut Vec<Closed>) -> R,
    ) -> R {
        let mut closed = Vec::new();
        let r = {
            let users = self.users.read();
            let online = users.get(&s.name).is_some_and(|o| o.id == s.id);
            let mut global = self.global.write();
            let mut rooms = self.rooms.lock();
            f(&mut global, &mut rooms, online, &mut closed)
        };
        self.tell_closed(closed);
        r
    }

    /// The private rooms, sorted by name.
    pub fn room_list(&self) -> Vec<RoomInfo> {
        let rooms = self.rooms.lock();
        let mut v: Vec<RoomInfo> = rooms
            .rooms
            .values()
            .map(|r| RoomInfo {
                mode: r.mode,
                name: r.name.clone(),
                members: r.members.len(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Enter the private room `name` (DEMANDE_ACCES or CHANGER). Its mode
    /// and, for a decentralised room, where the other members are. Asking
    /// for one's own room changes nothing.
    pub fn room_join(
        &self,
        from: &Arc<Session>,
        name: &str,
    ) -> Result<(RoomMode, Vec<RoomPeer>), AccessRefusal> {
        self.in_rooms(from, |global, rooms, online, closed| {
            let rid = rooms.by_name(name).ok_or(AccessRefusal::NoSuchRoom)?;
            let room = &rooms.rooms[&rid];
            let mode = room.mode;
            if !room.members.contains_key(&from.id) && room.members.len() >= room.max as usize {
                return Err(AccessRefusal::Full);
            }
            if !online {
                return Err(AccessRefusal::NoSuchRoom);
            }
            rooms.enter(global, from, rid, closed);
            let peers = match mode {
                RoomMode::Decentralised => rooms.rooms[&rid]
                    .members
                    .values()
                    .filter(|m| m.id != from.id)
                    .filter_map(|m| {
                        Some(RoomPeer {
                            addr: m.endpoint?,
                            name: m.name.clone(),
                        })
                    })
                    .collect(),
                RoomMode::Centralised => Vec::new(),
            };
            Ok((mode, peers))
        })
    }

    /// Back to the public room (QUITTER). False when not in a private room.
    pub fn room_leave(&self, from: &Arc<Session>) -> bool {
        self.in_rooms(from, |global, rooms, online, closed| {
            if !rooms.member_of.contains_key(&from.id) || !online {
                return false;
            }
            rooms.leave(global, from, true, closed);
            true
        })
    }

    /// The names of the rooms users in room `name` ("" is the public room,
    /// where only sessions that take part in rooms are listed: seed 003
    /// names are rooms names). None when there is no such room.
    pub fn room_members(&self, name: &str) -> Option<Vec<String>> {
        if name.is_empty() {
            let global = self.global.read();
            return Some(
                global
                    .sessions
                    .iter()
                    .filter(|s| s.reach().rooms)
                    .map(|s| s.name.clone())
                    .collect(),
            );
        }
        let rooms = self.rooms.lock();
        let rid = rooms.by_name(name)?;
        Some(
            rooms.rooms[&rid]
                .members
                .values()
                .map(|s| s.name.clone())
                .collect(),
        )
    }

    /// The private room `s` is in, if any: (id, name).
    pub fn room_of(&self, s: &Session) -> Option<(u8, String)> {
        let rooms = self.rooms.lock();
        let rid = *rooms.member_of.get(&s.id)?;
        Some((rid, rooms.rooms[&rid].name.clone()))
    }

    /// `from`, in a private room, invites `target` (online, taking part in
    /// rooms, elsewhere). The invitee hears `RoomInvitation`; false when
    /// nothing was sent.
    pub fn room_invite(&self, now: Instant, from: &Session, target: &str) -> bool {
        let Some(t) = self
            .online(target)
            .filter(|t| t.reach().rooms && t.id != from.id)
        else {
            return false;
        };
        let (token, mode, room) = {
            let mut rooms = self.rooms.lock();
            let Some(&rid) = rooms.member_of.get(&from.id) else {
                return false;
            };
            if rooms.member_of.get(&t.id) == Some(&rid) {
                return false;
            }
            let r = &rooms.rooms[&rid];
            let (uid, mode, name) = (r.uid, r.mode, r.name.clone());
            rooms.next_token += 1;
            let token = rooms.next_token;
            rooms.invitations.insert(
                token,
                Invitation {
                    to: t.id,
                    room: rid,
                    uid,
                    until: now + INVITATION_TTL,
                },
            );
            let q = rooms.by_invitee.entry(t.id).or_default();
            q.push_back(token);
            if q.len() > INVITATIONS_KEPT {
                if let Some(old) = q.pop_front() {
                    rooms.invitations.remove(&old);
                }
            }
            (token, mode, name)
        };
        t.peer.deliver(&Event::RoomInvitation {
            from: &from.name,
            room: &room,
            mode,
            token,
        });
        true
    }

    /// The invitee answers invitation `token`: once, within its time, into
    /// the very room it named (not one that reused its id), if it has space.
    pub fn room_answer(&self, now: Instant, from: &Arc<Session>, token: u64, accept: bool) {
        self.in_rooms(from, |global, rooms, online, closed| {
            let ok = rooms
                .invitations
                .get(&token)
                .is_some_and(|i| i.to == from.id && i.until > now);
            if !ok {
                return;
            }
            let inv = rooms.invitations.remove(&token).expect("checked");
            if let Some(q) = rooms.by_invitee.get_mut(&from.id) {
                q.retain(|t| *t != token);
            }
            if !accept || !online {
                return;
            }
            let fits = rooms.rooms.get(&inv.room).is_some_and(|r| {
                r.uid == inv.uid
                    && r.members.len() < r.max as usize
                    && !r.members.contains_key(&from.id)
            });
            if fits {
                rooms.enter(global, from, inv.room, closed);
            }
        })
    }

    /// A text from `from` to its room: the public room (every other member,
    /// chatos users included) or its centralised private room. Returns how
    /// many recipients took it. `NoRecipient` when nobody else is there or
    /// the room is decentralised (texts go peer to peer); `Limit` when
    /// every recipient refused it (too far behind).
    pub fn room_text(&self, from: &Session, text: &str) -> Result<usize, Refusal> {
        let ev = Event::Message {
            from: &from.name,
            text,
        };
        let private: Option<Vec<Arc<Session>>> = {
            let rooms = self.rooms.lock();
            match rooms.member_of.get(&from.id) {
                Some(rid) => {
                    let r = &rooms.rooms[rid];
                    if r.mode == RoomMode::Decentralised {
                        return Err(Refusal::NoRecipient);
                    }
                    Some(
                        r.members
                            .values()
                            .filter(|m| m.id != from.id)
                            .cloned()
                            .collect(),
                    )
                }
                None => None,
            }
        };
        let (others, took) = match private {
            Some(members) => (
                members.len(),
                members.iter().filter(|m| m.peer.deliver(&ev)).count(),
            ),
            None => {
                // Delivered under the read side of `global`, as a broadcast is.
                let list = self.global.read();
                let mut others = 0;
                let mut took = 0;
                for s in list.sessions.iter().filter(|s| s.id != from.id) {
                    others += 1;
                    took += s.peer.deliver(&ev) as usize;
                }
                (others, took)
            }
        };
        if others == 0 {
            return Err(Refusal::NoRecipient);
        }
        if took == 0 {
            return Err(Refusal::Limit);
        }
        self.metrics.message(from.dialect);
        self.metrics.delivered(took);
        Ok(took)
    }

    /// A session left: out of its room (which may close) and its
    /// invitations forgotten. Called by `logout` under `global`.
    pub(super) fn rooms_forget(
        &self,
        global: &mut Listeners,
        s: &Arc<Session>,
        closed: &mut Vec<Closed>,
    ) {
        let mut rooms = self.rooms.lock();
        rooms.leave(global, s, false, closed);
        rooms.forget_invitations_of(s.id);
    }

    pub(super) fn rooms_sweep(&self, now: Instant) {
        self.rooms.lock().sweep(now);
    }

    pub(super) fn rooms_closed(&self, closed: Vec<Closed>) {
        self.tell_closed(closed);
    }

    /// The room model's invariants (tests and fuzzing), and that every
    /// session in a private room is out of the public room.
    pub fn check_rooms(&self) -> Result<(), String> {
        let global = self.global.read();
        let rooms = self.rooms.lock();
        rooms.check()?;
        for id in rooms.member_of.keys() {
            if global.index.contains_key(id) {
                return Err(format!("{id} is in a private room and in the public one"));
            }
        }
        Ok(())
    }
}
