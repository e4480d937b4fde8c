//! While the destination cannot be written into (unmounted, unreachable, another run's, full):
//! the loop says so once, keeps watching SRC and remembering what changed, and runs a pass when
//! DST is back as the same filesystem and folder, or has space again.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{CHECK_EVERY, Loop};
use crate::dest::Unavailable;
use crate::error::{About, Error, Why};
use crate::report::{Message, Notice, Reporter};

/// While DST is away, a line saying how many changes wait is printed at most this often.
const WAITING_EVERY: Duration = Duration::from_secs(10);

/// Why the loop is not writing now; changes are remembered meanwhile.
#[derive(Debug)]
pub(super) enum Away {
    /// Unmounted, unplugged, replaced or locked: waiting for it to be the destination again.
    Gone(Unavailable),
    /// Out of space: waiting for the free space to grow past what it was; how many files were
    /// not copied.
    Full { free: Option<u64>, not_copied: u64 },
}

impl Away {
    /// Whether it would be said in the same words: a state is said once, not once a second.
    fn same(&self, other: &Away) -> bool {
        match (self, other) {
            (Away::Gone(a), Away::Gone(b)) => a == b,
            (Away::Full { not_copied: a, .. }, Away::Full { not_copied: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// Whether DST takes copies now, and what was said while it did not.
#[derive(Default)]
pub(super) struct Absence {
    /// Why DST takes no copies now; `None` while it does.
    pub(super) away: Option<Away>,
    /// When the last `waiting for destination` line was printed, and for how many changes.
    last_waiting: Option<(Instant, usize)>,
    /// Since when DST takes no copies.
    pub(super) since: Option<Instant>,
    /// Set with `--exit-on-lost-destination` when DST went away.
    pub(super) lost_for_good: bool,
}

impl Loop<'_> {
    /// The destination cannot be written into now: says so once, and waits; with
    /// `--exit-on-lost-destination`, says it as an error and ends the loop instead (a
    /// destination another run has is waited for even then).
    pub(super) fn lost(&mut self, away: Away, reporter: &mut Reporter) {
        let dest = &self.engine.dest;
        let dst = dest.path();
        dest.release();
        let away = match away {
            Away::Gone(why) if self.cfg.exit_on_lost && why != Unavailable::Locked => {
                let about = About::Destination(dst.to_path_buf());
                reporter.error(&Error::new(about, Why::Unavailable(why)));
                self.absence.lost_for_good = true;
                return;
            }
            away => away,
        };
        if !self
            .absence
            .away
            .as_ref()
            .is_some_and(|was| was.same(&away))
        {
            let notice = match &away {
                Away::Gone(why @ Unavailable::Locked) => Notice::InUse { dst, why },
                Away::Gone(why) if dest.over_network() => Notice::Unreachable { dst, why },
                Away::Gone(why) => Notice::Gone { dst, why },
                Away::Full { not_copied, .. } => Notice::Full {
                    dst,
                    not_copied: *not_copied,
                },
            };
            reporter.say(&Message::Destination(notice));
        }
        let state = match away {
            Away::Gone(_) => "waiting for destination",
            Away::Full { .. } => "destination full",
        };
        self.state.set(state);
        if self.absence.away.is_none() {
            self.absence.since = Some(Instant::now());
        }
        self.absence.away = Some(away);
        self.checkup(true, reporter);
    }

    /// While the destination is away: takes events (so that changes are remembered), says now
    /// and then how many wait, and checks once a second whether it is back (the same filesystem
    /// and folder, or with more free space than when it filled up).
    pub(super) fn wait(&mut self, reporter: &mut Reporter, wake: &Receiver<()>) {
        self.listen(Instant::now() + CHECK_EVERY, reporter, wake);
        let remembered = self.settle.len() + self.pending.walks.len();
        let last = self.absence.last_waiting.map(|(at, n)| (at.elapsed(), n));
        if remembered > 0 && last.is_none_or(|(since, n)| n != remembered && since >= WAITING_EVERY)
        {
            reporter.say(&Message::Waiting {
                at: chrono::Local::now(),
                remembered,
                totals: &self.totals,
            });
            self.absence.last_waiting = Some((Instant::now(), remembered));
        }
        let dest = &self.engine.dest;
        let back = match &self.absence.away {
            Some(Away::Full { free, .. }) => {
                let now = dest.free_space();
                now.is_none() || free.is_none_or(|f| now.is_some_and(|n| n > f))
            }
            // Back means usable: the same filesystem and folder, and its lock free.
            _ => match dest.reacquire() {
                Ok(()) => {
                    dest.release();
                    true
                }
                Err(why) => {
                    self.lost(Away::Gone(why), reporter);
                    false
                }
            },
        };
        if back {
            let dst = dest.path();
            reporter.say(&Message::Destination(match self.absence.away {
                Some(Away::Full { .. }) => Notice::HasSpace { dst },
                _ => Notice::Back { dst },
            }));
            self.absence.away = None;
            self.absence.since = None;
            self.absence.last_waiting = None;
            self.pending.full = true;
            self.state.set(self.idle);
            self.checkup(true, reporter);
        }
    }
}
