//! Operating-system calls that the standard library does not offer, each behind `cfg`, each with a
//! portable fallback so the crate builds (and copies correctly, if less gently) on every platform.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::vocab::{identity, Identity};

/// How file contents are moved. `Auto` walks the chain copy_file_range → sendfile → read/write,
/// dropping to the next method when the kernel or filesystem says the current one is unsupported.
/// The other variants force one step of the chain, so tests can prove every fallback copies correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CopyMethod {
    #[default]
    Auto,
    SendFile,
    ReadWrite,
}

/// What the kernel told one target's workers about its filesystems, so every later file goes
/// straight to what works instead of failing the same way first (two syscalls per file saved).
#[derive(Debug, Default)]
pub struct Learned {
    /// copy_file_range said it cannot copy between these two filesystems (EXDEV between different
    /// filesystems since Linux 5.19) or at all.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    no_copy_file_range: AtomicBool,
    /// The destination filesystem has no unnamed files (O_TMPFILE).
    no_unnamed: AtomicBool,
    /// The source cannot be asked whether a writer has a file open (no lease here).
    pub no_busy_check: AtomicBool,
    /// The destination keeps no mark on a file ([`set_mark`]).
    pub no_marks: AtomicBool,
}

/// Copies `size` bytes (the size `fstat` gave) from the current offset of `src` to that of `dst`;
/// fewer if the file ends sooner. Stopping at the known size instead of calling until EOF saves a
/// syscall per file; a file that grew or shrank meanwhile is caught by the caller, which compares
/// the source's identity (size, mtime) after the copy and discards a copy that does not match.
/// `pace` is obeyed between steps: a stop request never waits for a whole large file, and rate
/// limits are held while the file is copied, not only between files.
pub fn copy_contents(
    src: &File,
    dst: &File,
    size: u64,
    method: CopyMethod,
    learned: &Learned,
    pace: &impl Pacing,
) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::copy_contents(src, dst, size, method, learned, pace)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (method, learned);
        read_write(src, dst, size, pace)
    }
}

/// The identity of the open `file` whose metadata is `meta` (docs/design.md, "A version is
/// decided on evidence"). On Windows std's metadata has neither a file index nor a change time:
/// there they come from the handle, so a rename-over or a rewrite within one mtime tick still
/// tells versions apart. Where the handle cannot say, the weaker identity (index 0) is returned;
/// it never equals a full one, so a check that cannot tell copies again or keeps the file.
pub fn file_identity(file: &File, meta: &std::fs::Metadata) -> Identity {
    #[cfg(windows)]
    {
        windows::identity(file).unwrap_or_else(|_| identity(meta))
    }
    #[cfg(not(windows))]
    {
        let _ = file;
        identity(meta)
    }
}

/// The identity of what `path` names, not following a final symlink (or reparse point), in the
/// same terms as [`file_identity`]: the two are compared with each other.
pub fn path_identity(path: &std::path::Path) -> io::Result<Identity> {
    #[cfg(windows)]
    {
        windows::path_identity(path)
    }
    #[cfg(not(windows))]
    {
        std::fs::symlink_metadata(path).map(|m| identity(&m))
    }
}

/// [`path_identity`] for a caller that already holds the path's `symlink_metadata`: no second
/// look where the metadata says it all (everywhere but Windows).
pub fn path_identity_of(path: &std::path::Path, meta: &std::fs::Metadata) -> io::Result<Identity> {
    #[cfg(windows)]
    {
        let _ = meta;
        windows::path_identity(path)
    }
    #[cfg(not(windows))]
    {
        let _ = path;
        Ok(identity(meta))
    }
}

