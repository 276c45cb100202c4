//! `--delete-source`: freeing the acquisition disk once the copy is proven, file by file.
//!
//! A source file is deleted only when (1) this run's verification passed (decided in the engine),
//! (2) this process saw it copied (or found it copied by an earlier run), (3) it is unchanged since
//! (the same identity: device, inode, size, mtime, ctime), (4) every copy is flushed to stable
//! storage (one `syncfs`) and (5) its copy is proven identical by content: its hash read back, or
//! compared byte for byte.
//! Metadata files go after the data they describe, the end marker last. Before a file is deleted it
//! is journaled at the destination root (`journal.rs`), so that a later run knows the source lost
//! it on purpose and never "mirrors" the absence by pruning the copy.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::dest::server_hash::{Algo, Answer, Digest};
use crate::dest::Dest;
use crate::end::aside::{self, Aside};
use crate::end::journal::Writer;
use crate::end::manifest;
use crate::vocab::{is_metadata, Copied};

/// What the mover did.
#[derive(Clone, Debug, Default)]
pub struct MoveReport {
    pub deleted: Vec<PathBuf>,
    /// Files kept at the source, with the reason.
    pub kept: Vec<(PathBuf, String)>,
    pub folders_removed: u64,
}

/// Why a copy is not proven identical to its source.
enum Unproven {
    /// The bytes differ: the copy is wrong (bit rot, a faulty share): the run is not verified.
    Differs,
    /// The copy is not at the destination (removed since it was verified, or never there where
    /// verification trusted this run's records): the run is not verified.
    Gone,
    /// Anything else (the source changed since, a read failed): the source is kept, that is all.
    Other(String),
}

/// Whether the copy of `c` is proven identical to its source: the source unchanged since it was
/// copied, and the bytes the same. With the hash taken while copying, the copy is read back and
/// hashed; without one (no `--checksum`, or a copy an earlier run made) source and copy are read
/// side by side. Size and mtime are not proof: a copy damaged with both unchanged passes them.
fn proven(src_root: &Path, dest: &Dest, c: &Copied) -> Result<(), Unproven> {
    let src = src_root.join(&c.rel);
    unchanged(&src, c).map_err(Unproven::Other)?;
    let gone_or = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Unproven::Gone,
        _ => Unproven::Other(format!("destination: {e}")),
    };
    let size = dest.stat(&c.rel).map_err(gone_or)?.ident.size;
    let copy = dest.open_file(&c.rel).map_err(gone_or)?;
    if size != c.ident.size {
        return Err(Unproven::Differs);
    }
    let same = match c.hash {
        Some(want) => manifest::hash_reader(copy).map(|h| h == want),
        None => File::open(&src).and_then(|s| crate::content::same_bytes(s, copy)),
    };
    match same {
        Ok(true) => Ok(()),
        Ok(false) => Err(Unproven::Differs),
        Err(e) => Err(Unproven::Other(format!("reading to compare: {e}"))),
    }
}

/// The source file is still the version that was copied.
fn unchanged(src: &Path, c: &Copied) -> Result<(), String> {
    let now = crate::sys::path_identity(src).map_err(|e| format!("source: {e}"))?;
    if now != c.ident {
        return Err("changed at the source since it was copied".into());
    }
    Ok(())
}

/// The copies proven identical to their sources, and why the others are not.
#[derive(Debug, Default)]
pub struct Proof {
    pub proven: Vec<Copied>,
    /// Copies whose bytes differ from their source's: the copy is wrong.
    pub differs: Vec<PathBuf>,
    /// Copies not at the destination: the copy is not whole.
    pub gone: Vec<PathBuf>,
    /// Sources kept for another reason (changed since copied, unreadable).
    pub kept: Vec<(PathBuf, String)>,
    /// Copies proven by the server's digests (an ssh destination), and by reading them back.
    pub by_server: u64,
    pub read_back: u64,
}

