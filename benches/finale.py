"""The end of a live run: seconds from the marker to the verified exit, with every file already
copied, next to `softcopy verify` (the full two-sided walk: every destination file looked at) on
the same trees. The engine's proof rests on what this run landed plus one walk of the local source
(docs/design.md, "The end of a run"), so its time follows the local walk, not the destination's
round trips, and must not grow with the archive faster than that walk.

    python benches/finale.py [--files 100000] [--rtt MS]   # --rtt: to sshfs through the delay proxy

The archive is one Zarr v2 array of 64-byte chunks, 1000 per folder, written directly (the writer
does not matter here: everything is copied before the marker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import softcopy
from _common import Destination, differences, machine, rmtree


def write_flat_array(root: Path, files: int) -> int:
    """About `files` chunks (whole folders of 1000) and the array's metadata; returns how many files."""
    rows = max(1, files // 1000)
    root.mkdir(parents=True)
    meta = {
        "zarr_format": 2,
        "shape": [rows, 1000],
        "chunks": [1, 1],
        "dtype": "<u8",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "dimension_separator": "/",
    }
    (root / ".zarray").write_text(json.dumps(meta))
    payload = os.urandom(64)
    for r in range(rows):
        d = root / str(r)
        d.mkdir()
        for c in range(1000):
            fd = os.open(d / str(c), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, payload)
            os.close(fd)
    return rows * 1000 + 1


def marker_to_verified(src: Path, dst: Path, files: int, timeout: float) -> tuple[float, float]:
    """Copies live until every file is at the destination, then writes the marker: (seconds the
    copy took, seconds from the marker to the verified end)."""
    copier = softcopy.Copier([softcopy.Target(src, dst, nprocs=8)])
    copier.start()
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        s = copier.status()[0]
        if s.files_copied >= files and s.backlog == 0 and s.in_flight == 0:
            break
        if copier.poll() is not None or time.perf_counter() > deadline:
            raise SystemExit(f"the copy did not catch up: {s}")
        time.sleep(0.05)
    copied = time.perf_counter() - t0
    (src / "complete").touch()
    t1 = time.perf_counter()
    phases: list[str] = []
    while (report := copier.wait(0.005)) is None and time.perf_counter() < t1 + timeout:
        phase = copier.status()[0].phase
        if not phases or not phases[-1].startswith(phase):
            phases.append(f"{phase} {time.perf_counter() - t1:.2f}")
    end = time.perf_counter() - t1
    print("#", ", ".join(phases), file=sys.stderr)
    if report is None or not report.ok:
        raise SystemExit(f"the run did not end verified: {report}")
    return copied, end


def full_verify(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "softcopy", "verify", str(src), str(dst)], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, action="append", help="archive sizes (default 100000)")
    ap.add_argument("--rtt", type=float, help="copy to sshfs through the delay proxy with this round trip (ms)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench-finale"))
    args = ap.parse_args()
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    print(f"# {machine()}")
    where = f"sshfs at {args.rtt:g} ms" if args.rtt is not None else "a fresh ext4 loop filesystem"
    print(f"# destination: {where}; every file copied before the marker")
    print("| files | copy s | marker → verified s | `softcopy verify` s | ratio |")
    print("|---|---|---|---|---|")
    share = None
    try:
        if args.rtt is not None:
            from _share import Sshd
            from network import Proxy

            sshd = Sshd(args.dir / "sshd", quiet=True)
            sshd.start()
            proxy = Proxy(sshd.port, args.rtt)
            remote, mnt = args.dir / "remote", args.dir / "mnt"
            remote.mkdir()
            mnt.mkdir()
            sshd.mount(remote, mnt, port=proxy.port)
            share = (sshd, proxy, mnt)
        for n in args.files or [100_000]:
            src = args.dir / f"src-{n}.zarr"
            files = write_flat_array(src, n)
            dest = None
            if share is None:
                dest = Destination(args.dir, 8)
                top = dest.fresh()
            else:
                top = share[2]
            dst = top / f"dst-{n}.zarr"
            copied, end = marker_to_verified(src, dst, files, args.timeout)
            if diff := differences(src, dst):
                raise SystemExit(f"the copy differs: {diff[:5]}")
            walk = full_verify(src, dst)
            print(f"| {files} | {copied:.1f} | {end:.2f} | {walk:.2f} | {end / walk:.2f} |")
            sys.stdout.flush()
            if dest is not None:
                dest.release()
            else:
                rmtree(dst)
            rmtree(src)
    finally:
        if share is not None:
            sshd, proxy, mnt = share
            subprocess.run(["fusermount", "-u", str(mnt)], check=False)
            proxy.close()
            sshd.kill()
        rmtree(args.dir)


if __name__ == "__main__":
    main()
