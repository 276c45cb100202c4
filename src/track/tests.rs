//! The tracker's rules, one sequence of events each, on a mock clock.
use super::*;
use std::collections::HashSet;
use std::ffi::OsString;

/// A mock clock: a fixed origin plus offsets in milliseconds.
struct Clock(Instant);
impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn ident(ino: u64) -> Identity {
    Identity { dev: 1, ino, size: 10, mtime_ns: 0, ctime_ns: 0 }
}

fn copied(ino: u64) -> Outcome {
    Outcome::Copied { ident: ident(ino), bytes: 10, hash: None }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn setup() -> (Tracker, Clock) {
    (Tracker::new(Duration::from_millis(100), Duration::ZERO), Clock(Instant::now()))
}

fn drain(t: &mut Tracker, now: Instant) -> Vec<PathBuf> {
    jobs(t, now).into_iter().map(|j| j.rel).collect()
}

/// The folders of the records a sweep dropped.
fn folders(dropped: Vec<settled::Dropped>) -> Vec<PathBuf> {
    dropped.into_iter().map(|d| d.folder).collect()
}

fn jobs(t: &mut Tracker, now: Instant) -> Vec<Job> {
    std::iter::from_fn(|| t.next_job(now)).collect()
}

#[test]
fn tensorstore_os_mode_write_is_one_copy() {
    // CREATE K.__lock, CLOSE_WRITE K.__lock (before data), MODIFY K.__lock, MOVED_FROM K.__lock,
    // MOVED_TO K, CLOSE_WRITE K — exactly as recorded in writers.md §1.
    let (mut t, c) = setup();
    t.event(&p("0.0.__lock"), Change::Created, c.at(0));
    t.event(&p("0.0.__lock"), Change::ClosedWrite, c.at(0));
    t.event(&p("0.0.__lock"), Change::Modified, c.at(0));
    t.event(&p("0.0.__lock"), Change::Removed, c.at(1));
    t.event(&p("0.0"), Change::Replaced, c.at(1));
    t.event(&p("0.0"), Change::ClosedWrite, c.at(1));
    assert_eq!(drain(&mut t, c.at(1)), vec![p("0.0")]);
    t.finish(&p("0.0"), copied(1), c.at(2));
    // The trailing CLOSE_WRITE K is the lock fd closing: no second copy, ever.
    assert_eq!(drain(&mut t, c.at(10_000)), Vec::<PathBuf>::new());
    assert!(t.is_idle());
    assert_eq!(t.counts().redundant, 0);
}

#[test]
fn lock_and_partial_names_are_never_jobs() {
    let (mut t, c) = setup();
    for name in ["a/0.__lock", "a/0_0123456789abcdef.__lock", "zarr.0123abcd.partial", "x/.k.1.softcopy-partial"] {
        t.event(&p(name), Change::Created, c.at(0));
        t.event(&p(name), Change::Modified, c.at(0));
        t.event(&p(name), Change::ClosedWrite, c.at(0));
        t.event(&p(name), Change::Replaced, c.at(0));
    }
    assert!(drain(&mut t, c.at(1000)).is_empty());
    assert!(t.is_idle());
}

#[test]
fn new_version_while_copying_copies_again_after() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    assert_eq!(job.prev, Prev::Unknown);
    // A second version lands while the first is being copied: not dispatched concurrently.
    t.event(&p("k"), Change::Replaced, c.at(1));
    t.event(&p("k"), Change::Replaced, c.at(2));
    assert_eq!(t.next_job(c.at(2)), None);
    t.finish(&p("k"), copied(1), c.at(3));
    let again = t.next_job(c.at(3)).unwrap();
    // The renames are evidence of a newer version: copied whatever its metadata says (docs/design.md, "A version is decided on evidence").
    assert_eq!(again.prev, Prev::Superseded);
    assert_eq!(t.next_job(c.at(3)), None, "queued at most once");
    t.finish(&p("k"), copied(2), c.at(4));
    assert_eq!(t.counts().redundant, 1);
    assert!(t.is_idle());
}

#[test]
fn hot_keys_are_debounced_but_first_versions_are_not() {
    let mut t = Tracker::new(Duration::from_millis(100), Duration::from_millis(50));
    let c = Clock(Instant::now());
    t.event(&p("shard"), Change::Replaced, c.at(0));
    assert_eq!(drain(&mut t, c.at(0)), vec![p("shard")], "first version: no delay");
    t.finish(&p("shard"), copied(1), c.at(1));
    // Rewritten every 20 ms: the re-copy waits for a 50 ms pause...
    for ms in [10, 30, 50, 70] {
        t.event(&p("shard"), Change::Replaced, c.at(ms));
        assert!(drain(&mut t, c.at(ms)).is_empty(), "at {ms} ms");
    }
    assert_eq!(drain(&mut t, c.at(120)), vec![p("shard")]);
    t.finish(&p("shard"), copied(2), c.at(121));
    // ...and a key that never pauses is still copied within MAX_DEBOUNCES periods.
    let mut copies_at = Vec::new();
    for ms in (200..1300).step_by(10) {
        t.event(&p("shard"), Change::Replaced, c.at(ms));
        if let Some(job) = t.next_job(c.at(ms)) {
            copies_at.push(ms);
            t.finish(&job.rel, copied(ms), c.at(ms));
        }
    }
    assert_eq!(copies_at, vec![700, 1210], "capped at 10 x 50 ms after the first pending version");
    assert_eq!(t.counts().distinct, 1);
    assert_eq!(t.counts().max_copies, 4);
    // Other keys written once are unaffected.
    t.event(&p("other"), Change::Replaced, c.at(2000));
    assert!(drain(&mut t, c.at(2000)).contains(&p("other")));
}

#[test]
fn oldest_wait_is_the_lag_of_the_first_file_still_queued() {
    let (mut t, c) = setup();
    assert_eq!(t.oldest_wait(c.at(0)), Duration::ZERO);
    t.event(&p("a"), Change::Replaced, c.at(100));
    t.event(&p("b"), Change::Replaced, c.at(300));
    assert_eq!(t.oldest_wait(c.at(1000)), Duration::from_millis(900));
    let _ = t.next_job(c.at(1000)); // "a" goes to a worker
    assert_eq!(t.oldest_wait(c.at(1000)), Duration::from_millis(700));
    assert_eq!(t.known(), 2);
}

