//! The client against OpenSSH's real `sftp-server`, spawned directly over pipes (no network).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;

const SERVER: &str = "/usr/lib/openssh/sftp-server";
/// Far beyond any answer's time: a bound so that a broken client fails a test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(20);

fn server() -> Session {
    Session::spawn(Command::new(SERVER), opts()).expect("OpenSSH's sftp-server starts")
}

/// The tests' options: a handshake that does not come within 10 s fails the test instead of
/// hanging it.
fn opts() -> Options {
    Options { handshake_timeout: Duration::from_secs(10), ..Options::default() }
}

/// A server and its pid as it wrote it itself, never as the code under test says: a signal sent to
/// a wrong pid (0 is this process group, 1 is init) must not be what a broken client causes.
fn server_and_pid(dir: &Path) -> (Session, String) {
    let pidfile = dir.join("pid");
    let mut c = Command::new("sh");
    c.args(["-c", &format!("echo $$ > {}; exec {SERVER}", pidfile.display())]);
    let s = Session::spawn(c, opts()).unwrap();
    (s, std::fs::read_to_string(&pidfile).unwrap().trim().to_string())
}

/// One request and its answer, within `LIMIT`.
fn ask(s: &Session, r: &Request<'_>) -> Result<Reply, SftpError> {
    s.submit(r).wait_timeout(LIMIT).expect("answered within the limit")
}

fn b(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn handle(r: Result<Reply, SftpError>) -> Handle {
    match r {
        Ok(Reply::Handle(h)) => h,
        other => panic!("no handle: {other:?}"),
    }
}

/// The copier's chain for one file: partial name, writes, mtime, fsync, close, posix-rename.
fn publish(s: &Session, partial: &Path, fin: &Path, data: &[u8], mtime: u32) -> Result<(), SftpError> {
    let h = handle(ask(s, &Request::Open { path: b(partial), mode: OpenMode::CreateNew, attrs: Attrs::default() }));
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut n = s.submit_write(&h, 0, data, 0, &tx);
    assert_eq!(n, data.len().div_ceil(s.max_write()), "one answer per WRITE");
    for r in [Request::Fsetstat { handle: &h, attrs: Attrs::mtime(mtime) }, Request::Fsync(&h), Request::Close(&h)] {
        s.submit_to(&r, 0, &tx);
        n += 1;
    }
    for _ in 0..n {
        rx.recv_timeout(LIMIT).expect("every request is answered").result?;
    }
    ask(s, &Request::PosixRename { from: b(partial), to: b(fin) }).map(|_| ())
}

#[test]
fn a_session_is_shared_by_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Session>();
}

#[test]
fn a_file_written_under_a_partial_name_lands_whole_with_its_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = server();
    assert!(s.max_write() > 32 * 1024, "limits@openssh.com raises the write size: {}", s.max_write());
    assert!(s.has_extension("posix-rename@openssh.com") && !s.has_extension("no-such@example.org"));
    let data: Vec<u8> = (0..s.max_write() * 3 + 17).map(|i| (i % 251) as u8).collect();
    let (partial, fin) = (dir.path().join("c.partial"), dir.path().join("c"));
    publish(&s, &partial, &fin, &data, 1_700_000_000).unwrap();
    assert_eq!(std::fs::read(&fin).unwrap(), data);
    assert_eq!(std::fs::metadata(&fin).unwrap().mtime(), 1_700_000_000);
    assert!(!partial.exists());
}

#[test]
fn a_partial_name_that_exists_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    std::fs::write(&p, b"someone's").unwrap();
    let r = ask(&server(), &Request::Open { path: b(&p), mode: OpenMode::CreateNew, attrs: Attrs::default() });
    let e = r.unwrap_err();
    // sftp-server answers EEXIST with the generic FAILURE: the caller cannot tell it from ENOSPC.
    assert!(matches!(e, SftpError::Status { code: StatusCode::Failure, .. }), "{e:?}");
    assert!(!e.is_connection_lost());
    assert_eq!(std::fs::read(&p).unwrap(), b"someone's");
}

#[test]
fn a_missing_folder_is_not_found_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = server();
    let e = ask(&s, &Request::Lstat(b(&dir.path().join("no/such")))).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().starts_with("lstat: "), "the message names the request: {e}");
    assert!(matches!(ask(&s, &Request::Lstat(b(dir.path()))), Ok(Reply::Attrs(a)) if a.is_dir()));
}

#[test]
fn requests_pipelined_from_one_thread_run_in_order_thousands_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = Session::spawn(Command::new(SERVER), Options { max_in_flight: 1000, ..opts() }).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let paths: Vec<_> = (0..2000u64).map(|i| dir.path().join(i.to_string())).collect();
    // Each folder is made and then looked at without waiting: the order makes the stat find it.
    for (i, p) in paths.iter().enumerate() {
        s.submit_to(&Request::Mkdir { path: b(p), attrs: Attrs::default() }, 2 * i as u64, &tx);
        s.submit_to(&Request::Stat(b(p)), 2 * i as u64 + 1, &tx);
    }
    let mut seen = vec![false; 4000];
    for _ in 0..4000 {
        let d = rx.recv_timeout(LIMIT).expect("every request is answered");
        let ok = matches!(d.result, Ok(Reply::Done)) || matches!(d.result, Ok(Reply::Attrs(a)) if a.is_dir());
        assert!(ok, "request {}: {:?}", d.tag, d.result);
        seen[d.tag as usize] = true;
    }
    assert!(seen.iter().all(|&x| x));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2000);
}

