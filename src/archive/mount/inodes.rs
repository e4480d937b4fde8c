//! What the mount shows, and the inode number of each thing the kernel has been told of. A
//! number is kept for the life of the mount, whatever the kernel forgets, so a walk of a
//! million files leaves a million of them: each costs what it must. A copy (most of them) is a
//! small fixed record and its name in one shared buffer, about 40 bytes in all; folders, far
//! fewer, are kept whole.

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
    /// Its folder of DST: an index into `Inodes::rels`.
    rel: u32,
    /// The length of its name, with `VERSIONS_OF` set for the folder of a file's versions.
    len: u16,
}

const VERSIONS_OF: u16 = 1 << 15;

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
#[derive(Default)]
struct Names(Vec<Vec<u8>>);

impl Names {
    fn push(&mut self, name: &[u8]) -> io::Result<u32> {
        let size = 1 << NAME_CHUNK_BITS;
        if self.0.last().is_none_or(|c| c.len() + name.len() > size) {
            if self.0.len() >= 1 << (32 - NAME_CHUNK_BITS) {
                return Err(full());
            }
            self.0.push(Vec::with_capacity(size));
        }
        let n = (self.0.len() - 1) as u32;
        let Some(c) = self.0.last_mut() else {
            return Err(full());
        };
        let at = (n << NAME_CHUNK_BITS) | c.len() as u32;
        c.extend_from_slice(name);
        Ok(at)
    }

    fn get(&self, leaf: &Leaf) -> &[u8] {
        let chunk = (leaf.name_at >> NAME_CHUNK_BITS) as usize;
        let at = (leaf.name_at & ((1 << NAME_CHUNK_BITS) - 1)) as usize;
        let len = (leaf.len & !VERSIONS_OF) as usize;
        self.0
            .get(chunk)
            .and_then(|c| c.get(at..at + len))
            .unwrap_or_default()
    }
}

/// Numbers: the root is 1; then folders take the even numbers and leaves the odd ones, each
/// the next free, so that numbers stay small (some programs still fail on inode numbers past
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
    hasher: RandomState,
}

impl Inodes {
    /// The number of `node`, given now if it has none. The root's is `ROOT`, which the caller
    /// knows. Fails only when a table is full: four billion copies, or folders of DST, or 4 GiB
    /// of names; or for a name longer than 32 KiB.
    pub(super) fn ino(&mut self, node: &Node) -> io::Result<u64> {
        let (rel, name, versions_of) = match node {
            Node::Copy { rel, version } => (rel, version, false),
            Node::VersionsOf { rel, name } => (rel, name, true),
            _ => {
                if let Some(&ino) = self.folder_inos.get(node) {
                    return Ok(ino);
                }
                let ino = 2 + 2 * self.folders.len() as u64;
                self.folders.push(node.clone());
                self.folder_inos.insert(node.clone(), ino);
                return Ok(ino);
            }
        };
        let rel = self.rel_id(rel)?;
        let len = u16::try_from(name.len())
            .ok()
            .filter(|&len| len < VERSIONS_OF)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidFilename))?;
        let len = if versions_of { len | VERSIONS_OF } else { len };
        let hash = self.hasher.hash_one((rel, len, name));
        let (leaves, names) = (&self.leaves, &self.names);
        let same = |&i: &u32| {
            leaves
                .get(i as usize)
                .is_some_and(|l| l.rel == rel && l.len == len && names.get(l) == name.as_slice())
        };
        if let Some(&i) = self.leaf_index.find(hash, same) {
            return Ok(3 + 2 * u64::from(i));
        }
        let i = u32::try_from(self.leaves.len()).map_err(|_| full())?;
        let name_at = self.names.push(name)?;
        self.leaves.push(Leaf { name_at, rel, len });
        let (leaves, names, hasher) = (&self.leaves, &self.names, &self.hasher);
        self.leaf_index
            .insert_unique(hash, i, |&i| match leaves.get(i as usize) {
                Some(l) => hasher.hash_one((l.rel, l.len, names.get(l))),
                None => 0,
            });
        Ok(3 + 2 * u64::from(i))
    }

    /// What number `ino` was given to; `None` for the root and for numbers never given.
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

    fn rel_id(&mut self, rel: &Path) -> io::Result<u32> {
        if let Some(&id) = self.rel_ids.get(rel) {
            return Ok(id);
        }
        let id = u32::try_from(self.rels.len()).map_err(|_| full())?;
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
        let inos: Vec<u64> = nodes.iter().map(|n| t.ino(n).expect("a number")).collect();
        let mut distinct = inos.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), nodes.len(), "{inos:?}");
        assert!(inos.iter().all(|&i| i > ROOT));
        for (node, &ino) in nodes.iter().zip(&inos) {
            assert_eq!(t.ino(node).expect("a number"), ino);
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
                t.ino(&copy(&format!("d{}", i % 7), &name(i)))
                    .expect("a number")
            })
            .collect();
        assert!(t.leaves.0.len() > 2 && t.names.0.len() > 2);
        for (i, &ino) in inos.iter().enumerate() {
            let node = copy(&format!("d{}", i % 7), &name(i));
            assert_eq!(t.node(ino), Some(node.clone()));
            assert_eq!(t.ino(&node).expect("a number"), ino);
        }
        assert_eq!(t.rels.len(), 7);
    }
}
