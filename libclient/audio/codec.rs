//! Opus for calls: one encoder and one decoder per call, configured by the
//! dialect's profile. Owns codec settings only; never touches a socket, a
//! device or the clock.

use super::AudioError;

/// Every call runs at 48 kHz, Opus's native rate, so nothing is resampled.
pub const SAMPLE_RATE: u32 = 48_000;
/// 20 ms frames: what the original Babel client sends, and Opus's usual
/// trade of latency against overhead for voice.
pub const FRAME_MS: u32 = 20;
/// Samples per channel in one frame (960 at 48 kHz).
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;
/// The largest packet the encoder may produce: Opus's own limit for a
/// single frame, and the accounts voice packet's (`accounts::MAX_VOICE`).
pub const MAX_PACKET: usize = 1275;
/// The longest packet a peer may send that we decode: Opus's limit, 120 ms.
pub const MAX_PACKET_SAMPLES: usize = 120 * (SAMPLE_RATE as usize / 1000);

/// How a dialect's calls use Opus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Exactly what the original Babel client sends (seeds/NOTES.md): stereo,
    /// 960-sample frames, the VOIP application, libopus's defaults for the
    /// rest (bitrate, no FEC: babel voice runs over TCP, which loses nothing),
    /// one packet per VoiceData. A frame whose two channels are equal is
    /// coded mono in that stereo stream (docs/protocols/babel.md).
    Babel,
    /// chinwag's UDP voice (docs/protocols/accounts.md): mono speech at
    /// 64 kbit/s VBR, in-band FEC on with an expected loss the receiver's
    /// reports adjust (starting at [`DEFAULT_LOSS_PCT`], paused at 0 while
    /// the path loses nothing), DTX off so every 20 ms carries a packet and
    /// a gap always means loss.
    Accounts,
}

/// The accounts profile's expected packet loss before the first report: high
/// enough that FEC is in every packet from the start (a call's first second
/// is when a listener judges it), low enough to leave most bits to the voice.
pub const DEFAULT_LOSS_PCT: u8 = 10;
/// Bounds of the expected loss the sender sets from reports while FEC is
/// coded: a path that loses anything gets at least 2 % (loss comes in
/// bursts), and past 40 % the extra redundancy only starves the primary
/// encoding. Below the range is 0: FEC paused on a clean path
/// ([`Encoder::set_expected_loss`]).
pub const MIN_LOSS_PCT: u8 = 2;
pub const MAX_LOSS_PCT: u8 = 40;
/// Accounts bitrate: fullband speech in Opus's hybrid mode, whose SILK layer
/// carries the FEC (every packet of the test speech stays hybrid at this
/// rate). The FEC frames get better with the primary rate. Measured on the
/// test speech (bench/audio) through the encoder and decoder alone, 10 %
/// random loss, every loss rebuilt from FEC, wideband PESQ over five loss
/// patterns (mean, worst): 64 kbit/s 3.44, 3.12 (4.06 clean); 56 kbit/s
/// 3.30, 2.99; 48 kbit/s 3.11, 2.81 (3.68 clean). The encoder's CPU time is
/// the same at all three; the packets average 55 kbit/s of payload.
const ACCOUNTS_BITRATE: i32 = 64_000;
/// Middle complexity: one call (encode and decode, both directions) costs
/// 1.7 % of one core here, against 3.3 % at 8 (docs/library.md, "Call
/// audio"). Complexity 8 scores as 64 kbit/s does at 5 above (48 kbit/s:
/// 3.45, 3.10 at 10 % loss) for twice the encoder's time; 4 codes the same
/// as 5, and 3 loses 0.6 PESQ clean.
const ACCOUNTS_COMPLEXITY: i32 = 5;

impl Profile {
    /// Interleaved channels of the call's PCM (and of its Opus stream).
    pub fn channels(self) -> usize {
        match self {
            Profile::Babel => 2,
            Profile::Accounts => 1,
        }
    }

    /// Interleaved samples in one 20 ms frame.
    pub fn frame_len(self) -> usize {
        FRAME_SAMPLES * self.channels()
    }

    fn opus_channels(self) -> opus::Channels {
        match self.channels() {
            1 => opus::Channels::Mono,
            _ => opus::Channels::Stereo,
        }
    }

    /// Whether packets carry FEC for the previous frame.
    pub fn fec(self) -> bool {
        matches!(self, Profile::Accounts)
    }
}

