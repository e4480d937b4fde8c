//! The destination seam: everything a run needs from DST, and nothing about how a kind of
//! destination does it.
//!
//! A `Destination` opens folders; a `Folder` lists, reads and removes entries and stages new
//! files; a `Staged` file is written, given its metadata, made durable and then published under
//! a name that must not exist yet (`AlreadyExists` when it does: nothing is ever replaced).
//! `capabilities()` says what the destination can hold, found out once per run, so that the
//! engine branches on a value instead of on which backend it talks to. The local filesystem
//! (`local`) is one implementation, a folder on an SSH server (`sftp`) another; a bucket of an S3-compatible store (`store`), which has no
//! folders or rename, implements `stage` as a local spool and `publish` as one create-only
//! upload.

pub(crate) mod contents;
pub(crate) mod contract;
mod identity;
pub(crate) mod local;
#[cfg(test)]
pub(crate) mod mem;
mod probe;
pub(crate) mod sftp;
pub(crate) mod store;

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{About, Error, Why, reason};
use crate::meta::{Meta, Time};

/// A destination, opened for one run.
pub(crate) trait Destination: Send + Sync {
    /// Where it is, for messages.
    fn path(&self) -> &Path;

    /// What it can hold, as found at open.
    fn capabilities(&self) -> &Capabilities;

    /// The folder at `rel` (empty for the root), without creating anything; `None` when it does
    /// not exist.
    fn folder(&self, rel: &Path) -> io::Result<Option<Arc<dyn Folder>>>;

    /// Whether it is still the destination the run opened (not unmounted, not replaced).
    fn still_there(&self) -> Result<(), Unavailable>;

    /// Lets go of every handle on it and of its lock, so that it can be unmounted between
    /// batches; `reacquire` takes them again.
    fn release(&self);

    /// Opens it again for a batch, once it is checked to be the destination the run started
    /// with, and takes its lock.
    fn reacquire(&self) -> Result<(), Unavailable>;

    /// Free space for this user, in bytes, where known: a full destination is tried again when
    /// it grows.
    fn free_space(&self) -> Option<u64>;

    /// The size of the filesystem DST is on, in bytes, where known (for `--keep-free 5%`).
    fn total_space(&self) -> Option<u64> {
        None
    }

    /// Makes everything written so far durable, for a whole batch of staged copies at once.
    fn sync_all(&self) -> io::Result<()>;

    /// Makes durable the names given since the last call (the entries of every folder that
    /// changed): what a copy needs before it is said to be made.
    fn sync_names(&self) -> io::Result<()> {
        self.sync_all()
    }

    /// Whether it is reached over the network (a bucket, a server) rather than through a
    /// mounted filesystem: a lost one "cannot be reached" rather than "is gone (unmounted?)".
    fn over_network(&self) -> bool {
        false
    }

    /// Reads again what a destination that answers from a listing kept since it was opened,
    /// before a full pass: the truth is what DST holds now, whatever else changed it. Nothing to
    /// do where every question goes to DST itself.
    fn refresh(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A folder in the destination.
pub(crate) trait Folder: Send + Sync {
    /// Where it is, for messages.
    fn path(&self) -> &Path;

    /// The child folder `name`, created when missing if `create`; `None` when missing and not
    /// created. Something else under that name (a file, a symlink) is an error, never followed.
    fn child(&self, name: &OsStr, create: bool) -> io::Result<Option<Opened>>;

    /// The folder's own metadata.
    fn meta(&self) -> io::Result<Meta>;

    /// Every name in the folder.
    fn list(&self) -> io::Result<Vec<Vec<u8>>>;

    /// The names of the folders in the folder (a symlink to one is not one). Each kind of
    /// destination answers from what its listing already says where it can.
    fn subfolders(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|n| self.stat(n).is_ok_and(|m| m.kind == crate::meta::Kind::Dir))
            .collect())
    }

    /// The metadata of the entry `name`, without following a symlink.
    fn stat(&self, name: &[u8]) -> io::Result<Meta>;

