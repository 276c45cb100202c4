//! Mirrored deletions at the destination: the one path by which a name gone at the source removes
//! a copy (docs/design.md, "Invariants"). Only an entry stored under exactly that name,
//! never a link, never the only copy of a freed file, and only while the destination is still this
//! acquisition's copy (`Dest::changing`). Used by the copier (a deletion event) and by
//! `in_the_way` (a copy of another kind in the way of a new file or folder).
//!
//! Imports `dest` and `vocab` only.

use std::path::Path;

use crate::dest::{Dest, Kind};
use crate::vocab::{is_gone, Outcome};

/// Removes the copy of `rel`, whose source is gone; what it did, or why not.
pub fn remove_destination(dest: &Dest, rel: &Path) -> crate::Result<Outcome> {
    let shown = dest.shown(rel);
    let (dir, name) = crate::dest::split(rel).map_err(|e| crate::Error::io("remove", &shown, e))?;
    let folder = match dest.folder(dir, false) {
        Ok(f) => f,
        Err(e) if is_gone(&e) => return Ok(Outcome::Deleted),
        Err(e) => return Err(crate::Error::io("remove", &shown, e)),
    };
    // Only "not there" is gone: a look that fails otherwise (EIO, a share timing out) is retried.
    // Taken as deleted, the file would leave the tracker while its copy stays, and the end, which
    // walks no destination where every copy is accounted for (docs/design.md, "The end of a run"),
    // would publish a stale chunk where the source reads fill value.
    let m = match dest.look(&folder, name) {
        Ok(m) => m,
        Err(e) if is_gone(&e) => return Ok(Outcome::Deleted),
        Err(e) => return Err(crate::Error::io("look at", &shown, e)),
    };
    if !dest.stored_as(&folder, name).map_err(|e| crate::Error::io("look at", &shown, e))? {
        // The name found is another file's, in another case (`Notes` for `notes`), at a
        // destination that folds case: the deleted name has no copy of its own to remove.
        return Ok(Outcome::Deleted);
    }
    if dest.was_freed(rel) {
        // Its source was freed by an earlier run: the name gone there is no deletion by a writer,
        // and this copy is the only one left.
        return Ok(Outcome::Deleted);
    }
    if m.kind == Kind::Other {
        // softcopy never makes a link: one here is someone else's (an admin's `dst/new ->
        // elsewhere`), not a copy, and its source's name going away is no evidence about it.
        // Found by the model test: a folder of the source removed (`overwrite=True`) unlinked
        // the admin's link of that name, and the next copy made a real folder in its place.
        return Ok(Outcome::Skipped);
    }
    dest.changing().map_err(|e| crate::Error::io("remove", &shown, e))?;
    if m.is_dir() {
        // A directory gone at the source: removed here only once empty (its files are jobs
        // of their own; whichever finishes last prunes it).
        let _ = dest.remove_folder(&folder, name);
        return Ok(Outcome::Deleted);
    }
    match dest.remove_name(&folder, name) {
        Ok(()) => Ok(Outcome::Deleted),
        Err(e) if is_gone(&e) => Ok(Outcome::Deleted),
        Err(e) => Err(crate::Error::io("remove", &shown, e)),
    }
}
