//! The rooms workloads (UDP, seed 003): texts per second through the
//! server's worker pool to a public room, how that scales with the worker
//! count, and a request's round trip at light load beside a direct UDP
//! round trip. Every client is a UDP socket of its own on 127.0.0.1.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use chinwag_proto::rooms::{Body, Message, Registration};
use mio::{Events, Interest, Poll, Token};

use crate::conn::{make_text, parse_ts, text_str};
use crate::hist::Hist;
use crate::refs;
use crate::report::{Report, Unit};
use crate::server::{self, Start, Target};
use crate::Ctx;

/// Server flags so that one address may hold a whole room and send fast.
fn flags(workers: usize) -> Vec<String> {
    [
        "--rooms-max-per-ip",
        "254",
        "--rooms-registrations-per-minute",
        "1000000",
        "--rooms-requests-per-second",
        "1000000",
        "--rooms-workers",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([workers.to_string()])
    .collect()
}

struct Client {
    sock: UdpSocket,
    id: u8,
    seq: u16,
}

impl Client {
    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Send `body` as a request and wait for its answer (same NUM_SEQ),
    /// sending again every 200 ms, five times at most.
    fn ask(&mut self, server: SocketAddr, body: Body) -> Result<Body, String> {
        let seq = self.next_seq();
        let bytes = Message {
            user: self.id,
            seq,
            body,
        }
        .to_bytes();
        let mut buf = [0u8; 8192];
        for _ in 0..5 {
            self.sock
                .send_to(&bytes, server)
                .map_err(|e| format!("rooms send: {e}"))?;
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                let left = until.saturating_duration_since(Instant::now());
                self.sock
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .ok();
                let Ok((n, _)) = crate::wait::recv_from(&self.sock, &mut buf) else {
                    break;
                };
                let Ok(m) = Message::decode(&buf[..n]) else {
                    continue;
                };
                if m.seq == seq {
                    return Ok(m.body);
                }
            }
        }
        Err("rooms: no answer after 5 tries".into())
    }
}

/// Register `n` clients named `{prefix}{i}` (at most 10 bytes), each
/// confirmed by a keep-alive: all of them in the public room.
fn register(server: SocketAddr, prefix: &str, n: usize) -> Result<Vec<Client>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let mut c = Client {
            sock,
            id: 0,
            seq: 0,
        };
        let name = format!("{prefix}{i}");
        match c.ask(
            server,
            Body::Connexion {
                name: Some(name.clone()),
            },
        )? {
            Body::Registered {
                status: Registration::Accepted,
                user,
            } => c.id = user,
            other => return Err(format!("rooms: registering {name}: {other:?}")),
        }
        match c.ask(server, Body::Connexion { name: None })? {
            Body::KeptAlive { ok: true } => {}
            other => return Err(format!("rooms: keep-alive of {name}: {other:?}")),
        }
        out.push(c);
    }
    Ok(out)
}

/// The server's UDP socket as the kernel sees it (/proc/net/udp): bytes
/// waiting in its receive queue, and datagrams dropped because it was full.
fn udp_queue(port: u16) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!(":{port:04X}");
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 || !f[1].ends_with(&want) {
            continue;
        }
        let rx = u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?;
        let drops = f[12].parse().ok()?;
        return Some((rx, drops));
    }
    None
}

pub struct TextsOutcome {
    pub texts: u64,
    pub refused: u64,
    pub deliveries: u64,
    pub duplicates: u64,
    pub elapsed: Duration,
    pub delivery: Hist,
    pub ack: Hist,
    pub rx_queue_peak: u64,
    pub kernel_drops: u64,
    /// Texts the sender sent again (unanswered after T).
    pub resent: u64,
    /// Texts given up after M sends.
    pub lost: u64,
}

