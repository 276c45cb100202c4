"""Helpers shared by the benchmarks: archives written by real tensorstore, cache dropping, timing of
whole process trees (wall time, user+sys CPU of the children), byte-for-byte checks."""

from __future__ import annotations

import filecmp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def open_array(root: Path, chunks: int, chunk_bytes: int) -> Any:
    """A new tensorstore Zarr v2 array of `chunks` uncompressed uint16 chunks of `chunk_bytes` each
    (one chunk per index along the first axis, flat `.` keys)."""
    import tensorstore as ts

    x = chunk_bytes // 2 // 256
    return ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root)},
            "metadata": {"chunks": [1, 256, x], "compressor": None, "dimension_separator": "."},
        },
        create=True,
        dtype=ts.uint16,
        shape=[chunks, 256, x],
    ).result()


def write_archive(root: Path, chunks: int, chunk_bytes: int) -> None:
    """A finished archive, written by tensorstore 64 MiB at a time, with its `complete` marker."""
    import numpy as np

    arr = open_array(root, chunks, chunk_bytes)
    rng = np.random.default_rng(1)
    step = max(1, (64 << 20) // chunk_bytes)
    for t in range(0, chunks, step):
        n = min(step, chunks - t)
        arr[t : t + n].write(rng.integers(0, 65535, size=(n, *arr.shape[1:]), dtype=np.uint16)).result()
    (root / "complete").touch()


ORIGINAL_VENV = Path("/var/tmp/softcopy-0.0.13-venv")


def original_softcopy() -> Path | None:
    """The original pure-Python softcopy 0.0.13 from PyPI, in a virtual environment of its own
    (created on first use). None if it cannot be installed."""
    exe = ORIGINAL_VENV / "bin" / "softcopy"
    if not exe.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(ORIGINAL_VENV)], check=True)
            pip = [str(ORIGINAL_VENV / "bin" / "pip"), "install", "--quiet", "softcopy==0.0.13"]
            subprocess.run(pip, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
    return exe


def drop_caches() -> bool:
    """Empties the page cache (root only), so a cold run reads from the device."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def warm(root: Path) -> None:
    """Reads every file once, so a warm run finds the whole archive in the page cache."""
    for p in root.rglob("*"):
        if p.is_file():
            p.read_bytes()


def timed(cmd: list[str]) -> tuple[float, float]:
    """Runs `cmd`; returns (wall seconds, user+sys CPU seconds of the process tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def identical(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)

    def same(c: filecmp.dircmp[str]) -> bool:
        if c.left_only or c.right_only or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        return not mismatch and not errors and all(same(s) for s in c.subdirs.values())

    return same(cmp)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}"


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
