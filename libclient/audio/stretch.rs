//! Time-stretching of decoded PCM, as NetEq's "preemptive expand" and
//! "accelerate" do it: the playout delay grows or shrinks on real audio
//! instead of by concealing or dropping whole frames.
//!
//! One step inserts or removes one pitch period `L` at the start of the
//! samples not yet played:
//! - the lag is the one in [`MIN_LAG`]..=[`MAX_LAG`] (2.5–15 ms, and at most
//!   half the samples at hand) whose two consecutive periods `x[0..L]` and
//!   `x[L..2L]` correlate best (normalised cross-correlation of the channels
//!   mixed down; searched on every [`DECIMATION`]th sample first, then
//!   refined around the best coarse lag at full rate);
//! - lengthen: `x[0..L]`, then the cross-fade from `x[L..2L]` into
//!   `x[0..L]`, then `x[L..]`: one period is played twice, and each seam
//!   joins samples that were neighbours;
//! - shorten: the cross-fade from `x[0..L]` into `x[L..2L]`, then `x[2L..]`.
//!
//! Where no lag correlates (unvoiced sound, noise) the same cross-fade is
//! done over a segment of the length asked for, which on noise is as good
//! as any; silence stays silence. All channels (interleaved) use the same
//! lag. Steps repeat until the change asked for is made (within a lag) or
//! the samples at hand are too short. Sans-IO: samples in, samples out.

/// Shortest period inserted or removed: 2.5 ms at 48 kHz (400 Hz).
pub const MIN_LAG: usize = 120;
/// Longest: 15 ms (67 Hz), below any speaking voice's pitch.
pub const MAX_LAG: usize = 720;
/// The coarse search looks at every 4th sample (a 12 kHz view).
pub const DECIMATION: usize = 4;
/// Below this normalised correlation the audio is taken as unvoiced.
const VOICED: f32 = 0.6;
/// Lags correlating this close to the best count as equally good.
const TIE: f32 = 0.03;
/// Mean absolute sample (mixed down) below which audio is silence.
const SILENT: f32 = 8.0;
/// Steps per call at most: bounds the work whatever is asked.
const MAX_STEPS: usize = 4;

/// A time-stretcher for one stream; keeps its scratch buffers so that
/// stretching allocates nothing once warmed up.
pub struct Stretcher {
    channels: usize,
    mono: Vec<f32>,
    out: Vec<i16>,
}

