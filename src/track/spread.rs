//! Copies in flight per destination folder, so the next job goes to a folder nobody is writing
//! into, and a job that must share a folder writes its partial copy elsewhere.
//!
//! Why (docs/design.md, "Round trips"): a network filesystem creates and renames names in one
//! folder one at a time. The kernel holds the folder's lock across each round trip, so eight
//! workers in one folder of an sshfs mount at 2 ms copy no faster than one (measured: 62 against
//! 47 files/s; eight folders: 322). Spreading the workers over folders hides the round trip; in a
//! folder that is the only one (a flat Zarr v2 array: every chunk in one folder), moving the
//! partial's create out of it halves what each file holds the lock for.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::vocab::Partial;

/// How far down the ready queue a free folder is looked for: far enough to find one among a
/// few dozen workers, short enough that the queue's order still holds (a file waits for at most
/// this many others to jump it).
const LOOK_AHEAD: usize = 64;

/// The number of copies in flight into each folder (keys' parents, `/`-separated).
#[derive(Debug, Default)]
pub struct FolderLoad {
    in_flight: HashMap<OsString, u32>,
}

fn folder_of(key: &OsStr) -> &OsStr {
    Path::new(key).parent().map_or(OsStr::new(""), Path::as_os_str)
}

impl FolderLoad {
    /// Which entry of `ready` to take next: the first whose folder has nothing in flight within
    /// `LOOK_AHEAD` usable entries, else the first usable one. `usable` says whether an entry
    /// is still due; the entries it refuses are dropped from the queue.
    pub fn pick<K: AsRef<OsStr>, T>(
        &self,
        ready: &mut VecDeque<(K, T)>,
        mut usable: impl FnMut(&K) -> bool,
    ) -> Option<(K, T, Partial)> {
        let (mut i, mut seen, mut first) = (0, 0, None);
        while i < ready.len() && seen < LOOK_AHEAD {
            let key = &ready[i].0;
            if !usable(key) {
                ready.remove(i);
                continue;
            }
            if !self.in_flight.contains_key(folder_of(key.as_ref())) {
                let (k, t) = ready.remove(i)?;
                return Some((k, t, Partial::Beside));
            }
            first.get_or_insert(i);
            seen += 1;
            i += 1;
        }
        let (k, t) = ready.remove(first?)?;
        Some((k, t, Partial::Staged))
    }

    /// A copy into `key`'s folder started.
    pub fn started(&mut self, key: &OsStr) {
        *self.in_flight.entry(folder_of(key).to_os_string()).or_default() += 1;
    }

    /// A copy into `key`'s folder ended.
    pub fn ended(&mut self, key: &OsStr) {
        let folder = folder_of(key);
        if let Some(n) = self.in_flight.get_mut(folder) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(folder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(keys: &[&str]) -> VecDeque<(OsString, ())> {
        keys.iter().map(|k| (OsString::from(k), ())).collect()
    }

    #[test]
    fn the_next_job_goes_to_a_folder_nobody_writes_into() {
        let mut load = FolderLoad::default();
        let mut ready = queue(&["a/0", "a/1", "b/0", "a/2", "c/0"]);
        let mut take = |load: &mut FolderLoad| {
            let (k, (), how) = load.pick(&mut ready, |_| true).unwrap();
            load.started(&k);
            (k.into_string().unwrap(), how)
        };
        assert_eq!(take(&mut load), ("a/0".into(), Partial::Beside));
        assert_eq!(take(&mut load), ("b/0".into(), Partial::Beside));
        assert_eq!(take(&mut load), ("c/0".into(), Partial::Beside));
        // Every folder is busy: the oldest goes, and writes its partial elsewhere.
        assert_eq!(take(&mut load), ("a/1".into(), Partial::Staged));
        load.ended(OsStr::new("a/0"));
        load.ended(OsStr::new("a/1"));
        assert_eq!(take(&mut load), ("a/2".into(), Partial::Beside));
    }

    #[test]
    fn entries_no_longer_due_are_dropped_and_the_root_is_a_folder_too() {
        let mut load = FolderLoad::default();
        load.started(OsStr::new(".zattrs"));
        let mut ready = queue(&["gone", "0.0", "x/1"]);
        let mut dropped = Vec::new();
        let (k, (), how) = load
            .pick(&mut ready, |k| {
                let keep = k != "gone";
                if !keep {
                    dropped.push(k.clone());
                }
                keep
            })
            .unwrap();
        assert_eq!((k.to_str().unwrap(), how), ("x/1", Partial::Beside));
        assert_eq!(dropped, [OsString::from("gone")]);
        assert_eq!(ready.len(), 1);
        assert!(load.pick(&mut VecDeque::<(OsString, ())>::new(), |_| true).is_none());
    }
}
