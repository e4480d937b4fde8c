//! `backup status`: for each pair, what its running `watch` says it is doing (from its state
//! file), and how old the newest copy in DST is. Exit 1 when a pair is failing, its watch judges
//! its health other than `ok`, or its newest copy is older than `--stale-after`, so that it can
//! serve as a monitoring check.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::StatusJob;
use crate::dest::{Location, is_temp_name};
use crate::error::{Error, Status};
use crate::pairs;
use crate::report::{Message, PairStatus, Reporter, Style};
use crate::state;

pub(crate) fn run(args: &StatusJob) -> Status {
    let mut out = Reporter::stdio(Style {
        json: args.json,
        ..Style::default()
    });
    let pairs = match &args.pair {
        Some((src, dst)) => vec![(None, src.clone(), dst.clone())],
        _ => match pairs::chosen(args.config.as_deref(), &args.only) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|p| (Some(p.name), p.src, p.dst))
                .collect(),
            Err(e) => {
                out.error(&e);
                return Status::Failure;
            }
        },
    };
    let pairs: Vec<(Option<String>, PathBuf, Location)> = match pairs
        .into_iter()
        .map(|(name, src, dst)| Ok((name, canonical(&src), located(&dst)?)))
        .collect::<Result<_, Error>>()
    {
        Ok(p) => p,
        Err(e) => {
            out.error(&e);
            return Status::Failure;
        }
    };
    let mut bad = false;
    for (name, src, dst) in pairs {
        let status = check(name, &src, &dst, args.stale_after);
        // A watch that judges itself behind, full or without its destination is no success.
        let troubled = status
            .running
            .as_ref()
            .is_some_and(|s| !matches!(s.health.as_str(), "ok" | ""));
        bad |= status.failing || status.stale || troubled;
        out.say(&Message::Status(&status));
    }
    Status::failed_if(bad)
}

/// The pair's status now.
fn check(name: Option<String>, src: &Path, dst: &Location, stale_after: Duration) -> PairStatus {
    let running =
        state::read(src, dst.path()).filter(|s| s.state != "stopped" && state::alive(s.pid));
    let newest = newest_copy(dst);
    let age = newest.and_then(|t| SystemTime::now().duration_since(t).ok());
    PairStatus {
        name,
        src: src.to_path_buf(),
        dst: dst.path().to_path_buf(),
        failing: running.as_ref().is_some_and(|s| s.failing),
        stale: age.is_none_or(|a| a > stale_after),
        running,
        newest_copy_age: age,
    }
}

/// Paths as `watch` keeps them: canonical where they exist.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// DST as `watch` keeps it: a folder canonical where it exists, else as given.
fn located(dst: &Path) -> Result<Location, Error> {
    Ok(match Location::parse(dst)? {
        Location::Local(folder) => Location::Local(canonical(&folder)),
        remote => remote,
    })
}

/// When the newest copy in DST was written, read through the destination seam without writing:
/// the latest change time of its files (a copy's is when it was published, or when its metadata
/// was last set again; an object's, when it was uploaded).
fn newest_copy(dst: &Location) -> Option<SystemTime> {
    use crate::meta::Kind;
    let dest = crate::dest::open(dst, false).ok()?;
    let mut newest = None;
    let mut queue = vec![PathBuf::new()];
    while let Some(rel) = queue.pop() {
        let Ok(Some(folder)) = dest.folder(&rel) else {
            continue;
        };
        for name in folder.list().unwrap_or_default() {
            let Ok(meta) = folder.stat(&name) else {
                continue;
            };
            match meta.kind {
                Kind::Dir => queue.push(rel.join(std::ffi::OsStr::from_bytes(&name))),
                _ if is_temp_name(&name) => {}
                _ => newest = newest.max(Some(meta.ctime)),
            }
        }
    }
    let t = newest?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(t.sec).ok()?))
}
