"""A live acquisition: tensorstore writes a Zarr v2 archive (flat `.` keys, 1 MiB chunks, its
`lockfile` locking mode, which the original softcopy follows) at a set rate while a copier runs
from the start. Source and destination are fresh ext4 filesystems on loop devices (as root), so the
bytes the copier read from the source *device* are counted exactly (/sys/block/loopN/stat): data
copied while still in the page cache costs no device read.

One inotify reader watches both trees: a chunk completes at the source when tensorstore renames it
into place, and arrives when its last event at the destination (link, rename or close) is seen.
Per run: the copier's start (its copy of `.zarray` arrived), lag p50/p99/max, drain (last arrival
and the copier's exit after the `complete` marker), CPU (user+sys of the process tree), peak RSS,
bytes read from the source device / bytes copied. Every copy is checked byte for byte. The writer
starts with the copier, so the copier's own start is in the first chunks' lag; with
`--writer-after-ready` it starts once `.zarray` was copied, as when the copier was started before
the acquisition.

With `--ssh-rtt MS` (repeatable), softcopy also copies to the ssh destination `root@127.0.0.1:<dst>`
at each round trip: a real sshd on loopback (`_share.py`) behind the delay proxy (`_delay.py`), its
rows beside the local one in the same run. The server writes into the same local destination
folder, renaming each copy into place, so the same inotify reader sees it arrive (a copy counts as
arrived when named, as locally; its durability on the server is softcopy's `sync -f`, which the
drain includes). Its CPU column is softcopy's tree, ssh client included; the server's side (the
sshd sessions) and the proxy's are reported apart, as is what one bulk ssh stream carries through
the proxy: the ceiling any ssh copier meets at that round trip.

    python benches/live.py [--timepoints 1000] [--chunk-kib 1024] [--rate-mib 100] [--runs 3]
    python benches/live.py --rate-mib 0          # the writer flat out
    python benches/live.py --rate-mib 200 --no-back-off-too --no-original   # the back-off on and off
    python benches/live.py --no-original --ssh-rtt 2   # beside it, the ssh destination at 2 ms
    python benches/live.py --no-original --ssh-rtt 2 --writer-after-ready   # their start left out
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import LoopFs, Measured, Running, differences, machine, open_array, original_softcopy, percentile, rmtree
from _inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO, Inotify
from _share import Sshd, TreeCpu

SOFTCOPY = [sys.executable, "-m", "softcopy"]


@dataclass
class Copier:
    cmd_for: Callable[[Path, Path], list[str]]
    """Its command, copying the source to the destination folder."""
    beside: dict[str, int] = field(default_factory=dict)
    """Processes outside its tree whose CPU its rows report apart, by label: the ssh server's."""


@dataclass
class Result:
    lags_ms: list[float]
    arrived_after_marker_s: float
    exited_after_marker_s: float
    measured: Measured
    device_read: int
    copied: int
    writer_mib_s: float
    beside_cpu: dict[str, float]
    ready_s: float | None
    """From the copier's start to its copy of `.zarray` (None: not seen)."""


@dataclass
class Shape:
    """The acquisition each run writes."""

    timepoints: int
    chunk_bytes: int
    rate: float
    """Bytes/s; 0: flat out."""
    after_ready: bool
    """The writer starts only once the copier's copy of `.zarray` arrived: as when the copier was
    started before the acquisition, so its own start (ssh's connections) is not in the lag."""


READY_WITHIN_S = 60


def write(arr: Any, timepoints: int, chunk_bytes: int, rate: float) -> None:
    import numpy as np

    data = np.random.default_rng(2).integers(0, 65535, size=arr.shape[1:], dtype=np.uint16)
    t0 = time.monotonic()
    for t in range(timepoints):
        arr[t].write(data).result()
        if rate > 0:
            # Pace to the target rate without drifting: sleep until this chunk's slot.
            delay = t0 + (t + 1) * chunk_bytes / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


