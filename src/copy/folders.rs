//! Destination folders made ahead of their copies, in parallel across parents (docs/design.md,
//! "Round trips"). On a network share a `mkdir` is a round trip (two on FUSE: a lookup, then the
//! make) under its parent's lock; a Zarr v3 tree of 2-D planes (`c/t/z/0/0`) needs two new folders
//! per file, all the `z` in one `t`. Made by each copy just before it writes, those round trips
//! sat in every copy and queued behind each other on the `t` folder's lock. The coordinator knows
//! the folders of the files due next (the ready queue) and hands them here; a few maker threads
//! make them, a few at a time in one parent (the folder's own parent is made in its
//! grandparent: for `c/t/z/0`, `z` in `t`), the rest in other parents.
//!
//! The makers make a folder as a copy would (`Dest::folder`: never through a link, another run's
//! claim and case folding refused), and only where the source still has that folder. Nothing here
//! removes or writes over anything, and nothing depends on it: a copy whose folder is queued or
//! being made waits for that, then opens (or makes) its folder itself as before; a failure here
//! is only forgotten, and the copy meets the error itself, with its own handling (a file in the
//! way, `in_the_way.rs`) and its own report. A stop, a pause or the end drops what is queued,
//! and the copies waiting for it go on.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many folders may wait to be made: enough to run ahead of the copies over several parents
/// (a `t` of a hundred planes is a hundred folders), few enough to keep the look cheap.
const WINDOW: usize = 1024;

/// How many folders made are remembered (a copy into one of them need not wait).
const REMEMBERED: usize = 4 * WINDOW;

/// Makes in flight in one parent. The kernel makes names in one folder one at a time under its
/// lock, whatever the threads (measured through sshfs at 10 ms: 30 makes/s in one folder from 1, 8
/// or 16 threads; 229 and 277/s from 8 and 16 threads in folders of their own), so a second one
/// only keeps the lock busy between two; the other makers go to other parents. The parent due
/// first, which the copies wait for, gets no more: more only queue on its lock (with eight there and
/// four elsewhere, folder per chunk through sshfs copied 90-100 files/s at 2 ms and 33 at 10 ms;
/// with two everywhere, 107-119 and 40-42).
const PER_PARENT: u32 = 2;

/// The coordinator's loop turns often: the due files are looked at no more often than this.
const FEED_EVERY: Duration = Duration::from_millis(5);

/// The makers' threads: mkdirs in flight at most.
pub const MAKERS: usize = 16;

/// Where a folder is in its making.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Queued,
    /// A maker or a copy is making it.
    Making,
    Made,
}

#[derive(Default)]
struct State {
    stage: HashMap<PathBuf, Stage>,
    /// Queued folders by the parent where their own parent would be made (their grandparent),
    /// each in the order their files are due; entries taken over meanwhile are skipped.
    by_parent: HashMap<PathBuf, VecDeque<PathBuf>>,
    /// Those parents, in the order their first folder is due.
    parents: VecDeque<PathBuf>,
    queued: usize,
    /// Folders made, oldest first: forgotten beyond `REMEMBERED`.
    made: VecDeque<PathBuf>,
    /// Makes in flight per parent.
    busy: HashMap<PathBuf, u32>,
    fed: Option<Instant>,
    closed: bool,
}

/// The folders to make ahead, shared by the coordinator (who feeds it), the makers and the copies.
#[derive(Default)]
pub struct Folders {
    state: Mutex<State>,
    changed: Condvar,
}

impl std::fmt::Debug for Folders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folders").finish_non_exhaustive()
    }
}

/// A folder a maker is making, in `parent` (its grandparent).
pub struct Making {
    pub rel: PathBuf,
    parent: PathBuf,
}

/// Where `dir`'s own parent is made: its grandparent (the root for a folder one or two deep).
fn parent_of(dir: &Path) -> &Path {
    dir.parent().and_then(Path::parent).unwrap_or(Path::new(""))
}

