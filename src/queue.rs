//! Pure decisions of `watch`: which filesystem events mean work, and when a changed file has
//! settled enough to copy. No I/O here; the loop in `live` feeds events and the clock in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};

/// What one event asks for. Paths are relative to SRC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Contents or metadata of this path changed: copy it once it has settled (a folder: refresh
    /// its own metadata).
    Changed(PathBuf),
    /// This path appeared (created, or moved in from elsewhere): a folder is walked, since files
    /// made in it before its watch existed produced no event; anything else is `Changed`.
    Arrived(PathBuf),
    /// Events were lost (queue overflow): only a full pass can tell what changed.
    Rescan,
}

/// The work an event asks for. `skip` is DST when it lies inside SRC: its events are our own
/// copies and must not feed back.
pub fn classify(event: &notify::Event, src: &Path, skip: Option<&Path>) -> Vec<Work> {
    if event.need_rescan() {
        return vec![Work::Rescan];
    }
    let rel = |p: &Path| -> Option<PathBuf> {
        if skip.is_some_and(|s| p.starts_with(s)) {
            return None;
        }
        p.strip_prefix(src).ok().map(Path::to_path_buf)
    };
    let first = event.paths.first().and_then(|p| rel(p));
    let work = match event.kind {
        // The tool's own reads of SRC produce opens and closes; only a close after writing
        // means new contents.
        EventKind::Access(_) if !can_change(&event.kind) => None,
        EventKind::Access(_) => first.map(Work::Changed),
        EventKind::Create(CreateKind::File) => first.map(Work::Changed),
        EventKind::Create(_) => first.map(Work::Arrived),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            event.paths.get(1).and_then(|p| rel(p)).map(Work::Arrived)
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => {
            first.map(Work::Arrived)
        }
        // Moved away: deleting in SRC deletes nothing in DST.
        EventKind::Modify(ModifyKind::Name(_)) => None,
        EventKind::Modify(_) | EventKind::Any => first.map(Work::Changed),
        EventKind::Remove(_) | EventKind::Other => None,
    };
    work.into_iter().collect()
}

/// Whether an event of this kind can mean new contents, metadata or names in SRC. Opens, reads
/// and closes without writing cannot.
pub fn can_change(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Any
                | AccessKind::Other
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute | AccessMode::Other)
        )
    )
}

/// A word for an event's kind, for `--verbose`.
pub fn describe(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => "closed after writing",
        EventKind::Access(_) => "read",
        EventKind::Create(_) => "created",
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => "moved away",
        EventKind::Modify(ModifyKind::Name(_)) => "moved in",
        EventKind::Modify(ModifyKind::Metadata(_)) => "attributes changed",
        EventKind::Modify(_) => "written",
        EventKind::Remove(_) => "removed",
        EventKind::Any | EventKind::Other => "changed",
    }
}

/// Files waiting to settle: each is copied once quiet for `debounce`, or, if it never goes
/// quiet, once `max_delay` has passed since its first unsettled change.
#[derive(Debug)]
pub struct Settle {
    debounce: Duration,
    max_delay: Duration,
    pending: HashMap<PathBuf, Pending>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Instant,
    last: Instant,
}

impl Settle {
    pub fn new(debounce: Duration, max_delay: Duration) -> Settle {
        Settle {
            debounce,
            max_delay: max_delay.max(debounce),
            pending: HashMap::new(),
        }
    }

    /// Records a change of `path` seen at `at`.
    pub fn touch(&mut self, path: PathBuf, at: Instant) {
        self.pending
            .entry(path)
            .and_modify(|p| {
                p.last = p.last.max(at);
                p.first = p.first.min(at);
            })
            .or_insert(Pending {
                first: at,
                last: at,
            });
    }

    /// Removes and returns the paths due at `now`, in path order.
    pub fn due(&mut self, now: Instant) -> Vec<PathBuf> {
        let (debounce, max_delay) = (self.debounce, self.max_delay);
        let mut out: Vec<PathBuf> = Vec::new();
        self.pending.retain(|path, p| {
            let quiet = now.saturating_duration_since(p.last) >= debounce;
            let overdue = now.saturating_duration_since(p.first) >= max_delay;
            if quiet || overdue {
                out.push(path.clone());
                false
            } else {
                true
            }
        });
        out.sort();
        out
    }

