//! The copy workers and the copy of one file.
//!
//! A worker takes a [`Job`] (a relative path), looks at the source as it is *now*, and makes the
//! destination match: copy a new version to a partial name and rename it into place (invariant 1),
//! skip a version it already has, or remove a file the source no longer has. Workers run at the
//! lowest CPU and IO priority and never touch Python (the threads are in `pool.rs`).
//!
//! This folder owns the workers (`pool.rs`), the copy of one file here, the folders made ahead of
//! the copies (`folders.rs`), and a copy of another kind in its way (`in_the_way.rs`). It may import `dest`, `source` (the root's identity), `gentle`
//! (the pace of each step) and the base; never `run` or `end`.

pub mod folders;
pub(crate) mod in_the_way;
pub mod pool;

use std::fs::{self, File};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::dest::partial::PartialFile;
use crate::dest::{Dest, Folder, Kind};
use crate::gentle::pace::Pace;
use crate::gentle::rate::RateLimit;
use crate::sys::{self, CopyMethod};
use crate::vocab::{same_mtime_ns, time_unit_ns, Hash, Identity, Job, Outcome, Partial, Prev, PARTIAL_SUFFIX};
use crate::Error;

/// How workers copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    pub method: CopyMethod,
    /// This target's budget (`--max-rate`).
    pub max_rate: Option<Arc<RateLimit>>,
    /// The process-wide budget (`--max-total-rate`), shared with every other target.
    pub max_total_rate: Option<Arc<RateLimit>>,
    /// Hash each file while copying it and read the copy back to compare (`--checksum`).
    pub checksum: bool,
    /// Pause after each file actually copied (the seed's `--sleep-time`).
    pub sleep: Duration,
    /// Drop to idle IO priority and nice 19 in every worker thread.
    pub low_priority: bool,
    /// The back-off's gate, which every read step passes (docs/design.md, "Gentle on any scheduler").
    pub gate: Option<Arc<crate::gentle::gate::Gate>>,
    /// The destination held no files when the run started, so a file seen for the first time has
    /// no earlier copy to find there: its lookup is skipped (a name that appeared meanwhile is
    /// still never overwritten by accident; see `Out::publish`).
    pub fresh_destination: bool,
    /// What the workers learned about the filesystems (shared by all of them).
    pub learned: Arc<sys::Learned>,
    /// The source root's identity, checked before a deletion is mirrored (`None`: not checked,
    /// for callers outside an engine).
    pub root: Option<Arc<crate::source::root::RootId>>,
    /// Where no writer check is possible, how long a file must have gone unwritten before it is
    /// taken as closed (docs/design.md, invariant 4).
    pub quiet: Duration,
    /// The folders made ahead of the copies (`folders.rs`): a copy waits for its folder queued or
    /// in the making there rather than making it beside the makers.
    pub folders: Option<Arc<folders::Folders>>,
}

impl CopyOptions {
    fn pace<'a>(&'a self, stop: &'a AtomicBool) -> Pace<'a> {
        Pace::new(stop).limit(self.max_rate.as_deref()).limit(self.max_total_rate.as_deref()).gate(self.gate.as_deref())
    }
}

/// Whether an open file was reached without leaving `root` through a symlink in a parent folder
/// (`O_NOFOLLOW` only covers the last component). The kernel's own name for the descriptor says
/// where the file really is. Unknown (not Linux, no /proc) counts as inside.
fn opened_beneath(file: &File, root: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        match fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            Ok(real) => real.starts_with(root),
            Err(_) => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, root);
        true
    }
}

