//! Operating-system calls that the standard library does not offer, each behind `cfg`, each with a
//! portable fallback so the crate builds (and copies correctly, if less gently) on every platform.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::rate::RateLimit;

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
    pace: &Pace<'_>,
) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::copy_contents(src, dst, size, method, learned, pace)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (size, method, learned);
        read_write(src, dst, pace)
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

/// What a copy loop obeys between steps: a stop request, and any number of rate limits.
pub struct Pace<'a> {
    stop: &'a AtomicBool,
    limits: Vec<&'a RateLimit>,
}

impl<'a> Pace<'a> {
    /// No limit; only the stop request.
    pub fn new(stop: &'a AtomicBool) -> Self {
        Pace { stop, limits: Vec::new() }
    }

    /// Adds a rate limit to obey.
    pub fn limit(mut self, limit: Option<&'a RateLimit>) -> Self {
        self.limits.extend(limit);
        self
    }

    /// The most bytes to move in one step.
    fn step(&self, max: usize) -> usize {
        self.limits.iter().map(|l| l.step()).fold(max, usize::min)
    }

    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            Err(io::Error::other("stopped"))
        } else {
            Ok(())
        }
    }

    fn moved(&self, n: u64) -> io::Result<()> {
        self.limits.iter().try_for_each(|l| l.take(n, self.stop))
    }
}

/// The last step of every chain: a plain user-space copy with a buffer large enough to keep
/// per-syscall overhead negligible for MiB-sized chunks.
fn read_write(src: &File, dst: &File, pace: &Pace<'_>) -> io::Result<u64> {
    read_write_seeing(src, dst, pace, &mut |_| {})
}

