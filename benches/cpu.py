"""How much CPU softcopy takes from the acquisition PC when it has little to do (issue 11, item 3):
the whole softcopy process, (1) idle, watching a finished copy, and (2) copying one large file at
`--max-rate 4M` with one worker while a file written in place waits for it (a settle timer due,
no worker free: the state in which the coordinator used to spin at 0.96 of a core).

Figures: CPU seconds per wall second (a fraction of one core), from /proc/PID/stat.

With `--dest-dir` on another device than `--dir` (e.g. /dev/shm), the adaptive back-off runs
(it watches the source's device): its sampler's cost is in the idle figure; `--softcopy-args
--no-back-off` measures without it.

    python benches/cpu.py [--idle-seconds 10] [--big-mib 40] [--dir DIR] [--dest-dir DIR] [--baseline PYTHON]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.01)


def measure(
    python: str, idle_seconds: float, big_mib: int, base: Path, dst: Path, extra: list[str]
) -> tuple[float, float]:
    """(idle, busy) CPU of one softcopy process copying from `base` to `dst`, as fractions of a core."""
    src = base / "src"
    src.mkdir(parents=True)
    (src / "first").write_bytes(b"x")
    cmd = [python, "-m", "softcopy", str(src), str(dst), "--nprocs", "1", "--max-rate", "4M", "-q", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (dst / "first").exists(), 30)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)  # the measurement window itself, not a synchronisation
        idle = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        tmp = src / "big.__lock"
        tmp.write_bytes(os.urandom(big_mib << 20))
        os.replace(tmp, src / "big")
        time.sleep(0.3)  # let the big copy take the only worker (a bench, not a test)
        (src / "small").write_bytes(b"written in place")  # its settle timer falls due at once
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        wait_until(lambda: (dst / "big").exists(), big_mib + 30)
        busy = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        wait_until(lambda: (dst / "small").exists(), 30)
        assert (dst / "big").read_bytes() == (src / "big").read_bytes(), "the copy is exact"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    return idle, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--big-mib", type=int, default=40)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--dest-dir", type=Path, default=None, help="where the copies go (default: beside the source)")
    ap.add_argument("--softcopy-args", default="", help="extra softcopy options, e.g. '--no-back-off'")
    ap.add_argument(
        "--baseline",
        metavar="PYTHON",
        default=None,
        help="a Python with another softcopy installed (e.g. a venv of an older commit), measured beside",
    )
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}")
    contenders = [("softcopy", sys.executable)] + ([("baseline", a.baseline)] if a.baseline else [])
    results = {}
    for name, python in contenders:
        base = Path(tempfile.mkdtemp(prefix="softcopy-cpu-", dir=a.dir))
        dst = Path(tempfile.mkdtemp(prefix="softcopy-cpu-dst-", dir=a.dest_dir)) / "dst" if a.dest_dir else base / "dst"
        idle, busy = measure(python, a.idle_seconds, a.big_mib, base, dst, a.softcopy_args.split())
        if a.dest_dir:
            shutil.rmtree(dst.parent, ignore_errors=True)
        results[name] = (idle, busy)
        print(f"{name} idle:                         {idle * 100:.2f} % of a core over {a.idle_seconds:.0f} s")
        print(f"{name} copying at 4 MiB/s, timer due: {busy * 100:.2f} % of a core ({a.big_mib} MiB)")
    if a.baseline:
        (i1, b1), (i0, b0) = results["softcopy"], results["baseline"]
        print(f"ratio softcopy / baseline: idle {i1 / max(i0, 1e-9):.2f}x, busy {b1 / max(b0, 1e-9):.2f}x")


if __name__ == "__main__":
    main()
