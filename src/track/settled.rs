//! Settled files out of memory (docs/design.md, "Memory"): a file whose current version
//! was copied and that has been quiet since leaves the tracker's map, and what is kept of it is
//! folded into its folder's `Record`: how many such files, and the sum of their fingerprints
//! (a keyed 128-bit hash of name and identity, added modulo 2^128: a multiset hash). That is
//! constant memory per folder whatever its number of files.
//!
//! A record proves its files only as a whole: the files of the folder that the tracker does not
//! hold, looked at now, must sum to exactly the record (same count, same fingerprint sum). Any
//! difference (a settled file changed, deleted or re-copied since, or a new file found only by a
//! scan) fails that folder's proof, and its files are then looked at one by one, as a resumed
//! run's would be; nothing is ever proven by the absence of a file from a record. The keys of the
//! hash are drawn at random per run, so no name can be chosen to collide.
//!
//! Beside it a record keeps the sum of a keyed hash of each file's name alone: a record dropped
//! at a sweep hands it on ([`Dropped`]), so that the copies at the destination can be proven to be
//! exactly its files by name, and those whose source is gone mirrored as deletions
//! (docs/design.md, "Memory").

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use crate::vocab::Identity;

/// The folder of a key (empty at the root).
pub fn folder_of(rel: &OsStr) -> &OsStr {
    Path::new(rel).parent().map_or(OsStr::new(""), Path::as_os_str)
}

/// What is kept of a folder's settled files: their number and their fingerprints' sum. The sum
/// is kept as two halves: a `u128` would align the record to 16 bytes, and with 10⁵ or more
/// folders every byte of a record counts (docs/design.md, "Memory").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum {
    pub files: u64,
    digest: [u64; 2],
}

impl Sum {
    pub fn add(&mut self, fingerprint: u128) {
        self.files += 1;
        self.digest = wrapping_add(self.digest, fingerprint);
    }
}

/// `halves` (a `u128` as its low and high halves) plus `n`, modulo 2¹²⁸.
fn wrapping_add(halves: [u64; 2], n: u128) -> [u64; 2] {
    let sum = ((u128::from(halves[1]) << 64) + u128::from(halves[0])).wrapping_add(n);
    [sum as u64, (sum >> 64) as u64]
}

#[derive(Debug, Default)]
struct Record {
    kept: Sum,
    /// The sum of the kept files' name prints ([`Settled::name_print`]), one per file of `kept`
    /// (two halves, as [`Sum`]'s).
    names: [u64; 2],
    /// An event was heard for one of its files since it was kept: a sweep that finds the folder
    /// changed learns nothing the events did not say (docs/design.md, "Live, proven live").
    heard: bool,
    /// What the current reconcile sweep found of these files (see [`Settled::sweep_found`]).
    swept: Sum,
}

/// A folder's record dropped at a sweep: the names it kept, as a count and a sum of name prints,
/// what [`crate::track::Tracker::mirror_dropped`] proves the destination's copies against.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    pub folder: PathBuf,
    pub(in crate::track) names: Sum,
}

/// Every folder's record, and the count of settled copies whose record was given up.
#[derive(Debug)]
pub struct Settled {
    folders: HashMap<Box<OsStr>, Record>,
    keys: (RandomState, RandomState),
    /// Files the records hold, kept as a total: the status asks for it every loop.
    held: u64,
    /// Copies this run made whose records were dropped (a folder reopened or removed): they are
    /// still at the destination but no longer accounted for, so the inventory cannot say the
    /// destination holds only known copies, and the end walks it.
    lost: u64,
    /// Folders a sweep found changed with no event heard for any of their files.
    unheard: u64,
}

impl Default for Settled {
    fn default() -> Self {
        Settled {
            folders: HashMap::new(),
            keys: (RandomState::new(), RandomState::new()),
            held: 0,
            lost: 0,
            unheard: 0,
        }
    }
}

impl Settled {
    /// The fingerprint of a file at one version: name and every part of its identity.
    pub fn fingerprint(&self, rel: &OsStr, ident: &Identity) -> u128 {
        let item = (rel.as_encoded_bytes(), ident);
        (u128::from(self.keys.0.hash_one(item)) << 64) | u128::from(self.keys.1.hash_one(item))
    }

