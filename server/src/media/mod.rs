//! The server's media relay (docs/bridging.md, "The media relay"): for a
//! call the hub relays, an allocation bound to its two parties, that moves
//! voice between them and re-frames it between dialects (accounts UDP voice
//! packets, babel's TCP VoiceData) without transcoding. It sends only to
//! the parties of a call and never answers a packet.
//!
//! Threads: `cw-relay-rx` waits (mio, epoll) on every allocation's UDP
//! socket and hands a readable allocation to one of the `cw-relay-N`
//! workers through a bounded crossbeam channel (the worker is picked by call
//! id, so one call's packets keep their order); the worker drains that
//! socket and forwards. Each babel leg has a thread of its own
//! (`cw-relay-babel`: accept or dial, then read VoiceData), as every TCP
//! connection of the server does, and is counted in `max_connections`.
//! `cw-relay-sweep` ends answered calls gone silent.
//!
//! Locks: `calls` (the routing table, RwLock) and each leg's `peer`,
//! `babel` and `framing` are leaves, never held across a hub call, a send
//! or a channel send. Only the hub's calls (`open`, `answered`, `close`,
//! made with no hub lock held) change routing; the relay calls the hub back
//! (`relay_answered`, `relay_ended`) from its own threads, holding none of
//! its locks.

// The fuzz targets (and their run as tests) drive an allocation's
// re-framing without sockets.
#[cfg(any(test, feature = "fuzzing"))]
pub mod alloc;
#[cfg(not(any(test, feature = "fuzzing")))]
mod alloc;
mod babel;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::{Mutex, RwLock};
use std::os::fd::AsRawFd;

use crate::guard::{supervise, Fatal, Turn};
use crate::hub::{CallId, Hub, Leg as Plan, LegSpec, MediaRelay, Opened, RelayFull, Side};
use crate::metrics::{Metrics, RelayDrop};
use crate::net::{FlushPool, Registry};
use crate::pool::ThreadBudget;
use alloc::{Alloc, Kind, Leg, Out};

/// Readable allocations waiting for a worker, per worker; a full queue
/// leaves the datagrams in the socket until the next one arrives.
const QUEUE: usize = 4096;
const WORKERS: usize = 2;
/// The largest datagram read: one more than the largest voice packet, so a
/// bigger one shows as such and is dropped.
const MAX_DATAGRAM: usize = chinwag_proto::voice::MAX_MEDIA_PACKET + 1;
/// How often silent calls are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(200);
const WAKE: Token = Token(usize::MAX);
/// How long shutdown waits for babel leg threads.
const LEGS_GRACE: Duration = Duration::from_secs(5);

/// An allocation just made: itself, what each side is told, and the
/// listener of a babel callee's leg.
type Made = (Alloc, Opened, Option<(Side, TcpListener)>);

/// The relay's settings, from `Config::relay`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address its sockets bind to (the server's `bind`).
    pub bind: IpAddr,
    /// Allocations at once.
    pub max_calls: usize,
    /// Packets one call may carry per second, both directions together.
    pub packets_per_second: u32,
    /// An answered call with no packet this long is ended.
    pub idle_timeout: Duration,
    /// How long a babel callee may take to connect (a call rings no longer).
    pub ring_timeout: Duration,
}

/// What the relay's threads share.
struct Inner {
    set: Settings,
    hub: Weak<Hub>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    flush: Arc<FlushPool>,
    /// Every allocation, by call id (also its mio token).
    calls: RwLock<HashMap<CallId, Arc<Alloc>>>,
    poll: mio::Registry,
    /// A call to drain, or None: stop.
    workers: Vec<Sender<Option<Arc<Alloc>>>>,
    /// Dropped at stop, which wakes the sweep at once.
    stop_bell: Mutex<Option<Sender<()>>>,
    epoch: Instant,
    stop: AtomicBool,
    /// babel leg threads alive.
    legs: AtomicUsize,
    /// Where babel leg threads come from (`pool::ThreadBudget`).
    budget: Arc<ThreadBudget>,
    /// Calls whose leg of this side got no thread where the hub could not
    /// be told at once (inside a `MediaRelay` call): the sweep ends them.
    doomed: Mutex<Vec<(CallId, Side)>>,
    /// The outbound limit of a babel leg's queue.
    outbound_limit: usize,
    write_timeout: Duration,
}

/// The media relay. Dropping it stops it.
pub struct Relay {
    inner: Arc<Inner>,
    waker: Waker,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn get(&self, id: CallId) -> Option<Arc<Alloc>> {
        self.calls.read().get(&id).cloned()
    }

    /// The address a party is told to use: where the relay listens, as the
    /// party reaches the server.
    fn host_for(&self, spec: &LegSpec) -> IpAddr {
        if self.set.bind.is_unspecified() {
            spec.server_ip.unwrap_or(self.set.bind)
        } else {
            self.set.bind
        }
    }

