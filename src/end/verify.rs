//! The end-of-copy proof (invariant 5): every source file is at the destination with the same
//! size, no partial is left, and for every Zarr array the chunk (or shard) files are accounted for
//! against the grid given by the final metadata — present, or absent at the source (fill value).
//!
//! The expected set is never materialised: a file's key is parsed and checked against the grid, so
//! an array of ten million chunks costs nothing per absent chunk.

use std::collections::HashMap;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::dest::Kind;
use crate::end::journal::Vouch;
pub use crate::end::shard::ShardIndex;
use crate::vocab::{is_ignored, PARTIAL_SUFFIX};

/// What the final metadata says the acquisition holds: its arrays, and the metadata files that could
/// not be read or understood. An array whose metadata cannot be read drops out of the chunk
/// accounting, so its stale chunks would pass as harmless extras: the run cannot be verified
/// while any is listed (docs/design.md, "The end of a run").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub arrays: Vec<ArraySpec>,
    /// (metadata file relative to the source root, why it cannot be used).
    pub unreadable: Vec<(PathBuf, String)>,
}

/// What verification needs to know about one array: where it is, its shape, the grid of files
/// (chunk shape, or shard shape when sharded) and how grid indices become file names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArraySpec {
    /// Relative to the source root, `/`-separated ("" for an array at the root).
    pub path: String,
    pub shape: Vec<u64>,
    pub grid: Vec<u64>,
    /// `Some("c")` for Zarr v3's default chunk key encoding, `None` for v2-style keys.
    pub prefix: Option<String>,
    pub separator: char,
    /// For sharded arrays: how to check that each shard file is whole.
    pub shard: Option<ShardIndex>,
}

impl ArraySpec {
    fn cells(&self) -> Vec<u64> {
        self.shape.iter().zip(&self.grid).map(|(&s, &g)| if g == 0 { 0 } else { s.div_ceil(g) }).collect()
    }

    /// The number of files the grid has room for.
    pub fn expected(&self) -> u64 {
        self.cells().iter().fold(1u64, |acc, &n| acc.saturating_mul(n))
    }

    /// Parses a key (relative to the array) into grid indices, if it is one of this array's keys.
    pub fn parse_key(&self, key: &str) -> Option<Vec<u64>> {
        let body = match &self.prefix {
            Some(p) => {
                let rest = key.strip_prefix(p.as_str())?;
                if rest.is_empty() {
                    return self.shape.is_empty().then(Vec::new);
                }
                rest.strip_prefix(self.separator)?
            }
            None if self.shape.is_empty() => return (key == "0").then(Vec::new),
            None => key,
        };
        let idx: Vec<u64> = body.split(self.separator).map(|p| p.parse().ok()).collect::<Option<_>>()?;
        (idx.len() == self.shape.len()).then_some(idx)
    }

    fn in_bounds(&self, idx: &[u64]) -> bool {
        idx.iter().zip(self.cells()).all(|(&i, n)| i < n)
    }
}

/// The verdict, with every problem named.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: u64,
    pub bytes: u64,
    /// Source files with no destination file.
    pub missing: Vec<PathBuf>,
    /// (path, source size, destination size).
    pub size_mismatch: Vec<(PathBuf, u64, u64)>,
    /// Our temporary files still at the destination.
    pub partials: Vec<PathBuf>,
    /// Symlinks in the source: never followed, never copied.
    pub symlinks: Vec<PathBuf>,
    /// Files at the destination that the source does not have (not an error: reported).
    pub extra: Vec<PathBuf>,
    /// Chunk or shard files of a source array that the source no longer has (deleted as fill value,
    /// or by a shrink, while no softcopy was watching): stale data where the source reads fill.
    /// An error, unless `prune` removed them (then listed in `pruned`).
    pub stale_chunks: Vec<PathBuf>,
    /// Stale chunks removed from the destination by this verification.
    pub pruned: Vec<PathBuf>,
    /// Same size, different bytes (only looked for when contents are compared): an error.
    pub content_mismatch: Vec<PathBuf>,
    /// Same size, another modification time: not the version copied (a copy carries the source's
    /// mtime), so not proven the same: an error.
    pub mtime_mismatch: Vec<PathBuf>,
    /// Files proven by this run's own copies of their current versions (see [`Landed`]), not looked
    /// at at the destination.
    pub proven_as_copied: u64,
    /// Whether the destination was walked (for partials, stale chunks and extras).
    pub destination_walked: bool,
    /// Chunk/shard files the final metadata has room for, over all arrays.
    pub expected_chunks: u64,
    /// ...of which exist at the source (the rest are fill value).
    pub present_chunks: u64,
    /// Files named like chunk keys but outside the final grid (e.g. left by a shrinking resize).
    pub outside_grid: Vec<PathBuf>,
    /// Shards that are whole at the source but not at the destination: an error.
    pub bad_shards: Vec<(PathBuf, String)>,
    /// Shards not whole at the source either (a killed writer): copied as they are, reported.
    pub bad_shards_at_source: Vec<(PathBuf, String)>,
    /// Source files excluded (`--exclude`): not compared, named in the report.
    pub excluded: Vec<PathBuf>,
    /// ...of which are chunk or shard files inside their array's grid: present at the source, left
    /// out on purpose, so neither present nor absent (fill value) in the copy's accounting.
    pub excluded_chunks: u64,
}

impl Report {
    /// True when the destination holds everything (invariant 5).
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.size_mismatch.is_empty()
            && self.partials.is_empty()
            && self.bad_shards.is_empty()
            && self.content_mismatch.is_empty()
            && self.mtime_mismatch.is_empty()
            && self.stale_chunks.is_empty()
    }
}

