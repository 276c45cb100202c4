//! The tracker's sweeps (a full scan compared with what it holds) and its settled files, which
//! leave its map for their folder's record (docs/design.md, "Memory").

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::settled::{Dropped, Sum};
use super::{key_of, FileState, Key, Tracker, Want};

/// Whether something is under way for a file (an event was heard and not yet acted on, a copy or a
/// writer is busy with it, its copies failed, none was made yet): a sweep that finds it changed or
/// gone learns nothing the events did not say.
fn under_way(st: &FileState) -> bool {
    st.in_flight
        || st.queued
        || st.writing
        || st.pending_since.is_some()
        || st.want != Want::None
        || st.failures > 0
        || st.copied.is_none()
}
use crate::vocab::{Change, Identity};

/// Whether a file could leave the map for its folder's record: its current version copied, nothing
/// pending, no writer, no failure, no hash to keep; not a hot key nor Zarr metadata (a shard
/// rewritten per timepoint, metadata rewritten at each resize: each version that came back from a
/// record would make its folder's record fail).
pub(super) fn at_rest(key: &Key, st: &FileState) -> bool {
    st.copied.is_some()
        && !st.superseded
        && st.want == Want::None
        && !(st.writing || st.queued || st.in_flight || st.verify_closed)
        && st.failures == 0
        && st.changes == 0
        && st.pending_since.is_none()
        && st.hash.is_none()
        && st.copies <= 1
        && !Path::new(&**key).file_name().is_some_and(crate::vocab::is_zarr_metadata)
}

impl Tracker {
    /// Starts a reconcile sweep: every file is unseen until [`Tracker::scanned`] finds it.
    pub fn begin_sweep(&mut self) {
        for st in self.files.values_mut() {
            st.seen = false;
        }
        self.settled.begin_sweep();
        self.sweeping = true;
    }

    /// A file listed again after its folder's record failed at a sweep (see [`crate::vocab::Prev::Settled`]).
    pub fn relisted(&mut self, rel: &Path, now: Instant) {
        self.event(rel, Change::Found, now);
        if let Some(st) = self.files.get_mut(&*key_of(rel)) {
            st.relisted = st.copied.is_none();
        }
    }

    /// A sweep that did not complete: nothing it found (or did not find) is taken as evidence.
    pub fn abandon_sweep(&mut self) {
        self.sweeping = false;
    }

    /// A sweep found `rel` with identity `ident`: nothing to do if that version is the one copied,
    /// otherwise it is a new version (its events were lost, or it was never seen). Returns whether
    /// this version is still to be copied (`None`: not tracked at all), for the estimate of the
    /// bytes left at the end.
    pub fn scanned(&mut self, rel: &Path, ident: Identity, now: Instant) -> Option<bool> {
        if self.ignores(rel) {
            return None;
        }
        let key = key_of(rel);
        if let Some(st) = self.files.get_mut(&*key) {
            st.seen = true;
            if st.copied == Some(ident) && !st.in_flight {
                // A writer seen and not heard closing still has it open (invariant 4), unless
                // events were lost meanwhile.
                if self.events_lost || !self.close_events || !st.heard {
                    st.writing = false;
                }
                return Some(false);
            }
            // Another version than the one copied, with nothing under way for it: its events
            // were missed.
            self.counts.unheard += u64::from(self.sweeping && !under_way(st));
        } else if self.sweeping && self.walk_may_list(super::settled::folder_of(&key)) {
            // In a folder the walk may still be listing: perhaps a file it has yet to list, which
            // its folder's record cannot tell from one settled there (docs/design.md, "Memory").
            // That record is judged by the sweep after the walk.
            self.walking = super::Walking::LeftSome;
            return None;
        } else if self.sweeping && self.settled.has_folder_of(&key) {
            // Perhaps a settled file: its folder's record decides at the sweep's end.
            self.settled.sweep_found(&key, &ident);
            return Some(false);
        } else if self.sweeping && self.walking != super::Walking::Done {
            // Perhaps a file the paced walk has yet to list: left to it, so a sweep does not hold
            // what the walk holds back (docs/design.md, "Memory"). Perhaps one it listed, since
            // changed unheard: the source is swept again once the walk ends.
            self.walking = super::Walking::LeftSome;
            return None;
        } else {
            self.counts.unheard += u64::from(self.sweeping);
        }
        self.event(rel, Change::Found, now);
        Some(true)
    }