    /// The print of a file's name alone (its path below the root), keyed as the fingerprint is.
    pub fn name_print(&self, rel: &OsStr) -> u128 {
        let item = rel.as_encoded_bytes();
        (u128::from(self.keys.0.hash_one(item)) << 64) | u128::from(self.keys.1.hash_one(item))
    }

    /// Folds a settled file into its folder's record.
    pub fn keep(&mut self, rel: &OsStr, ident: &Identity) {
        let (fp, np) = (self.fingerprint(rel, ident), self.name_print(rel));
        let r = self.folders.entry(folder_of(rel).into()).or_default();
        r.kept.add(fp);
        r.names = wrapping_add(r.names, np);
        self.held += 1;
    }

    /// An event was heard for `rel`, a file the tracker does not hold, in a folder with a record.
    pub fn heard(&mut self, rel: &OsStr) {
        if let Some(r) = self.folders.get_mut(folder_of(rel)) {
            r.heard = true;
        }
    }

    /// Folders complete sweeps found changed with no event heard for any of their files.
    pub fn unheard(&self) -> u64 {
        self.unheard
    }

    /// Whether `rel`'s folder has a record (so a file of it the tracker does not hold may be settled).
    pub fn has_folder_of(&self, rel: &OsStr) -> bool {
        !self.folders.is_empty() && self.folders.contains_key(folder_of(rel))
    }

    /// How many files the records hold, and how many settled copies were given up.
    pub fn copies(&self) -> u64 {
        self.held + self.lost
    }

    /// Whether [`Settled::copies`] counts each copy once: a record given up leaves its copies
    /// counted as lost, and those found again are counted a second time in the tracker's map.
    pub fn exact(&self) -> bool {
        self.lost == 0
    }

    /// Files held in records (not counting those given up).
    pub fn held(&self) -> u64 {
        self.held
    }

    pub fn folders(&self) -> usize {
        self.folders.len()
    }

    /// Whether `found` (the files of `folder` the tracker does not hold, at their current
    /// identities) is exactly what its record kept.
    pub fn proves(&self, folder: &OsStr, found: &Sum) -> bool {
        self.folders.get(folder).is_some_and(|r| r.kept == *found)
    }

    pub fn begin_sweep(&mut self) {
        for r in self.folders.values_mut() {
            r.swept = Sum::default();
        }
    }

    /// A sweep found `rel` (not held by the tracker) in a folder with a record.
    pub fn sweep_found(&mut self, rel: &OsStr, ident: &Identity) {
        let fp = self.fingerprint(rel, ident);
        if let Some(r) = self.folders.get_mut(folder_of(rel)) {
            r.swept.add(fp);
        }
    }

    /// Ends a complete sweep: every folder whose files are no longer exactly what its record kept
    /// (changed, added or deleted without an event) is dropped and returned, to be listed again
    /// and its files looked at one by one. Folders the initial walk may still be `listing` are
    /// not judged: the sweep left their files to it.
    pub fn end_sweep(&mut self, listing: impl Fn(&OsStr) -> bool) -> Vec<Dropped> {
        let changed: Vec<OsString> = self
            .folders
            .iter()
            .filter(|(f, r)| r.kept != r.swept && !listing(f))
            .map(|(f, _)| f.to_os_string())
            .collect();
        self.unheard +=
            changed.iter().filter(|f| self.folders.get(f.as_os_str()).is_some_and(|r| !r.heard)).count() as u64;
        let dropped = changed.into_iter().filter_map(|f| {
            let r = self.drop_folder(&f)?;
            Some(Dropped { folder: PathBuf::from(f), names: Sum { files: r.kept.files, digest: r.names } })
        });
        dropped.collect()
    }

    /// Drops the records of `prefix` and every folder below it (a folder removed or renamed away).
    pub fn removed_tree(&mut self, prefix: &Path) {
        let p = prefix.as_os_str().as_encoded_bytes();
        let under: Vec<OsString> = self
            .folders
            .keys()
            .filter(|f| {
                let f = f.as_encoded_bytes();
                p.is_empty() || f == p || f.starts_with(p) && matches!(f.get(p.len()), Some(b'/' | b'\\'))
            })
            .map(|f| f.to_os_string())
            .collect();
        for f in &under {
            self.drop_folder(f);
        }
    }

