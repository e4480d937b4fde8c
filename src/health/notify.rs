//! Telling someone: a freedesktop notification on the user's session bus, a command, a URL
//! (ntfy, Gotify, any webhook), and Healthchecks-style pings. Each pair's notices go through one
//! thread of their own, so that a slow or dead target never holds up a copy; each is tried once,
//! with a timeout, and one that cannot be sent comes back as a warning line. A full queue drops
//! the notice rather than wait: the next change of condition is said anyway.

use std::collections::HashMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};

/// How long one target may take to take a notice.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a command run on a change of condition may run before it is killed.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Notices waiting to be sent, at most.
const QUEUE: usize = 16;

/// At the end of a run, how long notices still queued may take to go out.
const LAST_WORDS: Duration = Duration::from_secs(5);

/// Where notices go; any number of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    /// A notification on the user's desktop, over the session D-Bus.
    pub desktop: bool,
    /// A command run by `/bin/sh -c`, told the pair, condition and message in its environment.
    pub exec: Option<String>,
    /// A URL the message is POSTed to: as text with a `Title` header (ntfy and most webhooks),
    /// or as JSON (Gotify).
    pub url: Option<String>,
    pub url_json: bool,
    /// A Healthchecks check: `/start` when the watch starts, `/fail` on trouble, the URL itself
    /// on recovery and every `HEARTBEAT` while all is well.
    pub healthchecks: Option<String>,
}

impl Targets {
    pub(crate) fn is_empty(&self) -> bool {
        !self.desktop && self.exec.is_none() && self.url.is_none() && self.healthchecks.is_none()
    }
}

/// While all is well, a Healthchecks check is pinged this often, so that it notices a `watch`
/// that stopped or hangs.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(300);

/// One thing to say.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    pub kind: Kind,
    /// `failing`, `lost`, `full`, `stale`, `recovered`; `start` and `ok` for pings.
    pub state: &'static str,
    pub title: String,
    pub body: String,
    pub urgent: bool,
}

/// What a notice is for: a change of condition goes everywhere, a ping to Healthchecks only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Alert,
    /// The watch has started.
    Start,
    /// All is still well.
    Heartbeat,
}

/// Who is speaking: the pair, for a command's environment and a URL's JSON.
#[derive(Clone, Debug)]
pub(crate) struct Speaker {
    pub pair: String,
    pub src: String,
    pub dst: String,
}

/// The sending thread of one pair.
pub(crate) struct Notifier {
    tx: Option<Sender<Notice>>,
    failed: Receiver<String>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    /// Starts the thread; `None` when there is nowhere to send notices.
    pub(crate) fn start(targets: Targets, speaker: Speaker) -> Option<Notifier> {
        if targets.is_empty() {
            return None;
        }
        let (tx, rx) = bounded::<Notice>(QUEUE);
        let (failed_tx, failed) = unbounded();
        let (done_tx, done) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => {
                        let sender = Courier {
                            targets,
                            speaker,
                            http: reqwest::Client::builder().timeout(TIMEOUT).build().ok(),
                        };
                        for notice in rx {
                            for why in rt.block_on(sender.send(&notice)) {
                                let _ = failed_tx.send(why);
                            }
                        }
                    }
                    Err(e) => {
                        let _ = failed_tx.send(format!("cannot start: {e}"));
                    }
                }
                let _ = done_tx.send(());
            })
            .ok()?;
        Some(Notifier {
            tx: Some(tx),
            failed,
            done,
            thread: Some(thread),
        })
    }

    /// Queues a notice; a full queue drops it and says so.
    pub(crate) fn send(&self, notice: Notice) -> Result<(), String> {
        match self.tx.as_ref().map(|tx| tx.try_send(notice)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => Err(format!(
                "{QUEUE} notices are still waiting to be sent; one was dropped"
            )),
            _ => Err("the notifying thread has stopped".into()),
        }
    }

    /// The targets that failed since last asked, with the reason: one warning line each.
    pub(crate) fn failures(&self) -> Vec<String> {
        self.failed.try_iter().collect()
    }

    /// Lets what is queued go out, for a few seconds at most.
    pub(crate) fn finish(mut self) -> Vec<String> {
        self.tx = None;
        let finished = self.done.recv_timeout(LAST_WORDS).is_ok();
        if finished && let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.failures()
    }
}

/// What the thread holds.
struct Courier {
    targets: Targets,
    speaker: Speaker,
    http: Option<reqwest::Client>,
}