/// Proves each copy in `copied` by content (see `proven`), between verification and publishing:
/// a copy found different fails the run before its marker is published. Ends between files on a
/// stop request (the rest unproven).
pub fn prove(src_root: &Path, dest: &Dest, copied: Vec<Copied>, stop: &AtomicBool) -> Proof {
    let mut proof = Proof::default();
    if let Some(algo) = dest.server_algo() {
        by_server(src_root, dest, algo, copied, stop, &mut proof);
        return proof;
    }
    for c in copied {
        if stop.load(Ordering::Relaxed) {
            proof.kept.push((c.rel, "stopped before it was proven".into()));
            continue;
        }
        let verdict = proven(src_root, dest, &c);
        proof.read_back += u64::from(verdict.is_ok());
        proof.record(c, verdict);
    }
    proof
}

impl Proof {
    fn record(&mut self, c: Copied, verdict: Result<(), Unproven>) {
        match verdict {
            Ok(()) => self.proven.push(c),
            Err(Unproven::Differs) => self.differs.push(c.rel),
            Err(Unproven::Gone) => self.gone.push(c.rel),
            Err(Unproven::Other(why)) => self.kept.push((c.rel, why)),
        }
    }
}

/// Copies, and their bytes, whose digests one command on the server gives.
const SERVER_FILES: usize = 1024;
const SERVER_BYTES: u64 = 4 << 30;

/// Proves copies on an ssh destination by the server's digests of them, many per command, against
/// the source's bytes hashed here with the same algorithm (the hash taken while copying where it
/// is the server's: BLAKE3). What the server did not prove is read back; what it could not
/// answer for is kept (docs/design.md, "The ssh destination: proof by the server's hash").
fn by_server(src_root: &Path, dest: &Dest, algo: Algo, copied: Vec<Copied>, stop: &AtomicBool, proof: &mut Proof) {
    let mut rest = copied.into_iter().peekable();
    while rest.peek().is_some() {
        let (mut batch, mut bytes) = (Vec::new(), 0u64);
        while let Some(c) = rest.next_if(|_| batch.len() < SERVER_FILES && (batch.is_empty() || bytes < SERVER_BYTES)) {
            bytes += c.ident.size;
            batch.push(c);
        }
        if stop.load(Ordering::Relaxed) {
            proof.kept.extend(batch.into_iter().map(|c| (c.rel, "stopped before it was proven".into())));
            continue;
        }
        let rels: Vec<&Path> = batch.iter().map(|c| c.rel.as_path()).collect();
        // The sources are hashed here while the server hashes the copies.
        let (answers, ours) = std::thread::scope(|s| {
            let hashing = s.spawn(|| batch.iter().map(|c| source_digest(src_root, algo, c, stop)).collect::<Vec<_>>());
            (dest.server_digests(&rels, bytes).unwrap_or_default(), hashing.join().unwrap_or_default())
        });
        let (mut answers, mut ours) = (answers.into_iter(), ours.into_iter());
        for c in batch {
            let ours = ours.next().unwrap_or_else(|| Err(Unproven::Other("the source was not hashed".into())));
            let verdict = match answers.next() {
                Some(Answer::Digest { size, digest }) => {
                    let verdict = by_digest(&c, size, &digest, ours);
                    proof.by_server += u64::from(verdict.is_ok());
                    verdict
                }
                Some(Answer::Gone) => Err(Unproven::Gone),
                Some(Answer::Keep(why)) => Err(Unproven::Other(why)),
                Some(Answer::ReadBack(_)) | None => {
                    let verdict = proven(src_root, dest, &c);
                    proof.read_back += u64::from(verdict.is_ok());
                    verdict
                }
            };
            proof.record(c, verdict);
        }
    }
}

/// The source's side of a proof by the server's digest.
enum Ours {
    /// The hash taken while copying (`--checksum`), where the server's algorithm is BLAKE3.
    Taken(crate::vocab::Hash),
    /// The source read and hashed now with the server's algorithm.
    Read(Digest),
}

