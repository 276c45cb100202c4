"""Memory over a long acquisition and over a finished archive: softcopy's peak RSS while it copies
an archive written live (form `live`), with settled files let go from memory (the default:
docs/design.md, "Memory") and with every file kept (as before issue 13), and while it copies a
finished archive at once (form `oneshot`: `softcopy SRC DST --once`, the initial walk paced by the
copy), side by side, at several archive sizes and two layouts (folders of 1000 files, as Zarr v2
with `/` keys; folders of 10, as a v3 tree with a folder per (t, z, y)). Constant memory means the
RSS column does not grow with the file count.

The writer is tensorstore (Zarr v2, `/` keys, 64-byte chunks, 1000 per folder, 5 rows at a time,
paced at `--rate` files per second, no fsync), started after softcopy. The finished archive is
written once by a plain loop (64-byte files, `c/<t>/<k>` or `c/<t>/<y>/<k>`) into an image kept in
`--trees` and reused by later runs (a 10^7-file tree takes minutes to make). The source and the
destination are ext4 loop filesystems with `inline_data` (a 64-byte file lives in its inode), so
10^6-10^7 files stay affordable. Every copy is checked file by file; the run must end verified.
Peak RSS is the whole softcopy process's (GNU time), Python included. `--baseline DIR` runs
another build beside this one (DIR is its `python/` folder, put first on PYTHONPATH).

    python benches/memory.py [--files 100000 --files 1000000] [--per-folder 1000 --per-folder 10]
        [--forms oneshot,live] [--evict-after 5] [--rate 4000] [--baseline /tmp/old/python]
"""

from __future__ import annotations

import argparse
import os
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
root, files, rate, per_folder = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rows = max(1, files // 1000)
# 1000 chunks per row: one folder of 1000 (`t/x`), or 100 folders of 10 (`t/y/x`).
shape, chunks = ([rows, 1000 * 32], [1, 32]) if per_folder == 1000 else ([rows, 100, 320], [1, 1, 32])
arr = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": root},
    "metadata": {"chunks": chunks, "compressor": None, "dimension_separator": "/"}},
    create=True, dtype=ts.uint16, shape=shape,
    context=ts.Context({"file_io_sync": False})).result()
rng = np.random.default_rng(1)
t0 = time.monotonic()
for t in range(0, rows, 5):
    n = min(5, rows - t)
    arr[t : t + n].write(rng.integers(1, 65535, size=(n, *shape[1:]), dtype=np.uint16)).result()
    # Paced like a camera: the next rows are due at their time, not as fast as the disk allows.
    if rate > 0:
        time.sleep(max(0.0, t0 + (t + n) * 1000 / rate - time.monotonic()))
open(root + "/complete", "w").close()
"""


def inline_fs(image: Path, mount: Path, files: int, fresh: bool = True) -> LoopFs:
    """An ext4 with an inode per 2 KiB and inline data, big enough for `files` tiny files (a fresh
    one, or the one already in `image`)."""
    size_gib = max(1, files * 2048 * 3 // 2 // 2**30 + 1)
    return LoopFs(image, mount, size_gib, mkfs=("-I", "512", "-i", "2048", "-O", "inline_data"), fresh=fresh)


def write_tree(root: Path, files: int, per_folder: int) -> None:
    """A finished archive of `files` 64-byte files, `per_folder` to a folder (1000: `c/t/k`; 10:
    `c/t/y/k`, 1000 folders of 10 under each `t`)."""
    root.mkdir()
    (root / "zarr.json").write_text("{}")
    data = os.urandom(64)
    folder = root
    for i in range(files):
        if i % per_folder == 0:
            parts = (i // 1000, i % 1000) if per_folder == 1000 else (i // 10000, i // 10 % 1000)
            folder = root.joinpath("c", *(str(p) for p in parts[: 1 if per_folder == 1000 else 2]))
            folder.mkdir(parents=True)
        fd = os.open(folder / str(i % per_folder), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)


def kept_tree(trees: Path, files: int, per_folder: int) -> LoopFs:
    """The finished archive's filesystem, mounted: made on first use, then reused."""
    trees.mkdir(parents=True, exist_ok=True)
    image, mount = trees / f"tree-{files}-{per_folder}.img", trees / f"mnt-{files}-{per_folder}"
    made = image.exists() and (trees / f"{image.name}.done").exists()
    fs = inline_fs(image, mount, files, fresh=not made)
    if not made:
        rmtree(mount / "a.zarr")
        write_tree(mount / "a.zarr", files, per_folder)
        subprocess.run(["sync"], check=True)
        (trees / f"{image.name}.done").touch()
    return fs


