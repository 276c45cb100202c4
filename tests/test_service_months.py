"""The service, month after month: every acquisition that appears is copied or named in a report
and a webhook saying why not; a destination that cannot be reached is waited for, never taken for
another one; acquisitions that are let go let go of their watches and threads (docs/design.md,
"Service"). Real processes against real filesystems: a FUSE destination that drops like a share,
a FUSE source whose folders cannot be looked at, tmpfs, a real HTTP receiver for the webhook."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import assert_same_tree, finish, fuse_mount, holds_for, softcopy_cmd, start_writer, tree, wait_for
from softcopy.config import Target
from softcopy.run import Progress
from softcopy.service import LET_GO_AFTER, RELIST_EVERY, UNMOUNTED, Acquisition, Service
from softcopy.watching import StartRequest
from test_service import Receiver, chunks, free_port
from test_trust4_service import service, take, wait_or_tell


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


NO_RELIST = {"SOFTCOPY_RELIST_EVERY": "3600"}
"""A service that lists its acquisitions folders only at the start and when their watch is made
again: what it copies later it heard of (docs/design.md, "Service, month after month")."""


def settled(events: list[dict[str, object]], status: str) -> bool:
    return any(e["event"] == "ended" and e["status"] == status for e in events)


def test_the_acquisitions_folder_removed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    # Its watch was never made again: every acquisition after that was silently never copied.
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    for d in (acq, dst, reports):
        d.mkdir()
    with service(tmp_path, acq / "*.zarr", dst, "--report", reports / "{name}.json", env=NO_RELIST) as svc:
        acq.rmdir()  # an admin's cleanup, a disk remounted
        acq.mkdir()
        files = take(acq / "after.zarr", 3, 5)
        # Long before any relisting: the folder is watched again, and the new one heard.
        wait_or_tell((reports / "after.zarr.json").exists, 30, "the new acquisition's report", svc)
        assert status(reports / "after.zarr.json") == "verified"
        assert tree(dst / "after.zarr") == files
        assert svc.poll() is None and "Traceback" not in svc.output(), svc.output()


def test_an_acquisition_renamed_aside_is_let_go_and_a_new_take_under_its_name_is_copied(
    tmp_path: Path, receiver: Receiver
) -> None:
    # The new take was never copied; the renamed one stayed "in flight" for ever. Then: the new
    # take's report replaced the first take's (both `{name}`).
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    for d in (acq, dst, reports):
        d.mkdir()
    args = (acq / "*.zarr", dst, "--notify", receiver.url, "--report", reports / "{name}.json")
    with service(tmp_path, *args) as svc:
        (acq / "fish.zarr").mkdir()  # the first take, in flight (no marker yet)
        (acq / "fish.zarr" / "0.0").write_bytes(b"first")
        wait_or_tell((dst / "fish.zarr" / "0.0").exists, 30, "the first take's chunk", svc)
        (acq / "fish.zarr").rename(acq / "fish.aside")
        files = take(acq / "fish.zarr", 3, 9)
        (acq / "fish.zarr" / "complete").unlink()  # the new take, in flight too
        wait_or_tell(lambda: len(chunks(dst / "fish-2.zarr")) == 3, 30, "the new take's chunks", svc)
        wait_or_tell(lambda: settled(receiver.events("fish.zarr"), "let go"), 30, "the first take let go", svc)
        (acq / "fish.zarr" / "complete").touch()
        files = tree(acq / "fish.zarr")
        wait_or_tell(lambda: settled(receiver.events("fish.zarr"), "verified"), 60, "the new take verified", svc)
    assert tree(dst / "fish-2.zarr") == files, "the new take, beside the first take's copy"
    assert tree(dst / "fish.zarr") == {"0.0": b"first"}, "the first take's copy is kept as it was"
    (let_go,) = [e for e in receiver.events("fish.zarr") if e["status"] == "let go"]
    assert "renamed" in str(let_go["report"]["targets"][0]["fatal"]), let_go
    # Each take's report under its copy's name: the first take's is kept.
    first, second = (json.loads((reports / n).read_text()) for n in ("fish.zarr.json", "fish-2.zarr.json"))
    assert "let go" in first["targets"][0]["fatal"] and first["targets"][0]["destination"] == str(dst / "fish.zarr")
    assert second["status"] == "verified" and second["targets"][0]["destination"] == str(dst / "fish-2.zarr")


def footprint(pid: int) -> tuple[int, int]:
    """The process's threads and inotify instances."""
    fds = Path(f"/proc/{pid}/fd")
    inotify = 0
    for fd in fds.iterdir():
        try:
            inotify += os.readlink(fd) == "anon_inode:inotify"
        except FileNotFoundError:
            continue
    return len(list(Path(f"/proc/{pid}/task").iterdir())), inotify


