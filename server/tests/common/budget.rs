//! Spending a server's thread budget (`max_threads`) in a test: threads
//! that hold what is left of it until dropped. Kept out of common/mod.rs,
//! which the benchmark also includes without chinwagd.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads holding what is left of `srv`'s thread budget until dropped.
/// Dropping it gives the threads back *before* it returns: each holding
/// thread ends asynchronously, and a test that goes on at once (a call
/// that needs a thread) would otherwise race their exits and find the
/// budget still spent.
pub struct Spent {
    held: Vec<std::sync::mpsc::Sender<()>>,
    budget: Arc<chinwagd::pool::ThreadBudget>,
    /// The budget's live count once the holders are gone.
    back_to: usize,
}

pub fn spend(srv: &chinwagd::Server) -> Spent {
    let budget = srv.thread_budget().clone();
    let back_to = budget.live();
    let mut held = Vec::new();
    loop {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let hold = std::thread::Builder::new().name("test-hold".into());
        if budget
            .spawn(hold, move || {
                let _ = rx.recv();
            })
            .is_err()
        {
            break;
        }
        held.push(tx);
        assert!(held.len() < 1_000, "a small budget");
    }
    assert_eq!(budget.live(), budget.limit());
    Spent {
        held,
        budget,
        back_to,
    }
}

impl Drop for Spent {
    fn drop(&mut self) {
        self.held.clear();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.budget.live() > self.back_to {
            if Instant::now() > deadline {
                // Not a panic in drop while a test is already panicking.
                if !std::thread::panicking() {
                    panic!(
                        "the holding threads did not give the budget back: {} live, {} expected",
                        self.budget.live(),
                        self.back_to
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
