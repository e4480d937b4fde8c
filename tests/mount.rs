//! `backup mount`: DST as a read-only filesystem of its past, mounted for real (`/dev/fuse`,
//! Debian's fuse3). What it shows at a time is what `restore --at` writes for that time.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Env, bin, wait_until};

/// Why mounting cannot be tried here, if it cannot.
fn unavailable() -> Option<&'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse");
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        return Some("no fusermount3 (Debian's fuse3)");
    }
    None
}

fn mounted(at: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(1) == at.to_str() && l.starts_with("backup "))
    })
}

/// `backup mount DST MOUNTPOINT EXTRA…`, running until dropped (or unmounted).
struct Mount {
    at: PathBuf,
    child: Child,
}

impl Mount {
    fn start(dst: &Path, at: &Path, extra: &[&str]) -> Mount {
        fs::create_dir_all(at).expect("mount point");
        let child = Command::new(bin())
            .arg("mount")
            .arg(dst)
            .arg(at)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("backup mount");
        assert!(
            wait_until(Duration::from_secs(10), || mounted(at)),
            "not mounted at {}",
            at.display()
        );
        Mount {
            at: at.to_path_buf(),
            child,
        }
    }

    /// Unmounts from outside, as a user would; the command then exits 0.
    fn unmount(mut self) {
        let ok = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.at)
            .status()
            .expect("fusermount3")
            .success();
        assert!(ok, "fusermount3 -u");
        let exited = wait_until(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        assert!(exited, "backup mount did not exit");
        assert_eq!(self.child.wait().expect("wait").code(), Some(0));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if mounted(&self.at) {
            common::fuse_unmount(&self.at);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files under `root` with their bytes, permission bits and modification time; folders too.
fn files(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.expect("walk");
        let m = e.path().symlink_metadata().expect("lstat");
        let rel = e.path().strip_prefix(root).expect("under").to_path_buf();
        let data = if m.is_file() {
            fs::read(e.path()).expect("read")
        } else {
            b"(folder)".to_vec()
        };
        let times = if m.is_file() {
            (m.mtime(), m.mtime_nsec())
        } else {
            (0, 0)
        };
        out.insert(rel, (data, m.mode() & 0o7777, times.0, times.1));
    }
    out
}

fn restored(env: &Env, at: &str, to: &str) -> PathBuf {
    let target = env.root().join(to);
    common::restore(env, ".", &target, at).code(0);
    target
}

#[test]
fn the_past_is_browsable_as_restore_would_write_it() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let env = Env::new();
    let (t1, t2) = common::two_passes(&env);
    let src_at_t1 = files(&env.root().join(common::SRC_AT_FIRST));
    let src_at_t2 = files(&env.src);
    // A third pass: a change, a deletion, a rename.
    env.write("a.txt", "alpha, changed again\n");
    fs::remove_file(env.src.join("pictures/p1.jpg")).expect("rm");
    fs::rename(env.src.join("new.txt"), env.src.join("renamed.txt")).expect("mv");
    env.once(&[]).code(0);
    let m = Mount::start(&env.dst, &env.root().join("past"), &[]);
    let top = &m.at;

    // The tree now is SRC, bytes, modes and times.
    assert_eq!(files(&top.join("latest")), files(&env.src));
    // Each time is SRC as it was then, and what restore writes for it.
    let times: Vec<String> = fs::read_dir(top.join("at"))
        .expect("at/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    // A time or two for each pass: a pass may run across the turn of a second.
    let folder_of = |t: &str| t.replace(' ', "T").replace(':', "-");
    let passes = [
        times.iter().filter(|t| **t < folder_of(&t1)).count(),
        times
            .iter()
            .filter(|t| **t > folder_of(&t1) && **t < folder_of(&t2))
            .count(),
        times.iter().filter(|t| **t > folder_of(&t2)).count(),
    ];
    assert!(
        passes.iter().all(|n| (1..=2).contains(n)) && passes.iter().sum::<usize>() == times.len(),
        "{times:?}"
    );
    for (t, name, src_then) in [(&t1, "t1", &src_at_t1), (&t2, "t2", &src_at_t2)] {
        let folder = folder_of(t);
        let shown = files(&top.join("at").join(&folder));
        assert_eq!(&shown, src_then, "at/{folder} against SRC then");
        assert_eq!(shown, files(&restored(&env, t, name)), "at/{folder}");
    }
    // Every version of a file, under its name in DST; the record of a deletion as such.
    let mut versions: Vec<String> = fs::read_dir(top.join("versions/a.txt"))
        .expect("versions/a.txt")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(
        fs::read(top.join("versions/a.txt").join(&versions[0])).expect("first"),
        b"alpha\n"
    );
    let report: Vec<String> = fs::read_dir(top.join("versions/docs/report.txt"))
        .expect("versions of a deleted file")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        report.iter().any(|n| n.ends_with("_deleted.txt")),
        "{report:?}"
    );
    // The file that became a folder: both are there, the file marked.
    assert!(top.join("versions/swap").is_dir());
    assert!(top.join("versions/swap~file").is_dir());

    // Nothing can be written.
    let refused = fs::write(top.join("latest/new.txt"), "x").expect_err("read-only");
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");
    assert_eq!(fs::read(env.dst.join("new.txt")).expect("copy"), b"new\n");
    m.unmount();

    // With --at, the mount point is that one tree.
    let m = Mount::start(&env.dst, &env.root().join("then"), &["--at", &t1]);
    assert_eq!(files(&m.at), src_at_t1);
    m.unmount();
}

#[test]
fn a_mount_point_with_things_in_it_is_refused() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let env = Env::new();
    env.write("a.txt", "a");
    env.once(&[]).code(0);
    let busy = env.root().join("busy");
    fs::create_dir(&busy).expect("mkdir");
    fs::write(busy.join("mine"), "mine").expect("write");
    let out = Command::new(bin())
        .arg("mount")
        .arg(&env.dst)
        .arg(&busy)
        .output()
        .expect("backup mount");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an empty folder"), "{err}");
    assert!(!mounted(&busy));
}

