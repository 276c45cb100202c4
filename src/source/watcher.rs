//! Filesystem events from notify, reduced to what the tracker needs, plus the scans that events
//! cannot replace: the initial scan (each folder watched before it is listed, a step at a time as
//! the copy takes its files: docs/design.md, "Memory"), the scan of every new directory
//! (after *its* watch is in place), and full rescans after an event-queue overflow (invariant 3).

use std::ops::ControlFlow;
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
    /// A folder was made under the source root's name (a writer's `overwrite=True` removes and
    /// recreates it).
    RootCreated,
    /// A folder was renamed to the source root's name: the root moved back, or another folder
    /// moved in, never a writer's re-take (docs/design.md, invariant 8).
    RootMovedIn,
    /// The source root itself went away, deleted or renamed away (see [`crate::source::root::Gone`]).
    RootGone(crate::source::root::Gone),
    /// The watcher reported a problem.
    Error(String),
    /// The inotify watch limit is reached: some folders have no watch.
    WatchLimit(String),
}

/// A recursive watch on one source tree.
pub struct Watcher {
    /// On Linux a watch per folder, in a table of our own (`inotify.rs`).
    #[cfg(target_os = "linux")]
    tree: super::inotify::TreeWatch,
    /// Elsewhere one recursive watch, only held: dropping it would end the watch.
    #[cfg(not(target_os = "linux"))]
    inner: RecommendedWatcher,
    /// The root's parent, watched by a watcher of its own that asks only for names coming and
    /// going: the folder next to an acquisition is often busy (a log the microscope appends to,
    /// other acquisitions), and none of its writes, opens or closes are ours to hear about.
    _parent: Option<RecommendedWatcher>,
}

/// A walk of the source tree under way (see [`Watcher::walk`]).
pub struct Walk {
    root: PathBuf,
    entries: walkdir::IntoIter,
    /// The watch limit that stopped the watches part-way, until the caller takes it: the walk
    /// still lists every file, and the caller falls back to periodic rescans.
    pub limit: Option<Error>,
    /// No more watches are added (the limit is reached, or one recursive watch covers the tree).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    unwatched: bool,
}

/// Where a step of a walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// The caller said enough for now: the next step goes on from there.
    Paused,
    /// Every folder was reached and listed.
    Done,
}

/// What a walk met next.
enum Met {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Folder(PathBuf),
    File(PathBuf, Option<Identity>),
}

