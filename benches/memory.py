"""Memory over a long acquisition: softcopy's peak RSS while it copies an archive written live, with
settled files let go from memory (the default: docs/design.md, "Memory") and with every file kept
(as before issue 13), side by side, at several archive sizes. Constant memory means the first
column does not grow with the file count.

The writer is tensorstore (Zarr v2, `/` keys, 64-byte chunks, 1000 per folder, 5 rows at a time,
paced at `--rate` files per second, no fsync), started after softcopy; the source and the destination are fresh ext4 loop filesystems with
`inline_data` (a 64-byte file lives in its inode), so 10^6-10^7 files stay affordable. Every copy is
checked file by file; the run must end verified. Peak RSS is the whole softcopy process's (GNU
time), Python included.

    python benches/memory.py [--files 100000 --files 1000000] [--evict-after 5] [--rate 4000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import LoopFs, Measured, Running, identical, machine, rmtree

DRIVER = """
import sys, softcopy
from pathlib import Path
src, dst, evict = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
t = softcopy.Target(src, dst, evict_after=None if evict == "never" else float(evict))
with softcopy.Copier([t]) as c:
    report = c.wait()
sys.exit(0 if report is not None and report.ok else 1)
"""

WRITER = """
import sys, time, numpy as np, tensorstore as ts
root, files, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = max(1, files // 1000)
arr = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": root},
    "metadata": {"chunks": [1, 32], "compressor": None, "dimension_separator": "/"}},
    create=True, dtype=ts.uint16, shape=[rows, 1000 * 32],
    context=ts.Context({"file_io_sync": False})).result()
rng = np.random.default_rng(1)
t0 = time.monotonic()
for t in range(0, rows, 5):
    n = min(5, rows - t)
    arr[t : t + n].write(rng.integers(1, 65535, size=(n, 1000 * 32), dtype=np.uint16)).result()
    # Paced like a camera: the next rows are due at their time, not as fast as the disk allows.
    if rate > 0:
        time.sleep(max(0.0, t0 + (t + n) * 1000 / rate - time.monotonic()))
open(root + "/complete", "w").close()
"""


def inline_fs(image: Path, mount: Path, files: int) -> LoopFs:
    """A fresh ext4 with an inode per 2 KiB and inline data, big enough for `files` tiny files."""
    size_gib = max(1, files * 2048 * 3 // 2 // 2**30 + 1)
    return LoopFs(image, mount, size_gib, mkfs=("-I", "512", "-i", "2048", "-O", "inline_data"))


def one(workdir: Path, files: int, evict: str, rate: float) -> tuple[Measured, float]:
    """Copies a live archive of `files` chunks; returns softcopy's measure and the writer's seconds."""
    src_fs = inline_fs(workdir / "src.img", workdir / "src", files)
    dst_fs = inline_fs(workdir / "dst.img", workdir / "dst", files)
    try:
        src, dst = src_fs.mount / "a.zarr", dst_fs.mount / "a.zarr"
        # The copier waits for the source; the writer makes it.
        run = Running([sys.executable, "-c", DRIVER, str(src), str(dst), evict])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRITER, str(src), str(files), str(rate)], check=True)
        wrote = time.perf_counter() - t0
        m = run.wait()
        if not identical(src, dst):
            raise SystemExit(f"softcopy ({evict}): the copy differs from the source")
        return m, wrote
    finally:
        src_fs.close()
        dst_fs.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, action="append", help="archive sizes (repeat; default 10^5 and 10^6)")
    ap.add_argument("--evict-after", default="30", help="seconds a copied file stays quiet before it settles")
    ap.add_argument("--rate", type=float, default=4000, help="files per second the writer makes (0: flat out)")
    ap.add_argument("--modes", default="settled,all", help="settled (let go from memory), all (kept), or both")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-memory"))
    args = ap.parse_args()
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    print(f"machine: {machine()}")
    print("files      softcopy                       wall s  CPU s  peak RSS MiB  writer s")
    for files in args.files or [100_000, 1_000_000]:
        modes = {
            "settled": (f"settled out ({args.evict_after} s)", args.evict_after),
            "all": ("all in memory", "never"),
        }
        for label, evict in (modes[m] for m in args.modes.split(",")):
            m, wrote = one(args.dir, files, evict, args.rate)
            print(f"{files:<10d} {label:<30} {m.wall:6.1f} {m.cpu:6.1f} {m.rss_mib:13.0f} {wrote:9.1f}", flush=True)
    rmtree(args.dir)


if __name__ == "__main__":
    main()
