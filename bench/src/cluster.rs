//! The `cluster` workload: chatos private messages between pairs of users
//! on one chinwagd node, then with each pair split across two nodes of a
//! cluster (a real nats-server with JetStream and a real PostgreSQL, both
//! started here in temporary directories on 127.0.0.1, as the server's
//! cluster tests do), beside the same exchange over direct loopback TCP in
//! the same run (the machine's physical reference). Each pair keeps
//! `window` messages in flight: the receiver sends every message straight
//! back, the sender times the round trip and sends the next.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chinwag_proto::chatos::{Command, Decoder};

use crate::hist::Hist;

#[derive(Clone, Debug)]
pub struct ClusterOpts {
    pub pairs: usize,
    pub window: usize,
    pub seconds: f64,
}

/// What one way of carrying the messages did.
pub struct Exchange {
    /// Messages delivered per second (each round trip is two).
    pub per_sec: f64,
    /// Round trips, in nanoseconds.
    pub rtt: Hist,
    /// Sent and never echoed back by the end.
    pub lost: u64,
}

/// A chinwagd process of the cluster, stopped on drop.
pub struct Node {
    pub chatos: SocketAddr,
    child: std::process::Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start node `name` of the cluster on `bus` and `store`.
pub fn node(binary: &Path, name: &str, bus: &str, store: &str) -> Node {
    let mut cmd = std::process::Command::new(binary);
    cmd.args(["--bind", "127.0.0.1", "--admin-socket", "off"])
        .args(["--chatos-port", "0", "--babel-port", "0"])
        .args(["--accounts-port", "0", "--rooms-port", "0"])
        .args(["--bus-url", bus, "--node-name", name, "--store-url", store]);
    let c = crate::common::Chinwagd::spawn(&mut cmd);
    Node {
        chatos: c.chatos,
        child: c.child,
    }
}

fn frame(from: &str, to: &str, text: &str) -> Vec<u8> {
    Command::MessagePrivate {
        from: from.into(),
        to: to.into(),
        text: text.into(),
    }
    .to_bytes()
}

/// Read one MESSAGE_PRIVATE (other commands are skipped): Ok(None) on a
/// read timeout (what was read so far stays in `dec`), Err at end of
/// stream, on an error, or on bytes that do not decode.
fn next_private(
    s: &mut TcpStream,
    dec: &mut Decoder,
    buf: &mut [u8],
) -> Result<Option<(String, String)>, ()> {
    loop {
        match dec.next_command() {
            Ok(Some(Command::MessagePrivate { from, text, .. })) => return Ok(Some((from, text))),
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(_) => return Err(()),
        }
        match crate::wait::read(s, buf) {
            Ok(0) => return Err(()),
            Ok(n) => dec.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(_) => return Err(()),
        }
    }
}

fn login(addr: SocketAddr, name: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(&Command::Login { login: name.into() }.to_bytes())
        .map_err(|e| e.to_string())?;
    let mut dec = Decoder::new();
    let mut buf = [0u8; 64];
    loop {
        match dec.next_command() {
            Ok(Some(Command::LoginAccepted)) => return Ok(s),
            Ok(Some(other)) => return Err(format!("{name}: login answered {other:?}")),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = crate::wait::read(&s, &mut buf).map_err(|e| format!("{name}: {e}"))?;
        if n == 0 {
            return Err(format!("{name}: closed at login"));
        }
        dec.push(&buf[..n]);
    }
}

/// Pairs of logged-in chatos users, the first of each on `a`, the second
/// on `b`; each waits until its partner is reachable (the cluster's view of
/// a login elsewhere lags by a bus round trip).
pub fn chatos_pairs(
    a: SocketAddr,
    b: SocketAddr,
    pairs: usize,
    tag: &str,
) -> Result<Vec<(TcpStream, TcpStream, String, String)>, String> {
    (0..pairs)
        .map(|i| {
            let (x, y) = (format!("x{tag}{i}"), format!("y{tag}{i}"));
            let sx = login(a, &x)?;
            let sy = login(b, &y)?;
            Ok((sx, sy, x, y))
        })
        .collect()
}

/// Pairs of connected loopback sockets (no server at all).
pub fn direct_pairs(pairs: usize) -> Result<Vec<(TcpStream, TcpStream, String, String)>, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let at = l.local_addr().map_err(|e| e.to_string())?;
    (0..pairs)
        .map(|i| {
            let x = TcpStream::connect(at).map_err(|e| e.to_string())?;
            let (y, _) = l.accept().map_err(|e| e.to_string())?;
            for s in [&x, &y] {
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            }
            Ok((x, y, format!("dx{i}"), format!("dy{i}")))
        })
        .collect()
}

/// Run the exchange on `pairs` for `o.seconds`. The first message of each
/// pair is retried until it comes back (a partner on another node becomes
/// reachable a bus round trip after its login).
pub fn exchange(
    pairs: Vec<(TcpStream, TcpStream, String, String)>,
    o: &ClusterOpts,
) -> Result<Exchange, String> {
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut echoers = Vec::new();
    let mut senders = Vec::new();
    for (mut sx, mut sy, x, y) in pairs {
        let stop_e = stop.clone();
        let me = y.clone();
        echoers.push(thread::spawn(move || {
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 64 * 1024];
            sy.set_read_timeout(Some(Duration::from_millis(200))).ok();
            loop {
                match next_private(&mut sy, &mut dec, &mut buf) {
                    Ok(Some((from, text))) => {
                        if sy.write_all(&frame(&me, &from, &text)).is_err() {
                            return;
                        }
                    }
                    Ok(None) if !stop_e.load(Ordering::SeqCst) => {}
                    _ => return,
                }
            }
        }));
        let window = o.window;
        let run_for = Duration::from_secs_f64(o.seconds);
        senders.push(thread::spawn(
            move || -> Result<(Hist, u64, u64), String> {
                let mut dec = Decoder::new();
                let mut buf = vec![0u8; 64 * 1024];
                let text = || format!("{:020}|{x}", base.elapsed().as_nanos() as u64);
                // Reachable first: one message until it comes back.
                sx.set_read_timeout(Some(Duration::from_millis(250))).ok();
                let ready_by = Instant::now() + Duration::from_secs(10);
                loop {
                    sx.write_all(&frame(&x, &y, &text()))
                        .map_err(|e| e.to_string())?;
                    match next_private(&mut sx, &mut dec, &mut buf) {
                        Ok(Some(_)) => break,
                        Ok(None) => {}
                        Err(()) => return Err(format!("{x}: connection lost")),
                    }
                    if Instant::now() > ready_by {
                        return Err(format!("{y} never became reachable from {x}"));
                    }
                }
                // Echoes of the retries may still come: drain them.
                while let Ok(Some(_)) = next_private(&mut sx, &mut dec, &mut buf) {}
                sx.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut rtt = Hist::default();
                let (mut sent, mut got) = (0u64, 0u64);
                for _ in 0..window {
                    sx.write_all(&frame(&x, &y, &text()))
                        .map_err(|e| e.to_string())?;
                    sent += 1;
                }
                let start = Instant::now();
                while start.elapsed() < run_for {
                    let Ok(Some((_, t))) = next_private(&mut sx, &mut dec, &mut buf) else {
                        break; // lost messages stalled the window
                    };
                    let now = base.elapsed().as_nanos() as u64;
                    if let Some(ts) = t.get(..20).and_then(|d| d.parse::<u64>().ok()) {
                        rtt.record(now.saturating_sub(ts));
                    }
                    got += 1;
                    sx.write_all(&frame(&x, &y, &text()))
                        .map_err(|e| e.to_string())?;
                    sent += 1;
                }
                let elapsed = start.elapsed();
                // What is still in flight comes back, or is lost.
                sx.set_read_timeout(Some(Duration::from_millis(500))).ok();
                let mut late = 0;
                while got + late < sent {
                    if !matches!(next_private(&mut sx, &mut dec, &mut buf), Ok(Some(_))) {
                        break;
                    }
                    late += 1;
                }
                let lost = sent - got - late;
                // Round trips completed in the timed part, two messages each.
                let per_sec_x1000 = (got as f64 * 2.0 / elapsed.as_secs_f64() * 1000.0) as u64;
                Ok((rtt, lost, per_sec_x1000))
            },
        ));
    }
    let mut rtt = Hist::default();
    let (mut lost, mut per_sec) = (0, 0.0);
    let mut failed = None;
    for s in senders {
        match s.join().map_err(|_| "a sender panicked".to_string()) {
            Ok(Ok((h, l, p))) => {
                rtt.merge(&h);
                lost += l;
                per_sec += p as f64 / 1000.0;
            }
            Ok(Err(e)) | Err(e) => failed = Some(e),
        }
    }
    stop.store(true, Ordering::SeqCst);
    for e in echoers {
        let _ = e.join();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Exchange { per_sec, rtt, lost })
}
