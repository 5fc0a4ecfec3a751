//! The media relay workload: calls from babel users to accounts users,
//! carried by chinwagd's media relay (seed 001 TCP VoiceData on one side,
//! accounts UDP voice packets on the other, re-framed by the server), at
//! 10, 100 and 1,000 concurrent calls. Each side of each call sends one
//! 20 ms packet every 20 ms, as a call does; every packet carries the time
//! it was sent, so the receiver knows its one-way latency. Beside it, in the
//! same run and with the same pacing, packet size and threads: direct
//! loopback UDP between pairs of sockets, the physical reference. The
//! relay's figures: voice packets per second it carried, what it lost, and
//! the latency it adds (p50 and p99 over the direct path's).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::Frame as Acc;
use chinwag_proto::babel::{self, Frame as Babel};
use chinwag_proto::voice::VoicePacket;
use chinwag_proto::Decoder;
use mio::{Events, Interest, Poll, Token};

use crate::hist::Hist;
use crate::report::{Report, Unit};
use crate::server::Spec;

/// One packet per 20 ms per side: a call's pace.
const FRAME: Duration = Duration::from_millis(20);
/// An Opus TOC byte: CELT fullband 20 ms, stereo, one frame (what babel's
/// profile sends); the relay reads no further.
const TOC: u8 = 31 << 3 | 0x04;
const WARMUP: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(20);
/// Logins in flight at once: the server checks 5 per address at a time.
const LOGIN_THREADS: usize = 4;

pub struct MediaOpts {
    pub seconds: f64,
    /// Bytes of each Opus packet (about 80 at babel's default bitrate).
    pub payload: usize,
}

/// What the receiver counted in the measured window.
#[derive(Default)]
struct Tally {
    got: u64,
    lat: Hist,
}

/// What a measurement window saw.
struct Figures {
    elapsed: f64,
    sent: u64,
    got: u64,
    lat: Hist,
}

/// The sending half of one call (or direct pair): two ends, each sending to
/// the other.
enum Pair {
    /// babel's voice connection (to the relay) and accounts' UDP socket.
    Relayed {
        voice: Arc<TcpStream>,
        pending: Vec<u8>,
        udp: Arc<UdpSocket>,
        relay: SocketAddr,
        seq: u16,
    },
    Direct {
        a: Arc<UdpSocket>,
        b: Arc<UdpSocket>,
        seq: u16,
    },
}

/// A blocking client connection speaking one framed dialect.
struct Conn<T> {
    s: TcpStream,
    dec: Decoder<T>,
}

