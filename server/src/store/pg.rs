//! Where a PostgreSQL store lives and how a session to it is opened: the
//! operator's `store_url`, checked at start, shown in logs without its
//! password, and the settings every session gets so that a commit the store
//! acknowledges is durable. Opens sessions only; the queries are in sql.rs.

use std::cell::RefCell;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};

use super::sql::{pg_error, Link, PgConn};

/// A session that cannot connect within this gives up (the store answers
/// the jobs that waited with a failure, and tries again at the next group).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged data on the session's socket for this long means the
/// server is gone: the kernel drops the connection instead of letting a
/// write wait for minutes.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);
/// Idle time before TCP keep-alive probes start (a silent partition is
/// noticed within about this plus the user timeout).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// No statement of ours takes long; one that does is stopped by the server
/// rather than holding the store thread (an operator may raise it in the
/// URL's `options`). Migrations lift it for their own transaction.
const STATEMENT_TIMEOUT_MS: u64 = 15_000;

/// A PostgreSQL server and database, from `store_url`.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    /// Parse a `postgres://` (or `postgresql://`) URL. Refused: anything
    /// else, and TLS required (`sslmode=require`), which this build cannot
    /// do; `sslmode=prefer` connects without TLS.
    pub fn parse(url: &str) -> Result<PgTarget, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("store_url must be empty (SQLite at db_path) or a postgres:// URL".into());
        }
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| format!("store_url is not a PostgreSQL URL: {e}"))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(
                "store_url asks for sslmode=require, but this chinwagd has no TLS for \
                 PostgreSQL: reach the database over a Unix socket or a private network"
                    .into(),
            );
        }
        if config.get_hosts().is_empty() {
            return Err("store_url names no host".into());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("chinwagd");
        }
        // The operator's own options come after our default timeout (so
        // they may change it); durable commits come last and always hold:
        // an acknowledgement promises the row survives a crash.
        let theirs = config.get_options().unwrap_or("").to_owned();
        config.options(&format!(
            "-c statement_timeout={STATEMENT_TIMEOUT_MS} {theirs} -c synchronous_commit=on"
        ));
        let shown = show(&config);
        Ok(PgTarget { config, shown })
    }

    /// Open a session with the store's settings.
    pub fn connect(&self) -> Result<PgConn, String> {
        let client = self
            .config
            .connect(postgres::NoTls)
            .map_err(|e| format!("cannot reach PostgreSQL at {}: {}", self.shown, pg_error(e)))?;
        Ok(PgConn::new(client))
    }

    /// The URL without its password, for logs and errors.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// One connection the store keeps open (the writer's, or a reader's): it
/// reconnects when the server closed it, and a transaction that cannot
/// begin on a broken session is tried once more on a new one, so a
/// database restart costs the jobs in flight at that moment, not the next.
pub struct PgSession {
    conn: Option<RefCell<PgConn>>,
    target: PgTarget,
}

impl PgSession {
    pub fn open(target: &PgTarget) -> Result<PgSession, String> {
        Ok(PgSession::over(target.connect()?, target))
    }

    /// A session already open (the one that ran the migrations).
    pub fn over(conn: PgConn, target: &PgTarget) -> PgSession {
        PgSession {
            conn: Some(RefCell::new(conn)),
            target: target.clone(),
        }
    }

    /// Whether the last session is gone (closed by the server, or never
    /// reopened).
    fn broken(&self) -> bool {
        match &self.conn {
            Some(c) => c.borrow().client.is_closed(),
            None => true,
        }
    }

    /// The session, reopened first if it is broken; None if the server
    /// cannot be reached.
    fn link(&mut self) -> Option<Link<'_>> {
        if self.broken() {
            self.conn = match self.target.connect() {
                Ok(c) => {
                    log::info!("store: connected to {}", self.target.shown());
                    Some(RefCell::new(c))
                }
                Err(e) => {
                    log::error!("store: {e}");
                    None
                }
            };
        }
        self.conn.as_ref().map(Link::Pg)
    }

    /// Begin a transaction (`begin` is its statement) on a working session.
    pub fn begin(&mut self, begin: &str) -> Result<Link<'_>, String> {
        match self.link().map(|l| l.batch(begin)) {
            Some(Ok(())) => return self.link().ok_or_else(|| "session lost".to_owned()),
            Some(Err(e)) if !self.broken() => return Err(e),
            Some(Err(e)) => {
                log::warn!("store: the PostgreSQL session was lost ({e}); reconnecting")
            }
            None => return Err(format!("{} cannot be reached", self.target.shown())),
        }
        match self.link().map(|l| l.batch(begin)) {
            Some(Ok(())) => self.link().ok_or_else(|| "session lost".to_owned()),
            Some(Err(e)) => Err(e),
            None => Err(format!("{} cannot be reached", self.target.shown())),
        }
    }
}

fn show(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_checked_and_shown_without_its_password() {
        let t = PgTarget::parse("postgresql://chinwag:s3cret@db.example:5433/chat").unwrap();
        assert_eq!(t.shown(), "postgres://chinwag@db.example:5433/chat");
        assert!(!format!("{t:?}").contains("s3cret"));
        let opts = t.config.get_options().unwrap();
        assert!(opts.ends_with("-c synchronous_commit=on"), "{opts}");
        let t = PgTarget::parse(
            "postgres://u@127.0.0.1:1/d?options=-c%20search_path%3Dt1%20-c%20synchronous_commit%3Doff",
        )
        .unwrap();
        let opts = t.config.get_options().unwrap();
        assert!(opts.contains("search_path=t1"), "{opts}");
        assert!(
            opts.ends_with("-c synchronous_commit=on"),
            "durable wins: {opts}"
        );
        for bad in [
            "sqlite:chinwag.db",
            "mysql://u@h/d",
            "postgres://u@h/d?sslmode=require",
            "postgres://u@h:notaport/d",
        ] {
            assert!(PgTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
