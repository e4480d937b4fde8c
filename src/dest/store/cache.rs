//! The metadata of objects already read, kept outside DST between runs: a listing gives each
//! key's size and ETag but not its metadata, and a version is never rewritten, so the
//! modification time and mode of a key with a given ETag never change. A no-change rerun then
//! needs the listing and nothing else. A missing or stale cache costs one metadata request per
//! object, never a wrong answer: an entry is used only when the ETag still matches.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use super::listing::{Index, Kept};
use crate::meta::Time;

#[derive(Debug, Default)]
pub(crate) struct Cache {
    path: Option<PathBuf>,
    /// key → (ETag, what it carries).
    entries: HashMap<String, (String, Kept)>,
    dirty: bool,
}

impl Cache {
    /// The cache of the store `url`, under `$XDG_CACHE_HOME/backup` (else `~/.cache/backup`).
    pub(crate) fn load(url: &str) -> Cache {
        let path = folder().map(|f| f.join(format!("store-{:016x}.tsv", fnv(url.as_bytes()))));
        let mut cache = Cache {
            path,
            ..Cache::default()
        };
        let Some(file) = cache
            .path
            .as_ref()
            .and_then(|p| std::fs::File::open(p).ok())
        else {
            return cache;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            if let Some((key, etag, kept)) = parse(&line) {
                cache.entries.insert(key, (etag, kept));
            }
        }
        cache
    }

    /// What `key` carries, if cached for this very ETag.
    pub(crate) fn get(&self, key: &str, etag: &str) -> Option<Kept> {
        self.entries
            .get(key)
            .filter(|(e, _)| e == etag)
            .map(|(_, k)| *k)
    }

    pub(crate) fn put(&mut self, key: String, etag: String, kept: Kept) {
        self.entries.insert(key, (etag, kept));
        self.dirty = true;
    }

    /// Writes the cache for the objects the index holds, when anything was learnt. Written to a
    /// temporary name and renamed, so that a crash leaves the old cache or the new one.
    pub(crate) fn save(&mut self, index: &Index) {
        let Some(path) = self.path.clone().filter(|_| self.dirty) else {
            return;
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
            for (key, object) in index.objects() {
                let (Some(etag), Some(kept)) = (&object.etag, object.kept) else {
                    continue;
                };
                let Kept { mtime, mode } = kept;
                writeln!(
                    out,
                    "{etag}\t{}\t{}\t{mode:o}\t{key}",
                    mtime.sec, mtime.nsec
                )?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        // A cache that cannot be written costs the next run time, nothing else.
        if write().is_ok() {
            self.dirty = false;
        }
    }
}

fn folder() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("backup"))
}

fn parse(line: &str) -> Option<(String, String, Kept)> {
    let mut fields = line.splitn(5, '\t');
    let etag = fields.next()?.to_string();
    let sec = fields.next()?.parse().ok()?;
    let nsec = fields.next()?.parse().ok()?;
    let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
    let key = fields.next()?.to_string();
    Some((
        key,
        etag,
        Kept {
            mtime: Time { sec, nsec },
            mode,
        },
    ))
}

/// FNV-1a: a hash that stays the same across builds, so the cache is found again.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::store::listing::Object;

    #[test]
    fn lines_round_trip_and_etags_must_match() {
        let line = "\"abc\"\t1700000000\t123\t644\tdir/a b.txt";
        let (key, etag, kept) = parse(line).unwrap();
        assert_eq!(key, "dir/a b.txt");
        assert_eq!(etag, "\"abc\"");
        assert_eq!(kept.mode, 0o644);
        assert_eq!(
            kept.mtime,
            Time {
                sec: 1_700_000_000,
                nsec: 123
            }
        );
        assert_eq!(parse("garbage"), None);
        let mut cache = Cache::default();
        cache.put(key.clone(), etag, kept);
        assert_eq!(cache.get(&key, "\"abc\""), Some(kept));
        assert_eq!(
            cache.get(&key, "\"other\""),
            None,
            "rewritten elsewhere: not trusted"
        );
    }

    #[test]
    fn saved_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tsv");
        let kept = Kept {
            mtime: Time { sec: 7, nsec: 8 },
            mode: 0o600,
        };
        let mut index = Index::new();
        index.add(
            "a/x",
            Some(Object {
                size: 1,
                etag: Some("e1".into()),
                uploaded: Time::default(),
                kept: Some(kept),
            }),
        );
        let mut cache = Cache {
            path: Some(path.clone()),
            dirty: true,
            ..Cache::default()
        };
        cache.save(&index);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "e1\t7\t8\t600\ta/x\n");
        assert_eq!(fnv(b"s3://b"), fnv(b"s3://b"));
        assert_ne!(fnv(b"s3://b"), fnv(b"s3://c"));
    }
}
