//! Polling for the folders that do not fit under the OS limit on inotify watches: the folders
//! that got a watch keep it, and only the rest are looked at, one folder at a time, spread over
//! the interval, at a pace that keeps polling to a small share of one core (`BUDGET`): the
//! interval follows from what one round of looking costs, measured in this thread's CPU time.
//! What differs from the last look is sent as events, as inotify would have sent them. When
//! watches are freed (folders deleted), polled folders move back to watching, a few per round.

use std::collections::HashMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind};

/// The share of one core that polling may take.
pub(crate) const BUDGET: f64 = 0.02;
/// Never look more often than this, however cheap a round is.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// One folder as last looked at, packed: its names in one buffer, sorted, each with a digest
/// of what a change alters (a file's size, times and inode; a folder's inode). About 20 bytes an
/// entry, so that a million polled files cost tens of megabytes, not hundreds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Look {
    names: Vec<u8>,
    /// For each entry, sorted by name: where its name ends in `names`, its digest, and whether
    /// it is a folder.
    entries: Vec<(u32, u64, bool)>,
}

impl Look {
    /// Packs `(name, digest, is a folder)` entries.
    pub(crate) fn new(mut entries: Vec<(Vec<u8>, u64, bool)>) -> Look {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut look = Look::default();
        for (name, digest, dir) in entries {
            look.names.extend_from_slice(&name);
            look.entries.push((
                u32::try_from(look.names.len()).unwrap_or(u32::MAX),
                digest,
                dir,
            ));
        }
        look.names.shrink_to_fit();
        look.entries.shrink_to_fit();
        look
    }

    fn get(&self, i: usize) -> (&[u8], u64, bool) {
        let start = if i == 0 {
            0
        } else {
            self.entries[i - 1].0 as usize
        };
        let (end, digest, dir) = self.entries[i];
        (&self.names[start..end as usize], digest, dir)
    }
}

/// The digest of an entry: what changes when its contents, times or identity do.
fn digest(m: &std::fs::Metadata) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if m.is_dir() {
        // A folder's own times change with every entry in it; only its identity matters here.
        m.ino().hash(&mut h);
    } else {
        (
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
            .hash(&mut h);
    }
    h.finish()
}

/// The `info` of every event the poller makes: no close will follow one of its new files, as
/// inotify's would.
pub(crate) const POLLED: &str = "polled";