    /// When the next path becomes due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| (p.last + self.debounce).min(p.first + self.max_delay))
            .min()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Drops every path that lies inside another one of the set: walking the outer folder covers
/// it.
pub fn outermost(mut dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    dirs.sort();
    dirs.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !out.iter().any(|o| d.starts_with(o)) {
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, Flag, MetadataKind, RemoveKind};
    use notify::{Event, EventKind};

    const SRC: &str = "/s";

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// Event → work, as a table: (event, DST inside SRC?, expected).
    #[test]
    fn events_to_work() {
        use Work::*;
        let skip = Some(Path::new("/s/backup"));
        let table: Vec<(Event, Vec<Work>)> = vec![
            (
                ev(
                    EventKind::Access(AccessKind::Open(AccessMode::Any)),
                    &["/s/a"],
                ),
                vec![],
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Read)),
                    &["/s/a"],
                ),
                vec![],
            ),
            (ev(EventKind::Access(AccessKind::Read), &["/s/a"]), vec![]),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/s/a"],
                ),
                vec![Changed(p("a"))],
            ),
            (
                ev(EventKind::Create(CreateKind::File), &["/s/d/a"]),
                vec![Changed(p("d/a"))],
            ),
            (
                ev(EventKind::Create(CreateKind::Folder), &["/s/d"]),
                vec![Arrived(p("d"))],
            ),
            (
                ev(EventKind::Create(CreateKind::Any), &["/s/x"]),
                vec![Arrived(p("x"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/s/a"],
                ),
                vec![Changed(p("a"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                    &["/s/a"],
                ),
                vec![Changed(p("a"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    &["/s/moved"],
                ),
                vec![Arrived(p("moved"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                    &["/s/old"],
                ),
                vec![],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/s/.a.swp", "/s/a"],
                ),
                vec![Arrived(p("a"))],
            ),
            (ev(EventKind::Remove(RemoveKind::File), &["/s/a"]), vec![]),
            (ev(EventKind::Remove(RemoveKind::Folder), &["/s/d"]), vec![]),
            (ev(EventKind::Other, &["/s/a"]), vec![]),
            (
                ev(EventKind::Other, &[]).set_flag(Flag::Rescan),
                vec![Rescan],
            ),
            // Our own copies into a DST inside SRC never feed back.
            (
                ev(EventKind::Create(CreateKind::File), &["/s/backup/a"]),
                vec![],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/s/backup"],
                ),
                vec![],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/s/x", "/s/backup/x"],
                ),
                vec![],
            ),
            // A sibling whose name merely starts like DST is not inside it.
            (
                ev(EventKind::Create(CreateKind::File), &["/s/backup2/a"]),
                vec![Changed(p("backup2/a"))],
            ),
            // Outside SRC (cannot happen, but must not panic or escape).
            (
                ev(EventKind::Create(CreateKind::File), &["/elsewhere/a"]),
                vec![],
            ),
        ];
        for (event, expected) in table {
            assert_eq!(
                classify(&event, Path::new(SRC), skip),
                expected,
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_burst_settles_once_after_it_goes_quiet() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Settle::new(Duration::from_millis(1000), Duration::from_secs(60));
        for i in 0..50 {
            s.touch(p("a"), ms(i * 10));
        }
        assert_eq!(s.next_due(), Some(ms(490 + 1000)));
        assert!(s.due(ms(1489)).is_empty());
        assert_eq!(s.due(ms(1490)), vec![p("a")]);
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_file_that_never_goes_quiet_is_copied_every_max_delay() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Settle::new(Duration::from_millis(1000), Duration::from_millis(2000));
        let mut copies = Vec::new();
        // Appended every 100 ms for 6 s, checked every 10 ms.
        for now in (0..8000).step_by(10) {
            if now < 6000 && now % 100 == 0 {
                s.touch(p("log"), ms(now));
            }
            if !s.due(ms(now)).is_empty() {
                copies.push(now);
            }
        }
        // Forced every max-delay while appends go on; the third, after they stopped, has them all.
        assert_eq!(copies, vec![2000, 4100, 6200]);
    }

    #[test]
    fn out_of_order_times_keep_first_and_last() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Settle::new(Duration::from_millis(100), Duration::from_millis(1000));
        s.touch(p("a"), ms(50));
        s.touch(p("a"), ms(10));
        assert_eq!(s.next_due(), Some(ms(150)));
        s.touch(p("b"), ms(0));
        assert_eq!(s.due(ms(120)), vec![p("b")]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn nested_folders_are_walked_once() {
        assert_eq!(
            outermost(vec![p("a/b/c"), p("a"), p("a/b"), p("x"), p("ab"), p("a")]),
            vec![p("a"), p("ab"), p("x")]
        );
    }
}