/// What the tree's watch asks the kernel for: the events [`translate`] uses, and no more. Opens,
/// read-only closes and attribute changes are left out: every read of a source file (our own
/// copies among them, a viewer's) would otherwise be two events in a queue that can overflow.
/// (Linux's own table asks for the same: `inotify.rs`.)
#[cfg(not(target_os = "linux"))]
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
        #[cfg(target_os = "linux")]
        let tree = super::inotify::TreeWatch::new(root, tx.clone())
            .map_err(|e| Error::Watch { path: root.to_path_buf(), message: e.to_string() })?;
        #[cfg(not(target_os = "linux"))]
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
        #[cfg(target_os = "linux")]
        let watcher = Watcher { tree, _parent: parent_watch };
        #[cfg(not(target_os = "linux"))]
        let watcher = Watcher { inner, _parent: parent_watch };
        Ok((watcher, limited))
    }

    /// Watches the tree at `root` and calls `found` with every regular file in it (relative to
    /// `root`), in one walk: [`Watcher::walk`] taken to its end.
    ///
    /// Returns the [`Error::WatchLimit`] that stopped the watches part-way, if any: the walk still
    /// lists every file, and the caller falls back to periodic rescans.
    pub fn watch_tree(&mut self, root: &Path, mut found: impl FnMut(PathBuf)) -> Result<Option<Error>> {
        let mut walk = self.walk(root)?;
        self.walk_on(&mut walk, |rel| {
            found(rel);
            ControlFlow::Continue(())
        })?;
        Ok(walk.limit.take())
    }

    /// Starts a walk of the tree at `root` that watches each folder before listing it, taken
    /// as far as its caller wants at a time ([`Watcher::walk_on`]): between two steps it holds
    /// only walkdir's stack of open folders, whatever the number of files still to list, so the
    /// copy paces the initial scan (docs/design.md, "Memory").
    ///
    /// On Linux every folder gets a watch of its own, added as the walk reaches it: notify's
    /// recursive watch would walk the tree itself and stat every *file* to find the folders, a
    /// random read per inode on a cold cache (10 s for a million files where `find` takes 1 s).
    /// Folders created later are watched by [`Watcher::ensure_watched`]. Elsewhere one recursive
    /// watch covers the tree (ReadDirectoryChangesW, FSEvents), made here, before any listing.
    pub fn walk(&mut self, root: &Path) -> Result<Walk> {
        #[cfg(not(target_os = "linux"))]
        let limit = match self.inner.watch(root, RecursiveMode::Recursive).map_err(|e| watch_error(root, e)) {
            Ok(()) => None,
            Err(e @ Error::WatchLimit(_)) => Some(e),
            Err(e) => return Err(e),
        };
        #[cfg(target_os = "linux")]
        let limit = None;
        Ok(Walk {
            root: root.to_path_buf(),
            entries: walkdir::WalkDir::new(root).follow_links(false).into_iter(),
            limit,
            unwatched: !cfg!(target_os = "linux"),
        })
    }

    /// Takes `walk` on, calling `found` with each regular file (relative to the root) until it
    /// says `Break` or the tree is walked. Each folder's watch is in place before the folder is
    /// listed, so a file created meanwhile, however long the walk pauses, is either listed or
    /// reported by an event (invariant 3).
    pub fn walk_on(&mut self, walk: &mut Walk, mut found: impl FnMut(PathBuf) -> ControlFlow<()>) -> Result<Walked> {
        let root = walk.root.clone();
        let mut ignored_incomplete = None;
        while let Some(met) = next_met(&mut walk.entries, &root, false, &mut ignored_incomplete) {
            match met.map_err(|e| Error::Watch { path: root.clone(), message: e.to_string() })? {
                // Elsewhere the tree's one recursive watch covers every folder (`walk`).
                #[cfg(target_os = "linux")]
                Met::Folder(dir) if !walk.unwatched => self.watch_walked(walk, &dir)?,
                Met::Folder(_) => {}
                Met::File(rel, _) => {
                    if found(rel).is_break() {
                        return Ok(Walked::Paused);
                    }
                }
            }
        }
        Ok(Walked::Done)
    }

    /// The watch on a folder the walk reached, before it is listed (walkdir lists a folder only
    /// after yielding it).
    #[cfg(target_os = "linux")]
    fn watch_walked(&mut self, walk: &mut Walk, dir: &Path) -> Result<()> {
        if let Err(e) = self.watch_one(dir) {
            match e {
                e @ Error::WatchLimit(_) => {
                    walk.limit = Some(e);
                    walk.unwatched = true;
                }
                e => return Err(e),
            }
        }
        Ok(())
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
            // The folder and every folder already below it (made before its watch was in place),
            // each watched before the scan that follows lists it.
            for entry in walkdir::WalkDir::new(dir).follow_links(false) {
                let Ok(entry) = entry else { continue };
                if !entry.file_type().is_dir() {
                    continue;
                }
                self.watch_one(entry.path())?;
            }
            Ok(())
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

impl Watcher {
    /// The watch of one folder (a folder at a time, see `walk`).
    #[cfg(target_os = "linux")]
    fn watch_one(&mut self, dir: &Path) -> Result<()> {
        let Err(e) = self.tree.add(dir) else { return Ok(()) };
        match e.raw_os_error() {
            // Gone, or no folder any more (a file or a link in its place): its removal is an
            // event of its parent's watch.
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(()),
            // ENOSPC from inotify_add_watch is the watch limit (inotify(7)).
            Some(libc::ENOSPC) => Err(Error::WatchLimit(dir.to_path_buf())),
            _ => Err(Error::Watch { path: dir.to_path_buf(), message: e.to_string() }),
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
                EventKind::Create(_) => out.push(FsEvent::RootCreated),
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => out.push(FsEvent::RootMovedIn),
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
    mut found: impl FnMut(PathBuf, Option<Identity>),
) -> std::io::Result<Option<String>> {
    let mut entries = walkdir::WalkDir::new(root.join(start)).follow_links(false).into_iter();
    let mut incomplete = None;
    while let Some(met) = next_met(&mut entries, root, with_identity, &mut incomplete) {
        if let Met::File(rel, ident) = met? {
            found(rel, ident);
        }
    }
    Ok(incomplete)
}

/// The next folder or regular file of a walk (files relative to `root`, with their identity when
/// `with_identity`, at the cost of one `lstat` each). `Err` when the walk's top cannot be listed;
/// an error below it is noted in `incomplete` and passed over.
fn next_met(
    entries: &mut walkdir::IntoIter,
    root: &Path,
    with_identity: bool,
    incomplete: &mut Option<String>,
) -> Option<std::io::Result<Met>> {
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.depth() == 0 => return Some(Err(e.into())),
            // A directory deleted while we walk it is the writer's business, not an error.
            Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => continue,
            Err(e) => {
                incomplete.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        if entry.file_type().is_dir() {
            return Some(Ok(Met::Folder(entry.into_path())));
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
        return Some(Ok(Met::File(rel.to_path_buf(), ident)));
    }
    None
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

    #[test]
    fn a_folder_moved_within_the_tree_is_heard_under_its_new_name_below_it_too() {
        // A folder's events named by where it was would send the tracker to files that are not
        // there, and away from those that are.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let (mut w, _) = Watcher::new(&root, tx).unwrap();
        w.watch_tree(&root, |_| {}).unwrap();
        std::fs::rename(root.join("a"), root.join("c")).unwrap();
        fs_file(&root.join("c/b"), "x");
        fs_file(&root.join("c"), "y");
        let want = [
            FsEvent::File(PathBuf::from("c/b/x"), Change::Created),
            FsEvent::File(PathBuf::from("c/y"), Change::Created),
        ];
        let got = events_until(&root, &rx, &want);
        assert!(want.iter().all(|w| got.contains(w)), "{got:?}");
        let stale = |e: &FsEvent| matches!(e, FsEvent::File(rel, _) if rel.starts_with("a"));
        assert!(!got.iter().any(stale), "{got:?}");
    }

    #[test]
    fn a_folder_gone_before_its_watch_is_no_error_and_one_outside_the_tree_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        std::fs::create_dir(&root).unwrap();
        fs_file(&root, "file");
        let (tx, _rx) = crossbeam_channel::unbounded();
        let (mut w, _) = Watcher::new(&root, tx).unwrap();
        // Gone, or a file in its place: its parent's watch says so.
        assert!(w.watch_one(&root.join("gone")).is_ok());
        assert!(w.watch_one(&root.join("file")).is_ok());
        assert!(matches!(w.watch_one(dir.path()), Err(Error::Watch { .. })), "outside the tree");
        assert!(matches!(w.ensure_watched(dir.path()), Err(Error::Watch { .. })), "outside the tree");
    }

    #[test]
    fn a_walk_paused_anywhere_lists_each_file_once_and_misses_none_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        for d in 0..4 {
            std::fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
            for f in 0..3 {
                fs_file(&root.join(format!("d{d}")), &f.to_string());
            }
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let (mut w, _) = Watcher::new(&root, tx).unwrap();
        let mut walk = w.walk(&root).unwrap();
        let mut listed = Vec::new();
        let mut made = Vec::new();
        // One file per step, and after each step a new file in every folder: in a folder the walk
        // has reached, its watch reports it; in one it has not, the walk lists it.
        loop {
            let step = w
                .walk_on(&mut walk, |rel| {
                    listed.push(rel);
                    ControlFlow::Break(())
                })
                .unwrap();
            if step == Walked::Done {
                break;
            }
            for d in 0..4 {
                let name = format!("new{}", made.len());
                fs_file(&root.join(format!("d{d}")), &name);
                made.push(FsEvent::File(Path::new(&format!("d{d}")).join(name), Change::Created));
            }
        }
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "listed twice: {listed:?}");
        // A bounded poll, long: with the whole suite running on two cores, the watch's events for
        // these 180 files have taken more than 5 s to come.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut heard = Vec::new();
        let missing = |heard: &[FsEvent]| -> Vec<FsEvent> {
            made.iter()
                .filter(|m| !heard.contains(m))
                .filter(|m| !matches!(m, FsEvent::File(rel, _) if listed.contains(rel)))
                .cloned()
                .collect()
        };
        while !missing(&heard).is_empty() && std::time::Instant::now() < deadline {
            if let Ok(event) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                translate(&root, event, &mut heard);
            }
        }
        assert_eq!(missing(&heard), Vec::<FsEvent>::new(), "neither listed nor heard");
        assert_eq!(listed.iter().filter(|r| !r.to_string_lossy().contains("new")).count(), 12);
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
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), "", Some(FsEvent::RootMovedIn)),
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
