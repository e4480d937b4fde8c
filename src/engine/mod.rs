//! The engine: carries out a pass with a pool of workers.
//!
//! A producer walks SRC (or takes the folders and files `watch` names), opens each folder in DST
//! in walk order, creating it where missing, and sends one job per folder. A worker takes one
//! job at a time: it lists the source and the destination folder once, removes temporary files
//! left by a crash, gathers the facts about each entry, lets `plan` decide, and carries the
//! decision out. Copies are staged and published in batches (group commit: one sync for a batch,
//! then each name), and at the end each folder gets its own metadata and an fsync of its new
//! names, so that when a pass reports its summary everything it reported as copied is durable.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};

use crate::archive::room::Keeper;
use crate::config::Limits;
use crate::dest::{Capabilities, Destination, Folder, Staged};
use crate::error::{Failure, Op};
use crate::meta::Meta;
use crate::outcome::{Event, Note, Outcome};
use crate::plan::{self, Now, Rules};
use crate::report::Warning;
use crate::scan::Tree;

mod budget;
mod databases;
mod entry;
mod folder;
mod jobs;
mod moved;
mod notes;
mod shape;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use self::tests::engine as for_tests;

pub(crate) use self::budget::Budget;
pub(crate) use self::databases::LOCKED_RETRY;

use self::entry::{publish_free, record_deletion_now};
use self::notes::Notes;

/// How the engine works, decided once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub checksum: bool,
    pub limits: Limits,
    /// Decide and report, but carry nothing out.
    pub dry_run: bool,
    /// Report each unchanged file (for `--verbose`), not just a count per folder.
    pub each_unchanged: bool,
    /// How long a database that another program keeps locked is left for later before it is
    /// copied as the file on disk: `--max-delay` in `watch`, nothing in `once`, which has no
    /// later.
    pub lock_patience: Duration,
}

/// What one run of the engine covers.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// The whole tree; the rest is then ignored.
    pub full: bool,
    /// Folders to walk, relative to SRC, none inside another.
    pub walks: Vec<PathBuf>,
    /// Paths to copy, relative to SRC, none inside a folder of `walks` (a folder among them has
    /// only its own metadata refreshed).
    pub files: Vec<PathBuf>,
}

impl Scope {
    pub(crate) fn full() -> Scope {
        Scope {
            full: true,
            ..Scope::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.full && self.walks.is_empty() && self.files.is_empty()
    }
}

/// SRC, DST and how to copy from one into the other.
pub(crate) struct Engine {
    pub tree: Tree,
    pub dest: Arc<dyn Destination>,
    settings: Settings,
    /// Set on Ctrl-C / SIGTERM: finish what is in flight, start nothing new.
    stop: Arc<AtomicBool>,
    /// Set when the destination ran out of space (or quota) in this run: from then on only the
    /// files that fit in what is free are tried, and the others are counted as not copied.
    full: AtomicBool,
    /// The space free in DST when this run began (`u64::MAX` where that is not known): a file
    /// larger than that does not fit, and fails alone.
    free_at_start: std::sync::atomic::AtomicU64,
    /// Said once the run's notes are in, as `warning:` lines.
    warnings: std::sync::Mutex<Vec<Warning>>,
    /// `--keep-free`: prunes the oldest versions before a copy would leave less free.
    keeper: Option<Keeper>,
    /// The versions pruned to make room in this run, said with the warnings.
    made_room: std::sync::Mutex<Vec<Event>>,
    /// DST's copies by size, for files moved in SRC (see `moved`).
    copies: moved::Copies,
    /// Shared with the other pairs of a `watch`: how many workers may copy at once.
    budget: Option<Arc<Budget>>,
    /// Whether a file that could not share blocks with its copy before was said (once a run).
    said_no_clone: AtomicBool,
    /// Databases found locked by another program, by their path in SRC.
    locks: std::sync::Mutex<std::collections::HashMap<PathBuf, databases::Lock>>,
}

/// The work for one source folder: decide on its entries (all of them, or only the named ones).
struct FolderJob {
    /// Relative to SRC.
    rel: PathBuf,
    /// `None` only in a dry run, for a folder that does not exist in DST yet.
    dest: Option<Arc<dyn Folder>>,
    /// Created by this run, so known to be empty: no need to list it.
    fresh: bool,
    /// `None`: every entry; `Some`: only these names (changes that `watch` saw).
    only: Option<HashSet<Vec<u8>>>,
    /// Set when the job published anything into the folder.
    touched: Arc<AtomicBool>,
    /// In `watch`, files found by a walk that changed less than this long ago are left to
    /// settle instead of copied mid-write.
    defer: Option<Duration>,
    /// When the newest deletion of this folder, or of a folder above it, was recorded: copies
    /// made before then are gone as far as a restore is concerned, so a file whose copies are
    /// all older is copied again (the folder came back).
    cut: Option<u64>,
}

/// A folder that a run visited, and what it needs once its contents are done: the source's
/// mode and times (set last, since every entry published into it changes its mtime), and an
/// fsync to make new names durable.
struct FolderRecord {
    rel: PathBuf,
    src: Meta,
    dest: Meta,
    created: bool,
    touched: Arc<AtomicBool>,
    /// A folder back after its deletion was recorded, whose change time has not moved since:
    /// setting its metadata moves it, so that a later deletion is recorded too.
    back: bool,
}

impl FolderRecord {
    fn changed_entries(&self) -> bool {
        self.created || self.touched.load(Ordering::Relaxed)
    }

