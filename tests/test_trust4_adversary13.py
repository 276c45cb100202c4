"""The rescan that finds a folder's record of settled files failed, read as an adversary
(docs/design.md, "Memory"; "A version is decided on evidence"): each test drives a real engine on
a real filesystem with events lost. Two folders swapped kept each other's copies (a look at a
copy's size, mtime and ctime cannot see a folder's move above the file): red before the look
checked the folders on the file's path, green since."""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from pathlib import Path

import pytest
import softcopy
from conftest import sysctl, tree, wait_for
from test_trust2 import run

RENAME_EXCHANGE = 2
"""renameat2's flag (linux/fs.h): the two names swap their entries in one step."""
AT_FDCWD = -100


def swap(a: Path, b: Path, how: str) -> None:
    """Swaps the folders `a` and `b` in one step (`exchange`), or as `mv` does it in three, a file
    written first so that the queue is full before the first of them."""
    if how == "exchange":
        exchange(a, b)
        return
    (a.parent / "note").write_bytes(b"written before the swap")
    os.rename(a, a.with_name("aside"))
    os.rename(b, a)
    os.rename(a.with_name("aside"), b)


def exchange(a: Path, b: Path) -> None:
    """Swaps the folders `a` and `b` at once, as `mv --exchange` does: neither name is ever
    missing, and the files inside keep every timestamp (a folder's rename changes no ctime below
    it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


def two_positions(src: Path) -> None:
    """Two positions' chunks in folders `p0` and `p1` of `src`: one size and one mtime, different bytes."""
    for folder, data in (("p0", b"position 0's chunk"), ("p1", b"position 1's chunk")):
        (src / folder).mkdir(parents=True)
        (src / folder / "0").write_bytes(data)
    stamp = (src / "p0" / "0").stat().st_mtime_ns
    os.utime(src / "p1" / "0", ns=(stamp, stamp))


def swapped_settled_folders(
    tmp_path: Path, how: str, queue: int | None
) -> tuple[bool, dict[str, bytes], dict[str, bytes]]:
    """Two folders' files copied and settled into their folders' records, then the folders swapped
    (`swap`, with `queue` events at most in the engine's inotify queue, if given), then the marker written:
    (whether the run was verified, the source's files, the copies)."""
    # Two positions' chunks of one size and one mtime (a writer within one clock tick, or files
    # restored with their times: `tar x`, `rsync -t`); different bytes.
    src, dst = tmp_path / "acq", tmp_path / "out"
    two_positions(src)
    # The copies are made more than a tick and the clocks' margin (2 s) after the sources' last
    # change, so that a look takes size and mtime as proof (not a synchronisation: the clock must
    # have moved on).
    changed = max((src / f / "0").stat().st_ctime_ns for f in ("p0", "p1"))
    wait_for(lambda: time.time_ns() > changed + 2_500_000_000, 5, "the clock to pass the margin")
    c = softcopy.Copier([softcopy.Target(src, dst, settle_time=0.01, evict_after=0.05)])
    with sysctl("fs.inotify.max_queued_events", queue) if queue else contextlib.nullcontext():
        c.start()  # the queue's size is read when the engine makes its inotify instance
        wait_for(lambda: c.poll() is not None or c.status()[0].phase == "copying", 20, "the engine")
    try:
        wait_for(lambda: c.status()[0].settled >= 2, 20, "both copies to settle into their folders' records")
        swap(src / "p0", src / "p1", how)
        # Each file is copied again or its copy taken for it (after the two first copies).
        wait_for(lambda: looks(c.status()[0]) >= 4, 20, "the swapped files' looks")
        (src / "complete").touch()
        report = c.wait(30)
    finally:
        c.stop()
        c.wait(10)
    assert report is not None, "the run ends"
    return report.ok, tree(src, skip_marker=True), tree(dst, skip_marker=True)


def looks(p: softcopy.Progress) -> int:
    return p.files_copied + p.files_unchanged


@pytest.mark.parametrize("how", ["exchange", "mv"])
def test_two_folders_swapped_while_events_are_heard_are_copied_again(tmp_path: Path, how: str) -> None:
    # The events name both folders new: their files are copied, not looked up.
    verified, chunks, copies = swapped_settled_folders(tmp_path, how, None)
    assert verified and copies == chunks, (chunks, copies)


@pytest.mark.kernel_wide
def test_two_folders_swapped_while_events_were_lost_are_not_verified_with_each_others_copies(
    tmp_path: Path,
) -> None:
    # The queue of one event overflows at the swap: the rescan finds the folders' records failed
    # and lists them again, as a resumed run's would be. In one step, so that no event of it is
    # heard (`mv`'s three steps give the engine time to hear the first, then it copies that folder
    # as new, some of the time).
    verified, chunks, copies = swapped_settled_folders(tmp_path, "exchange", 1)
    assert copies == chunks or not verified, f"verified with each other's copies: {chunks} at the source, {copies}"


def test_two_folders_swapped_between_runs_are_not_verified_with_each_others_copies(tmp_path: Path) -> None:
    # The same look as a relisted file's, where no run watched the swap.
    src, dst = tmp_path / "acq", tmp_path / "out"
    two_positions(src)
    (src / "complete").touch()
    changed = max((src / f / "0").stat().st_ctime_ns for f in ("p0", "p1"))
    wait_for(lambda: time.time_ns() > changed + 2_500_000_000, 5, "the clock to pass the margin")
    first = run(src, dst)
    assert first.returncode == 0, first.stderr
    exchange(src / "p0", src / "p1")
    again = run(src, dst)
    chunks, copies = tree(src, skip_marker=True), tree(dst, skip_marker=True)
    assert copies == chunks or again.returncode != 0, f"verified with each other's copies: {chunks}, {copies}"
