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

/// The names in SRC, to check that nothing of ours was left there (SQLite makes a `-wal` and a
/// `-shm` beside a WAL database whenever it is opened).
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// An application that keeps its database locked the way some browsers do
/// (`locking_mode=EXCLUSIVE`), from its first write until `release` is dropped.
fn exclusive_writer(
    path: &Path,
    journal: &str,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (ready, locked) = std::sync::mpsc::channel::<()>();
    let path = path.to_path_buf();
    let journal = journal.to_string();
    let holder = std::thread::spawn(move || {
        let db = Connection::open(&path).expect("open");
        db.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .expect("exclusive");
        db.pragma_update(None, "journal_mode", &journal)
            .expect("journal mode");
        db.execute_batch("CREATE TABLE IF NOT EXISTS t(v); INSERT INTO t VALUES ('kept');")
            .expect("write");
        ready.send(()).expect("ready");
        let _ = held.recv();
    });
    locked
        .recv_timeout(Duration::from_secs(10))
        .expect("lock taken");
    (release, holder)
}

fn locked_database_holds_up_nothing(journal: &str) {
    let env = Env::new();
    env.write("notes.txt", "one");
    let db = env.src.join("profile.db");
    // The database exists and was closed once, as after an earlier run of the application.
    drop(Connection::open(&db).and_then(|c| c.execute_batch("CREATE TABLE t(v);")));
    let before = names(&env.src);
    let w = Watch::start(&env, &["--debounce", "200ms", "--max-delay", "3s", "-v"]);
    w.wait_for("the first pass", Duration::from_secs(30), |_| {
        env.dst.join("profile.db").exists() && env.dst.join("notes.txt").exists()
    });
    let (release, holder) = exclusive_writer(&db, journal);
    // While it is locked, other changes are mirrored as usual.
    env.write("notes.txt", "two");
    w.wait_for(
        "another file's change, while the database is locked",
        Duration::from_secs(5),
        |_| {
            common::family(&env.dst, "notes.txt")
                .last()
                .is_some_and(|v| common::read(&env.dst.join(v)) == b"two")
        },
    );
    // Past --max-delay: one warning, and the file on disk (every committed change: the lock
    // was taken after the write) backed up.
    w.wait_for("the warning about the lock", Duration::from_secs(20), |w| {
        w.stderr().contains("locked by another program for")
    });
    let newest = family(&env.dst, "profile.db");
    let (ok, _) = inspect(&env.dst.join(newest.last().expect("a copy")));
    assert_eq!(ok, "ok");
    // Ctrl-C while the lock is held returns at once.
    let pid = rustix::process::Pid::from_raw(w.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, Signal::INT).expect("signal");
    let (code, _, err) = w.stop_when_exited(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err.matches("locked by another program for").count(),
        1,
        "one warning for one lock\n{err}"
    );
    drop(release);
    holder.join().expect("writer");
    assert_eq!(names(&env.src), before, "nothing of ours left in SRC");
}

#[test]
fn a_wal_database_kept_locked_holds_up_nothing() {
    locked_database_holds_up_nothing("WAL");
}

#[test]
fn a_rollback_database_kept_locked_holds_up_nothing() {
    locked_database_holds_up_nothing("DELETE");
}

#[test]
fn a_database_locked_in_the_middle_of_a_write_is_never_copied_half_written() {
    let env = Env::new();
    let db = env.src.join("app.db");
    let writer = Connection::open(&db).expect("open");
    writer
        .execute_batch(
            "PRAGMA locking_mode=EXCLUSIVE; CREATE TABLE t(v); INSERT INTO t VALUES (1);",
        )
        .expect("commit");
    // A transaction that has written its journal and holds the exclusive lock.
    writer
        .execute_batch("PRAGMA cache_size=1; BEGIN; INSERT INTO t SELECT randomblob(2000) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<500) SELECT x FROM c);")
        .expect("write");
    let r = env.once(&[]);
    r.code(1);
    r.stderr_has("keeps locked in the middle of a write");
    assert!(family(&env.dst, "app.db").is_empty(), "{}", r.context());
    writer.execute_batch("COMMIT").expect("commit");
    drop(writer);
    let r = env.once(&[]);
    r.code(0);
    let (ok, n) = inspect(&env.dst.join("app.db"));
    assert_eq!((ok.as_str(), n), ("ok", 501));
}

