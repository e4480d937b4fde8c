//! Live SQLite databases under `watch`, as an application writes them: every version in DST is
//! one consistent database holding what was committed by then, and no journal or WAL is ever
//! versioned on its own.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{Env, Watch, family, tree};
use rusqlite::Connection;
use rustix::process::Signal;

const ROUNDS: u64 = 30;
const PER_ROUND: u64 = 50;
const LARGE_HALF: u64 = 2000;

/// Writes like an application: many small transactions, then a large one that stops halfway
/// (with its journal, or its WAL frames, on disk and nothing committed) while `mid_transaction`
/// runs. Returns the connection, still open, as the application would keep it.
fn application(path: &Path, journal: &str, mid_transaction: impl FnOnce()) -> Connection {
    let db = Connection::open(path).expect("open");
    db.pragma_update(None, "journal_mode", journal)
        .expect("journal mode");
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX tv ON t(v);")
        .expect("schema");
    let insert = |n: u64| {
        for i in 0..n {
            db.execute(
                "INSERT INTO t(v) VALUES (?1)",
                [format!("row {i} {}", "x".repeat(40))],
            )
            .expect("insert");
        }
    };
    for _ in 0..ROUNDS {
        db.execute_batch("BEGIN").expect("begin");
        insert(PER_ROUND);
        db.execute_batch("COMMIT").expect("commit");
    }
    db.execute_batch("BEGIN").expect("begin");
    insert(LARGE_HALF);
    mid_transaction();
    insert(LARGE_HALF);
    db.execute_batch("COMMIT").expect("commit");
    db
}

fn committed() -> BTreeSet<i64> {
    let mut counts: BTreeSet<i64> = (0..=ROUNDS).map(|r| (r * PER_ROUND) as i64).collect();
    counts.insert((ROUNDS * PER_ROUND + 2 * LARGE_HALF) as i64);
    counts
}

/// Opens a copy of the database at `path` elsewhere (opening it in place would make SQLite
/// write its own files into DST) and returns its integrity check and row count.
fn inspect(path: &Path) -> (String, i64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("check.db");
    fs::copy(path, &copy).expect("copy out");
    let db = Connection::open(&copy).expect("open");
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    let n: i64 = db
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or(-1);
    (ok, n)
}

fn live_database(journal: &str) {
    let env = Env::new();
    env.write("notes.txt", "not a database");
    let db = env.src.join("app.db");
    let w = Watch::start(&env, &[]);
    // Stopped in the middle of the large transaction until the quiet makes `watch` take a copy:
    // one taken while the journal (or WAL) holds uncommitted work.
    let open = application(&db, journal, || {
        let before = family(&env.dst, "app.db").len();
        w.wait_for(
            "a copy during the open transaction",
            Duration::from_secs(30),
            |_| family(&env.dst, "app.db").len() > before,
        );
    });
    let last = *committed().last().expect("counts");
    w.wait_for("the final state in DST", Duration::from_secs(60), |_| {
        family(&env.dst, "app.db")
            .last()
            .is_some_and(|newest| inspect(&env.dst.join(newest)).1 == last)
    });
    drop(open);
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    let versions = family(&env.dst, "app.db");
    // One taken during the open transaction, and the final one.
    assert!(versions.len() >= 2, "{versions:?}\n{out}");
    for v in &versions {
        let (ok, n) = inspect(&env.dst.join(v));
        assert_eq!(ok, "ok", "{v} is corrupt");
        assert!(
            committed().contains(&n),
            "{v} holds {n} rows, never committed"
        );
    }
    let stray: Vec<_> = tree(&env.dst)
        .into_keys()
        .filter(|p| {
            let n = p.to_string_lossy();
            n.contains("-journal") || n.contains("-wal") || n.contains("-shm")
        })
        .collect();
    assert!(stray.is_empty(), "companions versioned: {stray:?}");
    // The folder restored as of now opens with everything committed.
    let to = env.root().join("restored");
    let restore = std::process::Command::new(common::bin())
        .arg("restore")
        .arg(&env.dst)
        .arg(".")
        .arg("--to")
        .arg(&to)
        .output()
        .expect("restore");
    assert!(restore.status.success(), "{restore:?}");
    assert_eq!(inspect(&to.join("app.db")), ("ok".to_string(), last));
}

#[test]
fn a_wal_database_is_backed_up_consistent_and_whole() {
    live_database("WAL");
}

#[test]
fn a_rollback_journal_database_is_backed_up_consistent_and_whole() {
    live_database("DELETE");
}

#[test]
fn a_database_sqlite_cannot_read_is_copied_as_a_file_with_a_warning() {
    let env = Env::new();
    let mut bogus = b"SQLite format 3\0".to_vec();
    bogus.extend_from_slice(&[0xff; 200]);
    env.write("broken.db", &bogus);
    env.write("broken.db-journal", "a journal beside it");
    let r = env.once(&[]);
    r.code(0);
    r.stderr_has(&format!(
        "warning: {}: SQLite cannot read it as a database (",
        env.src.join("broken.db").display()
    ));
    assert_eq!(fs::read(env.dst.join("broken.db")).expect("copy"), bogus);
    assert!(!env.dst.join("broken.db-journal").exists());
}
