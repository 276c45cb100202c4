//! The back-off's thread: every [`INTERVAL`] it reads the source device's write counters, turns
//! the difference into a [`Signal`], asks the controller, and sets the gate. About ten reads of a
//! sysfs file a second, a few microseconds each: nothing measurable while idle.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::controller::{Controller, Signal};
use super::{BackOff, BackOffState};
use crate::gentle::gate::Gate;
use crate::sys::{DeviceWrites, WriteCounter};
use crate::vocab::lock;

/// How often the device is looked at: a disk's latency moves within a tenth of a second, and a
/// writer's stall must be answered before it costs a frame.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Weight of the newest interval in the rate shown (about a third of a second's average).
const RATE_SMOOTHING: f64 = 0.3;

/// Runs until dropped.
pub struct Sampler {
    quit: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    view: Arc<Mutex<BackOff>>,
}

impl Sampler {
    pub fn start(counter: WriteCounter, gate: Arc<Gate>, nprocs: usize) -> std::io::Result<Sampler> {
        let (quit, quit_rx) = crossbeam_channel::bounded::<()>(0);
        let mut controller = Controller::new(nprocs);
        gate.set(controller.allowance(), controller.reads());
        let view = Arc::new(Mutex::new(BackOff {
            state: BackOffState::Free,
            reads: controller.reads(),
            nprocs: nprocs as u64,
            held_back: 0.0,
            rate: 0.0,
            signal: format!("others' write latency on {}", counter.name),
        }));
        let shown = view.clone();
        let thread = std::thread::Builder::new().name("softcopy-backoff".into()).spawn(move || {
            let mut last = counter.read().ok();
            let (mut asked, mut ticked, mut moved) = (gate.asked(), Instant::now(), gate.moved());
            // Ends when the sender is dropped (a disconnect), never by timing out.
            while let Err(RecvTimeoutError::Timeout) = quit_rx.recv_timeout(INTERVAL) {
                let now = Instant::now();
                let read = counter.read().ok();
                let signal = last.zip(read).map_or(Signal::Quiet, |(a, b)| between(a, b));
                last = read;
                controller.sample(signal, now);
                gate.set(controller.allowance(), controller.reads());
                let busy = gate.in_use(asked);
                asked = gate.asked();
                let now_moved = gate.moved();
                let per_s = (now_moved - moved) as f64 / now.saturating_duration_since(ticked).as_secs_f64().max(1e-3);
                moved = now_moved;
                let mut v = lock(&shown);
                v.rate += RATE_SMOOTHING * (per_s - v.rate);
                v.reads = controller.reads();
                v.state = if controller.yielding() && busy { BackOffState::Yielding } else { BackOffState::Free };
                if v.state == BackOffState::Yielding {
                    v.held_back += now.saturating_duration_since(ticked).as_secs_f64();
                }
                ticked = now;
            }
        })?;
        Ok(Sampler { quit: Some(quit), thread: Some(thread), view })
    }

    pub fn view(&self) -> BackOff {
        lock(&self.view).clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.quit = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The signal of one interval, from the counters at its start and end (a counter that went
/// back, as on a device re-attached, is a quiet interval).
fn between(a: DeviceWrites, b: DeviceWrites) -> Signal {
    match (b.requests.checked_sub(a.requests), b.ms.checked_sub(a.ms)) {
        (Some(requests), Some(ms)) if requests > 0 => Signal::Delay { mean_ms: ms as f64 / requests as f64, requests },
        _ => Signal::Quiet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_from_counters() {
        let w = |requests, ms| DeviceWrites { requests, ms };
        let cases = [
            (w(10, 20), w(10, 20), Signal::Quiet),
            (w(10, 20), w(110, 320), Signal::Delay { mean_ms: 3.0, requests: 100 }),
            (w(10, 20), w(5, 10), Signal::Quiet),
        ];
        for (a, b, expect) in cases {
            assert_eq!(between(a, b), expect, "{a:?} -> {b:?}");
        }
    }
}
