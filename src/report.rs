//! The only module that prints. One reporter turns outcomes into lines (for people, or JSON
//! Lines for programs, whose schema is the `Json` enum below), keeps the progress bar, and
//! decides nothing: what is counted, found or failed is decided by its callers.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::Failure;
use crate::escape::escape_into;
use crate::outcome::{Change, Counts, Event, Outcome};

/// How the run talks, decided once from the command line and the terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Style {
    /// JSON Lines on stdout instead of lines for people.
    pub json: bool,
    /// Only failures and the summary.
    pub quiet: bool,
    /// Also unchanged entries, and in `watch` each event's decision.
    pub verbose: bool,
    /// A progress bar on stderr during a first pass (only when stderr is a terminal).
    pub progress: bool,
    /// Titles say that nothing was written.
    pub dry_run: bool,
}

/// Every JSON line the program prints: `"type"` first, then the fields in this order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Json<'a> {
    Created {
        dst: JsonPath<'a>,
    },
    Status {
        name: Option<&'a str>,
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
        running: Option<&'a crate::state::Snapshot>,
        newest_copy_age_seconds: Option<u64>,
        failing: bool,
        stale: bool,
    },
    Copied {
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
        bytes: u64,
    },
    WouldCopy {
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
        bytes: u64,
    },
    Unchanged {
        src: JsonPath<'a>,
    },
    Updated {
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
        changed: Vec<&'static str>,
    },
    WouldUpdate {
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
        changed: Vec<&'static str>,
    },
    Deleted {
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
    },
    WouldDelete {
        src: JsonPath<'a>,
        dst: JsonPath<'a>,
    },
    Skipped {
        src: JsonPath<'a>,
        kind: &'a str,
    },
    Vanished {
        src: JsonPath<'a>,
    },
    Failed {
        src: JsonPath<'a>,
        error: String,
    },
    Missing {
        src: JsonPath<'a>,
    },
    Stale {
        src: JsonPath<'a>,
    },
    Differs {
        src: JsonPath<'a>,
    },
    Event {
        path: JsonPath<'a>,
        event: &'a str,
        decision: &'a str,
    },
    Batch {
        time: String,
        batch: JsonCounts,
        total: JsonCounts,
        /// Found by the first pass while still being written: copied once they settle.
        #[serde(skip_serializing_if = "is_zero")]
        settling: usize,
    },
    Waiting {
        time: String,
        remembered: usize,
        total: JsonCounts,
    },
    Left {
        changes: usize,
    },
    Summary {
        #[serde(flatten)]
        counts: JsonCounts,
        dry_run: bool,
    },
    VerifySummary {
        files: u64,
        up_to_date: u64,
        missing: u64,
        stale: u64,
        differs: u64,
        skipped: u64,
        failed: u64,
    },
    Version {
        file: JsonPath<'a>,
        path: JsonPath<'a>,
        captured: String,
        size: u64,
        latest: bool,
        deleted: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        folder: Option<JsonPath<'a>>,
    },
    Restored {
        from: JsonPath<'a>,
        to: JsonPath<'a>,
    },
    RestoreSummary {
        restored: u64,
        left_out: u64,
        failed: u64,
    },
    Pruned {
        path: JsonPath<'a>,
    },
    WouldPrune {
        path: JsonPath<'a>,
    },
    PruneSummary {
        files: u64,
        versions_kept: u64,
        versions_pruned: u64,
        failed: u64,
    },
}

#[derive(Serialize)]
struct JsonCounts {
    files: u64,
    copied: u64,
    unchanged: u64,
    skipped: u64,
    failed: u64,
}

impl From<&Counts> for JsonCounts {
    fn from(c: &Counts) -> JsonCounts {
        JsonCounts {
            files: c.total(),
            copied: c.copied,
            unchanged: c.unchanged,
            skipped: c.skipped,
            failed: c.failed,
        }
    }
}

/// A path in JSON: the string itself when it is UTF-8, else `base64:` and the standard base64 of
/// its bytes. Paths in the output are absolute, so a real path never starts with `base64:`.
struct JsonPath<'a>(&'a Path);

