//! Scripted arrival schedules on a simulated clock: a sender emits one
//! packet per 20 ms of its own clock, the network delays (drops, repeats)
//! each, the receiver pulls one frame per 20 ms of its own clock.

use super::*;
use rand::{Rng, SeedableRng};

const MS: f64 = 1000.0; // µs per ms

#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    Pkt(u64),
    Fec(u64),
    Conceal,
    Silence,
}

struct Trace {
    /// (pull time in ms, what played); skips are not listed.
    outs: Vec<(f64, Out)>,
    /// (pull time in ms, delay in ms) at every pull.
    delays: Vec<(f64, f64)>,
    max_held: usize,
    max_history: usize,
    skipped: Vec<u64>,
    jb: JitterBuffer,
}

fn index(p: &[u8]) -> u64 {
    u64::from_be_bytes(p.try_into().unwrap())
}

/// Packet `i` is media time `i * 960` from `ts0` and sequence `seq0 + i`;
/// `arrivals` lists (arrival in ms, packet index), any order; the receiver
/// pulls every 20 ms from `phase_ms` for at most `seconds`, and stops once
/// every packet has arrived and left the buffer.
fn run(arrivals: &[(f64, u64)], seconds: f64, phase_ms: f64, seq0: u16, ts0: u32) -> Trace {
    run_pulling(arrivals, seconds, phase_ms, seq0, ts0, |_| 0.0)
}

/// As `run`, with pull `k` made `late_ms(k)` ms after its place on the
/// 20 ms grid (an audio callback that runs late now and then).
///
/// The receiver is the pipeline's: a FIFO of samples that each 20 ms pull
/// takes a frame from, refilled from the buffer when it holds less, each
/// frame pulled for the moment it starts playing (after what the FIFO
/// holds); frames to stretch are stretched by the real stretcher (the
/// audio is a 150 Hz tone with its second harmonic) and the change is
/// reported back. The trace lists the frames as they were pulled from the
/// buffer, at their playout times.
fn run_pulling(
    arrivals: &[(f64, u64)],
    seconds: f64,
    phase_ms: f64,
    seq0: u16,
    ts0: u32,
    late_ms: impl Fn(usize) -> f64,
) -> Trace {
    let t0 = Instant::now();
    let at = |ms: f64| t0 + Duration::from_micros((ms * MS) as u64);
    let mut arrivals = arrivals.to_vec();
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut jb = JitterBuffer::new();
    let mut trace = Trace {
        outs: Vec::new(),
        delays: Vec::new(),
        max_held: 0,
        max_history: 0,
        skipped: Vec::new(),
        jb: JitterBuffer::new(),
    };
    let mut stretcher = crate::audio::stretch::Stretcher::new(1);
    let mut fifo: Vec<i16> = Vec::new();
    let tone = |i: u64| {
        (0..FRAME_SAMPLES as u64).map(move |k| {
            let x = (i * FRAME_SAMPLES as u64 + k) as f64 * 150.0 / 48_000.0;
            let w = 2.0 * std::f64::consts::PI * x;
            (8000.0 * w.sin() + 4000.0 * (2.0 * w).sin()) as i16
        })
    };
    let mut next_arrival = 0;
    let pulls = ((seconds * 1000.0 - phase_ms) / 20.0) as usize;
    for k in 0..pulls {
        let now_ms = phase_ms + k as f64 * 20.0 + late_ms(k);
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= now_ms {
            let (t, i) = arrivals[next_arrival];
            jb.push(
                at(t),
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add((i * FRAME_SAMPLES as u64) as u32),
                i.to_be_bytes().to_vec(),
            );
            next_arrival += 1;
        }
        trace.max_held = trace.max_held.max(jb.held());
        while fifo.len() < FRAME_SAMPLES {
            let lead_ms = fifo.len() as f64 * 1000.0 / 48_000.0;
            let play_ms = now_ms + lead_ms;
            trace.delays.push((play_ms, jb.delay_ms(at(play_ms))));
            let lead = Duration::from_micros((lead_ms * MS) as u64);
            let (out, by) = loop {
                match jb.pull_ahead(at(now_ms), lead) {
                    Playout::Skip(p) => trace.skipped.push(index(&p)),
                    Playout::Packet(p) => break (Out::Pkt(index(&p)), 0),
                    Playout::Stretch { packet, by } => break (Out::Pkt(index(&packet)), by),
                    Playout::Fec(p) => break (Out::Fec(index(&p)), 0),
                    Playout::Conceal => break (Out::Conceal, 0),
                    Playout::Silence => break (Out::Silence, 0),
                }
            };
            match out {
                Out::Pkt(i) => fifo.extend(tone(i)),
                _ => fifo.resize(fifo.len() + FRAME_SAMPLES, 0),
            }
            if by != 0 {
                let made = stretcher.stretch(&mut fifo, by);
                jb.stretched(made);
            }
            trace.outs.push((play_ms, out));
        }
        fifo.drain(..FRAME_SAMPLES);
        trace.max_history = trace.max_history.max(jb.history_len());
        if next_arrival == arrivals.len() && jb.held() == 0 {
            // The call is over: what a buffer does after the last packet
            // (a stall, then silence) is another test's business.
            break;
        }
    }
    trace.jb = jb;
    trace
}

