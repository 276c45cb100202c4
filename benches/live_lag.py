"""Lag of a live copy: tensorstore writes a Zarr v2 archive (flat `.` keys) at a set rate while
softcopy copies it; one inotify reader watches both trees and timestamps each chunk's rename at the
source (IN_MOVED_TO) and its arrival at the destination (our rename, IN_MOVED_TO). Prints the lag
median / p99 / max, the drain time after the `complete` marker, and checks the copy byte for byte.

    python benches/live_lag.py [--timepoints 300] [--chunk-kib 1024] [--rate-mib 100] [--runs 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import identical, machine, open_array, rmtree
from _inotify import IN_MOVED_TO, Inotify


def writer(root: Path, timepoints: int, chunk_bytes: int, rate: float) -> None:
    import numpy as np

    arr = open_array(root, timepoints, chunk_bytes)
    data = np.random.default_rng(2).integers(0, 65535, size=arr.shape[1:], dtype=np.uint16)
    t0 = time.monotonic()
    for t in range(timepoints):
        arr[t].write(data).result()
        # Pace to the target rate without drifting: sleep until this chunk's slot.
        delay = t0 + (t + 1) * chunk_bytes / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    (root / "complete").touch()


def one_run(base: Path, timepoints: int, chunk_bytes: int, rate: float) -> tuple[list[float], float, float]:
    src, dst = base / "src.zarr", base / "dst.zarr"
    rmtree(base)
    src.mkdir(parents=True)
    dst.mkdir(parents=True)
    ino = Inotify()
    ino.watch(str(src))
    ino.watch(str(dst))
    landed: dict[tuple[str, str], float] = {}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for when, d, name, mask in ino.read():
                if mask & IN_MOVED_TO and not name.startswith("."):
                    side = "src" if d == str(src) else "dst"
                    landed.setdefault((side, name), when)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "softcopy", str(src), str(dst), "--quiet"])
    writer(src, timepoints, chunk_bytes, rate)
    marker_at = time.monotonic()
    assert proc.wait(600) == 0, "softcopy failed"
    exited = time.monotonic()
    stop.set()
    (dst / ".wake").touch()  # one more event, so the reader thread returns from read()
    reader.join(5)
    (dst / ".wake").unlink()
    ino.close()
    assert identical(src, dst), "the copy differs from the source"
    lags = [landed[("dst", n)] - t for (side, n), t in landed.items() if side == "src" and ("dst", n) in landed]
    missing = [n for (side, n) in landed if side == "src" and ("dst", n) not in landed]
    assert not missing, f"never seen arriving: {missing[:5]}"
    last_arrival = max(t for (side, _), t in landed.items() if side == "dst")
    return lags, max(0.0, last_arrival - marker_at), exited - marker_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timepoints", type=int, default=300)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--rate-mib", type=float, default=100.0, help="writer rate in MiB/s")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-lag"))
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(
        f"writer: tensorstore, {args.timepoints} chunks of {args.chunk_kib} KiB at {args.rate_mib} MiB/s, in {args.dir}"
    )
    for run in range(args.runs):
        lags, drain, exit_after = one_run(args.dir, args.timepoints, args.chunk_kib * 1024, args.rate_mib * 2**20)
        ms = sorted(x * 1000 for x in lags)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(
            f"run {run + 1}: {len(ms)} chunks; lag ms median {statistics.median(ms):.1f}, p99 {p99:.1f}, "
            f"max {ms[-1]:.1f}; last arrival {drain * 1000:.0f} ms after the marker; "
            f"softcopy verified and exited {exit_after * 1000:.0f} ms after the marker"
        )
    rmtree(args.dir)


if __name__ == "__main__":
    main()