/// The user-space copy, showing every block that passes to `see` (the checksum copy hashes them).
pub fn read_write_seeing(
    mut src: &File,
    mut dst: &File,
    pace: &Pace<'_>,
    see: &mut dyn FnMut(&[u8]),
) -> io::Result<u64> {
    let mut buf = vec![0u8; pace.step(1 << 20)];
    let mut total = 0u64;
    loop {
        pace.check()?;
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        see(&buf[..n]);
        dst.write_all(&buf[..n])?;
        total += n as u64;
        pace.moved(n as u64)?;
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

/// Asks the kernel whether any process has `file` open for writing. A read lease
/// (`fcntl(F_SETLEASE, F_RDLCK)`) is refused with EAGAIN exactly then (fcntl(2), "Leases"), which
/// tells an in-place writer's unfinished file (acquire-zarr keeps a shard open for minutes) from a
/// finished one without any event history. The lease is released at once: held, it would make a
/// writer's `open()` wait for us. No owner is set (F_SETOWN), so a lease break never signals us.
/// `None` when the kernel cannot say (not the file's owner and no CAP_LEASE, no lease support).
pub fn open_for_writing(file: &File) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a valid fd with integer arguments.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
        if rc == 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
            return Some(false);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(true),
            _ => None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
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
mod linux {
    use super::{CopyMethod, Learned, Pace};
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Bytes asked for per call: large enough to amortise the syscall, small enough that a stop
    /// request is noticed between calls on a slow network destination.
    const STEP: usize = 16 << 20;

    /// errnos meaning "this method does not work here, use the next one" (copy_file_range(2): EXDEV
    /// across filesystems on older kernels, EINVAL/EOPNOTSUPP on filesystems without support such as
    /// some FUSE mounts, ENOSYS before 4.5, EPERM in some sandboxes). Anything else is a real error.
    fn unsupported(err: &io::Error) -> bool {
        matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EXDEV | libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP))
    }

    pub fn copy_contents(
        src: &File,
        dst: &File,
        size: u64,
        method: CopyMethod,
        learned: &Learned,
        pace: &Pace<'_>,
    ) -> io::Result<u64> {
        let step = pace.step(STEP) as u64;
        let use_cfr = method == CopyMethod::Auto && !learned.no_copy_file_range.load(Ordering::Relaxed);
        let mut cfr = |s, d, left: u64| {
            let n = left.min(step) as usize;
            // SAFETY: valid fds; null offsets mean "use and advance the file offsets".
            unsafe { libc::copy_file_range(s, std::ptr::null_mut(), d, std::ptr::null_mut(), n, 0) }
        };
        let mut sendfile = |s, d, left: u64| {
            let n = left.min(step) as usize;
            // SAFETY: valid fds; a null offset means "use and advance src's file offset".
            unsafe { libc::sendfile(d, s, std::ptr::null_mut(), n) }
        };
        let mut steps: Vec<Step<'_>> = Vec::new();
        if use_cfr {
            steps.push((Kernel::CopyFileRange, &mut cfr));
        }
        if method != CopyMethod::ReadWrite {
            steps.push((Kernel::SendFile, &mut sendfile));
        }
        chain(src, dst, size, &mut steps, learned, pace)
    }

    /// One kernel copy call: which one, and the call itself (source fd, destination fd, bytes left).
    pub(super) type Step<'a> = (Kernel, &'a mut dyn FnMut(libc::c_int, libc::c_int, u64) -> isize);

    /// The in-kernel copy calls, in the order they are tried.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kernel {
        CopyFileRange,
        SendFile,
    }

    /// Tries each kernel copy call in turn, then the user-space copy. A call that says it cannot
    /// copy here (an errno of [`unsupported`]) *or* that ends before `size` bytes moved hands over
    /// to the next: copy_file_range and sendfile return 0 early on some filesystems (FUSE, procfs
    /// style files), which is not end of file; only the user-space read's 0 is. Offsets advanced
    /// with every byte moved, so each step resumes where the last stopped.
    pub(super) fn chain(
        src: &File,
        dst: &File,
        size: u64,
        steps: &mut [Step<'_>],
        learned: &Learned,
        pace: &Pace<'_>,
    ) -> io::Result<u64> {
        let mut total = 0u64;
        for (kind, f) in steps.iter_mut() {
            match loop_syscall(src, dst, size, &mut total, pace, f) {
                Ok(()) if total >= size => return Ok(total),
                Ok(()) => {}
                Err(e) if unsupported(&e) => {
                    if *kind == Kernel::CopyFileRange && total == 0 {
                        learned.no_copy_file_range.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total + super::read_write(src, dst, pace)?)
    }

    /// Calls `f` with the bytes still wanted until `size` bytes moved or it returns 0 (EOF),
    /// adding what it moved to `total`. Returns the first error untouched so the caller can decide
    /// between falling back and failing; since file offsets advanced with every byte moved, the
    /// next method resumes exactly where this stopped.
    fn loop_syscall(
        src: &File,
        dst: &File,
        size: u64,
        total: &mut u64,
        pace: &Pace<'_>,
        f: &mut dyn FnMut(libc::c_int, libc::c_int, u64) -> isize,
    ) -> io::Result<()> {
        while *total < size {
            pace.check()?;
            let n = f(src.as_raw_fd(), dst.as_raw_fd(), size - *total);
            match n {
                0 => return Ok(()),
                n if n > 0 => {
                    *total += n as u64;
                    pace.moved(n as u64)?;
                }
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    fn c_path(path: &Path) -> io::Result<CString> {
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    pub fn open_no_symlinks(path: &Path) -> Option<io::Result<File>> {
        static MISSING: AtomicBool = AtomicBool::new(false);
        if MISSING.load(Ordering::Relaxed) {
            return None;
        }
        let c = match c_path(path) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        // SAFETY: open_how is plain data; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: a NUL-terminated path and an open_how of the size we pass, both alive for the call.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c.as_ptr(), &how, std::mem::size_of::<libc::open_how>())
        };
        if fd >= 0 {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            return Some(Ok(unsafe { File::from_raw_fd(fd as libc::c_int) }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) => {
                MISSING.store(true, Ordering::Relaxed);
                None
            }
            // A seccomp filter may refuse the call itself; the portable way will say what is wrong.
            Some(libc::EPERM) => None,
            _ => Some(Err(err)),
        }
    }

    pub fn create_unnamed(dir: &Path, mode: u32) -> io::Result<Option<File>> {
        let c = c_path(dir)?;
        // SAFETY: a NUL-terminated path; O_TMPFILE takes a mode like O_CREAT.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC, mode) };
        if fd >= 0 {
            // SAFETY: open returned a new descriptor that nothing else owns.
            return Ok(Some(unsafe { File::from_raw_fd(fd) }));
        }
        let err = io::Error::last_os_error();
        // open(2): EOPNOTSUPP where the filesystem has no O_TMPFILE; EISDIR from kernels before
        // 3.11, which see only O_DIRECTORY; EINVAL from some FUSE and network filesystems.
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS) => Ok(None),
            _ => Err(err),
        }
    }

    pub fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
        // linkat(2) with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc/self/fd link followed
        // with AT_SYMLINK_FOLLOW is the documented way for everyone else (open(2), O_TMPFILE).
        let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL in a number");
        let to = c_path(path)?;
        // SAFETY: two NUL-terminated paths alive for the call.
        let rc = unsafe {
            libc::linkat(libc::AT_FDCWD, proc.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn lower_thread_priority() -> Result<(), String> {
        // ioprio_set(2): IOPRIO_WHO_PROCESS with who=0 means the calling *thread*, which is why every
        // worker calls this itself. Class IDLE (3) gets disk time only when nobody else wants it;
        // honoured by BFQ (and partly mq-deadline), ignored by `none`, hence --max-rate elsewhere.
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        let mut problems = Vec::new();
        // SAFETY: plain syscalls with integer arguments.
        let rc = unsafe {
            libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT)
        };
        if rc != 0 {
            problems.push(format!("ioprio_set(IDLE): {}", io::Error::last_os_error()));
        }
        // setpriority(PRIO_PROCESS, tid) sets the nice value of one thread on Linux (see the NOTES
        // of setpriority(2)), so the Python thread and the watcher keep their priority.
        // SAFETY: as above.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19)
        };
        if rc != 0 {
            problems.push(format!("setpriority(19): {}", io::Error::last_os_error()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
    #[cfg(test)]
    mod tests {
        use super::*;
        use std::io::{Seek, Write};

        #[test]
        fn a_kernel_copy_that_ends_early_falls_back_instead_of_cutting_the_file() {
            // Issue 11, item 6: copy_file_range or sendfile returning 0 before the size fstat gave
            // is not end of file; the next step (in the end the user-space copy) carries on.
            let dir = tempfile::tempdir().unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let mut src =
                File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("s")).unwrap();
            src.write_all(&data).unwrap();
            src.rewind().unwrap();
            let dst = File::create(dir.path().join("d")).unwrap();
            let mut calls = 0;
            // The first call moves a little (as a real early stop would), the second says 0.
            let mut early = |s: libc::c_int, d: libc::c_int, _left: u64| {
                calls += 1;
                if calls > 1 {
                    return 0;
                }
                // SAFETY: valid fds; null offsets advance the file offsets.
                unsafe { libc::copy_file_range(s, std::ptr::null_mut(), d, std::ptr::null_mut(), 1000, 0) }
            };
            let mut zero = |_: libc::c_int, _: libc::c_int, _: u64| 0isize;
            let mut steps: Vec<Step<'_>> = vec![(Kernel::CopyFileRange, &mut early), (Kernel::SendFile, &mut zero)];
            let stop = AtomicBool::new(false);
            let learned = Learned::default();
            let n = chain(&src, &dst, data.len() as u64, &mut steps, &learned, &Pace::new(&stop)).unwrap();
            assert_eq!(n, data.len() as u64);
            assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), data);
            assert!(!learned.no_copy_file_range.load(Ordering::Relaxed), "an early end is not 'unsupported'");
        }
    }
}

#[cfg(windows)]
mod windows {
    use windows_sys::Win32::System::Threading::{GetCurrentThread, SetThreadPriority, THREAD_MODE_BACKGROUND_BEGIN};

    pub fn lower_thread_priority() -> Result<(), String> {
        // THREAD_MODE_BACKGROUND_BEGIN lowers both CPU and IO (and memory) priority of the calling
        // thread only (SetThreadPriority docs), the Windows counterpart of ioprio IDLE + nice 19.
        // SAFETY: GetCurrentThread returns a pseudo-handle valid in this thread.
        let ok = unsafe { SetThreadPriority(GetCurrentThread(), THREAD_MODE_BACKGROUND_BEGIN) };
        if ok == 0 {
            Err(format!("SetThreadPriority(background): {}", std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    }
}
