//! `backup watch`: the loop that turns filesystem events into batches for the copy workers.
//!
//! The watcher starts before the first pass, so a change made during the pass is never missed.
//! Events become work (`queue::classify`); changed files wait until they settle
//! (`queue::Settle`); new folders are walked; a lost event queue or the periodic safety net runs
//! a full pass. Each batch goes through the same workers as `once`, and ends with one rolling
//! summary line.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::Status;
use crate::config::WatchConfig;
use crate::copy::Copier;
use crate::history::Policy;
use crate::meta::Meta;
use crate::queue::{Settle, Work, classify, describe, outermost};
use crate::report::{Counts, Event, Outcome, Reporter, display, reason};
use crate::scan::{self, DirJob, DirRecord};
use crate::watch::{self, Feed, Msg, Watcher};

/// How often an idle loop checks that SRC and DST are still the folders it started with.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What one batch does.
#[derive(Debug, Default)]
struct Batch {
    /// A full pass over SRC.
    full: bool,
    /// Folders to walk (new or moved in).
    walks: Vec<PathBuf>,
    /// Settled paths to copy (a folder among them: refresh its own metadata).
    files: Vec<PathBuf>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        !self.full && self.walks.is_empty() && self.files.is_empty()
    }
}

/// Runs `watch` until a signal sets the copier's stop flag, or SRC or DST goes away.
pub fn run(
    copier: &Copier,
    cfg: &WatchConfig,
    policy: &Policy,
    reporter: &mut Reporter,
    wake: &Receiver<()>,
) -> Status {
    let src_id = match std::fs::metadata(&copier.src) {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) => {
            reporter.error(&format!("source {}: {}", display(&copier.src), reason(&e)));
            return Status::Failure;
        }
    };
    let feed = Feed::new();
    let Some(mut watcher) = start(copier, cfg, &feed, reporter) else {
        return Status::Failure;
    };
    reporter.info(&format!(
        "Watching {} for changes ({}; Ctrl-C to stop)",
        display(&copier.src),
        if watcher.is_polling() {
            "polling"
        } else {
            "inotify"
        }
    ));

    let mut settle = Settle::new(cfg.debounce, cfg.max_delay);
    let mut next = Batch::default();
    let mut totals = Counts::default();
    let mut status = Status::Success;

    let first = Batch {
        full: true,
        ..Batch::default()
    };
    let (counts, _) = crate::with_progress(copier, reporter, |reporter| {
        execute(copier, cfg, &first, &mut settle, reporter)
    });
    totals.merge(counts);
    reporter.rolling(&counts, &totals);
    let mut prune_failed = crate::prune_after(copier, policy, None, reporter);
    let mut next_rescan = cfg.rescan_every.map(|d| Instant::now() + d);

    loop {
        if copier.stopped() {
            break;
        }
        if let Err(message) = still_there(copier, src_id) {
            reporter.error(&message);
            status = Status::Failure;
            break;
        }
        next.files = settle.due(Instant::now());
        if !next.is_empty() {
            let batch = std::mem::take(&mut next);
            let (counts, changed) = execute(copier, cfg, &batch, &mut settle, reporter);
            if counts.total() > 0 {
                totals.merge(counts);
                reporter.rolling(&counts, &totals);
            }
            // New versions can push old ones out; a full pass may find any folder aged.
            let folders = (!batch.full).then_some(changed);
            prune_failed |= crate::prune_after(copier, policy, folders, reporter);
            continue;
        }

        let now = Instant::now();
        let deadline = [settle.next_due(), next_rescan, Some(now + CHECK_EVERY)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + CHECK_EVERY);
        select! {
            recv(feed.rx) -> msg => {
                let msgs = msg.into_iter().chain(std::iter::from_fn(|| feed.rx.try_recv().ok()));
                for msg in msgs {
                    take(msg, copier, &feed, &mut watcher, &mut settle, &mut next, reporter);
                }
            }
            recv(wake) -> _ => {}
            default(deadline.saturating_duration_since(now)) => {}
        }
        if feed.overflow.swap(false, Ordering::Relaxed) {
            next.full = true;
        }
        if let (Some(at), Some(every)) = (next_rescan, cfg.rescan_every)
            && Instant::now() >= at
        {
            next.full = true;
            next_rescan = Some(Instant::now() + every);
        }
    }
    drop(watcher);
    reporter.summary(&totals);
    if totals.failed > 0 || prune_failed {
        status = Status::Failure;
    }
    status
}