/// Brings `dest/rel` in line with `src_root/rel`. Never panics; every failure is an
/// [`Outcome::Failed`] naming the path, so one bad file cannot stop the engine.
pub fn sync_file(src_root: &Path, dest: &Dest, job: &Job, opts: &CopyOptions, stop: &AtomicBool) -> (Outcome, bool) {
    let mut result = sync_inner(src_root, dest, job, opts, stop);
    let crossed = |e: &crate::Error| matches!(e, crate::Error::Io { source, .. } if source.kind() == io::ErrorKind::CrossesDevices);
    if job.partial == Partial::Staged && result.as_ref().is_err_and(crossed) {
        // Another filesystem is mounted below the destination root: a staged copy cannot be
        // renamed into it. Copied again, beside its name, and never staged again here.
        dest.refuse_staging();
        result = sync_inner(src_root, dest, &Job { partial: Partial::Beside, ..job.clone() }, opts, stop);
    }
    match result {
        Ok(Outcome::Deleted) => {
            prune_empty_dirs(src_root, dest, &job.rel);
            (Outcome::Deleted, false)
        }
        Ok(outcome) => {
            let copied = matches!(outcome, Outcome::Copied { .. });
            (outcome, copied)
        }
        Err(e) if destination_unavailable(&e, dest) => (Outcome::Unavailable(e.to_string()), false),
        Err(e) => (Outcome::Failed(e.to_string()), false),
    }
}

/// Whether an error means the destination as a whole cannot take files (full, read-only, a network
/// share gone) rather than a problem with this one file. The first pauses the whole target until
/// the destination is back; the second is retried for this file alone, then given up.
fn destination_unavailable(e: &crate::Error, dest: &Dest) -> bool {
    // The source's errors are its own (`Error::SourceIo`), whatever their errno.
    let crate::Error::Io { source, .. } = e else {
        return false;
    };
    dest.cannot_take_files(source)
}

/// The source file of a job, opened and looked at.
struct Source {
    path: PathBuf,
    file: File,
    meta: fs::Metadata,
    ident: Identity,
}

fn sync_inner(
    src_root: &Path,
    dest: &Dest,
    job: &Job,
    opts: &CopyOptions,
    stop: &AtomicBool,
) -> crate::Result<Outcome> {
    let src = &src_root.join(&job.rel);
    let dst = &dest.shown(&job.rel);
    let (rel_dir, name) = crate::dest::split(&job.rel).map_err(|e| Error::io("copy", src, e))?;
    let source = match open_source_file(src_root, src, dest, job, opts)? {
        Ok(source) => source,
        Err(outcome) => return Ok(outcome),
    };
    let ident = source.ident;
    if job.prev == Prev::Copied(ident) {
        return Ok(Outcome::Unchanged(ident));
    }
    let (folder, may_exist) = match look_at_copy(dest, job, &source, name, opts)? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    if dest.was_freed(&job.rel) {
        // The copy there is the only one of a file freed from this acquisition after its copy was
        // proven; a new version at the source is a new take's, and never replaces it.
        return Ok(Outcome::Failed(format!(
            "{}: its copy is the only one of the file freed at the source by an earlier run; the file \
             there now is a new take's and is not copied over it (copy the new take elsewhere)",
            dst.display()
        )));
    }
    if let Some(outcome) = not_ready(job, src, &source, opts) {
        return Ok(outcome);
    }
    let folder = match folder {
        // Looked at above for a name in another case already.
        Some(f) => f,
        None => {
            if let Some(folders) = &opts.folders {
                folders.wait_for(rel_dir);
            }
            let f = crate::copy::in_the_way::make_folder(src_root, dest, rel_dir, opts.root.as_deref())?;
            dest.refuse_case_collision(&f, &job.rel, src.parent().unwrap_or(src))
                .map_err(|e| Error::io("copy to", dst, e))?;
            f
        }
    };
    match write_copy(dest, &folder, job, &source, may_exist, opts, stop) {
        Ok(Some((bytes, hash))) => Ok(Outcome::Copied { ident, bytes, hash }),
        Ok(None) => Ok(Outcome::Changed),
        // A folder of the name at the destination, where the source now has this file: removed,
        // then copied again at once.
        Err(e) => {
            match crate::copy::in_the_way::remove_folder_in_the_way(src_root, dest, &job.rel, opts.root.as_deref())? {
                true => Ok(Outcome::Changed),
                false => Err(e),
            }
        }
    }
}

