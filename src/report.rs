//! The only module that prints. Workers send `Event`s; one reporter turns them into lines (for
//! people, or JSON Lines for programs), keeps the progress bar, and counts.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// What became of one source entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Copied to this destination path.
    Copied(PathBuf),
    /// With `--dry-run` (and for `verify`): would have been copied to this path, and why.
    WouldCopy(PathBuf, Change),
    Unchanged,
    /// This many entries of the folder `Event::src` were unchanged: one message for a folder
    /// instead of one per file, since nothing is printed for them unless `--verbose`.
    UnchangedIn(u64),
    /// Not a kind of entry that is copied (FIFO, socket, device); the word says which.
    Skipped(&'static str),
    /// Gone before or while it was read.
    Vanished,
    /// The reason, ready to print.
    Failed(String),
    /// Kept changing while it was read, every attempt; nothing was published. A failure for
    /// `once`; `watch` tries again once the file settles.
    Busy(String),
    /// Changed too recently to copy (found by a walk in `watch`): changed this long ago. Not
    /// printed or counted; `watch` copies it once it has settled.
    Deferred(Duration),
}

/// Why a file would be copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// No copy of it yet.
    New,
    /// Its newest copy has another size, time or type.
    Changed,
    /// Its newest copy has its size and time but other contents (found with `--checksum`).
    Contents,
}

/// One source entry and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub src: PathBuf,
    pub outcome: Outcome,
    /// Bytes of the entries the event covers, for the progress bar.
    pub bytes: u64,
}

impl Event {
    pub fn new(src: PathBuf, outcome: Outcome) -> Event {
        Event {
            src,
            outcome,
            bytes: 0,
        }
    }

    pub fn with_bytes(self, bytes: u64) -> Event {
        Event { bytes, ..self }
    }
}

/// How many entries ended which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Copied, or with `--dry-run` to be copied.
    pub copied: u64,
    pub unchanged: u64,
    /// Skipped and vanished entries: neither copied nor failed.
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Copied(_) | Outcome::WouldCopy(..) => self.copied += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::UnchangedIn(n) => self.unchanged += n,
            Outcome::Skipped(_) | Outcome::Vanished => self.skipped += 1,
            Outcome::Failed(_) | Outcome::Busy(_) => self.failed += 1,
            Outcome::Deferred(_) => {}
        }
    }

    pub fn merge(&mut self, other: Counts) {
        self.copied += other.copied;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }

    pub fn total(&self) -> u64 {
        self.copied + self.unchanged + self.skipped + self.failed
    }

    /// `copied 3, unchanged 0, skipped 0, failed 0`
    fn brief(&self) -> String {
        format!(
            "copied {}, unchanged {}, skipped {}, failed {}",
            self.copied, self.unchanged, self.skipped, self.failed
        )
    }

    fn json(&self) -> Value {
        json!({
            "files": self.total(),
            "copied": self.copied,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
        })
    }
}

/// How the run talks, decided once from the command line and the terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// JSON Lines on stdout instead of lines for people.
    pub json: bool,
    /// Only failures and the summary.
    pub quiet: bool,
    /// Also unchanged entries, and in `watch` each event's decision.
    pub verbose: bool,
    /// A progress bar on stderr during a first pass (only when stderr is a terminal).
    pub progress: bool,
    pub dry_run: bool,
    /// `verify`: what would be copied is a finding (missing, stale, differing), not a plan.
    pub verify: bool,
}

/// Writes lines for events and summaries. Write errors on the output (a closed pipe) are
/// ignored: the backup goes on even when nobody reads its log.
pub struct Reporter<O: Write = io::BufWriter<io::Stdout>, E: Write = io::Stderr> {
    out: O,
    err: E,
    style: Style,
    /// Hidden unless `style.progress`: every write goes through it either way.
    bar: Progress,
    done: Counts,
    /// `verify`: how many files were missing, stale, differing.
    findings: [u64; 3],
}

impl Reporter {
    pub fn stdio(style: Style) -> Self {
        Reporter::new(io::BufWriter::new(io::stdout()), io::stderr(), style)
    }
}

