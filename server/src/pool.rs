//! Pre-started connection threads.
//!
//! Every TCP connection still has a thread of its own for its whole life;
//! what changes is where the thread comes from. Creating one costs tens of
//! microseconds (`clone`, a stack, a kernel stack, a signal stack) on the
//! acceptor's path, serially, which is what bounded a burst of logins. The
//! pool keeps up to `spare` threads parked and ready: the acceptor hands a
//! connection to one with an unpark, and a background thread (`cw-spawn`)
//! starts new ones while fewer than `spare` wait. A thread whose connection
//! ended parks again if fewer than `spare` wait (so a churn of connections
//! creates no threads at all), and exits otherwise. When none is parked the
//! acceptor starts a thread itself, as before: the pool never queues a
//! connection behind another.
//!
//! A parked thread gives its stack pages back first (`madvise`), so it costs
//! what a fresh one does (two touched pages) whatever its last connection
//! touched.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};

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

struct Inner {
    idle: Mutex<Idle>,
    /// Signalled when `idle` falls below `spare` or the pool stops.
    low: Condvar,
    spare: usize,
    stopping: AtomicBool,
    /// Connection threads started since the pool was made.
    started: AtomicU64,
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
    pub fn new(spare: usize) -> std::io::Result<ConnPool> {
        let inner = Arc::new(Inner {
            idle: Mutex::new(Idle {
                parked: Vec::with_capacity(spare),
                coming: 0,
            }),
            low: Condvar::new(),
            spare,
            stopping: AtomicBool::new(false),
            started: AtomicU64::new(0),
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
    pub fn run(&self, name: &'static str, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let job: Job = Box::new(move || {
            set_thread_name(name);
            job();
        });
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(std::io::Error::other("the server is stopping"));
        }
        let slot = {
            let mut idle = self.inner.idle.lock();
            let slot = idle.parked.pop();
            if idle.parked.len() + idle.coming < self.inner.spare {
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

/// `cw-spawn`: keep `spare` threads parked.
fn refill(inner: &Arc<Inner>) {
    loop {
        {
            let mut idle = inner.idle.lock();
            while idle.parked.len() + idle.coming >= inner.spare
                && !inner.stopping.load(Ordering::Acquire)
            {
                inner.low.wait(&mut idle);
            }
            idle.coming += 1;
        }
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = spawn(inner, None) {
            // Out of threads or memory: the acceptor's own spawn reports it
            // per connection; here, wait a little before trying again.
            log::warn!("cannot start a spare connection thread: {e}");
            let mut idle = inner.idle.lock();
            idle.coming -= 1;
            inner
                .low
                .wait_for(&mut idle, std::time::Duration::from_millis(100));
        }
    }
}

fn spawn(inner: &Arc<Inner>, first: Option<Job>) -> std::io::Result<()> {
    let inner2 = inner.clone();
    thread::Builder::new()
        .name(IDLE_NAME.into())
        .stack_size(CONN_STACK)
        .spawn(move || serve_jobs(&inner2, first))?;
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

pub mod stack {
    //! Giving back the stack pages a thread touched and no longer uses.

    /// The calling thread's stack: its lowest usable address (above the
    /// guard page).
    pub struct Stack {
        low: usize,
    }

    const PAGE: usize = 4096;

    impl Stack {
        pub fn current() -> Option<Stack> {
            // SAFETY: pthread_getattr_np fills the attribute object we pass
            // (destroyed below); pthread_attr_getstack reads it.
            unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                    return None;
                }
                let mut addr = std::ptr::null_mut();
                let mut size = 0;
                let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
                libc::pthread_attr_destroy(&mut attr);
                ok.then_some(Stack { low: addr as usize })
            }
        }

        /// Give back every page more than one page below the caller's frame:
        /// they hold nothing live (the stack grows down, and this frame is
        /// the deepest one), so the next use finds them zeroed, and until
        /// then they cost no memory.
        #[inline(never)]
        pub fn release_unused(&self) {
            let here = 0u8;
            let sp = std::hint::black_box(&here) as *const u8 as usize;
            let end = (sp.saturating_sub(PAGE)) & !(PAGE - 1);
            if end <= self.low {
                return;
            }
            // SAFETY: [low, end) lies inside this thread's own stack, below
            // every live frame (at least a page below this one, and nothing
            // runs on this stack while the call lasts); MADV_DONTNEED on
            // private anonymous memory only drops the pages' contents.
            unsafe {
                libc::madvise(self.low as *mut libc::c_void, end - self.low, libc::MADV_DONTNEED);
            }
        }
    }
}
