//! `backup once` on real trees: what lands in DST, what is printed, how it exits.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use common::{Env, ino, mtime_ns, os, set_mtime, wait_until};

/// `STEM_YYYYMMDD_HHMMSS[_N].EXT`
fn is_version(name: &str, stem: &str, ext: Option<&str>) -> bool {
    let rest = match ext {
        Some(ext) => name
            .strip_prefix(stem)
            .and_then(|r| r.strip_suffix(&format!(".{ext}"))),
        None => name.strip_prefix(stem),
    };
    let Some(rest) = rest else { return false };
    let parts: Vec<&str> = rest.split('_').collect();
    parts.len() >= 3
        && parts[0].is_empty()
        && parts[1].len() == 8
        && parts[2].len() == 6
        && parts[1..]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_digit()))
        && parts.len() <= 4
}

#[test]
fn first_run_mirrors_everything_exactly() {
    let env = Env::new();
    env.write("a.txt", "alpha\n");
    env.write(
        "sub/deep/b.bin",
        (0..=255u8).cycle().take(100_000).collect::<Vec<_>>(),
    );
    let exe = env.write("tool.sh", "#!/bin/sh\n");
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o751)).expect("chmod");
    set_mtime(&env.src.join("a.txt"), 1_600_000_000, 123_456_789);
    fs::create_dir_all(env.src.join("empty/inner")).expect("mkdir");
    fs::set_permissions(env.src.join("empty"), fs::Permissions::from_mode(0o711)).expect("chmod");
    symlink("a.txt", env.src.join("to_file")).expect("symlink");
    symlink("sub", env.src.join("to_dir")).expect("symlink");
    symlink("missing", env.src.join("dangling")).expect("symlink");
    symlink("loop", env.src.join("loop")).expect("symlink");
    let raw = os(b"caf\xe9-latin1.txt");
    fs::write(env.src.join(raw), "non-utf8 name").expect("write");
    set_mtime(&env.src.join("empty/inner"), 1_500_000_000, 42);

    let run = env.once(&[]);
    run.code(0);
    assert_eq!(
        common::tree(&env.src),
        env.dst_tree(),
        "trees differ\n{}",
        run.context()
    );
    for rel in ["a.txt", "sub/deep/b.bin", "tool.sh", "empty/inner", "sub"] {
        let (s, d) = (env.src.join(rel), env.dst.join(rel));
        assert_eq!(mtime_ns(&s), mtime_ns(&d), "mtime of {rel}");
        let (sm, dm) = (s.metadata().expect("stat"), d.metadata().expect("stat"));
        assert_eq!(sm.mode(), dm.mode(), "mode of {rel}");
        assert_eq!((sm.uid(), sm.gid()), (dm.uid(), dm.gid()), "owner of {rel}");
    }
    assert_eq!(
        mtime_ns(&env.src.join("to_file")),
        mtime_ns(&env.dst.join("to_file"))
    );

    // Exact lines: one per copied entry, then the summary block.
    let mut expected: Vec<String> = [
        "a.txt",
        "sub/deep/b.bin",
        "tool.sh",
        "to_file",
        "to_dir",
        "dangling",
        "loop",
    ]
    .iter()
    .map(|rel| {
        format!(
            "Copied: {} -> {}",
            env.src.join(rel).display(),
            env.dst.join(rel).display()
        )
    })
    .collect();
    expected.push(format!(
        "Copied: {} -> {}",
        env.src.join(raw).display(),
        env.dst.join(raw).display()
    ));
    expected.sort();
    assert_eq!(run.copied(), expected, "{}", run.context());
    assert!(
        run.stdout.ends_with(
            "\nBackup Summary:\nTotal files processed: 8\nSuccessfully copied: 8\nUnchanged: 0\nSkipped: 0\nFailed copies: 0\n"
        ),
        "{}",
        run.context()
    );
    // The one line on stderr says that DST was created (its parent existed).
    assert_eq!(
        run.stderr,
        format!("Created destination {}\n", env.dst.display()),
        "{}",
        run.context()
    );
}

