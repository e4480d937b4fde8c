//! Power cuts, proven on a filesystem that forgets what was not synced (`examples/lazyfs`): a
//! run is cut at every sync it makes and between them, and what a disk would hold afterwards is
//! checked. No file under a final name holds bytes its source never had; every copy the run
//! said it made (`Copied:`) is there whole; everything DST held before the run is there
//! unchanged; and the next pass exits 0, leaves no temporary file, and `verify --checksum`
//! agrees.
//!
//! A sample of the matrix runs here (every sync point, every 5th to 9th change point, and the
//! program killed with SIGKILL at as many others); with `BACKUP_CRASH_FULL=1` every change
//! point is cut and killed at too (see bench/README.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Node, bin, tree, wait_until};

/// Where a cut comes.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Never,
    /// Right after the N-th sync (an `fsync` of a file or folder) is answered.
    AtSync(u64),
    /// Right before the N-th change would be made.
    AtOp(u64),
    /// No power cut: the program is killed (SIGKILL) when it asks for the N-th change, and the
    /// system keeps everything.
    KillAtOp(u64),
}

/// The forgetful filesystem, mounted over `backing`.
struct Lazy {
    mnt: PathBuf,
    stats: PathBuf,
    child: Option<Child>,
}

/// What the filesystem served: how many syncs and changes, and whether the cut came.
#[derive(Debug)]
struct Served {
    syncs: u64,
    ops: u64,
    cut: bool,
    /// Whether the program was killed (`Cut::KillAtOp`).
    killed: bool,
}

fn lazyfs_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let deps = exe.parent().expect("deps");
    deps.parent().expect("target").join("examples/lazyfs")
}

/// Why the crash tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        return Some("no fusermount3 (Debian's fuse3)".into());
    }
    if !lazyfs_bin().exists() {
        return Some(format!("{} is not built", lazyfs_bin().display()));
    }
    None
}

