"""Faults injected for real: a full destination (tmpfs with a size limit), ... . Each ends with the
destination verified, or with exit 1 and the missing files listed; never with lost data."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_same_tree, finish, wait_for

MIB = 1 << 20


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards whatever happens."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def ten_mib_source(root: Path) -> None:
    (root / "c").mkdir(parents=True)
    for i in range(10):
        (root / "c" / str(i)).write_bytes(bytes([i]) * MIB)
    (root / "zarr.json").write_text('{"node_type": "group"}')


def test_full_destination_waits_then_carries_on_by_itself(tmp_path: Path, small_tmpfs: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "src", small_tmpfs / "out"
    ten_mib_source(src)
    proc = run_softcopy(src, dst, "--once", "--nprocs", "2")
    wait_for(lambda: "cannot take files" in proc.output(), 20, "the full-disk message")
    out = proc.output()
    assert str(dst) in out and "free of 4.0 MiB" in out, out
    assert proc.poll() is None, "a full disk is waited out, not an error"
    # Nothing under a final name is partial: every file that arrived is whole.
    for f in dst.rglob("*"):
        if f.is_file() and not f.name.endswith(".softcopy-partial"):
            assert f.read_bytes() == (src / f.relative_to(dst)).read_bytes()
    # Three seconds of retrying make no flood of messages (one per 30 s).
    wait_for(lambda: proc.output().count("cannot take files") == 1 and proc.poll() is None, 3)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    code, out = finish(proc, 60)
    assert code == 0, out
    assert "is back" in out
    assert_same_tree(src, dst)


def test_full_destination_gives_up_when_told_to(tmp_path: Path, small_tmpfs: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "src", small_tmpfs / "out"
    ten_mib_source(src)
    code, out = finish(run_softcopy(src, dst, "--once", "--give-up-after", "2"), 60)
    assert code == 1, out
    assert "INCOMPLETE" in out and "missing: c/" in out and "gave up" in out
    for f in dst.rglob("*"):
        if f.is_file():
            assert not f.name.endswith(".softcopy-partial"), "no partial left behind"
            assert f.read_bytes() == (src / f.relative_to(dst)).read_bytes()
