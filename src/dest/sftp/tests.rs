//! The ssh destination's storage against OpenSSH's real `sftp-server`, spawned directly over pipes
//! (as `crate::sftp`'s tests: the same server an ssh session runs, without the network).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::*;
use crate::sftp::Options;

const SERVER: &str = "/usr/lib/openssh/sftp-server";

fn session() -> Session {
    Session::spawn(Command::new(SERVER), Options { handshake_timeout: Duration::from_secs(10), ..Options::default() })
        .expect("OpenSSH's sftp-server starts")
}

fn storage(root: &Path) -> Sftp {
    Sftp::open(session(), root).unwrap()
}

/// The storage at `root` over `n` sessions.
fn sessions(root: &Path, n: usize) -> Sftp {
    storage(root).reconnecting(Arc::new(|| Ok(session())), n).unwrap()
}

/// A source file holding `bytes`.
fn source(bytes: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    io::Write::write_all(&mut f, bytes).unwrap();
    f.rewind().unwrap();
    f
}

fn copy(s: &Sftp, folder: &Folder, name: &str, bytes: &[u8]) -> io::Result<Writer> {
    let w = s.create(folder, Path::new(name), 0o640)?;
    let how = Fill::Hashed { pace: &AtomicBool::new(false) };
    let (n, hash) = s.fill(&w, &source(bytes), how)?;
    assert_eq!((n, hash), (bytes.len() as u64, Some(crate::content::hash_reader(bytes).unwrap())));
    Ok(w)
}

#[test]
fn a_copy_is_written_under_its_partial_name_stamped_flushed_and_renamed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let folder = s.folder(Path::new("a/b"), true).unwrap();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let w = copy(&s, &folder, ".c.partial", &data).unwrap();
    s.stamp(&w, 0o640, Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))).unwrap();
    s.complete(&w).unwrap();
    s.rename(&folder, Path::new(".c.partial"), &folder, Path::new("c")).unwrap();
    let fin = dir.path().join("a/b/c");
    assert_eq!(fs::read(&fin).unwrap(), data);
    let m = fs::metadata(&fin).unwrap();
    assert_eq!((m.mtime(), m.mode() & 0o777), (1_700_000_000, 0o640));
    assert!(!dir.path().join("a/b/.c.partial").exists());
    let look = s.look(&folder, Path::new("c")).unwrap();
    assert_eq!(
        (look.kind, look.ident.size, look.ident.mtime_ns),
        (Kind::File, data.len() as u64, 1_700_000_000_000_000_000)
    );
    s.flush_all(&s.folder(Path::new(""), false).unwrap()).unwrap();
}

#[test]
fn a_copy_whose_connection_is_lost_before_its_answers_cannot_be_flushed_so_is_never_named() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut c = Command::new("sh");
    c.args(["-c", &format!("echo $$ > {}; exec {SERVER}", pidfile.display())]);
    let session = Session::spawn(c, Options { handshake_timeout: Duration::from_secs(10), ..Options::default() });
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let s = Sftp::open(session.unwrap(), &root).unwrap();
    let folder = s.folder(Path::new(""), false).unwrap();
    let w = copy(&s, &folder, ".c.partial", b"bytes").unwrap();
    let pid = fs::read_to_string(&pidfile).unwrap();
    assert!(Command::new("kill").args(["-9", pid.trim()]).status().unwrap().success());
    let e = s.complete(&w).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    assert!(s.whole_storage_error(&e), "a lost connection is the destination's, not the file's");
    assert!(!root.join("c").exists());
}

#[test]
fn no_folder_is_reached_or_made_through_a_link_below_the_root() {
    let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("l")).unwrap();
    let s = storage(dir.path());
    for create in [false, true] {
        let e = s.folder(Path::new("l/x"), create).err().unwrap();
        assert!(matches!(super::super::Refused::of(&e), Some(super::super::Refused::Link(_))), "{e}");
    }
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing made through the link");
    fs::write(elsewhere.path().join("f"), b"x").unwrap();
    let root = s.folder(Path::new(""), false).unwrap();
    assert!(s.read(&root, Path::new("l")).is_err(), "a link is never read through");
    let listed = s.list(&root).unwrap();
    assert_eq!(listed, vec![(OsString::from("l"), Kind::Other)]);
    assert_eq!(s.folder(Path::new("missing"), false).err().unwrap().kind(), io::ErrorKind::NotFound);
}

#[test]
fn a_copy_is_read_from_any_offset_and_appended_to_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("shard"), b"0123456789").unwrap();
    let s = storage(dir.path());
    let root = s.folder(Path::new(""), false).unwrap();
    let mut r = s.read(&root, Path::new("shard")).unwrap();
    assert_eq!(r.seek(SeekFrom::End(-4)).unwrap(), 6);
    let mut tail = String::new();
    r.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "6789");
    let w = s.append(&root, Path::new("shard"), 0o644).unwrap();
    s.write(&w, b"ab").unwrap();
    s.flush_file(&w).unwrap();
    assert_eq!(fs::read(dir.path().join("shard")).unwrap(), b"0123456789ab");
    let w = s.append(&root, Path::new("new"), 0o644).unwrap();
    s.write(&w, b"first").unwrap();
    s.flush_file(&w).unwrap();
    assert_eq!(fs::read(dir.path().join("new")).unwrap(), b"first");
    assert!(s.free_space(&root).is_some_and(|f| f.total_bytes > 0));
    let found = s.locate(&dir.path().join("./")).unwrap();
    assert_eq!(found.path, s.root());
}

#[test]
fn a_name_that_exists_is_never_replaced_by_a_create_or_a_link() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("c"), b"someone's").unwrap();
    fs::write(dir.path().join("p"), b"mine").unwrap();
    let s = storage(dir.path());
    let root = s.folder(Path::new(""), false).unwrap();
    assert_eq!(s.create(&root, Path::new("c"), 0o644).err().unwrap().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(s.link(&root, Path::new("p"), &root, Path::new("c")).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"someone's");
}

