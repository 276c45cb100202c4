//! The end steps on real folders: what is verified, when the marker is published or withdrawn,
//! what is freed (docs/design.md, "The end of a run").
use super::*;
use crate::end::verify::Landed;
use crate::vocab::Identity;
use std::fs;

/// A source with one data file and the marker, and a destination with a faithful copy of the file.
struct Run {
    src: tempfile::TempDir,
    dst: tempfile::TempDir,
    cfg: Config,
    sh: Shared,
    root: RootId,
}

impl Run {
    fn new() -> Run {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(src.path().join("a"), b"chunk").unwrap();
        fs::write(src.path().join("complete"), b"done").unwrap();
        copy(src.path(), dst.path(), "a");
        let cfg = Config::new(src.path(), dst.path());
        let root = RootId::default();
        root.adopt(src.path()).unwrap();
        Run { src, dst, cfg, sh: Shared::default(), root }
    }

    fn ident(&self, rel: &str) -> Identity {
        crate::sys::path_identity(&self.src.path().join(rel)).unwrap()
    }

    /// Runs the end steps with the expected file set given, this run's record of `a` and what the
    /// watch saw after the final look.
    fn conclude(&self, late: Late, gave_up: bool) -> (Phase, Verdict) {
        *lock(&self.sh.expected) = Some(Expected::default());
        let a = self.ident("a");
        let copied = |rel: &Path| (rel == Path::new("a")).then_some(a);
        let records = Landed { copied: &copied, settled: None, count: 1 };
        let late = std::cell::RefCell::new(Some(late));
        let late = || late.borrow_mut().take().expect("asked once");
        let dest = crate::dest::Dest::at(self.dst.path());
        let versions = vec![Copied { rel: "a".into(), ident: a, hash: None }];
        end_freeing(self, &self.sh, &dest, records, &late, versions, gave_up)
    }

    fn marker_at_destination(&self) -> bool {
        self.dst.path().join("complete").exists()
    }
}

fn copy(src: &Path, dst: &Path, rel: &str) {
    fs::copy(src.join(rel), dst.join(rel)).unwrap();
    let mtime = fs::metadata(src.join(rel)).unwrap().modified().unwrap();
    fs::File::options().write(true).open(dst.join(rel)).unwrap().set_modified(mtime).unwrap();
}

fn quiet() -> Late {
    Late { moved: Vec::new(), lost: false }
}

/// Runs the end steps of `run` on `dest`, with the expected file set already given to `sh`.
fn end(
    run: &Run,
    sh: &Shared,
    dest: &crate::dest::Dest,
    records: Landed<'_>,
    late: &dyn Fn() -> Late,
) -> (Phase, Verdict) {
    end_freeing(run, sh, dest, records, late, Vec::new(), false)
}

fn end_freeing(
    run: &Run,
    sh: &Shared,
    dest: &crate::dest::Dest,
    records: Landed<'_>,
    late: &dyn Fn() -> Late,
    copied: Vec<Copied>,
    gave_up: bool,
) -> (Phase, Verdict) {
    let d = Drained {
        cfg: &run.cfg,
        sh,
        src: run.src.path(),
        dest,
        root: &run.root,
        copied,
        landed: None,
        records,
        gave_up,
        late,
    };
    conclude(d)
}

#[test]
fn a_whole_copy_is_verified_and_its_marker_published_last() {
    let run = Run::new();
    let (phase, v) = run.conclude(quiet(), false);
    assert_eq!(phase, Phase::Verified, "{:?}", v.reason);
    assert!(v.verified && v.marker_published && v.reason.is_none());
    assert_eq!(fs::read(run.dst.path().join("complete")).unwrap(), b"done");
    assert_eq!(lock(&run.sh.status).phase, Phase::Publishing, "freeing only with --delete-source");
    assert!(!lock(&run.sh.status).wants_expected, "the expected set was taken");
}

#[test]
fn without_a_marker_at_the_source_none_is_published() {
    let run = Run::new();
    fs::remove_file(run.src.path().join("complete")).unwrap();
    let (phase, v) = run.conclude(quiet(), false);
    assert_eq!(phase, Phase::Verified);
    assert!(v.verified && !v.marker_published);
}

