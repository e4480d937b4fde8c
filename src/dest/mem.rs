//! A destination in memory, for tests: the layers above the seam (the engine, the watch loop,
//! the history commands) run against it in milliseconds, without root, mounts or servers, and
//! its fault switches reach the paths that real destinations hit once a year: full, a sync
//! that fails, a name taken by someone else just before it is published, the destination gone.
//!
//! Its files are anonymous memory files (`memfd_create`), so that the seam's `File`s work as
//! they do for a real folder.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Capabilities, Destination, Folder, Opened, Publish, Staged, Unavailable};
use crate::meta::{Kind, Meta, Time};

/// The faults the destination can be told to have, each switched on and off by a test.
#[derive(Default)]
pub(crate) struct Faults {
    /// Every write fails with `ENOSPC`.
    pub(crate) full: AtomicBool,
    /// Every sync fails with `EIO`.
    pub(crate) sync_fails: AtomicBool,
    /// It is unplugged: `still_there` says so, and every call fails with `ENOENT`.
    pub(crate) gone: AtomicBool,
    /// Names that another writer creates just before this run publishes under them.
    pub(crate) taken: Mutex<HashSet<Vec<u8>>>,
}

/// One entry.
struct Node {
    meta: Meta,
    born: Time,
    /// A file's contents.
    data: Option<Arc<File>>,
    /// A symlink's target.
    target: Vec<u8>,
}

/// Everything the destination holds, by path relative to its root ("" is the root).
struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
}

struct Shared {
    root: PathBuf,
    caps: Capabilities,
    tree: Mutex<Tree>,
    faults: Faults,
    inodes: AtomicU64,
    /// How many copies were named from another (`link`), for a test to see.
    links: AtomicU64,
}

