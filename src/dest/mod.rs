//! The destination root, and every path below it reached without a link (docs/design.md,
//! invariant 6): a folder inside the destination that is a symlink (an admin moving a big folder
//! to another volume) must not make softcopy write, read or delete anywhere else. And the marker
//! withdrawn before the first change (invariant 9): a marker at the destination always means
//! "a verified copy of the current source", never "a copy of an earlier acquisition with some of
//! the new one mixed in".
//!
//! `Dest` holds the destination's storage (`backend.rs`, the interface; `local.rs`, the local
//! filesystem) and keeps the policy above it: the marker, another run's claim, case folding, the
//! copies of freed files, staging folders, the count of partials (docs/design.md, "The
//! destination interface").
//!
//! This folder owns every act at the destination: the storage, a copy in the writing
//! (`partial.rs`), the claim (`claim.rs`), the background flush (`flush.rs`) and the one
//! mirrored-deletion path (`mirror.rs`). It may import only `content`, `sys` and `vocab`.

pub mod backend;
pub mod claim;
pub(crate) mod flush;
pub mod local;
pub(crate) mod mirror;
pub mod partial;
mod refused;
pub mod remote;
pub mod remote_exec;
pub mod server_hash;
pub mod sftp;
pub mod store;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use backend::{Backend, Kind, Look};
pub use claim::Standing;
use local::{folder_identity, Local};
pub use refused::Refused;
pub use store::{Folder, Store};

use crate::vocab::STAGING;

/// How many folders [`Dest`] remembers as looked at for another run's claim.
const UNCLAIMED_REMEMBERED: usize = 16 * 1024;

/// The destination root of one target.
pub struct Dest {
    root: PathBuf,
    /// The destination as the user named it: a link there may be re-pointed during the run.
    given: PathBuf,
    /// The identity (device, file number) of the folder held, to tell when `given` leads elsewhere.
    held: (u64, u64),
    /// The storage below the root: every act there goes through it (`backend.rs`, `store.rs`).
    store: Store,
    /// The marker's name, while it may still have to be withdrawn; `None` once it was (or when
    /// this destination never withdraws it: the end steps publishing it).
    marker: Mutex<Option<PathBuf>>,
    /// The destination does not tell `A` from `a` (NTFS, SMB, macOS volumes by default): two
    /// source names that differ only in case would be one file there.
    folds_case: std::sync::atomic::AtomicBool,
    /// Folders below the root already looked at for another run's claim (one look per folder,
    /// not per file; forgotten past [`UNCLAIMED_REMEMBERED`], then looked at again).
    unclaimed: Mutex<HashSet<PathBuf>>,
    /// Names whose copies the move journal says are the only ones left (their sources freed by
    /// an earlier run): never written over nor removed (docs/design.md, "Freeing the source").
    freed: std::sync::OnceLock<std::sync::Arc<HashSet<PathBuf>>>,
    /// Staging folders not in use now, and how many were made (see [`Dest::staging`]).
    staging: Mutex<Vec<Folder>>,
    staged: std::sync::atomic::AtomicUsize,
    /// A rename out of a staging folder failed as crossing filesystems (something is mounted
    /// below the destination root): every copy is written beside its name from then on.
    no_staging: std::sync::atomic::AtomicBool,
    /// Partial files made and not yet renamed or removed: none left at the end means every file
    /// at the destination is one this run published (docs/design.md, "The end of a run").
    partials: std::sync::atomic::AtomicI64,
    /// Copies of another kind were removed from a name (`in_the_way.rs`): with a folder went any
    /// copy a worker had just put in it, which the tracker still holds as landed.
    kind_changed: std::sync::atomic::AtomicBool,
    /// Something changed since the last background flush (`flush.rs`).
    dirty: std::sync::atomic::AtomicBool,
    /// A file at the root and its bytes, which say this folder is the copy being made (the
    /// origin's record): looked for with the root's identity, which a share that numbers files by
    /// their path keeps for a folder swapped in under the name (see [`Dest::check_root`]).
    record: Mutex<Option<(PathBuf, Vec<u8>)>>,
    /// When [`Dest::check_root`] last found the root to be this copy, for [`Dest::changing`].
    checked: Mutex<Option<Instant>>,
    /// The ssh server's hasher, where copies are proven by its digests (`server_hash.rs`).
    hasher: std::sync::OnceLock<server_hash::Hasher>,
}

/// A staging folder lent to one copy, returned when dropped.
pub struct Staging<'a> {
    dest: &'a Dest,
    folder: Option<Folder>,
}

impl std::ops::Deref for Staging<'_> {
    type Target = Folder;
    fn deref(&self) -> &Folder {
        self.folder.as_ref().expect("held until dropped")
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.folder.take() {
            self.dest.staging.lock().unwrap_or_else(|e| e.into_inner()).push(f);
        }
    }
}

impl Dest {
    /// The destination at `root` (an existing folder). With `marker`, the marker at the root is
    /// removed before the first change made through [`Dest::changing`].
    /// `given` is the user's name for it, which `root` (canonical) resolves.
    pub fn open(root: &Path, given: &Path, marker: Option<&str>) -> io::Result<Dest> {
        let mut dest = Dest::blank(root, given, marker);
        let (local, held) = Local::open(root)?;
        (dest.store, dest.held) = (Store::Local(local), held);
        Ok(dest)
    }

