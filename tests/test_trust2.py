"""Trust, part two (docs/design.md, "A version is decided on evidence"): the same folder, the same version, the same acquisition, decided on
evidence. Each test failed on cdb4fcd, the commit the issue was filed against."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import softcopy
from conftest import WRITER, softcopy_cmd, tree, wait_for
from softcopy.config import EngineConfig, Target


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=120)


def archive(root: Path, timepoints: int) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(WRITER), str(root), "zarr3", str(timepoints), "0"], check=True)
    return tree(root)


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`chattr +i`: even root's unlink fails with EPERM. Undone whatever happens."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_existing_symlinked_folder_in_the_destination_is_not_written_through(tmp_path: Path) -> None:
    # Item 2: with `dst/sub -> /elsewhere/archive`, `archive/f` was overwritten, exit 0.
    src, dst, elsewhere = tmp_path / "acq", tmp_path / "dst", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"the acquisition's f")
    (src / "top").write_bytes(b"top")
    elsewhere.mkdir()
    (elsewhere / "f").write_bytes(b"the archive's f")
    dst.mkdir()
    (dst / "sub").symlink_to(elsewhere)
    r = run(src, dst, "--once")
    assert r.returncode == 1, r.stderr
    assert (elsewhere / "f").read_bytes() == b"the archive's f", "nothing written through the link"
    assert (dst / "top").read_bytes() == b"top"
    assert "symlink" in r.stderr and "sub" in r.stderr


def test_a_retake_is_never_written_over_the_earlier_acquisitions_copy(tmp_path: Path) -> None:
    # Item 5: after a finished copy the source is deleted and acquired again; while the second run
    # copied (and after it was stopped) the destination showed the new `a`, the old `b` and the old
    # `complete`: a marker over mixed data. Now (docs/design.md, "One destination, one acquisition") the destination is the earlier
    # acquisition's: the re-take is refused there, and the earlier copy stands with its marker.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"first a")
    (src / "b").write_bytes(b"first b")
    (src / "complete").touch()
    assert run(src, dst).returncode == 0
    assert (dst / "complete").exists()
    shutil.rmtree(src)
    src.mkdir()
    (src / "a").write_bytes(b"second a")
    c = softcopy.Copier([softcopy.Target(src, dst)])
    c.start()
    try:
        report = c.wait(30)
        assert report is not None
    finally:
        c.stop()
        c.wait(30)
    t = report.targets[0]
    assert not t.verified and "another acquisition" in (t.fatal or ""), t
    assert (dst / "a").read_bytes() == b"first a" and (dst / "b").read_bytes() == b"first b"
    assert (dst / "complete").exists(), "the earlier acquisition's marker stands over its copy"
    r = run(src, dst)
    assert r.returncode == 2 and "another acquisition" in r.stderr, r.stderr


def test_a_run_stopped_before_it_changed_anything_leaves_no_marker(tmp_path: Path) -> None:
    # Item 5, "a stopped or failed run leaves none": a marker found at the start and never
    # withdrawn (nothing had been written yet) outlived the stop, over a source that had changed.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "complete").touch()
    assert run(src, dst).returncode == 0
    (src / "complete").unlink()  # a re-take under way, nothing of it written yet
    c = softcopy.Copier([softcopy.Target(src, dst)])
    c.start()
    try:
        wait_for(lambda: c.poll() is None and c.status()[0].phase == "copying", 20, "the watch")
        assert (dst / "complete").exists(), "nothing changed yet: the marker still stands"
    finally:
        c.stop()
        c.wait(30)
    assert not (dst / "complete").exists(), "a stopped run leaves no marker"


def test_a_retake_after_delete_source_is_refused_and_the_freed_copy_kept(tmp_path: Path) -> None:
    # Item 6: the `.softcopy-moved` journal was matched by path and kept forever: a re-acquisition
    # into the same paths with fewer chunks ended verified with the old chunks still there. Then
    # (before the journal's checks) it was pruned instead: the only copies of the freed acquisition. A destination
    # belongs to one acquisition: a new one written into the emptied folder is refused there.
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    dst.parent.mkdir(exist_ok=True)
    first = archive(src, 4)
    r = run(src, dst, "--delete-source")
    assert r.returncode == 0, r.stderr
    assert not any(p.is_file() for p in src.rglob("*")), "the first acquisition was freed"
    archive(src, 2)
    second = run(src, dst)
    assert second.returncode == 2 and "another acquisition" in second.stderr, second.stderr
    assert tree(dst) == first, "the freed acquisition's copy is kept whole"


def test_a_deletion_that_failed_after_it_was_journaled_vouches_for_nothing(tmp_path: Path) -> None:
    # Item 7: a journaled file whose deletion failed (EPERM) balanced verify's "counts match"
    # shortcut, so a partial left at the destination passed `softcopy verify` (exit 0).
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    archive(src, 2)
    stuck = next(p for p in sorted(src.rglob("*")) if p.is_file() and p.parent.name != "data.zarr")
    with immutable(stuck):
        r = run(src, dst, "--delete-source")
        assert r.returncode == 0, r.stderr
        assert stuck.exists()
        (dst / "c" / ".0.1-2.softcopy-partial").write_bytes(b"left by a killed copy")
        v = run("verify", src, dst)
    assert v.returncode == 1, v.stdout + v.stderr
    assert "softcopy-partial" in v.stdout + v.stderr
    journal = (dst / ".softcopy-moved").read_text()
    assert f"K {stuck.relative_to(src).as_posix()}" in journal, "the journal says it was kept"


def test_a_retaken_root_is_refused_and_the_freed_copy_kept(tmp_path: Path) -> None:
    # Item 6, the other way to re-take: the root deleted and made again (`overwrite=True`) after the
    # first acquisition was freed: its copy is the only one left, never pruned for the new one's.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    first = archive(src, 3)
    assert run(src, dst, "--delete-source").returncode == 0
    shutil.rmtree(src)
    archive(src, 1)
    r = run(src, dst)
    assert r.returncode == 2 and "another acquisition" in r.stderr, r.stderr
    assert tree(dst) == first


def rewrite_in_place(path: Path, data: bytes) -> BinaryIO:
    """Opens `path` for writing in place (no truncation, same length) and writes `data`; the
    caller closes it."""
    f = path.open("r+b")
    f.write(data)
    f.flush()
    return f


def rewrite_in_the_same_tick(path: Path, data: bytes) -> None:
    """A same-size rewrite in place whose mtime stays as it was (a coarse clock's tick, simulated
    with `utime`): only the events and the ctime can tell."""
    st = path.stat()
    rewrite_in_place(path, data).close()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_file_still_open_at_the_marker_is_waited_for_then_copied(tmp_path: Path) -> None:
    # Item 3: final metadata rewritten in place with the same length and not yet closed when the
    # marker appeared: the final reconcile's copy came back Busy, the end ignored it, and the run
    # ended verified (exit 0) with the old zarr.json at the destination.
    src, dst, log = tmp_path / "acq", tmp_path / "dst", tmp_path / "log"
    src.mkdir()
    (src / "zarr.json").write_bytes(b'{"shape": [1]}')
    with log.open("wb") as out:
        proc = subprocess.Popen(softcopy_cmd(src, dst), stdout=out, stderr=subprocess.STDOUT)
    f = None
    try:
        wait_for(lambda: (dst / "zarr.json").exists(), 20, "the first version")
        f = rewrite_in_place(src / "zarr.json", b'{"shape": [9]}')
        (src / "complete").touch()
        wait_for(lambda: "still open for writing" in log.read_text(), 20, "the end to wait for it")
        assert proc.poll() is None, "no verdict while it is open"
        assert not (dst / "complete").exists()
        f.close()
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if f is not None:
            f.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (dst / "zarr.json").read_bytes() == b'{"shape": [9]}'
    assert (dst / "complete").exists()


def test_a_file_open_past_the_bound_ends_the_run_incomplete_naming_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq", tmp_path / "dst"
    src.mkdir()
    (src / "shard").write_bytes(b"0" * 64)
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, quiet_time=2.0)))
    f = None
    try:
        wait_for(lambda: (dst / "shard").exists(), 20, "the first version")
        f = rewrite_in_place(src / "shard", b"1" * 64)
        (src / "complete").touch()
        assert engine.wait(30), engine.status()
        v = engine.verdict()
    finally:
        if f is not None:
            f.close()
        engine.stop()
    assert v is not None and not v.verified
    assert [p.as_posix() for p in v.not_copied] == ["shard"], v
    assert "still open for writing" in (v.reason or "")
    assert not (dst / "complete").exists()


def test_a_same_tick_rewrite_after_a_copy_is_copied_again(tmp_path: Path) -> None:
    # Item 4: a same-size in-place rewrite whose mtime lands in the same tick (coarse clocks;
    # simulated with utime) was never copied again: the close event was overruled by the identity.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    src.mkdir()
    meta = src / "zarr.json"
    meta.write_bytes(b'{"version": 1}')
    with softcopy.Copier([softcopy.Target(src, dst)]) as c:
        wait_for(lambda: (dst / "zarr.json").exists(), 20, "the first copy")
        rewrite_in_the_same_tick(meta, b'{"version": 2}')
        wait_for(lambda: (dst / "zarr.json").read_bytes() == b'{"version": 2}', 20, "the rewrite's copy")
        c.finish()
        report = c.wait(30)
    assert report is not None and report.ok


def test_a_resumed_run_compares_content_where_size_and_times_cannot_tell(tmp_path: Path) -> None:
    # Item 4, resume: the same rewrite while softcopy was not running; the next run took the old
    # copy (same size, same mtime) for the current version.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    src.mkdir()
    meta = src / "zarr.json"
    meta.write_bytes(b'{"version": 1}')
    assert run(src, dst, "--once").returncode == 0
    rewrite_in_the_same_tick(meta, b'{"version": 2}')
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stderr
    assert (dst / "zarr.json").read_bytes() == b'{"version": 2}'
