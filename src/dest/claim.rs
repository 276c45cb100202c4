//! One destination, one softcopy (docs/design.md, invariant 10): two runs writing the same
//! destination, or one inside the other's, would prune each other's chunks and publish each
//! other's markers. Each run claims its destination root with a lock on `.softcopy-lock` there,
//! held for the whole run and the file removed at its end (an OS lock: it goes away with the
//! process, so a crash leaves no claim behind, only the file). A run refuses to start inside a
//! folder another run has claimed, and never writes, reads or deletes in a folder below its root
//! that another run has claimed.
//!
//! The same file is an ssh run's claim (`sftp.rs`: no OS lock there, the file made exclusively and
//! touched every [`REFRESH`]), so the two are one protocol (docs/design.md, invariant 10): a local
//! claim touches its file too (an ssh run sees it live, never stale), and a local run that gets
//! the lock on a file saying [`TOUCHED`] takes it only once it stayed unchanged for the stale time.
//!
//! Across machines this is as good as the share's locking: NFSv4 and SMB carry these locks, sshfs
//! keeps them on the one client.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The claim's file, at the root of a destination.
pub const LOCK: &str = ".softcopy-lock";

/// The line an ssh run's claim file carries after its `who`: it is live while touched, and no OS
/// lock tells (a local claim's file has no such line: its lock tells, at once).
pub const TOUCHED: &str = "(a claim over ssh: live while this file is touched)";

/// How often a local run looks at an ssh run's claim file it waits for.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// How often a live claim's file is touched where it is kept by touching (docs/design.md, "The
/// ssh destination: the SFTP client").
pub const REFRESH: Duration = Duration::from_secs(5);
/// A claim's file seen unchanged this long, by a run waiting for it, is left by a run that is
/// gone: six refreshes missed.
pub const STALE: Duration = Duration::from_secs(30);

/// How a claim kept by touching is timed: tests shorten both.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a claim's file must be seen unchanged to be stale.
    pub stale: Duration,
    /// How often a claim made here is touched.
    pub refresh: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { stale: STALE, refresh: REFRESH }
    }
}

/// For tests only: the stale time of ssh claims, in seconds (docs/design.md, invariant 10). A
/// test that kills runs (`kill -9`) would wait [`STALE`] at each next start; refresh keeps its
/// ratio to the stale time, so a live run's claim is never seen stale sooner than it is touched.
pub const STALE_ENV: &str = "SOFTCOPY_CLAIM_STALE";

impl Timing {
    /// The timing of ssh claims: the default, unless a test set [`STALE_ENV`].
    pub fn for_ssh() -> Timing {
        Timing::stale_after(std::env::var(STALE_ENV).ok().as_deref())
    }

    /// The timing whose stale time is `given` seconds (the default where none or not a time).
    fn stale_after(given: Option<&str>) -> Timing {
        let stale = given.and_then(|s| s.trim().parse::<f64>().ok());
        match stale.and_then(|s| Duration::try_from_secs_f64(s).ok()).filter(|s| !s.is_zero()) {
            Some(stale) => Timing { stale, refresh: stale.mul_f64(REFRESH.as_secs_f64() / STALE.as_secs_f64()) },
            None => Timing::default(),
        }
    }

    /// How long after the last touch confirmed (sent, then its file read back as ours) the claim
    /// is taken as held: half the stale time; the other half is the margin in which changes
    /// already sent land before a waiting run can find the file stale (docs/design.md, invariant 10).
    pub fn hold_for(&self) -> Duration {
        self.stale / 2
    }
}

/// Whether this run still holds its claim, before a change (docs/design.md, invariant 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Held (or no claim taken: a one-off view of a destination).
    Held,
    /// Not confirmed lately (the destination slow or away): no change until it is again.
    Unconfirmed(String),
    /// Another run has the claim now, or its file is gone: never written to again by this run.
    Lost(String),
}

/// What a claim's refresher last learned, shared with the storage that asks before each change.
#[derive(Default)]
pub struct Holding(Mutex<Kept>);

#[derive(Default)]
enum Kept {
    #[default]
    Unclaimed,
    /// Its last touch was sent `at` (`wall`: the same on the wall clock) and its file found to be
    /// ours after it.
    Confirmed {
        at: Instant,
        wall: SystemTime,
        hold_for: Duration,
        who: String,
    },
    Lost(String),
}