    /// The destination in `store`, the user's `given` name for its root (resolved by the store
    /// now, and held as found). With `marker`, as [`Dest::open`].
    pub fn open_store(store: Store, given: &Path, marker: Option<&str>) -> io::Result<Dest> {
        let found = store.locate(given)?;
        let mut dest = Dest::blank(&found.path, given, marker);
        (dest.store, dest.held) = (store, found.id);
        Ok(dest)
    }

    /// Nothing held, nothing known yet: what [`Dest::open`], [`Dest::at`] and [`Dest::view`] fill in.
    fn blank(root: &Path, given: &Path, marker: Option<&str>) -> Dest {
        Dest {
            root: root.to_path_buf(),
            given: given.to_path_buf(),
            held: (0, 0),
            store: Store::Local(Local::unheld(root)),
            marker: Mutex::new(marker.map(PathBuf::from)),
            unclaimed: Mutex::default(),
            freed: std::sync::OnceLock::new(),
            folds_case: Default::default(),
            staging: Mutex::default(),
            staged: Default::default(),
            no_staging: Default::default(),
            partials: Default::default(),
            kind_changed: Default::default(),
            dirty: Default::default(),
            record: Mutex::default(),
            checked: Mutex::default(),
            hasher: std::sync::OnceLock::new(),
        }
    }

