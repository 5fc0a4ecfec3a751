//! An open call: voice payloads both ways over a transport that the
//! dialect provides (babel: VoiceData frames on a peer-to-peer TCP
//! connection), and one library thread per call that receives and queues
//! what arrives. A call owns its transport, so an audio pipeline (encoder,
//! jitter buffer) can later sit between it and the application without the
//! dialect knowing. It reaches its client only weakly, through `CallOwner`,
//! so a call never keeps a freed client alive, and it holds no lock across
//! socket I/O except its transport's own write lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::core::{threads, wait_until, Error, ErrorKind, Result};

/// Voice payloads received and not yet taken: about 5 s of 20 ms frames.
/// On overflow the oldest is dropped, because late voice is useless.
const VOICE_QUEUE: usize = 256;

/// The sending half of a call's transport.
pub(crate) trait VoiceOut: Send + Sync + 'static {
    /// Send one payload whole.
    fn send(&self, payload: &[u8]) -> Result<()>;
    /// End both directions; wakes the receiving half.
    fn shutdown(&self);
}

/// The receiving half, owned by the call's thread.
pub(crate) trait VoiceIn: Send + 'static {
    /// The next payload; `None` for a frame that carries no voice. An error
    /// ends the call: `Closed` (the peer hung up), `Protocol` or `Io`.
    fn recv(&mut self) -> Result<Option<Vec<u8>>>;
}

/// The client side of a call's life.
pub(crate) trait CallOwner: Send + Sync + 'static {
    /// The call `token` with `peer` is over for `why`; `local` when it was
    /// hung up on this side. `why.code` is `Panic` when the call's thread
    /// panicked.
    fn call_ended(&self, peer: &str, token: u64, why: &Error, local: bool);
}

#[derive(Default)]
struct Inbox {
    packets: VecDeque<Vec<u8>>,
    /// Packets dropped because the application did not take them in time.
    dropped: u64,
    /// Why the call is over, once it is.
    ended: Option<Error>,
}

struct Inner {
    peer: String,
    out: Box<dyn VoiceOut>,
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    /// Hung up locally: the end is not reported as an event.
    hung_up: AtomicBool,
}

impl Inner {
    fn hangup(&self) {
        if self.hung_up.swap(true, Ordering::AcqRel) {
            return;
        }
        self.out.shutdown();
        self.finish(Error::new(ErrorKind::Closed, "the call was hung up"));
    }

    /// Record why the call is over (the first reason wins) and wake receivers.
    fn finish(&self, why: Error) {
        let mut inbox = self.inbox.lock();
        if inbox.ended.is_none() {
            inbox.ended = Some(why);
        }
        drop(inbox);
        self.arrived.notify_all();
    }
}

/// An open call. Any thread may send while another receives; sends are
/// serialised with each other, and so are receives.
pub struct Call {
    inner: Arc<Inner>,
    token: u64,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

/// What the client keeps of an open call, to hang it up by name.
#[derive(Clone)]
pub(crate) struct CallLink(Weak<Inner>);

impl CallLink {
    pub(crate) fn hangup(&self) {
        if let Some(inner) = self.0.upgrade() {
            inner.hangup();
        }
    }
}

impl Call {
    /// Start the receiving thread of an established transport.
    pub(crate) fn start(
        peer: String,
        token: u64,
        out: Box<dyn VoiceOut>,
        input: Box<dyn VoiceIn>,
        owner: Weak<dyn CallOwner>,
    ) -> Result<(Call, CallLink)> {
        let inner = Arc::new(Inner {
            peer,
            out,
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            hung_up: AtomicBool::new(false),
        });
        let i2 = inner.clone();
        let reader = threads::spawn("chinwag-call", move || receive(&i2, input, token, owner))?;
        let link = CallLink(Arc::downgrade(&inner));
        Ok((
            Call {
                inner,
                token,
                reader: Mutex::new(Some(reader)),
            },
            link,
        ))
    }

    /// The name of the user at the other end.
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// Send one voice payload (babel: one VoiceData frame, one Opus packet
    /// in the original client).
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        if let Some(e) = self.inner.inbox.lock().ended.clone() {
            return Err(Error::new(ErrorKind::Closed, e.message));
        }
        self.inner.out.send(payload).map_err(|e| {
            if self.inner.hung_up.load(Ordering::Acquire) {
                Error::new(ErrorKind::Closed, "the call was hung up")
            } else {
                e
            }
        })
    }