def env_for(build: Path | None) -> dict[str, str]:
    """The environment that makes `python -m softcopy` the build in `build` (None: this checkout's)."""
    return {**os.environ, "PYTHONPATH": str(build or Path(__file__).resolve().parent.parent / "python")}


def oneshot(workdir: Path, tree: Path, files: int, build: Path | None) -> Measured:
    """Copies the finished archive at `tree` to a fresh filesystem at once (`--once`)."""
    dst_fs = inline_fs(workdir / "dst.img", workdir / "dst", files)
    try:
        dst = dst_fs.mount / "a.zarr"
        cmd = [sys.executable, "-m", "softcopy", str(tree), str(dst), "--once", "--quiet"]
        m = Running(cmd, env=env_for(build)).wait()
        if not identical(tree, dst):
            raise SystemExit("softcopy (one-shot): the copy differs from the source")
        return m
    finally:
        dst_fs.close()


def live(
    workdir: Path, files: int, per_folder: int, evict: str, rate: float, build: Path | None
) -> tuple[Measured, float]:
    """Copies a live archive of `files` chunks; returns softcopy's measure and the writer's seconds."""
    src_fs = inline_fs(workdir / "src.img", workdir / "src", files)
    dst_fs = inline_fs(workdir / "dst.img", workdir / "dst", files)
    try:
        src, dst = src_fs.mount / "a.zarr", dst_fs.mount / "a.zarr"
        # The copier waits for the source; the writer makes it.
        run = Running([sys.executable, "-c", DRIVER, str(src), str(dst), evict], env=env_for(build))
        t0 = time.perf_counter()
        writer = [sys.executable, "-c", WRITER, str(src), str(files), str(rate), str(per_folder)]
        subprocess.run(writer, check=True)
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
    ap.add_argument("--per-folder", type=int, action="append", choices=[10, 1000], help="layouts (default both)")
    ap.add_argument("--forms", default="oneshot,live", help="oneshot (a finished archive), live, or both")
    ap.add_argument("--evict-after", default="30", help="seconds a copied file stays quiet before it settles")
    ap.add_argument("--rate", type=float, default=4000, help="files per second the writer makes (0: flat out)")
    ap.add_argument("--modes", default="settled,all", help="live: settled (let go from memory), all (kept), or both")
    ap.add_argument("--baseline", type=Path, help="another build's python/ folder, run beside this one")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-memory"))
    ap.add_argument(
        "--trees", type=Path, default=Path("/var/tmp/softcopy-memory-trees"), help="finished archives, kept"
    )
    args = ap.parse_args()
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    builds: list[tuple[str, Path | None]] = [("", None)] + ([("before ", args.baseline)] if args.baseline else [])
    print(f"machine: {machine()}")
    print("files      per folder  softcopy                              wall s  CPU s  peak RSS MiB  writer s")
    forms = args.forms.split(",")
    for files in args.files or [100_000, 1_000_000]:
        for per in args.per_folder or [1000, 10]:
            if "oneshot" in forms:
                tree = kept_tree(args.trees, files, per)
                try:
                    for name, build in builds:
                        m = oneshot(args.dir, tree.mount / "a.zarr", files, build)
                        label = f"{name}one-shot (finished archive)"
                        print(
                            f"{files:<10d} {per:<11d} {label:<37} {m.wall:6.1f} {m.cpu:6.1f} {m.rss_mib:13.0f}",
                            flush=True,
                        )
                finally:
                    tree.close(keep=True)
            if "live" not in forms:
                continue
            modes = {
                "settled": (f"settled out ({args.evict_after} s)", args.evict_after),
                "all": ("all in memory", "never"),
            }
            for name, build in builds:
                for label, evict in (modes[m] for m in args.modes.split(",")):
                    m, wrote = live(args.dir, files, per, evict, args.rate, build)
                    label = f"{name}live, {label}"
                    print(
                        f"{files:<10d} {per:<11d} {label:<37} {m.wall:6.1f} {m.cpu:6.1f} {m.rss_mib:13.0f} {wrote:9.1f}",
                        flush=True,
                    )
    rmtree(args.dir)


if __name__ == "__main__":
    main()
