//! The store: one thread owns the SQLite connection; everyone else sends it
//! jobs through a bounded channel, so a slow disk delays only the users
//! waiting on it, never message routing. Jobs are committed in groups: the
//! thread runs every queued job's database part in one transaction, commits,
//! and only then runs their `after` parts (acknowledgements), so nothing is
//! acknowledged before its row is durable.

mod admin;
mod backup;
mod files;
mod guard;
mod read;
mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

pub use backup::backup;
pub use schema::SCHEMA_VERSION;

/// Jobs waiting for the store thread. A sender that finds it full waits up to
/// `QUEUE_WAIT` (back-pressure on that one connection) before giving up.
const QUEUE: usize = 16_384;
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Jobs committed together at most.
const GROUP: usize = 512;

/// What runs after the group's commit: told whether it committed.
pub type After = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Db) -> Option<After> + Send>;

enum Msg {
    Job(Job),
    Stop,
}

/// One history page, newest first: served by the messages_conversation
/// index (migration 3), whose expressions these must stay.
const HISTORY_SQL: &str = "SELECT id, sender, body, sent FROM messages
     WHERE min(sender, recipient) = ?1 AND max(sender, recipient) = ?2 AND id < ?3
     ORDER BY id DESC LIMIT ?4";

/// Handle to the store thread (and its read connections). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: Sender<Msg>,
    reads: Option<std::sync::Arc<read::ReadPool>>,
    /// Test hook: while set, every group commit fails (see `fail_commits`).
    fail_commits: Arc<AtomicBool>,
}

/// The store thread's join handle; dropping it does not stop the thread,
/// `Store::stop` followed by `join` does.
pub struct StoreThread(Option<JoinHandle<()>>);

impl StoreThread {
    pub fn join(mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
pub enum StoreError {
    /// The queue is full or the store has stopped.
    Busy,
}

/// Typed queries over the open transaction; only the store thread has one.
/// Each job gets its own, inside its own savepoint.
pub struct Db<'a> {
    tx: &'a Transaction<'a>,
    /// A statement of this job failed (see `Db::logged`).
    failed: std::cell::Cell<bool>,
}

/// An account as login needs it.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: u64,
    pub pseudo: String,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    EmailTaken,
    PseudoTaken,
}

/// A message waiting for its recipient's next login.
#[derive(Debug, Clone)]
pub struct Undelivered {
    pub id: u64,
    pub from: String,
    pub text: String,
    /// When it was stored: seconds since the Unix epoch.
    pub sent: u64,
}

/// A notice for an offline user (friend answers): instruction code + pseudo.
#[derive(Debug, Clone)]
pub struct Notice {
    pub code: u16,
    pub pseudo: String,
}

impl Store {
    /// Open (creating and migrating as needed) and start the store thread.
    pub fn open(path: &Path) -> rusqlite::Result<(Store, StoreThread)> {
        Self::open_timed(path, None)
    }

    /// [`Store::open`], timing each group commit into `commit_seconds`.
    /// A database file and its WAL and shared-memory files are readable by
    /// the owner only (0600).
    pub fn open_timed(
        path: &Path,
        commit_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    ) -> rusqlite::Result<(Store, StoreThread)> {
        files::owner_only(path)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut conn = Connection::open(path)?;
        schema::prepare(&mut conn)?;
        files::owner_only_companions(path);
        let reads = read::ReadPool::open(path, read::READERS)?.map(std::sync::Arc::new);
        let (tx, rx) = bounded(QUEUE);
        let fail_commits = Arc::new(AtomicBool::new(false));
        let fail = fail_commits.clone();
        let t = thread::Builder::new()
            .name("cw-store".into())
            .spawn(move || run(conn, rx, commit_seconds, &fail))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok((
            Store {
                tx,
                reads,
                fail_commits,
            },
            StoreThread(Some(t)),
        ))
    }

