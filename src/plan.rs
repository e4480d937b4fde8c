//! Decide, before doing: what a pass does with one source entry, from what is known of it and of
//! its family in the destination. Pure; the engine gathers the facts and carries out the
//! decision, and `--dry-run` prints the decisions and carries out none.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, SystemTime};

use crate::dest::Capabilities;
use crate::error::Failure;
use crate::meta::{Kind, Meta, Time};
use crate::naming::{FolderIndex, fold_case};
use crate::outcome::{Change, Refreshed};
use crate::settle::unsettled_for;

/// What is known of one source entry and its newest copy when the decision is made.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// The source entry, from `lstat`.
    pub src: Meta,
    /// The newest member of its family in DST, if there is one.
    pub latest: Option<Meta>,
    /// For a symlink: its target, and the newest copy's target when that is a symlink too.
    pub link: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// With `--checksum`, once compared: whether the newest copy holds the same bytes.
    pub same_contents: Option<bool>,
    /// On a destination that does not tell case apart: the other source name that takes this
    /// one's place there (`case_clashes`).
    pub clash: Option<Vec<u8>>,
    /// Once compared: whether the extended attributes of the file and its newest copy differ.
    pub xattrs_differ: Option<bool>,
    /// A SQLite database in use: the newest modification time of its `-wal` or `-journal`,
    /// where its latest commits may be while its own file's time stands still.
    pub database: Option<Time>,
}

/// How decisions are made in this run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules<'a> {
    /// Compare contents, not size and time.
    pub checksum: bool,
    /// In `watch`, a file modified less than this long ago is left to settle.
    pub defer: Option<Duration>,
    /// What the destination can hold.
    pub dest: &'a Capabilities,
}

/// When the decision is made: the clock, and the same moment as a local version stamp.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub time: SystemTime,
    pub stamp: u64,
}

/// What to do with one entry.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Its newest copy is current.
    Unchanged,
    /// Copy it under `to`, the next free name of its family.
    Copy {
        to: Vec<u8>,
        change: Change,
    },
    /// Same size, `--checksum`: compare the contents, then decide again.
    CompareContents,
    /// The contents are current but the metadata may not be (the file's change time is after
    /// its copy's): compare the extended attributes, then decide again.
    CompareXattrs,
    /// The newest copy holds the contents; what changed of its mode, owner, extended
    /// attributes or times is set again from the source, in place (nothing is overwritten: the
    /// bytes stay as they are).
    Refresh(Refreshed),
    /// Modified this long ago, too recently: copy it once it has settled.
    Defer(Duration),
    /// Never opened: FIFOs block on open, devices and sockets have no contents to back up.
    Skip(&'static str),
    /// A folder: the walk handles it.
    Walk,
    Fail(Failure),
}

/// Decides what to do with the entry `name`, given the facts, the family names in `index`, the
/// run's rules and the time.
pub(crate) fn decide(
    name: &[u8],
    facts: &Facts,
    index: &FolderIndex,
    rules: &Rules,
    now: Now,
) -> Decision {
    if let Some(decision) = cannot_hold(name, facts, rules.dest) {
        return decision;
    }
    let change = match facts.src.kind {
        Kind::Dir => return Decision::Walk,
        Kind::Symlink => match (&facts.link, &facts.latest) {
            (Some((target, Some(copy))), Some(latest))
                if latest.kind == Kind::Symlink && target == copy =>
            {
                return Decision::Unchanged;
            }
            (_, Some(_)) => Change::Changed,
            (_, None) => Change::New,
        },
        Kind::File => {
            if let Some(age) = rules
                .defer
                .and_then(|w| unsettled_for(facts.src.mtime, now.time, w))
            {
                return Decision::Defer(age);
            }
            match compare(facts, rules) {
                Ok(change) => change,
                Err(decision) => return decision,
            }
        }
        other => return Decision::Skip(other.describe()),
    };
    match index.target(name, now.stamp) {
        Some(to) => Decision::Copy { to, change },
        None => Decision::Fail(Failure::NameTooLong),
    }
}

