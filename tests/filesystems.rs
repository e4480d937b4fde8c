//! The drives people plug in, as destinations: real filesystems on loop images (ext4, XFS, Btrfs
//! with the kernel's drivers; NTFS, exFAT and FAT32 with Debian's FUSE drivers) and sshfs to an
//! sshd on 127.0.0.1. Each gets the same tree, with names and kinds of entry that some of them
//! cannot hold, and the same runs: a first copy, reruns that copy nothing, a change, verify,
//! restore and watch. A filesystem that cannot be mounted here is skipped with the reason.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::mounts::{Fs, Mounted};
use common::{Env, Watch, family, tree};
use rustix::process::Signal;

/// What a destination cannot hold of the test tree, as its driver behaves.
struct Expect {
    /// Names that fail, and the words of the reason.
    refused: &'static [(&'static str, &'static str)],
    /// `Readme.md` fails beside `README.md`.
    case_insensitive: bool,
    symlinks: bool,
}

const EVERYTHING: Expect = Expect {
    refused: &[],
    case_insensitive: false,
    symlinks: true,
};

/// Mounts `fs` and puts DST on it; `None` (with the reason printed) where that cannot be done.
fn setup(fs: Fs) -> Option<(Mounted, Env)> {
    let (m, env) = common::mounts::env_on(fs, "backup")?;
    env.write("a.txt", "alpha");
    env.write("sub/b.txt", "bravo");
    env.write("README.md", "upper");
    env.write("Readme.md", "mixed");
    env.write("x:y.txt", "colon");
    env.write("é.txt", "accent");
    symlink("a.txt", env.src.join("link")).expect("symlink");
    Some((m, env))
}

/// The `--exclude` arguments that leave out what the destination cannot hold.
fn leave_out(expect: &Expect) -> Vec<String> {
    let mut globs: Vec<&str> = expect.refused.iter().map(|(n, _)| *n).collect();
    if expect.case_insensitive {
        globs.push("Readme.md");
    }
    if !expect.symlinks {
        globs.push("link");
    }
    globs
        .iter()
        .flat_map(|g| ["-x".to_string(), format!("/{g}")])
        .collect()
}

fn exercise(fs: Fs, expect: Expect) {
    let Some((_mount, env)) = setup(fs) else {
        return;
    };
    let failures = expect.refused.len() + usize::from(expect.case_insensitive);
    let code = if failures > 0 { 1 } else { 0 };

    // First run: everything the destination can hold arrives; the rest says why not.
    let first = env.once(&[]);
    first.code(code);
    let read = |rel: &str| fs::read(env.dst.join(rel)).unwrap_or_default();
    assert_eq!(read("a.txt"), b"alpha", "{}", first.context());
    assert_eq!(read("sub/b.txt"), b"bravo");
    assert_eq!(read("README.md"), b"upper");
    for (name, why) in expect.refused {
        first.stderr_has(&format!(
            "Failed: {}: the destination (",
            env.src.join(name).display()
        ));
        first.stderr_has(why);
        assert!(!env.dst.join(name).exists(), "{name} on {}", fs.name());
    }
    if expect.case_insensitive {
        first.stderr_has(&format!(
            "Failed: {}: the destination (",
            env.src.join("Readme.md").display()
        ));
        first.stderr_has("README.md is backed up under the same name");
        assert_eq!(family(&env.dst, "README.md").len(), 1);
    } else {
        assert_eq!(read("Readme.md"), b"mixed");
        assert_eq!(read("x:y.txt"), b"colon");
    }
    if expect.symlinks {
        assert_eq!(
            fs::read_link(env.dst.join("link")).expect("link"),
            Path::new("a.txt")
        );
    } else {
        first.stderr_has(&format!(
            "Skipped: {} (symlink: the destination cannot hold symlinks)",
            env.src.join("link").display()
        ));
    }
    assert_eq!(first.summary("Failed copies"), failures as u64);

    // Nothing changed: nothing is copied, twice, and the same failures, no more.
    let settled = tree(&env.dst);
    for _ in 0..2 {
        let again = env.once(&[]);
        again.code(code);
        assert_eq!(
            again.summary("Successfully copied"),
            0,
            "{}",
            again.context()
        );
        assert_eq!(again.summary("Failed copies"), failures as u64);
        assert_eq!(tree(&env.dst), settled, "{}", again.context());
    }

    // A change: exactly one new version, the old one kept.
    fs::write(env.src.join("a.txt"), "alpha, changed").expect("write");
    let changed = env.once(&[]);
    assert_eq!(
        changed.summary("Successfully copied"),
        1,
        "{}",
        changed.context()
    );
    let fam = family(&env.dst, "a.txt");
    assert_eq!(fam.len(), 2, "{fam:?}");
    assert_eq!(read(&fam[0]), b"alpha");
    assert_eq!(read(&fam[1]), b"alpha, changed");

    // verify holds for all that the destination can hold.
    let mut verify = env.cmd("verify");
    verify.args(leave_out(&expect));
    let checked = common::Run::of(verify.output().expect("verify"), &env);
    checked.code(0);

    // restore gives the newest version back.
    let out = env.root().join("restored.txt");
    let restore = std::process::Command::new(common::bin())
        .arg("restore")
        .arg(&env.dst)
        .arg("a.txt")
        .arg("--to")
        .arg(&out)
        .output()
        .expect("restore");
    assert!(restore.status.success(), "{restore:?}");
    assert_eq!(fs::read(&out).expect("restored"), b"alpha, changed");

    // watch mirrors a change.
    let mut args = vec!["--debounce".to_string(), "200ms".to_string()];
    args.extend(leave_out(&expect));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = Watch::start(&env, &args);
    fs::write(env.src.join("sub/b.txt"), "bravo, changed").expect("write");
    w.wait_for(
        "the change on the destination",
        Duration::from_secs(30),
        |_| family(&env.dst.join("sub"), "b.txt").len() == 2,
    );
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    let fam = family(&env.dst.join("sub"), "b.txt");
    assert_eq!(read(&format!("sub/{}", fam[1])), b"bravo, changed");
}

