//! The jitter buffer: packets in (in any order, any time), one 20 ms frame
//! out per pull, with a playout delay that follows the measured jitter. It
//! decides what to play; it never decodes, reads the clock or does I/O.
//!
//! How it adapts:
//! - Each arrival's *relative delay* is its arrival time minus its media time.
//!   The smallest over the last [`WINDOW`] is the path's fastest transit; the
//!   jitter to absorb is how far above it the [`QUANTILE`] of the window
//!   lies, or the largest of the last [`PEAK_WINDOW`] if that is more (so
//!   the target grows at the first late packet and a lone spike is soon
//!   forgotten). The target delay is that plus [`MARGIN`] (never below
//!   [`MIN_TARGET`]), plus one frame of look-ahead once a lost frame found
//!   the packet after it (which carries its FEC) not yet there, kept until
//!   no frame has been lost for [`LOSS_MEMORY`]: then the next packet is
//!   there at a lost frame's playout time.
//! - Playout times are a grid: each pull plays one frame after the one
//!   before. A pull that comes late (a held-up audio callback) is placed on
//!   the grid, not at the moment it ran, so it neither shrinks nor grows
//!   the delay; the grid follows the caller's clock slowly, and jumps to it
//!   after a pause.
//! - The current delay of the next frame is how long after its earliest
//!   possible arrival (media time plus the smallest relative delay) it is
//!   played.
//! - A frame is concealed only when its playout time has come and its
//!   packet is not there. Then, if the delay is still below the target, the
//!   packet is probably late: the buffer conceals one frame and waits (a
//!   stall, +20 ms of delay), and the packet plays when it comes. At or
//!   above the target the frame is lost (when a later packet is there): it
//!   is rebuilt from the next packet's FEC data when that packet is present,
//!   else concealed by the decoder; missing frames the stalls already stood
//!   in for are skipped. With nothing later there the buffer stalls too.
//! - The delay moves on real audio: when the next frame is there and the
//!   delay is below the target by [`MIN_STRETCH`] or more, the frame is
//!   played lengthened (NetEq's preemptive expand: [`Playout::Stretch`],
//!   by up to a frame), so the delay grows before a late packet makes the
//!   output run dry; when it exceeds the target by [`ACCELERATE_EXCESS`],
//!   the frame is played shortened, at most every [`SHRINK_EVERY`], so a
//!   calm network wins its delay back in a second or two and a spike is not
//!   forgotten at once. The caller reports how much it stretched
//!   ([`JitterBuffer::stretched`]): the next frame plays that much later or
//!   earlier. Whole frames are dropped only when the excess is large (a
//!   burst after a stalled TCP stream).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::codec::{FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};

