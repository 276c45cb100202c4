//! The back-off's decision, and nothing else: from one contention sample per interval to how many
//! reads may be in flight (docs/design.md, "Gentle on any scheduler"). Pure: no clock of its own
//! (each sample brings its instant), no I/O, so every case is a table test.
//!
//! LEDBAT-like (RFC 6817): the signal is a delay (the mean latency of the acquisition's own
//! requests on the source device), compared with its base (the lowest seen lately, kept per
//! bucket so the base follows a disk whose speed drifts). Above base + target, the allowance is
//! halved (fast back-off); below, it grows by a step proportional to how far below (creep);
//! with nobody else on the device it grows by a whole worker per sample (recovery in a second).

pub use crate::gentle::gate::Allowance;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the device said about everybody else over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// Nobody else used the device (fewer than [`MIN_REQUESTS`] of their requests): nothing to yield to.
    Quiet,
    /// Others' requests completed with this mean latency, in milliseconds.
    Delay { mean_ms: f64, requests: u64 },
}

/// Fewer of others' requests than this in one interval are not a delay worth steering by (a
/// journal commit, an atime update): the interval counts as quiet.
pub const MIN_REQUESTS: u64 = 4;
/// The lowest allowance: a thirty-second of one worker's time, so a copy always drains
/// (docs/design.md, "Gentle on any scheduler": the backlog must shrink under a steady writer).
pub const FLOOR: f64 = 1.0 / 32.0;
/// The delay others may suffer above their base, as a share of the base (LEDBAT's TARGET, relative
/// because a disk's base delay ranges from 0.1 ms to 20 ms).
const TARGET: f64 = 0.25;
/// Growth per interval while others use the device and their delay is at base (LEDBAT's GAIN).
const GAIN: f64 = 0.1;
/// Growth per interval while nobody else uses the device.
const QUIET_GAIN: f64 = 1.0;
/// Weight of the newest sample in the smoothed delay (one interval is noisy: ±15 % measured).
const SMOOTHING: f64 = 0.4;
/// The base is the lowest smoothed delay of the buckets (of `BUCKET` each) begun in the last
/// `BUCKETS` × `BUCKET`.
const BUCKET: Duration = Duration::from_secs(10);
const BUCKETS: usize = 6;

/// The controller of one target's copy.
#[derive(Debug)]
pub struct Controller {
    cap: f64,
    allowance: f64,
    smoothed: Option<f64>,
    /// (bucket start, lowest smoothed delay in it), oldest first.
    base: VecDeque<(Instant, f64)>,
    /// Backed off for others since last free (the slow start is not yielding to anyone).
    yielding: bool,
}

impl Controller {
    /// A copy of at most `nprocs` reads in flight. It starts at one read, as TCP's slow start
    /// does: the base must be learned while the copy barely loads the disk, or the delay its own
    /// reads cause would be taken for the base. With nobody else on the device it is free within
    /// `nprocs` intervals.
    pub fn new(nprocs: usize) -> Self {
        let cap = nprocs.max(1) as f64;
        Controller { cap, allowance: 1.0, smoothed: None, base: VecDeque::new(), yielding: false }
    }

    /// Takes the signal of the interval ending at `now`; says what the copy may take next.
    pub fn sample(&mut self, signal: Signal, now: Instant) -> Allowance {
        let delay = match signal {
            Signal::Delay { mean_ms, requests } if requests >= MIN_REQUESTS && mean_ms.is_finite() => mean_ms,
            _ => {
                self.smoothed = None;
                return self.grow(QUIET_GAIN);
            }
        };
        let smoothed = self.smoothed.map_or(delay, |s| s + SMOOTHING * (delay - s));
        self.smoothed = Some(smoothed);
        let base = self.remember(smoothed, now);
        let target = TARGET * base;
        let queuing = smoothed - base;
        if queuing > target {
            self.allowance = (self.allowance / 2.0).max(FLOOR);
            self.yielding = true;
            self.allowance()
        } else {
            // LEDBAT's off_target: 1 at base, 0 at the target.
            let off_target = if target > 0.0 { (target - queuing) / target } else { 1.0 };
            self.grow(GAIN * off_target)
        }
    }

