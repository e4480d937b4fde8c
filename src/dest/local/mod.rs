//! The local filesystem as a destination: any mounted folder.
//!
//! All operations are relative to folder handles opened without following symlinks, so that
//! nothing planted in the destination (a symlink where a folder was) can redirect a write outside
//! it, and a destination that is unmounted mid-run keeps receiving writes on the filesystem that
//! was checked, never on the bare mount point. Files are written under a temporary name that the
//! naming rule never matches, made durable, given their metadata, and only then published under
//! their final name with a call that fails rather than replaces.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use rustix::fs::{AtFlags, FlockOperation, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

mod staged;

use self::staged::{
    LocalStaged, Unnamed, copy_xattrs, link_open, open_unnamed, rename_free, timestamps,
};
use super::identity::{self, Identity};
use super::{Capabilities, Destination, Folder, OpenError, Opened, Publish, Staged, Unavailable};
use crate::meta::{Kind, Meta, Time};

/// A local destination folder. A run that writes holds it open and locked while it writes; in
/// `watch`, between batches, it holds nothing on it (`release`), so that it can be ejected.
pub(crate) struct Local {
    /// `None` when released, and when opened read-only and the folder does not exist.
    root: RwLock<Option<OwnedFd>>,
    path: PathBuf,
    /// The folder as last seen to be this destination.
    seen: Mutex<Seen>,
    /// What the folder is, for a run that writes; `None` for one that only reads.
    identity: Option<Identity>,
    caps: Capabilities,
    ctx: Arc<Ctx>,
}

/// The device and inode of the destination folder when it was last checked to be the
/// destination, and the mount table's generation then: while all three stay, it still is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    dev: u64,
    ino: u64,
    mounts: u64,
}

/// What every folder handle of one destination shares.
#[derive(Debug)]
struct Ctx {
    as_root: bool,
    caps: Capabilities,
    /// What a new file gets without being asked: its mode is masked by the umask (`None`: not
    /// known, so the mode is always set), its owner is the effective user and, outside a setgid
    /// folder, group. Where a copy's metadata already is that, the call is left out.
    umask: Option<u32>,
    euid: u32,
    egid: u32,
    /// How a copy written as an unnamed file (`O_TMPFILE`) gets its name, where it can.
    unnamed: Unnamed,
    /// The publishing method in use (`Publish` as a number): the probe's answer, moved on to
    /// the next method when a call says the filesystem lacks this one.
    method: AtomicU8,
    /// Whether `syncfs` makes the filesystem durable. The kernel does not pass it on to a FUSE
    /// driver (ntfs-3g, exfat-fuse, sshfs): there every file and folder is synced on its own.
    syncfs: bool,
    /// The folders whose entries changed since names were last made durable, by inode.
    changed: Mutex<HashMap<u64, OwnedFd>>,
}

/// Beyond this many changed folders, one `syncfs` is cheaper than an `fsync` of each (where it
/// works); without one, they are synced as they come, so that few handles stay open.
const CHANGED_MAX: usize = 8;

/// FUSE's `statfs` magic: the kernel keeps `syncfs` to itself on such a filesystem.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

impl Ctx {
    /// Remembers that the folder `fd` (inode `ino`) gained or lost a name, for `sync_names`;
    /// where it cannot (no handle left to keep), makes its names durable at once.
    fn changed(&self, fd: &OwnedFd, ino: u64) -> io::Result<()> {
        let remembered = (|| -> io::Result<()> {
            let mut changed = self.changed.lock().unwrap_or_else(PoisonError::into_inner);
            if changed.contains_key(&ino) {
                return Ok(());
            }
            if !self.syncfs && changed.len() >= 256 {
                for (_, dir) in changed.drain() {
                    rustix::fs::fsync(&dir)?;
                }
            }
            changed.insert(ino, rustix::io::fcntl_dupfd_cloexec(fd, 0)?);
            Ok(())
        })();
        if remembered.is_err() {
            rustix::fs::fsync(fd)?;
        }
        Ok(())
    }

