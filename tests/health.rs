//! Knowing it works: a running `watch` says how far behind it is (state file, `status --json`,
//! a Prometheus metrics file checked by `promtool`), and says each change of condition once, on
//! a real session D-Bus (`dbus-daemon`, with a notification server in this test), through a
//! command, and to an HTTP server on 127.0.0.1 in this test. The conditions are driven for real:
//! a file made unreadable, a destination unmounted for a minute, a destination filled up.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mounts::Fs;
use common::{Env, Watch, read};
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(30);

/// The metrics file, parsed: each series (name and labels as written) and its value.
fn metrics(path: &Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            let state = series
                .split("state=\"")
                .nth(1)
                .and_then(|s| s.split('"').next());
            let key = match state {
                Some(s) => format!("{name}:{s}"),
                None => name.to_string(),
            };
            Some((key, value.parse().ok()?))
        })
        .collect()
}

fn metric(path: &Path, key: &str) -> Option<f64> {
    metrics(path).get(key).copied()
}

/// `promtool check metrics` on the file: where promtool is missing (CI installs Debian's
/// `prometheus`), says so and checks nothing.
fn promtool_accepts(path: &Path) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED (promtool check): promtool is not installed (Debian: prometheus)");
        return;
    };
    let text = std::fs::read(path).expect("metrics file");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&text)
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool refused the file:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&text)
    );
}

/// `backup status --json SRC DST`, parsed.
fn status(env: &Env) -> serde_json::Value {
    let out = Command::new(common::bin())
        .args(["status", "--json"])
        .arg(&env.src)
        .arg(&env.dst)
        .env("XDG_STATE_HOME", env.root().join(".state"))
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn the_lag_and_what_is_pending_show_in_the_metrics_and_the_status() {
    let env = Env::new();
    env.write("a.txt", "a");
    let prom = env.root().join("backup.prom");
    let w = Watch::start(
        &env,
        &[
            "--debounce",
            "3s",
            "--metrics-file",
            prom.to_str().expect("utf-8"),
        ],
    );
    w.wait_for("the first copy", LIMIT, |_| env.dst.join("a.txt").exists());
    w.wait_for("caught up in the metrics", LIMIT, |_| {
        metric(&prom, "backup_copied_total") == Some(1.0)
            && metric(&prom, "backup_pending_files") == Some(0.0)
    });
    promtool_accepts(&prom);
    let m = metrics(&prom);
    assert_eq!(m.get("backup_lag_seconds"), Some(&0.0), "{m:?}");
    assert_eq!(m.get("backup_destination_reachable"), Some(&1.0));
    assert_eq!(m.get("backup_state:ok"), Some(&1.0));
    assert_eq!(m.get("backup_state:failing"), Some(&0.0));
    assert!(
        m.get("backup_last_success_timestamp_seconds")
            .is_some_and(|t| *t > 1e9)
    );
    assert!(
        m.get("backup_destination_free_bytes")
            .is_some_and(|f| *f > 0.0)
    );

    // A change that waits 3 s to settle: behind by a second or two, 5 bytes pending.
    env.write("b.txt", "12345");
    // (Pending files are sized at most once a second.)
    w.wait_for(
        "the lag and the pending bytes in the metrics",
        LIMIT,
        |_| {
            metric(&prom, "backup_lag_seconds").is_some_and(|l| l >= 1.0)
                && metric(&prom, "backup_pending_bytes") == Some(5.0)
        },
    );
    let m = metrics(&prom);
    assert_eq!(m.get("backup_pending_files"), Some(&1.0), "{m:?}");
    let s = status(&env);
    let running = &s["running"];
    assert_eq!(running["pending"], 1, "{s}");
    assert_eq!(running["pending_bytes"], 5, "{s}");
    assert!(
        running["lag_seconds"].as_u64().is_some_and(|l| l >= 1),
        "{s}"
    );
    assert_eq!(running["health"], "ok", "{s}");

    // Copied: caught up again, everywhere.
    w.wait_for("caught up again", LIMIT, |_| {
        metric(&prom, "backup_pending_files") == Some(0.0)
            && metric(&prom, "backup_lag_seconds") == Some(0.0)
    });
    assert_eq!(read(&env.dst.join("b.txt")), b"12345");
    assert_eq!(metric(&prom, "backup_copied_total"), Some(2.0));
    promtool_accepts(&prom);
    let s = status(&env);
    assert_eq!(s["running"]["lag_seconds"], 0, "{s}");
    assert_eq!(s["running"]["pending"], 0, "{s}");
    assert!(s["running"]["last_success"].is_string(), "{s}");
    let (code, _, _) = w.stop(Signal::INT);
    assert_eq!(code, Some(0));
}

/// A session bus of this test's own: `dbus-daemon`, stopped by its PID when dropped.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start() -> Option<Bus> {
        let spawned = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else {
            eprintln!("SKIPPED: dbus-daemon is not installed (Debian: dbus-daemon)");
            return None;
        };
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("address");
        Some(Bus {
            child,
            address: line.trim().to_string(),
        })
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the notification server received: summary and body of each `Notify`.
type Received = Arc<Mutex<Vec<(String, String, u8)>>>;

struct Notifications {
    got: Received,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let urgency = hints
            .get("urgency")
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(255);
        let mut got = self.got.lock().expect("lock");
        got.push((summary, body, urgency));
        got.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("test".into(), "backup".into(), "1".into(), "1.2".into())
    }
}