#[test]
fn a_copy_missing_or_unaccounted_for_publishes_no_marker() {
    let run = Run::new();
    fs::remove_file(run.dst.path().join("a")).unwrap();
    let (phase, v) = run.conclude(quiet(), false);
    assert_eq!(phase, Phase::Incomplete);
    assert_eq!(v.report.missing, vec![PathBuf::from("a")]);
    assert!(!v.verified && !v.marker_published && !run.marker_at_destination());
    // Whole, but the metadata of an array could not be read: its chunks are not accounted for.
    let run = Run::new();
    let unreadable = Expected { arrays: Vec::new(), unreadable: vec![("zarr.json".into(), "bad json".into())] };
    let (phase, v) = conclude_with(&run, unreadable);
    assert_eq!(phase, Phase::Incomplete);
    assert!(v.reason.unwrap().contains("zarr.json (bad json)"));
    assert!(!run.marker_at_destination());
}

/// [`Run::conclude`] with another expected file set.
fn conclude_with(run: &Run, expected: Expected) -> (Phase, Verdict) {
    let sh = Shared::default();
    *lock(&sh.expected) = Some(expected);
    let records = Landed { copied: &|_| None, settled: None, count: 0 };
    end(run, &sh, &crate::dest::Dest::at(run.dst.path()), records, &quiet)
}

#[test]
fn a_destination_given_up_on_is_not_verified() {
    let run = Run::new();
    let (phase, v) = run.conclude(quiet(), true);
    assert_eq!(phase, Phase::Incomplete);
    assert!(v.reason.unwrap().starts_with("gave up"));
    assert!(!run.marker_at_destination());
}

#[test]
fn a_change_seen_after_the_final_look_withdraws_the_marker() {
    let run = Run::new();
    let (phase, v) = run.conclude(Late { moved: vec!["a".into()], lost: false }, false);
    assert_eq!(phase, Phase::Incomplete);
    assert!(!v.verified && !v.marker_published && !run.marker_at_destination());
    assert_eq!((v.not_copied, v.not_copied_why), (vec![PathBuf::from("a")], NotCopied::ChangedLate));
}

#[test]
fn with_events_lost_after_the_final_look_the_source_is_looked_at_again() {
    // Nothing changed: the look proves it, the marker stands.
    let run = Run::new();
    let (phase, v) = run.conclude(Late { moved: Vec::new(), lost: true }, false);
    assert_eq!(phase, Phase::Verified, "{:?}", v.reason);
    assert!(run.marker_at_destination());
    // A file added since (unheard): the source is not what was copied, the marker is withdrawn.
    let run = Run::new();
    fs::write(run.src.path().join("b"), b"late").unwrap();
    copy(run.src.path(), run.dst.path(), "b");
    let (phase, v) = run.conclude(Late { moved: Vec::new(), lost: true }, false);
    assert_eq!(phase, Phase::Incomplete);
    assert_eq!(v.not_copied, vec![PathBuf::new()], "the root stands for what changed");
    assert!(!run.marker_at_destination());
}

#[test]
fn delete_source_frees_what_is_proven_and_the_marker_last() {
    let mut run = Run::new();
    run.cfg.delete_source = true;
    run.cfg.quiet = Duration::ZERO;
    let (phase, v) = run.conclude(quiet(), false);
    assert_eq!(phase, Phase::Verified, "{:?}", v.reason);
    let freed = v.freed.expect("the mover ran");
    assert_eq!(freed.deleted, vec![PathBuf::from("a"), PathBuf::from("complete")]);
    assert!(!run.src.path().join("a").exists() && run.dst.path().join("a").exists());
    assert_eq!(lock(&run.sh.status).phase, Phase::Freeing);
}

#[test]
fn delete_source_with_a_copy_that_differs_publishes_nothing_and_frees_nothing() {
    let mut run = Run::new();
    run.cfg.delete_source = true;
    let mtime = fs::metadata(run.dst.path().join("a")).unwrap().modified().unwrap();
    fs::write(run.dst.path().join("a"), b"chunK").unwrap();
    fs::File::options().write(true).open(run.dst.path().join("a")).unwrap().set_modified(mtime).unwrap();
    let (phase, v) = run.conclude(quiet(), false);
    assert_eq!(phase, Phase::Incomplete);
    assert_eq!(v.report.content_mismatch, vec![PathBuf::from("a")]);
    assert!(v.freed.is_none() && run.src.path().join("a").exists() && !run.marker_at_destination());
}

