"""`--delete-source`: the source is freed file by file, only where the copy is proven, and a crash
in the middle never costs data (docs/design.md, "The end of a run", Freeing: a chunk rewritten after its copy, a crash while
deleting, a full destination, one file failing verification)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import softcopy
from conftest import WRITER, conclude, softcopy_cmd, tree
from softcopy.config import EngineConfig, Target

MIB = 1 << 20


def archive(root: Path) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(WRITER), str(root), "zarr3", "4", "0"], check=True)
    return tree(root)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=120)


def test_source_is_freed_after_a_verified_copy_and_nothing_else_is_touched(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    dst.parent.mkdir(exist_ok=True)
    before = archive(src)
    (src / "c" / "0" / "0" / "0" / "0.__lock").write_bytes(b"a writer's stale lock: not ours to delete")
    r = run(src, dst, "--delete-source", "--checksum")
    assert r.returncode == 0, r.stderr
    assert tree(dst) == before, "the copy is whole"
    left = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert left == ["c/0/0/0/0.__lock"], left
    assert not (src / "c" / "1").exists(), "emptied folders are removed"
    assert "freed the source" in r.stderr


def test_chunk_rewritten_after_its_copy_survives(tmp_path: Path) -> None:
    # Rewritten between the drain and the verification: the copy is no longer the source's
    # version, so the run is not verified and nothing at all is freed.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    archive(src)
    key = src / "c" / "1" / "0" / "0" / "0"

    def rewrite() -> None:
        tmp = key.with_name("0.__lock")
        tmp.write_bytes(b"a newer version, written after the copy")
        os.replace(tmp, key)

    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True, delete_source=True)))
    v = conclude(engine, before=rewrite)
    assert not v.verified and not v.freed
    assert [p.as_posix() for p, _, _ in v.size_mismatch] == ["c/1/0/0/0"]
    assert key.read_bytes() == b"a newer version, written after the copy"


def damage(path: Path, offset: int) -> None:
    """One byte flipped, size and mtime kept: only the contents can tell."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_copy_that_fails_verification_keeps_its_source(tmp_path: Path) -> None:
    # Once found: the mover ran even when verification failed. A shard whose index breaks at
    # the destination (same size and mtime) between the drain and the verification: not verified,
    # nothing freed.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    subprocess.run([sys.executable, str(WRITER), str(src), "zarr3sharded", "4", "0"], check=True)
    before = tree(src)
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True, delete_source=True)))
    shard = src / "c" / "0" / "0" / "0" / "0"

    v = conclude(engine, before=lambda: damage(dst / shard.relative_to(src), -6))  # inside the index
    assert not v.verified and not v.freed
    assert [p.as_posix() for p, _ in v.bad_shards] == ["c/0/0/0/0"], v
    assert tree(src) == before, "nothing freed"


def test_a_copy_damaged_with_size_and_mtime_unchanged_keeps_its_source(tmp_path: Path) -> None:
    # Once found: bit rot at the destination, size and mtime as the source's. Trusted on size
    # alone, its source was deleted and the run exited 0. Here the damage comes after the copy was
    # checked, before the end: the proof by content finds it, and nothing is freed.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    before = archive(src)
    rel = next(k for k in sorted(before) if k.startswith("c/"))
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True, delete_source=True)))
    v = conclude(engine, before=lambda: damage(dst / rel, 0))
    assert not v.verified and not v.freed
    assert [p.as_posix() for p in v.content_mismatch] == [rel]
    assert tree(src) == before, "nothing freed: a copy was found different"


def test_a_damaged_copy_left_by_an_earlier_run_is_copied_again(tmp_path: Path) -> None:
    # Once found: a copy made moments after its source's last change cannot be proven by size
    # and mtime on resume. A copy damaged in place keeps its mark of the version it was made
    # from, so a resumed run takes it without reading it; the proof by content before freeing
    # finds it, frees nothing, and takes the mark off: the next run compares the bytes and
    # replaces the damaged copy before the source is freed.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    before = archive(src)
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stderr
    rel = next(k for k in sorted(before) if k.startswith("c/"))
    damage(dst / rel, 0)
    r = run(src, dst, "--once", "--delete-source")
    assert r.returncode != 0 and "not verified" in r.stderr, r.stderr
    assert tree(src) == before, "nothing freed while a copy differs"
    r = run(src, dst, "--once", "--delete-source")
    assert r.returncode == 0, r.stderr
    assert tree(dst) == before, "the damaged copy was replaced"


def test_a_stop_before_the_end_steps_frees_and_publishes_nothing(tmp_path: Path) -> None:
    # Once found: a Ctrl-C during a long verification re-ran the end steps and deleted.
    # Here the stop comes while the engine waits to verify: nothing after it is done (the stop
    # checks inside proving and freeing are covered by mover::tests).
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    before = archive(src)
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True, delete_source=True)))
    v = conclude(engine, before=engine.stop)
    assert engine.status().phase == "stopped"
    assert v is not None and not v.verified and not v.freed
    assert tree(src) == before
    assert not (dst / "complete").exists()


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Folders made immutable (chattr +i: unlink inside fails), always made mutable again."""
    made: list[Path] = []
    yield made
    for d in made:
        subprocess.run(["chattr", "-i", str(d)], check=False)


def test_interrupted_deletion_then_rerun_loses_nothing(tmp_path: Path, immutable: list[Path]) -> None:
    # A crash between deletions leaves a source missing some files; the next run must neither copy
    # them back nor mistake their absence for deletions to mirror (which would prune the copy).
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    before = archive(src)
    stuck = src / "c" / "3" / "0" / "0"
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    immutable.append(stuck)
    r = run(src, dst, "--delete-source")
    assert r.returncode == 0, r.stderr
    assert "kept at the source: c/3/0/0/" in r.stderr  # the "crash": these could not be deleted
    assert tree(dst) == before
    subprocess.run(["chattr", "-i", str(stuck)], check=True)
    r = run(src, dst, "--delete-source")
    assert r.returncode == 0, r.stderr
    assert tree(dst) == before, "nothing pruned from the copy"
    assert not [p for p in src.rglob("*") if p.is_file()], "the rest of the source is freed"


def test_full_destination_frees_only_what_arrived(tmp_path: Path) -> None:
    src, mnt = tmp_path / "src", tmp_path / "small"
    (src / "c").mkdir(parents=True)
    for i in range(8):
        (src / "c" / str(i)).write_bytes(bytes([i]) * MIB)
    before = tree(src)
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        r = run(src, mnt / "out", "--once", "--delete-source", "--give-up-after", "1")
        assert r.returncode == 1, r.stderr
        at_dst, at_src = tree(mnt / "out"), tree(src)
        assert at_dst and at_src, "some files arrived, some did not"
        assert {**at_src, **at_dst} == before, "every file is somewhere, whole"
        assert set(before) - set(at_dst) <= set(at_src), "what did not arrive is kept"
        # (What did arrive is kept too here: the move journal could not be written on a full disk.)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_copy_gone_from_the_destination_before_the_end_fails_the_run(tmp_path: Path) -> None:
    # Verification trusts this run's records of what it copied (no walk of the destination); the
    # proof by content then found the copy missing, kept its source, and the marker was published
    # anyway: verified, exit 0, a file short at the destination.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    before = archive(src)
    rel = next(k for k in sorted(before) if k.startswith("c/"))
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True, delete_source=True)))
    v = conclude(engine, before=lambda: (dst / rel).unlink())
    assert v is not None and not v.verified, v
    assert Path(rel) in v.missing and not v.marker_published
    assert tree(src) == before, "nothing freed: the copy is not whole"
