//! What a local destination can hold, found out by trying: on temporary `.backup-tmp.*` entries
//! in DST itself, all removed again. The filesystem's name (from mountinfo) is only for messages
//! and for FAT's local-time rule; every other answer is what the filesystem did when asked, so
//! that the same answers come from the kernel's vfat, exfat, ntfs3 or cifs as from the FUSE
//! drivers the tests mount.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, RenameFlags, Timestamps, Uid};

use super::{Capabilities, FAT_MAX_FILE, Publish, Refusal, temp_name};
use crate::meta::{Meta, Time};

/// Runs every probe in the folder `root`.
pub(super) fn probe(root: &OwnedFd, as_root: bool) -> Capabilities {
    let mut caps = Capabilities::assumed(fs_name(root));
    caps.probed = true;
    let first = temp_name(b"probe");
    let Ok(fd) = create(root, &first) else {
        return caps;
    };
    file(&fd, as_root, &mut caps);
    caps.clone = clones(root, &fd, &first);
    // The clone probe wrote into the file, which moved its time: set again, so that what
    // publishing keeps is what is measured.
    let _ = rustix::fs::futimens(&fd, &timestamps(PROBE_TIME));
    drop(fd);
    let flipped: Vec<u8> = first.iter().map(u8::to_ascii_uppercase).collect();
    caps.case_sensitive = stat(root, &flipped).is_err();
    let left = publish(root, &first, &mut caps);
    caps.link = hard_links(root, &left);
    let _ = rustix::fs::unlinkat(root, OsStr::from_bytes(&left), AtFlags::empty());
    symlinks(root, &mut caps);
    caps.refuses = names(root);
    // FAT keeps times in two-second steps, and a FAT32 file cannot reach 4 GiB; nothing else
    // keeps times that coarsely. (Finding the limit by writing 4 GiB is no probe.)
    if caps.precision == Some(2_000_000_000) {
        caps.max_file_size = Some(FAT_MAX_FILE);
    }
    caps
}