/// Client 0 sends 64-byte texts to the public room with `window` awaiting
/// their answer, for `run`; every other client acknowledges each text it is
/// forwarded (REPONSE_TEXTE), as a client must. Then the last deliveries
/// are awaited (at most `drain`).
fn texts(
    server: SocketAddr,
    mut clients: Vec<Client>,
    window: usize,
    seconds: f64,
    drain: Duration,
) -> Result<TextsOutcome, String> {
    let run = Duration::from_secs_f64(seconds);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut socks: Vec<mio::net::UdpSocket> = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter_mut().enumerate() {
        c.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut s = mio::net::UdpSocket::from_std(c.sock.try_clone().map_err(|e| e.to_string())?);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        socks.push(s);
    }
    let receivers = clients.len() as u64 - 1;
    let base = Instant::now();
    let mut out = TextsOutcome {
        texts: 0,
        refused: 0,
        deliveries: 0,
        duplicates: 0,
        elapsed: Duration::ZERO,
        delivery: Hist::default(),
        ack: Hist::default(),
        rx_queue_peak: 0,
        kernel_drops: 0,
        resent: 0,
        lost: 0,
    };
    let drops0 = udp_queue(server.port()).map_or(0, |q| q.1);
    // NUM_SEQs each receiver has seen from the server (a repeat is a
    // retransmission: the server did not get the acknowledgement in time).
    let mut seen: Vec<Vec<u64>> = (0..clients.len()).map(|_| vec![0u64; 1024]).collect();
    // Texts awaiting their answer: first send, last send, sends, bytes. A
    // text unanswered for T (100 ms) is sent again, M (10) times in all,
    // as a client must (the server answers a copy without forwarding it
    // twice).
    let mut in_flight: HashMap<u16, (Instant, Instant, u32, Vec<u8>)> = HashMap::new();
    let retry = Duration::from_millis(100);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 8192];
    let mut bytes = Vec::with_capacity(128);
    let mut text = [0u8; 64];
    let t0 = Instant::now();
    let stop_sending = t0 + run;
    let mut last_delivery = t0;
    let mut next_sample = t0;
    loop {
        let now = Instant::now();
        let sending = now < stop_sending;
        while sending && in_flight.len() < window {
            let seq = clients[0].next_seq();
            make_text(&mut text, base.elapsed().as_nanos() as u64, 0);
            bytes.clear();
            Message {
                user: clients[0].id,
                seq,
                body: Body::Text {
                    chat: text_str(&text).into(),
                },
            }
            .encode(&mut bytes);
            match socks[0].send_to(&bytes, server) {
                Ok(_) => {
                    let t = Instant::now();
                    in_flight.insert(seq, (t, t, 1, bytes.clone()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("rooms send: {e}")),
            }
        }
        for (first, last, sends, bytes) in in_flight.values_mut() {
            if now.duration_since(*last) >= retry && *sends < 10 {
                let _ = socks[0].send_to(bytes, server);
                *last = now;
                *sends += 1;
                out.resent += 1;
            }
            let _ = first;
        }
        if now >= next_sample {
            if let Some((rx, _)) = udp_queue(server.port()) {
                out.rx_queue_peak = out.rx_queue_peak.max(rx);
            }
            next_sample = now + Duration::from_millis(10);
        }
        let owed = out.texts * receivers;
        if !sending
            && (out.deliveries >= owed && in_flight.is_empty() || now > stop_sending + drain)
        {
            break;
        }
        crate::wait::poll(&mut poll, &mut events, Some(Duration::from_millis(5)))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                let n = match socks[i].recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("rooms recv: {e}")),
                };
                let at = Instant::now();
                let Ok(m) = Message::decode(&buf[..n]) else {
                    continue;
                };
                match m.body {
                    Body::Text { chat } if i != 0 => {
                        // Acknowledge every copy, count the first.
                        bytes.clear();
                        Message {
                            user: clients[i].id,
                            seq: m.seq,
                            body: Body::TextAck,
                        }
                        .encode(&mut bytes);
                        let _ = socks[i].send_to(&bytes, server);
                        let (word, bit) = (m.seq as usize / 64, m.seq % 64);
                        if seen[i][word] & (1 << bit) != 0 {
                            out.duplicates += 1;
                            continue;
                        }
                        seen[i][word] |= 1 << bit;
                        out.deliveries += 1;
                        last_delivery = at;
                        if let Some(ts) = parse_ts(&chat) {
                            let now_ns = at.duration_since(base).as_nanos() as u64;
                            out.delivery.record(now_ns.saturating_sub(ts));
                        }
                    }
                    Body::TextAck if i == 0 => {
                        if let Some((t, ..)) = in_flight.remove(&m.seq) {
                            out.ack.record(at.duration_since(t).as_nanos() as u64);
                            out.texts += 1;
                        }
                    }
                    Body::Error { .. } if i == 0 && in_flight.remove(&m.seq).is_some() => {
                        out.refused += 1;
                    }
                    _ => {}
                }
            }
        }
        // Texts the server never answered after M sends are given up.
        let before = in_flight.len();
        in_flight.retain(|_, (_, last, sends, _)| *sends < 10 || last.elapsed() < retry);
        out.lost += (before - in_flight.len()) as u64;
    }
    out.elapsed = last_delivery
        .duration_since(t0)
        .max(Duration::from_millis(1));
    out.kernel_drops = udp_queue(server.port()).map_or(0, |q| q.1) - drops0;
    Ok(out)
}

