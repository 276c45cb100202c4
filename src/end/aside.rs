//! The freeing's set-aside folder at the source root (docs/design.md, "The end of a run",
//! Freeing). A lease stops no writer from renaming a new version over a name between the last look
//! and the unlink, and an unlink by name would delete that version, never copied. So a file being
//! freed is first renamed into `.softcopy-freeing/`, a folder only softcopy writes in, under a short
//! name of its own; there, no writer can swap it, and it is looked at again: the file held open and
//! checked is unlinked, anything else is put back under its name, never over another file.
//!
//! A plain rename is enough to set aside (the name there is new, no one else writes there), so it
//! works where no rename can refuse to replace (FUSE, sshfs, NFS), and a name of 255 bytes keeps
//! its length. What is set aside is announced first, in a list beside it (each file's name and
//! version), flushed before the first rename: a kill or a power cut leaves only files the list
//! names, and [`recover`] at the next run's start unlinks those that are the version journaled as
//! freed (their copies proven, the journal line flushed before the list) and puts every other one
//! back. A file the list does not name, or that cannot be put back, is kept there and named: never
//! deleted.
//!
//! Owns: the folder, its lists and its names. Imports only `sys` (identities, flushes, a rename
//! that never replaces), `names` (escaping) and `vocab`.

use std::fs::{self, File};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use crate::end::names::{escape, unescape};
use crate::vocab::{Copied, Identity};

/// The folder's name at the source root (a `.softcopy*` name: never data, `vocab::is_ignored`).
pub const ASIDE: &str = ".softcopy-freeing";
const LIST: &str = ".list";
/// A list's line noting that a file went beside its name, in a folder of this identity.
const BESIDE: &str = "B";

/// One freeing's use of the folder: made at its first batch, removed by [`Aside::close`] once
/// nothing is left in it.
pub struct Aside {
    dir: PathBuf,
    /// Names this freeing's lists and files apart from any earlier one's (left by a crash).
    run: String,
    batch: usize,
    /// This freeing's lists, held open and locked while it runs: [`recover`] in another process
    /// (another destination's run over the same source) leaves a live freeing's files alone. The
    /// lock goes with the process, however it ends.
    held: Vec<File>,
    /// Their names: removed at the end without a look at their lock, which a process forked
    /// meanwhile (holding a copy of the handle until it execs) may still hold.
    lists: Vec<String>,
    /// Files set aside beside their names on other filesystems ([`beside`]): their folders are
    /// flushed before the next batch is announced and before the lists go, and while one is still
    /// there (kept: it could not go back) its list stays, the only thing that names it.
    beside: Vec<PathBuf>,
    /// Their folders.
    beside_folders: std::collections::BTreeSet<PathBuf>,
}

impl Aside {
    pub fn new(src_root: &Path) -> Aside {
        let run = format!("{}-{}", std::process::id(), crate::vocab::now_ns());
        Aside {
            dir: src_root.join(ASIDE),
            run,
            batch: 0,
            held: Vec::new(),
            lists: Vec::new(),
            beside: Vec::new(),
            beside_folders: Default::default(),
        }
    }