    /// `stat`, with the entry's birth time where the destination keeps one.
    fn entry(&self, name: &[u8]) -> io::Result<(Meta, Option<Time>)>;

    fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>>;

    /// Opens a regular file for reading (to compare or restore contents).
    fn open_read(&self, name: &[u8]) -> io::Result<File>;

    /// Deletes the file or symlink `name` (an old version being pruned); never a folder.
    fn remove(&self, name: &[u8]) -> io::Result<()>;

    /// Removes a temporary file or symlink that an interrupted run left (never a folder).
    fn remove_leftover(&self, name: &[u8]) -> io::Result<()>;

    /// Starts a new copy that will join `name`'s family and have the permission bits `mode`
    /// (a destination may create it with them, to spare setting them again).
    fn stage(&self, name: &[u8], mode: u32) -> io::Result<Box<dyn Staged>>;

    /// `stage`, for a copy that another writer opens by its path (`/proc/self/fd/N`), as
    /// SQLite does, rather than writing through the handle.
    fn stage_by_path(&self, name: &[u8], mode: u32) -> io::Result<Box<dyn Staged>> {
        self.stage(name, mode)
    }

    /// Creates the symlink `name` → `target` with `meta`'s times (and owner, as root), whole or
    /// not at all; `AlreadyExists` when the name is taken.
    fn symlink(&self, target: &[u8], name: &[u8], meta: &Meta) -> io::Result<()>;

    /// Gives the folder `meta`'s owner (as root), mode and times.
    fn set_meta(&self, meta: &Meta) -> io::Result<()>;

    /// Makes the folder's new names durable.
    fn sync(&self) -> io::Result<()>;

    /// Sets the mode, owner (as kept) and extended attributes of the existing file `name` to
    /// `meta`'s and `src`'s, and with `times` its times to `meta`'s, leaving its contents as
    /// they are.
    fn update_meta(&self, name: &[u8], meta: &Meta, src: &File, times: bool) -> io::Result<()>;

    /// Creates the empty file `name`, failing (`AlreadyExists`) rather than replacing: the
    /// record of a deletion.
    fn create_empty(&self, name: &[u8]) -> io::Result<()>;

    /// Gives the entry `name` the name `to` within the folder, never replacing (`AlreadyExists`
    /// when `to` is taken): a file that is in the way of a folder moves aside into its family.
    fn set_aside(&self, name: &[u8], to: &[u8]) -> io::Result<()>;

    /// Gives the copy `from`, elsewhere in DST, the name `name` here without writing its data
    /// again (a hard link, a server-side copy), failing (`AlreadyExists`) rather than replacing;
    /// `Unsupported` where the destination cannot (`Capabilities::link`).
    fn link(&self, _from: &Elsewhere, _name: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A copy elsewhere in DST, by its place and open.
pub(crate) struct Elsewhere<'a> {
    /// Its folder, relative to DST.
    pub rel: &'a Path,
    pub name: &'a [u8],
    pub file: &'a File,
}

/// A child folder as opened, whether this call created it, and its metadata as found.
pub(crate) struct Opened {
    pub folder: Arc<dyn Folder>,
    pub created: bool,
    pub meta: Meta,
}

/// A copy being written, not yet visible under a final name. Dropped unpublished, it is
/// removed.
pub(crate) trait Staged: Send {
    /// Copies `src`, which holds `size` bytes, from its start (to its end if it has grown);
    /// returns how far the copy got, which differs from `size` when the source changed. Holes
    /// in a sparse source stay holes where the destination can keep them.
    fn copy_from(&mut self, src: &File, size: u64) -> io::Result<u64>;

    /// Gives the copy `meta`'s owner (as root), mode, `src`'s extended attributes, and times.
    fn set_meta(&mut self, meta: &Meta, src: &File) -> io::Result<()>;

    /// The file being written, for a writer other than `copy_from` (SQLite's backup).
    fn file(&self) -> io::Result<&File>;

    /// Ends writing, checking the result: a copy that fails here is never published.
    fn close(&mut self) -> io::Result<()>;

