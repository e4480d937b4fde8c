//! `backup mount`: DST as a read-only filesystem of its past (FUSE). Its top holds
//! - `latest/`: the tree as it is now (each file's newest copy under its own name, deleted files
//!   left out);
//! - `at/TIME/`: the tree as of each time something was captured, exactly what `restore --at`
//!   writes (`restore::one_folder_at` decides both);
//! - `versions/PATH/`: every version of each file, under its name in DST, the records of its
//!   deletion as the empty files they are.
//!
//! With `--at TIME` the mount point is that one tree. Reads go straight to the copies in DST; a
//! folder is listed when it is looked at, never before, so mounting takes no time whatever the
//! size of DST, and memory follows what the kernel keeps of what was browsed (see `inodes`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use self::inodes::{Inodes, LATEST, Node, ROOT, UNKNOWN_INO};
use super::restore::{one_folder_at, own_cut};
use super::{Archive, reporter};
use crate::config::MountJob;
use crate::error::{About, Error, Status, Why};
use crate::history;
use crate::meta::{Kind, Meta};
use crate::naming;
use crate::report::Message;

mod inodes;

/// How long the kernel may keep what it was told: short, since `latest/` moves while a
/// `watch` writes into DST.
const TTL: Duration = Duration::from_secs(1);

/// Names in the listings kept at once, and attributes kept at once; beyond, some are dropped
/// and read again when needed, so that memory stays bounded whatever DST holds. A listing is
/// there for the `readdir` calls that follow it (a folder is sent in pages) and the lookups
/// after them: a folder longer than this is still kept, alone. The kernel keeps what it was
/// told for `TTL` anyway, so these need not be large.
const NAMES_KEPT: usize = 8_192;
const ATTRS_KEPT: usize = 8_192;

/// A folder of the mount as listed.
struct Listing {
    /// The folder of DST its copies are in.
    rel: PathBuf,
    children: Vec<Child>,
}

/// One name in a folder of the mount.
struct Child {
    name: Box<OsStr>,
    kind: FileType,
    what: What,
}

/// What a name in a listing stands for. A copy has no number in a listing: it is given one
/// when the kernel is told of it, since a number the kernel has forgotten goes to something
/// else (see `Inodes`), and a listing kept would hand out the old one.
enum What {
    /// A folder of the mount: folders keep their numbers for the life of the mount.
    Folder(u64),
    /// A copy in the listing's folder of DST, by its name there, with its attributes as the
    /// listing found them.
    Copy {
        version: Box<[u8]>,
        attr: Option<FileAttr>,
    },
    /// `versions/REL/NAME/`, the folder of one file's versions.
    VersionsOf(Box<[u8]>),
}

impl Child {
    /// Its name in the listing's folder of DST, and whether it is the folder of that file's
    /// versions, where it has no number of its own for the life of the mount.
    fn leaf(&self) -> Option<(&[u8], bool)> {
        match &self.what {
            What::Folder(_) => None,
            What::Copy { version, .. } => Some((version, false)),
            What::VersionsOf(name) => Some((name, true)),
        }
    }
}

/// Inode numbers for the nodes met so far, and the listings read lately.
#[derive(Default)]
struct Table {
    inodes: Inodes,
    /// Each with when it was read: a listing of what moves while a `watch` writes into DST
    /// (`latest/`, `versions/`) is read again after `TTL`.
    listings: HashMap<u64, (Instant, Arc<Listing>)>,
    /// The names in `listings`, in all.
    listed: usize,
    attrs: HashMap<u64, FileAttr>,
    /// Folders of DST, open: each lookup and read in a folder would open it again otherwise.
    folders: HashMap<PathBuf, Arc<dyn crate::dest::Folder>>,
    /// Copies open for reads through this process, by inode, each with when it was last read.
    copies: HashMap<u64, (Instant, Arc<File>)>,
}

impl Table {
    /// Keeps the listing of `ino`, dropping others, whichever, to keep within `NAMES_KEPT`.
    fn keep_listing(&mut self, ino: u64, list: Arc<Listing>) {
        self.drop_listing(ino);
        while self.listed + list.children.len() > NAMES_KEPT {
            let Some(&other) = self.listings.keys().next() else {
                break;
            };
            self.drop_listing(other);
        }
        self.listed += list.children.len();
        self.listings.insert(ino, (Instant::now(), list));
    }

