"""What the service form costs per acquisition: a service watching an acquisitions folder that holds
`--finished` archives already copied and verified, while one more is written live (tensorstore,
one timepoint every `--interval` s). Reports the service's CPU (user + system, its whole life, from
wait4) and peak resident memory, and the same for a plain `softcopy SRC DST` of the
live acquisition alone, side by side; the difference over the finished count is the cost of each.

    python benches/service.py [--finished 50] [--timepoints 60] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import machine, rmtree

WRITER = Path(__file__).resolve().parent.parent / "tests" / "writers" / "ts_writer.py"


def cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS")).split()[1])
    return cpu, rss / 1024


def files(root: Path) -> dict[str, bytes]:
    """Every file below `root` (empty folders left where a writer deleted a fill-value chunk are no data,
    nor is softcopy's own state at a copy's root)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not (p.parent == root and p.name.startswith(".softcopy"))
    }


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finished", type=int, default=50)
    ap.add_argument("--timepoints", type=int, default=60)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench-service"))
    args = ap.parse_args()
    rmtree(args.dir)
    acq, raw, reports = args.dir / "acquisition", args.dir / "raw", args.dir / "reports"
    acq.mkdir(parents=True)
    raw.mkdir()
    reports.mkdir()
    for n in range(args.finished):
        subprocess.run([sys.executable, str(WRITER), str(acq / f"done{n:03}.zarr"), "v2dot", "3", "0"], check=True)
    service = [
        sys.executable,
        "-m",
        "softcopy",
        str(acq / "*.zarr"),
        str(raw),
        "--report",
        str(reports / "{name}.json"),
    ]
    # The first start copies the finished archives; the service measured is a restart, as a lab's is.
    first = subprocess.Popen(service, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(list(reports.iterdir())) == args.finished, 600, "the finished archives' copies")
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    print(f"# {machine()}")
    print(
        f"# {args.finished} finished archives (verified earlier), one live: {args.timepoints} timepoints every {args.interval} s"
    )
    print("| copier | CPU s, whole process | peak RSS MiB | live copy verified |")
    print("|---|---|---|---|")
    rows = []
    for label, live, dst in (
        (f"service, {args.finished} finished + 1 live", acq / "live.zarr", raw / "live.zarr"),
        ("softcopy SRC DST, the live one alone", args.dir / "alone.zarr", args.dir / "alone-copy.zarr"),
    ):
        serving = live.parent == acq
        cmd = service if serving else [sys.executable, "-m", "softcopy", str(live), str(dst)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
            ready.bind(str(args.dir / "notify.sock"))
            ready.settimeout(120)
            env = {**os.environ, "NOTIFY_SOCKET": str(args.dir / "notify.sock")} if serving else None
            log = open(args.dir / "copier.log", "w")  # noqa: SIM115 (closed once the copier ended)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            if serving:
                assert ready.recv(64) == b"READY=1"  # watching, the finished archives looked at
        (args.dir / "notify.sock").unlink()
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(live), "zarr3", str(args.timepoints), str(args.interval)]
        )
        peak = 0.0
        while writer.poll() is None:
            if proc.poll() is not None:
                log.close()
                said = (args.dir / "copier.log").read_text()
                raise SystemExit(f"{label}: the copier ended (exit {proc.returncode}) while the writer wrote:\n{said}")
            peak = max(peak, cpu_rss(proc.pid)[1])
            time.sleep(0.2)
        assert writer.returncode == 0
        marker = dst / "complete"
        wait_until(marker.exists, 120, "the live copy's marker")
        if serving:
            proc.send_signal(signal.SIGTERM)
        # The process's own usage, once it ended (the one-shot copy ends by itself when verified).
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        log.close()
        cpu = usage.ru_utime + usage.ru_stime
        peak = max(peak, usage.ru_maxrss / 1024)
        same = files(live) == files(dst)
        if not same:
            raise SystemExit(f"{label}: the copy of {live} differs")
        rows.append((label, cpu, peak, same))
        print(f"| {label} | {cpu:.2f} | {peak:.0f} | yes |")
        sys.stdout.flush()
    (_, c1, r1, _), (_, c0, r0, _) = rows
    n = max(args.finished, 1)
    print(f"# per finished acquisition watched: {(c1 - c0) / n * 1000:.1f} ms CPU, {(r1 - r0) / n * 1024:.0f} KiB")
    rmtree(args.dir)


if __name__ == "__main__":
    main()