    /// Whether the folder's own metadata must be set: its entries changed (which moved its
    /// time), or what the destination keeps of it differs from the source's.
    fn needs_meta(&self, caps: &Capabilities) -> bool {
        self.changed_entries()
            || self.back
            || (caps.permissions && self.src.mode != self.dest.mode)
            || !plan::same_time(
                self.src.mtime,
                self.dest.mtime,
                caps.precision,
                caps.local_time,
            )
            || (caps.owners && (self.src.uid, self.src.gid) != (self.dest.uid, self.dest.gid))
    }
}

/// What the other entries of its folder say about an entry.
struct Beside {
    /// On a destination blind to case: the other name that takes this one's place there.
    clash: Option<Vec<u8>>,
    /// A database's companions changed at this time (see `Facts::database`).
    database: Option<crate::meta::Time>,
}

/// A destination folder on the walk's current path (`None` in a dry run where it does not exist
/// yet), the flag its jobs set when they publish into it, the deletion that cuts off what it
/// held before (`FolderJob::cut`), and its names once they were needed.
struct Parent {
    folder: Option<Arc<dyn Folder>>,
    touched: Arc<AtomicBool>,
    fresh: bool,
    cut: Option<u64>,
    index: Option<crate::naming::FolderIndex>,
}

/// What became of one entry in a worker.
enum Step {
    Done(Outcome),
    Busy(Failure),
    Unsettled(Duration),
    /// A database another program keeps locked, left for later (`true` the first time).
    Locked(bool),
    /// Not done: the run was asked to stop while it was read.
    Left,
    /// Copied and waiting in a batch to be published under the name reserved for it.
    Staged(Box<dyn Staged>, Vec<u8>),
}

/// A staged copy waiting for its batch to be made durable.
struct Ready {
    staged: Box<dyn Staged>,
    folder: Arc<dyn Folder>,
    /// The source file's name, whose family the copy joins.
    name: Vec<u8>,
    target: Vec<u8>,
    src: PathBuf,
    size: u64,
    touched: Arc<AtomicBool>,
}

/// The copies one worker has staged and not yet published.
#[derive(Default)]
struct Batch {
    items: Vec<Ready>,
    /// What was published (a staged copy, a symlink, a moved file named from its old copy) and
    /// waits for its name to be durable before it is said.
    unsaid: Vec<Event>,
    bytes: u64,
    /// Folders the items span: each holds a folder handle open until published.
    folders: usize,
}

/// A batch is published once it holds this many bytes (or `Limits::batch_files` files), or
/// when its worker runs out of queued work, whichever comes first.
const BATCH_BYTES: u64 = 256 << 20;

/// How long a worker with nothing queued waits for the walk before it publishes its batch.
const WALK_CATCH_UP: Duration = Duration::from_millis(5);

/// Entries decided between two readings of the clock, when nothing is copied.
const CLOCK_EVERY: usize = 64;

/// Up to this many folders gaining names are synced one by one; beyond, one `syncfs` is cheaper.
const FSYNC_FOLDERS_MAX: usize = 8;

impl Engine {
    pub(crate) fn new(
        tree: Tree,
        dest: Arc<dyn Destination>,
        settings: Settings,
        stop: Arc<AtomicBool>,
    ) -> Engine {
        Engine {
            tree,
            dest,
            settings,
            stop,
            full: AtomicBool::new(false),
            free_at_start: std::sync::atomic::AtomicU64::new(u64::MAX),
            warnings: std::sync::Mutex::new(Vec::new()),
            keeper: None,
            made_room: std::sync::Mutex::new(Vec::new()),
            copies: moved::Copies::default(),
            budget: None,
            locks: std::sync::Mutex::default(),
            said_no_clone: AtomicBool::new(false),
        }
    }

