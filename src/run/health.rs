//! The destination's health: while it cannot take files (full, out of inodes, a share gone), one
//! job at a time probes it with backoff, a message says so at most every 30 s, and after
//! `give_up_after` the target ends incomplete. A pure record: the coordinator feeds it outcomes.

use std::time::{Duration, Instant};

use crate::dest::Dest;

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

    /// A job found the destination unavailable at `now`. Returns the message to show, when one
    /// is due.
    pub fn failed(&mut self, error: &str, dest: &Dest, give_up_after: Duration, now: Instant) -> Option<String> {
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
        let space = dest.free_space().map_or_else(String::new, space_said);
        let dst = dest.root();
        Some(format!(
            "destination {} cannot take files ({error}){space}; retrying every {} s (for {} s so far, giving up \
             after {} s)",
            dst.display(),
            t.backoff.as_secs().max(1),
            (now - t.since).as_secs(),
            give_up_after.as_secs()
        ))
    }

    /// A file begun at `begun` was written (by `now`): the destination takes files again, if that
    /// copy began after the trouble did (a probe). Returns how long it was away.
    pub fn written(&mut self, begun: Instant, now: Instant) -> Option<Duration> {
        if self.trouble.as_ref().is_some_and(|t| begun < t.since) {
            return None;
        }
        self.trouble.take().map(|t| now.saturating_duration_since(t.since))
    }

    /// It stayed unavailable longer than `limit` by `now`.
    pub fn gave_up(&self, limit: Duration, now: Instant) -> bool {
        self.trouble.as_ref().is_some_and(|t| now.saturating_duration_since(t.since) > limit)
    }

    /// Why it cannot take files, while that lasts.
    pub fn error(&self) -> Option<&str> {
        self.trouble.as_ref().map(|t| t.error.as_str())
    }
}

/// The destination's free space as the message says it: out of inodes is out of space too, with
/// bytes to spare, so it says which it is.
fn space_said(s: crate::sys::Space) -> String {
    let bytes = format!("; {} free of {}", human(s.free_bytes), human(s.total_bytes));
    if s.total_files > 0 && s.free_files == 0 {
        format!("{bytes}, but no free inodes (all {} used)", s.total_files)
    } else {
        bytes
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
    use std::path::Path;

    const DAY: Duration = Duration::from_secs(86_400);
    const FULL: &str = "No space left on device";

    fn nowhere() -> Dest {
        Dest::at(Path::new("/nonexistent/softcopy-health-test"))
    }

    #[test]
    fn only_a_copy_begun_after_the_trouble_ends_it() {
        let mut h = Health::default();
        let before = Instant::now();
        let t0 = before + Duration::from_millis(1);
        assert!(h.failed(FULL, &nowhere(), DAY, t0).is_some(), "the first failure is said");
        // A neighbour's copy, in flight when the disk filled, lands in the room its partial freed.
        assert_eq!(h.written(before, t0), None);
        assert_eq!(h.error(), Some(FULL));
        assert_eq!(h.budget(4, 0, t0 + PROBE_MAX), 1, "still one probe at a time");
        // So the next failure is the same trouble, not said again within 30 s.
        assert!(h.failed(FULL, &nowhere(), DAY, t0).is_none());
        // A probe written after the trouble began ends it, and says for how long it lasted.
        let later = t0 + Duration::from_secs(7);
        assert_eq!(h.written(t0 + Duration::from_secs(1), later), Some(Duration::from_secs(7)));
        assert_eq!(h.error(), None);
        assert_eq!(h.budget(4, 0, later), 4);
    }

    #[test]
    fn probes_back_off_from_200_ms_doubling_to_15_s_one_at_a_time() {
        let mut h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.next_probe(0), None, "no trouble, no probe");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            h.failed(FULL, &nowhere(), DAY, now);
            let at = h.next_probe(0).expect("a probe is due while nothing is in flight");
            waits.push((at - now).as_millis());
            assert_eq!(h.next_probe(1), None, "a probe waits for the job in hand");
            assert_eq!(h.budget(4, 0, at - Duration::from_millis(1)), 0, "not before it is due");
            assert_eq!(h.budget(4, 1, at), 0, "nor beside a job in flight");
            assert_eq!(h.budget(4, 0, at), 1);
            now = at;
        }
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 12_800, 15_000, 15_000]);
    }

    #[test]
    fn the_trouble_is_said_at_most_every_30_s_and_given_up_after_the_limit() {
        let mut h = Health::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        let said = h.failed(FULL, &nowhere(), limit, t0).unwrap();
        assert!(said.contains(FULL) && said.contains("giving up after 60 s"), "{said}");
        assert!(h.failed(FULL, &nowhere(), limit, t0 + TROUBLE_MESSAGE_EVERY - Duration::from_millis(1)).is_none());
        let again = h.failed(FULL, &nowhere(), limit, t0 + TROUBLE_MESSAGE_EVERY).unwrap();
        assert!(again.contains("for 30 s so far"), "{again}");
        assert!(!h.gave_up(limit, t0 + limit));
        assert!(h.gave_up(limit, t0 + limit + Duration::from_millis(1)));
        assert!(!Health::default().gave_up(limit, t0 + DAY), "no trouble, nothing to give up");
    }

    #[test]
    fn a_full_destination_says_whether_bytes_or_inodes_ran_out() {
        let space = |free_files, total_files| crate::sys::Space {
            free_bytes: 3 << 20,
            total_bytes: 4 << 20,
            free_files,
            total_files,
        };
        assert_eq!(space_said(space(10, 100)), "; 3.0 MiB free of 4.0 MiB");
        assert_eq!(space_said(space(0, 100)), "; 3.0 MiB free of 4.0 MiB, but no free inodes (all 100 used)");
        // A filesystem that counts no inodes (0 of 0) is not out of them.
        assert_eq!(space_said(space(0, 0)), "; 3.0 MiB free of 4.0 MiB");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(u64::MAX), "16384.0 PiB", "no unit past the last");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
