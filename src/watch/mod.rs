//! `backup watch`: the loop that turns filesystem events into work for the engine.
//!
//! The watcher (`notifier`) starts before the first pass, so a change made during the pass is
//! never missed. Events become work (`changes::classify`); changed files wait until they settle
//! (`settle::Settle`); new folders are walked; a lost event queue or the periodic safety net runs
//! a full pass. Each batch goes through the same engine as `once`, and ends with one rolling
//! summary line. Between batches nothing is held open on DST, so that it can be ejected; when it
//! goes away (or fills up) the loop keeps watching SRC, remembers what changed, and runs a pass
//! when DST is back as the same filesystem and folder (or has space again).

mod away;
mod changes;
mod checkup;
mod fanotify;
mod notifier;
mod poller;
mod start;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use self::away::{Absence, Away};
use self::changes::{Work, classify, describe, outermost};
pub(crate) use self::notifier::Hub;
use self::notifier::{Feed, Msg, Watcher};
use self::start::{be_a_good_neighbour, poll_tree, start, watch_tree};
use crate::archive::prune;
use crate::config::WatchConfig;
use crate::engine::{Engine, LOCKED_RETRY, Scope};
use crate::error::{About, Error, Failure, Status, Why};
use crate::escape::display;
use crate::health::Watchdog;
use crate::history::Policy;
use crate::once::with_progress;
use crate::outcome::{Counts, Event, Note, Outcome};
use crate::report::{Detail, Message, Reporter, Warning};
use crate::settle::Settle;
use crate::state::State;

/// How often an idle loop checks that SRC and DST are still the folders it started with, and a
/// waiting one whether DST is back.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Work gathered from events, not yet handed to the engine.
#[derive(Debug, Default)]
struct Pending {
    /// A full pass over SRC.
    full: bool,
    /// Folders to walk (new or moved in).
    walks: Vec<PathBuf>,
}

/// Everything the loop keeps between batches.
struct Loop<'a> {
    engine: &'a Engine,
    cfg: &'a WatchConfig,
    policy: &'a Policy,
    feed: Feed,
    watcher: Watcher,
    settle: Settle,
    pending: Pending,
    totals: Counts,
    prune_failed: bool,
    next_rescan: Option<Instant>,
    /// Whether DST takes copies now, and what was said while it did not.
    absence: Absence,
    /// What `backup status` reads.
    state: State,
    /// What the loop does when nothing is amiss: `watching` or `polling`.
    idle: &'static str,
    /// When work first became due while a burst is being gathered into one batch.
    due_since: Option<Instant>,
    /// Files (relative to SRC) larger than the space DST had left: their size, and the free
    /// space when they were last tried.
    unfit: HashMap<PathBuf, (u64, u64)>,
    lines: Cadence,
    /// Files (relative to SRC) that failed and have not been copied since, with the line that
    /// said why.
    failing: std::collections::BTreeMap<PathBuf, String>,
    /// When a batch last ended with every file it met copied.
    last_success: Option<std::time::SystemTime>,
    /// Versions in DST, counted at the last full pass where the metrics show them.
    versions: Option<u64>,
    /// When the health was last looked at.
    last_checkup: Option<Instant>,
    /// When the pending files were last sized, and their size then.
    sized: Option<(Instant, u64)>,
    watchdog: Watchdog,
}

/// During a burst, a rolling line at most this often; the totals stay exact.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// How often the loop speaks: the rolling line at most once per `LINE_EVERY`, the warning about
/// polled folders once.
#[derive(Default)]
struct Cadence {
    /// What the batches since the last rolling line did.
    unprinted: Counts,
    last_line: Option<Instant>,
    said_polled: bool,
}