/// Compares the contents of every (source, destination) pair on a few threads; returns the pairs
/// that differ (or could not be read).
fn differing(src: &Path, dest: &crate::dest::Dest, rels: &[PathBuf]) -> Vec<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let (mut found, read_back) = match dest.server_algo() {
        Some(algo) => by_server(src, dest, algo, rels),
        None => (Vec::new(), rels.to_vec()),
    };
    let rels = &read_back;
    let next = AtomicUsize::new(0);
    let out = Mutex::new(std::mem::take(&mut found));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(rel) = rels.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if !dest.same_as(rel, &src.join(rel)).unwrap_or(false) {
                        out.lock().unwrap_or_else(|e| e.into_inner()).push(rel.clone());
                    }
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort();
    // A copy found different is no version of its source, whatever its mark says: the next run
    // compares its bytes and copies it again (docs/design.md, "A version is decided on evidence").
    for rel in &out {
        let _ = dest.unmark(rel);
    }
    out
}

/// Compares pairs by the server's digests of the copies (an ssh destination whose host hashes:
/// `dest/server_hash.rs`) against the sources hashed here with the same algorithm, many per
/// command. Returns the pairs that differ (or could not be proven), and those to read back.
fn by_server(
    src: &Path,
    dest: &crate::dest::Dest,
    algo: crate::dest::server_hash::Algo,
    rels: &[PathBuf],
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    use crate::dest::server_hash::Answer;
    let (mut differ, mut read_back) = (Vec::new(), Vec::new());
    // The server's shell must hash the files SFTP serves (an SFTP chroot would not): the first
    // copy it hashed is also read back once, and must give the same digest; else all is read back.
    let mut seen_alike = false;
    for batch in rels.chunks(1024) {
        let bytes = batch.iter().map(|rel| std::fs::metadata(src.join(rel)).map_or(0, |m| m.len())).sum();
        let refs: Vec<&Path> = batch.iter().map(PathBuf::as_path).collect();
        let answers = dest.server_digests(&refs, bytes).unwrap_or_default();
        for (i, rel) in batch.iter().enumerate() {
            match answers.get(i) {
                Some(Answer::Digest { digest, .. }) => {
                    if !seen_alike {
                        if dest.open_file(rel).and_then(|r| algo.digest(r)).ok().as_ref() != Some(digest) {
                            return (Vec::new(), rels.to_vec());
                        }
                        seen_alike = true;
                    }
                    let ours = std::fs::File::open(src.join(rel)).and_then(|f| algo.digest(f));
                    if ours.ok().as_ref() != Some(digest) {
                        differ.push(rel.clone());
                    }
                }
                Some(Answer::ReadBack(_)) | None => read_back.push(rel.clone()),
                Some(Answer::Gone | Answer::Keep(_)) => differ.push(rel.clone()),
            }
        }
    }
    (differ, read_back)
}

fn slash_path(rel: &Path) -> String {
    let parts: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy()),
            _ => None,
        })
        .collect();
    parts.join("/")
}

/// What the run that drained put at the destination, when every file there is one of its copies:
/// it started on a destination holding no files (our own state aside), holds the claim, and no
/// partial it made may be left. Then a source file whose version is the one copied needs no look
/// at the destination, and the destination needs no walk if every copy is of a source file (docs/
/// design.md, "The end of a run"). The copies were checked as they landed: every byte the source
/// had written through the handle, the mtime set through it, published only if the source did not
/// change meanwhile.
pub struct Landed<'a> {
    /// The version copied of a file (relative to the root), if the tracker holds it.
    pub copied: &'a dyn Fn(&Path) -> Option<crate::vocab::Identity>,
    /// The records of the files that left the tracker settled: a file it does not hold, in a
    /// folder with a record, is proven together with that folder's other settled files, or looked
    /// at at the destination with them (docs/design.md, "Memory").
    pub settled: Option<&'a crate::track::settled::Settled>,
    /// How many files have a copy (settled ones included).
    pub count: usize,
}

/// What [`verify`] checks against, and what it may do.
pub struct Check<'a> {
    /// The marker's name at the source root: never compared (it is copied last).
    pub marker: &'a str,
    pub arrays: &'a [ArraySpec],
    /// Compare every pair of the same size byte for byte.
    pub content: bool,
    /// The source root's identity: stale chunks are removed while the root is that folder.
    pub prune: Option<&'a crate::source::root::RootId>,
    /// This run's copies, to prove files without looking at the destination.
    pub landed: Option<&'a Landed<'a>>,
    /// Files not part of the acquisition: left out at both ends (never stale, never extra).
    pub exclude: Option<&'a crate::track::exclude::Exclude>,
}

/// Compares `src` and `dst` (ignoring the marker, locks and temps at the source); with `content`,
/// every pair of the same size is also compared byte for byte. With `prune` (the source root's
/// identity), stale chunk files (see [`Report::stale_chunks`]) are removed from the destination:
/// deletions are data (a chunk deleted at the source reads as fill value), and one made while
/// softcopy was not running has no event to mirror. Only files named as chunk keys inside a source
/// array are ever removed, and only while the root is still that folder: a file missing from a
/// root that went away meanwhile is no evidence (invariant 8).
///
/// A `stop` request ends it with an error ("stopped") between files: an unfinished verification
/// proves nothing.
pub fn verify(src: &Path, dest: &crate::dest::Dest, check: &Check<'_>, stop: &AtomicBool) -> std::io::Result<Report> {
    // Files the source lost on purpose (`--delete-source`): never extra, never stale.
    let journal = crate::end::journal::Journal::read(dest)?;
    let mut proof = Proof {
        src,
        dest,
        check,
        stop,
        landed: check.landed.filter(|_| journal.is_empty()),
        journal,
        by_path: check.arrays.iter().map(|a| (a.path.as_str(), a)).collect(),
        report: Report { expected_chunks: check.arrays.iter().map(ArraySpec::expected).sum(), ..Report::default() },
        same_size: Vec::new(),
        copies: 0,
        known: 0,
        settled_found: Vec::new(),
    };
    proof.walk_source()?;
    proof.prove_settled(0)?;
    if proof.must_walk_destination()? {
        proof.walk_destination()?;
    }
    let mut report = proof.report;
    report.content_mismatch = differing(src, dest, &proof.same_size);
    Ok(report)
}