/// One frame's duration.
pub const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);
const FRAME_US: i64 = FRAME_MS as i64 * 1000;
/// How long the buffer remembers the relative delays it measured. Long
/// enough that a recurring spike keeps its delay, short enough that a calm
/// network gets its latency back within seconds.
pub const WINDOW: Duration = Duration::from_secs(4);
/// The share of the window's packets the target delay lets arrive in time
/// on its own (the frame of headroom the pull grid's phase gives, and the
/// largest of the last [`PEAK_WINDOW`], cover most of the rest).
pub const QUANTILE: f64 = 0.95;
/// The largest relative delay of this recent past always counts in full:
/// the target grows at once when jitter rises.
pub const PEAK_WINDOW: Duration = Duration::from_secs(1);
/// Headroom above the measured spread for scheduling noise on either side.
pub const MARGIN: Duration = Duration::from_millis(5);
/// The smallest target. The pull grid and the arrival grid have an
/// arbitrary phase, so a frame is played up to one frame after the target.
pub const MIN_TARGET: Duration = FRAME;
/// The largest target: more jitter than this is a broken path, and waiting
/// longer would make conversation impossible anyway.
pub const MAX_TARGET: Duration = Duration::from_millis(500);
/// One frame of look-ahead starts at a loss the FEC could not rebuild
/// because the packet after it came too late, and is kept until no frame
/// has been lost for this long.
pub const LOSS_MEMORY: Duration = Duration::from_secs(10);
/// For this long after a frame had to wait for its late packet (a stall),
/// the target is twice the measured jitter: when jitter rises, the next
/// late packet is often later still, and the delay grows by stretching
/// real audio now rather than by another stall later.
pub const SURGE: Duration = Duration::from_secs(1);
/// At most one frame shortened per this much time while shrinking.
pub const SHRINK_EVERY: Duration = Duration::from_millis(100);
/// Excess delay (above the target) from which frames are shortened. Above
/// the largest lengthening overshoot, so the two never take turns.
pub const ACCELERATE_EXCESS: Duration = Duration::from_millis(20);
/// The smallest change of delay worth stretching for: the shortest pitch
/// period the stretcher inserts (2.5 ms).
pub const MIN_STRETCH: Duration = Duration::from_micros(2500);
/// A frame is lengthened by at most this much (it then lasts up to twice
/// as long).
pub const MAX_EXPAND: Duration = FRAME;
/// Excess delay (above the target) past which frames are dropped on every
/// other pull: a burst after a stalled TCP stream, not jitter.
const FAST_SHRINK_EXCESS_US: i64 = 5 * FRAME_US;
/// A pull further than this from its place on the playout grid means the
/// caller paused or jumped: the grid restarts at the pull.
const RESYNC_US: i64 = 3 * FRAME_US;
/// The grid moves this share of the way to each pull's own time, following
/// a caller's clock that runs a little fast or slow.
const CLOCK_GAIN: i64 = 16;
/// Consecutive frames concealed while waiting for a packet before the
/// buffer gives up on it: the sender paused or the path is down. Opus's
/// concealment has faded out by then; the buffer plays silence and starts
/// afresh (with a new delay) on the next packet.
pub const MAX_STALL: u32 = 10;
/// Packets held at most (about 1.3 s of audio): a packet further ahead of
/// the playout point restarts the stream, so memory stays bounded whatever
/// arrives.
pub const CAPACITY: usize = 64;
/// Relative-delay samples kept at most (the window holds 200 at 50 packets
/// per second; a flood only shortens the memory).
pub const MAX_HISTORY: usize = 1024;
/// RFC 3550's smoothing of the interarrival jitter estimate.
const JITTER_GAIN: f64 = 1.0 / 16.0;

/// What to play for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet and play it.
    Packet(Vec<u8>),
    /// The frame is lost and this is the packet after it: decode its FEC
    /// data (the decoder falls back to concealment when there is none).
    /// The packet stays in the buffer and plays next.
    Fec(Vec<u8>),
    /// The frame is missing: conceal it with the decoder's concealment.
    Conceal,
    /// Nothing to play (before the first packet, after a long gap): silence.
    Silence,
    /// The buffer is shrinking: decode this packet to keep the decoder's
    /// state continuous, do not play it, and pull again.
    Skip(Vec<u8>),
    /// Decode this packet and play it time-stretched: lengthened by up to
    /// `by` samples per channel when `by > 0` (the delay grows), shortened
    /// by up to `-by` when `by < 0` (it shrinks). Then report the change
    /// made with [`JitterBuffer::stretched`].
    Stretch { packet: Vec<u8>, by: i32 },
}

/// Counters since the stream began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that arrived, each counted once.
    pub received: u64,
    /// Copies of a packet already received.
    pub duplicates: u64,
    /// Packets that arrived after their frame was concealed: dropped.
    pub late: u64,
    /// Packets expected (by sequence number) that never arrived.
    pub lost: u64,
    /// Frames concealed (by FEC or by the decoder), including stalls.
    pub concealed: u64,
    /// Of those, frames rebuilt from the next packet's FEC data.
    pub concealed_fec: u64,
    /// Frames dropped to shrink the delay (only for a large excess).
    pub dropped: u64,
    /// Samples per channel added by lengthening frames (delay grown).
    pub stretched: u64,
    /// Samples per channel removed by shortening frames (delay shrunk).
    pub compressed: u64,
    /// Times the buffer gave up waiting and restarted the stream.
    pub restarts: u64,
}

