//! The journal of source files that `--delete-source` freed, at the destination root. It lets a
//! later verification tell "the source lost this file on purpose, after its copy was proven" from
//! "the source no longer has this file" (a stale chunk, pruned). Matched by path alone, an entry
//! would outlive its acquisition: a re-take into the same paths would keep the old run's chunks as
//! "moved". So each entry carries what the file was: the identity of the source root it left
//! (device, inode, birth time), and the file's own version (size, mtime, inode, ctime). It speaks
//! for a destination file only while the root is that folder, the copy is that version, and the
//! metadata of the array the file belongs to was not freed and then written again (metadata is
//! freed last, so an acquisition freed in part keeps it; metadata back after it was freed is a
//! re-take's).
//!
//! An entry is written, and flushed, before the deletion it announces (docs/design.md, "Freeing
//! survives a crash"): a crash or a power cut between the two leaves the file at the source as the
//! very version journaled (same inode, size, mtime, ctime), and such a file is *not* "back": only
//! a different version of freed metadata marks a re-take. No timestamp decides alone: a `touch` of
//! the metadata must never make the only copy of a freed chunk look stale. A deletion that fails
//! is recorded as `K` (kept), so the journal never vouches for a file that did not leave. A
//! journal that cannot be read is an error, never an empty journal: read as empty, it would make
//! every freed file's copy look stale. And an entry is never a reason to delete: a copy it no
//! longer vouches for because its acquisition was taken again is kept and named, not pruned.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use crate::dest::{Appending, Dest};

use crate::source::root::FolderId;
use crate::vocab::Identity;

/// The journal's name at the destination root.
pub const JOURNAL: &str = ".softcopy-moved";
/// First line of a journal with identities (older ones list bare paths; appending to one first
/// rewrites it in this format, its entries as `P` lines: path only).
const HEADER: &str = "softcopy-moved 2";

/// What a freed file was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Freed {
    root: FolderId,
    size: u64,
    mtime_ns: i64,
    /// The file's inode and ctime (entries written before they were recorded have none).
    version: Option<(u64, i64)>,
}

impl Freed {
    /// Whether `now`, a file at the source under the freed name, is the very version journaled:
    /// its deletion never happened (a crash between the journal and the unlink, or a power cut
    /// before the unlink reached the disk).
    fn is_version(&self, now: &crate::vocab::Identity) -> bool {
        self.version == Some((now.ino, now.ctime_ns)) && now.size == self.size && now.mtime_ns == self.mtime_ns
    }
}

/// What a journal entry says of a copy whose source is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vouch {
    /// The copy's source was freed from this very acquisition after the copy was proven: keep it.
    Freed,
    /// No entry speaks for this copy (none, or of another version): the usual rules apply.
    Silent,
    /// An entry names this very copy, but its acquisition's folder was replaced or taken again
    /// since: the copy may be the only one of a freed file. Kept and named, never pruned.
    Conflict,
}

/// The journal as read at the start of a verification.
#[derive(Debug, Default)]
pub struct Journal {
    /// `None`: an entry of the older format, which says nothing about the file but its path.
    freed: HashMap<PathBuf, Option<Freed>>,
    kept: HashSet<PathBuf>,
    /// Per folder at the source: its identity, and whether array metadata freed from it is back.
    folders: RefCell<HashMap<PathBuf, (Look, bool)>>,
}

use crate::end::names::{escape, unescape};

/// A source folder as looked at once per verification.
#[derive(Clone, Copy, Debug)]
enum Look {
    /// Not there: a root that is gone was the acquisition's (softcopy never removes it).
    Gone,
    Is(FolderId),
    /// The look failed: nothing is vouched for on its account.
    Unknown,
}

