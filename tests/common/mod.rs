//! A temporary SRC/DST pair, the built binary, and checks that explain themselves on failure.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env::new_in(std::env::temp_dir())
    }

    /// An environment on a filesystem of the caller's choice (say tmpfs, for big files).
    pub fn new_in(base: impl AsRef<Path>) -> Env {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
        let src = root.join("src");
        fs::create_dir(&src).expect("mkdir src");
        Env {
            dir,
            src,
            dst: root.join("dst"),
        }
    }

    /// An environment on tmpfs where there is one (fast, and spares the disk for big files).
    pub fn on_tmpfs() -> Env {
        if Path::new("/dev/shm").is_dir() {
            Env::new_in("/dev/shm")
        } else {
            Env::new()
        }
    }

    /// A source file of `size` bytes of data (not holes, which are copied in no time): takes a
    /// while to copy.
    pub fn filled(&self, rel: &str, size: u64) -> PathBuf {
        use std::io::Write;
        let p = self.src.join(rel);
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
        let mut f = fs::File::create(&p).expect("filled file");
        for _ in 0..size / chunk.len() as u64 {
            f.write_all(&chunk).expect("filled file");
        }
        p
    }

    /// A sparse source file of `size` bytes, all hole: costs no memory or disk to make.
    pub fn sparse(&self, rel: &str, size: u64) -> PathBuf {
        let p = self.src.join(rel);
        fs::File::create(&p)
            .and_then(|f| f.set_len(size))
            .expect("sparse file");
        p
    }

    /// Whether a copy is under way: one of our temporary files is in DST, or a process holds
    /// an unnamed file (`O_TMPFILE`) open in it.
    pub fn copying(&self) -> bool {
        let named = walkdir::WalkDir::new(&self.dst)
            .into_iter()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(".backup-tmp."));
        named || unnamed_file_open_in(&self.dst)
    }

    /// A storm: `folders` new folders of `files` files each, written as fast as possible.
    pub fn storm(&self, folders: usize, files: usize) {
        for d in 0..folders {
            let dir = self.src.join(format!("d{d:03}"));
            fs::create_dir(&dir).expect("mkdir");
            for f in 0..files {
                fs::write(dir.join(format!("f{f:02}.txt")), format!("{d}/{f}")).expect("write");
            }
        }
    }

    /// How many files of a `storm` are not (yet) in DST with their contents.
    pub fn storm_missing(&self, folders: usize, files: usize) -> usize {
        (0..folders)
            .flat_map(|d| (0..files).map(move |f| (d, f)))
            .filter(|(d, f)| {
                fs::read(self.dst.join(format!("d{d:03}/f{f:02}.txt"))).unwrap_or_default()
                    != format!("{d}/{f}").as_bytes()
            })
            .count()
    }

    pub fn root(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonical tempdir")
    }

    /// Writes a source file, creating its folders.
    pub fn write(&self, rel: impl AsRef<Path>, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.src.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir -p");
        }
        fs::write(&p, data).expect("write source file");
        p
    }

    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = Command::new(bin());
        // A running watch keeps its state file here, not in the home folder of whoever tests.
        c.arg(sub)
            .arg(&self.src)
            .arg(&self.dst)
            .env("XDG_STATE_HOME", self.root().join(".state"));
        c
    }

    /// `backup once SRC DST` plus extra arguments.
    pub fn once(&self, extra: &[&str]) -> Run {
        let mut c = self.cmd("once");
        c.args(extra);
        Run::of(c.output().expect("run backup"), self)
    }

    /// Every entry under DST, relative, with what it is.
    pub fn dst_tree(&self) -> BTreeMap<PathBuf, Node> {
        tree(&self.dst)
    }

    pub fn dst_names(&self, rel: impl AsRef<Path>) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dst.join(rel))
            .expect("read dst folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn listing(&self) -> String {
        let mut s = String::new();
        for (root, label) in [(&self.src, "SRC"), (&self.dst, "DST")] {
            s.push_str(&format!("{label} {}:\n", root.display()));
            for (p, n) in tree(root) {
                s.push_str(&format!("  {} {:?}\n", p.display(), n));
            }
        }
        s
    }
}

/// `backup restore DST PATH --to TO --at AT`.
pub fn restore(env: &Env, path: &str, to: &Path, at: &str) -> Run {
    let out = Command::new(bin())
        .arg("restore")
        .arg(&env.dst)
        .arg(path)
        .arg("--to")
        .arg(to)
        .args(["--at", at])
        .output()
        .expect("restore");
    Run::of(out, env)
}

