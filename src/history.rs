//! Pure decisions over the copies in one destination folder: which names make up the history of
//! which file, when each version was captured, which one was the newest at a given time, and
//! which ones a pruning policy keeps. The naming rule (`naming`) is the only source of truth;
//! nothing here reads the disk.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::error::{Error, Why};
use crate::naming::{self, VersionKey};

/// One non-folder entry of a destination folder, as read from the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: Vec<u8>,
    /// Modification time, as a local stamp (`YYYYMMDDHHMMSS`).
    pub(crate) modified: u64,
    /// When the filesystem says the entry was written: its birth time, or its change time where
    /// there is none; as a local stamp.
    pub(crate) written: u64,
    pub(crate) size: u64,
}

/// One version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) name: Vec<u8>,
    /// `None` for the plain name.
    pub(crate) key: Option<VersionKey>,
    /// When it was captured: the time in its name; for the plain name, when it was written.
    pub(crate) captured: u64,
    pub(crate) size: u64,
}

/// The versions of one file, oldest first (the plain name, then by time and counter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct History {
    /// The file's name in its source folder.
    pub(crate) name: Vec<u8>,
    pub(crate) versions: Vec<Version>,
}

impl Version {
    /// Whether this is the record of a deletion (`_deleted`), not a copy.
    pub(crate) fn is_deletion(&self) -> bool {
        self.key.is_some_and(|k| k.deleted)
    }
}

impl History {
    /// The member that was the newest at `at` (a local stamp), if the file had one yet: a
    /// version, or the record of its deletion.
    pub(crate) fn at(&self, at: u64) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.captured <= at)
    }

    /// The version a restore at `at` gives back: the newest one by then, unless the newest
    /// thing by then is the record that the file was deleted.
    pub(crate) fn restorable_at(&self, at: u64) -> Option<&Version> {
        self.at(at).filter(|v| !v.is_deletion())
    }

    /// When the newest deletion recorded at or before `at` happened: for a folder, everything
    /// in it that was captured before then was gone at `at`.
    pub(crate) fn deleted_by(&self, at: u64) -> Option<u64> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.captured <= at && v.is_deletion())
            .map(|v| v.captured)
    }

    /// Where in `versions` the newest copy is (a deleted file's last copy too), if any.
    pub(crate) fn newest_copy(&self) -> Option<usize> {
        newest_copy(&self.versions)
    }

    /// Whether anything of the file was ever copied (not only deletions recorded).
    pub(crate) fn has_copies(&self) -> bool {
        self.versions.iter().any(|v| !v.is_deletion())
    }
}

/// What DST shows of one of its folders, to tell when the folder was there: folders leave no
/// versions of their own, so their past is read from their family's records (a file of that
/// name, deletions) and from these signs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FolderSigns {
    /// When DST's folder was made (a local stamp), where the filesystem keeps birth times.
    pub(crate) born: Option<u64>,
    /// Its modification time: the source folder's, as the last pass that saw it left it.
    pub(crate) modified: u64,
    /// The newest capture (a version or a deletion record) in it or below it, at or before the
    /// time asked about.
    pub(crate) newest: Option<u64>,
}

/// Whether the name whose family is `family` (its versions as a file and its deletions, if it
/// has any) was a folder at `at`, given the signs of the folder DST holds under that name.
/// Whether the folder it is in was there is the caller's to check.
///
/// The newest record by then decides: a file version means it was a file. A deletion right
/// after a file version is the file's: the folder, made where the file was, came after that
/// file's last copy. Any other deletion is the folder's own: it was gone, unless something
/// shows it back since (see `shows_life`). With no record, the folder was there once DST shows
/// it.
pub(crate) fn folder_at(family: Option<&History>, signs: &FolderSigns, at: u64) -> bool {
    let versions = family.map_or(&[][..], |h| &h.versions[..]);
    let since = match versions.iter().rposition(|v| v.captured <= at) {
        None => None,
        Some(i) if !versions[i].is_deletion() => return false,
        Some(i) => Some(match i.checked_sub(1).map(|p| &versions[p]) {
            Some(file) if !file.is_deletion() => file.captured,
            _ => versions[i].captured,
        }),
    };
    shows_life(signs, since, at)
}