fn create(root: &OwnedFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        root,
        OsStr::from_bytes(name),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

fn stat(root: &OwnedFd, name: &[u8]) -> rustix::io::Result<Meta> {
    rustix::fs::statat(root, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| Meta::from_stat(&st))
}

/// A time with an odd second and all nine digits of nanoseconds, so that what comes back tells
/// every resolution apart.
const PROBE_TIME: Time = Time {
    sec: 1_700_000_001,
    nsec: 123_456_789,
};

fn timestamps(t: Time) -> Timestamps {
    let ts = rustix::fs::Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// Times, permission bits, owners and extended attributes, each set and read back: some
/// filesystems accept a call and keep nothing of it (ntfs-3g's chmod and chown).
fn file(fd: &OwnedFd, as_root: bool, caps: &mut Capabilities) {
    let meta = || rustix::fs::fstat(fd).map(|st| Meta::from_stat(&st));
    if rustix::fs::futimens(fd, &timestamps(PROBE_TIME)).is_ok()
        && let Ok(m) = meta()
    {
        caps.precision = super::precision_of(PROBE_TIME, m.mtime);
    }
    caps.permissions = rustix::fs::fchmod(fd, Mode::from_raw_mode(0o640)).is_ok()
        && meta().is_ok_and(|m| m.mode & 0o777 == 0o640);
    let nobody = (Uid::from_raw(65534), Gid::from_raw(65534));
    caps.owners = as_root
        && rustix::fs::fchown(fd, Some(nobody.0), Some(nobody.1)).is_ok()
        && meta().is_ok_and(|m| (m.uid, m.gid) == (65534, 65534));
    caps.xattrs = rustix::fs::fsetxattr(
        fd,
        "user.backup-probe",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
}

/// Whether a file can share its blocks with another (`FICLONE`: Btrfs, XFS with reflink, and
/// whatever else answers yes): a new version can then start as a clone of the one before and
/// cost only what changed. Tried on a second temporary file cloned from the probe file, with
/// data in it (an empty clone proves nothing on some filesystems).
fn clones(root: &OwnedFd, written: &OwnedFd, name: &[u8]) -> bool {
    if rustix::io::pwrite(written, &[0x5a; 4096], 0).is_err() {
        return false;
    }
    // The source of a clone must be open for reading.
    let Ok(from) = rustix::fs::openat(
        root,
        OsStr::from_bytes(name),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let name = temp_name(b"probe-clone");
    let Ok(to) = create(root, &name) else {
        return false;
    };
    let cloned = rustix::fs::ioctl_ficlone(&to, &from).is_ok();
    drop(to);
    let _ = rustix::fs::unlinkat(root, OsStr::from_bytes(&name), AtFlags::empty());
    cloned
}

/// How a name can be published without replacing, and whether the file keeps its time through
/// it. Returns the name the probe file ends under.
fn publish(root: &OwnedFd, first: &[u8], caps: &mut Capabilities) -> Vec<u8> {
    let second = temp_name(b"probe");
    let (a, b) = (OsStr::from_bytes(first), OsStr::from_bytes(&second));
    let (method, left) =
        if rustix::fs::renameat_with(root, a, root, b, RenameFlags::NOREPLACE).is_ok() {
            (Publish::RenameNoReplace, second)
        } else if rustix::fs::linkat(root, a, root, b, AtFlags::empty()).is_ok() {
            let _ = rustix::fs::unlinkat(root, a, AtFlags::empty());
            (Publish::HardLink, second)
        } else if rustix::fs::renameat(root, a, root, b).is_ok() {
            (Publish::CheckThenRename, second)
        } else {
            (Publish::Unknown, first.to_vec())
        };
    caps.publish = method;
    // Only a time that was kept before can be lost by publishing.
    if let Some(p) = caps.precision {
        caps.publish_keeps_times =
            stat(root, &left).is_ok_and(|m| crate::meta::kept_at(PROBE_TIME, m.mtime, p));
    }
    left
}

/// Whether a file can have a second name (a hard link) that the filesystem counts as one:
/// a moved file's copy can then be a name for the copy already there. The count must show,
/// since a later change of metadata breaks such a link first.
fn hard_links(root: &OwnedFd, name: &[u8]) -> bool {
    let second = temp_name(b"probe-hardlink");
    let (a, b) = (OsStr::from_bytes(name), OsStr::from_bytes(&second));
    if rustix::fs::linkat(root, a, root, b, AtFlags::empty()).is_err() {
        return false;
    }
    let counted =
        rustix::fs::statat(root, a, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| st.st_nlink == 2);
    let _ = rustix::fs::unlinkat(root, b, AtFlags::empty());
    counted
}

/// Whether symlinks can be made, and whether their own owner and times can be set without the
/// call following the link (the probe's link points nowhere, so a call that follows fails).
fn symlinks(root: &OwnedFd, caps: &mut Capabilities) {
    let link = temp_name(b"probe-link");
    let name = OsStr::from_bytes(&link);
    caps.symlinks = rustix::fs::symlinkat(".backup-probe-nowhere", root, name).is_ok();
    if caps.symlinks {
        let times = timestamps(PROBE_TIME);
        caps.symlink_meta =
            rustix::fs::utimensat(root, name, &times, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let _ = rustix::fs::unlinkat(root, name, AtFlags::empty());
    } else {
        caps.symlink_meta = false;
    }
}

/// The kinds of names the filesystem refuses, or keeps under another name: each is created
/// and then looked for, byte for byte, in a listing.
fn names(root: &OwnedFd) -> Vec<Refusal> {
    let mut made = Vec::new();
    let mut refused = Vec::new();
    for (kind, tail) in Refusal::PROBED {
        let name = temp_name(tail.as_bytes());
        match create(root, &name) {
            Ok(_) => made.push((kind, name)),
            Err(_) => refused.push(kind),
        }
    }
    let listed: std::collections::HashSet<Vec<u8>> = crate::meta::read_folder(root)
        .map(|l| l.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    for (kind, name) in made {
        if !listed.contains(&name) {
            refused.push(kind);
        }
        let _ = rustix::fs::unlinkat(root, OsStr::from_bytes(&name), AtFlags::empty());
    }
    refused
}

/// What the entries already in `root` show, for a run that may not write (`--dry-run`,
/// `verify`): the time resolution (the coarsest one that every modification time there is a
/// multiple of; `None` for an empty folder), and whether permissions and owners are kept. Copies carry their sources' times, so this is never finer
/// than what the filesystem keeps, and at worst coarser (sources with whole-second times),
/// which only makes a check lenient by less than that step.
pub(super) fn observe(root: &OwnedFd, caps: &mut Capabilities) {
    const SAMPLE: usize = 64;
    let Ok(listing) = crate::meta::read_folder(root) else {
        return;
    };
    // The folder itself too: a folder's mode differs from a file's wherever modes are kept.
    let itself = rustix::fs::fstat(root).ok().map(|st| Meta::from_stat(&st));
    let metas: Vec<Meta> = listing
        .iter()
        .filter(|(name, _)| !super::is_temp_name(name))
        .take(SAMPLE)
        .filter_map(|(name, _)| stat(root, name).ok())
        .chain(itself)
        .collect();
    let ns = |t: &Time| i128::from(t.sec) * 1_000_000_000 + i128::from(t.nsec);
    caps.precision = (!metas.is_empty())
        .then(|| {
            super::PRECISIONS
                .into_iter()
                .rev()
                .find(|&p| metas.iter().all(|m| ns(&m.mtime) % i128::from(p) == 0))
        })
        .flatten();
    // A filesystem that keeps no permissions or owners shows the same ones on every entry
    // (0777 on NTFS through ntfs-3g, on exFAT): only entries that differ show that it keeps them.
    let varied = |f: fn(&Meta) -> (u32, u32)| metas.windows(2).any(|w| f(&w[0]) != f(&w[1]));
    caps.permissions = varied(|m| (m.mode, 0));
    caps.owners = varied(|m| (m.uid, m.gid));
}

/// The filesystem's name, for messages: the type mountinfo gives its mount (`fuse.sshfs` →
/// `sshfs`), and for a FUSE driver on a block device or image (`fuseblk`) the type its first
/// sector names; the superblock's magic number where mountinfo cannot be read.
pub(super) fn fs_name(fd: &OwnedFd) -> String {
    let Ok(st) = rustix::fs::fstat(fd) else {
        return "unknown".into();
    };
    let dev = format!(
        "{}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev)
    );
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo")
        && let Some((fstype, source)) = mount_of(&info, &dev)
    {
        return match fstype.strip_prefix("fuse.") {
            Some(sub) => sub.to_string(),
            None if fstype == "fuseblk" || fstype == "fuse" => {
                sniff(source).unwrap_or(fstype).to_string()
            }
            None => fstype.to_string(),
        };
    }
    magic_name(fd).into()
}

/// The type and source of the mount of device `dev` (`major:minor`) in a mountinfo text.
fn mount_of<'a>(mountinfo: &'a str, dev: &str) -> Option<(&'a str, &'a str)> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.nth(2) != Some(dev) {
            return None;
        }
        let (_, after) = line.split_once(" - ")?;
        let mut rest = after.split(' ');
        Some((rest.next()?, rest.next()?))
    })
}

/// The filesystem a device or image holds, from the name in its boot sector.
fn sniff(source: &str) -> Option<&'static str> {
    let mut sector = [0u8; 512];
    std::fs::File::open(source)
        .and_then(|mut f| f.read_exact(&mut sector))
        .ok()?;
    boot_sector_name(&sector)
}

/// The filesystem named in a boot sector: exFAT and NTFS at byte 3, FAT32 at byte 82, FAT12 and
/// FAT16 at byte 54.
fn boot_sector_name(sector: &[u8; 512]) -> Option<&'static str> {
    match (&sector[3..11], &sector[82..87], &sector[54..57]) {
        (b"EXFAT   ", _, _) => Some("exfat"),
        (b"NTFS    ", _, _) => Some("ntfs"),
        (_, b"FAT32", _) | (_, _, b"FAT") => Some("vfat"),
        _ => None,
    }
}

