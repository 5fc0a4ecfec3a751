//! The store: one thread owns the database connection (SQLite, the embedded
//! default, or a PostgreSQL session); everyone else sends it jobs through a
//! bounded channel, so a slow disk or database delays only the users
//! waiting on it, never message routing. Jobs are committed in groups: the
//! thread runs every queued job's database part in one transaction,
//! commits, and only then runs their `after` parts (acknowledgements), so
//! nothing is acknowledged before its row is durable. Both databases answer
//! the same typed queries (`Db`); which one is in use is decided at start.

mod admin;
mod backup;
mod files;
mod guard;
mod pg;
mod read;
mod schema;
mod sql;
#[cfg(test)]
mod suite;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
use rusqlite::Connection;

pub use backup::backup;
pub use pg::PgTarget;
pub use schema::SCHEMA_VERSION;
use sql::{same, split, Link, Row, Sql, Value};

/// Jobs waiting for the store thread. A sender that finds it full waits up to
/// `QUEUE_WAIT` (back-pressure on that one connection) before giving up.
const QUEUE: usize = 16_384;
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Jobs committed together at most.
const GROUP: usize = 512;
/// Prepared statements kept per SQLite connection: every statement of the
/// store fits (rusqlite keeps 16 by default, fewer than we have).
const STATEMENTS: usize = 64;

/// What runs after the group's commit: told whether it committed.
pub type After = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Db) -> Option<After> + Send>;

enum Msg {
    Job(Job),
    Stop,
}

/// One history page, newest first: served by the messages_conversation
/// index (migration 3), whose expressions these must stay (PostgreSQL
/// spells min/max LEAST/GREATEST, as its index does).
const HISTORY_SQL: Sql = split(
    "SELECT id, sender, body, sent FROM messages
     WHERE min(sender, recipient) = ?1 AND max(sender, recipient) = ?2 AND id < ?3
     ORDER BY id DESC LIMIT ?4",
    "SELECT id, sender, body, sent FROM messages
     WHERE LEAST(sender, recipient) = $1 AND GREATEST(sender, recipient) = $2 AND id < $3
     ORDER BY id DESC LIMIT $4",
);

/// Which database the store uses: `store_url` empty means the SQLite file
/// at `db_path` (":memory:" keeps nothing); a postgres:// URL means that
/// PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

impl Target {
    /// From the two settings (see `Config::store_url`).
    pub fn from_settings(db_path: &Path, store_url: &str) -> Result<Target, String> {
        if store_url.is_empty() {
            Ok(Target::Sqlite(db_path.to_path_buf()))
        } else {
            PgTarget::parse(store_url).map(|t| Target::Postgres(Box::new(t)))
        }
    }

    /// The PostgreSQL password from `store_password_file`.
    pub fn read_password(&mut self, path: &Path) -> Result<(), String> {
        match self {
            Target::Postgres(t) => t.read_password(path),
            Target::Sqlite(_) => Err("store_password_file needs a postgres:// store_url".into()),
        }
    }

    /// For logs and errors: the file, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Target::Sqlite(p) => p.display().to_string(),
            Target::Postgres(t) => t.shown().to_owned(),
        }
    }
}

/// Handle to the store thread (and its read connections). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: Sender<Msg>,
    reads: Option<std::sync::Arc<read::ReadPool>>,
    /// Test hook: while set, every group commit fails (see `fail_commits`).
    fail_commits: Arc<AtomicBool>,
    target: Arc<Target>,
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

/// Typed queries over the open transaction; only the store thread has one
/// that can write. Each job gets its own, inside its own savepoint.
pub struct Db<'a> {
    link: Link<'a>,
    /// A statement of this job failed (see `Db::logged`).
    failed: Cell<bool>,
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

/// The connection the store thread owns.
enum Writer {
    Lite(Connection),
    Pg(Box<pg::PgSession>),
}

