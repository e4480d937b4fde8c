//! What can go wrong, worded once. A `Failure` is one entry's problem: the operation, the path
//! it was done on where that is not the entry itself, and the cause; its `Display` is the reason
//! printed after `Failed: <path>: `. `Status` is how a whole run ends.

use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::escape::display;

/// What was being done when an entry failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    ReadFolder,
    ReadLink,
    Open,
    WriteInto,
    Copy,
    SetMetadata,
    Write,
    Sync,
    Publish,
    CreateFolder,
    FinishFolder,
    SyncFolder,
    Prune,
}

impl Op {
    fn words(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::ReadFolder => "read folder",
            Op::ReadLink => "read link",
            Op::Open => "open",
            Op::WriteInto => "write into",
            Op::Copy => "copy",
            Op::SetMetadata => "set metadata",
            Op::Write => "write",
            Op::Sync => "sync",
            Op::Publish => "publish",
            Op::CreateFolder => "create folder",
            Op::FinishFolder => "finish folder",
            Op::SyncFolder => "sync folder",
            Op::Prune => "prune",
        }
    }
}

/// Why one entry could not be backed up (or restored, or pruned).
#[derive(Debug)]
pub(crate) enum Failure {
    /// An OS call failed: `cannot <op> [<path>]: <reason>`.
    Io {
        op: Op,
        at: Option<PathBuf>,
        error: io::Error,
    },
    /// The version stamp does not fit within the filesystem's name limit.
    NameTooLong,
    /// Every attempt to read the file saw it change; nothing was published.
    KeptChanging { attempts: usize },
    /// Every version name tried was taken by the time it was published.
    NoFreeName,
    /// The destination (of the named filesystem) cannot hold this name.
    NameRefused { fs: String, why: String },
    /// On a destination that does not tell case apart, another source name in the same folder
    /// differs from this one only in case, and is backed up under it.
    CaseClash { fs: String, other: Vec<u8> },
    /// The file is larger than the destination can hold.
    TooLarge { fs: String, size: u64, limit: u64 },
    /// Not copied: the destination is full (said once for the run, not per file).
    DestinationFull,
    /// The file is larger than the space the destination has left: it fails alone, and the
    /// files that fit are still copied.
    DoesNotFit { size: u64, free: u64 },
    /// A SQLite database that another program keeps locked in the middle of a write: neither a
    /// consistent copy nor the file alone holds a committed state.
    DatabaseLocked,
}

impl Failure {
    /// `cannot <op>: <reason>`, about the entry itself.
    pub(crate) fn io(op: Op, error: impl Into<io::Error>) -> Failure {
        Failure::Io {
            op,
            at: None,
            error: error.into(),
        }
    }

    /// `cannot <op> <path>: <reason>`, about another path than the entry (a destination folder).
    pub(crate) fn at(op: Op, path: &Path, error: impl Into<io::Error>) -> Failure {
        Failure::Io {
            op,
            at: Some(path.to_path_buf()),
            error: error.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io { op, at, error } => {
                write!(f, "cannot {}", op.words())?;
                if let Some(at) = at {
                    write!(f, " {}", display(at))?;
                }
                write!(f, ": {}", reason(error))
            }
            Failure::NameTooLong => {
                f.write_str("name too long to add a version stamp within 255 bytes")
            }
            Failure::KeptChanging { attempts } => write!(
                f,
                "changed while being read, {attempts} times in a row; nothing was published"
            ),
            Failure::NoFreeName => f.write_str("cannot publish: no free version name"),
            Failure::NameRefused { fs, why } => {
                write!(f, "the destination ({fs}) cannot hold this name ({why})")
            }
            Failure::CaseClash { fs, other } => write!(
                f,
                "the destination ({fs}) does not tell upper and lower case apart, and {} is \
                 backed up under the same name",
                display(Path::new(std::ffi::OsStr::from_bytes(other)))
            ),
            Failure::DestinationFull => f.write_str("the destination is full"),
            Failure::DoesNotFit { size, free } => write!(
                f,
                "does not fit in the destination ({size} bytes; {free} bytes free); the files \
                 that fit are copied"
            ),
            Failure::DatabaseLocked => f.write_str(
                "a SQLite database that another program keeps locked in the middle of a write; \
                 not copied (the next run tries again)",
            ),
            Failure::TooLarge { fs, size, limit } => write!(
                f,
                "{size} bytes is larger than the destination ({fs}) can hold (at most {limit} \
                 bytes in one file)"
            ),
        }
    }
}

