//! The destination read as an archive of versions: `versions`, `restore` and `prune`, and the
//! pruning that `once` and `watch` do after a pass. Everything is read back from the names and
//! metadata in DST (`history` decides); nothing else is kept anywhere.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeZone;

use crate::Status;
use crate::cli::{PruneArgs, RestoreArgs, VersionsArgs};
use crate::dest::{Dest, DestDir, is_temp_name};
use crate::history::{self, Entry, History, Policy, Version};
use crate::meta::{Kind, Time};
use crate::naming;
use crate::report::{Event, Outcome, Reporter, Style, display, reason};
use crate::scan;

/// What a PATH argument names in DST.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A folder, relative to DST.
    Folder(PathBuf),
    /// A file: its folder, relative to DST, and its name.
    File(PathBuf, Vec<u8>),
}

/// DST, opened to read its history (and, for pruning, to delete from it).
pub struct Archive {
    dest: Dest,
}

/// The local stamp of a point in time.
fn stamp_at(t: Time) -> u64 {
    chrono::Local
        .timestamp_opt(t.sec, t.nsec)
        .earliest()
        .map_or(0, |d| naming::stamp_of(&d.naive_local()))
}

impl Archive {
    /// Opens DST, which must be an existing folder. Read-only unless `write` (then it is
    /// locked like a backup locks it, so that a prune never runs into a running backup).
    pub fn open(dst: &Path, write: bool) -> Result<Archive, String> {
        let named = |why: String| format!("destination {}: {why}", display(dst));
        let md = std::fs::metadata(dst).map_err(|e| named(reason(&e)))?;
        if !md.is_dir() {
            return Err(named("not a directory".into()));
        }
        let root = std::fs::canonicalize(dst).map_err(|e| named(reason(&e)))?;
        let dest = Dest::open(&root, !write).map_err(|e| {
            named(match e {
                crate::dest::OpenError::Locked => {
                    "a backup is writing into this destination right now".into()
                }
                crate::dest::OpenError::NotWritable(e) => {
                    format!("cannot be written: {}", reason(&e))
                }
                crate::dest::OpenError::Create(e) | crate::dest::OpenError::Open(e) => reason(&e),
            })
        })?;
        Ok(Archive { dest })
    }

    pub fn root(&self) -> &Path {
        self.dest.path()
    }

    /// What PATH names: a path inside DST, or one relative to the backed-up tree.
    pub fn resolve(&self, path: &Path) -> Result<Target, String> {
        let rel = if path.is_absolute() {
            let parent = path.parent().unwrap_or(path);
            let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
            let full = match path.file_name() {
                Some(name) => parent.join(name),
                None => parent,
            };
            full.strip_prefix(self.root())
                .map(Path::to_path_buf)
                .map_err(|_| {
                    format!(
                        "{} is not inside the destination {}",
                        display(path),
                        display(self.root())
                    )
                })?
        } else {
            path.components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect()
        };
        if self.root().join(&rel).is_dir() {
            return Ok(Target::Folder(rel));
        }
        match (rel.parent(), rel.file_name()) {
            (Some(dir), Some(name)) => {
                Ok(Target::File(dir.to_path_buf(), name.as_bytes().to_vec()))
            }
            _ => Ok(Target::Folder(rel)),
        }
    }

    /// The file histories in the folder `rel`.
    pub fn histories(
        &self,
        rel: &Path,
        sources: Option<&HashSet<Vec<u8>>>,
    ) -> io::Result<(DestDir, Vec<History>)> {
        let dir = self.dest.open_dir(rel)?;
        let mut entries = Vec::new();
        for name in dir.list()? {
            if is_temp_name(&name) {
                continue;
            }
            let (meta, born) = match dir.entry(&name) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.kind == Kind::Dir {
                continue;
            }
            entries.push(Entry {
                name,
                modified: stamp_at(meta.mtime),
                written: stamp_at(born.unwrap_or(meta.ctime)),
                size: meta.size,
            });
        }
        Ok((dir, history::histories(&entries, sources)))
    }

    /// Every folder of DST from `rel` down, relative to DST, parents first; symlinks are not
    /// followed.
    pub fn folders(&self, rel: &Path) -> Vec<PathBuf> {
        let root = self.root().to_path_buf();
        walkdir::WalkDir::new(root.join(rel))
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.file_type().is_dir())
            .filter_map(Result::ok)
            .filter_map(|e| e.path().strip_prefix(&root).ok().map(Path::to_path_buf))
            .collect()
    }
}

