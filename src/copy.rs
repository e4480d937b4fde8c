//! The one copy routine, and the pool of workers that runs it.
//!
//! A worker takes one source folder at a time: it lists the source and the destination folder
//! once, removes temporary files left by a crash, and then decides and copies each entry. A
//! pass (`pass`) is a walk feeding the workers, followed by the folders' own metadata and an
//! fsync of every folder that gained a name, so that when a pass reports its summary everything
//! it reported as copied is durable.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::dest::{Dest, DestDir, Staged, is_temp_name};
use crate::exclude::Exclude;
use crate::meta::{Kind, Meta};
use crate::naming::FolderIndex;
use crate::plan::{self, Action, RETRY_BACKOFF};
use crate::report::{Change, Event, Outcome, display, reason};
use crate::scan::{self, DirJob, DirRecord};

/// What every worker shares: where to read, where to write, how to compare.
pub struct Copier {
    /// SRC, canonical.
    pub src: PathBuf,
    pub dest: Dest,
    pub checksum: bool,
    pub limits: crate::config::Limits,
    /// DST when it lies inside SRC: never walked.
    pub skip: Option<PathBuf>,
    /// Paths left out of the backup.
    pub exclude: Exclude,
    /// Decide and report, but write nothing.
    pub dry_run: bool,
    /// Report each unchanged file (for `--verbose`), not just a count per folder.
    pub each_unchanged: bool,
    /// Set on Ctrl-C / SIGTERM: finish what is in flight, start nothing new.
    pub stop: Arc<AtomicBool>,
}

impl Copier {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A full pass over `start` (relative to SRC; empty for the whole tree).
    pub fn pass(&self, start: &Path, on_event: &mut dyn FnMut(Event)) {
        let records = self.run(
            |jobs, events| scan::walk(self, start, None, jobs, events),
            on_event,
        );
        self.finish_dirs(&records, on_event);
    }

