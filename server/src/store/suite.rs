//! The store's one test suite, run against both databases: every case is a
//! function of a `Backend`, and `on_both!` makes two tests of it,
//! `suite::sqlite::NAME` (a database file of its own) and
//! `suite::postgres::NAME` (a schema of its own on a PostgreSQL server the
//! tests start; see tests/common/postgres.rs). What only one database has
//! (SQLite's checkpoint and query plans; PostgreSQL's several writers,
//! concurrent migrations, a server restart) is tested beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};

use super::{After, CreateError, Db, Store, StoreThread, Target, GROUP};
use crate::hub::bans::Ban;

#[path = "../../tests/common/certs.rs"]
mod certs;
#[path = "../../tests/common/postgres.rs"]
mod testpg;

const PATIENCE: Duration = Duration::from_secs(20);

/// A directory removed when its last holder lets go.
pub(super) struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database for one test: a file in a directory removed with the last
/// clone, or a schema left to its server's end.
#[derive(Clone)]
pub(super) enum Backend {
    Sqlite(Arc<TempDir>),
    Postgres {
        server: Arc<testpg::Postgres>,
        url: String,
        schema: String,
    },
}

impl Backend {
    fn sqlite(tag: &str) -> Backend {
        let dir = std::env::temp_dir().join(format!(
            "cw-store-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Backend::Sqlite(Arc::new(TempDir(dir)))
    }

    /// The SQLite file (for SQLite backends only).
    fn file(dir: &TempDir) -> PathBuf {
        dir.0.join("t.db")
    }

    /// None when the machine has no PostgreSQL and says to skip.
    fn postgres() -> Option<Backend> {
        let server = testpg::server()?;
        let (url, schema) = server.fresh_url();
        Some(Backend::Postgres {
            server,
            url,
            schema,
        })
    }

    fn target(&self) -> Target {
        match self {
            Backend::Sqlite(dir) => Target::Sqlite(Backend::file(dir)),
            Backend::Postgres { url, .. } => Target::from_settings(Path::new(""), url).unwrap(),
        }
    }

    fn open(&self) -> (Store, StoreThread) {
        Store::open_target(&self.target(), None).expect("the store opens")
    }

    /// What another connection sees: committed message bodies, in order.
    fn bodies(&self) -> Vec<String> {
        match self {
            Backend::Sqlite(dir) => {
                let other = rusqlite::Connection::open(Backend::file(dir)).unwrap();
                let mut st = other
                    .prepare("SELECT body FROM messages ORDER BY id")
                    .unwrap();
                let rows = st.query_map([], |r| r.get(0)).unwrap();
                rows.map(Result::unwrap).collect()
            }
            Backend::Postgres { server, schema, .. } => server
                .session(schema)
                .query("SELECT body FROM messages ORDER BY id", &[])
                .unwrap()
                .iter()
                .map(|r| String::from_utf8(r.get::<_, Vec<u8>>(0)).unwrap())
                .collect(),
        }
    }

    /// One integer, read by another connection.
    fn scalar(&self, sql: &str) -> i64 {
        match self {
            Backend::Sqlite(dir) => rusqlite::Connection::open(Backend::file(dir))
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Backend::Postgres { server, schema, .. } => {
                server.session(schema).query_one(sql, &[]).unwrap().get(0)
            }
        }
    }

    /// Pretend a newer chinwagd migrated this database.
    fn set_schema_version(&self, v: i64) {
        match self {
            Backend::Sqlite(dir) => rusqlite::Connection::open(Backend::file(dir))
                .unwrap()
                .pragma_update(None, "user_version", v)
                .unwrap(),
            Backend::Postgres { server, schema, .. } => {
                server
                    .session(schema)
                    .execute("UPDATE chinwag_schema SET version = $1", &[&v])
                    .unwrap();
            }
        }
    }
}

/// `$name(&Backend)` as two tests: `sqlite::$name` and `postgres::$name`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::Backend::sqlite(stringify!($name)));
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(b) = super::Backend::postgres() {
                    super::$name(&b);
                }
            })*
        }
    };
}

on_both!(
    an_after_runs_once_its_row_is_visible_to_other_connections,
    a_failed_commit_is_reported_to_every_after_and_keeps_nothing,
    lookups_answer_what_was_stored,
    emails_match_case_blind_on_ascii_letters_only,
    jobs_queued_together_commit_together_up_to_a_group,
    accounts_friends_messages,
    message_texts_come_back_exactly,
    afters_run_after_commit,
    a_panicking_job_is_rolled_back_alone_and_the_store_carries_on,
    a_call_answers_before_the_afters_queued_ahead_of_it,
    a_job_whose_write_fails_is_rolled_back_and_told_so,
    bans_and_account_deletion,
    the_read_pool_sees_what_was_committed_and_cannot_write,
    migrations_apply_once_and_refuse_newer_databases,
    guests_mail_is_kept_bounded_given_once_and_deleted_with_its_account,
    look_alike_pseudos_are_refused_by_the_store_until_the_holder_is_deleted,
    migration_5_back_fills_the_look_alike_keys_oldest_first,
    waiting_among_names_exactly_the_accounts_a_flush_would_give_something,
);

fn stop(s: Store, t: StoreThread) {
    s.stop();
    t.join();
}

/// Two accounts to send messages between.
fn two_accounts(s: &Store) -> (u64, u64) {
    let (ids, ok) = s
        .call_committed(|db| {
            (
                db.create_account("a@x.org", "alice", "h").unwrap(),
                db.create_account("b@x.org", "bob", "h").unwrap(),
            )
        })
        .unwrap();
    assert!(ok);
    ids
}

