//! Faults a backup must survive with nothing lost: a full destination, a killed process.
//! Needs root for `mount`; each test says SKIPPED and returns where it cannot set up.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::{Env, Mount, Run, mount_tmpfs, wait_until};

fn temp_files(root: &Path) -> Vec<String> {
    common::tree(root)
        .keys()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".backup-tmp."))
        .collect()
}

#[test]
fn a_full_destination_is_one_error_and_leaves_nothing_behind() {
    let env = Env::new();
    let mnt = env.root().join("small");
    if !mount_tmpfs(&mnt, "size=1m") {
        return;
    }
    let _unmount = Mount(mnt.clone());
    for i in 0..40 {
        env.write(format!("small{i:02}.txt"), vec![b's'; 4096]);
    }
    // Each fits; together they do not (a file larger than all the space is another case: it
    // fails alone, see tests/away.rs).
    for i in 0..4 {
        env.write(format!("part{i}.bin"), vec![b'p'; 300 << 10]);
    }
    let dst = mnt.join("dst");
    let run_once = || {
        let out = Command::new(common::bin())
            .args(["once", "--jobs", "1"])
            .arg(&env.src)
            .arg(&dst)
            .output()
            .expect("run");
        Run::of(out, &env)
    };
    let r = run_once();
    r.code(1);
    // One line for the condition, none per file.
    r.stderr_has(&format!("error: destination {} is full (", dst.display()));
    r.stderr_has(" files not copied)");
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("Failed: ")),
        "{}",
        r.context()
    );
    assert_eq!(
        r.summary("Successfully copied") + r.summary("Failed copies"),
        44,
        "{}",
        r.context()
    );
    assert!(r.summary("Failed copies") > 0, "{}", r.context());
    assert!(temp_files(&dst).is_empty(), "leftovers\n{}", r.context());

    let ok = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&mnt)
        .status()
        .expect("remount")
        .success();
    assert!(ok, "remount failed");
    let r = run_once();
    r.code(0);
    assert_eq!(r.summary("Failed copies"), 0);
    for i in 0..4 {
        let part = fs::read(dst.join(format!("part{i}.bin"))).expect("part");
        assert_eq!(part.len(), 300 << 10);
    }
    for i in 0..40 {
        assert_eq!(
            fs::read(dst.join(format!("small{i:02}.txt")))
                .expect("small")
                .len(),
            4096
        );
    }
}

#[test]
fn a_copy_killed_midway_leaves_no_partial_file_and_the_rerun_completes() {
    let env = Env::on_tmpfs();
    env.write("small.txt", "small");
    let size: u64 = 512 << 20;
    env.filled("big.bin", size);

    let mut child = env
        .cmd("once")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let caught = wait_until(Duration::from_secs(30), || {
        env.copying() || matches!(child.try_wait(), Ok(Some(_)))
    });
    let still_running = matches!(child.try_wait(), Ok(None));
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        caught && still_running,
        "the copy finished before it could be killed; test inconclusive\n{}",
        env.listing()
    );

    // Under a final name there is either nothing or complete data, never a part.
    for (rel, node) in common::tree(&env.dst) {
        if let common::Node::File { len, .. } = node {
            let name = rel.to_string_lossy();
            if !name.starts_with(".backup-tmp.") && name.starts_with("big") {
                assert_eq!(len, size, "partial data under {name}");
            }
        }
    }

    let r = env.once(&[]);
    r.code(0);
    assert!(
        temp_files(&env.dst).is_empty(),
        "leftovers after rerun\n{}",
        r.context()
    );
    assert_eq!(
        fs::metadata(env.dst.join("big.bin")).expect("copied").len(),
        size
    );
    assert_eq!(fs::read(env.dst.join("small.txt")).expect("read"), b"small");
}

/// Whether strace can run here; prints why not when it cannot.
fn have_strace() -> bool {
    let ok = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: strace is not installed or cannot trace here");
    }
    ok
}

