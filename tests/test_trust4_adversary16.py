"""A root deleted and made again, read as an adversary (docs/design.md, invariant 8 and "One
destination, one acquisition"): a root *deleted* is followed to the folder made next under its
name (a writer's `overwrite=True`); a root moved away is never followed. Each test drives the CLI
on real folders (tmpfs or ext4, wherever the basetemp is) and puts a foreign folder under the
root's name by an ordering of ordinary renames and deletions; the foreign folder's file must never
reach the destination, nor the acquisition's copies leave it, nor the run end verified. Each
finding was red (a strict xfail or a failure); two are fixed (a root moved away stays moved away;
a folder renamed under the name is never a re-take), one is a strict xfail still (a re-take's
creation read late)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Softcopy, finish, tree, wait_for


def chunks(root: Path, names: list[str], tag: bytes) -> None:
    """Chunk files `c/<name>` under `root`, each holding `tag` and its name."""
    (root / "c").mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / "c" / n).write_bytes(tag + n.encode())


def copied(dst: Path, n: int) -> Callable[[], bool]:
    return lambda: len(list(dst.glob("c/*"))) == n


def ends_unverified_without_the_foreign_file(p: Softcopy, dst: Path, kept: dict[str, bytes]) -> None:
    """The marker is in the folder now under the name: the run ends. Paused on a folder that is
    not the acquisition, it ends Incomplete, the copy as it was; following it, it copies it, prunes
    the acquisition's copies and ends verified."""
    code, out = finish(p)
    now = tree(dst)
    assert not any(b"foreign" in v for v in now.values()), f"the foreign folder was copied: {sorted(now)}\n{out}"
    assert {k: now.get(k) for k in kept} == kept, f"the acquisition's copies went: {sorted(now)}\n{out}"
    assert code != 0 and "verified complete" not in out, out


def test_a_root_moved_away_then_deleted_elsewhere_is_not_a_retake(
    tmp_path: Path, run_softcopy: Callable[..., Softcopy]
) -> None:
    # Found: the moved root's own watch reported its deletion, taken as a writer's overwrite=True;
    # the folder under the name was followed, the acquisition's copies pruned, the foreign folder's
    # copied and verified. A root moved away stays moved away (docs/design.md, invariant 8).
    acq, dst = tmp_path / "acq", tmp_path / "dst"
    src = acq / "run.zarr"
    chunks(src, ["0", "1", "2"], b"acquisition ")
    p = run_softcopy(src, dst)
    wait_for(copied(dst, 3), 20, "the copy")
    kept = tree(dst)
    # A person moves the acquisition aside and puts another folder under its name...
    src.rename(acq / "old.zarr")
    wait_for(lambda: "moved away" in p.output(), 20, "the move to be said")
    chunks(acq / "other.zarr", ["7"], b"foreign ")
    (acq / "other.zarr").rename(src)
    wait_for(lambda: "another folder now" in p.output(), 20, "the folder under the name to be refused")
    # ... then deletes the moved folder where it went (a copy of it made elsewhere, say).
    shutil.rmtree(acq / "old.zarr")
    (src / "complete").write_bytes(b"")
    ends_unverified_without_the_foreign_file(p, dst, kept)


@pytest.mark.xfail(
    strict=True,
    reason="events read late (the process stopped): the re-take is adopted by a look at its name when its "
    "creation is read, and the name leads by then to a folder moved in after the re-take was moved aside",
)
def test_a_retake_moved_away_before_its_events_are_read_is_not_followed(
    tmp_path: Path, run_softcopy: Callable[..., Softcopy]
) -> None:
    acq, dst = tmp_path / "acq", tmp_path / "dst"
    src = acq / "run.zarr"
    chunks(src, ["0", "1", "2"], b"take one ")
    p = run_softcopy(src, dst)
    wait_for(copied(dst, 3), 20, "the copy")
    chunks(acq / "other.zarr", ["7"], b"foreign ")
    # The process stopped (a loaded machine, a debugger): its events wait in the kernel's queue.
    os.kill(p.pid, signal.SIGSTOP)
    try:
        shutil.rmtree(src)  # the writer's overwrite=True ...
        chunks(src, ["5"], b"take two ")  # ... and its new take,
        src.rename(acq / "old.zarr")  # moved aside by a person,
        (acq / "other.zarr").rename(src)  # another folder moved in under the name.
    finally:
        os.kill(p.pid, signal.SIGCONT)
    (src / "complete").write_bytes(b"")
    # Take one's copies may go (its deletion is positive evidence); the foreign file must not come.
    ends_unverified_without_the_foreign_file(p, dst, {})


def test_a_folder_renamed_over_the_retake_is_not_followed(
    tmp_path: Path, run_softcopy: Callable[..., Softcopy]
) -> None:
    acq, dst = tmp_path / "acq", tmp_path / "dst"
    src = acq / "run.zarr"
    chunks(src, ["0", "1", "2"], b"take one ")
    p = run_softcopy(src, dst)
    wait_for(copied(dst, 3), 20, "the copy")
    shutil.rmtree(src)
    src.mkdir()  # the writer's new take, nothing in it yet
    wait_for(lambda: "back: copying on" in p.output(), 20, "the re-take to be followed")
    chunks(acq / "other.zarr", ["7"], b"foreign ")
    # rename(2) replaces an empty folder: the re-take is unlinked, not by the writer.
    (acq / "other.zarr").rename(src)
    (src / "complete").write_bytes(b"")
    ends_unverified_without_the_foreign_file(p, dst, {})