/// The history of the file `name` in `histories`: the one of that name, or the one that holds a
/// version of that name.
fn find<'a>(histories: &'a [History], name: &[u8]) -> Option<&'a History> {
    histories.iter().find(|h| h.name == name).or_else(|| {
        histories
            .iter()
            .find(|h| h.versions.iter().any(|v| v.name == name))
    })
}

fn reporter(json: bool, quiet: bool, dry_run: bool) -> Reporter {
    Reporter::stdio(Style {
        json,
        quiet,
        dry_run,
        ..Style::default()
    })
}

/// `backup versions DST [PATH]`
pub fn versions(args: VersionsArgs) -> Status {
    let mut out = reporter(args.json, false, false);
    let archive = match Archive::open(&args.dst, false) {
        Ok(a) => a,
        Err(e) => {
            out.error(&e);
            return Status::Failure;
        }
    };
    let target = match args.path.as_deref().map(|p| archive.resolve(p)) {
        None => Target::Folder(PathBuf::new()),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            out.error(&e);
            return Status::Failure;
        }
    };
    let (folders, only) = match &target {
        Target::Folder(rel) => (archive.folders(rel), None),
        Target::File(dir, name) => (vec![dir.clone()], Some(name.as_slice())),
    };
    let mut shown = 0;
    let mut status = Status::Success;
    for rel in folders {
        let (dir, histories) = match archive.histories(&rel, None) {
            Ok(h) => h,
            Err(e) => {
                out.error(&format!(
                    "{}: {}",
                    display(&archive.root().join(&rel)),
                    reason(&e)
                ));
                status = Status::Failure;
                continue;
            }
        };
        let chosen: Vec<&History> = match only {
            Some(name) => find(&histories, name).into_iter().collect(),
            None => histories.iter().collect(),
        };
        for h in chosen {
            let file = dir.path().join(OsStr::from_bytes(&h.name));
            let list: Vec<(PathBuf, &Version)> = h
                .versions
                .iter()
                .map(|v| (dir.path().join(OsStr::from_bytes(&v.name)), v))
                .collect();
            out.history(&file, &list);
            shown += 1;
        }
    }
    out.flush();
    if let (0, Target::File(dir, name)) = (shown, &target) {
        out.error(&format!(
            "no versions of {} in {}",
            display(&dir.join(OsStr::from_bytes(name))),
            display(archive.root())
        ));
        return Status::Failure;
    }
    status
}

/// `backup restore DST PATH --to TARGET [--at TIME]`
pub fn restore(args: RestoreArgs) -> Status {
    let mut out = reporter(args.json, args.quiet, false);
    match restore_inner(&args, &mut out) {
        Ok(status) => status,
        Err(e) => {
            out.error(&e);
            Status::Failure
        }
    }
}

/// One file to write back: where its version lives in DST, and where it goes under TARGET.
struct Pick {
    from_dir: PathBuf,
    version: Vec<u8>,
    to_dir: PathBuf,
    to_name: Vec<u8>,
}

