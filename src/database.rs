//! Live SQLite databases, copied as one consistent file. An application writes a database
//! together with a `-journal` (rollback mode) or a `-wal` and `-shm` (WAL mode) beside it; a
//! copy of the files one by one pairs states of different moments, and the result is corrupt.
//! So a database is copied with SQLite's own online backup, which reads the last committed
//! state, WAL content included, into one file; its companions are not versioned at all, and a
//! change to its `-wal` or `-journal` counts as a change of the database.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What SQLite puts beside a database while it is in use.
const COMPANIONS: [&[u8]; 3] = [b"-journal", b"-wal", b"-shm"];

/// The name of the database whose companion `name` is, when that database is among `names`.
pub(crate) fn companion_of<'a>(name: &'a [u8], names: &HashSet<Vec<u8>>) -> Option<&'a [u8]> {
    COMPANIONS
        .iter()
        .filter_map(|suffix| name.strip_suffix(*suffix))
        .find(|base| !base.is_empty() && names.contains(*base))
}

/// The database that `name` would be a companion of, going by its name alone.
pub(crate) fn base_of(name: &[u8]) -> Option<Vec<u8>> {
    COMPANIONS
        .iter()
        .filter_map(|suffix| name.strip_suffix(*suffix))
        .find(|base| !base.is_empty())
        .map(<[u8]>::to_vec)
}

/// The databases among `names` that have a `-wal` or `-journal` beside them.
pub(crate) fn in_use(names: &HashSet<Vec<u8>>) -> HashSet<Vec<u8>> {
    names
        .iter()
        .filter_map(|n| companion_of(n, names))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The companions of the database `name` that can hold its newest changes.
pub(crate) fn changing_companions(name: &[u8]) -> [Vec<u8>; 2] {
    [[name, b"-wal"].concat(), [name, b"-journal"].concat()]
}

/// Whether the open file starts with SQLite's header.
pub(crate) fn is_database(file: &File) -> bool {
    let mut head = [0u8; 16];
    rustix::io::pread(file, &mut head, 0).is_ok_and(|n| n == 16) && &head == b"SQLite format 3\0"
}

/// Why a database was not copied with SQLite's online backup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoSnapshot {
    /// The file alone holds every committed change (WAL mode with no `-wal` content): it is
    /// copied as a file, and SQLite never opens it, which would leave a `-wal` and `-shm` in SRC.
    Whole,
    /// Another program keeps readers out (an exclusive lock, a long write) longer than the
    /// patience allowed, or kept rewriting it while it was read.
    Locked,
    /// The run was asked to stop.
    Stopped,
    /// SQLite cannot read it (encrypted, corrupt, not really a database): copied as a file.
    Unreadable(String),
}

/// How long one attempt waits for a lock, and how often it looks again.
pub(crate) struct Patience<'a> {
    pub wait: Duration,
    pub stop: &'a AtomicBool,
}