    fn drop_listing(&mut self, ino: u64) {
        if let Some((_, old)) = self.listings.remove(&ino) {
            self.listed -= old.children.len();
        }
    }

    fn keep_attr(&mut self, ino: u64, attr: FileAttr) {
        make_room(&mut self.attrs, ATTRS_KEPT);
        self.attrs.insert(ino, attr);
    }

    /// The kernel has forgotten `ino` `n` times; once it holds it no more, what is kept for it
    /// goes, and its number is given to something else. The kernel forgets nothing that it
    /// is reading, so no read is under way of a copy that goes.
    fn release(&mut self, ino: u64, n: u64) {
        if self.inodes.release(ino, n) {
            self.attrs.remove(&ino);
            self.copies.remove(&ino);
        }
    }
}

/// Folders of DST kept open at once: each holds a file descriptor, and the soft limit on them is
/// often 1,024.
const FOLDERS_KEPT: usize = 256;

/// Copies kept open for reads through this process (see `View::copy`).
const COPIES_KEPT: usize = 32;

/// Makes room in a cache that has reached `kept`: drops an eighth of it, whichever.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(cache: &mut HashMap<K, V>, kept: usize) {
    if cache.len() >= kept {
        let drop: Vec<K> = cache.keys().take(kept / 8).cloned().collect();
        for k in drop {
            cache.remove(&k);
        }
    }
}

/// The times in `at/`, with when they were found and how long that took.
struct Times {
    found: Instant,
    took: Duration,
    all: Arc<Vec<u64>>,
}

/// The capture times found in one folder of DST, and the folder's modification time then.
struct Captured {
    mtime: crate::meta::Time,
    times: Arc<[u64]>,
}

/// The most a filesystem rounds a modification time by (FAT: 2 s), and more.
const COARSEST: Duration = Duration::from_secs(3);

/// Whether what a listing of a folder of DST found may stand for a new listing for as long as
/// the folder's modification time stays `mtime` (a name added, removed or renamed in it changes
/// that): only when every capture time in it is a birth time (a change time moves without the
/// folder changing), and when `mtime` is older than the listing by more than any filesystem
/// rounds times, so that a change right after the listing cannot leave it the same (git's
/// rule for racy entries).
fn keepable(mtime: crate::meta::Time, listed: SystemTime, every_born: bool) -> bool {
    every_born && system_time(mtime) + COARSEST < listed
}

struct View {
    archive: Archive,
    root: Node,
    table: Mutex<Table>,
    times: Mutex<Option<Times>>,
    /// What the last walk for `at/` found in each folder of DST that it may keep (`keepable`);
    /// over a remote store, nothing.
    captured: Mutex<Arc<HashMap<PathBuf, Captured>>>,
    /// Copies handed to the kernel (FUSE passthrough), each held until its release.
    handed: Mutex<HashMap<u64, BackingId>>,
    next_fh: AtomicU64,
    /// Whether reads may be handed to the kernel: the kernel offers it (Linux 6.9 and later)
    /// and this process may use it (it needs `CAP_SYS_ADMIN`). Found out when mounting and at
    /// the first open; turned off at the first refusal.
    passthrough: AtomicBool,
    /// When it was mounted: the times of the folders it makes up.
    mounted: SystemTime,
    /// The owner of the folders it makes up: whoever mounted it.
    owner: (u32, u32),
}

/// `backup mount DST MOUNTPOINT [--at TIME]`
pub(crate) fn run(args: &MountJob) -> Status {
    let mut out = reporter(false, false, false);
    match mount(args, &mut out) {
        Ok(()) => Status::Success,
        Err(e) => {
            out.error(&e);
            Status::Failure
        }
    }
}

