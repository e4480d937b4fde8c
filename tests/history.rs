//! Getting files back: `versions`, `restore --at`, `verify` and `prune` over a real mirror.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Env, Run, bin, wait_until};
use serde_json::Value;

fn backup(env: &Env, args: &[&str]) -> Run {
    Run::of(
        Command::new(bin()).args(args).output().expect("run backup"),
        env,
    )
}

fn dst(env: &Env) -> &str {
    env.dst.to_str().expect("utf-8 path")
}

/// Waits for the wall clock to enter the next second, so that the next version gets a name of
/// its own second (no counter).
fn next_second() {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let start = now();
    assert!(wait_until(Duration::from_secs(3), || now() > start));
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// A file changed three times, each change backed up in a second of its own; a second file from
/// the start, a third only from the third change on.
fn three_changes(env: &Env) {
    env.write("a.txt", "one");
    env.write("notes/n.md", "notes");
    env.once(&["-q"]).code(0);
    next_second();
    env.write("a.txt", "two");
    env.once(&["-q"]).code(0);
    next_second();
    env.write("a.txt", "three");
    env.write("notes/later.md", "later");
    env.once(&["-q"]).code(0);
    next_second();
    env.write("a.txt", "four");
    env.once(&["-q"]).code(0);
}

#[test]
fn versions_lists_a_file_history_and_restore_goes_back_to_any_moment() {
    let env = Env::new();
    three_changes(&env);

    let r = backup(&env, &["versions", dst(&env), "a.txt", "--json"]);
    r.code(0);
    let versions = json_lines(&r.stdout);
    assert_eq!(versions.len(), 4, "{}", r.context());
    let captured: Vec<&str> = versions
        .iter()
        .map(|v| v["captured"].as_str().expect("captured"))
        .collect();
    assert!(captured.windows(2).all(|w| w[0] < w[1]), "{captured:?}");
    let contents: Vec<Vec<u8>> = versions
        .iter()
        .map(|v| fs::read(v["path"].as_str().expect("path")).expect("read"))
        .collect();
    assert_eq!(contents, [&b"one"[..], b"two", b"three", b"four"]);
    assert_eq!(versions[3]["latest"], true);
    assert_eq!(versions[0]["latest"], false);

    // Human lines: one header, four versions, the last marked latest.
    let r = backup(&env, &["versions", dst(&env), "a.txt"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", r.stdout);
    assert!(lines[4].ends_with("(latest)"), "{}", r.stdout);

    // Between the second and the third change: the second content.
    let at = captured[1].replace('T', " ");
    let out = env.root().join("a-then.txt");
    let r = backup(
        &env,
        &[
            "restore",
            dst(&env),
            "a.txt",
            "--to",
            out.to_str().expect("utf-8"),
            "--at",
            &at,
        ],
    );
    r.code(0);
    assert_eq!(fs::read(&out).expect("restored"), b"two");
    // With its metadata: the mtime the file had then.
    let v2 = Path::new(versions[1]["path"].as_str().expect("path"));
    assert_eq!(common::mtime_ns(&out), common::mtime_ns(v2));

    // The whole tree as it was then: later.md did not exist yet.
    let tree = env.root().join("tree-then");
    let r = backup(
        &env,
        &[
            "restore",
            dst(&env),
            ".",
            "--to",
            tree.to_str().expect("utf-8"),
            "--at",
            &at,
        ],
    );
    r.code(0);
    let mut names: Vec<String> = common::tree(&tree)
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "notes", "notes/n.md"], "{}", r.context());
    assert_eq!(fs::read(tree.join("a.txt")).expect("read"), b"two");
    r.stdout_has("Left out: 1");

    // Before the first copy there was nothing.
    let r = backup(
        &env,
        &[
            "restore",
            dst(&env),
            "a.txt",
            "--to",
            "/nonexistent-dir/x",
            "--at",
            "2000-01-01",
        ],
    );
    r.code(1);
    r.stderr_has("had no version yet at 2000-01-01 00:00:00");
}

#[test]
fn restore_never_overwrites() {
    let env = Env::new();
    env.write("a.txt", "backed up");
    env.write("sub/b.txt", "b");
    env.once(&["-q"]).code(0);
    let existing = env.root().join("existing.txt");
    fs::write(&existing, "precious").expect("write");
    let r = backup(
        &env,
        &[
            "restore",
            dst(&env),
            "a.txt",
            "--to",
            existing.to_str().expect("utf-8"),
        ],
    );
    r.code(1);
    r.stderr_has(&format!(
        "error: {} already exists; restore never overwrites",
        existing.display()
    ));
    assert_eq!(fs::read(&existing).expect("read"), b"precious");

    // A folder restore with one clash writes nothing at all.
    let target = env.root().join("target");
    fs::create_dir_all(target.join("sub")).expect("mkdir");
    fs::write(target.join("sub/b.txt"), "mine").expect("write");
    let r = backup(
        &env,
        &[
            "restore",
            dst(&env),
            ".",
            "--to",
            target.to_str().expect("utf-8"),
        ],
    );
    r.code(1);
    r.stderr_has(&format!(
        "{} already exists",
        target.join("sub/b.txt").display()
    ));
    assert!(!target.join("a.txt").exists(), "wrote before refusing");
    assert_eq!(fs::read(target.join("sub/b.txt")).expect("read"), b"mine");

    // Into the backup itself: refused.
    let inside = env.dst.join("restored");
    let r = backup(
        &env,
        &[
            "restore",
            dst(&env),
            "a.txt",
            "--to",
            inside.to_str().expect("utf-8"),
        ],
    );
    r.code(1);
    r.stderr_has("inside the destination");
}

#[test]
fn verify_holds_after_a_backup_and_names_what_does_not() {
    let env = Env::new();
    let a = env.write("a.txt", "one");
    env.write("b.txt", "bee");
    env.once(&["-q"]).code(0);
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify"];
        args.extend_from_slice(extra);
        args.push(env.src.to_str().expect("utf-8"));
        args.push(dst(&env));
        backup(&env, &args)
    };
    let r = verify(&[]);
    r.code(0);
    r.stdout_has("Up to date: 2");

    fs::write(&a, "changed!").expect("write");
    let r = verify(&[]);
    r.code(1);
    r.stdout_has(&format!("Stale: {}\n", a.display()));
    env.write("c.txt", "new");
    let r = verify(&["--json"]);
    r.code(1);
    let kinds: Vec<String> = json_lines(&r.stdout)
        .iter()
        .map(|v| v["type"].as_str().expect("type").to_string())
        .collect();
    assert!(
        kinds.contains(&"missing".to_string()) && kinds.contains(&"stale".to_string()),
        "{kinds:?}"
    );

    env.once(&["-q"]).code(0);
    verify(&[]).code(0);

    // A damaged newest copy: same size and time, other bytes. Only --checksum sees it.
    let newest = common::family(&env.dst, "a.txt").pop().expect("a copy");
    let newest = env.dst.join(newest);
    let (s, n) = common::mtime_ns(&newest);
    fs::write(&newest, "CHANGED!").expect("corrupt");
    common::set_mtime(&newest, s, n as u32);
    verify(&[]).code(0);
    let r = verify(&["--checksum"]);
    r.code(1);
    r.stdout_has(&format!("Differs: {}\n", a.display()));
    // Read-only: verifying changed nothing.
    assert_eq!(fs::read(&newest).expect("read"), b"CHANGED!");
}