/// `strace <strace_args> backup once SRC DST <extra>`.
fn traced_once(env: &Env, strace_args: &[&str], extra: &[&str]) -> Run {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "signal=none"])
        .args(strace_args)
        .arg(common::bin())
        .arg("once")
        .args(extra)
        .arg(&env.src)
        .arg(&env.dst)
        .output()
        .expect("run strace");
    Run::of(out, env)
}

/// Every name in DST that is not a folder.
fn dst_files(env: &Env) -> Vec<String> {
    common::tree(&env.dst)
        .into_iter()
        .filter(|(_, n)| !matches!(n, common::Node::Dir { .. }))
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_io_error_reading_one_file_fails_that_file_alone() {
    let env = Env::new();
    if !have_strace() {
        return;
    }
    let bad = env.write("bad.bin", vec![7u8; 300_000]);
    env.write("good1.txt", "g1");
    env.write("sub/good2.txt", "g2");
    let bad_s = bad.to_string_lossy().into_owned();
    let r = traced_once(
        &env,
        &[
            "-o",
            "/dev/null",
            "-P",
            &bad_s,
            "-e",
            "trace=copy_file_range,read",
            "-e",
            "inject=copy_file_range,read:error=EIO",
        ],
        &[],
    );
    r.code(1);
    r.stderr_has(&format!(
        "Failed: {}: cannot copy: Input/output error",
        bad.display()
    ));
    assert_eq!(
        dst_files(&env),
        vec!["good1.txt".to_string(), "sub/good2.txt".to_string()]
    );
    assert_eq!(r.summary("Successfully copied"), 2);
    assert_eq!(r.summary("Failed copies"), 1);
}

#[test]
fn a_failed_sync_publishes_nothing_and_leaves_no_temporary_data() {
    let env = Env::new();
    if !have_strace() {
        return;
    }
    for name in ["a.txt", "b.txt", "sub/c.txt"] {
        env.write(name, name);
    }
    // Made beforehand: a destination that a run creates has its parent synced first, which
    // would fail the run before any copy.
    std::fs::create_dir(&env.dst).expect("mkdir dst");
    for (label, extra) in [
        ("batch", &[][..]),
        ("one file at a time", &["--jobs", "1"][..]),
    ] {
        let r = traced_once(
            &env,
            &[
                "-o",
                "/dev/null",
                "-e",
                "trace=fsync,fdatasync,syncfs",
                "-e",
                "inject=fsync,fdatasync,syncfs:error=EIO",
            ],
            extra,
        );
        r.code(1);
        r.stderr_has("cannot sync: Input/output error");
        assert!(
            dst_files(&env).is_empty(),
            "{label}: published without a sync\n{}",
            r.context()
        );
        assert_eq!(r.summary("Successfully copied"), 0, "{label}");
    }
    // Nothing was lost either: a run with a working disk copies all of it.
    let r = env.once(&[]);
    r.code(0);
    assert_eq!(r.summary("Successfully copied"), 3);
}

/// A writer that rewrites the whole of `path` with one byte value per round, pausing between
/// rounds or not, until `stop`; counts its rounds in `rounds`.
fn rewriter(
    path: std::path::PathBuf,
    size: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU32>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::{Seek, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        while !stop.load(Ordering::Relaxed) {
            let round = rounds.fetch_add(1, Ordering::Relaxed) + 1;
            let buf = vec![(round % 250) as u8 + 1; 1 << 20];
            f.seek(std::io::SeekFrom::Start(0)).expect("seek");
            for _ in 0..size >> 20 {
                f.write_all(&buf).expect("write");
            }
            if !pause.is_zero() {
                common::hold_for(pause);
            }
        }
    })
}

fn uniform(data: &[u8]) -> bool {
    data.first().is_none_or(|b| data.iter().all(|x| x == b))
}

