//! A FUSE filesystem that forgets what was not made durable, for the crash tests
//! (`tests/crash.rs`): it serves the tree of BACKING from memory, keeps every change volatile
//! until the `fsync` that POSIX says makes it durable (see `model`), and at a "power cut" keeps
//! only what was. When it is unmounted it writes what a disk would hold into BACKING: after a
//! cut, what the cut kept; after a clean unmount, everything.
//!
//! ```text
//! lazyfs BACKING MOUNTPOINT [--cut-at-sync N] [--cut-at-op N] [--kill-at-op N] [--stats FILE]
//! ```
//!
//! The cut comes right after the N-th sync (`fsync` of a file or folder) has been answered, or
//! right before the N-th change (write, create, rename, link, unlink, attribute) would be made,
//! or at the first request after SIGUSR1. From then on every request fails with EIO, as on a
//! disk that lost power. `--kill-at-op N` instead kills the process that asks for the N-th
//! change (SIGKILL) and keeps everything: a crash of the program, not of the machine. At exit, `--stats` gets how many syncs and changes were served, and
//! whether the cut came.
//!
//! The kernel does not pass `syncfs(2)` or `sync(2)` to a FUSE server (only virtiofs gets
//! them), so, as on any FUSE filesystem (ntfs-3g, exfat-fuse, sshfs), they make nothing durable.

mod model;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use model::{Attr, Error, Ino, Kind, Model, ROOT};

/// Nothing is cached by the kernel: every request reaches the model, and a cut shows at once.
const TTL: Duration = Duration::ZERO;

struct Inner {
    model: Model,
    syncs: u64,
    ops: u64,
    cut: bool,
    cut_at_sync: Option<u64>,
    cut_at_op: Option<u64>,
    kill_at_op: Option<u64>,
    killed: bool,
}

struct Lazy {
    inner: Arc<Mutex<Inner>>,
    signalled: Arc<AtomicBool>,
}

impl Lazy {
    /// The model, unless the power is out. A change (made for the process of `change`) counts
    /// towards `--cut-at-op`, and the cut comes before it is made; and towards `--kill-at-op`,
    /// where that process is killed instead (SIGKILL), everything kept.
    fn gate(&self, change: Option<&Request>) -> Result<MutexGuard<'_, Inner>, Errno> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.cut && self.signalled.load(Ordering::Relaxed) {
            cut(&mut inner);
        }
        if inner.cut {
            return Err(Errno::EIO);
        }
        if let Some(req) = change {
            inner.ops += 1;
            if inner.cut_at_op == Some(inner.ops) {
                cut(&mut inner);
                return Err(Errno::EIO);
            }
            if inner.kill_at_op == Some(inner.ops) {
                inner.killed = true;
                if let Some(pid) = rustix::process::Pid::from_raw(req.pid() as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                return Err(Errno::EIO);
            }
        }
        Ok(inner)
    }

    fn sync(&self, ino: INodeNo, reply: ReplyEmpty) {
        let mut inner = match self.gate(None) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = inner.model.sync(ino.0) {
            return reply.error(errno(e));
        }
        inner.syncs += 1;
        if std::env::var_os("LAZYFS_LOG").is_some() {
            eprintln!("lazyfs: sync {} of inode {}", inner.syncs, ino.0);
        }
        if inner.cut_at_sync == Some(inner.syncs) {
            cut(&mut inner);
        }
        reply.ok();
    }
}

fn cut(inner: &mut Inner) {
    inner.model.cut();
    inner.cut = true;
}

fn errno(e: Error) -> Errno {
    match e {
        Error::NotFound => Errno::ENOENT,
        Error::Exists => Errno::EEXIST,
        Error::NotDir => Errno::ENOTDIR,
        Error::IsDir => Errno::EISDIR,
        Error::NotEmpty => Errno::ENOTEMPTY,
    }
}

fn time(t: (i64, u32)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0 as u64, t.1)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.0.unsigned_abs()) + Duration::from_nanos(t.1.into())
    }
}

fn stamp(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            (-(d.as_secs() as i64), 0)
        }
    }
}

fn now() -> (i64, u32) {
    stamp(SystemTime::now())
}

