//! The destination read as an archive of versions: `versions`, `restore` and `prune`, and the
//! pruning that `once` and `watch` do after a pass. Everything is read back from the names and
//! metadata in DST (`history` decides); nothing else is kept anywhere.

pub(crate) mod diff;
pub(crate) mod du;
pub(crate) mod find;
pub(crate) mod mount;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod room;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Versions;
use crate::dest::{self, Destination, Folder, is_temp_name};
use crate::error::{About, Error, Status, Why};
use crate::history::{self, Entry, History};
use crate::meta::Kind;
use crate::naming;
use crate::report::{Listed, Message, Reporter, Style};

/// What a PATH argument names in DST.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A folder, relative to DST.
    Folder(PathBuf),
    /// A file: its folder, relative to DST, and its name.
    File(PathBuf, Vec<u8>),
}

/// DST, opened to read its history (and, for pruning, to delete from it).
pub(crate) struct Archive {
    dest: Arc<dyn Destination>,
}

/// One folder of DST as read for its history.
pub(crate) struct Listing {
    pub(crate) dir: Arc<dyn Folder>,
    pub(crate) histories: Vec<History>,
    pub(crate) folders: Vec<Subfolder>,
    /// What DST shows of each file (copy, record of a deletion), as listed.
    pub(crate) metas: HashMap<Vec<u8>, crate::meta::Meta>,
    /// Whether the filesystem gave every file a birth time: else some capture times are change
    /// times (`history::written_at`), which a change of mode moves without touching the folder.
    pub(crate) every_born: bool,
}

/// A folder in a folder of DST, and what DST shows of it.
pub(crate) struct Subfolder {
    pub(crate) name: Vec<u8>,
    pub(crate) meta: crate::meta::Meta,
    /// When DST made it (a local stamp), where the filesystem says.
    pub(crate) born: Option<u64>,
}

