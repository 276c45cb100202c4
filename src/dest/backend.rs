//! The destination's storage behind one interface (docs/design.md, "The destination
//! interface"): every act the engine makes at a destination, by folder and name below its root,
//! none of them through a link. `Dest` (the root, its bookkeeping, its guards: the marker
//! withdrawn before a change, case folding, freed files' copies) asks these of its storage;
//! nothing outside `dest/` calls them. The local filesystem is the first backend (`local.rs`).
//!
//! Shaped for a destination across a network (SFTP): each call is one or two requests there,
//! answered in one round trip, and calls from many workers may be in flight at once (the
//! backend pipelines them; a worker waits only for its own answer). Handles are the backend's
//! own types, so a local folder stays an open descriptor and a remote one a checked path.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::sys::{CopyMethod, Learned, Pacing, Space};
use crate::vocab::{Hash, Identity};

/// What a name below the root is, looked at without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    /// A link, or anything else neither a file nor a folder: never followed, never copied into.
    Other,
}

/// A name looked at: what it is, and its identity (size, times, and where the storage has them
/// device and file number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    pub kind: Kind,
    pub ident: Identity,
}

impl Look {
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Folder
    }
}

/// How the bytes of a copy get to the destination: through the kernel's copy calls, paced
/// (`CopyMethod`), or through user space past a hasher (`--checksum`).
pub enum Fill<'p, P: Pacing> {
    Copy { size: u64, method: CopyMethod, learned: &'p Learned, pace: &'p P },
    Hashed { pace: &'p P },
}

/// Where the user's name for the root leads now ([`Backend::locate`]).
pub struct Located<F> {
    /// The path it resolves to.
    pub path: std::path::PathBuf,
    /// That folder's identity (device, file number).
    pub id: (u64, u64),
    /// That folder, as found at `path` (not the folder held), to read the origin's record in.
    pub folder: F,
}

/// One destination storage.
pub trait Backend: Send + Sync {
    /// A folder below the root, reached without a link: what the other calls act in.
    type Folder: Send + Sync;
    /// A file being written (a partial, or a file with no name yet).
    type Writer: Send;
    /// A file being read (a shard's index is read from its end).
    type Reader: io::Read + io::Seek;
    /// This run's claim on the root, released when dropped (docs/design.md, invariant 10).
    type Claim: Send;

    /// The folder `rel_dir` below the root (the root itself for an empty path); made with its
    /// parents when `create` and missing. NotFound when missing and not made; a link on the way
    /// is an error naming it.
    fn folder(&self, rel_dir: &Path, create: bool) -> io::Result<Self::Folder>;
    /// [`Backend::folder`], and the index of the first component of `rel_dir` this call made,
    /// when it made any: that one and every one below it were made here, empty and under exactly
    /// their names, so nothing needs to be looked for in them (another run's claim, a name stored
    /// in another case). `None` when it made none, or cannot tell.
    fn folder_making(&self, rel_dir: &Path, create: bool) -> io::Result<(Self::Folder, Option<usize>)> {
        self.folder(rel_dir, create).map(|f| (f, None))
    }
    /// The names in `folder`, with what each is.
    fn list(&self, folder: &Self::Folder) -> io::Result<Vec<(OsString, Kind)>>;
    /// What `name` in `folder` is.
    fn look(&self, folder: &Self::Folder, name: &Path) -> io::Result<Look>;
    /// Opens `name` in `folder` for reading, never through a link.
    fn read(&self, folder: &Self::Folder, name: &Path) -> io::Result<Self::Reader>;