fn magic_name(fd: &OwnedFd) -> &'static str {
    let Ok(st) = rustix::fs::fstatfs(fd) else {
        return "unknown";
    };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64;
    match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x6573_5546 => "fuse",
        0x4d44 => "vfat",
        0x2011_BAB0 => "exfat",
        0x5346_544e | 0x7366_746e => "ntfs",
        0xFF53_4D42 | 0xFE53_4D42 => "cifs",
        0x6969 => "nfs",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_on_a_local_disk_keeps_times_through_publishing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open");
        let caps = probe(&root, false);
        assert!(caps.precision.is_some(), "{caps:?}");
        // Else every copy has its times set twice.
        assert!(caps.publish_keeps_times, "{caps:?}");
    }

    #[test]
    fn a_mount_is_found_by_its_device() {
        let info = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
45 30 0:40 / /mnt/ntfs rw,relatime - fuse /tmp/ntfs.img rw,user_id=0
46 30 7:1 / /mnt/exfat rw - fuseblk /dev/loop1 rw,default_permissions
47 30 0:41 / /mnt/ssh rw - fuse.sshfs root@127.0.0.1:/x rw";
        assert_eq!(mount_of(info, "8:1"), Some(("ext4", "/dev/sda1")));
        assert_eq!(mount_of(info, "7:1"), Some(("fuseblk", "/dev/loop1")));
        assert_eq!(
            mount_of(info, "0:41"),
            Some(("fuse.sshfs", "root@127.0.0.1:/x"))
        );
        assert_eq!(mount_of(info, "9:9"), None);
    }

    #[test]
    fn boot_sectors_name_their_filesystem() {
        let mut s = [0u8; 512];
        s[3..11].copy_from_slice(b"EXFAT   ");
        assert_eq!(boot_sector_name(&s), Some("exfat"));
        s[3..11].copy_from_slice(b"NTFS    ");
        assert_eq!(boot_sector_name(&s), Some("ntfs"));
        s[3..11].copy_from_slice(b"mkfs.fat");
        s[82..90].copy_from_slice(b"FAT32   ");
        assert_eq!(boot_sector_name(&s), Some("vfat"));
        assert_eq!(boot_sector_name(&[0u8; 512]), None);
    }
}
