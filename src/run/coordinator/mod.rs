//! The coordinator: one thread per target that turns filesystem events into tracker changes,
//! hands due files to the workers, learns their outcomes, and decides when the copy is over. It
//! sleeps until an event, a job result, a due timer or a probe (docs/design.md, "The coordinator
//! sleeps"); it never deletes anything itself: deletions are jobs, and a job mirrors one only on
//! positive evidence (invariant 8).

use std::collections::VecDeque;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::copy::pool::{Done, Pool};
use crate::copy::{self, CopyOptions};
use crate::dest::{Dest, RootChange, RootWatch};
use crate::end::verify::Landed;
use crate::run::config::Config;
use crate::run::finish::{conclude, still_open, write_manifest, Drained, OpenAtEnd, OpenWait, Unverified};
use crate::run::health::Health;
use crate::run::origin::Owner;
use crate::run::status::{lock, Level, Phase, Shared, Status, Verdict};
use crate::source::rescan::{Rescans, RESCAN_MIN};
use crate::source::root::{Gone, RootId};
use crate::source::watcher::{self, FsEvent, Walk, Watcher};
use crate::track::Tracker;
use crate::vocab::{Change, Outcome};
use crate::{Error, Result};

mod events;
use events::handle_batch;

/// Longest the coordinator sleeps without looking at the stop and finish flags.
const TICK: Duration = Duration::from_millis(100);

/// Why the copy loop ended.
enum LoopEnd {
    /// The acquisition is over and every file is copied: on to the end steps.
    Drained,
    Stopped,
    /// The destination stayed unavailable longer than `give_up_after`.
    GaveUp,
    /// The acquisition is over but the source root is gone (or another folder): nothing can be
    /// verified, and nothing is deleted.
    RootGone(String),
    /// The watcher's channel closed: a bug or a dead backend.
    WatcherDied,
    /// The acquisition is over, but these files stayed open for writing longer than the end
    /// waits for them: their last version cannot be the one copied (docs/design.md, "The end of a run").
    StillOpen(Vec<PathBuf>),
}

/// What the end, once drained, does next.
enum EndStep {
    Over(LoopEnd),
    /// Something changed: round the loop again at once.
    LookAgain,
    /// Sleep until an event or the next look.
    Wait,
}

/// What the final reconcile found.
enum Swept {
    /// Every file listed, from the same root: vanished files were mirrored as deletions.
    Complete,
    /// Something was not listed: nothing was deleted.
    Incomplete,
    /// The root is missing or another folder: nothing was deleted, the target is paused.
    RootGone(String),
}

/// The most files the paced walk lets wait for a worker (docs/design.md, "Memory"): enough to keep
/// every worker busy and spread over folders between two rounds of the loop; few enough that the
/// files waiting weigh a few MiB whatever the archive's size.
const WALK_WINDOW: usize = 10_000;

/// The most files waiting whose sizes are looked at when the acquisition ends (a few ms each
/// thousand on a local disk; the coordinator waits meanwhile).
const SIZE_AT_MOST: usize = 10_000;

struct Run<'a> {
    cfg: &'a Config,
    sh: &'a Shared,
    src: PathBuf,
    dst: PathBuf,
    dest: Arc<Dest>,
    /// Whether the destination's name still leads to the folder held.
    dest_root: RootWatch,
    root: Arc<RootId>,
    /// How the root last went away, while it is away.
    root_gone: Option<Gone>,
    /// Why nothing is dispatched now (the root is away), while that lasts.
    paused: Option<String>,
    /// The root came back: its watches must be made again (then it is reconciled again).
    rewatch: bool,
    /// The last folder to arrive under the root's name was renamed there, not made: never
    /// adopted as the acquisition made again (docs/design.md, invariant 8).
    moved_in: bool,
    /// The root adopted as a re-take, held open until its watches stand: watched by its name,
    /// made again once more in between, the watches land on the newer folder and the adopted
    /// one's going is never heard.
    adopted: Option<std::fs::File>,
    /// Events were lost: folders made meanwhile have no watch and those moved are named where
    /// they were, so the next rescan watches every folder again first (and the final reconcile
    /// waits for it).
    watch_again: bool,
    /// What the final reconcile found that no event had announced (docs/design.md, "Live, proven
    /// live"): zero where the watch missed nothing.
    found_at_end: u64,
    tracker: Tracker,
    finishing: bool,
    status: Status,
    started: Instant,
    health: Health,
    rescans: Rescans,
    /// When the files open for writing were last counted for the status.
    counted_writing: Option<Instant>,
    learned: Arc<crate::sys::Learned>,
    said_no_busy_check: bool,
    /// New folders to list once their files' own events are in (where one watch covers the
    /// whole tree), oldest first.
    new_dirs: VecDeque<(Instant, PathBuf)>,
    /// When settled files next leave memory, and how often (None: never; docs/design.md, "Memory").
    evict: Option<(Instant, Duration)>,
    /// The back-off (docs/design.md, "Gentle on any scheduler").
    gentle: crate::gentle::Gentle,
    /// The initial walk, while it has files still to list: paced by the copy (docs/design.md, "Memory").
    walk: Option<Walk>,
    /// The most files the walk lets wait for a worker ([`WALK_WINDOW`]).
    walk_window: usize,
}

