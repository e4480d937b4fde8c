//! A bucket of an S3-compatible object store as a destination, through OpenDAL.
//!
//! The same relative paths and version names as a folder (`PREFIX/dir/report_20261126_153045.txt`),
//! so that any S3 tool can browse it. A store has no folders, no rename and no times of its
//! own, so: the whole prefix is listed once at open and the listing (kept up to date by this
//! run's own writes, the only writer: see `lock`) answers every question about names; a copy
//! is staged in an unnamed local spool file and published as one create-only upload (multipart
//! above a chunk, aborted on failure), with its source's modification time (integer
//! nanoseconds) and mode as object metadata; empty folders are kept as `dir/` marker objects.
//! The metadata that a listing does not show comes from a cache outside DST (`cache`), else
//! from one HEAD request per object.

mod cache;
pub(crate) mod listing;
pub(crate) mod location;
mod lock;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opendal::Operator;
use tokio::runtime::Runtime;

use self::cache::Cache;
use self::listing::{Index, Kept, Listing, Object};
pub(crate) use self::location::Location;
use self::location::{to_io, words};
use self::lock::{LOCK_NAME, Lock, Refused};
use super::{
    Capabilities, Destination, Folder, OpenError, Opened, Publish, Refusal, Staged, Unavailable,
};
use crate::meta::{Kind, Meta, Time};

/// Uploads go in parts of at least this size; a file of up to one part is one PUT.
const PART: u64 = 8 << 20;
/// S3 allows at most this many parts to an upload: bigger files get bigger parts.
const MAX_PARTS: u64 = 10_000;
/// Parts of one upload in flight at once: memory per upload is about (this + 1) parts.
const PARTS_IN_FLIGHT: usize = 2;
/// The largest object S3 holds.
const MAX_OBJECT: u64 = 5 << 40;
/// The cache is written at most this often while a run goes on (and when it ends).
const SAVE_EVERY: Duration = Duration::from_secs(30);
/// A full pass lists the prefix again when the last listing is older than this.
const RELIST_AFTER: Duration = Duration::from_secs(5);

/// What the folders and copies of one opened store share.
struct Shared {
    url: PathBuf,
    op: Operator,
    rt: Arc<Runtime>,
    index: Mutex<Index>,
    cache: Mutex<Cache>,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn block<T>(&self, f: impl IntoFuture<Output = opendal::Result<T>>) -> io::Result<T> {
        self.rt.block_on(f.into_future()).map_err(|e| to_io(&e))
    }
}

pub(crate) struct Store {
    shared: Arc<Shared>,
    caps: Capabilities,
    lock: Option<Lock>,
    saved: Mutex<Instant>,
    /// When the prefix was last listed.
    listed: Mutex<Instant>,
}

