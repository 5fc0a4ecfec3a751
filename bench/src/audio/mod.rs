//! The audio workload: real calls between two libchinwag clients on
//! loopback (babel: peer-to-peer TCP through a jittery proxy; accounts: UDP
//! through a lossy, jittery forwarder), driven in real time through the
//! PCM API as an audio callback would: every 20 ms each side pushes 20 ms
//! and pulls 20 ms. It measures mouth-to-ear latency, quality (PESQ, when
//! a Python with the `pesq` package is given), jitter-buffer recovery, CPU
//! and a long call, each beside a reference measured in the same run.

mod net;
mod signal;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chinwag::audio::codec::{Decoder, Encoder, Profile, MAX_PACKET, MAX_PACKET_SAMPLES};
use chinwag::{AccountsClient, BabelClient, Call, CallStats, Event, VoicePorts};

use crate::report::{Goal, Report, Unit};
use crate::server::{self, Target};
use net::{Forwarder, Impairment, Loss, Proxy};

const FRAME: usize = 960;
const TICK: Duration = Duration::from_millis(20);
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

pub struct AudioOpts {
    pub quick: bool,
    /// Seconds of each latency and CPU run.
    pub seconds: f64,
    /// Seconds of the long call.
    pub long_seconds: f64,
    /// A Python with the `pesq` package (bench/audio/pesq.sh makes one).
    pub pesq: Option<PathBuf>,
    pub speech: PathBuf,
    pub run_id: String,
    /// Which parts to run (latency, pesq, jitter, cpu, long); `None`: all.
    pub parts: Option<Vec<String>>,
}

impl AudioOpts {
    fn runs(&self, part: &str) -> bool {
        self.parts
            .as_ref()
            .is_none_or(|p| p.iter().any(|x| x == part))
    }
}

/// Which transport a call runs over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Babel,
    Accounts,
}

/// Two ends of one call, the clients that keep them, and the path between.
struct Pair {
    a: Call,
    b: Call,
    _clients: Box<dyn std::any::Any + Send + Sync>,
    forwarder: Option<Forwarder>,
    _proxy: Option<Proxy>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.a.hangup();
        self.b.hangup();
    }
}

/// What one side says, and what it keeps of what it hears.
#[derive(Clone, Copy)]
struct Script<'a> {
    /// Mono 48 kHz; silence after it unless it loops.
    says: &'a [i16],
    looping: bool,
    /// Keep what is pulled and when (not for a long call: the bench's own
    /// memory would grow).
    record: bool,
    /// Sample the statistics every tick.
    trace: bool,
}

impl<'a> Script<'a> {
    fn once(says: &'a [i16]) -> Self {
        Script {
            says,
            looping: false,
            record: true,
            trace: false,
        }
    }
    fn looping(says: &'a [i16]) -> Self {
        Script {
            says,
            looping: true,
            record: false,
            trace: false,
        }
    }
    /// Fill `out` (`ch` interleaved channels, each the same) with what is
    /// said from sample `start` on, a run of the script at a time: the
    /// driver's own work stays small beside the call's it measures.
    fn fill(&self, start: usize, out: &mut [i16], ch: usize) {
        let frames = out.len() / ch;
        let n = self.says.len();
        let mut i = 0;
        while i < frames {
            let pos = if self.looping && n > 0 {
                (start + i) % n
            } else {
                start + i
            };
            let run = n.saturating_sub(pos).min(frames - i);
            let dst = &mut out[i * ch..];
            if run == 0 {
                // Past the end (or nothing to say): silence for the rest.
                dst[..(frames - i) * ch].fill(0);
                return;
            }
            let src = &self.says[pos..pos + run];
            if ch == 1 {
                dst[..run].copy_from_slice(src);
            } else {
                for (f, &v) in dst[..run * ch].chunks_exact_mut(ch).zip(src) {
                    f.fill(v);
                }
            }
            i += run;
        }
    }
}

/// What one side of a conversation recorded.
struct Side {
    /// First channel of what was pulled.
    heard: Vec<i16>,
    pushed_at: Vec<Instant>,
    pulled_at: Vec<Instant>,
    /// (time, concealed so far, playout delay ms), sampled every tick when asked.
    trace: Vec<(Instant, u64, f64)>,
    /// The statistics at the last tick, while the call still ran.
    last: Option<CallStats>,
}