impl Run<'_> {
    fn is_marker(&self, rel: &Path) -> bool {
        rel.as_os_str() == self.cfg.marker.as_str()
    }

    fn pause(&mut self, why: String) {
        let news = self.paused.as_deref() != Some(why.as_str());
        self.paused = Some(why.clone());
        // The status says paused no later than the message does: a reader woken by the message
        // reads the status next, before this loop publishes it again.
        lock(&self.sh.status).paused = Some(why.clone());
        if news {
            self.sh.say(
                Level::Warning,
                format!("{why}: paused, nothing is deleted at the destination (the copy is kept)"),
            );
        }
        // Looked at again every few seconds (a stat, no walk while it is away): a root that comes
        // back without an event (events lost, a disk mounted again) must not stay paused forever.
        self.rescans.soon(Instant::now() + RESCAN_MIN);
    }

    /// Looks whether the destination's name still leads to the folder held (when due, or now);
    /// says so when that changed. True when it changed.
    fn look_at_destination(&mut self, now: Instant, force: bool) -> bool {
        let Some(change) = self.dest_root.look(&self.dest, now, force) else { return false };
        match change {
            RootChange::Left(why) => {
                self.sh.say(Level::Warning, format!("{why}: paused, nothing more is written there"))
            }
            RootChange::Unreachable(why) => self.sh.say(
                Level::Warning,
                format!("{why}: waiting for it (giving up after {} s)", self.cfg.give_up_after.as_secs()),
            ),
            RootChange::Back => {
                self.sh.say(Level::Info, format!("{} is the destination again: copying on", self.dst.display()))
            }
        }
        true
    }

    /// Whether the root is (again) the folder being copied: after a deletion of the root, the
    /// folder under its name is the writer's new root and is adopted (`overwrite=True`); after a
    /// move, only the same folder moved back counts. A root that is back gets its watches again.
    fn ensure_root(&mut self) -> Result<(), String> {
        let checked = match self.root_gone {
            // A folder renamed over the name (over an empty re-take, which that unlinks) is no
            // writer's re-take, whatever the old folder's watch says.
            Some(Gone::Deleted) if self.moved_in => Err(format!(
                "{} is a folder moved there, not the acquisition made again: it is not followed",
                self.src.display()
            )),
            // A destination holding files freed from the old folder is that acquisition's: the
            // new one is another acquisition, never written over their only copies.
            Some(Gone::Deleted) if !crate::end::journal::Journal::read(&self.dest).is_ok_and(|j| j.is_empty()) => {
                self.root.check(&self.src).map_err(|_| {
                    format!(
                        "{} was made again, but {} holds files freed from the old folder: another acquisition, \
                         not copied over them",
                        self.src.display(),
                        self.dst.display()
                    )
                })
            }
            Some(Gone::Deleted) => self.root.adopt_retake(&self.src),
            _ => self.root.check(&self.src),
        };
        if let Err(why) = checked {
            self.pause(why.clone());
            return Err(why);
        }
        if self.root_gone == Some(Gone::Deleted) {
            self.adopted = self.root.open_held(&self.src);
            // The writer's new root is this run's acquisition: the destination says so from now.
            let recorded = crate::run::origin::record(&self.dest, &self.src)
                .and_then(|()| self.dest.keep_record(Path::new(crate::run::origin::ORIGIN)));
            if let Err(e) = recorded {
                let why = format!("cannot record the new folder at {}: {e}", self.dst.display());
                self.pause(why.clone());
                return Err(why);
            }
        }
        self.moved_in = false;
        if self.paused.take().is_some() || self.root_gone.is_some() {
            // Its old watches died with the old folder (or moved with it): made again before the
            // next reconcile lists its files (invariant 3).
            self.rewatch = true;
            self.root_gone = None;
            self.sh.say(Level::Info, format!("{} is back: copying on", self.src.display()));
        }
        Ok(())
    }

    /// A full scan comparing identities: re-queues what changed unseen and, only when the scan
    /// listed the same root completely, mirrors what vanished unseen (invariant 8). Used after
    /// lost events and once more before the end (invariant 3).
    fn reconcile(&mut self) -> Swept {
        if let Err(why) = self.ensure_root() {
            // A marker in whatever folder is there now still ends the acquisition: the run ends
            // Incomplete (nothing deleted) instead of waiting for a root that may never return.
            if self.src.join(&self.cfg.marker).is_file() {
                self.finishing = true;
            }
            return Swept::RootGone(why);
        }
        let now = Instant::now();
        self.tracker.begin_sweep();
        let src = self.src.clone();
        // The bytes found and, of those, still to copy: the estimate shown once the acquisition is over.
        let (mut known, mut left) = (0u64, 0u64);
        let scanned = watcher::scan(&src, Path::new(""), true, |rel, ident| {
            if self.is_marker(&rel) {
                self.finishing = true;
                return;
            }
            let ident = ident.expect("scan with identity");
            if let Some(to_copy) = self.tracker.scanned(&rel, ident, now) {
                known += ident.size;
                left += if to_copy { ident.size } else { 0 };
            }
        });
        // The root must still be the same folder after the walk too: one swapped in meanwhile
        // would have been listed in part.
        let problem = match (scanned, self.root.check(&self.src)) {
            (_, Err(why)) => {
                self.tracker.abandon_sweep();
                // Paused, how it went unknown: its events say (a move is never followed, and a
                // deletion heard after it is no re-take: docs/design.md, invariant 8).
                self.pause(why.clone());
                return Swept::RootGone(why);
            }
            (Err(e), _) => Some(e.to_string()),
            (Ok(incomplete), _) => incomplete,
        };
        match problem {
            None => {
                for dropped in self.tracker.end_sweep(now) {
                    self.relist(&dropped, now);
                }
                (self.status.bytes_known, self.status.bytes_left) = (known, left);
                Swept::Complete
            }
            Some(e) => {
                self.tracker.abandon_sweep();
                let why = format!(
                    "the scan of {} was incomplete ({e}); nothing is deleted at the destination",
                    src.display()
                );
                self.sh.say(Level::Warning, why.clone());
                Swept::Incomplete
            }
        }
    }

    /// A folder whose settled files changed unseen (its record was dropped): those deleted are
    /// mirrored where its copies prove them (`Tracker::mirror_dropped`, on a listing of the
    /// folder that succeeded whole), then each of its files goes back to the tracker, found, its
    /// copy looked at before any new one is made (it may be this run's, of this very version);
    /// subfolders have records of their own.
    fn relist(&mut self, dropped: &crate::track::settled::Dropped, now: Instant) {
        let folder = &dropped.folder;
        let Ok(entries) = fs::read_dir(self.src.join(folder)) else { return };
        let entries: Vec<std::io::Result<fs::DirEntry>> = entries.collect();
        if entries.iter().all(Result::is_ok) {
            let listed = entries.iter().flatten().map(fs::DirEntry::file_name).collect();
            if let Some(copies) = self.copies_in(folder) {
                self.tracker.mirror_dropped(dropped, &listed, &copies, now);
            }
        }
        for entry in entries.into_iter().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let rel = folder.join(entry.file_name());
                if self.is_marker(&rel) {
                    self.file_event(rel, Change::Found, now);
                } else {
                    self.tracker.relisted(&rel, now);
                }
            }
        }
    }

    /// The names of the files at the destination's copy of `folder` (not its marker), if listed.
    fn copies_in(&self, folder: &Path) -> Option<Vec<std::ffi::OsString>> {
        let listed = self.dest.folder(folder, false).and_then(|f| self.dest.list(&f)).ok()?;
        let files = listed.into_iter().filter(|(_, kind)| *kind == crate::dest::Kind::File);
        Some(files.map(|(name, _)| name).filter(|name| !self.is_marker(&folder.join(name))).collect())
    }

    fn rescan_if_due(&mut self, now: Instant, watcher: &mut Watcher) {
        if self.rescans.due(now) {
            let started = Instant::now();
            if std::mem::take(&mut self.watch_again) {
                self.watch_every_folder(watcher);
            }
            let swept = self.reconcile();
            self.rescans.ran(started, matches!(swept, Swept::RootGone(_)));
        }
    }

    fn done(&mut self, d: Done) {
        match &d.outcome {
            Outcome::Unavailable(msg) => {
                if let Some(said) = self.health.failed(msg, &self.dest, self.cfg.give_up_after, Instant::now()) {
                    self.sh.say(Level::Warning, said);
                }
            }
            // Only a file written proves the destination takes files again (an unchanged or deleted
            // file may need no write at all).
            Outcome::Copied { .. } => {
                if let Some(away) = self.health.written(d.begun, Instant::now()) {
                    let msg =
                        format!("destination {} is back after {} s; copying on", self.dst.display(), away.as_secs());
                    self.sh.say(Level::Info, msg);
                }
            }
            // A worker's look may predate an adoption (the root deleted and made again, seen
            // under Wine): only a root that is still not the folder recorded pauses; the job is
            // retried either way.
            Outcome::RootGone(why) if self.root.check(&self.src).is_err() => self.pause(why.clone()),
            _ => {}
        }
        let s = &mut self.status;
        match &d.outcome {
            Outcome::Copied { bytes, .. } => {
                s.files_copied += 1;
                s.bytes_copied += bytes;
                s.bytes_left = s.bytes_left.saturating_sub(*bytes);
            }
            Outcome::Unchanged(ident) => {
                s.files_unchanged += 1;
                s.bytes_left = s.bytes_left.saturating_sub(ident.size);
            }
            Outcome::Deleted => s.files_deleted += 1,
            Outcome::Failed(msg) => {
                if self.sh.stopped() {
                    return;
                }
                s.errors += 1;
                self.sh.say(Level::Warning, msg.clone());
            }
            _ => {}
        }
        self.tracker.finish(&d.rel, d.outcome, Instant::now());
        if self.evict.is_some() {
            self.tracker.let_go_walked(&d.rel);
        }
    }

    fn publish(&mut self, phase: Phase) {
        if !self.said_no_busy_check && self.learned.no_busy_check.load(Ordering::Relaxed) {
            self.said_no_busy_check = true;
            self.sh.say(
                Level::Warning,
                format!(
                    "cannot ask whether a writer still has a file open (no file lease: softcopy is not the files' \
                     owner and lacks CAP_LEASE, or the system has no leases); files found without a close event wait \
                     until unwritten for {} s",
                    self.cfg.quiet.as_secs()
                ),
            );
        }
        let counts = self.tracker.counts();
        let s = &mut self.status;
        s.phase = phase;
        s.redundant = counts.redundant;
        s.files_distinct = counts.distinct;
        s.max_copies = u64::from(counts.max_copies);
        s.failed = counts.failed;
        s.backlog = self.tracker.backlog() as u64;
        s.in_flight = self.tracker.in_flight() as u64;
        // Counting files open for writing walks every tracked file: once a second is plenty.
        if self.counted_writing.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            s.writing = self.tracker.writing() as u64;
            self.counted_writing = Some(Instant::now());
        }
        s.oldest_wait = self.tracker.oldest_wait(Instant::now()).as_secs_f64();
        s.known = self.tracker.known() as u64;
        s.settled = self.tracker.settled().held();
        s.last_error = self.tracker.last_error().map(str::to_owned);
        s.elapsed = self.started.elapsed().as_secs_f64();
        s.finishing = self.finishing;
        s.destination_trouble = self.health.error().or(self.dest_root.unreachable()).map(str::to_owned);
        s.paused = self.paused.clone().or_else(|| self.dest_root.away().map(String::from));
        s.back_off = self.gentle.view();
        // The end steps (`run::finish`) start only after the last of these.
        *lock(&self.sh.status) = s.clone();
    }

    /// The end, once drained and reconciled: the destination must still be the folder held, and
    /// no file may still be open for writing (the end waits for those within `quiet`, then copies
    /// them; it never verifies over a version still being written).
    fn at_the_end(&mut self, open_at_end: &mut OpenAtEnd, now: Instant) -> EndStep {
        // Unavailable is not elsewhere: the end waits for a destination that cannot be reached
        // (looked at again at the usual interval, not each tick) up to `give_up_after`
        // (docs/design.md, "Unavailable is not elsewhere").
        let waiting = self.dest_root.unreachable().is_some();
        if self.look_at_destination(now, !waiting) {
            return EndStep::LookAgain;
        }
        if waiting {
            return EndStep::Wait;
        }
        let open = self.tracker.writing_files();
        match open_at_end.decide(&open, self.cfg.quiet, now, self.sh) {
            OpenWait::None => EndStep::Over(LoopEnd::Drained),
            OpenWait::TooLong => EndStep::Over(LoopEnd::StillOpen(open)),
            OpenWait::LookAgain => {
                for rel in &open {
                    self.tracker.event(rel, Change::Found, now);
                }
                EndStep::LookAgain
            }
            OpenWait::Wait => EndStep::Wait,
        }
    }

    /// Once the acquisition is over: the bytes still to copy, for the estimate of the time left (a
    /// few large files left weigh more than many small ones copied; docs/design.md, "The end of a
    /// run"). Each file waiting is looked at once, unless more than `SIZE_AT_MOST` wait: then
    /// files stand in for bytes until the final sweep counts them.
    fn size_what_is_left(&mut self) {
        if self.tracker.backlog() + self.tracker.in_flight() > SIZE_AT_MOST {
            return;
        }
        let left: u64 =
            self.tracker.pending().map(|rel| fs::symlink_metadata(self.src.join(rel)).map_or(0, |m| m.len())).sum();
        self.status.bytes_left = left;
        self.status.bytes_known = self.status.bytes_copied + left;
    }

    /// The copy loop: until the acquisition is over and drained, or a stop.
    fn copy_loop(
        &mut self,
        pool: &impl Workers,
        watcher: &mut Watcher,
        ev_rx: &Receiver<notify::Result<notify::Event>>,
        done_rx: &Receiver<Done>,
        warn_rx: &Receiver<String>,
    ) -> LoopEnd {
        let mut ending = Ending::default();
        loop {
            if self.sh.stopped() {
                return LoopEnd::Stopped;
            }
            if self.sh.finish.load(Ordering::Relaxed) {
                self.finishing = true;
            }
            let now = Instant::now();
            if let Some(end) = self.keep_up(now, watcher) {
                return end;
            }
            if let Err(e) = self.walk_on(watcher) {
                // The rescan lists what the walk could not (invariant 3: its watches made again).
                self.sh.say(Level::Warning, format!("initial scan of {}: {e}; rescanning", self.src.display()));
                self.walk = None;
                self.tracker.walk_ended();
                self.rewatch = true;
            }
            self.dispatch(pool, now);
            if self.finishing && !ending.sized {
                ending.sized = true;
                self.size_what_is_left();
            }
            self.publish(if self.finishing { Phase::Reconciling } else { Phase::Copying });
            match self.towards_the_end(&mut ending, now) {
                Next::End(end) => return end,
                Next::Again => continue,
                Next::Sleep => {}
            }
            let in_flight = self.tracker.in_flight();
            let wake = [
                self.tracker.next_deadline(),
                self.health.next_probe(in_flight),
                self.rescans.deadline(),
                ending.open_at_end.wake(now),
                self.new_dirs.front().map(|(at, _)| *at),
            ];
            let wait = wake.into_iter().flatten().min().map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            select! {
                recv(ev_rx) -> ev => {
                    let Ok(first) = ev else { return LoopEnd::WatcherDied };
                    handle_batch(self, first, ev_rx, watcher);
                }
                recv(done_rx) -> d => {
                    if let Ok(d) = d {
                        self.done(d);
                        for d in done_rx.try_iter() {
                            self.done(d);
                        }
                    }
                }
                recv(warn_rx) -> w => {
                    if let Ok(w) = w {
                        self.sh.say(Level::Warning, format!("cannot lower copy priority ({w}); consider --max-rate"));
                    }
                }
                default(wait) => {}
            }
        }
    }

    /// What is due whatever else happens: rescans, new folders to list, settled files leaving
    /// memory, a look at the destination's root, watches made again. Ends the loop where the
    /// destination stayed unavailable beyond `give_up_after`.
    fn keep_up(&mut self, now: Instant, watcher: &mut Watcher) -> Option<LoopEnd> {
        self.rescan_if_due(now, watcher);
        self.list_new_dirs(now);
        if let Some((_, every)) = self.evict.filter(|(at, _)| *at <= now) {
            // Settled at one pass, still settled at the next: quiet for at least `every`.
            self.tracker.evict_settled();
            self.evict = Some((now + every, every));
        }
        self.look_at_destination(now, false);
        if self.rewatch {
            self.rewatch_and_reconcile(watcher);
        }
        if self.health.gave_up(self.cfg.give_up_after, now) || self.dest_root.gave_up(self.cfg.give_up_after, now) {
            let waited = self.cfg.give_up_after.as_secs();
            let msg = format!("destination {} unavailable for {waited} s: giving up", self.dst.display());
            self.sh.say(Level::Error, msg);
            self.status.gave_up = true;
            return Some(LoopEnd::GaveUp);
        }
        None
    }

    /// Hands due files to the free workers: none while the root is away or the destination's
    /// name leads elsewhere, one probe at a time while the destination cannot take files.
    fn dispatch(&mut self, pool: &impl Workers, now: Instant) {
        // Timers fire whatever the budget, so the loop's deadline is never already past.
        self.tracker.tick(now);
        let in_flight = self.tracker.in_flight();
        let budget = if self.paused.is_some() || self.dest_root.away().is_some() {
            0
        } else {
            self.health.budget(self.cfg.nprocs.max(1).saturating_sub(in_flight), in_flight, now)
        };
        for _ in 0..budget {
            match self.tracker.next_job(now) {
                Some(job) => pool.submit(job),
                None => break,
            }
        }
        // The folders of the files due next are made ahead of their copies (docs/design.md,
        // "Round trips"); not while nothing may be written there, nor while the destination
        // fails (its probe goes alone).
        if self.paused.is_none() && self.dest_root.away().is_none() && self.health.error().is_none() {
            pool.ahead(self.tracker.due());
        } else {
            pool.hold();
        }
    }

    /// Once the acquisition is over and the copy idle: the final reconcile, once, then the wait
    /// for files still open (docs/design.md, "The end of a run").
    fn towards_the_end(&mut self, ending: &mut Ending, now: Instant) -> Next {
        if !self.finishing {
            return Next::Sleep;
        }
        if let Some(why) = self.paused.clone().or_else(|| self.dest_root.away().map(String::from)) {
            return if self.tracker.in_flight() == 0 { Next::End(LoopEnd::RootGone(why)) } else { Next::Sleep };
        }
        // A rescan after lost events is due within `RESCAN_MIN`; the final one comes after it,
        // once every folder is watched again.
        if !self.tracker.is_idle() || self.walk.is_some() || self.watch_again && !ending.reconciled {
            return Next::Sleep;
        }
        if ending.reconciled {
            return match self.at_the_end(&mut ending.open_at_end, now) {
                EndStep::Over(end) => Next::End(end),
                EndStep::LookAgain => Next::Again,
                // Sleeps until an event (a close) or the next look.
                EndStep::Wait => Next::Sleep,
            };
        }
        ending.reconciled = true;
        let before = self.tracker.counts().unheard;
        let swept = self.reconcile();
        self.found_at_end = self.tracker.counts().unheard - before;
        match swept {
            // Incomplete: nothing deleted; the verification that follows names what is missing.
            Swept::Complete | Swept::Incomplete => Next::Again,
            Swept::RootGone(why) => Next::End(LoopEnd::RootGone(why)),
        }
    }
}