#[test]
fn a_listing_names_every_entry_and_a_link_is_seen_as_a_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("l")).unwrap();
    let s = server();
    let h = handle(ask(&s, &Request::Opendir(b(dir.path()))));
    let mut names = Vec::new();
    while let Reply::Names(batch) = ask(&s, &Request::Readdir(&h)).unwrap() {
        names.extend(batch.into_iter().map(|n| (String::from_utf8(n.filename).unwrap(), n.attrs)));
    }
    ask(&s, &Request::Close(&h)).unwrap();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let listed: Vec<_> = names.iter().map(|n| n.0.as_str()).collect();
    assert_eq!(listed, [".", "..", "f", "l"]);
    assert!(names[3].1.is_symlink());
    assert!(matches!(ask(&s, &Request::Lstat(b(&dir.path().join("l")))), Ok(Reply::Attrs(a)) if a.is_symlink()));
}

#[test]
fn reads_removals_hard_links_and_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let (f, g, d) = (dir.path().join("f"), dir.path().join("g"), dir.path().join("d"));
    std::fs::write(&f, b"hello").unwrap();
    std::fs::create_dir(&d).unwrap();
    let s = server();
    let h = handle(ask(&s, &Request::Open { path: b(&f), mode: OpenMode::Read, attrs: Attrs::default() }));
    assert_eq!(ask(&s, &Request::Read { handle: &h, offset: 1, len: 100 }).unwrap(), Reply::Data(b"ello".to_vec()));
    assert_eq!(ask(&s, &Request::Read { handle: &h, offset: 5, len: 100 }).unwrap(), Reply::Eof);
    assert!(matches!(ask(&s, &Request::Fstat(&h)), Ok(Reply::Attrs(a)) if a.size == Some(5)));
    ask(&s, &Request::Close(&h)).unwrap();
    ask(&s, &Request::Setstat { path: b(&f), attrs: Attrs::mtime(1_600_000_000) }).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().mtime(), 1_600_000_000);
    let canonical = dir.path().canonicalize().unwrap();
    match ask(&s, &Request::Realpath(b(&d.join("..")))).unwrap() {
        Reply::Names(n) => assert_eq!(n[0].filename, b(&canonical)),
        other => panic!("{other:?}"),
    }
    ask(&s, &Request::Hardlink { from: b(&f), to: b(&g) }).unwrap();
    assert_eq!(std::fs::metadata(&g).unwrap().ino(), std::fs::metadata(&f).unwrap().ino());
    match ask(&s, &Request::Statvfs(b(dir.path()))).unwrap() {
        Reply::Statvfs(v) => assert!(v.available_bytes() > 0 && v.name_max >= 255, "{v:?}"),
        other => panic!("{other:?}"),
    }
    ask(&s, &Request::Remove(b(&f))).unwrap();
    ask(&s, &Request::Rmdir(b(&d))).unwrap();
    assert!(!f.exists() && !d.exists() && g.exists());
}

#[test]
fn a_killed_server_fails_every_request_as_lost_not_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pid) = server_and_pid(dir.path());
    assert_eq!(s.pid().to_string(), pid);
    // SIGSTOP first, so the requests below are surely in flight when the server dies.
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let tickets: Vec<_> = (0..100).map(|_| s.submit(&Request::Stat(b(dir.path())))).collect();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    for t in tickets {
        let e = t.wait_timeout(LIMIT).expect("answered as lost").unwrap_err();
        assert!(e.is_connection_lost(), "{e:?}");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
    }
    assert!(s.lost().is_some());
    assert!(ask(&s, &Request::Stat(b(dir.path()))).unwrap_err().is_connection_lost());
}

#[test]
fn a_program_that_cannot_serve_says_why_in_one_line() {
    let mut c = Command::new("sh");
    c.args(["-c", "echo 'ssh: Could not resolve hostname nowhere' >&2; exit 255"]);
    let e = Session::spawn(c, opts()).err().expect("no session");
    assert!(e.is_connection_lost(), "{e:?}");
    assert_eq!(e.to_string(), "the SFTP connection is lost: ssh: Could not resolve hostname nowhere");
    let e = Session::spawn(Command::new("false"), opts()).err().expect("no session");
    assert!(e.is_connection_lost(), "{e:?}");
    assert!(e.to_string().len() > "the SFTP connection is lost: ".len(), "silent, yet a reason: {e}");
    let e = Session::spawn(Command::new("/no/such/ssh"), opts()).err().expect("no session");
    assert!(matches!(e, SftpError::Spawn { .. }), "{e:?}");
}