#[test]
fn rerun_with_nothing_changed_copies_nothing() {
    let env = Env::new();
    env.write("a.txt", "a");
    env.write("d/b.txt", "b");
    symlink("a.txt", env.src.join("l")).expect("symlink");
    env.once(&[]).code(0);
    let before = env.dst_tree();
    let dir_mtime = mtime_ns(&env.dst.join("d"));
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 0);
    assert_eq!(run.summary("Unchanged"), 3);
    assert_eq!(run.summary("Total files processed"), 3);
    assert_eq!(env.dst_tree(), before);
    assert_eq!(mtime_ns(&env.dst.join("d")), dir_mtime);
    assert!(run.copied().is_empty(), "{}", run.context());
}

#[test]
fn a_changed_file_gets_a_new_version_and_the_old_copy_is_kept() {
    let env = Env::new();
    let a = env.write("report.txt", "v1");
    env.once(&[]).code(0);
    let old = env.dst.join("report.txt");
    let old_ino = ino(&old);

    fs::write(&a, "version two").expect("write");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 1);
    assert_eq!(ino(&old), old_ino, "old copy replaced");
    assert_eq!(fs::read(&old).expect("read"), b"v1");
    let names = env.dst_names("");
    assert_eq!(names.len(), 2, "{names:?}");
    let new = names
        .iter()
        .find(|n| *n != "report.txt")
        .expect("a version");
    assert!(is_version(new, "report", Some("txt")), "{new}");
    assert_eq!(fs::read(env.dst.join(new)).expect("read"), b"version two");
    let line = format!("Copied: {} -> {}", a.display(), env.dst.join(new).display());
    assert_eq!(run.copied(), vec![line]);
}

#[test]
fn three_changes_in_one_second_give_three_names_then_nothing() {
    let env = Env::new();
    let a = env.write("a.txt", "0");
    env.once(&[]).code(0);
    for i in 1..=3 {
        fs::write(&a, format!("change {i}")).expect("write");
        // Distinct mtimes even on a coarse clock: size and mtime decide "changed".
        set_mtime(&a, 1_700_000_000 + i, 0);
        env.once(&[]).code(0);
    }
    let names = env.dst_names("");
    assert_eq!(names.len(), 4, "{names:?}");
    let versions: Vec<_> = names.iter().filter(|n| *n != "a.txt").collect();
    for v in &versions {
        assert!(is_version(v, "a", Some("txt")), "{v}");
    }
    // The newest name holds the last content: versions sort in the order they were made.
    let newest = versions
        .iter()
        .max_by_key(|v| version_key(v))
        .expect("newest");
    assert_eq!(fs::read(env.dst.join(newest)).expect("read"), b"change 3");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 0, "{}", run.context());
}

fn version_key(name: &str) -> (String, u32) {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let parts: Vec<&str> = stem.rsplitn(4, '_').collect();
    // [N?, HHMMSS, YYYYMMDD, stem] or [HHMMSS, YYYYMMDD, stem, ...]
    if parts.len() == 4 && parts[1].len() == 6 && parts[2].len() == 8 {
        (
            format!("{}{}", parts[2], parts[1]),
            parts[0].parse().unwrap_or(0),
        )
    } else {
        (format!("{}{}", parts[1], parts[0]), 0)
    }
}

#[test]
fn dotfiles_multi_extension_and_extensionless_names_are_versioned_right() {
    let env = Env::new();
    let files = [
        (".bashrc", ".bashrc", None),
        ("archive.tar.gz", "archive.tar", Some("gz")),
        ("Makefile", "Makefile", None),
    ];
    for (name, _, _) in files {
        env.write(name, "1");
    }
    env.once(&[]).code(0);
    for (name, _, _) in files {
        env.write(name, "22");
    }
    env.once(&[]).code(0);
    let names = env.dst_names("");
    for (name, stem, ext) in files {
        assert!(names.contains(&name.to_string()), "{names:?}");
        assert!(
            names.iter().any(|n| is_version(n, stem, ext)),
            "no version of {name} in {names:?}"
        );
    }
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn names_of_255_bytes_are_versioned_within_the_limit() {
    let env = Env::new();
    let name = format!("{}.txt", "n".repeat(251));
    let utf8 = format!("{}.md", "é".repeat(126));
    let a = env.write(&name, "1");
    let b = env.write(&utf8, "1");
    env.once(&[]).code(0);
    fs::write(&a, "22").expect("write");
    fs::write(&b, "22").expect("write");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 2, "{}", run.context());
    let names = env.dst_names("");
    assert_eq!(names.len(), 4, "{names:?}");
    for n in &names {
        assert!(n.len() <= 255, "{n}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("nnnn") && n.ends_with(".txt") && n.len() == 255 && n != &name)
    );
    // A rerun recognises the shortened names as versions: nothing to copy.
    let run = env.once(&[]);
    assert_eq!(run.summary("Successfully copied"), 0, "{}", run.context());
}

#[test]
fn a_source_file_named_like_a_version_is_its_own_file() {
    let env = Env::new();
    env.write("a.txt", "plain");
    env.write("a_20231124_153045.txt", "looks like a version");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 2);
    assert_eq!(
        env.dst_names(""),
        vec!["a.txt".to_string(), "a_20231124_153045.txt".to_string()]
    );
    assert_eq!(fs::read(env.dst.join("a.txt")).expect("read"), b"plain");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 0, "{}", run.context());
    assert_eq!(run.summary("Unchanged"), 2);
}