fn attr_of(model: &Model, ino: Ino) -> Result<FileAttr, Errno> {
    let node = model.node(ino).map_err(errno)?;
    let a = node.now.attr;
    let size = node.now.data.len() as u64;
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: match node.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
        },
        perm: (a.mode & 0o7777) as u16,
        nlink: node.nlink.max(u32::from(node.kind == Kind::Dir)),
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

fn new_attr(req: &Request, mode: u32, umask: u32) -> Attr {
    let t = now();
    Attr {
        mode: mode & !umask & 0o7777,
        uid: req.uid(),
        gid: req.gid(),
        atime: t,
        mtime: t,
        ctime: t,
    }
}

impl Lazy {
    fn made(&self, made: Result<Ino, Error>, inner: &Inner, reply: ReplyEntry) {
        if std::env::var_os("LAZYFS_LOG").is_some() {
            eprintln!("lazyfs: entry {made:?}");
        }
        match made
            .map_err(errno)
            .and_then(|ino| attr_of(&inner.model, ino))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Lazy {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = match self.gate(None) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let found = inner.model.lookup(parent.0, name);
        self.made(found, &inner, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.gate(None).and_then(|i| attr_of(&i.model, ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut inner = match self.gate(Some(req)) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => stamp(t),
            TimeOrNow::Now => now(),
        };
        if let Some(size) = size
            && let Err(e) = inner.model.truncate(ino.0, size)
        {
            return reply.error(errno(e));
        }
        let node = match inner.model.node_mut(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let a = &mut node.now.attr;
        if let Some(m) = mode {
            a.mode = m & 0o7777;
        }
        if let Some(u) = uid {
            a.uid = u;
        }
        if let Some(g) = gid {
            a.gid = g;
        }
        if let Some(t) = atime {
            a.atime = at(t);
        }
        if let Some(t) = mtime {
            a.mtime = at(t);
        }
        a.ctime = now();
        match attr_of(&inner.model, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.gate(None) {
            Ok(inner) => match inner.model.node(ino.0) {
                Ok(n) => reply.data(&n.now.data),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut inner = match self.gate(Some(req)) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let made = inner
            .model
            .create(parent.0, name, Kind::File, new_attr(req, mode, umask), b"");
        self.made(made, &inner, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut inner = match self.gate(Some(req)) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let made = inner
            .model
            .create(parent.0, name, Kind::Dir, new_attr(req, mode, umask), b"");
        self.made(made, &inner, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.gate(Some(req)) {
            Ok(mut inner) => match inner.model.unlink(parent.0, name, false) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.gate(Some(req)) {
            Ok(mut inner) => match inner.model.unlink(parent.0, name, true) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut inner = match self.gate(Some(req)) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let made = inner.model.create(
            parent.0,
            link_name,
            Kind::Symlink,
            new_attr(req, 0o777, 0),
            target.as_os_str().as_bytes(),
        );
        self.made(made, &inner, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.gate(Some(req)) {
            Ok(mut inner) => {
                match inner
                    .model
                    .rename(parent.0, name, newparent.0, newname, no_replace)
                {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(e)),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut inner = match self.gate(Some(req)) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let linked = inner
            .model
            .link(ino.0, newparent.0, newname)
            .map(|()| ino.0);
        self.made(linked, &inner, reply);
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.gate(None) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.gate(None) {
            Ok(inner) => match inner.model.node(ino.0) {
                Ok(n) => {
                    let data = &n.now.data;
                    let from = (offset as usize).min(data.len());
                    let to = (from + size as usize).min(data.len());
                    reply.data(&data[from..to]);
                }
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.gate(Some(req)) {
            Ok(mut inner) => match inner.model.write(ino.0, offset, data) {
                Ok(()) => {
                    if let Ok(n) = inner.model.node_mut(ino.0) {
                        let t = now();
                        n.now.attr.mtime = t;
                        n.now.attr.ctime = t;
                    }
                    reply.written(data.len() as u32)
                }
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = match self.gate(None) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let node = match inner.model.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let mut entries: Vec<(Ino, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for (name, child) in &node.now.entries {
            let kind = match inner.model.node(*child).map(|n| n.kind) {
                Ok(Kind::Dir) => FileType::Directory,
                Ok(Kind::Symlink) => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            entries.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.gate(None) {
            // 4 GiB, mostly free: room is not what these tests are about.
            Ok(_) => reply.statfs(1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 4096, 255, 4096),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.gate(Some(req)) {
            Ok(mut inner) => match inner.model.node_mut(ino.0) {
                Ok(n) => {
                    n.now.xattrs.insert(name.to_os_string(), value.to_vec());
                    reply.ok()
                }
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let inner = match self.gate(None) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match inner.model.node(ino.0).map(|n| n.now.xattrs.get(name)) {
            Ok(Some(v)) => sized(reply, size, v),
            Ok(None) => reply.error(Errno::ENODATA),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let inner = match self.gate(None) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match inner.model.node(ino.0) {
            Ok(n) => {
                let mut list = Vec::new();
                for name in n.now.xattrs.keys() {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                sized(reply, size, &list)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.gate(Some(req)) {
            Ok(mut inner) => match inner.model.node_mut(ino.0) {
                Ok(n) => match n.now.xattrs.remove(name) {
                    Some(_) => reply.ok(),
                    None => reply.error(Errno::ENODATA),
                },
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = match self.gate(Some(req)) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let made = inner
            .model
            .create(parent.0, name, Kind::File, new_attr(req, mode, umask), b"")
            .map_err(errno)
            .and_then(|ino| attr_of(&inner.model, ino));
        match made {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// An xattr reply: its size when asked for that, else the value if it fits.
fn sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// The tree of `dir` as the model's starting state, all of it durable.
fn load(dir: &Path) -> io::Result<Model> {
    let attr_of = |m: &fs::Metadata| Attr {
        mode: m.permissions().mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        atime: (m.atime(), m.atime_nsec() as u32),
        mtime: (m.mtime(), m.mtime_nsec() as u32),
        ctime: (m.ctime(), m.ctime_nsec() as u32),
    };
    let mut model = Model::new(attr_of(&fs::metadata(dir)?));
    let mut todo = vec![(dir.to_path_buf(), ROOT)];
    while let Some((path, ino)) = todo.pop() {
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            let m = entry.path().symlink_metadata()?;
            let (kind, target) = if m.is_dir() {
                (Kind::Dir, Vec::new())
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(entry.path())?;
                (Kind::Symlink, t.into_os_string().into_vec())
            } else {
                (Kind::File, Vec::new())
            };
            let child = model
                .create(ino, &entry.file_name(), kind, attr_of(&m), &target)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            if kind == Kind::File {
                let data = fs::read(entry.path())?;
                model
                    .write(child, 0, &data)
                    .map_err(|e| io::Error::other(format!("{e:?}")))?;
                let node = model
                    .node_mut(child)
                    .map_err(|e| io::Error::other(format!("{e:?}")))?;
                node.now.xattrs = xattrs_of(&entry.path());
            }
            if kind == Kind::Dir {
                todo.push((entry.path(), child));
            }
        }
    }
    let all: Vec<Ino> = model.nodes.keys().copied().collect();
    for ino in all {
        let _ = model.sync(ino);
    }
    Ok(model)
}

use std::os::unix::ffi::OsStringExt;

fn xattrs_of(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(names) = xattr_names(path) else {
        return out;
    };
    for name in names {
        let mut buf = vec![0u8; 64 << 10];
        if let Ok(n) = rustix::fs::getxattr(path, name.as_os_str(), &mut buf) {
            buf.truncate(n);
            out.insert(name, buf);
        }
    }
    out
}

fn xattr_names(path: &Path) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 64 << 10];
    let n = rustix::fs::listxattr(path, &mut buf)?;
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect())
}

/// Writes the model's tree into `dir`, in place of what is there.
fn dump(model: &Model, dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        if p.symlink_metadata()?.is_dir() {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    let mut dirs = Vec::new();
    let mut files: std::collections::HashMap<Ino, PathBuf> = std::collections::HashMap::new();
    for (names, ino) in model.walk() {
        let node = model
            .node(ino)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        let path: PathBuf = names.iter().fold(dir.to_path_buf(), |p, n| p.join(n));
        let a = node.now.attr;
        match node.kind {
            Kind::Dir => {
                if !names.is_empty() {
                    fs::create_dir(&path)?;
                }
                dirs.push((path, a));
                continue;
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&node.now.data), &path)?;
                continue;
            }
            Kind::File => {
                if let Some(first) = files.get(&ino) {
                    // A second name of the same inode.
                    fs::hard_link(first, &path)?;
                    continue;
                }
                fs::write(&path, &node.now.data)?;
                files.insert(ino, path.clone());
            }
        }
        for (name, value) in &node.now.xattrs {
            let _ = rustix::fs::setxattr(
                &path,
                name.as_os_str(),
                value,
                rustix::fs::XattrFlags::empty(),
            );
        }
        std::os::unix::fs::chown(&path, Some(a.uid), Some(a.gid))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(a.mode))?;
        filetime::set_file_times(&path, ft(a.atime), ft(a.mtime))?;
    }
    for (path, a) in dirs.iter().rev() {
        std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))?;
        fs::set_permissions(path, fs::Permissions::from_mode(a.mode))?;
        filetime::set_file_times(path, ft(a.atime), ft(a.mtime))?;
    }
    Ok(())
}

fn ft(t: (i64, u32)) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(t.0, t.1)
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(backing), Some(mountpoint)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: lazyfs BACKING MOUNTPOINT [--cut-at-sync N] [--cut-at-op N] [--kill-at-op N] [--stats FILE]"
        );
        std::process::exit(2);
    };
    let (mut cut_at_sync, mut cut_at_op, mut kill_at_op, mut stats) = (None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.to_str() {
            Some("--cut-at-sync") => cut_at_sync = value.to_str().and_then(|v| v.parse().ok()),
            Some("--cut-at-op") => cut_at_op = value.to_str().and_then(|v| v.parse().ok()),
            Some("--kill-at-op") => kill_at_op = value.to_str().and_then(|v| v.parse().ok()),
            Some("--stats") => stats = Some(PathBuf::from(value)),
            _ => {
                eprintln!("lazyfs: unknown option {flag:?}");
                std::process::exit(2);
            }
        }
    }
    // Absolute, since mounting may change the working folder.
    let backing = match fs::canonicalize(&backing) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lazyfs: {}: {e}", PathBuf::from(backing).display());
            std::process::exit(1);
        }
    };
    let stats = stats.map(|s| std::path::absolute(&s).unwrap_or(s));
    let model = match load(&backing) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lazyfs: {}: {e}", backing.display());
            std::process::exit(1);
        }
    };
    let inner = Arc::new(Mutex::new(Inner {
        model,
        syncs: 0,
        ops: 0,
        cut: false,
        cut_at_sync,
        cut_at_op,
        kill_at_op,
        killed: false,
    }));
    let signalled = Arc::new(AtomicBool::new(false));
    if let Err(e) =
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&signalled))
    {
        eprintln!("lazyfs: SIGUSR1: {e}");
        std::process::exit(1);
    }
    let fs = Lazy {
        inner: Arc::clone(&inner),
        signalled,
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("lazyfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = fuser::SessionACL::All;
    if let Err(e) = fuser::mount(fs, &mountpoint, &config) {
        eprintln!(
            "lazyfs: mount {}: {e}",
            PathBuf::from(&mountpoint).display()
        );
        std::process::exit(1);
    }
    let inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(e) = dump(&inner.model, &backing) {
        eprintln!("lazyfs: writing {}: {e}", backing.display());
        std::process::exit(1);
    }
    if let Some(stats) = stats {
        let text = format!(
            "syncs {}\nops {}\ncut {}\nkilled {}\n",
            inner.syncs,
            inner.ops,
            if inner.cut { "yes" } else { "no" },
            if inner.killed { "yes" } else { "no" }
        );
        if let Err(e) = fs::write(&stats, text) {
            eprintln!("lazyfs: {}: {e}", stats.display());
            std::process::exit(1);
        }
    }
}
