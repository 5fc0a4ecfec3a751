//! The message load engine behind `fanout` and `p2p`: worker threads, each
//! polling its share of the logged-in connections with epoll (mio), sending
//! timestamped 64-byte texts under a per-sender window (saturation) or on a
//! schedule (paced), and counting every delivery with its latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{encode_message, encode_message_private, Command};
use mio::{Events, Interest, Poll, Token};

use crate::conn::{make_text, parse_ts, text_str, Conn, READ_BUF};
use crate::hist::Hist;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// MESSAGE: every delivery goes to every client; a sender's window is
    /// freed by the echo of its own message.
    Fanout,
    /// MESSAGE_PRIVATE between partners 2k and 2k+1; a sender's window is
    /// freed when its partner receives.
    P2p,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Send as fast as the windows allow.
    Saturation { window: u32 },
    /// `rate` messages per second in total, spread evenly over the senders.
    Paced { rate: f64 },
}

pub struct Plan {
    pub kind: Kind,
    pub mode: Mode,
    /// Indices (into the connection list) of the clients that send.
    pub senders: Vec<usize>,
    /// Sending stops after this long...
    pub send_for: Duration,
    /// ...or after this many messages per sender.
    pub cap: Option<u64>,
    /// Time allowed after sending stops for the last deliveries.
    pub drain: Duration,
    pub threads: usize,
}

pub struct Outcome {
    pub hist: Hist,
    /// Paced: how late each message left against its schedule (the
    /// latency above is measured from the actual send time).
    pub lag: Hist,
    pub sent: u64,
    pub delivered: u64,
    pub expected: u64,
    /// From the first send to the last delivery.
    pub active: Duration,
    pub dead_conns: u64,
    pub unexpected: u64,
    pub errors: Vec<String>,
}

impl Outcome {
    /// Deliveries made, in % of those owed.
    pub fn delivered_pct(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.delivered as f64 * 100.0 / self.expected as f64
        }
    }

    /// Deliveries per second, from the first send to the last delivery.
    pub fn per_s(&self) -> f64 {
        self.delivered as f64 / self.active.as_secs_f64().max(1e-9)
    }
}

struct Shared {
    base: Instant,
    start: Instant,
    send_until: Instant,
    sent: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries owed but not yet seen, above which saturation senders wait:
    /// a backstop so a lagging reader never lets the server's queues grow.
    guard: u64,
    fan: u64,
    stop: AtomicBool,
    senders_done: AtomicU64,
}

struct SenderState {
    sent: u64,
    inflight: u32,
    cap: u64,
    /// Paced: time of message 0 and the gap between messages.
    first_due: Instant,
    gap: Duration,
    tag: u32,
    done: bool,
}

struct WorkerOut {
    hist: Hist,
    lag: Hist,
    last: Option<Instant>,
    dead: u64,
    unexpected: u64,
    errors: Vec<String>,
}

