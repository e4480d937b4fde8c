//! `backup diff`: what changed in the backed-up tree between two points in time, as DST holds
//! them, or between one of them and the backed-up folder as it is now (`--source`). The tree at
//! each time is exactly what `restore --at` would write (`restore::folder_picks`); the changes
//! are what tells the two apart, a file that left one place and arrived at another with the same
//! bytes being a move. Against SRC, a file is unchanged where a backup would find it so (size
//! and modification time, at the precision DST keeps).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::restore::folder_picks;
use super::{Archive, Target, reported};
use crate::config::Diff;
use crate::error::{About, Error, Status, Why};
use crate::exclude::Exclude;
use crate::history;
use crate::meta::Time;
use crate::naming;
use crate::plan::same_time;
use crate::report::{Difference, Message, Reporter, Tally};
use crate::source;

/// A file in the tree at one time: its version in DST, or the file in SRC now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    Copy {
        dir: PathBuf,
        version: Vec<u8>,
        size: u64,
    },
    Live {
        path: PathBuf,
        size: u64,
        mtime: Time,
    },
}

impl Held {
    fn size(&self) -> u64 {
        match self {
            Held::Copy { size, .. } | Held::Live { size, .. } => *size,
        }
    }
}

/// `backup diff DST [PATH] --from TIME [--to TIME | --source SRC]`
pub(crate) fn run(args: &Diff) -> Status {
    reported(args.json, |out| diff(args, out))
}

fn diff(args: &Diff, out: &mut Reporter) -> Result<Status, Error> {
    let archive = Archive::open(&args.dst, false)?;
    let now = chrono::Local::now();
    let from = history::parse_when(&args.from, now)?;
    let to = history::parse_when(&args.to, now)?;
    let src = match &args.source {
        None => None,
        Some(s) => Some(
            std::fs::canonicalize(s)
                .map_err(|e| Error::new(About::Option("--source", s.clone()), Why::Io(e)))?,
        ),
    };
    let later = match &src {
        Some(src) => Later::Source(src),
        None => Later::At(naming::stamp_of(&to)),
    };
    let rel = match args
        .path
        .as_deref()
        .map(|p| archive.resolve(p))
        .transpose()?
    {
        Some(Target::File(dir, name)) if args.content => {
            return content(&archive, &dir, &name, naming::stamp_of(&from), later, out);
        }
        None => PathBuf::new(),
        Some(Target::Folder(rel)) if !args.content => rel,
        Some(Target::Folder(rel)) => {
            let path = archive.root().join(rel);
            return Err(Error::new(About::Path(path), Why::NotAFile));
        }
        Some(Target::File(dir, name)) => {
            let path = archive.root().join(dir).join(OsStr::from_bytes(&name));
            return Err(Error::new(About::Path(path), Why::NotADirectory));
        }
    };
    let before = tree_at(&archive, &rel, naming::stamp_of(&from))?;
    let after = match later {
        Later::At(at) => tree_at(&archive, &rel, at)?,
        Later::Source(src) => tree_now(src, &rel, archive.root())?,
    };
    let caps = archive.dest.capabilities();
    let unchanged = |a: &Held, b: &Held| match (a, b) {
        (
            Held::Copy { dir, version, size },
            Held::Live {
                size: now, mtime, ..
            },
        ) => {
            size == now
                && archive
                    .folder(dir)
                    .and_then(|f| f.stat(version))
                    .is_ok_and(|m| same_time(*mtime, m.mtime, caps.precision, caps.local_time))
        }
        _ => a == b,
    };
    let same = |a: &Held, b: &Held| same_bytes(&archive, a, b).unwrap_or(false);
    let changes = changes(&before, &after, unchanged, same);
    let mut tally = Tally::default();
    for c in &changes {
        tally.count(c);
        out.say(&Message::Difference(c));
    }
    out.say(&Message::DiffSummary(&tally));
    Ok(Status::Success)
}

/// The later side of a diff: a time in DST, or SRC as it is now.
#[derive(Clone, Copy)]
enum Later<'a> {
    At(u64),
    Source(&'a Path),
}

