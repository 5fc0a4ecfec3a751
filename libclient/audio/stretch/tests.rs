use super::*;
use rand::{Rng, SeedableRng};

const RATE: f64 = 48_000.0;

fn sine(freq: f64, frames: usize, amp: f64, phase: f64) -> Vec<i16> {
    (0..frames)
        .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / RATE + phase).sin()) as i16)
        .collect()
}

fn channel(pcm: &[i16], ch: usize, c: usize) -> Vec<i16> {
    pcm.iter().skip(c).step_by(ch).copied().collect()
}

fn interleave(a: &[i16], b: &[i16]) -> Vec<i16> {
    a.iter().zip(b).flat_map(|(&x, &y)| [x, y]).collect()
}

/// Rising zero crossings, interpolated between samples.
fn crossings(x: &[i16]) -> Vec<f64> {
    x.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
        .map(|(i, w)| {
            let (a, b) = (f64::from(w[0]), f64::from(w[1]));
            i as f64 + -a / (b - a)
        })
        .collect()
}

/// The frequency over the whole signal, and the largest deviation of any
/// single period from the mean period (a seam that breaks the phase shows
/// as one short or long period).
fn frequency(x: &[i16]) -> (f64, f64) {
    let c = crossings(x);
    assert!(c.len() > 3, "too few periods");
    let mean = (c[c.len() - 1] - c[0]) / (c.len() - 1) as f64;
    let worst = c
        .windows(2)
        .map(|w| ((w[1] - w[0]) - mean).abs() / mean)
        .fold(0.0, f64::max);
    (RATE / mean, worst)
}

fn max_jump(x: &[i16]) -> i32 {
    x.windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap()
}

/// Stretch a copy of `pcm` by `change` and check the length changed by
/// what `stretch` said, short of what was asked by less than the smallest
/// multiple of `period` (a periodic sound changes by whole periods; 0: not
/// periodic) that is at least [`MIN_LAG`], and never by
/// more than half again (lengthening) or anything more (shortening).
fn stretched(pcm: &[i16], ch: usize, change: i32, period: usize) -> (Vec<i16>, i32) {
    let mut s = Stretcher::new(ch);
    let mut v = pcm.to_vec();
    let made = s.stretch(&mut v, change);
    assert_eq!(
        v.len() as i64,
        pcm.len() as i64 + i64::from(made) * ch as i64,
        "length does not match the change reported"
    );
    assert!(
        made == 0 || made.signum() == change.signum(),
        "{made} for {change}"
    );
    let (asked, got) = (change.unsigned_abs() as usize, made.unsigned_abs() as usize);
    // The smallest lag a periodic sound can be changed by.
    let step = if period == 0 {
        MIN_LAG
    } else {
        MIN_LAG.div_ceil(period) * period
    };
    assert!(asked - got.min(asked) < step, "asked {change}, made {made}");
    if change < 0 {
        assert!(got <= asked, "asked {change}, made {made}");
    } else {
        assert!(got <= asked + asked / 2, "asked {change}, made {made}");
    }
    (v, made)
}

/// Stretch 60 ms of each `(frequency, change)` sine: it keeps its
/// frequency (within 0.5 %, and every period within 3 % of the mean: a
/// seam that broke the phase would show as one short or long period), and
/// no sample-to-sample jump is larger than the input's (no click).
fn sine_keeps_its_pitch(cases: &[(f64, i32)], phase: f64) {
    for &(freq, change) in cases {
        let x = sine(freq, 2880, 12_000.0, phase);
        let (y, made) = stretched(&x, 1, change, (RATE / freq).ceil() as usize);
        assert_eq!(made.signum(), change.signum(), "{freq} Hz: made {made}");
        let (f, worst) = frequency(&y);
        assert!(
            (f - freq).abs() / freq < 0.005,
            "{freq} Hz became {f:.1} Hz"
        );
        assert!(
            worst < 0.03,
            "{freq} Hz: a period off by {:.1} %",
            worst * 100.0
        );
        let bound = max_jump(&x) * 105 / 100 + 2;
        assert!(
            max_jump(&y) <= bound,
            "{freq} Hz: jump {} > {bound}",
            max_jump(&y)
        );
    }
}

