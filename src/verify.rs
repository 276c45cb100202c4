//! The end-of-copy proof (invariant 5): every source file is at the destination with the same
//! size, no partial is left, and for every Zarr array the chunk (or shard) files are accounted for
//! against the grid given by the final metadata — present, or absent at the source (fill value).
//!
//! The expected set is never materialised: a file's key is parsed and checked against the grid, so
//! an array of ten million chunks costs nothing per absent chunk.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::vocab::{is_ignored, PARTIAL_SUFFIX};

/// Where a shard keeps its index, and how to check it (Zarr v3 `sharding_indexed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardIndex {
    /// Inner chunks per shard: the index has one (offset, nbytes) pair of u64 for each.
    pub chunks: u64,
    /// `index_location: "end"` (the default) or `"start"`.
    pub at_end: bool,
    /// The index codecs end with `crc32c`: 4 bytes of CRC32C after the index.
    pub crc32c: bool,
}

impl ShardIndex {
    fn len(&self) -> u64 {
        self.chunks * 16 + if self.crc32c { 4 } else { 0 }
    }

    /// Checks that the file holds a whole shard: an index where the codec puts it, a matching
    /// CRC32C, and every chunk it points to inside the file. This is what an interrupted writer
    /// (acquire-zarr writes the index last) or a truncated copy fails.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs::File::open(path).map_err(|e| e.to_string())?;
        let size = f.metadata().map_err(|e| e.to_string())?.len();
        let want = self.len();
        if size < want {
            return Err(format!("{size} bytes, too short for its {want}-byte index"));
        }
        f.seek(if self.at_end { SeekFrom::End(-(want as i64)) } else { SeekFrom::Start(0) })
            .map_err(|e| e.to_string())?;
        let mut index = vec![0u8; want as usize];
        f.read_exact(&mut index).map_err(|e| e.to_string())?;
        let entries = &index[..(self.chunks * 16) as usize];
        if self.crc32c {
            let stored = u32::from_le_bytes(index[entries.len()..].try_into().expect("4 bytes"));
            if crc32c::crc32c(entries) != stored {
                return Err("index checksum (CRC32C) does not match".into());
            }
        }
        for pair in entries.chunks_exact(16) {
            let offset = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
            let nbytes = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
            if offset == u64::MAX && nbytes == u64::MAX {
                continue; // an empty inner chunk (fill value)
            }
            if offset.checked_add(nbytes).is_none_or(|end| end > size) {
                return Err(format!("index points past the end of the file ({offset} + {nbytes} > {size})"));
            }
        }
        Ok(())
    }
}