impl Holding {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The claim `who` was found ours after a touch sent `at`; a claim lost stays lost.
    pub fn confirmed(&self, at: Instant, hold_for: Duration, who: &str) {
        let mut kept = self.kept();
        if !matches!(*kept, Kept::Lost(_)) {
            // The wall clock's age of `at` too: the monotonic clock stops while the machine sleeps
            // (suspended past the stale time, the claim may be another's when it wakes).
            let wall = SystemTime::now() - at.elapsed();
            *kept = Kept::Confirmed { at, wall, hold_for, who: who.trim().to_owned() };
        }
    }

    /// Another run has the claim (or its file is gone), for good.
    pub fn lost(&self, why: String) {
        let mut kept = self.kept();
        if !matches!(*kept, Kept::Lost(_)) {
            *kept = Kept::Lost(why);
        }
    }

    /// The claim was released by this run: nothing left to confirm.
    pub fn released(&self) {
        let mut kept = self.kept();
        if matches!(*kept, Kept::Confirmed { .. }) {
            *kept = Kept::Unclaimed;
        }
    }

    /// What the claim says of this run, while it is held.
    pub fn who(&self) -> Option<String> {
        match &*self.kept() {
            Kept::Confirmed { who, .. } => Some(who.clone()),
            _ => None,
        }
    }

    /// Whether the claim on `root` is held now, by what was last learned.
    pub fn standing(&self, root: &Path) -> Standing {
        match &*self.kept() {
            Kept::Unclaimed => Standing::Held,
            Kept::Confirmed { at, wall, hold_for, .. }
                if at.elapsed() < *hold_for && wall.elapsed().is_ok_and(|w| w < *hold_for) =>
            {
                Standing::Held
            }
            Kept::Confirmed { at, .. } => Standing::Unconfirmed(format!(
                "the claim on destination {} was last confirmed {} s ago: nothing is written there until it is again",
                root.display(),
                at.elapsed().as_secs()
            )),
            Kept::Lost(why) => Standing::Lost(why.clone()),
        }
    }
}

/// What a claim's file says, of the run `who` that made it: the claim is `Lost` when it names
/// another run or is gone.
pub fn judged(found: Option<&str>, who: &str, root: &Path) -> Result<(), String> {
    match found {
        Some(text) if text == who.trim() => Ok(()),
        Some(other) => Err(format!(
            "destination {} was taken over by another softcopy ({other}) while this run was away: \
             nothing more is written there",
            root.display()
        )),
        None => Err(format!(
            "the claim on destination {} is gone (its {LOCK} removed): nothing more is written there",
            root.display()
        )),
    }
}