/// Whether DST shows the folder there in `[since, at]`: made then, its source folder changed
/// then (a time before the folder was made in DST is the source's own, and shows nothing), or
/// anything copied or recorded in it then.
fn shows_life(signs: &FolderSigns, since: Option<u64>, at: u64) -> bool {
    let within = |t: u64| since.is_none_or(|s| t >= s) && t <= at;
    signs.born.is_some_and(within)
        || (within(signs.modified) && signs.born.is_none_or(|b| signs.modified >= b))
        || signs.newest.is_some_and(within)
}

/// When the filesystem says an entry was written, as a local stamp: its birth time, or its
/// change time where there is none. What a copy under the plain name (no time in it) counts as
/// captured at.
pub(crate) fn written_at(meta: &crate::meta::Meta, born: Option<crate::meta::Time>) -> u64 {
    naming::stamp_at(born.unwrap_or(meta.ctime))
}

/// Groups a destination folder's entries into file histories, sorted by file name.
///
/// `sources` are the names in the matching source folder, when it is known: a name that a
/// source file has is that file's own copy, never a version of another. Without them (commands
/// that read only DST), a version-shaped name counts as a version only when its modification
/// time is no later than the time in its name (a copy cannot hold changes made after it was
/// captured); a source file that merely looks like a version rarely passes that.
pub(crate) fn histories(entries: &[Entry], sources: Option<&HashSet<Vec<u8>>>) -> Vec<History> {
    let names: HashSet<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
    let mut families: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    let mut plain: Vec<&Entry> = Vec::new();
    for e in entries {
        let version = naming::original_name(&e.name).filter(|(_, key)| match sources {
            Some(src) => !src.contains(&e.name),
            None => plausible(e.modified, key.stamp),
        });
        match version {
            None => plain.push(e),
            Some((reconstructed, key)) => {
                // A shortened version name belongs to the long name it was cut from.
                let family = if names.contains(reconstructed.as_slice()) {
                    reconstructed
                } else {
                    entries
                        .iter()
                        .map(|p| &p.name)
                        .find(|p| naming::version_of(p, &e.name) == Some(key))
                        .cloned()
                        .unwrap_or(reconstructed)
                };
                families.entry(family).or_default().push(Version {
                    name: e.name.clone(),
                    key: Some(key),
                    captured: key.stamp,
                    size: e.size,
                });
            }
        }
    }
    for e in plain {
        let versions = families.entry(e.name.clone()).or_default();
        // The plain name is the oldest version, whatever its birth time says (a destination
        // copied elsewhere has new birth times).
        let first = versions.iter().map(|v| v.captured).min();
        versions.push(Version {
            name: e.name.clone(),
            key: None,
            captured: first.map_or(e.written, |f| e.written.min(f)),
            size: e.size,
        });
    }
    families
        .into_iter()
        .map(|(name, mut versions)| {
            versions.sort_by_key(|v| v.key);
            History { name, versions }
        })
        .collect()
}

/// Whether a file modified at `modified` can be a version captured at `captured`: one second of
/// slack, since the name keeps whole seconds.
fn plausible(modified: u64, captured: u64) -> bool {
    let Some(m) = naming::naive_of(modified) else {
        return true;
    };
    naming::stamp_of(&(m - chrono::Duration::seconds(1))) <= captured
}

/// What a pruning run keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The N newest versions of each file.
    pub(crate) keep_last: Option<usize>,
    /// Every version captured this recently.
    pub(crate) keep_within: Option<Duration>,
    /// Thinned like Syncthing's staggered versioning: one version per 30 s for the last hour,
    /// per hour for the last day, per day for the last 30 days, per week before that.
    pub(crate) staggered: bool,
}

impl Policy {
    pub(crate) fn is_empty(&self) -> bool {
        self.keep_last.is_none() && self.keep_within.is_none() && !self.staggered
    }
}

/// Bands of the staggered policy: (versions younger than this, keep one per this).
const BANDS: [(i64, i64); 3] = [(3600, 30), (86_400, 3600), (30 * 86_400, 86_400)];
const WEEK: i64 = 7 * 86_400;

