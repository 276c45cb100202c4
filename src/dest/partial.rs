//! A copy being written at the destination (docs/design.md, invariant 1): never under its final
//! name until complete. It is an unnamed file (O_TMPFILE) where the filesystem has them, else a
//! partial file beside its name or in a staging folder. The value owns it: dropped unpublished
//! (an error, a source changed meanwhile, a panicked copy) it throws itself away; `publish`
//! consumes it and gives it its final name.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{split, Dest, Folder, Staging};
use crate::sys;
use crate::vocab::{Partial, PARTIAL_SUFFIX};
use crate::Error;

static PARTIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A partial name for a copy of `name`, in the same folder.
pub(crate) fn partial_name(name: &Path) -> PathBuf {
    // The pid is asked for once: std asks the kernel on every call.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = PARTIAL_COUNTER.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(".{}.{pid}-{n}{PARTIAL_SUFFIX}", name.to_string_lossy()))
}

/// Where the bytes are, until published.
enum Held<'a> {
    /// An unnamed file: it gets a name only when complete, and vanishes with its descriptor.
    Unnamed(File),
    /// A partial file under a partial name, in its folder or in a staging folder lent to it.
    Named(File, PathBuf, Option<Staging<'a>>),
    /// Published or thrown away.
    Gone,
}

/// One copy in the writing, at `shown` (the path the user knows, for messages).
pub struct PartialFile<'a> {
    dest: &'a Dest,
    held: Held<'a>,
    shown: PathBuf,
}

impl<'a> PartialFile<'a> {
    /// A new file for a copy of `rel` into its `folder` with permission bits `mode`: unnamed where
    /// `unnamed` is given (what the workers learned of the filesystem) and the destination
    /// filesystem has them, else a partial file where `partial` says (beside the name if staging
    /// is not possible).
    pub fn create(
        dest: &'a Dest,
        folder: &Folder,
        rel: &Path,
        mode: u32,
        partial: Partial,
        unnamed: Option<&sys::Learned>,
    ) -> crate::Result<PartialFile<'a>> {
        let shown = dest.shown(rel);
        let (_, name) = split(rel).map_err(|e| Error::io("copy to", &shown, e))?;
        if let Some(learned) = unnamed {
            let made = sys::create_unnamed(folder.path(), mode, learned)
                .map_err(|e| Error::io("create in", shown.parent().unwrap_or(&shown), e))?;
            if let Some(file) = made {
                return Ok(PartialFile { dest, held: Held::Unnamed(file), shown });
            }
        }
        // A staging folder that cannot be made is no reason not to copy: beside it is.
        let staging = if partial == Partial::Staged { dest.staging().and_then(Result::ok) } else { None };
        let tmp = staging.as_deref().unwrap_or(folder).join(&partial_name(name));
        let mut open = OpenOptions::new();
        // create_new: a partial name is ours alone; never truncate something we did not create.
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, mode);
        let file = open.open(&tmp).map_err(|e| Error::io("create", &shown, e))?;
        dest.partial_made();
        Ok(PartialFile { dest, held: Held::Named(file, tmp, staging), shown })
    }

    /// The file the bytes go to.
    pub fn file(&self) -> &File {
        match &self.held {
            Held::Unnamed(f) | Held::Named(f, ..) => f,
            Held::Gone => unreachable!("a partial file is used only until published or dropped"),
        }
    }

    /// The partial's name, for a read-back (none for an unnamed file).
    pub fn named(&self) -> Option<&Path> {
        match &self.held {
            Held::Named(_, tmp, _) => Some(tmp),
            _ => None,
        }
    }

    /// Gives the copy the source's permission bits `mode` (where the umask narrowed them at
    /// creation; unknown umask: always) and its modification time.
    pub fn stamp(&self, mode: u32, mtime: Option<SystemTime>) -> crate::Result<()> {
        let file = self.file();
        #[cfg(unix)]
        if sys::umask().is_none_or(|u| mode & u != 0) {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", &self.shown, e))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        if let Some(mtime) = mtime {
            file.set_times(fs::FileTimes::new().set_modified(mtime))
                .map_err(|e| Error::io("set mtime", &self.shown, e))?;
        }
        Ok(())
    }

    /// Gives the complete copy its final name (`rel`'s last part) in `folder`, replacing an older
    /// copy atomically. An unnamed copy of a name believed new is linked straight to it; linking
    /// never replaces, so if the name exists after all (or is known to), the copy is linked to a
    /// partial name and renamed over it like any partial. Failed, the copy is thrown away.
    pub fn publish(mut self, folder: &Folder, rel: &Path, src_dir: &Path, may_exist: bool) -> crate::Result<()> {
        let dest = self.dest;
        let (_, name) = split(rel).map_err(|e| Error::io("copy to", &self.shown, e))?;
        let dst = folder.join(name);
        if !sys::SYNCS_FILESYSTEM {
            // No flush of the whole destination before the marker here: each copy is flushed on
            // its own (writing) handle before it gets its name.
            self.file().sync_all().map_err(|e| Error::io("flush", &self.shown, e))?;
        }
        if let Held::Unnamed(file) = &self.held {
            if !may_exist {
                match sys::link_unnamed(file, &dst) {
                    Ok(()) => {
                        self.held = Held::Gone;
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("link into", &self.shown, e)),
                }
            }
            let tmp = folder.join(&partial_name(name));
            sys::link_unnamed(file, &tmp).map_err(|e| Error::io("link into", &self.shown, e))?;
            dest.partial_made();
            let Held::Unnamed(file) = std::mem::replace(&mut self.held, Held::Gone) else { unreachable!() };
            // From here on a partial like any other: thrown away on drop.
            self.held = Held::Named(file, tmp, None);
        }
        let Held::Named(_, tmp, _) = &self.held else { unreachable!("named above") };
        let tmp = tmp.clone();
        if dest.folds_case_of(name) {
            // Two names that fold to one, copied at once, must not both look at an empty folder
            // and then replace each other: a link never replaces, so one of them finds the other.
            if !may_exist {
                match fs::hard_link(&tmp, &dst) {
                    // The partial name goes when dropped.
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(_) => {} // no hard links there: renamed as any partial
                }
            }
            match dest.refuse_case_collision(folder, rel, src_dir) {
                Err(e) => return Err(Error::io("rename into", &self.shown, e)),
                // This file's older copy under another case goes first: a rename over it would
                // keep the old case where the destination keeps an entry's stored name.
                Ok(Some(older)) => match fs::remove_file(folder.join(Path::new(&older))) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Error::io("remove the older copy of", &self.shown, e));
                    }
                    _ => {}
                },
                Ok(None) => {}
            }
        }
        fs::rename(&tmp, &dst).map_err(|e| Error::io("rename into", &self.shown, e))?;
        dest.partial_gone();
        self.held = Held::Gone;
        Ok(())
    }
}

