//! `backup restore DST PATH --to TARGET [--at TIME]`: a file or a folder written back as it was
//! at a point in time, through the same staging and no-replace publishing as a backup.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Archive, Target, find, reporter};
use crate::config::Restore;
use crate::dest::local::Local;
use crate::dest::{self, Destination, Folder, Staged};
use crate::error::{About, Error, Failure, Op, Status, Why};
use crate::history;
use crate::meta::Kind;
use crate::naming;
use crate::outcome::Event;
use crate::report::{Message, Reporter};

/// One file to write back: where its version lives in DST, and where it goes under TARGET.
pub(super) struct Pick {
    pub(super) from_dir: PathBuf,
    pub(super) version: Vec<u8>,
    pub(super) to_dir: PathBuf,
    pub(super) to_name: Vec<u8>,
    /// The version's size.
    pub(super) size: u64,
}

/// What a restore will write: TARGET's root folder, the files below it, how many files had no
/// version yet, and whether a whole folder is restored.
struct Plan {
    root: PathBuf,
    picks: Vec<Pick>,
    /// The folders that were there (empty ones too), from DST and to TARGET, relative.
    folders: Vec<(PathBuf, PathBuf)>,
    left_out: u64,
    folder: bool,
}

pub(crate) fn run(args: &Restore) -> Status {
    let mut out = reporter(args.json, args.quiet, false);
    match restore(args, &mut out) {
        Ok(status) => status,
        Err(e) => {
            out.error(&e);
            Status::Failure
        }
    }
}

fn restore(args: &Restore, out: &mut Reporter) -> Result<Status, Error> {
    let archive = Archive::open(&args.dst, false)?;
    let at = history::parse_when(&args.at, chrono::Local::now())?;
    let target = archive.resolve(&args.path)?;
    let plan = plan(&archive, &target, naming::stamp_of(&at), args)?;
    let to = |why| Error::new(About::Option("--to", args.to.clone()), why);
    let root = std::path::absolute(&plan.root).map_err(|e| to(Why::Io(e)))?;
    check_targets(&archive, &root, &plan, &args.to)?;
    if plan.picks.is_empty() && !plan.folder {
        return Ok(Status::Success);
    }
    // As a destination is made: each folder's name synced in its parent.
    crate::dest::Location::Local(root.clone())
        .create(true)
        .map_err(|e| to(Why::NotCreated(e)))?;
    let dest = Local::open(&root).map_err(|e| to(Why::Open(e)))?;
    let (restored, failed) = write_all(&archive, &dest, &root, &plan, out);
    out.say(&Message::RestoreSummary {
        at: &at.format("%Y-%m-%d %H:%M:%S").to_string(),
        restored,
        left_out: plan.left_out,
        failed,
    });
    Ok(Status::failed_if(failed > 0))
}

/// Which version of which file goes where.
fn plan(archive: &Archive, target: &Target, at: u64, args: &Restore) -> Result<Plan, Error> {
    let unreadable =
        |rel: &Path, e: io::Error| Error::new(About::Path(archive.root().join(rel)), Why::Io(e));
    match target {
        Target::File(dir, name) => {
            let (_, histories) = archive
                .histories(dir, None)
                .map_err(|e| unreadable(dir, e))?;
            let file = dir.join(OsStr::from_bytes(name));
            let h = find(&histories, name).ok_or_else(|| {
                Error::run(Why::NoVersions {
                    file: file.clone(),
                    dst: archive.root().to_path_buf(),
                })
            })?;
            let v = h.at(at).ok_or_else(|| {
                Error::run(Why::NoVersionYet {
                    file: file.clone(),
                    at: super::when(at),
                })
            })?;
            if v.is_deletion() {
                return Err(Error::run(Why::DeletedBy {
                    file,
                    at: super::when(v.captured),
                }));
            }
            // Gone with a folder it was in, unless copied again since.
            if let Some((folder, gone)) = archive
                .folder_deletions(dir)
                .into_iter()
                .filter(|(_, d)| d.captured <= at && d.captured > v.captured)
                .max_by_key(|(_, d)| d.captured)
            {
                return Err(Error::run(Why::DeletedWithFolder {
                    file,
                    folder,
                    at: super::when(gone.captured),
                }));
            }
            let (root, to_name) = if args.to.is_dir() {
                (args.to.clone(), h.name.clone())
            } else {
                let name = args.to.file_name().ok_or_else(|| {
                    Error::new(About::Option("--to", args.to.clone()), Why::NotAFileName)
                })?;
                let parent = args.to.parent().filter(|p| !p.as_os_str().is_empty());
                (
                    parent.unwrap_or(Path::new(".")).to_path_buf(),
                    name.as_bytes().to_vec(),
                )
            };
            let pick = Pick {
                from_dir: dir.clone(),
                version: v.name.clone(),
                to_dir: PathBuf::new(),
                to_name,
                size: v.size,
            };
            Ok(Plan {
                root,
                picks: vec![pick],
                folders: Vec::new(),
                left_out: 0,
                folder: false,
            })
        }
        Target::Folder(rel) => {
            let found = folder_picks(archive, rel, at)?;
            Ok(Plan {
                root: args.to.clone(),
                picks: found.picks,
                folders: found.folders,
                left_out: found.left_out,
                folder: true,
            })
        }
    }
}

