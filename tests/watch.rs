//! `backup watch`: a real watcher, real changes, bounded waits, stopped with a real signal.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, Watch, family, hold_for, ino, read};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(30);

/// Waits for `dir/name`'s family to reach `n` members, and returns them.
fn wait_family(w: &Watch, dir: &Path, name: &str, n: usize) -> Vec<String> {
    w.wait_for(&format!("{n} copies of {name}"), LIMIT, |_| {
        family(dir, name).len() >= n
    });
    family(dir, name)
}

fn stop_ok(w: Watch, sig: Signal) -> String {
    let (code, out, err) = w.stop(sig);
    assert_eq!(
        code,
        Some(0),
        "exit code\n--- stdout\n{out}--- stderr\n{err}"
    );
    assert!(out.contains("\nBackup Summary:\n"), "{out}");
    out
}

#[test]
fn a_new_file_is_mirrored_and_a_rolling_summary_printed() {
    let env = Env::new();
    env.write("old.txt", "old");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    w.wait_for("the initial copy", LIMIT, |_| {
        env.dst.join("old.txt").exists()
    });
    env.write("new.txt", "fresh");
    w.wait_for("new.txt", LIMIT, |_| {
        read(&env.dst.join("new.txt")) == b"fresh"
    });
    w.wait_for("a rolling line for it", LIMIT, |w| w.batches() >= 2);
    let out = stop_ok(w, Signal::INT);
    let line = out
        .lines()
        .rfind(|l| l.contains(" batch: "))
        .expect("rolling line");
    assert!(
        line.contains("batch: copied 1, unchanged 0, skipped 0, failed 0 | since start: copied 2"),
        "{line}"
    );
    assert!(out.contains("Successfully copied: 2"), "{out}");
}

#[test]
fn a_changed_file_gets_a_new_version_and_the_old_stays() {
    let env = Env::new();
    let a = env.write("a.txt", "one");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    let first = wait_family(&w, &env.dst, "a.txt", 1);
    let old = env.dst.join(&first[0]);
    let old_ino = ino(&old);
    fs::write(&a, "two").expect("write");
    let fam = wait_family(&w, &env.dst, "a.txt", 2);
    w.wait_for("the new version's contents", LIMIT, |_| {
        read(&env.dst.join(&fam[1])) == b"two"
    });
    assert_eq!(read(&old), b"one");
    assert_eq!(ino(&old), old_ino);
    stop_ok(w, Signal::TERM);
}

#[test]
fn fifty_writes_in_half_a_second_give_one_version() {
    let env = Env::new();
    let a = env.write("burst.txt", "start");
    let debounce = Duration::from_millis(300);
    let w = Watch::start(&env, &["--debounce", "300ms"]);
    wait_family(&w, &env.dst, "burst.txt", 1);
    let mut f = fs::OpenOptions::new().append(true).open(&a).expect("open");
    // The workload: 50 writes paced 10 ms apart.
    let gap = Duration::from_millis(10);
    for i in 0..50 {
        writeln!(f, "write {i}").expect("write");
        hold_for(gap);
    }
    drop(f);
    let fam = wait_family(&w, &env.dst, "burst.txt", 2);
    // Two more debounce periods with no change: no second version may appear.
    hold_for(debounce * 3);
    let fam_after = family(&env.dst, "burst.txt");
    assert_eq!(fam_after.len(), 2, "{fam_after:?}\n{}", w.context());
    assert_eq!(read(&env.dst.join(&fam[1])), read(&a));
    stop_ok(w, Signal::INT);
}

#[test]
fn a_file_that_never_settles_is_copied_every_max_delay_untorn() {
    let env = Env::new();
    let log = env.write("app.log", "");
    let w = Watch::start(&env, &["--max-delay", "2s"]);
    wait_family(&w, &env.dst, "app.log", 1);
    let started = Instant::now();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    let append_every = Duration::from_millis(100);
    let mut versions_while_appending = 0;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(6) {
        writeln!(f, "line {i:05} {}", "x".repeat(40)).expect("append");
        i += 1;
        // The workload: one append every 100 ms.
        hold_for(append_every);
        versions_while_appending = family(&env.dst, "app.log").len() - 1;
    }
    drop(f);
    let last = read(&log);
    assert!(
        versions_while_appending >= 1,
        "no version before the appends stopped\n{}",
        w.context()
    );
    w.wait_for("the final content", LIMIT, |_| {
        let fam = family(&env.dst, "app.log");
        fam.last().is_some_and(|n| read(&env.dst.join(n)) == last)
    });
    for name in family(&env.dst, "app.log") {
        let data = read(&env.dst.join(&name));
        assert!(
            last.starts_with(&data),
            "{name} is not a prefix of the final log"
        );
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "{name} ends mid-line: torn copy"
        );
    }
    stop_ok(w, Signal::INT);
}