impl Stretcher {
    pub fn new(channels: usize) -> Self {
        assert!(channels > 0, "at least one channel");
        Stretcher {
            channels,
            mono: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Lengthen (`change > 0`) or shorten (`change < 0`) the interleaved
    /// `pcm` by at most `|change|` samples per channel, in whole steps of
    /// [`MIN_LAG`] or more; returns the change made (0 when `|change|` is
    /// below [`MIN_LAG`] or `pcm` holds fewer than `2 * MIN_LAG` samples
    /// per channel).
    pub fn stretch(&mut self, pcm: &mut Vec<i16>, change: i32) -> i32 {
        let mut done: i32 = 0;
        for _ in 0..MAX_STEPS {
            let left =
                (change.unsigned_abs() as usize).saturating_sub(done.unsigned_abs() as usize);
            if left < MIN_LAG {
                break;
            }
            let frames = pcm.len() / self.channels;
            // Shortening can take at most what is left to take; lengthening
            // may insert a period longer than asked only by half a period.
            let most = if change < 0 { left } else { left + left / 2 };
            let search = MAX_LAG.min(frames / 2);
            let most = most.min(search);
            if most < MIN_LAG {
                break;
            }
            self.mix_down(pcm, 2 * search);
            let Some(lag) = self.best_lag(search, most, left) else {
                break;
            };
            if change > 0 {
                self.lengthen(pcm, lag);
                done += lag as i32;
            } else {
                self.shorten(pcm, lag);
                done -= lag as i32;
            }
        }
        done
    }

    fn mix_down(&mut self, pcm: &[i16], frames: usize) {
        self.mono.clear();
        self.mono.extend(
            pcm[..frames * self.channels]
                .chunks_exact(self.channels)
                .map(|f| f.iter().map(|&s| f32::from(s)).sum::<f32>()),
        );
    }

    /// The lag to insert or remove, at most `most`: the period of the
    /// sound (of the lags up to `search` that correlate within [`TIE`] of
    /// the best, the one nearest `wanted`), or for a sound without one
    /// (silence, noise) `wanted` within the limits. `None` when the sound
    /// is periodic but no multiple of its period fits.
    fn best_lag(&self, search: usize, most: usize, wanted: usize) -> Option<usize> {
        let x = &self.mono;
        let fallback = wanted.clamp(MIN_LAG, most);
        let level = x.iter().map(|v| v.abs()).sum::<f32>() / x.len() as f32;
        if level < SILENT * self.channels as f32 {
            return Some(fallback);
        }
        // Coarse: every DECIMATION-th lag, correlating every DECIMATION-th
        // sample. A periodic sound correlates about as well at every
        // multiple of its period: of the peaks within TIE of the best, the
        // one nearest the change wanted is taken (fewer steps).
        let mut coarse = [0.0f32; (MAX_LAG - MIN_LAG) / DECIMATION + 1];
        let lags = (search - MIN_LAG) / DECIMATION + 1;
        let mut top = f32::MIN;
        for (k, c) in coarse[..lags].iter_mut().enumerate() {
            *c = correlation(x, MIN_LAG + k * DECIMATION, DECIMATION);
            top = top.max(*c);
        }
        let mut pick: Option<(usize, usize)> = None;
        for (k, &c) in coarse[..lags].iter().enumerate() {
            let lag = MIN_LAG + k * DECIMATION;
            let near = lag.abs_diff(wanted);
            // Only peaks: the lags beside a period correlate almost as well.
            let peak = (k == 0 || coarse[k - 1] <= c) && (k + 1 == lags || coarse[k + 1] <= c);
            if lag <= most && peak && c >= top - TIE && pick.is_none_or(|(d, _)| near < d) {
                pick = Some((near, lag));
            }
        }
        let Some((_, coarse_lag)) = pick else {
            return (top < VOICED).then_some(fallback);
        };
        // Fine: every lag and sample around the coarse pick.
        let lo = coarse_lag.saturating_sub(DECIMATION - 1).max(MIN_LAG);
        let hi = (coarse_lag + DECIMATION - 1).min(most);
        let mut fine = (f32::MIN, coarse_lag);
        for lag in lo..=hi {
            let c = correlation(x, lag, 1);
            if c > fine.0 {
                fine = (c, lag);
            }
        }
        if fine.0 >= VOICED {
            Some(fine.1)
        } else if top < VOICED {
            Some(fallback)
        } else {
            None
        }
    }

    /// `x[0..L]`, fade `x[L..2L]` into `x[0..L]`, `x[L..]`.
    fn lengthen(&mut self, pcm: &mut Vec<i16>, lag: usize) {
        let n = lag * self.channels;
        self.out.clear();
        self.out.extend_from_slice(&pcm[..n]);
        crossfade(&mut self.out, &pcm[n..2 * n], &pcm[..n], self.channels);
        self.out.extend_from_slice(&pcm[n..]);
        std::mem::swap(pcm, &mut self.out);
    }

    /// Fade `x[0..L]` into `x[L..2L]`, then `x[2L..]`.
    fn shorten(&mut self, pcm: &mut Vec<i16>, lag: usize) {
        let n = lag * self.channels;
        self.out.clear();
        crossfade(&mut self.out, &pcm[..n], &pcm[n..2 * n], self.channels);
        self.out.extend_from_slice(&pcm[2 * n..]);
        std::mem::swap(pcm, &mut self.out);
    }
}

/// Append `from` faded into `to` (interleaved, equal lengths, `ch`
/// channels faded alike).
fn crossfade(out: &mut Vec<i16>, from: &[i16], to: &[i16], ch: usize) {
    let frames = from.len() / ch;
    for (i, (f, t)) in from.chunks(ch).zip(to.chunks(ch)).enumerate() {
        let w = fade(i, frames);
        out.extend(
            f.iter()
                .zip(t)
                .map(|(&f, &t)| mix(f32::from(f), f32::from(t), w)),
        );
    }
}

/// Normalised cross-correlation of `x[0..lag]` with `x[lag..2lag]`, over
/// every `step`-th sample.
fn correlation(x: &[f32], lag: usize, step: usize) -> f32 {
    let (mut xy, mut xx, mut yy) = (0.0f32, 0.0f32, 0.0f32);
    let (a, b) = (&x[..lag], &x[lag..2 * lag]);
    for (p, q) in a.iter().step_by(step).zip(b.iter().step_by(step)) {
        xy += p * q;
        xx += p * p;
        yy += q * q;
    }
    if xx <= 0.0 || yy <= 0.0 {
        return 0.0;
    }
    xy / (xx * yy).sqrt()
}

/// Weight of the incoming segment at step `i` of `len`: a raised cosine
/// from 0 to 1.
fn fade(i: usize, len: usize) -> f32 {
    let t = (i as f32 + 0.5) / len as f32;
    0.5 - 0.5 * (std::f32::consts::PI * t).cos()
}

fn mix(from: f32, to: f32, w: f32) -> i16 {
    (from * (1.0 - w) + to * w)
        .round()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests;
