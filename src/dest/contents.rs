//! A file's bytes copied between two local files: by the kernel where it can
//! (`copy_file_range`, which may share blocks), by reads and writes where it cannot, and with a
//! sparse source's holes left as holes.
//!
//! A hole copied as zeros costs its whole length on the destination: a 2 GiB disk image holding
//! 1 MiB of data would not fit on a 256 MiB drive. Where the destination cannot keep holes
//! (FAT, exFAT), skipping over them still works: the filesystem fills them with zeros itself.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Copies `src`, which holds `size` bytes, from its start into the empty `out`; past `size`
/// too, if it has grown. Returns how far the copy got: `size` when it is whole, less when the
/// source shrank, more when it grew (either way the caller throws the copy away).
pub(crate) fn copy(src: &File, out: &File, size: u64) -> io::Result<u64> {
    let segments = match layout(src, size) {
        Layout::Dense => vec![(0, size)],
        Layout::Data(segments) => segments,
        Layout::Unknown => {
            let got = skip_zeros(src, out, size)?;
            if got < size {
                return Ok(got);
            }
            rustix::fs::ftruncate(out, size)?;
            return Ok(size + copy_rest(src, out, size)?);
        }
    };
    let sparse = segments.iter().map(|(start, end)| end - start).sum::<u64>() < size;
    for (start, end) in segments {
        let got = copy_range(src, out, start, end - start)?;
        if got < end - start {
            return Ok(start + got);
        }
    }
    if sparse {
        // A trailing hole: the length says where the file ends.
        rustix::fs::ftruncate(out, size)?;
    }
    Ok(size + copy_rest(src, out, size)?)
}

/// Where a source file's data lies.
enum Layout {
    /// No holes (the usual case, told by its block count without asking for its layout).
    Dense,
    /// Data in these stretches, as `[start, end)`, and holes between them.
    Data(Vec<(u64, u64)>),
    /// Holes, by its block count, but the filesystem cannot say where (FUSE drivers without
    /// `lseek`, such as ntfs-3g, answer that all of it is data).
    Unknown,
}

fn layout(src: &File, size: u64) -> Layout {
    // Below this, a hole would save little and finding it costs a call.
    const WORTH_IT: u64 = 64 << 10;
    if size < WORTH_IT {
        return Layout::Dense;
    }
    let Some(allocated) = rustix::fs::fstat(src)
        .ok()
        .and_then(|st| u64::try_from(st.st_blocks).ok())
        .map(|blocks| blocks.saturating_mul(512))
    else {
        return Layout::Dense;
    };
    if allocated >= size {
        return Layout::Dense;
    }
    let mut segments = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match rustix::fs::seek(src, SeekFrom::Data(at)) {
            Ok(p) => p,
            // No data after `at`: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(_) => return Layout::Unknown,
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
            Ok(p) => p.min(size),
            Err(_) => return Layout::Unknown,
        };
        if end <= start {
            return Layout::Unknown;
        }
        segments.push((start, end));
        at = end;
    }
    if segments == [(0, size)] {
        return Layout::Unknown;
    }
    Layout::Data(segments)
}

/// Copies `size` bytes by reads, writing only the blocks that are not all zeros, as `cp` does
/// where a filesystem cannot tell where its holes are. Returns how many bytes were read.
fn skip_zeros(src: &File, out: &File, size: u64) -> io::Result<u64> {
    const BLOCK: usize = 64 << 10;
    let mut buf = vec![0u8; 16 * BLOCK];
    let mut done: u64 = 0;
    while done < size {
        let n = read_at(src, &mut buf, done, Some(size - done))?;
        if n == 0 {
            break;
        }
        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
            if block.iter().any(|&b| b != 0) {
                out.write_all_at(block, done + (i * BLOCK) as u64)?;
            }
        }
        start_writeback(out, done, n);
        done += n as u64;
    }
    Ok(done)
}

