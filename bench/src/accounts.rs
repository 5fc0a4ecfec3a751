//! The accounts workloads: password logins per second (real Argon2id on the
//! server) and acknowledged messages per second through the store (each 152
//! means a committed, fsynced row). Blocking sockets on a handful of threads
//! are enough: the server's hashing and disk set the pace, not the client.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::{Decoder, Frame};

use crate::hist::Hist;

const IO_WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "bench password";

struct Conn {
    s: TcpStream,
    dec: Decoder,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(IO_WAIT)).ok();
        let mut c = Conn {
            s,
            dec: Decoder::new(),
            buf: vec![0; 16 * 1024],
        };
        c.send(&Frame::Hello)?;
        match c.recv()? {
            Frame::HelloAck => Ok(c),
            other => Err(format!("expected 201, got {other:?}")),
        }
    }

    fn send(&mut self, f: &Frame) -> Result<(), String> {
        self.s
            .write_all(&f.to_bytes())
            .map_err(|e| format!("send: {e}"))
    }

    fn recv(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = self
                .dec
                .next_frame()
                .map_err(|e| format!("bad frame: {e}"))?
            {
                return Ok(f);
            }
            let n = crate::wait::read(&self.s, &mut self.buf).map_err(|e| format!("recv: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            self.dec.push(&self.buf[..n]);
        }
    }

    fn register(addr: SocketAddr, email: &str, pseudo: &str) -> Result<(), String> {
        let mut c = Conn::open(addr)?;
        c.send(&Frame::Register {
            email: email.into(),
            pseudo: pseudo.into(),
            password: PASSWORD.into(),
        })?;
        match c.recv()? {
            Frame::Registered => Ok(()),
            other => Err(format!("register {pseudo}: {other:?}")),
        }
    }

    fn login(addr: SocketAddr, email: &str) -> Result<Conn, String> {
        let mut c = Conn::open(addr)?;
        c.send(&Frame::Login {
            email: email.into(),
            password: PASSWORD.into(),
        })?;
        match c.recv()? {
            Frame::LoginOk { .. } => Ok(c),
            other => Err(format!("login {email}: {other:?}")),
        }
    }
}

fn email(run: &str, i: usize) -> String {
    format!("u{i}.{run}@bench.invalid")
}

fn pseudo(run: &str, i: usize) -> String {
    format!("u{i}{run}")
}

