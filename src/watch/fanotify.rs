//! One fanotify mark on the whole filesystem that holds SRC, for a `watch` run as root (or
//! with CAP_SYS_ADMIN): every create, write, attribute change, move and delete on it, reported
//! with the folder and the name (`FAN_REPORT_DFID_NAME`, Linux 5.9), at no cost per folder, for
//! trees of any size. Events are kept only when they fall inside SRC and outside the folders
//! the backup skips; the folder of an event is found from its file handle
//! (`open_by_handle_at`), and remembered until a folder is moved or deleted. A queue that
//! overflowed asks for a full pass, as with inotify.
//!
//! A folder outside SRC that events keep coming from (DST above all, when it is on SRC's
//! filesystem: every copy makes three or four events) gets an ignore mark, so that the kernel
//! drops what happens in it before it is queued, instead of this reader taking it in and
//! dropping it. Marks are bounded: past `IGNORED_MAX`, the folder marked first loses its mark
//! (a first pass writes DST folder by folder, so the folders marked longest ago are done). A
//! folder moved into SRC clears every ignore mark, since it may carry one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, EventKind, Flag, MetadataKind, ModifyKind,
    RemoveKind, RenameMode,
};

/// What is asked of the mark: everything that can change a name or contents.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;

/// The folders of recent events, by file handle; forgotten whole when a folder moves.
const REMEMBERED: usize = 16_384;

/// Folders outside SRC with an ignore mark at a time, at most: each costs a kernel mark, out of
/// `fs.fanotify.max_user_marks` for all of this user's programs.
const IGNORED_MAX: usize = 4_096;

/// `FAN_MARK_IGNORE` (Linux 6.0): an ignore mask that, unlike the older
/// `FAN_MARK_IGNORED_MASK`, applies to a folder's children with `FAN_EVENT_ON_CHILD`.
const FAN_MARK_IGNORE: libc::c_uint = 0x0000_0400;

/// A running fanotify reader; dropping it stops the thread.
pub(crate) struct Fanotify {
    stop: Arc<AtomicBool>,
}

impl Drop for Fanotify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Fanotify {
    /// Marks the filesystem of `src` and sends every event under it, except under `skip`, to
    /// `send`. Fails where fanotify cannot do it (not root, an old kernel, a filesystem without
    /// file handles such as most FUSE ones): then inotify is used.
    pub(crate) fn start(
        src: &Path,
        skip: Vec<PathBuf>,
        send: impl Fn(notify::Event) + Send + 'static,
    ) -> io::Result<Fanotify> {
        // Events name their folder by file handle, and opening one takes CAP_DAC_READ_SEARCH:
        // root without it (a service with fewer capabilities) would drop every event.
        if !may_open_handles() {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        // SAFETY: plain syscalls with integer and C-string arguments; results are checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_REPORT_DFID_NAME,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by fanotify_init and is owned by nothing else.
        let fan = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(src.as_os_str().as_bytes())?;
        // SAFETY: as above; `path` is a valid C string.
        let marked = unsafe {
            libc::fanotify_mark(
                fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                MASK,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if marked < 0 {
            return Err(io::Error::last_os_error());
        }
        let mount = std::fs::File::open(src)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            fan,
            mount: OwnedFd::from(mount),
            src: src.to_path_buf(),
            skip,
            folders: HashMap::new(),
            ignored: HashSet::new(),
            marked: VecDeque::new(),
            ignoring: true,
        };
        let st = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("fanotify".into())
            .spawn(move || reader.run(&st, &send))?;
        Ok(Fanotify { stop })
    }
}

/// linux/capability.h.
const CAP_DAC_READ_SEARCH: u32 = 2;

/// Whether this process has CAP_DAC_READ_SEARCH (bit 2 of its effective set), which
/// `open_by_handle_at` needs.
fn may_open_handles() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_DAC_READ_SEARCH) != 0)
}

struct Reader {
    fan: OwnedFd,
    /// Any folder on the marked filesystem: the anchor `open_by_handle_at` needs.
    mount: OwnedFd,
    src: PathBuf,
    skip: Vec<PathBuf>,
    folders: HashMap<Vec<u8>, PathBuf>,
    /// Folders outside SRC with an ignore mark, by handle.
    ignored: HashSet<Vec<u8>>,
    /// The same handles, in the order they were marked: the first gives its mark up.
    marked: VecDeque<Vec<u8>>,
    /// False once the kernel refused an ignore mark (older than 6.0, or out of marks).
    ignoring: bool,
}