    /// Records durably the names and versions of `files`, about to be set aside one by one; the
    /// returned batch names them in [`Aside::take`].
    pub fn announce(&mut self, files: &[&Copied]) -> io::Result<Batch> {
        // Files set aside beside their names are unlinked on other filesystems, whose flushes are
        // not ordered with this one's: made durable before a later batch (the metadata, the marker)
        // is freed, so a power cut never leaves the marker gone and data back (docs/design.md,
        // "The end of a run", Freeing: metadata and the marker only once every data file is gone).
        self.flush_beside()?;
        self.batch += 1;
        let batch = Batch(format!("{}-{}", self.run, self.batch));
        match fs::create_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => own_folder(&self.dir)?,
        }
        // Written and locked under a name `recover` does not read, then named: a list it reads is
        // whole, and locked while its freeing lives.
        let writing = self.dir.join(format!("{}{LIST}.new", batch.0));
        let list = File::create(&writing)?;
        list.try_lock().map_err(io::Error::from)?;
        let mut out = io::BufWriter::new(list);
        for (i, c) in files.iter().enumerate() {
            let v = &c.ident;
            writeln!(out, "{i} {} {} {} {} {}", v.dev, v.ino, v.size, v.mtime_ns, escape(&c.rel))?;
        }
        let list = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        list.sync_all()?;
        let name = format!("{}{LIST}", batch.0);
        fs::rename(&writing, self.dir.join(&name))?;
        crate::sys::flush_folder(&self.dir)?;
        self.held.push(list);
        self.lists.push(name);
        Ok(batch)
    }

    /// Renames `src` (the `i`th file of `batch`) into the folder: whatever is under the name now.
    /// A file on another filesystem mounted inside the acquisition cannot go there (EXDEV): it is
    /// set aside beside its name instead (`beside`), in its own folder on its own filesystem.
    pub fn take(&mut self, batch: &Batch, i: usize, src: &Path) -> io::Result<PathBuf> {
        let path = self.dir.join(format!("{}-{i}", batch.0));
        match fs::rename(src, &path) {
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                self.note_beside(batch, i, src)?;
                let path = beside(src, batch.0.as_str(), i);
                fs::rename(src, &path)?;
                self.beside.push(path.clone());
                self.beside_folders.extend(src.parent().map(Path::to_path_buf));
                Ok(path)
            }
            moved => moved.map(|()| path),
        }
    }

    /// Ends the freeing: once every file set aside is unlinked or put back, that is made durable,
    /// then the lists and the folder go. A file still there keeps its list for the next run.
    pub fn close(mut self) -> io::Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        crate::sys::flush_folder(&self.dir)?;
        self.flush_beside()?;
        // Unlocked first: Windows refuses to delete a file held open.
        self.held.clear();
        if self.beside.iter().any(|p| still_there(p)) {
            return Ok(());
        }
        remove_if_done(&self.dir, &self.lists)
    }

    /// Notes durably in `batch`'s list, before `src` (its `i`th file) is set aside beside its
    /// name, the identity of the folder it goes into: a next run that finds it neither there nor
    /// in the folder tells a file gone (unlinked, put back) from one on a filesystem unmounted (or
    /// another mounted) there since, whose list then stays until it is back.
    fn note_beside(&self, batch: &Batch, i: usize, src: &Path) -> io::Result<()> {
        let folder = crate::sys::path_identity(src.parent().unwrap_or(Path::new(".")))?;
        let name = format!("{}{LIST}", batch.0);
        let k = self.lists.iter().position(|l| *l == name).ok_or_else(|| io::Error::other("no list for this batch"))?;
        let mut list = &self.held[k];
        writeln!(list, "{BESIDE} {i} {} {}", folder.dev, folder.ino)?;
        list.sync_data()
    }

    /// Flushes the folders where files were set aside beside their names.
    fn flush_beside(&self) -> io::Result<()> {
        self.beside_folders.iter().try_for_each(|f| crate::sys::flush_folder(f))
    }
}

/// A batch's name in the folder.
pub struct Batch(String);

/// Where the `i`th file of `batch`, at `src`, is set aside when it cannot be renamed into the
/// folder (it is on another filesystem than the source root): beside its name, under a name only
/// softcopy gives (`.softcopy-freeing-<batch>-<i>`, never data: `vocab::is_ignored`). The list
/// naming it stays in the folder at the root, so [`recover`] finds it from the list alone.
fn beside(src: &Path, batch: &str, i: usize) -> PathBuf {
    src.with_file_name(format!("{ASIDE}-{batch}-{i}"))
}

/// Whether anything is at `path` (or it cannot be told: kept as there).
fn still_there(path: &Path) -> bool {
    !matches!(fs::symlink_metadata(path), Err(e) if crate::vocab::is_gone(&e))
}

/// Whether `now` (what was set aside) is the version `held` (the file held open and checked, or
/// announced): the same file, unchanged. The rename changed its ctime, so ctime is not compared.
pub fn is_version(now: &Identity, held: &Identity) -> bool {
    (now.dev, now.ino, now.size, now.mtime_ns) == (held.dev, held.ino, held.size, held.mtime_ns)
}

/// Puts `aside` back at `to`, never over a file there; on failure it stays where it is.
pub fn put_back(aside: &Path, to: &Path) -> io::Result<()> {
    crate::sys::rename_noreplace(aside, to)?;
    if let Some(parent) = to.parent() {
        crate::sys::flush_folder(parent)?;
    }
    Ok(())
}

