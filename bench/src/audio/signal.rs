//! Signals of the audio workload and how they are measured: the speech,
//! latency markers and where they come out, alignment, the 16 kHz files
//! PESQ reads, PESQ itself (a Python helper), and the loopback reference.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RATE: usize = 48_000;
const FRAME: usize = 960;
/// Latency markers: a 20 ms tone of 1 kHz every 500 ms.
const MARK_EVERY: usize = RATE / 2;
const MARK_FIRST: usize = RATE / 5;
const MARK_LEN: usize = RATE / 50;
/// An onset is the first sample above LOUD after QUIET_RUN samples below
/// QUIET (samples in between count for neither).
const LOUD: i16 = 3000;
const QUIET: i16 = 1500;
const QUIET_RUN: usize = RATE / 5;

pub fn read_speech(path: &Path) -> Result<Vec<i16>, String> {
    let mut r = hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = r.spec();
    if spec.sample_rate != RATE as u32 || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(format!("{}: need 48 kHz mono 16-bit", path.display()));
    }
    r.samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// `before` and `after` seconds of silence around `x`.
pub fn pad(x: &[i16], before: f64, after: f64) -> Vec<i16> {
    let z = |s: f64| vec![0i16; (s * RATE as f64) as usize];
    [z(before), x.to_vec(), z(after)].concat()
}

/// `seconds` of latency markers.
pub fn markers(seconds: f64) -> Vec<i16> {
    let n = (seconds * RATE as f64) as usize;
    (0..n)
        .map(|i| {
            let at = i.checked_sub(MARK_FIRST).map(|j| j % MARK_EVERY);
            match at {
                Some(j) if j < MARK_LEN && i + MARK_EVERY <= n => {
                    (12_000.0
                        * (2.0 * std::f64::consts::PI * 1000.0 * j as f64 / RATE as f64).sin())
                        as i16
                }
                _ => 0,
            }
        })
        .collect()
}

fn onsets(x: &[i16]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut quiet = 0;
    for (i, &s) in x.iter().enumerate() {
        let a = s.unsigned_abs();
        if a >= LOUD.unsigned_abs() {
            if quiet >= QUIET_RUN {
                out.push(i);
            }
            quiet = 0;
        } else if a < QUIET.unsigned_abs() {
            quiet += 1;
        }
    }
    out
}

/// When sample `i` of a stream handed over 20 ms at a time went in or out.
fn time_of(ticks: &[Instant], i: usize) -> Option<Instant> {
    let t = ticks.get(i / FRAME)?;
    Some(*t + Duration::from_secs_f64((i % FRAME) as f64 / RATE as f64))
}

/// Mouth-to-ear latency of each marker, ms: from the moment its first
/// sample was pushed (the push's time plus its place in the pushed buffer)
/// to the moment it plays (the pull's time plus its place in the pulled
/// buffer, which starts playing when pulled).
pub fn latencies(marks: &[i16], pushed: &[Instant], heard: &[i16], pulled: &[Instant]) -> Vec<f64> {
    let sent: Vec<Instant> = onsets(marks)
        .into_iter()
        .filter_map(|i| time_of(pushed, i))
        .collect();
    onsets(heard)
        .into_iter()
        .filter_map(|j| {
            let out = time_of(pulled, j)?;
            let inp = sent.iter().rev().find(|&&t| t <= out)?;
            let ms = (out - *inp).as_secs_f64() * 1e3;
            (ms < 400.0).then_some(ms)
        })
        .collect()
}

/// Mean absolute level per 10 ms.
fn envelope(x: &[i16]) -> Vec<f64> {
    x.chunks(RATE / 100)
        .map(|c| c.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / c.len() as f64)
        .collect()
}

