//! The tree's watch on Linux: inotify, with a table of our own (docs/design.md, "Memory").
//!
//! notify keeps each watch in two maps keyed by absolute paths, about 300 bytes a folder on our
//! heap and more in its thread's allocator arena: a finished archive with a folder per ten chunks
//! (10⁵ folders for 10⁶ files) spent a third of its memory there. Here a folder is its watch
//! descriptor and its path relative to the root, kept in one buffer of names: about 30 bytes plus
//! the path. Events go on as notify's `Event`s, so [`super::watcher::translate`] reads this watch
//! and notify's (the root's parent, other platforms) alike.
//!
//! What the table must never do is name a folder wrongly: an event is a hint the tracker looks
//! into, but a hint under the wrong name sends it to the wrong file. So a watch is added and its
//! name set under the table's lock (the reader cannot meet a descriptor not yet named), a folder
//! moved away loses its watch and every watch below it, and one moved within the tree is named
//! again before the events that follow its move are read.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::Sender;
use inotify::{EventMask, Inotify, WatchMask, Watches};
use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, Flag, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind};

/// What each folder's watch asks the kernel for: what [`super::watcher::translate`] uses (see
/// `tree_events` there), the root's own deletion and move, and nothing through a link.
fn mask() -> WatchMask {
    WatchMask::from_iter([
        WatchMask::CREATE,
        WatchMask::MOVED_TO,
        WatchMask::DELETE,
        WatchMask::MOVED_FROM,
        WatchMask::MODIFY,
        WatchMask::CLOSE_WRITE,
        WatchMask::MOVE_SELF,
        WatchMask::DELETE_SELF,
        WatchMask::DONT_FOLLOW,
        WatchMask::ONLYDIR,
    ])
}

/// Each watched folder's path relative to the root, by watch descriptor.
struct Table {
    root: PathBuf,
    /// Where each folder's path lies in `names`.
    folders: HashMap<i32, (u32, u32)>,
    names: Vec<u8>,
    /// Bytes of `names` no folder uses any more: the buffer is rebuilt when they are half.
    unused: usize,
}

impl Table {
    fn rel(&self, wd: i32) -> Option<&Path> {
        let &(at, len) = self.folders.get(&wd)?;
        let bytes = &self.names[at as usize..(at + len) as usize];
        Some(Path::new(OsStr::from_bytes(bytes)))
    }

    fn name(&mut self, wd: i32, rel: &Path) {
        let bytes = rel.as_os_str().as_bytes();
        if let Some((_, old)) = self.folders.get(&wd) {
            self.unused += *old as usize;
        }
        // Past 4 GiB of names (10⁸ folders) a path is no longer kept: its events are dropped
        // as a folder unknown, which the end's sweep covers.
        let (Ok(at), Ok(len)) = (u32::try_from(self.names.len()), u32::try_from(bytes.len())) else {
            return;
        };
        self.names.extend_from_slice(bytes);
        self.folders.insert(wd, (at, len));
    }

    fn forget(&mut self, wd: i32) {
        if let Some((_, len)) = self.folders.remove(&wd) {
            self.unused += len as usize;
        }
        if self.unused > self.names.len() / 2 && self.unused > 4096 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut names = Vec::with_capacity(self.names.len() - self.unused);
        for (at, len) in self.folders.values_mut() {
            let start = names.len() as u32;
            names.extend_from_slice(&self.names[*at as usize..(*at + *len) as usize]);
            *at = start;
        }
        self.names = names;
        self.unused = 0;
    }

    /// The watches at or below `rel` (a folder that left the tree: none of them is in it now).
    fn at_or_below(&self, rel: &Path) -> Vec<i32> {
        self.folders.keys().copied().filter(|&wd| self.rel(wd).is_some_and(|r| r.starts_with(rel))).collect()
    }
}

