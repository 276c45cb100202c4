"""Settled files leave memory (docs/design.md, "Memory"): a copied file that stays quiet
moves from the tracker's map into its folder's record, and the end proves a folder's settled files
only if they are exactly what its record kept. Each test first waits until the files *are* settled
(the engine's `settled` count), so it fails if eviction never happens as well as if it is unsafe."""

from __future__ import annotations

import os
from pathlib import Path

import softcopy
from conftest import assert_same_tree, conclude, start_writer, wait_for, write_finished_archive
from softcopy.config import EngineConfig, Target

EVICT = 0.1  # seconds between the engine's passes (the CLI's default is 5 s)


def chunks(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name[0].isdigit())


def settled_engine(src: Path, dst: Path) -> softcopy._softcopy.Engine:
    """An engine that does not end at the writer's marker (it ends at `finish()`). At normal
    priority: these tests are about what settles, and beside busy processes nice-19 workers get a
    hundredth of a core (they copied too little within the waits when `.ci/run` ran beside three
    busy loops); test_live and test_gentle test the priority."""
    return softcopy._softcopy.Engine(
        EngineConfig(Target(src, dst, marker="not-written", evict_after=EVICT), low_priority=False)
    )


def settled_archive(tmp_path: Path) -> tuple[Path, Path, softcopy._softcopy.Engine, Path]:
    """A finished archive copied until every chunk settled: (source, destination, its engine, a chunk)."""
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src, "zarr3", 3)
    engine = settled_engine(src, dst)
    wait_for(lambda: engine.status().settled >= len(chunks(src)), 30, "the chunks to settle")
    engine.finish()
    return src, dst, engine, chunks(src)[0]


def test_a_live_copy_settles_its_files_and_still_mirrors_their_changes(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    writer = start_writer(src, "zarr3", 40, 0.05)
    # The writer's marker does not end this run: the files must have time to settle after it.
    engine = settled_engine(src, dst)
    # Settled while the writer still writes: memory follows what is in flux, not the archive.
    wait_for(lambda: engine.status().settled > 20 or writer.poll() is not None, 60, "files to settle")
    assert engine.status().settled > 20, "files settled only once the acquisition was over"
    assert writer.wait(120) == 0
    wait_for(lambda: engine.status().settled >= len(chunks(src)), 30, "every chunk to settle")
    # A settled chunk rewritten (renamed into place, as tensorstore does) and another deleted:
    # each comes back as a file of its own, and both reach the destination before the end.
    first, second = chunks(src)[0], chunks(src)[-1]
    sibling = next(p for p in sorted(first.parent.iterdir()) if p != first)
    assert first.parent != second.parent
    sibling_copy = (dst / sibling.relative_to(src)).stat().st_ino
    tmp = first.with_name(".rewrite")
    tmp.write_bytes(b"a new version of a settled chunk")
    os.rename(tmp, first)
    second.unlink()
    rel1, rel2 = first.relative_to(src), second.relative_to(src)
    wait_for(lambda: (dst / rel1).read_bytes() == first.read_bytes(), 30, "the new version to arrive")
    wait_for(lambda: not (dst / rel2).exists(), 30, "the deletion to be mirrored")
    engine.finish()
    v = conclude(engine)
    assert v.verified, v
    # Neither folder's record proves it any more: the end walks the destination, and the
    # rewritten chunk's sibling was looked at there, not copied again.
    assert v.destination_walked
    assert (dst / sibling.relative_to(src)).stat().st_ino == sibling_copy
    assert_same_tree(src, dst)


def test_settled_files_are_proven_by_their_record_without_a_look_at_the_destination(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src, "zarr3", 4)
    engine = settled_engine(src, dst)
    # Metadata is rewritten all along and stays in memory; its marker is a file like any other here.
    files = [p for p in src.rglob("*") if p.is_file()]
    n = len([p for p in files if p.name != "zarr.json"])
    wait_for(lambda: engine.status().settled == n, 30, "every file but the metadata to settle")
    engine.finish()
    v = conclude(engine)
    assert v.verified and not v.destination_walked
    assert v.proven_as_copied == v.files == len(files)


def test_a_settled_chunk_changed_unseen_is_not_verified_over(tmp_path: Path) -> None:
    # Rewritten after the drain, when no watch sees it: only its folder's record can tell, and it
    # must (a record that proved its folder blindly would verify a stale copy).
    src, _dst, engine, key = settled_archive(tmp_path)

    def rewrite() -> None:
        key.write_bytes(b"written after the drain")

    v = conclude(engine, before=rewrite)
    assert not v.verified
    assert [p.as_posix() for p, _, _ in v.size_mismatch] == [key.relative_to(src).as_posix()]


def test_a_settled_chunk_deleted_unseen_is_pruned_at_the_destination(tmp_path: Path) -> None:
    src, dst, engine, key = settled_archive(tmp_path)
    v = conclude(engine, before=key.unlink)
    assert v.verified and v.destination_walked
    assert [p.as_posix() for p in v.pruned] == [key.relative_to(src).as_posix()]
    assert_same_tree(src, dst)