/// The sender's packets `0..n`, sent every 20 ms (times `1 + ppm / 1e6` of
/// receiver time), each arriving `base` ms plus `extra(i)` later; `extra`
/// returning `None` drops the packet.
fn sent(n: u64, ppm: f64, base: f64, mut extra: impl FnMut(u64) -> Option<f64>) -> Vec<(f64, u64)> {
    (0..n)
        .filter_map(|i| {
            let send = i as f64 * 20.0 * (1.0 + ppm / 1e6);
            extra(i).map(|x| (send + base + x, i))
        })
        .collect()
}

fn played(t: &Trace) -> Vec<u64> {
    t.outs
        .iter()
        .filter_map(|&(_, o)| match o {
            Out::Pkt(i) => Some(i),
            _ => None,
        })
        .collect()
}

fn count(t: &Trace, from_ms: f64, to_ms: f64, f: impl Fn(Out) -> bool) -> usize {
    t.outs
        .iter()
        .filter(|&&(ms, o)| ms >= from_ms && ms < to_ms && f(o))
        .count()
}

fn concealed(o: Out) -> bool {
    matches!(o, Out::Fec(_) | Out::Conceal)
}

fn assert_increasing(v: &[u64]) {
    assert!(
        v.windows(2).all(|w| w[0] < w[1]),
        "played out of order: {v:?}"
    );
}

#[test]
fn in_order_plays_everything_once() {
    let t = run(&sent(500, 0.0, 5.0, |_| Some(0.0)), 10.5, 3.0, 0, 0);
    assert_eq!(played(&t), (0..500).collect::<Vec<_>>());
    assert_eq!(count(&t, 0.0, 1e9, concealed), 0);
    let s = t.jb.stats();
    assert_eq!((s.received, s.lost, s.late, s.duplicates), (500, 0, 0, 0));
    // Silence only before the first frame and after the last.
    let first = t.outs.iter().position(|&(_, o)| o != Out::Silence).unwrap();
    assert!(t.outs[first..first + 500]
        .iter()
        .all(|&(_, o)| matches!(o, Out::Pkt(_))));
    // With no jitter the delay sits between the floor and one frame above.
    for &(ms, d) in &t.delays[first + 1..first + 499] {
        assert!((20.0..40.0 + 1.0).contains(&d), "delay {d} ms at {ms} ms");
    }
}