    /// Ends a complete sweep: files it did not find vanished unseen and are mirrored as deletions.
    /// Returns the folders whose settled files are no longer what their record kept (changed,
    /// added or deleted unseen): the caller lists each again (its files then come back one by one,
    /// as found), and its copies with it, for [`Tracker::mirror_dropped`] to find those deleted.
    pub fn end_sweep(&mut self, now: Instant) -> Vec<Dropped> {
        self.sweeping = false;
        self.events_lost = false;
        let gone: Vec<Key> = self.files.iter().filter(|(_, st)| !st.seen).map(|(p, _)| p.clone()).collect();
        self.counts.unheard += self.files.values().filter(|st| !st.seen && !under_way(st)).count() as u64;
        for rel in gone {
            self.event(Path::new(&*rel), Change::Removed, now);
        }
        let before = self.settled.unheard();
        let (walking, at) = (self.walking, &self.walk_at);
        let listing = |folder: &std::ffi::OsStr| super::paced::may_list(walking, at, folder);
        let changed = self.settled.end_sweep(listing);
        self.counts.unheard += self.settled.unheard() - before;
        changed
    }

    /// The settled files of a record dropped at a complete sweep whose source is gone, mirrored as
    /// deletions: `copies` are the files at the destination's copy of the folder, `listed` every
    /// name in the source's folder now (a listing that succeeded whole). Only where the copies the
    /// tracker does not hold are, by name, exactly the files the record kept (count and sum of name
    /// prints) is each of them proven a settled file's copy; then those not listed are deletions,
    /// each a job whose worker looks at the source again (invariant 8). Anything else there (a
    /// person's note, a copy of a file deleted while no run watched, a copy gone) leaves them all
    /// to the end (docs/design.md, "Memory"). Returns the names mirrored, before any is relisted.
    pub fn mirror_dropped(
        &mut self,
        dropped: &Dropped,
        listed: &HashSet<OsString>,
        copies: &[OsString],
        now: Instant,
    ) -> Vec<PathBuf> {
        let rels = copies.iter().map(|name| dropped.folder.join(name));
        let unheld: Vec<PathBuf> =
            rels.filter(|rel| !self.ignores(rel) && !self.files.contains_key(&*key_of(rel))).collect();
        let mut sum = Sum::default();
        for rel in &unheld {
            sum.add(self.settled.name_print(&key_of(rel)));
        }
        if sum != dropped.names {
            return Vec::new();
        }
        let gone: Vec<PathBuf> =
            unheld.into_iter().filter(|rel| rel.file_name().is_some_and(|n| !listed.contains(n))).collect();
        for rel in &gone {
            self.event(rel, Change::Removed, now);
        }
        gone
    }

    /// Moves files that are settled out of the map into their folder's record: a file whose
    /// current version was copied, with nothing pending, no writer, no failure, and no event since
    /// the previous call (so quiet for at least the time between two calls). Returns how many
    /// left. Only for runs that need no per-file record at the end (no `--delete-source`,
    /// `--checksum` or manifest: the caller decides). Any later event brings a file back as new.
    pub fn evict_settled(&mut self) -> usize {
        let settled = &mut self.settled;
        let before = self.files.len();
        self.files.retain(|key, st| {
            if !at_rest(key, st) {
                st.cold = false;
                return true;
            }
            if !st.cold {
                st.cold = true;
                return true;
            }
            settled.keep(key, st.copied.as_ref().expect("quiet files are copied"));
            false
        });
        before - self.files.len()
    }
}