    /// Makes this one copy's data durable (where a batch has only one).
    fn sync(&self) -> io::Result<()>;

    /// Copies `src` (of `size` bytes) as a clone of `base`, the newest copy of the same file in
    /// this destination, with only the blocks that differ written: the new version shares every
    /// other block with `base`, which is never written. Where that cannot be done, nothing is
    /// written and the answer says so (`Whole`), and the caller copies whole with `copy_from`.
    fn copy_changed(&mut self, _src: &File, _size: u64, _base: &File) -> io::Result<Patched> {
        Ok(Patched::Whole(None))
    }

    /// Publishes the copy under `name`, never replacing: `AlreadyExists` when taken, and the
    /// copy stays staged for another name.
    fn publish(&mut self, name: &[u8]) -> io::Result<()>;
}

/// What became of `Staged::copy_changed`.
#[derive(Debug)]
pub(crate) enum Patched {
    /// A clone of the base with what differs written; how far the copy got, as `copy_from`.
    Copied(u64),
    /// Nothing written: copy whole. With the reason, where this destination can clone but not
    /// this file (Btrfs will not clone between a NOCOW file and another).
    Whole(Option<io::Error>),
}

/// Where DST is, parsed once from the command line or the config file: a folder, a bucket or a
/// folder on an SSH server. Everything after that asks the `Location` or the opened
/// `Destination`, never the text it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// A folder on a mounted filesystem (canonical once it is known to exist).
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX`, and that text as it is shown.
    S3(store::Location, PathBuf),
    /// `sftp://[USER@]HOST[:PORT]/PATH`, and that text as it is shown.
    Sftp(sftp::Address, PathBuf),
}

impl Location {
    /// DST as given: a URL of a kind this tool writes to, else a path (a colon in a folder name
    /// included); an error for a URL of another kind.
    pub(crate) fn parse(dst: &Path) -> Result<Location, Error> {
        let Some(text) = dst.to_str() else {
            return Ok(Location::Local(dst.to_path_buf()));
        };
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Location::Local(dst.to_path_buf()));
        };
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Ok(Location::Local(dst.to_path_buf()));
        }
        match scheme {
            "s3" => store::Location::parse(text).map(|l| {
                let url = PathBuf::from(l.url());
                Location::S3(l, url)
            }),
            "sftp" => sftp::Address::parse(text).map(|a| {
                let url = PathBuf::from(a.url());
                Location::Sftp(a, url)
            }),
            _ => Err(Error::new(
                About::Destination(dst.to_path_buf()),
                Why::UnknownScheme(scheme.to_string()),
            )),
        }
    }

    /// How DST is named in messages and in the state file: its folder, or its URL.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Location::Local(p) | Location::S3(_, p) | Location::Sftp(_, p) => p,
        }
    }

    /// The folder, for a destination on a mounted filesystem.
    pub(crate) fn folder(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }

    /// Whether it is reached over the network rather than through a mounted filesystem: what
    /// waits on it is the network, not a disk.
    pub(crate) fn over_network(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    /// Makes a missing local destination: the folder alone, or with its parents (`all`).
    /// Nothing to make for a bucket or a server, where folders come with what is written.
    pub(crate) fn create(&self, all: bool) -> io::Result<()> {
        let Location::Local(p) = self else {
            return Ok(());
        };
        // The folders made, outermost first, so that each one's name is made durable in its
        // parent: a destination that a power cut takes back would take every copy with it.
        let mut made = Vec::new();
        let mut at = Some(p.as_path());
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            made.push(dir);
            at = dir.parent();
            if !all {
                break;
            }
        }
        for dir in made.iter().rev() {
            std::fs::create_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        Ok(())
    }
}

/// The scheme of a URL (`s3` of `s3://b/p`), or nothing.
pub(crate) fn scheme_of(text: &str) -> String {
    text.split_once("://").map_or("", |(s, _)| s).to_string()
}