    /// A staging folder for one copy's partial file, made on first need below [`STAGING`]: one
    /// per copy in flight, so no two creates share a folder (docs/design.md, "Round trips").
    /// `None` once staging was found not to work here.
    pub fn staging(&self) -> Option<io::Result<Staging<'_>>> {
        if self.no_staging.load(Ordering::Relaxed) {
            return None;
        }
        let spare = self.staging.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let folder = match spare {
            Some(f) => f,
            None => {
                let n = self.staged.fetch_add(1, Ordering::Relaxed);
                match self.folder(&Path::new(STAGING).join(n.to_string()), true) {
                    Ok(f) => f,
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        Some(Ok(Staging { dest: self, folder: Some(folder) }))
    }

    /// Staging does not work here: copies are written beside their names from now on.
    pub fn refuse_staging(&self) {
        self.no_staging.store(true, Ordering::Relaxed);
    }

    /// Removes the staging folders, empty at the end of a run (a partial left in one by a run
    /// that was killed is removed at the next start, with every other partial).
    pub fn remove_staging(&self) {
        self.staging.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Reached without a link, as every path this module writes to; only empty folders go.
        let Ok(root) = self.folder(Path::new(""), false) else { return };
        if let Ok(top) = self.folder(Path::new(STAGING), false) {
            for (name, _) in self.store.list(&top).into_iter().flatten() {
                let _ = self.store.remove_folder(&top, Path::new(&name));
            }
        }
        let _ = self.store.remove_folder(&root, Path::new(STAGING));
    }

    /// Whether the destination the user named still leads to the folder held: a root that is a
    /// link, re-pointed during the run (a share remounted elsewhere, an admin's switch), must not
    /// go on receiving, nor be verified and marked, at the old place. Only a name that resolves, to
    /// another folder, is evidence of that; one that cannot be resolved now (a share dropped) is
    /// unavailable, and waited for (docs/design.md, "Unavailable is not elsewhere").
    pub fn check_root(&self) -> Result<(), RootProblem> {
        let unavailable = |e: io::Error| {
            RootProblem::Unavailable(format!("destination {} cannot be reached ({e})", self.given.display()))
        };
        // A claim lost to another run is positive evidence, as a root that leads elsewhere: the
        // run never writes there again (docs/design.md, invariant 10).
        match self.store.reconfirm() {
            Standing::Held => {}
            Standing::Unconfirmed(why) => return Err(RootProblem::Unavailable(why)),
            Standing::Lost(why) => return Err(RootProblem::Elsewhere(why)),
        }
        let now = self.store.locate(&self.given).map_err(unavailable)?;
        if now.path != self.root || now.id != self.held {
            return Err(RootProblem::Elsewhere(format!(
                "destination {} now leads to {}, not to the folder being copied to ({})",
                self.given.display(),
                now.path.display(),
                self.root.display()
            )));
        }
        // The same path and number, yet perhaps another folder: sshfs and other path-based shares
        // number a folder by its path, so one swapped in on the server passes. The origin's record
        // must be there, as written: another acquisition's copy, or an empty folder, has another
        // or none.
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((name, bytes)) = record {
            match read_all(self.store.read(&now.folder, &name)) {
                Ok(found) if found == bytes => {}
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(unavailable(e)),
                _ => {
                    return Err(RootProblem::Elsewhere(format!(
                        "destination {} is another folder now: its record {} is gone or another's (the folder \
                         was replaced under its name)",
                        self.given.display(),
                        name.display()
                    )))
                }
            }
        }
        *self.checked.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Keeps the bytes of `name`, a file at the root that says this folder is the copy being made
    /// (the origin's record, as written when the run started or a re-take was followed), for
    /// [`Dest::check_root`].
    pub fn keep_record(&self, name: &Path) -> io::Result<()> {
        let bytes = self.read_file(name)?;
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some((name.to_path_buf(), bytes));
        Ok(())
    }

    /// A destination for tests and one-off calls: nothing held, no marker withdrawn.
    pub fn at(root: &Path) -> Dest {
        let mut dest = Dest::blank(root, root, None);
        dest.held = folder_identity(root).unwrap_or((0, 0));
        dest
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root, where it is a local path (a mounted disk or share): none across ssh.
    pub fn local_root(&self) -> Option<&Path> {
        matches!(self.store, Store::Local(_)).then_some(self.root.as_path())
    }

    /// The user's path of `rel`, for messages.
    pub fn shown(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The folder `rel_dir` below the root, without passing a link; created (with its parents)
    /// when `create` and missing. NotFound when missing and not created; a link is an error
    /// naming it (`link_error`).
    pub fn folder(&self, rel_dir: &Path, create: bool) -> io::Result<Folder> {
        let plain = rel_dir.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let (folder, made_from) = self.store.folder_making(rel_dir, create)?;
        self.not_claimed(rel_dir, &folder, create, made_from)?;
        Ok(folder)
    }

    /// Takes this destination for one that folds case, as [`Dest::detect_case_folding`] finds
    /// NTFS or SMB: the guards of invariant 10 tried on a filesystem that does not.
    #[cfg(all(test, not(windows)))]
    pub(crate) fn assume_folds_case(&self) {
        self.folds_case.store(true, Ordering::Relaxed);
    }

    /// Whether the destination folds case.
    pub fn folds_case(&self) -> bool {
        self.folds_case.load(Ordering::Relaxed)
    }

    /// Names whose copies stand for files freed at the source (read from the move journal once,
    /// when the run starts).
    pub fn keep_freed(&self, names: HashSet<PathBuf>) {
        let _ = self.freed.set(std::sync::Arc::new(names));
    }

    /// Another view of the same destination, for the end steps: the folder held (its name is not
    /// resolved again: a folder swapped in under it since is not this copy), what is known of it
    /// (case folding, freed names), and its own marker to withdraw, or none.
    pub fn view(&self, marker: Option<&str>) -> io::Result<Dest> {
        let mut dest = Dest::blank(&self.root, &self.given, marker);
        dest.held = self.held;
        dest.store = self.store.try_clone()?;
        if let Some(names) = self.freed.get() {
            let _ = dest.freed.set(names.clone());
        }
        *dest.record.get_mut().unwrap_or_else(|e| e.into_inner()) =
            self.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
        dest.folds_case.store(self.folds_case(), Ordering::Relaxed);
        Ok(dest)
    }

    /// Whether the copy of `rel` is the only one of a file freed at the source.
    pub fn was_freed(&self, rel: &Path) -> bool {
        self.freed.get().is_some_and(|f| f.contains(rel))
    }

    /// Whether `folder` holds an entry stored under exactly `name`: where the destination folds
    /// case, a look-up of `notes` finds `Notes`, another source file's copy, which a deletion of
    /// `notes` must never remove (docs/design.md, invariant 10).
    pub fn stored_as(&self, folder: &Folder, name: &Path) -> io::Result<bool> {
        if !self.folds_case_of(name) {
            return Ok(true);
        }
        Ok(self.store.list(folder)?.iter().any(|(entry, _)| entry == name.as_os_str()))
    }

    /// Refuses a folder that is, or lies inside, another run's destination (invariant 10): each
    /// folder is looked at once per run, outermost first.
    /// Where the destination folds case, each folder is also looked at once per run for being
    /// stored under exactly its name: `pos0` found as `Pos0` is another source folder's copy.
    /// Components from index `made_from` on were just made by this run, empty and under exactly
    /// their names: nothing is looked for in them (a look is a round trip over a share, and a
    /// folder-per-chunk archive makes two folders per file), once every one above passed.
    fn not_claimed(&self, rel_dir: &Path, folder: &Folder, create: bool, made_from: Option<usize>) -> io::Result<()> {
        let known = |p: &Path| self.unclaimed.lock().unwrap_or_else(|e| e.into_inner()).contains(p);
        if rel_dir.as_os_str().is_empty() || known(rel_dir) {
            return Ok(());
        }
        let mut prefix = PathBuf::new();
        for (i, part) in rel_dir.components().enumerate() {
            let parent = prefix.clone();
            prefix.push(part);
            if known(&prefix) {
                continue;
            }
            if made_from.is_some_and(|first| i >= first) {
                self.remember_unclaimed(&prefix);
                continue;
            }
            let name = Path::new(part.as_os_str());
            if self.folds_case_of(name) && !self.stored_as(&self.open_folder(&parent, false)?, name)? {
                if !create {
                    return Err(io::Error::from(io::ErrorKind::NotFound));
                }
                return Err(Refused::FolderCase(self.root.join(&prefix)).into());
            }
            // The lock is not held while looking: other workers go on meanwhile.
            let held = if prefix == rel_dir {
                self.store.claimed(folder)
            } else {
                self.store.claimed(&self.open_folder(&prefix, false)?)
            };
            if let Some(who) = held {
                return Err(Refused::Claimed { path: self.root.join(&prefix), who }.into());
            }
            self.remember_unclaimed(&prefix);
        }
        Ok(())
    }

    /// Remembers a folder looked at for a claim. A run copies the folders of a large archive one
    /// after another, so the set forgets all at once when full: a folder still in use is looked
    /// at once more, and the memory stays bounded however many folders the archive has
    /// (docs/design.md, "Memory").
    fn remember_unclaimed(&self, rel_dir: &Path) {
        let mut known = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= UNCLAIMED_REMEMBERED {
            *known = HashSet::new();
        }
        known.insert(rel_dir.to_path_buf());
    }

    fn open_folder(&self, rel_dir: &Path, create: bool) -> io::Result<Folder> {
        self.store.folder(rel_dir, create)
    }

    /// Learns whether the destination folds case: a probe file made at its root under a name never
    /// used before is found again under that name in upper case, as the same file. A name looked
    /// up before (the claim's, by the previous run) can be answered from a client's cache of names,
    /// which still holds the upper-case name for the file removed since: taken for another file,
    /// the destination passed for case-sensitive and every guard of invariant 10 was off. A probe
    /// that cannot be made leaves the guards on.
    pub fn detect_case_folding(&self) {
        let name = format!(".softcopy-case-probe-{}-{}", std::process::id(), crate::vocab::now_ns());
        let Ok(root) = self.folder(Path::new(""), false) else {
            self.folds_case.store(true, Ordering::Relaxed);
            return;
        };
        let probe = Path::new(&name);
        let folds = match self.store.create(&root, probe, 0o600) {
            Ok(made) => {
                let upper = name.to_uppercase();
                let folds = match (self.store.look(&root, probe), self.store.look(&root, Path::new(&upper))) {
                    // Where the storage numbers files, the same number is the same file; where it
                    // does not, the upper-case name found at all is.
                    (Ok(a), Ok(b)) => cfg!(not(unix)) || (a.ident.dev, a.ident.ino) == (b.ident.dev, b.ident.ino),
                    (Err(_), _) => true,
                    (_, Err(e)) => e.kind() != io::ErrorKind::NotFound,
                };
                drop(made);
                let _ = self.store.remove_file(&root, probe); // a probe left behind is one of softcopy's own records
                folds
            }
            Err(_) => true,
        };
        self.folds_case.store(folds, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `name` could meet another name under case folding here: the destination folds case
    /// and the name has a letter or anything beyond ASCII (which may fold, or be normalized, into
    /// another name: `ß` and `SS`, a composed `é` and `e` with its accent). Chunk keys, digits and
    /// dots, never do.
    pub fn folds_case_of(&self, name: &Path) -> bool {
        self.folds_case.load(std::sync::atomic::Ordering::Relaxed)
            && name.to_string_lossy().chars().any(|c| !c.is_ascii() || c.is_ascii_alphabetic())
    }

    /// Refuses the file `rel` in `folder` where the destination folds case and holds it under
    /// another case already (another source file's copy, `A` for `a`): writing would replace that
    /// copy, and verifying would pass both names against one file, while the source (`src_dir`)
    /// has both, or had the other and freed it (its copy is then the only one left, design.md
    /// "Freeing the source"). An entry in another case whose name the source no longer has, and
    /// never freed, is this file's own older copy (the name's case changed): returned, to be
    /// replaced as any older copy. Only names with letters are looked at (chunk keys are digits),
    /// by listing the folder.
    pub fn refuse_case_collision(&self, folder: &Folder, rel: &Path, src_dir: &Path) -> io::Result<Option<OsString>> {
        let (rel_dir, name) = split(rel)?;
        if !self.folds_case_of(name) {
            return Ok(None);
        }
        let text = name.to_string_lossy();
        let mut older = None;
        for (other, _) in self.store.list(folder)? {
            if other == name.as_os_str() || !same_when_folded(&text, &other.to_string_lossy()) {
                continue;
            }
            // Absent from the source only on positive evidence: a look that failed is no proof.
            let at_source =
                !matches!(fs::symlink_metadata(src_dir.join(&other)), Err(e) if e.kind() == io::ErrorKind::NotFound);
            let freed = self.was_freed(&rel_dir.join(&other));
            if at_source || freed {
                let whose = if freed { "the only copy of a file freed at the source" } else { "another file's copy" };
                let (name, other) = (name.to_path_buf(), other.to_string_lossy().into_owned());
                return Err(Refused::NameCase { name, other, whose }.into());
            }
            older = Some(other);
        }
        Ok(older)
    }

    /// Whether anything changed since this was last asked.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// A partial file was made (it is renamed into place or removed later).
    pub fn partial_made(&self) {
        self.partials.fetch_add(1, Ordering::Relaxed);
    }

    /// A partial file got its final name (or was removed).
    pub fn partial_gone(&self) {
        self.partials.fetch_sub(1, Ordering::Relaxed);
    }

    /// Throws the partial file `name` in `folder` away; one that cannot be removed stays counted
    /// as left.
    pub fn remove_partial(&self, folder: &Folder, name: &Path) {
        match self.store.remove_file(folder, name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {}
            _ => self.partial_gone(),
        }
    }

    /// Whether a partial this run made may still be at the destination (a removal failed; a
    /// panicked copy throws its partial away as it unwinds, `partial.rs`).
    pub fn partials_left(&self) -> bool {
        self.partials.load(Ordering::Relaxed) != 0
    }

    /// Copies of another kind were removed from a name (see [`Dest::kind_changed`]).
    pub fn removed_in_the_way(&self) {
        self.kind_changed.store(true, Ordering::Relaxed);
    }

    /// Whether this run removed copies of another kind from a name: then what the tracker holds
    /// as landed is not proof that it is there (docs/design.md, "Proof without walking").
    pub fn kind_changed(&self) -> bool {
        self.kind_changed.load(Ordering::Relaxed)
    }

    /// Removes the file `rel`, reached without a link; never under a claim not held (another
    /// run's copies may be there: docs/design.md, invariant 10).
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = split(rel)?;
        self.still_held()?;
        self.store.remove_file(&self.folder(dir, false)?, name)
    }

    /// What `rel` itself is (never followed), reached without a link.
    pub fn stat(&self, rel: &Path) -> io::Result<Look> {
        let (dir, name) = split(rel)?;
        self.store.look(&self.folder(dir, false)?, name)
    }

    /// What `name` in `folder` is (never followed).
    pub fn look(&self, folder: &Folder, name: &Path) -> io::Result<Look> {
        self.store.look(folder, name)
    }

    /// The mark a copy of ours keeps of its source version, on `name` in `folder` (never
    /// followed); `None` where there is none or it cannot be read. A storage that keeps none is
    /// learned once (`learned`): asked no more, a resumed run over a share saves a round trip
    /// per file.
    pub fn mark(&self, folder: &Folder, name: &Path, learned: &crate::sys::Learned) -> Option<Vec<u8>> {
        if learned.no_marks.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let read = self.store.mark(folder, name);
        if read.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::Unsupported) {
            learned.no_marks.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        read.ok().flatten()
    }

    /// Takes the mark off the copy `rel` (found to differ from its source): a later run then
    /// compares its bytes, and copies it again, where the mark would have vouched for it.
    pub fn unmark(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = split(rel)?;
        self.store.unmark(&self.open_folder(dir, false)?, name)
    }

    /// Every entry below the root, depth first, none through a link: `visit(rel, kind)` for
    /// each, until it breaks. A folder that cannot be listed is no evidence of an empty one: the
    /// walk goes on past it and says so (`Walked::failed`). Another run's claim is no reason not
    /// to look here: the caller decides.
    pub fn walk(&self, visit: &mut dyn FnMut(&Path, Kind) -> ControlFlow<()>) -> Walked {
        let mut walked = Walked { failed: None, broken: false };
        let mut folders = vec![PathBuf::new()];
        while let Some(dir) = folders.pop() {
            let entries = match self.store.folder(&dir, false).and_then(|f| self.store.list(&f)) {
                Ok(entries) => entries,
                Err(e) => {
                    walked.failed.get_or_insert(e);
                    continue;
                }
            };
            for (name, kind) in entries {
                let rel = dir.join(&name);
                if visit(&rel, kind).is_break() {
                    walked.broken = true;
                    return walked;
                }
                if kind == Kind::Folder {
                    folders.push(rel);
                }
            }
        }
        walked
    }

    /// The names in `folder`, with what each is.
    pub fn list(&self, folder: &Folder) -> io::Result<Vec<(OsString, Kind)>> {
        self.store.list(folder)
    }

    /// Removes the file `name` in `folder`; never under a claim not held.
    pub fn remove_name(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        self.still_held()?;
        self.store.remove_file(folder, name)
    }

    /// Removes the empty folder `name` in `folder`.
    pub fn remove_folder(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        self.store.remove_folder(folder, name)
    }

    /// Whether the copy `name` in `folder` holds the same bytes as the source file `src`.
    pub fn same_contents(&self, folder: &Folder, name: &Path, src: &Path) -> io::Result<bool> {
        crate::content::same_bytes(crate::sys::open_no_follow(src)?, self.store.read(folder, name)?)
    }

    /// Claims the destination for this run, copying `source` (docs/design.md, invariant 10).
    pub fn claim(&self, source: &Path) -> Result<Claim, String> {
        let root =
            self.folder(Path::new(""), false).map_err(|e| format!("cannot claim {}: {e}", self.root.display()))?;
        self.store.claim(&root, &claim::who(source))
    }

    /// Who holds a claim on the folder `rel_dir` (the root for an empty path), if a live run
    /// does; the folder is reached without a link, and one that cannot be reached holds none.
    pub fn claimed(&self, rel_dir: &Path) -> Option<String> {
        self.store.claimed(&self.open_folder(rel_dir, false).ok()?)
    }

    /// The bytes of the file `rel`, reached without a link (NotFound when there is none).
    pub fn read_file(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let (dir, name) = split(rel)?;
        read_all(self.store.read(&self.open_folder(dir, false)?, name))
    }

    /// The file `rel`, opened for reading without a link.
    pub fn open_file(&self, rel: &Path) -> io::Result<Reader> {
        let (dir, name) = split(rel)?;
        self.store.read(&self.open_folder(dir, false)?, name)
    }

    /// Writes `bytes` as the file `rel` whole or not at all: written under `partial`'s name beside
    /// it, made durable, renamed over it, and the rename made durable. Our own records only (the
    /// origin's record, the journal rewritten): never a copy, which `partial.rs` writes.
    pub fn write_file(&self, rel: &Path, partial: &Path, bytes: &[u8]) -> io::Result<()> {
        let (dir, name) = split(rel)?;
        let folder = self.open_folder(dir, false)?;
        // The marker, the origin's record, the let-go note: never under a claim not held.
        self.still_held()?;
        match self.store.remove_file(&folder, partial) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let w = self.store.create(&folder, partial, 0o644)?;
        self.store.write(&w, bytes)?;
        self.store.flush_file(&w)?;
        drop(w);
        self.still_held()?;
        self.store.rename(&folder, partial, &folder, name)?;
        self.store.flush_folder(&folder)
    }

    /// The file `rel` opened to append to (made when missing), without a link, its name durable in
    /// its folder: [`Appending::flush`] makes what was appended durable, not the name of a file
    /// just made (the journal's lines vouch for freed files only if the journal is found).
    pub fn append_file(&self, rel: &Path) -> io::Result<Appending<'_>> {
        self.still_held()?;
        let (dir, name) = split(rel)?;
        let folder = self.open_folder(dir, false)?;
        let w = self.store.append(&folder, name, 0o644)?;
        self.store.flush_folder(&folder)?;
        Ok(Appending { dest: self, w })
    }

    /// Makes everything written to the destination durable: the whole filesystem flushed where
    /// it can be, else the root folder's entries (each copy was flushed as it was named).
    pub fn flush_all(&self) -> io::Result<()> {
        match self.flush_filesystem() {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                self.store.flush_folder(&self.open_folder(Path::new(""), false)?)
            }
            done => done,
        }
    }

    /// Makes everything written to the destination's filesystem durable at once; Unsupported
    /// where it cannot be (then each copy is flushed by name: [`Dest::flush_copy`]).
    pub fn flush_filesystem(&self) -> io::Result<()> {
        self.store.flush_all(&self.open_folder(Path::new(""), false)?)
    }

    /// Makes the copies `rels` durable before their sources go: the whole filesystem flushed where
    /// it can be; over SFTP, whose flush of everything reaches folders only, each copy is fsynced
    /// on the server first (one found there may never have been). Unsupported as
    /// [`Dest::flush_filesystem`].
    pub fn flush_copies(&self, rels: &[&Path]) -> io::Result<()> {
        if let Store::Sftp(s) = &self.store {
            s.flush_files(rels)?;
        }
        self.flush_filesystem()
    }

    /// Makes the copy `rel` durable, and its name in its folder.
    pub fn flush_copy(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = split(rel)?;
        let folder = self.open_folder(dir, false)?;
        self.store.flush_named(&folder, name)?;
        self.store.flush_folder(&folder)
    }

    /// Whether a background flush helps here (`flush.rs`).
    pub fn flushes_in_background(&self) -> bool {
        self.store.flushes_in_background()
    }

    /// Free space where the destination is, for messages; `None` when it cannot be told.
    pub fn free_space(&self) -> Option<crate::sys::Space> {
        self.store.free_space(&self.open_folder(Path::new(""), false).ok()?)
    }

    /// Whether `e`, met writing a copy, means the destination as a whole cannot take files: the
    /// storage says so, (EIO, EACCES, ...) its root cannot be reached, or the claim is not held
    /// now (the target then pauses and probes, rather than every file backing off on its own).
    pub fn cannot_take_files(&self, e: &io::Error) -> bool {
        self.store.standing() != Standing::Held
            || self.store.whole_storage_error(e)
            || self.store.locate(&self.root).is_err()
    }

    /// Has copies proven by the server's digests from now on (an ssh destination whose host has
    /// a hasher: `server_hash.rs`).
    pub fn hash_on_server(&self, hasher: server_hash::Hasher) {
        let _ = self.hasher.set(hasher);
    }

    /// The algorithm the server hashes copies with, where it does.
    pub fn server_algo(&self) -> Option<server_hash::Algo> {
        self.hasher.get().map(|h| h.algo)
    }

    /// What the server says of the copies `rels` (`bytes` in all), in one command; `None` where
    /// no server hashes them.
    pub fn server_digests(&self, rels: &[&Path], bytes: u64) -> Option<Vec<server_hash::Answer>> {
        match (&self.store, self.hasher.get()) {
            (Store::Sftp(s), Some(h)) => Some(server_hash::digests(s, h, rels, bytes)),
            _ => None,
        }
    }

    /// Whether the copy `rel` holds the same bytes as the source file `src`.
    pub fn same_as(&self, rel: &Path, src: &Path) -> io::Result<bool> {
        crate::content::same_bytes(fs::File::open(src)?, self.open_file(rel)?)
    }

    /// The storage, for the copy being written (`partial.rs`).
    fn store(&self) -> &Store {
        &self.store
    }

    /// Before a change, in memory: a claim not confirmed lately may be another run's by now, and
    /// one lost is never written under again (docs/design.md, invariant 10).
    fn still_held(&self) -> io::Result<()> {
        match self.store.standing() {
            Standing::Held => Ok(()),
            Standing::Unconfirmed(why) | Standing::Lost(why) => Err(io::Error::other(why)),
        }
    }

    /// Before a change: the root was found to be this copy within [`FRESH_ROOT`], or is looked at
    /// again (where the origin's record is kept: a run's destination, not a one-off view).
    fn still_this_copy(&self) -> io::Result<()> {
        if self.record.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Ok(());
        }
        let fresh = self.checked.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() < FRESH_ROOT);
        if fresh {
            return Ok(());
        }
        self.check_root().map_err(|p| io::Error::other(p.why().to_string()))
    }

    /// Called before anything at the destination is created, replaced or removed: withdraws the
    /// marker first (once, durably), so no reader ever sees it over a copy that is changing.
    pub fn changing(&self) -> io::Result<()> {
        self.dirty.store(true, Ordering::Relaxed);
        self.still_held()?;
        self.still_this_copy()?;
        let mut pending = self.marker.lock().unwrap_or_else(|e| e.into_inner());
        let Some(name) = pending.as_ref() else { return Ok(()) };
        // The folder is held while its `/proc/self/fd` name is used.
        let root = self.folder(Path::new(""), false)?;
        // Where the destination folds case, `complete` finds `COMPLETE`, another file's copy: the
        // marker is not there under its own name, so there is nothing to withdraw.
        let removed = if self.folds_case_of(name) && !self.stored_as(&root, name)? {
            Err(io::Error::from(io::ErrorKind::NotFound))
        } else {
            self.store.remove_file(&root, name)
        };
        match removed {
            Ok(()) => {
                // Durable before any change that it must precede (the held root, not its path).
                self.store.flush_folder(&root)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::other(format!(
                    "cannot withdraw the marker {} before changing the copy: {e}",
                    self.root.join(name).display()
                )))
            }
        }
        *pending = None;
        Ok(())
    }
}

/// A file at the destination open to append to ([`Dest::append_file`]).
pub struct Appending<'a> {
    dest: &'a Dest,
    w: store::Writer,
}

