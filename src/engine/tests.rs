//! The engine against the in-memory destination: what a pass does when a name is taken under
//! it, a batch's sync fails, the destination is full, a file becomes a folder, a folder comes
//! back. Each runs in milliseconds, without root or mounts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Engine, Settings};
use crate::config::Limits;
use crate::dest::mem::Mem;
use crate::error::{Failure, Op};
use crate::exclude::Exclude;
use crate::meta::Kind;
use crate::outcome::{Event, Outcome};
use crate::scan::Tree;

/// An engine from `src` into the in-memory `dest`, as `once` runs it.
pub(crate) fn engine(src: &Path, dest: &Mem) -> Engine {
    let tree = Tree {
        src: src.to_path_buf(),
        skip: Vec::new(),
        exclude: Exclude::none(),
        walk_open: 64,
    };
    let settings = Settings {
        checksum: false,
        limits: Limits::new(2, 1024),
        dry_run: false,
        each_unchanged: true,
        lock_patience: Duration::ZERO,
    };
    Engine::new(
        tree,
        Arc::new(dest.clone()),
        settings,
        Arc::new(AtomicBool::new(false)),
    )
}

/// Runs a full pass and returns what became of each entry.
fn pass(engine: &Engine) -> Vec<Event> {
    let mut out = Vec::new();
    engine.pass(&mut |note| out.extend(note.into_event()));
    out
}

fn copies(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Copied(_)))
        .count()
}

fn src_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (rel, data) in files {
        let p = tmp.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, data).expect("write");
    }
    tmp
}

fn names(dest: &Mem) -> Vec<String> {
    dest.paths()
        .into_iter()
        .map(|(p, kind)| {
            let mut s = p.to_string_lossy().into_owned();
            if kind == Kind::Dir {
                s.push('/');
            }
            s
        })
        .collect()
}

/// Waits (bounded) for the clock to pass into the next second, so that a version stamp moves.
fn next_second() {
    let now = chrono::Local::now().timestamp();
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while chrono::Local::now().timestamp() == now && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_name_taken_just_before_publishing_makes_the_copy_take_the_next_free_one() {
    let src = src_tree(&[("a.txt", "mine")]);
    let dest = Mem::new(Path::new("/dst"));
    dest.faults()
        .taken
        .lock()
        .expect("lock")
        .insert(b"a.txt".to_vec());
    let events = pass(&engine(src.path(), &dest));
    let copied: Vec<&PathBuf> = events
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Copied(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(copied.len(), 1, "{events:?}");
    let to = copied[0].file_name().expect("name").to_string_lossy();
    assert!(to.starts_with("a_") && to.ends_with(".txt"), "{to}");
    assert_eq!(dest.read(Path::new("a.txt")).expect("theirs"), b"");
    assert_eq!(dest.read(&Path::new("").join(&*to)).expect("ours"), b"mine");
}

#[test]
fn a_failed_batch_sync_publishes_nothing_and_fails_every_copy_in_it() {
    let src = src_tree(&[("a.txt", "a"), ("b.txt", "b"), ("c.txt", "c")]);
    let dest = Mem::new(Path::new("/dst"));
    dest.faults().sync_fails.store(true, Ordering::Relaxed);
    let events = pass(&engine(src.path(), &dest));
    let failed = events
        .iter()
        .filter(|e| {
            matches!(
                &e.outcome,
                Outcome::Failed(Failure::Io { op: Op::Sync, .. })
            )
        })
        .count();
    assert_eq!(failed, 3, "{events:?}");
    assert!(names(&dest).is_empty(), "{:?}", names(&dest));
    // The next pass, with the disk well again, copies them.
    dest.faults().sync_fails.store(false, Ordering::Relaxed);
    let events = pass(&engine(src.path(), &dest));
    assert_eq!(copies(&events), 3);
}

#[test]
fn a_full_destination_stops_writing_and_every_file_left_is_counted_not_copied() {
    let src = src_tree(&[("a.txt", "a"), ("b.txt", "b")]);
    let dest = Mem::new(Path::new("/dst"));
    dest.faults().full.store(true, Ordering::Relaxed);
    let engine = engine(src.path(), &dest);
    let events = pass(&engine);
    assert!(engine.was_full());
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Failed(Failure::DestinationFull)))
            .count(),
        2,
        "{events:?}"
    );
    assert!(names(&dest).is_empty(), "{:?}", names(&dest));
}

#[test]
fn folders_get_their_source_s_times_once_their_contents_are_done() {
    let src = src_tree(&[("d/e/f.txt", "f")]);
    filetime::set_file_mtime(
        src.path().join("d/e"),
        filetime::FileTime::from_unix_time(1_600_000_000, 0),
    )
    .expect("set time");
    filetime::set_file_mtime(
        src.path().join("d"),
        filetime::FileTime::from_unix_time(1_500_000_000, 0),
    )
    .expect("set time");
    let dest = Mem::new(Path::new("/dst"));
    pass(&engine(src.path(), &dest));
    let folder = |rel: &str| {
        use crate::dest::Destination;
        dest.folder(Path::new(rel))
            .expect("folder")
            .expect("there")
            .meta()
            .expect("meta")
    };
    // Set after the file was published into it, which would have moved it.
    assert_eq!(folder("d/e").mtime.sec, 1_600_000_000);
    assert_eq!(folder("d").mtime.sec, 1_500_000_000);
}