#[test]
fn a_stop_before_the_end_steps_publishes_nothing() {
    let run = Run::new();
    run.sh.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (phase, v) = run.conclude(quiet(), false);
    assert_eq!(phase, Phase::Stopped);
    assert!(!v.verified && !run.marker_at_destination());
}

#[test]
fn files_open_at_the_end_are_looked_at_every_second_until_the_bound() {
    let sh = Shared::default();
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut open = OpenAtEnd::default();
    let bound = Duration::from_secs(5);
    assert!(matches!(open.decide(&[], bound, at(0), &sh), OpenWait::None));
    let files = [PathBuf::from("log")];
    assert!(matches!(open.decide(&files, bound, at(0), &sh), OpenWait::LookAgain));
    assert!(matches!(open.decide(&files, bound, at(500), &sh), OpenWait::Wait));
    assert_eq!(open.wake(at(500)), Some(at(1000)));
    assert_eq!(open.wake(at(1000)), None, "never a time already past");
    assert!(matches!(open.decide(&files, bound, at(1000), &sh), OpenWait::LookAgain));
    assert!(matches!(open.decide(&files, bound, at(4999), &sh), OpenWait::LookAgain));
    assert!(matches!(open.decide(&files, bound, at(5000), &sh), OpenWait::TooLong));
    let said = sh.take_messages();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    let (phase, v) = still_open(&Config::new("s", "d"), &sh, files.to_vec());
    assert_eq!((phase, v.not_copied, v.not_copied_why), (Phase::Incomplete, files.to_vec(), NotCopied::StillOpen));
    assert!(v.reason.unwrap().starts_with("1 files were still open"));
}