/// Store `text` from a to b; the `after` reports (committed, what another
/// connection sees at that moment).
fn store_message(
    s: &Store,
    b: &Arc<Backend>,
    (from, to): (u64, u64),
    text: &str,
) -> Receiver<(bool, Vec<String>)> {
    let (tx, rx) = bounded(1);
    let (b, text) = (b.clone(), text.to_owned());
    s.submit(move |db| {
        db.insert_message(from, to, &text, false).unwrap();
        Some(Box::new(move |ok| {
            let _ = tx.send((ok, b.bodies()));
        }) as After)
    })
    .unwrap();
    rx
}

/// The suite's cases take `&Backend`; those whose afters read through
/// another connection share it with the store thread.
fn shared(b: &Backend) -> Arc<Backend> {
    Arc::new(b.clone())
}

fn an_after_runs_once_its_row_is_visible_to_other_connections(b: &Backend) {
    let (s, t) = b.open();
    let ids = two_accounts(&s);
    let view = shared(b);
    // Several jobs, likely in one group: each after sees its own row.
    let answers: Vec<_> = (0..5)
        .map(|i| store_message(&s, &view, ids, &format!("m{i}")))
        .collect();
    for (i, rx) in answers.into_iter().enumerate() {
        let (ok, seen) = rx.recv_timeout(PATIENCE).unwrap();
        assert!(ok, "job {i} committed");
        assert!(
            seen.contains(&format!("m{i}")),
            "job {i}'s after ran before its row was committed: {seen:?}"
        );
    }
    stop(s, t);
}

fn a_failed_commit_is_reported_to_every_after_and_keeps_nothing(b: &Backend) {
    let (s, t) = b.open();
    let ids = two_accounts(&s);
    let view = shared(b);
    s.fail_commits(true);
    let (ok, seen) = store_message(&s, &view, ids, "lost")
        .recv_timeout(PATIENCE)
        .unwrap();
    assert!(!ok, "the after was told the commit failed");
    assert!(seen.is_empty(), "{seen:?}");
    s.fail_commits(false);
    let (ok, seen) = store_message(&s, &view, ids, "kept")
        .recv_timeout(PATIENCE)
        .unwrap();
    assert!(ok);
    assert_eq!(seen, vec!["kept"]);
    stop(s, t);
}

fn clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn lookups_answer_what_was_stored(b: &Backend) {
    let (s, t) = b.open();
    let before = clock();
    let (a, ok) = s
        .call_committed(move |db| {
            let a = db.create_account("a@x.org", "alice", "hash-a").unwrap();
            let b = db.create_account("b@x.org", "bob", "hash-b").unwrap();
            let found = db.account_by_email("A@X.ORG").expect("emails ignore case");
            assert_eq!((found.id, found.pseudo.as_str()), (a, "alice"));
            assert_eq!(found.hash, "hash-a");
            assert!(db.account_by_email("c@x.org").is_none());
            let mut all = db.all_pseudos();
            all.sort();
            assert_eq!(all, vec!["alice", "bob"]);
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
            a
        })
        .unwrap();
    assert!(ok);
    let created = b.scalar(&format!("SELECT created FROM accounts WHERE id = {a}"));
    assert!((before..=clock()).contains(&created), "{created}");
    stop(s, t);
}

/// SQLite's NOCASE folds A-Z only; PostgreSQL must answer the same.
fn emails_match_case_blind_on_ascii_letters_only(b: &Backend) {
    let (s, t) = b.open();
    s.call(|db| {
        db.create_account("élan@Example.org", "elan", "h").unwrap();
        assert!(db.account_by_email("éLAN@EXAMPLE.ORG").is_some());
        assert!(db.account_by_email("ÉLAN@example.org").is_none());
        assert_eq!(
            db.create_account("éLan@example.ORG", "other", "h"),
            Err(CreateError::EmailTaken)
        );
        assert!(db.create_account("Élan@example.org", "third", "h").is_ok());
    })
    .unwrap();
    stop(s, t);
}

/// The store itself refuses a look-alike of a registered pseudo (the hub's
/// folding: case, and look-alike letters such as a capital I for an l),
/// keeping nothing of the refused account; deleting the holder frees them.
fn look_alike_pseudos_are_refused_by_the_store_until_the_holder_is_deleted(b: &Backend) {
    let (s, t) = b.open();
    s.call(|db| {
        db.create_account("a@x.org", "alice", "h").unwrap();
        for (n, look_alike) in ["ALICE", "AIice", "alıce"].iter().enumerate() {
            assert!(
                crate::hub::names::confusable("alice", look_alike),
                "{look_alike}"
            );
            assert_eq!(
                db.create_account(&format!("{n}@y.org"), look_alike, "h"),
                Err(CreateError::PseudoTaken),
                "{look_alike}"
            );
            assert!(db.account_id(look_alike).is_none(), "{look_alike}");
            // Its email is free: nothing of the refused account is kept.
            assert!(db.account_by_email(&format!("{n}@y.org")).is_none());
        }
        assert!(db.create_account("b@x.org", "bob", "h").is_ok());
        assert!(db.delete_account("alice"));
        assert!(db.create_account("c@x.org", "AIice", "h").is_ok());
    })
    .unwrap();
    let ((), committed) = s.call_committed(|_| ()).unwrap();
    assert!(committed);
    assert_eq!(b.scalar("SELECT count(*) FROM accounts"), 2);
    stop(s, t);
}

