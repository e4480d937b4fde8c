//! `backup once`: one pass, the summary, pruning if asked, and the exit status.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::archive::prune;
use crate::engine::Engine;
use crate::error::{About, Error, Failure, Status, Why};
use crate::history::Policy;
use crate::outcome::{Counts, Note, Outcome};
use crate::report::{Message, Reporter, Warning};

pub(crate) fn run(engine: &Engine, policy: &Policy, reporter: &mut Reporter) -> Status {
    let mut counts = Counts::default();
    let mut not_copied = 0u64;
    let (mut unfit, mut largest) = (0u64, 0u64);
    with_progress(engine, reporter, |reporter| {
        engine.pass(&mut |note: Note| {
            if let Note::Warning(w) = &note {
                reporter.warning(w);
            }
            if let Some(ev) = note.into_event() {
                match ev.outcome {
                    Outcome::Failed(Failure::DestinationFull) => not_copied += 1,
                    Outcome::Failed(Failure::DoesNotFit { size, .. }) => {
                        unfit += 1;
                        largest = largest.max(size);
                    }
                    _ => {}
                }
                reporter.event(&ev);
                counts.add(&ev.outcome);
            }
        })
    });
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
    if engine.was_full() {
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
