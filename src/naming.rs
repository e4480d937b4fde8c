//! The naming rule (docs/DESIGN.md, "The naming rule"), as pure functions over byte strings.
//!
//! A source file `NAME` = `STEM[.EXT]` owns, in its destination folder, the *family* `NAME` plus
//! every `STEM_YYYYMMDD_HHMMSS[_N][.EXT]`. Everything the tool knows about history it reads back
//! from these names, so the functions that write them and the ones that parse them live together
//! and are tested against each other.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The longest file name that Linux filesystems accept.
pub(crate) const NAME_MAX: usize = 255;

/// A version's place in its family: the capture time written in its name, then the same-second
/// counter. The plain `NAME` has no key and sorts before every version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct VersionKey {
    /// `YYYYMMDDHHMMSS` as a number, so that numeric order is time order.
    pub(crate) stamp: u64,
    /// `_N` suffix; 0 when absent.
    pub(crate) counter: u32,
    /// `_deleted` suffix: not a copy but the record that the file (or folder) was deleted or
    /// renamed away in SRC at this time; an empty file.
    pub(crate) deleted: bool,
}

impl VersionKey {
    /// The key a new version takes when copied at `now`, given the family's latest version.
    /// Names only ever increase: when the clock stands still or went back, the latest's stamp is
    /// reused with the next counter.
    pub(crate) fn next(latest: Option<VersionKey>, now: u64) -> VersionKey {
        match latest {
            Some(l) if now <= l.stamp => VersionKey {
                stamp: l.stamp,
                counter: l.counter + 1,
                deleted: false,
            },
            _ => VersionKey {
                stamp: now,
                counter: 0,
                deleted: false,
            },
        }
    }

    /// The key after this one within the same second.
    pub(crate) fn bump(self) -> VersionKey {
        VersionKey {
            stamp: self.stamp,
            counter: self.counter + 1,
            deleted: self.deleted,
        }
    }

    /// The same place, as a deletion record.
    pub(crate) fn as_deleted(self) -> VersionKey {
        VersionKey {
            deleted: true,
            ..self
        }
    }

    /// `_YYYYMMDD_HHMMSS[_N][_deleted]`, the part of a version name between stem and extension.
    fn suffix(self) -> String {
        let date = self.stamp / 1_000_000;
        let time = self.stamp % 1_000_000;
        let mut out = if self.counter == 0 {
            format!("_{date:08}_{time:06}")
        } else {
            format!("_{date:08}_{time:06}_{}", self.counter)
        };
        if self.deleted {
            out.push_str(DELETED);
        }
        out
    }
}

/// The stamp of a local date and time.
pub(crate) fn stamp_of(t: &chrono::NaiveDateTime) -> u64 {
    use chrono::{Datelike, Timelike};
    stamp(
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second().min(59),
    )
}

/// The local stamp of a point in time.
pub(crate) fn stamp_at(t: crate::meta::Time) -> u64 {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(t.sec, t.nsec)
        .earliest()
        .map_or(0, |d| stamp_of(&d.naive_local()))
}

/// The local date and time a stamp stands for (`None` for an impossible date).
pub(crate) fn naive_of(stamp: u64) -> Option<chrono::NaiveDateTime> {
    let (date, time) = (stamp / 1_000_000, stamp % 1_000_000);
    let d = chrono::NaiveDate::from_ymd_opt(
        (date / 10_000) as i32,
        (date / 100 % 100) as u32,
        (date % 100) as u32,
    )?;
    d.and_hms_opt(
        (time / 10_000) as u32,
        (time / 100 % 100) as u32,
        (time % 100).min(59) as u32,
    )
}

/// Builds a stamp from calendar fields; used for the local time of a copy.
pub(crate) fn stamp(year: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> u64 {
    let year = year.clamp(0, 9999) as u64;
    ((year * 100 + u64::from(month)) * 100 + u64::from(day)) * 1_000_000
        + (u64::from(hour) * 100 + u64::from(min)) * 100
        + u64::from(sec)
}

/// Splits a file name the way `Path::file_stem` / `Path::extension` do: at the last dot, unless
/// that dot is the first byte (`.bashrc` has no extension).
pub(crate) fn split(name: &[u8]) -> (&[u8], Option<&[u8]>) {
    if name == b".." {
        return (name, None);
    }
    match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => (name, None),
        Some(i) => (&name[..i], Some(&name[i + 1..])),
    }
}

