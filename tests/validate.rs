//! Every row of "Before anything is written" (docs/GUIDE.md): bad input gets one clear line
//! naming the path, and nothing is written.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use common::{Env, Run, bin};

fn run(env: &Env, args: &[&std::ffi::OsStr]) -> Run {
    Run::of(Command::new(bin()).args(args).output().expect("run"), env)
}

fn once(env: &Env, src: &Path, dst: &Path) -> Run {
    run(env, &["once".as_ref(), src.as_os_str(), dst.as_os_str()])
}

/// The single `error:` line names `path`, and nothing else is on stderr.
fn one_error_naming(r: &Run, path: &Path, why: &str) {
    r.code(1);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.context());
    assert!(lines[0].starts_with("error: "), "{}", r.context());
    assert!(
        lines[0].contains(&path.display().to_string()),
        "{}",
        r.context()
    );
    assert!(lines[0].contains(why), "{}", r.context());
    assert!(r.stdout.is_empty(), "{}", r.context());
}

#[test]
fn missing_source() {
    let env = Env::new();
    let src = env.root().join("nope");
    let r = once(&env, &src, &env.dst);
    one_error_naming(&r, &src, "No such file or directory");
    assert!(!env.dst.exists(), "destination created for a failed start");
}

#[test]
fn source_is_a_file() {
    let env = Env::new();
    let f = env.write("f", "x");
    let r = once(&env, &f, &env.dst);
    one_error_naming(&r, &f, "not a directory");
    assert!(!env.dst.exists());
}

#[test]
fn unreadable_source() {
    let env = Env::new();
    if !common::can_drop_root() {
        return;
    }
    env.write("a", "a");
    common::open_up(&env);
    fs::set_permissions(&env.src, fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = common::as_nobody("once", &env.src, &env.root().join("out/dst"))
        .output()
        .expect("run");
    let r = Run::of(out, &env);
    one_error_naming(&r, &env.src, "cannot be read: Permission denied");
    assert!(!env.root().join("out").exists());
}

#[test]
fn a_missing_destination_whose_parent_exists_is_created_and_said() {
    let env = Env::new();
    env.write("a.txt", "a");
    let r = once(&env, &env.src, &env.dst);
    r.code(0);
    r.stderr_has(&format!("Created destination {}\n", env.dst.display()));
    assert_eq!(fs::read(env.dst.join("a.txt")).expect("read"), b"a");
}

#[test]
fn a_missing_parent_is_an_error_unless_mkpath() {
    // /media/usb/backup with the drive not plugged in: nothing is made on the system disk.
    let env = Env::new();
    env.write("a.txt", "a");
    let dst = env.root().join("usb/backup");
    let r = once(&env, &env.src, &dst);
    one_error_naming(
        &r,
        &env.root().join("usb"),
        "does not exist (is the drive mounted?)",
    );
    r.stderr_has("--mkpath creates the whole path");
    assert!(!env.root().join("usb").exists());

    let deep = env.root().join("x/y/z");
    let r = run(
        &env,
        &[
            "once".as_ref(),
            "--mkpath".as_ref(),
            env.src.as_os_str(),
            deep.as_os_str(),
        ],
    );
    r.code(0);
    assert_eq!(fs::read(deep.join("a.txt")).expect("read"), b"a");
}

#[test]
fn destination_is_a_file() {
    let env = Env::new();
    env.write("a.txt", "a");
    fs::write(&env.dst, "i am a file").expect("write");
    let r = once(&env, &env.src, &env.dst);
    one_error_naming(&r, &env.dst, "not a directory");
    assert_eq!(fs::read(&env.dst).expect("read"), b"i am a file");
}

#[test]
fn destination_under_a_file_cannot_be_created() {
    let env = Env::new();
    env.write("a.txt", "a");
    fs::write(&env.dst, "i am a file").expect("write");
    let dst = env.dst.join("sub");
    let r = once(&env, &env.src, &dst);
    one_error_naming(&r, &dst, "not a directory");
}

#[test]
fn destination_not_writable() {
    let env = Env::new();
    if !common::can_drop_root() {
        return;
    }
    env.write("a.txt", "a");
    fs::create_dir(&env.dst).expect("mkdir");
    common::open_up(&env);
    let out = common::as_nobody("once", &env.src, &env.dst)
        .output()
        .expect("run");
    let r = Run::of(out, &env);
    one_error_naming(&r, &env.dst, "cannot be written: Permission denied");
    assert!(env.dst_names("").is_empty());
}

#[test]
fn same_folder_directly_through_a_symlink_and_through_dotdot() {
    let env = Env::new();
    env.write("a.txt", "a");
    let link = env.root().join("link");
    symlink(&env.src, &link).expect("symlink");
    let dotdot = env.src.join("sub/..");
    fs::create_dir(env.src.join("sub")).expect("mkdir");
    for dst in [env.src.clone(), link.clone(), dotdot] {
        let r = once(&env, &env.src, &dst);
        one_error_naming(&r, &env.src, "same folder");
        assert_eq!(common::tree(&env.src).len(), 2, "source changed");
    }
}

#[test]
fn source_inside_destination() {
    let env = Env::new();
    let inner = env.src.join("inner");
    fs::create_dir(&inner).expect("mkdir");
    fs::write(inner.join("a"), "a").expect("write");
    let r = once(&env, &inner, &env.src);
    one_error_naming(&r, &inner, "inside the destination");
    assert_eq!(common::tree(&env.src).len(), 2);
}

#[test]
fn destination_inside_source_is_allowed() {
    let env = Env::new();
    env.write("a.txt", "a");
    let dst = env.src.join("mirror");
    let r = once(&env, &env.src, &dst);
    r.code(0);
    assert!(dst.join("a.txt").exists());
    assert!(!dst.join("mirror").exists());
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for args in [
        vec!["once", "a"],
        vec!["copy", "a", "b"],
        vec!["once", "a", "b", "--jobs", "0"],
        vec!["watch", "a", "b", "--debounce", "soon"],
    ] {
        let out = Command::new(bin()).args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    assert!(!env.dst.exists());
    // Without SRC and DST the pairs come from the config file; with none, there is nothing to
    // back up: a usage error too, said in one line.
    let out = Command::new(bin())
        .arg("once")
        .env("XDG_CONFIG_HOME", env.root())
        .env("HOME", env.root())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: give SRC and DST, or pairs in a config file"),
        "{err}"
    );
}
