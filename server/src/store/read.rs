//! Reads that need no writer (history pages, the account a login names) run
//! on a small pool of read connections, on the requesting connection's own
//! thread: a reader sees the last committed state and never waits for, or
//! delays, the store thread's group commits. SQLite: connections to the same
//! WAL file (an in-memory database cannot be shared between connections, so
//! it has no pool and those reads stay on the store thread). PostgreSQL:
//! sessions of their own, each read in a READ ONLY transaction.

use std::path::Path;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use rusqlite::{Connection, OpenFlags};

use super::pg::{PgSession, PgTarget};
use super::sql::Link;
use super::{Db, StoreError};

/// Read connections per database: one per core of the target machine.
pub const READERS: usize = 2;
/// How long a read waits for a free connection before giving up ("busy").
const WAIT: Duration = Duration::from_secs(5);

/// One read connection. A PostgreSQL one that broke is opened anew the
/// next time it is borrowed.
enum Reader {
    Lite(Connection),
    Pg(Box<PgSession>),
}

impl Reader {
    /// Begin a read-only transaction.
    fn begin(&mut self) -> Result<Link<'_>, String> {
        match self {
            Reader::Lite(c) => Link::Lite(c).batch("BEGIN").map(|()| Link::Lite(c)),
            Reader::Pg(session) => session.begin("BEGIN READ ONLY"),
        }
    }
}

pub struct ReadPool {
    give: Sender<Reader>,
    take: Receiver<Reader>,
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
            c.set_prepared_statement_cache_capacity(super::STATEMENTS);
            c.busy_timeout(WAIT)?;
            give.send(Reader::Lite(c))
                .expect("room for every connection");
        }
        Ok(Some(ReadPool { give, take }))
    }

    /// `n` sessions to the PostgreSQL database the store has migrated.
    pub fn open_pg(target: &PgTarget, n: usize) -> Result<ReadPool, String> {
        let (give, take) = bounded(n.max(1));
        for _ in 0..n.max(1) {
            give.send(Reader::Pg(Box::new(PgSession::open(target)?)))
                .expect("room for every connection");
        }
        Ok(ReadPool { give, take })
    }

    /// Run `f` on a read connection, in a read transaction of its own.
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> T) -> Result<T, StoreError> {
        let mut conn = self.take.recv_timeout(WAIT).map_err(|_| StoreError::Busy)?;
        let result = match conn.begin() {
            Ok(link) => {
                let db = Db {
                    link,
                    failed: std::cell::Cell::new(false),
                };
                let v = f(&db);
                let _ = link.batch("ROLLBACK");
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

    /// SQLite's plan (the suite checks PostgreSQL's, and what both read).
    #[test]
    fn a_history_page_is_one_range_of_the_conversation_index() {
        let dir = std::env::temp_dir().join(format!("cw-read-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let (s, t) = Store::open(&path).unwrap();
        s.stop();
        t.join();
        let c = rusqlite::Connection::open(&path).unwrap();
        let mut st = c
            .prepare(&format!("EXPLAIN QUERY PLAN {}", HISTORY_SQL.lite))
            .unwrap();
        let plan: Vec<String> = st
            .query_map(rusqlite::params![1, 2, 100, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("messages_conversation"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
