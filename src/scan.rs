//! Walks the source tree, creates each folder in the destination in walk order, and feeds one
//! job per folder to the copy workers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::copy::Copier;
use crate::dest::{Child, Dest, DestDir};
use crate::meta::Meta;
use crate::report::{Event, Outcome, reason};

/// The work for one source folder: copy its entries (all of them, or only the named ones).
pub struct DirJob {
    /// Relative to SRC.
    pub rel: PathBuf,
    pub dest: Arc<DestDir>,
    /// Created by this pass, so known to be empty: no need to list it.
    pub fresh: bool,
    /// `None`: every entry; `Some`: only these names (changes reported by the watcher).
    pub only: Option<HashSet<Vec<u8>>>,
    /// Set when the job published anything into the folder.
    pub touched: Option<Arc<AtomicBool>>,
    /// In `watch`, files found by a walk that changed less than this long ago are left to
    /// settle (`Outcome::Deferred`) instead of copied mid-write.
    pub defer: Option<Duration>,
}

/// A folder that a walk visited, and what it needs once its contents are done: the source's
/// mode and times (set last, since every entry published into it changes its mtime), and an
/// fsync to make new names durable.
#[derive(Debug)]
pub struct DirRecord {
    pub rel: PathBuf,
    pub src: Meta,
    pub dest: Meta,
    pub created: bool,
    pub touched: Arc<AtomicBool>,
}

impl DirRecord {
    /// The record of a destination folder just opened for the source folder `rel`, and the
    /// flag that jobs set when they publish into it.
    pub fn new(rel: PathBuf, src: Meta, child: &Child) -> (DirRecord, Arc<AtomicBool>) {
        let touched = Arc::new(AtomicBool::new(false));
        let record = DirRecord {
            rel,
            src,
            dest: child.meta,
            created: child.created,
            touched: Arc::clone(&touched),
        };
        (record, touched)
    }

    pub fn changed_entries(&self) -> bool {
        self.created || self.touched.load(Ordering::Relaxed)
    }

    pub fn needs_meta(&self, as_root: bool) -> bool {
        self.changed_entries()
            || self.src.mode != self.dest.mode
            || !crate::plan::same_mtime(self.src.mtime, self.dest.mtime)
            || (as_root && (self.src.uid, self.src.gid) != (self.dest.uid, self.dest.gid))
    }
}

/// Opens (creating where missing) the destination folder for `rel`, one component at a time,
/// never following a symlink.
pub fn open_chain(dest: &Dest, rel: &Path) -> std::io::Result<Child> {
    let root = dest.root_dir()?;
    // A dry run's missing destination has no metadata to read.
    let meta = match root.fd() {
        Ok(fd) => Meta::from_stat(&rustix::fs::fstat(fd)?),
        Err(_) => Meta::default(),
    };
    let mut child = Child {
        dir: root,
        created: false,
        meta,
    };
    for name in rel.iter() {
        child = child.dir.child_dir(name)?;
    }
    Ok(child)
}

/// Walks the folder `start` (relative to SRC) and everything below it. Returns the folders
/// visited, in walk order (parents before their contents).
pub fn walk(
    copier: &Copier,
    start: &Path,
    defer: Option<Duration>,
    jobs: &Sender<DirJob>,
    events: &Sender<Event>,
) -> Vec<DirRecord> {
    let root = copier.src.join(start);
    let skip = copier.skip.as_deref();
    let mut it = walkdir::WalkDir::new(&root)
        .follow_links(false)
        .max_open(copier.limits.walk_open)
        .into_iter()
        .filter_entry(|e| walked(copier, e, skip));
    let mut records = Vec::new();
    // The destination folders on the path to the current one, by depth.
    let mut stack: Vec<(Arc<DestDir>, Arc<AtomicBool>)> = Vec::new();
    let mut last_dir = PathBuf::new();
    let fail = |path: &Path, why: String| {
        let _ = events.send(Event::new(path.to_path_buf(), Outcome::Failed(why)));
    };

    while let Some(item) = it.next() {
        if copier.stopped() {
            break;
        }
        let entry = match item {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(&root);
                let gone = e
                    .io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
                // A folder that cannot be listed is reported by the worker that copies it.
                if !gone && path != last_dir {
                    let why = e.io_error().map_or_else(|| e.to_string(), reason);
                    fail(path, format!("cannot read: {why}"));
                }
                continue;
            }
        };
        let depth = entry.depth();
        let rel = start.join(entry.path().strip_prefix(&root).unwrap_or(Path::new("")));
        let src = match entry.metadata() {
            Ok(m) => m,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                it.skip_current_dir();
                continue;
            }
            Err(e) => {
                fail(entry.path(), format!("cannot read: {e}"));
                it.skip_current_dir();
                continue;
            }
        };
        let opened = if depth == 0 {
            open_chain(&copier.dest, &rel)
        } else {
            stack[depth - 1].0.child_dir(entry.file_name())
        };
        let child = match opened {
            Ok(child) => child,
            Err(e) => {
                fail(
                    entry.path(),
                    format!(
                        "cannot create folder {}: {}",
                        crate::report::display(&copier.dest.path().join(&rel)),
                        reason(&e)
                    ),
                );
                it.skip_current_dir();
                continue;
            }
        };
        if child.created && depth > 0 {
            stack[depth - 1].1.store(true, Ordering::Relaxed);
        }
        let (record, touched) = DirRecord::new(rel.clone(), Meta::from_std(&src), &child);
        records.push(record);
        let dir = Arc::new(child.dir);
        stack.truncate(depth);
        stack.push((Arc::clone(&dir), Arc::clone(&touched)));
        last_dir = entry.path().to_path_buf();
        let job = DirJob {
            rel,
            dest: dir,
            fresh: child.created,
            only: None,
            touched: Some(touched),
            defer,
        };
        if jobs.send(job).is_err() {
            break;
        }
    }
    records
}

/// Whether an entry belongs to the backup: not DST, not excluded.
fn covered(copier: &Copier, e: &walkdir::DirEntry, skip: Option<&Path>) -> bool {
    let rel = e.path().strip_prefix(&copier.src).unwrap_or(e.path());
    Some(e.path()) != skip && !copier.exclude.excludes(rel, e.file_type().is_dir())
}

/// Whether a walk goes into this entry: covered folders only.
fn walked(copier: &Copier, e: &walkdir::DirEntry, skip: Option<&Path>) -> bool {
    e.file_type().is_dir() && covered(copier, e, skip)
}

/// Every folder of the tree at `start` (relative to SRC) that a walk would visit, as absolute
/// paths, parents first.
pub fn dirs<'a>(copier: &'a Copier, start: &Path) -> impl Iterator<Item = PathBuf> + 'a {
    let skip = copier.skip.as_deref();
    walkdir::WalkDir::new(copier.src.join(start))
        .follow_links(false)
        .max_open(copier.limits.walk_open)
        .into_iter()
        .filter_entry(move |e| walked(copier, e, skip))
        .filter_map(Result::ok)
        .map(walkdir::DirEntry::into_path)
}

/// The files and bytes a full pass will look at, for the progress bar; `None` when `done` was
/// set first (the pass ended before the count).
pub fn count(copier: &Copier, done: &AtomicBool) -> Option<(u64, u64)> {
    let skip = copier.skip.as_deref();
    let (mut files, mut bytes) = (0u64, 0u64);
    let walk = walkdir::WalkDir::new(&copier.src)
        .follow_links(false)
        .max_open(1)
        .into_iter()
        .filter_entry(|e| covered(copier, e, skip));
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