/// `sample` is called every 100 ms while the load runs (server readings).
pub fn run(plan: &Plan, conns: Vec<Conn>, mut sample: impl FnMut()) -> Outcome {
    let n = conns.len();
    let threads = plan.threads.clamp(1, n.max(1));
    let fan = match plan.kind {
        Kind::Fanout => n as u64,
        Kind::P2p => 1,
    };
    let window = match plan.mode {
        Mode::Saturation { window } => window as u64,
        Mode::Paced { .. } => 64,
    };
    let now = Instant::now();
    let start = now + Duration::from_millis(50);
    // Paced senders stop by count (rate x time); the time bound is a backstop.
    let send_for = match plan.mode {
        Mode::Saturation { .. } => plan.send_for,
        Mode::Paced { .. } => plan.send_for + plan.drain,
    };
    let shared = Arc::new(Shared {
        base: now,
        start,
        send_until: start + send_for,
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        guard: (4 * window * plan.senders.len() as u64 * fan).max(1024),
        fan,
        stop: AtomicBool::new(false),
        senders_done: AtomicU64::new(0),
    });

    // Partition: pairs stay together on one worker (p2p windows are local).
    let mut parts: Vec<Vec<(usize, Conn)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        let w = match plan.kind {
            Kind::Fanout => i % threads,
            Kind::P2p => (i / 2) % threads,
        };
        parts[w].push((i, c));
    }
    let n_senders = plan.senders.len();
    let mut is_sender = vec![None; n];
    for (k, &i) in plan.senders.iter().enumerate() {
        is_sender[i] = Some(k);
    }
    let is_sender = Arc::new(is_sender);

    let mut handles = Vec::new();
    for part in parts {
        let shared = shared.clone();
        let is_sender = is_sender.clone();
        let kind = plan.kind;
        let mode = plan.mode;
        let cap = plan.cap;
        let send_for = plan.send_for;
        handles.push(
            std::thread::Builder::new()
                .name("bench-worker".into())
                .spawn(move || {
                    worker(
                        kind, mode, cap, send_for, n_senders, part, &is_sender, &shared,
                    )
                })
                .expect("spawn worker"),
        );
    }

    // Watch: stop once sending is over and every delivery arrived, or the
    // drain time ran out.
    let mut over_at: Option<Instant> = None;
    let mut next_sample = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(2));
        let now = Instant::now();
        if now >= next_sample {
            sample();
            next_sample = now + Duration::from_millis(100);
        }
        let all_capped = (plan.cap.is_some() || matches!(plan.mode, Mode::Paced { .. }))
            && shared.senders_done.load(Ordering::Acquire) as usize == n_senders;
        if over_at.is_none() && (now >= shared.send_until || all_capped) {
            over_at = Some(now);
        }
        if let Some(t) = over_at {
            let sent = shared.sent.load(Ordering::Acquire);
            let delivered = shared.delivered.load(Ordering::Acquire);
            if (now >= t + Duration::from_millis(20) && delivered >= sent * fan)
                || now >= t + plan.drain
            {
                break;
            }
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    shared.stop.store(true, Ordering::Release);

    let mut hist = Hist::default();
    let mut lag = Hist::default();
    let mut last: Option<Instant> = None;
    let (mut dead, mut unexpected, mut errors) = (0, 0, Vec::new());
    for h in handles {
        match h.join() {
            Ok(w) => {
                hist.merge(&w.hist);
                lag.merge(&w.lag);
                last = last.max(w.last);
                dead += w.dead;
                unexpected += w.unexpected;
                errors.extend(w.errors);
            }
            Err(_) => errors.push("a worker thread panicked".into()),
        }
    }
    let sent = shared.sent.load(Ordering::Acquire);
    let delivered = shared.delivered.load(Ordering::Acquire);
    Outcome {
        hist,
        lag,
        sent,
        delivered,
        expected: sent * fan,
        active: last
            .map(|l| l.saturating_duration_since(start))
            .unwrap_or_default(),
        dead_conns: dead,
        unexpected,
        errors,
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    kind: Kind,
    mode: Mode,
    cap: Option<u64>,
    send_for: Duration,
    n_senders: usize,
    part: Vec<(usize, Conn)>,
    is_sender: &[Option<usize>],
    sh: &Shared,
) -> WorkerOut {
    let mut out = WorkerOut {
        hist: Hist::default(),
        lag: Hist::default(),
        last: None,
        dead: 0,
        unexpected: 0,
        errors: Vec::new(),
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!("poll: {e}"));
            return out;
        }
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF];
    let mut conns: Vec<Conn> = Vec::with_capacity(part.len());
    let mut names: Vec<String> = Vec::with_capacity(part.len());
    let mut senders: Vec<Option<SenderState>> = Vec::with_capacity(part.len());
    let mut sender_list: Vec<usize> = Vec::new();
    for (local, (global, mut c)) in part.into_iter().enumerate() {
        if let Err(e) = poll.registry().register(
            &mut c.sock,
            Token(local),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            out.errors.push(format!("register: {e}"));
            return out;
        }
        names.push(c.name.clone());
        conns.push(c);
        senders.push(is_sender[global].map(|k| {
            let (cap_k, gap, first_due) = match mode {
                Mode::Saturation { .. } => (cap.unwrap_or(u64::MAX), Duration::ZERO, sh.start),
                Mode::Paced { rate } => {
                    let per = rate / n_senders as f64;
                    let gap = Duration::from_secs_f64(1.0 / per);
                    let n = cap.unwrap_or((per * send_for.as_secs_f64()).ceil().max(1.0) as u64);
                    (n, gap, sh.start + gap.mul_f64(k as f64 / n_senders as f64))
                }
            };
            SenderState {
                sent: 0,
                inflight: 0,
                cap: cap_k,
                first_due,
                gap,
                tag: k as u32,
                done: false,
            }
        }));
        if is_sender[global].is_some() {
            sender_list.push(local);
        }
    }
    // p2p partners are neighbours in this worker's list (pairs stay together).
    let partner = |i: usize| i ^ 1;
    let window = match mode {
        Mode::Saturation { window } => window,
        Mode::Paced { .. } => u32::MAX,
    };
    let paced = matches!(mode, Mode::Paced { .. });

    while Instant::now() < sh.start {
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut wake: Vec<usize> = sender_list.clone();
    let mut queued = vec![false; conns.len()];
    let mut text = [0u8; 64];
    let mut local_delivered = 0u64;
    let mut local_sent = 0u64;

    loop {
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        // Send what the windows or the schedule allow.
        let now = Instant::now();
        let sending = now < sh.send_until;
        let list: &[usize] = if paced { &sender_list } else { &wake };
        let mut retry = Vec::new();
        let mut next_due: Option<Instant> = None;
        for &i in list {
            queued[i] = false;
            let Some(s) = senders[i].as_mut() else {
                continue;
            };
            if conns[i].dead || s.done {
                continue;
            }
            let mut wrote = false;
            while sending && s.sent < s.cap && s.inflight < window {
                if paced {
                    let due = s.first_due + s.gap.mul_f64(s.sent as f64);
                    if due > now {
                        next_due = Some(next_due.map_or(due, |d: Instant| d.min(due)));
                        break;
                    }
                    out.lag
                        .record(now.saturating_duration_since(due).as_nanos() as u64);
                } else {
                    let owed = (sh.sent.load(Ordering::Relaxed) + local_sent) * sh.fan;
                    if owed.saturating_sub(sh.delivered.load(Ordering::Relaxed) + local_delivered)
                        > sh.guard
                    {
                        retry.push(i);
                        break;
                    }
                }
                let t = Instant::now().duration_since(sh.base).as_nanos() as u64;
                make_text(&mut text, t, s.tag);
                let c = &mut conns[i];
                match kind {
                    Kind::Fanout => encode_message(&mut c.out, &names[i], text_str(&text)),
                    Kind::P2p => encode_message_private(
                        &mut c.out,
                        &names[i],
                        &names[partner(i)],
                        text_str(&text),
                    ),
                }
                s.sent += 1;
                s.inflight += 1;
                local_sent += 1;
                wrote = true;
            }
            if s.sent >= s.cap && !s.done {
                s.done = true;
                sh.senders_done.fetch_add(1, Ordering::AcqRel);
            }
            if wrote {
                // Publish before the bytes leave, so the owed count never lags.
                sh.sent.fetch_add(local_sent, Ordering::AcqRel);
                local_sent = 0;
                if let Err(e) = conns[i].flush() {
                    out.errors.push(format!("{}: write: {e}", names[i]));
                    kill(&mut poll, &mut conns[i], &mut out.dead);
                }
            }
        }
        if paced {
            wake.clear();
        } else {
            wake.clear();
            for &i in &retry {
                queued[i] = true;
            }
            wake.extend(retry);
        }

        let timeout = if paced {
            next_due.map_or(Duration::from_millis(5), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(5))
            })
        } else if wake.is_empty() {
            Duration::from_millis(5)
        } else {
            Duration::from_micros(100)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                out.errors.push(format!("poll: {e}"));
                break;
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if conns[i].dead {
                continue;
            }
            if ev.is_writable() && conns[i].pending() > 0 {
                if let Err(e) = conns[i].flush() {
                    out.errors.push(format!("{}: write: {e}", names[i]));
                    kill(&mut poll, &mut conns[i], &mut out.dead);
                    continue;
                }
            }
            if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                continue;
            }
            let own = &names[i];
            let mut got = 0u64;
            let mut freed_self = 0u32;
            let mut freed_partner = 0u32;
            let mut unexpected = 0u64;
            let mut last = None;
            let base = sh.base;
            let hist = &mut out.hist;
            let to_the_end = ev.is_read_closed() || ev.is_error();
            let res = conns[i].pump_until(&mut buf, to_the_end, |cmd, at| {
                let text = match (&cmd, kind) {
                    (Command::Message { from, text }, Kind::Fanout) => {
                        if from == own {
                            freed_self += 1;
                        }
                        text
                    }
                    (Command::MessagePrivate { text, .. }, Kind::P2p) => {
                        freed_partner += 1;
                        text
                    }
                    _ => {
                        unexpected += 1;
                        return;
                    }
                };
                got += 1;
                last = Some(at);
                if let Some(ts) = parse_ts(text) {
                    let now_ns = at.duration_since(base).as_nanos() as u64;
                    hist.record(now_ns.saturating_sub(ts));
                }
            });
            local_delivered += got;
            out.unexpected += unexpected;
            if last.is_some() {
                out.last = last;
            }
            if freed_self > 0 {
                if let Some(s) = senders[i].as_mut() {
                    s.inflight = s.inflight.saturating_sub(freed_self);
                    if !queued[i] {
                        queued[i] = true;
                        wake.push(i);
                    }
                }
            }
            if freed_partner > 0 {
                let p = partner(i);
                if let Some(s) = senders.get_mut(p).and_then(|s| s.as_mut()) {
                    s.inflight = s.inflight.saturating_sub(freed_partner);
                    if !queued[p] {
                        queued[p] = true;
                        wake.push(p);
                    }
                }
            }
            match res {
                Ok(true) => {}
                Ok(false) => {
                    out.errors
                        .push(format!("{}: server closed the connection", names[i]));
                    kill(&mut poll, &mut conns[i], &mut out.dead);
                }
                Err(e) => {
                    out.errors.push(format!("{}: read: {e}", names[i]));
                    kill(&mut poll, &mut conns[i], &mut out.dead);
                }
            }
        }
        if local_delivered > 0 {
            sh.delivered.fetch_add(local_delivered, Ordering::AcqRel);
            local_delivered = 0;
        }
    }
    out.errors.truncate(20);
    out
}

fn kill(poll: &mut Poll, c: &mut Conn, dead: &mut u64) {
    if !c.dead {
        c.dead = true;
        *dead += 1;
        let _ = poll.registry().deregister(&mut c.sock);
    }
}