    /// The next payload into `buf`, waiting at most `timeout` (`None`:
    /// without limit). `TooLong` leaves a payload larger than `buf`
    /// queued; `Closed` once the call is over and nothing is left.
    pub fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        let p = self.take(timeout, Some(buf.len()))?;
        buf[..p.len()].copy_from_slice(&p);
        Ok(p.len())
    }

    /// The next payload as a vector; see [`Call::recv_into`].
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.take(timeout, None)
    }

    fn take(&self, timeout: Option<Duration>, room: Option<usize>) -> Result<Vec<u8>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inbox = self.inner.inbox.lock();
        loop {
            if let Some(p) = inbox.packets.front() {
                if let Some(room) = room.filter(|r| p.len() > *r) {
                    return Err(Error::new(
                        ErrorKind::TooLong,
                        format!(
                            "the next voice payload is {} bytes; the buffer holds {room}",
                            p.len()
                        ),
                    ));
                }
                return Ok(inbox.packets.pop_front().expect("front exists"));
            }
            if let Some(e) = &inbox.ended {
                return Err(Error::new(ErrorKind::Closed, e.message.clone()));
            }
            let expired = wait_until(&self.inner.arrived, &mut inbox, deadline);
            if expired && inbox.packets.is_empty() && inbox.ended.is_none() {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "no voice before the time limit",
                ));
            }
        }
    }

    /// Payloads dropped so far because they were not taken in time.
    pub fn dropped(&self) -> u64 {
        self.inner.inbox.lock().dropped
    }

    /// Hang up: end the transport (the peer gets CallEnded). Idempotent;
    /// blocked receivers wake with `Closed`.
    pub fn hangup(&self) {
        self.inner.hangup();
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.inner.hangup();
        if let Some(t) = self.reader.lock().take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// The call's thread: queue payloads until the transport ends (or this
/// thread panics), then report the end to the owner.
fn receive(inner: &Inner, mut input: Box<dyn VoiceIn>, token: u64, owner: Weak<dyn CallOwner>) {
    let run = threads::catch(|| loop {
        match input.recv() {
            Ok(Some(data)) => {
                let mut inbox = inner.inbox.lock();
                if inbox.packets.len() >= VOICE_QUEUE {
                    inbox.packets.pop_front();
                    inbox.dropped += 1;
                }
                inbox.packets.push_back(data);
                drop(inbox);
                inner.arrived.notify_one();
            }
            Ok(None) => {}
            Err(e) => break e,
        }
    });
    let end = run.unwrap_or_else(|why| {
        Error::new(
            ErrorKind::Panic,
            format!("the library's chinwag-call thread panicked: {why}"),
        )
    });
    let local = inner.hung_up.load(Ordering::Acquire);
    if matches!(end.code, ErrorKind::Protocol | ErrorKind::Panic) {
        log::warn!("call ended: {}", end.message);
    } else if !local {
        log::info!("call ended: {}", end.message);
    }
    inner.out.shutdown();
    inner.finish(end.clone());
    if let Some(owner) = owner.upgrade() {
        owner.call_ended(&inner.peer, token, &end, local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink;
    impl VoiceOut for Sink {
        fn send(&self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn shutdown(&self) {}
    }

    /// One payload, then a bug.
    struct Faulty(u32);
    impl VoiceIn for Faulty {
        fn recv(&mut self) -> Result<Option<Vec<u8>>> {
            self.0 += 1;
            if self.0 == 1 {
                return Ok(Some(vec![7]));
            }
            panic!("decoder bug");
        }
    }

    #[derive(Default)]
    struct Owner(Mutex<Vec<(String, u64, ErrorKind, bool)>>);
    impl CallOwner for Owner {
        fn call_ended(&self, peer: &str, token: u64, why: &Error, local: bool) {
            self.0.lock().push((peer.into(), token, why.code, local));
        }
    }

    #[test]
    fn a_panic_in_the_call_thread_ends_the_call_and_tells_the_owner() {
        let owner = Arc::new(Owner::default());
        let weak: Weak<dyn CallOwner> = Arc::downgrade(&(owner.clone() as Arc<dyn CallOwner>));
        let (call, _link) =
            Call::start("bo".into(), 9, Box::new(Sink), Box::new(Faulty(0)), weak).unwrap();
        assert_eq!(call.recv(Some(Duration::from_secs(10))).unwrap(), vec![7]);
        let end = call.recv(Some(Duration::from_secs(10))).unwrap_err();
        assert_eq!(end.code, ErrorKind::Closed);
        assert!(end.message.contains("decoder bug"), "{}", end.message);
        assert_eq!(call.send(b"x").unwrap_err().code, ErrorKind::Closed);
        drop(call); // joins the thread, which told the owner before ending
        assert_eq!(
            *owner.0.lock(),
            vec![("bo".to_string(), 9, ErrorKind::Panic, false)]
        );
    }
}
