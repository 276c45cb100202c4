//! Windows' half of [`super`]: thread background mode, file identity from the handle.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Storage::FileSystem::{
    FileBasicInfo, GetFileInformationByHandle, GetFileInformationByHandleEx, MoveFileExW, BY_HANDLE_FILE_INFORMATION,
    FILE_BASIC_INFO, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE,
};
use windows_sys::Win32::System::Threading::{GetCurrentThread, SetThreadPriority, THREAD_MODE_BACKGROUND_BEGIN};

use crate::vocab::Identity;

pub fn lower_thread_priority() -> Result<(), String> {
    // THREAD_MODE_BACKGROUND_BEGIN lowers both CPU and IO (and memory) priority of the calling
    // thread only (SetThreadPriority docs), the Windows counterpart of ioprio IDLE + nice 19.
    // SAFETY: GetCurrentThread returns a pseudo-handle valid in this thread.
    let ok = unsafe { SetThreadPriority(GetCurrentThread(), THREAD_MODE_BACKGROUND_BEGIN) };
    if ok == 0 {
        let why = std::io::Error::last_os_error();
        let wine = if under_wine() { " (Wine does not implement background mode; Windows does)" } else { "" };
        Err(format!("SetThreadPriority(background): {why}{wine}"))
    } else {
        Ok(())
    }
}

/// See [`super::flush_folder`].
pub fn flush_folder(path: &Path) -> io::Result<()> {
    let folder = OpenOptions::new()
        .write(true)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path);
    match folder.and_then(|f| f.sync_all()) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Whether a process has `path` open for writing (see [`super::open_for_writing`]).
pub fn open_for_writing(path: &Path) -> Option<bool> {
    let probe =
        OpenOptions::new().read(true).share_mode(FILE_SHARE_READ).custom_flags(FILE_FLAG_OPEN_REPARSE_POINT).open(path);
    match probe {
        Ok(handle) => {
            drop(handle);
            Some(false)
        }
        Err(e) if super::is_sharing_violation(&e) => Some(true),
        Err(_) => None,
    }
}

/// Whether this process runs under Wine, whose ntdll exports `wine_get_version`.
fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: NUL-terminated names; ntdll is loaded in every Windows process.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

/// 100 ns ticks between 1601 (Windows' epoch) and 1970.
const EPOCH_DIFF_TICKS: i64 = 116_444_736_000_000_000;

fn ticks_to_unix_ns(ticks: i64) -> i64 {
    ticks.saturating_sub(EPOCH_DIFF_TICKS).saturating_mul(100)
}

/// Volume serial number, file index, size, last write and change time of an open file.
pub fn identity(file: &File) -> io::Result<Identity> {
    let handle = file.as_raw_handle();
    // SAFETY: a zeroed plain-data struct the call fills; the handle is open for as long as `file`.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { GetFileInformationByHandle(handle, &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, with the size of the struct passed.
    let mut basic: FILE_BASIC_INFO = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<FILE_BASIC_INFO>() as u32;
    // SAFETY: `basic` is FileBasicInfo's struct and `size` its size.
    if unsafe { GetFileInformationByHandleEx(handle, FileBasicInfo, (&raw mut basic).cast(), size) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
    Ok(Identity {
        dev: u64::from(info.dwVolumeSerialNumber),
        ino: index,
        size: (u64::from(info.nFileSizeHigh) << 32) | u64::from(info.nFileSizeLow),
        mtime_ns: ticks_to_unix_ns(basic.LastWriteTime),
        ctime_ns: ticks_to_unix_ns(basic.ChangeTime),
    })
}

/// MoveFileExW without MOVEFILE_REPLACE_EXISTING fails where something is at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::windows::ffi::OsStrExt;
    let wide = |p: &Path| p.as_os_str().encode_wide().chain(Some(0)).collect::<Vec<u16>>();
    let (from, to) = (wide(from), wide(to));
    // SAFETY: both are NUL-terminated UTF-16 paths that live across the call.
    if unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), 0) } != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The identity of what `path` names: opened for its attributes only, sharing everything, so a
/// writer's open, rename or delete is never refused because we looked; a reparse point (a
/// symlink or junction) is looked at itself, not followed; folders too (backup semantics).
pub fn path_identity(path: &Path) -> io::Result<Identity> {
    let file = OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    identity(&file)
}