impl<T: chinwag_proto::Decode + std::fmt::Debug> Conn<T> {
    fn open(at: SocketAddr) -> Result<Self, String> {
        let s = TcpStream::connect(at).map_err(|e| format!("connect {at}: {e}"))?;
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        Ok(Conn {
            s,
            dec: Decoder::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.s.write_all(bytes).map_err(|e| e.to_string())
    }

    fn recv(&mut self) -> Result<T, String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.dec.next_message().map_err(|e| e.to_string())? {
                return Ok(m);
            }
            match crate::wait::read(&self.s, &mut buf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Register and log in `name` on the accounts dialect.
fn accounts_user(at: SocketAddr, name: &str) -> Result<Conn<Acc>, String> {
    let hello = |c: &mut Conn<Acc>| -> Result<(), String> {
        c.send(&Acc::Hello.to_bytes())?;
        match c.recv()? {
            Acc::HelloAck => Ok(()),
            other => Err(format!("hello: {other:?}")),
        }
    };
    let (email, pw) = (format!("{name}@bench.invalid"), "bench password");
    let mut c = Conn::open(at)?;
    hello(&mut c)?;
    c.send(
        &Acc::Register {
            email: email.clone(),
            pseudo: name.into(),
            password: pw.into(),
        }
        .to_bytes(),
    )?;
    match c.recv()? {
        Acc::Registered => {}
        other => return Err(format!("register {name}: {other:?}")),
    }
    c.send(
        &Acc::Login {
            email,
            password: pw.into(),
        }
        .to_bytes(),
    )?;
    match c.recv()? {
        Acc::LoginOk { .. } => Ok(c),
        other => Err(format!("login {name}: {other:?}")),
    }
}

fn babel_user(at: SocketAddr, name: &str) -> Result<Conn<Babel>, String> {
    let mut c = Conn::open(at)?;
    if c.recv()? != Babel::HelloConnect {
        return Err("no HelloConnect".into());
    }
    c.send(&Babel::Login { name: name.into() }.to_bytes())?;
    match c.recv()? {
        Babel::LoginSuccess => Ok(c),
        other => Err(format!("babel login {name}: {other:?}")),
    }
}

/// The babel caller `b` (named `caller`) calls the accounts callee `a`
/// (named `callee`): ring, answer from a fresh UDP socket, take the relay's
/// connection as the accepting side (greeting it first).
fn call(
    b: &mut Conn<Babel>,
    caller: &str,
    a: &mut Conn<Acc>,
    callee: &str,
) -> Result<Pair, String> {
    let e = |e: io::Error| e.to_string();
    let l = TcpListener::bind("127.0.0.1:0").map_err(e)?;
    let port = l.local_addr().map_err(e)?.port();
    b.send(
        &Babel::CallRequest {
            contact: callee.into(),
            host: String::new(),
            port,
        }
        .to_bytes(),
    )?;
    let (addr, relay_port) = loop {
        if let Acc::IncomingCall { addr, port, .. } = a.recv()? {
            break (addr, port);
        }
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("relay address {addr:?}"))?;
    let relay = SocketAddr::new(ip, relay_port);
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(e)?;
    a.send(
        &Acc::AnswerCall {
            pseudo: caller.into(),
            addr: String::new(),
            port: udp.local_addr().map_err(e)?.port(),
        }
        .to_bytes(),
    )?;
    l.set_nonblocking(true).map_err(e)?;
    let deadline = Instant::now() + WAIT;
    let voice = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(x) if x.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1))
            }
            Err(x) => return Err(format!("the relay did not dial the caller: {x}")),
        }
    };
    voice.set_nonblocking(false).map_err(e)?;
    voice.set_nodelay(true).map_err(e)?;
    (&voice)
        .write_all(&Babel::ConnectionEstablished.to_bytes())
        .map_err(e)?;
    voice.set_nonblocking(true).map_err(e)?;
    udp.set_nonblocking(true).map_err(e)?;
    Ok(Pair::Relayed {
        voice: Arc::new(voice),
        pending: Vec::new(),
        udp: Arc::new(udp),
        relay,
        seq: 0,
    })
}

/// A direct loopback pair: two UDP sockets sending to each other.
fn direct() -> Result<Pair, String> {
    let e = |e: io::Error| e.to_string();
    let a = UdpSocket::bind("127.0.0.1:0").map_err(e)?;
    let b = UdpSocket::bind("127.0.0.1:0").map_err(e)?;
    a.set_nonblocking(true).map_err(e)?;
    b.set_nonblocking(true).map_err(e)?;
    Ok(Pair::Direct {
        a: Arc::new(a),
        b: Arc::new(b),
        seq: 0,
    })
}

/// The Opus bytes of one packet: TOC, the time it was sent (ns since `t0`),
/// filler.
fn opus(t0: Instant, size: usize) -> Vec<u8> {
    let mut p = vec![0x55u8; size.max(9)];
    p[0] = TOC;
    p[1..9].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_le_bytes());
    p
}

fn sent_at(opus: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(opus.get(1..9)?.try_into().ok()?))
}

/// Window state shared by the sender and the receiver.
const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const DRAINING: u8 = 2;

