//! Test signals for calls and how to recognise them at the other end:
//! stepped tones (a frequency track) made here, pushed through a call, and
//! checked window by window with Goertzel filters after finding the
//! delay. Loss concealment keeps a tone's pitch, so a track survives loss
//! where a sample-exact comparison would not.
#![allow(dead_code)]

use std::path::Path;

pub const RATE: usize = 48_000;
/// Analysis window and hop: 20 ms windows every 10 ms.
const WIN: usize = 960;
const HOP: usize = 480;
/// A window counts as a tone when it is this much stronger than every
/// other candidate.
const DOMINANCE: f64 = 4.0;
/// Quieter than this (mean absolute amplitude) is silence.
const QUIET: f64 = 300.0;

/// The caller's steps and the callee's: disjoint, so crossed audio (an
/// echo of one's own signal) is never taken for the peer's.
pub const UP: [f64; 8] = [450.0, 650.0, 850.0, 1050.0, 1250.0, 1450.0, 1650.0, 1850.0];
pub const DOWN: [f64; 8] = [
    3150.0, 2950.0, 2750.0, 2550.0, 2350.0, 2150.0, 1950.0, 550.0,
];
pub const STEP_MS: usize = 250;

/// Mono 48 kHz: each of `freqs` for `step_ms`, at a speech-like level.
pub fn stepped_tones(freqs: &[f64], step_ms: usize) -> Vec<i16> {
    let n = RATE * step_ms / 1000;
    let mut out = Vec::with_capacity(n * freqs.len());
    let mut phase = 0.0f64;
    for &f in freqs {
        for _ in 0..n {
            out.push((8000.0 * phase.sin()) as i16);
            phase += 2.0 * std::f64::consts::PI * f / RATE as f64;
        }
    }
    out
}

/// Interleave mono to `channels` (1 or 2).
pub fn to_channels(mono: &[i16], channels: usize) -> Vec<i16> {
    mono.iter()
        .flat_map(|&s| std::iter::repeat_n(s, channels))
        .collect()
}

/// The first channel of interleaved PCM.
pub fn first_channel(pcm: &[i16], channels: usize) -> Vec<i16> {
    pcm.iter().step_by(channels).copied().collect()
}

/// Goertzel power of `freq` in `x`, summed over consecutive windows: a
/// tone with gaps or phase jumps (a device that ran dry, loss concealment)
/// still counts in full, where one filter over the whole of `x` would add
/// the pieces out of phase.
pub fn windowed_power(x: &[i16], freq: f64) -> f64 {
    x.chunks(WIN).map(|w| power(w, freq)).sum()
}

/// Goertzel power of `freq` in `x`.
pub fn power(x: &[i16], freq: f64) -> f64 {
    let c = 2.0 * (2.0 * std::f64::consts::PI * freq / RATE as f64).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &s in x {
        let s0 = f64::from(s) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// The dominant candidate of each window (index), or None.
fn track(x: &[i16], candidates: &[f64]) -> Vec<Option<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + WIN <= x.len() {
        let w = &x[at..at + WIN];
        let level = w.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / WIN as f64;
        let mut p: Vec<(f64, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(i, &f)| (power(w, f), i))
            .collect();
        p.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.push((level >= QUIET && p[0].0 >= DOMINANCE * p[1].0).then_some(p[0].1));
        at += HOP;
    }
    out
}

/// How well `received` carries the stepped tones `freqs`.
#[derive(Debug, Clone, Copy)]
pub struct Recognition {
    /// Windows inside a step that show that step's tone, over all such
    /// windows (each step at its own delay: see `recognise`).
    pub matched: f64,
    /// Every step shows its tone in at least half of its windows.
    pub all_steps: bool,
    /// Where the track starts in `received`, in ms.
    pub delay_ms: usize,
    /// How far from that the steps were found, at most, in ms.
    pub drift_ms: usize,
}

/// How far (in hops) a step may sit from the step before it: the playout
/// delay of a call changes while it runs (the jitter buffer grows it when
/// the machine holds a thread up, and shrinks it again), by up to 100 ms
/// between two steps.
const MAX_SHIFT: usize = 10;

/// Find the stepped tones `freqs` (of `step_ms` each) in mono `received`,
/// at whatever delay they start; other tones (`others`) compete. The delay
/// is the one that fits the whole track best; then each step is found at
/// its own delay, within [`MAX_SHIFT`] of the step before.
pub fn recognise(received: &[i16], freqs: &[f64], others: &[f64], step_ms: usize) -> Recognition {
    let candidates: Vec<f64> = freqs.iter().chain(others).copied().collect();
    let got = track(received, &candidates);
    let per_step = RATE * step_ms / 1000 / HOP;
    let total = per_step * freqs.len();
    // (windows showing step i's tone, windows) with the track at `offset`;
    // the window straddling each boundary is skipped.
    let step_hits = |offset: usize, i: usize| {
        let inner = (1..per_step - 1).map(|k| offset + i * per_step + k);
        let n = inner.clone().count();
        let ok = inner
            .filter(|&w| got.get(w).copied().flatten() == Some(i))
            .count();
        (ok, n)
    };
    let mut best = (0usize, 0usize);
    for offset in 0..got.len().saturating_sub(total / 2) {
        let hits: usize = (0..freqs.len()).map(|i| step_hits(offset, i).0).sum();
        if hits > best.0 {
            best = (hits, offset);
        }
    }
    let mut steps = Vec::with_capacity(freqs.len());
    let (mut at, mut drift) = (best.1, 0);
    for i in 0..freqs.len() {
        let (mut hit, mut to) = (step_hits(at, i), at);
        for o in at.saturating_sub(MAX_SHIFT)..=at + MAX_SHIFT {
            let h = step_hits(o, i);
            if h.0 > hit.0 {
                (hit, to) = (h, o);
            }
        }
        drift = drift.max(to.abs_diff(best.1));
        at = to;
        steps.push(hit);
    }
    let windows: usize = steps.iter().map(|s| s.1).sum();
    let hits: usize = steps.iter().map(|s| s.0).sum();
    Recognition {
        matched: if windows == 0 {
            0.0
        } else {
            hits as f64 / windows as f64
        },
        all_steps: !steps.is_empty() && steps.iter().all(|&(ok, n)| 2 * ok >= n),
        delay_ms: best.1 * HOP * 1000 / RATE,
        drift_ms: drift * HOP * 1000 / RATE,
    }
}

/// Check that mono `received` carries `freqs`, at least `min` of it.
pub fn assert_carries(received: &[i16], freqs: &[f64], others: &[f64], min: f64, what: &str) {
    let r = recognise(received, freqs, others, STEP_MS);
    eprintln!("{what}: {r:?}");
    assert!(
        r.all_steps && r.matched >= min,
        "{what}: the stepped tones are not recognisable: {r:?} (need {min})"
    );
}

/// A 48 kHz 16-bit WAV file.
pub fn write_wav(path: &Path, pcm: &[i16], channels: u16) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in pcm {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// A WAV file's samples (interleaved) and channel count.
pub fn read_wav(path: &Path) -> (Vec<i16>, usize) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.sample_rate, RATE as u32, "{}", path.display());
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    (s, usize::from(spec.channels))
}
