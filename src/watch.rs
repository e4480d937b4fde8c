//! The filesystem watcher: notify-debouncer-full over inotify, or over polling. Its callback only
//! forwards events into a channel and never blocks; when the channel is full it raises a flag
//! that makes the loop run a full pass instead.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use notify::{ErrorKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, NoCache};

/// Polling interval when the OS limit on watches forces polling and `--poll` was not given.
pub const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// What the watcher sends.
pub enum Msg {
    Events(Vec<DebouncedEvent>),
    Errors(Vec<notify::Error>),
}

/// The channel from the watcher to the loop, and the flag for a channel that overflowed.
pub struct Feed {
    pub rx: Receiver<Msg>,
    tx: Sender<Msg>,
    pub overflow: Arc<AtomicBool>,
}

impl Feed {
    pub fn new() -> Feed {
        let (tx, rx) = bounded(65_536);
        Feed {
            rx,
            tx,
            overflow: Arc::new(AtomicBool::new(false)),
        }
    }

    fn handler(&self) -> impl FnMut(DebounceEventResult) + Send + 'static {
        let (tx, overflow) = (self.tx.clone(), Arc::clone(&self.overflow));
        move |res| {
            let msg = match res {
                Ok(mut events) => {
                    // Our own reads of SRC make an open event per file; dropping them here keeps
                    // a long first pass from piling them up in the channel.
                    events.retain(|e| crate::queue::can_change(&e.event.kind));
                    if events.is_empty() {
                        return;
                    }
                    Msg::Events(events)
                }
                Err(errors) => Msg::Errors(errors),
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
pub enum Watcher {
    Native(Debouncer<RecommendedWatcher, NoCache>),
    Poll(Debouncer<PollWatcher, NoCache>),
}

impl Watcher {
    pub fn is_polling(&self) -> bool {
        matches!(self, Watcher::Poll(_))
    }
}

/// How long the debouncer holds raw events to pair renames and merge duplicates. Settling
/// (`--debounce`) is done by the loop; this only needs to be short.
fn hold(debounce: Duration) -> (Duration, Duration) {
    let timeout = debounce.clamp(Duration::from_millis(4), Duration::from_millis(50));
    (timeout, (timeout / 4).max(Duration::from_millis(1)))
}

fn config() -> notify::Config {
    // notify follows symlinks by default: a link to / would exhaust the watch limit and report
    // changes from outside SRC.
    notify::Config::default().with_follow_symlinks(false)
}

/// Watches `src` recursively with inotify.
pub fn native(src: &Path, debounce: Duration, feed: &Feed) -> Result<Watcher, notify::Error> {
    let (timeout, tick) = hold(debounce);
    let mut d = notify_debouncer_full::new_debouncer_opt::<_, RecommendedWatcher, NoCache>(
        timeout,
        Some(tick),
        feed.handler(),
        NoCache,
        config(),
    )?;
    watch_retrying(src, |p| d.watch(p, RecursiveMode::Recursive))?;
    Ok(Watcher::Native(d))
}

/// Watches `src` by looking at it every `interval`.
pub fn poll(
    src: &Path,
    interval: Duration,
    debounce: Duration,
    feed: &Feed,
) -> Result<Watcher, notify::Error> {
    let (timeout, tick) = hold(debounce);
    let mut d = notify_debouncer_full::new_debouncer_opt::<_, PollWatcher, NoCache>(
        timeout,
        Some(tick),
        feed.handler(),
        NoCache,
        config().with_poll_interval(interval),
    )?;
    watch_retrying(src, |p| d.watch(p, RecursiveMode::Recursive))?;
    Ok(Watcher::Poll(d))
}

/// A folder that vanishes while the recursive watch is being set up fails the whole `watch()`
/// call; that is a race with the user's work, not a reason to give up.
fn watch_retrying(
    src: &Path,
    mut watch: impl FnMut(&Path) -> Result<(), notify::Error>,
) -> Result<(), notify::Error> {
    let mut attempt = 0;
    loop {
        match watch(src) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 && src.is_dir() && vanished(&e) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 * attempt));
            }
            Err(e) => return Err(e),
        }
    }
}

fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        ErrorKind::PathNotFound => true,
        ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// For an error caused by an OS limit on inotify, the line that tells the user which limit and
/// how to raise it.
pub fn limit_message(e: &notify::Error) -> Option<String> {
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
