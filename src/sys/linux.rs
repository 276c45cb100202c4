//! Linux's half of [`super`]: copy_file_range, sendfile, O_TMPFILE, ioprio, leases.

use super::{CopyMethod, Learned, Pacing};
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
    pace: &impl Pacing,
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
    pace: &impl Pacing,
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
    Ok(total + super::read_write(src, dst, size - total, pace)?)
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
    pace: &impl Pacing,
    f: &mut dyn FnMut(libc::c_int, libc::c_int, u64) -> isize,
) -> io::Result<()> {
    while *total < size {
        pace.check()?;
        let turn = pace.turn_unless(|| next_in_page_cache(src, (size - *total).min(pace.step(STEP) as u64)))?;
        let n = f(src.as_raw_fd(), dst.as_raw_fd(), size - *total);
        match n {
            0 => return Ok(()),
            n if n > 0 => {
                *total += n as u64;
                pace.moved(n as u64, turn)?;
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

/// See [`super::device_writes`]: `/sys/dev/block/MAJ:MIN/stat` of the source's filesystem (a
/// partition has its own), kept open and read again from its start at each sample.
pub fn device_writes(source: &Path, destination: &Path) -> Result<super::WriteCounter, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(source).map_err(|e| format!("cannot look at the source: {e}"))?.dev();
    if std::fs::metadata(destination).is_ok_and(|m| m.dev() == dev) {
        return Err(
            "the destination is on the source's device (its writes would be taken for the acquisition's)".into()
        );
    }
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let stat = File::open(sys.join("stat")).map_err(|_| "the source is not on a local block device".to_string())?;
    let name = std::fs::canonicalize(&sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| format!("/dev/{}", n.to_string_lossy())))
        .unwrap_or_else(|| format!("device {major}:{minor}"));
    let counter = super::WriteCounter { stat, name };
    counter.read().map_err(|e| format!("cannot read the counters of {}: {e}", counter.name))?;
    Ok(counter)
}

/// Fields 5 and 8 of a block device's `stat` (Documentation/block/stat.rst): write requests
/// completed, and the milliseconds they waited.
pub fn read_device_writes(stat: &File) -> io::Result<super::DeviceWrites> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 512];
    let n = stat.read_at(&mut buf, 0)?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let field = |i: usize| text.split_whitespace().nth(i).and_then(|f| f.parse::<u64>().ok());
    match (field(4), field(7)) {
        (Some(requests), Some(ms)) => Ok(super::DeviceWrites { requests, ms }),
        _ => Err(io::Error::from(io::ErrorKind::InvalidData)),
    }
}

/// cachestat(2)'s number (Linux 6.5; one number on every architecture since 5.x's unification).
const SYS_CACHESTAT: libc::c_long = 451;

/// Whether the next step's `len` bytes (from the file's offset) are all in the page cache: then the step reads nothing from the disk and the back-off
/// lets it pass (docs/design.md, "Gentle on any scheduler": a live copy stays free). False where
/// the kernel cannot say.
fn next_in_page_cache(src: &File, len: u64) -> bool {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // SAFETY: a valid fd; lseek with SEEK_CUR and 0 only reads the offset.
    let Ok(off) = u64::try_from(unsafe { libc::lseek(src.as_raw_fd(), 0, libc::SEEK_CUR) }) else { return false };
    let range = Range { off, len };
    let mut stat = Stat::default();
    // SAFETY: valid fd, pointers to live structs of the kernel's layout, flags 0.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, src.as_raw_fd(), &range, &mut stat, 0u32) };
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    r == 0 && len > 0 && stat.nr_cache >= (off + len).div_ceil(page) - off / page
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid NUL-terminated paths that live across the call.
    let r =
        unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn open_no_symlinks(path: &Path) -> Option<io::Result<File>> {
    static MISSING: AtomicBool = AtomicBool::new(false);
    if MISSING.load(Ordering::Relaxed) {
        return None;
    }
    let opened = openat2(None, path, libc::O_RDONLY, libc::RESOLVE_NO_SYMLINKS);
    if opened.is_none() {
        MISSING.store(true, Ordering::Relaxed);
    }
    opened
}

/// The folder `rel` beneath the folder `dir` (itself for an empty path), reached through no link
/// at all (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a link in any component fails with ELOOP),
/// as an `O_PATH` descriptor. `None` where the kernel has no openat2.
pub fn folder_beneath(dir: &File, rel: &Path) -> Option<io::Result<File>> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    openat2(Some(dir), rel, libc::O_PATH | libc::O_DIRECTORY, resolve)
}

