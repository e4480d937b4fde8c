//! `backup`: keeps a live, versioned mirror of a folder.
//!
//! # Architecture
//!
//! Paths come in, a decision is made about each, the destination carries it out, and the report
//! prints it. One module per idea:
//!
//! | stage | module | its one job |
//! | --- | --- | --- |
//! | in | `cli` | the command line as clap parses it; no decisions |
//! | in | `config` | command line → `Config`: canonical paths, validation before anything is written, output style, limits |
//! | in | `exclude` | `--exclude`, `--exclude-from` and `.backupignore` as one matcher |
//! | in | `scan` | walks SRC: which folders a pass visits, parents first |
//! | in | `source` | reads SRC without following symlinks or blocking on FIFOs |
//! | in | `watch/` | `watch`: the loop (`mod`), starting the watcher (`start`), the notify glue (`notifier`), fanotify (`fanotify`), the paced poller (`poller`), events → work (`changes`), a destination away or full (`away`) |
//! | decide | `plan` | pure: (source entry, its family in DST, rules, time) → `Decision` |
//! | decide | `naming` | pure: the naming rule: version names, families, the next free name |
//! | decide | `settle` | pure: when a changed file has settled (by events, or by its mtime) |
//! | decide | `history` | pure: which names are versions of which file, when each was captured, what a policy prunes |
//! | do | `engine/` | the worker pool, batches and group commit, folder metadata (`mod`); where folder jobs come from (`jobs`); one folder job: index, entries, deletions (`folder`); the workers all pairs share (`budget`); one entry's facts, decision and execution (`entry`); a live SQLite database as one entry (`databases`); a file becoming a folder and back (`shape`); a moved file's copy cloned from its copy elsewhere (`moved`) |
//! | do | `database` | live SQLite databases copied with SQLite's online backup |
//! | do | `dest/` | **the seam**: every access to DST goes through the `Destination`, `Folder` and `Staged` traits; `capabilities()` says what DST can hold. `dest/local/` is the local filesystem (a copy in progress in `staged`), `dest/sftp.rs` a folder on an SSH server, `dest/store/` an S3 bucket through OpenDAL; a new kind of destination is a new file there |
//! | do | `once`, `verify`, `archive/` | the commands: one pass; a check; `versions`, `restore`, `prune`, `du` over the history in DST, and the room `--keep-free` makes (`room`) |
//! | in | `pairs` | the config file: the pairs to back up, and their options |
//! | do | `service`, `status`, `state` | the systemd user unit; what each pair's `watch` is doing, from the state file it keeps |
//! | out | `outcome` | the vocabulary: what became of each entry, the counts |
//! | out | `error` | `Failure` (one entry's problem: operation, path, cause), `Error` (why a command cannot start or go on), each worded once, and the exit `Status` |
//! | out | `report/` | the only module that prints: everything said as a `Message` (`message`), worded by the printer for people (`text`) or for programs (`json`), each an exhaustive match; the `Reporter` (`mod`) keeps the progress bar and the order of stdout and stderr |
//! | out | `escape` | paths as printed, control characters escaped |
//!
//! Nothing imports this crate root back; the seam's users (`engine`, `archive`) see only the
//! traits, never which backend they talk to.

mod archive;
mod cli;
mod config;
mod database;
mod dest;
mod engine;
mod error;
mod escape;
mod exclude;
mod health;
mod history;
mod meta;
mod naming;
mod once;
mod options;
mod outcome;
mod pairs;
mod plan;
mod report;
mod scan;
mod service;
mod settle;
mod source;
mod state;
mod status;
mod verify;
mod watch;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{Config, Job, Mode};
use crate::dest::Destination;
use crate::engine::{Engine, Settings};
use crate::error::{About, Error, Why};
use crate::escape::display;
use crate::report::{Detail, Message, Reporter, Style, Warning};
use crate::scan::Tree;

pub use crate::error::Status;

/// Runs the command line `args` (the program's name first) to the end.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> Status {
    let job = match config::job(cli::parse(args)) {
        Ok(job) => job,
        Err(e) => {
            Reporter::stdio(Style::default()).error(&e);
            return if e.is_usage() {
                Status::Usage
            } else {
                Status::Failure
            };
        }
    };
    match job {
        Job::Print(text) => {
            use std::io::Write;
            match std::io::stdout().write_all(&text) {
                Ok(()) => Status::Success,
                Err(e) => {
                    Reporter::stdio(Style::default()).error(&Error::run(Why::Output(e)));
                    Status::Failure
                }
            }
        }
        Job::Service(job) => service::run(job),
        Job::Status(job) => status::run(&job),
        Job::Versions(job) => archive::versions(&job),
        Job::Restore(job) => archive::restore::run(&job),
        Job::Prune(job) => archive::prune::run(&job),
        Job::Du(job) => archive::du::run(&job),
        Job::Diff(job) => archive::diff::run(&job),
        Job::Find(job) => archive::find::run(&job),
        Job::Mount(job) => archive::mount::run(&job),
        Job::Backup(configs) => backup(configs),
    }
}

/// For the test suites, not the program: opens DST (a folder, an `s3://` or an `sftp://` URL;
/// it must be empty) for writing, and checks every promise of the destination seam on it,
/// panicking at the first one broken, and at a DST that cannot be opened.
#[doc(hidden)]
pub fn check_destination(dst: &std::path::Path) {
    let opened = dest::Location::parse(dst)
        .map_err(|e| e.to_string())
        .and_then(|at| dest::open(&at, true).map_err(|e| e.to_string()));
    match opened {
        Ok(dest) => dest::contract::promises(&*dest),
        Err(e) => panic!("destination {}: {e}", display(dst)),
    }
}