    /// A new file `name` in `folder` with permission bits `mode`; never over an existing name.
    fn create(&self, folder: &Self::Folder, name: &Path, mode: u32) -> io::Result<Self::Writer>;
    /// A new file with no name in `folder`, where the storage has them (`Ok(None)` where not;
    /// `learned` remembers that for the next one).
    fn create_unnamed(&self, folder: &Self::Folder, mode: u32, learned: &Learned) -> io::Result<Option<Self::Writer>>;
    /// Gives a file with no name the name `name` in `folder`; never replaces one there.
    fn name_unnamed(&self, w: &Self::Writer, folder: &Self::Folder, name: &Path) -> io::Result<()>;
    /// Fills `w` from `src` (from its current offset). Returns the bytes moved, and their hash
    /// where asked.
    fn fill<P: Pacing>(&self, w: &Self::Writer, src: &File, how: Fill<'_, P>) -> io::Result<(u64, Option<Hash>)>;
    /// Gives `w` permission bits `mode` and its modification time.
    fn stamp(&self, w: &Self::Writer, mode: u32, mtime: Option<SystemTime>) -> io::Result<()>;
    /// Records on `w` which source version its bytes are (docs/design.md, "A version is decided
    /// on evidence"); Unsupported where the storage keeps no such record (`learned` remembers it).
    fn set_mark(&self, w: &Self::Writer, mark: &[u8], learned: &Learned) -> io::Result<()>;
    /// The record [`Backend::set_mark`] left on `name` in `folder`, never through a link; `None`
    /// where there is none.
    fn mark(&self, folder: &Self::Folder, name: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Removes that record from `name` in `folder`, never through a link (none there: done).
    fn unmark(&self, folder: &Self::Folder, name: &Path) -> io::Result<()>;
    /// Makes what was written to `w` durable.
    fn flush_file(&self, w: &Self::Writer) -> io::Result<()>;
    /// The copy in `w` is written in full: whatever the storage needs before it may be named
    /// (every request answered OK, a flush where no flush of everything comes before the marker).
    /// Called once, before the copy gets its name; an error means it must not get one.
    fn complete(&self, w: &Self::Writer) -> io::Result<()>;

    /// Renames `from` in `from_folder` to `to` in `to_folder`, replacing a file there atomically.
    fn rename(&self, from_folder: &Self::Folder, from: &Path, to_folder: &Self::Folder, to: &Path) -> io::Result<()>;
    /// Links `from` in `from_folder` as `to` in `to_folder`; never replaces (AlreadyExists).
    fn link(&self, from_folder: &Self::Folder, from: &Path, to_folder: &Self::Folder, to: &Path) -> io::Result<()>;
    /// Removes the file `name` in `folder`.
    fn remove_file(&self, folder: &Self::Folder, name: &Path) -> io::Result<()>;
    /// Removes the empty folder `name` in `folder`.
    fn remove_folder(&self, folder: &Self::Folder, name: &Path) -> io::Result<()>;
    /// Makes the entries of `folder` durable (a removal that must precede later changes).
    fn flush_folder(&self, folder: &Self::Folder) -> io::Result<()>;

    /// Opens `name` in `folder` to append to it, made (with `mode`) when missing; never through
    /// a link.
    fn append(&self, folder: &Self::Folder, name: &Path, mode: u32) -> io::Result<Self::Writer>;
    /// Writes all of `bytes` to `w` at its current end.
    fn write(&self, w: &Self::Writer, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file `name` in `folder` durable, by name (a copy named earlier).
    fn flush_named(&self, folder: &Self::Folder, name: &Path) -> io::Result<()>;
    /// Makes everything written to the storage durable (the flush before the marker);
    /// Unsupported where the storage cannot.
    fn flush_all(&self, root: &Self::Folder) -> io::Result<()>;
    /// Whether a flush of everything every few seconds while copies land shortens the end's
    /// flush (`flush.rs`); where not, no background flush is made.
    fn flushes_in_background(&self) -> bool;
    /// Free and total bytes and files where the root is, for messages about a full destination.
    fn free_space(&self, root: &Self::Folder) -> Option<Space>;
    /// Where the user's name for the root leads now, and that folder's identity (device and file
    /// number where the storage has them): a root swapped under its name is another folder.
    fn locate(&self, given: &Path) -> io::Result<Located<Self::Folder>>;

    /// Whether `e` says the storage as a whole cannot take files now (full, read-only, gone),
    /// not that one file failed.
    fn whole_storage_error(&self, e: &io::Error) -> bool;

    /// Claims the root for this run, `who` naming it for another run's message: refused while
    /// another live run holds the root or a folder above it. An OS lock where the storage has
    /// one; elsewhere an exclusively created file naming host and process, kept fresh while the
    /// claim lives and taken over only when provably stale.
    fn claim(&self, root: &Self::Folder, who: &str) -> Result<Self::Claim, String>;
    /// Whether this run's claim is held now, by what its refresher last learned (in memory: asked
    /// before each change).
    fn standing(&self) -> super::claim::Standing;
    /// [`Backend::standing`], its file read back first where the claim can be taken over.
    fn reconfirm(&self) -> super::claim::Standing;
    /// Who holds a claim on `folder`, if a live run does (a claim's file left by a run that
    /// ended is no claim).
    fn claimed(&self, folder: &Self::Folder) -> Option<String>;
}