#[test]
fn a_fifo_is_skipped_without_blocking() {
    let env = Env::new();
    env.write("a.txt", "a");
    let fifo = env.src.join("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok);
    let mut child = env
        .cmd("once")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let done = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = child.kill();
        panic!("backup blocked on a FIFO");
    }
    let out = child.wait_with_output().expect("output");
    let run = common::Run::of(out, &env);
    run.code(0);
    run.stderr_has(&format!("Skipped: {} (fifo)", fifo.display()));
    assert_eq!(run.summary("Skipped"), 1);
    assert_eq!(run.summary("Successfully copied"), 1);
    assert!(!env.dst.join("pipe").exists());
}

#[test]
fn a_file_where_a_folder_now_is_moves_aside_into_its_own_family() {
    let env = Env::new();
    env.write("ok.txt", "fine");
    env.write("sub/inside.txt", "inside");
    fs::create_dir_all(&env.dst).expect("mkdir dst");
    fs::write(env.dst.join("sub"), "a file where a folder should be").expect("write");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(fs::read(env.dst.join("ok.txt")).expect("read"), b"fine");
    assert_eq!(
        fs::read(env.dst.join("sub/inside.txt")).expect("read"),
        b"inside"
    );
    // The file is kept as a version of `sub`, never overwritten, and its deletion recorded.
    let aside: Vec<String> = env
        .dst_names("")
        .into_iter()
        .filter(|n| n.starts_with("sub_"))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    let version = aside
        .iter()
        .find(|n| !n.ends_with("_deleted"))
        .expect("version");
    assert_eq!(
        fs::read(env.dst.join(version)).expect("read"),
        b"a file where a folder should be"
    );
}

#[test]
fn a_symlink_planted_where_a_folder_goes_is_not_followed() {
    let env = Env::new();
    let outside = env.root().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    env.write("sub/x.txt", "x");
    fs::create_dir_all(&env.dst).expect("mkdir dst");
    symlink(&outside, env.dst.join("sub")).expect("symlink");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(
        fs::read_dir(&outside).expect("read").count(),
        0,
        "wrote through the symlink"
    );
    // The link was moved aside into its own family (never followed), and the folder made.
    assert!(
        fs::symlink_metadata(env.dst.join("sub"))
            .expect("sub")
            .is_dir()
    );
    assert_eq!(fs::read(env.dst.join("sub/x.txt")).expect("x"), b"x");
    let aside: Vec<String> = fs::read_dir(&env.dst)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sub_"))
        .collect();
    assert_eq!(
        aside.len(),
        2,
        "the link as a version, and its deletion: {aside:?}"
    );
}

#[test]
fn an_unreadable_file_fails_alone() {
    let env = Env::new();
    if !common::can_drop_root() {
        return;
    }
    env.write("ok.txt", "fine");
    let secret = env.write("secret.txt", "no");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::create_dir(&env.dst).expect("mkdir");
    std::os::unix::fs::chown(&env.dst, Some(65534), Some(65534)).expect("chown");
    common::open_up(&env);
    let out = common::as_nobody("once", &env.src, &env.dst)
        .output()
        .expect("run");
    let run = common::Run::of(out, &env);
    run.code(1);
    run.stderr_has(&format!(
        "Failed: {}: cannot open: Permission denied",
        secret.display()
    ));
    assert_eq!(fs::read(env.dst.join("ok.txt")).expect("read"), b"fine");
    assert_eq!(env.dst_names(""), vec!["ok.txt".to_string()]);
    assert_eq!(run.summary("Failed copies"), 1);
    assert_eq!(run.summary("Successfully copied"), 1);
}

