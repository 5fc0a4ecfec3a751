//! The server's chatos delivery path encodes each MESSAGE and
//! MESSAGE_PRIVATE into a recipient queue that is often empty (its buffer
//! went out with the last send): the encoder must then allocate once, at
//! the frame's size, not grow the buffer 8 -> 16 -> 32 -> ... bytes (one
//! malloc and three reallocs a delivery, seen in dhat on the p2p
//! workloads). Counted with this binary's own allocator; one test per
//! binary, so no other thread allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use chinwag_proto::chatos::{encode_message, encode_message_private, Command};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
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

fn allocations(f: impl FnOnce()) -> usize {
    let before = CALLS.load(Ordering::Relaxed);
    f();
    CALLS.load(Ordering::Relaxed) - before
}

#[test]
fn a_delivery_into_an_empty_queue_allocates_once_at_the_frames_size() {
    let text = "x".repeat(64);
    let mut out = Vec::new();
    let n = allocations(|| encode_message_private(&mut out, "alice123", "bob45678", &text));
    assert_eq!(n, 1, "MESSAGE_PRIVATE into an empty buffer");
    // The bytes are the same as the generic encoder's.
    let same = Command::MessagePrivate {
        from: "alice123".into(),
        to: "bob45678".into(),
        text: text.clone(),
    }
    .to_bytes();
    assert_eq!(out, same);

    let mut out = Vec::new();
    let n = allocations(|| encode_message(&mut out, "alice123", &text));
    assert_eq!(n, 1, "MESSAGE into an empty buffer");

    // Appended behind a frame already queued: at most one growth.
    let n = allocations(|| encode_message(&mut out, "carol999", &text));
    assert!(n <= 1, "MESSAGE appended: {n} allocations");
}