def test_abandoned_acquisitions_let_go_of_their_watches_and_threads(tmp_path: Path, receiver: Receiver) -> None:
    # Each deleted acquisition kept its inotify instances and threads for ever: 66 of them and the
    # next real acquisition could not start.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    dst.mkdir()
    with service(tmp_path, acq / "*.zarr", dst, "--notify", receiver.url) as svc:
        threads, inotify = footprint(svc.pid)
        for i in range(6):  # aborted acquisitions: a chunk, never a marker
            (acq / f"abort{i}.zarr").mkdir()
            (acq / f"abort{i}.zarr" / "0.0").write_bytes(b"x" * 8)
        wait_or_tell(lambda: all((dst / f"abort{i}.zarr" / "0.0").exists() for i in range(6)), 60, "copies", svc)
        assert footprint(svc.pid)[1] > inotify, "each copy in flight watches its folder"
        for i in range(6):
            shutil.rmtree(acq / f"abort{i}.zarr")
        pid = svc.pid

        def back() -> bool:
            now_threads, now_inotify = footprint(pid)
            return now_threads <= threads and now_inotify <= inotify

        wait_or_tell(back, 60, "the footprint back to the start", svc)
        names = [f"abort{i}.zarr" for i in range(6)]
        wait_or_tell(lambda: all(settled(receiver.events(n), "let go") for n in names), 20, "the webhooks", svc)
        files = take(acq / "next.zarr", 2, 3)
        wait_or_tell(lambda: settled(receiver.events("next.zarr"), "verified"), 60, "the next acquisition", svc)
        assert tree(dst / "next.zarr") == files


def test_a_freed_acquisition_is_not_taken_again_at_a_restart(tmp_path: Path) -> None:
    # Copied with --delete-source by the service, its folder emptied: at every restart it came
    # back as a new acquisition that waited for its marker for ever.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    files = take(acq / "x.zarr", 3, 1)
    args = (acq / "*.zarr", dst, "--delete-source")
    with service(tmp_path, *args) as svc:
        wait_or_tell(lambda: not any(p.is_file() for p in (acq / "x.zarr").rglob("*")), 60, "the source freed", svc)
        svc.send_signal(signal.SIGTERM)
        assert finish(svc, 30)[0] == 143
    (tmp_path / "notify.sock").unlink()
    with service(tmp_path, *args) as svc:
        wait_or_tell(lambda: "x.zarr: already verified" in svc.output(), 30, "the restart to skip x.zarr", svc)
        assert "a new acquisition" not in svc.output()
    assert (dst / "x.zarr" / "complete").exists() and tree(dst / "x.zarr") == files


def test_a_take_written_into_a_folder_the_service_freed_is_copied(tmp_path: Path) -> None:
    # The folder freed whole keeps its identity: a new take written into it was never copied nor
    # reported while the service ran (its folder counted as ended).
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    first = take(acq / "x.zarr", 3, 1)
    with service(tmp_path, acq / "*.zarr", dst, "--delete-source") as svc:
        wait_or_tell(lambda: not any(p.is_file() for p in (acq / "x.zarr").rglob("*")), 60, "the source freed", svc)
        second = take(acq / "x.zarr", 2, 7)
        wait_or_tell(lambda: (dst / "x-2.zarr" / "complete").exists(), 120, "the second take's copy", svc)
    assert tree(dst / "x.zarr") == first, "the first take's copy is kept as it was"
    assert tree(dst / "x-2.zarr") == second


