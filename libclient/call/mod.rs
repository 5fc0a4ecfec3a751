//! An open call: voice both ways over a transport that the dialect
//! provides (babel: VoiceData frames on a peer-to-peer TCP connection;
//! accounts: UDP datagrams between the peers), one library thread per call
//! that receives, and the call's audio (`CallAudio`: Opus, jitter buffer,
//! reports, statistics). A call owns its transport and its audio, so the
//! dialect only sets it up; the transport is two trait objects, so another
//! path (a server relay) can replace it without the call changing.
//!
//! The application either brings its own codec (raw payloads: `send`,
//! `recv`) or lets the call encode and decode (`send_pcm`, `recv_pcm`, or
//! devices). The first receive of either kind decides which way received
//! voice goes; until then it goes both ways, bounded.
//!
//! A call reaches its client only weakly, through `CallOwner`, so it never
//! keeps a freed client alive. Locks: `audio` may be held while taking
//! `inbox`, never the reverse; `send_lock` is held across a send (it only
//! orders this call's sends); no other lock is held across socket I/O.

mod devices;
mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::audio::device::Level;
use crate::audio::{AudioError, CallAudio, Profile};
use crate::core::{threads, wait_until, Error, ErrorKind, Result};

pub use crate::audio::device::{DeviceInfo, DEVICE_SUPPORT, MAX_VOLUME};
pub use crate::audio::CallStats;
pub use devices::{input_devices, output_devices};

/// Voice payloads received and not yet taken: about 5 s of 20 ms frames.
/// On overflow the oldest is dropped, because late voice is useless.
const VOICE_QUEUE: usize = 256;
/// The most PCM one `send_pcm` or `recv_pcm` takes: one second of sample
/// frames, so one call's work stays bounded.
pub const MAX_PCM_FRAMES: usize = 48_000;
/// A received unit larger than this cannot be one Opus packet of a 20 ms
/// frame, so the decoder never sees it (it still reaches `recv`).
const MAX_DECODABLE: usize = crate::audio::codec::MAX_PACKET;
/// Over a stamped transport, the thread that plays (`recv_pcm`, a speaker)
/// takes the units while it has pulled within this; after it, the call's
/// thread receives them again.
const PULL_FRESH: Duration = Duration::from_millis(100);
/// How long the call's thread sleeps between its periodic work while the
/// thread that plays takes the units.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The sending half of a call's transport: moves whole units (babel: a
/// VoiceData payload; accounts: a datagram).
pub(crate) trait VoiceOut: Send + Sync + 'static {
    /// Send one unit whole.
    fn send(&self, unit: &[u8]) -> Result<()>;
    /// End both directions; wakes the receiving half.
    fn shutdown(&self);
}

/// The receiving half: the call's thread waits on it; over a stamped
/// transport, the thread that plays takes what is waiting instead.
pub(crate) trait VoiceIn: Send + 'static {
    /// The next unit and the time it arrived, on the clock `try_recv`
    /// uses (the kernel's receive time where the transport has it, so a
    /// unit that waited while this thread was busy keeps its arrival;
    /// else the time the read that brought it returned); `None` for a
    /// frame that carries no voice or when a short wait ended with
    /// nothing (the call's thread then does its periodic work). An error
    /// ends the call: `Closed` (the peer hung up, or `shutdown`),
    /// `Protocol` or `Io`.
    fn recv(&mut self) -> Result<Option<(Vec<u8>, Instant)>>;

    /// Whether units keep the time they arrived while they wait (UDP with
    /// kernel receive times): then the thread that plays the call takes
    /// them itself with [`VoiceIn::try_recv`], and the call's thread does
    /// not wake for each one.
    fn stamped(&self) -> bool {
        false
    }

    /// Hand every unit already waiting (a bounded number) to `take` with
    /// the time it arrived, without waiting; returns how many. Errors as
    /// `recv`.
    fn try_recv(&mut self, _take: &mut dyn FnMut(&[u8], Instant)) -> Result<usize> {
        Ok(0)
    }
}

/// The client side of a call's life.
pub(crate) trait CallOwner: Send + Sync + 'static {
    /// The call `token` with `peer` is over for `why`; `local` when it was
    /// hung up on this side. `why.code` is `Panic` when the call's thread
    /// panicked.
    fn call_ended(&self, peer: &str, token: u64, why: &Error, local: bool);
}

