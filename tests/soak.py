"""Soak test (not part of CI; `make soak`, or `python tests/soak.py --minutes 10`).

Four targets with live writers (tensorstore zarr3, tensorstore sharded, zarr-python, acquire-zarr)
copied by one softcopy process onto a size-limited tmpfs for the whole run, while faults are injected
at random: SIGKILL and restart, SIGTERM and restart, the destination filled up then given room again.
At the end every writer drops its marker, softcopy must exit 0, every destination must be
byte-identical to its source, and softcopy's memory must not have grown with time.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import assert_same_tree, softcopy_cmd

W = Path(__file__).parent / "writers"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        base, mnt = Path(tmp), Path(tmp, "dst")
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(mnt)], check=True)
        try:
            run(base, mnt, seconds, rng)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def run(base: Path, mnt: Path, seconds: float, rng: random.Random) -> None:
    interval = 0.2
    frames = int(seconds / interval)
    writers = {
        "ts.zarr": [str(W / "ts_writer.py"), "zarr3", str(frames), str(interval)],
        "sharded.zarr": [str(W / "ts_writer.py"), "zarr3sharded", str(frames), str(interval)],
        "zp.zarr": [str(W / "zarr_writer.py"), "plain", "3", str(frames), str(interval)],
        "aq.zarr": [str(W / "aqz_writer.py"), "plain", str(frames), str(interval)],
    }
    (base / "src").mkdir()
    targets = base / "targets.yaml"
    targets.write_text("targets:\n" + "".join(f"  - source: src/{n}\n    destination: {mnt}/{n}\n" for n in writers))
    procs = [subprocess.Popen([sys.executable, w[0], str(base / "src" / n), *w[1:]]) for n, w in writers.items()]
    log = (base / "softcopy.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(softcopy_cmd(targets, "--log-every", "10"), stdout=log, stderr=subprocess.STDOUT)

    copier = start()
    t0 = time.monotonic()
    rss: list[tuple[float, float]] = []
    faults: list[str] = []
    while any(p.poll() is None for p in procs):
        time.sleep(5)
        if copier.poll() is None:
            rss.append((time.monotonic() - t0, rss_mib(copier.pid)))
        if rng.random() < 0.15:
            fault = rng.choice(["sigkill", "sigterm", "full"])
            faults.append(f"{time.monotonic() - t0:.0f}s {fault}")
            if fault in ("sigkill", "sigterm"):
                (copier.kill if fault == "sigkill" else copier.terminate)()
                copier.wait(30)
                rss.clear()  # a new process: memory growth is measured per process lifetime
                copier = start()
            else:
                st = os.statvfs(mnt)
                used = (st.f_blocks - st.f_bfree) * st.f_frsize  # tmpfs refuses a size below its usage
                subprocess.run(["mount", "-o", f"remount,size={used + (1 << 20)}", str(mnt)], check=True)
                time.sleep(10)
                subprocess.run(["mount", "-o", "remount,size=2g", str(mnt)], check=True)
    assert all(p.returncode == 0 for p in procs), "a writer failed"
    code = copier.wait(600)
    print("faults:", ", ".join(faults) or "none")
    if rss:
        print(f"softcopy RSS: {rss[0][1]:.1f} MiB at {rss[0][0]:.0f} s -> {rss[-1][1]:.1f} MiB at {rss[-1][0]:.0f} s")
    if code != 0:
        tail = (base / "softcopy.log").read_text(errors="replace").splitlines()[-40:]
        raise AssertionError(f"softcopy exited {code}; the end of its log:\n" + "\n".join(tail))
    for n in writers:
        assert_same_tree(base / "src" / n, mnt / n)
    if len(rss) > 4:
        assert rss[-1][1] < rss[len(rss) // 4][1] * 1.5 + 10, "memory grows with time"
    print("soak: every target verified and byte-identical")


if __name__ == "__main__":
    main()
