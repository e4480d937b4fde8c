//! A storm with the inotify queue forced to overflow. The limit is machine-wide, so this file is
//! its own test binary with a single test, and the old value is restored on every exit path.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::{Env, Watch};
use rustix::process::Signal;

/// Sets a `/proc/sys` value and puts the old one back when dropped (also when a test panics).
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(name: &str, value: &str) -> Option<Sysctl> {
        let path = PathBuf::from("/proc/sys/fs/inotify").join(name);
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
    let env = Env::new();
    let Some(_limit) = Sysctl::set("max_queued_events", "64") else {
        eprintln!("SKIPPED: cannot lower fs.inotify.max_queued_events here (needs root)");
        return;
    };
    let w = Watch::start(&env, &["--debounce", "100ms"]);
    for d in 0..100 {
        let dir = env.src.join(format!("d{d:03}"));
        fs::create_dir(&dir).expect("mkdir");
        for f in 0..30 {
            fs::write(dir.join(format!("f{f:02}.txt")), format!("{d}/{f}")).expect("write");
        }
    }
    w.wait_for("all 3000 files", Duration::from_secs(120), |_| {
        (0..100).all(|d| {
            (0..30).all(|f| {
                fs::read(env.dst.join(format!("d{d:03}/f{f:02}.txt"))).unwrap_or_default()
                    == format!("{d}/{f}").as_bytes()
            })
        })
    });
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Successfully copied: 3000\n"), "{out}");
}
