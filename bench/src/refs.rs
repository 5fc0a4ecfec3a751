//! Physical references, measured in the same run as the figures they stand
//! beside: what this machine's loopback and scheduler give with no server
//! in the way.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::hist::Hist;

/// One-way latency of a 64-byte message over a direct loopback TCP
/// connection between two threads: the sender stamps the time and writes,
/// the receiver (blocked in its read, as a server's connection thread is
/// between messages) reads and records the difference. `n` messages,
/// `gap` apart, so the receiver sleeps before each one.
pub fn one_way_latency(n: usize, gap: Duration) -> io::Result<Hist> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let mut a = TcpStream::connect(l.local_addr()?)?;
    let (mut b, _) = l.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    b.set_read_timeout(Some(Duration::from_secs(10)))?;
    let base = Instant::now();
    let reader = thread::spawn(move || -> io::Result<Hist> {
        let mut h = Hist::default();
        let mut msg = [0u8; 64];
        for i in 0..n {
            b.read_exact(&mut msg)?;
            let now = base.elapsed().as_nanos() as u64;
            let sent = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
            if i >= n / 10 {
                h.record(now.saturating_sub(sent)); // the first tenth warms up
            }
        }
        Ok(h)
    });
    let mut msg = [0x5au8; 64];
    let mut next = Instant::now();
    for _ in 0..n {
        next += gap;
        sleep_until(next);
        let t = base.elapsed().as_nanos() as u64;
        msg[..8].copy_from_slice(&t.to_le_bytes());
        a.write_all(&msg)?;
    }
    reader
        .join()
        .map_err(|_| io::Error::other("reader panicked"))?
}

/// Round trip of a 64-byte UDP datagram between two threads on loopback
/// (the far one echoes from a blocking receive): `n` trips, `gap` apart.
pub fn udp_rtt(n: usize, gap: Duration) -> io::Result<Hist> {
    let a = UdpSocket::bind("127.0.0.1:0")?;
    let b = UdpSocket::bind("127.0.0.1:0")?;
    a.connect(b.local_addr()?)?;
    b.connect(a.local_addr()?)?;
    a.set_read_timeout(Some(Duration::from_secs(5)))?;
    b.set_read_timeout(Some(Duration::from_secs(5)))?;
    let echo = thread::spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let k = b.recv(&mut buf)?;
            b.send(&buf[..k])?;
        }
        Ok(())
    });
    let mut h = Hist::default();
    let msg = [0xa5u8; 64];
    let mut buf = [0u8; 64];
    let mut next = Instant::now();
    for i in 0..n {
        next += gap;
        sleep_until(next);
        let t = Instant::now();
        a.send(&msg)?;
        a.recv(&mut buf)?;
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64);
        }
    }
    echo.join()
        .map_err(|_| io::Error::other("echo panicked"))??;
    Ok(h)
}

/// Sleep until `t` (coarsely: the last stretch is a sleep too, the
/// references must not burn a core the measured path could use).
pub fn sleep_until(t: Instant) {
    let left = t.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        thread::sleep(left);
    }
}

/// The least a chatos login can cost on this machine: a server of one
/// thread that accepts, reads the LOGIN frame, answers LOGIN_ACCEPTED and
/// keeps the socket open, with no thread per connection, no name check, no
/// hub. The load generator logs in against it exactly as against chinwagd.
pub struct BareLoginServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl BareLoginServer {
    pub fn start() -> io::Result<BareLoginServer> {
        // The same accept backlog as chinwagd's listeners.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        sock.listen(4096)?;
        let l: TcpListener = sock.into();
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 256];
            for s in l.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                let _ = s.set_nodelay(true);
                // opcode, 4-byte length, name: one segment from the bench.
                let mut got = 0;
                while got < 5 {
                    match s.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got += k,
                    }
                }
                if got >= 5 {
                    let len = u32::from_be_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
                    while got < (5 + len).min(buf.len()) {
                        match s.read(&mut buf[got..]) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got += k,
                        }
                    }
                    let _ = s.write_all(&[chinwag_proto::chatos::op::LOGIN_ACCEPTED]);
                }
                kept.push(s);
            }
            kept.len()
        });
        Ok(BareLoginServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BareLoginServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
