//! The pure state machine that decides when a source file is ready to copy.
//!
//! It sees filesystem changes (already reduced to [`Change`]), hands out [`Job`]s, and learns the
//! [`Outcome`] of each. It does no I/O and reads no clock: every call takes `now`, so tests drive it
//! with synthetic event sequences and a mock clock. Rules, from the writers' observed behaviour
//! (`shared/research/writers.md`):
//! - a rename onto a final name is a complete version: ready now;
//! - a file found by a scan, or a bare CREATE (zarr-python's `link`, or the start of an in-place
//!   write), is ready now *if no process has it open for writing*: its job asks the worker to check
//!   ([`Job::verify_closed`]); a file still open comes back as [`Outcome::Busy`] and waits for its close;
//! - a file written in place (MODIFY) is ready once closed (CLOSE_WRITE) and quiet for `settle`;
//! - CLOSE_WRITE without a MODIFY since the last version (tensorstore closing its lock fd after the
//!   rename) is not a new version;
//! - a deletion is a job too: the worker finds the source gone and mirrors that;
//! - lock files and other writers' temps are never tracked at all;
//! - a file is in the ready queue at most once and in a worker at most once; a change while it is
//!   being copied makes it copy again afterwards (invariant 2);
//! - a *new version of a file already copied* (a hot key: a shard rewritten per inner chunk, metadata
//!   rewritten on every resize) waits `debounce` for further versions, but never more than
//!   `MAX_DEBOUNCES` × `debounce` in all; a file's first version is never delayed.
//!
//! This folder owns readiness: the tracker here, its reconcile sweeps (`sweep.rs`), the per-folder
//! records of settled files (`settled.rs`), spreading due jobs over folders (`spread.rs`) and the
//! exclude globs (`exclude.rs`). It may import only `vocab`.

pub mod exclude;
pub mod settled;
pub mod spread;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ffi::OsStr;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::vocab::{is_ignored, Change, Copied, Identity, Job, Outcome, Prev, BUSY_POLL, CLOSE_EVENTS};

/// A tracked file's path relative to the source root.
type Key = Rc<OsStr>;

/// Copies that fail this many times in a row are given up until the file changes again; the final
/// verification then lists them. Later work (fault handling) can make this a user option.
const MAX_FAILURES: u8 = 6;

/// A hot key is copied at least once per this many debounce periods, however often it changes.
const MAX_DEBOUNCES: u32 = 10;

/// One spelling per file. On Windows `a/b` and `a\b` are one file (notify and walks say `\`,
/// Zarr array paths `/`) but two keys: keys use the platform's separator.
fn key_of(rel: &Path) -> Cow<'_, OsStr> {
    #[cfg(windows)]
    if rel.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Cow::Owned(rel.components().collect::<PathBuf>().into_os_string());
    }
    Cow::Borrowed(rel.as_os_str())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    None,
    Now,
    At(Instant),
}

#[derive(Debug)]
struct FileState {
    want: Want,
    /// MODIFY seen and no CLOSE_WRITE yet: a writer has it open.
    writing: bool,
    /// `writing` rests on a write heard (not on a look that found it open): only its close, or
    /// events known lost, end it; a scan's find does not (invariant 4).
    heard: bool,
    queued: bool,
    in_flight: bool,
    failures: u8,
    /// Copies discarded in a row because the source changed under them (backed off like failures).
    changes: u8,
    copied: Option<Identity>,
    /// How many versions were copied; more than one means redundant copies.
    copies: u32,
    /// Found by the current reconcile sweep.
    seen: bool,
    /// When the oldest version not yet copied of a hot key arrived (bounds the debounce).
    pending_since: Option<Instant>,
    /// The next job must check that no writer has the file open (see [`Job::verify_closed`]).
    verify_closed: bool,
    /// An event after the last copy says there is a newer version (see [`Prev::Superseded`]).
    superseded: bool,
    /// Settled at the last [`Tracker::evict_settled`]: settled again at the next, it leaves the map.
    cold: bool,
    /// Back from a folder record that no longer proved it (see [`Prev::Settled`]).
    relisted: bool,
    /// Known only from the paced walk's listing, no event heard for it since (see
    /// [`Tracker::let_go_walked`]).
    walked: bool,
    /// Content hash of the copied version (`--checksum`).
    /// Boxed: only `--checksum` runs have one, and a box keeps the state of every other file small.
    hash: Option<Box<crate::vocab::Hash>>,
}

