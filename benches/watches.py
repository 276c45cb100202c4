"""What watching a Zarr v3 tree with a folder per (t, z, y) costs: softcopy's time to its initial
scan (watches made, tree walked) next to `find`, the number of inotify watches it holds (from
/proc/PID/fdinfo), and the kernel memory they pin (/proc/meminfo's unreclaimable slab, and the
inotify mark cache's objects). One chunk file per folder, so the folders dominate.

    python benches/watches.py [--folders 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, rmtree


def write_tree(root: Path, folders: int) -> None:
    root.mkdir(parents=True)
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    ts, zs = max(1, folders // 10_000), 100
    ys = max(1, folders // (ts * zs))
    for t in range(ts):
        for z in range(zs):
            for y in range(ys):
                d = root / "c" / str(t) / str(z) / str(y)
                d.mkdir(parents=True)
                (d / "0").write_bytes(b"x" * 64)


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def marks() -> int:
    p = Path("/sys/kernel/slab/inotify_inode_mark/objects")
    return int(p.read_text().split()[0]) if p.exists() else 0


def watches(pid: int) -> int:
    n = 0
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            n += sum(1 for line in fd.read_text().splitlines() if line.startswith("inotify wd:"))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folders", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench-watches"))
    args = ap.parse_args()
    rmtree(args.dir)
    src, dst = args.dir / "src.zarr", args.dir / "dst.zarr"
    write_tree(src, args.folders)
    folders = sum(1 for _, dirs, _ in os.walk(src) for _ in dirs) + 1
    limit = Path("/proc/sys/fs/inotify/max_user_watches")
    old_limit = limit.read_text()
    try:
        limit.write_text(str(max(int(old_limit), 2 * folders)))
        t0 = time.perf_counter()
        subprocess.run(["find", str(src), "-type", "d"], check=True, capture_output=True)
        find_s = time.perf_counter() - t0
        slab0, marks0 = meminfo("SUnreclaim"), marks()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "softcopy", str(src), str(dst), "--json"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if "initial scan" in json.loads(line).get("message", ""):
                break
        scan_s = time.perf_counter() - t0
        held = watches(proc.pid)
        slab, mark_objs = meminfo("SUnreclaim") - slab0, marks() - marks0
        rss = int(
            next(x for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if x.startswith("VmRSS")).split()[
                1
            ]
        )
        (src / "complete").touch()
        for _ in proc.stdout:
            pass
        if proc.wait(600) != 0:
            raise SystemExit("softcopy did not end verified")
    finally:
        limit.write_text(old_limit)
    print(f"# {machine()}")
    print(
        "| folders | `find -type d` s | softcopy to initial scan s | watches | unreclaimable slab MiB | B per watch | inotify marks | softcopy RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {folders} | {find_s:.2f} | {scan_s:.2f} | {held} | {slab / 2**20:.1f} | {slab / max(held, 1):.0f} "
        f"| {mark_objs} | {rss / 1024:.0f} |"
    )
    rmtree(args.dir)


if __name__ == "__main__":
    main()
