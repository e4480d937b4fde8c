//! Pure decisions about one entry: is its copy current, did it change while it was read, how
//! long to wait before trying again.

use std::time::Duration;

use crate::meta::{Kind, Meta, Time};

/// Whether the destination's modification time `dst` records the source's `src`, to the
/// precision that the destination filesystem keeps: exact on ext4, XFS, Btrfs and tmpfs; whole
/// microseconds, milliseconds or seconds elsewhere; FAT's two seconds, rounded up.
pub fn same_mtime(src: Time, dst: Time) -> bool {
    if src == dst {
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

/// Whether `dst` (the newest copy) is a current copy of the regular file `src`: same size and
/// modification time.
pub fn unchanged(src: &Meta, dst: &Meta) -> bool {
    dst.kind == Kind::File && src.size == dst.size && same_mtime(src.mtime, dst.mtime)
}

/// Whether the source changed between the `fstat` before and after reading it, or did not
/// yield the bytes it claimed: then the copy may mix two states and must not be published.
pub fn changed_while_read(before: &Meta, after: &Meta, copied: u64) -> bool {
    before.size != after.size
        || before.mtime != after.mtime
        || before.ctime != after.ctime
        || before.ino != after.ino
        || before.dev != after.dev
        || copied != before.size
}

/// Waits between attempts to copy a file that changed while it was read; its length is the
/// number of retries.
pub const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(400),
];

/// What a pass does with an entry of this kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    CopyFile,
    CopySymlink,
    /// Folders are handled by the walk, not per entry.
    Walk,
    /// Never opened: FIFOs block on open, devices and sockets have no contents to back up.
    Skip(&'static str),
}

pub fn action(kind: Kind) -> Action {
    match kind {
        Kind::File => Action::CopyFile,
        Kind::Symlink => Action::CopySymlink,
        Kind::Dir => Action::Walk,
        other => Action::Skip(other.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn mtime_precision() {
        let src = t(1000, 123_456_789);
        assert!(same_mtime(src, src));
        assert!(same_mtime(src, t(1000, 123_456_000)), "microseconds");
        assert!(same_mtime(src, t(1000, 123_000_000)), "milliseconds");
        assert!(same_mtime(src, t(1000, 0)), "seconds");
        assert!(
            same_mtime(t(999, 5), t(1000, 0)),
            "FAT rounds up to even seconds"
        );
        assert!(!same_mtime(src, t(1000, 123_456_788)));
        assert!(!same_mtime(src, t(1001, 123_456_789)));
        assert!(!same_mtime(src, t(1000, 123_457_000)), "not a truncation");
        assert!(!same_mtime(t(1000, 5), t(1000, 6)));
    }

    #[test]
    fn unchanged_needs_a_regular_file_of_same_size_and_time() {
        let src = file(10, t(5, 5));
        assert!(unchanged(&src, &src));
        assert!(!unchanged(&src, &file(11, t(5, 5))));
        assert!(!unchanged(&src, &file(10, t(5, 6))));
        let mut link = src;
        link.kind = Kind::Symlink;
        assert!(!unchanged(&src, &link));
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
    fn special_files_are_skipped_not_opened() {
        assert_eq!(action(Kind::Fifo), Action::Skip("fifo"));
        assert_eq!(action(Kind::Socket), Action::Skip("socket"));
        assert_eq!(action(Kind::CharDevice), Action::Skip("character device"));
        assert_eq!(action(Kind::File), Action::CopyFile);
        assert_eq!(action(Kind::Symlink), Action::CopySymlink);
    }
}
