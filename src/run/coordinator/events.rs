//! What the coordinator does with each filesystem event: the tracker hears about files, new
//! folders are watched and listed, the root's comings and goings pause and resume the target.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::Run;
use crate::run::status::Level;
use crate::source::rescan::RESCAN_MIN;
use crate::source::root::Gone;
use crate::source::watcher::{self, FsEvent, Walked, Watcher};
use crate::vocab::{Change, CLOSE_EVENTS};
use crate::Error;

/// Where one watch covers the whole tree (Windows), a new folder's files have events of their
/// own, late or (under Wine) missing: the folder is listed this long after it appeared, and what
/// is listed that was already copied as it is is left alone. Listed at once, a file found before
/// its rename's event came would be copied twice.
const NEW_DIR_LOOK: Duration = Duration::from_millis(250);

impl Run<'_> {
    pub(super) fn file_event(&mut self, rel: PathBuf, change: Change, now: Instant) {
        if self.is_marker(&rel) {
            if matches!(
                change,
                Change::Replaced | Change::Found | Change::Created | Change::ClosedWrite | Change::Written
            ) && !self.finishing
            {
                self.sh.say(Level::Info, format!("{} appeared: the acquisition is complete", self.cfg.marker));
                self.finishing = true;
            }
            return;
        }
        self.tracker.event(&rel, change, now);
    }

    /// Lists the new folders that are due, comparing identities (see [`NEW_DIR_LOOK`]).
    pub(super) fn list_new_dirs(&mut self, now: Instant) {
        while self.new_dirs.front().is_some_and(|(at, _)| *at <= now) {
            let (_, rel) = self.new_dirs.pop_front().expect("looked at");
            let src = self.src.clone();
            let listed = watcher::scan(&src, &rel, true, |rel, ident| {
                if self.is_marker(&rel) {
                    self.file_event(rel, Change::Found, now);
                } else {
                    self.tracker.scanned(&rel, ident.expect("scan with identity"), now);
                }
            });
            // A folder gone again is no news; anything else is said.
            if let Ok(Some(e)) = listed {
                self.sh.say(Level::Warning, format!("scan of {}: {e}", src.join(&rel).display()));
            }
        }
    }

    pub(super) fn scan(&mut self, start: &Path, change: Change) {
        let now = Instant::now();
        // Each file goes to the tracker as it is found: collecting them first would hold every
        // path of a million-file archive twice at once.
        let src = self.src.clone();
        let problem = match watcher::scan(&src, start, false, |rel, _| self.file_event(rel, change, now)) {
            Ok(problem) => problem,
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = problem {
            self.sh.say(Level::Warning, format!("scan of {}: {e}", src.join(start).display()));
        }
    }

    pub(super) fn handle(&mut self, ev: FsEvent, watcher: &mut Watcher) {
        if self.cfg.log_events {
            self.sh.say(Level::Debug, format!("event {ev:?}"));
        }
        let now = Instant::now();
        match ev {
            FsEvent::File(rel, change) => self.file_event(rel, change, now),
            FsEvent::NewDir(rel) => {
                match watcher.ensure_watched(&self.src.join(&rel)) {
                    Err(e @ Error::WatchLimit(_)) => self.watch_limited(e.to_string()),
                    Err(e) => self.sh.say(Level::Warning, e.to_string()),
                    Ok(()) => {}
                }
                // Files found may still be open for writing (in-place writers): `Found` makes the
                // worker check before copying.
                if CLOSE_EVENTS {
                    self.scan(&rel, Change::Found);
                } else {
                    self.new_dirs.push_back((now + NEW_DIR_LOOK, rel));
                }
            }
            // The old folder's own watch can report its deletion after the new folder under the
            // name was adopted (rm -rf and mkdir at once): the folder held is there, the news is
            // the old one's (docs/design.md, invariant 8: a root deleted and made again).
            FsEvent::RootGone(Gone::Deleted) if self.root_gone.is_none() && self.root.certainly_here(&self.src) => {}
            // A root moved away stays moved away: a deletion heard after that is of the folder where
            // it went (its own watch went with it), no writer's re-take under its name. Taken for
            // one, a folder a person put under the name was followed and the copy pruned to it
            // (docs/design.md, invariant 8).
            FsEvent::RootGone(Gone::Deleted) if self.root_gone == Some(Gone::MovedAway) => {}
            FsEvent::RootGone(how) => {
                // Deleted: a writer recreating it (`overwrite=True`) will be followed when it
                // returns. Moved or unmounted: whatever appears under its name is not this copy.
                self.root_gone = Some(how);
                let what = match how {
                    Gone::Deleted => "was deleted",
                    Gone::MovedAway => "was moved away",
                };
                self.pause(format!("{} {what}; waiting for it to return", self.src.display()));
            }
            FsEvent::Gone(rel) => {
                self.tracker.removed_tree(&rel, now);
                // The directory itself too: its worker removes it at the destination once empty.
                self.tracker.event(&rel, Change::Removed, now);
            }
            FsEvent::RootCreated => {
                self.moved_in = false;
                self.root_created(watcher);
            }
            FsEvent::RootMovedIn => {
                self.moved_in = true;
                self.root_created(watcher);
            }
            FsEvent::Rescan => {
                self.tracker.events_lost();
                self.watch_again = true;
                if let Some(msg) = self.rescans.events_lost(now) {
                    self.sh.say(Level::Warning, msg);
                }
            }
            FsEvent::Error(msg) => self.sh.say(Level::Warning, msg),
            FsEvent::WatchLimit(msg) => self.watch_limited(msg),
        }
    }

    /// A folder appeared under the root's name (see [`Run::ensure_root`]); anything but the
    /// acquisition's root stays paused.
    pub(super) fn root_created(&mut self, watcher: &mut Watcher) {
        if self.ensure_root().is_ok() {
            self.rewatch_and_reconcile(watcher);
        }
    }

    /// Every folder of the tree watched again, each named where it is now (the same folder
    /// keeps its watch): after lost events, a folder made meanwhile had none, and one moved was
    /// named where it was, so what was made in it later was heard by no event (docs/design.md,
    /// "Memory"). Before the rescan that lists their files.
    pub(super) fn watch_every_folder(&mut self, watcher: &mut Watcher) {
        // A root away is watched again when it is back (`rewatch_and_reconcile`); a folder under
        // its name meanwhile may be another's (its going may be among the events lost), and
        // none of it is ours to watch.
        if self.root_gone.is_some() || self.paused.is_some() || self.ensure_root().is_err() {
            return;
        }
        match watcher.watch_tree(&self.src, |_| {}) {
            Ok(Some(limit)) => self.watch_limited(limit.to_string()),
            Ok(None) => {}
            Err(e) => self.sh.say(Level::Warning, e.to_string()),
        }
    }

    /// Watches a root that came back, then lists it. A walk under way starts again: the folders
    /// its open listings held may be the old root's.
    pub(super) fn rewatch_and_reconcile(&mut self, watcher: &mut Watcher) {
        self.rewatch = false;
        let adopted = self.adopted.take();
        match watcher.watch_tree(&self.src, |_| {}) {
            Ok(Some(limit)) => self.watch_limited(limit.to_string()),
            Ok(None) => {}
            Err(e) => self.sh.say(Level::Warning, e.to_string()),
        }
        // A re-take adopted by what its name led to, then watched by that name: if the name
        // leads elsewhere now, the watches may stand on a newer folder and the adopted one's
        // going is never heard (the run paused for good). Its descriptor says how it went: no
        // link left is a deletion (the next folder there is followed), else it was moved away.
        if let Some(held) = adopted.filter(|_| self.root.check(&self.src).is_err()) {
            let how = crate::source::root::gone_how(&held);
            self.handle(FsEvent::RootGone(how), watcher);
            return;
        }
        if self.walk.is_some() {
            if let Err(e) = self.start_walk(watcher) {
                self.sh.say(Level::Warning, e.to_string());
            }
        }
        let _ = self.reconcile();
    }

    /// Starts the paced walk of the source (docs/design.md, "Memory").
    pub(super) fn start_walk(&mut self, watcher: &mut Watcher) -> crate::Result<()> {
        self.walk = Some(watcher.walk(&self.src)?);
        self.tracker.walk_started();
        Ok(())
    }

    /// Takes the walk on while fewer than the window's files wait for a worker: what it has not
    /// listed costs nothing meanwhile. Once every folder is listed, a sweep that left files to it
    /// is run again.
    pub(super) fn walk_on(&mut self, watcher: &mut Watcher) -> crate::Result<()> {
        if self.tracker.backlog() >= self.walk_window {
            return Ok(());
        }
        let Some(mut walk) = self.walk.take() else { return Ok(()) };
        let (tracker, window, now) = (&mut self.tracker, self.walk_window, Instant::now());
        let marker = self.cfg.marker.as_str();
        let mut finishing = false;
        let walked = watcher.walk_on(&mut walk, |rel| {
            if rel.as_os_str() == marker {
                finishing = true;
            } else {
                tracker.walked(&rel, now);
            }
            if tracker.backlog() < window {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        if finishing {
            self.file_event(PathBuf::from(marker), Change::Found, now);
        }
        if let Some(limit) = walk.limit.take() {
            self.watch_limited(limit.to_string());
        }
        match walked? {
            Walked::Paused => self.walk = Some(walk),
            Walked::Done if self.tracker.walk_ended() => self.rescans.soon(now),
            Walked::Done => {}
        }
        Ok(())
    }

    /// Some folders cannot be watched: say so once, then rescan the whole source periodically so
    /// that nothing in them is missed (invariant 3), only found later.
    pub(super) fn watch_limited(&mut self, msg: String) {
        if self.rescans.periodic(RESCAN_MIN) {
            self.sh.say(Level::Warning, msg);
        }
    }
}

/// Handles one event and everything already queued behind it, so a burst is processed before the
/// next dispatch round (this is where repeated triggers of one key collapse into one job).
pub(super) fn handle_batch(
    run: &mut Run<'_>,
    first: notify::Result<notify::Event>,
    rx: &Receiver<notify::Result<notify::Event>>,
    watcher: &mut Watcher,
) {
    let mut evs = Vec::new();
    watcher::translate(&run.src, first, &mut evs);
    for raw in rx.try_iter().take(4096) {
        watcher::translate(&run.src, raw, &mut evs);
    }
    for ev in evs {
        run.handle(ev, watcher);
    }
}
