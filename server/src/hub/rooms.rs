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

use super::{Event, Hub, Listeners, Refusal, Session, SessionId, ToHome};

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
    /// Cluster mode: an invitation into a room of another node (its home
    /// node and its own token there); `room` and `uid` are then unused.
    home: Option<(Arc<str>, u64)>,
}

/// Cluster mode: a local session in a private room of another node (its
/// home); texts go there, and it is out of this node's public room.
struct Away {
    session: Arc<Session>,
    node: Arc<str>,
    room: String,
    mode: RoomMode,
}

/// Cluster mode: a local session left a room of another node (moved,
/// left, logged out): that home is told once the locks are released.
pub(super) struct LeftAway {
    node: Arc<str>,
    room: String,
    name: String,
}

/// Rooms of other nodes a node lists at most (each node has 255 at most).
pub const REMOTE_ROOMS_KEPT: usize = 16_384;

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
    /// Cluster mode: local sessions in rooms of other nodes.
    away: HashMap<SessionId, Away>,
    /// Cluster mode: where stand-ins in rooms here send their datagrams,
    /// as their own node saw it (for decentralised rooms).
    endpoints: HashMap<SessionId, SocketAddr>,
    /// Homes to tell of sessions that left their rooms (drained by the hub).
    left_away: Vec<LeftAway>,
    /// Names of rooms of this node that closed: their cluster-wide claims
    /// go back (drained by the hub).
    gone: Vec<String>,
}

/// What the hub does once the rooms lock is released (cluster mode).
#[derive(Default)]
pub(super) struct AfterRooms {
    left: Vec<LeftAway>,
    gone: Vec<String>,
}