/// `c`'s source as the server's digest is compared with: found unchanged since it was copied, and
/// (where read now) unchanged again after it was read: a source written meanwhile is kept, never
/// taken for a bad copy.
fn source_digest(src_root: &Path, algo: Algo, c: &Copied, stop: &AtomicBool) -> Result<Ours, Unproven> {
    if stop.load(Ordering::Relaxed) {
        return Err(Unproven::Other("stopped before it was proven".into()));
    }
    let src = src_root.join(&c.rel);
    unchanged(&src, c).map_err(Unproven::Other)?;
    if let (Algo::Blake3, Some(hash)) = (algo, c.hash) {
        return Ok(Ours::Taken(hash));
    }
    let read = File::open(&src).and_then(|f| algo.digest(f));
    let read = read.map_err(|e| Unproven::Other(format!("reading the source to compare: {e}")))?;
    unchanged(&src, c).map_err(Unproven::Other)?;
    Ok(Ours::Read(read))
}

/// Whether the server's `digest` of a copy of `size` bytes is that of `c`'s source (`ours`).
fn by_digest(c: &Copied, size: u64, digest: &Digest, ours: Result<Ours, Unproven>) -> Result<(), Unproven> {
    let ours = ours?;
    let same = match ours {
        Ours::Taken(hash) => digest[..hash.len()] == hash,
        Ours::Read(read) => read == *digest,
    };
    if size == c.ident.size && same {
        Ok(())
    } else {
        Err(Unproven::Differs)
    }
}

/// Makes every copy durable before any source goes: one `syncfs` of the destination where there is
/// one (over SFTP each copy fsynced, then the folders); elsewhere each copy and its folder are
/// flushed (the rename that named it is durable only once its folder is).
fn make_durable(dest: &Dest, files: &[&Copied]) -> Result<(), String> {
    if dest.flush_copies(&files.iter().map(|c| c.rel.as_path()).collect::<Vec<_>>()).is_ok() {
        return Ok(());
    }
    for c in files {
        dest.flush_copy(&c.rel).map_err(|e| format!("flush of {}: {e}", dest.shown(&c.rel).display()))?;
    }
    Ok(())
}

/// Journals and deletes, in one batch, the sources of proven copies that are still unchanged: the
/// journal lines are flushed once before the first deletion (a crash after it leaves files
/// journaled but not yet deleted, which the journal tells by their version: see `journal.rs`; a
/// deleted file never lacks its line), and those whose deletion did not happen are journaled as
/// kept. Each file is set aside before it is unlinked (`aside.rs`), the batch announced there
/// after the journal: a file left aside by a crash is one the journal already vouches for.
fn free_batch(
    src_root: &Path,
    batch: &[&Copied],
    journal: &mut Writer,
    aside: &mut Aside,
    quiet: Duration,
    report: &mut MoveReport,
) -> io::Result<()> {
    let mut go = Vec::with_capacity(batch.len());
    for c in batch {
        match unchanged(&src_root.join(&c.rel), c) {
            Ok(()) => go.push(*c),
            Err(why) => report.kept.push((c.rel.clone(), why)),
        }
    }
    journal.freeing(&go)?;
    crate::crash_point!("free.journaled");
    let named = match aside.announce(&go) {
        Ok(named) => named,
        Err(e) => {
            let why = format!("cannot set it aside to delete it: {e}");
            report.kept.extend(go.iter().map(|c| (c.rel.clone(), why.clone())));
            return journal.not_freed(&go.iter().map(|c| c.rel.clone()).collect::<Vec<_>>());
        }
    };
    let mut failed = Vec::new();
    for (i, c) in go.into_iter().enumerate() {
        match free_one(&src_root.join(&c.rel), c, quiet, |src| aside.take(&named, i, src)) {
            Ok(()) => report.deleted.push(c.rel.clone()),
            Err(Kept::AtItsName(why)) => {
                failed.push(c.rel.clone());
                report.kept.push((c.rel.clone(), why));
            }
            // Its journal line stands: the next run's start finishes it (`aside::recover`), and
            // unlinks it only as the version announced, which that line vouches for.
            Err(Kept::Aside(why)) => report.kept.push((c.rel.clone(), why)),
        }
        crate::crash_point!("free.unlinked");
    }
    journal.not_freed(&failed)
}

