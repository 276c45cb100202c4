use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::*;
use crate::vocab::Job;

/// Jobs handed out, to the test instead of to workers.
struct Handed(Sender<Job>);

impl Workers for Handed {
    fn submit(&self, job: Job) {
        self.0.send(job).unwrap();
    }
}

/// A source of three files, an empty destination, and a run with two workers that copies what
/// is there and ends (`--once`).
fn setup() -> (tempfile::TempDir, Config) {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    for name in ["a", "b", "c"] {
        fs::write(src.join(name), name).unwrap();
    }
    let mut cfg = Config::new(&src, &dst);
    cfg.nprocs = 2;
    cfg.once = true;
    cfg.back_off = false;
    (t, cfg)
}

fn copied(src: &Path, rel: &Path, begun: Instant) -> Done {
    let ident = crate::sys::path_identity(&src.join(rel)).unwrap();
    Done { rel: rel.to_path_buf(), outcome: Outcome::Copied { ident, bytes: ident.size, hash: None }, begun }
}

fn next(jobs: &Receiver<Job>) -> PathBuf {
    jobs.recv_timeout(Duration::from_secs(10)).expect("a job handed out").rel
}

/// Polls the status the loop publishes at every step, for at most 10 s.
fn published(sh: &Shared, what: &str, cond: impl Fn(&Status) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond(&lock(&sh.status)) {
        assert!(Instant::now() < deadline, "never published: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_copy_begun_before_the_destination_failed_does_not_end_its_trouble_only_a_probe_does() {
    let (_t, cfg) = setup();
    let sh = Shared::default();
    let ControlFlow::Continue(opened) = open(&cfg, &sh).unwrap() else { panic!("the run opens") };
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let (mut watcher, _) = Watcher::new(&opened.src, ev_tx).unwrap();
    let mut run = Run::new(&cfg, &sh, Instant::now(), &opened, Arc::default());
    let now = Instant::now();
    watcher.watch_tree(&opened.src, |rel| run.file_event(rel, Change::Found, now)).unwrap();
    let (jobs_tx, jobs) = crossbeam_channel::unbounded();
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let (_warn_tx, warn_rx) = crossbeam_channel::unbounded::<String>();
    let src = opened.src.clone();
    let end = std::thread::scope(|scope| {
        // The run is the coordinator thread's alone (not Send): the test's side runs beside it,
        // and stops the run if an assertion fails, so a failure never hangs the loop.
        let sh = &sh;
        let driver = scope.spawn(move || {
            let drive = || {
                // Two workers, two copies in flight.
                let before = Instant::now();
                let (first, second) = (next(&jobs), next(&jobs));
                // The first finds the destination full; the second, begun before that, lands in
                // the room the first's partial left.
                let full = Outcome::Unavailable("No space left on device (os error 28)".into());
                done_tx.send(Done { rel: first.clone(), outcome: full, begun: before }).unwrap();
                done_tx.send(copied(&src, &second, before)).unwrap();
                published(sh, "the second copy", |s| s.files_copied == 1);
                assert!(lock(&sh.status).destination_trouble.is_some(), "a copy begun before proves nothing");
                // One probe at a time while the trouble lasts, never both workers.
                let probe = next(&jobs);
                assert!(jobs.recv_timeout(Duration::from_millis(300)).is_err(), "a second job beside the probe");
                done_tx.send(copied(&src, &probe, Instant::now())).unwrap();
                published(sh, "the trouble over", |s| s.destination_trouble.is_none());
                let last = next(&jobs);
                done_tx.send(copied(&src, &last, Instant::now())).unwrap();
                let mut rels = vec![second, probe, last];
                rels.sort();
                assert_eq!(rels, [PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c")]);
                assert!(rels.contains(&first), "the failed copy is tried again");
            };
            let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(drive));
            if driven.is_err() {
                sh.stop.store(true, Ordering::Relaxed);
            }
            driven
        });
        let end = run.copy_loop(&Handed(jobs_tx), &mut watcher, &ev_rx, &done_rx, &warn_rx);
        if let Err(panic) = driver.join().unwrap() {
            std::panic::resume_unwind(panic);
        }
        end
    });
    assert!(matches!(end, LoopEnd::Drained), "then drained");
    assert!(!sh.stop.load(Ordering::Relaxed));
}

#[test]
fn a_tree_waiting_to_be_copied_holds_no_more_records_than_the_walks_window() {
    let (t, mut cfg) = setup();
    let src = t.path().join("src");
    for d in 0..30 {
        let folder = src.join(format!("t{d}"));
        fs::create_dir(&folder).unwrap();
        for f in 0..10 {
            fs::write(folder.join(f.to_string()), [d, f]).unwrap();
        }
    }
    cfg.nprocs = 1;
    let sh = Shared::default();
    let ControlFlow::Continue(opened) = open(&cfg, &sh).unwrap() else { panic!("the run opens") };
    let (mut run, mut watcher, ev_rx) = walking(&cfg, &sh, &opened, 8);
    let (end, most) = drive(&mut run, &mut watcher, &ev_rx, false, |jobs, done_tx| {
        // One worker: each job answered in turn, the records held looked at between.
        let mut most = 0;
        for copied_so_far in 0..303 {
            let job = next(jobs);
            done_tx.send(copied(&opened.src, &job, Instant::now())).unwrap();
            published(&sh, "the copy counted", |s| s.files_copied > copied_so_far);
            let s = lock(&sh.status).clone();
            most = most.max(s.known - s.settled);
        }
        most
    });
    assert!(matches!(end, LoopEnd::Drained), "every file copied, then drained");
    // The window's files waiting, the one in flight, and the three at the root (metadata-free
    // `a`, `b`, `c` settle like any other): never the 303 of the tree.
    assert!(most <= 8 + 1, "{most} records held while the tree waited");
    assert_eq!(run.tracker.known(), 303);
}

#[test]
fn a_file_closed_before_the_paused_walk_lists_it_is_copied_while_the_run_is_live() {
    let (t, mut cfg) = setup();
    let src = t.path().join("src");
    for name in ["a", "b", "c"] {
        fs::remove_file(src.join(name)).unwrap();
    }
    fs::create_dir(src.join("d")).unwrap();
    for f in 0..10 {
        fs::write(src.join("d").join(f.to_string()), [f]).unwrap();
    }
    (cfg.nprocs, cfg.once) = (1, false);
    let sh = Shared::default();
    let ControlFlow::Continue(opened) = open(&cfg, &sh).unwrap() else { panic!("the run opens") };
    let (mut run, mut watcher, ev_rx) = walking(&cfg, &sh, &opened, 2);
    // The walk watched `d` and paused inside it: a file it has not listed, written before the
    // watch, is closed now (a program opens it for writing and closes it without a write).
    let listed: Vec<PathBuf> = run.tracker.pending().map(Path::to_path_buf).collect();
    let unlisted = (0..10).map(|f| Path::new("d").join(f.to_string())).find(|r| !listed.contains(r)).unwrap();
    drop(fs::OpenOptions::new().write(true).open(opened.src.join(&unlisted)).unwrap());
    // Its close is heard before the walk goes on (the loop could take either first).
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = FsEvent::File(unlisted.clone(), Change::ClosedWrite);
    loop {
        let raw = ev_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("its close heard");
        let mut evs = Vec::new();
        watcher::translate(&opened.src, raw, &mut evs);
        if evs.contains(&closed) {
            run.handle(closed, &mut watcher);
            break;
        }
    }
    let (end, handed) = drive(&mut run, &mut watcher, &ev_rx, true, |jobs, done_tx| {
        // Live (no marker, no end): every file of `d` is handed out, the closed one too.
        let mut handed = Vec::new();
        for _ in 0..10 {
            let job = next(jobs);
            done_tx.send(copied(&opened.src, &job, Instant::now())).unwrap();
            handed.push(job);
        }
        handed
    });
    assert!(handed.contains(&unlisted), "{} never copied: {handed:?}", unlisted.display());
    assert!(matches!(end, LoopEnd::Stopped));
}

/// A run of `cfg` whose paced walk took its first step, with at most `window` files waiting.
fn walking<'a>(
    cfg: &'a Config,
    sh: &'a Shared,
    opened: &Opened,
    window: usize,
) -> (Run<'a>, Watcher, Receiver<notify::Result<notify::Event>>) {
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let (mut watcher, _) = Watcher::new(&opened.src, ev_tx).unwrap();
    let mut run = Run::new(cfg, sh, Instant::now(), opened, Arc::default());
    run.walk_window = window;
    run.start_walk(&mut watcher).unwrap();
    run.walk_on(&mut watcher).unwrap();
    (run, watcher, ev_rx)
}

/// Runs the copy loop while `workers` answers its jobs beside it (the run is the coordinator
/// thread's alone, not Send); a failing `workers` stops the run, so a failure never hangs the
/// loop, and so does one that is done when `stop_after` (a live run has no end of its own).
fn drive<T: Send>(
    run: &mut Run<'_>,
    watcher: &mut Watcher,
    ev_rx: &Receiver<notify::Result<notify::Event>>,
    stop_after: bool,
    workers: impl FnOnce(&Receiver<Job>, &Sender<Done>) -> T + Send,
) -> (LoopEnd, T) {
    let (jobs_tx, jobs) = crossbeam_channel::unbounded();
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let (_warn_tx, warn_rx) = crossbeam_channel::unbounded::<String>();
    let sh = run.sh;
    std::thread::scope(|scope| {
        let driver = scope.spawn(move || {
            let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| workers(&jobs, &done_tx)));
            if driven.is_err() || stop_after {
                sh.stop.store(true, Ordering::Relaxed);
            }
            driven
        });
        let end = run.copy_loop(&Handed(jobs_tx), watcher, ev_rx, &done_rx, &warn_rx);
        match driver.join().unwrap() {
            Ok(t) => (end, t),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A run over `d/0`, `d/1` (and `setup`'s `a`, `b`, `c`), each copied and settled into its
/// folder's record, with `extra` beside the copies in `d`; then `d/0` deleted unheard (its event
/// lost) and the source reconciled. Returns the jobs the reconcile made.
fn settled_then_deleted_unheard(extra: &[&str]) -> Vec<PathBuf> {
    let (t, cfg) = setup();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir_all(dst.join("d")).unwrap();
    for name in ["d/0", "d/1"].iter().chain(extra) {
        fs::write(src.join(name), name).unwrap();
    }
    let sh = Shared::default();
    let ControlFlow::Continue(opened) = open(&cfg, &sh).unwrap() else { panic!("the run opens") };
    let mut run = Run::new(&cfg, &sh, Instant::now(), &opened, Arc::default());
    let now = Instant::now();
    for rel in ["a", "b", "c", "d/0", "d/1"] {
        run.file_event(PathBuf::from(rel), Change::Found, now);
    }
    while let Some(job) = run.tracker.next_job(now) {
        fs::copy(src.join(&job.rel), dst.join(&job.rel)).unwrap();
        run.tracker.finish(&job.rel, copied(&src, &job.rel, now).outcome, now);
    }
    for name in extra {
        fs::rename(src.join(name), dst.join(name)).unwrap(); // there, and never at the source
    }
    run.tracker.evict_settled();
    run.tracker.evict_settled();
    assert_eq!(run.tracker.settled().held(), 5, "every copy settled into its folder's record");
    fs::remove_file(src.join("d/0")).unwrap();
    assert!(matches!(run.reconcile(), Swept::Complete));
    std::iter::from_fn(|| run.tracker.next_job(now)).map(|job| job.rel).collect()
}

#[test]
fn a_settled_file_deleted_with_its_event_lost_is_mirrored_by_the_next_reconcile() {
    // Its folder's record fails, and the copies in `d` are the record's files: `d/0`'s deletion
    // is a job (its worker finds the source gone and removes the copy), not left to the end.
    let jobs = settled_then_deleted_unheard(&[]);
    assert!(jobs.contains(&PathBuf::from("d/0")), "the deletion of d/0 never mirrored live: {jobs:?}");
    // A person's note beside the copies: no proof that the copies are the record's, nothing
    // deleted live (the end prunes what it must).
    let jobs = settled_then_deleted_unheard(&["d/notes.txt"]);
    assert!(!jobs.contains(&PathBuf::from("d/0")), "{jobs:?}");
    assert!(!jobs.contains(&PathBuf::from("d/notes.txt")), "{jobs:?}");
}

#[test]
fn after_lost_events_the_next_rescan_watches_a_folder_made_meanwhile() {
    // A folder made while the queue overflowed has no watch (its creation was among the events
    // lost): what is put in it later is heard only once the rescan has watched it.
    let (t, cfg) = setup();
    let src = t.path().join("src");
    let sh = Shared::default();
    let ControlFlow::Continue(opened) = open(&cfg, &sh).unwrap() else { panic!("the run opens") };
    let (mut run, mut watcher, ev_rx) = walking(&cfg, &sh, &opened, 100);
    fs::create_dir(src.join("n")).unwrap();
    run.handle(FsEvent::Rescan, &mut watcher);
    while ev_rx.try_recv().is_ok() {} // the folder's own creation: lost
    assert!(run.keep_up(Instant::now(), &mut watcher).is_none(), "the loop goes on");
    fs::write(src.join("n/f"), b"f").unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut heard = Vec::new();
    while !heard.contains(&FsEvent::File(PathBuf::from("n/f"), Change::Created)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = ev_rx.recv_timeout(left) else { break };
        crate::source::watcher::translate(&src, event, &mut heard);
    }
    assert!(heard.contains(&FsEvent::File(PathBuf::from("n/f"), Change::Created)), "never heard: {heard:?}");
}

#[test]
fn the_final_look_waits_for_the_rescan_that_watches_every_folder_again() {
    // Lost events make a rescan due that watches every folder again; the final look, which
    // proves the end, comes after it (a folder unwatched then could change unheard after it).
    let (_t, cfg) = setup();
    let sh = Shared::default();
    let ControlFlow::Continue(opened) = open(&cfg, &sh).unwrap() else { panic!("the run opens") };
    let mut run = Run::new(&cfg, &sh, Instant::now(), &opened, Arc::default());
    let mut ending = Ending::default();
    run.finishing = true;
    run.watch_again = true;
    assert!(matches!(run.towards_the_end(&mut ending, Instant::now()), Next::Sleep));
    assert!(!ending.reconciled, "the final look came before the rescan");
    run.watch_again = false;
    assert!(matches!(run.towards_the_end(&mut ending, Instant::now()), Next::Again));
    assert!(ending.reconciled);
}
