//! Which acquisition a destination folder is the copy of (docs/design.md, "One destination, one
//! acquisition"). A run records the source folder's identity (device, inode, birth time: it
//! survives renames and tells a re-take from the folder it replaced, also where the filesystem
//! reuses the inode at once) in `.softcopy-origin` at the destination root before it changes
//! anything there, and a later run never writes into, prunes or marks a destination recorded for
//! another folder. With the move journal it also knows a copy whose acquisition was verified and
//! freed whole: its emptied source is no new acquisition, and its marker stands.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::dest::{Dest, Kind};
use crate::end::journal::Journal;
use crate::source::root::FolderId;

/// The record's name at the destination root.
pub const ORIGIN: &str = ".softcopy-origin";
/// Version 2 adds the filesystem's identifier (`-1`: none) after the birth time.
const HEADER: &str = "softcopy-origin 2";
const HEADER_1: &str = "softcopy-origin 1";

/// Whose copy a destination folder holds, as seen from a source folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Nothing is there (our own state aside) and nothing is recorded: anyone's to take.
    Free,
    /// Recorded as the copy of this very source folder.
    Ours,
    /// Recorded for a folder with this device and inode number, on a filesystem that keeps no
    /// birth time (FUSE, many network shares): this folder, or one made again under the name that
    /// was handed the number back (ext4 does so at once). Never written into: a run refuses it,
    /// the service takes another name (docs/design.md, "One destination, one acquisition").
    SameNumber,
    /// Files are there, but no record says whose (an archive not copied by softcopy, or by a
    /// version that kept no record).
    Unrecorded,
    /// The copy of another acquisition: why, in words.
    Another(String),
    /// This acquisition's copy, verified and then freed whole at the source (`--delete-source`):
    /// its marker is freed and the source holds nothing. Nothing is left to do.
    Finished,
}

/// Reads the record in the folder `at` of `dest` (its root for an empty path): `None` when there
/// is none.
fn read(dest: &Dest, at: &Path) -> io::Result<Option<(FolderId, String)>> {
    let text = match dest.read_file(&at.join(ORIGIN)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("{ORIGIN} at the destination is damaged"));
    let numbers = match lines.next() {
        Some(HEADER) => 4,
        Some(HEADER_1) => 3,
        _ => return Err(bad()),
    };
    let line = lines.next().ok_or_else(bad)?;
    let mut f = line.splitn(numbers + 1, ' ');
    let mut n = || f.next().and_then(|x| x.parse::<i128>().ok());
    let (dev, ino, born) = (n().ok_or_else(bad)?, n().ok_or_else(bad)?, n().ok_or_else(bad)?);
    let fs = if numbers == 4 { n().ok_or_else(bad)? } else { -1 };
    let shown = f.next().unwrap_or("").to_string();
    let id = FolderId {
        dev: u64::try_from(dev).map_err(|_| bad())?,
        ino: u64::try_from(ino).map_err(|_| bad())?,
        born: (born >= 0).then(|| i64::try_from(born).ok()).flatten(),
        fs: (fs >= 0).then(|| u64::try_from(fs).ok()).flatten(),
    };
    Ok(Some((id, shown)))
}

/// Records, durably, that `dest` is the copy of the folder at `src_root` (written aside, then
/// renamed over the record, the folder flushed).
pub fn record(dest: &Dest, src_root: &Path) -> io::Result<()> {
    let id = FolderId::of(src_root)?;
    let shown = crate::end::names::escape(src_root);
    let fs = id.fs.map_or(-1, i128::from);
    let text = format!("{HEADER}\n{} {} {} {fs} {shown}\n", id.dev, id.ino, id.born.unwrap_or(-1));
    dest.write_file(Path::new(ORIGIN), Path::new(&format!("{ORIGIN}.new")), text.as_bytes())?;
    crate::crash_point!("origin.recorded");
    Ok(())
}