def test_a_folder_whose_name_is_not_utf8_made_while_running_is_copied(tmp_path: Path) -> None:
    # The name reached the service mangled (lossy UTF-8) and the folder was dropped silently.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    dst.mkdir()
    name = os.fsdecode(b"fish\xe9.zarr")
    with service(tmp_path, acq / "*.zarr", dst, env=NO_RELIST) as svc:
        files = take(acq / name, 3, 4)
        # Long before any relisting: the name was heard, in its own bytes.
        wait_or_tell(lambda: (dst / name / "complete").exists(), 30, "the copy of the odd name", svc)
    assert tree(dst / name) == files


def test_a_folder_that_cannot_be_looked_at_is_retried_and_named_until_it_can(
    tmp_path: Path, receiver: Receiver
) -> None:
    # EIO when the folder appeared: one log line, never retried, no report, no webhook. Then: its
    # report replaced an earlier take's of the same name (both `{name}`).
    backing, dst, reports, arm = tmp_path / "backing", tmp_path / "raw", tmp_path / "reports", tmp_path / "arm"
    for d in (backing / "acquisition", backing / "staging", dst, reports):
        d.mkdir(parents=True)
    env = {"FAULTY_TIMES": "0", "FAULTY_GETATTR": "flaky.zarr", "FAULTY_GETATTR_ARM": str(arm)}
    with fuse_mount("faulty_fs.py", backing, tmp_path / "mnt", env) as mnt:
        acq = mnt / "acquisition"
        args = (acq / "*.zarr", dst, "--report", reports / "{name}.json", "--notify", receiver.url)
        with service(tmp_path, *args, "--notify-after", "1") as svc:
            take(acq / "flaky.zarr", 1, 1)  # an earlier take, copied
            wait_or_tell(lambda: settled(receiver.events("flaky.zarr"), "verified"), 60, "the earlier take", svc)
            shutil.rmtree(acq / "flaky.zarr")
            files = take(mnt / "staging" / "take", 3, 6)
            arm.touch()
            (mnt / "staging" / "take").rename(acq / "flaky.zarr")  # it appears, and cannot be looked at
            wait_or_tell(lambda: len(receiver.events("flaky.zarr")) == 2, 30, "the webhook", svc)
            assert settled(receiver.events("flaky.zarr"), "cannot start"), receiver.events("flaky.zarr")
            # Its report beside the earlier take's, under the name its copy will have.
            assert "cannot start" in str(json.loads((reports / "flaky-2.zarr.json").read_text())["targets"][0]["fatal"])
            arm.unlink()  # the share answers again
            wait_or_tell(lambda: len(receiver.events("flaky.zarr")) == 3, 60, "the copy", svc)
            assert settled(receiver.events("flaky.zarr")[2:], "verified"), receiver.events("flaky.zarr")
        assert tree(dst / "flaky-2.zarr") == files
        assert status(reports / "flaky.zarr.json") == status(reports / "flaky-2.zarr.json") == "verified"


