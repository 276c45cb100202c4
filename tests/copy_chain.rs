//! The copy chain down every fallback path, on the real filesystem: each method must produce the
//! exact bytes, for empty, tiny, odd-sized and multi-step files.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use _softcopy::copy::{sync_file, CopyOptions};
use _softcopy::dest::Dest;
use _softcopy::sys::{copy_contents, CopyMethod, Learned};
use _softcopy::vocab::{Job, Outcome, Partial, Prev, PARTIAL_SUFFIX, STAGING};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

const SIZES: [usize; 5] = [0, 1, 4095, 1 << 20, (3 << 20) + 7];

#[test]
fn every_method_copies_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for method in [CopyMethod::Auto, CopyMethod::SendFile, CopyMethod::ReadWrite] {
        for (i, &len) in SIZES.iter().enumerate() {
            let data = pattern(len, i as u8);
            let (a, b) = (dir.path().join("a"), dir.path().join("b"));
            fs::write(&a, &data).unwrap();
            let no_stop = AtomicBool::new(false);
            let (from, to) = (File::open(&a).unwrap(), File::create(&b).unwrap());
            let learned = Learned::default();
            let n = copy_contents(&from, &to, len as u64, method, &learned, &no_stop).unwrap();
            assert_eq!(n as usize, len, "{method:?} {len}");
            assert_eq!(fs::read(&b).unwrap(), data, "{method:?} {len}");
        }
    }
}

/// The copy of one file, with no stop request.
fn sync(src: &Path, dst: &Path, job: &Job, opts: &CopyOptions) -> (Outcome, bool) {
    sync_with(src, &_softcopy::dest::Dest::open(dst, dst, None).unwrap(), job, opts)
}

/// [`sync`] to a destination given.
fn sync_with(src: &Path, dest: &_softcopy::dest::Dest, job: &Job, opts: &CopyOptions) -> (Outcome, bool) {
    // A file written a moment ago is copied once a tick of the clock has passed since (issue 12):
    // the wait asked for is waited, a few times at most.
    for _ in 0..5 {
        match sync_file(src, dest, job, opts, &AtomicBool::new(false)) {
            (Outcome::Unsettled(wait), _) if wait < std::time::Duration::from_secs(1) => std::thread::sleep(wait),
            done => return done,
        }
    }
    panic!("{} stayed unsettled", job.rel.display())
}

#[test]
fn a_stop_request_interrupts_a_copy_between_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::write(&a, pattern(1 << 20, 1)).unwrap();
    for method in [CopyMethod::Auto, CopyMethod::SendFile, CopyMethod::ReadWrite] {
        let stop = AtomicBool::new(true);
        let (from, to) = (File::open(&a).unwrap(), File::create(&b).unwrap());
        let err = copy_contents(&from, &to, 1 << 20, method, &Learned::default(), &stop).unwrap_err();
        assert_eq!(err.to_string(), "stopped", "{method:?}");
    }
}

fn job(rel: &str) -> Job {
    Job { rel: rel.into(), prev: Prev::Unknown, verify_closed: true, partial: Partial::Beside }
}

fn no_partials(dir: &Path) -> bool {
    walk(dir).iter().all(|p| !p.to_string_lossy().ends_with(PARTIAL_SUFFIX))
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn sync_file_copies_skips_and_deletes() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(src.path().join("c/0")).unwrap();
    fs::write(src.path().join("c/0/1"), b"chunk").unwrap();
    let opts = CopyOptions::default();

    // New file, into a directory that does not exist yet at the destination.
    let (outcome, copied) = sync(src.path(), dst.path(), &job("c/0/1"), &opts);
    let Outcome::Copied { ident, bytes: 5, .. } = outcome else { panic!("{outcome:?}") };
    assert!(copied);
    assert_eq!(fs::read(dst.path().join("c/0/1")).unwrap(), b"chunk");

    // The same version again: one stat, no copy.
    let again = sync(
        src.path(),
        dst.path(),
        &Job { rel: "c/0/1".into(), prev: Prev::Copied(ident), verify_closed: true, partial: Partial::Beside },
        &opts,
    )
    .0;
    assert_eq!(again, Outcome::Unchanged(ident));

    // A fresh process (prev = None) recognises the earlier copy by size and mtime: resume.
    assert_eq!(sync(src.path(), dst.path(), &job("c/0/1"), &opts).0, Outcome::Unchanged(ident));

    // Gone at the source: gone at the destination.
    fs::remove_file(src.path().join("c/0/1")).unwrap();
    assert_eq!(sync(src.path(), dst.path(), &job("c/0/1"), &opts).0, Outcome::Deleted);
    assert!(!dst.path().join("c/0/1").exists());
    assert!(no_partials(dst.path()));
}

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed_out_of_the_source_nor_the_destination() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"outside the source").unwrap();
    fs::create_dir(outside.path().join("dir")).unwrap();
    fs::write(outside.path().join("dir/k"), b"outside too").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), src.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), src.path().join("linkdir")).unwrap();
    for rel in ["link", "linkdir/k"] {
        let (outcome, _) = sync(src.path(), dst.path(), &job(rel), &CopyOptions::default());
        assert_eq!(outcome, Outcome::Skipped, "{rel}");
    }
    assert!(fs::read_dir(dst.path()).unwrap().next().is_none(), "nothing copied");

    // A symlinked folder placed in the destination is not written through either.
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dst.path().join("c")).unwrap();
    fs::create_dir_all(src.path().join("c/0")).unwrap();
    fs::write(src.path().join("c/0/0"), b"chunk").unwrap();
    let (outcome, _) = sync(src.path(), dst.path(), &job("c/0/0"), &CopyOptions::default());
    assert!(matches!(outcome, Outcome::Failed(ref m) if m.contains("symlink")), "{outcome:?}");
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none(), "nothing written outside");
}