#[test]
fn repeated_triggers_while_queued_queue_once() {
    let (mut t, c) = setup();
    for _ in 0..5 {
        t.event(&p("k"), Change::Replaced, c.at(0));
    }
    assert_eq!(t.backlog(), 1);
    assert_eq!(drain(&mut t, c.at(0)), vec![p("k")]);
}

#[test]
fn in_place_write_waits_for_close_and_settle() {
    // acquire-zarr / tensorstore non_atomic: CREATE, MODIFY..., CLOSE_WRITE.
    let (mut t, c) = setup();
    t.event(&p("s"), Change::Created, c.at(0));
    t.event(&p("s"), Change::Modified, c.at(0));
    assert!(drain(&mut t, c.at(5_000)).is_empty(), "open for writing: never copied");
    t.event(&p("s"), Change::Modified, c.at(5_000));
    t.event(&p("s"), Change::ClosedWrite, c.at(5_001));
    assert!(drain(&mut t, c.at(5_050)).is_empty(), "not settled yet");
    assert_eq!(t.next_deadline(), Some(c.at(5_101)));
    assert_eq!(drain(&mut t, c.at(5_101)), vec![p("s")]);
}

#[test]
fn link_publish_without_write_is_ready_at_once_if_nobody_writes_it() {
    // zarr-python set_if_not_exists: link(tmp, K) → a bare CREATE K with complete content
    // (inotify; where no close is reported a create waits for its writes, see below).
    let (t, c) = setup();
    let mut t = t.with_close_events(true);
    t.event(&p("zarr.json"), Change::Created, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    assert!(job.verify_closed, "not proven by a rename: the worker must check for writers");
}

#[test]
fn found_file_still_open_waits_for_its_close() {
    // A scan finds a shard an in-place writer still has open (its CREATE and MODIFY happened
    // before the watch): the worker reports Busy; the close makes it ready.
    let (t, c) = setup();
    let mut t = t.with_close_events(true);
    t.event(&p("c/0/0"), Change::Found, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    assert!(job.verify_closed);
    t.finish(&job.rel, Outcome::Busy, c.at(1));
    assert!(drain(&mut t, c.at(10_000)).is_empty(), "still open: not copied");
    assert!(t.is_idle(), "an open file does not hold up the end (the final rescan copies it)");
    t.event(&p("c/0/0"), Change::ClosedWrite, c.at(10_000));
    assert_eq!(drain(&mut t, c.at(10_100)), vec![p("c/0/0")]);
}

#[test]
fn close_during_the_busy_check_is_not_lost() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Found, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    // The writer closes right after the worker found it open; the close event is handled first.
    t.event(&p("k"), Change::ClosedWrite, c.at(1));
    t.finish(&job.rel, Outcome::Busy, c.at(2));
    assert_eq!(drain(&mut t, c.at(101)), vec![p("k")]);
}

#[test]
fn renamed_versions_need_no_check_and_tensorstore_close_is_still_ignored() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    assert!(!job.verify_closed);
    t.event(&p("k"), Change::ClosedWrite, c.at(0));
    t.finish(&job.rel, copied(1), c.at(1));
    assert!(drain(&mut t, c.at(10_000)).is_empty());
}

#[test]
fn modify_while_copying_waits_for_close_before_copying_again() {
    let (mut t, c) = setup();
    t.event(&p("f"), Change::Replaced, c.at(0));
    let _ = t.next_job(c.at(0)).unwrap();
    t.event(&p("f"), Change::Modified, c.at(1));
    t.finish(&p("f"), copied(1), c.at(2));
    assert!(drain(&mut t, c.at(1000)).is_empty());
    t.event(&p("f"), Change::ClosedWrite, c.at(1000));
    assert_eq!(drain(&mut t, c.at(1100)), vec![p("f")]);
}

#[test]
fn deletion_is_a_job_and_then_forgotten() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let _ = t.next_job(c.at(0));
    t.finish(&p("k"), copied(1), c.at(0));
    t.event(&p("k"), Change::Removed, c.at(1));
    let job = t.next_job(c.at(1)).unwrap();
    assert_eq!(job.rel, p("k"));
    t.finish(&p("k"), Outcome::Deleted, c.at(1));
    assert_eq!(t.known(), 0);
    assert!(t.is_idle());
}

#[test]
fn delete_during_copy_is_mirrored_after_the_copy() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let _ = t.next_job(c.at(0));
    t.event(&p("k"), Change::Removed, c.at(1));
    t.finish(&p("k"), copied(1), c.at(2));
    assert_eq!(drain(&mut t, c.at(2)), vec![p("k")]);
}

#[test]
fn removed_tree_removes_everything_below() {
    let (mut t, c) = setup();
    // Keys ordered between `a/c` and `a/c/...` byte-wise (`.` and `-` sort before `/`) must
    // survive, as must `a/cc`: keys are compared as bytes, not path components.
    for k in ["a/c/0/0", "a/c.b", "a/c-1/0", "a/c/0/1", "a/cc/0", "b/c/0/0"] {
        t.event(&p(k), Change::Replaced, c.at(0));
    }
    for rel in drain(&mut t, c.at(0)) {
        t.finish(&rel, copied(1), c.at(0));
    }
    t.removed_tree(&p("a/c"), c.at(1));
    let mut jobs = drain(&mut t, c.at(1));
    jobs.sort();
    assert_eq!(jobs, vec![p("a/c/0/0"), p("a/c/0/1")]);
}

#[test]
fn sweep_requeues_changed_and_vanished_files_only() {
    let (mut t, c) = setup();
    for (k, ino) in [("same", 1), ("changed", 2), ("vanished", 3)] {
        t.event(&p(k), Change::Replaced, c.at(0));
        let job = t.next_job(c.at(0)).unwrap();
        t.finish(&job.rel, copied(ino), c.at(0));
    }
    t.begin_sweep();
    // What the sweep found still to copy (the estimate of the bytes left): not the version copied,
    // nor a file never tracked.
    assert_eq!(t.scanned(&p("same"), ident(1), c.at(1)), Some(false));
    assert_eq!(t.scanned(&p("changed"), ident(9), c.at(1)), Some(true));
    assert_eq!(t.scanned(&p("new"), ident(4), c.at(1)), Some(true));
    assert_eq!(t.scanned(&p("x.__lock"), ident(5), c.at(1)), None);
    t.end_sweep(c.at(1));
    let mut jobs = drain(&mut t, c.at(1));
    jobs.sort();
    assert_eq!(jobs, vec![p("changed"), p("new"), p("vanished")]);
}