/// Which versions (indices into `versions`, oldest first) may go to make room: every copy but the
/// newest one (a deleted file's last copy too is its newest), never a record of a deletion (it
/// frees nothing, and a restore needs it to leave the file out).
pub(crate) fn spare(versions: &[Version]) -> Vec<usize> {
    let newest = newest_copy(versions);
    (0..versions.len())
        .filter(|&i| !versions[i].is_deletion() && Some(i) != newest)
        .collect()
}

fn newest_copy(versions: &[Version]) -> Option<usize> {
    versions.iter().rposition(|v| !v.is_deletion())
}

/// Which versions (indices into `versions`, oldest first) a policy lets go at `now` (a local
/// stamp). A version is kept when any rule keeps it; the newest is always kept, and so is every
/// record of a deletion (empty files, and what keeps a restore from bringing back a file that
/// was gone at the time).
pub(crate) fn to_prune(versions: &[Version], policy: &Policy, now: u64) -> Vec<usize> {
    let n = versions.len();
    if n < 2 || policy.is_empty() {
        return Vec::new();
    }
    let Some(now) = naming::naive_of(now) else {
        return Vec::new();
    };
    let age = |v: &Version| -> i64 {
        naming::naive_of(v.captured).map_or(i64::MAX, |t| (now - t).num_seconds())
    };
    let mut keep = vec![false; n];
    keep[n - 1] = true;
    if let Some(k) = policy.keep_last {
        for slot in keep.iter_mut().skip(n.saturating_sub(k)) {
            *slot = true;
        }
    }
    if let Some(within) = policy.keep_within {
        let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
        for (slot, v) in keep.iter_mut().zip(versions) {
            *slot |= age(v) <= within;
        }
    }
    if policy.staggered {
        // Oldest first: a version is kept when it is at least one step of its band younger
        // than the last one kept, as Syncthing does.
        let mut last_kept: Option<i64> = None;
        for (slot, v) in keep.iter_mut().zip(versions) {
            let a = age(v);
            let step = BANDS
                .iter()
                .find(|(younger_than, _)| a < *younger_than)
                .map_or(WEEK, |(_, step)| *step);
            if last_kept.is_none_or(|prev| prev - a >= step) {
                *slot = true;
                last_kept = Some(a);
            }
        }
    }
    (0..n)
        .filter(|&i| !keep[i] && !versions[i].is_deletion())
        .collect()
}