    /// Test hook, unreachable from the wire: while `on`, the COMMIT of every
    /// group fails for real (a deferred foreign-key violation is added to
    /// the transaction), so the tests can drive the failed-commit path.
    #[doc(hidden)]
    pub fn fail_commits(&self, on: bool) {
        self.fail_commits.store(on, Ordering::Release);
    }

    /// Queue a job. Its database part runs inside the next group
    /// transaction; the returned `After` runs once that group has committed
    /// (with `true`) or failed (with `false`).
    pub fn submit(
        &self,
        job: impl FnOnce(&Db) -> Option<After> + Send + 'static,
    ) -> Result<(), StoreError> {
        match self.tx.send_timeout(Msg::Job(Box::new(job)), QUEUE_WAIT) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) | Err(SendTimeoutError::Disconnected(_)) => {
                Err(StoreError::Busy)
            }
        }
    }

    /// Run a read on the store thread and wait for its answer.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = bounded(1);
        self.submit(move |db| {
            let _ = tx.send(f(db));
            None
        })?;
        rx.recv().map_err(|_| StoreError::Busy)
    }

    /// Run a read on one of the read connections, on the calling thread,
    /// if the database has them (a file); else None, and the caller sends
    /// the read to the store thread as a job.
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> T) -> Option<Result<T, StoreError>> {
        self.reads.as_ref().map(|p| p.read(f))
    }

    /// Whether reads run off the store thread (see [`Store::read`]).
    pub fn has_read_pool(&self) -> bool {
        self.reads.is_some()
    }

    /// Ask the thread to finish queued jobs, commit and close the database.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn run(
    mut conn: Connection,
    rx: Receiver<Msg>,
    commit_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    fail_commits: &AtomicBool,
) {
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        let mut jobs = Vec::new();
        match first {
            Msg::Job(j) => jobs.push(j),
            Msg::Stop => break,
        }
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut afters = Vec::with_capacity(jobs.len());
        let started = std::time::Instant::now();
        let committed = match conn.transaction() {
            Ok(tx) => {
                let mut sound = true;
                for job in jobs {
                    let (after, ok) = guard::run_job(&tx, job);
                    afters.extend(after);
                    sound &= ok;
                }
                if fail_commits.load(Ordering::Acquire) {
                    let _ = tx.execute_batch(
                        "PRAGMA defer_foreign_keys = ON;
                         INSERT INTO notices(user_id, code, pseudo) VALUES (0, 0, '');",
                    );
                }
                let done = if sound {
                    tx.commit()
                } else {
                    log::error!("store: a savepoint could not be rolled back; the whole group is");
                    tx.rollback().and(Err(rusqlite::Error::InvalidQuery))
                };
                match done {
                    Ok(()) => true,
                    Err(e) => {
                        log::error!("store: commit failed: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                log::error!("store: cannot begin a transaction: {e}");
                false
            }
        };
        if let Some(h) = &commit_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        for a in afters {
            guard::run_after(a, committed);
        }
    }
    // Checkpoint the WAL so the database file alone is complete.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        log::warn!("store: final checkpoint failed: {e}");
    }
    log::info!("store closed");
}

/// Seconds since the Unix epoch: the time stored with a message.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db<'_> {
    /// Every statement's result passes through here: an error is logged,
    /// answered as "nothing" to the caller, and fails the whole job (its
    /// savepoint is rolled back and its `after` is told `false`), so no
    /// write's failure can go unnoticed.
    fn logged<T>(&self, what: &str, r: rusqlite::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("store: {what}: {e}");
                self.failed.set(true);
                None
            }
        }
    }
}

