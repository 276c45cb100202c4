"""The filesystem's own identifier (statvfs's `f_fsid`) in a folder's identity, read as an
adversary: each test reproduces a finding through the CLI or the service. docs/design.md, "One
destination, one acquisition", says what should hold."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import tree, write_finished_archive
from softcopy._softcopy import folder_identity
from test_soak_service import assert_none_named_let_go, killed_while_copying, service_folders
from test_trust2 import run
from test_trust4_adversary import attached, mounted

# ext4 derives f_fsid from the filesystem's UUID, and a clone of a disk (dd, an image copied, an
# LVM snapshot) keeps the UUID, its folders' inode numbers and their birth times: the identifier
# names the filesystem as it was made, not the disk. A folder is the same only where the device
# number and the identifier both agree (FolderId::same_filesystem): a clone, mounted beside the disk
# or in its place, is never taken for it (nor, then, is the disk renumbered by a reboot).


def ext4_image(path: Path) -> None:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4")
    subprocess.run(["truncate", "-s", "32M", str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True)


@contextmanager
def a_disk_and_its_clone(base: Path, folder: str) -> Iterator[tuple[Path, Path]]:
    """A disk whose `folder` was laid out before it was cloned (an image copied onto a second
    disk), both mounted at once: yields the folder on each, one folder in all but the device."""
    image, clone, first, second = base / "disk.img", base / "clone.img", base / "disk1", base / "disk2"
    ext4_image(image)
    for d in (first, second):
        d.mkdir()
    with mounted(image, first):
        (first / folder).mkdir()
    shutil.copyfile(image, clone)
    with mounted(image, first) as a, mounted(clone, second) as b:
        assert a != b
        ia, ib = folder_identity(first / folder), folder_identity(second / folder)
        assert ia[0] != ib[0] and ia[1:] == ib[1:], (ia, ib)
        yield first / folder, second / folder


def test_an_acquisition_on_a_clone_of_the_disk_never_prunes_the_only_copy_of_the_originals(tmp_path: Path) -> None:
    # Two acquisition disks made from one image with the acquisition folder laid out; each records
    # its own acquisition into it (one array, as every OME-Zarr level 0 is named). The first is
    # copied, verified, and wiped for its next acquisition: the copy is the only one. Red when f_fsid
    # alone stood for the device: the second disk's run was taken for the first's, its metadata
    # replaced the first's, and the first's chunks of timepoints 1 and 2, absent from it, were
    # pruned ("removed 8 chunk files the source no longer has").
    dst = tmp_path / "cluster" / "acq"
    dst.parent.mkdir()
    with a_disk_and_its_clone(tmp_path, "acq") as (first, second):
        write_finished_archive(first, "zarr3", timepoints=3)
        write_finished_archive(second, "zarr3", timepoints=1)
        assert run(first, dst).returncode == 0
        only_copy = tree(dst)
        for f in list(first.iterdir()):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        r = run(second, dst)
        assert r.returncode != 0 and "another acquisition" in r.stderr, r.stdout + r.stderr
        assert tree(dst) == only_copy


def test_a_copy_whose_disk_was_swapped_for_its_clone_while_no_service_ran_is_not_named_let_go(tmp_path: Path) -> None:
    # The acquisitions disk (its root is the acquisitions folder) and a clone made of it before
    # x.zarr was recorded. The service, killed while copying x.zarr, starts again with the clone
    # mounted in the disk's place (under another device number; the disk is on a shelf, x.zarr to
    # be copied tomorrow): x.zarr is not let go. Before f_fsid stood for the device: not named.
    # Now: named let go (a report, and the note at its copy), the disk being away.
    acq, dst, reports, args = service_folders(tmp_path)
    image, clone, spare = tmp_path / "disk.img", tmp_path / "clone.img", tmp_path / "spare.img"
    ext4_image(image)
    shutil.copyfile(image, clone)
    subprocess.run(["truncate", "-s", "32M", str(spare)], check=True)
    with mounted(image, acq) as first:
        disk = folder_identity(acq)
        killed_while_copying(tmp_path, args, acq / "x.zarr", dst / "x.zarr")
    # The spare takes the loop device the disk had: the clone is mounted under another number.
    with attached(spare), mounted(clone, acq) as second:
        assert second != first and folder_identity(acq)[1:] == disk[1:]
        assert_none_named_let_go(tmp_path, args, reports, dst / "x.zarr")
