//! Store queries only operators use (bans, account deletion, password
//! resets) and the store's own health: kept apart from the chat queries so
//! the hot paths stay easy to read. Runs on the store thread like any job.

use std::time::Duration;

use crossbeam_channel::bounded;

use super::sql::{same, Sql, Value};
use super::{now_secs, Db, Store, StoreError, Target};
use crate::hub::bans::Ban;

impl Store {
    /// Run `f` on the store thread and wait until its group has committed:
    /// its result and whether the commit succeeded.
    pub fn call_committed<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> T + Send + 'static,
    ) -> Result<(T, bool), StoreError> {
        let (tx, rx) = bounded(1);
        self.submit(move |db| {
            let v = f(db);
            Some(Box::new(move |ok| {
                let _ = tx.send((v, ok));
            }))
        })?;
        rx.recv().map_err(|_| StoreError::Busy)
    }

    /// Whether the store thread runs a job within `limit` (the health check).
    pub fn ping(&self, limit: Duration) -> bool {
        let (tx, rx) = bounded(1);
        let queued = self.tx.try_send(super::Msg::Job(Box::new(move |_: &Db| {
            let _ = tx.send(());
            None
        })));
        queued.is_ok() && rx.recv_timeout(limit).is_ok()
    }

    /// Jobs waiting for the store thread.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// The operator's online backup into the new file `dest`: its size.
    /// SQLite only; a PostgreSQL store is backed up with PostgreSQL's own
    /// tools (docs/operations.md), and says so.
    pub fn backup(&self, dest: &std::path::Path) -> Result<u64, String> {
        match self.target() {
            Target::Sqlite(path) => super::backup(path, dest),
            Target::Postgres(t) => Err(format!(
                "the store is PostgreSQL ({}): back it up with pg_dump or the \
                 server's own backups, not through chinwagd",
                t.shown()
            )),
        }
    }
}

const ADD_BAN: Sql = same(
    "INSERT INTO bans(kind, value, reason, created) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT DO NOTHING",
);
const REMOVE_BAN: Sql = same("DELETE FROM bans WHERE kind = ?1 AND value = ?2");
const BANS: Sql = same("SELECT kind, value, reason FROM bans ORDER BY kind, value");
/// Deleting an account: everything that refers to it first.
const DELETE_ACCOUNT: [(&str, Sql); 7] = [
    (
        "delete guest mail",
        same("DELETE FROM guest_mail WHERE recipient = ?1"),
    ),
    (
        "delete messages",
        same("DELETE FROM messages WHERE sender = ?1 OR recipient = ?1"),
    ),
    (
        "delete notices",
        same(
            "DELETE FROM notices WHERE user_id = ?1
             OR pseudo = (SELECT pseudo FROM accounts WHERE id = ?1)",
        ),
    ),
    (
        "delete requests",
        same("DELETE FROM friend_requests WHERE requester = ?1 OR target = ?1"),
    ),
    (
        "delete friendships",
        same("DELETE FROM friendships WHERE a = ?1 OR b = ?1"),
    ),
    (
        "delete pseudo keys",
        same("DELETE FROM pseudo_keys WHERE account = ?1"),
    ),
    ("delete account", same("DELETE FROM accounts WHERE id = ?1")),
];
const SET_PASSWORD: Sql = same("UPDATE accounts SET hash = ?1 WHERE pseudo = ?2");
const EMAIL_OF: Sql = same("SELECT email FROM accounts WHERE pseudo = ?1");

impl Db<'_> {
    /// Record a ban; false if it was already there.
    pub fn add_ban(&self, ban: &Ban, reason: &str) -> bool {
        let (kind, value) = ban.columns();
        let params = [
            kind.into(),
            value.as_str().into(),
            reason.into(),
            now_secs().into(),
        ];
        self.exec("add ban", &ADD_BAN, &params)
            .is_some_and(|n| n > 0)
    }

    pub fn remove_ban(&self, ban: &Ban) -> bool {
        let (kind, value) = ban.columns();
        self.exec(
            "remove ban",
            &REMOVE_BAN,
            &[kind.into(), value.as_str().into()],
        )
        .is_some_and(|n| n > 0)
    }

    /// Every stored ban with its reason.
    pub fn bans(&self) -> Vec<(Ban, String)> {
        let mut out = Vec::new();
        for r in self.rows("bans", &BANS, &[]) {
            let (kind, value) = (r.text(0), r.text(1));
            match Ban::from_columns(&kind, &value) {
                Some(b) => out.push((b, r.text(2))),
                None => log::warn!("store: ignoring unreadable ban {kind} {value:?}"),
            }
        }
        out
    }

    /// Delete an account with everything that refers to it; false if there
    /// is no account by that pseudo.
    pub fn delete_account(&self, pseudo: &str) -> bool {
        let Some(id) = self.account_id(pseudo) else {
            return false;
        };
        let id = Value::Int(id as i64);
        DELETE_ACCOUNT
            .iter()
            .all(|(what, sql)| self.exec(what, sql, &[id]).is_some())
    }

    /// Replace the password hash of `pseudo`; false if there is no such account.
    pub fn set_password_hash(&self, pseudo: &str, hash: &str) -> bool {
        self.exec("set password", &SET_PASSWORD, &[hash.into(), pseudo.into()])
            .is_some_and(|n| n > 0)
    }

    /// The email of `pseudo` (for the operator's listing).
    pub fn email_of(&self, pseudo: &str) -> Option<String> {
        self.row("email of", &EMAIL_OF, &[pseudo.into()])
            .map(|r| r.text(0))
    }
}
