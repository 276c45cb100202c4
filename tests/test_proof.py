"""The end of a run proves its own copies without walking the destination (docs/design.md, "The end of a run"), and falls
back to the full two-sided walk whenever what it knows might not be all that is there."""

from __future__ import annotations

from pathlib import Path

import softcopy
from conftest import assert_same_tree, conclude, start_writer, write_finished_archive
from softcopy.config import EngineConfig, Target


def test_a_run_that_made_every_copy_proves_them_without_walking_the_destination(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    # tensorstore also unlinks chunks that become fill value: those copies are removed as it goes.
    writer = start_writer(src, "v2dot", 8, 0.05)
    report = softcopy.copy(src, dst, timeout=120)
    assert writer.wait(10) == 0 and report.ok, report
    t = report.targets[0]
    assert not t.destination_walked
    assert t.proven_as_copied == t.files_checked > 0
    assert_same_tree(src, dst)
    # A second run did not make these copies: it looks at every one of them.
    again = softcopy.copy(src, dst, once=True).targets[0]
    assert again.ok and again.destination_walked and again.proven_as_copied == 0


def test_a_copy_whose_source_went_unseen_makes_the_end_walk_the_destination(tmp_path: Path) -> None:
    # Deleted after the drain, with no watch left to see it: the copy's source is gone, so the
    # run's copies are not all of source files. Proven from the copies alone, the stale chunk
    # would stay at the destination where the source reads fill value; walked, it is pruned.
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src, "v2dot", 3)
    key = next(p for p in sorted(src.iterdir()) if p.name[0].isdigit())
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True)))
    v = conclude(engine, before=key.unlink)
    assert v.verified and v.destination_walked
    assert [p.as_posix() for p in v.pruned] == [key.name]
    assert not (dst / key.name).exists()
    assert_same_tree(src, dst)


def test_a_source_file_changed_after_its_copy_is_looked_at_at_the_destination(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src, "v2dot", 3)
    key = next(p for p in sorted(src.iterdir()) if p.name[0].isdigit())
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True)))

    def rewrite() -> None:
        key.write_bytes(b"written after the drain")

    v = conclude(engine, before=rewrite)
    assert not v.verified
    assert [p.as_posix() for p, _, _ in v.size_mismatch] == [key.name]
