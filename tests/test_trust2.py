"""Trust, part two (issue 12): the same folder, the same version, the same acquisition, decided on
evidence. Each test failed on cdb4fcd, the commit the issue was filed against."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import softcopy
from conftest import WRITER, softcopy_cmd, tree, wait_for


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


def test_the_marker_of_an_earlier_acquisition_is_gone_before_a_retake_is_written(tmp_path: Path) -> None:
    # Item 5: after a finished copy the source is deleted and acquired again; while the second run
    # copied (and after it was stopped) the destination showed the new `a`, the old `b` and the old
    # `complete`: a marker over mixed data.
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
        wait_for(lambda: (dst / "a").read_bytes() == b"second a", 20, "the re-take's a")
        assert not (dst / "complete").exists(), "withdrawn before the new a was published"
    finally:
        c.stop()
        c.wait(30)
    assert not (dst / "complete").exists(), "a stopped run leaves no marker"


def test_a_retake_with_fewer_chunks_after_delete_source_is_pruned_not_kept_as_moved(tmp_path: Path) -> None:
    # Item 6: the `.softcopy-moved` journal was matched by path and kept forever: a re-acquisition
    # into the same paths with fewer chunks ended verified with the old chunks still there.
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    archive(src, 4)
    first = run(src, dst, "--delete-source")
    assert first.returncode == 0, first.stderr
    assert not any(p.is_file() for p in src.rglob("*")), "the first acquisition was freed"
    now = archive(src, 2)
    second = run(src, dst)
    assert second.returncode == 0, second.stderr
    assert tree(dst) == now, "the first acquisition's extra timepoints are not at the destination"


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
        journal = (dst / ".softcopy-moved").read_text()
        assert f"K {stuck.relative_to(src).as_posix()}" in journal, journal
        (dst / "c" / ".0.1-2.softcopy-partial").write_bytes(b"left by a killed copy")
        v = run("verify", src, dst)
    assert v.returncode == 1, v.stdout + v.stderr
    assert "softcopy-partial" in v.stdout + v.stderr


def test_the_journal_does_not_keep_copies_of_a_retaken_root(tmp_path: Path) -> None:
    # Item 6, the other way to re-take: the root deleted and made again (`overwrite=True`).
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    archive(src, 3)
    assert run(src, dst, "--delete-source").returncode == 0
    shutil.rmtree(src)
    now = archive(src, 1)
    r = run(src, dst)
    assert r.returncode == 0, r.stderr
    assert tree(dst) == now