impl FileState {
    fn new() -> Self {
        FileState {
            want: Want::None,
            writing: false,
            heard: false,
            queued: false,
            in_flight: false,
            failures: 0,
            changes: 0,
            copied: None,
            copies: 0,
            seen: true,
            pending_since: None,
            verify_closed: false,
            superseded: false,
            cold: false,
            relisted: false,
            walked: false,
            hash: None,
        }
    }
}

/// Counters the tracker keeps about its own decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerCounts {
    /// Copies of a file that had already been copied before in this run.
    pub redundant: u64,
    /// Files given up after repeated failures.
    pub failed: u64,
    /// Distinct files copied at least once.
    pub distinct: u64,
    /// The most copies of any one file.
    pub max_copies: u32,
    /// Files a complete sweep found new, changed or gone with no event having said so (a folder
    /// whose settled record failed counts once): what the watch missed (docs/design.md, "Live,
    /// proven live").
    pub unheard: u64,
}

/// The per-target readiness state machine. See the module docs for the rules.
#[derive(Debug)]
pub struct Tracker {
    /// Keys are shared with `ready` and `timers` (a queued file's path is stored once, not three
    /// times): a million-file archive is a million keys, all queued at the initial scan. They are
    /// `OsStr`, ordered by bytes: `Path`'s ordering compares component by component, which made
    /// key comparisons most of the initial scan's time. Byte order still keeps every key under a
    /// folder together (they share the prefix `folder/`), which is all `removed_tree` needs.
    files: BTreeMap<Key, FileState>,
    /// Due files in the order they became due, with the time they did (for the oldest wait).
    ready: VecDeque<(Key, Instant)>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    settle: Duration,
    debounce: Duration,
    in_flight: usize,
    /// Copies in flight per folder, to spread the workers over folders.
    loads: crate::track::spread::FolderLoad,
    counts: TrackerCounts,
    last_error: Option<String>,
    /// Writers' closes are reported (see [`Tracker::with_close_events`]).
    close_events: bool,
    /// Events were lost since the last complete sweep: a file seen written may have been closed
    /// unheard, so a scan may take it as closed (docs/design.md, invariant 4).
    events_lost: bool,
    /// What is kept of the files that left `files` settled (see [`Tracker::evict_settled`]).
    settled: crate::track::settled::Settled,
    /// A reconcile sweep is under way (between [`Tracker::begin_sweep`] and its end).
    sweeping: bool,
    /// What the lab said is not part of the acquisition: never tracked, so never copied or waited for.
    exclude: std::sync::Arc<crate::track::exclude::Exclude>,
    /// Where the paced walk of the source is (see [`Tracker::walked`]).
    walking: Walking,
    /// The folder of the file the paced walk listed last: it and the folders above it may still
    /// have files to list (see [`Tracker::walk_may_list`]).
    walk_at: std::ffi::OsString,
}

/// Where the paced walk of the source is (docs/design.md, "Memory").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Walking {
    /// No walk is under way: every file is held, in a record, or to be heard of.
    #[default]
    Done,
    /// The walk has files still to list: a sweep leaves those the tracker does not hold to it.
    UnderWay,
    /// As `UnderWay`, and a sweep did leave some to it: one of them may have been listed
    /// already and changed unheard, so the source is swept again once the walk ends.
    LeftSome,
}

/// Applies `want` to the file `key` whose state is `st`: queues it, or sets its timer. A function
/// of the parts it touches, so callers already holding the state need no second lookup.
fn schedule(
    st: &mut FileState,
    key: &Key,
    want: Want,
    now: Instant,
    ready: &mut VecDeque<(Key, Instant)>,
    timers: &mut BinaryHeap<Reverse<(Instant, Key)>>,
) {
    match want {
        Want::None => st.want = Want::None,
        // While a writer has the file open it is not due: its close makes it due (after `settle`).
        // Recording `Now` here would strand it: the close's timer never postpones a due file, and
        // a due file that is not queued is never queued again (a flaky test found it: docs/design.md, "The tracker").
        Want::Now if st.writing => st.want = Want::None,
        Want::Now => {
            st.want = Want::Now;
            if !st.queued && !st.in_flight {
                st.queued = true;
                ready.push_back((key.clone(), now));
            }
        }
        Want::At(t) => {
            // Never postpone a file that is already due now.
            if st.want != Want::Now {
                st.want = Want::At(t);
                timers.push(Reverse((t, key.clone())));
            }
        }
    }
}

