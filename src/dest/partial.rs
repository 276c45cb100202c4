//! A copy being written at the destination (docs/design.md, invariant 1): never under its final
//! name until complete. It is an unnamed file (O_TMPFILE) where the filesystem has them, else a
//! partial file beside its name or in a staging folder. The value owns it: dropped unpublished
//! (an error, a source changed meanwhile, a panicked copy) it throws itself away; `publish`
//! consumes it and gives it its final name.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::backend::{Backend, Fill};
use super::{split, Dest, Folder, Staging};
use crate::sys::{self, Pacing};
use crate::vocab::{Hash, Partial, PARTIAL_SUFFIX};
use crate::Error;

type Writer = super::store::Writer;

static PARTIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A partial name for a copy of `name`, in the same folder.
pub(crate) fn partial_name(name: &Path) -> PathBuf {
    // The pid is asked for once: std asks the kernel on every call.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = PARTIAL_COUNTER.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(".{}.{pid}-{n}{PARTIAL_SUFFIX}", name.to_string_lossy()))
}

/// The folder a partial file is in: its final name's, or a staging folder lent to it.
enum Place<'a> {
    Beside(&'a Folder),
    Staged(Staging<'a>),
}

impl Place<'_> {
    fn folder(&self) -> &Folder {
        match self {
            Place::Beside(f) => f,
            Place::Staged(s) => s,
        }
    }
}

