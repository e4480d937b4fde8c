//! The command line as parsed by clap; nothing here makes a decision (see `config`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::options::{Events, KeepFree, Priority, parse_duration, parse_keep_free};

const NAMING: &str = "\
NAMING: the destination is a plain copy of the source tree. Nothing in it is ever overwritten: \
when a file changes, its new copy is written beside the old ones as \
STEM_YYYYMMDD_HHMMSS.EXT (local time of the copy; `_1`, `_2`, ... for more versions within one \
second), so `report.txt` gains `report_20261126_153045.txt`. A file is unchanged, and not copied \
again, when its newest copy has the same size and modification time (with --checksum: the same \
contents). Deleting a file in the source deletes nothing in the destination.";

const EXAMPLES: &str = "\
EXAMPLES:
    backup once ~/work /mnt/disk/work
        Copy ~/work into /mnt/disk/work, then exit; rerun it (from cron, say) to copy what changed.

    backup once -n ~/work /mnt/disk/work
        Show what would be copied, and under which names, without writing anything.

    backup once -q -x '*.tmp' -x 'node_modules/' ~/work /mnt/disk/work
        Leave out temporary files and node_modules folders; print only failures and the summary.
        Patterns can also live in ~/work/.backupignore, one per line.

    backup once --json ~/work /mnt/disk/work | jq -c 'select(.type == \"failed\")'
        Machine-readable output: one JSON object per line.

    backup watch ~/work /mnt/disk/work
        Copy, then mirror every change as it happens, until Ctrl-C.

    backup watch --poll 5s /mnt/nfs/share /backup/share
        Mirror a network filesystem, which sends no change events, by looking every 5 seconds.

EXIT STATUS:
    0 nothing failed, 1 something failed or the backup could not start, 2 bad command line,
    130 interrupted by Ctrl-C before the pass was done.";

const STATUS_HELP: &str = "\
EXAMPLES:
    backup status
    backup status ~/work /media/usb/work --stale-after 2h
    backup status --json | jq .

With a `watch` running for the pair, what it is doing (watching, polling, copying, waiting for
destination, destination full), its last pass and copy, the changes pending and its failures;
in every case, the age of the newest copy in DST. Exit status 1 when a pair's last batch failed
or its newest copy is older than --stale-after.";

const SERVICE_HELP: &str = "\
EXAMPLES:
    backup service install
    backup service install --config ~/backup.toml
    backup service status
    backup service uninstall";

const VERSIONS_HELP: &str = "\
EXAMPLES:
    backup versions /mnt/disk/work report.txt
    backup versions /mnt/disk/work notes/
    backup versions /mnt/disk/work /mnt/disk/work/notes/todo.md --json

The capture time of a version is the time in its name; for the plain name, the time the file
system recorded when it was written (its birth time where the filesystem keeps one).";

const RESTORE_HELP: &str = "\
EXAMPLES:
    backup restore /mnt/disk/work report.txt --to ~/report-yesterday.txt --at '2026-11-25 18:00'
    backup restore /mnt/disk/work notes --to /tmp/notes-then --at '3 days ago'

A folder comes back as it was at TIME: every file with the version that was its newest then;
files that had no version yet are left out. Nothing at TARGET is ever overwritten: an existing
file there is an error, before anything is written.";

const VERIFY_HELP: &str = "\
EXAMPLES:
    backup verify ~/work /mnt/disk/work
    backup verify --checksum ~/work /mnt/disk/work

Prints each file whose newest copy is missing, stale (other size or time) or differs (other
contents, with --checksum), and a summary. Exit status 0 when every file holds, 1 otherwise.
Reads both sides; writes neither.";

const DU_HELP: &str = "\
Each folder's own files, largest first: `newest` holds each file's newest copy, `older` its
older versions (what `prune` and `--keep-free` may give back), `records` how many deletion
records (empty files) there are, and `shared` the bytes that cost nothing more because another
copy holds them too (a hard link, or blocks shared with a clone). A file with several names is
counted once. Sizes are the files' own sizes, as `du -b` counts them.

