//! The engine: carries out a pass with a pool of workers.
//!
//! A producer walks SRC (or takes the folders and files `watch` names), opens each folder in DST
//! in walk order, creating it where missing, and sends one job per folder. A worker takes one
//! job at a time: it lists the source and the destination folder once, removes temporary files
//! left by a crash, gathers the facts about each entry, lets `plan` decide, and carries the
//! decision out. Copies are staged and published in batches (group commit: one sync for a batch,
//! then each name), and at the end each folder gets its own metadata and an fsync of its new
//! names, so that when a pass reports its summary everything it reported as copied is durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};

use crate::config::Limits;
use crate::dest::{self, Capabilities, Destination, Folder, Staged, is_temp_name};
use crate::error::{Failure, Op};
use crate::meta::{Kind, Meta};
use crate::naming::FolderIndex;
use crate::outcome::{Event, Note, Outcome};
use crate::plan::{self, Decision, Facts, Now, RETRY_BACKOFF, Rules};
use crate::scan::{Tree, Visit};
use crate::source;

/// How the engine works, decided once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub checksum: bool,
    pub limits: Limits,
    /// Decide and report, but carry nothing out.
    pub dry_run: bool,
    /// Report each unchanged file (for `--verbose`), not just a count per folder.
    pub each_unchanged: bool,
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
    /// Set when the destination ran out of space (or quota) in this run: nothing more is
    /// written, and what is left is counted as not copied.
    full: AtomicBool,
    /// Said once the run's notes are in, as `warning:` lines.
    warnings: std::sync::Mutex<Vec<String>>,
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
}

impl FolderRecord {
    fn changed_entries(&self) -> bool {
        self.created || self.touched.load(Ordering::Relaxed)
    }