struct Held {
    timestamp: i64,
    payload: Vec<u8>,
}

pub struct JitterBuffer {
    /// Packets not yet played, by extended sequence number; all are at or
    /// after `next` once playing.
    packets: BTreeMap<u64, Held>,
    /// The next frame to play (extended); `None` while (re)buffering.
    next: Option<u64>,
    /// Media time (extended, in samples) of the next frame.
    next_ts: i64,
    /// Highest extended sequence number and timestamp seen: the reference
    /// for extending the 16- and 32-bit wire values.
    highest: Option<(u64, i64)>,
    first_seq: u64,
    /// Bit i: frame `next - 1 - i` was played from its packet, so a copy
    /// arriving now is a duplicate, not a late packet.
    played: u64,
    /// The first arrival: every time below is in µs since it.
    origin: Option<Instant>,
    /// (arrival, relative delay), both in µs, over the last WINDOW.
    history: VecDeque<(i64, i64)>,
    /// Scratch for the quantile (kept to avoid an allocation per pull).
    sorted: Vec<i64>,
    /// Smallest relative delay in the window, and the target delay
    /// (look-ahead included), as of the last pull.
    lo: i64,
    target: i64,
    /// Playout time of the frame the next pull gives, on the pull grid.
    clock: Option<i64>,
    stalled: u32,
    last_shrink: Option<i64>,
    /// The last frame concealed without FEC as lost (by the decoder, or by
    /// a stall skipped over): if the packet after it then plays, its FEC
    /// would have rebuilt the frame with one frame more of delay.
    concealed_plc: Option<u64>,
    /// When that last happened, or the last loss while the look-ahead was
    /// on (µs): the look-ahead runs for LOSS_MEMORY from then.
    fec_missed: Option<i64>,
    shrink_toggle: bool,
    /// How far ahead of its playout the frame being pulled is decided on
    /// (µs; see `pull_ahead`).
    lead: i64,
    /// When a frame last waited for its late packet (µs).
    surge: Option<i64>,
    last_transit: Option<i64>,
    jitter_us: f64,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// Microseconds to samples per channel.
fn us_to_samples(us: i64) -> i32 {
    (us * i64::from(SAMPLE_RATE) / 1_000_000).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Samples per channel to microseconds.
fn samples_to_us(samples: i64) -> i64 {
    samples * 1_000_000 / i64::from(SAMPLE_RATE)
}

fn us(d: Duration) -> i64 {
    d.as_micros() as i64
}

/// The value congruent to `wire` modulo 2^bits that is nearest to `near`.
fn extend(wire: u64, bits: u32, near: i64) -> i64 {
    let span = 1i64 << bits;
    let base = near - near.rem_euclid(span);
    let mut best = base + wire as i64;
    for cand in [best - span, best + span] {
        if (cand - near).abs() < (best - near).abs() {
            best = cand;
        }
    }
    best
}

impl JitterBuffer {
    pub fn new() -> Self {
        JitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            next_ts: 0,
            highest: None,
            first_seq: 0,
            played: 0,
            origin: None,
            history: VecDeque::new(),
            sorted: Vec::new(),
            lo: 0,
            target: us(MIN_TARGET),
            clock: None,
            stalled: 0,
            last_shrink: None,
            concealed_plc: None,
            fec_missed: None,
            shrink_toggle: false,
            lead: 0,
            surge: None,
            last_transit: None,
            jitter_us: 0.0,
            stats: JitterStats::default(),
        }
    }

    fn micros(&self, t: Instant) -> i64 {
        self.origin
            .map_or(0, |o| t.saturating_duration_since(o).as_micros() as i64)
    }

    /// A packet arrived at `now`: `seq` counts packets and `timestamp`
    /// counts samples per channel at 48 kHz, both wrapping, as on the wire.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: Vec<u8>) {
        self.origin.get_or_insert(now);
        let (seq, ts) = match self.highest {
            None => {
                // Start the extended counters well away from zero so a
                // reordered packet from before the first never goes negative.
                let s = (1u64 << 32) + u64::from(seq);
                let t = (1i64 << 40) + i64::from(timestamp);
                self.first_seq = s;
                self.highest = Some((s, t));
                (s, t)
            }
            Some((hs, ht)) => {
                let s = extend(u64::from(seq), 16, hs as i64) as u64;
                let t = extend(u64::from(timestamp), 32, ht);
                if s > hs {
                    self.highest = Some((s, t));
                }
                (s, t)
            }
        };

        let arrival = self.micros(now);
        let rel = arrival - samples_to_us(ts);
        if let Some(prev) = self.last_transit {
            let d = (rel - prev).abs() as f64;
            self.jitter_us += (d - self.jitter_us) * JITTER_GAIN;
        }
        self.last_transit = Some(rel);

        if self.packets.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if let Some(next) = self.next {
            if seq < next {
                let back = next - 1 - seq;
                if back < 64 && self.played & (1 << back) != 0 {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.received += 1;
                    self.stats.late += 1;
                    // Lateness is exactly what the delay must grow for.
                    self.remember(arrival, rel);
                }
                return;
            }
            if seq >= next + CAPACITY as u64 {
                // Far ahead of the playout point: the sender jumped (or the
                // path was down for a long time). Start again from here.
                self.restart();
            }
        }
        self.stats.received += 1;
        self.remember(arrival, rel);
        self.packets.insert(
            seq,
            Held {
                timestamp: ts,
                payload,
            },
        );
        if self.packets.len() > CAPACITY {
            // Only possible while buffering: keep the newest.
            self.packets.pop_first();
        }
    }

