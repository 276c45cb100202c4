//! The copy of one file on real folders: what is published, what is thrown away, what a deletion
//! at the source removes (docs/design.md, invariants 1, 2, 4, 6, 8 and 10).
use super::*;
use crate::dest::partial::partial_name;
use crate::dest::Dest;
use crate::vocab::{Identity, Job, Outcome, Partial, Prev};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::SystemTime;

/// A source and a destination folder.
struct Pair {
    src: tempfile::TempDir,
    dst: tempfile::TempDir,
    dest: Dest,
}

impl Pair {
    fn new() -> Pair {
        Pair::with_marker(None)
    }

    /// A destination that withdraws `marker` (at its root) before its first change.
    fn with_marker(marker: Option<&str>) -> Pair {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        if let Some(m) = marker {
            fs::write(dst.path().join(m), b"done").unwrap();
        }
        let dest = Dest::open(dst.path(), dst.path(), marker).unwrap();
        Pair { src, dst, dest }
    }

    fn s(&self, rel: &str) -> PathBuf {
        self.src.path().join(rel)
    }

    fn d(&self, rel: &str) -> PathBuf {
        self.dst.path().join(rel)
    }

    /// Writes `rel` at the source (its folders made), with an mtime in the past to the nanosecond
    /// (a tick of 10 ms).
    fn write(&self, rel: &str, bytes: &[u8]) -> Identity {
        write_at(&self.s(rel), bytes)
    }

    fn sync(&self, rel: &str, prev: Prev, opts: &CopyOptions) -> (Outcome, bool) {
        let job = Job { rel: rel.into(), prev, verify_closed: false, partial: Partial::Beside };
        self.sync_job(&job, opts)
    }

    fn sync_job(&self, job: &Job, opts: &CopyOptions) -> (Outcome, bool) {
        sync_file(self.src.path(), &self.dest, job, opts, &AtomicBool::new(false))
    }

    /// Every partial file anywhere at the destination.
    fn partials(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(self.dst.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX))
            .map(|e| e.path().to_path_buf())
            .collect()
    }

    /// Nothing partial left, on disk or in the count the end relies on.
    fn assert_no_partial(&self) {
        assert_eq!(self.partials(), Vec::<PathBuf>::new());
        assert!(!self.dest.partials_left(), "every partial made is counted gone");
    }
}