impl Pair {
    /// One packet each way; returns how many left.
    fn send(&mut self, t0: Instant, size: usize) -> u64 {
        match self {
            Pair::Relayed {
                voice,
                pending,
                udp,
                relay,
                seq,
            } => {
                let mut n = 0;
                let m = VoicePacket::Media {
                    seq: *seq,
                    timestamp: u32::from(*seq).wrapping_mul(960),
                    opus: &opus(t0, size),
                }
                .to_bytes();
                *seq = seq.wrapping_add(1);
                n += udp.send_to(&m, *relay).is_ok() as u64;
                Babel::VoiceData {
                    data: opus(t0, size),
                }
                .encode(pending);
                // Non-blocking: what does not fit waits for the next tick.
                match (&**voice).write(pending) {
                    Ok(w) => {
                        pending.drain(..w);
                    }
                    Err(x) if x.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => pending.clear(),
                }
                n + 1
            }
            Pair::Direct { a, b, seq } => {
                let mut n = 0;
                for (from, to) in [(&*a, &*b), (&*b, &*a)] {
                    let m = VoicePacket::Media {
                        seq: *seq,
                        timestamp: 0,
                        opus: &opus(t0, size),
                    }
                    .to_bytes();
                    let at = to.local_addr().expect("bound");
                    n += from.send_to(&m, at).is_ok() as u64;
                }
                *seq = seq.wrapping_add(1);
                n
            }
        }
    }
}

/// Every source of packets for the receiver: a second descriptor of each
/// UDP socket or voice connection (the same socket), for mio.
enum Source {
    Udp(mio::net::UdpSocket),
    Voice(mio::net::TcpStream, babel::Decoder),
}

fn sources(pairs: &[Pair]) -> io::Result<Vec<Source>> {
    let udp = |u: &UdpSocket| -> io::Result<Source> {
        Ok(Source::Udp(mio::net::UdpSocket::from_std(u.try_clone()?)))
    };
    let mut v = Vec::new();
    for p in pairs {
        match p {
            Pair::Relayed { voice, udp: u, .. } => {
                v.push(udp(u)?);
                let t = mio::net::TcpStream::from_std(voice.try_clone()?);
                v.push(Source::Voice(t, babel::Decoder::new()));
            }
            Pair::Direct { a, b, .. } => {
                v.push(udp(a)?);
                v.push(udp(b)?);
            }
        }
    }
    Ok(v)
}

