//! One entry of a folder job: the facts about it gathered, `plan`'s decision taken, and the
//! decision carried out (a file staged for its batch, a symlink published, a database copied
//! with SQLite, a copy's metadata set again, a deletion recorded).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use rustix::fs::AtFlags;

use super::moved::Base;
use super::{Beside, Engine, FolderJob, Step, clone_error, now_stamp, shape};
use crate::dest::{Folder, Patched, Staged};
use crate::error::{Failure, Op};
use crate::meta::{Kind, Meta};
use crate::naming::FolderIndex;
use crate::outcome::{Outcome, Refreshed};
use crate::plan::{self, Decision, Facts, Now, RETRY_BACKOFF};
use crate::report::Warning;
use crate::source;

impl Engine {
    /// Gathers the facts about one entry, decides, and carries the decision out. `None` for a
    /// folder (the walk handles those); else what became of it and its size.
    pub(super) fn entry(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        job: &FolderJob,
        index: &mut FolderIndex,
        now: Now,
        beside: Beside,
    ) -> Option<(Step, u64)> {
        let src = match source::stat(src_dir, name) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Some((Step::Done(Outcome::Vanished), 0));
            }
            Err(e) => return Some((Step::Done(Outcome::Failed(Failure::io(Op::Read, e))), 0)),
        };
        let size = src.size;
        let mut facts = match self.facts(src_dir, name, src, job.dest.as_deref(), index, job.cut) {
            Ok(f) => f,
            Err(outcome) => return Some((Step::Done(outcome), size)),
        };
        facts.clash = beside.clash;
        facts.database = beside.database;
        if let Err(failure) = self.folder_replaced(job, &facts, index, name) {
            return Some((Step::Done(Outcome::Failed(failure)), size));
        }
        let rules = self.rules(job.defer);
        let mut decision = plan::decide(name, &facts, index, &rules, now);
        if let (Decision::CompareContents, Some(folder)) = (&decision, &job.dest) {
            facts.same_contents = Some(self.same_contents(src_dir, name, &**folder, index));
            decision = plan::decide(name, &facts, index, &rules, now);
        }
        if let (Decision::CompareXattrs, Some(folder)) = (&decision, &job.dest) {
            facts.xattrs_differ = Some(self.xattrs_differ(src_dir, name, &**folder, index));
            decision = plan::decide(name, &facts, index, &rules, now);
        }
        if matches!(decision, Decision::Copy { .. }) {
            // Room is made first (`--keep-free`), so that what fits is judged after it. The file's
            // data (its blocks) is asked for only then: the walk's metadata has no block count.
            self.make_room(|| {
                rustix::fs::statat(src_dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(facts.src.size, |st| needed(&st))
            });
        }
        let step = match decision {
            Decision::Walk => return None,
            Decision::Unchanged | Decision::CompareContents | Decision::CompareXattrs => {
                Step::Done(Outcome::Unchanged)
            }
            Decision::Refresh(what) => self.refresh(src_dir, name, &facts.src, job, index, what),
            Decision::Skip(why) => Step::Done(Outcome::Skipped(why)),
            Decision::Defer(age) => Step::Unsettled(age),
            Decision::Fail(failure) => Step::Done(Outcome::Failed(failure)),
            Decision::Copy { to, change } => match &job.dest {
                _ if self.was_full() && !self.settings.dry_run && !self.fits(facts.src.size) => {
                    Step::Done(Outcome::Failed(Failure::DestinationFull))
                }
                Some(folder) if !self.settings.dry_run => {
                    let at = Place {
                        src_dir,
                        name,
                        folder: &**folder,
                        src: self.tree.src.join(&job.rel).join(OsStr::from_bytes(name)),
                    };
                    self.carry_out(&at, &facts, index)
                }
                None if !self.settings.dry_run => {
                    Step::Done(Outcome::Failed(Failure::DestinationFull))
                }
                _ => {
                    index.record(name, to.clone());
                    let base = job.dest.as_ref().map_or_else(
                        || self.dest.path().join(&job.rel),
                        |f| f.path().to_path_buf(),
                    );
                    Step::Done(Outcome::WouldCopy(
                        base.join(OsStr::from_bytes(&to)),
                        change,
                    ))
                }
            },
        };
        Some((step, size))
    }

    /// A folder in DST where SRC now has a file: its deletion is recorded first (while DST's
    /// records still show the folder there, see `shape`), so that the file's versions come
    /// after it and a restore gives back one shape at a time.
    fn folder_replaced(
        &self,
        job: &FolderJob,
        facts: &Facts,
        index: &mut FolderIndex,
        name: &[u8],
    ) -> Result<(), Failure> {
        let Some(folder) = &job.dest else {
            return Ok(());
        };
        if self.settings.dry_run || !matches!(facts.src.kind, Kind::File | Kind::Symlink) {
            return Ok(());
        }
        let at = |e: io::Error| Failure::at(Op::WriteInto, folder.path(), e);
        let there = match &facts.latest {
            Some(latest) => latest.kind == Kind::Dir,
            // The newest record is a deletion: a folder may stand under the plain name still.
            None => {
                index.family(name).first().is_some_and(|m| m.key.is_none())
                    && folder.stat(name).is_ok_and(|m| m.kind == Kind::Dir)
                    && shape::record_folder_gone(&**folder, index, name).map_err(at)?
            }
        };
        if there {
            record_deletion_now(&**folder, index, name).map_err(at)?;
            job.touched.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// What `plan` needs to know about an entry besides its own metadata: its newest copy and,
    /// for a symlink, both targets. An entry that cannot be looked at ends here.
    fn facts(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        src: Meta,
        folder: Option<&dyn Folder>,
        index: &FolderIndex,
        cut: Option<u64>,
    ) -> Result<Facts, Outcome> {
        // After a recorded deletion the file has no copy: it is new again. So is a file whose
        // copies are all from before its folder's deletion was recorded (the folder came
        // back): a restore leaves those out.
        let member = index
            .latest(name)
            .filter(|m| !m.key.is_some_and(|k| k.deleted));
        let member = match (member, cut, folder) {
            (Some(m), Some(cut), Some(folder))
                if shape::copy_captured(folder, &m).is_ok_and(|c| c.is_some_and(|c| c < cut)) =>
            {
                None
            }
            (m, ..) => m,
        };
        let latest = match (folder, member) {
            (Some(folder), Some(member)) => match folder.stat(&member.name) {
                Ok(meta) => Some((meta, member.name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    let at = folder.path().join(OsStr::from_bytes(&member.name));
                    return Err(Outcome::Failed(Failure::at(Op::Read, &at, e)));
                }
            },
            _ => None,
        };
        let link = if src.kind == Kind::Symlink {
            let target = match source::read_link(src_dir, name) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Outcome::Vanished),
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    return Err(Outcome::Skipped("no longer a symlink"));
                }
                Err(e) => return Err(Outcome::Failed(Failure::io(Op::ReadLink, e))),
            };
            let copy = match (&latest, folder) {
                (Some((meta, n)), Some(folder)) if meta.kind == Kind::Symlink => {
                    folder.read_link(n).ok()
                }
                _ => None,
            };
            Some((target, copy))
        } else {
            None
        };
        Ok(Facts {
            src,
            latest: latest.map(|(meta, _)| meta),
            link,
            same_contents: None,
            clash: None,
            xattrs_differ: None,
            database: None,
        })
    }

    /// Compares the source file `name` with its newest copy by `same`; `None` when either
    /// cannot be opened or read (then the copy is taken to differ).
    fn against_copy(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        folder: &dyn Folder,
        index: &FolderIndex,
        same: impl FnOnce(File, File) -> io::Result<bool>,
    ) -> Option<bool> {
        let latest = index.latest(name)?;
        let src = source::open_file(src_dir, name).ok()?;
        let copy = folder.open_read(&latest.name).ok()?;
        same(src, copy).ok()
    }

    /// Whether the source file and its newest copy hold the same bytes.
    fn same_contents(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        folder: &dyn Folder,
        index: &FolderIndex,
    ) -> bool {
        self.against_copy(src_dir, name, folder, index, source::same_bytes)
            .unwrap_or(false)
    }

    /// Whether the extended attributes of the source file and its newest copy differ.
    fn xattrs_differ(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        folder: &dyn Folder,
        index: &FolderIndex,
    ) -> bool {
        let same = |a: File, b: File| Ok(crate::meta::xattrs(&a)? == crate::meta::xattrs(&b)?);
        !self
            .against_copy(src_dir, name, folder, index, same)
            .unwrap_or(false)
    }

    /// Carries out a refresh decision: what changed of the newest copy's mode, owner, extended
    /// attributes and times set again from the source, its contents untouched.
    fn refresh(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        job: &FolderJob,
        index: &FolderIndex,
        what: Refreshed,
    ) -> Step {
        let (Some(folder), Some(latest)) = (&job.dest, index.latest(name)) else {
            return Step::Done(Outcome::Unchanged);
        };
        let path = folder.path().join(OsStr::from_bytes(&latest.name));
        if self.settings.dry_run {
            return Step::Done(Outcome::WouldUpdate(path, what));
        }
        let done = source::open_file(src_dir, name)
            .and_then(|src| folder.update_meta(&latest.name, meta, &src, what.time));
        match done {
            Ok(()) => Step::Done(Outcome::Updated(path, what)),
            Err(e) => Step::Done(Outcome::Failed(Failure::at(Op::SetMetadata, &path, e))),
        }
    }

    /// Carries out a copy decision: a symlink is published at once, a regular file is staged.
    /// The name of the copy is chosen once its contents are read: a version is named for the
    /// time it captured.
    fn carry_out(&self, at: &Place, facts: &Facts, index: &mut FolderIndex) -> Step {
        let Some((target, _)) = &facts.link else {
            let step = match facts.database {
                Some(changed) => self.stage_database(at, index, changed),
                None => {
                    // A new version starts from the copy before, where DST can share blocks;
                    // a file new here, from a copy of it elsewhere (moved, or renamed).
                    let beside = facts
                        .latest
                        .filter(|m| m.kind == Kind::File)
                        .and_then(|_| index.latest(at.name))
                        .map(|m| m.name);
                    let base = match &beside {
                        Some(name) => Some(Base::Beside(name)),
                        None => match self.moved_from(&facts.src, at.name) {
                            Some(found) if !self.dest.capabilities().clone => {
                                if let Some(step) = self.link_moved(at, &facts.src, &found, index) {
                                    return step;
                                }
                                None
                            }
                            found => found.map(|f| Base::Moved(f.file)),
                        },
                    };
                    self.stage_file(at, base.as_ref())
                }
            };
            return match step {
                Prepared::Copy(staged) => {
                    let step = name_staged(staged, at.name, index);
                    if let (Step::Staged(_, to), Ok(rel)) =
                        (&step, at.folder.path().strip_prefix(self.dest.path()))
                    {
                        self.remember_copy(facts.src.size, rel, at.name, to);
                    }
                    step
                }
                Prepared::Done(step) => step,
            };
        };
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let Some(first) = index.target(at.name, now_stamp()) else {
            return Step::Done(Outcome::Failed(Failure::NameTooLong));
        };
        let outcome = publish_free(at.folder, case_sensitive, at.name, first, |n| {
            at.folder.symlink(target, n, &facts.src)
        });
        if let Outcome::Copied(path) = &outcome
            && let Some(n) = path.file_name()
        {
            index.record(at.name, n.as_bytes().to_vec());
        }
        Step::Done(outcome)
    }

    /// The space there was when the run began, when a whole copy of `size` bytes is larger:
    /// such a file fails alone before anything is written, so that it neither fills the
    /// destination nor holds up the files that fit. A new version that may share blocks with
    /// the copy before (`base`) needs only what changed, and is tried.
    fn too_big(&self, size: u64, base: Option<&Base>) -> Option<u64> {
        if base.is_some() && self.dest.capabilities().clone {
            return None;
        }
        let room = self.free_at_start.load(Ordering::Relaxed);
        (size > room).then_some(room)
    }

    /// The failure of a copy into DST. Out of space, a file larger than the space there was
    /// when the run began fails alone (a clone that had to be copied whole, say); any other
    /// means that the files copied filled the destination (see `fits`).
    fn copy_failure(&self, size: u64, need: u64, e: &io::Error) -> Failure {
        let room = self.free_at_start.load(Ordering::Relaxed);
        if crate::error::is_full(e) && need > room {
            return Failure::DoesNotFit { size, free: room };
        }
        self.dest_failure(Failure::io(Op::Copy, clone_error(e)), e)
    }

    /// Whether a file of `size` bytes is still tried once the destination was found full: when
    /// it fits in what is free now, so that the files that fit land.
    fn fits(&self, size: u64) -> bool {
        self.dest.free_space().is_some_and(|free| size <= free)
    }

    /// Gives a staged copy its metadata and ends its writing. With the folder's `index`, the
    /// copy of a database that holds what its newest copy holds is dropped (see `dedupe`).
    pub(super) fn finish(
        &self,
        at: &Place,
        mut staged: Box<dyn Staged>,
        meta: &Meta,
        src: &File,
        index: Option<&FolderIndex>,
    ) -> Prepared {
        let failed = |f: Failure, e: &io::Error| {
            Prepared::Done(Step::Done(Outcome::Failed(self.dest_failure(f, e))))
        };
        if let Err(e) = staged.set_meta(meta, src) {
            return failed(Failure::io(Op::SetMetadata, clone_error(&e)), &e);
        }
        if let Some(index) = index
            && let Some(done) = self.dedupe(at, &*staged, meta, src, index)
        {
            return Prepared::Done(done);
        }
        if let Err(e) = staged.close() {
            return failed(Failure::io(Op::Write, clone_error(&e)), &e);
        }
        Prepared::Copy(staged)
    }

    /// Copies a regular file into a staged copy (see `read_into`) and finishes it.
    pub(super) fn stage_file(&self, at: &Place, base: Option<&Base>) -> Prepared {
        match self.read_into(at, false, base) {
            Ok((staged, meta, src)) => self.finish(at, staged, &meta, &src, None),
            Err(step) => Prepared::Done(step),
        }
    }

    /// Reads a regular file into a new staged copy, retrying with back-off while it changes
    /// under the read; a copy that may mix two states is thrown away, never published. Returns
    /// the copy, the file's metadata as read and the open file. `by_path`: a copy that SQLite
    /// will open by its path. `base`: the file's newest copy in the folder, which the new one
    /// starts as a clone of where the destination can share blocks.
    pub(super) fn read_into(
        &self,
        at: &Place,
        by_path: bool,
        base: Option<&Base>,
    ) -> Result<(Box<dyn Staged>, Meta, File), Step> {
        let failed = |f: Failure| Step::Done(Outcome::Failed(f));
        for wait in std::iter::once(None).chain(RETRY_BACKOFF.iter().map(Some)) {
            if let Some(wait) = wait {
                std::thread::sleep(*wait);
            }
            let src = match source::open_file(at.src_dir, at.name) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Step::Done(Outcome::Vanished));
                }
                Err(e) if source::is_symlink_now(&e) => {
                    return Err(Step::Done(Outcome::Skipped("no longer a regular file")));
                }
                Err(e) => return Err(failed(Failure::io(Op::Open, e))),
            };
            let st = rustix::fs::fstat(&src).map_err(|e| failed(Failure::io(Op::Read, e)))?;
            let before = Meta::from_stat(&st);
            if before.kind != Kind::File {
                return Err(Step::Done(Outcome::Skipped("no longer a regular file")));
            }
            // A sparse file's copy keeps its holes: what it needs is its data.
            let need = needed(&st);
            if let Some(free) = self.too_big(need, base) {
                let size = before.size;
                return Err(failed(Failure::DoesNotFit { size, free }));
            }
            let on_dest = |f: Failure, e: &io::Error| failed(self.dest_failure(f, e));
            let staging = if by_path {
                at.folder.stage_by_path(at.name, before.mode)
            } else {
                at.folder.stage(at.name, before.mode)
            };
            let mut staged = staging.map_err(|e| {
                on_dest(
                    Failure::at(Op::WriteInto, at.folder.path(), clone_error(&e)),
                    &e,
                )
            })?;
            let copied = match self.copy(at, &mut *staged, &src, before.size, base) {
                Ok(n) => n,
                Err(e) => {
                    // Its partial data goes first: what is free without it decides.
                    drop(staged);
                    return Err(failed(self.copy_failure(before.size, need, &e)));
                }
            };
            let after = source::fstat(&src).map_err(|e| failed(Failure::io(Op::Read, e)))?;
            if plan::changed_while_read(&before, &after, copied) {
                continue;
            }
            return Ok((staged, before, src));
        }
        Err(Step::Busy(Failure::KeptChanging {
            attempts: RETRY_BACKOFF.len() + 1,
        }))
    }

    /// Copies `src` into `staged`: as a clone of `base` with what changed written, where the
    /// destination can, else whole.
    fn copy(
        &self,
        at: &Place,
        staged: &mut dyn Staged,
        src: &File,
        size: u64,
        base: Option<&Base>,
    ) -> io::Result<u64> {
        let base = match base {
            _ if !self.dest.capabilities().clone => None,
            Some(Base::Beside(name)) => at.folder.open_read(name).ok(),
            Some(Base::Moved(copy)) => copy.try_clone().ok(),
            None => None,
        };
        if let Some(base) = base {
            match staged.copy_changed(src, size, &base)? {
                Patched::Copied(n) => return Ok(n),
                Patched::Whole(Some(why)) if !self.said_no_clone.swap(true, Ordering::Relaxed) => {
                    self.warn(Warning::NoClone {
                        src: at.src.clone(),
                        why,
                    });
                }
                Patched::Whole(_) => {}
            }
        }
        staged.copy_from(src, size)
    }
}