def test_a_destination_that_hangs_never_stops_the_services_loop(tmp_path: Path) -> None:
    # The loop looked at a new acquisition's destination itself (its marker, its parent made): a
    # hard-mounted share whose server is gone stopped the loop, and with it every acquisition and
    # the watchdog's pings.
    acq, backing, hang, log = tmp_path / "acquisition", tmp_path / "backing", tmp_path / "hang", tmp_path / "log"
    acq.mkdir()
    backing.mkdir()
    with (
        fuse_mount("faulty_fs.py", backing, tmp_path / "raw", {"FAULTY_TIMES": "0", "FAULTY_HANG": str(hang)}) as raw,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s,
    ):
        s.bind(str(tmp_path / "notify.sock"))
        s.settimeout(5)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
        with log.open("wb") as out:
            proc = subprocess.Popen(softcopy_cmd(acq / "*.zarr", raw), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert s.recv(256) == b"READY=1"
            hang.touch()
            files = take(acq / "a.zarr", 2, 1)  # it appears while the share hangs
            s.settimeout(2)
            for _ in range(15):  # 3 s of pings at 0.2 s: the loop goes on
                assert s.recv(256) == b"WATCHDOG=1", log.read_text()
            hang.unlink()
            wait_for(lambda: (backing / "a.zarr" / "complete").exists(), 60, "the copy once the share is back")
            assert tree(backing / "a.zarr") == files
        finally:
            hang.unlink(missing_ok=True)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 143, log.read_text()


def test_a_folder_that_cannot_be_looked_at_once_while_copied_keeps_its_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One look at a folder in flight that failed (EIO from a share) was taken for a start that
    # failed: the next retry made a second copy of it, and the first was tracked by nothing: never
    # reported, never stopped.
    import softcopy.service as service_module
    from softcopy.config import Target
    from softcopy.watching import identity_of

    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    (acq / "x.zarr").mkdir(parents=True)
    (acq / "x.zarr" / "0.0").write_bytes(b"chunk")  # no marker: the copy stays in flight
    svc = service_module.Service([Target(acq / "*.zarr", dst)], tell_after=0)
    try:
        svc.start()
        folder = acq / "x.zarr"

        def copying() -> bool:
            svc.step(0.1)
            return folder in svc.acquisitions and svc.acquisitions[folder].in_flight

        wait_for(copying, 30, "the copy")
        first = svc.acquisitions[folder]
        failures = [OSError(5, "Input/output error")]

        def flaky(path: Path) -> object:
            if failures:
                raise failures.pop()
            return identity_of(path)

        monkeypatch.setattr(service_module, "identity_of", flaky)
        svc._consider(first.of, first.name)
        # Retries come after a second: a few steps later the copy is still the one in flight.
        holds_for(lambda: copying() and svc.acquisitions[folder] is first, 3, "the first copy tracked, alone")
    finally:
        svc.stop()


@pytest.mark.parametrize("where", ["the acquisition", "the acquisitions folder"])
def test_an_unmounted_acquisition_is_waited_for_not_let_go(tmp_path: Path, receiver: Receiver, where: str) -> None:
    # An unmount left the mount point (another folder, or nothing) at the acquisition's name: taken
    # for a folder deleted or renamed aside, the acquisition was let go, reported abandoned. A
    # tmpfs is gone for good once unmounted: the service is stopped then, its copy to be resumed.
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    for d in (acq, dst, reports):
        d.mkdir()
    at = acq if where == "the acquisitions folder" else acq / "x.zarr"
    at.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(at)], check=True)
    try:
        (acq / "x.zarr").mkdir(exist_ok=True)
        (acq / "x.zarr" / "0.0").write_bytes(b"chunk")  # in flight: no marker yet
        args = (acq / "*.zarr", dst, "--notify", receiver.url, "--report", reports / "{name}.json")
        with service(tmp_path, *args) as svc:
            wait_or_tell((dst / "x.zarr" / "0.0").exists, 30, "the chunk copied", svc)
            subprocess.run(["umount", str(at)], check=True)
            wait_or_tell(lambda: UNMOUNTED in svc.output(), 30, "the service to say it waits", svc)
            # Over the time after which a folder that left its name is let go, and more.
            holds_for(lambda: not receiver.bodies and not any(reports.iterdir()), LET_GO_AFTER + 3, "waiting")
            svc.send_signal(signal.SIGTERM)
            assert finish(svc, 30)[0] == 143
        assert svc.output().count(UNMOUNTED) == 1, svc.output()
        assert not receiver.bodies, receiver.bodies
        assert json.loads((reports / "x.zarr.json").read_text())["status"] == "interrupted"
        assert (dst / "x.zarr" / "0.0").read_bytes() == b"chunk"
    finally:
        if os.path.ismount(at):
            subprocess.run(["umount", str(at)], check=False)


class InTrouble:
    """A copy in flight whose destination is unavailable (what `Copier.status` says of it)."""

    def __init__(self, acquisition: Path) -> None:
        blank: dict[str, Any] = {f.name: 0 for f in dataclasses.fields(Progress)}
        here: dict[str, Any] = {"source": acquisition, "destination": acquisition, "paused": None, "gave_up": False}
        self.progress = Progress(**{**blank, **here, "destination_trouble": "No space left on device"})

    def status(self) -> list[Progress]:
        return [self.progress]


