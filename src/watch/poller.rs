//! Polling for the folders that do not fit under the OS limit on inotify watches: the folders
//! that got a watch keep it, and only the rest are looked at, one folder at a time, spread over
//! the interval, at a pace that keeps polling to a small share of one core (`BUDGET`): the
//! interval follows from what one round of looking costs, measured in this thread's CPU time.
//! What differs from the last look is sent as events, as inotify would have sent them. When
//! watches are freed (folders deleted), polled folders move back to watching, a few per round.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use notify::event::{CreateKind, DataChange, EventKind, ModifyKind, RemoveKind};

/// The share of one core that polling may take.
pub(crate) const BUDGET: f64 = 0.02;
/// Never look more often than this, however cheap a round is.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// What is known of an entry since the last look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    dir: bool,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Seen {
    fn of(m: &std::fs::Metadata) -> Seen {
        Seen {
            dir: m.is_dir(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        }
    }
}

/// What changed in one folder between two looks, as the events inotify would have sent: pure.
pub(crate) fn diff(
    dir: &Path,
    before: &HashMap<OsString, Seen>,
    after: &HashMap<OsString, Seen>,
) -> Vec<notify::Event> {
    let mut out = Vec::new();
    for (name, now) in after {
        let kind = match before.get(name) {
            None if now.dir => EventKind::Create(CreateKind::Folder),
            None => EventKind::Create(CreateKind::File),
            Some(was) if was.ino != now.ino || was.dir != now.dir => {
                EventKind::Create(if now.dir {
                    CreateKind::Folder
                } else {
                    CreateKind::File
                })
            }
            Some(was) if was == now => continue,
            // A folder whose own entries changed is looked at on its own, if it is polled.
            Some(_) if now.dir => continue,
            Some(_) => EventKind::Modify(ModifyKind::Data(DataChange::Any)),
        };
        out.push(notify::Event::new(kind).add_path(dir.join(name)));
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push(notify::Event::new(EventKind::Remove(RemoveKind::Any)).add_path(dir.join(name)));
    }
    out
}

/// The period of a round that keeps polling within `BUDGET` of a core, given what a round
/// cost.
pub(crate) fn interval_for(round_cpu: Duration, floor: Duration) -> Duration {
    floor.max(round_cpu.div_f64(BUDGET))
}

fn look(dir: &Path) -> Option<HashMap<OsString, Seen>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut out = HashMap::new();
    for e in entries.flatten() {
        if let Ok(m) = e.path().symlink_metadata() {
            out.insert(e.file_name(), Seen::of(&m));
        }
    }
    Some(out)
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec as u32)
}

/// A folder being polled: what it held at the last look, and when it joined (entries changed
/// since then are reported at the first look, since they may have changed after the walk that
/// copied the folder).
struct Polled {
    seen: Option<HashMap<OsString, Seen>>,
    since: std::time::SystemTime,
}

#[derive(Default)]
struct Set {
    folders: HashMap<PathBuf, Polled>,
    order: Vec<PathBuf>,
    /// When a folder was last added: a round starts once the set has stopped growing (the
    /// folders of a tree are added one by one), so that the first round, which sets the pace
    /// and the delay announced, covers them all.
    added: Option<Instant>,
}

/// Folders are looked at in runs of about this long between pauses.
const RUN: Duration = Duration::from_millis(50);

/// How long the set must have stopped growing before a round starts.
const SETTLED: Duration = Duration::from_millis(200);

/// Where the poller reports, and how it tries to give a folder back to inotify.
pub(crate) trait Sink: Send + Sync + 'static {
    fn event(&self, event: notify::Event);
    /// The first round is done: `folders` are polled, every `every`.
    fn pace(&self, folders: usize, every: Duration);
    /// Tries to watch `dir` with inotify; false when the limit still stands in the way.
    fn watch(&self, dir: &Path) -> bool;
}

/// The polling thread and the folders it looks at; dropping it stops the thread.
pub(crate) struct Poller {
    set: Arc<Mutex<Set>>,
    stop: Arc<AtomicBool>,
}

