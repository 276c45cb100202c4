//! The journal of source files that `--delete-source` freed, at the destination root. It lets a
//! later verification tell "the source lost this file on purpose, after its copy was proven" from
//! "the source no longer has this file" (a stale chunk, pruned). Matched by path alone, an entry
//! would outlive its acquisition: a re-take into the same paths would keep the old run's chunks as
//! "moved" (issue 12, item 6). So each entry carries what the file was: the identity of the source
//! root and of its folder when it was freed, and its size and mtime; it speaks for a destination
//! file only while all of them still fit. An entry is written before the deletion (a crash between
//! the two must not leave a freed file unaccounted for, which would get its only copy pruned), and
//! a deletion that then fails is recorded as `K` (kept), so the journal never vouches for a file
//! that did not leave (item 7).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// The journal's name at the destination root.
pub const JOURNAL: &str = ".softcopy-moved";
/// First line of a journal with identities (older ones list bare paths).
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

fn dev_ino(m: &fs::Metadata) -> DevIno {
    let id = crate::vocab::identity(m);
    (id.dev, id.ino)
}

// Names are written with `\` and newline escaped: one entry per line whatever the name.
fn escape(rel: &Path) -> String {
    rel.to_string_lossy().replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(s: &str) -> PathBuf {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    PathBuf::from(out)
}

fn parse(line: &str) -> Option<(char, Option<Freed>, PathBuf)> {
    let (kind, rest) = line.split_at_checked(2)?;
    match kind {
        "K " => Some(('K', None, unescape(rest))),
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

impl Journal {
    /// The journal at `dst_root` (empty if there is none).
    pub fn read(dst_root: &Path) -> Journal {
        let mut j = Journal::default();
        let Ok(f) = File::open(dst_root.join(JOURNAL)) else { return j };
        let mut lines = io::BufReader::new(f).lines().map_while(Result::ok).filter(|l| !l.is_empty()).peekable();
        let versioned = lines.next_if(|l| l == HEADER).is_some();
        for line in lines {
            if !versioned {
                j.freed.insert(PathBuf::from(line), None);
                continue;
            }
            match parse(&line) {
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
        }
        j
    }

    pub fn is_empty(&self) -> bool {
        self.freed.is_empty()
    }

    fn folder(&self, src_root: &Path, rel: &Path) -> (Option<DevIno>, bool) {
        let mut known = self.folders.borrow_mut();
        *known.entry(rel.to_path_buf()).or_insert_with(|| {
            let path = src_root.join(rel);
            let id = fs::symlink_metadata(&path).ok().map(|m| dev_ino(&m));
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
    /// Opens (or starts) the journal at `dst_root` for files freed from `src_root`.
    pub fn open(dst_root: &Path, src_root: &Path) -> io::Result<Writer> {
        let path = dst_root.join(JOURNAL);
        let fresh = fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        if fresh {
            writeln!(file, "{HEADER}")?;
        }
        let root = dev_ino(&fs::symlink_metadata(src_root)?);
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
    fn names_with_newlines_and_backslashes_survive() {
        for name in ["a\nb", "a\\nb", "c\\", "plain/0/1"] {
            assert_eq!(unescape(&escape(Path::new(name))), PathBuf::from(name));
        }
    }

    #[test]
    fn only_metadata_that_was_freed_and_is_back_marks_a_retake() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(dst.path().join("c0"), "chunk").unwrap();
        let copy = fs::metadata(dst.path().join("c0")).unwrap();
        let (root, ns) = (dev_ino(&fs::symlink_metadata(src.path()).unwrap()), identity_ns(&copy));
        let entry = |rel: &str| format!("M {} {} 0 5 {ns} {rel}\n", root.0, root.1);
        // Freed in part: the metadata stayed (and was touched since): the entry still speaks.
        fs::write(src.path().join("zarr.json"), "{}").unwrap();
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\n{}", entry("c0"))).unwrap();
        assert!(Journal::read(dst.path()).accounts_for(src.path(), Path::new("c0"), &copy, Some(Path::new(""))));
        // Freed whole, then metadata again: another acquisition; the old chunk is not vouched for.
        fs::write(dst.path().join(JOURNAL), format!("{HEADER}\n{}{}", entry("c0"), entry("zarr.json"))).unwrap();
        assert!(!Journal::read(dst.path()).accounts_for(src.path(), Path::new("c0"), &copy, Some(Path::new(""))));
        // ...unless that metadata's deletion had failed.
        let kept = format!("{HEADER}\n{}{}K zarr.json\n", entry("c0"), entry("zarr.json"));
        fs::write(dst.path().join(JOURNAL), kept).unwrap();
        assert!(Journal::read(dst.path()).accounts_for(src.path(), Path::new("c0"), &copy, Some(Path::new(""))));
    }

    fn identity_ns(m: &fs::Metadata) -> i64 {
        crate::vocab::identity(m).mtime_ns
    }

    #[test]
    fn a_journal_of_bare_paths_still_keeps_its_copies() {
        let dst = tempfile::tempdir().unwrap();
        fs::write(dst.path().join(JOURNAL), "a/0\n").unwrap();
        fs::write(dst.path().join("x"), "1").unwrap();
        let j = Journal::read(dst.path());
        let meta = fs::metadata(dst.path().join("x")).unwrap();
        assert!(j.accounts_for(Path::new("/nonexistent"), Path::new("a/0"), &meta, None));
    }
}
