//! A destination that comes and goes: `watch` over a drive that is unmounted (normally, or
//! lazily), replaced by another filesystem at the same path, mounted again, or filled up. Real
//! loop images, real unmounts, bounded waits, real signals.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::mounts::{Fs, Mounted};
use common::{Env, Watch, family, read, tree};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(30);

/// Mounts `fs`, with DST at `sub` below its root (empty: the mount point itself).
fn setup(fs: Fs, sub: &str) -> Option<(Mounted, Env)> {
    common::mounts::env_on(fs, sub)
}

/// Lets `span` pass while checking that `still` holds all along.
fn holds_for(span: Duration, mut still: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + span;
    !common::wait_until(span + Duration::from_secs(1), || {
        !still() || Instant::now() >= end
    }) || still()
}

/// Unmounted, changed meanwhile, mounted again: every change arrives once, nothing twice.
fn unmounted_and_back(fs: Fs, lazy: bool) {
    let Some((mut m, env)) = setup(fs, "backup") else {
        return;
    };
    env.write("keep.txt", "kept");
    let change = env.write("change.txt", "v1");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    w.wait_for("the first pass", LIMIT, |_| {
        read(&env.dst.join("change.txt")) == b"v1"
    });
    fs::write(&change, "v2, longer").expect("write");
    // Between batches: the second version's batch has printed its line.
    w.wait_for("the second version", LIMIT, |w| {
        family(&env.dst, "change.txt").len() == 2 && w.batches() >= 2
    });
    // Between batches nothing is held open on DST: a plain umount succeeds.
    m.unmount(lazy).expect("umount while watch runs");
    w.wait_for("the gone line", LIMIT, |w| {
        w.stderr().contains(&format!(
            "Destination {} is gone (unmounted?)",
            env.dst.display()
        ))
    });
    fs::write(&change, "v3, longer still").expect("write");
    env.write("new.txt", "new");
    env.write("newdir/inner.txt", "inner");
    w.wait_for("the waiting line", LIMIT, |w| {
        w.stdout().contains(" waiting for destination: ")
    });
    assert!(
        tree(&m.path).is_empty(),
        "wrote into the bare mount point\n{}",
        w.context()
    );
    m.mount_again().expect("mount again");
    w.wait_for("the changes on the destination", LIMIT, |_| {
        family(&env.dst, "change.txt").len() == 3
            && read(&env.dst.join("newdir/inner.txt")) == b"inner"
            && read(&env.dst.join("new.txt")) == b"new"
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    assert!(
        err.contains("is back; copying what changed meanwhile"),
        "{err}"
    );
    let fam = family(&env.dst, "change.txt");
    assert_eq!(read(&env.dst.join(&fam[2])), b"v3, longer still");
    assert_eq!(
        family(&env.dst, "keep.txt").len(),
        1,
        "an unchanged file copied again"
    );
    // keep, change v1, v2, v3, new, inner.
    assert!(out.contains("Successfully copied: 6\n"), "{out}");
    assert!(out.contains("Failed copies: 0\n"), "{out}");
    let temps = tree(&env.dst)
        .keys()
        .filter(|p| p.to_string_lossy().contains(".backup-tmp."))
        .count();
    assert_eq!(temps, 0);
}

#[test]
fn ext4_unmounted_and_mounted_again() {
    unmounted_and_back(Fs::Ext4, false);
}

#[test]
fn ext4_unmounted_lazily_and_mounted_again() {
    unmounted_and_back(Fs::Ext4, true);
}

#[test]
fn exfat_unmounted_and_mounted_again() {
    unmounted_and_back(Fs::Exfat, false);
}

#[test]
fn another_filesystem_at_the_same_path_is_never_written_into() {
    // DST is the mount point itself, as with /media/usb: after the unmount the path leads to the
    // bare mount point, and then to a fresh drive; neither is the destination.
    let Some((mut m, env)) = setup(Fs::Ext4, "") else {
        return;
    };
    env.write("a.txt", "one");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    // Between batches: the batch that copied it has printed its line.
    w.wait_for("the first copy", LIMIT, |w| {
        env.dst.join("a.txt").exists() && w.stdout().contains(" batch: copied 1,")
    });
    m.unmount(false).expect("umount");
    w.wait_for("the gone line", LIMIT, |w| {
        w.stderr()
            .contains("the path now leads to another filesystem")
    });
    fs::write(env.src.join("a.txt"), "two, while away").expect("write");
    let bare = || tree(&m.path).is_empty();
    assert!(
        holds_for(Duration::from_secs(2), bare),
        "wrote into the bare mount point"
    );
    m.mount_another().expect("mount a fresh filesystem");
    let fresh = tree(&m.path);
    w.wait_for("a line about the fresh filesystem", LIMIT, |w| {
        w.stderr()
            .matches("the path now leads to another filesystem")
            .count()
            >= 2
    });
    assert!(
        holds_for(Duration::from_secs(2), || tree(&m.path) == fresh),
        "wrote into another filesystem\n{}",
        w.context()
    );
    m.unmount(false).expect("umount the fresh one");
    m.mount_again().expect("mount the destination again");
    w.wait_for("the change on the destination", LIMIT, |_| {
        family(&env.dst, "a.txt").len() == 2
    });
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_full_destination_waits_for_space_and_then_copies_what_is_owed() {
    full_then_space(false);
}

#[test]
fn with_json_a_full_destination_and_its_return_are_destination_lines() {
    full_then_space(true);
}

/// A tmpfs DST of 1 MiB fills up under `watch`, is said to be full once (a line on stderr, or
/// with `--json` a `destination` object on stdout), and gets every owed copy once it grows.
fn full_then_space(json: bool) {
    let Some((env, small)) = common::small_dst("1m") else {
        return;
    };
    env.write("first.txt", "first");
    let args: &[&str] = if json {
        &["--debounce", "200ms", "--json"]
    } else {
        &["--debounce", "200ms"]
    };
    let w = Watch::start(&env, args);
    w.wait_for("the first pass", LIMIT, |_| {
        env.dst.join("first.txt").exists()
    });
    for i in 0..8 {
        env.write(format!("big{i}.bin"), vec![b'b'; 256 << 10]);
    }
    let full = if json {
        format!(
            "{{\"type\":\"destination\",\"state\":\"full\",\"dst\":\"{}\",\"not_copied\":",
            env.dst.display()
        )
    } else {
        format!(
            "Destination {} is full; waiting for space",
            env.dst.display()
        )
    };
    let said = |w: &Watch| if json { w.stdout() } else { w.stderr() };
    w.wait_for("the full line", LIMIT, |w| said(w).contains(&full));
    assert_eq!(
        said(&w).matches(&full).count(),
        1,
        "said once\n{}",
        w.context()
    );
    assert!(!w.stderr().contains("Failed: "), "{}", w.context());
    if json {
        assert!(
            !w.stderr().contains(" is full"),
            "not on stderr too\n{}",
            w.context()
        );
    }
    common::grow_to_8m(&small);
    w.wait_for("every owed copy", LIMIT, |_| {
        (0..8).all(|i| read(&env.dst.join(format!("big{i}.bin"))).len() == 256 << 10)
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    if json {
        assert!(out.contains("\"state\":\"has_space\""), "{out}");
    } else {
        assert!(err.contains("has space again"), "{err}");
    }
}

#[test]
fn a_copy_cut_off_by_a_lazy_unmount_leaves_nothing_half_written() {
    let Some((mut m, env)) = setup(Fs::Ext4, "backup") else {
        return;
    };
    env.write("small.txt", "small");
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    w.wait_for("the first copy", LIMIT, |w| {
        env.dst.join("small.txt").exists() && w.stdout().contains(" batch: copied 1,")
    });
    // 40 MiB of data (not a sparse file: its copy must take a while and fill blocks).
    fs::write(env.src.join("big.bin"), vec![7u8; 40 << 20]).expect("write");
    w.wait_for("the copy to start", LIMIT, |_| env.copying());
    m.unmount(true).expect("umount -l during the copy");
    w.wait_for("the gone line", LIMIT, |w| {
        w.stderr().contains(" is gone (unmounted?)")
    });
    // The batch is over and its handles closed: the detached filesystem is let go.
    m.mount_again().expect("mount again");
    w.wait_for("the big file, whole", LIMIT, |_| {
        fs::metadata(env.dst.join("big.bin")).is_ok_and(|md| md.len() == 40 << 20) && !env.copying()
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    assert_eq!(
        family(&env.dst, "big.bin").len(),
        1,
        "{:?}",
        tree(&env.dst).keys()
    );
    assert!(read(&env.dst.join("big.bin")).iter().all(|&b| b == 7));
}

#[test]
fn a_batch_that_finds_another_backup_writing_waits_for_it() {
    let env = Env::new();
    env.write("a.txt", "a");
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    w.wait_for("the first copy", LIMIT, |w| {
        env.dst.join("a.txt").exists() && w.stdout().contains(" batch: copied 1,")
    });
    // Another run's lock, as `backup once` takes it, held until told to let go.
    let dst = fs::File::open(&env.dst).expect("open DST");
    rustix::fs::flock(&dst, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    env.write("b.txt", "b");
    w.wait_for("the busy line", LIMIT, |w| {
        w.stderr()
            .contains("is in use: another backup is writing into it")
    });
    assert!(!env.dst.join("b.txt").exists());
    drop(dst);
    w.wait_for("b.txt once the lock is free", LIMIT, |_| {
        read(&env.dst.join("b.txt")) == b"b"
    });
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
}

/// SRC: 40 files of 8 KiB and one of 3 MiB.
fn forty_and_one(env: &Env) {
    for i in 0..40 {
        env.write(
            format!("small/f{i:02}.txt"),
            vec![b'a' + (i % 26) as u8; 8 << 10],
        );
    }
    env.write("big.bin", vec![b'b'; 3 << 20]);
}

/// What is free in the filesystem of `p` for root.
fn free_at(p: &std::path::Path) -> u64 {
    let st = rustix::fs::statvfs(p).expect("statvfs");
    st.f_bfree * st.f_frsize
}

/// Leaves `keep` bytes free in the filesystem mounted at `mnt`, with a file of zeros that a
/// backup never sees.
fn fill_up(mnt: &std::path::Path, keep: u64) {
    use std::io::Write;
    let mut f = fs::File::create(mnt.join("filler")).expect("filler");
    let chunk = vec![0u8; 256 << 10];
    while free_at(mnt) > keep + chunk.len() as u64 {
        f.write_all(&chunk).expect("fill");
        f.sync_all().expect("sync");
    }
}

/// The 40 small files land, the big one fails alone, said in one line and in the end's
/// warning; nothing is left half-written, and no "full" error stops the run.
fn the_files_that_fit_land(env: &Env) {
    forty_and_one(env);
    let r = env.once(&[]);
    r.code(1);
    assert_eq!(r.summary("Successfully copied"), 40, "{}", r.context());
    assert_eq!(r.summary("Failed copies"), 1, "{}", r.context());
    assert_eq!(r.stderr.matches("Failed: ").count(), 1, "{}", r.context());
    r.stderr_has("big.bin: does not fit in the destination (3145728 bytes; ")
        .stderr_has("warning: 1 file did not fit in the destination ")
        .stderr_has("the largest is 3.0 MiB");
    assert!(!r.stderr.contains("is full"), "{}", r.context());
    assert_eq!(env.dst_names("small").len(), 40);
    assert!(!env.dst.join("big.bin").exists());
    let left: Vec<String> = env
        .dst_names("")
        .into_iter()
        .filter(|n| n.contains("backup-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_file_larger_than_the_space_left_fails_alone_on_tmpfs() {
    let Some((env, _unmount)) = common::small_dst("2m") else {
        return;
    };
    the_files_that_fit_land(&env);
}

#[test]
fn a_file_larger_than_the_space_left_fails_alone_on_ext4() {
    let Some((m, env)) = setup(Fs::Ext4, "backup") else {
        return;
    };
    fill_up(&m.path, 2 << 20);
    the_files_that_fit_land(&env);
}

/// fusefat says nothing of its free space (`statvfs` shows no blocks at all), and a write that
/// runs out of it fails with `EPERM`, not `ENOSPC`: neither a file that does not fit nor a full
/// destination can be told apart from another error there. The file fails with the driver's
/// reason, the others go on, and nothing is left half-written. (The kernel's vfat says both,
/// and takes the way above.)
#[test]
fn on_fusefat_which_hides_its_space_what_fits_lands_and_nothing_is_half_written() {
    let Some((m, env)) = setup(Fs::Fat, "backup") else {
        return;
    };
    assert_eq!(rustix::fs::statvfs(&m.path).expect("statvfs").f_blocks, 0);
    // Filled through the driver itself, since it cannot say how much is free: about 1.5 MiB
    // of the image's 63 MiB of clusters are left.
    fs::write(m.path.join("filler"), vec![0u8; 123 << 19]).expect("filler");
    forty_and_one(&env);
    let r = env.once(&[]);
    r.code(1).stderr_has("big.bin: cannot copy: ");
    assert!(r.summary("Successfully copied") >= 30, "{}", r.context());
    for (path, node) in tree(&env.dst) {
        if let common::Node::File { len, .. } = node {
            let src = fs::metadata(env.src.join(&path)).expect("a source").len();
            assert_eq!(len, src, "{} is whole", path.display());
        }
    }
}

/// A file that runs out of space part way, larger than what was free when the run began, fails
/// alone too once its partial copy is gone, and the files that fit land.
#[test]
fn a_smaller_file_that_runs_out_of_space_fails_alone_too() {
    let Some((env, _unmount)) = common::small_dst("512k") else {
        return;
    };
    for i in 0..20 {
        env.write(format!("f{i:02}.txt"), vec![b'x'; 8 << 10]);
    }
    env.write("mid.bin", vec![b'm'; 700 << 10]);
    let r = env.once(&[]);
    r.code(1);
    assert_eq!(r.summary("Successfully copied"), 20, "{}", r.context());
    r.stderr_has("mid.bin: does not fit in the destination (716800 bytes; ");
    assert!(!r.stderr.contains("is full"), "{}", r.context());
}

/// Under `watch`, what fits is copied, the big file is said once, and it lands once the
/// destination has room, without a line per attempt.
#[test]
fn under_watch_a_file_that_did_not_fit_lands_once_there_is_room() {
    let Some((env, small)) = common::small_dst("2m") else {
        return;
    };
    let mnt = small.0.clone();
    forty_and_one(&env);
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    w.wait_for("the files that fit", LIMIT, |w| {
        w.stderr().contains("big.bin: does not fit") && env.dst_names("small").len() == 40
    });
    // Room comes in steps, the first too small for the big file.
    let remount = |size: &str| {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&mnt)
            .status()
            .expect("remount")
            .success();
        assert!(ok, "remount {size}");
    };
    remount("3m");
    assert!(
        holds_for(Duration::from_secs(3), || !env.dst.join("big.bin").exists()),
        "{}",
        w.context()
    );
    remount("8m");
    w.wait_for("the big file", LIMIT, |_| {
        read(&env.dst.join("big.bin")).len() == 3 << 20
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(err.matches("big.bin: does not fit").count(), 1, "{err}");
    assert!(!err.contains("is full"), "{err}");
    assert!(!err.contains("did not fit"), "it landed: {err}");
    assert_eq!(code, Some(0), "it landed: no failure is left\n{out}\n{err}");
    assert!(
        out.trim_end().ends_with("Failed copies: 0"),
        "the totals count what is still wrong\n{out}"
    );
}

/// Files that each fit but not all together fill the destination: that is said once, as full,
/// and the small files still land in what is left, whichever order the workers take.
#[test]
fn once_full_the_files_that_still_fit_land() {
    let Some((env, _unmount)) = common::small_dst("1m") else {
        return;
    };
    for i in 0..4 {
        env.write(format!("part{i}.bin"), vec![b'p'; 300 << 10]);
    }
    for i in 0..10 {
        env.write(format!("notes/n{i}.txt"), vec![b'n'; 4 << 10]);
    }
    let r = env.once(&[]);
    r.code(1);
    assert_eq!(r.stderr.matches(" is full (").count(), 1, "{}", r.context());
    assert!(!r.stderr.contains("Failed: "), "{}", r.context());
    assert_eq!(env.dst_names("notes").len(), 10, "{}", r.context());
    let parts = env
        .dst_names("")
        .iter()
        .filter(|n| n.starts_with("part"))
        .count();
    assert_eq!(parts, 3, "{}", r.context());
}

/// A destination out of inodes is full too: folders that cannot be made are not a failure each,
/// but the one line that says DST is full, with how many files were not copied.
#[test]
fn a_destination_out_of_inodes_is_said_to_be_full_once() {
    let env = Env::new();
    let mnt = env.root().join("few-inodes");
    if !common::mount_tmpfs(&mnt, "size=4m,nr_inodes=24") {
        return;
    }
    let _mounted = common::Mount(mnt.clone());
    for i in 0..40 {
        env.write(format!("g{i:02}/d/f.txt"), "x");
    }
    let dst = mnt.join("dst");
    let out = std::process::Command::new(common::bin())
        .args(["once", "-q"])
        .arg(&env.src)
        .arg(&dst)
        .output()
        .expect("once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches(&format!("error: destination {} is full (", dst.display()))
            .count(),
        1,
        "{err}"
    );
    assert!(
        !err.contains("Failed: "),
        "one line, not one per folder:\n{err}"
    );
}