/// A server with `workers` rooms workers and `clients` registered clients
/// named `{prefix}{i}`, all in the public room.
fn room(
    ctx: &Ctx,
    workers: usize,
    metrics: bool,
    prefix: &str,
    clients: usize,
) -> Result<(Target, SocketAddr, Vec<Client>), String> {
    let target = ctx.spec.start_with(Start {
        flags: flags(workers),
        metrics,
        ..Default::default()
    })?;
    let server = target
        .rooms
        .ok_or_else(|| "the rooms socket is unknown (a spawned server is needed)".to_string())?;
    let all = register(server, prefix, clients)?;
    Ok((target, server, all))
}

/// The server's own counters of the rooms inbox: its peak depth and the
/// datagrams dropped because it was full.
fn inbox(t: &Target) -> Option<(f64, f64)> {
    let page = server::http_get(t.metrics?, "/metrics").ok()?;
    Some((
        server::metric(&page, "chinwag_rooms_inbox_peak_depth")?,
        server::metric(&page, "chinwag_drops_total{reason=\"rooms_inbox_full\"}").unwrap_or(0.0),
    ))
}

/// `rooms`: texts per second to a public room of `clients`, through
/// `workers` workers.
pub fn texts_wl(ctx: &Ctx, clients: usize, window: usize, seconds: f64) -> Result<Report, String> {
    let mut r = Report::new("rooms");
    r.param("clients", clients);
    r.param("window", window);
    r.param("seconds", seconds);
    r.param("workers", 2);
    let (mut target, server, all) = room(ctx, 2, true, &format!("r{}", ctx.run_id), clients)?;
    let meter = crate::Meter::start(&target);
    let o = texts(server, all, window, seconds, ctx.drain)?;
    let ms = |ns: u64| ns as f64 / 1e6;
    let secs = o.elapsed.as_secs_f64();
    r.fig(
        "texts_per_s",
        "texts per second (answered)",
        o.texts as f64 / secs,
        Unit::PerSec,
        None,
    );
    r.fig(
        "deliveries_per_s",
        "deliveries per second (forwarded and acknowledged)",
        o.deliveries as f64 / secs,
        Unit::PerSec,
        None,
    );
    r.fig(
        "delivery_p50_ms",
        "delivery latency p50",
        ms(o.delivery.quantile(0.5)),
        Unit::Ms,
        None,
    );
    r.fig(
        "delivery_p99_ms",
        "delivery latency p99",
        ms(o.delivery.quantile(0.99)),
        Unit::Ms,
        None,
    );
    r.fig(
        "text_ack_p50_ms",
        "text answered p50",
        ms(o.ack.quantile(0.5)),
        Unit::Ms,
        None,
    );
    let owed = o.texts * (clients as u64 - 1);
    r.fig(
        "delivered_pct",
        "delivered (% of owed)",
        o.deliveries as f64 * 100.0 / owed.max(1) as f64,
        Unit::Pct,
        None,
    );
    r.fig(
        "refused",
        "texts refused (a recipient too far behind)",
        o.refused as f64,
        Unit::Count,
        None,
    );
    r.fig(
        "retransmitted",
        "forwarded texts received twice (server retransmissions)",
        o.duplicates as f64,
        Unit::Count,
        None,
    );
    r.fig(
        "resent",
        "texts the sender sent again (no answer after T)",
        o.resent as f64,
        Unit::Count,
        None,
    );
    if o.lost > 0 {
        r.problems
            .push(format!("{} texts never answered after M sends", o.lost));
    }
    r.fig(
        "rx_queue_peak_kib",
        "server socket receive queue, peak (KiB)",
        o.rx_queue_peak as f64 / 1024.0,
        Unit::Count,
        None,
    );
    r.fig(
        "kernel_drops",
        "datagrams the kernel dropped (socket full)",
        o.kernel_drops as f64,
        Unit::Count,
        None,
    );
    if let Some((peak, dropped)) = inbox(&target) {
        r.fig(
            "inbox_peak",
            "worker inbox peak depth (of 4,096)",
            peak,
            Unit::Count,
            None,
        );
        r.fig(
            "inbox_drops",
            "datagrams dropped, inbox full",
            dropped,
            Unit::Count,
            None,
        );
        r.row("inbox_peak", None);
        r.row("inbox_drops", None);
    }
    r.row("texts_per_s", None);
    r.row("deliveries_per_s", None);
    r.row("delivery_p99_ms", None);
    r.row("kernel_drops", None);
    meter.finish(&target, &mut r);
    r.notes.push(format!(
        "one sender, {window} texts awaiting their answer; each text is forwarded to {} clients, \
         each of which acknowledges it (2 datagrams per delivery)",
        clients - 1
    ));
    if o.texts == 0 {
        r.problems.push("no text was answered".into());
    }
    target.stop();
    Ok(r)
}

