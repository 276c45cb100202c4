//! The back-off's hold on the workers (docs/design.md, "Gentle on any scheduler"): every read
//! step of a copy takes a turn here, at most `window` at once; while only one read is allowed and
//! its duty is below one, the reader rests after each step, holding its turn, for as long as the
//! step took times (1/duty − 1). A worker waiting or resting sees a stop within [`crate::gentle::rate::SLICE`].
//!
//! Outside `gentle/` because the read loops in `sys` take their turns here: it imports only `rate`
//! and `vocab`, and `gentle/` (which reads its signal through `sys`) sets its allowance.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::gentle::rate::SLICE;
use crate::vocab::lock;

/// How much the copy may take now: `window` reads in flight at once, and while only one is
/// allowed, the share `duty` (0 < duty ≤ 1) of the time that one may spend reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allowance {
    pub window: usize,
    pub duty: f64,
}

/// Longest rest after one step, so a floor duty on a slow step never parks a worker for long.
const REST_MAX: Duration = Duration::from_secs(2);
/// The most bytes one step moves while the gate is on: the window reacts between steps.
pub const STEP: usize = 2 << 20;

#[derive(Debug)]
struct Slots {
    active: usize,
    allowance: Allowance,
}

/// Shared by the workers of one target and its sampler.
#[derive(Debug)]
pub struct Gate {
    slots: Mutex<Slots>,
    freed: Condvar,
    /// Reads in flight allowed (f64 bits), as the controller last said: for the status.
    reads: AtomicU64,
    /// Workers waiting for, holding or resting in a turn.
    users: AtomicUsize,
    /// Turns asked for since the start: the sampler tells a copy held back from one with nothing to do.
    asked: AtomicU64,
    /// Bytes moved since the start: the rate the status shows while yielding.
    moved: AtomicU64,
}

/// One read step's turn: ended by [`Turn::end`] (which rests), or dropped on an error path.
pub struct Turn<'a> {
    gate: &'a Gate,
    began: Instant,
}

impl Gate {
    pub fn new(nprocs: usize) -> Self {
        let allowance = Allowance { window: nprocs.max(1), duty: 1.0 };
        Gate {
            slots: Mutex::new(Slots { active: 0, allowance }),
            freed: Condvar::new(),
            reads: AtomicU64::new((nprocs.max(1) as f64).to_bits()),
            users: AtomicUsize::new(0),
            asked: AtomicU64::new(0),
            moved: AtomicU64::new(0),
        }
    }

    /// What the controller allows from now on; `reads` is its figure, for the status.
    pub fn set(&self, allowance: Allowance, reads: f64) {
        lock(&self.slots).allowance = allowance;
        self.reads.store(reads.to_bits(), Ordering::Relaxed);
        self.freed.notify_all();
    }

    /// Reads in flight allowed now (fractional below one).
    pub fn reads(&self) -> f64 {
        f64::from_bits(self.reads.load(Ordering::Relaxed))
    }

    /// Whether a copy wants to read (a worker in a turn, or one asked for since `asked_before`).
    pub fn in_use(&self, asked_before: u64) -> bool {
        self.users.load(Ordering::Relaxed) > 0 || self.asked() != asked_before
    }

    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Bytes moved since the start (in turns, or from the page cache past the gate).
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes moved.
    pub fn count(&self, n: u64) {
        self.moved.fetch_add(n, Ordering::Relaxed);
    }

    /// Waits for a turn to read; an error once `stop` is set.
    pub fn enter<'a>(&'a self, stop: &AtomicBool) -> io::Result<Turn<'a>> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.users.fetch_add(1, Ordering::Relaxed);
        let mut slots = lock(&self.slots);
        loop {
            if stop.load(Ordering::Relaxed) {
                drop(slots);
                self.users.fetch_sub(1, Ordering::Relaxed);
                return Err(io::Error::other("stopped"));
            }
            if slots.active < slots.allowance.window {
                slots.active += 1;
                return Ok(Turn { gate: self, began: Instant::now() });
            }
            slots = self.freed.wait_timeout(slots, SLICE).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Turn<'_> {
    /// The step moved `n` bytes and is over: rests as the duty says (still holding the turn, so
    /// the share of time spent reading is the duty), then lets the next reader in. An error once
    /// `stop` is set.
    pub fn end(self, n: u64, stop: &AtomicBool) -> io::Result<()> {
        self.gate.count(n);
        let duty = lock(&self.gate.slots).allowance.duty;
        let took = self.began.elapsed();
        crate::gentle::rate::sleep_watching(rest_for(took, duty), stop)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.gate.slots).active -= 1;
        self.gate.users.fetch_sub(1, Ordering::Relaxed);
        self.gate.freed.notify_one();
    }
}

/// How long a reader rests after a step that took `took` at `duty`.
fn rest_for(took: Duration, duty: f64) -> Duration {
    if duty >= 1.0 || duty <= 0.0 || !duty.is_finite() {
        return Duration::ZERO;
    }
    took.mul_f64(1.0 / duty - 1.0).min(REST_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rests() {
        let ms = Duration::from_millis;
        let cases = [(ms(10), 1.0, ms(0)), (ms(10), 0.5, ms(10)), (ms(10), 0.25, ms(30)), (ms(500), 0.01, REST_MAX)];
        for (took, duty, rest) in cases {
            assert_eq!(rest_for(took, duty), rest, "{took:?} at {duty}");
        }
    }

    #[test]
    fn no_more_turns_than_the_window() {
        let gate = Arc::new(Gate::new(4));
        gate.set(Allowance { window: 2, duty: 1.0 }, 2.0);
        let stop = AtomicBool::new(false);
        let a = gate.enter(&stop).unwrap();
        let _b = gate.enter(&stop).unwrap();
        // A third waits until a turn is given back.
        let (g, got) = (gate.clone(), Arc::new(AtomicBool::new(false)));
        let got2 = got.clone();
        let third = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            let t = g.enter(&stop).unwrap();
            got2.store(true, Ordering::SeqCst);
            t.end(0, &stop).unwrap();
        });
        std::thread::sleep(Duration::from_millis(200)); // not a synchronisation: it must NOT have happened
        assert!(!got.load(Ordering::SeqCst), "a third reader entered a window of two");
        assert!(gate.in_use(0));
        a.end(0, &stop).unwrap();
        third.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }

    #[test]
    fn a_worker_held_back_sees_the_stop() {
        let gate = Arc::new(Gate::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let _held = gate.enter(&stop).unwrap();
        let (g, s) = (gate.clone(), stop.clone());
        let waiting = std::thread::spawn(move || g.enter(&s).map(|_| ()));
        stop.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        assert_eq!(waiting.join().unwrap().unwrap_err().to_string(), "stopped");
        assert!(t0.elapsed() < Duration::from_secs(2));
        // And a rest ends at the stop too.
        let resting = Gate::new(1);
        resting.set(Allowance { window: 1, duty: 0.001 }, 0.001);
        let mut turn = resting.enter(&AtomicBool::new(false)).unwrap();
        turn.began -= Duration::from_secs(1);
        assert_eq!(turn.end(0, &stop).unwrap_err().to_string(), "stopped");
    }
}