#[test]
fn a_file_that_becomes_a_folder_moves_aside_and_its_deletion_is_recorded() {
    let src = src_tree(&[("x", "a file")]);
    let dest = Mem::new(Path::new("/dst"));
    pass(&engine(src.path(), &dest));
    next_second();
    fs::remove_file(src.path().join("x")).expect("rm");
    fs::create_dir(src.path().join("x")).expect("mkdir");
    fs::write(src.path().join("x/in"), "inside").expect("write");
    pass(&engine(src.path(), &dest));
    let got = names(&dest);
    assert!(got.contains(&"x/".to_string()), "{got:?}");
    assert!(got.contains(&"x/in".to_string()), "{got:?}");
    assert_eq!(
        got.iter().filter(|n| n.ends_with("_deleted")).count(),
        1,
        "{got:?}"
    );
    assert_eq!(
        got.iter()
            .filter(|n| n.starts_with("x_") && !n.ends_with("_deleted"))
            .count(),
        1,
        "the file's copy moved aside: {got:?}"
    );
}

#[test]
fn a_folder_that_comes_back_after_its_deletion_has_its_files_copied_again() {
    let src = src_tree(&[("p/f.txt", "same")]);
    let dest = Mem::new(Path::new("/dst"));
    pass(&engine(src.path(), &dest));
    next_second();
    let aside = tempfile::tempdir().expect("tempdir");
    fs::rename(src.path().join("p"), aside.path().join("p")).expect("mv out");
    let events = pass(&engine(src.path(), &dest));
    assert!(
        events
            .iter()
            .any(|e| matches!(e.outcome, Outcome::Deleted(_))),
        "{events:?}"
    );
    next_second();
    fs::rename(aside.path().join("p"), src.path().join("p")).expect("mv back");
    let events = pass(&engine(src.path(), &dest));
    assert_eq!(
        copies(&events),
        1,
        "unchanged, but its copy is from before the folder's deletion: {events:?}"
    );
    // And only once.
    let events = pass(&engine(src.path(), &dest));
    assert_eq!(copies(&events), 0, "{events:?}");
}

/// Bytes that differ with `seed`, `len` of them.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

#[test]
fn a_file_moved_in_src_takes_its_old_copy_without_being_copied_again() {
    let src = src_tree(&[]);
    let data = noise(128 << 10, 1);
    fs::create_dir_all(src.path().join("a")).expect("mkdir");
    fs::write(src.path().join("a/big.bin"), &data).expect("write");
    let dest = Mem::new(Path::new("/dst"));
    pass(&engine(src.path(), &dest));
    fs::create_dir_all(src.path().join("b")).expect("mkdir");
    fs::rename(src.path().join("a/big.bin"), src.path().join("b/big.bin")).expect("mv");
    let events = pass(&engine(src.path(), &dest));
    assert_eq!(copies(&events), 1, "{events:?}");
    assert_eq!(dest.links(), 1, "named from a/big.bin's copy: {events:?}");
    assert!(dest.read(Path::new("b/big.bin")).expect("moved") == data);
    assert!(dest.read(Path::new("a/big.bin")).expect("old") == data);
}

#[test]
fn a_look_alike_of_a_copy_elsewhere_is_copied_never_named_from_it() {
    let src = src_tree(&[]);
    let dest = Mem::new(Path::new("/dst"));
    let (old, new) = (noise(128 << 10, 1), noise(128 << 10, 2));
    fs::write(src.path().join("old.bin"), &old).expect("write");
    pass(&engine(src.path(), &dest));
    // Same size and time, other bytes; and the same bytes under another mode.
    let time = filetime::FileTime::from_last_modification_time(
        &fs::metadata(src.path().join("old.bin")).expect("stat"),
    );
    fs::write(src.path().join("other.bin"), &new).expect("write");
    filetime::set_file_mtime(src.path().join("other.bin"), time).expect("mtime");
    fs::write(src.path().join("private.bin"), &old).expect("write");
    fs::set_permissions(
        src.path().join("private.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    filetime::set_file_mtime(src.path().join("private.bin"), time).expect("mtime");
    let events = pass(&engine(src.path(), &dest));
    assert_eq!(copies(&events), 2, "{events:?}");
    assert_eq!(dest.links(), 0, "{events:?}");
    assert!(dest.read(Path::new("other.bin")).expect("copy") == new);
    assert!(dest.read(Path::new("private.bin")).expect("copy") == old);
}

#[test]
fn files_of_one_size_and_time_moved_together_each_take_their_own_old_copy() {
    let src = src_tree(&[]);
    let dest = Mem::new(Path::new("/dst"));
    fs::create_dir_all(src.path().join("a")).expect("mkdir");
    let time = filetime::FileTime::from_unix_time(1_700_000_000, 0);
    for (name, seed) in [("x.bin", 1), ("y.bin", 2), ("z.bin", 3)] {
        let p = src.path().join("a").join(name);
        fs::write(&p, noise(128 << 10, seed)).expect("write");
        filetime::set_file_mtime(&p, time).expect("mtime");
    }
    pass(&engine(src.path(), &dest));
    fs::rename(src.path().join("a"), src.path().join("b")).expect("mv");
    let events = pass(&engine(src.path(), &dest));
    assert_eq!(copies(&events), 3, "{events:?}");
    assert_eq!(dest.links(), 3, "each named from its own copy: {events:?}");
    for (name, seed) in [("x.bin", 1), ("y.bin", 2), ("z.bin", 3)] {
        let got = dest.read(&Path::new("b").join(name)).expect("moved");
        assert!(got == noise(128 << 10, seed), "{name}");
    }
}