/// Opens the job's source file without following a link, or says what its absence means.
fn open_source_file(
    src_root: &Path,
    src: &Path,
    dest: &Dest,
    job: &Job,
    opts: &CopyOptions,
) -> crate::Result<Result<Source, Outcome>> {
    // The source root is canonical (no symlinks in it), so openat2's refusal of every symlink
    // covers invariant 6 in one call; elsewhere O_NOFOLLOW covers the last component and the
    // kernel's name for the descriptor tells whether a parent folder was a link.
    let (opened, beneath_checked) = match sys::open_no_symlinks(src) {
        Some(r) => (r, true),
        None => (sys::open_no_follow(src), false),
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if crate::vocab::is_gone(&e) => {
            // Positive evidence only (invariant 8): the name is gone from the folder being copied,
            // not because that folder itself is gone or was swapped for another.
            if let Some(Err(why)) = opts.root.as_ref().map(|r| r.check(src_root)) {
                return Ok(Err(Outcome::RootGone(why)));
            }
            return crate::dest::mirror::remove_destination(dest, &job.rel).map(Err);
        }
        // A symlink: not followed, not copied; the report lists it.
        Err(e) if sys::is_symlink_refused(&e) => return Ok(Err(Outcome::Skipped)),
        // A Windows writer holding the file without sharing it: busy, like a file open for
        // writing, and looked at again (no close event will say when it lets go).
        Err(e) if sys::is_sharing_violation(&e) => return Ok(Err(Outcome::Busy)),
        Err(e) => return Err(Error::source_io("open source", src, e)),
    };
    if !beneath_checked && !opened_beneath(&file, src_root) {
        // Reached through a symlinked folder (notify watches through links): outside the source.
        return Ok(Err(Outcome::Skipped));
    }
    let meta = file.metadata().map_err(|e| Error::source_io("stat source", src, e))?;
    if !meta.is_file() {
        return Ok(Err(Outcome::Skipped));
    }
    let ident = sys::file_identity(&file, &meta);
    Ok(Ok(Source { path: src.to_path_buf(), file, meta, ident }))
}

/// On first sight of a file in this run, a previous run may have copied this very version:
/// `Unchanged` if so. Else the destination folder if it was opened to look, and whether the name
/// may hold an earlier copy to replace.
fn look_at_copy(
    dest: &Dest,
    job: &Job,
    source: &Source,
    name: &Path,
    opts: &CopyOptions,
) -> crate::Result<Result<(Option<Folder>, bool), Outcome>> {
    let (src, ident) = (&source.path, &source.ident);
    let mut may_exist = job.prev != Prev::Unknown;
    let look_first = match job.prev {
        Prev::Unknown => !opts.fresh_destination,
        Prev::Settled => true,
        Prev::Copied(_) | Prev::Superseded => false,
    };
    // The destination folder, once opened (it is opened once per file: to look, compare, write).
    if !look_first {
        return Ok(Ok((None, may_exist)));
    }
    let Ok(f) = dest.folder(crate::dest::split(&job.rel).map_err(|e| Error::io("copy", src, e))?.0, false) else {
        return Ok(Ok((None, may_exist)));
    };
    // A copy found only under another case (the name's case changed at the source) is an older
    // copy to replace, whatever its size and mtime: the copy takes the name as it is.
    let other_case = dest
        .refuse_case_collision(&f, &job.rel, src.parent().unwrap_or(src))
        .map_err(|e| Error::io("look at", dest.shown(&job.rel), e))?
        .is_some();
    if let Ok(look) = dest.look(&f, name) {
        let copy = look.ident;
        // A destination keeping whole seconds (SFTP, many shares) holds the source's mtime cut to
        // them: compared exactly, every resumed copy there looked changed, and a file whose freeing
        // a crash cut short (journaled, not unlinked) was taken for a new take's.
        if look.is_file() && !other_case && copy.size == ident.size && same_mtime_ns(ident.mtime_ns, copy.mtime_ns) {
            // Size and mtime do not prove the version (a rewrite within one tick keeps both; two
            // folders swapped keep each other's copies): the copy's mark of the version it was
            // made from does, else the contents decide (docs/design.md, "A version is decided on
            // evidence").
            let marked =
                source_mark(source).is_some_and(|mark| dest.mark(&f, name, &opts.learned).is_some_and(|m| m == mark));
            if marked || dest.same_contents(&f, name, src).unwrap_or(false) {
                return Ok(Err(Outcome::Unchanged(*ident)));
            }
        }
        may_exist = true;
    }
    Ok(Ok((Some(f), may_exist)))
}

