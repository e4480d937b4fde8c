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
//! | in | `watch/` | `watch`: the loop (`mod`), the notify glue (`notifier`), events → work (`changes`) |
//! | decide | `plan` | pure: (source entry, its family in DST, rules, time) → `Decision` |
//! | decide | `naming` | pure: the naming rule: version names, families, the next free name |
//! | decide | `settle` | pure: when a changed file has settled (by events, or by its mtime) |
//! | decide | `history` | pure: which names are versions of which file, when each was captured, what a policy prunes |
//! | do | `engine/` | the worker pool, batches and group commit, folder metadata (`mod`); where folder jobs come from (`jobs`); one folder job: index, entries, deletions (`folder`); the workers all pairs share (`budget`); one entry's facts, decision and execution (`entry`) |
//! | do | `database` | live SQLite databases copied with SQLite's online backup |
//! | do | `dest/` | **the seam**: every access to DST goes through the `Destination`, `Folder` and `Staged` traits; `capabilities()` says what DST can hold. `dest/local.rs` is the local filesystem, `dest/sftp.rs` a folder on an SSH server, `dest/store/` an S3 bucket through OpenDAL; a new kind of destination is a new file there |
//! | do | `once`, `verify`, `archive/` | the commands: one pass; a check; `versions`, `restore`, `prune` over the history in DST |
//! | in | `pairs` | the config file: the pairs to back up, and their options |
//! | do | `service`, `status`, `state` | the systemd user unit; what each pair's `watch` is doing, from the state file it keeps |
//! | out | `outcome` | the vocabulary: what became of each entry, the counts |
//! | out | `error` | `Failure` (operation, path, cause, worded once) and the exit `Status` |
//! | out | `report` | the only module that prints: lines, JSON Lines (one schema enum), progress, summaries |
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

use crate::config::{Config, Job};
use crate::dest::Destination;
use crate::engine::{Engine, Settings};
use crate::error::reason;
use crate::escape::display;
use crate::report::{Reporter, Style};
use crate::scan::Tree;

pub use crate::error::Status;

/// Runs the command line `args` (the program's name first) to the end.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> Status {
    let job = match config::job(cli::parse(args)) {
        Ok(job) => job,
        Err(message) => {
            Reporter::stdio(Style::default()).error(&message);
            return Status::Failure;
        }
    };
    match job {
        Job::Print(text) => {
            use std::io::Write;
            match std::io::stdout().write_all(&text) {
                Ok(()) => Status::Success,
                Err(e) => {
                    Reporter::stdio(Style::default())
                        .error(&format!("cannot write: {}", reason(&e)));
                    Status::Failure
                }
            }
        }
        Job::Service(job) => service::run(job),
        Job::Status(job) => status::run(&job),
        Job::Versions(job) => archive::versions(&job),
        Job::Restore(job) => archive::restore::run(&job),
        Job::Prune(job) => archive::prune::run(&job),
        Job::Backup(configs) => backup(configs),
    }
}

/// `once`, `watch` or `verify`: of SRC and DST, or of every pair of the config file (`once`
/// one after another; `watch` all at once, each in its own thread, stopped by the same signal,
/// sharing one inotify instance and one budget of workers).
fn backup(configs: Vec<Config>) -> Status {
    let (stop, wake) = match signals() {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot handle signals: {}", reason(&e));
            Reporter::stdio(Style::default()).error(&why);
            return Status::Failure;
        }
    };
    let watching = configs.iter().any(|c| c.watch.is_some());
    let hub = watch::Hub::new();
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
        };
        statuses.push(run_pair(config, Arc::clone(&stop), wake.clone(), &shared));
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    worst(statuses)
}

/// What the pairs of one `watch` share: one inotify instance, and the workers that may copy
/// at once.
struct Shared {
    hub: watch::Hub,
    budget: Option<Arc<engine::Budget>>,
}

/// The status that says most: interrupted, else failed, else success.
fn worst(statuses: Vec<Status>) -> Status {
    statuses
        .into_iter()
        .max_by_key(|s| match s {
            Status::Success => 0,
            Status::Failure => 1,
            Status::Interrupted => 2,
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
        reporter.info(&format!(
            "Pair {name}: {} -> {}",
            display(&config.src),
            display(dst)
        ));
    }
    if let (Some(how), false) = (config.create_dst, config.dry_run) {
        if let Err(e) = config.dst.create(how == config::Create::Path) {
            let why = format!("cannot be created: {}", reason(&e));
            reporter.error(&format!("destination {}: {why}", display(dst)));
            return Status::Failure;
        }
        reporter.created(dst);
    }
    let dest: Arc<dyn Destination> = match dest::open(&config.dst, !config.dry_run) {
        Ok(d) => d,
        Err(e) => {
            reporter.error(&format!("destination {}: {e}", display(dst)));
            return Status::Failure;
        }
    };
    let caps = dest.capabilities();
    reporter.detail(&format!(
        "Destination {}: {}",
        display(dest.path()),
        caps.describe()
    ));
    let as_root = rustix::process::geteuid().is_root();
    for loss in caps.losses(as_root) {
        reporter.warning(&format!(
            "destination {} ({}) {loss}",
            display(dest.path()),
            caps.kind
        ));
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
        dry_run: config.dry_run,
        each_unchanged: config.style.verbose,
        lock_patience: config
            .watch
            .as_ref()
            .map_or(std::time::Duration::ZERO, |w| w.max_delay),
    };
    let engine = Engine::new(tree, dest, settings, stop).with_budget(shared.budget.clone());
    if config.verify {
        return verify::run(&engine, &mut reporter);
    }
    match &config.watch {
        None => once::run(&engine, &config.policy, &mut reporter),
        Some(w) => watch::run(
            &engine,
            w,
            &config.policy,
            &mut reporter,
            &wake,
            &shared.hub,
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
