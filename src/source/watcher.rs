//! Filesystem events from notify, reduced to what the tracker needs, plus the scans that events
//! cannot replace: the initial scan (after the watch is in place), the scan of every new directory
//! (after *its* watch is in place), and full rescans after an event-queue overflow (invariant 3).

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use notify::event::EventKindMask;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::vocab::{is_ignored, Change, Identity, CLOSE_EVENTS};
use crate::{Error, Result};

/// One event, in the engine's terms. Paths are relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    /// A change to a file.
    File(PathBuf, Change),
    /// A directory appeared (created, or renamed into the tree): watch it, then scan it.
    NewDir(PathBuf),
    /// A name disappeared that may be a directory (removed, or renamed away): everything tracked
    /// at or below it is gone.
    Gone(PathBuf),
    /// Events were lost (queue overflow): rescan everything.
    Rescan,
    /// The source root itself appeared again (a writer's `overwrite=True` removes and recreates it,
    /// or a folder was moved back).
    RootCreated,
    /// The source root itself went away, deleted or renamed away (see [`crate::source::root::Gone`]).
    RootGone(crate::source::root::Gone),
    /// The watcher reported a problem.
    Error(String),
    /// The inotify watch limit is reached: some folders have no watch.
    WatchLimit(String),
}

/// A recursive watch on one source tree.
pub struct Watcher {
    // Elsewhere than Linux it is only held: dropping it would end the watch.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    inner: RecommendedWatcher,
    /// The root's parent, watched by a watcher of its own that asks only for names coming and
    /// going: the folder next to an acquisition is often busy (a log the microscope appends to,
    /// other acquisitions), and none of its writes, opens or closes are ours to hear about.
    _parent: Option<RecommendedWatcher>,
}

/// What the tree's watch asks the kernel for: the events [`translate`] uses, and no more. Opens,
/// read-only closes and attribute changes are left out: every read of a source file (our own
/// copies among them, a viewer's) would otherwise be two events in a queue that can overflow.
fn tree_events() -> EventKindMask {
    EventKindMask::CREATE
        | EventKindMask::REMOVE
        | EventKindMask::MODIFY_DATA
        | EventKindMask::MODIFY_NAME
        | EventKindMask::ACCESS_CLOSE
}

impl Watcher {
    /// A watcher delivering raw notify events on `tx`, with the root's *parent* watched (not
    /// recursively): zarr-python and acquire-zarr delete and recreate the root on
    /// `overwrite=True`, which ends every watch inside it; the parent's events say when it is
    /// back. The tree itself is watched by [`Watcher::watch_tree`].
    pub fn new(root: &Path, tx: Sender<notify::Result<Event>>) -> Result<(Self, Option<Error>)> {
        // Not following symlinks: a linked folder is outside the source (invariant 6), and following
        // them makes notify stat every file while it adds its watches.
        let config = notify::Config::default().with_follow_symlinks(false);
        let inner = RecommendedWatcher::new(tx.clone(), config.with_event_kinds(tree_events()))
            .map_err(|e| watch_error(root, e))?;
        let mut limited = None;
        let mut parent_watch = None;
        if let Some(parent) = root.parent() {
            let names = EventKindMask::CREATE | EventKindMask::REMOVE | EventKindMask::MODIFY_NAME;
            let mut watcher =
                RecommendedWatcher::new(tx, config.with_event_kinds(names)).map_err(|e| watch_error(parent, e))?;
            match watcher.watch(parent, RecursiveMode::NonRecursive).map_err(|e| watch_error(parent, e)) {
                Ok(()) => {}
                Err(e @ Error::WatchLimit(_)) => limited = Some(e),
                Err(e) => return Err(e),
            }
            parent_watch = Some(watcher);
        }
        Ok((Watcher { inner, _parent: parent_watch }, limited))
    }

