//! Parsed arguments become decisions, once: canonical paths, validated before anything is
//! written (docs/GUIDE.md, "Before anything is written"), and the settings the rest of the
//! program reads. No later module sees clap.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::cli::{Cli, Command, CommonArgs, HealthArgs, PassArgs, PolicyArgs, ServiceCommand};
use crate::dest::Location;
use crate::error::{About, Error, Why};
use crate::exclude::Exclude;
use crate::history::Policy;
use crate::options::{Events, KeepFree, Priority};
use crate::pairs;
use crate::report::Style;

/// Everything a run needs to know, decided.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The pair's name, when it comes from the config file.
    pub(crate) name: Option<String>,
    /// The source folder, canonical.
    pub(crate) src: PathBuf,
    /// The destination folder, canonical (its missing tail resolved lexically).
    pub(crate) dst: Location,
    /// Destinations inside the source, left out of every walk and watch: this pair's own, and
    /// with a config file every other pair's, so that no pair backs up another's versions.
    pub(crate) skip: Vec<PathBuf>,
    pub(crate) checksum: bool,
    pub(crate) limits: Limits,
    pub(crate) exclude: Exclude,
    /// How the run prints.
    pub(crate) style: Style,
    /// DST is missing, and is created (unless this is a dry run).
    pub(crate) create_dst: Option<Create>,
    /// Old versions to prune after each pass or batch; empty for none.
    pub(crate) policy: Policy,
    /// The free space to keep in DST, pruning the oldest versions first.
    pub(crate) keep_free: Option<KeepFree>,
    pub(crate) mode: Mode,
}

/// What a run over a pair does.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// `once`: one pass.
    Once,
    /// `once --dry-run`: decide and print, write nothing.
    DryRun,
    /// `verify`: a dry run whose would-be copies are findings.
    Verify,
    /// `watch`: one pass, then every change until stopped.
    Watch(Box<WatchConfig>),
}

impl Mode {
    /// Whether nothing is written.
    pub(crate) fn reads_only(&self) -> bool {
        matches!(self, Mode::DryRun | Mode::Verify)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct WatchConfig {
    pub(crate) debounce: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) poll: Option<Duration>,
    pub(crate) events: Events,
    /// `None` when periodic full passes are off.
    pub(crate) rescan_every: Option<Duration>,
    /// Exit when DST goes away, instead of waiting for it.
    pub(crate) exit_on_lost: bool,
    /// Copy at idle I/O priority and low CPU priority.
    pub(crate) low_priority: bool,
    /// Where a change of condition is said, when, and the metrics file.
    pub(crate) health: crate::health::Settings,
}

/// What the command line asks for, resolved: clap's types end in this module.
pub(crate) enum Job {
    /// `once`, `watch` or `verify`, over SRC and DST or the config file's pairs.
    Backup(Vec<Config>),
    Versions(Versions),
    Restore(Restore),
    Prune(Prune),
    Du(Du),
    Diff(Diff),
    Find(Find),
    Mount(MountJob),
    Status(StatusJob),
    Service(Service),
    /// Text to print as it is: a completion script, the manual page.
    Print(Vec<u8>),
}

/// `backup versions`.
pub(crate) struct Versions {
    pub(crate) dst: PathBuf,
    pub(crate) path: Option<PathBuf>,
    pub(crate) json: bool,
}

/// `backup restore`.
pub(crate) struct Restore {
    pub(crate) dst: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) to: PathBuf,
    /// As given: read against the clock when the restore starts.
    pub(crate) at: String,
    pub(crate) quiet: bool,
    pub(crate) json: bool,
}

/// `backup prune`.
pub(crate) struct Prune {
    pub(crate) dst: PathBuf,
    /// Never empty.
    pub(crate) policy: Policy,
    pub(crate) source: Option<PathBuf>,
    pub(crate) dry_run: bool,
    pub(crate) quiet: bool,
    pub(crate) json: bool,
}