/// Whether an open failed because the final component is a symlink (ELOOP from O_NOFOLLOW or
/// RESOLVE_NO_SYMLINKS). Windows opens a reparse point itself instead: the caller sees a
/// non-file and skips it.
pub fn is_symlink_refused(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Whether an open failed because another process holds the file without sharing it (Windows'
/// ERROR_SHARING_VIOLATION); never elsewhere.
pub fn is_sharing_violation(e: &io::Error) -> bool {
    #[cfg(windows)]
    {
        e.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_SHARING_VIOLATION as i32)
    }
    #[cfg(not(windows))]
    {
        let _ = e;
        false
    }
}

/// Opens `path` (absolute, of a canonical root) for reading, refusing a symlink in *any* of its
/// components with ELOOP (openat2 RESOLVE_NO_SYMLINKS, Linux 5.6): one syscall where O_NOFOLLOW
/// plus a readlink of /proc/self/fd took two. `None` where openat2 is missing (older kernels,
/// other systems, some sandboxes): the caller then uses the portable way.
pub fn open_no_symlinks(path: &std::path::Path) -> Option<io::Result<File>> {
    #[cfg(target_os = "linux")]
    {
        linux::open_no_symlinks(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// The folder `rel` beneath the folder `dir`, reached through no link (openat2's
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), as a descriptor that only names it. `None` where
/// the kernel cannot (the caller looks at each component itself).
#[cfg(target_os = "linux")]
pub fn folder_beneath(dir: &File, rel: &std::path::Path) -> Option<io::Result<File>> {
    linux::folder_beneath(dir, rel)
}

/// Makes the folder `name` inside the folder `dir`; one already there is no error. True when this
/// call made it.
#[cfg(target_os = "linux")]
pub fn mkdir_in(dir: &File, name: &std::path::Path) -> io::Result<bool> {
    linux::mkdir_in(dir, name)
}

/// Opens `path` for reading without following a link at its last component (invariant 6): a
/// link there fails (ELOOP) instead of being followed. On Windows std opens with
/// FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, so a writer can still rename over or
/// delete a file while we read it, as tensorstore does; a reparse point (a symlink, a junction)
/// is opened itself, not followed.
pub fn open_no_follow(path: &std::path::Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        opts.custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT);
    }
    opts.open(path)
}

/// The folder at `path`, opened only to act inside it (`O_PATH | O_DIRECTORY`).
#[cfg(target_os = "linux")]
pub fn open_folder(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_PATH).open(path)
}

/// Ends the process at once with SIGKILL, as a power cut would: no destructor, no flush, no
/// exit handler (an abort where there is no such signal).
pub fn die_now() -> ! {
    #[cfg(unix)]
    // SAFETY: signalling our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// This computer's name, where the OS says it.
pub fn hostname() -> Option<String> {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: a writable buffer of the length passed.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return Some(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        None
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").ok()
    }
}

/// A new unnamed file in the folder `dir` (O_TMPFILE), created with permission bits `mode`. Given a
/// name only once complete ([`link_unnamed`]), it needs no rename, leaves no partial to clean up
/// if we are killed, and costs the destination folder one entry change instead of three (create,
/// rename's removal and insertion). `Ok(None)` where the filesystem or OS has none (the caller
/// then writes a partial file and renames it), remembered in `learned`.
pub fn create_unnamed(dir: &std::path::Path, mode: u32, learned: &Learned) -> io::Result<Option<File>> {
    if learned.no_unnamed.load(Ordering::Relaxed) {
        return Ok(None);
    }
    #[cfg(target_os = "linux")]
    {
        let r = linux::create_unnamed(dir, mode);
        if matches!(r, Ok(None)) {
            learned.no_unnamed.store(true, Ordering::Relaxed);
        }
        r
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (dir, mode);
        learned.no_unnamed.store(true, Ordering::Relaxed);
        Ok(None)
    }
}

/// Gives the unnamed `file` the name `path`. Never replaces: EEXIST if `path` exists.
pub fn link_unnamed(file: &File, path: &std::path::Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::link_unnamed(file, path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, path);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Records `mark` on the file being written (an extended attribute, `user.softcopy.source`): what
/// a later run reads back with [`mark`] to know which source version the copy's bytes are
/// (docs/design.md, "A version is decided on evidence"). Unsupported where the system or the
/// filesystem keeps none (then `learned` remembers it, and no later copy tries).
pub fn set_mark(file: &File, mark: &[u8], learned: &Learned) -> io::Result<()> {
    if learned.no_marks.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::Unsupported.into());
    }
    #[cfg(target_os = "linux")]
    let r = linux::set_mark(file, mark);
    #[cfg(not(target_os = "linux"))]
    let r: io::Result<()> = {
        let _ = (file, mark);
        Err(io::ErrorKind::Unsupported.into())
    };
    if r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::Unsupported) {
        learned.no_marks.store(true, Ordering::Relaxed);
    }
    r
}