/// openat2(2) relative to `dir` (the working folder where none) with `flags` and `resolve`.
/// `None` where the call is missing (ENOSYS) or refused by a seccomp filter (EPERM): the portable
/// way then says what is wrong.
fn openat2(dir: Option<&File>, path: &Path, flags: libc::c_int, resolve: u64) -> Option<io::Result<File>> {
    let c = match c_path(path) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: a valid dirfd (or AT_FDCWD), a NUL-terminated path and an open_how of the size we
    // pass, all alive for the call.
    let fd =
        unsafe { libc::syscall(libc::SYS_openat2, dirfd, c.as_ptr(), &how, std::mem::size_of::<libc::open_how>()) };
    if fd >= 0 {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        return Some(Ok(unsafe { File::from_raw_fd(fd as libc::c_int) }));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS | libc::EPERM) => None,
        _ => Some(Err(err)),
    }
}

/// Makes the folder `name` inside the folder `dir`; one already there is no error. True when this
/// call made it (so it was empty, under exactly this name, when made).
pub fn mkdir_in(dir: &File, name: &Path) -> io::Result<bool> {
    let c = c_path(name)?;
    // SAFETY: a valid dirfd and a NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::AlreadyExists {
        Ok(false)
    } else {
        Err(err)
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
    let rc =
        unsafe { libc::linkat(libc::AT_FDCWD, proc.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The extended attribute a copy's source version is kept in (`super::set_mark`).
const MARK: &std::ffi::CStr = c"user.softcopy.source";

pub fn set_mark(file: &File, mark: &[u8]) -> io::Result<()> {
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer alive for the call.
    let rc = unsafe { libc::fsetxattr(file.as_raw_fd(), MARK.as_ptr(), mark.as_ptr().cast(), mark.len(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // setxattr(2): ENOTSUP where the filesystem keeps no user attributes (many FUSE and network
    // filesystems: sshfs, NFS before 4.2).
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Err(io::ErrorKind::Unsupported.into()),
        _ => Err(err),
    }
}

pub fn unmark(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: NUL-terminated path and name alive for the call; never follows a link.
    if unsafe { libc::lremovexattr(c.as_ptr(), MARK.as_ptr()) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODATA | libc::EOPNOTSUPP) => Ok(()),
        _ => Err(err),
    }
}

pub fn mark(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let c = c_path(path)?;
    let mut buf = [0u8; 128];
    // SAFETY: NUL-terminated path and name, a buffer of the length given; lgetxattr never follows
    // a link at the last component.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), MARK.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if let Ok(n) = usize::try_from(n) {
        return Ok(Some(buf[..n].to_vec()));
    }
    let err = io::Error::last_os_error();
    // ENODATA: no mark; ERANGE: a value longer than any mark we write, so not one of ours.
    match err.raw_os_error() {
        Some(libc::ENODATA | libc::ERANGE) => Ok(None),
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Err(io::ErrorKind::Unsupported.into()),
        _ => Err(err),
    }
}

pub fn gettid() -> u64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Sets thread `tid`'s nice value back to 0; refused without the privilege (EACCES), then
/// nothing changes.
pub fn restore_thread_priority(tid: u64) {
    // SAFETY: a plain syscall with integer arguments; `tid` is a live thread of this process
    // (see `Lowered::restore`).
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 0) };
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
    let rc =
        unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) };
    if rc != 0 {
        problems.push(format!("ioprio_set(IDLE): {}", io::Error::last_os_error()));
    }
    // setpriority(PRIO_PROCESS, tid) sets the nice value of one thread on Linux (see the NOTES
    // of setpriority(2)), so the Python thread and the watcher keep their priority.
    // SAFETY: as above.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, gettid() as libc::id_t, 19) };
    if rc != 0 {
        problems.push(format!("setpriority(19): {}", io::Error::last_os_error()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The type of the filesystem holding the open `file` (statfs's `f_type`), if it can be asked.
pub fn fs_type(file: &File) -> Option<libc::c_long> {
    // SAFETY: a zeroed statfs is a valid buffer for fstatfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a buffer of the right type.
    let ok = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0;
    ok.then_some(st.f_type)
}

/// Whether `path` is on a FUSE mount (sshfs and the like).
pub fn is_fuse(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a zeroed statfs is a valid buffer for statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    ok && st.f_type == libc::FUSE_SUPER_MAGIC
}

/// The filesystem's own identifier (statvfs's `f_fsid`): ext4 and btrfs derive it from the
/// filesystem's UUID, tmpfs from one drawn at mount, so it names the filesystem itself, not the
/// number the kernel gave its device this boot. Zero (FUSE, some network filesystems) says nothing.
pub fn filesystem_id(path: &Path) -> io::Result<Option<u64>> {
    let c = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type for statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    // 32-bit on some targets: the cast is for them.
    #[allow(clippy::unnecessary_cast)]
    Ok(Some(st.f_fsid as u64).filter(|&id| id != 0))
}

#[cfg(test)]
mod tests {
    /// A filesystem without user attributes (procfs) is learned once, and no other copy tries;
    /// any other refusal (a pipe: EPERM) is that file's alone.
    #[test]
    fn a_filesystem_that_keeps_no_marks_is_learned_and_another_refusal_is_not() {
        use std::sync::atomic::Ordering;
        let learned = Learned::default();
        let (_r, w) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(w));
        assert!(super::super::set_mark(&pipe, b"m", &learned).is_err());
        assert!(!learned.no_marks.load(Ordering::Relaxed), "a pipe's refusal is not the filesystem's");
        let comm = std::fs::OpenOptions::new().write(true).open("/proc/self/comm").unwrap();
        let e = super::super::set_mark(&comm, b"m", &learned).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(learned.no_marks.load(Ordering::Relaxed));
        let tmp = tempfile::tempfile().unwrap();
        assert_eq!(super::super::set_mark(&tmp, b"m", &learned).unwrap_err().kind(), io::ErrorKind::Unsupported);
    }

    /// A mark names a ctime the kernel stamped: a local filesystem's (here's temporary folder is
    /// ext4 or tmpfs), not procfs's, whose times are made up when asked.
    #[test]
    fn only_a_known_local_filesystem_stamps_the_ctime_a_mark_names() {
        assert!(super::super::ctime_is_the_kernels(&tempfile::tempfile().unwrap()));
        assert!(!super::super::ctime_is_the_kernels(&File::open("/proc/self/status").unwrap()));
    }

    /// Reading a mark where the filesystem keeps none says so (what `Dest::mark` learns once),
    /// and a file without one has none.
    #[test]
    fn a_mark_read_where_none_can_be_kept_is_unsupported_and_one_never_set_is_none() {
        let e = mark(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(mark(f.path()).unwrap(), None);
    }

    use super::*;
    use std::fs;
    use std::io::{Seek, Write};

    /// A folder made tells whether this call made it (`folder_making` relies on it: a folder
    /// made here was empty under exactly its name); one already there is no error; any other
    /// failure is.
    #[test]
    fn mkdir_in_says_whether_it_made_the_folder() {
        let t = tempfile::tempdir().unwrap();
        let dir = File::open(t.path()).unwrap();
        assert!(mkdir_in(&dir, Path::new("x")).unwrap(), "made");
        assert!(!mkdir_in(&dir, Path::new("x")).unwrap(), "already there");
        assert_eq!(mkdir_in(&dir, Path::new("none/y")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_writer_opening_a_leased_file_signals_nothing_and_its_open_is_seen() {
        // The kernel makes the lease's taker the owner of its break signal, SIGIO by default,
        // which ends the process: this test process would die here (docs/design.md, "The end of
        // a run", Freeing).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, b"line 1\n").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(super::super::read_lease(file.as_raw_fd()), 0, "{}", io::Error::last_os_error());
        let lease = super::super::ReadLease { file: &file };
        assert!(!lease.broken());
        let writer = std::thread::spawn(move || {
            fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"line 2\n").unwrap();
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !lease.broken() {
            assert!(std::time::Instant::now() < deadline, "the writer's open was never seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(lease);
        writer.join().unwrap();
    }

    fn nice_of(tid: u64) -> i64 {
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        stat.rsplit(')').next().unwrap().split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_stop_gives_registered_workers_their_priority_back() {
        // Where the process may (the tests run as root): see `Lowered::restore`.
        let lowered = std::sync::Arc::new(crate::sys::Lowered::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let theirs = lowered.clone();
        let worker = std::thread::spawn(move || {
            let _registered = theirs.register();
            lower_thread_priority().unwrap();
            tx.send(gettid()).unwrap();
            wait.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(nice_of(tid), 19);
        lowered.restore();
        assert_eq!(nice_of(tid), 0);
        release.send(()).unwrap();
        worker.join().unwrap();
        assert!(lowered.0.lock().unwrap().is_empty(), "a thread that returned is no longer registered");
    }

    #[test]
    fn a_step_from_the_page_cache_passes_the_gate_and_a_step_from_the_disk_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        assert!(next_in_page_cache(&f, 3 << 20), "just written: cached (needs cachestat, Linux 6.5)");
        // Clean pages dropped: the next step would read the disk.
        // SAFETY: a valid fd.
        assert_eq!(unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
        assert!(!next_in_page_cache(&f, 3 << 20));
        assert!(!next_in_page_cache(&f, 0), "nothing left to read is no step");
    }

    #[test]
    fn a_kernel_copy_that_ends_early_falls_back_instead_of_cutting_the_file() {
        // copy_file_range or sendfile returning 0 before the size fstat gave
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
        let n = chain(&src, &dst, data.len() as u64, &mut steps, &learned, &stop).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), data);
        assert!(!learned.no_copy_file_range.load(Ordering::Relaxed), "an early end is not 'unsupported'");
    }
}
