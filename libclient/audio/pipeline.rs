//! One call's audio: PCM in, packets out (with sequence numbers and media
//! timestamps); packets in, PCM out through the jitter buffer; receiver
//! reports; statistics. The call code owns one and moves its packets over
//! whichever transport the dialect uses; this never does I/O and never reads
//! the clock (every method takes `now`).

use std::time::{Duration, Instant};

use chinwag_proto::voice::{Echo, Report, VoicePacket};
use chinwag_proto::DecodeError;

use super::codec::{
    Decoder, Encoder, Profile, DEFAULT_LOSS_PCT, FRAME_SAMPLES, MAX_PACKET, MAX_PACKET_SAMPLES,
    MIN_LOSS_PCT, SAMPLE_RATE,
};
use super::jitter::{JitterBuffer, Playout};
use super::stretch::Stretcher;
use super::AudioError;

/// How often each side of an accounts call reports what it receives.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// An echoed report older than this is from a confused peer, not an RTT.
const MAX_RTT_MS: u32 = 10_000;
/// Smoothing of the round-trip time (RFC 6298's 1/8).
const RTT_GAIN: f64 = 1.0 / 8.0;
/// How fast the sender's expected loss falls when reports say it dropped:
/// a quarter of the way per report, so FEC outlasts a burst by seconds.
const LOSS_RELEASE: f32 = 0.25;
/// Consecutive reports of no loss after which the sender pauses FEC (its
/// expected loss goes to 0), while the call has never reported a loss: 5 s
/// of a clean path. The first second is protected whatever the path (a
/// listener judges a call by it), and a few more seconds of reports that
/// each cover 50 packets make a path that loses now and then unlikely to
/// look clean: at 1 % random loss, five clean reports in a row come with a
/// chance of (0.99^50)^5 = 8 %, and the first loss turns FEC back on.
pub const CLEAN_REPORTS_TO_PAUSE: u32 = 5;
/// The same once the call has reported any loss: 30 s. A path that lost
/// packets loses them again (Wi-Fi, a congested uplink), and an
/// unprotected first loss after a pause costs a frame of concealment, so
/// such a path has to stay clean six times longer before FEC pauses again.
pub const CLEAN_REPORTS_TO_PAUSE_AFTER_LOSS: u32 = 30;
/// Reports in a row that cover no media (the peer received nothing new:
/// `Report::no_media`) after which FEC resumes if it was paused: 2 s in
/// which nothing of ours arrived is an outage of the path one way (the
/// call sends a packet every 20 ms, silence and mute included), and a path
/// that just failed is the likeliest to lose packets when it comes back.
/// One such report is only held: it may be the call's first second, before
/// the first packet arrived, or a short stall.
pub const EMPTY_REPORTS_TO_RESUME: u32 = 2;
/// Bitrates are measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// One encoded 20 ms frame, ready for the transport. Over babel only `opus`
/// goes on the wire (one VoiceData); over accounts all three do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub seq: u16,
    pub timestamp: u32,
    pub opus: Vec<u8>,
}

impl EncodedFrame {
    /// The accounts UDP datagram carrying this frame.
    pub fn accounts_packet(&self) -> Vec<u8> {
        VoicePacket::Media {
            seq: self.seq,
            timestamp: self.timestamp,
            opus: &self.opus,
        }
        .to_bytes()
    }
}

/// Everything a user looks at when a call sounds bad, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Packets received, each counted once (duplicates are not).
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Expected by sequence number and never arrived.
    pub packets_lost: u64,
    /// Arrived after their frame had been concealed; dropped.
    pub packets_late: u64,
    pub packets_duplicate: u64,
    /// Packets Opus could not decode (concealed instead).
    pub packets_undecodable: u64,
    /// Frames played that were not decoded from their own packet: rebuilt
    /// from FEC or concealed by the decoder (losses, late packets, stalls).
    pub frames_concealed: u64,
    /// Of those, frames decoded from the next packet's FEC data.
    pub frames_concealed_fec: u64,
    /// Frames dropped to shrink the playout delay (only for a large excess:
    /// smaller ones are shortened, see `samples_compressed`).
    pub frames_dropped: u64,
    /// Samples per channel (48 kHz) added by time-stretching decoded audio
    /// to grow the playout delay (not concealment: real audio, played
    /// longer).
    pub samples_stretched: u64,
    /// Samples per channel removed by time-compressing decoded audio to
    /// shrink the playout delay.
    pub samples_compressed: u64,
    /// How long after its earliest possible arrival audio is played now.
    pub playout_delay_ms: f64,
    /// The playout delay the jitter buffer aims at.
    pub target_delay_ms: f64,
    /// Interarrival jitter of what we receive (RFC 3550).
    pub jitter_ms: f64,
    /// Round-trip time; `None` where the transport carries no reports
    /// (babel) or before the first echo.
    pub rtt_ms: Option<f64>,
    /// Bits per second over the last second, payload only.
    pub send_bitrate: u32,
    pub recv_bitrate: u32,
    /// The loss the encoder's FEC protects against (0: no FEC).
    pub expected_loss_pct: u8,
    /// The peer's view of our stream, from its latest report. The loss is
    /// `None` before the first report and when the latest one covered no
    /// media (nothing of ours reached the peer in its interval: no
    /// measurement, not "0 % lost"); the running count and the jitter
    /// read from every report.
    pub remote_loss_pct: Option<u8>,
    pub remote_lost: Option<u32>,
    pub remote_jitter_ms: Option<f64>,
}

