"""The shortcut of a copy's ctime with the folders on the file's path unmoved since the copy, read
as an adversary (docs/design.md, "A version is decided on evidence"): each test drives the CLI on a
real filesystem over resumed runs, and is red (a strict xfail with its reason) where a finding has
no fix yet. The copy's ctime is taken for when the copy was made; a chmod, a chown or a hard link
at the destination (a snapshot by `cp -al`, rsnapshot) makes it later without changing the bytes.
A folder's parent's mtime, which the rule read first, is set back by a tool restoring folders'
times (`rsync -a`): red until the rule read the parent's ctime, green since."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import tree, wait_for
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
@pytest.mark.xfail(
    strict=True,
    reason="the copy's ctime is taken for when it was made, but a hard link (a snapshot by cp -al) "
    "or a chmod renews it: folders swapped before the snapshot look unmoved since the copy, and keep each "
    "other's copies, verified",
)
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
@pytest.mark.xfail(
    strict=True,
    reason="the copy's ctime is taken for when it was made, but a hard link (a snapshot by cp -al) "
    "or a chmod renews it: a file rewritten with its size and mtime kept (cp -p, rsync -t of a corrected file) "
    "before the snapshot keeps its stale copy, verified",
)
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