impl Lazy {
    fn mount(backing: &Path, mnt: &Path, cut: Cut) -> Lazy {
        fs::create_dir_all(mnt).expect("mount point");
        let stats = backing.with_extension("stats");
        let _ = fs::remove_file(&stats);
        let mut c = Command::new(lazyfs_bin());
        c.arg(backing).arg(mnt).arg("--stats").arg(&stats);
        match cut {
            Cut::Never => {}
            Cut::AtSync(n) => {
                c.arg("--cut-at-sync").arg(n.to_string());
            }
            Cut::AtOp(n) => {
                c.arg("--cut-at-op").arg(n.to_string());
            }
            Cut::KillAtOp(n) => {
                c.arg("--kill-at-op").arg(n.to_string());
            }
        }
        let child = c.stdin(Stdio::null()).spawn().expect("start lazyfs");
        let mounted = wait_until(Duration::from_secs(10), || {
            fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
                m.lines()
                    .any(|l| l.split(' ').nth(1) == mnt.to_str() && l.starts_with("lazyfs "))
            })
        });
        assert!(mounted, "lazyfs did not mount on {}", mnt.display());
        Lazy {
            mnt: mnt.to_path_buf(),
            stats,
            child: Some(child),
        }
    }

    /// Unmounts; the backing folder then holds what a disk would.
    fn unmount(mut self) -> Served {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .output()
            .expect("fusermount3");
        assert!(out.status.success(), "fusermount3 -u: {out:?}");
        let mut child = self.child.take().expect("child");
        let exited = wait_until(Duration::from_secs(30), || {
            child.try_wait().ok().flatten().is_some()
        });
        assert!(exited, "lazyfs did not exit");
        let status = child.wait().expect("lazyfs");
        assert!(status.success(), "lazyfs: {status}");
        let text = fs::read_to_string(&self.stats).expect("stats");
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        Served {
            syncs: field("syncs ").parse().expect("syncs"),
            ops: field("ops ").parse().expect("ops"),
            cut: field("cut ") == "yes",
            killed: field("killed ") == "yes",
        }
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::fuse_unmount(&self.mnt);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `backup ARGS`, bounded: a run that hangs on a dead disk fails the test.
fn backup(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    backup_limited(None, args)
}

/// `backup ARGS` with at most `files` open files (`prlimit`), which makes its batches small.
fn backup_limited(files: Option<u32>, args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = match files {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("out"))
        .stderr(fs::File::create(&err).expect("err"))
        .spawn()
        .expect("run backup");
    let done = wait_until(Duration::from_secs(60), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !done {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    assert!(done, "backup {args:?} hung");
    (
        status.code(),
        fs::read_to_string(out).unwrap_or_default(),
        fs::read_to_string(err).unwrap_or_default(),
    )
}

/// One workload: SRC before the run (already copied into DST, durably), and SRC for the run.
struct Work {
    root: tempfile::TempDir,
    src: PathBuf,
    /// Every content a source file has had, with its length: a copy holding anything else is
    /// torn.
    contents: BTreeSet<Vec<u8>>,
}

impl Work {
    fn new() -> Work {
        let root = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("tempdir");
        let src = root.path().join("src");
        fs::create_dir(&src).expect("src");
        Work {
            root,
            src,
            contents: BTreeSet::new(),
        }
    }

    fn write(&mut self, rel: &str, data: &[u8]) {
        let p = self.src.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, data).expect("write");
        self.contents.insert(data.to_vec());
    }

    /// A first tree: files of several sizes in nested folders, an empty file, a symlink.
    fn mixed(&mut self) {
        self.write("a.txt", b"alpha\n");
        self.write("empty", b"");
        self.write("docs/report.txt", &bytes(10_000, 1));
        self.write("docs/deep/notes.md", b"notes\n");
        self.write("photos/p1.jpg", &bytes(200_000, 2));
        self.write("photos/p2.jpg", &bytes(70_000, 3));
        std::os::unix::fs::symlink("a.txt", self.src.join("link")).expect("symlink");
        // A sparse file: 1 MiB of hole, then 4 KiB of data.
        let path = self.src.join("disk.img");
        let f = fs::File::create(&path).expect("sparse");
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes(4096, 5), 1 << 20).expect("write");
        self.contents.insert(fs::read(&path).expect("read"));
    }

    /// Changes for an update pass: a change, a deletion, a moved folder, a mode change, a new
    /// file.
    fn update(&mut self) {
        self.write("a.txt", b"alpha, changed\n");
        fs::remove_file(self.src.join("docs/report.txt")).expect("rm");
        fs::rename(self.src.join("photos"), self.src.join("pictures")).expect("mv");
        fs::set_permissions(
            self.src.join("docs/deep/notes.md"),
            fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        self.write("new/fresh.bin", &bytes(90_000, 4));
    }
}

/// Deterministic bytes.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed)
        .collect()
}

/// The paths (relative to DST) that the run's `Copied:` lines name.
fn acknowledged(stdout: &str, dst: &Path) -> Vec<(PathBuf, PathBuf)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Copied: "))
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(s, d)| {
            let rel = Path::new(d).strip_prefix(dst).ok()?;
            Some((PathBuf::from(s), rel.to_path_buf()))
        })
        .collect()
}

fn is_temp(rel: &Path) -> bool {
    rel.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| s.starts_with(".backup-tmp."))
    })
}