/// Why a file was not freed, and where it is: only a file known to be under its name again (or
/// never moved) is journaled as kept. One left in the set-aside folder keeps its journal line: a
/// `K` line would stop vouching for its copy while the next run's recovery may still unlink it.
#[derive(Debug)]
enum Kept {
    AtItsName(String),
    Aside(String),
}

impl From<String> for Kept {
    fn from(why: String) -> Kept {
        Kept::AtItsName(why)
    }
}

impl From<&str> for Kept {
    fn from(why: &str) -> Kept {
        Kept::AtItsName(why.into())
    }
}

/// Deletes one source file, if it is still the version copied and no process has it open for
/// writing; why not, if not. Where the kernel cannot say (no lease allowed), a file changed
/// within the quiet period is kept: it may be open still. The unlink is of the file held: the
/// name is first moved aside (`set_aside`), where no writer can swap it, and what was moved is
/// unlinked only if it is the file held and checked; a new version a writer renamed over the name
/// after the check is put back under it, never over another.
fn free_one(
    src: &Path,
    c: &Copied,
    quiet: Duration,
    set_aside: impl FnOnce(&Path) -> io::Result<PathBuf>,
) -> Result<(), Kept> {
    let file = File::open(src).map_err(|e| format!("source: {e}"))?;
    let lease = crate::sys::lease_unwritten(&file, src);
    if matches!(lease, crate::sys::Writers::Open) {
        return Err("kept: a process has it open for writing".into());
    }
    // The version is checked under the lease: nothing can write it now.
    unchanged(src, c)?;
    let held = file.metadata().map(|m| crate::sys::file_identity(&file, &m)).map_err(|e| format!("source: {e}"))?;
    if !aside::is_version(&held, &c.ident) {
        return Err("changed at the source since it was copied".into());
    }
    if matches!(lease, crate::sys::Writers::Unknown) {
        let age = crate::vocab::now_ns().saturating_sub(c.ident.ctime_ns.max(c.ident.mtime_ns));
        if age < quiet.as_nanos() as i64 {
            return Err("kept: changed too recently to be sure no process has it open for writing".into());
        }
    }
    // A writer may rename a new version over the name right here (a rename breaks no lease);
    // tests pause at this point to show it is never deleted (docs/design.md, "The end of a run").
    fail::fail_point!("free.checked");
    // A writer opening the file now waits for the lease, then writes into the file held: unlinked,
    // what it writes would be lost. Looked for before the set-aside (the file is then not moved,
    // its ctime not changed: the journal would take metadata put back for a re-take's), and after
    // it, for an open that came during the rename (the file then goes back under its name).
    let opening = || matches!(&lease, crate::sys::Writers::None(held) if held.broken());
    if opening() {
        return Err("kept: a process opened it for writing while it was being freed".into());
    }
    let moved = set_aside(src).map_err(|e| format!("cannot set it aside to delete it: {e}"))?;
    crate::crash_point!("free.aside");
    let opened = opening();
    let why = match crate::sys::path_identity(&moved) {
        Ok(now) if aside::is_version(&now, &held) && !opened => match fs::remove_file(&moved) {
            Ok(()) => {
                drop(lease);
                return Ok(());
            }
            Err(e) => format!("delete: {e}"),
        },
        Ok(now) if aside::is_version(&now, &held) => "a process opened it for writing while it was being freed".into(),
        Ok(_) => "a new version was put under its name while it was being freed".into(),
        Err(e) => format!("what was set aside cannot be looked at: {e}"),
    };
    match aside::put_back(&moved, src) {
        Ok(()) => Err(Kept::AtItsName(format!("kept: {why}"))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Kept::Aside(format!(
            "kept: {why}, and another file took its name since; it is kept at {} (the next run puts it back \
             or finishes it)",
            moved.display()
        ))),
        Err(e) => Err(Kept::Aside(format!(
            "kept: {why}; it cannot go back under its name ({e}) and is kept at {}: the next run finishes it",
            moved.display()
        ))),
    }
}

/// Source files journaled per flush of the journal.
const BATCH: usize = 256;

