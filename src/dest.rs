//! Every write to the destination goes through this module.
//!
//! All operations are relative to directory handles opened without following symlinks, so that
//! nothing planted in the destination (a symlink where a folder was) can redirect a write outside
//! it, and a destination that is unmounted mid-run keeps receiving writes on the filesystem that
//! was checked, never on the bare mount point. Files are written under a temporary name that the
//! naming rule never matches, made durable, given their metadata, and only then published under
//! their final name with a call that fails rather than replaces.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{
    AtFlags, FlockOperation, Gid, Mode, OFlags, RenameFlags, ResolveFlags, Timestamps, Uid,
};
use rustix::io::Errno;

use crate::meta::{Kind, Meta, Time};

/// Prefix of our temporary files; `.backup-tmp.<12 hex>.<name>`.
const TEMP_PREFIX: &[u8] = b".backup-tmp.";
const TEMP_RANDOM_LEN: usize = 12;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
static NOREPLACE_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Why the destination could not be used at all.
#[derive(Debug)]
pub enum OpenError {
    Create(io::Error),
    Open(io::Error),
    NotWritable(io::Error),
    Locked,
}

/// The destination root, held open for the whole run.
#[derive(Debug)]
pub struct Dest {
    /// `None` only in a dry run whose destination does not exist yet.
    root: Option<OwnedFd>,
    path: PathBuf,
    dev: u64,
    ino: u64,
    as_root: bool,
    /// Nothing is created, locked or written; a missing folder reads as empty.
    dry_run: bool,
}