/// One version of the log of `a_file_read_while_watch_adds_versions_is_always_one_whole_version`:
/// a line that names it, repeated, so that a read that mixed two versions shows.
fn version_text(i: usize) -> Vec<u8> {
    format!("version {i:04}\n").repeat(20_000).into_bytes()
}

#[test]
fn a_file_read_while_watch_adds_versions_is_always_one_whole_version() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let env = Env::new();
    let log = env.write("log.txt", version_text(0));
    let w = common::Watch::start(&env, &["--debounce", "50ms"]);
    w.wait_for("the first copy", Duration::from_secs(30), |_| {
        env.dst.join("log.txt").exists()
    });
    let m = Mount::start(&env.dst, &env.root().join("live"), &[]);
    let latest = m.at.join("latest/log.txt");
    let times = |m: &Mount| fs::read_dir(m.at.join("at")).expect("at/").count();
    let times_then = times(&m);
    // The versions below start in a later second than the first copy: each is a new time.
    common::next_second();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // How many versions the reader has seen: it is stopped only once it has seen more than one.
    let versions_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Reads all along, each of them checked to be one whole version.
    let reader = {
        let (latest, stop) = (latest.clone(), std::sync::Arc::clone(&stop));
        let versions_seen = std::sync::Arc::clone(&versions_seen);
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(data) = fs::read(&latest) else {
                    continue;
                };
                reads += 1;
                let i: usize = std::str::from_utf8(&data[8..12])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("not a version: {:?}", &data[..16]));
                assert!(data == version_text(i), "read {reads}: a mix of versions");
                seen.insert(i);
                versions_seen.store(seen.len(), std::sync::atomic::Ordering::Relaxed);
            }
            (reads, seen)
        })
    };
    for i in 1..=12 {
        fs::write(&log, version_text(i)).expect("write a version");
        w.wait_for("the version in DST", Duration::from_secs(30), |_| {
            common::family(&env.dst, "log.txt").len() == i + 1
        });
    }
    // The newest shows through the mount once DST holds it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            fs::read(&latest).is_ok_and(|d| d == version_text(12))
        }),
        "latest/ never showed the newest version"
    );
    // The versions made since it was mounted are points in time of `at/` too.
    assert!(
        wait_until(Duration::from_secs(10), || times(&m) > times_then),
        "at/ still lists {times_then} times"
    );
    // The reader may have been kept off the CPU since the newest version showed (two cores,
    // tests side by side): it is given the time to read it too.
    wait_until(Duration::from_secs(10), || {
        versions_seen.load(std::sync::atomic::Ordering::Relaxed) > 1
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, seen) = reader.join().expect("every read was one whole version");
    assert!(reads > 12, "only {reads} reads");
    assert!(seen.len() > 1, "the mount showed only {seen:?}");
    let versions = fs::read_dir(m.at.join("versions/log.txt"))
        .expect("versions/log.txt")
        .count();
    assert_eq!(versions, 13);
    m.unmount();
    let (code, _, err) = w.stop(rustix::process::Signal::INT);
    assert_eq!(code, Some(0), "{err}");
}

