//! Private-connection relay throughput and round-trip time, beside a direct
//! loopback TCP connection measured in the same run.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{Command, Decoder};

use crate::hist::Hist;

#[derive(Clone, Copy)]
pub struct RelayOpts {
    /// Bulk bytes to move one way (the run also stops at `seconds`).
    pub bytes: u64,
    pub seconds: f64,
    pub write_size: usize,
    pub pings: usize,
    pub ping_size: usize,
}

#[derive(Default)]
pub struct PathFigures {
    pub bytes: u64,
    pub elapsed: Duration,
    /// Two threads, echo style.
    pub rtt: Hist,
    /// One thread playing both ends.
    pub rtt_inline: Hist,
}

impl PathFigures {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Read commands from a blocking control connection until `want` accepts one.
fn expect<T>(
    s: &mut TcpStream,
    dec: &mut Decoder,
    deadline: Instant,
    mut want: impl FnMut(&Command) -> Option<T>,
) -> Result<T, String> {
    let mut buf = [0u8; 4096];
    loop {
        while let Some(cmd) = dec.next_command().map_err(|e| format!("decode: {e}"))? {
            if let Some(t) = want(&cmd) {
                return Ok(t);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the server".into());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = crate::wait::read(s, &mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("server closed the control connection".into());
        }
        dec.push(&buf[..n]);
    }
}

fn login(addr: SocketAddr, name: &str, deadline: Instant) -> Result<(TcpStream, Decoder), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).ok();
    s.write_all(&Command::Login { login: name.into() }.to_bytes())
        .map_err(|e| e.to_string())?;
    let mut dec = Decoder::new();
    let ok = expect(&mut s, &mut dec, deadline, |c| match c {
        Command::LoginAccepted => Some(true),
        Command::LoginRefused => Some(false),
        _ => None,
    })?;
    if !ok {
        return Err(format!("login {name:?} refused"));
    }
    Ok((s, dec))
}

/// Set up a private connection between two fresh users; returns the two
/// relayed sockets (requester's end, target's end) and the control sockets.
pub fn establish(
    addr: SocketAddr,
    a: &str,
    b: &str,
    deadline: Instant,
) -> Result<[TcpStream; 4], String> {
    let (mut ca, mut da) = login(addr, a, deadline)?;
    let (mut cb, mut db) = login(addr, b, deadline)?;
    let req = Command::RequestPrivate {
        requester: a.into(),
        target: b.into(),
    };
    ca.write_all(&req.to_bytes()).map_err(|e| e.to_string())?;
    expect(&mut cb, &mut db, deadline, |c| {
        matches!(c, Command::RequestPrivate { .. }).then_some(())
    })?;
    let ok = Command::OkPrivate {
        requester: a.into(),
        target: b.into(),
    };
    cb.write_all(&ok.to_bytes()).map_err(|e| e.to_string())?;
    let id_of = |c: &Command| match c {
        Command::IdPrivate { connect_id, .. } => Some(*connect_id),
        _ => None,
    };
    let ida = expect(&mut ca, &mut da, deadline, id_of)?;
    let idb = expect(&mut cb, &mut db, deadline, id_of)?;
    if ida != idb {
        return Err(format!("ID_PRIVATE differs: {ida:#x} vs {idb:#x}"));
    }
    let open = || -> Result<TcpStream, String> {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).ok();
        s.write_all(&Command::LoginPrivate { connect_id: ida }.to_bytes())
            .map_err(|e| e.to_string())?;
        Ok(s)
    };
    let mut pa = open()?;
    let mut pb = open()?;
    for s in [&mut pa, &mut pb] {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).ok();
        let mut b = [0u8; 1];
        crate::wait::read_exact(s, &mut b).map_err(|e| format!("waiting for ESTABLISHED: {e}"))?;
        if b[0] != chinwag_proto::chatos::op::ESTABLISHED {
            return Err(format!("expected ESTABLISHED (0x0a), got {:#04x}", b[0]));
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    }
    Ok([pa, pb, ca, cb])
}

/// A direct loopback connection pair for comparison.
pub fn direct() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    b.set_read_timeout(Some(Duration::from_secs(10)))?;
    a.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok((a, b))
}

/// Ping-pong `n` messages of `size` bytes with one thread playing both
/// ends: a writes, b reads and writes back, a reads. Only the path between
/// the sockets (for the relay: the server's two pump wake-ups) is timed.
pub fn rtt_inline(a: &mut TcpStream, b: &mut TcpStream, n: usize, size: usize) -> io::Result<Hist> {
    let ping = vec![0x5au8; size];
    let mut got = vec![0u8; size];
    let mut h = Hist::default();
    for i in 0..n + n / 10 {
        let t = Instant::now();
        a.write_all(&ping)?;
        crate::wait::read_exact(b, &mut got)?;
        b.write_all(&got)?;
        crate::wait::read_exact(a, &mut got)?;
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64); // the first tenth is warm-up
        }
    }
    Ok(h)
}