#[test]
fn a_database_written_all_the_time_gets_one_version_per_max_delay() {
    let env = Env::new();
    let db = env.src.join("busy.db");
    let w = Watch::start(&env, &["--debounce", "200ms", "--max-delay", "2s"]);
    let writer = Connection::open(&db).expect("open");
    writer
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v);")
        .expect("schema");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        writer
            .execute("INSERT INTO t VALUES (randomblob(100))", [])
            .expect("insert");
        // The workload: a commit every 50 ms.
        common::hold_for(Duration::from_millis(50));
    }
    let rows: i64 = writer
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    w.wait_for("the final state", Duration::from_secs(30), |_| {
        family(&env.dst, "busy.db")
            .last()
            .is_some_and(|v| inspect(&env.dst.join(v)).1 == rows)
    });
    drop(writer);
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    let versions = family(&env.dst, "busy.db");
    // 6 s of writing at --max-delay 2s (about three), and the final state: not one version per
    // debounce (that was 30). One more is allowed for a loaded machine's timing.
    assert!(versions.len() <= 6, "{versions:?}\n{out}");
    for v in &versions {
        assert_eq!(inspect(&env.dst.join(v)).0, "ok", "{v}");
    }
}

#[test]
fn a_version_holds_nothing_committed_after_the_time_in_its_name() {
    let env = Env::new();
    let db = env.src.join("ledger.db");
    let writer = Connection::open(&db).expect("open");
    writer
        .execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES ('before');")
        .expect("schema");
    let w = Watch::start(&env, &["--debounce", "200ms", "-v"]);
    w.wait_for("the first copy", Duration::from_secs(30), |_| {
        !family(&env.dst, "ledger.db").is_empty()
    });
    // A long transaction that keeps readers out, quiet for a while before it commits: a copy
    // decided meanwhile must not be named for a time before the commit it ends up holding.
    writer
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES ('late');")
        .expect("begin");
    w.wait_for(
        "a copy tried while the transaction keeps readers out",
        Duration::from_secs(30),
        |w| w.stderr().contains("locked by another program"),
    );
    writer.execute_batch("COMMIT").expect("commit");
    let committed = chrono::Local::now();
    w.wait_for("the commit in DST", Duration::from_secs(30), |_| {
        family(&env.dst, "ledger.db")
            .last()
            .is_some_and(|v| inspect(&env.dst.join(v)).1 == 2)
    });
    drop(writer);
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    for v in family(&env.dst, "ledger.db") {
        let (ok, n) = inspect(&env.dst.join(&v));
        assert_eq!(ok, "ok");
        let Some(stamp) = v.strip_prefix("ledger_").and_then(|s| s.get(..15)) else {
            continue;
        };
        let named = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").expect("stamp");
        if n == 2 {
            // Names keep whole seconds: the commit was before the end of the named second.
            assert!(
                committed.naive_local() < named + chrono::Duration::seconds(1),
                "{v} holds the commit made at {committed}"
            );
        }
    }
}

#[test]
fn a_copy_of_an_unchanged_database_is_no_new_version() {
    let env = Env::new();
    let db = env.src.join("same.db");
    let writer = Connection::open(&db).expect("open");
    writer
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (1);")
        .expect("write");
    let before = names(&env.src);
    env.once(&[]).code(0);
    // The -wal's time moves (a checkpoint, a read), nothing is committed.
    let wal = env.src.join("same.db-wal");
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    filetime::set_file_mtime(&wal, filetime::FileTime::from_system_time(later)).expect("touch");
    let r = env.once(&[]);
    r.code(0);
    r.stdout_has("Updated: ");
    r.stdout_has("(time)");
    assert_eq!(family(&env.dst, "same.db").len(), 1, "{}", r.context());
    let again = env.once(&[]);
    assert_eq!(
        again.summary("Successfully copied"),
        0,
        "{}",
        again.context()
    );
    assert_eq!(names(&env.src), before, "nothing of ours left in SRC");
}

#[test]
fn a_wal_database_closed_by_its_application_is_copied_without_opening_it() {
    let env = Env::new();
    let db = env.src.join("closed.db");
    let writer = Connection::open(&db).expect("open");
    writer
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (1);")
        .expect("write");
    drop(writer);
    // A -journal beside it makes it a database in use; in WAL mode with no -wal, the file alone
    // is the database.
    env.write("closed.db-journal", "");
    let before = names(&env.src);
    env.once(&[]).code(0);
    assert_eq!(names(&env.src), before, "SQLite left its files in SRC");
    assert_eq!(inspect(&env.dst.join("closed.db")), ("ok".to_string(), 1));
}