impl Serialize for JsonPath<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(self.0.as_os_str().as_bytes())
            )),
        }
    }
}

/// What `verify` found, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Findings {
    pub missing: u64,
    pub stale: u64,
    pub differs: u64,
}

/// One pair, as `backup status` shows it.
pub(crate) struct PairStatus {
    pub name: Option<String>,
    pub src: PathBuf,
    pub dst: PathBuf,
    /// What its running `watch` said last, if one runs.
    pub running: Option<crate::state::Snapshot>,
    pub newest_copy_age: Option<Duration>,
    pub failing: bool,
    pub stale: bool,
}

/// One version of a file, as `versions` lists it.
pub(crate) struct Listed<'a> {
    pub path: PathBuf,
    pub captured: String,
    pub size: u64,
    pub name: &'a Path,
    /// The record of a deletion, not a copy.
    pub deleted: bool,
    /// For the record of a deletion of a folder the file is in: that folder, relative to DST.
    pub folder: Option<&'a Path>,
}

/// Writes lines for events and summaries. Write errors on the output (a closed pipe) are
/// ignored: the backup goes on even when nobody reads its log.
pub(crate) struct Reporter<O: Write = io::BufWriter<io::Stdout>, E: Write = io::Stderr> {
    out: O,
    err: E,
    style: Style,
    /// Hidden unless `style.progress`: every write goes through it either way.
    bar: Progress,
    done: Counts,
}

impl Reporter {
    pub(crate) fn stdio(style: Style) -> Self {
        Reporter::new(io::BufWriter::new(io::stdout()), io::stderr(), style)
    }
}

