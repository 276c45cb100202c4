//! The destination on real folders: every path reached below the root without a link
//! (invariant 6), other runs' folders and other names' copies left alone (invariant 10), the
//! marker withdrawn before the first change (invariant 9), and the root followed for being the
//! same folder (docs/design.md, "Unavailable is not elsewhere").
use super::*;
use std::os::unix::fs::symlink;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn opened(root: &Path) -> Dest {
    Dest::open(root, root, None).unwrap()
}

/// Whether the folder reached lists `name` (its path names exactly that folder).
fn lists(f: &Folder, name: &str) -> bool {
    fs::read_dir(f.path()).unwrap().any(|e| e.unwrap().file_name() == name)
}

#[test]
fn a_folder_is_reached_or_made_only_below_the_root_and_never_through_a_link() {
    let root = dir();
    let elsewhere = dir();
    fs::create_dir(elsewhere.path().join("inner")).unwrap();
    symlink(elsewhere.path(), root.path().join("link")).unwrap();
    fs::write(root.path().join("file"), b"x").unwrap();
    // Held open (openat2) and named by its path only (each component looked at).
    let held = opened(root.path());
    let named = Dest::at(root.path());
    for dest in [&held, &named] {
        let made = dest.folder(Path::new("a/b"), true).unwrap();
        fs::write(made.join(Path::new("f")), b"v").unwrap();
        assert!(root.path().join("a/b/f").exists(), "the folder's path names it");
        assert!(lists(&dest.folder(Path::new("a"), false).unwrap(), "b"));
        assert!(lists(&dest.folder(Path::new(""), false).unwrap(), "a"), "the root itself");
        assert_eq!(dest.folder(Path::new("none"), false).err().unwrap().kind(), io::ErrorKind::NotFound);
        assert!(!root.path().join("none").exists(), "not made unless asked");
        for rel in ["../x", "/abs", "a/./b/.."] {
            assert_eq!(dest.folder(Path::new(rel), true).err().unwrap().kind(), io::ErrorKind::InvalidInput, "{rel}");
        }
        for rel in ["link", "link/inner", "link/new"] {
            let e = dest.folder(Path::new(rel), true).err().unwrap();
            assert!(matches!(Refused::of(&e), Some(Refused::Link(_))), "{rel}: {e}");
            assert!(e.to_string().contains("symlink"), "{rel}: {e}");
        }
        assert!(!elsewhere.path().join("new").exists());
        for rel in ["file", "file/x"] {
            assert!(dest.folder(Path::new(rel), true).is_err(), "{rel}: a file is no folder");
        }
        fs::remove_dir_all(root.path().join("a")).unwrap();
    }
}

#[test]
fn files_are_looked_at_and_removed_only_below_the_root_without_a_link() {
    let root = dir();
    let elsewhere = dir();
    fs::write(elsewhere.path().join("f"), b"not ours").unwrap();
    symlink(elsewhere.path(), root.path().join("link")).unwrap();
    fs::create_dir(root.path().join("a")).unwrap();
    fs::write(root.path().join("a/f"), b"v").unwrap();
    let dest = opened(root.path());
    assert_eq!(dest.stat(Path::new("a/f")).unwrap().ident.size, 1);
    assert_eq!(dest.stat(Path::new("link")).unwrap().kind, crate::dest::Kind::Other, "never followed");
    assert!(dest.stat(Path::new("link/f")).is_err() && dest.remove_file(Path::new("link/f")).is_err());
    assert!(elsewhere.path().join("f").exists());
    dest.remove_file(Path::new("a/f")).unwrap();
    assert!(!root.path().join("a/f").exists());
    assert_eq!(dest.shown(Path::new("a/f")), root.path().join("a/f"));
    assert_eq!(dest.root(), root.path());
}

#[test]
fn a_folder_another_run_holds_is_refused_and_each_folder_is_looked_at_once() {
    let root = dir();
    fs::create_dir_all(root.path().join("held/x")).unwrap();
    fs::create_dir(root.path().join("free")).unwrap();
    let dest = opened(root.path());
    assert!(dest.folder(Path::new("free"), false).is_ok());
    let claim =
        crate::dest::claim::Claim::take(&root.path().join("held"), &crate::dest::claim::who(Path::new("/other")))
            .unwrap();
    for rel in ["held", "held/x", "held/y"] {
        let e = dest.folder(Path::new(rel), true).err().unwrap();
        assert!(matches!(Refused::of(&e), Some(Refused::Claimed { .. })), "{rel}: {e}");
        assert!(e.to_string().contains("another softcopy"), "{rel}: {e}");
    }
    // Looked at once per run: a claim made later in a folder already looked at is not seen
    // (the claim's own check refuses a destination inside another run's).
    let _late =
        crate::dest::claim::Claim::take(&root.path().join("free"), &crate::dest::claim::who(Path::new("/late")))
            .unwrap();
    assert!(dest.folder(Path::new("free"), false).is_ok());
    drop(claim);
    assert!(dest.folder(Path::new("held/x"), false).is_ok(), "a claim nobody holds is no claim");
}