/// A database from before migration 5 (accounts, look-alikes among them,
/// as two nodes could register before) is back-filled: the older of two
/// look-alikes holds their keys, both accounts stay, and new look-alikes of
/// any of them are refused.
fn migration_5_back_fills_the_look_alike_keys_oldest_first(b: &Backend) {
    let migrations = &super::schema::MIGRATIONS[..4];
    let accounts = "INSERT INTO accounts(email, pseudo, hash, created) VALUES
         ('a@x.org', 'alice', 'h', 0), ('b@x.org', 'AIice', 'h', 0),
         ('c@x.org', 'bob', 'h', 0);";
    match b {
        Backend::Sqlite(dir) => {
            let mut c = rusqlite::Connection::open(Backend::file(dir)).unwrap();
            let tx = c.transaction().unwrap();
            for m in migrations {
                tx.execute_batch(m.lite).unwrap();
            }
            tx.execute_batch(accounts).unwrap();
            tx.pragma_update(None, "user_version", 4).unwrap();
            tx.commit().unwrap();
        }
        Backend::Postgres { server, schema, .. } => {
            let mut c = server.session(schema);
            let mut tx = c.transaction().unwrap();
            tx.batch_execute(
                "CREATE TABLE chinwag_schema(version BIGINT NOT NULL);
                 INSERT INTO chinwag_schema(version) VALUES (4);",
            )
            .unwrap();
            for m in migrations {
                tx.batch_execute(m.pg.unwrap_or(m.lite)).unwrap();
            }
            tx.batch_execute(accounts).unwrap();
            tx.commit().unwrap();
        }
    }
    let (s, t) = b.open();
    let holder = |key: &str| {
        b.scalar(&format!(
            "SELECT account FROM pseudo_keys WHERE key = '{key}'"
        ))
    };
    // Ids 1, 2, 3: alice, AIice, bob.
    let alice = super::pseudo_keys("alice");
    for k in &alice {
        assert_eq!(
            holder(k),
            1,
            "the older look-alike holds the keys they share"
        );
    }
    for k in super::pseudo_keys("AIice")
        .iter()
        .filter(|k| !alice.contains(k))
    {
        assert_eq!(holder(k), 2, "the younger keeps the keys it alone has");
    }
    for k in super::pseudo_keys("bob") {
        assert_eq!(holder(&k), 3);
    }
    assert_eq!(b.scalar("SELECT count(*) FROM pseudo_keys"), {
        let mut all: Vec<String> = ["alice", "AIice", "bob"]
            .iter()
            .flat_map(|p| super::pseudo_keys(p))
            .collect();
        all.sort();
        all.dedup();
        all.len() as i64
    });
    s.call(|db| {
        assert!(db.account_id("AIice").is_some(), "both accounts stay");
        for p in ["ALICE", "BOB", "bob"] {
            assert_eq!(
                db.create_account("n@x.org", p, "h"),
                Err(CreateError::PseudoTaken),
                "{p}"
            );
        }
        assert!(db.create_account("n@x.org", "carol", "h").is_ok());
    })
    .unwrap();
    stop(s, t);
}

fn jobs_queued_together_commit_together_up_to_a_group(b: &Backend) {
    let (s, t) = b.open();
    let ids = two_accounts(&s);
    let view = shared(b);
    // Hold the store thread while a group and one more job queue up.
    let release = hold(&s);
    let answers: Vec<_> = (0..=GROUP)
        .map(|i| store_message(&s, &view, ids, &format!("m{i}")))
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
    stop(s, t);
}

fn accounts_friends_messages(b: &Backend) {
    let (s, t) = b.open();
    let (a, bob) = s
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
        let b = bob;
        assert!(db.add_request(a, b, false));
        assert_eq!(db.requests_to(b, 10), vec!["alice"]);
        assert_eq!(db.take_unnotified_requests(b), vec!["alice"]);
        assert!(db.take_unnotified_requests(b).is_empty());
        // Asking again does not make a told request untold.
        assert!(db.add_request(a, b, false));
        assert!(db.take_unnotified_requests(b).is_empty());
        assert!(db.take_request(a, b));
        assert!(!db.take_request(a, b));
        assert!(db.befriend(a, b));
        assert!(db.befriend(a, b), "twice is harmless");
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
        // Lists are in bytewise order, whatever the database's locale.
        for (i, p) in ["Zed", "ann", "Émile", "bea"].iter().enumerate() {
            let f = db.create_account(&format!("f{i}@x.org"), p, "h").unwrap();
            db.befriend(a, f);
        }
        assert_eq!(db.friends(a, 10), vec!["Zed", "ann", "bea", "bob", "Émile"]);
        assert_eq!(db.friends(a, 2), vec!["Zed", "ann"]);
    })
    .unwrap();
    stop(s, t);
}

