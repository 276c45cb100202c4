//! The tracker's side of the paced walk (docs/design.md, "Memory"): the initial scan lists files
//! only as fast as the copy takes them, so what waits to be listed costs no memory, and a file
//! that only the walk ever found leaves the map for its folder's record as soon as it is copied.

use std::collections::btree_map::Entry;
use std::ffi::OsStr;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use super::settled::folder_of;
use super::sweep::at_rest;
use super::{key_of, schedule, FileState, Tracker, Walking, Want};

impl Tracker {
    /// A paced walk of the source starts (or starts again). One that starts again lists every
    /// file again, each one not held as new: the records of those that left the map would keep
    /// them twice and never prove their folders, so they are given up (their copies stay counted,
    /// and the end walks the destination: docs/design.md, "Memory").
    pub fn walk_started(&mut self) {
        if self.walking == Walking::Done {
            self.walking = Walking::UnderWay;
        } else {
            self.settled.removed_tree(Path::new(""));
        }
    }

    /// The paced walk listed every folder. True when a sweep left files to it meanwhile: the
    /// source is then swept again (a file the walk had listed may have changed unheard).
    pub fn walk_ended(&mut self) -> bool {
        std::mem::take(&mut self.walking) == Walking::LeftSome
    }

    /// Where the paced walk is.
    pub fn walking(&self) -> Walking {
        self.walking
    }

    /// The paced walk listed `rel`: as a scan's find, except that a file the tracker already
    /// holds is left to what it heard (its events, or a sweep, said more than a listing can) unless
    /// that left it nothing to do and no copy (see `stranded`), and
    /// that a file in a folder with a record is new, not a settled one back (the walk lists each
    /// name once; the record holds files listed before it).
    pub fn walked(&mut self, rel: &Path, now: Instant) {
        self.walk_at = folder_of(&key_of(rel)).to_owned();
        if self.ignores(rel) {
            return;
        }
        let (key, st) = match self.files.entry(Rc::from(&*key_of(rel))) {
            Entry::Vacant(e) => {
                let key = e.key().clone();
                (key, e.insert(FileState { walked: true, ..FileState::new() }))
            }
            // What was heard before the listing left it with nothing to do and no copy (a close
            // with no write since the watch: the writer wrote it before): as for a scan's find.
            Entry::Occupied(e) if stranded(e.get()) => (e.key().clone(), e.into_mut()),
            Entry::Occupied(_) => return,
        };
        // Whether a writer still has it open is asked by its job, as for any scan's find.
        st.verify_closed = true;
        schedule(st, &key, Want::Now, now, &mut self.ready, &mut self.timers);
    }

    /// Whether the paced walk may still list files in `folder`: it is under way and listed its
    /// last file there or below (walkdir lists a folder's files and subfolders before leaving it).
    pub(super) fn walk_may_list(&self, folder: &OsStr) -> bool {
        may_list(self.walking, &self.walk_at, folder)
    }

    /// A file only the walk ever found, its version now at the destination (copied, or found
    /// there by a resumed run) with nothing else under way, leaves the map for its folder's record
    /// at once: the quiet period is for files a writer may write again (docs/design.md,
    /// "Memory"), and any event brings this one back as a settled file returning. Only for runs
    /// that let settled files go (the caller decides). True when it left.
    pub fn let_go_walked(&mut self, rel: &Path) -> bool {
        let Some((key, st)) = self.files.get_key_value(&*key_of(rel)) else { return false };
        if !st.walked || !at_rest(key, st) {
            return false;
        }
        let key = key.clone();
        let st = self.files.remove(&key).expect("looked up");
        self.settled.keep(&key, st.copied.as_ref().expect("at rest files are copied"));
        true
    }
}

/// Held with nothing under way, never copied and never failed: only a listing can make it due.
fn stranded(st: &FileState) -> bool {
    st.copied.is_none()
        && st.want == Want::None
        && !(st.queued || st.in_flight || st.writing)
        && st.pending_since.is_none()
        && st.failures == 0
}

/// Whether a walk that is `walking` and listed its last file in `at` may still list files in
/// `folder` (see [`Tracker::walk_may_list`]).
pub(super) fn may_list(walking: Walking, at: &OsStr, folder: &OsStr) -> bool {
    walking != Walking::Done && Path::new(at).starts_with(folder)
}
