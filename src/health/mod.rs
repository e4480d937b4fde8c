//! Knowing it works: how a running `watch` judges its own health from what it knows (is DST
//! there, which files keep failing, how old the oldest change not yet safe in DST is), and when
//! that is worth telling someone: once per change of condition, on the way into trouble and on
//! the way out, never for a success and never twice for the same condition. The decisions are
//! pure; `notify` carries them to the desktop, a command or a URL, and `metrics` writes what a
//! monitoring system scrapes.

pub(crate) mod metrics;
pub(crate) mod notify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use self::metrics::{Board, Boards};
use self::notify::{HEARTBEAT, Kind, Notice, Notifier, Speaker, Targets};
use crate::report::Warning;
use crate::report::alert::{About, Labels, words};

/// How a pair is doing, worst last: when several hold, the worst is the one said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Condition {
    /// Every change is copied, or on its way; or the destination is away, but not for long.
    #[default]
    Ok,
    /// The oldest change not yet safe in DST is older than the limit.
    Stale,
    /// Some files could not be copied, and have not been since.
    Failing,
    /// DST has no room for what is owed.
    Full,
    /// DST has been away for longer than the grace period.
    Lost,
}

impl Condition {
    /// The word for it in the state file, the metrics and a notification's environment.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Condition::Ok => "ok",
            Condition::Stale => "stale",
            Condition::Failing => "failing",
            Condition::Full => "full",
            Condition::Lost => "lost",
        }
    }

    pub(crate) const ALL: [Condition; 5] = [
        Condition::Ok,
        Condition::Stale,
        Condition::Failing,
        Condition::Full,
        Condition::Lost,
    ];
}

/// Why DST takes no copies now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Absent {
    /// Unmounted, unreachable or another run's, for so long.
    Gone(Duration),
    /// Out of space.
    Full,
}

/// What the loop knows about itself at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    pub away: Option<Absent>,
    /// Files that failed and have not been copied since.
    pub failing: usize,
    /// The age of the oldest change not yet safe in DST; zero when caught up.
    pub lag: Duration,
}

/// When a fact becomes a condition worth saying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rules {
    /// How long DST may be away before it is lost: a removable drive is meant to be unplugged
    /// now and then.
    pub lost_after: Duration,
    /// How far behind the mirror may fall before it is stale.
    pub stale_after: Duration,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            lost_after: Duration::from_secs(3600),
            stale_after: Duration::from_secs(3600),
        }
    }
}

/// The condition the facts amount to. While DST is away within its grace, changes pile up by
/// design: that is not stale.
pub(crate) fn judge(facts: &Facts, rules: &Rules) -> Condition {
    match facts.away {
        Some(Absent::Gone(away)) if away >= rules.lost_after => Condition::Lost,
        Some(Absent::Full) => Condition::Full,
        _ if facts.failing > 0 => Condition::Failing,
        Some(Absent::Gone(_)) => Condition::Ok,
        None if facts.lag > rules.stale_after => Condition::Stale,
        None => Condition::Ok,
    }
}

/// A change of condition worth telling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alert {
    /// Into trouble (or from one trouble into another).
    Trouble(Condition),
    /// Out of it: which trouble, and for how long it lasted.
    Recovered { from: Condition, lasted: Duration },
}

impl Alert {
    /// The condition the pair is in after it.
    pub(crate) fn condition(self) -> Condition {
        match self {
            Alert::Trouble(c) => c,
            Alert::Recovered { .. } => Condition::Ok,
        }
    }

    /// The word for it in a notification's environment and in a URL's message.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Alert::Trouble(c) => c.word(),
            Alert::Recovered { .. } => "recovered",
        }
    }
}

/// What was said last, so that each change of condition is said once.
#[derive(Debug, Default)]
pub(crate) struct Alerts {
    said: Condition,
    /// When the trouble said last began.
    since: Option<Instant>,
}