impl Writer {
    /// Begin the next group's transaction. Err: no transaction (the
    /// database cannot be reached, or refuses), and the group fails.
    fn begin(&mut self) -> Result<Link<'_>, String> {
        match self {
            Writer::Lite(c) => Link::Lite(c).batch("BEGIN").map(|()| Link::Lite(c)),
            Writer::Pg(session) => session.begin("BEGIN"),
        }
    }

    /// At a clean stop: checkpoint SQLite's WAL so the database file alone
    /// is complete (PostgreSQL needs nothing).
    fn close(self) {
        if let Writer::Lite(conn) = self {
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                log::warn!("store: final checkpoint failed: {e}");
            }
        }
    }
}

/// Makes the open transaction's COMMIT fail for real (`fail_commits`): a
/// foreign-key violation whose check is deferred to the commit.
const FAIL_COMMIT_LITE: &str = "PRAGMA defer_foreign_keys = ON;
     INSERT INTO notices(user_id, code, pseudo) VALUES (0, 0, '');";
const FAIL_COMMIT_PG: &str = "SET CONSTRAINTS ALL DEFERRED;
     INSERT INTO notices(user_id, code, pseudo) VALUES (0, 0, '');";

fn other(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Store {
    /// Open the SQLite database at `path` (creating and migrating as
    /// needed) and start the store thread.
    pub fn open(path: &Path) -> Result<(Store, StoreThread), String> {
        Self::open_target(&Target::Sqlite(path.to_path_buf()), None)
    }

    /// Open the store `target` names (creating and migrating as needed),
    /// timing each group commit into `commit_seconds`, and start the store
    /// thread. A SQLite database file and its WAL and shared-memory files
    /// are readable by the owner only (0600). A PostgreSQL database must be
    /// reachable now: a store that cannot start refuses to.
    pub fn open_target(
        target: &Target,
        commit_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    ) -> Result<(Store, StoreThread), String> {
        let (writer, reads) = match target {
            Target::Sqlite(path) => {
                files::owner_only(path).map_err(other)?;
                let mut conn = Connection::open(path).map_err(other)?;
                conn.set_prepared_statement_cache_capacity(STATEMENTS);
                schema::prepare(&mut conn).map_err(other)?;
                files::owner_only_companions(path);
                let reads = read::ReadPool::open(path, read::READERS).map_err(other)?;
                (Writer::Lite(conn), reads)
            }
            Target::Postgres(t) => {
                let mut conn = t.connect()?;
                schema::prepare_pg(&mut conn)?;
                let reads = read::ReadPool::open_pg(t, read::READERS)?;
                (
                    Writer::Pg(Box::new(pg::PgSession::over(conn, t))),
                    Some(reads),
                )
            }
        };
        let reads = reads.map(std::sync::Arc::new);
        let (tx, rx) = bounded(QUEUE);
        let fail_commits = Arc::new(AtomicBool::new(false));
        let fail = fail_commits.clone();
        let t = thread::Builder::new()
            .name("cw-store".into())
            .spawn(move || run(writer, rx, commit_seconds, &fail))
            .map_err(other)?;
        Ok((
            Store {
                tx,
                reads,
                fail_commits,
                target: Arc::new(target.clone()),
            },
            StoreThread(Some(t)),
        ))
    }

    /// Which database this store uses.
    pub fn target(&self) -> &Target {
        &self.target
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

    /// Run a read on the store thread and wait for its answer. It answers
    /// from the job's database part, inside the group transaction: before
    /// the group commits, so possibly before the `after`s of jobs queued
    /// ahead of it in the same group have run. No caller may take a `call`'s
    /// answer as a sign that earlier jobs' `after`s ran; `call_committed`
    /// answers after its group's commit and every `after` queued ahead of it.
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
    /// if the database has them (a file, or PostgreSQL); else None, and the
    /// caller sends the read to the store thread as a job.
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
    mut writer: Writer,
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
        let started = std::time::Instant::now();
        let (committed, afters) = match writer.begin() {
            Ok(link) => group(link, jobs, fail_commits),
            // No transaction: nothing ran, so the jobs' reply parts do not
            // even exist; the jobs are dropped, and their guards (the
            // accounts service's ReplyOnDrop, `call`'s channel) answer
            // "busy".
            Err(e) => {
                log::error!("store: cannot begin a transaction: {e}");
                (false, Vec::new())
            }
        };
        if let Some(h) = &commit_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        for a in afters {
            guard::run_after(a, committed);
        }
    }
    writer.close();
    log::info!("store closed");
}

/// One group in the transaction just begun: every job in its savepoint,
/// then COMMIT. Whether it committed, and the afters to tell.
fn group(link: Link<'_>, jobs: Vec<Job>, fail_commits: &AtomicBool) -> (bool, Vec<After>) {
    let mut afters = Vec::with_capacity(jobs.len());
    let mut sound = true;
    for job in jobs {
        let (after, ok) = guard::run_job(link, job);
        afters.extend(after);
        sound &= ok;
    }
    if fail_commits.load(Ordering::Acquire) {
        let _ = link.batch(match link {
            Link::Lite(_) => FAIL_COMMIT_LITE,
            Link::Pg(_) => FAIL_COMMIT_PG,
        });
    }
    let done = if sound {
        link.batch("COMMIT")
    } else {
        log::error!("store: a savepoint could not be rolled back; the whole group is");
        Err("rolled back".to_owned())
    };
    match done {
        Ok(()) => (true, afters),
        Err(e) => {
            log::error!("store: commit failed: {e}");
            // SQLite keeps a transaction whose COMMIT failed open; end it.
            // (PostgreSQL has already ended it; ROLLBACK only warns.)
            let _ = link.batch("ROLLBACK");
            (false, afters)
        }
    }
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
    /// write's failure can go unnoticed. (On PostgreSQL a failed statement
    /// also makes the rest of the job's statements fail until the rollback.)
    fn logged<T>(&self, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("store: {what}: {e}");
                self.failed.set(true);
                None
            }
        }
    }

    fn exec(&self, what: &str, sql: &Sql, params: &[Value]) -> Option<u64> {
        self.logged(what, self.link.exec(sql, params))
    }

    fn rows(&self, what: &str, sql: &Sql, params: &[Value]) -> Vec<Row> {
        self.logged(what, self.link.rows(sql, params))
            .unwrap_or_default()
    }

    fn row(&self, what: &str, sql: &Sql, params: &[Value]) -> Option<Row> {
        self.logged(what, self.link.row(sql, params)).flatten()
    }

    /// Pseudos from a one-column query on one account id.
    fn names(&self, what: &str, sql: &Sql, id: u64) -> Vec<String> {
        self.rows(what, sql, &[Value::Int(id as i64)])
            .iter()
            .map(|r| r.text(0))
            .collect()
    }
}