/// Register `n` accounts, a few at a time (registration hashes too).
pub fn register_all(addr: SocketAddr, run: &str, n: usize) -> Result<(), String> {
    let run = Arc::new(run.to_string());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let run = run.clone();
            thread::spawn(move || -> Result<(), String> {
                for i in (t..n).step_by(4) {
                    Conn::register(addr, &email(&run, i), &pseudo(&run, i))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "register thread panicked".to_string())??;
    }
    Ok(())
}

pub struct LoginOutcome {
    pub logins: u64,
    pub elapsed: Duration,
    pub latency: Hist,
}

/// `threads` clients log in and out as fast as they can for `seconds`,
/// cycling through `accounts` so no account is reused while still online.
pub fn logins(
    addr: SocketAddr,
    run: &str,
    accounts: usize,
    threads: usize,
    seconds: f64,
) -> Result<LoginOutcome, String> {
    let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let run = run.to_string();
            thread::spawn(move || -> Result<(u64, Hist), String> {
                let mut h = Hist::default();
                let mut n = 0u64;
                let mut i = t;
                while Instant::now() < stop_at {
                    let t0 = Instant::now();
                    let c = Conn::login(addr, &email(&run, i % accounts))?;
                    h.record(t0.elapsed().as_nanos() as u64);
                    drop(c);
                    n += 1;
                    i += threads;
                }
                Ok((n, h))
            })
        })
        .collect();
    let mut out = LoginOutcome {
        logins: 0,
        elapsed: Duration::ZERO,
        latency: Hist::default(),
    };
    for w in workers {
        let (n, h) = w
            .join()
            .map_err(|_| "login thread panicked".to_string())??;
        out.logins += n;
        out.latency.merge(&h);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

pub struct AckOutcome {
    pub acked: u64,
    pub failed: u64,
    pub delivered: u64,
    pub elapsed: Duration,
    pub latency: Hist,
}

/// `pairs` pairs of friends; in each, one side sends with up to `window`
/// messages awaiting their 152, the other reads its 151s.
pub fn acked_messages(
    addr: SocketAddr,
    run: &str,
    first: usize,
    pairs: usize,
    window: usize,
    seconds: f64,
) -> Result<AckOutcome, String> {
    // Befriend: sender 2k asks, receiver 2k+1 accepts.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for k in 0..pairs {
        let (a, b) = (first + 2 * k, first + 2 * k + 1);
        let (ca, cb) = befriend(addr, run, a, b)?;
        senders.push((ca, pseudo(run, b)));
        receivers.push(cb);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|mut c| {
            let stop = stop.clone();
            c.s.set_read_timeout(Some(Duration::from_millis(200))).ok();
            thread::spawn(move || {
                let mut n = 0u64;
                loop {
                    match c.recv() {
                        Ok(Frame::Message { .. }) => n += 1,
                        Ok(_) => {}
                        Err(_) if !stop.load(Ordering::Acquire) => {}
                        Err(_) => return n,
                    }
                }
            })
        })
        .collect();
    let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let writers: Vec<_> = senders
        .into_iter()
        .map(|(mut c, to)| {
            thread::spawn(move || -> Result<(u64, u64, Hist), String> {
                let mut h = Hist::default();
                let (mut acked, mut failed) = (0u64, 0u64);
                let mut in_flight = VecDeque::new();
                let text = "x".repeat(64);
                loop {
                    let sending = Instant::now() < stop_at;
                    if sending && in_flight.len() < window {
                        c.send(&Frame::SendMessage {
                            pseudo: to.clone(),
                            text: text.clone(),
                        })?;
                        in_flight.push_back(Instant::now());
                        continue;
                    }
                    if in_flight.is_empty() {
                        return Ok((acked, failed, h));
                    }
                    let f = c.recv()?;
                    let t0 = in_flight.pop_front().expect("non-empty");
                    h.record(t0.elapsed().as_nanos() as u64);
                    match f {
                        Frame::MessageStored => acked += 1,
                        Frame::MessageFailed => failed += 1,
                        other => return Err(format!("expected 152/153, got {other:?}")),
                    }
                }
            })
        })
        .collect();
    let mut out = AckOutcome {
        acked: 0,
        failed: 0,
        delivered: 0,
        elapsed: Duration::ZERO,
        latency: Hist::default(),
    };
    for w in writers {
        let (a, f, h) = w.join().map_err(|_| "sender panicked".to_string())??;
        out.acked += a;
        out.failed += f;
        out.latency.merge(&h);
    }
    out.elapsed = start.elapsed();
    // Give the last 151s a moment, then stop the readers.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    for r in readers {
        out.delivered += r.join().unwrap_or(0);
    }
    Ok(out)
}

/// Friends `a` and `b` (both logged in for the occasion); returns their
/// connections, still logged in.
fn befriend(addr: SocketAddr, run: &str, a: usize, b: usize) -> Result<(Conn, Conn), String> {
    let mut ca = Conn::login(addr, &email(run, a))?;
    let mut cb = Conn::login(addr, &email(run, b))?;
    ca.send(&Frame::FriendRequest {
        pseudo: pseudo(run, b),
    })?;
    match ca.recv()? {
        Frame::FriendRequestSent { .. } => {}
        other => return Err(format!("friend request: {other:?}")),
    }
    match cb.recv()? {
        Frame::FriendRequested { .. } => {}
        other => return Err(format!("friend request arrival: {other:?}")),
    }
    cb.send(&Frame::AcceptFriend {
        pseudo: pseudo(run, a),
    })?;
    match ca.recv()? {
        Frame::FriendAccepted { .. } => {}
        other => return Err(format!("friend accept: {other:?}")),
    }
    Ok((ca, cb))
}

/// Accounts 0..4 of the run: 0 and 1 share a long conversation (the pager
/// is 0), 2 sends acknowledged messages to 3. Registered and befriended
/// over the protocol; the server is then stopped by the caller.
pub fn history_setup(addr: SocketAddr, run: &str) -> Result<(), String> {
    register_all(addr, run, 4)?;
    befriend(addr, run, 0, 1)?;
    befriend(addr, run, 2, 3)?;
    Ok(())
}

/// The id of account `i` of the run, in the database file.
fn account_id(c: &rusqlite::Connection, run: &str, i: usize) -> Result<i64, String> {
    c.query_row(
        "SELECT id FROM accounts WHERE pseudo = ?1",
        [pseudo(run, i)],
        |r| r.get(0),
    )
    .map_err(|err| format!("account {i}: {err}"))
}