/// What the destination cannot hold at all: a folder is walked, a special file skipped, a
/// symlink skipped where it has none, and a name it refuses, a name it would merge with another,
/// or a file over its size limit fails before anything is written.
fn cannot_hold(name: &[u8], facts: &Facts, dest: &Capabilities) -> Option<Decision> {
    let kind = facts.src.kind;
    match kind {
        Kind::Dir => return Some(Decision::Walk),
        Kind::File | Kind::Symlink => {}
        other => return Some(Decision::Skip(other.describe())),
    }
    if kind == Kind::Symlink && !dest.symlinks {
        return Some(Decision::Skip(
            "symlink: the destination cannot hold symlinks",
        ));
    }
    let fail = |f| Some(Decision::Fail(f));
    let fs = || dest.kind.clone();
    if let Some(why) = dest.refuses.iter().find(|r| r.matches(name)) {
        return fail(Failure::NameRefused {
            fs: fs(),
            why: why.to_string(),
        });
    }
    if let Some(other) = &facts.clash {
        return fail(Failure::CaseClash {
            fs: fs(),
            other: other.clone(),
        });
    }
    match dest.max_file_size {
        Some(limit) if kind == Kind::File && facts.src.size > limit => fail(Failure::TooLarge {
            fs: fs(),
            size: facts.src.size,
            limit,
        }),
        _ => None,
    }
}

/// On a destination that does not tell case apart: each name among `names` (one folder's
/// entries) whose place there another name takes, the first of them in byte order, with that
/// name. That first one is backed up; the others fail, every run, and are never mixed into its
/// family.
pub(crate) fn case_clashes<'a>(
    names: impl IntoIterator<Item = &'a [u8]>,
) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut sorted: Vec<&[u8]> = names.into_iter().collect();
    sorted.sort_unstable();
    let mut first: HashMap<Vec<u8>, &[u8]> = HashMap::new();
    let mut out = HashMap::new();
    for name in sorted {
        match first.entry(fold_case(name)) {
            Entry::Occupied(e) => {
                out.insert(name.to_vec(), e.get().to_vec());
            }
            Entry::Vacant(e) => {
                e.insert(name);
            }
        }
    }
    out
}

/// Entries that drives and operating systems put on a destination by themselves: never taken
/// for files deleted from SRC.
const LITTER: [&[u8]; 5] = [
    b"lost+found",
    b"System Volume Information",
    b"$RECYCLE.BIN",
    b".Spotlight-V100",
    b".fseventsd",
];

/// The families in a destination folder whose file (or folder) is no longer in SRC, and whose
/// deletion is not recorded yet: each gets a record of its deletion. `only` limits this to the
/// names that `watch` saw change; `src` are the folder's names in SRC.
pub(crate) fn gone(
    index: &FolderIndex,
    src: &std::collections::HashSet<Vec<u8>>,
    only: Option<&std::collections::HashSet<Vec<u8>>>,
    case_sensitive: bool,
) -> Vec<Vec<u8>> {
    absent(index, src, only, case_sensitive, false)
}

/// The families in a destination folder whose name is no longer in SRC and whose newest member
/// records a deletion: where DST holds a folder of that name, it may still stand (see
/// `engine::shape`). `only` and `src` as for `gone`.
pub(crate) fn gone_after_deletion(
    index: &FolderIndex,
    src: &std::collections::HashSet<Vec<u8>>,
    only: Option<&std::collections::HashSet<Vec<u8>>>,
    case_sensitive: bool,
) -> Vec<Vec<u8>> {
    absent(index, src, only, case_sensitive, true)
}

