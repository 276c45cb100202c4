"""A million small files: how long softcopy takes to find them (from its start to its "initial scan"
log line, which comes after the watches are set up and the tree is walked) next to
`find SRC -type f | wc -l`, cold and warm; then the whole copy (wall, CPU, peak RSS) next to
`cp -r`, to a fresh ext4 loop filesystem. The archive is written by tensorstore: 64-byte chunks,
1000 files per folder. Peak RSS over the file count gives softcopy's memory per tracked file.

    python benches/scale.py [--files 1000000] [--src PATH_OF_AN_EXISTING_ARCHIVE] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import Destination, Measured, Running, drop_caches, identical, machine, rmtree, timed


def write_many(root: Path, files: int) -> None:
    """`files` chunk files of 64 bytes, 1000 per folder (Zarr v2, `/` keys), and the marker."""
    import numpy as np
    import tensorstore as ts

    rows = max(1, files // 1000)
    arr = ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root)},
            "metadata": {"chunks": [1, 32], "compressor": None, "dimension_separator": "/"},
        },
        create=True,
        dtype=ts.uint16,
        shape=[rows, 1000 * 32],
    ).result()
    rng = np.random.default_rng(1)
    for t in range(0, rows, 50):
        n = min(50, rows - t)
        arr[t : t + n].write(rng.integers(1, 65535, size=(n, 1000 * 32), dtype=np.uint16)).result()
    (root / "complete").touch()


def find_count(src: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(f"find '{src}' -type f | wc -l", shell=True, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, int(out.stdout)


def softcopy_scan(src: Path, dst: Path) -> tuple[float, Running]:
    """Seconds from softcopy's start to its initial-scan log line; the process, still running."""
    cmd = [sys.executable, "-m", "softcopy", str(src), str(dst), "--json"]
    run = Running(cmd, stdout=subprocess.PIPE, text=True)
    assert run.proc.stdout is not None
    for line in run.proc.stdout:
        if "initial scan" in json.loads(line).get("message", ""):
            return time.perf_counter() - run.t0, run
    raise SystemExit("softcopy ended without reporting its initial scan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--src", type=Path, help="an archive written by an earlier run (kept)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-scale"))
    args = ap.parse_args()
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    src = args.src or args.dir / "src.zarr"
    if not args.src:
        write_many(src, args.files)
    dest = Destination(args.dir, size_gib=16)
    print(f"machine: {machine()}")
    scans: dict[str, list[float]] = {}
    copies: dict[str, list[Measured]] = {}
    count = 0
    try:
        for _ in range(args.runs):
            for cache in ("cold", "warm"):
                if cache == "cold":
                    drop_caches()
                elapsed, count = find_count(src)
                scans.setdefault(f"{cache} find | wc -l", []).append(elapsed)
                dst = dest.fresh() / "dst.zarr"
                if cache == "cold":
                    drop_caches()
                elapsed, run = softcopy_scan(src, dst)
                assert run.proc.stdout is not None
                run.proc.stdout.read()  # the rest of its output, so it never blocks on a full pipe
                copies.setdefault(f"{cache} softcopy", []).append(run.wait())
                scans.setdefault(f"{cache} softcopy", []).append(elapsed)
                if not identical(src, dst):
                    raise SystemExit("softcopy: the copy differs from the source")
                dst = dest.fresh() / "dst.zarr"
                if cache == "cold":
                    drop_caches()
                copies.setdefault(f"{cache} cp -r", []).append(timed(["cp", "-r", str(src), str(dst)]))
    finally:
        dest.release()
    print(f"archive: {count} files in {count // 1000} folders")
    for name, xs in scans.items():
        print(f"scan  {name:<20} {statistics.median(xs):7.2f} s")
    for cache in ("cold", "warm"):
        ratio = statistics.median(scans[f"{cache} softcopy"]) / statistics.median(scans[f"{cache} find | wc -l"])
        print(f"ratio {cache} scan softcopy / find: {ratio:.2f}x")
    for name, ms in copies.items():
        rss = max(m.rss_mib for m in ms)
        print(
            f"copy  {name:<20} wall {statistics.median(m.wall for m in ms):7.1f} s, "
            f"CPU {statistics.median(m.cpu for m in ms):6.1f} s, peak RSS {rss:6.0f} MiB"
        )
    rss = max(m.rss_mib for k, ms in copies.items() if "softcopy" in k for m in ms)
    print(f"softcopy peak RSS per file: {rss * 2**20 / max(1, count):.0f} bytes (whole process, incl. Python)")
    if not args.src:
        rmtree(args.dir)


if __name__ == "__main__":
    main()
