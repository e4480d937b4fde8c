//! `backup prune`, and the pruning that `once` and `watch` do after a pass: old versions deleted
//! by a policy (`history` decides which), never the newest version of any file.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Archive, reporter, source_names};
use crate::config::Prune;
use crate::engine::Engine;
use crate::error::{About, Error, Failure, Op, Status, Why};
use crate::history::{self, Policy};
use crate::naming;
use crate::outcome::Event;
use crate::report::{Message, Reporter};

/// What a pruning run did.
#[derive(Clone, Copy, Debug, Default)]
struct Pruned {
    files: u64,
    kept: u64,
    pruned: u64,
    failed: u64,
}

/// Prunes the folders `rels` of DST by `policy`. With `src`, the names in each matching source
/// folder tell apart files whose own names look like versions.
fn prune(
    archive: &Archive,
    rels: &[PathBuf],
    src: Option<&Path>,
    policy: &Policy,
    dry_run: bool,
    out: &mut Reporter,
) -> Pruned {
    let mut tally = Pruned::default();
    let now = naming::stamp_of(&chrono::Local::now().naive_local());
    for rel in rels {
        let sources = src.and_then(|s| source_names(s, rel));
        let (dir, histories) = match archive.histories(rel, sources.as_ref()) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tally.failed += 1;
                out.event(&Event::failed(
                    archive.root().join(rel),
                    Failure::io(Op::Read, e),
                ));
                continue;
            }
        };
        for h in &histories {
            tally.files += 1;
            let gone = history::to_prune(&h.versions, policy, now);
            tally.kept += (h.versions.len() - gone.len()) as u64;
            for i in gone {
                let name = &h.versions[i].name;
                let path = dir.path().join(OsStr::from_bytes(name));
                match if dry_run { Ok(()) } else { dir.remove(name) } {
                    Ok(()) => {
                        tally.pruned += 1;
                        out.say(&Message::Pruned(&path));
                    }
                    Err(e) => {
                        tally.failed += 1;
                        out.event(&Event::failed(path, Failure::io(Op::Prune, e)));
                    }
                }
            }
        }
    }
    tally
}

fn summary(out: &mut Reporter, t: &Pruned) {
    out.say(&Message::PruneSummary {
        files: t.files,
        kept: t.kept,
        pruned: t.pruned,
        failed: t.failed,
    });
}

/// Prunes by `policy` in the DST folders `rels` (all of them when `None`) after a pass or
/// batch; returns whether anything failed.
pub(crate) fn after_pass(
    engine: &Engine,
    policy: &Policy,
    rels: Option<Vec<PathBuf>>,
    reporter: &mut Reporter,
) -> bool {
    if policy.is_empty() {
        return false;
    }
    let archive = Archive::of(&engine.dest);
    let rels = rels.unwrap_or_else(|| archive.folders(Path::new("")));
    let dry_run = engine.dry_run();
    let tally = prune(
        &archive,
        &rels,
        Some(&engine.tree.src),
        policy,
        dry_run,
        reporter,
    );
    if tally.pruned > 0 || tally.failed > 0 {
        summary(reporter, &tally);
    }
    tally.failed > 0
}

/// `backup prune DST --keep-last N | --keep-within DURATION | --staggered`
pub(crate) fn run(args: &Prune) -> Status {
    let mut out = reporter(args.json, args.quiet, args.dry_run);
    let policy = args.policy;
    let archive = match Archive::open(&args.dst, !args.dry_run) {
        Ok(a) => a,
        Err(e) => {
            out.error(&e);
            return Status::Failure;
        }
    };
    let src = match args.source.as_deref().map(std::fs::canonicalize) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            let shown = args.source.clone().unwrap_or_default();
            out.error(&Error::new(About::Option("--source", shown), Why::Io(e)));
            return Status::Failure;
        }
    };
    let folders = archive.folders(Path::new(""));
    let t = prune(
        &archive,
        &folders,
        src.as_deref(),
        &policy,
        args.dry_run,
        &mut out,
    );
    summary(&mut out, &t);
    Status::failed_if(t.failed > 0)
}
