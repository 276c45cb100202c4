"""The soak of the service, short: the code `make soak` runs for ten minutes (tests/soak_service.py),
with a fixed seed, a dozen acquisitions and a local destination (the share dropped over sshfs is the
long form's), so every kind of acquisition and fault is seen once in CI; and what the soak found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _share import Sshd
from conftest import fuse_mount, holds_for, tree, wait_for
from soak_service import Options, Service, footprint, run
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


@pytest.mark.parametrize(
    ("how", "stem"),
    [("kill", "x"), ("sigterm", "x"), ("kill", os.fsdecode(b"x\xe9")), ("sigterm", os.fsdecode(b"x\xe9"))],
)
def test_an_acquisition_renamed_aside_just_before_the_service_ends_is_named_in_a_report_once(
    tmp_path: Path, how: str, stem: str
) -> None:
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    for d in (acq, dst, reports):
        d.mkdir()
    args = (acq / "*.zarr", dst, "--report", reports / "{name}.json")
    name = f"{stem}.zarr"
    with service(tmp_path, *args) as svc:
        (acq / name).mkdir()
        (acq / name / "0.0").write_bytes(b"first")  # an acquisition in flight: no marker
        wait_or_tell((dst / name / "0.0").exists, 30, "the chunk's copy", svc)
        (acq / name).rename(acq / "x.aside")
        # A power cut or an OOM kill; or a stop, whose report says it resumes: before the 10 s
        # after which a running service lets it go.
        svc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        svc.wait()
    report = reports / f"{name}.json"
    for start in (1, 2):
        (tmp_path / "notify.sock").unlink()
        with service(tmp_path, *args) as svc:
            wait_or_tell(lambda: "looked for copies left unfinished" in svc.output(), 20, "the look", svc)
            wait_or_tell(lambda: report.exists() and "let go" in report.read_text(), 20, "a report naming it", svc)
            doc = json.loads(report.read_text())
            assert doc["status"] != "interrupted" and "let go" in str(doc["targets"][0]["fatal"]), doc
            if start == 1:
                told = report.stat().st_mtime_ns
                wait_or_tell((dst / name / ".softcopy-let-go").exists, 20, "the note", svc)
            # Told once: the service started again names it no more.
            assert report.stat().st_mtime_ns == told and [p.name for p in reports.iterdir()] == [report.name]
            assert "Traceback" not in svc.output(), svc.output()
    assert tree(dst / name) == {"0.0": b"first"}  # kept as it is


def test_an_acquisition_whose_disk_is_not_mounted_when_the_service_starts_is_not_named_let_go(
    tmp_path: Path,
) -> None:
    with acquisitions_on_a_disk(tmp_path) as (acq, dst, reports, args):
        killed_while_copying(tmp_path, args, acq / "x.zarr", dst / "x.zarr")
        subprocess.run(["umount", "-l", str(acq)], check=True)  # the disk is not there at the next start
        assert_none_named_let_go(tmp_path, args, reports, dst / "x.zarr")


Args = tuple[str | Path, ...]


def service_folders(tmp_path: Path) -> tuple[Path, Path, Path, Args]:
    """An acquisitions folder, a destination and a reports' folder, made, and the service's
    arguments over them."""
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    for d in (acq, dst, reports):
        d.mkdir()
    return acq, dst, reports, (acq / "*.zarr", dst, "--report", reports / "{name}.json")


@contextmanager
def acquisitions_on_a_disk(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Args]]:
    """The acquisitions folder on a disk of its own (a tmpfs, unmounted at the end), the destination
    and the reports' folder, and the service's arguments over them."""
    acq, dst, reports, args = service_folders(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(acq)], check=True)
    try:
        yield acq, dst, reports, args
    finally:
        subprocess.run(["umount", "-l", str(acq)], check=False)


def killed_while_copying(tmp_path: Path, args: Args, src: Path, copy: Path) -> None:
    """A service copying the acquisition `src` (in flight: no marker) to `copy`, killed (SIGKILL)
    once its first chunk is copied."""
    with service(tmp_path, *args) as svc:
        src.mkdir()
        (src / "0.0").write_bytes(b"first")
        wait_or_tell((copy / "0.0").exists, 30, "the chunk's copy", svc)
        svc.send_signal(signal.SIGKILL)
        svc.wait()


def assert_none_named_let_go(tmp_path: Path, args: Args, reports: Path, copy: Path) -> None:
    """The service started again looks for copies left unfinished and names none: no report, and
    no note at `copy`. The count in the look's log line decides: the reports of what it found are
    written after that line, so their absence right then proves nothing."""
    (tmp_path / "notify.sock").unlink(missing_ok=True)  # an earlier service's
    with service(tmp_path, *args) as svc:
        wait_or_tell(lambda: "looked for copies left unfinished" in svc.output(), 20, "the look", svc)
        assert f"looked for copies left unfinished in {copy.parent}: 0" in svc.output(), svc.output()
        assert not list(reports.iterdir()), svc.output()
        assert not (copy / ".softcopy-let-go").exists()


def test_a_service_started_while_its_destination_share_is_down_waits_for_it(tmp_path: Path) -> None:
    acq, backing, down = tmp_path / "acquisition", tmp_path / "backing", tmp_path / "down"
    acq.mkdir()
    (backing / "raw").mkdir(parents=True)
    with fuse_mount("faulty_fs.py", backing, tmp_path / "mnt", {"FAULTY_TIMES": "0", "FAULTY_DOWN": str(down)}) as mnt:
        down.touch()  # the share's server is gone when the service starts
        svc = Service(tmp_path, [f"{acq}/*.zarr", str(mnt / "raw")])
        try:
            code = svc.start()
            assert code is None, f"the service exited {code}:\n{svc.tail()}"
            down.unlink()  # the share is back
            files = take(acq / "a.zarr", 3, 2)
            wait_for(lambda: (backing / "raw" / "a.zarr" / "complete").exists(), 30, "the copy")
        finally:
            down.unlink(missing_ok=True)
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop("sigterm")
    assert tree(backing / "raw" / "a.zarr") == files


def test_an_acquisition_that_appears_while_the_share_is_down_is_copied_once_it_is_back(
    tmp_path: Path, sshd: Sshd
) -> None:
    remote, mnt, acq, reports = tmp_path / "remote", tmp_path / "mnt", tmp_path / "acquisition", tmp_path / "reports"
    for d in (remote / "raw", mnt, acq, reports):
        d.mkdir(parents=True)
    report = reports / "a.zarr.json"
    sshd.mount(remote, mnt)
    try:
        with service(tmp_path, acq / "*.zarr", mnt / "raw", "--report", reports / "{name}.json") as svc:
            sshd.kill()  # the share drops
            files = take(acq / "a.zarr", 3, 4)  # and a finished acquisition appears meanwhile

            def waits() -> bool:
                assert not report.exists(), f"the copy ended while the share was down: {report.read_text()}"
                return True

            holds_for(waits, 8, "the copy waits for the share")
            sshd.start()  # sshfs reconnects by itself
            wait_or_tell(report.exists, 60, "the report", svc)
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False)
    assert json.loads(report.read_text())["status"] == "verified", report.read_text()
    assert tree(remote / "raw" / "a.zarr") == files