/// The families absent from SRC (but for our temporary files and what drives put there by
/// themselves) whose newest member records a deletion (`recorded`) or does not.
fn absent(
    index: &FolderIndex,
    src: &std::collections::HashSet<Vec<u8>>,
    only: Option<&std::collections::HashSet<Vec<u8>>>,
    case_sensitive: bool,
    recorded: bool,
) -> Vec<Vec<u8>> {
    let folded: std::collections::HashSet<Vec<u8>> = if case_sensitive {
        Default::default()
    } else {
        src.iter().map(|n| fold_case(n)).collect()
    };
    let in_src = |name: &[u8]| {
        if case_sensitive {
            src.contains(name)
        } else {
            folded.contains(&fold_case(name))
        }
    };
    let candidates: Vec<Vec<u8>> = match only {
        Some(names) => names.iter().filter(|n| !in_src(n)).cloned().collect(),
        None => index.absent_families(in_src),
    };
    candidates
        .into_iter()
        .filter(|name| {
            !crate::dest::is_temp_name(name)
                && !name.starts_with(b".Trash-")
                && !LITTER.contains(&name.as_slice())
                && index
                    .latest(name)
                    .is_some_and(|m| m.key.is_some_and(|k| k.deleted) == recorded)
        })
        .collect()
}

/// A regular file against its newest copy: why it must be copied, or the decision that it need
/// not be (or cannot be told yet).
fn compare(facts: &Facts, rules: &Rules) -> Result<Change, Decision> {
    let Some(latest) = &facts.latest else {
        return Ok(Change::New);
    };
    if let Some(companion) = facts.database {
        // A database's copy holds its state as of its newest change, in any of its files; its
        // size is the copy's own (a consistent copy is not the file as it is on disk).
        let changed = facts.src.mtime.max(companion);
        let dest = rules.dest;
        return if latest.kind == Kind::File
            && same_time(changed, latest.mtime, dest.precision, dest.local_time)
        {
            Err(metadata(facts, latest, rules.dest, false))
        } else {
            Ok(Change::Changed)
        };
    }
    let same_meta = unchanged(&facts.src, latest, rules.dest);
    let same_size = latest.kind == Kind::File && latest.size == facts.src.size;
    if !rules.checksum {
        if same_meta {
            return Err(metadata(facts, latest, rules.dest, false));
        }
        // Same size, another time: a touch, a checkout, git freshening an object. The bytes
        // are compared before a whole copy of identical ones is made; equal, the newest copy
        // takes the new time in place (where a copy's metadata can change at all).
        if same_size && rules.dest.refresh {
            return match facts.same_contents {
                None => Err(Decision::CompareContents),
                Some(true) => Err(metadata(facts, latest, rules.dest, true)),
                Some(false) => Ok(Change::Changed),
            };
        }
        return Ok(Change::Changed);
    }
    if !same_size {
        return Ok(Change::Changed);
    }
    match facts.same_contents {
        None => Err(Decision::CompareContents),
        Some(true) => Err(metadata(
            facts,
            latest,
            rules.dest,
            !same_meta && rules.dest.refresh,
        )),
        Some(false) if same_meta => Ok(Change::Contents),
        Some(false) => Ok(Change::Changed),
    }
}

/// For a file whose newest copy holds its contents: whether that copy's own mode, owner and
/// extended attributes still are the source's, as far as the destination keeps them, and
/// whether its time must follow (`retime`: the same bytes under a new time). Extended
/// attributes are only looked at when the file's change time is after its copy's (a chmod,
/// chown or setfattr since), so that a pass with nothing changed reads none.
fn metadata(facts: &Facts, latest: &Meta, dest: &Capabilities, retime: bool) -> Decision {
    let src = &facts.src;
    let what = Refreshed {
        mode: dest.permissions && dest.refresh && src.mode != latest.mode,
        owner: dest.owners && (src.uid, src.gid) != (latest.uid, latest.gid),
        xattrs: facts.xattrs_differ == Some(true),
        time: retime,
    };
    if what.any() {
        return Decision::Refresh(what);
    }
    if dest.xattrs && facts.xattrs_differ.is_none() && src.ctime > latest.ctime {
        return Decision::CompareXattrs;
    }
    Decision::Unchanged
}

/// Whether the destination's modification time `dst` records the source's `src` on a
/// destination that keeps times to `precision` nanoseconds (where probed), in local time
/// (`local_time`: FAT and exFAT, whose times all move by an hour when daylight saving starts or
/// ends) or not.
pub(crate) fn same_time(src: Time, dst: Time, precision: Option<u64>, local_time: bool) -> bool {
    const HOUR: i64 = 3600;
    let shifted = |by: i64| Time {
        sec: src.sec + by,
        nsec: src.nsec,
    };
    same_mtime(src, dst, precision)
        || (local_time
            && (same_mtime(shifted(HOUR), dst, precision)
                || same_mtime(shifted(-HOUR), dst, precision)))
}

