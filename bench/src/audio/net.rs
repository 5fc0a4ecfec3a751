//! The benchmark's own impaired paths on loopback: a UDP forwarder between
//! the two sockets of an accounts call (seeded loss, random or in bursts,
//! and jitter, changeable while the call runs), and a TCP proxy in front of
//! a babel caller that delays each chunk (order kept, as TCP would).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// Which datagrams go missing.
#[derive(Clone, Copy, Debug)]
pub enum Loss {
    None,
    /// Each datagram independently with this probability.
    Random(f64),
    /// Bursts of `len` consecutive datagrams, `rate` of all datagrams.
    Bursts {
        rate: f64,
        len: u32,
    },
}

/// What the path does now; the forwarder reads it for every datagram.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss: Loss,
    /// Each datagram is delayed by a uniform 0..jitter, independently (so
    /// datagrams may overtake each other, as on a real path).
    pub jitter: Duration,
}

impl Impairment {
    pub const CLEAN: Impairment = Impairment {
        loss: Loss::None,
        jitter: Duration::ZERO,
    };
}

struct Dropper {
    rng: rand::rngs::StdRng,
    burst_left: u32,
}

impl Dropper {
    fn drop_next(&mut self, loss: Loss) -> bool {
        match loss {
            Loss::None => false,
            Loss::Random(p) => self.rng.gen_bool(p),
            Loss::Bursts { rate, len } => {
                if self.burst_left > 0 {
                    self.burst_left -= 1;
                    return true;
                }
                // A burst starts with probability q per datagram outside
                // one; the loss rate is then len*q / (len*q + 1 - q).
                let l = f64::from(len);
                let q = rate / (l * (1.0 - rate) + rate);
                if self.rng.gen_bool(q) {
                    self.burst_left = len - 1;
                    true
                } else {
                    false
                }
            }
        }
    }
}

type Due = Reverse<(Instant, u64, Vec<u8>, SocketAddr)>;

/// Datagrams waiting for their release time, sent by one thread.
struct Schedule {
    queue: Mutex<BinaryHeap<Due>>,
    ready: Condvar,
}

/// A UDP forwarder for one accounts call. The caller names `caller_port` in
/// its signalling (the callee sends there), the callee names `callee_port`.
pub struct Forwarder {
    pub caller_port: u16,
    pub callee_port: u16,
    pub impairment: Arc<Mutex<Impairment>>,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    schedule: Arc<Schedule>,
}