/// Send from every pair every 20 ms and time every packet received, for a
/// warm-up, then `seconds`, then a short drain.
fn measure(pairs: &mut [Pair], size: usize, seconds: f64) -> Result<Figures, String> {
    let t0 = Instant::now();
    let phase = Arc::new(AtomicU8::new(WARMING));
    let done = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut srcs = sources(pairs).map_err(|e| e.to_string())?;
    let poll = Poll::new().map_err(|e| e.to_string())?;
    for (i, s) in srcs.iter_mut().enumerate() {
        let r = poll.registry();
        let done = match s {
            Source::Udp(u) => r.register(u, Token(i), Interest::READABLE),
            Source::Voice(v, _) => r.register(v, Token(i), Interest::READABLE),
        };
        done.map_err(|e| e.to_string())?;
    }
    let mut poll = poll;
    let receiver = {
        let (phase, done, tally) = (phase.clone(), done.clone(), tally.clone());
        thread::spawn(move || {
            let mut events = Events::with_capacity(1024);
            let mut buf = vec![0u8; 4096];
            let mut local = Tally::default();
            let record = |opus: &[u8], local: &mut Tally| {
                if phase.load(Ordering::Acquire) != MEASURING {
                    return;
                }
                if let Some(at) = sent_at(opus) {
                    let now = t0.elapsed().as_nanos() as u64;
                    local.got += 1;
                    local.lat.record(now.saturating_sub(at));
                }
            };
            while !done.load(Ordering::Acquire) {
                if poll
                    .poll(&mut events, Some(Duration::from_millis(50)))
                    .is_err()
                {
                    continue;
                }
                for ev in events.iter() {
                    match &mut srcs[ev.token().0] {
                        Source::Udp(u) => {
                            while let Ok(n) = u.recv(&mut buf) {
                                if let Ok(VoicePacket::Media { opus, .. }) =
                                    VoicePacket::decode(&buf[..n])
                                {
                                    record(opus, &mut local);
                                }
                            }
                        }
                        Source::Voice(v, dec) => {
                            while let Ok(n) = v.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                dec.push(&buf[..n]);
                            }
                            while let Ok(Some(f)) = dec.next_message() {
                                if let Babel::VoiceData { data } = f {
                                    record(&data, &mut local);
                                }
                            }
                        }
                    }
                }
            }
            let mut t = tally.lock().expect("not poisoned");
            t.got += local.got;
            t.lat.merge(&local.lat);
        })
    };
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let measure_to = measure_from + Duration::from_secs_f64(seconds);
    let mut next = start;
    let mut sent = 0;
    let mut window: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= measure_to {
            break;
        }
        if now >= measure_from && window.is_none() {
            phase.store(MEASURING, Ordering::Release);
            window = Some(now);
        }
        let n: u64 = pairs.iter_mut().map(|p| p.send(t0, size)).sum();
        if window.is_some() {
            sent += n;
        }
        next += FRAME;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
    }
    let elapsed = window.map_or(0.0, |w| w.elapsed().as_secs_f64());
    // Packets sent in the window may still be on their way.
    thread::sleep(Duration::from_millis(200));
    phase.store(DRAINING, Ordering::Release);
    done.store(true, Ordering::Release);
    receiver
        .join()
        .map_err(|_| "receiver panicked".to_string())?;
    let t = tally.lock().expect("not poisoned");
    Ok(Figures {
        elapsed,
        sent,
        got: t.got,
        lat: t.lat.clone(),
    })
}

