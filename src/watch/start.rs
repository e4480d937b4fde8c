//! Starting the watch: the watcher the user asked for, a watch or a poll for every folder of SRC,
//! and the priority a mirror left running all day keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::notifier::{self, Feed, Hub, Watcher};
use super::poller;
use crate::config::WatchConfig;
use crate::engine::Engine;
use crate::error::{About, Error, Why};
use crate::options::Events;
use crate::report::{Detail, Message, Reporter};

/// Starts the watcher the user asked for: polling with `--poll`, else inotify on every folder
/// of SRC, falling back to polling (with one line saying which limit to raise) when an OS limit
/// stands in the way.
pub(super) fn start(
    engine: &Engine,
    cfg: &WatchConfig,
    hub: &Hub,
    feed: &Feed,
    reporter: &mut Reporter,
) -> Option<Watcher> {
    let src = &engine.tree.src;
    if cfg.poll.is_none() && cfg.events != Events::Inotify {
        match Watcher::fanotify(src, &engine.tree.skip, feed) {
            Ok(w) => return Some(w),
            Err(e) if cfg.events == Events::Fanotify => {
                reporter.error(&Error::new(About::Source(src.clone()), Why::Fanotify(e)));
                return None;
            }
            Err(e) => reporter.say(&Message::Detail(Detail::NoFanotify(&e))),
        }
    }
    let started = match cfg.poll {
        Some(interval) => Ok(poll_tree(engine, interval, feed)),
        None => Watcher::native(hub, src, feed).and_then(|mut w| {
            watch_tree(engine, &mut w, Path::new(""))?;
            Ok(w)
        }),
    };
    let started = match started {
        Err(e) => match notifier::limit_warning(&e) {
            Some(warning) => {
                reporter.warning(&warning);
                Ok(poll_tree(engine, notifier::FALLBACK_POLL, feed))
            }
            None => Err(e),
        },
        ok => ok,
    };
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            let about = About::Source(src.clone());
            reporter.error(&Error::new(about, Why::Watch(e.to_string())));
            None
        }
    }
}

/// A poller for every folder that the backup covers, a round every `interval` at most.
pub(super) fn poll_tree(engine: &Engine, interval: Duration, feed: &Feed) -> Watcher {
    let mut w = Watcher::poll(&engine.tree.src, interval, feed);
    for dir in engine.tree.folders(Path::new("")) {
        let _ = w.add(&dir);
    }
    w
}

/// Watches every folder of the tree at `rel` that the backup covers. Called before that tree is
/// walked, so that a file made after the walk passed its folder still raises an event.
pub(super) fn watch_tree(engine: &Engine, watcher: &mut Watcher, rel: &Path) -> notify::Result<()> {
    if !watcher.per_folder() {
        return Ok(());
    }
    // Where not every folder fits under the watch limit, the ones left over are polled: the
    // folders most likely to change get the watches.
    let now = std::time::SystemTime::now();
    let base = engine.tree.src.join(rel).components().count();
    let mut dirs: Vec<(f64, PathBuf)> = engine
        .tree
        .folders(rel)
        .map(|dir| {
            let depth = dir.components().count().saturating_sub(base);
            let age = std::fs::symlink_metadata(&dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            (poller::priority(depth, age), dir)
        })
        .collect();
    dirs.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, dir) in dirs {
        watcher.add(&dir)?;
    }
    Ok(())
}

/// Lowers the priority of this thread, and of every thread it starts from now on (the workers
/// of every batch): idle I/O priority, and nice 10. A mirror left running all day copies when
/// nothing else wants the disk, and never makes the desktop stutter.
pub(super) fn be_a_good_neighbour() -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: a plain syscall with integer arguments; its result is checked.
    let set = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if set == -1 {
        return Err(std::io::Error::last_os_error());
    }
    rustix::process::setpriority_process(None, 10)?;
    Ok(())
}