    /// Runs `produce` (which sends jobs) alongside the worker pool, handing every event to
    /// `on_event` on the calling thread. Returns what `produce` returned.
    pub fn run<R: Send>(
        &self,
        produce: impl FnOnce(&Sender<DirJob>, &Sender<Event>) -> R + Send,
        on_event: &mut dyn FnMut(Event),
    ) -> R {
        let (job_tx, job_rx) = bounded::<DirJob>(2 * self.limits.jobs);
        let (ev_tx, ev_rx) = bounded::<Event>(4096);
        std::thread::scope(|s| {
            let producer = {
                let ev_tx = ev_tx.clone();
                s.spawn(move || produce(&job_tx, &ev_tx))
            };
            for _ in 0..self.limits.jobs {
                let (rx, tx) = (job_rx.clone(), ev_tx.clone());
                s.spawn(move || self.work(&rx, &tx));
            }
            drop((ev_tx, job_rx));
            for ev in ev_rx {
                on_event(ev);
            }
            producer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Gives each folder its source's mode and times once its contents are done, deepest first,
    /// then makes every new name durable: an `fsync` of each folder that gained one, or one
    /// `syncfs` when there are many.
    pub fn finish_dirs(&self, records: &[DirRecord], on_event: &mut dyn FnMut(Event)) {
        if self.dry_run {
            return;
        }
        let as_root = rustix::process::geteuid().is_root();
        let mut fail = |r: &DirRecord, what: &str, e: io::Error| {
            let why = format!(
                "cannot {what} folder {}: {}",
                display(&self.dest.path().join(&r.rel)),
                reason(&e)
            );
            on_event(Event::new(self.src.join(&r.rel), Outcome::Failed(why)));
        };
        for r in records.iter().rev().filter(|r| r.needs_meta(as_root)) {
            if let Err(e) = self
                .dest
                .open_dir(&r.rel)
                .and_then(|d| d.set_dir_meta(&r.src))
            {
                fail(r, "finish", e);
            }
        }
        let changed: Vec<&DirRecord> = records.iter().filter(|r| r.changed_entries()).collect();
        if changed.len() > FSYNC_DIRS_MAX {
            if let Err(e) = self.dest.sync_all() {
                fail(changed[0], "sync", e);
            }
            return;
        }
        for r in changed {
            if let Err(e) = self.dest.open_dir(&r.rel).and_then(|d| d.sync()) {
                fail(r, "sync", e);
            }
        }
    }

    /// One worker: copies folder after folder, publishing its copies in batches.
    fn work(&self, jobs: &Receiver<DirJob>, events: &Sender<Event>) {
        let mut batch = Batch::default();
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    // Nothing queued right now: publish what is staged rather than let it wait.
                    self.commit(&mut batch, events);
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            self.copy_dir(&job, events, &mut batch);
        }
        self.commit(&mut batch, events);
    }

    /// Publishes a batch of staged copies: one sync makes all their data durable (a `syncfs`,
    /// or an `fsync` for a batch of one), then each gets its final name. A failed sync throws
    /// the whole batch away: which file lost data cannot be known, and a second sync may lie.
    fn commit(&self, batch: &mut Batch, events: &Sender<Event>) {
        if batch.items.is_empty() {
            return;
        }
        let synced = match batch.items.as_slice() {
            [one] => one.staged.sync(),
            _ => self.dest.sync_all(),
        };
        for mut ready in batch.items.drain(..) {
            let outcome = match &synced {
                Ok(()) => {
                    let (dir, target) = (
                        Arc::clone(ready.staged.dir()),
                        std::mem::take(&mut ready.target),
                    );
                    publish_free(&dir, &ready.name, target, |to| ready.staged.publish(to))
                }
                Err(e) => Outcome::Failed(format!("cannot sync: {}", reason(e))),
            };
            if let (Outcome::Copied(_), Some(t)) = (&outcome, &ready.touched) {
                t.store(true, Ordering::Relaxed);
            }
            let _ = events.send(Event::new(ready.src, outcome).with_bytes(ready.size));
        }
        batch.bytes = 0;
        batch.dirs = 0;
    }

    /// Copies the entries of one source folder; regular files are staged into `batch`.
    fn copy_dir(&self, job: &DirJob, events: &Sender<Event>, batch: &mut Batch) {
        let src_path = self.src.join(&job.rel);
        let send = |src: PathBuf, outcome: Outcome, bytes: u64| {
            let _ = events.send(Event::new(src, outcome).with_bytes(bytes));
        };
        let failed = |why: String| Outcome::Failed(why);
        let src_dir = match open_src_dir(&src_path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return send(src_path, failed(format!("cannot read: {}", reason(&e))), 0),
        };
        let listing = match list_src(&src_dir) {
            Ok(l) => l,
            Err(e) => return send(src_path, failed(format!("cannot read: {}", reason(&e))), 0),
        };
        let src_names: HashSet<Vec<u8>> = listing.iter().map(|(n, _)| n.clone()).collect();
        let dest_names = if job.fresh {
            Vec::new()
        } else {
            match job.dest.list() {
                Ok(names) => names,
                Err(e) => {
                    let why = format!(
                        "cannot read folder {}: {}",
                        display(job.dest.path()),
                        reason(&e)
                    );
                    return send(src_path, failed(why), 0);
                }
            }
        };
        // Temporary files of a run that was killed go; a source file of that very name is a
        // real file's copy and stays.
        let leftover = |n: &Vec<u8>| is_temp_name(n) && !src_names.contains(n) && !self.dry_run;
        let dest_names = dest_names
            .into_iter()
            .filter(|n| !(leftover(n) && job.dest.remove_leftover(n).is_ok()));
        let mut index = FolderIndex::new(dest_names, &src_names);

        let (mut unchanged, mut unchanged_bytes) = (0, 0);
        for (name, kind) in &listing {
            if self.stopped() {
                break;
            }
            if *kind == Kind::Dir
                || job.only.as_ref().is_some_and(|only| !only.contains(name))
                || (!self.exclude.is_empty()
                    && self
                        .exclude
                        .excludes(&job.rel.join(OsStr::from_bytes(name)), false))
            {
                continue;
            }
            let Some((step, size)) = self.copy_entry(&src_dir, name, job, &mut index) else {
                continue;
            };
            match step {
                Step::Done(Outcome::Unchanged) if !self.each_unchanged => {
                    unchanged += 1;
                    unchanged_bytes += size;
                }
                Step::Done(outcome) => {
                    if let (Outcome::Copied(_), Some(t)) = (&outcome, &job.touched) {
                        t.store(true, Ordering::Relaxed);
                    }
                    send(src_path.join(OsStr::from_bytes(name)), outcome, size);
                }
                Step::Staged(staged, target) => {
                    if batch
                        .items
                        .last()
                        .is_none_or(|last| !Arc::ptr_eq(last.staged.dir(), staged.dir()))
                    {
                        batch.dirs += 1;
                    }
                    batch.items.push(Ready {
                        staged,
                        name: name.clone(),
                        target,
                        src: src_path.join(OsStr::from_bytes(name)),
                        size,
                        touched: job.touched.clone(),
                    });
                    batch.bytes += size;
                    if batch.items.len() >= BATCH_FILES
                        || batch.bytes >= BATCH_BYTES
                        || batch.dirs >= self.limits.batch_dirs
                    {
                        self.commit(batch, events);
                    }
                }
            }
        }
        if unchanged > 0 {
            send(src_path, Outcome::UnchangedIn(unchanged), unchanged_bytes);
        }
    }

    /// Decides and does what one entry needs. `None` for a folder (the walk handles those).
    fn copy_entry(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        job: &DirJob,
        index: &mut FolderIndex,
    ) -> Option<(Step, u64)> {
        let dest = &job.dest;
        let os_name = OsStr::from_bytes(name);
        let meta = match rustix::fs::statat(src_dir, os_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::from_stat(&st),
            Err(Errno::NOENT) => return Some((Step::Done(Outcome::Vanished), 0)),
            Err(e) => {
                let why = format!("cannot read: {}", reason(&e.into()));
                return Some((Step::Done(Outcome::Failed(why)), 0));
            }
        };
        let step = match plan::action(meta.kind) {
            Action::Walk => return None,
            Action::Skip(why) => Step::Done(Outcome::Skipped(why)),
            Action::CopySymlink => Step::Done(self.copy_symlink(src_dir, name, &meta, dest, index)),
            Action::CopyFile => match job.defer.and_then(|d| changed_within(&meta, d)) {
                Some(age) => Step::Done(Outcome::Deferred(age)),
                None => self.copy_file(src_dir, name, &meta, dest, index),
            },
        };
        Some((step, meta.size))
    }

    /// With `--dry-run`: the name a copy would take, reserved so that the next entry of the
    /// same family would be shown under the following name.
    fn would_copy(
        &self,
        name: &[u8],
        dest: &DestDir,
        index: &mut FolderIndex,
        why: Change,
    ) -> Outcome {
        let Some(target) = index.target(name, now_stamp()) else {
            return too_long();
        };
        let path = dest.path().join(OsStr::from_bytes(&target));
        index.insert(target);
        Outcome::WouldCopy(path, why)
    }

    fn copy_file(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        dest: &Arc<DestDir>,
        index: &mut FolderIndex,
    ) -> Step {
        let mut why = Change::New;
        if let Some(latest) = index.latest(name) {
            match dest.stat(&latest.name) {
                Ok(dm) => {
                    let same = if self.checksum {
                        dm.kind == Kind::File
                            && dm.size == meta.size
                            && same_contents(src_dir, name, dest, &latest.name).unwrap_or(false)
                    } else {
                        plan::unchanged(meta, &dm)
                    };
                    if same {
                        return Step::Done(Outcome::Unchanged);
                    }
                    why = if plan::unchanged(meta, &dm) {
                        Change::Contents
                    } else {
                        Change::Changed
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Step::Done(Outcome::Failed(format!(
                        "cannot read {}: {}",
                        display(&dest.path().join(OsStr::from_bytes(&latest.name))),
                        reason(&e)
                    )));
                }
            }
        }

        if self.dry_run {
            return Step::Done(self.would_copy(name, dest, index, why));
        }
        for wait in std::iter::once(None).chain(RETRY_BACKOFF.iter().map(Some)) {
            if let Some(wait) = wait {
                std::thread::sleep(*wait);
            }
            let src = match open_source(src_dir, name) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Step::Done(Outcome::Vanished);
                }
                Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                    return Step::Done(Outcome::Skipped("no longer a regular file"));
                }
                Err(e) => {
                    return Step::Done(Outcome::Failed(format!("cannot open: {}", reason(&e))));
                }
            };
            let before = match fstat_meta(&src) {
                Ok(m) => m,
                Err(failed) => return Step::Done(failed),
            };
            if before.kind != Kind::File {
                return Step::Done(Outcome::Skipped("no longer a regular file"));
            }
            let mut staged = match dest.stage(name) {
                Ok(s) => s,
                Err(e) => {
                    return Step::Done(Outcome::Failed(format!(
                        "cannot write into {}: {}",
                        display(dest.path()),
                        reason(&e)
                    )));
                }
            };
            let copied = match staged.copy_from(&src, before.size) {
                Ok(n) => n,
                Err(e) => {
                    return Step::Done(Outcome::Failed(format!("cannot copy: {}", reason(&e))));
                }
            };
            let after = match fstat_meta(&src) {
                Ok(m) => m,
                Err(failed) => return Step::Done(failed),
            };
            if plan::changed_while_read(&before, &after, copied) {
                continue;
            }
            if let Err(e) = staged.set_meta(&before, &src) {
                return Step::Done(Outcome::Failed(format!(
                    "cannot set metadata: {}",
                    reason(&e)
                )));
            }
            if let Err(e) = staged.close() {
                return Step::Done(Outcome::Failed(format!("cannot write: {}", reason(&e))));
            }
            // Reserved now, published once the batch is durable.
            let Some(target) = index.target(name, now_stamp()) else {
                return Step::Done(too_long());
            };
            index.insert(target.clone());
            return Step::Staged(staged, target);
        }
        Step::Done(Outcome::Busy(format!(
            "changed while being read, {} times in a row; nothing was published",
            RETRY_BACKOFF.len() + 1
        )))
    }

