//! The printer for people: every message worded as the lines the README shows, on stdout or
//! stderr. Pure: it returns the line, the reporter writes it.

use std::path::Path;
use std::time::Duration;

use super::message::{Detail, Difference, Message, Method, Notice, Plan, Service, Warning};
use super::{Line, Style};
use crate::dest::{Capabilities, Loss, Publish};
use crate::error::{Failure, reason};
use crate::escape::{display, escape_into};
use crate::outcome::{Change, Counts, Outcome};

/// The line (or block) for `m`, or nothing when this style leaves it out.
pub(super) fn render(m: &Message<'_>, s: Style) -> Option<Line> {
    let mut line = Vec::with_capacity(160);
    let out = |bytes| Some(Line::out(bytes));
    let err = |bytes| Some(Line::err(bytes));
    match m {
        Message::Entry(ev) => {
            let mut put = |label: &str, path: &Path| {
                line.extend_from_slice(label.as_bytes());
                escape_into(&mut line, path);
            };
            let to_stderr = match &ev.outcome {
                Outcome::Copied(dst) | Outcome::WouldCopy(dst, _) if !s.quiet => {
                    let done = matches!(ev.outcome, Outcome::Copied(_));
                    put(if done { "Copied: " } else { "Would copy: " }, &ev.src);
                    put(" -> ", dst);
                    false
                }
                Outcome::Updated(dst, what) | Outcome::WouldUpdate(dst, what) if !s.quiet => {
                    let done = matches!(ev.outcome, Outcome::Updated(..));
                    put(if done { "Updated: " } else { "Would update: " }, &ev.src);
                    put(" -> ", dst);
                    line.extend_from_slice(format!(" ({})", what.words().join(", ")).as_bytes());
                    false
                }
                Outcome::Deleted(dst) | Outcome::WouldDelete(dst) if !s.quiet => {
                    let done = matches!(ev.outcome, Outcome::Deleted(_));
                    let label = if done {
                        "Deleted: "
                    } else {
                        "Would record deleted: "
                    };
                    put(label, &ev.src);
                    put(" -> ", dst);
                    false
                }
                Outcome::MadeRoom if !s.quiet => {
                    let label = if s.dry_run {
                        "Would prune to make room: "
                    } else {
                        "Pruned to make room: "
                    };
                    put(label, &ev.src);
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
                    line.extend_from_slice(format!(": {failure}").as_bytes());
                    true
                }
                _ => return None,
            };
            Some(Line {
                to_stderr,
                bytes: line,
            })
        }
        Message::Finding { src, change } => {
            line.extend_from_slice(match change {
                Change::New => b"Missing: ".as_slice(),
                Change::Changed => b"Stale: ",
                Change::Contents => b"Differs: ",
            });
            escape_into(&mut line, src);
            out(line)
        }
        Message::History { file, versions } => {
            escape_into(&mut line, file);
            for (i, v) in versions.iter().enumerate() {
                let size = if v.deleted {
                    "deleted".to_string()
                } else {
                    human_size(v.size)
                };
                line.extend_from_slice(format!("\n  {}  {size:>12}  ", v.captured).as_bytes());
                escape_into(&mut line, v.name);
                if let Some(folder) = v.folder {
                    line.extend_from_slice(b"  (its folder ");
                    escape_into(&mut line, folder);
                    line.extend_from_slice(b" deleted)");
                }
                if i + 1 == versions.len() {
                    line.extend_from_slice(b"  (latest)");
                }
            }
            out(line)
        }
        Message::Difference(c) => {
            let (word, size) = match c {
                Difference::Added { size, .. } => ("Added", human_size(*size)),
                Difference::Changed { before, size, .. } => (
                    "Changed",
                    format!("{} -> {}", human_size(*before), human_size(*size)),
                ),
                Difference::Deleted { size, .. } => ("Deleted", human_size(*size)),
                Difference::Moved { size, .. } => ("Moved", human_size(*size)),
            };
            line.extend_from_slice(format!("{word}: ").as_bytes());
            if let Difference::Moved { from, .. } = c {
                escape_into(&mut line, from);
                line.extend_from_slice(b" -> ");
            }
            escape_into(&mut line, c.path());
            line.extend_from_slice(format!(" ({size})").as_bytes());
            out(line)
        }
        Message::DiffSummary(t) => {
            let grew = match t.grew {
                g if g < 0 => format!("-{}", human_size(g.unsigned_abs() as u64)),
                g => format!("+{}", human_size(g as u64)),
            };
            out(format!(
                "{} added, {} changed, {} deleted, {} moved; {grew}",
                t.added, t.changed, t.deleted, t.moved
            )
            .into_bytes())
        }
        Message::Mounted { dst, mountpoint } => {
            line.extend_from_slice(b"Mounted ");
            escape_into(&mut line, dst);
            line.extend_from_slice(b" at ");
            escape_into(&mut line, mountpoint);
            line.extend_from_slice(
                b", read-only: latest/, at/TIME/, versions/PATH/; unmount with fusermount3 -u ",
            );
            escape_into(&mut line, mountpoint);
            line.extend_from_slice(b" or Ctrl-C");
            err(line)
        }
        Message::Patch { text: "", .. } => None,
        Message::Patch { text, .. } => out(text.trim_end_matches('\n').as_bytes().to_vec()),
        Message::NothingFound { pattern } => {
            err(format!("Nothing in DST matches {pattern:?}").into_bytes())
        }
        Message::Status(p) => {
            if let Some(name) = &p.name {
                line.extend_from_slice(format!("{name}: ").as_bytes());
            }
            escape_into(&mut line, &p.src);
            line.extend_from_slice(b" -> ");
            escape_into(&mut line, &p.dst);
            let mut row = |text: String| {
                line.extend_from_slice(b"\n  ");
                line.extend_from_slice(text.as_bytes());
            };
            match &p.running {
                Some(s) => {
                    row(format!(
                        "{} (watch, pid {}, since {})",
                        s.state, s.pid, s.started
                    ));
                    let never = || "none yet".to_string();
                    row(format!(
                        "last pass {}, last copy {}, last success {}",
                        s.last_pass.clone().unwrap_or_else(never),
                        s.last_copy.clone().unwrap_or_else(never),
                        s.last_success.clone().unwrap_or_else(never),
                    ));
                    let free = s
                        .free_bytes
                        .map(|f| format!("; {} free in DST", human_size(f)))
                        .unwrap_or_default();
                    let behind = match s.pending {
                        0 => "caught up".to_string(),
                        n => format!(
                            "{n} changes pending ({}), the oldest for {}s",
                            human_size(s.pending_bytes),
                            s.lag_seconds
                        ),
                    };
                    row(format!("health {}: {behind}{free}", s.health));
                    row(format!("failures since start: {}", s.failures));
                    for f in &s.recent_failures {
                        row(format!("  {f}"));
                    }
                }
                None => row("no watch running for this pair".to_string()),
            }
            row(match p.newest_copy_age {
                Some(age) => format!(
                    "newest copy: {} ago{}",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    if p.stale { " (stale)" } else { "" }
                ),
                None => "newest copy: none (stale)".to_string(),
            });
            if p.failing {
                let files = p.running.as_ref().map_or(0, |s| s.failing_files);
                row(format!(
                    "FAILING: {files} file(s) could not be copied, and have not been since"
                ));
            }
            out(line)
        }
        Message::Restored { .. } | Message::Pruned(_) if s.quiet => None,
        Message::Restored { from, to } => {
            line.extend_from_slice(b"Restored: ");
            escape_into(&mut line, from);
            line.extend_from_slice(b" -> ");
            escape_into(&mut line, to);
            out(line)
        }
        Message::Pruned(path) => {
            line.extend_from_slice(if s.dry_run {
                b"Would prune: ".as_slice()
            } else {
                b"Pruned: "
            });
            escape_into(&mut line, path);
            out(line)
        }
        Message::Decision { .. } if !s.verbose => None,
        Message::Decision {
            path,
            event,
            decision,
        } => {
            line.extend_from_slice(b"Event: ");
            escape_into(&mut line, path);
            line.extend_from_slice(format!(" ({event}): {decision}").as_bytes());
            out(line)
        }
        Message::Summary(c) => {
            let title = if s.dry_run {
                "Backup Summary (dry run: nothing was written):"
            } else {
                "Backup Summary:"
            };
            let mut block = format!(
                "\n{title}\nTotal files processed: {}\nSuccessfully copied: {}\nUnchanged: {}\n\
                 Skipped: {}\nFailed copies: {}",
                c.total(),
                c.copied,
                c.unchanged,
                c.skipped,
                c.failed
            );
            // Only where `--keep-free` made room: the seed's block stays as it is.
            if c.made_room > 0 {
                block.push_str(&format!("\nPruned to make room: {}", c.made_room));
            }
            out(block.into_bytes())
        }
        Message::VerifySummary {
            counts: c,
            findings: f,
        } => out(format!(
            "\nVerify Summary:\nFiles checked: {}\nUp to date: {}\nMissing: {}\nStale: {}\n\
             Differing: {}\nSkipped: {}\nUnreadable: {}",
            c.total(),
            c.unchanged,
            f.missing,
            f.stale,
            f.differs,
            c.skipped,
            c.failed
        )
        .into_bytes()),
        Message::RestoreSummary {
            at,
            restored,
            left_out,
            failed,
        } => out(format!(
            "\nRestore Summary (as of {at}):\nRestored: {restored}\nLeft out: {left_out}\n\
             Failed: {failed}"
        )
        .into_bytes()),
        Message::PruneSummary {
            files,
            kept,
            pruned,
            failed,
        } => {
            let title = if s.dry_run {
                "Prune Summary (dry run: nothing was deleted):"
            } else {
                "Prune Summary:"
            };
            out(format!(
                "\n{title}\nFiles: {files}\nVersions kept: {kept}\nVersions pruned: {pruned}\n\
                 Failed: {failed}"
            )
            .into_bytes())
        }
        Message::Batch { .. } | Message::Waiting { .. } if s.quiet => None,
        Message::Batch {
            at,
            batch,
            totals,
            settling,
        } => {
            let settling = if *settling > 0 {
                format!(", settling {settling}")
            } else {
                String::new()
            };
            out(format!(
                "{} batch: {}{settling} | since start: {}",
                at.format("%H:%M:%S"),
                brief(batch),
                brief(totals)
            )
            .into_bytes())
        }
        Message::Waiting {
            at,
            remembered,
            totals,
        } => out(format!(
            "{} waiting for destination: {remembered} changes remembered | since start: {}",
            at.format("%H:%M:%S"),
            brief(totals)
        )
        .into_bytes()),
        Message::Left { changes } => {
            let one = *changes == 1;
            err(format!(
                "Stopped with {changes} changed {} not copied yet (still being written or \
                 settling); the next run copies {}",
                if one { "file" } else { "files" },
                if one { "it" } else { "them" },
            )
            .into_bytes())
        }
        Message::Created(_) | Message::Pair { .. } | Message::Watching { .. } if s.quiet => None,
        Message::Service(_) if s.quiet => None,
        Message::Created(dst) => {
            line.extend_from_slice(b"Created destination ");
            escape_into(&mut line, dst);
            err(line)
        }
        Message::Pair { name, src, dst } => {
            err(format!("Pair {name}: {} -> {}", display(src), display(dst)).into_bytes())
        }
        Message::Watching { src, method } => err(format!(
            "Watching {} for changes ({}; Ctrl-C to stop)",
            display(src),
            method_words(*method)
        )
        .into_bytes()),
        Message::Detail(_) if !s.verbose => None,
        Message::Detail(d) => err(detail(d).into_bytes()),
        Message::Service(step) => err(service(step).into_bytes()),
        Message::Destination(n) => err(notice(n).into_bytes()),
        Message::Space { folder, space } => {
            match folder {
                Some(folder) => escape_into(&mut line, folder),
                None => line.extend_from_slice(b"Total"),
            }
            line.extend_from_slice(
                format!(
                    ": {} newest, {} older, {} deletion {}, {} shared",
                    human_size(space.newest),
                    human_size(space.older),
                    space.records,
                    if space.records == 1 {
                        "record"
                    } else {
                        "records"
                    },
                    human_size(space.shared)
                )
                .as_bytes(),
            );
            out(line)
        }
        Message::Warning(w) => err(format!("warning: {}", warning(w)).into_bytes()),
        Message::Error(e) => err(format!("error: {e}").into_bytes()),
    }
}