/// Whose copy `dst_root` holds, for the source folder at `src_root` whose end marker is named
/// `marker`. An error when it cannot be told (a record or journal that cannot be read): nothing
/// may then be written there.
pub fn owner(src_root: &Path, dest: &Dest, marker: &str) -> io::Result<Owner> {
    let dst_root = dest.root();
    let Some((recorded, shown)) = read(dest, Path::new(""))? else {
        return Ok(if copy_holds_anything(dest) { Owner::Unrecorded } else { Owner::Free });
    };
    let here = FolderId::of(src_root)?;
    let by_number = recorded.born.is_none() || here.born.is_none();
    if recorded.renumbered(&here) {
        return Ok(Owner::Another(format!(
            "{} holds the copy of a folder with the inode, birth time and filesystem of {} but on another \
             device number ({shown} as it was when copied): this disk back under a new number (a reboot), or a \
             clone of it; softcopy cannot tell which and never writes into what may be another acquisition's \
             copy; if it is this folder's, remove {} to take it as an earlier copy",
            dst_root.display(),
            src_root.display(),
            dst_root.join(ORIGIN).display()
        )));
    }
    if !recorded.same(&here) {
        return Ok(Owner::Another(format!(
            "{} holds the copy of another acquisition ({shown} as it was when copied; the folder there now \
             is another one): softcopy never writes into another acquisition's copy; move it away or \
             choose another destination",
            dst_root.display()
        )));
    }
    let journal = Journal::read(dest)?;
    let marker_back = journal.returned(src_root, Path::new(marker)).then(|| marker.into());
    if let Some(meta) = journal.retaken(src_root).or(marker_back) {
        return Ok(Owner::Another(format!(
            "{} holds the copy of an acquisition freed from {}, and {} there is new: another acquisition \
             was written into the emptied folder; softcopy never writes it into the earlier one's copy; \
             choose another destination",
            dst_root.display(),
            src_root.display(),
            meta.display()
        )));
    }
    // Finished needs its marker still at the destination: "verified" is said of a copy whose
    // marker stands, never of one whose marker is gone.
    if journal.freed_whole(src_root, Path::new(marker))? && dest.stat(Path::new(marker)).is_ok_and(|m| m.is_file()) {
        if holds_anything(src_root)? {
            return Ok(Owner::Another(format!(
                "{} holds the copy of the acquisition freed from {}, which holds new files now: another \
                 acquisition; softcopy never writes it into the earlier one's copy; choose another destination",
                dst_root.display(),
                src_root.display()
            )));
        }
        return Ok(Owner::Finished);
    }
    // Windows keeps no birth time here, and needs none: NTFS's file index carries a sequence
    // number that changes when a record is reused.
    Ok(if by_number && cfg!(not(windows)) { Owner::SameNumber } else { Owner::Ours })
}

/// Why a copy recorded by inode number alone (see [`Owner::SameNumber`]) is not written into.
pub fn same_number_why(dst_root: &Path, src_root: &Path) -> String {
    format!(
        "{} is recorded as the copy of a folder with the inode number {} has, and that filesystem keeps no \
         birth time to tell it from a folder made again under the name: softcopy never writes into what may be \
         another acquisition's copy; if it is this folder's, remove {} to take it as an earlier copy",
        dst_root.display(),
        src_root.display(),
        dst_root.join(ORIGIN).display()
    )
}