/// One verification in progress: what it checks against, and what it found so far.
struct Proof<'a> {
    src: &'a Path,
    dest: &'a crate::dest::Dest,
    check: &'a Check<'a>,
    stop: &'a AtomicBool,
    journal: crate::end::journal::Journal,
    /// This run's copies, where they may prove files (not with a journal).
    landed: Option<&'a Landed<'a>>,
    by_path: HashMap<&'a str, &'a ArraySpec>,
    report: Report,
    /// Pairs to compare byte for byte (`content`).
    same_size: Vec<PathBuf>,
    /// Source files that have a file of their name at the destination, and of those, how many
    /// are known copies of their current version.
    copies: usize,
    known: usize,
    /// Per folder with a record that the walk is still in (its depth, name, and what its files
    /// the tracker does not hold sum to): proven as the walk leaves it, so this holds the walk's
    /// path, not every folder of the archive (docs/design.md, "Memory").
    settled_found: Vec<(usize, std::ffi::OsString, crate::track::settled::Sum)>,
}

impl Proof<'_> {
    fn stopped(&self) -> std::io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped"));
        }
        Ok(())
    }

    /// Not part of the acquisition (`exclude`).
    fn excluded(&self, rel: &Path) -> bool {
        self.check.exclude.is_some_and(|e| e.matches(rel))
    }

    /// Never data, or not part of the acquisition: left out at both ends.
    fn left_out(&self, rel: &Path) -> bool {
        is_ignored(rel) || self.excluded(rel)
    }

    /// Counts `rel` against its array's grid; a shard's copy is checked whole where `arrived`.
    fn account(&mut self, rel: &Path, source: &Path, arrived: bool) {
        if let Some(shard) = account_chunk(&slash_path(rel), &self.by_path, &mut self.report) {
            if arrived {
                check_shard(shard, source, self.dest, rel, &mut self.report);
            }
        }
    }

    /// Every source file: proven as this run's copy, left for its folder's record, or looked up
    /// at the destination.
    fn walk_source(&mut self) -> std::io::Result<()> {
        let (src, content) = (self.src, self.check.content);
        for entry in walkdir::WalkDir::new(src).follow_links(false) {
            let entry = entry?;
            // The walk goes depth first: an entry at this depth means every folder at it or
            // deeper has been listed whole.
            self.prove_settled(entry.depth())?;
            let Ok(rel) = entry.path().strip_prefix(src) else {
                continue;
            };
            if entry.file_type().is_symlink() {
                self.report.symlinks.push(rel.to_path_buf());
                continue;
            }
            if entry.file_type().is_file() && self.excluded(rel) {
                self.report.excluded.push(rel.to_path_buf());
                // Metadata is never left out: its copy missing, the copy is not whole (see `Exclude::new`).
                if crate::vocab::is_metadata(rel) && !self.dest.stat(rel).is_ok_and(|m| m.is_file()) {
                    self.report.missing.push(rel.to_path_buf());
                }
                let in_grid = chunk_of(&slash_path(rel), &self.by_path).is_some_and(|(spec, idx)| spec.in_bounds(&idx));
                self.report.excluded_chunks += u64::from(in_grid);
            }
            if !entry.file_type().is_file() || self.left_out(rel) || rel.as_os_str() == self.check.marker {
                continue;
            }
            self.stopped()?;
            let meta = entry.metadata()?;
            self.report.files += 1;
            self.report.bytes += meta.len();
            let ident = || crate::sys::path_identity_of(entry.path(), &meta).ok();
            let copied = self.landed.and_then(|l| (l.copied)(rel));
            let settled = self
                .landed
                .and_then(|l| l.settled)
                .filter(|s| !content && copied.is_none() && s.has_folder_of(rel.as_os_str()));
            if let Some((settled, ident)) = settled.and_then(|s| ident().map(|i| (s, i))) {
                // Proven with its folder's record after the walk, or looked at then (below).
                let folder = crate::track::settled::folder_of(rel.as_os_str());
                let depth = entry.depth() - 1;
                // A folder open at this depth is this one: any other there was left (and taken
                // off) when the walk met this one.
                match self.settled_found.last() {
                    Some((d, f, _)) if *d == depth => debug_assert_eq!(f.as_os_str(), folder),
                    _ => self.settled_found.push((depth, folder.to_owned(), Default::default())),
                }
                if let Some((_, _, sum)) = self.settled_found.last_mut() {
                    sum.add(settled.fingerprint(rel.as_os_str(), &ident));
                }
                self.account(rel, entry.path(), true);
                continue;
            }
            if copied.is_some_and(|copied| ident() == Some(copied)) {
                self.copies += 1;
                self.known += 1;
                self.report.proven_as_copied += 1;
                if content {
                    self.same_size.push(rel.to_path_buf());
                }
                // A shard's index is still read at the destination (one read per shard, and shards
                // are few): it is what tells bytes that landed damaged, which no size or mtime can.
                self.account(rel, entry.path(), true);
                continue;
            }
            let (present, arrived) = look_up(self.dest, rel, &meta, content, &mut self.report, &mut self.same_size);
            self.copies += usize::from(present);
            self.account(rel, entry.path(), arrived);
        }
        Ok(())
    }

    /// A folder whose settled files are exactly its record's is proven as this run's copies. Any
    /// other (one changed, added or deleted since it settled) has those files looked at one by one.
    /// Takes the folders at `depth` or deeper: the walk has left them.
    fn prove_settled(&mut self, depth: usize) -> std::io::Result<()> {
        let Some(settled) = self.landed.and_then(|l| l.settled) else { return Ok(()) };
        while self.settled_found.last().is_some_and(|(d, _, _)| *d >= depth) {
            let Some((_, folder, found)) = self.settled_found.pop() else { break };
            if settled.proves(&folder, &found) {
                self.copies += found.files as usize;
                self.known += found.files as usize;
                self.report.proven_as_copied += found.files;
                continue;
            }
            for entry in fs::read_dir(self.src.join(&folder))?.flatten() {
                self.stopped()?;
                let rel = Path::new(&folder).join(entry.file_name());
                let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
                let held = self.landed.and_then(|l| (l.copied)(&rel)).is_some();
                if meta.is_file() && !held && !self.left_out(&rel) && rel.as_os_str() != self.check.marker {
                    let found =
                        look_up(self.dest, &rel, &meta, self.check.content, &mut self.report, &mut self.same_size);
                    self.copies += usize::from(found.0);
                }
            }
        }
        Ok(())
    }

    /// Whether the destination must be walked for what the source does not have. It usually
    /// holds exactly the copies of the source's files, with nothing left over: counted by name
    /// first (no stat), the per-file lookup at the source is needed only if it holds more. On a
    /// million files that lookup is a third of the verification's stats. Not with a journal: an
    /// entry must never balance a file that should not be there (docs/design.md, "The end of a
    /// run", Freeing).
    fn must_walk_destination(&mut self) -> std::io::Result<bool> {
        // Every copy this run made is of a source file, and the destination holds nothing else.
        let all_known = self.landed.is_some_and(|l| l.count == self.known);
        let mut in_dst = 0usize;
        if !all_known && self.journal.is_empty() {
            let walked = self.dest.walk(&mut |rel, kind| {
                let partial = rel.file_name().is_some_and(|n| n.to_string_lossy().ends_with(PARTIAL_SUFFIX));
                let counted = partial || !self.left_out(rel) && rel.as_os_str() != self.check.marker;
                in_dst += usize::from(kind == Kind::File && counted);
                ControlFlow::Continue(())
            });
            if let Some(e) = walked.failed {
                return Err(e);
            }
        }
        self.report.destination_walked = !all_known;
        let shortcut = all_known || self.journal.is_empty() && in_dst == self.copies;
        Ok(!shortcut)
    }

    /// Every file at the destination the source does not have: a partial, an extra, a copy of a
    /// freed file, or a stale chunk (pruned where the root is still the folder copied).
    fn walk_destination(&mut self) -> std::io::Result<()> {
        let dest = self.dest;
        let walked = dest.walk(&mut |rel, kind| {
            // Pruning deletes: never after a stop request.
            if self.stop.load(Ordering::Relaxed) {
                return ControlFlow::Break(());
            }
            if kind == Kind::File {
                self.judge(rel);
            }
            ControlFlow::Continue(())
        });
        if walked.broken {
            return Err(std::io::Error::other("stopped"));
        }
        walked.failed.map_or(Ok(()), Err)
    }

    /// One file at the destination.
    fn judge(&mut self, rel: &Path) {
        if rel.file_name().is_some_and(|n| n.to_string_lossy().ends_with(PARTIAL_SUFFIX)) {
            self.report.partials.push(rel.to_path_buf());
        } else if self.left_out(rel) {
            // Our own state at the root.
        } else if another_kind(&self.src.join(rel)) {
            // A link or a special file now where the copy's source was: the copy does not
            // describe it (softcopy copies neither), and nothing is deleted on that account.
            self.report.extra.push(rel.to_path_buf());
        } else if absent(&self.src.join(rel)) && rel.as_os_str() != self.check.marker {
            self.judge_absent(rel);
        }
    }

    /// A copy whose source is proven absent: freed on purpose, kept for a conflict, an extra, or
    /// a stale chunk pruned (or listed where it cannot be).
    fn judge_absent(&mut self, rel: &Path) {
        let array = chunk_of(&slash_path(rel), &self.by_path).map(|(spec, _)| PathBuf::from(&spec.path));
        let vouch = match self.dest.stat(rel) {
            Ok(copy) => self.journal.accounts_for(self.src, rel, &copy.ident, array.as_deref()),
            // Not looked at: nothing is deleted on that account.
            Err(_) => Vouch::Conflict,
        };
        // A name the journal says was freed stands for its only copy even where the copy no
        // longer looks like the version freed (its mtime changed at the destination): kept.
        let vouch = match vouch {
            Vouch::Silent if self.dest.was_freed(rel) => Vouch::Conflict,
            v => v,
        };
        let rel = rel.to_path_buf();
        match vouch {
            // Freed from this very acquisition by an earlier run, after its copy was proven.
            Vouch::Freed => {}
            // An entry names this copy, but its acquisition was replaced or taken again: the copy
            // may be the only one of a freed file. Kept, and the run is not verified.
            Vouch::Conflict => self.report.stale_chunks.push(rel),
            _ if array.is_none() => self.report.extra.push(rel),
            _ if self.check.prune.is_some_and(|root| root.check(self.src).is_ok())
                && self.dest.changing().is_ok()
                && prune_copy(self.dest, &rel) =>
            {
                self.report.pruned.push(rel)
            }
            _ => self.report.stale_chunks.push(rel),
        }
    }
}

