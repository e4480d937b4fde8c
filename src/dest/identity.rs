//! Which filesystem, and which folder on it, a local destination is: what must hold before a
//! run writes into a destination that went away and came back. The device number and inode of
//! a folder change when a drive is mounted again (FUSE drivers number inodes afresh), so the
//! filesystem is recognised by its volume's own id: the UUID or serial number that `mkfs` wrote
//! into its superblock (ext2/3/4, XFS, Btrfs, FAT, exFAT, NTFS), else the id `statfs` reports,
//! else the mount's source (`user@host:/path` for sshfs, `server:/export` for NFS). A fresh
//! filesystem mounted at the same path, or the bare mount point on the system disk, has another
//! id and is never written into.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A destination folder's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The filesystem type, as mountinfo gives it.
    pub fstype: String,
    /// The volume's own id (see the module doc).
    pub volume: String,
    /// The folder's path inside that filesystem.
    pub folder: PathBuf,
}

impl Identity {
    /// For messages: `ext4 volume 5f3c…`.
    pub(crate) fn describe(&self) -> String {
        format!("{} volume {}", self.fstype, self.volume)
    }
}

/// One line of mountinfo, as far as identity needs it.
#[derive(Debug, PartialEq, Eq)]
struct Mount<'a> {
    /// The folder of the filesystem that is mounted (not `/` for bind mounts).
    root: &'a str,
    point: &'a str,
    fstype: &'a str,
    source: &'a str,
}

/// The mount of device `dev` (`major:minor`) in a mountinfo text; the last one, as the one on
/// top when several share a device.
fn mount_of<'a>(mountinfo: &'a str, dev: &str) -> Option<Mount<'a>> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (_, _, d, root, point) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            if d != dev {
                return None;
            }
            let (_, after) = line.split_once(" - ")?;
            let mut rest = after.split(' ');
            Some(Mount {
                root,
                point,
                fstype: rest.next()?,
                source: rest.next()?,
            })
        })
        .next_back()
}

/// The identity of the folder at `path` (which must be a folder), as it stands now.
pub(crate) fn of(path: &Path) -> io::Result<Identity> {
    let st = rustix::fs::stat(path)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    let dev = format!(
        "{}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev)
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let Some(m) = mount_of(&info, &dev) else {
        // No mountinfo to read (a restricted /proc): the device number is all there is.
        return Ok(Identity {
            fstype: String::new(),
            volume: format!("dev {dev}"),
            folder: path.to_path_buf(),
        });
    };
    let inside = path.strip_prefix(unescape(m.point)).unwrap_or(path);
    let folder = Path::new(&unescape(m.root)).join(inside);
    let fsid = rustix::fs::statfs(path).map(|s| fsid_of(&s)).unwrap_or(0);
    let volume = superblock_id(&unescape(m.source))
        .or_else(|| (fsid != 0).then(|| format!("fsid {fsid:016x}")))
        .unwrap_or_else(|| m.source.to_string());
    Ok(Identity {
        fstype: m.fstype.to_string(),
        volume,
        folder,
    })
}

#[allow(clippy::unnecessary_cast)]
fn fsid_of(s: &rustix::fs::StatFs) -> u64 {
    // SAFETY: `__kernel_fsid_t` is two plain integers.
    let words: [i32; 2] = unsafe { std::mem::transmute(s.f_fsid) };
    (u64::from(words[0] as u32) << 32) | u64::from(words[1] as u32)
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            let code: String = (0..3).filter_map(|_| it.next()).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(char::from(b)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The id `mkfs` wrote into the volume at `source` (a device or an image file), where it can be
/// read.
fn superblock_id(source: &str) -> Option<String> {
    if !source.starts_with('/') {
        return None;
    }
    let mut f = std::fs::File::open(source).ok()?;
    let mut head = vec![0u8; 4096];
    f.read_exact(&mut head).ok()?;
    let mut btrfs = [0u8; 128];
    let has_btrfs = f.seek(SeekFrom::Start(65_536)).is_ok() && f.read_exact(&mut btrfs).is_ok();
    volume_id(&head, has_btrfs.then_some(&btrfs))
}

/// The volume id in the first 4 KiB of a volume (and the start of Btrfs's superblock at 64 KiB).
fn volume_id(head: &[u8], btrfs: Option<&[u8; 128]>) -> Option<String> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if let Some(sb) = btrfs
        && &sb[64..72] == b"_BHRfS_M"
    {
        return Some(format!("btrfs {}", hex(&sb[32..48])));
    }
    if head.len() < 4096 {
        return None;
    }
    if head[1024 + 56..1024 + 58] == [0x53, 0xEF] {
        return Some(format!("ext {}", hex(&head[1024 + 104..1024 + 120])));
    }
    if &head[0..4] == b"XFSB" {
        return Some(format!("xfs {}", hex(&head[32..48])));
    }
    match (&head[3..11], &head[82..87], &head[54..57]) {
        (b"EXFAT   ", _, _) => Some(format!("exfat {}", hex(&head[100..104]))),
        (b"NTFS    ", _, _) => Some(format!("ntfs {}", hex(&head[72..80]))),
        (_, b"FAT32", _) => Some(format!("fat {}", hex(&head[67..71]))),
        (_, _, b"FAT") => Some(format!("fat {}", hex(&head[39..43]))),
        _ => None,
    }
}

/// A number that grows each time the mount table changes (a drive mounted or unmounted), so
/// that a check can tell cheaply that nothing was. A thread waits on mountinfo for the kernel's
/// signal that it changed, costing nothing while nothing happens.
pub(crate) fn mount_generation() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static WATCHER: OnceLock<()> = OnceLock::new();
    WATCHER.get_or_init(|| {
        let Ok(file) = std::fs::File::open("/proc/self/mountinfo") else {
            // Without the signal every check looks at the volume id: slower, never wrong.
            GENERATION.store(u64::MAX, Ordering::Relaxed);
            return;
        };
        let _ = std::thread::Builder::new()
            .name("mounts".into())
            .spawn(move || watch_mounts(file, &GENERATION));
    });
    match GENERATION.load(Ordering::Relaxed) {
        u64::MAX => next_unique(),
        n => n,
    }
}

/// A number never returned before, for when changes cannot be watched.
fn next_unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1 << 62);
    N.fetch_add(1, Ordering::Relaxed)
}

