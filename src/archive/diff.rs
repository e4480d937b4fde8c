//! `backup diff`: what changed in the backed-up tree between two points in time, as DST holds
//! them. The tree at each time is exactly what `restore --at` would write (`restore::
//! folder_picks`); the changes are what tells the two apart, a file that left one place and
//! arrived at another with the same bytes being a move.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::restore::folder_picks;
use super::{Archive, Target, reported};
use crate::config::Diff;
use crate::error::{About, Error, Status, Why};
use crate::history;
use crate::naming;
use crate::report::{Difference, Message, Reporter, Tally};
use crate::source;

/// A file in the tree at one time: where its version is in DST, and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    dir: PathBuf,
    version: Vec<u8>,
    size: u64,
}

/// `backup diff DST [PATH] --from TIME [--to TIME]`
pub(crate) fn run(args: &Diff) -> Status {
    reported(args.json, |out| diff(args, out))
}

fn diff(args: &Diff, out: &mut Reporter) -> Result<Status, Error> {
    let archive = Archive::open(&args.dst, false)?;
    let now = chrono::Local::now();
    let from = history::parse_when(&args.from, now)?;
    let to = history::parse_when(&args.to, now)?;
    let rel = match args
        .path
        .as_deref()
        .map(|p| archive.resolve(p))
        .transpose()?
    {
        Some(Target::File(dir, name)) if args.content => {
            let (from, to) = (naming::stamp_of(&from), naming::stamp_of(&to));
            return content(&archive, &dir, &name, (from, to), out);
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
    let after = tree_at(&archive, &rel, naming::stamp_of(&to))?;
    let same = |a: &Held, b: &Held| same_bytes(&archive, a, b).unwrap_or(false);
    let changes = changes(&before, &after, same);
    let mut tally = Tally::default();
    for c in &changes {
        tally.count(c);
        out.say(&Message::Difference(c));
    }
    out.say(&Message::DiffSummary(&tally));
    Ok(Status::Success)
}

/// What changed in the file `name` of the folder `dir` between two times, as a unified diff
/// of its versions then (nothing where it had none, or was deleted).
fn content(
    archive: &Archive,
    dir: &Path,
    name: &[u8],
    (from, to): (u64, u64),
    out: &mut Reporter,
) -> Result<Status, Error> {
    /// One version's name and bytes.
    struct Got {
        version: Vec<u8>,
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
            version: v.name.clone(),
            data,
        }))
    };
    let (before, after) = (read(from)?, read(to)?);
    let path = dir.join(OsStr::from_bytes(name));
    let label = |v: &Option<Got>| match v {
        Some(h) => dir
            .join(OsStr::from_bytes(&h.version))
            .display()
            .to_string(),
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
            let held = Held {
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
        by_size.entry(h.size).or_default().push(i);
    }
    let mut moved_from = vec![false; gone.len()];
    for (path, now) in after {
        match before.get(path) {
            Some(was) if was == now => {}
            Some(was) => out.push(Difference::Changed {
                path: path.clone(),
                before: was.size,
                size: now.size,
            }),
            None => {
                let from = by_size.get(&now.size).and_then(|candidates| {
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
                            size: now.size,
                        });
                    }
                    None => out.push(Difference::Added {
                        path: path.clone(),
                        size: now.size,
                    }),
                }
            }
        }
    }
    for (i, (path, was)) in gone.drain(..).enumerate() {
        if !moved_from[i] {
            out.push(Difference::Deleted {
                path: path.clone(),
                size: was.size,
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
    let open =
        |h: &Held| -> io::Result<std::fs::File> { archive.folder(&h.dir)?.open_read(&h.version) };
    source::same_bytes(open(a)?, open(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(dir: &str, version: &str, size: u64) -> Held {
        Held {
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
        let same = |a: &Held, b: &Held| a.version == b.version;
        let got = changes(&before, &after, same);
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
        let got = changes(&before, &after, |_, _| true);
        let moves = got
            .iter()
            .filter(|c| matches!(c, Difference::Moved { .. }))
            .count();
        assert_eq!(moves, 1, "{got:?}");
        assert_eq!(got.len(), 2, "{got:?}");
    }
}
