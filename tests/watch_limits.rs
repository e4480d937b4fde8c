//! `watch` against the OS limits of inotify: a queue that overflows, a watch limit that runs out;
//! and fanotify, which as root replaces per-folder watches with one mark.
//! The limits are machine-wide, so these tests live in their own test binary, take one lock so
//! that they run one at a time, and put the old values back on every exit path.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use common::{Env, Watch, read};
use rustix::process::Signal;

static SERIAL: Mutex<()> = Mutex::new(());

/// Sets a `/proc/sys` value and puts the old one back when dropped (also when a test panics).
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(name: &str, value: &str) -> Option<Sysctl> {
        Sysctl::set_in("inotify", name, value)
    }

    fn set_in(group: &str, name: &str, value: &str) -> Option<Sysctl> {
        let path = PathBuf::from("/proc/sys/fs").join(group).join(name);
        let old = fs::read_to_string(&path).ok()?;
        if fs::write(&path, value).is_err() {
            return None;
        }
        Some(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, self.old.trim());
    }
}

#[test]
fn a_storm_that_overflows_the_event_queue_is_still_mirrored_completely() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let Some(_limit) = Sysctl::set("max_queued_events", "64") else {
        eprintln!("SKIPPED: cannot lower fs.inotify.max_queued_events here (needs root)");
        return;
    };
    let w = Watch::start(&env, &["--debounce", "100ms", "--events", "inotify"]);
    env.storm(100, 30);
    w.wait_for("all 3000 files", Duration::from_secs(120), |_| {
        env.storm_missing(100, 30) == 0
    });
    let (out, _) = stop_ok(w);
    assert!(out.contains("Successfully copied: 3000\n"), "{out}");
}

const LIMIT_LINE: &str = "fs.inotify.max_user_watches";

/// 200 folders of one file each, and `max_user_watches` lowered to 50 more than are in use, so
/// that about a quarter of them fit; `None`, with the reason, where it cannot be lowered.
fn over_the_limit() -> Option<(Env, Sysctl)> {
    let env = Env::new();
    for d in 0..200 {
        env.write(format!("d{d:03}/a.txt"), "a");
    }
    let limit = common::inotify_watches(None) + 50;
    let Some(sysctl) = Sysctl::set("max_user_watches", &limit.to_string()) else {
        eprintln!("SKIPPED: cannot lower fs.inotify.max_user_watches here (needs root)");
        return None;
    };
    Some((env, sysctl))
}

#[test]
fn hitting_the_watch_limit_at_start_watches_what_fits_and_polls_only_the_rest() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((env, _limit)) = over_the_limit() else {
        return;
    };
    let w = Watch::start(&env, &["--debounce", "100ms", "--events", "inotify", "-v"]);
    assert!(
        w.stderr().contains("(inotify, and polling "),
        "{}",
        w.stderr()
    );
    w.wait_for("the watch plan", Duration::from_secs(10), |w| {
        w.stderr().contains("Watch plan: ")
            && w.stderr().contains(" folders watched with inotify, ")
    });
    w.wait_for(
        "the line that says what is polled",
        Duration::from_secs(60),
        |w| {
            w.stderr()
                .contains(" are polled, so a change in those is found within about ")
        },
    );
    let err = w.stderr();
    assert_eq!(
        err.lines().filter(|l| l.contains(LIMIT_LINE)).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("sudo sysctl fs.inotify.max_user_watches="),
        "{err}"
    );
    let watches = common::inotify_watches(Some(w.pid()));
    assert!(
        (40..=50).contains(&watches),
        "the watches that fit are used, no more: {watches}\n{err}"
    );
    // The top folder is the first to get a watch; the rest, polled or watched, all arrive.
    env.write("top.txt", "watched");
    for d in 0..200 {
        env.write(format!("d{d:03}/late.txt"), format!("{d}"));
    }
    w.wait_for(
        "every change, watched and polled",
        Duration::from_secs(60),
        |_| {
            read(&env.dst.join("top.txt")) == b"watched"
                && (0..200).all(|d| {
                    read(&env.dst.join(format!("d{d:03}/late.txt"))) == format!("{d}").as_bytes()
                })
        },
    );
    stop_ok(w);
}

#[test]
fn watches_freed_by_deleted_folders_go_to_polled_ones() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((env, _limit)) = over_the_limit() else {
        return;
    };
    let w = Watch::start(&env, &["--debounce", "100ms", "--events", "inotify"]);
    w.wait_for(
        "the line that says what is polled",
        Duration::from_secs(60),
        |w| {
            w.stderr()
                .contains(" are polled, so a change in those is found within about ")
        },
    );
    let full = common::inotify_watches(Some(w.pid()));
    // The newest folders got the watches: deleting them frees the watches, and polled
    // folders take them.
    for d in 100..200 {
        fs::remove_dir_all(env.src.join(format!("d{d:03}"))).expect("rm");
    }
    let mut dropped = false;
    w.wait_for(
        "polled folders to get the freed watches",
        Duration::from_secs(60),
        |w| {
            let now = common::inotify_watches(Some(w.pid()));
            dropped |= now + 10 < full;
            dropped && now + 2 >= full
        },
    );
    env.write("d000/late.txt", "once polled, now watched");
    w.wait_for(
        "a change in a folder that was polled",
        Duration::from_secs(30),
        |_| read(&env.dst.join("d000/late.txt")) == b"once polled, now watched",
    );
    stop_ok(w);
}