/// Opens DST to write into it, or read-only (a dry run, `verify`, `versions`, `restore`): then
/// nothing is written, not even a probe or a lock.
pub(crate) fn open(dst: &Location, write: bool) -> Result<Arc<dyn Destination>, OpenError> {
    match dst {
        Location::S3(loc, _) => Ok(Arc::new(store::Store::open(loc, write)?)),
        Location::Sftp(addr, _) => Ok(Arc::new(sftp::SftpDest::open(addr, write)?)),
        Location::Local(path) if write => Ok(Arc::new(local::Local::open(path)?)),
        Location::Local(path) => Ok(Arc::new(local::Local::open_read_only(path, false)?)),
    }
}

/// Opens the folder `rel` below the root one component at a time, never following a symlink,
/// creating what is missing if `create`. `None` when missing and not created.
pub(crate) fn open_path(
    dest: &dyn Destination,
    rel: &Path,
    create: bool,
) -> io::Result<Option<Opened>> {
    let Some(root) = dest.folder(Path::new(""))? else {
        return Ok(None);
    };
    let mut opened = Opened {
        meta: root.meta()?,
        folder: root,
        created: false,
    };
    for name in rel.iter() {
        match opened.folder.child(name, create)? {
            Some(child) => opened = child,
            None => return Ok(None),
        }
    }
    Ok(Some(opened))
}

/// Why a destination could not be used at all.
#[derive(Debug)]
pub(crate) enum OpenError {
    Open(io::Error),
    NotWritable(io::Error),
    /// Another run holds the destination's lock.
    Locked,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Open(e) => f.write_str(&reason(e)),
            OpenError::NotWritable(e) => write!(f, "cannot be written: {}", reason(e)),
            OpenError::Locked => {
                f.write_str("another backup is already writing into this destination")
            }
        }
    }
}

/// Why a destination that a run opened cannot be written into now.
#[derive(Debug)]
pub(crate) enum Unavailable {
    /// The path leads nowhere, or not to a folder: unmounted, unplugged, the network gone.
    Gone(io::Error),
    /// The path leads to a folder of another filesystem: the bare mount point on the system
    /// disk, or another drive mounted at the same place.
    Replaced { now: String, was: String },
    /// Another run holds the destination's lock.
    Locked,
}

/// The same state, said in the same words: for saying a state once, not once a second.
impl PartialEq for Unavailable {
    fn eq(&self, other: &Unavailable) -> bool {
        match (self, other) {
            (Unavailable::Gone(a), Unavailable::Gone(b)) => {
                (a.kind(), a.raw_os_error()) == (b.kind(), b.raw_os_error())
            }
            (
                Unavailable::Replaced { now, was },
                Unavailable::Replaced {
                    now: now2,
                    was: was2,
                },
            ) => (now, was) == (now2, was2),
            (Unavailable::Locked, Unavailable::Locked) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Gone(e) => write!(f, "it is gone ({})", reason(e)),
            Unavailable::Replaced { now, was } => write!(
                f,
                "the path now leads to another filesystem ({now}, not {was})"
            ),
            Unavailable::Locked => f.write_str("another backup is writing into it"),
        }
    }
}

/// How a copy gets its final name without replacing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// `renameat2(RENAME_NOREPLACE)`: one call, fails with `EEXIST`.
    RenameNoReplace,
    /// `link` to the final name (fails with `EEXIST`), then `unlink` of the temporary name.
    HardLink,
    /// For filesystems with neither (exFAT, FAT through FUSE): look the final name up, and rename
    /// only when it is free. Safe against other runs of `backup` (they are kept out by the
    /// destination's lock); a program outside that creates the very same name between the look
    /// and the rename would have its file replaced.
    CheckThenRename,
    /// An object store that honours `If-None-Match: *`: one upload that fails when the name is
    /// taken.
    CreateOnly,
    /// An object store that ignores conditional writes: the name is checked against the
    /// listing, which this run keeps, as the one writer that the store's lock object lets in.
    UniqueNames,
    /// Not probed (a read-only run): try each of the above in turn.
    Unknown,
}