    /// Lets this engine's workers copy only while `budget` has a place for them.
    pub(crate) fn with_budget(mut self, budget: Option<Arc<Budget>>) -> Engine {
        self.budget = budget;
        self
    }

    /// Keeps free space in DST with `keeper` (`--keep-free`).
    pub(crate) fn with_keeper(mut self, keeper: Option<Keeper>) -> Engine {
        self.keeper = keeper;
        self
    }

    /// Makes room for a copy of `size()` bytes where `--keep-free` asks for it; what was pruned is
    /// said when the run is done, and the room it made counts for what fits.
    fn make_room(&self, size: impl FnOnce() -> u64) {
        let Some(keeper) = &self.keeper else {
            return;
        };
        let made = keeper.make(size());
        if made.is_empty() {
            return;
        }
        let mut events = self
            .made_room
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for m in made {
            events.push(match m {
                Ok((path, bytes)) => {
                    self.free_at_start.fetch_add(bytes, Ordering::Relaxed);
                    Event::new(path, Outcome::MadeRoom).with_bytes(bytes)
                }
                Err((path, e)) => Event::failed(path, Failure::io(Op::Prune, e)),
            });
        }
    }

    /// A problem worked around, to say when the run is done.
    fn warn(&self, warning: Warning) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(warning);
        }
    }

    /// Whether the last run stopped writing because the destination was full.
    pub(crate) fn was_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// The failure to report for an OS error on the destination: a full destination stops all
    /// writing from here on, and is said once, not per file.
    fn dest_failure(&self, failure: Failure, e: &io::Error) -> Failure {
        if crate::error::is_full(e) {
            self.full.store(true, Ordering::Relaxed);
            Failure::DestinationFull
        } else {
            failure
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    fn rules(&self, defer: Option<Duration>) -> Rules<'_> {
        Rules {
            checksum: self.settings.checksum,
            defer,
            dest: self.dest.capabilities(),
        }
    }

    /// A full pass over the tree.
    pub(crate) fn pass(&self, on_note: &mut dyn FnMut(Note)) {
        self.run(&Scope::full(), None, on_note);
    }

    /// Carries out `scope`, handing every note to `on_note` on the calling thread; files found
    /// by a walk that changed less than `defer` ago are left to settle. Returns the folders
    /// (relative to SRC) that gained names.
    pub(crate) fn run(
        &self,
        scope: &Scope,
        defer: Option<Duration>,
        on_note: &mut dyn FnMut(Note),
    ) -> Vec<PathBuf> {
        self.full.store(false, Ordering::Relaxed);
        if let Some(keeper) = &self.keeper {
            keeper.new_run();
        }
        let room = match self.settings.dry_run {
            true => None,
            false => self.dest.free_space(),
        };
        self.free_at_start
            .store(room.unwrap_or(u64::MAX), Ordering::Relaxed);
        if scope.full
            && !self.settings.dry_run
            && let Err(e) = self.dest.refresh()
        {
            self.warn(Warning::NotListed {
                dst: self.dest.path().to_path_buf(),
                why: e,
            });
        }
        let records = self.pool(
            |jobs, notes| self.produce(scope, defer, jobs, notes),
            on_note,
        );
        self.finish_folders(&records, on_note);
        let warnings = self
            .warnings
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let made_room = std::mem::take(
            &mut *self
                .made_room
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for ev in made_room {
            on_note(Note::Done(ev));
        }
        for warning in warnings {
            on_note(Note::Warning(warning));
        }
        records
            .iter()
            .filter(|r| r.changed_entries())
            .map(|r| r.rel.clone())
            .collect()
    }

    /// Runs `produce` (which sends jobs) alongside the worker pool, handing every note to
    /// `on_note` on the calling thread. Returns what `produce` returned.
    fn pool<R: Send>(
        &self,
        produce: impl FnOnce(&Sender<FolderJob>, &Notes) -> R + Send,
        on_note: &mut dyn FnMut(Note),
    ) -> R {
        let jobs = self.settings.limits.jobs;
        let (job_tx, job_rx) = bounded::<FolderJob>(2 * jobs);
        let (note_tx, note_rx) = bounded::<Vec<Note>>(64);
        std::thread::scope(|s| {
            let producer = {
                let note_tx = note_tx.clone();
                s.spawn(move || produce(&job_tx, &Notes::new(note_tx)))
            };
            for _ in 0..jobs {
                let (rx, tx) = (job_rx.clone(), note_tx.clone());
                s.spawn(move || self.work(&rx, &Notes::new(tx)));
            }
            drop((note_tx, job_rx));
            for note in note_rx.into_iter().flatten() {
                on_note(note);
            }
            producer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn produce(
        &self,
        scope: &Scope,
        defer: Option<Duration>,
        jobs: &Sender<FolderJob>,
        notes: &Notes,
    ) -> Vec<FolderRecord> {
        if scope.full {
            return self.walk_jobs(Path::new(""), defer, jobs, notes);
        }
        let mut records = Vec::new();
        for w in &scope.walks {
            records.extend(self.walk_jobs(w, defer, jobs, notes));
        }
        records.extend(self.file_jobs(&scope.files, jobs, notes));
        records
    }

    /// Makes every new name durable and gives each folder its source's mode and times once its
    /// contents are done, deepest first: an `fsync` of each folder that gained a name (or one
    /// `syncfs` when there are many), before its mode is set, since a mode without owner access
    /// would keep a user who is not root from opening it again.
    fn finish_folders(&self, records: &[FolderRecord], on_note: &mut dyn FnMut(Note)) {
        if self.settings.dry_run {
            return;
        }
        let caps = self.dest.capabilities();
        let mut fail = |r: &FolderRecord, op: Op, e: io::Error| {
            let failure = Failure::at(op, &self.dest.path().join(&r.rel), e);
            on_note(Note::Done(Event::failed(
                self.tree.src.join(&r.rel),
                failure,
            )));
        };
        let changed = records.iter().filter(|r| r.changed_entries()).count();
        let one_by_one = changed <= FSYNC_FOLDERS_MAX;
        for r in records.iter().rev() {
            let sync = one_by_one && r.changed_entries();
            if !sync && !r.needs_meta(caps) {
                continue;
            }
            let folder = match self.dest.folder(&r.rel) {
                Ok(Some(folder)) => folder,
                Ok(None) => continue,
                Err(e) => {
                    fail(r, Op::FinishFolder, e);
                    continue;
                }
            };
            if sync && let Err(e) = folder.sync() {
                fail(r, Op::SyncFolder, e);
            }
            if r.needs_meta(caps)
                && let Err(e) = folder.set_meta(&r.src)
            {
                fail(r, Op::FinishFolder, e);
            }
        }
        if !one_by_one
            && let Err(e) = self.dest.sync_names()
            && let Some(first) = records.iter().find(|r| r.changed_entries())
        {
            fail(first, Op::SyncFolder, e);
        }
    }

    /// One worker: takes folder after folder, publishing its copies in batches.
    fn work(&self, jobs: &Receiver<FolderJob>, notes: &Notes) {
        let mut batch = Batch::default();
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    // Nothing queued right now. The walk may be a moment behind: a little wait
                    // spares publishing (and syncing) a batch that more work would have joined.
                    match jobs.recv_timeout(WALK_CATCH_UP) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {
                            // Publish what is staged rather than let it wait.
                            self.commit(&mut batch, notes, true);
                            match jobs.recv() {
                                Ok(job) => job,
                                Err(_) => break,
                            }
                        }
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let _place = self.budget.as_deref().map(Budget::take);
            self.folder(&job, notes, &mut batch);
            notes.flush();
        }
        self.commit(&mut batch, notes, true);
    }

    /// Publishes a batch of staged copies: one sync makes all their data durable (a `syncfs`,
    /// or an `fsync` for a batch of one), then each gets its final name. A failed sync throws
    /// the whole batch away: which file lost data cannot be known, and a second sync may lie.
    ///
    /// A copy is said (`Copied:`) only once its name is durable too: a copy acknowledged is one
    /// a power cut keeps. The names of one batch ride on the next batch's `syncfs`, which covers
    /// the whole filesystem; the `last` batch before the worker waits, or one without such a
    /// sync, syncs the folders that changed itself.
    fn commit(&self, batch: &mut Batch, notes: &Notes, last: bool) {
        if batch.items.is_empty() && batch.unsaid.is_empty() {
            return;
        }
        let whole = batch.items.len() > 1 && self.dest.capabilities().group_commit;
        let synced = match batch.items.as_slice() {
            [] => Ok(()),
            [one] => one.staged.sync(),
            _ => self.dest.sync_all(),
        };
        if whole && synced.is_ok() {
            for event in batch.unsaid.drain(..) {
                notes.send(Note::Done(event));
            }
        }
        for mut ready in batch.items.drain(..) {
            let outcome = match &synced {
                Ok(()) => {
                    let target = std::mem::take(&mut ready.target);
                    let staged = &mut ready.staged;
                    let case_sensitive = self.dest.capabilities().case_sensitive;
                    publish_free(&*ready.folder, case_sensitive, &ready.name, target, |to| {
                        staged.publish(to)
                    })
                }
                Err(e) => {
                    let failure = Failure::io(Op::Sync, clone_error(e));
                    Outcome::Failed(self.dest_failure(failure, e))
                }
            };
            if matches!(outcome, Outcome::Copied(_)) {
                ready.touched.store(true, Ordering::Relaxed);
            }
            batch
                .unsaid
                .push(Event::new(ready.src, outcome).with_bytes(ready.size));
        }
        if last || !whole || synced.is_err() {
            let copied = |e: &Event| matches!(e.outcome, Outcome::Copied(_));
            if batch.unsaid.iter().any(copied)
                && let Err(e) = self.dest.sync_names()
            {
                for event in &mut batch.unsaid {
                    if let Outcome::Copied(path) = &event.outcome {
                        let failure = Failure::at(Op::SyncFolder, path, clone_error(&e));
                        event.outcome = Outcome::Failed(self.dest_failure(failure, &e));
                    }
                }
            }
            for event in batch.unsaid.drain(..) {
                notes.send(Note::Done(event));
            }
        }
        notes.flush();
        batch.bytes = 0;
        batch.folders = 0;
    }
}

/// The same error again, for each copy of a batch whose one sync failed.
fn clone_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl Now {
    fn read() -> Now {
        Now {
            time: SystemTime::now(),
            stamp: now_stamp(),
        }
    }
}

/// The local time now, as a version stamp.
pub(crate) fn now_stamp() -> u64 {
    use chrono::TimeZone;
    use std::cell::Cell;
    // Converting to local time reads the zone file's status each call; once a second will do.
    thread_local! {
        static LAST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    let secs = SystemTime::now()
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