/// Starts the watcher the user asked for: polling with `--poll`, else inotify on every folder
/// of SRC, falling back to polling (with one line saying which limit to raise) when an OS limit
/// stands in the way.
fn start(
    copier: &Copier,
    cfg: &WatchConfig,
    feed: &Feed,
    reporter: &mut Reporter,
) -> Option<Watcher> {
    let started = match cfg.poll {
        Some(interval) => Watcher::poll(&copier.src, interval, feed),
        None => Watcher::native(feed).and_then(|mut w| {
            watch_tree(copier, &mut w, Path::new(""))?;
            Ok(w)
        }),
    };
    let started = match started {
        Err(e) if watch::limit_message(&e).is_some() => {
            reporter.warning(&watch::limit_message(&e).unwrap_or_default());
            Watcher::poll(&copier.src, watch::FALLBACK_POLL, feed)
        }
        other => other,
    };
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            reporter.error(&format!(
                "source {}: cannot watch for changes: {e}",
                display(&copier.src)
            ));
            None
        }
    }
}

/// Watches every folder of the tree at `rel` that the backup covers. Called before that tree is
/// walked, so that a file made after the walk passed its folder still raises an event.
fn watch_tree(copier: &Copier, watcher: &mut Watcher, rel: &Path) -> notify::Result<()> {
    if watcher.is_polling() {
        return Ok(());
    }
    for dir in scan::dirs(copier, rel) {
        watcher.add(&dir)?;
    }
    Ok(())
}

/// Replaces the inotify watcher with polling after an OS limit was hit, saying so once.
fn fall_back_to_polling(
    e: &notify::Error,
    copier: &Copier,
    feed: &Feed,
    watcher: &mut Watcher,
    reporter: &mut Reporter,
) -> bool {
    let Some(line) = watch::limit_message(e) else {
        return false;
    };
    if watcher.is_polling() {
        return true;
    }
    reporter.warning(&line);
    match Watcher::poll(&copier.src, watch::FALLBACK_POLL, feed) {
        Ok(w) => *watcher = w,
        Err(e) => reporter.warning(&format!("cannot poll for changes: {e}")),
    }
    true
}

/// Takes one message from the watcher into the pending work.
fn take(
    msg: Msg,
    copier: &Copier,
    feed: &Feed,
    watcher: &mut Watcher,
    settle: &mut Settle,
    next: &mut Batch,
    reporter: &mut Reporter,
) {
    match msg {
        Msg::Event(event, at) => {
            let what = describe(&event.kind);
            let works = classify(&event, &copier.src, copier.skip.as_deref());
            if works.is_empty()
                && let Some(p) = event.paths.last()
            {
                reporter.decision(p, what, "nothing to do");
            }
            for work in works {
                let decision = match work {
                    Work::Rescan => {
                        next.full = true;
                        reporter.decision(&copier.src, what, "full pass: events were lost");
                        continue;
                    }
                    Work::Changed(p) | Work::Arrived(p) if copier.exclude.excludes(&p, false) => {
                        (p, "excluded")
                    }
                    Work::Changed(p) => {
                        settle.touch(p.clone(), at);
                        (p, "copy once settled")
                    }
                    Work::Arrived(p) => match std::fs::symlink_metadata(copier.src.join(&p)) {
                        Ok(m) if m.is_dir() && copier.exclude.excludes(&p, true) => (p, "excluded"),
                        Ok(m) if m.is_dir() => {
                            if let Err(e) = watch_tree(copier, watcher, &p)
                                && fall_back_to_polling(&e, copier, feed, watcher, reporter)
                            {
                                next.full = true;
                            }
                            next.walks.push(p.clone());
                            (p, "new folder: watch and walk it")
                        }
                        Ok(_) => {
                            settle.touch(p.clone(), at);
                            (p, "copy once settled")
                        }
                        Err(_) => (p, "gone again"),
                    },
                };
                reporter.decision(&copier.src.join(&decision.0), what, decision.1);
            }
        }
        // A watch that could not be added for a new folder: from now on, poll.
        Msg::Error(e) => {
            if fall_back_to_polling(&e, copier, feed, watcher, reporter) {
                next.full = true;
            }
        }
    }
}

