//! Schema and migrations. `PRAGMA user_version` records how many migrations
//! a database file has had; opening an older file applies the rest in one
//! transaction. Migrations are append-only: never edit a released one.

use rusqlite::Connection;

/// Each entry moves the schema from version i to i + 1.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, friends, pending requests, offline notices, messages.
    "CREATE TABLE accounts(
        id      INTEGER PRIMARY KEY,
        email   TEXT NOT NULL UNIQUE COLLATE NOCASE,
        pseudo  TEXT NOT NULL UNIQUE,
        hash    TEXT NOT NULL,
        created INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE friendships(
        a     INTEGER NOT NULL REFERENCES accounts(id),
        b     INTEGER NOT NULL REFERENCES accounts(id),
        since INTEGER NOT NULL,
        PRIMARY KEY (a, b)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE friend_requests(
        requester INTEGER NOT NULL REFERENCES accounts(id),
        target    INTEGER NOT NULL REFERENCES accounts(id),
        created   INTEGER NOT NULL,
        notified  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (requester, target)
    ) STRICT;
    CREATE INDEX friend_requests_target ON friend_requests(target);
    CREATE TABLE notices(
        id      INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES accounts(id),
        code    INTEGER NOT NULL,
        pseudo  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX notices_user ON notices(user_id);
    CREATE TABLE messages(
        id        INTEGER PRIMARY KEY,
        sender    INTEGER NOT NULL REFERENCES accounts(id),
        recipient INTEGER NOT NULL REFERENCES accounts(id),
        body      TEXT NOT NULL,
        sent      INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX messages_pair ON messages(sender, recipient, id);
    CREATE INDEX messages_undelivered ON messages(recipient, id) WHERE delivered = 0;",
    // 2: operators' bans, by name or by address (see hub::bans).
    "CREATE TABLE bans(
        kind    TEXT NOT NULL CHECK (kind IN ('name', 'ip')),
        value   TEXT NOT NULL,
        reason  TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        PRIMARY KEY (kind, value)
    ) STRICT, WITHOUT ROWID;",
    // 3: history by conversation. The key of a conversation is the pair of
    // its two account ids, smaller first, so one index range holds both
    // directions in id order and a page is a single backwards range scan
    // (no OR of two ranges, no sort). `Db::history` uses these expressions.
    "CREATE INDEX messages_conversation
        ON messages(min(sender, recipient), max(sender, recipient), id);",
    // 4: private texts from guests (users of other dialects, who have no
    // account) to an offline account, kept until its next login
    // (docs/bridging.md). Not history: a guest has no account id.
    "CREATE TABLE guest_mail(
        id        INTEGER PRIMARY KEY,
        recipient INTEGER NOT NULL REFERENCES accounts(id),
        sender    TEXT NOT NULL,
        body      TEXT NOT NULL,
        sent      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX guest_mail_recipient ON guest_mail(recipient, id);",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Durability settings, then migrations.
pub fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    // WAL keeps readers and the writer apart; FULL fsyncs every commit, so an
    // acknowledged row survives power loss, not just a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this chinwagd ({SCHEMA_VERSION})"
        )));
    }
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        log::info!("store: migrated schema to version {}", i + 1);
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_newer_files() {
        let dir = std::env::temp_dir().join(format!("cw-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        {
            let mut c = Connection::open(&path).unwrap();
            prepare(&mut c).unwrap();
            c.execute(
                "INSERT INTO accounts(email, pseudo, hash, created) VALUES ('a@b', 'a', 'h', 0)",
                [],
            )
            .unwrap();
        }
        {
            // Reopening keeps data and does not re-run migration 1.
            let mut c = Connection::open(&path).unwrap();
            prepare(&mut c).unwrap();
            let n: i64 = c
                .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1);
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let mut c = Connection::open(&path).unwrap();
        assert!(prepare(&mut c).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