impl Reader {
    fn run(mut self, stop: &AtomicBool, send: &impl Fn(notify::Event)) {
        // u64s, so that the event records are aligned as the kernel writes them.
        let mut buf = vec![0u64; 8192];
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [rustix::event::PollFd::new(
                &self.fan,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: Duration::from_millis(200).as_nanos() as _,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(_) => return,
            }
            // SAFETY: the buffer is valid for its whole length in bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8)
            };
            let n = match rustix::io::read(&self.fan, &mut *bytes) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(_) => return,
            };
            for event in self.parse(&bytes[..n]) {
                send(event);
            }
        }
    }

    /// The events in one read, as notify events with full paths, those outside SRC dropped.
    fn parse(&mut self, bytes: &[u8]) -> Vec<notify::Event> {
        let mut out = Vec::new();
        let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut at = 0;
        while at + meta_len <= bytes.len() {
            // SAFETY: at least `meta_len` bytes are there; read unaligned to be safe.
            let meta: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
            let end = at + meta.event_len as usize;
            if meta.vers != libc::FANOTIFY_METADATA_VERSION || end > bytes.len() || end <= at {
                break;
            }
            if meta.fd >= 0 {
                // SAFETY: the kernel gave this descriptor to us; it is closed once, here.
                drop(unsafe { OwnedFd::from_raw_fd(meta.fd) });
            }
            if meta.mask & libc::FAN_Q_OVERFLOW != 0 {
                out.push(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan));
            } else if let Some((handle, name)) =
                dfid_name(&bytes[at + meta.metadata_len as usize..end])
            {
                self.events(meta.mask, handle, name, &mut out);
            }
            at = end;
        }
        out
    }

    fn events(&mut self, mask: u64, handle: &[u8], name: &OsStr, out: &mut Vec<notify::Event>) {
        if self.folders.len() > REMEMBERED {
            self.folders.clear();
        }
        // A folder seen for the first time stays open for this event: it may get an ignore mark.
        let mut opened = None;
        if !self.folders.contains_key(handle) {
            opened = self.resolve(handle);
            if opened.is_none() {
                return;
            }
        }
        let dir_moved = mask & libc::FAN_ONDIR != 0
            && mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_DELETE) != 0;
        // Most events on a whole filesystem are elsewhere (DST among them): dropped before
        // anything is made of them.
        let (path, elsewhere) = match self.folders.get(handle) {
            Some(dir) if dir.starts_with(&self.src) && name == "." => (Some(dir.clone()), false),
            Some(dir) if dir.starts_with(&self.src) => (Some(dir.join(name)), false),
            // Not SRC's own ancestors: what happens to SRC itself is reported in them.
            Some(dir) => (None, !self.src.starts_with(dir)),
            None => (None, false),
        };
        if elsewhere {
            self.ignore(handle, opened);
        }
        if dir_moved {
            // A folder moved: any remembered path below it may be wrong now, and one moved
            // into SRC may carry an ignore mark.
            self.folders.clear();
            if mask & libc::FAN_MOVED_TO != 0 && path.is_some() {
                self.forget_ignored();
            }
        }
        let Some(path) = path.filter(|p| !self.skip.iter().any(|s| p.starts_with(s))) else {
            return;
        };
        for kind in kinds(mask) {
            out.push(notify::Event::new(kind).add_path(path.clone()));
        }
    }

    /// Gives the folder with this handle (`opened`, where it is open already), outside SRC, an
    /// ignore mark for everything this reader asks for, on the folder and its entries; once per
    /// folder while it has one. Past `IGNORED_MAX`, the folder marked first gives its mark up.
    fn ignore(&mut self, handle: &[u8], opened: Option<OwnedFd>) {
        if !self.ignoring || self.ignored.contains(handle) {
            return;
        }
        let Some(fd) = opened.or_else(|| self.open(handle)) else {
            return;
        };
        if self.marked.len() >= IGNORED_MAX
            && let Some(oldest) = self.marked.pop_front()
        {
            self.ignored.remove(&oldest);
            // A folder that is gone took its mark with it.
            if let Some(old) = self.open(&oldest) {
                self.mark(&old, libc::FAN_MARK_REMOVE);
            }
        }
        if !self.mark(&fd, libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_SURV_MODIFY) {
            // Too old a kernel for this kind of mark, or out of marks: events are dropped here
            // as before.
            self.ignoring = false;
            return;
        }
        self.ignored.insert(handle.to_vec());
        self.marked.push_back(handle.to_vec());
    }

    /// Adds or removes the ignore mark of the folder open as `fd`; false when refused.
    fn mark(&self, fd: &OwnedFd, how: libc::c_uint) -> bool {
        // SAFETY: plain syscall on two valid descriptors and a C string. The folder is named
        // "." relative to its handle: an `O_PATH` descriptor on its own is refused (EBADF).
        let done = unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                how | FAN_MARK_IGNORE,
                MASK | libc::FAN_EVENT_ON_CHILD,
                fd.as_raw_fd(),
                c".".as_ptr(),
            )
        };
        done == 0
    }

    /// Removes every ignore mark (the filesystem mark stays).
    fn forget_ignored(&mut self) {
        if self.ignored.is_empty() {
            return;
        }
        // SAFETY: plain syscall; a flush of inode marks takes no object.
        unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_FLUSH,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            );
        }
        self.ignored.clear();
        self.marked.clear();
    }

    /// Opens the folder with this handle, as a path only; `None` when it is gone.
    fn open(&self, handle: &[u8]) -> Option<OwnedFd> {
        // SAFETY: `handle` is a whole `struct file_handle` as the kernel wrote it; the call
        // only reads it, and its result is checked.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                self.mount.as_fd().as_raw_fd(),
                handle.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor owned by nothing else.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Finds the path of the folder with this handle, now, and remembers it; the folder, open,
    /// or `None` when it is gone already (ESTALE: what happened in it is reported for its
    /// parent too).
    fn resolve(&mut self, handle: &[u8]) -> Option<OwnedFd> {
        let fd = self.open(handle)?;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        if path.as_os_str().as_bytes().ends_with(b" (deleted)") {
            return None;
        }
        self.folders.insert(handle.to_vec(), path);
        Some(fd)
    }
}

