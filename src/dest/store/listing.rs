//! What a bucket holds under the prefix, as one listing shows it: objects by folder and name,
//! with the size, ETag and upload time the listing gives, and the modification time and mode
//! that travel as object metadata once they are known. Pure; the store fills it.

use std::collections::{HashMap, HashSet};

use crate::meta::{Kind, Meta, Time};

/// The metadata a copy carries: its source's modification time and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    pub mtime: Time,
    pub mode: u32,
}

/// One object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub size: u64,
    pub etag: Option<String>,
    /// When the store received it: the modification time of an object that carries none.
    pub uploaded: Time,
    /// `None` until read from the object (or the cache of it).
    pub kept: Option<Kept>,
}

impl Object {
    /// The object as an entry of a folder: a regular file with its source's time and mode, or
    /// its upload time and 0644 when it carries none (put there by another tool).
    pub(crate) fn meta(&self) -> Meta {
        let kept = self.kept.unwrap_or(Kept {
            mtime: self.uploaded,
            mode: 0o644,
        });
        Meta {
            kind: Kind::File,
            size: self.size,
            mode: kept.mode,
            atime: kept.mtime,
            mtime: kept.mtime,
            ctime: self.uploaded,
            ..Meta::default()
        }
    }
}

/// The entries of one folder.
#[derive(Clone, Debug, Default)]
pub(crate) struct Listing {
    pub files: HashMap<Vec<u8>, Object>,
    pub dirs: HashSet<Vec<u8>>,
}

impl Listing {
    pub(crate) fn names(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.files.keys().cloned().collect();
        out.extend(
            self.dirs
                .iter()
                .filter(|d| !self.files.contains_key(*d))
                .cloned(),
        );
        out
    }
}

/// Every folder under the prefix, by its path relative to it ("" for the prefix itself).
#[derive(Debug, Default)]
pub(crate) struct Index {
    folders: HashMap<String, Listing>,
}

impl Index {
    pub(crate) fn new() -> Index {
        let mut folders = HashMap::new();
        folders.insert(String::new(), Listing::default());
        Index { folders }
    }

    /// Adds a listed key: `a/b/name` is an object, `a/b/` a folder marker. Every folder above it
    /// exists too, whether or not it has a marker of its own.
    pub(crate) fn add(&mut self, key: &str, object: Option<Object>) {
        let key = key.trim_start_matches('/');
        let (parent, name) = match key.strip_suffix('/') {
            Some(dir) => {
                if dir.is_empty() {
                    return;
                }
                self.ensure(dir);
                return;
            }
            None => split(key),
        };
        if name.is_empty() {
            return;
        }
        self.ensure(parent);
        if let (Some(listing), Some(object)) = (self.folders.get_mut(parent), object) {
            listing.files.insert(name.as_bytes().to_vec(), object);
        }
    }

    /// Makes the folder `rel` and every folder above it exist.
    pub(crate) fn ensure(&mut self, rel: &str) {
        let mut rel = rel.trim_matches('/');
        if self.folders.contains_key(rel) {
            return;
        }
        self.folders.insert(rel.to_string(), Listing::default());
        while !rel.is_empty() {
            let (parent, name) = split(rel);
            // A folder that existed already has every folder above it.
            let existed = self.folders.contains_key(parent);
            self.folders
                .entry(parent.to_string())
                .or_default()
                .dirs
                .insert(name.as_bytes().to_vec());
            if existed {
                return;
            }
            rel = parent;
        }
    }

    pub(crate) fn folder(&self, rel: &str) -> Option<&Listing> {
        self.folders.get(rel)
    }

    pub(crate) fn folder_mut(&mut self, rel: &str) -> Option<&mut Listing> {
        self.folders.get_mut(rel)
    }

    /// Every object, with its key, for the metadata cache.
    pub(crate) fn objects(&self) -> impl Iterator<Item = (String, &Object)> {
        self.folders.iter().flat_map(|(rel, listing)| {
            listing
                .files
                .iter()
                .map(move |(name, o)| (key(rel, name), o))
        })
    }
}

/// `a/b/name` → (`a/b`, `name`); `name` → (``, `name`).
fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// The key of `name` in the folder `rel`, relative to the prefix. Names are checked to be
/// UTF-8 before anything is written (the probe's refusal), so a lossy conversion only ever
/// applies to a read of something that cannot be there.
pub(crate) fn key(rel: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if rel.is_empty() {
        name.into_owned()
    } else {
        format!("{rel}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(size: u64) -> Option<Object> {
        Some(Object {
            size,
            etag: Some(format!("\"{size}\"")),
            uploaded: Time { sec: 5, nsec: 0 },
            kept: None,
        })
    }

    #[test]
    fn keys_become_folders_and_files() {
        let mut index = Index::new();
        index.add("a/b/report.txt", obj(3));
        index.add("top.txt", obj(1));
        index.add("empty/", None);
        let root = index.folder("").unwrap();
        let mut names = root.names();
        names.sort();
        assert_eq!(
            names,
            vec![b"a".to_vec(), b"empty".to_vec(), b"top.txt".to_vec()]
        );
        assert!(index.folder("a").unwrap().dirs.contains(b"b".as_slice()));
        assert_eq!(
            index.folder("a/b").unwrap().files[&b"report.txt".to_vec()].size,
            3
        );
        assert!(index.folder("empty").unwrap().files.is_empty());
        assert!(index.folder("missing").is_none());
        let mut keys: Vec<String> = index.objects().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, vec!["a/b/report.txt", "top.txt"]);
    }

    #[test]
    fn an_object_without_metadata_reads_as_its_upload() {
        let o = obj(3).unwrap();
        let m = o.meta();
        assert_eq!((m.kind, m.size, m.mode), (Kind::File, 3, 0o644));
        assert_eq!(m.mtime, Time { sec: 5, nsec: 0 });
        let kept = Object {
            kept: Some(Kept {
                mtime: Time { sec: 9, nsec: 7 },
                mode: 0o600,
            }),
            ..o
        };
        assert_eq!(kept.meta().mtime, Time { sec: 9, nsec: 7 });
        assert_eq!(kept.meta().mode, 0o600);
    }

    #[test]
    fn keys_join_folders() {
        assert_eq!(key("", b"x"), "x");
        assert_eq!(key("a/b", b"x"), "a/b/x");
    }
}
