//! Pre-started connection threads.
//!
//! Every TCP connection still has a thread of its own for its whole life;
//! what changes is where the thread comes from. Creating one costs tens of
//! microseconds (`clone`, a stack, a kernel stack, a signal stack) on the
//! acceptor's path, serially, which is what bounded a burst of logins. The
//! pool keeps up to `spare` threads parked and ready: the acceptor hands a
//! connection to one with an unpark, and a background thread (`cw-spawn`)
//! starts new ones once fewer than half of `spare` wait, until `spare` do,
//! but only once connections stop arriving for a moment (in a burst it
//! would compete with the acceptor's own thread creation; see `refill`).
//! A thread whose connection ended parks again if fewer than `spare` wait
//! (so a churn of connections creates no threads at all), and exits
//! otherwise. When none is parked the acceptor starts a thread itself, as
//! before: the pool never queues a connection behind another.
//!
//! A parked thread gives its stack pages back first (`madvise`), so it costs
//! what a fresh one does (two touched pages) whatever its last connection
//! touched.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::net::CONN_STACK;

type Job = Box<dyn FnOnce() + Send>;

/// One parked thread: where its next job is put, and how to wake it.
struct Slot {
    job: Mutex<Option<Job>>,
    thread: Thread,
}

#[derive(Default)]
struct Idle {
    /// Parked threads, the most recently parked last (reused first).
    parked: Vec<Arc<Slot>>,
    /// Threads `cw-spawn` started that have not parked yet.
    coming: usize,
}

/// How many per-connection threads (connection threads and backlog
/// writers) may live at once. Every thread costs memory maps (see
/// [`maps_per_thread`]), and a process has `vm.max_map_count` of them
/// (65,530 by default): a thread whose signal stack cannot be mapped
/// aborts the whole process, and one whose stack cannot be mapped is not
/// started, so threads are refused before either happens, gracefully (the
/// connection is closed; a backlog writer's peer is dropped).
pub struct ThreadBudget {
    limit: usize,
    /// What set `limit`, for the operator: the setting or the system
    /// limit to raise.
    cause: &'static str,
    live: AtomicUsize,
}

/// Memory maps one thread costs (see [`ThreadBudget`]): its stack and
/// guard page, and, unless [`no_signal_stacks`] ran at start, the signal
/// stack and guard page Rust's runtime gives each thread.
pub fn maps_per_thread() -> usize {
    if NO_SIGNAL_STACKS.load(Ordering::Relaxed) {
        2
    } else {
        4
    }
}

static NO_SIGNAL_STACKS: AtomicBool = AtomicBool::new(false);

/// For chinwagd's start, before Rust's runtime starts (an `.init_array`
/// entry of the binary): give SIGSEGV and SIGBUS a handler of our own, so
/// the runtime, which only takes them over from the default disposition,
/// does not give every thread a signal stack (an mmap, an mprotect and a
/// sigaltstack at start, a munmap at exit, and two of the process's
/// `vm.max_map_count` maps: a third of a thread's creation, half its maps).
///
/// The handler restores the default disposition and returns: the faulting
/// instruction runs again and the process dies of the signal, as by
/// default. What is lost is the runtime's "thread has overflowed its
/// stack" line before the abort: an overflow now ends the process with a
/// plain SIGSEGV (the guard page below each stack is still there).
pub extern "C" fn no_signal_stacks() {
    extern "C" fn fault(_: libc::c_int) {
        // SAFETY: signal(2) is async-signal-safe; the default action then
        // applies when the instruction faults again.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
        }
    }
    let handler = fault as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only restores the defaults; this
    // runs before any thread exists.
    let ok = unsafe {
        libc::signal(libc::SIGSEGV, handler) != libc::SIG_ERR
            && libc::signal(libc::SIGBUS, handler) != libc::SIG_ERR
    };
    NO_SIGNAL_STACKS.store(ok, Ordering::Relaxed);
}
/// `prctl(2)` options of Linux 6.16+ (not in the `libc` crate yet): the
/// process's private futex hash.
const PR_FUTEX_HASH: libc::c_int = 78;
const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
const PR_FUTEX_HASH_GET_SLOTS: libc::c_ulong = 2;
/// The most buckets asked for (64 bytes of kernel memory each: 4 MiB).
const FUTEX_SLOTS_MAX: usize = 1 << 16;