impl Forwarder {
    pub fn start(seed: u64, impairment: Impairment) -> Result<Forwarder, String> {
        let bind = || UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"));
        let (to_caller, to_callee) = (bind()?, bind()?);
        let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
        let (caller_port, callee_port) = (port(&to_caller)?, port(&to_callee)?);
        let impairment = Arc::new(Mutex::new(impairment));
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let schedule = Arc::new(Schedule {
            queue: Mutex::new(BinaryHeap::new()),
            ready: Condvar::new(),
        });
        let caller: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let callee: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let mut threads = Vec::new();
        // Datagrams for X leave from the port X names as its peer, so the
        // sender thread gets each datagram with the socket to use.
        let out = [
            to_callee.try_clone().map_err(|e| e.to_string())?,
            to_caller.try_clone().map_err(|e| e.to_string())?,
        ];
        for (dir, from, learn, dest) in [
            (0usize, to_caller, callee.clone(), caller.clone()),
            (1usize, to_callee, caller.clone(), callee.clone()),
        ] {
            from.set_read_timeout(Some(Duration::from_millis(20)))
                .map_err(|e| e.to_string())?;
            let (stop, fwd, drp, imp, sched) = (
                stop.clone(),
                forwarded.clone(),
                dropped.clone(),
                impairment.clone(),
                schedule.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut dropper = Dropper {
                    rng: rand::rngs::StdRng::seed_from_u64(seed * 2 + dir as u64),
                    burst_left: 0,
                };
                let mut jitter_rng = rand::rngs::StdRng::seed_from_u64(seed * 7 + dir as u64);
                let mut buf = [0u8; 2048];
                let mut n_seq = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let Ok((n, src)) = crate::wait::recv_from(&from, &mut buf) else {
                        continue;
                    };
                    let now = Instant::now();
                    learn.lock().unwrap().get_or_insert(src);
                    let to = *dest.lock().unwrap();
                    let imp = *imp.lock().unwrap();
                    let Some(to) = to.filter(|_| !dropper.drop_next(imp.loss)) else {
                        drp.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    fwd.fetch_add(1, Ordering::Relaxed);
                    let delay = imp.jitter.mul_f64(jitter_rng.gen::<f64>());
                    n_seq += 1;
                    // The direction rides in the key's low bit: it picks the socket.
                    let key = n_seq * 2 + dir as u64;
                    sched.queue.lock().unwrap().push(Reverse((
                        now + delay,
                        key,
                        buf[..n].to_vec(),
                        to,
                    )));
                    sched.ready.notify_one();
                }
            }));
        }
        let (stop2, sched) = (stop.clone(), schedule.clone());
        threads.push(std::thread::spawn(move || {
            let mut q = sched.queue.lock().unwrap();
            while !stop2.load(Ordering::Acquire) {
                let now = Instant::now();
                match q.peek() {
                    Some(Reverse((at, ..))) if *at <= now => {
                        let Reverse((_, key, data, to)) = q.pop().expect("peeked");
                        let _ = out[(key & 1) as usize].send_to(&data, to);
                    }
                    Some(Reverse((at, ..))) => {
                        let wait = *at - now;
                        q = sched.ready.wait_timeout(q, wait).unwrap().0;
                    }
                    None => {
                        q = sched
                            .ready
                            .wait_timeout(q, Duration::from_millis(20))
                            .unwrap()
                            .0;
                    }
                }
            }
        }));
        Ok(Forwarder {
            caller_port,
            callee_port,
            impairment,
            forwarded,
            dropped,
            stop,
            threads,
            schedule,
        })
    }

    pub fn set(&self, imp: Impairment) {
        *self.impairment.lock().unwrap() = imp;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.schedule.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP proxy for a babel call: the callee dials `port`, the proxy dials
/// the caller's listener (`target`, set once the caller listens) and pumps
/// both ways, delaying each chunk by a uniform 0..jitter without
/// reordering.
pub struct Proxy {
    pub port: u16,
    pub target: Arc<Mutex<Option<u16>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(seed: u64, jitter: Duration) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let target: Arc<Mutex<Option<u16>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t2, s2) = (target.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let callee = loop {
                if s2.load(Ordering::Acquire) || Instant::now() > deadline {
                    return;
                }
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            let Some(p) = *t2.lock().unwrap() else { return };
            let Ok(caller) = TcpStream::connect(("127.0.0.1", p)) else {
                return;
            };
            let _ = callee.set_nonblocking(false);
            let _ = callee.set_nodelay(true);
            let _ = caller.set_nodelay(true);
            let pumps = [
                (caller.try_clone(), callee.try_clone(), seed),
                (callee.try_clone(), caller.try_clone(), seed + 1),
            ];
            let mut hs = Vec::new();
            for (src, dst, seed) in pumps {
                let (Ok(src), Ok(dst)) = (src, dst) else {
                    return;
                };
                hs.push(std::thread::spawn(move || pump(src, dst, jitter, seed)));
            }
            for h in hs {
                let _ = h.join();
            }
        });
        Ok(Proxy {
            port,
            target,
            stop,
            thread: Some(thread),
        })
    }
}

/// Copy `src` to `dst`, each chunk released at max(previous release,
/// arrival + uniform 0..jitter).
fn pump(mut src: TcpStream, dst: TcpStream, jitter: Duration, seed: u64) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let mut out = dst;
    let writer = std::thread::spawn(move || {
        for (at, data) in rx {
            if let Some(w) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            if out.write_all(&data).is_err() {
                break;
            }
        }
        let _ = out.shutdown(Shutdown::Write);
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = src.read(&mut buf) {
        if n == 0 {
            break;
        }
        let at = (Instant::now() + jitter.mul_f64(rng.gen::<f64>())).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
