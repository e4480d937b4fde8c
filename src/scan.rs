//! Walks the source tree: which folders a pass visits (not DST when it lies inside SRC, not
//! excluded ones), in walk order, parents before their contents. Reads SRC only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Failure, Op};
use crate::exclude::Exclude;
use crate::meta::Meta;

/// The tree a backup covers.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    /// SRC, canonical.
    pub src: PathBuf,
    /// Destinations inside SRC (this backup's, and other pairs'): never walked.
    pub skip: Vec<PathBuf>,
    pub exclude: Exclude,
    /// Folder handles a walk keeps open.
    pub walk_open: usize,
}

/// What a walk finds.
pub(crate) enum Visit {
    /// A folder to back up: relative to SRC, its depth below the walk's start, its metadata.
    Folder {
        rel: PathBuf,
        depth: usize,
        meta: Meta,
    },
    /// Something that could not be read; the walk goes on.
    Failed(PathBuf, Failure),
}

/// Which entries a walk goes into.
type Filter<'a> = Box<dyn FnMut(&walkdir::DirEntry) -> bool + 'a>;

/// A walk of the folders under one start folder; `skip_current` leaves out the subtree of the
/// folder just returned.
pub(crate) struct Walk<'a> {
    start: PathBuf,
    root: PathBuf,
    it: walkdir::FilterEntry<walkdir::IntoIter, Filter<'a>>,
    last_dir: PathBuf,
}

impl Tree {
    /// Whether an entry belongs to the backup: not DST, not excluded.
    fn covered(&self, e: &walkdir::DirEntry) -> bool {
        let rel = e.path().strip_prefix(&self.src).unwrap_or(e.path());
        !self.skip.iter().any(|s| e.path() == s)
            && !self.exclude.excludes(rel, e.file_type().is_dir())
    }

    /// Whether a walk goes into this entry: covered folders only.
    fn walked(&self, e: &walkdir::DirEntry) -> bool {
        e.file_type().is_dir() && self.covered(e)
    }

    /// Walks the folder `start` (relative to SRC) and everything below it.
    pub(crate) fn walk(&self, start: &Path) -> Walk<'_> {
        let root = self.src.join(start);
        let filter: Filter<'_> = Box::new(|e| self.walked(e));
        let it = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .max_open(self.walk_open)
            .into_iter()
            .filter_entry(filter);
        Walk {
            start: start.to_path_buf(),
            root,
            it,
            last_dir: PathBuf::new(),
        }
    }

    /// Every folder of the tree at `start` (relative to SRC) that a walk would visit, as absolute
    /// paths, parents first.
    pub(crate) fn folders(&self, start: &Path) -> impl Iterator<Item = PathBuf> + '_ {
        walkdir::WalkDir::new(self.src.join(start))
            .follow_links(false)
            .max_open(self.walk_open)
            .into_iter()
            .filter_entry(move |e| self.walked(e))
            .filter_map(Result::ok)
            .map(walkdir::DirEntry::into_path)
    }

    /// The files and bytes a full pass will look at, for the progress bar; `None` when `done`
    /// was set first (the pass ended before the count).
    pub(crate) fn count(&self, done: &AtomicBool) -> Option<(u64, u64)> {
        let (mut files, mut bytes) = (0u64, 0u64);
        let walk = walkdir::WalkDir::new(&self.src)
            .follow_links(false)
            .max_open(1)
            .into_iter()
            .filter_entry(|e| self.covered(e));
        for entry in walk.flatten() {
            if done.load(Ordering::Relaxed) {
                return None;
            }
            if !entry.file_type().is_dir() {
                files += 1;
                if entry.file_type().is_file() {
                    bytes += entry.metadata().map_or(0, |m| m.len());
                }
            }
        }
        Some((files, bytes))
    }
}

impl Walk<'_> {
    /// Leaves out everything below the folder returned last.
    pub(crate) fn skip_current(&mut self) {
        self.it.skip_current_dir();
    }
}

impl Iterator for Walk<'_> {
    type Item = Visit;

    fn next(&mut self) -> Option<Visit> {
        loop {
            let entry = match self.it.next()? {
                Ok(entry) => entry,
                Err(e) => {
                    let path = e.path().unwrap_or(&self.root).to_path_buf();
                    let gone = e
                        .io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
                    // A folder that cannot be listed is reported by the worker that copies it.
                    if gone || path == self.last_dir {
                        continue;
                    }
                    let error = e.into_io_error().unwrap_or_else(|| {
                        std::io::Error::other("a symlink loop or an unreadable entry")
                    });
                    return Some(Visit::Failed(path, Failure::io(Op::Read, error)));
                }
            };
            let meta = match entry.metadata() {
                Ok(m) => Meta::from_std(&m),
                Err(e) => {
                    self.it.skip_current_dir();
                    match e.into_io_error() {
                        Some(io) if io.kind() == std::io::ErrorKind::NotFound => continue,
                        Some(io) => {
                            let path = entry.path().to_path_buf();
                            return Some(Visit::Failed(path, Failure::io(Op::Read, io)));
                        }
                        None => continue,
                    }
                }
            };
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .unwrap_or(Path::new(""));
            self.last_dir = entry.path().to_path_buf();
            return Some(Visit::Folder {
                rel: self.start.join(rel),
                depth: entry.depth(),
                meta,
            });
        }
    }
}