#[test]
fn a_lengthened_sine_keeps_its_frequency_and_has_no_clicks() {
    sine_keeps_its_pitch(
        &[(440.0, 480), (180.0, 300), (1000.0, 960), (95.0, 700)],
        0.3,
    );
}

#[test]
fn a_shortened_sine_keeps_its_frequency_and_has_no_clicks() {
    sine_keeps_its_pitch(
        &[(440.0, -480), (180.0, -300), (1000.0, -700), (120.0, -500)],
        1.1,
    );
}

#[test]
fn the_change_made_is_the_change_asked_within_one_lag() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..40 {
        let freq = rng.gen_range(90.0..900.0);
        let x = sine(freq, 1440 + rng.gen_range(0..960), 8000.0, rng.gen());
        let change = rng.gen_range(MIN_LAG as i32..=960) * if rng.gen() { 1 } else { -1 };
        // `stretched` checks the lengths; shortening is limited by what is
        // at hand (each removed lag needs two).
        let period = (RATE / freq).ceil() as usize;
        stretched(&x, 1, change.max(-(x.len() as i32) / 2), period);
    }
}

#[test]
fn silence_stays_silence() {
    for ch in [1, 2] {
        for change in [480, -480] {
            let (y, made) = stretched(&vec![0; 960 * ch], ch, change, 0);
            assert_eq!(made, change);
            assert!(y.iter().all(|&s| s == 0));
        }
    }
}

#[test]
fn noise_is_stretched_by_a_cross_faded_segment() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let x: Vec<i16> = (0..1920).map(|_| rng.gen_range(-3000..3000)).collect();
    for change in [400, -400] {
        let (y, made) = stretched(&x, 1, change, 0);
        assert_eq!(made, change, "unvoiced: the length asked");
        assert!(y.iter().all(|&s| (-3000..3000).contains(&s)));
    }
}

#[test]
fn stereo_uses_one_lag_for_both_channels() {
    // The same tone on both channels at different levels and phases: each
    // keeps its frequency, the two stay aligned (the same lag for both),
    // and each channel is what the mono stretcher makes of it.
    let l = sine(300.0, 1920, 10_000.0, 0.0);
    let r = sine(300.0, 1920, 5_000.0, 0.0);
    for change in [500, -500] {
        let (y, made) = stretched(&interleave(&l, &r), 2, change, 160);
        let (yl, yr) = (channel(&y, 2, 0), channel(&y, 2, 1));
        for c in [&yl, &yr] {
            let (f, worst) = frequency(c);
            assert!((f - 300.0).abs() < 1.5, "{f}");
            assert!(worst < 0.03);
        }
        // Right is left at half the level, sample by sample.
        for (a, b) in yl.iter().zip(&yr) {
            assert!((i32::from(*a) - 2 * i32::from(*b)).abs() <= 3, "{a} {b}");
        }
        let (ml, mono_made) = stretched(&l, 1, change, 160);
        assert_eq!(made, mono_made);
        assert_eq!(yl, ml);
    }
}

#[test]
fn too_little_audio_or_too_small_a_change_does_nothing() {
    let x = sine(440.0, 200, 9000.0, 0.0);
    let mut s = Stretcher::new(1);
    let mut v = x.clone();
    assert_eq!(s.stretch(&mut v, 480), 0);
    assert_eq!(v, x);
    let mut w = sine(440.0, 960, 9000.0, 0.0);
    let orig = w.clone();
    assert_eq!(s.stretch(&mut w, (MIN_LAG - 1) as i32), 0);
    assert_eq!(s.stretch(&mut w, -((MIN_LAG - 1) as i32)), 0);
    assert_eq!(w, orig);
}