impl Drop for PartialFile<'_> {
    /// Throws an unpublished copy away, once: removed twice, a partial was counted gone twice,
    /// and the count the end trusts to skip the look for leftovers (docs/design.md, "The end of
    /// a run") went below what is there.
    fn drop(&mut self) {
        if let Held::Named(file, tmp, staging) = std::mem::replace(&mut self.held, Held::Gone) {
            drop(file);
            self.dest.remove_partial(&tmp);
            drop(staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_copy_dropped_unpublished_throws_itself_away_even_when_its_writer_panics() {
        let t = tempfile::tempdir().unwrap();
        let dest = Dest::open(t.path(), t.path(), None).unwrap();
        let folder = dest.folder(Path::new(""), false).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let out = PartialFile::create(&dest, &folder, Path::new("c.0"), 0o644, Partial::Beside, None).unwrap();
            out.file().write_all(b"half").unwrap();
            assert_eq!(names(t.path()).len(), 1, "the partial is there while written");
            panic!("a bug in the middle of a copy");
        }));
        assert!(panicked.is_err());
        assert_eq!(names(t.path()), Vec::<String>::new());
        assert!(!dest.partials_left(), "and counted gone, once");
    }

    #[test]
    fn a_copy_that_cannot_take_its_name_is_thrown_away_and_a_published_one_is_under_its_name_alone() {
        let t = tempfile::tempdir().unwrap();
        let dest = Dest::open(t.path(), t.path(), None).unwrap();
        let folder = dest.folder(Path::new(""), false).unwrap();
        // A folder with a file in it holds the name: no rename replaces it.
        fs::create_dir(t.path().join("held")).unwrap();
        fs::write(t.path().join("held/x"), b"x").unwrap();
        let learned = sys::Learned::default();
        for unnamed in [None, Some(&learned)] {
            let out = PartialFile::create(&dest, &folder, Path::new("held"), 0o644, Partial::Beside, unnamed).unwrap();
            out.file().write_all(b"new").unwrap();
            assert!(out.publish(&folder, Path::new("held"), t.path(), true).is_err());
            assert_eq!(names(t.path()), ["held"], "no partial left beside it");
            assert!(!dest.partials_left());
            let out = PartialFile::create(&dest, &folder, Path::new("c.0"), 0o644, Partial::Beside, unnamed).unwrap();
            out.file().write_all(b"new").unwrap();
            out.publish(&folder, Path::new("c.0"), t.path(), unnamed.is_none()).unwrap();
            assert_eq!(names(t.path()), ["c.0", "held"]);
            assert_eq!(fs::read(t.path().join("c.0")).unwrap(), b"new");
            assert!(!dest.partials_left());
            fs::remove_file(t.path().join("c.0")).unwrap();
        }
    }
}
