//! The shared vocabulary of a pass: what became of each entry (`Outcome`), why a file is copied
//! (`Change`), the counts a summary shows, and what the engine hands its caller (`Note`).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Failure;

/// What became of one source entry.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Copied to this destination path.
    Copied(PathBuf),
    /// With `--dry-run` (and for `verify`): would have been copied to this path, and why.
    WouldCopy(PathBuf, Change),
    Unchanged,
    /// This many entries of the folder `Event::src` were unchanged: one message for a folder
    /// instead of one per file, since nothing is printed for them unless `--verbose`.
    UnchangedIn(u64),
    /// Its contents were current; the newest copy at this path got what changed of its mode,
    /// owner, extended attributes or times set again.
    Updated(PathBuf, Refreshed),
    /// With `--dry-run` (and for `verify`): the newest copy's metadata would be set again.
    WouldUpdate(PathBuf, Refreshed),
    /// Gone from SRC: its deletion is recorded in DST under this name (an empty file).
    Deleted(PathBuf),
    /// With `--dry-run`: its deletion would be recorded under this name.
    WouldDelete(PathBuf),
    /// Not a kind of entry that is copied (FIFO, socket, device); the word says which.
    Skipped(&'static str),
    /// Gone before or while it was read.
    Vanished,
    Failed(Failure),
    /// `--keep-free`: this old version (`Event::src`, in DST; `Event::bytes` its size) was
    /// pruned to make room, or with `--dry-run` would be.
    MadeRoom,
}

/// Why a file is (or would be) copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// No copy of it yet.
    New,
    /// Its newest copy has another size, time or type.
    Changed,
    /// Its newest copy has its size and time but other contents (found with `--checksum`).
    Contents,
}

/// What a metadata-only change set again on a file's newest copy, whose contents are current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Refreshed {
    pub mode: bool,
    pub owner: bool,
    pub xattrs: bool,
    /// Its modification time: the file was touched, or rewritten with the same bytes.
    pub time: bool,
}

impl Refreshed {
    /// What changed, in the words the `Updated:` line uses.
    pub(crate) fn words(self) -> Vec<&'static str> {
        [
            (self.mode, "permissions"),
            (self.owner, "owner"),
            (self.xattrs, "attributes"),
            (self.time, "time"),
        ]
        .into_iter()
        .filter_map(|(changed, word)| changed.then_some(word))
        .collect()
    }

    pub(crate) fn any(self) -> bool {
        self.mode || self.owner || self.xattrs || self.time
    }
}

/// One source entry and what became of it.
#[derive(Debug)]
pub(crate) struct Event {
    pub src: PathBuf,
    pub outcome: Outcome,
    /// Bytes of the entries the event covers, for the progress bar.
    pub bytes: u64,
}

impl Event {
    pub(crate) fn new(src: PathBuf, outcome: Outcome) -> Event {
        Event {
            src,
            outcome,
            bytes: 0,
        }
    }

    pub(crate) fn with_bytes(self, bytes: u64) -> Event {
        Event { bytes, ..self }
    }

    pub(crate) fn failed(src: PathBuf, failure: Failure) -> Event {
        Event::new(src, Outcome::Failed(failure))
    }
}

/// What the engine tells its caller about one entry.
#[derive(Debug)]
pub(crate) enum Note {
    /// Done: to be reported and counted.
    Done(Event),
    /// Changed this long ago, too recently to copy (found by a walk in `watch`): to be copied
    /// once it has settled. Neither printed nor counted.
    Unsettled(PathBuf, Duration),
    /// Kept changing while it was read, every attempt (the event holds the failure): a failure
    /// for `once`; `watch` tries again once the file settles.
    Busy(Event),
    /// A database that another program keeps locked, so that no consistent copy could be read
    /// within the time one attempt may take: `watch` tries again later (`true` the first time
    /// in a row, to say so once with `-v`).
    Locked(PathBuf, bool),
    /// Not copied because the run was asked to stop while it was being read: the next run
    /// copies it.
    Left(PathBuf),
    /// Something the run worked around, for a `warning:` line.
    Warning(crate::report::Warning),
}

impl Note {
    /// The event as a one-shot pass reports it: a file that kept changing has failed.
    pub(crate) fn into_event(self) -> Option<Event> {
        match self {
            Note::Done(ev) | Note::Busy(ev) => Some(ev),
            Note::Unsettled(..) | Note::Locked(..) | Note::Left(_) | Note::Warning(_) => None,
        }
    }
}

/// How many entries ended which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Copied, or with `--dry-run` to be copied.
    pub copied: u64,
    pub unchanged: u64,
    /// Skipped and vanished entries: neither copied nor failed.
    pub skipped: u64,
    pub failed: u64,
    /// Old versions pruned to make room: not files processed.
    pub made_room: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, outcome: &Outcome) {
        match outcome {
            // A metadata change carried into DST counts with the copies.
            Outcome::Copied(_)
            | Outcome::WouldCopy(..)
            | Outcome::Updated(..)
            | Outcome::WouldUpdate(..) => self.copied += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::UnchangedIn(n) => self.unchanged += n,
            Outcome::Skipped(_) | Outcome::Vanished => self.skipped += 1,
            Outcome::Failed(_) => self.failed += 1,
            // Not a file processed: a record that one is gone.
            Outcome::Deleted(_) | Outcome::WouldDelete(_) => {}
            Outcome::MadeRoom => self.made_room += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: Counts) {
        self.copied += other.copied;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.made_room += other.made_room;
    }

    pub(crate) fn total(&self) -> u64 {
        self.copied + self.unchanged + self.skipped + self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_to_the_total() {
        let mut c = Counts::default();
        for o in [
            Outcome::Copied(PathBuf::from("/d/a")),
            Outcome::UnchangedIn(3),
            Outcome::Skipped("fifo"),
            Outcome::Vanished,
            Outcome::Failed(Failure::NameTooLong),
        ] {
            c.add(&o);
        }
        assert_eq!((c.copied, c.unchanged, c.skipped, c.failed), (1, 3, 2, 1));
        assert_eq!(c.total(), 7);
        let busy = Note::Busy(Event::failed(
            PathBuf::from("/s/a"),
            Failure::KeptChanging { attempts: 4 },
        ));
        assert!(matches!(
            busy.into_event().map(|e| e.outcome),
            Some(Outcome::Failed(_))
        ));
    }
}
