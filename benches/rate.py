"""How closely `--max-rate` holds: softcopy copies a finished archive (1 MiB chunks) with a rate
limit, from a loop-mounted ext4 with each IO scheduler in turn, while the bytes arrived at the
destination are sampled every 0.25 s. Reported: the rate over every 10 s window of the copy (after
a 1 s start), as a ratio to the limit; the limit holds if every window is within 5 %.

    python benches/rate.py [--rate-mib 50] [--seconds 12] [--schedulers none,mq-deadline,bfq]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import LoopFs, drop_caches, machine, rmtree, write_archive


def arrived(root: Path) -> int:
    total = 0
    if root.exists():
        with os.scandir(root) as it:
            total = sum(e.stat().st_size for e in it if e.is_file() and not e.name.startswith("."))
    return total


def one_run(fs: LoopFs, archive: Path, dst: Path, rate: int, seconds: float, window: float) -> list[float]:
    """Ratios of the achieved rate to `rate` over each `window` (sliding by the sample step)."""
    rmtree(dst)
    drop_caches()
    cmd = [sys.executable, "-m", "softcopy", str(archive), str(dst), "--quiet", "--max-rate", str(rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < seconds:
        samples.append((time.monotonic(), arrived(dst)))
        time.sleep(0.25)
    proc.terminate()
    proc.wait(30)
    start = [s for s in samples if s[0] - t0 >= 1.0]
    ratios = []
    for i, (t, b) in enumerate(start):
        later = [s for s in start[i:] if s[0] - t >= window]
        if later:
            t2, b2 = later[0]
            ratios.append((b2 - b) / (t2 - t) / rate)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate-mib", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=12.0, help="how long each copy runs (> window + 1)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds over which the rate must hold")
    ap.add_argument("--schedulers", default="none,mq-deadline,bfq")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-rate"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("rate.py needs root (loop devices, dropping caches)")
    rate = int(args.rate_mib * 2**20)
    size = int(rate * (args.seconds + 4))
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    print(f"machine: {machine()}")
    print(
        f"limit: --max-rate {rate} ({args.rate_mib:g} MiB/s); {args.window:g} s windows, {args.seconds:g} s of copying"
    )
    try:
        for sched in args.schedulers.split(","):
            fs = LoopFs(args.dir / "src.img", args.dir / "src", size // 2**30 + 2, direct=True, scheduler=sched)
            try:
                archive = fs.mount / "archive.zarr"
                write_archive(archive, size >> 20, 1 << 20)
                ratios = one_run(fs, archive, args.dir / "dst.zarr", rate, args.seconds, args.window)
                worst = max(abs(r - 1) for r in ratios)
                print(
                    f"scheduler {sched:<12} {len(ratios)} windows of {args.window:g} s: rate / limit "
                    f"min {min(ratios):.3f}, max {max(ratios):.3f}; worst deviation {100 * worst:.1f} % "
                    f"({'holds' if worst <= 0.05 else 'MISSED'})",
                    flush=True,
                )
            finally:
                fs.close()
    finally:
        rmtree(args.dir)


if __name__ == "__main__":
    main()
