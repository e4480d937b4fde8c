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

use super::{Beside, Engine, FolderJob, Step, clone_error, now_stamp};
use crate::dest::Folder;
use crate::error::{Failure, Op};
use crate::meta::{Kind, Meta};
use crate::naming::FolderIndex;
use crate::outcome::Outcome;
use crate::plan::{self, Decision, Facts, Now, RETRY_BACKOFF};
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
        let mut facts = match self.facts(src_dir, name, src, job.dest.as_deref(), index) {
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
            Decision::Refresh => self.refresh(src_dir, name, &facts.src, job, index),
            Decision::Skip(why) => Step::Done(Outcome::Skipped(why)),
            Decision::Defer(age) => Step::Unsettled(age),
            Decision::Fail(failure) => Step::Done(Outcome::Failed(failure)),
            Decision::Copy { to, change } => {
                index.record(name, to.clone());
                match &job.dest {
                    _ if self.was_full() && !self.settings.dry_run => {
                        Step::Done(Outcome::Failed(Failure::DestinationFull))
                    }
                    Some(folder) if !self.settings.dry_run => {
                        self.carry_out(src_dir, name, &facts, &**folder, to, index)
                    }
                    None if !self.settings.dry_run => {
                        Step::Done(Outcome::Failed(Failure::DestinationFull))
                    }
                    _ => {
                        let base = job.dest.as_ref().map_or_else(
                            || self.dest.path().join(&job.rel),
                            |f| f.path().to_path_buf(),
                        );
                        Step::Done(Outcome::WouldCopy(
                            base.join(OsStr::from_bytes(&to)),
                            change,
                        ))
                    }
                }
            }
        };
        Some((step, size))
    }

    /// A folder in DST where SRC now has a file: its deletion is recorded first, so that the
    /// file's versions come after it and a restore gives back one shape at a time.
    fn folder_replaced(
        &self,
        job: &FolderJob,
        facts: &Facts,
        index: &mut FolderIndex,
        name: &[u8],
    ) -> Result<(), Failure> {
        if let (Some(folder), Some(latest)) = (&job.dest, &facts.latest)
            && latest.kind == Kind::Dir
            && matches!(facts.src.kind, Kind::File | Kind::Symlink)
            && !self.settings.dry_run
        {
            record_deletion_now(&**folder, index, name)
                .map_err(|e| Failure::at(Op::WriteInto, folder.path(), e))?;
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
    ) -> Result<Facts, Outcome> {
        // After a recorded deletion the file has no copy: it is new again.
        let member = index
            .latest(name)
            .filter(|m| !m.key.is_some_and(|k| k.deleted));
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

    /// Carries out a refresh decision: the newest copy's mode, owner and extended attributes
    /// set again from the source, its contents untouched.
    fn refresh(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        job: &FolderJob,
        index: &FolderIndex,
    ) -> Step {
        let (Some(folder), Some(latest)) = (&job.dest, index.latest(name)) else {
            return Step::Done(Outcome::Unchanged);
        };
        let path = folder.path().join(OsStr::from_bytes(&latest.name));
        if self.settings.dry_run {
            return Step::Done(Outcome::WouldUpdate(path));
        }
        let done = source::open_file(src_dir, name)
            .and_then(|src| folder.update_meta(&latest.name, meta, &src));
        match done {
            Ok(()) => Step::Done(Outcome::Updated(path)),
            Err(e) => Step::Done(Outcome::Failed(Failure::at(Op::SetMetadata, &path, e))),
        }
    }

    /// Carries out a copy decision: a symlink is published at once, a regular file is staged.
    fn carry_out(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        facts: &Facts,
        folder: &dyn Folder,
        to: Vec<u8>,
        index: &mut FolderIndex,
    ) -> Step {
        let Some((target, _)) = &facts.link else {
            if let Some(changed) = facts.database {
                return self.stage_database(src_dir, name, folder, to, changed);
            }
            return self.stage_file(src_dir, name, folder, to);
        };
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let outcome = publish_free(folder, case_sensitive, name, to, |n| {
            folder.symlink(target, n, &facts.src)
        });
        if let Outcome::Copied(path) = &outcome
            && let Some(n) = path.file_name()
        {
            index.record(name, n.as_bytes().to_vec());
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
    /// its files). A file that is no database after all, or one SQLite cannot read (locked
    /// exclusively, encrypted, corrupt), is copied as a file, with a warning for the latter.
    fn stage_database(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        folder: &dyn Folder,
        to: Vec<u8>,
        changed: crate::meta::Time,
    ) -> Step {
        let failed = |f: Failure| Step::Done(Outcome::Failed(f));
        let src = match source::open_file(src_dir, name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Step::Done(Outcome::Vanished),
            Err(e) => return failed(Failure::io(Op::Open, e)),
        };
        if !crate::database::is_database(&src) {
            return self.stage_file(src_dir, name, folder, to);
        }
        let mut meta = match source::fstat(&src) {
            Ok(m) => m,
            Err(e) => return failed(Failure::io(Op::Read, e)),
        };
        meta.mtime = meta.mtime.max(changed);
        let mut staged = match folder.stage_by_path(name, meta.mode) {
            Ok(s) => s,
            Err(e) => {
                return failed(self.dest_failure(
                    Failure::at(Op::WriteInto, folder.path(), clone_error(&e)),
                    &e,
                ));
            }
        };
        let path = source::path_of(src_dir, name);
        let copied = staged
            .file()
            .map_err(|e| e.to_string())
            .and_then(|out| crate::database::snapshot(&path, out));
        if let Err(why) = copied {
            drop(staged);
            let real = std::fs::read_link(path.parent().unwrap_or(&path))
                .map_or(path.clone(), |dir| dir.join(OsStr::from_bytes(name)));
            self.warn(format!(
                "{}: SQLite cannot read it as a database ({why}); copied as a file",
                crate::escape::display(&real)
            ));
            return self.stage_file(src_dir, name, folder, to);
        }
        if let Err(e) = staged.set_meta(&meta, &src) {
            return failed(self.dest_failure(Failure::io(Op::SetMetadata, clone_error(&e)), &e));
        }
        if let Err(e) = staged.close() {
            return failed(self.dest_failure(Failure::io(Op::Write, clone_error(&e)), &e));
        }
        Step::Staged(staged, to)
    }

    /// Copies a regular file into a staged copy, retrying with back-off while it changes under
    /// the read; a copy that may mix two states is thrown away, never published.
    fn stage_file(&self, src_dir: &OwnedFd, name: &[u8], folder: &dyn Folder, to: Vec<u8>) -> Step {
        let failed = |f: Failure| Step::Done(Outcome::Failed(f));
        for wait in std::iter::once(None).chain(RETRY_BACKOFF.iter().map(Some)) {
            if let Some(wait) = wait {
                std::thread::sleep(*wait);
            }
            let src = match source::open_file(src_dir, name) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Step::Done(Outcome::Vanished);
                }
                Err(e) if source::is_symlink_now(&e) => {
                    return Step::Done(Outcome::Skipped("no longer a regular file"));
                }
                Err(e) => return failed(Failure::io(Op::Open, e)),
            };
            let before = match source::fstat(&src) {
                Ok(m) => m,
                Err(e) => return failed(Failure::io(Op::Read, e)),
            };
            if before.kind != Kind::File {
                return Step::Done(Outcome::Skipped("no longer a regular file"));
            }
            let on_dest = |f: Failure, e: &io::Error| failed(self.dest_failure(f, e));
            let mut staged = match folder.stage(name, before.mode) {
                Ok(s) => s,
                Err(e) => {
                    let failure = Failure::at(Op::WriteInto, folder.path(), clone_error(&e));
                    return on_dest(failure, &e);
                }
            };
            let copied = match staged.copy_from(&src, before.size) {
                Ok(n) => n,
                Err(e) => return on_dest(Failure::io(Op::Copy, clone_error(&e)), &e),
            };
            let after = match source::fstat(&src) {
                Ok(m) => m,
                Err(e) => return failed(Failure::io(Op::Read, e)),
            };
            if plan::changed_while_read(&before, &after, copied) {
                continue;
            }
            if let Err(e) = staged.set_meta(&before, &src) {
                return on_dest(Failure::io(Op::SetMetadata, clone_error(&e)), &e);
            }
            if let Err(e) = staged.close() {
                return on_dest(Failure::io(Op::Write, clone_error(&e)), &e);
            }
            return Step::Staged(staged, to);
        }
        Step::Busy(Failure::KeptChanging {
            attempts: RETRY_BACKOFF.len() + 1,
        })
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