def test_a_later_take_of_a_name_whose_destination_is_unavailable_is_told_too(tmp_path: Path) -> None:
    # Who had been told was kept by folder, for ever: an acquisition collected while its
    # destination was unavailable (let go, gave up) kept its record, and a later take of its name,
    # its destination as unavailable, was never told. A copy's trouble now goes with it.
    pattern = Target(tmp_path / "acquisition" / "*.zarr", tmp_path / "raw")
    svc = Service([pattern])
    try:

        def take_in_trouble() -> Acquisition:
            acq = Acquisition("x.zarr", pattern, str(pattern.source), pattern)
            acq.copier = cast(Any, InTrouble(acq.folder))
            svc.acquisitions[acq.folder] = acq
            return acq

        first = take_in_trouble()
        assert [a for a, _, _ in svc.needing_a_person(0)] == [first]
        assert svc.needing_a_person(0) == [], "told once while its trouble lasts"
        del svc.acquisitions[first.folder]  # collected in trouble
        second = take_in_trouble()
        assert [a for a, _, _ in svc.needing_a_person(0)] == [second]
        stub = cast(InTrouble, second.copier)
        stub.progress = dataclasses.replace(stub.progress, destination_trouble=None)
        assert svc.needing_a_person(0) == [] and second.trouble is None, "the record goes with the trouble"
    finally:
        svc.acquisitions.clear()
        svc.stop()


def test_a_start_that_hangs_holds_no_other_and_is_named(tmp_path: Path, receiver: Receiver) -> None:
    # One starter thread served every pattern: a start whose destination hung (a dead hard-mounted
    # share) held every other acquisition's start, and was never reported.
    hung_acq, acq, backing, dst = (tmp_path / n for n in ("hung_acq", "acquisition", "backing", "dst"))
    for d in (hung_acq, acq, backing, dst):
        d.mkdir()
    hang = tmp_path / "hang"
    with fuse_mount("faulty_fs.py", backing, tmp_path / "raw", {"FAULTY_TIMES": "0", "FAULTY_HANG": str(hang)}) as raw:
        targets = tmp_path / "targets.yaml"
        targets.write_text(
            json.dumps(
                {
                    "targets": [
                        {"source": f"{hung_acq}/*.zarr", "destination": str(raw)},
                        {"source": f"{acq}/*.zarr", "destination": str(dst)},
                    ]
                }
            )
        )
        with service(tmp_path, targets, "--notify", receiver.url, "--notify-after", "1") as svc:
            try:
                hang.touch()
                stuck = take(hung_acq / "stuck.zarr", 2, 1)  # its start hangs at its destination
                wait_or_tell(lambda: bool(receiver.events("stuck.zarr")), 30, "the hung start named", svc)
                files = take(acq / "free.zarr", 2, 5)  # another destination: it starts meanwhile
                wait_or_tell(lambda: settled(receiver.events("free.zarr"), "verified"), 60, "the other copy", svc)
                assert tree(dst / "free.zarr") == files
                (named,) = receiver.events("stuck.zarr")
                assert named["status"] == "cannot start" and "still trying" in named["text"], named
                hang.unlink()
                wait_or_tell(lambda: settled(receiver.events("stuck.zarr"), "verified"), 60, "the hung copy", svc)
            finally:
                hang.unlink(missing_ok=True)
        assert [e["status"] for e in receiver.events("stuck.zarr")] == ["cannot start", "verified"]
        assert tree(backing / "stuck.zarr") == stuck


def test_a_folder_changed_as_its_end_is_told_is_taken_again(tmp_path: Path) -> None:
    # An ended acquisition was remembered with its folder's modification time read after its end
    # was told (the report written, the webhook queued): a change made meanwhile (a new take's
    # first subfolder in the folder freed, no file yet) was taken for part of what was copied, and
    # the folder never looked at again, whatever was written into that subfolder later.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    take(acq / "x.zarr", 2, 1)

    def ended(a: Acquisition) -> None:
        if not (a.folder / "1").exists():
            (a.folder / "1").mkdir()  # the next take begins as the first one's end is told

    svc = Service([Target(acq / "*.zarr", dst, delete_source=True)], ended=ended)
    try:
        svc.start()

        def ended_at_least(n: int) -> bool:
            svc.step(0.1)
            return len(svc.recent) >= n

        wait_for(lambda: ended_at_least(1), 60, "the first take's end")
        # Over a relisting of the folder: the change is seen, the folder looked at again.
        wait_for(lambda: ended_at_least(2), RELIST_EVERY + 5, "the folder taken again")
    finally:
        svc.stop()


