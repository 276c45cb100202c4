//! The destination's storage, whichever it is: an enum of the backends (docs/design.md, "The
//! destination interface"). `Dest` holds one `Store`, so the copier, verification and the mover
//! have one code path for every destination; each call is passed to the backend the store is, with
//! the handles that backend made (a folder of one storage is never given to another: such a mix
//! is an error, not a panic).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::backend::{Backend, Fill, Kind, Located, Look};
use super::local::{self, Local};
use super::sftp::{self, Sftp};
use crate::sys::{Learned, Pacing, Space};
use crate::vocab::Hash;

/// One destination's storage.
pub enum Store {
    /// A mounted disk or share.
    Local(Local),
    /// A folder on an ssh server, over SFTP.
    Sftp(Sftp),
}

/// A folder below the root, of the store that made it.
pub enum Folder {
    Local(local::Folder),
    Sftp(sftp::Folder),
}

/// A file being written, of the store that made it.
pub enum Writer {
    Local(File),
    Sftp(sftp::Writer),
}

/// A file being read, of the store that opened it.
pub enum Reader {
    Local(File),
    Sftp(sftp::Reader),
}

/// A claim on the root, of the store that took it; released when dropped.
pub enum Claim {
    Local(super::claim::Claim),
    Sftp(sftp::Claim),
}

#[cfg(test)]
impl Folder {
    /// The path naming this folder (tests look at a local one directly).
    pub fn path(&self) -> std::path::PathBuf {
        match self {
            Folder::Local(f) => f.path().to_path_buf(),
            Folder::Sftp(f) => f.shown(),
        }
    }

    /// `name` inside this folder.
    pub fn join(&self, name: &Path) -> std::path::PathBuf {
        self.path().join(name)
    }
}

impl Store {
    /// Another handle on the same storage, for another view of the destination.
    pub fn try_clone(&self) -> io::Result<Store> {
        Ok(match self {
            Store::Local(l) => Store::Local(l.try_clone()?),
            Store::Sftp(s) => Store::Sftp(s.share()),
        })
    }
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Local(f) => f.read(buf),
            Reader::Sftp(r) => r.read(buf),
        }
    }
}

impl io::Seek for Reader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        match self {
            Reader::Local(f) => f.seek(pos),
            Reader::Sftp(r) => r.seek(pos),
        }
    }
}

/// A backend as one of the store's variants: its handles taken out of the store's, and put in.
trait Variant: Backend {
    fn folder_of(f: &Folder) -> io::Result<&Self::Folder>;
    fn writer_of(w: &Writer) -> io::Result<&Self::Writer>;
    fn wrap_folder(f: Self::Folder) -> Folder;
    fn wrap_writer(w: Self::Writer) -> Writer;
    fn wrap_reader(r: Self::Reader) -> Reader;
    fn wrap_claim(c: Self::Claim) -> Claim;
}

/// A handle given to a store that did not make it.
fn mixed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "a handle of another destination's storage")
}

macro_rules! variant {
    ($B:ty, $V:ident) => {
        impl Variant for $B {
            fn folder_of(f: &Folder) -> io::Result<&<$B as Backend>::Folder> {
                match f {
                    Folder::$V(f) => Ok(f),
                    #[allow(unreachable_patterns)]
                    _ => Err(mixed()),
                }
            }
            fn writer_of(w: &Writer) -> io::Result<&<$B as Backend>::Writer> {
                match w {
                    Writer::$V(w) => Ok(w),
                    #[allow(unreachable_patterns)]
                    _ => Err(mixed()),
                }
            }
            fn wrap_folder(f: <$B as Backend>::Folder) -> Folder {
                Folder::$V(f)
            }
            fn wrap_writer(w: <$B as Backend>::Writer) -> Writer {
                Writer::$V(w)
            }
            fn wrap_reader(r: <$B as Backend>::Reader) -> Reader {
                Reader::$V(r)
            }
            fn wrap_claim(c: <$B as Backend>::Claim) -> Claim {
                Claim::$V(c)
            }
        }
    };
}

variant!(Local, Local);
variant!(Sftp, Sftp);

/// `$body` for the backend the store is, with `$s` that backend and `$B` its type.
macro_rules! on {
    ($self:expr, $s:ident, $B:ident => $body:expr) => {
        match $self {
            Store::Local($s) => {
                type $B = Local;
                $body
            }
            Store::Sftp($s) => {
                type $B = Sftp;
                $body
            }
        }
    };
}

impl Backend for Store {
    type Folder = Folder;
    type Writer = Writer;
    type Reader = Reader;
    type Claim = Claim;

    fn folder(&self, rel_dir: &Path, create: bool) -> io::Result<Folder> {
        on!(self, s, B => s.folder(rel_dir, create).map(B::wrap_folder))
    }

    fn folder_making(&self, rel_dir: &Path, create: bool) -> io::Result<(Folder, Option<usize>)> {
        on!(self, s, B => s.folder_making(rel_dir, create).map(|(f, made)| (B::wrap_folder(f), made)))
    }

    fn list(&self, folder: &Folder) -> io::Result<Vec<(OsString, Kind)>> {
        on!(self, s, B => s.list(B::folder_of(folder)?))
    }