fn parse(line: &str) -> Option<(char, Option<Freed>, PathBuf)> {
    let (kind, rest) = line.split_at_checked(2)?;
    match kind {
        "K " => Some(('K', None, unescape(rest))),
        "P " => Some(('P', None, unescape(rest))),
        "M " => {
            // Five numbers, then the path: the rest of the line (a name may hold spaces).
            let mut f = rest.splitn(6, ' ');
            let mut n = || f.next()?.parse::<u64>().ok();
            let (rd, ri) = (n()?, n()?);
            // When it was freed: for people reading the journal, not for deciding.
            f.next()?.parse::<i64>().ok()?;
            let size = f.next()?.parse::<u64>().ok()?;
            let mtime_ns = f.next()?.parse::<i64>().ok()?;
            let rel = unescape(f.next()?);
            let root = FolderId { dev: rd, ino: ri, born: None, fs: None };
            Some(('M', Some(Freed { root, size, mtime_ns, version: None }), rel))
        }
        "F " => {
            // Eight numbers, then the path: the rest of the line (a name may hold spaces).
            let mut f = rest.splitn(9, ' ');
            let mut n = || f.next()?.parse::<i128>().ok();
            let (rd, ri, born) = (n()?, n()?, n()?);
            // When it was freed: for people reading the journal, not for deciding.
            n()?;
            let (size, mtime_ns, ino, ctime_ns) = (n()?, n()?, n()?, n()?);
            let rel = unescape(f.next()?);
            let root = FolderId {
                dev: u64::try_from(rd).ok()?,
                ino: u64::try_from(ri).ok()?,
                born: (born >= 0).then(|| i64::try_from(born).ok()).flatten(),
                fs: None,
            };
            let version = Some((u64::try_from(ino).ok()?, i64::try_from(ctime_ns).ok()?));
            let (size, mtime_ns) = (u64::try_from(size).ok()?, i64::try_from(mtime_ns).ok()?);
            Some(('F', Some(Freed { root, size, mtime_ns, version }), rel))
        }
        _ => None,
    }
}

/// A source root as `F` lines name it: device, inode, birth time.
type RootKey = (u64, u64, Option<i64>);

/// An `R` line: the filesystem identifier of a source root (device, inode, birth time) whose files
/// `F` lines name, written once per run before them, so that an entry still speaks for its copy
/// after the disk came back under another device number (a reboot). A reader that knows no `R`
/// line skips it, and compares device numbers as before.
fn parse_filesystem(line: &str) -> Option<(RootKey, u64)> {
    let rest = line.strip_prefix("R ")?;
    let mut n = rest.split(' ').map(|x| x.parse::<i128>().ok());
    let (dev, ino, born, fs) = (n.next()??, n.next()??, n.next()??, n.next()??);
    let born = (born >= 0).then(|| i64::try_from(born).ok()).flatten();
    Some(((u64::try_from(dev).ok()?, u64::try_from(ino).ok()?, born), u64::try_from(fs).ok()?))
}

/// Calls `each` with every line of the journal, and whether the journal starts with [`HEADER`]
/// (the header itself is not passed). Lines are read as bytes: a name that is not UTF-8 must not
/// end the reading, or the entries after it would be lost. No journal: no calls; any other error
/// is returned.
fn each_line(dest: &Dest, mut each: impl FnMut(bool, &str)) -> io::Result<()> {
    let f = match dest.open_file(Path::new(JOURNAL)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut versioned = None;
    for line in io::BufReader::new(f).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let line = String::from_utf8_lossy(&line);
        match versioned {
            None if line == HEADER => versioned = Some(true),
            None => {
                versioned = Some(false);
                each(false, &line);
            }
            Some(v) => each(v, &line),
        }
    }
    Ok(())
}