impl Alerts {
    /// The alert the condition `now` calls for at `at`, if it differs from what was said.
    pub(crate) fn update(&mut self, now: Condition, at: Instant) -> Option<Alert> {
        if now == self.said {
            return None;
        }
        let was = std::mem::replace(&mut self.said, now);
        if now == Condition::Ok {
            let lasted = self.since.take().map_or(Duration::ZERO, |s| at - s);
            return Some(Alert::Recovered { from: was, lasted });
        }
        self.since.get_or_insert(at);
        Some(Alert::Trouble(now))
    }
}

/// What the state file and the metrics say about a pair, read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Reading {
    pub condition: Condition,
    pub lag: Duration,
    pub pending_files: usize,
    pub pending_bytes: u64,
    pub last_success: Option<SystemTime>,
    pub reachable: bool,
    pub free: Option<u64>,
    /// Counted at the last full pass, where metrics are asked for.
    pub versions: Option<u64>,
    pub failures_total: u64,
    pub copied_total: u64,
}

/// What a `watch` is asked to do about its health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub targets: Targets,
    pub rules: Rules,
    pub metrics_file: Option<PathBuf>,
}

/// A pair's health, watched: judges the facts, says each change of condition once, pings a
/// Healthchecks check while all is well, and keeps the metrics file up to date.
pub(crate) struct Watchdog {
    rules: Rules,
    alerts: Alerts,
    notifier: Option<Notifier>,
    heartbeat: bool,
    last_ping: Instant,
    board: Option<Arc<Board>>,
    speaker: Speaker,
    posted: Option<Reading>,
    /// The last failure to write the metrics file, said once until it changes.
    metrics_failed: Option<std::io::ErrorKind>,
}

impl Watchdog {
    pub(crate) fn new(settings: &Settings, speaker: Speaker, boards: &Boards) -> Watchdog {
        let notifier = Notifier::start(settings.targets.clone(), speaker.clone());
        let heartbeat = settings.targets.healthchecks.is_some();
        if heartbeat && let Some(n) = &notifier {
            let _ = n.send(Notice {
                kind: Kind::Start,
                state: "start",
                title: String::new(),
                body: String::new(),
                urgent: false,
            });
        }
        Watchdog {
            rules: settings.rules,
            alerts: Alerts::default(),
            notifier,
            heartbeat,
            last_ping: Instant::now(),
            board: settings.metrics_file.as_deref().map(|p| boards.board(p)),
            speaker,
            posted: None,
            metrics_failed: None,
        }
    }

    /// Whether versions are worth counting: the metrics file shows them.
    pub(crate) fn counts_versions(&self) -> bool {
        self.board.is_some()
    }

    /// Judges the facts; says a change of condition to every target, pings a Healthchecks check
    /// now and then while all is well, and writes the reading to the metrics file when it
    /// changed. The condition, and the warnings to print.
    pub(crate) fn observe(
        &mut self,
        facts: &Facts,
        mut reading: Reading,
        first_failure: Option<&str>,
    ) -> (Condition, Vec<Warning>) {
        let now = Instant::now();
        let condition = judge(facts, &self.rules);
        reading.condition = condition;
        let mut said = Vec::new();
        if let Some(n) = &self.notifier {
            let notice = match self.alerts.update(condition, now) {
                Some(alert) => {
                    let about = About {
                        pair: &self.speaker.pair,
                        dst: &self.speaker.dst,
                        failing: facts.failing,
                        first_failure,
                        lag: facts.lag,
                        stale_after: self.rules.stale_after,
                        pending: reading.pending_files,
                        away_for: match facts.away {
                            Some(Absent::Gone(d)) => Some(d),
                            _ => None,
                        },
                    };
                    let (title, body) = words(alert, &about);
                    Some(Notice {
                        kind: Kind::Alert,
                        state: alert.word(),
                        title,
                        body,
                        urgent: alert.condition() != Condition::Ok,
                    })
                }
                None if self.heartbeat
                    && condition == Condition::Ok
                    && now.duration_since(self.last_ping) >= HEARTBEAT =>
                {
                    Some(Notice {
                        kind: Kind::Heartbeat,
                        state: "ok",
                        title: String::new(),
                        body: String::new(),
                        urgent: false,
                    })
                }
                None => None,
            };
            if let Some(notice) = notice {
                self.last_ping = now;
                if let Err(why) = n.send(notice) {
                    said.push(Warning::NotNotified(why));
                }
            }
            said.extend(n.failures().into_iter().map(Warning::NotNotified));
        }
        if let Some(board) = &self.board
            && self.posted.as_ref() != Some(&reading)
        {
            let labels = Labels {
                pair: self.speaker.pair.clone(),
                src: self.speaker.src.clone(),
                dst: self.speaker.dst.clone(),
            };
            match board.post(labels, reading.clone()) {
                Ok(()) => self.metrics_failed = None,
                Err(e) if self.metrics_failed == Some(e.kind()) => {}
                Err(e) => {
                    self.metrics_failed = Some(e.kind());
                    said.push(Warning::NoMetrics {
                        path: board.path().to_path_buf(),
                        why: e,
                    });
                }
            }
            self.posted = Some(reading);
        }
        (condition, said)
    }

