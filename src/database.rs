//! Live SQLite databases, copied as one consistent file. An application writes a database
//! together with a `-journal` (rollback mode) or a `-wal` and `-shm` (WAL mode) beside it; a
//! copy of the files one by one pairs states of different moments, and the result is corrupt.
//! So a database is copied with SQLite's own online backup, which reads the last committed
//! state, WAL content included, into one file; its companions are not versioned at all, and a
//! change to its `-wal` or `-journal` counts as a change of the database.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

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

/// Writes a consistent copy of the database at `src` (opened read-only, by path, so that
/// SQLite finds its journal or WAL) into the empty file `out`. The error says why SQLite could
/// not read it (locked exclusively, encrypted, corrupt): the file is then copied as it is.
pub(crate) fn snapshot(src: &Path, out: &File) -> Result<(), String> {
    use rusqlite::{Connection, OpenFlags, backup::Backup};
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let from = Connection::open_with_flags(src, flags).map_err(|e| e.to_string())?;
    // The copy is written through the open file, never by a path into DST; with no journal of
    // its own, nothing but that file is written.
    let target = format!("/proc/self/fd/{}", out.as_raw_fd());
    let mut to = Connection::open(&target).map_err(|e| e.to_string())?;
    to.pragma_update(None, "journal_mode", "OFF")
        .map_err(|e| e.to_string())?;
    {
        let backup = Backup::new(&from, &mut to).map_err(|e| e.to_string())?;
        // Pages in steps, so that a writer is kept waiting only briefly; SQLite starts again by
        // itself when a writer changed what was already read.
        backup
            .run_to_completion(1024, std::time::Duration::from_millis(10), None)
            .map_err(|e| e.to_string())?;
    }
    to.close().map_err(|(_, e)| e.to_string())?;
    from.close().map_err(|(_, e)| e.to_string())
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
        snapshot(&path, &out).expect("snapshot");
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