/// A kind of name a destination refuses, or does not keep as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Char(char),
    NonAscii,
    /// Names that are not UTF-8 (bucket keys must be).
    NonUtf8,
    Control,
    TrailingDot,
    TrailingSpace,
}

impl Refusal {
    /// Every kind the probe tries, with the name it tries it on.
    pub(crate) const PROBED: [(Refusal, &'static str); 12] = [
        (Refusal::Char(':'), "n:"),
        (Refusal::Char('*'), "n*"),
        (Refusal::Char('?'), "n?"),
        (Refusal::Char('"'), "n\""),
        (Refusal::Char('<'), "n<"),
        (Refusal::Char('>'), "n>"),
        (Refusal::Char('|'), "n|"),
        (Refusal::Char('\\'), "n\\"),
        (Refusal::NonAscii, "n\u{e9}"),
        (Refusal::Control, "n\u{1}"),
        (Refusal::TrailingDot, "n."),
        (Refusal::TrailingSpace, "n "),
    ];

    /// Whether `name` is of this kind.
    pub(crate) fn matches(self, name: &[u8]) -> bool {
        match self {
            Refusal::Char(c) => name.contains(&(c as u8)),
            Refusal::NonAscii => !name.is_ascii(),
            Refusal::NonUtf8 => std::str::from_utf8(name).is_err(),
            Refusal::Control => name.iter().any(u8::is_ascii_control),
            Refusal::TrailingDot => name.ends_with(b"."),
            Refusal::TrailingSpace => name.ends_with(b" "),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Char(c) => write!(f, "'{c}' not allowed"),
            Refusal::NonAscii => f.write_str("characters outside ASCII not allowed"),
            Refusal::NonUtf8 => f.write_str("names that are not UTF-8 not allowed"),
            Refusal::Control => f.write_str("control characters not allowed"),
            Refusal::TrailingDot => f.write_str("a dot at the end is not kept"),
            Refusal::TrailingSpace => f.write_str("a space at the end is not kept"),
        }
    }
}

/// What a destination can hold, found out once per run by a probe in DST itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// The filesystem's name (`ext4`, `fuseblk`), for messages only: behaviour follows from the
    /// other fields.
    pub kind: String,
    /// Whether the probe ran (a run that writes); else the rest is assumed.
    pub probed: bool,
    /// The modification time resolution it keeps, in nanoseconds; `None` when not probed, or
    /// when it keeps no times that were set.
    pub precision: Option<u64>,
    /// FAT and exFAT store local time: at a daylight-saving change every time moves by an hour.
    /// Known from the filesystem's name, the one thing that is.
    pub local_time: bool,
    pub publish: Publish,
    /// Whether a file keeps its times when it is published (fusefat sets a renamed file's time
    /// to the time of the rename).
    pub publish_keeps_times: bool,
    /// Whether a copy is written as an unnamed file (`O_TMPFILE`) and linked into place, rather
    /// than written under a temporary name.
    pub unnamed: bool,
    pub symlinks: bool,
    /// Whether a symlink's own owner and times can be set (through SFTP they cannot: the call
    /// follows the link).
    pub symlink_meta: bool,
    pub permissions: bool,
    /// Whether copies can be given their source's owner (only root can, on a filesystem that
    /// keeps owners).
    pub owners: bool,
    pub xattrs: bool,
    pub case_sensitive: bool,
    /// Names it refuses, or does not keep as given.
    pub refuses: Vec<Refusal>,
    /// The largest file it can hold, in bytes, where that is less than any real file.
    pub max_file_size: Option<u64>,
    /// Whether the newest copy's mode, owner and xattrs can follow a metadata-only change in
    /// place (an object's metadata cannot change without rewriting the object).
    pub refresh: bool,
    /// Whether copies are published in batches that share one sync; where nothing is shared
    /// (an upload is durable when acknowledged), each copy is published as soon as it is staged.
    pub group_commit: bool,
    /// Whether a file can share blocks with another (a clone): a new version then costs only
    /// what changed since the one before.
    pub clone: bool,
    /// Whether a copy can take a second name elsewhere in DST without its data being written
    /// again (a hard link, a server-side copy): a file moved in SRC then costs no data where
    /// DST cannot clone. Where a second name shares an inode, a later change of metadata
    /// breaks the link first.
    pub link: bool,
}

