//! When to rescan the whole source: after lost events (once per burst, at most every 2 s), every
//! few seconds while some folders have no watch (the inotify limit), and every 2 s while the root is away (then only a stat). A rescan's interval
//! grows with the time a scan takes, so rescans never keep the disk busy more than a tenth of the
//! time. A pure record: the coordinator asks it and tells it what happened.

use std::time::{Duration, Instant};

/// Shortest interval between the rescans that stand in for missing watches or lost events.
pub const RESCAN_MIN: Duration = Duration::from_secs(2);
/// At most one message about lost events per this interval.
const SAY_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Rescans {
    /// When to rescan next.
    at: Option<Instant>,
    last: Option<Instant>,
    /// Rescans are periodic, at this interval.
    periodic: Option<Duration>,
    overflows: u64,
    said: Option<Instant>,
}

impl Rescans {
    /// From now on, rescan every `every` (at least): true the first time (say why once).
    pub fn periodic(&mut self, every: Duration) -> bool {
        if self.periodic == Some(every) {
            return false;
        }
        self.periodic = Some(every);
        self.at = Some(Instant::now() + every);
        true
    }

    /// Events were lost: a rescan soon. Returns the message to show, when one is due.
    pub fn events_lost(&mut self, now: Instant) -> Option<String> {
        self.overflows += 1;
        let earliest = self.last.map_or(now, |t| t + RESCAN_MIN);
        self.soon(earliest.max(now));
        if self.said.is_some_and(|t| now - t < SAY_EVERY) {
            return None;
        }
        self.said = Some(now);
        Some(format!(
            "filesystem events were lost ({} queue overflows so far; fs.inotify.max_queued_events may be too small); \
             rescanning the source",
            self.overflows
        ))
    }

    /// A rescan no later than `when`.
    pub fn soon(&mut self, when: Instant) {
        self.at = Some(self.at.map_or(when, |t| t.min(when)));
    }

    /// A rescan is due now.
    pub fn due(&self, now: Instant) -> bool {
        self.at.is_some_and(|t| now >= t)
    }

    /// A rescan that started at `started` ended; `root_away`: it found the root away (look again
    /// soon, it costs a stat).
    pub fn ran(&mut self, started: Instant, root_away: bool) {
        let now = Instant::now();
        self.last = Some(now);
        self.at = if root_away {
            Some(now + RESCAN_MIN)
        } else {
            self.periodic.map(|every| now + every.max((now - started) * 10))
        };
    }

    /// When the next rescan is due, for the coordinator's sleep.
    pub fn deadline(&self) -> Option<Instant> {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_events_make_a_rescan_due_at_once_then_no_sooner_than_the_minimum() {
        let mut r = Rescans::default();
        let now = Instant::now();
        assert!(!r.due(now) && r.deadline().is_none(), "nothing to rescan before events are lost");
        assert!(r.events_lost(now).is_some(), "the first loss is said");
        assert!(r.due(now), "a rescan is due at once after lost events");
        r.ran(now, false);
        assert!(r.deadline().is_none(), "not periodic: no rescan until events are lost again");
        let later = Instant::now();
        assert!(r.events_lost(later).is_none(), "said once per interval");
        assert!(!r.due(later), "no sooner than RESCAN_MIN after the last one");
        assert!(r.due(later + RESCAN_MIN), "but then");
        assert_eq!(r.events_lost(now + SAY_EVERY).map(|m| m.contains("3 queue overflows")), Some(true));
    }

    #[test]
    fn periodic_rescans_stay_periodic_and_a_root_away_is_looked_at_again_soon() {
        let mut r = Rescans::default();
        assert!(r.periodic(Duration::from_secs(5)), "said the first time");
        assert!(!r.periodic(Duration::from_secs(5)), "not again");
        let at = r.deadline().expect("a rescan is scheduled");
        assert!(!r.due(Instant::now()) && r.due(at));
        let started = Instant::now();
        r.ran(started, false);
        assert!(r.deadline().is_some_and(|t| t >= started + Duration::from_secs(5)), "the next one is scheduled");
        // A scan that took a second waits ten before the next: rescans keep the disk busy a
        // tenth of the time at most.
        let slow = Instant::now() - Duration::from_secs(1);
        r.ran(slow, false);
        assert!(r.deadline().is_some_and(|t| t >= slow + Duration::from_secs(11)), "the interval grows with the scan");
        let mut away = Rescans::default();
        let started = Instant::now();
        away.ran(started, true);
        assert!(away.deadline().is_some_and(|t| t >= started + RESCAN_MIN && t < started + RESCAN_MIN * 2));
    }
}