#[test]
fn where_case_folds_a_folder_stored_under_another_case_is_another_folders_copy() {
    let root = dir();
    fs::create_dir(root.path().join("Pos0")).unwrap();
    let dest = opened(root.path());
    dest.assume_folds_case();
    // What a folding destination's lookup of `pos0` returns: the folder stored as `Pos0`.
    let found = dest.open_folder(Path::new("Pos0"), false).unwrap();
    let e = dest.not_claimed(Path::new("pos0"), &found, true, None).err().unwrap();
    assert!(e.to_string().contains("another case"), "{e}");
    let e = dest.not_claimed(Path::new("pos0"), &found, false, None).err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "looked up, not written: simply not there");
    assert!(dest.not_claimed(Path::new("Pos0"), &found, true, None).is_ok());
    assert!(dest.not_claimed(Path::new("17"), &found, true, None).is_ok(), "chunk keys never fold");
}

#[test]
fn where_case_folds_a_name_stored_under_another_case_is_another_files_copy_unless_it_is_its_own_older_one() {
    let (src, dst) = (dir(), dir());
    fs::write(dst.path().join("Notes"), b"copy").unwrap();
    let dest = opened(dst.path());
    let root = dest.folder(Path::new(""), false).unwrap();
    let collision = |rel: &str| dest.refuse_case_collision(&root, Path::new(rel), src.path());
    assert_eq!(collision("notes").unwrap(), None, "the destination does not fold case");
    assert!(dest.stored_as(&root, Path::new("notes")).unwrap());
    dest.assume_folds_case();
    assert!(!dest.stored_as(&root, Path::new("notes")).unwrap(), "a lookup would find another name");
    assert!(dest.stored_as(&root, Path::new("Notes")).unwrap());
    assert_eq!(collision("notes").unwrap(), Some("Notes".into()), "the name's case changed: its older copy");
    assert_eq!(collision("Notes").unwrap(), None, "its own name");
    fs::write(src.path().join("Notes"), b"another file").unwrap();
    let e = collision("notes").err().unwrap();
    assert!(e.to_string().contains("another file's copy"), "{e}");
    fs::remove_file(src.path().join("Notes")).unwrap();
    dest.keep_freed([PathBuf::from("Notes")].into());
    let e = collision("notes").err().unwrap();
    assert!(e.to_string().contains("freed"), "{e}");
    fs::write(dst.path().join("0.1"), b"chunk").unwrap();
    assert_eq!(collision("0.1").unwrap(), None);
}

#[test]
fn a_destination_that_tells_cases_apart_is_found_so_and_the_probe_is_gone() {
    let root = dir();
    let dest = opened(root.path());
    dest.assume_folds_case();
    dest.detect_case_folding();
    assert!(!dest.folds_case());
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0, "no probe left");
    // A probe that cannot be made leaves the guards on.
    let gone = Dest::at(&root.path().join("gone"));
    gone.detect_case_folding();
    assert!(gone.folds_case());
}

#[test]
fn the_marker_is_withdrawn_durably_once_before_the_first_change() {
    let root = dir();
    let marker = root.path().join("complete");
    fs::write(&marker, b"done").unwrap();
    let dest = Dest::open(root.path(), root.path(), Some("complete")).unwrap();
    assert!(!dest.take_dirty());
    dest.changing().unwrap();
    assert!(!marker.exists());
    assert!(dest.take_dirty() && !dest.take_dirty(), "a change is reported to the flush once");
    // Published again by the end steps (their own view): this destination never touches it again.
    fs::write(&marker, b"done").unwrap();
    dest.changing().unwrap();
    assert!(marker.exists());
    // No marker there: nothing to withdraw, and nothing withdrawn later.
    let dest = Dest::open(root.path(), root.path(), Some("absent")).unwrap();
    dest.changing().unwrap();
    fs::write(root.path().join("absent"), b"done").unwrap();
    dest.changing().unwrap();
    assert!(root.path().join("absent").exists());
}