#[test]
fn reordered_packets_play_in_order() {
    // Every odd packet overtakes the even one before it by 8 ms.
    let t = run(
        &sent(500, 0.0, 5.0, |i| Some(if i % 2 == 0 { 12.0 } else { 0.0 })),
        11.0,
        7.0,
        0,
        0,
    );
    let p = played(&t);
    assert_increasing(&p);
    // The buffer learns the reordering from the first pair: at most the
    // start-up frames are concealed and nothing is lost after that.
    assert!(p.len() >= 498, "played {}", p.len());
    assert!(count(&t, 1000.0, 1e9, concealed) == 0);
    assert_eq!(t.jb.stats().lost, 0);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut arr = sent(300, 0.0, 5.0, |_| Some(0.0));
    // Every packet again 3 ms later, and every tenth once more 100 ms later
    // (after it has been played).
    arr.extend(sent(300, 0.0, 8.0, |_| Some(0.0)));
    arr.extend(sent(300, 0.0, 105.0, |i| (i % 10 == 0).then_some(0.0)));
    let t = run(&arr, 7.0, 1.0, 0, 0);
    assert_eq!(played(&t), (0..300).collect::<Vec<_>>());
    let s = t.jb.stats();
    assert_eq!(s.received, 300);
    assert_eq!(s.duplicates, 330);
    assert_eq!((s.late, s.lost, s.concealed), (0, 0, 0));
}

#[test]
fn a_late_packet_is_concealed_with_fec_then_dropped() {
    // Packet 200 arrives 150 ms late, well after its successors.
    let t = run(
        &sent(400, 0.0, 5.0, |i| Some(if i == 200 { 150.0 } else { 0.0 })),
        9.0,
        2.0,
        0,
        0,
    );
    let p = played(&t);
    assert_increasing(&p);
    assert!(!p.contains(&200));
    assert_eq!(count(&t, 0.0, 1e9, |o| o == Out::Fec(201)), 1);
    let s = t.jb.stats();
    assert_eq!((s.late, s.concealed, s.concealed_fec), (1, 1, 1));
    // One late packet grows the delay for a while, then it shrinks back.
    let (_, last_delay) = *t.delays.last().unwrap();
    assert!(last_delay < 40.0 + 1.0, "{last_delay}");
}

#[test]
fn single_losses_use_fec_from_the_next_packet() {
    let t = run(
        &sent(1000, 0.0, 5.0, |i| (i % 10 != 5).then_some(0.0)),
        20.5,
        4.0,
        0,
        0,
    );
    let s = t.jb.stats();
    assert_eq!(s.lost, 100);
    assert_eq!(s.concealed, 100);
    assert_eq!(s.concealed_fec, 100);
    for k in 0..100 {
        let lost = k * 10 + 5;
        assert_eq!(count(&t, 0.0, 1e9, |o| o == Out::Fec(lost + 1)), 1);
    }
    assert_eq!(played(&t).len(), 900);
}

#[test]
fn bursts_of_three_conceal_three_frames_and_keep_the_delay() {
    // Lose 3 in a row every 50 packets.
    let t = run(
        &sent(1000, 0.0, 5.0, |i| (i % 50 >= 3 || i < 50).then_some(0.0)),
        20.5,
        9.0,
        0,
        0,
    );
    let s = t.jb.stats();
    assert_eq!(s.lost, 19 * 3);
    assert_eq!(s.concealed, 19 * 3, "{s:?}");
    // The last frame of each burst comes from the FEC of the packet after.
    assert_eq!(s.concealed_fec, 19);
    assert_eq!(played(&t).len(), 1000 - 57);
    assert_eq!(s.dropped, 0);
    let max = t
        .delays
        .iter()
        .skip(10)
        .map(|&(_, d)| d)
        .fold(0.0, f64::max);
    assert!(max < 40.0 + 1.0, "bursts must not grow the delay: {max}");
}

