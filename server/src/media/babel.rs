//! A babel leg of a relayed call (seed 001's peer-to-peer voice, with the
//! server as the peer): the callee connects to the relay, which greets it
//! with ConnectionEstablished as the accepting side does; or the relay
//! dials the caller where its babel connection comes from and reads the
//! caller's ConnectionEstablished. Then VoiceData both ways; closing the
//! connection is babel's hang-up. One thread per leg, admitted in the
//! connection registry like any connection and started within the thread
//! budget (`pool::ThreadBudget`); a leg refused a thread is counted
//! (`thread_budget`) and its call refused or ended, never half made.

use std::io::{self, Read};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::babel::{Decoder, Frame};
use chinwag_proto::eintr;

use super::alloc::{Alloc, BabelEnd};
use super::Inner;
use crate::hub::Side;
use crate::metrics::{DropReason, RelayDrop};
use crate::net::{Admission, Outbound};

/// How often a ringing leg's listener looks for its callee.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Dialling a babel caller, and waiting for its ConnectionEstablished.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 4096;

/// Counts a leg thread alive until dropped (shutdown waits for them).
struct Alive(Arc<Inner>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.legs.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Start a leg's thread within the thread budget; false (counted) when it
/// was refused, and the caller ends the leg's call.
#[must_use]
fn spawn(inner: Arc<Inner>, what: impl FnOnce(&Arc<Inner>) + Send + 'static) -> bool {
    inner.legs.fetch_add(1, Ordering::AcqRel);
    let (budget, metrics) = (inner.budget.clone(), inner.metrics.clone());
    let alive = Alive(inner);
    let builder = thread::Builder::new()
        .name("cw-relay-babel".into())
        .stack_size(crate::net::CONN_STACK);
    // Refused: the closure, and `alive` with it, is dropped (counted back).
    match budget.spawn(builder, move || {
        let alive = alive;
        what(&alive.0);
    }) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("media relay: cannot start a babel leg: {e}");
            metrics.dropped(DropReason::ThreadBudget);
            false
        }
    }
}

/// How long a connection to a babel callee's leg waits for the address of
/// a callee of another node, if its node has not told it yet (the bus and
/// the callee race to this node).
const TOLD_WITHIN: Duration = Duration::from_secs(2);

/// Whether a connection from `at` is the babel callee of `side`: from its
/// address, or, for a callee of another node (`from` unspecified), from the
/// address its node tells.
fn expected(inner: &Inner, a: &Alloc, side: Side, from: IpAddr, at: IpAddr) -> bool {
    if !from.is_unspecified() {
        return at == from;
    }
    let until = Instant::now() + TOLD_WITHIN;
    loop {
        if let Some(told) = *a.leg(side).peer.read() {
            return told.ip() == at;
        }
        if Instant::now() > until
            || a.closed.load(Ordering::Acquire)
            || inner.stop.load(Ordering::Acquire)
        {
            return false;
        }
        thread::sleep(ACCEPT_POLL);
    }
}

