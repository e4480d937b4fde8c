//! `backup du`: where the space in DST went, per folder: each file's newest copy, its older
//! versions (what `prune` and `--keep-free` may give back), the records of deletions, and the
//! bytes that cost nothing more because another copy holds them too.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{Archive, Target, reported, source_names};
use crate::config::Du;
use crate::dest::Folder;
use crate::error::{About, Error, Status, Why};
use crate::report::{Message, Reporter, Space};

/// `backup du DST [PATH] [--source SRC]`
pub(crate) fn run(args: &Du) -> Status {
    reported(args.json, |out| du(args, out))
}

fn du(args: &Du, out: &mut Reporter) -> Result<Status, Error> {
    let archive = Archive::open(&args.dst, false)?;
    let src = match args.source.as_deref().map(std::fs::canonicalize) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            let shown = args.source.clone().unwrap_or_default();
            return Err(Error::new(About::Option("--source", shown), Why::Io(e)));
        }
    };
    let rel = match args
        .path
        .as_deref()
        .map(|p| archive.resolve(p))
        .transpose()?
    {
        None => PathBuf::new(),
        Some(Target::Folder(rel)) => rel,
        Some(Target::File(dir, name)) => {
            let path = archive.root().join(dir).join(OsStr::from_bytes(&name));
            return Err(Error::new(About::Path(path), Why::NotADirectory));
        }
    };
    // Blocks shared with a clone are asked of a mounted filesystem only: on a bucket or a
    // server, reading a copy would download it.
    let extents = !archive.dest.over_network();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut rows: Vec<(PathBuf, Space)> = Vec::new();
    let mut failed = false;
    for rel in archive.folders(&rel) {
        let sources = src.as_ref().and_then(|s| source_names(s, &rel));
        let Some((dir, histories)) = archive.histories_or_say(&rel, sources.as_ref(), out) else {
            failed = true;
            continue;
        };
        let mut space = Space::default();
        for h in &histories {
            let newest = h.newest_copy();
            for (i, v) in h.versions.iter().enumerate() {
                if v.is_deletion() {
                    space.records += 1;
                    continue;
                }
                let (bytes, shared) = held(&*dir, &v.name, v.size, extents, &mut seen);
                if Some(i) == newest {
                    space.newest += bytes;
                } else {
                    space.older += bytes;
                }
                space.shared += shared;
            }
        }
        rows.push((rel, space));
    }
    let mut total = Space::default();
    for (_, s) in &rows {
        total.add(s);
    }
    rows.sort_by(|a, b| b.1.bytes().cmp(&a.1.bytes()).then(a.0.cmp(&b.0)));
    for (rel, space) in &rows {
        out.say(&Message::Space {
            folder: Some(&match rel.as_os_str().is_empty() {
                true => archive.root().to_path_buf(),
                false => archive.root().join(rel),
            }),
            space,
        });
    }
    out.say(&Message::Space {
        folder: None,
        space: &total,
    });
    Ok(Status::failed_if(failed))
}

/// What the copy `name` of `size` bytes holds that was not counted yet, and what of it is
/// shared: a name of an inode already seen (a hard link) holds nothing more; blocks the file
/// shares with another (a clone) are counted in its bytes and in what is shared.
fn held(
    dir: &dyn Folder,
    name: &[u8],
    size: u64,
    extents: bool,
    seen: &mut HashSet<(u64, u64)>,
) -> (u64, u64) {
    let Ok(meta) = dir.stat(name) else {
        return (size, 0);
    };
    // A destination without inode numbers (a bucket) says 0: every object is its own.
    if meta.ino != 0 && !seen.insert((meta.dev, meta.ino)) {
        return (0, meta.size);
    }
    let shared = if extents {
        dir.open_read(name)
            .ok()
            .and_then(|f| crate::dest::contents::shared_bytes(&f))
            .unwrap_or(0)
    } else {
        0
    };
    (meta.size, shared.min(meta.size))
}
