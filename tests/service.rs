//! Left running for months: a config file of several pairs, run by `once` and by one `watch`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Run, Watch, read};
use rustix::process::Signal;

/// Three source folders, three destinations, and a config file naming them.
struct Pairs {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Pairs {
    fn new() -> Pairs {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical");
        // inotify, as without root: one test counts its instances.
        let mut text =
            String::from("debounce = \"200ms\"\nexclude = [\"*.tmp\"]\nevents = \"inotify\"\n");
        for name in ["documents", "photos", "project"] {
            fs::create_dir_all(root.join("src").join(name)).expect("mkdir");
            fs::write(root.join("src").join(name).join("first.txt"), name).expect("write");
            fs::create_dir_all(root.join("dst")).expect("mkdir");
            text.push_str(&format!(
                "\n[[backup]]\nname = \"{name}\"\nsrc = \"{}\"\ndst = \"{}\"\n",
                root.join("src").join(name).display(),
                root.join("dst").join(name).display()
            ));
        }
        let config = root.join("config.toml");
        fs::write(&config, text).expect("write config");
        Pairs { dir, config }
    }

    fn root(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonical")
    }

    fn src(&self, name: &str) -> PathBuf {
        self.root().join("src").join(name)
    }

    fn dst(&self, name: &str) -> PathBuf {
        self.root().join("dst").join(name)
    }

    fn cmd(&self, sub: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.arg(sub).arg("--config").arg(&self.config).args(extra);
        c
    }

    fn run(&self, sub: &str, extra: &[&str]) -> Run {
        let out = self.cmd(sub, extra).output().expect("run");
        let env = common::Env::new();
        Run::of(out, &env)
    }
}

#[test]
fn once_backs_up_every_pair_of_the_config_file_or_only_those_named() {
    let pairs = Pairs::new();
    fs::write(
        pairs.src("photos").join("skip.tmp"),
        "left out by the file's default",
    )
    .expect("w");
    let r = pairs.run("once", &["--only", "photos"]);
    r.code(0);
    assert!(pairs.dst("photos").join("first.txt").exists());
    assert!(
        !pairs.dst("photos").join("skip.tmp").exists(),
        "the file's exclude"
    );
    assert!(!pairs.dst("documents").exists(), "--only photos");
    let r = pairs.run("once", &[]);
    r.code(0);
    for name in ["documents", "photos", "project"] {
        assert_eq!(read(&pairs.dst(name).join("first.txt")), name.as_bytes());
        r.stderr_has(&format!("Pair {name}: "));
    }
}

#[test]
fn one_watch_mirrors_every_pair_into_its_own_destination() {
    let pairs = Pairs::new();
    let env = common::Env::new();
    let w = Watch::start_with(pairs.cmd("watch", &[]), &env, &[]);
    w.wait_for("the three first passes", Duration::from_secs(30), |w| {
        w.stderr().matches("Watching ").count() == 3
            && ["documents", "photos", "project"]
                .iter()
                .all(|n| pairs.dst(n).join("first.txt").exists())
    });
    assert_eq!(
        inotify_instances(w.pid()),
        1,
        "the three pairs share one inotify instance"
    );
    for name in ["documents", "photos", "project"] {
        fs::write(pairs.src(name).join("new.txt"), format!("new in {name}")).expect("write");
    }
    w.wait_for(
        "each change in its own destination",
        Duration::from_secs(30),
        |_| {
            ["documents", "photos", "project"]
                .iter()
                .all(|n| read(&pairs.dst(n).join("new.txt")) == format!("new in {n}").as_bytes())
        },
    );
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "--- stdout\n{out}--- stderr\n{err}");
    assert_eq!(out.matches("Backup Summary:").count(), 3, "{out}");
}

/// How many inotify instances the process holds open.
fn inotify_instances(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd list")
        .filter_map(Result::ok)
        .filter(|fd| {
            fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:inotify")
        })
        .count()
}

#[test]
fn a_mistake_in_the_config_file_is_one_error_naming_file_line_and_key() {
    let pairs = Pairs::new();
    let text = fs::read_to_string(&pairs.config).expect("read");
    fs::write(
        &pairs.config,
        text.replace("debounce = \"200ms\"", "debounce = \"soon\""),
    )
    .expect("w");
    let r = pairs.run("once", &[]);
    r.code(1);
    r.stderr_has(&format!(
        "error: config {}: line 1: ",
        pairs.config.display()
    ));
    assert!(!pairs.dst("documents").exists(), "nothing written");
    fs::write(&pairs.config, format!("{text}\nkeep-lats = 3\n")).expect("w");
    let r = pairs.run("once", &[]);
    r.code(1);
    r.stderr_has("keep-lats");
}