/// ON CONFLICT DO NOTHING (both databases): a race with another writer
/// (another node, on PostgreSQL) loses quietly instead of failing the job.
const CREATE_ACCOUNT: Sql = same(
    "INSERT INTO accounts(email, pseudo, hash, created) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT DO NOTHING RETURNING id",
);
/// Emails match case-blind on ASCII letters: SQLite by the column's NOCASE,
/// PostgreSQL by the unique index on lower(email) (a "C" column, so ASCII
/// only). The caller passes the email ASCII-lower-cased.
const ACCOUNT_BY_EMAIL: Sql = split(
    "SELECT id, pseudo, hash FROM accounts WHERE email = ?1",
    "SELECT id, pseudo, hash FROM accounts WHERE lower(email) = $1",
);
/// A pseudo's look-alike key: held by one account (the arbiter between
/// nodes registering look-alikes at once).
const ADD_PSEUDO_KEY: Sql = same(
    "INSERT INTO pseudo_keys(key, account) VALUES (?1, ?2) ON CONFLICT DO NOTHING RETURNING key",
);
const PSEUDO_KEY_HOLDER: Sql =
    same("SELECT a.pseudo FROM pseudo_keys k JOIN accounts a ON a.id = k.account WHERE k.key = ?1");
const DROP_PSEUDO_KEYS: Sql = same("DELETE FROM pseudo_keys WHERE account = ?1");
const DROP_ACCOUNT: Sql = same("DELETE FROM accounts WHERE id = ?1");
const ACCOUNT_ID: Sql = same("SELECT id FROM accounts WHERE pseudo = ?1");
const ALL_PSEUDOS: Sql = same("SELECT pseudo FROM accounts");
const ARE_FRIENDS: Sql = same("SELECT 1 FROM friendships WHERE a = ?1 AND b = ?2");
const HAS_REQUEST: Sql = same("SELECT 1 FROM friend_requests WHERE requester = ?1 AND target = ?2");
const ADD_REQUEST: Sql = same(
    "INSERT INTO friend_requests(requester, target, created, notified) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT(requester, target) DO UPDATE SET notified = CASE
         WHEN excluded.notified > friend_requests.notified THEN excluded.notified
         ELSE friend_requests.notified END",
);
const TAKE_REQUEST: Sql = same("DELETE FROM friend_requests WHERE requester = ?1 AND target = ?2");
const BEFRIEND: Sql = same(
    "INSERT INTO friendships(a, b, since) VALUES (?1, ?2, ?3), (?2, ?1, ?3)
     ON CONFLICT DO NOTHING",
);
const FRIENDS: Sql = same(
    "SELECT p.pseudo FROM friendships f JOIN accounts p ON p.id = f.b WHERE f.a = ?1
     ORDER BY p.pseudo",
);
const REQUESTS_TO: Sql = same(
    "SELECT p.pseudo FROM friend_requests r JOIN accounts p ON p.id = r.requester
     WHERE r.target = ?1 ORDER BY r.created, p.pseudo",
);
// The takes below mark (or delete) and return the rows in one statement:
// another node may commit new rows for the same user at any moment, and
// only the rows a statement changed are the ones it may say it delivered.
// RETURNING's order is unspecified: the caller sorts.
const TAKE_REQUESTS: Sql = same(
    "UPDATE friend_requests SET notified = 1 WHERE target = ?1 AND notified = 0
     RETURNING requester, created",
);
const PSEUDO_OF: Sql = same("SELECT pseudo FROM accounts WHERE id = ?1");
const ADD_NOTICE: Sql = same("INSERT INTO notices(user_id, code, pseudo) VALUES (?1, ?2, ?3)");
const TAKE_NOTICES: Sql = same("DELETE FROM notices WHERE user_id = ?1 RETURNING id, code, pseudo");
const INSERT_MESSAGE: Sql = same(
    "INSERT INTO messages(sender, recipient, body, sent, delivered) VALUES (?1, ?2, ?3, ?4, ?5)
     RETURNING id",
);
const TAKE_UNDELIVERED: Sql = same(
    "UPDATE messages SET delivered = 1 WHERE recipient = ?1 AND delivered = 0
     RETURNING id, sender, body, sent",
);
const GUEST_MAIL_COUNT: Sql = same("SELECT count(*) FROM guest_mail WHERE recipient = ?1");
const GUEST_MAIL_ADD: Sql =
    same("INSERT INTO guest_mail(recipient, sender, body, sent) VALUES (?1, ?2, ?3, ?4)");
