//! `--metrics-file`: a Prometheus textfile-collector file, replaced whole (a temporary file,
//! then a rename) whenever a pair's reading changes, so that a scrape never sees half of it.
//! Pairs watched together may share one file: each is a set of series with its own labels.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::health::Reading;
use crate::report::alert::{Labels, metrics};

/// One metrics file per path, shared by the pairs that name it.
#[derive(Clone, Default)]
pub(crate) struct Boards {
    boards: Arc<Mutex<HashMap<PathBuf, Arc<Board>>>>,
}

impl Boards {
    pub(crate) fn board(&self, path: &Path) -> Arc<Board> {
        let mut boards = self.boards.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(boards.entry(path.to_path_buf()).or_insert_with(|| {
            Arc::new(Board {
                path: path.to_path_buf(),
                rows: Mutex::new(BTreeMap::new()),
            })
        }))
    }
}

/// One metrics file and what each of its pairs read last.
pub(crate) struct Board {
    path: PathBuf,
    rows: Mutex<BTreeMap<String, (Labels, Reading)>>,
}

impl Board {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records a pair's reading and writes the file anew.
    pub(crate) fn post(&self, labels: Labels, reading: Reading) -> io::Result<()> {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.insert(format!("{}\0{}", labels.src, labels.dst), (labels, reading));
        let all: Vec<&(Labels, Reading)> = rows.values().collect();
        let text = metrics(&all);
        // Not `*.prom`: the collector must never read the file while it is written.
        let mut temp = self.path.clone().into_os_string();
        temp.push(format!(".tmp.{}", std::process::id()));
        let temp = PathBuf::from(temp);
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, &self.path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
    }
}