class Arrivals:
    """One inotify reader on both trees, on a thread of its own: when each chunk was completed at
    the source (renamed into place) and when it arrived at the destination (its last event there),
    and when the copy of the archive's metadata (`.zarray`, the first file the writer made)
    arrived: the copier is then up and copying."""

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.ino = Inotify()
        self.ino.watch(str(src), IN_MOVED_TO)
        self.ino.watch(str(dst), IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE)
        self.done_at: dict[str, float] = {}
        self.arrived_at: dict[str, float] = {}
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        while not self.stopping.is_set():
            for when, d, name, _mask in self.ino.read():
                if d == str(self.dst) and name == ".zarray" and not self.ready.is_set():
                    self.ready_at = when
                    self.ready.set()
                if name.startswith(".") or name == "complete":
                    continue
                if d == str(self.src):
                    self.done_at.setdefault(name, when)
                else:
                    self.arrived_at[name] = when  # the last event: the copy is whole by then

    def stop(self) -> None:
        self.stopping.set()
        (self.dst / ".wake").touch()  # one more event, so the reader thread returns from read()
        self.thread.join(5)
        (self.dst / ".wake").unlink()
        self.ino.close()

    def lags_ms(self) -> list[float]:
        """Each chunk's lag, sorted; every chunk completed must have arrived."""
        missing = sorted(set(self.done_at) - set(self.arrived_at))
        if missing:
            raise SystemExit(f"never seen arriving: {missing[:5]}")
        return sorted((self.arrived_at[n] - t) * 1000 for n, t in self.done_at.items())


def one_run(base: Path, copier: Copier, shape: Shape) -> Result:
    rmtree(base)
    base.mkdir(parents=True)
    size_gib = (2 * shape.timepoints * shape.chunk_bytes >> 30) + 2
    loop = os.geteuid() == 0
    src_fs = LoopFs(base / "src.img", base / "src-mnt", size_gib) if loop else None
    dst_fs = LoopFs(base / "dst.img", base / "dst-mnt", size_gib) if loop else None
    try:
        src = (src_fs.mount if src_fs else base) / "src.zarr"
        dst = (dst_fs.mount if dst_fs else base) / "dst.zarr"
        # The metadata first: the original softcopy reads it when it starts.
        arr = open_array(src, shape.timepoints, shape.chunk_bytes, locking="lockfile")
        dst.mkdir()
        seen = Arrivals(src, dst)
        read_before = src_fs.bytes_read() if src_fs else 0
        beside = {label: TreeCpu(pid) for label, pid in copier.beside.items()}
        running = Running(copier.cmd_for(src, dst))
        started = time.monotonic()
        if shape.after_ready and not seen.ready.wait(READY_WITHIN_S):
            raise SystemExit(f"{copier.cmd_for(src, dst)[:3]}: no copy of .zarray within {READY_WITHIN_S} s")
        t0 = time.monotonic()
        write(arr, shape.timepoints, shape.chunk_bytes, shape.rate)
        writer_mib_s = shape.timepoints * shape.chunk_bytes / 2**20 / (time.monotonic() - t0)
        (src / "complete").touch()
        marker_at = time.monotonic()
        measured = running.wait()
        exited = time.monotonic()
        beside_cpu = {label: cpu.total() for label, cpu in beside.items()}
        device_read = (src_fs.bytes_read() if src_fs else 0) - read_before
        seen.stop()
        # The original softcopy does not always copy the `complete` marker itself: not data.
        diff = [d for d in differences(src, dst) if d != "only in source: complete"]
        if diff:
            raise SystemExit(f"the copy differs from the source: {'; '.join(diff[:5])}")
        return Result(
            seen.lags_ms(),
            max(0.0, max(seen.arrived_at.values()) - marker_at),
            exited - marker_at,
            measured,
            device_read,
            sum(p.stat().st_size for p in dst.iterdir() if p.is_file()),
            writer_mib_s,
            beside_cpu,
            seen.ready_at - started if seen.ready.is_set() else None,
        )
    finally:
        for fs in (dst_fs, src_fs):
            if fs:
                fs.close()
        rmtree(base)


def over_ssh(rtts: list[float], stream_mib: int, stack: contextlib.ExitStack) -> dict[str, Copier]:
    """softcopy to `root@127.0.0.1:<dst>` through one sshd on loopback, behind a delay proxy per
    round trip; each proxy's one-stream ceiling printed. Everything started is stopped by `stack`."""
    from network import Proxy, one_stream

    sshd = Sshd(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="softcopy-live-sshd-"))), quiet=True)
    sshd.start()
    stack.callback(sshd.kill)
    assert sshd.proc is not None
    out = {}
    for rtt in rtts:
        proxy = Proxy(sshd.port, rtt)
        stack.callback(proxy.close)
        ssh = " ".join(["ssh", "-p", str(proxy.port), "-o", "BatchMode=yes", *sshd.ssh_options()])
        stream = one_stream(sshd, proxy.port, stream_mib)
        print(f"over ssh, {rtt:g} ms: one ssh stream {stream:.0f} MiB/s through the proxy ({stream_mib} MiB)")

        def cmd(s: Path, d: Path, ssh: str = ssh) -> list[str]:
            return [*SOFTCOPY, str(s), f"root@127.0.0.1:{d}", "--quiet", "--ssh-command", ssh]

        out[f"softcopy over ssh, {rtt:g} ms"] = Copier(cmd, {"sshd": sshd.proc.pid, "proxy": proxy.proc.pid})
    return out


