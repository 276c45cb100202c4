"""Does the acquisition feel the copy? A loop-mounted ext4 (direct IO to its backing file, so its
IO reaches the disk) stands in for the microscope's disk, under each IO scheduler asked for. A
finished archive lies on it (page cache dropped); a tensorstore writer streams 1 MiB chunks to it as
fast as it can, 8 at a time (fsync per chunk, tensorstore's default). Side by side in one run, per
scheduler (the machine is shared: ratios within a run are what count):

- `alone`: the writer's solo throughput;
- `softcopy`: softcopy with its defaults (the adaptive back-off on) copies the archive to a tmpfs;
- `no back-off`: softcopy `--no-back-off` (idle IO class and nice 19 only, as before the back-off);
- `cp -r`;
- `half alone`, `half softcopy`: the writer held to half its solo rate, alone and beside softcopy
  (does the backlog still shrink, and how fast);
- `solo softcopy`: softcopy with no writer (its unthrottled speed, over a window of `--window` s
  from `--recover-after` s after its start; the bytes the source device served, sampled every 50 ms);
- `writer stops`: the writer stops halfway through softcopy's run; softcopy's speed over the same
  window from `--recover-after` s after the writer's last chunk was complete, against `solo softcopy`.

The writer's throughput is taken over the time the copier runs. As root only.

    python benches/impact.py [--archive-gib 2] [--seconds 12] [--runs 3] [--schedulers none,mq-deadline,kyber]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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
batch, rate = int(sys.argv[4]), float(sys.argv[5])
stamps, t0, i = [], time.monotonic(), 0
end = t0 + seconds
while time.monotonic() < end:
    if rate > 0:  # MiB/s: held to it, as a camera's frame rate holds its stream
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    # `batch` chunks at once: tensorstore writes (and fsyncs) them concurrently, as a camera
    # pipeline with several frames in flight does.
    arr[i : i + batch].write(np.broadcast_to(data, (batch, *data.shape))).result()
    stamps.extend([time.monotonic()] * batch)
    i += batch
print(json.dumps(stamps), flush=True)
"""


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


@dataclass(frozen=True)
class Case:
    copier: str | None
    """"softcopy", "cp -r", or None (the writer alone)."""
    args: tuple[str, ...] = ()
    writer: str = "full"
    """"full" (as fast as it can), "half" (half its solo rate), "none", or "stops" (halfway)."""


CASES = {
    "alone": Case(None),
    "softcopy": Case("softcopy"),
    "no back-off": Case("softcopy", ("--no-back-off",)),
    "cp -r": Case("cp -r"),
    "half alone": Case(None, writer="half"),
    "half softcopy": Case("softcopy", writer="half"),
    "solo softcopy": Case("softcopy", writer="none"),
    "writer stops": Case("softcopy", writer="stops"),
}


@dataclass
class Run:
    writer: float
    """The writer's MiB/s over the copier's run (or the same span alone); 0 without a writer."""
    copier: float
    """The copier's MiB/s over its run."""
    window: float | None
    """The copier's MiB/s over the window (after its start, or after the writer stopped); None
    where the copy ended before the window did (nothing to measure, not a speed of 0)."""


@dataclass
class Setup:
    fs: LoopFs
    base: Path
    archive: Path
    seconds: float
    warmup: float
    batch: int
    half: float
    """Half the writer's solo MiB/s (0 until measured)."""
    recover_after: float
    window: float


def start_writer(s: Setup, case: Case) -> subprocess.Popen[str] | None:
    if case.writer == "none":
        return None
    seconds = s.warmup + (s.seconds - s.warmup) / 2 if case.writer == "stops" else s.seconds
    rate = s.half if case.writer == "half" else 0.0
    args = [str(s.fs.mount / "stream.zarr"), str(seconds), str(BENCHES), str(s.batch), str(rate)]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    return writer


