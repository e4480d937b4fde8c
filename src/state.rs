//! What a running `watch` says about itself, for `backup status`: a small JSON file per pair
//! under `$XDG_STATE_HOME/backup/` (never in DST), replaced whole at every change of state and
//! after every batch, so that a reader never sees half of it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::{Condition, Reading};
use crate::outcome::Counts;

/// How many recent failure reasons are kept.
const RECENT: usize = 5;

/// The file's contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub pid: u32,
    /// `watching`, `polling`, `copying`, `waiting for destination`, `destination full`,
    /// `stopped`.
    pub state: String,
    pub started: String,
    pub last_pass: Option<String>,
    pub last_copy: Option<String>,
    /// When the last batch ended with every file it met copied (or found unchanged).
    pub last_success: Option<String>,
    /// `ok`, `stale`, `failing`, `full` or `lost` (see `health::Condition`).
    pub health: String,
    /// The age of the oldest change not yet durable in DST; 0 when caught up.
    pub lag_seconds: u64,
    /// Changes seen and not yet durable in DST, and the size of those files (of the first
    /// 10,000).
    pub pending: usize,
    pub pending_bytes: u64,
    /// Free space in DST, where it says.
    pub free_bytes: Option<u64>,
    /// Files that failed and have not been copied since.
    pub failing_files: usize,
    /// Whether some file failed and has not been copied since.
    pub failing: bool,
    pub failures: u64,
    pub recent_failures: Vec<String>,
    pub copied: u64,
}

/// The state file of one pair.
pub(crate) struct State {
    path: Option<PathBuf>,
    pub snapshot: Snapshot,
}

/// Where the state of the pair SRC → DST is kept: `$XDG_STATE_HOME/backup/`, or
/// `~/.local/state/backup/`, a file named after the pair.
pub(crate) fn path_for(src: &Path, dst: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (src, dst).hash(&mut h);
    Some(
        base.join("backup")
            .join(format!("pair-{:016x}.json", h.finish())),
    )
}

/// The state a `watch` of SRC → DST last saved, if any.
pub(crate) fn read(src: &Path, dst: &Path) -> Option<Snapshot> {
    let text = std::fs::read_to_string(path_for(src, dst)?).ok()?;
    serde_json::from_str(&text).ok()
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

impl State {
    /// The state of a `watch` starting now; nowhere to save it is no reason not to run.
    pub(crate) fn start(src: &Path, dst: &Path) -> State {
        let state = State {
            path: path_for(src, dst),
            snapshot: Snapshot {
                src: src.to_path_buf(),
                dst: dst.to_path_buf(),
                pid: std::process::id(),
                state: "starting".into(),
                started: now(),
                ..Snapshot::default()
            },
        };
        state.save();
        state
    }

    /// A state kept nowhere: for a loop under test.
    #[cfg(test)]
    pub(crate) fn detached(src: &Path, dst: &Path) -> State {
        State {
            path: None,
            snapshot: Snapshot {
                src: src.to_path_buf(),
                dst: dst.to_path_buf(),
                ..Snapshot::default()
            },
        }
    }

    pub(crate) fn set(&mut self, state: &str) {
        if self.snapshot.state != state {
            self.snapshot.state = state.to_string();
            self.save();
        }
    }

    /// The pair's health as just read; saved when it changed.
    pub(crate) fn health(&mut self, condition: Condition, r: &Reading, failing: usize) {
        let before = self.snapshot.clone();
        let s = &mut self.snapshot;
        s.health = condition.word().to_string();
        s.lag_seconds = r.lag.as_secs();
        s.pending = r.pending_files;
        s.pending_bytes = r.pending_bytes;
        s.free_bytes = r.free;
        s.failing_files = failing;
        s.failing = failing > 0;
        s.last_success = r.last_success.map(|t| {
            chrono::DateTime::<chrono::Local>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        });
        if self.snapshot != before {
            self.save();
        }
    }

    /// After a batch: when, what it did, and its failures.
    pub(crate) fn batch(&mut self, full: bool, counts: &Counts, failures: Vec<String>) {
        let at = now();
        if full {
            self.snapshot.last_pass = Some(at.clone());
        }
        if counts.copied > 0 {
            self.snapshot.last_copy = Some(at);
        }
        self.snapshot.copied += counts.copied;
        self.snapshot.failures += counts.failed;
        self.snapshot.recent_failures.extend(failures);
        let over = self.snapshot.recent_failures.len().saturating_sub(RECENT);
        self.snapshot.recent_failures.drain(..over);
        self.save();
    }

    /// Replaces the file whole: a reader sees the old state or the new one.
    fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let Ok(text) = serde_json::to_string_pretty(&self.snapshot) else {
            return;
        };
        if let Some(folder) = path.parent() {
            let _ = std::fs::create_dir_all(folder);
        }
        let temp = path.with_extension(format!("json.{}", std::process::id()));
        if std::fs::write(&temp, text).is_ok() {
            let _ = std::fs::rename(&temp, path);
        }
    }
}

/// Whether the process `pid` is alive.
pub(crate) fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_failures_keep_the_last_few() {
        let mut s = State {
            path: None,
            snapshot: Snapshot::default(),
        };
        let failed = Counts {
            failed: 1,
            ..Counts::default()
        };
        for i in 0..8 {
            s.batch(false, &failed, vec![format!("f{i}")]);
        }
        assert_eq!(s.snapshot.recent_failures, ["f3", "f4", "f5", "f6", "f7"]);
        assert_eq!(s.snapshot.failures, 8);
        s.batch(true, &Counts::default(), Vec::new());
        assert!(s.snapshot.last_pass.is_some());
        assert!(alive(std::process::id()));
    }
}