/// Whether the journal at `dest` has entries of the older format: its first line (as
/// [`each_line`] sees it, empty lines skipped) is not the header. Reads only that line.
fn is_old(dest: &Dest) -> io::Result<bool> {
    let mut r = match dest.open_file(Path::new(JOURNAL)) {
        Ok(f) => io::BufReader::new(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut line = Vec::new();
    while line.is_empty() {
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
    }
    Ok(line != HEADER.as_bytes())
}

impl Journal {
    /// The journal at `dest`'s root (empty if there is none; an error if it cannot be read).
    pub fn read(dest: &Dest) -> io::Result<Journal> {
        let mut j = Journal::default();
        let mut filesystems = HashMap::new();
        each_line(dest, |versioned, line| {
            if !versioned {
                j.freed.insert(PathBuf::from(line), None);
                return;
            }
            if let Some((root, fs)) = parse_filesystem(line) {
                filesystems.insert(root, fs);
                return;
            }
            match parse(line) {
                Some(('K', _, rel)) => {
                    j.kept.insert(rel);
                }
                Some((_, freed, rel)) => {
                    j.kept.remove(&rel);
                    j.freed.insert(rel, freed);
                }
                // A line cut short by a crash: it cannot speak for anything.
                None => {}
            }
        })?;
        for f in j.freed.values_mut().flatten() {
            f.root.fs = filesystems.get(&(f.root.dev, f.root.ino, f.root.born)).copied();
        }
        Ok(j)
    }

    pub fn is_empty(&self) -> bool {
        self.freed.is_empty()
    }

    /// Every name journaled as freed and not kept since: their copies are the only ones left.
    pub fn freed_names(&self) -> HashSet<PathBuf> {
        self.freed.keys().filter(|rel| !self.kept.contains(*rel)).cloned().collect()
    }

    fn folder(&self, src_root: &Path, rel: &Path) -> (Look, bool) {
        let mut known = self.folders.borrow_mut();
        *known.entry(rel.to_path_buf()).or_insert_with(|| {
            let path = src_root.join(rel);
            let id = match FolderId::of(&path) {
                Ok(id) => Look::Is(id),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Look::Gone,
                // A look that failed (a share's hiccup) is no evidence that this is the folder.
                Err(_) => Look::Unknown,
            };
            let back = [".zarray", "zarr.json"].iter().any(|name| self.is_back(&rel.join(name), &path.join(name)));
            (id, back)
        })
    }

    /// Whether freed metadata `rel` is at the source (`path`) again as a new version: a re-take's.
    /// The very version journaled is a deletion that never happened, not a re-take; a file that
    /// cannot be looked at is taken as back (the copies it would vouch for are kept either way).
    fn is_back(&self, rel: &Path, path: &Path) -> bool {
        let Some(Some(freed)) = self.freed.get(rel) else { return false };
        if self.kept.contains(rel) {
            return false;
        }
        match crate::sys::path_identity(path) {
            Ok(now) => !freed.is_version(&now),
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    /// Whether the freed file `rel` is at the source (`src_root`) again as a new version.
    pub fn returned(&self, src_root: &Path, rel: &Path) -> bool {
        self.is_back(rel, &src_root.join(rel))
    }

    /// Whether the acquisition at `src_root` was freed whole: its end `marker` journaled as freed
    /// from this very folder, and gone from it (present as the version journaled, its deletion
    /// never happened: a crash).
    pub fn freed_whole(&self, src_root: &Path, marker: &Path) -> io::Result<bool> {
        let Some(Some(f)) = self.freed.get(marker) else { return Ok(false) };
        if self.kept.contains(marker) {
            return Ok(false);
        }
        let root_same = FolderId::of(src_root).is_ok_and(|now| now.same(&f.root));
        match fs::symlink_metadata(src_root.join(marker)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(root_same),
            Err(e) => Err(e),
            Ok(_) => Ok(false),
        }
    }

    /// Array metadata freed from the acquisition at `src_root` and there again as another version:
    /// the folder holds a new acquisition (a re-take into the emptied folder), not the one copied.
    /// Data files are not asked here: a chunk journaled but never unlinked (a crash) whose ctime
    /// moved (a chmod, a link) would look new; a freed data file written anew is refused file by
    /// file instead ([`crate::dest::Dest::was_freed`]).
    pub fn retaken(&self, src_root: &Path) -> Option<PathBuf> {
        self.freed
            .keys()
            .filter(|rel| matches!(rel.file_name().and_then(|n| n.to_str()), Some(".zarray" | "zarr.json")))
            .find(|rel| self.is_back(rel, &src_root.join(rel)))
            .cloned()
    }

    /// Whether the destination file `rel` (whose metadata is `copy`), missing at `src_root`, is the
    /// copy of a file softcopy freed from the acquisition that is at `src_root` now; `array` is the
    /// folder of the Zarr array it is a chunk of, if it is one. Entries of the older format (path
    /// only) count, so that no copy whose source was freed is ever pruned on their account.
    pub fn accounts_for(&self, src_root: &Path, rel: &Path, copy: &Identity, array: Option<&Path>) -> Vouch {
        let Some(freed) = self.freed.get(rel) else { return Vouch::Silent };
        if self.kept.contains(rel) {
            return Vouch::Silent;
        }
        let Some(f) = freed else { return Vouch::Freed };
        if copy.size != f.size || !crate::vocab::same_mtime_ns(f.mtime_ns, copy.mtime_ns) {
            // Not the version freed: a later copy stands under its name.
            return Vouch::Silent;
        }
        // A root that is gone was the acquisition's (softcopy never removes it, a person may);
        // one that is there must be the very folder the file left.
        let root_same = match self.folder(src_root, Path::new("")).0 {
            Look::Gone => true,
            Look::Is(now) => now.same(&f.root),
            Look::Unknown => false,
        };
        let retaken = array.is_some_and(|a| self.folder(src_root, a).1);
        if root_same && !retaken {
            Vouch::Freed
        } else {
            Vouch::Conflict
        }
    }
}

/// The journal's last byte, where it has `len` bytes (more than none).
fn last_byte(dest: &Dest, len: u64) -> io::Result<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = dest.open_file(Path::new(JOURNAL))?;
    file.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8];
    file.read_exact(&mut b)?;
    Ok(b[0])
}

/// Appends to the journal at a destination root.
pub struct Writer<'a> {
    file: Appending<'a>,
    root: FolderId,
    /// The `R` line for `root` is written (once, before this run's first `F` line).
    said_filesystem: bool,
}

impl<'a> Writer<'a> {
    /// Opens (or starts) the journal at `dest`'s root for files freed from `src_root`. A journal of
    /// the older format is first rewritten in this one (its entries kept, as paths only): lines of
    /// this format appended to it would be read as bare paths, and the files they name, freed but
    /// unaccounted for, would have their only copies pruned.
    pub fn open(dest: &'a Dest, src_root: &Path) -> io::Result<Writer<'a>> {
        if is_old(dest)? {
            let mut out = Vec::new();
            writeln!(out, "{HEADER}")?;
            each_line(dest, |_, rel| {
                let _ = writeln!(out, "P {}", escape(Path::new(rel)));
            })?;
            dest.write_file(Path::new(JOURNAL), Path::new(&format!("{JOURNAL}.new")), &out)?;
        }
        let len = match dest.stat(Path::new(JOURNAL)) {
            Ok(look) => look.ident.size,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let last = if len == 0 { None } else { Some(last_byte(dest, len)?) };
        let mut file = dest.append_file(Path::new(JOURNAL))?;
        match last {
            None => file.write(format!("{HEADER}\n").as_bytes())?,
            // A line cut short by a crash: the next entry must not be glued onto it (unreadable,
            // it would vouch for nothing, and the file it names would lose its only copy).
            Some(b) if b != b'\n' => file.write(b"\n")?,
            Some(_) => {}
        }
        let root = FolderId::of(src_root)?;
        Ok(Writer { file, root, said_filesystem: false })
    }

    /// Records, durably, that these files are about to be deleted (before any of them is).
    pub fn freeing(&mut self, files: &[&crate::vocab::Copied]) -> io::Result<()> {
        let (r, at) = (self.root, crate::vocab::now_ns());
        let born = r.born.unwrap_or(-1);
        let mut lines = String::new();
        if let Some(fs) = r.fs.filter(|_| !std::mem::replace(&mut self.said_filesystem, true)) {
            lines.push_str(&format!("R {} {} {born} {fs}\n", r.dev, r.ino));
        }
        for c in files {
            let i = &c.ident;
            let line = format!(
                "F {} {} {born} {at} {} {} {} {} {}\n",
                r.dev,
                r.ino,
                i.size,
                i.mtime_ns,
                i.ino,
                i.ctime_ns,
                escape(&c.rel)
            );
            lines.push_str(&line);
        }
        self.file.write(lines.as_bytes())?;
        self.file.flush()
    }

    /// Records that these files, journaled as freed, were not deleted after all.
    pub fn not_freed(&mut self, files: &[PathBuf]) -> io::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let lines: String = files.iter().map(|rel| format!("K {}\n", escape(rel))).collect();
        self.file.write(lines.as_bytes())?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::identity;

    #[cfg(unix)]
    #[test]
    fn a_source_root_that_cannot_be_looked_at_vouches_for_nothing() {
        // Gone, the root was the acquisition's (softcopy never removes it); a look that fails (here
        // a loop of links on the way, ELOOP; a share's hiccup alike) is no evidence of anything.
        let (base, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join("c0"), "chunk").unwrap();
        let copy = fs::metadata(dst.path().join("c0")).unwrap();
        let ns = identity_ns(&copy);
        let entry = format!("{HEADER}\nM 1 2 0 5 {ns} c0\n");
        fs::write(dst.path().join(JOURNAL), entry).unwrap();
        let vouch = |src: &Path| {
            Journal::read(&Dest::at(dst.path())).unwrap().accounts_for(src, Path::new("c0"), &identity(&copy), None)
        };
        assert_eq!(vouch(&base.path().join("gone")), Vouch::Freed);
        std::os::unix::fs::symlink("loop", base.path().join("loop")).unwrap();
        assert_eq!(vouch(&base.path().join("loop/acq")), Vouch::Conflict);
    }

    #[test]
    fn only_metadata_that_was_freed_and_is_back_marks_a_retake() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join("c0"), "chunk").unwrap();
        let copy = fs::metadata(dst.path().join("c0")).unwrap();
        let (root, ns) = (FolderId::of(src.path()).unwrap(), identity_ns(&copy));
        let entry = |rel: &str| format!("M {} {} 0 5 {ns} {rel}\n", root.dev, root.ino);
        // Freed in part: the metadata stayed (and was touched since): the entry still speaks.
        fs::write(src.path().join("zarr.json"), "{}").unwrap();
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\n{}", entry("c0"))).unwrap();
        let vouch = |j: Journal| j.accounts_for(src.path(), Path::new("c0"), &identity(&copy), Some(Path::new("")));
        assert_eq!(vouch(Journal::read(&Dest::at(dst.path())).unwrap()), Vouch::Freed);
        // Freed whole, then metadata again: another acquisition; the old chunk is not vouched for.
        // The chunk's copy is kept and named, never pruned on the journal's account.
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\n{}{}", entry("c0"), entry("zarr.json"))).unwrap();
        assert_eq!(vouch(Journal::read(&Dest::at(dst.path())).unwrap()), Vouch::Conflict);
        // ...unless that metadata's deletion had failed.
        let kept = format!("{HEADER}\n{}{}K zarr.json\n", entry("c0"), entry("zarr.json"));
        fs::write(dst.path().join(JOURNAL), kept).unwrap();
        assert_eq!(vouch(Journal::read(&Dest::at(dst.path())).unwrap()), Vouch::Freed);
    }

    #[test]
    fn metadata_journaled_but_never_deleted_is_no_retake() {
        // A crash (or a power cut) between the journal line and the unlink leaves the metadata at
        // the source as the very version journaled: its array's freed chunks are still vouched for.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join("c0"), "chunk").unwrap();
        let copy = fs::metadata(dst.path().join("c0")).unwrap();
        fs::write(src.path().join("c0"), "chunk").unwrap();
        fs::File::open(src.path().join("c0")).unwrap().set_modified(copy.modified().unwrap()).unwrap();
        fs::write(src.path().join("zarr.json"), "{}").unwrap();
        let version = |rel: &str| {
            let ident = crate::sys::path_identity(&src.path().join(rel)).unwrap();
            crate::vocab::Copied { rel: PathBuf::from(rel), ident, hash: None }
        };
        let (chunk, meta) = (version("c0"), version("zarr.json"));
        let d = Dest::at(dst.path());
        let mut w = Writer::open(&d, src.path()).unwrap();
        w.freeing(&[&chunk]).unwrap();
        fs::remove_file(src.path().join("c0")).unwrap();
        w.freeing(&[&meta]).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.accounts_for(src.path(), Path::new("c0"), &identity(&copy), Some(Path::new(""))), Vouch::Freed);
        assert_eq!(j.retaken(src.path()), None);
        // Written again (a re-take): another version.
        fs::remove_file(src.path().join("zarr.json")).unwrap();
        fs::write(src.path().join("zarr.json"), "{ }").unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.accounts_for(src.path(), Path::new("c0"), &identity(&copy), Some(Path::new(""))), Vouch::Conflict);
        assert_eq!(j.retaken(src.path()), Some(PathBuf::from("zarr.json")));
    }

    #[test]
    fn a_freed_chunk_written_again_is_another_version_and_its_name_stays_freed() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(src.path().join("c0"), "chunk").unwrap();
        let ident = crate::sys::path_identity(&src.path().join("c0")).unwrap();
        let d = Dest::at(dst.path());
        let mut w = Writer::open(&d, src.path()).unwrap();
        w.freeing(&[&crate::vocab::Copied { rel: PathBuf::from("c0"), ident, hash: None }]).unwrap();
        fs::remove_file(src.path().join("c0")).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.retaken(src.path()), None, "freed and gone: no new take");
        assert!(j.freed_names().contains(Path::new("c0")));
        fs::write(src.path().join("c0"), "another take's").unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert!(j.returned(src.path(), Path::new("c0")), "back as another version");
        assert!(j.freed_names().contains(Path::new("c0")), "its copy is still the freed one's");
    }

    fn identity_ns(m: &fs::Metadata) -> i64 {
        crate::vocab::identity(m).mtime_ns
    }

    #[test]
    fn names_with_spaces_and_a_torn_tail_are_read_back_whole() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir(src.path().join("Pos 0")).unwrap();
        let rel = "Pos 0/c 1";
        fs::write(src.path().join(rel), "chunk").unwrap();
        let ident = crate::sys::path_identity(&src.path().join(rel)).unwrap();
        let freed = crate::vocab::Copied { rel: PathBuf::from(rel), ident, hash: None };
        // A crash left half a line behind.
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\nF 1 2 3")).unwrap();
        Writer::open(&Dest::at(dst.path()), src.path()).unwrap().freeing(&[&freed]).unwrap();
        fs::create_dir(dst.path().join("Pos 0")).unwrap();
        fs::copy(src.path().join(rel), dst.path().join(rel)).unwrap();
        let copy = fs::File::open(dst.path().join(rel)).unwrap();
        copy.set_modified(fs::metadata(src.path().join(rel)).unwrap().modified().unwrap()).unwrap();
        fs::remove_file(src.path().join(rel)).unwrap();
        let meta = fs::metadata(dst.path().join(rel)).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.accounts_for(src.path(), Path::new(rel), &identity(&meta), None), Vouch::Freed);
    }

    #[test]
    fn a_journal_of_bare_paths_still_keeps_its_copies() {
        let dst = tempfile::tempdir().unwrap();
        fs::write(dst.path().join(JOURNAL), "a/0\n").unwrap();
        fs::write(dst.path().join("x"), "1").unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        let meta = fs::metadata(dst.path().join("x")).unwrap();
        assert_eq!(j.accounts_for(Path::new("/nonexistent"), Path::new("a/0"), &identity(&meta), None), Vouch::Freed);
    }

    #[test]
    fn appending_to_a_journal_of_bare_paths_keeps_both_readable() {
        // Entries of this format appended to an old journal were read as bare paths: the files
        // they named were freed but unaccounted for, and their only copies looked stale.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join(JOURNAL), "a/0\n").unwrap();
        fs::write(src.path().join("b"), "chunk").unwrap();
        let ident = crate::vocab::identity(&fs::metadata(src.path().join("b")).unwrap());
        let freed = crate::vocab::Copied { rel: PathBuf::from("b"), ident, hash: None };
        let d = Dest::at(dst.path());
        let mut w = Writer::open(&d, src.path()).unwrap();
        w.freeing(&[&freed]).unwrap();
        fs::copy(src.path().join("b"), dst.path().join("b")).unwrap();
        let copy = fs::File::open(dst.path().join("b")).unwrap();
        copy.set_modified(fs::metadata(src.path().join("b")).unwrap().modified().unwrap()).unwrap();
        fs::remove_file(src.path().join("b")).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        let meta = fs::metadata(dst.path().join("b")).unwrap();
        assert_eq!(
            j.accounts_for(src.path(), Path::new("b"), &identity(&meta), None),
            Vouch::Freed,
            "the new entry speaks"
        );
        assert_eq!(
            j.accounts_for(src.path(), Path::new("a/0"), &identity(&meta), None),
            Vouch::Freed,
            "the old one still does"
        );
    }

    #[test]
    fn a_journal_that_cannot_be_read_is_an_error_not_an_empty_journal() {
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir(dst.path().join(JOURNAL)).unwrap();
        assert!(Journal::read(&Dest::at(dst.path())).is_err());
        fs::remove_dir(dst.path().join(JOURNAL)).unwrap();
        assert!(Journal::read(&Dest::at(dst.path())).unwrap().is_empty());
    }

    /// A source with `files` (each "bytes"), all copied, journaled as freed and deleted; the
    /// journal as read back.
    fn freed(src: &Path, dst: &Path, files: &[&str]) -> Vec<crate::vocab::Copied> {
        let d = Dest::at(dst);
        let mut w = Writer::open(&d, src).unwrap();
        let versions: Vec<_> = files
            .iter()
            .map(|rel| {
                fs::write(src.join(rel), "bytes").unwrap();
                fs::copy(src.join(rel), dst.join(rel)).unwrap();
                let mtime = fs::metadata(src.join(rel)).unwrap().modified().unwrap();
                fs::File::options().write(true).open(dst.join(rel)).unwrap().set_modified(mtime).unwrap();
                let ident = crate::sys::path_identity(&src.join(rel)).unwrap();
                crate::vocab::Copied { rel: PathBuf::from(rel), ident, hash: None }
            })
            .collect();
        w.freeing(&versions.iter().collect::<Vec<_>>()).unwrap();
        for rel in files {
            fs::remove_file(src.join(rel)).unwrap();
        }
        versions
    }

    #[test]
    fn a_deletion_that_failed_vouches_for_nothing() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        freed(src.path(), dst.path(), &["c0", "c1"]);
        Writer::open(&Dest::at(dst.path()), src.path()).unwrap().not_freed(&[PathBuf::from("c1")]).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.freed_names(), HashSet::from([PathBuf::from("c0")]));
        let vouch = |rel: &str| {
            j.accounts_for(src.path(), Path::new(rel), &identity(&fs::metadata(dst.path().join(rel)).unwrap()), None)
        };
        assert_eq!((vouch("c0"), vouch("c1")), (Vouch::Freed, Vouch::Silent));
        // A later freeing of the same name speaks again.
        freed(src.path(), dst.path(), &["c1"]);
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.freed_names().len(), 2);
    }

    #[test]
    fn a_copy_of_another_version_or_from_another_root_is_not_vouched_for() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        freed(src.path(), dst.path(), &["c0", "c1"]);
        // c0's copy was written again since (another size); c1's copy has another mtime.
        fs::write(dst.path().join("c0"), "other bytes").unwrap();
        let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        fs::File::options().write(true).open(dst.path().join("c1")).unwrap().set_modified(earlier).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        let vouch = |root: &Path, rel: &str| {
            j.accounts_for(root, Path::new(rel), &identity(&fs::metadata(dst.path().join(rel)).unwrap()), None)
        };
        assert_eq!((vouch(src.path(), "c0"), vouch(src.path(), "c1")), (Vouch::Silent, Vouch::Silent));
        // Another folder at the source's name: the copy may be the only one of a freed file.
        let (src2, dst2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        freed(src2.path(), dst2.path(), &["c0"]);
        let meta = fs::metadata(dst2.path().join("c0")).unwrap();
        // A journal is read for one source root (what it finds there is kept).
        let vouch = |root: &Path| {
            Journal::read(&Dest::at(dst2.path())).unwrap().accounts_for(root, Path::new("c0"), &identity(&meta), None)
        };
        assert_eq!(vouch(src.path()), Vouch::Conflict);
        assert_eq!(vouch(src2.path()), Vouch::Freed);
        assert_eq!(vouch(&src2.path().join("gone")), Vouch::Freed, "a root gone was this one");
    }

    #[test]
    // Windows reports a path under a file as not found (ERROR_PATH_NOT_FOUND), not ENOTDIR.
    #[cfg_attr(windows, ignore)]
    fn an_acquisition_is_freed_whole_once_its_marker_left_this_very_folder() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let marker = Path::new("complete");
        assert!(!Journal::read(&Dest::at(dst.path())).unwrap().freed_whole(src.path(), marker).unwrap(), "no journal");
        freed(src.path(), dst.path(), &["c0"]);
        assert!(!Journal::read(&Dest::at(dst.path())).unwrap().freed_whole(src.path(), marker).unwrap(), "data only");
        freed(src.path(), dst.path(), &["complete"]);
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert!(j.freed_whole(src.path(), marker).unwrap());
        let other = tempfile::tempdir().unwrap();
        assert!(!j.freed_whole(other.path(), marker).unwrap(), "another folder");
        fs::write(src.path().join("complete"), "a new take's").unwrap();
        assert!(!j.freed_whole(src.path(), marker).unwrap(), "a marker there again");
        fs::remove_file(src.path().join("complete")).unwrap();
        Writer::open(&Dest::at(dst.path()), src.path()).unwrap().not_freed(&[marker.to_path_buf()]).unwrap();
        assert!(
            !Journal::read(&Dest::at(dst.path())).unwrap().freed_whole(src.path(), marker).unwrap(),
            "kept after all"
        );
        // A marker that cannot be looked at is no answer.
        fs::write(src.path().join("file"), "").unwrap();
        assert!(j.freed_whole(&src.path().join("file"), marker).is_err());
    }

    #[test]
    // Windows reports a path under a file as not found (ERROR_PATH_NOT_FOUND), not ENOTDIR.
    #[cfg_attr(windows, ignore)]
    fn what_cannot_be_looked_at_is_never_taken_as_absent() {
        // An unreadable journal read as empty would make every freed file's copy look stale; freed
        // metadata that cannot be looked at is taken as back (its array's copies are kept).
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join("file"), "").unwrap();
        assert!(Journal::read(&Dest::at(&dst.path().join("file"))).is_err());
        assert!(is_old(&Dest::at(&dst.path().join("file"))).is_err());
        fs::create_dir(src.path().join("a")).unwrap();
        fs::create_dir(dst.path().join("a")).unwrap();
        freed(src.path(), dst.path(), &["a/zarr.json"]);
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert!(!j.is_empty());
        assert!(!j.returned(src.path(), Path::new("a/zarr.json")), "gone: not back");
        fs::remove_dir(src.path().join("a")).unwrap();
        fs::write(src.path().join("a"), "a file where the folder was").unwrap();
        assert!(j.returned(src.path(), Path::new("a/zarr.json")), "cannot be looked at: taken as back");
    }

    #[test]
    fn a_new_journal_starts_with_its_header_and_blank_lines_are_skipped() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        Writer::open(&Dest::at(dst.path()), src.path()).unwrap();
        assert_eq!(fs::read_to_string(dst.path().join(JOURNAL)).unwrap(), format!("{HEADER}\n"));
        assert!(!is_old(&Dest::at(dst.path())).unwrap());
        // A header after blank lines is still the header: nothing is rewritten.
        fs::write(dst.path().join(JOURNAL), format!("\n\n{HEADER}\nK x\n")).unwrap();
        assert!(!is_old(&Dest::at(dst.path())).unwrap());
        Writer::open(&Dest::at(dst.path()), src.path()).unwrap();
        assert_eq!(fs::read_to_string(dst.path().join(JOURNAL)).unwrap(), format!("\n\n{HEADER}\nK x\n"));
        fs::write(dst.path().join(JOURNAL), "\n\n").unwrap();
        assert!(!is_old(&Dest::at(dst.path())).unwrap(), "nothing but blank lines");
    }

    #[test]
    fn entries_of_every_format_are_read_and_a_root_without_birth_time_matches_any() {
        let parsed = parse("F 1 2 -1 9 5 6 7 8 a b").unwrap();
        let root = FolderId { dev: 1, ino: 2, born: None, fs: None };
        assert_eq!(
            parsed,
            ('F', Some(Freed { root, size: 5, mtime_ns: 6, version: Some((7, 8)) }), PathBuf::from("a b"))
        );
        let born = parse("F 1 2 0 9 5 6 7 8 a").unwrap().1.unwrap().root.born;
        assert_eq!(born, Some(0));
        let parsed = parse("M 1 2 9 5 6 a b").unwrap();
        assert_eq!(parsed, ('M', Some(Freed { root, size: 5, mtime_ns: 6, version: None }), PathBuf::from("a b")));
        assert_eq!(parse("K a b"), Some(('K', None, PathBuf::from("a b"))));
        assert_eq!(parse("P a b"), Some(('P', None, PathBuf::from("a b"))));
        for torn in ["F 1 2 3", "M 1 2", "X a", "F", "F -1 2 0 9 5 6 7 8 a"] {
            assert_eq!(parse(torn), None, "{torn}");
        }
        let version = crate::vocab::Identity { dev: 9, ino: 7, size: 5, mtime_ns: 6, ctime_ns: 8 };
        let f = parsed.1.unwrap();
        assert!(!f.is_version(&version), "no version recorded: never the very file");
        let f = Freed { version: Some((7, 8)), ..f };
        assert!(f.is_version(&version));
        for other in [
            crate::vocab::Identity { size: 4, ..version },
            crate::vocab::Identity { mtime_ns: 5, ..version },
            crate::vocab::Identity { ino: 1, ..version },
        ] {
            assert!(!f.is_version(&other), "{other:?}");
        }
    }

    #[test]
    fn a_root_without_a_birth_time_is_read_back_without_one() {
        // Written as -1: read back as a birth time, it would tell this very folder from itself
        // once the filesystem reports one.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let d = Dest::at(dst.path());
        let mut w = Writer::open(&d, src.path()).unwrap();
        w.root.born = None;
        fs::write(src.path().join("c0"), "chunk").unwrap();
        let ident = crate::sys::path_identity(&src.path().join("c0")).unwrap();
        w.freeing(&[&crate::vocab::Copied { rel: PathBuf::from("c0"), ident, hash: None }]).unwrap();
        let j = Journal::read(&Dest::at(dst.path())).unwrap();
        assert_eq!(j.freed[Path::new("c0")].map(|f| f.root.born), Some(None));
    }
}