/// `backup du`.
pub(crate) struct Du {
    pub(crate) dst: PathBuf,
    pub(crate) path: Option<PathBuf>,
    pub(crate) source: Option<PathBuf>,
    pub(crate) json: bool,
}

/// `backup diff`.
pub(crate) struct Diff {
    pub(crate) dst: PathBuf,
    pub(crate) path: Option<PathBuf>,
    /// As given: read against the clock when the command starts.
    pub(crate) from: String,
    pub(crate) to: String,
    /// The later side is this folder as it is now.
    pub(crate) source: Option<PathBuf>,
    pub(crate) content: bool,
    pub(crate) json: bool,
}

/// `backup mount`.
pub(crate) struct MountJob {
    pub(crate) dst: PathBuf,
    pub(crate) mountpoint: PathBuf,
    pub(crate) at: Option<String>,
}

/// `backup find`.
pub(crate) struct Find {
    pub(crate) dst: PathBuf,
    pub(crate) pattern: String,
    pub(crate) deleted: bool,
    /// As given: read against the clock when the command starts.
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) json: bool,
}

/// `backup status`: SRC and DST, or pairs of the config file.
pub(crate) struct StatusJob {
    pub(crate) pair: Option<(PathBuf, PathBuf)>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) only: Vec<String>,
    pub(crate) stale_after: Duration,
    pub(crate) json: bool,
}

/// `backup service`.
pub(crate) enum Service {
    Install { config: Option<PathBuf> },
    Uninstall,
    Status,
}

/// Resolves the parsed command line. A usage error found only now (`prune` without a policy)
/// exits 2 in clap's words; any other error is the message for `error: …`.
pub(crate) fn job(cli: Cli) -> Result<Job, Error> {
    Ok(match cli.command {
        Command::Completions { shell } => Job::Print(crate::cli::completions(shell)),
        Command::Man => Job::Print(crate::cli::man().map_err(|e| Error::run(Why::Output(e)))?),
        Command::Versions(a) => Job::Versions(Versions {
            dst: a.dst,
            path: a.path,
            json: a.json,
        }),
        Command::Restore(a) => Job::Restore(Restore {
            dst: a.dst,
            path: a.path,
            to: a.to,
            at: a.at,
            quiet: a.quiet,
            json: a.json,
        }),
        Command::Prune(a) => {
            let policy = Policy::from(a.policy);
            if policy.is_empty() {
                crate::cli::usage_error(
                    "prune",
                    "prune needs a policy: --keep-last N, --keep-within DURATION or --staggered",
                );
            }
            Job::Prune(Prune {
                dst: a.dst,
                policy,
                source: a.source,
                dry_run: a.dry_run,
                quiet: a.quiet,
                json: a.json,
            })
        }
        Command::Du(a) => Job::Du(Du {
            dst: a.dst,
            path: a.path,
            source: a.source,
            json: a.json,
        }),
        Command::Diff(a) => Job::Diff(Diff {
            dst: a.dst,
            path: a.path,
            from: a.from,
            to: a.to,
            source: a.source,
            content: a.content,
            json: a.json,
        }),
        Command::Mount(a) => Job::Mount(MountJob {
            dst: a.dst,
            mountpoint: a.mountpoint,
            at: a.at,
        }),
        Command::Find(a) => Job::Find(Find {
            dst: a.dst,
            pattern: a.pattern,
            deleted: a.deleted,
            from: a.from,
            to: a.to,
            json: a.json,
        }),
        Command::Status(a) => Job::Status(StatusJob {
            pair: a.src.zip(a.dst),
            config: a.config,
            only: a.only,
            stale_after: a.stale_after,
            json: a.json,
        }),
        Command::Service(s) => Job::Service(match s {
            ServiceCommand::Install { config } => Service::Install { config },
            ServiceCommand::Uninstall => Service::Uninstall,
            ServiceCommand::Status => Service::Status,
        }),
        Command::Once(a) => {
            let mode = if a.dry_run { Mode::DryRun } else { Mode::Once };
            Job::Backup(Config::from_cli(a.common, mode, &HealthArgs::default())?)
        }
        Command::Watch(a) => {
            for (flag, url) in [
                ("--notify-url", &a.health.notify_url),
                ("--healthchecks", &a.health.healthchecks),
            ] {
                if let Some(Err(why)) = url.as_deref().map(crate::health::notify::check_url) {
                    crate::cli::usage_error("watch", &format!("{flag}: {why}"));
                }
            }
            let w = WatchConfig {
                debounce: a.debounce,
                max_delay: a.max_delay.max(a.debounce),
                poll: a.poll.filter(|d| !d.is_zero()),
                events: a.events,
                rescan_every: Some(a.rescan_every).filter(|d| !d.is_zero()),
                exit_on_lost: a.exit_on_lost_destination,
                low_priority: a.priority == Priority::Low,
                health: health(&a.health, None, None),
            };
            Job::Backup(Config::from_cli(
                a.common,
                Mode::Watch(Box::new(w)),
                &a.health,
            )?)
        }
        Command::Verify(a) => {
            let common = CommonArgs {
                src: Some(a.src),
                dst: Some(a.dst),
                config: None,
                only: Vec::new(),
                mkpath: false,
                pass: a.pass,
                policy: PolicyArgs::default(),
                keep_free: None,
            };
            Job::Backup(Config::from_cli(
                common,
                Mode::Verify,
                &HealthArgs::default(),
            )?)
        }
    })
}