/// Give the process a futex hash with a bucket per thread that may wait
/// on a futex at once (`threads`, rounded up to a power of two, at most
/// [`FUTEX_SLOTS_MAX`]), unless it has a larger one already; returns the
/// buckets it has afterwards, None where the kernel has no private futex
/// hash (before 6.16: every process shares the global one, 256 per CPU).
///
/// Since Linux 6.16 a process gets a hash of its own sized by its CPUs,
/// not its threads: 16 buckets on this 2-core machine. Every parked pool
/// thread (and every thread blocked on a lock) waits in one of them, and
/// every wake-up walks its bucket's whole list: with 10,000 parked spares
/// an unpark walked ~600 entries, tens of microseconds of the acceptor's
/// time per connection.
pub fn size_futex_hash(threads: usize) -> Option<usize> {
    let want = threads.clamp(16, FUTEX_SLOTS_MAX).next_power_of_two();
    // SAFETY: PR_FUTEX_HASH only reads its integer arguments.
    let have = unsafe { libc::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0) };
    if have < 0 {
        return None;
    }
    let have = have as usize;
    // 0: the process uses the global hash (a single thread so far, or set
    // so); resizing makes it private.
    if have >= want {
        return Some(have);
    }
    // SAFETY: as above; the kernel rehashes the waiters it holds.
    let set = unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            want as libc::c_ulong,
            0 as libc::c_ulong,
            0,
        )
    };
    if set != 0 {
        log::debug!(
            "cannot size the futex hash to {want} buckets: {}",
            std::io::Error::last_os_error()
        );
        return Some(have);
    }
    Some(want)
}

/// Maps kept for everything else (heap arenas, the store, libraries, and
/// stacks glibc keeps cached after their threads ended).
pub const MAPS_RESERVED: usize = 2048;

impl ThreadBudget {
    /// A budget of `limit` threads set by `max_threads`.
    pub fn new(limit: usize) -> Arc<ThreadBudget> {
        ThreadBudget::set_by(limit, "max_threads")
    }

    /// A budget of `limit` threads, `cause` naming what set it (a setting,
    /// or `vm.max_map_count`) in the error past it.
    pub fn set_by(limit: usize, cause: &'static str) -> Arc<ThreadBudget> {
        Arc::new(ThreadBudget {
            limit,
            cause,
            live: AtomicUsize::new(0),
        })
    }