/// Runs `watch` until a signal sets the engine's stop flag, or SRC goes away (or DST, with
/// `--exit-on-lost-destination`).
pub(crate) fn run(
    engine: &Engine,
    cfg: &WatchConfig,
    policy: &Policy,
    reporter: &mut Reporter,
    wake: &Receiver<()>,
    hub: &Hub,
    watchdog: Watchdog,
) -> Status {
    let src_id = match std::fs::metadata(&engine.tree.src) {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) => {
            let about = About::Source(engine.tree.src.clone());
            reporter.error(&Error::new(about, Why::Io(e)));
            return Status::Failure;
        }
    };
    if cfg.low_priority
        && let Err(e) = be_a_good_neighbour()
    {
        reporter.warning(&Warning::NoLowPriority(e));
    }
    let feed = Feed::new();
    let Some(watcher) = start(engine, cfg, hub, &feed, reporter) else {
        return Status::Failure;
    };
    reporter.say(&Message::Watching {
        src: &engine.tree.src,
        method: watcher.method(),
    });
    reporter.say(&Message::Detail(Detail::Plan(watcher.plan())));
    let state = State::start(&engine.tree.src, engine.dest.path());
    let mut l = Loop::new(engine, cfg, policy, feed, watcher, state, watchdog);
    if l.watcher.is_polling() {
        l.idle = "polling";
    }
    with_progress(engine, reporter, |reporter| {
        l.batch(Scope::full(), true, reporter);
    });
    engine.dest.release();
    let mut status = Status::Success;
    while !engine.stopped() && !l.absence.lost_for_good {
        l.checkup(false, reporter);
        if let Err(e) = source_still_there(engine, src_id) {
            reporter.error(&e);
            status = Status::Failure;
            break;
        }
        if l.absence.away.is_none()
            && let Err(why) = engine.dest.still_there()
        {
            l.lost(Away::Gone(why), reporter);
            continue;
        }
        if l.absence.away.is_some() {
            l.wait(reporter, wake);
        } else {
            l.retry_unfit();
            l.step(reporter, wake);
        }
    }
    l.state.set("stopped");
    for w in l.watchdog.finish() {
        reporter.warning(&w);
    }
    if l.lines.unprinted.total() > 0 {
        l.print_rolling(false, reporter);
    }
    let left = l.settle.len() + l.pending.walks.len();
    if left > 0 && !l.absence.lost_for_good {
        reporter.say(&Message::Left { changes: left });
    }
    if !l.unfit.is_empty() {
        reporter.warning(&Warning::DidNotFit {
            dst: engine.dest.path().to_path_buf(),
            files: l.unfit.len() as u64,
            largest: l.unfit.values().map(|(size, _)| *size).max().unwrap_or(0),
            free: engine.dest.free_space(),
        });
    }
    drop(l.watcher);
    reporter.say(&Message::Summary(&l.totals));
    if l.totals.failed > 0 || l.prune_failed || l.absence.lost_for_good {
        status = Status::Failure;
    }
    status
}