class DeviceReads:
    """The source device's read counter, sampled every 50 ms from a thread while a run lasts: what
    the copier reads from the disk (the writer only writes), so a window can be taken after the fact
    from the writer's own last chunk, not from when the bench asked it to stop."""

    def __init__(self, device: str) -> None:
        self.stat = Path(f"/sys/block/{device}/stat")
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), int(self.stat.read_text().split()[2]) * 512))
            self.done.wait(0.05)

    def close(self) -> None:
        self.done.set()
        self.thread.join()

    def mib_s(self, t0: float, seconds: float) -> float | None:
        """MiB/s read over [t0, t0 + seconds] (the samples nearest inside it); None where the run ended
        before the window did."""
        inside = [(t, b) for t, b in self.samples if t0 <= t <= t0 + seconds + 0.05]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < seconds * 0.9:
            return None
        (ta, ba), (tb, bb) = inside[0], inside[-1]
        return (bb - ba) / 2**20 / (tb - ta)


def one_run(s: Setup, case: Case) -> Run:
    rmtree(s.fs.mount / "stream.zarr")
    dst = s.base / "tmpfs" / "copy.zarr"
    rmtree(dst)
    drop_caches()
    writer = start_writer(s, case)
    time.sleep(s.warmup if writer else 0.0)  # the writer reaches its steady rate before the copier starts
    start = time.monotonic()
    end = start + s.seconds - s.warmup - 1.0
    proc = None
    reads = DeviceReads(s.fs.name)
    if case.copier == "softcopy":
        cmd = [sys.executable, "-m", "softcopy", str(s.archive), str(dst), "--quiet", *SOFTCOPY_ARGS, *case.args]
        proc = subprocess.Popen(cmd)
    elif case.copier == "cp -r":
        proc = subprocess.Popen(["cp", "-r", str(s.archive), str(dst)])
    while time.monotonic() < end and (proc is None or proc.poll() is None):
        time.sleep(0.02)
    end = min(end, time.monotonic())
    # The copier's last reads are in the window or not at all: the counter stops before it does.
    reads.close()
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    if proc:
        proc.wait(60)
    copied = tree_bytes(dst) if proc else 0
    span = max(1e-9, end - start)
    if writer is None:
        return Run(0.0, copied / 2**20 / span, reads.mib_s(start + s.recover_after, s.window))
    assert writer.stdout is not None
    stamps = json.loads(writer.stdout.readline())
    writer.wait(60)
    chunks = sum(1 for t in stamps if start <= t <= end)
    # After the writer's last chunk was complete (its clock is this one: CLOCK_MONOTONIC is the system's).
    window = reads.mib_s(max(stamps) + s.recover_after, s.window) if case.writer == "stops" and stamps else None
    return Run(chunks / span, copied / 2**20 / span, window)


def one_scheduler(s: Setup, scheduler: str, runs: int, cases: list[str]) -> dict[str, list[Run]]:
    """Every case `runs` times, interleaved, under `scheduler`; says each run as it ends."""
    knob = Path(f"/sys/block/{s.fs.name}/queue/scheduler")
    offered = knob.read_text().replace("[", "").replace("]", "").split()
    if scheduler not in offered:
        print(f"scheduler {scheduler} is not offered by this kernel ({' '.join(offered)}): skipped")
        return {}
    knob.write_text(scheduler)
    print(f"disk: ext4 on {s.fs.device} (direct IO), scheduler {knob.read_text().strip()}", flush=True)
    results: dict[str, list[Run]] = {}
    for _ in range(runs):
        for name in cases:
            if name.startswith("half") and s.half == 0:
                # Half of this run's solo rate (the machine's speed drifts between runs).
                s.half = statistics.median(r.writer for r in results["alone"]) / 2
            r = one_run(s, CASES[name])
            results.setdefault(name, []).append(r)
            shown = "copy over first" if r.window is None else f"{r.window:7.1f} MiB/s"
            extra = f", window {shown}" if CASES[name].writer in ("none", "stops") else ""
            print(f"writer {r.writer:7.1f} MiB/s  {name:<14} copier {r.copier:7.1f} MiB/s{extra}", flush=True)
        s.half = 0.0
    return results