/// Bytes per second over a sliding one-second bucket.
#[derive(Default)]
struct RateMeter {
    start: Option<Instant>,
    bytes: u64,
    last_bps: u32,
    last_end: Option<Instant>,
}

impl RateMeter {
    fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.last_bps = (self.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u32;
            self.last_end = Some(now);
            self.start = Some(now);
            self.bytes = 0;
        }
        self.bytes += bytes as u64;
    }

    fn bps(&self, now: Instant) -> u32 {
        match self.last_end {
            // Nothing for two windows: the stream stopped.
            Some(t) if now.saturating_duration_since(t) <= 2 * RATE_WINDOW => self.last_bps,
            _ => 0,
        }
    }
}

/// The newest report of the peer's, kept to echo it back.
struct PeerReport {
    sent_ms: u32,
    at: Instant,
    report: Report,
}

/// The audio of one call. Not thread-safe by itself: the call code puts it
/// behind a lock (sends and receives are short and never block).
pub struct CallAudio {
    profile: Profile,
    encoder: Encoder,
    decoder: Decoder,
    jitter: JitterBuffer,
    origin: Instant,
    /// PCM pushed that does not yet fill a frame (always < one frame).
    pending: Vec<i16>,
    send_seq: u16,
    send_ts: u32,
    /// Sequence and timestamp given to packets from an ordered transport.
    recv_seq: u16,
    recv_ts: u32,
    /// Decoded PCM not yet pulled, oldest first: what a pull did not take
    /// of the last frame (stretched or not) and nothing more. Stretching
    /// works on all of it.
    fifo: Vec<i16>,
    /// How much of the FIFO's front is decoded audio (from packets, or their
    /// FEC): what is after it is concealment or silence, which is not worth
    /// waiting for when the call ends.
    fifo_audio: usize,
    stretcher: Stretcher,
    scratch: Vec<i16>,
    packet_buf: Vec<u8>,
    packets_sent: u64,
    bytes_sent: u64,
    bytes_received: u64,
    undecodable: u64,
    send_rate: RateMeter,
    recv_rate: RateMeter,
    peer: Option<PeerReport>,
    next_report: Option<Instant>,
    /// (expected, received) at the previous report.
    reported: Option<(u64, u64)>,
    rtt_ms: Option<f64>,
    /// Smoothed loss the peer reports, driving the encoder's FEC (0: paused).
    loss_estimate: f32,
    /// Reports of no loss since the last one with loss (reports that cover
    /// no media neither count nor break the run).
    clean_reports: u32,
    /// Reports in a row that covered no media.
    empty_reports: u32,
    /// Whether any report of this call has counted a loss.
    seen_loss: bool,
    /// FEC on the sending side and concealment on the receiving side (on
    /// unless a measurement turns them off).
    recovery: bool,
}

impl CallAudio {
    /// A call's audio, created when the call is established at `now`.
    pub fn new(profile: Profile, now: Instant) -> Result<Self, AudioError> {
        Ok(CallAudio {
            profile,
            encoder: Encoder::new(profile)?,
            decoder: Decoder::new(profile)?,
            jitter: JitterBuffer::new(),
            origin: now,
            pending: Vec::with_capacity(profile.frame_len()),
            send_seq: 0,
            send_ts: 0,
            recv_seq: 0,
            recv_ts: 0,
            fifo: Vec::with_capacity(3 * MAX_PACKET_SAMPLES * profile.channels()),
            fifo_audio: 0,
            stretcher: Stretcher::new(profile.channels()),
            scratch: vec![0; MAX_PACKET_SAMPLES * profile.channels()],
            packet_buf: vec![0; MAX_PACKET],
            packets_sent: 0,
            bytes_sent: 0,
            bytes_received: 0,
            undecodable: 0,
            send_rate: RateMeter::default(),
            recv_rate: RateMeter::default(),
            peer: None,
            next_report: None,
            reported: None,
            rtt_ms: None,
            loss_estimate: f32::from(DEFAULT_LOSS_PCT),
            clean_reports: 0,
            empty_reports: 0,
            seen_loss: false,
            recovery: true,
        })
    }

