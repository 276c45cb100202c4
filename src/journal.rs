//! The journal of source files that `--delete-source` freed, at the destination root. It lets a
//! later verification tell "the source lost this file on purpose, after its copy was proven" from
//! "the source no longer has this file" (a stale chunk, pruned). Matched by path alone, an entry
//! would outlive its acquisition: a re-take into the same paths would keep the old run's chunks as
//! "moved" (issue 12, item 6). So each entry carries what the file was: the identity of the source
//! root it left, and its size and mtime. It speaks for a destination file only while the root is
//! that folder (not deleted and recreated), the copy is that version, and the metadata of the
//! array the file belongs to was not freed and then written again (metadata is freed last, so an
//! acquisition freed in part keeps it; metadata back after it was freed is a re-take's). No
//! timestamp decides: a `touch` or `chmod` of the metadata must never make the only copy of a freed
//! chunk look stale. An entry is written before the deletion (a crash between the two must not
//! leave a freed file unaccounted for, which would get its only copy pruned), and a deletion that
//! then fails is recorded as `K` (kept), so the journal never vouches for a file that did not
//! leave (item 7). A journal that cannot be read is an error, never an empty journal: read as
//! empty, it would make every freed file's copy look stale.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// The journal's name at the destination root.
pub const JOURNAL: &str = ".softcopy-moved";
/// First line of a journal with identities (older ones list bare paths; appending to one first
/// rewrites it in this format, its entries as `P` lines: path only).
const HEADER: &str = "softcopy-moved 2";

type DevIno = (u64, u64);

/// What a freed file was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Freed {
    root: DevIno,
    size: u64,
    mtime_ns: i64,
}

/// The journal as read at the start of a verification.
#[derive(Debug, Default)]
pub struct Journal {
    /// `None`: an entry of the older format, which says nothing about the file but its path.
    freed: HashMap<PathBuf, Option<Freed>>,
    kept: HashSet<PathBuf>,
    /// Per folder at the source: its identity, and whether array metadata freed from it is back.
    folders: RefCell<HashMap<PathBuf, (Option<DevIno>, bool)>>,
}

/// A folder's device and inode (volume serial and file index on Windows): a folder of the same
/// name made later is another folder.
fn dev_ino(path: &Path) -> io::Result<DevIno> {
    let id = crate::sys::path_identity(path)?;
    Ok((id.dev, id.ino))
}

use crate::names::{escape, unescape};

fn parse(line: &str) -> Option<(char, Option<Freed>, PathBuf)> {
    let (kind, rest) = line.split_at_checked(2)?;
    match kind {
        "K " => Some(('K', None, unescape(rest))),
        "P " => Some(('P', None, unescape(rest))),
        "M " => {
            let mut f = rest.splitn(7, ' ');
            let mut n = || f.next()?.parse::<u64>().ok();
            let (rd, ri) = (n()?, n()?);
            // When it was freed: for people reading the journal, not for deciding.
            f.next()?.parse::<i64>().ok()?;
            let size = f.next()?.parse::<u64>().ok()?;
            let mtime_ns = f.next()?.parse::<i64>().ok()?;
            let rel = unescape(f.next()?);
            Some(('M', Some(Freed { root: (rd, ri), size, mtime_ns }), rel))
        }
        _ => None,
    }
}

