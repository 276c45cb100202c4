//! The destination's health: while it cannot take files (full, out of inodes, a share gone), one
//! job at a time probes it with backoff, a message says so at most every 30 s, and after
//! `give_up_after` the target ends incomplete. A pure record: the coordinator feeds it outcomes.

use std::path::Path;
use std::time::{Duration, Instant};

/// Retry intervals for an unavailable destination: from the first to the longest.
const PROBE_FIRST: Duration = Duration::from_millis(200);
const PROBE_MAX: Duration = Duration::from_secs(15);
/// At most one message about an unavailable destination per this interval (a day-long outage
/// must not flood the log).
const TROUBLE_MESSAGE_EVERY: Duration = Duration::from_secs(30);

/// An unavailable destination, while it lasts.
struct Trouble {
    since: Instant,
    next_probe: Instant,
    backoff: Duration,
    last_said: Option<Instant>,
    error: String,
}

/// Whether the destination takes files, and when to try it again if not.
#[derive(Default)]
pub struct Health {
    trouble: Option<Trouble>,
}

impl Health {
    /// How many jobs may be handed out now: all `free` workers normally; while the destination is
    /// unavailable, one probe at a time when its backoff has passed.
    pub fn budget(&self, free: usize, in_flight: usize, now: Instant) -> usize {
        match &self.trouble {
            None => free,
            Some(t) if now >= t.next_probe && in_flight == 0 => 1,
            Some(_) => 0,
        }
    }

    /// When a probe becomes possible, for the coordinator's sleep. Only while no job is in
    /// flight: a probe waits for the job in hand, and a deadline it cannot act on would make the
    /// coordinator spin (docs/design.md, "The coordinator sleeps").
    pub fn next_probe(&self, in_flight: usize) -> Option<Instant> {
        self.trouble.as_ref().filter(|_| in_flight == 0).map(|t| t.next_probe)
    }

    /// A job found the destination unavailable. Returns the message to show, when one is due.
    pub fn failed(&mut self, error: &str, dst: &Path, give_up_after: Duration) -> Option<String> {
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
        if t.last_said.is_some_and(|said| now - said < TROUBLE_MESSAGE_EVERY) {
            return None;
        }
        t.last_said = Some(now);
        let space = crate::sys::free_space(dst).map_or_else(String::new, |s| {
            let bytes = format!("; {} free of {}", human(s.free_bytes), human(s.total_bytes));
            // Out of inodes is out of space too, with bytes to spare: say which it is.
            if s.total_files > 0 && s.free_files == 0 {
                format!("{bytes}, but no free inodes (all {} used)", s.total_files)
            } else {
                bytes
            }
        });
        Some(format!(
            "destination {} cannot take files ({error}){space}; retrying every {} s (for {} s so far, giving up \
             after {} s)",
            dst.display(),
            t.backoff.as_secs().max(1),
            (now - t.since).as_secs(),
            give_up_after.as_secs()
        ))
    }

    /// A file begun at `begun` was written: the destination takes files again, if that copy began
    /// after the trouble did (a probe). Returns how long it was away.
    pub fn written(&mut self, begun: Instant) -> Option<Duration> {
        if self.trouble.as_ref().is_some_and(|t| begun < t.since) {
            return None;
        }
        self.trouble.take().map(|t| t.since.elapsed())
    }

    /// It stayed unavailable longer than `limit`.
    pub fn gave_up(&self, limit: Duration) -> bool {
        self.trouble.as_ref().is_some_and(|t| t.since.elapsed() > limit)
    }

    /// Why it cannot take files, while that lasts.
    pub fn error(&self) -> Option<&str> {
        self.trouble.as_ref().map(|t| t.error.as_str())
    }
}

/// Bytes in the binary units people read on a status line.
pub fn human(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_copy_begun_after_the_trouble_ends_it() {
        let mut h = Health::default();
        let dst = Path::new("/nonexistent/softcopy-health-test");
        let day = Duration::from_secs(86_400);
        let before = Instant::now();
        assert!(h.failed("No space left on device", dst, day).is_some(), "the first failure is said");
        // A neighbour's copy, in flight when the disk filled, lands in the room its partial freed.
        assert_eq!(h.written(before), None);
        assert_eq!(h.error(), Some("No space left on device"));
        assert_eq!(h.budget(4, 0, Instant::now() + PROBE_MAX), 1, "still one probe at a time");
        // So the next failure is the same trouble, not said again within 30 s.
        assert!(h.failed("No space left on device", dst, day).is_none());
        // A probe written after the trouble began ends it.
        assert!(h.written(Instant::now()).is_some());
        assert_eq!(h.error(), None);
        assert_eq!(h.budget(4, 0, Instant::now()), 4);
    }
}