    /// Whether the folder's own metadata must be set: its entries changed (which moved its
    /// time), or what the destination keeps of it differs from the source's.
    fn needs_meta(&self, caps: &Capabilities) -> bool {
        self.changed_entries()
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
/// yet), and the flag its jobs set when they publish into it.
type Parent = (Option<Arc<dyn Folder>>, Arc<AtomicBool>);

/// What became of one entry in a worker.
enum Step {
    Done(Outcome),
    Busy(Failure),
    Unsettled(Duration),
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
    bytes: u64,
    /// Folders the items span: each holds a folder handle open until published.
    folders: usize,
}

/// A batch is published once it holds this many files or bytes, or when its worker runs out of
/// queued work, whichever comes first.
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 256 << 20;

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
            warnings: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A problem worked around, to say when the run is done.
    fn warn(&self, line: String) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(line);
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
        for line in warnings {
            on_note(Note::Warning(line));
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
        produce: impl FnOnce(&Sender<FolderJob>, &Sender<Note>) -> R + Send,
        on_note: &mut dyn FnMut(Note),
    ) -> R {
        let jobs = self.settings.limits.jobs;
        let (job_tx, job_rx) = bounded::<FolderJob>(2 * jobs);
        let (note_tx, note_rx) = bounded::<Note>(4096);
        std::thread::scope(|s| {
            let producer = {
                let note_tx = note_tx.clone();
                s.spawn(move || produce(&job_tx, &note_tx))
            };
            for _ in 0..jobs {
                let (rx, tx) = (job_rx.clone(), note_tx.clone());
                s.spawn(move || self.work(&rx, &tx));
            }
            drop((note_tx, job_rx));
            for note in note_rx {
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
        notes: &Sender<Note>,
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

    /// Walks the folder `start` (relative to SRC) and everything below it, opening (and, unless
    /// this is a dry run, creating) each folder in DST in walk order, one component at a time.
    fn walk_jobs(
        &self,
        start: &Path,
        defer: Option<Duration>,
        jobs: &Sender<FolderJob>,
        notes: &Sender<Note>,
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
                    let _ = notes.send(Note::Done(Event::failed(path, failure)));
                    continue;
                }
            };
            let parent = match depth {
                0 => None,
                _ => Some(stack[depth - 1].0.as_ref()),
            };
            let opened = self.open_folder(parent, &rel, create);
            let opened = match opened {
                Ok(o) => o,
                // Full: the folder's files are walked still, to be counted as not copied.
                Err(e) if crate::error::is_full(&e) => {
                    self.full.store(true, Ordering::Relaxed);
                    None
                }
                Err(e) => {
                    let at = self.dest.path().join(&rel);
                    let failure = Failure::at(Op::CreateFolder, &at, e);
                    let _ =
                        notes.send(Note::Done(Event::failed(self.tree.src.join(&rel), failure)));
                    walk.skip_current();
                    continue;
                }
            };
            let created = opened.as_ref().is_some_and(|o| o.created);
            if created && depth > 0 {
                stack[depth - 1].1.store(true, Ordering::Relaxed);
            }
            let touched = Arc::new(AtomicBool::new(false));
            records.push(FolderRecord {
                rel: rel.clone(),
                src: meta,
                dest: opened.as_ref().map(|o| o.meta).unwrap_or_default(),
                created,
                touched: Arc::clone(&touched),
            });
            let folder = opened.map(|o| o.folder);
            stack.truncate(depth);
            stack.push((folder.clone(), Arc::clone(&touched)));
            let job = FolderJob {
                rel,
                dest: folder,
                fresh: created,
                only: None,
                touched,
                defer,
            };
            if jobs.send(job).is_err() {
                break;
            }
        }
        records
    }

    /// Opens (and, with `create`, makes) the destination folder for `rel`: from its parent's
    /// folder where the walk has it open (`Some(None)`: the parent does not exist in a dry run),
    /// else one component at a time from the root. A file or symlink in the way, where SRC now
    /// has a folder, is moved aside into its own family first.
    fn open_folder(
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
    fn file_jobs(
        &self,
        paths: &[PathBuf],
        jobs: &Sender<FolderJob>,
        notes: &Sender<Note>,
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
                    let names = by_folder.entry(parent).or_default();
                    // A database's commits show as changes of its -wal or -journal: the
                    // database is what gets copied (the folder's job skips the companion).
                    if let Some(n) = &name {
                        names.extend(crate::database::base_of(n));
                    }
                    names.extend(name);
                }
            }
        }
        let mut records = Vec::new();
        for (rel, names) in by_folder {
            let src = self.tree.src.join(&rel);
            let opened = std::fs::symlink_metadata(&src)
                .and_then(|m| Ok((m, self.open_folder(None, &rel, !self.settings.dry_run)?)));
            let (src_meta, opened) = match opened {
                Ok(v) => v,
                // The folder itself is gone: its own removal is recorded in its parent.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let at = self.dest.path().join(&rel);
                    let failure = Failure::at(Op::CreateFolder, &at, e);
                    let _ = notes.send(Note::Done(Event::failed(src, failure)));
                    continue;
                }
            };
            let touched = Arc::new(AtomicBool::new(false));
            let created = opened.as_ref().is_some_and(|o| o.created);
            records.push(FolderRecord {
                rel: rel.clone(),
                src: Meta::from_std(&src_meta),
                dest: opened.as_ref().map(|o| o.meta).unwrap_or_default(),
                created,
                touched: Arc::clone(&touched),
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
            };
            if jobs.send(job).is_err() {
                break;
            }
        }
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
            && let Err(e) = self.dest.sync_all()
            && let Some(first) = records.iter().find(|r| r.changed_entries())
        {
            fail(first, Op::SyncFolder, e);
        }
    }