    /// Loss recovery on (the default) or off: off, the encoder adds no FEC
    /// and a missing frame plays as silence instead of being rebuilt or
    /// concealed. For measuring what recovery is worth; calls keep it on.
    pub fn set_loss_recovery(&mut self, on: bool) -> Result<(), AudioError> {
        self.encoder.set_fec(on)?;
        self.recovery = on;
        Ok(())
    }

    /// Whether received audio is still waiting to be played (packets in the
    /// jitter buffer or decoded samples not yet pulled).
    pub fn has_pending(&self) -> bool {
        self.fifo_audio > 0 || self.jitter.held() > 0
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// What the receive side holds now: packets in the jitter buffer,
    /// relative-delay samples it keeps, and decoded samples not yet pulled.
    /// Each is bounded whatever arrives (the `call_receive` fuzz target
    /// checks it after every step).
    #[doc(hidden)]
    pub fn held(&self) -> (usize, usize, usize) {
        (
            self.jitter.held(),
            self.jitter.history_len(),
            self.fifo.len(),
        )
    }

    /// Interleaved channels of the PCM this call takes and gives.
    pub fn channels(&self) -> usize {
        self.profile.channels()
    }

    fn check_shape(&self, len: usize) -> Result<(), AudioError> {
        super::check_whole_frames(len, self.channels())
    }

    /// Push captured PCM (48 kHz, interleaved, the profile's channels, any
    /// number of whole sample frames); returns the packets it completes, in
    /// order. A partial frame waits for the next push.
    pub fn send_pcm(&mut self, now: Instant, pcm: &[i16]) -> Result<Vec<EncodedFrame>, AudioError> {
        self.check_shape(pcm.len())?;
        let frame_len = self.profile.frame_len();
        let mut out = Vec::with_capacity((self.pending.len() + pcm.len()) / frame_len);
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (frame_len - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == frame_len {
                let n = self.encoder.encode(&self.pending, &mut self.packet_buf)?;
                self.pending.clear();
                out.push(EncodedFrame {
                    seq: self.send_seq,
                    timestamp: self.send_ts,
                    opus: self.packet_buf[..n].to_vec(),
                });
                self.send_seq = self.send_seq.wrapping_add(1);
                self.send_ts = self.send_ts.wrapping_add(FRAME_SAMPLES as u32);
                self.packets_sent += 1;
                self.bytes_sent += n as u64;
                self.send_rate.add(now, n);
            }
        }
        Ok(out)
    }

    /// A media packet from a transport that carries sequence numbers and
    /// timestamps (accounts).
    pub fn receive(&mut self, now: Instant, seq: u16, timestamp: u32, opus: &[u8]) {
        self.bytes_received += opus.len() as u64;
        self.recv_rate.add(now, opus.len());
        self.jitter.push(now, seq, timestamp, opus.to_vec());
    }

    /// A packet from an ordered, lossless transport that carries only the
    /// Opus packet (babel's VoiceData over TCP): numbered here, in arrival
    /// order, its timestamp advanced by its own duration.
    pub fn receive_in_order(&mut self, now: Instant, opus: &[u8]) {
        let samples = opus::packet::get_nb_samples(opus, SAMPLE_RATE)
            .ok()
            .filter(|&n| n > 0 && n <= MAX_PACKET_SAMPLES)
            .unwrap_or(FRAME_SAMPLES);
        let (seq, ts) = (self.recv_seq, self.recv_ts);
        self.recv_seq = self.recv_seq.wrapping_add(1);
        self.recv_ts = self.recv_ts.wrapping_add(samples as u32);
        self.receive(now, seq, ts, opus);
    }

    /// One accounts voice datagram, magic included: media goes to the
    /// jitter buffer, a report updates RTT and FEC. A datagram that is not a
    /// voice packet is refused (the caller drops it).
    pub fn receive_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DecodeError> {
        match VoicePacket::decode(datagram)? {
            VoicePacket::Media {
                seq,
                timestamp,
                opus,
            } => self.receive(now, seq, timestamp, opus),
            VoicePacket::Report(r) => self.on_report(now, &r),
        }
        Ok(())
    }

    /// Fill `out` with what to play from `now` on (48 kHz, interleaved, any
    /// number of whole sample frames): decoded, concealed or silence, always
    /// all of it.
    pub fn pull_pcm(&mut self, now: Instant, out: &mut [i16]) -> Result<(), AudioError> {
        self.check_shape(out.len())?;
        let ch = self.channels();
        while self.fifo.len() < out.len() {
            // The frame pulled now starts playing after what the FIFO holds.
            let lead = samples_duration(self.fifo.len() / ch);
            self.decode_next(now, lead);
        }
        out.copy_from_slice(&self.fifo[..out.len()]);
        self.fifo.drain(..out.len());
        self.fifo_audio = self.fifo_audio.saturating_sub(out.len());
        Ok(())
    }

    fn decode_next(&mut self, now: Instant, lead: Duration) {
        let frame_len = self.profile.frame_len();
        let ch = self.channels();
        // A Skip is followed by a frame to play; the bound is only a guard.
        for _ in 0..4 {
            let mut stretch = 0;
            let playout = self.jitter.pull_ahead(now, lead);
            let audio = matches!(
                playout,
                Playout::Packet(_) | Playout::Stretch { .. } | Playout::Fec(_)
            );
            let decoded = match playout {
                Playout::Skip(p) => {
                    let _ = self.decoder.decode(&p, &mut self.scratch);
                    continue;
                }
                Playout::Packet(p) => self.decode(&p),
                Playout::Stretch { packet, by } => {
                    stretch = by;
                    self.decode(&packet)
                }
                Playout::Fec(_) | Playout::Conceal if !self.recovery => None,
                Playout::Fec(next) => self
                    .decoder
                    .decode_fec(&next, &mut self.scratch)
                    .or_else(|_| self.decoder.conceal(&mut self.scratch))
                    .ok(),
                Playout::Conceal => self.decoder.conceal(&mut self.scratch).ok(),
                Playout::Silence => None,
            };
            match decoded {
                Some(n) if n > 0 => self.fifo.extend_from_slice(&self.scratch[..n * ch]),
                _ => self.fifo.resize(self.fifo.len() + frame_len, 0),
            }
            if stretch != 0 {
                let made = self.stretcher.stretch(&mut self.fifo, stretch);
                self.jitter.stretched(made);
            }
            if audio {
                self.fifo_audio = self.fifo.len();
            }
            return;
        }
        self.fifo.resize(self.fifo.len() + frame_len, 0);
    }

    /// Decode a packet to play; an undecodable one is concealed.
    fn decode(&mut self, packet: &[u8]) -> Option<usize> {
        match self.decoder.decode(packet, &mut self.scratch) {
            Ok(n) => Some(n),
            Err(_) => {
                self.undecodable += 1;
                self.decoder.conceal(&mut self.scratch).ok()
            }
        }
    }

    /// A receiver report from the peer (accounts): measure the round trip
    /// from its echo, and set the encoder's expected loss from its loss: at
    /// once when it rises, a quarter of the way per report when it falls,
    /// never under [`MIN_LOSS_PCT`] while FEC is coded; 0 (FEC paused) after
    /// [`CLEAN_REPORTS_TO_PAUSE`] reports in a row without loss
    /// ([`CLEAN_REPORTS_TO_PAUSE_AFTER_LOSS`] once the call has lost
    /// anything); back at once with the first report of a loss. A report
    /// that covers no media (`no_media`: the peer received nothing new) is
    /// no measurement: it changes nothing, unless it is the
    /// [`EMPTY_REPORTS_TO_RESUME`]-th in a row, which ends a pause (back at
    /// [`DEFAULT_LOSS_PCT`], as a call starts) and starts the clean run
    /// afresh.
    pub fn on_report(&mut self, now: Instant, r: &Report) {
        if let Some(echo) = r.echo {
            let rtt = self
                .clock_ms(now)
                .wrapping_sub(echo.sent_ms)
                .wrapping_sub(echo.held_ms);
            if rtt <= MAX_RTT_MS {
                let rtt = f64::from(rtt);
                self.rtt_ms = Some(match self.rtt_ms {
                    None => rtt,
                    Some(old) => old + (rtt - old) * RTT_GAIN,
                });
            }
        }
        self.peer = Some(PeerReport {
            sent_ms: r.sent_ms,
            at: now,
            report: *r,
        });
        let paused = if r.no_media {
            self.empty_reports = self.empty_reports.saturating_add(1);
            if self.empty_reports < EMPTY_REPORTS_TO_RESUME {
                return;
            }
            // An outage one way: protected as a call that starts, and the
            // path has to show itself clean again from nothing.
            self.clean_reports = 0;
            self.loss_estimate = self.loss_estimate.max(f32::from(DEFAULT_LOSS_PCT));
            false
        } else {
            self.empty_reports = 0;
            if r.loss_pct > 0 {
                self.clean_reports = 0;
                self.seen_loss = true;
            } else {
                self.clean_reports = self.clean_reports.saturating_add(1);
            }
            let pause_after = if self.seen_loss {
                CLEAN_REPORTS_TO_PAUSE_AFTER_LOSS
            } else {
                CLEAN_REPORTS_TO_PAUSE
            };
            let paused = self.clean_reports >= pause_after;
            let reported = f32::from(r.loss_pct);
            self.loss_estimate = if paused {
                0.0
            } else if reported >= self.loss_estimate {
                reported
            } else {
                self.loss_estimate - (self.loss_estimate - reported) * LOSS_RELEASE
            };
            paused
        };
        let pct = if paused {
            0
        } else {
            (self.loss_estimate.ceil() as u8).max(MIN_LOSS_PCT)
        };
        // A profile without FEC, or with FEC switched off by the app,
        // ignores it.
        let _ = self.encoder.set_expected_loss(pct);
    }

    /// The report to send now, once per [`REPORT_INTERVAL`] (accounts calls
    /// send it as a datagram with [`VoicePacket::Report`]).
    pub fn poll_report(&mut self, now: Instant) -> Option<Report> {
        let due = *self.next_report.get_or_insert(now + REPORT_INTERVAL);
        if now < due {
            return None;
        }
        // Keep the cadence, but never fire a backlog after a long pause.
        self.next_report = Some((due + REPORT_INTERVAL).max(now));
        let js = self.jitter.stats();
        // Expected so far: every sequence number up to the highest seen.
        let expected_total = js.received + js.lost;
        let (prev_expected, prev_received) = self.reported.unwrap_or((0, 0));
        let expected = expected_total.saturating_sub(prev_expected);
        let received = js.received.saturating_sub(prev_received);
        // Nothing new arrived: the interval measured nothing (the path may
        // be down one way), which the report says rather than "0 % lost".
        let no_media = expected == 0;
        let loss_pct = if no_media {
            0
        } else {
            (expected.saturating_sub(received) * 100)
                .div_ceil(expected)
                .min(100) as u8
        };
        self.reported = Some((expected_total, js.received));
        Some(Report {
            loss_pct,
            no_media,
            lost: js.lost.min(u64::from(u32::MAX)) as u32,
            jitter_us: self.jitter.jitter_us(),
            sent_ms: self.clock_ms(now),
            echo: self.peer.as_ref().map(|p| Echo {
                sent_ms: p.sent_ms,
                held_ms: now
                    .saturating_duration_since(p.at)
                    .as_millis()
                    .min(u128::from(u32::MAX)) as u32,
            }),
        })
    }

    /// The report clock: milliseconds since the call began, wrapping.
    fn clock_ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.origin).as_millis() as u32
    }

    /// Statistics at `now`.
    pub fn stats(&mut self, now: Instant) -> CallStats {
        let js = self.jitter.stats();
        let remote = self.peer.as_ref().map(|p| p.report);
        CallStats {
            packets_sent: self.packets_sent,
            bytes_sent: self.bytes_sent,
            packets_received: js.received,
            bytes_received: self.bytes_received,
            packets_lost: js.lost,
            packets_late: js.late,
            packets_duplicate: js.duplicates,
            packets_undecodable: self.undecodable,
            frames_concealed: js.concealed,
            frames_concealed_fec: js.concealed_fec,
            frames_dropped: js.dropped,
            samples_stretched: js.stretched,
            samples_compressed: js.compressed,
            playout_delay_ms: self.jitter.delay_ms(now),
            target_delay_ms: self.jitter.target_ms(),
            jitter_ms: f64::from(self.jitter.jitter_us()) / 1000.0,
            rtt_ms: self.rtt_ms,
            send_bitrate: self.send_rate.bps(now),
            recv_bitrate: self.recv_rate.bps(now),
            expected_loss_pct: self.encoder.expected_loss(),
            // A report that covered no media measured no loss: unknown,
            // not "0 % lost" (the path may be down one way).
            remote_loss_pct: remote.filter(|r| !r.no_media).map(|r| r.loss_pct),
            remote_lost: remote.map(|r| r.lost),
            remote_jitter_ms: remote.map(|r| f64::from(r.jitter_us) / 1000.0),
        }
    }
}

fn samples_duration(samples_per_channel: usize) -> Duration {
    Duration::from_micros(samples_per_channel as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
}

#[cfg(test)]
mod tests;
