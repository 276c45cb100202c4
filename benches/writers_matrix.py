"""Every writer and layout the tests cover, measured live: softcopy starts before the source exists,
the real writer runs in its own process, and after the marker this prints, per case, the files at
the destination, copies per file (mean and max; 1.0 means no redundant copy), and the lag from each
file's completion at the source (its mtime: the writer's last write) to its arrival at the
destination (the ctime of our copy: set by our rename into place), median and max.

    python benches/writers_matrix.py [--timepoints 20] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import softcopy

W = Path(__file__).resolve().parent.parent / "tests" / "writers"


def cases(n: int, dt: float) -> dict[str, list[str]]:
    ts, zp, aq = str(W / "ts_writer.py"), str(W / "zarr_writer.py"), str(W / "aqz_writer.py")
    out: dict[str, list[str]] = {}
    for layout in ("v2dot", "v2slash", "zarr3", "zarr3sharded"):
        out[f"tensorstore {layout}"] = [ts, layout, str(n), str(dt)]
    for mode in ("lockfile", "none", "non_atomic"):
        out[f"tensorstore zarr3 {mode}"] = [ts, "zarr3", str(n), str(dt), "--locking", mode]
    out["tensorstore zarr3 os, no fsync"] = [ts, "zarr3", str(n), str(dt), "--no-sync"]
    for layout, fmt in (("plain", 2), ("plain", 3), ("sharded", 3), ("ome", 2), ("ome", 3), ("plate", 3)):
        out[f"zarr-python {layout} v{fmt}"] = [zp, layout, str(fmt), str(n), str(dt)]
    out["acquire-zarr plain"] = [aq, "plain", str(n), str(dt)]
    out["acquire-zarr multiscale"] = [aq, "multiscale", str(n), str(dt)]
    return out


def run(writer: list[str]) -> str:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        src, dst = Path(tmp, "acq", "data.zarr"), Path(tmp, "cluster", "data.zarr")
        src.parent.mkdir()
        copier = softcopy.Copier([softcopy.Target(src, dst)])
        copier.start()
        subprocess.run([sys.executable, writer[0], str(src), *writer[1:]], check=True)
        report = copier.wait(120)
        assert report is not None and report.ok, report
        t = report.targets[0]
        lags = []
        for p in src.rglob("*"):
            if p.is_file() and p.name != "complete" and not p.name.endswith((".__lock", ".partial")):
                lags.append((os.stat(dst / p.relative_to(src)).st_ctime_ns - p.stat().st_mtime_ns) / 1e6)
        mean = t.files_copied / max(1, t.files_distinct)
        return f"| {t.files_checked} | {mean:.2f} | {t.max_copies} | {statistics.median(lags):.1f} | {max(lags):.1f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timepoints", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.05)
    args = ap.parse_args()
    print("| writer, layout | files | copies per file, mean | max | lag ms, median | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, writer in cases(args.timepoints, args.interval).items():
        print(f"| {name} {run(writer)}", flush=True)


if __name__ == "__main__":
    main()