    fn grow(&mut self, by: f64) -> Allowance {
        self.allowance = (self.allowance + by).min(self.cap);
        self.yielding &= self.allowance < self.cap;
        self.allowance()
    }

    /// Adds a smoothed delay to the base history; returns the base (the lowest kept).
    fn remember(&mut self, delay: f64, now: Instant) -> f64 {
        match self.base.back_mut() {
            Some((start, low)) if now.saturating_duration_since(*start) < BUCKET => *low = low.min(delay),
            _ => self.base.push_back((now, delay)),
        }
        // By age, not by count: after a long quiet spell the old base is stale too.
        while self
            .base
            .front()
            .is_some_and(|(start, _)| now.saturating_duration_since(*start) >= BUCKET * BUCKETS as u32)
        {
            self.base.pop_front();
        }
        self.base.iter().map(|(_, low)| *low).fold(f64::INFINITY, f64::min)
    }

    /// What the copy may take now.
    pub fn allowance(&self) -> Allowance {
        let a = self.allowance;
        Allowance { window: (a.floor() as usize).clamp(1, self.cap as usize), duty: a.min(1.0) }
    }

    /// Reads in flight allowed now, fractional below one (the share of one worker's time).
    pub fn reads(&self) -> f64 {
        self.allowance
    }

    /// Whether the copy is held below its cap because it backed off for others (not while it
    /// starts slowly).
    pub fn yielding(&self) -> bool {
        self.yielding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    fn delay(ms: f64) -> Signal {
        Signal::Delay { mean_ms: ms, requests: 100 }
    }

    /// A controller of `n` reads made free by quiet intervals before `t0`.
    fn free(n: usize, t0: Instant) -> Controller {
        let mut c = Controller::new(n);
        let reads = run(&mut c, t0 - TICK * n as u32, &vec![Signal::Quiet; n]);
        assert_eq!(*reads.last().unwrap(), n as f64);
        c
    }

    /// Feeds `signals` one per tick from `t0`; returns the reads allowed after each.
    fn run(c: &mut Controller, t0: Instant, signals: &[Signal]) -> Vec<f64> {
        signals
            .iter()
            .enumerate()
            .map(|(i, s)| {
                c.sample(*s, t0 + TICK * i as u32);
                c.reads()
            })
            .collect()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            signals: Vec<Signal>,
            /// Reads allowed after the last sample.
            expect: f64,
        }
        let cases = [
            Case { name: "quiet: stays free", signals: vec![Signal::Quiet; 5], expect: 8.0 },
            Case { name: "others at their base: stays free", signals: vec![delay(2.0); 20], expect: 8.0 },
            Case {
                name: "others' delay doubles: halved each interval down to the floor",
                signals: [vec![delay(2.0); 3], vec![delay(6.0); 12]].concat(),
                expect: FLOOR,
            },
            Case {
                name: "within the target (+20 %): never backs off",
                signals: [vec![delay(2.0); 3], vec![delay(2.4); 20]].concat(),
                expect: 8.0,
            },
            Case {
                name: "a trickle of requests is quiet",
                signals: [vec![delay(2.0); 3], vec![Signal::Delay { mean_ms: 50.0, requests: 3 }; 5]].concat(),
                expect: 8.0,
            },
            Case {
                name: "a nonsense latency is quiet",
                signals: vec![Signal::Delay { mean_ms: f64::NAN, requests: 100 }; 3],
                expect: 8.0,
            },
        ];
        for case in cases {
            let t0 = Instant::now() + Duration::from_secs(1);
            let mut c = free(8, t0);
            let reads = run(&mut c, t0, &case.signals);
            assert_eq!(*reads.last().unwrap(), case.expect, "{}: {reads:?}", case.name);
        }
    }