/// Why the source file is not to be copied yet, if it is not: a writer has it open, or its last
/// change is too recent for a change during the copy to be told from it.
fn not_ready(job: &Job, src: &Path, source: &Source, opts: &CopyOptions) -> Option<Outcome> {
    if job.verify_closed {
        match sys::open_for_writing(&source.file, src) {
            // Invariant 4: a file a writer still has open is not copied; its close brings it back.
            Some(true) => return Some(Outcome::Busy),
            Some(false) => {}
            // The kernel cannot say (not the owner, no CAP_LEASE, no leases on this system or
            // filesystem). Silence is not proof of a close: only a long enough quiet is.
            None => {
                opts.learned.no_busy_check.store(true, Ordering::Relaxed);
                let unwritten = last_written(&source.meta).elapsed().unwrap_or(Duration::ZERO);
                if unwritten < opts.quiet {
                    return Some(Outcome::Unsettled(opts.quiet - unwritten));
                }
            }
        }
    }
    if job.verify_closed || job.prev == Prev::Superseded {
        // The check after the copy compares identities, which tells a write during the copy only
        // if that write's timestamps differ from the last change's: the last change must be at
        // least a tick of the source's clock ago, or the copy waits until it is.
        let since = last_written(&source.meta).elapsed().unwrap_or(Duration::ZERO);
        let tick = tick_of(&source.ident);
        if since < tick {
            return Some(Outcome::Unsettled(tick - since));
        }
    }
    None
}

/// Writes the copy under a partial name and publishes it: its size and hash, or `None` when the
/// source changed meanwhile (the copy is then thrown away, never published: invariant 2).
fn write_copy(
    dest: &Dest,
    folder: &Folder,
    job: &Job,
    source: &Source,
    may_exist: bool,
    opts: &CopyOptions,
    stop: &AtomicBool,
) -> crate::Result<Option<(u64, Option<Hash>)>> {
    let (src, file, ident, dst) = (&source.path, &source.file, source.ident, &dest.shown(&job.rel));
    // The source's permission bits, never wider (no setuid/setgid/sticky).
    #[cfg(unix)]
    let mode = std::os::unix::fs::PermissionsExt::mode(&source.meta.permissions()) & 0o777;
    #[cfg(not(unix))]
    let mode = 0o644;
    // No unnamed file where the copy is read back by name.
    let unnamed = (!opts.checksum).then_some(&*opts.learned);
    let out = PartialFile::create(dest, folder, &job.rel, mode, job.partial, unnamed)?;
    // The copy is marked with its version only if a write after it began would change the
    // version's ctime: a version changed within a tick of its clock is waited for (a live file
    // just closed: at most 10 ms, while other workers go on), where the copy can be marked.
    let mark = (!opts.learned.no_marks.load(Ordering::Relaxed)).then(|| source_mark(source)).flatten();
    if mark.is_some() {
        let left = tick_left(ident.ctime_ns, crate::vocab::now_ns());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
    }
    let started = crate::vocab::now_ns();
    // With `--checksum` through user space: the bytes must pass through the hasher on their way.
    let (bytes, hash) = out.fill(file, ident.size, opts.checksum, (opts.method, &opts.learned), &opts.pace(stop))?;
    out.stamp(mode, source.meta.modified().ok())?;
    // The bytes are the version `ident` only if a write during the copy would have changed it.
    if let Some(mark) = mark.filter(|_| settled_before(&ident, started)) {
        out.mark(&mark, &opts.learned);
    }
    sys::drop_cache(file);
    // Re-check the source after the copy (invariant 2): if the name now points at another
    // version, or this one changed in place, what we hold is stale and must not be published.
    let after = sys::path_identity(src).ok();
    let fd_after = file.metadata().map(|m| sys::file_identity(file, &m)).ok();
    if after != Some(ident) || fd_after != Some(ident) || bytes != ident.size {
        return Ok(None);
    }
    if let Some(hash) = hash {
        // Read the copy back before it gets its final name: what we wrote is what we read.
        if out.read_back()?.is_some_and(|back| back != hash) {
            let msg = "the copy read back differs from what was written";
            return Err(Error::io("verify", dst, io::Error::other(msg)));
        }
    }
    dest.changing().map_err(|e| Error::io("publish", dst, e))?;
    out.publish(folder, &job.rel, src.parent().unwrap_or(src), may_exist)?;
    Ok(Some((bytes, hash)))
}