fn join(stem: &[u8], suffix: &[u8], ext: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(stem.len() + suffix.len() + ext.map_or(0, |e| e.len() + 1));
    out.extend_from_slice(stem);
    out.extend_from_slice(suffix);
    if let Some(ext) = ext {
        out.push(b'.');
        out.extend_from_slice(ext);
    }
    out
}

/// The longest prefix of `bytes` no longer than `max` that does not end inside a UTF-8 sequence.
/// Bytes that are not valid UTF-8 count as one character each.
fn cut_at_char(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = 0;
    let mut pos = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let next = pos + c.len_utf8();
            if next > max {
                return &bytes[..end];
            }
            pos = next;
            end = pos;
        }
        for _ in chunk.invalid() {
            if pos + 1 > max {
                return &bytes[..end];
            }
            pos += 1;
            end = pos;
        }
    }
    &bytes[..end]
}

/// The name of version `key` of `name`, shortened to fit `NAME_MAX` by cutting the stem.
/// `None` when not even one character of the stem fits (an extension of ~230 bytes).
pub(crate) fn version_name(name: &[u8], key: VersionKey) -> Option<Vec<u8>> {
    let (stem, ext) = split(name);
    let suffix = key.suffix();
    let fixed = suffix.len() + ext.map_or(0, |e| e.len() + 1);
    let room = NAME_MAX.checked_sub(fixed)?;
    let stem = cut_at_char(stem, room);
    if stem.is_empty() {
        return None;
    }
    Some(join(stem, suffix.as_bytes(), ext))
}

/// The suffix that marks a deletion record: `report_20261129_153045_deleted.txt`.
const DELETED: &str = "_deleted";

/// Reads `_YYYYMMDD_HHMMSS[_N][_deleted]` off the end of a stem: the stem's own part and the key.
fn parse_suffix(stem: &[u8]) -> Option<(&[u8], VersionKey)> {
    match stem.strip_suffix(DELETED.as_bytes()) {
        Some(rest) => parse_stamp(rest).map(|(base, key)| (base, key.as_deleted())),
        None => parse_stamp(stem),
    }
}

/// Reads `_YYYYMMDD_HHMMSS[_N]` off the end of a stem.
fn parse_stamp(stem: &[u8]) -> Option<(&[u8], VersionKey)> {
    fn digits(b: &[u8]) -> Option<u64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    }
    // Try with a counter first, then without: `x_20230101_120000_3` is counter 3.
    let (base, counter) = match stem.iter().rposition(|&b| b == b'_') {
        Some(i) if i + 1 < stem.len() && stem[i + 1] != b'0' && stem.len() - i - 1 <= 9 => {
            match digits(&stem[i + 1..]) {
                Some(n) if looks_stamped(&stem[..i]) => (&stem[..i], n as u32),
                _ => (stem, 0),
            }
        }
        _ => (stem, 0),
    };
    if !looks_stamped(base) {
        return None;
    }
    let cut = base.len() - 16;
    let date = digits(&base[cut + 1..cut + 9])?;
    let time = digits(&base[cut + 10..])?;
    Some((
        &base[..cut],
        VersionKey {
            stamp: date * 1_000_000 + time,
            counter,
            deleted: false,
        },
    ))
}

/// Whether `stem` ends in `_YYYYMMDD_HHMMSS` with a plausible date and time, after at least one
/// byte of the original stem.
fn looks_stamped(stem: &[u8]) -> bool {
    if stem.len() < 17 {
        return false;
    }
    let t = &stem[stem.len() - 16..];
    if t[0] != b'_' || t[9] != b'_' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = &t[r];
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    matches!(
        (
            num(5..7),
            num(7..9),
            num(10..12),
            num(12..14),
            num(14..16),
            num(1..5)
        ),
        (
            Some(1..=12),
            Some(1..=31),
            Some(0..=23),
            Some(0..=59),
            Some(0..=60),
            Some(_)
        )
    )
}

/// If `candidate` is a version of `name` (not `name` itself), its key.
///
/// Exact: the stem before the stamp must be the stem of `name`, or, for names that had to be
/// shortened, precisely the cut that `version_name` would make for that suffix.
pub(crate) fn version_of(name: &[u8], candidate: &[u8]) -> Option<VersionKey> {
    let (cstem, cext) = split(candidate);
    let (stem, ext) = split(name);
    if cext != ext {
        return None;
    }
    let (base, key) = parse_suffix(cstem)?;
    if base == stem {
        return Some(key);
    }
    if candidate.len() + 4 > NAME_MAX && stem.len() > base.len() {
        let expected = version_name(name, key)?;
        if expected == candidate {
            return Some(key);
        }
    }
    None
}