/// Waits (bounded) until the wall clock is in a later second than now, so that two runs get
/// different version stamps, and returns the second that was left, as `--at` takes it.
pub fn next_second() -> String {
    let now = chrono::Local::now();
    let start = now.timestamp();
    assert!(wait_until(Duration::from_secs(3), || {
        chrono::Local::now().timestamp() > start
    }));
    now.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("backup")
}

/// What a path in a tree is: enough to compare trees and spot partial data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// `data` is read only for files up to 4 MiB; bigger ones compare by length.
    File {
        len: u64,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink(PathBuf),
    Other,
}

pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.expect("walk");
        let rel = e.path().strip_prefix(root).expect("prefix").to_path_buf();
        let md = e.path().symlink_metadata().expect("lstat");
        let mode = md.permissions().mode() & 0o7777;
        let node = if md.file_type().is_symlink() {
            Node::Symlink(fs::read_link(e.path()).expect("readlink"))
        } else if md.is_dir() {
            Node::Dir { mode }
        } else if md.is_file() {
            Node::File {
                len: md.len(),
                data: if md.len() <= 4 << 20 {
                    fs::read(e.path()).unwrap_or_default()
                } else {
                    Vec::new()
                },
                mode,
            }
        } else {
            Node::Other
        };
        out.insert(rel, node);
    }
    out
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    src: PathBuf,
    dst: PathBuf,
}

impl Run {
    pub fn of(o: Output, env: &Env) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            src: env.src.clone(),
            dst: env.dst.clone(),
        }
    }

    /// Outputs and both trees, for a failure message.
    pub fn context(&self) -> String {
        let mut s = format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}--- trees\n",
            self.code, self.stdout, self.stderr
        );
        for (root, label) in [(&self.src, "SRC"), (&self.dst, "DST")] {
            s.push_str(&format!("{label} {}:\n", root.display()));
            for (p, n) in tree(root) {
                s.push_str(&format!("  {} {:?}\n", p.display(), n));
            }
        }
        s
    }

    /// Panics with the outputs and both trees unless the exit code is `code`.
    pub fn code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n{}",
            self.context()
        );
        self
    }

    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// The `Copied:` lines, sorted (workers finish in any order).
    pub fn copied(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with("Copied: "))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// The value of a summary line, e.g. `summary("Successfully copied")`.
    pub fn summary(&self, label: &str) -> u64 {
        let prefix = format!("{label}: ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no summary line {label:?}\n{}", self.context()))
    }
}

const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it holds or `limit` passes; true if it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Lets `span` pass, polled like every other wait: a workload's pace, or a stretch in which
/// something must *not* happen.
pub fn hold_for(span: Duration) {
    let end = Instant::now() + span;
    wait_until(span + Duration::from_secs(1), || Instant::now() >= end);
}

/// A file's contents, or nothing while it does not exist (yet): for conditions polled while a
/// copy may or may not have arrived.
pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_default()
}

pub fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        p,
        filetime::FileTime::from_unix_time(secs, nanos),
        filetime::FileTime::from_unix_time(secs, nanos),
    )
    .expect("set times");
}

pub fn mtime_ns(p: &Path) -> (i64, i64) {
    let md = p.symlink_metadata().expect("lstat");
    (md.mtime(), md.mtime_nsec())
}

pub fn ino(p: &Path) -> u64 {
    p.symlink_metadata().expect("lstat").ino()
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Whether `setpriv` can run the binary as `nobody` here; prints why not when it cannot.
pub fn can_drop_root() -> bool {
    let ok = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: cannot run the binary as uid 65534 with setpriv here");
    }
    ok
}

/// The command to run the binary as `nobody`.
pub fn as_nobody(sub: &str, src: &Path, dst: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg(sub)
        .arg(src)
        .arg(dst);
    c
}

/// Opens the way for `nobody` to reach the env's folders.
pub fn open_up(env: &Env) {
    let mut p = env.root();
    loop {
        let mode = fs::metadata(&p).expect("stat").permissions().mode();
        if mode & 0o005 != 0o005 {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o005)).expect("chmod");
        }
        if !p.pop() {
            break;
        }
    }
}