    fn copy_symlink(
        &self,
        src_dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        dest: &DestDir,
        index: &mut FolderIndex,
    ) -> Outcome {
        let target = match rustix::fs::readlinkat(src_dir, OsStr::from_bytes(name), Vec::new()) {
            Ok(t) => t.into_bytes(),
            Err(Errno::NOENT) => return Outcome::Vanished,
            Err(Errno::INVAL) => return Outcome::Skipped("no longer a symlink"),
            Err(e) => return Outcome::Failed(format!("cannot read link: {}", reason(&e.into()))),
        };
        if let Some(latest) = index.latest(name)
            && dest
                .stat(&latest.name)
                .is_ok_and(|m| m.kind == Kind::Symlink)
            && dest.read_link(&latest.name).is_ok_and(|t| t == target)
        {
            return Outcome::Unchanged;
        }
        if self.dry_run {
            let why = match index.latest(name) {
                Some(_) => Change::Changed,
                None => Change::New,
            };
            return self.would_copy(name, dest, index, why);
        }
        let Some(first) = index.target(name, now_stamp()) else {
            return too_long();
        };
        let outcome = publish_free(dest, name, first, |to| dest.symlink(&target, to, meta));
        if let Outcome::Copied(path) = &outcome {
            index.insert(last_name(path));
        }
        outcome
    }
}

