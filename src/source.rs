//! Reading SRC: folders and files are opened relative to an open folder, never through a
//! symlink, and a file is opened so that a FIFO that took its place cannot block the run.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::meta::{Kind, Meta};

/// Opens a source folder, refusing a symlink in its place.
pub(crate) fn open_folder(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Every entry of a source folder with its type (from the listing where the filesystem gives
/// it, else from `lstat`).
pub(crate) fn list(dir: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Kind)>> {
    let mut listing = crate::meta::read_folder(dir)?;
    for (name, kind) in &mut listing {
        if *kind == Kind::Unknown {
            *kind = stat(dir, name).map_or(Kind::Unknown, |m| m.kind);
        }
    }
    Ok(listing)
}

/// The metadata of the entry `name`, without following a symlink.
pub(crate) fn stat(dir: &OwnedFd, name: &[u8]) -> io::Result<Meta> {
    let st = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(Meta::from_stat(&st))
}

/// Where the symlink `name` points; `InvalidInput` when it is no longer a symlink.
pub(crate) fn read_link(dir: &OwnedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, OsStr::from_bytes(name), Vec::new())?.into_bytes())
}

/// Opens a source file for reading without following a symlink and without blocking on a FIFO
/// that took its place, and without changing its access time where the OS allows that. A
/// symlink in its place is `ELOOP`.
pub(crate) fn open_file(dir: &OwnedFd, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let name = OsStr::from_bytes(name);
    let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        other => other,
    }?;
    Ok(File::from(fd))
}

/// `open_file` of a path: a file `watch` looks into (its first bytes) between passes.
pub(crate) fn open_path(path: &Path) -> io::Result<File> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    open_file(&open_folder(dir)?, name.as_bytes())
}

/// A path that leads to the entry `name` of the open folder `dir` (through `/proc/self/fd`), for
/// a library that opens files by path, such as SQLite: it finds the folder that was opened, not
/// whatever its path leads to now.
pub(crate) fn path_of(dir: &OwnedFd, name: &[u8]) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(OsStr::from_bytes(name))
}

/// Whether an open error means that a symlink took the place of the file.
pub(crate) fn is_symlink_now(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
}

/// The metadata of an open file.
pub(crate) fn fstat(f: &File) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::fstat(f)?))
}

/// Whether two open files hold the same bytes.
pub(crate) fn same_bytes(mut a: File, mut b: File) -> io::Result<bool> {
    let (mut ba, mut bb) = (vec![0u8; 128 * 1024], vec![0u8; 128 * 1024]);
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Fills `buf` from `at` as far as the file goes (`pread`, so the file's offset stays).
pub(crate) fn read_full_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
