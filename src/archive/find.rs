//! `backup find`: every version whose original path matches a glob, files deleted from SRC
//! included, with when it was captured and its size: the file you deleted, whatever folder it
//! was in.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use globset::{GlobBuilder, GlobMatcher};

use super::{Archive, reported, when};
use crate::config::Find;
use crate::error::{About, Error, Status, Why};
use crate::history;
use crate::naming;
use crate::report::{Listed, Message, Reporter};

/// `backup find DST PATTERN [--deleted]`
pub(crate) fn run(args: &Find) -> Status {
    reported(args.json, |out| find(args, out))
}

/// A pattern with a `/` is matched against the whole path under DST, one without against the
/// file's name, as `fd` and `.gitignore` do; `*` stays within a folder, `**` crosses them.
fn matcher(pattern: &str) -> Result<(GlobMatcher, bool), Error> {
    let whole = pattern.contains('/');
    let glob = GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(true)
        .build()
        .map_err(|e| {
            Error::new(
                About::Option("PATTERN", PathBuf::from(pattern)),
                Why::Pattern(e.kind().to_string()),
            )
        })?;
    Ok((glob.compile_matcher(), whole))
}

fn find(args: &Find, out: &mut Reporter) -> Result<Status, Error> {
    let (glob, whole) = matcher(&args.pattern)?;
    let now = chrono::Local::now();
    let stamp = |t: &Option<String>, none: u64| -> Result<u64, Error> {
        match t {
            Some(t) => Ok(naming::stamp_of(&history::parse_when(t, now)?)),
            None => Ok(none),
        }
    };
    let (from, to) = (stamp(&args.from, 0)?, stamp(&args.to, u64::MAX)?);
    let archive = Archive::open(&args.dst, false)?;
    let mut failed = false;
    let mut found = 0u64;
    for rel in archive.folders(std::path::Path::new("")) {
        let Some((_, histories)) = archive.histories_or_say(&rel, None, out) else {
            failed = true;
            continue;
        };
        let mut folder_gone = None;
        for h in &histories {
            let path = rel.join(OsStr::from_bytes(&h.name));
            let matched = if whole {
                glob.is_match(&path)
            } else {
                glob.is_match(OsStr::from_bytes(&h.name))
            };
            if !matched || !h.has_copies() {
                continue;
            }
            // Deleted: its newest record says so, or a folder it was in was deleted after its
            // newest copy.
            let newest = h.versions.last().map_or(0, |v| v.captured);
            let deleted_now = h.versions.last().is_some_and(|v| v.is_deletion())
                || folder_gone
                    .get_or_insert_with(|| archive.folder_deletions(&rel))
                    .iter()
                    .any(|(_, d)| d.captured > newest);
            if args.deleted && !deleted_now {
                continue;
            }
            let dir = archive.root().join(&rel);
            let listed: Vec<Listed> = h
                .versions
                .iter()
                .filter(|v| (from..=to).contains(&v.captured))
                .map(|v| Listed {
                    path: dir.join(OsStr::from_bytes(&v.name)),
                    captured: when(v.captured),
                    size: v.size,
                    name: std::path::Path::new(OsStr::from_bytes(&v.name)),
                    deleted: v.is_deletion(),
                    folder: None,
                })
                .collect();
            if listed.is_empty() {
                continue;
            }
            found += 1;
            out.say(&Message::History {
                file: &path,
                versions: &listed,
            });
        }
    }
    if found == 0 && !failed {
        out.say(&Message::NothingFound {
            pattern: &args.pattern,
        });
    }
    Ok(Status::failed_if(failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_pattern_without_a_slash_matches_names_in_any_folder() {
        let (g, whole) = matcher("*.jpg").expect("glob");
        assert!(!whole);
        assert!(g.is_match(OsStr::new("p1.jpg")));
        let (g, whole) = matcher("photos/*.jpg").expect("glob");
        assert!(whole);
        assert!(g.is_match(Path::new("photos/p1.jpg")));
        assert!(
            !g.is_match(Path::new("photos/2024/p1.jpg")),
            "* stays in a folder"
        );
        let (g, _) = matcher("photos/**/*.jpg").expect("glob");
        assert!(g.is_match(Path::new("photos/2024/p1.jpg")));
    }

    #[test]
    fn a_bad_pattern_is_one_clear_error() {
        let e = matcher("a[").expect_err("an error");
        assert!(e.to_string().contains("PATTERN"), "{e}");
    }
}
