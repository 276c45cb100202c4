//! A name that changed kind at the source (docs/design.md, invariant 8): a writer deleted the chunk
//! file `c/0` and made a folder of that name (an array written again with a deeper chunk key
//! encoding), or the other way round. The copy of the old kind stands in the way of the new one at
//! the destination; it is a copy of what the source no longer has, removed as any mirrored deletion
//! (`mirror::remove_destination`: only while the destination is this acquisition's copy, only an
//! entry stored under exactly that name, never a link, never the only copy of a freed file). What
//! is kept fails the copy by name. A crash between the removal and the copy loses nothing: the
//! source has everything the removed copies were of.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::dest::mirror::remove_destination;
use crate::dest::{Dest, Folder};
use crate::source::root::RootId;

/// The destination folder `rel_dir`, made for a copy; a file in its place (or a parent's) whose
/// name is a folder at the source now is removed first.
pub fn make_folder(src_root: &Path, dest: &Dest, rel_dir: &Path, root: Option<&RootId>) -> crate::Result<Folder> {
    let shown = dest.shown(rel_dir);
    match dest.folder(rel_dir, true) {
        Err(_) if remove_file_in_the_way(src_root, dest, rel_dir, root)? => dest.folder(rel_dir, true),
        made => made,
    }
    .map_err(|e| crate::Error::io("create in", shown, e))
}

/// Whether a destination file stood where `rel_dir` (or one of its parents) is a folder at the
/// source, and was removed; an error says why one stays.
fn remove_file_in_the_way(src_root: &Path, dest: &Dest, rel_dir: &Path, root: Option<&RootId>) -> crate::Result<bool> {
    let mut prefix = PathBuf::new();
    let file_in_the_way = rel_dir.components().find_map(|part| {
        prefix.push(part);
        match dest.stat(&prefix) {
            Ok(m) if m.is_dir() => None,
            found => Some(found.is_ok_and(|m| m.is_file())),
        }
    });
    if file_in_the_way != Some(true) {
        return Ok(false);
    }
    let folder_at_source = fs::symlink_metadata(src_root.join(&prefix)).is_ok_and(|m| m.is_dir());
    remove_copy(src_root, dest, &prefix, root, folder_at_source, "a folder")
}

/// After a copy of the file `rel` failed: whether a destination folder stood in its name, and was
/// removed whole (the copy is made again); an error says why it stays.
pub fn remove_folder_in_the_way(
    src_root: &Path,
    dest: &Dest,
    rel: &Path,
    root: Option<&RootId>,
) -> crate::Result<bool> {
    if !dest.stat(rel).is_ok_and(|m| m.is_dir()) {
        return Ok(false);
    }
    let file_at_source = fs::symlink_metadata(src_root.join(rel)).is_ok_and(|m| m.is_file());
    // Only a folder that holds no file: what it holds may be no copy at all (an excluded file, a
    // note a person put there), and a copy the source no longer has is kept unless a deletion was
    // seen (docs/design.md, "Excluded files", invariant 8). Such a folder stays, and the file is
    // named: a person moves it away.
    if file_at_source && holds_files(dest, rel).unwrap_or(true) {
        let why =
            "the source has a file of this name now, and a folder holding files is here: kept (what it holds may \
                   be no copy); move it away";
        return Err(crate::Error::io("copy to", dest.shown(rel), io::Error::other(why)));
    }
    remove_copy(src_root, dest, rel, root, file_at_source, "a file")
}