/// Every file and folder under the folder `rel` as it was at `at`: the newest version of each
/// file by then, unless the newest thing by then records its deletion, or the deletion of a
/// folder it is in (a folder deleted at M holds nothing captured before M); and every folder
/// that was there then (see `history::folder_at`), empty ones too. Returns the file picks, the
/// folders (from, to), and how many files were left out (no version yet, or deleted by then).
pub(super) fn folder_picks(archive: &Archive, rel: &Path, at: u64) -> Result<FolderPicks, Error> {
    let mut out = FolderPicks::default();
    // Each folder that was there at `at`, with the newest deletion by then of it or of a
    // folder above it.
    let mut queue =
        std::collections::VecDeque::from([(rel.to_path_buf(), own_cut(archive, rel, at))]);
    while let Some((sub, cut)) = queue.pop_front() {
        let to_dir = sub.strip_prefix(rel).unwrap_or(&sub).to_path_buf();
        if sub != rel {
            out.folders.push((sub.clone(), to_dir.clone()));
        }
        let one = one_folder_at(archive, &sub, at, cut)?;
        out.left_out += one.left_out;
        out.picks
            .extend(one.files.into_iter().map(|(to_name, v)| Pick {
                from_dir: sub.clone(),
                version: v.name,
                to_dir: to_dir.clone(),
                to_name,
                size: v.size,
            }));
        queue.extend(
            one.folders
                .into_iter()
                .map(|(name, cut)| (sub.join(OsStr::from_bytes(&name)), cut)),
        );
    }
    Ok(out)
}

/// The newest deletion by `at` of the folder `rel` itself (recorded in its parent).
pub(super) fn own_cut(archive: &Archive, rel: &Path, at: u64) -> Option<u64> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => archive
            .histories(parent, None)
            .ok()
            .and_then(|(_, hs)| find(&hs, name.as_bytes()).and_then(|h| h.deleted_by(at))),
        _ => None,
    }
}

/// One folder of the tree at `at`: its files (each by its name in SRC, with the version
/// `restore` writes) and the folders that were there then (each with the newest deletion by then
/// of it or of a folder above it, `cut` being that of this one).
pub(super) struct OneFolder {
    pub(super) files: Vec<(Vec<u8>, history::Version)>,
    pub(super) folders: Vec<(Vec<u8>, Option<u64>)>,
    pub(super) left_out: u64,
    /// What DST showed of each of its files when listed (see `Listing::metas`).
    pub(super) metas: HashMap<Vec<u8>, crate::meta::Meta>,
}