#[test]
fn a_sweep_counts_only_what_no_event_announced() {
    let (mut t, c) = setup();
    for (k, ino) in [("same", 1), ("changed", 2), ("vanished", 3), ("heard", 4), ("removed", 5)] {
        t.event(&p(k), Change::Replaced, c.at(0));
        let job = t.next_job(c.at(0)).unwrap();
        t.finish(&job.rel, copied(ino), c.at(0));
    }
    // Heard: a new version of `heard` and the removal of `removed`, not yet acted on; `queued`
    // is new and heard.
    t.event(&p("heard"), Change::Replaced, c.at(1));
    t.event(&p("removed"), Change::Removed, c.at(1));
    t.event(&p("queued"), Change::Created, c.at(1));
    assert_eq!(t.counts().unheard, 0);
    t.begin_sweep();
    for (k, ino) in [("same", 1), ("changed", 9), ("heard", 8), ("queued", 7), ("new", 6)] {
        t.scanned(&p(k), ident(ino), c.at(2));
    }
    t.end_sweep(c.at(2));
    // Unheard: `changed`, `new` and `vanished`.
    assert_eq!(t.counts().unheard, 3);
    // A sweep that did not complete counts nothing it found.
    t.begin_sweep();
    t.abandon_sweep();
    t.scanned(&p("other"), ident(10), c.at(3));
    assert_eq!(t.counts().unheard, 3);
}

/// Puts a tracker in a state, on the clock.
type SetUp = dyn Fn(&mut Tracker, &Clock);

/// A tracker holding `k` copied as `ident(1)`, then put in a state by `set`; a sweep that finds `k`
/// changed (or, with `found` false, gone): what it counted as unheard.
fn unheard_after(set: impl FnOnce(&mut Tracker, &Clock), found: bool) -> u64 {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["k"], 1);
    set(&mut t, &c);
    t.begin_sweep();
    if found {
        t.scanned(&p("k"), ident(2), c.at(100_000));
    }
    t.end_sweep(c.at(100_000));
    t.counts().unheard
}

#[test]
fn whatever_is_under_way_for_a_file_keeps_a_sweeps_find_from_counting() {
    let give_up = |t: &mut Tracker, c: &Clock| {
        t.event(&p("k"), Change::Replaced, c.at(10));
        let mut now = 10;
        while let Some(job) = t.next_job(c.at(now)) {
            t.finish(&job.rel, Outcome::Failed("refused".into()), c.at(now));
            now += 10_000;
        }
    };
    let cases: [(&str, Box<SetUp>); 5] = [
        ("queued", Box::new(|t, c| t.event(&p("k"), Change::Replaced, c.at(10)))),
        (
            "in flight",
            Box::new(|t, c| {
                t.event(&p("k"), Change::Replaced, c.at(10));
                t.next_job(c.at(10)).unwrap();
            }),
        ),
        ("a writer has it open", Box::new(|t, c| t.event(&p("k"), Change::Modified, c.at(10)))),
        ("given up after failures", Box::new(give_up)),
        ("nothing", Box::new(|_, _| {})),
    ];
    for (what, set) in &cases {
        let want = u64::from(*what == "nothing");
        assert_eq!(unheard_after(|t, c| set(t, c), true), want, "changed, {what}");
        assert_eq!(unheard_after(|t, c| set(t, c), false), want, "gone, {what}");
    }
    // A file never copied is known, not news, whatever a sweep finds of it.
    let (mut t, c) = setup();
    t.event(&p("new"), Change::Created, c.at(0));
    t.begin_sweep();
    t.end_sweep(c.at(1));
    t.begin_sweep();
    t.scanned(&p("new"), ident(3), c.at(2));
    t.end_sweep(c.at(2));
    assert_eq!(t.counts().unheard, 0);
}

#[test]
fn changed_during_copy_is_retried_at_once() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let _ = t.next_job(c.at(0));
    t.finish(&p("k"), Outcome::Changed, c.at(1));
    assert_eq!(drain(&mut t, c.at(1)), vec![p("k")]);
}

#[test]
fn changed_copy_during_an_in_place_write_is_copied_after_its_close() {
    // An appended log. A copy is in flight when the writer opens and writes
    // again; the copy comes back Changed while the writer still has the file open; then it
    // closes. The last version must be copied (it was stranded: due, but never queued).
    let (mut t, c) = setup();
    t.event(&p("log"), Change::Replaced, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    t.event(&p("log"), Change::Modified, c.at(1));
    t.finish(&job.rel, Outcome::Changed, c.at(2));
    assert!(drain(&mut t, c.at(3)).is_empty(), "not while it is open for writing");
    t.event(&p("log"), Change::ClosedWrite, c.at(4));
    assert_eq!(drain(&mut t, c.at(200)), vec![p("log")]);
}

#[test]
fn repeated_changes_back_off() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    t.finish(&job.rel, Outcome::Changed, c.at(0));
    let job = t.next_job(c.at(0)).expect("the first change is retried at once");
    t.finish(&job.rel, Outcome::Changed, c.at(0));
    assert!(t.next_job(c.at(0)).is_none(), "the second one waits");
    assert!(t.next_deadline().is_some_and(|d| d > c.at(0)));
    let job = t.next_job(c.at(10_000)).expect("and is retried after its backoff");
    t.finish(&job.rel, copied(1), c.at(10_000));
    assert!(t.is_idle());
}