impl Store {
    /// Opens the store at `loc`: lists the prefix, and for a run that writes, takes the lock and
    /// probes whether the store honours create-only writes.
    pub(crate) fn open(loc: &Location, write: bool) -> Result<Store, OpenError> {
        let failed = |why: String| OpenError::Open(io::Error::other(why));
        let op = loc.operator().map_err(|e| failed(words(&e)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store")
            .enable_all()
            .build()
            .map_err(OpenError::Open)?;
        let rt = Arc::new(rt);
        let url = loc.url();
        let mut cache = Cache::load(&url);
        let index = list(&op, &rt, &mut cache).map_err(|e| failed(opening(loc, &e)))?;
        let lock = if write {
            match Lock::take(&op, &rt) {
                Ok(lock) => Some(lock),
                Err(Refused::Held) => return Err(OpenError::Locked),
                Err(Refused::Store(e)) => return Err(OpenError::NotWritable(to_io(&e))),
            }
        } else {
            None
        };
        let publish = if write {
            probe_create_only(&op, &rt).map_err(|e| OpenError::NotWritable(to_io(&e)))?
        } else {
            Publish::Unknown
        };
        Ok(Store {
            shared: Arc::new(Shared {
                url: PathBuf::from(url),
                op,
                rt,
                index: Mutex::new(index),
                cache: Mutex::new(cache),
            }),
            caps: capabilities(publish),
            lock,
            saved: Mutex::new(Instant::now()),
            listed: Mutex::new(Instant::now()),
        })
    }

    fn save_cache(&self) {
        let index = self.shared.index();
        self.shared.cache().save(&index);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.save_cache();
    }
}

/// What a bucket holds, known from its kind; only conditional writes differ between servers,
/// and those are probed. Everything here counts as probed: it is not assumed from a name that
/// could mislead.
fn capabilities(publish: Publish) -> Capabilities {
    Capabilities {
        kind: "s3".into(),
        probed: true,
        precision: Some(1),
        local_time: false,
        publish,
        publish_keeps_times: true,
        unnamed: false,
        symlinks: false,
        symlink_meta: false,
        permissions: true,
        owners: false,
        xattrs: false,
        case_sensitive: true,
        refuses: vec![Refusal::NonUtf8, Refusal::Control],
        max_file_size: Some(MAX_OBJECT),
        refresh: false,
        group_commit: false,
        clone: false,
        // A server-side copy: a moved file is not uploaded again. Each object stays its own,
        // so nothing is shared that a later change could reach.
        link: true,
    }
}

/// The wording for a store that cannot be listed at all.
fn opening(loc: &Location, e: &opendal::Error) -> String {
    // OpenDAL reports a missing bucket as a setting it cannot use, with S3's code inside.
    let no_bucket =
        e.kind() == opendal::ErrorKind::NotFound || e.to_string().contains("NoSuchBucket");
    match e.kind() {
        _ if no_bucket => format!("bucket '{}' not found", loc.bucket),
        _ => format!("cannot list the bucket: {}", words(e)),
    }
}

/// Lists the whole prefix once: the one request per thousand objects that a rerun costs.
fn list(op: &Operator, rt: &Runtime, cache: &mut Cache) -> opendal::Result<Index> {
    let entries = rt.block_on(op.list_with("/").recursive(true).into_future())?;
    let mut index = Index::new();
    for entry in entries {
        let path = entry.path();
        if entry.metadata().is_dir() {
            index.add(&format!("{}/", path.trim_end_matches('/')), None);
            continue;
        }
        let md = entry.metadata();
        let etag = md.etag().map(str::to_string);
        let kept = etag.as_deref().and_then(|e| cache.get(path, e));
        let object = Object {
            size: md.content_length(),
            uploaded: md.last_modified().map(time_of).unwrap_or_default(),
            etag,
            kept,
        };
        index.add(path, Some(object));
    }
    Ok(index)
}

fn time_of(t: opendal::raw::Timestamp) -> Time {
    let t = t.into_inner();
    Time {
        sec: t.as_second(),
        nsec: u32::try_from(t.subsec_nanosecond()).unwrap_or(0),
    }
}

/// Writes a probe object twice, create-only: a store that honours `If-None-Match: *` refuses
/// the second write. The probe has a temporary name, so that a run killed here leaves only
/// what the next pass removes.
fn probe_create_only(op: &Operator, rt: &Runtime) -> opendal::Result<Publish> {
    let name = String::from_utf8_lossy(&super::temp_name(b"probe")).into_owned();
    let put = |body: &'static [u8]| {
        rt.block_on(op.write_with(&name, body).if_not_exists(true).into_future())
    };
    put(b"1")?;
    let publish = match put(b"2") {
        Ok(_) => Publish::UniqueNames,
        Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Publish::CreateOnly,
        Err(e) => {
            let _ = rt.block_on(op.delete(&name));
            return Err(e);
        }
    };
    rt.block_on(op.delete(&name))?;
    Ok(publish)
}

/// The metadata of a folder, which a store does not keep.
fn folder_meta() -> Meta {
    Meta {
        kind: Kind::Dir,
        mode: 0o755,
        ..Meta::default()
    }
}

impl Destination for Store {
    fn over_network(&self) -> bool {
        true
    }