#[cfg(unix)]
#[test]
fn an_existing_symlinked_folder_in_the_destination_is_not_written_nor_deleted_through() {
    // Issue 12, item 2: `dst/sub -> /elsewhere/archive` (an admin linking a big folder to another
    // volume). The link exists already, so no folder has to be created: every later open, link,
    // rename and unlink used to follow it.
    let (src, dst, archive) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(archive.path().join("f"), b"the archive's f").unwrap();
    fs::write(archive.path().join("g"), b"the archive's g").unwrap();
    std::os::unix::fs::symlink(archive.path(), dst.path().join("sub")).unwrap();
    fs::create_dir(src.path().join("sub")).unwrap();
    fs::write(src.path().join("sub/f"), b"a new f").unwrap();
    let (outcome, _) = sync(src.path(), dst.path(), &job("sub/f"), &CopyOptions::default());
    assert!(matches!(outcome, Outcome::Failed(ref m) if m.contains("symlink")), "{outcome:?}");
    // `sub/g` is gone at the source: its deletion is mirrored beneath the root only.
    let (outcome, _) = sync(src.path(), dst.path(), &job("sub/g"), &CopyOptions::default());
    assert!(matches!(outcome, Outcome::Failed(ref m) if m.contains("symlink")), "{outcome:?}");
    assert_eq!(fs::read(archive.path().join("f")).unwrap(), b"the archive's f");
    assert_eq!(fs::read(archive.path().join("g")).unwrap(), b"the archive's g");
    // The verification does not take the archive's file for the copy either.
    let dest = _softcopy::dest::Dest::open(dst.path(), dst.path(), None).unwrap();
    let check = _softcopy::end::verify::Check {
        marker: "complete",
        arrays: &[],
        content: false,
        prune: None,
        landed: None,
        exclude: None,
    };
    let r = _softcopy::end::verify::verify(src.path(), &dest, &check, &AtomicBool::new(false)).unwrap();
    assert_eq!(r.missing, vec![std::path::PathBuf::from("sub/f")]);
}

#[cfg(unix)]
#[test]
fn a_link_in_the_destination_is_kept_when_its_name_goes_away_at_the_source() {
    // Found by the model test: the source's folder `sub` removed (a writer's `overwrite=True`)
    // made its mirrored deletion unlink the admin's `dst/sub -> elsewhere`, and the next copy of
    // `sub/f` then made a real folder where the link was.
    let (src, dst, archive) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::os::unix::fs::symlink(archive.path(), dst.path().join("sub")).unwrap();
    let (outcome, _) = sync(src.path(), dst.path(), &job("sub"), &CopyOptions::default());
    assert_eq!(outcome, Outcome::Skipped);
    assert!(fs::symlink_metadata(dst.path().join("sub")).unwrap().file_type().is_symlink());
}

