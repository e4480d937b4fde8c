//! The seam's promises, written once and run against every kind of destination: in memory and a
//! local folder by the unit tests below, S3 and SFTP by `tests/remote.rs` (through
//! `backup::check_destination`), which starts their servers. Test code: it panics at the first
//! promise broken, and nothing in the program calls it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{Destination, Folder, is_temp_name};
use crate::meta::{Kind, Meta, Time};

/// A source file of `data` to copy from.
fn source(data: &[u8]) -> File {
    let mut f = tempfile::tempfile().expect("tempfile");
    f.write_all(data).expect("write");
    f
}

fn meta_for(size: u64, mtime: Time) -> Meta {
    Meta {
        kind: Kind::File,
        size,
        mode: 0o640,
        uid: 0,
        gid: 0,
        atime: mtime,
        mtime,
        ctime: mtime,
        dev: 0,
        ino: 0,
    }
}

/// Stages, fills and finishes a copy of `data` that will join `name`'s family.
fn staged(folder: &dyn Folder, name: &[u8], data: &[u8]) -> Box<dyn super::Staged> {
    let src = source(data);
    let mut s = folder.stage(name, 0o640).expect("stage");
    assert_eq!(
        s.copy_from(&src, data.len() as u64).expect("copy"),
        data.len() as u64
    );
    let when = Time {
        sec: 1_700_000_000,
        nsec: 123_456_789,
    };
    s.set_meta(&meta_for(data.len() as u64, when), &src)
        .expect("meta");
    s.close().expect("close");
    s.sync().expect("sync");
    s
}

fn read(folder: &dyn Folder, name: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    folder
        .open_read(name)
        .expect("open")
        .read_to_end(&mut out)
        .expect("read");
    out
}

/// What every destination promises, in a fresh, empty destination.
pub(crate) fn promises(dest: &dyn Destination) {
    let root = dest
        .folder(Path::new(""))
        .expect("root")
        .expect("the root exists");
    assert!(visible(&*root).is_empty(), "a fresh destination is empty");

    // Published names are listed, with their contents and the times given.
    let mut a = staged(&*root, b"a.txt", b"first");
    a.publish(b"a.txt").expect("publish");
    assert_eq!(visible(&*root), vec![b"a.txt".to_vec()]);
    assert_eq!(read(&*root, b"a.txt"), b"first");
    let m = root.stat(b"a.txt").expect("stat");
    assert_eq!((m.kind, m.size), (Kind::File, 5));
    assert_eq!(m.mtime.sec, 1_700_000_000);

    // Publishing never replaces: a taken name is reported, and the copy stays staged for
    // another one.
    let mut b = staged(&*root, b"a.txt", b"second");
    let taken = b.publish(b"a.txt").expect_err("a taken name");
    assert_eq!(taken.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(read(&*root, b"a.txt"), b"first", "the first copy stays");
    b.publish(b"a_20261206_120000.txt").expect("the next name");
    assert_eq!(read(&*root, b"a_20261206_120000.txt"), b"second");

    // A copy dropped before it is published leaves nothing.
    drop(staged(&*root, b"gone.txt", b"never published"));
    assert_eq!(
        visible(&*root),
        vec![b"a.txt".to_vec(), b"a_20261206_120000.txt".to_vec()]
    );

    // The record of a deletion is made once, never over anything.
    root.create_empty(b"a_20261206_120001_deleted.txt")
        .expect("record");
    let again = root
        .create_empty(b"a_20261206_120001_deleted.txt")
        .expect_err("made twice");
    assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(
        root.stat(b"a_20261206_120001_deleted.txt")
            .expect("stat")
            .size,
        0
    );

    // Folders are made once, and a file is never taken for one.
    let sub = root
        .child(OsStr::new("sub"), true)
        .expect("make")
        .expect("made");
    assert!(sub.created);
    let again = root
        .child(OsStr::new("sub"), true)
        .expect("open")
        .expect("there");
    assert!(!again.created);
    assert!(root.child(OsStr::new("a.txt"), false).is_err());
    assert!(
        root.child(OsStr::new("missing"), false)
            .expect("ok")
            .is_none()
    );
    assert_eq!(
        root.subfolders().expect("subfolders"),
        vec![b"sub".to_vec()]
    );

    // A copy named from another elsewhere (a moved file's) holds its bytes, never replaces,
    // and leaves the first as it was.
    if dest.capabilities().link {
        let folder = sub.folder.clone();
        let from_file = root.open_read(b"a_20261206_120000.txt").expect("open");
        let from = super::Elsewhere {
            rel: Path::new(""),
            name: b"a_20261206_120000.txt",
            file: &from_file,
        };
        folder.link(&from, b"moved.txt").expect("link");
        assert_eq!(read(&*folder, b"moved.txt"), b"second");
        let twice = folder.link(&from, b"moved.txt").expect_err("taken");
        assert_eq!(twice.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read(&*root, b"a_20261206_120000.txt"), b"second");
        assert_eq!(folder.stat(b"moved.txt").expect("stat").size, 6);
    }

    // Setting aside never replaces either.
    let moved = root.set_aside(b"a.txt", b"a_20261206_120000.txt");
    assert_eq!(
        moved.expect_err("taken").kind(),
        io::ErrorKind::AlreadyExists
    );
    root.set_aside(b"a.txt", b"a_20261206_110000.txt")
        .expect("aside");
    assert_eq!(read(&*root, b"a_20261206_110000.txt"), b"first");

    // A version can be pruned; a folder never is.
    root.remove(b"a_20261206_110000.txt").expect("prune");
    assert!(root.remove(b"sub").is_err());

    // Symlinks, where the destination holds them, keep their targets.
    if dest.capabilities().symlinks {
        let link = meta_for(
            0,
            Time {
                sec: 1_700_000_000,
                nsec: 0,
            },
        );
        root.symlink(b"a_20261206_120000.txt", b"latest", &link)
            .expect("symlink");
        assert_eq!(
            root.read_link(b"latest").expect("read"),
            b"a_20261206_120000.txt"
        );
        assert!(
            root.symlink(b"x", b"latest", &link).is_err(),
            "never replaced"
        );
    }
    dest.sync_all().expect("sync all");
    assert!(dest.still_there().is_ok());
}

/// The names a listing shows, but for temporary files, sorted.
fn visible(folder: &dyn Folder) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = folder
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| !is_temp_name(n))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_memory_destination_keeps_the_promises() {
        promises(&super::super::mem::Mem::new(Path::new("/mem")));
    }

    #[test]
    fn a_local_folder_keeps_the_promises() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let local = super::super::local::Local::open(tmp.path()).expect("open");
        promises(&local);
    }
}