impl Config {
    /// Validates the command line of `once`, `watch` or `verify`, and without SRC and DST the
    /// config file's pairs; the error is the message for `error: …`.
    pub(crate) fn from_cli(
        common: CommonArgs,
        mode: Mode,
        health_args: &HealthArgs,
    ) -> Result<Vec<Config>, Error> {
        if common.src.is_some() {
            return Ok(vec![Config::build(common, mode, None)?]);
        }
        Config::from_file(common, &mode, health_args)
    }

    /// Every pair of the config file (or those `--only` names), each with the file's settings
    /// and the command line's output options. Pairs watched together share the CPUs.
    fn from_file(
        cli: CommonArgs,
        mode: &Mode,
        health_args: &HealthArgs,
    ) -> Result<Vec<Config>, Error> {
        let pairs = pairs::chosen(cli.config.as_deref(), &cli.only)?;
        let mut out = Vec::new();
        for pair in pairs {
            let o = pair.options;
            let common = CommonArgs {
                src: Some(pair.src),
                dst: Some(pair.dst),
                config: None,
                only: Vec::new(),
                mkpath: o.mkpath.unwrap_or(false),
                pass: PassArgs {
                    checksum: o.checksum.unwrap_or(false),
                    jobs: o.jobs,
                    exclude: o.exclude.unwrap_or_default(),
                    exclude_from: o.exclude_from.unwrap_or_default(),
                    no_default_ignores: o.no_default_ignores.unwrap_or(false),
                    ..cli.pass.clone()
                },
                policy: PolicyArgs {
                    keep_last: o.keep_last,
                    keep_within: o.keep_within,
                    staggered: o.staggered.unwrap_or(false),
                },
                keep_free: o.keep_free,
            };
            let mode = match mode {
                Mode::Watch(_) => {
                    let debounce = o.debounce.unwrap_or(Duration::from_secs(1));
                    Mode::Watch(Box::new(WatchConfig {
                        debounce,
                        max_delay: o.max_delay.unwrap_or(Duration::from_secs(60)).max(debounce),
                        poll: o.poll.filter(|d| !d.is_zero()),
                        events: o.events.unwrap_or_default(),
                        rescan_every: Some(o.rescan_every.unwrap_or(Duration::from_secs(3600)))
                            .filter(|d| !d.is_zero()),
                        exit_on_lost: o.exit_on_lost_destination.unwrap_or(false),
                        low_priority: o.priority.unwrap_or_default() == Priority::Low,
                        health: health(health_args, o.notify.as_ref(), o.metrics_file),
                    }))
                }
                other => other.clone(),
            };
            let name = pair.name;
            let config =
                Config::build(common, mode, Some(name.clone())).map_err(|e| e.in_pair(&name))?;
            out.push(config);
        }
        let dsts: Vec<PathBuf> = out
            .iter()
            .filter_map(|c| c.dst.folder().map(Path::to_path_buf))
            .collect();
        for config in &mut out {
            let inside = dsts.iter().filter(|d| d.starts_with(&config.src));
            for d in inside {
                if !config.skip.contains(d) {
                    config.skip.push(d.clone());
                }
            }
        }
        Ok(out)
    }