#[test]
fn the_marker_is_withdrawn_before_the_first_change_and_only_then() {
    // Issue 12, item 5: a marker of an earlier acquisition must not stand over a copy that changes.
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(src.path().join("a"), b"a").unwrap();
    fs::write(dst.path().join("complete"), b"").unwrap();
    let dest = _softcopy::dest::Dest::open(dst.path(), dst.path(), Some("complete")).unwrap();
    let opts = CopyOptions::default();
    fs::copy(src.path().join("a"), dst.path().join("a")).unwrap();
    let f = fs::File::options().write(true).open(dst.path().join("a")).unwrap();
    f.set_modified(fs::metadata(src.path().join("a")).unwrap().modified().unwrap()).unwrap();
    let (outcome, _) = sync_with(src.path(), &dest, &job("a"), &opts);
    assert!(matches!(outcome, Outcome::Unchanged(_)), "{outcome:?}");
    assert!(dst.path().join("complete").exists(), "nothing changed: the marker still tells the truth");
    fs::write(src.path().join("b"), b"b").unwrap();
    let (outcome, _) = sync_with(src.path(), &dest, &job("b"), &opts);
    assert!(matches!(outcome, Outcome::Copied { .. }), "{outcome:?}");
    assert!(!dst.path().join("complete").exists(), "withdrawn before b was published");
}

#[test]
fn a_file_open_for_writing_is_not_copied_until_closed() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = File::create(src.path().join("shard")).unwrap();
    let (outcome, _) = sync(src.path(), dst.path(), &job("shard"), &CopyOptions::default());
    assert_eq!(outcome, Outcome::Busy);
    assert!(!dst.path().join("shard").exists() && no_partials(dst.path()));
    drop(writer);
    let (outcome, _) = sync(src.path(), dst.path(), &job("shard"), &CopyOptions::default());
    assert!(matches!(outcome, Outcome::Copied { .. }), "{outcome:?}");
}

// A link is what stays in the way on every run (a plain file there is the copy of a file the
// source replaced by a folder, and goes); Windows makes links only with a privilege.
#[cfg(unix)]
#[test]
fn a_failed_copy_leaves_no_partial_and_no_final_name() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/k"), b"x").unwrap();
    // A link where the destination needs a directory: the copy must fail cleanly.
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dst.path().join("d")).unwrap();
    let (outcome, _) = sync(src.path(), dst.path(), &job("d/k"), &CopyOptions::default());
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert!(no_partials(dst.path()));
    assert!(dst.path().join("d").is_symlink() && fs::read_dir(elsewhere.path()).unwrap().next().is_none());
}

#[test]
fn a_copy_stops_at_the_size_it_was_given_and_short_files_end_it_early() {
    // The size from fstat bounds the copy (no EOF probe); the caller's identity check catches a
    // file that grew. A file shorter than told ends the copy at its real end.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::write(&a, pattern(10_000, 3)).unwrap();
    let no_stop = AtomicBool::new(false);
    for method in [CopyMethod::Auto, CopyMethod::SendFile] {
        for (told, copied) in [(4096u64, 4096u64), (20_000, 10_000)] {
            let (from, to) = (File::open(&a).unwrap(), File::create(&b).unwrap());
            let n = copy_contents(&from, &to, told, method, &Learned::default(), &no_stop).unwrap();
            assert_eq!(n, copied, "{method:?} told {told}");
            assert_eq!(fs::read(&b).unwrap(), pattern(10_000, 3)[..copied as usize], "{method:?} told {told}");
        }
    }
}

#[test]
fn a_fresh_destination_still_replaces_a_name_that_appeared_there() {
    // With `fresh_destination` the lookup of an earlier copy is skipped and the copy is linked to
    // its name directly; if the name exists after all, the copy must replace it (atomically, via a
    // partial name), not fail and not leave anything behind.
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(src.path().join("c/0")).unwrap();
    fs::write(src.path().join("c/0/new"), b"new chunk").unwrap();
    fs::write(src.path().join("c/0/old"), b"fresh version").unwrap();
    fs::create_dir_all(dst.path().join("c/0")).unwrap();
    fs::write(dst.path().join("c/0/old"), b"stale").unwrap();
    let opts = CopyOptions { fresh_destination: true, ..CopyOptions::default() };
    for rel in ["c/0/new", "c/0/old"] {
        let (outcome, copied) = sync(src.path(), dst.path(), &job(rel), &opts);
        assert!(copied && matches!(outcome, Outcome::Copied { .. }), "{rel}: {outcome:?}");
        assert_eq!(fs::read(dst.path().join(rel)).unwrap(), fs::read(src.path().join(rel)).unwrap(), "{rel}");
    }
    assert!(no_partials(dst.path()));
    assert_eq!(walk(dst.path()).len(), 2);
}

