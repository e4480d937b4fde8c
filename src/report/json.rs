//! The printer for programs: JSON Lines on stdout, one object per message, `"type"` first (the
//! `Json` enum is the schema). What a program does not act on (progress words, warnings,
//! errors) stays on stderr as the text printer words it.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use super::message::{Difference, Message, Notice};
use super::{Line, Style, text};
use crate::error::Failure;
use crate::outcome::{Change, Counts, Outcome};

/// The line for `m`, or nothing when this style leaves it out.
pub(super) fn render(m: &Message<'_>, s: Style) -> Option<Line> {
    let json = match m {
        Message::Entry(ev) => {
            let src = JsonPath(&ev.src);
            match &ev.outcome {
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
                Outcome::Unchanged if s.verbose => Json::Unchanged { src },
                Outcome::Skipped(why) => Json::Skipped { src, kind: why },
                Outcome::Vanished => Json::Vanished { src },
                Outcome::MadeRoom if s.dry_run => Json::WouldMakeRoom {
                    path: src,
                    bytes: ev.bytes,
                },
                Outcome::MadeRoom => Json::MadeRoom {
                    path: src,
                    bytes: ev.bytes,
                },
                // Said once for the run, with the count, by its caller.
                Outcome::Failed(Failure::DestinationFull) => return None,
                Outcome::Failed(failure) => Json::Failed {
                    src,
                    error: failure.to_string(),
                },
                _ => return None,
            }
        }
        Message::Finding { src, change } => {
            let src = JsonPath(src);
            match change {
                Change::New => Json::Missing { src },
                Change::Changed => Json::Stale { src },
                Change::Contents => Json::Differs { src },
            }
        }
        Message::History { file, versions } => {
            let lines: Vec<String> = versions
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    serde_json::to_string(&Json::Version {
                        file: JsonPath(file),
                        path: JsonPath(&v.path),
                        captured: v.captured.replace(' ', "T"),
                        size: v.size,
                        latest: i + 1 == versions.len(),
                        deleted: v.deleted,
                        folder: v.folder.map(JsonPath),
                    })
                    .ok()
                })
                .collect();
            return (!lines.is_empty()).then(|| Line::out(lines.join("\n").into_bytes()));
        }
        Message::Difference(c) => match c {
            Difference::Added { path, size } => Json::Added {
                path: JsonPath(path),
                size: *size,
            },
            Difference::Changed { path, before, size } => Json::Changed {
                path: JsonPath(path),
                before: *before,
                size: *size,
            },
            Difference::Deleted { path, size } => Json::Removed {
                path: JsonPath(path),
                size: *size,
            },
            Difference::Moved { from, path, size } => Json::Moved {
                from: JsonPath(from),
                path: JsonPath(path),
                size: *size,
            },
        },
        Message::DiffSummary(t) => Json::DiffSummary {
            added: t.added,
            changed: t.changed,
            deleted: t.deleted,
            moved: t.moved,
            grew: t.grew,
        },
        Message::NothingFound { .. } => return None,
        Message::Patch { path, text } => Json::Patch {
            path: JsonPath(path),
            text,
        },
        Message::Mounted { dst, mountpoint } => Json::Mounted {
            dst: JsonPath(dst),
            mountpoint: JsonPath(mountpoint),
        },
        Message::Status(p) => Json::Status {
            name: p.name.as_deref(),
            src: JsonPath(&p.src),
            dst: JsonPath(&p.dst),
            running: p.running.as_ref(),
            newest_copy_age_seconds: p.newest_copy_age.map(|a| a.as_secs()),
            failing: p.failing,
            stale: p.stale,
        },
        Message::Restored { from, to } => Json::Restored {
            from: JsonPath(from),
            to: JsonPath(to),
        },
        Message::Pruned(path) if s.dry_run => Json::WouldPrune {
            path: JsonPath(path),
        },
        Message::Pruned(path) => Json::Pruned {
            path: JsonPath(path),
        },
        Message::Decision { .. } if !s.verbose => return None,
        Message::Decision {
            path,
            event,
            decision,
        } => Json::Event {
            path: JsonPath(path),
            event,
            decision,
        },
        Message::Summary(c) => Json::Summary {
            counts: (*c).into(),
            dry_run: s.dry_run,
        },
        Message::VerifySummary { counts, findings } => Json::VerifySummary {
            files: counts.total(),
            up_to_date: counts.unchanged,
            missing: findings.missing,
            stale: findings.stale,
            differs: findings.differs,
            skipped: counts.skipped,
            failed: counts.failed,
        },
        Message::RestoreSummary {
            restored,
            left_out,
            failed,
            ..
        } => Json::RestoreSummary {
            restored: *restored,
            left_out: *left_out,
            failed: *failed,
        },
        Message::PruneSummary {
            files,
            kept,
            pruned,
            failed,
        } => Json::PruneSummary {
            files: *files,
            versions_kept: *kept,
            versions_pruned: *pruned,
            failed: *failed,
        },
        Message::Batch {
            at,
            batch,
            totals,
            settling,
        } => Json::Batch {
            time: at.to_rfc3339(),
            batch: (*batch).into(),
            total: (*totals).into(),
            settling: *settling,
        },
        Message::Waiting {
            at,
            remembered,
            totals,
        } => Json::Waiting {
            time: at.to_rfc3339(),
            remembered: *remembered,
            total: (*totals).into(),
        },
        Message::Left { changes } => Json::Left { changes: *changes },
        Message::Created(dst) => Json::Created { dst: JsonPath(dst) },
        Message::Destination(n) => destination(n),
        Message::Space { folder, space } => Json::Space {
            folder: folder.map(JsonPath),
            newest: space.newest,
            older: space.older,
            records: space.records,
            shared: space.shared,
        },
        // For people: on stderr, as worded for them.
        Message::Pair { .. }
        | Message::Watching { .. }
        | Message::Detail(_)
        | Message::Service(_)
        | Message::Warning(_)
        | Message::Error(_) => return text::render(m, s),
    };
    serde_json::to_string(&json)
        .ok()
        .map(|text| Line::out(text.into_bytes()))
}