impl<'a> Loop<'a> {
    fn new(
        engine: &'a Engine,
        cfg: &'a WatchConfig,
        policy: &'a Policy,
        feed: Feed,
        watcher: Watcher,
        state: State,
        watchdog: Watchdog,
    ) -> Loop<'a> {
        Loop {
            engine,
            cfg,
            policy,
            feed,
            watcher,
            settle: Settle::new(cfg.debounce, cfg.max_delay),
            pending: Pending::default(),
            totals: Counts::default(),
            prune_failed: false,
            next_rescan: cfg.rescan_every.map(|d| Instant::now() + d),
            absence: Absence::default(),
            state,
            idle: "watching",
            due_since: None,
            unfit: HashMap::new(),
            lines: Cadence::default(),
            failing: std::collections::BTreeMap::new(),
            last_success: None,
            versions: None,
            last_checkup: None,
            sized: None,
            watchdog,
        }
    }

    /// Runs what is due, or else waits for events, a wake-up, or the next deadline.
    fn step(&mut self, reporter: &mut Reporter, wake: &Receiver<()>) {
        if let Some(at) = self.gathering(Instant::now()) {
            self.listen(at, reporter, wake);
            return;
        }
        self.due_since = None;
        let scope = self.due();
        if !scope.is_empty() {
            match self.engine.dest.reacquire() {
                Ok(()) => {
                    self.batch(scope, false, reporter);
                    self.engine.dest.release();
                }
                Err(why) => {
                    // What was due is owed: a pass after the return finds it.
                    self.pending.full = true;
                    self.lost(Away::Gone(why), reporter);
                }
            }
            return;
        }
        let now = Instant::now();
        let deadline = [
            self.settle.next_due(),
            self.next_rescan,
            Some(now + CHECK_EVERY),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + CHECK_EVERY);
        self.listen(deadline, reporter, wake);
    }

    /// While a burst goes on, when to look again instead of running what is due now: files
    /// that become due within the gathering window (see `Settle::run_at`), and folders to walk
    /// (a new folder usually comes with more), wait to go in one batch. `None`: run now.
    fn gathering(&mut self, now: Instant) -> Option<Instant> {
        if self.pending.full {
            return None;
        }
        let walks = !self.pending.walks.is_empty();
        let files = self.settle.next_due().is_some_and(|at| at <= now);
        if !walks && !files {
            return None;
        }
        let since = *self.due_since.get_or_insert(now);
        let gather = self.settle.gather();
        let at = if walks {
            since + gather
        } else {
            self.settle.run_at(now, since, gather)
        };
        (at > now).then_some(at)
    }

    /// Takes events until `deadline`, a wake-up, or the first batch of them.
    fn listen(&mut self, deadline: Instant, reporter: &mut Reporter, wake: &Receiver<()>) {
        let now = Instant::now();
        select! {
            recv(self.feed.rx) -> msg => {
                let more: Vec<Msg> = std::iter::from_fn(|| self.feed.rx.try_recv().ok()).collect();
                for msg in msg.into_iter().chain(more) {
                    self.take(msg, reporter);
                }
            }
            recv(wake) -> _ => {}
            default(deadline.saturating_duration_since(now)) => {}
        }
        if self.feed.overflow.swap(false, Ordering::Relaxed) {
            self.pending.full = true;
        }
        if let (Some(at), Some(every)) = (self.next_rescan, self.cfg.rescan_every)
            && Instant::now() >= at
        {
            self.pending.full = true;
            self.next_rescan = Some(Instant::now() + every);
        }
    }

    /// The work that is due now: a full pass, or the folders to walk and the files that have
    /// settled (those inside a folder being walked are covered by the walk).
    fn due(&mut self) -> Scope {
        let files = self.settle.due(Instant::now());
        let pending = std::mem::take(&mut self.pending);
        if pending.full {
            return Scope::full();
        }
        let walks = outermost(pending.walks);
        let files = files
            .into_iter()
            .filter(|f| !walks.iter().any(|w| f.starts_with(w)))
            .collect();
        Scope {
            full: false,
            walks,
            files,
        }
    }

    /// Runs one batch through the engine, prints its rolling line (for the first pass always,
    /// later only when the batch did something), and prunes what it touched. Files still being
    /// written go back to settle. Failures that may lie with the destination are held back until
    /// the batch is over: if the destination turned out to be gone, those files are owed, not
    /// failed; a full destination's files are owed too.
    fn batch(&mut self, scope: Scope, first: bool, reporter: &mut Reporter) {
        self.state.set("copying");
        let started = Instant::now();
        let mut counts = Counts::default();
        // What failed, and (while some file is failing) what was copied, so that the failing
        // files are known one by one; a full pass finds them all anew.
        let mut failed: Vec<(PathBuf, String)> = Vec::new();
        let track_ok = !self.failing.is_empty() && !scope.full;
        let mut ok: Vec<PathBuf> = Vec::new();
        let mut held: Vec<Event> = Vec::new();
        // Only while some file waits for room: a batch's other copies need no list.
        let track_landed = !self.unfit.is_empty();
        let mut landed: Vec<PathBuf> = Vec::new();
        let mut not_copied = 0u64;
        let src = &self.engine.tree.src;
        let settle = &mut self.settle;
        let rel = |p: &Path| p.strip_prefix(src).unwrap_or(p).to_path_buf();
        let changed = self
            .engine
            .run(&scope, Some(self.cfg.debounce), &mut |note| {
                let now = Instant::now();
                match note {
                    Note::Unsettled(path, age) => {
                        settle.touch(rel(&path), now.checked_sub(age).unwrap_or(now));
                    }
                    // Still being written: it will settle later.
                    Note::Busy(ev) => settle.touch(rel(&ev.src), now),
                    Note::Locked(path, first) => {
                        settle.retry(rel(&path), now + LOCKED_RETRY);
                        if first {
                            reporter.say(&Message::Detail(Detail::Locked {
                                src: &path,
                                retry: LOCKED_RETRY,
                            }));
                        }
                    }
                    // Stopped while it was read: owed to the next run.
                    Note::Left(path) => settle.touch(rel(&path), now),
                    Note::Warning(w) => reporter.warning(&w),
                    Note::Done(ev) => match &ev.outcome {
                        Outcome::Failed(Failure::DestinationFull) => not_copied += 1,
                        Outcome::Failed(f) if f.may_be_destination() => held.push(ev),
                        _ => {
                            if let Outcome::Failed(f) = &ev.outcome {
                                failed.push((rel(&ev.src), format!("{}: {f}", display(&ev.src))));
                            } else {
                                if track_landed {
                                    landed.push(rel(&ev.src));
                                }
                                if track_ok {
                                    ok.push(rel(&ev.src));
                                }
                            }
                            reporter.event(&ev);
                            // A file found unchanged after the first pass (after its event, or
                            // by a rescan) was counted when it was seen first, by that pass or
                            // when it was copied.
                            let again = !first
                                && matches!(
                                    ev.outcome,
                                    Outcome::Unchanged | Outcome::UnchangedIn(_)
                                );
                            if !again {
                                counts.add(&ev.outcome);
                            }
                        }
                    },
                }
            });
        if let Err(why) = self.engine.dest.still_there() {
            self.pending.full = true;
            self.lost(Away::Gone(why), reporter);
        } else {
            for ev in &held {
                // Said once, and tried again when the free space grows past its size.
                if let Outcome::Failed(Failure::DoesNotFit { size, free }) = ev.outcome {
                    let path = ev.src.strip_prefix(src).unwrap_or(&ev.src);
                    if self
                        .unfit
                        .insert(path.to_path_buf(), (size, free))
                        .is_some()
                    {
                        continue;
                    }
                }
                if let Outcome::Failed(f) = &ev.outcome {
                    let path = ev.src.strip_prefix(src).unwrap_or(&ev.src);
                    failed.push((path.to_path_buf(), format!("{}: {f}", display(&ev.src))));
                }
                reporter.event(ev);
                counts.add(&ev.outcome);
            }
            if !self.engine.was_full() {
                self.settle
                    .landed(scope.full, &scope.files, &scope.walks, started);
            }
            if scope.full {
                self.failing.clear();
            }
            for path in &ok {
                self.failing.remove(path);
            }
            if failed.is_empty() && !self.engine.was_full() {
                self.last_success = Some(std::time::SystemTime::now());
            }
            self.failing.extend(failed.iter().cloned());
            // Counted at each full pass; each copy since is one more (what a prune takes
            // shows at the next full pass).
            if scope.full && self.watchdog.counts_versions() {
                let archive = crate::archive::Archive::of(&self.engine.dest);
                self.versions = archive.versions_held().ok();
            } else if let Some(v) = &mut self.versions {
                *v += counts.copied;
            }
            if self.engine.was_full() {
                self.pending.full = true;
                let free = self.engine.dest.free_space();
                self.lost(Away::Full { free, not_copied }, reporter);
            }
        }
        self.totals.merge(counts);
        // A file that did not fit and has landed since is no failure of this run any more: the
        // totals (and the exit status) say what is still wrong, not what once was.
        for path in &landed {
            if self.unfit.remove(path).is_some() {
                self.totals.failed = self.totals.failed.saturating_sub(1);
            }
        }
        // The state file first: whoever reads the rolling line finds it saying the same.
        let failures = failed.into_iter().map(|(_, line)| line).collect();
        self.state.batch(scope.full, &counts, failures);
        if self.absence.away.is_none() {
            self.state.set(self.idle);
        }
        self.checkup(true, reporter);
        self.lines.unprinted.merge(counts);
        let now = Instant::now();
        let more_soon = !self.pending.walks.is_empty()
            || self
                .settle
                .next_due()
                .is_some_and(|at| at < now + LINE_EVERY);
        let quiet_for = self
            .lines
            .last_line
            .map(|at| now.saturating_duration_since(at));
        if first
            || (self.lines.unprinted.total() > 0
                && (!more_soon || quiet_for.is_none_or(|d| d >= LINE_EVERY)))
        {
            self.print_rolling(first, reporter);
        }
        // Lines of a batch that prints no rolling line (only unchanged files, with -v) are not
        // left in the buffer until the next one.
        reporter.flush();
        // New versions can push old ones out; a full pass may find any folder aged.
        if self.absence.away.is_none() {
            let folders = (!scope.full).then_some(changed);
            self.prune_failed |= prune::after_pass(self.engine, self.policy, folders, reporter);
        }
    }

    /// Files that did not fit are tried again once the free space has grown past their size
    /// (and past what it was when they were last tried).
    fn retry_unfit(&mut self) {
        if self.unfit.is_empty() {
            return;
        }
        let Some(free) = self.engine.dest.free_space() else {
            return;
        };
        let now = Instant::now();
        for (path, (size, then)) in &mut self.unfit {
            if free > *then && free >= *size {
                *then = free;
                self.settle.touch(path.clone(), now);
            }
        }
    }

    /// The one warning about polling: how many folders and how often.
    fn say_polled_once(&mut self, warning: &Warning, reporter: &mut Reporter) {
        if !self.lines.said_polled {
            self.lines.said_polled = true;
            reporter.warning(warning);
        }
    }

    /// The rolling line for the batches since the last one; after the first pass, with the
    /// files it found still being written, left to settle.
    fn print_rolling(&mut self, first: bool, reporter: &mut Reporter) {
        let settling = if first { self.settle.len() } else { 0 };
        reporter.say(&Message::Batch {
            at: chrono::Local::now(),
            batch: &self.lines.unprinted,
            totals: &self.totals,
            settling,
        });
        self.lines.unprinted = Counts::default();
        self.lines.last_line = Some(Instant::now());
    }

    /// Takes one message from the watcher into the pending work.
    fn take(&mut self, msg: Msg, reporter: &mut Reporter) {
        let (event, at) = match msg {
            Msg::Event(event, at) => (event, at),
            // A watch that could not be added for a new folder: from now on, poll.
            Msg::Limit(warning) => {
                self.fall_back_to_polling(&warning, reporter);
                return;
            }
            Msg::Paced(warning) => return self.say_polled_once(&warning, reporter),
        };
        let tree = &self.engine.tree;
        let what = describe(&event.kind);
        let works = classify(&event, &tree.src, &tree.skip);
        if works.is_empty()
            && let Some(p) = event.paths.last()
        {
            reporter.say(&Message::Decision {
                path: p,
                event: what,
                decision: "nothing to do",
            });
        }
        for work in works {
            let (path, decision) = match work {
                Work::Rescan => {
                    self.pending.full = true;
                    reporter.say(&Message::Decision {
                        path: &tree.src,
                        event: what,
                        decision: "full pass: events were lost",
                    });
                    continue;
                }
                Work::Changed(p) | Work::Arrived(p) if tree.exclude.excludes(&p, false) => {
                    (p, "excluded")
                }
                Work::Changed(p) => {
                    let closes = event.info() != Some(poller::POLLED);
                    let decision = self.changed(&p, &event.kind, closes, at);
                    (p, decision)
                }
                Work::Arrived(p) => {
                    let decision = self.arrived(&p, at, reporter);
                    (p, decision)
                }
            };
            reporter.say(&Message::Decision {
                path: &tree.src.join(&path),
                event: what,
                decision,
            });
        }
    }

    /// The contents or metadata of `p` changed. A write leaves it open until its writer closes
    /// it (a SQLite database, which its application keeps open, excepted); a change of a
    /// database's `-wal` or `-journal` is a change of the database, and what SQLite does with
    /// its `-shm` or to open and close its files is none. `closes`: whether the event's source
    /// reports closes (inotify, fanotify), which the poller cannot.
    fn changed(
        &mut self,
        p: &Path,
        kind: &notify::EventKind,
        closes: bool,
        at: Instant,
    ) -> &'static str {
        use notify::EventKind as K;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        let src = &self.engine.tree.src;
        if let Some((base, shm)) = companion(src, p) {
            let data = matches!(
                kind,
                K::Create(_)
                    | K::Remove(_)
                    | K::Modify(ModifyKind::Data(_) | ModifyKind::Any)
                    | K::Modify(ModifyKind::Name(_))
            );
            if shm || !data {
                return "SQLite's working file: no change of its database";
            }
            self.settle.touch(base, at);
            return "its database is copied once settled";
        }
        match kind {
            K::Modify(ModifyKind::Data(_)) => {
                if self.settle.is_open(p) {
                    self.settle.touch(p.to_path_buf(), at);
                } else if is_database(&src.join(p)) {
                    self.settle.closed(p.to_path_buf(), at);
                    return "a database: copy once settled";
                } else {
                    self.settle.wrote(p.to_path_buf(), at);
                }
                "copy once closed and settled"
            }
            // A file just created is open for writing by its creator, who may write nothing
            // for a while: rsync fills its temporary file in one write at the end. A symlink or
            // a hard link is created whole, and polling (all of it, or the folders past the
            // watch limit) sees no closes, so those settle by time.
            K::Create(CreateKind::File) if closes && is_new_file(&src.join(p)) => {
                self.settle.created(p.to_path_buf(), at);
                "copy once closed and settled"
            }
            K::Access(AccessKind::Close(AccessMode::Write)) => {
                self.settle.closed(p.to_path_buf(), at);
                "copy once settled"
            }
            _ => {
                self.settle.touch(p.to_path_buf(), at);
                "copy once settled"
            }
        }
    }

    /// Something appeared at `p`: a folder is watched, then walked; anything else settles.
    fn arrived(&mut self, p: &Path, at: Instant, reporter: &mut Reporter) -> &'static str {
        let tree = &self.engine.tree;
        match std::fs::symlink_metadata(tree.src.join(p)) {
            Ok(m) if m.is_dir() && tree.exclude.excludes(p, true) => "excluded",
            Ok(m) if m.is_dir() => {
                if let Err(e) = watch_tree(self.engine, &mut self.watcher, p)
                    && let Some(warning) = notifier::limit_warning(&e)
                {
                    self.fall_back_to_polling(&warning, reporter);
                }
                self.pending.walks.push(p.to_path_buf());
                "new folder: watch and walk it"
            }
            Ok(_) => {
                self.settle.touch(p.to_path_buf(), at);
                "copy once settled"
            }
            Err(_) => "gone again",
        }
    }

    /// Replaces the inotify watcher with polling after an OS limit was hit, saying so (`warning`)
    /// once, and owes a full pass for what went unwatched.
    fn fall_back_to_polling(&mut self, warning: &Warning, reporter: &mut Reporter) {
        self.pending.full = true;
        if self.watcher.is_polling() {
            return;
        }
        reporter.warning(warning);
        self.watcher = poll_tree(self.engine, notifier::FALLBACK_POLL, &self.feed);
        self.idle = "polling";
    }
}