    /// One worker: takes folder after folder, publishing its copies in batches.
    fn work(&self, jobs: &Receiver<FolderJob>, notes: &Sender<Note>) {
        let mut batch = Batch::default();
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    // Nothing queued right now: publish what is staged rather than let it wait.
                    self.commit(&mut batch, notes);
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            self.folder(&job, notes, &mut batch);
        }
        self.commit(&mut batch, notes);
    }

    /// Publishes a batch of staged copies: one sync makes all their data durable (a `syncfs`,
    /// or an `fsync` for a batch of one), then each gets its final name. A failed sync throws
    /// the whole batch away: which file lost data cannot be known, and a second sync may lie.
    fn commit(&self, batch: &mut Batch, notes: &Sender<Note>) {
        if batch.items.is_empty() {
            return;
        }
        let synced = match batch.items.as_slice() {
            _ if self.was_full() => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            [one] => one.staged.sync(),
            _ => self.dest.sync_all(),
        };
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
            let event = Event::new(ready.src, outcome).with_bytes(ready.size);
            let _ = notes.send(Note::Done(event));
        }
        batch.bytes = 0;
        batch.folders = 0;
    }

    /// Decides on the entries of one source folder and carries the decisions out; regular files
    /// are staged into `batch`.
    fn folder(&self, job: &FolderJob, notes: &Sender<Note>, batch: &mut Batch) {
        let src_path = self.tree.src.join(&job.rel);
        let send = |src: PathBuf, step: Step, bytes: u64| {
            let note = match step {
                Step::Done(outcome) => Note::Done(Event::new(src, outcome).with_bytes(bytes)),
                Step::Busy(failure) => Note::Busy(Event::failed(src, failure)),
                Step::Unsettled(age) => Note::Unsettled(src, age),
                Step::Staged(..) => return,
            };
            let _ = notes.send(note);
        };
        let (src_dir, listing, src_names, mut index) = match self.open_job(job, &src_path) {
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
                step => {
                    if matches!(step, Step::Done(Outcome::Copied(_))) {
                        job.touched.store(true, Ordering::Relaxed);
                    }
                    send(src, step, size);
                }
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

    /// What a job works from: the source folder, open, its listing and names, and the
    /// destination folder's names by family. `None` for a source folder that is gone.
    #[allow(clippy::type_complexity)]
    fn open_job(
        &self,
        job: &FolderJob,
        src_path: &Path,
    ) -> Result<Option<(OwnedFd, Vec<(Vec<u8>, Kind)>, HashSet<Vec<u8>>, FolderIndex)>, Failure>
    {
        let src_dir = match source::open_folder(src_path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Failure::io(Op::Read, e)),
        };
        let listing = source::list(&src_dir).map_err(|e| Failure::io(Op::Read, e))?;
        let src_names: HashSet<Vec<u8>> = listing.iter().map(|(n, _)| n.clone()).collect();
        let index = self.index(job, &src_names)?;
        Ok(Some((src_dir, listing, src_names, index)))
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
    fn stage_into(&self, batch: &mut Batch, ready: Option<Ready>, notes: &Sender<Note>) {
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
        if batch.items.len() >= BATCH_FILES
            || batch.bytes >= BATCH_BYTES
            || batch.folders >= self.settings.limits.batch_dirs
        {
            self.commit(batch, notes);
        }
    }

    /// Records, as an empty `NAME_<time>_deleted` in its family, each file or folder of the job's
    /// folder that is gone from SRC: what lets a restore give back the tree as it was.
    fn record_deletions(
        &self,
        job: &FolderJob,
        src_names: &HashSet<Vec<u8>>,
        index: &mut FolderIndex,
        notes: &Sender<Note>,
    ) {
        let Some(folder) = job.dest.as_ref().filter(|_| !job.fresh) else {
            return;
        };
        let case_sensitive = self.dest.capabilities().case_sensitive;
        let gone = plan::gone(index, src_names, job.only.as_ref(), case_sensitive);
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
            let _ = notes.send(Note::Done(Event::new(src, outcome)));
        }
    }

    /// Gathers the facts about one entry, decides, and carries the decision out. `None` for a
    /// folder (the walk handles those); else what became of it and its size.
    fn entry(
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
    fn database_changed(
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
        let mut staged = match folder.stage(name) {
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
            let mut staged = match folder.stage(name) {
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
fn record_deletion_now(
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
fn publish_free(
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
