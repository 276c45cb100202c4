"""Bandwidth budgets: `--max-rate` per target and `--max-total-rate` for all, held while files are
copied. (How closely the rate holds is measured in benches/; here, that the budget is enforced.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import softcopy
from conftest import assert_same_tree, finish, softcopy_cmd, wait_for
from softcopy.config import ConfigError, parse_rate

MIB = 1 << 20


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("200M", 200 * MIB),
        ("1.5G", 3 << 29),
        ("500K", 500 << 10),
        ("200MiB/s", 200 * MIB),
        ("64MB", 64 * MIB),
        (1000, 1000),
        ("4096", 4096),
    ],
)
def test_rates(text: object, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-5M", "", True, "1Q"])
def test_bad_rates(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)


def source(root: Path, files: int, size: int) -> None:
    root.mkdir(parents=True)
    for i in range(files):
        (root / str(i)).write_bytes(bytes([i]) * size)


def test_max_rate_holds_a_target_to_its_budget(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    source(src, 1, 6 * MIB)  # one file: the budget must hold *within* a file, not only between files
    t0 = time.monotonic()
    r = subprocess.run(
        softcopy_cmd(src, dst, "--once", "--max-rate", "2M"), check=False, capture_output=True, text=True
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed >= 2.5, f"6 MiB at 2 MiB/s took only {elapsed:.2f} s"  # ~3 s, minus the first step
    assert_same_tree(src, dst)


def test_max_total_rate_is_shared_by_all_targets(tmp_path: Path) -> None:
    for name in ("a", "b"):
        source(tmp_path / name, 4, MIB)
    targets = [softcopy.Target(tmp_path / n, tmp_path / f"{n}-copy", once=True) for n in ("a", "b")]
    t0 = time.monotonic()
    with softcopy.Copier(targets, max_total_rate=4 * MIB) as c:
        report = c.wait(60)
    elapsed = time.monotonic() - t0
    assert report is not None and report.ok
    assert elapsed >= 1.5, f"8 MiB at 4 MiB/s in all took only {elapsed:.2f} s"


def test_bad_rate_on_the_command_line_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    cmd = softcopy_cmd(tmp_path / "src", tmp_path / "dst", "--max-rate", "fast")
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 2 and "not a rate" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "1e400", "1e30G", float("inf"), float("nan")])
def test_rates_that_are_not_finite_are_bad_input(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)


@pytest.mark.parametrize(
    "args",
    [("--max-rate", "inf"), ("--max-rate", "nan"), ("--max-total-rate", "1e400"), ("--max-total-rate", "inf")],
)
def test_a_rate_that_is_not_finite_is_one_line_exit_2(tmp_path: Path, args: tuple[str, str]) -> None:
    (tmp_path / "src").mkdir()
    r = subprocess.run(
        softcopy_cmd(tmp_path / "src", tmp_path / "dst", "--once", *args),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "dst").exists()


def test_an_infinite_rate_in_a_targets_file_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "t.yaml").write_text("targets:\n  - source: src\n    destination: dst\n    max_rate: .inf\n")
    r = subprocess.run(softcopy_cmd(tmp_path / "t.yaml"), check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "max_rate" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_max_total_rate_is_one_budget_for_every_acquisition_of_a_service(tmp_path: Path, run_softcopy: Any) -> None:
    acq, dst, later = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "later"
    dst.mkdir()
    later.mkdir()
    for root in (acq / "a.zarr", later / "b.zarr"):
        source(root, 8, MIB)
        (root / "complete").write_bytes(b"")
    service = run_softcopy(acq / "*.zarr", dst, "--max-total-rate", "2M", "--report", tmp_path / "{name}.json")
    # The second acquisition comes while the first is being copied (an engine started later must
    # not give itself, or the first, a budget of its own).
    wait_for(lambda: (dst / "a.zarr").is_dir() and any((dst / "a.zarr").iterdir()), 60, "a.zarr's copy to start")
    (later / "b.zarr").rename(acq / "b.zarr")
    reports = [tmp_path / "a.zarr.json", tmp_path / "b.zarr.json"]
    wait_for(lambda: all(r.exists() for r in reports), 90, "both acquisitions to end")
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143
    docs = [json.loads(r.read_text())["targets"][0] for r in reports]
    assert all(d["verified"] for d in docs), docs
    # 16 MiB at 2 MiB/s in all: a.zarr's copy, sharing the budget with b.zarr's, takes ~8 s (~4 s
    # with a budget for each).
    assert docs[0]["duration_s"] >= 6.0, [d["duration_s"] for d in docs]


@contextmanager
def loop_ext4(tmp_path: Path, size_mib: int) -> Iterator[Path]:
    """A fresh ext4 on a loop device with direct IO to its image (its reads and writes reach the
    disk under it), mounted; unmounted and detached whatever happens."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 for a loop-mounted ext4")
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    with image.open("wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    made = subprocess.run(
        ["losetup", "--find", "--show", "--direct-io=on", str(image)], check=True, capture_output=True
    )
    device = made.stdout.decode().strip()
    mnt.mkdir()
    try:
        subprocess.run(["mount", device, str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def cold_backlog(root: Path, files: int) -> None:
    """`files` files of 1 MiB, flushed and dropped from the page cache (these files only: nothing
    kernel-wide), so copying them reads the disk."""
    root.mkdir()
    block = os.urandom(MIB)
    for i in range(files):
        with (root / f"{i}").open("wb") as f:
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class Writer:
    """An acquisition's writer: threads writing 1 MiB files with fsync into `root`, until stopped."""

    def __init__(self, root: Path, threads: int = 4) -> None:
        root.mkdir()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(root / f"w{k}",)) for k in range(threads)]
        for t in self.threads:
            t.start()

    def _write(self, folder: Path) -> None:
        folder.mkdir()
        block, i = os.urandom(MIB), 0
        while not self.stopped.is_set():
            with (folder / f"{i % 64}").open("wb") as f:
                f.write(block)
                os.fsync(f.fileno())
            i += 1

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join()