/// What the final metadata says the acquisition holds: its arrays, and the metadata files that could
/// not be read or understood. An array whose metadata cannot be read drops out of the chunk
/// accounting, so its stale chunks would pass as harmless extras: the run cannot be verified
/// while any is listed (issue 12).
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
fn differing(src: &Path, dst: &Path, rels: &[PathBuf]) -> Vec<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(rel) = rels.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if !crate::manifest::same_contents(&src.join(rel), &dst.join(rel)).unwrap_or(false) {
                        out.lock().unwrap_or_else(|e| e.into_inner()).push(rel.clone());
                    }
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort();
    out
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
pub fn verify(
    src: &Path,
    dest: &crate::dest::Dest,
    marker: &str,
    arrays: &[ArraySpec],
    content: bool,
    prune: Option<&crate::root::RootId>,
    stop: &AtomicBool,
) -> std::io::Result<Report> {
    let dst = dest.root();
    let mut report = Report::default();
    let mut same_size = Vec::new();
    let by_path: HashMap<&str, &ArraySpec> = arrays.iter().map(|a| (a.path.as_str(), a)).collect();
    report.expected_chunks = arrays.iter().map(ArraySpec::expected).sum();
    // Files the source lost on purpose (`--delete-source`): never extra, never stale.
    let journal = crate::journal::Journal::read(dst)?;
    // Source files that have a file of their name at the destination.
    let mut copies = 0usize;
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry?;
        let Ok(rel) = entry.path().strip_prefix(src) else {
            continue;
        };
        if entry.file_type().is_symlink() {
            report.symlinks.push(rel.to_path_buf());
            continue;
        }
        if !entry.file_type().is_file() || is_ignored(rel) || rel.as_os_str() == marker {
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped"));
        }
        let meta = entry.metadata()?;
        let size = meta.len();
        report.files += 1;
        report.bytes += size;
        let copy = dst.join(rel);
        // Looked up beneath the root: a copy reached through a link in the destination is not there.
        let arrived = match dest.stat(rel) {
            // Another mtime is not the version copied; when contents are compared, they decide.
            Ok(m) if m.is_file() && m.len() == size && !same_mtime(&meta, &m) && !content => {
                copies += 1;
                report.mtime_mismatch.push(rel.to_path_buf());
                false
            }
            Ok(m) if m.is_file() && m.len() == size => {
                copies += 1;
                if content {
                    same_size.push(rel.to_path_buf());
                }
                true
            }
            Ok(m) if m.is_file() => {
                copies += 1;
                report.size_mismatch.push((rel.to_path_buf(), size, m.len()));
                false
            }
            _ => {
                report.missing.push(rel.to_path_buf());
                false
            }
        };
        if let Some(shard) = account_chunk(&slash_path(rel), &by_path, &mut report) {
            if arrived {
                if let Err(why) = shard.check(&copy) {
                    match shard.check(entry.path()) {
                        Err(at_source) => report.bad_shards_at_source.push((rel.to_path_buf(), at_source)),
                        Ok(()) => report.bad_shards.push((rel.to_path_buf(), why)),
                    }
                }
            }
        }
    }
    // The destination usually holds exactly the copies of the source's files, with nothing left
    // over: counted by name first (no stat), the per-file lookup at the source is needed only if
    // it holds more. On a million files that lookup is a third of the verification's stats. Not
    // with a journal: an entry must never balance a file that should not be there (issue 12, item 7).
    let counted = |e: &walkdir::DirEntry| {
        let rel = e.path().strip_prefix(dst).unwrap_or(e.path());
        let partial = e.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX);
        e.file_type().is_file() && (partial || !is_ignored(rel) && rel.as_os_str() != marker)
    };
    let mut in_dst = 0usize;
    if journal.is_empty() {
        for entry in walkdir::WalkDir::new(dst).follow_links(false) {
            in_dst += usize::from(counted(&entry?));
        }
    }
    let shortcut = journal.is_empty() && in_dst == copies;
    let walk = if shortcut { None } else { Some(walkdir::WalkDir::new(dst).follow_links(false)) };
    for entry in walk.into_iter().flatten() {
        // Pruning deletes: never after a stop request.
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped"));
        }
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(dst) else {
            continue;
        };
        if entry.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX) {
            report.partials.push(rel.to_path_buf());
        } else if is_ignored(rel) {
            // Our own state at the root.
        } else if absent(&src.join(rel)) && rel.as_os_str() != marker {
            let array = chunk_of(&slash_path(rel), &by_path).map(|(spec, _)| PathBuf::from(&spec.path));
            if entry.metadata().is_ok_and(|m| journal.accounts_for(src, rel, &m, array.as_deref())) {
                // Freed from this very acquisition by an earlier run, after its copy was proven.
            } else if array.is_none() {
                report.extra.push(rel.to_path_buf());
            } else if prune.is_some_and(|root| root.check(src).is_ok())
                && dest.changing().is_ok()
                && dest.remove_file(rel).is_ok()
            {
                report.pruned.push(rel.to_path_buf());
            } else {
                report.stale_chunks.push(rel.to_path_buf());
            }
        }
    }
    report.content_mismatch = differing(src, dst, &same_size);
    Ok(report)
}

/// Whether `path` is proven absent: NotFound (or a parent that is a file), not any error. A file
/// that cannot be looked at is not stale, and is never pruned (invariant 8).
fn absent(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(_) => false,
        Err(e) => matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory),
    }
}