/// Unmounts the FUSE mount at `at`, lazily where it is busy: a test that fails while a reader
/// still has a file open under it must not leave a dead mount behind once its process is
/// killed.
pub fn fuse_unmount(at: &Path) {
    let done = Command::new("fusermount3")
        .arg("-u")
        .arg(at)
        .output()
        .is_ok_and(|o| o.status.success());
    if !done {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(at)
            .output();
    }
}

/// Mounts a tmpfs of `size` (e.g. "1m") at `at`; false, with a message, where not allowed.
pub fn mount_tmpfs(at: &Path, opts: &str) -> bool {
    fs::create_dir_all(at).expect("mkdir mount point");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
    }
    ok
}

/// An `Env` whose DST is a folder of a tmpfs of `size` (`1m`), unmounted when the guard is
/// dropped; `None` (skipped) where a tmpfs cannot be mounted.
pub fn small_dst(size: &str) -> Option<(Env, Mount)> {
    let mut env = Env::new();
    let mnt = env.root().join("small-fs");
    if !mount_tmpfs(&mnt, &format!("size={size}")) {
        return None;
    }
    env.dst = mnt.join("dst");
    Some((env, Mount(mnt)))
}

/// Grows the tmpfs of `small_dst` to 8 MiB while it stays mounted.
pub fn grow_to_8m(small: &Mount) {
    let grown = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&small.0)
        .status()
        .expect("remount")
        .success();
    assert!(grown, "remount");
}

/// `backup du --json DST`, each line parsed.
pub fn du_json(env: &Env) -> Vec<serde_json::Value> {
    let r = Run::of(
        Command::new(bin())
            .args(["du", "--json"])
            .arg(&env.dst)
            .output()
            .expect("du"),
        env,
    );
    r.code(0);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

/// `backup verify --checksum SRC DST` finds nothing amiss.
pub fn verify_clean(env: &Env) {
    let out = env
        .cmd("verify")
        .arg("--checksum")
        .output()
        .expect("verify");
    Run::of(out, env).code(0);
}

/// Unmounts when dropped, so that a failing test leaves no mount behind.
pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A running `backup watch`, its output collected as it comes.
pub struct Watch {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    err: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    src: PathBuf,
    dst: PathBuf,
}

impl Watch {
    /// Starts `backup watch SRC DST <extra>` and waits until its watcher is running.
    pub fn start(env: &Env, extra: &[&str]) -> Watch {
        Watch::start_with(env.cmd("watch"), env, extra)
    }

    pub fn start_with(mut cmd: Command, env: &Env, extra: &[&str]) -> Watch {
        use std::io::Read;
        let mut child = cmd
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn backup watch");
        let mut readers = Vec::new();
        let mut collect = |mut r: Box<dyn Read + Send>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let b = std::sync::Arc::clone(&buf);
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().expect("lock").extend_from_slice(&chunk[..n]);
                }
            }));
            buf
        };
        let out = collect(Box::new(child.stdout.take().expect("stdout")));
        let err = collect(Box::new(child.stderr.take().expect("stderr")));
        let w = Watch {
            child,
            out,
            err,
            readers,
            src: env.src.clone(),
            dst: env.dst.clone(),
        };
        w.wait_for("the watcher to start", Duration::from_secs(30), |w| {
            w.stderr().contains("Watching ")
        });
        w
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("lock")).into_owned()
    }

    /// The number of rolling summary lines so far.
    pub fn batches(&self) -> usize {
        self.stdout()
            .lines()
            .filter(|l| l.contains(" batch: "))
            .count()
    }

    /// Polls `cond` until it holds (panicking with the outputs and trees after `limit`).
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Watch) -> bool) {
        if !wait_until(limit, || cond(self)) {
            panic!("timed out waiting for {what}\n{}", self.context());
        }
    }

    pub fn context(&self) -> String {
        let mut s = format!(
            "--- stdout\n{}--- stderr\n{}--- trees\n",
            self.stdout(),
            self.stderr()
        );
        for (root, label) in [(&self.src, "SRC"), (&self.dst, "DST")] {
            s.push_str(&format!("{label} {}:\n", root.display()));
            let t = tree(root);
            for (p, n) in t.iter().take(60) {
                s.push_str(&format!("  {} {:?}\n", p.display(), n));
            }
            if t.len() > 60 {
                s.push_str(&format!("  … {} entries in all\n", t.len()));
            }
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` and waits (bounded) for the exit; returns code, stdout, stderr.
    pub fn stop(self, sig: rustix::process::Signal) -> (Option<i32>, String, String) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal");
        self.stop_when_exited(Duration::from_secs(30))
    }

    /// Waits (bounded) for the process to exit; returns code, stdout, stderr.
    pub fn stop_when_exited(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let mut status = None;
        let exited = wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
            panic!("backup watch did not exit\n{}", self.context());
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status.and_then(|s| s.code()), self.stdout(), self.stderr())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The names in a DST folder that belong to `name`'s family (the name and its versions), oldest
/// first by the naming rule.
pub fn family(dir: &Path, name: &str) -> Vec<String> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), Some(e.to_string())),
        _ => (name.to_string(), None),
    };
    let mut members: Vec<(String, u64, u32)> = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == name {
            members.push((n, 0, 0));
            continue;
        }
        let body = match &ext {
            Some(ext) => n.strip_suffix(&format!(".{ext}")).map(str::to_string),
            None => Some(n.clone()),
        };
        let Some(rest) = body
            .as_deref()
            .and_then(|b| b.strip_prefix(&format!("{stem}_")))
        else {
            continue;
        };
        let parts: Vec<&str> = rest.split('_').collect();
        let digits = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_digit());
        let ok = match parts.as_slice() {
            [d, t] => digits(d, 8) && digits(t, 6),
            [d, t, c] => digits(d, 8) && digits(t, 6) && c.parse::<u32>().is_ok(),
            _ => false,
        };
        if ok {
            let stamp: u64 = format!("{}{}", parts[0], parts[1]).parse().unwrap_or(0);
            let counter = parts.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
            members.push((n, stamp, counter));
        }
    }
    members.sort_by_key(|(_, s, c)| (*s, *c));
    members.into_iter().map(|(n, _, _)| n).collect()
}

/// Inotify watches held by the process `pid`, or by every process when `None`.
pub fn inotify_watches(pid: Option<u32>) -> usize {
    let procs: Vec<PathBuf> = match pid {
        Some(pid) => vec![PathBuf::from(format!("/proc/{pid}"))],
        None => fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect(),
    };
    let mut n = 0;
    for proc in procs {
        for fd in fs::read_dir(proc.join("fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(info) = fs::read_to_string(fd.path()) {
                n += info
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count();
            }
        }
    }
    n
}

pub mod mounts;
pub mod stores;

/// Whether some process holds an unnamed file open in `dir` or below: the kernel shows it as
/// `DIR/#INODE (deleted)`.
pub fn unnamed_file_open_in(dir: &Path) -> bool {
    let prefix = format!("{}/", dir.display());
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(Result::ok).any(|p| {
        fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
            fds.filter_map(Result::ok).any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|t| {
                    let t = t.to_string_lossy();
                    t.starts_with(&prefix) && t.contains("/#") && t.ends_with(" (deleted)")
                })
            })
        })
    })
}