impl<O: Write, E: Write> Reporter<O, E> {
    pub(crate) fn new(out: O, err: E, style: Style) -> Self {
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
        }
    }

    /// Starts showing progress for a pass; the totals are filled in later through
    /// `progress_handle` when a count runs alongside.
    pub(crate) fn progress_start(&mut self) {
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
    pub(crate) fn progress_handle(&self) -> Progress {
        self.bar.clone()
    }

    /// Clears the progress bar at the end of a pass.
    pub(crate) fn progress_end(&mut self) {
        self.bar.0.finish_and_clear();
    }

    /// Prints the line for one event.
    pub(crate) fn event(&mut self, ev: &Event) {
        self.done.add(&ev.outcome);
        self.bar.advance(self.done.total(), ev.bytes);
        if self.style.json {
            if let Some(line) = self.event_json(ev) {
                self.json(&line);
            }
        } else if let Some((line, to_stderr)) = self.event_text(ev) {
            if to_stderr {
                self.stderr_bytes(line);
            } else {
                self.stdout_line(line);
            }
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
            Outcome::Updated(dst, what) | Outcome::WouldUpdate(dst, what) if !s.quiet => {
                let label = if matches!(ev.outcome, Outcome::Updated(..)) {
                    "Updated: "
                } else {
                    "Would update: "
                };
                put(label, &ev.src);
                put(" -> ", dst);
                line.extend_from_slice(format!(" ({})", what.words().join(", ")).as_bytes());
                false
            }
            Outcome::Deleted(dst) | Outcome::WouldDelete(dst) if !s.quiet => {
                let label = if matches!(ev.outcome, Outcome::Deleted(_)) {
                    "Deleted: "
                } else {
                    "Would record deleted: "
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
            // Said once for the run, with the count, by its caller.
            Outcome::Failed(Failure::DestinationFull) => return None,
            Outcome::Failed(failure) => {
                put("Failed: ", &ev.src);
                line.extend_from_slice(b": ");
                line.extend_from_slice(failure.to_string().as_bytes());
                true
            }
            _ => return None,
        };
        Some((line, to_stderr))
    }

    fn event_json<'a>(&self, ev: &'a Event) -> Option<Json<'a>> {
        let src = JsonPath(&ev.src);
        Some(match &ev.outcome {
            Outcome::Copied(dst) => Json::Copied {
                src,
                dst: JsonPath(dst),
                bytes: ev.bytes,
            },
            Outcome::WouldCopy(dst, _) => Json::WouldCopy {
                src,
                dst: JsonPath(dst),
                bytes: ev.bytes,
            },
            Outcome::Updated(dst, what) => Json::Updated {
                src,
                dst: JsonPath(dst),
                changed: what.words(),
            },
            Outcome::WouldUpdate(dst, what) => Json::WouldUpdate {
                src,
                dst: JsonPath(dst),
                changed: what.words(),
            },
            Outcome::Deleted(dst) => Json::Deleted {
                src,
                dst: JsonPath(dst),
            },
            Outcome::WouldDelete(dst) => Json::WouldDelete {
                src,
                dst: JsonPath(dst),
            },
            Outcome::Unchanged if self.style.verbose => Json::Unchanged { src },
            Outcome::Skipped(why) => Json::Skipped { src, kind: why },
            Outcome::Vanished => Json::Vanished { src },
            Outcome::Failed(Failure::DestinationFull) => return None,
            Outcome::Failed(failure) => Json::Failed {
                src,
                error: failure.to_string(),
            },
            _ => return None,
        })
    }

    /// `verify`: a file whose newest copy is not its current content.
    pub(crate) fn finding(&mut self, src: &Path, change: Change) {
        let src_json = JsonPath(src);
        let (label, json) = match change {
            Change::New => ("Missing: ", Json::Missing { src: src_json }),
            Change::Changed => ("Stale: ", Json::Stale { src: src_json }),
            Change::Contents => ("Differs: ", Json::Differs { src: src_json }),
        };
        if self.style.json {
            return self.json(&json);
        }
        let mut line = label.as_bytes().to_vec();
        escape_into(&mut line, src);
        self.stdout_line(line);
    }

    /// The end of `verify`.
    pub(crate) fn verify_summary(&mut self, c: &Counts, f: &Findings) {
        if self.style.json {
            self.json(&Json::VerifySummary {
                files: c.total(),
                up_to_date: c.unchanged,
                missing: f.missing,
                stale: f.stale,
                differs: f.differs,
                skipped: c.skipped,
                failed: c.failed,
            });
        } else {
            let text = format!(
                "\nVerify Summary:\nFiles checked: {}\nUp to date: {}\nMissing: {}\nStale: {}\nDiffering: {}\nSkipped: {}\nUnreadable: {}",
                c.total(),
                c.unchanged,
                f.missing,
                f.stale,
                f.differs,
                c.skipped,
                c.failed
            );
            self.stdout_line(text.into_bytes());
        }
        self.flush();
    }

    /// `versions`: the history of one file, oldest first.
    pub(crate) fn history(&mut self, file: &Path, versions: &[Listed<'_>]) {
        if self.style.json {
            for (i, v) in versions.iter().enumerate() {
                self.json(&Json::Version {
                    file: JsonPath(file),
                    path: JsonPath(&v.path),
                    captured: v.captured.replace(' ', "T"),
                    size: v.size,
                    latest: i + 1 == versions.len(),
                    deleted: v.deleted,
                    folder: v.folder.map(JsonPath),
                });
            }
            return;
        }
        let mut block = Vec::new();
        escape_into(&mut block, file);
        for (i, v) in versions.iter().enumerate() {
            let size = if v.deleted {
                "deleted".to_string()
            } else {
                human_size(v.size)
            };
            block.extend_from_slice(format!("\n  {}  {size:>12}  ", v.captured).as_bytes());
            escape_into(&mut block, v.name);
            if let Some(folder) = v.folder {
                block.extend_from_slice(b"  (its folder ");
                escape_into(&mut block, folder);
                block.extend_from_slice(b" deleted)");
            }
            if i + 1 == versions.len() {
                block.extend_from_slice(b"  (latest)");
            }
        }
        self.stdout_line(block);
    }

    /// `status`: one pair.
    pub(crate) fn pair_status(&mut self, p: &PairStatus) {
        if self.style.json {
            return self.json(&Json::Status {
                name: p.name.as_deref(),
                src: JsonPath(&p.src),
                dst: JsonPath(&p.dst),
                running: p.running.as_ref(),
                newest_copy_age_seconds: p.newest_copy_age.map(|a| a.as_secs()),
                failing: p.failing,
                stale: p.stale,
            });
        }
        let mut block = Vec::new();
        if let Some(name) = &p.name {
            block.extend_from_slice(format!("{name}: ").as_bytes());
        }
        escape_into(&mut block, &p.src);
        block.extend_from_slice(b" -> ");
        escape_into(&mut block, &p.dst);
        let mut line = |text: String| {
            block.extend_from_slice(b"\n  ");
            block.extend_from_slice(text.as_bytes());
        };
        match &p.running {
            Some(s) => {
                line(format!(
                    "{} (watch, pid {}, since {})",
                    s.state, s.pid, s.started
                ));
                let never = || "none yet".to_string();
                line(format!(
                    "last pass {}, last copy {}; {} changes pending",
                    s.last_pass.clone().unwrap_or_else(never),
                    s.last_copy.clone().unwrap_or_else(never),
                    s.pending
                ));
                line(format!("failures since start: {}", s.failures));
                for f in &s.recent_failures {
                    line(format!("  {f}"));
                }
            }
            None => line("no watch running for this pair".to_string()),
        }
        line(match p.newest_copy_age {
            Some(age) => format!(
                "newest copy: {} ago{}",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                if p.stale { " (stale)" } else { "" }
            ),
            None => "newest copy: none (stale)".to_string(),
        });
        if p.failing {
            line("FAILING: the last batch had failures".to_string());
        }
        self.stdout_line(block);
    }

    /// `restore`: one file written back.
    pub(crate) fn restored(&mut self, from: &Path, to: &Path) {
        if self.style.json {
            return self.json(&Json::Restored {
                from: JsonPath(from),
                to: JsonPath(to),
            });
        }
        if self.style.quiet {
            return;
        }
        let mut line = b"Restored: ".to_vec();
        escape_into(&mut line, from);
        line.extend_from_slice(b" -> ");
        escape_into(&mut line, to);
        self.stdout_line(line);
    }

    /// The end of `restore`.
    pub(crate) fn restore_summary(&mut self, at: &str, restored: u64, left_out: u64, failed: u64) {
        if self.style.json {
            self.json(&Json::RestoreSummary {
                restored,
                left_out,
                failed,
            });
        } else {
            let text = format!(
                "\nRestore Summary (as of {at}):\nRestored: {restored}\nLeft out: {left_out}\nFailed: {failed}"
            );
            self.stdout_line(text.into_bytes());
        }
        self.flush();
    }

    /// `prune`: one version deleted (or, with `--dry-run`, to be deleted).
    pub(crate) fn pruned(&mut self, path: &Path) {
        let dry = self.style.dry_run;
        if self.style.json {
            let path = JsonPath(path);
            return self.json(&if dry {
                Json::WouldPrune { path }
            } else {
                Json::Pruned { path }
            });
        }
        if self.style.quiet {
            return;
        }
        let mut line = if dry {
            b"Would prune: ".to_vec()
        } else {
            b"Pruned: ".to_vec()
        };
        escape_into(&mut line, path);
        self.stdout_line(line);
    }

    /// The end of a pruning run: files looked at, versions kept, pruned, failed.
    pub(crate) fn prune_summary(&mut self, files: u64, kept: u64, pruned: u64, failed: u64) {
        if self.style.json {
            self.json(&Json::PruneSummary {
                files,
                versions_kept: kept,
                versions_pruned: pruned,
                failed,
            });
        } else {
            let title = if self.style.dry_run {
                "Prune Summary (dry run: nothing was deleted):"
            } else {
                "Prune Summary:"
            };
            let text = format!(
                "\n{title}\nFiles: {files}\nVersions kept: {kept}\nVersions pruned: {pruned}\nFailed: {failed}"
            );
            self.stdout_line(text.into_bytes());
        }
        self.flush();
    }

    /// In `watch --verbose`: what one event led to.
    pub(crate) fn decision(&mut self, path: &Path, what: &str, decision: &str) {
        if !self.style.verbose {
            return;
        }
        if self.style.json {
            self.json(&Json::Event {
                path: JsonPath(path),
                event: what,
                decision,
            });
        } else {
            let mut line = b"Event: ".to_vec();
            escape_into(&mut line, path);
            line.extend_from_slice(format!(" ({what}): {decision}").as_bytes());
            self.stdout_line(line);
        }
        self.flush();
    }

    /// After each batch of `watch`: the time, what the batch did, and the totals since start.
    pub(crate) fn rolling(&mut self, batch: &Counts, totals: &Counts, settling: usize) {
        let now = chrono::Local::now();
        if self.style.json {
            self.json(&Json::Batch {
                time: now.to_rfc3339(),
                batch: batch.into(),
                total: totals.into(),
                settling,
            });
        } else if !self.style.quiet {
            let settling = if settling > 0 {
                format!(", settling {settling}")
            } else {
                String::new()
            };
            let line = format!(
                "{} batch: {}{settling} | since start: {}",
                now.format("%H:%M:%S"),
                brief(batch),
                brief(totals)
            );
            self.stdout_line(line.into_bytes());
        }
        self.flush();
    }

    /// The block printed at the end of `once`, and when `watch` stops.
    pub(crate) fn summary(&mut self, c: &Counts) {
        if self.style.json {
            self.json(&Json::Summary {
                counts: c.into(),
                dry_run: self.style.dry_run,
            });
        } else {
            let title = if self.style.dry_run {
                "Backup Summary (dry run: nothing was written):"
            } else {
                "Backup Summary:"
            };
            let text = format!(
                "\n{title}\nTotal files processed: {}\nSuccessfully copied: {}\nUnchanged: {}\nSkipped: {}\nFailed copies: {}",
                c.total(),
                c.copied,
                c.unchanged,
                c.skipped,
                c.failed
            );
            self.stdout_line(text.into_bytes());
        }
        self.flush();
    }

    /// A plain line on stderr about what the run is doing (not with `--quiet`).
    pub(crate) fn info(&mut self, message: &str) {
        if !self.style.quiet {
            self.stderr_line(message);
        }
    }

    /// A plain line on stderr with `--verbose` only.
    pub(crate) fn detail(&mut self, message: &str) {
        if self.style.verbose {
            self.stderr_line(message);
        }
    }

    /// `Created destination DST` (on stderr; with `--json` a `created` line on stdout).
    pub(crate) fn created(&mut self, dst: &Path) {
        if self.style.json {
            self.json(&Json::Created { dst: JsonPath(dst) });
        } else {
            let mut line = b"Created destination ".to_vec();
            escape_into(&mut line, dst);
            if !self.style.quiet {
                self.stderr_bytes(line);
            }
        }
    }

    /// A line on stderr about the destination's state (gone, back, full) that is printed even
    /// with `--quiet`: a backup that stopped writing must say so.
    pub(crate) fn notice(&mut self, message: &str) {
        self.stderr_line(message);
    }

    /// While `watch` waits for its destination: the time, how many changes wait, and the totals
    /// since start, in place of a batch's rolling line.
    pub(crate) fn waiting(&mut self, remembered: usize, totals: &Counts) {
        let now = chrono::Local::now();
        if self.style.json {
            self.json(&Json::Waiting {
                time: now.to_rfc3339(),
                remembered,
                total: totals.into(),
            });
        } else if !self.style.quiet {
            let line = format!(
                "{} waiting for destination: {remembered} changes remembered | since start: {}",
                now.format("%H:%M:%S"),
                brief(totals)
            );
            self.stdout_line(line.into_bytes());
        }
        self.flush();
    }

    /// When `watch` stops with changes not yet copied (still settling, or a database locked):
    /// how many, left for the next run, whose first pass finds them.
    pub(crate) fn left(&mut self, changes: usize) {
        if self.style.json {
            self.json(&Json::Left { changes });
        } else {
            self.stderr_line(&format!(
                "Stopped with {changes} changed {} not copied yet (still being written or \
                 settling); the next run copies {}",
                if changes == 1 { "file" } else { "files" },
                if changes == 1 { "it" } else { "them" },
            ));
        }
        self.flush();
    }

    /// `warning: <message>` on stderr, for a problem the run works around.
    pub(crate) fn warning(&mut self, message: &str) {
        self.stderr_line(&format!("warning: {message}"));
    }

    /// `error: <message>` on stderr, for a problem that stops the run.
    pub(crate) fn error(&mut self, message: &str) {
        self.stderr_line(&format!("error: {message}"));
    }

    pub(crate) fn flush(&mut self) {
        let _ = self.out.flush();
    }

    fn json(&mut self, line: &Json<'_>) {
        if let Ok(text) = serde_json::to_string(line) {
            self.stdout_line(text.into_bytes());
        }
    }

    fn stdout_line(&mut self, mut line: Vec<u8>) {
        line.push(b'\n');
        let (bar, out) = (&self.bar.0, &mut self.out);
        bar.suspend(|| {
            let _ = out.write_all(&line);
        });
    }

    fn stderr_line(&mut self, text: &str) {
        self.stderr_bytes(text.as_bytes().to_vec());
    }

    /// Keeps stdout and stderr lines in the order they happened when both go to one terminal.
    fn stderr_bytes(&mut self, mut line: Vec<u8>) {
        line.push(b'\n');
        let (bar, out, err) = (&self.bar.0, &mut self.out, &mut self.err);
        bar.suspend(|| {
            let _ = out.flush();
            let _ = err.write_all(&line);
        });
    }
}

/// `copied 3, unchanged 0, skipped 0, failed 0`
fn brief(c: &Counts) -> String {
    format!(
        "copied {}, unchanged {}, skipped {}, failed {}",
        c.copied, c.unchanged, c.skipped, c.failed
    )
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
pub(crate) struct Progress(ProgressBar);

impl Progress {
    /// Counts `bytes` more done, `files` in all; free when the bar is hidden.
    fn advance(&self, files: u64, bytes: u64) {
        if self.visible() {
            self.0.inc(bytes);
            self.0.set_message(format!("{files} files"));
        }
    }

    /// Whether the bar is drawn at all (else counting the tree is wasted work).
    pub(crate) fn visible(&self) -> bool {
        !self.0.is_hidden()
    }

    pub(crate) fn total(&self, files: u64, bytes: u64) {
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
pub(crate) fn stopping() {
    let _ = io::stderr()
        .write_all(b"Stopping after the copies in flight (Ctrl-C again to stop at once)\n");
}

/// For serde: a count of nothing is left out.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Op;
    use serde_json::Value;
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
                Outcome::Failed(Failure::io(Op::Open, io::Error::from_raw_os_error(13))),
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
    fn json_lines_each_have_a_type_first() {
        let json = Style {
            json: true,
            ..Style::default()
        };
        let (out, err) = render(json, &sample());
        assert_eq!(err, "");
        let types: Vec<String> = out
            .lines()
            .map(|l| {
                assert!(l.starts_with("{\"type\":"), "{l}");
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
        let failed: Value = serde_json::from_str(out.lines().nth(3).expect("line")).expect("json");
        assert_eq!(failed["error"], "cannot open: Permission denied");
    }

    #[test]
    fn non_utf8_paths_are_lossless_in_json() {
        let p = Path::new(OsStr::from_bytes(b"/s/caf\xe9"));
        let v = serde_json::to_value(JsonPath(p)).expect("json");
        let s = v.as_str().expect("string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("base64:").expect("prefix"))
            .expect("base64");
        assert_eq!(raw, b"/s/caf\xe9");
        assert_eq!(
            serde_json::to_value(JsonPath(Path::new("/s/é"))).expect("json"),
            Value::String("/s/é".into())
        );
    }
}
