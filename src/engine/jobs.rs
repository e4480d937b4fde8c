//! Where folder jobs come from: a walk of SRC, opening (and making) each destination folder in
//! walk order, or the paths that `watch` saw change, grouped by folder. A file or symlink that
//! is in the way of a folder moves aside into its own family.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::notes::Notes;
use super::{Engine, FolderJob, FolderRecord, Parent, now_stamp, record_deletion_now, shape};
use crate::dest::{self, Folder};
use crate::error::{Failure, Op};
use crate::meta::Meta;
use crate::naming::FolderIndex;
use crate::outcome::{Event, Note};
use crate::scan::Visit;

/// What a walk learns of a folder it arrives at that DST already has.
#[derive(Clone, Copy, Debug, Default)]
struct Arrival {
    /// Its newest deletion, or the one just recorded for a file it replaced.
    cut: Option<u64>,
    /// A record was written into its parent.
    recorded: bool,
    /// Back after its deletion, its change time not moved since.
    back: bool,
}

impl Engine {
    /// Walks the folder `start` (relative to SRC) and everything below it, opening (and, unless
    /// this is a dry run, creating) each folder in DST in walk order, one component at a time.
    pub(super) fn walk_jobs(
        &self,
        start: &Path,
        defer: Option<Duration>,
        jobs: &Sender<FolderJob>,
        notes: &Notes,
    ) -> Vec<FolderRecord> {
        let create = !self.settings.dry_run;
        let mut walk = self.tree.walk(start);
        let mut records = Vec::new();
        // The destination folders on the path to the current one, by depth.
        let mut stack: Vec<Parent> = Vec::new();
        while let Some(visit) = walk.next() {
            if self.stopped() {
                break;
            }
            let (rel, depth, meta) = match visit {
                Visit::Folder { rel, depth, meta } => (rel, depth, meta),
                Visit::Failed(path, failure) => {
                    notes.send(Note::Done(Event::failed(path, failure)));
                    continue;
                }
            };
            let parent = match depth {
                0 => None,
                _ => Some(stack[depth - 1].folder.as_ref()),
            };
            let opened = self.open_folder(parent, &rel, create);
            let opened = match opened {
                Ok(o) => o,
                Err(e) => {
                    self.folder_failed(&rel, Op::CreateFolder, e, notes);
                    walk.skip_current();
                    continue;
                }
            };
            let created = opened.as_ref().is_some_and(|o| o.created);
            stack.truncate(depth);
            let arrived = match (&opened, stack.last_mut()) {
                (Some(o), _) if o.created => Ok(Arrival::default()),
                (Some(o), Some(up)) => self.arrive_below(up, &rel, &o.meta),
                (Some(o), None) => self.arrive_from_root(&rel, &o.meta, &mut HashMap::new()),
                (None, _) => Ok(Arrival::default()),
            };
            let arrival = match arrived {
                Ok(a) => a,
                Err(e) => {
                    self.folder_failed(&rel, Op::WriteInto, e, notes);
                    walk.skip_current();
                    continue;
                }
            };
            if let Some(up) = stack.last()
                && (created || arrival.recorded)
            {
                up.touched.store(true, Ordering::Relaxed);
            }
            let cut = stack.last().and_then(|up| up.cut).max(arrival.cut);
            let touched = Arc::new(AtomicBool::new(false));
            records.push(FolderRecord {
                rel: rel.clone(),
                src: meta,
                dest: opened.as_ref().map(|o| o.meta).unwrap_or_default(),
                created,
                touched: Arc::clone(&touched),
                back: arrival.back,
            });
            let folder = opened.map(|o| o.folder);
            stack.push(Parent {
                folder: folder.clone(),
                touched: Arc::clone(&touched),
                fresh: created,
                cut,
                index: None,
            });
            let job = FolderJob {
                rel,
                dest: folder,
                fresh: created,
                only: None,
                touched,
                defer,
                cut,
            };
            if jobs.send(job).is_err() {
                break;
            }
        }
        records
    }

    /// The folder `rel` failed in DST: said as the source folder's failure.
    fn folder_failed(&self, rel: &Path, op: Op, e: io::Error, notes: &Notes) {
        let failure = Failure::at(op, &self.dest.path().join(rel), e);
        notes.send(Note::Done(Event::failed(self.tree.src.join(rel), failure)));
    }