/// As root, reads are handed to the kernel (FUSE passthrough, Linux 6.9 and later); a user may
/// not do that, and the mount reads the copies itself, without `open` requests. More files
/// than it keeps open (32), each read whole.
#[test]
fn a_mount_by_a_user_reads_through_the_process() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if !rustix::process::geteuid().is_root() || !common::can_drop_root() {
        eprintln!("SKIPPED: needs root, to mount as another user");
        return;
    }
    let users_may =
        fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if !users_may {
        eprintln!("SKIPPED: /dev/fuse is not open to users here (distributions make it 0666)");
        return;
    }
    let env = Env::new();
    let mut data = "a line of text\n".repeat(10_000);
    env.write("docs/big.txt", &data);
    let mut paths = vec!["latest/docs/big.txt".to_string()];
    for i in 0..40 {
        let small = format!("file {i}\n").repeat(i + 1);
        env.write(format!("many/f{i:02}.txt"), &small);
        data.push_str(&small);
        paths.push(format!("latest/many/f{i:02}.txt"));
    }
    env.once(&[]).code(0);
    common::open_up(&env);
    let at = env.root().join("as-user");
    fs::create_dir(&at).expect("mount point");
    std::os::unix::fs::chown(&at, Some(65534), Some(65534)).expect("chown");
    let nobody = |program: &str| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
        c
    };
    let mut child = nobody(&bin().to_string_lossy())
        .arg("mount")
        .arg(&env.dst)
        .arg(&at)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("backup mount as nobody");
    let up = wait_until(Duration::from_secs(10), || mounted(&at));
    // Only its user may look into it (no allow_other).
    let read = up.then(|| {
        nobody("cat")
            .args(paths.iter().map(|p| at.join(p)))
            .output()
    });
    common::fuse_unmount(&at);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    assert!(up, "not mounted: {}", String::from_utf8_lossy(&out.stderr));
    let read = read.expect("read").expect("cat");
    assert!(read.status.success(), "{read:?}");
    assert!(read.stdout == data.as_bytes(), "the bytes read differ");
}

/// A copy the kernel forgets (here: all it keeps, dropped with `drop_caches`) is forgotten by
/// the mount too, and its inode number given to the next copy looked at, so that the mount's
/// table follows what the kernel keeps rather than all it was ever shown; each name still reads
/// its own copy after.
#[test]
fn what_the_kernel_forgets_the_mount_forgets() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root, to make the kernel forget (/proc/sys/vm/drop_caches)");
        return;
    }
    let env = Env::new();
    let text = |d: &str, i: usize| format!("{d} {i}\n");
    for d in ["a", "b"] {
        for i in 0..200 {
            env.write(format!("{d}/f{i:03}.txt"), text(d, i));
        }
    }
    env.once(&[]).code(0);
    let m = Mount::start(&env.dst, &env.root().join("mnt"), &[]);
    let latest = m.at.join("latest");
    let ino = |d: &str, i: usize| {
        fs::metadata(latest.join(format!("{d}/f{i:03}.txt")))
            .expect("stat")
            .ino()
    };
    let shown: Vec<u64> = (0..200).map(|i| ino("a", i)).collect();
    let highest = shown.iter().copied().max().unwrap_or(0);

    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches");
    // The kernel's forgets reach the mount a little later: the first numbers given after may
    // still be new ones, but not all 200.
    let again = (0..200).find(|&i| ino("b", i) <= highest);
    assert!(
        again.is_some(),
        "no number given again: b's start past {highest}"
    );
    for (d, i) in [("a", 0), ("a", 199), ("b", 0), ("b", 199)] {
        let got = fs::read_to_string(latest.join(format!("{d}/f{i:03}.txt"))).expect("read");
        assert_eq!(got, text(d, i));
    }
    m.unmount();
}

/// `at/` is found again by a walk that reads only the folders of DST changed since the walk
/// before: a folder whose modification time is older than that walk, and unchanged, is taken as
/// it was. A version added to such a folder, and a record of a deletion in another, still show
/// as a new time, with the tree at that time as it was.
#[test]
fn at_shows_new_times_in_folders_it_had_read_before() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let env = Env::new();
    env.write("top.txt", "top\n");
    env.write("sub/a.txt", "one\n");
    env.write("deep/x/b.txt", "b\n");
    env.once(&[]).code(0);
    // Folders last changed an hour ago: the walk may keep what it found in them.
    let hour_ago = chrono::Local::now().timestamp() - 3600;
    for e in walkdir::WalkDir::new(&env.dst) {
        let e = e.expect("walk");
        if e.file_type().is_dir() {
            common::set_mtime(e.path(), hour_ago, 0);
        }
    }
    let m = Mount::start(&env.dst, &env.root().join("mnt"), &[]);
    let times = || -> Vec<String> {
        let mut t: Vec<String> = fs::read_dir(m.at.join("at"))
            .expect("at/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        t.sort();
        t
    };
    let before = times();
    assert!((1..=2).contains(&before.len()), "{before:?}");

    common::next_second();
    env.write("sub/a.txt", "two\n");
    fs::remove_file(env.src.join("deep/x/b.txt")).expect("rm");
    env.once(&[]).code(0);
    assert!(
        wait_until(Duration::from_secs(10), || times().len() > before.len()),
        "at/ still lists {:?}",
        times()
    );
    let newest = m.at.join("at").join(times().last().expect("a time"));
    assert_eq!(fs::read(newest.join("sub/a.txt")).expect("a.txt"), b"two\n");
    assert_eq!(fs::read(newest.join("top.txt")).expect("top.txt"), b"top\n");
    assert!(!newest.join("deep/x/b.txt").exists(), "deleted by then");
    let first = m.at.join("at").join(&before[0]);
    assert_eq!(fs::read(first.join("sub/a.txt")).expect("a.txt"), b"one\n");
    assert_eq!(fs::read(first.join("deep/x/b.txt")).expect("b.txt"), b"b\n");
    m.unmount();
}