/// What [`recover`] did with files a crash left aside.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The version journaled as freed: unlinked, as the freeing would have.
    pub freed: Vec<PathBuf>,
    /// Another version (a writer's, renamed over the name): back under its name.
    pub put_back: Vec<PathBuf>,
    /// Left in the folder, with why: never deleted.
    pub kept: Vec<(PathBuf, String)>,
}

/// Finishes what a freeing killed mid-way left in the folder at `src_root` (see the module's
/// comment). No folder: nothing to do; a freeing still running (a list locked): nothing is
/// touched.
pub fn recover(src_root: &Path) -> io::Result<Recovered> {
    let dir = src_root.join(ASIDE);
    let mut done = Recovered::default();
    match own_folder(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(done),
        checked => checked?,
    }
    let entries = fs::read_dir(&dir)?;
    let mut files = Vec::new();
    let mut lists = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let text = name.to_str().unwrap_or_default();
        if !is_ours(text) {
            // A person's file in a folder of that name: never read as a list, never removed.
            continue;
        }
        if let Some(batch) = text.strip_suffix(LIST) {
            lists.push(batch.to_owned());
        } else if text.ends_with(".list.new") {
            // A list being written: nothing it names was set aside yet. Its writer's, if alive.
            match File::open(dir.join(&name))?.try_lock() {
                Ok(()) => fs::remove_file(dir.join(&name))?,
                Err(fs::TryLockError::WouldBlock) => return Ok(done),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        } else {
            files.push(name);
        }
    }
    let mut locked = Vec::with_capacity(lists.len());
    for batch in &lists {
        let list = File::open(dir.join(format!("{batch}{LIST}")))?;
        match list.try_lock() {
            Ok(()) => locked.push(list),
            Err(fs::TryLockError::WouldBlock) => return Ok(done),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    let mut elsewhere = Vec::new();
    for (batch, list) in lists.iter().zip(locked) {
        for Entry { i, held, rel, folder } in read_list(list)? {
            let name = format!("{batch}-{i}");
            files.retain(|f| *f != *name);
            let aside = match set_aside_at(&dir, &name, &src_root.join(&rel), batch, i, folder, &mut elsewhere)? {
                Found::At(aside) => aside,
                Found::Nowhere => continue,
                Found::Away(aside) => {
                    done.kept.push((aside, AWAY.into()));
                    continue;
                }
            };
            finish_one(aside, &held, rel, src_root, &mut done)?;
        }
    }
    for f in files {
        done.kept.push((dir.join(f), "not named by any list of files being freed".into()));
    }
    crate::sys::flush_folder(&dir)?;
    for folder in &elsewhere {
        crate::sys::flush_folder(folder)?;
    }
    // A file kept beside its name (it cannot go back) is named by its list alone: the lists stay,
    // so each next run names it again, as one kept in the folder keeps the folder.
    if done.kept.iter().any(|(p, _)| !p.starts_with(&dir)) {
        return Ok(done);
    }
    let read: Vec<String> = lists.iter().map(|batch| format!("{batch}{LIST}")).collect();
    remove_if_done(&dir, &read)?;
    Ok(done)
}

/// Finishes one file a crash left at `aside`: unlinked if it is the version `held` (announced,
/// journaled as freed), else put back under its name `rel`, never over another; kept and named
/// where neither can be done.
fn finish_one(aside: PathBuf, held: &Identity, rel: PathBuf, src_root: &Path, done: &mut Recovered) -> io::Result<()> {
    match crate::sys::path_identity(&aside) {
        Err(e) => done.kept.push((aside, e.to_string())),
        Ok(now) if is_version(&now, held) => {
            fs::remove_file(&aside)?;
            done.freed.push(rel);
        }
        Ok(_) => match put_back(&aside, &src_root.join(&rel)) {
            Ok(()) => done.put_back.push(rel),
            Err(e) => done.kept.push((aside, format!("{} cannot go back under its name: {e}", rel.display()))),
        },
    }
    Ok(())
}

/// Why a file set aside beside its name on a filesystem not there now is kept.
const AWAY: &str = "set aside beside its name on a filesystem that is not mounted there now (or another is): kept, \
                    and named, until it is back";

/// Where a file a list names is.
enum Found {
    /// Set aside here.
    At(PathBuf),
    /// Not set aside (never moved, or unlinked, or put back).
    Nowhere,
    /// Set aside beside its name (at this path), in a folder that is not the one there now: its
    /// filesystem unmounted, or another mounted there, since.
    Away(PathBuf),
}

/// Where a file a list names was set aside, if it still is: in the folder (`name`), or beside its
/// name `src` on a filesystem mounted inside the acquisition ([`beside`]; its folder is then noted
/// in `elsewhere`, to be flushed before the lists go). `folder`: the identity its list noted for
/// the folder it went beside its name in, if it went.
fn set_aside_at(
    dir: &Path,
    name: &str,
    src: &Path,
    batch: &str,
    i: usize,
    folder: Option<(u64, u64)>,
    elsewhere: &mut Vec<PathBuf>,
) -> io::Result<Found> {
    let here = dir.join(name);
    match fs::symlink_metadata(&here) {
        Err(e) if crate::vocab::is_gone(&e) => {}
        // There, or not to be looked at: the caller names it kept.
        _ => return Ok(Found::At(here)),
    }
    let there = beside(src, batch, i);
    match fs::symlink_metadata(&there) {
        Ok(_) => {
            if let Some(folder) = src.parent().filter(|f| !elsewhere.iter().any(|e| e == f)) {
                elsewhere.push(folder.to_path_buf());
            }
            Ok(Found::At(there))
        }
        Err(e) if crate::vocab::is_gone(&e) && !went_away(src, folder) => Ok(Found::Nowhere),
        Err(e) if crate::vocab::is_gone(&e) => Ok(Found::Away(there)),
        Err(e) => Err(e),
    }
}

/// Whether the folder of `src` is not the one a file went beside its name in (`noted`): another
/// filesystem there now, none (the mount point alone), or no folder at all. A file that never went
/// beside its name (nothing noted) is not away.
fn went_away(src: &Path, noted: Option<(u64, u64)>) -> bool {
    let Some(noted) = noted else { return false };
    match crate::sys::path_identity(src.parent().unwrap_or(Path::new("."))) {
        Ok(now) => (now.dev, now.ino) != noted,
        Err(_) => true,
    }
}

/// A file a list names.
struct Entry {
    i: usize,
    /// The version announced.
    held: Identity,
    rel: PathBuf,
    /// The identity (device, inode) of the folder it went beside its name in, where it did.
    folder: Option<(u64, u64)>,
}

/// The files a list names, with the folders noted for those that went beside their names.
fn read_list(list: File) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut besides = Vec::new();
    for line in io::BufReader::new(list).split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        if let Some(noted) = line.strip_prefix(BESIDE).and_then(|rest| rest.strip_prefix(' ')) {
            // Written and flushed before the file went beside its name: a line cut short by a
            // crash notes a file that never went.
            let n: Vec<u64> = noted.split(' ').map_while(|n| n.parse().ok()).collect();
            if let [i, dev, ino] = n[..] {
                besides.push((i, (dev, ino)));
            }
            continue;
        }
        let mut f = line.splitn(6, ' ');
        let mut n = || f.next()?.parse::<i128>().ok();
        let parsed = (|| {
            let (i, dev, ino, size, mtime_ns) = (n()?, n()?, n()?, n()?, n()?);
            let v = Identity {
                dev: u64::try_from(dev).ok()?,
                ino: u64::try_from(ino).ok()?,
                size: u64::try_from(size).ok()?,
                mtime_ns: i64::try_from(mtime_ns).ok()?,
                ctime_ns: 0,
            };
            Some((usize::try_from(i).ok()?, v))
        })();
        // The name is the rest of the line. A list is whole and flushed before its first file is
        // set aside, so a line cut short by a crash announces a file that never was.
        if let (Some((i, held)), Some(rel)) = (parsed, f.next().filter(|r| !r.is_empty())) {
            out.push(Entry { i, held, rel: unescape(rel), folder: None });
        }
    }
    for (i, folder) in besides {
        if let Some(e) = out.iter_mut().find(|e| e.i as u64 == i) {
            e.folder = Some(folder);
        }
    }
    Ok(out)
}