/// What became of one entry: done, or copied and waiting in a batch to be published.
enum Step {
    Done(Outcome),
    /// The staged copy and the name reserved for it.
    Staged(Staged, Vec<u8>),
}

/// A staged copy waiting for its batch to be made durable.
struct Ready {
    staged: Staged,
    /// The source file's name, whose family the copy joins.
    name: Vec<u8>,
    target: Vec<u8>,
    src: PathBuf,
    size: u64,
    touched: Option<Arc<AtomicBool>>,
}

/// The copies one worker has staged and not yet published.
#[derive(Default)]
struct Batch {
    items: Vec<Ready>,
    bytes: u64,
    /// Folders the items span: each holds a folder handle open until published.
    dirs: usize,
}

/// A batch is published once it holds this many files or bytes, or when its worker runs out of
/// queued work, whichever comes first.
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 256 << 20;

/// Up to this many folders gaining names are synced one by one; beyond, one `syncfs` is cheaper.
const FSYNC_DIRS_MAX: usize = 8;

fn too_long() -> Outcome {
    Outcome::Failed("name too long to add a version stamp within 255 bytes".into())
}

/// Publishes under `first`, the name reserved for a copy of `name`, never replacing: if
/// something took that name since the folder was listed, the folder is listed again for the next
/// free version name.
fn publish_free(
    dir: &DestDir,
    name: &[u8],
    first: Vec<u8>,
    mut publish_as: impl FnMut(&[u8]) -> io::Result<()>,
) -> Outcome {
    let mut target = first;
    for _ in 0..100 {
        match publish_as(&target) {
            Ok(()) => return Outcome::Copied(dir.path().join(OsStr::from_bytes(&target))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let listing = match dir.list() {
                    Ok(l) => l,
                    Err(e) => return Outcome::Failed(format!("cannot publish: {}", reason(&e))),
                };
                match FolderIndex::new(listing, &HashSet::new()).target(name, now_stamp()) {
                    Some(t) => target = t,
                    None => return too_long(),
                }
            }
            Err(e) => return Outcome::Failed(format!("cannot publish: {}", reason(&e))),
        }
    }
    Outcome::Failed("cannot publish: no free version name".into())
}

