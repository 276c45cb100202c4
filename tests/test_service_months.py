"""The service, month after month: every acquisition that appears is copied or named in a report
and a webhook saying why not; a destination that cannot be reached is waited for, never taken for
another one; acquisitions that are let go let go of their watches and threads (docs/design.md,
"Service"). Real processes against real filesystems: a FUSE destination that drops like a share,
a FUSE source whose folders cannot be looked at, tmpfs, a real HTTP receiver for the webhook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_same_tree, fuse_mount, holds_for, start_writer
from test_service import Receiver, chunks
from test_trust4_service import service, wait_or_tell


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def status(report: Path) -> str:
    return str(json.loads(report.read_text())["status"])


def test_a_share_that_drops_at_the_end_is_waited_for_not_taken_for_elsewhere(tmp_path: Path) -> None:
    # The destination's root could not be resolved (EIO: the share dropped) once the marker was
    # there: taken for "the destination leads elsewhere", the run ended Incomplete within 5 s.
    acq, backing, reports, down = (
        tmp_path / "acquisition",
        tmp_path / "backing",
        tmp_path / "reports",
        tmp_path / "down",
    )
    acq.mkdir()
    backing.mkdir()
    reports.mkdir()
    report, go = reports / "live.zarr.json", tmp_path / "go"
    with fuse_mount("faulty_fs.py", backing, tmp_path / "raw", {"FAULTY_TIMES": "0", "FAULTY_DOWN": str(down)}) as raw:
        args = (acq / "*.zarr", raw, "--report", reports / "{name}.json", "--give-up-after", "600")
        with service(tmp_path, *args) as svc:
            writer = start_writer(acq / "live.zarr", "v2dot", 6, 0.05, "--hold", str(go))
            wait_or_tell(lambda: len(chunks(backing / "live.zarr")) >= 6, 60, "the chunks copied", svc)
            down.touch()  # the share drops
            go.touch()  # and the acquisition ends meanwhile
            assert writer.wait(60) == 0
            # Checked twice over the destination's 5 s re-look: the run waits, it does not end.
            holds_for(lambda: not report.exists() and svc.poll() is None, 12, "the run waits for the share")
            down.unlink()  # the share is back
            wait_or_tell(report.exists, 90, "the report", svc)
            assert status(report) == "verified", report.read_text()
            assert_same_tree(acq / "live.zarr", backing / "live.zarr")