impl Appending<'_> {
    /// Appends `bytes`, never under a claim not held: the journal's lines are a change like any
    /// other (a run that took the destination over knows freed files from the journal as it read
    /// it), and a line refused is a file not freed. Held now, no other run can take the claim
    /// over for at least half the stale time (design.md, "The ssh destination: the SFTP client"):
    /// the batch this line announces is freed within it.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.dest.still_held()?;
        self.dest.store.write(&self.w, bytes)
    }

    /// Makes what was appended durable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.dest.store.flush_file(&self.w)
    }
}

pub use store::{Claim, Reader};

/// All of what `reader` yields.
fn read_all(reader: io::Result<impl io::Read>) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// How a walk of the destination went.
#[derive(Debug)]
pub struct Walked {
    /// The first folder that could not be listed: the walk is incomplete.
    pub failed: Option<io::Error>,
    /// The visitor ended it early.
    pub broken: bool,
}

/// How often a run resolves the destination's name again: a few metadata round trips each time.
const RECHECK_ROOT: Duration = Duration::from_secs(5);
/// How long a look that found the root to be this copy stands for a change at the destination: a
/// folder swapped in under the name since may have a file replaced or removed within this much.
const FRESH_ROOT: Duration = Duration::from_secs(1);

/// Why the destination's name does not lead to the folder held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootProblem {
    /// It cannot be resolved now (a share dropped, a disk away): no evidence of anything, waited
    /// for up to `give_up_after`.
    Unavailable(String),
    /// It resolves, to another folder: positive evidence that the run must not go on there.
    Elsewhere(String),
}

