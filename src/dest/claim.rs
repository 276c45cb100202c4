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
use std::time::Duration;

/// The claim's file, at the root of a destination.
pub const LOCK: &str = ".softcopy-lock";

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
