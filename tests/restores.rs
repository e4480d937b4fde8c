//! Restores that can be trusted: deletions and renames are part of the history, so a folder
//! restored at a time is the folder as it was then.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Env, Run, Watch, next_second, restore, tree};
use rustix::process::Signal;

/// The files under `root`, relative, with their contents.
fn files(root: &Path) -> BTreeSet<(PathBuf, String)> {
    tree(root)
        .into_iter()
        .filter_map(|(p, n)| match n {
            common::Node::File { data, .. } => Some((p, String::from_utf8_lossy(&data).into())),
            _ => None,
        })
        .collect()
}

fn set(entries: &[(&str, &str)]) -> BTreeSet<(PathBuf, String)> {
    entries
        .iter()
        .map(|(p, d)| (PathBuf::from(p), d.to_string()))
        .collect()
}

#[test]
fn a_folder_restored_at_several_times_is_the_folder_as_it_was() {
    let env = Env::new();
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    env.write("sub/c.txt", "c");
    env.once(&[]).code(0);
    let t1 = next_second();

    fs::remove_file(env.src.join("b.txt")).expect("rm b");
    fs::rename(env.src.join("a.txt"), env.src.join("a2.txt")).expect("mv a a2");
    let r = env.once(&[]);
    r.code(0);
    r.stdout_has(&format!("Deleted: {}", env.src.join("b.txt").display()));
    r.stdout_has(&format!("Deleted: {}", env.src.join("a.txt").display()));
    let t2 = next_second();

    fs::remove_dir_all(env.src.join("sub")).expect("rm -r sub");
    env.once(&[]).code(0);
    let t3 = next_second();

    env.write("sub/d.txt", "d");
    env.once(&[]).code(0);
    let t4 = next_second();

    // A rerun records nothing new: deletions are recorded once.
    let again = env.once(&[]);
    again.code(0);
    assert!(!again.stdout.contains("Deleted: "), "{}", again.context());

    let cases = [
        (
            &t1,
            set(&[("a.txt", "a"), ("b.txt", "b"), ("sub/c.txt", "c")]),
        ),
        (&t2, set(&[("a2.txt", "a"), ("sub/c.txt", "c")])),
        (&t3, set(&[("a2.txt", "a")])),
        (&t4, set(&[("a2.txt", "a"), ("sub/d.txt", "d")])),
    ];
    for (i, (at, expected)) in cases.iter().enumerate() {
        let to = env.root().join(format!("restored{i}"));
        let r = restore(&env, ".", &to, at);
        r.code(0);
        assert_eq!(files(&to), *expected, "at {at}\n{}", r.context());
    }
    // The history shows the deletions; verify and a rerun take no notice of them.
    let out = Command::new(common::bin())
        .args(["versions"])
        .arg(&env.dst)
        .arg("b.txt")
        .output()
        .expect("versions");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deleted  b_"), "{text}");
    let verify = Run::of(env.cmd("verify").output().expect("verify"), &env);
    verify.code(0);
    // A deleted file restored on its own says when it went.
    let r = restore(&env, "b.txt", &env.root().join("b-now.txt"), "now");
    r.code(1);
    r.stderr_has("b.txt was deleted at ");
}

#[test]
fn a_file_that_comes_back_is_copied_and_restored_again() {
    let env = Env::new();
    env.write("a.txt", "one");
    env.once(&[]).code(0);
    next_second();
    fs::remove_file(env.src.join("a.txt")).expect("rm");
    env.once(&[]).code(0);
    next_second();
    env.write("a.txt", "two");
    let r = env.once(&[]);
    assert_eq!(r.summary("Successfully copied"), 1, "{}", r.context());
    let to = env.root().join("r");
    restore(&env, ".", &to, "now").code(0);
    assert_eq!(files(&to), set(&[("a.txt", "two")]));
    // Pruning to one version keeps the deletion record between the two.
    let out = Command::new(common::bin())
        .args(["prune", "--keep-last", "1"])
        .arg(&env.dst)
        .output()
        .expect("prune");
    assert!(out.status.success());
    let left: Vec<String> = fs::read_dir(&env.dst)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().any(|n| n.ends_with("_deleted.txt")), "{left:?}");
}