#[test]
fn jitter_jump_to_60_ms_and_back() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(60);
    // 0 ms of jitter for 10 s, uniform 0..60 ms for 10 s, then 0 again.
    let jitter = |i: u64| match i * 20 {
        t if (10_000..20_000).contains(&t) => 60.0,
        _ => 0.0,
    };
    let arr = sent(1500, 0.0, 5.0, |i| Some(rng.gen::<f64>() * jitter(i)));
    let t = run(&arr, 30.5, 11.0, 0, 0);
    assert_increasing(&played(&t));
    let first_second = count(&t, 1000.0, 10_000.0, concealed);
    let up = count(&t, 10_000.0, 20_000.0, concealed);
    let down = count(&t, 20_000.0, 30_000.0, concealed);
    assert_eq!(first_second, 0);
    assert!(up <= 2, "{up} frames concealed when jitter rose to 60 ms");
    assert!(down <= 2, "{down} frames concealed when jitter fell to 0");
    // While the jitter lasts, the delay covers it.
    let during: Vec<f64> = t
        .delays
        .iter()
        .filter(|&&(ms, _)| (12_000.0..20_000.0).contains(&ms))
        .map(|&(_, d)| d)
        .collect();
    assert!(during.iter().all(|&d| d >= 40.0), "{during:?}");
    // Back under 60 ms within 10 s of the jitter stopping, and it stays so.
    let after: Vec<f64> = t
        .delays
        .iter()
        .filter(|&&(ms, _)| ms >= 29_000.0)
        .map(|&(_, d)| d)
        .collect();
    assert!(after.iter().all(|&d| d < 60.0), "{after:?}");
    assert_eq!(t.jb.stats().late, 0, "late packets mean lost audio");
}

/// ±100 ppm between the two clocks for 10 minutes, with a little jitter:
/// the delay neither creeps up nor down, and nothing accumulates.
fn drift(ppm: f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(ppm.to_bits());
    let n = 10 * 60 * 50;
    let arr = sent(n, ppm, 5.0, |_| Some(rng.gen::<f64>() * 5.0));
    let t = run(&arr, 600.5, 13.0, 0, 0);
    let p = played(&t);
    assert_increasing(&p);
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = t
            .delays
            .iter()
            .filter(|&&(ms, _)| ms >= from && ms < to)
            .map(|&(_, d)| d)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let first = mean(10_000.0, 70_000.0);
    let last = mean(530_000.0, 590_000.0);
    // The delay saw-tooths within about one frame as frames are stretched
    // or dropped; its average must not move further than that.
    assert!(
        (first - last).abs() < 20.0,
        "delay drifted from {first:.1} to {last:.1} ms"
    );
    let max = t
        .delays
        .iter()
        .skip(50)
        .map(|&(_, d)| d)
        .fold(0.0, f64::max);
    assert!(max < 70.0, "delay reached {max} ms");
    // 100 ppm of 10 minutes is 60 ms (2880 samples) of audio more or less
    // than the receiver plays: compressed or stretched away, never a frame
    // concealed or dropped for it.
    let s = t.jb.stats();
    assert_eq!((s.concealed, s.dropped), (0, 0), "{s:?}");
    // (Positive ppm spaces the packets wider on the receiver's clock: less
    // audio arrives than is played, so the delay is kept by stretching.)
    let (absorbed, other) = if ppm > 0.0 {
        (s.stretched, s.compressed)
    } else {
        (s.compressed, s.stretched)
    };
    assert!(absorbed >= other + 2000, "{s:?}");
    assert_eq!(s.late, 0);
    assert!(t.max_held <= 5, "held up to {} packets", t.max_held);
    assert!(t.max_history <= 201, "history held {}", t.max_history);
}

#[test]
fn sender_clock_100_ppm_fast_for_10_minutes() {
    drift(100.0);
}

#[test]
fn sender_clock_100_ppm_slow_for_10_minutes() {
    drift(-100.0);
}

#[test]
fn sequence_and_timestamp_wrap() {
    let t = run(
        &sent(400, 0.0, 5.0, |_| Some(0.0)),
        8.5,
        3.0,
        65_500,
        u32::MAX - 20_000,
    );
    assert_eq!(played(&t), (0..400).collect::<Vec<_>>());
    assert_eq!(t.jb.stats().lost, 0);
}

#[test]
fn a_long_pause_plays_silence_then_restarts() {
    // The sender stops for 2 s (packets 100..200 never sent) then goes on.
    let t = run(
        &sent(300, 0.0, 5.0, |i| (!(100..200).contains(&i)).then_some(0.0)),
        6.5,
        3.0,
        0,
        0,
    );
    let s = t.jb.stats();
    assert_eq!(s.concealed as u32, MAX_STALL);
    assert_eq!(s.restarts, 1);
    assert!(count(&t, 2_500.0, 3_900.0, |o| o == Out::Silence) > 50);
    let p = played(&t);
    assert_eq!(p.len(), 200);
    assert!(p.ends_with(&(200..300).collect::<Vec<_>>()));
}

