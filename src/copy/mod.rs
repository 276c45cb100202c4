//! The copy workers and the copy of one file.
//!
//! A worker takes a [`Job`] (a relative path), looks at the source as it is *now*, and makes the
//! destination match: copy a new version to a partial name and rename it into place (invariant 1),
//! skip a version it already has, or remove a file the source no longer has. Workers run at the
//! lowest CPU and IO priority and never touch Python (the threads are in `pool.rs`).
//!
//! This folder owns the workers (`pool.rs`), the copy of one file here, and a copy of another kind
//! in its way (`in_the_way.rs`). It may import `end` (hashing), `dest`, `source` (the root's
//! identity), `gentle` (the pace of each step) and the base; never `run`.

pub(crate) mod in_the_way;
pub mod pool;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::dest::{Dest, Folder, Staging};
use crate::gentle::pace::Pace;
use crate::gentle::rate::RateLimit;
use crate::sys::{self, CopyMethod};
use crate::vocab::{identity, time_unit_ns, Identity, Job, Outcome, Partial, Prev, PARTIAL_SUFFIX};

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
}

impl CopyOptions {
    fn pace<'a>(&'a self, stop: &'a AtomicBool) -> Pace<'a> {
        Pace::new(stop).limit(self.max_rate.as_deref()).limit(self.max_total_rate.as_deref()).gate(self.gate.as_deref())
    }
}

fn open_source(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    // On Windows std opens with FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE (the
    // OpenOptionsExt::share_mode default), so a writer can still rename over or delete a file while
    // we copy it, as tensorstore does. A sharing violation from a writer that does not share (or an
    // antivirus scanner) fails this open and is retried with backoff like any per-file failure.
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never follow a symlink out of the source (invariant 6): a link at the final component
        // fails with ELOOP and is reported instead of copied.
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        // A reparse point (a symlink, a junction) is opened itself, not followed: it is no
        // regular file, so it is skipped and reported (invariant 6).
        opts.custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT);
    }
    opts.open(path)
}

static PARTIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A partial name for a copy of `name`, in the same folder.
fn partial_name(name: &Path) -> PathBuf {
    // The pid is asked for once: std asks the kernel on every call.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = PARTIAL_COUNTER.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(".{}.{pid}-{n}{PARTIAL_SUFFIX}", name.to_string_lossy()))
}

/// Where a copy is written until it is complete.
enum Out<'a> {
    /// An unnamed file (O_TMPFILE): it gets its name only when complete.
    Unnamed(File),
    /// A partial file, renamed into place when complete: next to its final name, or in a staging
    /// folder lent to this copy ([`Partial`]).
    Named(File, PathBuf, Option<Staging<'a>>),
}