#[test]
fn hitting_the_watch_limit_later_polls_the_new_folders_that_do_not_fit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    env.write("first/a.txt", "a");
    let limit = (common::inotify_watches(None) + 8).to_string();
    let Some(_limit) = Sysctl::set("max_user_watches", &limit) else {
        eprintln!("SKIPPED: cannot lower fs.inotify.max_user_watches here (needs root)");
        return;
    };
    let w = Watch::start(&env, &["--debounce", "100ms", "--events", "inotify"]);
    assert!(w.stderr().contains("(inotify;"), "{}", w.stderr());
    for d in 0..30 {
        env.write(format!("new{d:02}/b.txt"), format!("{d}"));
    }
    w.wait_for("the limit warning", Duration::from_secs(30), |w| {
        w.stderr().contains(LIMIT_LINE)
    });
    env.write("new29/late.txt", "found by polling");
    w.wait_for("every file", Duration::from_secs(60), |_| {
        (0..30)
            .all(|d| read(&env.dst.join(format!("new{d:02}/b.txt"))) == format!("{d}").as_bytes())
            && read(&env.dst.join("new29/late.txt")) == b"found by polling"
    });
    let (_, err) = stop_ok(w);
    assert_eq!(
        err.lines().filter(|l| l.contains(LIMIT_LINE)).count(),
        1,
        "{err}"
    );
}

/// Stops a watch with Ctrl-C, checks that it ended well, and returns its stdout and stderr.
fn stop_ok(w: Watch) -> (String, String) {
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{out}{err}");
    (out, err)
}

/// `watch --events fanotify`, or `None` with the reason where this is not root.
fn fanotify_watch(env: &Env) -> Option<Watch> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: fanotify needs root (CAP_SYS_ADMIN)");
        return None;
    }
    let w = Watch::start(env, &["--debounce", "100ms", "--events", "fanotify", "-v"]);
    assert!(w.stderr().contains("(fanotify;"), "{}", w.context());
    w.wait_for("the watch plan", Duration::from_secs(10), |w| {
        w.stderr().contains("Watch plan: one fanotify mark")
    });
    Some(w)
}

#[test]
fn as_root_one_fanotify_mark_sees_every_change_without_a_watch_per_folder() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    for d in 0..50 {
        env.write(format!("d{d:02}/deep/a.txt"), "a");
    }
    env.write("leaving.txt", "bye");
    let outside = env.root().join("outside.txt");
    fs::write(&outside, "from elsewhere").expect("write outside");
    let Some(w) = fanotify_watch(&env) else {
        return;
    };
    assert_eq!(
        common::inotify_watches(Some(w.pid())),
        0,
        "no watch per folder"
    );
    // Every first copy in place, so that the rewrite below makes a second version.
    w.wait_for("the first pass", Duration::from_secs(60), |_| {
        env.dst.join("leaving.txt").exists()
            && (0..50).all(|d| env.dst.join(format!("d{d:02}/deep/a.txt")).exists())
    });
    env.write("d07/deep/b.txt", "written");
    fs::write(env.src.join("d07/deep/a.txt"), "rewritten").expect("rewrite");
    fs::rename(&outside, env.src.join("moved-in.txt")).expect("move in");
    fs::rename(env.src.join("leaving.txt"), env.root().join("left.txt")).expect("move out");
    // A new folder with files made at once, before any event about it could be handled.
    fs::create_dir_all(env.src.join("new/inner")).expect("mkdir");
    for i in 0..20 {
        fs::write(env.src.join(format!("new/inner/f{i}")), format!("{i}")).expect("write");
    }
    let dst = &env.dst;
    w.wait_for("every change", Duration::from_secs(60), |_| {
        read(&dst.join("d07/deep/b.txt")) == b"written"
            && common::family(&dst.join("d07/deep"), "a.txt").len() == 2
            && read(&dst.join("moved-in.txt")) == b"from elsewhere"
            && fs::read_dir(dst).into_iter().flatten().flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("leaving_") && n.ends_with("_deleted.txt")
            })
            && (0..20)
                .all(|i| read(&dst.join(format!("new/inner/f{i}"))) == format!("{i}").as_bytes())
    });
    stop_ok(w);
}