def back_off_seen(proc: Any) -> list[dict[str, Any]]:
    """The back-off of every `--json` status line softcopy wrote so far, oldest first."""
    docs = [json.loads(line) for line in proc.output().splitlines() if line.startswith('{"type": "status"')]
    return [d["targets"][0]["back_off"] for d in docs if d["targets"]]


def test_the_back_off_yields_to_a_writer_on_the_source_disk_and_recovers_once_it_stops(
    tmp_path: Path, run_softcopy: Any
) -> None:
    # The source's disk is a loop-mounted ext4 where a writer streams (the acquisition); softcopy
    # copies a cold backlog from it. --max-rate only makes the backlog last through both halves.
    with loop_ext4(tmp_path, 1024) as disk:
        src, dst, report = disk / "backlog", tmp_path / "dst", tmp_path / "report.json"
        cold_backlog(src, 400)
        writer = Writer(disk / "stream")
        args = ("--once", "--max-rate", "8M", "--json", "--log-every", "0.2", "--report", report)
        proc = run_softcopy(src, dst, *args)
        try:
            try:
                # Yielding means it backed off for others (its slow start is not yielding).
                wait_for(lambda: any(b["state"] == "yielding" for b in back_off_seen(proc)), 60, "it to yield")
            finally:
                writer.stop()
            seen = back_off_seen(proc)
            assert min(b["reads"] for b in seen) < seen[-1]["nprocs"], seen
            assert "/dev/loop" in seen[-1]["signal"], seen[-1]
            held = seen[-1]["held_back_s"]

            def free() -> bool:
                b = back_off_seen(proc)[-1]
                return bool(b["state"] == "free" and b["reads"] == b["nprocs"])

            wait_for(free, 60, "it to take all its workers again")
            assert proc.poll() is None, "the backlog must still be copying, or recovery shows nothing"
            proc.send_signal(signal.SIGINT)
            assert finish(proc)[0] == 130
        finally:
            if proc.poll() is None:  # the disk cannot be unmounted under it
                proc.kill()
                proc.wait()
        doc = json.loads(report.read_text())["targets"][0]
        assert doc["back_off"]["held_back_s"] >= held > 0, (doc["back_off"], held)