pub(super) fn one_folder_at(
    archive: &Archive,
    rel: &Path,
    at: u64,
    cut: Option<u64>,
) -> Result<OneFolder, Error> {
    let listing = archive
        .listing(rel, None)
        .map_err(|e| Error::new(About::Path(archive.root().join(rel)), Why::Io(e)))?;
    let mut out = OneFolder {
        files: Vec::new(),
        folders: Vec::new(),
        left_out: 0,
        metas: HashMap::new(),
    };
    for h in &listing.histories {
        match h.restorable_at(at) {
            // Times are whole seconds: what was captured in the second of the folder's
            // deletion is taken to be after it (a folder made where a file was is filled
            // right after that file's deletion is recorded).
            Some(v) if cut.is_none_or(|c| v.captured >= c) => {
                out.files.push((h.name.clone(), v.clone()));
            }
            _ if h.has_copies() => out.left_out += 1,
            _ => {}
        }
    }
    for folder in &listing.folders {
        let child = rel.join(OsStr::from_bytes(&folder.name));
        let family = listing.histories.iter().find(|h| h.name == folder.name);
        let mut signs = history::FolderSigns {
            born: folder.born,
            modified: naming::stamp_at(folder.meta.mtime),
            newest: None,
        };
        let mut there = history::folder_at(family, &signs, at);
        // Only a folder deleted once needs to show that it came back: what was copied into
        // it since is looked for then.
        if !there && family.is_some_and(|h| h.deleted_by(at).is_some()) {
            signs.newest = newest_below(archive, &child, at);
            there = history::folder_at(family, &signs, at);
        }
        if there {
            let deleted = family.and_then(|h| h.deleted_by(at));
            out.folders.push((folder.name.clone(), cut.max(deleted)));
        }
    }
    out.metas = listing.metas;
    Ok(out)
}

/// What a folder restore writes besides its root.
#[derive(Default)]
pub(super) struct FolderPicks {
    pub(super) picks: Vec<Pick>,
    /// Every folder that was there, from DST and to TARGET, relative.
    folders: Vec<(PathBuf, PathBuf)>,
    left_out: u64,
}

/// The newest capture (a version or a record of a deletion) at or before `at` in the folder
/// `rel` of DST or below it.
fn newest_below(archive: &Archive, rel: &Path, at: u64) -> Option<u64> {
    archive
        .folders(rel)
        .iter()
        .filter_map(|dir| archive.histories(dir, None).ok())
        .flat_map(|(_, hs)| {
            hs.into_iter()
                .flat_map(|h| h.versions.into_iter().map(|v| v.captured))
        })
        .filter(|&c| c <= at)
        .max()
}

/// Never into the backup itself, and never over anything: every target is checked before any
/// is written.
fn check_targets(archive: &Archive, root: &Path, plan: &Plan, to: &Path) -> Result<(), Error> {
    let mut probe = root.to_path_buf();
    while !probe.exists() && probe.pop() {}
    if let Ok(existing) = std::fs::canonicalize(&probe)
        && existing.starts_with(archive.root())
    {
        return Err(Error::new(
            About::Option("--to", to.to_path_buf()),
            Why::IntoDestination(archive.root().to_path_buf()),
        ));
    }
    let taken = |path: &Path| Error::run(Why::Exists(path.to_path_buf()));
    for p in &plan.picks {
        let path = root.join(&p.to_dir).join(OsStr::from_bytes(&p.to_name));
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(taken(&path));
        }
    }
    // A folder that is there already is restored into; anything else in its place is not.
    for (_, to_dir) in &plan.folders {
        let path = root.join(to_dir);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
            return Err(taken(&path));
        }
    }
    Ok(())
}

