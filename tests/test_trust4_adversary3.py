"""The freeing's set-aside (`src/end/aside.rs`) read as an adversary: each test reproduces a finding
through the CLI; one still open is a strict xfail until the product is fixed. docs/design.md, "The
end of a run" (Freeing), says what should hold."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import fuse_mount, softcopy_cmd, tree, wait_for
from test_soak_service import Args, service_folders
from test_trust2 import run
from test_trust4 import write_files
from test_trust4_adversary import killed_while_c0_is_set_aside, leased
from test_trust4_service import service, wait_or_tell


def test_a_persons_files_in_a_folder_named_as_the_freeings_are_never_deleted(tmp_path: Path) -> None:
    # Every run's start finishes a freeing left mid-way (`aside::recover`); it read any `*.list`
    # there as a list of its own and removed it with the folder, and any `*.list.new` as a list
    # being written: a person's files, never copied (`.softcopy*` at the root is ignored), gone
    # by a plain copy without --delete-source.
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    theirs = {".softcopy-freeing/playlist.list": b"a person's list", ".softcopy-freeing/draft.list.new": b"a draft"}
    write_files(src, {"c0": b"chunk", "complete": b"", **theirs})
    dst.parent.mkdir()
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stderr
    for rel, data in theirs.items():
        assert (src / rel).is_file() and (src / rel).read_bytes() == data, r.stdout + r.stderr


def test_a_writer_reopening_a_file_being_freed_neither_kills_the_run_nor_loses_what_it_writes(
    tmp_path: Path,
) -> None:
    # Freeing holds a read lease on the file from its last look to the unlink, so that a log
    # reopened for append is not unlinked under its writer. The kernel tells the lease holder of
    # the writer's open by SIGIO, whose default ends the process: the run died there (-29), no
    # report. Once it survives, the file the writer opened must stay, its new line with it.
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    write_files(src, {"run.log": b"line 1\n", "complete": b""})
    dst.parent.mkdir()
    env = {**os.environ, "SOFTCOPY_FAILPOINTS": "free.checked=1*sleep(3000)"}
    cmd = softcopy_cmd(src, dst, "--delete-source")
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as first:
        wait_for(lambda: first.poll() is not None or leased(src / "run.log"), 20, "freeing's lease on run.log")
        # Waits here for the lease (the writer's open), then appends to whatever it opened.
        with open(src / "run.log", "ab") as log:
            log.write(b"line 2\n")
        out, _ = first.communicate(timeout=60)
    assert first.returncode >= 0, f"killed by signal {-first.returncode}\n{out}"
    assert tree(src).get("run.log") == b"line 1\nline 2\n", out
    assert not (src / ".softcopy-freeing").exists(), out
    again = run(src, dst, "--delete-source")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree(dst) == {"run.log": b"line 1\nline 2\n", "complete": b""}, again.stdout
    assert tree(src) == {}, again.stdout


EARLY = "changed at the source since it was copied"
"""What freeing says when the writer's rename landed before its last look, not after it (the
lease is taken just before that look): the new version is then simply kept; tried again."""


def freed_while_renamed_over(src: Path, dst: Path, new: Path) -> str:
    """What `SRC DST --delete-source` said, `new` renamed over c0 once freeing held its lease."""
    env = {**os.environ, "SOFTCOPY_FAILPOINTS": "free.checked=1*sleep(3000)"}
    cmd = softcopy_cmd(src, dst, "--delete-source")
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as first:
        wait_for(lambda: first.poll() is not None or leased(src / "c0"), 20, "freeing's lease on c0")
        new.rename(src / "c0")
        return first.communicate(timeout=60)[0]


def test_a_new_version_renamed_over_a_file_being_freed_where_no_hard_link_can_be_made_is_not_hidden(
    tmp_path: Path,
) -> None:
    # A FUSE source (fusepy: no rename2) that refuses hard links (exFAT, FAT, many shares): the
    # writer's new version, set aside by freeing in the old one's place, cannot go back without
    # replacing (neither RENAME_NOREPLACE nor a link): it stays in `.softcopy-freeing`, which no
    # run copies or shows. The writer's last version must be at one end, where it can be seen.
    backing = tmp_path / "backing"
    backing.mkdir()
    newest = b"the writer's new version"
    with fuse_mount("faulty_fs.py", backing, tmp_path / "mnt", {"FAULTY_NO_LINK": "1"}) as mnt:
        for attempt in range(5):
            src, dst = mnt / f"{attempt}", tmp_path / "cluster" / f"{attempt}"
            write_files(src, {"c0": b"the version copied", "complete": b""})
            dst.parent.mkdir(exist_ok=True)
            (mnt / "new").write_bytes(newest)
            out = freed_while_renamed_over(src, dst, mnt / "new")
            if EARLY not in out:
                break
        else:
            pytest.fail("the writer's rename never landed after freeing's last look")
        assert newest in (tree(src).get("c0"), tree(dst).get("c0")), out


def killed_while_freeing_sets_a_new_version_aside(tmp_path: Path, args: Args, src: Path, new: Path) -> bool:
    """The service (`args`, `--delete-source`) killed once freeing has set c0 aside, `new` renamed
    over c0 after freeing's last look at it. False if the rename landed before that look (the new
    version is then simply kept): the caller tries again."""
    points = {"SOFTCOPY_FAILPOINTS": "free.checked=1*sleep(3000);free.aside=return"}
    with service(tmp_path, *args, "--delete-source", env=points) as svc:
        wait_or_tell(lambda: svc.poll() is not None or leased(src / "c0"), 30, "freeing's lease on c0", svc)
        new.rename(src / "c0")
        wait_or_tell(lambda: svc.poll() is not None or EARLY in svc.output(), 30, "the kill or the early rename", svc)
    return svc.returncode == -9


def test_a_service_killed_with_a_new_version_set_aside_puts_it_back_when_started_again(tmp_path: Path) -> None:
    # The service is killed (a power cut) with a writer's new version of c0 set aside by the
    # freeing in the old one's place. Started again, it took the acquisition as verified earlier
    # (its marker at both ends) and never ran the recovery at a run's start: the new version stayed
    # in `.softcopy-freeing`, ignored, never copied, and `softcopy verify` said "identical".
    newest = b"the writer's new version"
    for attempt in range(5):
        base = tmp_path / f"{attempt}"
        base.mkdir()
        acq, dst, _, args = service_folders(base)
        src = acq / "x.zarr"
        write_files(src, {"c0": b"the version copied", "complete": b""})
        (base / "new").write_bytes(newest)
        if killed_while_freeing_sets_a_new_version_aside(base, args, src, base / "new"):
            break
    else:
        pytest.fail("the service was never killed with c0 set aside")
    assert list((src / ".softcopy-freeing").iterdir()), "nothing was set aside"
    (base / "again").mkdir()  # its own notify socket and log
    with service(base / "again", *args, "--delete-source") as again:
        wait_or_tell(lambda: newest in (tree(src).get("c0"), tree(dst / "x.zarr").get("c0")), 30, "c0", again)


def test_softcopy_verify_does_not_say_identical_while_a_new_version_is_set_aside(tmp_path: Path) -> None:
    # Killed with a writer's new version of c0 set aside in the old one's place: until a run puts
    # it back, the source's c0 is in `.softcopy-freeing`, which verify never looked at: it said
    # "identical" (exit 0) of a copy holding the old version.
    for attempt in range(5):
        src, dst = tmp_path / f"{attempt}" / "acq", tmp_path / f"{attempt}" / "cluster" / "acq"
        write_files(src, {"c0": b"the version copied", "complete": b""})
        dst.parent.mkdir()
        new = tmp_path / f"{attempt}" / "new"
        new.write_bytes(b"the writer's new version")
        if killed_while_c0_is_set_aside(src, dst, new):
            break
    else:
        pytest.fail("freeing was never killed with c0 set aside")
    r = subprocess.run(softcopy_cmd("verify", src, dst), check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and ".softcopy-freeing" in r.stdout, r.stdout + r.stderr


def test_a_file_on_a_filesystem_mounted_inside_the_acquisition_is_freed(tmp_path: Path) -> None:
    # It cannot be renamed into `.softcopy-freeing` at the source root (EXDEV): it was kept, and
    # with it the metadata and the marker. It is set aside beside its name, on its own filesystem.
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    write_files(src, {"c0": b"chunk 0", "complete": b""})
    (src / "more").mkdir()
    dst.parent.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(src / "more")], check=True)
    try:
        (src / "more" / "c1").write_bytes(b"chunk 1 on another filesystem")
        r = run(src, dst, "--delete-source")
        assert r.returncode == 0, r.stderr
        assert tree(dst) == {"c0": b"chunk 0", "more/c1": b"chunk 1 on another filesystem", "complete": b""}
        assert tree(src) == {}, r.stdout
    finally:
        subprocess.run(["umount", "-l", str(src / "more")], check=False)


def test_a_service_killed_with_the_marker_set_aside_finishes_the_freeing_when_started_again(tmp_path: Path) -> None:
    # Killed once the marker (freed last, alone) is set aside: everything else is gone from the
    # source. Started again, the service took the acquisition as freed whole (Owner::Finished) and
    # never ran a run's recovery: the marker stayed in `.softcopy-freeing` for good.
    acq, dst, _, args = service_folders(tmp_path)
    src = acq / "x.zarr"
    write_files(src, {"c0": b"chunk", "complete": b""})
    points = {"SOFTCOPY_FAILPOINTS": "free.aside=1*off->return"}
    with service(tmp_path, *args, "--delete-source", env=points) as svc:
        wait_or_tell(lambda: svc.poll() is not None, 30, "the kill at the marker's set-aside", svc)
    assert svc.returncode == -9 and tree(src) == {}, svc.output()
    aside = [p.read_bytes() for p in (src / ".softcopy-freeing").iterdir() if not p.name.endswith(".list")]
    assert aside == [b""], "the marker, set aside"
    (tmp_path / "again").mkdir()  # its own notify socket and log
    with service(tmp_path / "again", *args, "--delete-source") as again:
        wait_or_tell(lambda: not (src / ".softcopy-freeing").exists(), 30, "the freeing finished", again)
    assert tree(dst / "x.zarr") == {"c0": b"chunk", "complete": b""}


def test_a_service_killed_between_the_marker_and_the_report_writes_the_report_when_started_again(
    tmp_path: Path,
) -> None:
    # Killed once the marker was published, before the report: started again, the service said
    # "already verified; not copied again" and never wrote a report, so a lab's script waiting for
    # it waited for good. A run verifies the copy again at the next start and writes its report;
    # the start after that takes it as verified, and writes nothing.
    acq, dst, reports, args = service_folders(tmp_path)
    write_files(acq / "x.zarr", {"c0": b"chunk", "complete": b""})
    with service(tmp_path, *args, env={"SOFTCOPY_FAILPOINTS": "publish.marker=return"}) as svc:
        wait_or_tell(lambda: svc.poll() is not None, 30, "the kill at the marker", svc)
    assert svc.returncode == -9 and (dst / "x.zarr" / "complete").exists(), svc.output()
    assert not list(reports.iterdir()), "killed before its report"
    (tmp_path / "again").mkdir()  # its own notify socket and log
    with service(tmp_path / "again", *args) as svc:
        wait_or_tell((reports / "x.zarr.json").exists, 30, "x.zarr's report", svc)
    doc = json.loads((reports / "x.zarr.json").read_text())
    assert doc["status"] == "verified", doc
    (t,) = doc["targets"]
    # Checked by a run (a report from the records alone would say 0).
    assert t["destination"] == os.fspath(dst / "x.zarr") and t["files_checked"] == 1, doc
    written = (reports / "x.zarr.json").stat().st_mtime_ns
    (tmp_path / "once more").mkdir()
    with service(tmp_path / "once more", *args) as svc:
        wait_or_tell(lambda: "not copied again" in svc.output(), 30, "x.zarr taken as verified", svc)
    assert sorted(p.name for p in reports.iterdir()) == ["x.zarr.json"], "written once, never again"
    assert (reports / "x.zarr.json").stat().st_mtime_ns == written, "written again"
