//! The local filesystem as a destination (docs/design.md, invariant 6 and "The destination
//! interface"): a mounted disk or network share. On Linux the root is opened once and held, and
//! each folder below it is opened with `openat2` (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): a
//! link in any component fails with ELOOP. The folder's descriptor is then named through
//! `/proc/self/fd`, so the standard library's path calls (create, rename, link, unlink, stat) act
//! inside exactly that folder; their last component is never followed by those calls anyway.
//! Elsewhere each component is looked at first (racy against a link made in between, but never
//! fooled by one already there). Copies are filled by the kernel's copy calls (`sys`), and a
//! file gets its name only when complete where the filesystem has unnamed files (O_TMPFILE).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::backend::{Backend, Fill, Kind, Located, Look};
use crate::sys::{self, Learned, Pacing, Space};
use crate::vocab::Hash;

/// What a folder below the destination is, for the calls that act inside it.
pub struct Folder {
    /// A path naming exactly this folder: `/proc/self/fd/N` on Linux, the joined path elsewhere.
    base: PathBuf,
    /// Keeps the descriptor that `base` names open.
    #[cfg(target_os = "linux")]
    _fd: Option<File>,
}

impl Folder {
    /// A path naming this folder itself.
    pub fn path(&self) -> &Path {
        &self.base
    }

    /// `name` inside this folder.
    pub fn join(&self, name: &Path) -> PathBuf {
        self.base.join(name)
    }
}

/// The local filesystem below one root.
pub struct Local {
    root: PathBuf,
    /// Whether this run's claim was lately confirmed ours (by its toucher).
    holding: std::sync::Arc<super::claim::Holding>,
    /// The root, opened once (a root that is a link is resolved once and held).
    #[cfg(target_os = "linux")]
    root_fd: Option<File>,
}

impl Local {
    /// The storage at `root`, an existing folder, held open where the OS allows; and that
    /// folder's identity (device and file number), to tell it from one swapped in under its name.
    pub fn open(root: &Path) -> io::Result<(Local, (u64, u64))> {
        #[cfg(target_os = "linux")]
        {
            let root_fd = sys::open_folder(root)?;
            let held = identity(&root_fd.metadata()?);
            Ok((Local { root: root.to_path_buf(), holding: Default::default(), root_fd: Some(root_fd) }, held))
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok((Local { root: root.to_path_buf(), holding: Default::default() }, folder_identity(root)?))
        }
    }

    /// The storage at `root`, nothing held: each folder is looked at component by component.
    pub fn unheld(root: &Path) -> Local {
        Local {
            root: root.to_path_buf(),
            holding: Default::default(),
            #[cfg(target_os = "linux")]
            root_fd: None,
        }
    }

    /// Another handle on the same root, for another view of the destination.
    pub fn try_clone(&self) -> io::Result<Local> {
        Ok(Local {
            root: self.root.clone(),
            holding: self.holding.clone(),
            #[cfg(target_os = "linux")]
            root_fd: self.root_fd.as_ref().map(File::try_clone).transpose()?,
        })
    }
}

fn kind_of(t: fs::FileType) -> Kind {
    if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Folder
    } else {
        Kind::Other
    }
}

impl Backend for Local {
    type Folder = Folder;
    type Writer = File;
    type Reader = File;
    type Claim = super::claim::Claim;

    fn folder(&self, rel_dir: &Path, create: bool) -> io::Result<Folder> {
        self.folder_making(rel_dir, create).map(|(f, _)| f)
    }

    fn folder_making(&self, rel_dir: &Path, create: bool) -> io::Result<(Folder, Option<usize>)> {
        #[cfg(target_os = "linux")]
        if let Some(root_fd) = &self.root_fd {
            return linux::folder(root_fd, &self.root, rel_dir, create);
        }
        portable_folder(&self.root, rel_dir, create).map(|f| (f, None))
    }

    fn list(&self, folder: &Folder) -> io::Result<Vec<(OsString, Kind)>> {
        fs::read_dir(folder.path())?.map(|e| e.and_then(|e| Ok((e.file_name(), kind_of(e.file_type()?))))).collect()
    }

    fn look(&self, folder: &Folder, name: &Path) -> io::Result<Look> {
        let m = fs::symlink_metadata(folder.join(name))?;
        Ok(Look { kind: kind_of(m.file_type()), ident: crate::vocab::identity(&m) })
    }