/// Runs one batch through the workers; returns what it did and the folders that gained names
/// (deferred files go back to settle).
fn execute(
    copier: &Copier,
    cfg: &WatchConfig,
    batch: &Batch,
    settle: &mut Settle,
    reporter: &mut Reporter,
) -> (Counts, Vec<PathBuf>) {
    let mut counts = Counts::default();
    let mut on_event = |ev: Event| {
        let rel = || {
            ev.src
                .strip_prefix(&copier.src)
                .unwrap_or(&ev.src)
                .to_path_buf()
        };
        match ev.outcome {
            Outcome::Deferred(age) => {
                let now = Instant::now();
                settle.touch(rel(), now.checked_sub(age).unwrap_or(now));
            }
            // Still being written: it will settle later.
            Outcome::Busy(_) => settle.touch(rel(), Instant::now()),
            _ => {
                reporter.event(&ev);
                counts.add(&ev.outcome);
            }
        }
    };
    let defer = Some(cfg.debounce);
    let records = copier.run(
        |jobs, events| {
            if batch.full {
                return scan::walk(copier, Path::new(""), defer, jobs, events);
            }
            let walks = outermost(batch.walks.clone());
            let mut records = Vec::new();
            for w in &walks {
                records.extend(scan::walk(copier, w, defer, jobs, events));
            }
            let files = batch
                .files
                .iter()
                .filter(|f| !walks.iter().any(|w| f.starts_with(w)));
            records.extend(file_jobs(copier, files, jobs, events));
            records
        },
        &mut on_event,
    );
    copier.finish_dirs(&records, &mut on_event);
    let changed = records
        .iter()
        .filter(|r| r.changed_entries())
        .map(|r| r.rel.clone())
        .collect();
    (counts, changed)
}

/// Groups settled paths by folder into jobs that copy just those entries. A folder among them
/// only has its own metadata refreshed.
fn file_jobs<'a>(
    copier: &Copier,
    paths: impl Iterator<Item = &'a PathBuf>,
    jobs: &Sender<DirJob>,
    events: &Sender<Event>,
) -> Vec<DirRecord> {
    let mut by_dir: BTreeMap<PathBuf, Vec<Vec<u8>>> = BTreeMap::new();
    let mut records = Vec::new();
    for p in paths {
        match std::fs::symlink_metadata(copier.src.join(p)) {
            Ok(m) if m.is_dir() => {
                by_dir.entry(p.clone()).or_default();
            }
            Ok(_) => {
                let parent = p.parent().unwrap_or(Path::new("")).to_path_buf();
                let name = p.file_name().map(|n| n.as_bytes().to_vec());
                by_dir.entry(parent).or_default().extend(name);
            }
            // Gone again before it settled: nothing to copy, nothing to delete.
            Err(_) => {}
        }
    }
    for (dir, names) in by_dir {
        let src = copier.src.join(&dir);
        let opened = std::fs::symlink_metadata(&src)
            .and_then(|m| Ok((m, scan::open_chain(&copier.dest, &dir)?)));
        let (src_meta, child) = match opened {
            Ok(v) => v,
            Err(e) => {
                let why = format!(
                    "cannot create folder {}: {}",
                    display(&copier.dest.path().join(&dir)),
                    reason(&e)
                );
                let _ = events.send(Event::new(src, Outcome::Failed(why)));
                continue;
            }
        };
        let (record, touched) = DirRecord::new(dir.clone(), Meta::from_std(&src_meta), &child);
        records.push(record);
        if names.is_empty() {
            continue;
        }
        let job = DirJob {
            rel: dir,
            dest: Arc::new(child.dir),
            fresh: child.created,
            only: Some(names.into_iter().collect()),
            touched: Some(touched),
            defer: None,
        };
        if jobs.send(job).is_err() {
            break;
        }
    }
    records
}

/// SRC and DST must stay the folders the run started with: an unmounted DST must not be filled
/// on its bare mount point, and a deleted SRC has nothing left to mirror.
fn still_there(copier: &Copier, src_id: (u64, u64)) -> Result<(), String> {
    copier.dest.still_there().map_err(|e| {
        format!(
            "destination {}: {}",
            display(copier.dest.path()),
            reason(&e)
        )
    })?;
    match std::fs::metadata(&copier.src) {
        Ok(m) if (m.dev(), m.ino()) == src_id => Ok(()),
        Ok(_) => Err(format!(
            "source {}: it is no longer the folder that this run started with",
            display(&copier.src)
        )),
        Err(e) => Err(format!("source {}: {}", display(&copier.src), reason(&e))),
    }
}
