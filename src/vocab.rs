//! The words every part of the engine shares: what a version of a file is ([`Identity`]), what
//! happened to a file ([`Change`]), the unit of work ([`Job`]) and its result ([`Outcome`]), and the
//! name rules (which names are never data). The tracker, the copier, the mover and the verifier
//! all speak these and none of them imports another for them (docs/design.md, "Shape").

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Suffix of our temporary files. A Zarr key never ends with it, so a partial can never collide
/// with (or be mistaken for) data, and a later run can find and remove leftovers.
pub const PARTIAL_SUFFIX: &str = ".softcopy-partial";

/// A file's content hash: the first 128 bits of BLAKE3 (ample for integrity, half the memory;
/// `manifest.rs` computes it).
pub type Hash = [u8; 16];

/// What identifies one version of a source file, as far as metadata can: a rename-over gives a new
/// inode; an in-place rewrite changes the size, the mtime or at least the ctime (which `utime`
/// cannot set back). Within one timestamp tick none of them may change, so an event after a copy
/// overrules equal identities ([`Prev::Superseded`]), and a check that cannot tell waits or
/// compares content (docs/design.md, "A version is decided on evidence").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since 1970 (an i64 lasts until 2262; half the size of an i128 in every tracked file).
    pub mtime_ns: i64,
    /// The change time, in the same unit (0 where the system has none).
    pub ctime_ns: i64,
}

/// Now, in nanoseconds since the epoch: the clock identities' times are compared with.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// The identity of an open file or of a path's metadata.
pub fn identity(meta: &fs::Metadata) -> Identity {
    let mtime_ns =
        meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i64);
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(unix)]
    let ctime_ns = {
        use std::os::unix::fs::MetadataExt;
        meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec())
    };
    // Windows has no file index nor change time in std's metadata: versions are compared with
    // `sys::file_identity` / `sys::path_identity`, which take them from a handle. What is left
    // here (index 0) never equals those, so it can only make a check say "cannot tell".
    #[cfg(not(unix))]
    let (dev, ino, ctime_ns) = (0, 0, 0);
    Identity { dev, ino, size: meta.len(), mtime_ns, ctime_ns }
}

/// `same_mtime` of two mtimes in nanoseconds: the source's `s`, the copy's `d`.
pub fn same_mtime_ns(s: i64, d: i64) -> bool {
    s == d || (s - d).abs() < time_unit_ns(d)
}

/// The coarsest unit a timestamp (ns since 1970) is a whole number of: 2 s (FAT), 1 s (SFTP, many
/// network shares), 10 ms (exFAT: Linux's driver keeps its modification times in 10 ms steps), 1 ms,
/// 1 µs, 100 ns (NTFS, SMB); 1 when none. A filesystem that keeps whole units writes every
/// timestamp that way, so one timestamp tells its unit (nearly always).
pub fn time_unit_ns(t: i64) -> i64 {
    [2_000_000_000i64, 1_000_000_000, 10_000_000, 1_000_000, 1_000, 100].into_iter().find(|u| t % u == 0).unwrap_or(1)
}

/// What the tracker knows of the destination's copy of a file, for the job that brings it in line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prev {
    /// First sight in this run: an earlier run may have copied this version (resume).
    Unknown,
    /// This run copied this version, and no event since says it changed: skip if it is the same.
    Copied(Identity),
    /// A write, close, rename or create came after the last copy: a new version, whatever the
    /// metadata says (a rewrite within one timestamp tick leaves size and times unchanged).
    Superseded,
    /// Found again in a folder whose settled files changed unseen: this run may have copied this
    /// very version and let it go from memory, so the destination's copy is looked at first, as a
    /// resumed run's would be, even on a destination that held nothing at the start.
    Settled,
}

/// A file this run copied (or found already copied), as the mover needs it.
#[derive(Clone, Debug)]
pub struct Copied {
    pub rel: PathBuf,
    pub ident: Identity,
    pub hash: Option<Hash>,
}

/// A filesystem change to one file, relative to the source root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A complete version appeared under this name: a rename onto it.
    Replaced,
    /// A scan found the file: complete unless a writer still has it open.
    Found,
    /// The name was created (by `open(O_CREAT)` or by `link`); content may or may not follow.
    Created,
    /// Someone wrote into the file in place; it is not ready until closed.
    Modified,
    /// A writer closed the file after writing.
    ClosedWrite,
    /// Someone wrote into the file, on a system that reports no close ([`CLOSE_EVENTS`]): it is
    /// looked at once writes pause, and copied only if nobody has it open by then.
    Written,
    /// The name disappeared (deleted, or renamed away).
    Removed,
}