/// Serves org.freedesktop.Notifications on the bus at `address` from a thread, until the test
/// ends; what it receives goes into the returned list.
fn notification_server(address: &str) -> Received {
    let got: Received = Arc::default();
    let server = Notifications {
        got: Arc::clone(&got),
    };
    let address = address.to_string();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .expect("address")
                .name("org.freedesktop.Notifications")
                .expect("name")
                .serve_at("/org/freedesktop/Notifications", server)
                .expect("serve")
                .build()
                .await
                .expect("connect the notification server");
            ready_tx.send(()).expect("ready");
            // Serves for as long as the test runs.
            std::future::pending::<()>().await;
            drop(conn);
        });
    });
    ready
        .recv_timeout(LIMIT)
        .expect("the notification server is up");
    got
}

/// `backup watch` without the power to read what its mode denies, though root.
fn watch_without_dac_override(env: &Env) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
        "--",
    ])
    .arg(common::bin())
    .arg("watch")
    .arg(&env.src)
    .arg(&env.dst)
    .env("XDG_STATE_HOME", env.root().join(".state"));
    c
}

fn can_drop_dac_override() -> bool {
    let ok = Command::new("setpriv")
        .args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: setpriv cannot drop CAP_DAC_OVERRIDE here");
    }
    ok
}

#[test]
fn a_file_that_cannot_be_read_is_said_once_on_the_desktop_and_so_is_its_recovery() {
    if !can_drop_dac_override() {
        return;
    }
    let Some(bus) = Bus::start() else {
        return;
    };
    let got = notification_server(&bus.address);
    let env = Env::new();
    env.write("a.txt", "a");
    let said = env.root().join("said.txt");
    let exec = format!(
        "printf '%s|%s|%s\\n' \"$BACKUP_STATE\" \"$BACKUP_PAIR\" \"$BACKUP_TITLE\" >> {}",
        said.display()
    );
    let mut cmd = watch_without_dac_override(&env);
    cmd.env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    let w = Watch::start_with(
        cmd,
        &env,
        &[
            "--debounce",
            "200ms",
            "--notify-desktop",
            "--notify-exec",
            &exec,
        ],
    );
    w.wait_for("the first copy", LIMIT, |_| env.dst.join("a.txt").exists());
    let secret = env.write("secret.txt", "locked away");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .expect("chmod 000");
    w.wait_for("the failure", LIMIT, |w| w.stderr().contains("Failed: "));
    w.wait_for("the failing notification", LIMIT, |_| {
        !got.lock().expect("lock").is_empty()
    });
    // More batches that fail the same way say nothing more.
    env.write("b.txt", "b");
    w.wait_for("another batch", LIMIT, |_| env.dst.join("b.txt").exists());
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod 644");
    w.wait_for("the recovery", LIMIT, |_| {
        got.lock().expect("lock").len() >= 2
    });
    assert_eq!(read(&env.dst.join("secret.txt")), b"locked away");
    let (code, out, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(1), "a file failed in this run\n{out}{err}");
    let got = got.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "once per change of condition: {got:?}");
    let src = env.src.display().to_string();
    assert_eq!(got[0].0, format!("backup of {src} is failing"), "{got:?}");
    assert!(
        got[0].1.starts_with("1 file could not be copied: ")
            && got[0].1.contains("secret.txt")
            && got[0].1.contains("Permission denied"),
        "{got:?}"
    );
    assert_eq!(got[0].2, 2, "urgent");
    assert_eq!(got[1].0, format!("backup of {src} has recovered"));
    assert!(
        got[1]
            .1
            .starts_with("every change is copied again (it was failing for ")
    );
    assert_eq!(got[1].2, 1, "normal");
    let lines = std::fs::read_to_string(&said).expect("the command ran");
    assert_eq!(
        lines,
        format!(
            "failing|{src}|backup of {src} is failing\nrecovered|{src}|backup of {src} has recovered\n"
        )
    );
    assert!(!err.contains("could not notify"), "{err}");
}

