//! Online backup through SQLite's backup API, while the store thread keeps
//! writing. The copy is made on a connection of its own, in one step (one
//! read transaction: a consistent snapshot that WAL lets writers work
//! beside), into a temporary file that is renamed into place only once it
//! is complete, so a failed backup never leaves a half-written DEST.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::files::{on_disk, OWNER_ONLY};

/// How long a backup waits for a lock before giving up.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Copy the database at `db` into a new file `dest` (which must not exist).
/// Returns the copy's size in bytes.
pub fn backup(db: &Path, dest: &Path) -> Result<u64, String> {
    if !on_disk(db) {
        return Err("the database is in memory; there is nothing to back up".into());
    }
    if !dest.is_absolute() {
        return Err(format!("{} is not an absolute path", dest.display()));
    }
    if dest.exists() {
        return Err(format!("{} exists; choose a new file name", dest.display()));
    }
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = copy_into(db, &tmp).and_then(|size| {
        fs::rename(&tmp, dest)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dest.display()))?;
        if let Some(dir) = dest.parent().and_then(|d| fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(size)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn copy_into(db: &Path, tmp: &Path) -> Result<u64, String> {
    // Created owner-only before SQLite opens it, like the database itself.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(OWNER_ONLY)
        .open(tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    src.busy_timeout(BUSY_WAIT).map_err(|e| e.to_string())?;
    let mut dst =
        Connection::open(tmp).map_err(|e| format!("cannot open {}: {e}", tmp.display()))?;
    {
        let b = Backup::new(&src, &mut dst).map_err(|e| format!("backup: {e}"))?;
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            // -1: every page in one step, so a writer on another connection
            // cannot make the copy start over.
            match b.step(-1).map_err(|e| format!("backup: {e}"))? {
                StepResult::Done => break,
                StepResult::More => continue,
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return Err(format!("backup gave up: {other:?}")),
            }
        }
    }
    // A self-contained single file: no WAL beside the copy.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(|e| format!("backup: {e}"))?;
    dst.close().map_err(|(_, e)| format!("backup: {e}"))?;
    let f = fs::File::open(tmp).map_err(|e| e.to_string())?;
    f.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
    Ok(f.metadata().map(|m| m.len()).unwrap_or(0))
}