impl Tracker {
    /// A tracker whose in-place writes become ready `settle` after their last close, and whose
    /// hot keys wait `debounce` for further versions before being copied again.
    pub fn new(settle: Duration, debounce: Duration) -> Self {
        Tracker {
            files: BTreeMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            settle,
            debounce,
            in_flight: 0,
            loads: Default::default(),
            counts: TrackerCounts::default(),
            last_error: None,
            close_events: CLOSE_EVENTS,
            events_lost: false,
            settled: Default::default(),
            sweeping: false,
            exclude: Default::default(),
            walking: Walking::Done,
            walk_at: Default::default(),
        }
    }

    pub fn with_exclude(mut self, exclude: std::sync::Arc<crate::track::exclude::Exclude>) -> Self {
        self.exclude = exclude;
        self
    }

    /// Names never tracked: writers' locks and temps, our own state, and the excluded files.
    pub fn ignores(&self, rel: &Path) -> bool {
        is_ignored(rel) || self.exclude.matches(rel)
    }

    /// Whether writers' closes are reported (the platform's [`CLOSE_EVENTS`] unless told):
    /// without, a file found open is looked at again every [`BUSY_POLL`].
    /// Events were lost (a queue overflow): until the next complete sweep, a scan's find may take
    /// a file seen written as closed.
    pub fn events_lost(&mut self) {
        self.events_lost = true;
    }

    pub fn with_close_events(mut self, reported: bool) -> Self {
        self.close_events = reported;
        self
    }

    /// Feeds one change. Ignored names are dropped here, so callers need not filter.
    pub fn event(&mut self, rel: &Path, change: Change, now: Instant) {
        if self.ignores(rel) {
            return;
        }
        let settle_at = now + self.settle;
        // One lookup for both a new and a known file (the initial scan of a million files is a
        // million of these); a known file's key is the one kept, the new allocation dropped.
        let rel = &*key_of(rel);
        let rel = Path::new(rel);
        let settled = &mut self.settled;
        let (key, st) = match self.files.entry(Rc::from(rel.as_os_str())) {
            Entry::Occupied(e) => (e.key().clone(), e.into_mut()),
            Entry::Vacant(e) => {
                let key = e.key().clone();
                let mut st = FileState::new();
                if settled.has_folder_of(&key) {
                    // Perhaps a settled file back with a new version: counted as copied once, so
                    // its next copy makes it a hot key, which is never let go again.
                    st.copies = 1;
                    if change != Change::Found {
                        settled.heard(&key);
                    }
                }
                (key, e.insert(st))
            }
        };
        // A scan's find is no evidence that anything changed: it neither forgives past failures
        // nor revives a file given up, or a source rescanned every few seconds (lost events, no
        // watch) would retry a failing file for ever and hold up the end (docs/design.md, "The tracker"). A file given
        // up stays so until an event; verification then names it and the run ends Incomplete.
        st.cold = false;
        if change != Change::Found {
            st.failures = 0;
            st.walked = false;
        } else if st.failures >= MAX_FAILURES {
            return;
        }
        // Evidence of a new version of a file already copied (or being copied): its next copy is
        // made whatever its metadata says. A scan's find is not evidence; a removal is no version.
        if (st.copied.is_some() || st.in_flight) && !matches!(change, Change::Found | Change::Removed) {
            let lock_fd_close = change == Change::ClosedWrite && !st.writing;
            st.superseded |= !lock_fd_close;
        }
        if !matches!(change, Change::Found | Change::Modified) {
            st.heard = false;
        }
        let want = match change {
            // Evidence of a writer is never erased by a scan: a file heard written and not heard
            // closed stays open until its close is heard, or events are known lost. (One found
            // open by a look is looked at again: where its folder has no watch, no close comes.)
            Change::Found if st.writing && st.heard && self.close_events && !self.events_lost => return,
            Change::Replaced if (st.copies > 0 || st.in_flight) && !self.debounce.is_zero() => {
                st.writing = false;
                st.verify_closed = false;
                let since = *st.pending_since.get_or_insert(now);
                Want::At((now + self.debounce).min(since + self.debounce * MAX_DEBOUNCES))
            }
            Change::Replaced | Change::Removed => {
                st.writing = false;
                st.verify_closed = false;
                Want::Now
            }
            // Where no close is reported a create is followed by writes: looked at `settle` after
            // the last of them, not at once (a copy at once would be superseded by their events).
            Change::Created if !self.close_events => {
                st.writing = false;
                st.verify_closed = true;
                Want::At(settle_at)
            }
            Change::Found | Change::Created => {
                st.writing = false;
                st.verify_closed = true;
                Want::Now
            }
            Change::Modified => {
                // Whatever was due is superseded: the writer's close will make it due again.
                st.writing = true;
                st.heard = true;
                st.want = Want::None;
                return;
            }
            Change::ClosedWrite => {
                // A close matters after a write, or while a job that checks for writers is in
                // flight (it may have seen the file still open). Otherwise it is tensorstore closing
                // its lock fd after the rename: the same version.
                let matters = st.writing || (st.in_flight && st.verify_closed) || matches!(st.want, Want::At(_));
                if !matters {
                    return;
                }
                st.writing = false;
                Want::At(settle_at)
            }
            Change::Written => {
                // Each write moves the look to `settle` after it; the job checks for writers.
                st.writing = false;
                st.verify_closed = true;
                Want::At(settle_at)
            }
        };
        schedule(st, &key, want, now, &mut self.ready, &mut self.timers);
    }