    fn path(&self) -> &Path {
        &self.shared.url
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn folder(&self, rel: &Path) -> io::Result<Option<Arc<dyn Folder>>> {
        let rel = rel_of(rel)?;
        if self.shared.index().folder(&rel).is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(StoreFolder {
            path: self.shared.url.join(&rel),
            rel,
            shared: Arc::clone(&self.shared),
        })))
    }

    fn still_there(&self) -> Result<(), Unavailable> {
        self.reacquire()
    }

    /// Nothing is held open between batches; the lock stays, refreshed, for the whole run.
    fn release(&self) {}

    fn reacquire(&self) -> Result<(), Unavailable> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        match lock.ensure() {
            Ok(()) => Ok(()),
            Err(Refused::Held) => Err(Unavailable::Locked),
            Err(Refused::Store(e)) => Err(Unavailable::Gone(to_io(&e))),
        }
    }

    fn free_space(&self) -> Option<u64> {
        None
    }

    /// A listing younger than `RELIST_AFTER` (the one made at open, for the first pass) is
    /// kept; an older one is read again, so that a full pass sees objects that were removed or
    /// added by anything else since (a lifecycle rule, another tool).
    fn refresh(&self) -> io::Result<()> {
        let mut listed = self
            .listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if listed.elapsed() < RELIST_AFTER {
            return Ok(());
        }
        let fresh = {
            let mut cache = self.shared.cache();
            list(&self.shared.op, &self.shared.rt, &mut cache).map_err(|e| to_io(&e))?
        };
        *self.shared.index() = fresh;
        *listed = Instant::now();
        Ok(())
    }

    /// An upload is durable when the store acknowledges it; what is left is to keep what was
    /// learnt of the objects' metadata.
    fn sync_all(&self) -> io::Result<()> {
        let mut saved = self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if saved.elapsed() >= SAVE_EVERY {
            *saved = Instant::now();
            self.save_cache();
        }
        Ok(())
    }
}

/// A folder path relative to the prefix, as the index names it: `a/b`.
fn rel_of(rel: &Path) -> io::Result<String> {
    let s = rel.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not UTF-8, as bucket keys must be",
        )
    })?;
    Ok(s.trim_matches('/').to_string())
}

fn utf8(name: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not UTF-8, as bucket keys must be",
        )
    })
}

struct StoreFolder {
    path: PathBuf,
    rel: String,
    shared: Arc<Shared>,
}

