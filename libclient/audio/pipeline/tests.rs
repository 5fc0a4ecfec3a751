//! Two `CallAudio`s talking over a simulated network on a simulated clock:
//! known signals in, the same signals recognised out.

use super::*;
use crate::audio::codec::{MAX_LOSS_PCT, MIN_LOSS_PCT};
use rand::{Rng, SeedableRng};

const TICK: Duration = Duration::from_millis(20);

fn tone(freqs: &[f64], start: usize, n: usize) -> Vec<i16> {
    // One frequency per channel, interleaved.
    let ch = freqs.len();
    let mut v = Vec::with_capacity(n * ch);
    for i in start..start + n {
        for &f in freqs {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            v.push((8000.0 * (2.0 * std::f64::consts::PI * f * t).sin()) as i16);
        }
    }
    v
}

/// Power of `freq` in one channel of an interleaved block (Goertzel).
fn power(x: &[i16], ch: usize, which: usize, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(SAMPLE_RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for s in x.iter().skip(which).step_by(ch) {
        let s0 = f64::from(*s) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

fn dominant(x: &[i16], ch: usize, which: usize, candidates: &[f64]) -> f64 {
    *candidates
        .iter()
        .max_by(|a, b| power(x, ch, which, **a).total_cmp(&power(x, ch, which, **b)))
        .unwrap()
}

fn energy(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64
}

/// A stepped "sweep": 100 ms per step through these frequencies.
const STEPS: [f64; 6] = [300.0, 500.0, 700.0, 1100.0, 1700.0, 2300.0];

fn step_freq(frame: usize) -> f64 {
    STEPS[(frame / 5) % STEPS.len()]
}

/// Send `frames` 20 ms frames from a fresh sender to a fresh receiver, each
/// packet delayed by `delay(k)` ms (None: lost); the receiver pulls one frame
/// per tick. Returns the receiver's output, frame by frame, and both ends.
fn call(
    profile: Profile,
    frames: usize,
    input: impl Fn(usize) -> Vec<i16>,
    mut delay: impl FnMut(usize) -> Option<u64>,
) -> (Vec<Vec<i16>>, CallAudio, CallAudio) {
    let t0 = Instant::now();
    let mut a = CallAudio::new(profile, t0).unwrap();
    let mut b = CallAudio::new(profile, t0).unwrap();
    let mut in_flight: Vec<(Instant, EncodedFrame)> = Vec::new();
    let mut out = Vec::new();
    for k in 0..frames + 20 {
        let now = t0 + TICK * k as u32;
        if k < frames {
            for f in a.send_pcm(now, &input(k)).unwrap() {
                if let Some(ms) = delay(k) {
                    in_flight.push((now + Duration::from_millis(ms), f));
                }
            }
        }
        in_flight.sort_by_key(|(t, _)| *t);
        while in_flight.first().is_some_and(|(t, _)| *t <= now) {
            let (t, f) = in_flight.remove(0);
            match profile {
                Profile::Accounts => b.receive_datagram(t, &f.accounts_packet()).unwrap(),
                Profile::Babel => b.receive_in_order(t, &f.opus),
            }
        }
        let mut frame = vec![0; profile.frame_len()];
        b.pull_pcm(now, &mut frame).unwrap();
        out.push(frame);
        if k >= frames && in_flight.is_empty() && b.jitter.held() == 0 {
            // Played to the end; the stall after a stream stops is the
            // jitter buffer's own test.
            break;
        }
    }
    (out, a, b)
}

/// The lag (in frames) at which the output best follows the stepped tones,
/// and the share of frames whose dominant frequency is right at that lag.
fn follows_steps(out: &[Vec<i16>], ch: usize, which: usize, frames: usize) -> (usize, f64) {
    let got: Vec<f64> = out.iter().map(|f| dominant(f, ch, which, &STEPS)).collect();
    (0..10)
        .map(|lag| {
            // Skip the first step and the frames at step boundaries, where a
            // frame straddles two tones.
            let checked: Vec<usize> = (5..frames).filter(|k| k % 5 != 0 && k % 5 != 4).collect();
            let right = checked
                .iter()
                .filter(|&&k| got.get(k + lag) == Some(&step_freq(k)))
                .count();
            (lag, right as f64 / checked.len() as f64)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
}

#[test]
fn accounts_call_carries_a_stepped_sweep() {
    let frames = 300;
    let input = |k: usize| tone(&[step_freq(k)], k * FRAME_SAMPLES, FRAME_SAMPLES);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (out, mut a, mut b) = call(Profile::Accounts, frames, input, |_| {
        Some(rng.gen_range(0..15))
    });
    let (lag, right) = follows_steps(&out, 1, 0, frames);
    assert!(
        right > 0.97,
        "only {right:.2} of frames had the right tone (lag {lag})"
    );
    assert!(lag <= 3, "the call lagged {lag} frames");
    let now = Instant::now() + TICK * 400;
    let (sa, sb) = (a.stats(now), b.stats(now));
    assert_eq!(sa.packets_sent, frames as u64);
    assert_eq!(sb.packets_received, frames as u64);
    assert_eq!((sb.packets_lost, sb.packets_late), (0, 0));
    assert!(sb.jitter_ms > 0.5, "{sb:?}");
}

#[test]
fn babel_call_is_stereo_and_in_order() {
    let frames = 200;
    // Left: the stepped sweep; right: a steady 1 kHz.
    let input = |k: usize| {
        let l = tone(&[step_freq(k)], k * FRAME_SAMPLES, FRAME_SAMPLES);
        let r = tone(&[1000.0], k * FRAME_SAMPLES, FRAME_SAMPLES);
        l.iter().zip(&r).flat_map(|(&l, &r)| [l, r]).collect()
    };
    let (out, a, _) = call(Profile::Babel, frames, input, |_| Some(3));
    let (lag, right) = follows_steps(&out, 2, 0, frames);
    assert!(right > 0.97, "left channel: {right:.2} right at lag {lag}");
    let steady = out[lag + 10..(lag + frames).min(out.len())]
        .iter()
        .filter(|f| dominant(f, 2, 1, &[300.0, 700.0, 1000.0, 1700.0]) == 1000.0)
        .count();
    assert!(
        steady >= frames - 12,
        "right channel lost its tone: {steady}"
    );
    // What a real Babel client expects: 20 ms Opus packets of a stereo
    // stream; stereo-coded for this stereo sound, mono-coded for a frame
    // whose channels are equal, such as silence (docs/protocols/babel.md).
    for (frame, coded) in [
        (input(0), opus::Channels::Stereo),
        (vec![0; Profile::Babel.frame_len()], opus::Channels::Mono),
    ] {
        let f = &a.packet_for_test(&frame);
        assert_eq!(opus::packet::get_nb_channels(f).unwrap(), coded);
        assert_eq!(
            opus::packet::get_nb_samples(f, SAMPLE_RATE).unwrap(),
            FRAME_SAMPLES
        );
    }
}

impl CallAudio {
    /// `frame` freshly encoded with the call's profile, to look at the
    /// packets' shape.
    fn packet_for_test(&self, frame: &[i16]) -> Vec<u8> {
        let mut e = Encoder::new(self.profile).unwrap();
        let mut buf = vec![0; MAX_PACKET];
        let n = e.encode(frame, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }
}

fn speech() -> Vec<i16> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/audio/speech.wav");
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, SAMPLE_RATE);
    assert_eq!(r.spec().channels, 1);
    r.samples::<i16>().map(Result::unwrap).collect()
}

/// Signal-to-noise ratio (dB) of `got` against `want`, over whole frames.
fn snr(want: &[i16], got: &[i16]) -> f64 {
    let sig: f64 = want.iter().map(|&s| f64::from(s).powi(2)).sum();
    let noise: f64 = want
        .iter()
        .zip(got)
        .map(|(&w, &g)| (f64::from(w) - f64::from(g)).powi(2))
        .sum();
    10.0 * (sig / noise.max(1.0)).log10()
}

#[test]
fn fec_recovers_speech_better_than_concealment() {
    // Encode real speech; decode it three ways: every packet, every tenth
    // packet lost and rebuilt from the next packet's FEC, and the same
    // packets lost and concealed by the decoder alone.
    let pcm = speech();
    let mut enc = Encoder::new(Profile::Accounts).unwrap();
    let mut buf = vec![0; MAX_PACKET];
    let packets: Vec<Vec<u8>> = pcm
        .chunks_exact(FRAME_SAMPLES)
        .map(|f| {
            let n = enc.encode(f, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    let decode = |lost: &dyn Fn(usize) -> bool, fec: bool| {
        let mut dec = Decoder::new(Profile::Accounts).unwrap();
        let mut out = Vec::new();
        let mut frame = vec![0; MAX_PACKET_SAMPLES];
        for (k, p) in packets.iter().enumerate() {
            let n = if !lost(k) {
                dec.decode(p, &mut frame).unwrap()
            } else if fec && k + 1 < packets.len() {
                dec.decode_fec(&packets[k + 1], &mut frame).unwrap()
            } else {
                dec.conceal(&mut frame).unwrap()
            };
            assert_eq!(n, FRAME_SAMPLES);
            out.extend_from_slice(&frame[..n]);
        }
        out
    };
    let clean = decode(&|_| false, false);
    let lost = |k: usize| k % 10 == 5;
    let with_fec = decode(&lost, true);
    let without = decode(&lost, false);
    // Compare the lost frames only (everything else is identical or
    // nearly so).
    let pick = |v: &[i16]| -> Vec<i16> {
        v.chunks(FRAME_SAMPLES)
            .enumerate()
            .filter(|(k, _)| lost(*k))
            .flat_map(|(_, f)| f.to_vec())
            .collect()
    };
    let (c, f, p) = (pick(&clean), pick(&with_fec), pick(&without));
    let (snr_fec, snr_plc) = (snr(&c, &f), snr(&c, &p));
    assert!(
        snr_fec > snr_plc + 3.0,
        "FEC {snr_fec:.1} dB is not clearly better than concealment {snr_plc:.1} dB"
    );
}

/// The test speech over an accounts call whose packets are delayed by
/// `delay(k)` ms (None: lost): what was said, what was heard, the
/// receiver's statistics.
fn speech_call(delay: impl FnMut(usize) -> Option<u64>) -> (Vec<i16>, Vec<i16>, CallStats) {
    let pcm = speech();
    let frames = pcm.len() / FRAME_SAMPLES;
    let input = |k: usize| pcm[k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES].to_vec();
    let (out, _, mut b) = call(Profile::Accounts, frames, input, delay);
    let s = b.stats(Instant::now());
    (pcm, out.concat(), s)
}

#[test]
fn lossy_accounts_call_conceals_with_fec() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let (pcm, out, s) = speech_call(|_| (rng.gen::<f64>() >= 0.10).then_some(5));
    let frames = pcm.len() / FRAME_SAMPLES;
    assert!(s.packets_lost > (frames / 20) as u64, "{s:?}");
    assert_eq!(s.frames_concealed, s.packets_lost);
    // Single losses (most of them at 10 %) come back from FEC.
    assert!(s.frames_concealed_fec * 10 >= s.packets_lost * 7, "{s:?}");
    // The speech is there: as much energy out as in, give or take.
    let (ein, eout) = (energy(&pcm), energy(&out));
    assert!(
        eout > ein * 0.5 && eout < ein * 2.0,
        "in {ein:.0}, out {eout:.0}"
    );
}

#[test]
fn losses_come_back_from_fec_when_the_next_packet_is_a_little_late() {
    // One packet in ten lost; the others 1–3 ms late (the first on time),
    // so at a lost frame's playout time the packet after it, which carries
    // its FEC, has not quite arrived. After the first such loss the jitter
    // buffer keeps a frame of look-ahead and the FEC rebuilds the rest.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (pcm, _, s) = speech_call(|k| {
        let late = if k == 0 { 0 } else { rng.gen_range(1..=3) };
        (k % 10 != 5).then_some(late)
    });
    let frames = pcm.len() / FRAME_SAMPLES;
    let lost = (0..frames).filter(|k| k % 10 == 5).count() as u64;
    assert_eq!(s.packets_lost, lost, "{s:?}");
    assert!(s.frames_concealed_fec + 2 >= lost, "{s:?}");
    // Growing the delay by the look-ahead costs a frame (here twice: the
    // delay sits exactly on the target, and when the one on-time packet
    // leaves the 4 s window the delay measures a millisecond under it).
    assert!(s.frames_concealed <= lost + 2, "{s:?}");
    assert_eq!(s.packets_late, 0, "{s:?}");
}

#[test]
fn reports_measure_rtt_and_drive_fec() {
    // A and B 30 ms apart each way; B loses 20 % of A's media for 5 s, then
    // nothing for 15 s.
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    let mut b = CallAudio::new(Profile::Accounts, t0).unwrap();
    let one_way = Duration::from_millis(30);
    let mut to_b: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut to_a: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut peak = 0;
    let mut frame = vec![0i16; FRAME_SAMPLES];
    for k in 0..1000u32 {
        let now = t0 + TICK * k;
        let lossy = k < 250;
        let pcm = tone(&[440.0], k as usize * FRAME_SAMPLES, FRAME_SAMPLES);
        for f in a.send_pcm(now, &pcm).unwrap() {
            if !(lossy && rng.gen::<f64>() < 0.2) {
                to_b.push((now + one_way, f.accounts_packet()));
            }
        }
        for f in b.send_pcm(now, &pcm).unwrap() {
            to_a.push((now + one_way, f.accounts_packet()));
        }
        if let Some(r) = a.poll_report(now) {
            to_b.push((now + one_way, VoicePacket::Report(r).to_bytes()));
        }
        if let Some(r) = b.poll_report(now) {
            to_a.push((now + one_way, VoicePacket::Report(r).to_bytes()));
        }
        for (q, end) in [(&mut to_b, &mut b), (&mut to_a, &mut a)] {
            q.retain(|(t, p)| {
                if *t <= now {
                    end.receive_datagram(*t, p).unwrap();
                    false
                } else {
                    true
                }
            });
        }
        a.pull_pcm(now, &mut frame).unwrap();
        b.pull_pcm(now, &mut frame).unwrap();
        peak = peak.max(a.stats(now).expected_loss_pct);
    }
    let now = t0 + TICK * 1000;
    let (sa, sb) = (a.stats(now), b.stats(now));
    let rtt = sa.rtt_ms.expect("A measured a round trip");
    assert!((59.0..=62.0).contains(&rtt), "rtt {rtt}");
    assert!(sb.rtt_ms.is_some());
    assert!(peak >= 15, "A's FEC never rose for 20 % loss: peak {peak}");
    assert!(peak <= MAX_LOSS_PCT);
    assert_eq!(sa.expected_loss_pct, MIN_LOSS_PCT, "{sa:?}");
    assert_eq!(sa.remote_loss_pct, Some(0));
    assert!(sa.remote_lost.unwrap() > 20);
    assert!(
        sa.send_bitrate > 16_000 && sa.send_bitrate < 64_000,
        "{sa:?}"
    );
    assert!(sb.recv_bitrate > 16_000, "{sb:?}");
}

#[test]
fn pull_always_fills_whatever_the_size() {
    let t0 = Instant::now();
    let mut c = CallAudio::new(Profile::Babel, t0).unwrap();
    for n in [0, 2, 882, 1920, 5000] {
        let mut out = vec![1i16; n];
        c.pull_pcm(t0, &mut out).unwrap();
        assert!(out.iter().all(|&s| s == 0), "silence before any packet");
    }
    assert!(matches!(
        c.pull_pcm(t0, &mut [0; 3]),
        Err(AudioError::Format(_))
    ));
    assert!(matches!(
        c.send_pcm(t0, &[0; 5]),
        Err(AudioError::Format(_))
    ));
    // Pushed in odd chunks, played in other odd chunks.
    let mut sent = 0;
    let mut got = Vec::new();
    for k in 0..100u32 {
        let now = t0 + TICK * k;
        let n = 441 + (k as usize % 3) * 100;
        for f in c.send_pcm(now, &tone(&[600.0, 600.0], sent, n)).unwrap() {
            c.receive_in_order(now, &f.opus);
        }
        sent += n;
        let mut out = vec![0; 2 * 700];
        c.pull_pcm(now, &mut out).unwrap();
        got.extend(out);
    }
    assert!(energy(&got[got.len() / 2..]) > 1e6);
}

#[test]
fn garbage_never_panics() {
    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(30);
    for profile in [Profile::Babel, Profile::Accounts] {
        let mut c = CallAudio::new(profile, t0).unwrap();
        let mut out = vec![0; profile.frame_len()];
        for k in 0..2000u32 {
            let now = t0 + TICK * (k / 4);
            let n = rng.gen_range(0..64);
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = c.receive_datagram(now, &junk);
            let mut media = vec![0x43, 0x57, 0x56, 0x43, 0x01];
            media.extend_from_slice(&junk);
            let _ = c.receive_datagram(now, &media);
            if !junk.is_empty() {
                c.receive_in_order(now, &junk);
            }
            c.pull_pcm(now, &mut out).unwrap();
        }
        let s = c.stats(t0 + TICK * 500);
        assert!(s.packets_received > 0);
    }
}

/// How much of a block's energy is at `freq` in one channel: 1.0 for a
/// pure tone at that frequency (Goertzel power over the block's
/// mean-square energy).
fn purity(x: &[i16], ch: usize, which: usize, freq: f64) -> f64 {
    let one: Vec<i16> = x.iter().skip(which).step_by(ch).copied().collect();
    let n = one.len() as f64;
    power(x, ch, which, freq) / (energy(&one) * n * n / 2.0)
}

#[test]
fn a_jitter_jump_is_absorbed_by_stretching_real_audio() {
    // A steady tone (babel: another on the right) for 15 s; from 3 s to 8 s
    // the packets are 0–60 ms late (babel: in order, as over TCP). The
    // delay grows by playing decoded frames longer and shrinks by playing
    // them shorter: the statistics count it, no frame is dropped, hardly
    // any is concealed, and what plays stays the tone (a stretched frame is
    // whole periods more or fewer, cross-faded: no clicks, same pitch).
    for (profile, freqs) in [
        (Profile::Accounts, &[440.0][..]),
        (Profile::Babel, &[440.0, 660.0][..]),
    ] {
        let ch = freqs.len();
        let frames = 750;
        let input = |k: usize| tone(freqs, k * FRAME_SAMPLES, FRAME_SAMPLES);
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let mut prev = 0i64;
        let (out, _a, mut b) = call(profile, frames, input, |k| {
            let j = if (150..400).contains(&k) {
                rng.gen_range(0..60)
            } else {
                0
            };
            // In order: never earlier than the packet before.
            let d = if profile == Profile::Babel {
                j.max(prev - 20)
            } else {
                j
            };
            prev = d;
            Some(d as u64)
        });
        let s = b.stats(Instant::now());
        assert!(s.samples_stretched >= 960, "{profile:?}: {s:?}");
        assert!(s.samples_compressed >= 960, "{profile:?}: {s:?}");
        assert_eq!(s.frames_dropped, 0, "{profile:?}: {s:?}");
        assert!(s.frames_concealed <= 3, "{profile:?}: {s:?}");
        assert!(b.fifo.len() <= 3 * profile.frame_len(), "{}", b.fifo.len());
        for (which, &f) in freqs.iter().enumerate() {
            let pure = out[50..]
                .iter()
                .filter(|frame| purity(frame, ch, which, f) > 0.8)
                .count();
            let all = out.len() - 50;
            assert!(
                pure * 100 >= all * 97,
                "{profile:?} channel {which}: {pure} of {all} frames are the tone"
            );
        }
    }
}

#[test]
fn nothing_is_pending_once_the_received_audio_is_played() {
    // Pulls of 15 ms against frames of 20 ms, and a delay that grows
    // (stretched frames): the FIFO always keeps part of a frame. After the
    // stream stops, what is left is concealment and silence: once the last
    // decoded audio has been pulled, nothing is pending (a call that is
    // over then reports that it is closed).
    for profile in [Profile::Accounts, Profile::Babel] {
        let t0 = Instant::now();
        let mut a = CallAudio::new(profile, t0).unwrap();
        let mut b = CallAudio::new(profile, t0).unwrap();
        let ch = profile.channels();
        let mut out = vec![0; 720 * ch];
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut k = 0u32;
        let mut pulled_after_stop = 0;
        loop {
            let now = t0 + Duration::from_millis(15) * k;
            if k < 200 {
                let pcm = tone(&vec![440.0; ch], k as usize * 720, 720);
                for f in a.send_pcm(now, &pcm).unwrap() {
                    let late = now + Duration::from_millis(rng.gen_range(0..40));
                    b.receive(late, f.seq, f.timestamp, &f.opus);
                }
            } else {
                pulled_after_stop += 1;
                if !b.has_pending() {
                    break;
                }
                assert!(pulled_after_stop < 100, "{profile:?}: still pending");
            }
            b.pull_pcm(now, &mut out).unwrap();
            k += 1;
        }
        let s = b.stats(t0);
        assert!(s.samples_stretched > 0, "{profile:?}: {s:?}");
    }
}

/// Whether `next` carries in-band FEC (SILK's LBRR) for the frame before
/// it: two decoders given the same `history`, one rebuilding that frame
/// from `next`'s FEC data and one concealing it, play the same thing
/// exactly when there is none (libopus then conceals for the FEC decode).
fn carries_fec(history: &[Vec<u8>], next: &[u8]) -> bool {
    let mut out = [vec![0; MAX_PACKET_SAMPLES], vec![0; MAX_PACKET_SAMPLES]];
    let mut dec = [
        Decoder::new(Profile::Accounts).unwrap(),
        Decoder::new(Profile::Accounts).unwrap(),
    ];
    for p in history {
        for (d, o) in dec.iter_mut().zip(&mut out) {
            d.decode(p, o).unwrap();
        }
    }
    let [d0, d1] = &mut dec;
    let [o0, o1] = &mut out;
    let n = d0.decode_fec(next, o0).unwrap();
    assert_eq!(d1.conceal(o1).unwrap(), n);
    o0[..n] != o1[..n]
}

/// Of `packets` (each after five others), how many carry FEC.
fn count_fec(packets: &[Vec<u8>]) -> usize {
    (5..packets.len())
        .filter(|&k| carries_fec(&packets[k - 5..k], &packets[k]))
        .count()
}

/// The test speech's 20 ms frames.
fn speech_frames() -> Vec<Vec<i16>> {
    speech()
        .chunks_exact(FRAME_SAMPLES)
        .map(<[i16]>::to_vec)
        .collect()
}

#[test]
fn an_expected_loss_of_zero_codes_no_fec() {
    // The whole test speech through three encoders: as a call starts (10 %
    // expected), paused (0 %), and with FEC switched off by the app. Only
    // the first puts FEC in its packets (in most of them: a frame of
    // silence has none to carry).
    let frames = speech_frames();
    let coded = |setup: &dyn Fn(&mut Encoder)| {
        let mut enc = Encoder::new(Profile::Accounts).unwrap();
        setup(&mut enc);
        let mut buf = vec![0; MAX_PACKET];
        let packets: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let n = enc.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect();
        (enc.expected_loss(), count_fec(&packets), packets)
    };
    let (on_pct, on, on_packets) = coded(&|_| {});
    let (paused_pct, paused, paused_packets) = coded(&|e| e.set_expected_loss(0).unwrap());
    let (off_pct, off, _) = coded(&|e| e.set_fec(false).unwrap());
    let checked = frames.len() - 5;
    assert_eq!(on_pct, DEFAULT_LOSS_PCT);
    assert!(on * 2 > checked, "FEC in only {on} of {checked} packets");
    assert_eq!((paused_pct, paused), (0, 0), "paused");
    assert_eq!((off_pct, off), (0, 0), "switched off");
    // The bytes FEC took go back to the voice: VBR at the same bitrate.
    let bytes = |p: &[Vec<u8>]| p.iter().map(Vec::len).sum::<usize>();
    let (b_on, b_paused) = (bytes(&on_packets), bytes(&paused_packets));
    assert!(
        b_paused * 10 > b_on * 8 && b_paused * 10 < b_on * 12,
        "{b_on} bytes with FEC, {b_paused} paused"
    );
}

/// A receiver report of `loss_pct` loss, as the peer would send it.
fn report(loss_pct: u8) -> Report {
    Report {
        loss_pct,
        no_media: false,
        lost: 0,
        jitter_us: 0,
        sent_ms: 0,
        echo: None,
    }
}

/// `n` frames of the test speech (from frame `from`) through `c`'s
/// encoder: the packets.
fn send_speech(c: &mut CallAudio, now: Instant, from: usize, n: usize) -> Vec<Vec<u8>> {
    let frames = speech_frames();
    (from..from + n)
        .flat_map(|k| c.send_pcm(now, &frames[k % frames.len()]).unwrap())
        .map(|f| f.opus)
        .collect()
}

#[test]
fn clean_reports_pause_fec_and_the_first_loss_resumes_it() {
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    let at = |s: u32| t0 + REPORT_INTERVAL * s;
    // Reports 1..N-1 of a clean path: FEC stays, released toward the floor.
    let mut pct = Vec::new();
    for s in 1..CLEAN_REPORTS_TO_PAUSE {
        a.on_report(at(s), &report(0));
        pct.push(a.stats(at(s)).expected_loss_pct);
    }
    assert!(pct.iter().all(|&p| p >= MIN_LOSS_PCT), "{pct:?}");
    assert!(pct.windows(2).all(|w| w[0] >= w[1]), "{pct:?}");
    // Speech frames 40..80 are talk (the first 40 include the silence
    // before the first word).
    let still = send_speech(&mut a, at(4), 40, 30);
    assert!(count_fec(&still) > 10, "FEC before the N-th clean report");
    // The N-th: paused, and the packets say so.
    let n = CLEAN_REPORTS_TO_PAUSE;
    a.on_report(at(n), &report(0));
    assert_eq!(a.stats(at(n)).expected_loss_pct, 0);
    let paused = send_speech(&mut a, at(n), 70, 30);
    assert_eq!(count_fec(&paused), 0, "FEC while paused");
    a.on_report(at(n + 1), &report(0));
    assert_eq!(a.stats(at(n + 1)).expected_loss_pct, 0);
    // One lossy report: on again within it, at the floor for a small loss
    // and at the loss itself for a larger one.
    a.on_report(at(n + 2), &report(1));
    assert_eq!(a.stats(at(n + 2)).expected_loss_pct, MIN_LOSS_PCT);
    let again = send_speech(&mut a, at(n + 2), 100, 30);
    assert!(count_fec(&again) > 10, "no FEC after a lossy report");
    // Now that the path has lost a packet, it must stay clean longer.
    for s in 1..CLEAN_REPORTS_TO_PAUSE_AFTER_LOSS {
        a.on_report(at(n + 2 + s), &report(0));
        assert_eq!(a.stats(at(n + 2 + s)).expected_loss_pct, MIN_LOSS_PCT);
    }
    let t = n + 2 + CLEAN_REPORTS_TO_PAUSE_AFTER_LOSS;
    a.on_report(at(t), &report(0));
    assert_eq!(a.stats(at(t)).expected_loss_pct, 0);
    a.on_report(at(t + 1), &report(7));
    assert_eq!(a.stats(at(t + 1)).expected_loss_pct, 7);
}

#[test]
fn the_apps_fec_switch_wins_over_the_reports() {
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    a.set_loss_recovery(false).unwrap();
    for (s, loss) in [20, 0, 35, 5, 0, 0, 0, 0, 0, 10].into_iter().enumerate() {
        let now = t0 + REPORT_INTERVAL * (s as u32 + 1);
        a.on_report(now, &report(loss));
        assert_eq!(a.stats(now).expected_loss_pct, 0, "report {s}: {loss} %");
    }
    let packets = send_speech(&mut a, t0, 40, 30);
    assert_eq!(count_fec(&packets), 0, "FEC the app switched off");
    // On again: protected at once, then the reports rule (10 % lost above;
    // six clean reports after a loss do not pause it).
    a.set_loss_recovery(true).unwrap();
    assert_eq!(a.stats(t0).expected_loss_pct, DEFAULT_LOSS_PCT);
    let packets = send_speech(&mut a, t0, 70, 30);
    assert!(count_fec(&packets) > 10);
    a.on_report(t0 + REPORT_INTERVAL * 11, &report(0));
    assert!(a.stats(t0).expected_loss_pct >= MIN_LOSS_PCT);
}

/// A's expected loss after each 20 ms tick of `ticks` of a call whose media
/// from A to B is dropped where `lose(k)` (reports and B's media are not),
/// with reports both ways and 30 ms each way.
fn expected_loss_over_a_call(ticks: u32, mut lose: impl FnMut(u32) -> bool) -> Vec<u8> {
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    let mut b = CallAudio::new(Profile::Accounts, t0).unwrap();
    let one_way = Duration::from_millis(30);
    let mut to_b: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut to_a: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut frame = vec![0i16; FRAME_SAMPLES];
    let mut pct = Vec::new();
    for k in 0..ticks {
        let now = t0 + TICK * k;
        let pcm = tone(&[440.0], k as usize * FRAME_SAMPLES, FRAME_SAMPLES);
        let lost = lose(k);
        for (from, q, dropped) in [(&mut a, &mut to_b, lost), (&mut b, &mut to_a, false)] {
            for f in from.send_pcm(now, &pcm).unwrap() {
                if !dropped {
                    q.push((now + one_way, f.accounts_packet()));
                }
            }
            if let Some(r) = from.poll_report(now) {
                q.push((now + one_way, VoicePacket::Report(r).to_bytes()));
            }
        }
        for (q, end) in [(&mut to_b, &mut b), (&mut to_a, &mut a)] {
            q.retain(|(t, p)| {
                let due = *t <= now;
                if due {
                    end.receive_datagram(*t, p).unwrap();
                }
                !due
            });
            end.pull_pcm(now, &mut frame).unwrap();
        }
        pct.push(a.stats(now).expected_loss_pct);
    }
    pct
}

#[test]
fn a_clean_call_pauses_fec_five_seconds_in() {
    let pct = expected_loss_over_a_call(500, |_| false);
    // B reports at 1 s, 2 s, ...; each reaches A 30 ms later.
    let paused_at = pct.iter().position(|&p| p == 0).expect("FEC never paused");
    let report_ticks = 50 * CLEAN_REPORTS_TO_PAUSE as usize;
    assert!(
        (report_ticks..=report_ticks + 3).contains(&paused_at),
        "paused at tick {paused_at}"
    );
    assert!(pct[..paused_at].iter().all(|&p| p >= MIN_LOSS_PCT));
    assert!(pct[paused_at..].iter().all(|&p| p == 0));
}

#[test]
fn loss_in_bursts_keeps_fec_on() {
    // 5 % of A's packets lost in bursts of 3 for a minute, the bench's
    // bursts scenario: a report without loss now and then never adds up
    // to a pause.
    let mut rng = rand::rngs::StdRng::seed_from_u64(40);
    let mut burst = 0u32;
    let pct = expected_loss_over_a_call(3000, |_| {
        if burst == 0 && rng.gen::<f64>() < 0.05 / 3.0 {
            burst = 3;
        }
        let lost = burst > 0;
        burst = burst.saturating_sub(1);
        lost
    });
    assert!(pct.iter().all(|&p| p >= MIN_LOSS_PCT), "{pct:?}");
    // And it follows the loss: above the floor after a burst.
    assert!(pct.iter().any(|&p| p > MIN_LOSS_PCT));
}

#[test]
fn a_path_that_starts_losing_after_a_pause_is_protected_within_a_report() {
    // Clean for 8 s (FEC paused at 5 s), then 10 % random loss: FEC is back
    // once the first report covering the loss arrives (B's report at 9 s,
    // at A 30 ms later), and stays.
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let pct = expected_loss_over_a_call(1000, |k| k >= 400 && rng.gen::<f64>() < 0.1);
    assert_eq!(pct[399], 0);
    let back = (400..).find(|&k| pct[k] > 0).unwrap();
    assert!((450..=452).contains(&back), "FEC back at tick {back}");
    assert!(pct[back..].iter().all(|&p| p >= MIN_LOSS_PCT));
    assert!(pct[back] >= 5, "10 % lost, {} % expected", pct[back]);
}

#[test]
fn a_one_way_outage_from_the_start_is_no_clean_path() {
    // Nothing of A's reaches B for 10 s: B's reports cover no media, which
    // says nothing of the path; they must not pause A's FEC (on main they
    // read 0 % loss and paused it 5 s in).
    let pct = expected_loss_over_a_call(500, |_| true);
    assert!(pct.iter().all(|&p| p >= MIN_LOSS_PCT), "{pct:?}");
}

#[test]
fn a_one_way_outage_after_a_pause_resumes_fec_before_the_path_is_back() {
    // Clean for 8 s (FEC paused at 5 s), then every packet of A's lost for
    // 4 s, then clean again. B's report at 9 s still counts A's last packet
    // before the outage (sent at 7.98 s, in at 8.01 s); those at 10 s and
    // 11 s cover no media: after the second FEC is back (at A 30 ms later),
    // so the first packets after the outage are protected, and it stays on
    // until the path has been clean long enough again.
    let pct = expected_loss_over_a_call(1000, |k| (400..600).contains(&k));
    assert_eq!(pct[399], 0);
    let back = (400..).find(|&k| pct[k] > 0).unwrap();
    let second_empty = 50 * (9 + EMPTY_REPORTS_TO_RESUME as usize);
    assert!(
        (second_empty..=second_empty + 3).contains(&back),
        "FEC back at tick {back}"
    );
    assert_eq!(pct[back], DEFAULT_LOSS_PCT);
    // On through the outage and the report that counts its gap (13 s), and
    // the 30 clean reports a path that lost must show: still on at 20 s.
    assert!(pct[back..].iter().all(|&p| p >= MIN_LOSS_PCT), "{pct:?}");
}

#[test]
fn a_report_without_media_neither_counts_as_clean_nor_as_loss() {
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    let at = |s: u32| t0 + REPORT_INTERVAL * s;
    let empty = Report {
        no_media: true,
        ..report(0)
    };
    // A clean run with one empty report in it: the run goes on (the empty
    // one neither counts nor breaks it), so FEC pauses at the N-th clean
    // report, one report later than without it.
    let mut s = 0;
    for k in 0..CLEAN_REPORTS_TO_PAUSE + 1 {
        s += 1;
        let r = if k == 2 { empty } else { report(0) };
        let before = a.stats(at(s)).expected_loss_pct;
        a.on_report(at(s), &r);
        if k == 2 {
            assert_eq!(a.stats(at(s)).expected_loss_pct, before, "held");
        }
    }
    assert_eq!(a.stats(at(s)).expected_loss_pct, 0, "paused");
    // Paused: one empty report keeps the pause, a second resumes FEC at
    // the call's starting protection, without marking the call lossy (5
    // clean reports pause it again, not 30).
    s += 1;
    a.on_report(at(s), &empty);
    assert_eq!(a.stats(at(s)).expected_loss_pct, 0);
    s += 1;
    a.on_report(at(s), &empty);
    assert_eq!(a.stats(at(s)).expected_loss_pct, DEFAULT_LOSS_PCT);
    for _ in 1..CLEAN_REPORTS_TO_PAUSE {
        s += 1;
        a.on_report(at(s), &report(0));
        assert!(a.stats(at(s)).expected_loss_pct >= MIN_LOSS_PCT);
    }
    s += 1;
    a.on_report(at(s), &report(0));
    assert_eq!(a.stats(at(s)).expected_loss_pct, 0, "paused again");
    // A lossy path: empty reports do not release the estimate.
    s += 1;
    a.on_report(at(s), &report(30));
    for _ in 0..3 {
        s += 1;
        a.on_report(at(s), &empty);
        assert_eq!(a.stats(at(s)).expected_loss_pct, 30);
    }
}

#[test]
fn a_report_says_when_it_covers_no_media() {
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    let mut b = CallAudio::new(Profile::Accounts, t0).unwrap();
    let at = |s: u32| t0 + REPORT_INTERVAL * s;
    // Nothing received yet.
    let _ = b.poll_report(t0);
    let r = b.poll_report(at(1)).unwrap();
    assert!(r.no_media && r.loss_pct == 0, "{r:?}");
    // One packet: a measurement again.
    let pcm = tone(&[440.0], 0, FRAME_SAMPLES);
    for f in a.send_pcm(at(1), &pcm).unwrap() {
        b.receive_datagram(at(1), &f.accounts_packet()).unwrap();
    }
    let r = b.poll_report(at(2)).unwrap();
    assert!(!r.no_media && r.loss_pct == 0, "{r:?}");
    let r = b.poll_report(at(3)).unwrap();
    assert!(r.no_media, "{r:?}");
}

#[test]
fn a_report_that_measured_nothing_reads_as_unknown_loss_not_as_none_lost() {
    let t0 = Instant::now();
    let mut a = CallAudio::new(Profile::Accounts, t0).unwrap();
    let at = |s: u32| t0 + REPORT_INTERVAL * s;
    assert_eq!(a.stats(t0).remote_loss_pct, None, "no report yet");
    a.on_report(
        at(1),
        &Report {
            lost: 4,
            ..report(7)
        },
    );
    assert_eq!(a.stats(at(1)).remote_loss_pct, Some(7));
    // The peer received nothing of ours in its last second (an outage one
    // way): that is no measurement, and certainly not "0 % lost".
    let empty = Report {
        no_media: true,
        lost: 4,
        jitter_us: 2_000,
        ..report(0)
    };
    a.on_report(at(2), &empty);
    let s = a.stats(at(2));
    assert_eq!(s.remote_loss_pct, None, "{s:?}");
    // What the report does say still reads: its running count and jitter.
    assert_eq!(s.remote_lost, Some(4));
    assert_eq!(s.remote_jitter_ms, Some(2.0));
    // The next report that measured something is read again, 0 included.
    a.on_report(at(3), &report(0));
    assert_eq!(a.stats(at(3)).remote_loss_pct, Some(0));
}