EXAMPLES:
    backup du /mnt/disk/work
    backup du /mnt/disk/work photos --json";

const DIFF_HELP: &str = "\
The tree at each time is exactly what `restore --at` would write. A file there at the later time
only is added, at the earlier only deleted, at both with another version changed; a file gone
from one path and new at another with the same bytes (both copies read and compared) moved.
TIME is as for `restore --at`: `2026-12-06 21:05`, RFC 3339, `now`, or a time ago (`2h`, `3
days`).

With --content and a file for PATH, what changed in that file: a unified diff of its versions
at the two times (`Binary files differ` where either is not text).

EXAMPLES:
    backup diff /mnt/disk/work --from '1 week'
    backup diff /mnt/disk/work photos --from 2026-12-01 --to 2026-12-06 --json
    backup diff /mnt/disk/work notes.md --from yesterday --content";

const FIND_HELP: &str = "\
Every file whose path in the backed-up tree matches PATTERN, with each of its versions (when it
was captured, its size, where the copy is), files deleted from SRC included. A PATTERN with a
`/` is matched against the whole path (`photos/*.jpg`), one without against the file's name
(`*.pdf`); `*` stays within a folder, `**` crosses folders.

With --from and --to, only the versions captured between those times (as for `restore --at`).

EXAMPLES:
    backup find /mnt/disk/work 'report*.txt'
    backup find /mnt/disk/work '*.pdf' --from '2 weeks' --to '1 week'
    backup find /mnt/disk/work '**/*.jpg' --deleted";