/// Texts from guests (no account) to an offline account (docs/bridging.md):
/// kept up to a bound, in order, with their times, handed over once, gone
/// with the account.
fn guests_mail_is_kept_bounded_given_once_and_deleted_with_its_account(b: &Backend) {
    let (s, t) = b.open();
    s.call(|db| {
        let carol = db.create_account("c@x.org", "carol", "h").unwrap();
        assert!(db.add_guest_mail(carol, "gus", "hi \u{e9}\0!", 1_700_000_000, 2));
        assert!(db.add_guest_mail(carol, "eve", "second", 1_700_000_001, 2));
        assert!(
            !db.add_guest_mail(carol, "eve", "third", 1_700_000_002, 2),
            "full"
        );
        let got = db.take_guest_mail(carol);
        let seen: Vec<(&str, &str, u64)> = got
            .iter()
            .map(|u| (u.from.as_str(), u.text.as_str(), u.sent))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("gus", "hi \u{e9}\0!", 1_700_000_000),
                ("eve", "second", 1_700_000_001)
            ]
        );
        assert!(db.take_guest_mail(carol).is_empty(), "once");
        // Not history: that is between accounts.
        assert!(db.add_guest_mail(carol, "gus", "again", 1, 2));
        assert!(db.delete_account("carol"));
        let again = db.create_account("c2@x.org", "carol", "h").unwrap();
        assert!(
            db.take_guest_mail(again).is_empty(),
            "deleted with its account"
        );
    })
    .unwrap();
    stop(s, t);
}

/// The cluster's re-check of stored items (docs/scaling.md, "Delivery"):
/// of the accounts asked about, exactly those with something a flush would
/// take, of each kind; none once taken.
fn waiting_among_names_exactly_the_accounts_a_flush_would_give_something(b: &Backend) {
    let (s, t) = b.open();
    s.call(|db| {
        let id = |n: &str| db.create_account(&format!("{n}@x.org"), n, "h").unwrap();
        let (m, r, n, g, idle, delivered, notified) = (
            id("m"),
            id("r"),
            id("n"),
            id("g"),
            id("idle"),
            id("deliv"),
            id("notif"),
        );
        db.insert_message(idle, m, "stored", false).unwrap();
        db.insert_message(idle, delivered, "live", true).unwrap();
        db.add_request(idle, r, false);
        db.add_request(idle, notified, true);
        db.add_notice(n, 131, "idle");
        assert!(db.add_guest_mail(g, "gus", "hi", 1, 2));
        let all = [m, r, n, g, idle, delivered, notified, 9_999_999];
        let mut want = std::collections::HashSet::from([m, r, n, g]);
        assert_eq!(db.waiting_among(&all), want);
        // Only the ids asked about, and nothing for an empty list.
        assert_eq!(db.waiting_among(&[m, idle]), [m].into());
        assert!(db.waiting_among(&[]).is_empty());
        // Taken: nothing waits any more.
        assert_eq!(db.take_undelivered(m).len(), 1);
        want.remove(&m);
        assert_eq!(db.waiting_among(&all), want);
        db.take_unnotified_requests(r);
        db.take_notices(n);
        db.take_guest_mail(g);
        assert!(db.waiting_among(&all).is_empty());
    })
    .unwrap();
    stop(s, t);
}

/// A message is any UTF-8 text: NUL characters, any script, up to the
/// protocol's largest, stored and given back byte for byte.
fn message_texts_come_back_exactly(b: &Backend) {
    let (s, t) = b.open();
    let (a, bob) = two_accounts(&s);
    let texts = [
        "nul \0 inside\0".to_owned(),
        "ünïcödé 🦀 中文 \u{202e}".to_owned(),
        String::new(),
        "x".repeat(chinwag_proto::accounts::MAX_MESSAGE),
    ];
    let sent = texts.clone();
    let ((), ok) = s
        .call_committed(move |db| {
            for t in &sent {
                db.insert_message(a, bob, t, false).unwrap();
            }
        })
        .unwrap();
    assert!(ok);
    let back = s
        .call(move |db| {
            let page: Vec<String> = db.history(a, bob, 0, 10).into_iter().map(|m| m.2).collect();
            let offline: Vec<String> = db
                .take_undelivered(bob)
                .into_iter()
                .map(|m| m.text)
                .collect();
            (page, offline)
        })
        .unwrap();
    assert_eq!(back.0, texts);
    assert_eq!(back.1, texts);
    stop(s, t);
}

fn afters_run_after_commit(b: &Backend) {
    let (s, t) = b.open();
    let (tx, rx) = bounded(1);
    s.submit(move |db| {
        let id = db.create_account("z@x.org", "zed", "h").ok();
        Some(Box::new(move |ok| {
            let _ = tx.send((id.is_some(), ok));
        }) as After)
    })
    .unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), (true, true));
    stop(s, t);
}

type TestJob = Box<dyn FnOnce(&Db) -> Option<After> + Send>;

/// Hold the store thread with a job of its own (its group taken, nothing
/// else in it) until the returned sender sends: what is queued meanwhile
/// runs in the next groups.
fn hold(s: &Store) -> crossbeam_channel::Sender<()> {
    let (holding, is_holding) = bounded::<()>(1);
    let (release, held) = bounded::<()>(0);
    s.submit(move |_| {
        let _ = holding.send(());
        let _ = held.recv();
        None
    })
    .unwrap();
    is_holding.recv_timeout(PATIENCE).unwrap();
    release
}

/// Queue `jobs` behind a held store thread so they all run in one group,
/// of their own. So a `call` made next usually shares their group and
/// answers before their afters run: the order a loaded machine once
/// produced by chance.
fn one_group(s: &Store, jobs: Vec<TestJob>) {
    let release = hold(s);
    for j in jobs {
        s.submit(j).unwrap();
    }
    release.send(()).unwrap();
}