    /// Watches the tree at `root` and calls `found` with every regular file in it (relative to
    /// `root`), in one walk. Each folder's watch is in place before the folder is listed, so a
    /// file created during the walk is either listed or reported by an event (invariant 3).
    ///
    /// On Linux every folder gets a watch of its own, added here as the walk reaches it: notify's
    /// recursive watch would walk the tree itself and stat every *file* to find the folders, a
    /// random read per inode on a cold cache (10 s for a million files where `find` takes 1 s).
    /// Folders created later are watched by [`Watcher::ensure_watched`]. Elsewhere one recursive
    /// watch covers the tree (ReadDirectoryChangesW, FSEvents), then the walk lists the files.
    ///
    /// Returns the [`Error::WatchLimit`] that stopped the watches part-way, if any: the walk still
    /// lists every file, and the caller falls back to periodic rescans.
    pub fn watch_tree(&mut self, root: &Path, mut found: impl FnMut(PathBuf)) -> Result<Option<Error>> {
        let mut limited = None;
        #[cfg(not(target_os = "linux"))]
        match self.inner.watch(root, RecursiveMode::Recursive).map_err(|e| watch_error(root, e)) {
            Ok(()) => {}
            Err(e @ Error::WatchLimit(_)) => limited = Some(e),
            Err(e) => return Err(e),
        }
        let mut failed = None;
        let walked = walk(
            root,
            Path::new(""),
            false,
            |dir| {
                if !cfg!(target_os = "linux") || limited.is_some() || failed.is_some() {
                    return;
                }
                // walkdir lists a folder only after yielding it: the watch comes first.
                if let Err(e) = self.inner.watch(dir, RecursiveMode::NonRecursive) {
                    match watch_error(dir, e) {
                        e @ Error::WatchLimit(_) => limited = Some(e),
                        // Gone already (its removal is an event of its parent's watch).
                        Error::Watch { .. } if !dir.exists() => {}
                        e => failed = Some(e),
                    }
                }
            },
            |rel, _| found(rel),
        );
        walked.map_err(|e| Error::Watch { path: root.to_path_buf(), message: e.to_string() })?;
        failed.map_or(Ok(limited), Err)
    }

    /// Makes sure a newly created directory is watched before it is scanned.
    ///
    /// notify's inotify backend adds the watch for a new directory only after it has delivered the
    /// whole batch of events containing its creation, so a scan started on receipt of the event
    /// could run before the watch exists and miss files created in between (writers create the
    /// directory just before its first file). `watch()` is served by the same single event-loop
    /// thread, after that batch, so once it returns the watch is certainly in place.
    pub fn ensure_watched(&mut self, dir: &Path) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            self.inner.watch(dir, RecursiveMode::Recursive).map_err(|e| watch_error(dir, e))
        }
        #[cfg(not(target_os = "linux"))]
        {
            // ReadDirectoryChangesW / FSEvents watch the whole tree with one handle: new
            // directories are covered from the moment they exist.
            let _ = dir;
            Ok(())
        }
    }
}

fn watch_error(path: &Path, e: notify::Error) -> Error {
    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        // ENOSPC from inotify_add_watch is the watch limit (inotify(7)); notify does not always map it.
        || cfg!(target_os = "linux")
            && matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::StorageFull);
    if limit {
        return Error::WatchLimit(path.to_path_buf());
    }
    Error::Watch { path: path.to_path_buf(), message: e.to_string() }
}

/// Translates one notify event into engine events, relative to `root`.
pub fn translate(root: &Path, event: notify::Result<Event>, out: &mut Vec<FsEvent>) {
    let event = match event {
        Ok(ev) => ev,
        Err(e) => {
            out.push(match watch_error(root, e) {
                e @ Error::WatchLimit(_) => FsEvent::WatchLimit(e.to_string()),
                e => FsEvent::Error(e.to_string()),
            });
            return;
        }
    };
    if event.need_rescan() {
        out.push(FsEvent::Rescan);
        return;
    }
    for path in &event.paths {
        // Everything else in the root's parent is none of our business.
        let Ok(rel) = path.strip_prefix(root) else { continue };
        if rel.as_os_str().is_empty() {
            match event.kind {
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    out.push(FsEvent::RootCreated)
                }
                EventKind::Remove(_) => out.push(FsEvent::RootGone(crate::source::root::Gone::Deleted)),
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                    out.push(FsEvent::RootGone(crate::source::root::Gone::MovedAway))
                }
                _ => {}
            }
            continue;
        }
        let rel = rel.to_path_buf();
        let ev = match event.kind {
            EventKind::Create(CreateKind::Folder) => FsEvent::NewDir(rel),
            EventKind::Create(_) => {
                if path.is_dir() {
                    FsEvent::NewDir(rel)
                } else {
                    FsEvent::File(rel, Change::Created)
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                // Lock and temp names never become directories; skip the stat for them.
                if !is_ignored(&rel) && path.is_dir() {
                    FsEvent::NewDir(rel)
                } else {
                    FsEvent::File(rel, Change::Replaced)
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) if is_ignored(&rel) => continue,
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => FsEvent::Gone(rel),
            EventKind::Modify(ModifyKind::Name(_)) => continue,
            // Windows reports each write as Modify(Any) and never a close.
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) if !CLOSE_EVENTS => {
                FsEvent::File(rel, Change::Written)
            }
            EventKind::Modify(ModifyKind::Data(_)) => FsEvent::File(rel, Change::Modified),
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => FsEvent::File(rel, Change::ClosedWrite),
            EventKind::Remove(RemoveKind::Folder) => FsEvent::Gone(rel),
            EventKind::Remove(_) => FsEvent::File(rel, Change::Removed),
            _ => continue,
        };
        out.push(ev);
    }
}

