//! When a changed file has settled enough to copy: the one rule, in its two forms. `watch` sees
//! changes as events (`Settle`: quiet for `--debounce`, or `--max-delay` since the first change);
//! a walk sees them as modification times (`unsettled_for`). No I/O here; the clock is passed in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::meta::Time;

/// How long ago a file was modified, if less than `window` ago: then it may still be being
/// written and is left to settle. A time in the future counts as settled, so that a wrong clock
/// cannot hold a file back forever.
pub(crate) fn unsettled_for(mtime: Time, now: SystemTime, window: Duration) -> Option<Duration> {
    let mtime = std::time::UNIX_EPOCH
        .checked_add(Duration::new(u64::try_from(mtime.sec).ok()?, mtime.nsec))?;
    let age = now.duration_since(mtime).ok()?;
    (age < window).then_some(age)
}

/// Files waiting to settle: each is copied once quiet for `debounce`, or, if it never goes
/// quiet, once `max_delay` has passed since its first unsettled change. Beside them, what is
/// owed: when each change not yet safe in DST was first seen, kept while its file waits, is in
/// a batch and comes back to wait again, until a batch that covered it has landed. The oldest
/// of those is how far behind the mirror is. A file that was written
/// and not yet closed by its writer (a download, a slow copy, a log) is not quiet, however long
/// since the last write: only `max_delay` brings it out, so that a partial file is copied at
/// most once per `max_delay` rather than at every pause of its writer.
#[derive(Debug)]
pub(crate) struct Settle {
    debounce: Duration,
    max_delay: Duration,
    pending: HashMap<PathBuf, Pending>,
    /// Relative to SRC: a file, a folder to walk, or SRC itself (`""`) for a full pass.
    owed: HashMap<PathBuf, Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Instant,
    last: Instant,
    /// Whether its writer holds it open.
    open: Open,
    /// Not to be tried before then (a database another program keeps locked).
    not_before: Option<Instant>,
}

/// What is known of a file's writer, in the order that the events come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Open {
    No,
    /// Created and not closed since: its creator holds it open.
    Created,
    /// Written and not closed since.
    Written,
}

impl Pending {
    fn new(at: Instant) -> Pending {
        Pending {
            first: at,
            last: at,
            open: Open::No,
            not_before: None,
        }
    }
}

impl Settle {
    pub(crate) fn new(debounce: Duration, max_delay: Duration) -> Settle {
        Settle {
            debounce,
            max_delay: max_delay.max(debounce),
            pending: HashMap::new(),
            owed: HashMap::new(),
        }
    }

    /// Records a change of `path` seen at `at`.
    pub(crate) fn touch(&mut self, path: PathBuf, at: Instant) {
        self.entry(path, at);
    }

    fn entry(&mut self, path: PathBuf, at: Instant) -> &mut Pending {
        self.owe(&path, at);
        let p = self.pending.entry(path).or_insert(Pending::new(at));
        p.last = p.last.max(at);
        p.first = p.first.min(at);
        p
    }

    /// Records that `path` was created at `at` by a writer that holds it open until `closed`
    /// (unless a write was already seen).
    pub(crate) fn created(&mut self, path: PathBuf, at: Instant) {
        let p = self.entry(path, at);
        p.open = p.open.max(Open::Created);
    }

    /// Records a write to `path` seen at `at`: its writer holds it open until `closed`.
    pub(crate) fn wrote(&mut self, path: PathBuf, at: Instant) {
        self.entry(path, at).open = Open::Written;
    }

    /// Records that the writer of `path` closed it at `at`, or that it settles by time alone
    /// whatever its writer does (a database, which its application never closes).
    pub(crate) fn closed(&mut self, path: PathBuf, at: Instant) {
        self.entry(path, at).open = Open::No;
    }

    /// Whether `path` is waiting, written and not closed since. Only created is not enough: its
    /// first write is still to be looked at.
    pub(crate) fn is_open(&self, path: &Path) -> bool {
        self.pending
            .get(path)
            .is_some_and(|p| p.open == Open::Written)
    }