    /// The folder `rel`, which SRC and DST both have, as the records of its parent (open on
    /// the walk's path as `up`) show it: a file it replaced gets its deletion recorded now.
    fn arrive_below(&self, up: &mut Parent, rel: &Path, meta: &Meta) -> io::Result<Arrival> {
        let (Some(parent), Some(name)) = (up.folder.as_ref(), rel.file_name()) else {
            return Ok(Arrival::default());
        };
        if up.fresh {
            return Ok(Arrival::default());
        }
        if up.index.is_none() {
            let case_sensitive = self.dest.capabilities().case_sensitive;
            up.index = Some(FolderIndex::with_case(
                parent.list()?,
                &HashSet::new(),
                case_sensitive,
            ));
        }
        let index = up
            .index
            .as_mut()
            .ok_or_else(|| io::Error::other("no index"))?;
        let src_dir = self.tree.src.join(rel.parent().unwrap_or(Path::new("")));
        self.arrive(&**parent, index, name.as_bytes(), &src_dir, meta)
    }

    /// `arrive_below` for a folder whose parent the walk has not open: from the root of DST
    /// down, each folder's own deletion and those of the folders above it. `indexes` keeps the
    /// names of each DST folder listed on the way (by its path relative to DST), so that the
    /// folders of one batch list their common ancestors once.
    fn arrive_from_root(
        &self,
        rel: &Path,
        meta: &Meta,
        indexes: &mut HashMap<PathBuf, FolderIndex>,
    ) -> io::Result<Arrival> {
        let mut arrival = Arrival::default();
        let Some(mut folder) = self.dest.folder(Path::new(""))? else {
            return Ok(arrival);
        };
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let mut src_dir = self.tree.src.clone();
        let names: Vec<_> = rel.iter().collect();
        let mut at = PathBuf::new();
        for (i, name) in names.iter().enumerate() {
            let index = match indexes.entry(at.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(FolderIndex::with_case(
                    folder.list()?,
                    &HashSet::new(),
                    case_sensitive,
                )),
            };
            let Some(child) = folder.child(name, false)? else {
                return Ok(arrival);
            };
            let last = i + 1 == names.len();
            let here = if last {
                self.arrive(&*folder, index, name.as_bytes(), &src_dir, meta)?
            } else {
                let is_source = |n: &[u8]| {
                    src_dir
                        .join(OsStr::from_bytes(n))
                        .symlink_metadata()
                        .is_ok()
                };
                let standing = shape::standing(index, name.as_bytes(), &is_source);
                Arrival {
                    cut: standing.deleted,
                    ..Arrival::default()
                }
            };
            arrival = Arrival {
                cut: arrival.cut.max(here.cut),
                ..here
            };
            src_dir.push(name);
            at.push(name);
            folder = child.folder;
        }
        Ok(arrival)
    }

    /// The folder `name` of `parent` (indexed as `index`), which SRC has as a folder in
    /// `src_dir`, with DST's own metadata `meta`: where it stands in its family's records (see
    /// `shape`), and what that asks for.
    fn arrive(
        &self,
        parent: &dyn Folder,
        index: &mut FolderIndex,
        name: &[u8],
        src_dir: &Path,
        meta: &Meta,
    ) -> io::Result<Arrival> {
        let is_source = |n: &[u8]| {
            src_dir
                .join(OsStr::from_bytes(n))
                .symlink_metadata()
                .is_ok()
        };
        let standing = shape::standing(index, name, &is_source);
        if standing.replaces_file && !self.settings.dry_run {
            record_deletion_now(parent, index, name)?;
            return Ok(Arrival {
                cut: Some(now_stamp()),
                recorded: true,
                back: false,
            });
        }
        Ok(Arrival {
            cut: standing.deleted,
            recorded: false,
            back: standing.returned
                && standing
                    .deleted
                    .is_some_and(|d| crate::naming::stamp_at(meta.ctime) < d),
        })
    }

    /// Opens (and, with `create`, makes) the destination folder for `rel`: from its parent's
    /// folder where the walk has it open (`Some(None)`: the parent does not exist in a dry run),
    /// else one component at a time from the root. A file or symlink in the way, where SRC now
    /// has a folder, is moved aside into its own family first. A full destination (no space,
    /// no inodes) stops writing and leaves the folder missing: its files are still decided, to
    /// be counted as not copied, and the fullness is said once, not per folder.
    fn open_folder(
        &self,
        parent: Option<Option<&Arc<dyn Folder>>>,
        rel: &Path,
        create: bool,
    ) -> io::Result<Option<dest::Opened>> {
        match self.open_or_make(parent, rel, create) {
            Err(e) if crate::error::is_full(&e) => {
                self.full.store(true, Ordering::Relaxed);
                Ok(None)
            }
            other => other,
        }
    }

