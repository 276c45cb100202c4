"""The service's pure decisions, without a service running: where a take's report goes (never over
another take's), the word a webhook gets for how it ended, the backoff of a start that failed, the
re-take rule of an ended acquisition, and which destination name a take is copied to. Each is what
`make mutants-py` found untested by the fast tests (docs/mutants.md, "Python")."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from softcopy import service
from softcopy._softcopy import Owner, SoftcopyError
from softcopy.config import Target
from softcopy.run import TargetReport
from softcopy.service import (
    RETRY_MAX,
    Acquisition,
    NotCopied,
    Service,
    _status,
    _stopped_report_of,
    report_file,
)

IDENTITY = (1, 2, 3, 4)


def acquisition(tmp_path: Path, name: str = "run.zarr") -> Acquisition:
    pattern = Target(tmp_path / "acq" / "*.zarr", tmp_path / "raw")
    target = Target(tmp_path / "acq" / name, tmp_path / "raw" / name)
    return Acquisition(name, target, str(pattern.source), pattern, identity=IDENTITY)


# --- where a take's report goes ------------------------------------------------------------------


def report_of(source: str, destination: str) -> TargetReport:
    return TargetReport(Path(source), Path(destination), "verified")


def write_doc(path: Path, status: str, source: str, destination: str) -> None:
    path.write_text(json.dumps({"status": status, "targets": [{"source": source, "destination": destination}]}))


def test_a_first_report_is_named_after_the_copy(tmp_path: Path) -> None:
    template = str(tmp_path / "{name}.json")
    assert report_file(template, "run.zarr", report_of("/acq/run.zarr", "/raw/run.zarr")) == tmp_path / "run.zarr.json"
    # A re-take copied to run-2.zarr has its report there, named after its copy, not its source.
    retake = report_of("/acq/run.zarr", "/raw/run-2.zarr")
    assert report_file(template, "run.zarr", retake) == tmp_path / "run-2.zarr.json"


@pytest.mark.parametrize("status", ["verified", "incomplete"])
def test_a_report_of_another_take_is_never_written_over(tmp_path: Path, status: str) -> None:
    template = str(tmp_path / "{name}.json")
    write_doc(tmp_path / "run.zarr.json", status, "/acq/run.zarr", "/raw/run.zarr")
    write_doc(tmp_path / "run-2.zarr.json", "verified", "/acq/run.zarr", "/raw/run-2.zarr")
    r = report_of("/acq/run.zarr", "/raw/run.zarr")
    assert report_file(template, "run.zarr", r) == tmp_path / "run-3.zarr.json"


def test_the_report_of_this_copy_stopped_with_the_service_goes_on_there(tmp_path: Path) -> None:
    template = str(tmp_path / "{name}.json")
    write_doc(tmp_path / "run.zarr.json", "interrupted", "/acq/run.zarr", "/raw/run.zarr")
    r = report_of("/acq/run.zarr", "/raw/run.zarr")
    assert report_file(template, "run.zarr", r) == tmp_path / "run.zarr.json"


@pytest.mark.parametrize(
    ("source", "destination"),
    [("/acq/other.zarr", "/raw/run.zarr"), ("/acq/run.zarr", "/raw/run-2.zarr")],
    ids=["another source", "another destination"],
)
def test_a_stopped_report_of_another_copy_is_kept(tmp_path: Path, source: str, destination: str) -> None:
    write_doc(tmp_path / "run.zarr.json", "interrupted", source, destination)
    r = report_of("/acq/run.zarr", "/raw/run.zarr")
    assert report_file(str(tmp_path / "{name}.json"), "run.zarr", r) == tmp_path / "run-2.zarr.json"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"status": "interrupted"}',
        '{"status": "interrupted", "targets": []}',
        '{"status": "interrupted", "targets": [{"source": "/acq/run.zarr"}]}',
        '{"status": "interrupted", "targets": [{"source": "/acq/run.zarr", "destination": "/raw/run.zarr"}, {}]}',
    ],
)
def test_a_file_that_is_no_stopped_report_of_this_copy_is_kept(tmp_path: Path, content: str) -> None:
    path = tmp_path / "run.zarr.json"
    path.write_text(content)
    assert not _stopped_report_of(path, report_of("/acq/run.zarr", "/raw/run.zarr"))


def test_a_folder_where_the_report_would_go_is_kept(tmp_path: Path) -> None:
    (tmp_path / "run.zarr.json").mkdir()
    assert not _stopped_report_of(tmp_path / "run.zarr.json", report_of("/acq/run.zarr", "/raw/run.zarr"))


# --- the webhook's word for how an acquisition ended ---------------------------------------------


def test_the_status_a_webhook_gets(tmp_path: Path) -> None:
    acq = acquisition(tmp_path)
    ok = TargetReport(acq.folder, acq.target.destination, "verified", verified=True)
    failed = TargetReport(acq.folder, acq.target.destination, "failed", fatal="disk full")
    unverified = TargetReport(acq.folder, acq.target.destination, "done")
    assert _status(acq, ok) == "verified"
    assert _status(acq, failed) == "failed"
    assert _status(acq, unverified) == "incomplete"
    acq.starting = True
    assert _status(acq, failed) == "cannot start"
    acq.starting, acq.not_copied = False, NotCopied.CANNOT_START
    assert _status(acq, failed) == "cannot start"
    acq.let_go = "let go: its folder is gone"
    assert _status(acq, failed) == "let go"
    assert _status(acq, ok) == "verified", "a copy verified is verified, however it was let go"


# --- the backoff of a start that failed ----------------------------------------------------------


def test_a_start_that_failed_is_tried_again_doubling_from_1_s_up_to_5_minutes(tmp_path: Path) -> None:
    s = Service([], tell_after=3600.0)
    acq = acquisition(tmp_path)
    waits = []
    for _ in range(12):
        before = time.monotonic()
        s._failed_start(acq, "the destination refused")
        after = time.monotonic()
        assert acq.retry is not None
        # next_at is now + wait, with now read between before and after.
        (wait,) = {
            w
            for w in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, RETRY_MAX)
            if before + w <= acq.retry.next_at <= after + w
        }
        waits.append(wait)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]
    assert acq.retry is not None and acq.retry.tries == 12
    assert s.acquisitions[acq.folder] is acq
    assert (acq.starting, acq.not_copied, acq.why) == (False, NotCopied.CANNOT_START, "the destination refused")


def ended_reports(s: Service) -> list[TargetReport]:
    told: list[TargetReport] = []

    def ended(a: Acquisition) -> None:
        assert a.report is not None
        told.append(a.report)

    s._ended = ended
    return told


def test_a_start_that_keeps_failing_is_told_once_after_tell_after(tmp_path: Path) -> None:
    s = Service([], tell_after=0.0)
    told = ended_reports(s)
    acq = acquisition(tmp_path)
    s._failed_start(acq, "claimed by another run")
    assert len(told) == 1, "told at the first failure once tell_after has passed"
    s._failed_start(acq, "claimed by another run")
    assert [(r.phase, r.fatal, r.destination) for r in told] == [
        ("failed", "cannot start: claimed by another run", tmp_path / "raw" / "run.zarr")
    ]
    assert acq.report is None, "it is still tried: no report is kept"


def test_a_start_that_failed_is_not_told_before_tell_after(tmp_path: Path) -> None:
    s = Service([], tell_after=3600.0)
    told = ended_reports(s)
    s._failed_start(acquisition(tmp_path), "claimed by another run")
    assert told == []


# --- the re-take rule of an ended acquisition ----------------------------------------------------


def ended(tmp_path: Path, *, deleted: int = 0, kept: int = 0, files: bool = False) -> Acquisition:
    acq = acquisition(tmp_path)
    acq.folder.mkdir(parents=True)
    if files:
        (acq.folder / "0.0").write_bytes(b"a new take")
    acq.report = TargetReport(acq.folder, acq.target.destination, "verified", verified=True, source_deleted=deleted)
    acq.report.source_kept = [("x", "changed")] * kept
    return acq


def test_an_ended_acquisition_is_not_taken_again_while_its_folder_is_unchanged(tmp_path: Path) -> None:
    s = Service([])
    acq = ended(tmp_path, files=True)
    s.acquisitions[acq.folder] = acq
    s._forget(acq, 123)
    assert s._done == {acq.folder: (IDENTITY, 123)}
    assert acq.folder not in s.acquisitions and list(s.recent) == [acq]


def test_a_folder_freed_whole_with_files_in_it_again_is_a_new_take(tmp_path: Path) -> None:
    s = Service([])
    s._forget(ended(tmp_path, deleted=1, files=True), 123)
    assert s._done == {}


@pytest.mark.parametrize(
    ("deleted", "kept", "files"),
    [(3, 0, False), (0, 0, True), (3, 1, True)],
    ids=["freed and empty", "nothing freed", "some kept"],
)
def test_only_a_folder_freed_whole_and_written_again_is_taken_again(
    tmp_path: Path, deleted: int, kept: int, files: bool
) -> None:
    s = Service([])
    acq = ended(tmp_path, deleted=deleted, kept=kept, files=files)
    s._forget(acq, 123)
    assert s._done == {acq.folder: (IDENTITY, 123)}


def test_an_acquisition_let_go_or_never_looked_at_is_not_recorded_as_done(tmp_path: Path) -> None:
    s = Service([])
    acq = ended(tmp_path)
    acq.let_go = "let go: its folder is gone"
    s._forget(acq, 123)
    other = acquisition(tmp_path, "other.zarr")
    other.identity = None
    s._forget(other, 123)
    assert s._done == {}
    assert list(s.recent) == [acq, other]


# --- which destination name a take is copied to --------------------------------------------------

Owners = Callable[[Path, Path, str], tuple[Owner, object]]


def owners(by_name: Mapping[str, Owner | Exception]) -> Owners:
    """A destination_owner that answers by the destination's name (Free for any other)."""

    def owner(source: Path, destination: Path, marker: str, *, ssh_command: str | None = None) -> tuple[Owner, object]:
        assert (source.name, marker) == ("run.zarr", "done"), (source, marker)
        whose = by_name.get(destination.name, Owner.Free)
        if isinstance(whose, Exception):
            raise whose
        return whose, None

    return owner


