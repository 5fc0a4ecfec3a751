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

/// `sslmode` with libpq's meanings (its default is `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSsl {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is
    /// checked only against an `sslrootcert` (then as verify-ca).
    Prefer,
    /// TLS or no session; the certificate is checked as for `Prefer`.
    Require,
    /// TLS, the certificate signed by a CA of `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host dialled.
    VerifyFull,
}

impl PgSsl {
    fn parse(v: &str) -> Option<PgSsl> {
        Some(match v {
            "disable" => PgSsl::Disable,
            "prefer" => PgSsl::Prefer,
            "require" => PgSsl::Require,
            "verify-ca" => PgSsl::VerifyCa,
            "verify-full" => PgSsl::VerifyFull,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            PgSsl::Disable => "disable",
            PgSsl::Prefer => "prefer",
            PgSsl::Require => "require",
            PgSsl::VerifyCa => "verify-ca",
            PgSsl::VerifyFull => "verify-full",
        }
    }
}

/// A PostgreSQL server and database, from `store_url`.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    shown: String,
    ssl: PgSsl,
    /// `sslrootcert`: a PEM file of trusted CAs, or "system".
    rootcert: Option<String>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    /// Parse a `postgres://` (or `postgresql://`) URL. Refused: anything
    /// else. `sslmode` (disable, prefer, require, verify-ca, verify-full)
    /// and `sslrootcert` are read here, as libpq reads them; the rest of the
    /// URL is rust-postgres's.
    pub fn parse(url: &str) -> Result<PgTarget, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("store_url must be empty (SQLite at db_path) or a postgres:// URL".into());
        }
        let (url, ssl, rootcert) = take_ssl_params(url)?;
        let mut config = postgres::Config::from_str(&url)
            .map_err(|e| format!("store_url is not a PostgreSQL URL: {e}"))?;
        config.ssl_mode(match ssl {
            PgSsl::Disable => SslMode::Disable,
            PgSsl::Prefer => SslMode::Prefer,
            PgSsl::Require | PgSsl::VerifyCa | PgSsl::VerifyFull => SslMode::Require,
        });
        if matches!(ssl, PgSsl::VerifyCa | PgSsl::VerifyFull) && rootcert.is_none() {
            return Err(format!(
                "store_url: sslmode={} needs sslrootcert=FILE (the CA's PEM file) or \
                 sslrootcert=system",
                ssl.name()
            ));
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
        Ok(PgTarget {
            config,
            shown,
            ssl,
            rootcert,
        })
    }

    /// Whether the URL holds a password.
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// The password from `store_password_file` (mode 0600).
    pub fn read_password(&mut self, path: &std::path::Path) -> Result<(), String> {
        let pw = crate::config::read_secret_file(path, "the PostgreSQL password")
            .map_err(|e| format!("store_password_file: {e}"))?;
        self.config.password(pw);
        Ok(())
    }

    /// The TLS configuration `sslmode` and `sslrootcert` call for (None:
    /// `disable`). Built at each connection, so a renewed CA file counts
    /// from the next reconnection.
    fn tls(&self) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
        use crate::tls::{client_config, Roots, Verify};
        let verify = match (self.ssl, &self.rootcert) {
            (PgSsl::Disable, _) => return Ok(None),
            (PgSsl::VerifyFull, _) => Verify::Full,
            (PgSsl::VerifyCa, _) | (_, Some(_)) => Verify::Chain,
            (PgSsl::Prefer | PgSsl::Require, None) => Verify::Nothing,
        };
        let roots = match self.rootcert.as_deref() {
            Some("system") => Roots::System,
            Some(file) => Roots::File(std::path::Path::new(file)),
            None => Roots::System, // not read: Verify::Nothing
        };
        let config = client_config(roots, verify, None).map_err(|e| format!("sslrootcert: {e}"))?;
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }

    /// Open a session with the store's settings.
    pub fn connect(&self) -> Result<PgConn, String> {
        let failed = |e: postgres::Error| {
            format!(
                "cannot reach PostgreSQL at {} (sslmode={}): {}",
                self.shown,
                self.ssl.name(),
                pg_error(e)
            )
        };
        let client = match self.tls()? {
            None => self.config.connect(postgres::NoTls).map_err(failed)?,
            Some(tls) => self.config.connect(tls).map_err(failed)?,
        };
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

/// Take `sslmode` and `sslrootcert` out of the URL's query (rust-postgres
/// knows neither verify mode nor the root certificate). Absent, `sslmode`
/// is libpq's default, `prefer`.
fn take_ssl_params(url: &str) -> Result<(String, PgSsl, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), PgSsl::Prefer, None));
    };
    let (mut ssl, mut rootcert, mut kept) = (PgSsl::Prefer, None, Vec::new());
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| format!("store_url: {k} is not UTF-8"))
        };
        match k {
            "sslmode" => {
                ssl = PgSsl::parse(&value()?).ok_or(
                    "store_url: sslmode must be disable, prefer, require, verify-ca or verify-full",
                )?
            }
            "sslrootcert" => rootcert = Some(value()?).filter(|v| !v.is_empty()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, ssl, rootcert))
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
            "postgres://u@h:notaport/d",
            "postgres://u@h/d?sslmode=sometimes",
            "postgres://u@h/d?sslmode=verify-full",
            "postgres://u@h/d?sslmode=verify-ca&connect_timeout=3",
            "postgres://u@h/d?sslcert=/c.pem",
        ] {
            assert!(PgTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_have_libpqs_meanings() {
        let mode = |url: &str| {
            let t = PgTarget::parse(url).unwrap();
            (t.ssl, t.rootcert, t.config.get_ssl_mode())
        };
        assert_eq!(
            mode("postgres://u@h/d"),
            (PgSsl::Prefer, None, SslMode::Prefer)
        );
        assert_eq!(
            mode("postgres://u@h/d?sslmode=disable"),
            (PgSsl::Disable, None, SslMode::Disable)
        );
        assert_eq!(
            mode("postgres://u@h/d?sslmode=require"),
            (PgSsl::Require, None, SslMode::Require)
        );
        assert_eq!(
            mode("postgres://u@h/d?sslrootcert=%2Fetc%2Fca%20x.pem&sslmode=verify-full"),
            (
                PgSsl::VerifyFull,
                Some("/etc/ca x.pem".to_owned()),
                SslMode::Require
            )
        );
        let t = PgTarget::parse(
            "postgres://u@h/d?connect_timeout=3&sslmode=verify-ca&sslrootcert=system&application_name=x",
        )
        .unwrap();
        assert_eq!(t.ssl, PgSsl::VerifyCa);
        // The other parameters are still rust-postgres's.
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(t.config.get_application_name(), Some("x"));
        // A missing root certificate file is a clear error when connecting.
        let t = PgTarget::parse(
            "postgres://u@127.0.0.1:1/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let err = t.connect().err().unwrap();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
