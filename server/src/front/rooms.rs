//! The rooms front-end (seed 003) over UDP: one socket, a receiving thread
//! handing datagrams to a small worker pool through a bounded crossbeam
//! channel, and a timer thread for retransmissions and silent clients.
//! Names come from the shared hub; rooms, members and the reliability state
//! (answer replay, server-initiated retransmission) live here.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{
    self as wire, Access, Body, Creation, Message, Mode, Peer as WirePeer, Registration, RoomInfo,
};
use crossbeam_channel::{bounded, Receiver};
use parking_lot::Mutex;

use crate::hub::{Dialect, Entry, Event, Hub, Peer, Session};
use crate::metrics::DropReason;

/// Retransmission period and tries for what the server sends first (§3.2).
const RETRY_EVERY: Duration = Duration::from_millis(100);
const MAX_TRIES: u32 = 5;
/// How long an invitation can be accepted, whatever its retransmissions.
const INVITATION_TTL: Duration = Duration::from_secs(60);
/// Answers kept per client, replayed when a request is retransmitted.
const ANSWERS_KEPT: usize = 64;
/// Answers to first connections kept, by source address and NUM_SEQ.
const FIRST_ANSWERS_KEPT: usize = 1024;
/// Server messages awaiting acknowledgement, per client.
const OUTSTANDING_PER_USER: usize = 256;
/// Datagrams waiting for a worker; beyond this they are dropped, as the
/// network itself may drop them.
const INBOX: usize = 4096;
const WORKERS: usize = 2;
/// How often the timer thread looks at retransmissions and silence.
const TICK: Duration = Duration::from_millis(20);
/// The public room.
const PUBLIC: u8 = 0;

/// Hub events mean nothing to a rooms client yet; only its name counts.
/// An operator's kick forgets the client (its next keep-alive is answered
/// "unknown", as after an idle expiry).
struct RoomsPeer {
    ctx: Weak<Ctx>,
    id: u8,
    addr: SocketAddr,
}

impl Peer for RoomsPeer {
    fn deliver(&self, _event: &Event<'_>) {}

    fn disconnect(&self) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let mut st = ctx.state.lock();
        // The id may have been given to someone else since.
        if st.users.get(&self.id).is_some_and(|u| u.addr == self.addr) {
            log::info!(
                "rooms {}: client {} closed by an operator",
                self.addr,
                self.id
            );
            st.remove_user(self.id, &ctx.hub);
        }
    }
}

struct User {
    name: String,
    addr: SocketAddr,
    room: u8,
    last_seen: Instant,
    session: Arc<Session>,
    /// (NUM_SEQ, answer bytes), oldest first.
    answers: VecDeque<(u16, Vec<u8>)>,
    next_seq: u16,
    /// Room this user was invited to, the NUM_SEQ of that invitation, and
    /// until when an answer counts (longer than the retransmissions last).
    invited: Option<(u8, u16, Instant)>,
}

struct Room {
    name: String,
    mode: Mode,
    max: u8,
    members: BTreeSet<u8>,
}

struct Outstanding {
    addr: SocketAddr,
    bytes: Vec<u8>,
    tries: u32,
    next_at: Instant,
}

#[derive(Default)]
struct State {
    users: HashMap<u8, User>,
    by_addr: HashMap<SocketAddr, u8>,
    rooms: HashMap<u8, Room>,
    /// (user, server NUM_SEQ) -> message awaiting its acknowledgement.
    outstanding: HashMap<(u8, u16), Outstanding>,
    first_answers: HashMap<(SocketAddr, u16), Vec<u8>>,
    first_order: VecDeque<(SocketAddr, u16)>,
}

/// Datagrams to send once the state lock is released.
type Outbox = Vec<(SocketAddr, Vec<u8>)>;

pub struct RoomsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

struct Ctx {
    /// This context, for the peers it hands the hub.
    me: Weak<Ctx>,
    hub: Arc<Hub>,
    sock: UdpSocket,
    state: Mutex<State>,
    idle_timeout: Duration,
}