/// When the file's content last changed: its ctime where there is one (a writer cannot set it
/// back, as `utime` can the mtime), else its mtime.
fn last_written(meta: &fs::Metadata) -> std::time::SystemTime {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ctime =
            UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().clamp(0, 999_999_999) as u32);
        meta.modified().map_or(ctime, |m| m.max(ctime))
    }
    #[cfg(not(unix))]
    {
        meta.modified().unwrap_or(UNIX_EPOCH)
    }
}

/// How far apart two changes of a file must be for its timestamps to tell them apart, inferred
/// from the timestamps themselves (whole seconds: FAT's 2 s, some network filesystems); at least
/// Linux's coarse clock, which ticks at least every 10 ms.
fn tick_of(ident: &Identity) -> Duration {
    let unit = [ident.mtime_ns, ident.ctime_ns].into_iter().filter(|&t| t != 0).map(time_unit_ns).max();
    Duration::from_nanos(unit.unwrap_or(1).max(10_000_000) as u64)
}

/// What a copy records of the source version its bytes are: that version's inode, size, mtime
/// and ctime. A file's ctime cannot be set back, and a write, a rename onto its name or an inode
/// handed to a new file changes it, so while a file keeps these it is the version whose bytes
/// the copy holds, under whatever name and folder: two folders swapped change no time, but
/// their files' inodes are each other's. Not the device: a disk found under another number
/// after a reboot would send every copy to the bytes, and another filesystem's file of the same
/// inode, ctime to the nanosecond, size and mtime is not a risk worth that. `None` for a version
/// these cannot tell: no inode or no change time, or a change time in whole seconds (what
/// filesystems that keep none report, FUSE and network ones that copy the mtime into it, where
/// inode numbers may also be made up per mount).
fn mark_of(ident: &Identity) -> Option<Vec<u8>> {
    let real = ident.ino != 0 && ident.ctime_ns != 0 && time_unit_ns(ident.ctime_ns) < 1_000_000_000;
    real.then(|| format!("softcopy 1 {} {} {} {}", ident.ino, ident.size, ident.mtime_ns, ident.ctime_ns).into_bytes())
}

/// The mark of the version `source` is ([`mark_of`]), where its filesystem's kernel stamps the
/// ctime: not on FUSE, where the daemon says what ctime and inode number are (rclone gives the
/// mtime, to the nanosecond, as the ctime and numbers a file by its path: a file rewritten with
/// its mtime kept, or two folders swapped, kept every field of the mark; docs/design.md, "A
/// version is decided on evidence").
fn source_mark(source: &Source) -> Option<Vec<u8>> {
    mark_of(&source.ident).filter(|_| sys::ctime_is_the_kernels(&source.file))
}

