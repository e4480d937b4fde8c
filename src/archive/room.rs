//! `--keep-free`: room made in DST the way Time Machine makes it. Before a copy would leave less
//! free than asked, the oldest versions across all of DST go first, oldest capture first; never
//! a file's newest copy, never the record of a deletion (`history::spare` decides which may go).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Archive, source_names};
use crate::dest::Destination;
use crate::history;

/// Keeps `keep` bytes free in one destination.
pub(crate) struct Keeper {
    dest: Arc<dyn Destination>,
    /// SRC, whose names tell apart files that only look like versions.
    src: PathBuf,
    keep: u64,
    /// Decide and say, delete nothing: the free space is then what the copies and the pruning
    /// would have left.
    dry_run: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The versions that may go, newest first (the next to go is the last), once listed in
    /// this run.
    spare: Option<Vec<Spare>>,
    /// What is free after the copies since the last look, by this run's own count: the
    /// destination is asked again only when that comes near what is kept (and never in a dry
    /// run, which writes nothing).
    estimate: Option<u64>,
}

/// A version that may go.
struct Spare {
    rel: PathBuf,
    name: Vec<u8>,
    captured: u64,
    size: u64,
}

/// A version pruned to make room (or, in a dry run, that would be), or why it could not be.
pub(crate) type Made = Result<(PathBuf, u64), (PathBuf, io::Error)>;

impl Keeper {
    /// `None` when there is nothing to keep.
    pub(crate) fn new(
        dest: Arc<dyn Destination>,
        src: &Path,
        keep: u64,
        dry_run: bool,
    ) -> Option<Keeper> {
        (keep > 0).then(|| Keeper {
            dest,
            src: src.to_path_buf(),
            keep,
            dry_run,
            state: Mutex::new(State::default()),
        })
    }

    /// A new run (a pass, or a batch of `watch`): what DST holds is listed again when room is
    /// needed, and its free space asked again.
    pub(crate) fn new_run(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = State::default();
    }

    /// Makes room for a copy of `need` bytes: prunes the oldest spare versions until what stays
    /// free after it is at least what is kept, or none is left. Returns what was pruned.
    pub(crate) fn make(&self, need: u64) -> Vec<Made> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let enough = |free: u64| free.saturating_sub(need) >= self.keep;
        let mut free = match state.estimate {
            Some(free) if enough(free) || self.dry_run => free,
            _ => match self.dest.free_space() {
                Some(free) => free,
                // Nothing to go by: nothing is pruned.
                None => return Vec::new(),
            },
        };
        let mut made = Vec::new();
        while !enough(free) {
            if state.spare.is_none() {
                state.spare = Some(self.list());
            }
            let Some(next) = state.spare.as_mut().and_then(Vec::pop) else {
                break;
            };
            let dir = self.dest.path().join(&next.rel);
            let path = dir.join(OsStr::from_bytes(&next.name));
            match self.prune(&next) {
                Ok(()) => {
                    free = free.saturating_add(next.size);
                    made.push(Ok((path, next.size)));
                }
                Err(e) => made.push(Err((path, e))),
            }
            if !self.dry_run && !made.is_empty() {
                // What the filesystem frees can differ from the file's size (blocks shared
                // with another copy, metadata): it says.
                free = self.dest.free_space().unwrap_or(free);
            }
        }
        state.estimate = Some(free.saturating_sub(need));
        made
    }

    fn prune(&self, spare: &Spare) -> io::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let folder = self
            .dest
            .folder(&spare.rel)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        folder.remove(&spare.name)
    }

    /// Every spare version in DST, newest first.
    fn list(&self) -> Vec<Spare> {
        let archive = Archive::of(&self.dest);
        let mut out = Vec::new();
        for rel in archive.folders(Path::new("")) {
            let sources = source_names(&self.src, &rel);
            let Ok((_, histories)) = archive.histories(&rel, sources.as_ref()) else {
                continue;
            };
            for h in histories {
                for i in history::spare(&h.versions) {
                    let v = &h.versions[i];
                    out.push(Spare {
                        rel: rel.clone(),
                        name: v.name.clone(),
                        captured: v.captured,
                        size: v.size,
                    });
                }
            }
        }
        out.sort_by(|a, b| b.captured.cmp(&a.captured).then(b.name.cmp(&a.name)));
        out
    }
}