/// Deletes the sources of the `proven` copies (see [`prove`]) that are still unchanged, data
/// first, then metadata, then the `marker` (proven here, after its own publishing); then removes
/// source folders left empty (never the source root itself). Call only once the run's
/// verification passed. A `stop` request ends it between batches: nothing is deleted after it.
pub fn delete_sources(
    src_root: &Path,
    dest: &Dest,
    proven: &[Copied],
    marker: Option<&Copied>,
    unproven: bool,
    quiet: Duration,
    stop: &AtomicBool,
) -> io::Result<MoveReport> {
    let mut report = MoveReport::default();
    let marker = marker.filter(|m| marker_proven(src_root, dest, m, &mut report));
    let (meta, data): (Vec<&Copied>, Vec<&Copied>) = proven.iter().partition(|c| is_metadata(&c.rel));
    let every: Vec<&Copied> = proven.iter().chain(marker).collect();
    if let Err(why) = make_durable(dest, &every) {
        report.kept.extend(every.iter().map(|c| (c.rel.clone(), why.clone())));
        return Ok(report);
    }
    let mut journal = Writer::open(dest, src_root)?;
    let mut aside = Aside::new(src_root);
    let mut free = |files: Vec<&Copied>, report: &mut MoveReport| -> io::Result<()> {
        for batch in files.chunks(BATCH) {
            if stop.load(Ordering::Relaxed) {
                report.kept.extend(batch.iter().map(|c| (c.rel.clone(), "stopped before it was freed".into())));
                continue;
            }
            free_batch(src_root, batch, &mut journal, &mut aside, quiet, report)?;
        }
        Ok(())
    };
    free(data, &mut report)?;
    // Metadata and the marker only once every data file is gone: while any data stays, the source
    // stays a readable archive, and a later run finds its marker and finishes the job.
    // The marker last, alone: only once every data file and all metadata are gone is the
    // acquisition freed whole (`origin.rs`: its emptied folder is then no new acquisition).
    let whole = |report: &MoveReport| report.kept.is_empty() && !unproven;
    for step in [meta, marker.into_iter().collect()] {
        if whole(&report) {
            free(step, &mut report)?;
        } else {
            let why = "kept while other files of the acquisition remain at the source";
            report.kept.extend(step.iter().map(|c| (c.rel.clone(), why.into())));
        }
    }
    if let Err(e) = aside.close() {
        // Only the folder's own state is left: the next run's start finishes it (`aside::recover`).
        report.kept.push((PathBuf::from(aside::ASIDE), format!("not cleared: {e}")));
    }
    if !report.deleted.is_empty() && !stop.load(Ordering::Relaxed) {
        remove_empty_folders(src_root, &mut report);
    }
    Ok(report)
}

/// Whether the marker's copy is proven (the marker is freed last, after its own publishing);
/// where not, it is kept and `report` says why.
fn marker_proven(src_root: &Path, dest: &Dest, m: &Copied, report: &mut MoveReport) -> bool {
    let why = match proven(src_root, dest, m) {
        Ok(()) => return true,
        Err(Unproven::Differs) => "the copy's content differs from the source".into(),
        Err(Unproven::Gone) => "the copy is not at the destination".into(),
        Err(Unproven::Other(why)) => why,
    };
    report.kept.push((m.rel.clone(), why));
    false
}