/// Write `n` messages between accounts `a` and `b` straight into the
/// database (the server is stopped), in one transaction: from `a` to `b`,
/// or alternating senders when `alternate`; `body(i)` is the i-th text;
/// marked delivered or left for `b`'s next login. Returns the time taken.
fn fill_messages(
    db: &std::path::Path,
    run: &str,
    (a, b): (usize, usize),
    n: usize,
    alternate: bool,
    delivered: bool,
    body: impl Fn(usize) -> String,
) -> Result<Duration, String> {
    let e = |e: rusqlite::Error| format!("{}: {e}", db.display());
    let mut c = rusqlite::Connection::open(db).map_err(e)?;
    let (a, b) = (account_id(&c, run, a)?, account_id(&c, run, b)?);
    let t0 = Instant::now();
    let tx = c.transaction().map_err(e)?;
    {
        let mut st = tx
            .prepare(
                "INSERT INTO messages(sender, recipient, body, sent, delivered) VALUES (?1, ?2, ?3, 0, ?4)",
            )
            .map_err(e)?;
        for i in 0..n {
            let (s, r) = if alternate && i % 2 == 1 {
                (b, a)
            } else {
                (a, b)
            };
            st.execute(rusqlite::params![s, r, body(i), delivered as i64])
                .map_err(e)?;
        }
    }
    tx.commit().map_err(e)?;
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(e)?;
    Ok(t0.elapsed())
}

/// Write `n` messages between accounts 0 and 1 straight into the database
/// (the server is stopped), alternating senders, 64-byte bodies.
pub fn history_fill(db: &std::path::Path, run: &str, n: usize) -> Result<Duration, String> {
    let body = "h".repeat(64);
    fill_messages(db, run, (0, 1), n, true, true, |_| body.clone())
}

/// The physical reference, on the same file: a bare SQLite point query by
/// primary key, `n` times at random ids.
pub fn point_query_reference(db: &std::path::Path, n: usize) -> Result<Hist, String> {
    let e = |e: rusqlite::Error| format!("{}: {e}", db.display());
    let c = rusqlite::Connection::open(db).map_err(e)?;
    let max: i64 = c
        .query_row("SELECT max(id) FROM messages", [], |r| r.get(0))
        .map_err(e)?;
    let mut st = c
        .prepare("SELECT body FROM messages WHERE id = ?1")
        .map_err(e)?;
    let mut h = Hist::default();
    for _ in 0..n {
        let id = rand::random::<i64>().rem_euclid(max.max(1)) + 1;
        let t0 = Instant::now();
        let _: Option<String> = st.query_row([id], |r| r.get(0)).ok();
        h.record(t0.elapsed().as_nanos() as u64);
    }
    Ok(h)
}

/// Account 0 pages back through its conversation with 1, one page at a
/// time, `pages` times: the latency of each page (request to answer).
pub fn history_pages(addr: SocketAddr, run: &str, pages: usize) -> Result<Hist, String> {
    let mut c = Conn::login(addr, &email(run, 0))?;
    let mut h = Hist::default();
    let mut before = 0u64;
    for _ in 0..pages {
        let t0 = Instant::now();
        c.send(&Frame::History {
            pseudo: pseudo(run, 1),
            before,
        })?;
        match c.recv()? {
            Frame::HistoryPage { entries, .. } => {
                h.record(t0.elapsed().as_nanos() as u64);
                before = entries.first().map_or(0, |e| e.id);
            }
            other => return Err(format!("history: {other:?}")),
        }
    }
    Ok(h)
}