impl<'a> Out<'a> {
    /// A new file for a copy into `folder` with permission bits `mode`: unnamed where the
    /// destination filesystem allows it (and no read-back by name is needed), else a partial file
    /// where `partial` says (beside `name` if staging is not possible).
    fn create(
        dest: &'a Dest,
        folder: &Folder,
        name: &Path,
        shown: &Path,
        mode: u32,
        partial: Partial,
        opts: &CopyOptions,
    ) -> crate::Result<Out<'a>> {
        if !opts.checksum {
            let made = sys::create_unnamed(folder.path(), mode, &opts.learned)
                .map_err(|e| crate::Error::io("create in", shown.parent().unwrap_or(shown), e))?;
            if let Some(file) = made {
                return Ok(Out::Unnamed(file));
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
        let file = open.open(&tmp).map_err(|e| crate::Error::io("create", shown, e))?;
        dest.partial_made();
        Ok(Out::Named(file, tmp, staging))
    }

    fn file(&self) -> &File {
        match self {
            Out::Unnamed(f) | Out::Named(f, ..) => f,
        }
    }

    /// Gives the complete copy its final name (`rel`'s last part) in `folder`, replacing an older copy
    /// atomically. An unnamed copy of a name believed new is linked straight to it; linking never
    /// replaces, so if the name exists after all (or is known to), the copy is linked to a partial
    /// name and renamed over it like any partial.
    fn publish(
        &self,
        dest: &Dest,
        folder: &Folder,
        rel: &Path,
        src_dir: &Path,
        shown: &Path,
        may_exist: bool,
    ) -> crate::Result<()> {
        let (_, name) = crate::dest::split(rel).map_err(|e| crate::Error::io("copy to", shown, e))?;
        let dst = folder.join(name);
        if !sys::SYNCS_FILESYSTEM {
            // No flush of the whole destination before the marker here: each copy is flushed on
            // its own (writing) handle before it gets its name.
            self.file().sync_all().map_err(|e| crate::Error::io("flush", shown, e))?;
        }
        let tmp = match self {
            Out::Unnamed(file) => {
                if !may_exist {
                    match sys::link_unnamed(file, &dst) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(crate::Error::io("link into", shown, e)),
                    }
                }
                let tmp = folder.join(&partial_name(name));
                sys::link_unnamed(file, &tmp).map_err(|e| crate::Error::io("link into", shown, e))?;
                dest.partial_made();
                tmp
            }
            Out::Named(_, tmp, _) => tmp.clone(),
        };
        // A partial this call made (an unnamed copy linked to a name) is thrown away here if the
        // copy fails; a partial file the copy was written to is thrown away once, by `discard`:
        // removed twice, it was counted gone twice, and the count the end trusts to skip the
        // look for leftovers (docs/design.md, "The end of a run") went below what is there.
        let abandon = |tmp: &Path| {
            if let Out::Unnamed(_) = self {
                dest.remove_partial(tmp);
            }
        };
        if dest.folds_case_of(name) {
            // Two names that fold to one, copied at once, must not both look at an empty folder
            // and then replace each other: a link never replaces, so one of them finds the other.
            if !may_exist {
                match fs::hard_link(&tmp, &dst) {
                    Ok(()) => {
                        dest.remove_partial(&tmp);
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(_) => {} // no hard links there: renamed as any partial
                }
            }
            match dest.refuse_case_collision(folder, rel, src_dir) {
                Err(e) => {
                    abandon(&tmp);
                    return Err(crate::Error::io("rename into", shown, e));
                }
                // This file's older copy under another case goes first: a rename over it would
                // keep the old case where the destination keeps an entry's stored name.
                Ok(Some(older)) => match fs::remove_file(folder.join(Path::new(&older))) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        abandon(&tmp);
                        return Err(crate::Error::io("remove the older copy of", shown, e));
                    }
                    _ => {}
                },
                Ok(None) => {}
            }
        }
        match fs::rename(&tmp, &dst) {
            Ok(()) => {
                dest.partial_gone();
                Ok(())
            }
            Err(e) => {
                abandon(&tmp);
                Err(crate::Error::io("rename into", shown, e))
            }
        }
    }

    /// Throws an unfinished copy away (an unnamed file vanishes with its descriptor).
    fn discard(self, dest: &Dest) {
        if let Out::Named(file, tmp, staging) = self {
            drop(file);
            dest.remove_partial(&tmp);
            drop(staging);
        }
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
        Err(e) if destination_unavailable(&e, dest.root()) => (Outcome::Unavailable(e.to_string()), false),
        Err(e) => (Outcome::Failed(e.to_string()), false),
    }
}

/// Whether an error means the destination as a whole cannot take files (full, read-only, a network
/// share gone) rather than a problem with this one file. The first pauses the whole target until
/// the destination is back; the second is retried for this file alone, then given up.
fn destination_unavailable(e: &crate::Error, dst_root: &Path) -> bool {
    let crate::Error::Io { op, source, .. } = e else {
        return false;
    };
    if matches!(*op, "open source" | "stat source" | "not copying symlink") {
        return false;
    }
    #[cfg(unix)]
    let device = matches!(
        source.raw_os_error(),
        Some(
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EROFS
                | libc::ENOTCONN
                | libc::ESTALE
                | libc::ETIMEDOUT
                | libc::ECONNABORTED
                | libc::EHOSTDOWN
                | libc::ENODEV
                | libc::ENXIO
        )
    );
    #[cfg(not(unix))]
    let device = source.kind() == io::ErrorKind::StorageFull;
    // Otherwise (EIO, EACCES, ...) it is the destination's fault only if its root is unreachable.
    device || fs::metadata(dst_root).is_err()
}