/// Where due jobs go: the worker pool, or a test's channel (the loop's seam: its events, outcomes
/// and jobs all pass through channels and this).
pub(crate) trait Workers {
    fn submit(&self, job: crate::vocab::Job);
    /// The files due next, in order, whose folders may be made ahead (docs/design.md, "Round trips").
    fn ahead<'p>(&self, _due: impl Iterator<Item = &'p Path>) {}
    /// Nothing is made ahead until fed again.
    fn hold(&self) {}
}

impl Workers for Pool {
    fn submit(&self, job: crate::vocab::Job) {
        Pool::submit(self, job);
    }
    fn ahead<'p>(&self, due: impl Iterator<Item = &'p Path>) {
        Pool::ahead(self, due);
    }
    fn hold(&self) {
        Pool::hold(self);
    }
}

/// Where the copy loop is in its ending.
#[derive(Default)]
struct Ending {
    /// The final reconcile ran.
    reconciled: bool,
    /// What is left was sized for the status.
    sized: bool,
    open_at_end: OpenAtEnd,
}

/// What the copy loop does next.
enum Next {
    Sleep,
    Again,
    End(LoopEnd),
}

/// The source files changed since the final look (their events queued while the end steps ran):
/// a file whose version now is not the one copied, a folder made or removed, the root gone; and
/// whether events were lost meanwhile (then the source must be looked at again as a whole).
fn moved_since(
    src: &Path,
    dest: &Dest,
    ev_rx: &Receiver<notify::Result<notify::Event>>,
    tracker: &Tracker,
    marker: &str,
) -> crate::run::finish::Late {
    let mut evs = Vec::new();
    for raw in ev_rx.try_iter() {
        watcher::translate(src, raw, &mut evs);
    }
    let mut moved = Vec::new();
    let mut lost = false;
    for ev in evs {
        match ev {
            FsEvent::File(rel, _) => {
                if tracker.ignores(&rel) || rel.as_os_str() == marker {
                    continue;
                }
                let now = crate::sys::path_identity(&src.join(&rel)).ok();
                // The version copied (a writer's late close of its lock fd), or a file never copied
                // and gone again (a writer's temp): not a change of what was verified.
                if now == tracker.copied_identity(&rel) {
                    continue;
                }
                // Gone at the source and not at the destination either (verification pruned it,
                // or it was never copied): the copy agrees with the source.
                if now.is_none() && dest.stat(&rel).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                    continue;
                }
                moved.push(rel);
            }
            FsEvent::NewDir(rel) | FsEvent::Gone(rel) if !tracker.ignores(&rel) => moved.push(rel),
            FsEvent::NewDir(_) | FsEvent::Gone(_) => {}
            FsEvent::RootGone(_) | FsEvent::RootCreated | FsEvent::RootMovedIn => moved.push(PathBuf::new()),
            FsEvent::Rescan => lost = true,
            FsEvent::Error(_) | FsEvent::WatchLimit(_) => {}
        }
    }
    crate::run::finish::Late { moved, lost }
}

