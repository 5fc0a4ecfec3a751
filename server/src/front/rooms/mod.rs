//! The rooms front-end (seed 003) over UDP: one socket, a receiving thread
//! handing datagrams to a small worker pool through a bounded crossbeam
//! channel, and a timer thread. This file only moves bytes and calls the
//! hub; the policy (users, rooms, invitations, reliability, abuse bounds)
//! is `state.rs`, which does no I/O, and it is never locked across a hub
//! call or a send.
//!
//! A panic while handling one datagram (or one tick, or a kick) is
//! contained: the thread carries on, and the state, which the panic may
//! have left half updated behind its non-poisoning lock, is repaired first
//! (`Rooms::recover`: rebuilt from its users, the datagram's sender
//! dropped). Should the repair itself fail, the server stops loudly
//! (an error logged, the process aborted) rather than serve from a state
//! it cannot trust.

pub mod guard;
pub mod state;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chinwag_proto::rooms as wire;
use crossbeam_channel::{bounded, Receiver};
use parking_lot::Mutex;

use crate::hub::{Dialect, Entry, Event, Hub, LoginError, Peer, Session};
use crate::metrics::DropReason;
pub use state::Settings;
use state::{Output, Rooms, Verdict};

/// Datagrams waiting for a worker; beyond this they are dropped, as the
/// network itself may drop them.
const INBOX: usize = 4096;
/// The socket's receive buffer asked for (the kernel caps it at
/// net.core.rmem_max, 4 MiB here).
const RECV_BUFFER: usize = 4 << 20;
/// How often the timer thread runs retransmissions and expiries.
const TICK: Duration = Duration::from_millis(20);

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
        ctx.contained(Some(self.addr), "a kick", || {
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
    sock: UdpSocket,
    /// Bound to an IPv6 address: IPv4 peers are written as v4-mapped.
    v6: bool,
    state: Mutex<Rooms<Arc<Session>>>,
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
        bind: SocketAddr,
        settings: Settings,
        workers: usize,
    ) -> std::io::Result<RoomsServer> {
        let sock = bind_udp(bind)?;
        let addr = sock.local_addr()?;
        // Wake the receiver now and then so it notices a stop.
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let ctx = Arc::new_cyclic(|me| Ctx {
            me: me.clone(),
            hub,
            sock,
            v6: addr.is_ipv6(),
            state: Mutex::new(Rooms::new(settings, rand::random())),
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
                        ctx.contained(Some(from), "a datagram", || ctx.datagram(from, &d));
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
                        ctx.contained(None, "a tick", || {
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

    /// Stop the threads, then free every client's name.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let sessions = self.ctx.state.lock().shutdown();
        for s in sessions {
            self.ctx.hub.logout(&s);
        }
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
    fn contained(&self, culprit: Option<SocketAddr>, what: &str, work: impl FnOnce()) {
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
            Ok(out) => self.carry_out(out),
            Err(_) => {
                log::error!("rooms: the state could not be repaired after a panic; stopping");
                std::process::abort();
            }
        }
    }

    /// Send and log out what the state handed back; its lock is not held.
    fn carry_out(&self, out: Output<Arc<Session>>) {
        let m = self.hub.metrics();
        for _ in 0..out.tally.registered {
            m.registered(Dialect::Rooms);
        }
        for _ in 0..out.tally.messages {
            m.message(Dialect::Rooms);
        }
        if out.tally.delivered > 0 {
            m.delivered(out.tally.delivered);
        }
        for _ in 0..out.tally.idle {
            m.dropped(DropReason::RoomsIdle);
        }
        for s in out.logouts {
            self.hub.logout(&s);
        }
        for (to, bytes) in out.datagrams {
            let to = match (self.v6, to.ip()) {
                (true, IpAddr::V4(v4)) => {
                    SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port())
                }
                _ => to,
            };
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
        let (ticket, out) = {
            let mut st = self.state.lock();
            let t = st.datagram(Instant::now(), from, d);
            (t, st.take_output())
        };
        // Logouts first: a client registering again under its own name
        // must find that name free.
        self.carry_out(out);
        let Some(ticket) = ticket else { return };
        let entry = Entry {
            dialect: Dialect::Rooms,
            ip: guard::canonical(ticket.from.ip()),
            peer: Arc::new(RoomsPeer {
                ctx: self.me.clone(),
                id: ticket.id(),
                addr: ticket.from,
            }),
            global_chat: false,
            presence: false,
            has_password: false,
        };
        let mut unwinding = None;
        let verdict = match self.hub.login_with(&ticket.name, entry, |_| {}) {
            Ok(session) => {
                unwinding = Some(LogoutIfUnwinding(&self.hub, session.clone()));
                Verdict::Welcome(session)
            }
            Err(LoginError::Invalid) => Verdict::Invalid,
            Err(_) => Verdict::Taken,
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