/// Copies `len` bytes at `offset` of `src` to the same offset of `out`. Returns how many were
/// copied: fewer only where `src` ended first.
fn copy_range(src: &File, out: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut done: u64 = 0;
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(CHUNK).min(CHUNK);
        let (mut from, mut to) = (offset + done, offset + done);
        match rustix::fs::copy_file_range(src, Some(&mut from), out, Some(&mut to), want) {
            Ok(0) => break,
            Ok(n) => {
                start_writeback(out, offset + done, n);
                done += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::BADF) => {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if done == len {
        return Ok(done);
    }
    // Plain reads and writes finish the job where the kernel cannot copy between these two
    // files, or where it reported the end early (procfs, some FUSE filesystems).
    Ok(done + read_write(src, out, offset + done, Some(len - done))?)
}

/// Whatever `src` holds past `size`, copied: nothing, unless it grew while it was read.
fn copy_rest(src: &File, out: &File, size: u64) -> io::Result<u64> {
    read_write(src, out, size, None)
}

/// Copies from `offset` by reads and writes, `len` bytes or to the end of `src`.
fn read_write(src: &File, out: &File, offset: u64, len: Option<u64>) -> io::Result<u64> {
    // Usually at the end already: look with a small buffer before allocating a big one.
    let mut probe = [0u8; 512];
    let first = read_at(src, &mut probe, offset, len)?;
    if first == 0 {
        return Ok(0);
    }
    out.write_all_at(&probe[..first], offset)?;
    let mut done = first as u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let left = len.map(|l| l - done);
        if left == Some(0) {
            return Ok(done);
        }
        let n = read_at(src, &mut buf, offset + done, left)?;
        if n == 0 {
            return Ok(done);
        }
        out.write_all_at(&buf[..n], offset + done)?;
        start_writeback(out, offset + done, n);
        done += n as u64;
    }
}

/// One read at `offset` into `buf`, at most `left` bytes; 0 at the end.
fn read_at(src: &File, buf: &mut [u8], offset: u64, left: Option<u64>) -> io::Result<usize> {
    let max = left.map_or(buf.len(), |l| {
        usize::try_from(l).unwrap_or(usize::MAX).min(buf.len())
    });
    loop {
        match src.read_at(&mut buf[..max], offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Bytes copied per `copy_file_range` call; between calls, the disk starts writing what was
/// copied.
const CHUNK: usize = 32 << 20;

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting, so
/// that a big file's data is mostly on disk by the time the batch is synced, instead of all of
/// it being written during that one wait. Small files are left to the batch's sync.
fn start_writeback(out: &File, offset: u64, len: usize) {
    if offset + len as u64 >= 4 << 20 {
        // SAFETY: a plain syscall on a valid descriptor; its result is only a hint.
        unsafe {
            libc::sync_file_range(
                out.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn allocated(f: &File) -> u64 {
        u64::try_from(rustix::fs::fstat(f).expect("fstat").st_blocks).expect("blocks") * 512
    }

    fn read_all(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; usize::try_from(f.metadata().expect("len").len()).expect("fits")];
        f.read_exact_at(&mut v, 0).expect("read");
        v
    }

    #[test]
    fn holes_stay_holes_and_the_bytes_are_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut src = File::create_new(dir.path().join("src")).expect("src");
        let size: u64 = 64 << 20;
        src.set_len(size).expect("len");
        for at in [0u64, 20 << 20, size - 4096] {
            src.seek(io::SeekFrom::Start(at)).expect("seek");
            src.write_all(&[7u8; 4096]).expect("write");
        }
        src.sync_all().expect("sync");
        let src = File::open(dir.path().join("src")).expect("open");
        if allocated(&src) >= size {
            eprintln!("skipped: this filesystem keeps no holes");
            return;
        }
        let out = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(dir.path().join("out"))
            .expect("out");
        assert_eq!(copy(&src, &out, size).expect("copy"), size);
        out.sync_all().expect("sync");
        assert_eq!(out.metadata().expect("len").len(), size);
        assert!(
            allocated(&out) <= allocated(&src) + (64 << 10),
            "holes were filled"
        );
        assert!(read_all(&out) == read_all(&src), "the bytes differ");
    }

    #[test]
    fn a_trailing_hole_keeps_the_length_and_a_grown_file_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("src");
        let mut src = File::create_new(&path).expect("src");
        src.write_all(&[1u8; 100 << 10]).expect("write");
        src.set_len(8 << 20).expect("len");
        let src = File::open(&path).expect("open");
        let out = File::create_new(dir.path().join("out")).expect("out");
        assert_eq!(copy(&src, &out, 8 << 20).expect("copy"), 8 << 20);
        assert_eq!(out.metadata().expect("len").len(), 8 << 20);

        // Told a smaller size than the file now has: the copy reports the extra bytes.
        let out2 = File::create_new(dir.path().join("out2")).expect("out2");
        assert_eq!(copy(&src, &out2, 4 << 20).expect("copy"), 8 << 20);
    }
}