impl RootProblem {
    /// Why, in words.
    pub fn why(&self) -> &str {
        match self {
            RootProblem::Unavailable(why) | RootProblem::Elsewhere(why) => why,
        }
    }
}

/// Whether the destination's name still leads to the folder held, looked at every
/// `RECHECK_ROOT` by the coordinator: while it leads elsewhere, nothing is handed out (the target
/// is paused), and a run that ends so is not verified; while it cannot be reached, the run waits.
#[derive(Default)]
pub struct RootWatch {
    next: Option<Instant>,
    away: Option<String>,
    /// Since when, and why, it cannot be reached (a look found no evidence either way).
    unreachable: Option<(Instant, String)>,
}

/// What a look found changed.
pub enum RootChange {
    /// It leads elsewhere now, for this reason.
    Left(String),
    /// It cannot be reached now, for this reason.
    Unreachable(String),
    /// It leads to the folder held again.
    Back,
}

impl RootWatch {
    /// Looks when a look is due (`force`: now).
    pub fn look(&mut self, dest: &Dest, now: Instant, force: bool) -> Option<RootChange> {
        if !force && self.next.is_some_and(|next| now < next) {
            return None;
        }
        self.next = Some(now + RECHECK_ROOT);
        self.learn(dest.check_root(), now)
    }

