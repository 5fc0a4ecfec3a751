//! Spending a server's thread budget (`max_threads`) in a test: threads
//! that hold what is left of it until dropped. Kept out of common/mod.rs,
//! which the benchmark also includes without chinwagd.

/// Threads holding what is left of `srv`'s thread budget until dropped.
pub struct Spent {
    _held: Vec<std::sync::mpsc::Sender<()>>,
}

pub fn spend(srv: &chinwagd::Server) -> Spent {
    let budget = srv.thread_budget();
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
    Spent { _held: held }
}