fn method_words(m: Method) -> String {
    match m {
        Method::Polling => "polling".into(),
        Method::Fanotify => "fanotify".into(),
        Method::Inotify { polled: 0 } => "inotify".into(),
        Method::Inotify { polled } => {
            format!("inotify, and polling {polled} folders over the watch limit")
        }
    }
}

fn detail(d: &Detail<'_>) -> String {
    match d {
        Detail::Capabilities { dst, caps } => {
            format!("Destination {}: {}", display(dst), capabilities(caps))
        }
        Detail::Plan(Plan::Fanotify) => "Watch plan: one fanotify mark on the filesystem of SRC; \
                                         no folder needs a watch of its own"
            .into(),
        Detail::Plan(Plan::Polled { folders }) => {
            format!("Watch plan: all {folders} folders polled")
        }
        Detail::Plan(Plan::Inotify { watched, polled }) => {
            format!("Watch plan: {watched} folders watched with inotify, {polled} polled")
        }
        Detail::NoFanotify(e) => format!(
            "fanotify is not available here ({}); watching with inotify",
            reason(e)
        ),
        Detail::Locked { src, retry } => format!(
            "{}: a SQLite database locked by another program; tried again every {} s, and \
             copied as the file on disk if still locked after --max-delay",
            display(src),
            retry.as_secs()
        ),
    }
}