fn names(run: &str, n: u32) -> (String, String) {
    (format!("aa{run}{n}"), format!("ab{run}{n}"))
}

fn take_call<P: chinwag::core::Protocol>(
    c: &chinwag::Connection<P>,
    accept: impl Fn(&str),
) -> Result<Call, String> {
    loop {
        match c.next_event(WAIT).map_err(|e| e.to_string())? {
            Event::CallIncoming { peer, .. } => accept(&peer),
            Event::CallEstablished { call, .. } => return call.ok_or("no call".into()),
            Event::CallFailed { text, .. } => return Err(format!("call failed: {text}")),
            _ => {}
        }
    }
}

/// Set up a call over `t`, impaired by `imp` (babel: only its jitter).
fn pair(
    target: &Target,
    t: Transport,
    imp: Option<Impairment>,
    run: &str,
    n: u32,
) -> Result<Pair, String> {
    pair_seeded(target, t, imp, run, n, u64::from(n))
}

/// As `pair`, with the path's random generators seeded by `seed` (the same
/// seed gives the same losses to the same sequence of datagrams).
fn pair_seeded(
    target: &Target,
    t: Transport,
    imp: Option<Impairment>,
    run: &str,
    n: u32,
    seed: u64,
) -> Result<Pair, String> {
    let e = |e: chinwag::Error| e.to_string();
    let (na, nb) = names(run, n);
    match t {
        Transport::Babel => {
            let addr = target.babel.ok_or("the server has no babel listener")?;
            let a = BabelClient::connect("127.0.0.1", addr.port()).map_err(e)?;
            let b = BabelClient::connect("127.0.0.1", addr.port()).map_err(e)?;
            a.login(&na, WAIT).map_err(e)?;
            b.login(&nb, WAIT).map_err(e)?;
            let proxy = match imp {
                Some(imp) => {
                    let p = Proxy::start(seed, imp.jitter)?;
                    a.set_voice_ports(VoicePorts {
                        local: 0,
                        advertised: p.port,
                    });
                    Some(p)
                }
                None => None,
            };
            let port = a.place_call(&nb, "", 0).map_err(e)?;
            if let Some(p) = &proxy {
                *p.target.lock().unwrap() = Some(port);
            }
            let cb = take_call(&b, |peer| {
                let _ = b.accept_call(peer);
            })?;
            let ca = take_call(&a, |_| {})?;
            Ok(Pair {
                a: ca,
                b: cb,
                _clients: Box::new((a, b)),
                forwarder: None,
                _proxy: proxy,
            })
        }
        Transport::Accounts => {
            let addr = target
                .accounts
                .ok_or("the server has no accounts listener")?;
            let port = addr.port();
            let pw = "bench audio password";
            let login = |name: &str| -> Result<AccountsClient, String> {
                let c = AccountsClient::connect("127.0.0.1", port).map_err(e)?;
                let email = format!("{name}@bench.invalid");
                c.register(&email, name, pw, WAIT).map_err(e)?;
                c.login_password(&email, pw, WAIT).map_err(e)?;
                Ok(c)
            };
            let (a, b) = (login(&na)?, login(&nb)?);
            a.request_friend(&nb, WAIT).map_err(e)?;
            b.accept_friend(&na, WAIT).map_err(e)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while a.list_friends(WAIT).map_err(e)? != [nb.clone()] {
                if Instant::now() > deadline {
                    return Err("the accounts did not become friends".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let fwd = match imp {
                Some(imp) => {
                    let f = Forwarder::start(seed, imp)?;
                    a.set_voice_ports(VoicePorts {
                        local: 0,
                        advertised: f.caller_port,
                    });
                    b.set_voice_ports(VoicePorts {
                        local: 0,
                        advertised: f.callee_port,
                    });
                    Some(f)
                }
                None => None,
            };
            a.place_voice_call(&nb, "").map_err(e)?;
            let cb = take_call(&b, |peer| {
                let _ = b.answer_voice_call(peer, "");
            })?;
            let ca = take_call(&a, |_| {})?;
            Ok(Pair {
                a: ca,
                b: cb,
                _clients: Box::new((a, b)),
                forwarder: fwd,
                _proxy: None,
            })
        }
    }
}

/// One side in real time from `start` (+`phase`): each tick push the next
/// 20 ms of the script and pull 20 ms, for `ticks`. Without a call (`None`:
/// the pacing's own cost, `ch` channels), the same ticks fill the same
/// buffers and push and pull nothing.
fn talk(
    call: Option<&Call>,
    ch: usize,
    sc: Script,
    start: Instant,
    phase: Duration,
    ticks: usize,
) -> Side {
    let keep = if sc.record { ticks } else { 0 };
    let mut side = Side {
        heard: Vec::with_capacity(keep * FRAME),
        pushed_at: Vec::with_capacity(keep),
        pulled_at: Vec::with_capacity(keep),
        trace: Vec::new(),
        last: None,
    };
    let mut chunk = vec![0i16; FRAME * ch];
    let mut out = vec![0i16; FRAME * ch];
    for k in 0..ticks {
        let at = start + phase + TICK * k as u32;
        if let Some(w) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        sc.fill(k * FRAME, &mut chunk, ch);
        let pushed = Instant::now();
        if call.is_some_and(|c| c.send_pcm(&chunk).is_err()) {
            break;
        }
        let pulled = Instant::now();
        if call.is_some_and(|c| c.recv_pcm(&mut out).is_err()) {
            break;
        }
        if sc.record {
            side.pushed_at.push(pushed);
            side.pulled_at.push(pulled);
            side.heard.extend(out.iter().step_by(ch));
        }
        if let (true, Some(c)) = (sc.trace, call) {
            let s = c.stats();
            side.trace
                .push((Instant::now(), s.frames_concealed, s.playout_delay_ms));
        }
        if k + 1 == ticks {
            side.last = call.map(Call::stats);
        }
    }
    side
}

/// How long after `converse_on` is called the caller's first tick is.
const LEAD: Duration = Duration::from_millis(20);
/// The callee's ticks after the caller's (the phases of two sound cards
/// are arbitrary).
const CALLEE_PHASE: Duration = Duration::from_millis(7);

/// Both sides at once for `ticks`; the callee's ticks are offset by
/// [`CALLEE_PHASE`].
fn converse(p: &Pair, a: Script, b: Script, ticks: usize) -> (Side, Side) {
    converse_on(Some((&p.a, &p.b)), p.a.channels(), a, b, ticks)
}

/// `converse` on the calls `ab`, or with no call behind the two sides
/// (`None`: the driver's pacing alone, `ch` channels).
fn converse_on(
    ab: Option<(&Call, &Call)>,
    ch: usize,
    a: Script,
    b: Script,
    ticks: usize,
) -> (Side, Side) {
    let start = Instant::now() + LEAD;
    let (ca, cb) = (ab.map(|x| x.0), ab.map(|x| x.1));
    std::thread::scope(|s| {
        let ta = s.spawn(|| talk(ca, ch, a, start, Duration::ZERO, ticks));
        let tb = s.spawn(|| talk(cb, ch, b, start, CALLEE_PHASE, ticks));
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

/// What [`opus_alone`] measured.
struct OpusAlone {
    /// CPU of both directions, in % of a core.
    pct: f64,
    /// One encoder's CPU per frame, in µs.
    encode_us: f64,
}

/// CPU of one call's Opus alone: the script's `ticks` frames encoded and
/// decoded once each way (two encoders, two decoders of `profile`, as in a
/// call; the encoders' FEC paused where `fec_paused`, as on a clean path),
/// back to back in this thread, timed by the thread's CPU clock around the
/// codec calls only. Warm caches: a lower bound of what the same work costs
/// spread over 20 ms ticks.
fn opus_alone(
    profile: Profile,
    sc: Script,
    ticks: usize,
    fec_paused: bool,
) -> Result<OpusAlone, String> {
    let e = |e: chinwag::audio::AudioError| format!("{e:?}");
    let ch = profile.channels();
    let mut enc = [
        Encoder::new(profile).map_err(e)?,
        Encoder::new(profile).map_err(e)?,
    ];
    if fec_paused {
        for en in &mut enc {
            en.set_expected_loss(0).map_err(e)?;
        }
    }
    let mut dec = [
        Decoder::new(profile).map_err(e)?,
        Decoder::new(profile).map_err(e)?,
    ];
    let mut chunk = vec![0i16; FRAME * ch];
    let mut packet = vec![0u8; MAX_PACKET];
    let mut out = vec![0i16; MAX_PACKET_SAMPLES * ch];
    let (mut spent, mut encoding) = (Duration::ZERO, Duration::ZERO);
    for k in 0..ticks {
        sc.fill(k * FRAME, &mut chunk, ch);
        for side in 0..2 {
            let t0 = server::thread_cpu();
            let n = enc[side].encode(&chunk, &mut packet).map_err(e)?;
            let t1 = server::thread_cpu();
            dec[1 - side].decode(&packet[..n], &mut out).map_err(e)?;
            spent += server::thread_cpu() - t0;
            encoding += t1 - t0;
        }
    }
    Ok(OpusAlone {
        pct: spent.as_secs_f64() / (TICK * ticks as u32).as_secs_f64() * 100.0,
        encode_us: encoding.as_secs_f64() * 1e6 / (2 * ticks) as f64,
    })
}

fn ticks_for(seconds: f64) -> usize {
    (seconds * 50.0).ceil() as usize
}

pub fn audio(target: &Target, o: &AudioOpts) -> Result<Report, String> {
    let mut r = Report::new("audio");
    r.param("seconds", o.seconds);
    r.param("long_seconds", o.long_seconds);
    let speech = signal::read_speech(&o.speech)?;
    let mut n = 0u32;
    let mut next = || {
        n += 1;
        n
    };

    // Reference: one-way latency of a datagram between two loopback sockets.
    let udp = signal::udp_one_way(if o.quick { 200 } else { 2000 })?;
    r.fig(
        "udp_one_way_p50_us",
        "reference: loopback UDP one way p50",
        udp,
        Unit::Us,
        None,
    );

    if o.runs("latency") {
        // Mouth-to-ear latency: markers pushed, found in what is pulled.
        let marks = signal::markers(o.seconds);
        let ticks = ticks_for(o.seconds) + 25;
        let twenty = Impairment {
            loss: Loss::None,
            jitter: Duration::from_millis(20),
        };
        for (t, imp, key, label, goal) in [
            (
                Transport::Accounts,
                Some(twenty),
                "latency_udp_j20_p50_ms",
                "mouth-to-ear UDP, 20 ms jitter p50",
                true,
            ),
            (
                Transport::Accounts,
                None,
                "latency_udp_direct_p50_ms",
                "reference: UDP direct p50",
                false,
            ),
            (
                Transport::Babel,
                Some(twenty),
                "latency_tcp_j20_p50_ms",
                "mouth-to-ear TCP, 20 ms jitter p50",
                true,
            ),
            (
                Transport::Babel,
                None,
                "latency_tcp_direct_p50_ms",
                "reference: TCP direct p50",
                false,
            ),
        ] {
            let p = pair(target, t, imp, &o.run_id, next())?;
            let (sa, sb) = converse(&p, Script::once(&marks), Script::once(&marks), ticks);
            let mut ms = signal::latencies(&marks, &sa.pushed_at, &sb.heard, &sb.pulled_at);
            ms.extend(signal::latencies(
                &marks,
                &sb.pushed_at,
                &sa.heard,
                &sa.pulled_at,
            ));
            if ms.len() < 4 {
                r.problems
                    .push(format!("{label}: only {} markers found", ms.len()));
                continue;
            }
            if let Some(st) = sb.last {
                r.notes.push(format!(
                "{key}: callee's buffer at the end: delay {:.0} ms, target {:.0} ms, jitter {:.1} ms; \
                 concealed {}, late {}, dropped {}, stretched {:.0} ms, compressed {:.0} ms",
                st.playout_delay_ms,
                st.target_delay_ms,
                st.jitter_ms,
                st.frames_concealed,
                st.packets_late,
                st.frames_dropped,
                st.samples_stretched as f64 / 48.0,
                st.samples_compressed as f64 / 48.0
            ));
            }
            ms.sort_by(f64::total_cmp);
            let pct = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
            let goal = goal.then_some(Goal::AtMost(50.0));
            r.fig(key, label, pct(0.5), Unit::Ms, goal);
            if goal.is_some() {
                let k95 = if t == Transport::Accounts {
                    "latency_udp_j20_p95_ms"
                } else {
                    "latency_tcp_j20_p95_ms"
                };
                r.fig(k95, "  p95", pct(0.95), Unit::Ms, None);
            }
        }
    }
    if o.runs("pesq") {
        // Quality under loss (accounts, UDP): the speech one way, PESQ on 16 kHz.
        let conditions = [
            (
                "pesq_clean",
                "PESQ, no loss (codec only)",
                Loss::None,
                true,
                None,
            ),
            (
                "pesq_random10_fec_plc",
                "PESQ, 10 % random loss, FEC+PLC",
                Loss::Random(0.10),
                true,
                Some(Goal::AtLeast(3.0)),
            ),
            (
                "pesq_random10_none",
                "PESQ, 10 % random loss, neither",
                Loss::Random(0.10),
                false,
                None,
            ),
            (
                "pesq_burst5_fec_plc",
                "PESQ, 5 % loss in bursts of 3, FEC+PLC",
                Loss::Bursts { rate: 0.05, len: 3 },
                true,
                None,
            ),
            (
                "pesq_burst5_none",
                "PESQ, 5 % loss in bursts of 3, neither",
                Loss::Bursts { rate: 0.05, len: 3 },
                false,
                None,
            ),
        ];
        let padded = signal::pad(&speech, 0.5, 1.0);
        match &o.pesq {
        None => r.notes.push(
            "PESQ skipped: pass --pesq PYTHON (bench/audio/pesq.sh installs the `pesq` package in a venv)".into(),
        ),
        Some(py) => {
            let dir = std::env::temp_dir().join(format!("chinwag-pesq-{}", o.run_id));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let reference = dir.join("ref.wav");
            signal::write_16k(&reference, &speech)?;
            for (key, label, loss, recovery, goal) in conditions {
                let imp = Impairment { loss, jitter: Duration::ZERO };
                // One seed per loss model: with and without recovery meet
                // the same losses.
                let seed = match loss {
                    Loss::None => 1,
                    Loss::Random(_) => 2,
                    Loss::Bursts { .. } => 3,
                };
                let p = pair_seeded(target, Transport::Accounts, Some(imp), &o.run_id, next(), seed)?;
                p.a.set_loss_recovery(recovery).map_err(|e| e.to_string())?;
                p.b.set_loss_recovery(recovery).map_err(|e| e.to_string())?;
                let (_, sb) = converse(&p, Script::once(&padded), Script::once(&[]), padded.len() / FRAME + 10);
                let degraded = dir.join(format!("{key}.wav"));
                signal::write_16k(&degraded, &signal::align(&speech, &sb.heard))?;
                if let Some(f) = &p.forwarder {
                    let (d, k) = (
                        f.dropped.load(std::sync::atomic::Ordering::Relaxed) as f64,
                        f.forwarded.load(std::sync::atomic::Ordering::Relaxed) as f64,
                    );
                    let st = sb.last.unwrap_or_default();
                    r.notes.push(format!(
                        "{key}: the forwarder dropped {:.1} %; received {}, lost {}, concealed {} ({} from FEC), delay {:.0} ms",
                        100.0 * d / (d + k).max(1.0),
                        st.packets_received,
                        st.packets_lost,
                        st.frames_concealed,
                        st.frames_concealed_fec,
                        st.playout_delay_ms
                    ));
                }
                match signal::pesq(py, &reference, &degraded) {
                    Ok(score) => r.fig(key, label, score, Unit::Score, goal),
                    Err(e) => r.problems.push(format!("{label}: {e}")),
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    }
    if o.runs("jitter") {
        // Jitter-buffer recovery: 0 -> 60 -> 0 ms of jitter on UDP.
        let phase = if o.quick { 2.0 } else { 10.0 };
        let p = pair(
            target,
            Transport::Accounts,
            Some(Impairment::CLEAN),
            &o.run_id,
            next(),
        )?;
        let fwd = p.forwarder.as_ref().expect("forwarder");
        let (sb, t0) = std::thread::scope(|s| {
            let t0 = Instant::now();
            let traced = Script {
                trace: true,
                ..Script::once(&[])
            };
            let (pr, sp) = (&p, &speech[..]);
            let h = s.spawn(move || {
                converse(
                    pr,
                    Script::looping(sp),
                    traced,
                    ticks_for(phase * 3.0 + 1.0),
                )
                .1
            });
            std::thread::sleep(Duration::from_secs_f64(phase));
            fwd.set(Impairment {
                loss: Loss::None,
                jitter: Duration::from_millis(60),
            });
            std::thread::sleep(Duration::from_secs_f64(phase));
            fwd.set(Impairment::CLEAN);
            (h.join().unwrap(), t0)
        });
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let concealed_between = |from: Instant, to: Instant| {
            let c = |t: Instant| sb.trace.iter().rfind(|e| e.0 <= t).map_or(0, |e| e.1);
            c(to) - c(from)
        };
        let up = concealed_between(at(phase), at(2.0 * phase)) as f64;
        let down = concealed_between(at(2.0 * phase), at(3.0 * phase)) as f64;
        let calm = concealed_between(at(1.0), at(phase)) as f64;
        let back = sb
            .trace
            .iter()
            .filter(|e| e.0 >= at(2.0 * phase))
            .find(|e| e.2 < 60.0)
            .map(|e| (e.0 - at(2.0 * phase)).as_secs_f64());
        let peak = sb.trace.iter().map(|e| e.2).fold(0.0, f64::max);
        r.fig(
            "jitter_concealed_calm",
            "concealed frames, steady 0 ms (ref.)",
            calm,
            Unit::Count,
            None,
        );
        r.fig(
            "jitter_concealed_0_to_60",
            "concealed frames, jitter 0 -> 60 ms",
            up,
            Unit::Count,
            Some(Goal::AtMost(2.0)),
        );
        r.fig(
            "jitter_concealed_60_to_0",
            "concealed frames, jitter 60 -> 0 ms",
            down,
            Unit::Count,
            Some(Goal::AtMost(2.0)),
        );
        r.fig(
            "jitter_peak_delay_ms",
            "playout delay at its peak",
            peak,
            Unit::Ms,
            None,
        );
        let st = sb.last.unwrap_or_default();
        r.fig(
            "jitter_stretched_ms",
            "audio stretched to grow the delay",
            st.samples_stretched as f64 / 48.0,
            Unit::Ms,
            None,
        );
        r.fig(
            "jitter_compressed_ms",
            "audio compressed to shrink it",
            st.samples_compressed as f64 / 48.0,
            Unit::Ms,
            None,
        );
        r.fig(
            "jitter_back_under_60ms_s",
            "delay back under 60 ms after",
            back.unwrap_or(f64::INFINITY),
            Unit::Secs,
            Some(Goal::AtMost(10.0)),
        );
        drop(p);
    }
    if o.runs("cpu") {
        // CPU of one call, both directions, per transport (the whole process:
        // both clients; the server is another process and idle meanwhile).
        let cpu_ticks = ticks_for(o.seconds);
        let sc = Script::looping(&speech);
        // This process's CPU per wall time while `f` runs, in % of a core,
        // less the thread that samples the server's memory every 10 ms
        // (about 1 % of a core by itself; not the call), and that thread's.
        let cpu_of = |f: &mut dyn FnMut()| {
            let cpu = || server::self_cpu().saturating_sub(target.sampler_cpu());
            let (c0, w0, s0) = (cpu(), Instant::now(), target.sampler_cpu());
            f();
            let (c1, w1) = (cpu(), Instant::now());
            let wall = (w1 - w0).as_secs_f64();
            let sampler = (target.sampler_cpu() - s0).as_secs_f64() / wall;
            ((c1 - c0).as_secs_f64() / wall * 100.0, sampler * 100.0)
        };
        for (t, profile, keys, labels) in [
            (
                Transport::Accounts,
                Profile::Accounts,
                [
                    "cpu_udp_pct",
                    "cpu_udp_pacing_pct",
                    "cpu_udp_opus_pct",
                    "cpu_udp_less_pacing_pct",
                ],
                [
                    "CPU, one call both ways, UDP",
                    "  of it: driver pacing alone",
                    "  of it: libopus alone (warm)",
                    "  UDP call less the driver pacing",
                ],
            ),
            (
                Transport::Babel,
                Profile::Babel,
                [
                    "cpu_tcp_pct",
                    "cpu_tcp_pacing_pct",
                    "cpu_tcp_opus_pct",
                    "cpu_tcp_less_pacing_pct",
                ],
                [
                    "CPU, one call both ways, TCP",
                    "  of it: driver pacing alone",
                    "  of it: libopus alone (warm)",
                    "  TCP call less the driver pacing",
                ],
            ),
        ] {
            let p = pair(target, t, None, &o.run_id, next())?;
            // The whole call: both clients and the driver's two threads.
            let (call, sampler) = cpu_of(&mut || {
                converse(&p, sc, sc, cpu_ticks);
            });
            // The loss each encoder protected against at the end (accounts:
            // 0 once a clean path has paused FEC).
            let fec_end = [&p.a, &p.b].map(|c| c.stats().expected_loss_pct);
            drop(p);
            // The same driver threads, ticks, fills and sleeps, no call.
            let (pacing, _) = cpu_of(&mut || {
                converse_on(None, profile.channels(), sc, sc, cpu_ticks);
            });
            let opus = opus_alone(profile, sc, cpu_ticks, false)?;
            r.fig(keys[0], labels[0], call, Unit::Pct, Some(Goal::AtMost(3.0)));
            r.fig(keys[1], labels[1], pacing, Unit::Pct, None);
            r.fig(keys[2], labels[2], opus.pct, Unit::Pct, None);
            if profile.fec() {
                // What a clean path's steady state codes: FEC paused.
                let paused = opus_alone(profile, sc, cpu_ticks, true)?;
                r.fig(
                    "cpu_udp_opus_fec_paused_pct",
                    "  of it: libopus, FEC paused (warm)",
                    paused.pct,
                    Unit::Pct,
                    None,
                );
                r.notes.push(format!(
                    "{}: the encoder took {:.0} µs a frame with FEC, {:.0} µs with it paused; \
                     expected loss at the call's end {} % and {} % (FEC pauses after {} \
                     clean reports)",
                    keys[0],
                    opus.encode_us,
                    paused.encode_us,
                    fec_end[0],
                    fec_end[1],
                    chinwag::audio::pipeline::CLEAN_REPORTS_TO_PAUSE
                ));
            }
            r.fig(
                keys[3],
                labels[3],
                call - pacing,
                Unit::Pct,
                Some(Goal::AtMost(3.0)),
            );
            r.notes.push(format!(
                "{}: the bench's server-memory sampler used {sampler:.2} % of a core besides (left out)",
                keys[0]
            ));
        }
    }
    if o.runs("long") {
        // A long call: drift (delay, frames) and memory.
        let p = pair(target, Transport::Accounts, None, &o.run_id, next())?;
        // Warm-up: 10 s, or a quarter of a short call.
        let warm = (o.long_seconds / 4.0).min(10.0);
        let (sa, sb, rss0, s0) = std::thread::scope(|s| {
            let sc = Script::looping(&speech);
            let pr = &p;
            let h = s.spawn(move || converse(pr, sc, sc, ticks_for(o.long_seconds)));
            std::thread::sleep(Duration::from_secs_f64(warm));
            let rss0 = rss_kib();
            let s0 = p.b.stats();
            let (sa, sb) = h.join().unwrap();
            (sa, sb, rss0, s0)
        });
        let (s1a, s1b) = (
            sa.last.unwrap_or_else(|| p.a.stats()),
            sb.last.unwrap_or_else(|| p.b.stats()),
        );
        let rss1 = rss_kib();
        r.fig(
            "long_rss_before_mib",
            "long call: RSS after warm-up",
            rss0 as f64 / 1024.0,
            Unit::MiB,
            None,
        );
        r.fig(
            "long_rss_after_mib",
            "long call: RSS at the end",
            rss1 as f64 / 1024.0,
            Unit::MiB,
            None,
        );
        r.fig(
            "long_delay_start_ms",
            "long call: playout delay at warm-up",
            s0.playout_delay_ms,
            Unit::Ms,
            None,
        );
        r.fig(
            "long_delay_end_ms",
            "long call: playout delay at the end",
            s1b.playout_delay_ms,
            Unit::Ms,
            None,
        );
        r.fig(
            "long_frames_sent",
            "long call: frames sent (each way)",
            s1a.packets_sent as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "long_frames_missing",
            "long call: frames lost + concealed",
            (s1b.packets_lost + s1a.packets_lost + s1b.frames_concealed + s1a.frames_concealed)
                as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "long_frames_dropped",
            "long call: frames dropped (delay shrink)",
            (s1a.frames_dropped + s1b.frames_dropped) as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "long_stretched_ms",
            "long call: audio stretched (both ways)",
            (s1a.samples_stretched + s1b.samples_stretched) as f64 / 48.0,
            Unit::Ms,
            None,
        );
        r.fig(
            "long_compressed_ms",
            "long call: audio compressed (both ways)",
            (s1a.samples_compressed + s1b.samples_compressed) as f64 / 48.0,
            Unit::Ms,
            None,
        );
    }
    // The README's table (`chinwag-bench table`; PESQ rows only when
    // measured).
    for (fig, reference) in [
        ("latency_udp_j20_p50_ms", Some("latency_udp_direct_p50_ms")),
        ("latency_tcp_j20_p50_ms", Some("latency_tcp_direct_p50_ms")),
        ("pesq_random10_fec_plc", Some("pesq_clean")),
        ("pesq_burst5_fec_plc", Some("pesq_burst5_none")),
        ("jitter_concealed_0_to_60", None),
        ("jitter_concealed_60_to_0", None),
        ("jitter_back_under_60ms_s", None),
        ("cpu_udp_pct", Some("cpu_udp_pacing_pct")),
        ("cpu_udp_less_pacing_pct", Some("cpu_udp_opus_pct")),
        ("cpu_tcp_pct", Some("cpu_tcp_pacing_pct")),
        ("cpu_tcp_less_pacing_pct", Some("cpu_tcp_opus_pct")),
        ("long_frames_missing", Some("long_frames_sent")),
        ("long_rss_after_mib", Some("long_rss_before_mib")),
    ] {
        r.row(fig, reference);
    }
    Ok(r)
}

fn rss_kib() -> u64 {
    server::proc_stats(std::process::id()).map_or(0, |s| s.rss_kib)
}

/// The speech of bench/audio, next to the bench's sources.
pub fn default_speech() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("audio/speech.wav")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_fills_runs_as_sample_by_sample() {
        let says: Vec<i16> = (1..=7).collect();
        for looping in [false, true] {
            let sc = Script {
                looping,
                ..Script::once(&says)
            };
            for ch in [1, 2] {
                for start in [0, 3, 6, 7, 12] {
                    let mut out = vec![-1i16; 9 * ch];
                    sc.fill(start, &mut out, ch);
                    let want: Vec<i16> = (0..9)
                        .flat_map(|i| {
                            let p = start + i;
                            let v = if looping {
                                says[p % 7]
                            } else {
                                says.get(p).copied().unwrap_or(0)
                            };
                            std::iter::repeat_n(v, ch)
                        })
                        .collect();
                    assert_eq!(out, want, "looping {looping} ch {ch} start {start}");
                }
            }
        }
        let mut out = [5i16; 4];
        Script::looping(&[]).fill(3, &mut out, 2);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn the_pacing_alone_keeps_a_calls_ticks_with_no_call() {
        // The CPU reference: the same two threads, the same 20 ms ticks and
        // fills, nothing pushed or pulled (what is "heard" is silence).
        let says = vec![7i16; 3 * FRAME];
        let ticks = 5;
        let called = Instant::now();
        let (a, b) = converse_on(None, 2, Script::once(&says), Script::once(&says), ticks);
        for (side, phase) in [(&a, Duration::ZERO), (&b, CALLEE_PHASE)] {
            assert_eq!(side.pushed_at.len(), ticks);
            assert_eq!(side.heard, vec![0; ticks * FRAME]);
            assert!(side.last.is_none());
            // Paced, not run flat out: no push before its tick. A thread
            // the machine holds up pushes late, never early, so this holds
            // under any load (the span between the first push and the
            // last does not: a first push held up 6 ms left 74 ms).
            for (k, &pushed) in side.pushed_at.iter().enumerate() {
                let tick = called + LEAD + phase + TICK * k as u32;
                assert!(pushed >= tick, "push {k} {:?} early", tick - pushed);
            }
        }
    }

    #[test]
    fn opus_alone_times_the_codec_both_ways() {
        let speech = signal::read_speech(&default_speech()).unwrap();
        for profile in [Profile::Accounts, Profile::Babel] {
            for paused in [false, true] {
                let o = opus_alone(profile, Script::looping(&speech), 50, paused).unwrap();
                // A second of one call's Opus takes some of a core, not all;
                // a frame's encoding some of its 20 ms.
                assert!(o.pct > 0.0 && o.pct < 100.0, "{profile:?}: {}", o.pct);
                assert!(o.encode_us > 0.0 && o.encode_us < 20_000.0);
            }
        }
    }
}