    fn remember(&mut self, arrival: i64, rel: i64) {
        if self.history.len() >= MAX_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((arrival, rel));
    }

    fn restart(&mut self) {
        self.packets.clear();
        self.next = None;
        self.stalled = 0;
        self.played = 0;
        self.stats.restarts += 1;
    }

    /// Forget what is older than the window and work out the smallest
    /// relative delay and the target at `t`.
    fn measure(&mut self, t: i64) {
        while let Some(&(a, _)) = self.history.front() {
            if t - a > us(WINDOW) {
                self.history.pop_front();
            } else {
                break;
            }
        }
        let mut spread = 0;
        if let Some(&(_, first)) = self.history.front() {
            let recent = t - us(PEAK_WINDOW);
            let (mut lo, mut peak) = (first, i64::MIN);
            self.sorted.clear();
            for &(a, r) in &self.history {
                lo = lo.min(r);
                if a >= recent {
                    peak = peak.max(r);
                }
                self.sorted.push(r);
            }
            let k = ((self.sorted.len() - 1) as f64 * QUANTILE).round() as usize;
            let (_, q, _) = self.sorted.select_nth_unstable(k);
            self.lo = lo;
            spread = (*q).max(peak) - lo;
        }
        let lookahead = match self.fec_missed {
            Some(l) if t - l < us(LOSS_MEMORY) => FRAME_US,
            _ => 0,
        };
        // Just after a packet came later than the delay: the jitter is
        // rising, and the next late packet is probably later still.
        let surge = match self.surge {
            Some(s) if t - s < us(SURGE) => spread,
            _ => 0,
        };
        self.target =
            (spread + surge + us(MARGIN)).clamp(us(MIN_TARGET), us(MAX_TARGET)) + lookahead;
    }

    /// How late, after its earliest possible arrival, a frame with media
    /// time `ts` plays at `t` (µs).
    fn delay_at(&self, t: i64, ts: i64) -> i64 {
        t - (samples_to_us(ts) + self.lo)
    }

    /// How long a frame with media time `ts`, played at `t`, will have
    /// waited after its earliest possible arrival when it is decided on
    /// (`lead` before `t`): what must cover the jitter.
    fn waited(&self, t: i64, ts: i64) -> i64 {
        self.delay_at(t, ts) - self.lead
    }

