//! Each store job runs alone inside the group transaction: in a SAVEPOINT of
//! its own, behind a panic boundary. A job that panics, or one of whose
//! statements fails, is rolled back alone (the group's other jobs still
//! commit), is logged, and its `after` is told `false`; the store thread
//! carries on. An `after` that panics is logged and the next one runs.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::sql::Link;
use super::{After, Db, Job};

/// Run one job in its own savepoint. Returns its `after` (to be told
/// `false` if the job failed) and whether the transaction is still sound
/// (false only when a rollback to the savepoint itself failed).
pub(super) fn run_job(link: Link<'_>, job: Job) -> (Option<After>, bool) {
    if let Err(e) = link.batch("SAVEPOINT job") {
        log::error!("store: cannot open a savepoint: {e}; the job is refused");
        return (None, true);
    }
    let db = Db {
        link,
        failed: std::cell::Cell::new(false),
    };
    let result = catch_unwind(AssertUnwindSafe(|| job(&db)));
    let failed = db.failed.get() || result.is_err();
    let closed = if failed {
        link.batch("ROLLBACK TO job; RELEASE job")
    } else {
        link.batch("RELEASE job")
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
