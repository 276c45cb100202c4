"""Helpers shared by the benchmarks: archives written by real tensorstore, cache dropping, timing of
whole process trees (wall time, user+sys CPU of the children), byte-for-byte checks."""

from __future__ import annotations

import filecmp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def open_array(root: Path, chunks: int, chunk_bytes: int, locking: str = "os") -> Any:
    """A new tensorstore Zarr v2 array of `chunks` uncompressed uint16 chunks of `chunk_bytes` each
    (one chunk per index along the first axis, flat `.` keys). `locking` is tensorstore's
    file_io_locking mode (`lockfile` writes the `.__lock` files the original softcopy follows)."""
    import tensorstore as ts

    x = chunk_bytes // 2 // 256
    return ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root)},
            "metadata": {"chunks": [1, 256, x], "compressor": None, "dimension_separator": "."},
            "context": {"file_io_locking": {"mode": locking}},
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


def write_nested(root: Path, chunks: int, chunk_bytes: int, per_folder: int = 8) -> None:
    """A finished tensorstore Zarr v2 archive with `/` keys, `per_folder` chunks in each folder
    (`t/0/k`): a folder per timepoint row, as a Zarr v3 tree has a folder per (t, z, y)."""
    import numpy as np
    import tensorstore as ts

    x = chunk_bytes // 2 // 256
    rows = max(1, chunks // per_folder)
    arr = ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root)},
            "metadata": {"chunks": [1, 256, x], "compressor": None, "dimension_separator": "/"},
        },
        create=True,
        dtype=ts.uint16,
        shape=[rows, 256, x * per_folder],
    ).result()
    data = np.random.default_rng(1).integers(0, 65535, size=arr.shape, dtype=np.uint16)
    arr.write(data).result()
    (root / "complete").touch()


def write_planes(root: Path, chunks: int, chunk_bytes: int, planes: int = 100) -> None:
    """A finished tensorstore Zarr v3 archive of 2-D plane chunks (`c/t/z/0/0`, the common
    light-sheet layout): a folder per chunk, and two new folders per file (`z` and `z/0`), `planes`
    planes per timepoint."""
    import numpy as np
    import tensorstore as ts

    x = chunk_bytes // 2 // 64
    z = max(1, min(planes, chunks))
    t = max(1, chunks // z)
    arr = ts.open(
        {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": str(root)},
            "metadata": {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1, 64, x]}}},
        },
        create=True,
        dtype=ts.uint16,
        shape=[t, z, 64, x],
    ).result()
    data = np.random.default_rng(1).integers(0, 65535, size=arr.shape, dtype=np.uint16)
    arr.write(data).result()
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


@dataclass
class Measured:
    wall: float
    """Seconds."""
    cpu: float
    """User + system seconds of the whole process tree."""
    rss_mib: float
    """Peak resident set of the largest process in the tree."""


GNU_TIME = Path("/usr/bin/time")


class Running:
    """A command started under GNU time (when installed), measured when it ends."""

    def __init__(self, cmd: list[str], **popen: Any) -> None:
        self.rss_file = Path(f"/tmp/softcopy-bench-rss-{os.getpid()}-{id(self)}")
        self.wrap = [str(GNU_TIME), "-q", "-f", "%M", "-o", str(self.rss_file)] if GNU_TIME.exists() else []
        self.cmd = cmd
        self.t0 = time.perf_counter()
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        self.proc = subprocess.Popen(self.wrap + cmd, **popen)

    def wait(self) -> Measured:
        """Waits for the end (the command must succeed). wait4 on the child returns its own usage
        plus that of every descendant it waited for, so CPU covers the whole tree. Peak RSS comes
        from GNU time (Debian package `time`; 0 without it): a child forked from this Python
        process starts with its peak RSS (tensorstore and numpy loaded), and exec keeps that mark."""
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.t0
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0:
            raise SystemExit(f"{self.cmd[0]} exited with {self.proc.returncode}: {' '.join(self.cmd)}")
        rss_kib = int(self.rss_file.read_text().split()[-1]) if self.wrap else 0
        self.rss_file.unlink(missing_ok=True)
        return Measured(wall, usage.ru_utime + usage.ru_stime, rss_kib / 1024)


def timed(cmd: list[str]) -> Measured:
    """Runs `cmd` to its end (it must succeed) and measures it (see `Running.wait`)."""
    return Running(cmd).wait()