/// Whether the open `file`'s ctime and inode number are the kernel's own, what a mark names: on
/// a local filesystem known to stamp the ctime at each change and to keep a file's inode number
/// for its life. Not on a FUSE mount (its daemon reports them; rclone's ctime is the mtime), a
/// network one (the server's filesystem may keep none), erofs or squashfs (an mtime reported as
/// the ctime, numbers by place in the image), nor where the filesystem cannot be asked.
/// Elsewhere than Linux there are no marks.
pub fn ctime_is_the_kernels(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        // ext2/3/4, xfs, btrfs, tmpfs, f2fs, zfs, bcachefs (linux/magic.h; zfs's own).
        const STAMP_CTIME: [u32; 7] =
            [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010, 0x2FC1_2FC1, 0xCA45_1A4E];
        linux::fs_type(file).is_some_and(|t| STAMP_CTIME.contains(&(t as u32)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Removes the mark [`set_mark`] left on the file at `path` (never through a link), if any.
pub fn unmark(path: &std::path::Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::unmark(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(())
    }
}

/// The mark [`set_mark`] left on the file at `path`, never through a link: `None` where there is
/// none.
pub fn mark(path: &std::path::Path) -> io::Result<Option<Vec<u8>>> {
    #[cfg(target_os = "linux")]
    {
        linux::mark(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The process's umask, read once (Linux: /proc/self/status; umask(2) itself cannot be read without
/// changing it, which would race with other threads creating files). `None` when unknown.
pub fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// What a copy loop obeys between its steps: a stop request, rate limits, the back-off's turns
/// (docs/design.md, "Gentle on any scheduler"). The policy is the copier's (`gentle::Pace`);
/// `sys` only moves the bytes and asks.
pub trait Pacing {
    /// What a step holds while it moves its bytes (a turn at the back-off's gate).
    type Turn;
    /// The most bytes to move in one step, at most `max`.
    fn step(&self, max: usize) -> usize;
    /// An error once a stop was requested.
    fn check(&self) -> io::Result<()>;
    /// Waits for a turn to take one step, unless `cached` says the step reads nothing from the
    /// disk (asked only where it matters).
    fn turn_unless(&self, cached: impl FnOnce() -> bool) -> io::Result<Self::Turn>;
    /// After a step that moved `n` bytes in `turn`.
    fn moved(&self, n: u64, turn: Self::Turn) -> io::Result<()>;
}

/// The stop request alone: no limit, no turns.
impl Pacing for AtomicBool {
    type Turn = ();
    fn step(&self, max: usize) -> usize {
        max
    }
    fn check(&self) -> io::Result<()> {
        if self.load(Ordering::Relaxed) {
            Err(io::Error::other("stopped"))
        } else {
            Ok(())
        }
    }
    fn turn_unless(&self, _cached: impl FnOnce() -> bool) -> io::Result<()> {
        Ok(())
    }
    fn moved(&self, _n: u64, _turn: ()) -> io::Result<()> {
        Ok(())
    }
}

/// The last step of every chain: a plain user-space copy of at most `limit` bytes, with a buffer
/// large enough to keep per-syscall overhead negligible for MiB-sized chunks.
fn read_write(src: &File, dst: &File, limit: u64, pace: &impl Pacing) -> io::Result<u64> {
    read_write_seeing(src, dst, limit, pace, &mut |_| {})
}

/// The user-space copy of at most `limit` bytes (fewer at EOF), showing every block that passes
/// to `see` (the checksum copy hashes them).
pub fn read_write_seeing(
    src: &File,
    mut dst: &File,
    limit: u64,
    pace: &impl Pacing,
    see: &mut dyn FnMut(&[u8]),
) -> io::Result<u64> {
    read_paced(src, limit, pace, &mut |block| {
        see(block);
        dst.write_all(block)
    })
}

/// Reads at most `limit` bytes of `src` (fewer at EOF) in paced steps, handing each block to
/// `sink` (a file written, or a destination's storage that sends it away).
pub fn read_paced(
    mut src: &File,
    limit: u64,
    pace: &impl Pacing,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; pace.step(1 << 20)];
    let mut total = 0u64;
    loop {
        pace.check()?;
        let want = usize::try_from(limit - total).map_or(buf.len(), |left| left.min(buf.len()));
        if want == 0 {
            return Ok(total);
        }
        let turn = pace.turn_unless(|| false)?;
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sink(&buf[..n])?;
        total += n as u64;
        pace.moved(n as u64, turn)?;
    }
}

/// The threads of one pool whose CPU priority was lowered, each registered while it runs (see
/// [`Lowered::register`]), so that a stop can give it back while every one is still alive.
#[derive(Default)]
pub struct Lowered(std::sync::Mutex<Vec<u64>>);

/// A registration in [`Lowered`]: removed when the thread's work ends, also by a panic.
pub struct Registered<'a>(&'a Lowered, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        crate::vocab::lock(&self.0 .0).retain(|&t| t != self.1);
    }
}

impl Lowered {
    /// Registers the calling thread until the guard is dropped.
    pub fn register(&self) -> Registered<'_> {
        let me = current_thread_id();
        crate::vocab::lock(&self.0).push(me);
        Registered(self, me)
    }

    /// Gives the registered threads back a normal CPU priority, where the OS lets this process
    /// raise one (Linux: root, CAP_SYS_NICE or RLIMIT_NICE); elsewhere nothing. A thread at
    /// nice 19 on a busy machine waits seconds for each time slice, and a stop must not wait on
    /// it (docs/design.md, "Stopping"). Under the lock: no registered thread has ended, so no
    /// number names another thread.
    pub fn restore(&self) {
        let threads = crate::vocab::lock(&self.0);
        #[cfg(target_os = "linux")]
        threads.iter().for_each(|&t| linux::restore_thread_priority(t));
        #[cfg(not(target_os = "linux"))]
        drop(threads);
    }
}

/// The calling thread's number as the OS's priority calls take it (Linux: its tid).
fn current_thread_id() -> u64 {
    #[cfg(target_os = "linux")]
    {
        linux::gettid()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Lowers the calling thread's CPU and IO priority as far as the OS allows. Returns a description
/// of what could not be applied (logged once by the caller) rather than failing: a copy at normal
/// priority is better than no copy.
pub fn lower_thread_priority() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        linux::lower_thread_priority()
    }
    #[cfg(windows)]
    {
        windows::lower_thread_priority()
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        Ok(())
    }
}

/// `fcntl(F_SETLEASE, F_RDLCK)` on `fd`, asking for no signal at its break (its answer: 0, or -1
/// and errno). The kernel makes the taker the owner of the lease's signal, SIGIO unless set, whose
/// default ends the process: a writer opening the file while the lease is held, even for an instant,
/// would kill the whole run (the service with it). SIGURG, ignored unless handled, covers the
/// instant before the owner is cleared; after it none is sent. A break is looked for instead
/// ([`ReadLease::broken`]).
#[cfg(target_os = "linux")]
fn read_lease(fd: std::os::fd::RawFd) -> libc::c_int {
    // F_SETSIG (asm-generic/fcntl.h), which the libc crate does not name.
    const F_SETSIG: libc::c_int = 10;
    // SAFETY: fcntl on a valid fd with integer arguments.
    unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) };
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if rc == 0 {
        // SAFETY: as above; owner 0: no process is signalled.
        unsafe { libc::fcntl(fd, libc::F_SETOWN, 0) };
    }
    rc
}