#[test]
fn ext4() {
    exercise(Fs::Ext4, EVERYTHING);
}

#[test]
fn xfs() {
    exercise(Fs::Xfs, EVERYTHING);
}

#[test]
fn btrfs() {
    exercise(Fs::Btrfs, EVERYTHING);
}

#[test]
fn ntfs() {
    // ntfs-3g (without its windows_names option) takes every name and is case-sensitive.
    exercise(Fs::Ntfs, EVERYTHING);
}

#[test]
fn exfat() {
    exercise(
        Fs::Exfat,
        Expect {
            refused: &[("x:y.txt", "cannot hold this name (':' not allowed)")],
            case_insensitive: true,
            symlinks: false,
        },
    );
}

#[test]
fn fat32() {
    exercise(
        Fs::Fat,
        Expect {
            refused: &[
                ("x:y.txt", "cannot hold this name (':' not allowed)"),
                (
                    "é.txt",
                    "cannot hold this name (characters outside ASCII not allowed)",
                ),
            ],
            case_insensitive: true,
            symlinks: false,
        },
    );
}

#[test]
fn sshfs() {
    exercise(Fs::Sshfs, EVERYTHING);
}

#[test]
fn a_file_over_fat32s_limit_fails_before_a_byte_is_written() {
    let Some((_mount, env)) = setup(Fs::Fat) else {
        return;
    };
    env.sparse("disk.img", 4_608 << 20);
    let run = env.once(&[]);
    run.code(1);
    run.stderr_has(&format!(
        "Failed: {}: 4831838208 bytes is larger than the destination (",
        env.src.join("disk.img").display()
    ));
    run.stderr_has("can hold (at most 4294967295 bytes in one file)");
    assert!(!env.dst.join("disk.img").exists());
    assert!(!env.copying(), "no temporary file is left");
}

#[test]
fn what_the_destination_can_hold_is_said_with_verbose() {
    let Some((_mount, env)) = setup(Fs::Exfat) else {
        return;
    };
    let run = env.once(&["-v"]);
    run.stderr_has(&format!(
        "Destination {}: exfat: times kept to ",
        env.dst.display()
    ));
    run.stderr_has("case-sensitive no");
    run.stderr_has("cannot keep permissions; copies keep contents and modification times");
    // A FUSE driver has no unnamed files: copies go under temporary names.
    assert!(!run.stderr.contains("unnamed"), "{}", run.context());
}

/// Where the kernel's driver has `O_TMPFILE`, copies are written unnamed and linked into place,
/// and `-v` says so; nothing named `.backup-tmp.*` is ever made for them.
#[test]
fn copies_are_written_unnamed_where_the_filesystem_can() {
    for fs in [Fs::Ext4, Fs::Xfs, Fs::Btrfs] {
        let Some((_mount, env)) = setup(fs) else {
            continue;
        };
        let run = env.once(&["-v"]);
        run.code(0);
        run.stderr_has("publish by linking an unnamed copy without replacing");
        assert_eq!(fs::read(env.dst.join("a.txt")).expect("copied"), b"alpha");
    }
}

/// Bytes a file takes on its filesystem.
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).expect("metadata").blocks() * 512
}

/// A 2 GiB disk image holding 1 MiB of data, on a 64 MiB drive (XFS: 320 MiB): copied as zeros
/// it failed with "No space left on device"; its holes now stay holes, on every filesystem that
/// keeps them, and a restore is sparse again, with the same bytes.
#[test]
fn a_sparse_file_takes_no_more_room_than_its_data() {
    for fs in [Fs::Ext4, Fs::Xfs, Fs::Btrfs, Fs::Ntfs] {
        let Some((mount, env)) = setup(fs) else {
            continue;
        };
        let size: u64 = 2 << 30;
        let img = env.sparse("disk.img", size);
        {
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new().write(true).open(&img).expect("open");
            let data: Vec<u8> = (0..1u32 << 19).map(|i| (i % 251) as u8).collect();
            f.write_all_at(&data, 0).expect("head");
            f.write_all_at(&data, 1 << 30).expect("middle");
        }
        let run = env.once(&[]);
        run.code(0);
        let copy = env.dst.join("disk.img");
        assert_eq!(
            fs::metadata(&copy).expect("copied").len(),
            size,
            "{}",
            fs.name()
        );
        assert!(
            allocated(&copy) <= allocated(&img) + (1 << 20),
            "{}: the copy takes {} bytes, its source {}",
            fs.name(),
            allocated(&copy),
            allocated(&img)
        );
        let checked = common::Run::of(
            env.cmd("verify")
                .arg("--checksum")
                .output()
                .expect("verify"),
            &env,
        );
        checked.code(0);

        let out = env.root().join("restored.img");
        let restore = std::process::Command::new(common::bin())
            .arg("restore")
            .arg(&env.dst)
            .arg("disk.img")
            .arg("--to")
            .arg(&out)
            .output()
            .expect("restore");
        assert!(restore.status.success(), "{}: {restore:?}", fs.name());
        assert!(
            allocated(&out) <= allocated(&img) + (1 << 20),
            "{}",
            fs.name()
        );
        let same = std::process::Command::new("cmp")
            .arg(&img)
            .arg(&out)
            .status()
            .expect("cmp");
        assert!(same.success(), "{}: restored bytes differ", fs.name());
        drop(mount);
    }
}