impl RoomSet {
    fn after(&mut self) -> AfterRooms {
        AfterRooms {
            left: std::mem::take(&mut self.left_away),
            gone: std::mem::take(&mut self.gone),
        }
    }
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
        if let Some(a) = self.away.remove(&s.id) {
            self.left_away.push(LeftAway {
                node: a.node,
                room: a.room,
                name: s.name.clone(),
            });
        }
        self.endpoints.remove(&s.id);
        if let Some(rid) = self.member_of.remove(&s.id) {
            let room = self.rooms.get_mut(&rid).expect("member_of and rooms agree");
            room.members.remove(&s.id);
            if room.members.is_empty() {
                let room = self.rooms.remove(&rid).expect("present");
                self.gone.push(room.name);
            } else if room.members.len() == 1 && room.peak >= 2 {
                let room = self.rooms.remove(&rid).expect("checked");
                self.gone.push(room.name.clone());
                let (&last_id, last) = room.members.iter().next().expect("one member");
                self.member_of.remove(&last_id);
                self.endpoints.remove(&last_id);
                // A stand-in is never in this node's public room.
                if last.remote.is_none() {
                    global.insert(last.clone());
                }
                closed.push(Closed {
                    to: last.clone(),
                    room: room.name,
                });
            }
        }
        if back_to_public && s.remote.is_none() {
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
            if s.remote.is_none() {
                global.insert(s.clone());
            }
            return;
        };
        room.members.insert(s.id, s.clone());
        room.peak = room.peak.max(room.members.len());
        self.member_of.insert(s.id, rid);
    }

    /// Where the members of room `rid` other than `but` are reached:
    /// their own end point, or a stand-in's as its node saw it.
    fn peers(&self, rid: u8, but: SessionId) -> Vec<RoomPeer> {
        self.rooms[&rid]
            .members
            .values()
            .filter(|m| m.id != but)
            .filter_map(|m| {
                Some(RoomPeer {
                    addr: m.endpoint.or_else(|| self.endpoints.get(&m.id).copied())?,
                    name: m.name.clone(),
                })
            })
            .collect()
    }

    /// Keep invitation `inv` under a new token, indexed by its invitee
    /// (the oldest of more than `INVITATIONS_KEPT` go). Its token.
    fn invite(&mut self, inv: Invitation) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        let to = inv.to;
        self.invitations.insert(token, inv);
        let q = self.by_invitee.entry(to).or_default();
        q.push_back(token);
        if q.len() > INVITATIONS_KEPT {
            if let Some(old) = q.pop_front() {
                self.invitations.remove(&old);
            }
        }
        token
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
        if let Some(id) = self.away.keys().find(|id| self.member_of.contains_key(id)) {
            return Err(format!("{id} is in a room here and in one of another node"));
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

    /// Tell the homes of rooms of other nodes that these sessions left,
    /// and give back the claims of this node's rooms that closed.
    fn tell_homes(&self, after: AfterRooms) {
        if after.left.is_empty() && after.gone.is_empty() {
            return;
        }
        if let Some(c) = self.cluster() {
            for name in &after.gone {
                self.unclaim_unused(c.as_ref(), name);
            }
            for l in after.left {
                c.room_to_home(
                    &l.node,
                    ToHome::Leave {
                        room: &l.room,
                        from: &l.name,
                    },
                );
            }
        }
    }

    /// Give back the claim of room `name` unless a room of this node has it
    /// (again): decided under the rooms lock, which a creation holds while
    /// it checks its claim and inserts the room.
    fn unclaim_unused(&self, c: &dyn super::ClusterLink, name: &str) {
        let rooms = self.rooms.lock();
        if rooms.by_name(name).is_none() {
            c.room_unclaim(name);
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
        let cluster = self.cluster();
        let mut claimed = false;
        if let Some(c) = &cluster {
            // A room of another node has the name, or the bus is down (the
            // name cannot be claimed cluster-wide): the seed has no "try
            // later" for CREER, and "exists" is the nearest.
            if from.remote.is_some() || !c.rooms_open() || c.room_home(name).is_some() {
                return Err(CreateRefusal::NameExists);
            }
            // The name is claimed in the bucket first (two nodes creating
            // one name at once: one wins).
            let here = self.rooms.lock().by_name(name).is_some();
            if !here && max >= MIN_ROOM_SIZE {
                if !c.room_claim(name) {
                    return Err(CreateRefusal::NameExists);
                }
                claimed = true;
            }
        }
        let made = self.in_rooms(from, |global, rooms, online, closed| {
            if rooms.by_name(name).is_some() {
                return Err(CreateRefusal::NameExists);
            }
            if max < MIN_ROOM_SIZE {
                return Err(CreateRefusal::TooSmall);
            }
            if cluster.as_ref().is_some_and(|c| !c.room_claim_held(name)) {
                // Given back meanwhile (a room of that name just closed).
                return Err(CreateRefusal::NameExists);
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
        });
        if let (Err(_), true, Some(c)) = (&made, claimed, &cluster) {
            self.unclaim_unused(c.as_ref(), name);
        }
        made
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
        let (r, left) = {
            let users = self.users.read();
            let online = users.get(&s.name).is_some_and(|o| o.id == s.id);
            let mut global = self.global.write();
            let mut rooms = self.rooms.lock();
            let r = f(&mut global, &mut rooms, online, &mut closed);
            (r, rooms.after())
        };
        self.tell_closed(closed);
        self.tell_homes(left);
        r
    }

    /// The private rooms, sorted by name: this node's and, in cluster
    /// mode, those other nodes list.
    pub fn room_list(&self) -> Vec<RoomInfo> {
        let mut v = self.local_room_list();
        if let Some(c) = self.cluster() {
            v.extend(c.remote_rooms());
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v.dedup_by(|a, b| a.name == b.name);
        }
        v
    }

    /// This node's private rooms, sorted by name.
    pub fn local_room_list(&self) -> Vec<RoomInfo> {
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
        self.room_join_at(from, name, None)
    }

    /// As [`Hub::room_join`]; `endpoint`: where a stand-in's datagrams
    /// come from, as its own node saw it (a stand-in has none here).
    pub fn room_join_at(
        &self,
        from: &Arc<Session>,
        name: &str,
        endpoint: Option<SocketAddr>,
    ) -> Result<(RoomMode, Vec<RoomPeer>), AccessRefusal> {
        let here = self.in_rooms(from, |global, rooms, online, closed| {
            let Some(rid) = rooms.by_name(name) else {
                return Err(None);
            };
            Self::join_here(global, rooms, online, closed, from, rid, endpoint).map_err(Some)
        });
        match here {
            Ok(got) => Ok(got),
            Err(Some(why)) => Err(why),
            Err(None) => self.room_join_away(from, name),
        }
    }

    /// A room of another node, asked through the bus (a local session
    /// only; waits for the home's answer, at most `bus_timeout_ms`).
    fn room_join_away(
        &self,
        from: &Arc<Session>,
        name: &str,
    ) -> Result<(RoomMode, Vec<RoomPeer>), AccessRefusal> {
        let c = self.cluster().ok_or(AccessRefusal::NoSuchRoom)?;
        if from.remote.is_some() {
            return Err(AccessRefusal::NoSuchRoom);
        }
        let node = c.room_home(name).ok_or(AccessRefusal::NoSuchRoom)?;
        // Already in it: a centralised room's answer says nothing more, a
        // decentralised one's lists the members now (the home answers a
        // member's access with its peers and changes nothing; clients ask
        // before each text, the protocol announcing no departure).
        if let Some(a) = self.rooms.lock().away.get(&from.id) {
            if a.room == name && *a.node == *node && a.mode == RoomMode::Centralised {
                return Ok((a.mode, Vec::new()));
            }
        }
        // `cw-bus-in` records the membership (`room_remote_joined`) before
        // it hands over the answer, so a text of the room that follows the
        // answer on the bus finds the member in.
        let (mode, peers) = c.room_join(&node, name, &from.name, from.endpoint)?;
        let kept = self
            .rooms
            .lock()
            .away
            .get(&from.id)
            .is_some_and(|a| a.room == name && *a.node == *node);
        if !kept {
            c.room_to_home(
                &node,
                ToHome::Leave {
                    room: name,
                    from: &from.name,
                },
            );
            return Err(AccessRefusal::NoSuchRoom);
        }
        Ok((mode, peers))
    }

    fn join_here(
        global: &mut Listeners,
        rooms: &mut RoomSet,
        online: bool,
        closed: &mut Vec<Closed>,
        from: &Arc<Session>,
        rid: u8,
        endpoint: Option<SocketAddr>,
    ) -> Result<(RoomMode, Vec<RoomPeer>), AccessRefusal> {
        {
            let room = &rooms.rooms[&rid];
            let mode = room.mode;
            if !room.members.contains_key(&from.id) && room.members.len() >= room.max as usize {
                return Err(AccessRefusal::Full);
            }
            if !online {
                return Err(AccessRefusal::NoSuchRoom);
            }
            rooms.enter(global, from, rid, closed);
            if let Some(at) = endpoint.filter(|_| from.remote.is_some()) {
                rooms.endpoints.insert(from.id, at);
            }
            let peers = match mode {
                RoomMode::Decentralised => rooms.peers(rid, from.id),
                RoomMode::Centralised => Vec::new(),
            };
            Ok((mode, peers))
        }
    }

    /// Back to the public room (QUITTER). False when not in a private room.
    pub fn room_leave(&self, from: &Arc<Session>) -> bool {
        self.in_rooms(from, |global, rooms, online, closed| {
            let in_one =
                rooms.member_of.contains_key(&from.id) || rooms.away.contains_key(&from.id);
            if !in_one || !online {
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
        let here = {
            let rooms = self.rooms.lock();
            rooms.by_name(name).map(|rid| {
                rooms.rooms[&rid]
                    .members
                    .values()
                    .map(|s| s.name.clone())
                    .collect()
            })
        };
        // A room of another node: the members its home lists.
        here.or_else(|| self.cluster()?.remote_room_members(name))
    }

    /// This node's private rooms with their members' names (what a home
    /// lists on the bus, cluster mode).
    pub fn local_rooms_detail(&self) -> Vec<(String, RoomMode, Vec<String>)> {
        let rooms = self.rooms.lock();
        rooms
            .rooms
            .values()
            .map(|r| {
                let names = r.members.values().map(|s| s.name.clone()).collect();
                (r.name.clone(), r.mode, names)
            })
            .collect()
    }

    /// The name of the private room `s` is in, this node's or (cluster
    /// mode) another node's.
    pub fn room_name_of(&self, s: &Session) -> Option<String> {
        let rooms = self.rooms.lock();
        if let Some(a) = rooms.away.get(&s.id) {
            return Some(a.room.clone());
        }
        let rid = rooms.member_of.get(&s.id)?;
        Some(rooms.rooms[rid].name.clone())
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
        // A stand-in (cluster mode) is invited through its node, which
        // tells its user (docs/scaling.md).
        let Some(t) = self
            .online(target)
            .filter(|t| t.reach().rooms && t.id != from.id)
            .filter(|t| t.remote.is_none() || self.cluster().is_some())
        else {
            return false;
        };
        let (token, mode, room) = {
            let mut rooms = self.rooms.lock();
            if let Some(a) = rooms.away.get(&from.id) {
                // In a room of another node: its home invites.
                let (node, room) = (a.node.clone(), a.room.clone());
                drop(rooms);
                let Some(c) = self.cluster() else {
                    return false;
                };
                let msg = ToHome::Invite {
                    room: &room,
                    from: &from.name,
                    to: target,
                };
                return c.room_to_home(&node, msg);
            }
            let Some(&rid) = rooms.member_of.get(&from.id) else {
                return false;
            };
            if rooms.member_of.get(&t.id) == Some(&rid) {
                return false;
            }
            let r = &rooms.rooms[&rid];
            let (uid, mode, name) = (r.uid, r.mode, r.name.clone());
            let token = rooms.invite(Invitation {
                to: t.id,
                room: rid,
                uid,
                until: now + INVITATION_TTL,
                home: None,
            });
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
        self.room_answer_at(now, from, token, accept, None);
    }

    /// As [`Hub::room_answer`]; `endpoint`: a stand-in's, as its node saw
    /// it. True when `from` entered a room of this node. An invitation
    /// into a room of another node is answered there (cluster mode).
    pub fn room_answer_at(
        &self,
        now: Instant,
        from: &Arc<Session>,
        token: u64,
        accept: bool,
        endpoint: Option<SocketAddr>,
    ) -> bool {
        let mut away = None;
        let entered = self.in_rooms(from, |global, rooms, online, closed| {
            let ok = rooms
                .invitations
                .get(&token)
                .is_some_and(|i| i.to == from.id && i.until > now);
            if !ok {
                return false;
            }
            let inv = rooms.invitations.remove(&token).expect("checked");
            if let Some(q) = rooms.by_invitee.get_mut(&from.id) {
                q.retain(|t| *t != token);
            }
            if let Some(home) = inv.home {
                away = Some(home);
                return false;
            }
            if !accept || !online {
                return false;
            }
            let fits = rooms.rooms.get(&inv.room).is_some_and(|r| {
                r.uid == inv.uid
                    && r.members.len() < r.max as usize
                    && !r.members.contains_key(&from.id)
            });
            if fits {
                rooms.enter(global, from, inv.room, closed);
                if let Some(at) = endpoint.filter(|_| from.remote.is_some()) {
                    rooms.endpoints.insert(from.id, at);
                }
            }
            fits
        });
        if let (Some((node, token)), Some(c)) = (away, self.cluster()) {
            c.room_to_home(
                &node,
                ToHome::Answer {
                    from: &from.name,
                    token,
                    accept,
                    endpoint: from.endpoint,
                },
            );
        }
        entered
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
        let private: Option<(String, Vec<Arc<Session>>)> = {
            let rooms = self.rooms.lock();
            if let Some(a) = rooms.away.get(&from.id) {
                // A room of another node: its home forwards the text.
                if a.mode == RoomMode::Decentralised {
                    return Err(Refusal::NoRecipient);
                }
                let (node, room) = (a.node.clone(), a.room.clone());
                drop(rooms);
                let c = self.cluster().ok_or(Refusal::NoRecipient)?;
                let to_home = ToHome::Text {
                    room: &room,
                    from: &from.name,
                    text,
                };
                if !c.room_to_home(&node, to_home) {
                    return Err(Refusal::Limit);
                }
                self.metrics.message(from.dialect);
                return Ok(1);
            }
            match rooms.member_of.get(&from.id) {
                Some(rid) => {
                    let r = &rooms.rooms[rid];
                    if r.mode == RoomMode::Decentralised {
                        return Err(Refusal::NoRecipient);
                    }
                    Some((
                        r.name.clone(),
                        r.members
                            .values()
                            .filter(|m| m.id != from.id)
                            .cloned()
                            .collect(),
                    ))
                }
                None => None,
            }
        };
        let (others, took) = match private {
            Some((room, members)) => {
                // Its own event: a stand-in forwards it to its node (a
                // `Message` is a public-room text, which crosses once).
                let ev = Event::RoomMessage {
                    from: &from.name,
                    room: &room,
                    text,
                };
                (
                    members.len(),
                    members.iter().filter(|m| m.peer.deliver(&ev)).count(),
                )
            }
            None => {
                // Delivered under the read side of `global`, as a broadcast is.
                let list = self.global.read();
                let mut others = 0;
                let mut took = 0;
                for s in list.sessions.iter().filter(|s| s.id != from.id) {
                    others += 1;
                    took += s.peer.deliver(&ev) as usize;
                }
                drop(list);
                if let Some(c) = self.cluster() {
                    // Other nodes' listeners: one bus message, counted once.
                    c.public_text(&from.name, text);
                    others += 1;
                    took += 1;
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
    ) -> AfterRooms {
        let mut rooms = self.rooms.lock();
        rooms.leave(global, s, false, closed);
        rooms.forget_invitations_of(s.id);
        rooms.after()
    }

    pub(super) fn rooms_left(&self, after: AfterRooms) {
        self.tell_homes(after);
    }

    pub(super) fn rooms_sweep(&self, now: Instant) {
        self.rooms.lock().sweep(now);
    }

    pub(super) fn rooms_closed(&self, closed: Vec<Closed>) {
        self.tell_closed(closed);
    }

    // ---- cluster mode: a member's node (rooms of other nodes) ----

    /// Home `node` let local `s` into its room `room` (a join it asked
    /// for, or an invitation accepted there).
    pub fn room_remote_joined(&self, s: &Arc<Session>, node: &str, room: &str, mode: RoomMode) {
        self.in_rooms(s, |global, rooms, online, closed| {
            let already = rooms
                .away
                .get(&s.id)
                .is_some_and(|a| &*a.node == node && a.room == room);
            if !online || already {
                return;
            }
            rooms.leave(global, s, false, closed);
            rooms.away.insert(
                s.id,
                Away {
                    session: s.clone(),
                    node: node.into(),
                    room: room.to_owned(),
                    mode,
                },
            );
        })
    }

    /// Home `node` closed its room `room` with local `s` in it (its last
    /// member, or the home died): back to the public room, told. False
    /// when `s` is not in that room (the envelope is refused).
    pub fn room_remote_closed(&self, s: &Arc<Session>, node: &str, room: &str) -> bool {
        self.in_rooms(s, |global, rooms, online, closed| {
            let there = rooms
                .away
                .get(&s.id)
                .is_some_and(|a| &*a.node == node && a.room == room);
            if !there {
                return false;
            }
            rooms.away.remove(&s.id);
            if online {
                global.insert(s.clone());
                closed.push(Closed {
                    to: s.clone(),
                    room: room.to_owned(),
                });
            }
            true
        })
    }

    /// Every local session in a room of node `node` (found dead): its
    /// rooms are closed for them.
    pub fn rooms_home_gone(&self, node: &str) {
        let gone: Vec<(Arc<Session>, String)> = self
            .rooms
            .lock()
            .away
            .values()
            .filter(|a| &*a.node == node)
            .map(|a| (a.session.clone(), a.room.clone()))
            .collect();
        for (s, room) in gone {
            self.room_remote_closed(&s, node, &room);
        }
    }

    /// `from`'s text in room `room` of node `node`, for local `s`. False
    /// when `s` is not in that room (the envelope is refused).
    pub fn room_remote_message(
        &self,
        s: &Session,
        node: &str,
        room: &str,
        from: &str,
        text: &str,
    ) -> bool {
        let there = self
            .rooms
            .lock()
            .away
            .get(&s.id)
            .is_some_and(|a| &*a.node == node && a.room == room);
        if there {
            let took = s.peer.deliver(&Event::RoomMessage { from, room, text });
            self.metrics.delivered(took as usize);
        }
        there
    }

    /// `from` invites local `s` into room `room` of node `node`, whose
    /// token there is `token`: kept here under a token of this node, as
    /// any invitation, and answered to the home.
    #[allow(clippy::too_many_arguments)]
    pub fn room_remote_invitation(
        &self,
        now: Instant,
        s: &Session,
        node: &str,
        room: &str,
        mode: RoomMode,
        from: &str,
        token: u64,
    ) -> bool {
        if !s.reach().rooms || s.remote.is_some() {
            return false;
        }
        let local = self.rooms.lock().invite(Invitation {
            to: s.id,
            room: PUBLIC,
            uid: 0,
            until: now + INVITATION_TTL,
            home: Some((node.into(), token)),
        });
        s.peer.deliver(&Event::RoomInvitation {
            from,
            room,
            mode,
            token: local,
        })
    }

    // ---- cluster mode: a room's home (members of other nodes) ----

    /// Stand-in `s` left room `room` here (its node says so). False when
    /// it is not in that room.
    pub fn room_member_leave(&self, s: &Arc<Session>, room: &str) -> bool {
        self.in_rooms(s, |global, rooms, _online, closed| {
            let there = rooms
                .member_of
                .get(&s.id)
                .is_some_and(|rid| rooms.rooms[rid].name == room);
            if there {
                rooms.leave(global, s, false, closed);
            }
            there
        })
    }

    /// Stand-in `s`'s text in room `room` here. `NotPending` when it is
    /// not in that room (the envelope is refused).
    pub fn room_member_text(&self, s: &Session, room: &str, text: &str) -> Result<usize, Refusal> {
        let there = {
            let rooms = self.rooms.lock();
            rooms
                .member_of
                .get(&s.id)
                .is_some_and(|rid| rooms.rooms[rid].name == room)
        };
        if !there {
            return Err(Refusal::NotPending);
        }
        self.room_text(s, text)
    }

    /// The mode and members (other than `but`) of room `room` here, for a
    /// stand-in that entered it by invitation.
    pub fn room_peers(&self, room: &str, but: &Session) -> Option<(RoomMode, Vec<RoomPeer>)> {
        let rooms = self.rooms.lock();
        let rid = rooms.by_name(room)?;
        let mode = rooms.rooms[&rid].mode;
        Some((mode, rooms.peers(rid, but.id)))
    }

    /// The room model's invariants (tests and fuzzing), and that every
    /// session in a private room is out of the public room.
    pub fn check_rooms(&self) -> Result<(), String> {
        let global = self.global.read();
        let rooms = self.rooms.lock();
        rooms.check()?;
        for id in rooms.member_of.keys().chain(rooms.away.keys()) {
            if global.index.contains_key(id) {
                return Err(format!("{id} is in a private room and in the public one"));
            }
        }
        Ok(())
    }
}