/// SRC must stay the folder the run started with: a deleted SRC has nothing left to mirror.
fn source_still_there(engine: &Engine, src_id: (u64, u64)) -> Result<(), Error> {
    let src = &engine.tree.src;
    let gone = |why| Error::new(About::Source(src.clone()), why);
    match std::fs::metadata(src) {
        Ok(m) if (m.dev(), m.ino()) == src_id => Ok(()),
        Ok(_) => Err(gone(Why::SourceReplaced)),
        Err(e) => Err(gone(Why::Io(e))),
    }
}

/// For a SQLite companion (`NAME-wal`, `NAME-journal`, `NAME-shm`) whose database is a file
/// beside it in SRC: the database's path, and whether it is the `-shm`.
fn companion(src: &Path, p: &Path) -> Option<(PathBuf, bool)> {
    use std::os::unix::ffi::OsStrExt;
    let name = p.file_name()?.as_bytes();
    let base = crate::database::base_of(name)?;
    let db = p.with_file_name(std::ffi::OsStr::from_bytes(&base));
    std::fs::symlink_metadata(src.join(&db))
        .ok()
        .filter(std::fs::Metadata::is_file)?;
    Some((db, name.ends_with(b"-shm")))
}

/// Whether `path` is a regular file with one name: made by `open`, so that a close will
/// follow, unlike a `link`.
fn is_new_file(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.nlink() == 1)
}