#[test]
fn control_characters_in_names_stay_on_one_line() {
    let env = Env::new();
    env.write("line\nbreak.txt", "x");
    env.write("esc\u{1b}[31m.txt", "y");
    let run = env.once(&[]);
    run.code(0);
    let copied = run.copied();
    assert_eq!(copied.len(), 2, "{}", run.context());
    assert!(copied.iter().any(|l| l.contains("line\\nbreak.txt -> ")));
    assert!(copied.iter().any(|l| l.contains("esc\\u{1b}[31m.txt")));
    assert!(env.dst.join("line\nbreak.txt").exists());
}

#[test]
fn checksum_compares_contents_not_times() {
    let env = Env::new();
    let a = env.write("a.txt", "same");
    env.once(&[]).code(0);
    set_mtime(&a, 1_000_000_000, 0);
    // Same bytes, another time: no new version; the newest copy takes the time.
    let run = env.once(&["--checksum"]);
    run.code(0);
    run.stdout_has(" (time)");
    assert_eq!(common::family(&env.dst, "a.txt").len(), 1);
    assert_eq!(env.once(&["--checksum"]).summary("Unchanged"), 1);
    // Same size and time, different bytes: only --checksum sees it.
    let d = env.dst.join("a.txt");
    fs::write(&a, "SAME").expect("write");
    let (s, n) = mtime_ns(&d);
    set_mtime(&a, s, n as u32);
    assert_eq!(env.once(&[]).summary("Successfully copied"), 0);
    let run = env.once(&["--checksum"]);
    assert_eq!(run.summary("Successfully copied"), 1, "{}", run.context());
}

#[test]
fn destination_inside_source_is_left_out() {
    let mut env = Env::new();
    env.write("a.txt", "a");
    env.dst = env.src.join("backup");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 1);
    assert!(!env.dst.join("backup").exists());
    let again = env.once(&[]);
    again.code(0);
    assert_eq!(
        again.summary("Successfully copied"),
        0,
        "{}",
        again.context()
    );
}

#[test]
fn leftover_temporary_files_are_removed_but_lookalike_sources_kept() {
    let env = Env::new();
    env.write("a.txt", "a");
    let lookalike = ".backup-tmp.0123456789ab.notes";
    env.write(lookalike, "a real file with an unlucky name");
    env.once(&[]).code(0);
    let stale = env.dst.join(".backup-tmp.aaaaaaaaaaaa.a.txt");
    fs::write(&stale, "partial").expect("write");
    // The probe's symlink, as a run killed while probing leaves it (found by the crash matrix).
    let link = env.dst.join(".backup-tmp.bbbbbbbbbbbb.probe-link");
    std::os::unix::fs::symlink(".backup-probe-nowhere", &link).expect("symlink");
    let run = env.once(&[]);
    run.code(0);
    assert!(!stale.exists(), "leftover kept\n{}", run.context());
    assert!(
        link.symlink_metadata().is_err(),
        "leftover symlink kept\n{}",
        run.context()
    );
    assert_eq!(
        fs::read(env.dst.join(lookalike)).expect("read"),
        b"a real file with an unlucky name"
    );
}

#[test]
fn two_runs_never_write_into_one_destination_at_once() {
    let env = Env::new();
    env.write("a.txt", "a");
    fs::create_dir(&env.dst).expect("mkdir");
    // Hold the destination's lock the way a running backup does.
    let f = fs::File::open(&env.dst).expect("open dst");
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let run = env.once(&[]);
    run.code(1);
    run.stderr_has("another backup is already writing into this destination");
    assert!(env.dst_names("").is_empty());
    drop(f);
    env.once(&[]).code(0);
}