impl<O: Write, E: Write> Reporter<O, E> {
    pub fn new(out: O, err: E, style: Style) -> Self {
        let bar = if style.progress {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        Reporter {
            out,
            err,
            style,
            bar: Progress(bar),
            done: Counts::default(),
            findings: [0; 3],
        }
    }

    /// Starts showing progress for a pass; `total` (files, bytes) is filled in later by
    /// `progress_total` when a count runs alongside.
    pub fn progress_start(&mut self) {
        self.done = Counts::default();
        self.bar.0.reset();
        self.bar.0.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {bytes} at {binary_bytes_per_sec}, counting the rest",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        self.bar.0.set_message("0 files");
        self.bar.0.enable_steady_tick(Duration::from_millis(200));
    }

    /// A handle for the thread that counts the tree, to set the totals when it is done.
    pub fn progress_handle(&self) -> Progress {
        self.bar.clone()
    }

    /// Clears the progress bar at the end of a pass.
    pub fn progress_end(&mut self) {
        self.bar.0.finish_and_clear();
    }

    /// Prints the line for one event and counts it.
    pub fn event(&mut self, ev: &Event) {
        self.done.add(&ev.outcome);
        self.bar.advance(self.done.total(), ev.bytes);
        if let (true, Outcome::WouldCopy(_, change)) = (self.style.verify, &ev.outcome) {
            return self.finding(&ev.src, *change);
        }
        let line = if self.style.json {
            self.event_json(ev)
                .map(|v| (v.to_string().into_bytes(), false))
        } else {
            self.event_text(ev)
        };
        if let Some((mut line, to_stderr)) = line {
            line.push(b'\n');
            let (bar, out, err) = (&self.bar.0, &mut self.out, &mut self.err);
            bar.suspend(|| {
                let _ = if to_stderr {
                    out.flush().and_then(|()| err.write_all(&line))
                } else {
                    out.write_all(&line)
                };
            });
        }
    }

    /// The text line for an event, and whether it goes to stderr.
    fn event_text(&self, ev: &Event) -> Option<(Vec<u8>, bool)> {
        let s = self.style;
        let mut line = Vec::with_capacity(160);
        let mut put = |label: &str, path: &Path| {
            line.extend_from_slice(label.as_bytes());
            escape_into(&mut line, path);
        };
        let to_stderr = match &ev.outcome {
            Outcome::Copied(dst) | Outcome::WouldCopy(dst, _) if !s.quiet => {
                let label = if matches!(ev.outcome, Outcome::Copied(_)) {
                    "Copied: "
                } else {
                    "Would copy: "
                };
                put(label, &ev.src);
                put(" -> ", dst);
                false
            }
            // Not "Unchanged:", which a reader of the summary block would take for its line.
            Outcome::Unchanged if s.verbose => {
                put("Up to date: ", &ev.src);
                false
            }
            Outcome::Skipped(why) if !s.quiet => {
                put("Skipped: ", &ev.src);
                line.extend_from_slice(format!(" ({why})").as_bytes());
                true
            }
            Outcome::Vanished if !s.quiet => {
                put("Vanished: ", &ev.src);
                true
            }
            Outcome::Failed(reason) | Outcome::Busy(reason) => {
                put("Failed: ", &ev.src);
                put(": ", Path::new(reason));
                true
            }
            _ => return None,
        };
        Some((line, to_stderr))
    }

    fn event_json(&self, ev: &Event) -> Option<Value> {
        let src = json_path(&ev.src);
        Some(match &ev.outcome {
            Outcome::Copied(dst) => {
                json!({"type": "copied", "src": src, "dst": json_path(dst), "bytes": ev.bytes})
            }
            Outcome::WouldCopy(dst, _) => {
                json!({"type": "would_copy", "src": src, "dst": json_path(dst), "bytes": ev.bytes})
            }
            Outcome::Unchanged if self.style.verbose => json!({"type": "unchanged", "src": src}),
            Outcome::Skipped(why) => json!({"type": "skipped", "src": src, "kind": why}),
            Outcome::Vanished => json!({"type": "vanished", "src": src}),
            Outcome::Failed(e) | Outcome::Busy(e) => {
                json!({"type": "failed", "src": src, "error": e})
            }
            _ => return None,
        })
    }

    /// `verify`: a file whose newest copy is not its current content.
    fn finding(&mut self, src: &Path, change: Change) {
        let (label, kind, slot) = match change {
            Change::New => ("Missing: ", "missing", 0),
            Change::Changed => ("Stale: ", "stale", 1),
            Change::Contents => ("Differs: ", "differs", 2),
        };
        self.findings[slot] += 1;
        let line = if self.style.json {
            json!({"type": kind, "src": json_path(src)})
                .to_string()
                .into_bytes()
        } else {
            let mut line = label.as_bytes().to_vec();
            escape_into(&mut line, src);
            line
        };
        self.stdout_line(line);
    }

    /// The end of `verify`; returns whether everything held.
    pub fn verify_summary(&mut self, c: &Counts) -> bool {
        let [missing, stale, differs] = self.findings;
        let text = if self.style.json {
            json!({"type": "verify_summary", "files": c.total(), "up_to_date": c.unchanged,
                "missing": missing, "stale": stale, "differs": differs, "skipped": c.skipped,
                "failed": c.failed})
            .to_string()
        } else {
            format!(
                "\nVerify Summary:\nFiles checked: {}\nUp to date: {}\nMissing: {missing}\nStale: {stale}\nDiffering: {differs}\nSkipped: {}\nUnreadable: {}",
                c.total(),
                c.unchanged,
                c.skipped,
                c.failed
            )
        };
        self.stdout_line(text.into_bytes());
        let _ = self.out.flush();
        missing + stale + differs + c.failed == 0
    }

    /// `versions`: the history of one file, oldest first.
    pub fn history(&mut self, file: &Path, versions: &[(PathBuf, &crate::history::Version)]) {
        let when = |stamp: u64| {
            crate::naming::naive_of(stamp)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default()
        };
        if self.style.json {
            for (i, (path, v)) in versions.iter().enumerate() {
                let line = json!({"type": "version", "file": json_path(file), "path": json_path(path),
                    "captured": when(v.captured).replace(' ', "T"), "size": v.size,
                    "latest": i + 1 == versions.len()});
                self.stdout_line(line.to_string().into_bytes());
            }
            return;
        }
        let mut block = Vec::new();
        escape_into(&mut block, file);
        for (i, (path, v)) in versions.iter().enumerate() {
            block.extend_from_slice(
                format!("\n  {}  {:>12}  ", when(v.captured), human_size(v.size)).as_bytes(),
            );
            escape_into(&mut block, Path::new(path.file_name().unwrap_or_default()));
            if i + 1 == versions.len() {
                block.extend_from_slice(b"  (latest)");
            }
        }
        self.stdout_line(block);
    }

    /// `restore`: one file written back.
    pub fn restored(&mut self, from: &Path, to: &Path) {
        let line = if self.style.json {
            json!({"type": "restored", "from": json_path(from), "to": json_path(to)})
                .to_string()
                .into_bytes()
        } else if self.style.quiet {
            return;
        } else {
            let mut line = b"Restored: ".to_vec();
            escape_into(&mut line, from);
            line.extend_from_slice(b" -> ");
            escape_into(&mut line, to);
            line
        };
        self.stdout_line(line);
    }

    /// `prune`: one version deleted (or, with `--dry-run`, to be deleted).
    pub fn pruned(&mut self, path: &Path) {
        let dry = self.style.dry_run;
        let line = if self.style.json {
            json!({"type": if dry { "would_prune" } else { "pruned" }, "path": json_path(path)})
                .to_string()
                .into_bytes()
        } else if self.style.quiet {
            return;
        } else {
            let mut line = if dry {
                b"Would prune: ".to_vec()
            } else {
                b"Pruned: ".to_vec()
            };
            escape_into(&mut line, path);
            line
        };
        self.stdout_line(line);
    }

    /// A summary block of `restore` or `prune`: a title and labelled counts.
    pub fn tally(&mut self, kind: &str, title: &str, rows: &[(&str, u64)]) {
        let text = if self.style.json {
            let mut v = json!({"type": kind});
            for (label, n) in rows {
                v[label.to_lowercase().replace(' ', "_")] = (*n).into();
            }
            v.to_string()
        } else {
            let mut t = format!("\n{title}");
            for (label, n) in rows {
                t.push_str(&format!("\n{label}: {n}"));
            }
            t
        };
        self.stdout_line(text.into_bytes());
        let _ = self.out.flush();
    }

    /// In `watch --verbose`: what one event led to.
    pub fn decision(&mut self, path: &Path, what: &str, decision: &str) {
        if !self.style.verbose {
            return;
        }
        let line = if self.style.json {
            json!({"type": "event", "path": json_path(path), "event": what, "decision": decision})
                .to_string()
                .into_bytes()
        } else {
            let mut line = b"Event: ".to_vec();
            escape_into(&mut line, path);
            line.extend_from_slice(format!(" ({what}): {decision}").as_bytes());
            line
        };
        self.stdout_line(line);
        let _ = self.out.flush();
    }

    /// After each batch of `watch`: the time, what the batch did, and the totals since start.
    pub fn rolling(&mut self, batch: &Counts, totals: &Counts) {
        let now = chrono::Local::now();
        let line = if self.style.json {
            json!({"type": "batch", "time": now.to_rfc3339(), "batch": batch.json(), "total": totals.json()})
                .to_string()
        } else if self.style.quiet {
            return;
        } else {
            format!(
                "{} batch: {} | since start: {}",
                now.format("%H:%M:%S"),
                batch.brief(),
                totals.brief()
            )
        };
        self.stdout_line(line.into_bytes());
        let _ = self.out.flush();
    }

    /// The block printed at the end of `once`, and when `watch` stops.
    pub fn summary(&mut self, c: &Counts) {
        let text = if self.style.json {
            let mut v = json!({"type": "summary"});
            if let (Some(v), Value::Object(counts)) = (v.as_object_mut(), c.json()) {
                v.extend(counts);
            }
            v["dry_run"] = self.style.dry_run.into();
            v.to_string()
        } else {
            let title = if self.style.dry_run {
                "Backup Summary (dry run: nothing was written):"
            } else {
                "Backup Summary:"
            };
            format!(
                "\n{title}\nTotal files processed: {}\nSuccessfully copied: {}\nUnchanged: {}\nSkipped: {}\nFailed copies: {}",
                c.total(),
                c.copied,
                c.unchanged,
                c.skipped,
                c.failed
            )
        };
        self.stdout_line(text.into_bytes());
        let _ = self.out.flush();
    }

    /// A plain line on stderr about what the run is doing (not with `--quiet`).
    pub fn info(&mut self, message: &str) {
        if !self.style.quiet {
            self.stderr_line(message);
        }
    }

    /// `warning: <message>` on stderr, for a problem the run works around.
    pub fn warning(&mut self, message: &str) {
        self.stderr_line(&format!("warning: {message}"));
    }

    /// `error: <message>` on stderr, for a problem that stops the run.
    pub fn error(&mut self, message: &str) {
        self.stderr_line(&format!("error: {message}"));
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    fn stdout_line(&mut self, mut line: Vec<u8>) {
        line.push(b'\n');
        let (bar, out) = (&self.bar.0, &mut self.out);
        bar.suspend(|| {
            let _ = out.write_all(&line);
        });
    }

    /// Keeps stdout and stderr lines in the order they happened when both go to one terminal.
    fn stderr_line(&mut self, text: &str) {
        let (bar, out, err) = (&self.bar.0, &mut self.out, &mut self.err);
        bar.suspend(|| {
            let _ = out.flush();
            let _ = err.write_all(format!("{text}\n").as_bytes());
        });
    }
}

/// `1.5 KiB`, `12 B`: sizes for people.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The handle through which the counting thread sets the progress bar's totals.
#[derive(Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    /// Counts `bytes` more done, `files` in all; free when the bar is hidden.
    fn advance(&self, files: u64, bytes: u64) {
        if self.visible() {
            self.0.inc(bytes);
            self.0.set_message(format!("{files} files"));
        }
    }

    /// Whether the bar is drawn at all (else counting the tree is wasted work).
    pub fn visible(&self) -> bool {
        !self.0.is_hidden()
    }

    pub fn total(&self, files: u64, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{msg}} of {files}, {{bytes}} of {{total_bytes}} at {{binary_bytes_per_sec}}, {{eta}} left"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
}

/// Printed when the first Ctrl-C or SIGTERM arrives, from the thread that receives signals.
pub fn stopping() {
    let _ = io::stderr()
        .write_all(b"Stopping after the copies in flight (Ctrl-C again to stop at once)\n");
}

/// A path for JSON: the string itself when it is UTF-8, else `base64:` and the standard base64
/// of its bytes. Paths in the output are absolute, so a real path never starts with `base64:`.
pub fn json_path(p: &Path) -> Value {
    match p.to_str() {
        Some(s) => Value::String(s.to_string()),
        None => Value::String(format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(p.as_os_str().as_bytes())
        )),
    }
}

