//! The rooms front-end (seed 003) over UDP: one socket, a receiving thread
//! handing datagrams to a small worker pool through a bounded crossbeam
//! channel, a timer thread, and a sending thread for what the hub delivers.
//! It only translates: `state.rs` keeps the clients, the reliability machine,
//! the return-routability gate and the per-address bounds (sans-IO); the
//! rooms themselves (public, private, members, invitations, who hears a
//! text) are the hub's. The state's lock is never held across a hub call or
//! a send: a request that needs the hub comes out of the state as a `Job`,
//! is carried out at the hub ([`perform`]) with no lock of ours, and its
//! answer goes back in. Each registered client holds an admission of the
//! server's connection registry, so it counts in `max_connections` and is
//! stopped with every connection at shutdown.
//!
//! A panic while handling one datagram (or one tick, or a kick, or a hub
//! event) is contained: the thread carries on, and the state, which the
//! panic may have left half updated behind its non-poisoning lock, is
//! repaired first (`Rooms::recover`: rebuilt from its users, the datagram's
//! sender dropped). Should the repair itself fail, the server stops loudly
//! (an error logged, the process aborted) rather than serve from a state it
//! cannot trust.

pub mod guard;
pub mod state;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{self as wire, Access, Body, Creation, Reason};
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::hub::{
    AccessRefusal, CreateRefusal, Dialect, Entry, Event, Hub, LoginError, Peer, Refusal, Session,
};
use crate::metrics::DropReason;
use crate::net::{Admission, Registry};
pub use state::Settings;
use state::{Cmd, Job, Output, Rooms, Verdict, Work};

/// Datagrams waiting for a worker; beyond this they are dropped, as the
/// network itself may drop them.
const INBOX: usize = 4096;
/// The socket's receive buffer asked for (the kernel caps it at
/// net.core.rmem_max, 4 MiB here).
const RECV_BUFFER: usize = 4 << 20;
/// How often the timer thread runs retransmissions and expiries.
const TICK: Duration = Duration::from_millis(20);
/// Outputs of hub deliveries waiting for the sending thread; beyond this
/// their first send is dropped (the reliability machine sends again).
const OUTBOX: usize = 4096;

/// A registered client, as the hub sees it: what the hub delivers (a text
/// in its room, an invitation, its room closing) is sent reliably through
/// the state; an operator's kick, or the server stopping (through the
/// registry), forgets the client (its next keep-alive is answered
/// "unknown", as after an idle expiry).
struct RoomsPeer {
    ctx: Weak<Ctx>,
    id: u8,
    addr: SocketAddr,
}

impl Peer for RoomsPeer {
    /// Called from any thread, possibly under a hub lock: the state's lock
    /// comes after every hub lock, and what it produces is handed to the
    /// sending thread, never sent (or logged out) here.
    fn deliver(&self, event: &Event<'_>) -> bool {
        let Some(ctx) = self.ctx.upgrade() else {
            return false;
        };
        let mut sent = false;
        ctx.contained(Some(self.addr), "a hub event", Later, || {
            let out = {
                let mut st = ctx.state.lock();
                sent = st.event(Instant::now(), self.id, self.addr, event);
                st.take_output()
            };
            ctx.later(out);
        });
        sent
    }

    fn disconnect(&self) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        ctx.contained(Some(self.addr), "a kick", Now, || {
            let out = {
                let mut st = ctx.state.lock();
                if st.kick(Instant::now(), self.id, self.addr) {
                    log::info!(
                        "rooms {}: client {} closed by an operator",
                        self.addr,
                        self.id
                    );
                }
                st.take_output()
            };
            ctx.carry_out(out);
        });
    }
}

impl crate::net::Member for RoomsPeer {
    fn shut(&self) {
        self.disconnect();
    }

    fn ip(&self) -> Option<IpAddr> {
        Some(self.addr.ip())
    }
}

/// A client's hold on the server: its hub session, and its admission in
/// the connection registry (released when the seat is dropped, after the
/// session's logout).
pub struct Seat {
    pub session: Arc<Session>,
    _admission: Option<Admission>,
}

/// Where a contained piece of work's output goes after a panic.
#[derive(Clone, Copy)]
enum Carry {
    /// The calling thread holds no lock: carry it out here.
    Now,
    /// The calling thread may hold a hub lock: hand it to the sender.
    Later,
}
use Carry::{Later, Now};