/// Whether the destination's modification time `dst` records the source's `src`: to the
/// resolution the destination was found to keep (`precision`, in nanoseconds), and in any case
/// where `dst` is `src` cut to whole microseconds, milliseconds or seconds, or FAT's two seconds
/// rounded up (destinations written by other tools, or not probed).
fn same_mtime(src: Time, dst: Time, precision: Option<u64>) -> bool {
    if src == dst {
        return true;
    }
    if precision.is_some_and(|p| crate::meta::kept_at(src, dst, p)) {
        return true;
    }
    let truncated = |unit: u32| {
        dst.nsec.is_multiple_of(unit) && src.sec == dst.sec && src.nsec / unit * unit == dst.nsec
    };
    if truncated(1_000) || truncated(1_000_000) || truncated(1_000_000_000) {
        return true;
    }
    dst.nsec == 0 && dst.sec % 2 == 0 && src.sec == dst.sec - 1
}

/// Whether `dst` (the newest copy) is a current copy of the regular file `src` on the
/// destination `dest`: same size and modification time.
pub(crate) fn unchanged(src: &Meta, dst: &Meta, dest: &Capabilities) -> bool {
    dst.kind == Kind::File
        && src.size == dst.size
        && same_time(src.mtime, dst.mtime, dest.precision, dest.local_time)
}

/// Whether the source changed between the `fstat` before and after reading it, or did not
/// yield the bytes it claimed: then the copy may mix two states and must not be published.
pub(crate) fn changed_while_read(before: &Meta, after: &Meta, copied: u64) -> bool {
    before.size != after.size
        || before.mtime != after.mtime
        || before.ctime != after.ctime
        || before.ino != after.ino
        || before.dev != after.dev
        || copied != before.size
}