/// Checks what a disk holds after a cut (`dst`, on the backing folder) against what the run
/// said and what DST held before it; then runs the next pass and `verify --checksum` there.
fn check_after_cut(
    work: &Work,
    before: &BTreeMap<PathBuf, Node>,
    dst: &Path,
    mounted_dst: &Path,
    stdout: &str,
    label: &str,
) {
    let after = tree(dst);
    // Nothing DST held is lost or changed (the newest copy's mode may follow SRC's, and a
    // folder's does).
    let bytes_of = |n: Option<&Node>| match n {
        Some(Node::File { len, data, .. }) => Some((Some((*len, data.clone())), None)),
        Some(Node::Symlink(t)) => Some((None, Some(t.clone()))),
        Some(Node::Dir { .. }) => Some((None, None)),
        _ => None,
    };
    for (rel, node) in before {
        assert_eq!(
            bytes_of(after.get(rel)),
            bytes_of(Some(node)),
            "{label}: {} changed or lost\n--- stdout\n{stdout}",
            rel.display()
        );
    }
    // No torn copy under a final name.
    for (rel, node) in &after {
        if let Node::File { data, .. } = node
            && !is_temp(rel)
            && !work.contents.contains(data)
        {
            let name = rel.to_string_lossy();
            assert!(
                data.is_empty() && name.contains("_deleted"),
                "{label}: {} holds {} bytes its source never had\n--- stdout\n{stdout}",
                rel.display(),
                data.len()
            );
        }
    }
    // Every copy said to be made is there, whole.
    for (src, rel) in acknowledged(stdout, mounted_dst) {
        let got = after.get(&rel);
        let want = if src.is_symlink() {
            Node::Symlink(fs::read_link(&src).expect("readlink"))
        } else {
            let data = fs::read(&src).expect("source");
            let len = data.len() as u64;
            match got {
                Some(Node::File { mode, .. }) => Node::File {
                    len,
                    data,
                    mode: *mode,
                },
                _ => Node::File { len, data, mode: 0 },
            }
        };
        assert!(
            got == Some(&want),
            "{label}: {} was acknowledged but is not there whole (there: {})\n--- stdout\n{stdout}",
            rel.display(),
            match got {
                Some(Node::File { len, .. }) => format!("a file of {len} bytes"),
                Some(other) => format!("{other:?}"),
                None => "nothing".into(),
            }
        );
    }
    // The next pass finishes the job.
    let (code, out, err) = backup(&[
        "once".as_ref(),
        "-q".as_ref(),
        work.src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(
        code,
        Some(0),
        "{label}: the next pass\n--- stdout\n{out}--- stderr\n{err}"
    );
    let left: Vec<PathBuf> = tree(dst).into_keys().filter(|r| is_temp(r)).collect();
    assert!(left.is_empty(), "{label}: temporary files left: {left:?}");
    let (code, out, err) = backup(&[
        "verify".as_ref(),
        "--checksum".as_ref(),
        work.src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(
        code,
        Some(0),
        "{label}: verify --checksum\n--- stdout\n{out}--- stderr\n{err}"
    );
}

/// Runs `backup once` over the forgetful filesystem with `cut`, starting from `start` (a
/// folder copied into the backing folder first), and checks what is left.
fn crash_once(work: &Work, start: &Path, cut: Cut, files: Option<u32>, label: &str) -> Served {
    let base = tempfile::tempdir_in(work.root.path()).expect("tempdir");
    let backing = base.path().join("disk");
    copy_tree(start, &backing);
    let before = tree(&backing.join("dst"));
    let mnt = base.path().join("mnt");
    let lazy = Lazy::mount(&backing, &mnt, cut);
    let mounted_dst = mnt.join("dst");
    let (_code, stdout, _stderr) = backup_limited(
        files,
        &[
            "once".as_ref(),
            work.src.as_os_str(),
            mounted_dst.as_os_str(),
        ],
    );
    let served = lazy.unmount();
    check_after_cut(
        work,
        &before,
        &backing.join("dst"),
        &mounted_dst,
        &stdout,
        label,
    );
    served
}

/// `cp -a`, so that each crash starts from the same disk.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "cp -a");
}

/// Every change point with `BACKUP_CRASH_FULL` set, else every `step`-th.
fn step_or_all(step: u64) -> u64 {
    if std::env::var_os("BACKUP_CRASH_FULL").is_some() {
        1
    } else {
        step
    }
}

/// Every sync point of a run, then change points between them (every `step`-th), with
/// `run` running the workload under each cut and checking what is left; with `kills`, the
/// program killed at as many other changes too. Says how many points were tried.
fn every_point(what: &str, step: u64, kills: bool, run: impl Fn(Cut, &str) -> Served) {
    let step = step_or_all(step);
    let clean = run(Cut::Never, &format!("{what}, no cut"));
    assert!(!clean.cut);
    // Workers interleave, so a run's syncs vary a little in number: a run with fewer than `n`
    // is not cut, and is checked all the same.
    for n in 1..=clean.syncs {
        run(Cut::AtSync(n), &format!("{what}, cut after sync {n}"));
    }
    for n in (1..=clean.ops).step_by(step as usize) {
        run(Cut::AtOp(n), &format!("{what}, cut before change {n}"));
    }
    // And the program killed instead, the machine running on.
    let mut killed = 0;
    if kills {
        for n in (step / 2 + 1..=clean.ops).step_by(step as usize) {
            let served = run(Cut::KillAtOp(n), &format!("{what}, killed at change {n}"));
            killed += u64::from(served.killed);
        }
        assert!(killed > 0, "{what}: no run was killed");
    }
    eprintln!(
        "{what}: {} sync points, {} of {} change points cut, killed at {killed}, all consistent",
        clean.syncs,
        clean.ops.div_ceil(step),
        clean.ops
    );
}

/// `every_point` for `backup once` over `start`.
fn matrix(work: &Work, start: &Path, what: &str, step: u64, files: Option<u32>) {
    every_point(what, step, true, |cut, label| {
        crash_once(work, start, cut, files, label)
    });
}

#[test]
fn a_first_copy_cut_anywhere_loses_nothing_it_acknowledged() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut work = Work::new();
    work.mixed();
    let start = work.root.path().join("start");
    fs::create_dir(&start).expect("start");
    matrix(&work, &start, "first copy", 7, None);
}

/// Small batches (a tight open-file limit): a batch's names are said once the next batch's
/// sync has made them durable, or the last batch's own.
#[test]
fn a_first_copy_in_small_batches_cut_anywhere_loses_nothing_it_acknowledged() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut work = Work::new();
    for i in 0..36u32 {
        work.write(
            &format!("d{}/f{i:02}.txt", i % 3),
            &bytes(100 + i as usize, i as u8),
        );
    }
    let start = work.root.path().join("start");
    fs::create_dir(&start).expect("start");
    // 40 open files: one worker, batches of 4 copies.
    matrix(&work, &start, "first copy, small batches", 9, Some(40));
}

#[test]
fn an_update_pass_cut_anywhere_keeps_every_older_version() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut work = Work::new();
    work.mixed();
    // DST as the first copy left it, durably.
    let start = work.root.path().join("start");
    fs::create_dir(&start).expect("start");
    let (code, out, err) = backup(&[
        "once".as_ref(),
        "-q".as_ref(),
        work.src.as_os_str(),
        start.join("dst").as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    common::next_second();
    work.update();
    matrix(&work, &start, "update pass", 5, None);
}

/// A restore cut anywhere: every file it said it restored is there whole, no file holds bytes
/// that no version had, and a restore again into a new folder gives the whole tree.
#[test]
fn a_restore_cut_anywhere_says_only_what_it_made_durable() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut work = Work::new();
    work.mixed();
    let dst = work.root.path().join("dst");
    let (code, out, err) = backup(&[
        "once".as_ref(),
        "-q".as_ref(),
        work.src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let restore_into = |target: &Path| {
        backup(&[
            "restore".as_ref(),
            dst.as_os_str(),
            ".".as_ref(),
            "--to".as_ref(),
            target.as_os_str(),
        ])
    };
    let run = |cut: Cut, label: &str| -> Served {
        let base = tempfile::tempdir_in(work.root.path()).expect("tempdir");
        let backing = base.path().join("disk");
        fs::create_dir(&backing).expect("disk");
        let mnt = base.path().join("mnt");
        let lazy = Lazy::mount(&backing, &mnt, cut);
        let (_code, stdout, _stderr) = restore_into(&mnt.join("restored"));
        let served = lazy.unmount();
        let after = tree(&backing.join("restored"));
        for (rel, node) in &after {
            if let Node::File { data, .. } = node {
                assert!(
                    is_temp(rel) || work.contents.contains(data),
                    "{label}: {} holds bytes no version had\n{stdout}",
                    rel.display()
                );
            }
        }
        for line in stdout.lines().filter_map(|l| l.strip_prefix("Restored: ")) {
            let Some((_, to)) = line.split_once(" -> ") else {
                continue;
            };
            let rel = Path::new(to)
                .strip_prefix(mnt.join("restored"))
                .expect("under the target");
            let src = work.src.join(rel);
            let (want, got) = if src.is_symlink() {
                let want = fs::read_link(&src)
                    .ok()
                    .map(|t| t.into_os_string().into_vec());
                let got = match after.get(rel) {
                    Some(Node::Symlink(t)) => Some(t.clone().into_os_string().into_vec()),
                    _ => None,
                };
                (want, got)
            } else {
                let got = match after.get(rel) {
                    Some(Node::File { data, .. }) => Some(data.clone()),
                    _ => None,
                };
                (fs::read(&src).ok(), got)
            };
            assert!(
                got.is_some() && got == want,
                "{label}: {} was said restored but is not there whole\n{stdout}",
                rel.display()
            );
        }
        served
    };
    every_point("restore", 5, false, run);
    // And the backup is whole: a restore on a disk that works gives the tree back.
    let again = work.root.path().join("again");
    let (code, out, err) = restore_into(&again);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        fs::read(again.join("photos/p1.jpg")).expect("restored") == bytes(200_000, 2),
        "restored whole"
    );
}

/// `watch` copying a burst of new files is cut at a moment chosen by how many copies it has
/// said: after the cut, every file it said it copied is there whole, nothing is torn, and a pass
/// on the disk as it was left catches up.
#[test]
fn a_watch_cut_in_a_burst_of_new_files_keeps_what_it_said() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    for said in [1, 40, 150] {
        let mut work = Work::new();
        work.mixed();
        let mut live = LiveWatch::start(&work, &["--debounce", "50ms"]);
        // 2,000 new files in the whole matrix, 200 in CI.
        let burst = if step_or_all(2) == 1 { 2000 } else { 200 };
        for i in 0..burst {
            work.write(
                &format!("burst/b{:02}/f{i:04}.dat", i % 10),
                &bytes(500 + (i % 200) as usize * 37, i as u8),
            );
        }
        let stdout = live.cut_once_said(said, "");
        check_after_cut(
            &work,
            &BTreeMap::new(),
            &live.backing.join("dst"),
            &live.mounted_dst,
            &stdout,
            &format!("watch, cut after {said} copies said"),
        );
    }
}

/// `backup watch SRC MNT/dst` over the forgetful filesystem, its output in files.
struct LiveWatch {
    _base: tempfile::TempDir,
    backing: PathBuf,
    mounted_dst: PathBuf,
    lazy: Option<Lazy>,
    watch: Child,
    out: PathBuf,
}

impl LiveWatch {
    fn start(work: &Work, extra: &[&str]) -> LiveWatch {
        let base = tempfile::tempdir_in(work.root.path()).expect("tempdir");
        let backing = base.path().join("disk");
        fs::create_dir(&backing).expect("disk");
        let mnt = base.path().join("mnt");
        let lazy = Lazy::mount(&backing, &mnt, Cut::Never);
        let mounted_dst = mnt.join("dst");
        let (out, err) = (base.path().join("out"), base.path().join("err"));
        let watch = Command::new(bin())
            .arg("watch")
            .args(extra)
            .arg(&work.src)
            .arg(&mounted_dst)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("out"))
            .stderr(fs::File::create(&err).expect("err"))
            .spawn()
            .expect("start watch");
        let started = wait_until(Duration::from_secs(30), || {
            fs::read_to_string(&err).is_ok_and(|e| e.contains("Watching "))
        });
        assert!(
            started,
            "watch did not start: {:?}",
            fs::read_to_string(&err)
        );
        LiveWatch {
            _base: base,
            backing,
            mounted_dst,
            lazy: Some(lazy),
            watch,
            out,
        }
    }

    /// Once `watch` has said `said` copies of files whose names contain `like`, cuts the power
    /// and lets the process die with the machine; returns what it said.
    fn cut_once_said(&mut self, said: usize, like: &str) -> String {
        let copied = || {
            fs::read_to_string(&self.out)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("Copied: ") && l.contains(like))
                .count()
        };
        let reached = wait_until(Duration::from_secs(60), || copied() >= said);
        assert!(reached, "watch said {} copies", copied());
        let lazy = self.lazy.take().expect("mounted");
        let pid = lazy.child.as_ref().expect("lazyfs").id();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).expect("pid"),
            rustix::process::Signal::USR1,
        )
        .expect("cut");
        // The cut comes at the filesystem's next request: wait for one to fail.
        let failed = wait_until(Duration::from_secs(10), || {
            fs::metadata(&self.mounted_dst).is_err()
        });
        assert!(failed, "the cut did not come");
        let _ = self.watch.kill();
        let _ = self.watch.wait();
        let stdout = fs::read_to_string(&self.out).unwrap_or_default();
        assert!(lazy.unmount().cut);
        stdout
    }
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        let _ = self.watch.kill();
        let _ = self.watch.wait();
    }
}

