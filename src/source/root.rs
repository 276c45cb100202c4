//! The source root as a thing with an identity. Deleting at the destination needs positive
//! evidence (docs/design.md, invariant 8): a scan that lists no files proves nothing unless it
//! listed the *same* folder the copy came from, completely. So the root's device and inode are
//! recorded when watching begins, and every full scan and every mirrored deletion first asks
//! whether the root is still that folder.

use std::path::Path;

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

/// The root's identity (device, inode, birth time), shared with the workers, which check it
/// before they mirror a deletion: a file is gone only if the folder it was in is still the root.
/// The birth time matters: a tmpfs unmounted and another mounted in its place can get the same
/// device number and the same inode numbers, and ext4 reuses a deleted folder's inode at once.
#[derive(Debug, Default)]
pub struct RootId {
    id: std::sync::Mutex<Option<FolderId>>,
    /// The folder holding the root when it was first adopted: a root deleted and made again is
    /// followed only inside that very folder, on the same device.
    parent: std::sync::OnceLock<FolderId>,
}

impl RootId {
    /// The identity of the folder at `path` now, if it is a folder.
    fn of(path: &Path) -> Result<FolderId, String> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => FolderId::of(path).map_err(|e| format!("{} cannot be read ({e})", path.display())),
            Ok(_) => Err(format!("{} is no longer a folder", path.display())),
            Err(e) => Err(format!("{} cannot be read ({e})", path.display())),
        }
    }

    fn held(&self) -> Option<FolderId> {
        *self.id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the folder at `path` as the root (at the start: also the folder that holds it).
    pub fn adopt(&self, path: &Path) -> Result<(), String> {
        let id = RootId::of(path)?;
        if self.parent.get().is_none() {
            let _ = self.parent.set(RootId::of(path.parent().unwrap_or(path))?);
        }
        *self.id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        Ok(())
    }

    /// Adopts the folder now at `path` after the root was reported deleted, only on evidence that
    /// it is a re-take in the same place (a writer's `overwrite=True`): it sits in the very folder
    /// that held the root, on the root's device. An unmounted disk is reported as the root
    /// deleted too; a folder on the disk mounted there next is another disk's, never followed
    /// (invariant 8).
    pub fn adopt_retake(&self, path: &Path) -> Result<(), String> {
        let new = RootId::of(path)?;
        let here = RootId::of(path.parent().unwrap_or(path))?;
        let same_place = self.parent.get().is_none_or(|p| p.same(&here));
        if self.held().is_some_and(|old| !old.same_filesystem(&new)) || !same_place {
            return Err(format!(
                "{} is a folder on another disk or in another place now (the disk was unmounted or replaced, \
                 not the folder deleted): it is not followed",
                path.display()
            ));
        }
        self.adopt(path)
    }

    /// The folder held, opened where `path` leads to it now: held open from its adoption until
    /// its watches stand, its descriptor tells what became of it if its name leads elsewhere
    /// meanwhile ([`gone_how`]). `None` where it is not there, or cannot be held (not Linux).
    pub fn open_held(&self, path: &Path) -> Option<std::fs::File> {
        #[cfg(target_os = "linux")]
        {
            let held = self.held()?;
            let file = crate::sys::open_folder(path).ok()?;
            let meta = file.metadata().ok()?;
            let id = crate::sys::file_identity(&file, &meta);
            let here = FolderId { dev: id.dev, ino: id.ino, born: born(&meta), fs: held.fs };
            held.same(&here).then_some(file)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            None
        }
    }

    /// Whether the folder recorded is certainly still at `path`: the same identity, birth time
    /// included (without one, a folder made again can have the old one's inode and device).
    pub fn certainly_here(&self, path: &Path) -> bool {
        self.held().is_some_and(|held| held.born.is_some()) && self.check(path).is_ok()
    }

    /// Whether `path` is still the folder recorded; why not, if it is not.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let now = RootId::of(path)?;
        if self.held().is_some_and(|held| held.same(&now)) {
            Ok(())
        } else {
            Err(format!("{} is another folder now (not the one being copied)", path.display()))
        }
    }
}

/// How the folder `held` (opened by [`RootId::open_held`]) went away from its name: deleted when
/// no link to it is left (positive evidence: a writer's `overwrite=True`), else moved away.
pub fn gone_how(held: &std::fs::File) -> Gone {
    #[cfg(unix)]
    if held.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0) {
        return Gone::Deleted;
    }
    #[cfg(not(unix))]
    let _ = held;
    Gone::MovedAway
}

/// A folder's identity across time (docs/design.md, "One destination, one acquisition"): device,
/// inode and birth time. ext4 hands a deleted folder's inode to the next folder made at once, so
/// device and inode alone take a re-take for the folder it replaced; the birth time (statx's
/// `btime`, Windows' creation time) tells them apart. `born` is `None` where the filesystem
/// keeps no birth time: there two such identities are compared by device and inode alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderId {
    pub dev: u64,
    pub ino: u64,
    pub born: Option<i64>,
    /// The filesystem's own identifier where it has one (`sys::filesystem_id`): device numbers
    /// are handed out per boot and per mount, so a disk can come back under another one, and
    /// another disk under this one's.
    pub fs: Option<u64>,
}

impl FolderId {
    /// The identity of the folder at `path` (a link is not followed).
    pub fn of(path: &Path) -> std::io::Result<FolderId> {
        let meta = std::fs::symlink_metadata(path)?;
        let id = crate::sys::path_identity_of(path, &meta)?;
        Ok(FolderId { dev: id.dev, ino: id.ino, born: born(&meta), fs: crate::sys::filesystem_id(path)? })
    }
}