/// The bytes a copy of a file takes where holes stay holes: its data (blocks), at most its size.
fn needed(st: &rustix::fs::Stat) -> u64 {
    let blocks = u64::try_from(st.st_blocks).unwrap_or(0);
    blocks.saturating_mul(512).min(st.st_size as u64)
}

/// Where a copy of one entry comes from and goes to.
pub(super) struct Place<'a> {
    pub(super) src_dir: &'a OwnedFd,
    pub(super) name: &'a [u8],
    pub(super) folder: &'a dyn Folder,
    /// The entry's path in SRC, for messages and for what is remembered about it.
    pub(super) src: PathBuf,
}

/// A staged copy, or what became of the entry instead.
pub(super) enum Prepared {
    Copy(Box<dyn Staged>),
    Done(Step),
}

/// Names a staged copy for the time its contents were read: the next free version name now.
fn name_staged(staged: Box<dyn Staged>, name: &[u8], index: &mut FolderIndex) -> Step {
    match index.target(name, now_stamp()) {
        Some(to) => {
            index.record(name, to.clone());
            Step::Staged(staged, to)
        }
        None => Step::Done(Outcome::Failed(Failure::NameTooLong)),
    }
}

/// Records that `name` was deleted now: an empty file under the next free `_deleted` name of
/// its family, created exclusively (an empty file cannot be half-written, so it needs no
/// temporary name; it becomes durable with its folder's sync). Returns its path.
pub(super) fn record_deletion_now(
    folder: &dyn Folder,
    index: &mut FolderIndex,
    name: &[u8],
) -> io::Result<PathBuf> {
    for _ in 0..100 {
        let marker = index
            .marker(name, now_stamp())
            .ok_or_else(|| io::Error::other(Failure::NameTooLong.to_string()))?;
        let made = folder.create_empty(&marker);
        index.record(name, marker.clone());
        match made {
            Ok(()) => return Ok(folder.path().join(OsStr::from_bytes(&marker))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(Failure::NoFreeName.to_string()))
}

/// Publishes under `first`, the name reserved for a copy of `name`, never replacing: if
/// something took that name since the folder was listed, the folder is listed again for the next
/// free version name.
pub(super) fn publish_free(
    folder: &dyn Folder,
    case_sensitive: bool,
    name: &[u8],
    first: Vec<u8>,
    mut publish_as: impl FnMut(&[u8]) -> io::Result<()>,
) -> Outcome {
    let mut target = first;
    for _ in 0..100 {
        match publish_as(&target) {
            Ok(()) => return Outcome::Copied(folder.path().join(OsStr::from_bytes(&target))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let listing = match folder.list() {
                    Ok(l) => l,
                    Err(e) => return Outcome::Failed(Failure::io(Op::Publish, e)),
                };
                let index = FolderIndex::with_case(listing, &HashSet::new(), case_sensitive);
                match index.target(name, now_stamp()) {
                    Some(t) => target = t,
                    None => return Outcome::Failed(Failure::NameTooLong),
                }
            }
            Err(e) => return Outcome::Failed(Failure::io(Op::Publish, e)),
        }
    }
    Outcome::Failed(Failure::NoFreeName)
}