/// Wait for the babel callee of `side` on `listener` (from its address
/// only), greet it, tell the hub the call is answered, and carry its voice.
pub(super) fn spawn_accept(
    inner: Arc<Inner>,
    a: Arc<Alloc>,
    side: Side,
    listener: TcpListener,
) -> bool {
    spawn(inner, move |inner| {
        let super::alloc::Kind::Accept(from) = a.leg(side).kind else {
            return;
        };
        let deadline = Instant::now() + inner.set.ring_timeout;
        let stream = loop {
            if a.closed.load(Ordering::Acquire) || inner.stop.load(Ordering::Acquire) {
                return;
            }
            if Instant::now() > deadline {
                return inner.tell_ended(a.id, Some(side));
            }
            match eintr::retry(|| listener.accept()) {
                Ok((s, at)) if expected(inner, &a, side, from, at.ip().to_canonical()) => break s,
                Ok((s, _)) => {
                    // Someone else found the port: closed at once.
                    inner.metrics.relay_dropped(RelayDrop::Stray);
                    let _ = s.shutdown(Shutdown::Both);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                Err(e) => {
                    log::debug!("media relay: call {}: accept failed: {e}", a.id);
                    thread::sleep(ACCEPT_POLL);
                }
            }
        };
        drop(listener);
        let _ = stream.set_nonblocking(false);
        let Some((end, admission)) = connected(inner, &a, side, stream) else {
            return inner.tell_ended(a.id, Some(side));
        };
        // The accepting side speaks first.
        end.out.enqueue(|b| Frame::ConnectionEstablished.encode(b));
        let stream = end.stream.clone();
        *a.leg(side).babel.lock() = Some(end);
        a.last_ms.store(inner.now_ms(), Ordering::Relaxed);
        a.answered.store(true, Ordering::Release);
        inner.tell_answered(a.id);
        // babel to babel: the caller is dialled now that the callee is here.
        let caller = a.leg(Side::Caller).kind;
        if let (Side::Callee, super::alloc::Kind::Dial(to)) = (side, caller) {
            if !spawn_dial(inner.clone(), a.clone(), Side::Caller, to) {
                return inner.tell_ended(a.id, Some(Side::Caller));
            }
        }
        read_voice(inner, &a, side, &stream, Decoder::new(), admission);
    })
}

/// Dial the babel caller of `side` at `to`, read its ConnectionEstablished,
/// and carry its voice.
pub(super) fn spawn_dial(inner: Arc<Inner>, a: Arc<Alloc>, side: Side, to: SocketAddr) -> bool {
    spawn(inner, move |inner| {
        let stream = match TcpStream::connect_timeout(&to, DIAL_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                log::info!("media relay: call {}: cannot reach the caller: {e}", a.id);
                return inner.tell_ended(a.id, Some(side));
            }
        };
        if a.closed.load(Ordering::Acquire) {
            return;
        }
        let deadline = Instant::now() + DIAL_TIMEOUT;
        let mut dec = Decoder::new();
        let mut buf = [0u8; READ_CHUNK];
        // The caller, the accepting side, greets first (seed 001).
        let greeted = loop {
            match dec.next_message() {
                Ok(Some(Frame::ConnectionEstablished)) => break true,
                Ok(Some(_)) | Err(_) => break false,
                Ok(None) => {}
            }
            // A signal neither ends the wait nor restarts it.
            let read = eintr::retry_until(
                deadline,
                |left| stream.set_read_timeout(Some(left)),
                || (&stream).read(&mut buf),
            );
            match read {
                Ok(0) | Err(_) => break false,
                Ok(n) => dec.push(&buf[..n]),
            }
        };
        let _ = stream.set_read_timeout(None);
        if !greeted {
            log::info!("media relay: call {}: the caller did not greet", a.id);
            let _ = stream.shutdown(Shutdown::Both);
            return inner.tell_ended(a.id, Some(side));
        }
        let Some((end, admission)) = connected(inner, &a, side, stream) else {
            return inner.tell_ended(a.id, Some(side));
        };
        let stream = end.stream.clone();
        *a.leg(side).babel.lock() = Some(end);
        if a.closed.load(Ordering::Acquire) {
            // Closed while we dialled: `release` may have missed it.
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        read_voice(inner, &a, side, &stream, dec, admission);
    })
}

/// The connection of a babel leg as the relay's: admitted in the registry
/// (counted in `max_connections`, shut at shutdown), its outbound queue
/// bounded and sent by the flush pool like any connection's.
fn connected(
    inner: &Arc<Inner>,
    a: &Alloc,
    side: Side,
    stream: TcpStream,
) -> Option<(BabelEnd, Admission)> {
    if a.closed.load(Ordering::Acquire) {
        let _ = stream.shutdown(Shutdown::Both);
        return None;
    }
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let Some(admission) = inner.registry.admit(&stream) else {
        inner.metrics.dropped(DropReason::ConnectionLimit);
        let _ = stream.shutdown(Shutdown::Both);
        return None;
    };
    let label = format!("relay call {} {side:?}", a.id);
    let out = Outbound::new(
        stream.clone(),
        &inner.flush,
        inner.outbound_limit,
        inner.write_timeout,
        label,
        inner.metrics.clone(),
    );
    Some((BabelEnd { out, stream }, admission))
}

/// Read VoiceData from the babel party of `side` until its connection ends
/// (its hang-up) or the relay closes it; its admission goes with it.
fn read_voice(
    inner: &Arc<Inner>,
    a: &Arc<Alloc>,
    side: Side,
    stream: &Arc<TcpStream>,
    mut dec: Decoder,
    _admission: Admission,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut ok = true;
    'read: while ok {
        loop {
            match dec.next_message() {
                Ok(Some(Frame::VoiceData { data })) => {
                    inner.carry(a, side, || a.unit_from_babel(side, &data));
                }
                Ok(Some(_)) => inner.metrics.relay_dropped(RelayDrop::Malformed),
                Ok(None) => break,
                Err(e) => {
                    log::info!("media relay: call {}: bad babel bytes: {e}", a.id);
                    break 'read;
                }
            }
        }
        match eintr::retry(|| (&**stream).read(&mut buf)) {
            Ok(0) | Err(_) => ok = false,
            Ok(n) => dec.push(&buf[..n]),
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    if !a.closed.load(Ordering::Acquire) {
        inner.tell_ended(a.id, Some(side));
    }
}
