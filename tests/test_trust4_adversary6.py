"""Two changes read as an adversary: freeing a file on a filesystem mounted inside the acquisition
(set aside beside its name, `src/end/aside.rs`) and the service's report after a kill
(`service.py`, `verified_earlier`). Each test reproduces a finding; one still open is a strict
xfail. docs/design.md, "The end of a run" (Freeing) and "Service, month after month", say what
should hold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import partial
from pathlib import Path

import pytest
from conftest import softcopy_cmd, tree, wait_for
from soak_service import Hook
from test_soak_service import service_folders
from test_trust2 import run
from test_trust4 import write_files
from test_trust4_adversary import leased
from test_trust4_adversary3 import EARLY
from test_trust4_service import service, wait_or_tell


def set_aside_beside(folder: Path) -> list[Path]:
    """The files a freeing set aside beside their names in `folder`."""
    return list(folder.glob(".softcopy-freeing-*"))


def freed_while_two_new_versions_come(src: Path, dst: Path, rel: str, third: bytes) -> str:
    """What `SRC DST --delete-source` said, a writer's temp `<rel>.partial` renamed over `rel` once
    freeing held its lease on it, and `third` written under `rel` once that was set aside beside it
    (it can then not go back)."""
    env = {**os.environ, "SOFTCOPY_FAILPOINTS": "free.checked=1*sleep(3000);free.aside=1*sleep(3000)"}
    cmd = softcopy_cmd(src, dst, "--delete-source")
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as first:
        target = src / rel
        wait_for(lambda: first.poll() is not None or leased(target), 20, f"freeing's lease on {rel}")
        Path(f"{target}.partial").rename(target)
        wait_for(lambda: first.poll() is not None or bool(set_aside_beside(target.parent)), 20, "the set-aside")
        target.write_bytes(third)
        return first.communicate(timeout=60)[0]


def test_a_new_version_kept_beside_its_name_on_a_disk_inside_the_acquisition_stays_named(tmp_path: Path) -> None:
    # A disk mounted inside the acquisition: c0 there is set aside beside its name. A writer's new
    # version renamed over it after freeing's last look is what is set aside, and a third file under
    # the name since means it cannot go back: it is kept beside. Kept in the folder at the root, the
    # folder and its list stayed and every next run named it; kept beside, the lists went with the
    # folder: the writer's version stayed under a `.softcopy-freeing-*` name that nothing copies,
    # verifies or finishes, named by no run after the first.
    newest = b"the writer's new version"
    for attempt in range(5):
        src, dst = tmp_path / f"{attempt}" / "acq", tmp_path / f"{attempt}" / "cluster" / "acq"
        write_files(src, {"complete": b""})
        (src / "more").mkdir()
        dst.parent.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(src / "more")], check=True)
        try:
            (src / "more" / "c0").write_bytes(b"the version copied")
            (src / "more" / "c0.partial").write_bytes(newest)
            out = freed_while_two_new_versions_come(src, dst, "more/c0", b"a third version")
            if EARLY in out:
                continue
            [kept] = set_aside_beside(src / "more")
            assert kept.read_bytes() == newest, out
            again = run(src, dst)
            assert f"{kept} is kept where a freeing left it" in again.stdout + again.stderr, out + again.stderr
            return
        finally:
            subprocess.run(["umount", "-l", str(src / "more")], check=False)
    pytest.fail("the writer's rename never landed after freeing's last look")


def killed_with_a_new_version_set_aside(src: Path, dst: Path, rel: str) -> bool:
    """`SRC DST --delete-source` killed (SIGKILL, as a power cut ends it) once `rel` is set aside,
    a writer's temp `<rel>.partial` renamed over `rel` after freeing's last look at it. False if the
    rename landed before that look (the new version is then simply kept): the caller tries again."""
    env = {**os.environ, "SOFTCOPY_FAILPOINTS": "free.checked=1*sleep(3000);free.aside=return"}
    cmd = softcopy_cmd(src, dst, "--delete-source")
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        target = src / rel
        wait_for(lambda: first.poll() is not None or leased(target), 20, f"freeing's lease on {rel}")
        Path(f"{target}.partial").rename(target)
        return first.wait(60) == -9


def test_a_new_version_set_aside_on_a_disk_unmounted_before_the_next_run_is_put_back_once_it_is_back(
    tmp_path: Path,
) -> None:
    # The disk a file was set aside on beside its name is not mounted at the next run's start:
    # recovery did not find the file, took it as never set aside, and removed the list; once the
    # disk was back the writer's version sat under `.softcopy-freeing-*`, never copied, named by
    # nothing. Its list notes the folder it went into (a bind mount of the same filesystem has
    # the same device: the folder's identity tells).
    newest = b"the writer's new version"
    for attempt in range(5):
        src, dst = tmp_path / f"{attempt}" / "acq", tmp_path / f"{attempt}" / "cluster" / "acq"
        backing = tmp_path / f"{attempt}" / "disk"
        write_files(src, {"complete": b""})
        write_files(backing, {"c0": b"the version copied", "c0.partial": newest})
        (src / "more").mkdir()
        dst.parent.mkdir()
        subprocess.run(["mount", "--bind", str(backing), str(src / "more")], check=True)
        try:
            killed = killed_with_a_new_version_set_aside(src, dst, "more/c0")
        finally:
            subprocess.run(["umount", str(src / "more")], check=False)
        if killed:
            break
    else:
        pytest.fail("freeing was never killed with a new version of more/c0 set aside")
    [aside] = set_aside_beside(backing)
    assert aside.read_bytes() == newest
    unmounted = run(src, dst)  # the disk is not there: `more` is an empty folder
    subprocess.run(["mount", "--bind", str(backing), str(src / "more")], check=True)
    try:
        back = run(src, dst)
        said = unmounted.stdout + unmounted.stderr + back.stdout + back.stderr
        assert tree(src).get("more/c0") == newest or "is kept where a freeing left it" in said, said
    finally:
        subprocess.run(["umount", str(src / "more")], check=False)


def test_a_persons_file_named_like_a_set_aside_one_is_copied(tmp_path: Path) -> None:
    # Names beside a file set aside are `.softcopy-freeing-<pid>-<ns>-<n>-<i>`; every name starting
    # with `.softcopy-freeing-` anywhere in the tree was taken for one and never copied, and
    # verification left it out at both ends: "verified" of a copy without the person's file.
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    theirs = {"notes/.softcopy-freeing-list.txt": b"what to free next week"}
    write_files(src, {"c0": b"chunk", "complete": b"", **theirs})
    dst.parent.mkdir()
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(dst) == tree(src), r.stdout


def test_a_service_whose_reports_share_one_file_does_not_report_every_archive_at_each_start(tmp_path: Path) -> None:
    # `--report reports/all.json` (no `{name}`): every report goes to that one file, so it holds the
    # last acquisition's. At each start, every other acquisition verified earlier found no report
    # of its copy there and had one written (over the lab's file) and its webhook sent: for good.
    acq, dst, reports, args = service_folders(tmp_path)
    args = (*args[:-1], reports / "all.json")
    shared = reports / "all.json"

    def reported(name: str) -> bool:
        try:
            destination: str = json.loads(shared.read_text())["targets"][0]["destination"]
        except (OSError, ValueError, KeyError):
            return False
        return destination == os.fspath(dst / name)

    with service(tmp_path, *args) as svc:
        for name in ("a.zarr", "b.zarr"):
            write_files(acq / name, {"c0": b"chunk", "complete": b""})
            wait_or_tell(partial(reported, name), 30, f"{name}'s report", svc)
    before = shared.read_bytes()
    (tmp_path / "again").mkdir()  # its own notify socket and log
    with service(tmp_path / "again", *args) as again:
        wait_or_tell(lambda: again.output().count("not copied again") == 2, 30, "both taken as verified", again)
    assert shared.read_bytes() == before, "a report written again at the start"


def test_the_report_after_a_kill_does_not_say_verified_of_a_copy_changed_since(tmp_path: Path) -> None:
    acq, dst, reports, args = service_folders(tmp_path)
    write_files(acq / "x.zarr", {"c0": b"chunk", "c1": b"chunk 1", "complete": b""})
    with service(tmp_path, *args, env={"SOFTCOPY_FAILPOINTS": "publish.marker=return"}) as svc:
        wait_or_tell(lambda: svc.poll() is not None, 30, "the kill at the marker", svc)
    assert svc.returncode == -9 and (dst / "x.zarr" / "complete").exists(), svc.output()
    assert not list(reports.iterdir()), "killed before its report"
    (dst / "x.zarr" / "c1").unlink()  # the copy changed since its verification
    (tmp_path / "again").mkdir()
    with service(tmp_path / "again", *args) as again:
        # Not reported from the marker alone: a run verifies the copy again, and mends it.
        wait_or_tell((reports / "x.zarr.json").exists, 30, "x.zarr's report", again)
    assert json.loads((reports / "x.zarr.json").read_text())["status"] == "verified", again.output()
    assert (dst / "x.zarr" / "c1").read_bytes() == b"chunk 1", "verified over a copy without c1"


def test_no_report_says_verified_of_a_copy_softcopy_never_made(tmp_path: Path) -> None:
    # A copy made by hand (an rsync stopped after the marker, before `zz`): no record says softcopy
    # made it, and its marker matches the source's. The service takes it as verified earlier (never
    # written into); at its start it wrote a report "verified by an earlier run" and sent its
    # webhook, of a copy no run verified and that lacks a file.
    acq, dst, reports, args = service_folders(tmp_path)
    files = {"c0": b"chunk", "complete": b"", "zz": b"after the marker"}
    write_files(acq / "x.zarr", files)
    (dst / "x.zarr").mkdir()
    for rel in ("c0", "complete"):
        shutil.copy2(acq / "x.zarr" / rel, dst / "x.zarr" / rel)
    with service(tmp_path, *args) as svc:
        wait_or_tell(lambda: "not copied again" in svc.output(), 30, "x.zarr taken as verified", svc)
    for report in reports.iterdir():
        assert json.loads(report.read_text())["status"] != "verified", svc.output()


def test_the_webhook_of_a_report_that_cannot_be_written_is_not_sent_at_each_start(tmp_path: Path) -> None:
    # The report written at the next start is what says the copy was told: where it cannot be
    # written (the reports' disk read-only), its webhook went anyway, and again at every start.
    acq, dst, reports, args = service_folders(tmp_path)
    write_files(acq / "x.zarr", {"c0": b"chunk", "complete": b""})
    with service(tmp_path, *args, env={"SOFTCOPY_FAILPOINTS": "publish.marker=return"}) as svc:
        wait_or_tell(lambda: svc.poll() is not None, 30, "the kill at the marker", svc)
    assert svc.returncode == -9 and (dst / "x.zarr" / "complete").exists(), svc.output()
    hook = Hook()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(reports)], check=True)
    try:
        for again in ("again", "once more"):
            (tmp_path / again).mkdir()  # its own notify socket and log
            with service(tmp_path / again, *args, "--notify", hook.url) as svc:
                wait_or_tell(lambda: "cannot write the report" in svc.output(), 30, "the report refused", svc)
    finally:
        subprocess.run(["umount", str(reports)], check=False)
    assert len(hook.bodies) <= 1, hook.bodies
    told = len(hook.bodies)
    # The reports' disk writable again: the report is written, and told, once.
    (tmp_path / "writable").mkdir()
    with service(tmp_path / "writable", *args, "--notify", hook.url) as svc:
        wait_or_tell(lambda: len(hook.bodies) > told, 30, "the webhook", svc)
    assert json.loads((reports / "x.zarr.json").read_text())["status"] == "verified"
    assert [b["status"] for b in hook.bodies[told:]] == ["verified"], hook.bodies