/// A tick of the clock the kernel stamps a change time from, where it keeps it finer than a
/// second (the versions [`mark_of`] marks): Linux's coarse clock ticks at least every 10 ms.
const CTIME_TICK_NS: i64 = 10_000_000;

/// What is left, at `now_ns`, of the tick that began at a version's ctime `ctime_ns`: none once
/// it passed, never more than a tick (a clock set back meanwhile).
fn tick_left(ctime_ns: i64, now_ns: i64) -> Duration {
    Duration::from_nanos(ctime_ns.saturating_add(CTIME_TICK_NS).saturating_sub(now_ns).clamp(0, CTIME_TICK_NS) as u64)
}

/// Whether the version `ident` last changed (its ctime: a writer cannot set it, as `utime` can
/// the mtime) a tick or more before `started` (ns since 1970): then a write after `started`
/// gives it another ctime.
fn settled_before(ident: &Identity, started: i64) -> bool {
    ident.ctime_ns.saturating_add(CTIME_TICK_NS) <= started
}

/// After a deletion, removes the destination directories that became empty and no longer exist at
/// the source (a removed array, a recreated root), so the destination mirrors the source's folders
/// too. Stops at the first directory that is not empty or still exists at the source.
fn prune_empty_dirs(src_root: &Path, dest: &Dest, rel: &Path) {
    let mut dir = rel.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        let Ok((parent, name)) = crate::dest::split(d) else { return };
        if src_root.join(d).exists() {
            return;
        }
        if !dest.folder(parent, false).is_ok_and(|f| dest.remove_folder(&f, name).is_ok()) {
            return;
        }
        dir = d.parent();
    }
}

/// What a look for leftover partial files found at the destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub removed: usize,
    /// Partials that could not be removed.
    pub kept: usize,
    /// Whether any other file is there (our own state at the root aside), or may be: a folder
    /// that could not be listed is not evidence of an empty one (docs/design.md, "Proof without
    /// walking the destination").
    pub others: bool,
    /// Whether the walk listed every folder (none failed).
    pub complete: bool,
}

/// Removes partial files left by an earlier run that was killed (invariant 1), never one inside
/// a folder that another run holds as its destination (invariant 10: its copies in flight).
pub fn remove_partials(dest: &Dest) -> Leftovers {
    let mut found = Leftovers::default();
    let mut claimed_dirs = Vec::new();
    let mut partials = Vec::new();
    let walked = dest.walk(&mut |rel, kind| {
        if kind == Kind::Folder {
            return ControlFlow::Continue(());
        }
        let name = rel.file_name().unwrap_or_default();
        if rel.components().count() > 1 && name == crate::dest::claim::LOCK {
            claimed_dirs.push(rel.parent().unwrap_or(Path::new("")).to_path_buf());
        }
        if kind == Kind::File && name.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
            partials.push(rel.to_path_buf());
        } else if !crate::vocab::is_ignored(rel) {
            // Our own state at the root (this run's claim among it) is no earlier copy.
            found.others = true;
        }
        ControlFlow::Continue(())
    });
    found.complete = walked.failed.is_none();
    // A folder that could not be listed is not evidence of an empty one.
    found.others |= !found.complete;
    let held: Vec<&PathBuf> = claimed_dirs.iter().filter(|d| dest.claimed(d).is_some()).collect();
    for rel in partials {
        if held.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        match dest.remove_file(&rel) {
            Ok(()) => found.removed += 1,
            Err(_) => found.kept += 1,
        }
    }
    found
}

// Not under Wine: these tests assume Linux's paths and errors (symlinks, /proc, errno values);
// the Windows copy is run by the live tests under Wine (tests/windows).
#[cfg(all(test, not(windows)))]
mod tests;
