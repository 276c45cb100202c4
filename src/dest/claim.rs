//! One destination, one softcopy (docs/design.md, invariant 10): two runs writing the same
//! destination, or one inside the other's, would prune each other's chunks and publish each
//! other's markers. Each run claims its destination root with a lock on `.softcopy-lock` there,
//! held for the whole run and the file removed at its end (an OS lock: it goes away with the
//! process, so a crash leaves no claim behind, only the file). A run refuses to start inside a folder another run has claimed, and
//! never writes, reads or deletes in a folder below its root that another run has claimed.
//!
//! Across machines this is as good as the share's locking: NFSv4 and SMB carry these locks, sshfs
//! keeps them on the one client.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The claim's file, at the root of a destination.
pub const LOCK: &str = ".softcopy-lock";

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

impl Timing {
    /// How long after the last touch confirmed (sent, then its file read back as ours) the claim
    /// is taken as held: half the stale time; the other half is the margin in which changes
    /// already sent land before a waiting run can find the file stale (docs/design.md, "Claims").
    pub fn hold_for(&self) -> Duration {
        self.stale / 2
    }
}

/// Whether this run still holds its claim, before a change (docs/design.md, "Claims").
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
    /// Its last touch was sent `at` and its file found to be ours after it.
    Confirmed {
        at: Instant,
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
            *kept = Kept::Confirmed { at, hold_for, who: who.trim().to_owned() };
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
            Kept::Confirmed { at, hold_for, .. } if at.elapsed() < *hold_for => Standing::Held,
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

/// A claimed destination: held until dropped, when its file is removed (still locked, so no run
/// waiting for it can take a file that is no longer there: see [`Claim::take`]).
pub struct Claim {
    file: File,
    path: std::path::PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// How a claim failed: another softcopy has it, or it could not be looked at.
pub type Refusal = String;

impl Claim {
    /// Claims the destination `root` (canonical) for the run `who` describes ([`who`]).
    pub fn take(root: &Path, who: &str) -> Result<Claim, Refusal> {
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
                Ok(()) if still_named(&file, &path) => break file,
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
        Ok(Claim { file, path })
    }
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

/// Who holds the claim in `dir`, if a running softcopy does. A claim file nobody holds is left by
/// a run that ended: no claim.
pub fn held_in(dir: &Path) -> Option<String> {
    let mut file = open_lock(&dir.join(LOCK), false).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
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

/// What the holder wrote into the claim file.
fn describe(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.take(512).read_to_string(&mut text));
    match text.trim() {
        "" => "its details unknown".into(),
        who => who.to_owned(),
    }
}

fn host() -> String {
    crate::sys::hostname().unwrap_or_else(|| "this host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