/// Asks the kernel whether any process has `file` open for writing. A read lease
/// (`fcntl(F_SETLEASE, F_RDLCK)`) is refused with EAGAIN exactly then (fcntl(2), "Leases"), which
/// tells an in-place writer's unfinished file (acquire-zarr keeps a shard open for minutes) from a
/// finished one without any event history. The lease is released at once: held, it would make a
/// writer's `open()` wait for us. A break meanwhile signals nothing (`read_lease`).
/// `None` when the kernel cannot say (not the file's owner and no CAP_LEASE, no lease support).
/// On Windows `path` (what `file` was opened from) is opened once more, sharing reads only: that
/// fails with a sharing violation exactly while some process has the file open for writing (or
/// holds it unshared), and the handle is closed at once, since while it is open a writer's own
/// open for writing would fail.
pub fn open_for_writing(file: &File, path: &std::path::Path) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = path;
        let fd = file.as_raw_fd();
        if read_lease(fd) == 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
            return Some(false);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(true),
            _ => None,
        }
    }
    #[cfg(windows)]
    {
        let _ = file;
        windows::open_for_writing(path)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = (file, path);
        None
    }
}

/// Whether a process has a file open for writing, as a freeing asks it just before the unlink.
pub enum Writers<'a> {
    /// None has: a read lease is held on it until this is dropped, so none can open it for
    /// writing meanwhile (its open waits for the lease, which is released at once after the unlink).
    None(ReadLease<'a>),
    /// Some process has it open for writing.
    Open,
    /// The kernel cannot say here (not the file's owner and no CAP_LEASE, a network filesystem).
    Unknown,
}