    /// One unit from `side` of `a`: count it, then send what it becomes.
    fn carry(&self, a: &Alloc, side: Side, out: impl FnOnce() -> Out) {
        if !a.rate.admit(self.now_ms(), self.set.packets_per_second) {
            self.metrics.relay_dropped(RelayDrop::Rate);
            return;
        }
        a.last_ms.store(self.now_ms(), Ordering::Relaxed);
        match out() {
            Out::Udp(to, bytes) => {
                let sent = a
                    .udp
                    .as_ref()
                    .is_some_and(|u| u.send_to(&bytes, to).is_ok());
                if sent {
                    self.metrics.relayed(1);
                } else {
                    self.metrics.relay_dropped(RelayDrop::Full);
                }
            }
            Out::Babel(frame) => match a.babel_out(side) {
                Some(o) if o.enqueue(|b| b.extend_from_slice(&frame)) => self.metrics.relayed(1),
                Some(_) => self.metrics.relay_dropped(RelayDrop::Full),
                None => self.metrics.relay_dropped(RelayDrop::Unbridged),
            },
            Out::Drop(why) => self.metrics.relay_dropped(why),
        }
    }

    /// Read everything waiting on `a`'s socket (a worker's turn).
    fn drain(&self, a: &Alloc, buf: &mut [u8]) {
        let Some(sock) = &a.udp else { return };
        loop {
            let (n, from) = match sock.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors from an earlier send, and the like.
                Err(_) => continue,
            };
            if a.closed.load(Ordering::Acquire) {
                continue;
            }
            // Only from a party: anything else is dropped unanswered.
            let Some(side) = a.udp_side(from) else {
                self.metrics.relay_dropped(RelayDrop::Stray);
                continue;
            };
            if n >= buf.len() {
                self.metrics.relay_dropped(RelayDrop::Malformed);
                continue;
            }
            self.carry(a, side, || a.unit_from_udp(side, &buf[..n]));
        }
    }

    /// Remove allocation `id` and let go of everything it holds.
    fn release(&self, id: CallId) {
        let Some(a) = self.calls.write().remove(&id) else {
            return;
        };
        a.closed.store(true, Ordering::Release);
        if let Some(u) = &a.udp {
            let _ = self.poll.deregister(&mut SourceFd(&u.as_raw_fd()));
        }
        for leg in &a.legs {
            if let Some(end) = leg.babel.lock().take() {
                // babel's hang-up: the voice connection closes.
                end.out.close();
                let _ = end.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        self.metrics.relay_calls(-1);
    }

    fn tell_answered(&self, id: CallId) {
        if let Some(h) = self.hub.upgrade() {
            h.relay_answered(id);
        }
    }

    fn tell_ended(&self, id: CallId, left: Option<Side>) {
        match self.hub.upgrade() {
            Some(h) => h.relay_ended(id, left),
            None => self.release(id),
        }
    }
}

/// What a babel leg's connection takes, as any connection: a registry
/// admission, a thread of the budget, an outbound queue bounded by
/// `outbound_limit` and `write_timeout` and sent by the flush pool.
pub struct LegConns {
    pub registry: Arc<Registry>,
    pub flush: Arc<FlushPool>,
    pub budget: Arc<ThreadBudget>,
    pub outbound_limit: usize,
    pub write_timeout: Duration,
}

impl Relay {
    /// Start the relay's threads; `legs`: what its babel legs' connections
    /// take.
    /// Its threads run under `supervise`: a packet (or a tick) whose
    /// handling panics is dropped and the thread goes on; no shared state is
    /// left half updated by one (routing changes only in the hub's calls),
    /// so `fatal` is never asked to stop the server for that.
    pub fn start(
        set: Settings,
        hub: &Arc<Hub>,
        legs: LegConns,
        fatal: Fatal,
    ) -> io::Result<Arc<Relay>> {
        let LegConns {
            registry,
            flush,
            budget,
            outbound_limit,
            write_timeout,
        } = legs;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let mut senders = Vec::new();
        let mut receivers: Vec<Receiver<Option<Arc<Alloc>>>> = Vec::new();
        let (bell, rung) = bounded::<()>(0);
        for _ in 0..WORKERS {
            let (tx, rx) = bounded(QUEUE);
            senders.push(tx);
            receivers.push(rx);
        }
        let inner = Arc::new(Inner {
            set,
            hub: Arc::downgrade(hub),
            metrics: hub.metrics().clone(),
            registry,
            flush,
            calls: RwLock::new(HashMap::new()),
            poll: poll.registry().try_clone()?,
            workers: senders,
            stop_bell: Mutex::new(Some(bell)),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            legs: AtomicUsize::new(0),
            budget,
            doomed: Mutex::new(Vec::new()),
            outbound_limit,
            write_timeout,
        });
        let mut threads = Vec::new();
        {
            let (inner, fatal) = (inner.clone(), fatal.clone());
            threads.push(
                thread::Builder::new()
                    .name("cw-relay-rx".into())
                    .spawn(move || receive(inner, poll, fatal))?,
            );
        }
        for (i, rx) in receivers.into_iter().enumerate() {
            let (inner, fatal) = (inner.clone(), fatal.clone());
            let turn = move |buf: &mut Vec<u8>| -> Turn {
                let Ok(Some(a)) = rx.recv() else {
                    return Turn::Stop;
                };
                // Cleared however the turn ends, so a panic cannot leave
                // the call never scheduled again.
                let _clear = Unschedule(&a);
                inner.drain(&a, buf);
                a.scheduled.store(false, Ordering::Release);
                // What arrived while we finished: its wake-up saw us busy.
                inner.drain(&a, buf);
                Turn::Continue
            };
            threads.push(thread::Builder::new().name(format!("cw-relay-{i}")).spawn(
                move || {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    supervise("media relay worker", &fatal, || false, || turn(&mut buf));
                },
            )?);
        }
        {
            let inner = inner.clone();
            threads.push(thread::Builder::new().name("cw-relay-sweep".into()).spawn(
                move || {
                    supervise(
                        "media relay sweep",
                        &fatal,
                        || false,
                        || {
                            if inner.stop.load(Ordering::Acquire) {
                                return Turn::Stop;
                            }
                            // Every SWEEP_EVERY, or at once when stopping.
                            if let Err(RecvTimeoutError::Disconnected) =
                                rung.recv_timeout(SWEEP_EVERY)
                            {
                                return Turn::Stop;
                            }
                            sweep_once(&inner);
                            Turn::Continue
                        },
                    )
                },
            )?);
        }
        log::info!("media relay ready (calls at most {})", inner.set.max_calls);
        Ok(Arc::new(Relay {
            inner,
            waker,
            threads: Mutex::new(threads),
        }))
    }

    /// Allocations open now.
    pub fn calls(&self) -> usize {
        self.inner.calls.read().len()
    }

    /// Stop the threads and release every allocation (their babel
    /// connections close). Safe to call more than once.
    pub fn stop(&self) {
        if self.inner.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        let ids: Vec<CallId> = self.inner.calls.read().keys().copied().collect();
        for id in ids {
            self.inner.release(id);
        }
        let _ = self.waker.wake();
        self.inner.stop_bell.lock().take();
        for w in &self.inner.workers {
            let _ = w.send_timeout(None, Duration::from_secs(1));
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        let deadline = Instant::now() + LEGS_GRACE;
        while self.inner.legs.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Clears a call's `scheduled` flag when dropped.
struct Unschedule<'a>(&'a Alloc);

impl Drop for Unschedule<'_> {
    fn drop(&mut self) {
        self.0.scheduled.store(false, Ordering::Release);
    }
}

/// `cw-relay-rx`: hand each readable allocation to its worker.
fn receive(inner: Arc<Inner>, mut poll: Poll, fatal: Fatal) {
    let mut events = Events::with_capacity(1024);
    supervise(
        "media relay receiver",
        &fatal,
        || false,
        || {
            if inner.stop.load(Ordering::Acquire) {
                return Turn::Stop;
            }
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(500))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warn!("media relay: poll failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
                return Turn::Continue;
            }
            for ev in events.iter() {
                if ev.token() == WAKE {
                    continue;
                }
                let id = ev.token().0 as CallId;
                let Some(a) = inner.get(id) else { continue };
                if a.scheduled.swap(true, Ordering::AcqRel) {
                    continue;
                }
                let w = &inner.workers[id as usize % WORKERS];
                if w.try_send(Some(a.clone())).is_err() {
                    // Behind: the datagrams wait in the socket for the next one.
                    a.scheduled.store(false, Ordering::Release);
                }
            }
            Turn::Continue
        },
    );
}

/// One turn of `cw-relay-sweep`: end answered calls that went silent.
fn sweep_once(inner: &Inner) {
    let doomed = std::mem::take(&mut *inner.doomed.lock());
    for (id, side) in doomed {
        inner.tell_ended(id, Some(side));
    }
    let idle = inner.set.idle_timeout.as_millis() as u64;
    let now = inner.now_ms();
    let silent: Vec<CallId> = inner
        .calls
        .read()
        .values()
        .filter(|a| {
            a.answered.load(Ordering::Acquire)
                && now.saturating_sub(a.last_ms.load(Ordering::Relaxed)) > idle
        })
        .map(|a| a.id)
        .collect();
    for id in silent {
        log::info!("media relay: call {id} silent past the idle timeout, ended");
        inner.tell_ended(id, None);
    }
}

impl MediaRelay for Relay {
    fn open(&self, id: CallId, caller: LegSpec, callee: LegSpec) -> Result<Opened, RelayFull> {
        let inner = &self.inner;
        if inner.stop.load(Ordering::Acquire) || inner.calls.read().len() >= inner.set.max_calls {
            return Err(RelayFull);
        }
        let opened = (|| -> io::Result<Made> {
            let wants_udp = [&caller, &callee]
                .iter()
                .any(|s| matches!(s.leg, Plan::Udp { .. }));
            // A port the kernel draws, for this call only.
            let udp = if wants_udp {
                let u = std::net::UdpSocket::bind(SocketAddr::new(inner.set.bind, 0))?;
                u.set_nonblocking(true)?;
                Some(u)
            } else {
                None
            };
            let udp_port = match &udp {
                Some(u) => u.local_addr()?.port(),
                None => 0,
            };
            let mut listener = None;
            let mut told = [None, None];
            let mut legs = Vec::new();
            for (side, spec) in [(Side::Caller, &caller), (Side::Callee, &callee)] {
                let host = inner.host_for(spec);
                let (kind, peer) = match spec.leg {
                    Plan::Udp { peer } => {
                        told[alloc::index(side)] = Some(SocketAddr::new(host, udp_port));
                        (Kind::Udp, peer)
                    }
                    Plan::Dial { to } => (Kind::Dial(to), None),
                    Plan::Accept { from } => {
                        let l = TcpListener::bind(SocketAddr::new(inner.set.bind, 0))?;
                        l.set_nonblocking(true)?;
                        told[alloc::index(side)] =
                            Some(SocketAddr::new(host, l.local_addr()?.port()));
                        listener = Some((side, l));
                        (Kind::Accept(from.to_canonical()), None)
                    }
                };
                legs.push(Leg::new(kind, peer, rand::random(), rand::random()));
            }
            let callee_leg = legs.pop().expect("two legs");
            let caller_leg = legs.pop().expect("two legs");
            let a = Alloc::new(id, [caller_leg, callee_leg], udp, inner.now_ms());
            Ok((
                a,
                Opened {
                    caller: told[0],
                    callee: told[1],
                },
                listener,
            ))
        })();
        let (a, told, listener) = match opened {
            Ok(x) => x,
            Err(e) => {
                log::warn!("media relay: cannot open call {id}: {e}");
                return Err(RelayFull);
            }
        };
        let a = Arc::new(a);
        if let Some(u) = &a.udp {
            let fd = u.as_raw_fd();
            if let Err(e) =
                inner
                    .poll
                    .register(&mut SourceFd(&fd), Token(id as usize), Interest::READABLE)
            {
                log::warn!("media relay: cannot watch call {id}: {e}");
                return Err(RelayFull);
            }
        }
        inner.calls.write().insert(id, a.clone());
        inner.metrics.relay_calls(1);
        if let Some((side, l)) = listener {
            if !babel::spawn_accept(inner.clone(), a, side, l) {
                // No thread to take the callee: the call cannot be made.
                inner.release(id);
                return Err(RelayFull);
            }
        }
        Ok(told)
    }

    fn answered(&self, id: CallId, callee: Option<SocketAddr>) {
        let Some(a) = self.inner.get(id) else { return };
        if let Some(peer) = callee {
            let leg = a.leg(Side::Callee);
            if leg.kind == Kind::Udp {
                // Never the caller's own address: that would loop.
                let peer = alloc::canonical(peer);
                if *a.leg(Side::Caller).peer.read() != Some(peer) {
                    *leg.peer.write() = Some(peer);
                }
            }
        }
        a.last_ms.store(self.inner.now_ms(), Ordering::Relaxed);
        a.answered.store(true, Ordering::Release);
        // A babel caller is dialled once the callee is there.
        if let Kind::Dial(to) = a.leg(Side::Caller).kind {
            if !babel::spawn_dial(self.inner.clone(), a.clone(), Side::Caller, to) {
                // The hub is calling us: it hears of the end from the sweep.
                self.inner.doomed.lock().push((id, Side::Caller));
            }
        }
    }

    fn close(&self, id: CallId) {
        self.inner.release(id);
    }

    fn callee_at(&self, id: CallId, ip: IpAddr) {
        let Some(a) = self.inner.get(id) else { return };
        let leg = a.leg(Side::Callee);
        if matches!(leg.kind, Kind::Accept(from) if from.is_unspecified()) {
            *leg.peer.write() = Some(SocketAddr::new(ip.to_canonical(), 0));
        }
    }
}