def destination(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    by_name: Mapping[str, Owner | Exception],
    *,
    verified: bool = False,
    same: bool = False,
) -> tuple[str, Owner | None]:
    monkeypatch.setattr(service, "destination_owner", owners(by_name))
    monkeypatch.setattr(service, "already_verified", lambda t: verified and t.destination.name == "run.zarr")
    monkeypatch.setattr(service, "same_files", lambda t: same and t.destination.name == "run.zarr")
    pattern = Target(tmp_path / "acq" / "*.zarr", tmp_path / "raw", marker="done")
    target, whose = Service([])._destination(pattern, tmp_path / "acq" / "run.zarr", "run.zarr")
    assert isinstance(target.destination, Path)
    assert (target.source, target.destination.parent, target.marker) == (
        tmp_path / "acq" / "run.zarr",
        tmp_path / "raw",
        "done",
    )
    return target.destination.name, whose


@pytest.mark.parametrize("whose", [Owner.Free, Owner.Ours, Owner.Finished])
def test_a_take_is_copied_to_its_own_name_when_that_is_free_or_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, whose: Owner
) -> None:
    with caplog.at_level(logging.WARNING, logger="softcopy"):
        assert destination(tmp_path, monkeypatch, {"run.zarr": whose}) == ("run.zarr", whose)
    assert caplog.records == [], "nothing to say of a take copied to its own name"


