//! Each store job runs alone inside the group transaction: in a SAVEPOINT of
//! its own, behind a panic boundary. A job that panics, or one of whose
//! statements fails, is rolled back alone (the group's other jobs still
//! commit), is logged, and its `after` is told `false`; the store thread
//! carries on. An `after` that panics is logged and the next one runs.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rusqlite::Transaction;

use super::{After, Db, Job};

/// Run one job in its own savepoint. Returns its `after` (to be told
/// `false` if the job failed) and whether the transaction is still sound
/// (false only when a rollback to the savepoint itself failed).
pub(super) fn run_job(tx: &Transaction<'_>, job: Job) -> (Option<After>, bool) {
    if let Err(e) = tx.execute_batch("SAVEPOINT job") {
        log::error!("store: cannot open a savepoint: {e}; the job is refused");
        return (None, true);
    }
    let db = Db {
        tx,
        failed: std::cell::Cell::new(false),
    };
    let result = catch_unwind(AssertUnwindSafe(|| job(&db)));
    let failed = db.failed.get() || result.is_err();
    let closed = if failed {
        tx.execute_batch("ROLLBACK TO job; RELEASE job")
    } else {
        tx.execute_batch("RELEASE job")
    };
    let sound = match closed {
        Ok(()) => true,
        Err(e) => {
            log::error!("store: cannot close a job's savepoint: {e}");
            false
        }
    };
    match result {
        Ok(after) if failed => {
            log::error!("store: a job failed and was rolled back alone");
            let after = after.map(|a| Box::new(move |_committed: bool| a(false)) as After);
            (after, sound)
        }
        Ok(after) => (after, sound),
        Err(panic) => {
            log::error!(
                "store: a job panicked ({}); its writes were rolled back, the store carries on",
                panic_text(&*panic)
            );
            (None, sound)
        }
    }
}

/// Run an `after` behind a panic boundary.
pub(super) fn run_after(after: After, committed: bool) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| after(committed))) {
        log::error!(
            "store: the reply part of a job panicked ({}); the store carries on",
            panic_text(&*panic)
        );
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use crossbeam_channel::bounded;

    use super::super::{After, Store};

    type TestJob = Box<dyn FnOnce(&super::Db) -> Option<After> + Send>;

    /// Queue `jobs` behind a blocker so they all run in one group.
    fn one_group(s: &Store, jobs: Vec<TestJob>) {
        let (go, wait) = bounded::<()>(0);
        s.submit(move |_| {
            let _ = wait.recv();
            None
        })
        .unwrap();
        for j in jobs {
            s.submit(j).unwrap();
        }
        go.send(()).unwrap();
    }

    #[test]
    fn a_panicking_job_is_rolled_back_alone_and_the_store_carries_on() {
        let (s, t) = Store::open(Path::new(":memory:")).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        let (t1, t3) = (told.clone(), told.clone());
        one_group(
            &s,
            vec![
                Box::new(move |db| {
                    db.create_account("a@x.org", "a", "h").unwrap();
                    Some(Box::new(move |ok| t1.lock().unwrap().push(("a", ok))) as After)
                }),
                Box::new(|db| {
                    db.create_account("p@x.org", "p", "h").unwrap();
                    panic!("injected failure");
                }),
                Box::new(move |db| {
                    db.create_account("b@x.org", "b", "h").unwrap();
                    Some(Box::new(move |ok| t3.lock().unwrap().push(("b", ok))) as After)
                }),
            ],
        );
        // The store thread is alive and sees exactly the two good rows.
        let names = s.call(|db| db.all_pseudos()).unwrap();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(*told.lock().unwrap(), vec![("a", true), ("b", true)]);
        // Panics in a reply part are contained too.
        s.submit(|_| Some(Box::new(|_| panic!("injected in after")) as After))
            .unwrap();
        assert_eq!(s.call(|db| db.account_id("a")).unwrap(), Some(1));
        s.stop();
        t.join();
    }

    #[test]
    fn a_job_whose_write_fails_is_rolled_back_and_told_so() {
        let (s, t) = Store::open(Path::new(":memory:")).unwrap();
        let (tx, rx) = bounded(4);
        let tx2 = tx.clone();
        one_group(
            &s,
            vec![
                Box::new(move |db| {
                    let a = db.create_account("w@x.org", "w", "h").unwrap();
                    // A notice for an account that does not exist: the
                    // foreign key refuses it, so the whole job must go.
                    db.add_notice(a + 1000, 131, "w");
                    Some(Box::new(move |ok| tx.send(("w", ok)).unwrap()) as After)
                }),
                Box::new(move |db| {
                    db.create_account("k@x.org", "k", "h").unwrap();
                    Some(Box::new(move |ok| tx2.send(("k", ok)).unwrap()) as After)
                }),
            ],
        );
        assert_eq!(rx.recv().unwrap(), ("w", false));
        assert_eq!(rx.recv().unwrap(), ("k", true));
        assert_eq!(s.call(|db| db.all_pseudos()).unwrap(), vec!["k"]);
        s.stop();
        t.join();
    }
}