    /// At the end of the run: what is still queued goes out, for a few seconds at most.
    pub(crate) fn finish(&mut self) -> Vec<Warning> {
        self.notifier
            .take()
            .map(Notifier::finish)
            .unwrap_or_default()
            .into_iter()
            .map(Warning::NotNotified)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(away: Option<Absent>, failing: usize, lag: u64) -> Facts {
        Facts {
            away,
            failing,
            lag: Duration::from_secs(lag),
        }
    }

    #[test]
    fn the_worst_condition_is_the_one_said() {
        let r = Rules {
            lost_after: Duration::from_secs(60),
            stale_after: Duration::from_secs(600),
        };
        let gone = |s| Some(Absent::Gone(Duration::from_secs(s)));
        assert_eq!(judge(&facts(None, 0, 0), &r), Condition::Ok);
        assert_eq!(judge(&facts(None, 0, 601), &r), Condition::Stale);
        assert_eq!(judge(&facts(None, 2, 601), &r), Condition::Failing);
        assert_eq!(judge(&facts(gone(59), 0, 5000), &r), Condition::Ok);
        assert_eq!(judge(&facts(gone(59), 1, 0), &r), Condition::Failing);
        assert_eq!(judge(&facts(gone(60), 1, 0), &r), Condition::Lost);
        assert_eq!(judge(&facts(Some(Absent::Full), 1, 0), &r), Condition::Full);
    }

    #[test]
    fn each_change_is_said_once_and_success_never() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut a = Alerts::default();
        assert_eq!(
            a.update(Condition::Ok, s(0)),
            None,
            "a healthy start says nothing"
        );
        assert_eq!(
            a.update(Condition::Failing, s(10)),
            Some(Alert::Trouble(Condition::Failing))
        );
        for t in 11..100 {
            assert_eq!(a.update(Condition::Failing, s(t)), None, "not twice");
        }
        assert_eq!(
            a.update(Condition::Lost, s(100)),
            Some(Alert::Trouble(Condition::Lost))
        );
        assert_eq!(
            a.update(Condition::Ok, s(130)),
            Some(Alert::Recovered {
                from: Condition::Lost,
                lasted: Duration::from_secs(120)
            }),
            "the trouble lasted from its first alert"
        );
        assert_eq!(a.update(Condition::Ok, s(131)), None);
        assert_eq!(
            a.update(Condition::Stale, s(200)),
            Some(Alert::Trouble(Condition::Stale))
        );
        assert_eq!(
            a.update(Condition::Ok, s(205)),
            Some(Alert::Recovered {
                from: Condition::Stale,
                lasted: Duration::from_secs(5)
            })
        );
    }
}