/// An HTTP server on 127.0.0.1 that answers 200 to everything and records each request: its
/// method and path, its `Title` header, and its body.
struct Http {
    port: u16,
    got: Arc<Mutex<Vec<(String, String, String)>>>,
}

fn http_server() -> Http {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("address").port();
    let got: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let (mut length, mut title) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap_or((&line, ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "title" => title = v.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let line: Vec<&str> = request.split_whitespace().take(2).collect();
            g.lock().expect("lock").push((
                line.join(" "),
                title,
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Http { port, got }
}

impl Http {
    fn requests(&self) -> Vec<(String, String, String)> {
        self.got.lock().expect("lock").clone()
    }
}

/// DST unmounted for a minute while `watch` checks for it every second and changes pile up:
/// one `lost` message after the grace period, one `recovered` when it is back, and the
/// Healthchecks check told the same (`/fail`, then the URL itself), never more.
#[test]
fn a_minute_without_the_destination_is_said_once_and_so_is_its_return() {
    let Some((mut m, env)) = common::mounts::env_on(Fs::Ext4, "backup") else {
        return;
    };
    let http = http_server();
    let prom = env.root().join("backup.prom");
    env.write("a.txt", "a");
    let w = Watch::start(
        &env,
        &[
            "--debounce",
            "200ms",
            "--lost-after",
            "3s",
            "--notify-url",
            &format!("http://127.0.0.1:{}/topic-secret", http.port),
            "--healthchecks",
            &format!("http://127.0.0.1:{}/check-uuid", http.port),
            "--metrics-file",
            prom.to_str().expect("utf-8"),
        ],
    );
    w.wait_for("the first copy", LIMIT, |_| env.dst.join("a.txt").exists());
    w.wait_for("the start ping", LIMIT, |_| {
        http.requests()
            .iter()
            .any(|r| r.0 == "POST /check-uuid/start")
    });
    m.unmount(false).expect("umount while watch runs");
    let outage = std::time::Instant::now();
    w.wait_for("the gone line", LIMIT, |w| {
        w.stderr().contains(" is gone (unmounted?)")
    });
    env.write("during.txt", "written while the drive was away");
    w.wait_for("the lost message", LIMIT, |_| {
        http.requests().iter().any(|r| r.0 == "POST /topic-secret")
    });
    assert_eq!(metric(&prom, "backup_destination_reachable"), Some(0.0));
    assert_eq!(metric(&prom, "backup_state:lost"), Some(1.0));
    // The rest of the minute, retried every second: nothing more is said (a second message
    // would end the wait early and fail here).
    let rest = Duration::from_secs(60).saturating_sub(outage.elapsed());
    let more = common::wait_until(rest, || {
        http.requests()
            .iter()
            .filter(|r| r.0 == "POST /topic-secret")
            .count()
            > 1
    });
    assert!(!more, "said twice while away: {:#?}", http.requests());
    m.mount_again().expect("mount again");
    w.wait_for("the copy owed", LIMIT, |_| {
        read(&env.dst.join("during.txt")) == b"written while the drive was away"
    });
    w.wait_for("the recovery", LIMIT, |_| {
        http.requests()
            .iter()
            .filter(|r| r.0 == "POST /topic-secret")
            .count()
            >= 2
    });
    w.wait_for("the metrics back", LIMIT, |_| {
        metric(&prom, "backup_state:ok") == Some(1.0)
            && metric(&prom, "backup_destination_reachable") == Some(1.0)
    });
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    let got = http.requests();
    let to = |path: &str| got.iter().filter(|r| r.0 == path).collect::<Vec<_>>();
    let messages = to("POST /topic-secret");
    assert_eq!(messages.len(), 2, "{got:#?}");
    assert_eq!(
        messages[0].1,
        format!("backup of {} has lost its destination", env.src.display())
    );
    assert!(
        messages[0]
            .2
            .starts_with(&format!("{} has been away for ", env.dst.display())),
        "{messages:?}"
    );
    assert_eq!(
        messages[1].1,
        format!("backup of {} has recovered", env.src.display())
    );
    assert!(
        messages[1]
            .2
            .contains("(it was without its destination for "),
        "{messages:?}"
    );
    assert_eq!(to("POST /check-uuid/start").len(), 1, "{got:#?}");
    assert_eq!(to("POST /check-uuid/fail").len(), 1, "{got:#?}");
    assert_eq!(to("POST /check-uuid").len(), 1, "the recovery: {got:#?}");
    assert!(!err.contains("secret") && !err.contains("uuid"), "{err}");
}

/// A destination that fills up is said at once (it needs someone to make room), and its
/// recovery when it has room again.
#[test]
fn a_full_destination_is_said_once_and_so_is_room_again() {
    let Some((env, small)) = common::small_dst("1m") else {
        return;
    };
    let http = http_server();
    env.write("first.txt", "first");
    let w = Watch::start(
        &env,
        &[
            "--debounce",
            "200ms",
            "--notify-url",
            &format!("http://127.0.0.1:{}/alerts", http.port),
            "--notify-url-json",
        ],
    );
    w.wait_for("the first copy", LIMIT, |_| {
        env.dst.join("first.txt").exists()
    });
    for i in 0..8 {
        env.write(format!("big{i}.bin"), vec![b'b'; 256 << 10]);
    }
    w.wait_for("the full message", LIMIT, |_| !http.requests().is_empty());
    common::grow_to_8m(&small);
    w.wait_for("every owed copy", LIMIT, |_| {
        (0..8).all(|i| read(&env.dst.join(format!("big{i}.bin"))).len() == 256 << 10)
    });
    w.wait_for("the recovery", LIMIT, |_| http.requests().len() >= 2);
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    let got = http.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    let json: Vec<serde_json::Value> = got
        .iter()
        .map(|r| serde_json::from_str(&r.2).expect("JSON"))
        .collect();
    assert_eq!(json[0]["state"], "full", "{json:?}");
    assert_eq!(json[0]["priority"], 8);
    assert_eq!(
        json[0]["title"],
        format!("backup of {}: destination full", env.src.display())
    );
    assert_eq!(json[1]["state"], "recovered", "{json:?}");
    assert_eq!(json[1]["pair"], env.src.display().to_string());
}

#[test]
fn a_notification_that_cannot_be_sent_is_a_warning_and_the_backup_goes_on() {
    let env = Env::new();
    env.write("a.txt", "a");
    // A port nobody listens on, and a command that fails.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let w = Watch::start(
        &env,
        &[
            "--debounce",
            "200ms",
            "--stale-after",
            "1s",
            "--notify-url",
            &format!("http://127.0.0.1:{port}/secret-topic"),
            "--notify-exec",
            "echo cannot reach the pager >&2; exit 3",
        ],
    );
    w.wait_for("the first copy", LIMIT, |_| env.dst.join("a.txt").exists());
    // Written without end: never settles within the 1 s limit, so the mirror falls behind.
    let log = env.src.join("log.txt");
    // A line every 50 ms until told to stop (the wait is for the stop, paced).
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&log).expect("log");
            loop {
                let _ = f.write_all(b"line\n");
                match stopped.recv_timeout(Duration::from_millis(50)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        })
    };
    w.wait_for("both warnings", LIMIT, |w| {
        let e = w.stderr();
        e.contains("could not notify: url http://127.0.0.1:")
            && e.contains("could not notify: exec `")
    });
    let _ = stop.send(());
    writer.join().expect("writer");
    env.write("after.txt", "after");
    w.wait_for("copies go on", LIMIT, |_| {
        env.dst.join("after.txt").exists()
    });
    let (code, _, err) = w.stop(Signal::INT);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(": exit status: 3: cannot reach the pager"),
        "{err}"
    );
    assert!(
        !err.contains("secret-topic"),
        "the URL's path is never printed\n{err}"
    );
}