class Destination:
    """Where each run copies to. As root: a fresh ext4 filesystem per run (`LoopFs`). Deleting the
    previous run's copy instead would bias every contender that follows: ext4 skips recently
    deleted inodes when it allocates new ones (`recently_deleted()`), which on 50 000 files made a
    `cp -r` 8x slower than on a fresh filesystem. Without root: a folder."""

    def __init__(self, workdir: Path, size_gib: int) -> None:
        self.workdir, self.size_gib = workdir, size_gib
        self.mount = workdir / "dst-mnt"
        self.loop = os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None
        self.fs: LoopFs | None = None

    def fresh(self) -> Path:
        """An empty destination folder (the copy goes to `<it>/dst.zarr`)."""
        self.release()
        if self.loop:
            self.fs = LoopFs(self.workdir / "dst.img", self.mount, self.size_gib)
        else:
            self.mount.mkdir(parents=True, exist_ok=True)
        return self.mount

    def release(self) -> None:
        if self.fs:
            self.fs.close()
            self.fs = None
        rmtree(self.mount)


class LoopFs:
    """A fresh ext4 filesystem on a loop device backed by a sparse file (root only), optionally with
    direct IO to its backing file (so its reads and writes reach the disk, not the host page cache)
    and a chosen IO scheduler (`bfq` honours IO classes)."""

    def __init__(
        self,
        image: Path,
        mount: Path,
        size_gib: int,
        direct: bool = False,
        scheduler: str = "",
        mkfs: tuple[str, ...] = ("-i", "4096"),
        fresh: bool = True,
    ) -> None:
        """`fresh`: a new filesystem; otherwise the one already in `image` is mounted (a kept tree)."""
        self.image, self.mount = image, mount
        if fresh:
            with image.open("wb") as f:
                f.truncate(size_gib << 30)
            # One inode per 4 KiB by default: a million small files fit (ext4's default is one per 16 KiB).
            subprocess.run(["mkfs.ext4", "-q", "-F", *mkfs, str(image)], check=True)
        args = ["losetup", "--find", "--show"] + (["--direct-io=on"] if direct else []) + [str(image)]
        self.device = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
        self.name = Path(self.device).name
        if scheduler:
            # A kernel built without it (this VM's kernel lost bfq once) keeps its default, and
            # says so: the figures are then not the chosen scheduler's.
            knob = Path(f"/sys/block/{self.name}/queue/scheduler")
            offered = knob.read_text().replace("[", "").replace("]", "").split()
            if scheduler in offered:
                knob.write_text(scheduler)
            else:
                print(f"scheduler {scheduler} is not offered by this kernel ({' '.join(offered)}): kept its default")
        mount.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", self.device, str(mount)], check=True)

    def bytes_read(self) -> int:
        """Bytes read from the device since it was set up (/sys/block/X/stat: sectors of 512 B)."""
        return int(Path(f"/sys/block/{self.name}/stat").read_text().split()[2]) * 512

    def close(self, keep: bool = False) -> None:
        """Unmounts it; the image goes too unless `keep`."""
        subprocess.run(["umount", str(self.mount)], check=False)
        subprocess.run(["losetup", "-d", self.device], check=False)
        if not keep:
            self.image.unlink(missing_ok=True)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def contenders(src: Path, dst: Path, original: Path | None) -> dict[str, list[str]]:
    """Every copier to compare, as commands copying `src` to `dst` (which does not exist yet).
    rclone and fpsync only where installed (Debian: `apt install rclone fpart`)."""
    out = {
        "softcopy": [sys.executable, "-m", "softcopy", str(src), str(dst), "--quiet"],
        "cp -r": ["cp", "-r", str(src), str(dst)],
    }
    if shutil.which("rsync"):
        out["rsync -a"] = ["rsync", "-a", f"{src}/", f"{dst}/"]
    if shutil.which("rclone"):
        out["rclone copy"] = ["rclone", "copy", "--transfers", "8", "--links", str(src), str(dst)]
    if shutil.which("fpsync"):
        # fpsync refuses a missing destination folder; its work files go to its own temp folder.
        out["fpsync"] = ["sh", "-c", f"mkdir -p {dst} && fpsync -n 8 -t {dst.parent}/.fpsync {src}/ {dst}/"]
    if original:
        # Its own recommended fast settings; its default --sleep-time would add seconds per file.
        out["softcopy 0.0.13"] = [str(original), str(src), str(dst), "--nprocs", "8", "--sleep-time", "0"]
    return out


def differences(a: Path, b: Path) -> list[str]:
    """How the tree `b` differs from `a` (names only-in-one, differing contents); empty if identical."""
    out: list[str] = []

    def walk(c: filecmp.dircmp[str], rel: str) -> None:
        out.extend(f"only in source: {rel}{n}" for n in c.left_only)
        # softcopy's own record at the copy's root (which source it is a copy of) is not data.
        out.extend(f"only in copy: {rel}{n}" for n in c.right_only if rel or not n.startswith(".softcopy"))
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        out.extend(f"differs: {rel}{n}" for n in mismatch + errors)
        for name, sub in c.subdirs.items():
            walk(sub, f"{rel}{name}/")

    walk(filecmp.dircmp(a, b), "")
    return out


def identical(a: Path, b: Path) -> bool:
    return not differences(a, b)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}"


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