    /// Where on the playout grid a pull at `now` falls (µs).
    fn playout_time(&self, now: Instant) -> i64 {
        let real = self.micros(now);
        match self.clock {
            Some(grid) if (real - grid).abs() <= RESYNC_US => grid + (real - grid) / CLOCK_GAIN,
            _ => real,
        }
    }

    /// The frame to play at `now`. Call once per 20 ms of playback (again at
    /// once after a `Skip`).
    pub fn pull(&mut self, now: Instant) -> Playout {
        self.pull_ahead(now, Duration::ZERO)
    }

    /// The frame to play from `now + lead`, decided at `now`: the caller
    /// still holds `lead` of decoded audio to play first (a FIFO that a
    /// stretched frame left partly full). Packets arriving until the frame
    /// plays are too late for this decision, so the delay they are given
    /// is the delay at `now`: the frame plays `lead` later than that.
    pub fn pull_ahead(&mut self, now: Instant, lead: Duration) -> Playout {
        if self.origin.is_none() {
            return Playout::Silence;
        }
        self.lead = us(lead);
        let t = self.playout_time(now + lead);
        self.measure(t);
        let out = self.decide(t);
        // The next frame plays a frame later; after a Skip the caller pulls
        // again for the same moment.
        self.clock = Some(match out {
            Playout::Skip(_) => t,
            _ => t + FRAME_US,
        });
        out
    }

    fn decide(&mut self, t: i64) -> Playout {
        let Some(mut next) = self.next else {
            return self.start(t);
        };

        if !self.packets.contains_key(&next) {
            let delay = self.waited(t, self.next_ts);
            let later = self.packets.range(next + 1..).next().map(|(&s, _)| s);
            let Some(later) = later.filter(|_| delay >= self.target) else {
                // Still within the target (the packet is probably late), or
                // nothing later to go on with: conceal one frame and wait.
                self.stalled += 1;
                if self.stalled > MAX_STALL {
                    self.restart();
                    return Playout::Silence;
                }
                self.stats.concealed += 1;
                return Playout::Conceal;
            };
            // Waited as long as the target says: the frame is lost. The
            // frames concealed while waiting beyond the target stand in for
            // missing frames from here on; skip those (and only those: an
            // excess of delay from earlier is the shrinking's business).
            let beyond = ((delay - self.target) / FRAME_US) as u64;
            let cover = u64::from(self.stalled).min(beyond).min(later - next);
            self.stalled = 0;
            // Losses keep the look-ahead they needed.
            if self.fec_missed.is_some_and(|m| t - m < us(LOSS_MEMORY)) {
                self.fec_missed = Some(t);
            }
            self.advance(cover, false);
            next = self.next.expect("playing");
            if cover > 0 {
                self.concealed_plc = Some(next - 1);
            }
            if !self.packets.contains_key(&next) {
                self.stats.concealed += 1;
                let fec = self.packets.get(&(next + 1)).map(|h| h.payload.clone());
                self.advance(1, false);
                return match fec {
                    Some(p) => {
                        self.stats.concealed_fec += 1;
                        Playout::Fec(p)
                    }
                    None => {
                        self.concealed_plc = Some(next);
                        Playout::Conceal
                    }
                };
            }
        }

        // The next frame is here: play it, or drop it to shrink the delay.
        // Any stall before it has become delay; a stall means the jitter
        // rose.
        if self.stalled > 0 {
            self.surge = Some(t);
            self.measure(t);
        }
        self.stalled = 0;
        if self.concealed_plc == Some(next - 1) {
            self.fec_missed = Some(t);
        }
        self.next_ts = self.packets[&next].timestamp;
        let excess = self.waited(t, self.next_ts) - self.target;
        let has_successor = self.packets.contains_key(&(next + 1));
        if excess >= FAST_SHRINK_EXCESS_US && has_successor {
            self.shrink_toggle = !self.shrink_toggle;
            if self.shrink_toggle {
                self.last_shrink = Some(t);
                self.stats.dropped += 1;
                let held = self.packets.remove(&next).expect("present");
                self.advance(1, true);
                return Playout::Skip(held.payload);
            }
        }
        let held = self.packets.remove(&next).expect("present");
        self.advance(1, true);
        if excess >= us(ACCELERATE_EXCESS)
            && self.last_shrink.is_none_or(|l| t - l >= us(SHRINK_EVERY))
        {
            self.last_shrink = Some(t);
            return Playout::Stretch {
                packet: held.payload,
                by: -us_to_samples(excess),
            };
        }
        if -excess >= us(MIN_STRETCH) {
            return Playout::Stretch {
                packet: held.payload,
                by: us_to_samples((-excess).min(us(MAX_EXPAND))),
            };
        }
        Playout::Packet(held.payload)
    }