/// The last component of a path, as a listing name.
fn last_name(path: &Path) -> Vec<u8> {
    path.file_name()
        .map_or_else(Vec::new, |n| n.as_bytes().to_vec())
}

/// How long ago a file changed, if less than `window` ago (by its modification time; a time in
/// the future counts as settled, so that a wrong clock cannot hold a file back forever).
fn changed_within(meta: &Meta, window: Duration) -> Option<Duration> {
    let mtime = std::time::UNIX_EPOCH.checked_add(Duration::new(
        u64::try_from(meta.mtime.sec).ok()?,
        meta.mtime.nsec,
    ))?;
    let age = std::time::SystemTime::now().duration_since(mtime).ok()?;
    (age < window).then_some(age)
}

/// The local time now, as a version stamp.
pub fn now_stamp() -> u64 {
    use chrono::TimeZone;
    use std::cell::Cell;
    // Converting to local time reads the zone file's status each call; once a second will do.
    thread_local! {
        static LAST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|last| match last.get() {
        (s, stamp) if s == secs && stamp != 0 => stamp,
        _ => {
            let stamp = chrono::Local
                .timestamp_opt(i64::try_from(secs).unwrap_or(i64::MAX), 0)
                .earliest()
                .map_or(0, |t| crate::naming::stamp_of(&t.naive_local()));
            last.set((secs, stamp));
            stamp
        }
    })
}

fn open_src_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Every entry of a source folder with its type (from the listing where the filesystem gives
/// it, else from `lstat`).
fn list_src(dir: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Kind)>> {
    let mut listing = crate::meta::read_folder(dir)?;
    for (name, kind) in &mut listing {
        if *kind == Kind::Unknown {
            *kind = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
                .map_or(Kind::Unknown, |st| Meta::from_stat(&st).kind);
        }
    }
    Ok(listing)
}

/// The metadata of an open source file, or the failure to report.
fn fstat_meta(f: &File) -> Result<Meta, Outcome> {
    rustix::fs::fstat(f)
        .map(|st| Meta::from_stat(&st))
        .map_err(|e| Outcome::Failed(format!("cannot read: {}", reason(&e.into()))))
}

/// Opens a source file for reading without following a symlink and without blocking on a FIFO
/// that took its place, and without changing its access time where the OS allows that.
fn open_source(dir: &OwnedFd, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let name = OsStr::from_bytes(name);
    let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        other => other,
    }?;
    Ok(File::from(fd))
}

/// Whether the source file and a destination file hold the same bytes.
fn same_contents(src_dir: &OwnedFd, name: &[u8], dest: &DestDir, dname: &[u8]) -> io::Result<bool> {
    let mut a = open_source(src_dir, name)?;
    let mut b = dest.open_read(dname)?;
    let (mut ba, mut bb) = (vec![0u8; 128 * 1024], vec![0u8; 128 * 1024]);
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