#[test]
fn unsettled_files_are_tried_again_after_the_wait_or_at_their_close() {
    let (mut t, c) = setup();
    t.event(&p("a"), Change::Found, c.at(0));
    t.event(&p("b"), Change::Found, c.at(0));
    for rel in drain(&mut t, c.at(0)) {
        t.finish(&rel, Outcome::Unsettled(Duration::from_secs(5)), c.at(0));
    }
    assert!(drain(&mut t, c.at(1000)).is_empty());
    assert!(!t.is_idle(), "an unsettled file holds up the end");
    t.event(&p("a"), Change::ClosedWrite, c.at(1000));
    assert_eq!(drain(&mut t, c.at(1100)), vec![p("a")]);
    let job = t.next_job(c.at(5000)).expect("b after its quiet period");
    assert!(job.verify_closed, "and still checked");
}

#[test]
fn due_timers_move_to_the_queue_without_a_job_being_taken() {
    // With every worker busy nobody calls next_job; tick() still fires the
    // timers, so the next deadline is never in the past and the coordinator can sleep.
    let (mut t, c) = setup();
    t.event(&p("f"), Change::Modified, c.at(0));
    t.event(&p("f"), Change::ClosedWrite, c.at(0));
    assert_eq!(t.next_deadline(), Some(c.at(100)));
    t.tick(c.at(150));
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.backlog(), 1);
}

#[test]
fn failures_back_off_then_give_up() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let mut now = 0;
    let mut attempts = 0;
    while let Some(job) = t.next_job(c.at(now)) {
        attempts += 1;
        t.finish(&job.rel, Outcome::Failed("disk full".into()), c.at(now));
        assert!(t.next_job(c.at(now)).is_none(), "no retry without backoff");
        now += 10_000;
    }
    assert_eq!(attempts, MAX_FAILURES as usize);
    assert_eq!(t.counts().failed, 1);
    assert_eq!(t.last_error(), Some("disk full"));
    assert!(t.is_idle(), "a given-up file must not block the end");
    // A new version of the file makes it eligible again.
    t.event(&p("k"), Change::Replaced, c.at(now));
    assert!(t.next_job(c.at(now)).is_some());
}

#[test]
fn rescans_neither_forgive_failures_nor_revive_a_file_given_up() {
    // With events lost the source is rescanned every 2 s; had each find reset the
    // failure count, a file refused by the destination would be retried for ever and the run
    // would never end.
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let mut now = 0;
    let mut attempts = 0;
    while let Some(job) = t.next_job(c.at(now)) {
        attempts += 1;
        t.finish(&job.rel, Outcome::Failed("refused".into()), c.at(now));
        now += 2_000;
        t.event(&p("k"), Change::Found, c.at(now));
    }
    assert_eq!(attempts, MAX_FAILURES as usize);
    assert!(t.is_idle());
    t.event(&p("k"), Change::Found, c.at(now + 2_000));
    assert!(t.is_idle() && t.next_job(c.at(now + 2_000)).is_none(), "a find does not revive it");
    assert_eq!(t.counts().failed, 1);
}

#[test]
fn every_ordering_of_a_tensorstore_write_and_delete_ends_consistent() {
    // All permutations of (rename-in, delete, scan) for one key: whatever the order, after the
    // last event the tracker wants exactly one more job for the key, so the worker (which reads
    // the source as it is then) makes the destination match.
    let events = [Change::Replaced, Change::Removed, Change::Replaced];
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        for split in 0..=3 {
            let (mut t, c) = setup();
            let mut in_flight = None;
            for (i, &e) in order.iter().enumerate() {
                if i == split {
                    in_flight = t.next_job(c.at(i as u64));
                }
                t.event(&p("k"), events[e], c.at(i as u64));
            }
            if let Some(job) = in_flight {
                t.finish(&job.rel, copied(1), c.at(10));
            }
            assert_eq!(drain(&mut t, c.at(10)), vec![p("k")], "order {order:?} split {split}");
        }
    }
}

#[test]
fn a_write_after_a_copy_supersedes_it_even_with_the_same_identity() {
    // A same-size rewrite within one timestamp tick leaves the identity as it
    // was; the close event used to be overruled by it (`prev == ident`: "unchanged").
    let (mut t, c) = setup();
    t.event(&p("zarr.json"), Change::Replaced, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    t.finish(&job.rel, copied(1), c.at(1));
    t.event(&p("zarr.json"), Change::Modified, c.at(2));
    t.event(&p("zarr.json"), Change::ClosedWrite, c.at(3));
    let again = jobs(&mut t, c.at(1000));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].prev, Prev::Superseded);
    // Once that copy is made, the next one may be skipped again on an equal identity...
    t.finish(&p("zarr.json"), copied(1), c.at(1001));
    t.event(&p("zarr.json"), Change::Found, c.at(1002));
    assert_eq!(t.next_job(c.at(1002)).unwrap().prev, Prev::Copied(ident(1)));
    // ...and tensorstore's close of its lock fd after a rename is still no new version.
    t.finish(&p("zarr.json"), copied(1), c.at(1003));
    t.event(&p("zarr.json"), Change::ClosedWrite, c.at(1004));
    assert!(drain(&mut t, c.at(2000)).is_empty());
}

#[test]
fn evidence_during_a_copy_survives_its_outcome() {
    // A write lands while the copy is in flight: the copy that comes back may hold either version
    // (within one tick its identity cannot tell), so the next copy is forced.
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let job = t.next_job(c.at(0)).unwrap();
    t.finish(&job.rel, copied(1), c.at(1));
    t.event(&p("k"), Change::Replaced, c.at(2));
    let job = jobs(&mut t, c.at(1000)).pop().unwrap();
    t.event(&p("k"), Change::Modified, c.at(1001));
    t.finish(&job.rel, copied(1), c.at(1002));
    t.event(&p("k"), Change::ClosedWrite, c.at(1003));
    let again = jobs(&mut t, c.at(2000));
    assert_eq!(again.iter().map(|j| j.prev).collect::<Vec<_>>(), vec![Prev::Superseded]);
}