impl Dest {
    /// Creates `path` with its parents if missing, opens it, and takes an exclusive lock on it so
    /// that two runs never write into one destination at once (each would take the other's
    /// temporary files for a crash's leftovers).
    pub fn open(path: &Path, dry_run: bool) -> Result<Dest, OpenError> {
        let as_root = rustix::process::geteuid().is_root();
        if dry_run {
            let root = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok();
            let (dev, ino) = root
                .as_ref()
                .and_then(|r| rustix::fs::fstat(r).ok())
                .map_or((0, 0), |st| (st.st_dev, st.st_ino));
            return Ok(Dest {
                root,
                path: path.to_path_buf(),
                dev,
                ino,
                as_root,
                dry_run,
            });
        }
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(OpenError::Create)?;
        }
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| OpenError::Open(e.into()))?;
        rustix::fs::access(
            path,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .map_err(|e| OpenError::NotWritable(e.into()))?;
        match rustix::fs::flock(&root, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(OpenError::Locked),
            // Filesystems without flock (some network ones) still get a backup.
            Err(_) => {}
        }
        let st = rustix::fs::fstat(&root).map_err(|e| OpenError::Open(e.into()))?;
        Ok(Dest {
            root: Some(root),
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
            as_root,
            dry_run,
        })
    }

    /// A second handle on the same destination (the lock stays with the first).
    pub fn try_clone(&self) -> io::Result<Dest> {
        Ok(Dest {
            root: match &self.root {
                Some(r) => Some(r.try_clone()?),
                None => None,
            },
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            as_root: self.as_root,
            dry_run: self.dry_run,
        })
    }

    fn root(&self) -> io::Result<&OwnedFd> {
        self.root.as_ref().ok_or_else(absent)
    }

    fn dir(&self, fd: Option<OwnedFd>, rel: &Path) -> DestDir {
        DestDir {
            fd,
            path: self.path.join(rel),
            as_root: self.as_root,
            dry_run: self.dry_run,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the destination path still leads to the folder opened at the start (not
    /// unmounted, not replaced).
    pub fn still_there(&self) -> io::Result<()> {
        if self.root.is_none() {
            return Ok(());
        }
        let st = rustix::fs::stat(&self.path).map_err(io::Error::from)?;
        if st.st_dev == self.dev && st.st_ino == self.ino {
            Ok(())
        } else {
            Err(io::Error::other(
                "it is no longer the folder that this run started with (unmounted or replaced)",
            ))
        }
    }

    /// Forces everything written to the destination's filesystem to stable storage: one call
    /// for a whole batch of copies instead of one `fsync` wait per file.
    pub fn sync_all(&self) -> io::Result<()> {
        rustix::fs::syncfs(self.root()?)?;
        Ok(())
    }

    /// The destination root as a folder handle.
    pub fn root_dir(&self) -> io::Result<DestDir> {
        let fd = match &self.root {
            Some(r) => Some(r.try_clone()?),
            None => None,
        };
        Ok(self.dir(fd, Path::new("")))
    }

    /// Opens the folder at `rel` below the root, refusing to pass through any symlink.
    pub fn open_dir(&self, rel: &Path) -> io::Result<DestDir> {
        let Some(root) = &self.root else {
            return Ok(self.dir(None, rel));
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let fd = match rustix::fs::openat2(
            root,
            target,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            Err(Errno::NOSYS) => {
                // Kernels before 5.6: one component at a time, each without following.
                let mut fd = root.try_clone()?;
                for c in rel.components() {
                    let Component::Normal(name) = c else {
                        return Err(Errno::INVAL.into());
                    };
                    fd = rustix::fs::openat(&fd, name, flags, Mode::empty())?;
                }
                fd
            }
            Err(Errno::NOENT) if self.dry_run => return Ok(self.dir(None, rel)),
            other => other?,
        };
        Ok(self.dir(Some(fd), rel))
    }
}

/// One open folder in the destination.
#[derive(Debug)]
pub struct DestDir {
    /// `None` only in a dry run, for a folder that does not exist yet.
    fd: Option<OwnedFd>,
    path: PathBuf,
    as_root: bool,
    dry_run: bool,
}

fn absent() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// A child folder, and whether this call created it.
pub struct Child {
    pub dir: DestDir,
    pub created: bool,
    /// The folder's metadata as found (or as created).
    pub meta: Meta,
}

impl DestDir {
    /// The folder's absolute path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn handle(&self) -> io::Result<&OwnedFd> {
        self.fd.as_ref().ok_or_else(absent)
    }

    pub fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        Ok(self.handle()?.as_fd())
    }

    fn child(&self, fd: Option<OwnedFd>, name: &OsStr) -> DestDir {
        DestDir {
            fd,
            path: self.path.join(name),
            as_root: self.as_root,
            dry_run: self.dry_run,
        }
    }

    /// Opens the child folder `name`, creating it when missing. A non-folder or a symlink under
    /// that name is an error (`ENOTDIR` / `ELOOP`), never followed. In a dry run a missing
    /// folder is not created; it reads as empty.
    pub fn child_dir(&self, name: &OsStr) -> io::Result<Child> {
        let missing = || Child {
            dir: self.child(None, name),
            created: false,
            meta: Meta::default(),
        };
        let Some(parent) = &self.fd else {
            return Ok(missing());
        };
        // Owner-writable until the pass ends, so that its contents can be written even when the
        // source folder is read-only; the source's mode is applied in `set_dir_meta`.
        let created = if self.dry_run {
            false
        } else {
            match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(e.into()),
            }
        };
        let opened = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        );
        if self.dry_run && matches!(opened, Err(Errno::NOENT)) {
            return Ok(missing());
        }
        let fd = opened.map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => {
                let what = match self.stat(name.as_bytes()) {
                    Ok(m) if m.kind == Kind::Symlink => "a symlink",
                    _ => "a file",
                };
                io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{what} is in the way of a folder"),
                )
            }
            e => e.into(),
        })?;
        let meta = Meta::from_stat(&rustix::fs::fstat(&fd)?);
        Ok(Child {
            dir: self.child(Some(fd), name),
            created,
            meta,
        })
    }

    /// Every name in the folder.
    pub fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        match &self.fd {
            Some(fd) => Ok(crate::meta::read_folder(fd)?
                .into_iter()
                .map(|(name, _)| name)
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    /// The metadata of the entry `name`, without following a symlink.
    pub fn stat(&self, name: &[u8]) -> io::Result<Meta> {
        let st = rustix::fs::statat(
            self.handle()?,
            OsStr::from_bytes(name),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(Meta::from_stat(&st))
    }

    /// The kind, size and times of the entry `name` (not following a symlink), with its birth
    /// time where the filesystem keeps one.
    pub fn entry(&self, name: &[u8]) -> io::Result<(Meta, Option<Time>)> {
        use rustix::fs::StatxFlags;
        let x = rustix::fs::statx(
            self.handle()?,
            OsStr::from_bytes(name),
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )?;
        let t = |ts: rustix::fs::StatxTimestamp| Time {
            sec: ts.tv_sec,
            nsec: ts.tv_nsec,
        };
        let meta = Meta {
            kind: Kind::from_file_type(rustix::fs::FileType::from_raw_mode(u32::from(x.stx_mode))),
            size: x.stx_size,
            mode: u32::from(x.stx_mode) & 0o7777,
            uid: x.stx_uid,
            gid: x.stx_gid,
            atime: t(x.stx_atime),
            mtime: t(x.stx_mtime),
            ctime: t(x.stx_ctime),
            dev: 0,
            ino: x.stx_ino,
        };
        let born = (x.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| t(x.stx_btime));
        Ok((meta, born))
    }

    /// Deletes the file or symlink `name` (an old version being pruned); never a folder.
    pub fn remove(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::unlinkat(self.handle()?, OsStr::from_bytes(name), AtFlags::empty())?;
        Ok(())
    }

    pub fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        Ok(
            rustix::fs::readlinkat(self.handle()?, OsStr::from_bytes(name), Vec::new())?
                .into_bytes(),
        )
    }

    /// Opens a regular file for reading (to compare contents).
    pub fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            self.handle()?,
            OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Removes a temporary file left by an interrupted run.
    pub fn remove_leftover(&self, name: &[u8]) -> io::Result<()> {
        debug_assert!(is_temp_name(name));
        match self.stat(name) {
            Ok(m) if m.kind == Kind::File => {
                rustix::fs::unlinkat(self.handle()?, OsStr::from_bytes(name), AtFlags::empty())?;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Starts a new copy under a fresh temporary name.
    pub fn stage(self: &Arc<Self>, name: &[u8]) -> io::Result<Staged> {
        loop {
            let temp = temp_name(name);
            match rustix::fs::openat(
                self.handle()?,
                OsStr::from_bytes(&temp),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    return Ok(Staged {
                        dir: Arc::clone(self),
                        temp,
                        file: Some(File::from(fd)),
                        published: false,
                    });
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates the symlink `name` → `target` with the source's times (and owner, as root).
    /// `AlreadyExists` when the name is taken: a symlink is created whole or not at all.
    pub fn symlink(&self, target: &[u8], name: &[u8], meta: &Meta) -> io::Result<()> {
        let name = OsStr::from_bytes(name);
        rustix::fs::symlinkat(OsStr::from_bytes(target), self.handle()?, name)?;
        let done = (|| -> io::Result<()> {
            if self.as_root {
                rustix::fs::chownat(
                    self.handle()?,
                    name,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            rustix::fs::utimensat(
                self.handle()?,
                name,
                &timestamps(meta),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            Ok(())
        })();
        if let Err(e) = done {
            // A symlink without its metadata would be taken as unchanged forever; remove it so
            // that the next pass tries again.
            let _ = rustix::fs::unlinkat(self.handle()?, name, AtFlags::empty());
            return Err(e);
        }
        Ok(())
    }

    /// Gives the folder the source folder's owner (as root), mode and times.
    pub fn set_dir_meta(&self, meta: &Meta) -> io::Result<()> {
        if self.as_root {
            rustix::fs::fchown(
                self.handle()?,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        rustix::fs::fchmod(self.handle()?, Mode::from_raw_mode(meta.mode))?;
        rustix::fs::futimens(self.handle()?, &timestamps(meta))?;
        Ok(())
    }

    /// Makes the folder's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(self.handle()?)?;
        Ok(())
    }
}

/// A copy in progress under a temporary name. Dropped before `publish`, it removes itself.
pub struct Staged {
    dir: Arc<DestDir>,
    temp: Vec<u8>,
    file: Option<File>,
    published: bool,
}

impl Staged {
    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("temporary file already closed"))
    }

    /// Copies `src` from its current offset into the temporary file, `size` bytes (the length
    /// it had when opened) or to its end if the kernel's copy stops short; returns the number of
    /// bytes copied. Whether the file grew or changed meanwhile is for the caller's check after
    /// the copy to tell. Uses the kernel's copy (which may share blocks on filesystems that
    /// can), and plain reads and writes where the kernel cannot copy between these two files.
    pub fn copy_from(&mut self, src: &File, size: u64) -> io::Result<u64> {
        let out = self.file()?;
        let mut total: u64 = 0;
        while total < size {
            let want = usize::try_from(size - total).unwrap_or(CHUNK).min(CHUNK);
            match rustix::fs::copy_file_range(src, None, out, None, want) {
                Ok(0) => break,
                Ok(n) => {
                    start_writeback(out, total, n);
                    total += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::BADF) => {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if total == size {
            return Ok(total);
        }
        // Plain reads and writes finish the job where the kernel cannot copy between these two
        // files, or where it reported the end early (procfs, some FUSE filesystems).
        let (mut reader, mut writer) = (src, out);
        // Usually at the end already: probe with a small buffer before allocating a big one.
        let mut probe = [0u8; 512];
        let n = loop {
            match reader.read(&mut probe) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(total);
        }
        writer.write_all(&probe[..n])?;
        total += n as u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            writer.write_all(&buf[..n])?;
            start_writeback(out, total, n);
            total += n as u64;
        }
    }

    /// Gives the copy the source's metadata: owner (as root), mode, extended attributes, then
    /// times last, since every other change would touch them.
    pub fn set_meta(&self, meta: &Meta, src: &File) -> io::Result<()> {
        let out = self.file()?;
        if self.dir.as_root {
            rustix::fs::fchown(
                out,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        rustix::fs::fchmod(out, Mode::from_raw_mode(meta.mode))?;
        copy_xattrs(src, out)?;
        rustix::fs::futimens(out, &timestamps(meta))?;
        Ok(())
    }

    /// Closes the file, checking the result: a failed close means the data may not be there,
    /// and the copy must not be published.
    pub fn close(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            let raw = file.into_raw_fd();
            // SAFETY: `raw` was just released from the `File` that owned it and is closed once.
            unsafe { rustix::io::try_close(raw) }?;
        }
        Ok(())
    }

    /// Forces this one copy's data to stable storage (for a batch of one, where a `syncfs`
    /// would also wait for everything else written to the filesystem).
    pub fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => rustix::fs::fsync(f)?,
            None => {
                let f = rustix::fs::openat(
                    self.dir.handle()?,
                    OsStr::from_bytes(&self.temp),
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?;
                rustix::fs::fsync(&f)?;
            }
        }
        Ok(())
    }

    /// The folder this copy will be published in.
    pub fn dir(&self) -> &Arc<DestDir> {
        &self.dir
    }

    /// Publishes the copy under `name`, never replacing an existing entry: `AlreadyExists` when
    /// the name is taken, and the copy stays staged for another name.
    pub fn publish(&mut self, name: &[u8]) -> io::Result<()> {
        let (from, to) = (OsStr::from_bytes(&self.temp), OsStr::from_bytes(name));
        let fd = self.dir.handle()?;
        if !NOREPLACE_UNSUPPORTED.load(Ordering::Relaxed) {
            match rustix::fs::renameat_with(fd, from, fd, to, RenameFlags::NOREPLACE) {
                Ok(()) => {
                    self.published = true;
                    return Ok(());
                }
                Err(Errno::INVAL | Errno::NOSYS) => {
                    NOREPLACE_UNSUPPORTED.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Filesystems without RENAME_NOREPLACE: a hard link fails on an existing name too.
        rustix::fs::linkat(fd, from, fd, to, AtFlags::empty())?;
        self.published = true;
        let _ = rustix::fs::unlinkat(fd, from, AtFlags::empty());
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            self.file = None;
            if let Ok(fd) = self.dir.handle() {
                let _ = rustix::fs::unlinkat(fd, OsStr::from_bytes(&self.temp), AtFlags::empty());
            }
        }
    }
}

/// Bytes copied per `copy_file_range` call; between calls, the disk starts writing what was
/// copied.
const CHUNK: usize = 32 << 20;

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting, so
/// that a big file's data is mostly on disk by the time the batch is synced, instead of all of
/// it being written during that one wait. Small files are left to the batch's sync.
fn start_writeback(out: &File, offset: u64, len: usize) {
    if offset + len as u64 >= 4 << 20 {
        // SAFETY: a plain syscall on a valid descriptor; its result is only a hint.
        unsafe {
            libc::sync_file_range(
                out.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

fn timestamps(meta: &Meta) -> Timestamps {
    let ts = |t: Time| rustix::fs::Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    };
    Timestamps {
        last_access: ts(meta.atime),
        last_modification: ts(meta.mtime),
    }
}

/// Copies extended attributes where the destination accepts them; attributes the destination
/// does not support, or that only a more privileged user may set, are left out.
fn copy_xattrs(src: &File, out: &File) -> io::Result<()> {
    let mut names = Vec::with_capacity(256);
    loop {
        names.clear();
        match rustix::fs::flistxattr(src, rustix::buffer::spare_capacity(&mut names)) {
            Ok(_) => break,
            Err(Errno::RANGE) => {
                let need = rustix::fs::flistxattr_query(src)?;
                names.reserve(need.max(names.capacity() * 2));
            }
            Err(Errno::OPNOTSUPP) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let mut value = Vec::with_capacity(256);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        loop {
            value.clear();
            match rustix::fs::fgetxattr(src, name, rustix::buffer::spare_capacity(&mut value)) {
                Ok(_) => break,
                Err(Errno::RANGE) => {
                    let need = rustix::fs::fgetxattr_query(src, name)?;
                    value.reserve(need.max(value.capacity() * 2));
                }
                Err(Errno::NODATA) => break,
                Err(e) => return Err(e.into()),
            }
        }
        match rustix::fs::fsetxattr(out, name, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(Errno::OPNOTSUPP | Errno::PERM | Errno::ACCESS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A fresh temporary name for a copy of `name`, cut to fit `NAME_MAX`.
fn temp_name(name: &[u8]) -> Vec<u8> {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
        u64::from_le_bytes(b) ^ rustix::process::getpid().as_raw_nonzero().get() as u64
    });
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    // A multiplicative hash spreads consecutive counters over the whole range.
    let r = (seed ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    let mut out = Vec::with_capacity(crate::naming::NAME_MAX);
    out.extend_from_slice(TEMP_PREFIX);
    out.extend_from_slice(format!("{r:012x}").as_bytes());
    out.push(b'.');
    let room = crate::naming::NAME_MAX - out.len();
    out.extend_from_slice(&name[..name.len().min(room)]);
    out
}

/// Whether `name` has the shape of one of our temporary files.
pub fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    rest.len() > TEMP_RANDOM_LEN
        && rest[..TEMP_RANDOM_LEN]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && rest[TEMP_RANDOM_LEN] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_never_versions() {
        let t = temp_name(b"report.txt");
        assert!(is_temp_name(&t), "{}", String::from_utf8_lossy(&t));
        assert!(t.ends_with(b".report.txt"));
        assert_eq!(crate::naming::version_of(b"report.txt", &t), None);
        assert_ne!(temp_name(b"a"), temp_name(b"a"));
        assert!(!is_temp_name(b".backup-tmp.zz.report.txt"));
        assert!(!is_temp_name(b"report.txt"));
    }

    #[test]
    fn temp_names_fit_name_max() {
        let long = vec![b'x'; 255];
        let t = temp_name(&long);
        assert_eq!(t.len(), crate::naming::NAME_MAX);
        assert!(is_temp_name(&t));
    }
}
