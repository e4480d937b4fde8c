//! Everyday options: progress, quiet, verbose, JSON, dry run, excludes, completions, man page.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::{Env, Watch, bin, wait_until};
use rustix::process::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn quiet_prints_failures_and_the_summary_only() {
    let env = Env::new();
    env.write("ok.txt", "ok");
    // A name that is nearly all extension: its first copy fits, a version never can.
    let long = format!("a.{}", "e".repeat(253));
    env.write(&long, "one");
    env.once(&[]).code(0);
    env.write("sub/x.txt", "x");
    env.write(&long, "two, changed");
    let r = env.once(&["-q"]);
    r.code(1);
    assert!(
        r.stdout.starts_with("\nBackup Summary:\n"),
        "{}",
        r.context()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.context());
    r.stderr_has("Failed: ");
}

#[test]
fn verbose_lists_unchanged_files() {
    let env = Env::new();
    let a = env.write("a.txt", "a");
    env.once(&[]).code(0);
    let r = env.once(&["-v"]);
    r.code(0);
    r.stdout_has(&format!("Up to date: {}\n", a.display()));
    assert_eq!(r.summary("Unchanged"), 1);
}

#[test]
fn json_lines_all_parse_and_name_paths_losslessly() {
    let env = Env::new();
    env.write("a.txt", "a");
    let raw = b"caf\xe9.txt";
    fs::write(env.src.join(std::ffi::OsStr::from_bytes(raw)), "raw").expect("write");
    let fifo = env.src.join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let r = env.once(&["--json"]);
    r.code(0);
    assert_eq!(r.stderr, "", "{}", r.context());
    let lines = json_lines(&r.stdout);
    let types: Vec<&str> = lines
        .iter()
        .map(|v| v["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "copied").count(),
        2,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "skipped").count(),
        1,
        "{types:?}"
    );
    assert_eq!(types.last(), Some(&"summary"));
    assert_eq!(types.first(), Some(&"created"), "DST was created");
    assert!(
        r.stdout.lines().all(|l| l.starts_with("{\"type\":")),
        "type first"
    );
    let encoded = lines
        .iter()
        .filter_map(|v| v["src"].as_str())
        .find(|s| s.starts_with("base64:"))
        .expect("the non-UTF-8 name, encoded");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&encoded["base64:".len()..])
        .expect("base64");
    assert_eq!(
        bytes,
        env.src
            .join(std::ffi::OsStr::from_bytes(raw))
            .as_os_str()
            .as_bytes()
    );
    let summary = lines.last().expect("summary");
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["copied"], 2);

    // Unchanged entries appear with --verbose.
    let r = env.once(&["--json", "-v"]);
    let unchanged = json_lines(&r.stdout)
        .iter()
        .filter(|v| v["type"] == "unchanged")
        .count();
    assert_eq!(unchanged, 2);
}

#[test]
fn watch_json_streams_batches_and_a_final_summary() {
    let env = Env::new();
    let w = Watch::start(&env, &["--json", "--debounce", "100ms"]);
    env.write("new.txt", "n");
    w.wait_for("the copy", LIMIT, |_| env.dst.join("new.txt").exists());
    w.wait_for("its batch line", LIMIT, |w| {
        w.stdout().matches("\"type\":\"batch\"").count() >= 2
    });
    let (code, out, _) = w.stop(Signal::INT);
    assert_eq!(code, Some(0));
    let lines = json_lines(&out);
    assert!(lines.iter().any(|v| v["type"] == "copied"));
    let batch = lines.iter().rfind(|v| v["type"] == "batch").expect("batch");
    assert_eq!(batch["batch"]["copied"], 1);
    assert_eq!(batch["total"]["copied"], 1);
    assert_eq!(lines.last().expect("summary")["type"], "summary");
}

#[test]
fn watch_verbose_tells_what_each_event_led_to() {
    let env = Env::new();
    let w = Watch::start(&env, &["-v", "--debounce", "100ms"]);
    let f = env.write("seen.txt", "s");
    w.wait_for("the copy", LIMIT, |_| env.dst.join("seen.txt").exists());
    fs::create_dir(env.src.join("newdir")).expect("mkdir");
    w.wait_for("the folder decision", LIMIT, |w| {
        w.stdout()
            .contains("newdir (created): new folder: watch and walk it")
    });
    let out = w.stdout();
    assert!(
        out.contains(&format!(
            "Event: {} (created): copy once closed and settled",
            f.display()
        )),
        "{out}"
    );
    w.stop(Signal::INT);
}

