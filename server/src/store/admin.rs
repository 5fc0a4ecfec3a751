//! Store queries only operators use (bans, account deletion, password
//! resets) and the store's own health: kept apart from the chat queries so
//! the hot paths stay easy to read. Runs on the store thread like any job.

use std::time::Duration;

use crossbeam_channel::bounded;
use rusqlite::{params, OptionalExtension};

use super::{now_secs, Db, Store, StoreError};
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
}

impl Db<'_> {
    /// Record a ban; false if it was already there.
    pub fn add_ban(&self, ban: &Ban, reason: &str) -> bool {
        let (kind, value) = ban.columns();
        self.logged(
            "add ban",
            self.tx.execute(
                "INSERT OR IGNORE INTO bans(kind, value, reason, created) VALUES (?1, ?2, ?3, ?4)",
                params![kind, value, reason, now_secs()],
            ),
        )
        .is_some_and(|n| n > 0)
    }

    pub fn remove_ban(&self, ban: &Ban) -> bool {
        let (kind, value) = ban.columns();
        self.logged(
            "remove ban",
            self.tx.execute(
                "DELETE FROM bans WHERE kind = ?1 AND value = ?2",
                params![kind, value],
            ),
        )
        .is_some_and(|n| n > 0)
    }

    /// Every stored ban with its reason.
    pub fn bans(&self) -> Vec<(Ban, String)> {
        let mut out = Vec::new();
        if let Some(mut st) = self.logged(
            "bans",
            self.tx
                .prepare("SELECT kind, value, reason FROM bans ORDER BY kind, value"),
        ) {
            if let Some(rows) = self.logged(
                "bans",
                st.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                }),
            ) {
                for (kind, value, reason) in rows.filter_map(Result::ok) {
                    match Ban::from_columns(&kind, &value) {
                        Some(b) => out.push((b, reason)),
                        None => log::warn!("store: ignoring unreadable ban {kind} {value:?}"),
                    }
                }
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
        let id = id as i64;
        let steps: [(&str, &str); 6] = [
            (
                "delete guest mail",
                "DELETE FROM guest_mail WHERE recipient = ?1",
            ),
            (
                "delete messages",
                "DELETE FROM messages WHERE sender = ?1 OR recipient = ?1",
            ),
            (
                "delete notices",
                "DELETE FROM notices WHERE user_id = ?1 OR pseudo = (SELECT pseudo FROM accounts WHERE id = ?1)",
            ),
            (
                "delete requests",
                "DELETE FROM friend_requests WHERE requester = ?1 OR target = ?1",
            ),
            (
                "delete friendships",
                "DELETE FROM friendships WHERE a = ?1 OR b = ?1",
            ),
            ("delete account", "DELETE FROM accounts WHERE id = ?1"),
        ];
        steps
            .iter()
            .all(|(what, sql)| self.logged(what, self.tx.execute(sql, [id])).is_some())
    }

    /// Replace the password hash of `pseudo`; false if there is no such account.
    pub fn set_password_hash(&self, pseudo: &str, hash: &str) -> bool {
        self.logged(
            "set password",
            self.tx.execute(
                "UPDATE accounts SET hash = ?1 WHERE pseudo = ?2",
                params![hash, pseudo],
            ),
        )
        .is_some_and(|n| n > 0)
    }

    /// The email of `pseudo` (for the operator's listing).
    pub fn email_of(&self, pseudo: &str) -> Option<String> {
        self.logged(
            "email of",
            self.tx
                .query_row(
                    "SELECT email FROM accounts WHERE pseudo = ?1",
                    [pseudo],
                    |r| r.get(0),
                )
                .optional(),
        )
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn bans_and_account_deletion() {
        let (s, t) = Store::open(Path::new(":memory:")).unwrap();
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
            assert_eq!(db.bans().len(), 2);
            assert!(db.remove_ban(&Ban::Name("eve".into())));
            assert!(!db.remove_ban(&Ban::Name("eve".into())));
            assert!(db.set_password_hash("bob", "h2"));
            assert!(!db.set_password_hash("nobody", "h2"));
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
        s.stop();
        t.join();
    }
}