    /// Every tracked file at or below `prefix` (a removed or renamed-away directory) is gone.
    pub fn removed_tree(&mut self, prefix: &Path, now: Instant) {
        // Settled copies below it are no longer accounted for: the end walks the destination and
        // prunes them as stale chunks (docs/design.md, "Memory").
        self.settled.removed_tree(Path::new(&*key_of(prefix)));
        // In byte order the keys below `prefix` are exactly those starting with `prefix/`, together.
        let mut start = key_of(prefix).into_owned();
        if !start.is_empty() {
            start.push(std::path::MAIN_SEPARATOR_STR);
        }
        let under: Vec<Key> = self
            .files
            .range::<OsStr, _>((Bound::Included(start.as_os_str()), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.as_encoded_bytes().starts_with(start.as_encoded_bytes()))
            .cloned()
            .collect();
        for rel in under {
            self.event(Path::new(&*rel), Change::Removed, now);
        }
    }

    /// Every file copied (by this run or an earlier one), for `--delete-source`.
    pub fn copied_versions(&self) -> Vec<Copied> {
        self.files
            .iter()
            .filter_map(|(p, st)| {
                st.copied.map(|ident| Copied { rel: PathBuf::from(&**p), ident, hash: st.hash.as_deref().copied() })
            })
            .collect()
    }

    /// The version of `rel` at the destination, if one was copied (or found copied).
    pub fn copied_identity(&self, rel: &Path) -> Option<Identity> {
        self.files.get(&*key_of(rel)).and_then(|st| st.copied)
    }

    /// How many files have a version at the destination (settled ones included, and those whose
    /// record was given up: see [`crate::track::settled::Settled::copies`]).
    pub fn copied_count(&self) -> usize {
        self.files.values().filter(|st| st.copied.is_some()).count() + self.settled.copies() as usize
    }

    /// The records of the files that left the map settled (see [`Tracker::evict_settled`]).
    pub fn settled(&self) -> &crate::track::settled::Settled {
        &self.settled
    }

    /// Every file known at the source whose current version is not at the destination.
    pub fn not_copied(&self) -> Vec<PathBuf> {
        self.files.iter().filter(|(_, st)| st.copied.is_none()).map(|(p, _)| PathBuf::from(&**p)).collect()
    }

    /// Every file copied (by this run or an earlier one) with its size and, when known, its hash.
    pub fn copied_files(&self) -> impl Iterator<Item = (&Path, u64, Option<crate::vocab::Hash>)> {
        self.files
            .iter()
            .filter_map(|(p, st)| st.copied.map(|id| (Path::new(&**p), id.size, st.hash.as_deref().copied())))
    }

    fn want(&mut self, rel: &Path, want: Want, now: Instant) {
        let Some((key, st)) = self
            .files
            .range_mut::<OsStr, _>((Bound::Included(rel.as_os_str()), Bound::Included(rel.as_os_str())))
            .next()
        else {
            return;
        };
        schedule(st, key, want, now, &mut self.ready, &mut self.timers);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Reverse((t, rel)) = self.timers.pop().expect("peeked");
            // A timer is stale when the file's deadline moved since it was set.
            if let Some(st) = self.files.get_mut(&*rel).filter(|st| st.want == Want::At(t)) {
                if st.writing && !self.close_events {
                    // The poll of a file found open (no close will be reported): look again.
                    st.writing = false;
                    st.verify_closed = true;
                }
                schedule(st, &rel, Want::Now, now, &mut self.ready, &mut self.timers);
            }
        }
    }