/// What a version-shaped destination name would be the version of, if it was not shortened.
pub(crate) fn original_name(candidate: &[u8]) -> Option<(Vec<u8>, VersionKey)> {
    let (cstem, cext) = split(candidate);
    let (base, key) = parse_suffix(cstem)?;
    Some((join(base, b"", cext), key))
}

/// The names in one destination folder, indexed by the family they belong to.
#[derive(Debug, Default)]
pub(crate) struct FolderIndex {
    /// Compare names as a destination that does not tell case apart does (`fold_case`).
    fold: bool,
    /// Every name, as a key (folded when `fold`).
    names: HashSet<Vec<u8>>,
    /// With `fold`: each key and the name as the folder holds it.
    stored: HashMap<Vec<u8>, Vec<u8>>,
    /// Reconstructed original name, as a key → its versions.
    versions: HashMap<Vec<u8>, Vec<(VersionKey, Vec<u8>)>>,
    /// Version-shaped names long enough that they may be shortened versions of a longer name.
    long: Vec<Vec<u8>>,
}

/// One member of a family, as found in the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) name: Vec<u8>,
    /// `None` for the plain `NAME`.
    pub(crate) key: Option<VersionKey>,
}

/// `name` as a destination that does not tell upper and lower case apart compares it: each
/// character that has a one-character upper case replaced by it (as the upcase tables of NTFS
/// and exFAT do), bytes that are not UTF-8 as they are.
pub(crate) fn fold_case(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut upper = c.to_uppercase();
            let u = match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => c,
            };
            let mut buf = [0u8; 4];
            out.extend_from_slice(u.encode_utf8(&mut buf).as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

impl FolderIndex {
    /// `with_case` for a destination that tells case apart.
    #[cfg(test)]
    pub(crate) fn new<I>(listing: I, source_names: &HashSet<Vec<u8>>) -> FolderIndex
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        FolderIndex::with_case(listing, source_names, true)
    }

    /// Indexes a folder listing of a destination that tells case apart (`case_sensitive`) or
    /// not. Names listed in `source_names` are copies of source files of that very name, so they
    /// never count as versions of some other file.
    pub(crate) fn with_case<I>(
        listing: I,
        source_names: &HashSet<Vec<u8>>,
        case_sensitive: bool,
    ) -> FolderIndex
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        let mut index = FolderIndex {
            fold: !case_sensitive,
            ..FolderIndex::default()
        };
        for name in listing {
            if !source_names.contains(&name)
                && let Some((orig, key)) = original_name(&name)
            {
                if name.len() + 4 > NAME_MAX {
                    index.long.push(name.clone());
                }
                let orig = index.key(&orig).into_owned();
                index
                    .versions
                    .entry(orig)
                    .or_default()
                    .push((key, name.clone()));
            }
            index.insert(name);
        }
        index
    }

    fn key<'a>(&self, name: &'a [u8]) -> Cow<'a, [u8]> {
        if self.fold {
            Cow::Owned(fold_case(name))
        } else {
            Cow::Borrowed(name)
        }
    }

    /// Whether a name is taken, whatever its case where case is not told apart.
    fn taken(&self, name: &[u8]) -> bool {
        self.names.contains(self.key(name).as_ref())
    }

    /// Records a name that this pass has just published.
    pub(crate) fn insert(&mut self, name: Vec<u8>) {
        self.take(name);
    }

    /// Records `member`, just published into the family of `name`: the plain name, or one of
    /// its versions (or deletion records), so that the family knows it.
    pub(crate) fn record(&mut self, name: &[u8], member: Vec<u8>) {
        if member != name
            && let Some(key) = version_of(name, &member)
        {
            if member.len() + 4 > NAME_MAX {
                self.long.push(member.clone());
            }
            let family = self.key(name).into_owned();
            self.versions
                .entry(family)
                .or_default()
                .push((key, member.clone()));
        }
        self.take(member);
    }

    fn take(&mut self, name: Vec<u8>) {
        if self.fold {
            let key = fold_case(&name);
            self.names.insert(key.clone());
            self.stored.insert(key, name);
        } else {
            self.names.insert(name);
        }
    }

    /// Every member of `name`'s family, oldest first.
    pub(crate) fn family(&self, name: &[u8]) -> Vec<Member> {
        let key = self.key(name);
        let mut out: Vec<Member> = Vec::new();
        if self.names.contains(key.as_ref()) {
            let stored = self.stored.get(key.as_ref()).map_or(name, Vec::as_slice);
            out.push(Member {
                name: stored.to_vec(),
                key: None,
            });
        }
        if let Some(vs) = self.versions.get(key.as_ref()) {
            out.extend(
                vs.iter()
                    .filter(|(k, n)| version_of(&key, &self.key(n)) == Some(*k))
                    .map(|(k, n)| Member {
                        name: n.clone(),
                        key: Some(*k),
                    }),
            );
        }
        if !self.long.is_empty() && name.len() + 26 > NAME_MAX {
            for n in &self.long {
                if let Some(k) = version_of(&key, &self.key(n))
                    && !out.iter().any(|m| &m.name == n)
                {
                    out.push(Member {
                        name: n.clone(),
                        key: Some(k),
                    });
                }
            }
        }
        out.sort_by_key(|m| m.key);
        out
    }

    /// The families the folder holds something of whose file's name is not `present`: by the
    /// name as the folder holds it, else as its versions spell it. Costs no allocation for the
    /// families that are present, which on a pass with nothing deleted is all of them.
    pub(crate) fn absent_families(&self, present: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        for key in &self.names {
            let stored = self.stored.get(key).unwrap_or(key);
            if present(stored) || self.is_version(stored) {
                continue;
            }
            if seen.insert(key.clone()) {
                out.push(stored.clone());
            }
        }
        for (key, versions) in &self.versions {
            // A family known only from versions whose names may have been shortened cannot be
            // told by name: it is left out rather than guessed.
            let Some((_, first)) = versions.first().filter(|(_, n)| n.len() + 4 <= NAME_MAX) else {
                continue;
            };
            let Some((orig, _)) = original_name(first) else {
                continue;
            };
            if !present(&orig) && seen.insert(key.clone()) {
                out.push(orig);
            }
        }
        out
    }

    /// Whether `name` is filed as a version (or deletion record) of some family here. A
    /// version-shaped name long enough to have been shortened is taken for one: its family
    /// cannot be told by its name.
    fn is_version(&self, name: &[u8]) -> bool {
        original_name(name).is_some_and(|(orig, _)| {
            name.len() + 4 > NAME_MAX
                || self
                    .versions
                    .get(self.key(&orig).as_ref())
                    .is_some_and(|vs| vs.iter().any(|(_, n)| n == name))
        })
    }

    /// The name of a record that `name` was deleted at `now`: the next free place in its
    /// family, with `_deleted`.
    pub(crate) fn marker(&self, name: &[u8], now: u64) -> Option<Vec<u8>> {
        let latest = self.family(name).last().and_then(|m| m.key);
        let mut key = VersionKey::next(latest, now).as_deleted();
        loop {
            let candidate = version_name(name, key)?;
            if !self.taken(&candidate) {
                return Some(candidate);
            }
            key = key.bump();
        }
    }

    /// The first free version name of `name` at `stamp` (for a file moved aside into its own
    /// family: its version name from its own time).
    pub(crate) fn free_at(&self, name: &[u8], stamp: u64) -> Option<Vec<u8>> {
        let mut key = VersionKey::next(None, stamp);
        loop {
            let candidate = version_name(name, key)?;
            if !self.taken(&candidate) {
                return Some(candidate);
            }
            key = key.bump();
        }
    }

    /// Whether any name here records a deletion.
    pub(crate) fn has_deletions(&self) -> bool {
        self.versions
            .values()
            .any(|vs| vs.iter().any(|(k, _)| k.deleted))
    }

    /// The newest member of `name`'s family.
    pub(crate) fn latest(&self, name: &[u8]) -> Option<Member> {
        self.family(name).pop()
    }

    /// The name a new copy of `name` takes when made at `now`: the plain name when the family is
    /// empty, else the next version name not taken by any entry.
    pub(crate) fn target(&self, name: &[u8], now: u64) -> Option<Vec<u8>> {
        let family = self.family(name);
        if family.is_empty() && !self.taken(name) {
            return Some(name.to_vec());
        }
        let latest = family.last().and_then(|m| m.key);
        let mut key = VersionKey::next(latest, now);
        loop {
            let candidate = version_name(name, key)?;
            if !self.taken(&candidate) {
                return Some(candidate);
            }
            key = key.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_are_recorded_in_the_family_and_read_back() {
        let k = VersionKey {
            stamp: T,
            counter: 0,
            deleted: true,
        };
        let m = version_name(b"report.txt", k).expect("fits");
        assert_eq!(m, b"report_20231124_153045_deleted.txt");
        assert_eq!(version_of(b"report.txt", &m), Some(k));
        assert_eq!(
            original_name(&m).map(|(o, _)| o),
            Some(b"report.txt".to_vec())
        );
        let folder = version_name(b"photos", k).expect("fits");
        assert_eq!(folder, b"photos_20231124_153045_deleted");
        let index = FolderIndex::new(
            [
                b"report.txt".to_vec(),
                m.clone(),
                b"gone_20231124_153045.txt".to_vec(),
            ],
            &HashSet::new(),
        );
        let latest = index.latest(b"report.txt").expect("latest");
        assert!(latest.key.is_some_and(|k| k.deleted));
        // A file that comes back gets a version after its deletion.
        assert_eq!(
            index.target(b"report.txt", T).as_deref(),
            Some(&b"report_20231124_153045_1.txt"[..])
        );
        assert_eq!(
            index.marker(b"other.txt", T).as_deref(),
            Some(&b"other_20231124_153045_deleted.txt"[..])
        );
        let mut fams = index.absent_families(|_| false);
        fams.sort();
        assert_eq!(fams, [b"gone.txt".to_vec(), b"report.txt".to_vec()]);
    }

    #[test]
    fn a_destination_blind_to_case_finds_a_family_in_any_case() {
        let listing =
            ["README.md", "README_20231124_153045.md", "other.txt"].map(|n| n.as_bytes().to_vec());
        let index = FolderIndex::with_case(listing.clone(), &HashSet::new(), false);
        let fam: Vec<Vec<u8>> = index
            .family(b"readme.md")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            fam,
            [b"README.md".to_vec(), b"README_20231124_153045.md".to_vec()]
        );
        assert_eq!(
            index.target(b"readme.md", 20231124153045).as_deref(),
            Some(&b"readme_20231124_153045_1.md"[..]),
            "the next name is free in any case"
        );
        assert_eq!(
            index.target(b"OTHER.TXT", 20231124153045).as_deref(),
            Some(&b"OTHER_20231124_153045.TXT"[..])
        );
        let exact = FolderIndex::new(listing, &HashSet::new());
        assert!(exact.family(b"readme.md").is_empty());
        assert_eq!(
            fold_case("Straße.txt".as_bytes()),
            "STRASSE.TXT".replace("SS", "ß").as_bytes()
        );
        assert_eq!(fold_case(b"a\xffb"), b"A\xffB");
    }

    const T: u64 = 20231124153045;

    fn key(stamp: u64, counter: u32) -> VersionKey {
        VersionKey {
            stamp,
            counter,
            deleted: false,
        }
    }

    fn index(names: &[&str], sources: &[&str]) -> FolderIndex {
        let src = sources.iter().map(|s| s.as_bytes().to_vec()).collect();
        FolderIndex::new(names.iter().map(|s| s.as_bytes().to_vec()), &src)
    }

    fn s(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.expect("a name")).expect("utf-8")
    }

    #[test]
    fn split_matches_std_path() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        use std::path::Path;
        for name in [
            "report.txt",
            "archive.tar.gz",
            ".bashrc",
            ".config.bak",
            "Makefile",
            "a.",
            "..a",
            "...",
            "x.y.",
        ] {
            let p = Path::new(name);
            let (stem, ext) = split(name.as_bytes());
            assert_eq!(
                Some(OsStr::from_bytes(stem)),
                p.file_stem(),
                "stem of {name}"
            );
            assert_eq!(ext.map(OsStr::from_bytes), p.extension(), "ext of {name}");
        }
    }

    #[test]
    fn version_names_keep_the_extension_after_the_stamp() {
        assert_eq!(
            s(version_name(b"report.txt", key(T, 0))),
            "report_20231124_153045.txt"
        );
        assert_eq!(
            s(version_name(b"archive.tar.gz", key(T, 0))),
            "archive.tar_20231124_153045.gz"
        );
        assert_eq!(
            s(version_name(b".bashrc", key(T, 0))),
            ".bashrc_20231124_153045"
        );
        assert_eq!(
            s(version_name(b"Makefile", key(T, 2))),
            "Makefile_20231124_153045_2"
        );
        assert_eq!(s(version_name(b"a.", key(T, 0))), "a_20231124_153045.");
    }

    #[test]
    fn every_version_name_parses_back_to_its_key() {
        for name in [
            "report.txt",
            "archive.tar.gz",
            ".bashrc",
            "Makefile",
            "a.",
            "x_1.c",
        ] {
            for k in [key(T, 0), key(T, 1), key(T, 12), key(19991231235959, 0)] {
                let v = version_name(name.as_bytes(), k).expect("fits");
                assert_eq!(version_of(name.as_bytes(), &v), Some(k), "{name} {k:?}");
            }
        }
    }

    #[test]
    fn family_recognition_is_exact() {
        let n = b"a.txt";
        assert_eq!(version_of(n, b"a_20231124_153045.txt"), Some(key(T, 0)));
        assert_eq!(version_of(n, b"a_20231124_153045_7.txt"), Some(key(T, 7)));
        assert_eq!(version_of(n, b"a.txt"), None);
        assert_eq!(version_of(n, b"a_20231124_153045.md"), None);
        assert_eq!(version_of(n, b"a_20231124_153045"), None);
        assert_eq!(version_of(n, b"ab_20231124_153045.txt"), None);
        assert_eq!(version_of(n, b"a_2023112_153045.txt"), None);
        assert_eq!(version_of(n, b"a_20231324_153045.txt"), None);
        assert_eq!(version_of(n, b"a_20231124_153045_0.txt"), None);
        assert_eq!(version_of(n, b"a_20231124_153045_01.txt"), None);
        assert_eq!(version_of(n, b"a_20231124_153045_x.txt"), None);
        assert_eq!(version_of(n, b"_20231124_153045.txt"), None);
        // A version of a version-named file is not a version of the shorter name.
        assert_eq!(
            version_of(n, b"a_20231124_153045_20261126_120000.txt"),
            None
        );
        assert_eq!(
            version_of(
                b"a_20231124_153045.txt",
                b"a_20231124_153045_20261126_120000.txt"
            ),
            Some(key(20261126120000, 0))
        );
    }

    #[test]
    fn next_key_only_increases() {
        assert_eq!(VersionKey::next(None, T), key(T, 0));
        assert_eq!(VersionKey::next(Some(key(T - 1, 4)), T), key(T, 0));
        // Same second: next counter.
        assert_eq!(VersionKey::next(Some(key(T, 0)), T), key(T, 1));
        assert_eq!(VersionKey::next(Some(key(T, 1)), T), key(T, 2));
        // Clock went back an hour: stay after the latest.
        assert_eq!(VersionKey::next(Some(key(T, 3)), T - 10000), key(T, 4));
    }

    #[test]
    fn target_uses_plain_name_only_for_an_empty_family() {
        let idx = index(&[], &["a.txt"]);
        assert_eq!(s(idx.target(b"a.txt", T)), "a.txt");
        let idx = index(&["a.txt"], &["a.txt"]);
        assert_eq!(s(idx.target(b"a.txt", T)), "a_20231124_153045.txt");
        // The plain copy was deleted by hand, a version remains: never reuse the plain name,
        // or "latest" would no longer be the last written.
        let idx = index(&["a_20231124_153040.txt"], &["a.txt"]);
        assert_eq!(s(idx.target(b"a.txt", T)), "a_20231124_153045.txt");
    }

    #[test]
    fn same_second_versions_get_counters() {
        let idx = index(&["a.txt", "a_20231124_153045.txt"], &["a.txt"]);
        assert_eq!(s(idx.target(b"a.txt", T)), "a_20231124_153045_1.txt");
        let idx = index(
            &["a.txt", "a_20231124_153045.txt", "a_20231124_153045_1.txt"],
            &["a.txt"],
        );
        assert_eq!(s(idx.target(b"a.txt", T)), "a_20231124_153045_2.txt");
    }

    #[test]
    fn a_taken_name_outside_the_family_is_skipped() {
        // A source file happens to be called like the next version.
        let idx = index(
            &["a.txt", "a_20231124_153045.txt"],
            &["a.txt", "a_20231124_153045.txt"],
        );
        assert_eq!(idx.latest(b"a.txt").map(|m| m.key), Some(None));
        assert_eq!(s(idx.target(b"a.txt", T)), "a_20231124_153045_1.txt");
    }

    #[test]
    fn source_files_named_like_versions_are_their_own_family() {
        let idx = index(
            &["a.txt", "a_20231124_153045.txt"],
            &["a.txt", "a_20231124_153045.txt"],
        );
        assert_eq!(idx.family(b"a.txt").len(), 1);
        assert_eq!(
            idx.latest(b"a_20231124_153045.txt").map(|m| m.name),
            Some(b"a_20231124_153045.txt".to_vec())
        );
        // Without the source file, the same name is a version of a.txt.
        let idx = index(&["a.txt", "a_20231124_153045.txt"], &["a.txt"]);
        assert_eq!(idx.latest(b"a.txt").and_then(|m| m.key), Some(key(T, 0)));
    }

    #[test]
    fn latest_is_greatest_stamp_then_counter() {
        let idx = index(
            &[
                "a.txt",
                "a_20231124_153045_2.txt",
                "a_20231124_153045.txt",
                "a_20231124_153044_9.txt",
                "b_20991231_235959.txt",
            ],
            &["a.txt"],
        );
        let fam: Vec<_> = idx.family(b"a.txt").into_iter().map(|m| m.key).collect();
        assert_eq!(
            fam,
            vec![None, Some(key(T - 1, 9)), Some(key(T, 0)), Some(key(T, 2))]
        );
    }

    #[test]
    fn long_names_are_cut_to_fit_and_still_recognised() {
        let name = format!("{}.txt", "x".repeat(251));
        assert_eq!(name.len(), 255);
        let v = version_name(name.as_bytes(), key(T, 0)).expect("fits");
        assert_eq!(v.len(), 255);
        assert!(v.ends_with(b"_20231124_153045.txt"));
        assert_eq!(version_of(name.as_bytes(), &v), Some(key(T, 0)));
        let v12 = version_name(name.as_bytes(), key(T, 12)).expect("fits");
        assert_eq!(v12.len(), 255);
        assert_eq!(version_of(name.as_bytes(), &v12), Some(key(T, 12)));
        // A shorter name sharing the prefix is not confused with the long one.
        let other = format!("{}.txt", "x".repeat(200));
        assert_eq!(version_of(other.as_bytes(), &v), None);

        let idx = index(
            &[&name, std::str::from_utf8(&v).expect("utf-8")],
            &[name.as_str()],
        );
        assert_eq!(idx.latest(name.as_bytes()).map(|m| m.name), Some(v.clone()));
        assert_eq!(
            idx.target(name.as_bytes(), T).map(|n| n.len()),
            Some(NAME_MAX)
        );
        assert_eq!(
            idx.target(name.as_bytes(), T)
                .and_then(|n| version_of(name.as_bytes(), &n)),
            Some(key(T, 1))
        );
    }

    #[test]
    fn cuts_never_split_a_utf8_sequence() {
        // 'é' is two bytes: 126 of them make 252 bytes.
        let name = format!("{}.md", "é".repeat(126));
        let v = version_name(name.as_bytes(), key(T, 0)).expect("fits");
        assert!(v.len() <= NAME_MAX);
        assert!(std::str::from_utf8(&v).is_ok());
        assert_eq!(version_of(name.as_bytes(), &v), Some(key(T, 0)));
        // Invalid bytes count as one character each.
        let mut raw = vec![0xffu8; 250];
        raw.extend_from_slice(b".bin");
        let v = version_name(&raw, key(T, 0)).expect("fits");
        assert_eq!(v.len(), NAME_MAX);
        assert_eq!(version_of(&raw, &v), Some(key(T, 0)));
    }

    #[test]
    fn an_extension_too_long_to_version_is_refused() {
        let name = format!("a.{}", "e".repeat(240));
        assert_eq!(version_name(name.as_bytes(), key(T, 0)), None);
    }

    #[test]
    fn stamp_orders_like_time() {
        assert_eq!(stamp(2023, 11, 24, 15, 30, 45), T);
        assert!(stamp(2023, 12, 1, 0, 0, 0) > stamp(2023, 11, 30, 23, 59, 59));
    }
}