#[test]
fn a_flood_cannot_grow_memory() {
    let mut jb = JitterBuffer::new();
    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for k in 0..50_000u64 {
        let now = t0 + Duration::from_micros(k * 10);
        jb.push(now, rng.gen(), rng.gen(), vec![0; 8]);
        if k % 2000 == 0 {
            let _ = jb.pull(now);
        }
        assert!(jb.held() <= CAPACITY);
        assert!(jb.history_len() <= MAX_HISTORY);
    }
}

#[test]
fn extend_picks_the_nearest_value() {
    assert_eq!(extend(5, 16, 65_530), 65_541);
    assert_eq!(extend(65_530, 16, 65_541), 65_530);
    assert_eq!(extend(0, 16, 1 << 20), 1 << 20);
    assert_eq!(extend(10, 32, (1 << 32) - 10), (1 << 32) + 10);
}

#[test]
fn frames_reordered_by_jitter_wait_instead_of_being_concealed() {
    // 2 s without jitter, then every even packet is 50 ms late: its
    // successor is always there before it. Once the buffer has seen one
    // such packet, a missing frame is late, not lost: the buffer waits for
    // it (growing the delay) instead of concealing it and dropping it when
    // it turns up.
    let arr = sent(1000, 0.0, 5.0, |i| {
        Some(if i >= 100 && i % 2 == 0 { 50.0 } else { 0.0 })
    });
    let t = run(&arr, 21.0, 3.0, 0, 0);
    assert_increasing(&played(&t));
    let at_change = count(&t, 2_000.0, 3_000.0, concealed);
    let after = count(&t, 3_000.0, 1e9, concealed);
    assert!(at_change <= 3, "{at_change} frames concealed at the change");
    assert_eq!(after, 0, "frames concealed once the reordering is known");
    let s = t.jb.stats();
    assert!(s.late <= 1, "{s:?}");
    assert!(played(&t).len() >= 998, "played {}", played(&t).len());
}

#[test]
fn a_jitter_jump_to_60_ms_and_back_costs_at_most_two_frames_per_change() {
    // The jump of `jitter_jump_to_60_ms_and_back` over 200 random delay
    // schedules and pull phases: 0 ms of jitter for 5 s, 0–60 ms for 10 s,
    // 0 again for 5 s. The first packet later than the delay costs a frame
    // (a stall, or its FEC when the packet after it is there: nothing says
    // yet that it is late rather than lost); once a frame has waited for
    // its late packet, the target is twice the measured jitter for a second and the delay grows by
    // stretching frames that are there, not by concealing. A second frame
    // goes when another packet is later than the delay grown so far, and
    // a third only when two packets in a row are (a stall that lasts two
    // frames, with nothing decoded to stretch). The fall costs nothing: the
    // delay shrinks by compressing frames.
    let seeds = 200u64;
    let mut hist = [0u64; 4];
    for seed in 0..seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + seed);
        let arr = sent(1000, 0.0, 5.0, |i| {
            let j = if (5_000..15_000).contains(&(i * 20)) {
                60.0
            } else {
                0.0
            };
            Some(rng.gen::<f64>() * j)
        });
        let phase = 1.0 + (seed as f64 * 7.3) % 19.0;
        let t = run(&arr, 20.5, phase, 0, 0);
        assert_increasing(&played(&t));
        let s = t.jb.stats();
        assert_eq!(count(&t, 1_000.0, 5_000.0, concealed), 0, "seed {seed}");
        let up = count(&t, 5_000.0, 15_000.0, concealed);
        let down = count(&t, 15_000.0, 1e9, concealed);
        assert!(
            up <= 3,
            "seed {seed}: {up} frames concealed at the jump: {s:?}"
        );
        assert_eq!(down, 0, "seed {seed}: {down} concealed at the fall: {s:?}");
        assert!(s.late <= up as u64, "seed {seed}: {s:?}");
        assert_eq!(s.dropped, 0, "seed {seed}: {s:?}");
        assert!(s.stretched > 0 && s.compressed > 0, "seed {seed}: {s:?}");
        hist[up] += 1;
        // Back under 60 ms within 4 s of the fall.
        let after = t.delays.iter().filter(|&&(ms, _)| ms >= 19_000.0);
        assert!(after.clone().count() > 10);
        for &(ms, d) in after {
            assert!(d < 60.0, "seed {seed}: delay {d} ms at {ms} ms");
        }
    }
    // Measured: 122 schedules cost one frame, 71 two, 7 three (before
    // stretching: two or three, a third of them three).
    let at_most_two = hist[0] + hist[1] + hist[2];
    assert!(at_most_two * 100 >= seeds * 96, "{hist:?}");
    assert!((hist[0] + hist[1]) * 100 >= seeds * 55, "{hist:?}");
}

