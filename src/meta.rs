//! What the tool knows of a file system entry, independent of where it was read from.

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{FileType, Mode, OFlags, Stat};

/// The kind of an entry, as far as a backup cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    #[default]
    Unknown,
}

impl Kind {
    pub(crate) fn from_file_type(t: FileType) -> Kind {
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            FileType::Unknown => Kind::Unknown,
        }
    }

    pub(crate) fn from_std(t: std::fs::FileType) -> Kind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            Kind::File
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_socket() {
            Kind::Socket
        } else if t.is_char_device() {
            Kind::CharDevice
        } else if t.is_block_device() {
            Kind::BlockDevice
        } else {
            Kind::Unknown
        }
    }

    /// The word used in `Skipped: <path> (<word>)`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "folder",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Unknown => "unknown file type",
        }
    }
}

/// A point in time as the kernel stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Time {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
}

impl Time {
    /// The time now, as the kernel would stamp a file.
    pub(crate) fn now() -> Time {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        }
    }
}

/// Whether `got` is `set` as a filesystem keeping times at `precision` nanoseconds stores it:
/// cut down to a multiple of it, or, at FAT's two seconds, also rounded up.
pub(crate) fn kept_at(set: Time, got: Time, precision: u64) -> bool {
    const FAT: u64 = 2_000_000_000;
    let as_ns = |t: Time| i128::from(t.sec) * 1_000_000_000 + i128::from(t.nsec);
    let (set, got, p) = (as_ns(set), as_ns(got), i128::from(precision.max(1)));
    let down = set.div_euclid(p) * p;
    got == down || (precision == FAT && got == down + p)
}

/// The metadata of one entry: what decides "unchanged" and what a copy carries over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    /// Permission bits, including setuid, setgid and sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: Time,
    pub(crate) mtime: Time,
    pub(crate) ctime: Time,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl Meta {
    pub(crate) fn from_stat(st: &Stat) -> Meta {
        Meta {
            kind: Kind::from_file_type(FileType::from_raw_mode(st.st_mode)),
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            atime: Time {
                sec: st.st_atime,
                nsec: st.st_atime_nsec as u32,
            },
            mtime: Time {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
            ctime: Time {
                sec: st.st_ctime,
                nsec: st.st_ctime_nsec as u32,
            },
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    pub(crate) fn from_std(m: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        Meta {
            kind: Kind::from_std(m.file_type()),
            size: m.size(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            atime: Time {
                sec: m.atime(),
                nsec: m.atime_nsec() as u32,
            },
            mtime: Time {
                sec: m.mtime(),
                nsec: m.mtime_nsec() as u32,
            },
            ctime: Time {
                sec: m.ctime(),
                nsec: m.ctime_nsec() as u32,
            },
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// The extended attributes of an open file, by name (none where the filesystem keeps none).
pub(crate) fn xattrs(
    file: &std::fs::File,
) -> io::Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    use rustix::io::Errno;
    let mut out = std::collections::BTreeMap::new();
    let names = match rustix::fs::flistxattr_query(file) {
        Ok(0) | Err(Errno::OPNOTSUPP) => return Ok(out),
        Ok(n) => {
            let mut buf = vec![0u8; n];
            let len = rustix::fs::flistxattr(file, &mut buf)?;
            buf.truncate(len);
            buf
        }
        Err(e) => return Err(e.into()),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let os = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
        let value = match rustix::fs::fgetxattr_query(file, os) {
            Ok(n) => {
                let mut buf = vec![0u8; n];
                let len = rustix::fs::fgetxattr(file, os, &mut buf)?;
                buf.truncate(len);
                buf
            }
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// The entries of an open folder, with their types as the listing gives them (`Unknown` where
/// the filesystem does not say). Reads through a fresh handle, so that `dir` stays usable.
pub(crate) fn read_folder(dir: impl AsFd) -> io::Result<Vec<(Vec<u8>, Kind)>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut listing = rustix::fs::Dir::new(fd)?;
    let mut out = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push((name.to_vec(), Kind::from_file_type(entry.file_type())));
        }
    }
    Ok(out)
}