impl Courier {
    /// Sends one notice to every target it is for; the failures, one line each.
    async fn send(&self, n: &Notice) -> Vec<String> {
        let t = &self.targets;
        let mut failed = Vec::new();
        if let Some(url) = &t.healthchecks {
            let (to, body) = match (n.kind, n.state) {
                (Kind::Start, _) => (format!("{}/start", url.trim_end_matches('/')), ""),
                (Kind::Alert, "recovered") | (Kind::Heartbeat, _) => (url.clone(), &*n.body),
                (Kind::Alert, _) => (format!("{}/fail", url.trim_end_matches('/')), &*n.body),
            };
            if let Err(why) = self.post(&to, body.to_string(), Vec::new()).await {
                failed.push(format!("healthchecks {}: {why}", shown(url)));
            }
        }
        if n.kind != Kind::Alert {
            return failed;
        }
        if t.desktop
            && let Err(why) = within(TIMEOUT, desktop(n)).await
        {
            failed.push(format!("desktop: {why}"));
        }
        if let Some(cmd) = &t.exec
            && let Err(why) = within(EXEC_TIMEOUT, self.exec(cmd, n)).await
        {
            failed.push(format!("exec `{cmd}`: {why}"));
        }
        if let Some(url) = &t.url {
            let sent = if t.url_json {
                let body = serde_json::json!({
                    "title": n.title,
                    "message": n.body,
                    // Gotify's scale: 8 and up rings, 4 is a plain message.
                    "priority": if n.urgent { 8 } else { 4 },
                    "state": n.state,
                    "pair": self.speaker.pair,
                    "src": self.speaker.src,
                    "dst": self.speaker.dst,
                });
                let headers = vec![("Content-Type", "application/json".to_string())];
                self.post(url, body.to_string(), headers).await
            } else {
                let headers = vec![
                    ("Title", header_text(&n.title)),
                    ("Priority", if n.urgent { "high" } else { "default" }.into()),
                    (
                        "Tags",
                        if n.urgent {
                            "warning"
                        } else {
                            "white_check_mark"
                        }
                        .into(),
                    ),
                    ("Content-Type", "text/plain; charset=utf-8".into()),
                ];
                self.post(url, n.body.clone(), headers).await
            };
            if let Err(why) = sent {
                failed.push(format!("url {}: {why}", shown(url)));
            }
        }
        failed
    }

    async fn post(
        &self,
        url: &str,
        body: String,
        headers: Vec<(&str, String)>,
    ) -> Result<(), String> {
        let Some(http) = &self.http else {
            return Err("no HTTP client".into());
        };
        let mut req = http.post(url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        // The error's text may hold the URL, and so a token: only its kind is said.
        let res = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {}s", TIMEOUT.as_secs())
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            }
        })?;
        match res.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    }

    async fn exec(&self, cmd: &str, n: &Notice) -> Result<(), String> {
        let s = &self.speaker;
        let out = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .env("BACKUP_PAIR", &s.pair)
            .env("BACKUP_SRC", &s.src)
            .env("BACKUP_DST", &s.dst)
            .env("BACKUP_STATE", n.state)
            .env("BACKUP_TITLE", &n.title)
            .env("BACKUP_MESSAGE", &n.body)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        match said.lines().find(|l| !l.trim().is_empty()) {
            Some(line) => Err(format!("{}: {}", out.status, line.trim())),
            None => Err(out.status.to_string()),
        }
    }
}

/// A freedesktop notification on the session bus (found through `DBUS_SESSION_BUS_ADDRESS`, or
/// `$XDG_RUNTIME_DIR/bus` as under a systemd user service).
async fn desktop(n: &Notice) -> Result<(), String> {
    use zbus::zvariant::Value;
    let bus = zbus::Connection::session()
        .await
        .map_err(|e| format!("no session bus: {e}"))?;
    // Urgency 2 (critical) stays on screen until dismissed; 1 is normal.
    let hints: HashMap<&str, Value<'_>> =
        HashMap::from([("urgency", Value::U8(if n.urgent { 2 } else { 1 }))]);
    let icon = if n.urgent {
        "dialog-warning"
    } else {
        "emblem-default"
    };
    bus.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            "backup",
            0u32,
            icon,
            n.title.as_str(),
            n.body.as_str(),
            Vec::<&str>::new(),
            hints,
            -1i32,
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn within<F: Future<Output = Result<(), String>>>(
    limit: Duration,
    f: F,
) -> Result<(), String> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", limit.as_secs())))
}

/// A URL as it may be printed: its scheme and host, never its path, query or user, where a
/// topic, a token or a check's UUID lives.
pub(crate) fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => format!("{}:", u.scheme()),
        },
        Err(_) => "(not a URL)".into(),
    }
}

/// Whether `url` can be sent to: http or https, with a host. The error never repeats the URL.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("not an http:// or https:// URL".into());
    }
    Ok(())
}

/// A header's value: text as it is where it is plain ASCII, else as an RFC 2047 word (which
/// ntfy decodes), since a header cannot carry UTF-8.
fn header_text(text: &str) -> String {
    use base64::Engine;
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return text.to_string();
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    format!("=?UTF-8?B?{encoded}?=")
}

/// The pair as a notice names it: its name in the config file, else its source folder.
pub(crate) fn speaker(name: Option<&str>, src: &Path, dst: &Path) -> Speaker {
    let src = crate::escape::display(src).to_string();
    Speaker {
        pair: name.map_or_else(|| src.clone(), str::to_string),
        src,
        dst: crate::escape::display(dst).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_what_makes_it_secret() {
        assert_eq!(shown("https://ntfy.sh/my-secret-topic"), "https://ntfy.sh");
        assert_eq!(
            shown("http://user:pw@127.0.0.1:8080/message?token=abc"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shown("::"), "(not a URL)");
        assert!(check_url("https://hc-ping.com/uuid").is_ok());
        assert!(check_url("ftp://host/x").is_err());
        let e = check_url("my-secret-topic").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_title_that_is_not_ascii_goes_in_an_encoded_word() {
        assert_eq!(header_text("backup: work"), "backup: work");
        assert_eq!(header_text("café"), "=?UTF-8?B?Y2Fmw6k=?=");
    }
}