fn write_at(path: &Path, bytes: &[u8]) -> Identity {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    set_mtime(path, SystemTime::UNIX_EPOCH + Duration::new(1_700_000_001, 123_456_789));
    crate::sys::path_identity(path).unwrap()
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn checksummed() -> CopyOptions {
    CopyOptions { checksum: true, ..CopyOptions::default() }
}

/// Every way a copy is written: unnamed or a partial file (checksums read the copy back by name),
/// beside its name or in a staging folder.
fn every_way() -> Vec<(CopyOptions, Partial)> {
    let mut ways = Vec::new();
    for checksum in [false, true] {
        for partial in [Partial::Beside, Partial::Staged] {
            ways.push((CopyOptions { checksum, ..CopyOptions::default() }, partial));
        }
    }
    ways
}

#[test]
fn a_new_file_is_copied_whole_with_its_permission_bits_and_mtime_and_nothing_partial_is_left() {
    for (opts, partial) in every_way() {
        let p = Pair::new();
        let ident = p.write("a/b/f", b"chunk bytes");
        // Wider than the usual umask (022): the bits the umask took away are set back.
        fs::set_permissions(p.s("a/b/f"), fs::Permissions::from_mode(0o666)).unwrap();
        let ident = Identity { ctime_ns: crate::sys::path_identity(&p.s("a/b/f")).unwrap().ctime_ns, ..ident };
        let job = Job { rel: "a/b/f".into(), prev: Prev::Unknown, verify_closed: false, partial };
        let (outcome, copied) = p.sync_job(&job, &opts);
        let hash = opts.checksum.then(|| crate::end::manifest::hash_file(&p.s("a/b/f")).unwrap());
        assert_eq!((outcome, copied), (Outcome::Copied { ident, bytes: 11, hash }, true), "{partial:?}");
        assert_eq!(fs::read(p.d("a/b/f")).unwrap(), b"chunk bytes");
        let meta = fs::metadata(p.d("a/b/f")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        assert_eq!(meta.modified().unwrap(), fs::metadata(p.s("a/b/f")).unwrap().modified().unwrap());
        p.assert_no_partial();
        // A staging folder is lent only to a partial file that asked for one.
        let named = opts.checksum || !unnamed_files_here(p.dst.path());
        assert_eq!(p.d(crate::vocab::STAGING).join("0").is_dir(), named && partial == Partial::Staged);
    }
}

/// Whether the filesystem of `dir` makes unnamed files (O_TMPFILE).
fn unnamed_files_here(dir: &Path) -> bool {
    crate::sys::create_unnamed(dir, 0o600, &crate::sys::Learned::default()).unwrap().is_some()
}

#[test]
fn a_new_version_replaces_the_older_copy_whether_or_not_the_name_was_expected_there() {
    for (opts, partial) in every_way() {
        let p = Pair::new();
        let old = p.write("f", b"old");
        assert!(matches!(p.sync("f", Prev::Unknown, &opts).0, Outcome::Copied { .. }));
        p.write("f", b"new version");
        let job = Job { rel: "f".into(), prev: Prev::Copied(old), verify_closed: false, partial };
        assert!(matches!(p.sync_job(&job, &opts).0, Outcome::Copied { bytes: 11, .. }));
        assert_eq!(fs::read(p.d("f")).unwrap(), b"new version");
        // A name that appeared at a destination believed empty: replaced all the same.
        fs::write(p.d("g"), b"someone's").unwrap();
        p.write("g", b"source g");
        let fresh = CopyOptions { fresh_destination: true, ..opts.clone() };
        assert!(matches!(p.sync("g", Prev::Unknown, &fresh).0, Outcome::Copied { .. }));
        assert_eq!(fs::read(p.d("g")).unwrap(), b"source g");
        p.assert_no_partial();
    }
}

#[test]
fn a_version_already_at_the_destination_is_not_copied_again() {
    let p = Pair::new();
    let ident = p.write("f", b"same");
    // Copied earlier in this run: not even looked at.
    assert_eq!(p.sync("f", Prev::Copied(ident), &CopyOptions::default()), (Outcome::Unchanged(ident), false));
    assert!(!p.d("f").exists());
    // Copied by an earlier run (same size, mtime and bytes): found, kept.
    write_at(&p.d("f"), b"same");
    let before = crate::sys::path_identity(&p.d("f")).unwrap();
    for prev in [Prev::Unknown, Prev::Settled] {
        assert_eq!(p.sync("f", prev, &CopyOptions::default()), (Outcome::Unchanged(ident), false), "{prev:?}");
    }
    assert_eq!(crate::sys::path_identity(&p.d("f")).unwrap(), before, "not rewritten");
    // Same size and mtime, other bytes (a rewrite within one tick): the contents decide.
    write_at(&p.d("f"), b"SAME");
    assert!(matches!(p.sync("f", Prev::Unknown, &CopyOptions::default()), (Outcome::Copied { .. }, true)));
    assert_eq!(fs::read(p.d("f")).unwrap(), b"same");
    // A destination that held nothing at the start is not looked at: copied.
    let fresh = CopyOptions { fresh_destination: true, ..CopyOptions::default() };
    assert!(matches!(p.sync("f", Prev::Unknown, &fresh).0, Outcome::Copied { .. }));
}

/// A destination that keeps whole seconds (SFTP, many shares) holds the source's mtime cut to them:
/// such a copy is the version when its bytes are; and a file whose freeing was cut short (journaled,
/// not yet unlinked) is then this acquisition's, finished by the run, never taken for a new take's.
#[test]
fn a_copy_whose_mtime_the_destination_cut_to_whole_seconds_is_found_and_a_freeing_cut_short_finished() {
    // (copy's bytes, freed by an earlier run) → whether the copy is this version.
    for (bytes, freed) in [(b"same", false), (b"same", true), (b"SAME", false), (b"SAME", true)] {
        let p = Pair::new();
        let ident = p.write("f", b"same");
        fs::write(p.d("f"), bytes).unwrap();
        set_mtime(&p.d("f"), SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001));
        if freed {
            p.dest.keep_freed([PathBuf::from("f")].into());
        }
        let (outcome, _) = p.sync("f", Prev::Unknown, &CopyOptions::default());
        match (bytes == b"same", freed) {
            (true, _) => assert_eq!(outcome, Outcome::Unchanged(ident), "freed: {freed}"),
            // Other bytes under the same size and second: a new version; where the file was freed,
            // a new take's, refused.
            (false, true) => assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("freed")), "{outcome:?}"),
            (false, false) => assert!(matches!(outcome, Outcome::Copied { .. }), "{outcome:?}"),
        }
    }
}