    /// The frame just pulled (a [`Playout::Stretch`]) was played `samples`
    /// per channel longer (positive) or shorter (negative) than a frame:
    /// the next one plays that much later or earlier.
    pub fn stretched(&mut self, samples: i32) {
        if let Some(c) = self.clock.as_mut() {
            *c += samples_to_us(i64::from(samples));
        }
        if samples > 0 {
            self.stats.stretched += u64::from(samples.unsigned_abs());
        } else {
            self.stats.compressed += u64::from(samples.unsigned_abs());
        }
    }

    /// Move the playout point `n` frames on; `played` says whether the
    /// frame just left came from its packet.
    fn advance(&mut self, n: u64, played: bool) {
        let Some(next) = self.next.as_mut() else {
            return;
        };
        *next += n;
        self.played = if n >= 64 { 0 } else { self.played << n };
        if played {
            self.played |= 1;
        }
        self.next_ts += n as i64 * FRAME_SAMPLES as i64;
        // The media time of the new next frame: its packet's when present.
        if let Some(h) = self.packets.get(next) {
            self.next_ts = h.timestamp;
        }
    }

    /// Not playing yet: start once the first packet has waited the target.
    fn start(&mut self, t: i64) -> Playout {
        let Some((&seq, held)) = self.packets.first_key_value() else {
            return Playout::Silence;
        };
        let ts = held.timestamp;
        if self.waited(t, ts) < self.target {
            return Playout::Silence;
        }
        self.next = Some(seq);
        self.next_ts = ts;
        self.played = 0;
        self.stalled = 0;
        self.decide(t)
    }

    /// Counters; `lost` is computed from the sequence numbers seen.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        if let Some((hs, _)) = self.highest {
            let expected = hs - self.first_seq + 1;
            s.lost = expected.saturating_sub(s.received);
        }
        s
    }

    /// The delay the next frame will have if played at `now`, in ms: how long
    /// after its earliest possible arrival it reaches the speaker.
    /// While stalled, the frames concealed so far stand in for the missing
    /// one, so they do not count as delay unless its packet turns up.
    pub fn delay_ms(&self, now: Instant) -> f64 {
        if self.next.is_none() {
            return 0.0;
        }
        let stall = i64::from(self.stalled) * FRAME_US;
        (self.delay_at(self.micros(now), self.next_ts) - stall).max(0) as f64 / 1000.0
    }

    /// The delay the buffer aims at (look-ahead included), in ms, as of the
    /// last pull.
    pub fn target_ms(&self) -> f64 {
        self.target as f64 / 1000.0
    }

    /// RFC 3550 interarrival jitter, in µs.
    pub fn jitter_us(&self) -> u32 {
        self.jitter_us.min(f64::from(u32::MAX)) as u32
    }

    /// Packets held now (bounded by [`CAPACITY`]).
    pub fn held(&self) -> usize {
        self.packets.len()
    }

    /// Relative-delay samples held now (bounded).
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Highest extended sequence number seen, for loss accounting per
    /// report interval.
    pub fn highest_seq(&self) -> Option<u64> {
        self.highest.map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests;
