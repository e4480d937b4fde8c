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
        c.arg(sub).arg(&self.src).arg(&self.dst);
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

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_backup"))
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
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no summary line {label:?}\n{}", self.context()))
    }
}

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
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// Unmounts when dropped, so that a failing test leaves no mount behind.
pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