fn service(step: &Service<'_>) -> String {
    match step {
        Service::Wrote(path) => format!("Wrote {}", display(path)),
        Service::Removed(path) => format!("Removed {}", display(path)),
        Service::NotInstalled(path) => format!("{} was not installed", display(path)),
        Service::NotEnabled { unit, name } => format!(
            "systemd is not running for this user, so the service was not enabled; the unit \
             is:\n\n{unit}\nWith systemd: systemctl --user daemon-reload && systemctl --user \
             enable --now {name}"
        ),
        Service::Enabled { name } => {
            format!("Enabled and started {name}: `backup service status` shows how it runs")
        }
    }
}

fn notice(n: &Notice<'_>) -> String {
    match n {
        Notice::InUse { dst, why } => format!(
            "Destination {} is in use: {why}; waiting for it to finish; changes are remembered",
            display(dst)
        ),
        Notice::Unreachable { dst, why } => format!(
            "Destination {} cannot be reached: {why}; waiting for it to come back; changes are \
             remembered",
            display(dst)
        ),
        Notice::Gone { dst, why } => format!(
            "Destination {} is gone (unmounted?): {why}; waiting for it to come back; changes \
             are remembered",
            display(dst)
        ),
        Notice::Full { dst, not_copied } => format!(
            "Destination {} is full; waiting for space; changes are remembered ({not_copied} \
             files not copied yet)",
            display(dst)
        ),
        Notice::Back { dst } => format!(
            "Destination {} is back; copying what changed meanwhile",
            display(dst)
        ),
        Notice::HasSpace { dst } => format!(
            "Destination {} has space again; copying what changed meanwhile",
            display(dst)
        ),
    }
}

