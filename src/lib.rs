//! `backup`: keeps a live, versioned mirror of a folder.
//!
//! Data flow: `cli` → `config` (validated decisions) → `scan` walks SRC and feeds folder jobs →
//! `copy` workers decide (`plan`, `naming`) and write through `dest` → `report` prints.
//! `watch` and `queue` turn filesystem events into the same folder jobs.

pub mod cli;
pub mod config;
pub mod copy;
pub mod dest;
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
use std::sync::atomic::AtomicBool;

use crate::cli::Cli;
use crate::config::Config;
use crate::copy::Copier;
use crate::dest::{Dest, OpenError};
use crate::report::{Counts, Reporter, display, reason};

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
    let mut reporter = Reporter::stdio();
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(message) => {
            reporter.error(&message);
            return Status::Failure;
        }
    };
    let dest = match Dest::open(&config.dst) {
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
    let copier = Copier {
        src: config.src.clone(),
        dest,
        checksum: config.checksum,
        limits: config.limits,
        skip: config.dst_inside_src.then(|| config.dst.clone()),
        stop,
    };
    match &config.watch {
        None => once(&copier, &mut reporter),
        Some(w) => live::run(&copier, w, &mut reporter, &wake),
    }
}

/// One pass, the summary, and the exit status.
fn once(
    copier: &Copier,
    reporter: &mut Reporter<impl std::io::Write, impl std::io::Write>,
) -> Status {
    let mut counts = Counts::default();
    copier.pass(Path::new(""), &mut |ev| {
        reporter.event(&ev);
        counts.add(&ev.outcome);
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
    status
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