/// Whether the destination folder `rel` holds any file, at any depth (a link counts as one).
fn holds_files(dest: &Dest, rel: &Path) -> io::Result<bool> {
    for (name, kind) in dest.list(&dest.folder(rel, false)?)? {
        if kind != crate::dest::Kind::Folder || holds_files(dest, &rel.join(name))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the copy `rel` (a file, or a folder with everything in it) where the source has `now`
/// under that name instead (`evidence`: it does, looked at just now).
fn remove_copy(
    src_root: &Path,
    dest: &Dest,
    rel: &Path,
    root: Option<&RootId>,
    evidence: bool,
    now: &str,
) -> crate::Result<bool> {
    let shown = dest.shown(rel);
    if !evidence {
        return Ok(false);
    }
    // Never data (vocab::is_ignored): softcopy's own state at the root (the move journal, the
    // origin record: invariant 8's evidence for what may be pruned) and names never copied, so
    // never a copy of anything the source deleted. The copy fails by name instead.
    if crate::vocab::is_ignored(rel) {
        let why = format!("the source has {now} of this name, but softcopy's own state or a name never copied is here");
        return Err(crate::Error::io("remove", shown, io::Error::other(why)));
    }
    // Positive evidence only (invariant 8): the source looked at is still the folder copied.
    if let Some(Err(why)) = root.map(|r| r.check(src_root)) {
        return Err(crate::Error::io("remove", shown, io::Error::other(why)));
    }
    let kept = |cause: String| {
        let why = format!(
            "the source has {now} of this name now, but what is here is kept ({cause}): not a copy of what the \
             source deleted (a link, another name's copy where upper and lower case are one, or the only copy \
             of a file freed at the source)"
        );
        Err(crate::Error::io("remove", &shown, io::Error::other(why)))
    };
    dest.removed_in_the_way();
    if let Err(e) = remove_tree(dest, rel) {
        return kept(e.to_string());
    }
    match dest.stat(rel) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::crash_point!("kind.removed");
            Ok(true)
        }
        _ => kept("still there".into()),
    }
}

/// Removes `rel`, and below it each entry as a mirrored deletion; a folder only once empty.
fn remove_tree(dest: &Dest, rel: &Path) -> crate::Result<()> {
    if dest.stat(rel).is_ok_and(|m| m.is_dir()) {
        let listed = dest.folder(rel, false).and_then(|f| dest.list(&f));
        for (name, _) in listed.map_err(|e| crate::Error::io("list", dest.shown(rel), e))? {
            remove_tree(dest, &rel.join(name))?;
        }
    }
    remove_destination(dest, rel).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn write(path: &Path, data: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    #[test]
    fn a_file_in_the_way_of_a_folder_goes_unless_it_is_a_freed_files_only_copy() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(&src.path().join("c/0/0"), b"deeper chunk");
        write(&dst.path().join("c/0"), b"flat chunk");
        let dest = Dest::at(dst.path());
        dest.keep_freed(HashSet::from([PathBuf::from("c/0")]));
        let kept = make_folder(src.path(), &dest, Path::new("c/0"), None).map(drop).unwrap_err();
        assert!(kept.to_string().contains("kept"), "{kept}");
        assert_eq!(fs::read(dst.path().join("c/0")).unwrap(), b"flat chunk");
        let dest = Dest::at(dst.path());
        make_folder(src.path(), &dest, Path::new("c/0"), None).unwrap();
        assert!(dst.path().join("c/0").is_dir());
    }

    #[test]
    fn softcopys_own_state_is_never_removed_for_a_source_folder_of_its_name() {
        // The move journal is invariant 8's evidence for the only copies of freed files.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(&src.path().join(".softcopy-moved/x"), b"a folder of that name");
        write(&dst.path().join(".softcopy-moved"), b"the journal");
        let dest = Dest::at(dst.path());
        let kept = make_folder(src.path(), &dest, Path::new(".softcopy-moved"), None).map(drop).unwrap_err();
        assert!(kept.to_string().contains("own state"), "{kept}");
        assert_eq!(fs::read(dst.path().join(".softcopy-moved")).unwrap(), b"the journal");
    }

    #[test]
    fn a_folder_in_the_way_of_a_file_goes_only_if_it_holds_no_file() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(&src.path().join("c/0"), b"flat chunk");
        write(&dst.path().join("c/0/0"), b"deeper chunk, or a note a person put there");
        let dest = Dest::at(dst.path());
        assert!(remove_folder_in_the_way(src.path(), &dest, Path::new("c/0"), None).is_err());
        assert!(dst.path().join("c/0/0").exists(), "what a folder holds may be no copy: kept");
        fs::remove_file(dst.path().join("c/0/0")).unwrap();
        fs::create_dir_all(dst.path().join("c/0/1/2")).unwrap();
        assert!(!dest.kind_changed());
        assert!(remove_folder_in_the_way(src.path(), &dest, Path::new("c/0"), None).unwrap());
        assert!(!dst.path().join("c/0").exists());
        assert!(dest.kind_changed(), "the end does not take the tracker's word for what landed");
        // Nothing in the way: nothing removed, and the copy's own error stands.
        assert!(!remove_folder_in_the_way(src.path(), &dest, Path::new("c/0"), None).unwrap());
    }
}