def say(scheduler: str, results: dict[str, list[Run]]) -> None:
    """The medians, as shares of the writer's solo rate and of softcopy's solo speed."""

    def med(name: str, what: str) -> float:
        """The median over the runs that measured it (0 where none did)."""
        values = [v for r in results.get(name, []) if (v := getattr(r, what)) is not None]
        return statistics.median(values) if values else 0.0

    solo = med("alone", "writer")
    for name in ("softcopy", "no back-off", "cp -r"):
        if name in results:
            w, c = med(name, "writer"), med(name, "copier")
            print(
                f"{scheduler:<12} with {name:<12}: writer keeps {100 * w / solo:.0f} % of its solo {solo:.0f} MiB/s; copier {c:.0f} MiB/s"
            )
    if "half softcopy" in results and "half alone" in results:
        half, w, c = med("half alone", "writer"), med("half softcopy", "writer"), med("half softcopy", "copier")
        print(
            f"{scheduler:<12} writer at half ({half:.0f} MiB/s): keeps {100 * w / max(half, 1e-9):.0f} %; softcopy copies {c:.0f} MiB/s"
        )
    if "writer stops" in results and "solo softcopy" in results:
        free, after = med("solo softcopy", "window"), med("writer stops", "window")
        print(
            f"{scheduler:<12} writer stopped: softcopy copies {after:.0f} MiB/s, {100 * after / max(free, 1e-9):.0f} % of its solo {free:.0f} MiB/s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive-gib", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=12.0, help="how long the writer streams per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--schedulers", default="none,mq-deadline,kyber,bfq", help="each one offered, in turn")
    ap.add_argument("--batch", type=int, default=8, help="chunks the writer has in flight at once")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-impact"))
    ap.add_argument("--softcopy-args", default="", help="extra softcopy options, e.g. '--nprocs 2'")
    ap.add_argument("--cases", default=",".join(CASES), help=f"some of: {', '.join(CASES)}")
    ap.add_argument("--recover-after", type=float, default=1.0, help="seconds before the window starts")
    ap.add_argument("--window", type=float, default=1.0, help="seconds over which the copier's speed is taken")
    args = ap.parse_args()
    SOFTCOPY_ARGS.extend(args.softcopy_args.split())
    cases = args.cases.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        raise SystemExit(f"unknown cases {unknown}: choose among {', '.join(CASES)}")
    if any(c.startswith("half") for c in cases) and "alone" not in cases:
        raise SystemExit("the half cases need the 'alone' case (half of its rate)")
    if os.geteuid() != 0:
        raise SystemExit("impact.py needs root (loop devices, tmpfs, dropping caches)")
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    size_gib = int(args.archive_gib * 2 + args.seconds) + 4  # room for ~1 GiB/s of writing (sparse)
    fs = LoopFs(args.dir / "disk.img", args.dir / "disk", size_gib, direct=True)
    tmpfs = args.dir / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(args.archive_gib) + 2}g", "tmpfs", str(tmpfs)], check=True
    )
    try:
        archive = fs.mount / "archive.zarr"
        write_archive(archive, int(args.archive_gib * 1024), 1 << 20)
        print(f"machine: {machine()}")
        print(f"archive {args.archive_gib:g} GiB; writer {args.batch} chunks of 1 MiB in flight, fsync each")
        s = Setup(fs, args.dir, archive, args.seconds, args.warmup, args.batch, 0.0, args.recover_after, args.window)
        # One untimed pass first: the first writes into the sparse disk image make the host allocate
        # its blocks, which slowed whichever case ran first by a quarter.
        one_run(s, CASES["alone"])
        every = {sched: one_scheduler(s, sched, args.runs, cases) for sched in args.schedulers.split(",")}
        for sched, results in every.items():
            if results:
                say(sched, results)
    finally:
        subprocess.run(["umount", str(tmpfs)], check=False)
        fs.close()
        rmtree(args.dir)


if __name__ == "__main__":
    main()