    fn open_or_make(
        &self,
        parent: Option<Option<&Arc<dyn Folder>>>,
        rel: &Path,
        create: bool,
    ) -> io::Result<Option<dest::Opened>> {
        let Some(name) = rel.file_name() else {
            return dest::open_path(&*self.dest, rel, create);
        };
        let parent = match parent {
            Some(Some(parent)) => Arc::clone(parent),
            Some(None) => return Ok(None),
            None => {
                let up = rel.parent().unwrap_or(Path::new(""));
                match dest::open_path(&*self.dest, up, create)? {
                    Some(opened) => opened.folder,
                    None => return Ok(None),
                }
            }
        };
        match parent.child(name, create) {
            Err(e) if create && e.kind() == io::ErrorKind::NotADirectory => {
                self.make_way(&*parent, name.as_bytes())?;
                parent.child(name, create)
            }
            other => other,
        }
    }

    /// A file or symlink in DST where SRC now has a folder: moved aside into its own family as
    /// a version, never replacing, with a record that it was deleted now. Then the folder can be
    /// made, and a restore gives back either shape as it was at its time.
    fn make_way(&self, parent: &dyn Folder, name: &[u8]) -> io::Result<()> {
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let mut index = FolderIndex::with_case(parent.list()?, &HashSet::new(), case_sensitive);
        let entry = parent.stat(name)?;
        let too_long = || io::Error::other(Failure::NameTooLong.to_string());
        let aside = index
            .free_at(name, crate::naming::stamp_at(entry.mtime))
            .ok_or_else(too_long)?;
        parent.set_aside(name, &aside)?;
        index.record(name, aside);
        record_deletion_now(parent, &mut index, name).map(|_| ())
    }

    /// Groups settled paths by folder into jobs that decide on just those entries. A folder
    /// among them only has its own metadata refreshed.
    pub(super) fn file_jobs(
        &self,
        paths: &[PathBuf],
        jobs: &Sender<FolderJob>,
        notes: &Notes,
    ) -> Vec<FolderRecord> {
        let mut by_folder: BTreeMap<PathBuf, Vec<Vec<u8>>> = BTreeMap::new();
        for p in paths {
            match std::fs::symlink_metadata(self.tree.src.join(p)) {
                Ok(m) if m.is_dir() => {
                    by_folder.entry(p.clone()).or_default();
                }
                // A file, or a name that is gone: its folder's job copies it, or records its
                // deletion if DST holds something of it.
                _ => {
                    let parent = p.parent().unwrap_or(Path::new("")).to_path_buf();
                    let name = p.file_name().map(|n| n.as_bytes().to_vec());
                    // (A change of a database's -wal or -journal comes here as its database:
                    // `watch` settles the database on it.)
                    by_folder.entry(parent).or_default().extend(name);
                }
            }
        }
        let mut records = Vec::new();
        let mut indexes = HashMap::new();
        for (rel, names) in by_folder {
            let src = self.tree.src.join(&rel);
            let src_meta = match std::fs::symlink_metadata(&src) {
                // No longer a folder (a file took its place since the event): its parent's job
                // sees to the file, and DST's folder never gets a file's metadata.
                Ok(m) if !m.is_dir() => continue,
                Ok(m) => m,
                // The folder itself is gone: its own removal is recorded in its parent.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    notes.send(Note::Done(Event::failed(src, Failure::io(Op::Read, e))));
                    continue;
                }
            };
            let opened = match self.open_folder(None, &rel, !self.settings.dry_run) {
                Ok(o) => o,
                Err(e) => {
                    let at = self.dest.path().join(&rel);
                    let failure = Failure::at(Op::CreateFolder, &at, e);
                    notes.send(Note::Done(Event::failed(src, failure)));
                    continue;
                }
            };
            let created = opened.as_ref().is_some_and(|o| o.created);
            let arrival = match &opened {
                Some(o) if !created => self.arrive_from_root(&rel, &o.meta, &mut indexes),
                _ => Ok(Arrival::default()),
            };
            let arrival = match arrival {
                Ok(a) => a,
                Err(e) => {
                    let at = self.dest.path().join(&rel);
                    let failure = Failure::at(Op::WriteInto, &at, e);
                    notes.send(Note::Done(Event::failed(src, failure)));
                    continue;
                }
            };
            let touched = Arc::new(AtomicBool::new(false));
            records.push(FolderRecord {
                rel: rel.clone(),
                src: Meta::from_std(&src_meta),
                dest: opened.as_ref().map(|o| o.meta).unwrap_or_default(),
                created,
                touched: Arc::clone(&touched),
                back: arrival.back,
            });
            if names.is_empty() {
                continue;
            }
            let job = FolderJob {
                rel,
                dest: opened.map(|o| o.folder),
                fresh: created,
                only: Some(names.into_iter().collect()),
                touched,
                defer: None,
                cut: arrival.cut,
            };
            if jobs.send(job).is_err() {
                break;
            }
        }
        records
    }
}
