//! One folder job: open the source folder, index what its destination folder already holds,
//! decide on each entry, stage regular files into the worker's batch, and record what is gone
//! from SRC as a deletion.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::entry::record_deletion_now;
use super::notes::Notes;
use super::shape;
use super::{
    BATCH_BYTES, Batch, Beside, CLOCK_EVERY, Engine, FolderJob, Ready, Step, clone_error, now_stamp,
};
use crate::dest::{Staged, is_temp_name};
use crate::error::{Failure, Op};
use crate::meta::Kind;
use crate::naming::FolderIndex;
use crate::outcome::{Event, Note, Outcome};
use crate::plan::{self, Now};
use crate::source;

/// What a folder job works from.
struct Opened {
    /// The source folder, open.
    src_dir: OwnedFd,
    listing: Vec<(Vec<u8>, Kind)>,
    /// The listing's names, for lookups.
    src_names: HashSet<Vec<u8>>,
    /// What the destination folder holds, by family.
    index: FolderIndex,
}

impl Engine {
    /// Decides on the entries of one source folder and carries the decisions out; regular files
    /// are staged into `batch`.
    pub(super) fn folder(&self, job: &FolderJob, notes: &Notes, batch: &mut Batch) {
        let src_path = self.tree.src.join(&job.rel);
        let send = |src: PathBuf, step: Step, bytes: u64| {
            let note = match step {
                Step::Done(outcome) => Note::Done(Event::new(src, outcome).with_bytes(bytes)),
                Step::Busy(failure) => Note::Busy(Event::failed(src, failure)),
                Step::Unsettled(age) => Note::Unsettled(src, age),
                Step::Locked(first) => Note::Locked(src, first),
                Step::Left => Note::Left(src),
                Step::Staged(..) => return,
            };
            notes.send(note);
        };
        let Opened {
            src_dir,
            listing,
            src_names,
            mut index,
        } = match self.open_job(job, &src_path) {
            Ok(Some(opened)) => opened,
            Ok(None) => return,
            Err(failure) => return send(src_path, Step::Done(Outcome::Failed(failure)), 0),
        };
        let databases = crate::database::in_use(&src_names);
        let clashes = if self.dest.capabilities().case_sensitive {
            HashMap::new()
        } else {
            plan::case_clashes(listing.iter().map(|(n, _)| n.as_slice()))
        };
        let (mut unchanged, mut unchanged_bytes) = (0, 0);
        let mut now = Now::read();
        for (i, (name, kind)) in listing.iter().enumerate() {
            if self.stopped() {
                break;
            }
            if self.passes_over(job, name, *kind, &src_names) {
                continue;
            }
            // The clock is read again after every copy (its name carries the time) and every
            // so many entries, not for each one: a no-change pass reads it hardly at all.
            if i % CLOCK_EVERY == 0 {
                now = Now::read();
            }
            let beside = Beside {
                clash: clashes.get(name).cloned(),
                database: databases
                    .contains(name)
                    .then(|| self.database_changed(&src_dir, name, &src_names))
                    .flatten(),
            };
            let Some((step, size)) = self.entry(&src_dir, name, job, &mut index, now, beside)
            else {
                continue;
            };
            if matches!(step, Step::Staged(..) | Step::Done(Outcome::Copied(_))) {
                now = Now::read();
            }
            let src = src_path.join(OsStr::from_bytes(name));
            match step {
                Step::Done(Outcome::Unchanged) if !self.settings.each_unchanged => {
                    unchanged += 1;
                    unchanged_bytes += size;
                }
                Step::Staged(staged, target) => {
                    let ready = self.ready(job, staged, name, target, src, size);
                    self.stage_into(batch, ready, notes);
                }
                Step::Done(Outcome::Copied(path)) => {
                    job.touched.store(true, Ordering::Relaxed);
                    let event = Event::new(src, Outcome::Copied(path)).with_bytes(size);
                    batch.unsaid.push(event);
                    if batch.unsaid.len() >= self.settings.limits.batch_files {
                        self.commit(batch, notes, false);
                    }
                }
                step => send(src, step, size),
            }
        }
        if !self.stopped() {
            self.record_deletions(job, &src_names, &mut index, notes);
        }
        if unchanged > 0 {
            send(
                src_path,
                Step::Done(Outcome::UnchangedIn(unchanged)),
                unchanged_bytes,
            );
        }
    }