impl RoomsServer {
    pub fn start(
        hub: Arc<Hub>,
        bind: SocketAddr,
        idle_timeout: Duration,
    ) -> std::io::Result<RoomsServer> {
        let sock = UdpSocket::bind(bind)?;
        let addr = sock.local_addr()?;
        // Wake the receiver now and then so it notices a stop.
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut state = State::default();
        state.rooms.insert(
            PUBLIC,
            Room {
                name: String::new(),
                mode: Mode::Centralised,
                max: u8::MAX,
                members: BTreeSet::new(),
            },
        );
        let ctx = Arc::new_cyclic(|me| Ctx {
            me: me.clone(),
            hub,
            sock,
            state: Mutex::new(state),
            idle_timeout,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<(SocketAddr, Vec<u8>)>(INBOX);
        let mut threads = Vec::new();
        {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            threads.push(
                thread::Builder::new()
                    .name("cw-rooms-rx".into())
                    .spawn(move || {
                        let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
                        while !stop.load(Ordering::Acquire) {
                            match ctx.sock.recv_from(&mut buf) {
                                Ok((n, from)) => {
                                    if tx.try_send((from, buf[..n].to_vec())).is_err() {
                                        ctx.hub.metrics().dropped(DropReason::RoomsInboxFull);
                                        log::debug!(
                                            "rooms: inbox full, datagram from {from} dropped"
                                        );
                                    }
                                }
                                Err(_) => continue, // timeout: check the stop flag
                            }
                        }
                    })?,
            );
        }
        for i in 0..WORKERS {
            let (ctx, rx): (Arc<Ctx>, Receiver<_>) = (ctx.clone(), rx.clone());
            threads.push(thread::Builder::new().name(format!("cw-rooms-{i}")).spawn(
                move || {
                    for (from, d) in rx.iter() {
                        ctx.datagram(from, &d);
                    }
                },
            )?);
        }
        {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            threads.push(thread::Builder::new().name("cw-rooms-timer".into()).spawn(
                move || {
                    while !stop.load(Ordering::Acquire) {
                        thread::sleep(TICK);
                        ctx.tick(Instant::now());
                    }
                    ctx.forget_everyone();
                },
            )?);
        }
        log::info!("rooms listening on {addr}/udp");
        Ok(RoomsServer {
            addr,
            stop,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RoomsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(user: u8, seq: u16, body: Body) -> Vec<u8> {
    Message { user, seq, body }.to_bytes()
}

impl State {
    /// Queue a message the server starts (TEXTE forward, invitation): sent now
    /// and retransmitted until acknowledged or out of tries.
    fn send_reliably(
        &mut self,
        to: u8,
        body: Body,
        author: u8,
        now: Instant,
        out: &mut Outbox,
    ) -> Option<u16> {
        let user = self.users.get_mut(&to)?;
        user.next_seq = user.next_seq.wrapping_add(1);
        let seq = user.next_seq;
        let bytes = encode(author, seq, body);
        out.push((user.addr, bytes.clone()));
        if self.outstanding.keys().filter(|(u, _)| *u == to).count() >= OUTSTANDING_PER_USER {
            return Some(seq); // sent once, not retried: this client is far behind
        }
        self.outstanding.insert(
            (to, seq),
            Outstanding {
                addr: user.addr,
                bytes,
                tries: 1,
                next_at: now + RETRY_EVERY,
            },
        );
        Some(seq)
    }

    /// Take `id` out of its room; an emptied private room disappears.
    fn leave_room(&mut self, id: u8) {
        let Some(old) = self.users.get(&id).map(|u| u.room) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&old) {
            r.members.remove(&id);
            if old != PUBLIC && r.members.is_empty() {
                self.rooms.remove(&old);
            }
        }
    }

    fn move_to(&mut self, id: u8, room: u8) {
        // Already there (asking again for one's own room) changes nothing:
        // leaving first would delete a room whose only member is `id`.
        if self.users.get(&id).is_none_or(|u| u.room == room) || !self.rooms.contains_key(&room) {
            return;
        }
        self.leave_room(id);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.insert(id);
            self.users.get_mut(&id).expect("checked").room = room;
        } else {
            // The room was the one just emptied: fall back to public.
            self.rooms
                .get_mut(&PUBLIC)
                .expect("public room")
                .members
                .insert(id);
            self.users.get_mut(&id).expect("checked").room = PUBLIC;
        }
    }

    fn room_by_name(&self, name: &str) -> Option<u8> {
        if name.is_empty() {
            return Some(PUBLIC);
        }
        self.rooms
            .iter()
            .find(|(id, r)| **id != PUBLIC && r.name == name)
            .map(|(id, _)| *id)
    }

    /// The answer to a room access or change: join when there is room.
    fn join(&mut self, id: u8, name: &str) -> (Mode, Access, Vec<WirePeer>) {
        let Some(rid) = self.room_by_name(name).filter(|r| *r != PUBLIC) else {
            return (Mode::Centralised, Access::NoSuchRoom, Vec::new());
        };
        let room = &self.rooms[&rid];
        let mode = room.mode;
        if !room.members.contains(&id) && room.members.len() >= room.max as usize {
            return (mode, Access::Full, Vec::new());
        }
        self.move_to(id, rid);
        let peers = if mode == Mode::Decentralised {
            self.peers_of(rid, id)
        } else {
            Vec::new()
        };
        (mode, Access::Granted, peers)
    }

    /// Where the other members of a decentralised room listen (IPv4 only:
    /// the wire has 4 bytes for an address).
    fn peers_of(&self, rid: u8, except: u8) -> Vec<WirePeer> {
        self.rooms[&rid]
            .members
            .iter()
            .filter(|m| **m != except)
            .filter_map(|m| self.users.get(m))
            .filter_map(|u| match u.addr.ip() {
                IpAddr::V4(ip) => Some(WirePeer {
                    ip,
                    port: u.addr.port(),
                    name: u.name.clone(),
                }),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    fn remove_user(&mut self, id: u8, hub: &Hub) {
        self.leave_room(id);
        if let Some(u) = self.users.remove(&id) {
            self.by_addr.remove(&u.addr);
            hub.logout(&u.session);
        }
        self.outstanding.retain(|(u, _), _| *u != id);
    }
}

impl Ctx {
    fn send_all(&self, out: Outbox) {
        for (to, bytes) in out {
            if let Err(e) = self.sock.send_to(&bytes, to) {
                log::debug!("rooms: send to {to} failed: {e}");
            }
        }
    }

    fn datagram(&self, from: SocketAddr, d: &[u8]) {
        // A banned address gets silence, as a TCP one gets a closed socket.
        if self.hub.bans().ip_banned(from.ip()) {
            self.hub.metrics().dropped(DropReason::Banned);
            return;
        }
        let msg = match Message::decode(d) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("rooms {from}: datagram dropped: {e}");
                return;
            }
        };
        let mut out = Outbox::new();
        {
            let mut st = self.state.lock();
            self.handle(&mut st, from, msg, Instant::now(), &mut out);
        }
        self.send_all(out);
    }

    fn handle(
        &self,
        st: &mut State,
        from: SocketAddr,
        msg: Message,
        now: Instant,
        out: &mut Outbox,
    ) {
        let Message { user, seq, body } = msg;
        if let Body::Connexion { name: Some(name) } = &body {
            if user == wire::UNREGISTERED {
                return self.first_connection(st, from, seq, name, now, out);
            }
        }
        // Everything else must come from a registered client, from the
        // address it registered from: an id is not a password.
        let Some(&id) = st.by_addr.get(&from) else {
            match body {
                // Idempotent: an answer lost after we forgot the client.
                Body::Disconnect => out.push((
                    from,
                    encode(wire::SERVER, seq, Body::DisconnectAnswer { ok: true }),
                )),
                Body::Connexion { .. } => out.push((
                    from,
                    encode(wire::SERVER, seq, Body::KeptAlive { ok: false }),
                )),
                _ => log::debug!("rooms {from}: message from an unregistered address dropped"),
            }
            return;
        };
        if id != user {
            log::debug!("rooms {from}: claims id {user} but registered as {id}; dropped");
            return;
        }
        st.users
            .get_mut(&id)
            .expect("by_addr and users agree")
            .last_seen = now;
        // Acknowledgements of what the server sent first.
        if matches!(body, Body::TextAck | Body::InvitationAnswer { .. }) {
            st.outstanding.remove(&(id, seq));
            if let Body::InvitationAnswer { accept } = body {
                let u = st.users.get_mut(&id).expect("checked above");
                // Only an answer to the live invitation counts, once.
                let invited = match u.invited {
                    Some((rid, iseq, until)) if iseq == seq && until > now => {
                        u.invited = None;
                        Some(rid)
                    }
                    _ => None,
                };
                if let (true, Some(rid)) = (accept, invited) {
                    if st
                        .rooms
                        .get(&rid)
                        .is_some_and(|r| r.members.len() < r.max as usize)
                    {
                        st.move_to(id, rid);
                    }
                }
            }
            return;
        }
        // A retransmitted request gets the same answer, not a second effect.
        if let Some((_, bytes)) = st.users[&id].answers.iter().find(|(s, _)| *s == seq) {
            out.push((from, bytes.clone()));
            return;
        }
        let answer = self.request(st, id, body, now, out);
        let Some(answer) = answer else { return };
        let bytes = encode(wire::SERVER, seq, answer);
        out.push((from, bytes.clone()));
        if let Some(u) = st.users.get_mut(&id) {
            if u.answers.len() >= ANSWERS_KEPT {
                u.answers.pop_front();
            }
            u.answers.push_back((seq, bytes));
        }
    }

    fn first_connection(
        &self,
        st: &mut State,
        from: SocketAddr,
        seq: u16,
        name: &str,
        now: Instant,
        out: &mut Outbox,
    ) {
        if let Some(bytes) = st.first_answers.get(&(from, seq)) {
            out.push((from, bytes.clone()));
            return;
        }
        // A client that registers again from the same address starts over.
        if let Some(old) = st.by_addr.get(&from).copied() {
            st.remove_user(old, &self.hub);
        }
        let answer = |status, user| encode(wire::SERVER, seq, Body::Registered { status, user });
        let bytes = if !wire::valid_user_name(name) {
            answer(Registration::InvalidName, 0)
        } else if let Some(id) = (1..=254u8).find(|i| !st.users.contains_key(i)) {
            let entry = Entry {
                dialect: Dialect::Rooms,
                ip: from.ip(),
                peer: Arc::new(RoomsPeer {
                    ctx: self.me.clone(),
                    id,
                    addr: from,
                }),
                global_chat: false,
                presence: false,
                has_password: false,
            };
            match self.hub.login_with(name, entry, |_| {}) {
                Ok(session) => {
                    self.hub.metrics().registered(Dialect::Rooms);
                    st.users.insert(
                        id,
                        User {
                            name: name.to_owned(),
                            addr: from,
                            room: PUBLIC,
                            last_seen: now,
                            session,
                            answers: VecDeque::new(),
                            next_seq: 0,
                            invited: None,
                        },
                    );
                    st.by_addr.insert(from, id);
                    st.rooms
                        .get_mut(&PUBLIC)
                        .expect("public room")
                        .members
                        .insert(id);
                    log::info!("rooms {from}: {name} registered as {id}");
                    answer(Registration::Accepted, id)
                }
                Err(crate::hub::LoginError::Invalid) => answer(Registration::InvalidName, 0),
                Err(_) => answer(Registration::NameTaken, 0),
            }
        } else {
            // 254 clients: the id space is full.
            answer(Registration::NameTaken, 0)
        };
        if st.first_order.len() >= FIRST_ANSWERS_KEPT {
            if let Some(k) = st.first_order.pop_front() {
                st.first_answers.remove(&k);
            }
        }
        st.first_order.push_back((from, seq));
        st.first_answers.insert((from, seq), bytes.clone());
        out.push((from, bytes));
    }

    /// One request from registered client `id`; the answer, if it has one.
    fn request(
        &self,
        st: &mut State,
        id: u8,
        body: Body,
        now: Instant,
        out: &mut Outbox,
    ) -> Option<Body> {
        Some(match body {
            Body::Connexion { .. } => Body::KeptAlive { ok: true },
            Body::CreateRoom { mode, name, max } => {
                let status = if !wire::valid_room_name(&name) {
                    Creation::BadName
                } else if st.room_by_name(&name).is_some() {
                    Creation::NameExists
                } else if max < wire::MIN_ROOM_SIZE {
                    Creation::MaxTooSmall
                } else {
                    Creation::Created
                };
                let room = if status == Creation::Created {
                    match (1..=255u8).find(|r| !st.rooms.contains_key(r)) {
                        Some(rid) => {
                            let max = max.min(wire::MAX_ROOM_SIZE);
                            st.rooms.insert(
                                rid,
                                Room {
                                    name,
                                    mode,
                                    max,
                                    members: BTreeSet::new(),
                                },
                            );
                            st.move_to(id, rid);
                            rid
                        }
                        None => {
                            return Some(Body::CreateAnswer {
                                status: Creation::NameExists,
                                room: 0,
                            })
                        }
                    }
                } else {
                    0
                };
                Body::CreateAnswer { status, room }
            }
            Body::ListRooms => {
                let mut rooms: Vec<RoomInfo> = st
                    .rooms
                    .iter()
                    .filter(|(rid, _)| **rid != PUBLIC)
                    .map(|(_, r)| RoomInfo {
                        mode: r.mode,
                        name: r.name.clone(),
                        clients: r.members.len() as u8,
                    })
                    .collect();
                rooms.sort_by(|a, b| a.name.cmp(&b.name));
                Body::RoomList { rooms }
            }
            Body::AccessRoom { name } => {
                let (mode, status, peers) = st.join(id, &name);
                Body::AccessAnswer {
                    mode,
                    status,
                    peers,
                }
            }
            Body::ChangeRoom { name } => {
                let (mode, status, peers) = st.join(id, &name);
                Body::ChangeAnswer {
                    mode,
                    status,
                    peers,
                }
            }
            Body::ListClients { room } => {
                let names = st
                    .room_by_name(&room)
                    .map(|rid| {
                        st.rooms[&rid]
                            .members
                            .iter()
                            .filter_map(|m| st.users.get(m))
                            .map(|u| u.name.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                Body::ClientList { names }
            }
            Body::Invite { user } => {
                let inviter = &st.users[&id];
                let rid = inviter.room;
                let from = inviter.name.clone();
                let target = st
                    .users
                    .iter()
                    .find(|(_, u)| u.name == user)
                    .map(|(t, _)| *t);
                if let (Some(t), Some(room)) = (
                    target.filter(|t| *t != id),
                    st.rooms.get(&rid).filter(|_| rid != PUBLIC),
                ) {
                    let body = Body::Invitation {
                        from,
                        mode: room.mode,
                        room: room.name.clone(),
                    };
                    if let Some(iseq) = st.send_reliably(t, body, wire::SERVER, now, out) {
                        if let Some(u) = st.users.get_mut(&t) {
                            u.invited = Some((rid, iseq, now + INVITATION_TTL));
                        }
                    }
                }
                Body::InviteAck
            }
            Body::Text { chat } => {
                self.hub.metrics().message(Dialect::Rooms);
                let rid = st.users[&id].room;
                let room = &st.rooms[&rid];
                if room.mode == Mode::Centralised {
                    let members: Vec<u8> =
                        room.members.iter().copied().filter(|m| *m != id).collect();
                    self.hub.metrics().delivered(members.len());
                    for m in members {
                        st.send_reliably(m, Body::Text { chat: chat.clone() }, id, now, out);
                    }
                }
                Body::TextAck
            }
            Body::Leave => {
                let ok = st.users[&id].room != PUBLIC;
                if ok {
                    st.move_to(id, PUBLIC);
                }
                Body::LeaveAnswer { ok }
            }
            Body::Disconnect => {
                st.remove_user(id, &self.hub);
                // Gone: this answer cannot be cached with the user.
                return Some(Body::DisconnectAnswer { ok: true });
            }
            other => {
                log::debug!("rooms: client {id} sent server-only type {}", other.kind());
                return None;
            }
        })
    }

    fn tick(&self, now: Instant) {
        let mut out = Outbox::new();
        {
            let mut st = self.state.lock();
            let mut given_up = Vec::new();
            for (key, o) in st.outstanding.iter_mut() {
                if o.next_at <= now {
                    if o.tries >= MAX_TRIES {
                        given_up.push(*key);
                    } else {
                        o.tries += 1;
                        o.next_at = now + RETRY_EVERY;
                        out.push((o.addr, o.bytes.clone()));
                    }
                }
            }
            for k in given_up {
                st.outstanding.remove(&k);
            }
            let silent: Vec<u8> = st
                .users
                .iter()
                .filter(|(_, u)| now.duration_since(u.last_seen) > self.idle_timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in silent {
                log::info!("rooms: client {id} silent too long; dropped");
                self.hub.metrics().dropped(DropReason::RoomsIdle);
                st.remove_user(id, &self.hub);
            }
        }
        self.send_all(out);
    }

    fn forget_everyone(&self) {
        let mut st = self.state.lock();
        let ids: Vec<u8> = st.users.keys().copied().collect();
        for id in ids {
            st.remove_user(id, &self.hub);
        }
    }
}
