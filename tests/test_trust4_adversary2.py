"""Trust, part four, read as an adversary (the standard of docs/design.md, "Invariants"): the removal of a copy of another
kind in the way of a name (`in_the_way.rs`), the look after events lost at the end
(`finish::still_as_verified`) and the origin record's let-go look. Each finding is reproduced
through the CLI, red before its fix."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_soak_service import assert_none_named_let_go, killed_while_copying, service_folders
from test_trust2 import run
from test_trust4_kinds import first_take, folder_becomes_file

ZARRAY = b'{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"|u1","compressor":null,"fill_value":0,'
ZARRAY += b'"order":"C","filters":null}'
"""An array of two one-byte chunks, `0` and `1`, fill value 0."""


@pytest.mark.parametrize("kept", ["lab.log", "README.txt"])
def test_a_file_that_is_no_copy_in_a_folder_in_the_way_is_not_removed(tmp_path: Path, kept: str) -> None:
    # The lab keeps its own file in the copy's folder `notes/` (`lab.log` is excluded from the
    # acquisition; `README.txt` the source never had). The source's `notes/` then becomes a file:
    # the copies of `notes/a` go, as mirrored deletions; the lab's file is no copy of anything the
    # source deleted, and a plain deletion of `notes/` (or the two-sided walk) keeps it.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    first_take(src, dst, {"meta.json": b"{}", "notes/a": b"a"})
    (dst / "notes" / kept).write_bytes(b"the lab's own file")
    folder_becomes_file(src, "notes")
    run(src, dst, "--once", "--exclude", "*.log")
    assert (dst / "notes" / kept).read_bytes() == b"the lab's own file"


def test_a_chunk_replaced_by_an_empty_folder_while_no_softcopy_ran_is_not_verified_over_its_old_copy(
    tmp_path: Path,
) -> None:
    # The source reads fill value at chunk 0 (no chunk file there); its old copy reads as data.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    first_take(src, dst, {".zarray": ZARRAY, "0": b"A", "1": b"B"})
    (src / "0").unlink()
    (src / "0").mkdir()
    r = run(src, dst, "--once")
    assert r.returncode != 0 or not (dst / "0").is_file(), r.stderr


@contextmanager
def disk_without_birth_times(image: Path, at: Path) -> Iterator[None]:
    """An ext2 filesystem with 128-byte inodes (no birth time, as on FAT, exFAT and many shares) in
    `image`, mounted at `at` through a loop device (detached at the end)."""
    if shutil.which("mkfs.ext2") is None:
        pytest.skip("no mkfs.ext2")
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext2", "-q", "-F", "-I", "128", str(image)], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True)
    try:
        subprocess.run(["mount", loop.stdout.strip(), str(at)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", str(at)], check=False)
    finally:
        subprocess.run(["losetup", "-d", loop.stdout.strip()], check=False)


def test_a_copy_whose_disk_without_birth_times_was_swapped_while_no_service_ran_is_not_named_let_go(
    tmp_path: Path,
) -> None:
    acq, dst, reports, args = service_folders(tmp_path)
    with disk_without_birth_times(tmp_path / "first.img", acq):
        first_disk = acq.stat().st_dev
        killed_while_copying(tmp_path, args, acq / "x.zarr", dst / "x.zarr")
    # The disk, x.zarr on it, is taken away (to be copied tomorrow); another disk is mounted.
    with disk_without_birth_times(tmp_path / "second.img", acq):
        if acq.stat().st_dev != first_disk:  # the finding needs the number the kernel gives back
            pytest.skip("the new disk got another device number (a loop device taken meanwhile)")
        assert_none_named_let_go(tmp_path, args, reports, dst / "x.zarr")


def test_a_source_folder_named_as_the_move_journal_never_removes_the_journal(tmp_path: Path) -> None:
    # The journal is what keeps the only copies of freed chunks from being pruned as stale. Removed
    # (a folder `.softcopy-moved/` copied in its place), then that folder gone (its source deleted
    # while watched: an empty folder is left; a person removes it), the next run prunes the copies
    # of chunks 0 and 1, 'verified complete', both ends without them.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    for rel, data in {".zarray": ZARRAY, "0": b"A", "1": b"B", "run.log": b"log", "complete": b""}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    freed = run(src, dst, "--once", "--delete-source", "--exclude", "*.log")
    assert freed.returncode == 0 and not (src / "0").exists(), freed.stderr
    journal = (dst / ".softcopy-moved").read_bytes()
    (src / ".softcopy-moved").mkdir()
    (src / ".softcopy-moved" / "x").write_bytes(b"a folder of that name")
    r = run(src, dst, "--once", "--exclude", "*.log")
    assert (dst / ".softcopy-moved").is_file() and (dst / ".softcopy-moved").read_bytes() == journal
    # Names under `.softcopy*` at the root are softcopy's own (vocab::is_ignored): never copied.
    assert r.returncode in (0, 1) and not (dst / ".softcopy-moved").is_dir(), r.stderr
    assert (dst / "0").read_bytes() == b"A" and (dst / "1").read_bytes() == b"B"