fn mount(args: &MountJob, out: &mut crate::report::Reporter) -> Result<(), Error> {
    let archive = Archive::open(&args.dst, false)?;
    let at_mountpoint = |why| Error::new(About::Path(args.mountpoint.clone()), why);
    // Over a folder with things in it, they would be hidden while it is mounted.
    match std::fs::read_dir(&args.mountpoint).map(|mut entries| entries.next().is_none()) {
        Ok(true) => {}
        Ok(false) => return Err(at_mountpoint(Why::NotEmpty)),
        Err(e) => return Err(at_mountpoint(Why::Io(e))),
    }
    let root = match &args.at {
        Some(when) => {
            let at = naming::stamp_of(&history::parse_when(when, chrono::Local::now())?);
            Node::Tree {
                at,
                rel: PathBuf::new(),
                cut: own_cut(&archive, Path::new(""), at),
            }
        }
        None => Node::Top,
    };
    let view = View {
        archive,
        root,
        table: Mutex::new(Table::default()),
        times: Mutex::new(None),
        captured: Mutex::new(Arc::new(HashMap::new())),
        handed: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        passthrough: AtomicBool::new(false),
        mounted: SystemTime::now(),
        owner: (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("backup".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    // Reads of many small files wait on the kernel's round trips: more than one at a time.
    config.n_threads = Some(4);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| at_mountpoint(Why::Io(e)))?;
    }
    // Where /dev/fuse cannot be opened, fuser's error would name the mount point instead.
    let device = Path::new("/dev/fuse");
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        return Err(Error::new(About::Path(device.to_path_buf()), Why::Io(e)));
    }
    let session = fuser::spawn_mount(view, &args.mountpoint, &config)
        .map_err(|e| at_mountpoint(Why::Io(e)))?;
    out.say(&Message::Mounted {
        dst: &args.dst,
        mountpoint: &args.mountpoint,
    });
    // Until Ctrl-C, SIGTERM, or an unmount from outside (`fusermount3 -u`).
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if session.guard.is_finished() {
        let _ = session.join();
    } else {
        session
            .umount_and_join()
            .map_err(|e| at_mountpoint(Why::Io(e)))?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The folder name of a time in `at/`, sorted as `ls` sorts: `2026-12-06T21-05-30`.
fn time_name(stamp: u64) -> Option<String> {
    naming::naive_of(stamp).map(|t| t.format("%Y-%m-%dT%H-%M-%S").to_string())
}

fn time_of_name(name: &OsStr) -> Option<u64> {
    let t = chrono::NaiveDateTime::parse_from_str(name.to_str()?, "%Y-%m-%dT%H-%M-%S").ok()?;
    Some(naming::stamp_of(&t))
}

fn system_time(t: crate::meta::Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
    }
}

fn errno(e: &io::Error) -> Errno {
    match e.kind() {
        io::ErrorKind::NotFound => Errno::ENOENT,
        io::ErrorKind::IsADirectory => Errno::EISDIR,
        io::ErrorKind::NotADirectory => Errno::ENOTDIR,
        // A destination gone (unplugged, unmounted) or failing: an error, never a hang.
        _ => Errno::EIO,
    }
}

impl View {
    /// The number of a folder of the mount (see `Inodes::hold`).
    fn folder_ino(&self, node: &Node) -> io::Result<u64> {
        if *node == self.root {
            return Ok(ROOT);
        }
        lock(&self.table).inodes.hold(node)
    }

    fn node(&self, ino: u64) -> Option<Node> {
        if ino == ROOT {
            return Some(self.root.clone());
        }
        lock(&self.table).inodes.node(ino)
    }

    /// Every time something (a version, a record of a deletion) was captured in DST, oldest
    /// first; found when `at/` is listed, and again once `TTL` has passed, since a `watch` may
    /// add times. That reads every folder of DST: where it takes long (a million files), it is
    /// done again only after ten times as long, so that listing `at/` is not always that slow.
    /// On a local DST, a folder whose modification time has not changed since the walk before is
    /// not read again (`keepable`): a `stat` of it, not of each of its files.
    fn times(&self) -> Arc<Vec<u64>> {
        if let Some(t) = lock(&self.times).as_ref()
            && t.found.elapsed() < TTL.max(t.took * 10)
        {
            return Arc::clone(&t.all);
        }
        let start = Instant::now();
        let listed = SystemTime::now();
        let before = Arc::clone(&lock(&self.captured));
        let local = !self.archive.dest.over_network();
        let mut kept = HashMap::new();
        let mut all: Vec<u64> = Vec::new();
        for rel in self.archive.folders(Path::new("")) {
            let mtime = local
                .then(|| self.archive.folder(&rel).and_then(|f| f.meta()).ok())
                .flatten()
                .map(|m| m.mtime);
            if let (Some(mtime), Some(c)) = (mtime, before.get(&rel))
                && c.mtime == mtime
            {
                all.extend_from_slice(&c.times);
                kept.insert(
                    rel,
                    Captured {
                        mtime,
                        times: Arc::clone(&c.times),
                    },
                );
                continue;
            }
            let Ok(listing) = self.archive.listing(&rel, None) else {
                continue;
            };
            let mut times: Vec<u64> = listing
                .histories
                .iter()
                .flat_map(|h| h.versions.iter().map(|v| v.captured))
                .collect();
            times.sort_unstable();
            times.dedup();
            all.extend_from_slice(&times);
            if let Some(mtime) = mtime
                && keepable(mtime, listed, listing.every_born)
            {
                kept.insert(
                    rel,
                    Captured {
                        mtime,
                        times: times.into(),
                    },
                );
            }
        }
        *lock(&self.captured) = Arc::new(kept);
        all.sort_unstable();
        all.dedup();
        let all = Arc::new(all);
        *lock(&self.times) = Some(Times {
            found: Instant::now(),
            took: start.elapsed(),
            all: Arc::clone(&all),
        });
        all
    }

    /// What a folder of the mount holds, from the listing kept or read now.
    fn children(&self, ino: u64, node: &Node) -> io::Result<Arc<Listing>> {
        if let Some((read, kept)) = lock(&self.table).listings.get(&ino)
            && (!node.moves() || read.elapsed() < TTL)
        {
            return Ok(Arc::clone(kept));
        }
        let list = Arc::new(self.list(node)?);
        lock(&self.table).keep_listing(ino, Arc::clone(&list));
        Ok(list)
    }

    /// The folder `rel` of DST, open.
    fn folder(&self, rel: &Path) -> io::Result<Arc<dyn crate::dest::Folder>> {
        if let Some(f) = lock(&self.table).folders.get(rel) {
            return Ok(Arc::clone(f));
        }
        let f = self.archive.folder(rel)?;
        let mut t = lock(&self.table);
        make_room(&mut t.folders, FOLDERS_KEPT);
        t.folders.insert(rel.to_path_buf(), Arc::clone(&f));
        Ok(f)
    }

    /// The copy `ino`, open: kept for the reads that follow (a large file is read in many),
    /// and dropped, least lately read first, beyond `COPIES_KEPT`. A copy in a remote store is
    /// downloaded when opened, so dropping one that is still being read would download it again.
    fn copy(&self, ino: u64) -> io::Result<Arc<File>> {
        if let Some((used, f)) = lock(&self.table).copies.get_mut(&ino) {
            *used = Instant::now();
            return Ok(Arc::clone(f));
        }
        let Some(Node::Copy { rel, version }) = self.node(ino) else {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        };
        let file = Arc::new(self.folder(&rel)?.open_read(&version)?);
        let copies = &mut lock(&self.table).copies;
        if copies.len() >= COPIES_KEPT
            && let Some(&oldest) = copies
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(ino, _)| ino)
        {
            copies.remove(&oldest);
        }
        copies.insert(ino, (Instant::now(), Arc::clone(&file)));
        Ok(file)
    }

    fn list(&self, node: &Node) -> io::Result<Listing> {
        let folder = |name: &[u8], node: Node| -> io::Result<Child> {
            Ok(Child {
                name: OsStr::from_bytes(name).into(),
                kind: FileType::Directory,
                what: What::Folder(self.folder_ino(&node)?),
            })
        };
        let copy = |name: &[u8], version: &[u8], meta: Option<&Meta>| {
            // A copy never changes: what its listing found serves the kernel's look at it.
            let attr = meta.map(|m| self.shown(0, m));
            Child {
                name: OsStr::from_bytes(name).into(),
                kind: attr.map_or(FileType::RegularFile, |a| a.kind),
                what: What::Copy {
                    version: version.into(),
                    attr,
                },
            }
        };
        let (rel, children) = match node {
            Node::Top => {
                let tops = [
                    (
                        &b"latest"[..],
                        Node::Tree {
                            at: LATEST,
                            rel: PathBuf::new(),
                            cut: None,
                        },
                    ),
                    (b"at", Node::Times),
                    (
                        b"versions",
                        Node::VersionsIn {
                            rel: PathBuf::new(),
                        },
                    ),
                ];
                let children = tops
                    .into_iter()
                    .map(|(name, node)| folder(name, node))
                    .collect::<io::Result<_>>()?;
                (PathBuf::new(), children)
            }
            Node::Times => {
                let children = self
                    .times()
                    .iter()
                    .filter_map(|&at| Some((time_name(at)?, at)))
                    .map(|(name, at)| folder(name.as_bytes(), self.tree_root(at)))
                    .collect::<io::Result<_>>()?;
                (PathBuf::new(), children)
            }
            Node::Tree { at, rel, cut } => {
                let one = one_folder_at(&self.archive, rel, *at, *cut)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let files = one
                    .files
                    .iter()
                    .map(|(name, v)| Ok(copy(name, &v.name, one.metas.get(&v.name))));
                let folders = one.folders.iter().map(|(name, cut)| {
                    let node = Node::Tree {
                        at: *at,
                        rel: rel.join(OsStr::from_bytes(name)),
                        cut: *cut,
                    };
                    folder(name, node)
                });
                (
                    rel.clone(),
                    files.chain(folders).collect::<io::Result<_>>()?,
                )
            }
            Node::VersionsIn { rel } => {
                let listing = self.archive.listing(rel, None)?;
                let folders: Vec<&[u8]> =
                    listing.folders.iter().map(|f| f.name.as_slice()).collect();
                let subfolders = listing.folders.iter().map(|f| {
                    let node = Node::VersionsIn {
                        rel: rel.join(OsStr::from_bytes(&f.name)),
                    };
                    folder(&f.name, node)
                });
                let files = listing
                    .histories
                    .iter()
                    .filter(|h| h.has_copies())
                    .map(|h| {
                        // A file and a folder of one name (one became the other): the file's
                        // versions are shown beside the folder, marked.
                        let mut name = h.name.clone();
                        if folders.contains(&name.as_slice()) {
                            name.extend_from_slice(b"~file");
                        }
                        Ok(Child {
                            name: OsStr::from_bytes(&name).into(),
                            kind: FileType::Directory,
                            what: What::VersionsOf(h.name.as_slice().into()),
                        })
                    });
                (
                    rel.clone(),
                    subfolders.chain(files).collect::<io::Result<_>>()?,
                )
            }
            Node::VersionsOf { rel, name } => {
                let listing = self.archive.listing(rel, None)?;
                let h = listing
                    .histories
                    .iter()
                    .find(|h| h.name == *name)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                let children = h
                    .versions
                    .iter()
                    .map(|v| copy(&v.name, &v.name, listing.metas.get(&v.name)))
                    .collect();
                (rel.clone(), children)
            }
            Node::Copy { .. } => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
        };
        Ok(Listing { rel, children })
    }

    fn tree_root(&self, at: u64) -> Node {
        Node::Tree {
            at,
            rel: PathBuf::new(),
            cut: own_cut(&self.archive, Path::new(""), at),
        }
    }

    /// A folder that the mount makes up.
    fn made_up(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted,
            mtime: self.mounted,
            ctime: self.mounted,
            crtime: self.mounted,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// A folder or copy of DST, as DST shows it.
    fn shown(&self, ino: u64, m: &Meta) -> FileAttr {
        let kind = match m.kind {
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        FileAttr {
            size: if kind == FileType::Directory {
                0
            } else {
                m.size
            },
            blocks: m.size.div_ceil(512),
            atime: system_time(m.atime),
            mtime: system_time(m.mtime),
            ctime: system_time(m.ctime),
            crtime: system_time(m.mtime),
            kind,
            perm: (m.mode & 0o7777) as u16,
            nlink: 1,
            uid: m.uid,
            gid: m.gid,
            ..self.made_up(ino)
        }
    }

    fn attr(&self, ino: u64) -> io::Result<FileAttr> {
        if let Some(a) = lock(&self.table).attrs.get(&ino) {
            return Ok(*a);
        }
        let node = self
            .node(ino)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let attr = match node {
            Node::Top | Node::Times | Node::VersionsOf { .. } => self.made_up(ino),
            Node::Tree { rel, .. } | Node::VersionsIn { rel } => {
                self.shown(ino, &self.folder(&rel)?.meta()?)
            }
            Node::Copy { rel, version } => {
                let attr = self.shown(ino, &self.folder(&rel)?.stat(&version)?);
                lock(&self.table).keep_attr(ino, attr);
                attr
            }
        };
        Ok(attr)
    }

    /// The number and attributes of `child` of `listing`, which the kernel is about to be told
    /// of (held: see `Inodes::hold`); the attributes as the listing found them where it has
    /// them. Nothing is held when it fails (gone since it was listed).
    fn tell(&self, listing: &Listing, child: &Child) -> io::Result<(u64, FileAttr)> {
        let (name, versions_of, attr) = match &child.what {
            What::Folder(ino) => return Ok((*ino, self.attr(*ino)?)),
            What::Copy { version, attr } => (version, false, *attr),
            What::VersionsOf(name) => (name, true, None),
        };
        let ino = {
            let mut table = lock(&self.table);
            let ino = table.inodes.hold_leaf(&listing.rel, name, versions_of)?;
            if let Some(a) = attr {
                // For the `getattr` that follows once the kernel's `TTL` has passed.
                table.keep_attr(
                    ino,
                    FileAttr {
                        ino: INodeNo(ino),
                        ..a
                    },
                );
            }
            ino
        };
        let found = match attr {
            Some(a) => Ok(FileAttr {
                ino: INodeNo(ino),
                ..a
            }),
            None => self.attr(ino),
        };
        found
            .inspect_err(|_| self.untell(child, ino))
            .map(|a| (ino, a))
    }

    /// Undoes a `tell` whose answer did not reach the kernel.
    fn untell(&self, child: &Child, ino: u64) {
        if !matches!(child.what, What::Folder(_)) {
            lock(&self.table).release(ino, 1);
        }
    }

    /// The number and attributes of `name` in folder `parent`, held (see `tell`).
    fn lookup_in(&self, parent: u64, name: &OsStr) -> io::Result<(u64, FileAttr)> {
        let node = self
            .node(parent)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        // A time not listed (yet) is still there: `at/2026-12-01T00-00-00/` is the tree then.
        if node == Node::Times
            && let Some(at) = time_of_name(name)
        {
            let ino = self.folder_ino(&self.tree_root(at))?;
            return Ok((ino, self.attr(ino)?));
        }
        let listing = self.children(parent, &node)?;
        let child = listing
            .children
            .iter()
            .find(|c| &*c.name == name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        self.tell(&listing, child)
    }

    /// The listing of folder `ino`, for `readdir` and `readdirplus`.
    fn listing(&self, ino: u64) -> Result<Arc<Listing>, Errno> {
        let node = self.node(ino).ok_or(Errno::ENOENT)?;
        self.children(ino, &node).map_err(|e| errno(&e))
    }
}

/// `.` and `..`, then the listing's names, each with the offset of the name after it, from
/// `offset` on. The kernel takes the numbers of `.` and `..`, never their attributes.
fn names(
    ino: u64,
    listing: &Listing,
    offset: u64,
) -> impl Iterator<Item = (u64, Result<&Child, (u64, &'static str)>)> {
    [Err((ino, ".")), Err((ROOT, ".."))]
        .into_iter()
        .chain(listing.children.iter().map(Ok))
        .enumerate()
        .skip(offset as usize)
        .map(|(i, name)| (i as u64 + 1, name))
}

impl Filesystem for View {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // A stacking depth of 1: copies on an ordinary filesystem can be handed over, and
        // this mount can still lie under another (an overlay).
        let offered = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.passthrough.store(offered, Ordering::Relaxed);
        // Listings with attributes (see `readdirplus`); an older kernel lists plainly.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_in(parent.0, name) {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // fuser's `batch_forget` comes here once per number.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.table).release(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(Node::Copy { rel, version }) = self.node(ino.0) else {
            return reply.error(Errno::EINVAL);
        };
        match self.folder(&rel).and_then(|f| f.read_link(&version)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Hands the copy to the kernel, which then reads it without asking. Where it cannot (no
    /// passthrough), `open` answers that it is not implemented: the kernel (Linux 4.19 and
    /// later) then sends no `open` or `release` for the rest of the mount, keeps what it read
    /// (a copy never changes), and reading a small file costs one round trip, not three.
    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if !self.passthrough.load(Ordering::Relaxed) {
            return reply.error(Errno::ENOSYS);
        }
        let Some(Node::Copy { rel, version }) = self.node(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        let file = match self.folder(&rel).and_then(|f| f.open_read(&version)) {
            Ok(file) => file,
            Err(e) => return reply.error(errno(&e)),
        };
        match reply.open_backing(&file) {
            Ok(id) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                lock(&self.handed).insert(fh, id);
            }
            // Not allowed here (no `CAP_SYS_ADMIN`) or not for this file (a copy on a stacked
            // filesystem): read by this process from now on, as above.
            Err(_) => {
                self.passthrough.store(false, Ordering::Relaxed);
                reply.error(Errno::ENOSYS);
            }
        }
    }

    /// A read of a copy not handed over (see `open`).
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
        let file = match self.copy(ino.0) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut buf = vec![0u8; size as usize];
        match crate::source::read_full_at(&file, &mut buf, offset) {
            Ok(got) => reply.data(&buf[..got]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handed).remove(&fh.0);
        reply.ok();
    }

    // Folders are opened as fuser does by default. Answering `opendir` with ENOSYS would save
    // two round trips a folder, but the kernel then keeps every listing as if
    // FOPEN_CACHE_DIR: `latest/`, `at/` and `versions/` would not show what a `watch` adds.
    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.listing(ino.0) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let table = lock(&self.table);
        for (next, name) in names(ino.0, &listing, offset) {
            let (number, kind, name) = match name {
                Err((ino, dot)) => (ino, FileType::Directory, OsStr::new(dot)),
                // A plain listing tells the kernel of no copy: one with no number yet gets none.
                Ok(c) => {
                    let number = match &c.what {
                        What::Folder(ino) => Some(*ino),
                        _ => c.leaf().and_then(|(name, versions_of)| {
                            table.inodes.find_in(&listing.rel, name, versions_of)
                        }),
                    };
                    (number.unwrap_or(UNKNOWN_INO), c.kind, &*c.name)
                }
            };
            if reply.add(INodeNo(number), next, kind, name) {
                break;
            }
        }
        drop(table);
        reply.ok();
    }

    /// A listing with what each name is: the kernel then has no need to look each one up, one
    /// round trip apiece, before it is opened.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listing = match self.listing(ino.0) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (next, name) in names(ino.0, &listing, offset) {
            let c = match name {
                // A `stat` of the folder for `.` and `..` would be wasted.
                Err((ino, dot)) => {
                    let attr = self.made_up(ino);
                    if reply.add(attr.ino, next, dot, &TTL, &attr, Generation(0)) {
                        break;
                    }
                    continue;
                }
                Ok(c) => c,
            };
            // Gone since it was listed: left out, as a lookup would find nothing.
            let Ok((number, attr)) = self.tell(&listing, c) else {
                continue;
            };
            if reply.add(attr.ino, next, &c.name, &TTL, &attr, Generation(0)) {
                self.untell(c, number);
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_listed_is_kept_only_when_a_change_would_show() {
        let listed = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |sec: i64| crate::meta::Time { sec, nsec: 0 };
        assert!(keepable(at(1_799_999_000), listed, true));
        // Changed in the seconds before the listing: a change right after it could keep the
        // same time on a filesystem that rounds times.
        assert!(!keepable(at(1_799_999_999), listed, true));
        assert!(!keepable(at(1_800_000_000), listed, true));
        assert!(
            !keepable(at(1_800_000_100), listed, true),
            "a time ahead of the clock"
        );
        // Some capture times are change times.
        assert!(!keepable(at(1_799_999_000), listed, false));
    }

    #[test]
    fn a_time_folder_name_sorts_and_reads_back() {
        let stamp = 20261206210530;
        let name = time_name(stamp).expect("a name");
        assert_eq!(name, "2026-12-06T21-05-30");
        assert_eq!(time_of_name(OsStr::new(&name)), Some(stamp));
        assert_eq!(time_of_name(OsStr::new("not a time")), None);
        assert!(time_name(20261206210530) < time_name(20261206210531));
    }
}