#[test]
fn a_claim_refuses_a_second_run_until_dropped_and_a_stale_one_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (storage(dir.path()), storage(dir.path()));
    // The waiting run looks for 2 s; the holder touches its file every 50 ms.
    a.timing(Duration::from_secs(2), Duration::from_millis(50));
    b.timing(Duration::from_secs(2), Duration::from_millis(50));
    let root = a.folder(Path::new(""), false).unwrap();
    let held = a.claim(&root, "pid 1 on a, copying /acq/a").unwrap();
    let refused = b.claim(&root, "pid 2 on b").err().unwrap();
    assert!(refused.contains("another softcopy") && refused.contains("/acq/a"), "{refused}");
    assert_eq!(b.claimed(&root).as_deref(), Some("pid 1 on a, copying /acq/a"));
    drop(held);
    assert!(!dir.path().join(LOCK).exists(), "a run that ends removes its claim's file");
    assert_eq!(b.claimed(&root), None);
    // A run that crashed left its file, which nobody touches: taken over after it stayed so.
    fs::write(dir.path().join(LOCK), "pid 3 on a crashed host\n").unwrap();
    b.timing(Duration::from_millis(300), Duration::from_millis(50));
    let _taken = b.claim(&root, "pid 2 on b").unwrap();
    assert_eq!(super::super::claim::described(&fs::read_to_string(dir.path().join(LOCK)).unwrap()), "pid 2 on b");
    fs::create_dir(dir.path().join("inner")).unwrap();
    let inner = storage(&dir.path().join("inner"));
    let e = inner.claim(&inner.folder(Path::new(""), false).unwrap(), "pid 4").err().unwrap();
    assert!(e.contains("is inside"), "{e}");
}

#[test]
fn a_copy_is_never_named_before_every_request_of_it_was_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let root = s.folder(Path::new(""), false).unwrap();
    let w = copy(&s, &root, ".c.partial", b"bytes").unwrap();
    assert!(s.rename(&root, Path::new(".c.partial"), &root, Path::new("c")).is_err());
    assert!(!dir.path().join("c").exists());
    s.complete(&w).unwrap();
    s.rename(&root, Path::new(".c.partial"), &root, Path::new("c")).unwrap();
    assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"bytes");
}

/// The copier, verification and the mover through a `Dest` over SFTP: the same code as a local
/// destination's, with the store another.
#[test]
fn the_copier_verification_and_the_proof_by_content_run_unchanged_over_sftp() {
    // One session, and three: a request on a handle must go to the session that opened it.
    for n in [1, 3] {
        copier_verification_and_proof(n);
    }
}

fn copier_verification_and_proof(connections: usize) {
    use crate::dest::{Dest, Store};
    use crate::vocab::{Job, Outcome, Partial, Prev};
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = ["zarr.json", "c/0/0", "c/0/1", "c/1/0"];
    for rel in files {
        let p = src.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, rel.as_bytes()).unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::new(1_700_000_000, 5))
            .unwrap();
    }
    fs::write(dst.path().join("complete"), b"an earlier run's").unwrap();
    let dest = Dest::open_store(Store::Sftp(sessions(dst.path(), connections)), dst.path(), Some("complete")).unwrap();
    let _claim = dest.claim(src.path()).unwrap();
    assert!(dst.path().join(LOCK).exists());
    let opts = crate::copy::CopyOptions::default();
    let stop = AtomicBool::new(false);
    for (rel, partial) in files.iter().zip([Partial::Beside, Partial::Staged, Partial::Beside, Partial::Staged]) {
        let job = Job { rel: rel.into(), prev: Prev::Unknown, verify_closed: false, partial };
        let (outcome, _) = crate::copy::sync_file(src.path(), &dest, &job, &opts, &stop);
        assert!(matches!(outcome, Outcome::Copied { .. }), "{rel}: {outcome:?}");
        assert_eq!(fs::read(dst.path().join(rel)).unwrap(), rel.as_bytes());
    }
    assert!(!dst.path().join("complete").exists(), "the marker withdrawn before the first change");
    assert!(!dest.partials_left());
    dest.remove_staging();
    dest.flush_all().unwrap();
    let report = verified_by_content(src.path(), &dest, &stop);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.files, files.len() as u64);
    // A copy damaged on the server with its size and mtime kept is not proven.
    let damaged = dst.path().join("c/0/1");
    let mtime = fs::metadata(&damaged).unwrap().modified().unwrap();
    fs::write(&damaged, b"c/0/X").unwrap();
    File::options().write(true).open(&damaged).unwrap().set_modified(mtime).unwrap();
    let copied: Vec<_> = files
        .iter()
        .map(|rel| crate::vocab::Copied {
            rel: rel.into(),
            ident: crate::sys::path_identity(&src.path().join(rel)).unwrap(),
            hash: None,
        })
        .collect();
    let proof = crate::end::mover::prove(src.path(), &dest, copied, &stop);
    assert_eq!(proof.differs, vec![PathBuf::from("c/0/1")]);
    assert_eq!(proof.proven.len(), 3);
}

/// The move journal appends and flushes once per batch, on one open file: each flush must leave
/// it open for the next (a journal line lost is a freed file's only copy left unaccounted for).
#[test]
fn a_file_appended_to_stays_open_across_its_flushes() {
    use crate::dest::{Dest, Store};
    let dir = tempfile::tempdir().unwrap();
    let dest = Dest::open_store(Store::Sftp(storage(dir.path())), dir.path(), None).unwrap();
    let mut journal = dest.append_file(Path::new("journal")).unwrap();
    for line in ["F one\n", "K one\n"] {
        journal.write(line.as_bytes()).unwrap();
        journal.flush().unwrap();
    }
    assert_eq!(fs::read_to_string(dir.path().join("journal")).unwrap(), "F one\nK one\n");
}

