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

/// Makes `out`, a clone of `base`, hold what `src` (of `size` bytes) holds, writing only the
/// blocks that differ: every other block stays shared with `base`, which is only read. A block
/// of zeros where `base` has data becomes a hole, so that holes stay holes. Returns how far the
/// copy got, as `copy` does.
pub(crate) fn patch(src: &File, base: &File, out: &File, size: u64) -> io::Result<u64> {
    let base_len = base.metadata()?.len();
    let (mut a, mut b) = (vec![0u8; PATCH_CHUNK], vec![0u8; PATCH_CHUNK]);
    let mut at = 0u64;
    while at < size {
        let want = usize::try_from((size - at).min(PATCH_CHUNK as u64)).unwrap_or(PATCH_CHUNK);
        let n = crate::source::read_full_at(src, &mut a[..want], at)?;
        if n == 0 {
            // It shrank while it was read.
            return Ok(at);
        }
        let m = if at < base_len {
            crate::source::read_full_at(base, &mut b[..n], at)?
        } else {
            0
        };
        // Compared, and written, in blocks much larger than a filesystem's, so that the calls
        // stay few, and small enough that a change of a few bytes costs little.
        let mut off = 0;
        while off < n {
            let end = (off + BLOCK).min(n);
            let same = end <= m && a[off..end] == b[off..end];
            if !same {
                write_block(out, &a[off..end], at + off as u64, end <= m)?;
            }
            off = end;
        }
        at += n as u64;
    }
    if base_len != size {
        rustix::fs::ftruncate(out, size)?;
    }
    Ok(size + copy_rest(src, out, size)?)
}

/// Compare and write granularity of `patch`.
const BLOCK: usize = 64 << 10;
/// What `patch` reads at once.
const PATCH_CHUNK: usize = 1 << 20;

/// Writes one block of a patched copy at `at`. Zeros over data the clone shares with its base
/// (`shared`) become a hole; elsewhere they are written, as any other bytes.
fn write_block(out: &File, data: &[u8], at: u64, shared: bool) -> io::Result<()> {
    if shared && data.iter().all(|&b| b == 0) {
        let punched = rustix::fs::fallocate(
            out,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            at,
            data.len() as u64,
        );
        if punched.is_ok() {
            return Ok(());
        }
    }
    out.write_all_at(data, at)
}

/// Whether a copy is in so many pieces that a clone of it would be slow to read and to clone
/// again: a file rewritten a little thousands of times. Its next version is then written whole,
/// in one piece again. Where the filesystem cannot say (`FIEMAP`), it is taken not to be.
pub(crate) fn too_fragmented(file: &File) -> bool {
    extents(file).is_some_and(|n| n > MOST_EXTENTS)
}

/// Past this many extents, a version is written whole (see `too_fragmented`).
const MOST_EXTENTS: u32 = 16_384;

/// How many extents the file's data is in, by `FS_IOC_FIEMAP` asked for a count only.
fn extents(file: &File) -> Option<u32> {
    fiemap(file, 0, 0).map(|map| map.mapped_extents)
}

/// How many of the file's bytes lie in extents it shares with another file (a clone, a
/// snapshot), by `FS_IOC_FIEMAP`; `None` where the filesystem cannot say.
pub(crate) fn shared_bytes(file: &File) -> Option<u64> {
    const LAST: u32 = 0x1;
    const SHARED: u32 = 0x2000;
    let mut shared = 0u64;
    let mut start = 0u64;
    loop {
        let map = fiemap(file, start, BATCH as u32)?;
        let found = &map.extents[..(map.mapped_extents as usize).min(BATCH)];
        for e in found {
            if e.flags & SHARED != 0 {
                shared = shared.saturating_add(e.length);
            }
        }
        match found.last() {
            Some(e) if e.flags & LAST == 0 => start = e.logical.saturating_add(e.length),
            _ => return Some(shared),
        }
    }
}

/// Extents asked of `FS_IOC_FIEMAP` at once.
const BATCH: usize = 64;

/// `struct fiemap_extent` of linux/fiemap.h.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// `struct fiemap` of linux/fiemap.h, with room for `BATCH` extents after it.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [Extent; BATCH],
}

/// The file's extents from `start` on, at most `count` of them (0: their number only).
fn fiemap(file: &File, start: u64, count: u32) -> Option<Fiemap> {
    // _IOWR('f', 11, struct fiemap)
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    let mut map = Fiemap {
        start,
        length: u64::MAX - start,
        flags: 0,
        mapped_extents: 0,
        extent_count: count.min(BATCH as u32),
        reserved: 0,
        extents: [Extent::default(); BATCH],
    };
    // SAFETY: FS_IOC_FIEMAP reads a `struct fiemap` and writes at most `extent_count` (never more
    // than `BATCH`) `struct fiemap_extent`s after it, which `Fiemap` lays out exactly and has
    // room for.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
    (r == 0).then_some(map)
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

    /// A file holding `data`, in a temporary folder.
    fn file_of(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(data).expect("write");
        f
    }

    #[test]
    fn a_patched_copy_holds_the_source_whatever_changed() {
        let base: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // A few bytes changed in the middle, a block zeroed, grown, shrunk, emptied.
        let mut changed = base.clone();
        changed[150_000] ^= 0xff;
        changed[70_000..140_000].fill(0);
        cases.push(changed);
        let mut grown = base.clone();
        grown.extend_from_slice(&[7u8; 123_456]);
        cases.push(grown);
        cases.push(base[..100_001].to_vec());
        cases.push(Vec::new());
        for want in cases {
            let src = file_of(&want);
            let base_file = file_of(&base);
            // What a clone of the base starts as.
            let out = file_of(&base);
            let got = patch(&src, &base_file, &out, want.len() as u64).expect("patch");
            assert_eq!(got, want.len() as u64);
            assert!(read_all(&out) == want, "{} bytes", want.len());
            assert!(read_all(&base_file) == base, "the base is only read");
        }
    }
}