const MOUNT_HELP: &str = "\
A read-only view of DST, without copying anything: `latest/` is the tree as it is now, `at/TIME/`
the tree as of each time something was captured (exactly what `restore --at TIME` writes), and
`versions/PATH/` every version of each file under its name in DST. With --at, the mount point is
the tree at that time. It stays mounted until Ctrl-C, SIGTERM or `fusermount3 -u MOUNTPOINT`.
Needs FUSE (`/dev/fuse` and `fusermount3`, Debian's fuse3).

EXAMPLES:
    backup mount /mnt/disk/work ~/past
    backup mount /mnt/disk/work ~/tuesday --at '2026-12-01 18:00'";

const PRUNE_HELP: &str = "\
EXAMPLES:
    backup prune /mnt/disk/work --keep-last 10 --dry-run
    backup prune /mnt/disk/work --keep-within 30d --staggered

A version is kept when any given rule keeps it; the newest version of each file is always kept.
The same options on `once` and `watch` prune after each pass or batch.";

/// Keeps a live, versioned mirror of a folder: every change copied, no version ever lost.
#[derive(Debug, Parser)]
#[command(name = "backup", version, after_long_help = NAMING, after_help = "See --help for the naming rule and examples.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy SRC into DST once: new and changed files only, then exit.
    #[command(after_long_help = format!("{NAMING}\n\n{EXAMPLES}"))]
    Once(OnceArgs),
    /// Copy SRC into DST, then mirror every change until Ctrl-C or SIGTERM.
    #[command(after_long_help = format!("{NAMING}\n\n{EXAMPLES}"))]
    Watch(WatchArgs),
    /// List the versions of a file, or of every file under a folder, oldest first.
    #[command(after_long_help = VERSIONS_HELP)]
    Versions(VersionsArgs),
    /// Write a file or a folder back as it was at a given time.
    #[command(after_long_help = RESTORE_HELP)]
    Restore(RestoreArgs),
    /// Check that the newest copy of every file in SRC holds its current content.
    #[command(after_long_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Delete old versions by a policy; never the newest version of any file.
    #[command(after_long_help = PRUNE_HELP)]
    Prune(PruneArgs),
    /// Say where the space in DST went: per folder, the newest copies, the older versions and
    /// the records of deletions, largest first.
    #[command(after_long_help = DU_HELP)]
    Du(DuArgs),
    /// Say what changed in the backed-up tree between two times: added, changed, deleted and
    /// moved files.
    #[command(after_long_help = DIFF_HELP)]
    Diff(DiffArgs),
    /// Find every version of the files whose path matches a pattern, deleted ones included.
    #[command(after_long_help = FIND_HELP)]
    Find(FindArgs),
    /// Show DST as a read-only filesystem of its past: the tree now, at any time, and every
    /// version of each file.
    #[command(after_long_help = MOUNT_HELP)]
    Mount(MountArgs),
    /// Say what each pair's `watch` is doing and how old its newest copy is; exit 1 when one
    /// is failing or stale.
    #[command(after_long_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Run `watch` over the config file as a systemd user service.
    #[command(subcommand, after_long_help = SERVICE_HELP)]
    Service(ServiceCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_long_help = "EXAMPLES:\n    backup completions bash > ~/.local/share/bash-completion/completions/backup\n    backup completions zsh > ~/.zfunc/_backup\n    backup completions fish > ~/.config/fish/completions/backup.fish"
    )]
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout.
    #[command(
        after_long_help = "EXAMPLES:\n    backup man > ~/.local/share/man/man1/backup.1 && man backup"
    )]
    Man,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// A folder inside DST, or relative to the backed-up tree [default: all of DST].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// The earlier time.
    #[arg(long, value_name = "TIME")]
    pub from: String,

    /// The later time.
    #[arg(
        long,
        value_name = "TIME",
        default_value = "now",
        conflicts_with = "source"
    )]
    pub to: String,

    /// Compare with the backed-up folder as it is now, instead of a later time in DST.
    #[arg(long, value_name = "SRC")]
    pub source: Option<PathBuf>,

    /// For one file (PATH): what changed in it, as a unified diff of its text.
    #[arg(long, requires = "path")]
    pub content: bool,

    /// Print JSON Lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The backup folder (or an s3:// or sftp:// destination).
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// An empty folder to show it in.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,

    /// Show only the tree as it was at this time, at the mount point itself.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// A glob over the files' paths in the backed-up tree.
    #[arg(value_name = "PATTERN")]
    pub pattern: String,

    /// Only files deleted from SRC (whose newest record is their deletion).
    #[arg(long)]
    pub deleted: bool,

    /// Only versions captured at this time or later.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,

    /// Only versions captured at this time or earlier.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    /// Print JSON Lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DuArgs {
    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// A folder inside DST, or relative to the backed-up tree [default: all of DST].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// The folder that was backed up: tells apart files whose own names look like versions.
    #[arg(long, value_name = "SRC")]
    pub source: Option<PathBuf>,

    /// Print JSON Lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The folder that is backed up [default: every pair of the config file].
    #[arg(value_name = "SRC", requires = "dst")]
    pub src: Option<PathBuf>,

    /// Its destination.
    #[arg(value_name = "DST")]
    pub dst: Option<PathBuf>,

    /// The config file [default: $XDG_CONFIG_HOME/backup/config.toml].
    #[arg(long, value_name = "FILE", conflicts_with = "src")]
    pub config: Option<PathBuf>,

    /// Only the pair of this name (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "src")]
    pub only: Vec<String>,

    /// A pair whose newest copy is older than this is stale (exit 1).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    pub stale_after: Duration,

    /// Print one JSON object per pair.
    #[arg(long)]
    pub json: bool,
}

/// `backup service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the systemd user unit (watch over the config file, restarted on failure, at low
    /// priority) and enable it; where systemd does not run, print it.
    Install {
        /// The config file [default: $XDG_CONFIG_HOME/backup/config.toml].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Stop and disable the service, and remove its unit.
    Uninstall,
    /// `systemctl --user status backup.service`.
    Status,
}