/// Parses a point in time for `--at`: RFC 3339; `YYYY-MM-DD[ HH:MM[:SS]]` in local time (`T`
/// may stand for the space); `now`; or a duration ago (`2h`, `3 days`, `90m ago`).
pub(crate) fn parse_when(
    s: &str,
    now: chrono::DateTime<chrono::Local>,
) -> Result<NaiveDateTime, Error> {
    let s = s.trim();
    if s == "now" {
        return Ok(now.naive_local());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Local).naive_local());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default());
    }
    let ago = s.strip_suffix("ago").unwrap_or(s).trim();
    let unreadable = || Error::run(Why::When(s.to_string()));
    let d = humantime::parse_duration(ago).map_err(|_| unreadable())?;
    let d = chrono::Duration::from_std(d).map_err(|_| unreadable())?;
    now.naive_local()
        .checked_sub_signed(d)
        .ok_or_else(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_from_every_copy_but_the_newest_and_never_from_deletion_records() {
        let v = |name: &str, deleted: bool, captured: u64| Version {
            name: name.as_bytes().to_vec(),
            key: Some(VersionKey {
                stamp: captured,
                counter: 0,
                deleted,
            }),
            captured,
            size: 1,
        };
        let live = [v("a", false, 1), v("b", false, 2), v("c", false, 3)];
        assert_eq!(spare(&live), [0, 1]);
        let gone = [v("a", false, 1), v("b", false, 2), v("x", true, 3)];
        assert_eq!(spare(&gone), [0], "the last copy of a deleted file stays");
        let back = [v("a", false, 1), v("x", true, 2), v("c", false, 3)];
        assert_eq!(spare(&back), [0]);
        assert!(spare(&[v("a", false, 1)]).is_empty());
        assert!(spare(&[]).is_empty());
    }
    use chrono::TimeZone;

    const T: u64 = 20231124153045;

    fn entry(name: &str, modified: u64, written: u64) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            modified,
            written,
            size: 1,
        }
    }

    fn names(h: &History) -> Vec<String> {
        h.versions
            .iter()
            .map(|v| String::from_utf8_lossy(&v.name).into_owned())
            .collect()
    }

    #[test]
    fn versions_group_under_their_file_oldest_first() {
        let hs = histories(
            &[
                entry("a_20231124_153045_1.txt", T, T),
                entry("a.txt", T - 100, 20231124150000),
                entry("b.txt", T, T),
                entry("a_20231124_153045.txt", T, T),
                entry("a_20231124_153044.txt", T - 1, T),
            ],
            None,
        );
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].name, b"a.txt");
        assert_eq!(
            names(&hs[0]),
            [
                "a.txt",
                "a_20231124_153044.txt",
                "a_20231124_153045.txt",
                "a_20231124_153045_1.txt"
            ]
        );
        assert_eq!(hs[0].versions[0].captured, 20231124150000);
        assert_eq!(names(&hs[1]), ["b.txt"]);
    }

    #[test]
    fn the_plain_name_is_never_newer_than_the_versions() {
        // A destination copied elsewhere: every birth time is the day of the copy.
        let later = 20261126120000;
        let hs = histories(
            &[
                entry("a.txt", T, later),
                entry("a_20231124_153045.txt", T, later),
            ],
            None,
        );
        assert_eq!(hs[0].versions[0].captured, T);
    }

    #[test]
    fn a_source_file_that_looks_like_a_version_stays_its_own_file() {
        // Made now, named after 2023: it cannot be a copy captured in 2023.
        let now = 20261126120000;
        let hs = histories(
            &[
                entry("a.txt", now, now),
                entry("a_20231124_153045.txt", now, now),
            ],
            None,
        );
        assert_eq!(hs.len(), 2, "{hs:?}");
        // With the source listing, the rule is exact even when times agree.
        let src: HashSet<Vec<u8>> = [b"a.txt".to_vec(), b"a_20231124_153045.txt".to_vec()].into();
        let hs = histories(
            &[entry("a.txt", T, T), entry("a_20231124_153045.txt", T, T)],
            Some(&src),
        );
        assert_eq!(hs.len(), 2, "{hs:?}");
        let hs = histories(
            &[entry("a.txt", T, T), entry("a_20231124_153045.txt", T, T)],
            None,
        );
        assert_eq!(hs.len(), 1, "without either clue it is a version");
    }

    #[test]
    fn shortened_names_join_their_long_file() {
        let long = format!("{}.txt", "n".repeat(251));
        let v = naming::version_name(
            long.as_bytes(),
            VersionKey {
                stamp: T,
                counter: 0,
                deleted: false,
            },
        )
        .expect("fits");
        let hs = histories(
            &[
                entry(&long, T, T),
                entry(std::str::from_utf8(&v).expect("utf-8"), T, T),
            ],
            None,
        );
        assert_eq!(hs.len(), 1, "{hs:?}");
        assert_eq!(hs[0].versions.len(), 2);
    }

    #[test]
    fn a_deletion_ends_what_a_restore_gives_back_until_the_file_returns() {
        let hs = histories(
            &[
                entry("a.txt", 20231124100000, 20231124100000),
                entry("a_20231124_120000_deleted.txt", 20231124120000, 0),
                entry("a_20231124_140000.txt", 20231124140000, 0),
            ],
            None,
        );
        let h = &hs[0];
        let name = |t| {
            h.restorable_at(t)
                .map(|v| String::from_utf8_lossy(&v.name).into_owned())
        };
        assert_eq!(name(20231124110000).as_deref(), Some("a.txt"));
        assert_eq!(name(20231124130000), None, "deleted by then");
        assert_eq!(
            name(20231124150000).as_deref(),
            Some("a_20231124_140000.txt")
        );
        assert_eq!(h.deleted_by(20231124130000), Some(20231124120000));
        assert_eq!(h.deleted_by(20231124110000), None);
        // Pruning never takes a deletion record.
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        assert_eq!(to_prune(&h.versions, &policy, 20231125000000), vec![0]);
    }

    #[test]
    fn newest_at_a_time() {
        let hs = histories(
            &[
                entry("a.txt", 20231124100000, 20231124100000),
                entry("a_20231124_120000.txt", 20231124120000, 0),
                entry("a_20231124_140000.txt", 20231124140000, 0),
            ],
            None,
        );
        let h = &hs[0];
        let at = |t| {
            h.at(t)
                .map(|v| String::from_utf8_lossy(&v.name).into_owned())
        };
        assert_eq!(at(20231124090000), None, "before the first copy");
        assert_eq!(at(20231124100000).as_deref(), Some("a.txt"));
        assert_eq!(at(20231124130000).as_deref(), Some("a_20231124_120000.txt"));
        assert_eq!(at(20991231000000).as_deref(), Some("a_20231124_140000.txt"));
    }

    fn versions_at(stamps: &[u64]) -> Vec<Version> {
        stamps
            .iter()
            .map(|&s| Version {
                name: s.to_string().into_bytes(),
                key: Some(VersionKey {
                    stamp: s,
                    counter: 0,
                    deleted: false,
                }),
                captured: s,
                size: 0,
            })
            .collect()
    }

    #[test]
    fn keep_last_and_keep_within() {
        let v = versions_at(&[
            20261120000000,
            20261125000000,
            20261126000000,
            20261126100000,
        ]);
        let now = 20261126120000;
        let last2 = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        assert_eq!(to_prune(&v, &last2, now), vec![0, 1]);
        let within = Policy {
            keep_within: Some(Duration::from_secs(86_400)),
            ..Policy::default()
        };
        assert_eq!(to_prune(&v, &within, now), vec![0, 1]);
        let last1 = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        assert_eq!(to_prune(&v, &last1, now), vec![0, 1, 2]);
        // Rules add up; the newest always stays; no policy prunes nothing.
        let both = Policy {
            keep_last: Some(1),
            keep_within: Some(Duration::from_secs(3 * 3600)),
            ..Policy::default()
        };
        assert_eq!(to_prune(&v, &both, now), vec![0, 1, 2]);
        let zero = Policy {
            keep_last: Some(0),
            ..Policy::default()
        };
        assert_eq!(to_prune(&v, &zero, now), vec![0, 1, 2]);
        assert!(to_prune(&v, &Policy::default(), now).is_empty());
    }

    #[test]
    fn staggered_keeps_one_per_step_in_each_band() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 26)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .expect("date");
        // Every 10 s in the last hour, every 10 min up to a day, every 2 h up to 30 days, every
        // day up to a year: 360 + 138 + 348 + 335 versions.
        let mut ages: Vec<i64> = Vec::new();
        ages.extend((1..=360).map(|i| i * 10));
        ages.extend((7..=144).map(|i| i * 600));
        ages.extend((13..=360).map(|i| i * 7200));
        ages.extend((31..=365).map(|i| i * 86_400));
        ages.sort_unstable_by(|a, b| b.cmp(a));
        let stamps: Vec<u64> = ages
            .iter()
            .map(|a| naming::stamp_of(&(now - chrono::Duration::seconds(*a))))
            .collect();
        let v = versions_at(&stamps);
        let policy = Policy {
            staggered: true,
            ..Policy::default()
        };
        let pruned: HashSet<usize> = to_prune(&v, &policy, naming::stamp_of(&now))
            .into_iter()
            .collect();
        let kept_in = |lo: i64, hi: i64| {
            ages.iter()
                .enumerate()
                .filter(|(i, a)| **a > lo && **a <= hi && !pruned.contains(i))
                .count()
        };
        // Beyond 30 days: one per week over 335 days. 1 to 30 days: one per day. 1 hour to a
        // day: one per hour. The last hour: one per 30 s.
        assert!(
            (47..=49).contains(&kept_in(30 * 86_400, 366 * 86_400)),
            "{}",
            kept_in(30 * 86_400, 366 * 86_400)
        );
        assert!(
            (28..=30).contains(&kept_in(86_400, 30 * 86_400)),
            "{}",
            kept_in(86_400, 30 * 86_400)
        );
        assert!(
            (22..=24).contains(&kept_in(3600, 86_400)),
            "{}",
            kept_in(3600, 86_400)
        );
        assert!(
            (119..=121).contains(&kept_in(0, 3600)),
            "{}",
            kept_in(0, 3600)
        );
        assert!(!pruned.contains(&(v.len() - 1)), "the newest stays");
    }

    #[test]
    fn times_for_at() {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 11, 26, 15, 0, 0)
            .single()
            .expect("local time");
        let ymd = |y, m, d, h, mi, s| {
            chrono::NaiveDate::from_ymd_opt(y, m, d)
                .and_then(|x| x.and_hms_opt(h, mi, s))
                .expect("date")
        };
        assert_eq!(
            parse_when("2026-11-25 14:30", now).ok(),
            Some(ymd(2026, 11, 25, 14, 30, 0))
        );
        assert_eq!(
            parse_when("2026-11-25T14:30:05", now).ok(),
            Some(ymd(2026, 11, 25, 14, 30, 5))
        );
        assert_eq!(
            parse_when("2026-11-25", now).ok(),
            Some(ymd(2026, 11, 25, 0, 0, 0))
        );
        assert_eq!(
            parse_when("2h", now).ok(),
            Some(ymd(2026, 11, 26, 13, 0, 0))
        );
        assert_eq!(
            parse_when("3 days ago", now).ok(),
            Some(ymd(2026, 11, 23, 15, 0, 0))
        );
        assert_eq!(
            parse_when("now", now).ok(),
            Some(ymd(2026, 11, 26, 15, 0, 0))
        );
        let utc = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
            .single()
            .expect("utc");
        assert_eq!(
            parse_when("2026-11-25T10:00:00Z", now).ok(),
            Some(utc.with_timezone(&chrono::Local).naive_local())
        );
        assert!(parse_when("yesterday-ish", now).is_err());
    }

    #[test]
    fn a_folder_is_there_from_when_dst_shows_it_until_a_record_says_otherwise() {
        let v = |name: &str, captured: u64| Version {
            name: name.as_bytes().to_vec(),
            key: naming::original_name(name.as_bytes()).map(|(_, k)| k),
            captured,
            size: 1,
        };
        let t = |hms: u64| 20261206000000 + hms;
        let signs = FolderSigns {
            born: Some(t(100)),
            modified: t(50),
            newest: None,
        };
        // Never anything else: there from when DST made it (an empty folder too).
        assert!(!folder_at(None, &signs, t(99)));
        assert!(folder_at(None, &signs, t(100)));
        // A file, then the folder in its place (the file's deletion recorded at the swap).
        let swapped = History {
            name: b"x".to_vec(),
            versions: vec![
                v("x_20261206_000010", t(10)),
                v("x_20261206_000100_deleted", t(100)),
            ],
        };
        assert!(!folder_at(Some(&swapped), &signs, t(50)), "a file then");
        assert!(folder_at(Some(&swapped), &signs, t(100)));
        // Then a file again: the folder's deletion, then the file's version.
        let back = History {
            name: b"x".to_vec(),
            versions: vec![
                v("x_20261206_000010", t(10)),
                v("x_20261206_000100_deleted", t(100)),
                v("x_20261206_000200_deleted", t(200)),
                v("x_20261206_000200_1", t(200)),
            ],
        };
        assert!(folder_at(Some(&back), &signs, t(150)));
        assert!(!folder_at(Some(&back), &signs, t(200)));
        // Deleted, and back: only from when something shows it back.
        let gone = History {
            name: b"x".to_vec(),
            versions: vec![v("x_20261206_000300_deleted", t(300))],
        };
        assert!(folder_at(Some(&gone), &signs, t(299)));
        assert!(!folder_at(Some(&gone), &signs, t(400)));
        let refilled = FolderSigns {
            newest: Some(t(350)),
            ..signs
        };
        assert!(!folder_at(Some(&gone), &refilled, t(340)));
        assert!(folder_at(Some(&gone), &refilled, t(400)));
        let remade = FolderSigns {
            modified: t(360),
            ..signs
        };
        assert!(folder_at(Some(&gone), &remade, t(360)));
        // Without birth times, the source folder's time shows it.
        let unborn = FolderSigns {
            born: None,
            modified: t(50),
            newest: None,
        };
        assert!(folder_at(None, &unborn, t(60)));
        assert!(!folder_at(None, &unborn, t(40)));
    }
}