/// A read lease on an open file, released when dropped (see [`Writers::None`]).
pub struct ReadLease<'a> {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    file: &'a File,
}

impl ReadLease<'_> {
    /// Whether a process is opening the file for writing now: its open waits for the lease to
    /// go, and then writes into whatever the file is (unlinked, its bytes would be lost).
    pub fn broken(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl on a valid fd with integer arguments. While a break is pending it
            // answers the type the lease is being broken to (F_UNLCK), not F_RDLCK.
            unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) != libc::F_RDLCK }
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

impl Drop for ReadLease<'_> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl on a valid fd with integer arguments.
            unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        }
    }
}

/// Takes a read lease on `file` (opened read-only from `path`) if no process has it open for
/// writing, as [`open_for_writing`] asks, but keeps it: a file is freed only while the lease
/// proves that no writer has it open (docs/design.md, invariant 7). On Windows the answer of
/// [`open_for_writing`] is all there is (a handle held would block our own deletion).
pub fn lease_unwritten<'a>(file: &'a File, path: &std::path::Path) -> Writers<'a> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = path;
        if read_lease(file.as_raw_fd()) == 0 {
            return Writers::None(ReadLease { file });
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Writers::Open,
            _ => Writers::Unknown,
        }
    }
    #[cfg(not(target_os = "linux"))]
    match open_for_writing(file, path) {
        Some(false) => Writers::None(ReadLease { file }),
        Some(true) => Writers::Open,
        None => Writers::Unknown,
    }
}

/// Whether flushing the filesystem holding `path` in the background while copies land helps the
/// flush before the marker (`flush.rs`): where the kernel keeps copies dirty in its cache (local
/// disks, NFS). A FUSE mount (sshfs) sends each write as it is made, so a `syncfs` there has
/// nothing to pass on; yet it slowed small copies at 2 ms by a quarter (BENCHMARKS.md).
/// Elsewhere than Linux there is no such flush.
pub fn background_flush_helps(path: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        !linux::is_fuse(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        false
    }
}

