//! What the mount shows, and the inode number of each thing the kernel has been told of. A
//! copy (most of what is shown) is a small fixed record and its name in one shared buffer,
//! about 40 bytes in all, kept while the kernel holds it: the kernel counts each time it is
//! told of one, and when it forgets one (`forget`, under memory pressure or at unmount) its
//! record and name are freed and its number given to the next. So the table follows what the
//! kernel keeps, itself about a kilobyte a file. Folders, far fewer, are kept whole for the
//! life of the mount.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::path::{Path, PathBuf};

use hashbrown::HashTable;

/// The time that `latest/` shows: later than any capture.
pub(super) const LATEST: u64 = u64::MAX;

/// The inode number of the mount's root.
pub(super) const ROOT: u64 = 1;

/// Something the mount shows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Node {
    /// `latest/`, `at/` and `versions/`.
    Top,
    /// `at/`: one folder per time something was captured.
    Times,
    /// A folder of the tree at `at`, with the newest deletion by then of it or of a folder above.
    Tree {
        at: u64,
        rel: PathBuf,
        cut: Option<u64>,
    },
    /// `versions/REL/`: the folder's subfolders, and a folder for each of its files.
    VersionsIn { rel: PathBuf },
    /// `versions/REL/NAME/`: every version of one file.
    VersionsOf { rel: PathBuf, name: Vec<u8> },
    /// A copy in DST: a version of a file, or the record of a deletion.
    Copy { rel: PathBuf, version: Vec<u8> },
}

impl Node {
    /// Whether what it holds changes as versions are added: the tree now, the lists of
    /// versions, and `at/`, which gains a time with each. A tree at a past time holds what was
    /// captured by then, which no later copy changes.
    pub(super) fn moves(&self) -> bool {
        matches!(
            self,
            Node::Times
                | Node::Tree { at: LATEST, .. }
                | Node::VersionsIn { .. }
                | Node::VersionsOf { .. }
        )
    }
}

/// A copy, or the folder of one file's versions: a name in a folder of DST.
#[derive(Clone, Copy)]
struct Leaf {
    /// Where its name is in `Inodes::names`.
    name_at: u32,
    /// Its folder of DST: an index into `Inodes::rels`; `FREE` for a number free to give.
    rel: u32,
    /// The length of its name, with `VERSIONS_OF` set for the folder of a file's versions.
    len: u16,
    /// How many times the kernel was told of it and has not forgotten; `MANY` when that is
    /// kept in `Inodes::many` instead (the count of a file looked up again and again grows
    /// for as long as the kernel keeps it).
    held: u16,
}

const VERSIONS_OF: u16 = 1 << 15;
const FREE: u32 = u32::MAX;
const MANY: u16 = u16::MAX;

/// Leaves and names are kept in chunks of a fixed size, never in one growing `Vec`: growing it
/// copies it, and the allocator keeps the old copies' memory, which made a third of the
/// mount's size over a million files.
const LEAVES_PER_CHUNK: usize = 1 << 16;
const NAME_CHUNK_BITS: u32 = 20;

#[derive(Default)]
struct Leaves(Vec<Vec<Leaf>>);

impl Leaves {
    fn len(&self) -> usize {
        self.0
            .last()
            .map_or(0, |c| (self.0.len() - 1) * LEAVES_PER_CHUNK + c.len())
    }