/// Two runs find one claim file stale; one moves it aside and makes its own first: the other's
/// rename, by name, then meets the fresh file, which must stay where it is (else both write the
/// destination), and the late run is refused.
#[test]
fn a_stale_claim_taken_over_first_by_another_run_is_put_back_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let path = dir.path().join(LOCK);
    fs::write(&path, "pid 9 on a host that is gone\n").unwrap();
    let seen = s.lstat(&bytes(&path)).unwrap();
    // The first run's take-over, between the late run's last look and its rename.
    fs::rename(&path, dir.path().join("moved by the first run")).unwrap();
    s.make_lock(&bytes(&path), "pid 2 on the microscope").unwrap();
    let refused = s.set_aside(&bytes(&path), &seen).expect_err("the first run's fresh claim was set aside");
    assert!(refused.contains("pid 2 on the microscope"), "{refused}");
    assert_eq!(s.holder(&bytes(&path)).unwrap().as_deref(), Some("pid 2 on the microscope"));
}

/// A run whose claim was taken over (it was away past the stale time) must not remove the claim
/// of the run that took it when it ends.
#[test]
fn a_claim_taken_over_is_not_removed_by_the_run_that_lost_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = storage(dir.path());
    let root = a.folder(Path::new(""), false).unwrap();
    let lost = a.claim(&root, "pid 1 on a").unwrap();
    fs::write(dir.path().join(LOCK), "pid 2 on b, copying /acq/b").unwrap();
    drop(lost);
    assert_eq!(fs::read_to_string(dir.path().join(LOCK)).unwrap(), "pid 2 on b, copying /acq/b");
}

/// A server that goes away (sshd restarted, the node rebooted) is reached again by a new session:
/// the calls after it work, and nothing written on the lost one was named.
#[test]
fn a_lost_session_is_started_again_at_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let spawn = {
        let pidfile = pidfile.clone();
        move || {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("echo $$ > {}; exec {SERVER}", pidfile.display())]);
            Session::spawn(c, Options { handshake_timeout: Duration::from_secs(10), ..Options::default() })
                .map_err(|e| e.to_string())
        }
    };
    let s = Sftp::open(spawn().unwrap(), &root).unwrap().reconnecting(Arc::new(spawn), 1).unwrap();
    let folder = s.folder(Path::new(""), false).unwrap();
    let w = copy(&s, &folder, ".c.partial", b"bytes").unwrap();
    let first = fs::read_to_string(&pidfile).unwrap();
    assert!(Command::new("kill").args(["-9", first.trim()]).status().unwrap().success());
    assert!(s.complete(&w).is_err(), "the copy on the lost session fails");
    // Bounded: each call after the loss may start a session (at most once a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.folder(Path::new("again"), true).is_err() {
        assert!(Instant::now() < deadline, "no new session within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(fs::read_to_string(&pidfile).unwrap(), first, "another server");
    assert!(root.join("again").is_dir() && !root.join("c").exists());
}

/// A session on a server whose pid is written to `pidfile`, with the server's log (VERBOSE: every
/// OPEN with its path and flags, every fsync with its path) appended to `log` (`None`: no log).
fn watched_session(pidfile: &Path, log: Option<&Path>) -> Session {
    let logging = log.map_or(String::new(), |l| format!(" -e -l VERBOSE 2>>{}", l.display()));
    let mut c = Command::new("sh");
    c.args(["-c", &format!("echo $$ > {}; exec {SERVER}{logging}", pidfile.display())]);
    Session::spawn(c, Options { handshake_timeout: Duration::from_secs(10), ..Options::default() }).unwrap()
}

/// A destination `root` in `dir` over a server whose pid is in `pidfile` (to stop it), its
/// claim's file found stale after `stale` and touched every 50 ms: (root, pidfile, storage).
fn stoppable(dir: &Path, stale: Duration) -> (PathBuf, PathBuf, Sftp) {
    let root = dir.join("root");
    fs::create_dir(&root).unwrap();
    let pidfile = dir.join("pid");
    let mut a = Sftp::open(watched_session(&pidfile, None), &root).unwrap();
    a.timing(stale, Duration::from_millis(50));
    (root, pidfile, a)
}

