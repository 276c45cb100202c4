"""The copy's mark of its source version, read as an adversary (docs/design.md, "A version is
decided on evidence"): each test drives the CLI over resumed runs on real filesystems. The mark
names the source's inode, size, mtime and ctime; a resumed run takes a copy whose mark equals the
source's present one without reading a byte. It rests on the source keeping a ctime of its own
(stamped by the kernel, never set back) and inode numbers that stay with the file, and on the
copy's bytes staying what they were when it was marked. Each finding was a strict xfail, red:
rclone's and erofs's ctimes are not the kernel's stamp (no mark there since), and a copy that
`verify --checksum` found different kept its mark (taken off since)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import softcopy_cmd, tree, wait_for
from test_trust2 import run
from test_trust4_adversary13 import two_positions

ORIGIN = ".softcopy-origin"


@contextmanager
def rclone_mount(backing: Path, mnt: Path) -> Iterator[Path]:
    """`backing` seen through `rclone mount` (FUSE, no cache) at `mnt`; unmounted whatever happens."""
    mnt.mkdir()
    fs = subprocess.Popen(["rclone", "mount", "--config", "/dev/null", str(backing), str(mnt)])
    try:
        wait_for(lambda: os.path.ismount(mnt), 20, "the rclone mount")
        yield mnt
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], check=False)
        fs.wait(20)


def identity(p: Path) -> tuple[int, int, int, int]:
    """What the mark names of a source version: inode, size, mtime, ctime."""
    st = p.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def rewrite_keeping_times(chunk: Path) -> None:
    """A corrected chunk of the same size put in place with its times kept, as `cp -p` does."""
    st = chunk.stat()
    chunk.write_bytes(b"position 0's fixed")
    assert chunk.stat().st_size == st.st_size
    os.utime(chunk, ns=(st.st_mtime_ns, st.st_mtime_ns))


def swap_through_renames(a: Path, b: Path) -> None:
    """Swaps the folders `a` and `b` by three renames (FUSE has no `RENAME_EXCHANGE`)."""
    between = a.with_name(a.name + ".swap")
    a.rename(between)
    b.rename(a)
    between.rename(b)


def resumed_run(src: Path, dst: Path) -> subprocess.CompletedProcess[str]:
    """A run over an earlier run's copy. A source with no folder birth times (FUSE) makes the origin's
    record refuse it, saying to remove that record if the copy is this folder's: it is, so the
    user does as told and runs again."""
    again = run(src, dst)
    if again.returncode != 0 and ORIGIN in again.stderr:
        (dst / ORIGIN).unlink()
        again = run(src, dst)
    return again


@pytest.mark.skipif(shutil.which("rclone") is None, reason="needs rclone")
@pytest.mark.parametrize("change", ["rewritten", "swapped"])
def test_a_source_changed_under_an_rclone_mount_is_not_verified_with_stale_copies(tmp_path: Path, change: str) -> None:
    # rclone reports the mtime, to the nanosecond, as the ctime, and numbers a file by its path: a
    # file rewritten with its mtime kept, or two folders swapped, keep every field of the mark at
    # each path (red while a FUSE source's versions were marked: the stale copies were verified).
    backing, dst = tmp_path / "backing", tmp_path / "out"
    two_positions(backing / "acq")
    (backing / "acq" / "complete").touch()
    # Chunks written a while ago (settled), in nanoseconds: no ctime in whole seconds.
    stamp = time.time_ns() - 60_000_000_000 + 123_456_789
    for f in ("p0", "p1"):
        os.utime(backing / "acq" / f / "0", ns=(stamp, stamp))
    mnt = tmp_path / "mnt"
    src = mnt / "acq"
    with rclone_mount(backing, mnt):
        first = run(src, dst)
        assert first.returncode == 0, first.stderr
        assert tree(dst, skip_marker=True) == tree(src, skip_marker=True)
        before = identity(src / "p0" / "0")
        if change == "rewritten":
            rewrite_keeping_times(src / "p0" / "0")
        else:
            swap_through_renames(src / "p0", src / "p1")
    # Mounted again (the machine restarted, say): a file's inode number is made from its path.
    mnt.rmdir()
    with rclone_mount(backing, mnt):
        after = identity(src / "p0" / "0")
        assert after == before, f"the premise: the mount shows the same identity: {before}, {after}"
        again = resumed_run(src, dst)
        chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with a stale copy: {chunks}, {copies}"


def has_erofs() -> bool:
    return shutil.which("mkfs.erofs") is not None and "erofs" in Path("/proc/filesystems").read_text()


@contextmanager
def erofs_mount(tree_: Path, image: Path, mnt: Path) -> Iterator[Path]:
    """`tree_` built into the read-only image `image` (mkfs.erofs keeps every file's mtime) and
    mounted at `mnt`; unmounted whatever happens. Built reproducibly, under one UUID (else the
    origin's record, by the filesystem's id, refuses the image built again as another acquisition)."""
    uuid = "6a8c6b6e-1f3c-4d55-9a0b-0e5d2b1c7f10"
    subprocess.run(["mkfs.erofs", "-U", uuid, str(image), str(tree_)], check=True, capture_output=True)
    subprocess.run(["mount", "-t", "erofs", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.skipif(not has_erofs(), reason="needs mkfs.erofs and the erofs module")
def test_a_file_rewritten_in_an_erofs_image_built_again_is_not_verified_with_its_stale_copy(tmp_path: Path) -> None:
    tree_, mnt, dst = tmp_path / "tree", tmp_path / "mnt", tmp_path / "out"
    two_positions(tree_ / "acq")
    (tree_ / "acq" / "complete").touch()
    mnt.mkdir()
    src = mnt / "acq"
    with erofs_mount(tree_, tmp_path / "img", mnt):
        first = run(src, dst)
        assert first.returncode == 0, first.stderr
        before = identity(src / "p0" / "0")
    rewrite_keeping_times(tree_ / "acq" / "p0" / "0")
    with erofs_mount(tree_, tmp_path / "img2", mnt):
        after = identity(src / "p0" / "0")
        assert after == before, f"the premise: the image shows the same identity: {before}, {after}"
        again = resumed_run(src, dst)
        chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with a stale copy: {chunks}, {copies}"


def damage_in_place(copy: Path) -> None:
    """A byte of the copy changed in place, its size, mtime and attributes kept (a faulty disk or
    controller, a tool writing into the archive and restoring the time)."""
    st = copy.stat()
    with copy.open("r+b") as f:
        f.write(b"X")
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_copy_verify_checksum_found_different_is_not_verified_by_the_next_run(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq", tmp_path / "out"
    two_positions(src)
    (src / "complete").touch()
    first = run(src, dst)
    assert first.returncode == 0, first.stderr
    damage_in_place(dst / "p0" / "0")
    checked = subprocess.run(
        softcopy_cmd("verify", src, dst, "--checksum"), check=False, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode != 0 and "p0/0" in checked.stdout + checked.stderr, "verify finds the damage"
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with a copy found different: {chunks}, {copies}"


def test_a_destination_restored_from_a_backup_of_an_older_copy_marks_and_all_is_copied_again(
    tmp_path: Path,
) -> None:
    # `cp -a` keeps the copies' marks (extended attributes): the restored copies name the version
    # they were made from, no longer the source's, so their bytes are compared.
    src, dst, backup = tmp_path / "acq", tmp_path / "out", tmp_path / "backup"
    two_positions(src)
    (src / "complete").touch()
    first = run(src, dst)
    assert first.returncode == 0, first.stderr
    subprocess.run(["cp", "-a", str(dst), str(backup)], check=True)
    assert os.getxattr(backup / "p0" / "0", "user.softcopy.source"), "the premise: the backup keeps the mark"
    rewrite_keeping_times(src / "p0" / "0")
    second = run(src, dst)
    assert second.returncode == 0, second.stderr
    shutil.rmtree(dst)
    subprocess.run(["cp", "-a", str(backup), str(dst)], check=True)
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with the backup's stale copy: {chunks}, {copies}"