/// Makes every folder that was there (empty ones too), writes every pick, then gives the
/// folders it made their metadata and makes the new names durable. Returns (restored, failed).
fn write_all(
    archive: &Archive,
    dest: &Local,
    root: &Path,
    plan: &Plan,
    out: &mut Reporter,
) -> (u64, u64) {
    let mut failed = 0u64;
    let picks = &plan.picks;
    let mut made_dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (from_dir, to_dir) in &plan.folders {
        match dest::open_path(dest, to_dir, true) {
            Ok(Some(opened)) if opened.created => {
                made_dirs.push((to_dir.clone(), from_dir.clone()))
            }
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                out.event(&Event::failed(
                    root.join(to_dir),
                    Failure::io(Op::CreateFolder, e),
                ));
            }
        }
    }
    // Batches are published by a thread of their own: while one batch waits for its sync, the
    // next is written (on 50,000 small files the sync took as long as the writing).
    let (restored, published_failed) = std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(0);
        let said = &mut *out;
        let publisher = s.spawn(move || {
            let out = said;
            let (mut restored, mut failed) = (0u64, 0u64);
            let mut unsaid: Vec<(PathBuf, PathBuf)> = Vec::new();
            for job in rx {
                match job {
                    Job::Batch(mut batch, links) => {
                        unsaid.extend(links);
                        let counts = (&mut restored, &mut failed);
                        publish(dest, &mut batch, &mut unsaid, counts, out, false);
                    }
                    Job::Failed(from, why) => {
                        failed += 1;
                        out.event(&Event::failed(from, why));
                    }
                }
            }
            let counts = (&mut restored, &mut failed);
            publish(dest, &mut Vec::new(), &mut unsaid, counts, out, true);
            (restored, failed)
        });
        let mut batch: Vec<Written> = Vec::new();
        // Symlinks made, said with the batch whose sync makes their names durable.
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut open = Open::default();
        for p in picks {
            let from = archive
                .root()
                .join(&p.from_dir)
                .join(OsStr::from_bytes(&p.version));
            match restore_one(archive, dest, p, &mut made_dirs, &mut open) {
                Ok(Some(staged)) => batch.push(Written { from, ..staged }),
                Ok(None) => {
                    let to = root.join(&p.to_dir).join(OsStr::from_bytes(&p.to_name));
                    links.push((from, to));
                }
                Err(why) => {
                    let _ = tx.send(Job::Failed(from, why));
                }
            }
            if batch.len() >= BATCH || links.len() >= BATCH {
                let job = Job::Batch(std::mem::take(&mut batch), std::mem::take(&mut links));
                let _ = tx.send(job);
            }
        }
        if !batch.is_empty() || !links.is_empty() {
            let _ = tx.send(Job::Batch(batch, links));
        }
        drop(tx);
        publisher.join().unwrap_or((0, 1))
    });
    failed += published_failed;
    // Folders made for the restore get the mode and times of their folder in DST, deepest
    // first (writing into a folder changes its time).
    for (to_rel, from_rel) in made_dirs.iter().rev() {
        let meta = archive.folder(from_rel).and_then(|d| d.meta());
        if let (Ok(meta), Ok(Some(d))) = (meta, dest.folder(to_rel)) {
            let _ = d.set_meta(&meta);
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
        let synced = dest
            .folder(rel)
            .and_then(|d| d.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
            .and_then(|d| d.sync());
        if let Err(e) = synced {
            failed += 1;
            out.event(&Event::failed(
                root.join(rel),
                Failure::io(Op::SyncFolder, e),
            ));
        }
    }
    (restored, failed)
}

/// What the publishing thread is handed, in order.
enum Job {
    /// Files staged and symlinks made: to sync, name and say.
    Batch(Vec<Written>, Vec<(PathBuf, PathBuf)>),
    /// A pick that could not be written.
    Failed(PathBuf, Failure),
}

/// Copies restored at once, then made durable with one sync of the filesystem and given their
/// names: a sync per file would cost a restore of 50,000 small files ten times `cp -a`.
const BATCH: usize = 256;

/// A restored file written under no name yet (or a temporary one): synced with its batch, then
/// published.
struct Written {
    from: PathBuf,
    staged: Box<dyn Staged>,
    dir: Arc<dyn Folder>,
    name: Vec<u8>,
}

/// Makes the batch's copies durable with one sync, then gives each its name (never over
/// anything); a failed sync fails them all, since which one lost data cannot be known. A
/// restored file or symlink is said only once its name is durable too: the names of one batch
/// ride on the next batch's `syncfs`, and the `last` batch (or one without such a sync) syncs the
/// folders that changed itself.
fn publish(
    dest: &Local,
    batch: &mut Vec<Written>,
    unsaid: &mut Vec<(PathBuf, PathBuf)>,
    counts: (&mut u64, &mut u64),
    out: &mut Reporter,
    last: bool,
) {
    let (restored, failed) = counts;
    if batch.is_empty() && unsaid.is_empty() {
        return;
    }
    // One sync for the batch where the filesystem has one that works; else (FUSE) each file's.
    let whole = dest.capabilities().group_commit && !batch.is_empty();
    let synced = if batch.is_empty() {
        Ok(())
    } else if whole {
        dest.sync_all()
    } else {
        batch.iter().try_for_each(|w| w.staged.sync())
    };
    if whole && synced.is_ok() {
        for (from, to) in unsaid.drain(..) {
            say(&from, &to, &Ok(()), (restored, failed), out);
        }
    }
    for mut w in batch.drain(..) {
        let published = match &synced {
            Ok(()) => w.staged.publish(&w.name),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match published {
            Ok(()) => {
                let to = w.dir.path().join(OsStr::from_bytes(&w.name));
                unsaid.push((w.from, to));
            }
            Err(e) => {
                *failed += 1;
                let op = if synced.is_ok() {
                    Op::Publish
                } else {
                    Op::Sync
                };
                out.event(&Event::failed(w.from, Failure::io(op, e)));
            }
        }
    }
    if last || !whole || synced.is_err() {
        let named = if unsaid.is_empty() {
            Ok(())
        } else {
            dest.sync_names()
        };
        for (from, to) in unsaid.drain(..) {
            say(&from, &to, &named, (restored, failed), out);
        }
    }
}

/// Says that `from` was restored to `to`, or, where its name could not be made durable
/// (`named`), that it failed.
fn say(
    from: &Path,
    to: &Path,
    named: &io::Result<()>,
    (restored, failed): (&mut u64, &mut u64),
    out: &mut Reporter,
) {
    match named {
        Ok(()) => {
            *restored += 1;
            out.say(&Message::Restored { from, to });
        }
        Err(e) => {
            *failed += 1;
            let e = io::Error::new(e.kind(), e.to_string());
            out.event(&Event::failed(
                from.to_path_buf(),
                Failure::at(Op::SyncFolder, to, e),
            ));
        }
    }
}

/// The folders the last pick was read from and written into: picks come folder by folder, and
/// opening each path again for each file would cost a lookup per component.
#[derive(Default)]
struct Open {
    from: Option<(PathBuf, Arc<dyn Folder>)>,
    to: Option<(PathBuf, Arc<dyn Folder>)>,
}

/// Writes one pick: a symlink at once (`None`), a file staged for its batch.
fn restore_one(
    archive: &Archive,
    dest: &Local,
    p: &Pick,
    made_dirs: &mut Vec<(PathBuf, PathBuf)>,
    open: &mut Open,
) -> Result<Option<Written>, Failure> {
    let from_dir = match &open.from {
        Some((rel, dir)) if *rel == p.from_dir => Arc::clone(dir),
        _ => {
            let dir = archive
                .folder(&p.from_dir)
                .map_err(|e| Failure::io(Op::Read, e))?;
            open.from = Some((p.from_dir.clone(), Arc::clone(&dir)));
            dir
        }
    };
    let to_dir = match &open.to {
        Some((rel, dir)) if *rel == p.to_dir => Arc::clone(dir),
        _ => {
            let opened = dest::open_path(dest, &p.to_dir, true)
                .and_then(|o| o.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
                .map_err(|e| Failure::io(Op::CreateFolder, e))?;
            if opened.created {
                made_dirs.push((p.to_dir.clone(), p.from_dir.clone()));
            }
            open.to = Some((p.to_dir.clone(), Arc::clone(&opened.folder)));
            opened.folder
        }
    };
    let (meta, _) = from_dir
        .entry(&p.version)
        .map_err(|e| Failure::io(Op::Read, e))?;
    if meta.kind == Kind::Symlink {
        let target = from_dir
            .read_link(&p.version)
            .map_err(|e| Failure::io(Op::ReadLink, e))?;
        to_dir
            .symlink(&target, &p.to_name, &meta)
            .map_err(|e| Failure::io(Op::Write, e))?;
        return Ok(None);
    }
    let src = from_dir
        .open_read(&p.version)
        .map_err(|e| Failure::io(Op::Open, e))?;
    let mut staged = to_dir
        .stage(&p.to_name, meta.mode)
        .map_err(|e| Failure::io(Op::Write, e))?;
    staged
        .copy_from(&src, meta.size)
        .map_err(|e| Failure::io(Op::Copy, e))?;
    staged
        .set_meta(&meta, &src)
        .map_err(|e| Failure::io(Op::SetMetadata, e))?;
    staged.close().map_err(|e| Failure::io(Op::Write, e))?;
    Ok(Some(Written {
        from: PathBuf::new(),
        staged,
        dir: to_dir,
        name: p.to_name.clone(),
    }))
}