const TAKE_GUEST_MAIL: Sql =
    same("DELETE FROM guest_mail WHERE recipient = ?1 RETURNING id, sender, body, sent");
/// Of the accounts in ?1 (ids, comma-separated), those with anything a
/// flush would take: undelivered messages, unnotified friend requests,
/// notices, guest mail. Each part is one index lookup per id (the partial
/// index `messages_undelivered`, `friend_requests_target`, `notices_user`,
/// `guest_mail_recipient`). The list goes as one text parameter: SQLite
/// reads it as a JSON array, PostgreSQL as an array of bigint.
const WAITING_AMONG: Sql = split(
    "WITH ids(id) AS (SELECT value FROM json_each('[' || ?1 || ']'))
     SELECT recipient FROM messages WHERE delivered = 0 AND recipient IN ids
     UNION SELECT target FROM friend_requests WHERE notified = 0 AND target IN ids
     UNION SELECT user_id FROM notices WHERE user_id IN ids
     UNION SELECT recipient FROM guest_mail WHERE recipient IN ids",
    "SELECT recipient FROM messages
         WHERE delivered = 0 AND recipient = ANY(string_to_array($1, ',')::bigint[])
     UNION SELECT target FROM friend_requests
         WHERE notified = 0 AND target = ANY(string_to_array($1, ',')::bigint[])
     UNION SELECT user_id FROM notices
         WHERE user_id = ANY(string_to_array($1, ',')::bigint[])
     UNION SELECT recipient FROM guest_mail
         WHERE recipient = ANY(string_to_array($1, ',')::bigint[])",
);

