"""The soak of the service, short: the code `make soak` runs for ten minutes (tests/soak_service.py),
with a fixed seed, a dozen acquisitions and a local destination (the share dropped over sshfs is the
long form's), so every kind of acquisition and fault is seen once in CI; and what the soak found."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tree
from soak_service import Options, footprint, run
from test_trust4_service import service, take, wait_or_tell


def test_a_short_soak_of_the_service_loses_nothing_and_ends_with_the_footprint_it_started_with(
    tmp_path: Path,
) -> None:
    summary = run(Options(minutes=0.4, seed=7, acquisitions=12, share="local", end_timeout=25), tmp_path)
    said = "\n".join(summary.lines())
    print(said)
    log = (tmp_path / "service.log").read_text(errors="replace")[-4000:]
    assert not summary.findings, f"{said}\nthe service's log ends:\n{log}"
    # A soak that made nothing happen proves nothing: each kind of acquisition and fault was there.
    made, faults = summary.takes, summary.faults
    for what in ("tensorstore", "zarr-python", "hand", "odd name", "finished", "aborted", "renamed", "re-taken"):
        assert made[what] > 0, f"no acquisition {what}: {said}"
    for fault in ("sigterm", "kill", "acquisitions folder remade"):
        assert faults[fault] > 0, f"no fault {fault}: {said}"
    assert any(k.startswith("webhook ") for k in faults), said
    assert summary.idle is not None and summary.end is not None
    assert summary.end.inotify <= summary.idle.inotify, said


@pytest.mark.xfail(
    strict=True,
    reason="BUG in python/softcopy/service.py, found by the soak (--remake-unfinished): an acquisition in "
    "flight whose acquisitions folder is moved away and made again is never let go (Service._look_at_folder "
    "lets go only a copy its engine paused, and an engine whose root moved with its parent never pauses), "
    "so it keeps its threads and inotify instances for ever, and a new take under its name in the folder "
    "made again is never copied nor reported (Service._consider skips a name whose copy is in flight)",
)
def test_an_acquisition_in_flight_when_its_acquisitions_folder_is_moved_away_is_let_go(tmp_path: Path) -> None:
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    dst.mkdir()
    with service(tmp_path, acq / "*.zarr", dst) as svc:
        idle = footprint(svc.pid)
        assert idle is not None
        (acq / "x.zarr").mkdir()
        (acq / "x.zarr" / "0.0").write_bytes(b"first")  # an acquisition in flight: no marker
        wait_or_tell((dst / "x.zarr" / "0.0").exists, 30, "the first take's chunk", svc)
        acq.rename(tmp_path / "away")  # a disk remounted elsewhere, an admin's cleanup
        acq.mkdir()
        files = take(acq / "x.zarr", 3, 5)
        wait_or_tell(lambda: any(tree(d) == files for d in dst.iterdir()), 20, "the new take's copy", svc)

        def let_go() -> bool:
            now = footprint(svc.pid)
            return now is not None and now.inotify <= idle.inotify

        wait_or_tell(let_go, 20, "the first take let go", svc)