#[test]
fn the_manifest_lists_every_copy_with_its_hash() {
    let (dst, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(dst.path().join("b"), b"earlier run's copy").unwrap();
    let mut t = Tracker::new(Duration::ZERO, Duration::ZERO);
    let now = Instant::now();
    let ident = Identity { dev: 1, ino: 1, size: 5, mtime_ns: 0, ctime_ns: 0 };
    for (rel, hash) in [("a", Some([7; 16])), ("b", None)] {
        t.event(Path::new(rel), crate::vocab::Change::Replaced, now);
        let job = t.next_job(now).unwrap();
        t.finish(&job.rel, Outcome::Copied { ident, bytes: 5, hash }, now);
    }
    let path = out.path().join("manifest");
    write_manifest(&t, &crate::dest::Dest::at(dst.path()), &path, None, None).unwrap();
    let listed = crate::end::manifest::read(&path).unwrap();
    let b = crate::end::manifest::hex(&crate::end::manifest::hash_file(&dst.path().join("b")).unwrap());
    assert_eq!(listed, vec![("a".into(), 5, crate::end::manifest::hex(&[7; 16])), ("b".into(), 5, b)]);
}

#[test]
fn the_marker_is_withdrawn_when_the_run_is_not_verified() {
    let run = Run::new();
    fs::write(run.dst.path().join("complete"), b"done").unwrap();
    let dest = crate::dest::Dest::at(run.dst.path()).view(Some("complete")).unwrap();
    drop(Unverified::new(&dest, &run.sh));
    assert!(!run.marker_at_destination());
    fs::write(run.dst.path().join("complete"), b"done").unwrap();
    let dest = crate::dest::Dest::at(run.dst.path()).view(Some("complete")).unwrap();
    Unverified::new(&dest, &run.sh).verified();
    assert!(run.marker_at_destination());
}

#[test]
fn a_destination_that_cannot_be_reached_is_waited_for_then_given_up_on() {
    let mut run = Run::new();
    run.cfg.give_up_after = Duration::from_millis(300);
    let dst = run.dst.path().to_path_buf();
    let dest = crate::dest::Dest::at(&dst);
    fs::remove_dir_all(&dst).unwrap();
    *lock(&run.sh.expected) = Some(Expected::default());
    let records = Landed { copied: &|_| None, settled: None, count: 0 };
    let (phase, v) = end(&run, &run.sh, &dest, records, &quiet);
    assert_eq!(phase, Phase::Incomplete);
    assert!(v.reason.as_deref().is_some_and(|r| r.starts_with("cannot verify: gave up: destination")), "{v:?}");
    let waiting: Vec<_> = run.sh.take_messages().into_iter().filter(|(_, m)| m.contains("waiting for it")).collect();
    assert_eq!(waiting.len(), 1, "said once: {waiting:?}");
    assert_eq!(lock(&run.sh.status).destination_trouble, None, "the trouble is over once the run ends");
}

/// A run whose source file `rel` (copied, with `a`) is deleted unheard after the final look (events
/// lost), with `arrays` expected.
fn deleted_after_the_final_look(rel: &str, arrays: Vec<crate::end::verify::ArraySpec>) -> (Run, Phase) {
    let run = Run::new();
    fs::write(run.src.path().join(rel), b"chunk").unwrap();
    copy(run.src.path(), run.dst.path(), rel);
    let (a, other) = (run.ident("a"), run.ident(rel));
    let copied = |p: &Path| [("a", a), (rel, other)].into_iter().find(|(k, _)| p == Path::new(k)).map(|(_, i)| i);
    let sh = Shared::default();
    *lock(&sh.expected) = Some(Expected { arrays, unreadable: Vec::new() });
    let dest = crate::dest::Dest::at(run.dst.path());
    let gone = run.src.path().join(rel);
    let late = move || {
        fs::remove_file(&gone).unwrap();
        Late { moved: Vec::new(), lost: true }
    };
    let (phase, _) = end(&run, &sh, &dest, Landed { copied: &copied, settled: None, count: 2 }, &late);
    (run, phase)
}

#[test]
fn the_look_after_lost_events_prunes_nothing() {
    // A chunk deleted unheard: the look finds the source changed and withdraws the marker, and
    // prunes no copy (the marker stood over it).
    let array = crate::end::verify::ArraySpec {
        path: String::new(),
        shape: vec![4],
        grid: vec![1],
        prefix: None,
        separator: '.',
        shard: None,
    };
    let (run, phase) = deleted_after_the_final_look("0", vec![array]);
    assert_eq!(phase, Phase::Incomplete);
    assert!(!run.marker_at_destination());
    assert!(run.dst.path().join("0").exists(), "nothing is pruned once the marker stood");
}

#[test]
fn a_file_deleted_unheard_after_the_final_look_withdraws_the_marker() {
    // Not a chunk (so not stale): only the count of files tells the source is not what was copied.
    let (run, phase) = deleted_after_the_final_look("notes", Vec::new());
    assert_eq!(phase, Phase::Incomplete);
    assert!(!run.marker_at_destination());
}

/// `deleted_after_the_final_look` where a settled record was given up during the run: the count
/// of copies is then a bound (a copy found again is counted twice), not the number of files.
fn after_a_record_given_up(change: fn(&Path)) -> (Run, Phase) {
    after_a_record_given_up_beside(&[], change)
}

/// `after_a_record_given_up` where `change` is made to the destination's copy of `notes`.
fn after_a_record_given_up_then_at_the_destination(change: fn(&Path)) -> (Run, Phase) {
    after_a_record_given_up_at(&[], change, true)
}

/// `after_a_record_given_up` with `extra` at the destination before the run (copies of files
/// deleted while no run watched, not chunks: extras, never pruned).
fn after_a_record_given_up_beside(extra: &[&str], change: fn(&Path)) -> (Run, Phase) {
    after_a_record_given_up_at(extra, change, false)
}

fn after_a_record_given_up_at(extra: &[&str], change: fn(&Path), at_destination: bool) -> (Run, Phase) {
    let run = Run::new();
    for name in extra {
        fs::write(run.dst.path().join(name), b"deleted before this run").unwrap();
    }
    fs::write(run.src.path().join("notes"), b"notes").unwrap();
    copy(run.src.path(), run.dst.path(), "notes");
    let (a, notes) = (run.ident("a"), run.ident("notes"));
    let copied = |p: &Path| [("a", a), ("notes", notes)].into_iter().find(|(k, _)| p == Path::new(k)).map(|(_, i)| i);
    let mut settled = crate::track::settled::Settled::default();
    settled.keep(std::ffi::OsStr::new("notes"), &notes);
    settled.removed_tree(Path::new("")); // its folder reopened: "notes" is counted as lost, and found again
    let sh = Shared::default();
    *lock(&sh.expected) = Some(Expected::default());
    let dest = crate::dest::Dest::at(run.dst.path());
    let gone = if at_destination { run.dst.path() } else { run.src.path() }.join("notes");
    let late = move || {
        change(&gone);
        Late { moved: Vec::new(), lost: true }
    };
    let records = Landed { copied: &copied, settled: Some(&settled), count: 3 };
    let (phase, _) = end(&run, &sh, &dest, records, &late);
    (run, phase)
}

#[test]
fn events_lost_at_the_end_after_a_settled_record_was_given_up_still_verify_an_unchanged_source() {
    // Found by the model test, one run in five: "the source changed after it was verified" for a
    // source that had not changed, the count of copies taken for the number of files.
    let (run, phase) = after_a_record_given_up(|_| {});
    assert_eq!(phase, Phase::Verified);
    assert!(run.marker_at_destination());
}

#[test]
fn events_lost_at_the_end_after_a_settled_record_was_given_up_still_tell_a_deletion() {
    let (run, phase) = after_a_record_given_up(|p| fs::remove_file(p).unwrap());
    assert_eq!(phase, Phase::Incomplete);
    assert!(!run.marker_at_destination());
}

#[test]
fn events_lost_at_the_end_after_a_settled_record_was_given_up_still_tell_a_file_that_became_a_folder_or_a_link() {
    // The source's `notes` is no longer a file: the copy (a file) does not describe it, as a copy
    // of a file deleted does not; the verification's walk finds a name there and asks no more.
    let became_a_folder: fn(&Path) = |p| {
        fs::remove_file(p).unwrap();
        fs::create_dir(p).unwrap();
    };
    let became_a_link: fn(&Path) = |p| {
        fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink("a", p).unwrap();
    };
    for change in [became_a_folder, became_a_link] {
        let (run, phase) = after_a_record_given_up(change);
        assert_eq!(phase, Phase::Incomplete);
        assert!(!run.marker_at_destination());
    }
}

#[test]
fn events_lost_at_the_end_do_not_take_an_extra_already_there_at_verification_for_a_change() {
    // Found by the model test: with a record given up, the look after lost events walks the
    // destination, and took the copy of a file deleted before the run (an extra at verification
    // too, kept there) for a file deleted since: "changed at the source after it was verified".
    let (run, phase) = after_a_record_given_up_beside(&["old"], |_| {});
    assert_eq!(phase, Phase::Verified);
    assert!(run.marker_at_destination());
}

#[test]
fn events_lost_at_the_end_still_tell_a_rewrite_that_kept_the_size_and_mtime() {
    // The look at size and mtime passes; the file's own identity (its ctime) does not.
    let rewritten: fn(&Path) = |p| {
        let mtime = fs::metadata(p).unwrap().modified().unwrap();
        fs::write(p, b"NOTES").unwrap();
        fs::File::options().write(true).open(p).unwrap().set_modified(mtime).unwrap();
    };
    let (run, phase) = after_a_record_given_up(rewritten);
    assert_eq!(phase, Phase::Incomplete);
    assert!(!run.marker_at_destination());
}

#[test]
fn events_lost_at_the_end_with_a_record_given_up_tell_a_copy_gone_since() {
    // The count is only a bound there: the destination is walked, and a copy missing now is no
    // copy to stand a marker on.
    let (run, phase) = after_a_record_given_up_then_at_the_destination(|p| fs::remove_file(p).unwrap());
    assert_ne!(phase, Phase::Verified);
    assert!(!run.marker_at_destination());
}

#[test]
fn events_lost_at_the_end_still_tell_a_deletion_beside_an_extra_already_there() {
    let (run, phase) = after_a_record_given_up_beside(&["old"], |p| fs::remove_file(p).unwrap());
    assert_eq!(phase, Phase::Incomplete);
    assert!(!run.marker_at_destination());
}