/// The watch on every folder of one source tree, and the thread that reads its events.
pub struct TreeWatch {
    watches: Watches,
    table: Arc<Mutex<Table>>,
    /// Written to stop the reader, which waits on it beside the inotify descriptor.
    stop: OwnedFd,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl TreeWatch {
    /// A watch for the tree at `root` (no folder watched yet), its events sent on `tx`.
    pub fn new(root: &Path, tx: Sender<notify::Result<Event>>) -> io::Result<TreeWatch> {
        let inotify = Inotify::init()?;
        // SAFETY: eventfd returns a new descriptor or -1, checked before it is owned.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `stop` is a descriptor this call just opened and nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let table = Arc::new(Mutex::new(Table {
            root: root.to_path_buf(),
            folders: HashMap::new(),
            names: Vec::new(),
            unused: 0,
        }));
        let watches = inotify.watches();
        let mut reader = Reader { inotify, watches: watches.clone(), table: table.clone(), tx };
        let woken = stop.try_clone()?;
        let thread = std::thread::Builder::new().name("softcopy-inotify".into()).spawn(move || reader.run(&woken))?;
        Ok(TreeWatch { watches, table, stop, reader: Some(thread) })
    }

    /// Watches the folder `dir` (absolute, at or below the root). `Err` with the kernel's error:
    /// `ENOSPC` is the watch limit (inotify(7)).
    pub fn add(&mut self, dir: &Path) -> io::Result<()> {
        let mut table = lock(&self.table);
        let rel = dir.strip_prefix(&table.root).map_err(|_| io::Error::other("outside the watched tree"))?;
        let rel = rel.to_path_buf();
        // Under the lock: the reader cannot take an event of this watch before it is named.
        let wd = self.watches.add(dir, mask())?;
        table.name(wd.get_watch_descriptor_id(), &rel);
        Ok(())
    }
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd this watch owns.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    crate::vocab::lock(table)
}

/// The thread that reads the kernel's events and names them.
struct Reader {
    inotify: Inotify,
    watches: Watches,
    table: Arc<Mutex<Table>>,
    tx: Sender<notify::Result<Event>>,
}

impl Reader {
    fn run(&mut self, stop: &OwnedFd) {
        // Signals are the main thread's (Python handles them there): blocked here, the wait is
        // never interrupted, and an error from it is the end.
        // SAFETY: a signal set filled and passed by pointer to this thread's own mask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        }
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let mut fds = [
                libc::pollfd { fd: self.inotify.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two pollfd records in a live array, its length given.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } == -1 || fds[1].revents != 0 {
                return;
            }
            loop {
                let events = match self.inotify.read_events(&mut buffer) {
                    Ok(events) => events,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            let _ = self.tx.send(Err(notify::Error::io(e)));
                            return;
                        }
                        break;
                    }
                };
                let mut out = Vec::new();
                for event in events {
                    self.take(event.wd.get_watch_descriptor_id(), event.mask, event.name, &mut out);
                }
                for event in out {
                    if self.tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One kernel event, as the notify events `translate` reads (the kinds notify gives them).
    fn take(&mut self, id: i32, mask: EventMask, name: Option<&OsStr>, out: &mut Vec<Event>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            out.push(Event::new(EventKind::Other).set_flag(Flag::Rescan));
            return;
        }
        let shared = self.table.clone();
        let mut table = lock(&shared);
        if mask.contains(EventMask::IGNORED) {
            table.forget(id);
            return;
        }
        let Some(rel) = table.rel(id) else { return };
        let folder = table.root.join(rel);
        // The root, or a root deleted and made again whose old watch still speaks: the
        // coordinator tells the two apart (`RootGone` with the root certainly here).
        let is_root = rel.as_os_str().is_empty();
        let path = name.map_or_else(|| folder.clone(), |n| folder.join(n));
        let dir = mask.contains(EventMask::ISDIR);
        let kind = if mask.contains(EventMask::MOVED_FROM) {
            EventKind::Modify(ModifyKind::Name(RenameMode::From))
        } else if mask.contains(EventMask::MOVED_TO) {
            if dir {
                self.name_moved_in(&mut table, &path);
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To))
        } else if mask.contains(EventMask::MOVE_SELF) {
            if is_root {
                EventKind::Modify(ModifyKind::Name(RenameMode::From))
            } else {
                // Its parent's MOVED_FROM said it left that name.
                self.moved_away(&mut table, id);
                return;
            }
        } else if mask.contains(EventMask::CREATE) {
            EventKind::Create(if dir { CreateKind::Folder } else { CreateKind::File })
        } else if mask.contains(EventMask::DELETE) {
            EventKind::Remove(if dir { RemoveKind::Folder } else { RemoveKind::File })
        } else if mask.contains(EventMask::DELETE_SELF) {
            // A folder's deletion is its parent's DELETE; the root's is its own (and its parent's).
            if !is_root {
                return;
            }
            EventKind::Remove(RemoveKind::Folder)
        } else if mask.contains(EventMask::UNMOUNT) {
            if is_root {
                EventKind::Remove(RemoveKind::Other)
            } else if folder.is_dir() {
                // The filesystem mounted on this folder is gone (its watches with it), and the
                // folder under it, a folder of the tree, is at the name now: a new folder to watch
                // and list. Its files are no evidence of a deletion: only said of none of them.
                EventKind::Create(CreateKind::Folder)
            } else {
                // A folder within that filesystem: nothing is at its name now.
                return;
            }
        } else if mask.contains(EventMask::MODIFY) {
            EventKind::Modify(ModifyKind::Data(DataChange::Any))
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
        } else {
            return;
        };
        out.push(Event::new(kind).add_path(path));
    }