/// The folder handle and the name in an event's information records, where there is a
/// `FAN_EVENT_INFO_TYPE_DFID_NAME` record. The handle is returned as the kernel's whole
/// `struct file_handle` (its size, its type, then its bytes).
fn dfid_name(mut info: &[u8]) -> Option<(&[u8], &OsStr)> {
    const HDR: usize = 4;
    const FSID: usize = 8;
    while info.len() >= HDR {
        let kind = info[0];
        let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
        if len < HDR || len > info.len() {
            return None;
        }
        let record = &info[..len];
        if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME && record.len() >= HDR + FSID + 8 {
            let fh = &record[HDR + FSID..];
            let size = u32::from_ne_bytes([fh[0], fh[1], fh[2], fh[3]]) as usize;
            let handle = fh.get(..8 + size)?;
            let rest = fh.get(8 + size..)?;
            let name = CStr::from_bytes_until_nul(rest).ok()?;
            return Some((handle, OsStr::from_bytes(name.to_bytes())));
        }
        info = &info[len..];
    }
    None
}

/// The notify events one fanotify event stands for (the kernel merges several into one).
fn kinds(mask: u64) -> Vec<EventKind> {
    let dir = mask & libc::FAN_ONDIR != 0;
    let mut out = Vec::new();
    if mask & libc::FAN_CREATE != 0 {
        out.push(EventKind::Create(if dir {
            CreateKind::Folder
        } else {
            CreateKind::File
        }));
    }
    if mask & libc::FAN_MOVED_TO != 0 {
        out.push(EventKind::Modify(ModifyKind::Name(RenameMode::To)));
    }
    if mask & libc::FAN_MODIFY != 0 {
        out.push(EventKind::Modify(ModifyKind::Data(DataChange::Any)));
    }
    if mask & libc::FAN_ATTRIB != 0 {
        out.push(EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)));
    }
    if mask & libc::FAN_CLOSE_WRITE != 0 {
        out.push(EventKind::Access(AccessKind::Close(AccessMode::Write)));
    }
    if mask & libc::FAN_MOVED_FROM != 0 {
        out.push(EventKind::Modify(ModifyKind::Name(RenameMode::From)));
    }
    if mask & libc::FAN_DELETE != 0 {
        out.push(EventKind::Remove(RemoveKind::Any));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_events_come_apart() {
        let k = kinds(libc::FAN_CREATE | libc::FAN_CLOSE_WRITE);
        assert_eq!(
            k,
            vec![
                EventKind::Create(CreateKind::File),
                EventKind::Access(AccessKind::Close(AccessMode::Write))
            ]
        );
        assert_eq!(
            kinds(libc::FAN_CREATE | libc::FAN_ONDIR),
            vec![EventKind::Create(CreateKind::Folder)]
        );
        assert_eq!(
            kinds(libc::FAN_MOVED_FROM),
            vec![EventKind::Modify(ModifyKind::Name(RenameMode::From))]
        );
    }

    #[test]
    fn a_record_gives_its_folder_handle_and_name() {
        let mut rec = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        rec.extend_from_slice(&[7u8; 8]); // fsid
        rec.extend_from_slice(&4u32.to_ne_bytes()); // handle_bytes
        rec.extend_from_slice(&1i32.to_ne_bytes()); // handle_type
        rec.extend_from_slice(&[9, 9, 9, 9]); // f_handle
        rec.extend_from_slice(b"report.txt\0\0");
        let len = rec.len() as u16;
        rec[2..4].copy_from_slice(&len.to_ne_bytes());
        let (handle, name) = dfid_name(&rec).unwrap();
        assert_eq!(handle.len(), 12);
        assert_eq!(name, "report.txt");
        assert_eq!(dfid_name(&rec[..3]), None);
    }
}