def test_a_missing_acquisitions_folder_holds_no_other_pattern(tmp_path: Path) -> None:
    # The service waited for every missing acquisitions folder before it watched any: one disk
    # mounted late held the copies of every other pattern.
    late, acq, dst = tmp_path / "late", tmp_path / "acquisition", tmp_path / "raw"
    for d in (acq, dst, tmp_path / "raw-late"):
        d.mkdir()
    targets = tmp_path / "targets.yaml"
    patterns = [
        {"source": f"{late}/*.zarr", "destination": f"{dst}-late"},
        {"source": f"{acq}/*.zarr", "destination": str(dst)},
    ]
    targets.write_text(json.dumps({"targets": patterns}))
    with service(tmp_path, targets) as svc:
        files = take(acq / "here.zarr", 2, 1)
        wait_or_tell(lambda: (dst / "here.zarr" / "complete").exists(), 30, "the present pattern's copy", svc)
        assert tree(dst / "here.zarr") == files
        take(tmp_path / "staging" / "later.zarr", 2, 5)
        (tmp_path / "staging").rename(late)  # the late disk is mounted
        wait_or_tell(
            lambda: (tmp_path / "raw-late" / "later.zarr" / "complete").exists(), 30, "the late pattern's copy", svc
        )
        assert svc.output().count("waiting for the acquisitions folder") == 1, svc.output()