@pytest.mark.parametrize("taken", [1, 2])
def test_a_take_whose_name_holds_another_copy_goes_to_the_first_free_numbered_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, taken: int
) -> None:
    others = dict.fromkeys(["run.zarr", "run-2.zarr"][:taken], Owner.Another)
    free = f"run-{taken + 1}.zarr"
    with caplog.at_level(logging.WARNING, logger="softcopy"):
        assert destination(tmp_path, monkeypatch, others) == (free, Owner.Free)
    said = f"{tmp_path / 'raw' / 'run.zarr'} holds another acquisition's copy; this one is copied to"
    assert [r.getMessage() for r in caplog.records] == [f"run.zarr: {said} {tmp_path / 'raw' / free}"]


def test_a_take_found_at_a_numbered_name_resumes_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {"run.zarr": Owner.Another, "run-2.zarr": Owner.Ours}
    assert destination(tmp_path, monkeypatch, taken) == ("run-2.zarr", Owner.Ours)


def test_a_copy_without_a_record_is_taken_as_this_takes_only_when_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unrecorded = {"run.zarr": Owner.Unrecorded}
    assert destination(tmp_path, monkeypatch, unrecorded, verified=True) == ("run.zarr", Owner.Unrecorded)
    assert destination(tmp_path, monkeypatch, unrecorded, verified=False) == ("run-2.zarr", Owner.Free)


@pytest.mark.parametrize(("verified", "same"), [(True, True), (True, False), (False, True)])
def test_a_copy_recorded_by_inode_number_alone_is_this_takes_only_when_every_file_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verified: bool, same: bool
) -> None:
    number = {"run.zarr": Owner.SameNumber}
    got = destination(tmp_path, monkeypatch, number, verified=verified, same=same)
    assert got == (("run.zarr", Owner.SameNumber) if verified and same else ("run-2.zarr", Owner.Free))


def test_a_destination_claimed_by_another_run_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"run\.zarr is another softcopy's destination now"):
        destination(tmp_path, monkeypatch, {"run.zarr": Owner.Claimed})


def test_a_destination_that_cannot_be_told_is_tried_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its copy starts and fails there with a report saying why; no other name is taken for it.
    cannot: dict[str, Owner | Exception] = {"run.zarr": Owner.Another, "run-2.zarr": SoftcopyError("EIO")}
    assert destination(tmp_path, monkeypatch, cannot) == ("run-2.zarr", None)


def test_no_free_name_among_999_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def another(_source: Path, dst: Path, _marker: str, *, ssh_command: str | None = None) -> tuple[Owner, object]:
        seen.append(dst.name)
        return Owner.Another, None

    monkeypatch.setattr(service, "destination_owner", another)
    pattern = Target(tmp_path / "acq" / "*.zarr", tmp_path / "raw")
    with pytest.raises(ValueError, match="no free destination name for run.zarr in"):
        Service([])._destination(pattern, tmp_path / "acq" / "run.zarr", "run.zarr")
    assert seen == ["run.zarr", *(f"run-{n}.zarr" for n in range(2, 1000))]