/// Which end of the call's audio a volume or mute applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What this side sends (the microphone, or PCM pushed).
    Microphone,
    /// What this side plays (the speaker, or PCM pulled).
    Speaker,
}

/// Where received voice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiving {
    /// Nobody received yet: to both, bounded.
    Undecided,
    /// The application decodes: payloads queue for `recv`.
    Raw,
    /// The call decodes: units feed the jitter buffer.
    Decoded,
}

#[derive(Default)]
struct Inbox {
    packets: VecDeque<Vec<u8>>,
    /// Packets dropped because the application did not take them in time.
    dropped: u64,
    /// Why the call is over, once it is.
    ended: Option<Error>,
}

struct Audio {
    pipeline: CallAudio,
    receiving: Receiving,
    /// Raw payloads sent and queued for `recv`: (packets, bytes).
    raw_sent: (u64, u64),
    raw_received: (u64, u64),
    /// PCM scaled by the microphone's level before encoding.
    scaled: Vec<i16>,
}

struct Inner {
    peer: String,
    profile: Profile,
    out: Box<dyn VoiceOut>,
    /// The receiving half: the call's thread holds it while it waits for a
    /// unit; the thread that plays only tries it (`stamped` transports).
    input: Mutex<Box<dyn VoiceIn>>,
    stamped: bool,
    /// When the thread that plays last pulled (µs since `born`; 0: never).
    last_pull: AtomicU64,
    born: Instant,
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    /// Wakes the call's thread from its idle sleep (the call ended, or the
    /// transport failed while the thread that plays read it).
    idle: Condvar,
    /// How the transport failed under the thread that plays.
    failed: Mutex<Option<Error>>,
    audio: Mutex<Audio>,
    /// Held across a send of PCM or payload, so units leave in order.
    send_lock: Mutex<()>,
    mic_level: Level,
    speaker_level: Level,
    devices: Mutex<devices::Devices>,
    /// A microphone feeds the call / a speaker pulls from it.
    mic_on: AtomicBool,
    speaker_on: AtomicBool,
    /// Hung up locally: the end is not reported as an event.
    hung_up: AtomicBool,
    over: AtomicBool,
}