#[test]
fn dry_run_writes_nothing_at_all() {
    let env = Env::new();
    env.write("a.txt", "a");
    env.write("deep/er/b.txt", "b");
    // A missing destination is not even created.
    let r = env.once(&["-n"]);
    r.code(0);
    assert!(!env.dst.exists(), "dry run created DST\n{}", r.context());
    r.stdout_has(&format!(
        "Would copy: {} -> {}",
        env.src.join("deep/er/b.txt").display(),
        env.dst.join("deep/er/b.txt").display()
    ));
    r.stdout_has("Backup Summary (dry run: nothing was written):");

    // An existing one stays byte for byte, times included; the new name is shown.
    env.once(&[]).code(0);
    fs::write(env.src.join("a.txt"), "changed").expect("write");
    env.write("new/c.txt", "c");
    let stamp = |p: &Path| {
        common::tree(p)
            .into_iter()
            .map(|(rel, node)| (common::mtime_ns(&p.join(&rel)), rel, node))
            .collect::<Vec<_>>()
    };
    let before = stamp(&env.dst);
    let r = env.once(&["--dry-run", "--json"]);
    r.code(0);
    assert_eq!(stamp(&env.dst), before, "dry run changed DST");
    let lines = json_lines(&r.stdout);
    let would: Vec<&str> = lines
        .iter()
        .filter(|v| v["type"] == "would_copy")
        .filter_map(|v| v["dst"].as_str())
        .collect();
    assert_eq!(would.len(), 2, "{would:?}");
    assert!(
        would
            .iter()
            .any(|d| d.contains("/a_") && d.ends_with(".txt")),
        "{would:?}"
    );
    assert_eq!(lines.last().expect("summary")["dry_run"], true);
}

#[test]
fn excludes_from_flags_files_and_backupignore() {
    let env = Env::new();
    env.write("keep.txt", "k");
    env.write("x.tmp", "t");
    env.write("keep.tmp", "negated");
    env.write("node_modules/pkg/i.js", "n");
    env.write("sub/node_modules/j.js", "n");
    env.write("logs/a.log", "l");
    env.write("docs/readme.md", "d");
    env.write(".backupignore", "docs/\n");
    let list = env.root().join("exclude.txt");
    fs::write(&list, "# comments are fine\nlogs/\n").expect("write");
    let r = env.once(&[
        "-x",
        "*.tmp",
        "--exclude",
        "!keep.tmp",
        "--exclude",
        "node_modules/",
        "--exclude-from",
        list.to_str().expect("utf-8"),
    ]);
    r.code(0);
    let mut names: Vec<String> = common::tree(&env.dst)
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Excluded folders are not even created; `sub` is, since only its node_modules is left out.
    assert_eq!(
        names,
        [".backupignore", "keep.tmp", "keep.txt", "sub"],
        "{}",
        r.context()
    );
    assert_eq!(r.summary("Total files processed"), 3);
}

#[test]
fn a_bad_exclude_is_a_clear_error() {
    let env = Env::new();
    env.write("a", "a");
    let r = env.once(&["--exclude", "{a,b"]);
    r.code(1);
    r.stderr_has("error: --exclude \"{a,b\"");
    let r = env.once(&["--exclude-from", "/nonexistent/list"]);
    r.code(1);
    r.stderr_has("error: --exclude-from /nonexistent/list: no such file");
    assert!(!env.dst.exists());
}

