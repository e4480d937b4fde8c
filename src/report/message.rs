//! Everything the program says, as data. Callers build a `Message`; the text and JSON printers
//! word it, each with an exhaustive match, so that no message can skip a format.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::dest::{Capabilities, Loss, Unavailable};
use crate::error::Error;
use crate::outcome::{Change, Counts, Event};

/// One thing to say.
pub(crate) enum Message<'a> {
    /// What became of one entry.
    Entry(&'a Event),
    /// `verify`: a file whose newest copy is not its current content.
    Finding { src: &'a Path, change: Change },
    /// `versions`: the history of one file, oldest first.
    History {
        file: &'a Path,
        versions: &'a [Listed<'a>],
    },
    /// `status`: one pair.
    Status(&'a PairStatus),
    /// `diff`: one file that differs between the two times.
    Difference(&'a Difference),
    /// The end of `diff`.
    DiffSummary(&'a Tally),
    /// `diff --content`: a unified diff of one file's text (empty where it did not change).
    Patch { path: &'a Path, text: &'a str },
    /// `find`: no file in DST matches the pattern.
    NothingFound { pattern: &'a str },
    /// `mount`: DST is mounted, read-only.
    Mounted { dst: &'a Path, mountpoint: &'a Path },
    /// `restore`: one file or folder written back.
    Restored { from: &'a Path, to: &'a Path },
    /// `prune`: one version deleted (or, in a dry run, to be deleted).
    Pruned(&'a Path),
    /// In `watch --verbose`: what one event led to.
    Decision {
        path: &'a Path,
        event: &'a str,
        decision: &'a str,
    },
    /// The end of `once`, and of `watch`.
    Summary(&'a Counts),
    /// The end of `verify`.
    VerifySummary {
        counts: &'a Counts,
        findings: &'a Findings,
    },
    /// The end of `restore`: as of when, and how many were restored, left out and failed.
    RestoreSummary {
        at: &'a str,
        restored: u64,
        left_out: u64,
        failed: u64,
    },
    /// The end of a pruning run.
    PruneSummary {
        files: u64,
        kept: u64,
        pruned: u64,
        failed: u64,
    },
    /// After each batch of `watch`: what the batch did, and the totals since start; after the
    /// first pass, the files it found still being written.
    Batch {
        at: DateTime<Local>,
        batch: &'a Counts,
        totals: &'a Counts,
        settling: usize,
    },
    /// While `watch` waits for its destination: how many changes wait.
    Waiting {
        at: DateTime<Local>,
        remembered: usize,
        totals: &'a Counts,
    },
    /// `watch` stopped with changes not copied yet; the next run's first pass finds them.
    Left { changes: usize },
    /// DST was missing and is created.
    Created(&'a Path),
    /// A pair of the config file starts.
    Pair {
        name: &'a str,
        src: &'a Path,
        dst: &'a Path,
    },
    /// `watch` watches SRC.
    Watching { src: &'a Path, method: Method },
    /// What the run found or does, said with `--verbose` only.
    Detail(Detail<'a>),
    /// What `service` did.
    Service(Service<'a>),
    /// The destination's state changed: said even with `--quiet`, since a backup that stopped
    /// writing must say so.
    Destination(Notice<'a>),
    /// `du`: the bytes a folder of DST holds (`None`: all of them).
    Space {
        folder: Option<&'a Path>,
        space: &'a Space,
    },
    /// A problem the run works around.
    Warning(&'a Warning),
    /// A problem that stops the command.
    Error(&'a Error),
}

/// How `watch` finds changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Fanotify,
    /// inotify, and polling for the folders over the watch limit.
    Inotify {
        polled: usize,
    },
    Polling,
}

/// Said with `--verbose` only.
pub(crate) enum Detail<'a> {
    /// What the destination was found to keep.
    Capabilities {
        dst: &'a Path,
        caps: &'a Capabilities,
    },
    /// How the watch covers SRC.
    Plan(Plan),
    /// fanotify cannot be had: inotify it is.
    NoFanotify(&'a io::Error),
    /// A SQLite database another program keeps locked: tried again every `retry`.
    Locked { src: &'a Path, retry: Duration },
}

/// How the watch covers the folders of SRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// One mark on SRC's filesystem.
    Fanotify,
    Polled {
        folders: usize,
    },
    Inotify {
        watched: usize,
        polled: usize,
    },
}

/// What `service` did.
pub(crate) enum Service<'a> {
    Wrote(&'a Path),
    Removed(&'a Path),
    NotInstalled(&'a Path),
    /// systemd does not run here: the unit, to install by hand.
    NotEnabled {
        unit: &'a str,
        name: &'a str,
    },
    Enabled {
        name: &'a str,
    },
}

/// The destination's state, while `watch` runs or when `once` ends.
pub(crate) enum Notice<'a> {
    /// Another run holds its lock.
    InUse {
        dst: &'a Path,
        why: &'a Unavailable,
    },
    /// A server or bucket that cannot be reached.
    Unreachable {
        dst: &'a Path,
        why: &'a Unavailable,
    },
    /// Unmounted, unplugged or replaced.
    Gone {
        dst: &'a Path,
        why: &'a Unavailable,
    },
    /// Out of space: how many files were not copied yet.
    Full {
        dst: &'a Path,
        not_copied: u64,
    },
    Back {
        dst: &'a Path,
    },
    HasSpace {
        dst: &'a Path,
    },
}

/// A problem the run works around, said as `warning: …`. Owned, since the engine's workers
/// hand them over.
#[derive(Debug)]
pub(crate) enum Warning {
    /// Copies into DST (of this filesystem) lose something.
    Loses {
        dst: PathBuf,
        kind: String,
        loss: Loss,
    },
    /// The process's priority could not be lowered.
    NoLowPriority(io::Error),
    /// An inotify limit (its name, and value when readable) was reached: changes are found by
    /// polling every `every`.
    InotifyLimit {
        name: &'static str,
        now: Option<u64>,
        every: Duration,
    },
    /// Folders over the watch limit are polled, a round every `every`, at most `budget` of a
    /// core.
    Polled {
        limit: Option<u64>,
        watched: usize,
        polled: usize,
        every: Duration,
        budget: f64,
    },
    /// `--poll` over this tree would cost more than `budget` of a core: polled every `every`.
    Slowed {
        folders: usize,
        asked: Duration,
        every: Duration,
        budget: f64,
    },
    /// SQLite cannot read the file as a database: copied as a file.
    NotADatabase { src: PathBuf, why: String },
    /// A database locked for `secs` is not copied while it stays so.
    LockedNotCopied {
        src: PathBuf,
        secs: u64,
        mid_write: bool,
        retry: Duration,
    },
    /// A database locked for `secs` was copied as the file on disk.
    LockedCopiedAsFile { src: PathBuf, secs: u64 },
    /// A clone of the copy before was refused: copied whole (said once per run).
    NoClone { src: PathBuf, why: io::Error },
    /// Files larger than the space DST had left were not copied (the others were): how many,
    /// the largest's size, and the space free at the end.
    DidNotFit {
        dst: PathBuf,
        files: u64,
        largest: u64,
        free: Option<u64>,
    },
    /// DST could not be listed again: the last listing stands.
    NotListed { dst: PathBuf, why: io::Error },
    /// A notification could not be sent (the target and why; never a URL's secret part).
    NotNotified(String),
    /// The metrics file could not be written.
    NoMetrics { path: PathBuf, why: io::Error },
}

/// What `verify` found, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Findings {
    pub missing: u64,
    pub stale: u64,
    pub differs: u64,
}

/// One pair, as `backup status` shows it.
pub(crate) struct PairStatus {
    pub name: Option<String>,
    pub src: PathBuf,
    pub dst: PathBuf,
    /// What its running `watch` said last, if one runs.
    pub running: Option<crate::state::Snapshot>,
    pub newest_copy_age: Option<Duration>,
    pub failing: bool,
    pub stale: bool,
}

/// One version of a file, as `versions` lists it.
pub(crate) struct Listed<'a> {
    pub path: PathBuf,
    pub captured: String,
    pub size: u64,
    pub name: &'a Path,
    /// The record of a deletion, not a copy.
    pub deleted: bool,
    /// For the record of a deletion of a folder the file is in: that folder, relative to DST.
    pub folder: Option<&'a Path>,
}

/// `diff`: how a file differs between two times, by its path under the folder compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Difference {
    Added {
        path: PathBuf,
        size: u64,
    },
    Changed {
        path: PathBuf,
        before: u64,
        size: u64,
    },
    Deleted {
        path: PathBuf,
        size: u64,
    },
    /// Gone from `from`, there at `path` with the same bytes.
    Moved {
        from: PathBuf,
        path: PathBuf,
        size: u64,
    },
}

impl Difference {
    /// Where the file is at the later time (where it was, for a deletion).
    pub(crate) fn path(&self) -> &Path {
        match self {
            Difference::Added { path, .. }
            | Difference::Changed { path, .. }
            | Difference::Deleted { path, .. }
            | Difference::Moved { path, .. } => path,
        }
    }
}

/// `diff`'s totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub added: u64,
    pub changed: u64,
    pub deleted: u64,
    pub moved: u64,
    /// The size of the tree at the later time less that at the earlier one.
    pub grew: i128,
}

impl Tally {
    pub(crate) fn count(&mut self, c: &Difference) {
        match c {
            Difference::Added { size, .. } => {
                self.added += 1;
                self.grew += i128::from(*size);
            }
            Difference::Changed { before, size, .. } => {
                self.changed += 1;
                self.grew += i128::from(*size) - i128::from(*before);
            }
            Difference::Deleted { size, .. } => {
                self.deleted += 1;
                self.grew -= i128::from(*size);
            }
            Difference::Moved { .. } => self.moved += 1,
        }
    }
}

/// The bytes a folder of DST holds, as `du` counts them: each inode once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Space {
    /// In each file's newest copy.
    pub newest: u64,
    /// In older versions: what pruning may give back.
    pub older: u64,
    /// How many records of deletions (empty files).
    pub records: u64,
    /// Of the bytes above, those another copy holds too (blocks shared with a clone), and the
    /// size of every further name of a file counted once (a hard link).
    pub shared: u64,
}

impl Space {
    pub(crate) fn bytes(&self) -> u64 {
        self.newest + self.older
    }

    pub(crate) fn add(&mut self, other: &Space) {
        self.newest += other.newest;
        self.older += other.older;
        self.records += other.records;
        self.shared += other.shared;
    }
}
