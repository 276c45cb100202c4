"""How long a stop takes on a busy machine: SIGTERM to exit, while copies are in flight, beside
busy loops in the copier's own session (the kernel's per-session groups then shield nothing: a
nice-19 worker waits seconds for a time slice). softcopy (`SRC DST`, and the service form) against
`cp -r` and `rsync -a` stopped the same way. Reported: the
median and the worst stop per copier, and each one's ratio to `cp -r`'s median. The promise is
2 s (docs/design.md, "Stopping"). As root (the workers' priority is given back at a stop).

    python benches/stop.py [--runs 5] [--loops-per-core 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import machine, rmtree


def archive(root: Path, files: int = 40, mib: int = 16) -> None:
    """Big files, so that copies are in flight when the stop comes."""
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for i in range(files):
        (root / f"f{i}").write_bytes(block * mib)


def copiers(src: Path, dst: Path) -> dict[str, list[str]]:
    softcopy = [sys.executable, "-m", "softcopy"]
    out = {
        "softcopy": [*softcopy, str(src), str(dst / src.name), "--quiet"],
        "softcopy service": [*softcopy, f"{src.parent}/*", str(dst), "--quiet"],
        "cp -r": ["cp", "-r", str(src), str(dst / src.name)],
    }
    if shutil.which("rsync"):
        out["rsync -a"] = ["rsync", "-a", str(src) + "/", str(dst / src.name)]
    return out


def under_way(dst: Path) -> Callable[[], bool]:
    """Something arrived at the destination: a copy is in flight."""

    def seen() -> bool:
        return any(p.is_file() for p in dst.rglob("*"))

    return seen


def one_stop(cmd: list[str], dst: Path) -> float:
    rmtree(dst)
    dst.mkdir(parents=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, seen = time.monotonic() + 60, under_way(dst)
    while not seen() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if proc.poll() is not None:
        raise SystemExit(f"{cmd[0]} ended before it could be stopped (exit {proc.returncode})")
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--loops-per-core", type=int, default=3)
    args = ap.parse_args()
    loops = args.loops_per_core * (os.cpu_count() or 1)
    print(f"# stop after SIGTERM, {args.runs} runs each, beside {loops} busy loops in the same session")
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        src, dst = Path(tmp) / "acq" / "run.zarr", Path(tmp) / "dst"
        archive(src)
        spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
        try:
            times = {name: [one_stop(cmd, dst) for _ in range(args.runs)] for name, cmd in copiers(src, dst).items()}
        finally:
            for p in spinning:
                p.kill()
                p.wait()
    base = statistics.median(times["cp -r"])
    print(f"{'copier':<18} {'median s':>9} {'worst s':>8} {'median / cp -r':>15}")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:<18} {median:>9.2f} {max(ts):>8.2f} {median / base:>15.1f}")


if __name__ == "__main__":
    main()