    fn read(&self, folder: &Folder, name: &Path) -> io::Result<File> {
        sys::open_no_follow(&folder.join(name))
    }

    fn create(&self, folder: &Folder, name: &Path, mode: u32) -> io::Result<File> {
        let mut open = OpenOptions::new();
        // create_new: a partial name is ours alone; never truncate something we did not create.
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, mode);
        #[cfg(not(unix))]
        let _ = mode;
        open.open(folder.join(name))
    }

    fn create_unnamed(&self, folder: &Folder, mode: u32, learned: &Learned) -> io::Result<Option<File>> {
        sys::create_unnamed(folder.path(), mode, learned)
    }

    fn name_unnamed(&self, w: &File, folder: &Folder, name: &Path) -> io::Result<()> {
        sys::link_unnamed(w, &folder.join(name))
    }

    fn fill<P: Pacing>(&self, w: &File, src: &File, how: Fill<'_, P>) -> io::Result<(u64, Option<Hash>)> {
        match how {
            Fill::Copy { size, method, learned, pace } => {
                Ok((sys::copy_contents(src, w, size, method, learned, pace)?, None))
            }
            Fill::Hashed { pace } => crate::content::copy_hashed(src, w, pace).map(|(n, h)| (n, Some(h))),
        }
    }

    fn stamp(&self, w: &File, mode: u32, mtime: Option<SystemTime>) -> io::Result<()> {
        // The file was created with the source's bits; our umask may have narrowed them, and
        // only then is a chmod needed (unknown umask: always).
        #[cfg(unix)]
        if sys::umask().is_none_or(|u| mode & u != 0) {
            use std::os::unix::fs::PermissionsExt;
            w.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        match mtime {
            Some(t) => w.set_times(fs::FileTimes::new().set_modified(t)),
            None => Ok(()),
        }
    }

    fn set_mark(&self, w: &File, mark: &[u8], learned: &Learned) -> io::Result<()> {
        sys::set_mark(w, mark, learned)
    }

    fn mark(&self, folder: &Folder, name: &Path) -> io::Result<Option<Vec<u8>>> {
        sys::mark(&folder.join(name))
    }

    fn unmark(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        sys::unmark(&folder.join(name))
    }

    fn flush_file(&self, w: &File) -> io::Result<()> {
        w.sync_all()
    }

    fn complete(&self, w: &File) -> io::Result<()> {
        if sys::SYNCS_FILESYSTEM {
            // The whole destination is flushed before the marker (`Dest::flush_all`).
            return Ok(());
        }
        // No flush of the whole destination before the marker here: each copy is flushed on its
        // own (writing) handle before it gets its name.
        self.flush_file(w)
    }

    fn rename(&self, from_folder: &Folder, from: &Path, to_folder: &Folder, to: &Path) -> io::Result<()> {
        fs::rename(from_folder.join(from), to_folder.join(to))
    }

    fn link(&self, from_folder: &Folder, from: &Path, to_folder: &Folder, to: &Path) -> io::Result<()> {
        fs::hard_link(from_folder.join(from), to_folder.join(to))
    }

    fn remove_file(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        fs::remove_file(folder.join(name))
    }

    fn remove_folder(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        fs::remove_dir(folder.join(name))
    }

    fn flush_folder(&self, folder: &Folder) -> io::Result<()> {
        sys::flush_folder(folder.path())
    }

    fn append(&self, folder: &Folder, name: &Path, mode: u32) -> io::Result<File> {
        let mut open = OpenOptions::new();
        open.create(true).append(true).read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            open.mode(mode).custom_flags(libc::O_NOFOLLOW);
        }
        #[cfg(not(unix))]
        let _ = mode;
        open.open(folder.join(name))
    }

    fn write(&self, w: &File, bytes: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut &*w, bytes)
    }

    fn flush_named(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        sys::flush_file(&folder.join(name))
    }

    fn flush_all(&self, root: &Folder) -> io::Result<()> {
        sys::sync_filesystem(root.path())
    }

    fn flushes_in_background(&self) -> bool {
        sys::background_flush_helps(&self.root)
    }

    fn free_space(&self, _root: &Folder) -> Option<Space> {
        sys::free_space(&self.root)
    }

    fn locate(&self, given: &Path) -> io::Result<Located<Folder>> {
        let path = fs::canonicalize(given)?;
        let id = folder_identity(&path)?;
        let folder = Folder {
            base: path.clone(),
            #[cfg(target_os = "linux")]
            _fd: None,
        };
        Ok(Located { path, id, folder })
    }

    fn whole_storage_error(&self, e: &io::Error) -> bool {
        #[cfg(unix)]
        let device = matches!(
            e.raw_os_error(),
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
        let device = e.kind() == io::ErrorKind::StorageFull;
        device
    }

    fn claim(&self, _root: &Folder, who: &str) -> Result<super::claim::Claim, String> {
        super::claim::Claim::held(&self.root, who, self.holding.clone(), super::claim::Timing::default())
    }

    fn standing(&self) -> super::claim::Standing {
        self.holding.standing(&self.root)
    }

    fn reconfirm(&self) -> super::claim::Standing {
        self.standing()
    }

    fn claimed(&self, folder: &Folder) -> Option<String> {
        super::claim::held_in(folder.path())
    }
}