fn a_panicking_job_is_rolled_back_alone_and_the_store_carries_on(b: &Backend) {
    let (s, t) = b.open();
    let (tx, told) = bounded(4);
    let tx3 = tx.clone();
    one_group(
        &s,
        vec![
            Box::new(move |db| {
                db.create_account("a@x.org", "a", "h").unwrap();
                Some(Box::new(move |ok| {
                    let _ = tx.send(("a", ok));
                }) as After)
            }),
            Box::new(|db| {
                db.create_account("p@x.org", "p", "h").unwrap();
                panic!("injected failure");
            }),
            Box::new(move |db| {
                db.create_account("b@x.org", "b", "h").unwrap();
                Some(Box::new(move |ok| {
                    let _ = tx3.send(("b", ok));
                }) as After)
            }),
        ],
    );
    // The store thread is alive and sees exactly the two good rows.
    let mut names = s.call(|db| db.all_pseudos()).unwrap();
    names.sort();
    assert_eq!(names, vec!["a", "b"]);
    // Both good jobs are told they committed, in order. A `call` may share
    // their group and answer before its commit (see
    // `a_call_answers_before_the_afters_queued_ahead_of_it`), so wait.
    assert_eq!(told.recv_timeout(PATIENCE).unwrap(), ("a", true));
    assert_eq!(told.recv_timeout(PATIENCE).unwrap(), ("b", true));
    // Panics in a reply part are contained too: the reply part queued
    // behind it still runs, told the commit succeeded.
    s.submit(|_| Some(Box::new(|_| panic!("injected in after")) as After))
        .unwrap();
    let after_the_panic = s.call_committed(|db| db.account_id("a")).unwrap();
    assert_eq!(after_the_panic, (Some(1), true));
    // Every earlier reply part has run by now: nobody else was told.
    assert!(told.try_recv().is_err(), "told exactly twice");
    stop(s, t);
}

/// `call` answers from its job's database part, before the group commits,
/// so before the reply parts of jobs queued ahead of it in the same group
/// have run (`call_committed` waits for them). A test checking what a
/// reply part did must wait for it, not for a later `call`.
fn a_call_answers_before_the_afters_queued_ahead_of_it(b: &Backend) {
    let (s, t) = b.open();
    // Hold the store thread while a job and a call queue up behind it.
    let release = hold(&s);
    // The job's reply part waits for the test (far longer than the test
    // waits for the call's answer).
    let (open, gate) = bounded::<()>(1);
    let (tx, told) = bounded::<bool>(1);
    s.submit(move |db| {
        db.create_account("a@x.org", "a", "h").unwrap();
        Some(Box::new(move |ok| {
            let _ = gate.recv_timeout(PATIENCE * 3);
            let _ = tx.send(ok);
        }) as After)
    })
    .unwrap();
    let (answer, answered) = bounded(1);
    let caller = {
        let s = s.clone();
        std::thread::spawn(move || {
            let _ = answer.send(s.call(|db| db.all_pseudos()).ok());
        })
    };
    let deadline = Instant::now() + PATIENCE;
    while s.queue_len() < 2 {
        assert!(Instant::now() < deadline, "the call never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
    release.send(()).unwrap();
    // One group: the call sees the job's row and answers while the job's
    // reply part is still held.
    let names = answered.recv_timeout(PATIENCE).expect("the call answered");
    assert_eq!(names, Some(vec!["a".to_owned()]));
    open.send(()).unwrap();
    assert!(told.recv_timeout(PATIENCE).unwrap(), "committed");
    caller.join().unwrap();
    stop(s, t);
}

fn a_job_whose_write_fails_is_rolled_back_and_told_so(b: &Backend) {
    let (s, t) = b.open();
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
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), ("w", false));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), ("k", true));
    assert_eq!(s.call(|db| db.all_pseudos()).unwrap(), vec!["k"]);
    stop(s, t);
}

fn bans_and_account_deletion(b: &Backend) {
    let (s, t) = b.open();
    let ((), ok) = s
        .call_committed(|db| {
            let a = db.create_account("a@x.org", "alice", "h").unwrap();
            let b = db.create_account("b@x.org", "bob", "h").unwrap();
            db.befriend(a, b);
            db.insert_message(a, b, "hi", false).unwrap();
            db.insert_message(b, a, "hello", true).unwrap();
            db.add_request(b, a, false);
            db.add_notice(b, 130, "alice");
            assert!(db.add_ban(&Ban::Name("eve".into()), "spam"));
            assert!(!db.add_ban(&Ban::Name("eve".into()), "again"));
            assert!(db.add_ban(&Ban::Ip("10.0.0.1".parse().unwrap()), ""));
        })
        .unwrap();
    assert!(ok);
    s.call(|db| {
        let bans = db.bans();
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[1], (Ban::Name("eve".into()), "spam".into()));
        assert!(db.remove_ban(&Ban::Name("eve".into())));
        assert!(!db.remove_ban(&Ban::Name("eve".into())));
        assert!(db.set_password_hash("bob", "h2"));
        assert!(!db.set_password_hash("nobody", "h2"));
        assert_eq!(db.email_of("bob").as_deref(), Some("b@x.org"));
        assert!(db.delete_account("alice"));
        assert!(!db.delete_account("alice"));
        let bob = db.account_id("bob").unwrap();
        assert!(db.friends(bob, 10).is_empty());
        assert!(db.history(bob, 1, 0, 10).is_empty());
        assert!(db.take_notices(bob).is_empty());
        assert_eq!(db.account_by_email("b@x.org").unwrap().hash, "h2");
    })
    .unwrap();
    assert!(s.ping(Duration::from_secs(5)));
    stop(s, t);
}

