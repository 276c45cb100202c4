"""`softcopy status`: a running service (a real process) asked at its --metrics address shows its
acquisitions in flight and the last ones ended in the live display's table; nothing answering is
one line and exit 1; the list of those ended stays bounded. And the display's estimate once an
acquisition is over counts bytes, not files."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import finish, softcopy_cmd, start_writer, wait_for
from softcopy.config import make_target
from softcopy.display import _percent_eta
from softcopy.run import Copier, Progress
from softcopy.service import RECENT
from softcopy.status import fetch, still
from test_service import free_port


def status(port: int) -> subprocess.CompletedProcess[str]:
    argv = softcopy_cmd("status", "--metrics", f"127.0.0.1:{port}")
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)


def rows(r: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The two tables' text: in flight, and recently ended."""
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    in_flight, ended = r.stdout.split("recently ended")
    return in_flight, ended


def row(table: str, name: str) -> str:
    """The table's row of `name` ("" when it has none)."""
    return next((line for line in table.splitlines() if line.startswith(f"{name} ")), "")


def test_status_shows_an_acquisition_in_flight_then_ended_verified(tmp_path: Path, run_softcopy: Any) -> None:
    acq, dst, go = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "go"
    acq.mkdir()
    dst.mkdir()
    port = free_port()
    service = run_softcopy(acq / "*.zarr", dst, "--metrics", f"127.0.0.1:{port}")
    # The writer holds its marker back until told: the copy is in flight for as long as the test looks.
    writer = start_writer(acq / "live.zarr", "v2dot", 6, 0.05, "--hold", str(go))

    def copying() -> bool:
        r = status(port)
        return r.returncode == 0 and "copying" in row(rows(r)[0], "live.zarr")

    wait_for(copying, 60, "status to show the acquisition in flight, copying")
    assert row(rows(status(port))[1], "live.zarr") == "", "ended while its writer writes"
    go.touch()
    assert writer.wait(120) == 0

    def ended_verified() -> bool:
        in_flight, ended = rows(status(port))
        return "live.zarr" not in in_flight and any(
            "live.zarr" in line and " done " in line for line in ended.splitlines()
        )

    wait_for(ended_verified, 60, "status to show the acquisition ended, verified")
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143


def test_status_says_where_it_asked_when_no_service_answers() -> None:
    port = free_port()
    r = status(port)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"no softcopy service answers at 127.0.0.1:{port}" in r.stderr, r.stderr


def test_the_recently_ended_are_bounded(tmp_path: Path, run_softcopy: Any) -> None:
    """More acquisitions ended than are kept (each verified earlier: its marker at the destination
    as copied, so none is copied again): the service shows the last `RECENT` only."""
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    names = [f"run{i:03d}.zarr" for i in range(RECENT + 5)]
    for name in names:
        (acq / name).mkdir(parents=True)
        (dst / name).mkdir(parents=True)
        (acq / name / "complete").write_text(name)
        shutil.copy2(acq / name / "complete", dst / name / "complete")
    port = free_port()
    service = run_softcopy(acq / "*.zarr", dst, "--metrics", f"127.0.0.1:{port}")

    def all_seen() -> bool:
        try:
            shown = fetch(("127.0.0.1", port))
        except OSError:
            return False
        return not shown.in_flight and names[-1] in {p.source.name for p in shown.ended}

    wait_for(all_seen, 60, "every acquisition to be recognised as verified earlier")
    ended = fetch(("127.0.0.1", port)).ended
    assert [p.source.name for p in ended] == names[-RECENT:]
    assert {p.phase for p in ended} == {"verified"}
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143


def test_the_estimate_at_the_end_counts_bytes_not_files() -> None:
    """99 small files copied and one large file left: under 1 % of the bytes are there, not 99 %, and
    the time left is the large file's at the rate seen (1 KB/s: 1000 s)."""
    small, large = 100, 1_000_000
    p = dataclasses.replace(
        still(Path("a.zarr"), Path("b.zarr"), "reconciling", files_copied=99, bytes_copied=99 * small, elapsed=9.9),
        known=100,
        backlog=1,
        bytes_known=99 * small + large,
        bytes_left=large,
    )
    assert _percent_eta(p) == "0% ~16m40"
    # Before the end's sweep counted bytes, files stand in for them.
    assert _percent_eta(dataclasses.replace(p, bytes_known=0, bytes_left=0)) == "99% ~0 s"


def test_an_engine_whose_acquisition_is_over_counts_the_bytes_left(tmp_path: Path) -> None:
    """50 small files copied live, then one large one written and the acquisition ended, copied at
    1 MiB/s: the engine counts the large file's bytes as left, and the display says so (by files
    it said 98 % and a fraction of a second)."""
    src, big = tmp_path / "src", 2 << 20
    (src / "c").mkdir(parents=True)
    target = make_target(src, tmp_path / "dst", {"max_rate": "1M"})
    with Copier([target]) as copier:
        for i in range(50):
            (src / "c" / str(i)).write_bytes(os.urandom(100))
        wait_for(lambda: copier.status()[0].files_copied == 50, 30, "the small files to be copied")
        (src / "big.tmp").write_bytes(os.urandom(big))
        (src / "big.tmp").rename(src / "big")
        (src / "complete").touch()
        seen: list[Progress] = []

        def sized() -> bool:
            seen.append(copier.status()[0])
            return seen[-1].bytes_known > 0 or seen[-1].phase in ("verifying", "verified", "failed")

        wait_for(sized, 30, "the end to count the bytes left")
        p = seen[-1]
        assert (p.phase, p.files_copied, p.bytes_known, p.bytes_left) == ("reconciling", 50, 50 * 100 + big, big), p
        assert _percent_eta(p).startswith("0% ~"), _percent_eta(p)
        report = copier.wait(60)
    assert report is not None and report.ok
