//! `backup verify`: a dry run whose would-be copies are the findings. It owns its verdict: every
//! file's newest copy holds, or the run fails.

use crate::engine::Engine;
use crate::error::Status;
use crate::once::with_progress;
use crate::outcome::{Change, Counts, Note, Outcome};
use crate::report::{Findings, Message, Reporter};

pub(crate) fn run(engine: &Engine, reporter: &mut Reporter) -> Status {
    let mut counts = Counts::default();
    let mut findings = Findings::default();
    with_progress(engine, reporter, |reporter| {
        engine.pass(&mut |note: Note| {
            if let Note::Warning(w) = &note {
                reporter.warning(w);
            }
            let Some(ev) = note.into_event() else {
                return;
            };
            counts.add(&ev.outcome);
            match &ev.outcome {
                // A check records nothing, deletions neither.
                Outcome::WouldDelete(_) => {}
                Outcome::WouldUpdate(..) => {
                    record(&mut findings, Change::Changed);
                    reporter.say(&Message::Finding {
                        src: &ev.src,
                        change: Change::Changed,
                    });
                }
                Outcome::WouldCopy(_, change) => {
                    record(&mut findings, *change);
                    reporter.say(&Message::Finding {
                        src: &ev.src,
                        change: *change,
                    });
                }
                _ => reporter.event(&ev),
            }
        })
    });
    reporter.say(&Message::VerifySummary {
        counts: &counts,
        findings: &findings,
    });
    if engine.stopped() {
        Status::Interrupted
    } else {
        Status::failed_if(!holds(&counts, &findings))
    }
}

fn record(findings: &mut Findings, change: Change) {
    match change {
        Change::New => findings.missing += 1,
        Change::Changed => findings.stale += 1,
        Change::Contents => findings.differs += 1,
    }
}

/// The verdict: nothing missing, stale, differing or unreadable.
fn holds(counts: &Counts, f: &Findings) -> bool {
    f.missing + f.stale + f.differs + counts.failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_finding_or_unreadable_file_fails_the_check() {
        let mut f = Findings::default();
        let mut c = Counts::default();
        assert!(holds(&c, &f));
        c.unchanged = 5;
        c.skipped = 1;
        assert!(holds(&c, &f), "skipped entries are not findings");
        record(&mut f, Change::Contents);
        assert_eq!(f.differs, 1);
        assert!(!holds(&c, &f));
        let f = Findings::default();
        c.failed = 1;
        assert!(!holds(&c, &f));
    }
}