/// Appends `path` with control characters escaped, so that one entry is always one line.
/// Everything else, including bytes that are not UTF-8, is written as it is.
pub fn escape_into(out: &mut Vec<u8>, path: &Path) {
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if c.is_control() => {
                    out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes())
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
}

/// An OS error as a user reads it: `Permission denied`, without Rust's `(os error 13)`.
pub fn reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// `path` escaped as in the output, as a (lossy) string for messages built elsewhere.
pub fn display(path: &Path) -> String {
    let mut out = Vec::new();
    escape_into(&mut out, path);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn ev(src: &str, outcome: Outcome) -> Event {
        Event::new(PathBuf::from(src), outcome)
    }

    fn sample() -> Vec<Event> {
        vec![
            ev(
                "/s/file2.txt",
                Outcome::Copied(PathBuf::from("/d/file2_20231124_153045.txt")),
            )
            .with_bytes(5),
            ev("/s/a", Outcome::Unchanged),
            ev("/s", Outcome::UnchangedIn(2)),
            ev("/s/p", Outcome::Skipped("fifo")),
            ev("/s/v", Outcome::Vanished),
            ev(
                "/s/x",
                Outcome::Failed("cannot open: Permission denied".into()),
            ),
        ]
    }

    fn render(style: Style, events: &[Event]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let mut r = Reporter::new(&mut out, &mut err, style);
            let mut c = Counts::default();
            for e in events {
                r.event(e);
                c.add(&e.outcome);
            }
            r.summary(&c);
        }
        (
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    #[test]
    fn lines_and_summary_are_exact() {
        let (out, err) = render(Style::default(), &sample());
        assert_eq!(
            out,
            "Copied: /s/file2.txt -> /d/file2_20231124_153045.txt\n\nBackup Summary:\n\
             Total files processed: 7\nSuccessfully copied: 1\nUnchanged: 3\nSkipped: 2\n\
             Failed copies: 1\n"
        );
        assert_eq!(
            err,
            "Skipped: /s/p (fifo)\nVanished: /s/v\nFailed: /s/x: cannot open: Permission denied\n"
        );
    }

    #[test]
    fn quiet_keeps_failures_and_the_summary_only() {
        let quiet = Style {
            quiet: true,
            ..Style::default()
        };
        let (out, err) = render(quiet, &sample());
        assert!(out.starts_with("\nBackup Summary:\n"), "{out}");
        assert_eq!(err, "Failed: /s/x: cannot open: Permission denied\n");
    }

    #[test]
    fn verbose_adds_unchanged_entries() {
        let verbose = Style {
            verbose: true,
            ..Style::default()
        };
        let (out, _) = render(verbose, &sample());
        assert!(out.contains("Up to date: /s/a\n"), "{out}");
    }

    #[test]
    fn json_lines_each_have_a_type() {
        let json = Style {
            json: true,
            ..Style::default()
        };
        let (out, err) = render(json, &sample());
        assert_eq!(err, "");
        let types: Vec<String> = out
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("valid JSON");
                v["type"].as_str().expect("a type").to_string()
            })
            .collect();
        assert_eq!(
            types,
            ["copied", "skipped", "vanished", "failed", "summary"]
        );
        let last: Value = serde_json::from_str(out.lines().last().expect("line")).expect("json");
        assert_eq!(last["files"], 7);
        assert_eq!(last["dry_run"], false);
    }

    #[test]
    fn non_utf8_paths_are_lossless_in_json() {
        let p = Path::new(OsStr::from_bytes(b"/s/caf\xe9"));
        let v = json_path(p);
        let s = v.as_str().expect("string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("base64:").expect("prefix"))
            .expect("base64");
        assert_eq!(raw, b"/s/caf\xe9");
        assert_eq!(json_path(Path::new("/s/é")), Value::String("/s/é".into()));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            display(Path::new("a\nb\tc\u{1b}[31m\u{85}é")),
            "a\\nb\\tc\\u{1b}[31m\\u{85}é"
        );
        let mut out = Vec::new();
        escape_into(&mut out, Path::new(OsStr::from_bytes(b"x\xffy\n")));
        assert_eq!(out, b"x\xffy\\n");
    }
}