    /// Validates one pair and makes every decision a run of it needs.
    fn build(common: CommonArgs, mode: Mode, name: Option<String>) -> Result<Config, Error> {
        let CommonArgs {
            src,
            dst,
            mkpath,
            pass,
            policy,
            keep_free,
            ..
        } = common;
        let (Some(src), Some(dst)) = (src, dst) else {
            return Err(Error::run(Why::NoSrcDst));
        };
        let PassArgs {
            checksum,
            jobs,
            exclude,
            exclude_from,
            no_default_ignores,
            quiet,
            verbose,
            json,
        } = pass;
        let (src, dst) = check_paths(&src, &dst)?;
        let remote = dst.over_network();
        let create_dst = match dst.folder() {
            Some(folder) => how_to_create(folder, mkpath)?,
            None => None,
        };
        let skip = dst
            .folder()
            .filter(|d| d.starts_with(&src))
            .map(Path::to_path_buf)
            .into_iter()
            .collect();
        let exclude = Exclude::build(&src, !no_default_ignores, &exclude, &exclude_from)?;
        let jobs = jobs.map(usize::from).unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
            // Uploads wait on the network, not on a core; local copies wait in their batch's
            // sync about as long as they copy, so a few more workers than cores keep the cores
            // busy (50,000 small files on 2 cores: 1.95 s with 2, 1.72 s with 4; with the other
            // core busy, 2.85 s and 2.3 s).
            if remote {
                cpus.max(REMOTE_JOBS)
            } else {
                cpus.max(LOCAL_JOBS)
            }
        });
        use std::io::IsTerminal;
        let style = Style {
            json,
            quiet,
            verbose,
            progress: !json && !quiet && std::io::stderr().is_terminal(),
            dry_run: mode.reads_only(),
        };
        Ok(Config {
            name,
            src,
            dst,
            skip,
            checksum,
            limits: Limits::new(jobs, open_file_budget()),
            exclude,
            style,
            create_dst,
            policy: policy.into(),
            keep_free: keep_free.filter(|_| !matches!(mode, Mode::Verify)),
            mode,
        })
    }
}

/// The health settings of a `watch`: the command line's where it says, else the config file's.
fn health(
    cli: &HealthArgs,
    file: Option<&pairs::Notify>,
    metrics_file: Option<PathBuf>,
) -> crate::health::Settings {
    use crate::health::notify::Targets;
    use crate::health::{Rules, Settings};
    let file = file.cloned().unwrap_or_default();
    let defaults = Rules::default();
    Settings {
        targets: Targets {
            desktop: cli.notify_desktop || file.desktop.unwrap_or(false),
            exec: cli.notify_exec.clone().or(file.exec),
            url_json: if cli.notify_url.is_some() {
                cli.notify_url_json
            } else {
                file.url_json.unwrap_or(false)
            },
            url: cli.notify_url.clone().or(file.url),
            healthchecks: cli.healthchecks.clone().or(file.healthchecks),
        },
        rules: Rules {
            lost_after: cli
                .lost_after
                .or(file.lost_after)
                .unwrap_or(defaults.lost_after),
            stale_after: cli
                .stale_after
                .or(file.stale_after)
                .unwrap_or(defaults.stale_after),
        },
        metrics_file: cli.metrics_file.clone().or(metrics_file),
    }
}

/// Uploads in flight at once to a remote destination, unless `-j` says otherwise.
const REMOTE_JOBS: usize = 8;

