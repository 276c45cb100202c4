"""The benchmark harness in miniature, so it cannot rot: every script in benches/ runs end to end on
a tiny workload, as root, with its real contenders, loop filesystems and checks (each bench checks
its copies byte for byte and fails otherwise). The figures are not judged here: performance is
measured by the full runs recorded in BENCHMARKS.md, never by timed tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the benches mount loop filesystems (root)")


def bench(script: str, *args: object) -> str:
    """Runs a bench's miniature; whatever way it ends (a timeout too), nothing it started is left:
    its processes (sshd, sshfs, writers) are killed and its mounts below its `--dir` are lifted."""
    argv = [str(a) for a in args]
    folder = argv[argv.index("--dir") + 1] if "--dir" in argv else None
    # The pipes close with the block, also when pytest-timeout ends the test inside it: left open,
    # they were reported by the collector as an unraisable warning in whichever test ran next.
    with subprocess.Popen(
        [sys.executable, str(BENCHES / script), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=BENCHES,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if folder is not None:
                lift_mounts(folder)
    assert proc.returncode == 0, f"{script} failed:\n{out}\n{err}"
    return out


def lift_mounts(folder: str) -> None:
    """Unmounts (lazily) whatever is still mounted below `folder`, deepest first."""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        points = [line.split()[1] for line in f]
    below = [p for p in points if p == folder or p.startswith(folder.rstrip("/") + "/")]
    for point in sorted(below, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def test_bulk_compares_contenders_cold_and_warm(tmp_path: Path) -> None:
    out = bench(
        "bulk.py", "--chunks", 40, "--chunk-kib", 16, "--runs", 1, "--no-original",
        "--only", "softcopy", "--only", "cp -r", "--dir", tmp_path / "b",
    )  # fmt: skip
    assert "a fresh ext4 loop filesystem per run" in out
    for cache in ("cold", "warm"):
        assert re.search(rf"^ratio {cache} softcopy / cp -r: wall [\d.]+x, CPU [\d.]+x$", out, re.MULTILINE), out


def test_live_reports_lag_drain_and_device_reads_locally_and_over_ssh(tmp_path: Path) -> None:
    out = bench(
        "live.py", "--timepoints", 30, "--chunk-kib", 256, "--rate-mib", 50, "--runs", 1,
        "--no-original", "--ssh-rtt", 2, "--writer-after-ready", "--dir", tmp_path / "l",
    )  # fmt: skip
    for name in ("softcopy", "softcopy over ssh, 2 ms"):
        assert re.search(
            rf"^{name} +writer .*\.zarray copied +\d+ ms after start; lag ms p50 .* p99 .* exit .* "
            r"source device read .* of \d+ MiB copied",
            out,
            re.MULTILINE,
        ), out
    assert re.search(r"^over ssh, 2 ms: one ssh stream [\d.]+ MiB/s", out, re.MULTILINE), out


def test_scale_compares_the_scan_with_find(tmp_path: Path) -> None:
    out = bench("scale.py", "--files", 3000, "--dir", tmp_path / "s")
    assert "archive: 3002 files" in out  # 3000 chunks, the metadata and the marker
    assert re.search(r"^ratio cold scan softcopy / find: [\d.]+x$", out, re.MULTILINE), out
    assert re.search(r"^softcopy peak RSS per file: \d+ bytes", out, re.MULTILINE), out


def test_rate_measures_windows_against_the_limit(tmp_path: Path) -> None:
    out = bench(
        "rate.py", "--rate-mib", 8, "--seconds", 3, "--window", 1, "--schedulers", "none", "--dir", tmp_path / "r"
    )
    assert re.search(r"^scheduler none +\d+ windows of 1 s: rate / limit min [\d.]+, max [\d.]+", out, re.MULTILINE), (
        out
    )


def test_impact_measures_the_writer_alone_and_beside_each_copier(tmp_path: Path) -> None:
    args = ("--archive-gib", 0.05, "--seconds", 4, "--warmup", 1, "--runs", 1, "--schedulers", "none,bogus")
    out = bench("impact.py", *args, "--dir", tmp_path / "i")
    assert re.search(r"^disk: ext4 on \S+ \(direct IO\), scheduler .*\[none\]", out, re.MULTILINE), out
    assert re.search(r"^scheduler bogus is not offered by this kernel", out, re.MULTILINE), out
    for copier in ("softcopy", "no back-off", "cp -r"):
        assert re.search(rf"^none +with {re.escape(copier)} *: writer keeps \d+ % of its solo", out, re.MULTILINE), out
    assert re.search(
        r"^none +writer at half \(\d+ MiB/s\): keeps \d+ %; softcopy copies \d+ MiB/s", out, re.MULTILINE
    ), out
    assert re.search(r"^none +writer stopped: softcopy copies \d+ MiB/s, \d+ % of its solo", out, re.MULTILINE), out
    assert re.search(
        r"^none +writer stopped: .* of --no-back-off's \d+ MiB/s after the same stop", out, re.MULTILINE
    ), out


def test_cpu_measures_idle_and_a_busy_worker_with_a_timer_due(tmp_path: Path) -> None:
    out = bench("cpu.py", "--idle-seconds", 1, "--big-mib", 4, "--dir", tmp_path)
    assert re.search(r"^softcopy idle: +[\d.]+ % of a core", out, re.MULTILINE), out
    assert re.search(r"^softcopy copying at 4 MiB/s, timer due: [\d.]+ % of a core", out, re.MULTILINE), out


def test_network_copies_onto_a_share_with_latency_and_checks_every_copy(tmp_path: Path) -> None:
    out = bench(
        "network.py", "--files", 30, "--big", 2, "--big-mib", 1, "--rtt", 2, "--timeout", 120,
        "--only", "softcopy", "--only", "cp -r", "--only", "rsync -a -e ssh", "--only", "softcopy over ssh",
        "--only", "rsync -a --fsync -e ssh", "--dir", tmp_path / "n",
    )  # fmt: skip
    assert "one ssh stream" in out
    for name in ("softcopy", "cp -r", "rsync -a -e ssh", "softcopy over ssh", "rsync -a --fsync -e ssh"):
        for size in ("16 KiB", "16 KiB, 8 per folder", "16 KiB, folder per chunk", "1 MiB"):
            assert re.search(rf"\| 2 ms \| {size} \| {re.escape(name)} \| [0-9.]+ \|", out), out


def test_sftp_runs_each_client_beside_rsync_and_checks_every_copy(tmp_path: Path) -> None:
    out = bench(
        "sftp.py", "--files", 30, "--big", 2, "--big-mib", 1, "--rtt", 2, "--repeat", 1, "--sessions", 2,
        "--debug-build", "--dir", tmp_path / "s",
    )  # fmt: skip
    assert "one ssh stream" in out
    names = ["own, 2 sessions", "own, 2 sessions, fsync", "openssh, 2 sessions", "openssh, 2 sessions, fsync"]
    for name in [*names, "rsync -a -e ssh", "rsync -a --fsync -e ssh"]:
        for size in ("16 KiB", "1 MiB"):
            assert re.search(rf"\| 2 ms \| {size} \| {re.escape(name)} \| [0-9.]+", out), out


def test_ssh_freeing_proves_by_the_servers_hash_and_by_read_back_and_frees_both() -> None:
    out = bench("ssh_freeing.py", "--files", 8, "--size", 0.25)
    assert re.search(r"server sha256sum .*8 copies proven by the server's sha256sum, 0 read back", out), out
    assert re.search(r"read back .*8 copies proven by reading them back", out), out


def test_finale_times_the_end_of_a_live_run_next_to_the_full_walk(tmp_path: Path) -> None:
    for extra in ([], ["--rtt", 2]):
        out = bench("finale.py", "--files", 600 if not extra else 300, *extra, "--dir", tmp_path / "f")
        assert re.search(r"\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|", out), out


def test_watches_counts_the_watches_and_their_kernel_memory(tmp_path: Path) -> None:
    out = bench("watches.py", "--folders", 2000, "--dir", tmp_path / "w")
    assert re.search(r"\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|", out), out


def test_service_measures_a_service_watching_finished_archives_and_a_live_one(tmp_path: Path) -> None:
    out = bench("service.py", "--finished", 2, "--timepoints", 4, "--interval", 0.1, "--dir", tmp_path / "s")
    assert re.search(r"\| service, 2 finished \+ 1 live \| [0-9.]+ \| [0-9]+ \| yes \|", out), out
    assert "per finished acquisition watched" in out


def test_memory_runs_a_finished_archive_and_a_live_one_in_both_layouts(tmp_path: Path) -> None:
    args = ("--files", 2000, "--evict-after", 0.2, "--rate", 2000, "--dir", tmp_path / "m", "--trees", tmp_path / "t")
    out = bench("memory.py", *args)
    for per in (1000, 10):
        assert re.search(rf"^2000 +{per} +one-shot \(finished archive\) +[\d.]+ +[\d.]+ +\d+$", out, re.MULTILINE), out
        for label in (r"live, settled out \(0\.2 s\)", "live, all in memory"):
            assert re.search(rf"^2000 +{per} +{label} +[\d.]+ +[\d.]+ +\d+ +[\d.]+$", out, re.MULTILINE), out


def test_roundtrips_counts_the_servers_requests_per_file(tmp_path: Path) -> None:
    out = bench("roundtrips.py", "--files", 30, "--dir", tmp_path / "rt")
    for copier in ("softcopy", "cp -r"):
        m = re.search(rf"^{re.escape(copier)} +([\d.]+) ", out, re.MULTILINE)
        assert m and float(m.group(1)) > 1, out  # at least an open and a write per file
