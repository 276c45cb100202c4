"""Acceptance: softcopy copies archives while real tensorstore writes them, in separate processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import softcopy
from conftest import assert_same_tree, busy_loops, conclude, finish, start_writer, wait_for, write_finished_archive
from softcopy.config import EngineConfig, Target


@pytest.mark.parametrize("layout", ["v2dot", "v2slash", "zarr3", "zarr3sharded"])
def test_live_copy_started_before_the_source_exists(tmp_path: Path, run_softcopy: Any, layout: str) -> None:
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    dst.parent.mkdir(exist_ok=True)
    src.parent.mkdir()
    proc = run_softcopy(src, dst, "--nprocs", "4")
    # softcopy must be waiting (not failed) before the writer creates anything.
    wait_for(lambda: "waiting for" in proc.output(), 10, "softcopy to start waiting")
    writer = start_writer(src, layout, 12, 0.05)
    assert writer.wait(120) == 0
    code, out = finish(proc)
    assert code == 0, out
    assert "verified complete" in out
    assert_same_tree(src, dst)
    assert (dst / "complete").exists(), "the marker is copied (last)"


def test_live_copy_started_mid_acquisition(tmp_path: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out" / "data.zarr"
    dst.parent.mkdir()
    dst.parent.mkdir(exist_ok=True)
    writer = start_writer(src, "zarr3", 30, 0.05)
    wait_for(lambda: len(list(src.glob("c/*"))) >= 5, 60, "the writer to write 5 timepoints")
    proc = run_softcopy(src, dst)
    assert writer.wait(120) == 0
    code, out = finish(proc)
    assert code == 0, out
    assert_same_tree(src, dst)


def test_finished_archive_is_copied_one_shot(tmp_path: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src, "zarr3", 5)
    assert (src / "complete").exists()
    code, out = finish(run_softcopy(src, dst))
    assert code == 0, out
    assert_same_tree(src, dst)
    # The summary accounts for fill-value chunks that were never written.
    assert "absent at the source (fill value" in out


def test_two_targets_in_one_file_are_copied_in_parallel(tmp_path: Path, run_softcopy: Any) -> None:
    srcs = [tmp_path / "acq" / f"{n}.zarr" for n in ("a", "b")]
    (tmp_path / "acq").mkdir()
    (tmp_path / "cluster").mkdir()
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        "  - source: acq/a.zarr\n    destination: cluster/a.zarr\n"
        "  - source: acq/b.zarr\n    destination: cluster/b.zarr\n    nprocs: 2\n"
    )
    proc = run_softcopy(targets)
    writers = [start_writer(srcs[0], "v2dot", 10, 0.05), start_writer(srcs[1], "zarr3", 10, 0.05)]
    assert [w.wait(120) for w in writers] == [0, 0]
    code, out = finish(proc)
    assert code == 0, out
    for s in srcs:
        assert_same_tree(s, tmp_path / "cluster" / s.name)


def test_copy_api_blocks_until_verified(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    writer = start_writer(src, "v2slash", 15, 0.05)
    report = softcopy.copy(src, dst, nprocs=2, timeout=120)
    assert writer.wait(10) == 0
    assert report.ok
    t = report.targets[0]
    assert t.verified and t.arrays == 1
    assert t.expected_chunks == 15 * 2 * 2 * 2
    assert t.absent_chunks > 0  # fill-value chunks
    assert_same_tree(src, dst)


def test_copier_is_non_blocking_and_stoppable(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 1000)
    with softcopy.Copier([softcopy.Target(src, dst)]) as c:
        # The copy is at its name a moment before the coordinator counts it: wait for the count
        # (on a busy machine the status read right after the file appears can still say 0).
        wait_for(lambda: c.status()[0].files_copied == 1, 10, "the first file counted")
        [p] = c.status()
        assert (dst / "a").exists()
        assert p.phase == "copying" and p.files_copied == 1
        assert c.wait(0.05) is None, "no marker yet: the copy goes on"
        c.stop()
        report = c.wait(10)
    assert report is not None and report.interrupted and not report.ok
    assert report.targets[0].phase == "stopped"


def test_writer_deleting_chunks_is_mirrored(tmp_path: Path) -> None:
    # tensorstore unlinks a chunk that becomes the fill value; the copy must not keep the old data.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    writer = start_writer(src, "v2dot", 8, 0.05)
    report = softcopy.copy(src, dst, timeout=120)
    assert writer.wait(10) == 0 and report.ok
    # t=2 and t=6 have z-chunk 0 written then unlinked.
    assert not (src / "2.0.0.0").exists() and not (dst / "2.0.0.0").exists()
    assert_same_tree(src, dst)


def test_partials_from_a_killed_run_are_removed(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src)
    leftover = dst / ".0.0.0.0.999-1.softcopy-partial"
    dst.mkdir()
    leftover.write_bytes(b"half")
    assert softcopy.copy(src, dst).ok
    assert not leftover.exists()


def test_copy_preserves_mtime_and_permission_bits(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    f = src / "settings.json"
    f.write_text("{}")
    f.chmod(0o640)
    os.utime(f, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    assert softcopy.copy(src, dst, once=True).ok
    st = (dst / "settings.json").stat()
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert st.st_mode & 0o777 == 0o640


@pytest.mark.parametrize("method", ["auto", "sendfile", "readwrite"])
def test_every_copy_method_copies_exactly(tmp_path: Path, method: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    sizes = [0, 1, 4095, 1 << 20, (3 << 20) + 7]
    for n, size in enumerate(sizes):
        (src / f"f{n}").write_bytes(bytes((i * 31 + n) & 0xFF for i in range(size)))
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True), copy_method=method))  # type: ignore[arg-type]
    assert conclude(engine).verified
    assert engine.status().phase == "verified"
    assert_same_tree(src, dst)


def test_unreachable_file_is_listed_and_exit_code_is_1(tmp_path: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "k").write_bytes(b"data")
    (src / "ok").write_bytes(b"fine")
    dst.mkdir()
    # A link where the source has a folder: never written through, nor removed (someone else's, not
    # a copy of a file the source deleted), so the copy of sub/k fails.
    (tmp_path / "elsewhere").write_bytes(b"not the acquisition's")
    (dst / "sub").symlink_to(tmp_path / "elsewhere")
    code, out = finish(run_softcopy(src, dst, "--once"), timeout=90)
    assert code == 1, out
    assert "INCOMPLETE" in out and "missing: sub/k" in out
    assert (dst / "ok").read_bytes() == b"fine"
    assert (tmp_path / "elsewhere").read_bytes() == b"not the acquisition's"


def test_exit_codes_for_signals_leave_no_partial_under_a_final_name(tmp_path: Path, run_softcopy: Any) -> None:
    import signal

    for sig, expected in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        src, dst = tmp_path / f"s{sig}", tmp_path / f"d{sig}"
        src.mkdir()
        for i in range(50):
            (src / f"f{i}").write_bytes(b"z" * 200_000)
        proc = run_softcopy(src, dst, "--nprocs", "1", "--sleep-time", "0.05")
        wait_for(lambda: dst.exists() and any(dst.iterdir()), 10, "copying to start")  # noqa: B023 (called within this iteration)
        proc.send_signal(sig)
        code, out = finish(proc, timeout=2)  # the promise: stopped within 2 s
        assert code == expected, out
        assert "run the same command again to resume" in out
        for f in dst.iterdir():
            assert (
                f.name.endswith(".softcopy-partial") or f.name == ".softcopy-origin" or f.read_bytes() == b"z" * 200_000
            )


def test_a_stop_takes_under_2_s_beside_three_busy_loops_per_core(tmp_path: Path, run_softcopy: Any) -> None:
    """Workers at nice 19 on a busy machine wait seconds for each time slice; the stop must not
    wait on them (docs/design.md, "Stopping"). Big files, so that copies are in flight."""
    import signal

    src = tmp_path / "src"
    src.mkdir()
    block = os.urandom(1 << 20)
    for i in range(40):
        (src / f"f{i}").write_bytes(block * 16)
    with busy_loops(3 * (os.cpu_count() or 1)):
        for attempt in range(6):
            dst = tmp_path / f"dst{attempt}"
            proc = run_softcopy(src, dst)
            wait_for(lambda: dst.exists() and len(list(dst.iterdir())) > 8, 30, "copies under way")  # noqa: B023
            proc.send_signal(signal.SIGTERM)
            code, out = finish(proc, timeout=2)  # the promise: stopped within 2 s
            assert code == 143, out


def test_worker_threads_run_at_idle_io_priority_and_nice_19(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"1")
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, nprocs=3)))
    try:
        wait_for(lambda: (dst / "a").exists(), 10, "the copy")
        tids = [
            t.name for t in Path("/proc/self/task").iterdir() if (t / "comm").read_text().startswith("softcopy-work")
        ]
        assert len(tids) == 3
        for tid in tids:
            io = subprocess.run(["ionice", "-p", tid], capture_output=True, text=True, check=True).stdout
            assert io.strip() == "idle", io
            nice = int((Path("/proc/self/task") / tid / "stat").read_text().rsplit(")", 1)[1].split()[16])
            assert nice == 19
        # The Python thread itself keeps its priority.
        own = subprocess.run(["ionice", "-p", str(os.getpid())], check=True, capture_output=True, text=True).stdout
        assert own.strip() != "idle"
    finally:
        engine.stop()
        engine.wait(10)


def test_files_in_new_directories_are_copied_live_not_only_at_the_end(tmp_path: Path) -> None:
    # Writers create a directory just before its first file; the file can land before any watch on
    # the directory exists. softcopy must still copy it live (not only in the final rescan).
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    with softcopy.Copier([softcopy.Target(src, dst)]) as c:
        wait_for(lambda: c.status()[0].phase == "copying", 10, "the engine to start")
        for i in range(60):
            d = src / "c" / str(i) / "0"
            d.mkdir(parents=True)
            (d / "0.__lock").write_bytes(b"%d" % i)
            os.replace(d / "0.__lock", d / "0")
        expected = {f"c/{i}/0/0" for i in range(60)}
        wait_for(lambda: all((dst / k).exists() for k in expected), 10, "every file, before any marker")
        assert c.status()[0].finishing is False
        c.stop()