/// Whether the copy holds anything but folders (softcopy's own state at its root and writers'
/// temps aside). A copy that cannot be listed in full holds something, as far as anyone can tell.
fn copy_holds_anything(dest: &Dest) -> bool {
    let mut found = false;
    let walked = dest.walk(&mut |rel, kind| {
        found = kind != Kind::Folder && !crate::vocab::is_ignored(rel);
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found || walked.failed.is_some()
}

/// Whether a folder holds any file (softcopy's own state at its root and writers' temps aside).
/// A folder that cannot be listed in full holds something, as far as anyone can tell.
fn holds_anything(root: &Path) -> io::Result<bool> {
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = match e {
            Ok(e) => e,
            Err(_) => return Ok(true),
        };
        let rel = e.path().strip_prefix(root).unwrap_or(e.path());
        if !e.file_type().is_dir() && !crate::vocab::is_ignored(rel) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The note at a copy's root saying that its acquisition was let go unfinished and that this was
/// told (a report, a webhook): a service started again names such a copy once, not at each start.
/// A run that takes the copy again removes it ([`clear_let_go`]).
pub const LET_GO: &str = ".softcopy-let-go";

/// An unfinished copy: recorded as the copy of a folder of an acquisitions folder, without its
/// marker, not claimed by a run, and not yet told as let go.
#[derive(Debug)]
pub struct Unfinished {
    /// The copy's folder at the destination.
    pub copy: PathBuf,
    /// The source folder it is recorded as the copy of.
    pub source: FolderId,
    /// The source's path as recorded (escaped where not UTF-8).
    pub shown: String,
    /// The source folder's name, as it was (not escaped).
    pub name: std::ffi::OsString,
}

/// The unfinished copies in `dest` (the folder the user calls `dst_parent`: a local one, or one
/// over ssh) of folders that were in `acquisitions` (by the recorded path), with `marker` as their
/// end marker (docs/design.md, "Service, month after month"). An error only when `dest` cannot be
/// listed; a copy that cannot be looked at in full is left out (nothing can be told of it).
pub fn unfinished_copies(
    dest: &Dest,
    dst_parent: &Path,
    acquisitions: &Path,
    marker: &str,
) -> io::Result<Vec<Unfinished>> {
    let parent = crate::end::names::escape(acquisitions);
    let mut out = Vec::new();
    for (name, kind) in dest.list(&dest.folder(Path::new(""), false)?)? {
        // A link is never followed at a destination (nor a note written through one).
        if kind != Kind::Folder {
            continue;
        }
        let at = Path::new(&name);
        let there = |file: &str| dest.stat(&at.join(file)).map(|_| true).or_else(absent);
        // The marker first: most copies are finished, and each look is a round trip on a share.
        if !matches!((there(marker), there(LET_GO)), (Ok(false), Ok(false))) {
            continue;
        }
        let Ok(Some((source, shown))) = read(dest, at) else { continue };
        if Path::new(&shown).parent() != Some(Path::new(&parent)) || dest.claimed(at).is_some() {
            continue;
        }
        let name = crate::end::names::unescape(&shown).file_name().unwrap_or_default().to_os_string();
        out.push(Unfinished { copy: dst_parent.join(at), source, shown, name });
    }
    Ok(out)
}

fn absent(e: io::Error) -> io::Result<bool> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Notes at the copy `dest` that its acquisition was let go, and why (told once: see [`LET_GO`]).
pub fn note_let_go(dest: &Dest, why: &str) -> io::Result<()> {
    // Never in a copy another run has claimed since: its folder is that run's (invariant 10).
    if let Some(who) = dest.claimed(Path::new("")) {
        return Err(io::Error::other(format!("another softcopy is copying to it now ({who})")));
    }
    // Written under a new name and renamed over the note: neither step follows a link planted at
    // either name (a rename replaces the link itself).
    let text = format!("{why}\n");
    dest.write_file(Path::new(LET_GO), Path::new(&format!("{LET_GO}.new")), text.as_bytes())
}

/// Removes the let-go note of a copy taken again; a note left (it cannot be removed) only keeps a
/// later service from naming the copy again, so its failure is no run's.
pub fn clear_let_go(dest: &Dest) {
    let _ = dest.remove_file(Path::new(LET_GO));
}

// Not under Wine: its file index is the host's inode, which ext4 reuses at once, and it keeps no
// sequence number as NTFS's index does (docs/design.md, "Windows").
#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;
    use std::fs;

    /// The service notes a copy let go after its own run ended; by then another run (the
    /// acquisition's folder back under its name, a one-shot) may have claimed the copy: its
    /// folder is that run's alone (invariant 10), and a note there would hide the copy, should that
    /// run be stopped unfinished, from the next start's look for copies left unfinished.
    #[test]
    fn a_copy_another_run_has_claimed_gets_no_let_go_note() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let _running = Dest::at(dst.path()).claim(src.path()).unwrap();
        assert!(note_let_go(&Dest::at(dst.path()), "let go: its folder is gone").is_err());
        assert!(!dst.path().join(LET_GO).exists());
    }

    #[test]
    fn a_folder_made_again_under_the_name_is_another_acquisition() {
        let (base, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = base.path().join("x.zarr");
        fs::create_dir(&src).unwrap();
        assert_eq!(owner(&src, &Dest::at(dst.path()), "complete").unwrap(), Owner::Free);
        record(&Dest::at(dst.path()), &src).unwrap();
        fs::write(dst.path().join("0"), "copy").unwrap();
        assert_eq!(owner(&src, &Dest::at(dst.path()), "complete").unwrap(), Owner::Ours);
        // Removed and made again at once: ext4 may hand it the same inode; the birth time differs.
        fs::remove_dir(&src).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        fs::create_dir(&src).unwrap();
        assert!(matches!(owner(&src, &Dest::at(dst.path()), "complete").unwrap(), Owner::Another(_)));
        fs::remove_file(dst.path().join(ORIGIN)).unwrap();
        assert_eq!(owner(&src, &Dest::at(dst.path()), "complete").unwrap(), Owner::Unrecorded);
    }

    #[test]
    fn an_unfinished_copy_is_found_until_noted_as_let_go_or_marked() {
        let (acq, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, copy) = (acq.path().join("x.zarr"), dst.path().join("x.zarr"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&copy).unwrap();
        record(&Dest::at(&copy), &src).unwrap();
        let found = || unfinished_copies(&Dest::at(dst.path()), dst.path(), acq.path(), "complete").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(unfinished_copies(&Dest::at(dst.path()), dst.path(), elsewhere.path(), "complete").unwrap().is_empty());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&copy, dst.path().join("link")).unwrap();
            assert_eq!(found().len(), 1, "a link to a copy is not a copy");
        }
        let [u] = &found()[..] else { panic!("{:?}", found()) };
        assert_eq!((&u.copy, u.source), (&copy, FolderId::of(&src).unwrap()));
        note_let_go(&Dest::at(&copy), "let go").unwrap();
        assert!(found().is_empty());
        clear_let_go(&Dest::at(&copy));
        assert_eq!(found().len(), 1);
        fs::write(copy.join("complete"), "").unwrap();
        assert!(found().is_empty());
    }

    #[test]
    fn a_record_without_a_birth_time_is_only_the_same_number() {
        // As recorded from a filesystem that keeps none (FUSE, many shares): the number alone
        // cannot tell this folder from one made again under the name.
        let (base, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = base.path().join("x.zarr");
        fs::create_dir(&src).unwrap();
        let id = FolderId::of(&src).unwrap();
        fs::write(dst.path().join(ORIGIN), format!("{HEADER_1}\n{} {} -1 x.zarr\n", id.dev, id.ino)).unwrap();
        assert_eq!(owner(&src, &Dest::at(dst.path()), "complete").unwrap(), Owner::SameNumber);
    }
}
