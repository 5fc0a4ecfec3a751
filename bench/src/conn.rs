//! Non-blocking chatos client connections driven by mio (epoll), and the
//! pipelined login that opens many of them at once.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{Command, Decoder};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Bytes read per read(2): large, so a busy socket drains in few calls.
pub const READ_BUF: usize = 256 * 1024;

pub struct Conn {
    pub sock: TcpStream,
    pub dec: Decoder,
    pub out: Vec<u8>,
    pub out_pos: usize,
    pub name: String,
    /// Saw end of stream or an error; no longer polled.
    pub dead: bool,
}

impl Conn {
    pub fn connect(addr: SocketAddr, name: String) -> io::Result<Conn> {
        let sock = TcpStream::connect(addr)?;
        let _ = sock.set_nodelay(true);
        Ok(Conn {
            sock,
            dec: Decoder::new(),
            out: Vec::with_capacity(256),
            out_pos: 0,
            name,
            dead: false,
        })
    }

    /// Connect, register with `poll` under `token`, and send LOGIN as
    /// `name` (or queue it until the socket is writable).
    pub fn start_login(
        addr: SocketAddr,
        name: String,
        poll: &Poll,
        token: Token,
    ) -> Result<Conn, String> {
        let mut c = Conn::connect(addr, name).map_err(|e| format!("connect: {e}"))?;
        poll.registry()
            .register(&mut c.sock, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
        Command::Login {
            login: c.name.clone(),
        }
        .encode(&mut c.out);
        c.flush().map_err(|e| format!("login: {e}"))?;
        Ok(c)
    }

    /// On a readable event of a connection logging in: read, and say
    /// whether the LOGIN was accepted (Some) and whether the stream is
    /// still open. Broadcasts from clients already in are skipped.
    pub fn login_verdict(&mut self, buf: &mut [u8]) -> Result<(Option<bool>, bool), String> {
        let mut verdict = None;
        let open = self
            .pump(buf, |cmd, _| match cmd {
                Command::LoginAccepted if verdict.is_none() => verdict = Some(true),
                Command::LoginRefused if verdict.is_none() => verdict = Some(false),
                _ => {}
            })
            .map_err(|e| format!("login {}: {e}", self.name))?;
        Ok((verdict, open))
    }

    /// Write queued bytes until done or the socket is full. A socket still
    /// connecting counts as full: its writable event will come.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Read until the socket is drained, handing every decoded command to
    /// `f` with the time its bytes were read. Returns Ok(false) at end of
    /// stream. A framing error is returned as InvalidData.
    pub fn pump(&mut self, buf: &mut [u8], f: impl FnMut(Command, Instant)) -> io::Result<bool> {
        self.pump_until(buf, true, f)
    }

    /// [`Conn::pump`], but when `to_the_end` is false a read shorter than
    /// `buf` ends it: the socket was drained then, and the edge-triggered
    /// poll reports whatever arrives later. One read per event instead of
    /// two for a generator that must not spend the cores it shares with
    /// the server. (A closed stream needs `to_the_end`.)
    pub fn pump_until(
        &mut self,
        buf: &mut [u8],
        to_the_end: bool,
        mut f: impl FnMut(Command, Instant),
    ) -> io::Result<bool> {
        loop {
            match self.sock.read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    let drained = !to_the_end && n < buf.len();
                    let now = Instant::now();
                    self.dec.push(&buf[..n]);
                    loop {
                        match self.dec.next_command() {
                            Ok(Some(cmd)) => f(cmd, now),
                            Ok(None) => break,
                            Err(e) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    e.to_string(),
                                ))
                            }
                        }
                    }
                    if drained {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

pub struct LoginResult {
    pub conns: Vec<Conn>,
    pub elapsed: Duration,
}

/// Log `names` in over fresh connections, pipelined: up to `window`
/// connections are between connect and their LOGIN answer at any time (the
/// server's accept backlog is small, so an unbounded burst of SYNs would be
/// dropped and retried a second later). Fails on any refusal, error or the
/// deadline; the error says how far it got.
pub fn login_all(
    addr: SocketAddr,
    names: Vec<String>,
    window: usize,
    deadline: Instant,
) -> Result<LoginResult, String> {
    let n = names.len();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut accepted = vec![false; n];
    let mut names = names.into_iter();
    let (mut in_flight, mut done) = (0usize, 0usize);
    let window = window.max(1);
    let t0 = Instant::now();
    while done < n {
        while in_flight < window && conns.len() < n {
            let i = conns.len();
            let name = names.next().expect("one name per connection");
            let c = Conn::start_login(addr, name, &poll, Token(i))
                .map_err(|e| format!("#{i}: {e} ({done} logged in)"))?;
            conns.push(c);
            in_flight += 1;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("login deadline passed: {done} of {n} logged in"));
        }
        crate::wait::poll(
            &mut poll,
            &mut events,
            Some(left.min(Duration::from_millis(100))),
        )
        .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if ev.is_writable() && c.pending() > 0 {
                c.flush().map_err(|e| format!("login #{i}: {e}"))?;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                let (verdict, open) = c.login_verdict(&mut buf)?;
                match verdict {
                    Some(true) if !accepted[i] => {
                        accepted[i] = true;
                        in_flight -= 1;
                        done += 1;
                    }
                    Some(false) => {
                        return Err(format!("login {:?} refused ({done} logged in)", c.name))
                    }
                    _ => {}
                }
                if !open && !accepted[i] {
                    return Err(format!(
                        "server closed connection #{i} before answering LOGIN ({done} logged in)"
                    ));
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    for c in conns.iter_mut() {
        let _ = poll.registry().deregister(&mut c.sock);
    }
    Ok(LoginResult { conns, elapsed })
}

pub struct ChurnOutcome {
    pub cycles: u64,
    pub elapsed: Duration,
    /// From connect to LOGIN_ACCEPTED.
    pub latency: crate::hist::Hist,
}

/// Connections that log in and close at once, `window` of them under way
/// at any time, for `run`: each one connects, sends LOGIN with a fresh
/// name (`{prefix}-{n}`), waits for LOGIN_ACCEPTED and closes. Any refusal
/// or error fails the run.
pub fn churn(
    addr: SocketAddr,
    prefix: &str,
    window: usize,
    run: Duration,
) -> Result<ChurnOutcome, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    let window = window.max(1);
    // Slot i holds the connection under way and when it started.
    let mut slots: Vec<Option<(Conn, Instant)>> = (0..window).map(|_| None).collect();
    let mut next_name = 0u64;
    let mut out = ChurnOutcome {
        cycles: 0,
        elapsed: Duration::ZERO,
        latency: crate::hist::Hist::default(),
    };
    let t0 = Instant::now();
    let stop_at = t0 + run;
    let open = |slot: &mut Option<(Conn, Instant)>,
                i: usize,
                poll: &mut Poll,
                next_name: &mut u64|
     -> Result<(), String> {
        let name = format!("{prefix}-{next_name}");
        *next_name += 1;
        let started = Instant::now();
        *slot = Some((Conn::start_login(addr, name, poll, Token(i))?, started));
        Ok(())
    };
    for (i, slot) in slots.iter_mut().enumerate() {
        open(slot, i, &mut poll, &mut next_name)?;
    }
    let mut live = window;
    while live > 0 {
        if Instant::now() > stop_at + Duration::from_secs(30) {
            return Err("churn: connections still waiting 30 s after the end".into());
        }
        crate::wait::poll(&mut poll, &mut events, Some(Duration::from_millis(100)))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some((c, started)) = slots[i].as_mut() else {
                continue;
            };
            if ev.is_writable() && c.pending() > 0 {
                c.flush().map_err(|e| format!("login: {e}"))?;
            }
            if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                continue;
            }
            let (verdict, open_now) = c.login_verdict(&mut buf)?;
            match verdict {
                Some(true) => {
                    out.latency.record(started.elapsed().as_nanos() as u64);
                    out.cycles += 1;
                    let (mut c, _) = slots[i].take().expect("slot in use");
                    let _ = poll.registry().deregister(&mut c.sock);
                    drop(c);
                    if Instant::now() < stop_at {
                        open(&mut slots[i], i, &mut poll, &mut next_name)?;
                    } else {
                        live -= 1;
                    }
                }
                Some(false) => return Err(format!("churn: login {:?} refused", c.name)),
                None if !open_now => {
                    return Err(format!(
                        "churn: server closed {:?} before answering",
                        c.name
                    ))
                }
                None => {}
            }
        }
    }
    out.elapsed = t0.elapsed();
    Ok(out)
}

/// The 64-byte message text: 20 digits of nanoseconds since the run's base
/// instant (the send time), then a tag, then padding.
pub fn make_text(out: &mut [u8; 64], nanos: u64, tag: u32) {
    let mut v = nanos;
    for i in (0..20).rev() {
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out[20] = b'|';
    let mut t = tag;
    for i in (21..31).rev() {
        out[i] = b'0' + (t % 10) as u8;
        t /= 10;
    }
    out[31] = b'|';
    for b in out[32..].iter_mut() {
        *b = b'.';
    }
}

pub fn text_str(t: &[u8; 64]) -> &str {
    std::str::from_utf8(t).expect("ASCII")
}

/// The send time carried by a text made by [`make_text`], if it is one.
#[inline]
pub fn parse_ts(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let mut v = 0u64;
    for &d in &b[..20] {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (d - b'0') as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let mut t = [0u8; 64];
        make_text(&mut t, 123_456_789_012, 42);
        assert_eq!(text_str(&t).len(), 64);
        assert_eq!(parse_ts(text_str(&t)), Some(123_456_789_012));
    }
}