/// Copy workers for a local destination at least, unless `-j` says otherwise.
const LOCAL_JOBS: usize = 4;

/// How a missing destination is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// Its parent exists: only DST itself.
    Folder,
    /// `--mkpath`: DST and every missing parent.
    Path,
}

/// How a missing DST is to be made: only itself when its parent exists, the whole path with
/// `--mkpath`, else not at all: a missing parent is often a drive that is not mounted, and the
/// copy would fill the system disk.
fn how_to_create(dst: &Path, mkpath: bool) -> Result<Option<Create>, Error> {
    match missing_parent(dst) {
        _ if dst.is_dir() => Ok(None),
        None => Ok(Some(Create::Folder)),
        Some(_) if mkpath => Ok(Some(Create::Path)),
        Some(parent) => Err(Error::new(
            About::Destination(dst.to_path_buf()),
            Why::ParentMissing(parent),
        )),
    }
}

/// The topmost missing folder above `dst`, when even its parent does not exist.
fn missing_parent(dst: &Path) -> Option<PathBuf> {
    let parent = dst.parent()?;
    if parent.is_dir() {
        return None;
    }
    let mut missing = parent.to_path_buf();
    while let Some(up) = missing.parent() {
        if up.is_dir() {
            break;
        }
        missing = up.to_path_buf();
    }
    Some(missing)
}

impl From<PolicyArgs> for Policy {
    fn from(a: PolicyArgs) -> Policy {
        Policy {
            keep_last: a.keep_last,
            keep_within: a.keep_within,
            staggered: a.staggered,
        }
    }
}

/// How much runs at once, shaped by how many files the process may hold open: each copy worker
/// holds a few, each folder with copies waiting to be published one, the walk one per level it
/// keeps open. Under a tight `ulimit -n` the run slows down instead of failing files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) jobs: usize,
    /// Folders one worker's batch of staged copies may span before it is published.
    pub(crate) batch_dirs: usize,
    /// Copies one worker's batch may hold: each may keep its file open until published.
    pub(crate) batch_files: usize,
    /// Folder handles the walk keeps open.
    pub(crate) walk_open: usize,
}

/// Copies one worker publishes at once at most: one sync (a journal commit the worker waits
/// for) for each this many. A cold first copy of 1,000,000 files of 0-512 bytes took 93.6 s with
/// 1,024 (and 64 folders), 79.0 s with 4,096 (and 256 folders), 91.7 s with 16,384 (a worker
/// waits longer on each); 50,000 small files warm, 0.67x and 0.60x `rsync -a` + sync.
const BATCH_FILES: usize = 4096;

impl Limits {
    /// Open files kept for standard streams, signals, the destination lock and the watcher.
    const RESERVED: u64 = 24;

    pub(crate) fn new(jobs: usize, open_files: u64) -> Limits {
        let avail = open_files.saturating_sub(Self::RESERVED) as usize;
        let jobs = jobs.clamp(1, (avail / 16).max(1));
        // What one worker's batch may hold open: its folders, or its unnamed copies.
        let per_batch = avail.saturating_sub(8 * jobs) / jobs / 2;
        Limits {
            jobs,
            batch_dirs: per_batch.clamp(1, 256),
            batch_files: per_batch.clamp(1, BATCH_FILES),
            walk_open: (avail / 8).clamp(1, 10),
        }
    }
}

/// The open-file limit, raised to the hard limit first where it is lower (as many tools do).
fn open_file_budget() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const ENOUGH: u64 = 1 << 16;
    let lim = getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(ENOUGH);
    let maximum = lim.maximum.unwrap_or(ENOUGH).min(ENOUGH);
    if maximum > current
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: lim.maximum,
            },
        )
        .is_ok()
    {
        return maximum;
    }
    current
}