impl StoreFolder {
    fn key(&self, name: &[u8]) -> String {
        listing::key(&self.rel, name)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Listing) -> T) -> io::Result<T> {
        let mut index = self.shared.index();
        let listing = index
            .folder_mut(&self.rel)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(f(listing))
    }

    fn object(&self, name: &[u8]) -> io::Result<Option<Object>> {
        self.with(|l| l.files.get(name).cloned())
    }

    /// Reads what an object carries with one HEAD request, and remembers it.
    fn head(&self, name: &[u8], object: &Object) -> io::Result<Kept> {
        let key = self.key(name);
        let md = self.shared.block(self.shared.op.stat(&key))?;
        let read = |field: &str| {
            md.user_metadata()
                .and_then(|m| m.get(field).map(str::to_string))
        };
        let mtime = read("mtime-ns")
            .and_then(|s| s.parse::<i128>().ok())
            .map(|ns| Time {
                sec: ns.div_euclid(1_000_000_000) as i64,
                nsec: ns.rem_euclid(1_000_000_000) as u32,
            });
        let mode = read("mode").and_then(|s| u32::from_str_radix(&s, 8).ok());
        let kept = Kept {
            mtime: mtime.unwrap_or(object.uploaded),
            mode: mode.unwrap_or(0o644),
        };
        self.remember(name, object.etag.clone(), kept)?;
        Ok(kept)
    }

    fn remember(&self, name: &[u8], etag: Option<String>, kept: Kept) -> io::Result<()> {
        self.with(|l| {
            if let Some(o) = l.files.get_mut(name) {
                o.kept = Some(kept);
            }
        })?;
        if let Some(etag) = etag {
            self.shared.cache().put(self.key(name), etag, kept);
        }
        Ok(())
    }

    /// Records a new object in the listing and the cache.
    fn added(&self, name: &[u8], object: Object) -> io::Result<()> {
        if let (Some(etag), Some(kept)) = (&object.etag, object.kept) {
            self.shared.cache().put(self.key(name), etag.clone(), kept);
        }
        self.with(|l| {
            l.files.insert(name.to_vec(), object);
        })
    }

    /// A create-only write that the store refused means another writer took the name since
    /// the listing: it joins the listing, so that the next name is chosen past it.
    fn refused(&self, name: &[u8], e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return e;
        }
        if let Ok(md) = self.shared.block(self.shared.op.stat(&self.key(name))) {
            let object = Object {
                size: md.content_length(),
                etag: md.etag().map(str::to_string),
                uploaded: md.last_modified().map(time_of).unwrap_or_else(Time::now),
                kept: None,
            };
            let _ = self.with(|l| l.files.insert(name.to_vec(), object));
        }
        e
    }

    /// Copies the object `from` of the folder `from_rel` to `to` here on the server,
    /// create-only (`AlreadyExists` when `to` is taken), and lists it.
    fn copy_in(&self, from_rel: &str, from: &[u8], to: &[u8]) -> io::Result<()> {
        utf8(to)?;
        if self.taken(to)? {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let object = {
            let mut index = self.shared.index();
            index
                .folder_mut(from_rel)
                .and_then(|l| l.files.get(from).cloned())
        }
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let (from_key, to_key) = (listing::key(from_rel, from), self.key(to));
        self.shared
            .block(
                self.shared
                    .op
                    .copy_with(&from_key, &to_key)
                    .if_not_exists(true),
            )
            .map_err(|e| self.refused(to, e))?;
        self.with(|l| {
            l.files.insert(
                to.to_vec(),
                Object {
                    etag: None,
                    ..object
                },
            );
        })
    }

    fn taken(&self, name: &[u8]) -> io::Result<bool> {
        self.with(|l| l.files.contains_key(name) || l.dirs.contains(name))
    }
}