fn restore_inner(args: &RestoreArgs, out: &mut Reporter) -> Result<Status, String> {
    let archive = Archive::open(&args.dst, false)?;
    let at = history::parse_when(&args.at, chrono::Local::now())?;
    let at_stamp = naming::stamp_of(&at);
    let target = archive.resolve(&args.path)?;

    // TARGET's root folder and, below it, where each file goes.
    let mut picks = Vec::new();
    let mut left_out = 0u64;
    let (root, folder_restore) = match &target {
        Target::File(dir, name) => {
            let (_, histories) = archive
                .histories(dir, None)
                .map_err(|e| format!("{}: {}", display(&archive.root().join(dir)), reason(&e)))?;
            let shown = display(&dir.join(OsStr::from_bytes(name)));
            let h = find(&histories, name)
                .ok_or_else(|| format!("no versions of {shown} in {}", display(archive.root())))?;
            let v = h.at(at_stamp).ok_or_else(|| {
                format!(
                    "{shown} had no version yet at {}",
                    at.format("%Y-%m-%d %H:%M:%S")
                )
            })?;
            let (root, to_name) = if args.to.is_dir() {
                (args.to.clone(), h.name.clone())
            } else {
                let name = args
                    .to
                    .file_name()
                    .ok_or_else(|| format!("--to {}: not a file name", display(&args.to)))?;
                let parent = args.to.parent().filter(|p| !p.as_os_str().is_empty());
                (
                    parent.unwrap_or(Path::new(".")).to_path_buf(),
                    name.as_bytes().to_vec(),
                )
            };
            picks.push(Pick {
                from_dir: dir.clone(),
                version: v.name.clone(),
                to_dir: PathBuf::new(),
                to_name,
            });
            (root, false)
        }
        Target::Folder(rel) => {
            for sub in archive.folders(rel) {
                let (_, histories) = archive.histories(&sub, None).map_err(|e| {
                    format!("{}: {}", display(&archive.root().join(&sub)), reason(&e))
                })?;
                let to_dir = sub.strip_prefix(rel).unwrap_or(&sub).to_path_buf();
                for h in &histories {
                    match h.at(at_stamp) {
                        Some(v) => picks.push(Pick {
                            from_dir: sub.clone(),
                            version: v.name.clone(),
                            to_dir: to_dir.clone(),
                            to_name: h.name.clone(),
                        }),
                        None => left_out += 1,
                    }
                }
            }
            (args.to.clone(), true)
        }
    };

    // Never into the backup itself, and never over anything: check all before writing any.
    let root_abs = std::path::absolute(&root).map_err(|e| reason(&e))?;
    let mut probe = root_abs.clone();
    while !probe.exists() && probe.pop() {}
    if let Ok(existing) = std::fs::canonicalize(&probe)
        && existing.starts_with(archive.root())
    {
        return Err(format!(
            "--to {}: inside the destination {}; restore somewhere else",
            display(&args.to),
            display(archive.root())
        ));
    }
    for p in &picks {
        let path = root_abs.join(&p.to_dir).join(OsStr::from_bytes(&p.to_name));
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(format!(
                "{} already exists; restore never overwrites (choose another --to)",
                display(&path)
            ));
        }
    }
    if picks.is_empty() && !folder_restore {
        return Ok(Status::Success);
    }

    let dest = Dest::open(&root_abs, false).map_err(|e| {
        let why = match e {
            crate::dest::OpenError::Create(e)
            | crate::dest::OpenError::Open(e)
            | crate::dest::OpenError::NotWritable(e) => reason(&e),
            crate::dest::OpenError::Locked => "a backup is writing into it".into(),
        };
        format!("--to {}: {why}", display(&args.to))
    })?;
    let (mut restored, mut failed) = (0u64, 0u64);
    let mut made_dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in &picks {
        let from = archive
            .root()
            .join(&p.from_dir)
            .join(OsStr::from_bytes(&p.version));
        match restore_one(&archive, &dest, p, &mut made_dirs) {
            Ok(to) => {
                restored += 1;
                out.restored(&from, &to);
            }
            Err(why) => {
                failed += 1;
                out.event(&Event::new(from, Outcome::Failed(why)));
            }
        }
    }
    // Folders made for the restore get the mode and times of their folder in DST, deepest
    // first (writing into a folder changes its time).
    for (to_rel, from_rel) in made_dirs.iter().rev() {
        let meta = archive
            .dest
            .open_dir(from_rel)
            .and_then(|d| d.entry(b".").map(|(m, _)| m));
        if let (Ok(meta), Ok(d)) = (meta, dest.open_dir(to_rel)) {
            let _ = d.set_dir_meta(&meta);
        }
    }
    // Then new names are durable once their folders are synced: once per folder, at the end.
    // A folder made for the restore is a new name in its parent too.
    let parents = made_dirs
        .iter()
        .map(|(to, _)| to.parent().unwrap_or(Path::new("")));
    let mut written: Vec<&Path> = picks
        .iter()
        .map(|p| p.to_dir.as_path())
        .chain(parents)
        .collect();
    written.sort();
    written.dedup();
    for rel in written {
        if let Err(e) = dest.open_dir(rel).and_then(|d| d.sync()) {
            failed += 1;
            let why = format!("cannot sync folder: {}", reason(&e));
            out.event(&Event::new(root_abs.join(rel), Outcome::Failed(why)));
        }
    }
    let title = format!(
        "Restore Summary (as of {}):",
        at.format("%Y-%m-%d %H:%M:%S")
    );
    out.tally(
        "restore_summary",
        &title,
        &[
            ("Restored", restored),
            ("Left out", left_out),
            ("Failed", failed),
        ],
    );
    Ok(if failed == 0 {
        Status::Success
    } else {
        Status::Failure
    })
}