/// The local time of a stamp, as `versions` and `restore` print it.
pub(crate) fn when(stamp: u64) -> String {
    naming::naive_of(stamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

impl Archive {
    /// Opens DST, which must be an existing folder. Read-only unless `write` (then it is
    /// locked like a backup locks it, so that a prune never runs into a running backup).
    pub(crate) fn open(dst: &Path, write: bool) -> Result<Archive, Error> {
        let named = |why| Error::new(About::Destination(dst.to_path_buf()), why);
        let root = match dest::Location::parse(dst)? {
            dest::Location::Local(path) => {
                let md = std::fs::metadata(&path).map_err(|e| named(Why::Io(e)))?;
                if !md.is_dir() {
                    return Err(named(Why::NotADirectory));
                }
                dest::Location::Local(std::fs::canonicalize(&path).map_err(|e| named(Why::Io(e)))?)
            }
            remote => remote,
        };
        let dest = dest::open(&root, write).map_err(|e| named(Why::Open(e)))?;
        Ok(Archive { dest })
    }

    /// The archive view of a destination a backup already holds open.
    pub(crate) fn of(dest: &Arc<dyn Destination>) -> Archive {
        Archive {
            dest: Arc::clone(dest),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dest.path()
    }

    /// The folder `rel` of DST.
    pub(crate) fn folder(&self, rel: &Path) -> io::Result<Arc<dyn Folder>> {
        self.dest
            .folder(rel)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// What PATH names: a path inside DST, or one relative to the backed-up tree.
    pub(crate) fn resolve(&self, path: &Path) -> Result<Target, Error> {
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
                    Error::run(Why::NotInside {
                        path: path.to_path_buf(),
                        dst: self.root().to_path_buf(),
                    })
                })?
        } else {
            path.components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect()
        };
        if self.dest.folder(&rel).is_ok_and(|f| f.is_some()) {
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
    /// `histories`, or `None` once the failure to read the folder is said on `out`.
    pub(crate) fn histories_or_say(
        &self,
        rel: &Path,
        sources: Option<&HashSet<Vec<u8>>>,
        out: &mut Reporter,
    ) -> Option<(Arc<dyn Folder>, Vec<History>)> {
        match self.histories(rel, sources) {
            Ok(h) => Some(h),
            Err(e) => {
                let at = self.root().join(rel);
                out.event(&crate::outcome::Event::failed(
                    at,
                    crate::error::Failure::io(crate::error::Op::Read, e),
                ));
                None
            }
        }
    }

    pub(crate) fn histories(
        &self,
        rel: &Path,
        sources: Option<&HashSet<Vec<u8>>>,
    ) -> io::Result<(Arc<dyn Folder>, Vec<History>)> {
        let listing = self.listing(rel, sources)?;
        Ok((listing.dir, listing.histories))
    }

    /// The file histories in the folder `rel`, and the folders in it with what DST shows of
    /// each.
    pub(crate) fn listing(
        &self,
        rel: &Path,
        sources: Option<&HashSet<Vec<u8>>>,
    ) -> io::Result<Listing> {
        let dir = self.folder(rel)?;
        let mut entries = Vec::new();
        let mut folders = Vec::new();
        let mut metas = HashMap::new();
        let mut every_born = true;
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
                folders.push(Subfolder {
                    name,
                    meta,
                    born: born.map(naming::stamp_at),
                });
                continue;
            }
            every_born &= born.is_some();
            entries.push(Entry {
                name: name.clone(),
                modified: naming::stamp_at(meta.mtime),
                written: history::written_at(&meta, born),
                size: meta.size,
            });
            metas.insert(name, meta);
        }
        Ok(Listing {
            histories: history::histories(&entries, sources),
            dir,
            folders,
            metas,
            every_born,
        })
    }

    /// The recorded deletions of the folder `rel` and of every folder above it: each folder
    /// (relative to DST) and the record. A file in such a folder was gone from then on, until a
    /// copy of it made later.
    pub(crate) fn folder_deletions(&self, rel: &Path) -> Vec<(PathBuf, history::Version)> {
        let mut out = Vec::new();
        for folder in rel.ancestors() {
            let (Some(parent), Some(name)) = (folder.parent(), folder.file_name()) else {
                continue;
            };
            let Ok((_, histories)) = self.histories(parent, None) else {
                continue;
            };
            if let Some(h) = find(&histories, name.as_bytes()) {
                out.extend(
                    h.versions
                        .iter()
                        .filter(|v| v.is_deletion())
                        .map(|v| (folder.to_path_buf(), v.clone())),
                );
            }
        }
        out
    }

    /// The names of the folders right in the folder `rel` of DST.
    pub(crate) fn subfolders(&self, rel: &Path) -> Vec<std::ffi::OsString> {
        let Ok(Some(dir)) = self.dest.folder(rel) else {
            return Vec::new();
        };
        dir.subfolders()
            .unwrap_or_default()
            .into_iter()
            .map(|name| OsStr::from_bytes(&name).to_os_string())
            .collect()
    }

    /// How many versions DST holds (copies, not the records of deletions).
    pub(crate) fn versions_held(&self) -> io::Result<u64> {
        let mut n = 0;
        for rel in self.folders(Path::new("")) {
            let (_, histories) = self.histories(&rel, None)?;
            let copies = histories.iter().flat_map(|h| &h.versions);
            n += copies.filter(|v| !v.is_deletion()).count() as u64;
        }
        Ok(n)
    }

    /// Every folder of DST from `rel` down, relative to DST, parents first; symlinks are not
    /// followed.
    pub(crate) fn folders(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if !matches!(self.dest.folder(rel), Ok(Some(_))) {
            return out;
        }
        let mut queue = std::collections::VecDeque::from([rel.to_path_buf()]);
        while let Some(dir) = queue.pop_front() {
            let mut subs = self.subfolders(&dir);
            subs.sort();
            queue.extend(subs.into_iter().map(|s| dir.join(s)));
            out.push(dir);
        }
        out
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

/// The names in the folder `rel` of SRC, where it can be read: they tell apart files whose own
/// names look like versions of another (see `history::histories`).
fn source_names(src: &Path, rel: &Path) -> Option<HashSet<Vec<u8>>> {
    std::fs::read_dir(src.join(rel)).ok().map(|rd| {
        rd.flatten()
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect()
    })
}

/// Runs a command that reads DST, its output in text or JSON: an error it ends with is said as
/// one line, and is a failure.
fn reported(json: bool, command: impl FnOnce(&mut Reporter) -> Result<Status, Error>) -> Status {
    let mut out = reporter(json, false, false);
    match command(&mut out) {
        Ok(status) => status,
        Err(e) => {
            out.error(&e);
            Status::Failure
        }
    }
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
pub(crate) fn versions(args: &Versions) -> Status {
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
                let at = archive.root().join(&rel);
                out.error(&Error::new(About::Path(at), Why::Io(e)));
                status = Status::Failure;
                continue;
            }
        };
        let chosen: Vec<&History> = match only {
            Some(name) => find(&histories, name).into_iter().collect(),
            None => histories.iter().collect(),
        };
        // A file asked about by name also shows when a folder it is in was deleted.
        let above = match only {
            Some(_) => archive.folder_deletions(&rel),
            None => Vec::new(),
        };
        for h in chosen {
            let file = dir.path().join(OsStr::from_bytes(&h.name));
            let mut list: Vec<(u64, Listed<'_>)> = h
                .versions
                .iter()
                .map(|v| {
                    let row = Listed {
                        path: dir.path().join(OsStr::from_bytes(&v.name)),
                        captured: when(v.captured),
                        size: v.size,
                        name: Path::new(OsStr::from_bytes(&v.name)),
                        deleted: v.is_deletion(),
                        folder: None,
                    };
                    (v.captured, row)
                })
                .collect();
            for (folder, v) in &above {
                let parent = folder.parent().unwrap_or(Path::new(""));
                list.push((
                    v.captured,
                    Listed {
                        path: archive.root().join(parent).join(OsStr::from_bytes(&v.name)),
                        captured: when(v.captured),
                        size: 0,
                        name: Path::new(OsStr::from_bytes(&v.name)),
                        deleted: true,
                        folder: Some(folder.as_path()),
                    },
                ));
            }
            // In time order; a copy made in the second of its folder's deletion came after it
            // (as a restore takes it).
            list.sort_by_key(|(captured, row)| (*captured, row.folder.is_none()));
            let list: Vec<Listed<'_>> = list.into_iter().map(|(_, row)| row).collect();
            out.say(&Message::History {
                file: &file,
                versions: &list,
            });
            shown += 1;
        }
    }
    out.flush();
    if let (0, Target::File(dir, name)) = (shown, &target) {
        out.error(&Error::run(Why::NoVersions {
            file: dir.join(OsStr::from_bytes(name)),
            dst: archive.root().to_path_buf(),
        }));
        return Status::Failure;
    }
    status
}