#[test]
fn a_marker_that_cannot_be_withdrawn_stops_the_change_and_another_names_file_is_not_it() {
    let root = dir();
    fs::create_dir_all(root.path().join("complete/x")).unwrap();
    let dest = Dest::open(root.path(), root.path(), Some("complete")).unwrap();
    let e = dest.changing().err().unwrap();
    assert!(e.to_string().contains("cannot withdraw the marker"), "{e}");
    assert!(dest.changing().is_err(), "still to withdraw");
    // Where case folds, `COMPLETE` is another file's copy, not the marker `complete`.
    let other = dir();
    fs::write(other.path().join("COMPLETE"), b"a source file").unwrap();
    let dest = Dest::open(other.path(), other.path(), Some("complete")).unwrap();
    dest.assume_folds_case();
    dest.changing().unwrap();
    assert!(other.path().join("COMPLETE").exists());
    // Stored under its own name, it is the marker, folding or not.
    fs::write(other.path().join("complete"), b"done").unwrap();
    let dest = Dest::open(other.path(), other.path(), Some("complete")).unwrap();
    dest.assume_folds_case();
    dest.changing().unwrap();
    assert!(!other.path().join("complete").exists());
}

#[test]
fn a_root_is_the_same_only_by_its_name_its_folder_and_its_record() {
    let top = dir();
    let (a, b) = (top.path().join("a"), top.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let given = top.path().join("dst");
    symlink(&a, &given).unwrap();
    let dest = Dest::open(&a, &given, None).unwrap();
    assert_eq!(dest.check_root(), Ok(()));
    // Re-pointed at another folder.
    fs::remove_file(&given).unwrap();
    symlink(&b, &given).unwrap();
    assert!(matches!(dest.check_root(), Err(RootProblem::Elsewhere(_))));
    // Not resolvable now: no evidence either way.
    fs::remove_file(&given).unwrap();
    assert!(matches!(dest.check_root(), Err(RootProblem::Unavailable(_))));
    // Another folder made under the held folder's own name.
    symlink(&a, &given).unwrap();
    fs::rename(&a, top.path().join("old")).unwrap();
    fs::create_dir(&a).unwrap();
    assert!(matches!(dest.check_root(), Err(RootProblem::Elsewhere(_))));
}

/// A destination whose root holds the origin's record `rec`, kept.
fn recorded() -> (tempfile::TempDir, Dest) {
    let root = dir();
    fs::write(root.path().join("rec"), b"this copy").unwrap();
    let dest = opened(root.path());
    dest.keep_record(Path::new("rec")).unwrap();
    (root, dest)
}

#[test]
fn a_root_whose_record_is_gone_or_another_is_another_folder() {
    let (root, dest) = recorded();
    assert_eq!(dest.check_root(), Ok(()));
    // A view for the end steps keeps the record, the freed names and the case.
    dest.keep_freed([PathBuf::from("f")].into());
    dest.assume_folds_case();
    let view = dest.view(None).unwrap();
    assert!(view.was_freed(Path::new("f")) && !view.was_freed(Path::new("g")) && view.folds_case());
    fs::write(root.path().join("rec"), b"another copy").unwrap();
    for d in [&dest, &view] {
        let problem = d.check_root().err().unwrap();
        assert!(matches!(problem, RootProblem::Elsewhere(_)) && problem.why().contains("rec"), "{problem:?}");
    }
    fs::remove_file(root.path().join("rec")).unwrap();
    assert!(matches!(dest.check_root(), Err(RootProblem::Elsewhere(_))));
    fs::create_dir(root.path().join("rec")).unwrap();
    assert!(matches!(dest.check_root(), Err(RootProblem::Unavailable(_))), "a record that cannot be read");
    assert!(dest.keep_record(Path::new("missing")).is_err());
}

#[test]
fn a_change_at_a_root_found_to_be_another_folder_is_refused_and_a_look_stands_for_a_second() {
    let (root, dest) = recorded();
    fs::write(root.path().join("rec"), b"another copy").unwrap();
    assert!(dest.changing().is_err(), "never looked at: looked at now");
    fs::write(root.path().join("rec"), b"this copy").unwrap();
    dest.check_root().unwrap();
    fs::write(root.path().join("rec"), b"another copy").unwrap();
    // A look a moment ago stands: no round trips for every change.
    assert!(dest.changing().is_ok());
    // A destination that keeps no record (a one-off view) is never looked at.
    let other = Dest::at(root.path());
    assert!(other.changing().is_ok());
}

#[test]
fn a_look_at_the_root_is_taken_every_five_seconds_or_when_asked() {
    let top = dir();
    let root = top.path().join("r");
    fs::create_dir(&root).unwrap();
    let dest = opened(&root);
    let mut w = RootWatch::default();
    let t0 = Instant::now();
    assert!(w.look(&dest, t0, false).is_none(), "found where it was");
    fs::rename(&root, top.path().join("moved")).unwrap();
    assert!(w.look(&dest, t0 + Duration::from_millis(4999), false).is_none(), "not due");
    assert!(matches!(w.look(&dest, t0 + Duration::from_secs(5), false), Some(RootChange::Unreachable(_))));
    let later = t0 + Duration::from_secs(10);
    assert!(w.look(&dest, later, false).is_none(), "said once");
    symlink(top.path(), &root).unwrap();
    assert!(matches!(w.look(&dest, later, true), Some(RootChange::Left(_))));
    assert!(w.look(&dest, later, true).is_none(), "said once");
    fs::remove_file(&root).unwrap();
    fs::rename(top.path().join("moved"), &root).unwrap();
    assert!(w.look(&dest, t0 + Duration::from_secs(6), false).is_none(), "not due");
    assert!(matches!(w.look(&dest, t0 + Duration::from_secs(6), true), Some(RootChange::Back)), "asked");
}

#[test]
fn staging_folders_are_lent_one_per_copy_returned_and_removed_once_empty() {
    let root = dir();
    let dest = opened(root.path());
    let staging = root.path().join(STAGING);
    let (a, b) = (dest.staging().unwrap().unwrap(), dest.staging().unwrap().unwrap());
    fs::write(a.join(Path::new("p")), b"v").unwrap();
    assert!(staging.join("1").is_dir() && fs::read_dir(b.path()).unwrap().count() == 0, "two copies, two folders");
    drop(b);
    let again = dest.staging().unwrap().unwrap();
    assert!(!lists(&again, "p") && !staging.join("2").exists(), "the folder given back is lent again");
    drop((a, again));
    dest.remove_staging();
    assert!(staging.join("0/p").exists() && !staging.join("1").exists(), "only empty folders go");
    fs::remove_file(staging.join("0/p")).unwrap();
    dest.remove_staging();
    assert!(!staging.exists());
    dest.refuse_staging();
    assert!(dest.staging().is_none());
}

#[test]
fn partials_are_counted_until_renamed_or_removed() {
    let root = dir();
    let dest = opened(root.path());
    assert!(!dest.partials_left());
    dest.partial_made();
    dest.partial_made();
    assert!(dest.partials_left());
    dest.partial_gone();
    fs::create_dir_all(root.path().join("p/x")).unwrap();
    let top = dest.folder(Path::new(""), false).unwrap();
    dest.remove_partial(&top, Path::new("p"));
    assert!(dest.partials_left(), "one that cannot be removed is still there");
    dest.remove_partial(&top, Path::new("already gone"));
    assert!(!dest.partials_left(), "one removed by someone else is gone");
}

#[test]
fn a_path_splits_into_its_folder_and_name() {
    assert_eq!(split(Path::new("a/b/c")).unwrap(), (Path::new("a/b"), Path::new("c")));
    assert_eq!(split(Path::new("c")).unwrap(), (Path::new(""), Path::new("c")));
    for rel in ["", "a/.."] {
        assert_eq!(split(Path::new(rel)).err().unwrap().kind(), io::ErrorKind::InvalidInput, "{rel}");
    }
}

/// Folders made ahead of their copies (docs/design.md, "Round trips"): below the first
/// component a call made, the rest are made without a look, and only the ones made are taken as
/// holding no other run's claim; one already there is looked at as ever.
#[test]
fn the_components_a_call_made_are_told_apart_from_those_already_there() {
    let root = dir();
    let (local, _) = Local::open(root.path()).unwrap();
    let made = |rel: &str| local.folder_making(Path::new(rel), true).unwrap().1;
    assert_eq!(made("a/b/c"), Some(0), "all three made");
    assert!(root.path().join("a/b/c").is_dir());
    assert_eq!(made("a/b/c"), None, "all there");
    assert_eq!(made("a/x/y"), Some(1), "a there, x and y made");
    assert_eq!(made("a/x/z"), Some(2));
    assert_eq!(made("a"), None);
    assert_eq!(local.folder_making(Path::new("n/m"), false).err().unwrap().kind(), io::ErrorKind::NotFound);
    // Another run's claim on a folder already there is seen, whatever this call made below it.
    fs::create_dir(root.path().join("other")).unwrap();
    let _theirs = super::claim::Claim::take(&root.path().join("other"), "pid 9 elsewhere\n").unwrap();
    let dest = opened(root.path());
    let e = dest.folder(Path::new("other/p/q"), true).err().unwrap();
    assert!(matches!(Refused::of(&e), Some(Refused::Claimed { .. })), "{e}");
}