/// A warning, after `warning: `.
fn warning(w: &Warning) -> String {
    const RAISE: &str = "sudo sysctl fs.inotify";
    match w {
        Warning::Loses { dst, kind, loss } => {
            format!(
                "destination {} ({kind}) {}",
                display(dst),
                loss_words(*loss)
            )
        }
        Warning::NoLowPriority(e) => {
            format!("cannot lower this process's priority: {}", reason(e))
        }
        Warning::InotifyLimit { name, now, every } => format!(
            "the inotify limit fs.inotify.{name}{} is reached, so changes are found by polling \
             every {}s instead; raise it with `{RAISE}.{name}=524288` (and a line \
             `fs.inotify.{name}=524288` in /etc/sysctl.d/90-backup.conf to keep it)",
            now.map_or(String::new(), |n| format!(" = {n}")),
            every.as_secs()
        ),
        Warning::Polled {
            limit,
            watched,
            polled,
            every,
            budget,
        } => format!(
            "the inotify limit fs.inotify.max_user_watches{} does not cover every folder: \
             {watched} folders are watched and {polled} are polled, so a change in those is found \
             within about {} s (polling takes at most {} % of a core); raise the limit with \
             `{RAISE}.max_user_watches=524288` (and a line \
             `fs.inotify.max_user_watches=524288` in /etc/sysctl.d/90-backup.conf to keep it)",
            limit.map_or(String::new(), |n| format!(" = {n}")),
            every.as_secs_f64().ceil(),
            budget * 100.0
        ),
        Warning::Slowed {
            folders,
            asked,
            every,
            budget,
        } => format!(
            "polling {folders} folders every {} s would take more than {} % of a core; they are \
             polled about every {} s instead",
            asked.as_secs_f64(),
            budget * 100.0,
            every.as_secs_f64().ceil()
        ),
        Warning::NotADatabase { src, why } => format!(
            "{}: SQLite cannot read it as a database ({why}); copied as a file",
            display(src)
        ),
        Warning::LockedNotCopied {
            src,
            secs,
            mid_write,
            retry,
        } => format!(
            "{}: locked by another program for {secs} s, {}; not copied while it stays so (tried \
             again every {} s)",
            display(src),
            if *mid_write {
                "in the middle of a write"
            } else {
                "and its file alone is not a sound database"
            },
            retry.as_secs()
        ),
        Warning::LockedCopiedAsFile { src, secs } => format!(
            "{}: locked by another program for {secs} s; copied as the file on disk, without what \
             its -wal holds if it has one (a consistent copy is taken again once the lock is let \
             go)",
            display(src)
        ),
        Warning::NoClone { src, why } => format!(
            "{}: cannot share blocks with its copy before ({}); copied whole (said once)",
            display(src),
            reason(why)
        ),
        Warning::DidNotFit {
            dst,
            files,
            largest,
            free,
        } => format!(
            "{files} {} did not fit in the destination {} ({}the largest is {}); make room \
             there, or leave them out with --exclude",
            if *files == 1 { "file" } else { "files" },
            display(dst),
            free.map_or(String::new(), |f| format!("{} free; ", human_size(f))),
            human_size(*largest),
        ),
        Warning::NotListed { dst, why } => format!(
            "destination {}: cannot be listed again ({}); going by the last listing",
            display(dst),
            reason(why)
        ),
        Warning::NotNotified(why) => format!("could not notify: {why}"),
        Warning::NoMetrics { path, why } => format!(
            "metrics file {}: cannot be written ({})",
            display(path),
            reason(why)
        ),
    }
}