/// A live SQLite database under `watch`, its writer committing all along, cut once a few of its
/// versions have been said: every version of it in DST is a whole database (integrity check
/// `ok`, only committed rows), every version said is there, and a pass after the writer stops
/// catches up.
#[test]
fn a_watch_cut_while_a_database_is_written_keeps_whole_versions() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let work = Work::new();
    let db_path = work.src.join("app.db");
    let db = rusqlite::Connection::open(&db_path).expect("open");
    db.pragma_update(None, "journal_mode", "wal").expect("wal");
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
        .expect("schema");
    drop(db);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (Arc::clone(&stop), db_path.clone());
        std::thread::spawn(move || {
            let db = rusqlite::Connection::open(&path).expect("open");
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                db.execute_batch("BEGIN").expect("begin");
                for i in 0..50 {
                    db.execute("INSERT INTO t(v) VALUES (?1)", [format!("{round} {i}")])
                        .expect("insert");
                }
                db.execute_batch("COMMIT").expect("commit");
                round += 1;
                common::hold_for(Duration::from_millis(20));
            }
        })
    };
    let mut live = LiveWatch::start(&work, &["--debounce", "100ms", "--max-delay", "300ms"]);
    let (backing, mounted_dst) = (live.backing.clone(), live.mounted_dst.clone());
    let stdout = live.cut_once_said(3, "app");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");

    let dst = backing.join("dst");
    for (_, rel) in acknowledged(&stdout, &mounted_dst) {
        assert!(
            dst.join(&rel).is_file(),
            "{} was said but is not there\n{stdout}",
            rel.display()
        );
    }
    let mut counts = Vec::new();
    for (rel, node) in tree(&dst) {
        let name = rel.to_string_lossy().into_owned();
        if !matches!(node, Node::File { .. }) || is_temp(&rel) || !name.starts_with("app") {
            continue;
        }
        // Checked on a copy elsewhere: SQLite would write beside the one in DST.
        let scratch = tempfile::tempdir().expect("tempdir");
        let copy = scratch.path().join("check.db");
        fs::copy(dst.join(&rel), &copy).expect("copy out");
        let db = rusqlite::Connection::open(&copy).expect("open");
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok", "{name} is not a whole database\n{stdout}");
        let rows: i64 = db
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows % 50, 0, "{name} holds a transaction in part");
        counts.push(rows);
    }
    assert!(counts.len() >= 3, "{counts:?}\n{stdout}");
    let (code, out, err) = backup(&[
        "once".as_ref(),
        "-q".as_ref(),
        work.src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "the next pass\n{out}{err}");
    let (code, out, err) = backup(&[
        "verify".as_ref(),
        "--checksum".as_ref(),
        work.src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "verify --checksum\n{out}{err}");
}

/// `prune` cut anywhere: the newest copy of every file is still there and current (`verify
/// --checksum`), nothing is torn, and `prune` again finishes the job.
#[test]
fn a_prune_cut_anywhere_never_takes_a_newest_copy() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut work = Work::new();
    work.mixed();
    let start = work.root.path().join("start");
    fs::create_dir(&start).expect("start");
    let once = |work: &Work| {
        let (code, out, err) = backup(&[
            "once".as_ref(),
            "-q".as_ref(),
            work.src.as_os_str(),
            start.join("dst").as_os_str(),
        ]);
        assert_eq!(code, Some(0), "{out}{err}");
    };
    once(&work);
    common::next_second();
    work.update();
    once(&work);
    let prune = |dst: &Path| {
        backup(&[
            "prune".as_ref(),
            dst.as_os_str(),
            "--keep-last".as_ref(),
            "1".as_ref(),
        ])
    };
    let run = |cut: Cut, label: &str| -> Served {
        let base = tempfile::tempdir_in(work.root.path()).expect("tempdir");
        let backing = base.path().join("disk");
        copy_tree(&start, &backing);
        let mnt = base.path().join("mnt");
        let lazy = Lazy::mount(&backing, &mnt, cut);
        let (_code, stdout, _stderr) = prune(&mnt.join("dst"));
        let served = lazy.unmount();
        let dst = backing.join("dst");
        for (rel, node) in tree(&dst) {
            if let Node::File { data, .. } = node {
                let name = rel.to_string_lossy();
                assert!(
                    is_temp(&rel) || work.contents.contains(&data) || name.contains("_deleted"),
                    "{label}: {} holds bytes no version had\n{stdout}",
                    rel.display()
                );
            }
        }
        let (code, out, err) = backup(&[
            "verify".as_ref(),
            "--checksum".as_ref(),
            work.src.as_os_str(),
            dst.as_os_str(),
        ]);
        assert_eq!(
            code,
            Some(0),
            "{label}: verify\n{stdout}--- verify\n{out}{err}"
        );
        let (code, out, err) = prune(&dst);
        assert_eq!(code, Some(0), "{label}: prune again\n{out}{err}");
        served
    };
    every_point("prune", 2, false, run);
}