/// `once`, `watch` or `verify`: of SRC and DST, or of every pair of the config file (`once`
/// one after another; `watch` all at once, each in its own thread, stopped by the same signal,
/// sharing one inotify instance and one budget of workers).
fn backup(configs: Vec<Config>) -> Status {
    let (stop, wake) = match signals() {
        Ok(s) => s,
        Err(e) => {
            Reporter::stdio(Style::default()).error(&Error::run(Why::Signals(e)));
            return Status::Failure;
        }
    };
    let watching = configs.iter().any(|c| matches!(c.mode, Mode::Watch(_)));
    let hub = watch::Hub::new();
    let boards = health::metrics::Boards::default();
    let budget = (watching && configs.len() > 1).then(|| {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Arc::new(engine::Budget::new(cpus))
    });
    if watching && configs.len() > 1 {
        let statuses: Vec<Status> = std::thread::scope(|s| {
            let runs: Vec<_> = configs
                .into_iter()
                .map(|config| {
                    let (stop, wake) = (Arc::clone(&stop), wake.clone());
                    let shared = Shared {
                        hub: hub.clone(),
                        budget: budget.clone(),
                        boards: boards.clone(),
                    };
                    s.spawn(move || run_pair(config, stop, wake, &shared))
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap_or(Status::Failure))
                .collect()
        });
        return worst(statuses);
    }
    let mut statuses = Vec::new();
    for config in configs {
        let shared = Shared {
            hub: hub.clone(),
            budget: None,
            boards: boards.clone(),
        };
        statuses.push(run_pair(config, Arc::clone(&stop), wake.clone(), &shared));
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    worst(statuses)
}

/// What the pairs of one `watch` share: one inotify instance, the workers that may copy at
/// once, and the metrics files that several pairs may write into.
struct Shared {
    hub: watch::Hub,
    budget: Option<Arc<engine::Budget>>,
    boards: health::metrics::Boards,
}

/// The status that says most: interrupted, else failed, else success.
fn worst(statuses: Vec<Status>) -> Status {
    statuses
        .into_iter()
        .max_by_key(|s| match s {
            Status::Success => 0,
            Status::Failure => 1,
            Status::Usage => 2,
            Status::Interrupted => 3,
        })
        .unwrap_or(Status::Success)
}

/// One pair: SRC and DST opened, checked and backed up by `once`, `watch` or `verify`.
fn run_pair(
    config: Config,
    stop: Arc<AtomicBool>,
    wake: crossbeam_channel::Receiver<()>,
    shared: &Shared,
) -> Status {
    let mut reporter = Reporter::stdio(config.style);
    let dst = config.dst.path();
    if let Some(name) = &config.name {
        reporter.say(&Message::Pair {
            name,
            src: &config.src,
            dst,
        });
    }
    let about = || About::Destination(dst.to_path_buf());
    let write = !config.mode.reads_only();
    if let (Some(how), true) = (config.create_dst, write) {
        if let Err(e) = config.dst.create(how == config::Create::Path) {
            reporter.error(&Error::new(about(), Why::NotCreated(e)));
            return Status::Failure;
        }
        reporter.say(&Message::Created(dst));
    }
    let dest: Arc<dyn Destination> = match dest::open(&config.dst, write) {
        Ok(d) => d,
        Err(e) => {
            reporter.error(&Error::new(about(), Why::Open(e)));
            return Status::Failure;
        }
    };
    let caps = dest.capabilities();
    reporter.say(&Message::Detail(Detail::Capabilities {
        dst: dest.path(),
        caps,
    }));
    let as_root = rustix::process::geteuid().is_root();
    for loss in caps.losses(as_root) {
        reporter.warning(&Warning::Loses {
            dst: dest.path().to_path_buf(),
            kind: caps.kind.clone(),
            loss,
        });
    }
    // Without times that stick, size and time cannot tell a changed file from an unchanged one.
    let checksum = config.checksum || (caps.probed && caps.precision.is_none());
    let tree = Tree {
        src: config.src.clone(),
        skip: config.skip.clone(),
        exclude: config.exclude.clone(),
        walk_open: config.limits.walk_open,
    };
    let settings = Settings {
        checksum,
        limits: config.limits,
        dry_run: !write,
        each_unchanged: config.style.verbose,
        lock_patience: match &config.mode {
            Mode::Watch(w) => w.max_delay,
            _ => std::time::Duration::ZERO,
        },
    };
    let keeper = config.keep_free.and_then(|keep| {
        let bytes = keep.bytes(dest.total_space());
        archive::room::Keeper::new(Arc::clone(&dest), &config.src, bytes, !write)
    });
    let engine = Engine::new(tree, dest, settings, stop)
        .with_budget(shared.budget.clone())
        .with_keeper(keeper);
    match &config.mode {
        Mode::Verify => verify::run(&engine, &mut reporter),
        Mode::Once | Mode::DryRun => once::run(&engine, &config.policy, &mut reporter),
        Mode::Watch(w) => watch::run(
            &engine,
            w,
            &config.policy,
            &mut reporter,
            &wake,
            &shared.hub,
            health::Watchdog::new(
                &w.health,
                health::notify::speaker(config.name.as_deref(), &config.src, dst),
                &shared.boards,
            ),
        ),
    }
}

/// The first Ctrl-C or SIGTERM sets the returned flag (finish what is in flight, then stop) and
/// sends on the returned channel (to wake a waiting loop); a second one exits at once with 130.
/// Nothing half-written is ever under a final name, so exiting at once loses only temporary
/// files, which the next pass removes.
fn signals() -> std::io::Result<(Arc<AtomicBool>, crossbeam_channel::Receiver<()>)> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so that it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            // Said at once, even while a long copy keeps the reporter busy.
            report::stopping();
            let _ = tx.try_send(());
        }
    });
    Ok((flag, rx))
}
