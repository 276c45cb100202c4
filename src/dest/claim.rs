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
        let mut file = loop {
            let mut file = open_lock(&path, true).map_err(cannot)?;
            match file.try_lock() {
                Ok(()) if still_named(&file, &path) && !says_touched(&mut file) => break file,
                Ok(()) if still_named(&file, &path) => match watch(&path, timing) {
                    Watched::Live => {
                        let holder = describe(&mut file);
                        return Err(format!(
                            "destination {} is being copied to by another softcopy ({holder})",
                            root.display()
                        ));
                    }
                    // Moved aside, as an ssh run takes one over: of two runs taking it at once,
                    // one rename finds it; the lock is taken again on a new file.
                    Watched::Stale => {
                        let aside = root.join(format!("{LOCK}.stale-{}", std::process::id()));
                        std::fs::rename(&path, &aside).map_err(cannot)?;
                        let _ = std::fs::remove_file(&aside);
                    }
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
        let root = path.parent().unwrap_or(path);
        if still_named(file, path) {
            holding.confirmed(sent, timing.hold_for(), &who);
        } else {
            let found = open_lock(path, false).ok().map(|mut f| describe(&mut f));
            if let Err(why) = judged(found.as_deref(), &who, root) {
                holding.lost(why);
            }
        }
    }
}

/// Whether the claim file says it is an ssh run's ([`TOUCHED`]).
fn says_touched(file: &mut File) -> bool {
    text_of(file).lines().any(|l| l.trim() == TOUCHED)
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
    let held = file.metadata().map(|m| crate::sys::file_identity(file, &m));
    match (held, crate::sys::path_identity(path)) {
        (Ok(a), Ok(b)) => (a.dev, a.ino) == (b.dev, b.ino),
        _ => false,
    }
}

/// Who holds the claim in `dir`, if a running softcopy does. A claim file nobody locks is left by
/// a run that ended, unless it is an ssh run's, which one look cannot tell stale (a claim wrongly
/// seen keeps softcopy out, never in).
pub fn held_in(dir: &Path) -> Option<String> {
    let mut file = open_lock(&dir.join(LOCK), false).ok()?;
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

/// Opens the claim file, never through a link (a link planted there must not make softcopy
/// truncate whatever it points at).
fn open_lock(path: &Path, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(create).create(create).truncate(false);
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

    /// A local claim whose file was taken over (an ssh run found its touches stalled past the
    /// stale time and moved it aside) is lost, and its end leaves the other run's file.
    #[test]
    fn a_local_claim_whose_file_was_taken_over_is_lost_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let timing = Timing { stale: Duration::from_secs(2), refresh: Duration::from_millis(20) };
        let holding = std::sync::Arc::new(Holding::default());
        let claim = Claim::held(&root, "pid 1 here\n", holding.clone(), timing).unwrap();
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