    /// The next file to copy, if any is due. The file is then "in flight" until [`Tracker::finish`].
    pub fn next_job(&mut self, now: Instant) -> Option<Job> {
        self.fire_timers(now);
        let files = &mut self.files;
        let (rel, _, partial) = self.loads.pick(&mut self.ready, |rel| {
            let Some(st) = files.get_mut(&**rel) else { return false };
            let due = st.want == Want::Now && !st.in_flight && !st.writing;
            // A dropped entry is no longer queued; a taken one is not either (below).
            st.queued = due;
            due
        })?;
        let st = self.files.get_mut(&*rel)?;
        st.queued = false;
        st.want = Want::None;
        st.pending_since = None;
        st.in_flight = true;
        self.in_flight += 1;
        self.loads.started(&rel);
        let prev = match st.copied {
            _ if st.superseded => Prev::Superseded,
            Some(ident) => Prev::Copied(ident),
            None if st.relisted => Prev::Settled,
            None => Prev::Unknown,
        };
        Some(Job { prev, rel: PathBuf::from(&*rel), verify_closed: st.verify_closed, partial })
    }

    /// Records what a worker did with the job for `rel`, re-queueing it if it changed meanwhile.
    pub fn finish(&mut self, rel: &Path, outcome: Outcome, now: Instant) {
        let rel = &*key_of(rel);
        let rel = Path::new(rel);
        let Some(st) = self.files.get_mut(rel.as_os_str()) else { return };
        if st.in_flight {
            st.in_flight = false;
            self.in_flight -= 1;
            self.loads.ended(rel.as_os_str());
        }
        let mut retry = None;
        match outcome {
            Outcome::Copied { ident, hash, .. } => {
                st.changes = 0;
                st.hash = hash.map(Box::new);
                if st.copies > 0 {
                    self.counts.redundant += 1;
                } else {
                    self.counts.distinct += 1;
                }
                st.copies += 1;
                self.counts.max_copies = self.counts.max_copies.max(st.copies);
                st.copied = Some(ident);
                st.verify_closed = false;
                // Evidence that came while it was copied stands: that change makes it copy again.
                if st.want == Want::None && !st.writing {
                    st.superseded = false;
                }
            }
            Outcome::Unchanged(ident) => {
                if st.copied != Some(ident) {
                    st.hash = None; // copied by an earlier run: the hash is computed if needed
                }
                st.copied = Some(ident);
                st.verify_closed = false;
            }
            Outcome::Deleted | Outcome::Skipped => {
                st.copied = None;
                st.verify_closed = false;
                st.superseded = false;
            }
            Outcome::Changed => {
                // Once at once (a writer's rename landed mid-copy); then with backoff, so a file
                // rewritten faster than it can be copied does not keep a worker copying in vain.
                st.changes = st.changes.saturating_add(1);
                retry = Some(match st.changes {
                    1 => Want::Now,
                    n => Want::At(now + Duration::from_millis(50 << (n - 1).min(7))),
                });
            }
            Outcome::Unavailable(_) | Outcome::RootGone(_) => retry = Some(Want::Now),
            Outcome::Unsettled(wait) => retry = Some(Want::At(now + wait)),
            Outcome::Busy => {
                // Wait for the writer's close, unless it already came while we were checking.
                if st.want == Want::None {
                    st.writing = true;
                    if !self.close_events {
                        retry = Some(Want::At(now + BUSY_POLL));
                    }
                }
            }
            Outcome::Failed(msg) => {
                st.failures = st.failures.saturating_add(1);
                self.last_error = Some(msg);
                if st.failures < MAX_FAILURES {
                    // 0.2 s, 0.4 s, ... 6.4 s: rides out a brief hiccup without a busy loop.
                    let backoff = Duration::from_millis(100 << st.failures);
                    retry = Some(Want::At(now + backoff));
                } else {
                    self.counts.failed += 1;
                }
            }
        }
        // A file given up is kept (with its count) so a rescan's find cannot revive it.
        let given_up = st.failures >= MAX_FAILURES;
        let gone = st.copied.is_none() && st.want == Want::None && !st.writing && retry.is_none() && !given_up;
        if gone {
            // Forget deleted files so memory follows the live file set, not its history.
            self.files.remove(rel.as_os_str());
            return;
        }
        let want = retry.unwrap_or(st.want);
        if want != Want::None {
            // `want` re-evaluates queueing now that the file is no longer in flight.
            if let Want::At(_) = want {
                st.want = Want::None;
            }
            self.want(rel, want, now);
        }
    }