#[test]
fn prune_keeps_the_newest_and_dry_run_deletes_nothing() {
    let env = Env::new();
    three_changes(&env);
    let before = common::tree(&env.dst);
    let r = backup(&env, &["prune", dst(&env), "--keep-last", "1", "--dry-run"]);
    r.code(0);
    assert_eq!(
        r.stdout.matches("Would prune: ").count(),
        3,
        "{}",
        r.context()
    );
    assert_eq!(common::tree(&env.dst), before, "dry run deleted");

    let r = backup(&env, &["prune", dst(&env), "--keep-last", "1"]);
    r.code(0);
    r.stdout_has("Versions pruned: 3");
    let fam = common::family(&env.dst, "a.txt");
    assert_eq!(fam.len(), 1, "{fam:?}");
    assert_eq!(fs::read(env.dst.join(&fam[0])).expect("read"), b"four");
    assert!(env.dst.join("notes/n.md").exists() && env.dst.join("notes/later.md").exists());
    // The mirror still works: the next change gets a new version, not the plain name.
    env.write("a.txt", "five");
    env.once(&["-q"]).code(0);
    let fam = common::family(&env.dst, "a.txt");
    assert_eq!(fam.len(), 2, "{fam:?}");
    assert_eq!(fs::read(env.dst.join(&fam[1])).expect("read"), b"five");

    // No policy: refused as a usage error.
    let r = backup(&env, &["prune", dst(&env)]);
    r.code(2);
}

