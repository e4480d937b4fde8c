//! A file new to its place in DST (moved or renamed in SRC, or a copy of another file) whose
//! bytes DST already holds elsewhere: where DST can share blocks, its copy starts as a clone of
//! that copy, and only what differs is written (`Staged::copy_changed`, which compares every
//! block, so a candidate that is not the same file costs a whole copy, never a wrong one).
//! Candidates are the newest copies of the same size and modification time, found in an index
//! of DST built the first time a run needs one.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::Engine;
use crate::archive::Archive;
use crate::meta::Meta;

/// Files smaller than this are copied: a clone would save little, and the index stays small.
pub(super) const MOVE_MIN: u64 = 64 << 10;

/// How many candidates of one size are looked at (each costs a `stat`): enough for a folder of
/// photos or disk images of one size, bounded for a tree of many equal files.
const TRIES: usize = 64;

/// Where a copy is: its folder relative to DST, and its name.
type Place = (PathBuf, Vec<u8>);

/// DST's newest copies of at least `MOVE_MIN` bytes, by size; listed the first time a run needs
/// them.
#[derive(Default)]
pub(super) struct Copies(Mutex<Option<HashMap<u64, Vec<Place>>>>);

/// The copy a new one starts as a clone of.
pub(super) enum Base<'a> {
    /// The file's own newest copy, beside it.
    Beside(&'a [u8]),
    /// A copy of the same size and time elsewhere in DST, open.
    Moved(File),
}

impl Engine {
    /// An open copy in DST that holds, by its size and modification time, what the file of
    /// `meta` (new to its place) holds; `None` where DST cannot share blocks, the file
    /// is small, or there is none.
    pub(super) fn moved_from(&self, meta: &Meta) -> Option<File> {
        if !self.dest.capabilities().clone || meta.size < MOVE_MIN {
            return None;
        }
        let candidates: Vec<Place> = {
            let mut copies = self.copies.0.lock().unwrap_or_else(PoisonError::into_inner);
            let index = copies.get_or_insert_with(|| self.index_copies());
            index.get(&meta.size)?.iter().take(TRIES).cloned().collect()
        };
        candidates.into_iter().find_map(|(rel, name)| {
            let folder = self.dest.folder(&rel).ok()??;
            let there = folder.stat(&name).ok()?;
            (there.size == meta.size && there.mtime == meta.mtime)
                .then(|| folder.open_read(&name).ok())?
        })
    }

    /// Remembers a copy just made, so that a later move of it in this run finds it.
    pub(super) fn remember_copy(&self, size: u64, rel: &Path, name: &[u8]) {
        if size < MOVE_MIN {
            return;
        }
        let mut copies = self.copies.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = copies.as_mut() {
            index
                .entry(size)
                .or_default()
                .push((rel.to_path_buf(), name.to_vec()));
        }
    }

    /// Every newest copy in DST of at least `MOVE_MIN` bytes, by size.
    fn index_copies(&self) -> HashMap<u64, Vec<Place>> {
        let archive = Archive::of(&self.dest);
        let mut index: HashMap<u64, Vec<Place>> = HashMap::new();
        for rel in archive.folders(Path::new("")) {
            let Ok((_, histories)) = archive.histories(&rel, None) else {
                continue;
            };
            for h in histories {
                let newest = h.newest_copy().map(|i| &h.versions[i]);
                if let Some(v) = newest.filter(|v| v.size >= MOVE_MIN) {
                    index
                        .entry(v.size)
                        .or_default()
                        .push((rel.clone(), v.name.clone()));
                }
            }
        }
        index
    }
}
