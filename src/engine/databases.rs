//! A live SQLite database as one entry: copied with SQLite's online backup, never held up by
//! another program's lock for longer than one short wait, and made no new version when it holds
//! what its newest copy holds.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::entry::{Place, Prepared};
use super::{Engine, Step, clone_error};
use crate::database::NoSnapshot;
use crate::dest::Staged;
use crate::error::{Failure, Op};
use crate::meta::Meta;
use crate::naming::FolderIndex;
use crate::outcome::{Outcome, Refreshed};
use crate::report::Warning;
use crate::source;

impl Engine {
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
    pub(super) fn stage_database(
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

    /// A copy of a database that holds what its newest copy holds (SQLite bumps counters in the
    /// header on every write and every copy, so the bytes alone would say it changed) makes no
    /// new version: the newest copy takes the time of the source's newest change instead, so
    /// that the next pass finds it current. `None`: the copy is new.
    pub(super) fn dedupe(
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