#[test]
fn single_losses_are_rebuilt_from_fec_even_when_the_next_packet_is_a_little_late() {
    // 0–3 ms of jitter and one packet in ten lost. The pulls are placed so
    // that, at a lost frame's playout time, the packet after it (carrying
    // its FEC) has arrived only a third of the time. Once losses are seen,
    // the buffer keeps one frame of look-ahead so the FEC is there.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let arr = sent(1500, 0.0, 5.0, |i| {
        let jitter = if i == 0 { 0.0 } else { rng.gen::<f64>() * 3.0 };
        (i % 10 != 5).then_some(jitter)
    });
    let t = run(&arr, 31.0, 6.0, 0, 0);
    assert_increasing(&played(&t));
    let s = t.jb.stats();
    assert_eq!(s.lost, 150);
    assert!(s.concealed_fec >= 147, "{s:?}");
    // Growing the delay by the look-ahead costs one extra frame at most.
    assert!(s.concealed <= 151, "{s:?}");
}

#[test]
fn late_pulls_do_not_change_the_delay() {
    // 0–18 ms of jitter; every fifth pull is 15 ms late (the audio callback
    // was held up) and the next one is on time again. The playout time of
    // a frame is its place on the pull grid, not the moment of a late pull:
    // nothing is dropped and nothing is concealed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let arr = sent(1000, 0.0, 5.0, |_| Some(rng.gen::<f64>() * 18.0));
    let t = run_pulling(
        &arr,
        21.0,
        16.0,
        0,
        0,
        |k| {
            if k % 5 == 4 {
                15.0
            } else {
                0.0
            }
        },
    );
    assert_increasing(&played(&t));
    let s = t.jb.stats();
    assert_eq!(count(&t, 1_000.0, 1e9, concealed), 0, "{s:?}");
    assert_eq!(s.dropped, 0, "{s:?}");
    assert_eq!(s.late, 0, "{s:?}");
}

#[test]
fn losses_while_the_delay_is_above_the_target_are_rebuilt_not_skipped() {
    // No jitter, but the receiver stalls once for about 100 ms: packets
    // 100..=104 arrive together with 104. The buffer stalls and then plays
    // them, so its delay is above the target for a while (it shrinks one
    // frame at a time). Every lost packet after that must still be played
    // as a frame (FEC from the next packet): the extra delay is not frames
    // that stood in for it.
    let arr = sent(600, 0.0, 5.0, |i| match i {
        100..=104 => Some((104 - i) as f64 * 20.0 + 1.0),
        _ if i >= 110 && i % 10 == 5 => None,
        _ => Some(0.0),
    });
    let t = run(&arr, 12.5, 7.0, 0, 0);
    assert_increasing(&played(&t));
    let s = t.jb.stats();
    let lost = (110..600).filter(|i| i % 10 == 5).count() as u64;
    assert_eq!(s.lost, lost, "{s:?}");
    for i in (110..600u64).filter(|i| i % 10 == 5) {
        assert_eq!(
            count(&t, 0.0, 1e9, |o| o == Out::Fec(i + 1)),
            1,
            "frame {i} was not rebuilt from FEC: {s:?}"
        );
    }
    assert_eq!(s.late, 0, "{s:?}");
}