#[test]
fn new_folders_and_moved_in_trees_are_mirrored_whole() {
    let env = Env::new();
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    fs::create_dir_all(env.src.join("a/b/c")).expect("mkdir -p");
    for rel in ["a/1.txt", "a/b/2.txt", "a/b/c/3.txt"] {
        fs::write(env.src.join(rel), rel).expect("write");
    }
    // A tree built outside SRC, then moved in with one rename.
    let outside = env.root().join("outside");
    for rel in ["t/x.txt", "t/u/y.txt", "t/u/v/z.txt"] {
        let p = outside.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, rel).expect("write");
    }
    fs::rename(outside.join("t"), env.src.join("t")).expect("mv");
    let all = [
        "a/1.txt",
        "a/b/2.txt",
        "a/b/c/3.txt",
        "t/x.txt",
        "t/u/y.txt",
        "t/u/v/z.txt",
    ];
    w.wait_for("every file", LIMIT, |_| {
        all.iter()
            .all(|rel| read(&env.dst.join(rel)) == rel.as_bytes())
    });
    stop_ok(w, Signal::INT);
}

#[test]
fn an_editor_style_save_leaves_the_final_content_latest() {
    let env = Env::new();
    let doc = env.write("doc.md", "draft 1");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    wait_family(&w, &env.dst, "doc.md", 1);
    for i in 2..=3 {
        let tmp = env.src.join(".doc.md.swp");
        fs::write(&tmp, format!("draft {i}")).expect("write tmp");
        fs::rename(&tmp, &doc).expect("rename over");
    }
    w.wait_for("the final draft as latest", LIMIT, |_| {
        family(&env.dst, "doc.md")
            .last()
            .is_some_and(|n| read(&env.dst.join(n)) == b"draft 3")
    });
    stop_ok(w, Signal::INT);
}

#[test]
fn a_storm_of_3000_files_in_100_new_folders_is_mirrored_completely() {
    let env = Env::new();
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    env.storm(100, 30);
    w.wait_for("all 3000 files", Duration::from_secs(120), |_| {
        env.storm_missing(100, 30) == 0
    });
    let out = stop_ok(w, Signal::INT);
    assert!(out.contains("Successfully copied: 3000\n"), "{out}");
    assert!(out.contains("Failed copies: 0\n"), "{out}");
}

/// A burst is gathered, not cut into hundreds of batches: 2,000 files written just before the
/// start (the first pass says they are settling, instead of only "copied 0"), then 3,000 more in
/// 30 new folders while those are being copied, as an archive unpacked into a busy watch.
/// Before, such a burst printed hundreds of rolling lines; now at most one a second while it
/// lasts, with exact totals.
#[test]
fn a_burst_of_5000_files_gives_a_handful_of_rolling_lines() {
    let env = Env::new();
    for d in 0..20 {
        for f in 0..100 {
            env.write(format!("old{d:02}/f{f:03}.txt"), format!("{d} {f}"));
        }
    }
    let w = Watch::start(&env, &[]);
    w.wait_for("the first pass's line", LIMIT, |w| w.batches() >= 1);
    let first = w.stdout();
    let first = first.lines().find(|l| l.contains(" batch: ")).unwrap_or("");
    // The files were written less than the debounce (1 s) ago: every one of them is settling,
    // unless the machine was slow enough that some were copied already.
    assert!(
        first.contains(", settling ") || first.contains("batch: copied 2000,"),
        "{first}"
    );
    // Counted without reading, while copies come and go.
    let copies = || {
        walkdir::WalkDir::new(&env.dst)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".backup-tmp."))
            .count()
    };
    w.wait_for("the settled files being copied", LIMIT, |_| copies() > 0);
    let started = Instant::now();
    for d in 0..30 {
        for f in 0..100 {
            env.write(format!("new{d:02}/f{f:03}.txt"), format!("{d} {f}"));
        }
    }
    let burst = started.elapsed();
    w.wait_for("all 5000 files", Duration::from_secs(120), |_| {
        copies() == 5000
    });
    let out = stop_ok(w, Signal::INT);
    assert!(out.contains("Successfully copied: 5000\n"), "{out}");
    let lines = out.lines().filter(|l| l.contains(" batch: ")).count();
    // The first pass, about one a second during the burst and its copies, and the last.
    let most = 3 + usize::try_from(burst.as_secs()).unwrap_or(10) + 2;
    assert!(
        lines <= most,
        "{lines} rolling lines for a {burst:?} burst\n{out}"
    );
}