/// Ping-pong `n` messages of `size` bytes between two threads, as two
/// programs would: b runs an echo loop on its own thread, a times each
/// round trip. This is what a user of the connection sees.
pub fn rtt_echo(a: &mut TcpStream, b: &mut TcpStream, n: usize, size: usize) -> io::Result<Hist> {
    let total = n + n / 10;
    let mut echo = b.try_clone()?;
    let echoer = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0u8; size];
        for _ in 0..total {
            crate::wait::read_exact(&echo, &mut buf)?;
            echo.write_all(&buf)?;
        }
        Ok(())
    });
    let ping = vec![0xa5u8; size];
    let mut got = vec![0u8; size];
    let mut h = Hist::default();
    for i in 0..total {
        let t = Instant::now();
        a.write_all(&ping)?;
        crate::wait::read_exact(a, &mut got)?;
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64);
        }
    }
    echoer
        .join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;
    Ok(h)
}

/// Bulk transfer from `a` to `b` with `write_size` writes; returns bytes
/// read and the time from the first write to the last byte read. `a` is
/// half-closed at the end, and `b` must see that end of stream.
pub fn bulk(a: TcpStream, b: &mut TcpStream, opts: &RelayOpts) -> io::Result<(u64, Duration)> {
    let limit = opts.bytes;
    let until = Duration::from_secs_f64(opts.seconds);
    let size = opts.write_size;
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || -> io::Result<u64> {
        let data: Vec<u8> = (0..size).map(|i| (i * 131 + 7) as u8).collect();
        let mut a = a;
        let mut sent = 0u64;
        while sent < limit && t0.elapsed() < until {
            let n = (limit - sent).min(size as u64) as usize;
            a.write_all(&data[..n])?;
            sent += n as u64;
        }
        a.shutdown(Shutdown::Write)?;
        Ok(sent)
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut last = t0;
    loop {
        match crate::wait::read(b, &mut buf)? {
            0 => break,
            n => {
                got += n as u64;
                last = Instant::now();
            }
        }
    }
    let sent = writer
        .join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    if sent != got {
        return Err(io::Error::other(format!(
            "sent {sent} bytes, received {got}"
        )));
    }
    Ok((got, last.duration_since(t0)))
}

/// The relay beside direct loopback, measured in alternation so both see
/// the same machine: `rounds` rounds of ping-pong (relay, then direct, each
/// round), then `rounds` bulk transfers each way (a fresh relay and a fresh
/// direct pair each, `seconds / rounds` at most each). Throughput is the
/// median round's.
pub fn measure_both(
    mut relay: impl FnMut(usize) -> Result<(TcpStream, TcpStream), String>,
    opts: &RelayOpts,
    rounds: usize,
) -> Result<(PathFigures, PathFigures), String> {
    let rounds = rounds.max(1);
    let ping = |e: io::Error| format!("ping-pong: {e}");
    let (mut ra, mut rb) = relay(0)?;
    let (mut da, mut db) = direct().map_err(|e| format!("direct loopback: {e}"))?;
    let mut via = PathFigures::default();
    let mut dir = PathFigures::default();
    let per = (opts.pings / rounds).max(10);
    for _ in 0..rounds {
        via.rtt
            .merge(&rtt_echo(&mut ra, &mut rb, per, opts.ping_size).map_err(ping)?);
        dir.rtt
            .merge(&rtt_echo(&mut da, &mut db, per, opts.ping_size).map_err(ping)?);
        via.rtt_inline
            .merge(&rtt_inline(&mut ra, &mut rb, per, opts.ping_size).map_err(ping)?);
        dir.rtt_inline
            .merge(&rtt_inline(&mut da, &mut db, per, opts.ping_size).map_err(ping)?);
    }
    let chunk = RelayOpts {
        bytes: opts.bytes / rounds as u64,
        seconds: opts.seconds / rounds as f64,
        ..*opts
    };
    let (mut vr, mut dr) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        let (a, mut b) = if k == 0 {
            (ra.try_clone(), rb.try_clone())
        } else {
            let (a, b) = relay(k)?;
            (Ok(a), Ok(b))
        };
        let (a, b) = (
            a.map_err(|e| e.to_string())?,
            b.as_mut().map_err(|e| e.to_string())?,
        );
        let (bytes, t) = bulk(a, b, &chunk).map_err(|e| format!("relay bulk: {e}"))?;
        vr.push((bytes, t));
        let (da, mut db) = direct().map_err(|e| format!("direct loopback: {e}"))?;
        dr.push(bulk(da, &mut db, &chunk).map_err(|e| format!("direct bulk: {e}"))?);
    }
    let median = |v: &mut Vec<(u64, Duration)>| {
        v.sort_by(|x, y| {
            let g = |p: &(u64, Duration)| p.0 as f64 / p.1.as_secs_f64().max(1e-9);
            g(x).total_cmp(&g(y))
        });
        v[v.len() / 2]
    };
    (via.bytes, via.elapsed) = median(&mut vr);
    (dir.bytes, dir.elapsed) = median(&mut dr);
    Ok((via, dir))
}