/// `rooms-workers`: the same load with 1, 2, 4 and 8 workers.
pub fn workers_wl(
    ctx: &Ctx,
    clients: usize,
    window: usize,
    seconds: f64,
) -> Result<Report, String> {
    let mut r = Report::new("rooms-workers");
    r.param("clients", clients);
    r.param("window", window);
    r.param("seconds", seconds);
    let counts: &[usize] = if ctx.quick { &[1, 2] } else { &[1, 2, 4, 8] };
    const KEYS: [(&str, &str); 4] = [
        ("texts_per_s_w1", "texts per second, 1 worker"),
        ("texts_per_s_w2", "texts per second, 2 workers"),
        ("texts_per_s_w4", "texts per second, 4 workers"),
        ("texts_per_s_w8", "texts per second, 8 workers"),
    ];
    for (k, &w) in counts.iter().enumerate() {
        let (mut target, server, all) =
            room(ctx, w, false, &format!("w{}{k}", ctx.run_id), clients)?;
        let o = texts(server, all, window, seconds, ctx.drain)?;
        let (key, label) = KEYS[k];
        r.fig(
            key,
            label,
            o.texts as f64 / o.elapsed.as_secs_f64(),
            Unit::PerSec,
            None,
        );
        r.row(key, None);
        if o.texts == 0 {
            r.problems
                .push(format!("no text answered with {w} workers"));
        }
        if k == counts.len() - 1 {
            crate::peak_figures(&target, &mut r);
        }
        target.stop();
    }
    r.notes.push(
        "the workers share one lock on the rooms state and send each forwarded copy after releasing it"
            .into(),
    );
    Ok(r)
}

/// `rooms-rtt`: one client's request (DEMANDER_LISTE_MESSAGERIE) answered,
/// one every 2 ms, with `members` other clients registered; beside a direct
/// UDP round trip between two threads.
pub fn rtt_wl(ctx: &Ctx, members: usize) -> Result<Report, String> {
    let mut r = Report::new("rooms-rtt");
    let n = if ctx.quick { 200 } else { 3000 };
    let gap = Duration::from_millis(2);
    r.param("requests", n);
    r.param("members", members);
    let (mut target, server, mut all) =
        room(ctx, 2, false, &format!("t{}", ctx.run_id), members + 1)?;
    let reference = refs::udp_rtt(n, gap).map_err(|e| format!("reference: {e}"))?;
    let c = &mut all[0];
    let mut h = Hist::default();
    let mut next = Instant::now();
    for i in 0..n {
        next += gap;
        refs::sleep_until(next);
        let t = Instant::now();
        match c.ask(server, Body::ListRooms)? {
            Body::RoomList { .. } => {}
            other => return Err(format!("rooms: list rooms answered {other:?}")),
        }
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64);
        }
    }
    let us = |ns: u64| ns as f64 / 1e3;
    r.fig(
        "rtt_p50_us",
        "request round trip p50",
        us(h.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "rtt_p99_us",
        "request round trip p99",
        us(h.quantile(0.99)),
        Unit::Us,
        None,
    );
    r.fig(
        "ref_rtt_p50_us",
        "reference: direct UDP round trip p50",
        us(reference.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "ref_rtt_p99_us",
        "reference: direct UDP round trip p99",
        us(reference.quantile(0.99)),
        Unit::Us,
        None,
    );
    r.row("rtt_p50_us", Some("ref_rtt_p50_us"));
    r.row("rtt_p99_us", Some("ref_rtt_p99_us"));
    crate::peak_figures(&target, &mut r);
    target.stop();
    Ok(r)
}