def test_a_source_without_birth_times_never_has_a_copy_written_into_by_inode_number_alone(tmp_path: Path) -> None:
    # A source through FUSE keeps no birth time, and ext4 under it hands a deleted folder's inode
    # to the next one made: an earlier take's copy, recorded by that number, looked like the
    # re-take's own. Its marker matching within 2 s, the re-take was "already verified" and never
    # copied; the same command written into it would prune the earlier take's only copy.
    backing, dst = tmp_path / "backing", tmp_path / "raw"
    (backing / "acquisition").mkdir(parents=True)
    dst.mkdir()
    with fuse_mount("faulty_fs.py", backing, tmp_path / "mnt", {"FAULTY_TIMES": "0"}) as mnt:
        acq = mnt / "acquisition"
        first = take(acq / "x.zarr", 2, 1)
        with service(tmp_path, acq / "*.zarr", dst) as svc:
            wait_or_tell(lambda: (dst / "x.zarr" / "complete").exists(), 60, "the first take's copy", svc)
        (tmp_path / "notify.sock").unlink()
        # A service started again finds the finished archive verified: not copied again.
        with service(tmp_path, acq / "*.zarr", dst) as svc:
            wait_or_tell(lambda: "already verified" in svc.output(), 30, "the archive found verified", svc)
        (tmp_path / "notify.sock").unlink()
        # The command run by hand refuses a copy recorded by the number alone, even its own (it
        # cannot tell), and says how to take it.
        r = subprocess.run(
            softcopy_cmd(acq / "x.zarr", dst / "x.zarr"), check=False, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2 and ".softcopy-origin" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        marker = (acq / "x.zarr" / "complete").stat()
        shutil.rmtree(acq / "x.zarr")
        second = take(acq / "x.zarr", 4, 7)  # often handed the inode back: then the number matches
        os.utime(acq / "x.zarr" / "complete", ns=(marker.st_atime_ns, marker.st_mtime_ns + 1_000_000_000))
        with service(tmp_path, acq / "*.zarr", dst) as svc:
            wait_or_tell(lambda: (dst / "x-2.zarr" / "complete").exists(), 60, "the re-take's copy", svc)
    assert tree(dst / "x.zarr") == first and tree(dst / "x-2.zarr") == second


def in_flight(port: int) -> list[str]:
    """The sources of the acquisitions a running service has in flight or starting (`/status`)."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return [str(row["source"]) for row in json.loads(r.read())["in_flight"]]


@pytest.mark.parametrize("how", ["running", "sigterm"])
def test_a_finished_acquisition_that_leaves_its_name_before_its_copy_begins_is_named_let_go(
    tmp_path: Path, receiver: Receiver, how: str
) -> None:
    # Found by the service soak: a take renamed aside (or its acquisitions folder moved away) while
    # its start waited for the destination got a copy that waited for its folder to appear, for
    # ever; nothing at the destination recorded it, so a service killed or stopped meanwhile (its
    # report "interrupted") left it named by nothing.
    acq, backing, reports, hang = (
        tmp_path / "acquisition",
        tmp_path / "backing",
        tmp_path / "reports",
        tmp_path / "hang",
    )
    for d in (acq, backing, reports):
        d.mkdir()
    report, port = reports / "x.zarr.json", free_port()
    with fuse_mount("faulty_fs.py", backing, tmp_path / "raw", {"FAULTY_TIMES": "0", "FAULTY_HANG": str(hang)}) as raw:
        args = (acq / "*.zarr", raw, "--report", reports / "{name}.json", "--notify", receiver.url)
        with service(tmp_path, *args, "--metrics", f"127.0.0.1:{port}") as svc:
            try:
                hang.touch()  # its start waits for the destination (a share that hangs)
                take(acq / "x.zarr", 2, 1)
                wait_or_tell(lambda: str(acq / "x.zarr") in in_flight(port), 30, "the start asked", svc)
                (acq / "x.zarr").rename(acq / "x.aside")  # before its copy began
                if how == "sigterm":
                    svc.send_signal(signal.SIGTERM)  # stopped meanwhile: its next start finds nothing of it
                else:
                    wait_or_tell(report.exists, 20, "its report while the share hangs", svc)
                hang.unlink()
                wait_or_tell(report.exists, 20, "its report", svc)
            finally:
                hang.unlink(missing_ok=True)
    doc = json.loads(report.read_text())
    assert doc["status"] != "interrupted" and "before its copy began" in str(doc["targets"][0]["fatal"]), doc
    wait_for(lambda: settled(receiver.events("x.zarr"), "let go"), 10, "the webhook")
    assert not list(backing.iterdir())  # nothing of it was copied


def test_a_copy_started_after_its_folder_left_is_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its start asked while the folder was there, answered once it had left: the engine waited for
    # the folder to appear, never paused, so the rule for folders that leave never applied.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    ended: list[Acquisition] = []
    svc = Service([Target(acq / "*.zarr", dst, wait_for_source=True)], ended=ended.append)
    held: list[StartRequest] = []
    ask = svc._starter.ask
    monkeypatch.setattr(svc._starter, "ask", held.append)  # its start answered when the test says

    folder = acq / "x.zarr"
    try:
        svc.start()
        take(folder, 2, 1)
        wait_for(after_a_step(svc, lambda: bool(held)), 30, "the start asked")
        folder.rename(acq / "x.aside")
        svc._next_look = float("inf")  # not looked at before its copy starts: the engine finds it gone
        ask(held.pop())
        wait_for(after_a_step(svc, lambda: svc.acquisitions[folder].in_flight), 30, "the copy started")
        svc._next_look = 0.0
        wait_for(after_a_step(svc, lambda: bool(ended)), 20, "the copy let go")
    finally:
        svc.stop()
    (gone,) = ended
    assert gone.report is not None and gone.report.phase == "let go", gone.report
    assert "before its copy began" in str(gone.report.fatal), gone.report


def after_a_step(svc: Service, cond: Callable[[], bool]) -> Callable[[], bool]:
    """`cond`, asked after each step of the service (run in the test's own thread)."""

    def stepped() -> bool:
        svc.step(0.1)
        return cond()

    return stepped


def test_an_acquisitions_folder_made_again_is_heard_from_before_the_next_look(tmp_path: Path) -> None:
    # Found by the service soak: its watch was made again only at the look each second, so a take
    # made in the folder made again and renamed aside within that second was heard by nothing.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    dst.mkdir()
    svc = Service([Target(acq / "*.zarr", dst)])
    try:
        svc.start()
        svc._next_look = float("inf")  # no look from now on: what is taken was heard
        acq.rename(tmp_path / "away")  # a disk remounted, an admin's cleanup
        acq.mkdir()
        (acq / "x.zarr").mkdir()
        wait_for(after_a_step(svc, lambda: acq / "x.zarr" in svc.acquisitions), 10, "the new folder taken")
    finally:
        svc.stop()
