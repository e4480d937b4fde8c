//! A file new to its place in DST (moved or renamed in SRC, or a copy of another file) whose
//! bytes DST already holds elsewhere costs no data:
//! - where DST can share blocks, its copy starts as a clone of that copy, and only what differs
//!   is written (`Staged::copy_changed`, which compares every block, so a candidate that is not
//!   the same file costs a whole copy, never a wrong one);
//! - else, where DST can give a copy a second name (a hard link, a server-side copy), the copy
//!   there becomes the new place's copy, once the source is found to hold the very same bytes
//!   and metadata that it does.
//!
//! Candidates are the newest copies of the same size and modification time, found in an index
//! of DST built the first time a run needs one.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::Engine;
use super::entry::{Place as At, publish_free};
use super::{Step, now_stamp};
use crate::archive::Archive;
use crate::dest::Elsewhere;
use crate::meta::Meta;
use crate::naming::FolderIndex;
use crate::outcome::Outcome;
use crate::plan;
use crate::source;

/// Files smaller than this are copied: a clone would save little, and the index stays small.
pub(super) const MOVE_MIN: u64 = 64 << 10;

/// How many candidates of one size are looked at (each costs a `stat`): enough for a folder of
/// photos or disk images of one size, bounded for a tree of many equal files.
const TRIES: usize = 64;

/// Where a copy is: its folder relative to DST, its name, and its file's name in SRC.
type Place = (PathBuf, Vec<u8>, Vec<u8>);

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

/// A copy elsewhere in DST that looks like a file new to its place.
pub(super) struct Found {
    rel: PathBuf,
    name: Vec<u8>,
    meta: Meta,
    pub(super) file: File,
}

impl Engine {
    /// An open copy in DST that holds, by its size and modification time, what the file `name`
    /// of `meta` (new to its place) holds; `None` where DST can neither share blocks nor give a
    /// copy a second name, the file is small, or there is none. Copies of a file of the same
    /// name come first: files written together often share a size and a time (the clock's tick
    /// is coarse), and a moved file keeps its name more often than not.
    pub(super) fn moved_from(&self, meta: &Meta, name: &[u8]) -> Option<Found> {
        let caps = self.dest.capabilities();
        if !(caps.clone || caps.link) || meta.size < MOVE_MIN {
            return None;
        }
        let candidates: Vec<Place> = {
            let mut copies = self.copies.0.lock().unwrap_or_else(PoisonError::into_inner);
            let index = copies.get_or_insert_with(|| self.index_copies());
            let all = index.get(&meta.size)?;
            let (same, other): (Vec<&Place>, Vec<&Place>) = all
                .iter()
                .partition(|(_, _, family)| family.as_slice() == name);
            same.into_iter().chain(other).take(TRIES).cloned().collect()
        };
        candidates.into_iter().find_map(|(rel, name, _)| {
            let folder = self.dest.folder(&rel).ok()??;
            let there = folder.stat(&name).ok()?;
            let time = plan::same_time(meta.mtime, there.mtime, caps.precision, caps.local_time);
            if there.size != meta.size || !time {
                return None;
            }
            let file = folder.open_read(&name).ok()?;
            Some(Found {
                rel,
                name,
                meta: there,
                file,
            })
        })
    }

    /// Gives the file at `at` (of `src`) the copy `found` as its copy, without writing the data
    /// again, once the source is read and found to hold the very bytes, and to have the mode,
    /// owner and extended attributes, that the copy has (what DST keeps of them): a look-alike is
    /// never named. `None` when it is not, or the destination cannot: the file is then copied.
    pub(super) fn link_moved(
        &self,
        at: &At,
        src: &Meta,
        found: &Found,
        index: &mut FolderIndex,
    ) -> Option<Step> {
        let caps = self.dest.capabilities();
        let kept = |a: &Meta, b: &Meta| {
            (!caps.permissions || a.mode == b.mode)
                && (!caps.owners || (a.uid, a.gid) == (b.uid, b.gid))
        };
        if !kept(src, &found.meta) {
            return None;
        }
        let file = source::open_file(at.src_dir, at.name).ok()?;
        if caps.xattrs
            && crate::meta::xattrs(&file).ok()? != crate::meta::xattrs(&found.file).ok()?
        {
            return None;
        }
        let same = source::same_bytes(file.try_clone().ok()?, found.file.try_clone().ok()?);
        // Read through, and unchanged meanwhile: else the next look at it copies it.
        let after = source::fstat(&file).ok()?;
        if !same.ok()? || after.size != src.size || after.mtime != src.mtime {
            return None;
        }
        let first = index.target(at.name, now_stamp())?;
        let from = Elsewhere {
            rel: &found.rel,
            name: &found.name,
            file: &found.file,
        };
        let outcome = publish_free(at.folder, caps.case_sensitive, at.name, first, |n| {
            at.folder.link(&from, n)
        });
        let Outcome::Copied(path) = outcome else {
            return None;
        };
        let name = path.file_name()?.as_encoded_bytes().to_vec();
        index.record(at.name, name.clone());
        if let Ok(rel) = at.folder.path().strip_prefix(self.dest.path()) {
            self.remember_copy(src.size, rel, at.name, &name);
        }
        Some(Step::Done(Outcome::Copied(path)))
    }

    /// Remembers a copy just made (`name`, of the file `family`), so that a later move of it
    /// in this run finds it.
    pub(super) fn remember_copy(&self, size: u64, rel: &Path, family: &[u8], name: &[u8]) {
        if size < MOVE_MIN {
            return;
        }
        let mut copies = self.copies.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = copies.as_mut() {
            index.entry(size).or_default().push((
                rel.to_path_buf(),
                name.to_vec(),
                family.to_vec(),
            ));
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
                    index.entry(v.size).or_default().push((
                        rel.clone(),
                        v.name.clone(),
                        h.name.clone(),
                    ));
                }
            }
        }
        index
    }
}
