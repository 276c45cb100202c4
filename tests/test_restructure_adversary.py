"""An adversary's reading of the engine's restructuring (subsystem folders, the destination
behind a trait, the typed PyO3 boundary): orderings and inputs where the new code might say more
than the old did. docs/design.md, "The end of a run"."""

from __future__ import annotations

from pathlib import Path

from conftest import conclude
from softcopy._softcopy import Engine
from softcopy.config import EngineConfig, Target


def test_a_verdict_that_is_not_verified_is_never_ok(tmp_path: Path) -> None:
    """`Verdict` extends `Report`, whose `ok` says only that the report lists nothing wrong: a run
    whose end refused to verify (metadata that cannot be read, so chunks cannot be accounted for)
    has an empty list of differences, and its verdict read `ok` True while `verified` was False. A
    caller of the engine who checks `ok`, as the README says to check it on a run's report, took an
    unverified copy for a verified one."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "arr").mkdir(parents=True)
    dst.mkdir()
    (src / "arr" / ".zarray").write_text("{not json")
    (src / "arr" / "0.0").write_bytes(b"chunk")
    v = conclude(Engine(EngineConfig(Target(src, dst, once=True))))
    assert v is not None and not v.verified and v.reason and "cannot verify" in v.reason
    assert not v.ok, "an unverified verdict says ok"