#[test]
fn read_only_source_folders_are_mirrored_with_their_mode() {
    let env = Env::new();
    env.write("ro/a.txt", "a");
    fs::set_permissions(env.src.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
    env.once(&[]).code(0);
    let mode = fs::metadata(env.dst.join("ro"))
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o555);
    // A change inside it still lands on the next run (as root here; see README for others).
    fs::set_permissions(env.src.join("ro"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(env.src.join("ro/a.txt"), "changed").expect("write");
    fs::set_permissions(env.src.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
    let run = env.once(&[]);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 1);
}

#[test]
fn help_explains_the_naming_rule() {
    let out = std::process::Command::new(common::bin())
        .args(["once", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("STEM_YYYYMMDD_HHMMSS.EXT"), "{text}");
    assert!(text.contains("EXAMPLES"), "{text}");
}

#[test]
fn versions_keep_owner_and_mode_of_the_source() {
    let env = Env::new();
    let a = env.write("a.sh", "1");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&a, Some(1234), Some(5678)).expect("chown");
    env.once(&[]).code(0);
    fs::write(&a, "22").expect("write");
    env.once(&[]).code(0);
    for n in env.dst_names("") {
        let md = fs::metadata(env.dst.join(&n)).expect("stat");
        assert_eq!(md.mode() & 0o7777, 0o700, "{n}");
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "{n}");
    }
}

/// Runs `backup once SRC DST` as `nobody`, with DST owned by `nobody`.
fn once_as_nobody(env: &Env) -> common::Run {
    let out = common::as_nobody("once", &env.src, &env.dst)
        .output()
        .expect("run");
    common::Run::of(out, env)
}

#[test]
fn as_another_user_an_unreadable_folder_is_one_failure_every_run() {
    let env = Env::new();
    if !common::can_drop_root() {
        return;
    }
    env.write("ok.txt", "fine");
    env.write("locked/inside.txt", "hidden");
    fs::set_permissions(env.src.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::create_dir(&env.dst).expect("mkdir");
    std::os::unix::fs::chown(&env.dst, Some(65534), Some(65534)).expect("chown");
    common::open_up(&env);
    for _ in 0..2 {
        let run = once_as_nobody(&env);
        run.code(1);
        let failed: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("Failed: "))
            .collect();
        assert_eq!(failed.len(), 1, "{}", run.context());
        assert!(
            failed[0].contains("locked: cannot read: Permission denied"),
            "{}",
            run.context()
        );
        assert_eq!(run.summary("Failed copies"), 1);
        let mode = fs::metadata(env.dst.join("locked"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o000,
            "the mirrored folder keeps the source's mode"
        );
    }
}

#[test]
fn as_another_user_a_read_only_folder_still_takes_new_versions() {
    let env = Env::new();
    if !common::can_drop_root() {
        return;
    }
    let a = env.write("ro/a.txt", "one");
    fs::set_permissions(env.src.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
    fs::create_dir(&env.dst).expect("mkdir");
    std::os::unix::fs::chown(&env.dst, Some(65534), Some(65534)).expect("chown");
    common::open_up(&env);
    once_as_nobody(&env).code(0);
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&env.dst.join("ro")), 0o555);
    fs::write(&a, "two, longer").expect("write");
    let run = once_as_nobody(&env);
    run.code(0);
    assert_eq!(run.summary("Successfully copied"), 1, "{}", run.context());
    assert_eq!(common::family(&env.dst.join("ro"), "a.txt").len(), 2);
    assert_eq!(mode(&env.dst.join("ro")), 0o555, "the mode is put back");
}

#[test]
fn a_new_time_on_the_same_bytes_makes_no_new_version() {
    // git "freshens" an object by setting its time; `touch` does the same.
    let env = Env::new();
    let obj = env.write("objects/ab/cdef", "zlib bytes");
    env.once(&[]).code(0);
    let copy = env.dst.join("objects/ab/cdef");
    let inode = ino(&copy);
    set_mtime(&obj, 2_000_000_000, 5);
    let run = env.once(&[]);
    run.code(0);
    run.stdout_has(&format!(
        "Updated: {} -> {} (time)",
        obj.display(),
        copy.display()
    ));
    assert_eq!(
        common::family(&env.dst.join("objects/ab"), "cdef"),
        ["cdef"]
    );
    assert_eq!(ino(&copy), inode, "in place");
    assert_eq!(mtime_ns(&copy), (2_000_000_000, 5));
    assert_eq!(env.once(&[]).summary("Unchanged"), 1);
    // The same size with other bytes is a new version.
    fs::write(&obj, "zlib BYTES").expect("write");
    let run = env.once(&[]);
    assert_eq!(run.copied().len(), 1, "{}", run.context());
    assert_eq!(common::family(&env.dst.join("objects/ab"), "cdef").len(), 2);
}
