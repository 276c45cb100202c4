"""How much CPU softcopy takes from the acquisition PC when it has little to do (issue 11, item 3):
the whole softcopy process, (1) idle, watching a finished copy, and (2) copying one large file at
`--max-rate 4M` with one worker while a file written in place waits for it (a settle timer due,
no worker free: the state in which the coordinator used to spin at 0.96 of a core).

Figures: CPU seconds per wall second (a fraction of one core), from /proc/PID/stat.

    python benches/cpu.py [--idle-seconds 10] [--big-mib 40] [--dir DIR]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--big-mib", type=int, default=40)
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="softcopy-cpu-", dir=a.dir))
    src, dst = base / "src", base / "dst"
    src.mkdir(parents=True)
    (src / "first").write_bytes(b"x")
    cmd = [sys.executable, "-m", "softcopy", str(src), str(dst), "--nprocs", "1", "--max-rate", "4M", "-q"]
    proc = subprocess.Popen(cmd)
    try:
        wait_until(lambda: (dst / "first").exists(), 30)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(a.idle_seconds)  # the measurement window itself, not a synchronisation
        idle = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        tmp = src / "big.__lock"
        tmp.write_bytes(os.urandom(a.big_mib << 20))
        os.replace(tmp, src / "big")
        time.sleep(0.3)  # the big copy is in the only worker
        (src / "small").write_bytes(b"written in place")  # its settle timer falls due at once
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        wait_until(lambda: (dst / "big").exists(), a.big_mib)
        busy = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        wait_until(lambda: (dst / "small").exists(), 30)
        assert (dst / "big").read_bytes() == (src / "big").read_bytes(), "the copy is exact"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}")
    print(f"softcopy idle:                         {idle * 100:.2f} % of a core over {a.idle_seconds:.0f} s")
    print(f"softcopy copying at 4 MiB/s, timer due: {busy * 100:.2f} % of a core ({a.big_mib} MiB)")


if __name__ == "__main__":
    main()
