//! The chat path's heap allocations, counted with this binary's own
//! allocator: a MESSAGE_PRIVATE between two chatos users, once the
//! connections are warm, allocates nothing in the server (no owned strings
//! in the decode, no fresh buffer for a recipient queue that its last send
//! emptied, no list of owed queues per read; see docs/architecture.md).
//! The test's own client side allocates nothing per message either (bytes
//! encoded once, read into a stack buffer), so what is counted is the
//! server's, plus whatever its background threads do meanwhile. One test
//! in this binary, so no other test's threads allocate meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chinwag_proto::chatos::{encode_message_private, op, Command};
use chinwagd::{Config, Server};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, size)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn login(addr: SocketAddr, name: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&Command::Login { login: name.into() }.to_bytes())
        .unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    assert_eq!(one[0], op::LOGIN_ACCEPTED, "{name} logs in");
    s
}

/// `frame` from `from`'s socket arrives whole at `to`'s.
fn hop(from: &mut TcpStream, to: &mut TcpStream, frame: &[u8]) {
    let mut got = [0u8; 256];
    from.write_all(frame).unwrap();
    to.read_exact(&mut got[..frame.len()])
        .expect("the message arrives");
    assert_eq!(&got[..frame.len()], frame);
}

#[test]
fn a_private_message_through_the_server_allocates_nothing_once_warm() {
    let srv = Server::start(Config::ephemeral()).expect("server starts");
    let addr = srv.chatos_addr();
    let mut alice = login(addr, "alice");
    let mut bob = login(addr, "bob");
    let text = "x".repeat(64);
    let mut to_bob = Vec::new();
    encode_message_private(&mut to_bob, "alice", "bob", &text);
    let mut to_alice = Vec::new();
    encode_message_private(&mut to_alice, "bob", "alice", &text);

    // One message in flight at a time: each recipient queue is emptied by
    // its send before the next delivery, the case where it used to start
    // from nothing. Warm first (thread pools, first reads).
    for _ in 0..200 {
        hop(&mut alice, &mut bob, &to_bob);
        hop(&mut bob, &mut alice, &to_alice);
    }
    const HOPS: usize = 2000;
    let before = CALLS.load(Ordering::Relaxed);
    for _ in 0..HOPS / 2 {
        hop(&mut alice, &mut bob, &to_bob);
        hop(&mut bob, &mut alice, &to_alice);
    }
    let n = CALLS.load(Ordering::Relaxed) - before;
    eprintln!("{n} allocations for {HOPS} private messages");
    // Before: 5 a message (3 decoded strings, the queue's buffer, the
    // batch's list). Background threads may allocate a little meanwhile.
    assert!(
        n <= HOPS / 20,
        "{n} allocations for {HOPS} private messages ({:.2} each)",
        n as f64 / HOPS as f64
    );

    // Several in flight, as at saturation: a burst of 8 frames read at once
    // piles up in the recipient's queue (it grows, then keeps what fits in
    // net::QUEUE_KEEP) and leaves in one send.
    let burst = to_bob.repeat(8);
    assert!(burst.len() <= chinwagd::net::QUEUE_KEEP);
    let mut got = [0u8; 1024];
    let mut round = || {
        alice.write_all(&burst).unwrap();
        bob.read_exact(&mut got[..burst.len()])
            .expect("the burst arrives");
        assert_eq!(&got[..burst.len()], &burst[..]);
    };
    for _ in 0..50 {
        round();
    }
    const BURSTS: usize = 250;
    let before = CALLS.load(Ordering::Relaxed);
    for _ in 0..BURSTS {
        round();
    }
    let n = CALLS.load(Ordering::Relaxed) - before;
    eprintln!("{n} allocations for {BURSTS} bursts of 8");
    assert!(
        n <= BURSTS * 8 / 20,
        "{n} allocations for {BURSTS} bursts of 8"
    );
    drop((alice, bob));
    srv.shutdown();
}
