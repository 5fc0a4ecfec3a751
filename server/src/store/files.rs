//! The database's files on disk: created readable by the owner only, since
//! they hold password hashes and private messages. SQLite gives the WAL and
//! shared-memory files the database file's own mode, so creating that file
//! 0600 before SQLite opens it covers all three; files left looser by an
//! older chinwagd are tightened (and the fix logged) at start.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const OWNER_ONLY: u32 = 0o600;

/// Whether `path` names a file on disk (not ":memory:" or a URI).
pub fn on_disk(path: &Path) -> bool {
    let s = path.as_os_str();
    s != ":memory:" && !s.to_string_lossy().starts_with("file:") && !s.is_empty()
}

/// Create the database file 0600 if it is missing; tighten it if it exists.
pub fn owner_only(path: &Path) -> io::Result<()> {
    if !on_disk(path) {
        return Ok(());
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(OWNER_ONLY)
        .open(path)?;
    tighten(path)
}

/// The same for the WAL and shared-memory files, once SQLite has made them.
pub fn owner_only_companions(path: &Path) {
    if !on_disk(path) {
        return;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            if let Err(e) = tighten(&p) {
                log::warn!("store: cannot make {} owner-only: {e}", p.display());
            }
        }
    }
}

fn tighten(path: &Path) -> io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, Permissions::from_mode((mode & 0o700) | OWNER_ONLY))?;
        log::warn!(
            "store: {} was readable by others (mode {mode:o}); now {:o}",
            path.display(),
            (mode & 0o700) | OWNER_ONLY
        );
    }
    Ok(())
}