/// Writes a consistent copy of the database at `src` (a path into the open source folder, so
/// that SQLite finds its journal or WAL) into the empty file `out`, never waiting longer than
/// `patience` for a lock, and giving up at once when asked to stop.
///
/// Nothing is created in SRC: a WAL database whose `-wal` is gone or empty is left to be
/// copied as a file (`Whole`), and one whose `-wal` has no `-shm` beside it (a writer in
/// exclusive locking mode keeps its index in memory) counts as locked, since opening it would
/// make SQLite create a `-shm`.
pub(crate) fn snapshot(src: &Path, out: &File, patience: &Patience) -> Result<(), NoSnapshot> {
    use rusqlite::{Connection, OpenFlags};
    let unreadable = |e: rusqlite::Error| {
        if is_busy(&e) {
            NoSnapshot::Locked
        } else {
            NoSnapshot::Unreadable(e.to_string())
        }
    };
    let wal = match journal_of(src) {
        Journal::Wal => match companion_len(src, b"-wal") {
            None | Some(0) => return Err(NoSnapshot::Whole),
            Some(_) if companion_len(src, b"-shm").is_none() => return Err(NoSnapshot::Locked),
            Some(_) => true,
        },
        Journal::Rollback => false,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let from = Connection::open_with_flags(src, flags).map_err(unreadable)?;
    // Waits are ours, so that a stop is noticed and the patience holds.
    from.busy_timeout(Duration::ZERO).map_err(unreadable)?;
    // The copy is written through the open file, never by a path into DST; with no journal of
    // its own, nothing but that file is written.
    let target = format!("/proc/self/fd/{}", out.as_raw_fd());
    let mut to = Connection::open(&target).map_err(unreadable)?;
    to.pragma_update(None, "journal_mode", "OFF")
        .map_err(unreadable)?;
    let deadline = Instant::now() + patience.wait;
    let wait = || {
        if patience.stop.load(Ordering::Relaxed) {
            return Err(NoSnapshot::Stopped);
        }
        if Instant::now() >= deadline {
            return Err(NoSnapshot::Locked);
        }
        std::thread::sleep(LOOK_AGAIN);
        Ok(())
    };
    if wal {
        // One read transaction for the whole copy: it is one committed state, a writer's
        // commits meanwhile neither wait for it nor restart it.
        loop {
            match from.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;") {
                Ok(()) => break,
                Err(e) if is_busy(&e) => {
                    let _ = from.execute_batch("ROLLBACK");
                    wait()?;
                }
                Err(e) => return Err(unreadable(e)),
            }
        }
    }
    copy_pages(&from, &mut to, wal, patience.stop, &wait)?;
    if wal {
        let _ = from.execute_batch("COMMIT");
    }
    to.close().map_err(|(_, e)| unreadable(e))?;
    from.close().map_err(|(_, e)| unreadable(e))
}

/// Whether SQLite said another connection holds a lock that keeps this one out.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// How long a busy database is left before it is looked at again within one attempt.
const LOOK_AGAIN: Duration = Duration::from_millis(10);

/// Pages copied per step: between steps a stop is noticed, and in rollback mode a writer gets
/// its turn.
const PAGES_PER_STEP: std::ffi::c_int = 1024;

/// A rollback-journal database rewritten during the copy starts it again; after this many
/// restarts it counts as locked (it keeps being written).
const MOST_RESTARTS: usize = 8;

/// The online backup's page copying, in steps; `wait` is called when the database is busy.
fn copy_pages(
    from: &rusqlite::Connection,
    to: &mut rusqlite::Connection,
    wal: bool,
    stop: &AtomicBool,
    wait: &dyn Fn() -> Result<(), NoSnapshot>,
) -> Result<(), NoSnapshot> {
    use rusqlite::backup::{Backup, StepResult};
    let backup = Backup::new(from, to).map_err(|e| NoSnapshot::Unreadable(e.to_string()))?;
    let (mut left, mut restarts) = (None, 0);
    loop {
        match backup.step(PAGES_PER_STEP) {
            Ok(StepResult::Done) => return Ok(()),
            Ok(StepResult::More) => {
                // SQLite starts again by itself when another connection changed what was read.
                let now = backup.progress().remaining;
                if left.is_some_and(|l| now > l) {
                    restarts += 1;
                    if restarts > MOST_RESTARTS {
                        return Err(NoSnapshot::Locked);
                    }
                }
                left = Some(now);
                if stop.load(Ordering::Relaxed) {
                    return Err(NoSnapshot::Stopped);
                }
                // In rollback mode a reader keeps writers out while it reads: a pause between
                // steps lets them commit.
                if !wal {
                    std::thread::sleep(LOOK_AGAIN);
                }
            }
            Ok(_) => wait()?,
            Err(e) if is_busy(&e) => wait()?,
            Err(e) => return Err(NoSnapshot::Unreadable(e.to_string())),
        }
    }
}

/// How a database keeps its uncommitted and newest changes, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Journal {
    Rollback,
    Wal,
}

/// The journal mode the database's header says it is in: its read version (byte 18) is 2 in
/// WAL mode.
fn journal_of(src: &Path) -> Journal {
    let mut head = [0u8; 19];
    let read =
        File::open(src).and_then(|f| rustix::io::pread(&f, &mut head, 0).map_err(Into::into));
    match read {
        Ok(19) if head[18] == 2 => Journal::Wal,
        _ => Journal::Rollback,
    }
}