impl Folder for StoreFolder {
    fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr, create: bool) -> io::Result<Option<Opened>> {
        let name_str = utf8(name.as_bytes())?;
        let (is_dir, is_file) = self.with(|l| {
            (
                l.dirs.contains(name.as_bytes()),
                l.files.contains_key(name.as_bytes()),
            )
        })?;
        let sub = listing::key(&self.rel, name.as_bytes());
        let opened = |created| {
            Some(Opened {
                folder: Arc::new(StoreFolder {
                    path: self.path.join(name_str),
                    rel: sub.clone(),
                    shared: Arc::clone(&self.shared),
                }) as Arc<dyn Folder>,
                created,
                meta: folder_meta(),
            })
        };
        if is_dir {
            return Ok(opened(false));
        }
        if is_file {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "a file is in the way of a folder",
            ));
        }
        if !create {
            return Ok(None);
        }
        // A marker object, so that an empty folder is kept and shows in every S3 tool.
        self.shared
            .block(self.shared.op.create_dir(&format!("{sub}/")))?;
        self.shared.index().ensure(&sub);
        Ok(opened(true))
    }

    fn meta(&self) -> io::Result<Meta> {
        Ok(folder_meta())
    }

    fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        self.with(|l| l.names())
    }

    fn subfolders(&self) -> io::Result<Vec<Vec<u8>>> {
        self.with(|l| l.dirs.iter().cloned().collect())
    }

    fn stat(&self, name: &[u8]) -> io::Result<Meta> {
        if let Some(object) = self.object(name)? {
            if object.kept.is_some() {
                return Ok(object.meta());
            }
            let kept = self.head(name, &object)?;
            return Ok(Object {
                kept: Some(kept),
                ..object
            }
            .meta());
        }
        if self.with(|l| l.dirs.contains(name))? {
            return Ok(folder_meta());
        }
        Err(io::Error::from(io::ErrorKind::NotFound))
    }

    fn entry(&self, name: &[u8]) -> io::Result<(Meta, Option<Time>)> {
        Ok((self.stat(name)?, None))
    }

    fn read_link(&self, _name: &[u8]) -> io::Result<Vec<u8>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a bucket holds no symlinks",
        ))
    }

    /// Downloads the object into an unnamed local file, part by part.
    fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let size = match self.object(name)? {
            Some(o) => o.size,
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        let key = self.key(name);
        let mut out = tempfile::tempfile()?;
        let reader = self.shared.block(self.shared.op.reader(&key))?;
        let mut at = 0;
        while at < size {
            let end = (at + PART).min(size);
            let buf = self.shared.block(reader.read(at..end))?;
            for chunk in buf {
                out.write_all(&chunk)?;
            }
            at = end;
        }
        out.rewind()?;
        Ok(out)
    }

    fn remove(&self, name: &[u8]) -> io::Result<()> {
        // Only an object the listing holds: a folder is the prefix of other objects, and a
        // delete of a key that is not there would succeed without a word.
        if self.object(name)?.is_none() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let key = self.key(name);
        self.shared.block(self.shared.op.delete(&key))?;
        self.with(|l| {
            l.files.remove(name);
        })
    }

    fn remove_leftover(&self, name: &[u8]) -> io::Result<()> {
        if self.rel.is_empty() && name == LOCK_NAME.as_bytes() {
            return Ok(());
        }
        self.remove(name)
    }

    fn stage(&self, _name: &[u8], _mode: u32) -> io::Result<Box<dyn Staged>> {
        Ok(Box::new(Upload {
            spool: tempfile::tempfile()?,
            folder: StoreFolder {
                path: self.path.clone(),
                rel: self.rel.clone(),
                shared: Arc::clone(&self.shared),
            },
            kept: None,
        }))
    }

    fn symlink(&self, _target: &[u8], _name: &[u8], _meta: &Meta) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a bucket holds no symlinks",
        ))
    }

    /// A store keeps no folder metadata.
    fn set_meta(&self, _meta: &Meta) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn update_meta(&self, _name: &[u8], _meta: &Meta, _src: &File, _times: bool) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an object's metadata cannot change without rewriting it",
        ))
    }

    fn create_empty(&self, name: &[u8]) -> io::Result<()> {
        if self.taken(name)? {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let key = self.key(name);
        let md = self
            .shared
            .block(
                self.shared
                    .op
                    .write_with(&key, Vec::<u8>::new())
                    .if_not_exists(true),
            )
            .map_err(|e| self.refused(name, e))?;
        let uploaded = md.last_modified().map(time_of).unwrap_or_else(Time::now);
        self.added(
            name,
            Object {
                size: 0,
                etag: md.etag().map(str::to_string),
                uploaded,
                kept: Some(Kept {
                    mtime: uploaded,
                    mode: 0o644,
                }),
            },
        )
    }

    /// A server-side copy to the new name, create-only, then the old name deleted.
    fn set_aside(&self, name: &[u8], to: &[u8]) -> io::Result<()> {
        let from_key = self.key(name);
        self.copy_in(&self.rel, name, to)?;
        self.shared.block(self.shared.op.delete(&from_key))?;
        self.with(|l| {
            l.files.remove(name);
        })
    }

    /// A server-side copy of `from`'s object, create-only: its bytes and metadata (time, mode)
    /// are not sent again.
    fn link(&self, from: &super::Elsewhere, name: &[u8]) -> io::Result<()> {
        self.copy_in(&rel_of(from.rel)?, from.name, name)
    }
}