impl From<AudioError> for Error {
    fn from(e: AudioError) -> Error {
        let code = match &e {
            AudioError::Format(_) => ErrorKind::InvalidArgument,
            AudioError::Codec(_) => ErrorKind::Internal,
            AudioError::NoDevice(_) => ErrorKind::NoDevice,
            AudioError::Device(_) => ErrorKind::DeviceFailed,
            AudioError::DeviceSupportMissing => ErrorKind::DeviceSupportMissing,
        };
        Error::new(code, e.to_string())
    }
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
        self.over.store(true, Ordering::Release);
        drop(inbox);
        self.arrived.notify_all();
        self.idle.notify_all();
    }

    /// `Closed` with the reason, once the call is over.
    fn check_open(&self) -> Result<()> {
        if !self.over.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self.inbox.lock().ended.clone();
        Err(Error::new(
            ErrorKind::Closed,
            why.map_or_else(|| "the call is over".into(), |e| e.message),
        ))
    }

    fn send_unit(&self, unit: &[u8]) -> Result<()> {
        self.out.send(unit).map_err(|e| {
            if self.hung_up.load(Ordering::Acquire) {
                Error::new(ErrorKind::Closed, "the call was hung up")
            } else {
                e
            }
        })
    }

    /// Decide where received voice goes, once; the other way is refused.
    fn choose(&self, a: &mut Audio, want: Receiving) -> Result<()> {
        match (a.receiving, want) {
            (now, want) if now == want => Ok(()),
            (Receiving::Undecided, Receiving::Decoded) => {
                a.receiving = want;
                self.inbox.lock().packets.clear();
                Ok(())
            }
            (Receiving::Undecided, _) => {
                a.receiving = want;
                Ok(())
            }
            (Receiving::Raw, _) => Err(Error::new(
                ErrorKind::InvalidArgument,
                "this call's voice is received raw (recv was used): it cannot also be decoded",
            )),
            (Receiving::Decoded, _) => Err(Error::new(
                ErrorKind::InvalidArgument,
                "this call's voice is decoded (recv_pcm or a speaker was used): \
                 raw payloads are not kept",
            )),
        }
    }

    /// Encode PCM and send the frames it completes.
    fn send_pcm(&self, pcm: &[i16]) -> Result<()> {
        check_pcm_len(pcm.len(), self.profile.channels())?;
        let _order = self.send_lock.lock();
        self.check_open()?;
        let frames = {
            let mut guard = self.audio.lock();
            let a = &mut *guard;
            a.scaled.clear();
            a.scaled.extend_from_slice(pcm);
            self.mic_level.apply(&mut a.scaled);
            a.pipeline.send_pcm(Instant::now(), &a.scaled)?
        };
        for f in &frames {
            self.send_unit(&wire::frame_unit(self.profile, f))?;
        }
        Ok(())
    }

    /// Fill `out` with what to play from `now` on.
    fn pull(&self, now: Instant, out: &mut [i16]) -> Result<()> {
        check_pcm_len(out.len(), self.profile.channels())?;
        let mut a = self.audio.lock();
        self.choose(&mut a, Receiving::Decoded)?;
        if self.stamped && !self.over.load(Ordering::Acquire) {
            self.take_waiting(&mut a.pipeline, now);
        }
        if self.over.load(Ordering::Acquire) && !a.pipeline.has_pending() {
            drop(a);
            return self.check_open();
        }
        a.pipeline.pull_pcm(now, out)?;
        drop(a);
        self.speaker_level.apply(out);
        Ok(())
    }

    /// The thread that plays takes the units waiting on a stamped transport
    /// (unless the call's thread is receiving right now), so the call's
    /// thread need not wake for each. A transport error ends the call.
    fn take_waiting(&self, pipeline: &mut CallAudio, now: Instant) {
        let since = now.saturating_duration_since(self.born).as_micros() as u64;
        self.last_pull.store(since.max(1), Ordering::Release);
        let Some(mut input) = self.input.try_lock() else {
            return;
        };
        let profile = self.profile;
        let taken = input.try_recv(&mut |unit, at| {
            if unit.len() <= MAX_DECODABLE {
                wire::feed(profile, pipeline, at, unit);
            }
        });
        drop(input);
        if let Err(e) = taken {
            // The call's thread ends the call with this reason.
            *self.failed.lock() = Some(e);
            self.idle.notify_all();
        }
    }

    /// Whether the thread that plays takes the units now.
    fn pulling(&self, now: Instant) -> bool {
        if !self.stamped {
            return false;
        }
        let last = self.last_pull.load(Ordering::Acquire);
        let since = now.saturating_duration_since(self.born).as_micros() as u64;
        last != 0 && since.saturating_sub(last) < PULL_FRESH.as_micros() as u64
    }

    /// A unit from the transport: to the jitter buffer, to the raw queue,
    /// or (undecided) to both.
    fn arrive(&self, now: Instant, unit: Vec<u8>) {
        let receiving = {
            let mut a = self.audio.lock();
            if a.receiving != Receiving::Raw && unit.len() <= MAX_DECODABLE {
                wire::feed(self.profile, &mut a.pipeline, now, &unit);
            }
            if a.receiving != Receiving::Decoded {
                a.raw_received.0 += 1;
                a.raw_received.1 += unit.len() as u64;
            }
            a.receiving
        };
        if receiving == Receiving::Decoded {
            return;
        }
        let Some(body) = wire::raw_body(self.profile, unit) else {
            return;
        };
        let mut inbox = self.inbox.lock();
        if inbox.packets.len() >= VOICE_QUEUE {
            inbox.packets.pop_front();
            inbox.dropped += 1;
        }
        inbox.packets.push_back(body);
        drop(inbox);
        self.arrived.notify_one();
    }

    /// Periodic work of the call's thread: the receiver report, when due
    /// (accounts; never while the application takes voice raw).
    fn tick(&self, now: Instant) {
        if self.profile != Profile::Accounts {
            return;
        }
        let report = {
            let mut a = self.audio.lock();
            if a.receiving == Receiving::Raw {
                return;
            }
            a.pipeline.poll_report(now)
        };
        if let Some(r) = report {
            if let Err(e) = self.out.send(&wire::report_unit(r)) {
                log::debug!("receiver report to {} not sent: {}", self.peer, e.message);
            }
        }
    }

    fn level(&self, side: Side) -> &Level {
        match side {
            Side::Microphone => &self.mic_level,
            Side::Speaker => &self.speaker_level,
        }
    }
}