fn codec_err(what: &str, e: opus::Error) -> AudioError {
    AudioError::Codec(format!("{what}: {e}"))
}

/// One call's Opus encoder.
pub struct Encoder {
    profile: Profile,
    inner: opus::Encoder,
    /// The app's switch ([`Encoder::set_fec`]): off, reports change nothing.
    fec: bool,
    /// The expected loss libopus codes for: 0 is no FEC (switched off, or
    /// paused on a clean path).
    loss_pct: u8,
    /// A stereo profile's encoder told to code mono (`OPUS_SET_FORCE_CHANNELS(1)`)
    /// because the last frame's two channels were the same.
    coding_mono: bool,
}

/// Whether every sample frame of interleaved stereo `frame` has its left
/// and right samples equal: a mono source (a microphone) spread to both
/// channels, which a mono-coded Opus packet carries exactly as well.
fn channels_equal(frame: &[i16]) -> bool {
    // Compare in blocks without an early exit inside one, so the compiler
    // can vectorise; stop at the first block that differs.
    frame.chunks(64).all(|block| {
        block
            .chunks_exact(2)
            .fold(0u16, |acc, lr| acc | (lr[0] ^ lr[1]) as u16)
            == 0
    })
}

impl Encoder {
    pub fn new(profile: Profile) -> Result<Self, AudioError> {
        let mut inner = opus::Encoder::new(
            SAMPLE_RATE,
            profile.opus_channels(),
            opus::Application::Voip,
        )
        .map_err(|e| codec_err("cannot create the Opus encoder", e))?;
        let mut loss_pct = 0;
        if profile == Profile::Accounts {
            let set = |inner: &mut opus::Encoder| -> Result<(), opus::Error> {
                inner.set_bitrate(opus::Bitrate::Bits(ACCOUNTS_BITRATE))?;
                inner.set_complexity(ACCOUNTS_COMPLEXITY)?;
                inner.set_signal(opus::Signal::Voice)?;
                inner.set_inband_fec(true)?;
                inner.set_packet_loss_perc(i32::from(DEFAULT_LOSS_PCT))?;
                inner.set_dtx(false)
            };
            set(&mut inner).map_err(|e| codec_err("cannot configure the Opus encoder", e))?;
            loss_pct = DEFAULT_LOSS_PCT;
        }
        Ok(Encoder {
            profile,
            inner,
            fec: profile.fec(),
            loss_pct,
            coding_mono: false,
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Encode exactly one frame (`profile.frame_len()` interleaved samples)
    /// into `out`, which should hold [`MAX_PACKET`] bytes; returns the length.
    pub fn encode(&mut self, frame: &[i16], out: &mut [u8]) -> Result<usize, AudioError> {
        if frame.len() != self.profile.frame_len() {
            return Err(AudioError::Format(format!(
                "an Opus frame is {} samples, not {}",
                self.profile.frame_len(),
                frame.len()
            )));
        }
        if self.profile.channels() == 2 {
            self.code_mono(channels_equal(frame))?;
        }
        self.inner
            .encode(frame, out)
            .map_err(|e| codec_err("Opus encoding failed", e))
    }

    /// Code the next frames mono (both channels the same) or stereo. A
    /// stereo stream may mix mono- and stereo-coded packets (RFC 6716,
    /// section 3.1: the TOC's stereo bit is per packet, and a stereo decoder
    /// plays a mono packet on both channels), and mono coding of a frame
    /// whose channels are equal loses nothing while costing the encoder
    /// about a quarter less (docs/protocols/babel.md, "Peer to peer").
    fn code_mono(&mut self, mono: bool) -> Result<(), AudioError> {
        if mono != self.coding_mono {
            let force = mono.then_some(opus::Channels::Mono);
            self.inner
                .set_force_channels(force)
                .map_err(|e| codec_err("cannot switch mono coding", e))?;
            self.coding_mono = mono;
        }
        Ok(())
    }

    /// The loss the encoder protects against, in percent (0 without FEC:
    /// switched off, paused, or a profile without it).
    pub fn expected_loss(&self) -> u8 {
        self.loss_pct
    }

    /// Protect against `pct` percent loss, clamped to
    /// [`MIN_LOSS_PCT`]..=[`MAX_LOSS_PCT`]; 0 pauses FEC (a clean path): the
    /// packets carry no redundancy, and the SILK layer's second,
    /// low-bitrate coding of each frame is not run (libopus codes LBRR only
    /// for an expected loss above 0). Does nothing for a profile without
    /// FEC or with FEC switched off ([`Encoder::set_fec`]).
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), AudioError> {
        if !self.fec {
            return Ok(());
        }
        let pct = match pct {
            0 => 0,
            p => p.clamp(MIN_LOSS_PCT, MAX_LOSS_PCT),
        };
        if pct != self.loss_pct {
            self.inner
                .set_packet_loss_perc(i32::from(pct))
                .map_err(|e| codec_err("cannot set the expected loss", e))?;
            self.loss_pct = pct;
        }
        Ok(())
    }

    /// Turn in-band FEC on or off (a profile without FEC stays without): the
    /// app's switch, which wins over the reports. Off, packets carry no
    /// redundancy, the expected loss reads 0 and reports change nothing; on
    /// again, protection resumes at [`DEFAULT_LOSS_PCT`] until reports say
    /// otherwise.
    pub fn set_fec(&mut self, on: bool) -> Result<(), AudioError> {
        if !self.profile.fec() || on == self.fec {
            return Ok(());
        }
        let pct = if on { DEFAULT_LOSS_PCT } else { 0 };
        self.inner
            .set_inband_fec(on)
            .and_then(|()| self.inner.set_packet_loss_perc(i32::from(pct)))
            .map_err(|e| codec_err("cannot switch FEC", e))?;
        self.fec = on;
        self.loss_pct = pct;
        Ok(())
    }

    /// The bitrate the encoder aims at, in bits per second.
    pub fn target_bitrate(&mut self) -> Option<u32> {
        match self.inner.get_bitrate() {
            Ok(opus::Bitrate::Bits(b)) => u32::try_from(b).ok(),
            _ => None,
        }
    }
}

/// One call's Opus decoder. Every method writes whole frames of the
/// profile's channel count.
pub struct Decoder {
    profile: Profile,
    inner: opus::Decoder,
}

impl Decoder {
    pub fn new(profile: Profile) -> Result<Self, AudioError> {
        let inner = opus::Decoder::new(SAMPLE_RATE, profile.opus_channels())
            .map_err(|e| codec_err("cannot create the Opus decoder", e))?;
        Ok(Decoder { profile, inner })
    }

    /// Decode a packet into `out` (room for [`MAX_PACKET_SAMPLES`] per
    /// channel); returns the samples per channel written. A packet Opus
    /// refuses is an error: the caller conceals instead.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        if packet.is_empty() {
            return Err(AudioError::Codec("empty Opus packet".into()));
        }
        self.inner
            .decode(packet, out, false)
            .map_err(|e| codec_err("undecodable Opus packet", e))
    }

