//! The loop's health, looked at after every batch and change of the destination's state, and
//! once a second besides (a lag grows while nothing happens): the facts go to the watchdog,
//! which says what changed; the reading goes to the state file and the metrics.

use std::time::{Duration, Instant};

use super::Loop;
use super::away::Away;
use crate::health::{Absent, Facts, Reading};
use crate::report::Reporter;

/// How often an idle loop looks at its health.
const EVERY: Duration = Duration::from_secs(1);

/// Pending files whose sizes are added up, at most: a burst of a million new files must not
/// cost a million `stat`s a second.
const SIZED: usize = 10_000;

impl Loop<'_> {
    /// Looks at the loop's health now (`force`), or if it has not for a second.
    pub(super) fn checkup(&mut self, force: bool, reporter: &mut Reporter) {
        let now = Instant::now();
        if !force
            && self
                .last_checkup
                .is_some_and(|t| now.duration_since(t) < EVERY)
        {
            return;
        }
        self.last_checkup = Some(now);
        let away = match &self.absence.away {
            None => None,
            Some(Away::Full { .. }) => Some(Absent::Full),
            Some(Away::Gone(_)) => Some(Absent::Gone(
                self.absence
                    .since
                    .map_or(Duration::ZERO, |t| now.duration_since(t)),
            )),
        };
        let lag = self
            .settle
            .oldest_owed()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let facts = Facts {
            away,
            failing: self.failing.len(),
            lag,
        };
        // Sized at most once a second: a burst forces a checkup after every batch.
        let pending_bytes = match self.sized {
            Some((at, bytes)) if now.duration_since(at) < EVERY => bytes,
            _ => {
                let src = &self.engine.tree.src;
                let bytes = self
                    .settle
                    .owed()
                    .take(SIZED)
                    .filter_map(|rel| std::fs::symlink_metadata(src.join(rel)).ok())
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| m.len())
                    .sum();
                self.sized = Some((now, bytes));
                bytes
            }
        };
        let reading = Reading {
            lag,
            pending_files: self.settle.owed().count(),
            pending_bytes,
            last_success: self.last_success,
            reachable: self.absence.away.is_none(),
            // Away, a folder's free space is the space of whatever is mounted there now.
            free: match self.absence.away {
                None | Some(Away::Full { .. }) => self.engine.dest.free_space(),
                Some(Away::Gone(_)) => None,
            },
            versions: self.versions,
            failures_total: self.state.snapshot.failures,
            copied_total: self.state.snapshot.copied,
            ..Reading::default()
        };
        let first = self.failing.values().next().map(String::as_str);
        let (condition, warnings) = self.watchdog.observe(&facts, reading.clone(), first);
        for w in &warnings {
            reporter.warning(w);
        }
        self.state.health(condition, &reading, self.failing.len());
    }
}