#[test]
fn watch_records_a_deletion_and_a_rename_once_they_settle() {
    let env = Env::new();
    env.write("keep.txt", "keep");
    env.write("old.txt", "old");
    env.write("gone.txt", "gone");
    let w = Watch::start(&env, &["--debounce", "200ms"]);
    w.wait_for("the first pass", Duration::from_secs(30), |_| {
        env.dst.join("gone.txt").exists() && env.dst.join("old.txt").exists()
    });
    fs::remove_file(env.src.join("gone.txt")).expect("rm");
    fs::rename(env.src.join("old.txt"), env.src.join("new.txt")).expect("mv");
    let marked = |name: &str| {
        let stem = name.trim_end_matches(".txt");
        common::family(&env.dst, name).len() == 1
            && fs::read_dir(&env.dst).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(&format!("{stem}_")) && n.ends_with("_deleted.txt")
                })
            })
    };
    w.wait_for("the deletion records", Duration::from_secs(30), |_| {
        marked("gone.txt") && marked("old.txt") && env.dst.join("new.txt").exists()
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Deleted: "), "{out}");
    let to = env.root().join("r");
    let r = restore(&env, ".", &to, "now");
    r.code(0);
    assert_eq!(
        files(&to),
        set(&[("keep.txt", "keep"), ("new.txt", "old")]),
        "{}",
        r.context()
    );
}

#[test]
fn a_file_that_becomes_a_folder_and_back_is_backed_up_and_restored_in_each_shape() {
    let env = Env::new();
    env.write("x", "x as a file");
    env.write("y/inner.txt", "inside y");
    env.once(&[]).code(0);
    let before = next_second();

    fs::remove_file(env.src.join("x")).expect("rm x");
    env.write("x/inner.txt", "inside x");
    fs::remove_dir_all(env.src.join("y")).expect("rm -r y");
    env.write("y", "y as a file");
    let r = env.once(&[]);
    r.code(0);
    assert!(
        fs::symlink_metadata(env.dst.join("x")).expect("x").is_dir(),
        "{}",
        r.context()
    );
    assert_eq!(
        fs::read(env.dst.join("x/inner.txt")).expect("x/inner"),
        b"inside x"
    );
    let after = next_second();
    let rerun = env.once(&[]);
    rerun.code(0);
    assert_eq!(
        rerun.summary("Successfully copied"),
        0,
        "{}",
        rerun.context()
    );

    let then = env.root().join("then");
    restore(&env, ".", &then, &before).code(0);
    assert_eq!(
        files(&then),
        set(&[("x", "x as a file"), ("y/inner.txt", "inside y")])
    );
    let now = env.root().join("now");
    let r = restore(&env, ".", &now, &after);
    r.code(0);
    assert_eq!(
        files(&now),
        set(&[("x/inner.txt", "inside x"), ("y", "y as a file")]),
        "{}",
        r.context()
    );
}

#[test]
fn a_change_of_mode_owner_or_attributes_alone_updates_the_newest_copy_in_place() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let f = env.write("run.sh", "echo hi");
    env.once(&[]).code(0);
    let copy = env.dst.join("run.sh");
    let ino = common::ino(&copy);
    let mtime = common::mtime_ns(&copy);

    fs::set_permissions(&f, fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).expect("chown");
    rustix::fs::setxattr(
        &f,
        "user.origin",
        b"laptop",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
    // Until a pass carries it over, verify says the copy is stale.
    let stale = Run::of(env.cmd("verify").output().expect("verify"), &env);
    stale.code(1);
    stale.stdout_has(&format!("Stale: {}", f.display()));

    let r = env.once(&[]);
    r.code(0);
    r.stdout_has(&format!("Updated: {} -> {}", f.display(), copy.display()));
    let md = fs::metadata(&copy).expect("copy");
    assert_eq!(md.permissions().mode() & 0o777, 0o750);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let mut value = vec![0u8; 64];
    let n = rustix::fs::getxattr(&copy, "user.origin", &mut value).expect("xattr on the copy");
    assert_eq!(&value[..n], b"laptop");
    // In place: the same file, its contents and time untouched, no new version.
    assert_eq!(common::ino(&copy), ino);
    assert_eq!(common::mtime_ns(&copy), mtime);
    assert_eq!(common::family(&env.dst, "run.sh").len(), 1);
    Run::of(env.cmd("verify").output().expect("verify"), &env).code(0);

    // Nothing more to do on a rerun.
    let again = env.once(&[]);
    again.code(0);
    assert!(!again.stdout.contains("Updated: "), "{}", again.context());

    // And a restore gives the new mode back.
    let to = env.root().join("restored.sh");
    restore(&env, "run.sh", &to, "now").code(0);
    assert_eq!(
        fs::metadata(&to).expect("restored").permissions().mode() & 0o777,
        0o750
    );
}
