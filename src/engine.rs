//! One target's engine: a coordinator thread that owns the watcher, the tracker and the worker
//! pool, and a shared status that the Python side reads without ever running Python in our threads.
//!
//! Life of a target: wait for the source → remove leftover partials → watch → initial scan →
//! copy as files become ready → (marker seen, or one-shot, or `finish()`) → final reconcile scan →
//! drain → `Drained`. Verification and publishing the marker are separate calls made afterwards
//! (see `verify.rs`), because the expected file set comes from Zarr metadata parsed in Python.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::copier::{self, CopyOptions, Done, Pool};
use crate::sys::CopyMethod;
use crate::tracker::Tracker;
use crate::vocab::{Change, Job, Outcome};
use crate::watcher::{self, FsEvent, Watcher};
use crate::{Error, Result};

/// Everything one target needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: PathBuf,
    pub destination: PathBuf,
    /// Copy workers for this target.
    pub nprocs: usize,
    /// Pause in each worker after each file copied.
    pub sleep: Duration,
    /// Wait for a missing source to appear instead of failing.
    pub wait_for_source: bool,
    /// Name of the file at the source root that marks the end of the acquisition.
    pub marker: String,
    /// How long a file written in place must stay closed and quiet before it is copied.
    pub settle: Duration,
    /// How long a new version of an already-copied file waits for further versions.
    pub debounce: Duration,
    /// Copy what is there now and finish, without waiting for the marker.
    pub once: bool,
    pub method: CopyMethod,
    pub low_priority: bool,
    /// Report every filesystem event as a debug message (`--verbose`).
    pub log_events: bool,
    /// How long an unavailable destination (full, gone) is retried before the target gives up.
    pub give_up_after: Duration,
    /// This target's bandwidth budget in bytes per second (`--max-rate`).
    pub max_rate: Option<u64>,
    /// Hash every file while copying and read the copy back (`--checksum`).
    pub checksum: bool,
    /// Where to write the manifest (hash, size, path per file) once drained.
    pub manifest: Option<PathBuf>,
    /// Keep what was copied so `delete_source()` can free the source afterwards.
    pub delete_source: bool,
    /// Where no writer check is possible, how long a file found by a scan must go unwritten before
    /// it is taken as closed.
    pub quiet: Duration,
}

impl Config {
    /// A configuration with the CLI's defaults.
    pub fn new(source: impl Into<PathBuf>, destination: impl Into<PathBuf>) -> Self {
        Config {
            source: source.into(),
            destination: destination.into(),
            nprocs: 8,
            sleep: Duration::ZERO,
            wait_for_source: true,
            marker: "complete".into(),
            settle: Duration::from_millis(50),
            debounce: Duration::from_millis(100),
            once: false,
            method: CopyMethod::Auto,
            low_priority: true,
            log_events: false,
            give_up_after: Duration::from_secs(24 * 3600),
            max_rate: None,
            checksum: false,
            manifest: None,
            delete_source: false,
            quiet: Duration::from_secs(60),
        }
    }
}

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
    /// The acquisition is over: reconcile scan and drain.
    Finishing,
    /// Everything copied; ready for verification.
    Drained,
    /// Stopped on request before the end.
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
            Phase::Finishing => "finishing",
            Phase::Drained => "drained",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }

    /// The coordinator thread has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Drained | Phase::Stopped | Phase::Failed)
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
/// Longest the coordinator sleeps without looking at the stop and finish flags.
const TICK: Duration = Duration::from_millis(100);
/// Shortest interval between the rescans that stand in for missing watches.
const RESCAN_MIN: Duration = Duration::from_secs(2);
/// Interval of the rescans that stand in for undetectable event loss on Windows.
#[cfg(windows)]
const WINDOWS_RESCAN: Duration = Duration::from_secs(30);
/// Retry intervals for an unavailable destination: from the first to the longest.
const PROBE_FIRST: Duration = Duration::from_millis(200);
const PROBE_MAX: Duration = Duration::from_secs(15);
/// At most one message about an unavailable destination per this interval (a day-long outage
/// must not flood the log).
const TROUBLE_MESSAGE_EVERY: Duration = Duration::from_secs(30);