impl Capabilities {
    /// What is assumed of a destination that was not probed (a read-only run writes nothing, not
    /// even a probe): everything, at an unknown precision.
    pub(crate) fn assumed(kind: String) -> Capabilities {
        Capabilities {
            local_time: is_fat_family(&kind),
            kind,
            probed: false,
            precision: None,
            publish: Publish::Unknown,
            publish_keeps_times: true,
            unnamed: false,
            symlinks: true,
            symlink_meta: true,
            permissions: true,
            owners: false,
            xattrs: true,
            case_sensitive: true,
            refuses: Vec::new(),
            max_file_size: None,
            refresh: true,
            group_commit: true,
            clone: false,
            link: false,
        }
    }

    /// What copies into this destination lose, for the warnings at the start of a run. Owners
    /// are only kept as root, so they are only missed then.
    pub(crate) fn losses(&self, as_root: bool) -> Vec<Loss> {
        if !self.probed {
            return Vec::new();
        }
        [
            (self.precision.is_none(), Loss::Times),
            (!self.permissions, Loss::Permissions),
            (as_root && !self.owners, Loss::Owners),
            (!self.xattrs, Loss::Xattrs),
            (self.symlinks && !self.symlink_meta, Loss::SymlinkMeta),
        ]
        .into_iter()
        .filter_map(|(lost, loss)| lost.then_some(loss))
        .collect()
    }
}

/// What copies into a destination cannot keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loss {
    /// Modification times: files are compared by their contents instead.
    Times,
    Permissions,
    Owners,
    Xattrs,
    /// The owner and times of symlinks.
    SymlinkMeta,
}

/// Whether a filesystem of this name stores FAT's local-time timestamps.
pub(crate) fn is_fat_family(kind: &str) -> bool {
    matches!(kind, "vfat" | "msdos" | "fat" | "fusefat" | "exfat")
}

/// FAT32's largest file: 4 GiB less one byte.
pub(crate) const FAT_MAX_FILE: u64 = (4 << 30) - 1;

/// The resolutions a filesystem may keep modification times at, finest first: nanoseconds
/// (ext4, XFS, Btrfs, tmpfs), 100 ns (NTFS), microseconds (some network filesystems), 10 ms
/// (exFAT), milliseconds, seconds, and FAT's two seconds.
pub(crate) const PRECISIONS: [u64; 7] = [
    1,
    100,
    1_000,
    1_000_000,
    10_000_000,
    1_000_000_000,
    2_000_000_000,
];

/// The resolution at which a filesystem that was given the time `set` and gave back `got` keeps
/// times: the finest one at which `set` truncates to `got`, or FAT's two seconds rounded up.
/// `None` when no resolution explains it (the filesystem keeps no times of its own).
pub(crate) fn precision_of(set: Time, got: Time) -> Option<u64> {
    PRECISIONS
        .into_iter()
        .find(|&p| crate::meta::kept_at(set, got, p))
}

/// Prefix of the temporary files that copies are written under: `.backup-tmp.<12 hex>.<name>`.
/// The naming rule never takes such a name for a version.
pub(crate) const TEMP_PREFIX: &[u8] = b".backup-tmp.";
const TEMP_RANDOM_LEN: usize = 12;

/// Whether `name` has the shape of one of our temporary files.
pub(crate) fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    rest.len() > TEMP_RANDOM_LEN
        && rest[..TEMP_RANDOM_LEN]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && rest[TEMP_RANDOM_LEN] == b'.'
}