/// A copy's ctime is when its name or metadata last changed, not when its bytes were read: the
/// copy of a version published late (checked against the source, then its rename held up past the
/// source's next change: a slow flush, a stopped process) or changed later by someone (a chmod, a
/// hard link of a snapshot) holds an older version under a ctime after the source's last change.
/// Where the copy's mtime is whole seconds, a rewrite of the same size within that second is not
/// the version that copy holds: the bytes must decide, and a resumed run copies it.
#[test]
fn a_copy_in_whole_seconds_whose_ctime_moved_after_a_rewrite_in_that_second_is_copied_again() {
    for late in ["published late", "chmod later"] {
        let p = Pair::new();
        // The first version, last written at .123 s; its copy, its mtime cut to the second (a
        // destination keeping whole seconds), not yet named (or named, to be chmodded later).
        p.write("f", b"frames: 1001");
        fs::write(p.d(".f.partial"), b"frames: 1001").unwrap();
        set_mtime(&p.d(".f.partial"), SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001));
        if late == "chmod later" {
            fs::rename(p.d(".f.partial"), p.d("f")).unwrap();
        }
        // The writer's next version, the same size, written at .623 s of the same second.
        fs::write(p.s("f"), b"frames: 1002").unwrap();
        set_mtime(&p.s("f"), SystemTime::UNIX_EPOCH + Duration::new(1_700_000_001, 623_456_789));
        let changed = crate::sys::path_identity(&p.s("f")).unwrap().ctime_ns;
        // More than a tick and the clocks' margin later, the copy's ctime moves (the kernel stamps
        // it from its coarse clock, up to a jiffy behind this one: 50 ms more).
        let after = changed + 10_000_000 + 2_000_000_000;
        let started = std::time::Instant::now();
        while crate::vocab::now_ns() <= after + 50_000_000 {
            assert!(started.elapsed() < Duration::from_secs(10), "the clock stands still");
            std::thread::sleep(Duration::from_millis(20));
        }
        match late {
            "published late" => fs::rename(p.d(".f.partial"), p.d("f")).unwrap(),
            _ => fs::set_permissions(p.d("f"), fs::Permissions::from_mode(0o444)).unwrap(),
        }
        assert!(crate::sys::path_identity(&p.d("f")).unwrap().ctime_ns > after, "{late}: ctime moved");
        // A resumed run (a kill before the next version's copy): the copy holds other bytes.
        let (outcome, copied) = p.sync("f", Prev::Unknown, &CopyOptions::default());
        assert!(copied, "{late}: {outcome:?}");
        assert_eq!(fs::read(p.d("f")).unwrap(), b"frames: 1002", "{late}");
    }
}