/// A link met below the destination root: reported with the path the user knows.
pub(super) fn link_error(root: &Path, rel: &Path) -> io::Error {
    super::Refused::Link(root.join(rel)).into()
}

/// Each component looked at before it is used: a link there is refused.
fn portable_folder(root: &Path, rel_dir: &Path, create: bool) -> io::Result<Folder> {
    let mut dir = root.to_path_buf();
    for part in rel_dir.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Err(link_error(root, rel_dir)),
            Ok(m) if !m.is_dir() => return Err(io::Error::from(io::ErrorKind::NotFound)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => match fs::create_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            },
            Err(e) => return Err(e),
        }
    }
    Ok(Folder {
        base: dir,
        #[cfg(target_os = "linux")]
        _fd: None,
    })
}

#[cfg(unix)]
pub(super) fn identity(m: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The folder's device and file number (on Windows the volume serial and the file index, read from
/// a handle: std's metadata has neither there), so a folder swapped in under the root's name is
/// told from the one held on every platform.
pub(super) fn folder_identity(path: &Path) -> io::Result<(u64, u64)> {
    let id = crate::sys::path_identity_of(path, &fs::metadata(path)?)?;
    Ok((id.dev, id.ino))
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{link_error, portable_folder, Folder};
    use crate::sys::{folder_beneath, mkdir_in};
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};

    fn named(fd: File) -> Folder {
        Folder { base: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())), _fd: Some(fd) }
    }

    /// The folder, and the index of the first of its components this call made (every one from
    /// there on it made: see [`Backend::folder_making`]).
    pub fn folder(root_fd: &File, root: &Path, rel_dir: &Path, create: bool) -> io::Result<(Folder, Option<usize>)> {
        let refused = |e: io::Error| if e.raw_os_error() == Some(libc::ELOOP) { link_error(root, rel_dir) } else { e };
        if !create {
            return match folder_beneath(root_fd, rel_dir) {
                None => portable_folder(root, rel_dir, create).map(|f| (f, None)),
                Some(found) => Ok((named(found.map_err(refused)?), None)),
            };
        }
        // Made one component at a time, each inside the one before, none of them a link. Looked
        // at a component at a time from the root (the ones there are in the kernel's cache of
        // names: no round trip), so the first missing one is asked for once, not twice; below
        // the first this call made, the rest cannot be there: each is made without a look first
        // (a round trip each over a share, docs/design.md "Round trips": what a folder costs).
        let (mut here, mut made_from) = (root_fd.try_clone()?, None);
        for (i, part) in rel_dir.components().enumerate() {
            let part = Path::new(part.as_os_str());
            let next = if made_from.is_some() {
                mkdir_in(&here, part)?;
                folder_beneath(&here, part)
            } else {
                match folder_beneath(&here, part) {
                    Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                        if mkdir_in(&here, part)? {
                            made_from = Some(i);
                        }
                        folder_beneath(&here, part)
                    }
                    other => other,
                }
            };
            let Some(next) = next else {
                return portable_folder(root, rel_dir, create).map(|f| (f, None));
            };
            here = next.map_err(refused)?;
        }
        Ok((named(here), made_from))
    }
}
