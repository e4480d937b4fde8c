//! What a disk holds after a power cut, as a model: a tree of inodes in memory where every change
//! is volatile until it is made durable the way POSIX says, and a cut keeps only what was.
//!
//! - A file's data, size, mode, owner, times and extended attributes become durable at an
//!   `fsync` (or `fdatasync`) of that file.
//! - A folder's entries (names created, renamed, linked, removed) become durable at an `fsync`
//!   of that folder; a folder's own mode and times too.
//! - A symlink is durable as it was made (its target cannot change), once a name for it is.
//!
//! After a cut the tree is what the durable entries reach from the root: a name whose folder
//! was synced but whose file never was holds an empty file, as a journal that committed the
//! name but not the data leaves it; a name created or renamed in a folder never synced since is
//! gone (or back where it was). This is the strictest reading of POSIX: real filesystems often
//! keep more (ext4 commits a new file's name with its `fsync`), never less.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};

pub type Ino = u64;
pub const ROOT: Ino = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// What `stat` shows of an inode but its size and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds since the epoch.
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

/// The part of an inode that a sync makes durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub data: Vec<u8>,
    pub attr: Attr,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    pub entries: BTreeMap<OsString, Ino>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub now: State,
    /// What a cut keeps; `None` until the first sync.
    pub durable: Option<State>,
    /// Names that point at it now.
    pub nlink: u32,
}

/// The whole filesystem.
#[derive(Clone, Debug)]
pub struct Model {
    pub nodes: HashMap<Ino, Node>,
    next: Ino,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
}

impl Model {
    /// An empty filesystem whose root has `attr`, durable.
    pub fn new(attr: Attr) -> Model {
        let state = State {
            data: Vec::new(),
            attr,
            xattrs: BTreeMap::new(),
            entries: BTreeMap::new(),
        };
        let root = Node {
            kind: Kind::Dir,
            durable: Some(state.clone()),
            now: state,
            nlink: 1,
        };
        Model {
            nodes: HashMap::from([(ROOT, root)]),
            next: ROOT + 1,
        }
    }

    pub fn node(&self, ino: Ino) -> Result<&Node, Error> {
        self.nodes.get(&ino).ok_or(Error::NotFound)
    }

    pub fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Error> {
        self.nodes.get_mut(&ino).ok_or(Error::NotFound)
    }