/// The part of `heard` that carries `reference`: the best lag by the
/// correlation of their 10 ms envelopes (PESQ then aligns finely).
pub fn align(reference: &[i16], heard: &[i16]) -> Vec<i16> {
    let (er, eh) = (envelope(reference), envelope(heard));
    let mut best = (f64::MIN, 0);
    for lag in 0..eh.len().saturating_sub(er.len() / 2) {
        let c: f64 = er.iter().zip(&eh[lag..]).map(|(a, b)| a * b).sum();
        if c > best.0 {
            best = (c, lag);
        }
    }
    let from = best.1 * RATE / 100;
    let mut out: Vec<i16> = heard[from.min(heard.len())..].to_vec();
    out.resize(reference.len(), 0);
    out
}

/// Write `x` (48 kHz) as a 16 kHz mono WAV: low-pass (windowed sinc,
/// 7 kHz) and keep every third sample.
pub fn write_16k(path: &Path, x: &[i16]) -> Result<(), String> {
    const TAPS: usize = 97;
    let cutoff = 7000.0 / RATE as f64;
    let h: Vec<f64> = (0..TAPS)
        .map(|n| {
            let m = n as f64 - (TAPS - 1) as f64 / 2.0;
            let sinc = if m == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * m).sin() / (std::f64::consts::PI * m)
            };
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (TAPS - 1) as f64).cos();
            sinc * w
        })
        .collect();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| e.to_string())?;
    for i in (0..x.len()).step_by(3) {
        let mut acc = 0.0;
        for (k, hk) in h.iter().enumerate() {
            if let Some(&s) = (i + k).checked_sub(TAPS / 2).and_then(|j| x.get(j)) {
                acc += hk * f64::from(s);
            }
        }
        w.write_sample(acc.round().clamp(-32768.0, 32767.0) as i16)
            .map_err(|e| e.to_string())?;
    }
    w.finalize().map_err(|e| e.to_string())
}

/// Wideband PESQ (MOS-LQO) of `degraded` against `reference`, both 16 kHz,
/// computed by bench/audio/pesq_score.py with `python`.
pub fn pesq(python: &Path, reference: &Path, degraded: &Path) -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio/pesq_score.py");
    let out = Command::new(python)
        .arg(script)
        .args([reference, degraded])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| {
        format!(
            "pesq_score.py said {text:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Reference: median one-way time of a datagram between two loopback
/// sockets in this process, µs (`n` datagrams, 1 ms apart).
pub fn udp_one_way(n: usize) -> Result<f64, String> {
    let e = |e: std::io::Error| e.to_string();
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(e)?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(e)?;
    rx.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(e)?;
    let to = rx.local_addr().map_err(e)?;
    let origin = Instant::now();
    let receiver = std::thread::spawn(move || {
        let mut us = Vec::new();
        let mut buf = [0u8; 16];
        while let Ok(8) = crate::wait::recv(&rx, &mut buf) {
            let sent = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            us.push(origin.elapsed().as_micros() as f64 - sent as f64);
            if us.len() == n {
                break;
            }
        }
        us
    });
    for _ in 0..n {
        let now = origin.elapsed().as_micros() as u64;
        tx.send_to(&now.to_le_bytes(), to).map_err(e)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut us = receiver.join().map_err(|_| "receiver panicked")?;
    if us.is_empty() {
        return Err("no datagram came back".into());
    }
    us.sort_by(f64::total_cmp);
    Ok(us[us.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_where_they_are() {
        let m = markers(3.0);
        let on = onsets(&m);
        assert_eq!(on.len(), 5, "{on:?}");
        // Played back 30 ms later, every marker measures 30 ms.
        let t0 = Instant::now();
        let pushed: Vec<Instant> = (0..m.len() / FRAME + 1)
            .map(|k| t0 + Duration::from_millis(20 * k as u64))
            .collect();
        let pulled: Vec<Instant> = pushed
            .iter()
            .map(|t| *t + Duration::from_millis(30))
            .collect();
        let l = latencies(&m, &pushed, &m, &pulled);
        assert_eq!(l.len(), 5);
        assert!(l.iter().all(|x| (x - 30.0).abs() < 0.01), "{l:?}");
        // A shifted copy aligns back.
        let shifted = [vec![0i16; 4800], m.clone()].concat();
        assert_eq!(align(&m, &shifted), m);
    }
}