    /// What a job works from; `None` for a source folder that is gone.
    fn open_job(&self, job: &FolderJob, src_path: &Path) -> Result<Option<Opened>, Failure> {
        let src_dir = match source::open_folder(src_path) {
            Ok(fd) => fd,
            // Gone, or a file or symlink now: its parent's job sees to what is there.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory
                    || source::is_symlink_now(&e) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Failure::io(Op::Read, e)),
        };
        let listing = source::list(&src_dir).map_err(|e| Failure::io(Op::Read, e))?;
        let src_names: HashSet<Vec<u8>> = listing.iter().map(|(n, _)| n.clone()).collect();
        let index = self.index(job, &src_names)?;
        Ok(Some(Opened {
            src_dir,
            listing,
            src_names,
            index,
        }))
    }

    /// Whether the job leaves an entry to others: a folder (the walk's), a name it was not
    /// asked about, an excluded one, and a database's companion (copied inside its database's
    /// copy, never as a version of its own).
    fn passes_over(
        &self,
        job: &FolderJob,
        name: &[u8],
        kind: Kind,
        src_names: &HashSet<Vec<u8>>,
    ) -> bool {
        kind == Kind::Dir
            || job.only.as_ref().is_some_and(|only| !only.contains(name))
            || (!self.tree.exclude.is_empty()
                && self
                    .tree
                    .exclude
                    .excludes(&job.rel.join(OsStr::from_bytes(name)), false))
            || crate::database::companion_of(name, src_names).is_some()
    }

    /// The names in the job's destination folder, by family, once temporary files that a killed
    /// run left have been removed (a source file of that very name is a real file's copy and
    /// stays).
    fn index(&self, job: &FolderJob, src_names: &HashSet<Vec<u8>>) -> Result<FolderIndex, Failure> {
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let Some(folder) = job.dest.as_ref().filter(|_| !job.fresh) else {
            return Ok(FolderIndex::with_case(
                Vec::new(),
                src_names,
                case_sensitive,
            ));
        };
        let names = folder
            .list()
            .map_err(|e| Failure::at(Op::ReadFolder, folder.path(), e))?;
        let dry_run = self.settings.dry_run;
        let kept = names.into_iter().filter(|n| {
            let leftover = is_temp_name(n) && !src_names.contains(n) && !dry_run;
            !(leftover && folder.remove_leftover(n).is_ok())
        });
        Ok(FolderIndex::with_case(kept, src_names, case_sensitive))
    }

    /// A staged copy of the entry `name` of the job's folder, to be published as `target`.
    fn ready(
        &self,
        job: &FolderJob,
        staged: Box<dyn Staged>,
        name: &[u8],
        target: Vec<u8>,
        src: PathBuf,
        size: u64,
    ) -> Option<Ready> {
        Some(Ready {
            staged,
            folder: job.dest.clone()?,
            name: name.to_vec(),
            target,
            src,
            size,
            touched: Arc::clone(&job.touched),
        })
    }

    /// Adds a staged copy to the worker's batch, publishing the batch when it is full.
    fn stage_into(&self, batch: &mut Batch, ready: Option<Ready>, notes: &Notes) {
        let Some(ready) = ready else {
            return;
        };
        if batch
            .items
            .last()
            .is_none_or(|last| !Arc::ptr_eq(&last.touched, &ready.touched))
        {
            batch.folders += 1;
        }
        batch.bytes += ready.size;
        batch.items.push(ready);
        if !self.dest.capabilities().group_commit
            || batch.items.len() >= self.settings.limits.batch_files
            || batch.bytes >= BATCH_BYTES
            || batch.folders >= self.settings.limits.batch_dirs
        {
            self.commit(batch, notes, false);
        }
    }

    /// Records, as an empty `NAME_<time>_deleted` in its family, each file or folder of the job's
    /// folder that is gone from SRC: what lets a restore give back the tree as it was.
    fn record_deletions(
        &self,
        job: &FolderJob,
        src_names: &HashSet<Vec<u8>>,
        index: &mut FolderIndex,
        notes: &Notes,
    ) {
        let Some(folder) = job.dest.as_ref().filter(|_| !job.fresh) else {
            return;
        };
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let mut gone = plan::gone(index, src_names, job.only.as_ref(), case_sensitive);
        if let Some(cut) = job.cut {
            // Copies from before the folder's deletion are gone already, as far as a restore
            // goes; folders are decided by their own records below.
            gone.retain(|name| {
                index.latest(name).is_some_and(|m| {
                    shape::copy_captured(&**folder, &m).is_ok_and(|c| c.is_none_or(|c| c >= cut))
                })
            });
        }
        // Folders whose newest record is a deletion, which DST's records may still show there:
        // one that came in a file's place, or came back after its own deletion.
        if index.has_deletions() {
            let dirs = shape::subfolders(&**folder);
            for name in
                plan::gone_after_deletion(index, src_names, job.only.as_ref(), case_sensitive)
            {
                if dirs.contains(&name)
                    && shape::record_folder_gone(&**folder, index, &name).unwrap_or(false)
                {
                    gone.push(name);
                }
            }
        }
        let src_path = self.tree.src.join(&job.rel);
        for name in gone {
            let src = src_path.join(OsStr::from_bytes(&name));
            let outcome = if self.settings.dry_run {
                match index.marker(&name, now_stamp()) {
                    Some(marker) => {
                        index.record(&name, marker.clone());
                        Outcome::WouldDelete(folder.path().join(OsStr::from_bytes(&marker)))
                    }
                    None => continue,
                }
            } else if self.was_full() {
                continue;
            } else {
                match record_deletion_now(&**folder, index, &name) {
                    Ok(path) => {
                        job.touched.store(true, Ordering::Relaxed);
                        Outcome::Deleted(path)
                    }
                    Err(e) => {
                        let failure = Failure::at(Op::WriteInto, folder.path(), clone_error(&e));
                        Outcome::Failed(self.dest_failure(failure, &e))
                    }
                }
            };
            notes.send(Note::Done(Event::new(src, outcome)));
        }
    }
}