#[test]
fn a_destination_inside_the_source_causes_no_feedback() {
    let mut env = Env::new();
    env.dst = env.src.join("mirror");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    env.write("a.txt", "one change");
    // The copy, and the rolling line of the batch that made it.
    w.wait_for("the copy", LIMIT, |w| {
        read(&env.dst.join("a.txt")) == b"one change" && w.stdout().contains("batch: copied 1,")
    });
    let batches = w.batches();
    hold_for(Duration::from_millis(1500));
    assert_eq!(w.batches(), batches, "copies kept coming\n{}", w.context());
    assert_eq!(common::tree(&env.dst).len(), 1, "{}", w.context());
    let out = stop_ok(w, Signal::INT);
    assert!(out.contains("Successfully copied: 1\n"), "{out}");
}

#[test]
fn a_file_changed_during_the_initial_pass_ends_up_in_its_final_state() {
    let env = Env::new();
    for d in 0..40 {
        for f in 0..100 {
            env.write(format!("d{d:02}/f{f:03}.txt"), format!("{d} {f}"));
        }
    }
    let target = env.write("d39/f099.txt", "before");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    // The watcher is up and the pass has just begun: 4,000 files take far longer than this.
    fs::write(&target, "after, during the pass").expect("write");
    assert_eq!(
        w.batches(),
        0,
        "the initial pass ended before the change\n{}",
        w.context()
    );
    let dir = env.dst.join("d39");
    w.wait_for("the final state as latest", LIMIT, |_| {
        family(&dir, "f099.txt")
            .last()
            .is_some_and(|n| read(&dir.join(n)) == b"after, during the pass")
    });
    stop_ok(w, Signal::INT);
}

#[test]
fn sigint_and_sigterm_print_the_summary_and_exit_0() {
    for sig in [Signal::INT, Signal::TERM] {
        let env = Env::new();
        env.write("a.txt", "a");
        let w = Watch::start(&env, &[]);
        w.wait_for("the initial copy", LIMIT, |_| {
            env.dst.join("a.txt").exists()
        });
        let out = stop_ok(w, sig);
        assert!(
            out.ends_with(
                "Backup Summary:\nTotal files processed: 1\nSuccessfully copied: 1\nUnchanged: 0\nSkipped: 0\nFailed copies: 0\n"
            ),
            "{out}"
        );
    }
}

#[test]
fn polling_mirrors_a_new_file() {
    let env = Env::new();
    let w = Watch::start(&env, &["--poll", "500ms", "--debounce", "100ms"]);
    assert!(w.stderr().contains("(polling;"), "{}", w.stderr());
    env.write("sub/polled.txt", "seen by polling");
    w.wait_for("the polled file", LIMIT, |_| {
        read(&env.dst.join("sub/polled.txt")) == b"seen by polling"
    });
    stop_ok(w, Signal::INT);
}

#[test]
fn with_exit_on_lost_destination_an_unmount_ends_the_watch_without_writing_to_the_mount_point() {
    let mut env = Env::new();
    let mnt = env.root().join("mnt");
    if !common::mount_tmpfs(&mnt, "size=4m") {
        return;
    }
    let _unmount = common::Mount(mnt.clone());
    env.dst = mnt.clone();
    env.write("a.txt", "a");
    let w = Watch::start(&env, &["--debounce", "100ms", "--exit-on-lost-destination"]);
    w.wait_for("the initial copy", LIMIT, |_| {
        env.dst.join("a.txt").exists()
    });
    let ok = std::process::Command::new("umount")
        .arg("-l")
        .arg(&mnt)
        .status()
        .expect("umount")
        .success();
    assert!(ok, "umount -l failed");
    env.write("b.txt", "after the unmount");
    let (code, out, err) = w.stop_when_exited(LIMIT);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("error: destination {}: ", mnt.display())),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        fs::read_dir(&mnt).expect("read").next().is_none(),
        "wrote into the bare mount point"
    );
}

#[test]
fn a_deleted_source_stops_the_watch_with_an_error() {
    let env = Env::new();
    env.write("a.txt", "a");
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    w.wait_for("the initial copy", LIMIT, |_| {
        env.dst.join("a.txt").exists()
    });
    fs::remove_dir_all(&env.src).expect("rm -r src");
    let (code, out, err) = w.stop_when_exited(LIMIT);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("error: source {}: ", env.src.display())),
        "{err}"
    );
    assert!(out.contains("Backup Summary:"), "{out}");
    assert_eq!(read(&env.dst.join("a.txt")), b"a");
}

