//! Bandwidth budgets (`--max-rate` per target, `--max-total-rate` for every target of a run or
//! every acquisition of a service) that hold whatever the IO scheduler does: IO priorities are
//! honoured only by some schedulers and never for buffered writeback, so a budget is what really
//! keeps the acquisition's disk free.
//!
//! A total budget is one [`RateLimit`] handed to each engine that shares it (`Config::max_total_rate`),
//! never process-wide state: an engine started later must not replace the budget of those in
//! flight (docs/design.md, "Service").

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate limit shared by any number of threads. Each transfer reserves its slot on a virtual clock
/// (when the budget will next be free) and sleeps until the slot before the next transfer, so the
/// long-run rate is the limit and no thread can starve another.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_s: u64,
    next_free: Mutex<Instant>,
}

/// Longest single sleep, so a stop request is seen quickly even at a very low rate.
pub const SLICE: Duration = Duration::from_millis(50);

impl RateLimit {
    /// A budget of `bytes_per_s` (at least 1).
    pub fn new(bytes_per_s: u64) -> Self {
        RateLimit { bytes_per_s: bytes_per_s.max(1), next_free: Mutex::new(Instant::now()) }
    }

    /// Bytes per copy step that keep the pacing fine-grained: a tenth of a second of budget.
    pub fn step(&self) -> usize {
        usize::try_from(self.bytes_per_s / 10).unwrap_or(usize::MAX).max(64 * 1024)
    }

    /// Accounts for `n` bytes moved and waits until the budget allows the next transfer.
    pub fn take(&self, n: u64, stop: &AtomicBool) -> io::Result<()> {
        let wait = {
            let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            // Idle time is banked for a tenth of a second at most: after a pause, no burst.
            let floor = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
            let start = (*next).max(floor);
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64);
            next.saturating_duration_since(now)
        };
        sleep_watching(wait, stop)
    }
}

/// Sleeps for `wait`, looking at `stop` every [`SLICE`]: an error ("stopped") once it is set.
pub fn sleep_watching(wait: Duration, stop: &AtomicBool) -> io::Result<()> {
    let until = Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopped"));
        }
        std::thread::sleep(left.min(SLICE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    #[test]
    fn holds_the_rate_across_threads() {
        let limit = Arc::new(RateLimit::new(4 << 20)); // 4 MiB/s
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limit, stop) = (limit.clone(), stop.clone());
                std::thread::spawn(move || {
                    for _ in 0..8 {
                        limit.take(64 << 10, &stop).unwrap(); // 4 threads x 8 x 64 KiB = 2 MiB
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 2 MiB at 4 MiB/s: at least ~0.5 s minus the last step and the banked tenth.
        assert!(t0.elapsed() >= Duration::from_millis(350), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_stop_request_ends_the_wait() {
        // 1000 bytes at 1 byte/s would wait for minutes; a stop request ends it at once.
        let limit = RateLimit::new(1);
        let stop = AtomicBool::new(true);
        let t0 = Instant::now();
        assert_eq!(limit.take(1000, &stop).unwrap_err().to_string(), "stopped");
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