/// Writes one version back through the same staging and no-replace publishing as a backup.
fn restore_one(
    archive: &Archive,
    dest: &Dest,
    p: &Pick,
    made_dirs: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<PathBuf, String> {
    let failed = |what: &str, e: io::Error| format!("cannot {what}: {}", reason(&e));
    let from_dir = archive
        .dest
        .open_dir(&p.from_dir)
        .map_err(|e| failed("read", e))?;
    let child = scan::open_chain(dest, &p.to_dir).map_err(|e| failed("create folder", e))?;
    if child.created {
        made_dirs.push((p.to_dir.clone(), p.from_dir.clone()));
    }
    let to_dir = Arc::new(child.dir);
    let (meta, _) = from_dir.entry(&p.version).map_err(|e| failed("read", e))?;
    if meta.kind == Kind::Symlink {
        let target = from_dir
            .read_link(&p.version)
            .map_err(|e| failed("read link", e))?;
        to_dir
            .symlink(&target, &p.to_name, &meta)
            .map_err(|e| failed("write", e))?;
    } else {
        let src = from_dir
            .open_read(&p.version)
            .map_err(|e| failed("open", e))?;
        let mut staged = to_dir.stage(&p.to_name).map_err(|e| failed("write", e))?;
        staged
            .copy_from(&src, meta.size)
            .map_err(|e| failed("copy", e))?;
        staged
            .set_meta(&meta, &src)
            .map_err(|e| failed("set metadata", e))?;
        staged.close().map_err(|e| failed("write", e))?;
        staged.sync().map_err(|e| failed("sync", e))?;
        staged
            .publish(&p.to_name)
            .map_err(|e| failed("publish", e))?;
    }
    Ok(to_dir.path().join(OsStr::from_bytes(&p.to_name)))
}

/// What a pruning run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pruned {
    pub files: u64,
    pub kept: u64,
    pub pruned: u64,
    pub failed: u64,
}

/// Prunes the folders `rels` of DST by `policy`. With `src`, the names in each matching source
/// folder tell apart files whose own names look like versions.
pub fn prune(
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
        let sources: Option<HashSet<Vec<u8>>> = src.and_then(|s| {
            std::fs::read_dir(s.join(rel)).ok().map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().as_bytes().to_vec())
                    .collect()
            })
        });
        let (dir, histories) = match archive.histories(rel, sources.as_ref()) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tally.failed += 1;
                let why = format!("cannot read: {}", reason(&e));
                out.event(&Event::new(archive.root().join(rel), Outcome::Failed(why)));
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
                        out.pruned(&path);
                    }
                    Err(e) => {
                        tally.failed += 1;
                        let why = format!("cannot prune: {}", reason(&e));
                        out.event(&Event::new(path, Outcome::Failed(why)));
                    }
                }
            }
        }
    }
    tally
}

/// Prints what a pruning run did.
pub fn prune_summary(out: &mut Reporter, t: &Pruned, dry_run: bool) {
    out.tally(
        "prune_summary",
        if dry_run {
            "Prune Summary (dry run: nothing was deleted):"
        } else {
            "Prune Summary:"
        },
        &[
            ("Files", t.files),
            ("Versions kept", t.kept),
            ("Versions pruned", t.pruned),
            ("Failed", t.failed),
        ],
    );
}

/// `backup prune DST --keep-last N | --keep-within DURATION | --staggered`
pub fn prune_command(args: PruneArgs) -> Status {
    let mut out = reporter(args.json, args.quiet, args.dry_run);
    let policy = Policy::from(args.policy);
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
            out.error(&format!(
                "--source {}: {}",
                display(args.source.as_deref().unwrap_or(Path::new(""))),
                reason(&e)
            ));
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
    prune_summary(&mut out, &t, args.dry_run);
    if t.failed == 0 {
        Status::Success
    } else {
        Status::Failure
    }
}

impl Archive {
    /// The archive view of a destination a backup already holds open.
    pub fn of(dest: &Dest) -> io::Result<Archive> {
        Ok(Archive {
            dest: dest.try_clone()?,
        })
    }
}