/// Account 2 sends to 3 one message at a time for `seconds`: the latency of
/// each 152. Meanwhile, when `pager` is set, account 0 pages through its
/// history as fast as the server answers (16 requests in flight). Returns
/// the 152 latencies and the pages served meanwhile.
pub fn acks_while_paging(
    addr: SocketAddr,
    run: &str,
    seconds: f64,
    pager: bool,
) -> Result<(Hist, u64), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let paging = if pager {
        let mut c = Conn::login(addr, &email(run, 0))?;
        let (stop, run) = (stop.clone(), run.to_string());
        Some(thread::spawn(move || -> Result<u64, String> {
            let mut pages = 0u64;
            let mut in_flight = 0usize;
            let mut before = 0u64;
            while !stop.load(Ordering::Acquire) || in_flight > 0 {
                while in_flight < 16 && !stop.load(Ordering::Acquire) {
                    c.send(&Frame::History {
                        pseudo: pseudo(&run, 1),
                        before,
                    })?;
                    in_flight += 1;
                }
                match c.recv()? {
                    Frame::HistoryPage { entries, .. } => {
                        in_flight -= 1;
                        pages += 1;
                        // Back to the newest page once at the start.
                        before = entries.first().map_or(0, |e| e.id);
                    }
                    other => return Err(format!("pager: {other:?}")),
                }
            }
            Ok(pages)
        }))
    } else {
        None
    };
    let mut c = Conn::login(addr, &email(run, 2))?;
    let text = "a".repeat(64);
    let mut h = Hist::default();
    let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < stop_at {
        let t0 = Instant::now();
        c.send(&Frame::SendMessage {
            pseudo: pseudo(run, 3),
            text: text.clone(),
        })?;
        match c.recv()? {
            Frame::MessageStored => h.record(t0.elapsed().as_nanos() as u64),
            other => return Err(format!("152 expected: {other:?}")),
        }
    }
    stop.store(true, Ordering::Release);
    let pages = match paging {
        Some(t) => t.join().map_err(|_| "pager panicked".to_string())??,
        None => 0,
    };
    Ok((h, pages))
}

/// A second reference: the server's own history query, run directly on the
/// file `n` times from the newest page backwards (what a page costs in
/// SQLite alone, before the network and the server).
pub fn page_query_reference(db: &std::path::Path, run: &str, n: usize) -> Result<Hist, String> {
    let e = |e: rusqlite::Error| format!("{}: {e}", db.display());
    let c = rusqlite::Connection::open(db).map_err(e)?;
    let (a, b) = (account_id(&c, run, 0)?, account_id(&c, run, 1)?);
    let mut st = c
        .prepare(
            "SELECT id, sender, body FROM messages
             WHERE min(sender, recipient) = ?1 AND max(sender, recipient) = ?2 AND id < ?3
             ORDER BY id DESC LIMIT 50",
        )
        .map_err(e)?;
    let mut h = Hist::default();
    let mut before = i64::MAX;
    for _ in 0..n {
        let t0 = Instant::now();
        let ids: Vec<i64> = st
            .query_map(rusqlite::params![a.min(b), a.max(b), before], |r| r.get(0))
            .map_err(e)?
            .filter_map(Result::ok)
            .collect();
        h.record(t0.elapsed().as_nanos() as u64);
        before = ids.last().copied().unwrap_or(i64::MAX);
    }
    Ok(h)
}

/// Write `n` messages from account 2 to account 3 straight into the
/// database (the server is stopped), undelivered: what 3 finds waiting at
/// its next login. Numbered texts, so order and completeness can be checked.
pub fn offline_fill(db: &std::path::Path, run: &str, n: usize) -> Result<(), String> {
    fill_messages(db, run, (2, 3), n, false, false, |i| format!("{i:064}")).map(|_| ())
}

pub struct OfflineOutcome {
    /// LOGIN sent to 111 received.
    pub login: Duration,
    /// LOGIN sent to the last queued 151 received.
    pub all: Duration,
    pub received: usize,
    pub in_order: bool,
}

/// Account 3 logs in and reads the `n` messages waiting for it.
pub fn offline_login(addr: SocketAddr, run: &str, n: usize) -> Result<OfflineOutcome, String> {
    let mut c = Conn::open(addr)?;
    let t0 = Instant::now();
    c.send(&Frame::Login {
        email: email(run, 3),
        password: PASSWORD.into(),
    })?;
    match c.recv()? {
        Frame::LoginOk { .. } => {}
        other => return Err(format!("login: {other:?}")),
    }
    let login = t0.elapsed();
    let mut out = OfflineOutcome {
        login,
        all: login,
        received: 0,
        in_order: true,
    };
    while out.received < n {
        match c.recv()? {
            Frame::Message { text, .. } => {
                if text.parse::<usize>().ok() != Some(out.received) {
                    out.in_order = false;
                }
                out.received += 1;
            }
            other => return Err(format!("after {} messages: {other:?}", out.received)),
        }
    }
    out.all = t0.elapsed();
    Ok(out)
}