    fn dir(&self, ino: Ino) -> Result<&Node, Error> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            Ok(n)
        } else {
            Err(Error::NotDir)
        }
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, Error> {
        self.dir(parent)?
            .now
            .entries
            .get(name)
            .copied()
            .ok_or(Error::NotFound)
    }

    /// A new inode of `kind` under `name` in `parent`; the name is taken, or not, as a whole.
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        attr: Attr,
        target: &[u8],
    ) -> Result<Ino, Error> {
        if self.lookup(parent, name).is_ok() {
            return Err(Error::Exists);
        }
        let ino = self.next;
        self.next += 1;
        let state = State {
            data: target.to_vec(),
            attr,
            xattrs: BTreeMap::new(),
            entries: BTreeMap::new(),
        };
        let node = Node {
            kind,
            // A symlink's target is written with it.
            durable: (kind == Kind::Symlink).then(|| state.clone()),
            now: state,
            nlink: 1,
        };
        self.nodes.insert(ino, node);
        self.node_mut(parent)?
            .now
            .entries
            .insert(name.to_os_string(), ino);
        Ok(ino)
    }

    pub fn link(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> Result<(), Error> {
        if self.node(ino)?.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        if self.lookup(parent, name).is_ok() {
            return Err(Error::Exists);
        }
        self.node_mut(parent)?
            .now
            .entries
            .insert(name.to_os_string(), ino);
        self.node_mut(ino)?.nlink += 1;
        Ok(())
    }

    /// Removes a name (`rmdir` when `dir`); the inode stays while open names or handles need it.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<(), Error> {
        let ino = self.lookup(parent, name)?;
        let node = self.node(ino)?;
        match (node.kind == Kind::Dir, dir) {
            (true, false) => return Err(Error::IsDir),
            (false, true) => return Err(Error::NotDir),
            (true, true) if !node.now.entries.is_empty() => return Err(Error::NotEmpty),
            _ => {}
        }
        self.node_mut(parent)?.now.entries.remove(name);
        let node = self.node_mut(ino)?;
        node.nlink = node.nlink.saturating_sub(1);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        to_parent: Ino,
        to_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Error> {
        let ino = self.lookup(parent, name)?;
        if let Ok(there) = self.lookup(to_parent, to_name) {
            if no_replace {
                return Err(Error::Exists);
            }
            if there == ino {
                return Ok(());
            }
            let dir = self.node(there)?.kind == Kind::Dir;
            self.unlink(to_parent, to_name, dir)?;
        }
        self.node_mut(parent)?.now.entries.remove(name);
        self.node_mut(to_parent)?
            .now
            .entries
            .insert(to_name.to_os_string(), ino);
        Ok(())
    }

    pub fn write(&mut self, ino: Ino, at: u64, data: &[u8]) -> Result<(), Error> {
        let now = &mut self.node_mut(ino)?.now;
        let at = at as usize;
        if now.data.len() < at + data.len() {
            now.data.resize(at + data.len(), 0);
        }
        now.data[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<(), Error> {
        self.node_mut(ino)?.now.data.resize(size as usize, 0);
        Ok(())
    }

    /// `fsync` of a file or a folder: what it is now becomes what a cut keeps of it.
    pub fn sync(&mut self, ino: Ino) -> Result<(), Error> {
        let node = self.node_mut(ino)?;
        node.durable = Some(node.now.clone());
        Ok(())
    }

    /// The power cut: the tree becomes what the durable entries reach from the root.
    pub fn cut(&mut self) {
        let mut kept = HashMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if kept.contains_key(&ino) {
                continue;
            }
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let state = node.durable.clone().unwrap_or_else(|| State {
                // A name made durable for an inode that never was: an empty file or folder.
                data: Vec::new(),
                entries: BTreeMap::new(),
                ..node.now.clone()
            });
            todo.extend(state.entries.values().copied());
            kept.insert(
                ino,
                Node {
                    kind: node.kind,
                    now: state.clone(),
                    durable: Some(state),
                    nlink: 0,
                },
            );
        }
        let names: Vec<Ino> = kept
            .values()
            .flat_map(|n| n.now.entries.values().copied())
            .collect();
        for ino in names {
            if let Some(n) = kept.get_mut(&ino) {
                n.nlink += 1;
            }
        }
        if let Some(root) = kept.get_mut(&ROOT) {
            root.nlink = 1;
        }
        self.nodes = kept;
    }

    /// Every path from the root with its inode, depth first, for dumping the tree.
    pub fn walk(&self) -> Vec<(Vec<OsString>, Ino)> {
        let mut out = Vec::new();
        let mut todo = vec![(Vec::new(), ROOT)];
        while let Some((path, ino)) = todo.pop() {
            if let Ok(node) = self.node(ino) {
                for (name, child) in node.now.entries.iter().rev() {
                    let mut p = path.clone();
                    p.push(name.clone());
                    todo.push((p, *child));
                }
            }
            out.push((path, ino));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr() -> Attr {
        Attr {
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: (0, 0),
            mtime: (0, 0),
            ctime: (0, 0),
        }
    }

    fn model() -> Model {
        Model::new(Attr {
            mode: 0o755,
            ..attr()
        })
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn a_write_never_synced_is_gone_after_a_cut() {
        let mut m = model();
        let f = m.create(ROOT, os("a"), Kind::File, attr(), b"").unwrap();
        m.sync(ROOT).unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.cut();
        let f = m.lookup(ROOT, os("a")).unwrap();
        assert_eq!(m.node(f).unwrap().now.data, b"");
    }

    #[test]
    fn a_file_synced_but_not_its_folder_loses_its_name() {
        let mut m = model();
        let f = m.create(ROOT, os("a"), Kind::File, attr(), b"").unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.sync(f).unwrap();
        m.cut();
        assert_eq!(m.lookup(ROOT, os("a")), Err(Error::NotFound));
    }

    #[test]
    fn a_file_and_its_folder_synced_survive_whole() {
        let mut m = model();
        let f = m.create(ROOT, os("a"), Kind::File, attr(), b"").unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.sync(f).unwrap();
        m.sync(ROOT).unwrap();
        m.write(f, 5, b", world").unwrap();
        m.cut();
        let f = m.lookup(ROOT, os("a")).unwrap();
        assert_eq!(m.node(f).unwrap().now.data, b"hello");
    }

    #[test]
    fn a_rename_not_synced_is_undone() {
        let mut m = model();
        let f = m.create(ROOT, os("tmp"), Kind::File, attr(), b"").unwrap();
        m.write(f, 0, b"x").unwrap();
        m.sync(f).unwrap();
        m.sync(ROOT).unwrap();
        m.rename(ROOT, os("tmp"), ROOT, os("final"), true).unwrap();
        m.cut();
        assert!(m.lookup(ROOT, os("tmp")).is_ok());
        assert_eq!(m.lookup(ROOT, os("final")), Err(Error::NotFound));
    }

    #[test]
    fn a_hard_link_synced_survives_beside_the_first_name() {
        let mut m = model();
        let f = m.create(ROOT, os("a"), Kind::File, attr(), b"").unwrap();
        m.write(f, 0, b"data").unwrap();
        m.sync(f).unwrap();
        m.link(f, ROOT, os("b")).unwrap();
        m.sync(ROOT).unwrap();
        m.cut();
        let (a, b) = (
            m.lookup(ROOT, os("a")).unwrap(),
            m.lookup(ROOT, os("b")).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(m.node(a).unwrap().nlink, 2);
        assert_eq!(m.node(a).unwrap().now.data, b"data");
    }

    #[test]
    fn a_subfolder_needs_its_parent_synced_too() {
        let mut m = model();
        let d = m.create(ROOT, os("d"), Kind::Dir, attr(), b"").unwrap();
        let f = m.create(d, os("f"), Kind::File, attr(), b"").unwrap();
        m.sync(f).unwrap();
        m.sync(d).unwrap();
        m.cut();
        assert_eq!(m.lookup(ROOT, os("d")), Err(Error::NotFound));
    }

    #[test]
    fn names_are_never_replaced_when_asked_not_to() {
        let mut m = model();
        m.create(ROOT, os("a"), Kind::File, attr(), b"").unwrap();
        m.create(ROOT, os("b"), Kind::File, attr(), b"").unwrap();
        assert_eq!(
            m.rename(ROOT, os("a"), ROOT, os("b"), true),
            Err(Error::Exists)
        );
        let f = m.lookup(ROOT, os("a")).unwrap();
        assert_eq!(m.link(f, ROOT, os("b")), Err(Error::Exists));
    }
}