fn watch_mounts(mut file: std::fs::File, generation: &std::sync::atomic::AtomicU64) {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut sink = Vec::new();
    loop {
        // Reading to the end acknowledges the change that woke us.
        sink.clear();
        if file.seek(SeekFrom::Start(0)).is_err() || file.read_to_end(&mut sink).is_err() {
            return;
        }
        let mut fds = [PollFd::new(&file, PollFlags::PRI | PollFlags::ERR)];
        match poll(&mut fds, None) {
            Ok(_) => {
                generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_on_top_is_the_one_that_counts() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
46 30 7:1 / /mnt/usb rw - fuseblk /dev/loop1 rw
47 30 7:1 /sub /mnt/bound rw - fuseblk /dev/loop1 rw
48 30 0:41 / /mnt/with\\040space rw - fuse.sshfs root@127.0.0.1:/x rw";
        let m = mount_of(info, "7:1").expect("found");
        assert_eq!((m.root, m.point), ("/sub", "/mnt/bound"));
        assert_eq!(mount_of(info, "8:1").map(|m| m.fstype), Some("ext4"));
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(mount_of(info, "1:1"), None);
    }

    #[test]
    fn volumes_are_told_apart_by_what_mkfs_wrote() {
        let mut head = vec![0u8; 4096];
        assert_eq!(volume_id(&head, None), None);
        head[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
        head[1024 + 104] = 0xab;
        let ext = volume_id(&head, None).expect("ext");
        assert!(ext.starts_with("ext ab00"), "{ext}");
        let mut fat = vec![0u8; 4096];
        fat[82..87].copy_from_slice(b"FAT32");
        fat[67..71].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(volume_id(&fat, None).as_deref(), Some("fat 01020304"));
        let mut other = fat.clone();
        other[67] = 9;
        assert_ne!(volume_id(&fat, None), volume_id(&other, None));
        let mut sb = [0u8; 128];
        sb[64..72].copy_from_slice(b"_BHRfS_M");
        assert!(
            volume_id(&fat, Some(&sb))
                .expect("btrfs")
                .starts_with("btrfs ")
        );
    }

    #[test]
    fn a_folder_here_has_an_identity_that_holds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = of(tmp.path()).expect("identity");
        assert_eq!(of(tmp.path()).expect("again"), a);
        assert!(of(&tmp.path().join("missing")).is_err());
    }
}