    /// A folder moved to `path` within the tree: if it was watched, its watch and those below it
    /// are named again now (the same inode gives the same descriptor), before the events that
    /// follow its move are read. Its own `MOVE_SELF`, queued behind this event, then finds it at
    /// its name (see [`Reader::moved_away`]).
    fn name_moved_in(&mut self, table: &mut Table, path: &Path) {
        let Ok(rel) = path.strip_prefix(&table.root).map(Path::to_path_buf) else { return };
        let Ok(wd) = self.watches.add(path, mask()) else { return };
        let id = wd.get_watch_descriptor_id();
        let old = table.rel(id).map(Path::to_path_buf);
        self.drop_displaced(table, &rel, id, old.as_deref());
        if let Some(old) = old {
            for below in table.at_or_below(&old).into_iter().filter(|&b| b != id) {
                let Some(under) = table.rel(below).and_then(|r| r.strip_prefix(&old).ok()).map(|r| rel.join(r)) else {
                    continue;
                };
                table.name(below, &under);
            }
        }
        table.name(id, &rel);
    }

    /// The folders the table names at or below `rel`, where folder `id` (named `old` until now)
    /// just came, that are not there: the folder it replaced, or the other of two folders
    /// exchanged, whose own move is read next. They lose their watches, so that naming by prefix,
    /// now or at that move, never mixes them with the folder that came; the other's move, read
    /// next, watches it anew and the coordinator walks it.
    fn drop_displaced(&mut self, table: &mut Table, rel: &Path, id: i32, old: Option<&Path>) {
        let coming = |r: &Path| old.is_some_and(|o| r.starts_with(o));
        let named: Vec<i32> =
            table.at_or_below(rel).into_iter().filter(|&wd| wd != id && !table.rel(wd).is_some_and(coming)).collect();
        self.drop_unless_there(table, named);
    }

    /// Drops the watches of `wds` whose folders are not at their names now; a folder that is
    /// (one a walk watched since, under a name another folder left) keeps its watch.
    fn drop_unless_there(&mut self, table: &mut Table, wds: Vec<i32>) {
        for wd in wds {
            let Some(name) = table.rel(wd).map(Path::to_path_buf) else { continue };
            if !self.still_at(table, wd, &name) {
                table.forget(wd);
                // The kernel's IGNORED for it follows; an error means it is gone already.
                // SAFETY: removes a watch from the inotify descriptor this reader owns.
                unsafe { libc::inotify_rm_watch(self.inotify.as_fd().as_raw_fd(), wd) };
            }
        }
    }