/// Walks `root/start` and calls `found` with each regular file's path relative to `root` (and its
/// identity when `with_identity`, at the cost of one `lstat` per file). Symlinks are not followed.
///
/// `Err` when `root/start` itself cannot be listed (missing included); `Ok(Some(why))` when the
/// walk went on past an error below it: that scan is *incomplete*, and a file it did not list is
/// not proven gone (docs/design.md, invariant 8). A folder that vanished while being walked is no
/// error: its removal is a fact, and its files' deletions are events of their own.
pub fn scan(
    root: &Path,
    start: &Path,
    with_identity: bool,
    found: impl FnMut(PathBuf, Option<Identity>),
) -> std::io::Result<Option<String>> {
    walk(root, start, with_identity, |_| {}, found)
}

/// [`scan`], also calling `on_dir` with each folder (the start included) before listing it.
fn walk(
    root: &Path,
    start: &Path,
    with_identity: bool,
    mut on_dir: impl FnMut(&Path),
    mut found: impl FnMut(PathBuf, Option<Identity>),
) -> std::io::Result<Option<String>> {
    let top = root.join(start);
    let mut incomplete = None;
    for entry in walkdir::WalkDir::new(&top).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.depth() == 0 => return Err(e.into()),
            // A directory deleted while we walk it is the writer's business, not an error.
            Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => continue,
            Err(e) => {
                incomplete.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        if entry.file_type().is_dir() {
            on_dir(entry.path());
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        if is_ignored(rel) {
            continue;
        }
        let ident = if with_identity {
            // The same terms the copier records (on Windows from a handle: one open per file).
            match crate::sys::path_identity(entry.path()) {
                Ok(id) => Some(id),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    incomplete.get_or_insert_with(|| e.to_string());
                    continue;
                }
            }
        } else {
            None
        };
        found(rel.to_path_buf(), ident);
    }
    Ok(incomplete)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A folder chain deeper than PATH_MAX (4096 bytes), made with mkdirat so no path is too long
    /// to create; its deepest folder cannot be listed by path: a scan error below the root that
    /// is not "gone" (the root user reads everything, so EACCES cannot stand in here).
    fn too_deep(root: &Path) {
        let name = "d".repeat(250);
        let mut dir = std::fs::File::open(root).unwrap();
        for _ in 0..20 {
            crate::sys::mkdir_in(&dir, Path::new(&name)).unwrap();
            dir = crate::sys::folder_beneath(&dir, Path::new(&name)).unwrap().unwrap();
        }
    }

    #[test]
    fn a_scan_that_hit_an_error_says_it_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        fs_file(dir.path(), "a");
        let mut found = Vec::new();
        assert_eq!(scan(dir.path(), Path::new(""), true, |rel, _| found.push(rel)).unwrap(), None);
        too_deep(dir.path());
        let incomplete = scan(dir.path(), Path::new(""), true, |_, _| {}).unwrap();
        assert!(incomplete.is_some(), "an unlistable folder makes the scan incomplete");
        assert!(scan(&dir.path().join("missing"), Path::new(""), true, |_, _| {}).is_err(), "a missing root");
        assert_eq!(found, vec![PathBuf::from("a")]);
    }

    /// Engine events from `rx` until every one of `want` has come, or five seconds have passed.
    fn events_until(
        root: &Path,
        rx: &crossbeam_channel::Receiver<notify::Result<Event>>,
        want: &[FsEvent],
    ) -> Vec<FsEvent> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        while !want.iter().all(|w| got.contains(w)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(event) = rx.recv_timeout(left) else { break };
            translate(root, event, &mut got);
        }
        got
    }

    #[test]
    fn a_watched_tree_reports_every_change_the_engine_acts_on() {
        // A watch that asks the kernel for too little (no removals, no closes) or watches no folder
        // passes every test of `translate`: this one asks a real watch.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        std::fs::create_dir(&root).unwrap();
        fs_file(&root, "old");
        let (tx, rx) = crossbeam_channel::unbounded();
        let (mut w, limited) = Watcher::new(&root, tx).unwrap();
        assert!(limited.is_none());
        let mut found = Vec::new();
        assert!(w.watch_tree(&root, |rel| found.push(rel)).unwrap().is_none());
        assert_eq!(found, vec![PathBuf::from("old")]);
        std::fs::create_dir(root.join("sub")).unwrap();
        fs_file(&root, "new");
        std::fs::rename(root.join("new"), root.join("renamed")).unwrap();
        std::fs::remove_file(root.join("old")).unwrap();
        let file = |rel: &str, c| FsEvent::File(PathBuf::from(rel), c);
        let want = [
            FsEvent::NewDir("sub".into()),
            file("new", Change::Created),
            file("new", Change::Modified),
            file("new", Change::ClosedWrite),
            FsEvent::Gone("new".into()),
            file("renamed", Change::Replaced),
            file("old", Change::Removed),
        ];
        let got = events_until(&root, &rx, &want);
        assert!(want.iter().all(|w| got.contains(w)), "{got:?}");
        // A new folder is watched once `ensure_watched` returns.
        w.ensure_watched(&root.join("sub")).unwrap();
        fs_file(&root.join("sub"), "inner");
        let want = [FsEvent::File(Path::new("sub").join("inner"), Change::Created)];
        let got = events_until(&root, &rx, &want);
        assert!(got.contains(&want[0]), "{got:?}");
    }

    fn fs_file(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"x").unwrap();
    }
}