#[test]
fn an_excluded_folder_is_neither_watched_nor_copied() {
    let mut env = Env::new();
    env.write("keep/sub/a.txt", "a");
    for d in 0..20 {
        env.write(format!("node_modules/p{d}/i.js"), "n");
    }
    // DST inside SRC is left out the same way.
    env.dst = env.src.join("mirror");
    // inotify, as without root: the watches it takes are what is counted.
    let w = Watch::start(
        &env,
        &[
            "-x",
            "node_modules/",
            "--debounce",
            "100ms",
            "--events",
            "inotify",
        ],
    );
    w.wait_for("the first pass", LIMIT, |_| {
        env.dst.join("keep/sub/a.txt").exists()
    });
    // SRC, keep, keep/sub: nothing under node_modules, nothing under the mirror.
    assert_eq!(common::inotify_watches(Some(w.pid())), 3, "{}", w.context());
    env.write("node_modules/p0/new.js", "ignored");
    env.write("keep/sub/b.txt", "b");
    w.wait_for("the kept file", LIMIT, |_| {
        env.dst.join("keep/sub/b.txt").exists()
    });
    let (code, out, _) = w.stop(Signal::INT);
    assert_eq!(code, Some(0));
    assert!(!env.dst.join("node_modules").exists(), "{out}");
}

#[test]
fn progress_is_shown_in_a_terminal_and_nowhere_else() {
    let env = Env::new();
    for d in 0..30 {
        for f in 0..100 {
            env.write(format!("d{d:02}/f{f:02}"), vec![b'p'; 4000]);
        }
    }
    // Not a terminal: no progress at all.
    let r = env.once(&["-n"]);
    assert!(!r.stderr.contains("files of"), "{}", r.context());

    let tmux_ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let strace_ok = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !tmux_ok || !strace_ok {
        eprintln!("SKIPPED: the terminal part needs tmux and strace");
        return;
    }
    let session = format!("backup-progress-{}", std::process::id());
    let out = env.root().join("out.txt");
    // strace slows each copy a little, so that the bar is up long enough to be read.
    let script = format!(
        "strace -f -qq -o /dev/null -e inject=copy_file_range:delay_enter=300 {} once -j 1 {} {} > {}; sleep 30",
        bin().display(),
        env.src.display(),
        env.dst.display(),
        out.display()
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "10",
            &script,
        ])
        .status()
        .expect("tmux");
    assert!(started.success());
    let mut screen = String::new();
    let seen = wait_until(LIMIT, || {
        screen = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        screen.contains(" files of 3000, ") && screen.contains(" left")
    });
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert!(seen, "no progress line on the terminal:\n{screen}");
    let line = screen
        .lines()
        .find(|l| l.contains("files of 3000"))
        .unwrap_or_default();
    assert!(line.contains("MiB") && line.contains("/s"), "{line}");
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("backup") && text.contains("exclude"),
            "{shell}: {text}"
        );
    }
    let out = Command::new(bin()).arg("man").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(".ie") || text.contains(".TH backup"),
        "{text}"
    );
    let bad = Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn help_explains_every_option() {
    for (sub, options) in [
        (
            "once",
            &[
                "--checksum",
                "--jobs",
                "--exclude",
                "--exclude-from",
                "--quiet",
                "--verbose",
                "--json",
                "--dry-run",
            ][..],
        ),
        (
            "watch",
            &[
                "--checksum",
                "--jobs",
                "--exclude",
                "--exclude-from",
                "--quiet",
                "--verbose",
                "--json",
                "--debounce",
                "--max-delay",
                "--poll",
                "--rescan-every",
            ][..],
        ),
    ] {
        let out = Command::new(bin()).args([sub, "-h"]).output().expect("run");
        let short = String::from_utf8_lossy(&out.stdout).into_owned();
        for opt in options {
            let line = short
                .lines()
                .find(|l| l.contains(opt) && !l.contains(&format!("{opt}-")))
                .unwrap_or_else(|| panic!("{sub} -h lacks {opt}:\n{short}"));
            let text = line.split(">").last().unwrap_or(line);
            assert!(
                text.split_whitespace().count() >= 3,
                "{sub} {opt} unexplained: {line}"
            );
        }
        let long = Command::new(bin())
            .args([sub, "--help"])
            .output()
            .expect("run");
        let long = String::from_utf8_lossy(&long.stdout);
        assert!(long.contains("EXAMPLES:"), "{sub}");
    }
}