def local_copiers(args: argparse.Namespace) -> dict[str, Copier]:
    copiers = {"softcopy": Copier(lambda s, d: [*SOFTCOPY, str(s), str(d), "--quiet"])}
    if args.no_back_off_too:
        copiers["--no-back-off"] = Copier(lambda s, d: [*SOFTCOPY, str(s), str(d), "--quiet", "--no-back-off"])
    original = None if args.no_original else original_softcopy()
    if original:
        copiers["softcopy 0.0.13"] = Copier(
            lambda s, d: [str(original), str(s), str(d), "--nprocs", "8", "--sleep-time", "0"]
        )
    return copiers


def report_run(name: str, r: Result) -> None:
    ms = r.lags_ms
    beside = "".join(f", {label} {cpu:.2f} s" for label, cpu in r.beside_cpu.items())
    ready = "-" if r.ready_s is None else f"{r.ready_s * 1000:.0f}"
    print(
        f"{name:<24} writer {r.writer_mib_s:6.0f} MiB/s; .zarray copied {ready:>5} ms after start; lag ms p50 {statistics.median(ms):7.1f} "
        f"p99 {percentile(ms, 0.99):7.1f} max {ms[-1]:7.1f}; drain: last arrival "
        f"{r.arrived_after_marker_s * 1000:5.0f} ms, exit {r.exited_after_marker_s * 1000:5.0f} ms "
        f"after the marker; CPU {r.measured.cpu:5.2f} s{beside}, RSS {r.measured.rss_mib:4.0f} MiB; "
        f"source device read {r.device_read / 2**20:.1f} MiB = {100 * r.device_read / r.copied:.1f} % "
        f"of {r.copied / 2**20:.0f} MiB copied",
        flush=True,
    )


def report_medians(results: dict[str, list[Result]]) -> None:
    print("medians over runs:")
    for name, rs in results.items():
        lags = sorted(x for r in rs for x in r.lags_ms)
        beside = "".join(
            f", {label} {statistics.median(r.beside_cpu[label] for r in rs):.2f} s" for label in rs[0].beside_cpu
        )
        print(
            f"{name:<24} lag ms p50 {statistics.median(lags):.1f}, p99 {percentile(lags, 0.99):.1f}, max {lags[-1]:.1f}"
            f"; exit after marker {statistics.median(r.exited_after_marker_s for r in rs) * 1000:.0f} ms"
            f"; CPU {statistics.median(r.measured.cpu for r in rs):.2f} s{beside}"
            f"; RSS {max(r.measured.rss_mib for r in rs):.0f} MiB"
            f"; device read {statistics.median(100 * r.device_read / r.copied for r in rs):.1f} % of copied"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timepoints", type=int, default=1000)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--rate-mib", type=float, default=100.0, help="writer rate in MiB/s (0: flat out)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-live"))
    ap.add_argument("--no-original", action="store_true", help="leave out the original softcopy 0.0.13")
    ap.add_argument("--no-back-off-too", action="store_true", help="add softcopy --no-back-off beside the default")
    ap.add_argument("--ssh-rtt", type=float, action="append", default=[], help="also over ssh at this round trip (ms)")
    ap.add_argument(
        "--writer-after-ready",
        action="store_true",
        help="start writing only once the copier's copy of .zarray arrived (its start not in the lag)",
    )
    args = ap.parse_args()
    shape = Shape(args.timepoints, args.chunk_kib * 1024, args.rate_mib * 2**20, args.writer_after_ready)
    rate = "flat out" if args.rate_mib <= 0 else f"{args.rate_mib:g} MiB/s"
    print(f"machine: {machine()}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    after = ", from the copier's copy of .zarray on" if args.writer_after_ready else ", from the copier's start on"
    print(f"writer: tensorstore, {args.timepoints} chunks of {args.chunk_kib} KiB, {rate}, lockfile mode{after}")
    with contextlib.ExitStack() as stack:
        copiers = local_copiers(args)
        if args.ssh_rtt:
            # The ceiling measured with as many bytes as a run copies (256 MiB at most).
            stream_mib = max(8, min(256, args.timepoints * args.chunk_kib >> 10))
            copiers |= over_ssh(args.ssh_rtt, stream_mib, stack)
        results: dict[str, list[Result]] = {}
        for _ in range(args.runs):
            for name, copier in copiers.items():
                r = one_run(args.dir, copier, shape)
                results.setdefault(name, []).append(r)
                report_run(name, r)
    report_medians(results)


if __name__ == "__main__":
    main()