impl Failure {
    /// Whether the failure may lie with the destination rather than the source: when the
    /// destination turns out to be gone, such a file is owed, not failed.
    pub(crate) fn may_be_destination(&self) -> bool {
        match self {
            Failure::Io { op, at, .. } => {
                !(matches!(op, Op::Open | Op::ReadLink) || (*op == Op::Read && at.is_none()))
            }
            Failure::DestinationFull | Failure::NoFreeName => true,
            // The destination can be gone as well as full.
            Failure::DoesNotFit { .. } => true,
            _ => false,
        }
    }
}

/// Why a command cannot start or go on: what it is about, and why. Worded once, here, and
/// printed once, as `error: <this>`; per-entry problems are `Failure`s instead.
#[derive(Debug)]
pub(crate) struct Error {
    /// The pair of the config file it happened in.
    pub pair: Option<String>,
    pub about: About,
    /// Boxed: the reasons carry paths, and an error is rare while a `Result` is everywhere.
    pub why: Box<Why>,
}

/// What a command error is about: named before the reason.
#[derive(Debug)]
pub(crate) enum About {
    /// The run as a whole: the reason says it all.
    Run,
    Source(PathBuf),
    /// DST: a folder, or a URL as given.
    Destination(PathBuf),
    Config(PathBuf),
    /// A command-line option and the path it was given: `--to P`, `--source P`.
    Option(&'static str, PathBuf),
    /// An exclusion pattern: from the command line, or one of the default ignores.
    Glob {
        default: bool,
        glob: String,
    },
    /// A file or folder that the command reads or writes.
    Path(PathBuf),
}

/// Why a command cannot start or go on.
#[derive(Debug)]
pub(crate) enum Why {
    /// An OS call failed.
    Io(io::Error),
    NotADirectory,
    /// A mount point with things in it.
    NotEmpty,
    /// A folder where a file was asked for.
    NotAFile,
    Unreadable(io::Error),
    NotCreated(io::Error),
    /// `--to`'s folder, or its parent, is not a folder.
    AncestorNotAFolder(PathBuf),
    /// DST is a symlink to a folder that does not exist.
    DanglingLink,
    /// The folder above DST is missing too: often a drive that is not mounted.
    ParentMissing(PathBuf),
    SameFolder(PathBuf),
    SourceInsideDestination {
        src: PathBuf,
        dst: PathBuf,
    },
    /// SRC was replaced (or moved away) while `watch` ran.
    SourceReplaced,
    /// `once`/`watch`/`verify` with neither SRC and DST nor a config file.
    NoPairs,
    /// Only one of SRC and DST.
    NoSrcDst,
    /// The config file holds no pair.
    NoBackupTable,
    /// Two pairs of the config file write into one destination, or one inside the other.
    Overlap {
        line: usize,
        first: String,
        second: String,
        into: PathBuf,
        other: Option<PathBuf>,
    },
    /// `--only NAME` names no pair of the file.
    NoSuchPair {
        name: String,
        names: Vec<String>,
    },
    /// The config file does not parse: at that line, what the TOML reader said.
    Toml {
        line: Option<usize>,
        message: String,
    },
    /// A pattern that does not parse: what the pattern reader said.
    Pattern(String),
    NoSuchFile,
    /// A duration that does not read: what the duration reader said.
    Duration(String),
    /// A time for `--at` that does not read.
    When(String),
    /// A size for `--keep-free` that does not read.
    Size(String),
    /// A URL of a kind this tool does not write to.
    UnknownScheme(String),
    /// `s3://` without a bucket.
    NoBucket,
    /// `.` or `..` in a bucket's prefix.
    DotsInBucket,
    /// `sftp://` without a host.
    NoHost,
    BadPort,
    /// The destination could not be opened.
    Open(crate::dest::OpenError),
    /// The destination cannot be written into now.
    Unavailable(crate::dest::Unavailable),
    /// The destination filled up: how many files were not copied.
    Full {
        dst: PathBuf,
        not_copied: u64,
    },
    /// A path given to `versions`/`restore` outside DST.
    NotInside {
        path: PathBuf,
        dst: PathBuf,
    },
    NoVersions {
        file: PathBuf,
        dst: PathBuf,
    },
    NoVersionYet {
        file: PathBuf,
        at: String,
    },
    DeletedBy {
        file: PathBuf,
        at: String,
    },
    DeletedWithFolder {
        file: PathBuf,
        folder: PathBuf,
        at: String,
    },
    NotAFileName,
    /// `--to` inside DST.
    IntoDestination(PathBuf),
    /// A restore target exists.
    Exists(PathBuf),
    /// Neither `XDG_CONFIG_HOME` nor `HOME`.
    NoHome,
    /// `service install` without a config file.
    NoConfig,
    /// This program's own path cannot be found.
    NoProgram(io::Error),
    /// `systemctl --user ARGS` could not be run.
    Systemctl {
        args: String,
        error: io::Error,
    },
    /// Signals cannot be handled.
    Signals(io::Error),
    /// Standard output cannot be written.
    Output(io::Error),
    /// Changes in SRC cannot be watched: with fanotify, or at all (what notify said).
    Fanotify(io::Error),
    Watch(String),
}

impl Error {
    pub(crate) fn new(about: About, why: Why) -> Error {
        Error {
            pair: None,
            about,
            why: Box::new(why),
        }
    }

