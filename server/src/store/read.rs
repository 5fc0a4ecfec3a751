//! Reads that need no writer (history pages, the account a login names) run
//! on a small pool of read connections to the same WAL database, on the
//! requesting connection's own thread: a reader sees the last committed
//! state and never waits for, or delays, the store thread's group commits.
//! An in-memory database (":memory:") cannot be shared between connections,
//! so it has no pool and those reads stay on the store thread.

use std::path::Path;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use rusqlite::{Connection, OpenFlags};

use super::{Db, StoreError};

/// Read connections per database: one per core of the target machine.
pub const READERS: usize = 2;
/// How long a read waits for a free connection before giving up ("busy").
const WAIT: Duration = Duration::from_secs(5);

pub struct ReadPool {
    give: Sender<Connection>,
    take: Receiver<Connection>,
}

impl ReadPool {
    /// `n` read connections to the database at `path`, which the store has
    /// already opened and migrated; None for an in-memory database.
    pub fn open(path: &Path, n: usize) -> rusqlite::Result<Option<ReadPool>> {
        if path.as_os_str() == ":memory:" || path.as_os_str().is_empty() {
            return Ok(None);
        }
        let (give, take) = bounded(n.max(1));
        for _ in 0..n.max(1) {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            // Reads only: a bug that tried to write here fails loudly.
            c.pragma_update(None, "query_only", true)?;
            c.busy_timeout(WAIT)?;
            give.send(c).expect("room for every connection");
        }
        Ok(Some(ReadPool { give, take }))
    }

    /// Run `f` on a read connection, in a read transaction of its own.
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> T) -> Result<T, StoreError> {
        let mut conn = self.take.recv_timeout(WAIT).map_err(|_| StoreError::Busy)?;
        let result = match conn.transaction() {
            Ok(tx) => {
                let db = Db {
                    tx: &tx,
                    failed: std::cell::Cell::new(false),
                };
                let v = f(&db);
                let _ = tx.rollback();
                Ok(v)
            }
            Err(e) => {
                log::error!("store: cannot begin a read: {e}");
                Err(StoreError::Busy)
            }
        };
        let _ = self.give.send(conn);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, HISTORY_SQL};
    use super::*;

    #[test]
    fn a_history_page_is_one_range_of_the_conversation_index() {
        let dir = std::env::temp_dir().join(format!("cw-read-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let (s, t) = Store::open(&path).unwrap();
        // Committed before the pool reads (`call` answers before the commit).
        let ((a, b), committed) = s
            .call_committed(|db| {
                let a = db.create_account("a@x.org", "a", "h").unwrap();
                let b = db.create_account("b@x.org", "b", "h").unwrap();
                for i in 0..10 {
                    db.insert_message(a, b, &format!("m{i}"), true);
                    db.insert_message(b, a, &format!("r{i}"), true);
                }
                (a, b)
            })
            .unwrap();
        assert!(committed);
        let pool = ReadPool::open(&path, 2)
            .unwrap()
            .expect("a file has a pool");
        let plan: Vec<String> = pool
            .read(|db| {
                let mut st = db
                    .tx
                    .prepare(&format!("EXPLAIN QUERY PLAN {HISTORY_SQL}"))
                    .unwrap();
                let rows = st
                    .query_map(rusqlite::params![1, 2, 100, 10], |r| r.get::<_, String>(3))
                    .unwrap();
                rows.map(Result::unwrap).collect()
            })
            .unwrap();
        let plan = plan.join(" | ");
        assert!(plan.contains("messages_conversation"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        // The pool sees what the store committed; both directions, in order.
        let page = pool.read(|db| db.history(b, a, 0, 4)).unwrap();
        let texts: Vec<&str> = page.iter().map(|m| m.2.as_str()).collect();
        assert_eq!(texts, vec!["m8", "r8", "m9", "r9"]);
        // And cannot write.
        let wrote = pool
            .read(|db| db.create_account("c@x.org", "c", "h"))
            .unwrap();
        assert!(wrote.is_err());
        s.stop();
        t.join();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
