//! Folders that appear in an acquisitions folder: the parent of a pattern target (`source:
//! /acquisition/*.zarr`; docs/design.md, "Service"). One watch on that folder alone, asking only for names coming
//! and going, so a service learns of `2026-12-02_fish3.zarr` when the acquisition software makes it
//! (or moves it in), without polling and without hearing the acquisitions' own writes. Which names
//! match the pattern is Python's business; this only says which names appeared.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use notify::event::{EventKindMask, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::{Error, Result};

/// What the watch on one folder reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// A name appeared directly in the folder (made, or moved in), in whatever bytes it has: a
    /// name that is not UTF-8 is an acquisition too.
    Name(OsString),
    /// Events were lost, or the watch failed: list the folder again.
    Relist,
}

/// The watch on one folder, held while it lives.
pub struct Arrivals {
    folder: PathBuf,
    _watcher: RecommendedWatcher,
    rx: Receiver<notify::Result<Event>>,
    /// The watcher's channel closed (its thread died): nothing more will be heard.
    dead: AtomicBool,
}

impl Arrivals {
    /// Watches `folder` (which must exist). Names already there are not reported: the caller
    /// lists the folder *after* this returns, so a name made meanwhile is listed or reported.
    pub fn watch(folder: &Path) -> Result<Arrivals> {
        let (tx, rx) = unbounded();
        let names = EventKindMask::CREATE | EventKindMask::MODIFY_NAME;
        let config = notify::Config::default().with_follow_symlinks(false).with_event_kinds(names);
        let why = |e: notify::Error| Error::Watch { path: folder.to_path_buf(), message: e.to_string() };
        let mut watcher = RecommendedWatcher::new(tx, config).map_err(why)?;
        watcher.watch(folder, RecursiveMode::NonRecursive).map_err(why)?;
        Ok(Arrivals { folder: folder.to_path_buf(), _watcher: watcher, rx, dead: AtomicBool::new(false) })
    }

    /// What appeared, waiting up to `timeout` for the first report (then taking whatever else is
    /// queued): empty when nothing did.
    pub fn wait(&self, timeout: Duration) -> Vec<Arrival> {
        let mut out = Vec::new();
        let first = match self.rx.recv_timeout(timeout) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return out,
            Err(RecvTimeoutError::Disconnected) => {
                // A closed channel answers at once, every time: the wait is slept, so a caller in a
                // loop never spins, and the watch says it is dead, to be made again.
                self.dead.store(true, Ordering::Relaxed);
                std::thread::sleep(timeout);
                return vec![Arrival::Relist];
            }
        };
        for ev in std::iter::once(first).chain(self.rx.try_iter()) {
            for arrival in self.translate(ev) {
                if !out.contains(&arrival) {
                    out.push(arrival);
                }
            }
        }
        out
    }

    /// Whether the watch died (nothing more will be heard from it): make another.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    fn translate(&self, ev: notify::Result<Event>) -> Vec<Arrival> {
        let Ok(ev) = ev else { return vec![Arrival::Relist] };
        if ev.need_rescan() {
            return vec![Arrival::Relist];
        }
        let arrived = match ev.kind {
            EventKind::Create(_) => ev.paths.iter().collect::<Vec<_>>(),
            // A rename within the folder reports both names: the new one is the last.
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => ev.paths.iter().collect(),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.last().into_iter().collect(),
            _ => Vec::new(),
        };
        arrived
            .into_iter()
            .filter(|p| p.parent() == Some(self.folder.as_path()))
            .filter_map(|p| p.file_name().map(|n| Arrival::Name(n.to_os_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &Arrivals) -> Vec<OsString> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while seen.len() < 2 && std::time::Instant::now() < deadline {
            for arrival in a.wait(Duration::from_millis(100)) {
                if let Arrival::Name(n) = arrival {
                    seen.push(n);
                }
            }
        }
        seen.sort();
        seen
    }

    #[test]
    fn folders_made_or_moved_in_are_reported_and_nothing_below_them() {
        let top = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let parent = top.path().canonicalize().unwrap();
        let a = Arrivals::watch(&parent).unwrap();
        std::fs::create_dir(parent.join("a.zarr")).unwrap();
        std::fs::write(parent.join("a.zarr").join("zarr.json"), b"{}").unwrap();
        std::fs::create_dir(elsewhere.path().join("b.zarr")).unwrap();
        std::fs::rename(elsewhere.path().join("b.zarr"), parent.join("b.zarr")).unwrap();
        assert_eq!(names(&a), vec![OsString::from("a.zarr"), OsString::from("b.zarr")]);
    }

    #[test]
    fn a_watch_whose_channel_closed_says_so_and_never_answers_at_once() {
        let top = tempfile::tempdir().unwrap();
        let mut a = Arrivals::watch(top.path()).unwrap();
        // Another watcher in its place: the first one's sender is dropped, the channel closes.
        a._watcher = RecommendedWatcher::new(|_: notify::Result<Event>| {}, notify::Config::default()).unwrap();
        assert!(!a.is_dead());
        let started = std::time::Instant::now();
        assert_eq!(a.wait(Duration::from_millis(200)), vec![Arrival::Relist]);
        assert!(started.elapsed() >= Duration::from_millis(200), "a closed channel must not make a loop spin");
        assert!(a.is_dead());
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_reported_as_it_is() {
        use std::os::unix::ffi::OsStrExt;
        let top = tempfile::tempdir().unwrap();
        let parent = top.path().canonicalize().unwrap();
        let a = Arrivals::watch(&parent).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"fish\xe9.zarr");
        std::fs::create_dir(parent.join(odd)).unwrap();
        std::fs::create_dir(parent.join("plain.zarr")).unwrap();
        assert_eq!(names(&a), vec![odd.to_os_string(), OsString::from("plain.zarr")]);
    }
}
