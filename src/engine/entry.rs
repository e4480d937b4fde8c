//! One entry of a folder job: the facts about it gathered, `plan`'s decision taken, and the
//! decision carried out (a file staged for its batch, a symlink published, a database copied
//! with SQLite, a copy's metadata set again, a deletion recorded).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Beside, Engine, FolderJob, Step, clone_error, now_stamp, shape};
use crate::database::NoSnapshot;
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
                _ if self.was_full() && !self.settings.dry_run => {
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
                    // A new version starts from the copy before, where DST can share blocks.
                    let base = facts
                        .latest
                        .filter(|m| m.kind == Kind::File)
                        .and_then(|_| index.latest(at.name))
                        .map(|m| m.name);
                    self.stage_file(at, base.as_deref())
                }
            };
            return match step {
                Prepared::Copy(staged) => name_staged(staged, at.name, index),
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

    /// For a file with a `-wal` or `-journal` beside it (a SQLite database in use, if its header
    /// says so): the newest modification time among those.
    pub(super) fn database_changed(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        src_names: &HashSet<Vec<u8>>,
    ) -> Option<crate::meta::Time> {
        crate::database::changing_companions(name)
            .iter()
            .filter(|c| src_names.contains(*c))
            .filter_map(|c| source::stat(src_dir, c).ok())
            .map(|m| m.mtime)
            .max()
    }

    /// Copies a SQLite database with SQLite's own online backup: one file holding its last
    /// committed state, WAL content included, given the time of its newest change (in any of
    /// its files). A file that is no database after all, or whose file alone is the database,
    /// is copied as a file; one SQLite cannot read (encrypted, corrupt) too, with a warning. One
    /// that another program keeps locked is left for later (see `locked`). A copy that holds
    /// what the newest copy holds makes no new version (see `dedupe`).
    fn stage_database(
        &self,
        at: &Place,
        index: &FolderIndex,
        changed: crate::meta::Time,
    ) -> Prepared {
        let failed = |f: Failure| Prepared::Done(Step::Done(Outcome::Failed(f)));
        let src = match source::open_file(at.src_dir, at.name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Prepared::Done(Step::Done(Outcome::Vanished));
            }
            Err(e) => return failed(Failure::io(Op::Open, e)),
        };
        if !crate::database::is_database(&src) {
            return self.stage_file(at, None);
        }
        let mut meta = match source::fstat(&src) {
            Ok(m) => m,
            Err(e) => return failed(Failure::io(Op::Read, e)),
        };
        meta.mtime = meta.mtime.max(changed);
        let staged = match at.folder.stage_by_path(at.name, meta.mode) {
            Ok(s) => s,
            Err(e) => {
                let failure = Failure::at(Op::WriteInto, at.folder.path(), clone_error(&e));
                return failed(self.dest_failure(failure, &e));
            }
        };
        let path = source::path_of(at.src_dir, at.name);
        let patience = crate::database::Patience {
            wait: DATABASE_WAIT,
            stop: &self.stop,
        };
        let copied = match staged.file() {
            Ok(out) => crate::database::snapshot(&path, out, &patience),
            Err(e) => Err(NoSnapshot::Unreadable(e.to_string())),
        };
        match copied {
            Ok(()) => {
                self.unlocked(&at.src);
                self.finish(at, staged, &meta, &src, Some(index))
            }
            Err(NoSnapshot::Whole) => {
                drop(staged);
                self.unlocked(&at.src);
                self.stage_file(at, None)
            }
            Err(NoSnapshot::Unreadable(why)) => {
                drop(staged);
                self.warn(Warning::NotADatabase {
                    src: at.src.clone(),
                    why: why.to_string(),
                });
                self.stage_file(at, None)
            }
            Err(NoSnapshot::Stopped) => Prepared::Done(Step::Left),
            Err(NoSnapshot::Locked) => {
                drop(staged);
                self.locked(at, &path, index, changed)
            }
        }
    }

    /// A database that no consistent copy could be read of, since another program keeps it
    /// locked. Until it has been locked for `--max-delay` (at once in `once`), it is left for
    /// later. Then it is copied as the file on disk, with one warning, when that file is a
    /// committed state that SQLite finds sound: in WAL mode the last checkpointed state (what
    /// its `-wal` holds is missing), in rollback mode every committed change. In the middle of
    /// a write (a hot journal) the file alone is no state at all: it is not copied.
    fn locked(
        &self,
        at: &Place,
        path: &Path,
        index: &FolderIndex,
        changed: crate::meta::Time,
    ) -> Prepared {
        let (since, first) = self.lock_began(&at.src);
        let waited = since.elapsed();
        let patience = self.settings.lock_patience;
        if waited < patience {
            return Prepared::Done(Step::Locked(first));
        }
        let secs = waited.as_secs();
        let not_now = |mid_write: bool| {
            if patience.is_zero() {
                return Prepared::Done(Step::Done(Outcome::Failed(Failure::DatabaseLocked)));
            }
            self.warn_locked(
                &at.src,
                Warning::LockedNotCopied {
                    src: at.src.clone(),
                    secs,
                    mid_write,
                    retry: LOCKED_RETRY,
                },
            );
            Prepared::Done(Step::Locked(false))
        };
        if crate::database::mid_write(path) {
            return not_now(true);
        }
        let (staged, mut meta, src) = match self.read_into(at, true, None) {
            Ok(read) => read,
            Err(step) => return Prepared::Done(step),
        };
        if !staged.file().is_ok_and(crate::database::sound) {
            drop(staged);
            return not_now(false);
        }
        meta.mtime = meta.mtime.max(changed);
        self.relock(&at.src);
        self.warn_locked(
            &at.src,
            Warning::LockedCopiedAsFile {
                src: at.src.clone(),
                secs,
            },
        );
        self.finish(at, staged, &meta, &src, Some(index))
    }

    /// Gives a staged copy its metadata and ends its writing. With the folder's `index`, the
    /// copy of a database that holds what its newest copy holds is dropped (see `dedupe`).
    fn finish(
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

    /// A copy of a database that holds what its newest copy holds (SQLite bumps counters in the
    /// header on every write and every copy, so the bytes alone would say it changed) makes no
    /// new version: the newest copy takes the time of the source's newest change instead, so
    /// that the next pass finds it current. `None`: the copy is new.
    fn dedupe(
        &self,
        at: &Place,
        staged: &dyn Staged,
        meta: &Meta,
        src: &File,
        index: &FolderIndex,
    ) -> Option<Step> {
        let latest = index
            .latest(at.name)
            .filter(|m| !m.key.is_some_and(|k| k.deleted))?;
        let newest = at.folder.open_read(&latest.name).ok()?;
        let copy = crate::database::readable(staged.file().ok()?).ok()?;
        if !crate::database::same_database(&copy, &newest).unwrap_or(false) {
            return None;
        }
        let path = at.folder.path().join(OsStr::from_bytes(&latest.name));
        let current = at.folder.stat(&latest.name).ok()?;
        if current.mtime == meta.mtime || !self.dest.capabilities().refresh {
            return Some(Step::Done(Outcome::Unchanged));
        }
        let what = Refreshed {
            time: true,
            ..Refreshed::default()
        };
        Some(Step::Done(
            match at.folder.update_meta(&latest.name, meta, src, true) {
                Ok(()) => Outcome::Updated(path, what),
                Err(e) => Outcome::Failed(Failure::at(Op::SetMetadata, &path, e)),
            },
        ))
    }

    /// Copies a regular file into a staged copy (see `read_into`) and finishes it.
    fn stage_file(&self, at: &Place, base: Option<&[u8]>) -> Prepared {
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
    fn read_into(
        &self,
        at: &Place,
        by_path: bool,
        base: Option<&[u8]>,
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
            let before = source::fstat(&src).map_err(|e| failed(Failure::io(Op::Read, e)))?;
            if before.kind != Kind::File {
                return Err(Step::Done(Outcome::Skipped("no longer a regular file")));
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
            let copied = self
                .copy(at, &mut *staged, &src, before.size, base)
                .map_err(|e| on_dest(Failure::io(Op::Copy, clone_error(&e)), &e))?;
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
        base: Option<&[u8]>,
    ) -> io::Result<u64> {
        if self.dest.capabilities().clone
            && let Some(base) = base.and_then(|b| at.folder.open_read(b).ok())
        {
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

    /// When the database `src` was first found locked, in this run of locks, and whether that
    /// is now.
    fn lock_began(&self, src: &Path) -> (Instant, bool) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        match locks.get(src) {
            Some(lock) => (lock.since, false),
            None => {
                let now = Instant::now();
                locks.insert(
                    src.to_path_buf(),
                    Lock {
                        since: now,
                        warned: false,
                    },
                );
                (now, true)
            }
        }
    }

    /// A copy was taken while the lock lasts: the next one waits `--max-delay` again.
    fn relock(&self, src: &Path) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = locks.get_mut(src) {
            lock.since = Instant::now();
        }
    }

    /// The database is no longer locked: a later lock is a new one, said again.
    fn unlocked(&self, src: &Path) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.remove(src);
    }

    /// The one warning for a run of locks of one database.
    fn warn_locked(&self, src: &Path, warning: Warning) {
        let first = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks
                .get_mut(src)
                .is_some_and(|lock| !std::mem::replace(&mut lock.warned, true))
        };
        if first {
            self.warn(warning);
        }
    }
}

/// How long one attempt at a consistent copy of a database waits for another program's lock.
const DATABASE_WAIT: Duration = Duration::from_millis(500);

/// How often `watch` tries again to copy a database that another program keeps locked.
pub(crate) const LOCKED_RETRY: Duration = Duration::from_secs(5);

/// A database found locked by another program: since when, and whether that was said.
pub(crate) struct Lock {
    since: Instant,
    warned: bool,
}

/// Where a copy of one entry comes from and goes to.
pub(super) struct Place<'a> {
    src_dir: &'a OwnedFd,
    name: &'a [u8],
    folder: &'a dyn Folder,
    /// The entry's path in SRC, for messages and for what is remembered about it.
    src: PathBuf,
}

/// A staged copy, or what became of the entry instead.
enum Prepared {
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