/// Whether the file at `path` starts with SQLite's header: its application keeps it open while
/// it runs, so that it is never closed after a write.
fn is_database(path: &Path) -> bool {
    crate::source::open_path(path).is_ok_and(|f| crate::database::is_database(&f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::mem::Mem;
    use crate::report::Style;

    fn config() -> WatchConfig {
        WatchConfig {
            debounce: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
            poll: Some(Duration::from_secs(3600)),
            events: crate::options::Events::Auto,
            rescan_every: None,
            exit_on_lost: false,
            low_priority: false,
            health: crate::health::Settings::default(),
        }
    }

    #[test]
    fn a_lost_destination_is_waited_for_and_what_is_owed_is_copied_when_it_is_back() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("a.txt"), "a").expect("write");
        let dest = Mem::new(Path::new("/dst"));
        let engine = crate::engine::for_tests(src.path(), &dest);
        let cfg = config();
        let policy = Policy::default();
        let feed = Feed::new();
        let watcher = Watcher::poll(src.path(), Duration::from_secs(3600), &feed);
        let state = State::detached(src.path(), Path::new("/dst"));
        let speaker = crate::health::notify::speaker(None, src.path(), Path::new("/dst"));
        let boards = crate::health::metrics::Boards::default();
        let watchdog = Watchdog::new(&cfg.health, speaker, &boards);
        let mut l = Loop::new(&engine, &cfg, &policy, feed, watcher, state, watchdog);
        let mut reporter = Reporter::stdio(Style {
            quiet: true,
            ..Style::default()
        });
        let (_wake_tx, wake) = crossbeam_channel::bounded::<()>(1);

        dest.faults()
            .gone
            .store(true, std::sync::atomic::Ordering::Relaxed);
        l.batch(Scope::full(), true, &mut reporter);
        assert!(
            matches!(l.absence.away, Some(Away::Gone(_))),
            "{:?}",
            l.absence.away
        );
        assert!(l.pending.full, "a pass is owed");
        assert!(dest.paths().is_empty());
        assert_eq!(l.totals.failed, 0, "owed, not failed");

        // Still gone: it keeps waiting.
        l.wait(&mut reporter, &wake);
        assert!(l.absence.away.is_some());

        dest.faults()
            .gone
            .store(false, std::sync::atomic::Ordering::Relaxed);
        l.wait(&mut reporter, &wake);
        assert!(l.absence.away.is_none(), "back");
        let scope = l.due();
        assert!(scope.full, "the owed pass");
        l.batch(scope, false, &mut reporter);
        assert_eq!(dest.read(Path::new("a.txt")).expect("copied"), b"a");
        assert_eq!(l.totals.copied, 1);
    }
}