#[test]
fn staggered_pruning_thins_a_year_of_versions_band_by_band() {
    let env = Env::new();
    fs::create_dir_all(&env.dst).expect("mkdir");
    let now = chrono::Local::now().naive_local();
    // Every 10 s for the last hour, every 6 h from a day to 30 days, every day after that.
    let mut ages: Vec<i64> = (1..=360).map(|i| i * 10 + 5).collect();
    ages.extend((4..=120).map(|i| i * 6 * 3600));
    ages.extend((31..=365).map(|i| i * 86_400));
    for age in &ages {
        let t = now - chrono::Duration::seconds(*age);
        let name = format!("log_{}.txt", t.format("%Y%m%d_%H%M%S"));
        let p = env.dst.join(&name);
        fs::write(&p, age.to_string()).expect("write");
        let secs = t
            .and_local_timezone(chrono::Local)
            .earliest()
            .expect("local")
            .timestamp();
        common::set_mtime(&p, secs, 0);
    }
    let r = backup(&env, &["prune", dst(&env), "--staggered"]);
    r.code(0);
    let kept: Vec<i64> = common::family(&env.dst, "log.txt")
        .iter()
        .map(|n| {
            fs::read_to_string(env.dst.join(n))
                .expect("read")
                .parse()
                .expect("age")
        })
        .collect();
    let band = |lo: i64, hi: i64| kept.iter().filter(|a| **a > lo && **a <= hi).count();
    // One per 30 s in the last hour, one per day up to 30 days, one per week beyond.
    assert!(
        (118..=122).contains(&band(0, 3600)),
        "last hour: {}",
        band(0, 3600)
    );
    assert!(
        (27..=31).contains(&band(86_400, 30 * 86_400)),
        "to 30 days: {}",
        band(86_400, 30 * 86_400)
    );
    assert!(
        (46..=50).contains(&band(30 * 86_400, 366 * 86_400)),
        "beyond: {}",
        band(30 * 86_400, 366 * 86_400)
    );
    assert!(kept.contains(&ages[0]), "the newest was pruned");
}

