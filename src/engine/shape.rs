//! What a name in a destination folder was, for the moments a source entry changes shape: a
//! file that becomes a folder, a folder that becomes a file or goes, a folder that comes back
//! after its deletion was recorded. Folders leave no versions of their own; a restore reads
//! their past from their family's records and from what DST shows of them
//! (`history::folder_at`), and the engine writes those records so that the two agree:
//!
//! - a file replaced by a folder gets its deletion recorded (the folder's records then start
//!   after it);
//! - a folder that goes, or is replaced by a file, gets its deletion recorded whenever DST's
//!   records still show it there;
//! - a folder that comes back after its deletion was recorded has what it holds copied again
//!   (copies from before the deletion are gone as far as a restore is concerned), and its own
//!   change time moved, so that a later deletion is recorded too.

use std::collections::HashSet;
use std::io;

use crate::dest::Folder;
use crate::naming::{self, FolderIndex, Member};

/// How a folder that SRC has stands in its family's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Standing {
    /// The family's newest record is a copy of a file of that name: the file was replaced by
    /// the folder, and that is not recorded yet.
    pub(super) replaces_file: bool,
    /// When the newest deletion in the family was recorded: what the folder held before then
    /// was gone with it, and a restore after then leaves it out.
    pub(super) deleted: Option<u64>,
    /// The newest record is the folder's own deletion (not a file's): the folder came back.
    pub(super) returned: bool,
}

/// The family's records of `name` in `index`: its versions and deletions (the plain name is
/// the folder itself, or the file's first copy, which only matters when it is the newest).
/// `is_source` says whether a name is a source file of that folder, never a version of another.
fn records(index: &FolderIndex, name: &[u8], is_source: &dyn Fn(&[u8]) -> bool) -> Vec<Member> {
    index
        .family(name)
        .into_iter()
        .filter(|m| m.key.is_some() && !is_source(&m.name))
        .collect()
}

fn is_deletion(m: &Member) -> bool {
    m.key.is_some_and(|k| k.deleted)
}

/// Where the folder `name` (a folder in SRC, and in DST) stands in the records of the folder
/// whose names `index` holds.
pub(super) fn standing(
    index: &FolderIndex,
    name: &[u8],
    is_source: &dyn Fn(&[u8]) -> bool,
) -> Standing {
    let records = records(index, name, is_source);
    let newest = records.last();
    let before = records.len().checked_sub(2).map(|i| &records[i]);
    Standing {
        replaces_file: newest.is_some_and(|m| !is_deletion(m)),
        deleted: records
            .iter()
            .rev()
            .find_map(|m| m.key.filter(|k| k.deleted).map(|k| k.stamp)),
        returned: newest.is_some_and(is_deletion) && before.is_none_or(is_deletion),
    }
}

/// For a name that SRC no longer has as a folder, whose folder DST still holds: whether its
/// deletion is to be recorded. When its newest record is a copy (a file's), the file is what
/// counts, not this folder; no record, or a file's deletion (the folder came after the file),
/// means the folder is there; after its own deletion, only a folder that came back since (its
/// change time moved past the deletion) is.
pub(super) enum FolderGone {
    Record,
    Not,
    /// Recorded if the folder's change time is at or after this stamp.
    IfChangedSince(u64),
}

pub(super) fn folder_gone(index: &FolderIndex, name: &[u8]) -> FolderGone {
    let records = records(index, name, &|_| false);
    let Some(newest) = records.last() else {
        return FolderGone::Record;
    };
    if !is_deletion(newest) {
        return FolderGone::Not;
    }
    match records.len().checked_sub(2).map(|i| &records[i]) {
        Some(file) if !is_deletion(file) => FolderGone::Record,
        _ => FolderGone::IfChangedSince(newest.key.map_or(0, |k| k.stamp)),
    }
}

/// Decides `folder_gone` for the folder `name` of `folder`, looking at its change time when
/// that is what decides.
pub(super) fn record_folder_gone(
    folder: &dyn Folder,
    index: &FolderIndex,
    name: &[u8],
) -> io::Result<bool> {
    Ok(match folder_gone(index, name) {
        FolderGone::Record => true,
        FolderGone::Not => false,
        FolderGone::IfChangedSince(stamp) => naming::stamp_at(folder.stat(name)?.ctime) >= stamp,
    })
}

/// When the copy `member` of a family in `folder` was captured: the time in its name, or for
/// the plain name when it was written, as history reads it. `None` for a folder under the plain
/// name, which is no copy.
pub(super) fn copy_captured(folder: &dyn Folder, member: &Member) -> io::Result<Option<u64>> {
    if let Some(key) = member.key {
        return Ok(Some(key.stamp));
    }
    let (meta, born) = folder.entry(&member.name)?;
    Ok((meta.kind != crate::meta::Kind::Dir).then(|| crate::history::written_at(&meta, born)))
}

/// The names of `folder` that are folders, once, for a job that needs them.
pub(super) fn subfolders(folder: &dyn Folder) -> HashSet<Vec<u8>> {
    folder
        .subfolders()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(names: &[&str]) -> FolderIndex {
        FolderIndex::new(names.iter().map(|n| n.as_bytes().to_vec()), &HashSet::new())
    }

    #[test]
    fn a_folder_stands_after_its_family_s_newest_records() {
        let none = |_: &[u8]| false;
        assert_eq!(
            standing(&index(&["x"]), b"x", &none),
            Standing::default(),
            "only ever a folder"
        );
        let swapped = index(&["x", "x_20261206_000010"]);
        assert!(standing(&swapped, b"x", &none).replaces_file);
        let after_swap = index(&["x", "x_20261206_000010", "x_20261206_000100_deleted"]);
        assert_eq!(
            standing(&after_swap, b"x", &none),
            Standing {
                replaces_file: false,
                deleted: Some(20261206000100),
                returned: false,
            }
        );
        let back = index(&[
            "x",
            "x_20261206_000010",
            "x_20261206_000100_deleted",
            "x_20261206_000200_deleted",
        ]);
        assert_eq!(
            standing(&back, b"x", &none),
            Standing {
                replaces_file: false,
                deleted: Some(20261206000200),
                returned: true,
            }
        );
        // A source file that only looks like a version is none.
        let lookalike = |n: &[u8]| n == b"x_20261206_000010";
        assert!(!standing(&swapped, b"x", &lookalike).replaces_file);
    }

    #[test]
    fn a_folder_s_deletion_is_recorded_while_the_records_show_it() {
        let decide = |names: &[&str]| match folder_gone(&index(names), b"x") {
            FolderGone::Record => "record".to_string(),
            FolderGone::Not => "not".to_string(),
            FolderGone::IfChangedSince(s) => format!("since {s}"),
        };
        assert_eq!(decide(&["x"]), "record");
        assert_eq!(decide(&["x", "x_20261206_000010"]), "not", "a file's copy");
        assert_eq!(
            decide(&["x", "x_20261206_000010", "x_20261206_000100_deleted"]),
            "record",
            "came in the file's place"
        );
        assert_eq!(
            decide(&["x", "x_20261206_000100_deleted"]),
            "since 20261206000100"
        );
    }
}