/// The folder is a folder, not a link someone left under its name (files set aside through it
/// would leave the acquisition's disk, or another folder's files would be taken for ours).
fn own_folder(dir: &Path) -> io::Result<()> {
    if fs::symlink_metadata(dir)?.is_dir() {
        return Ok(());
    }
    Err(io::Error::other(format!("{} is not a folder of softcopy's", dir.display())))
}

/// Whether `name` is one softcopy gives in the folder: a batch's list (`<pid>-<ns>-<n>.list`, or
/// `.list.new` while it is written) or a file set aside (`<pid>-<ns>-<n>-<i>`). A folder of that
/// name may be a person's (it is never copied: `vocab::is_ignored`); what is in it under any other
/// name is theirs, never read, never removed.
fn is_ours(name: &str) -> bool {
    let stem = name.strip_suffix(".new").unwrap_or(name);
    let stem = stem.strip_suffix(LIST).unwrap_or(stem);
    stem.contains('-') && stem.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the lists and the folder when nothing but lists is left in it; `mine` are lists this
/// process wrote or read whole (no other freeing's).
fn remove_if_done(dir: &Path, mine: &[String]) -> io::Result<()> {
    let names: Vec<_> = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
    if names.iter().any(|n| !n.to_str().is_some_and(|n| is_ours(n) && n.ends_with(LIST))) {
        return Ok(());
    }
    // A list still locked is another freeing's, running (another destination's run over this
    // source), that has set nothing aside yet: its list and the folder are its own.
    // An earlier freeing's list, left for a file it kept beside its name, names that file alone.
    for n in names.iter().filter(|n| !mine.iter().any(|m| **n == **m)) {
        let list = File::open(dir.join(n))?;
        match list.try_lock() {
            Ok(()) if names_one_beside(dir, n, list)? => return Ok(()),
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(()),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    for n in names {
        fs::remove_file(dir.join(n))?;
    }
    match fs::remove_dir(dir) {
        // Another freeing announced a batch meanwhile.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
        done => done,
    }
}

/// Whether the list `name` (in `dir`, read from `list`) names a file still beside its name.
fn names_one_beside(dir: &Path, name: &std::ffi::OsStr, list: File) -> io::Result<bool> {
    let (Some(batch), Some(src_root)) = (name.to_str().and_then(|n| n.strip_suffix(LIST)), dir.parent()) else {
        return Ok(false);
    };
    Ok(read_list(list)?.iter().any(|e| {
        let src = src_root.join(&e.rel);
        still_there(&beside(&src, batch, e.i)) || went_away(&src, e.folder)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(root: &Path, rel: &str, bytes: &[u8]) -> Copied {
        fs::write(root.join(rel), bytes).unwrap();
        let ident = crate::sys::path_identity(&root.join(rel)).unwrap();
        Copied { rel: PathBuf::from(rel), ident, hash: None }
    }

    #[test]
    fn a_file_set_aside_beside_its_name_is_found_from_the_list_after_a_crash() {
        // A file on a filesystem mounted inside the acquisition is set aside beside its name (the
        // rename into the folder crosses devices). Killed there, the next run finds it from the
        // list alone: the version announced is unlinked, another one put back, never lost.
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        fs::create_dir(root.join("mnt")).unwrap();
        let files: Vec<Copied> = ["mnt/freed", "mnt/swapped"].iter().map(|r| copied(root, r, b"v1")).collect();
        let mut aside = Aside::new(root);
        let batch = aside.announce(&files.iter().collect::<Vec<_>>()).unwrap();
        aside.note_beside(&batch, 0, &root.join("mnt/freed")).unwrap();
        let freed = beside(&root.join("mnt/freed"), &batch.0, 0);
        fs::rename(root.join("mnt/freed"), &freed).unwrap();
        fs::write(root.join("mnt/new"), b"the writer's v2").unwrap();
        fs::rename(root.join("mnt/new"), root.join("mnt/swapped")).unwrap();
        fs::rename(root.join("mnt/swapped"), beside(&root.join("mnt/swapped"), &batch.0, 1)).unwrap();
        assert!(crate::vocab::is_ignored(freed.strip_prefix(root).unwrap()), "never data");
        drop(aside);

        let done = recover(root).unwrap();
        assert_eq!(done.freed, [PathBuf::from("mnt/freed")]);
        assert_eq!(done.put_back, [PathBuf::from("mnt/swapped")]);
        assert!(done.kept.is_empty(), "{:?}", done.kept);
        assert_eq!(fs::read(root.join("mnt/swapped")).unwrap(), b"the writer's v2");
        assert_eq!(fs::read_dir(root.join("mnt")).unwrap().count(), 1, "nothing left beside");
        assert!(!root.join(ASIDE).exists(), "the folder cleared");
    }

    /// A freeing of `mnt/c0` (on a filesystem mounted inside the acquisition at `root`) killed
    /// once a writer's new version renamed over it was set aside beside its name; where it is.
    fn killed_with_a_new_version_of_mnt_c0_beside_it(root: &Path) -> PathBuf {
        fs::create_dir(root.join("mnt")).unwrap();
        let files = [copied(root, "mnt/c0", b"the version copied")];
        let mut aside = Aside::new(root);
        let batch = aside.announce(&files.iter().collect::<Vec<_>>()).unwrap();
        fs::write(root.join("mnt/new"), b"the writer's v2").unwrap();
        fs::rename(root.join("mnt/new"), root.join("mnt/c0")).unwrap();
        // As `take` does where the rename into the folder crosses devices.
        aside.note_beside(&batch, 0, &root.join("mnt/c0")).unwrap();
        let set_aside = beside(&root.join("mnt/c0"), &batch.0, 0);
        fs::rename(root.join("mnt/c0"), &set_aside).unwrap();
        set_aside
    }

    #[test]
    fn a_file_kept_beside_its_name_stays_named_by_its_list() {
        // A writer's new version set aside beside its name, and a third file under the name since:
        // it cannot go back and is kept there. Kept in the folder, it keeps the folder and its
        // list, so each next run names it again (and `softcopy verify`, the service see the
        // folder); kept beside, nothing else names it: the list must stay for it.
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        let kept = killed_with_a_new_version_of_mnt_c0_beside_it(root);
        fs::write(root.join("mnt/c0"), b"and a v3 under the name").unwrap();

        for run in ["the first run after the crash", "the next one", "one after a run that freed"] {
            let done = recover(root).unwrap();
            assert_eq!(
                done.kept.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
                std::slice::from_ref(&kept),
                "{run}"
            );
            assert_eq!(fs::read(&kept).unwrap(), b"the writer's v2", "{run}");
            // A run freeing another file: its end clears its own list, never the earlier one.
            let other = [copied(root, "other", b"freed")];
            let mut aside = Aside::new(root);
            let batch = aside.announce(&other.iter().collect::<Vec<_>>()).unwrap();
            fs::remove_file(aside.take(&batch, 0, &root.join("other")).unwrap()).unwrap();
            aside.close().unwrap();
        }
    }

    #[test]
    fn a_file_set_aside_beside_its_name_on_a_disk_unmounted_since_stays_named() {
        // The unmount is played by moving the folder away and leaving an empty one at its name (a
        // mount point without its filesystem); `tests/` shows it with a real bind mount.
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        killed_with_a_new_version_of_mnt_c0_beside_it(root);
        fs::rename(root.join("mnt"), root.join("unmounted")).unwrap();
        fs::create_dir(root.join("mnt")).unwrap();

        recover(root).unwrap();
        fs::remove_dir(root.join("mnt")).unwrap();
        fs::rename(root.join("unmounted"), root.join("mnt")).unwrap();
        let done = recover(root).unwrap();
        assert_eq!(done.put_back, [PathBuf::from("mnt/c0")], "{:?}", done.kept);
        assert_eq!(fs::read(root.join("mnt/c0")).unwrap(), b"the writer's v2");
    }

    #[test]
    fn a_crash_leaves_the_version_announced_deleted_and_any_other_put_back() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        let files: Vec<Copied> =
            ["freed", "swapped", "taken", "untouched"].iter().map(|r| copied(root, r, b"v1")).collect();
        let mut aside = Aside::new(root);
        let batch = aside.announce(&files.iter().collect::<Vec<_>>()).unwrap();
        // Killed mid-batch: "freed" set aside as announced; a writer's new version was under
        // "swapped" when it was set aside; "taken" set aside and a new file made under its name
        // since; "untouched" never reached.
        aside.take(&batch, 0, &root.join("freed")).unwrap();
        fs::write(root.join("new"), b"the writer's v2").unwrap();
        fs::rename(root.join("new"), root.join("swapped")).unwrap();
        aside.take(&batch, 1, &root.join("swapped")).unwrap();
        fs::write(root.join("taken.v2"), b"other v2").unwrap();
        fs::rename(root.join("taken.v2"), root.join("taken")).unwrap();
        let other = aside.take(&batch, 2, &root.join("taken")).unwrap();
        fs::write(root.join("taken"), b"and a v3 under the name").unwrap();
        drop(aside);

        let done = recover(root).unwrap();
        assert_eq!(done.freed, [PathBuf::from("freed")]);
        assert_eq!(done.put_back, [PathBuf::from("swapped")]);
        assert_eq!(done.kept.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), std::slice::from_ref(&other));
        assert!(!root.join("freed").exists());
        assert_eq!(fs::read(root.join("swapped")).unwrap(), b"the writer's v2");
        assert_eq!(fs::read(root.join("taken")).unwrap(), b"and a v3 under the name");
        assert_eq!(fs::read(&other).unwrap(), b"other v2", "never deleted");
        assert_eq!(fs::read(root.join("untouched")).unwrap(), b"v1");
        // What stays keeps its list: the next look finds it again, and clears the folder once it
        // can go back.
        fs::remove_file(root.join("taken")).unwrap();
        let done = recover(root).unwrap();
        assert_eq!(done.put_back, [PathBuf::from("taken")]);
        assert!(!root.join(ASIDE).exists());
    }

    #[test]
    fn a_live_freeing_is_left_alone() {
        // Another run over the same source (another destination) starts while this one frees.
        let src = tempfile::tempdir().unwrap();
        let c = copied(src.path(), "0", b"v1");
        let mut aside = Aside::new(src.path());
        let batch = aside.announce(&[&c]).unwrap();
        let moved = aside.take(&batch, 0, &src.path().join("0")).unwrap();
        let done = recover(src.path()).unwrap();
        assert!(done.freed.is_empty() && done.put_back.is_empty() && done.kept.is_empty());
        assert!(moved.exists(), "a live freeing's file is its own to unlink or put back");
        drop(aside);
        assert_eq!(recover(src.path()).unwrap().freed, [PathBuf::from("0")], "once it is gone, it is finished");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_under_the_folders_name_is_never_used() {
        let (src, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::os::unix::fs::symlink(elsewhere.path(), src.path().join(ASIDE)).unwrap();
        let c = copied(src.path(), "0", b"v1");
        assert!(Aside::new(src.path()).announce(&[&c]).is_err());
        fs::write(elsewhere.path().join("1-2-0"), b"someone's").unwrap();
        fs::write(elsewhere.path().join("1-2.list"), b"0 1 2 3 4 x\n").unwrap();
        assert!(recover(src.path()).is_err());
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 2, "nothing there touched");
    }

    #[test]
    fn each_batch_sets_its_files_aside_under_names_of_its_own() {
        // A file left aside by one batch (it could neither go nor go back) is never replaced by a
        // later batch's file, nor its list by the later list.
        let src = tempfile::tempdir().unwrap();
        let (a, b) = (copied(src.path(), "a", b"a"), copied(src.path(), "b", b"b"));
        let mut aside = Aside::new(src.path());
        let first = aside.announce(&[&a]).unwrap();
        let a_aside = aside.take(&first, 0, &src.path().join("a")).unwrap();
        let second = aside.announce(&[&b]).unwrap();
        let b_aside = aside.take(&second, 0, &src.path().join("b")).unwrap();
        assert_ne!(a_aside, b_aside);
        assert_eq!((fs::read(&a_aside).unwrap(), fs::read(&b_aside).unwrap()), (b"a".to_vec(), b"b".to_vec()));
        drop(aside);
        assert_eq!(recover(src.path()).unwrap().freed.len(), 2, "both lists read");
    }

    #[test]
    fn a_freeing_that_ends_leaves_another_running_freeings_list_and_folder() {
        // Two runs over one source free it at once (two destinations): the first to end removed
        // every list, the other's too, and the folder; the other's next set-aside then failed
        // (the folder gone), or, set aside just then, its file was named by no list.
        let src = tempfile::tempdir().unwrap();
        let (c0, c1) = (copied(src.path(), "0", b"v1"), copied(src.path(), "1", b"v1"));
        let mut first = Aside::new(src.path());
        first.announce(&[&c0]).unwrap();
        let mut second = Aside::new(src.path());
        let batch = second.announce(&[&c1]).unwrap();
        first.close().unwrap();
        let moved = second.take(&batch, 0, &src.path().join("1")).unwrap();
        drop(second); // killed with its file set aside: its list tells the next run what it is
        assert_eq!(recover(src.path()).unwrap().freed, [PathBuf::from("1")]);
        assert!(!moved.exists() && !src.path().join(ASIDE).exists());
    }

    #[test]
    fn a_freeing_that_ends_clears_a_dead_freeings_list_that_names_nothing_still_aside() {
        // A freeing killed after its announce, before any set-aside, left an unlocked list that
        // names files still under their names: the next freeing's end removes it and the folder.
        let src = tempfile::tempdir().unwrap();
        let (c0, c1) = (copied(src.path(), "0", b"v1"), copied(src.path(), "1", b"v1"));
        let mut dead = Aside::new(src.path());
        dead.announce(&[&c0]).unwrap();
        drop(dead);
        let mut next = Aside::new(src.path());
        let batch = next.announce(&[&c1]).unwrap();
        fs::remove_file(next.take(&batch, 0, &src.path().join("1")).unwrap()).unwrap();
        next.close().unwrap();
        assert!(!src.path().join(ASIDE).exists(), "the folder cleared");
        assert_eq!(fs::read(src.path().join("0")).unwrap(), b"v1", "never set aside, never touched");
    }

    #[test]
    fn a_file_no_list_names_is_never_deleted() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join(ASIDE)).unwrap();
        fs::write(src.path().join(ASIDE).join("1-2-0"), b"someone's").unwrap();
        fs::write(src.path().join(ASIDE).join("1-2.list"), b"1 1 2 3 4 another").unwrap();
        let done = recover(src.path()).unwrap();
        assert!(done.freed.is_empty() && done.put_back.is_empty());
        assert_eq!(done.kept.len(), 1);
        assert_eq!(fs::read(src.path().join(ASIDE).join("1-2-0")).unwrap(), b"someone's");
    }

    #[test]
    fn a_persons_files_in_a_folder_of_that_name_are_never_read_or_removed() {
        // Lists by their suffix alone, `playlist.list` was read as one and removed with the
        // folder, `draft.list.new` as a list being written: a person's files, never copied.
        let src = tempfile::tempdir().unwrap();
        let dir = src.path().join(ASIDE);
        fs::create_dir(&dir).unwrap();
        for name in ["playlist.list", "draft.list.new", "1-x.list"] {
            fs::write(dir.join(name), name).unwrap();
        }
        let done = recover(src.path()).unwrap();
        assert!(done.freed.is_empty() && done.put_back.is_empty() && done.kept.is_empty(), "{done:?}");
        for name in ["playlist.list", "draft.list.new", "1-x.list"] {
            assert_eq!(fs::read(dir.join(name)).unwrap(), name.as_bytes());
        }
        assert!(is_ours("12-34-5.list") && is_ours("12-34-5.list.new") && is_ours("12-34-5-0"));
        for persons in ["12.list", "1-x.list", "take-2", "1--2.list", "-1.list"] {
            assert!(!is_ours(persons), "{persons}");
        }
    }

    #[test]
    fn a_freeing_that_ends_clears_the_folder_and_names_of_255_bytes_are_set_aside() {
        let src = tempfile::tempdir().unwrap();
        let long = "n".repeat(255);
        let c = copied(src.path(), &long, b"data");
        let mut aside = Aside::new(src.path());
        let batch = aside.announce(&[&c]).unwrap();
        let moved = aside.take(&batch, 0, &src.path().join(&long)).unwrap();
        assert!(is_version(&crate::sys::path_identity(&moved).unwrap(), &c.ident));
        fs::remove_file(moved).unwrap();
        aside.close().unwrap();
        assert_eq!(fs::read_dir(src.path()).unwrap().count(), 0);
        assert!(recover(src.path()).unwrap().kept.is_empty(), "no folder: nothing to do");
    }
}
