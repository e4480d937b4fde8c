//! The filesystem watcher: notify over inotify, one non-recursive watch per folder, or notify's
//! poller. Its callback only stamps events with the time they arrived and forwards them into a
//! channel; it never blocks: when the channel is full it raises a flag that makes the loop run a
//! full pass instead.
//!
//! Folders are watched one by one, not with notify's recursive mode, so that folders left out of
//! the backup (excluded, or DST inside SRC) cost no watch and send no events. Settling and
//! de-duplication are done by `settle` and the loop, so no debouncer sits in between.
//! notify-debouncer-full was tried first and dropped for a measured reason: with one
//! non-recursive watch per folder it keeps the watched roots in a list that it scans on every
//! `watch()` call and, with its default file-id cache off on Linux, on every event, which made
//! starting and running quadratic in the number of folders on big trees.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use notify::{ErrorKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher as _};

/// Polling interval when the OS limit on watches forces polling and `--poll` was not given.
pub(crate) const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// What the watcher sends.
pub(crate) enum Msg {
    /// An event that can mean a change, and when it arrived.
    Event(notify::Event, Instant),
    Error(notify::Error),
}

/// The channel from the watcher to the loop, and the flag for a channel that overflowed.
pub(crate) struct Feed {
    pub(crate) rx: Receiver<Msg>,
    tx: Sender<Msg>,
    pub(crate) overflow: Arc<AtomicBool>,
}

impl Feed {
    pub(crate) fn new() -> Feed {
        let (tx, rx) = bounded(1 << 16);
        Feed {
            rx,
            tx,
            overflow: Arc::new(AtomicBool::new(false)),
        }
    }

    fn handler(&self) -> impl FnMut(notify::Result<notify::Event>) + Send + 'static {
        let (tx, overflow) = (self.tx.clone(), Arc::clone(&self.overflow));
        move |res| {
            let msg = match res {
                // Our own reads of SRC make an open event per file; dropping them here keeps a
                // long first pass from piling them up in the channel.
                Ok(e) if !super::changes::can_change(&e.kind) => return,
                Ok(e) => Msg::Event(e, Instant::now()),
                Err(e) => Msg::Error(e),
            };
            if let Err(TrySendError::Full(_)) = tx.try_send(msg) {
                overflow.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

/// A running watcher; dropping it stops it.
pub(crate) enum Watcher {
    /// inotify; folders are added with `add`.
    Native(RecommendedWatcher),
    /// Looks at the whole of SRC every interval; held only to keep it running.
    Poll(#[allow(dead_code)] PollWatcher),
}

fn config() -> notify::Config {
    // notify follows symlinks by default: a link to / would exhaust the watch limit and report
    // changes from outside SRC.
    notify::Config::default().with_follow_symlinks(false)
}

impl Watcher {
    /// An inotify watcher with no folders yet.
    pub(crate) fn native(feed: &Feed) -> notify::Result<Watcher> {
        Ok(Watcher::Native(RecommendedWatcher::new(
            feed.handler(),
            config(),
        )?))
    }

    /// A poller over all of `src`.
    pub(crate) fn poll(src: &Path, interval: Duration, feed: &Feed) -> notify::Result<Watcher> {
        let mut w = PollWatcher::new(feed.handler(), config().with_poll_interval(interval))?;
        w.watch(src, RecursiveMode::Recursive)?;
        Ok(Watcher::Poll(w))
    }

    pub(crate) fn is_polling(&self) -> bool {
        matches!(self, Watcher::Poll(_))
    }

    /// Starts watching the entries of one folder (not its subfolders). A folder that vanished
    /// meanwhile is no error: there is nothing left to watch.
    pub(crate) fn add(&mut self, dir: &Path) -> notify::Result<()> {
        let Watcher::Native(w) = self else {
            return Ok(());
        };
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Err(e) if vanished(&e) => Ok(()),
            other => other,
        }
    }
}

fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        ErrorKind::PathNotFound => true,
        ErrorKind::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        ),
        _ => false,
    }
}

/// For an error caused by an OS limit on inotify, the line that tells the user which limit and
/// how to raise it.
pub(crate) fn limit_message(e: &notify::Error) -> Option<String> {
    let (name, now) = match &e.kind {
        ErrorKind::MaxFilesWatch => ("max_user_watches", read_limit("max_user_watches")),
        ErrorKind::Io(io) if io.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => {
            ("max_user_instances", read_limit("max_user_instances"))
        }
        _ => return None,
    };
    let now = now.map_or(String::new(), |n| format!(" = {n}"));
    Some(format!(
        "the inotify limit fs.inotify.{name}{now} is reached, so changes are found by polling \
         every {}s instead; raise it with `sudo sysctl fs.inotify.{name}=524288` (and a line \
         `fs.inotify.{name}=524288` in /etc/sysctl.d/90-backup.conf to keep it)",
        FALLBACK_POLL.as_secs()
    ))
}

fn read_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