/// `calls` concurrent calls through chinwagd (a fresh one, whose relay
/// carries calls between dialects by default and takes 1,000 at once), then
/// as many direct pairs.
pub fn run(spec: &Spec, calls: usize, o: &MediaOpts, run_id: &str) -> Result<Report, String> {
    let most = calls;
    let mut target = spec.start()?;
    let (Some(babel_at), Some(accounts_at)) = (target.babel, target.accounts) else {
        return Err("media needs the babel and accounts listeners (--server)".into());
    };
    // Users: accounts callees (a password hash each, to register and to log
    // in: the slow part) and babel callers.
    let names: Vec<(String, String)> = (0..most)
        .map(|i| (format!("mb{run_id}{i}"), format!("ma{run_id}{i}")))
        .collect();
    let accounts: Arc<Mutex<HashMap<usize, Conn<Acc>>>> = Arc::default();
    let setup_started = Instant::now();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    thread::scope(|s| {
        for t in 0..LOGIN_THREADS {
            let (accounts, errors, names) = (accounts.clone(), errors.clone(), &names);
            let at = accounts_at;
            s.spawn(move || {
                for i in (t..names.len()).step_by(LOGIN_THREADS) {
                    match accounts_user(at, &names[i].1) {
                        Ok(c) => {
                            accounts.lock().expect("not poisoned").insert(i, c);
                        }
                        Err(e) => errors.lock().expect("not poisoned").push(e),
                    }
                }
            });
        }
    });
    if let Some(e) = errors.lock().expect("not poisoned").first() {
        return Err(format!("accounts set-up: {e}"));
    }
    let mut accounts = std::mem::take(&mut *accounts.lock().expect("not poisoned"));
    let mut babels = Vec::new();
    for (b, _) in &names {
        babels.push(babel_user(babel_at, b)?);
    }
    let setup = setup_started.elapsed();
    let mut pairs: Vec<Pair> = Vec::new();
    {
        let set_up = Instant::now();
        while pairs.len() < calls {
            let i = pairs.len();
            let a = accounts.get_mut(&i).expect("logged in");
            let p = call(&mut babels[i], &names[i].0, a, &names[i].1)?;
            pairs.push(p);
        }
        let calls_set_up = set_up.elapsed();
        let relayed = measure(&mut pairs, o.payload, o.seconds)?;
        let mut directs = (0..calls)
            .map(|_| direct())
            .collect::<Result<Vec<_>, _>>()?;
        let physical = measure(&mut directs, o.payload, o.seconds)?;
        let mut r = Report::new("media");
        r.param("calls", calls);
        r.param("seconds", o.seconds);
        r.param("payload", o.payload);
        r.param("pace_ms", FRAME.as_millis());
        let us = |ns: u64| ns as f64 / 1e3;
        let pps = |f: &Figures| f.got as f64 / f.elapsed.max(1e-9);
        let loss =
            |f: &Figures| (f.sent.saturating_sub(f.got)) as f64 / (f.sent.max(1)) as f64 * 100.0;
        let offered = relayed.sent as f64 / relayed.elapsed.max(1e-9);
        r.fig(
            "offered_pps",
            "offered packets/s (both ways)",
            offered,
            Unit::PerSec,
            None,
        );
        r.fig(
            "relayed_pps",
            "relayed voice packets/s",
            pps(&relayed),
            Unit::PerSec,
            None,
        );
        r.fig(
            "relayed_loss_pct",
            "relayed: not arrived",
            loss(&relayed),
            Unit::Pct,
            None,
        );
        r.fig(
            "direct_pps",
            "direct UDP packets/s",
            pps(&physical),
            Unit::PerSec,
            None,
        );
        let (rp50, rp99) = (relayed.lat.quantile(0.5), relayed.lat.quantile(0.99));
        let (dp50, dp99) = (physical.lat.quantile(0.5), physical.lat.quantile(0.99));
        r.fig(
            "relayed_p50_us",
            "relayed one-way p50",
            us(rp50),
            Unit::Us,
            None,
        );
        r.fig(
            "relayed_p99_us",
            "relayed one-way p99",
            us(rp99),
            Unit::Us,
            None,
        );
        r.fig(
            "direct_p50_us",
            "direct UDP one-way p50",
            us(dp50),
            Unit::Us,
            None,
        );
        r.fig(
            "direct_p99_us",
            "direct UDP one-way p99",
            us(dp99),
            Unit::Us,
            None,
        );
        r.fig(
            "added_p50_us",
            "added by the relay, p50",
            // Signed: at low load the direct path's tail can be the longer.
            us(rp50) - us(dp50),
            Unit::Us,
            None,
        );
        r.fig(
            "added_p99_us",
            "added by the relay, p99",
            us(rp99) - us(dp99),
            Unit::Us,
            None,
        );
        // The README's table (`chinwag-bench table`).
        for (fig, reference) in [
            ("relayed_pps", Some("offered_pps")),
            ("relayed_loss_pct", None),
            ("relayed_p50_us", Some("direct_p50_us")),
            ("relayed_p99_us", Some("direct_p99_us")),
            ("added_p50_us", None),
            ("added_p99_us", None),
        ] {
            r.row(fig, reference);
        }
        if offered < 0.95 * (100 * calls) as f64 {
            r.notes.push(format!(
                "the generator offered {offered:.0} packets/s of the {} the calls' pace asks: \
                 the machine's cores are shared by the generator and the server",
                100 * calls
            ));
        }
        r.notes.push(format!(
            "{calls} calls set up in {:.1} s (users: {:.1} s, Argon2id for every accounts login); \
             each call: babel caller (TCP VoiceData) <-> relay <-> accounts callee (UDP), \
             one {}-byte packet per 20 ms each way; sent {} / received {} in the window",
            calls_set_up.as_secs_f64(),
            setup.as_secs_f64(),
            o.payload,
            relayed.sent,
            relayed.got
        ));
        if relayed.got == 0 {
            r.problems.push("no packet came through the relay".into());
        }
        target.stop();
        Ok(r)
    }
}