fn destination<'a>(n: &'a Notice<'a>) -> Json<'a> {
    let (state, dst, reason, not_copied) = match n {
        Notice::InUse { dst, why } => ("in_use", dst, Some(why.to_string()), None),
        Notice::Unreachable { dst, why } => ("unreachable", dst, Some(why.to_string()), None),
        Notice::Gone { dst, why } => ("gone", dst, Some(why.to_string()), None),
        Notice::Full { dst, not_copied } => ("full", dst, None, Some(*not_copied)),
        Notice::Back { dst } => ("back", dst, None, None),
        Notice::HasSpace { dst } => ("has_space", dst, None, None),
    };
    Json::Destination {
        state,
        dst: JsonPath(dst),
        reason,
        not_copied,
    }
}

/// Every JSON line the program prints: `"type"` first, then the fields in this order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Json<'a> {
    Created {
        dst: JsonPath<'a>,
    },
    Added {
        path: JsonPath<'a>,
        size: u64,
    },
    Changed {
        path: JsonPath<'a>,
        before: u64,
        size: u64,
    },
    /// `diff`: a file there at the earlier time only (`deleted` is taken by `once`'s records).
    Removed {
        path: JsonPath<'a>,
        size: u64,
    },
    Moved {
        from: JsonPath<'a>,
        path: JsonPath<'a>,
        size: u64,
    },
    Mounted {
        dst: JsonPath<'a>,
        mountpoint: JsonPath<'a>,
    },
    Patch {
        path: JsonPath<'a>,
        text: &'a str,
    },
    DiffSummary {
        added: u64,
        changed: u64,
        deleted: u64,
        moved: u64,
        grew: i128,
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
    /// `--keep-free`: an old version pruned to make room.
    MadeRoom {
        path: JsonPath<'a>,
        bytes: u64,
    },
    WouldMakeRoom {
        path: JsonPath<'a>,
        bytes: u64,
    },
    /// The destination went away, filled up, or came back.
    Destination {
        state: &'static str,
        dst: JsonPath<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        not_copied: Option<u64>,
    },
    /// `du`: a folder's bytes; without `folder`, all of them.
    Space {
        #[serde(skip_serializing_if = "Option::is_none")]
        folder: Option<JsonPath<'a>>,
        newest: u64,
        older: u64,
        records: u64,
        shared: u64,
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
    #[serde(skip_serializing_if = "is_zero_u64")]
    made_room: u64,
}

impl From<&Counts> for JsonCounts {
    fn from(c: &Counts) -> JsonCounts {
        JsonCounts {
            files: c.total(),
            copied: c.copied,
            unchanged: c.unchanged,
            skipped: c.skipped,
            failed: c.failed,
            made_room: c.made_room,
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

/// For serde: a count of nothing is left out.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::ffi::OsStr;

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