    #[test]
    fn backs_off_multiplicatively() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut c = free(8, t0);
        let reads = run(&mut c, t0, &[delay(2.0), delay(2.0), delay(20.0), delay(20.0), delay(20.0)]);
        assert_eq!(reads, vec![8.0, 8.0, 4.0, 2.0, 1.0]);
        assert_eq!(c.allowance(), Allowance { window: 1, duty: 1.0 });
        c.sample(delay(20.0), t0 + TICK * 6);
        assert_eq!(c.allowance(), Allowance { window: 1, duty: 0.5 });
        assert!(c.yielding());
    }

    #[test]
    fn creeps_up_additively_while_others_are_at_base_and_recovers_fast_when_quiet() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut c = free(8, t0);
        run(&mut c, t0, &[[delay(2.0); 3].as_slice(), &[delay(20.0); 10]].concat());
        assert_eq!(c.reads(), FLOOR);
        // Back at base: + GAIN per interval (the smoothed delay comes down first).
        let t1 = t0 + TICK * 13;
        let reads = run(&mut c, t1, &[delay(2.0); 40]);
        let steps: Vec<f64> = reads.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(steps.iter().all(|s| *s <= GAIN + 1e-9), "{steps:?}");
        assert!((reads[39] - reads[29] - 10.0 * GAIN).abs() < 1e-3, "{reads:?}");
        // Nobody else: a whole worker per interval.
        let mut c = free(8, t0);
        run(&mut c, t0, &[[delay(2.0); 3].as_slice(), &[delay(20.0); 10]].concat());
        let reads = run(&mut c, t1, &[Signal::Quiet; 9]);
        assert_eq!(
            reads,
            vec![1.0 + FLOOR, 2.0 + FLOOR, 3.0 + FLOOR, 4.0 + FLOOR, 5.0 + FLOOR, 6.0 + FLOOR, 7.0 + FLOOR, 8.0, 8.0]
        );
        assert!(!c.yielding());
    }

    #[test]
    fn the_base_follows_a_disk_that_became_slower() {
        // The base is forgotten after BUCKETS buckets: a disk whose delay rose for good (another
        // disk's load on the same host) is the new base, and the copy is free again.
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut c = free(4, t0);
        run(&mut c, t0, &[delay(1.0); 5]);
        let later = t0 + BUCKET * (BUCKETS as u32 + 1);
        let ticks = (BUCKET * BUCKETS as u32).as_millis() / TICK.as_millis() + 60;
        let reads = run(&mut c, later, &vec![delay(3.0); ticks as usize]);
        assert_eq!(reads[0], 4.0, "the first interval of a slower disk is within its own bucket's base");
        assert_eq!(*reads.last().unwrap(), 4.0);
        // And while the old base is remembered, the rise is contention.
        let mut c = free(4, t0);
        run(&mut c, t0, &[delay(1.0); 5]);
        let reads = run(&mut c, t0 + BUCKET, &[delay(3.0); 5]);
        assert!(reads[4] < 1.0, "{reads:?}");
    }

    #[test]
    fn starts_at_one_read_and_is_free_after_nprocs_quiet_intervals() {
        let mut c = Controller::new(8);
        assert_eq!(c.allowance(), Allowance { window: 1, duty: 1.0 });
        assert!(!c.yielding(), "starting slowly is not yielding to anyone");
        let reads = run(&mut c, Instant::now(), &[Signal::Quiet; 8]);
        assert_eq!(reads, vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0]);
    }

    #[test]
    fn window_and_duty() {
        let cases = [(8.0, 8, 1.0), (3.7, 3, 1.0), (1.0, 1, 1.0), (0.25, 1, 0.25), (FLOOR, 1, FLOOR)];
        for (a, window, duty) in cases {
            let c = Controller { cap: 8.0, allowance: a, smoothed: None, base: VecDeque::new(), yielding: false };
            assert_eq!(c.allowance(), Allowance { window, duty }, "{a}");
        }
    }
}