/// Where the bytes are, until published.
enum Held<'a> {
    /// A file with no name: it gets one only when complete, and vanishes with its handle.
    Unnamed(Writer),
    /// A partial file under a partial name.
    Named(Writer, PathBuf, Place<'a>),
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
    /// storage has them, else a partial file where `partial` says (beside the name if staging is
    /// not possible).
    pub fn create(
        dest: &'a Dest,
        folder: &'a Folder,
        rel: &Path,
        mode: u32,
        partial: Partial,
        unnamed: Option<&sys::Learned>,
    ) -> crate::Result<PartialFile<'a>> {
        let shown = dest.shown(rel);
        let (_, name) = split(rel).map_err(|e| Error::io("copy to", &shown, e))?;
        let store = dest.store();
        if let Some(learned) = unnamed {
            let made = store
                .create_unnamed(folder, mode, learned)
                .map_err(|e| Error::io("create in", shown.parent().unwrap_or(&shown), e))?;
            if let Some(w) = made {
                return Ok(PartialFile { dest, held: Held::Unnamed(w), shown });
            }
        }
        // A staging folder that cannot be made is no reason not to copy: beside it is.
        let staging = if partial == Partial::Staged { dest.staging().and_then(Result::ok) } else { None };
        let place = staging.map_or(Place::Beside(folder), Place::Staged);
        let tmp = partial_name(name);
        let w = store.create(place.folder(), &tmp, mode).map_err(|e| Error::io("create", &shown, e))?;
        dest.partial_made();
        Ok(PartialFile { dest, held: Held::Named(w, tmp, place), shown })
    }

    fn writer(&self) -> &Writer {
        match &self.held {
            Held::Unnamed(w) | Held::Named(w, ..) => w,
            Held::Gone => unreachable!("a partial file is used only until published or dropped"),
        }
    }

    /// Fills the copy from `src`: `size` bytes by the storage's own way of copying, or to the end
    /// of `src` past a hasher where `hashed`. Returns the bytes moved, and their hash if asked.
    pub fn fill(
        &self,
        src: &File,
        size: u64,
        hashed: bool,
        opts: (sys::CopyMethod, &sys::Learned),
        pace: &impl Pacing,
    ) -> crate::Result<(u64, Option<Hash>)> {
        let (method, learned) = opts;
        let how = if hashed { Fill::Hashed { pace } } else { Fill::Copy { size, method, learned, pace } };
        self.dest.store().fill(self.writer(), src, how).map_err(|e| Error::io("copy to", &self.shown, e))
    }

    /// Gives the copy the source's permission bits `mode` and its modification time.
    pub fn stamp(&self, mode: u32, mtime: Option<SystemTime>) -> crate::Result<()> {
        self.dest.store().stamp(self.writer(), mode, mtime).map_err(|e| Error::io("set mtime", &self.shown, e))
    }

    /// Records on the copy which source version its bytes are (`mark`), where the storage keeps
    /// such a record: a later run takes the copy for that version without reading it. Failing to
    /// is no failure of the copy: without the mark, a later run compares the bytes.
    pub fn mark(&self, mark: &[u8], learned: &sys::Learned) {
        let _ = self.dest.store().set_mark(self.writer(), mark, learned);
    }

    /// The hash of the partial file read back by name (`None` for a file with no name: there is
    /// nothing to read it back by).
    pub fn read_back(&self) -> crate::Result<Option<Hash>> {
        let Held::Named(_, tmp, place) = &self.held else { return Ok(None) };
        let reader = self.dest.store().read(place.folder(), tmp);
        let back = reader.and_then(crate::content::hash_reader).map_err(|e| Error::io("read back", &self.shown, e))?;
        Ok(Some(back))
    }

    /// Gives the complete copy its final name (`rel`'s last part) in `folder`, replacing an older
    /// copy atomically. A file with no name, of a name believed new, is named straight; naming
    /// never replaces, so if the name exists after all (or is known to), the copy is named a
    /// partial name and renamed over it like any partial. Failed, the copy is thrown away.
    pub fn publish(mut self, folder: &'a Folder, rel: &Path, src_dir: &Path, may_exist: bool) -> crate::Result<()> {
        let (dest, store) = (self.dest, self.dest.store());
        let (_, name) = split(rel).map_err(|e| Error::io("copy to", &self.shown, e))?;
        // Whatever the storage needs before a copy may be named: its answers, a flush.
        store.complete(self.writer()).map_err(|e| Error::io("flush", &self.shown, e))?;
        if let Held::Unnamed(w) = &self.held {
            if !may_exist {
                match store.name_unnamed(w, folder, name) {
                    Ok(()) => {
                        self.held = Held::Gone;
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("link into", &self.shown, e)),
                }
            }
            let tmp = partial_name(name);
            store.name_unnamed(w, folder, &tmp).map_err(|e| Error::io("link into", &self.shown, e))?;
            dest.partial_made();
            let Held::Unnamed(w) = std::mem::replace(&mut self.held, Held::Gone) else { unreachable!() };
            // From here on a partial like any other, beside its name: thrown away on drop.
            self.held = Held::Named(w, tmp, Place::Beside(folder));
        }
        let Held::Named(_, tmp, place) = &self.held else { unreachable!("named above") };
        let (tmp, from) = (tmp.clone(), place.folder());
        if dest.folds_case_of(name) {
            // Two names that fold to one, copied at once, must not both look at an empty folder
            // and then replace each other: a link never replaces, so one of them finds the other.
            if !may_exist {
                match store.link(from, &tmp, folder, name) {
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
                Ok(Some(older)) => match store.remove_file(folder, Path::new(&older)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Error::io("remove the older copy of", &self.shown, e));
                    }
                    _ => {}
                },
                Ok(None) => {}
            }
        }
        store.rename(from, &tmp, folder, name).map_err(|e| Error::io("rename into", &self.shown, e))?;
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
        if let Held::Named(w, tmp, place) = std::mem::replace(&mut self.held, Held::Gone) {
            drop(w);
            self.dest.remove_partial(place.folder(), &tmp);
            drop(place);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    /// Fills `out` with `bytes`, from a source file as a copy does.
    fn fill(out: &PartialFile<'_>, bytes: &[u8]) {
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(bytes).unwrap();
        io::Seek::rewind(&mut src).unwrap();
        let how = (sys::CopyMethod::Auto, &sys::Learned::default());
        let (n, _) =
            out.fill(&src, bytes.len() as u64, false, how, &std::sync::atomic::AtomicBool::new(false)).unwrap();
        assert_eq!(n, bytes.len() as u64);
    }

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
            fill(&out, b"half");
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
            fill(&out, b"new");
            assert!(out.publish(&folder, Path::new("held"), t.path(), true).is_err());
            assert_eq!(names(t.path()), ["held"], "no partial left beside it");
            assert!(!dest.partials_left());
            let out = PartialFile::create(&dest, &folder, Path::new("c.0"), 0o644, Partial::Beside, unnamed).unwrap();
            fill(&out, b"new");
            out.publish(&folder, Path::new("c.0"), t.path(), unnamed.is_none()).unwrap();
            assert_eq!(names(t.path()), ["c.0", "held"]);
            assert_eq!(fs::read(t.path().join("c.0")).unwrap(), b"new");
            assert!(!dest.partials_left());
            fs::remove_file(t.path().join("c.0")).unwrap();
        }
    }

    #[test]
    fn a_named_copy_is_read_back_by_its_name_and_one_with_no_name_is_not() {
        let t = tempfile::tempdir().unwrap();
        let dest = Dest::open(t.path(), t.path(), None).unwrap();
        let folder = dest.folder(Path::new(""), false).unwrap();
        let out = PartialFile::create(&dest, &folder, Path::new("c.0"), 0o644, Partial::Beside, None).unwrap();
        fill(&out, b"chunk bytes");
        let back = out.read_back().unwrap();
        assert_eq!(back, Some(crate::content::hash_reader(&b"chunk bytes"[..]).unwrap()));
        let learned = sys::Learned::default();
        let unnamed = PartialFile::create(&dest, &folder, Path::new("c.1"), 0o644, Partial::Beside, Some(&learned));
        let unnamed = unnamed.unwrap();
        if matches!(unnamed.held, Held::Unnamed(_)) {
            assert_eq!(unnamed.read_back().unwrap(), None, "nothing to read back by");
        }
    }
}