#[test]
fn without_close_events_a_file_found_open_is_looked_at_again_and_writes_debounce() {
    // Windows: no close is ever reported. A file found open is polled, still without
    // holding up the end; each write moves its look to `settle` after it, and that look checks
    // for writers.
    let (t, c) = setup();
    let mut t = t.with_close_events(false);
    t.event(&p("shard"), Change::Created, c.at(0));
    assert!(t.next_job(c.at(0)).is_none(), "a create is looked at `settle` after, with its writes");
    let job = t.next_job(c.at(100)).unwrap();
    assert!(job.verify_closed);
    t.finish(&job.rel, Outcome::Busy, c.at(101));
    assert!(t.is_idle(), "a file held open does not hold up the end (the end waits for it, bounded)");
    assert_eq!(t.writing_files(), vec![p("shard")]);
    assert!(drain(&mut t, c.at(600)).is_empty(), "not before the poll");
    let poll = 101 + BUSY_POLL.as_millis() as u64;
    let job = t.next_job(c.at(poll)).expect("looked at again without a close");
    assert!(job.verify_closed, "and checked for writers again");
    t.finish(&job.rel, copied(1), c.at(poll));
    for ms in [0, 50, 90] {
        t.event(&p("shard"), Change::Written, c.at(poll + 10 + ms));
    }
    assert!(drain(&mut t, c.at(poll + 150)).is_empty(), "writes go on: not yet");
    let job = t.next_job(c.at(poll + 200)).expect("a rewrite of a copied file is copied again");
    assert!(job.verify_closed);
}

/// Copies `names`, each its own inode (numbered from `first` in the order given).
fn copy_all(t: &mut Tracker, c: &Clock, names: &[&str], first: u64) {
    for n in names {
        t.event(&p(n), Change::Replaced, c.at(0));
    }
    for rel in drain(t, c.at(0)) {
        let ino = first + names.iter().position(|n| p(n) == rel).unwrap() as u64;
        t.finish(&rel, copied(ino), c.at(1));
    }
}

#[test]
fn settled_files_leave_memory_after_two_quiet_passes_and_stay_counted() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1", "b/0"], 1);
    assert_eq!(t.evict_settled(), 0, "the first pass only marks them");
    // An event between the passes keeps a file in memory one more pass.
    t.event(&p("b/0"), Change::ClosedWrite, c.at(5));
    assert_eq!(t.evict_settled(), 2);
    assert_eq!((t.known(), t.copied_count(), t.settled().held()), (3, 3, 2));
    assert_eq!(t.copied_identity(&p("a/0")), None, "no longer held one by one");
    assert_eq!(t.evict_settled(), 1);
    assert_eq!(t.settled().folders(), 2);
    assert!(t.is_idle());
}

#[test]
fn a_file_in_flight_or_waiting_is_never_settled() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1", "a/2"], 1);
    t.event(&p("a/0"), Change::Replaced, c.at(10)); // queued
    t.event(&p("a/1"), Change::Modified, c.at(10)); // a writer has it open
    t.event(&p("a/2"), Change::Replaced, c.at(10));
    let job = t.next_job(c.at(10)).unwrap(); // one in flight, the other still queued
    for _ in 0..3 {
        t.evict_settled();
    }
    assert_eq!(t.settled().held(), 0);
    assert!(t.not_copied().is_empty() && t.writing_files() == vec![p("a/1")]);
    t.finish(&job.rel, copied(9), c.at(11));
}

#[test]
fn a_sweep_proves_a_settled_folder_or_hands_it_back_to_be_listed() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1", "b/0"], 1);
    t.evict_settled();
    t.evict_settled();
    // Everything as copied: the sweep finds nothing to do and keeps the records.
    t.begin_sweep();
    t.scanned(&p("a/0"), ident(1), c.at(20));
    t.scanned(&p("a/1"), ident(2), c.at(20));
    t.scanned(&p("b/0"), ident(3), c.at(20));
    assert!(t.end_sweep(c.at(20)).is_empty());
    assert!(drain(&mut t, c.at(20)).is_empty());
    assert_eq!(t.settled().held(), 3);
    // a/1 changed and a/2 appeared, both unseen; b/0 was deleted unseen.
    t.begin_sweep();
    t.scanned(&p("a/0"), ident(1), c.at(30));
    t.scanned(&p("a/1"), ident(7), c.at(30));
    t.scanned(&p("a/2"), ident(8), c.at(30));
    let mut back = folders(t.end_sweep(c.at(30)));
    back.sort();
    assert_eq!(back, vec![p("a"), p("b")]);
    assert!(drain(&mut t, c.at(30)).is_empty(), "the caller lists them again; nothing is taken on faith");
    // Their copies are still counted, so the end cannot take the destination as known.
    assert_eq!((t.settled().held(), t.copied_count()), (0, 3));
}

/// `a/0`, `a/1` copied and settled into `a`'s record, then `a/0` deleted unheard: the record a
/// sweep drops, and the names listed at the source now.
fn a_settled_file_deleted_unheard() -> (Tracker, Clock, settled::Dropped, HashSet<OsString>) {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1"], 1);
    t.evict_settled();
    t.evict_settled();
    t.begin_sweep();
    t.scanned(&p("a/1"), ident(2), c.at(20));
    let mut dropped = t.end_sweep(c.at(20));
    assert_eq!(dropped.len(), 1);
    (t, c, dropped.remove(0), HashSet::from([OsString::from("1")]))
}

fn names(names: &[&str]) -> Vec<OsString> {
    names.iter().map(OsString::from).collect()
}

#[test]
fn a_settled_file_deleted_unheard_is_mirrored_where_the_copies_are_the_records_files_by_name() {
    let (mut t, c, dropped, listed) = a_settled_file_deleted_unheard();
    assert!(drain(&mut t, c.at(20)).is_empty(), "the sweep alone cannot name it");
    // The copies there are exactly `a/0` and `a/1`, and `a/0` is not at the source: its deletion.
    assert_eq!(t.mirror_dropped(&dropped, &listed, &names(&["1", "0"]), c.at(21)), vec![p("a/0")]);
    let job = t.next_job(c.at(21)).expect("a job mirrors it");
    assert_eq!((job.rel, job.prev), (p("a/0"), Prev::Unknown), "its worker looks at the source again");
    t.finish(&p("a/0"), Outcome::Deleted, c.at(22));
    assert!(t.is_idle() && t.files.is_empty());
}