/// Removes the stale copy `rel` (a crash point before it: docs/design.md, "Crash points").
fn prune_copy(dest: &crate::dest::Dest, rel: &Path) -> bool {
    crate::crash_point!("verify.prune");
    dest.remove_file(rel).is_ok()
}

/// Looks the copy of `rel` (whose source has `meta`) up beneath the destination's root (a copy
/// reached through a link there is not there), recording what is wrong with it. Returns whether a
/// file of its name is there, and whether it arrived (same size, and the same mtime unless
/// contents are compared: then they decide).
fn look_up(
    dest: &crate::dest::Dest,
    rel: &Path,
    meta: &fs::Metadata,
    content: bool,
    report: &mut Report,
    same_size: &mut Vec<PathBuf>,
) -> (bool, bool) {
    let size = meta.len();
    match dest.stat(rel).map(|m| (m.is_file(), m.ident)) {
        Ok((true, copy)) if copy.size == size && !same_mtime(meta, copy.mtime_ns) && !content => {
            report.mtime_mismatch.push(rel.to_path_buf());
            (true, false)
        }
        Ok((true, copy)) if copy.size == size => {
            if content {
                same_size.push(rel.to_path_buf());
            }
            (true, true)
        }
        Ok((true, copy)) => {
            report.size_mismatch.push((rel.to_path_buf(), size, copy.size));
            (true, false)
        }
        _ => {
            report.missing.push(rel.to_path_buf());
            (false, false)
        }
    }
}