    /// The threads `vm.max_map_count` leaves room for, given the maps in
    /// use now; None when /proc cannot tell.
    pub fn from_system() -> Option<usize> {
        let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let in_use = std::fs::read_to_string("/proc/self/maps")
            .ok()?
            .lines()
            .count();
        Some(threads_for_maps(max, in_use))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Per-connection threads alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Start a per-connection thread, unless the budget is spent.
    pub fn spawn(
        self: &Arc<Self>,
        builder: thread::Builder,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(std::io::Error::other(format!(
                "{} per-connection threads already ({})",
                self.limit, self.cause
            )));
        }
        struct Live(Arc<ThreadBudget>);
        impl Drop for Live {
            fn drop(&mut self) {
                self.0.live.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let live = Live(self.clone());
        match builder.spawn(move || {
            let _live = live;
            f();
        }) {
            Ok(_) => Ok(()),
            // The closure, and with it `live`, was dropped: counted back.
            Err(e) => Err(e),
        }
    }
}

/// Threads that fit in `max_map_count` maps when `in_use` are taken.
pub fn threads_for_maps(max_map_count: usize, in_use: usize) -> usize {
    max_map_count.saturating_sub(in_use + MAPS_RESERVED) / maps_per_thread()
}

struct Inner {
    idle: Mutex<Idle>,
    /// Signalled when fewer than half the spares are parked, or the pool stops.
    low: Condvar,
    spare: usize,
    stopping: AtomicBool,
    /// Connection threads started since the pool was made.
    started: AtomicU64,
    /// Threads `cw-spawn` started (also counted in `started`).
    refilled: AtomicU64,
    /// When a connection last asked for a thread: milliseconds since
    /// `epoch`, plus one (0: never).
    asked_at: AtomicU64,
    epoch: Instant,
    budget: Arc<ThreadBudget>,
}

/// `cw-spawn` starts no thread until no connection has asked for one for
/// this long: see [`refill`].
const BURST_QUIET: Duration = Duration::from_millis(100);

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long the connections arriving now still keep `cw-spawn` waiting.
    fn burst_left(&self) -> Option<Duration> {
        let at = self.asked_at.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let since = Duration::from_millis(self.now_ms().saturating_sub(at - 1));
        BURST_QUIET.checked_sub(since).filter(|d| !d.is_zero())
    }
}

/// The connection threads of every TCP dialect.
pub struct ConnPool {
    inner: Arc<Inner>,
    spawner: Mutex<Option<JoinHandle<()>>>,
}

/// The kernel's name of a thread waiting in the pool.
const IDLE_NAME: &str = "cw-conn";

impl ConnPool {
    /// Start the pool and its refilling thread, which starts the first
    /// `spare` threads in the background.
    pub fn new(spare: usize, budget: Arc<ThreadBudget>) -> std::io::Result<ConnPool> {
        let inner = Arc::new(Inner {
            idle: Mutex::new(Idle {
                parked: Vec::with_capacity(spare),
                coming: 0,
            }),
            low: Condvar::new(),
            spare,
            stopping: AtomicBool::new(false),
            started: AtomicU64::new(0),
            refilled: AtomicU64::new(0),
            asked_at: AtomicU64::new(0),
            epoch: Instant::now(),
            budget,
        });
        let spawner = if spare > 0 {
            let inner = inner.clone();
            Some(
                thread::Builder::new()
                    .name("cw-spawn".into())
                    .spawn(move || refill(&inner))?,
            )
        } else {
            None
        };
        Ok(ConnPool {
            inner,
            spawner: Mutex::new(spawner),
        })
    }

    /// Run `job` (a connection's whole life) on a thread of its own: a
    /// parked one if there is one, else a new one. `name` is what the
    /// kernel calls the thread meanwhile (`ps -L`, `top -H`).
    pub fn run(
        &self,
        name: &'static str,
        job: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let job: Job = Box::new(move || {
            set_thread_name(name);
            job();
        });
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(std::io::Error::other("the server is stopping"));
        }
        let now = self.inner.now_ms() + 1;
        self.inner.asked_at.store(now, Ordering::Relaxed);
        let slot = {
            let mut idle = self.inner.idle.lock();
            let slot = idle.parked.pop();
            if idle.parked.len() + idle.coming < self.inner.spare.div_ceil(2) {
                self.inner.low.notify_one();
            }
            slot
        };
        match slot {
            Some(slot) => {
                *slot.job.lock() = Some(job);
                slot.thread.unpark();
                Ok(())
            }
            None => spawn(&self.inner, Some(job)),
        }
    }

    /// Threads parked right now.
    pub fn idle(&self) -> usize {
        self.inner.idle.lock().parked.len()
    }

