"""Copy a finished archive (default ~2 GiB of ~1 MiB chunks, written by tensorstore) with softcopy,
`cp -r`, `rsync -a`, rclone and fpsync (where installed) and the original softcopy 0.0.13, cold (page
cache dropped) and warm, several runs each; print medians with min-max and the ratios to `cp -r`.
Each run copies to a fresh filesystem (see `Destination`); every copy is checked byte for byte.

    python benches/bulk.py [--chunks 2048] [--chunk-kib 1024] [--runs 3] [--dir /var/tmp/softcopy-bench]
    python benches/bulk.py --chunks 50000 --chunk-kib 16        # small files
    python benches/bulk.py --only 'cp -r' --build old=/work/old/python   # another build side by side
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _common import (
    Destination,
    Measured,
    contenders,
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
    ap.add_argument("--chunks", type=int, default=2048)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench"))
    ap.add_argument("--no-original", action="store_true", help="leave out the original softcopy 0.0.13")
    ap.add_argument("--only", action="append", help="run only these contenders (repeatable)")
    ap.add_argument("--no-check", action="store_true", help="skip the byte-for-byte check (smoke runs)")
    ap.add_argument(
        "--build", action="append", default=[], help="LABEL=DIR: softcopy from DIR (a PYTHONPATH) too, side by side"
    )
    args = ap.parse_args()
    builds = dict(b.split("=", 1) for b in args.build)

    def commands(src: Path, dst: Path, original: Path | None) -> dict[str, list[str]]:
        out = contenders(src, dst, original)
        # The fair peer of a copy that is durable before it says verified (softcopy flushes the
        # destination before the marker): cp -r, then the destination's filesystem flushed.
        out["cp -r && sync -f"] = ["sh", "-c", 'cp -r "$0" "$1" && sync -f "$1"', str(src), str(dst)]
        for label, where in builds.items():
            out[f"softcopy ({label})"] = ["env", f"PYTHONPATH={where}", *out["softcopy"]]
        return out

    src = args.dir / "src.zarr"
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    write_archive(src, args.chunks, args.chunk_kib * 1024)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    dest = Destination(args.dir, size_gib=max(1, 3 * size >> 30))
    names = list(commands(src, Path("dst"), None if args.no_original else original_softcopy()))
    names = [n for n in names if not args.only or n in args.only or n.startswith("softcopy (")]
    print(f"machine: {machine()}")
    print(f"archive: {args.chunks} chunks of {args.chunk_kib} KiB = {size / 2**30:.2f} GiB, in {args.dir}")
    print(f"destination: {'a fresh ext4 loop filesystem per run' if dest.loop else 'a folder'}")
    results: dict[tuple[str, str], list[Measured]] = {}
    try:
        for cache in ("cold", "warm"):
            if cache == "cold" and not drop_caches():
                print("cannot drop caches (not root?): skipping cold runs")
                continue
            for _ in range(args.runs):
                # Interleave contenders in each round so drift on a noisy machine hits all alike.
                for name in names:
                    dst = dest.fresh() / "dst.zarr"
                    cmd = commands(src, dst, original_softcopy() if "0.0.13" in name else None)[name]
                    if cache == "cold":
                        drop_caches()
                    else:
                        warm(src)
                    results.setdefault((cache, name), []).append(timed(cmd))
                    if not args.no_check and not identical(src, dst):
                        raise SystemExit(f"{name}: the copy differs from the source")
    finally:
        dest.release()
    head = f"{'run':<20} {'wall s: median (min, max)':<34} {'CPU s: median (min, max)':<34} {'GiB/s':>6} {'RSS MiB':>8}"
    print(head)
    for (cache, name), rs in results.items():
        walls = [m.wall for m in rs]
        gibs = size / 2**30 / statistics.median(walls)
        rss = max(m.rss_mib for m in rs)
        print(
            f"{cache + ' ' + name:<20} {summary(walls):<34} {summary([m.cpu for m in rs]):<34} {gibs:>6.2f} {rss:>8.0f}"
        )
    for cache in ("cold", "warm"):
        base = results.get((cache, "cp -r"))
        if not base:
            continue
        for name in names:
            if name == "cp -r" or (cache, name) not in results:
                continue
            rs = results[(cache, name)]
            wall = statistics.median(m.wall for m in rs) / statistics.median(m.wall for m in base)
            cpu = statistics.median(m.cpu for m in rs) / max(1e-9, statistics.median(m.cpu for m in base))
            print(f"ratio {cache} {name} / cp -r: wall {wall:.2f}x, CPU {cpu:.2f}x")
    rmtree(args.dir)


if __name__ == "__main__":
    main()