/// Checks that the copy of a shard is whole; one that is not, whole at the source, is an error.
fn check_shard(shard: ShardIndex, source: &Path, dest: &crate::dest::Dest, rel: &Path, report: &mut Report) {
    let copy = dest.stat(rel).and_then(|m| Ok((dest.open_file(rel)?, m.ident.size)));
    let checked = copy.map_err(|e| e.to_string()).and_then(|(f, size)| shard.check_bytes(f, size));
    if let Err(why) = checked {
        match shard.check(source) {
            Err(at_source) => report.bad_shards_at_source.push((rel.to_path_buf(), at_source)),
            Ok(()) => report.bad_shards.push((rel.to_path_buf(), why)),
        }
    }
}

/// Whether `path` is neither a file nor a folder (a link, a fifo, a socket, a device).
fn another_kind(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Whether `path` is proven absent as a file: NotFound (or a parent that is a file), or a folder
/// there now (a chunk replaced by a folder reads as fill value); not any error. A file that cannot
/// be looked at is not stale, and is never pruned (invariant 8).
fn absent(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) => m.is_dir(),
        Err(e) => matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory),
    }
}

/// Whether the copy's mtime is the source's, within what the destination can store: a copy carries
/// its source's mtime, but FAT keeps 2 s, SFTP (sshfs) and many network shares whole seconds, SMB
/// 100 ns, so a destination mtime that is a whole number of such units matches any source mtime
/// within one unit of it.
fn same_mtime(src: &fs::Metadata, copy_mtime_ns: i64) -> bool {
    crate::vocab::same_mtime_ns(crate::vocab::identity(src).mtime_ns, copy_mtime_ns)
}

/// Finds the array a file belongs to (its nearest ancestor that is an array) and counts the file
/// against that array's grid. Returns how to check it when it is a shard.
fn account_chunk(rel: &str, arrays: &HashMap<&str, &ArraySpec>, report: &mut Report) -> Option<ShardIndex> {
    let (spec, idx) = chunk_of(rel, arrays)?;
    if spec.in_bounds(&idx) {
        report.present_chunks += 1;
    } else {
        report.outside_grid.push(PathBuf::from(rel));
    }
    // Out-of-grid shards are checked too: acquire-zarr's metadata lags its data, so after a crash
    // the newest shards lie beyond the shape it last recorded.
    spec.shard
}

