//! What versions cost: on a destination that can share blocks (Btrfs, XFS with reflink), a new
//! version of a big file that changed a little costs what changed, and every older version
//! still reads back byte for byte. Elsewhere (ext4) versions are whole copies, as before. A file
//! or folder moved in SRC costs no data where DST can clone or hard-link (ext4, NTFS).

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::family;
use common::mounts::{Fs, Mounted, env_on};

const SIZE: usize = 32 << 20;
const MIB: usize = 1 << 20;

/// Bytes in use on the filesystem at `path`.
fn used(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

fn sync() {
    let ok = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "sync");
}

/// Deterministic bytes that do not compress or repeat.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Five versions of a file of `size` bytes, each with a thirty-second of it rewritten; returns
/// how much DST grew after the first copy, the probe's line and the bytes `backup du` finds
/// shared, having checked every version byte for byte and du's other totals.
fn five_versions(fs: Fs, size: usize) -> Option<(u64, String, u64)> {
    let (m, env) = env_on(fs, "backup")?;
    let mut contents = noise(size, 1);
    let piece = size / 32;
    let path = env.write("disk.img", &contents);
    let first = env.once(&["-v"]);
    first.code(0);
    let probe = first
        .stderr
        .lines()
        .find(|l| l.starts_with("Destination "))
        .unwrap_or_default()
        .to_string();
    sync();
    let before = used(&m.path);
    let mut expected = vec![contents.clone()];
    for i in 1..=5u64 {
        common::next_second();
        let at = (i as usize) * (size / 6) + 12_345;
        let patch = noise(piece, 100 + i);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.seek(SeekFrom::Start(at as u64)).expect("seek");
        f.write_all(&patch).expect("write");
        drop(f);
        contents[at..at + piece].copy_from_slice(&patch);
        let r = env.once(&[]);
        r.code(0);
        assert_eq!(r.copied().len(), 1, "{}", r.context());
        expected.push(contents.clone());
    }
    sync();
    let grew = used(&m.path).saturating_sub(before);
    let versions = family(&env.dst, "disk.img");
    assert_eq!(versions.len(), 6, "{versions:?}");
    for (name, want) in versions.iter().zip(&expected) {
        let got = fs::read(env.dst.join(name)).expect("read a version");
        assert!(
            got == *want,
            "{name} does not hold what it held when it was made"
        );
    }
    common::verify_clean(&env);
    let du = common::du_json(&env);
    let total = du.last().expect("a total");
    assert_eq!(total["newest"], size as u64, "{du:?}");
    assert_eq!(total["older"], 5 * size as u64, "{du:?}");
    let shared = total["shared"].as_u64().expect("shared");
    eprintln!(
        "{}: DST grew {} KiB for 5 versions; du: {} KiB shared",
        fs.name(),
        grew >> 10,
        shared >> 10
    );
    Some((grew, probe, shared))
}

#[test]
fn on_btrfs_a_new_version_costs_what_changed() {
    let Some((grew, probe, shared)) = five_versions(Fs::Btrfs, SIZE) else {
        return;
    };
    assert!(probe.contains("clones yes"), "{probe}");
    // Every version but the last shares most of its blocks with the next.
    assert!(shared >= 5 * SIZE as u64, "du: {} KiB shared", shared >> 10);
    // 5 MiB rewritten; whole copies would be 160 MiB. Btrfs keeps its metadata twice.
    assert!(grew <= 12 * MIB as u64, "DST grew {} KiB", grew >> 10);
}

#[test]
fn on_xfs_with_reflink_a_new_version_costs_what_changed() {
    let Some((grew, probe, shared)) = five_versions(Fs::Xfs, SIZE) else {
        return;
    };
    assert!(probe.contains("clones yes"), "{probe}");
    assert!(shared >= 5 * SIZE as u64, "du: {} KiB shared", shared >> 10);
    assert!(grew <= 10 * MIB as u64, "DST grew {} KiB", grew >> 10);
}

#[test]
fn on_ext4_versions_are_whole_copies_and_read_back_whole() {
    // The test image is 64 MiB: six whole copies of 6 MiB fit.
    let size = 6 * MIB;
    let Some((grew, probe, shared)) = five_versions(Fs::Ext4, size) else {
        return;
    };
    assert!(probe.contains("clones no"), "{probe}");
    assert_eq!(shared, 0, "nothing is shared on ext4");
    assert!(grew >= 5 * size as u64, "DST grew {} KiB", grew >> 10);
}

