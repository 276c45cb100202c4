//! `--delete-source`: freeing the acquisition disk once the copy is proven, file by file.
//!
//! A source file is deleted only when (1) the acquisition is over and the engine has drained, (2)
//! this process saw it copied, (3) it is unchanged since (same device, inode, size, mtime), (4) its
//! destination copy is flushed to stable storage (fsync of the file and its folder) and (5) that
//! copy checks out: same size, and with checksums the same hash. Metadata files go after the data
//! they describe, the end marker last. Before a file is deleted its path is appended (and fsynced)
//! to a journal at the destination root, so that after a crash a later run knows the source lost
//! those files on purpose and never "mirrors" the absence by pruning the copy.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use crate::manifest;
use crate::vocab::Copied;

/// The journal of source files deleted after their copy was proven (one relative path per line).
pub const JOURNAL: &str = ".softcopy-moved";

/// What the mover did.
#[derive(Debug, Default)]
pub struct MoveReport {
    pub deleted: Vec<PathBuf>,
    /// Files kept at the source, with the reason.
    pub kept: Vec<(PathBuf, String)>,
    pub folders_removed: u64,
}

/// The paths in the journal at `dst_root` (empty if there is none).
pub fn moved(dst_root: &Path) -> HashSet<PathBuf> {
    let Ok(f) = File::open(dst_root.join(JOURNAL)) else { return HashSet::new() };
    io::BufReader::new(f).lines().map_while(Result::ok).filter(|l| !l.is_empty()).map(PathBuf::from).collect()
}

fn is_metadata(rel: &Path) -> bool {
    matches!(
        rel.file_name().and_then(|n| n.to_str()),
        Some(".zarray" | ".zattrs" | ".zgroup" | ".zmetadata" | "zarr.json")
    )
}

/// Checks one file and, if every condition holds, journals and deletes its source.
fn move_one(src_root: &Path, dst_root: &Path, c: &Copied, checksum: bool, journal: &mut File) -> Result<(), String> {
    let src = src_root.join(&c.rel);
    let dst = dst_root.join(&c.rel);
    let now = fs::symlink_metadata(&src).map_err(|e| format!("source: {e}"))?;
    if crate::vocab::identity(&now) != c.ident {
        return Err("changed at the source since it was copied".into());
    }
    let copy = File::open(&dst).map_err(|e| format!("destination: {e}"))?;
    copy.sync_all().map_err(|e| format!("fsync of the copy: {e}"))?;
    if let Some(parent) = dst.parent() {
        // The rename that gave the copy its name is durable only once its folder is flushed.
        File::open(parent).and_then(|d| d.sync_all()).map_err(|e| format!("fsync of its folder: {e}"))?;
    }
    let size = copy.metadata().map_err(|e| e.to_string())?.len();
    if size != c.ident.size {
        return Err(format!("the copy has {size} bytes, the source {}", c.ident.size));
    }
    if checksum {
        let want = match c.hash {
            Some(h) => h,
            None => manifest::hash_file(&src).map_err(|e| format!("hash of the source: {e}"))?,
        };
        if manifest::hash_reader(&copy).map_err(|e| format!("hash of the copy: {e}"))? != want {
            return Err("the copy's content hash differs".into());
        }
    }
    let line = format!("{}\n", c.rel.to_string_lossy());
    journal.write_all(line.as_bytes()).and_then(|()| journal.sync_data()).map_err(|e| format!("journal: {e}"))?;
    fs::remove_file(&src).map_err(|e| format!("delete: {e}"))
}

/// Deletes the source files in `copied` that pass every check, data first, then metadata, then
/// the `marker`; then removes source folders left empty (never the source root itself).
pub fn delete_sources(
    src_root: &Path,
    dst_root: &Path,
    copied: &[Copied],
    marker: Option<&Copied>,
    checksum: bool,
) -> io::Result<MoveReport> {
    let mut journal = OpenOptions::new().create(true).append(true).open(dst_root.join(JOURNAL))?;
    let mut report = MoveReport::default();
    let (meta, data): (Vec<&Copied>, Vec<&Copied>) = copied.iter().partition(|c| is_metadata(&c.rel));
    for c in data {
        match move_one(src_root, dst_root, c, checksum, &mut journal) {
            Ok(()) => report.deleted.push(c.rel.clone()),
            Err(why) => report.kept.push((c.rel.clone(), why)),
        }
    }
    // Metadata and the marker only once every data file is gone: while any data stays, the source
    // stays a readable archive, and a later run finds its marker and finishes the job.
    let data_kept = !report.kept.is_empty();
    for c in meta.into_iter().chain(marker) {
        if data_kept {
            report.kept.push((c.rel.clone(), "kept while data files remain at the source".into()));
            continue;
        }
        match move_one(src_root, dst_root, c, checksum, &mut journal) {
            Ok(()) => report.deleted.push(c.rel.clone()),
            Err(why) => report.kept.push((c.rel.clone(), why)),
        }
    }
    // Empty folders go too (writers leave empty ones behind for fill-value chunks), deepest first;
    // a folder that still holds anything fails to be removed and stays.
    if !report.deleted.is_empty() {
        let dirs: BTreeSet<PathBuf> = walkdir::WalkDir::new(src_root)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        for d in dirs.iter().rev() {
            if fs::remove_dir(d).is_ok() {
                report.folders_removed += 1;
            }
        }
    }
    Ok(report)
}