/// An unavailable destination: while it lasts, one job at a time probes it, with backoff.
struct Trouble {
    since: Instant,
    next_probe: Instant,
    backoff: Duration,
    last_said: Option<Instant>,
    error: String,
}

struct Shared {
    status: Mutex<Status>,
    ended: Condvar,
    messages: Mutex<VecDeque<(Level, String)>>,
    stop: Arc<AtomicBool>,
    finish: AtomicBool,
    roots: Mutex<Option<(PathBuf, PathBuf)>>,
    /// With `--delete-source`: what was copied, kept once the engine drained.
    copied: Mutex<Vec<crate::vocab::Copied>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn every later status read into another panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn say(&self, level: Level, text: String) {
        let mut q = lock(&self.messages);
        if q.len() >= MAX_MESSAGES {
            q.pop_front();
        }
        q.push_back((level, text));
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.status).phase = phase;
        if phase.is_final() {
            self.ended.notify_all();
        }
    }
}

/// A running target. Dropping it stops it.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: Config,
}

impl Engine {
    /// Starts the coordinator thread. Errors (a missing source, an unwatchable tree) are reported
    /// through [`Status::fatal`], not here, because they may happen long after the start.
    pub fn start(config: Config) -> Result<Engine> {
        let shared = Arc::new(Shared {
            status: Mutex::new(Status::default()),
            ended: Condvar::new(),
            messages: Mutex::new(VecDeque::new()),
            stop: Arc::new(AtomicBool::new(false)),
            finish: AtomicBool::new(false),
            roots: Mutex::new(None),
            copied: Mutex::new(Vec::new()),
        });
        let (sh, cfg) = (shared.clone(), config.clone());
        let thread = std::thread::Builder::new()
            .name("softcopy-engine".into())
            .spawn(move || {
                let started = Instant::now();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cfg, &sh, started)));
                let fatal = match result {
                    Ok(Ok(phase)) => {
                        sh.set_phase(phase);
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "internal error: the engine thread panicked".to_string(),
                };
                lock(&sh.status).fatal = Some(fatal.clone());
                sh.say(Level::Error, fatal);
                sh.set_phase(Phase::Failed);
            })
            .map_err(|e| Error::Internal(format!("cannot start engine thread: {e}")))?;
        Ok(Engine { shared, thread: Mutex::new(Some(thread)), config })
    }

    /// The configuration this engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A snapshot of the progress.
    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// Takes the messages queued since the last call.
    pub fn messages(&self) -> Vec<(Level, String)> {
        lock(&self.shared.messages).drain(..).collect()
    }

    /// Declares the acquisition over (as if the marker had appeared): reconcile, drain, end.
    pub fn finish(&self) {
        self.shared.finish.store(true, Ordering::Relaxed);
    }

    /// Asks the engine to stop; workers finish the file in hand (its partial is never renamed
    /// into place unless complete).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Blocks until the engine thread has ended or `timeout` passed. Returns whether it ended.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.shared.status);
        let (guard, _) = self
            .shared
            .ended
            .wait_timeout_while(guard, timeout, |s| !s.phase.is_final())
            .unwrap_or_else(|e| e.into_inner());
        let ended = guard.phase.is_final();
        drop(guard);
        if ended {
            if let Some(t) = lock(&self.thread).take() {
                let _ = t.join();
            }
        }
        ended
    }

    /// The canonical source and destination roots, once the source exists.
    pub fn roots(&self) -> Option<(PathBuf, PathBuf)> {
        lock(&self.shared.roots).clone()
    }

    /// Frees the source (`--delete-source`): call after the engine drained and was verified. Every
    /// file is checked on its own (see `mover.rs`); the marker goes last, and only if copied.
    pub fn delete_source(&self) -> Result<crate::mover::MoveReport> {
        let Some((src, dst)) = self.roots() else { return Ok(crate::mover::MoveReport::default()) };
        if !self.status().phase.eq(&Phase::Drained) {
            return Err(Error::Internal("the source is freed only after a complete, drained copy".into()));
        }
        let copied = std::mem::take(&mut *lock(&self.shared.copied));
        let marker_src = src.join(&self.config.marker);
        let marker = match (fs::symlink_metadata(&marker_src), fs::symlink_metadata(dst.join(&self.config.marker))) {
            (Ok(m), Ok(_)) => Some(crate::vocab::Copied {
                rel: PathBuf::from(&self.config.marker),
                ident: crate::vocab::identity(&m),
                hash: None,
            }),
            _ => None,
        };
        crate::mover::delete_sources(&src, &dst, &copied, marker.as_ref(), self.config.checksum)
            .map_err(|e| Error::io("delete source files", &src, e))
    }

    /// Copies the marker file last, after verification, so its presence at the destination means
    /// the copy is whole. Returns false when the source has no marker (a one-shot copy).
    pub fn publish_marker(&self) -> Result<bool> {
        let Some((src, dst)) = self.roots() else {
            return Ok(false);
        };
        let rel = PathBuf::from(&self.config.marker);
        if !src.join(&rel).is_file() {
            return Ok(false);
        }
        let opts = CopyOptions { method: self.config.method, ..CopyOptions::default() };
        match copier::sync_file(
            &src,
            &dst,
            &Job { rel, prev: None, verify_closed: false },
            &opts,
            &AtomicBool::new(false),
        )
        .0
        {
            Outcome::Failed(msg) | Outcome::Unavailable(msg) => Err(Error::Internal(msg)),
            _ => Ok(true),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
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
        if sh.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Run<'a> {
    cfg: &'a Config,
    sh: &'a Shared,
    src: PathBuf,
    tracker: Tracker,
    finishing: bool,
    status: Status,
    started: Instant,
    dst: PathBuf,
    trouble: Option<Trouble>,
    /// When to rescan the source next (after lost events, or periodically once watches are missing).
    rescan_at: Option<Instant>,
    last_rescan: Option<Instant>,
    /// Rescans are periodic, at this interval: the inotify watch limit was hit (some folders have
    /// no watch), or the platform cannot report lost events.
    periodic: Option<Duration>,
    overflows: u64,
    overflow_said: Option<Instant>,
    /// When the files open for writing were last counted for the status.
    counted_writing: Option<Instant>,
}

impl Run<'_> {
    fn is_marker(&self, rel: &Path) -> bool {
        rel.as_os_str() == self.cfg.marker.as_str()
    }

    fn file_event(&mut self, rel: PathBuf, change: Change, now: Instant) {
        if self.is_marker(&rel) {
            if matches!(change, Change::Replaced | Change::Found | Change::Created | Change::ClosedWrite)
                && !self.finishing
            {
                self.sh.say(Level::Info, format!("{} appeared: the acquisition is complete", self.cfg.marker));
                self.finishing = true;
            }
            return;
        }
        self.tracker.event(&rel, change, now);
    }

    fn scan(&mut self, start: &Path, change: Change) {
        let now = Instant::now();
        // Each file goes to the tracker as it is found: collecting them first would hold every
        // path of a million-file archive twice at once.
        let src = self.src.clone();
        if let Err(e) = watcher::scan(&src, start, false, |rel, _| self.file_event(rel, change, now)) {
            self.sh.say(Level::Warning, format!("scan of {}: {e}", src.join(start).display()));
        }
    }

    /// A full scan comparing identities: re-queues what changed unseen and mirrors what vanished
    /// unseen. Used after lost events and once more before the end (invariant 3).
    fn reconcile(&mut self) {
        let now = Instant::now();
        self.tracker.begin_sweep();
        let src = self.src.clone();
        let scanned = watcher::scan(&src, Path::new(""), true, |rel, ident| {
            if self.is_marker(&rel) {
                self.finishing = true;
            } else {
                self.tracker.scanned(&rel, ident.expect("scan with identity"), now);
            }
        });
        if let Err(e) = scanned {
            self.sh.say(Level::Warning, format!("reconcile scan of {}: {e}", src.display()));
        }
        self.tracker.end_sweep(now);
    }

    fn handle(&mut self, ev: FsEvent, watcher: &mut Watcher) {
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
                self.scan(&rel, Change::Found);
            }
            FsEvent::Gone(rel) if rel.as_os_str().is_empty() => {
                // The root itself went away. If a writer is recreating it (`overwrite=True`), the
                // reconcile when it returns mirrors whatever it no longer has. If it was moved or
                // unmounted, the copy must not be wiped: nothing is deleted until it is back.
                self.sh.say(
                    Level::Warning,
                    format!("{} disappeared; waiting for it to return (the copy is kept)", self.src.display()),
                );
            }
            FsEvent::Gone(rel) => {
                self.tracker.removed_tree(&rel, now);
                // The directory itself too: its worker removes it at the destination once empty.
                self.tracker.event(&rel, Change::Removed, now);
            }
            FsEvent::RootCreated => {
                // Its old watches died with the old folder; the reconcile below lists its files.
                match watcher.watch_tree(&self.src, |_| {}) {
                    Ok(Some(limit)) => self.watch_limited(limit.to_string()),
                    Ok(None) => {}
                    Err(e) => self.sh.say(Level::Warning, e.to_string()),
                }
                self.sh.say(Level::Info, format!("{} is back; watching it again", self.src.display()));
                self.reconcile();
            }
            FsEvent::Rescan => self.events_lost(now),
            FsEvent::Error(msg) => self.sh.say(Level::Warning, msg),
            FsEvent::WatchLimit(msg) => self.watch_limited(msg),
        }
    }

    /// How many jobs may be handed out now: all free workers normally; while the destination is
    /// unavailable, one probe at a time when its backoff has passed.
    fn dispatch_budget(&self, nprocs: usize, now: Instant) -> usize {
        let free = nprocs.saturating_sub(self.tracker.in_flight());
        match &self.trouble {
            None => free,
            Some(t) if now >= t.next_probe && self.tracker.in_flight() == 0 => 1,
            Some(_) => 0,
        }
    }

    fn destination_failed(&mut self, error: &str) {
        let now = Instant::now();
        let t = self.trouble.get_or_insert(Trouble {
            since: now,
            next_probe: now,
            backoff: PROBE_FIRST / 2,
            last_said: None,
            error: String::new(),
        });
        t.backoff = (t.backoff * 2).min(PROBE_MAX);
        t.next_probe = now + t.backoff;
        t.error = error.to_owned();
        if t.last_said.is_none_or(|said| now - said >= TROUBLE_MESSAGE_EVERY) {
            t.last_said = Some(now);
            let space = crate::sys::free_space(&self.dst).map_or_else(String::new, |s| {
                let bytes = format!("; {} free of {}", human(s.free_bytes), human(s.total_bytes));
                // Out of inodes is out of space too, with bytes to spare: say which it is.
                if s.total_files > 0 && s.free_files == 0 {
                    format!("{bytes}, but no free inodes (all {} used)", s.total_files)
                } else {
                    bytes
                }
            });
            let waited = (now - t.since).as_secs();
            self.sh.say(
                Level::Warning,
                format!(
                    "destination {} cannot take files ({error}){space}; retrying every {} s (for {waited} s so far, \
                     giving up after {} s)",
                    self.dst.display(),
                    t.backoff.as_secs().max(1),
                    self.cfg.give_up_after.as_secs()
                ),
            );
        }
    }

    fn destination_ok(&mut self) {
        if let Some(t) = self.trouble.take() {
            self.sh.say(
                Level::Info,
                format!(
                    "destination {} is back after {} s; copying on",
                    self.dst.display(),
                    t.since.elapsed().as_secs()
                ),
            );
        }
    }

    /// Some folders cannot be watched: say so once, then rescan the whole source periodically so
    /// that nothing in them is missed (invariant 3), only found later.
    fn watch_limited(&mut self, msg: String) {
        if self.periodic != Some(RESCAN_MIN) {
            self.periodic = Some(RESCAN_MIN);
            self.sh.say(Level::Warning, msg);
            self.rescan_at = Some(Instant::now() + RESCAN_MIN);
        }
    }

    /// The kernel's event queue overflowed: rescan, but once per burst, not once per overflow. A
    /// rescan's own reads make events too, so rescanning at every overflow could feed itself.
    fn events_lost(&mut self, now: Instant) {
        self.overflows += 1;
        if self.overflow_said.is_none_or(|t| now - t >= TROUBLE_MESSAGE_EVERY) {
            self.overflow_said = Some(now);
            self.sh.say(
                Level::Warning,
                format!(
                    "filesystem events were lost ({} queue overflows so far; fs.inotify.max_queued_events may be \
                     too small); rescanning the source",
                    self.overflows
                ),
            );
        }
        let earliest = self.last_rescan.map_or(now, |t| t + RESCAN_MIN);
        let due = earliest.max(now);
        self.rescan_at = Some(self.rescan_at.map_or(due, |t| t.min(due)));
    }

    /// Runs a due rescan (after lost events, or periodically while watches are missing). Its
    /// interval grows with the time a scan takes, so it never keeps the disk busy more than a
    /// tenth of the time.
    fn rescan_if_due(&mut self, now: Instant) {
        if self.rescan_at.is_some_and(|t| now >= t) {
            let t0 = Instant::now();
            self.reconcile();
            self.last_rescan = Some(Instant::now());
            self.rescan_at = self.periodic.map(|every| Instant::now() + every.max(t0.elapsed() * 10));
        }
    }

    fn gave_up(&self) -> bool {
        self.trouble.as_ref().is_some_and(|t| t.since.elapsed() > self.cfg.give_up_after)
    }

    fn done(&mut self, d: Done) {
        match &d.outcome {
            Outcome::Unavailable(msg) => {
                let msg = msg.clone();
                self.destination_failed(&msg);
            }
            // Only a file written proves the destination takes files again (an unchanged or deleted
            // file may need no write at all).
            Outcome::Copied { .. } => self.destination_ok(),
            _ => {}
        }
        let s = &mut self.status;
        match &d.outcome {
            Outcome::Copied { bytes, .. } => {
                s.files_copied += 1;
                s.bytes_copied += bytes;
            }
            Outcome::Unchanged(_) => s.files_unchanged += 1,
            Outcome::Deleted => s.files_deleted += 1,
            Outcome::Failed(msg) => {
                if self.sh.stop.load(Ordering::Relaxed) {
                    return;
                }
                s.errors += 1;
                self.sh.say(Level::Warning, msg.clone());
            }
            Outcome::Changed | Outcome::Skipped | Outcome::Busy | Outcome::Unsettled(_) | Outcome::Unavailable(_) => {}
        }
        self.tracker.finish(&d.rel, d.outcome, Instant::now());
    }

    fn publish(&mut self, phase: Phase) {
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
        if self.counted_writing.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) || phase.is_final() {
            s.writing = self.tracker.writing() as u64;
            self.counted_writing = Some(Instant::now());
        }
        s.oldest_wait = self.tracker.oldest_wait(Instant::now()).as_secs_f64();
        s.known = self.tracker.known() as u64;
        s.last_error = self.tracker.last_error().map(str::to_owned);
        s.elapsed = self.started.elapsed().as_secs_f64();
        s.finishing = self.finishing;
        s.destination_trouble = self.trouble.as_ref().map(|t| t.error.clone());
        *lock(&self.sh.status) = s.clone();
    }
}