/// A fresh temporary name for a copy of `name`, cut to fit `NAME_MAX`.
pub(crate) fn temp_name(name: &[u8]) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
        u64::from_le_bytes(b) ^ rustix::process::getpid().as_raw_nonzero().get() as u64
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A multiplicative hash spreads consecutive counters over the whole range.
    let r = (seed ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    let mut out = Vec::with_capacity(crate::naming::NAME_MAX);
    out.extend_from_slice(TEMP_PREFIX);
    out.extend_from_slice(format!("{r:012x}").as_bytes());
    out.push(b'.');
    let room = crate::naming::NAME_MAX - out.len();
    out.extend_from_slice(&name[..name.len().min(room)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64, nsec: u32) -> Time {
        Time { sec, nsec }
    }

    #[test]
    fn precision_from_what_came_back() {
        let set = t(1_700_000_001, 123_456_789);
        assert_eq!(precision_of(set, set), Some(1), "ext4, XFS, Btrfs, tmpfs");
        assert_eq!(
            precision_of(set, t(1_700_000_001, 123_456_700)),
            Some(100),
            "NTFS"
        );
        assert_eq!(
            precision_of(set, t(1_700_000_001, 123_456_000)),
            Some(1_000)
        );
        assert_eq!(
            precision_of(set, t(1_700_000_001, 123_000_000)),
            Some(1_000_000)
        );
        assert_eq!(
            precision_of(set, t(1_700_000_001, 120_000_000)),
            Some(10_000_000),
            "exFAT"
        );
        assert_eq!(precision_of(set, t(1_700_000_001, 0)), Some(1_000_000_000));
        assert_eq!(
            precision_of(set, t(1_700_000_002, 0)),
            Some(2_000_000_000),
            "FAT rounds up"
        );
        assert_eq!(
            precision_of(set, t(1_700_000_000, 0)),
            Some(2_000_000_000),
            "or down"
        );
        assert_eq!(precision_of(set, t(5, 0)), None, "no times of its own");
    }

    #[test]
    fn refusals_match_names() {
        assert!(Refusal::Char(':').matches(b"a:b"));
        assert!(!Refusal::Char(':').matches(b"ab"));
        assert!(Refusal::NonAscii.matches("é".as_bytes()));
        assert!(Refusal::Control.matches(b"a\x01"));
        assert!(Refusal::TrailingDot.matches(b"a."));
        assert!(!Refusal::TrailingDot.matches(b".a"));
        assert!(Refusal::TrailingSpace.matches(b"a "));
        assert_eq!(Refusal::Char(':').to_string(), "':' not allowed");
        for (kind, name) in Refusal::PROBED {
            assert!(kind.matches(name.as_bytes()), "{kind:?} {name:?}");
        }
    }

    #[test]
    fn what_a_destination_loses_is_said_once_per_kind() {
        let mut c = Capabilities::assumed("exfat".into());
        assert!(c.losses(true).is_empty(), "not probed: nothing is claimed");
        c.probed = true;
        c.precision = Some(1_000_000_000);
        c.permissions = false;
        c.owners = false;
        c.xattrs = false;
        c.symlinks = false;
        let as_root = c.losses(true);
        assert_eq!(as_root, [Loss::Permissions, Loss::Owners, Loss::Xattrs]);
        assert_eq!(c.losses(false).len(), 2, "owners are only missed as root");
        c.precision = None;
        assert_eq!(c.losses(false)[0], Loss::Times);
        assert!(c.local_time, "exFAT keeps local time");
        assert!(!Capabilities::assumed("ntfs".into()).local_time);
    }

    #[test]
    fn temp_names_are_recognised_and_never_versions() {
        let t = temp_name(b"report.txt");
        assert!(is_temp_name(&t), "{}", String::from_utf8_lossy(&t));
        assert!(t.ends_with(b".report.txt"));
        assert_eq!(crate::naming::version_of(b"report.txt", &t), None);
        assert_ne!(temp_name(b"a"), temp_name(b"a"));
        assert!(!is_temp_name(b".backup-tmp.zz.report.txt"));
        assert!(!is_temp_name(b"report.txt"));
    }

    #[test]
    fn temp_names_fit_name_max() {
        let long = vec![b'x'; 255];
        let t = temp_name(&long);
        assert_eq!(t.len(), crate::naming::NAME_MAX);
        assert!(is_temp_name(&t));
    }
}
