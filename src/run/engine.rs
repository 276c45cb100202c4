//! One target's engine: a coordinator thread that owns the watcher, the tracker and the worker
//! pool (`coordinator/`), and a shared status that the Python side reads without ever running
//! Python in our threads (`status.rs`).
//!
//! Life of a target (docs/design.md, "Data flow"): wait for the source → remove leftover partials
//! → watch → initial scan → copy as files become ready → (marker seen, one-shot, or `finish()`)
//! → Reconciling (final scan, drain) → Verifying → Publishing → Freeing (`finish/`) → Verified
//! or Incomplete. Python hands over the expected Zarr file set once, when asked, and reads the
//! [`Verdict`] at the end.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::end::verify::Expected;
use crate::run::config::Config;
use crate::run::status::{lock, Level, Phase, Shared, Status, Verdict};
use crate::{Error, Result};

/// Longest a stop waits for the engine's thread before the target is let go (docs/design.md,
/// "Stopping"): its workers run at nice 19, and on a busy machine a thread at nice 19 waits
/// seconds for each time slice, holding whatever lock it took (a channel's, the allocator's)
/// meanwhile. "Stopped within 2 s" cannot wait on them.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// A running target. Dropping it stops it.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: Config,
    /// When the stop was asked for.
    stop_asked: Mutex<Option<Instant>>,
    /// Stopped without its thread, which ends on its own (still holding the destination's claim
    /// until it does, so no other run writes there meanwhile).
    let_go: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Starts the coordinator thread. Errors (a missing source, an unwatchable tree) are reported
    /// through [`Status::fatal`], not here, because they may happen long after the start.
    pub fn start(config: Config) -> Result<Engine> {
        crate::failpoint::configure();
        let shared = Arc::new(Shared::default());
        let (sh, cfg) = (shared.clone(), config.clone());
        let thread = std::thread::Builder::new()
            .name("softcopy-engine".into())
            .spawn(move || {
                let started = Instant::now();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    crate::run::coordinator::run(&cfg, &sh, started)
                }));
                let fatal = match result {
                    Ok(Ok((phase, verdict))) => {
                        *lock(&sh.verdict) = Some(verdict);
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
        Ok(Engine {
            shared,
            thread: Mutex::new(Some(thread)),
            config,
            stop_asked: Mutex::new(None),
            let_go: Default::default(),
        })
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
        self.shared.take_messages()
    }

    /// Declares the acquisition over (as if the marker had appeared): reconcile, drain, end.
    pub fn finish(&self) {
        self.shared.finish.store(true, Ordering::Relaxed);
    }

    /// Asks the engine to stop; workers finish the file in hand (its partial is never renamed
    /// into place unless complete), and the end steps that have not run yet never run.
    /// A stop ends the target within [`STOP_GRACE`]: see [`Engine::wait`].
    pub fn stop(&self) {
        // SeqCst: a worker lowering its priority now sees the stop, or is restored below.
        self.shared.stop.store(true, Ordering::SeqCst);
        lock(&self.stop_asked).get_or_insert_with(Instant::now);
        self.shared.lowered.restore();
        self.shared.expected_given.notify_all();
    }

    /// Hands over the expected Zarr file set (from the final metadata), once the status says
    /// `wants_expected`. Verification, publishing and freeing then run in the engine.
    pub fn expect(&self, expected: Expected) {
        *lock(&self.shared.expected) = Some(expected);
        self.shared.expected_given.notify_all();
    }

    /// How the target ended; `None` until it has (and after a fatal error).
    pub fn verdict(&self) -> Option<Verdict> {
        lock(&self.shared.verdict).clone()
    }

    /// Blocks until the engine thread has ended or `timeout` passed. Returns whether it ended.
    /// A target asked to stop [`STOP_GRACE`] ago ends here, [`Phase::Stopped`], whether or not
    /// its thread has: nothing it does after a stop needs waiting for (a partial stays a partial,
    /// a marker is withdrawn or never published, and a crash at any instant is safe).
    pub fn wait(&self, timeout: Duration) -> bool {
        let overdue = || lock(&self.stop_asked).map(|at| at + STOP_GRACE);
        let until = Instant::now().checked_add(timeout);
        let guard = lock(&self.shared.status);
        let stop_by = overdue().map_or(timeout, |at| timeout.min(at.saturating_duration_since(Instant::now())));
        let (guard, _) = self
            .shared
            .ended
            .wait_timeout_while(guard, stop_by, |s| !s.phase.is_final())
            .unwrap_or_else(|e| e.into_inner());
        let ended = guard.phase.is_final();
        drop(guard);
        if ended {
            if !self.let_go.load(Ordering::Relaxed) {
                if let Some(t) = lock(&self.thread).take() {
                    let _ = t.join();
                }
            }
            return true;
        }
        let now = Instant::now();
        if overdue().is_some_and(|at| at <= now) {
            self.let_go.store(true, Ordering::Relaxed);
            self.shared.say(Level::Warning, "stopped before its last copies returned: they end on their own".into());
            self.shared.set_phase(Phase::Stopped);
            return true;
        }
        // Woken early for a stop's grace that has not run out after all: wait on.
        until.is_some_and(|u| u > now) && self.wait(until.map_or(Duration::ZERO, |u| u - now))
    }

    /// The canonical source and destination roots, once the source exists.
    pub fn roots(&self) -> Option<(PathBuf, PathBuf)> {
        lock(&self.shared.roots).clone()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        // Ended, or let go after the grace: then its thread is left to end on its own.
        self.wait(Duration::MAX);
    }
}