    /// What a look's answer changes.
    fn learn(&mut self, answer: Result<(), RootProblem>, now: Instant) -> Option<RootChange> {
        match answer {
            Err(RootProblem::Elsewhere(why)) if self.away.as_deref() != Some(why.as_str()) => {
                self.unreachable = None;
                self.away = Some(why.clone());
                Some(RootChange::Left(why))
            }
            // Unreachable says nothing of where it leads: a root that was elsewhere stays so.
            Err(RootProblem::Unavailable(why)) if self.unreachable.is_none() => {
                self.unreachable = Some((now, why.clone()));
                Some(RootChange::Unreachable(why))
            }
            Ok(()) if self.away.is_some() || self.unreachable.is_some() => {
                self.away = None;
                self.unreachable = None;
                Some(RootChange::Back)
            }
            _ => None,
        }
    }

    /// Why the destination is not the folder held, while it is not.
    pub fn away(&self) -> Option<&str> {
        self.away.as_deref()
    }

    /// Why the destination cannot be reached, while it cannot.
    pub fn unreachable(&self) -> Option<&str> {
        self.unreachable.as_ref().map(|(_, why)| why.as_str())
    }

    /// It has not been reachable for longer than `limit`.
    pub fn gave_up(&self, limit: Duration, now: Instant) -> bool {
        self.unreachable.as_ref().is_some_and(|(since, _)| now.saturating_duration_since(*since) > limit)
    }
}