fn sync_inner(
    src_root: &Path,
    dest: &Dest,
    job: &Job,
    opts: &CopyOptions,
    stop: &AtomicBool,
) -> crate::Result<Outcome> {
    let prev = job.prev;
    use crate::Error;
    let src = &src_root.join(&job.rel);
    let dst = &dest.shown(&job.rel);
    let (rel_dir, name) = crate::dest::split(&job.rel).map_err(|e| Error::io("copy", src, e))?;
    // The source root is canonical (no symlinks in it), so openat2's refusal of every symlink
    // covers invariant 6 in one call; elsewhere O_NOFOLLOW covers the last component and the
    // kernel's name for the descriptor tells whether a parent folder was a link.
    let (opened, beneath_checked) = match sys::open_no_symlinks(src) {
        Some(r) => (r, true),
        None => (open_source(src), false),
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if crate::vocab::is_gone(&e) => {
            // Positive evidence only (invariant 8): the name is gone from the folder being copied,
            // not because that folder itself is gone or was swapped for another.
            if let Some(Err(why)) = opts.root.as_ref().map(|r| r.check(src_root)) {
                return Ok(Outcome::RootGone(why));
            }
            return crate::dest::mirror::remove_destination(dest, &job.rel);
        }
        Err(e) if sys::is_symlink_refused(&e) => {
            // A symlink: not followed, not copied; the report lists it.
            return Ok(Outcome::Skipped);
        }
        // A Windows writer holding the file without sharing it: busy, like a file open for
        // writing, and looked at again (no close event will say when it lets go).
        Err(e) if sys::is_sharing_violation(&e) => return Ok(Outcome::Busy),
        Err(e) => return Err(Error::io("open source", src, e)),
    };
    if !beneath_checked && !opened_beneath(&file, src_root) {
        // Reached through a symlinked folder (notify watches through links): outside the source.
        return Ok(Outcome::Skipped);
    }
    let meta = file.metadata().map_err(|e| Error::io("stat source", src, e))?;
    if !meta.is_file() {
        return Ok(Outcome::Skipped);
    }
    let ident = sys::file_identity(&file, &meta);
    if prev == Prev::Copied(ident) {
        return Ok(Outcome::Unchanged(ident));
    }
    // Whether the destination may hold this name already (an earlier copy to replace).
    let mut may_exist = prev != Prev::Unknown;
    let look_first = match prev {
        Prev::Unknown => !opts.fresh_destination,
        Prev::Settled => true,
        Prev::Copied(_) | Prev::Superseded => false,
    };
    // The destination folder, once opened (it is opened once per file: to look, compare, write).
    let mut folder = None;
    if look_first {
        // First sight of this file in this run: a previous run may have copied this very version.
        if let Ok(f) = dest.folder(rel_dir, false) {
            // A copy found only under another case (the name's case changed at the source) is an
            // older copy to replace, whatever its size and mtime: the copy takes the name as it is.
            let other_case = dest
                .refuse_case_collision(&f, &job.rel, src.parent().unwrap_or(src))
                .map_err(|e| Error::io("look at", dst, e))?
                .is_some();
            if let Ok((is_file, copy)) = fs::symlink_metadata(f.join(name)).map(|m| (m.is_file(), identity(&m))) {
                if is_file && !other_case && copy.size == ident.size && copy.mtime_ns == ident.mtime_ns {
                    // Size and mtime prove it only if the copy was made after the source last
                    // changed: a rewrite within one tick keeps both. Otherwise the contents decide.
                    if copied_after(&ident, &copy)
                        || crate::end::manifest::same_contents(src, &f.join(name)).unwrap_or(false)
                    {
                        return Ok(Outcome::Unchanged(ident));
                    }
                }
                may_exist = true;
            }
            folder = Some(f);
        }
    }
    if dest.was_freed(&job.rel) {
        // The copy there is the only one of a file freed from this acquisition after its copy was
        // proven; a new version at the source is a new take's, and never replaces it.
        return Ok(Outcome::Failed(format!(
            "{}: its copy is the only one of the file freed at the source by an earlier run; the file \
             there now is a new take's and is not copied over it (copy the new take elsewhere)",
            dst.display()
        )));
    }
    if job.verify_closed {
        match sys::open_for_writing(&file, src) {
            // Invariant 4: a file a writer still has open is not copied; its close brings it back.
            Some(true) => return Ok(Outcome::Busy),
            Some(false) => {}
            // The kernel cannot say (not the owner, no CAP_LEASE, no leases on this system or
            // filesystem). Silence is not proof of a close: only a long enough quiet is.
            None => {
                opts.learned.no_busy_check.store(true, Ordering::Relaxed);
                let unwritten = last_written(&meta).elapsed().unwrap_or(Duration::ZERO);
                if unwritten < opts.quiet {
                    return Ok(Outcome::Unsettled(opts.quiet - unwritten));
                }
            }
        }
    }
    if job.verify_closed || prev == Prev::Superseded {
        // The check after the copy compares identities, which tells a write during the copy only
        // if that write's timestamps differ from the last change's: the last change must be at
        // least a tick of the source's clock ago, or the copy waits until it is.
        let since = last_written(&meta).elapsed().unwrap_or(Duration::ZERO);
        let tick = tick_of(&ident);
        if since < tick {
            return Ok(Outcome::Unsettled(tick - since));
        }
    }
    // The source's permission bits, never wider (no setuid/setgid/sticky).
    #[cfg(unix)]
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    #[cfg(not(unix))]
    let mode = 0o644;
    let folder = match folder {
        // Looked at above for a name in another case already.
        Some(f) => f,
        None => {
            let f = crate::copy::in_the_way::make_folder(src_root, dest, rel_dir, opts.root.as_deref())?;
            dest.refuse_case_collision(&f, &job.rel, src.parent().unwrap_or(src))
                .map_err(|e| Error::io("copy to", dst, e))?;
            f
        }
    };
    let out = Out::create(dest, &folder, name, dst, mode, job.partial, opts)?;
    let result = (|| {
        let file_out = out.file();
        let (bytes, hash) = if opts.checksum {
            // Through user space: the bytes must pass through the hasher on their way.
            let (bytes, hash) = crate::end::manifest::copy_hashed(&file, file_out, &opts.pace(stop))
                .map_err(|e| Error::io("copy to", dst, e))?;
            (bytes, Some(hash))
        } else {
            let bytes = sys::copy_contents(&file, file_out, ident.size, opts.method, &opts.learned, &opts.pace(stop))
                .map_err(|e| Error::io("copy to", dst, e))?;
            (bytes, None)
        };
        // The file was created with the source's bits; our umask may have narrowed them, and only
        // then is a chmod needed (unknown umask: always).
        #[cfg(unix)]
        if sys::umask().is_none_or(|u| mode & u != 0) {
            use std::os::unix::fs::PermissionsExt;
            file_out.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", dst, e))?;
        }
        if let Ok(mtime) = meta.modified() {
            file_out.set_times(fs::FileTimes::new().set_modified(mtime)).map_err(|e| Error::io("set mtime", dst, e))?;
        }
        sys::drop_cache(&file);
        // Re-check the source after the copy (invariant 2): if the name now points at another
        // version, or this one changed in place, what we hold is stale and must not be published.
        let after = sys::path_identity(src).ok();
        let fd_after = file.metadata().map(|m| sys::file_identity(&file, &m)).ok();
        if after != Some(ident) || fd_after != Some(ident) || bytes != ident.size {
            return Ok(None);
        }
        if let (Some(hash), Out::Named(_, tmp, _)) = (hash, &out) {
            // Read the copy back before it gets its final name: what we wrote is what we read.
            let back = crate::end::manifest::hash_file(tmp).map_err(|e| Error::io("read back", tmp, e))?;
            if back != hash {
                let msg = "the copy read back differs from what was written";
                return Err(Error::io("verify", tmp, io::Error::other(msg)));
            }
        }
        dest.changing().map_err(|e| Error::io("publish", dst, e))?;
        out.publish(dest, &folder, &job.rel, src.parent().unwrap_or(src), dst, may_exist)?;
        Ok(Some((bytes, hash)))
    })();
    match result {
        Ok(Some((bytes, hash))) => Ok(Outcome::Copied { ident, bytes, hash }),
        Ok(None) => {
            out.discard(dest);
            Ok(Outcome::Changed)
        }
        Err(e) => {
            out.discard(dest);
            // A folder of the name at the destination, where the source now has this file: removed,
            // then copied again at once.
            match crate::copy::in_the_way::remove_folder_in_the_way(src_root, dest, &job.rel, opts.root.as_deref())? {
                true => Ok(Outcome::Changed),
                false => Err(e),
            }
        }
    }
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

/// Margin for clocks: the copy's ctime is the destination's clock, the source's the source's.
const CLOCK_MARGIN_NS: i64 = 2_000_000_000;

/// Whether the destination file `copy` was made after the source `src` last changed, by more than
/// a tick and the clocks' margin: then equal size and mtime prove the copy is of the current version.
fn copied_after(src: &Identity, copy: &Identity) -> bool {
    let tick = tick_of(src).as_nanos() as i64;
    copy.ctime_ns != 0 && src.ctime_ns != 0 && copy.ctime_ns > src.mtime_ns.max(src.ctime_ns) + tick + CLOCK_MARGIN_NS
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
        if !dest.folder(parent, false).is_ok_and(|f| fs::remove_dir(f.join(name)).is_ok()) {
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
pub fn remove_partials(dst_root: &Path) -> Leftovers {
    let mut found = Leftovers { complete: true, ..Leftovers::default() };
    let mut claimed_dirs = Vec::new();
    let mut partials = Vec::new();
    for e in walkdir::WalkDir::new(dst_root) {
        let e = match e {
            Ok(e) => e,
            Err(_) => {
                found.complete = false;
                found.others = true;
                continue;
            }
        };
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(dst_root).unwrap_or(e.path());
        if e.depth() > 1 && e.file_name() == crate::dest::claim::LOCK {
            claimed_dirs.push(rel.parent().unwrap_or(Path::new("")).to_path_buf());
        }
        if e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX) {
            partials.push(rel.to_path_buf());
        } else if !crate::vocab::is_ignored(rel) {
            // Our own state at the root (this run's claim among it) is no earlier copy.
            found.others = true;
        }
    }
    let held: Vec<&PathBuf> =
        claimed_dirs.iter().filter(|d| crate::dest::claim::held_in(&dst_root.join(d)).is_some()).collect();
    for rel in partials {
        if held.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        match fs::remove_file(dst_root.join(&rel)) {
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
