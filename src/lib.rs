//! `backup`: keeps a live, versioned mirror of a folder.
//!
//! Data flow: `cli` → `config` (validated decisions, `exclude`) → `scan` walks SRC and feeds
//! folder jobs → `copy` workers decide (`plan`, `naming`) and write through `dest` → `report`
//! prints. In `watch`, `live` runs the loop: `watch` delivers filesystem events, `queue` turns
//! them into work, and the same folder jobs go to the same workers.

pub mod archive;
pub mod cli;
pub mod config;
pub mod copy;
pub mod dest;
pub mod exclude;
pub mod history;
pub mod live;
pub mod meta;
pub mod naming;
pub mod plan;
pub mod queue;
pub mod report;
pub mod scan;
pub mod watch;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::copy::Copier;
use crate::dest::{Dest, OpenError};
use crate::report::{Counts, Reporter, Style, display, reason};

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

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(match s {
            Status::Success => 0,
            Status::Failure => 1,
            Status::Interrupted => 130,
        })
    }
}

/// Runs the parsed command line to the end.
pub fn run(cli: Cli) -> Status {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "backup", &mut std::io::stdout());
            Status::Success
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => Status::Success,
                Err(e) => {
                    Reporter::stdio(Style::default())
                        .error(&format!("cannot write: {}", reason(&e)));
                    Status::Failure
                }
            }
        }
        Command::Versions(args) => archive::versions(args),
        Command::Restore(args) => archive::restore(args),
        Command::Prune(args) => {
            if history::Policy::from(args.policy.clone()).is_empty() {
                let mut cli = Cli::command();
                let prune = cli
                    .find_subcommand_mut("prune")
                    .map(|c| c.clone().bin_name("backup prune"));
                prune
                    .unwrap_or(cli)
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "prune needs a policy: --keep-last N, --keep-within DURATION or --staggered",
                    )
                    .exit();
            }
            archive::prune_command(args)
        }
        command => backup(command),
    }
}

/// `once` or `watch`.
fn backup(command: Command) -> Status {
    let config = match Config::from_cli(command) {
        Ok(c) => c,
        Err(message) => {
            Reporter::stdio(Style::default()).error(&message);
            return Status::Failure;
        }
    };
    let mut reporter = Reporter::stdio(config.style);
    let dest = match Dest::open(&config.dst, config.style.dry_run) {
        Ok(d) => d,
        Err(e) => {
            let why = match e {
                OpenError::Create(e) => format!("cannot be created: {}", reason(&e)),
                OpenError::Open(e) => reason(&e),
                OpenError::NotWritable(e) => format!("cannot be written: {}", reason(&e)),
                OpenError::Locked => {
                    "another backup is already writing into this destination".to_string()
                }
            };
            reporter.error(&format!("destination {}: {why}", display(&config.dst)));
            return Status::Failure;
        }
    };
    let (stop, wake) = match signals() {
        Ok(s) => s,
        Err(e) => {
            reporter.error(&format!("cannot handle signals: {}", reason(&e)));
            return Status::Failure;
        }
    };
    let policy = config.policy;
    let copier = Copier {
        src: config.src.clone(),
        dest,
        checksum: config.checksum,
        limits: config.limits,
        skip: config.dst_inside_src.then(|| config.dst.clone()),
        exclude: config.exclude.clone(),
        dry_run: config.style.dry_run,
        each_unchanged: config.style.verbose,
        stop,
    };
    if config.style.verify {
        return verify(&copier, &mut reporter);
    }
    match &config.watch {
        None => once(&copier, &policy, &mut reporter),
        Some(w) => live::run(&copier, w, &policy, &mut reporter, &wake),
    }
}

/// `verify`: a dry run whose would-be copies are the findings.
fn verify(copier: &Copier, reporter: &mut Reporter) -> Status {
    let mut counts = Counts::default();
    with_progress(copier, reporter, |reporter| {
        copier.pass(Path::new(""), &mut |ev| {
            reporter.event(&ev);
            counts.add(&ev.outcome);
        })
    });
    match (reporter.verify_summary(&counts), copier.stopped()) {
        (_, true) => Status::Interrupted,
        (true, false) => Status::Success,
        (false, false) => Status::Failure,
    }
}

/// Prunes old versions by `policy` in the DST folders `rels` (all of them when `None`), after a
/// pass or batch; returns whether anything failed.
pub(crate) fn prune_after(
    copier: &Copier,
    policy: &history::Policy,
    rels: Option<Vec<std::path::PathBuf>>,
    reporter: &mut Reporter,
) -> bool {
    if policy.is_empty() {
        return false;
    }
    let archive = match archive::Archive::of(&copier.dest) {
        Ok(a) => a,
        Err(e) => {
            reporter.error(&format!("cannot prune: {}", reason(&e)));
            return true;
        }
    };
    let rels = rels.unwrap_or_else(|| archive.folders(Path::new("")));
    let tally = archive::prune(
        &archive,
        &rels,
        Some(&copier.src),
        policy,
        copier.dry_run,
        reporter,
    );
    if tally.pruned > 0 || tally.failed > 0 {
        archive::prune_summary(reporter, &tally, copier.dry_run);
    }
    tally.failed > 0
}

/// One pass, the summary, pruning if asked, and the exit status.
fn once(copier: &Copier, policy: &history::Policy, reporter: &mut Reporter) -> Status {
    let mut counts = Counts::default();
    with_progress(copier, reporter, |reporter| {
        copier.pass(Path::new(""), &mut |ev| {
            reporter.event(&ev);
            counts.add(&ev.outcome);
        })
    });
    let mut status = if counts.failed > 0 {
        Status::Failure
    } else {
        Status::Success
    };
    if let Err(e) = copier.dest.still_there() {
        reporter.error(&format!(
            "destination {}: {}",
            display(copier.dest.path()),
            reason(&e)
        ));
        status = Status::Failure;
    }
    reporter.summary(&counts);
    if copier.stopped() {
        return Status::Interrupted;
    }
    if prune_after(copier, policy, None, reporter) {
        status = Status::Failure;
    }
    status
}

/// Runs a first pass with the progress bar going (it is hidden unless stderr is a terminal),
/// while another thread counts the tree to give the bar its totals.
pub(crate) fn with_progress<R>(
    copier: &Copier,
    reporter: &mut Reporter,
    pass: impl FnOnce(&mut Reporter) -> R,
) -> R {
    reporter.progress_start();
    let progress = reporter.progress_handle();
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if progress.visible() {
            s.spawn(|| {
                if let Some((files, bytes)) = scan::count(copier, &done) {
                    progress.total(files, bytes);
                }
            });
        }
        let result = pass(reporter);
        done.store(true, Ordering::Relaxed);
        result
    });
    reporter.progress_end();
    result
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