/// Empty folders go too (writers leave empty ones behind for fill-value chunks), deepest first;
/// a folder that still holds anything fails to be removed and stays.
fn remove_empty_folders(src_root: &Path, report: &mut MoveReport) {
    crate::crash_point!("free.folders");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The destination at `dst`, as the end steps see it.
    fn at(dst: &tempfile::TempDir) -> Dest {
        Dest::at(dst.path())
    }

    fn copied(src: &Path, dst: &Path, rel: &str, bytes: &[u8]) -> Copied {
        fs::write(src.join(rel), bytes).unwrap();
        fs::copy(src.join(rel), dst.join(rel)).unwrap();
        let ident = crate::sys::path_identity(&src.join(rel)).unwrap();
        Copied { rel: PathBuf::from(rel), ident, hash: None }
    }

    #[test]
    fn nothing_is_proven_or_freed_after_a_stop() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let files: Vec<Copied> = (0..3).map(|i| copied(src.path(), dst.path(), &format!("f{i}"), b"data")).collect();
        let stop = AtomicBool::new(true);
        let proof = prove(src.path(), &at(&dst), files.clone(), &stop);
        assert!(proof.proven.is_empty() && proof.kept.len() == 3);
        let report = delete_sources(src.path(), &at(&dst), &files, None, false, Duration::ZERO, &stop).unwrap();
        assert!(report.deleted.is_empty());
        assert!((0..3).all(|i| src.path().join(format!("f{i}")).exists()));
    }

    #[test]
    fn a_copy_with_the_same_size_and_other_bytes_is_not_proven() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let good = copied(src.path(), dst.path(), "good", b"same bytes");
        let bad = copied(src.path(), dst.path(), "bad", b"same bytes");
        fs::write(dst.path().join("bad"), b"same bytez").unwrap();
        let proof = prove(src.path(), &at(&dst), vec![good, bad], &AtomicBool::new(false));
        assert_eq!(proof.proven.iter().map(|c| c.rel.clone()).collect::<Vec<_>>(), vec![PathBuf::from("good")]);
        assert_eq!(proof.differs, vec![PathBuf::from("bad")]);
    }

    fn names(files: &[PathBuf]) -> Vec<String> {
        let mut names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn metadata_and_the_marker_go_only_once_every_data_file_has() {
        // A data file changed since its copy stays; then so do the metadata and the marker, so the
        // source stays a readable archive that a later run finds and finishes.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let files: Vec<Copied> = ["0", "1", ".zarray", "zarr.json", ".zattrs", ".zgroup", ".zmetadata"]
            .iter()
            .map(|rel| copied(src.path(), dst.path(), rel, b"bytes"))
            .collect();
        let marker = copied(src.path(), dst.path(), "complete", b"done");
        fs::write(src.path().join("1"), b"later").unwrap();
        let no_stop = AtomicBool::new(false);
        let report = delete_sources(src.path(), &at(&dst), &files, Some(&marker), false, Duration::ZERO, &no_stop);
        let report = report.unwrap();
        assert_eq!(names(&report.deleted), ["0"]);
        let kept: Vec<PathBuf> = report.kept.iter().map(|(rel, _)| rel.clone()).collect();
        assert_eq!(names(&kept), [".zarray", ".zattrs", ".zgroup", ".zmetadata", "1", "complete", "zarr.json"]);
        // Every data file gone: metadata, then the marker, go too, and the folders left empty.
        fs::create_dir(src.path().join("a")).unwrap();
        fs::create_dir(dst.path().join("a")).unwrap();
        let data = copied(src.path(), dst.path(), "a/0", b"bytes");
        let meta = files[2..].to_vec();
        let report = delete_sources(
            src.path(),
            &at(&dst),
            &[&[data][..], &meta].concat(),
            Some(&marker),
            false,
            Duration::ZERO,
            &no_stop,
        );
        let report = report.unwrap();
        assert_eq!(report.deleted.len(), 7, "{report:?}");
        assert_eq!(report.deleted.last(), Some(&PathBuf::from("complete")), "the marker last");
        assert_eq!(report.folders_removed, 1);
        assert!(src.path().exists() && !src.path().join("a").exists(), "the root itself stays");
    }

    #[test]
    fn a_proof_left_unfinished_keeps_metadata_and_marker() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let files =
            vec![copied(src.path(), dst.path(), "0", b"bytes"), copied(src.path(), dst.path(), "zarr.json", b"{}")];
        let report = delete_sources(src.path(), &at(&dst), &files, None, true, Duration::ZERO, &AtomicBool::new(false));
        let report = report.unwrap();
        assert_eq!(names(&report.deleted), ["0"]);
        assert!(src.path().join("zarr.json").exists());
    }

    #[test]
    fn a_file_open_for_writing_or_changed_since_its_copy_is_kept() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let files: Vec<Copied> =
            ["open", "changed", "gone"].iter().map(|rel| copied(src.path(), dst.path(), rel, b"x")).collect();
        let _writer = fs::OpenOptions::new().append(true).open(src.path().join("open")).unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        fs::File::options().write(true).open(src.path().join("changed")).unwrap().set_modified(later).unwrap();
        fs::remove_file(src.path().join("gone")).unwrap();
        let report =
            delete_sources(src.path(), &at(&dst), &files, None, false, Duration::ZERO, &AtomicBool::new(false));
        let report = report.unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
        assert_eq!(report.kept.len(), 3);
        assert!(src.path().join("open").exists() && src.path().join("changed").exists());
    }

    #[test]
    fn a_copy_is_proven_by_its_hash_and_a_marker_whose_copy_differs_stays() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let hashed = |rel: &str| {
            let c = copied(src.path(), dst.path(), rel, b"chunk bytes");
            let hash = Some(manifest::hash_file(&dst.path().join(rel)).unwrap());
            Copied { hash, ..c }
        };
        let (good, bad) = (hashed("good"), hashed("bad"));
        fs::write(dst.path().join("bad"), b"chunk bytez").unwrap();
        let gone = copied(src.path(), dst.path(), "gone", b"x");
        fs::remove_file(dst.path().join("gone")).unwrap();
        let proof = prove(src.path(), &at(&dst), vec![good, bad, gone], &AtomicBool::new(false));
        assert_eq!(proof.proven.len(), 1);
        assert_eq!((proof.differs, proof.gone), (vec![PathBuf::from("bad")], vec![PathBuf::from("gone")]));
        let marker = copied(src.path(), dst.path(), "complete", b"done");
        fs::write(dst.path().join("complete"), b"DONE").unwrap();
        let report = delete_sources(
            src.path(),
            &at(&dst),
            &proof.proven,
            Some(&marker),
            false,
            Duration::ZERO,
            &AtomicBool::new(false),
        );
        let report = report.unwrap();
        assert_eq!(names(&report.deleted), ["good"]);
        assert!(src.path().join("complete").exists());
    }

    /// A source and a destination holding `rel`, copied, and a freeing that announced it.
    #[cfg(unix)]
    fn announced(rel: &str, bytes: &[u8]) -> (tempfile::TempDir, tempfile::TempDir, Copied, Aside, aside::Batch) {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let c = copied(src.path(), dst.path(), rel, bytes);
        let mut aside = Aside::new(src.path());
        let batch = aside.announce(&[&c]).unwrap();
        (src, dst, c, aside, batch)
    }

    // Needs the lease (the files' owner, or CAP_LEASE: the tests run as root).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_a_writer_opens_while_it_is_set_aside_goes_back_under_its_name() {
        // The writer's open comes during the set-aside: it waits for the lease, then appends to
        // the file held. Unlinked, that line would be lost; put back, it is at the source.
        let (src, _dst, c, mut aside, batch) = announced("log", b"line 1\n");
        let path = src.path().join("log");
        let mut writer = None;
        let kept = free_one(&path, &c, Duration::ZERO, |name| {
            let at = name.to_path_buf();
            writer = Some(std::thread::spawn(move || {
                use std::io::Write;
                fs::OpenOptions::new().append(true).open(at).unwrap().write_all(b"line 2\n").unwrap();
            }));
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let ours = format!(":{} ", c.ident.ino);
            let breaking = |l: &str| l.contains("BREAKING") && l.contains(&ours);
            while !fs::read_to_string("/proc/locks").unwrap().lines().any(breaking) {
                assert!(std::time::Instant::now() < deadline, "the writer's open never broke the lease");
                std::thread::sleep(Duration::from_millis(5));
            }
            aside.take(&batch, 0, name)
        });
        writer.unwrap().join().unwrap();
        assert!(matches!(&kept, Err(Kept::AtItsName(why)) if why.contains("opened it for writing")), "{kept:?}");
        assert_eq!(fs::read(&path).unwrap(), b"line 1\nline 2\n");
    }

    // Windows refuses to rename over a file held open (Access denied to the writer, the race has
    // no window there while freeing holds it).
    #[cfg(unix)]
    #[test]
    fn a_new_version_renamed_over_the_name_after_the_last_look_is_never_deleted() {
        // The writer's rename lands between the check under the lease and the set-aside: what is
        // set aside is not the file held, so it goes back under its name.
        let (src, dst, c, mut aside, batch) = announced("0", b"the version copied");
        let path = src.path().join("0");
        let kept = free_one(&path, &c, Duration::ZERO, |name| {
            fs::write(src.path().join("0.tmp"), b"the writer's new version").unwrap();
            fs::rename(src.path().join("0.tmp"), name).unwrap();
            aside.take(&batch, 0, name)
        });
        assert!(matches!(kept, Err(Kept::AtItsName(why)) if why.contains("new version")));
        assert_eq!(fs::read(&path).unwrap(), b"the writer's new version");
        aside.close().unwrap();
        assert_eq!(fs::read_dir(src.path()).unwrap().count(), 1, "the folder set aside is gone");
        // Undisturbed, the file held is the one set aside, and it goes.
        let c = copied(src.path(), dst.path(), "1", b"bytes");
        let mut aside = Aside::new(src.path());
        let batch = aside.announce(&[&c]).unwrap();
        free_one(&src.path().join("1"), &c, Duration::ZERO, |name| aside.take(&batch, 0, name)).unwrap();
        assert!(!src.path().join("1").exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_set_aside_that_can_neither_go_nor_go_back_is_said_to_be_aside() {
        // Made immutable once aside (root): neither unlinked nor renamed back. It is not under its
        // name, so it must not be journaled as kept there (`Kept::Aside`: its line stands).
        let chattr = |flag: &str, p: &Path| {
            std::process::Command::new("chattr").arg(flag).arg(p).status().is_ok_and(|s| s.success())
        };
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let c = copied(src.path(), dst.path(), "0", b"bytes");
        let mut aside = Aside::new(src.path());
        let batch = aside.announce(&[&c]).unwrap();
        let mut pinned = None;
        let kept = free_one(&src.path().join("0"), &c, Duration::ZERO, |name| {
            let moved = aside.take(&batch, 0, name)?;
            pinned = chattr("+i", &moved).then(|| moved.clone());
            Ok(moved)
        });
        let Some(moved) = pinned else { return }; // no immutable flag here: nothing to show
        chattr("-i", &moved);
        assert!(matches!(&kept, Err(Kept::Aside(why)) if why.contains("next run")), "{kept:?}");
        assert!(moved.exists() && !src.path().join("0").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_whose_inode_changed_since_its_copy_is_kept_even_with_its_size_and_mtime() {
        // A chmod or a new link changes only the ctime: the version copied is not proven to be
        // the file there now (its identity is device, inode, size, mtime and ctime).
        use std::os::unix::fs::PermissionsExt;
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let c = copied(src.path(), dst.path(), "0", b"bytes");
        let path = src.path().join("0");
        // Until the clock's tick moves on (a bounded number of looks).
        for mode in [0o600, 0o644].into_iter().cycle().take(100_000) {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            if crate::sys::path_identity(&path).unwrap().ctime_ns != c.ident.ctime_ns {
                break;
            }
        }
        let no_stop = AtomicBool::new(false);
        let report = delete_sources(src.path(), &at(&dst), &[c], None, false, Duration::ZERO, &no_stop).unwrap();
        assert!(report.deleted.is_empty() && src.path().join("0").exists(), "{report:?}");
    }

    #[test]
    fn folders_are_removed_only_after_something_was_freed() {
        // An empty folder at the source is the writer's (fill-value chunks) until the freeing
        // empties it: a freeing that deleted nothing leaves every folder as it was.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir(src.path().join("empty")).unwrap();
        let changed = copied(src.path(), dst.path(), "0", b"bytes");
        fs::write(src.path().join("0"), b"later").unwrap();
        let no_stop = AtomicBool::new(false);
        let report = delete_sources(src.path(), &at(&dst), &[changed], None, false, Duration::ZERO, &no_stop).unwrap();
        assert!(report.deleted.is_empty() && report.folders_removed == 0);
        assert!(src.path().join("empty").is_dir());
    }
}