#[test]
fn a_copy_the_record_cannot_account_for_leaves_the_deletions_to_the_end() {
    // A person's note beside the copies, a copy gone, a copy of another name: no proof, no job.
    for copies in [&["0", "1", "notes.txt"][..], &["0"], &["0", "2"], &[]] {
        let (mut t, c, dropped, listed) = a_settled_file_deleted_unheard();
        assert!(t.mirror_dropped(&dropped, &listed, &names(copies), c.at(21)).is_empty(), "{copies:?}");
        assert!(drain(&mut t, c.at(21)).is_empty(), "{copies:?}");
    }
    // Held by the tracker, a name is its own: a copy of it is not counted as the record's.
    let (mut t, c, dropped, listed) = a_settled_file_deleted_unheard();
    t.event(&p("a/1"), Change::Replaced, c.at(21));
    assert!(t.mirror_dropped(&dropped, &listed, &names(&["0", "1"]), c.at(21)).is_empty());
    // Ours at the source's root, a writer's lock: never a copy, never counted.
    let (mut t, c, dropped, listed) = a_settled_file_deleted_unheard();
    let with_ours = names(&["0", "1", "1.__lock", ".k.1.softcopy-partial"]);
    assert_eq!(t.mirror_dropped(&dropped, &listed, &with_ours, c.at(21)), vec![p("a/0")]);
}

#[test]
fn a_settled_folder_changed_unheard_counts_and_one_heard_does_not() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1", "b/0", "b/1"], 1);
    t.evict_settled();
    t.evict_settled();
    assert_eq!(t.settled().held(), 4);
    // b/0 rewritten, heard (it comes back as a file of its own); a/1 rewritten unheard.
    t.event(&p("b/0"), Change::Replaced, c.at(20));
    let job = t.next_job(c.at(20)).unwrap();
    t.finish(&job.rel, copied(9), c.at(21));
    t.begin_sweep();
    for (k, ino) in [("a/0", 1), ("a/1", 7), ("b/0", 9), ("b/1", 4)] {
        t.scanned(&p(k), ident(ino), c.at(30));
    }
    let mut back = folders(t.end_sweep(c.at(30)));
    back.sort();
    assert_eq!(back, vec![p("a"), p("b")], "both records fail");
    assert_eq!(t.counts().unheard, 1, "only a's change was missed by the events");
    // Settled again, then c's folder changes unheard: counted once more, on top.
    copy_all(&mut t, &c, &["c/0"], 20);
    t.evict_settled();
    t.evict_settled();
    t.begin_sweep();
    t.scanned(&p("b/0"), ident(9), c.at(40));
    t.scanned(&p("c/0"), ident(21), c.at(40));
    t.end_sweep(c.at(40));
    assert_eq!(t.counts().unheard, 2);
}

#[test]
fn outside_a_sweep_a_file_found_in_a_settled_folder_is_copied() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0"], 1);
    t.evict_settled();
    t.evict_settled();
    // A new folder's listing (Windows) or an abandoned sweep: no record decides, the file is looked at.
    t.scanned(&p("a/1"), ident(2), c.at(10));
    assert_eq!(drain(&mut t, c.at(10)), vec![p("a/1")]);
    t.begin_sweep();
    t.abandon_sweep();
    t.scanned(&p("a/2"), ident(3), c.at(11));
    assert_eq!(drain(&mut t, c.at(11)), vec![p("a/2")]);
}

#[test]
fn a_settled_file_written_or_deleted_again_comes_back_as_new() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1"], 1);
    t.evict_settled();
    t.evict_settled();
    t.event(&p("a/0"), Change::Replaced, c.at(10));
    t.event(&p("a/1"), Change::Removed, c.at(10));
    let mut again = jobs(&mut t, c.at(10));
    again.sort_by(|a, b| a.rel.cmp(&b.rel));
    assert_eq!(
        again.iter().map(|j| (j.rel.clone(), j.prev)).collect::<Vec<_>>(),
        vec![(p("a/0"), Prev::Unknown), (p("a/1"), Prev::Unknown)]
    );
    // A folder removed: its record goes, its copies stay counted (the end walks the destination).
    t.removed_tree(&p("a"), c.at(11));
    assert_eq!((t.settled().folders(), t.copied_count()), (0, 2));
}

#[test]
fn hot_keys_and_metadata_stay_in_memory_and_a_relisted_file_is_looked_at_first() {
    let (mut t, c) = setup();
    copy_all(&mut t, &c, &["a/0", "a/1", "a/.zarray", "zarr.json"], 1);
    t.evict_settled();
    t.evict_settled();
    assert_eq!(t.settled().held(), 2, "metadata is rewritten all along: never let go");
    // a/0 comes back with a new version: its next copy makes it a hot key, kept from then on.
    t.event(&p("a/0"), Change::Replaced, c.at(10));
    assert_eq!(drain(&mut t, c.at(10)), vec![p("a/0")]);
    t.finish(&p("a/0"), copied(9), c.at(11));
    t.evict_settled();
    t.evict_settled();
    assert_eq!(t.copied_identity(&p("a/0")), Some(ident(9)));
    // A file listed again after its folder's record failed: its copy is looked at before any new one.
    t.relisted(&p("a/1"), c.at(20));
    assert_eq!(jobs(&mut t, c.at(20)).iter().map(|j| j.prev).collect::<Vec<_>>(), vec![Prev::Settled]);
}

#[test]
fn a_scan_never_erases_a_write_heard_without_its_close() {
    // Invariant 4 without a lease: a chunk heard written, its close never heard (the writer holds
    // it open, idle), is not taken as closed by the final reconcile's find; only its close, or
    // events known lost, end that. One found open by a look (Busy) is looked at again by a find.
    let (t, c) = setup();
    let mut t = t.with_close_events(true);
    t.event(&p("c/0"), Change::Created, c.at(0));
    t.event(&p("c/0"), Change::Modified, c.at(1));
    t.event(&p("c/0"), Change::Found, c.at(2));
    assert!(drain(&mut t, c.at(500)).is_empty(), "a find does not end a write heard");
    assert_eq!(t.writing_files(), vec![p("c/0")]);
    t.events_lost();
    t.event(&p("c/0"), Change::Found, c.at(600));
    assert_eq!(drain(&mut t, c.at(600)), vec![p("c/0")], "once events were lost, a find may look");
    t.finish(&p("c/0"), Outcome::Busy, c.at(601));
    t.event(&p("c/0"), Change::Found, c.at(700));
    assert_eq!(drain(&mut t, c.at(700)), vec![p("c/0")], "found open by a look: looked at again");
}

