//! The filesystem watcher: notify over inotify, one non-recursive watch per folder, or notify's
//! poller. Its callback only stamps events with the time they arrived and forwards them into a
//! channel; it never blocks: when the channel is full it raises a flag that makes the loop run a
//! full pass instead.
//!
//! All pairs of one `watch` share one inotify instance (a `Hub`), which routes each event to
//! the pairs whose SRC holds its path: the OS allows few instances per user (128 by default),
//! and a desktop's file managers and editors need them too.
//!
//! Folders are watched one by one, not with notify's recursive mode, so that folders left out of
//! the backup (excluded, or DST inside SRC) cost no watch and send no events. Settling and
//! de-duplication are done by `settle` and the loop, so no debouncer sits in between.
//! notify-debouncer-full was tried first and dropped for a measured reason: with one
//! non-recursive watch per folder it keeps the watched roots in a list that it scans on every
//! `watch()` call and, with its default file-id cache off on Linux, on every event, which made
//! starting and running quadratic in the number of folders on big trees.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use notify::{ErrorKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::fanotify::Fanotify;
use super::poller::{Poller, Sink};
use crate::report::{Method, Plan, Warning};

/// Polling interval when the OS limit on watches forces polling and `--poll` was not given.
pub(crate) const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// What the watcher sends (to every pair it concerns: warnings are shared).
#[derive(Clone)]
pub(crate) enum Msg {
    /// An event that can mean a change, and when it arrived.
    Event(notify::Event, Instant),
    /// An OS limit on inotify was hit (a watch for a new folder could not be added): the
    /// warning that says which limit and how to raise it.
    Limit(Arc<Warning>),
    /// Folders are polled less often than a user would take for granted: those that did not
    /// fit under the watch limit, or, with `--poll`, a tree too big to poll as often as asked
    /// within its share of a core.
    Paced(Arc<Warning>),
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

    fn route(&self, src: PathBuf) -> Route {
        Route {
            src,
            tx: self.tx.clone(),
            overflow: Arc::clone(&self.overflow),
        }
    }
}

/// What the watcher's callback forwards, if anything.
fn message(res: notify::Result<notify::Event>) -> Option<Msg> {
    match res {
        // Our own reads of SRC make an open event per file; dropping them here keeps a long
        // first pass from piling them up in the channel.
        Ok(e) if !super::changes::can_change(&e.kind) => None,
        Ok(e) => Some(Msg::Event(e, Instant::now())),
        // Other errors leave the watch as it is; the periodic full pass covers what they hide.
        Err(e) => limit_warning(&e).map(|w| Msg::Limit(Arc::new(w))),
    }
}

/// Where the shared watcher sends what happens under one pair's SRC.
#[derive(Clone)]
struct Route {
    src: PathBuf,
    tx: Sender<Msg>,
    overflow: Arc<AtomicBool>,
}

impl Route {
    /// Never blocks: a full channel raises the overflow flag instead.
    fn deliver(&self, msg: Msg) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    /// Whether `msg` concerns this pair: an event under its SRC, or one without paths (lost
    /// events) and a limit, which any pair may have hit.
    fn wants(&self, msg: &Msg) -> bool {
        match msg {
            Msg::Event(e, _) if !e.paths.is_empty() => {
                e.paths.iter().any(|p| p.starts_with(&self.src))
            }
            _ => true,
        }
    }
}