fn the_read_pool_sees_what_was_committed_and_cannot_write(b: &Backend) {
    let (s, t) = b.open();
    // Committed before the pool reads (`call` answers before the commit).
    let ((a, bob), committed) = s
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
    assert!(s.has_read_pool());
    // Both directions, in order, the newest page.
    let page = s.read(|db| db.history(bob, a, 0, 4)).unwrap().unwrap();
    let texts: Vec<&str> = page.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(texts, vec!["m8", "r8", "m9", "r9"]);
    let found = s
        .read(|db| db.account_by_email("B@x.org"))
        .unwrap()
        .unwrap();
    assert_eq!(found.map(|f| f.id), Some(bob));
    // And cannot write.
    let wrote = s
        .read(|db| db.create_account("c@x.org", "c", "h"))
        .unwrap()
        .unwrap();
    assert!(wrote.is_err());
    assert_eq!(s.call(|db| db.account_id("c")).unwrap(), None);
    stop(s, t);
}

fn migrations_apply_once_and_refuse_newer_databases(b: &Backend) {
    let (s, t) = b.open();
    two_accounts(&s);
    stop(s, t);
    // Reopening keeps data and does not run a migration again.
    let (s, t) = b.open();
    assert_eq!(s.call(|db| db.all_pseudos().len()).unwrap(), 2);
    stop(s, t);
    b.set_schema_version(super::SCHEMA_VERSION + 1);
    let err = match Store::open_target(&b.target(), None) {
        Ok(_) => panic!("a newer schema must be refused"),
        Err(e) => e,
    };
    assert!(err.contains("newer than this chinwagd"), "{err}");
}

// What only PostgreSQL has.