#[test]
fn what_was_copied_is_listed_with_its_version_and_hash_and_nothing_else() {
    // The mover frees exactly `copied_versions`, the manifest lists `copied_files`, and the
    // verdict names `not_copied`: each must be the tracker's own record, file by file.
    let (mut t, c) = setup();
    let hash: crate::vocab::Hash = [7; 16];
    t.event(&p("a"), Change::Replaced, c.at(0));
    t.event(&p("b"), Change::Replaced, c.at(0));
    t.event(&p("open"), Change::Modified, c.at(0));
    assert_eq!(drain(&mut t, c.at(0)).len(), 2);
    t.finish(&p("a"), Outcome::Copied { ident: ident(1), bytes: 10, hash: Some(hash) }, c.at(1));
    t.finish(&p("b"), copied(2), c.at(1));
    let versions: Vec<_> = t.copied_versions().into_iter().map(|v| (v.rel, v.ident, v.hash)).collect();
    assert_eq!(versions, vec![(p("a"), ident(1), Some(hash)), (p("b"), ident(2), None)]);
    let files: Vec<_> = t.copied_files().map(|(rel, size, hash)| (rel.to_path_buf(), size, hash)).collect();
    assert_eq!(files, vec![(p("a"), 10, Some(hash)), (p("b"), 10, None)]);
    assert_eq!(t.not_copied(), vec![p("open")]);
}

#[test]
fn a_hash_speaks_only_for_the_version_it_was_taken_of() {
    // The mover proves a copy by its hash: a hash kept for another version would fail a good copy,
    // and one dropped for the same version costs a read of the whole copy.
    let (mut t, c) = setup();
    let hash: crate::vocab::Hash = [7; 16];
    t.event(&p("k"), Change::Replaced, c.at(0));
    t.next_job(c.at(0));
    t.finish(&p("k"), Outcome::Copied { ident: ident(1), bytes: 10, hash: Some(hash) }, c.at(1));
    let hash_of = |t: &Tracker| t.copied_versions()[0].hash;
    t.event(&p("k"), Change::Found, c.at(2));
    t.next_job(c.at(2));
    t.finish(&p("k"), Outcome::Unchanged(ident(1)), c.at(3));
    assert_eq!(hash_of(&t), Some(hash), "the same version: its hash stands");
    t.event(&p("k"), Change::Found, c.at(4));
    t.next_job(c.at(4));
    t.finish(&p("k"), Outcome::Unchanged(ident(2)), c.at(5));
    assert_eq!(hash_of(&t), None, "found copied at another version (an earlier run's): no hash");
}

#[test]
fn a_file_closed_after_it_was_queued_waits_to_settle() {
    // Queued by a find, then written and closed before a worker took it: it is due `settle` after
    // the close, not at once from its old place in the queue.
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Found, c.at(0));
    t.event(&p("k"), Change::Modified, c.at(1));
    t.event(&p("k"), Change::ClosedWrite, c.at(2));
    assert!(drain(&mut t, c.at(3)).is_empty(), "not settled yet");
    assert_eq!(drain(&mut t, c.at(102)), vec![p("k")]);
}

#[test]
fn a_debounced_new_version_needs_no_check_for_writers() {
    // A rename is a whole version however long it waited for further ones: no writer to check
    // for, whether or not closes are reported.
    for closes in [true, false] {
        let mut t = Tracker::new(Duration::from_millis(100), Duration::from_millis(50)).with_close_events(closes);
        let c = Clock(Instant::now());
        t.event(&p("shard"), Change::Replaced, c.at(0));
        t.next_job(c.at(0));
        t.finish(&p("shard"), copied(1), c.at(1));
        t.event(&p("shard"), Change::Replaced, c.at(10));
        let job = t.next_job(c.at(60)).expect("after its debounce");
        assert!(!job.verify_closed, "closes reported: {closes}");
    }
}

#[test]
fn changes_back_off_doubling_from_100_ms_up_to_6_4_s() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        let job = t.next_job(c.at(now)).expect("due");
        t.finish(&job.rel, Outcome::Changed, c.at(now));
        let wait = t.next_deadline().map_or(0, |d| (d - c.at(now)).as_millis() as u64);
        waits.push(wait);
        now += wait;
    }
    assert_eq!(waits, vec![0, 100, 200, 400, 800, 1600, 3200, 6400, 6400, 6400], "the first at once");
}

#[test]
fn failures_back_off_doubling_from_200_ms() {
    let (mut t, c) = setup();
    t.event(&p("k"), Change::Replaced, c.at(0));
    let mut now = 0;
    let mut waits = Vec::new();
    while let Some(job) = t.next_job(c.at(now)) {
        t.finish(&job.rel, Outcome::Failed("refused".into()), c.at(now));
        let wait = t.next_deadline().map_or(0, |d| (d - c.at(now)).as_millis() as u64);
        waits.push(wait);
        now += wait;
    }
    assert_eq!(waits, vec![200, 400, 800, 1600, 3200, 0], "then given up");
}

#[test]
fn the_status_counts_files_waiting_in_flight_and_being_written() {
    let (mut t, c) = setup();
    assert_eq!((t.backlog(), t.in_flight(), t.writing()), (0, 0, 0));
    for k in ["a", "b", "c"] {
        t.event(&p(k), Change::Replaced, c.at(0));
    }
    t.event(&p("w1"), Change::Modified, c.at(0));
    t.event(&p("w2"), Change::Modified, c.at(0));
    assert_eq!((t.backlog(), t.in_flight(), t.writing()), (3, 0, 2));
    t.next_job(c.at(0));
    t.next_job(c.at(0));
    assert_eq!((t.backlog(), t.in_flight(), t.writing()), (1, 2, 2));
}

/// Each job handed out now answered with a copy (inode `ino` onwards).
fn copy_due(t: &mut Tracker, now: Instant, ino: u64) {
    for (i, rel) in drain(t, now).into_iter().enumerate() {
        t.finish(&rel, copied(ino + i as u64), now);
    }
}