/// Carry out a rooms request at the hub, as `session`: the answer to send
/// (None for an invitation's answer, which is an answer itself).
pub fn perform(hub: &Hub, session: &Arc<Session>, cmd: Cmd) -> Option<Body> {
    let now = Instant::now();
    let access =
        |change, r: Result<(crate::hub::RoomMode, Vec<crate::hub::RoomPeer>), AccessRefusal>| {
            match r {
                Ok((mode, peers)) => {
                    // The wire has 4 bytes for an address: IPv6 clients cannot be
                    // listed (v4-mapped ones are IPv4 here).
                    let peers = peers
                        .into_iter()
                        .filter_map(|p| match guard::canonical(p.addr.ip()) {
                            IpAddr::V4(ip) => Some(wire::Peer {
                                ip,
                                port: p.addr.port(),
                                name: p.name,
                            }),
                            IpAddr::V6(_) => None,
                        })
                        .collect();
                    Body::access_answer(change, state::mode_of(mode), Access::Granted, peers)
                }
                Err(why) => {
                    let status = match why {
                        AccessRefusal::NoSuchRoom => Access::NoSuchRoom,
                        AccessRefusal::Full => Access::Full,
                    };
                    let mode = wire::Mode::Centralised;
                    Body::access_answer(change, mode, status, Vec::new())
                }
            }
        };
    Some(match cmd {
        Cmd::Create { mode, name, max } => {
            let mode = match mode {
                wire::Mode::Centralised => crate::hub::RoomMode::Centralised,
                wire::Mode::Decentralised => crate::hub::RoomMode::Decentralised,
            };
            let made = if wire::valid_room_name(&name) {
                hub.room_create(session, mode, &name, max)
            } else {
                Err(CreateRefusal::BadName)
            };
            match made {
                Ok(room) => Body::CreateAnswer {
                    status: Creation::Created,
                    room,
                },
                Err(why) => Body::CreateAnswer {
                    status: match why {
                        CreateRefusal::BadName => Creation::BadName,
                        CreateRefusal::NameExists => Creation::NameExists,
                        CreateRefusal::TooSmall => Creation::MaxTooSmall,
                    },
                    room: 0,
                },
            }
        }
        Cmd::ListRooms => Body::RoomList {
            rooms: hub
                .room_list()
                .into_iter()
                .map(|r| wire::RoomInfo {
                    mode: state::mode_of(r.mode),
                    name: r.name,
                    clients: r.members.min(u8::MAX as usize) as u8,
                })
                .collect(),
        },
        Cmd::Join { name, change } => access(change, hub.room_join(session, &name)),
        Cmd::ListClients { room } => Body::ClientList {
            names: hub.room_members(&room).unwrap_or_default(),
        },
        Cmd::Invite { user } => {
            hub.room_invite(now, session, &user);
            Body::InviteAck
        }
        Cmd::Text { chat } => match hub.room_text(session, &chat) {
            Ok(_) => Body::TextAck,
            Err(why) => Body::Error {
                refused: wire::kind::TEXTE,
                reason: match why {
                    Refusal::Limit => Reason::Limit,
                    _ => Reason::NoRecipient,
                },
            },
        },
        Cmd::Leave => Body::LeaveAnswer {
            ok: hub.room_leave(session),
        },
        Cmd::Answer { token, accept } => {
            hub.room_answer(now, session, token, accept);
            return None;
        }
    })
}

pub struct RoomsServer {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

struct Ctx {
    /// This context, for the peers it hands the hub.
    me: Weak<Ctx>,
    hub: Arc<Hub>,
    registry: Arc<Registry>,
    sock: UdpSocket,
    /// Bound to an IPv6 address: IPv4 peers are written as v4-mapped.
    v6: bool,
    state: Mutex<Rooms<Arc<Seat>>>,
    /// What hub deliveries produced, for the sending thread.
    outbox: Sender<Output<Arc<Seat>>>,
}

/// A UDP socket on `bind`; on "::" it also receives IPv4 (as v4-mapped
/// addresses), whatever the system's default.
fn bind_udp(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        s.set_only_v6(false)?;
    }
    // A text to a full room comes back as one acknowledgement per member at
    // once: the default buffer (about 200 KiB) drops most of a burst, and
    // every drop costs a retransmission T later. Capped by rmem_max.
    if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
        log::debug!("rooms: cannot set SO_RCVBUF: {e}");
    }
    s.bind(&bind.into())?;
    Ok(s.into())
}