#[derive(Debug, Args)]
pub struct OnceArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Print what would be copied and under which name; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Folder to back up [default: every pair of the config file].
    #[arg(value_name = "SRC", requires = "dst")]
    pub src: Option<PathBuf>,

    /// Folder to copy into; created when missing and its parent exists.
    #[arg(value_name = "DST")]
    pub dst: Option<PathBuf>,

    /// Without SRC and DST: the config file of pairs to back up
    /// [default: $XDG_CONFIG_HOME/backup/config.toml].
    #[arg(long, value_name = "FILE", conflicts_with = "src")]
    pub config: Option<PathBuf>,

    /// Without SRC and DST: back up only the pair of this name (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "src")]
    pub only: Vec<String>,

    /// Create DST with all its missing parents (by default only DST itself is created, and only
    /// when its parent exists: a missing parent is often a drive that is not mounted).
    #[arg(long)]
    pub mkpath: bool,

    #[command(flatten)]
    pub pass: PassArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Keep this much free in DST (500M, 10G, 5%): before a copy would take less, the oldest
    /// versions of any file are pruned first, never a file's newest copy.
    #[arg(long, value_name = "SIZE|PERCENT", value_parser = parse_keep_free)]
    pub keep_free: Option<KeepFree>,
}

/// How a pass over SRC compares, selects and reports: shared by `once`, `watch` and `verify`.
#[derive(Clone, Debug, Default, Args)]
pub struct PassArgs {
    /// Compare file contents, not size and modification time, to decide what changed.
    #[arg(short = 'c', long)]
    pub checksum: bool,

    /// Number of files handled in parallel [default: the number of CPUs, at least 4; at least 8
    /// for a remote destination].
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Leave out paths matching GLOB (gitignore syntax, relative to SRC; repeatable).
    #[arg(short = 'x', long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Leave out paths matching the globs in FILE, one per line (gitignore syntax).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,

    /// Back up the files left out by default too: editor swap, backup and lock files, partial
    /// downloads and OS litter (*.swp *.swx 4913 *~ .#* #*# .~lock.*# *.part *.crdownload
    /// *.download .DS_Store Thumbs.db desktop.ini .Trash-*/).
    #[arg(long)]
    pub no_default_ignores: bool,

    /// Print only failures and the summary.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also print unchanged files, what the destination can hold, and in `watch` what each
    /// change event led to.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Print JSON Lines on stdout, one object per entry, batch and summary.
    #[arg(long)]
    pub json: bool,
}

/// Which old versions to keep; everything else is deleted, the newest version of a file never.
#[derive(Clone, Debug, Default, Args)]
pub struct PolicyArgs {
    /// Prune: keep the N newest versions of each file.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,

    /// Prune: keep every version captured within DURATION (e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,

    /// Prune: keep one version per 30 s for an hour, per hour for a day, per day for 30 days,
    /// per week after.
    #[arg(long)]
    pub staggered: bool,
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// A file or folder: relative to the backed-up tree, or a path inside DST [default: all].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// Print JSON Lines, one object per version.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// A file or folder: relative to the backed-up tree, or a path inside DST.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Where to write it: a new file, or a folder to write into; nothing there is overwritten.
    #[arg(long, value_name = "TARGET")]
    pub to: PathBuf,

    /// The moment to go back to: 2026-11-26 15:30, an RFC 3339 time, or 2h / 3 days (ago).
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub at: String,

    /// Print only failures and the summary.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print JSON Lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The folder that was backed up.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,

    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    #[command(flatten)]
    pub pass: PassArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The backup folder.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// The folder that was backed up: tells apart files whose own names look like versions.
    #[arg(long, value_name = "SRC")]
    pub source: Option<PathBuf>,

    /// Print what would be deleted; delete nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Print only failures and the summary.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print JSON Lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Copy a changed file once it has been quiet this long.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Copy a file that never goes quiet at least this often, and version it no more often.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub max_delay: Duration,