    /// An error about the run as a whole.
    pub(crate) fn run(why: Why) -> Error {
        Error::new(About::Run, why)
    }

    /// Whether the command line asked for nothing that can be done: a usage error (exit 2).
    pub(crate) fn is_usage(&self) -> bool {
        matches!(*self.why, Why::NoPairs | Why::NoSrcDst)
    }

    /// The same error, as one pair of the config file's.
    pub(crate) fn in_pair(mut self, name: &str) -> Error {
        self.pair = Some(name.to_string());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.pair {
            write!(f, "pair {name}: ")?;
        }
        match &self.about {
            About::Run => {}
            About::Source(p) => write!(f, "source {}: ", display(p))?,
            About::Destination(p) => write!(f, "destination {}: ", display(p))?,
            About::Config(p) => write!(f, "config {}: ", display(p))?,
            About::Option(flag, p) => write!(f, "{flag} {}: ", display(p))?,
            About::Glob { default, glob } => {
                let what = if *default {
                    "default ignore"
                } else {
                    "--exclude"
                };
                write!(f, "{what} {glob:?}: ")?;
            }
            About::Path(p) => write!(f, "{}: ", display(p))?,
        }
        self.why.fmt(f)
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Io(e) => f.write_str(&reason(e)),
            Why::NotADirectory => f.write_str("not a directory"),
            Why::Unreadable(e) => write!(f, "cannot be read: {}", reason(e)),
            Why::NotCreated(e) => write!(f, "cannot be created: {}", reason(e)),
            Why::AncestorNotAFolder(p) => {
                write!(f, "cannot be created: {} is not a directory", display(p))
            }
            Why::DanglingLink => f.write_str("a symlink to a folder that does not exist"),
            Why::ParentMissing(p) => write!(
                f,
                "the folder {} does not exist (is the drive mounted?); --mkpath creates the \
                 whole path",
                display(p)
            ),
            Why::SameFolder(p) => write!(
                f,
                "source and destination are the same folder: {}",
                display(p)
            ),
            Why::SourceInsideDestination { src, dst } => write!(
                f,
                "source {} is inside the destination {}: the copy would write into its own \
                 source",
                display(src),
                display(dst)
            ),
            Why::SourceReplaced => {
                f.write_str("it is no longer the folder that this run started with")
            }
            Why::NoPairs => f.write_str(
                "give SRC and DST, or pairs in a config file (--config FILE, or \
                 $XDG_CONFIG_HOME/backup/config.toml)",
            ),
            Why::NoSrcDst => f.write_str("give SRC and DST"),
            Why::NoBackupTable => f.write_str("no [[backup]] table: nothing to back up"),
            Why::Overlap {
                line,
                first,
                second,
                into,
                other,
            } => {
                write!(f, "line {line}: dst: pairs {first} and {second} ")?;
                match other {
                    None => write!(f, "both write into {}", display(into))?,
                    Some(other) => write!(
                        f,
                        "write into {} and {}, one inside the other",
                        display(into),
                        display(other)
                    )?,
                }
                f.write_str("; each destination takes one pair")
            }
            Why::NoSuchPair { name, names } => write!(
                f,
                "--only {name}: no such pair (the file names {})",
                names.join(", ")
            ),
            Why::Toml { line, message } => match line {
                Some(line) => write!(f, "line {line}: {message}"),
                None => f.write_str(message),
            },
            Why::Pattern(text) => f.write_str(text),
            Why::Watch(text) => write!(f, "cannot watch for changes: {text}"),
            Why::NoSuchFile => f.write_str("no such file"),
            Why::NotEmpty => f.write_str("not an empty folder"),
            Why::NotAFile => f.write_str("a folder, not a file"),
            Why::Duration(text) => write!(f, "{text} (try 500ms, 2s, 1m)"),
            Why::When(text) => write!(
                f,
                "cannot read {text:?} as a time: use 2026-11-26 15:30, an RFC 3339 time, or a \
                 duration ago like 2h or 3 days"
            ),
            Why::Size(text) => write!(
                f,
                "cannot read {text:?} as a size to keep free: use 500M, 10G or 5%"
            ),
            Why::UnknownScheme(scheme) => write!(
                f,
                "unknown kind of destination '{scheme}://' (use a folder, s3://BUCKET/PREFIX or \
                 sftp://[USER@]HOST[:PORT]/PATH)"
            ),
            Why::NoBucket => f.write_str("no bucket named (s3://BUCKET/PREFIX)"),
            Why::DotsInBucket => f.write_str("'.' and '..' have no meaning in a bucket"),
            Why::NoHost => f.write_str("no host named (sftp://[USER@]HOST[:PORT]/PATH)"),
            Why::BadPort => f.write_str("the port is not a number"),
            Why::Open(e) => e.fmt(f),
            Why::Unavailable(e) => e.fmt(f),
            Why::Full { dst, not_copied } => write!(
                f,
                "destination {} is full ({not_copied} files not copied)",
                display(dst)
            ),
            Why::NotInside { path, dst } => write!(
                f,
                "{} is not inside the destination {}",
                display(path),
                display(dst)
            ),
            Why::NoVersions { file, dst } => {
                write!(f, "no versions of {} in {}", display(file), display(dst))
            }
            Why::NoVersionYet { file, at } => {
                write!(f, "{} had no version yet at {at}", display(file))
            }
            Why::DeletedBy { file, at } => write!(
                f,
                "{} was deleted at {at}; choose an earlier --at",
                display(file)
            ),
            Why::DeletedWithFolder { file, folder, at } => write!(
                f,
                "{} was deleted with its folder {} at {at}; choose an earlier --at",
                display(file),
                display(folder)
            ),
            Why::NotAFileName => f.write_str("not a file name"),
            Why::IntoDestination(dst) => write!(
                f,
                "inside the destination {}; restore somewhere else",
                display(dst)
            ),
            Why::Exists(p) => write!(
                f,
                "{} already exists; restore never overwrites (choose another --to)",
                display(p)
            ),
            Why::NoHome => f.write_str("neither XDG_CONFIG_HOME nor HOME is set"),
            Why::NoConfig => f.write_str("no config file: give --config FILE"),
            Why::NoProgram(e) => write!(f, "cannot find this program: {e}"),
            Why::Systemctl { args, error } => write!(
                f,
                "systemctl --user {args}: {} (is systemd running?)",
                reason(error)
            ),
            Why::Signals(e) => write!(f, "cannot handle signals: {}", reason(e)),
            Why::Output(e) => write!(f, "cannot write: {}", reason(e)),
            Why::Fanotify(e) => write!(f, "cannot watch with fanotify: {}", reason(e)),
        }
    }
}