    fn get(&self, i: usize) -> Option<&Leaf> {
        self.0.get(i / LEAVES_PER_CHUNK)?.get(i % LEAVES_PER_CHUNK)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Leaf> {
        self.0
            .get_mut(i / LEAVES_PER_CHUNK)?
            .get_mut(i % LEAVES_PER_CHUNK)
    }

    fn push(&mut self, leaf: Leaf) {
        match self.0.last_mut() {
            Some(c) if c.len() < LEAVES_PER_CHUNK => c.push(leaf),
            _ => {
                let mut c = Vec::with_capacity(LEAVES_PER_CHUNK);
                c.push(leaf);
                self.0.push(c);
            }
        }
    }
}

/// Names one after the other, in chunks of 1 MiB: a name is where `name_at` says, the chunk in
/// its high bits and the place in the chunk in its low `NAME_CHUNK_BITS`. 4,096 chunks, 4 GiB.
/// A chunk whose names are all forgotten is freed, and its place given to the next chunk.
#[derive(Default)]
struct Names {
    chunks: Vec<Vec<u8>>,
    /// The bytes of each chunk that still name something.
    live: Vec<u32>,
    /// Chunks freed, to be used again.
    spare: Vec<u32>,
    /// The chunk that names are added to.
    at: usize,
}

impl Names {
    fn push(&mut self, name: &[u8]) -> io::Result<u32> {
        let size = 1 << NAME_CHUNK_BITS;
        if self
            .chunks
            .get(self.at)
            .is_none_or(|c| c.len() + name.len() > size)
        {
            self.at = match self.spare.pop() {
                Some(n) => n as usize,
                None if self.chunks.len() >= 1 << (32 - NAME_CHUNK_BITS) => return Err(full()),
                None => {
                    self.chunks.push(Vec::new());
                    self.live.push(0);
                    self.chunks.len() - 1
                }
            };
            self.chunks[self.at] = Vec::with_capacity(size);
        }
        let c = &mut self.chunks[self.at];
        let at = ((self.at as u32) << NAME_CHUNK_BITS) | c.len() as u32;
        c.extend_from_slice(name);
        self.live[self.at] += name.len() as u32;
        Ok(at)
    }

    fn get(&self, leaf: &Leaf) -> &[u8] {
        let (chunk, at, len) = Self::place(leaf);
        self.chunks
            .get(chunk)
            .and_then(|c| c.get(at..at + len))
            .unwrap_or_default()
    }

    /// Frees the name of `leaf`, and its chunk once nothing else is named in it.
    fn release(&mut self, leaf: &Leaf) {
        let (chunk, _, len) = Self::place(leaf);
        let Some(live) = self.live.get_mut(chunk) else {
            return;
        };
        *live -= len as u32;
        if *live == 0 {
            if chunk == self.at {
                self.chunks[chunk].clear();
            } else {
                self.chunks[chunk] = Vec::new();
                self.spare.push(chunk as u32);
            }
        }
    }

    fn place(leaf: &Leaf) -> (usize, usize, usize) {
        let chunk = (leaf.name_at >> NAME_CHUNK_BITS) as usize;
        let at = (leaf.name_at & ((1 << NAME_CHUNK_BITS) - 1)) as usize;
        (chunk, at, (leaf.len & !VERSIONS_OF) as usize)
    }
}

/// Numbers: the root is 1; then folders take the even numbers and leaves the odd ones, each
/// one forgotten or else the next, so that numbers stay small (some programs still fail on inode numbers past
/// 32 bits).
#[derive(Default)]
pub(super) struct Inodes {
    folders: Vec<Node>,
    folder_inos: HashMap<Node, u64>,
    rels: Vec<PathBuf>,
    rel_ids: HashMap<PathBuf, u32>,
    leaves: Leaves,
    /// Indexes into `leaves` (four bytes each: a million copies, a million of them), found by
    /// the hash of (folder, kind, name).
    leaf_index: HashTable<u32>,
    names: Names,
    /// Leaves forgotten, whose places are given again.
    free: Vec<u32>,
    /// The counts of leaves held `MANY` times or more.
    many: HashMap<u32, u64>,
    hasher: RandomState,
}

/// The number the kernel is given for a name whose number is not known yet (a plain `readdir`
/// makes none): libfuse's `FUSE_UNKNOWN_INO`.
pub(super) const UNKNOWN_INO: u64 = 0xffff_ffff;

fn leaf_ino(i: u32) -> u64 {
    3 + 2 * u64::from(i)
}

/// A leaf's folder of DST, name and kind; `None` for a folder of the mount.
fn leaf_of(node: &Node) -> Option<(&Path, &[u8], bool)> {
    match node {
        Node::Copy { rel, version } => Some((rel, version, false)),
        Node::VersionsOf { rel, name } => Some((rel, name, true)),
        _ => None,
    }
}

impl Inodes {
    /// The number of `node`, given now if it has none, which the kernel is about to be told
    /// of: a copy's is counted, and kept until the kernel forgets it as often (`release`).
    /// Folders keep theirs for the life of the mount. The root's is `ROOT`, which the caller
    /// knows. Fails only when a table is full: four billion copies, or folders of DST, or
    /// 4 GiB of names; or for a name longer than 32 KiB.
    pub(super) fn hold(&mut self, node: &Node) -> io::Result<u64> {
        if let Some((rel, name, versions_of)) = leaf_of(node) {
            return self.hold_leaf(rel, name, versions_of);
        }
        if let Some(&ino) = self.folder_inos.get(node) {
            return Ok(ino);
        }
        let ino = 2 + 2 * self.folders.len() as u64;
        self.folders.push(node.clone());
        self.folder_inos.insert(node.clone(), ino);
        Ok(ino)
    }