/// Every file and symlink under `rel` of SRC now, by its path relative to `rel`: what a backup
/// would take (the default ignores and `.backupignore` applied, DST left out where it is inside).
fn tree_now(src: &Path, rel: &Path, dst: &Path) -> Result<BTreeMap<PathBuf, Held>, Error> {
    let exclude = Exclude::build(src, true, &[], &[])?;
    let top = src.join(rel);
    let mut out = BTreeMap::new();
    let walk = walkdir::WalkDir::new(&top)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let in_src = e.path().strip_prefix(src).unwrap_or(e.path());
            e.path() != dst && !exclude.excludes(in_src, e.file_type().is_dir())
        });
    for entry in walk {
        let entry = entry.map_err(|e| {
            let at = e.path().unwrap_or(&top).to_path_buf();
            Error::new(About::Source(at), Why::Io(e.into()))
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let Ok(md) = entry.metadata() else {
            continue;
        };
        let meta = crate::meta::Meta::from_std(&md);
        let path = entry.path().to_path_buf();
        let key = path.strip_prefix(&top).unwrap_or(&path).to_path_buf();
        out.insert(
            key,
            Held::Live {
                path,
                size: meta.size,
                mtime: meta.mtime,
            },
        );
    }
    Ok(out)
}

/// What changed in the file `name` of the folder `dir` between two times, as a unified diff
/// of its versions then (nothing where it had none, or was deleted).
fn content(
    archive: &Archive,
    dir: &Path,
    name: &[u8],
    from: u64,
    later: Later,
    out: &mut Reporter,
) -> Result<Status, Error> {
    /// One version's name (or the source file's path) and bytes.
    struct Got {
        label: String,
        data: Vec<u8>,
    }
    let unreadable = |e: io::Error| Error::new(About::Path(archive.root().join(dir)), Why::Io(e));
    let (folder, histories) = archive.histories(dir, None).map_err(unreadable)?;
    let h = histories.iter().find(|h| h.name == name);
    let read = |at: u64| -> Result<Option<Got>, Error> {
        let Some(v) = h.and_then(|h| h.restorable_at(at)) else {
            return Ok(None);
        };
        let mut data = Vec::new();
        folder
            .open_read(&v.name)
            .and_then(|mut f| io::Read::read_to_end(&mut f, &mut data))
            .map_err(unreadable)?;
        Ok(Some(Got {
            label: dir.join(OsStr::from_bytes(&v.name)).display().to_string(),
            data,
        }))
    };
    let before = read(from)?;
    let after = match later {
        Later::At(to) => read(to)?,
        Later::Source(src) => {
            let path = src.join(dir).join(OsStr::from_bytes(name));
            match std::fs::read(&path) {
                Ok(data) => Some(Got {
                    label: path.display().to_string(),
                    data,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::new(About::Source(path), Why::Io(e))),
            }
        }
    };
    let path = dir.join(OsStr::from_bytes(name));
    let label = |v: &Option<Got>| match v {
        Some(h) => h.label.clone(),
        None => "/dev/null".to_string(),
    };
    let text = |v: &Option<Got>| match v {
        Some(h) if h.data.contains(&0) => None,
        Some(h) => std::str::from_utf8(&h.data).ok().map(str::to_string),
        None => Some(String::new()),
    };
    let patch = match (text(&before), text(&after)) {
        (Some(a), Some(b)) => similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .header(&label(&before), &label(&after))
            .to_string(),
        _ if before.as_ref().map(|v| &v.data) == after.as_ref().map(|v| &v.data) => String::new(),
        _ => format!(
            "Binary files {} and {} differ\n",
            label(&before),
            label(&after)
        ),
    };
    out.say(&Message::Patch {
        path: &path,
        text: &patch,
    });
    Ok(Status::Success)
}

/// Every file under `rel` at `at`, by its path relative to `rel`.
fn tree_at(archive: &Archive, rel: &Path, at: u64) -> Result<BTreeMap<PathBuf, Held>, Error> {
    Ok(folder_picks(archive, rel, at)?
        .picks
        .into_iter()
        .map(|p| {
            let path = p.to_dir.join(OsStr::from_bytes(&p.to_name));
            let held = Held::Copy {
                dir: p.from_dir,
                version: p.version,
                size: p.size,
            };
            (path, held)
        })
        .collect())
}

/// What tells `after` from `before`, by path: a file gone from one path and new at another with
/// the same size and bytes (`same` reads both copies) is a move.
fn changes(
    before: &BTreeMap<PathBuf, Held>,
    after: &BTreeMap<PathBuf, Held>,
    unchanged: impl Fn(&Held, &Held) -> bool,
    same: impl Fn(&Held, &Held) -> bool,
) -> Vec<Difference> {
    let mut gone: Vec<(&PathBuf, &Held)> = before
        .iter()
        .filter(|(p, _)| !after.contains_key(*p))
        .collect();
    let mut out = Vec::new();
    // Gone files by size, for the moves.
    let mut by_size: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, (_, h)) in gone.iter().enumerate() {
        by_size.entry(h.size()).or_default().push(i);
    }
    let mut moved_from = vec![false; gone.len()];
    for (path, now) in after {
        match before.get(path) {
            Some(was) if unchanged(was, now) => {}
            Some(was) => out.push(Difference::Changed {
                path: path.clone(),
                before: was.size(),
                size: now.size(),
            }),
            None => {
                let from = by_size.get(&now.size()).and_then(|candidates| {
                    candidates
                        .iter()
                        .copied()
                        .find(|&i| !moved_from[i] && same(gone[i].1, now))
                });
                match from {
                    Some(i) => {
                        moved_from[i] = true;
                        out.push(Difference::Moved {
                            from: gone[i].0.clone(),
                            path: path.clone(),
                            size: now.size(),
                        });
                    }
                    None => out.push(Difference::Added {
                        path: path.clone(),
                        size: now.size(),
                    }),
                }
            }
        }
    }
    for (i, (path, was)) in gone.drain(..).enumerate() {
        if !moved_from[i] {
            out.push(Difference::Deleted {
                path: path.clone(),
                size: was.size(),
            });
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// Whether two copies in DST hold the same bytes (the same copy, or read and compared).
fn same_bytes(archive: &Archive, a: &Held, b: &Held) -> io::Result<bool> {
    if a == b {
        return Ok(true);
    }
    let open = |h: &Held| -> io::Result<std::fs::File> {
        match h {
            Held::Copy { dir, version, .. } => archive.folder(dir)?.open_read(version),
            Held::Live { path, .. } => source::open_path(path),
        }
    };
    source::same_bytes(open(a)?, open(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(dir: &str, version: &str, size: u64) -> Held {
        Held::Copy {
            dir: PathBuf::from(dir),
            version: version.as_bytes().to_vec(),
            size,
        }
    }

    fn tree(files: &[(&str, Held)]) -> BTreeMap<PathBuf, Held> {
        files
            .iter()
            .map(|(p, h)| (PathBuf::from(p), h.clone()))
            .collect()
    }

    #[test]
    fn added_changed_deleted_and_moved_are_told_apart() {
        let before = tree(&[
            ("a.txt", held("", "a.txt", 5)),
            ("gone.txt", held("", "gone.txt", 3)),
            ("photos/p1.jpg", held("photos", "p1.jpg", 100)),
            ("same.txt", held("", "same.txt", 7)),
        ]);
        let after = tree(&[
            ("a.txt", held("", "a_20261207_101010.txt", 9)),
            ("new.txt", held("", "new.txt", 100)),
            ("pictures/p1.jpg", held("pictures", "p1.jpg", 100)),
            ("same.txt", held("", "same.txt", 7)),
        ]);
        // Only the picture's copies hold the same bytes.
        let version = |h: &Held| match h {
            Held::Copy { version, .. } => version.clone(),
            Held::Live { .. } => Vec::new(),
        };
        let same = |a: &Held, b: &Held| version(a) == version(b);
        let got = changes(&before, &after, |a, b| a == b, same);
        assert_eq!(
            got,
            vec![
                Difference::Changed {
                    path: "a.txt".into(),
                    before: 5,
                    size: 9
                },
                Difference::Deleted {
                    path: "gone.txt".into(),
                    size: 3
                },
                Difference::Added {
                    path: "new.txt".into(),
                    size: 100
                },
                Difference::Moved {
                    from: "photos/p1.jpg".into(),
                    path: "pictures/p1.jpg".into(),
                    size: 100
                },
            ]
        );
    }

    #[test]
    fn one_file_gone_is_the_source_of_one_move_only() {
        let before = tree(&[("a", held("", "a", 4))]);
        let after = tree(&[("b", held("", "b", 4)), ("c", held("", "c", 4))]);
        let got = changes(&before, &after, |a, b| a == b, |_, _| true);
        let moves = got
            .iter()
            .filter(|c| matches!(c, Difference::Moved { .. }))
            .count();
        assert_eq!(moves, 1, "{got:?}");
        assert_eq!(got.len(), 2, "{got:?}");
    }
}