#[test]
fn editor_lock_and_download_litter_is_left_out_by_default() {
    let env = Env::new();
    env.write("report.odt", "the document");
    // What vim, LibreOffice and Firefox leave beside real files while they work.
    env.write(".report.txt.swp", "vim swap");
    env.write("4913", "vim's test write");
    env.write("report.txt~", "vim backup");
    env.write(".~lock.report.odt#", "libreoffice lock");
    env.write("film.mkv.part", "half a download");
    env.write(".Trash-1000/files/old.txt", "trash");
    let r = env.once(&[]);
    r.code(0);
    assert_eq!(
        env.dst_names(""),
        vec!["report.odt".to_string()],
        "{}",
        r.context()
    );
    assert_eq!(r.summary("Successfully copied"), 1);

    let all = Env::new();
    all.write("report.odt", "the document");
    all.write(".~lock.report.odt#", "libreoffice lock");
    all.write("film.mkv.part", "half a download");
    let r = all.once(&["--no-default-ignores"]);
    r.code(0);
    assert_eq!(r.summary("Successfully copied"), 3, "{}", r.context());
}

/// What vim, LibreOffice and Firefox do on disk while a `watch` runs with `extra` options.
/// Returns the names in DST once the last file has arrived, and the watches the first pass set.
fn litter_under_watch(extra: &[&str]) -> (Vec<String>, usize) {
    let env = Env::new();
    env.write("report.txt", "old words");
    env.write(".Trash-1000/files/old.txt", "trash");
    env.write(".Trash-1000/info/old.txt.trashinfo", "trash");
    let mut args = vec!["--debounce", "100ms", "--events", "inotify"];
    args.extend_from_slice(extra);
    let w = Watch::start(&env, &args);
    w.wait_for("the first pass", LIMIT, |_| {
        env.dst_names("").iter().any(|n| n.starts_with("report"))
    });
    let watches = common::inotify_watches(Some(w.pid()));
    // vim opens the file: a swap file that stays while it is open. Saving it with the default
    // `backupcopy=auto`: a probe file, the old file renamed to a backup, the new one written,
    // the backup removed.
    env.write(".report.txt.swp", "vim swap");
    env.write("4913", "");
    fs::remove_file(env.src.join("4913")).expect("rm");
    fs::rename(env.src.join("report.txt"), env.src.join("report.txt~")).expect("mv");
    env.write("report.txt", "new words");
    fs::remove_file(env.src.join("report.txt~")).expect("rm");
    // LibreOffice holds a lock file beside the document it has open.
    env.write(
        ".~lock.budget.ods#",
        ",ana,host,29.11.2026 10:00,file:///home/ana/.config;",
    );
    env.write("budget.ods", "numbers");
    // Firefox downloads into `.part`, then renames it.
    env.write("film.mkv.part", "half a film");
    fs::rename(env.src.join("film.mkv.part"), env.src.join("film.mkv")).expect("mv");
    env.write("film.mkv.part", "the next download, half done");
    env.write("last.txt", "written after all the rest");
    w.wait_for("the last file", LIMIT, |_| {
        env.dst.join("last.txt").exists()
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    (env.dst_names(""), watches)
}

#[test]
fn under_watch_an_editor_save_a_lock_and_a_download_make_no_litter_versions() {
    let (names, watches) = litter_under_watch(&[]);
    let versions_of_report = names.iter().filter(|n| n.starts_with("report")).count();
    assert_eq!(
        versions_of_report, 2,
        "the old and the new words: {names:?}"
    );
    for litter in [
        ".report.txt.swp",
        "4913",
        "report.txt~",
        ".~lock.budget.ods#",
    ] {
        assert!(!names.iter().any(|n| n.starts_with(litter)), "{names:?}");
    }
    assert!(!names.iter().any(|n| n.contains(".part")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".Trash")), "{names:?}");
    for real in ["budget.ods", "film.mkv", "last.txt"] {
        assert!(names.contains(&real.to_string()), "{real}: {names:?}");
    }
    assert_eq!(watches, 1, "SRC alone: the trash folder costs no watch");

    let (names, watches) = litter_under_watch(&["--no-default-ignores"]);
    for litter in [
        ".report.txt.swp",
        ".~lock.budget.ods#",
        "film.mkv.part",
        ".Trash-1000",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(litter)),
            "{litter}: {names:?}"
        );
    }
    assert_eq!(watches, 4, "SRC, the trash folder and its two folders");
}