impl Poller {
    /// Starts the thread; a round lasts at least `floor`.
    pub(crate) fn start(sink: impl Sink, floor: Duration) -> Poller {
        let set = Arc::new(Mutex::new(Set::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&set), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("poll".into())
            .spawn(move || run(&s, &st, &sink, floor))
            .ok();
        Poller { set, stop }
    }

    /// Polls `dir` from now on.
    pub(crate) fn add(&self, dir: PathBuf) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        if set.folders.contains_key(&dir) {
            return;
        }
        set.order.push(dir.clone());
        set.added = Some(Instant::now());
        set.folders.insert(
            dir,
            Polled {
                seen: None,
                // Anything changed after this was missed by the walk that follows the adding.
                since: std::time::SystemTime::now() - Duration::from_millis(10),
            },
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .len()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(set: &Mutex<Set>, stop: &AtomicBool, sink: &impl Sink, floor: Duration) {
    let lock = || set.lock().unwrap_or_else(PoisonError::into_inner);
    let mut every = floor;
    let mut paced = false;
    let mut said = false;
    while !stop.load(Ordering::Relaxed) {
        while lock().added.is_some_and(|t| t.elapsed() < SETTLED) {
            std::thread::sleep(SETTLED / 4);
        }
        let started = Instant::now();
        let cpu = thread_cpu();
        let order = lock().order.clone();
        let n = order.len().max(1);
        for (i, dir) in order.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            look_at(set, dir, sink);
            // Spread over the round: the i-th folder is looked at i/n of the way through it,
            // in short runs (a pause per folder would find the caches cold at every look, and
            // cost more than the looks themselves).
            let due = every.mul_f64((i + 1) as f64 / n as f64);
            if paced && let Some(wait) = due.checked_sub(started.elapsed() + RUN) {
                std::thread::sleep(wait + RUN);
            }
        }
        let was = every;
        every = interval_for(thread_cpu().saturating_sub(cpu), floor);
        // Said after the first paced round: the first one, back to back, costs less than
        // the rounds after it.
        if paced && !said {
            said = true;
            // Rounds vary by a tenth or so; the delay said is one that holds.
            sink.pace(lock().order.len(), every.max(was).mul_f64(1.25));
        }
        paced = true;
        give_back(set, sink);
        if let Some(rest) = every.checked_sub(started.elapsed()) {
            let end = Instant::now() + rest;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                std::thread::sleep(rest.min(Duration::from_millis(200)));
            }
        }
    }
}

fn look_at(set: &Mutex<Set>, dir: &Path, sink: &impl Sink) {
    let now = look(dir);
    let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(polled) = set.folders.get_mut(dir) else {
        return;
    };
    let Some(now) = now else {
        // Gone: its parent reports the removal; nothing left to look at.
        set.folders.remove(dir);
        set.order.retain(|d| d != dir);
        return;
    };
    let events = match &polled.seen {
        Some(before) => diff(dir, before, &now),
        None => {
            let since = polled.since;
            now.iter()
                .filter(|(_, s)| {
                    let t = std::time::UNIX_EPOCH
                        + Duration::new(s.ctime.0.max(0) as u64, s.ctime.1 as u32);
                    t >= since
                })
                .map(|(name, s)| {
                    let kind = if s.dir {
                        EventKind::Create(CreateKind::Folder)
                    } else {
                        EventKind::Modify(ModifyKind::Data(DataChange::Any))
                    };
                    notify::Event::new(kind).add_path(dir.join(name))
                })
                .collect()
        }
    };
    polled.seen = Some(now);
    drop(set);
    for e in events {
        sink.event(e);
    }
}

/// Moves polled folders back to inotify while the limit lets it: each one is looked at once
/// more after its watch is in place, so that nothing between the last look and the watch is
/// missed.
fn give_back(set: &Mutex<Set>, sink: &impl Sink) {
    loop {
        let first = set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .first()
            .cloned();
        let Some(dir) = first else { return };
        if !sink.watch(&dir) {
            return;
        }
        look_at(set, &dir, sink);
        let mut s = set.lock().unwrap_or_else(PoisonError::into_inner);
        s.folders.remove(&dir);
        s.order.retain(|d| d != &dir);
    }
}

/// The order in which folders get watches: the shallow and recently changed first, since those
/// are where changes happen; deep and old ones are the first to be polled. Pure.
pub(crate) fn priority(depth: usize, age: Duration) -> f64 {
    depth as f64 + (1.0 + age.as_secs_f64() / 3600.0).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(size: u64, mtime: i64, ino: u64, dir: bool) -> Seen {
        Seen {
            dir,
            size,
            mtime: (mtime, 0),
            ctime: (mtime, 0),
            ino,
        }
    }

    fn kinds(events: &[notify::Event]) -> Vec<(String, EventKind)> {
        let mut v: Vec<(String, EventKind)> = events
            .iter()
            .map(|e| (e.paths[0].display().to_string(), e.kind))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn differences_become_the_events_inotify_would_send() {
        let dir = Path::new("/s/d");
        let before = HashMap::from([
            ("same".into(), seen(1, 1, 1, false)),
            ("grown".into(), seen(1, 1, 2, false)),
            ("gone".into(), seen(1, 1, 3, false)),
            ("replaced".into(), seen(1, 1, 4, false)),
            ("sub".into(), seen(0, 1, 5, true)),
        ]);
        let after = HashMap::from([
            ("same".into(), seen(1, 1, 1, false)),
            ("grown".into(), seen(2, 2, 2, false)),
            ("replaced".into(), seen(1, 1, 9, false)),
            ("sub".into(), seen(0, 2, 5, true)),
            ("new".into(), seen(1, 1, 6, false)),
            ("newdir".into(), seen(0, 1, 7, true)),
        ]);
        let got = kinds(&diff(dir, &before, &after));
        let want = vec![
            ("/s/d/gone".to_string(), EventKind::Remove(RemoveKind::Any)),
            (
                "/s/d/grown".to_string(),
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            ),
            ("/s/d/new".to_string(), EventKind::Create(CreateKind::File)),
            (
                "/s/d/newdir".to_string(),
                EventKind::Create(CreateKind::Folder),
            ),
            (
                "/s/d/replaced".to_string(),
                EventKind::Create(CreateKind::File),
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn polling_stays_within_its_share_of_a_core() {
        assert_eq!(
            interval_for(Duration::from_millis(1), MIN_INTERVAL),
            MIN_INTERVAL
        );
        let asked = Duration::from_secs(10);
        assert_eq!(interval_for(Duration::from_millis(1), asked), asked);
        let slow = interval_for(Duration::from_secs(1), MIN_INTERVAL);
        assert_eq!(slow, Duration::from_secs(50), "1 s of CPU a round at 2 %");
    }

    #[test]
    fn shallow_and_recent_folders_are_watched_first() {
        let hour = Duration::from_secs(3600);
        let year = hour * 24 * 365;
        assert!(priority(1, hour) < priority(3, hour));
        assert!(priority(2, hour) < priority(2, year));
        assert!(
            priority(4, Duration::ZERO) < priority(1, year),
            "recent and deep wins"
        );
    }
}