#[test]
fn a_file_rewritten_while_copied_is_published_only_as_a_real_state() {
    let env = Env::new();
    let size = 32 << 20;
    let f = env.write("big.bin", vec![1u8; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU32::new(0));
    let writer = rewriter(
        f.clone(),
        size,
        Duration::from_millis(150),
        stop.clone(),
        rounds.clone(),
    );
    let mut published = 0;
    // Back up again and again while the writer goes through at least 20 rewrites, and until a
    // copy got through a pause: on a loaded machine a copy of 32 MiB can take longer than one
    // pause, and the test must not depend on the machine's speed (bounded all the same).
    let until = std::time::Instant::now() + Duration::from_secs(90);
    while rounds.load(Ordering::Relaxed) < 20
        || (published == 0 && std::time::Instant::now() < until)
    {
        let r = env.once(&[]);
        assert!(matches!(r.code, Some(0 | 1)), "{}", r.context());
        published += r.summary("Successfully copied");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    for name in dst_files(&env) {
        let data = fs::read(env.dst.join(&name)).expect("read");
        assert_eq!(data.len(), size, "{name}");
        assert!(uniform(&data), "{name} mixes two states of the file");
    }
    assert!(published > 0, "no copy got through the pauses");
}

#[test]
fn a_file_that_never_stops_changing_is_reported_and_not_published() {
    let env = Env::new();
    let size = 64 << 20;
    let f = env.write("hot.bin", vec![1u8; size]);
    env.write("calm.txt", "calm");
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU32::new(0));
    let writer = rewriter(
        f.clone(),
        size,
        Duration::ZERO,
        stop.clone(),
        rounds.clone(),
    );
    wait_until(Duration::from_secs(10), || {
        rounds.load(Ordering::Relaxed) > 0
    });
    let r = env.once(&[]);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    r.code(1);
    r.stderr_has(&format!(
        "Failed: {}: changed while being read, 4 times in a row; nothing was published",
        f.display()
    ));
    assert_eq!(dst_files(&env), vec!["calm.txt".to_string()]);
}

#[test]
fn half_the_tree_deleted_during_the_walk_is_no_failure() {
    let env = Env::new();
    if !have_strace() {
        return;
    }
    for d in 0..100 {
        for f in 0..50 {
            env.write(format!("d{d:03}/f{f:02}.txt"), format!("{d}/{f}"));
        }
    }
    // Slow every directory listing, so that the deletion lands mid-walk.
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=getdents64"])
        .args(["-e", "inject=getdents64:delay_enter=4000"])
        .arg(common::bin())
        .arg("once")
        .arg(&env.src)
        .arg(&env.dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = wait_until(Duration::from_secs(30), || {
        env.dst.join("d000").exists() || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(started);
    for d in (1..100).step_by(2) {
        fs::remove_dir_all(env.src.join(format!("d{d:03}"))).expect("rm -r");
    }
    let still_walking = matches!(child.try_wait(), Ok(None));
    let r = Run::of(child.wait_with_output().expect("wait"), &env);
    assert!(
        still_walking,
        "the walk ended before the deletion\n{}",
        r.context()
    );
    r.code(0);
    assert_eq!(r.summary("Failed copies"), 0);
    for d in (0..100).step_by(2) {
        for f in 0..50 {
            let p = env.dst.join(format!("d{d:03}/f{f:02}.txt"));
            assert_eq!(
                fs::read(&p).ok(),
                Some(format!("{d}/{f}").into_bytes()),
                "{}",
                p.display()
            );
        }
    }
}

#[test]
fn a_tight_open_file_limit_still_mirrors_every_file() {
    // tmpfs: 40,000 files are removed quickly afterwards.
    let env = Env::on_tmpfs();
    for d in 0..200 {
        for f in 0..100 {
            env.write(format!("a{}/d{d:03}/f{f:02}", d % 7), format!("{d}/{f}"));
        }
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 32 && exec \"$0\" once \"$1\" \"$2\"")
        .arg(common::bin())
        .arg(&env.src)
        .arg(&env.dst)
        .output()
        .expect("run");
    let r = Run::of(out, &env);
    r.code(0);
    assert_eq!(r.summary("Successfully copied"), 20_000);
    assert_eq!(common::tree(&env.src), common::tree(&env.dst));
}

#[test]
fn long_paths_odd_names_and_255_byte_raw_names_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    // 20 levels of 240-byte names: past PATH_MAX (4096) from level 17 on. Built relative to
    // open folders, since the full path is too long for the OS to take.
    let level = "L".repeat(240);
    let mut dir = rustix::fs::open(
        &env.src,
        rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .expect("open src");
    let mut depth_of_file = Vec::new();
    for depth in 1..=20 {
        rustix::fs::mkdirat(&dir, level.as_str(), rustix::fs::Mode::from_raw_mode(0o755))
            .expect("mkdir");
        dir = rustix::fs::openat(
            &dir,
            level.as_str(),
            rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .expect("open level");
        if depth % 5 == 0 {
            let fd = rustix::fs::openat(
                &dir,
                "file.txt",
                rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::from_raw_mode(0o644),
            )
            .expect("create");
            rustix::io::write(&fd, b"deep").expect("write");
            depth_of_file.push(depth);
        }
    }
    env.write("two\nlines.txt", "newline");
    let mut raw = vec![0xffu8; 251];
    raw.extend_from_slice(b".bin");
    fs::write(env.src.join(std::ffi::OsStr::from_bytes(&raw)), "raw").expect("write raw");

    let r = env.once(&[]);
    assert!(matches!(r.code, Some(0 | 1)), "crashed\n{}", r.context());
    // One entry per line: every stderr line starts with a known word.
    for line in r.stderr.lines() {
        assert!(
            [
                "Failed: ",
                "Skipped: ",
                "Vanished: ",
                "Created destination "
            ]
            .iter()
            .any(|w| line.starts_with(w)),
            "stray line {line:?}"
        );
    }
    assert!(r.stdout.contains("two\\nlines.txt"), "{}", r.context());
    assert!(env.dst.join(std::ffi::OsStr::from_bytes(&raw)).exists());
    // Depths 5, 10 and 15 fit within PATH_MAX; 20 is reported with the OS's reason.
    let deep_reported = r.stderr.contains("File name too long");
    let copied = r
        .copied()
        .iter()
        .filter(|l| l.ends_with("/file.txt"))
        .count();
    assert!(copied >= 3, "{}", r.context());
    assert!(copied == 4 || deep_reported, "{}", r.context());

    // A new version of the 255-byte raw name is cut to fit and recognised afterwards.
    fs::write(
        env.src.join(std::ffi::OsStr::from_bytes(&raw)),
        "raw, changed",
    )
    .expect("write");
    let r = env.once(&[]);
    assert_eq!(r.summary("Successfully copied"), 1, "{}", r.context());
    let r = env.once(&[]);
    assert_eq!(r.summary("Successfully copied"), 0, "{}", r.context());
}

#[test]
fn a_copy_is_written_synced_published_without_replacing_then_its_folder_synced() {
    let env = Env::new();
    if !have_strace() {
        return;
    }
    env.write("one.txt", "the one file");
    let trace = env.root().join("trace.txt");
    let trace_s = trace.to_string_lossy().into_owned();
    let r = traced_once(
        &env,
        &[
            "-s",
            "4096",
            "-o",
            &trace_s,
            "-e",
            "trace=openat,copy_file_range,write,pwrite64,fsync,fdatasync,syncfs,rename,renameat,renameat2,linkat",
        ],
        &[],
    );
    r.code(0);
    let text = fs::read_to_string(&trace).expect("trace");
    let lines: Vec<&str> = text.lines().collect();
    let find = |from: usize, pred: &dyn Fn(&str) -> bool| -> Option<usize> {
        (from..lines.len()).find(|&i| pred(lines[i]))
    };
    let fd_of = |line: &str| {
        line.rsplit("= ")
            .next()
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    // The copy's own file: unnamed (`O_TMPFILE`) or under a temporary name; the last one
    // opened, after the destination probe's.
    let created = (0..lines.len())
        .rev()
        .find(|&i| {
            let l = lines[i];
            (l.contains(".backup-tmp.") && l.contains(".one.txt\"") && l.contains("O_CREAT|O_EXCL"))
                || (l.contains("O_TMPFILE") && !l.contains("= -1"))
        })
        .expect("temporary file created");
    let temp_fd = fd_of(lines[created]).expect("temp fd");
    let data = find(created, &|l| {
        (l.contains("copy_file_range(") && l.contains(&format!(", {temp_fd}, ")))
            || l.contains(&format!("write({temp_fd}, "))
    })
    .expect("data written to the temporary file");
    let synced = find(data, &|l| l.contains("fsync(") || l.contains("syncfs(")).expect("synced");
    let published = find(synced, &|l| {
        (l.contains("renameat2(") && l.contains("\"one.txt\"") && l.contains("RENAME_NOREPLACE"))
            || (l.contains("linkat(") && l.contains("\"one.txt\""))
    })
    .expect("published with a no-replace call after the sync");
    let dir_synced = find(published, &|l| {
        l.contains("fsync(") || l.contains("syncfs(")
    })
    .expect("folder synced after publishing");
    let summary = find(0, &|l| {
        l.contains("write(1,") && l.contains("Backup Summary")
    })
    .expect("summary written");
    assert!(
        dir_synced < summary,
        "summary printed before the new name was durable"
    );
    for l in &lines {
        assert!(
            !(l.contains(" rename(") || l.contains(" renameat(") || l.starts_with("rename(")),
            "plain rename: {l}"
        );
        assert!(
            !l.contains("renameat2(") || l.contains("RENAME_NOREPLACE"),
            "rename that may replace: {l}"
        );
    }
}

/// Where a batch's data is made durable with one `syncfs` (ext4, XFS, Btrfs: what the crash
/// tests' FUSE filesystem cannot show, since the kernel keeps `syncfs` from FUSE drivers), a
/// copy is still said only after a sync that came after its name was given. The order of the
/// calls, traced over batches of 1,024 copies: every `Copied:` line is written after a
/// `syncfs` or `fsync` that completed after its file's `renameat2` or `linkat`.
#[test]
fn a_copy_is_said_only_after_a_sync_that_follows_its_name() {
    let env = Env::new();
    if !have_strace() {
        return;
    }
    for i in 0..3000 {
        env.write(format!("d{}/f{i}.txt", i % 3), format!("{i}"));
    }
    let trace = env.root().join("trace");
    let r = traced_once(
        &env,
        &[
            "-s",
            "65536",
            "-o",
            trace.to_str().expect("utf-8"),
            "-e",
            "trace=renameat2,linkat,syncfs,fsync,write",
        ],
        &[],
    );
    r.code(0);
    let text = std::fs::read_to_string(&trace).expect("trace");
    // Calls by where they completed; a call split by another thread's completes where it
    // resumes.
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let (mut published, mut syncs, mut said) = (
        std::collections::HashMap::new(),
        Vec::new(),
        Vec::<(usize, String)>::new(),
    );
    for (at, line) in text.lines().enumerate() {
        // `PID  call(…)`: strace pads the PID, so the spaces after it vary.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let call = if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            if start.starts_with("write(1,") {
                said.push((at, start.to_string()));
            }
            pending.insert(pid.to_string(), start.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let start = pending.remove(pid).unwrap_or_default();
            let end = rest.split_once("resumed>").map_or("", |(_, e)| e);
            format!("{start}{end}")
        } else {
            if rest.starts_with("write(1,") {
                said.push((at, rest.to_string()));
            }
            rest.to_string()
        };
        if !call.ends_with("= 0") {
            continue;
        }
        if call.starts_with("syncfs(") || call.starts_with("fsync(") {
            syncs.push(at);
        } else if call.starts_with("renameat2(") || call.starts_with("linkat(") {
            // The new name: the last quoted string of the call.
            let quoted: Vec<&str> = call.split('"').collect();
            if quoted.len() >= 4 {
                published.insert(quoted[quoted.len() - 2].to_string(), at);
            }
        }
    }
    let mut checked = 0;
    for (at, write) in &said {
        for copied in write.split("Copied: ").skip(1) {
            let Some(name) = copied
                .split(" -> ")
                .nth(1)
                .and_then(|to| to.split("\\n").next())
                .and_then(|to| to.rsplit('/').next())
            else {
                continue;
            };
            let Some(&named) = published.get(name) else {
                continue;
            };
            assert!(
                syncs.iter().any(|s| named < *s && s < at),
                "{name}: named at trace line {named}, said at line {at}, with no sync between"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3000, "every copy said was checked");
}
