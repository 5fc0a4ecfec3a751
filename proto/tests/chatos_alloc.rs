//! The server's chatos delivery path encodes each MESSAGE and
//! MESSAGE_PRIVATE into a recipient queue that is often empty (its buffer
//! went out with the last send): the encoder must then allocate once, at
//! the frame's size, not grow the buffer 8 -> 16 -> 32 -> ... bytes (one
//! malloc and three reallocs a delivery, seen in dhat on the p2p
//! workloads). And the server decodes MESSAGE and MESSAGE_PRIVATE in place
//! (`CommandRef`): no owned strings per frame. Counted with this binary's
//! own allocator, per thread, so tests running at once do not mix.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chinwag_proto::chatos::{encode_message, encode_message_private, Command, CommandRef, Decoder};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: using it never allocates.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    CALLS.with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        count();
        System.realloc(p, l, size)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = CALLS.with(Cell::get);
    let t = f();
    (CALLS.with(Cell::get) - before, t)
}

#[test]
fn a_delivery_into_an_empty_queue_allocates_once_at_the_frames_size() {
    let text = "x".repeat(64);
    let mut out = Vec::new();
    let (n, ()) = allocations(|| encode_message_private(&mut out, "alice123", "bob45678", &text));
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
    let (n, ()) = allocations(|| encode_message(&mut out, "alice123", &text));
    assert_eq!(n, 1, "MESSAGE into an empty buffer");

    // Appended behind a frame already queued: at most one growth.
    let (n, ()) = allocations(|| encode_message(&mut out, "carol999", &text));
    assert!(n <= 1, "MESSAGE appended: {n} allocations");
}

#[test]
fn a_message_decoded_in_place_allocates_nothing() {
    let text = "y".repeat(100);
    let mut stream = Vec::new();
    encode_message_private(&mut stream, "alice123", "bob45678", &text);
    encode_message(&mut stream, "alice123", &text);
    let (n, got) = allocations(|| {
        let (first, used) = CommandRef::decode(&stream).unwrap();
        let (second, _) = CommandRef::decode(&stream[used..]).unwrap();
        (first, second)
    });
    assert_eq!(n, 0, "decoding two messages in place");
    assert_eq!(
        got.0,
        CommandRef::MessagePrivate {
            from: "alice123",
            to: "bob45678",
            text: &text
        }
    );
    assert_eq!(
        got.1,
        CommandRef::Message {
            from: "alice123",
            text: &text
        }
    );

    // Through the stream decoder, as the server reads: once its buffer
    // holds the bytes, each frame costs nothing.
    let mut d = Decoder::new();
    d.push(&stream);
    let (n, frames) = allocations(|| {
        let mut frames = 0;
        while let Some((frame, _rest)) = d.next_ref().unwrap() {
            assert!(matches!(
                frame,
                CommandRef::MessagePrivate { .. } | CommandRef::Message { .. }
            ));
            frames += 1;
        }
        frames
    });
    assert_eq!((n, frames), (0, 2));
}