fn loss_words(loss: Loss) -> &'static str {
    match loss {
        Loss::Times => {
            "cannot keep modification times; files are compared by their contents instead (as \
             with --checksum)"
        }
        Loss::Permissions => "cannot keep permissions; copies keep contents and modification times",
        Loss::Owners => "cannot keep owners; copies keep contents and modification times",
        Loss::Xattrs => {
            "cannot keep extended attributes; copies keep contents and modification times"
        }
        Loss::SymlinkMeta => {
            "cannot set the owner and times of symlinks; symlinks keep their targets"
        }
    }
}

/// What a destination was found to keep, in one line.
fn capabilities(c: &Capabilities) -> String {
    let precision = match (c.precision, c.probed) {
        (Some(ns), true) => precision_words(ns),
        (Some(ns), false) => format!("{} as its entries show (not probed)", precision_words(ns)),
        (None, true) => "nothing: times set are not kept".to_string(),
        (None, false) => "an unknown step (not probed)".to_string(),
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut line = format!(
        "{}: times kept to {precision}{}; publish by {}; symlinks {}, permissions {}, owners {}, \
         xattrs {}, case-sensitive {}, clones {}, moves without copying {}",
        c.kind,
        if c.local_time { " in local time" } else { "" },
        match c.publish {
            _ if c.unnamed => "linking an unnamed copy without replacing",
            Publish::RenameNoReplace => "rename without replacing",
            Publish::HardLink => "hard link",
            Publish::CheckThenRename => "rename after checking the name is free",
            Publish::CreateOnly => "create-only upload (If-None-Match honoured)",
            Publish::UniqueNames => {
                "upload under a name the listing shows free (the store ignores If-None-Match; \
                 one writer per prefix, kept by a lock object)"
            }
            Publish::Unknown => "rename, else hard link",
        },
        yes_no(c.symlinks),
        yes_no(c.permissions),
        yes_no(c.owners),
        yes_no(c.xattrs),
        yes_no(c.case_sensitive),
        yes_no(c.clone),
        yes_no(c.clone || c.link),
    );
    if !c.refuses.is_empty() {
        let refused: Vec<String> = c.refuses.iter().map(ToString::to_string).collect();
        line.push_str(&format!("; names: {}", refused.join(", ")));
    }
    if let Some(max) = c.max_file_size {
        line.push_str(&format!("; largest file {max} bytes"));
    }
    line
}

fn precision_words(ns: u64) -> String {
    match ns {
        1 => "1 ns".into(),
        n if n % 1_000_000_000 == 0 => format!("{} s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{} ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{} µs", n / 1_000),
        n => format!("{n} ns"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_read_as_one_line() {
        let mut c = Capabilities::assumed("ext4".into());
        c.probed = true;
        c.precision = Some(100);
        c.publish = Publish::HardLink;
        let line = capabilities(&c);
        assert!(
            line.starts_with("ext4: times kept to 100 ns; publish by hard link"),
            "{line}"
        );
        assert_eq!(precision_words(2_000_000_000), "2 s");
        assert_eq!(precision_words(10_000_000), "10 ms");
    }
}