#[test]
fn a_copy_of_another_size_or_mtime_is_replaced() {
    let p = Pair::new();
    p.write("f", b"four");
    write_at(&p.d("f"), b"five!");
    assert!(matches!(p.sync("f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Copied { .. }));
    assert_eq!(fs::read(p.d("f")).unwrap(), b"four");
    set_mtime(&p.d("f"), SystemTime::UNIX_EPOCH + Duration::from_secs(5));
    assert!(matches!(p.sync("f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Copied { .. }));
    assert_eq!(
        fs::metadata(p.d("f")).unwrap().modified().unwrap(),
        fs::metadata(p.s("f")).unwrap().modified().unwrap()
    );
}

/// Whether this process has a file open below `dir` that has bytes in it: a copy under way (an
/// unnamed file's name is its folder's plus `#N (deleted)`; the destination's folders are held
/// open too, and are no copy).
fn copy_under_way(dir: &Path) -> bool {
    fs::read_dir("/proc/self/fd").unwrap().flatten().any(|e| {
        fs::read_link(e.path()).is_ok_and(|l| l.starts_with(dir))
            && fs::metadata(e.path()).is_ok_and(|m| m.is_file() && m.len() > 0)
    })
}

/// Copies `f` midway through which `change` is made (see [`copy_midway`]).
fn copy_changed_midway(p: &Pair, opts: CopyOptions, change: impl FnOnce() + Send) -> (Outcome, bool) {
    copy_midway(p, "f", Prev::Unknown, opts, change)
}

/// Copies `rel` (128 KiB, two steps of 64 KiB at 128 KiB/s: about a second) and calls `change`
/// once the first step is written; the rate limit's wait after each step leaves it a second.
fn copy_midway(p: &Pair, rel: &str, prev: Prev, opts: CopyOptions, change: impl FnOnce() + Send) -> (Outcome, bool) {
    p.write(rel, &[7u8; 128 * 1024]);
    let opts = CopyOptions { max_rate: Some(Arc::new(RateLimit::new(128 * 1024))), ..opts };
    std::thread::scope(|s| {
        let copy = s.spawn(|| p.sync(rel, prev, &opts));
        let started = std::time::Instant::now();
        while !copy_under_way(p.dst.path()) {
            assert!(started.elapsed() < Duration::from_secs(10), "the copy never started");
            assert!(!copy.is_finished(), "the copy ended before it was seen");
            std::thread::sleep(Duration::from_millis(1));
        }
        change();
        copy.join().unwrap()
    })
}

#[test]
fn a_copy_whose_source_was_appended_to_midway_is_never_published() {
    for opts in [CopyOptions::default(), checksummed()] {
        let p = Pair::new();
        let append = || {
            use std::io::Write;
            File::options().append(true).open(p.s("f")).unwrap().write_all(b"more").unwrap();
        };
        assert_eq!(copy_changed_midway(&p, opts, append), (Outcome::Changed, false));
        assert!(!p.d("f").exists(), "nothing published");
        p.assert_no_partial();
    }
}

#[test]
fn a_copy_whose_source_was_replaced_midway_is_never_published() {
    let p = Pair::new();
    let replace = || {
        // Another version of the same size and mtime, the one copied untouched (its folder is
        // moved away, not its name): only the name's identity tells.
        fs::rename(p.s("d"), p.s("old")).unwrap();
        write_at(&p.s("d/f"), &[7u8; 128 * 1024]);
    };
    assert_eq!(copy_midway(&p, "d/f", Prev::Unknown, CopyOptions::default(), replace), (Outcome::Changed, false));
    assert!(!p.d("d/f").exists());
    p.assert_no_partial();
}

#[test]
fn a_file_a_writer_has_open_is_not_copied_until_it_is_closed() {
    let p = Pair::new();
    p.write("f", b"being written");
    let job = Job { rel: "f".into(), prev: Prev::Unknown, verify_closed: true, partial: Partial::Beside };
    let writer = File::options().append(true).open(p.s("f")).unwrap();
    assert_eq!(p.sync_job(&job, &CopyOptions::default()), (Outcome::Busy, false));
    assert!(!p.d("f").exists());
    drop(writer);
    // Closed: copied, once its last change is a tick of the clock old (bounded).
    let started = std::time::Instant::now();
    let outcome = loop {
        match p.sync_job(&job, &CopyOptions::default()).0 {
            Outcome::Unsettled(_) if started.elapsed() < Duration::from_secs(5) => {}
            other => break other,
        }
    };
    assert!(matches!(outcome, Outcome::Copied { .. }), "{outcome:?}");
}

#[test]
fn a_change_within_a_tick_of_the_clock_waits_for_the_tick_where_a_write_could_hide() {
    let p = Pair::new();
    p.write("f", b"x");
    // Its last change is in the future (a clock ahead, whole even seconds: FAT's 2 s tick).
    let ahead = crate::vocab::now_ns() / 2_000_000_000 * 2 + 3600;
    set_mtime(&p.s("f"), SystemTime::UNIX_EPOCH + Duration::from_secs(ahead as u64));
    let job = |prev, verify_closed| Job { rel: "f".into(), prev, verify_closed, partial: Partial::Beside };
    for (prev, closed) in [(Prev::Superseded, false), (Prev::Unknown, true)] {
        let (outcome, _) = p.sync_job(&job(prev, closed), &CopyOptions::default());
        assert_eq!(outcome, Outcome::Unsettled(Duration::from_secs(2)), "{prev:?} {closed}");
    }
    assert!(!p.d("f").exists());
    // Proven new by other means (a rename): no wait.
    assert!(matches!(p.sync_job(&job(Prev::Unknown, false), &CopyOptions::default()).0, Outcome::Copied { .. }));
}

#[test]
fn the_tick_is_the_coarsest_unit_of_the_timestamps_and_at_least_ten_ms() {
    let id = |mtime_ns, ctime_ns| Identity { dev: 1, ino: 1, size: 1, mtime_ns, ctime_ns };
    let ms = Duration::from_millis;
    assert_eq!(tick_of(&id(4_000_000_000, 1_000_000_001)), ms(2000));
    assert_eq!(tick_of(&id(1_000_000_001, 3_000_000_000)), ms(1000));
    assert_eq!(tick_of(&id(0, 1_000_000_001)), ms(10), "no mtime: only the ctime's unit counts");
    assert_eq!(tick_of(&id(1_000_000_001, 0)), ms(10));
    assert_eq!(tick_of(&id(0, 0)), ms(10));
    assert_eq!(tick_of(&id(1_000_000_001, 1_000_000_003)), ms(10));
}

#[test]
fn a_version_is_marked_only_by_a_real_inode_and_a_change_time_finer_than_a_second() {
    let id = |ino, ctime_ns| Identity { dev: 1, ino, size: 5, mtime_ns: 7, ctime_ns };
    assert_eq!(mark_of(&id(3, 1_000_000_001)).unwrap(), b"softcopy 1 3 5 7 1000000001");
    assert_ne!(mark_of(&id(3, 1_000_000_001)), mark_of(&id(4, 1_000_000_001)));
    assert_ne!(mark_of(&id(3, 1_000_000_001)), mark_of(&id(3, 1_000_000_002)));
    let other_dev = Identity { dev: 2, ..id(3, 1_000_000_001) };
    assert_eq!(mark_of(&other_dev), mark_of(&id(3, 1_000_000_001)), "the device is not part of it");
    assert_eq!(mark_of(&id(0, 1_000_000_001)), None, "no inode");
    assert_eq!(mark_of(&id(3, 0)), None, "no change time");
    assert_eq!(mark_of(&id(3, 2_000_000_000)), None, "a change time in whole seconds");
    assert_eq!(mark_of(&id(3, 3_000_000_000)), None, "in whole seconds, odd");
    assert!(mark_of(&id(3, 2_010_000_000)).is_some(), "in hundredths");
}

#[test]
fn a_copy_waits_what_is_left_of_its_versions_tick_and_never_more() {
    let ms = Duration::from_millis;
    let c = 1_000_000_001;
    assert_eq!(tick_left(c, c), ms(10));
    assert_eq!(tick_left(c, c + 4_000_000), ms(6));
    assert_eq!(tick_left(c, c + 10_000_000), ms(0));
    assert_eq!(tick_left(c, c + 1_000_000_000), ms(0));
    assert_eq!(tick_left(c, c - 5_000_000_000), ms(10), "a clock set back: one tick at most");
}

#[test]
fn a_version_settled_a_tick_before_its_copy_began_and_not_later() {
    let id = |mtime_ns, ctime_ns| Identity { dev: 1, ino: 1, size: 1, mtime_ns, ctime_ns };
    // The ctime counts, not an mtime a writer may set anywhere.
    let ctime = 1_000_000_001;
    assert!(settled_before(&id(5, ctime), ctime + 10_000_000));
    assert!(!settled_before(&id(5, ctime), ctime + 9_999_999));
    assert!(settled_before(&id(i64::MAX, ctime), ctime + 10_000_000));
}

#[test]
fn a_marked_copy_is_taken_for_its_version_without_its_bytes() {
    let p = Pair::new();
    p.write("a/f", b"frames");
    // Copied at once (a live file just closed): the copy waits out the tick of the version's
    // ctime, and is marked.
    let ident = crate::sys::path_identity(&p.s("a/f")).unwrap();
    assert!(matches!(p.sync("a/f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Copied { .. }));
    assert_eq!(crate::sys::mark(&p.d("a/f")).unwrap(), mark_of(&ident));
    // The copy's bytes changed at the destination with its size, mtime and mark kept: the mark
    // decides, the bytes are not read (a change at the destination is for verification).
    let (stamp, copy) = (fs::metadata(p.d("a/f")).unwrap().modified().unwrap(), p.d("a/f"));
    fs::OpenOptions::new().write(true).open(&copy).unwrap().write_all_at(b"FRAMES", 0).unwrap();
    set_mtime(&copy, stamp);
    assert_eq!(p.sync("a/f", Prev::Unknown, &CopyOptions::default()), (Outcome::Unchanged(ident), false));
    // A hard link and a chmod at the destination (a snapshot, the archive opened to a group)
    // change its ctime, not its mark.
    fs::hard_link(&copy, p.dst.path().join("snapshot")).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(p.sync("a/f", Prev::Unknown, &CopyOptions::default()), (Outcome::Unchanged(ident), false));
}

#[test]
fn a_copy_whose_mark_was_taken_off_is_compared_and_copied_again() {
    let p = Pair::new();
    let ident = p.write("a/f", b"frames");
    assert!(matches!(p.sync("a/f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Copied { .. }));
    // Damaged in place, its size and mtime kept, then found different by a proof by content.
    let (stamp, copy) = (fs::metadata(p.d("a/f")).unwrap().modified().unwrap(), p.d("a/f"));
    fs::OpenOptions::new().write(true).open(&copy).unwrap().write_all_at(b"FRAMES", 0).unwrap();
    set_mtime(&copy, stamp);
    p.dest.unmark(Path::new("a/f")).unwrap();
    assert_eq!(crate::sys::mark(&copy).unwrap(), None);
    p.dest.unmark(Path::new("a/f")).unwrap();
    let (outcome, copied) = p.sync("a/f", Prev::Unknown, &CopyOptions::default());
    assert!(copied && matches!(outcome, Outcome::Copied { .. }), "{outcome:?}");
    assert_eq!(fs::read(&copy).unwrap(), b"frames");
    assert_eq!(crate::sys::mark(&copy).unwrap(), mark_of(&ident));
}

#[test]
fn a_marked_copy_is_not_taken_for_another_version_of_the_same_size_and_mtime() {
    // (how the source changed) → the copy is compared, found stale and replaced.
    for how in ["rewritten in place", "replaced by rename", "folders swapped"] {
        let p = Pair::new();
        p.write("p0/0", b"position 0");
        p.write("p1/0", b"position 1");
        for rel in ["p0/0", "p1/0"] {
            assert!(matches!(p.sync(rel, Prev::Unknown, &CopyOptions::default()).0, Outcome::Copied { .. }));
            assert!(crate::sys::mark(&p.d(rel)).unwrap().is_some(), "{how}: marked");
        }
        let stamp = fs::metadata(p.s("p0/0")).unwrap().modified().unwrap();
        match how {
            "rewritten in place" => fs::write(p.s("p0/0"), b"POSITION 0").unwrap(),
            "replaced by rename" => {
                fs::write(p.s("new"), b"POSITION 0").unwrap();
                fs::rename(p.s("new"), p.s("p0/0")).unwrap();
            }
            _ => {
                let before = crate::sys::path_identity(&p.s("p1/0")).unwrap();
                fs::rename(p.s("p0"), p.s("x")).unwrap();
                fs::rename(p.s("p1"), p.s("p0")).unwrap();
                fs::rename(p.s("x"), p.s("p1")).unwrap();
                // No time of the file changed: only its inode tells it from the copy's version.
                assert_eq!(crate::sys::path_identity(&p.s("p0/0")).unwrap(), before);
            }
        }
        if how != "folders swapped" {
            set_mtime(&p.s("p0/0"), stamp);
        }
        let (outcome, copied) = p.sync("p0/0", Prev::Unknown, &CopyOptions::default());
        assert!(copied, "{how}: {outcome:?}");
        assert_eq!(fs::read(p.d("p0/0")).unwrap(), fs::read(p.s("p0/0")).unwrap(), "{how}");
    }
}

#[test]
fn a_file_last_written_is_its_later_time_which_a_writer_cannot_set_back() {
    let p = Pair::new();
    p.write("f", b"x");
    let meta = fs::metadata(p.s("f")).unwrap();
    let ctime = UNIX_EPOCH + Duration::from_nanos(crate::sys::path_identity(&p.s("f")).unwrap().ctime_ns as u64);
    assert_eq!(last_written(&meta), ctime, "an mtime set back does not hide the change");
    let later = SystemTime::now() + Duration::from_secs(3600);
    set_mtime(&p.s("f"), later);
    assert_eq!(last_written(&fs::metadata(p.s("f")).unwrap()), later);
}

#[test]
fn a_deleted_source_file_is_removed_with_the_folders_the_source_no_longer_has() {
    let p = Pair::new();
    for rel in ["keep/x/f", "keep/g", "two/levels/f"] {
        p.write(rel, b"v");
        assert!(matches!(p.sync(rel, Prev::Unknown, &CopyOptions::default()).0, Outcome::Copied { .. }));
    }
    fs::remove_dir_all(p.s("keep/x")).unwrap();
    assert_eq!(p.sync("keep/x/f", Prev::Unknown, &CopyOptions::default()), (Outcome::Deleted, false));
    assert!(!p.d("keep/x").exists(), "its folder, gone at the source, is gone");
    assert!(p.d("keep/g").exists() && p.d("keep").exists(), "a folder the source still has stays");
    fs::remove_dir_all(p.s("two")).unwrap();
    assert_eq!(p.sync("two/levels/f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    assert!(!p.d("two").exists(), "every folder gone at the source, up to one it still has");
    // Already gone here, or its folder: nothing to do.
    assert_eq!(p.sync("keep/x/f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    assert_eq!(p.sync("nowhere/f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    assert_eq!(p.sync("keep/none", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    // A folder gone at the source goes only once empty.
    fs::create_dir_all(p.d("d/e")).unwrap();
    fs::create_dir_all(p.d("full")).unwrap();
    fs::write(p.d("full/f"), b"v").unwrap();
    assert_eq!(p.sync("d/e", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    assert_eq!(p.sync("full", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    assert!(!p.d("d").exists() && p.d("full/f").exists());
}

#[test]
fn a_deletion_at_the_source_never_removes_a_link_a_freed_files_copy_or_anything_once_the_root_is_another() {
    let p = Pair::new();
    let other = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(other.path(), p.d("link")).unwrap();
    assert_eq!(p.sync("link", Prev::Unknown, &CopyOptions::default()).0, Outcome::Skipped);
    assert!(fs::symlink_metadata(p.d("link")).is_ok());
    fs::write(p.d("freed"), b"only copy").unwrap();
    p.dest.keep_freed([PathBuf::from("freed")].into());
    assert_eq!(p.sync("freed", Prev::Unknown, &CopyOptions::default()).0, Outcome::Deleted);
    assert!(p.d("freed").exists());
    // The source root is another folder now (removed and made again): no evidence of a deletion.
    fs::write(p.d("f"), b"copy").unwrap();
    let root = Arc::new(crate::source::root::RootId::default());
    root.adopt(p.src.path()).unwrap();
    let moved = tempfile::tempdir().unwrap();
    fs::rename(p.src.path(), moved.path().join("old")).unwrap();
    fs::create_dir(p.src.path()).unwrap();
    let opts = CopyOptions { root: Some(root), ..CopyOptions::default() };
    assert!(matches!(p.sync("f", Prev::Unknown, &opts).0, Outcome::RootGone(_)));
    assert!(p.d("f").exists());
}

#[test]
fn a_file_freed_at_the_source_by_an_earlier_run_is_never_copied_over() {
    let p = Pair::new();
    fs::write(p.d("f"), b"only copy").unwrap();
    p.dest.keep_freed([PathBuf::from("f")].into());
    p.write("f", b"a new take");
    let (outcome, copied) = p.sync("f", Prev::Unknown, &CopyOptions::default());
    assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("freed")), "{outcome:?}");
    assert!(!copied);
    assert_eq!(fs::read(p.d("f")).unwrap(), b"only copy");
}

#[test]
fn what_is_not_a_regular_file_inside_the_source_is_skipped() {
    let p = Pair::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("f"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("f"), p.s("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), p.s("dirlink")).unwrap();
    fs::create_dir(p.s("dir")).unwrap();
    for rel in ["link", "dirlink/f", "dir"] {
        assert_eq!(p.sync(rel, Prev::Unknown, &CopyOptions::default()), (Outcome::Skipped, false), "{rel}");
        assert!(fs::symlink_metadata(p.d(rel)).is_err(), "{rel}");
    }
    let through = File::open(p.s("dirlink/f")).unwrap();
    assert!(!opened_beneath(&through, p.src.path()), "the kernel's name for it is outside");
    assert!(opened_beneath(&File::open(outside.path().join("f")).unwrap(), outside.path()));
}

#[test]
fn the_marker_is_withdrawn_before_a_copy_or_a_deletion_changes_the_destination() {
    for change in ["copy", "delete"] {
        let p = Pair::with_marker(Some("complete"));
        if change == "copy" {
            p.write("f", b"v");
        } else {
            fs::write(p.d("f"), b"old copy").unwrap();
        }
        p.sync("f", Prev::Unknown, &CopyOptions::default());
        assert!(!p.d("complete").exists(), "{change}");
        assert_eq!(p.d("f").exists(), change == "copy");
    }
}

#[test]
fn a_destination_that_cannot_take_files_pauses_the_target_and_a_bad_file_fails_alone() {
    let p = Pair::new();
    p.write("f", b"v");
    // A link where its folder should be (never removed, never written through): this file's problem.
    p.write("g/f", b"v");
    std::os::unix::fs::symlink(p.src.path(), p.d("g")).unwrap();
    assert!(matches!(p.sync("g/f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Failed(_)));
    fs::remove_dir_all(p.dst.path()).unwrap();
    assert!(matches!(p.sync("f", Prev::Unknown, &CopyOptions::default()).0, Outcome::Unavailable(_)));
}

#[test]
fn only_errors_of_the_destination_as_a_whole_say_it_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (here, gone) = (Dest::at(dir.path()), Dest::at(&dir.path().join("gone")));
    let err = |op, errno| crate::Error::io(op, Path::new("x"), io::Error::from_raw_os_error(errno));
    for errno in [libc::ENOSPC, libc::EDQUOT, libc::EROFS, libc::ENOTCONN, libc::ESTALE, libc::ETIMEDOUT] {
        assert!(destination_unavailable(&err("copy to", errno), &here), "{errno}");
    }
    for errno in [libc::ECONNABORTED, libc::EHOSTDOWN, libc::ENODEV, libc::ENXIO] {
        assert!(destination_unavailable(&err("rename into", errno), &here), "{errno}");
    }
    assert!(!destination_unavailable(&err("copy to", libc::EIO), &here));
    assert!(destination_unavailable(&err("copy to", libc::EIO), &gone), "its root cannot be reached");
    for op in ["open source", "stat source"] {
        let source = crate::Error::source_io(op, Path::new("x"), io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(!destination_unavailable(&source, &gone), "{op}: the source's");
    }
}

#[test]
fn partial_names_are_hidden_unique_and_recognised() {
    let (a, b) = (partial_name(Path::new("c.0")), partial_name(Path::new("c.0")));
    assert_ne!(a, b);
    for n in [&a, &b] {
        let s = n.to_string_lossy();
        assert!(s.starts_with(".c.0.") && s.ends_with(PARTIAL_SUFFIX), "{s}");
        assert!(crate::vocab::is_ignored(n));
    }
    assert!(crate::vocab::is_gone(&io::Error::from(io::ErrorKind::NotFound)));
    assert!(crate::vocab::is_gone(&io::Error::from(io::ErrorKind::NotADirectory)));
    assert!(!crate::vocab::is_gone(&io::Error::from(io::ErrorKind::PermissionDenied)));
}

#[test]
fn leftover_partials_are_removed_except_in_a_folder_another_run_holds() {
    let p = Pair::new();
    let partial = format!(".c.1-2{PARTIAL_SUFFIX}");
    let part = |rel: &str| {
        fs::create_dir_all(p.d(rel).parent().unwrap()).unwrap();
        fs::write(p.d(rel), b"part").unwrap();
    };
    part(&partial);
    part(&format!("a/{partial}"));
    // This run's own claim, held at the root: no other run's.
    let _ours = crate::dest::claim::Claim::take(p.dst.path(), &crate::dest::claim::who(Path::new("/source"))).unwrap();
    assert_eq!(
        remove_partials(&Dest::at(p.dst.path())),
        Leftovers { removed: 2, kept: 0, others: false, complete: true }
    );
    assert!(!p.d(&partial).exists() && !p.d(&format!("a/{partial}")).exists());
    // A link under a partial's name is no partial of ours.
    std::os::unix::fs::symlink("0", p.d(&format!("a/{partial}"))).unwrap();
    fs::write(p.d("a/0"), b"copy").unwrap();
    assert_eq!(
        remove_partials(&Dest::at(p.dst.path())),
        Leftovers { removed: 0, kept: 0, others: true, complete: true }
    );
    assert!(fs::symlink_metadata(p.d(&format!("a/{partial}"))).is_ok());
    // Another run's copy in flight, in the folder it holds as its destination.
    let q = Pair::new();
    part(&format!("held/x/{partial}"));
    fs::rename(p.d("held"), q.d("held")).unwrap();
    let claim =
        crate::dest::claim::Claim::take(&q.d("held"), &crate::dest::claim::who(Path::new("/elsewhere"))).unwrap();
    assert_eq!(remove_partials(&Dest::at(q.dst.path())).removed, 0);
    assert!(q.d(&format!("held/x/{partial}")).exists());
    drop(claim);
    assert_eq!(remove_partials(&Dest::at(q.dst.path())).removed, 1, "a claim nobody holds protects nothing");
    // A folder that cannot be listed may hold anything.
    assert_eq!(
        remove_partials(&Dest::at(&q.d("missing"))),
        Leftovers { removed: 0, kept: 0, others: true, complete: false }
    );
}

/// A destination taken for one that folds case. Its names do not: a lookup of `notes` does not
/// find `Notes` as it would there, so the copies below are of a name copied before in this run
/// (nothing looked up first, a link never tried), whose checks list the folder.
fn folding_pair() -> Pair {
    let p = Pair::new();
    p.dest.assume_folds_case();
    p
}

/// Some version copied earlier in this run.
const EARLIER: Prev = Prev::Copied(Identity { dev: 0, ino: 0, size: 0, mtime_ns: 0, ctime_ns: 0 });

#[test]
fn a_copy_takes_the_place_of_its_own_older_copy_under_another_case() {
    for opts in [CopyOptions::default(), checksummed()] {
        let p = folding_pair();
        fs::write(p.d("notes"), b"old case").unwrap();
        p.write("Notes", b"new case");
        assert!(matches!(p.sync("Notes", EARLIER, &opts).0, Outcome::Copied { .. }));
        let names: Vec<_> = fs::read_dir(p.dst.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["Notes"], "the older copy is gone, the new name taken");
        // A name new there is linked, never renamed over whatever took it meanwhile.
        p.write("Other", b"v");
        assert!(matches!(p.sync("Other", Prev::Unknown, &opts).0, Outcome::Copied { .. }));
        assert_eq!(fs::read(p.d("Other")).unwrap(), b"v");
        // An older copy that cannot be removed (a folder with files): the copy is not made.
        fs::create_dir_all(p.d("data/x")).unwrap();
        p.write("Data", b"v");
        let (outcome, _) = p.sync("Data", EARLIER, &opts);
        assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("older copy")), "{outcome:?}");
        assert!(!p.d("Data").exists());
        p.assert_no_partial();
    }
}

#[test]
fn a_name_in_another_case_that_appears_during_a_copy_is_never_replaced() {
    for opts in [CopyOptions::default(), checksummed()] {
        let p = folding_pair();
        let other = || {
            p.write("NOTES", b"another file");
            fs::write(p.d("NOTES"), b"another file's copy").unwrap();
        };
        let (outcome, _) = copy_midway(&p, "notes", EARLIER, opts, other);
        assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("collides")), "{outcome:?}");
        assert_eq!(fs::read(p.d("NOTES")).unwrap(), b"another file's copy");
        assert!(!p.d("notes").exists());
        p.assert_no_partial();
    }
}

#[test]
fn a_source_that_cannot_be_opened_fails_alone_and_is_not_taken_for_gone_a_link_or_busy() {
    let p = Pair::new();
    // Not "gone", not a link, not held by a writer: a name too long to open.
    let long = "n".repeat(300);
    let (outcome, _) = p.sync(&format!("{long}/keep"), Prev::Unknown, &CopyOptions::default());
    assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("open source")), "{outcome:?}");
    let job = Job { rel: long.into(), prev: Prev::Unknown, verify_closed: false, partial: Partial::Staged };
    assert!(matches!(p.sync_job(&job, &CopyOptions::default()).0, Outcome::Failed(_)));
    assert!(p.dest.staging().is_some(), "a failure that crossed no filesystem keeps staging on");
}

#[test]
fn a_deletion_below_a_linked_destination_folder_is_refused_not_taken_as_done() {
    let p = Pair::new();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("f"), b"not ours").unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), p.d("linked")).unwrap();
    let (outcome, _) = p.sync("linked/f", Prev::Unknown, &CopyOptions::default());
    assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("symlink")), "{outcome:?}");
    assert!(elsewhere.path().join("f").exists());
}

#[test]
fn the_wait_for_a_tick_is_what_is_left_of_it() {
    let p = Pair::new();
    p.write("f", b"x");
    // Whole even seconds (a tick of 2 s), set just now: the change (its ctime) is a moment old.
    let even = crate::vocab::now_ns() / 2_000_000_000 * 2 - 2;
    set_mtime(&p.s("f"), SystemTime::UNIX_EPOCH + Duration::from_secs(even as u64));
    let job = Job { rel: "f".into(), prev: Prev::Superseded, verify_closed: false, partial: Partial::Beside };
    let outcome = p.sync_job(&job, &CopyOptions::default()).0;
    let Outcome::Unsettled(left) = outcome else { panic!("{outcome:?}") };
    assert!(left < Duration::from_secs(2) && left > Duration::from_secs(1), "{left:?}");
}