#[cfg(test)]
mod translate_tests {
    use super::*;
    use notify::event::{DataChange, Flag, RemoveKind};
    use std::fs;

    /// Every kind of notify event the engine meets, and what it becomes (a table: one row per kind).
    #[test]
    fn every_event_kind_translates_to_what_the_engine_acts_on() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        fs::create_dir_all(root.join("folder")).unwrap();
        fs::write(root.join("chunk"), b"x").unwrap();
        let file = |c| Some(FsEvent::File(PathBuf::from("chunk"), c));
        let written = if CLOSE_EVENTS { Change::Modified } else { Change::Written };
        let rows: Vec<(EventKind, &str, Option<FsEvent>)> = vec![
            (EventKind::Create(CreateKind::File), "chunk", file(Change::Created)),
            (EventKind::Create(CreateKind::Folder), "folder", Some(FsEvent::NewDir("folder".into()))),
            (EventKind::Create(CreateKind::Any), "folder", Some(FsEvent::NewDir("folder".into()))),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), "chunk", file(Change::Replaced)),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), "folder", Some(FsEvent::NewDir("folder".into()))),
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), "chunk", Some(FsEvent::Gone("chunk".into()))),
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), "chunk.__lock", None),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), "chunk", None),
            (EventKind::Modify(ModifyKind::Data(DataChange::Content)), "chunk", file(written)),
            (EventKind::Access(AccessKind::Close(AccessMode::Write)), "chunk", file(Change::ClosedWrite)),
            (EventKind::Access(AccessKind::Close(AccessMode::Read)), "chunk", None),
            (EventKind::Remove(RemoveKind::Folder), "folder", Some(FsEvent::Gone("folder".into()))),
            (EventKind::Remove(RemoveKind::File), "chunk", file(Change::Removed)),
            (EventKind::Create(CreateKind::Folder), "", Some(FsEvent::RootCreated)),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), "", Some(FsEvent::RootCreated)),
            (EventKind::Remove(RemoveKind::Folder), "", Some(FsEvent::RootGone(crate::source::root::Gone::Deleted))),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                "",
                Some(FsEvent::RootGone(crate::source::root::Gone::MovedAway)),
            ),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), "", None),
            (EventKind::Create(CreateKind::File), "../elsewhere", None),
        ];
        for (kind, rel, want) in rows {
            let path = if rel.is_empty() { root.clone() } else { root.join(rel) };
            let path = if rel == "../elsewhere" { dir.path().join("elsewhere") } else { path };
            let mut out = Vec::new();
            translate(&root, Ok(Event::new(kind).add_path(path)), &mut out);
            assert_eq!(out, want.into_iter().collect::<Vec<_>>(), "{kind:?} on {rel:?}");
        }
        // Lost events, whatever the kind they come with, are a rescan and nothing else.
        let mut out = Vec::new();
        translate(
            &root,
            Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan).add_path(root.join("chunk"))),
            &mut out,
        );
        assert_eq!(out, vec![FsEvent::Rescan]);
    }
}
