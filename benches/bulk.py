"""Copy a finished archive (default ~1 GiB of ~1 MiB chunks, written by tensorstore) with softcopy,
`cp -r` and `rsync -a` (when installed), cold (page cache dropped) and warm, several runs each, and
print medians and the ratios to `cp -r`. Every copy is checked byte for byte.

    python benches/bulk.py [--chunks 1024] [--chunk-kib 1024] [--runs 3] [--dir /var/tmp/softcopy-bench]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from _common import (
    drop_caches,
    identical,
    machine,
    original_softcopy,
    rmtree,
    summary,
    timed,
    warm,
    write_archive,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=1024)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench"))
    ap.add_argument("--no-original", action="store_true", help="leave out the original softcopy 0.0.13")
    args = ap.parse_args()

    src, dst = args.dir / "src.zarr", args.dir / "dst.zarr"
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    write_archive(src, args.chunks, args.chunk_kib * 1024)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    contenders = {
        "softcopy": [sys.executable, "-m", "softcopy", str(src), str(dst), "--quiet"],
        "cp -r": ["cp", "-r", str(src), str(dst)],
    }
    if shutil.which("rsync"):
        contenders["rsync -a"] = ["rsync", "-a", f"{src}/", f"{dst}/"]
    original = None if args.no_original else original_softcopy()
    if original:
        # Its own recommended fast settings; its default --sleep-time would add seconds per file.
        contenders["softcopy 0.0.13"] = [str(original), str(src), str(dst), "--nprocs", "8", "--sleep-time", "0"]
    print(f"machine: {machine()}")
    print(f"archive: {args.chunks} chunks of {args.chunk_kib} KiB = {size / 2**30:.2f} GiB, in {args.dir}")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for cache in ("cold", "warm"):
        if cache == "cold" and not drop_caches():
            print("cannot drop caches (not root?): skipping cold runs")
            continue
        for _ in range(args.runs):
            # Interleave contenders in each round so drift on a noisy machine hits all of them alike.
            for name, cmd in contenders.items():
                rmtree(dst)
                if cache == "cold":
                    drop_caches()
                else:
                    warm(src)
                results.setdefault((cache, name), []).append(timed(cmd))
                if not identical(src, dst):
                    raise SystemExit(f"{name}: the copy differs from the source")
    print(f"{'run':<20} {'wall s: median (min, max)':<36} {'CPU s (user+sys)':<34} {'GiB/s':>6}")
    for (cache, name), rs in results.items():
        walls, cpus = [w for w, _ in rs], [c for _, c in rs]
        gibs = size / 2**30 / statistics.median(walls)
        print(f"{cache + ' ' + name:<20} {summary(walls):<36} {summary(cpus):<34} {gibs:>6.2f}")
    for cache in ("cold", "warm"):
        base = results.get((cache, "cp -r"))
        if not base:
            continue
        for name in contenders:
            if name == "cp -r":
                continue
            rs = results[(cache, name)]
            wall = statistics.median(w for w, _ in rs) / statistics.median(w for w, _ in base)
            cpu = statistics.median(c for _, c in rs) / max(1e-9, statistics.median(c for _, c in base))
            print(f"ratio {cache} {name} / cp -r: wall {wall:.2f}x, CPU {cpu:.2f}x")
    rmtree(args.dir)


if __name__ == "__main__":
    main()
