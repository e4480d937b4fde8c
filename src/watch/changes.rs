//! Pure decisions of `watch` about filesystem events: which ones mean work, and what work. No
//! I/O here; the loop in `watch` feeds events in.

use std::path::{Path, PathBuf};

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};

/// What one event asks for. Paths are relative to SRC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// Contents or metadata of this path changed: copy it once it has settled (a folder: refresh
    /// its own metadata).
    Changed(PathBuf),
    /// This path appeared (created, or moved in from elsewhere): a folder is walked, since files
    /// made in it before its watch existed produced no event; anything else is `Changed`.
    Arrived(PathBuf),
    /// Events were lost (queue overflow): only a full pass can tell what changed.
    Rescan,
}

/// The work an event asks for. `skip` are the destinations inside SRC: their events are copies
/// (ours, or another pair's) and must not feed back.
pub(crate) fn classify(event: &notify::Event, src: &Path, skip: &[PathBuf]) -> Vec<Work> {
    if event.need_rescan() {
        return vec![Work::Rescan];
    }
    let rel = |p: &Path| -> Option<PathBuf> {
        if skip.iter().any(|s| p.starts_with(s)) {
            return None;
        }
        p.strip_prefix(src).ok().map(Path::to_path_buf)
    };
    let first = event.paths.first().and_then(|p| rel(p));
    if let EventKind::Modify(ModifyKind::Name(RenameMode::Both)) = event.kind {
        // Moved within SRC: the old name is gone (its deletion is recorded once it settles),
        // the new one arrived.
        let to = event.paths.get(1).and_then(|p| rel(p));
        return first
            .map(Work::Changed)
            .into_iter()
            .chain(to.map(Work::Arrived))
            .collect();
    }
    let work = match event.kind {
        // The tool's own reads of SRC produce opens and closes; only a close after writing
        // means new contents.
        EventKind::Access(_) if !can_change(&event.kind) => None,
        EventKind::Access(_) => first.map(Work::Changed),
        EventKind::Create(CreateKind::File) => first.map(Work::Changed),
        EventKind::Create(_) => first.map(Work::Arrived),
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => {
            first.map(Work::Arrived)
        }
        // Moved away or removed: once it settles, its deletion is recorded in DST (deleting in
        // SRC deletes nothing there).
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => first.map(Work::Changed),
        EventKind::Modify(_) | EventKind::Any => first.map(Work::Changed),
        EventKind::Other => None,
    };
    work.into_iter().collect()
}

/// Whether an event of this kind can mean new contents, metadata or names in SRC. Opens, reads
/// and closes without writing cannot.
pub(crate) fn can_change(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Any
                | AccessKind::Other
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute | AccessMode::Other)
        )
    )
}

/// A word for an event's kind, for `--verbose`.
pub(crate) fn describe(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => "closed after writing",
        EventKind::Access(_) => "read",
        EventKind::Create(_) => "created",
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => "moved away",
        EventKind::Modify(ModifyKind::Name(_)) => "moved in",
        EventKind::Modify(ModifyKind::Metadata(_)) => "attributes changed",
        EventKind::Modify(_) => "written",
        EventKind::Remove(_) => "removed",
        EventKind::Any | EventKind::Other => "changed",
    }
}

/// Drops every path that lies inside another one of the set: walking the outer folder covers
/// it.
pub(crate) fn outermost(mut dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    dirs.sort();
    dirs.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !out.iter().any(|o| d.starts_with(o)) {
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, Flag, MetadataKind, RemoveKind};
    use notify::{Event, EventKind};

    const SRC: &str = "/s";

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// Event → work, as a table: (event, DST inside SRC?, expected).
    #[test]
    fn events_to_work() {
        use Work::*;
        let skip = [p("/s/backup"), p("/s/other-pair")];
        let table: Vec<(Event, Vec<Work>)> = vec![
            (
                ev(
                    EventKind::Access(AccessKind::Open(AccessMode::Any)),
                    &["/s/a"],
                ),
                vec![],
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Read)),
                    &["/s/a"],
                ),
                vec![],
            ),
            (ev(EventKind::Access(AccessKind::Read), &["/s/a"]), vec![]),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/s/a"],
                ),
                vec![Changed(p("a"))],
            ),
            (
                ev(EventKind::Create(CreateKind::File), &["/s/d/a"]),
                vec![Changed(p("d/a"))],
            ),
            (
                ev(EventKind::Create(CreateKind::Folder), &["/s/d"]),
                vec![Arrived(p("d"))],
            ),
            (
                ev(EventKind::Create(CreateKind::Any), &["/s/x"]),
                vec![Arrived(p("x"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/s/a"],
                ),
                vec![Changed(p("a"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                    &["/s/a"],
                ),
                vec![Changed(p("a"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    &["/s/moved"],
                ),
                vec![Arrived(p("moved"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                    &["/s/old"],
                ),
                vec![Changed(p("old"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/s/.a.swp", "/s/a"],
                ),
                vec![Changed(p(".a.swp")), Arrived(p("a"))],
            ),
            (
                ev(EventKind::Remove(RemoveKind::File), &["/s/a"]),
                vec![Changed(p("a"))],
            ),
            (
                ev(EventKind::Remove(RemoveKind::Folder), &["/s/d"]),
                vec![Changed(p("d"))],
            ),
            (ev(EventKind::Other, &["/s/a"]), vec![]),
            (
                ev(EventKind::Other, &[]).set_flag(Flag::Rescan),
                vec![Rescan],
            ),
            // Our own copies into a DST inside SRC never feed back.
            (
                ev(EventKind::Create(CreateKind::File), &["/s/backup/a"]),
                vec![],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/s/backup"],
                ),
                vec![],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/s/x", "/s/backup/x"],
                ),
                // Moved out of what is backed up: gone.
                vec![Changed(p("x"))],
            ),
            // Another pair's destination inside SRC: its copies are not this pair's changes.
            (
                ev(
                    EventKind::Create(CreateKind::File),
                    &["/s/other-pair/a_20261126_153045"],
                ),
                vec![],
            ),
            // A sibling whose name merely starts like DST is not inside it.
            (
                ev(EventKind::Create(CreateKind::File), &["/s/backup2/a"]),
                vec![Changed(p("backup2/a"))],
            ),
            // Outside SRC (cannot happen, but must not panic or escape).
            (
                ev(EventKind::Create(CreateKind::File), &["/elsewhere/a"]),
                vec![],
            ),
        ];
        for (event, expected) in table {
            assert_eq!(
                classify(&event, Path::new(SRC), &skip),
                expected,
                "{event:?}"
            );
        }
    }

    #[test]
    fn nested_folders_are_walked_once() {
        assert_eq!(
            outermost(vec![p("a/b/c"), p("a"), p("a/b"), p("x"), p("ab"), p("a")]),
            vec![p("a"), p("ab"), p("x")]
        );
    }
}