/// `rel`'s folder and name.
pub fn split(rel: &Path) -> io::Result<(&Path, &Path)> {
    let name = rel.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok((rel.parent().unwrap_or(Path::new("")), Path::new(name)))
}

/// Whether two names are one at a destination that folds case: compared as such a filesystem
/// compares them, folded in full (`ß` is `ss`) and normalized (a composed `é` is `e` with its
/// accent), not merely lower-cased (which missed `Maße` and `MASSE`, and let a freed file's only
/// copy be replaced).
fn same_when_folded(a: &str, b: &str) -> bool {
    caseless::canonical_caseless_match_str(a, b)
}

// Not under Wine: these assume Linux's paths, links and errors; the Windows destination is run by
// the live tests under Wine (tests/windows).
#[cfg(all(test, not(windows)))]
mod disk_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_as_a_case_folding_filesystem_compares_them() {
        for (a, b) in [("Log.txt", "log.txt"), ("Maße", "MASSE"), ("caf\u{e9}", "CAFE\u{301}"), ("ǅ", "ǆ")] {
            assert!(same_when_folded(a, b), "{a} and {b} are one name");
        }
        for (a, b) in [("0", "0.0"), ("log", "logs"), ("e", "é")] {
            assert!(!same_when_folded(a, b), "{a} and {b} are two");
        }
        let dest = Dest::open(Path::new("."), Path::new("."), None).unwrap();
        dest.folds_case.store(true, Ordering::Relaxed);
        let folds = |n: &str| dest.folds_case_of(Path::new(n));
        assert!(folds("Log") && folds("ß") && folds("한") && !folds("0.1.2") && !folds("17"));
    }

    #[test]
    fn the_folders_looked_at_for_a_claim_are_remembered_up_to_a_bound() {
        let dest = Dest::open(Path::new("."), Path::new("."), None).unwrap();
        let known = || dest.unclaimed.lock().unwrap().len();
        // A few thousand folders are looked at once each...
        for i in 0..3000 {
            dest.remember_unclaimed(Path::new(&format!("t/{i}")));
        }
        assert_eq!(known(), 3000);
        // ...and a million cost no more than the bound.
        for i in 3000..UNCLAIMED_REMEMBERED + 10 {
            dest.remember_unclaimed(Path::new(&format!("t/{i}")));
            assert!(known() <= UNCLAIMED_REMEMBERED);
        }
    }

    #[test]
    fn a_folder_swapped_in_under_the_roots_name_is_elsewhere() {
        // No record kept: the folder's own identity tells it (on Windows, from a handle).
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("x.zarr");
        fs::create_dir(&root).unwrap();
        let root = fs::canonicalize(&root).unwrap();
        let dest = Dest::open(&root, &root, None).unwrap();
        assert!(dest.check_root().is_ok());
        fs::rename(&root, base.path().join("aside")).unwrap();
        fs::create_dir(&root).unwrap();
        assert!(matches!(dest.check_root(), Err(RootProblem::Elsewhere(_))), "the same path, another folder");
    }

    #[test]
    fn only_a_name_that_resolves_elsewhere_is_elsewhere_and_unreachable_is_waited_for() {
        let mut w = RootWatch::default();
        let t0 = Instant::now();
        let eio = || Err(RootProblem::Unavailable("EIO".into()));
        assert!(matches!(w.learn(eio(), t0), Some(RootChange::Unreachable(_))));
        assert!(w.learn(eio(), t0 + Duration::from_secs(1)).is_none(), "said once");
        assert_eq!((w.away(), w.unreachable()), (None, Some("EIO")), "not elsewhere");
        assert!(!w.gave_up(Duration::from_secs(10), t0 + Duration::from_secs(10)));
        assert!(w.gave_up(Duration::from_secs(10), t0 + Duration::from_secs(11)));
        assert!(matches!(w.learn(Ok(()), t0), Some(RootChange::Back)));
        assert_eq!((w.away(), w.unreachable()), (None, None));
        let moved = Err(RootProblem::Elsewhere("moved".into()));
        assert!(matches!(w.learn(moved, t0), Some(RootChange::Left(_))));
        // A root that leads elsewhere and then cannot be reached is still not the folder held.
        w.learn(eio(), t0);
        assert_eq!(w.away(), Some("moved"));
    }
}