#[test]
fn a_second_ctrl_c_exits_at_once_with_130_and_nothing_partial() {
    let env = Env::on_tmpfs();
    let size: u64 = 1 << 30;
    env.filled("huge.bin", size);
    let w = Watch::start(&env, &[]);
    w.wait_for("the copy to start", LIMIT, |_| env.copying());
    let pid = rustix::process::Pid::from_raw(w.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, Signal::INT).expect("first SIGINT");
    w.wait_for("the first Ctrl-C to be taken", LIMIT, |w| {
        w.stderr().contains("Stopping after the copies in flight")
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(130), "{out}{err}");
    if let Ok(m) = fs::metadata(env.dst.join("huge.bin")) {
        assert_eq!(m.len(), size, "partial data under the final name");
    }
}

#[test]
fn ctrl_c_during_a_copy_finishes_it_and_leaves_no_temporary_data() {
    let env = Env::on_tmpfs();
    let size: u64 = 1 << 30;
    env.filled("huge.bin", size);
    let w = Watch::start(&env, &[]);
    w.wait_for("the copy to start", LIMIT, |_| env.copying());
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Backup Summary:\n"), "{out}");
    assert!(out.contains("Successfully copied: 1\n"), "{out}");
    let names: Vec<_> = common::tree(&env.dst).into_keys().collect();
    assert_eq!(
        names,
        vec![std::path::PathBuf::from("huge.bin")],
        "{out}{err}"
    );
    assert_eq!(
        fs::metadata(env.dst.join("huge.bin"))
            .expect("copied")
            .len(),
        size
    );
}

#[test]
fn a_folder_renamed_inside_the_source_is_watched_under_its_new_name() {
    let env = Env::new();
    env.write("a/sub/x.txt", "x");
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    w.wait_for("the first copy", LIMIT, |_| {
        env.dst.join("a/sub/x.txt").exists()
    });
    fs::rename(env.src.join("a"), env.src.join("b")).expect("mv a b");
    w.wait_for("the renamed tree", LIMIT, |_| {
        read(&env.dst.join("b/sub/x.txt")) == b"x"
    });
    env.write("b/sub/new.txt", "written after the rename");
    w.wait_for("a file written in the renamed folder", LIMIT, |_| {
        read(&env.dst.join("b/sub/new.txt")) == b"written after the rename"
    });
    assert!(!env.dst.join("a/sub/new.txt").exists(), "{}", w.context());
    stop_ok(w, Signal::INT);
}

/// The nice value of the process `pid` (the 19th field of its stat line).
fn nice_of(pid: u32) -> i64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .expect("fields");
    after
        .split(' ')
        .nth(16)
        .and_then(|n| n.parse().ok())
        .expect("nice")
}

#[test]
fn watch_copies_at_idle_priority_unless_told_otherwise() {
    let env = Env::new();
    env.write("a.txt", "a");
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    assert_eq!(nice_of(w.pid()), 10);
    let ionice = std::process::Command::new("ionice")
        .arg("-p")
        .arg(w.pid().to_string())
        .output();
    if let Ok(out) = ionice {
        let class = String::from_utf8_lossy(&out.stdout);
        assert!(class.trim().starts_with("idle"), "{class}");
    }
    stop_ok(w, Signal::INT);
    let w = Watch::start(&env, &["--debounce", "100ms", "--priority", "normal"]);
    assert_eq!(nice_of(w.pid()), nice_of(std::process::id()), "as started");
    stop_ok(w, Signal::INT);
}

#[test]
fn a_file_seen_again_unchanged_is_counted_once_and_a_stop_names_what_was_left() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let n = 20;
    for i in 0..n {
        let p = env.write(format!("f{i:02}.txt"), format!("{i}"));
        common::set_mtime(&p, 1_700_000_000, 0);
    }
    env.once(&[]).code(0);
    let w = Watch::start(&env, &["--debounce", "200ms", "-v"]);
    let up_to_date = |w: &Watch| w.stdout().matches("Up to date: ").count();
    w.wait_for("the first pass", LIMIT, |w| up_to_date(w) >= n);
    // The same mode again: an event, and nothing changed.
    for i in 0..n {
        let p = env.src.join(format!("f{i:02}.txt"));
        let mode = fs::metadata(&p).expect("stat").permissions().mode();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    w.wait_for("each file looked at again", LIMIT, |w| {
        up_to_date(w) >= 2 * n
    });
    // A file still being written when the watch stops is left for the next run, and said.
    let mut open = fs::File::create(env.src.join("writing.bin")).expect("create");
    open.write_all(b"partial").expect("write");
    w.wait_for("the write event", LIMIT, |w| {
        w.stdout().contains("writing.bin (written)")
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("Total files processed: {n}\n")),
        "each file once\n{out}"
    );
    assert!(
        err.contains("Stopped with 1 changed file not copied yet"),
        "{err}"
    );
    drop(open);
}