    /// Moves every file whose timer is due into the ready queue, whether or not a worker is free:
    /// afterwards [`Tracker::next_deadline`] is in the future, so a caller that sleeps until it
    /// never spins while every worker is busy (docs/design.md, "The coordinator sleeps").
    pub fn tick(&mut self, now: Instant) {
        self.fire_timers(now);
    }

    /// When the next timer is due, so the caller can sleep exactly until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Nothing queued, nothing in flight, nothing waiting to settle.
    pub fn is_idle(&self) -> bool {
        // Only live timers count; files open for writing do not, so a writer that never closes
        // cannot hold up the end (the final reconcile scan copies whatever is there).
        self.in_flight == 0
            && self.ready.is_empty()
            && self
                .timers
                .iter()
                .all(|Reverse((t, rel))| self.files.get(&**rel).is_none_or(|st| st.want != Want::At(*t) || st.writing))
    }

    /// How long the oldest file waiting for a worker has waited (zero when none waits).
    pub fn oldest_wait(&self, now: Instant) -> Duration {
        self.ready
            .iter()
            .find(|(rel, _)| self.files.get(&**rel).is_some_and(|st| st.queued))
            .map_or(Duration::ZERO, |(_, since)| now.saturating_duration_since(*since))
    }

    /// Files known at the source (copied, waiting, or being written; settled ones included).
    pub fn known(&self) -> usize {
        self.files.len() + self.settled.held() as usize
    }

    /// Files complete at the source and waiting for a worker.
    pub fn backlog(&self) -> usize {
        self.ready.len()
    }

    /// Files due, in the order they are to be copied (some may no longer be due: a hint only).
    pub fn due(&self) -> impl Iterator<Item = &Path> {
        self.ready.iter().map(|(rel, _)| Path::new(&**rel))
    }

    /// Files waiting for a worker or being copied (their paths relative to the source root).
    pub fn pending(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().filter(|(_, st)| st.queued || st.in_flight).map(|(rel, _)| Path::new(&**rel))
    }

    /// Files a worker is copying now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Files currently being written in place (not yet closed).
    pub fn writing(&self) -> usize {
        self.files.values().filter(|st| st.writing).count()
    }

    /// The files a writer still has open (a write seen without its close, or found busy).
    pub fn writing_files(&self) -> Vec<PathBuf> {
        self.files.iter().filter(|(_, st)| st.writing).map(|(p, _)| PathBuf::from(&**p)).collect()
    }

    /// Counters about the tracker's decisions.
    pub fn counts(&self) -> TrackerCounts {
        self.counts
    }

    /// The most recent copy failure message, for the status line.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

mod paced;
mod sweep;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod size {
    /// The state kept for every tracked file, besides its path (compact: a million-file archive
    /// keeps a million of these; docs/design.md, "Memory"). A guard against it growing unnoticed:
    /// 96 before the ctime joined [`Identity`](crate::vocab::Identity); settled files leave this
    /// map altogether.
    #[test]
    fn the_state_of_a_tracked_file_stays_compact() {
        assert!(std::mem::size_of::<super::FileState>() <= 104, "{}", std::mem::size_of::<super::FileState>());
    }
}