    /// Rebuild the frame before `next` from the FEC data `next` carries,
    /// into `out[..frame_len]`. Without FEC data, Opus falls back to its
    /// loss concealment, so this always yields a frame unless `next` is
    /// not Opus at all.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        let n = self.profile.frame_len();
        self.inner
            .decode(next, &mut out[..n], true)
            .map_err(|e| codec_err("undecodable Opus packet", e))
    }

    /// Conceal one lost frame with the decoder's packet-loss concealment.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, AudioError> {
        let n = self.profile.frame_len();
        self.inner
            .decode(&[], &mut out[..n], false)
            .map_err(|e| codec_err("Opus concealment failed", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `frames` 20 ms frames of interleaved stereo: a 440 Hz tone on the
    /// left, and on the right the same tone (`same`) or silence.
    fn stereo(frames: usize, same: bool) -> Vec<i16> {
        (0..frames * FRAME_SAMPLES)
            .flat_map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                let v = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
                [v, if same { v } else { 0 }]
            })
            .collect()
    }

    /// The TOC byte's stereo flag (RFC 6716, 3.1: bit 2, the `s` bit).
    fn toc_stereo(packet: &[u8]) -> bool {
        packet[0] & 0x04 != 0
    }

    fn encode_all(enc: &mut Encoder, pcm: &[i16]) -> Vec<Vec<u8>> {
        let mut buf = vec![0; MAX_PACKET];
        pcm.chunks_exact(Profile::Babel.frame_len())
            .map(|f| {
                let n = enc.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// Decode with a fresh stereo decoder of the `opus` crate itself (what
    /// any Opus stereo receiver is): the left and right channels.
    fn decode_stereo(packets: &[Vec<u8>]) -> (Vec<i16>, Vec<i16>) {
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).unwrap();
        let mut out = vec![0i16; MAX_PACKET_SAMPLES * 2];
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for p in packets {
            let n = dec.decode(p, &mut out, false).unwrap();
            assert_eq!(n, FRAME_SAMPLES);
            for lr in out[..n * 2].chunks_exact(2) {
                l.push(lr[0]);
                r.push(lr[1]);
            }
        }
        (l, r)
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64
    }

    #[test]
    fn equal_channels_code_mono_packets_that_decode_to_both_channels() {
        let mut enc = Encoder::new(Profile::Babel).unwrap();
        let packets = encode_all(&mut enc, &stereo(10, true));
        for (k, p) in packets.iter().enumerate() {
            assert!(!toc_stereo(p), "packet {k} is stereo-coded: {:#04x}", p[0]);
            assert_eq!(
                opus::packet::get_nb_channels(p).unwrap(),
                opus::Channels::Mono
            );
            // Still a 20 ms frame of the 48 kHz stream.
            assert_eq!(
                opus::packet::get_nb_samples(p, SAMPLE_RATE).unwrap(),
                FRAME_SAMPLES
            );
        }
        let (l, r) = decode_stereo(&packets);
        assert_eq!(l, r, "a mono packet plays the same on both channels");
        assert!(energy(&l[FRAME_SAMPLES..]) > 1e6, "the tone is there");
    }

    #[test]
    fn different_channels_stay_stereo() {
        let mut enc = Encoder::new(Profile::Babel).unwrap();
        let packets = encode_all(&mut enc, &stereo(10, false));
        for (k, p) in packets.iter().enumerate() {
            assert!(toc_stereo(p), "packet {k} is mono-coded: {:#04x}", p[0]);
        }
        let (l, r) = decode_stereo(&packets);
        let (el, er) = (energy(&l[FRAME_SAMPLES..]), energy(&r[FRAME_SAMPLES..]));
        assert!(el > 1e6 && er < el / 100.0, "left {el:.0}, right {er:.0}");
    }

    #[test]
    fn a_stream_switches_between_mono_and_stereo_coding_frame_by_frame() {
        // Mono, then a real stereo source, then mono again: the packets
        // follow from the first frame of each part, and one decoder plays
        // them all (the right channel silent exactly while it was).
        let mut pcm = stereo(5, true);
        let mut two = stereo(10, false);
        // Keep the tone's phase continuous across the parts.
        two.drain(..5 * FRAME_SAMPLES * 2);
        pcm.extend_from_slice(&two);
        pcm.extend_from_slice(&stereo(15, true)[10 * FRAME_SAMPLES * 2..]);
        let mut enc = Encoder::new(Profile::Babel).unwrap();
        let packets = encode_all(&mut enc, &pcm);
        let coded: Vec<bool> = packets.iter().map(|p| toc_stereo(p)).collect();
        let want: Vec<bool> = (0..15).map(|k| (5..10).contains(&k)).collect();
        assert_eq!(coded, want);
        let (l, r) = decode_stereo(&packets);
        let part = |x: &[i16], k: std::ops::Range<usize>| {
            energy(&x[k.start * FRAME_SAMPLES..k.end * FRAME_SAMPLES])
        };
        // Inside the stereo part (past the frame that blends into it).
        assert!(part(&r, 7..10) < part(&l, 7..10) / 100.0);
        // The first mono part: equal channels. The second, past the frame
        // that blends out of stereo: the same up to what is left of the
        // right channel's filter memories.
        assert_eq!(l[..5 * FRAME_SAMPLES], r[..5 * FRAME_SAMPLES]);
        let tail = 12 * FRAME_SAMPLES;
        let diff: Vec<i16> = l[tail..]
            .iter()
            .zip(&r[tail..])
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        assert!(
            energy(&diff) < energy(&l[tail..]) / 1e4,
            "mono again: left {:.0}, difference {:.0}",
            energy(&l[tail..]),
            energy(&diff)
        );
    }

    #[test]
    fn the_accounts_profile_codes_mono_as_before() {
        let mut enc = Encoder::new(Profile::Accounts).unwrap();
        let mut buf = vec![0; MAX_PACKET];
        let n = enc.encode(&vec![0; FRAME_SAMPLES], &mut buf).unwrap();
        assert!(!toc_stereo(&buf[..n]));
        assert!(!enc.coding_mono);
    }
}