    /// `hold` for the copy `name` in the folder `rel` of DST, or the folder of its versions.
    pub(super) fn hold_leaf(
        &mut self,
        rel: &Path,
        name: &[u8],
        versions_of: bool,
    ) -> io::Result<u64> {
        let rel = self.rel_id(rel)?;
        let len = u16::try_from(name.len())
            .ok()
            .filter(|&len| len < VERSIONS_OF)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidFilename))?;
        let len = if versions_of { len | VERSIONS_OF } else { len };
        let hash = self.hasher.hash_one((rel, len, name));
        let i = match self.find_leaf(hash, rel, len, name) {
            Some(i) => i,
            None => self.add_leaf(hash, rel, len, name)?,
        };
        self.count(i, 1);
        Ok(leaf_ino(i))
    }

    /// The number of the copy `name` in the folder `rel` of DST, or of the folder of its
    /// versions, if it has one.
    pub(super) fn find_in(&self, rel: &Path, name: &[u8], versions_of: bool) -> Option<u64> {
        let rel = *self.rel_ids.get(rel)?;
        let len = u16::try_from(name.len()).ok()?;
        let len = if versions_of { len | VERSIONS_OF } else { len };
        let hash = self.hasher.hash_one((rel, len, name));
        self.find_leaf(hash, rel, len, name).map(leaf_ino)
    }

    /// The kernel has forgotten `ino` `n` times: true when it holds it no more and the number
    /// is free again (never for a folder).
    pub(super) fn release(&mut self, ino: u64, n: u64) -> bool {
        if ino < 3 || ino.is_multiple_of(2) {
            return false;
        }
        let Ok(i) = u32::try_from((ino - 3) / 2) else {
            return false;
        };
        let Some(leaf) = self.leaves.get(i as usize).copied() else {
            return false;
        };
        if leaf.rel == FREE || !self.count(i, -i64::try_from(n).unwrap_or(i64::MAX)) {
            return false;
        }
        let hash = self
            .hasher
            .hash_one((leaf.rel, leaf.len, self.names.get(&leaf)));
        if let Ok(entry) = self.leaf_index.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        self.names.release(&leaf);
        if let Some(l) = self.leaves.get_mut(i as usize) {
            *l = Leaf {
                name_at: 0,
                rel: FREE,
                len: 0,
                held: 0,
            };
        }
        self.free.push(i);
        true
    }

    /// Adds `by` to the count of leaf `i`: true when that leaves it at nothing.
    fn count(&mut self, i: u32, by: i64) -> bool {
        let Some(leaf) = self.leaves.get_mut(i as usize) else {
            return false;
        };
        let now = if leaf.held == MANY {
            self.many.get(&i).copied().unwrap_or(0)
        } else {
            u64::from(leaf.held)
        };
        let next = now.saturating_add_signed(by);
        if next >= u64::from(MANY) {
            leaf.held = MANY;
            self.many.insert(i, next);
        } else {
            leaf.held = next as u16;
            if now >= u64::from(MANY) {
                self.many.remove(&i);
            }
        }
        next == 0
    }

    fn find_leaf(&self, hash: u64, rel: u32, len: u16, name: &[u8]) -> Option<u32> {
        let (leaves, names) = (&self.leaves, &self.names);
        let same = |&i: &u32| {
            leaves
                .get(i as usize)
                .is_some_and(|l| l.rel == rel && l.len == len && names.get(l) == name)
        };
        self.leaf_index.find(hash, same).copied()
    }

    fn add_leaf(&mut self, hash: u64, rel: u32, len: u16, name: &[u8]) -> io::Result<u32> {
        let name_at = self.names.push(name)?;
        let leaf = Leaf {
            name_at,
            rel,
            len,
            held: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(l) = self.leaves.get_mut(i as usize) {
                    *l = leaf;
                }
                i
            }
            None => {
                let i = u32::try_from(self.leaves.len()).map_err(|_| full())?;
                self.leaves.push(leaf);
                i
            }
        };
        let (leaves, names, hasher) = (&self.leaves, &self.names, &self.hasher);
        self.leaf_index
            .insert_unique(hash, i, |&i| match leaves.get(i as usize) {
                Some(l) => hasher.hash_one((l.rel, l.len, names.get(l))),
                None => 0,
            });
        Ok(i)
    }

    /// What number `ino` was given to; `None` for the root, for numbers never given, and for
    /// numbers forgotten.
    pub(super) fn node(&self, ino: u64) -> Option<Node> {
        if ino < 2 {
            return None;
        }
        let i = usize::try_from((ino - 2) / 2).ok()?;
        if ino.is_multiple_of(2) {
            return self.folders.get(i).cloned();
        }
        let leaf = self.leaves.get(i)?;
        let rel = self.rels.get(leaf.rel as usize)?.clone();
        let name = self.names.get(leaf).to_vec();
        Some(if leaf.len & VERSIONS_OF != 0 {
            Node::VersionsOf { rel, name }
        } else {
            Node::Copy { rel, version: name }
        })
    }

    /// How many copies and folders of versions are held now.
    #[cfg(test)]
    fn leaves_held(&self) -> usize {
        self.leaves.len() - self.free.len()
    }

    fn rel_id(&mut self, rel: &Path) -> io::Result<u32> {
        if let Some(&id) = self.rel_ids.get(rel) {
            return Ok(id);
        }
        let id = u32::try_from(self.rels.len())
            .ok()
            .filter(|&id| id != FREE)
            .ok_or_else(full)?;
        self.rels.push(rel.to_path_buf());
        self.rel_ids.insert(rel.to_path_buf(), id);
        Ok(id)
    }
}