impl Folders {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::vocab::lock(&self.state)
    }

    /// Queues the folders of `due` (files, in the order they are due) not known yet, up to the
    /// window; looks at most every few milliseconds.
    pub fn ahead<'p>(&self, due: impl Iterator<Item = &'p Path>) {
        let mut s = self.lock();
        if s.closed || s.fed.is_some_and(|t| t.elapsed() < FEED_EVERY) || s.queued >= WINDOW {
            return;
        }
        s.fed = Some(Instant::now());
        let before = s.queued;
        for rel in due.take(WINDOW) {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if !dir.as_os_str().is_empty() && !s.stage.contains_key(dir) {
                s.queue(dir);
            }
        }
        if s.queued > before {
            self.changed.notify_all();
        }
    }

    /// Drops every folder still queued: nothing more is made until fed again (the destination is
    /// paused or leads elsewhere).
    pub fn hold(&self) {
        let mut s = self.lock();
        let queues = std::mem::take(&mut s.by_parent);
        for rel in queues.into_values().flatten() {
            if s.stage.get(&rel) == Some(&Stage::Queued) {
                s.stage.remove(&rel);
            }
        }
        s.parents.clear();
        s.queued = 0;
        drop(s);
        // Copies waiting for those go on, and make their folders themselves.
        self.changed.notify_all();
    }

    /// No more folders: what is queued is dropped (copies waiting for it go on), and the makers end
    /// once their current one is made.
    pub fn close(&self) {
        self.hold();
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The next folder for a maker, waiting for one; `None` once closed.
    pub fn next(&self) -> Option<Making> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if let Some(making) = s.pick() {
                return Some(making);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A maker is done with `making`: made, or not (then forgotten: the copy meets the error).
    pub fn made(&self, making: Making, made: bool) {
        let mut s = self.lock();
        if let Some(n) = s.busy.get_mut(&making.parent) {
            *n -= 1;
            if *n == 0 {
                s.busy.remove(&making.parent);
            }
        }
        if made {
            s.remember_made(making.rel);
        } else {
            s.stage.remove(&making.rel);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Before a copy opens (or makes) its folder `rel_dir`: waits while it is queued or in the
    /// making. Made beside the makers, it would only queue on its parent's lock with them, where
    /// they make the folders in the order their files are due anyway.
    pub fn wait_for(&self, rel_dir: &Path) {
        let mut s = self.lock();
        while matches!(s.stage.get(rel_dir), Some(Stage::Queued | Stage::Making)) {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl State {
    fn queue(&mut self, dir: &Path) {
        self.stage.insert(dir.to_path_buf(), Stage::Queued);
        let parent = parent_of(dir);
        if !self.by_parent.contains_key(parent) {
            self.parents.push_back(parent.to_path_buf());
        }
        self.by_parent.entry(parent.to_path_buf()).or_default().push_back(dir.to_path_buf());
        self.queued += 1;
    }

    /// The first queued folder of the first parent (in the order due) with room for one more
    /// make (`PER_PARENT`); `None` where every
    /// parent with folders queued is full.
    fn pick(&mut self) -> Option<Making> {
        let mut i = 0;
        while i < self.parents.len() {
            let parent = &self.parents[i];
            let queue = self.by_parent.get_mut(parent)?;
            while queue.front().is_some_and(|rel| self.stage.get(rel) != Some(&Stage::Queued)) {
                queue.pop_front();
            }
            if queue.is_empty() {
                self.by_parent.remove(parent);
                self.parents.remove(i);
                continue;
            }
            let busy = self.busy.entry(parent.clone()).or_default();
            if *busy < PER_PARENT {
                *busy += 1;
                let rel = queue.pop_front()?;
                self.stage.insert(rel.clone(), Stage::Making);
                self.queued -= 1;
                return Some(Making { rel, parent: parent.clone() });
            }
            i += 1;
        }
        None
    }

    /// `rel` is made; the oldest remembered are forgotten beyond `REMEMBERED`.
    fn remember_made(&mut self, rel: PathBuf) {
        self.stage.insert(rel.clone(), Stage::Made);
        self.made.push_back(rel);
        while self.made.len() > REMEMBERED {
            if let Some(old) = self.made.pop_front() {
                if self.stage.get(&old) == Some(&Stage::Made) {
                    self.stage.remove(&old);
                }
            }
        }
    }
}

/// One maker's work: folders from `folders` until closed or stopped, each made below `dest` where
/// the source (`src_root`) has it as a folder.
pub fn make_ahead(folders: &Folders, src_root: &Path, dest: &crate::dest::Dest, stop: &std::sync::atomic::AtomicBool) {
    while let Some(making) = folders.next() {
        let at_source = std::fs::symlink_metadata(src_root.join(&making.rel)).is_ok_and(|m| m.is_dir());
        let made = !stop.load(std::sync::atomic::Ordering::Relaxed)
            && at_source
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dest.folder(&making.rel, true).is_ok()))
                .unwrap_or(false);
        folders.made(making, made);
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            // No copy may wait for a folder no maker will make.
            folders.close();
            return;
        }
    }
}

// Not under Wine: these tests make links and look at Linux's paths.
#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;
    use crate::dest::Dest;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn fed(folders: &Folders, files: &[&str]) {
        folders.ahead(files.iter().map(Path::new));
    }

    /// Runs one maker until nothing is queued or in the making (for at most 10 s), then ends it.
    fn drain(folders: &Arc<Folders>, src: &Path, dest: Dest) -> Dest {
        let dest = Arc::new(dest);
        let maker = {
            let (folders, src, dest) = (folders.clone(), src.to_path_buf(), dest.clone());
            std::thread::spawn(move || make_ahead(&folders, &src, &dest, &AtomicBool::new(false)))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while folders.lock().stage.values().any(|s| matches!(s, Stage::Queued | Stage::Making)) {
            assert!(Instant::now() < deadline, "the maker never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
        folders.close();
        maker.join().unwrap();
        Arc::into_inner(dest).expect("the maker ended")
    }

    fn took(folders: &Folders) -> Option<String> {
        folders.lock().pick().map(|m| m.rel.to_string_lossy().into_owned())
    }

    /// A source and a destination, and a tree of 2-D planes at the source: `c/t/z/0/0`.
    fn planes(t: &tempfile::TempDir, times: usize, zs: usize) -> (PathBuf, Dest, Vec<String>) {
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir_all(&dst).unwrap();
        let mut files = Vec::new();
        for t in 0..times {
            for z in 0..zs {
                std::fs::create_dir_all(src.join(format!("c/{t}/{z}/0"))).unwrap();
                std::fs::write(src.join(format!("c/{t}/{z}/0/0")), b"plane").unwrap();
                files.push(format!("c/{t}/{z}/0/0"));
            }
        }
        let dest = Dest::open(&dst, &dst, None).unwrap();
        (src, dest, files)
    }

    #[test]
    fn folders_fed_ahead_are_made_by_the_makers_with_their_parents() {
        let t = tempfile::tempdir().unwrap();
        let (src, dest, files) = planes(&t, 2, 3);
        let folders = Arc::new(Folders::default());
        fed(&folders, &files.iter().map(String::as_str).collect::<Vec<_>>());
        let dest = drain(&folders, &src, dest);
        for f in &files {
            let dir = Path::new(f).parent().unwrap();
            assert!(dest.root().join(dir).is_dir(), "{} made", dir.display());
            assert!(!dest.root().join(f).exists(), "no file is copied here");
        }
    }

    #[test]
    fn the_makers_make_at_most_two_in_each_parent() {
        let folders = Folders::default();
        // `c/t/z/0`'s own parent `z` is made in `c/t`.
        let due: Vec<String> = (0..3).flat_map(|t| (0..10).map(move |z| format!("c/{t}/{z}/0/0"))).collect();
        fed(&folders, &due.iter().map(String::as_str).collect::<Vec<_>>());
        let taken: Vec<String> = std::iter::from_fn(|| took(&folders)).collect();
        let expected: Vec<String> = (0..3).flat_map(|t| (0..2).map(move |z| format!("c/{t}/{z}/0"))).collect();
        assert_eq!(taken, expected, "then every parent is full: the makers wait");
        folders.made(Making { rel: "c/1/0/0".into(), parent: "c/1".into() }, true);
        assert_eq!(took(&folders).as_deref(), Some("c/1/2/0"));
    }

    #[test]
    fn a_copy_waits_for_its_folder_queued_or_in_the_making_and_goes_on_when_it_is_dropped() {
        let folders = Arc::new(Folders::default());
        fed(&folders, &["a/0", "b/0"]);
        let making = folders.lock().pick().expect("a is queued first");
        let waiting = |dir: &'static str| {
            let (folders, (tx, rx)) = (folders.clone(), std::sync::mpsc::channel());
            std::thread::spawn(move || {
                folders.wait_for(Path::new(dir));
                tx.send(()).unwrap();
            });
            rx
        };
        let (a, b) = (waiting("a"), waiting("b"));
        assert!(a.recv_timeout(Duration::from_millis(50)).is_err(), "the copy waits while a is being made");
        folders.made(making, true);
        assert_eq!(a.recv_timeout(Duration::from_secs(10)), Ok(()), "made: the copy goes on");
        assert!(b.recv_timeout(Duration::from_millis(50)).is_err(), "the copy waits while b is queued");
        folders.hold();
        assert_eq!(b.recv_timeout(Duration::from_secs(10)), Ok(()), "dropped: the copy goes on");
        assert!(folders.lock().pick().is_none(), "and no maker makes it");
    }

    #[test]
    fn nothing_is_made_through_a_link_nor_where_the_source_has_no_folder() {
        let t = tempfile::tempdir().unwrap();
        let (src, dest, _) = planes(&t, 1, 1);
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.root().join("c")).unwrap();
        let folders = Arc::new(Folders::default());
        fed(&folders, &["c/0/0/0/0", "elsewhere/0"]);
        let dest = drain(&folders, &src, dest);
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing made through the link");
        assert!(!dest.root().join("elsewhere").exists(), "the source has no such folder");
        // Forgotten: the copy meets the error itself.
        assert!(folders.lock().stage.is_empty());
    }
}