/// Calls `each` with every line of the journal, and whether the journal starts with [`HEADER`]
/// (the header itself is not passed). Lines are read as bytes: a name that is not UTF-8 must not
/// end the reading, or the entries after it would be lost. No journal: no calls; any other error
/// is returned.
fn each_line(path: &Path, mut each: impl FnMut(bool, &str)) -> io::Result<()> {
    let f = match File::open(path) {
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

/// Whether the journal at `path` has entries of the older format: its first line (as
/// [`each_line`] sees it, empty lines skipped) is not the header. Reads only that line.
fn is_old(path: &Path) -> io::Result<bool> {
    let mut r = match File::open(path) {
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
    /// The journal at `dst_root` (empty if there is none; an error if it cannot be read).
    pub fn read(dst_root: &Path) -> io::Result<Journal> {
        let mut j = Journal::default();
        each_line(&dst_root.join(JOURNAL), |versioned, line| {
            if !versioned {
                j.freed.insert(PathBuf::from(line), None);
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
        Ok(j)
    }

    pub fn is_empty(&self) -> bool {
        self.freed.is_empty()
    }

    fn folder(&self, src_root: &Path, rel: &Path) -> (Option<DevIno>, bool) {
        let mut known = self.folders.borrow_mut();
        *known.entry(rel.to_path_buf()).or_insert_with(|| {
            let path = src_root.join(rel);
            let id = dev_ino(&path).ok();
            let back = [".zarray", "zarr.json"].iter().any(|name| {
                let meta = rel.join(name);
                matches!(self.freed.get(&meta), Some(Some(_))) && !self.kept.contains(&meta) && path.join(name).exists()
            });
            (id, back)
        })
    }

    /// Whether the destination file `rel` (whose metadata is `copy`), missing at `src_root`, is the
    /// copy of a file softcopy freed from the acquisition that is at `src_root` now; `array` is the
    /// folder of the Zarr array it is a chunk of, if it is one. Entries of the older format (path
    /// only) count, so that no copy whose source was freed is ever pruned on their account.
    pub fn accounts_for(&self, src_root: &Path, rel: &Path, copy: &fs::Metadata, array: Option<&Path>) -> bool {
        let Some(freed) = self.freed.get(rel) else { return false };
        if self.kept.contains(rel) {
            return false;
        }
        let Some(f) = freed else { return true };
        // A root that is gone was the acquisition's (softcopy never removes it, a person may);
        // one that is there must be the very folder the file left.
        let root_same = self.folder(src_root, Path::new("")).0.is_none_or(|now| now == f.root);
        let retaken = array.is_some_and(|a| self.folder(src_root, a).1);
        let copy_ns = crate::vocab::identity(copy).mtime_ns;
        root_same && !retaken && copy.len() == f.size && crate::verify::same_mtime_ns(f.mtime_ns, copy_ns)
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Appends to the journal at a destination root.
pub struct Writer {
    file: File,
    root: DevIno,
}

impl Writer {
    /// Opens (or starts) the journal at `dst_root` for files freed from `src_root`. A journal of
    /// the older format is first rewritten in this one (its entries kept, as paths only): lines of
    /// this format appended to it would be read as bare paths, and the files they name, freed but
    /// unaccounted for, would have their only copies pruned.
    pub fn open(dst_root: &Path, src_root: &Path) -> io::Result<Writer> {
        let path = dst_root.join(JOURNAL);
        if is_old(&path)? {
            let tmp = dst_root.join(format!("{JOURNAL}.new"));
            let mut out = io::BufWriter::new(File::create(&tmp)?);
            writeln!(out, "{HEADER}")?;
            let mut written = Ok(());
            each_line(&path, |_, rel| {
                if written.is_ok() {
                    written = writeln!(out, "P {}", escape(Path::new(rel)));
                }
            })?;
            written?;
            out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
            fs::rename(&tmp, &path)?;
            #[cfg(unix)]
            File::open(dst_root)?.sync_all()?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        if file.metadata()?.len() == 0 {
            writeln!(file, "{HEADER}")?;
        }
        let root = dev_ino(src_root)?;
        Ok(Writer { file, root })
    }

    /// Records, durably, that these files are about to be deleted (before any of them is).
    pub fn freeing(&mut self, files: &[&crate::vocab::Copied]) -> io::Result<()> {
        let (r, at) = (self.root, now_ns());
        let mut lines = String::new();
        for c in files {
            let line = format!("M {} {} {at} {} {} {}\n", r.0, r.1, c.ident.size, c.ident.mtime_ns, escape(&c.rel));
            lines.push_str(&line);
        }
        self.file.write_all(lines.as_bytes())?;
        self.file.sync_data()
    }

    /// Records that these files, journaled as freed, were not deleted after all.
    pub fn not_freed(&mut self, files: &[PathBuf]) -> io::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let lines: String = files.iter().map(|rel| format!("K {}\n", escape(rel))).collect();
        self.file.write_all(lines.as_bytes())?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_that_was_freed_and_is_back_marks_a_retake() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join("c0"), "chunk").unwrap();
        let copy = fs::metadata(dst.path().join("c0")).unwrap();
        let (root, ns) = (dev_ino(src.path()).unwrap(), identity_ns(&copy));
        let entry = |rel: &str| format!("M {} {} 0 5 {ns} {rel}\n", root.0, root.1);
        // Freed in part: the metadata stayed (and was touched since): the entry still speaks.
        fs::write(src.path().join("zarr.json"), "{}").unwrap();
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\n{}", entry("c0"))).unwrap();
        assert!(Journal::read(dst.path()).unwrap().accounts_for(
            src.path(),
            Path::new("c0"),
            &copy,
            Some(Path::new(""))
        ));
        // Freed whole, then metadata again: another acquisition; the old chunk is not vouched for.
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\n{}{}", entry("c0"), entry("zarr.json"))).unwrap();
        assert!(!Journal::read(dst.path()).unwrap().accounts_for(
            src.path(),
            Path::new("c0"),
            &copy,
            Some(Path::new(""))
        ));
        // ...unless that metadata's deletion had failed.
        let kept = format!("{HEADER}\n{}{}K zarr.json\n", entry("c0"), entry("zarr.json"));
        fs::write(dst.path().join(JOURNAL), kept).unwrap();
        assert!(Journal::read(dst.path()).unwrap().accounts_for(
            src.path(),
            Path::new("c0"),
            &copy,
            Some(Path::new(""))
        ));
    }

    fn identity_ns(m: &fs::Metadata) -> i64 {
        crate::vocab::identity(m).mtime_ns
    }

    #[test]
    fn a_journal_of_bare_paths_still_keeps_its_copies() {
        let dst = tempfile::tempdir().unwrap();
        fs::write(dst.path().join(JOURNAL), "a/0\n").unwrap();
        fs::write(dst.path().join("x"), "1").unwrap();
        let j = Journal::read(dst.path()).unwrap();
        let meta = fs::metadata(dst.path().join("x")).unwrap();
        assert!(j.accounts_for(Path::new("/nonexistent"), Path::new("a/0"), &meta, None));
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
        let mut w = Writer::open(dst.path(), src.path()).unwrap();
        w.freeing(&[&freed]).unwrap();
        fs::copy(src.path().join("b"), dst.path().join("b")).unwrap();
        let copy = fs::File::open(dst.path().join("b")).unwrap();
        copy.set_modified(fs::metadata(src.path().join("b")).unwrap().modified().unwrap()).unwrap();
        fs::remove_file(src.path().join("b")).unwrap();
        let j = Journal::read(dst.path()).unwrap();
        let meta = fs::metadata(dst.path().join("b")).unwrap();
        assert!(j.accounts_for(src.path(), Path::new("b"), &meta, None), "the new entry speaks");
        assert!(j.accounts_for(src.path(), Path::new("a/0"), &meta, None), "the old one still does");
    }

    #[test]
    fn a_journal_that_cannot_be_read_is_an_error_not_an_empty_journal() {
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir(dst.path().join(JOURNAL)).unwrap();
        assert!(Journal::read(dst.path()).is_err());
        fs::remove_dir(dst.path().join(JOURNAL)).unwrap();
        assert!(Journal::read(dst.path()).unwrap().is_empty());
    }
}
