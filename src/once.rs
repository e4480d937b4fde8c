//! `backup once`: one pass, the summary, pruning if asked, and the exit status.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archive::prune;
use crate::engine::{Engine, Scope};
use crate::error::{About, Error, Failure, Status, Why};
use crate::history::Policy;
use crate::outcome::{Counts, Note, Outcome};
use crate::report::{Message, Reporter, Warning};

pub(crate) fn run(engine: &Engine, policy: &Policy, reporter: &mut Reporter) -> Status {
    let mut tally = Tally::default();
    let src = &engine.tree.src;
    with_progress(engine, reporter, |reporter| {
        engine.pass(&mut |note: Note| tally.take(note, reporter, src, true));
    });
    // The copies in flight when DST filled up have given back the space they held: the files
    // left then that fit in what is free now still land.
    if !tally.owed.is_empty() && !engine.stopped() {
        let scope = Scope {
            files: std::mem::take(&mut tally.owed),
            ..Scope::default()
        };
        engine.run(&scope, None, &mut |note: Note| {
            tally.take(note, reporter, src, false);
        });
    }
    let Tally {
        counts,
        not_copied,
        unfit,
        largest,
        ..
    } = tally;
    let mut status = Status::failed_if(counts.failed > 0);
    let dst = engine.dest.path().to_path_buf();
    if unfit > 0 {
        reporter.warning(&Warning::DidNotFit {
            dst: dst.clone(),
            files: unfit,
            largest,
            free: engine.dest.free_space(),
        });
    }
    if engine.was_full() || not_copied > 0 {
        reporter.error(&Error::run(Why::Full {
            dst: dst.clone(),
            not_copied,
        }));
    }
    if let Err(e) = engine.dest.still_there() {
        reporter.error(&Error::new(About::Destination(dst), Why::Unavailable(e)));
        status = Status::Failure;
    }
    reporter.say(&Message::Summary(&counts));
    if engine.stopped() {
        return Status::Interrupted;
    }
    if prune::after_pass(engine, policy, None, reporter) {
        status = Status::Failure;
    }
    status
}

/// What the pass did, as it is said.
#[derive(Default)]
struct Tally {
    counts: Counts,
    /// Files left when DST filled up in the first pass (relative to SRC): tried once more.
    owed: Vec<PathBuf>,
    not_copied: u64,
    /// Files larger than the space left, and the largest's size.
    unfit: u64,
    largest: u64,
}

impl Tally {
    /// Says and counts one note; in the `first` pass, a file left by a full destination is owed
    /// instead, to be tried once more.
    fn take(&mut self, note: Note, reporter: &mut Reporter, src: &Path, first: bool) {
        if let Note::Warning(w) = &note {
            reporter.warning(w);
        }
        let Some(ev) = note.into_event() else {
            return;
        };
        match ev.outcome {
            Outcome::Failed(Failure::DestinationFull) if first => {
                let rel = ev.src.strip_prefix(src).unwrap_or(&ev.src);
                self.owed.push(rel.to_path_buf());
                return;
            }
            // Tried once more after DST filled up, a file that does not fit is one more not
            // copied for the one line that says DST is full, not a line of its own.
            Outcome::Failed(Failure::DestinationFull | Failure::DoesNotFit { .. }) if !first => {
                self.not_copied += 1;
                self.counts.failed += 1;
                return;
            }
            Outcome::Failed(Failure::DestinationFull) => self.not_copied += 1,
            Outcome::Failed(Failure::DoesNotFit { size, .. }) => {
                self.unfit += 1;
                self.largest = self.largest.max(size);
            }
            _ => {}
        }
        reporter.event(&ev);
        self.counts.add(&ev.outcome);
    }
}

/// Runs a first pass with the progress bar going (it is hidden unless stderr is a terminal),
/// while another thread counts the tree to give the bar its totals.
pub(crate) fn with_progress<R>(
    engine: &Engine,
    reporter: &mut Reporter,
    pass: impl FnOnce(&mut Reporter) -> R,
) -> R {
    reporter.progress_start();
    let progress = reporter.progress_handle();
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if progress.visible() {
            s.spawn(|| {
                if let Some((files, bytes)) = engine.tree.count(&done) {
                    progress.total(files, bytes);
                }
            });
        }
        let result = pass(reporter);
        done.store(true, Ordering::Relaxed);
        result
    });
    reporter.progress_end();
    result
}