#[test]
fn a_fanotify_queue_that_overflows_makes_a_full_pass() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let Some(_limit) = Sysctl::set_in("fanotify", "max_queued_events", "64") else {
        eprintln!("SKIPPED: cannot lower fs.fanotify.max_queued_events here (needs root)");
        return;
    };
    let Some(w) = fanotify_watch(&env) else {
        return;
    };
    w.wait_for("the first pass", Duration::from_secs(30), |w| {
        w.batches() >= 1
    });
    // Stopped, the watcher reads nothing while the storm fills its queue past 64 events.
    let pid = rustix::process::Pid::from_raw(w.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, Signal::STOP).expect("SIGSTOP");
    env.storm(100, 30);
    rustix::process::kill_process(pid, Signal::CONT).expect("SIGCONT");
    w.wait_for("all 3000 files", Duration::from_secs(120), |_| {
        env.storm_missing(100, 30) == 0
    });
    let (out, _) = stop_ok(w);
    assert!(out.contains("full pass: events were lost"), "{out}");
}

/// Whether the fanotify descriptor of `pid` holds an ignore mark on the inode `ino`: an
/// `ino:HEX` line of its fdinfo.
fn fanotify_ignores(pid: u32, ino: u64) -> bool {
    fanotify_ignore_marks(pid).contains(&ino)
}

/// The inodes with a non-empty ignore mask in the process's fanotify groups, as its fdinfo
/// lists them (`fanotify ino:1a2b sdev:… mflags:… mask:… ignored_mask:40000ce …`).
fn fanotify_ignore_marks(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v, 16).ok())
    };
    fds.flatten()
        .filter(|fd| {
            fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("[fanotify]"))
        })
        .flat_map(|fd| {
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            fs::read_to_string(info)
                .unwrap_or_default()
                .lines()
                .filter(|l| field(l, "ignored_mask:").is_some_and(|m| m != 0))
                .filter_map(|l| field(l, "ino:"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `fanotify_watch` over a SRC of one file, once that file is copied.
fn fanotify_watch_one_file(env: &Env) -> Option<Watch> {
    env.write("a.txt", "a");
    let w = fanotify_watch(env)?;
    w.wait_for("the first pass", Duration::from_secs(30), |_| {
        env.dst.join("a.txt").exists()
    });
    Some(w)
}

/// Ignore marks are bounded (4,096 folders): past that, the folder marked first gives its mark
/// up, so that a first pass into a DST of many folders keeps its newest folders marked instead
/// of giving up on marks.
#[test]
fn ignore_marks_stay_bounded_and_go_to_the_newest_folders() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let Some(w) = fanotify_watch_one_file(&env) else {
        return;
    };
    let outside = env.root().join("elsewhere");
    let folders: Vec<PathBuf> = (0..4_200)
        .map(|i| outside.join(format!("d{i:04}")))
        .collect();
    for dir in &folders {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join("f"), "x").expect("write");
    }
    let (first, last) = (common::ino(&folders[0]), common::ino(&folders[4_199]));
    w.wait_for(
        "an ignore mark on the folder written last",
        Duration::from_secs(30),
        |w| fanotify_ignores(w.pid(), last),
    );
    let marks = fanotify_ignore_marks(w.pid());
    assert!(marks.len() <= 4_096, "{} ignore marks", marks.len());
    assert!(marks.len() >= 4_000, "only {} ignore marks", marks.len());
    assert!(!marks.contains(&first), "the first folder kept its mark");
    stop_ok(w);
}

/// A folder outside SRC that events came from (DST's folders above all) gets an ignore mark, so
/// that the kernel drops its events; moved into SRC, it must be seen again: the marks are
/// cleared, and what is written in it afterwards is mirrored.
#[test]
fn a_folder_ignored_outside_the_source_is_seen_once_moved_in() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let Some(w) = fanotify_watch_one_file(&env) else {
        return;
    };
    let outside = env.root().join("elsewhere");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(outside.join("before.txt"), "written outside").expect("write");
    let ino = common::ino(&outside);
    w.wait_for(
        "an ignore mark on the folder outside SRC",
        Duration::from_secs(10),
        |w| fanotify_ignores(w.pid(), ino),
    );
    // Events in it now are dropped by the kernel; moved in, it is walked and seen again.
    fs::write(outside.join("before.txt"), "changed outside").expect("write");
    fs::rename(&outside, env.src.join("moved")).expect("move in");
    w.wait_for(
        "the folder walked, and its batch over",
        Duration::from_secs(30),
        |w| {
            read(&env.dst.join("moved/before.txt")) == b"changed outside"
                && w.stdout().contains("since start: copied 2,")
        },
    );
    fs::write(env.src.join("moved/after.txt"), "written inside").expect("write");
    fs::write(env.src.join("moved/before.txt"), "changed inside").expect("rewrite");
    w.wait_for(
        "the changes made in it after the move",
        Duration::from_secs(30),
        |_| {
            let dir = env.dst.join("moved");
            read(&dir.join("after.txt")) == b"written inside"
                && common::family(&dir, "before.txt")
                    .last()
                    .is_some_and(|n| read(&dir.join(n)) == b"changed inside")
        },
    );
    stop_ok(w);
}
