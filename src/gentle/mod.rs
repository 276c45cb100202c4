//! The adaptive back-off (docs/design.md, "Gentle on any scheduler"): softcopy yields the source
//! disk to the acquisition whatever the IO scheduler. This folder owns the whole of it:
//! - `controller.rs`: the decision, pure (a contention signal in, reads in flight allowed out);
//! - `crate::gentle::gate`: the workers' read steps held to that allowance, seeing a stop while held (a
//!   module of its own: the read loops in `sys` take their turns there);
//! - `sampler.rs`: the thread that reads the signal through `sys` and drives the other two.
//!
//! The signal is the latency of *others'* requests on the source device: softcopy only reads
//! there, so the device's write requests are the acquisition's. On Linux it is read from
//! `/sys/dev/block/MAJ:MIN/stat`; where there is none (Windows, a network or btrfs source, a
//! destination on the same device) the back-off is off and says why in the status.

pub mod controller;
pub mod gate;
pub mod pace;
pub mod rate;
pub mod sampler;

use std::path::Path;
use std::sync::Arc;

/// Whether the back-off holds the copy back now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackOffState {
    /// Not running: turned off, or no signal to steer by (`BackOff::signal` says which).
    #[default]
    Off,
    /// Running, and not backed off for others (the copy may take all its workers, is starting
    /// slowly, or has nothing to copy).
    Free,
    /// Running, and backed off for others' writes while the copy has something to copy.
    Yielding,
}

/// The back-off as the status shows it.
#[derive(Clone, Debug, Default)]
pub struct BackOff {
    pub state: BackOffState,
    /// Reads in flight allowed now; below one, the share of one worker's time.
    pub reads: f64,
    /// The most reads in flight (`nprocs`).
    pub nprocs: u64,
    /// Seconds the copy was held back while it had something to copy, since the start.
    pub held_back: f64,
    /// Bytes per second the copy moved over the last second or so.
    pub rate: f64,
    /// What the back-off steers by, or why it is off.
    pub signal: String,
}

/// One target's back-off: running (a gate and its sampler), or off and why.
pub enum Gentle {
    Running { gate: Arc<gate::Gate>, sampler: sampler::Sampler },
    Off(BackOff),
}

impl Gentle {
    /// Starts the back-off for a copy of `nprocs` workers from `source` to `destination`, unless
    /// `enabled` is false or there is no signal to steer by.
    pub fn start(enabled: bool, nprocs: usize, source: &Path, destination: &Path) -> Gentle {
        let off = |why: String| {
            let (reads, nprocs) = (nprocs as f64, nprocs as u64);
            Gentle::Off(BackOff { state: BackOffState::Off, reads, nprocs, held_back: 0.0, rate: 0.0, signal: why })
        };
        if !enabled {
            return off("off (--no-back-off)".into());
        }
        let counter = match crate::sys::device_writes(source, destination) {
            Ok(c) => c,
            Err(why) => return off(format!("off: {why}")),
        };
        let gate = Arc::new(gate::Gate::new(nprocs));
        match sampler::Sampler::start(counter, gate.clone(), nprocs) {
            Ok(sampler) => Gentle::Running { gate, sampler },
            Err(e) => off(format!("off: cannot start its thread: {e}")),
        }
    }

    /// The gate the workers' reads pass, while running.
    pub fn gate(&self) -> Option<Arc<gate::Gate>> {
        match self {
            Gentle::Running { gate, .. } => Some(gate.clone()),
            Gentle::Off(_) => None,
        }
    }

    /// What the status shows.
    pub fn view(&self) -> BackOff {
        match self {
            Gentle::Running { sampler, .. } => sampler.view(),
            Gentle::Off(b) => b.clone(),
        }
    }
}