impl Db<'_> {
    pub fn create_account(
        &self,
        email: &str,
        pseudo: &str,
        hash: &str,
    ) -> Result<u64, CreateError> {
        // Check first so the answer names the right field; UNIQUE still guards races.
        if self.account_by_email(email).is_some() {
            return Err(CreateError::EmailTaken);
        }
        if self.account_id(pseudo).is_some() {
            return Err(CreateError::PseudoTaken);
        }
        match self.tx.execute(
            "INSERT INTO accounts(email, pseudo, hash, created) VALUES (?1, ?2, ?3, ?4)",
            params![email, pseudo, hash, now_secs()],
        ) {
            Ok(_) => Ok(self.tx.last_insert_rowid() as u64),
            Err(e) => {
                log::error!("store: create account: {e}");
                Err(CreateError::EmailTaken)
            }
        }
    }

    pub fn account_by_email(&self, email: &str) -> Option<Account> {
        self.logged(
            "account by email",
            self.tx
                .query_row(
                    "SELECT id, pseudo, hash FROM accounts WHERE email = ?1",
                    [email],
                    |r| {
                        Ok(Account {
                            id: r.get::<_, i64>(0)? as u64,
                            pseudo: r.get(1)?,
                            hash: r.get(2)?,
                        })
                    },
                )
                .optional(),
        )
        .flatten()
    }

    pub fn account_id(&self, pseudo: &str) -> Option<u64> {
        self.logged(
            "account id",
            self.tx
                .query_row("SELECT id FROM accounts WHERE pseudo = ?1", [pseudo], |r| {
                    r.get::<_, i64>(0)
                })
                .optional(),
        )
        .flatten()
        .map(|v| v as u64)
    }

    pub fn all_pseudos(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(mut st) = self.logged("pseudos", self.tx.prepare("SELECT pseudo FROM accounts"))
        {
            if let Some(rows) = self.logged("pseudos", st.query_map([], |r| r.get::<_, String>(0)))
            {
                out.extend(rows.filter_map(Result::ok));
            }
        }
        out
    }

    pub fn are_friends(&self, a: u64, b: u64) -> bool {
        self.logged(
            "are friends",
            self.tx
                .query_row(
                    "SELECT 1 FROM friendships WHERE a = ?1 AND b = ?2",
                    params![a as i64, b as i64],
                    |_| Ok(()),
                )
                .optional(),
        )
        .flatten()
        .is_some()
    }

    pub fn has_request(&self, from: u64, to: u64) -> bool {
        self.logged(
            "has request",
            self.tx
                .query_row(
                    "SELECT 1 FROM friend_requests WHERE requester = ?1 AND target = ?2",
                    params![from as i64, to as i64],
                    |_| Ok(()),
                )
                .optional(),
        )
        .flatten()
        .is_some()
    }

    /// Record a request; `notified` says whether the target already heard (online).
    pub fn add_request(&self, from: u64, to: u64, notified: bool) -> bool {
        self.logged(
            "add request",
            self.tx.execute(
                "INSERT INTO friend_requests(requester, target, created, notified) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(requester, target) DO UPDATE SET notified = MAX(notified, excluded.notified)",
                params![from as i64, to as i64, now_secs(), notified as i64],
            ),
        )
        .is_some()
    }

    /// Remove a pending request; false if there was none.
    pub fn take_request(&self, from: u64, to: u64) -> bool {
        self.logged(
            "take request",
            self.tx.execute(
                "DELETE FROM friend_requests WHERE requester = ?1 AND target = ?2",
                params![from as i64, to as i64],
            ),
        )
        .is_some_and(|n| n > 0)
    }

    pub fn befriend(&self, a: u64, b: u64) -> bool {
        let t = now_secs();
        let ok = self.logged(
            "befriend",
            self.tx.execute(
                "INSERT OR IGNORE INTO friendships(a, b, since) VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
                params![a as i64, b as i64, t],
            ),
        )
        .is_some();
        // A request the other way is answered by the friendship too.
        let _ = self.take_request(b, a);
        ok
    }

    fn names(&self, sql: &str, id: u64) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(mut st) = self.logged("list", self.tx.prepare_cached(sql)) {
            if let Some(rows) =
                self.logged("list", st.query_map([id as i64], |r| r.get::<_, String>(0)))
            {
                out.extend(rows.filter_map(Result::ok));
            }
        }
        out
    }

    pub fn friends(&self, id: u64, max: usize) -> Vec<String> {
        let mut v = self.names(
            "SELECT p.pseudo FROM friendships f JOIN accounts p ON p.id = f.b WHERE f.a = ?1 ORDER BY p.pseudo",
            id,
        );
        v.truncate(max);
        v
    }

    /// Pseudos of users whose friend request to `id` is pending.
    pub fn requests_to(&self, id: u64, max: usize) -> Vec<String> {
        let mut v = self.names(
            "SELECT p.pseudo FROM friend_requests r JOIN accounts p ON p.id = r.requester
             WHERE r.target = ?1 ORDER BY r.created, p.pseudo",
            id,
        );
        v.truncate(max);
        v
    }

    /// Pending requests to `id` it has not been told about yet; marks them told.
    pub fn take_unnotified_requests(&self, id: u64) -> Vec<String> {
        let v = self.names(
            "SELECT p.pseudo FROM friend_requests r JOIN accounts p ON p.id = r.requester
             WHERE r.target = ?1 AND r.notified = 0 ORDER BY r.created, p.pseudo",
            id,
        );
        let _ = self.logged(
            "mark requests told",
            self.tx.execute(
                "UPDATE friend_requests SET notified = 1 WHERE target = ?1",
                [id as i64],
            ),
        );
        v
    }

    pub fn add_notice(&self, user: u64, code: u16, pseudo: &str) {
        let _ = self.logged(
            "add notice",
            self.tx.execute(
                "INSERT INTO notices(user_id, code, pseudo) VALUES (?1, ?2, ?3)",
                params![user as i64, code as i64, pseudo],
            ),
        );
    }

    pub fn take_notices(&self, user: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(mut st) = self.logged(
            "notices",
            self.tx
                .prepare("SELECT code, pseudo FROM notices WHERE user_id = ?1 ORDER BY id"),
        ) {
            if let Some(rows) = self.logged(
                "notices",
                st.query_map([user as i64], |r| {
                    Ok(Notice {
                        code: r.get::<_, i64>(0)? as u16,
                        pseudo: r.get(1)?,
                    })
                }),
            ) {
                out.extend(rows.filter_map(Result::ok));
            }
        }
        let _ = self.logged(
            "clear notices",
            self.tx
                .execute("DELETE FROM notices WHERE user_id = ?1", [user as i64]),
        );
        out
    }

    pub fn insert_message(&self, from: u64, to: u64, text: &str, delivered: bool) -> Option<u64> {
        self.insert_message_at(from, to, text, delivered, now_secs())
    }

    /// As `insert_message`, stored at `sent` (seconds since the epoch).
    pub fn insert_message_at(
        &self,
        from: u64,
        to: u64,
        text: &str,
        delivered: bool,
        sent: i64,
    ) -> Option<u64> {
        self.logged(
            "insert message",
            self.tx
                .prepare_cached(
                    "INSERT INTO messages(sender, recipient, body, sent, delivered) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut st| st.execute(params![from as i64, to as i64, text, sent, delivered as i64])),
        )?;
        Some(self.tx.last_insert_rowid() as u64)
    }

    /// Messages to `to` not yet delivered, oldest first, marked delivered.
    pub fn take_undelivered(&self, to: u64) -> Vec<Undelivered> {
        let out = self.waiting(
            "undelivered",
            "SELECT m.id, a.pseudo, m.body, m.sent FROM messages m JOIN accounts a ON a.id = m.sender
             WHERE m.recipient = ?1 AND m.delivered = 0 ORDER BY m.id",
            to,
        );
        let _ = self.logged(
            "mark delivered",
            self.tx.execute(
                "UPDATE messages SET delivered = 1 WHERE recipient = ?1 AND delivered = 0",
                [to as i64],
            ),
        );
        out
    }

    /// What `select` (id, sender's name, body, sent; for recipient ?1)
    /// lists for `to`.
    fn waiting(&self, what: &str, select: &str, to: u64) -> Vec<Undelivered> {
        let mut out = Vec::new();
        if let Some(mut st) = self.logged(what, self.tx.prepare(select)) {
            if let Some(rows) = self.logged(
                what,
                st.query_map([to as i64], |r| {
                    Ok(Undelivered {
                        id: r.get::<_, i64>(0)? as u64,
                        from: r.get(1)?,
                        text: r.get(2)?,
                        sent: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                }),
            ) {
                out.extend(rows.filter_map(Result::ok));
            }
        }
        out
    }

    /// Keep a guest's text for offline account `to` unless `limit` are
    /// already waiting for it; false when full (or on failure).
    pub fn add_guest_mail(&self, to: u64, from: &str, text: &str, sent: i64, limit: usize) -> bool {
        let waiting = self.logged(
            "count guest mail",
            self.tx.query_row(
                "SELECT count(*) FROM guest_mail WHERE recipient = ?1",
                [to as i64],
                |r| r.get::<_, i64>(0),
            ),
        );
        match waiting {
            Some(n) if (n as usize) < limit => self
                .logged(
                    "add guest mail",
                    self.tx.execute(
                        "INSERT INTO guest_mail(recipient, sender, body, sent) VALUES (?1, ?2, ?3, ?4)",
                        params![to as i64, from, text, sent],
                    ),
                )
                .is_some(),
            _ => false,
        }
    }

    /// Guests' texts waiting for `to`, oldest first, deleted.
    pub fn take_guest_mail(&self, to: u64) -> Vec<Undelivered> {
        let out = self.waiting(
            "guest mail",
            "SELECT id, sender, body, sent FROM guest_mail WHERE recipient = ?1 ORDER BY id",
            to,
        );
        let _ = self.logged(
            "take guest mail",
            self.tx
                .execute("DELETE FROM guest_mail WHERE recipient = ?1", [to as i64]),
        );
        out
    }

    /// Up to `limit` messages between `a` and `b` with id < `before`
    /// (0 = no bound), oldest first: (id, sender id, text, stored at).
    pub fn history(
        &self,
        a: u64,
        b: u64,
        before: u64,
        limit: usize,
    ) -> Vec<(u64, u64, String, u64)> {
        let before = if before == 0 {
            i64::MAX
        } else {
            before.min(i64::MAX as u64) as i64
        };
        let mut out = Vec::new();
        if let Some(mut st) = self.logged("history", self.tx.prepare_cached(HISTORY_SQL)) {
            let (lo, hi) = (a.min(b) as i64, a.max(b) as i64);
            if let Some(rows) = self.logged(
                "history",
                st.query_map(params![lo, hi, before, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?.max(0) as u64,
                    ))
                }),
            ) {
                out.extend(rows.filter_map(Result::ok));
            }
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> (Store, StoreThread) {
        Store::open(Path::new(":memory:")).unwrap()
    }

    /// A database file of its own, removed on drop.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(tag: &str) -> TempDb {
            let dir = std::env::temp_dir().join(format!(
                "cw-store-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDb(dir)
        }

        fn path(&self) -> std::path::PathBuf {
            self.0.join("t.db")
        }

        /// What another process would see: committed rows only.
        fn bodies(path: &Path) -> Vec<String> {
            let other = Connection::open(path).unwrap();
            let mut st = other
                .prepare("SELECT body FROM messages ORDER BY id")
                .unwrap();
            let rows = st.query_map([], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

    /// Two accounts to send messages between.
    fn two_accounts(s: &Store) -> (u64, u64) {
        s.call(|db| {
            (
                db.create_account("a@x.org", "alice", "h").unwrap(),
                db.create_account("b@x.org", "bob", "h").unwrap(),
            )
        })
        .unwrap()
    }

    /// Store `text` from a to b; the `after` reports (committed, what a
    /// second connection to the same file sees at that moment).
    fn store_message(
        s: &Store,
        path: &Path,
        (a, b): (u64, u64),
        text: &str,
    ) -> crossbeam_channel::Receiver<(bool, Vec<String>)> {
        let (tx, rx) = bounded(1);
        let (path, text) = (path.to_path_buf(), text.to_owned());
        s.submit(move |db| {
            db.insert_message(a, b, &text, false).unwrap();
            Some(Box::new(move |ok| {
                let _ = tx.send((ok, TempDb::bodies(&path)));
            }) as After)
        })
        .unwrap();
        rx
    }

    #[test]
    fn an_after_runs_once_its_row_is_visible_to_other_connections() {
        let dir = TempDb::new("after");
        let path = dir.path();
        let (s, t) = Store::open(&path).unwrap();
        let ids = two_accounts(&s);
        // Several jobs, likely in one group: each after sees its own row.
        let answers: Vec<_> = (0..5)
            .map(|i| store_message(&s, &path, ids, &format!("m{i}")))
            .collect();
        for (i, rx) in answers.into_iter().enumerate() {
            let (ok, seen) = rx.recv_timeout(PATIENCE).unwrap();
            assert!(ok, "job {i} committed");
            assert!(
                seen.contains(&format!("m{i}")),
                "job {i}'s after ran before its row was committed: {seen:?}"
            );
        }
        s.stop();
        t.join();
    }

    #[test]
    fn a_failed_commit_is_reported_to_every_after_and_keeps_nothing() {
        let dir = TempDb::new("fail");
        let path = dir.path();
        let (s, t) = Store::open(&path).unwrap();
        let ids = two_accounts(&s);
        s.fail_commits(true);
        let (ok, seen) = store_message(&s, &path, ids, "lost")
            .recv_timeout(PATIENCE)
            .unwrap();
        assert!(!ok, "the after was told the commit failed");
        assert!(seen.is_empty(), "{seen:?}");
        s.fail_commits(false);
        let (ok, seen) = store_message(&s, &path, ids, "kept")
            .recv_timeout(PATIENCE)
            .unwrap();
        assert!(ok);
        assert_eq!(seen, vec!["kept"]);
        s.stop();
        t.join();
    }

    #[test]
    fn lookups_answer_what_was_stored() {
        let (s, t) = mem();
        let clock = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        let before = clock();
        s.call(move |db| {
            let a = db.create_account("a@x.org", "alice", "hash-a").unwrap();
            let b = db.create_account("b@x.org", "bob", "hash-b").unwrap();
            let found = db.account_by_email("A@X.ORG").expect("emails ignore case");
            assert_eq!((found.id, found.pseudo.as_str()), (a, "alice"));
            assert_eq!(found.hash, "hash-a");
            assert!(db.account_by_email("c@x.org").is_none());
            let mut all = db.all_pseudos();
            all.sort();
            assert_eq!(all, vec!["alice", "bob"]);
            let created: i64 = db
                .tx
                .query_row(
                    "SELECT created FROM accounts WHERE id = ?1",
                    [a as i64],
                    |r| r.get(0),
                )
                .unwrap();
            assert!((before..=clock()).contains(&created), "{created}");
            assert!(!db.are_friends(a, b));
            assert!(!db.has_request(a, b));
            assert!(db.add_request(a, b, false));
            assert!(db.has_request(a, b));
            assert!(!db.has_request(b, a), "a request has a direction");
            db.add_notice(a, 124, "bob");
            db.add_notice(a, 125, "carol");
            db.add_notice(b, 124, "alice");
            let notices: Vec<(u16, String)> = db
                .take_notices(a)
                .into_iter()
                .map(|n| (n.code, n.pseudo))
                .collect();
            assert_eq!(notices, vec![(124, "bob".into()), (125, "carol".into())]);
            assert!(db.take_notices(a).is_empty(), "taken once");
            assert_eq!(db.take_notices(b).len(), 1);
        })
        .unwrap();
        s.stop();
        t.join();
    }

    #[test]
    fn jobs_queued_together_commit_together_up_to_a_group() {
        let dir = TempDb::new("group");
        let path = dir.path();
        let (s, t) = Store::open(&path).unwrap();
        let ids = two_accounts(&s);
        // Hold the store thread while a group and one more job queue up.
        let (holding, is_holding) = bounded::<()>(1);
        let (release, held) = bounded::<()>(0);
        s.submit(move |_| {
            let _ = holding.send(());
            let _ = held.recv();
            None
        })
        .unwrap();
        is_holding.recv_timeout(PATIENCE).unwrap();
        let answers: Vec<_> = (0..=GROUP)
            .map(|i| store_message(&s, &path, ids, &format!("m{i}")))
            .collect();
        release.send(()).unwrap();
        let (ok, seen) = answers[0].recv_timeout(PATIENCE).unwrap();
        assert!(ok);
        // The first job's after runs once its whole group is committed: the
        // group's last row is visible, the next group's first is not.
        assert!(
            seen.contains(&format!("m{}", GROUP - 1)),
            "{} rows",
            seen.len()
        );
        assert!(!seen.contains(&format!("m{GROUP}")), "{} rows", seen.len());
        for rx in &answers[1..] {
            assert!(rx.recv_timeout(PATIENCE).unwrap().0);
        }
        s.stop();
        t.join();
    }

    #[test]
    fn joining_the_stopped_store_waits_for_its_final_checkpoint() {
        let dir = TempDb::new("checkpoint");
        let path = dir.path();
        let (s, t) = Store::open(&path).unwrap();
        two_accounts(&s);
        s.stop();
        t.join();
        // Everything is in the database file itself; the WAL is empty.
        let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0);
    }

    #[test]
    fn accounts_friends_messages() {
        let (s, t) = mem();
        let (a, b) = s
            .call(|db| {
                let a = db.create_account("a@x.org", "alice", "h").unwrap();
                let b = db.create_account("b@x.org", "bob", "h").unwrap();
                assert_eq!(
                    db.create_account("A@X.org", "other", "h"),
                    Err(CreateError::EmailTaken)
                );
                assert_eq!(
                    db.create_account("c@x.org", "bob", "h"),
                    Err(CreateError::PseudoTaken)
                );
                (a, b)
            })
            .unwrap();
        s.call(move |db| {
            assert!(db.add_request(a, b, false));
            assert_eq!(db.requests_to(b, 10), vec!["alice"]);
            assert_eq!(db.take_unnotified_requests(b), vec!["alice"]);
            assert!(db.take_unnotified_requests(b).is_empty());
            assert!(db.take_request(a, b));
            assert!(!db.take_request(a, b));
            assert!(db.befriend(a, b));
            assert!(db.are_friends(b, a));
            assert_eq!(db.friends(a, 10), vec!["bob"]);
            for i in 0..5 {
                db.insert_message(a, b, &format!("m{i}"), i < 2).unwrap();
            }
            let und: Vec<String> = db.take_undelivered(b).into_iter().map(|u| u.text).collect();
            assert_eq!(und, vec!["m2", "m3", "m4"]);
            assert!(db.take_undelivered(b).is_empty());
            let h = db.history(b, a, 0, 3);
            assert_eq!(
                h.iter().map(|x| x.2.as_str()).collect::<Vec<_>>(),
                vec!["m2", "m3", "m4"]
            );
            let older = db.history(a, b, h[0].0, 10);
            assert_eq!(
                older.iter().map(|x| x.2.as_str()).collect::<Vec<_>>(),
                vec!["m0", "m1"]
            );
            // The stored time comes back with history and offline delivery.
            db.insert_message_at(a, b, "dated", false, 1_700_000_000)
                .unwrap();
            assert_eq!(db.history(a, b, 0, 1)[0].3, 1_700_000_000);
            let und = db.take_undelivered(b);
            assert_eq!(
                (und[0].text.as_str(), und[0].sent),
                ("dated", 1_700_000_000)
            );
        })
        .unwrap();
        s.stop();
        t.join();
    }

    #[test]
    fn afters_run_after_commit() {
        let (s, t) = mem();
        let (tx, rx) = bounded(1);
        s.submit(move |db| {
            let id = db.create_account("z@x.org", "zed", "h").ok();
            Some(Box::new(move |ok| {
                let _ = tx.send((id.is_some(), ok));
            }) as After)
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap(), (true, true));
        s.stop();
        t.join();
    }
}