/// Where `two_passes` keeps SRC as it was after its first pass, beside SRC.
pub const SRC_AT_FIRST: &str = "src-at-first";

/// A history with a change, a deletion, a renamed folder, a new file, and a file that became a
/// folder, each pass in a second of its own; returns the times after the first and the second
/// pass, as `--at` takes them. SRC as it was after the first pass is kept, as `cp -a` copies
/// it, in `SRC_AT_FIRST` beside SRC.
pub fn two_passes(env: &Env) -> (String, String) {
    env.write("a.txt", "alpha\n");
    env.write("docs/report.txt", "the report\n");
    env.write("photos/p1.jpg", "a picture of some length\n");
    env.write("swap", "a file, then a folder\n");
    env.once(&[]).code(0);
    let kept = Command::new("cp")
        .arg("-a")
        .arg(&env.src)
        .arg(env.root().join(SRC_AT_FIRST))
        .status()
        .expect("cp -a");
    assert!(kept.success(), "cp -a");
    next_second();
    let t1 = next_second();
    env.write("a.txt", "alpha, changed\n");
    fs::remove_file(env.src.join("docs/report.txt")).expect("rm");
    fs::rename(env.src.join("photos"), env.src.join("pictures")).expect("mv");
    env.write("new.txt", "new\n");
    fs::remove_file(env.src.join("swap")).expect("rm swap");
    env.write("swap/inside.txt", "now a folder\n");
    env.once(&[]).code(0);
    next_second();
    let t2 = next_second();
    (t1, t2)
}
