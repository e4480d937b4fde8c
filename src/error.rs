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
            _ => false,
        }
    }
}

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