/// A copy spooled in an unnamed local file until it is published by one upload: the source is
/// read once, checked to be unchanged, and only then sent.
struct Upload {
    spool: File,
    folder: StoreFolder,
    kept: Option<Kept>,
}

impl Staged for Upload {
    fn copy_from(&mut self, mut src: &File, _size: u64) -> io::Result<u64> {
        src.rewind()?;
        io::copy(&mut src, &mut self.spool)
    }

    fn set_meta(&mut self, meta: &Meta, _src: &File) -> io::Result<()> {
        self.kept = Some(Kept {
            mtime: meta.mtime,
            mode: meta.mode,
        });
        Ok(())
    }

    fn file(&self) -> io::Result<&File> {
        Ok(&self.spool)
    }

    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    /// One create-only upload under `name`. The listing says first whether the name is free (on
    /// a store that ignores `If-None-Match` it is the only check, and enough for the one writer
    /// that the lock lets in); a store that honours it refuses a name taken meanwhile.
    fn publish(&mut self, name: &[u8]) -> io::Result<()> {
        utf8(name)?;
        if self.folder.taken(name)? {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let size = self.spool.metadata()?.len();
        let kept = self.kept.unwrap_or(Kept {
            mtime: Time::now(),
            mode: 0o644,
        });
        let shared = Arc::clone(&self.folder.shared);
        let key = self.folder.key(name);
        let part = part_size(size);
        let nanos = i128::from(kept.mtime.sec) * 1_000_000_000 + i128::from(kept.mtime.nsec);
        let metadata = [
            ("mtime-ns".to_string(), nanos.to_string()),
            ("mode".to_string(), format!("{:o}", kept.mode)),
        ];
        let mut writer = shared.block(
            shared
                .op
                .writer_with(&key)
                .if_not_exists(true)
                .user_metadata(metadata)
                .chunk(part as usize)
                .concurrent(PARTS_IN_FLIGHT),
        )?;
        let sent = send(&shared, &self.spool, size, part, &mut writer);
        let md = match sent.and_then(|()| shared.block(writer.close())) {
            Ok(md) => md,
            Err(e) => {
                // No parts left behind: an unfinished multipart upload costs storage unseen.
                let _ = shared.rt.block_on(writer.abort());
                return Err(self.folder.refused(name, e));
            }
        };
        self.folder.added(
            name,
            Object {
                size,
                etag: md.etag().map(str::to_string),
                uploaded: md.last_modified().map(time_of).unwrap_or_else(Time::now),
                kept: Some(kept),
            },
        )
    }
}

/// Sends the spool to `writer` a part at a time, so that memory stays bounded whatever the size.
fn send(
    shared: &Shared,
    spool: &File,
    size: u64,
    part: u64,
    writer: &mut opendal::Writer,
) -> io::Result<()> {
    let mut at = 0;
    while at < size {
        let len = part.min(size - at) as usize;
        let mut buf = vec![0u8; len];
        spool.read_exact_at(&mut buf, at)?;
        shared.block(writer.write(buf))?;
        at += len as u64;
    }
    Ok(())
}

/// The part size for an upload of `size` bytes: `PART`, or more where `MAX_PARTS` would not do.
fn part_size(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    PART.max(needed.div_ceil(1 << 20) << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_only_for_huge_files() {
        assert_eq!(part_size(0), PART);
        assert_eq!(part_size(2 << 30), PART);
        let huge = 200u64 << 30;
        let part = part_size(huge);
        assert!(huge.div_ceil(part) <= MAX_PARTS, "{part}");
        assert_eq!(part % (1 << 20), 0);
    }

    #[test]
    fn a_bucket_says_what_it_keeps() {
        let caps = capabilities(Publish::UniqueNames);
        assert!(!caps.symlinks && !caps.xattrs && !caps.owners);
        assert_eq!(caps.precision, Some(1));
        assert!(caps.refuses.contains(&Refusal::NonUtf8));
    }
}