/// One inotify instance for every pair of a `watch`, started by the first pair that needs it.
#[derive(Clone, Default)]
pub(crate) struct Hub {
    watcher: Arc<Mutex<Option<RecommendedWatcher>>>,
    routes: Arc<Mutex<Vec<Route>>>,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub::default()
    }

    /// Sends what happens under `src` into `feed` from now on, starting the inotify instance if
    /// this is the first pair.
    fn join(&self, src: &Path, feed: &Feed) -> notify::Result<()> {
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if watcher.is_none() {
            let routes = Arc::clone(&self.routes);
            let handler = move |res| {
                let Some(msg) = message(res) else { return };
                let routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
                let mut wanting = routes.iter().filter(|r| r.wants(&msg)).peekable();
                while let Some(route) = wanting.next() {
                    if wanting.peek().is_none() {
                        route.deliver(msg);
                        break;
                    }
                    route.deliver(msg.clone());
                }
            };
            *watcher = Some(RecommendedWatcher::new(handler, config())?);
        }
        self.lock_routes().push(feed.route(src.to_path_buf()));
        Ok(())
    }

    /// Stops sending into the feed that `overflow` belongs to. Its folders stay watched until
    /// the last pair stops: the OS drops a watch once its folder is gone, and a folder another
    /// pair also holds must stay watched for that pair.
    fn leave(&self, overflow: &Arc<AtomicBool>) {
        self.lock_routes()
            .retain(|r| !Arc::ptr_eq(&r.overflow, overflow));
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, Vec<Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn watch(&self, dir: &Path) -> notify::Result<()> {
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        match watcher.as_mut() {
            Some(w) => w.watch(dir, RecursiveMode::NonRecursive),
            None => Ok(()),
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
    /// A pair's share of the hub's inotify instance; folders are added with `add`, and those
    /// that do not fit under the watch limit are polled.
    Native(Share),
    /// `--poll`, or no inotify at all: every folder is polled, and added with `add`.
    Poll(Poller),
    /// One fanotify mark on SRC's filesystem; held only to keep its reader running.
    Fanotify(#[allow(dead_code)] Fanotify),
}

fn config() -> notify::Config {
    // notify follows symlinks by default: a link to / would exhaust the watch limit and report
    // changes from outside SRC.
    notify::Config::default().with_follow_symlinks(false)
}

impl Watcher {
    /// A share of `hub`'s inotify instance for the pair backing up `src`, with no folders yet.
    pub(crate) fn native(hub: &Hub, src: &Path, feed: &Feed) -> notify::Result<Watcher> {
        hub.join(src, feed)?;
        Ok(Watcher::Native(Share {
            hub: hub.clone(),
            overflow: Arc::clone(&feed.overflow),
            route: feed.route(src.to_path_buf()),
            watched: Arc::new(AtomicUsize::new(0)),
            poller: None,
        }))
    }

    /// One fanotify mark on the filesystem of `src`, its events outside SRC and under `skip`
    /// dropped.
    pub(crate) fn fanotify(src: &Path, skip: &[PathBuf], feed: &Feed) -> std::io::Result<Watcher> {
        let route = feed.route(src.to_path_buf());
        let f = Fanotify::start(src, skip.to_vec(), move |event| {
            route.deliver(Msg::Event(event, Instant::now()));
        })?;
        Ok(Watcher::Fanotify(f))
    }

    /// A poller for every folder of `src` (added with `add`), a round every `interval` or, where
    /// that would cost more than its share of a core, as often as that allows.
    pub(crate) fn poll(src: &Path, interval: Duration, feed: &Feed) -> Watcher {
        let sink = PollSink {
            route: feed.route(src.to_path_buf()),
            hub: None,
            watched: Arc::new(AtomicUsize::new(0)),
            asked: Some(interval),
        };
        Watcher::Poll(Poller::start(sink, interval))
    }

    pub(crate) fn is_polling(&self) -> bool {
        matches!(self, Watcher::Poll(_))
    }

    /// Whether each folder needs a watch of its own (inotify); fanotify and the poller cover
    /// the whole tree.
    pub(crate) fn per_folder(&self) -> bool {
        matches!(self, Watcher::Native(_) | Watcher::Poll(_))
    }

    /// Starts watching the entries of one folder (not its subfolders). A folder that vanished
    /// meanwhile is no error: there is nothing left to watch. A folder over the watch limit is
    /// polled instead.
    pub(crate) fn add(&mut self, dir: &Path) -> notify::Result<()> {
        let w = match self {
            Watcher::Native(w) => w,
            Watcher::Poll(p) => {
                p.add(dir.to_path_buf());
                return Ok(());
            }
            Watcher::Fanotify(_) => return Ok(()),
        };
        match w.hub.watch(dir) {
            Ok(()) => {
                w.watched.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if vanished(&e) => Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => {
                w.poll(dir.to_path_buf());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// How many folders are polled because they did not fit under the watch limit.
    pub(crate) fn polled(&self) -> usize {
        match self {
            Watcher::Native(w) => w.poller.as_ref().map_or(0, Poller::len),
            Watcher::Poll(_) | Watcher::Fanotify(_) => 0,
        }
    }

    /// The watch plan, for `-v` at the start: what is watched and what polled, and how.
    pub(crate) fn plan(&self) -> Plan {
        match self {
            Watcher::Fanotify(_) => Plan::Fanotify,
            Watcher::Poll(p) => Plan::Polled { folders: p.len() },
            Watcher::Native(w) => Plan::Inotify {
                watched: w.watched.load(Ordering::Relaxed),
                polled: self.polled(),
            },
        }
    }

    /// How changes are found, for the `Watching` line.
    pub(crate) fn method(&self) -> Method {
        match self {
            Watcher::Poll(_) => Method::Polling,
            Watcher::Fanotify(_) => Method::Fanotify,
            Watcher::Native(_) => Method::Inotify {
                polled: self.polled(),
            },
        }
    }
}

/// One pair's part in a hub; dropping it stops the events for that pair.
pub(crate) struct Share {
    hub: Hub,
    overflow: Arc<AtomicBool>,
    route: Route,
    /// Folders of this pair with a watch.
    watched: Arc<AtomicUsize>,
    /// The folders that did not fit, once one did not.
    poller: Option<Poller>,
}

impl Share {
    fn poll(&mut self, dir: PathBuf) {
        let poller = self.poller.get_or_insert_with(|| {
            let sink = PollSink {
                route: self.route.clone(),
                hub: Some(self.hub.clone()),
                watched: Arc::clone(&self.watched),
                asked: None,
            };
            Poller::start(sink, super::poller::MIN_INTERVAL)
        });
        poller.add(dir);
    }
}

/// Where the poller of one pair sends what it finds, and how it gives folders back to inotify
/// (`hub`: none when everything is polled).
struct PollSink {
    route: Route,
    hub: Option<Hub>,
    watched: Arc<AtomicUsize>,
    /// The interval `--poll` asked for, when everything is polled.
    asked: Option<Duration>,
}

impl Sink for PollSink {
    fn event(&self, event: notify::Event) {
        self.route.deliver(Msg::Event(event, Instant::now()));
    }

    fn pace(&self, folders: usize, every: Duration) {
        let budget = super::poller::BUDGET;
        let warning = match self.asked {
            None => Warning::Polled {
                limit: read_limit("max_user_watches"),
                watched: self.watched.load(Ordering::Relaxed),
                polled: folders,
                every,
                budget,
            },
            // Said only where the tree is too big to poll as often as asked.
            Some(asked) if every > asked => Warning::Slowed {
                folders,
                asked,
                every,
                budget,
            },
            Some(_) => return,
        };
        self.route.deliver(Msg::Paced(Arc::new(warning)));
    }

    fn watch(&self, dir: &Path) -> bool {
        let Some(hub) = &self.hub else {
            return false;
        };
        let ok = hub.watch(dir).is_ok();
        if ok {
            self.watched.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.hub.leave(&self.overflow);
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
pub(crate) fn limit_warning(e: &notify::Error) -> Option<Warning> {
    let name = match &e.kind {
        ErrorKind::MaxFilesWatch => "max_user_watches",
        ErrorKind::Io(io) if io.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => {
            "max_user_instances"
        }
        _ => return None,
    };
    Some(Warning::InotifyLimit {
        name,
        now: read_limit(name),
        every: FALLBACK_POLL,
    })
}

fn read_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, EventKind};

    fn route(src: &str) -> Route {
        Feed::new().route(PathBuf::from(src))
    }

    fn event(paths: &[&str]) -> Msg {
        let mut e = notify::Event::new(EventKind::Create(CreateKind::File));
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        Msg::Event(e, Instant::now())
    }

    #[test]
    fn each_pair_gets_the_events_under_its_own_source() {
        let docs = route("/home/me/docs");
        assert!(docs.wants(&event(&["/home/me/docs/a.txt"])));
        assert!(docs.wants(&event(&["/home/me/docs/deep/a.txt"])));
        assert!(!docs.wants(&event(&["/home/me/docs2/a.txt"])), "a sibling");
        assert!(!docs.wants(&event(&["/home/me/photos/a.jpg"])));
        assert!(
            docs.wants(&event(&["/home/me/photos/a", "/home/me/docs/a"])),
            "a rename into it"
        );
        assert!(docs.wants(&event(&[])), "lost events concern every pair");
        assert!(
            docs.wants(&Msg::Limit(Arc::new(Warning::InotifyLimit {
                name: "max_user_watches",
                now: None,
                every: FALLBACK_POLL,
            }))),
            "so does a limit"
        );
    }
}