    fn drop_folder(&mut self, folder: &OsStr) -> Option<Record> {
        let r = self.folders.remove(folder)?;
        self.held -= r.kept.files;
        self.lost += r.kept.files;
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(ino: u64, mtime_ns: i64) -> Identity {
        Identity { dev: 1, ino, size: 10, mtime_ns, ctime_ns: mtime_ns }
    }

    #[test]
    fn a_sum_kept_in_two_halves_adds_as_one_number_modulo_two_to_the_128() {
        assert_eq!(wrapping_add([u64::MAX, 0], 1), [0, 1], "the carry");
        assert_eq!(wrapping_add([5, 7], (3 << 64) | 2), [7, 10]);
        assert_eq!(wrapping_add([u64::MAX, u64::MAX], 2), [1, 0], "modulo 2^128");
    }

    #[test]
    fn a_record_proves_exactly_the_set_it_kept() {
        let mut s = Settled::default();
        for (name, ino) in [("a/0", 1), ("a/1", 2), ("b/0", 3)] {
            s.keep(OsStr::new(name), &ident(ino, 5));
        }
        let sum = |files: &[(&str, Identity)]| {
            let mut sum = Sum::default();
            for (n, i) in files {
                sum.add(s.fingerprint(OsStr::new(n), i));
            }
            sum
        };
        assert!(s.proves(OsStr::new("a"), &sum(&[("a/1", ident(2, 5)), ("a/0", ident(1, 5))])));
        // One file at another version, one missing, one extra, two names swapped: no proof.
        assert!(!s.proves(OsStr::new("a"), &sum(&[("a/0", ident(1, 5)), ("a/1", ident(2, 6))])));
        assert!(!s.proves(OsStr::new("a"), &sum(&[("a/0", ident(1, 5))])));
        assert!(!s.proves(OsStr::new("a"), &sum(&[("a/0", ident(1, 5)), ("a/1", ident(2, 5)), ("a/2", ident(4, 5))])));
        assert!(!s.proves(OsStr::new("a"), &sum(&[("a/0", ident(2, 5)), ("a/1", ident(1, 5))])));
        assert!(!s.proves(OsStr::new("c"), &Sum::default()));
        assert_eq!(s.copies(), 3);
    }

    #[test]
    fn a_sweep_drops_a_folder_that_changed_unseen_and_its_copies_stay_counted() {
        let mut s = Settled::default();
        s.keep(OsStr::new("a/0"), &ident(1, 5));
        s.keep(OsStr::new("b/0"), &ident(2, 5));
        s.begin_sweep();
        s.sweep_found(OsStr::new("a/0"), &ident(1, 5));
        s.sweep_found(OsStr::new("b/0"), &ident(2, 9));
        let dropped = s.end_sweep(|_| false);
        assert_eq!(dropped.iter().map(|d| &d.folder).collect::<Vec<_>>(), [Path::new("b")]);
        let mut names = Sum::default();
        names.add(s.name_print(OsStr::new("b/0")));
        assert_eq!(dropped[0].names, names, "the names it kept, handed on");
        assert!(s.has_folder_of(OsStr::new("a/7")) && !s.has_folder_of(OsStr::new("b/0")));
        assert_eq!((s.held(), s.copies()), (1, 2));
    }

    #[test]
    fn a_removed_tree_drops_the_folders_below_it_only() {
        let mut s = Settled::default();
        for name in ["t/0/c", "t/1/c", "t/10/c", "u/c"] {
            s.keep(OsStr::new(name), &ident(1, 1));
        }
        s.removed_tree(Path::new("t/1"));
        assert_eq!(s.folders(), 3);
        s.removed_tree(Path::new("t"));
        assert_eq!((s.folders(), s.copies()), (1, 4));
        assert_eq!(folder_of(OsStr::new("c")), OsStr::new(""));
    }
}