fn check_pcm_len(samples: usize, channels: usize) -> Result<()> {
    if samples / channels > MAX_PCM_FRAMES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{} sample frames at once; at most {MAX_PCM_FRAMES} (1 s)",
                samples / channels
            ),
        ));
    }
    Ok(())
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
            .field("profile", &self.inner.profile)
            .finish_non_exhaustive()
    }
}

/// What the client keeps of an open call, to hang it up by name.
#[derive(Clone)]
pub(crate) struct CallLink(Weak<Inner>);

impl CallLink {
    /// Hang up from this side (as `Call::hangup`).
    pub(crate) fn hangup(&self) {
        if let Some(inner) = self.0.upgrade() {
            inner.hangup();
        }
    }

    /// The call ended elsewhere (the peer hung up, the client closed):
    /// stop its transport and record `why`; the owner is told as usual.
    pub(crate) fn end(&self, why: Error) {
        if let Some(inner) = self.0.upgrade() {
            inner.finish(why);
            inner.out.shutdown();
        }
    }
}

impl Call {
    /// Start the receiving thread of an established transport, with the
    /// audio of `profile`.
    pub(crate) fn start(
        peer: String,
        token: u64,
        profile: Profile,
        out: Box<dyn VoiceOut>,
        input: Box<dyn VoiceIn>,
        owner: Weak<dyn CallOwner>,
    ) -> Result<(Call, CallLink)> {
        let born = Instant::now();
        let pipeline = CallAudio::new(profile, born)?;
        let inner = Arc::new(Inner {
            peer,
            profile,
            out,
            stamped: input.stamped(),
            input: Mutex::new(input),
            last_pull: AtomicU64::new(0),
            born,
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            idle: Condvar::new(),
            failed: Mutex::new(None),
            audio: Mutex::new(Audio {
                pipeline,
                receiving: Receiving::Undecided,
                raw_sent: (0, 0),
                raw_received: (0, 0),
                scaled: Vec::new(),
            }),
            send_lock: Mutex::new(()),
            mic_level: Level::default(),
            speaker_level: Level::default(),
            devices: Mutex::new(devices::Devices::default()),
            mic_on: AtomicBool::new(false),
            speaker_on: AtomicBool::new(false),
            hung_up: AtomicBool::new(false),
            over: AtomicBool::new(false),
        });
        let i2 = inner.clone();
        let reader = threads::spawn("chinwag-call", move || receive(&i2, token, owner))?;
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

    /// Interleaved channels of this call's PCM: 2 for babel (what the
    /// original client sends), 1 for accounts.
    pub fn channels(&self) -> usize {
        self.inner.profile.channels()
    }

    /// Send one payload of the application's own codec (babel: one
    /// VoiceData frame, one Opus packet in the original client; accounts:
    /// one datagram, the magic then `payload`, at most 1275 bytes).
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        let unit = wire::raw_unit(self.inner.profile, payload)?;
        let _order = self.inner.send_lock.lock();
        self.inner.check_open()?;
        self.inner.send_unit(&unit)?;
        let mut a = self.inner.audio.lock();
        a.raw_sent.0 += 1;
        a.raw_sent.1 += payload.len() as u64;
        Ok(())
    }

    /// The next payload into `buf`, waiting at most `timeout` (`None`:
    /// without limit). `TooLong` leaves a payload larger than `buf`
    /// queued; `Closed` once the call is over and nothing is left;
    /// `InvalidArgument` when this call's voice is decoded instead.
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
        {
            let mut a = self.inner.audio.lock();
            self.inner.choose(&mut a, Receiving::Raw)?;
        }
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