impl RoomsServer {
    /// Bind `bind` and start the receiving thread, `workers` workers
    /// (`rooms_workers`) and the timer.
    pub fn start(
        hub: Arc<Hub>,
        registry: Arc<Registry>,
        bind: SocketAddr,
        settings: Settings,
        workers: usize,
    ) -> std::io::Result<RoomsServer> {
        let sock = bind_udp(bind)?;
        let addr = sock.local_addr()?;
        // Wake the receiver now and then so it notices a stop.
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let (outbox, later) = bounded::<Output<Arc<Seat>>>(OUTBOX);
        let ctx = Arc::new_cyclic(|me| Ctx {
            me: me.clone(),
            hub,
            registry,
            sock,
            v6: addr.is_ipv6(),
            state: Mutex::new(Rooms::new(settings, rand::random())),
            outbox,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<(SocketAddr, Vec<u8>)>(INBOX);
        let mut threads = Vec::new();
        {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            threads.push(thread::Builder::new().name("cw-rooms-tx".into()).spawn(
                move || loop {
                    match later.recv_timeout(Duration::from_millis(200)) {
                        Ok(out) => ctx.carry_out(out),
                        Err(_) if stop.load(Ordering::Acquire) => return,
                        Err(_) => {}
                    }
                },
            )?);
        }
        {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            threads.push(
                thread::Builder::new()
                    .name("cw-rooms-rx".into())
                    .spawn(move || {
                        // One byte more than the largest datagram: a longer
                        // one shows as such (and is answered "too long").
                        let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
                        while !stop.load(Ordering::Acquire) {
                            match ctx.sock.recv_from(&mut buf) {
                                Ok((n, from)) => {
                                    ctx.hub.metrics().rooms_inbox(tx.len());
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
        for i in 0..workers.max(1) {
            let (ctx, rx): (Arc<Ctx>, Receiver<_>) = (ctx.clone(), rx.clone());
            threads.push(thread::Builder::new().name(format!("cw-rooms-{i}")).spawn(
                move || {
                    for (from, d) in rx.iter() {
                        ctx.contained(Some(from), "a datagram", Now, || ctx.datagram(from, &d));
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
                        ctx.contained(None, "a tick", Now, || {
                            let out = {
                                let mut st = ctx.state.lock();
                                st.tick(Instant::now());
                                st.take_output()
                            };
                            ctx.carry_out(out);
                        });
                    }
                },
            )?);
        }
        log::info!("rooms listening on {addr}/udp");
        Ok(RoomsServer {
            addr,
            ctx,
            stop,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop the threads, then free every client's name and admission
    /// (the registry's `stop_all` has normally done it already).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let seats = self.ctx.state.lock().shutdown();
        for s in seats {
            self.ctx.hub.logout(&s.session);
        }
    }

    /// Clients registered now.
    pub fn online(&self) -> usize {
        self.ctx.state.lock().online()
    }
}

impl Drop for RoomsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Ctx {
    /// Run `work`, one unit of a rooms thread's work. A panic in it is
    /// contained: the state is repaired (`culprit`, the sender of the
    /// datagram at hand, dropped) and the thread goes on. A panic in the
    /// repair stops the server: nothing it would do next can be trusted.
    fn contained(
        &self,
        culprit: Option<SocketAddr>,
        what: &str,
        carry: Carry,
        work: impl FnOnce(),
    ) {
        let Err(p) = catch_unwind(AssertUnwindSafe(work)) else {
            return;
        };
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let from = culprit.map_or(String::new(), |a| format!(" from {a}"));
        log::error!(
            "rooms: {what}{from} panicked ({why}); repairing the state and dropping its sender"
        );
        let repaired = catch_unwind(AssertUnwindSafe(|| {
            let mut st = self.state.lock();
            st.recover(Instant::now(), culprit);
            st.take_output()
        }));
        match repaired {
            Ok(out) => match carry {
                Now => self.carry_out(out),
                Later => self.later(out),
            },
            Err(_) => {
                log::error!("rooms: the state could not be repaired after a panic; stopping");
                std::process::abort();
            }
        }
    }

    /// Hand what the state produced to the sending thread (the caller may
    /// hold a hub lock). A full outbox drops the sends only: the
    /// reliability machine sends them again; logouts are never dropped.
    fn later(&self, out: Output<Arc<Seat>>) {
        if out.datagrams.is_empty() && out.logouts.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.try_send(out) {
            let mut out = e.into_inner();
            out.datagrams.clear();
            self.hub.metrics().dropped(DropReason::RoomsInboxFull);
            if !out.logouts.is_empty() {
                // Rare (a panic's repair): wait for room, never lose a name.
                let _ = self.outbox.send_timeout(out, Duration::from_secs(1));
            }
        }
    }

    /// Send and log out what the state handed back; its lock is not held,
    /// nor any hub lock.
    fn carry_out(&self, out: Output<Arc<Seat>>) {
        let m = self.hub.metrics();
        for _ in 0..out.tally.registered {
            m.registered(Dialect::Rooms);
        }
        for _ in 0..out.tally.idle {
            m.dropped(DropReason::RoomsIdle);
        }
        for s in out.logouts {
            self.hub.logout(&s.session);
        }
        for (to, bytes) in out.datagrams {
            let to = match (self.v6, to.ip()) {
                (true, IpAddr::V4(v4)) => {
                    SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port())
                }
                _ => to,
            };
            if let Err(e) = chinwag_proto::eintr::retry(|| self.sock.send_to(&bytes, to)) {
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
        let (work, out) = {
            let mut st = self.state.lock();
            let w = st.datagram(Instant::now(), from, d);
            (w, st.take_output())
        };
        // Logouts first: a client registering again under its own name
        // must find that name free.
        self.carry_out(out);
        match work {
            None => {}
            Some(Work::Register(ticket)) => self.register(ticket),
            Some(Work::Job(job)) => self.job(job),
        }
    }

    /// A request for the hub's rooms: carried out with no lock of ours,
    /// then answered.
    fn job(&self, job: Job<Arc<Seat>>) {
        let Some(body) = perform(&self.hub, &job.session.session, job.cmd.clone()) else {
            return;
        };
        let out = {
            let mut st = self.state.lock();
            st.answered(Instant::now(), job, body);
            st.take_output()
        };
        // Through the sending thread too, after what the hub delivered for
        // this request (a text's copies go out before its REPONSE_TEXTE, as
        // a client that paces itself by the answers expects).
        self.later(out);
    }

    /// A registration: a seat in the registry, then the name at the hub.
    fn register(&self, ticket: state::Ticket) {
        let peer = Arc::new(RoomsPeer {
            ctx: self.me.clone(),
            id: ticket.id(),
            addr: ticket.from,
        });
        let mut unwinding = None;
        let verdict = match self.registry.admit_member(peer.clone()) {
            None => {
                self.hub.metrics().dropped(DropReason::ConnectionLimit);
                Verdict::Full
            }
            Some(admission) => {
                let entry = Entry {
                    endpoint: Some(ticket.from),
                    ..Entry::new(Dialect::Rooms, guard::canonical(ticket.from.ip()), peer)
                };
                match self.hub.login_with(&ticket.name, entry, |_| {}) {
                    Ok(session) => {
                        unwinding = Some(LogoutIfUnwinding(&self.hub, session.clone()));
                        Verdict::Welcome(Arc::new(Seat {
                            session,
                            _admission: Some(admission),
                        }))
                    }
                    Err(LoginError::Invalid) => Verdict::Invalid,
                    Err(_) => Verdict::Taken,
                }
            }
        };
        let out = {
            let mut st = self.state.lock();
            st.registered(Instant::now(), ticket, verdict);
            st.take_output()
        };
        self.carry_out(out);
        drop(unwinding);
    }
}

/// A name the hub gave a registration that a panic interrupts is given
/// back (the repair drops that client, had the state taken it in).
struct LogoutIfUnwinding<'a>(&'a Hub, Arc<Session>);

impl Drop for LogoutIfUnwinding<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.logout(&self.1);
        }
    }
}

#[cfg(test)]
mod tests;
