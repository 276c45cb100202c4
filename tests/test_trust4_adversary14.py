"""A resumed run's shortcut past the bytes, read as an adversary (docs/design.md, "A version is
decided on evidence"): each test drives the CLI on a real filesystem over resumed runs. The copy's
ctime, taken for when the copy was made, is made later by a chmod, a chown or a hard link at the
destination (a snapshot by `cp -al`, rsnapshot) without changing the bytes: red while the shortcut
rested on it, green since it rests on the copy's mark of its source's inode and ctime. A folder's
parent's mtime, which the older rule read first, is set back by a tool restoring folders' times
(`rsync -a`): red until that rule read the parent's ctime, and green with the mark."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Softcopy, start_writer, tree, wait_for
from test_trust2 import run
from test_trust4_adversary13 import exchange, two_positions

MARGIN_NS = 2_500_000_000
"""More than a tick and the clocks' margin (2 s): a copy whose ctime is this far after a change
is taken as made after it."""


def past_the_margin(*changed: Path) -> None:
    """Waits until the clock is past the margin after the last change of `changed` (not a
    synchronisation: the clock must have moved on for a ctime to count as after them)."""
    last = max(p.stat().st_ctime_ns for p in changed)
    wait_for(lambda: time.time_ns() > last + MARGIN_NS, 5, "the clock to pass the margin")


def first_run(src: Path, dst: Path) -> None:
    """Two positions' chunks (one size and one mtime, different bytes) copied and verified."""
    two_positions(src)
    (src / "complete").touch()
    past_the_margin(src / "p0" / "0", src / "p1" / "0")
    first = run(src, dst)
    assert first.returncode == 0, first.stderr


def test_the_root_swapped_with_another_acquisition_between_runs_is_refused(tmp_path: Path) -> None:
    # The path's rule stops below the root: a root renamed changes no ctime below it either. The
    # origin's record (the root's identity, which survives renames) refuses the other folder.
    src, other, dst = tmp_path / "acq", tmp_path / "acq2", tmp_path / "out"
    first_run(src, dst)
    two_positions(other)
    (other / "complete").touch()
    for f in ("p0", "p1"):  # the other's chunks: the same names, sizes and mtimes, other bytes
        stamp = (src / f / "0").stat().st_mtime_ns
        (other / f / "0").write_bytes((src / f / "0").read_bytes()[::-1])
        os.utime(other / f / "0", ns=(stamp, stamp))
    past_the_margin(other / "p0" / "0", other / "p1" / "0")
    exchange(src, other)
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with the other's copies: {chunks}, {copies}"


def touch_metadata(dst: Path, how: str) -> None:
    """Changes no byte of the copies, only their metadata (so their ctimes): a hard-linked
    snapshot of the destination as `cp -al` or rsnapshot makes, or the archive opened to its group."""
    if how == "snapshot":
        subprocess.run(["cp", "-al", str(dst), str(dst.with_name("snapshot"))], check=True)
    else:
        subprocess.run(["chmod", "-R", "g+w", str(dst)], check=True)


@pytest.mark.parametrize("how", ["snapshot", "chmod"])
def test_folders_swapped_then_the_destination_snapshotted_are_not_verified_with_each_others_copies(
    tmp_path: Path, how: str
) -> None:
    src, dst = tmp_path / "acq", tmp_path / "out"
    first_run(src, dst)
    exchange(src / "p0", src / "p1")
    past_the_margin(src / "p0", src)
    touch_metadata(dst, how)
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with each other's copies: {chunks}, {copies}"


@pytest.mark.parametrize("how", ["snapshot", "chmod"])
def test_a_file_rewritten_with_its_times_then_the_destination_snapshotted_is_copied_again(
    tmp_path: Path, how: str
) -> None:
    src, dst = tmp_path / "acq", tmp_path / "out"
    first_run(src, dst)
    # A corrected chunk of the same size put in place with its times kept, as `cp -p` does.
    fixed = tmp_path / "fixed"
    fixed.write_bytes(b"position 0's fixed")
    assert fixed.stat().st_size == (src / "p0" / "0").stat().st_size
    stamp = (src / "p0" / "0").stat().st_mtime_ns
    os.utime(fixed, ns=(stamp, stamp))
    subprocess.run(["cp", "-p", str(fixed), str(src / "p0" / "0")], check=True)
    past_the_margin(src / "p0" / "0")
    touch_metadata(dst, how)
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with a stale copy: {chunks}, {copies}"


def test_folders_swapped_then_their_times_restored_by_rsync_are_not_verified_with_each_others_copies(
    tmp_path: Path,
) -> None:
    src, dst, ref = tmp_path / "acq", tmp_path / "out", tmp_path / "ref"
    first_run(src, dst)
    subprocess.run(["cp", "-a", str(src), str(ref)], check=True)  # a copy kept aside, times and all
    exchange(src / "p0", src / "p1")
    # Files missing at the source brought back from the copy: rsync's quick check (size and mtime)
    # leaves the swapped files alone, and it sets every folder's times to the copy's, the root's
    # mtime before the copy again (red while the path's rule read the parents' mtimes; their
    # ctimes cannot be set back).
    subprocess.run(["rsync", "-a", f"{ref}/", f"{src}/"], check=True)
    assert (src / "p0" / "0").read_bytes() == b"position 1's chunk", "rsync left the swapped files as they were"
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with each other's copies: {chunks}, {copies}"


def test_a_resumed_run_reads_none_of_a_growing_v3_arrays_earlier_copies(
    tmp_path: Path, run_softcopy: Callable[..., Softcopy]
) -> None:
    # What the folder rule cost: tensorstore growing a Zarr v3 array renames a new `zarr.json`
    # beside `c` at each resize while `c` gains a timepoint's folder, so no folder on a chunk's
    # path looked unmoved since its copy and a resumed run compared every earlier chunk byte for
    # byte (36 of 36). The mark needs no folder's times. A copy read changes its atime on a tmpfs
    # mounted `strictatime` (the marks and metadata looked at do not).
    src, mnt, hold = tmp_path / "acq.zarr", tmp_path / "mnt", tmp_path / "hold"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,strictatime", "tmpfs", str(mnt)], check=True)
    writer = start_writer(src, "zarr3", 6, 0.3, "--grow", "--hold", str(hold))
    try:
        dst = mnt / "out.zarr"
        first = run_softcopy(src, dst)
        wait_for(lambda: any(p.is_file() for p in (dst / "c" / "2").rglob("*")), 60, "timepoint 2's first copies")
        first.kill()
        first.wait()
        copies = [p for p in (dst / "c").rglob("*") if p.is_file() and not p.name.startswith(".")]
        earlier = {p: (was.st_ino, was.st_atime_ns) for p in copies if (was := p.stat())}
        wait_for(lambda: (src / "c" / "5").is_dir(), 60, "the array to grow to six timepoints")
        hold.touch()
        assert writer.wait(timeout=60) == 0
        again = run(src, dst)
        assert again.returncode == 0, again.stderr
        # Looked at before the trees are compared here (which reads every copy).
        read = [
            p
            for p, (ino, atime) in earlier.items()
            if (st := stat_or_none(p)) and st.st_ino == ino and st.st_atime_ns != atime
        ]
        assert earlier and not read, f"{len(read)} of {len(earlier)} earlier copies read again: {read}"
        assert tree(dst, skip_marker=True) == tree(src, skip_marker=True)
    finally:
        writer.kill()
        writer.wait()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def stat_or_none(path: Path) -> os.stat_result | None:
    """The file's status, or None where it is gone (a chunk the writer set back to fill value)."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
