//! The only module that prints. Callers hand over a `Message` (data, never prose); the text
//! printer (`text`) or the JSON Lines printer (`json`) words it; the `Reporter` keeps only the
//! progress bar, the counts it shows, and the order of stdout and stderr lines.

pub(crate) mod alert;
mod json;
mod message;
mod text;

use std::io::{self, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::outcome::{Counts, Event};

pub(crate) use self::message::{
    Detail, Difference, Findings, Listed, Message, Method, Notice, PairStatus, Plan, Service,
    Space, Tally, Warning,
};

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

/// One line (or block of lines) as a printer words it, and where it goes.
pub(crate) struct Line {
    to_stderr: bool,
    bytes: Vec<u8>,
}

impl Line {
    fn out(bytes: Vec<u8>) -> Line {
        Line {
            to_stderr: false,
            bytes,
        }
    }

    fn err(bytes: Vec<u8>) -> Line {
        Line {
            to_stderr: true,
            bytes,
        }
    }
}

/// Writes what the run says. Write errors on the output (a closed pipe) are ignored: the backup
/// goes on even when nobody reads its log.
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

    /// Says `m` in the run's format. Lines that end a step (summaries, rolling lines, notices)
    /// are flushed at once; a pass's many entry lines are left to the buffer.
    pub(crate) fn say(&mut self, m: &Message<'_>) {
        let line = if self.style.json {
            json::render(m, self.style)
        } else {
            text::render(m, self.style)
        };
        if let Some(line) = line {
            if line.to_stderr {
                self.stderr_bytes(line.bytes);
            } else {
                self.stdout_line(line.bytes);
            }
        }
        let many = matches!(
            m,
            Message::Entry(_)
                | Message::Finding { .. }
                | Message::History { .. }
                | Message::Status(_)
                | Message::Restored { .. }
                | Message::Pruned(_)
                | Message::Space { .. }
        );
        if !many {
            self.flush();
        }
    }

    /// Says what became of one entry, and counts it on the progress bar.
    pub(crate) fn event(&mut self, ev: &Event) {
        self.done.add(&ev.outcome);
        self.bar.advance(self.done.total(), ev.bytes);
        self.say(&Message::Entry(ev));
    }

    /// `error: <e>`.
    pub(crate) fn error(&mut self, e: &crate::error::Error) {
        self.say(&Message::Error(e));
    }

    /// `warning: <w>`.
    pub(crate) fn warning(&mut self, w: &Warning) {
        self.say(&Message::Warning(w));
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

    pub(crate) fn flush(&mut self) {
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
    fn stderr_bytes(&mut self, mut line: Vec<u8>) {
        line.push(b'\n');
        let (bar, out, err) = (&self.bar.0, &mut self.out, &mut self.err);
        bar.suspend(|| {
            let _ = out.flush();
            let _ = err.write_all(&line);
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Failure, Op};
    use crate::outcome::Outcome;
    use serde_json::Value;
    use std::path::PathBuf;

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
            r.say(&Message::Summary(&c));
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
}