    /// Look for changes every INTERVAL instead of asking the OS for change events
    /// (for network filesystems).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub poll: Option<Duration>,

    /// Where change events come from: `fanotify` (one mark on the whole filesystem; root
    /// only), `inotify` (one watch per folder), or `auto`: fanotify where it can be had, else
    /// inotify.
    #[arg(long, value_name = "SOURCE", default_value = "auto")]
    pub events: Events,

    /// Run a full pass this often as a safety net for lost events (0 = never).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub rescan_every: Duration,

    /// Exit with status 1 when DST goes away (unmounted, unplugged, replaced), instead of
    /// waiting for it to come back.
    #[arg(long)]
    pub exit_on_lost_destination: bool,

    /// How hard to compete for the disk and the CPU: `low` copies at idle I/O priority and nice
    /// 10, so that a long-running mirror never slows down what the user is doing.
    #[arg(long, value_name = "LEVEL", default_value = "low")]
    pub priority: Priority,

    #[command(flatten)]
    pub health: HealthArgs,
}

/// Knowing it works: where a change of the pair's condition is said, when, and the metrics.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Knowing it works")]
pub struct HealthArgs {
    /// Say each change of condition (failing, destination lost or full, falling behind,
    /// recovered) as a desktop notification, over the session D-Bus.
    #[arg(long)]
    pub notify_desktop: bool,

    /// Run this command (with /bin/sh -c) on each change of condition; it finds the pair,
    /// condition and message in BACKUP_PAIR, BACKUP_SRC, BACKUP_DST, BACKUP_STATE, BACKUP_TITLE
    /// and BACKUP_MESSAGE.
    #[arg(long, value_name = "COMMAND")]
    pub notify_exec: Option<String>,

    /// POST each change of condition to this URL: the message as text with a Title header
    /// (ntfy, most webhooks), or as JSON with --notify-url-json (Gotify).
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,

    /// Send --notify-url a JSON object (title, message, priority, state, pair, src, dst).
    #[arg(long, requires = "notify_url")]
    pub notify_url_json: bool,

    /// A Healthchecks check: pinged at start (/start), on trouble (/fail), on recovery, and
    /// every 5 minutes while all is well.
    #[arg(long, value_name = "URL")]
    pub healthchecks: Option<String>,

    /// How long the destination may be away before it counts as lost [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lost_after: Option<Duration>,

    /// How old the oldest change not yet copied may grow before the mirror counts as behind
    /// [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale_after: Option<Duration>,

    /// Keep a Prometheus textfile-collector file here, replaced at every change.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

impl clap::ValueEnum for Events {
    fn value_variants<'a>() -> &'a [Self] {
        &[Events::Auto, Events::Fanotify, Events::Inotify]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Events::Auto => PossibleValue::new("auto"),
            Events::Fanotify => PossibleValue::new("fanotify"),
            Events::Inotify => PossibleValue::new("inotify"),
        })
    }
}

impl clap::ValueEnum for Priority {
    fn value_variants<'a>() -> &'a [Self] {
        &[Priority::Low, Priority::Normal]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Priority::Low => PossibleValue::new("low").help("Idle I/O priority, nice 10"),
            Priority::Normal => PossibleValue::new("normal").help("As started"),
        })
    }
}

/// Reads the command line; a usage error is clap's own message and exit 2.
pub(crate) fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Cli {
    Cli::parse_from(args)
}

/// A usage error of `subcommand` found after parsing: clap's format, exit 2.
pub(crate) fn usage_error(subcommand: &str, message: &str) -> ! {
    let mut cli = Cli::command();
    let sub = cli
        .find_subcommand_mut(subcommand)
        .map(|c| c.clone().bin_name(format!("backup {subcommand}")));
    sub.unwrap_or(cli)
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
}

/// The completion script for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "backup", &mut out);
    out
}

/// The manual page, in roff.
pub(crate) fn man() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