    /// A folder left a name (its `MOVE_SELF`). If the table's name for it leads to it now, it is
    /// in the tree: its move within the tree was read and named, or a walk named it since (a
    /// folder moved into one not yet watched has no `MOVED_TO`, and the coordinator's walk of
    /// the new folder can name it before this is read). Otherwise it left the tree, or moved
    /// again (that move's `MOVED_TO`, read later, watches and walks it anew): it and every folder
    /// named below it that is not at its name now lose their watches, so nothing they do is
    /// taken for the tree's. Whether it moved within the tree is not remembered from its
    /// `MOVED_TO`: read late, that names whatever folder is at the name by then, whose own
    /// `MOVE_SELF` may never come.
    fn moved_away(&mut self, table: &mut Table, id: i32) {
        let Some(rel) = table.rel(id).map(Path::to_path_buf) else { return };
        if self.still_at(table, id, &rel) {
            return;
        }
        // Those named below it are looked at one by one: a walk may have watched a new folder
        // made under its name (or below) before this was read.
        let named = table.at_or_below(&rel);
        self.drop_unless_there(table, named);
    }

    /// Whether the folder watched as `id` is the one at `rel` now: a watch added for what is
    /// there is `id` only for that folder (the same inode gives the same descriptor). A watch
    /// the look made on another folder, one the table does not hold, is taken off again.
    fn still_at(&mut self, table: &Table, id: i32, rel: &Path) -> bool {
        let Ok(wd) = self.watches.add(table.root.join(rel), mask()) else { return false };
        let found = wd.get_watch_descriptor_id();
        if found != id && table.rel(found).is_none() {
            // SAFETY: removes a watch from the inotify descriptor this reader owns.
            unsafe { libc::inotify_rm_watch(self.inotify.as_fd().as_raw_fd(), found) };
        }
        found == id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;
    use std::time::{Duration, Instant};

    /// The paths of the events heard until one at `until` comes (or five seconds pass).
    fn heard_until(rx: &crossbeam_channel::Receiver<notify::Result<Event>>, until: &Path) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut heard = Vec::new();
        while !heard.iter().any(|p: &PathBuf| p == until) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Ok(event)) = rx.recv_timeout(left) else { break };
            heard.extend(event.paths);
        }
        heard
    }

    fn watched_tree() -> (tempfile::TempDir, PathBuf, TreeWatch, crossbeam_channel::Receiver<notify::Result<Event>>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut watch = TreeWatch::new(&root, tx).unwrap();
        for folder in ["", "a", "a/b"] {
            watch.add(&root.join(folder)).unwrap();
        }
        (dir, root, watch, rx)
    }

    #[test]
    fn a_folder_moved_within_the_tree_is_heard_under_its_new_name_and_so_are_those_below_it() {
        let (_dir, root, _watch, rx) = watched_tree();
        std::fs::rename(root.join("a"), root.join("c")).unwrap();
        std::fs::write(root.join("c/b/x"), b"x").unwrap();
        std::fs::write(root.join("c/y"), b"y").unwrap();
        let heard = heard_until(&rx, &root.join("c/y"));
        assert!(heard.contains(&root.join("c/b/x")), "{heard:?}");
        assert!(!heard.iter().any(|p| p.starts_with(root.join("a/b"))), "heard under the old name: {heard:?}");
    }

    #[test]
    fn a_folder_moved_out_of_the_tree_is_heard_no_more() {
        let (dir, root, watch, rx) = watched_tree();
        std::fs::rename(root.join("a"), dir.path().join("away")).unwrap();
        std::fs::write(dir.path().join("away/b/x"), b"x").unwrap();
        std::fs::write(dir.path().join("away/z"), b"z").unwrap();
        std::fs::write(root.join("sentinel"), b"s").unwrap();
        let heard = heard_until(&rx, &root.join("sentinel"));
        assert!(heard.contains(&root.join("sentinel")), "{heard:?}");
        // Its move is heard (the parent's MOVED_FROM); nothing done in it since.
        let below = |p: &PathBuf| p.starts_with(root.join("a")) && *p != root.join("a");
        assert!(!heard.iter().any(below), "heard from outside the tree: {heard:?}");
        // Their watches are gone from the table too (the kernel's IGNORED removes them).
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&watch.table).folders.len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lock(&watch.table).folders.len(), 1, "only the root is watched");
    }

    #[test]
    fn a_deleted_folder_leaves_the_table_and_its_names_are_given_back() {
        let (_dir, root, watch, rx) = watched_tree();
        std::fs::remove_dir(root.join("a/b")).unwrap();
        std::fs::remove_dir(root.join("a")).unwrap();
        let heard = heard_until(&rx, &root.join("a"));
        assert!(heard.contains(&root.join("a/b")) && heard.contains(&root.join("a")), "{heard:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&watch.table).folders.len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let table = lock(&watch.table);
        assert_eq!(table.folders.len(), 1);
        assert_eq!(table.unused, "a".len() + "a/b".len());
    }

    /// A watch whose reader is not running: the test reads the kernel's queue itself, when it
    /// chooses. It plays a reader thread that is late (a busy machine, a long batch): the events
    /// are the kernel's, in its order; only when they are read is chosen.
    fn late_reader_tree() -> (tempfile::TempDir, PathBuf, TreeWatch, Reader) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("acq");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        let inotify = Inotify::init().unwrap();
        let table =
            Arc::new(Mutex::new(Table { root: root.clone(), folders: HashMap::new(), names: Vec::new(), unused: 0 }));
        // SAFETY: eventfd returns a new descriptor or -1, checked before it is owned.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(stop >= 0);
        // SAFETY: `stop` is a descriptor this call just opened and nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let (tx, _) = crossbeam_channel::unbounded();
        let watches = inotify.watches();
        let reader = Reader { inotify, watches: watches.clone(), table: table.clone(), tx };
        let mut watch = TreeWatch { watches, table, stop, reader: None };
        for folder in ["", "a", "a/b", "x"] {
            watch.add(&root.join(folder)).unwrap();
        }
        (dir, root, watch, reader)
    }

    /// Every event in the kernel's queue now, not yet named.
    fn queued(reader: &mut Reader) -> Vec<(i32, EventMask, Option<std::ffi::OsString>)> {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut queued = Vec::new();
        loop {
            match reader.inotify.read_events(&mut buffer) {
                Ok(events) => {
                    queued.extend(events.map(|e| (e.wd.get_watch_descriptor_id(), e.mask, e.name.map(OsStr::to_owned))))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return queued,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The paths of `events`, as the reader names them.
    fn take_all(reader: &mut Reader, events: &[(i32, EventMask, Option<std::ffi::OsString>)]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (wd, mask, name) in events {
            reader.take(*wd, *mask, name.as_deref(), &mut out);
        }
        out.into_iter().flat_map(|e| e.paths).collect()
    }

    /// The paths of every event in the kernel's queue now, as the reader names them.
    fn read_now(reader: &mut Reader) -> Vec<PathBuf> {
        let events = queued(reader);
        take_all(reader, &events)
    }

    #[test]
    fn a_folder_moved_into_a_new_folder_watched_before_its_move_is_read_keeps_its_watch() {
        // `mkdir n; mv a n/a`, the coordinator's `ensure_watched(n)` (a walk that adds n, n/a,
        // n/a/b) running after the move and before the reader reads it: a/ had no MOVED_TO (n was
        // not watched yet), so its MOVE_SELF must not be taken for a move out of the tree; the
        // folder is in the tree, at the name the walk gave it.
        let (_dir, root, mut watch, mut reader) = late_reader_tree();
        std::fs::create_dir(root.join("n")).unwrap();
        read_now(&mut reader);
        std::fs::rename(root.join("a"), root.join("n/a")).unwrap();
        for folder in ["n", "n/a", "n/a/b"] {
            watch.add(&root.join(folder)).unwrap();
        }
        read_now(&mut reader);
        std::fs::write(root.join("n/a/b/f"), b"f").unwrap();
        std::fs::write(root.join("n/a/g"), b"g").unwrap();
        let heard = read_now(&mut reader);
        assert!(heard.contains(&root.join("n/a/b/f")) && heard.contains(&root.join("n/a/g")), "{heard:?}");
    }

    #[test]
    fn a_folder_made_under_the_name_of_one_moved_out_keeps_its_watch_when_the_move_is_read_late() {
        // `mv a away; mkdir -p a/b`, and a walk (the initial one, paced, or the rescan's after
        // lost events) watches the new a and a/b before the reader reads the old a's MOVE_SELF:
        // dropping the watches at or below the old a's name must spare the new folders there.
        let (dir, root, mut watch, mut reader) = late_reader_tree();
        std::fs::rename(root.join("a"), dir.path().join("away")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for folder in ["a", "a/b"] {
            watch.add(&root.join(folder)).unwrap();
        }
        read_now(&mut reader);
        std::fs::write(root.join("a/b/f"), b"f").unwrap();
        std::fs::write(root.join("a/g"), b"g").unwrap();
        let heard = read_now(&mut reader);
        assert!(heard.contains(&root.join("a/b/f")) && heard.contains(&root.join("a/g")), "{heard:?}");
    }

    #[test]
    fn a_folder_moved_in_over_a_name_read_late_is_still_dropped_when_it_moves_out() {
        // An atomic swap of a folder read late: `mv a c` (a is watched), `mv c away`, `mv x c`,
        // all before the reader reads the first. When it reads a's MOVED_TO, c is x already: taken
        // for a move within the tree of x, that read made x's MOVE_SELF, once x itself left the
        // tree later, be passed over, and x kept its watch and was heard as the tree's.
        let (dir, root, _watch, mut reader) = late_reader_tree();
        std::fs::rename(root.join("a"), root.join("c")).unwrap();
        std::fs::rename(root.join("c"), dir.path().join("away1")).unwrap();
        std::fs::rename(root.join("x"), root.join("c")).unwrap();
        read_now(&mut reader);
        std::fs::rename(root.join("c"), dir.path().join("away2")).unwrap();
        read_now(&mut reader);
        std::fs::write(dir.path().join("away2/f"), b"f").unwrap();
        std::fs::write(root.join("sentinel"), b"s").unwrap();
        let heard = read_now(&mut reader);
        assert!(heard.contains(&root.join("sentinel")), "{heard:?}");
        assert!(!heard.contains(&root.join("c/f")), "heard from outside the tree: {heard:?}");
    }

    #[test]
    fn two_folders_exchanged_are_each_heard_under_its_new_name() {
        // renameat2(RENAME_EXCHANGE), an atomic swap of a and c, its events read in two reads
        // (the reader woken by the first of them): between the two, the coordinator walks c, the
        // new folder the first read announced. The second read's MOVED_TO of a must not rename the
        // folder now at c (named "c" again by that walk) with the one that left c.
        let (_dir, root, mut watch, mut reader) = late_reader_tree();
        std::fs::create_dir_all(root.join("c/d")).unwrap();
        for folder in ["c", "c/d"] {
            watch.add(&root.join(folder)).unwrap();
        }
        let path = |rel: &str| std::ffi::CString::new(root.join(rel).into_os_string().into_vec()).unwrap();
        let (a, c) = (path("a"), path("c"));
        // SAFETY: two live NUL-terminated paths.
        let swapped =
            unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, c.as_ptr(), libc::RENAME_EXCHANGE) };
        assert_eq!(swapped, 0, "{}", io::Error::last_os_error());
        let events = queued(&mut reader);
        let first = events.iter().position(|(_, mask, _)| mask.contains(EventMask::MOVE_SELF)).unwrap() + 1;
        take_all(&mut reader, &events[..first]);
        // What the coordinator does with a folder that came (`ensure_watched`): walk it.
        let walk =
            |watch: &mut TreeWatch, folders: &[&str]| folders.iter().for_each(|f| watch.add(&root.join(f)).unwrap());
        walk(&mut watch, &["c", "c/b"]);
        take_all(&mut reader, &events[first..]);
        walk(&mut watch, &["a", "a/d"]);
        for file in ["c/b/x", "c/y", "a/d/z", "a/w"] {
            std::fs::write(root.join(file), b"").unwrap();
        }
        let heard = read_now(&mut reader);
        let want = ["c/b/x", "c/y", "a/d/z", "a/w"].map(|p| root.join(p));
        assert!(want.iter().all(|w| heard.contains(w)), "{heard:?}");
        let wrong = ["a/b/x", "a/y", "c/d/z", "c/w"].map(|p| root.join(p));
        assert!(!heard.iter().any(|p| wrong.contains(p)), "heard under the other's name: {heard:?}");
    }

    #[test]
    fn a_link_is_never_watched_in_place_of_a_folder() {
        // A folder swapped for a link between its event and its watch: watching where the link
        // leads would name the events of a folder outside the tree as the tree's.
        let (dir, root, mut watch, rx) = watched_tree();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        assert!(watch.add(&root.join("link")).is_err(), "a link is not a folder to watch");
        std::fs::write(dir.path().join("outside/x"), b"x").unwrap();
        std::fs::write(root.join("sentinel"), b"s").unwrap();
        let heard = heard_until(&rx, &root.join("sentinel"));
        // The link's own making is heard (its parent's CREATE); nothing done where it leads.
        let below = |p: &PathBuf| p.starts_with(root.join("link")) && *p != root.join("link");
        assert!(heard.contains(&root.join("sentinel")) && !heard.iter().any(below), "{heard:?}");
    }

    #[test]
    fn the_roots_own_deletion_is_heard_and_a_folders_only_from_its_parent() {
        let (_dir, root, _watch, rx) = watched_tree();
        std::fs::remove_dir_all(&root).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut heard = Vec::new();
        while !heard.contains(&(EventKind::Remove(RemoveKind::Folder), root.clone())) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Ok(event)) = rx.recv_timeout(left) else { break };
            heard.extend(event.paths.into_iter().map(|p| (event.kind, p)));
        }
        assert!(heard.contains(&(EventKind::Remove(RemoveKind::Folder), root.clone())), "{heard:?}");
        // Each folder below once, from its parent's DELETE: its own DELETE_SELF says nothing more.
        for rel in ["a", "a/b"] {
            assert_eq!(heard.iter().filter(|(_, p)| *p == root.join(rel)).count(), 1, "{rel}: {heard:?}");
        }
    }

    #[test]
    fn the_names_buffer_is_rebuilt_when_half_of_it_is_unused() {
        let mut table = Table { root: PathBuf::from("/r"), folders: HashMap::new(), names: Vec::new(), unused: 0 };
        let long = "n".repeat(1000);
        for wd in 0..10 {
            table.name(wd, Path::new(&format!("{long}{wd}")));
        }
        for wd in 0..6 {
            table.forget(wd);
        }
        assert_eq!(table.unused, 0, "rebuilt");
        assert_eq!(table.names.len(), 4 * 1001);
        for wd in 6..10 {
            assert_eq!(table.rel(wd), Some(Path::new(&format!("{long}{wd}"))));
        } // A folder named again leaves its old name unused; small leftovers are not worth a rebuild.
        let mut table = Table { root: PathBuf::from("/r"), folders: HashMap::new(), names: Vec::new(), unused: 0 };
        table.name(1, Path::new("abc"));
        table.name(1, Path::new("de"));
        assert_eq!((table.unused, table.rel(1)), (3, Some(Path::new("de"))));
        table.name(2, Path::new(&"n".repeat(4093)));
        table.forget(2);
        assert_eq!(table.unused, 4096, "at most 4096 unused bytes are kept");
    }
}