/// Writes the manifest of everything copied: hashes from the copies themselves, and for files
/// copied by an earlier run, hashes of the destination files.
fn write_manifest(run: &Run<'_>, path: &Path) -> Result<()> {
    let mut entries = Vec::new();
    for (rel, size, hash) in run.tracker.copied_files() {
        let hash = match hash {
            Some(h) => h,
            None => {
                let file = run.dst.join(rel);
                crate::manifest::hash_file(&file).map_err(|e| Error::io("hash", &file, e))?
            }
        };
        entries.push((rel.to_path_buf(), size, hash));
    }
    crate::manifest::write(path, &mut entries).map_err(|e| Error::io("write manifest", path, e))
}

/// Bytes in the binary units people read on a status line.
fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn run(cfg: &Config, sh: &Shared, started: Instant) -> Result<Phase> {
    let Some(src) = wait_for_source(cfg, sh)? else {
        return Ok(Phase::Stopped);
    };
    fs::create_dir_all(&cfg.destination).map_err(|e| Error::io("create destination", &cfg.destination, e))?;
    let dst = fs::canonicalize(&cfg.destination).map_err(|e| Error::io("resolve", &cfg.destination, e))?;
    if dst.starts_with(&src) || src.starts_with(&dst) {
        return Err(Error::Internal(format!(
            "source {} and destination {} must not contain each other",
            src.display(),
            dst.display()
        )));
    }
    *lock(&sh.roots) = Some((src.clone(), dst.clone()));
    let (removed, had_files) = copier::remove_partials(&dst);
    if removed > 0 {
        sh.say(Level::Info, format!("removed {removed} partial files left by an earlier run"));
    }

    // Invariant 3: the watch exists before the initial scan starts.
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let (mut watcher, limited) = Watcher::new(&src, ev_tx)?;
    sh.set_phase(Phase::Scanning);
    let mut run = Run {
        cfg,
        sh,
        src: src.clone(),
        tracker: Tracker::new(cfg.settle, cfg.debounce),
        finishing: cfg.once,
        status: Status::default(),
        started,
        dst: dst.clone(),
        trouble: None,
        rescan_at: None,
        last_rescan: None,
        periodic: None,
        overflows: 0,
        overflow_said: None,
        counted_writing: None,
    };
    if let Some(e) = limited {
        run.watch_limited(e.to_string());
    }
    #[cfg(windows)]
    {
        // ReadDirectoryChangesW reports an overflowed buffer only as an empty result, which notify
        // does not pass on (its handle_event ignores the byte count): lost events cannot be seen
        // on Windows, so a periodic rescan stands in for the overflow rescan.
        run.periodic = Some(WINDOWS_RESCAN);
        run.rescan_at = Some(Instant::now() + WINDOWS_RESCAN);
    }
    // Invariant 3: each folder's watch is in place before the folder is listed (watch_tree).
    let now = Instant::now();
    if let Some(limit) = watcher.watch_tree(&src, |rel| run.file_event(rel, Change::Found, now))? {
        run.watch_limited(limit.to_string());
    }
    sh.say(Level::Info, format!("watching {} (initial scan: {} files to check)", src.display(), run.tracker.backlog()));

    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let (warn_tx, warn_rx) = crossbeam_channel::unbounded();
    let opts = CopyOptions {
        method: cfg.method,
        sleep: cfg.sleep,
        low_priority: cfg.low_priority,
        max_rate: cfg.max_rate.map(|b| Arc::new(crate::rate::RateLimit::new(b))),
        max_total_rate: crate::rate::total(),
        checksum: cfg.checksum,
        fresh_destination: !had_files,
        learned: Arc::default(),
        quiet: cfg.quiet,
    };
    let nprocs = cfg.nprocs.max(1);
    let pool = Pool::start(nprocs, src.clone(), dst, opts, done_tx, sh.stop.clone(), warn_tx)
        .map_err(|e| Error::Internal(format!("cannot start workers: {e}")))?;

    let mut reconciled = false;
    let end = loop {
        if sh.stop.load(Ordering::Relaxed) {
            break Phase::Stopped;
        }
        if sh.finish.load(Ordering::Relaxed) {
            run.finishing = true;
        }
        let now = Instant::now();
        run.rescan_if_due(now);
        if run.gave_up() {
            let waited = run.cfg.give_up_after.as_secs();
            sh.say(Level::Error, format!("destination {} unavailable for {waited} s: giving up", run.dst.display()));
            run.status.gave_up = true;
            break Phase::Drained;
        }
        for _ in 0..run.dispatch_budget(nprocs, now) {
            match run.tracker.next_job(now) {
                Some(job) => pool.submit(job),
                None => break,
            }
        }
        let phase = if run.finishing { Phase::Finishing } else { Phase::Copying };
        run.publish(phase);
        if run.finishing && run.tracker.is_idle() {
            if !reconciled {
                run.reconcile();
                reconciled = true;
                continue;
            }
            break Phase::Drained;
        }
        let wake = [run.tracker.next_deadline(), run.trouble.as_ref().map(|t| t.next_probe), run.rescan_at];
        let wait = wake.into_iter().flatten().min().map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
        select! {
            recv(ev_rx) -> ev => {
                let Ok(first) = ev else { break Phase::Failed };
                handle_batch(&mut run, &src, first, &ev_rx, &mut watcher);
            }
            recv(done_rx) -> d => {
                if let Ok(d) = d {
                    run.done(d);
                    for d in done_rx.try_iter() {
                        run.done(d);
                    }
                }
            }
            recv(warn_rx) -> w => {
                if let Ok(w) = w {
                    sh.say(Level::Warning, format!("cannot lower copy priority ({w}); consider --max-rate"));
                }
            }
            default(wait) => {}
        }
    };
    drop(watcher);
    pool.shutdown();
    for d in done_rx.try_iter() {
        run.done(d);
    }
    if end == Phase::Drained && cfg.delete_source {
        *lock(&sh.copied) = run.tracker.copied_versions();
    }
    if let (Phase::Drained, Some(path)) = (end, &cfg.manifest) {
        write_manifest(&run, path)?;
        sh.say(Level::Info, format!("manifest written to {}", path.display()));
    }
    if end == Phase::Drained {
        // A copy that failed while the destination was unreachable may have left its partial
        // behind (removing it failed too). No worker runs now, so every partial left is an orphan.
        let (removed, _) = copier::remove_partials(&run.dst);
        if removed > 0 {
            sh.say(Level::Info, format!("removed {removed} partial files left by failed attempts"));
        }
    }
    run.publish(end);
    if end == Phase::Failed {
        return Err(Error::Internal("the filesystem watcher stopped unexpectedly".into()));
    }
    Ok(end)
}

/// Handles one event and everything already queued behind it, so a burst is processed before the
/// next dispatch round (this is where repeated triggers of one key collapse into one job).
fn handle_batch(
    run: &mut Run<'_>,
    src: &Path,
    first: notify::Result<notify::Event>,
    rx: &Receiver<notify::Result<notify::Event>>,
    watcher: &mut Watcher,
) {
    let mut evs = Vec::new();
    watcher::translate(src, first, &mut evs);
    for raw in rx.try_iter().take(4096) {
        watcher::translate(src, raw, &mut evs);
    }
    for ev in evs {
        run.handle(ev, watcher);
    }
}
