"""A live acquisition: tensorstore writes a Zarr v2 archive (flat `.` keys, 1 MiB chunks, its
`lockfile` locking mode, which the original softcopy follows) at a set rate while a copier runs
from the start. Source and destination are fresh ext4 filesystems on loop devices (as root), so the
bytes the copier read from the source *device* are counted exactly (/sys/block/loopN/stat): data
copied while still in the page cache costs no device read.

One inotify reader watches both trees: a chunk completes at the source when tensorstore renames it
into place, and arrives when its last event at the destination (link, rename or close) is seen.
Per run: lag p50/p99/max, drain (last arrival and the copier's exit after the `complete` marker),
CPU (user+sys of the process tree), peak RSS, bytes read from the source device / bytes copied.
Every copy is checked byte for byte.

    python benches/live.py [--timepoints 1000] [--chunk-kib 1024] [--rate-mib 100] [--runs 3]
    python benches/live.py --rate-mib 0          # the writer flat out
    python benches/live.py --rate-mib 200 --no-back-off-too --no-original   # the back-off on and off
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import LoopFs, Measured, Running, differences, machine, open_array, original_softcopy, percentile, rmtree
from _inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO, Inotify


@dataclass
class Result:
    lags_ms: list[float]
    arrived_after_marker_s: float
    exited_after_marker_s: float
    measured: Measured
    device_read: int
    copied: int
    writer_mib_s: float


def write(arr: Any, timepoints: int, chunk_bytes: int, rate: float) -> None:
    import numpy as np

    data = np.random.default_rng(2).integers(0, 65535, size=arr.shape[1:], dtype=np.uint16)
    t0 = time.monotonic()
    for t in range(timepoints):
        arr[t].write(data).result()
        if rate > 0:
            # Pace to the target rate without drifting: sleep until this chunk's slot.
            delay = t0 + (t + 1) * chunk_bytes / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def one_run(
    base: Path, cmd_for: Callable[[Path, Path], list[str]], timepoints: int, chunk_bytes: int, rate: float
) -> Result:
    rmtree(base)
    base.mkdir(parents=True)
    size_gib = (2 * timepoints * chunk_bytes >> 30) + 2
    loop = os.geteuid() == 0
    src_fs = LoopFs(base / "src.img", base / "src-mnt", size_gib) if loop else None
    dst_fs = LoopFs(base / "dst.img", base / "dst-mnt", size_gib) if loop else None
    try:
        src = (src_fs.mount if src_fs else base) / "src.zarr"
        dst = (dst_fs.mount if dst_fs else base) / "dst.zarr"
        # The metadata first: the original softcopy reads it when it starts.
        arr = open_array(src, timepoints, chunk_bytes, locking="lockfile")
        dst.mkdir()
        ino = Inotify()
        ino.watch(str(src), IN_MOVED_TO)
        ino.watch(str(dst), IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE)
        done_at: dict[str, float] = {}
        arrived_at: dict[str, float] = {}
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for when, d, name, _mask in ino.read():
                    if name.startswith(".") or name == "complete":
                        continue
                    if d == str(src):
                        done_at.setdefault(name, when)
                    else:
                        arrived_at[name] = when  # the last event: the copy is whole by then

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        read_before = src_fs.bytes_read() if src_fs else 0
        copier = Running(cmd_for(src, dst))
        t0 = time.monotonic()
        write(arr, timepoints, chunk_bytes, rate)
        writer_mib_s = timepoints * chunk_bytes / 2**20 / (time.monotonic() - t0)
        (src / "complete").touch()
        marker_at = time.monotonic()
        measured = copier.wait()
        exited = time.monotonic()
        device_read = (src_fs.bytes_read() if src_fs else 0) - read_before
        stop.set()
        (dst / ".wake").touch()  # one more event, so the reader thread returns from read()
        reader.join(5)
        (dst / ".wake").unlink()
        ino.close()
        # The original softcopy does not always copy the `complete` marker itself: not data.
        diff = [d for d in differences(src, dst) if d != "only in source: complete"]
        if diff:
            raise SystemExit(f"the copy differs from the source: {'; '.join(diff[:5])}")
        missing = sorted(set(done_at) - set(arrived_at))
        if missing:
            raise SystemExit(f"never seen arriving: {missing[:5]}")
        lags = sorted((arrived_at[n] - t) * 1000 for n, t in done_at.items())
        copied = sum(p.stat().st_size for p in dst.iterdir() if p.is_file())
        return Result(
            lags,
            max(0.0, max(arrived_at.values()) - marker_at),
            exited - marker_at,
            measured,
            device_read,
            copied,
            writer_mib_s,
        )
    finally:
        for fs in (dst_fs, src_fs):
            if fs:
                fs.close()
        rmtree(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timepoints", type=int, default=1000)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--rate-mib", type=float, default=100.0, help="writer rate in MiB/s (0: flat out)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-live"))
    ap.add_argument("--no-original", action="store_true", help="leave out the original softcopy 0.0.13")
    ap.add_argument("--no-back-off-too", action="store_true", help="add softcopy --no-back-off beside the default")
    args = ap.parse_args()
    copiers = {"softcopy": lambda s, d: [sys.executable, "-m", "softcopy", str(s), str(d), "--quiet"]}
    if args.no_back_off_too:
        copiers["--no-back-off"] = lambda s, d: [
            sys.executable,
            "-m",
            "softcopy",
            str(s),
            str(d),
            "--quiet",
            "--no-back-off",
        ]
    original = None if args.no_original else original_softcopy()
    if original:
        copiers["softcopy 0.0.13"] = lambda s, d: [str(original), str(s), str(d), "--nprocs", "8", "--sleep-time", "0"]
    rate = "flat out" if args.rate_mib <= 0 else f"{args.rate_mib:g} MiB/s"
    print(f"machine: {machine()}")
    print(f"writer: tensorstore, {args.timepoints} chunks of {args.chunk_kib} KiB, {rate}, lockfile mode")
    results: dict[str, list[Result]] = {}
    for _ in range(args.runs):
        for name, cmd_for in copiers.items():
            r = one_run(args.dir, cmd_for, args.timepoints, args.chunk_kib * 1024, args.rate_mib * 2**20)
            results.setdefault(name, []).append(r)
            ms = r.lags_ms
            print(
                f"{name:<16} writer {r.writer_mib_s:6.0f} MiB/s; lag ms p50 {statistics.median(ms):7.1f} "
                f"p99 {percentile(ms, 0.99):7.1f} max {ms[-1]:7.1f}; drain: last arrival "
                f"{r.arrived_after_marker_s * 1000:5.0f} ms, exit {r.exited_after_marker_s * 1000:5.0f} ms "
                f"after the marker; CPU {r.measured.cpu:5.2f} s, RSS {r.measured.rss_mib:4.0f} MiB; "
                f"source device read {r.device_read / 2**20:.1f} MiB = {100 * r.device_read / r.copied:.1f} % "
                f"of {r.copied / 2**20:.0f} MiB copied",
                flush=True,
            )
    print("medians over runs:")
    for name, rs in results.items():
        lags = sorted(x for r in rs for x in r.lags_ms)
        print(
            f"{name:<16} lag ms p50 {statistics.median(lags):.1f}, p99 {percentile(lags, 0.99):.1f}, max {lags[-1]:.1f}"
            f"; exit after marker {statistics.median(r.exited_after_marker_s for r in rs) * 1000:.0f} ms"
            f"; CPU {statistics.median(r.measured.cpu for r in rs):.2f} s"
            f"; RSS {max(r.measured.rss_mib for r in rs):.0f} MiB"
            f"; device read {statistics.median(100 * r.device_read / r.copied for r in rs):.1f} % of copied"
        )


if __name__ == "__main__":
    main()
