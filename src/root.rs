//! The source root as a thing with an identity. Deleting at the destination needs positive
//! evidence (docs/design.md, invariant 8): a scan that lists no files proves nothing unless it
//! listed the *same* folder the copy came from, completely. So the root's device and inode are
//! recorded when watching begins, and every full scan and every mirrored deletion first asks
//! whether the root is still that folder.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the root was last seen to go away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// Deleted: a writer's `overwrite=True` (zarr-python, acquire-zarr) deletes and recreates it;
    /// the folder that comes back under its name is the acquisition's new root.
    Deleted,
    /// Renamed away (or its disk went): the folder that may appear under its name later is
    /// another folder, not this acquisition.
    MovedAway,
}

/// The root's identity (device, inode), shared with the workers, which check it before they mirror
/// a deletion: a file is gone only if the folder it was in is still the root.
#[derive(Debug, Default)]
pub struct RootId {
    dev: AtomicU64,
    ino: AtomicU64,
}

impl RootId {
    /// The identity of the folder at `path` now, if it is a folder.
    fn of(path: &Path) -> Result<(u64, u64), String> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => dev_ino(path, &m),
            Ok(_) => Err(format!("{} is no longer a folder", path.display())),
            Err(e) => Err(format!("{} cannot be read ({e})", path.display())),
        }
    }

    /// Records the folder at `path` as the root.
    pub fn adopt(&self, path: &Path) -> Result<(), String> {
        let (dev, ino) = RootId::of(path)?;
        self.dev.store(dev, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `path` is still the folder recorded; why not, if it is not.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let now = RootId::of(path)?;
        if now == (self.dev.load(Ordering::Relaxed), self.ino.load(Ordering::Relaxed)) {
            Ok(())
        } else {
            Err(format!("{} is another folder now (not the one being copied)", path.display()))
        }
    }
}

/// Device and inode (volume serial and file index on Windows, from a handle: std's metadata
/// has neither there, and a folder made later under the old name must not pass for the root).
fn dev_ino(path: &Path, meta: &std::fs::Metadata) -> Result<(u64, u64), String> {
    let id =
        crate::sys::path_identity_of(path, meta).map_err(|e| format!("{} cannot be read ({e})", path.display()))?;
    Ok((id.dev, id.ino))
}

#[cfg(test)]
mod tests {
    use super::RootId;

    #[test]
    fn the_same_folder_passes_and_a_new_one_of_the_same_name_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run.zarr");
        std::fs::create_dir(&root).unwrap();
        let id = RootId::default();
        id.adopt(&root).unwrap();
        std::fs::write(root.join("a"), b"a").unwrap();
        assert_eq!(id.check(&root), Ok(()), "the same folder, files added");
        // Kept, so the new folder cannot reuse the old one's inode.
        std::fs::rename(&root, dir.path().join("old.zarr")).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert!(id.check(&root).is_err(), "another folder under the old name");
        id.adopt(&root).unwrap();
        std::fs::write(root.join("b"), b"b").unwrap();
        assert_eq!(id.check(&root), Ok(()), "adopted");
    }
}
