"""Does the acquisition feel the copy? A loop-mounted ext4 (direct IO to its backing file, so its
IO reaches the disk) with the `bfq` scheduler, which honours IO classes, stands in for the
microscope's disk. A finished archive lies on it (page cache dropped); a tensorstore writer streams
1 MiB chunks to it as fast as it can, 8 at a time (fsync per chunk, tensorstore's default). Measured:
the writer's throughput alone, then while softcopy (default settings: idle IO class, nice 19)
copies the archive to a tmpfs, then while `cp -r` does. The writer's throughput is taken over the
time the copier runs; the copier's own progress over that time is reported too. As root only.

    python benches/impact.py [--archive-gib 2] [--seconds 12] [--runs 3] [--scheduler bfq]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import LoopFs, drop_caches, machine, rmtree, write_archive

BENCHES = Path(__file__).resolve().parent
SOFTCOPY_ARGS: list[str] = []  # --softcopy-args: to compare settings (the default run uses none)

# The writer runs in its own process (its own IO context, as a microscope's would): it writes 1 MiB
# chunks for `seconds` and prints the monotonic time at which each chunk was complete.
WRITER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import numpy as np
from _common import open_array
root, seconds = Path(sys.argv[1]), float(sys.argv[2])
arr = open_array(root, 1_000_000, 1 << 20)
data = np.random.default_rng(3).integers(0, 65535, size=arr.shape[1:], dtype=np.uint16)
print("ready", flush=True)
batch = int(sys.argv[4])
stamps, end, i = [], time.monotonic() + seconds, 0
while time.monotonic() < end:
    # `batch` chunks at once: tensorstore writes (and fsyncs) them concurrently, as a camera
    # pipeline with several frames in flight does.
    arr[i : i + batch].write(np.broadcast_to(data, (batch, *data.shape))).result()
    stamps.extend([time.monotonic()] * batch)
    i += batch
print(json.dumps(stamps), flush=True)
"""


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def one_run(
    fs: LoopFs, base: Path, archive: Path, copier: str, seconds: float, warmup: float, batch: int
) -> tuple[float, float]:
    """Writer MiB/s over the copier's run (or the same span alone), and the copier's MiB/s."""
    rmtree(fs.mount / "stream.zarr")
    dst = base / "tmpfs" / "copy.zarr"
    rmtree(dst)
    drop_caches()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(fs.mount / "stream.zarr"), str(seconds), str(BENCHES), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(warmup)  # the writer reaches its steady rate before the copier starts
    start = time.monotonic()
    end = start + seconds - warmup - 1.0
    proc = None
    if copier == "softcopy":
        cmd = [sys.executable, "-m", "softcopy", str(archive), str(dst), "--quiet", *SOFTCOPY_ARGS]
        proc = subprocess.Popen(cmd)
    elif copier == "cp -r":
        proc = subprocess.Popen(["cp", "-r", str(archive), str(dst)])
    if proc:
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        end = min(end, time.monotonic())
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        copied = tree_bytes(dst)
    else:
        while time.monotonic() < end:
            time.sleep(0.05)
        copied = 0
    stamps = json.loads(writer.stdout.readline())
    writer.wait(60)
    chunks = sum(1 for t in stamps if start <= t <= end)
    span = max(1e-9, end - start)
    return chunks / span, copied / 2**20 / span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive-gib", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=12.0, help="how long the writer streams per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scheduler", default="bfq")
    ap.add_argument("--batch", type=int, default=8, help="chunks the writer has in flight at once")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-impact"))
    ap.add_argument("--softcopy-args", default="", help="extra softcopy options, e.g. '--nprocs 2'")
    ap.add_argument("--cases", default="alone,softcopy,cp -r")
    args = ap.parse_args()
    SOFTCOPY_ARGS.extend(args.softcopy_args.split())
    if os.geteuid() != 0:
        raise SystemExit("impact.py needs root (loop devices, tmpfs, dropping caches)")
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    size_gib = int(args.archive_gib * 2 + args.seconds) + 4  # room for ~1 GiB/s of writing (sparse)
    fs = LoopFs(args.dir / "disk.img", args.dir / "disk", size_gib, direct=True, scheduler=args.scheduler)
    tmpfs = args.dir / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(args.archive_gib) + 2}g", "tmpfs", str(tmpfs)], check=True
    )
    try:
        archive = fs.mount / "archive.zarr"
        write_archive(archive, int(args.archive_gib * 1024), 1 << 20)
        print(f"machine: {machine()}")
        sched = Path(f"/sys/block/{fs.name}/queue/scheduler").read_text().strip()
        print(f"disk: ext4 on {fs.device} (direct IO), scheduler {sched}; archive {args.archive_gib:g} GiB")
        # One untimed pass first: the first writes into the sparse disk image make the host allocate
        # its blocks, which slowed whichever case ran first by a quarter.
        one_run(fs, args.dir, archive, "alone", args.seconds, args.warmup, args.batch)
        results: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for copier in args.cases.split(","):
                r = one_run(fs, args.dir, archive, copier, args.seconds, args.warmup, args.batch)
                results.setdefault(copier, []).append(r)
                print(f"writer {r[0]:7.1f} MiB/s  {copier:<9} copier {r[1]:7.1f} MiB/s", flush=True)
        solo = statistics.median(w for w, _ in results["alone"])
        for copier in [c for c in args.cases.split(",") if c != "alone"]:
            w = statistics.median(w for w, _ in results[copier])
            c = statistics.median(c for _, c in results[copier])
            print(
                f"with {copier:<9}: writer keeps {100 * w / solo:.0f} % of its solo {solo:.0f} MiB/s; copier {c:.0f} MiB/s"
            )
    finally:
        subprocess.run(["umount", str(tmpfs)], check=False)
        fs.close()
        rmtree(args.dir)


if __name__ == "__main__":
    main()
