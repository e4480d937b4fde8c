//! `--keep-free`: room made in a small real filesystem (tmpfs) the way Time Machine makes it,
//! oldest versions first, never a file's newest copy, never a deletion record, never anything
//! outside this pair's DST; under `once`, `--dry-run`, and `watch` with a `--keep-last` policy.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{Env, Watch, family, read, set_mtime};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

fn free(p: &Path) -> u64 {
    let st = rustix::fs::statvfs(p).expect("statvfs");
    st.f_bfree * st.f_frsize
}

/// A DST made by hand, as earlier runs would have left it: `a` with three versions, `b` with
/// two (the newest the copy of SRC's `b.bin`), `c` deleted (its last copy, then the record of
/// its deletion); and, on the same filesystem, another pair's DST with an older version still.
fn history(env: &Env, other: &Path) {
    let mib = |byte: u8| vec![byte; MIB];
    fs::create_dir_all(&env.dst).expect("dst");
    for (name, byte) in [
        ("a_20200101_000000.bin", b'1'),
        ("c_20200201_000000.bin", b'c'),
        ("b_20200301_000000.bin", b'2'),
        ("a_20210101_000000.bin", b'3'),
        ("a_20220101_000000.bin", b'4'),
        ("b_20230101_000000.bin", b'b'),
    ] {
        let version = env.dst.join(name);
        fs::write(&version, mib(byte)).expect("version");
        // Copies of long ago: none is taken for SRC's current `a.bin`.
        set_mtime(&version, 1_600_000_000, 0);
    }
    fs::write(env.dst.join("c_20200401_000000_deleted.bin"), b"").expect("record");
    fs::create_dir_all(other).expect("other dst");
    fs::write(other.join("x_20190101_000000.bin"), mib(b'x')).expect("other's old");
    fs::write(other.join("x_20240101_000000.bin"), mib(b'y')).expect("other's newest");
    // SRC: `a` changed since, `b` as its newest copy, `c` gone.
    env.write("a.bin", mib(b'A'));
    let b = env.write("b.bin", mib(b'b'));
    set_mtime(&b, 1_700_000_000, 0);
    set_mtime(&env.dst.join("b_20230101_000000.bin"), 1_700_000_000, 0);
}

#[test]
fn the_oldest_versions_go_first_and_never_a_newest_copy() {
    let Some((mut env, small)) = common::small_dst("10m") else {
        return;
    };
    let mnt = small.0.clone();
    env.dst = mnt.join("one");
    let other = mnt.join("two");
    history(&env, &other);
    let before = free(&mnt);
    assert!(before < 3 * MIB as u64, "{before} free");

    // What a dry run says is what the run does, and it deletes nothing.
    let dry = env.once(&["--keep-free", "2560K", "--dry-run"]);
    dry.code(0)
        .stdout_has("Would prune to make room: ")
        .stdout_has("Pruned to make room: 2");
    assert_eq!(fs::read_dir(&env.dst).expect("dst").count(), 7);

    let r = env.once(&["--keep-free", "2560K"]);
    r.code(0);
    let pruned: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Pruned to make room: "))
        .filter(|p| p.starts_with('/'))
        .collect();
    let names: Vec<String> = pruned
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["a_20200101_000000.bin", "b_20200301_000000.bin"],
        "oldest first, the deleted file's last copy kept\n{}",
        r.context()
    );
    assert_eq!(r.summary("Pruned to make room"), 2);
    let dry_said: Vec<&str> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Would prune to make room: "))
        .collect();
    assert_eq!(dry_said, pruned, "the dry run said the same");

    // Every file's newest copy is there, the deleted one's and its record too, and the new
    // version of `a`; the other pair's DST is untouched.
    assert_eq!(
        read(&env.dst.join("b_20230101_000000.bin")),
        vec![b'b'; MIB]
    );
    assert_eq!(
        read(&env.dst.join("c_20200201_000000.bin")),
        vec![b'c'; MIB]
    );
    assert!(env.dst.join("c_20200401_000000_deleted.bin").exists());
    assert!(env.dst.join("a_20220101_000000.bin").exists());
    let a = family(&env.dst, "a.bin");
    assert_eq!(read(&env.dst.join(a.last().expect("a"))), vec![b'A'; MIB]);
    assert!(other.join("x_20190101_000000.bin").exists());
    assert!(free(&mnt) >= 2560 << 10, "{} free", free(&mnt));
}

#[test]
fn a_size_to_keep_free_that_does_not_read_is_a_usage_error() {
    let env = Env::new();
    env.write("a.txt", "a");
    let r = env.once(&["--keep-free", "lots"]);
    r.code(2)
        .stderr_has("cannot read \"lots\" as a size to keep free");
    assert!(!env.dst.exists());
}