/// Every row of "Before anything is written" (docs/GUIDE.md) that can be checked without
/// writing: returns canonical (SRC, DST).
pub(crate) fn check_paths(src_arg: &Path, dst_arg: &Path) -> Result<(PathBuf, Location), Error> {
    let src_err = |why| Error::new(About::Source(src_arg.to_path_buf()), why);
    let dst_err = |why| Error::new(About::Destination(dst_arg.to_path_buf()), why);

    let md = std::fs::metadata(src_arg).map_err(|e| src_err(Why::Io(e)))?;
    if !md.is_dir() {
        return Err(src_err(Why::NotADirectory));
    }
    rustix::fs::access(
        src_arg,
        rustix::fs::Access::READ_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| src_err(Why::Unreadable(e.into())))?;
    std::fs::read_dir(src_arg).map_err(|e| src_err(Why::Unreadable(e)))?;
    let src = std::fs::canonicalize(src_arg).map_err(|e| src_err(Why::Io(e)))?;

    if let remote @ (Location::S3(..) | Location::Sftp(..)) = Location::parse(dst_arg)? {
        return Ok((src, remote));
    }
    let dst = match std::fs::metadata(dst_arg) {
        Ok(md) if md.is_dir() => {
            let dst = std::fs::canonicalize(dst_arg).map_err(|e| dst_err(Why::Io(e)))?;
            let smd = std::fs::metadata(&src).map_err(|e| src_err(Why::Io(e)))?;
            if (md.dev(), md.ino()) == (smd.dev(), smd.ino()) {
                return Err(Error::run(Why::SameFolder(src)));
            }
            dst
        }
        Ok(_) => return Err(dst_err(Why::NotADirectory)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            if std::fs::symlink_metadata(dst_arg).is_ok() {
                return Err(dst_err(Why::DanglingLink));
            }
            resolve_missing(dst_arg).map_err(dst_err)?
        }
        Err(e) => return Err(dst_err(Why::Io(e))),
    };

    if src == dst {
        return Err(Error::run(Why::SameFolder(src)));
    }
    if src.starts_with(&dst) {
        return Err(Error::run(Why::SourceInsideDestination { src, dst }));
    }
    Ok((src, Location::Local(dst)))
}

/// The canonical form of a path that does not exist yet: its longest existing ancestor made
/// canonical, then the rest of the components, `..` taken lexically.
fn resolve_missing(path: &Path) -> Result<PathBuf, Why> {
    let mut existing = std::path::absolute(path).map_err(Why::Io)?;
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(last) = existing.components().next_back() else {
            break;
        };
        rest.push(last.as_os_str().to_owned());
        if !existing.pop() {
            break;
        }
    }
    let mut out = std::fs::canonicalize(&existing).map_err(Why::Io)?;
    if !out.is_dir() {
        return Err(Why::AncestorNotAFolder(out));
    }
    for name in rest.iter().rev() {
        match Path::new(name).components().next() {
            Some(Component::Normal(n)) => out.push(n),
            Some(Component::ParentDir) => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_open_file_budget() {
        let roomy = Limits::new(2, 1024);
        assert_eq!(
            (roomy.jobs, roomy.batch_dirs, roomy.walk_open),
            (2, 246, 10)
        );
        assert_eq!(roomy.batch_files, 246);
        assert_eq!(Limits::new(2, 1 << 16).batch_files, 4096);
        let tight = Limits::new(8, 32);
        assert_eq!((tight.jobs, tight.batch_dirs, tight.walk_open), (1, 1, 1));
        assert_eq!(Limits::new(16, 100).jobs, 4);
        assert_eq!(Limits::new(0, 1 << 16).jobs, 1);
    }

    #[test]
    fn missing_destination_resolves_through_dotdot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(tmp.path()).expect("canonical");
        let p = base.join("new/../other/deeper");
        assert_eq!(resolve_missing(&p).ok(), Some(base.join("other/deeper")));
    }

    #[test]
    fn missing_destination_under_a_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        let err = resolve_missing(&f.join("sub")).expect_err("under a file");
        assert!(matches!(err, Why::AncestorNotAFolder(_)), "{err}");
    }
}