/// Stops (`STOP`) or continues (`CONT`) the server whose pid is in `pidfile`; a stop is waited
/// for (bounded) until the kernel says the process is stopped, so nothing it answers comes after.
fn signal(pidfile: &Path, sig: &str) {
    let pid = fs::read_to_string(pidfile).unwrap().trim().to_string();
    assert!(Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap().success());
    if sig == "STOP" {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stopped = || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T'))
        };
        while !stopped() {
            assert!(Instant::now() < deadline, "server {pid} not stopped within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A run that is alive but whose claim's refresh stalled past the stale time (its server or
/// network slow, a long fsync ahead of the touch on a busy session) loses its claim to another
/// run. It must then learn so before its next change (`Dest::changing` asks `check_root`):
/// else two runs write the same destination (design.md, invariant 10), and the journal's
/// appends, made at offsets each run read for itself, overwrite each other's lines.
#[test]
fn a_run_whose_claim_was_taken_over_is_refused_its_next_change() {
    use crate::dest::{Dest, Store};
    let (dir, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (root, pidfile, a) = stoppable(dir.path(), Duration::from_secs(2));
    let dest_a = Dest::open_store(Store::Sftp(a), &root, Some("complete")).unwrap();
    let _claim_a = dest_a.claim(src.path()).unwrap();
    dest_a.check_root().unwrap();
    // A stalls: its server answers nothing, its claim's file is no longer touched.
    signal(&pidfile, "STOP");
    let mut b = storage(&root);
    b.timing(Duration::from_millis(300), Duration::from_millis(50));
    let _claim_b = b.claim(&b.folder(Path::new(""), false).unwrap(), "pid 2 on b").unwrap();
    let named = |at: &Path| super::super::claim::described(&fs::read_to_string(at.join(LOCK)).unwrap());
    assert_eq!(named(&root), "pid 2 on b", "B took the claim over");
    // A is back, alive, and would write on.
    signal(&pidfile, "CONT");
    assert!(dest_a.check_root().is_err(), "the run that lost its claim is told before its next change");
    assert!(dest_a.changing().is_err(), "and every change after it is refused");
    assert!(dest_a.write_file(Path::new("complete"), Path::new(".complete.partial"), b"").is_err(), "no marker");
    assert!(!root.join("complete").exists() && !root.join(".complete.partial").exists());
    // Nor removes anything there: B's copy in flight stays (A's end looks for its own leftovers).
    fs::write(root.join(format!(".c{}", crate::vocab::PARTIAL_SUFFIX)), "B's copy in flight").unwrap();
    assert_eq!(crate::copy::remove_partials(&dest_a).removed, 0, "B's partial removed by A");
    // Its refresher finds the same, and it never takes the claim back.
    assert!(matches!(dest_a.check_root(), Err(crate::dest::RootProblem::Elsewhere(_))));
    assert_eq!(named(&root), "pid 2 on b");
}

/// A run that lost its claim while freeing (its refresh stalled past the stale time, another run
/// over the same source took the destination over) must free nothing more: the other run knows
/// the freed files only from the journal as it read it at its start, so it takes a source file
/// freed now for a deletion to mirror and removes its copy, the only one left. The journal's lines
/// are a change like any other (design.md, invariant 10).
#[test]
fn a_run_whose_claim_was_taken_over_frees_no_source() {
    use crate::dest::{Dest, Store};
    let (dir, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let copied = copied_pairs(src.path(), &root, &["0"]);
    let pidfile = dir.path().join("pid");
    let mut a = Sftp::open(watched_session(&pidfile, None), &root).unwrap();
    a.timing(Duration::from_secs(2), Duration::from_millis(50));
    let dest_a = Dest::open_store(Store::Sftp(a), &root, None).unwrap();
    let claim_a = dest_a.claim(src.path()).unwrap();
    // A stalls; B, with the same stale time, takes the claim over once it is stale.
    signal(&pidfile, "STOP");
    let mut b = storage(&root);
    b.timing(Duration::from_secs(2), Duration::from_millis(50));
    let _claim_b = b.claim(&b.folder(Path::new(""), false).unwrap(), "pid 2 on b").unwrap();
    signal(&pidfile, "CONT");
    let no_stop = AtomicBool::new(false);
    let freed = crate::end::mover::delete_sources(src.path(), &dest_a, &copied, None, false, Duration::ZERO, &no_stop);
    assert!(src.path().join("0").exists(), "a source freed under a claim lost: {freed:?}");
    assert!(!root.join(crate::end::journal::JOURNAL).exists(), "A wrote in B's destination");
    drop(claim_a);
}

/// The claim's margin (design.md, invariant 10) takes every change sent while the claim is held
/// to land within half the stale time. A change sent then but delivered later (the client's link
/// down, its requests queued in its socket or in ssh, the TCP connection surviving the outage)
/// lands after another run found the claim stale and took the destination over: A's copy named
/// over B's. Shown here with A's server stopped (its requests wait in the pipe) just after
/// `Dest::changing` said held.
#[test]
#[ignore = "finding: a change sent while the claim is held but delivered after the stale time (requests queued through an outage) lands in the destination another run took over; SFTP has no conditional change to fence it"]
fn a_change_sent_while_held_but_delivered_after_a_takeover_does_not_land() {
    use crate::dest::{Dest, Store};
    let (dir, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (root, pidfile, a) = stoppable(dir.path(), Duration::from_secs(2));
    let naming = a.share();
    let dest_a = Dest::open_store(Store::Sftp(a), &root, None).unwrap();
    let _claim_a = dest_a.claim(src.path()).unwrap();
    // A's copy of `c`, written whole and answered, waits for its name.
    fs::write(root.join(".c.partial"), "A's copy").unwrap();
    dest_a.changing().unwrap();
    signal(&pidfile, "STOP");
    let renamed = std::thread::spawn(move || {
        let folder = naming.folder(Path::new(""), false).unwrap();
        naming.rename(&folder, Path::new(".c.partial"), &folder, Path::new("c"))
    });
    let mut b = storage(&root);
    b.timing(Duration::from_secs(2), Duration::from_millis(50));
    let _claim_b = b.claim(&b.folder(Path::new(""), false).unwrap(), "pid 2 on b").unwrap();
    fs::write(root.join("c"), "B's copy").unwrap();
    signal(&pidfile, "CONT");
    let _ = renamed.join().unwrap();
    assert_eq!(fs::read_to_string(root.join("c")).unwrap(), "B's copy", "A's late rename landed in B's destination");
}

/// `Some(changing)` once `dest.changing()` answers as `want` (Ok or not), within 10 s.
fn until_changing(dest: &crate::dest::Dest, want: bool) -> Option<io::Result<()>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = dest.changing();
        if r.is_ok() == want {
            return Some(r);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A claim whose refresh is merely slow (its server stalled, nobody took the claim) pauses the
/// run's changes while unconfirmed, and lets them go on once a refresh confirms it again.
#[test]
fn a_claim_not_confirmed_lately_pauses_changes_until_it_is_again() {
    use crate::dest::{Dest, Store};
    let (dir, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (root, pidfile, a) = stoppable(dir.path(), Duration::from_millis(600));
    let dest = Dest::open_store(Store::Sftp(a), &root, None).unwrap();
    let _claim = dest.claim(src.path()).unwrap();
    dest.changing().unwrap();
    signal(&pidfile, "STOP");
    let paused = until_changing(&dest, false);
    // The whole destination waits (the target pauses), not each file on its own: asked while the
    // server is still stopped (a claim not held answers without it).
    let still_paused = paused.as_ref().is_some_and(|p| p.as_ref().is_err_and(|e| dest.cannot_take_files(e)));
    // Going on before any assert: a claim dropped while its server is stopped would wait for it.
    signal(&pidfile, "CONT");
    let paused = paused.expect("changes paused within 10 s of the stall").unwrap_err();
    assert!(paused.to_string().contains("last confirmed"));
    assert!(until_changing(&dest, true).is_some(), "changes go on once confirmed again");
    // The root's look too, once confirmed (polled: a loaded machine may let the 300 ms the claim
    // is held after a touch pass before the look; it is then unconfirmed again, and says so).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = dest.check_root() {
        assert!(Instant::now() < deadline, "the root's look refused for 10 s after the stall: {e:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(still_paused, "a claim not held is the destination's trouble, not a file's");
}

/// The flush before the marker (and the one before freeing sources) must make durable every
/// name the copy holds, not only those this process made: a run that resumes a copy (the run
/// before it killed after naming copies, before flushing their folders) finds those copies
/// whole and names nothing there, and a flush of only the folders it touched leaves their
/// entries unflushed under a marker (a server that crashes then loses them; the marker stays).
#[test]
fn the_flush_of_everything_reaches_folders_an_earlier_run_named_copies_in() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    // The earlier run: a copy named in a/b, killed before any flush of a/b.
    let earlier = storage(&root);
    let folder = earlier.folder(Path::new("a/b"), true).unwrap();
    let w = copy(&earlier, &folder, ".c.partial", b"bytes").unwrap();
    earlier.complete(&w).unwrap();
    earlier.rename(&folder, Path::new(".c.partial"), &folder, Path::new("c")).unwrap();
    drop(earlier);
    // This run: nothing to copy again; its flush of everything, as before the marker.
    let (pidfile, log) = (dir.path().join("pid"), dir.path().join("log"));
    let now = Sftp::open(watched_session(&pidfile, Some(&log)), &root).unwrap();
    // It finds the copy whole, as a resumed run does, and names nothing.
    let found = now.folder(Path::new("a/b"), false).unwrap();
    assert!(now.look(&found, Path::new("c")).unwrap().is_file());
    now.flush_all(&now.folder(Path::new(""), false).unwrap()).unwrap();
    drop(now);
    let logged = fs::read_to_string(&log).unwrap();
    // With the entries that lead to it: b in a, a in the root (made by the earlier run too).
    for folder in ["a/b", "a"] {
        let opened = format!("open \"{}\" flags READ", root.join(folder).display());
        assert!(logged.contains(&opened), "{folder} not opened to be fsynced:\n{logged}");
    }
}

/// The server's log (VERBOSE) of a freeing of `names` over SFTP, whose copies were written
/// straight to the server's disk, not over SFTP (nothing fsynced them), and the destination.
fn freeing_logged(names: &[&str]) -> (String, tempfile::TempDir) {
    use crate::dest::{Dest, Store};
    let (src, dst, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let copied = copied_pairs(src.path(), dst.path(), names);
    let (pidfile, log) = (logs.path().join("pid"), logs.path().join("log"));
    let storage = Sftp::open(watched_session(&pidfile, Some(&log)), dst.path()).unwrap();
    let dest = Dest::open_store(Store::Sftp(storage), dst.path(), None).unwrap();
    let claim = dest.claim(src.path()).unwrap();
    let no_stop = AtomicBool::new(false);
    let report =
        crate::end::mover::delete_sources(src.path(), &dest, &copied, None, false, Duration::ZERO, &no_stop).unwrap();
    assert_eq!(report.deleted.len(), names.len(), "{report:?}");
    drop((claim, dest));
    (fs::read_to_string(&log).unwrap(), dst)
}

/// A copy this run did not write (an unrecorded destination filled by `rsync`, a local run on the
/// server killed before its flush) may still be in the server's page cache only: the flush before
/// any source is freed must fsync each proven copy itself, not only the folders, or a power cut on
/// the server after the freeing loses both (docs/design.md, "The end of a run", Freeing (4)).
#[test]
fn a_copy_this_run_did_not_write_is_fsynced_on_the_server_before_its_source_is_freed() {
    let (logged, dst) = freeing_logged(&["0", "1"]);
    let journal = format!("open \"{}\"", dst.path().join(crate::end::journal::JOURNAL).display());
    let journaled = logged.find(&journal).expect("the journal is written before any source goes");
    for rel in ["0", "1"] {
        let fsynced = format!("fsync \"{}\"", dst.path().join(rel).display());
        let at = logged.find(&fsynced);
        assert!(at.is_some_and(|at| at < journaled), "{rel} not fsynced before the freeing began:\n{logged}");
    }
}

/// The journal made by the freeing is the only record that its sources left on purpose: a later
/// run without it takes the copies of freed chunks for stale ones. Its entry in the root must be
/// durable before its lines vouch for anything (the fsync of the file alone does not promise its
/// name): the root is fsynced after the journal is made, before the lines of the first batch are
/// flushed (the unlinks come after that flush).
#[test]
fn the_journal_made_by_the_freeing_has_its_name_flushed_before_its_first_lines() {
    let (logged, dst) = freeing_logged(&["0"]);
    let journal = dst.path().join(crate::end::journal::JOURNAL);
    let made = logged.find(&format!("open \"{}\" flags WRITE,CREATE,EXCL", journal.display())).expect("made");
    let last_flush = logged.rfind(&format!("fsync \"{}\"", journal.display())).expect("its lines flushed");
    // The server ends its log lines with "\r\n": the root's line, not a file's below it.
    let root_flushed = logged[made..].find(&format!("fsync \"{}\"\r", dst.path().display())).map(|at| made + at);
    assert!(
        root_flushed.is_some_and(|at| at < last_flush),
        "the root not fsynced after the journal's making:\n{logged}"
    );
}

/// The same folder claimed by a run copying to it as a local path (on the server itself, or
/// through a mounted share) and by a run copying to it over ssh: the lock file has the same name
/// in both, but the local claim is an OS lock on a file it never touches, and the ssh claim is the
/// file alone. Each must refuse the other (design.md, invariant 10), whichever came first.
#[test]
fn a_local_claim_and_an_ssh_claim_on_one_folder_refuse_each_other() {
    use crate::dest::claim;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let mut s = storage(&root);
    s.timing(Duration::from_millis(300), Duration::from_millis(50));
    let folder = s.folder(Path::new(""), false).unwrap();
    // Local first: the ssh run waits out the stale time, then takes the file over.
    // The local run touches its file as often as the ssh run looks (tests shorten both).
    let timing = claim::Timing { stale: Duration::from_millis(300), refresh: Duration::from_millis(50) };
    let local = claim::Claim::held(&root, "pid 1 on the server, copying /acq/a\n", Arc::default(), timing).unwrap();
    let over_ssh = s.claim(&folder, "pid 2 on the microscope, copying /acq/b");
    let ssh_refused = over_ssh.is_err();
    drop((over_ssh, local));
    // Over ssh first: the local run finds a file nobody locks.
    let _held = s.claim(&folder, "pid 3 on the microscope, copying /acq/c").unwrap();
    let local_refused =
        claim::Claim::held(&root, "pid 4 on the server, copying /acq/d\n", Arc::default(), timing).is_err();
    assert_eq!((ssh_refused, local_refused), (true, true), "(ssh run refused, local run refused)");
}

/// Copies at the destination `dst` of the source files `names` (bytes: the name), as the mover
/// gets them; the copies' mtimes are the sources'.
fn copied_pairs(src: &Path, dst: &Path, names: &[&str]) -> Vec<crate::vocab::Copied> {
    names
        .iter()
        .map(|rel| {
            for root in [src, dst] {
                fs::write(root.join(rel), rel.as_bytes()).unwrap();
            }
            let ident = crate::sys::path_identity(&src.join(rel)).unwrap();
            crate::vocab::Copied { rel: rel.into(), ident, hash: None }
        })
        .collect()
}

/// Freeing's proof over ssh by the server's digests (`server_hash.rs`): a copy damaged with its size
/// and mtime kept differs, a link planted at a copy's name is never hashed through, a name with a
/// newline is proven, and only the damaged and linked ones are not proven; none of them read back.
#[test]
fn the_servers_digests_prove_copies_and_a_damaged_or_linked_copy_is_not_proven() {
    use crate::dest::server_hash::{local_exec, Algo, Hasher};
    use crate::dest::{Dest, Store};
    let (src, dst, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let names = ["good", "new\nline\\", "damaged", "linked"];
    let copied = copied_pairs(src.path(), dst.path(), &names);
    let damaged = dst.path().join("damaged");
    let mtime = fs::metadata(&damaged).unwrap().modified().unwrap();
    fs::write(&damaged, b"damageX").unwrap();
    File::options().write(true).open(&damaged).unwrap().set_modified(mtime).unwrap();
    // A link to a file holding the very bytes of the source: hashed through, it would match.
    fs::write(bin.path().join("elsewhere"), b"linked").unwrap();
    fs::remove_file(dst.path().join("linked")).unwrap();
    std::os::unix::fs::symlink(bin.path().join("elsewhere"), dst.path().join("linked")).unwrap();
    let dest = Dest::open_store(Store::Sftp(storage(dst.path())), dst.path(), None).unwrap();
    dest.hash_on_server(Hasher { exec: local_exec(bin.path(), "/usr/bin:/bin"), algo: Algo::Sha256 });
    let proof = crate::end::mover::prove(src.path(), &dest, copied, &AtomicBool::new(false));
    let proven: Vec<PathBuf> = proof.proven.iter().map(|c| c.rel.clone()).collect();
    assert_eq!(proven, [PathBuf::from("good"), PathBuf::from("new\nline\\")]);
    assert_eq!(proof.differs, [PathBuf::from("damaged")]);
    assert_eq!(proof.kept.iter().map(|(rel, _)| rel.clone()).collect::<Vec<_>>(), [PathBuf::from("linked")]);
    assert_eq!((proof.by_server, proof.read_back), (2, 0));
}

/// A link put at a copy's name after the look before the hash, and the copy put back before the
/// look after it (design.md, "proof by the server's hash", Links: the window left). SFTP's looks
/// see size and mtime only, which a rename keeps; the ctime a rename changes, and the inode, are
/// seen only by the server's shell (`stat` of each name before and after the hash, in the same
/// command, would close it). Here the "server's" sha256sum does the swap itself, around its hash.
#[test]
#[ignore = "finding (the documented window): a copy swapped for a link to good bytes during the server's hash is proven"]
fn a_copy_swapped_for_a_link_during_the_servers_hash_is_not_proven() {
    use crate::dest::server_hash::{local_exec, Algo, Hasher};
    use crate::dest::{Dest, Store};
    let [src, dst, bin] = temp_dirs();
    let copied = copied_pairs(src.path(), dst.path(), &["a"]);
    let damaged = dst.path().join("a");
    let mtime = fs::metadata(&damaged).unwrap().modified().unwrap();
    fs::write(&damaged, b"X").unwrap();
    File::options().write(true).open(&damaged).unwrap().set_modified(mtime).unwrap();
    fs::write(bin.path().join("good"), b"a").unwrap();
    let tools = bin.path().join("tools");
    fs::create_dir(&tools).unwrap();
    let swap = format!(
        "#!/bin/sh\nfor f; do mv \"$f\" \"$f.orig\"; ln -s {} \"$f\"; /usr/bin/sha256sum \"$f\"; rm \"$f\"; mv \"$f.orig\" \"$f\"; done\n",
        bin.path().join("good").display()
    );
    fs::write(tools.join("sha256sum"), swap).unwrap();
    Command::new("chmod").arg("+x").arg(tools.join("sha256sum")).status().unwrap();
    let dest = Dest::open_store(Store::Sftp(storage(dst.path())), dst.path(), None).unwrap();
    let path = format!("{}:/usr/bin:/bin", tools.display());
    dest.hash_on_server(Hasher { exec: local_exec(bin.path(), &path), algo: Algo::Sha256 });
    let proof = crate::end::mover::prove(src.path(), &dest, copied, &AtomicBool::new(false));
    assert_eq!(fs::read(&damaged).unwrap(), b"X", "the damaged copy is back under its name");
    assert!(proof.proven.is_empty(), "a damaged copy proven: {proof:?}");
}

/// A server whose hasher fails (here: a name it cannot read makes the command exit non-zero)
/// proves nothing by its lines: the copies are read back instead, and still proven or not.
#[test]
fn copies_the_server_could_not_hash_are_read_back() {
    use crate::dest::server_hash::{local_exec, Algo, Hasher};
    use crate::dest::{Dest, Store};
    let (src, dst, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let copied = copied_pairs(src.path(), dst.path(), &["a", "b", "unreadable"]);
    let dest = Dest::open_store(Store::Sftp(storage(dst.path())), dst.path(), None).unwrap();
    // The "server's" sha256sum cannot read one file (its path there is one it refuses).
    let fake = bin.path().join("tools");
    fs::create_dir(&fake).unwrap();
    let wrapper = "#!/bin/sh\nfor f; do case \"$f\" in *unreadable) echo \"sha256sum: $f: Permission denied\" >&2; exit 1;; esac; done\nexec /usr/bin/sha256sum \"$@\"\n";
    fs::write(fake.join("sha256sum"), wrapper).unwrap();
    Command::new("chmod").arg("+x").arg(fake.join("sha256sum")).status().unwrap();
    let path = format!("{}:/usr/bin:/bin", fake.display());
    dest.hash_on_server(Hasher { exec: local_exec(bin.path(), &path), algo: Algo::Sha256 });
    let proof = crate::end::mover::prove(src.path(), &dest, copied, &AtomicBool::new(false));
    assert_eq!((proof.proven.len(), proof.by_server, proof.read_back), (3, 0, 3), "{proof:?}");
}

/// A copy read straight through has READs sent ahead of it: what it reads is the file's bytes in
/// order whatever the reads' sizes, and a seek in the middle (the READs ahead thrown away) reads
/// from there.
#[test]
fn a_copy_read_with_reads_ahead_is_its_bytes_in_order_across_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..5_000_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(dir.path().join("big"), &data).unwrap();
    let s = storage(dir.path());
    let root = s.folder(Path::new(""), false).unwrap();
    let mut whole = Vec::new();
    s.read(&root, Path::new("big")).unwrap().read_to_end(&mut whole).unwrap();
    assert!(whole == data, "read whole");
    let mut r = s.read(&root, Path::new("big")).unwrap();
    let mut small = vec![0u8; 7_919];
    let mut got = Vec::new();
    while got.len() < 1_000_000 {
        let n = r.read(&mut small).unwrap();
        got.extend_from_slice(&small[..n]);
    }
    assert!(got[..] == data[..got.len()], "read in small pieces");
    assert_eq!(r.seek(SeekFrom::Start(4_000_000)).unwrap(), 4_000_000);
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert!(tail[..] == data[4_000_000..], "read after a seek forward");
    r.seek(SeekFrom::Start(10)).unwrap();
    let mut head = [0u8; 100];
    r.read_exact(&mut head).unwrap();
    assert_eq!(head[..], data[10..110]);
}

/// A "server" whose shell sees other files than SFTP does: its sha256sum hashes each name below
/// `elsewhere`, where every file holds "other".
fn hasher_elsewhere(bin: &Path, elsewhere: &Path) -> crate::dest::server_hash::Hasher {
    let plant = format!("mkdir -p \"{0}$(dirname \"$f\")\"; echo other > \"{0}$f\"; ", elsewhere.display());
    hasher_below(bin, elsewhere, &plant)
}

/// A "server" whose sha256sum hashes each name below `elsewhere`, after `plant` (shell, per name
/// `$f`).
fn hasher_below(bin: &Path, elsewhere: &Path, plant: &str) -> crate::dest::server_hash::Hasher {
    use crate::dest::server_hash::{local_exec, Algo, Hasher};
    let tools = bin.join("tools");
    fs::create_dir_all(&tools).unwrap();
    let other = format!(
        "#!/bin/sh\nfor f; do {plant}(cd {0} && /usr/bin/sha256sum \".$f\" | sed \"s| \\./| /|\"); done\n",
        elsewhere.display()
    );
    fs::write(tools.join("sha256sum"), other).unwrap();
    Command::new("chmod").arg("+x").arg(tools.join("sha256sum")).status().unwrap();
    Hasher { exec: local_exec(bin, &format!("{}:/usr/bin:/bin", tools.display())), algo: Algo::Sha256 }
}

/// The server's hasher is used only if its shell sees the files SFTP writes: one that hashes other
/// files under the same paths (an SFTP chroot, another namespace) is refused, and the probe's file
/// is removed either way.
#[test]
fn a_hasher_that_does_not_see_the_files_sftp_writes_is_not_used() {
    use crate::dest::server_hash::{local_exec, sees_the_copies, Algo, Hasher};
    use crate::dest::{Dest, Store};
    let (dst, bin, elsewhere) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dest = Dest::open_store(Store::Sftp(storage(dst.path())), dst.path(), None).unwrap();
    let same = Hasher { exec: local_exec(bin.path(), "/usr/bin:/bin"), algo: Algo::Sha256 };
    assert_eq!(sees_the_copies(&dest, &same), Ok(()));
    let apart = hasher_elsewhere(bin.path(), elsewhere.path());
    let refused = sees_the_copies(&dest, &apart);
    assert!(refused.as_ref().is_err_and(|why| why.contains("does not see")), "{refused:?}");
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0, "the probe is removed");
}

/// `softcopy verify --checksum` over ssh with a server whose shell sees other files: the first
/// copy read back gives another digest than the server's, so every copy is read back, and the
/// copy (identical) is found identical, not different everywhere.
#[test]
fn verify_reads_every_copy_back_when_the_server_hashes_other_files() {
    use crate::dest::{Dest, Store};
    let [src, dst, bin, elsewhere] = temp_dirs();
    copied_pairs(src.path(), dst.path(), &["a", "b", "c"]);
    let dest = Dest::open_store(Store::Sftp(storage(dst.path())), dst.path(), None).unwrap();
    dest.hash_on_server(hasher_elsewhere(bin.path(), elsewhere.path()));
    let report = verified_by_content(src.path(), &dest, &AtomicBool::new(false));
    assert!(report.content_mismatch.is_empty() && report.ok(), "{report:?}");
}

/// `softcopy verify --checksum` over ssh trusts the server's digests once the first copy it hashed,
/// read back, agrees. A shell whose view is another tree holding good copies of the same files
/// (an earlier copy of the acquisition at the same path outside an SFTP chroot, another node
/// behind the same host name) passes that check, and a copy damaged in the tree SFTP serves is
/// then reported identical: one copy agreeing does not show the shell sees the files SFTP serves.
#[test]
#[ignore = "finding: verify --checksum over ssh checks the shell's view on one copy; a view holding good copies hides a damaged one"]
fn verify_finds_a_damaged_copy_whatever_tree_the_servers_shell_sees() {
    use crate::dest::{Dest, Store};
    let [src, dst, bin, elsewhere] = temp_dirs();
    copied_pairs(src.path(), dst.path(), &["a", "b"]);
    // The shell's tree: good copies of both, at the same paths.
    let theirs = elsewhere.path().join(dst.path().strip_prefix("/").unwrap());
    fs::create_dir_all(&theirs).unwrap();
    copied_pairs(src.path(), &theirs, &["a", "b"]);
    // The copy SFTP serves damaged, its size and mtime kept: the one compared second (verify
    // compares in the source's listing order; the first is the one read back).
    let second = fs::read_dir(src.path()).unwrap().nth(1).unwrap().unwrap().file_name();
    let damaged = dst.path().join(&second);
    let mtime = fs::metadata(&damaged).unwrap().modified().unwrap();
    fs::write(&damaged, b"X").unwrap();
    File::options().write(true).open(&damaged).unwrap().set_modified(mtime).unwrap();
    let dest = Dest::open_store(Store::Sftp(storage(dst.path())), dst.path(), None).unwrap();
    dest.hash_on_server(hasher_below(bin.path(), elsewhere.path(), ""));
    let report = verified_by_content(src.path(), &dest, &AtomicBool::new(false));
    assert_eq!(report.content_mismatch, [PathBuf::from(second)], "{report:?}");
}

/// `N` fresh temporary folders.
fn temp_dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

/// `src` against `dest` with the contents compared (`softcopy verify --checksum`).
fn verified_by_content(src: &Path, dest: &crate::dest::Dest, stop: &AtomicBool) -> crate::end::verify::Report {
    let check = crate::end::verify::Check {
        marker: "complete",
        arrays: &[],
        content: true,
        prune: None,
        landed: None,
        exclude: None,
    };
    crate::end::verify::verify(src, dest, &check, stop).unwrap()
}

/// A session whose server logs each request at `level` to `log`.
fn logged_session(log: &Path, level: &str) -> Session {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("exec {SERVER} -e -l {level} 2>>{}", log.display())]);
    Session::spawn(c, Options { handshake_timeout: Duration::from_secs(10), ..Options::default() }).unwrap()
}

/// Each copy into a folder used to wait for the LSTATs of its folder's components: a folder is
/// looked at once a run, one this run made not at all, and one removed is looked at (and made)
/// again.
#[test]
fn a_folder_is_looked_at_once_a_run_and_one_made_here_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("old/x")).unwrap();
    let log = dir.path().join("log");
    let s = Sftp::open(logged_session(&log, "VERBOSE"), &root).unwrap();
    for _ in 0..3 {
        s.folder(Path::new("old/x"), true).unwrap();
        s.folder(Path::new("new/y"), true).unwrap();
    }
    s.remove_folder(&s.folder(Path::new("new"), false).unwrap(), Path::new("y")).unwrap();
    s.folder(Path::new("new/y"), true).unwrap();
    assert!(root.join("new/y").is_dir(), "a folder removed is made again");
    // A new folder in a known one: its MKDIR alone; one already there: refused, then looked at.
    s.folder(Path::new("new/z"), true).unwrap();
    fs::create_dir(root.join("old/x/w")).unwrap();
    s.folder(Path::new("old/x/w"), true).unwrap();
    assert!(root.join("new/z").is_dir());
    drop(s);
    let logged = fs::read_to_string(&log).unwrap();
    let looks = |rel: &str| logged.matches(&format!("lstat name \"{}\"", root.join(rel).display())).count();
    assert_eq!(
        [looks("old"), looks("old/x"), looks("new"), looks("new/y"), looks("new/z"), looks("old/x/w")],
        [2, 2, 1, 1, 0, 1],
        "looks at old, old/x, new, new/y, new/z, old/x/w (old/x/w refused its MKDIR: its whole path looked \
         at; y made again in new, known, by its MKDIR alone):\n{logged}"
    );
}