/// A table of four billion entries: the mount can show no more.
fn full() -> io::Error {
    io::Error::from(io::ErrorKind::OutOfMemory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(rel: &str, version: &str) -> Node {
        Node::Copy {
            rel: PathBuf::from(rel),
            version: version.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_node_keeps_its_number_and_the_number_gives_the_node_back() {
        let mut t = Inodes::default();
        let nodes = [
            Node::Top,
            Node::Times,
            Node::Tree {
                at: LATEST,
                rel: PathBuf::from("a"),
                cut: None,
            },
            Node::Tree {
                at: 20261207120000,
                rel: PathBuf::from("a"),
                cut: Some(20261207110000),
            },
            Node::VersionsIn {
                rel: PathBuf::from("a"),
            },
            // One name in one folder, as a copy and as the folder of its versions.
            copy("a", "x.txt"),
            Node::VersionsOf {
                rel: PathBuf::from("a"),
                name: b"x.txt".to_vec(),
            },
            copy("a", "x_20261207_120000.txt"),
            copy("b", "x.txt"),
            copy("", "x.txt"),
            copy("a", ""),
        ];
        let inos: Vec<u64> = nodes.iter().map(|n| t.hold(n).expect("a number")).collect();
        let mut distinct = inos.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), nodes.len(), "{inos:?}");
        assert!(inos.iter().all(|&i| i > ROOT));
        for (node, &ino) in nodes.iter().zip(&inos) {
            assert_eq!(t.hold(node).expect("a number"), ino);
            assert_eq!(t.node(ino).as_ref(), Some(node));
        }
        assert_eq!(t.node(ROOT), None);
        assert_eq!(t.node(0), None);
        assert_eq!(t.node(1_000_001), None);
        assert_eq!(t.node(1_000_000), None);
    }

    /// Past the end of a chunk of leaves (65,536) and of names (1 MiB).
    #[test]
    fn many_copies_keep_their_numbers() {
        let mut t = Inodes::default();
        let name = |i: usize| format!("a-longer-file-name-{i:08}.txt");
        let inos: Vec<u64> = (0..150_000)
            .map(|i| {
                t.hold(&copy(&format!("d{}", i % 7), &name(i)))
                    .expect("a number")
            })
            .collect();
        assert!(t.leaves.0.len() > 2 && t.names.chunks.len() > 2);
        for (i, &ino) in inos.iter().enumerate() {
            let node = copy(&format!("d{}", i % 7), &name(i));
            assert_eq!(t.node(ino), Some(node.clone()));
            assert_eq!(t.hold(&node).expect("a number"), ino);
        }
        assert_eq!(t.rels.len(), 7);
    }

    /// A copy the kernel forgot as often as it was told of it is freed, its number given to the
    /// next, and the memory of its name freed with the last name of its chunk; folders stay.
    #[test]
    fn what_the_kernel_forgets_is_freed_and_its_number_given_again() {
        let mut t = Inodes::default();
        let a = copy("d", "a.txt");
        let ino = t.hold(&a).expect("a number");
        assert_eq!(t.hold(&a).expect("again"), ino);
        assert!(!t.release(ino, 1), "told twice, forgotten once");
        assert_eq!(t.node(ino), Some(a.clone()));
        assert!(t.release(ino, 1));
        assert_eq!(t.node(ino), None);
        assert_eq!(t.find_in(Path::new("d"), b"a.txt", false), None);
        assert!(
            !t.release(ino, 1),
            "a number forgotten is not forgotten again"
        );
        let b = copy("d", "b.txt");
        assert_eq!(
            t.hold(&b).expect("a number"),
            ino,
            "the number is given again"
        );
        assert_eq!(t.node(ino), Some(b.clone()));
        assert_eq!(t.find_in(Path::new("d"), b"b.txt", false), Some(ino));

        let folder = Node::VersionsIn {
            rel: PathBuf::from("d"),
        };
        let f = t.hold(&folder).expect("a number");
        assert!(!t.release(f, 1));
        assert_eq!(t.node(f), Some(folder));

        // A count past what a leaf holds itself.
        let c = copy("d", "c.txt");
        let ino_c = t.hold(&c).expect("a number");
        for _ in 0..70_000 {
            t.hold(&c).expect("again");
        }
        assert!(!t.release(ino_c, 70_000));
        assert_eq!(t.node(ino_c), Some(c.clone()));
        assert!(t.release(ino_c, 1));
        assert!(t.many.is_empty());

        // Many copies, forgotten: the chunks of their names go, the table does not grow again.
        let name = |i: usize| format!("a-longer-file-name-{i:08}.txt");
        let inos: Vec<u64> = (0..100_000)
            .map(|i| t.hold(&copy("e", &name(i))).expect("a number"))
            .collect();
        let chunks = |t: &Inodes| t.names.chunks.iter().filter(|c| c.capacity() > 0).count();
        assert!(chunks(&t) > 2);
        for &ino in &inos {
            assert!(t.release(ino, 1));
        }
        assert_eq!(t.leaves_held(), 1, "b.txt alone");
        // b.txt's, and the one names are added to.
        assert!(chunks(&t) <= 2, "{} chunks of names kept", chunks(&t));
        let leaves = t.leaves.len();
        for i in 0..100_000 {
            let node = copy("f", &name(i));
            let ino = t.hold(&node).expect("a number");
            assert_eq!(t.node(ino), Some(node));
        }
        assert_eq!(t.leaves.len(), leaves, "numbers forgotten are given again");
        assert_eq!(t.node(ino), Some(b), "and b.txt kept its own");
    }
}
