//! What a running target shows the outside: its phase, its counters, its messages, and the
//! verdict at the end. The coordinator writes, Python reads (through `lib.rs`); nothing here runs
//! in Python or waits for it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

use crate::end::mover::MoveReport;
use crate::end::verify::{Expected, Report};
pub use crate::gentle::{BackOff, BackOffState};

/// Where a target is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Starting,
    /// The source does not exist yet.
    Waiting,
    /// Watching installed, initial scan running.
    Scanning,
    /// Copying files as they become ready.
    Copying,
    /// The acquisition is over: the final reconcile scan, and the copies it asks for.
    Reconciling,
    /// Comparing the destination with the source (and the expected Zarr file set).
    Verifying,
    /// Verified: flushing the copies to stable storage, then copying the marker.
    Publishing,
    /// `--delete-source`: deleting each source file whose copy is proven identical.
    Freeing,
    /// The end: every file arrived and checked out (see [`Verdict`]).
    Verified,
    /// The end: something is missing or wrong, or the run could not be proven (see [`Verdict`]).
    Incomplete,
    /// Stopped on request before the end (nothing was deleted after the request).
    Stopped,
    /// A fatal error ended the engine (see `Status::fatal`).
    Failed,
}

impl Phase {
    /// The name shown to users and passed to Python.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Waiting => "waiting",
            Phase::Scanning => "scanning",
            Phase::Copying => "copying",
            Phase::Reconciling => "reconciling",
            Phase::Verifying => "verifying",
            Phase::Publishing => "publishing",
            Phase::Freeing => "freeing",
            Phase::Verified => "verified",
            Phase::Incomplete => "incomplete",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }

    /// The coordinator thread has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Verified | Phase::Incomplete | Phase::Stopped | Phase::Failed)
    }
}

/// A snapshot of one target's progress.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub phase: Phase,
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub files_deleted: u64,
    /// Jobs that found the destination already up to date (re-triggers, resumed runs).
    pub files_unchanged: u64,
    /// Copies of a file that had already been copied in this run (rewritten keys).
    pub redundant: u64,
    /// Distinct files copied at least once.
    pub files_distinct: u64,
    /// The most copies of any one file.
    pub max_copies: u64,
    /// Copy attempts that failed (each is retried with backoff).
    pub errors: u64,
    /// Files given up after repeated failures.
    pub failed: u64,
    /// Complete at the source, waiting for a worker.
    pub backlog: u64,
    pub in_flight: u64,
    /// Open for writing at the source.
    pub writing: u64,
    /// Seconds the oldest file complete at the source has waited for a worker.
    pub oldest_wait: f64,
    /// Files known at the source (for a percentage once the acquisition is over).
    pub known: u64,
    /// Of those, files settled out of memory into their folder's record (docs/design.md, "Memory").
    pub settled: u64,
    /// Bytes of the files the last complete sweep of the source found (0 before one).
    pub bytes_known: u64,
    /// Of those, bytes not yet copied as found, less the bytes copied since: the estimate of the
    /// time left once the acquisition is over (docs/design.md, "The end of a run").
    pub bytes_left: u64,
    pub last_error: Option<String>,
    /// Why the engine failed, when `phase == Failed`.
    pub fatal: Option<String>,
    /// Seconds since the engine started.
    pub elapsed: f64,
    /// The marker was seen (or a one-shot copy / finish() was requested).
    pub finishing: bool,
    /// Why the destination cannot take files now (full, gone), while that lasts.
    pub destination_trouble: Option<String>,
    /// The destination stayed unavailable longer than `give_up_after`: the copy ended incomplete.
    pub gave_up: bool,
    /// Why the target is paused (the source root is missing or not the same folder, or the
    /// destination leads elsewhere), while it is.
    pub paused: Option<String>,
    /// The engine waits for the expected Zarr file set ([`crate::run::engine::Engine::expect`]).
    pub wants_expected: bool,
    /// How much the back-off holds the copy back (docs/design.md, "Gentle on any scheduler").
    pub back_off: BackOff,
}

/// Severity of an engine message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

/// Oldest messages are dropped beyond this, so a reader that never drains cannot grow memory.
const MAX_MESSAGES: usize = 10_000;

/// Why the files of [`Verdict::not_copied`] did not arrive: said to the person as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotCopied {
    /// The source root went away (moved, unmounted, replaced) before the end.
    #[default]
    SourceGone,
    /// Still open for writing at the source when the wait for writers (`quiet`) ran out.
    StillOpen,
    /// Changed at the source after verification: the marker was withdrawn.
    ChangedLate,
}

/// How a target ended, decided by the engine (docs/design.md, "The end of a run").
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Every file arrived and checked out; the marker (if any) was published last.
    pub verified: bool,
    /// Why the copy is not verified, when that is not a list of files (a vanished root, a stop).
    pub reason: Option<String>,
    /// What verification found (empty when it could not run).
    pub report: Report,
    /// Files known at the source that never reached the destination, when verification could
    /// not run (the source root vanished before the end).
    pub not_copied: Vec<PathBuf>,
    /// Why they were not.
    pub not_copied_why: NotCopied,
    /// The marker was copied to the destination.
    pub marker_published: bool,
    /// `--delete-source`: what the mover did (`None` when it did not run).
    pub freed: Option<MoveReport>,
    /// Files the final reconcile found new, changed or gone with no event having said so: zero
    /// where the copy was live throughout (docs/design.md, "Live, proven live").
    pub found_at_end: u64,
}

/// The state shared between the coordinator thread and the [`crate::run::engine::Engine`] handle.
pub struct Shared {
    pub status: Mutex<Status>,
    pub ended: Condvar,
    messages: Mutex<VecDeque<(Level, String)>>,
    pub stop: Arc<AtomicBool>,
    pub finish: AtomicBool,
    pub roots: Mutex<Option<(PathBuf, PathBuf)>>,
    /// The expected Zarr file set, handed over once by Python when the engine asks for it.
    pub expected: Mutex<Option<Expected>>,
    pub expected_given: Condvar,
    pub verdict: Mutex<Option<Verdict>>,
    /// The workers running at a lowered priority, given it back at a stop.
    pub lowered: Arc<crate::sys::Lowered>,
}

pub use crate::vocab::lock;

impl Default for Shared {
    fn default() -> Self {
        Shared {
            status: Mutex::new(Status::default()),
            ended: Condvar::new(),
            messages: Mutex::new(VecDeque::new()),
            stop: Arc::new(AtomicBool::new(false)),
            finish: AtomicBool::new(false),
            roots: Mutex::new(None),
            expected: Mutex::new(None),
            expected_given: Condvar::new(),
            verdict: Mutex::new(None),
            lowered: Arc::default(),
        }
    }
}

impl Shared {
    pub fn say(&self, level: Level, text: String) {
        let mut q = lock(&self.messages);
        if q.len() >= MAX_MESSAGES {
            q.pop_front();
        }
        q.push_back((level, text));
    }

    /// Takes the messages queued since the last call.
    pub fn take_messages(&self) -> Vec<(Level, String)> {
        lock(&self.messages).drain(..).collect()
    }

    pub fn set_phase(&self, phase: Phase) {
        lock(&self.status).phase = phase;
        if phase.is_final() {
            self.ended.notify_all();
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}