#[test]
fn a_panicking_copy_is_reported_as_failed_and_the_worker_goes_on() {
    // Issue 11, item 7: a worker that panicked never reported its job, and the engine waited for
    // it forever. Now the job comes back Failed and the same worker takes the next one.
    use _softcopy::copy::pool::Pool;
    use std::sync::Arc;
    use std::time::Duration;
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let (warn_tx, _warn_rx) = crossbeam_channel::unbounded();
    let priority = _softcopy::copy::pool::Priority { warning: warn_tx, lowered: Arc::default() };
    let work = |job: &Job, _: &AtomicBool| {
        assert!(job.rel != Path::new("bad"), "a bug in the copy of one file");
        (Outcome::Skipped, false)
    };
    let pool =
        Pool::with_work(1, false, Duration::ZERO, work, done_tx, Arc::new(AtomicBool::new(false)), priority).unwrap();
    pool.submit(job("bad"));
    pool.submit(job("good"));
    let first = done_rx.recv_timeout(Duration::from_secs(10)).expect("the panicked job is reported");
    assert_eq!(first.rel, Path::new("bad"));
    assert!(matches!(&first.outcome, Outcome::Failed(m) if m.contains("panicked")), "{:?}", first.outcome);
    let second = done_rx.recv_timeout(Duration::from_secs(10)).expect("the worker survived");
    assert_eq!((second.rel.as_path(), second.outcome), (Path::new("good"), Outcome::Skipped));
    pool.shutdown();
}

#[test]
fn a_staged_copy_is_written_in_a_staging_folder_and_renamed_across_into_place() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(src.path().join("c/0")).unwrap();
    fs::write(src.path().join("c/0/1"), b"chunk").unwrap();
    // With checksums the copy is a named partial everywhere (it is read back by name).
    let opts = CopyOptions { checksum: true, ..CopyOptions::default() };
    let dest = Dest::open(dst.path(), dst.path(), None).unwrap();
    let staged = Job { partial: Partial::Staged, ..job("c/0/1") };
    let (outcome, copied) = sync_with(src.path(), &dest, &staged, &opts);
    assert!(copied && matches!(outcome, Outcome::Copied { bytes: 5, .. }), "{outcome:?}");
    assert_eq!(fs::read(dst.path().join("c/0/1")).unwrap(), b"chunk");
    // The staging folder was used, and holds nothing once the copy is in place.
    let staging = dst.path().join(STAGING);
    assert!(staging.join("0").is_dir());
    assert!(walk(&staging).is_empty());
    // A new version replaces the copy the same way.
    fs::write(src.path().join("c/0/1"), b"chunk, again").unwrap();
    let (outcome, _) = sync_with(src.path(), &dest, &staged, &opts);
    assert!(matches!(outcome, Outcome::Copied { bytes: 12, .. }), "{outcome:?}");
    assert_eq!(fs::read(dst.path().join("c/0/1")).unwrap(), b"chunk, again");
    // The end of a run takes the staging folders away.
    dest.remove_staging();
    assert!(!staging.exists());
    assert_eq!(walk(dst.path()), [dst.path().join("c/0/1")]);
}

#[test]
fn a_source_appended_to_during_its_copy_is_never_published() {
    // Invariant 2: the copy is checked against the source's identity after it is written; a write
    // that landed meanwhile (an append half way through a rate-limited copy) discards it.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("a"), pattern(1 << 20, 3)).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    File::options().write(true).open(src.join("a")).unwrap().set_modified(old).unwrap();
    let opts = CopyOptions {
        // A named partial (so the appender can see the copy under way), at 512 KiB/s: two seconds.
        checksum: true,
        max_rate: Some(std::sync::Arc::new(_softcopy::gentle::rate::RateLimit::new(512 << 10))),
        ..CopyOptions::default()
    };
    let appender = {
        let (src, dst) = (src.clone(), dst.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !walk(&dst).iter().any(|p| p.to_string_lossy().ends_with(PARTIAL_SUFFIX)) {
                assert!(std::time::Instant::now() < deadline, "the copy never started");
                std::thread::yield_now();
            }
            use std::io::Write;
            File::options().append(true).open(src.join("a")).unwrap().write_all(b"one more line").unwrap();
        })
    };
    let job = Job { rel: "a".into(), prev: Prev::Unknown, verify_closed: false, partial: Partial::Beside };
    let (outcome, _) = sync(&src, &dst, &job, &opts);
    appender.join().unwrap();
    assert!(matches!(outcome, Outcome::Changed), "{outcome:?}");
    assert!(!dst.join("a").exists(), "a copy of a version the source no longer is was published");
    assert!(no_partials(&dst));
}