#[test]
fn a_server_that_does_not_offer_its_limits_gets_writes_of_the_drafts_minimum() {
    // Denied by its administrator, limits@openssh.com is left out of the server's VERSION.
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(SERVER);
    c.args(["-P", "limits"]);
    let s = Session::spawn(c, opts()).unwrap();
    assert_eq!(s.max_write(), 32 * 1024);
    let data = vec![7u8; 100_000];
    publish(&s, &dir.path().join("p"), &dir.path().join("f"), &data, 1).unwrap();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
}

#[test]
fn an_extension_the_server_did_not_announce_is_refused_before_anything_is_sent() {
    // A server announcing version 3 and nothing else, then reading forever and answering nothing:
    // a request sent to it would never be answered.
    let mut c = Command::new("sh");
    c.args(["-c", r"printf '\000\000\000\005\002\000\000\000\003'; cat >/dev/null"]);
    let s = Session::spawn(c, opts()).unwrap();
    assert_eq!(s.max_write(), 32 * 1024);
    assert!(!s.has_extension("posix-rename@openssh.com"));
    // Refused at once: were it sent, nothing would ever answer (a short bound keeps that quick).
    let r = s.submit(&Request::PosixRename { from: b"/a", to: b"/b" }).wait_timeout(Duration::from_secs(5));
    assert!(matches!(r, Some(Err(SftpError::Unsupported("posix-rename@openssh.com")))), "{r:?}");
}

#[test]
fn the_write_size_follows_the_servers_limit_within_a_packet() {
    assert_eq!(session::write_size(0), 32 * 1024, "no limit stated");
    assert_eq!(session::write_size(1000), 1000);
    assert_eq!(session::write_size(255 * 1024), 255 * 1024);
    assert_eq!(session::write_size(1 << 30), 255 * 1024);
}

#[test]
fn closing_waits_for_every_answer_and_ends_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pid) = server_and_pid(dir.path());
    assert_eq!(s.lost(), None);
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..500 {
        s.submit_to(&Request::Mkdir { path: b(&dir.path().join(i.to_string())), attrs: Attrs::default() }, i, &tx);
    }
    s.close();
    let answers: Vec<_> = rx.try_iter().collect();
    assert_eq!(answers.len(), 500);
    assert!(answers.iter().all(|d| matches!(d.result, Ok(Reply::Done))), "every request answered, none lost");
    // Reaped, not left a zombie.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_packet_of_a_size_no_server_sends_ends_the_session() {
    // A fake server: a packet length, then it reads our INIT (9 bytes) and exits.
    let start = |length: &str| {
        let mut c = Command::new("sh");
        c.args(["-c", &format!("printf '{length}'; head -c 9 >/dev/null")]);
        Session::spawn(c, opts()).err().expect("no session").to_string()
    };
    assert!(start(r"\000\000\000\000").ends_with("a packet of 0 bytes"));
    assert!(start(r"\377\377\377\377").ends_with("a packet of 4294967295 bytes"));
    // 4 MiB is the largest taken: it is read (and the stream then ends early).
    let e = start(r"\000\100\000\000");
    assert!(!e.contains("a packet of"), "{e}");
}

#[test]
fn a_long_complaint_is_kept_to_its_tail() {
    let mut c = Command::new("sh");
    c.args(["-c", "head -c 3000 /dev/zero | tr '\\0' x >&2; printf 'yz' >&2; exit 255"]);
    let e = Session::spawn(c, opts()).err().expect("no session").to_string();
    let said = e.strip_prefix("the SFTP connection is lost: ").expect(&e);
    assert_eq!(said.len(), 2048, "the last 2 KiB of what it said");
    assert!(said.ends_with("xyz"));
}

#[test]
fn a_malformed_reply_ends_the_session() {
    // VERSION; then, once our STAT of "/" (14 bytes) after the INIT (9) has come, a STATUS for it
    // that ends before its code; then it reads on (the shell holding the stream open) and never
    // answers again.
    let script = concat!(
        r"printf '\000\000\000\005\002\000\000\000\003'; head -c 23 >/dev/null; ",
        r"printf '\000\000\000\005\145\000\000\000\000'; cat >/dev/null"
    );
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    let s = Session::spawn(c, opts()).unwrap();
    let r = s.submit(&Request::Stat(b"/")).wait_timeout(LIMIT).expect("answered");
    assert!(matches!(r, Err(SftpError::Protocol(_))), "{r:?}");
    let next = s.submit(&Request::Stat(b"/")).wait_timeout(LIMIT).expect("answered at once");
    assert!(next.unwrap_err().is_connection_lost());
}

#[test]
fn a_program_that_never_answers_the_handshake_is_given_up() {
    let mut c = Command::new("sh");
    c.args(["-c", "cat >/dev/null"]);
    let options = Options { handshake_timeout: Duration::from_millis(200), ..opts() };
    let e = Session::spawn(c, options).err().expect("no session");
    assert!(e.is_connection_lost(), "{e:?}");
    assert!(e.to_string().contains("no answer to the SFTP handshake within 200ms"), "{e}");
}