/// Whether the watcher reports a writer's close (inotify's IN_CLOSE_WRITE). Windows'
/// ReadDirectoryChangesW has none: there a file found open is looked at again every
/// [`BUSY_POLL`] instead of waiting for a close that never comes.
pub const CLOSE_EVENTS: bool = cfg!(target_os = "linux");

/// How often a file a writer still has open is looked at again where no close is reported.
pub const BUSY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// One unit of work for a copy worker: bring `rel` at the destination in line with the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub rel: PathBuf,
    /// What the destination holds, so an unchanged file costs one stat.
    pub prev: Prev,
    /// Readiness was not proven by a rename: copy only if no process has the file open for writing.
    pub verify_closed: bool,
    /// Where the copy is written until it is whole.
    pub partial: Partial,
}

/// Where a worker writes a copy until it is whole, when the destination cannot make unnamed files
/// (docs/design.md, "Round trips").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partial {
    /// Next to its final name, renamed in the same folder: nothing else is being copied into it.
    #[default]
    Beside,
    /// In a staging folder of the worker's own below [`STAGING`], renamed across: another copy
    /// into the same folder is in flight, and on a network filesystem a create there would wait
    /// for that copy's round trips.
    Staged,
}

/// The destination's folder of staging folders, one per worker copying at once.
pub const STAGING: &str = ".softcopy-staging";

/// What a worker did with a [`Job`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new version was copied (with its content hash when checksums are on).
    Copied { ident: Identity, bytes: u64, hash: Option<Hash> },
    /// The destination already held this version (copied earlier in this run, or by an earlier run).
    Unchanged(Identity),
    /// The source is gone; the destination file was removed (or was already absent).
    Deleted,
    /// The source changed while it was being copied; the copy was discarded.
    Changed,
    /// Not a regular file (a directory, a socket...): nothing to copy.
    Skipped,
    /// A writer still has the file open: wait for it to close.
    Busy,
    /// Whether a writer has the file open cannot be asked here (no lease: not the file's owner,
    /// no CAP_LEASE, Windows, a network filesystem), and it was written to too recently to assume
    /// it closed: it is tried again after this long, unless its close event comes first.
    Unsettled(std::time::Duration),
    /// The copy of this file failed (a source problem, or one destination path); it is retried
    /// with backoff, and given up after `MAX_FAILURES` attempts in a row.
    Failed(String),
    /// The file is missing at the source, but so is the source root as it was (moved away,
    /// unmounted, replaced): that is no evidence that the file was deleted, and nothing was
    /// removed at the destination. It is queued again and the target pauses until the root is back.
    RootGone(String),
    /// The destination as a whole cannot take files now (full, read-only, a share gone). Not this
    /// file's fault: it is queued again and the engine decides when to try the destination again.
    Unavailable(String),
}

/// Zarr's metadata files: rewritten through the acquisition (a resize per timepoint), so they are
/// never let go from memory as settled (docs/design.md, "Memory").
pub fn is_zarr_metadata(name: &std::ffi::OsStr) -> bool {
    METADATA.iter().any(|m| name == *m)
}

/// True for names that are never data: lock files (`K.__lock`, `K_<hex>.__lock`), other writers'
/// temps (`*.partial`), our own partials, and our state entries at the root and all they hold
/// (the files a freeing set aside, `aside.rs`), and the files set aside beside their names on a
/// filesystem mounted inside the acquisition ([`is_set_aside_beside`]).
pub fn is_ignored(rel: &Path) -> bool {
    let ours = |c: std::path::Component| c.as_os_str().to_str().is_some_and(|n| n.starts_with(".softcopy"));
    if rel.components().next().is_some_and(ours) {
        return true;
    }
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".__lock")
        || name.ends_with(".partial")
        || name.ends_with(PARTIAL_SUFFIX)
        || is_set_aside_beside(name)
}

/// Whether `name` is one a freeing gives a file it sets aside beside its name (`aside.rs`):
/// `.softcopy-freeing-<pid>-<ns>-<batch>-<i>` exactly. Any other name, `.softcopy-freeing-notes`
/// among them, is a person's, copied like any file below the root.
pub fn is_set_aside_beside(name: &str) -> bool {
    name.strip_prefix(".softcopy-freeing-").is_some_and(|rest| {
        rest.split('-').count() == 4 && rest.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The Zarr metadata files' names (v2 and v3): what makes a folder an array or a group, part of
/// every acquisition (never excluded) and freed only after the data it describes.
pub const METADATA: [&str; 5] = [".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"];

/// Whether `rel` names a Zarr metadata file.
pub fn is_metadata(rel: &std::path::Path) -> bool {
    rel.file_name().and_then(|n| n.to_str()).is_some_and(|n| METADATA.contains(&n))
}

/// Locks, even after a panic elsewhere: that must not turn every later status read into another.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an error says the path is not there (ENOTDIR too: a parent of the key was replaced by a
/// file, so the key is gone too).
pub fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)
}