/// Flushes everything written to the filesystem holding `path` to stable storage: one `syncfs`
/// for a whole batch of copies instead of an fsync of every file and folder (docs/design.md,
/// "Durable before it counts"). `Unsupported` elsewhere than Linux: the caller then flushes file
/// by file.
pub fn sync_filesystem(path: &std::path::Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = File::open(path)?;
        // SAFETY: syncfs on a valid descriptor.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Whether [`sync_filesystem`] flushes a whole filesystem here. Where it does not, every copy is
/// flushed on its own handle before it is named (docs/design.md, "Windows").
pub const SYNCS_FILESYSTEM: bool = cfg!(target_os = "linux");

/// Flushes the file at `path` to stable storage. Windows' FlushFileBuffers refuses a handle opened
/// only for reading, so there it is opened for writing (nothing is written).
pub fn flush_file(path: &std::path::Path) -> io::Result<()> {
    #[cfg(windows)]
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    #[cfg(not(windows))]
    let file = File::open(path)?;
    file.sync_all()
}

/// Flushes the folder at `path`, so that names made or renamed in it last. On Windows, where
/// possible: a folder handle opened for writing, which NTFS flushes with its log (the log is
/// written in order, so the names renamed before are durable too); a filesystem that refuses it
/// is no error (docs/design.md, "Windows").
pub fn flush_folder(path: &std::path::Path) -> io::Result<()> {
    #[cfg(windows)]
    {
        windows::flush_folder(path)
    }
    #[cfg(not(windows))]
    {
        File::open(path)?.sync_all()
    }
}

/// The identifier of the filesystem holding `path`, where it has one that names the filesystem
/// itself (Linux's `f_fsid`; see `linux::filesystem_id`). Elsewhere `None`: Windows' volume
/// serial number, which the device of an identity already is, is the filesystem's own. A look that
/// fails is an error, never "none": a folder's identity must not change with a share's hiccup.
pub fn filesystem_id(path: &std::path::Path) -> io::Result<Option<u64>> {
    #[cfg(target_os = "linux")]
    {
        linux::filesystem_id(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Renames `from` to `to` only if nothing is at `to` (`AlreadyExists` if something is): the check
/// and the rename are one step, so a file a writer puts there meanwhile is never replaced.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let one_step = linux::rename_noreplace(from, to);
    #[cfg(windows)]
    let one_step = windows::rename_noreplace(from, to);
    #[cfg(not(any(target_os = "linux", windows)))]
    let one_step: io::Result<()> = Err(io::ErrorKind::Unsupported.into());
    match one_step {
        // A folder can replace only an empty folder: nothing is lost if one is there.
        Err(e) if unsupported(&e) && std::fs::symlink_metadata(from)?.is_dir() => std::fs::rename(from, to),
        // A filesystem that cannot rename without replacing (FUSE without rename2, sshfs, NFS:
        // EINVAL): a link is made only where nothing is; then the old name goes.
        Err(e) if unsupported(&e) => match std::fs::hard_link(from, to) {
            Ok(()) => std::fs::remove_file(from),
            // Neither (exFAT through FUSE, shares without hard links): a look, then a plain rename.
            // Left where it is, the file would be hidden from every copy; the rename replaces only
            // a file made in the microseconds between the look and it.
            Err(e) if unsupported(&e) => match std::fs::symlink_metadata(to) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::rename(from, to),
                Err(e) => Err(e),
                Ok(_) => Err(io::ErrorKind::AlreadyExists.into()),
            },
            Err(e) => Err(e),
        },
        done => done,
    }
}

/// Whether a rename that never replaces failed only because it is not offered here.
fn unsupported(e: &io::Error) -> bool {
    e.kind() != io::ErrorKind::AlreadyExists && e.kind() != io::ErrorKind::NotFound
}

/// Free space on the filesystem holding `path`, for messages about a full destination.
#[derive(Clone, Copy, Debug)]
pub struct Space {
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Free inodes: a filesystem can be full with bytes to spare when a million small files used
    /// up its inodes (seen on ext4 copying a million chunks).
    pub free_files: u64,
    pub total_files: u64,
}

/// Free and total bytes and inodes of the filesystem holding `path`.
pub fn free_space(path: &std::path::Path) -> Option<Space> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a valid NUL-terminated path and a buffer of the right type for statvfs to fill.
        if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled the buffer.
        let st = unsafe { st.assume_init() };
        // The field types are 32-bit on some targets: the casts are for them.
        #[allow(clippy::unnecessary_cast)]
        let frsize = st.f_frsize as u64;
        #[allow(clippy::unnecessary_cast)]
        #[allow(clippy::unnecessary_cast)]
        Some(Space {
            free_bytes: st.f_bavail as u64 * frsize,
            total_bytes: st.f_blocks as u64 * frsize,
            free_files: st.f_favail as u64,
            total_files: st.f_files as u64,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Tells the kernel we will not read this file's pages again, so copying does not evict the
/// acquisition's own page cache. Dirty pages are kept by the kernel; this only drops clean ones.
pub fn drop_cache(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open fd; posix_fadvise reads no memory of ours.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
    }
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;

/// The requests others made of one device, as counted so far: the back-off's signal
/// (docs/design.md, "Gentle on any scheduler").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceWrites {
    /// Write requests completed.
    pub requests: u64,
    /// Milliseconds they spent, summed over requests (queue and service).
    pub ms: u64,
}

/// Reads the write counters of the device that holds a source (see [`device_writes`]).
pub struct WriteCounter {
    #[cfg(target_os = "linux")]
    stat: File,
    /// The device's name, for the status.
    pub name: String,
}

impl WriteCounter {
    pub fn read(&self) -> io::Result<DeviceWrites> {
        #[cfg(target_os = "linux")]
        {
            linux::read_device_writes(&self.stat)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }
}

/// The write counters of the block device holding `source`, whose writes are the acquisition's
/// (softcopy only reads there), unless `destination` is on that device too; or why there are none.
/// On Windows there are none read: its IO scheduler honours the workers' background mode.
pub fn device_writes(source: &std::path::Path, destination: &std::path::Path) -> Result<WriteCounter, String> {
    #[cfg(target_os = "linux")]
    {
        linux::device_writes(source, destination)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (source, destination);
        Err("no device counters on this system (the background IO priority yields instead)".into())
    }
}