    /// Push captured audio: 48 kHz, interleaved `i16`, [`Call::channels`]
    /// channels, any number of whole sample frames up to
    /// [`MAX_PCM_FRAMES`]. Every completed 20 ms frame is encoded and sent
    /// now; a partial frame waits for the next push. `InvalidArgument`
    /// while a microphone feeds the call, or for a partial sample frame.
    pub fn send_pcm(&self, pcm: &[i16]) -> Result<()> {
        if self.inner.mic_on.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a microphone feeds this call; stop the devices to push PCM",
            ));
        }
        self.inner.send_pcm(pcm)
    }

    /// Fill `out` (48 kHz, interleaved, [`Call::channels`] channels, any
    /// number of whole sample frames up to [`MAX_PCM_FRAMES`]) with what to
    /// play from now on: decoded, concealed or silence, always all of it.
    /// Call it at the pace you play. `Closed` once the call is over and
    /// everything received has been played; `InvalidArgument` while a
    /// speaker plays the call, or when its voice is received raw.
    pub fn recv_pcm(&self, out: &mut [i16]) -> Result<()> {
        if self.inner.speaker_on.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a speaker plays this call; stop the devices to pull PCM",
            ));
        }
        self.inner.pull(Instant::now(), out)
    }

    /// The call's statistics now.
    pub fn stats(&self) -> CallStats {
        let now = Instant::now();
        let mut a = self.inner.audio.lock();
        let mut s = a.pipeline.stats(now);
        s.packets_sent += a.raw_sent.0;
        s.bytes_sent += a.raw_sent.1;
        if a.receiving == Receiving::Raw {
            s.packets_received = a.raw_received.0;
            s.bytes_received = a.raw_received.1;
        }
        s
    }

    /// Mute or unmute one side: a muted microphone sends silence (the call
    /// keeps its timing), a muted speaker plays silence. Also applies to
    /// PCM pushed and pulled.
    pub fn set_muted(&self, side: Side, muted: bool) {
        self.inner.level(side).set_muted(muted);
    }

    pub fn muted(&self, side: Side) -> bool {
        self.inner.level(side).muted()
    }

    /// Scale one side by `volume` (1.0 unchanged; clamped to 0.0 to
    /// [`MAX_VOLUME`]).
    pub fn set_volume(&self, side: Side, volume: f32) {
        self.inner.level(side).set_volume(volume);
    }

    pub fn volume(&self, side: Side) -> f32 {
        self.inner.level(side).volume()
    }

    /// Loss recovery on (the default) or off: off, this side sends no FEC
    /// and plays silence for a lost frame. For measuring what recovery is
    /// worth (the benchmark); calls should leave it on.
    pub fn set_loss_recovery(&self, on: bool) -> Result<()> {
        Ok(self.inner.audio.lock().pipeline.set_loss_recovery(on)?)
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
        // Devices first: their threads hold only weak references, and a
        // speaker must never be dropped from its own callback.
        self.stop_devices();
        self.inner.hangup();
        if let Some(t) = self.reader.lock().take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// The call's thread: hand units to the call until the transport ends (or
/// this thread panics), then release the devices and report the end.
fn receive(inner: &Arc<Inner>, token: u64, owner: Weak<dyn CallOwner>) {
    let run = threads::catch(|| loop {
        if inner.pulling(Instant::now()) {
            // The thread that plays takes the units: only the periodic work.
            let mut inbox = inner.inbox.lock();
            if inbox.ended.is_none() {
                inner.idle.wait_for(
                    &mut inbox,
                    IDLE_POLL.min(crate::audio::pipeline::REPORT_INTERVAL),
                );
            }
            drop(inbox);
            if let Some(e) = inner.failed.lock().take() {
                break e;
            }
        } else {
            let got = inner.input.lock().recv();
            match got {
                Ok(Some((unit, at))) => inner.arrive(at, unit),
                Ok(None) => {}
                Err(e) => break e,
            }
        }
        if inner.over.load(Ordering::Acquire) {
            // Ended here (hang-up) or by the signalling: the reason is kept.
            break Error::new(ErrorKind::Closed, "the call is over");
        }
        inner.tick(Instant::now());
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
    devices::release(inner);
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
        fn recv(&mut self) -> Result<Option<(Vec<u8>, Instant)>> {
            self.0 += 1;
            if self.0 == 1 {
                return Ok(Some((vec![7], Instant::now())));
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

    fn start(input: impl VoiceIn, owner: &Arc<Owner>) -> Call {
        let weak: Weak<dyn CallOwner> = Arc::downgrade(&(owner.clone() as Arc<dyn CallOwner>));
        let (call, _link) = Call::start(
            "bo".into(),
            9,
            Profile::Babel,
            Box::new(Sink),
            Box::new(input),
            weak,
        )
        .unwrap();
        call
    }

    #[test]
    fn a_panic_in_the_call_thread_ends_the_call_and_tells_the_owner() {
        let owner = Arc::new(Owner::default());
        let call = start(Faulty(0), &owner);
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

    /// Units from a channel, as a transport would deliver them.
    struct Feed(crossbeam_channel::Receiver<Vec<u8>>);
    impl VoiceIn for Feed {
        fn recv(&mut self) -> Result<Option<(Vec<u8>, Instant)>> {
            match self.0.recv_timeout(Duration::from_millis(20)) {
                Ok(u) => Ok(Some((u, Instant::now()))),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
                Err(_) => Err(Error::new(ErrorKind::Closed, "fed out")),
            }
        }
    }

    #[test]
    fn the_first_receive_decides_raw_or_decoded() {
        let owner = Arc::new(Owner::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let call = start(Feed(rx), &owner);
        tx.send(b"raw".to_vec()).unwrap();
        assert_eq!(call.recv(Some(Duration::from_secs(10))).unwrap(), b"raw");
        let mut pcm = [0i16; 1920];
        assert_eq!(
            call.recv_pcm(&mut pcm).unwrap_err().code,
            ErrorKind::InvalidArgument
        );
        assert_eq!(call.stats().packets_received, 1);

        let (tx, rx) = crossbeam_channel::unbounded();
        let call = start(Feed(rx), &owner);
        call.recv_pcm(&mut pcm).unwrap();
        assert!(pcm.iter().all(|&s| s == 0), "silence before any packet");
        assert_eq!(
            call.recv(Some(Duration::ZERO)).unwrap_err().code,
            ErrorKind::InvalidArgument
        );
        // Wrong shapes and sizes are refused before any work.
        assert_eq!(
            call.recv_pcm(&mut [0i16; 3]).unwrap_err().code,
            ErrorKind::InvalidArgument
        );
        let big = vec![0i16; 2 * (MAX_PCM_FRAMES + 1)];
        assert_eq!(
            call.send_pcm(&big).unwrap_err().code,
            ErrorKind::InvalidArgument
        );
        drop(tx);
    }

    /// A stamped transport fed by a channel: counts the units the call's
    /// thread received and those the thread that plays took.
    struct Stamped {
        rx: crossbeam_channel::Receiver<Vec<u8>>,
        by_thread: Arc<AtomicU64>,
        by_puller: Arc<AtomicU64>,
    }
    impl VoiceIn for Stamped {
        fn recv(&mut self) -> Result<Option<(Vec<u8>, Instant)>> {
            match self.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(u) => {
                    self.by_thread.fetch_add(1, Ordering::Relaxed);
                    Ok(Some((u, Instant::now())))
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
                Err(_) => Err(Error::new(ErrorKind::Closed, "fed out")),
            }
        }
        fn stamped(&self) -> bool {
            true
        }
        fn try_recv(&mut self, take: &mut dyn FnMut(&[u8], Instant)) -> Result<usize> {
            let mut n = 0;
            while let Ok(u) = self.rx.try_recv() {
                take(&u, Instant::now());
                n += 1;
            }
            self.by_puller.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    #[test]
    fn while_the_app_pulls_it_takes_stamped_units_and_the_call_thread_rests() {
        // Once pulls came the thread that plays took the units: the call's
        // thread took at most those that came before it noticed (its wait
        // is 20 ms here, the pulls began with the first unit), and a few
        // after each time no pull came for PULL_FRESH, which is right: a
        // loaded machine holds the pulling thread up (up to 380 ms between
        // two pulls beside two busy loops). Those gaps are counted (each
        // lets the call's thread take the next unit or two before it sees
        // the pulls again); an attempt with so many that the bound says
        // nothing is made again.
        for attempt in 1..=10 {
            let (thread, frames, gaps) = pull_while_units_come();
            let allowed = 5 + 3 * gaps;
            if allowed < frames / 2 {
                assert!(
                    thread <= allowed,
                    "the call's thread received {thread} of {frames} ({gaps} gaps in the pulls)"
                );
                return;
            }
            eprintln!("attempt {attempt}: {gaps} gaps in the pulls");
        }
        panic!("every attempt was held up between pulls too often");
    }

    /// 50 units on a stamped transport, each pulled for: the units the
    /// call's thread received, the units, and how many times two pulls may
    /// have been PULL_FRESH apart (the call's thread may have taken units
    /// again).
    fn pull_while_units_come() -> (u64, u64, u64) {
        let owner = Arc::new(Owner::default());
        let weak: Weak<dyn CallOwner> = Arc::downgrade(&(owner.clone() as Arc<dyn CallOwner>));
        let (tx, rx) = crossbeam_channel::unbounded();
        let (by_thread, by_puller) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (call, _) = Call::start(
            "a".into(),
            3,
            Profile::Accounts,
            Box::new(Sink),
            Box::new(Stamped {
                rx,
                by_thread: by_thread.clone(),
                by_puller: by_puller.clone(),
            }),
            weak,
        )
        .unwrap();
        let mut audio = CallAudio::new(Profile::Accounts, Instant::now()).unwrap();
        let mut out = [0i16; 960];
        // The call marks a pull somewhere inside recv_pcm: two marks are
        // at most from the start of one call to the end of the next apart.
        let (mut began, mut gaps) = (None::<Instant>, 0);
        let mut pull = |out: &mut [i16]| {
            let start = Instant::now();
            call.recv_pcm(out).unwrap();
            if began.is_some_and(|b| Instant::now() - b >= PULL_FRESH) {
                gaps += 1;
            }
            began = Some(start);
        };
        let frames = 50;
        for k in 0..frames {
            let f = audio.send_pcm(Instant::now(), &[100; 960]).unwrap();
            tx.send(f[0].accounts_packet()).unwrap();
            pull(&mut out);
            std::thread::sleep(Duration::from_millis(if k < 5 { 20 } else { 2 }));
        }
        // Every unit reached the call.
        let deadline = Instant::now() + Duration::from_secs(10);
        while by_thread.load(Ordering::Relaxed) + by_puller.load(Ordering::Relaxed) < frames {
            assert!(Instant::now() < deadline, "units lost");
            pull(&mut out);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(call.stats().packets_received, frames);
        (by_thread.load(Ordering::Relaxed), frames, gaps)
    }

    #[test]
    fn pcm_round_trips_through_two_calls() {
        // A's sends feed B's receiving half directly.
        struct Pipe(crossbeam_channel::Sender<Vec<u8>>);
        impl VoiceOut for Pipe {
            fn send(&self, unit: &[u8]) -> Result<()> {
                let _ = self.0.send(unit.to_vec());
                Ok(())
            }
            fn shutdown(&self) {}
        }
        let owner = Arc::new(Owner::default());
        let weak: Weak<dyn CallOwner> = Arc::downgrade(&(owner.clone() as Arc<dyn CallOwner>));
        let (tx, rx) = crossbeam_channel::unbounded();
        let (a, _) = Call::start(
            "b".into(),
            1,
            Profile::Accounts,
            Box::new(Pipe(tx)),
            Box::new(Feed(crossbeam_channel::never())),
            weak.clone(),
        )
        .unwrap();
        let (b, _) = Call::start(
            "a".into(),
            2,
            Profile::Accounts,
            Box::new(Sink),
            Box::new(Feed(rx)),
            weak,
        )
        .unwrap();
        // Half volume on the way out still carries the tone.
        a.set_volume(Side::Microphone, 0.5);
        assert_eq!(a.volume(Side::Microphone), 0.5);
        let tone: Vec<i16> = (0..960 * 50)
            .map(|i| (8000.0 * (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 48e3).sin()) as i16)
            .collect();
        let mut got = vec![0i16; 960];
        let mut loud = 0.0f64;
        for chunk in tone.chunks(960) {
            a.send_pcm(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            b.recv_pcm(&mut got).unwrap();
            loud = loud.max(got.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / 960.0);
        }
        assert!(loud > 1000.0, "the tone came through ({loud})");
        assert_eq!(a.stats().packets_sent, 50);
        // B's thread counts them as it takes them: a loaded machine may
        // hold it up past the last pull.
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.stats().packets_received < 45 {
            assert!(Instant::now() < deadline, "{:?}", b.stats());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
