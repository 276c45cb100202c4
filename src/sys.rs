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

/// Copies from the current offset of `src` to the current offset of `dst` until `src` reports EOF.
/// Copying to EOF rather than to a size taken earlier means a file that grew between `fstat` and the
/// copy is still copied whole; the caller re-checks the source's identity afterwards anyway.
/// `pace` is obeyed between steps: a stop request never waits for a whole large file, and rate
/// limits are held while the file is copied, not only between files.
pub fn copy_contents(src: &File, dst: &File, method: CopyMethod, pace: &Pace<'_>) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::copy_contents(src, dst, method, pace)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = method;
        read_write(src, dst, pace)
    }
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

/// Free and total bytes of the filesystem holding `path` (for messages about a full destination).
pub fn free_space(path: &std::path::Path) -> Option<(u64, u64)> {
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
        Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
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
    use super::{CopyMethod, Pace};
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    /// Bytes asked for per call: large enough to amortise the syscall, small enough that a stop
    /// request is noticed between calls on a slow network destination.
    const STEP: usize = 16 << 20;

    /// errnos meaning "this method does not work here, use the next one" (copy_file_range(2): EXDEV
    /// across filesystems on older kernels, EINVAL/EOPNOTSUPP on filesystems without support such as
    /// some FUSE mounts, ENOSYS before 4.5, EPERM in some sandboxes). Anything else is a real error.
    fn unsupported(err: &io::Error) -> bool {
        matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EXDEV | libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP))
    }

    pub fn copy_contents(src: &File, dst: &File, method: CopyMethod, pace: &Pace<'_>) -> io::Result<u64> {
        let mut total = 0u64;
        let step = pace.step(STEP);
        if method == CopyMethod::Auto {
            match loop_syscall(src, dst, &mut total, pace, |s, d| {
                // SAFETY: valid fds; null offsets mean "use and advance the file offsets".
                unsafe { libc::copy_file_range(s, std::ptr::null_mut(), d, std::ptr::null_mut(), step, 0) }
            }) {
                Ok(()) => return Ok(total),
                Err(e) if unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if method != CopyMethod::ReadWrite {
            match loop_syscall(src, dst, &mut total, pace, |s, d| {
                // SAFETY: valid fds; a null offset means "use and advance src's file offset".
                unsafe { libc::sendfile(d, s, std::ptr::null_mut(), step) }
            }) {
                Ok(()) => return Ok(total),
                Err(e) if unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total + super::read_write(src, dst, pace)?)
    }

    /// Calls `f` until it returns 0 (EOF), adding what it moved to `total`. Returns the first
    /// error untouched so the caller can decide between falling back and failing; since file
    /// offsets advanced with every byte moved, the next method resumes exactly where this stopped.
    fn loop_syscall(
        src: &File,
        dst: &File,
        total: &mut u64,
        pace: &Pace<'_>,
        mut f: impl FnMut(libc::c_int, libc::c_int) -> isize,
    ) -> io::Result<()> {
        loop {
            pace.check()?;
            let n = f(src.as_raw_fd(), dst.as_raw_fd());
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
