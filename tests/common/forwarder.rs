//! A lossy UDP forwarder for accounts calls, on 127.0.0.1: it stands
//! between the two library sockets, drops datagrams with a seeded random
//! generator, and stops when dropped. Each side names one of its ports in
//! the call signalling (`cw_client_set_voice_ports(c, 0, port)`): the
//! caller names `caller_port` (the callee sends there), the callee names
//! `callee_port`. It learns each side's real socket from the first
//! datagram it gets from it, and sends each datagram on from the port the
//! receiver expects, so both sides see one peer address.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

pub struct Lossy {
    /// The port the caller names: datagrams from the callee arrive here.
    pub caller_port: u16,
    /// The port the callee names: datagrams from the caller arrive here.
    pub callee_port: u16,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lossy {
    /// Drop `loss` (0.0 to 1.0) of the datagrams each way, with `seed`.
    pub fn start(loss: f64, seed: u64) -> Lossy {
        let to_caller = UdpSocket::bind("127.0.0.1:0").unwrap(); // the callee sends here
        let to_callee = UdpSocket::bind("127.0.0.1:0").unwrap(); // the caller sends here
        let (caller_port, callee_port) = (
            to_caller.local_addr().unwrap().port(),
            to_callee.local_addr().unwrap().port(),
        );
        let caller: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let callee: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for (dir, from, out, learn, dest) in [
            (0u64, &to_caller, &to_callee, callee.clone(), caller.clone()),
            (1u64, &to_callee, &to_caller, caller.clone(), callee.clone()),
        ] {
            let from = from.try_clone().unwrap();
            // Datagrams for X leave from the port X names as its peer.
            let out = out.try_clone().unwrap();
            from.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let (stop, fwd, drp) = (stop.clone(), forwarded.clone(), dropped.clone());
            threads.push(std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 2 + dir);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Acquire) {
                    let Ok((n, src)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    learn.lock().get_or_insert(src);
                    let to = *dest.lock();
                    match to {
                        Some(to) if !rng.gen_bool(loss) => {
                            let _ = out.send_to(&buf[..n], to);
                            fwd.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            drp.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Lossy {
            caller_port,
            callee_port,
            forwarded,
            dropped,
            stop,
            threads,
        }
    }
}

impl Drop for Lossy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