/// The array (nearest array ancestor) whose chunk or shard key `rel` is, with the grid index.
fn chunk_of<'a>(rel: &str, arrays: &HashMap<&str, &'a ArraySpec>) -> Option<(&'a ArraySpec, Vec<u64>)> {
    let mut dir = rel;
    loop {
        let parent = dir.rfind('/').map_or("", |i| &dir[..i]);
        if let Some(spec) = arrays.get(parent) {
            let key = if parent.is_empty() { rel } else { &rel[parent.len() + 1..] };
            return spec.parse_key(key).map(|idx| (*spec, idx));
        }
        if parent.is_empty() {
            return None;
        }
        dir = parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: &[u64], grid: &[u64], prefix: Option<&str>, sep: char) -> ArraySpec {
        ArraySpec {
            path: "a".into(),
            shape: shape.to_vec(),
            grid: grid.to_vec(),
            prefix: prefix.map(Into::into),
            separator: sep,
            shard: None,
        }
    }

    #[test]
    fn key_encodings() {
        let v2dot = spec(&[10, 10], &[4, 5], None, '.');
        assert_eq!(v2dot.expected(), 6);
        assert_eq!(v2dot.parse_key("2.1"), Some(vec![2, 1]));
        assert_eq!(v2dot.parse_key("2/1"), None);
        assert_eq!(v2dot.parse_key(".zarray"), None);
        let v3 = spec(&[10, 10], &[4, 5], Some("c"), '/');
        assert_eq!(v3.parse_key("c/2/1"), Some(vec![2, 1]));
        assert_eq!(v3.parse_key("2/1"), None);
        assert_eq!(v3.parse_key("zarr.json"), None);
        let scalar3 = spec(&[], &[], Some("c"), '/');
        assert_eq!(scalar3.parse_key("c"), Some(vec![]));
        assert_eq!(scalar3.expected(), 1);
        let scalar2 = spec(&[], &[], None, '.');
        assert_eq!(scalar2.parse_key("0"), Some(vec![]));
    }

    #[test]
    fn ten_million_chunks_cost_nothing_per_chunk() {
        let big = spec(&[10_000_000, 1], &[1, 1], Some("c"), '/');
        assert_eq!(big.expected(), 10_000_000);
    }

    #[test]
    fn nested_arrays_find_their_nearest_array() {
        let outer = ArraySpec { path: "".into(), ..spec(&[4], &[2], None, '.') };
        let inner = ArraySpec { path: "g/s0".into(), ..spec(&[4, 4], &[2, 2], Some("c"), '/') };
        let map: HashMap<&str, &ArraySpec> = [("", &outer), ("g/s0", &inner)].into_iter().collect();
        let mut r = Report::default();
        account_chunk("1", &map, &mut r);
        account_chunk("g/s0/c/1/1", &map, &mut r);
        account_chunk("g/s0/c/2/0", &map, &mut r);
        assert_eq!(r.present_chunks, 2);
        assert_eq!(r.outside_grid, vec![PathBuf::from("g/s0/c/2/0")]);
    }

    #[test]
    fn a_stale_chunk_is_pruned_only_while_the_root_is_the_folder_copied() {
        let (src, dst, other) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let array = ArraySpec { path: "".into(), ..spec(&[4], &[1], None, '.') };
        fs::write(src.path().join("0"), b"chunk").unwrap();
        fs::write(dst.path().join("0"), b"chunk").unwrap();
        // A copy has its source's mtime (equal only within one clock tick when written apart).
        let mtime = fs::metadata(src.path().join("0")).unwrap().modified().unwrap();
        fs::File::options().write(true).open(dst.path().join("0")).unwrap().set_modified(mtime).unwrap();
        fs::write(dst.path().join("1"), b"deleted at the source while nobody watched").unwrap();
        let no_stop = AtomicBool::new(false);
        // The root recorded is another folder (the source was swapped meanwhile): no evidence.
        let root = crate::source::root::RootId::default();
        root.adopt(other.path()).unwrap();
        let run = |root| {
            let arrays = std::slice::from_ref(&array);
            let check =
                Check { marker: "complete", arrays, content: false, prune: Some(root), landed: None, exclude: None };
            verify(src.path(), &crate::dest::Dest::at(dst.path()), &check, &no_stop).unwrap()
        };
        let r = run(&root);
        assert_eq!((r.stale_chunks, r.pruned.len()), (vec![PathBuf::from("1")], 0));
        assert!(dst.path().join("1").exists());
        root.adopt(src.path()).unwrap();
        let r = run(&root);
        assert_eq!(r.pruned, vec![PathBuf::from("1")]);
        assert!(r.ok() && !dst.path().join("1").exists());
    }

    #[test]
    fn the_runs_own_copies_prove_only_the_versions_they_are_of() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let array = ArraySpec { path: "".into(), ..spec(&[4], &[1], None, '.') };
        for key in ["0", "1"] {
            fs::write(src.path().join(key), b"chunk").unwrap();
            fs::write(dst.path().join(key), b"chunk").unwrap();
        }
        let ident = |key: &str| crate::sys::path_identity(&src.path().join(key)).unwrap();
        let (zero, one) = (ident("0"), ident("1"));
        // The destination's "1" is not a copy of this version (another mtime).
        let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        fs::File::options().write(true).open(dst.path().join("1")).unwrap().set_modified(earlier).unwrap();
        let run = |copied: &dyn Fn(&Path) -> Option<crate::vocab::Identity>, count| {
            let landed = Landed { copied, settled: None, count };
            let check = Check {
                marker: "complete",
                arrays: std::slice::from_ref(&array),
                content: false,
                prune: None,
                landed: Some(&landed),
                exclude: None,
            };
            verify(src.path(), &crate::dest::Dest::at(dst.path()), &check, &AtomicBool::new(false)).unwrap()
        };
        // Both copies are of the current versions: proven without a look at the destination.
        let r = run(&|rel| [("0", zero), ("1", one)].into_iter().find(|(k, _)| rel == Path::new(k)).map(|(_, i)| i), 2);
        assert!(r.ok() && r.files == 2, "{r:?}");
        // "1" was copied at another version: its copy is looked at, and its mtime is not the source's.
        let older = crate::vocab::Identity { mtime_ns: one.mtime_ns - 5_000_000_000, ..one };
        let r = run(&|rel| (rel == Path::new("0")).then_some(zero).or((rel == Path::new("1")).then_some(older)), 2);
        assert_eq!(r.mtime_mismatch, vec![PathBuf::from("1")]);
        // A copy whose source is gone ("2", deleted unseen): the destination is walked, and it is stale.
        fs::write(dst.path().join("2"), b"chunk").unwrap();
        let r = run(&|rel| [("0", zero), ("1", one)].into_iter().find(|(k, _)| rel == Path::new(k)).map(|(_, i)| i), 3);
        assert_eq!(r.stale_chunks, vec![PathBuf::from("2")]);
    }

    #[test]
    fn a_folders_record_proves_its_settled_files_as_a_whole_or_they_are_looked_at() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let array = ArraySpec { path: "".into(), ..spec(&[4, 1], &[1, 1], None, '/') };
        for key in ["0/0", "1/0"] {
            fs::create_dir_all(src.path().join(key).parent().unwrap()).unwrap();
            fs::create_dir_all(dst.path().join(key).parent().unwrap()).unwrap();
            fs::write(src.path().join(key), b"chunk").unwrap();
            fs::copy(src.path().join(key), dst.path().join(key)).unwrap();
        }
        let mut settled = crate::track::settled::Settled::default();
        for key in ["0/0", "1/0"] {
            // Keyed as walks spell them (`\` on Windows).
            let rel = Path::new(key).components().collect::<PathBuf>();
            settled.keep(rel.as_os_str(), &crate::sys::path_identity(&src.path().join(key)).unwrap());
        }
        let run = |settled: &crate::track::settled::Settled| {
            let landed = Landed { copied: &|_| None, settled: Some(settled), count: 2 };
            let arrays = std::slice::from_ref(&array);
            let check =
                Check { marker: "complete", arrays, content: false, prune: None, landed: Some(&landed), exclude: None };
            verify(src.path(), &crate::dest::Dest::at(dst.path()), &check, &AtomicBool::new(false)).unwrap()
        };
        // Unchanged: proven without a look at the destination (its copies have other mtimes).
        let r = run(&settled);
        assert!(r.ok() && r.proven_as_copied == 2 && !r.destination_walked, "{r:?}");
        assert_eq!(r.present_chunks, 2);
        // "1/0" rewritten since it settled: its folder's files are looked at, and its copy is stale.
        fs::write(src.path().join("1/0"), b"CHUNK").unwrap();
        // Its mtime moved on for certain (a pause before the write would only make it likely).
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        fs::File::options().write(true).open(src.path().join("1/0")).unwrap().set_modified(later).unwrap();
        let r = run(&settled);
        assert_eq!((r.proven_as_copied, r.mtime_mismatch.clone()), (1, vec![Path::new("1").join("0")]), "{r:?}");
        assert!(r.destination_walked && !r.ok());
    }

    #[test]
    fn a_folders_files_listed_around_its_subfolders_are_proven_by_its_own_record() {
        // The proof runs as the depth-first walk leaves each folder: p's files come before and
        // after p/s's (readdir's order, many names), and p/s, rewritten, fails its proof while
        // the walk is still in p. Neither folder's sum may take the other's files.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let keys: Vec<String> =
            (0..20).map(|i| format!("p/{i}")).chain((0..5).map(|i| format!("p/s/{i}"))).chain(["q/0".into()]).collect();
        let mut settled = crate::track::settled::Settled::default();
        for key in &keys {
            for root in [src.path(), dst.path()] {
                fs::create_dir_all(root.join(key).parent().unwrap()).unwrap();
            }
            fs::write(src.path().join(key), b"chunk").unwrap();
            copy(src.path(), dst.path(), key);
            // Keyed as walks spell them (`\` on Windows).
            let rel = Path::new(key).components().collect::<PathBuf>();
            settled.keep(rel.as_os_str(), &crate::sys::path_identity(&src.path().join(key)).unwrap());
        }
        let listed: Vec<PathBuf> = walkdir::WalkDir::new(src.path().join("p"))
            .into_iter()
            .map(|e| e.unwrap().path().strip_prefix(src.path()).unwrap().to_path_buf())
            .collect();
        let s_at = listed.iter().position(|p| *p == Path::new("p").join("s")).unwrap();
        // Linux lists a folder in its own order (here p/s among p's files); Windows in name order
        // (p/s last): there the proof is tested without the split.
        if cfg!(target_os = "linux") {
            assert!(s_at > 1 && s_at < listed.len() - 5 - 1, "p's files on both sides of p/s: {listed:?}");
        }
        let run = || {
            let landed = Landed { copied: &|_| None, settled: Some(&settled), count: keys.len() };
            let check = Check {
                marker: "complete",
                arrays: &[],
                content: false,
                prune: None,
                landed: Some(&landed),
                exclude: None,
            };
            verify(src.path(), &crate::dest::Dest::at(dst.path()), &check, &AtomicBool::new(false)).unwrap()
        };
        let r = run();
        assert!(r.ok() && r.proven_as_copied == keys.len() as u64 && !r.destination_walked, "{r:?}");
        fs::write(src.path().join("p/s/3"), b"CHUNK").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        fs::File::options().write(true).open(src.path().join("p/s/3")).unwrap().set_modified(later).unwrap();
        let r = run();
        assert_eq!(r.mtime_mismatch, vec![Path::new("p").join("s").join("3")], "{r:?}");
        assert_eq!(r.proven_as_copied, 21, "p and q proven by their records, p/s looked at: {r:?}");
    }

    /// Copies `rel` from `src` to `dst` with its mtime, as the copier does.
    fn copy(src: &Path, dst: &Path, rel: &str) {
        fs::copy(src.join(rel), dst.join(rel)).unwrap();
        let mtime = fs::metadata(src.join(rel)).unwrap().modified().unwrap();
        fs::File::options().write(true).open(dst.join(rel)).unwrap().set_modified(mtime).unwrap();
    }

    fn plain(src: &Path, dst: &Path, content: bool, exclude: Option<&crate::track::exclude::Exclude>) -> Report {
        let check = Check { marker: "complete", arrays: &[], content, prune: None, landed: None, exclude };
        verify(src, &crate::dest::Dest::at(dst), &check, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn with_contents_compared_same_size_other_bytes_is_a_mismatch() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (rel, copy_bytes) in [("same", b"12345"), ("differs", b"12X45")] {
            fs::write(src.path().join(rel), b"12345").unwrap();
            fs::write(dst.path().join(rel), copy_bytes).unwrap();
        }
        let r = plain(src.path(), dst.path(), true, None);
        assert_eq!(r.content_mismatch, vec![PathBuf::from("differs")], "the bytes decide, not the mtimes");
        assert!(r.mtime_mismatch.is_empty() && !r.ok());
    }

    #[test]
    fn what_the_destination_holds_besides_the_copies_is_found_and_counted_right() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (rel, bytes) in
            [("a", &b"123"[..]), ("b", b"45"), ("complete", b"done"), ("skip.tmp", b"x"), ("k.__lock", b"")]
        {
            fs::write(src.path().join(rel), bytes).unwrap();
        }
        copy(src.path(), dst.path(), "a");
        copy(src.path(), dst.path(), "b");
        let exclude = crate::track::exclude::Exclude::new(&["*.tmp".into()]).unwrap();
        // Only the copies: nothing else reported, the marker and what is left out not compared.
        let r = plain(src.path(), dst.path(), false, Some(&exclude));
        assert!(r.ok() && r.extra.is_empty() && r.partials.is_empty(), "{r:?}");
        assert_eq!((r.files, r.bytes, r.excluded.clone()), (2, 5, vec![PathBuf::from("skip.tmp")]));
        // A partial left behind is found, however the names balance.
        fs::write(dst.path().join(format!(".a{PARTIAL_SUFFIX}")), b"1").unwrap();
        let r = plain(src.path(), dst.path(), false, Some(&exclude));
        assert_eq!(r.partials, vec![PathBuf::from(format!(".a{PARTIAL_SUFFIX}"))]);
        assert!(!r.ok());
        fs::remove_file(dst.path().join(format!(".a{PARTIAL_SUFFIX}"))).unwrap();
        // A file the source does not have is found, even beside as many names that are left out.
        fs::write(dst.path().join("c"), b"1").unwrap();
        for rel in ["x.__lock", "y.__lock"] {
            fs::write(dst.path().join(rel), b"").unwrap();
        }
        let r = plain(src.path(), dst.path(), false, Some(&exclude));
        assert_eq!(r.extra, vec![PathBuf::from("c")]);
    }

    #[test]
    fn an_mtime_matches_only_within_the_unit_the_destination_keeps() {
        // (source, copy, same): a copy with whole seconds matches a source within one second of it.
        for (src, copy, same) in [
            (5_400_000_000, 5_000_000_000, true),
            (4_600_000_000, 5_000_000_000, true),
            (6_000_000_000, 5_000_000_000, false),
            (7_000_000_000, 1_000_000_000, false),
            (5_000_000_003, 5_000_000_003, true),
            (5_000_000_001, 5_000_000_003, false),
            // exFAT keeps 10 ms steps: a copy cut to them matches a source within them.
            (5_123_456_789, 5_120_000_000, true),
            (5_133_456_789, 5_120_000_000, false),
        ] {
            assert_eq!(crate::vocab::same_mtime_ns(src, copy), same, "{src} {copy}");
        }
    }

    #[test]
    fn a_copy_of_another_size_or_a_folder_in_its_place_is_no_copy() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for rel in ["short", "folder"] {
            fs::write(src.path().join(rel), b"12345").unwrap();
        }
        fs::write(dst.path().join("short"), b"1234").unwrap();
        fs::create_dir(dst.path().join("folder")).unwrap();
        let r = plain(src.path(), dst.path(), false, None);
        assert_eq!(r.size_mismatch, vec![(PathBuf::from("short"), 5, 4)]);
        assert_eq!(r.missing, vec![PathBuf::from("folder")]);
    }

    #[test]
    fn the_copy_of_a_freed_file_is_never_pruned_even_once_it_no_longer_looks_freed() {
        // The journal's entry no longer matches the copy (its mtime changed at the destination),
        // but the name was freed: the copy may be the only one left. Kept, and named.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let array = ArraySpec { path: "".into(), ..spec(&[4], &[1], None, '.') };
        fs::write(dst.path().join("1"), b"only copy").unwrap();
        let ident = crate::vocab::Identity { dev: 1, ino: 1, size: 99, mtime_ns: 1, ctime_ns: 1 };
        let freed = crate::vocab::Copied { rel: PathBuf::from("1"), ident, hash: None };
        let dest = crate::dest::Dest::at(dst.path());
        crate::end::journal::Writer::open(&dest, src.path()).unwrap().freeing(&[&freed]).unwrap();
        let root = crate::source::root::RootId::default();
        root.adopt(src.path()).unwrap();
        dest.keep_freed(crate::end::journal::Journal::read(&dest).unwrap().freed_names());
        let arrays = std::slice::from_ref(&array);
        let check =
            Check { marker: "complete", arrays, content: false, prune: Some(&root), landed: None, exclude: None };
        let r = verify(src.path(), &dest, &check, &AtomicBool::new(false)).unwrap();
        assert_eq!((r.stale_chunks, r.pruned), (vec![PathBuf::from("1")], vec![]));
        assert!(dst.path().join("1").exists());
    }

    #[test]
    fn the_markers_copy_never_balances_a_stale_chunk() {
        // The count that spares the destination walk leaves the marker out: counted, the marker's
        // copy would balance the stale chunk "1" and it would pass unseen.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let array = ArraySpec { path: "".into(), ..spec(&[4], &[1], None, '.') };
        fs::write(src.path().join("0"), b"chunk").unwrap();
        copy(src.path(), dst.path(), "0");
        fs::write(dst.path().join("1"), b"stale").unwrap();
        fs::write(dst.path().join("complete"), b"done").unwrap();
        let arrays = std::slice::from_ref(&array);
        let check = Check { marker: "complete", arrays, content: false, prune: None, landed: None, exclude: None };
        let r = verify(src.path(), &crate::dest::Dest::at(dst.path()), &check, &AtomicBool::new(false)).unwrap();
        assert_eq!(r.stale_chunks, vec![PathBuf::from("1")]);
    }
}