/// `watch` with `--keep-free` and `--keep-last 2` over a file rewritten again and again, with a
/// big file landing half way: first the policy prunes, then room is made too; neither ever
/// takes a newest copy, and every version lands.
#[test]
fn under_watch_room_making_and_a_keep_last_policy_compose() {
    let Some((env, _unmount)) = common::small_dst("8m") else {
        return;
    };
    env.write("log.bin", vec![b'0'; MIB]);
    env.write("other.bin", vec![b'o'; MIB]);
    let w = Watch::start(
        &env,
        &[
            "--debounce",
            "100ms",
            "--keep-free",
            "2M",
            "--keep-last",
            "2",
        ],
    );
    let newest = |env: &Env| {
        family(&env.dst, "log.bin")
            .last()
            .map(|n| read(&env.dst.join(n)))
            .unwrap_or_default()
    };
    w.wait_for("the first pass", LIMIT, |_| newest(&env) == vec![b'0'; MIB]);
    for round in 1..=6u8 {
        // Half way, a big file leaves room for the policy's versions no more.
        if round == 4 {
            env.write("big.bin", vec![b'B'; 5 * MIB / 2]);
            w.wait_for("the big file", LIMIT, |_| {
                read(&env.dst.join("big.bin")).len() == 5 * MIB / 2
            });
        }
        let byte = b'0' + round;
        env.write("log.bin", vec![byte; MIB]);
        w.wait_for("the new version", LIMIT, |_| {
            newest(&env) == vec![byte; MIB]
        });
    }
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    assert!(!err.contains("Failed") && !err.contains("error"), "{err}");
    assert_eq!(read(&env.dst.join("other.bin")), vec![b'o'; MIB]);
    assert!(family(&env.dst, "log.bin").len() <= 2, "{out}");
    assert!(
        out.contains("Pruned to make room: "),
        "room was made\n{out}"
    );
    assert!(out.contains("Pruned: "), "the policy pruned too\n{out}");
}

/// `backup du`: per folder, largest first, what newest copies, older versions and deletion
/// records hold; its totals are `du -b`'s for the files of DST, a hard-linked copy counted
/// once.
#[test]
fn du_says_where_the_space_went() {
    let env = Env::new();
    env.write("photos/a.jpg", vec![b'1'; 300_000]);
    env.write("notes.txt", vec![b'n'; 1_000]);
    env.once(&[]).code(0);
    common::next_second();
    env.write("photos/a.jpg", vec![b'2'; 300_000]);
    fs::remove_file(env.src.join("notes.txt")).expect("rm");
    env.once(&[]).code(0);
    fs::hard_link(
        env.dst.join("photos/a.jpg"),
        env.dst.join("photos/linked.jpg"),
    )
    .expect("a hard link");

    let lines = common::du_json(&env);
    let photos = env.dst.join("photos");
    assert_eq!(
        lines[0]["folder"],
        photos.to_str().expect("utf-8"),
        "largest first"
    );
    assert_eq!(lines[0]["newest"], 300_000);
    assert_eq!(lines[0]["older"], 300_000);
    assert_eq!(lines[0]["shared"], 300_000, "the second name of a file");
    assert_eq!(lines[1]["records"], 1, "notes.txt's deletion");
    let total = lines.last().expect("a total");
    assert!(total.get("folder").is_none());
    let ours = total["newest"].as_u64().expect("n") + total["older"].as_u64().expect("o");
    // du -b counts each inode once too; folders are not files.
    let du_b = |args: &[&str]| -> u64 {
        let out = std::process::Command::new("du")
            .args(args)
            .arg(&env.dst)
            .output()
            .expect("du -b");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    let folders: u64 = common::tree(&env.dst)
        .iter()
        .filter(|(_, n)| matches!(n, common::Node::Dir { .. }))
        .map(|(p, _)| fs::metadata(env.dst.join(p)).expect("folder").len())
        .sum::<u64>()
        + fs::metadata(&env.dst).expect("dst").len();
    assert_eq!(ours, du_b(&["-s", "-b"]) - folders, "{lines:?}");

    let text = std::process::Command::new(common::bin())
        .args(["du"])
        .arg(&env.dst)
        .arg("photos")
        .output()
        .expect("du photos");
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.starts_with(&format!(
            "{}: 293.0 KiB newest, 293.0 KiB older, 0 deletion records, 293.0 KiB shared\n",
            photos.display()
        )),
        "{text}"
    );
}