/// The length of the companion `src` + `suffix`, if it exists.
fn companion_len(src: &Path, suffix: &[u8]) -> Option<u64> {
    let mut name = src.as_os_str().as_bytes().to_vec();
    name.extend_from_slice(suffix);
    std::fs::symlink_metadata(OsStr::from_bytes(&name))
        .ok()
        .map(|m| m.len())
}

/// Whether the database at `src` is in the middle of a write whose pages may already be in
/// its file: a rollback journal that starts with SQLite's journal magic is "hot" (one that
/// was committed is deleted, truncated or has its header zeroed). The file alone is then no
/// committed state; anything else is (in WAL mode, the last checkpointed one).
pub(crate) fn mid_write(src: &Path) -> bool {
    const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    let mut name = src.as_os_str().as_bytes().to_vec();
    name.extend_from_slice(b"-journal");
    let mut head = [0u8; 8];
    File::open(OsStr::from_bytes(&name))
        .ok()
        .and_then(|f| rustix::io::pread(&f, &mut head, 0).ok())
        .is_some_and(|n| n == 8 && head == MAGIC)
}

/// Whether SQLite finds the database in the open file sound (`PRAGMA quick_check`). It is
/// opened by its path (`/proc/self/fd/N`, which SQLite resolves to the file's real name, so
/// this needs a named file), read-only and immutable, so that SQLite writes nothing beside it.
pub(crate) fn sound(file: &File) -> bool {
    use rusqlite::{Connection, OpenFlags};
    let uri = format!("file:/proc/self/fd/{}?immutable=1", file.as_raw_fd());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(db) = Connection::open_with_flags(uri, flags) else {
        return false;
    };
    db.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        .is_ok_and(|ok| ok == "ok")
}

/// Whether two copies of one database hold the same database: the same bytes, but for the
/// header fields that SQLite bumps on every write and every copy (the change counter, the
/// version-valid-for number and the writer's library version), which say nothing of the data.
pub(crate) fn same_database(a: &File, b: &File) -> std::io::Result<bool> {
    let (la, lb) = (a.metadata()?.len(), b.metadata()?.len());
    if la != lb {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 128 * 1024], vec![0u8; 128 * 1024]);
    let mut at = 0u64;
    while at < la {
        let n = crate::source::read_full_at(a, &mut ba, at)?;
        let m = crate::source::read_full_at(b, &mut bb, at)?;
        if n != m || n == 0 {
            return Ok(false);
        }
        if at == 0 {
            for range in [24..28, 92..100] {
                if n >= range.end {
                    ba[range.clone()].fill(0);
                    bb[range].fill(0);
                }
            }
        }
        if ba[..n] != bb[..m] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The file behind `file` opened again for reading: a copy is written through a handle that
/// may only write.
pub(crate) fn readable(file: &File) -> std::io::Result<File> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companions_belong_to_a_database_beside_them() {
        let names: HashSet<Vec<u8>> = [b"places.sqlite".to_vec()].into();
        assert_eq!(
            companion_of(b"places.sqlite-wal", &names),
            Some(&b"places.sqlite"[..])
        );
        assert_eq!(
            companion_of(b"places.sqlite-journal", &names),
            Some(&b"places.sqlite"[..])
        );
        assert_eq!(
            companion_of(b"other.sqlite-wal", &names),
            None,
            "no database"
        );
        assert_eq!(companion_of(b"-wal", &names), None);
        assert_eq!(companion_of(b"places.sqlite", &names), None);
    }

    #[test]
    fn a_live_database_is_copied_whole_and_consistent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("live.db");
        let writer = rusqlite::Connection::open(&path).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
            )
            .expect("write");
        // Committed into the WAL only: the main file alone does not hold the rows yet.
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(tmp.path().join("copy.db"))
            .expect("create");
        let stop = AtomicBool::new(false);
        let patience = Patience {
            wait: Duration::from_secs(1),
            stop: &stop,
        };
        snapshot(&path, &out, &patience).expect("snapshot");
        assert!(is_database(&out));
        let copy = rusqlite::Connection::open(tmp.path().join("copy.db")).expect("open copy");
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 3);
        let ok: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
        drop(writer);
    }
}