    /// Connection threads started so far (parked ones included).
    pub fn started(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// Of those, the threads `cw-spawn` started.
    pub fn refilled(&self) -> u64 {
        self.inner.refilled.load(Ordering::Relaxed)
    }

    /// Stop refilling and let every parked thread exit. Threads still
    /// serving a connection exit when it ends.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let parked: Vec<_> = {
            let mut idle = self.inner.idle.lock();
            self.inner.low.notify_all();
            idle.parked.drain(..).collect()
        };
        for slot in parked {
            slot.thread.unpark();
        }
        if let Some(t) = self.spawner.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for ConnPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cw-spawn`: once fewer than half the spares are parked (or coming),
/// start threads until `spare` are. Waiting for half leaves the threads of
/// short connections the time to come back and park: a churn of fewer
/// connections at once than half the spares starts no thread at all.
///
/// Not while connections keep arriving (one asked for a thread less than
/// [`BURST_QUIET`] ago): in a burst that outruns the spares, a spare
/// started meanwhile only takes the same two cores as the acceptor's own
/// thread creation, and adds a hand-over (park, unpark) before the
/// connection it serves; a burst of 10,000 logins was 10 % slower with the
/// refill running. It refills once they stop. Threads whose connection
/// ended still park at once (up to `spare`): a churn reuses them.
fn refill(inner: &Arc<Inner>) {
    let low = inner.spare.div_ceil(2);
    let mut filling = true;
    let mut failing = false;
    loop {
        {
            let mut idle = inner.idle.lock();
            loop {
                if inner.stopping.load(Ordering::Acquire) {
                    return;
                }
                let have = idle.parked.len() + idle.coming;
                if have >= inner.spare {
                    filling = false;
                } else if have < low {
                    filling = true;
                }
                if filling {
                    match inner.burst_left() {
                        None => break,
                        Some(wait) => {
                            inner.low.wait_for(&mut idle, wait);
                            continue;
                        }
                    }
                }
                inner.low.wait(&mut idle);
            }
            idle.coming += 1;
        }
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let spawned = spawn(inner, None);
        if spawned.is_ok() {
            inner.refilled.fetch_add(1, Ordering::Relaxed);
        }
        match spawned {
            Ok(()) if failing => {
                failing = false;
                log::info!("spare connection threads start again");
            }
            Ok(()) => {}
            Err(e) => {
                // Out of threads, maps or memory: said once, then tried
                // again now and then (a connection ending frees a thread).
                if !failing {
                    failing = true;
                    log::warn!("cannot start a spare connection thread: {e}");
                }
                let mut idle = inner.idle.lock();
                idle.coming -= 1;
                inner.low.wait_for(&mut idle, Duration::from_millis(100));
            }
        }
    }
}

fn spawn(inner: &Arc<Inner>, first: Option<Job>) -> std::io::Result<()> {
    let inner2 = inner.clone();
    let builder = thread::Builder::new()
        .name(IDLE_NAME.into())
        .stack_size(CONN_STACK);
    inner
        .budget
        .spawn(builder, move || serve_jobs(&inner2, first))?;
    inner.started.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A pool thread: run the job it was started with, if any, then park and
/// run the jobs it is handed until the pool has enough parked threads
/// without it.
fn serve_jobs(inner: &Inner, mut job: Option<Job>) {
    let slot = Arc::new(Slot {
        job: Mutex::new(None),
        thread: thread::current(),
    });
    let stack = stack::Stack::current();
    // Started by `cw-spawn` (no first job): counted as coming until parked.
    let mut coming = job.is_none();
    loop {
        if let Some(j) = job.take() {
            // A panic ends this thread, as it did when every connection
            // had a thread of its own; the pool starts another.
            j();
            set_thread_name(IDLE_NAME);
        }
        if inner.stopping.load(Ordering::Acquire) {
            if coming {
                inner.idle.lock().coming -= 1;
            }
            return;
        }
        if let Some(s) = &stack {
            s.release_unused();
        }
        {
            let mut idle = inner.idle.lock();
            if coming {
                idle.coming -= 1;
                coming = false;
            }
            // A thread coming back from a connection parks before one
            // still coming from `cw-spawn`: reuse costs nothing.
            if idle.parked.len() >= inner.spare {
                return;
            }
            idle.parked.push(slot.clone());
        }
        loop {
            if let Some(j) = slot.job.lock().take() {
                job = Some(j);
                break;
            }
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            thread::park();
        }
    }
}

/// Set the calling thread's name as the kernel shows it (at most 15 bytes).
fn set_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from the buffer we pass, which outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Give back the calling thread's stack pages below the caller's frame,
/// if it is a pool thread and any were touched (see `stack`). Cheap when
/// none were: one read of the page below, no system call.
pub fn release_stack() {
    stack::STACK_LOW.with(|low| {
        if let Some(s) = stack::Stack::from_low(low.get()) {
            s.release_unused();
        }
    });
}

pub mod stack {
    //! Giving back the stack pages a thread touched and no longer uses.

    use std::cell::Cell;

    thread_local! {
        /// The lowest usable address of this pool thread's stack (0: unknown).
        pub(super) static STACK_LOW: Cell<usize> = const { Cell::new(0) };
    }

    /// A thread's stack: its lowest usable address (above the guard page).
    pub struct Stack {
        low: usize,
    }

    const PAGE: usize = 4096;
    /// What may lie below the deepest frame while it calls madvise(2): the
    /// call's return address and the wrapper's own use of the red zone.
    const MARGIN: usize = 512;

    /// Whether the page at `page` (page-aligned, inside a mapping) has
    /// memory behind it; true when the kernel cannot tell.
    pub fn mapped(page: usize) -> bool {
        let mut v = 0u8;
        // SAFETY: mincore reads nothing of the page and writes one byte
        // (one page asked about) into `v`.
        let r = unsafe { libc::mincore(page as *mut libc::c_void, PAGE, &mut v) };
        r != 0 || v & 1 != 0
    }

    impl Stack {
        /// The calling thread's stack, remembered for [`super::release_stack`].
        pub fn current() -> Option<Stack> {
            // SAFETY: pthread_getattr_np fills the attribute object we pass
            // (destroyed below); pthread_attr_getstack reads it.
            let low = unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                    return None;
                }
                let mut addr = std::ptr::null_mut();
                let mut size = 0;
                let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
                libc::pthread_attr_destroy(&mut attr);
                if !ok {
                    return None;
                }
                addr as usize
            };
            STACK_LOW.with(|l| l.set(low));
            Some(Stack { low })
        }

        /// Its lowest usable address.
        pub fn low(&self) -> usize {
            self.low
        }

        pub(super) fn from_low(low: usize) -> Option<Stack> {
            (low != 0).then_some(Stack { low })
        }

        /// Give back every page wholly below the caller's frame: they hold
        /// nothing live (the stack grows down, and this frame is the
        /// deepest), so until they are used again they cost no memory. The
        /// stack is used from the top down without gaps, so when the page
        /// just below is not mapped, nothing below was touched since the
        /// last release and there is nothing to give back.
        ///
        /// The page is asked about (`mincore`), not read: reading a page
        /// never touched maps the shared zero page there, and the first
        /// write to it later (the next login's frames) is then a
        /// copy-on-write fault whose TLB flush interrupts the other CPU,
        /// where a fault on an unmapped page needs no flush.
        #[inline(never)]
        pub fn release_unused(&self) {
            let here = 0u8;
            let sp = std::hint::black_box(&here) as *const u8 as usize;
            self.release_below(sp.saturating_sub(MARGIN) & !(PAGE - 1));
        }

        /// Give back the pages from the stack's low end to `end` (a page
        /// boundary below every live frame of this thread), unless the page
        /// just below `end` is unmapped (nothing below it was touched).
        #[inline(never)]
        pub(in crate::pool) fn release_below(&self, end: usize) {
            if end <= self.low {
                return;
            }
            if !mapped(end - PAGE) {
                return;
            }
            // SAFETY: [low, end) lies inside this thread's own stack, below
            // every live frame (at least MARGIN below this one, and nothing
            // runs on this stack while the call lasts); MADV_DONTNEED on
            // private anonymous memory only drops the pages' contents.
            unsafe {
                libc::madvise(
                    self.low as *mut libc::c_void,
                    end - self.low,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_spares_start_in_the_background_and_serve_one_connection_each() {
        let pool = ConnPool::new(4, ThreadBudget::new(usize::MAX)).unwrap();
        wait_until("4 parked", || pool.idle() == 4);
        assert_eq!(pool.started(), 4);
        // Four connections at once take the four parked threads.
        let barrier = Arc::new(Barrier::new(5));
        for _ in 0..4 {
            let b = barrier.clone();
            pool.run("cw-test", move || {
                b.wait();
            })
            .unwrap();
        }
        barrier.wait();
        pool.stop();
    }

    #[test]
    fn a_churn_of_connections_starts_no_threads() {
        let pool = ConnPool::new(2, ThreadBudget::new(usize::MAX)).unwrap();
        wait_until("2 parked", || pool.idle() == 2);
        for _ in 0..50 {
            let (tx, rx) = crossbeam_channel::bounded(1);
            pool.run("cw-test", move || tx.send(()).unwrap()).unwrap();
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
            wait_until("the thread parks again", || pool.idle() == 2);
        }
        assert_eq!(pool.started(), 2, "threads were reused");
        pool.stop();
    }

    #[test]
    fn a_burst_past_the_spares_gets_a_thread_each_and_the_extra_ones_exit() {
        let pool = ConnPool::new(1, ThreadBudget::new(usize::MAX)).unwrap();
        wait_until("1 parked", || pool.idle() == 1);
        // Ten connections at once, each holding its thread until all run.
        let barrier = Arc::new(Barrier::new(11));
        for _ in 0..10 {
            let b = barrier.clone();
            pool.run("cw-test", move || {
                b.wait();
            })
            .unwrap();
        }
        barrier.wait();
        wait_until("back to one parked", || pool.idle() == 1);
        assert!(pool.started() >= 10);
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter(|t| {
                    let comm = t.as_ref().unwrap().path().join("comm");
                    std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == IDLE_NAME)
                })
                .count()
        };
        // The nine extra threads end instead of parking (other tests' pools
        // may have threads of the same name: count only a drop).
        wait_until("the extra threads exit", || threads() < 10);
        pool.stop();
    }

    #[test]
    fn a_burst_past_the_spares_is_served_inline_and_the_refill_waits_for_its_end() {
        let pool = ConnPool::new(2, ThreadBudget::new(usize::MAX)).unwrap();
        wait_until("2 spares", || pool.idle() == 2 && pool.refilled() == 2);
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        // 40 connections, one a millisecond, each keeping its thread: the
        // first two take the spares, the others get threads inline.
        let mut last = Instant::now();
        let mut longest_gap = Duration::ZERO;
        for _ in 0..40 {
            let hold = hold.clone();
            pool.run("cw-test", move || {
                let _ = hold.recv();
            })
            .unwrap();
            longest_gap = longest_gap.max(last.elapsed());
            last = Instant::now();
            thread::sleep(Duration::from_millis(1));
        }
        let refilled = pool.refilled();
        // (A stall of this thread as long as BURST_QUIET ends the burst as
        // far as the pool can tell; none happens on a machine in order.)
        if longest_gap < BURST_QUIET / 2 {
            assert_eq!(refilled, 2, "spares were started during the burst");
        }
        // Once it is over, the spares come back (the 40 still run).
        wait_until("2 spares again", || {
            pool.idle() == 2 && pool.refilled() == refilled + 2
        });
        drop(release);
        pool.stop();
    }

    /// The resident size of the mapping that holds `addr` (/proc/self/smaps).
    fn rss_kib_of_mapping(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= addr && addr < b;
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("Rss:") {
                    return v.trim().trim_end_matches("kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[inline(never)]
    fn deep(n: usize) -> u64 {
        let mut a = [0u8; 1024];
        a[n % 1024] = n as u8;
        let a = std::hint::black_box(a);
        if n == 0 {
            a[0] as u64
        } else {
            deep(n - 1) + a[7] as u64
        }
    }

    #[test]
    fn a_parked_thread_gives_back_the_stack_its_connection_touched() {
        let pool = ConnPool::new(1, ThreadBudget::new(usize::MAX)).unwrap();
        wait_until("1 parked", || pool.idle() == 1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.run("cw-test", move || {
            // Tens of KiB of stack, as a deep request could touch.
            std::hint::black_box(deep(32));
            let low = stack::Stack::current().unwrap().low();
            tx.send((low, rss_kib_of_mapping(low))).unwrap();
        })
        .unwrap();
        let (low, busy) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(busy >= 32, "the job touched its stack: {busy} KiB");
        wait_until("parked again", || pool.idle() == 1);
        // Parked: the top pages (thread control block, the parked frames)
        // and nothing of what the job touched below.
        let parked = rss_kib_of_mapping(low);
        assert!(parked <= 12, "{parked} KiB still resident");
        pool.stop();
    }

    /// Whether the page at `addr` is mapped, the shared zero page included
    /// (/proc/self/pagemap: bit 63 of the page's entry).
    fn page_present(addr: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
        f.seek(SeekFrom::Start((addr / 4096 * 8) as u64)).unwrap();
        let mut e = [0u8; 8];
        f.read_exact(&mut e).unwrap();
        u64::from_le_bytes(e) >> 63 == 1
    }

    #[test]
    fn looking_for_pages_to_give_back_maps_none() {
        // Reading an untouched stack page maps the zero page there, and the
        // next write to it is a copy-on-write fault with a TLB flush on
        // every CPU: the check must not touch the pages below.
        let pool = ConnPool::new(0, ThreadBudget::new(usize::MAX)).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.run("cw-test", move || {
            let here = 0u8;
            let sp = std::hint::black_box(&here) as *const u8 as usize;
            let stack = stack::Stack::current().unwrap();
            // A boundary well below this frame: nothing under it was used.
            let end = (sp - 16 * 1024) & !4095;
            let mapped = || {
                (stack.low()..end)
                    .step_by(4096)
                    .filter(|&p| page_present(p))
                    .collect::<Vec<usize>>()
            };
            let before = mapped();
            stack.release_below(end);
            tx.send((before, mapped())).unwrap();
        })
        .unwrap();
        let (before, after) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(before.is_empty(), "untouched pages mapped: {before:x?}");
        assert!(after.is_empty(), "pages mapped by the check: {after:x?}");
        pool.stop();
    }

    #[test]
    fn threads_past_the_budget_are_refused_and_counted_back() {
        assert_eq!(
            threads_for_maps(65_530, 500),
            (65_530 - 500 - MAPS_RESERVED) / 4
        );
        assert_eq!(threads_for_maps(1_000, 500), 0);
        let budget = ThreadBudget::new(3);
        let pool = ConnPool::new(0, budget.clone()).unwrap();
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        for _ in 0..3 {
            let hold = hold.clone();
            pool.run("cw-test", move || {
                let _ = hold.recv();
            })
            .unwrap();
        }
        assert_eq!(budget.live(), 3);
        let refused = pool.run("cw-test", || {}).expect_err("a fourth thread");
        // The operator is told what to raise: the setting that set it.
        assert_eq!(
            refused.to_string(),
            "3 per-connection threads already (max_threads)"
        );
        assert_eq!(budget.live(), 3);
        drop(release); // the three jobs end, their threads exit (no spares)
        wait_until("threads gone", || budget.live() == 0);
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.run("cw-test", move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        pool.stop();
    }
}