/// The look-alike keys of a pseudo as the store holds them: the hub's
/// skeletons (`hub::names`, the one folding of names), sorted, no repeats.
pub(crate) fn pseudo_keys(pseudo: &str) -> Vec<String> {
    let mut keys = crate::hub::names::skeletons(pseudo).to_vec();
    keys.sort();
    keys.dedup();
    keys
}

fn id(v: u64) -> Value<'static> {
    Value::Int(v as i64)
}

impl Db<'_> {
    pub fn create_account(
        &self,
        email: &str,
        pseudo: &str,
        hash: &str,
    ) -> Result<u64, CreateError> {
        // Check first so the answer names the right field; the unique
        // indexes still settle a race (the insert then does nothing).
        if self.account_by_email(email).is_some() {
            return Err(CreateError::EmailTaken);
        }
        if self.account_id(pseudo).is_some() {
            return Err(CreateError::PseudoTaken);
        }
        let params = [email.into(), pseudo.into(), hash.into(), now_secs().into()];
        match self.link.row(&CREATE_ACCOUNT, &params) {
            Ok(Some(row)) => {
                let id = row.int(0) as u64;
                if self.hold_pseudo_keys(id, pseudo) {
                    Ok(id)
                } else {
                    Err(CreateError::PseudoTaken)
                }
            }
            Ok(None) if self.account_id(pseudo).is_some() => Err(CreateError::PseudoTaken),
            Ok(None) => Err(CreateError::EmailTaken),
            Err(e) => {
                self.logged::<()>("create account", Err(e));
                Err(CreateError::EmailTaken)
            }
        }
    }

    /// Give new account `account` the look-alike keys of `pseudo`. When another
    /// account holds one (a look-alike registered meanwhile, perhaps
    /// through another node), the new account is taken back and the answer
    /// is false. On PostgreSQL an insert waits for a writer that holds the
    /// same key uncommitted, then sees its outcome; the keys go in sorted
    /// order, so two such writers never wait on each other.
    fn hold_pseudo_keys(&self, account: u64, pseudo: &str) -> bool {
        let held = pseudo_keys(pseudo).into_iter().all(|k| {
            self.row(
                "hold pseudo key",
                &ADD_PSEUDO_KEY,
                &[k.as_str().into(), id(account)],
            )
            .is_some()
        });
        if !held {
            self.exec("drop pseudo keys", &DROP_PSEUDO_KEYS, &[id(account)]);
            self.exec("drop account", &DROP_ACCOUNT, &[id(account)]);
        }
        held
    }

    /// The registered pseudos holding look-alike keys of `pseudo`, by key.
    pub fn look_alike_holders(&self, pseudo: &str) -> Vec<(String, String)> {
        pseudo_keys(pseudo)
            .into_iter()
            .filter_map(|k| {
                let holder = self.row(
                    "pseudo key holder",
                    &PSEUDO_KEY_HOLDER,
                    &[k.as_str().into()],
                );
                holder.map(|r| (k, r.text(0)))
            })
            .collect()
    }

    pub fn account_by_email(&self, email: &str) -> Option<Account> {
        let folded = email.to_ascii_lowercase();
        self.row(
            "account by email",
            &ACCOUNT_BY_EMAIL,
            &[folded.as_str().into()],
        )
        .map(|r| Account {
            id: r.int(0) as u64,
            pseudo: r.text(1),
            hash: r.text(2),
        })
    }

    pub fn account_id(&self, pseudo: &str) -> Option<u64> {
        self.row("account id", &ACCOUNT_ID, &[pseudo.into()])
            .map(|r| r.int(0) as u64)
    }

    pub fn all_pseudos(&self) -> Vec<String> {
        self.rows("pseudos", &ALL_PSEUDOS, &[])
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    pub fn are_friends(&self, a: u64, b: u64) -> bool {
        self.row("are friends", &ARE_FRIENDS, &[id(a), id(b)])
            .is_some()
    }

    pub fn has_request(&self, from: u64, to: u64) -> bool {
        self.row("has request", &HAS_REQUEST, &[id(from), id(to)])
            .is_some()
    }

    /// Record a request; `notified` says whether the target already heard (online).
    pub fn add_request(&self, from: u64, to: u64, notified: bool) -> bool {
        let params = [
            id(from),
            id(to),
            now_secs().into(),
            (notified as i64).into(),
        ];
        self.exec("add request", &ADD_REQUEST, &params).is_some()
    }

    /// Remove a pending request; false if there was none.
    pub fn take_request(&self, from: u64, to: u64) -> bool {
        self.exec("take request", &TAKE_REQUEST, &[id(from), id(to)])
            .is_some_and(|n| n > 0)
    }

    pub fn befriend(&self, a: u64, b: u64) -> bool {
        let ok = self
            .exec("befriend", &BEFRIEND, &[id(a), id(b), now_secs().into()])
            .is_some();
        // A request the other way is answered by the friendship too.
        let _ = self.take_request(b, a);
        ok
    }

    pub fn friends(&self, id: u64, max: usize) -> Vec<String> {
        let mut v = self.names("friends", &FRIENDS, id);
        v.truncate(max);
        v
    }

    /// Pseudos of users whose friend request to `id` is pending.
    pub fn requests_to(&self, id: u64, max: usize) -> Vec<String> {
        let mut v = self.names("requests", &REQUESTS_TO, id);
        v.truncate(max);
        v
    }

    /// Pending requests to `id` it has not been told about yet; marks them told.
    pub fn take_unnotified_requests(&self, user: u64) -> Vec<String> {
        let mut names = std::collections::HashMap::new();
        let mut v: Vec<(i64, String)> = self
            .rows("take requests", &TAKE_REQUESTS, &[id(user)])
            .iter()
            .filter_map(|r| Some((r.int(1), self.pseudo_of(r.int(0), &mut names)?)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// The pseudo of account `id`, remembered in `seen` for the next row.
    fn pseudo_of(
        &self,
        id: i64,
        seen: &mut std::collections::HashMap<i64, String>,
    ) -> Option<String> {
        if let Some(p) = seen.get(&id) {
            return Some(p.clone());
        }
        let p = self.row("pseudo", &PSEUDO_OF, &[Value::Int(id)])?.text(0);
        seen.insert(id, p.clone());
        Some(p)
    }

    pub fn add_notice(&self, user: u64, code: u16, pseudo: &str) {
        let params = [id(user), (code as i64).into(), pseudo.into()];
        let _ = self.exec("add notice", &ADD_NOTICE, &params);
    }

    pub fn take_notices(&self, user: u64) -> Vec<Notice> {
        let mut rows: Vec<(i64, Notice)> = self
            .rows("take notices", &TAKE_NOTICES, &[id(user)])
            .iter()
            .map(|r| {
                let n = Notice {
                    code: r.int(1) as u16,
                    pseudo: r.text(2),
                };
                (r.int(0), n)
            })
            .collect();
        rows.sort_by_key(|(id, _)| *id);
        rows.into_iter().map(|(_, n)| n).collect()
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
        let params = [
            id(from),
            id(to),
            text.into(),
            sent.into(),
            (delivered as i64).into(),
        ];
        self.row("insert message", &INSERT_MESSAGE, &params)
            .map(|r| r.int(0) as u64)
    }

    /// Messages to `to` not yet delivered, oldest first, marked delivered.
    pub fn take_undelivered(&self, to: u64) -> Vec<Undelivered> {
        let mut names = std::collections::HashMap::new();
        self.taken("take undelivered", &TAKE_UNDELIVERED, to, |db, r| {
            db.pseudo_of(r.int(1), &mut names)
        })
    }

    /// The rows `sql` (id, sender, body, sent; for recipient ?1) took for
    /// `to`, oldest first, each sender named by `from` (None: skipped).
    fn taken(
        &self,
        what: &str,
        sql: &Sql,
        to: u64,
        mut from: impl FnMut(&Self, &Row) -> Option<String>,
    ) -> Vec<Undelivered> {
        let mut out: Vec<Undelivered> = self
            .rows(what, sql, &[id(to)])
            .iter()
            .filter_map(|r| {
                Some(Undelivered {
                    id: r.int(0) as u64,
                    from: from(self, r)?,
                    text: r.text(2),
                    sent: r.int(3).max(0) as u64,
                })
            })
            .collect();
        out.sort_by_key(|u| u.id);
        out
    }

    /// Keep a guest's text for offline account `to` unless `limit` are
    /// already waiting for it; false when full (or on failure).
    pub fn add_guest_mail(&self, to: u64, from: &str, text: &str, sent: i64, limit: usize) -> bool {
        let waiting = self.row("count guest mail", &GUEST_MAIL_COUNT, &[id(to)]);
        match waiting.map(|r| r.int(0)) {
            Some(n) if (n as usize) < limit => {
                let params = [id(to), from.into(), text.into(), sent.into()];
                self.exec("add guest mail", &GUEST_MAIL_ADD, &params)
                    .is_some()
            }
            _ => false,
        }
    }

    /// Guests' texts waiting for `to`, oldest first, deleted.
    /// Which of the accounts `ids` have anything waiting that a flush
    /// would take (the rest have nothing). One statement, whatever the
    /// number of ids; the caller bounds it.
    pub fn waiting_among(&self, ids: &[u64]) -> std::collections::HashSet<u64> {
        if ids.is_empty() {
            return Default::default();
        }
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        self.rows("waiting among", &WAITING_AMONG, &[Value::Text(&list)])
            .iter()
            .map(|r| r.int(0) as u64)
            .collect()
    }

    pub fn take_guest_mail(&self, to: u64) -> Vec<Undelivered> {
        self.taken("take guest mail", &TAKE_GUEST_MAIL, to, |_, r| {
            Some(r.text(1))
        })
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
        let (lo, hi) = (a.min(b), a.max(b));
        let params = [id(lo), id(hi), before.into(), (limit as i64).into()];
        let mut out: Vec<_> = self
            .rows("history", &HISTORY_SQL, &params)
            .iter()
            .map(|r| {
                (
                    r.int(0) as u64,
                    r.int(1) as u64,
                    r.text(2),
                    r.int(3).max(0) as u64,
                )
            })
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_the_stopped_store_waits_for_its_final_checkpoint() {
        let dir = std::env::temp_dir().join(format!(
            "cw-store-checkpoint-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let (s, t) = Store::open(&path).unwrap();
        s.call(|db| db.create_account("a@x.org", "alice", "h").unwrap())
            .unwrap();
        s.stop();
        t.join();
        // Everything is in the database file itself; the WAL is empty.
        let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