/// Makes the destination folder if it is missing, never its parents (as rsync): a share that is
/// not mounted must not receive the copy on the local disk under its empty mount point, where
/// the share mounted later would hide it (docs/design.md, "One destination, one acquisition").
fn make_destination(dst: &Path) -> Result<()> {
    match fs::create_dir(dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dst.is_dir() => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::Config(format!("destination {} is a file, not a folder", dst.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Config(format!(
            "destination {}: its folder {} does not exist (softcopy makes only the last one)",
            dst.display(),
            dst.parent().unwrap_or(dst).display()
        ))),
        Err(e) => Err(Error::io("create destination", dst, e)),
    }
}

/// Makes the destination folder, waiting while it cannot be reached (EIO, ESTALE from a share that
/// is down) for up to `give_up_after`, as for a share that drops later (docs/design.md,
/// "Unavailable is not elsewhere"); a missing parent or a file in its place is bad input at once.
/// `false` when stopped meanwhile.
fn reach_destination(cfg: &Config, sh: &Shared) -> Result<bool> {
    let since = Instant::now();
    let mut said = false;
    loop {
        match make_destination(&cfg.destination) {
            Err(Error::Io { source, .. })
                if source.kind() != std::io::ErrorKind::PermissionDenied && since.elapsed() < cfg.give_up_after =>
            {
                if !said {
                    sh.say(
                        Level::Warning,
                        format!(
                            "destination {} cannot be reached ({source}): waiting for it (giving up after {} s)",
                            cfg.destination.display(),
                            cfg.give_up_after.as_secs()
                        ),
                    );
                    said = true;
                }
            }
            done => return done.map(|()| true),
        }
        for _ in 0..5 {
            if sh.stopped() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The whole life of one target, from waiting for its source to its verdict.
/// Finishes what a freeing killed mid-way left set aside at the source (`aside.rs`), before anything
/// looks at the source: a file left there is either the version journaled as freed (deleted, as
/// that freeing would have) or a writer's (put back under its name).
fn recover_freeing(src: &Path, sh: &Shared) {
    match crate::end::aside::recover(src) {
        Ok(done) => {
            if !done.freed.is_empty() || !done.put_back.is_empty() {
                let (freed, back) = (done.freed.len(), done.put_back.len());
                let what = format!("{freed} deleted (their copies proven and journaled), {back} put back");
                sh.say(Level::Info, format!("finished a freeing that was stopped mid-way: {what}"));
            }
            for (path, why) in done.kept {
                sh.say(Level::Warning, format!("{} is kept where a freeing left it: {why}", path.display()));
            }
        }
        Err(e) => sh.say(
            Level::Warning,
            format!("cannot look at what a freeing left in {}: {e}", src.join(crate::end::aside::ASIDE).display()),
        ),
    }
}

/// What a run holds once its source and destination are reached, claimed and known to be one
/// acquisition's.
struct Opened {
    src: PathBuf,
    dst: PathBuf,
    dest: Arc<Dest>,
    /// Invariant 10: one destination, one softcopy; held until the run ends.
    _claim: crate::dest::Claim,
    root: Arc<RootId>,
    /// What the first look for leftover partials found.
    found: copy::Leftovers,
}

pub fn run(cfg: &Config, sh: &Shared, started: Instant) -> Result<(Phase, Verdict)> {
    let opened = match open(cfg, sh)? {
        ControlFlow::Continue(opened) => opened,
        ControlFlow::Break(ended) => return Ok(ended),
    };
    let Opened { src, dest, root, found, .. } = &opened;
    let mut unverified = Unverified::new(dest, sh);
    // Invariant 3: the watch exists before the initial scan starts.
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let (mut watcher, limited) = Watcher::new(src, ev_tx)?;
    sh.set_phase(Phase::Scanning);
    let learned: Arc<crate::sys::Learned> = Arc::default();
    let mut run = Run::new(cfg, sh, started, &opened, learned.clone());
    sh.say(Level::Debug, format!("back-off: {}", run.gentle.view().signal));
    if let Some(e) = limited {
        run.watch_limited(e.to_string());
    }
    // No periodic rescan anywhere, Windows included: notify 9 reports ReadDirectoryChangesW's
    // overflow (an empty result, or ERROR_NOTIFY_ENUM_DIR) as a rescan, like inotify's
    // IN_Q_OVERFLOW (notify-rs PR #964; docs/design.md, "Windows").
    // Invariant 3: each folder's watch is in place before the folder is listed (`Watcher::walk`).
    // The walk's first steps are taken here, so a source that cannot be listed fails the run.
    run.start_walk(&mut watcher)?;
    run.walk_on(&mut watcher)?;
    sh.say(
        Level::Info,
        format!("watching {} (initial scan: {} files to check first)", src.display(), run.tracker.backlog()),
    );

    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let (warn_tx, warn_rx) = crossbeam_channel::unbounded();
    let opts = copy_options(cfg, &run, learned, root, found);
    let priority = crate::copy::pool::Priority { warning: warn_tx, lowered: sh.lowered.clone() };
    let pool = Pool::start(cfg.nprocs.max(1), src.clone(), dest.clone(), opts, done_tx, sh.stop.clone(), priority)
        .map_err(|e| Error::Internal(format!("cannot start workers: {e}")))?;
    let flusher = crate::dest::flush::Flusher::start(dest.clone(), crate::dest::flush::EVERY)
        .map_err(|e| Error::Internal(format!("cannot start the flushing thread: {e}")))?;
    let end = run.copy_loop(&pool, &mut watcher, &ev_rx, &done_rx, &warn_rx);
    // The watch stays until the marker is published: a change at the source after the final
    // look withdraws it (docs/design.md, "The end of a run"). Events are only queued meanwhile.
    pool.shutdown();
    drop(flusher);
    // No copy is in flight any more: the staging folders are empty.
    dest.remove_staging();
    for d in done_rx.try_iter() {
        run.done(d);
    }
    let gave_up = match run.loop_ended(end)? {
        ControlFlow::Continue(gave_up) => gave_up,
        ControlFlow::Break(ended) => return Ok(ended),
    };
    let mut ended = run.end_steps(&opened, watcher, &ev_rx, gave_up)?;
    ended.1.found_at_end = run.found_at_end;
    if ended.0 == Phase::Verified {
        unverified.verified();
    }
    Ok(ended)
}

/// Reaches the source and the destination, claims the destination, recovers an interrupted
/// freeing, and makes sure the destination is this acquisition's copy. `Break` holds how the run
/// ended before it began (stopped while waiting, or nothing left to do).
fn open(cfg: &Config, sh: &Shared) -> Result<ControlFlow<(Phase, Verdict), Opened>> {
    let stopped = ControlFlow::Break((Phase::Stopped, Verdict::default()));
    let Some(src) = wait_for_source(cfg, sh)? else { return Ok(stopped) };
    let (dst, dest) = match &cfg.remote {
        Some(remote) => (PathBuf::from(remote.shown()), open_remote(cfg, sh, remote)?),
        None => match open_local(cfg, sh, &src)? {
            Some(opened) => opened,
            None => return Ok(stopped),
        },
    };
    *lock(&sh.roots) = Some((src.clone(), dst.clone()));
    let dest = Arc::new(dest);
    let claim = dest.claim(&src).map_err(Error::Config)?;
    dest.detect_case_folding();
    recover_freeing(&src, sh);
    if let Some(ended) = take_ownership(cfg, sh, &src, &dest)? {
        return Ok(ControlFlow::Break(ended));
    }
    // The record says, at every later look, that the folder under the name is still this copy.
    dest.keep_record(Path::new(crate::run::origin::ORIGIN)).map_err(|e| Error::io("read the record of", &dst, e))?;
    crate::run::origin::clear_let_go(&dest);
    let journal = crate::end::journal::Journal::read(&dest).map_err(|e| Error::io("read the journal at", &dst, e))?;
    dest.keep_freed(journal.freed_names());
    let root = Arc::new(RootId::default());
    root.adopt(&src).map_err(|why| Error::Config(format!("source {why}")))?;
    if let Some(remote) = cfg.remote.as_ref().filter(|_| cfg.delete_source) {
        find_server_hash(cfg, sh, remote, &dest);
    }
    let found = copy::remove_partials(&dest);
    if found.removed > 0 {
        sh.say(Level::Info, format!("removed {} partial files left by an earlier run", found.removed));
    }
    Ok(ControlFlow::Continue(Opened { src, dst, dest, _claim: claim, root, found }))
}

/// Reaches a local destination (made if missing, never its parents), resolved: `None` when
/// stopped while waiting for it.
fn open_local(cfg: &Config, sh: &Shared, src: &Path) -> Result<Option<(PathBuf, Dest)>> {
    if !reach_destination(cfg, sh)? {
        return Ok(None);
    }
    let dst = fs::canonicalize(&cfg.destination).map_err(|e| Error::io("resolve", &cfg.destination, e))?;
    if dst.starts_with(src) || src.starts_with(&dst) {
        return Err(Error::Config(format!(
            "source {} and destination {} must not contain each other",
            src.display(),
            dst.display()
        )));
    }
    let dest =
        Dest::open(&dst, &cfg.destination, Some(&cfg.marker)).map_err(|e| Error::io("open destination", &dst, e))?;
    Ok(Some((dst, dest)))
}

/// Reaches an ssh destination over SFTP (made if missing, never its parents). What a person must
/// act on (the host unknown or untrusted, authentication refused, no SFTP, the path not there or
/// not allowed) is a configuration error: one line, before anything is copied.
fn open_remote(cfg: &Config, sh: &Shared, remote: &crate::dest::remote::Remote) -> Result<Dest> {
    let shown = remote.shown();
    let session = remote.connect(cfg.ssh_command.as_deref()).map_err(Error::Config)?;
    let sftp = crate::dest::sftp::Sftp::open_making(session, &remote.path, true).map_err(|e| {
        remote.refusal(&e).map_or_else(|| Error::io("open destination", Path::new(&shown), e), Error::Config)
    })?;
    // Whether copies can be made durable in batches, asked while the other sessions start.
    let (r, command, root) = (remote.clone(), cfg.ssh_command.clone(), sftp.root());
    let start = Box::new(move || crate::dest::remote_exec::Shell::spawn(r.shell(command.as_deref())));
    let probing = std::thread::spawn(move || crate::dest::sftp::Durable::probe(start, &root));
    // A lost connection is started again at the next call (the target paused meanwhile, its
    // health probing with backoff): what was in flight is copied again, never named half-written.
    let (again, command) = (remote.clone(), cfg.ssh_command.clone());
    let sftp = sftp.reconnecting(Arc::new(move || again.connect(command.as_deref())), cfg.connections);
    let (durable, why_not) =
        probing.join().unwrap_or((crate::dest::sftp::Durable::EachFile, Some("its probe panicked".into())));
    let sftp = sftp.map_err(Error::Config)?.durable(durable);
    sh.say(
        Level::Info,
        match why_not {
            None => format!("{shown}: copies made durable in batches (`sync -f` on the host)"),
            Some(why) => format!("{shown}: each copy fsynced on its own ({why})"),
        },
    );
    let store = crate::dest::Store::Sftp(sftp);
    Dest::open_store(store, &remote.path, Some(&cfg.marker))
        .map_err(|e| Error::io("open destination", Path::new(&shown), e))
}

/// Asks the host, at the start (the root claimed: a file is written there), for a hash command to
/// prove copies by before their sources are freed, one that sees the files SFTP writes
/// (`dest/server_hash.rs`), and says which proof the run will use.
fn find_server_hash(cfg: &Config, sh: &Shared, remote: &crate::dest::remote::Remote, dest: &Dest) {
    use crate::dest::server_hash::{detect, sees_the_copies, Exec, Hasher};
    let exec = Exec::new(remote.clone(), cfg.ssh_command.clone());
    let said = match detect(&exec).map(|found| found.map(|algo| Hasher { exec, algo })) {
        Ok(Some(hasher)) => match sees_the_copies(dest, &hasher) {
            Ok(()) => {
                let by = hasher.algo.program();
                dest.hash_on_server(hasher);
                format!("copies are proven before freeing by the server's {by} (not read back)")
            }
            Err(why) => format!("{why}: copies are read back before freeing"),
        },
        Ok(None) => "the server has neither b3sum nor sha256sum: copies are read back before freeing".into(),
        Err(why) => format!("{why}: copies are read back before freeing"),
    };
    sh.say(Level::Info, said);
}

/// One destination, one acquisition: never written into, pruned or marked for another. Records
/// the origin where none is; `Some` where the run ends here (an earlier run finished it).
fn take_ownership(cfg: &Config, sh: &Shared, src: &Path, dest: &Dest) -> Result<Option<(Phase, Verdict)>> {
    let dst = dest.root();
    let whose =
        crate::run::origin::owner(src, dest, &cfg.marker).map_err(|e| Error::io("read the record of", dst, e))?;
    match whose {
        Owner::Another(why) => return Err(Error::Config(why)),
        Owner::Finished => {
            sh.say(
                Level::Info,
                format!("{} was copied, verified and freed by an earlier run: nothing is left to do", src.display()),
            );
            // Its marker stands at the destination (`origin::owner` looked); this run published none.
            return Ok(Some((Phase::Verified, Verdict { verified: true, ..Verdict::default() })));
        }
        Owner::Unrecorded => sh.say(
            Level::Info,
            format!(
                "{} holds files no softcopy run recorded: taken as an earlier copy of {}",
                dst.display(),
                src.display()
            ),
        ),
        Owner::SameNumber => return Err(Error::Config(crate::run::origin::same_number_why(dst, src))),
        Owner::Free | Owner::Ours => {}
    }
    if whose != Owner::Ours {
        crate::run::origin::record(dest, src).map_err(|e| Error::io("record the origin at", dst, e))?;
    }
    Ok(None)
}

/// How this run's workers copy.
fn copy_options(
    cfg: &Config,
    run: &Run<'_>,
    learned: Arc<crate::sys::Learned>,
    root: &Arc<RootId>,
    found: &copy::Leftovers,
) -> CopyOptions {
    CopyOptions {
        method: cfg.method,
        sleep: cfg.sleep,
        low_priority: cfg.low_priority,
        gate: run.gentle.gate(),
        max_rate: cfg.max_rate.map(|b| Arc::new(crate::gentle::rate::RateLimit::new(b))),
        max_total_rate: cfg.max_total_rate.clone(),
        checksum: cfg.checksum,
        fresh_destination: !found.others,
        learned,
        root: Some(root.clone()),
        quiet: cfg.quiet,
        // The pool's own (`Pool::start`).
        folders: None,
    }
}

impl<'a> Run<'a> {
    fn new(cfg: &'a Config, sh: &'a Shared, started: Instant, o: &Opened, learned: Arc<crate::sys::Learned>) -> Self {
        Run {
            cfg,
            sh,
            src: o.src.clone(),
            dst: o.dst.clone(),
            dest: o.dest.clone(),
            dest_root: RootWatch::default(),
            root: o.root.clone(),
            root_gone: None,
            paused: None,
            rewatch: false,
            moved_in: false,
            adopted: None,
            watch_again: false,
            found_at_end: 0,
            tracker: Tracker::new(cfg.settle, cfg.debounce).with_exclude(cfg.exclude.clone()),
            finishing: cfg.once,
            status: Status::default(),
            started,
            health: Health::default(),
            rescans: Rescans::default(),
            counted_writing: None,
            learned,
            said_no_busy_check: false,
            new_dirs: VecDeque::new(),
            evict: cfg
                .evict_after
                .filter(|_| !cfg.delete_source && !cfg.checksum && cfg.manifest.is_none())
                .map(|every| (started + every, every)),
            gentle: crate::gentle::Gentle::start(
                cfg.back_off,
                cfg.nprocs.max(1),
                &o.src,
                o.dest.local_root().unwrap_or(Path::new("")),
            ),
            walk: None,
            walk_window: WALK_WINDOW,
        }
    }

    /// Says how the copy loop ended: `Continue(gave_up)` where the end steps follow (drained, or
    /// the destination given up on), else how the run ended.
    fn loop_ended(&mut self, end: LoopEnd) -> Result<ControlFlow<(Phase, Verdict), bool>> {
        let phase = match &end {
            LoopEnd::Stopped => Phase::Stopped,
            LoopEnd::WatcherDied => Phase::Failed,
            _ => Phase::Reconciling,
        };
        self.publish(phase);
        match end {
            LoopEnd::Stopped => Ok(ControlFlow::Break((Phase::Stopped, Verdict::default()))),
            LoopEnd::WatcherDied => Err(Error::Internal("the filesystem watcher stopped unexpectedly".into())),
            LoopEnd::RootGone(why) => {
                let not_copied = self.tracker.not_copied();
                let msg = format!("{why}: the copy cannot be completed ({} files not copied)", not_copied.len());
                self.sh.say(Level::Error, msg);
                let verdict = Verdict { reason: Some(why), not_copied, ..Verdict::default() };
                Ok(ControlFlow::Break((Phase::Incomplete, verdict)))
            }
            LoopEnd::StillOpen(open) => Ok(ControlFlow::Break(still_open(self.cfg, self.sh, open))),
            LoopEnd::GaveUp => Ok(ControlFlow::Continue(true)),
            LoopEnd::Drained => Ok(ControlFlow::Continue(false)),
        }
    }

    /// After the copy loop drained: the manifest, the partials left by failed attempts, then the
    /// end steps (`finish/`), with what this run knows of its own copies.
    fn end_steps(
        &mut self,
        o: &Opened,
        watcher: Watcher,
        ev_rx: &Receiver<notify::Result<notify::Event>>,
        gave_up: bool,
    ) -> Result<(Phase, Verdict)> {
        let (cfg, sh, dest) = (self.cfg, self.sh, &o.dest);
        if let Some(path) = &cfg.manifest {
            write_manifest(&self.tracker, &o.dest, path, cfg.remote.as_ref(), cfg.ssh_command.as_deref())?;
            sh.say(Level::Info, format!("manifest written to {}", path.display()));
        }
        // A copy that failed while the destination was unreachable may have left its partial
        // behind (removing it failed too). No worker runs now, so every partial left is an orphan.
        // Looked for only if one may be there: on a network share the walk costs a round trip per
        // folder and file.
        let mut walked_whole = o.found.complete;
        if o.found.kept > 0 || dest.partials_left() {
            let again = copy::remove_partials(&o.dest);
            walked_whole &= again.complete && again.kept == 0;
            if again.removed > 0 {
                sh.say(Level::Info, format!("removed {} partial files left by failed attempts", again.removed));
            }
        }
        let copied = if cfg.delete_source { self.tracker.copied_versions() } else { Vec::new() };
        // What this run put at a destination that held nothing when it started, and where no partial
        // may be left: then every file there is one of these (docs/design.md, "The end of a run").
        let tracker = &self.tracker;
        let lookup = |rel: &Path| tracker.copied_identity(rel);
        // Not where the destination folds case: one copy there may stand for two source names; nor
        // where copies of another kind were removed from a name: a copy just made may have gone too.
        let shortcut =
            !o.found.others && walked_whole && !dest.partials_left() && !dest.folds_case() && !dest.kind_changed();
        let landed = shortcut.then(|| Landed {
            copied: &lookup,
            settled: Some(tracker.settled()),
            count: tracker.copied_count(),
        });
        // Asked once, before anything is freed: the watch then goes (freeing's own deletions would
        // only fill its queue).
        let watcher = std::cell::RefCell::new(Some(watcher));
        let late = || {
            let moved = moved_since(&o.src, dest, ev_rx, tracker, &cfg.marker);
            drop(watcher.borrow_mut().take());
            moved
        };
        let records = Landed { copied: &lookup, settled: Some(tracker.settled()), count: tracker.copied_count() };
        let (src, root) = (&o.src, &o.root);
        Ok(conclude(Drained { cfg, sh, src, dest, root, copied, landed, records, gave_up, late: &late }))
    }
}

/// Waits for the source to exist (or fails at once when asked not to wait). `None` if stopped.
fn wait_for_source(cfg: &Config, sh: &Shared) -> Result<Option<PathBuf>> {
    let mut said = false;
    loop {
        match fs::metadata(&cfg.source) {
            Ok(m) if m.is_dir() => {
                return fs::canonicalize(&cfg.source).map(Some).map_err(|e| Error::io("resolve", &cfg.source, e))
            }
            Ok(_) => return Err(Error::SourceNotDir(cfg.source.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !cfg.wait_for_source {
                    return Err(Error::SourceMissing(cfg.source.clone()));
                }
            }
            Err(e) => return Err(Error::io("stat", &cfg.source, e)),
        }
        if !said {
            sh.set_phase(Phase::Waiting);
            sh.say(Level::Info, format!("waiting for {} to appear", cfg.source.display()));
            said = true;
        }
        // Polling a single stat a few times a second while nothing exists yet costs nothing
        // measurable, unlike a watch on an ancestor that may not exist either.
        if sh.stopped() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// The loop driven by synthetic outcomes over a real (temporary) source and destination: the
// orderings of workers' answers that real copies make hard to produce.
#[cfg(all(test, target_os = "linux"))]
mod tests;