#[test]
fn on_btrfs_a_clone_refused_is_copied_whole_and_said_once() {
    let Some((_m, env)) = env_on(Fs::Btrfs, "backup") else {
        return;
    };
    let mut contents = noise(2 * MIB, 7);
    let path = env.write("f.bin", &contents);
    env.once(&[]).code(0);
    // New files in DST get copy-on-write off; Btrfs refuses to clone those from the copy before.
    let chattr = std::process::Command::new("chattr")
        .arg("+C")
        .arg(&env.dst)
        .status();
    if !chattr.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: chattr +C does not work here");
        return;
    }
    let mut said = 0;
    for i in 1..=2u64 {
        common::next_second();
        contents[(i as usize) * 4096] ^= 0xff;
        fs::write(&path, &contents).expect("write");
        let r = env.once(&[]);
        r.code(0);
        said += r
            .stderr
            .matches("cannot share blocks with its copy before")
            .count();
        let newest = family(&env.dst, "f.bin");
        let got = fs::read(env.dst.join(newest.last().expect("a version"))).expect("read");
        assert!(got == contents, "the newest version holds the file");
    }
    // The first refusal is said; the next version (copy-on-write off like the one before) clones.
    assert_eq!(said, 1);
}

/// A folder of 8 files of 2 MiB renamed in SRC, one of them also changed, then a file moved to
/// another folder, each followed by a pass: returns how much DST grew for the moves (the changed
/// file's new copy, 2 MiB, included), having checked every copy byte for byte.
fn moved(fs: Fs) -> Option<(u64, Mounted, common::Env)> {
    let (m, env) = env_on(fs, "backup")?;
    let files: Vec<Vec<u8>> = (0..8u64).map(|i| noise(2 * MIB, 40 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        env.write(format!("photos/p{i}.jpg"), data);
    }
    env.write("inbox/scan.pdf", noise(2 * MIB, 99));
    env.once(&[]).code(0);
    sync();
    let before = used(&m.path);

    fs::rename(env.src.join("photos"), env.src.join("pictures")).expect("rename");
    let changed = noise(2 * MIB, 77);
    fs::write(env.src.join("pictures/p3.jpg"), &changed).expect("change");
    fs::create_dir_all(env.src.join("archive")).expect("archive");
    fs::rename(
        env.src.join("inbox/scan.pdf"),
        env.src.join("archive/scan.pdf"),
    )
    .expect("move across folders");
    let r = env.once(&[]);
    r.code(0);
    assert_eq!(r.copied().len(), 9, "{}", r.context());
    sync();
    let grew = used(&m.path).saturating_sub(before);

    for (i, data) in files.iter().enumerate() {
        let got = fs::read(env.dst.join(format!("pictures/p{i}.jpg"))).expect("moved copy");
        let want = if i == 3 { &changed } else { data };
        assert!(got == *want, "pictures/p{i}.jpg holds what SRC holds");
        let old = fs::read(env.dst.join(format!("photos/p{i}.jpg"))).expect("old copy");
        assert!(old == *data, "photos/p{i}.jpg still holds what it held");
    }
    assert_eq!(
        fs::read(env.dst.join("archive/scan.pdf")).expect("moved"),
        noise(2 * MIB, 99)
    );
    common::verify_clean(&env);
    eprintln!(
        "{}: DST grew {} KiB for 18 MiB moved (2 MiB of it changed)",
        fs.name(),
        grew >> 10
    );
    Some((grew, m, env))
}

#[test]
fn on_btrfs_a_moved_folder_and_a_moved_file_cost_no_data() {
    let Some((grew, _m, _env)) = moved(Fs::Btrfs) else {
        return;
    };
    // The changed file's 2 MiB, Btrfs's metadata (kept twice) and the deletion records.
    assert!(grew <= 4 * MIB as u64, "DST grew {} KiB", grew >> 10);
}

#[test]
fn on_xfs_a_moved_folder_and_a_moved_file_cost_no_data() {
    let Some((grew, _m, _env)) = moved(Fs::Xfs) else {
        return;
    };
    assert!(grew <= 4 * MIB as u64, "DST grew {} KiB", grew >> 10);
}

/// Where DST has hard links but no clones, a moved file's copy is a second name for the copy at
/// the old place.
fn linked(env: &common::Env, a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        fs::metadata(env.dst.join(a)).expect("copy"),
        fs::metadata(env.dst.join(b)).expect("copy"),
    );
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[test]
fn on_ext4_a_moved_folder_and_a_moved_file_cost_no_data() {
    let Some((grew, _m, env)) = moved(Fs::Ext4) else {
        return;
    };
    assert!(grew <= 4 * MIB as u64, "DST grew {} KiB", grew >> 10);
    assert!(linked(&env, "photos/p0.jpg", "pictures/p0.jpg"));
    assert!(
        !linked(&env, "photos/p3.jpg", "pictures/p3.jpg"),
        "p3 changed"
    );
}

#[test]
fn on_ntfs_a_moved_folder_and_a_moved_file_cost_no_data() {
    let Some((grew, _m, env)) = moved(Fs::Ntfs) else {
        return;
    };
    assert!(grew <= 4 * MIB as u64, "DST grew {} KiB", grew >> 10);
    assert!(linked(&env, "inbox/scan.pdf", "archive/scan.pdf"));
}

#[test]
fn on_exfat_without_links_a_moved_folder_is_copied_again_whole() {
    let Some((grew, _m, _env)) = moved(Fs::Exfat) else {
        return;
    };
    assert!(grew >= 18 * MIB as u64, "DST grew {} KiB", grew >> 10);
}

/// A copy that is a hard link to an older version's copy breaks the link before its metadata
/// follows a change in SRC: the older version keeps its mode.
#[test]
fn a_linked_copy_whose_source_changes_mode_leaves_the_older_version_alone() {
    use std::os::unix::fs::PermissionsExt;
    let Some((_grew, _m, env)) = moved(Fs::Ext4) else {
        return;
    };
    let mode = |rel: &str| {
        fs::metadata(env.dst.join(rel))
            .expect("copy")
            .permissions()
            .mode()
            & 0o777
    };
    let before = mode("photos/p0.jpg");
    assert!(linked(&env, "photos/p0.jpg", "pictures/p0.jpg"));
    fs::set_permissions(
        env.src.join("pictures/p0.jpg"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let r = env.once(&[]);
    r.code(0);
    assert_eq!(
        r.copied().len(),
        0,
        "a change of mode is no new version: {}",
        r.context()
    );
    assert_eq!(mode("pictures/p0.jpg"), 0o600);
    assert_eq!(
        mode("photos/p0.jpg"),
        before,
        "the older version keeps its mode"
    );
    assert!(!linked(&env, "photos/p0.jpg", "pictures/p0.jpg"));
    assert_eq!(
        fs::read(env.dst.join("pictures/p0.jpg")).expect("copy"),
        fs::read(env.dst.join("photos/p0.jpg")).expect("copy"),
    );
    common::verify_clean(&env);
}

/// Under `watch`, a folder renamed in SRC lands at its new place as clones of the copies made
/// by the same watch (remembered as they were made).
#[test]
fn on_btrfs_a_folder_renamed_under_watch_costs_no_data() {
    let Some((m, env)) = env_on(Fs::Btrfs, "backup") else {
        return;
    };
    let files: Vec<Vec<u8>> = (0..4u64).map(|i| noise(2 * MIB, 60 + i)).collect();
    let w = common::Watch::start(&env, &["--debounce", "200ms"]);
    for (i, data) in files.iter().enumerate() {
        env.write(format!("photos/p{i}.jpg"), data);
    }
    let limit = std::time::Duration::from_secs(30);
    w.wait_for("the copies", limit, |_| {
        (0..4).all(|i| env.dst.join(format!("photos/p{i}.jpg")).exists())
    });
    sync();
    let before = used(&m.path);
    fs::rename(env.src.join("photos"), env.src.join("pictures")).expect("rename");
    w.wait_for("the copies at the new place", limit, |_| {
        (0..4).all(|i| {
            fs::read(env.dst.join(format!("pictures/p{i}.jpg"))).is_ok_and(|d| d == files[i])
        })
    });
    let (code, out, err) = w.stop(rustix::process::Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    sync();
    let grew = used(&m.path).saturating_sub(before);
    assert!(
        grew <= 2 * MIB as u64,
        "DST grew {} KiB for 8 MiB",
        grew >> 10
    );
}

/// A restore onto the filesystem that holds DST shares the copy's blocks (the kernel's
/// `copy_file_range` clones within Btrfs and XFS): it costs no data, and reads back whole.
fn restored_in_place(fs: Fs) -> Option<u64> {
    let (m, env) = env_on(fs, "backup")?;
    let data = noise(16 * MIB, 5);
    env.write("disk.img", &data);
    env.once(&[]).code(0);
    sync();
    let before = used(&m.path);
    let to = m.path.join("restored.img");
    let r = common::restore(&env, "disk.img", &to, "now");
    r.code(0);
    sync();
    let grew = used(&m.path).saturating_sub(before);
    assert!(fs::read(&to).expect("restored") == data, "restored whole");
    eprintln!(
        "{}: a restore of 16 MiB grew it {} KiB",
        fs.name(),
        grew >> 10
    );
    Some(grew)
}

#[test]
fn on_btrfs_and_xfs_a_restore_next_to_the_backup_costs_no_data() {
    for fs in [Fs::Btrfs, Fs::Xfs] {
        let Some(grew) = restored_in_place(fs) else {
            continue;
        };
        assert!(grew <= MIB as u64, "{}: grew {} KiB", fs.name(), grew >> 10);
    }
}