    fn look(&self, folder: &Folder, name: &Path) -> io::Result<Look> {
        on!(self, s, B => s.look(B::folder_of(folder)?, name))
    }

    fn read(&self, folder: &Folder, name: &Path) -> io::Result<Reader> {
        on!(self, s, B => s.read(B::folder_of(folder)?, name).map(B::wrap_reader))
    }

    fn create(&self, folder: &Folder, name: &Path, mode: u32) -> io::Result<Writer> {
        on!(self, s, B => s.create(B::folder_of(folder)?, name, mode).map(B::wrap_writer))
    }

    fn create_unnamed(&self, folder: &Folder, mode: u32, learned: &Learned) -> io::Result<Option<Writer>> {
        on!(self, s, B => Ok(s.create_unnamed(B::folder_of(folder)?, mode, learned)?.map(B::wrap_writer)))
    }

    fn name_unnamed(&self, w: &Writer, folder: &Folder, name: &Path) -> io::Result<()> {
        on!(self, s, B => s.name_unnamed(B::writer_of(w)?, B::folder_of(folder)?, name))
    }

    fn fill<P: Pacing>(&self, w: &Writer, src: &File, how: Fill<'_, P>) -> io::Result<(u64, Option<Hash>)> {
        on!(self, s, B => s.fill(B::writer_of(w)?, src, how))
    }

    fn stamp(&self, w: &Writer, mode: u32, mtime: Option<SystemTime>) -> io::Result<()> {
        on!(self, s, B => s.stamp(B::writer_of(w)?, mode, mtime))
    }

    fn set_mark(&self, w: &Writer, mark: &[u8], learned: &Learned) -> io::Result<()> {
        on!(self, s, B => s.set_mark(B::writer_of(w)?, mark, learned))
    }

    fn mark(&self, folder: &Folder, name: &Path) -> io::Result<Option<Vec<u8>>> {
        on!(self, s, B => s.mark(B::folder_of(folder)?, name))
    }

    fn unmark(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        on!(self, s, B => s.unmark(B::folder_of(folder)?, name))
    }

    fn flush_file(&self, w: &Writer) -> io::Result<()> {
        on!(self, s, B => s.flush_file(B::writer_of(w)?))
    }

    fn complete(&self, w: &Writer) -> io::Result<()> {
        on!(self, s, B => s.complete(B::writer_of(w)?))
    }

    fn rename(&self, from_folder: &Folder, from: &Path, to_folder: &Folder, to: &Path) -> io::Result<()> {
        on!(self, s, B => s.rename(B::folder_of(from_folder)?, from, B::folder_of(to_folder)?, to))
    }

    fn link(&self, from_folder: &Folder, from: &Path, to_folder: &Folder, to: &Path) -> io::Result<()> {
        on!(self, s, B => s.link(B::folder_of(from_folder)?, from, B::folder_of(to_folder)?, to))
    }

    fn remove_file(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        on!(self, s, B => s.remove_file(B::folder_of(folder)?, name))
    }

    fn remove_folder(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        on!(self, s, B => s.remove_folder(B::folder_of(folder)?, name))
    }

    fn flush_folder(&self, folder: &Folder) -> io::Result<()> {
        on!(self, s, B => s.flush_folder(B::folder_of(folder)?))
    }

    fn append(&self, folder: &Folder, name: &Path, mode: u32) -> io::Result<Writer> {
        on!(self, s, B => s.append(B::folder_of(folder)?, name, mode).map(B::wrap_writer))
    }

    fn write(&self, w: &Writer, bytes: &[u8]) -> io::Result<()> {
        on!(self, s, B => s.write(B::writer_of(w)?, bytes))
    }

    fn flush_named(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        on!(self, s, B => s.flush_named(B::folder_of(folder)?, name))
    }

    fn flush_all(&self, root: &Folder) -> io::Result<()> {
        on!(self, s, B => s.flush_all(B::folder_of(root)?))
    }

    fn flushes_in_background(&self) -> bool {
        on!(self, s, _B => s.flushes_in_background())
    }

    fn free_space(&self, root: &Folder) -> Option<Space> {
        on!(self, s, B => s.free_space(B::folder_of(root).ok()?))
    }

    fn locate(&self, given: &Path) -> io::Result<Located<Folder>> {
        on!(self, s, B => s.locate(given).map(|l| Located { path: l.path, id: l.id, folder: B::wrap_folder(l.folder) }))
    }

    fn whole_storage_error(&self, e: &io::Error) -> bool {
        on!(self, s, _B => s.whole_storage_error(e))
    }

    fn claim(&self, root: &Folder, who: &str) -> Result<Claim, String> {
        on!(self, s, B => s.claim(B::folder_of(root).map_err(|e| e.to_string())?, who).map(B::wrap_claim))
    }

    fn standing(&self) -> super::claim::Standing {
        on!(self, s, _B => s.standing())
    }

    fn reconfirm(&self) -> super::claim::Standing {
        on!(self, s, _B => s.reconfirm())
    }

    fn claimed(&self, folder: &Folder) -> Option<String> {
        on!(self, s, B => s.claimed(B::folder_of(folder).ok()?))
    }
}