impl std::error::Error for Error {}

/// Whether an OS error says that the destination is full (no space, or over quota).
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
    )
}

/// An OS error as a user reads it: `Permission denied`, without Rust's `(os error 13)`.
pub(crate) fn reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// How a run ended, as an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Nothing failed.
    Success,
    /// Something failed, or the backup could not start.
    Failure,
    /// Stopped by Ctrl-C before the pass was done.
    Interrupted,
    /// The command line asks for nothing that can be done (no SRC and DST, no config file).
    Usage,
}

impl Status {
    /// `Failure` when `failed`, else `Success`.
    pub(crate) fn failed_if(failed: bool) -> Status {
        if failed {
            Status::Failure
        } else {
            Status::Success
        }
    }
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(match s {
            Status::Success => 0,
            Status::Failure => 1,
            Status::Interrupted => 130,
            Status::Usage => 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_is_worded_once() {
        let denied = || io::Error::from_raw_os_error(13);
        assert_eq!(
            Failure::io(Op::Open, denied()).to_string(),
            "cannot open: Permission denied"
        );
        assert_eq!(
            Failure::at(Op::CreateFolder, Path::new("/d/a\nb"), denied()).to_string(),
            "cannot create folder /d/a\\nb: Permission denied"
        );
        assert_eq!(
            Failure::KeptChanging { attempts: 4 }.to_string(),
            "changed while being read, 4 times in a row; nothing was published"
        );
        assert!(Failure::NameTooLong.to_string().contains("255 bytes"));
    }

    #[test]
    fn reasons_drop_the_os_error_number() {
        assert_eq!(
            reason(&io::Error::from_raw_os_error(2)),
            "No such file or directory"
        );
        assert_eq!(reason(&io::Error::other("plain")), "plain");
    }
}