#[test]
fn service_install_writes_a_unit_that_systemd_accepts() {
    let pairs = Pairs::new();
    let home = pairs.root().join("home");
    fs::create_dir_all(&home).expect("mkdir");
    let out = Command::new(common::bin())
        .args(["service", "install", "--config"])
        .arg(&pairs.config)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("HOME", &home)
        .output()
        .expect("install");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let unit = home.join(".config/systemd/user/backup.service");
    let text = fs::read_to_string(&unit).expect("the unit");
    assert!(
        text.contains(&format!("watch --config \"{}\"", pairs.config.display())),
        "{text}"
    );
    assert!(text.contains("Restart=on-failure"), "{text}");
    assert!(err.contains(&format!("Wrote {}", unit.display())), "{err}");
    // Either systemd took it, or the unit was printed to install by hand.
    assert!(
        err.contains("Enabled and started") || err.contains("[Service]"),
        "{err}"
    );

    let analyze = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output();
    match analyze {
        Err(e) => {
            eprintln!("SKIPPED: systemd-analyze cannot run here ({e}); .ci/run installs systemd")
        }
        Ok(o) => assert!(
            o.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }

    let out = Command::new(common::bin())
        .args(["service", "uninstall"])
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("HOME", &home)
        .output()
        .expect("uninstall");
    assert!(out.status.success());
    assert!(!unit.exists());
}

/// `backup status SRC DST`, with the state folder `state`.
fn status(env: &common::Env, state: &Path) -> Run {
    let out = Command::new(common::bin())
        .arg("status")
        .arg(&env.src)
        .arg(&env.dst)
        .env("XDG_STATE_HOME", state)
        .output()
        .expect("status");
    Run::of(out, env)
}

#[test]
fn status_says_what_the_watch_does_and_fails_when_it_fails() {
    let mut env = common::Env::new();
    let state = env.root().join("state");
    let mnt = env.root().join("mnt");
    if !common::mount_tmpfs(&mnt, "size=8m") {
        return;
    }
    let _unmount = common::Mount(mnt.clone());
    env.dst = mnt.join("backup");
    env.write("a.txt", "a");
    let mut cmd = env.cmd("watch");
    cmd.env("XDG_STATE_HOME", &state);
    let w = Watch::start_with(cmd, &env, &["--debounce", "100ms"]);
    w.wait_for("the first copy", Duration::from_secs(30), |w| {
        env.dst.join("a.txt").exists() && w.stdout().contains(" batch: copied 1,")
    });
    let r = status(&env, &state);
    r.code(0);
    r.stdout_has(&format!("watching (watch, pid {}", w.pid()));
    r.stdout_has("newest copy: ");

    // Unplugged: waiting, and nothing recent to show.
    let ok = Command::new("umount")
        .arg(&mnt)
        .status()
        .expect("umount")
        .success();
    assert!(ok, "umount while watch runs");
    w.wait_for("the gone line", Duration::from_secs(30), |w| {
        w.stderr().contains(" is gone (unmounted?)")
    });
    let r = status(&env, &state);
    r.code(1);
    r.stdout_has("waiting for destination (watch, pid");
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");

    // Failing: a batch with a failure (a version that cannot fit its name).
    let env = common::Env::new();
    let long = format!("a.{}", "e".repeat(253));
    env.write(&long, "one");
    let mut cmd = env.cmd("watch");
    cmd.env("XDG_STATE_HOME", &state);
    let w = Watch::start_with(cmd, &env, &["--debounce", "100ms"]);
    w.wait_for("the first copy", Duration::from_secs(30), |w| {
        w.stdout().contains(" batch: copied 1,")
    });
    env.write(&long, "two, changed");
    w.wait_for("the failure", Duration::from_secs(30), |w| {
        w.stderr().contains("Failed: ")
    });
    w.wait_for("its batch", Duration::from_secs(30), |w| {
        w.stdout().contains("failed 1 |")
    });
    let r = status(&env, &state);
    r.code(1);
    r.stdout_has("FAILING: 1 file(s) could not be copied, and have not been since");
    r.stdout_has("name too long to add a version stamp");
    let _ = w.stop(Signal::INT);

    // No watch running: what DST shows.
    let r = status(&env, &state);
    r.code(0);
    r.stdout_has("no watch running for this pair");
}

#[test]
fn no_pair_backs_up_the_versions_another_pair_keeps_inside_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    let (home, camera) = (root.join("home"), root.join("camera"));
    fs::create_dir_all(home.join("Backups")).expect("mkdir");
    fs::create_dir_all(&camera).expect("mkdir");
    fs::write(home.join("notes.txt"), "notes").expect("w");
    fs::write(camera.join("img.jpg"), "pixels").expect("w");
    // The camera pair runs first, so its copies are in the home folder before home is walked.
    let config = root.join("config.toml");
    fs::write(
        &config,
        format!(
            "[[backup]]\nname = \"camera\"\nsrc = \"{}\"\ndst = \"{}\"\n\n\
             [[backup]]\nname = \"home\"\nsrc = \"{}\"\ndst = \"{}\"\n",
            camera.display(),
            home.join("Backups/camera").display(),
            home.display(),
            root.join("usb/home").display(),
        ),
    )
    .expect("write config");
    fs::create_dir_all(root.join("usb")).expect("mkdir");
    let env = common::Env::new();
    let mut cmd = Command::new(common::bin());
    cmd.args(["once", "--config"]).arg(&config);
    let r = Run::of(cmd.output().expect("run"), &env);
    r.code(0);
    assert_eq!(read(&home.join("Backups/camera/img.jpg")), b"pixels");
    assert_eq!(read(&root.join("usb/home/notes.txt")), b"notes");
    assert!(
        !root.join("usb/home/Backups/camera").exists(),
        "the camera pair's versions were backed up again by the home pair\n{}",
        r.context()
    );
}
