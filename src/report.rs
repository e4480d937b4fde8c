//! The only module that prints. Workers send `Event`s; one reporter turns them into lines and
//! counts.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::os::unix::ffi::OsStrExt;

/// What became of one source entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Copied to this destination path.
    Copied(PathBuf),
    Unchanged,
    /// This many entries of the folder `Event::src` were unchanged: one message for a folder
    /// instead of one per file, since nothing is printed for them.
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
    Deferred(std::time::Duration),
}

/// One source entry and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub src: PathBuf,
    pub outcome: Outcome,
}

/// How many entries ended which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub copied: u64,
    pub unchanged: u64,
    /// Skipped and vanished entries: neither copied nor failed.
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Copied(_) => self.copied += 1,
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

    /// `copied 3, unchanged 0, skipped 0, failed 0`
    pub fn brief(&self) -> String {
        format!(
            "copied {}, unchanged {}, skipped {}, failed {}",
            self.copied, self.unchanged, self.skipped, self.failed
        )
    }

    pub fn total(&self) -> u64 {
        self.copied + self.unchanged + self.skipped + self.failed
    }
}

/// Writes lines for events and summaries. Write errors on the output (a closed pipe) are
/// ignored: the backup goes on even when nobody reads its log.
pub struct Reporter<O: Write, E: Write> {
    out: O,
    err: E,
}

impl Reporter<io::BufWriter<io::Stdout>, io::Stderr> {
    pub fn stdio() -> Self {
        Reporter::new(io::BufWriter::new(io::stdout()), io::stderr())
    }
}

impl<O: Write, E: Write> Reporter<O, E> {
    pub fn new(out: O, err: E) -> Self {
        Reporter { out, err }
    }

    /// Prints the line for one event: `Copied:` on stdout; `Failed:`, `Skipped:` and
    /// `Vanished:` on stderr; nothing for an unchanged file.
    pub fn event(&mut self, ev: &Event) {
        let _ = match &ev.outcome {
            Outcome::Copied(dst) => {
                let mut line = b"Copied: ".to_vec();
                escape_into(&mut line, &ev.src);
                line.extend_from_slice(b" -> ");
                escape_into(&mut line, dst);
                line.push(b'\n');
                self.out.write_all(&line)
            }
            Outcome::Unchanged | Outcome::UnchangedIn(_) | Outcome::Deferred(_) => Ok(()),
            Outcome::Skipped(why) => {
                let mut line = b"Skipped: ".to_vec();
                escape_into(&mut line, &ev.src);
                line.extend_from_slice(format!(" ({why})\n").as_bytes());
                self.stderr_line(&line)
            }
            Outcome::Vanished => {
                let mut line = b"Vanished: ".to_vec();
                escape_into(&mut line, &ev.src);
                line.push(b'\n');
                self.stderr_line(&line)
            }
            Outcome::Failed(reason) | Outcome::Busy(reason) => {
                let mut line = b"Failed: ".to_vec();
                escape_into(&mut line, &ev.src);
                line.extend_from_slice(b": ");
                escape_into(&mut line, Path::new(reason));
                line.push(b'\n');
                self.stderr_line(&line)
            }
        };
    }

    /// The block printed at the end of `once` and when `watch` stops.
    pub fn summary(&mut self, c: &Counts) {
        let _ = write!(
            self.out,
            "\nBackup Summary:\nTotal files processed: {}\nSuccessfully copied: {}\nUnchanged: {}\nSkipped: {}\nFailed copies: {}\n",
            c.total(),
            c.copied,
            c.unchanged,
            c.skipped,
            c.failed
        );
        let _ = self.out.flush();
    }

    /// After each batch of `watch`: the time, what the batch did, and the totals since start.
    pub fn rolling(&mut self, batch: &Counts, totals: &Counts) {
        let now = chrono::Local::now().format("%H:%M:%S");
        let _ = writeln!(
            self.out,
            "{now} batch: {} | since start: {}",
            batch.brief(),
            totals.brief()
        );
        let _ = self.out.flush();
    }

    /// A plain line on stderr about what the run is doing.
    pub fn info(&mut self, message: &str) {
        let _ = self.out.flush();
        let line = format!("{message}\n");
        let _ = self.err.write_all(line.as_bytes());
    }

    /// `error: <message>` on stderr, for a problem that stops the run.
    pub fn error(&mut self, message: &str) {
        let _ = self.out.flush();
        let line = format!("error: {message}\n");
        let _ = self.err.write_all(line.as_bytes());
    }

    /// `warning: <message>` on stderr, for a problem the run works around.
    pub fn warning(&mut self, message: &str) {
        let _ = self.out.flush();
        let line = format!("warning: {message}\n");
        let _ = self.err.write_all(line.as_bytes());
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// Keeps stdout and stderr lines in the order they happened when both go to one terminal.
    fn stderr_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.flush()?;
        self.err.write_all(line)
    }
}

/// Printed when the first Ctrl-C or SIGTERM arrives, from the thread that receives signals.
pub fn stopping() {
    let _ = io::stderr()
        .write_all(b"Stopping after the copies in flight (Ctrl-C again to stop at once)\n");
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

    fn render(events: &[Event]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let mut r = Reporter::new(&mut out, &mut err);
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
        let ev = |src: &str, outcome| Event {
            src: PathBuf::from(src),
            outcome,
        };
        let (out, err) = render(&[
            ev(
                "/s/file2.txt",
                Outcome::Copied(PathBuf::from("/d/file2_20231124_153045.txt")),
            ),
            ev("/s/a", Outcome::Unchanged),
            ev("/s/p", Outcome::Skipped("fifo")),
            ev("/s/v", Outcome::Vanished),
            ev(
                "/s/x",
                Outcome::Failed("cannot open: Permission denied".into()),
            ),
        ]);
        assert_eq!(
            out,
            "Copied: /s/file2.txt -> /d/file2_20231124_153045.txt\n\nBackup Summary:\n\
             Total files processed: 5\nSuccessfully copied: 1\nUnchanged: 1\nSkipped: 2\n\
             Failed copies: 1\n"
        );
        assert_eq!(
            err,
            "Skipped: /s/p (fifo)\nVanished: /s/v\nFailed: /s/x: cannot open: Permission denied\n"
        );
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