    fn method(&self) -> Publish {
        match self.method.load(Ordering::Relaxed) {
            0 => Publish::RenameNoReplace,
            1 => Publish::HardLink,
            _ => Publish::CheckThenRename,
        }
    }

    fn fall_back(&self, from: Publish) {
        let next = match from {
            Publish::RenameNoReplace | Publish::Unknown => 1,
            // The last two are a store's, never a folder's.
            Publish::HardLink
            | Publish::CheckThenRename
            | Publish::CreateOnly
            | Publish::UniqueNames => 2,
        };
        self.method.fetch_max(next, Ordering::Relaxed);
    }
}

impl Local {
    /// Opens the existing folder `path` to write into, takes an exclusive lock on it so that
    /// two runs never write into one destination at once (each would take the other's temporary
    /// files for a crash's leftovers), and probes what it can hold.
    pub(crate) fn open(path: &Path) -> Result<Local, OpenError> {
        let root = open_root(path).map_err(OpenError::Open)?;
        rustix::fs::access(
            path,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .map_err(|e| OpenError::NotWritable(e.into()))?;
        lock(&root).map_err(|_| OpenError::Locked)?;
        let identity = identity::of(path).map_err(OpenError::Open)?;
        let as_root = rustix::process::geteuid().is_root();
        let caps = super::probe::probe(&root, as_root);
        Local::with(Some(root), path, caps, as_root, Some(identity)).map_err(OpenError::Open)
    }

    /// Opens `path` to read only: nothing is created, locked, probed or written; a missing folder
    /// reads as empty. With `exclusive`, the open still fails while a backup is writing into it.
    pub(crate) fn open_read_only(path: &Path, exclusive: bool) -> Result<Local, OpenError> {
        let root = match open_root(path) {
            Ok(fd) => Some(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(OpenError::Open(e)),
        };
        if let (true, Some(fd)) = (exclusive, &root)
            && lock(fd).is_err()
        {
            return Err(OpenError::Locked);
        }
        let kind = root
            .as_ref()
            .map_or_else(String::new, super::probe::fs_name);
        let mut caps = Capabilities::assumed(kind);
        if let Some(fd) = &root {
            super::probe::observe(fd, &mut caps);
        }
        let as_root = rustix::process::geteuid().is_root();
        Local::with(root, path, caps, as_root, None).map_err(OpenError::Open)
    }

    fn with(
        root: Option<OwnedFd>,
        path: &Path,
        mut caps: Capabilities,
        as_root: bool,
        identity: Option<Identity>,
    ) -> io::Result<Local> {
        let seen = match &root {
            Some(fd) => {
                let st = rustix::fs::fstat(fd)?;
                Seen {
                    dev: st.st_dev,
                    ino: st.st_ino,
                    mounts: identity::mount_generation(),
                }
            }
            None => Seen {
                dev: 0,
                ino: 0,
                mounts: 0,
            },
        };
        let unnamed = match (&root, &identity) {
            (Some(fd), Some(_)) => Unnamed::probe(fd),
            _ => Unnamed::No,
        };
        caps.unnamed = unnamed != Unnamed::No;
        let syncfs = root
            .as_ref()
            .is_none_or(|fd| rustix::fs::fstatfs(fd).is_ok_and(|st| st.f_type != FUSE_SUPER_MAGIC));
        if !syncfs {
            // Each copy is synced on its own, before it is named.
            caps.group_commit = false;
        }
        let method = match caps.publish {
            Publish::RenameNoReplace | Publish::Unknown => 0,
            Publish::HardLink => 1,
            Publish::CheckThenRename | Publish::CreateOnly | Publish::UniqueNames => 2,
        };
        Ok(Local {
            root: RwLock::new(root),
            path: path.to_path_buf(),
            seen: Mutex::new(seen),
            identity,
            caps: caps.clone(),
            ctx: Arc::new(Ctx {
                as_root,
                caps,
                umask: umask(),
                euid: rustix::process::geteuid().as_raw(),
                egid: rustix::process::getegid().as_raw(),
                unnamed,
                method: AtomicU8::new(method),
                syncfs,
                changed: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn folder_at(&self, fd: OwnedFd, rel: &Path) -> Arc<dyn Folder> {
        Arc::new(LocalFolder(Arc::new(Inner {
            fd,
            path: self.path.join(rel),
            ctx: Arc::clone(&self.ctx),
            fresh: OnceLock::new(),
            ino: OnceLock::new(),
        })))
    }

    fn root(&self) -> std::sync::RwLockReadGuard<'_, Option<OwnedFd>> {
        self.root
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Takes the destination's lock; `Err` when another run holds it. Filesystems without `flock`
/// (some network ones) still get a backup.
fn lock(root: &OwnedFd) -> Result<(), ()> {
    match rustix::fs::flock(root, FlockOperation::NonBlockingLockExclusive) {
        Err(Errno::WOULDBLOCK) => Err(()),
        _ => Ok(()),
    }
}

fn released() -> io::Error {
    io::Error::other("the destination is not open between batches")
}

impl Destination for Local {
    fn path(&self) -> &Path {
        &self.path
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn folder(&self, rel: &Path) -> io::Result<Option<Arc<dyn Folder>>> {
        let guard = self.root();
        let Some(root) = guard.as_ref() else {
            if self.identity.is_some() {
                return Err(released());
            }
            return Ok(None);
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
                    match rustix::fs::openat(&fd, name, flags, Mode::empty()) {
                        Ok(next) => fd = next,
                        Err(Errno::NOENT) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
                fd
            }
            Err(Errno::NOENT) => return Ok(None),
            other => other?,
        };
        Ok(Some(self.folder_at(fd, rel)))
    }

    fn still_there(&self) -> Result<(), Unavailable> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let st = rustix::fs::stat(&self.path).map_err(|e| Unavailable::Gone(e.into()))?;
        let now = Seen {
            dev: st.st_dev,
            ino: st.st_ino,
            mounts: identity::mount_generation(),
        };
        if now == *self.seen() {
            return Ok(());
        }
        // Mounted again, or something else mounted: only the volume's own id can tell.
        let found = identity::of(&self.path).map_err(Unavailable::Gone)?;
        if found != *identity {
            return Err(Unavailable::Replaced {
                now: found.describe(),
                was: identity.describe(),
            });
        }
        *self.seen() = now;
        Ok(())
    }

    fn release(&self) {
        *self
            .root
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn reacquire(&self) -> Result<(), Unavailable> {
        if self.identity.is_none() || self.root().is_some() {
            return Ok(());
        }
        self.still_there()?;
        let root = open_root(&self.path).map_err(Unavailable::Gone)?;
        lock(&root).map_err(|()| Unavailable::Locked)?;
        // Opened by path after the check: make sure it is the folder that was checked.
        let st = rustix::fs::fstat(&root).map_err(|e| Unavailable::Gone(e.into()))?;
        let seen = *self.seen();
        if (st.st_dev, st.st_ino) != (seen.dev, seen.ino) {
            return Err(Unavailable::Gone(io::Error::other(
                "it changed while being opened",
            )));
        }
        *self
            .root
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(root);
        Ok(())
    }

    fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.path).ok()?;
        // Some FUSE drivers (fusefat) say nothing of their size: unknown, not "none free".
        if st.f_blocks == 0 {
            return None;
        }
        // Root may write into the blocks a filesystem keeps back from other users.
        let blocks = if rustix::process::geteuid().is_root() {
            st.f_bfree
        } else {
            st.f_bavail
        };
        Some(blocks.saturating_mul(st.f_frsize))
    }

    fn total_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.path).ok()?;
        (st.f_blocks > 0).then(|| st.f_blocks.saturating_mul(st.f_frsize))
    }

    fn sync_all(&self) -> io::Result<()> {
        let guard = self.root();
        let root = guard.as_ref().ok_or_else(released)?;
        if !self.ctx.syncfs {
            // Files were synced one by one; the names are what is left.
            drop(guard);
            return self.sync_names();
        }
        let mut changed = self
            .ctx
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        rustix::fs::syncfs(root)?;
        changed.clear();
        Ok(())
    }

    fn sync_names(&self) -> io::Result<()> {
        // Held while syncing: a caller that finds nothing left to sync must not go on (and say
        // its copies are made) while another still syncs the folders that hold them.
        let mut changed = self
            .ctx
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.ctx.syncfs && changed.len() > CHANGED_MAX {
            let guard = self.root();
            let root = guard.as_ref().ok_or_else(released)?;
            rustix::fs::syncfs(root)?;
            changed.clear();
            return Ok(());
        }
        // A folder whose sync fails stays listed: the next caller tries it again rather than
        // taking its names for durable.
        let mut failed = None;
        changed.retain(|_, dir| match rustix::fs::fsync(&*dir) {
            Ok(()) => false,
            Err(e) => {
                failed.get_or_insert(e);
                true
            }
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// One open folder in the destination; cheap to share with the copies staged in it.
#[derive(Clone)]
struct LocalFolder(Arc<Inner>);

struct Inner {
    fd: OwnedFd,
    path: PathBuf,
    ctx: Arc<Ctx>,
    /// What a new file in this folder gets, looked up at the first copy.
    fresh: OnceLock<Option<Fresh>>,
    /// Its inode, looked up the first time it gains a name: not once per copy.
    ino: OnceLock<u64>,
}

impl LocalFolder {
    fn fd(&self) -> &OwnedFd {
        &self.0.fd
    }

    /// Says that this folder gained or lost a name (see `Ctx::changed`).
    pub(super) fn changed(&self) -> io::Result<()> {
        let ino = match self.0.ino.get() {
            Some(&ino) => ino,
            None => match rustix::fs::fstat(self.fd()) {
                Ok(st) => *self.0.ino.get_or_init(|| st.st_ino),
                // Nothing to remember it by: its names are made durable now.
                Err(_) => return Ok(rustix::fs::fsync(self.fd())?),
            },
        };
        self.0.ctx.changed(self.fd(), ino)
    }

    /// Starts a copy, unnamed where `unnamed` and the filesystem allow, else under a temporary
    /// name. Created with the copy's mode where that is safe, so that it need not be set again:
    /// never writable by others, who could change it before it is published.
    fn stage_as(&self, name: &[u8], mode: u32, unnamed: bool) -> io::Result<Box<dyn Staged>> {
        let create = mode & 0o755;
        let fresh = self.fresh();
        let staged = |file: OwnedFd, temp: Option<Vec<u8>>| -> Box<dyn Staged> {
            Box::new(LocalStaged {
                dir: self.clone(),
                temp,
                file: Some(File::from(file)),
                times: None,
                published: false,
                mode: fresh.and_then(|f| f.umask).map(|umask| create & !umask),
                group: fresh.map(|f| f.group),
            })
        };
        if unnamed && let Ok(fd) = open_unnamed(self.fd(), create) {
            return Ok(staged(fd, None));
        }
        loop {
            let temp = super::temp_name(name);
            match rustix::fs::openat(
                self.fd(),
                OsStr::from_bytes(&temp),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(create),
            ) {
                Ok(fd) => return Ok(staged(fd, Some(temp))),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// What a file created here gets without being asked; `None` when the folder cannot be
    /// looked at.
    fn fresh(&self) -> Option<Fresh> {
        *self.0.fresh.get_or_init(|| {
            let st = rustix::fs::fstat(self.fd()).ok()?;
            let group = if st.st_mode & libc::S_ISGID != 0 {
                st.st_gid
            } else {
                self.0.ctx.egid
            };
            // A default ACL takes the umask's place in shaping a new file's mode.
            let acl = rustix::fs::fgetxattr_query(self.fd(), "system.posix_acl_default")
                .is_ok_and(|n| n > 0);
            Some(Fresh {
                group,
                umask: if acl { None } else { self.0.ctx.umask },
            })
        })
    }
}

/// What a new file in a folder gets: its group, and the umask that shapes its mode (`None`
/// where that is not known, so the mode is always set).
#[derive(Clone, Copy, Debug)]
struct Fresh {
    group: u32,
    umask: Option<u32>,
}

/// The process's umask, read where it can be without changing it (Linux 4.7 and later).
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

impl Folder for LocalFolder {
    fn path(&self) -> &Path {
        &self.0.path
    }

    fn child(&self, name: &OsStr, create: bool) -> io::Result<Option<Opened>> {
        // Owner-writable until the pass ends, so that its contents can be written even when the
        // source folder is read-only; the source's mode is applied in `set_meta`.
        let created = create
            && match rustix::fs::mkdirat(self.fd(), name, Mode::from_raw_mode(0o700)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(e.into()),
            };
        if created {
            self.changed()?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let mut opened = rustix::fs::openat(self.fd(), name, flags, Mode::empty());
        let as_owner = create && !self.0.ctx.as_root;
        if as_owner && matches!(opened, Err(Errno::ACCESS)) {
            // A folder mirrored from an unreadable source folder: its owner opens it up for
            // the time of the pass; its mode is put back when the pass finishes it.
            let mode = self.stat(name.as_bytes())?.mode;
            rustix::fs::chmodat(
                self.fd(),
                name,
                Mode::from_raw_mode(mode | 0o700),
                AtFlags::empty(),
            )?;
            opened = rustix::fs::openat(self.fd(), name, flags, Mode::empty());
        }
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let what = match self.stat(name.as_bytes()) {
                    Ok(m) if m.kind == Kind::Symlink => "a symlink",
                    _ => "a file",
                };
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{what} is in the way of a folder"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let mut meta = Meta::from_stat(&rustix::fs::fstat(&fd)?);
        if as_owner && meta.mode & 0o700 != 0o700 {
            // A read-only mirrored folder still takes new versions, as rsync does it: owner
            // access for the time of the pass, the mode put back when the pass finishes it.
            meta.mode |= 0o700;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode))?;
        }
        let folder = Arc::new(LocalFolder(Arc::new(Inner {
            fd,
            path: self.0.path.join(name),
            ctx: Arc::clone(&self.0.ctx),
            fresh: OnceLock::new(),
            ino: OnceLock::new(),
        })));
        Ok(Some(Opened {
            folder,
            created,
            meta,
        }))
    }

    fn meta(&self) -> io::Result<Meta> {
        Ok(Meta::from_stat(&rustix::fs::fstat(self.fd())?))
    }

    fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(crate::meta::read_folder(self.fd())?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// From the entry types of the listing; a stat only where the filesystem gives none.
    fn subfolders(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(crate::meta::read_folder(self.fd())?
            .into_iter()
            .filter(|(name, kind)| match kind {
                Kind::Unknown => self.stat(name).is_ok_and(|m| m.kind == Kind::Dir),
                k => *k == Kind::Dir,
            })
            .map(|(name, _)| name)
            .collect())
    }

    fn stat(&self, name: &[u8]) -> io::Result<Meta> {
        let st = rustix::fs::statat(
            self.fd(),
            OsStr::from_bytes(name),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(Meta::from_stat(&st))
    }

    fn entry(&self, name: &[u8]) -> io::Result<(Meta, Option<Time>)> {
        use rustix::fs::StatxFlags;
        let x = rustix::fs::statx(
            self.fd(),
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
            dev: u64::from(x.stx_dev_major) << 32 | u64::from(x.stx_dev_minor),
            ino: x.stx_ino,
        };
        let born = (x.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| t(x.stx_btime));
        Ok((meta, born))
    }

    fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(self.fd(), OsStr::from_bytes(name), Vec::new())?.into_bytes())
    }

    fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            self.fd(),
            OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    fn remove(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::unlinkat(self.fd(), OsStr::from_bytes(name), AtFlags::empty())?;
        self.changed()
    }

    fn remove_leftover(&self, name: &[u8]) -> io::Result<()> {
        debug_assert!(super::is_temp_name(name));
        match self.stat(name) {
            // The probe's symlink, left by a run killed while probing, too; never a folder.
            Ok(m) if matches!(m.kind, Kind::File | Kind::Symlink) => self.remove(name),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn stage(&self, name: &[u8], mode: u32) -> io::Result<Box<dyn Staged>> {
        self.stage_as(name, mode, self.0.ctx.unnamed != Unnamed::No)
    }

    /// SQLite resolves the `/proc/self/fd/N` path it is given and opens what it points to, which
    /// for an unnamed file is a name that does not exist: such a copy gets a temporary name.
    fn stage_by_path(&self, name: &[u8], mode: u32) -> io::Result<Box<dyn Staged>> {
        self.stage_as(name, mode, false)
    }

    fn symlink(&self, target: &[u8], name: &[u8], meta: &Meta) -> io::Result<()> {
        let name = OsStr::from_bytes(name);
        rustix::fs::symlinkat(OsStr::from_bytes(target), self.fd(), name)?;
        self.changed()?;
        let caps = &self.0.ctx.caps;
        if !caps.symlink_meta {
            // Setting them would follow the link (SFTP has no call for the link itself): the
            // link keeps its target, and nothing outside it is touched.
            return Ok(());
        }
        let done = (|| -> io::Result<()> {
            if caps.owners {
                rustix::fs::chownat(
                    self.fd(),
                    name,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            rustix::fs::utimensat(
                self.fd(),
                name,
                &timestamps(meta),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            Ok(())
        })();
        if let Err(e) = done {
            // A symlink without its metadata would be taken as unchanged forever; remove it so
            // that the next pass tries again.
            let _ = rustix::fs::unlinkat(self.fd(), name, AtFlags::empty());
            return Err(e);
        }
        Ok(())
    }

    fn set_meta(&self, meta: &Meta) -> io::Result<()> {
        let caps = &self.0.ctx.caps;
        if caps.owners {
            rustix::fs::fchown(
                self.fd(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        if caps.permissions {
            rustix::fs::fchmod(self.fd(), Mode::from_raw_mode(meta.mode))?;
        }
        rustix::fs::futimens(self.fd(), &timestamps(meta))?;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(self.fd())?;
        Ok(())
    }

    fn update_meta(&self, name: &[u8], meta: &Meta, src: &File, times: bool) -> io::Result<()> {
        let caps = &self.0.ctx.caps;
        let mut out = self.open_read(name)?;
        if rustix::fs::fstat(&out)?.st_nlink > 1 {
            out = self.unshare(name, &out)?;
        }
        let times = if times {
            timestamps(meta)
        } else {
            timestamps(&Meta::from_stat(&rustix::fs::fstat(&out)?))
        };
        if caps.owners {
            rustix::fs::fchown(
                &out,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        if caps.permissions {
            rustix::fs::fchmod(&out, Mode::from_raw_mode(meta.mode))?;
        }
        if caps.xattrs {
            let wanted = crate::meta::xattrs(src)?;
            for (stale, _) in crate::meta::xattrs(&out)? {
                if !wanted.contains_key(&stale) {
                    let _ = rustix::fs::fremovexattr(&out, OsStr::from_bytes(&stale));
                }
            }
            copy_xattrs(src, &out)?;
        }
        // Setting attributes leaves the modification time as it was (or as asked); the access
        // time is put back too.
        rustix::fs::futimens(&out, &times)?;
        Ok(())
    }

    fn create_empty(&self, name: &[u8]) -> io::Result<()> {
        let fd = rustix::fs::openat(
            self.fd(),
            OsStr::from_bytes(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        // SAFETY: `fd` is released from the `OwnedFd` that owned it and closed once.
        unsafe { rustix::io::try_close(fd.into_raw_fd()) }?;
        self.changed()
    }

    fn set_aside(&self, name: &[u8], to: &[u8]) -> io::Result<()> {
        rename_free(self.fd(), &self.0.ctx, name, to)?;
        self.changed()
    }

    fn link(&self, from: &super::Elsewhere, name: &[u8]) -> io::Result<()> {
        link_open(from.file, self.fd(), name)?;
        self.changed()
    }
}

impl LocalFolder {
    /// Gives the file `name`, whose inode has other names (a moved file's copy is a hard link
    /// to the copy at the old place), an inode of its own with the same bytes and metadata, so
    /// that a change of metadata reaches this name only, never an older version. The copy is
    /// made under a temporary name and synced, then renamed over `name`: the one rename that
    /// replaces, and it replaces a name by the same bytes while the other names keep the inode.
    fn unshare(&self, name: &[u8], shared: &File) -> io::Result<File> {
        let ctx = &self.0.ctx;
        let st = rustix::fs::fstat(shared)?;
        let temp = super::temp_name(name);
        let fd = rustix::fs::openat(
            self.fd(),
            OsStr::from_bytes(&temp),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )?;
        let file = File::from(fd);
        let made = (|| -> io::Result<()> {
            super::contents::copy(shared, &file, st.st_size as u64)?;
            if ctx.caps.owners {
                rustix::fs::fchown(
                    &file,
                    Some(Uid::from_raw(st.st_uid)),
                    Some(Gid::from_raw(st.st_gid)),
                )?;
            }
            rustix::fs::fchmod(&file, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            if ctx.caps.xattrs {
                copy_xattrs(shared, &file)?;
            }
            rustix::fs::futimens(&file, &timestamps(&Meta::from_stat(&st)))?;
            rustix::fs::fsync(&file)?;
            rustix::fs::renameat(
                self.fd(),
                OsStr::from_bytes(&temp),
                self.fd(),
                OsStr::from_bytes(name),
            )?;
            rustix::fs::fsync(self.fd())?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = rustix::fs::unlinkat(self.fd(), OsStr::from_bytes(&temp), AtFlags::empty());
            return Err(e);
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_folder_answers_from_its_probe_and_keeps_nothing_of_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = Local::open(tmp.path()).expect("open");
        let caps = dest.capabilities();
        // The test folder is on ext4, XFS, Btrfs or tmpfs: nanosecond times, every feature.
        assert_eq!(caps.precision, Some(1), "{caps:?}");
        assert_eq!(caps.publish, Publish::RenameNoReplace, "{caps:?}");
        assert!(
            caps.symlinks && caps.permissions && caps.case_sensitive,
            "{caps:?}"
        );
        assert_eq!(caps.owners, rustix::process::geteuid().is_root());
        assert!(!caps.kind.is_empty());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("list").collect();
        assert!(left.is_empty(), "the probe left {left:?}");
    }

    #[test]
    fn a_read_only_open_writes_nothing_and_assumes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("not-yet");
        let dest = Local::open_read_only(&missing, false).expect("open");
        assert!(!missing.exists());
        assert_eq!(dest.capabilities().precision, None);
        assert!(dest.folder(Path::new("")).expect("folder").is_none());
    }

    #[test]
    fn a_second_writer_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let _first = Local::open(tmp.path()).expect("open");
        assert!(matches!(Local::open(tmp.path()), Err(OpenError::Locked)));
    }

    #[test]
    fn a_name_is_never_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = Local::open(tmp.path()).expect("open");
        std::fs::write(tmp.path().join("a"), b"old").expect("write");
        let root = dest.folder(Path::new("")).expect("open").expect("root");
        let mut staged = root.stage(b"a", 0o644).expect("stage");
        let src = File::open(tmp.path().join("a")).expect("open a");
        assert_eq!(staged.copy_from(&src, 3).expect("copy"), 3);
        staged.close().expect("close");
        let e = staged.publish(b"a").expect_err("taken");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        staged.publish(b"a_1").expect("free");
        assert_eq!(std::fs::read(tmp.path().join("a")).expect("read"), b"old");
    }
}