/// Waits between attempts to copy a file that changed while it was read; its length is the
/// number of retries.
pub(crate) const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(400),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::Refusal;
    use std::collections::HashSet;
    use std::sync::LazyLock;

    /// A destination like ext4: everything kept, to the nanosecond.
    static CAPS: LazyLock<Capabilities> = LazyLock::new(|| {
        let mut c = Capabilities::assumed("ext4".into());
        c.probed = true;
        c.precision = Some(1);
        c
    });

    fn rules() -> Rules<'static> {
        Rules {
            checksum: false,
            defer: None,
            dest: &CAPS,
        }
    }

    fn t(sec: i64, nsec: u32) -> Time {
        Time { sec, nsec }
    }

    fn file(size: u64, mtime: Time) -> Meta {
        Meta {
            kind: Kind::File,
            size,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: mtime,
            mtime,
            ctime: mtime,
            dev: 1,
            ino: 1,
        }
    }

    const STAMP: u64 = 20261126153045;

    fn now() -> Now {
        Now {
            time: std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            stamp: STAMP,
        }
    }

    fn index(names: &[&str]) -> FolderIndex {
        FolderIndex::new(names.iter().map(|n| n.as_bytes().to_vec()), &HashSet::new())
    }

    fn decide_file(facts: &Facts, rules: &Rules) -> Decision {
        decide(b"a.txt", facts, &index(&["a.txt"]), rules, now())
    }

    #[test]
    fn mtime_precision() {
        let src = t(1000, 123_456_789);
        assert!(same_mtime(src, src, None));
        assert!(same_mtime(src, t(1000, 123_456_000), None), "microseconds");
        assert!(same_mtime(src, t(1000, 123_000_000), None), "milliseconds");
        assert!(same_mtime(src, t(1000, 0), None), "seconds");
        assert!(same_mtime(t(999, 5), t(1000, 0), None), "FAT rounds up");
        assert!(!same_mtime(src, t(1000, 123_456_788), None));
        assert!(!same_mtime(src, t(1001, 123_456_789), None));
        assert!(
            !same_mtime(src, t(1000, 123_457_000), None),
            "not a truncation"
        );
        assert!(!same_mtime(t(1000, 5), t(1000, 6), None));
        // NTFS keeps 100 ns steps: only the probed precision explains this one.
        assert!(!same_mtime(src, t(1000, 123_456_700), None));
        assert!(same_mtime(src, t(1000, 123_456_700), Some(100)));
        assert!(
            !same_mtime(src, t(1000, 123_456_800), Some(100)),
            "only FAT rounds up"
        );
        assert!(!same_mtime(src, t(1000, 123_456_600), Some(100)));
        assert!(
            same_mtime(src, t(1000, 120_000_000), Some(10_000_000)),
            "exFAT"
        );
    }

    #[test]
    fn unchanged_needs_a_regular_file_of_same_size_and_time() {
        let src = file(10, t(5, 5));
        assert!(unchanged(&src, &src, &CAPS));
        assert!(!unchanged(&src, &file(11, t(5, 5)), &CAPS));
        assert!(!unchanged(&src, &file(10, t(5, 6)), &CAPS));
        let mut link = src;
        link.kind = Kind::Symlink;
        assert!(!unchanged(&src, &link, &CAPS));
    }

    #[test]
    fn a_torn_read_is_detected() {
        let before = file(10, t(5, 5));
        assert!(!changed_while_read(&before, &before, 10));
        assert!(changed_while_read(&before, &before, 9), "short read");
        assert!(changed_while_read(&before, &file(12, t(5, 5)), 10), "grew");
        assert!(
            changed_while_read(&before, &file(10, t(6, 0)), 10),
            "rewritten in place"
        );
        let mut replaced = before;
        replaced.ino = 2;
        assert!(changed_while_read(&before, &replaced, 10));
        let mut touched = before;
        touched.ctime = t(9, 9);
        assert!(changed_while_read(&before, &touched, 10));
    }

    #[test]
    fn special_files_are_skipped_and_folders_walked() {
        let mut facts = Facts::default();
        for (kind, word) in [
            (Kind::Fifo, "fifo"),
            (Kind::Socket, "socket"),
            (Kind::CharDevice, "character device"),
        ] {
            facts.src.kind = kind;
            assert!(matches!(decide_file(&facts, &rules()), Decision::Skip(w) if w == word));
        }
        facts.src.kind = Kind::Dir;
        assert!(matches!(decide_file(&facts, &rules()), Decision::Walk));
    }

    #[test]
    fn a_new_file_takes_its_plain_name_and_a_changed_one_the_next_version() {
        let facts = Facts {
            src: file(3, t(5, 5)),
            ..Facts::default()
        };
        match decide(b"a.txt", &facts, &index(&[]), &rules(), now()) {
            Decision::Copy { to, change } => {
                assert_eq!(to, b"a.txt");
                assert_eq!(change, Change::New);
            }
            d => panic!("{d:?}"),
        }
        let facts = Facts {
            src: file(3, t(5, 5)),
            latest: Some(file(4, t(5, 5))),
            ..Facts::default()
        };
        match decide_file(&facts, &rules()) {
            Decision::Copy { to, change } => {
                assert_eq!(to, b"a_20261126_153045.txt");
                assert_eq!(change, Change::Changed);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn an_unchanged_file_stays_and_checksum_asks_for_contents() {
        let same = Facts {
            src: file(3, t(5, 5)),
            latest: Some(file(3, t(5, 5))),
            ..Facts::default()
        };
        assert!(matches!(decide_file(&same, &rules()), Decision::Unchanged));
        let checksum = Rules {
            checksum: true,
            ..rules()
        };
        assert!(matches!(
            decide_file(&same, &checksum),
            Decision::CompareContents
        ));
        let compared = Facts {
            same_contents: Some(false),
            ..same
        };
        assert!(matches!(
            decide_file(&compared, &checksum),
            Decision::Copy {
                change: Change::Contents,
                ..
            }
        ));
        let equal = Facts {
            src: file(3, t(5, 5)),
            latest: Some(file(3, t(9, 9))),
            same_contents: Some(true),
            ..Facts::default()
        };
        // Equal bytes under another time: the copy takes the time, no new version.
        assert!(matches!(
            decide_file(&equal, &checksum),
            Decision::Refresh(Refreshed { time: true, .. })
        ));
    }

    #[test]
    fn a_file_still_being_written_is_deferred() {
        let fresh = now().time - Duration::from_millis(300);
        let since = fresh
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch");
        let facts = Facts {
            src: file(3, t(since.as_secs() as i64, since.subsec_nanos())),
            ..Facts::default()
        };
        let deferring = Rules {
            defer: Some(Duration::from_secs(1)),
            ..rules()
        };
        assert!(
            matches!(decide_file(&facts, &deferring), Decision::Defer(d) if d == Duration::from_millis(300))
        );
        assert!(matches!(
            decide_file(&facts, &rules()),
            Decision::Copy { .. }
        ));
    }

    #[test]
    fn a_symlink_is_unchanged_only_when_its_copy_points_the_same_way() {
        let mut link = file(1, t(5, 5));
        link.kind = Kind::Symlink;
        let facts = |copy: Option<&str>| Facts {
            src: link,
            latest: Some(link),
            link: Some((b"target".to_vec(), copy.map(|c| c.as_bytes().to_vec()))),
            ..Facts::default()
        };
        assert!(matches!(
            decide_file(&facts(Some("target")), &rules()),
            Decision::Unchanged
        ));
        assert!(matches!(
            decide_file(&facts(Some("elsewhere")), &rules()),
            Decision::Copy {
                change: Change::Changed,
                ..
            }
        ));
    }

    #[test]
    fn a_name_with_no_room_for_a_stamp_fails() {
        let long = format!("{}.txt", "n".repeat(251));
        let facts = Facts {
            src: file(3, t(5, 5)),
            latest: Some(file(4, t(5, 5))),
            ..Facts::default()
        };
        let idx = index(&[long.as_str()]);
        let d = decide(long.as_bytes(), &facts, &idx, &rules(), now());
        // A long name is shortened to fit; only a name that is all extension cannot be.
        assert!(matches!(d, Decision::Copy { .. }), "{d:?}");
        let ext = format!("a.{}", "e".repeat(252));
        let idx = index(&[ext.as_str()]);
        let d = decide(ext.as_bytes(), &facts, &idx, &rules(), now());
        assert!(matches!(d, Decision::Fail(Failure::NameTooLong)), "{d:?}");
    }

    #[test]
    fn fat_times_an_hour_off_are_unchanged_elsewhere_not() {
        let src = t(1_700_000_001, 500_000_000);
        let an_hour_later = t(1_700_003_600, 0);
        assert!(same_time(src, an_hour_later, Some(2_000_000_000), true));
        assert!(same_time(
            src,
            t(1_699_996_400, 0),
            Some(2_000_000_000),
            true
        ));
        assert!(!same_time(src, an_hour_later, Some(2_000_000_000), false));
        assert!(!same_time(
            src,
            t(1_700_003_604, 0),
            Some(2_000_000_000),
            true
        ));
    }

    #[test]
    fn what_the_destination_cannot_hold_is_decided_before_anything_is_written() {
        let mut fat = Capabilities::assumed("vfat".into());
        fat.symlinks = false;
        fat.refuses = vec![Refusal::Char(':'), Refusal::NonAscii];
        fat.max_file_size = Some(crate::dest::FAT_MAX_FILE);
        let on_fat = Rules {
            dest: &fat,
            ..rules()
        };
        let mut link = file(1, t(5, 5));
        link.kind = Kind::Symlink;
        let facts = Facts {
            src: link,
            ..Facts::default()
        };
        assert!(matches!(
            decide(b"l", &facts, &index(&[]), &on_fat, now()),
            Decision::Skip("symlink: the destination cannot hold symlinks")
        ));
        let small = Facts {
            src: file(3, t(5, 5)),
            ..Facts::default()
        };
        let d = decide(b"a:b.txt", &small, &index(&[]), &on_fat, now());
        assert_eq!(
            match d {
                Decision::Fail(f) => f.to_string(),
                d => format!("{d:?}"),
            },
            "the destination (vfat) cannot hold this name (':' not allowed)"
        );
        let big = Facts {
            src: file(4_500 << 20, t(5, 5)),
            ..Facts::default()
        };
        assert!(matches!(
            decide(b"disk.img", &big, &index(&[]), &on_fat, now()),
            Decision::Fail(Failure::TooLarge { .. })
        ));
        let clash = Facts {
            clash: Some(b"README.md".to_vec()),
            ..small
        };
        let d = decide(b"Readme.md", &clash, &index(&[]), &on_fat, now());
        assert!(
            matches!(&d, Decision::Fail(Failure::CaseClash { other, .. }) if other == b"README.md"),
            "{d:?}"
        );
    }

    #[test]
    fn the_first_name_in_byte_order_keeps_its_place() {
        let names: [&[u8]; 4] = [b"Readme.md", b"README.md", b"readme.MD", b"other"];
        let clashes = case_clashes(names);
        assert_eq!(clashes.len(), 2);
        assert_eq!(clashes[&b"Readme.md".to_vec()], b"README.md");
        assert_eq!(clashes[&b"readme.MD".to_vec()], b"README.md");
    }

    #[test]
    fn a_metadata_change_alone_refreshes_the_copy_and_costs_nothing_otherwise() {
        let copy = file(3, t(5, 5));
        let mut chmodded = file(3, t(5, 5));
        chmodded.mode = 0o755;
        let facts = |src: Meta, xattrs_differ| Facts {
            src,
            latest: Some(copy),
            xattrs_differ,
            ..Facts::default()
        };
        assert!(matches!(
            decide_file(&facts(chmodded, None), &rules()),
            Decision::Refresh(Refreshed {
                mode: true,
                time: false,
                ..
            })
        ));
        // Same mode and owner: attributes are only looked at when the file changed since.
        let mut touched = file(3, t(5, 5));
        touched.ctime = t(9, 0);
        assert!(matches!(
            decide_file(&facts(touched, None), &rules()),
            Decision::CompareXattrs
        ));
        assert!(matches!(
            decide_file(&facts(touched, Some(true)), &rules()),
            Decision::Refresh(Refreshed { xattrs: true, .. })
        ));
        assert!(matches!(
            decide_file(&facts(touched, Some(false)), &rules()),
            Decision::Unchanged
        ));
        assert!(matches!(
            decide_file(&facts(copy, None), &rules()),
            Decision::Unchanged
        ));
        // Where permissions are not kept, a mode never differs.
        let mut fat = Capabilities::assumed("vfat".into());
        fat.permissions = false;
        fat.xattrs = false;
        let on_fat = Rules {
            dest: &fat,
            ..rules()
        };
        assert!(matches!(
            decide_file(&facts(chmodded, None), &on_fat),
            Decision::Unchanged
        ));
    }

    #[test]
    fn a_new_time_on_the_same_bytes_is_compared_before_anything_is_copied() {
        let copy = file(3, t(5, 5));
        let touched = file(3, t(9, 0));
        let facts = |same| Facts {
            src: touched,
            latest: Some(copy),
            same_contents: same,
            ..Facts::default()
        };
        assert!(matches!(
            decide_file(&facts(None), &rules()),
            Decision::CompareContents
        ));
        assert!(matches!(
            decide_file(&facts(Some(true)), &rules()),
            Decision::Refresh(Refreshed {
                time: true,
                mode: false,
                ..
            })
        ));
        assert!(matches!(
            decide_file(&facts(Some(false)), &rules()),
            Decision::Copy {
                change: Change::Changed,
                ..
            }
        ));
        // Another size is another file: no reading.
        let grown = Facts {
            src: file(4, t(9, 0)),
            latest: Some(copy),
            ..Facts::default()
        };
        assert!(matches!(
            decide_file(&grown, &rules()),
            Decision::Copy { .. }
        ));
        // Where a copy's metadata cannot change (a bucket), comparing would buy nothing.
        let mut store = CAPS.clone();
        store.refresh = false;
        let on_store = Rules {
            dest: &store,
            ..rules()
        };
        assert!(matches!(
            decide_file(&facts(None), &on_store),
            Decision::Copy { .. }
        ));
    }
}