/// What changed in one folder between two looks, as the events inotify would have sent: pure.
pub(crate) fn diff(dir: &Path, before: &Look, after: &Look) -> Vec<notify::Event> {
    use std::cmp::Ordering as O;
    let event = |kind, name: &[u8]| {
        notify::Event::new(kind)
            .add_path(dir.join(std::ffi::OsStr::from_bytes(name)))
            .set_info(POLLED)
    };
    let created = |is_dir| {
        EventKind::Create(if is_dir {
            CreateKind::Folder
        } else {
            CreateKind::File
        })
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < before.entries.len() || j < after.entries.len() {
        let order = match (i < before.entries.len(), j < after.entries.len()) {
            (true, true) => before.get(i).0.cmp(after.get(j).0),
            (true, false) => O::Less,
            _ => O::Greater,
        };
        match order {
            O::Less => {
                out.push(event(EventKind::Remove(RemoveKind::Any), before.get(i).0));
                i += 1;
            }
            O::Greater => {
                let (name, _, is_dir) = after.get(j);
                out.push(event(created(is_dir), name));
                j += 1;
            }
            O::Equal => {
                let ((_, was, was_dir), (name, now, is_dir)) = (before.get(i), after.get(j));
                if was != now || was_dir != is_dir {
                    // A folder that is another folder now is walked; a file is copied. A look
                    // sees that it changed, not a write: nothing says whether its writer still
                    // holds it open, so it settles by time alone.
                    let kind = if is_dir {
                        created(true)
                    } else {
                        EventKind::Modify(ModifyKind::Any)
                    };
                    out.push(event(kind, name));
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The period of a round that keeps polling within `BUDGET` of a core, given what a round
/// cost.
pub(crate) fn interval_for(round_cpu: Duration, floor: Duration) -> Duration {
    floor.max(round_cpu.div_f64(BUDGET))
}

/// The pause after a round that was paced over `paced_over` and took `took`: only what is left
/// of that interval (a round over no folders, or the first one, made back to back). A paced
/// round is followed by the next at once, itself spread over the new interval: pausing for the
/// new interval's remainder instead left a folder looked at late in one round unlooked-at for
/// that pause and nearly the whole next round, more than the delay said (measured over 12,009
/// polled folders: 177 s against 162 s said). Pure.
pub(crate) fn rest_after(paced_over: Duration, took: Duration) -> Duration {
    paced_over.saturating_sub(took)
}

/// An entry changed since a folder joined: its name, and whether it is a folder.
type Recent = (Vec<u8>, bool);

/// Looks at a folder: its packed entries, and the names of those changed at or after `since`
/// (for a first look), with whether each is a folder.
fn look(dir: &Path, since: Option<SystemTime>) -> Option<(Look, Vec<Recent>)> {
    let listing = std::fs::read_dir(dir).ok()?;
    let mut entries = Vec::new();
    let mut recent = Vec::new();
    for e in listing.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        let name = e.file_name().into_vec();
        let changed = UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
        if since.is_some_and(|s| changed >= s) {
            recent.push((name.clone(), m.is_dir()));
        }
        entries.push((name, digest(&m), m.is_dir()));
    }
    Some((Look::new(entries), recent))
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec as u32)
}

/// A folder being polled: what it held at the last look, and when it joined (entries changed
/// since then are reported at the first look, since they may have changed after the walk that
/// copied the folder).
struct Polled {
    seen: Option<Look>,
    since: SystemTime,
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
                since: SystemTime::now() - Duration::from_millis(10),
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
        let rest = rest_after(was, started.elapsed());
        if !rest.is_zero() {
            let end = Instant::now() + rest;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                std::thread::sleep(rest.min(Duration::from_millis(200)));
            }
        }
    }
}

fn look_at(set: &Mutex<Set>, dir: &Path, sink: &impl Sink) {
    let since = {
        let set = set.lock().unwrap_or_else(PoisonError::into_inner);
        match set.folders.get(dir) {
            Some(p) if p.seen.is_none() => Some(p.since),
            Some(_) => None,
            None => return,
        }
    };
    let now = look(dir, since);
    let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(polled) = set.folders.get_mut(dir) else {
        return;
    };
    let Some((now, recent)) = now else {
        // Gone: its parent reports the removal; nothing left to look at.
        set.folders.remove(dir);
        set.order.retain(|d| d != dir);
        return;
    };
    let events = match &polled.seen {
        Some(before) => diff(dir, before, &now),
        None => recent
            .into_iter()
            .map(|(name, is_dir)| {
                let kind = if is_dir {
                    EventKind::Create(CreateKind::Folder)
                } else {
                    EventKind::Modify(ModifyKind::Any)
                };
                notify::Event::new(kind)
                    .add_path(dir.join(std::ffi::OsStr::from_bytes(&name)))
                    .set_info(POLLED)
            })
            .collect(),
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

    fn look(entries: &[(&str, u64, bool)]) -> Look {
        Look::new(
            entries
                .iter()
                .map(|(n, d, dir)| (n.as_bytes().to_vec(), *d, *dir))
                .collect(),
        )
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
        let before = look(&[
            ("same", 1, false),
            ("grown", 2, false),
            ("gone", 3, false),
            ("sub", 5, true),
            ("was-file", 6, false),
        ]);
        let after = look(&[
            ("same", 1, false),
            ("grown", 22, false),
            ("sub", 5, true),
            ("was-file", 6, true),
            ("new", 7, false),
            ("newdir", 8, true),
        ]);
        let got = kinds(&diff(dir, &before, &after));
        let want = vec![
            ("/s/d/gone".to_string(), EventKind::Remove(RemoveKind::Any)),
            ("/s/d/grown".to_string(), EventKind::Modify(ModifyKind::Any)),
            ("/s/d/new".to_string(), EventKind::Create(CreateKind::File)),
            (
                "/s/d/newdir".to_string(),
                EventKind::Create(CreateKind::Folder),
            ),
            (
                "/s/d/was-file".to_string(),
                EventKind::Create(CreateKind::Folder),
            ),
        ];
        assert_eq!(got, want);
        // Marked, so that a new file is not held for a close that polling never sees.
        assert!(
            diff(dir, &before, &after)
                .iter()
                .all(|e| e.info() == Some(POLLED))
        );
        assert!(diff(dir, &after, &after).is_empty());
    }

    #[test]
    fn a_look_is_packed_and_sorted() {
        let l = look(&[("b", 2, false), ("a", 1, true)]);
        assert_eq!(l.get(0), (&b"a"[..], 1, true));
        assert_eq!(l.get(1), (&b"b"[..], 2, false));
        assert_eq!(l.names, b"ab");
    }

    #[test]
    fn a_paced_round_is_followed_by_the_next_at_once() {
        // Paced over 77 s, it took 86 s: the next round starts now, whatever its own interval.
        assert_eq!(
            rest_after(Duration::from_secs(77), Duration::from_secs(86)),
            Duration::ZERO
        );
        // A round over no folders, or the first one made back to back, waits out the interval.
        assert_eq!(
            rest_after(MIN_INTERVAL, Duration::from_millis(500)),
            Duration::from_millis(1500)
        );
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