/// A claimed destination: held, and its file touched, until dropped, when its file is removed
/// (still locked, so no run waiting for it can take a file that is no longer there: see
/// [`Claim::take`]) if it is still ours (an ssh run may have taken a claim whose touches stalled).
pub struct Claim {
    file: File,
    path: std::path::PathBuf,
    stop: Option<crossbeam_channel::Sender<()>>,
    toucher: Option<std::thread::JoinHandle<()>>,
    holding: std::sync::Arc<Holding>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.toucher.take() {
            let _ = t.join();
        }
        self.holding.released();
        if still_named(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// What a wait for an ssh run's claim file found.
enum Watched {
    /// It changed (or went) within the stale time: its run lives, or just ended.
    Live,
    /// Unchanged for the stale time: its run is gone.
    Stale,
}

/// How a claim failed: another softcopy has it, or it could not be looked at.
pub type Refusal = String;

impl Claim {
    /// Claims the destination `root` (canonical) for the run `who` describes ([`who`]).
    pub fn take(root: &Path, who: &str) -> Result<Claim, Refusal> {
        Claim::held(root, who, std::sync::Arc::default(), Timing::default())
    }

    /// [`Claim::take`], what its toucher learns kept in `holding`, timed by `timing`.
    pub fn held(root: &Path, who: &str, holding: std::sync::Arc<Holding>, timing: Timing) -> Result<Claim, Refusal> {
        for outer in root.ancestors().skip(1) {
            if let Some(holder) = held_in(outer) {
                return Err(format!(
                    "destination {} is inside {}, which another softcopy is copying to ({holder})",
                    root.display(),
                    outer.display()
                ));
            }
        }
        let path = root.join(LOCK);
        let cannot = |e: io::Error| format!("cannot claim {}: {e}", path.display());
        // A run looking whether this folder is claimed holds a shared lock for an instant, and a
        // run ending removes the file it held: a few tries tell those from a claim.
        let mut tries = 0;
        // The file this run made, if it did: still empty, yet nobody else's (a try may find it
        // locked for an instant by another run's look, and open it again).
        let mut made_here = None;
        let mut file = loop {
            let (mut file, made) = match open_lock(&path, Opening::Make) {
                Ok(file) => {
                    made_here = identity(&file);
                    (file, true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match open_lock(&path, Opening::Take) {
                    Ok(file) => {
                        let made = made_here.is_some() && identity(&file) == made_here;
                        (file, made)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 5 => {
                        tries += 1;
                        continue;
                    }
                    Err(e) => return Err(cannot(e)),
                },
                Err(e) => return Err(cannot(e)),
            };
            match file.try_lock() {
                Ok(()) if still_named(&file, &path) && (made || !kept_by_touching(&mut file)) => break file,
                Ok(()) if still_named(&file, &path) => match watch(&path, timing) {
                    Watched::Live => {
                        let holder = describe(&mut file);
                        return Err(format!(
                            "destination {} is being copied to by another softcopy ({holder})",
                            root.display()
                        ));
                    }
                    // Moved aside, as an ssh run takes one over; the lock is taken again on a
                    // new file.
                    Watched::Stale => set_aside(&file, &path)?,
                },
                Ok(()) => {}
                Err(TryLockError::WouldBlock) if tries < 5 => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(format!(
                        "destination {} is being copied to by another softcopy ({})",
                        root.display(),
                        describe(&mut file)
                    ))
                }
                Err(TryLockError::Error(e)) => return Err(cannot(e)),
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(20));
        };
        // Only for the message another run shows: a full destination (waited out later) must not
        // fail the claim, which is the lock, not the text.
        let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(who.as_bytes()));
        holding.confirmed(Instant::now(), timing.hold_for(), who);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (touched, at, kept, mine) = (file.try_clone().map_err(cannot)?, path.clone(), holding.clone(), who_of(who));
        let toucher = std::thread::Builder::new()
            .name("softcopy-claim".into())
            .spawn(move || touch(&touched, &at, mine, &kept, timing, &stopped))
            .map_err(cannot)?;
        Ok(Claim { file, path, stop: Some(stop), toucher: Some(toucher), holding })
    }
}

fn who_of(who: &str) -> String {
    who.trim().to_owned()
}

/// Touches the claim's `file` every refresh until `stopped`, as an ssh run touches its own (its
/// mtime set to a count), so an ssh run waiting for it sees it live; after each touch the file at
/// `path` must still be this one (an ssh run takes over a file whose touches stalled past the
/// stale time), else the claim is lost.
fn touch(
    file: &File,
    path: &Path,
    who: String,
    holding: &Holding,
    timing: Timing,
    stopped: &crossbeam_channel::Receiver<()>,
) {
    let mut n: u64 = 1;
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(timing.refresh) {
        n += 1;
        let sent = Instant::now();
        if file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(n)).is_err() {
            continue;
        }
        // Its text read back too, as an ssh run's: where the OS lock does not reach every client
        // of a share (sshfs), another client's run takes the file in place and writes its name.
        let text = match open_lock(path, Opening::Look) {
            Ok(mut f) => Some(text_of(&mut f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(_) => continue,
        };
        let named = still_named(file, path);
        // This run's own text may be missing: a full destination when it claimed.
        if named && text.as_deref().is_some_and(|t| t.trim().is_empty()) {
            holding.confirmed(sent, timing.hold_for(), &who);
            continue;
        }
        match judged(text.as_deref().map(described).as_deref(), &who, path.parent().unwrap_or(path)) {
            Ok(()) if named => holding.confirmed(sent, timing.hold_for(), &who),
            Ok(()) => {}
            Err(why) => holding.lost(why),
        }
    }
}

/// Moves the stale claim file `file` at `path` aside and removes it. The rename goes by name: a
/// run that took the same stale file over first may have put its own claim there since the file
/// was last looked at, which is then put back (never removed) and this run refused.
fn set_aside(file: &File, path: &Path) -> Result<(), Refusal> {
    let aside = path.with_file_name(format!("{LOCK}.stale-{}", std::process::id()));
    let cannot = |e: io::Error| format!("cannot claim {}: {e}", path.display());
    std::fs::rename(path, &aside).map_err(cannot)?;
    if still_named(file, &aside) {
        let _ = std::fs::remove_file(&aside);
        return Ok(());
    }
    let holder = open_lock(&aside, Opening::Look).map(|mut f| describe(&mut f)).unwrap_or_default();
    // Put back without replacing: a third run's file there now stays, and this one is left aside.
    if std::fs::hard_link(&aside, path).is_ok() {
        let _ = std::fs::remove_file(&aside);
    }
    Err(format!(
        "destination {} is being copied to by another softcopy ({holder}), which took it over first",
        path.parent().unwrap_or(path).display()
    ))
}

/// Whether the claim file says it is an ssh run's ([`TOUCHED`]).
fn says_touched(file: &mut File) -> bool {
    text_of(file).lines().any(|l| l.trim() == TOUCHED)
}

/// Whether a claim file this run did not make may be an ssh run's, which only its touches tell
/// live: one saying so, or one still empty (an ssh run makes its file, then writes it: two
/// requests, docs/design.md invariant 10).
fn kept_by_touching(file: &mut File) -> bool {
    text_of(file).trim().is_empty() || says_touched(file)
}

/// Looks at an ssh run's claim file at `path` every [`WATCH_EVERY`] for up to the stale time.
fn watch(path: &Path, timing: Timing) -> Watched {
    let look = || std::fs::symlink_metadata(path).ok().map(|m| (m.len(), m.modified().ok()));
    let Some(first) = look() else { return Watched::Live };
    let since = Instant::now();
    while since.elapsed() < timing.stale {
        std::thread::sleep(WATCH_EVERY.min(timing.refresh));
        if look() != Some(first) {
            return Watched::Live;
        }
    }
    Watched::Stale
}

/// What a claim says of this run, for another run's message: its process, host and source.
pub fn who(source: &Path) -> String {
    format!("pid {} on {}, copying {}\n", std::process::id(), host(), source.display())
}

/// Whether the file locked is still the one at `path`: the run that held it may have removed it
/// between our open and our lock (then the lock is on a file nobody else will look at).
fn still_named(file: &File, path: &Path) -> bool {
    match (identity(file), crate::sys::path_identity(path)) {
        (Some(a), Ok(b)) => a == (b.dev, b.ino),
        _ => false,
    }
}

/// The open `file`'s device and file number.
fn identity(file: &File) -> Option<(u64, u64)> {
    let id = file.metadata().map(|m| crate::sys::file_identity(file, &m)).ok()?;
    Some((id.dev, id.ino))
}

/// Who holds the claim in `dir`, if a running softcopy does. A claim file nobody locks is left by
/// a run that ended, unless it is an ssh run's, which one look cannot tell stale (a claim wrongly
/// seen keeps softcopy out, never in).
pub fn held_in(dir: &Path) -> Option<String> {
    let mut file = open_lock(&dir.join(LOCK), Opening::Look).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let touched = says_touched(&mut file).then(|| describe(&mut file));
            let _ = file.unlock();
            touched
        }
        Err(TryLockError::WouldBlock) => Some(describe(&mut file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// How the claim file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Made by this call (else AlreadyExists): nobody else's claim.
    Make,
    /// One already there, to be claimed if nobody holds it.
    Take,
    /// Read only, to say who holds it.
    Look,
}

/// Opens the claim file, never through a link (a link planted there must not make softcopy
/// truncate whatever it points at).
fn open_lock(path: &Path, how: Opening) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(how != Opening::Look).create_new(how == Opening::Make);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// What the holder wrote into the claim file (its first 512 bytes).
fn text_of(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.take(512).read_to_string(&mut text));
    text
}

/// What the holder wrote into the claim file, of itself.
fn describe(file: &mut File) -> String {
    described(&text_of(file))
}

/// A claim file's `text`, of its holder: without the [`TOUCHED`] line.
pub fn described(text: &str) -> String {
    let who: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && *l != TOUCHED).collect();
    match who.join(" ") {
        w if w.is_empty() => "its details unknown".into(),
        w => w,
    }
}

fn host() -> String {
    crate::sys::hostname().unwrap_or_else(|| "this host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_sets_the_stale_time_of_ssh_claims_and_their_refresh_keeps_its_ratio() {
        let t = Timing::stale_after(Some("1.2"));
        assert_eq!((t.stale, t.refresh), (Duration::from_millis(1200), Duration::from_millis(200)));
        for unset in [None, Some(""), Some("soon"), Some("0"), Some("-3")] {
            let t = Timing::stale_after(unset);
            assert_eq!((t.stale, t.refresh), (STALE, REFRESH), "{unset:?}");
        }
    }

    #[test]
    fn a_claimed_destination_refuses_a_second_claim_and_anything_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let first = Claim::take(&root, &who(Path::new("/acq/a"))).unwrap();
        let again = Claim::take(&root, &who(Path::new("/acq/b"))).err().unwrap();
        assert!(again.contains("another softcopy") && again.contains("/acq/a"), "{again}");
        std::fs::create_dir(root.join("inner")).unwrap();
        let inner = Claim::take(&root.join("inner"), &who(Path::new("/acq/c"))).err().unwrap();
        assert!(inner.contains("is inside"), "{inner}");
        assert!(held_in(&root).is_some());
        drop(first);
        assert!(!root.join(LOCK).exists(), "a run that ends removes its claim's file");
        assert!(held_in(&root).is_none());
        std::fs::write(root.join(LOCK), "pid 1 on a crashed host\n").unwrap();
        assert!(held_in(&root).is_none(), "the file alone (a crash) is no claim");
        Claim::take(&root, &who(Path::new("/acq/b"))).unwrap();
    }

    /// A machine that slept (its monotonic clock stopped) past the hold time holds its claim no
    /// more when it wakes: the wall clock moved on.
    #[test]
    fn a_claim_confirmed_before_the_machine_slept_is_not_held_when_it_wakes() {
        let holding = Holding::default();
        let root = Path::new("/dest");
        holding.confirmed(Instant::now(), Duration::from_secs(15), "pid 1");
        assert_eq!(holding.standing(root), Standing::Held);
        // What waking after a minute's sleep looks like: the same instant, the wall clock later.
        if let Kept::Confirmed { wall, .. } = &mut *holding.kept() {
            *wall -= Duration::from_secs(60);
        }
        assert!(matches!(holding.standing(root), Standing::Unconfirmed(_)));
    }

    /// An ssh run makes its claim's file exclusively, then writes it (two requests): a local run
    /// that finds the file empty in between must not take it as a crashed local run's, or both
    /// hold the destination (the ssh run's text lands over the local run's, its read-back finds
    /// itself, and the local run's touches find the same file).
    #[test]
    #[cfg(unix)]
    fn an_ssh_claim_file_not_yet_written_is_not_taken_by_a_local_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let path = root.join(LOCK);
        File::create(&path).unwrap();
        let timing = Timing { stale: Duration::from_secs(2), refresh: Duration::from_millis(20) };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ssh_run = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                // The ssh run's write lands once the local run has the file locked (then the
                // ssh run touches it, as its refresher does, until the test ends).
                let deadline = Instant::now() + Duration::from_secs(10);
                let probe = File::open(&path).unwrap();
                while probe.try_lock_shared().is_ok() {
                    let _ = probe.unlock();
                    if Instant::now() > deadline || stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                std::os::unix::fs::FileExt::write_at(&f, format!("pid 2 on the microscope\n{TOUCHED}\n").as_bytes(), 0)
                    .unwrap();
                for n in 1.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let _ = f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(n));
                    std::thread::sleep(timing.refresh);
                }
            })
        };
        let local = Claim::held(&root, "pid 1 here\n", std::sync::Arc::default(), timing);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        ssh_run.join().unwrap();
        let refused = local.err().expect("the local run took a claim an ssh run was making");
        assert!(refused.contains("pid 2 on the microscope"), "{refused}");
    }

    /// A local run and an ssh run both find one claim file stale; the ssh run moves it aside and
    /// makes its own first: the local run's rename, by name, then meets the ssh run's fresh file,
    /// which must stay (else both write the destination).
    #[test]
    fn a_stale_claim_taken_over_first_by_another_run_is_put_back_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK);
        std::fs::write(&path, format!("pid 9 on a host that is gone\n{TOUCHED}\n")).unwrap();
        let stale = open_lock(&path, Opening::Take).unwrap();
        std::fs::rename(&path, dir.path().join("moved by the ssh run")).unwrap();
        std::fs::write(&path, format!("pid 2 on the microscope\n{TOUCHED}\n")).unwrap();
        let refused = set_aside(&stale, &path).expect_err("the other run's fresh claim was set aside");
        assert!(refused.contains("pid 2 on the microscope"), "{refused}");
        assert_eq!(described(&std::fs::read_to_string(&path).unwrap()), "pid 2 on the microscope");
    }

    /// A folder claimed by "pid 1 here", timed by `timing`: (the folder kept, its path, what
    /// its toucher learns, the claim).
    fn claimed_here(timing: Timing) -> (tempfile::TempDir, std::path::PathBuf, std::sync::Arc<Holding>, Claim) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let holding = std::sync::Arc::new(Holding::default());
        let claim = Claim::held(&root, "pid 1 here\n", holding.clone(), timing).unwrap();
        (dir, root, holding, claim)
    }

    /// Where the OS lock does not reach every client of a share (sshfs keeps it on the one
    /// client), a run on another client gets the lock on the same file and writes its name in it:
    /// the first run learns it at its next touch, as an ssh run does.
    #[test]
    fn a_local_claim_whose_file_names_another_run_is_lost() {
        let (_dir, root, holding, _claim) =
            claimed_here(Timing { stale: Duration::from_secs(2), refresh: Duration::from_millis(20) });
        std::fs::write(root.join(LOCK), "pid 2 on another client of the share\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while holding.standing(&root) == Standing::Held {
            assert!(Instant::now() < deadline, "not lost within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(holding.standing(&root), Standing::Lost(why) if why.contains("another client")));
    }

    /// A claim whose own text could not be written (the destination full when it claimed: the
    /// lock is the claim, the text only a message) is still held at its touches.
    #[test]
    fn a_local_claim_whose_own_text_could_not_be_written_stays_held() {
        let (_dir, root, holding, _claim) =
            claimed_here(Timing { stale: Duration::from_secs(2), refresh: Duration::from_millis(20) });
        OpenOptions::new().write(true).open(root.join(LOCK)).unwrap().set_len(0).unwrap();
        let mtime = || std::fs::metadata(root.join(LOCK)).unwrap().modified().unwrap();
        let (first, deadline) = (mtime(), Instant::now() + Duration::from_secs(10));
        // Two touches since (each sets a new mtime), each read back.
        let mut seen = vec![first];
        while seen.len() < 3 {
            assert!(Instant::now() < deadline, "not touched twice within 10 s");
            if mtime() != *seen.last().unwrap() {
                seen.push(mtime());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(holding.standing(&root), Standing::Held);
    }

    /// A claim's file removed by a person while its run lives: the next run makes a new one and
    /// holds the destination at once, while the first still holds it until its next touch finds
    /// the file another's (up to one refresh, 5 s): both write meanwhile.
    #[test]
    #[ignore = "finding: a live claim's file removed by hand lets a new run in at once; the first learns it only at its next touch (up to 5 s of both writing)"]
    fn a_claim_whose_file_was_removed_by_hand_is_not_held_once_another_run_claims() {
        let timing = Timing { stale: Duration::from_secs(3600), refresh: Duration::from_secs(60) };
        let (_dir, root, holding, _first) = claimed_here(timing);
        std::fs::remove_file(root.join(LOCK)).unwrap();
        let _second = Claim::held(&root, "pid 2 here\n", std::sync::Arc::default(), timing).unwrap();
        assert_ne!(holding.standing(&root), Standing::Held, "both runs hold the destination");
    }

    /// A local claim whose file was taken over (an ssh run found its touches stalled past the
    /// stale time and moved it aside) is lost, and its end leaves the other run's file.
    #[test]
    fn a_local_claim_whose_file_was_taken_over_is_lost_and_leaves_the_file() {
        let (_dir, root, holding, claim) =
            claimed_here(Timing { stale: Duration::from_secs(2), refresh: Duration::from_millis(20) });
        assert_eq!(holding.standing(&root), Standing::Held);
        std::fs::rename(root.join(LOCK), root.join("aside")).unwrap();
        std::fs::write(root.join(LOCK), format!("pid 2 on the microscope\n{TOUCHED}\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while holding.standing(&root) == Standing::Held {
            assert!(Instant::now() < deadline, "not lost within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(holding.standing(&root), Standing::Lost(why) if why.contains("pid 2 on the microscope")));
        drop(claim);
        assert!(root.join(LOCK).exists(), "the other run's file stays");
        assert_eq!(held_in(&root).as_deref(), Some("pid 2 on the microscope"), "an ssh claim, to a local look");
    }
}
