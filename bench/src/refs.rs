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
/// between messages) reads and records the difference; a message every
/// `gap`. Measured while a workload runs, so the reference sees the same
/// machine (the same other processes, the same busy cores) as the figure
/// it stands beside.
pub struct OneWayProbe {
    stop: Arc<AtomicBool>,
    sender: Option<thread::JoinHandle<io::Result<()>>>,
    receiver: Option<thread::JoinHandle<io::Result<Hist>>>,
}

impl OneWayProbe {
    pub fn start(gap: Duration) -> io::Result<OneWayProbe> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let mut a = TcpStream::connect(l.local_addr()?)?;
        let (b, _) = l.accept()?;
        a.set_nodelay(true)?;
        b.set_nodelay(true)?;
        b.set_read_timeout(Some(Duration::from_secs(10)))?;
        let base = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = thread::spawn(move || -> io::Result<Hist> {
            let mut h = Hist::default();
            let mut msg = [0u8; 64];
            loop {
                crate::wait::read_exact(&b, &mut msg)?;
                let now = base.elapsed().as_nanos() as u64;
                let sent = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
                if sent == u64::MAX {
                    return Ok(h);
                }
                h.record(now.saturating_sub(sent));
            }
        });
        let stop2 = stop.clone();
        let sender = thread::spawn(move || -> io::Result<()> {
            let mut msg = [0x5au8; 64];
            let mut next = Instant::now();
            while !stop2.load(Ordering::Acquire) {
                next += gap;
                sleep_until(next);
                let t = base.elapsed().as_nanos() as u64;
                msg[..8].copy_from_slice(&t.to_le_bytes());
                a.write_all(&msg)?;
            }
            msg[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            a.write_all(&msg)
        });
        Ok(OneWayProbe {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    pub fn finish(mut self) -> io::Result<Hist> {
        self.stop.store(true, Ordering::Release);
        let joined = |r: thread::Result<io::Result<()>>| {
            r.map_err(|_| io::Error::other("probe sender panicked"))?
        };
        if let Some(s) = self.sender.take() {
            joined(s.join())?;
        }
        match self.receiver.take() {
            Some(r) => r
                .join()
                .map_err(|_| io::Error::other("probe receiver panicked"))?,
            None => Ok(Hist::default()),
        }
    }
}

impl Drop for OneWayProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(s) = self.sender.take() {
            let _ = s.join();
        }
        if let Some(r) = self.receiver.take() {
            let _ = r.join();
        }
    }
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
            let k = crate::wait::recv(&b, &mut buf)?;
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
        crate::wait::recv(&a, &mut buf)?;
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
/// It runs in a process of its own (this program, `__bare-login`), so its
/// sockets count against its own descriptor limit, not the generator's.
pub struct BareLoginServer {
    addr: SocketAddr,
    child: std::process::Child,
}

impl BareLoginServer {
    /// The one-thread login server.
    pub fn start() -> io::Result<BareLoginServer> {
        Self::start_mode("__bare-login")
    }

    /// The bare thread-per-connection forwarder (see [`bare_forward_main`]).
    pub fn start_forwarder() -> io::Result<BareLoginServer> {
        Self::start_mode("__bare-forward")
    }

    fn start_mode(mode: &str) -> io::Result<BareLoginServer> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe()?)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("bare server said {line:?}")))?;
        Ok(BareLoginServer { addr, child })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BareLoginServer {
    fn drop(&mut self) {
        // Closing its stdin stops it.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `chinwag-bench __bare-login`: the bare server's process. Prints its
/// address, serves until standard input closes.
pub fn bare_login_main() -> io::Result<()> {
    crate::server::raise_fd_limit();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    // The same accept backlog as chinwagd's listeners.
    sock.listen(4096)?;
    let l: TcpListener = sock.into();
    let addr = l.local_addr()?;
    println!("{addr}");
    std::io::stdout().flush()?;
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 256];
        for s in l.incoming() {
            let Ok(mut s) = s else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = s.set_nodelay(true);
            // opcode, 4-byte length, name: one segment from the bench.
            let mut got = 0;
            let mut want = 5;
            while got < want {
                match s.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got += k,
                }
                if got >= 5 {
                    let len = u32::from_be_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
                    want = (5 + len).min(buf.len());
                }
            }
            if got >= want {
                let _ = s.write_all(&[chinwag_proto::chatos::op::LOGIN_ACCEPTED]);
            }
            kept.push(s);
        }
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

/// `chinwag-bench __bare-forward`: the floor of the thread-per-connection
/// model. One thread per connection (spawned at accept, 128 KiB stacks like
/// chinwagd's), which answers the LOGIN and then writes each
/// MESSAGE_PRIVATE it reads to the named recipient's socket, and each
/// MESSAGE to every socket (one blocking write each, from the sender's
/// thread): no hub, no queue, no name policy, no flush threads, no bound.
pub fn bare_forward_main() -> io::Result<()> {
    use chinwag_proto::chatos::{Command, Decoder};
    use std::collections::HashMap;
    use std::sync::Mutex;
    crate::server::raise_fd_limit();
    let l = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", l.local_addr()?);
    std::io::stdout().flush()?;
    let names: Arc<Mutex<HashMap<String, Arc<TcpStream>>>> = Arc::default();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let names = names.clone();
            let _ = thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let _ = s.set_nodelay(true);
                    let s = Arc::new(s);
                    let mut dec = Decoder::new();
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut out = Vec::new();
                    loop {
                        let n = match (&*s).read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        dec.push(&buf[..n]);
                        while let Ok(Some(cmd)) = dec.next_command() {
                            match cmd {
                                Command::Login { login } => {
                                    names.lock().expect("names").insert(login, s.clone());
                                    let _ = (&*s)
                                        .write_all(&[chinwag_proto::chatos::op::LOGIN_ACCEPTED]);
                                }
                                Command::Message { from, text } => {
                                    // Everyone, from this thread, one write each.
                                    out.clear();
                                    chinwag_proto::chatos::encode_message(&mut out, &from, &text);
                                    let all: Vec<Arc<TcpStream>> =
                                        names.lock().expect("names").values().cloned().collect();
                                    for t in all {
                                        let _ = (&*t).write_all(&out);
                                    }
                                }
                                Command::MessagePrivate { from, to, text } => {
                                    let target = names.lock().expect("names").get(&to).cloned();
                                    if let Some(t) = target {
                                        out.clear();
                                        chinwag_proto::chatos::encode_message_private(
                                            &mut out, &from, &to, &text,
                                        );
                                        let _ = (&*t).write_all(&out);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                });
        }
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
