//! The pace of one copy (docs/design.md, "Gentle on any scheduler"): a stop request, any number of
//! rate limits and the back-off's gate, obeyed between the steps of `sys`'s copy loops.

use std::io;
use std::sync::atomic::AtomicBool;

use crate::gentle::gate::{Gate, Turn, STEP};
use crate::gentle::rate::RateLimit;
use crate::sys::Pacing;

/// What one copy obeys between its steps.
pub struct Pace<'a> {
    stop: &'a AtomicBool,
    limits: Vec<&'a RateLimit>,
    gate: Option<&'a Gate>,
}

impl<'a> Pace<'a> {
    /// No limit; only the stop request.
    pub fn new(stop: &'a AtomicBool) -> Self {
        Pace { stop, limits: Vec::new(), gate: None }
    }

    /// Adds a rate limit to obey.
    pub fn limit(mut self, limit: Option<&'a RateLimit>) -> Self {
        self.limits.extend(limit);
        self
    }

    /// Adds the back-off's gate: each step takes a turn there (docs/design.md, "Gentle on any scheduler").
    pub fn gate(mut self, gate: Option<&'a Gate>) -> Self {
        self.gate = gate;
        self
    }
}

impl<'a> Pacing for Pace<'a> {
    type Turn = Option<Turn<'a>>;

    /// At most the gate's step when there is one, and each rate limit's.
    fn step(&self, max: usize) -> usize {
        let max = if self.gate.is_some() { max.min(STEP) } else { max };
        self.limits.iter().map(|l| l.step()).fold(max, usize::min)
    }

    fn check(&self) -> io::Result<()> {
        self.stop.check()
    }

    /// No turn without a gate, nor for a step that reads nothing from the disk.
    fn turn_unless(&self, cached: impl FnOnce() -> bool) -> io::Result<Self::Turn> {
        match self.gate {
            Some(g) if !cached() => g.enter(self.stop).map(Some),
            _ => Ok(None),
        }
    }

    /// The turn's rest, then the rate limits.
    fn moved(&self, n: u64, turn: Self::Turn) -> io::Result<()> {
        match (turn, self.gate) {
            (Some(t), _) => t.end(n, self.stop)?,
            // A step from the page cache: not held, but part of the rate shown.
            (None, Some(g)) => g.count(n),
            (None, None) => {}
        }
        self.limits.iter().try_for_each(|l| l.take(n, self.stop))
    }
}