/// Two nodes on one database register the same pseudo at once: exactly one
/// wins each race, the other hears "taken", and no job fails.
#[test]
fn postgres_two_stores_race_for_one_pseudo_and_one_wins() {
    let Some(b) = Backend::postgres() else { return };
    let (s1, t1) = b.open();
    let (s2, t2) = b.open();
    for round in 0..20 {
        let go = Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = [(s1.clone(), 1), (s2.clone(), 2)]
            .into_iter()
            .map(|(s, n)| {
                let go = go.clone();
                std::thread::spawn(move || {
                    s.call_committed(move |db| {
                        go.wait();
                        db.create_account(&format!("{n}-{round}@x.org"), &format!("p{round}"), "h")
                    })
                    .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let won: Vec<_> = results.iter().filter(|(r, _)| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(
            results.iter().all(|(_, committed)| *committed),
            "{results:?}"
        );
        assert!(results
            .iter()
            .any(|(r, _)| *r == Err(CreateError::PseudoTaken)));
    }
    assert_eq!(s1.call(|db| db.all_pseudos().len()).unwrap(), 20);
    stop(s1, t1);
    stop(s2, t2);
}

/// One node stores messages, notices, requests and guest mail for a user
/// while another node takes what waits for that user (a login's flush, a
/// cluster poke): every item is taken exactly once. Taking used to read
/// the waiting rows and then mark *every* waiting row, so a row committed
/// by the other node between the two statements was marked and never
/// delivered.
#[test]
fn postgres_items_stored_through_one_node_while_another_takes_them_are_taken_once() {
    let Some(b) = Backend::postgres() else { return };
    let (writer, t1) = b.open();
    let (taker, t2) = b.open();
    const N: usize = 300;
    let (to, from, askers) = writer
        .call(|db| {
            let to = db.create_account("to@x.org", "to", "h").unwrap();
            let from = db.create_account("from@x.org", "from", "h").unwrap();
            let askers: Vec<u64> = (0..N)
                .map(|i| {
                    db.create_account(&format!("r{i}@x.org"), &format!("r{i}"), "h")
                        .unwrap()
                })
                .collect();
            (to, from, askers)
        })
        .unwrap();
    let w = writer.clone();
    let writing = std::thread::spawn(move || {
        for (i, asker) in askers.into_iter().enumerate() {
            w.call_committed(move |db| {
                db.add_request(asker, to, false);
                db.insert_message(from, to, &format!("m{i}"), false);
                db.add_notice(to, 141, &format!("n{i}"));
                db.add_guest_mail(to, &format!("g{i}"), "hi", 0, usize::MAX);
            })
            .unwrap();
        }
    });
    let mut got: [Vec<String>; 4] = Default::default();
    let take = |got: &mut [Vec<String>; 4]| {
        let (m, n, g, r) = taker
            .call_committed(move |db| {
                (
                    db.take_undelivered(to),
                    db.take_notices(to),
                    db.take_guest_mail(to),
                    db.take_unnotified_requests(to),
                )
            })
            .unwrap()
            .0;
        got[0].extend(m.into_iter().map(|u| u.text));
        got[1].extend(n.into_iter().map(|x| x.pseudo));
        got[2].extend(g.into_iter().map(|u| u.from));
        got[3].extend(r);
    };
    while !writing.is_finished() {
        take(&mut got);
    }
    writing.join().unwrap();
    take(&mut got);
    let [messages, notices, guests, mut requests] = got;
    requests.sort_by_key(|r| r[1..].parse::<usize>().unwrap());
    let want = |p: &str| (0..N).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    assert_eq!(messages, want("m"), "messages, each once, in order");
    assert_eq!(notices, want("n"), "notices, each once, in order");
    assert_eq!(guests, want("g"), "guest mail, each once, in order");
    assert_eq!(requests, want("r"), "requests, each told once");
    stop(writer, t1);
    stop(taker, t2);
}

/// Nodes started together migrate one at a time and all come up.
#[test]
fn postgres_stores_opening_a_new_database_together_migrate_it_once() {
    let Some(b) = Backend::postgres() else { return };
    let b = shared(&b);
    let openers: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.open())
        })
        .collect();
    for o in openers {
        let (s, t) = o.join().unwrap();
        assert_eq!(s.call(|db| db.all_pseudos()).unwrap(), Vec::<String>::new());
        stop(s, t);
    }
    assert_eq!(
        b.scalar("SELECT version FROM chinwag_schema"),
        super::SCHEMA_VERSION
    );
    assert_eq!(b.scalar("SELECT count(*) FROM chinwag_schema"), 1);
}

/// A history page is one backwards range of the conversation index, on
/// PostgreSQL as on SQLite (store/read.rs tests SQLite's plan).
#[test]
fn postgres_a_history_page_is_one_range_of_the_conversation_index() {
    let Some(b) = Backend::postgres() else { return };
    let (s, t) = b.open();
    two_accounts(&s);
    stop(s, t);
    let Backend::Postgres { server, schema, .. } = &b else {
        unreachable!()
    };
    let mut c = server.session(schema);
    // A tiny table is read whole unless the planner is told otherwise.
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let sql = super::HISTORY_SQL.pg.unwrap();
    let plan: Vec<String> = c
        .query(&format!("EXPLAIN {sql}"), &[&1i64, &2i64, &100i64, &10i64])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join(" | ");
    assert!(
        plan.contains("Index Scan Backward using messages_conversation"),
        "{plan}"
    );
    assert!(!plan.contains("Sort"), "{plan}");
}

/// The database restarts under a running store: jobs meanwhile fail (and
/// are told so, nothing is acknowledged), and the store reconnects by
/// itself once the database is back; the read pool too.
#[test]
fn postgres_the_store_rides_out_a_database_restart() {
    let _ = env_logger::builder().is_test(true).try_init();
    let Some(server) = testpg::private_server() else {
        return;
    };
    let (url, _) = server.fresh_url();
    let target = Target::from_settings(Path::new(""), &url).unwrap();
    let (s, t) = Store::open_target(&target, None).unwrap();
    let (a, b) = two_accounts(&s);
    server.stop();
    // Refused outright (the job never ran: busy) or run and not committed.
    let answer = s.call_committed(move |db| db.insert_message(a, b, "while down", false));
    assert!(
        !matches!(answer, Ok((_, true))),
        "nothing is acknowledged while the database is down"
    );
    assert!(matches!(s.read(|db| db.account_id("alice")), Some(Err(_))));
    assert!(
        !s.ping(Duration::from_secs(5)),
        "health says the store is not responding"
    );
    server.restart();
    let (id, ok) = s
        .call_committed(move |db| db.insert_message(a, b, "after", false))
        .unwrap();
    assert!(ok && id.is_some(), "the store reconnected");
    let page = s.read(|db| db.history(a, b, 0, 10)).unwrap().unwrap();
    let texts: Vec<&str> = page.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(texts, vec!["after"]);
    assert!(s.ping(Duration::from_secs(5)));
    stop(s, t);
}

/// Whether the session `url` opens is encrypted (pg_stat_ssl), or why it
/// does not open.
fn pg_ssl_of(url: &str) -> Result<bool, String> {
    let mut conn = super::PgTarget::parse(url)?.connect()?;
    let row = conn
        .client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[test]
fn postgres_over_tls_each_sslmode_checks_what_libpq_would() {
    let started = Instant::now();
    // ssl on with a certificate for 127.0.0.1 only; the role "sslonly" may
    // connect over TLS only (hostssl, and a reject for the rest), "pwuser"
    // with a password only.
    let Some(server) = testpg::private_server_with(|dir| {
        let pki = certs::make(dir);
        let hba = dir.join("data").join("pg_hba.conf");
        let theirs = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "hostssl all sslonly 127.0.0.1/32 trust\n\
                 host all sslonly 127.0.0.1/32 reject\n\
                 host all pwuser 127.0.0.1/32 scram-sha-256\n{theirs}"
            ),
        )
        .unwrap();
        vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", pki.server_cert.display()),
            format!("ssl_key_file={}", pki.server_key.display()),
        ]
    }) else {
        return;
    };
    let ca = server.dir.join("ca.pem").display().to_string();
    let other = server.dir.join("other-ca.pem").display().to_string();
    let at = |user: &str, host: &str, query: &str| {
        format!("postgres://{user}@{host}:{}/postgres?{query}", server.port)
    };
    let me = testpg::USER;
    assert_eq!(
        pg_ssl_of(&at(
            me,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        )),
        Ok(true)
    );
    let err = pg_ssl_of(&at(
        me,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .unwrap_err();
    assert!(
        err.contains("sslmode=verify-full") && err.contains("UnknownIssuer"),
        "{err}"
    );
    // require: encrypted, the certificate not checked; prefer (libpq's
    // default) takes TLS when offered; disable does not.
    assert_eq!(pg_ssl_of(&at(me, "127.0.0.1", "sslmode=require")), Ok(true));
    assert_eq!(
        pg_ssl_of(&at(me, "127.0.0.1", "connect_timeout=5")),
        Ok(true)
    );
    assert_eq!(
        pg_ssl_of(&at(me, "127.0.0.1", "sslmode=disable")),
        Ok(false)
    );
    // The certificate names 127.0.0.1, not localhost: verify-full through
    // "localhost" fails on the name, verify-ca (and require with a root
    // certificate) check the chain only.
    let err = pg_ssl_of(&at(
        me,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap_err();
    assert!(err.contains("not valid for name \"localhost\""), "{err}");
    assert_eq!(
        pg_ssl_of(&at(
            me,
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        )),
        Ok(true)
    );
    assert_eq!(
        pg_ssl_of(&at(
            me,
            "localhost",
            &format!("sslmode=require&sslrootcert={ca}")
        )),
        Ok(true)
    );
    let err = pg_ssl_of(&at(
        me,
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // TLS-only for this role: plain is refused with the server's reason.
    let mut admin = server.admin().unwrap();
    admin
        .batch_execute(
            "CREATE ROLE sslonly LOGIN; CREATE ROLE pwuser LOGIN PASSWORD 'pg-pa55-word'",
        )
        .unwrap();
    let err = pg_ssl_of(&at("sslonly", "127.0.0.1", "sslmode=disable")).unwrap_err();
    assert!(
        err.contains("sslmode=disable") && err.contains("no encryption"),
        "{err}"
    );
    assert_eq!(
        pg_ssl_of(&at("sslonly", "127.0.0.1", "sslmode=require")),
        Ok(true)
    );
    // store_password_file: the password from a 0600 file; a file others
    // can read is refused; no password is refused by the server.
    let dir = std::env::temp_dir().join(format!(
        "cw-pgpw-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let _gone = TempDir(dir.clone());
    let pw = dir.join("pw");
    let write = |text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&pw, text).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let url = at(
        "pwuser",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let connect = || -> Result<(), String> {
        let Target::Postgres(mut t) = Target::from_settings(Path::new(""), &url)? else {
            unreachable!()
        };
        t.read_password(&pw)?;
        t.connect().map(drop)
    };
    write("pg-pa55-word\n", 0o600);
    assert_eq!(connect(), Ok(()));
    write("not-the-word\n", 0o600);
    let err = connect().unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-word"), "{err}");
    write("pg-pa55-word\n", 0o640);
    let err = connect().unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    assert!(pg_ssl_of(&url).is_err(), "no password, no session");
    // The store itself over verify-full: migrations, a write, a read.
    let (plain, _) = server.fresh_url();
    let url = format!("{plain}&sslmode=verify-full&sslrootcert={ca}");
    let (s, t) =
        Store::open_target(&Target::from_settings(Path::new(""), &url).unwrap(), None).unwrap();
    let (a, b) = two_accounts(&s);
    let (id, ok) = s
        .call_committed(move |db| db.insert_message(a, b, "over TLS", false))
        .unwrap();
    assert!(ok && id.is_some());
    stop(s, t);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// The cost of the cluster's re-check of stored items (docs/scaling.md,
/// "Delivery"), measured, not asserted: `waiting_among` on batches of
/// `cluster::recheck::BATCH` users out of 100,000 accounts, with 20,000
/// undelivered messages waiting for others (offline mailboxes) and
/// 200,000 delivered ones, on both databases. Run by hand:
/// `cargo test -p chinwagd --release --lib waiting_among_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn waiting_among_cost_with_many_users() {
    const USERS: i64 = 100_000;
    let fill = [
        "INSERT INTO accounts(id, email, pseudo, hash, created)
         SELECT g, 'u' || g || '@x.org', 'u' || g, 'h', 0 FROM {series}",
        // Undelivered: 20,000 for users above 50,000 (offline mailboxes).
        "INSERT INTO messages(sender, recipient, body, sent, delivered)
         SELECT 1, 50000 + (g % 50000) + 1, {body}, 0, 0 FROM {series20k}",
        "INSERT INTO messages(sender, recipient, body, sent, delivered)
         SELECT 2, (g % 100000) + 1, {body}, 0, 1 FROM {series200k}",
    ];
    let sqlite = Backend::sqlite("cost");
    let postgres = Backend::postgres();
    for b in std::iter::once(&sqlite).chain(postgres.as_ref()) {
        let (s, t) = b.open();
        stop(s, t);
        let (name, series, body) = match b {
            Backend::Sqlite(_) => (
                "sqlite",
                "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) SELECT g FROM s)",
                "'hello'",
            ),
            Backend::Postgres { .. } => (
                "postgres",
                "generate_series(1, {n}) AS g",
                "convert_to('hello', 'UTF8')",
            ),
        };
        let series_of = |n: i64| series.replace("{n}", &n.to_string());
        for sql in &fill {
            let sql = sql
                .replace("{series}", &series_of(USERS))
                .replace("{series20k}", &series_of(20_000))
                .replace("{series200k}", &series_of(200_000))
                .replace("{body}", body);
            match b {
                Backend::Sqlite(dir) => {
                    rusqlite::Connection::open(Backend::file(dir))
                        .unwrap()
                        .execute_batch(&sql)
                        .unwrap();
                }
                Backend::Postgres { server, schema, .. } => {
                    let mut c = server.session(schema);
                    c.batch_execute(&sql).unwrap();
                    c.batch_execute("ANALYZE").unwrap();
                }
            }
        }
        let (s, t) = b.open();
        let batch = crate::cluster::recheck::BATCH as u64;
        // Users with mail in the upper half: one batch in ten has some.
        let mut times = Vec::new();
        let mut found = 0;
        for k in 0..(USERS as u64 / batch) {
            let ids: Vec<u64> = (k * batch + 1..=(k + 1) * batch).collect();
            let started = Instant::now();
            found += s.call(move |db| db.waiting_among(&ids).len()).unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{name}: waiting_among over {batch} of {USERS} users: median {:?}, max {:?} \
             (store job round trip included); {found} users found",
            times[times.len() / 2],
            times[times.len() - 1],
        );
        assert_eq!(found, 20_000);
        stop(s, t);
    }
}