impl Shared {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self) -> io::Result<()> {
        if self.faults.gone.load(Ordering::Relaxed) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(())
    }

    fn writable(&self) -> io::Result<()> {
        self.check()?;
        if self.faults.full.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn meta(&self, kind: Kind, mode: u32) -> Meta {
        let now = Time::now();
        Meta {
            kind,
            size: 0,
            mode,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            ctime: now,
            dev: 1,
            ino: self.inodes.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

/// The destination.
#[derive(Clone)]
pub(crate) struct Mem(Arc<Shared>);

impl Mem {
    /// An empty destination shown as `root`, that keeps what an ext4 folder keeps (but owners).
    pub(crate) fn new(root: &Path) -> Mem {
        let mut caps = Capabilities::assumed("mem".into());
        caps.probed = true;
        caps.precision = Some(1);
        caps.publish = Publish::RenameNoReplace;
        caps.xattrs = false;
        caps.link = true;
        let shared = Shared {
            root: root.to_path_buf(),
            caps,
            tree: Mutex::new(Tree {
                nodes: BTreeMap::new(),
            }),
            faults: Faults::default(),
            inodes: AtomicU64::new(0),
            links: AtomicU64::new(0),
        };
        let root_meta = shared.meta(Kind::Dir, 0o755);
        shared.tree().nodes.insert(
            PathBuf::new(),
            Node {
                meta: root_meta,
                born: Time::now(),
                data: None,
                target: Vec::new(),
            },
        );
        Mem(Arc::new(shared))
    }

    /// How many copies were named from another copy rather than written.
    pub(crate) fn links(&self) -> u64 {
        self.0.links.load(Ordering::Relaxed)
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.0.faults
    }

    /// Every path it holds, relative, with its kind: for a test to compare.
    pub(crate) fn paths(&self) -> Vec<(PathBuf, Kind)> {
        self.0
            .tree()
            .nodes
            .iter()
            .filter(|(p, _)| !p.as_os_str().is_empty())
            .map(|(p, n)| (p.clone(), n.meta.kind))
            .collect()
    }

    /// The contents of the file at `rel`.
    pub(crate) fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let file = {
            let tree = self.0.tree();
            let node = tree.nodes.get(rel).ok_or(io::ErrorKind::NotFound)?;
            Arc::clone(node.data.as_ref().ok_or(io::ErrorKind::InvalidInput)?)
        };
        let mut out = Vec::new();
        reopen(&file)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// A new anonymous memory file.
fn memfile() -> io::Result<File> {
    let fd = rustix::fs::memfd_create("backup-mem", rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(File::from(fd))
}

/// The same file with an offset of its own.
fn reopen(file: &File) -> io::Result<File> {
    let mut f = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    f.rewind()?;
    Ok(f)
}

impl Destination for Mem {
    fn path(&self) -> &Path {
        &self.0.root
    }

    fn capabilities(&self) -> &Capabilities {
        &self.0.caps
    }

    fn folder(&self, rel: &Path) -> io::Result<Option<Arc<dyn Folder>>> {
        self.0.check()?;
        let tree = self.0.tree();
        Ok(match tree.nodes.get(rel) {
            Some(n) if n.meta.kind == Kind::Dir => Some(Arc::new(MemFolder {
                shared: Arc::clone(&self.0),
                rel: rel.to_path_buf(),
                path: self.0.root.join(rel),
            })),
            _ => None,
        })
    }

    fn still_there(&self) -> Result<(), Unavailable> {
        self.0.check().map_err(Unavailable::Gone)
    }

    fn release(&self) {}

    fn reacquire(&self) -> Result<(), Unavailable> {
        self.still_there()
    }

    fn free_space(&self) -> Option<u64> {
        None
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.check()?;
        if self.0.faults.sync_fails.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

struct MemFolder {
    shared: Arc<Shared>,
    rel: PathBuf,
    path: PathBuf,
}

impl MemFolder {
    fn at(&self, name: &[u8]) -> PathBuf {
        self.rel.join(OsStr::from_bytes(name))
    }

    /// Adds `node` under `name`, never replacing.
    fn add(&self, name: &[u8], node: Node) -> io::Result<()> {
        let mut tree = self.shared.tree();
        let at = self.at(name);
        if tree.nodes.contains_key(&at) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        tree.nodes.insert(at, node);
        Ok(())
    }

    /// What `look` finds in the entry `name`.
    fn with_node<T>(
        &self,
        name: &[u8],
        look: impl FnOnce(&Node) -> io::Result<T>,
    ) -> io::Result<T> {
        self.shared.check()?;
        let tree = self.shared.tree();
        look(
            tree.nodes
                .get(&self.at(name))
                .ok_or(io::ErrorKind::NotFound)?,
        )
    }

    fn node_meta(&self, name: &[u8]) -> io::Result<(Meta, Time)> {
        self.with_node(name, |node| Ok((node.meta, node.born)))
    }
}

impl Folder for MemFolder {
    fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr, create: bool) -> io::Result<Option<Opened>> {
        self.shared.check()?;
        let at = self.rel.join(name);
        let existing = self.shared.tree().nodes.get(&at).map(|n| n.meta);
        let (meta, created) = match existing {
            Some(m) if m.kind == Kind::Dir => (m, false),
            Some(_) => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None if !create => return Ok(None),
            None => {
                self.shared.writable()?;
                let meta = self.shared.meta(Kind::Dir, 0o755);
                self.add(
                    name.as_bytes(),
                    Node {
                        meta,
                        born: meta.mtime,
                        data: None,
                        target: Vec::new(),
                    },
                )?;
                (meta, true)
            }
        };
        Ok(Some(Opened {
            folder: Arc::new(MemFolder {
                shared: Arc::clone(&self.shared),
                path: self.shared.root.join(&at),
                rel: at,
            }),
            created,
            meta,
        }))
    }

    fn meta(&self) -> io::Result<Meta> {
        self.shared.check()?;
        let tree = self.shared.tree();
        Ok(tree
            .nodes
            .get(&self.rel)
            .ok_or(io::ErrorKind::NotFound)?
            .meta)
    }

    fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        self.shared.check()?;
        let tree = self.shared.tree();
        Ok(tree
            .nodes
            .keys()
            .filter(|p| p.parent() == Some(&self.rel) && !p.as_os_str().is_empty())
            .filter_map(|p| p.file_name().map(|n| n.as_bytes().to_vec()))
            .collect())
    }

    fn stat(&self, name: &[u8]) -> io::Result<Meta> {
        Ok(self.node_meta(name)?.0)
    }

    fn entry(&self, name: &[u8]) -> io::Result<(Meta, Option<Time>)> {
        let (meta, born) = self.node_meta(name)?;
        Ok((meta, Some(born)))
    }

    fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        self.with_node(name, |node| {
            if node.meta.kind != Kind::Symlink {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            Ok(node.target.clone())
        })
    }

    fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let file = self.with_node(name, |node| {
            Ok(Arc::clone(
                node.data.as_ref().ok_or(io::ErrorKind::InvalidInput)?,
            ))
        })?;
        reopen(&file)
    }

    fn remove(&self, name: &[u8]) -> io::Result<()> {
        self.shared.check()?;
        let mut tree = self.shared.tree();
        match tree.nodes.get(&self.at(name)) {
            Some(n) if n.meta.kind == Kind::Dir => Err(io::ErrorKind::IsADirectory.into()),
            Some(_) => {
                tree.nodes.remove(&self.at(name));
                Ok(())
            }
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn remove_leftover(&self, name: &[u8]) -> io::Result<()> {
        self.remove(name)
    }

    fn stage(&self, _name: &[u8], mode: u32) -> io::Result<Box<dyn Staged>> {
        self.shared.writable()?;
        let mut meta = self.shared.meta(Kind::File, mode);
        meta.mode = mode;
        Ok(Box::new(MemStaged {
            folder: MemFolder {
                shared: Arc::clone(&self.shared),
                rel: self.rel.clone(),
                path: self.path.clone(),
            },
            file: Some(memfile()?),
            meta,
        }))
    }

    fn symlink(&self, target: &[u8], name: &[u8], meta: &Meta) -> io::Result<()> {
        self.shared.writable()?;
        let mut m = self.shared.meta(Kind::Symlink, 0o777);
        m.mtime = meta.mtime;
        m.atime = meta.atime;
        m.size = target.len() as u64;
        self.add(
            name,
            Node {
                meta: m,
                born: Time::now(),
                data: None,
                target: target.to_vec(),
            },
        )
    }

    fn set_meta(&self, meta: &Meta) -> io::Result<()> {
        self.shared.writable()?;
        let mut tree = self.shared.tree();
        let node = tree
            .nodes
            .get_mut(&self.rel)
            .ok_or(io::ErrorKind::NotFound)?;
        node.meta.mode = meta.mode;
        node.meta.mtime = meta.mtime;
        node.meta.atime = meta.atime;
        node.meta.ctime = Time::now();
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.shared.check()?;
        if self.shared.faults.sync_fails.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn update_meta(&self, name: &[u8], meta: &Meta, _src: &File, times: bool) -> io::Result<()> {
        self.shared.writable()?;
        let mut tree = self.shared.tree();
        let node = tree
            .nodes
            .get_mut(&self.at(name))
            .ok_or(io::ErrorKind::NotFound)?;
        node.meta.mode = meta.mode;
        if times {
            node.meta.mtime = meta.mtime;
            node.meta.atime = meta.atime;
        }
        node.meta.ctime = Time::now();
        Ok(())
    }

    fn create_empty(&self, name: &[u8]) -> io::Result<()> {
        self.shared.writable()?;
        let meta = self.shared.meta(Kind::File, 0o644);
        self.add(
            name,
            Node {
                meta,
                born: meta.mtime,
                data: Some(Arc::new(memfile()?)),
                target: Vec::new(),
            },
        )
    }

    fn set_aside(&self, name: &[u8], to: &[u8]) -> io::Result<()> {
        self.shared.writable()?;
        let mut tree = self.shared.tree();
        let (from, to) = (self.at(name), self.at(to));
        if tree.nodes.contains_key(&to) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let node = tree.nodes.remove(&from).ok_or(io::ErrorKind::NotFound)?;
        tree.nodes.insert(to, node);
        Ok(())
    }

    /// Like a server-side copy: the data is shared (a published copy is never written again),
    /// the metadata is the new name's own.
    fn link(&self, from: &super::Elsewhere, name: &[u8]) -> io::Result<()> {
        self.shared.writable()?;
        let mut tree = self.shared.tree();
        let to = self.at(name);
        if tree.nodes.contains_key(&to) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let node = tree
            .nodes
            .get(&from.rel.join(OsStr::from_bytes(from.name)))
            .filter(|n| n.data.is_some())
            .ok_or(io::ErrorKind::NotFound)?;
        let copy = Node {
            meta: Meta {
                ino: self.shared.inodes.fetch_add(1, Ordering::Relaxed) + 1,
                ..node.meta
            },
            born: Time::now(),
            data: node.data.clone(),
            target: Vec::new(),
        };
        tree.nodes.insert(to, copy);
        self.shared.links.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A copy being written: a memory file, not in the tree until published.
struct MemStaged {
    folder: MemFolder,
    file: Option<File>,
    meta: Meta,
}

impl MemStaged {
    fn open(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("already published"))
    }
}

impl Staged for MemStaged {
    fn copy_from(&mut self, src: &File, _size: u64) -> io::Result<u64> {
        self.folder.shared.writable()?;
        let mut from = reopen(src)?;
        let mut out = self.open()?;
        let copied = io::copy(&mut from, &mut out)?;
        out.flush()?;
        self.meta.size = copied;
        Ok(copied)
    }

    fn set_meta(&mut self, meta: &Meta, _src: &File) -> io::Result<()> {
        self.folder.shared.writable()?;
        self.meta.mode = meta.mode;
        self.meta.mtime = meta.mtime;
        self.meta.atime = meta.atime;
        self.meta.uid = meta.uid;
        self.meta.gid = meta.gid;
        Ok(())
    }

    fn file(&self) -> io::Result<&File> {
        self.open()
    }

    fn close(&mut self) -> io::Result<()> {
        self.folder.shared.check()
    }

    fn sync(&self) -> io::Result<()> {
        self.folder.sync()
    }

    fn publish(&mut self, name: &[u8]) -> io::Result<()> {
        self.folder.shared.check()?;
        let taken = self
            .folder
            .shared
            .faults
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if taken {
            // Someone else's file under that name, made just now.
            self.folder.create_empty(name)?;
        }
        let file = self.open()?.try_clone()?;
        let size = file.metadata()?.len();
        let mut meta = self.meta;
        meta.size = size;
        meta.ctime = Time::now();
        self.folder.add(
            name,
            Node {
                meta,
                born: Time::now(),
                data: Some(Arc::new(file)),
                target: Vec::new(),
            },
        )?;
        self.file = None;
        Ok(())
    }
}