#[test]
fn a_file_only_the_walk_found_leaves_memory_once_copied_and_one_heard_of_waits() {
    let (mut t, c) = setup();
    t.walk_started();
    t.walked(&p("a/0"), c.at(0));
    t.walked(&p("a/1"), c.at(0));
    t.walked(&p("a/zarr.json"), c.at(0));
    // Heard written after the walk listed it: the quiet period is for such files.
    t.event(&p("a/1"), Change::Replaced, c.at(1));
    copy_due(&mut t, c.at(2), 1);
    let let_go: Vec<bool> = ["a/0", "a/1", "a/zarr.json"].iter().map(|f| t.let_go_walked(&p(f))).collect();
    assert_eq!(let_go, [true, false, false], "metadata is rewritten at each resize: it stays");
    assert_eq!((t.files.len(), t.settled().held(), t.copied_count()), (2, 1, 3));
    // The next file the walk lists in that folder is new, not a settled one back: not a hot key.
    t.walked(&p("a/2"), c.at(3));
    copy_due(&mut t, c.at(3), 10);
    assert!(t.let_go_walked(&p("a/2")));
    assert_eq!((t.counts().redundant, t.settled().held()), (0, 2));
    // A file the tracker holds is left to what it heard: the walk's listing adds nothing.
    t.event(&p("b/0"), Change::Modified, c.at(4));
    t.walked(&p("b/0"), c.at(4));
    assert!(drain(&mut t, c.at(5)).is_empty() && t.writing_files() == vec![p("b/0")]);
}

#[test]
fn a_sweep_during_the_walk_leaves_what_it_has_not_listed_to_it_then_sweeps_again() {
    let (mut t, c) = setup();
    t.walk_started();
    t.walked(&p("a/0"), c.at(0));
    copy_due(&mut t, c.at(0), 1);
    t.begin_sweep();
    assert_eq!(t.scanned(&p("a/0"), ident(1), c.at(1)), Some(false));
    assert_eq!(t.scanned(&p("b/0"), ident(2), c.at(1)), None, "not yet listed: the walk's");
    assert!(t.end_sweep(c.at(1)).is_empty());
    assert_eq!((t.files.len(), t.counts().unheard, t.backlog()), (1, 0, 0), "nothing materialised");
    assert!(t.walk_ended(), "a sweep left files to the walk: the source is swept again");
    t.begin_sweep();
    assert_eq!(t.scanned(&p("b/0"), ident(2), c.at(2)), Some(true), "the walk is over: found");
    t.end_sweep(c.at(2));
    assert!(!t.walk_ended());
}

#[test]
fn a_close_heard_before_the_walk_lists_the_file_does_not_keep_it_from_its_copy() {
    let (mut t, c) = setup();
    t.walk_started();
    // The walk watched `a` and paused inside it, before `a/1`: the writer that wrote `a/1` before
    // the watch closes it only now (or a program opens it for writing and closes it unwritten).
    t.event(&p("a/1"), Change::ClosedWrite, c.at(0));
    t.walked(&p("a/1"), c.at(1));
    assert_eq!(drain(&mut t, c.at(1)), vec![p("a/1")], "listed, and nothing under way for it: copied");
    // A file heard written is still left to what it heard: its close makes it due.
    t.event(&p("a/2"), Change::Modified, c.at(2));
    t.walked(&p("a/2"), c.at(2));
    assert!(drain(&mut t, c.at(3)).is_empty());
}

#[test]
fn a_sweep_while_the_walk_is_inside_a_folder_with_a_record_leaves_its_unlisted_files_to_the_walk() {
    // The walk lists `a/0` and pauses inside `a` (the window is full); `a/0` is copied and let go.
    let (mut t, c) = walked_a_0_and_let_it_go();
    // Lost events: a sweep finds `a/0` as it was let go and `a/1`, which the walk has yet to list;
    // the record of `a` cannot tell one from the other.
    t.begin_sweep();
    assert_eq!(t.scanned(&p("a/0"), ident(1), c.at(1)), None, "the walk may still list `a`");
    assert_eq!(t.scanned(&p("a/1"), ident(2), c.at(1)), None);
    assert_eq!(folders(t.end_sweep(c.at(1))), Vec::<PathBuf>::new(), "`a`'s record is not judged yet");
    assert_eq!((t.settled().held(), t.settled().exact(), t.counts().unheard), (1, true, 0));
    // The walk lists `a/1` and ends: the sweep after it judges the record, and finds what changed
    // unheard meanwhile.
    t.walked(&p("a/1"), c.at(2));
    assert!(t.walk_ended(), "the source is swept again after the walk");
    t.begin_sweep();
    assert_eq!(t.scanned(&p("a/0"), ident(9), c.at(3)), Some(false));
    t.scanned(&p("a/1"), ident(2), c.at(3));
    assert_eq!(folders(t.end_sweep(c.at(3))), vec![p("a")], "`a/0` changed unheard: its folder is listed again");
}

#[test]
fn a_walk_started_again_keeps_a_file_already_let_go_once() {
    let (mut t, c) = walked_a_0_and_let_it_go();
    // The root moved away and back: the walk starts again from the top and lists `a/0` again.
    t.walk_started();
    t.walked(&p("a/0"), c.at(1));
    for job in jobs(&mut t, c.at(1)) {
        // A resumed look: the very version is at the destination.
        t.finish(&job.rel, Outcome::Unchanged(ident(1)), c.at(1));
        t.let_go_walked(&job.rel);
    }
    assert!(!t.walk_ended());
    assert_eq!(t.settled().held(), 1, "`a/0` is held once");
    assert!(!t.settled().exact(), "the records given up: the end walks the destination");
    // The final sweep: nothing changed in `a`, and its record proves it.
    t.begin_sweep();
    assert_eq!(t.scanned(&p("a/0"), ident(1), c.at(2)), Some(false));
    assert_eq!(folders(t.end_sweep(c.at(2))), Vec::<PathBuf>::new());
    assert_eq!(t.counts().unheard, 0, "no file is said to have been missed");
}

/// A tracker whose paced walk listed `a/0` (inode 1), copied and let go into `a`'s record.
fn walked_a_0_and_let_it_go() -> (Tracker, Clock) {
    let (mut t, c) = setup();
    t.walk_started();
    t.walked(&p("a/0"), c.at(0));
    copy_due(&mut t, c.at(0), 1);
    assert!(t.let_go_walked(&p("a/0")));
    (t, c)
}