/// The birth time on Linux (statx's `btime`, which std's `created()` reads). Not on Windows: NTFS's
/// file index already carries a sequence number that changes when a record is reused, and Wine
/// reports a folder's "creation time" from times that change as files are added to it.
fn born(meta: &std::fs::Metadata) -> Option<i64> {
    #[cfg(windows)]
    {
        let _ = meta;
        None
    }
    #[cfg(not(windows))]
    {
        meta.created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
    }
}

impl FolderId {
    /// The same folder: on the same filesystem, the same inode, and the same birth time where both
    /// have one.
    pub fn same(&self, other: &FolderId) -> bool {
        self.same_filesystem(other) && self.same_folder_on_it(other)
    }

    fn same_folder_on_it(&self, other: &FolderId) -> bool {
        self.ino == other.ino && (self.born.is_none() || other.born.is_none() || self.born == other.born)
    }

    /// On the same filesystem: the same device number, and the same filesystem identifier where
    /// both know it. Each alone is shared by two disks: a device number by disks mounted in turn
    /// (another disk mounted where this one was gets its old number), an identifier by a disk and
    /// its clones (a `dd` copy keeps the UUID, and its folders their inodes and birth times). Both
    /// must agree, so neither is ever taken for the other (docs/design.md, "One destination, one
    /// acquisition").
    pub fn same_filesystem(&self, other: &FolderId) -> bool {
        self.dev == other.dev && (self.fs.is_none() || other.fs.is_none() || self.fs == other.fs)
    }

    /// The same folder by every mark but the device number: this disk back under another number
    /// (a reboot), or a clone of it. Never taken as the same; said, so a person can decide.
    pub fn renumbered(&self, other: &FolderId) -> bool {
        self.dev != other.dev
            && self.fs.is_some()
            && self.fs == other.fs
            && self.born.is_some()
            && self.same_folder_on_it(other)
    }
}

#[cfg(test)]
mod tests {
    use super::RootId;

    #[test]
    fn a_folder_is_the_same_only_where_device_and_filesystem_identifier_both_agree() {
        use super::FolderId;
        let id = |dev, fs| FolderId { dev, ino: 2, born: Some(7), fs };
        // A disk back under another device number (a reboot), or its clone: never the same, said.
        assert!(!id(8, Some(1)).same(&id(9, Some(1))) && id(8, Some(1)).renumbered(&id(9, Some(1))));
        // Another disk under the number this one had: another folder.
        assert!(!id(8, Some(1)).same(&id(8, Some(2))) && !id(8, Some(1)).renumbered(&id(8, Some(2))));
        // A record made before identifiers were kept, or a filesystem without one: the device.
        assert!(id(8, None).same(&id(8, Some(1))) && !id(8, None).same(&id(9, Some(1))));
        assert!(!id(8, None).renumbered(&id(9, Some(1))) && !id(8, Some(1)).renumbered(&id(8, Some(1))));
        assert!(!id(8, Some(1)).same(&FolderId { ino: 3, ..id(8, Some(1)) }));
        assert!(!id(8, Some(1)).same(&FolderId { born: Some(6), ..id(8, Some(1)) }));
    }

    #[test]
    fn a_late_deletion_is_the_old_folders_only_where_the_folder_held_is_certainly_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run.zarr");
        std::fs::create_dir(&root).unwrap();
        let id = RootId::default();
        id.adopt(&root).unwrap();
        if id.held().unwrap().born.is_none() {
            // No birth time here (Wine's filesystem gives none): nothing is certain, and a late
            // deletion pauses the run as before.
            assert!(!id.certainly_here(&root));
            return;
        }
        assert!(id.certainly_here(&root), "the folder adopted, still there");
        std::fs::remove_dir(&root).unwrap();
        assert!(!id.certainly_here(&root), "gone");
        std::fs::create_dir(&root).unwrap();
        assert!(!id.certainly_here(&root), "another folder under the name");
        id.adopt(&root).unwrap();
        // Without a birth time, a folder made again can be told from the old one by nothing.
        let held = id.held().unwrap();
        *id.id.lock().unwrap() = Some(super::FolderId { born: None, ..held });
        assert!(!id.certainly_here(&root));
    }

    #[test]
    fn a_retake_is_followed_only_in_the_folder_that_held_the_root() {
        // A writer's `overwrite=True` makes the root again in the same place: followed. A folder
        // of that name elsewhere (the disk mounted in another place, the acquisitions folder made
        // again) is not.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(a.join("run.zarr")).unwrap();
        std::fs::create_dir_all(b.join("run.zarr")).unwrap();
        let id = RootId::default();
        id.adopt(&a.join("run.zarr")).unwrap();
        std::fs::rename(a.join("run.zarr"), dir.path().join("old.zarr")).unwrap();
        std::fs::create_dir(a.join("run.zarr")).unwrap();
        assert_eq!(id.adopt_retake(&a.join("run.zarr")), Ok(()), "made again in its place");
        assert!(id.adopt_retake(&b.join("run.zarr")).is_err(), "a folder of that name elsewhere");
        assert!(id.check(&a.join("run.zarr")).is_ok(), "still the one adopted");
        std::fs::remove_dir(a.join("run.zarr")).unwrap();
        std::fs::write(a.join("run.zarr"), b"a file").unwrap();
        assert!(id.adopt_retake(&a.join("run.zarr")).is_err(), "a file under the name is no root");
    }

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