#[test]
fn source_files_named_like_versions_are_never_pruned_or_listed_as_versions() {
    let env = Env::new();
    env.write("a.txt", "one");
    env.write("a_20231124_153045.txt", "a file of its own");
    env.once(&["-q"]).code(0);
    next_second();
    env.write("a.txt", "two");
    env.once(&["-q"]).code(0);
    let r = backup(&env, &["versions", dst(&env), "a.txt", "--json"]);
    let names: Vec<String> = json_lines(&r.stdout)
        .iter()
        .map(|v| {
            v["path"]
                .as_str()
                .expect("path")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        !names.contains(&"a_20231124_153045.txt".to_string()),
        "{names:?}"
    );
    for args in [
        vec!["prune", dst(&env), "--keep-last", "1"],
        vec![
            "prune",
            dst(&env),
            "--keep-last",
            "1",
            "--source",
            env.src.to_str().expect("utf-8"),
        ],
    ] {
        backup(&env, &args).code(0);
        assert_eq!(
            fs::read(env.dst.join("a_20231124_153045.txt")).expect("still there"),
            b"a file of its own"
        );
    }
    let r = backup(&env, &["versions", dst(&env), "a.txt", "--json"]);
    assert_eq!(json_lines(&r.stdout).len(), 1, "{}", r.stdout);
}

#[test]
fn once_and_watch_prune_after_their_passes() {
    let env = Env::new();
    three_changes(&env);
    let r = env.once(&["--keep-last", "2"]);
    r.code(0);
    r.stdout_has("Versions pruned: 2");
    assert_eq!(common::family(&env.dst, "a.txt").len(), 2);

    let w = common::Watch::start(&env, &["--keep-last", "1", "--debounce", "100ms"]);
    w.wait_for("the first prune", Duration::from_secs(30), |_| {
        common::family(&env.dst, "a.txt").len() == 1
    });
    env.write("a.txt", "five");
    w.wait_for("the new version alone", Duration::from_secs(30), |_| {
        let fam = common::family(&env.dst, "a.txt");
        fam.len() == 1 && fs::read(env.dst.join(&fam[0])).ok().as_deref() == Some(b"five")
    });
    let (code, out, _) = w.stop(rustix::process::Signal::INT);
    assert_eq!(code, Some(0), "{out}");
}

/// A history with a change, a deletion, a folder renamed, a new file and a file that became a
/// folder: `diff` between two times says exactly what tells apart the trees `restore --at`
/// writes for them, and `find` finds a deleted file by its name in any folder.
#[test]
fn diff_and_find_read_the_same_history_as_restore() {
    let env = Env::new();
    let (t1, t2) = common::two_passes(&env);

    let r = backup(&env, &["diff", dst(&env), "--from", &t1, "--to", &t2]);
    r.code(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Changed: a.txt (6 B -> 15 B)",
            "Deleted: docs/report.txt (11 B)",
            "Added: new.txt (4 B)",
            "Moved: photos/p1.jpg -> pictures/p1.jpg (25 B)",
            "Deleted: swap (22 B)",
            "Added: swap/inside.txt (13 B)",
            "2 added, 1 changed, 2 deleted, 1 moved; -7 B",
        ],
        "{}",
        r.context()
    );
    // The same as the trees restore writes for the two times.
    let at = |t: &str, to: &str| {
        let target = env.root().join(to);
        backup(
            &env,
            &[
                "restore",
                dst(&env),
                ".",
                "--at",
                t,
                "--to",
                target.to_str().expect("utf-8"),
            ],
        )
        .code(0);
        common::tree(&target)
            .into_iter()
            .filter_map(|(p, n)| match n {
                common::Node::File { data, .. } => Some((p, data)),
                _ => None,
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (before, after) = (at(&t1, "t1"), at(&t2, "t2"));
    let json = json_lines(
        &backup(
            &env,
            &["diff", dst(&env), "--from", &t1, "--to", &t2, "--json"],
        )
        .stdout,
    );
    for line in &json {
        let path = |k: &str| Path::new(line[k].as_str().unwrap_or_default()).to_path_buf();
        match line["type"].as_str() {
            Some("added") => {
                assert!(!before.contains_key(&path("path")) && after.contains_key(&path("path")))
            }
            Some("removed") => {
                assert!(before.contains_key(&path("path")) && !after.contains_key(&path("path")))
            }
            Some("changed") => assert_ne!(before.get(&path("path")), after.get(&path("path"))),
            Some("moved") => assert_eq!(before.get(&path("from")), after.get(&path("path"))),
            Some("diff_summary") => assert_eq!(line["moved"], 1),
            other => panic!("{other:?}"),
        }
    }
    let unchanged = before
        .iter()
        .filter(|(p, d)| after.get(*p) == Some(d))
        .count();
    assert_eq!(unchanged + 4, before.len(), "everything else is the same");

    // Found by name, though its folder is not asked for; and among the deleted ones.
    let r = backup(&env, &["find", dst(&env), "report*", "--deleted"]);
    r.code(0);
    assert!(r.stdout.starts_with("docs/report.txt\n"), "{}", r.context());
    assert!(r.stdout.contains("deleted"), "{}", r.context());
    let r = backup(&env, &["find", dst(&env), "*.txt", "--deleted"]);
    assert!(
        !r.stdout.contains("a.txt"),
        "a.txt is not deleted: {}",
        r.context()
    );
    let r = backup(&env, &["find", dst(&env), "**/*.jpg", "--json"]);
    let found = json_lines(&r.stdout);
    assert!(
        found.iter().any(|l| l["file"] == "photos/p1.jpg"),
        "{}",
        r.stdout
    );
    assert!(
        found.iter().any(|l| l["file"] == "pictures/p1.jpg"),
        "{}",
        r.stdout
    );
    let r = backup(&env, &["find", dst(&env), "a["]);
    r.code(1);
    r.stderr_has("PATTERN a[");

    // Only what was captured in a span of time.
    let r = backup(&env, &["find", dst(&env), "a.txt", "--from", &t1, "--json"]);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1, "only the second version: {}", r.stdout);
    assert!(
        found[0]["path"].as_str().is_some_and(|p| p.contains("a_")),
        "{}",
        r.stdout
    );
    let r = backup(&env, &["find", dst(&env), "a.txt", "--to", &t1, "--json"]);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1, "only the first version: {}", r.stdout);
    assert!(
        found[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/a.txt")),
        "{}",
        r.stdout
    );

    // What changed in one file, as text.
    let r = backup(
        &env,
        &[
            "diff",
            dst(&env),
            "a.txt",
            "--from",
            &t1,
            "--to",
            &t2,
            "--content",
        ],
    );
    r.code(0);
    assert!(
        r.stdout.contains("\n-alpha\n+alpha, changed\n"),
        "{}",
        r.context()
    );
    let r = backup(
        &env,
        &["diff", dst(&env), "docs", "--from", &t1, "--content"],
    );
    r.code(1);
    r.stderr_has("a folder, not a file");
}

#[test]
fn diff_against_the_source_says_what_the_next_backup_would_take() {
    let env = Env::new();
    let (_, t2) = common::two_passes(&env);
    let src = env.src.to_str().expect("utf-8").to_string();
    // `diff DST [PATH] --from T2 --source SRC EXTRA…`
    let diff = |path: Option<&str>, extra: &[&str]| {
        let mut args = vec!["diff", dst(&env)];
        args.extend(path);
        args.extend(["--from", &t2, "--source", &src]);
        args.extend(extra);
        backup(&env, &args)
    };
    let r = diff(None, &[]);
    r.code(0);
    assert_eq!(
        r.stdout,
        "0 added, 0 changed, 0 deleted, 0 moved; +0 B\n",
        "{}",
        r.context()
    );

    // Changed since, and not backed up.
    env.write("a.txt", "alpha, changed again");
    fs::remove_file(env.src.join("new.txt")).expect("rm");
    fs::create_dir(env.src.join("images")).expect("mkdir");
    fs::rename(
        env.src.join("pictures/p1.jpg"),
        env.src.join("images/p1.jpg"),
    )
    .expect("mv");
    env.write("fresh.txt", "fresh");
    let r = diff(None, &[]);
    r.code(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Changed: a.txt (15 B -> 20 B)",
            "Added: fresh.txt (5 B)",
            "Moved: pictures/p1.jpg -> images/p1.jpg (25 B)",
            "Deleted: new.txt (4 B)",
            "1 added, 1 changed, 1 deleted, 1 moved; +6 B",
        ],
        "{}",
        r.context()
    );
    let r = diff(Some("a.txt"), &["--content"]);
    r.code(0);
    assert!(
        r.stdout
            .contains("\n-alpha, changed\n+alpha, changed again\n"),
        "{}",
        r.context()
    );
    // A time and the source are two later sides: one at a time.
    let r = diff(None, &["--to", "now"]);
    r.code(2);
}