/// Whether the copy's mtime is the source's, within what the destination can store: a copy carries
/// its source's mtime, but FAT keeps 2 s, SFTP (sshfs) and many network shares whole seconds, SMB
/// 100 ns, so a destination mtime that is a whole number of such units matches any source mtime
/// within one unit of it.
fn same_mtime(src: &fs::Metadata, dst: &fs::Metadata) -> bool {
    let ns = |m: &fs::Metadata| crate::vocab::identity(m).mtime_ns;
    same_mtime_ns(ns(src), ns(dst))
}

/// [`same_mtime`] of two mtimes in nanoseconds: the source's `s`, the copy's `d`.
pub fn same_mtime_ns(s: i64, d: i64) -> bool {
    s == d || (s - d).abs() < crate::vocab::time_unit_ns(d)
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

    fn shard_file(dir: &Path, chunks: &[&[u8]], crc: bool, at_end: bool) -> PathBuf {
        let mut index = Vec::new();
        let mut data = Vec::new();
        let base = if at_end { 0 } else { chunks.len() as u64 * 16 + if crc { 4 } else { 0 } };
        for c in chunks {
            if c.is_empty() {
                index.extend(u64::MAX.to_le_bytes());
                index.extend(u64::MAX.to_le_bytes());
            } else {
                index.extend((base + data.len() as u64).to_le_bytes());
                index.extend((c.len() as u64).to_le_bytes());
                data.extend_from_slice(c);
            }
        }
        if crc {
            let sum = crc32c::crc32c(&index);
            index.extend(sum.to_le_bytes());
        }
        let file = if at_end { [data, index].concat() } else { [index, data].concat() };
        let path = dir.join("shard");
        fs::write(&path, file).unwrap();
        path
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
        let root = crate::root::RootId::default();
        root.adopt(other.path()).unwrap();
        let r = verify(
            src.path(),
            &crate::dest::Dest::at(dst.path()),
            "complete",
            std::slice::from_ref(&array),
            false,
            Some(&root),
            &no_stop,
        )
        .unwrap();
        assert_eq!((r.stale_chunks, r.pruned.len()), (vec![PathBuf::from("1")], 0));
        assert!(dst.path().join("1").exists());
        root.adopt(src.path()).unwrap();
        let r =
            verify(src.path(), &crate::dest::Dest::at(dst.path()), "complete", &[array], false, Some(&root), &no_stop)
                .unwrap();
        assert_eq!(r.pruned, vec![PathBuf::from("1")]);
        assert!(r.ok() && !dst.path().join("1").exists());
    }

    #[test]
    fn whole_shards_pass_and_broken_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        for (crc, at_end) in [(true, true), (false, true), (true, false)] {
            let shard = ShardIndex { chunks: 3, at_end, crc32c: crc };
            let p = shard_file(dir.path(), &[b"abcd", b"", b"efgh"], crc, at_end);
            assert_eq!(shard.check(&p), Ok(()), "crc {crc} at_end {at_end}");
        }
        let shard = ShardIndex { chunks: 3, at_end: true, crc32c: true };
        let p = shard_file(dir.path(), &[b"abcd", b"", b"efgh"], true, true);
        // A killed acquire-zarr writer: chunk data, no index.
        fs::write(&p, b"abcdefgh").unwrap();
        assert!(shard.check(&p).unwrap_err().contains("too short"));
        // One flipped bit in the index.
        let p = shard_file(dir.path(), &[b"abcd", b"", b"efgh"], true, true);
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(shard.check(&p).unwrap_err().contains("CRC32C"));
        // Truncated data with an index that still claims it (no CRC to catch it).
        let unchecked = ShardIndex { chunks: 1, at_end: false, crc32c: false };
        let p = shard_file(dir.path(), &[b"abcdefgh"], false, false);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 2]).unwrap();
        assert!(unchecked.check(&p).unwrap_err().contains("past the end"));
    }
}