    /// Leaves `path` waiting until `at` at least (a database that another program keeps locked
    /// is tried again then), whatever else happens to it meanwhile.
    pub(crate) fn retry(&mut self, path: PathBuf, at: Instant) {
        let quiet_by = at.checked_sub(self.debounce).unwrap_or(at);
        self.owe(&path, quiet_by);
        let p = self.pending.entry(path).or_insert(Pending::new(quiet_by));
        p.not_before = Some(p.not_before.map_or(at, |t| t.max(at)));
    }

    /// Removes and returns the paths due at `now`, in path order.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| self.due_at(p) <= now)
            .map(|(path, _)| path.clone())
            .collect();
        for path in &due {
            self.pending.remove(path);
        }
        due.sort();
        due
    }

    /// When the next path becomes due, if any is waiting.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| self.due_at(p)).min()
    }

    fn due_at(&self, p: &Pending) -> Instant {
        let overdue = p.first + self.max_delay;
        let settled = if p.open != Open::No {
            overdue
        } else {
            (p.last + self.debounce).min(overdue)
        };
        p.not_before.map_or(settled, |t| settled.max(t))
    }

    /// How long a burst's files are gathered into one batch: a quarter of the debounce, at
    /// most a quarter of a second, nothing with `--debounce 0`.
    pub(crate) fn gather(&self) -> Duration {
        (self.debounce / 4).min(Duration::from_millis(250))
    }

    /// When the files due at `now` should be copied: now, unless more become due shortly after
    /// (a burst being written, an archive being unpacked); then at the next of those, so that
    /// they go in one batch, with one sync and one rolling line. The wait ends at
    /// `since + gather`, `since` being when the first of them became due.
    pub(crate) fn run_at(&self, now: Instant, since: Instant, gather: Duration) -> Instant {
        let limit = since + gather;
        if now >= limit {
            return now;
        }
        self.pending
            .values()
            .map(|p| self.due_at(p))
            .filter(|&at| at > now && at <= limit)
            .min()
            .unwrap_or(now)
    }

    /// Records that a change of `path` (a folder to walk; `""` for the whole of SRC) was seen
    /// at `at` and is not yet safe in DST.
    pub(crate) fn owe(&mut self, path: &Path, at: Instant) {
        let t = self.owed.entry(path.to_path_buf()).or_insert(at);
        *t = (*t).min(at);
    }

    /// A batch that started at `started` has landed in DST: every change it covered (all of
    /// SRC for a full pass, else its files and what lies under its walks) that was seen before
    /// it started is paid, but for the files it sent back to wait.
    pub(crate) fn landed(
        &mut self,
        full: bool,
        files: &[PathBuf],
        walks: &[PathBuf],
        started: Instant,
    ) {
        let files: std::collections::HashSet<&PathBuf> = files.iter().collect();
        let covered =
            |p: &PathBuf| full || files.contains(p) || walks.iter().any(|w| p.starts_with(w));
        let pending = &self.pending;
        self.owed
            .retain(|p, at| *at >= started || pending.contains_key(p) || !covered(p));
    }

    /// When the oldest change not yet safe in DST was seen.
    pub(crate) fn oldest_owed(&self) -> Option<Instant> {
        self.owed.values().min().copied()
    }

    /// What is owed, relative to SRC.
    pub(crate) fn owed(&self) -> impl Iterator<Item = &PathBuf> {
        self.owed.keys()
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_recent_mtime_is_unsettled_and_a_future_one_is_not() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1000);
        let t = |sec, nsec| Time { sec, nsec };
        let w = Duration::from_secs(1);
        assert_eq!(
            unsettled_for(t(999, 500_000_000), now, w),
            Some(Duration::from_millis(500))
        );
        assert_eq!(unsettled_for(t(998, 0), now, w), None);
        assert_eq!(unsettled_for(t(1001, 0), now, w), None, "in the future");
        assert_eq!(unsettled_for(t(-5, 0), now, w), None);
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
    fn a_burst_is_gathered_for_at_most_the_window_and_a_lone_change_is_not_held() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Settle::new(ms(1000), ms(60_000));
        s.touch(p("a"), t0);
        // Due at t0 + 1 s, nothing else coming: copied at once.
        assert_eq!(
            s.run_at(t0 + ms(1000), t0 + ms(1000), ms(250)),
            t0 + ms(1000)
        );
        // Files of a burst written 50 ms apart: wait for the next one, never past the window.
        s.touch(p("b"), t0 + ms(50));
        s.touch(p("c"), t0 + ms(400));
        let since = t0 + ms(1000);
        assert_eq!(s.run_at(since, since, ms(250)), t0 + ms(1050));
        assert_eq!(s.run_at(t0 + ms(1050), since, ms(250)), t0 + ms(1050));
        assert_eq!(s.run_at(t0 + ms(1100), since, ms(250)), t0 + ms(1100));
        // A window of nothing (`--debounce 0`) never waits.
        assert_eq!(s.run_at(since, since, Duration::ZERO), since);
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
    fn a_file_held_open_by_its_writer_waits_for_its_close_or_max_delay() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Settle::new(Duration::from_millis(100), Duration::from_millis(5000));
        // A slow writer: a block every 500 ms, far apart enough to look quiet in between.
        for i in 0..6 {
            s.wrote(p("slow"), ms(i * 500));
            assert!(s.due(ms(i * 500 + 400)).is_empty(), "paused at {i}");
        }
        assert!(s.is_open(Path::new("slow")));
        s.closed(p("slow"), ms(2600));
        assert!(s.due(ms(2650)).is_empty());
        assert_eq!(s.due(ms(2700)), vec![p("slow")]);
        // Created and left empty for a while before its one write (rsync's temporary file).
        s.created(p("temp"), ms(0));
        assert!(
            !s.is_open(Path::new("temp")),
            "its first write is still to be looked at"
        );
        assert!(s.due(ms(400)).iter().all(|d| d != &p("temp")));
        s.wrote(p("temp"), ms(450));
        s.created(p("temp"), ms(460));
        assert!(s.is_open(Path::new("temp")), "a write is not undone");
        s.closed(p("temp"), ms(500));
        assert!(s.due(ms(600)).contains(&p("temp")));
        // One that never closes comes out at max-delay, as any file that never settles.
        s.wrote(p("log"), ms(3000));
        assert_eq!(s.next_due(), Some(ms(8000)));
        assert_eq!(s.due(ms(8000)), vec![p("log")]);
    }

    #[test]
    fn what_is_owed_is_paid_only_by_a_batch_that_covered_it_and_landed() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Settle::new(Duration::from_millis(100), Duration::from_millis(1000));
        s.touch(p("a"), ms(0));
        s.touch(p("a"), ms(50));
        s.touch(p("b"), ms(10));
        s.owe(Path::new("new"), ms(20));
        assert_eq!(
            s.oldest_owed(),
            Some(ms(0)),
            "the first change, not the last"
        );
        assert_eq!(s.due(ms(200)), vec![p("a"), p("b")]);
        // Taken into a batch is not safe yet; `b` comes back still being written.
        assert_eq!(s.oldest_owed(), Some(ms(0)));
        s.touch(p("b"), ms(210));
        s.landed(false, &[p("a"), p("b")], &[], ms(200));
        assert_eq!(
            s.oldest_owed(),
            Some(ms(10)),
            "b keeps the age of its first change"
        );
        // A walk pays for what lies under it; a change seen after the batch started stays.
        s.touch(p("new/x"), ms(300));
        s.landed(false, &[], &[p("new")], ms(250));
        assert_eq!(s.owed().count(), 2);
        // A full pass pays for everything before it but what waits.
        assert_eq!(s.due(ms(2000)).len(), 2);
        s.landed(true, &[], &[], ms(2000));
        assert_eq!(s.oldest_owed(), None);
    }

    #[test]
    fn a_retry_is_never_earlier_than_asked() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Settle::new(Duration::from_millis(100), Duration::from_millis(1000));
        s.retry(p("db"), ms(5000));
        assert_eq!(s.next_due(), Some(ms(5000)));
        // Changes meanwhile do not bring it forward.
        s.touch(p("db"), ms(4000));
        assert!(s.due(ms(4999)).is_empty());
        assert_eq!(s.due(ms(5000)), vec![p("db")]);
    }
}
