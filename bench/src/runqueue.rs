//! Run-queue readings of a process's threads (`/proc/PID/task/*/schedstat`),
//! for the figures every workload prints beside its CPU figures.

use std::collections::HashMap;
use std::time::Duration;

/// The run-queue counters of a process's threads, by thread id: time spent
/// runnable but waiting for a CPU, and how many times the thread was put on
/// one (`/proc/PID/task/TID/schedstat`: on-CPU ns, waiting ns, time
/// slices). Two readings give the mean wait per time slice between them:
/// how long a thread woken (by a message, say) waited before it ran, which
/// is where a latency goes that the thread's own work does not explain.
#[derive(Clone, Debug, Default)]
pub struct RunQueue(HashMap<u32, (u64, u64)>);

impl RunQueue {
    /// The counters of every thread of `pid` now (None: no such process,
    /// or a kernel without schedstat).
    pub fn read(pid: u32) -> Option<RunQueue> {
        let mut threads = HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread may end between the listing and the read.
            let Ok(line) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            if let Some(counts) = parse_schedstat(&line) {
                threads.insert(tid, counts);
            }
        }
        (!threads.is_empty()).then_some(RunQueue(threads))
    }

    /// The mean run-queue wait per time slice from `self` to `later`, over
    /// the threads alive at both readings, and the time slices counted
    /// (None: none).
    pub fn wait_per_slice(&self, later: &RunQueue) -> Option<(Duration, u64)> {
        let (mut wait, mut slices) = (0u64, 0u64);
        for (tid, &(w1, s1)) in &later.0 {
            if let Some(&(w0, s0)) = self.0.get(tid) {
                wait += w1.saturating_sub(w0);
                slices += s1.saturating_sub(s0);
            }
        }
        (slices > 0).then(|| (Duration::from_nanos(wait / slices), slices))
    }
}

/// (waiting ns, time slices) from a schedstat line.
fn parse_schedstat(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace().skip(1);
    let wait = f.next()?.parse().ok()?;
    let slices = f.next()?.parse().ok()?;
    Some((wait, slices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_give_wait_and_slices() {
        assert_eq!(parse_schedstat("875266 85993 2\n"), Some((85993, 2)));
        assert_eq!(parse_schedstat("875266\n"), None);
        assert_eq!(parse_schedstat("a b c"), None);
    }

    #[test]
    fn run_queue_wait_counts_the_time_slices_of_threads_alive_at_both_readings() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (back, done) = std::sync::mpsc::channel::<()>();
        // A thread alive across both readings, woken 50 times in between.
        let t = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                back.send(()).unwrap();
            }
        });
        let before = RunQueue::read(std::process::id()).expect("schedstat of this process");
        for _ in 0..50 {
            tx.send(()).unwrap();
            done.recv().unwrap();
        }
        let after = RunQueue::read(std::process::id()).unwrap();
        let (_, slices) = before.wait_per_slice(&after).expect("time slices counted");
        // Each wake-up of the thread (and of this one) is a time slice.
        assert!(slices >= 50, "{slices} time slices for 50 wake-ups");
        // A thread that only exists in the later reading is not counted whole.
        let mut later = after.clone();
        later.0.insert(u32::MAX, (1_000_000_000_000, 1));
        assert_eq!(after.wait_per_slice(&later), None);
        drop(tx);
        t.join().unwrap();
    }
}
