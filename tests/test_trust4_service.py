"""Trust, part four: a destination folder belongs to one acquisition. softcopy records at the
destination root which source folder it is a copy of; the service copies an acquisition whose name
is taken at the destination by another acquisition's copy to `<stem>-2<suffix>` (then -3, ...), and
the CLI refuses such a destination (exit 2). Each test failed on a738bee."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import Softcopy, assert_same_tree, finish, softcopy_cmd, tree, wait_for
from test_service import free_port
from test_trust3 import casefold_mount

ACTIVE = {"starting", "waiting", "scanning", "copying"}
"""The phases of a copy in flight (one waiting for its marker is "copying")."""


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=120)


def take(root: Path, timepoints: int, value: int) -> dict[str, bytes]:
    """A finished acquisition written as a writer would (metadata, chunks, the marker last): a Zarr v2
    array of `timepoints` chunks `t.0`, chunk t filled with `value + t`. Returns its files (`tree`)."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "zarr_format": 2,
        "shape": [timepoints, 8],
        "chunks": [1, 8],
        "dtype": "|u1",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "dimension_separator": ".",
    }
    (root / ".zarray").write_text(json.dumps(meta))
    for t in range(timepoints):
        (root / f"{t}.0").write_bytes(bytes([value + t]) * 8)
    (root / "complete").touch()
    return tree(root)


def everything(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content, dot files and softcopy's own files included, but
    for the claim a run leaves at a root it looked at (`.softcopy-lock`: who holds it)."""
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    return {k: p.read_bytes() for k, p in files.items() if k != ".softcopy-lock"}


def differences(before: dict[str, bytes], now: dict[str, bytes]) -> str:
    gone, added = sorted(set(before) - set(now)), sorted(set(now) - set(before))
    changed = sorted(k for k in set(before) & set(now) if before[k] != now[k])
    return f"gone: {gone}, added: {added}, changed: {changed}"


def freed(folder: Path) -> bool:
    return folder.is_dir() and not any(p.is_file() for p in folder.rglob("*"))


@contextmanager
def service(tmp_path: Path, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Iterator[Softcopy]:
    """A running service, returned once it told the service manager it is ready (it watches the
    acquisitions folder and has taken the folders already there); stopped (SIGTERM) at the end.
    `env` is added to its environment."""
    sock_path, log = tmp_path / "notify.sock", tmp_path / "service.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(sock_path))
        s.settimeout(30)
        environ = {**os.environ, **(env or {}), "NOTIFY_SOCKET": str(sock_path)}
        with log.open("wb") as out:
            proc = Softcopy(softcopy_cmd(*args), env=environ, stdout=out, stderr=subprocess.STDOUT)
        proc.log = log
        try:
            assert s.recv(256) == b"READY=1"
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_or_tell(cond: Callable[[], bool], timeout: float, what: str, proc: Softcopy) -> None:
    """`wait_for`, with what the service said when it times out."""
    try:
        wait_for(cond, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; the service said:\n{proc.output()}") from None


def test_a_service_copies_an_acquisition_beside_an_unrelated_archive_of_the_same_name(tmp_path: Path) -> None:
    # Item 2a: dst/x.zarr held an archive softcopy never copied; the acquisition x.zarr was copied
    # over it (its chunk replaced, its marker withdrawn).
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    theirs = dst / "x.zarr"
    theirs.mkdir(parents=True)
    (theirs / ".zarray").write_text('{"zarr_format": 2, "shape": [1, 4], "chunks": [1, 4], "dtype": "|u1"}')
    (theirs / "0.0").write_bytes(b"an unrelated archive's chunk")
    (theirs / "readme.txt").write_text("kept by a person, not by softcopy")
    (theirs / "complete").touch()
    for p in theirs.iterdir():  # written a day ago: not a copy of anything made now
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 86_400 * 10**9))
    before = everything(theirs)
    with service(tmp_path, acq / "*.zarr", dst) as svc:
        want = take(acq / "x.zarr", 3, 1)
        ours = dst / "x-2.zarr"
        wait_or_tell(
            lambda: (ours / "complete").exists() or ((theirs / "complete").exists() and everything(theirs) != before),
            30,
            "a copy of x.zarr",
            svc,
        )
        assert everything(theirs) == before, "dst/x.zarr was written: " + differences(before, everything(theirs))
        wait_or_tell((ours / "complete").exists, 30, "x.zarr's copy at x-2.zarr", svc)
        assert tree(ours) == want
        assert "x-2.zarr" in svc.output(), svc.output()
    assert everything(theirs) == before


def copied_beside(svc: Softcopy, dst: Path, kept: dict[str, bytes], second: dict[str, bytes]) -> None:
    """The re-take `second` is copied to `dst/x-2.zarr` and said so; the first take's copy `kept`,
    at `dst/x.zarr`, is untouched (checked as soon as either copy is done)."""
    ours = dst / "x-2.zarr"
    wait_or_tell(lambda: (ours / "complete").exists() or tree(dst / "x.zarr") == second, 30, "the re-take's copy", svc)
    assert tree(dst / "x.zarr") == kept, "the first take's copy was written: " + differences(kept, tree(dst / "x.zarr"))
    wait_or_tell((ours / "complete").exists, 30, "the re-take at x-2.zarr", svc)
    assert tree(ours) == second
    assert "x-2.zarr" in svc.output(), svc.output()


def test_a_service_copies_a_retake_of_a_freed_acquisition_beside_the_first_take(tmp_path: Path) -> None:
    # Item 2b: the first take copied, verified and freed; the folder deleted and taken again (fewer
    # chunks, other data) while the service runs: the second take was copied over the first and
    # the first take's extra chunks pruned.
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    first = take(acq / "x.zarr", 4, 1)
    hour_ago = (acq / "x.zarr" / "complete").stat().st_mtime_ns - 3600 * 10**9
    os.utime(acq / "x.zarr" / "complete", ns=(hour_ago, hour_ago))  # the first take ended an hour ago
    r = run(acq / "x.zarr", dst / "x.zarr", "--delete-source")
    assert r.returncode == 0, r.stderr
    assert freed(acq / "x.zarr") and (dst / "x.zarr" / "complete").exists()
    kept = tree(dst / "x.zarr")
    assert kept == first
    # The first take's folder held open while it is deleted, so the second one gets another
    # inode (the same inode is item 9, below).
    held = os.open(acq / "x.zarr", os.O_RDONLY | os.O_DIRECTORY)
    try:
        inode = os.fstat(held).st_ino
        shutil.rmtree(acq / "x.zarr")
        with service(tmp_path, acq / "*.zarr", dst) as svc:
            second = take(acq / "x.zarr", 2, 100)
            assert (acq / "x.zarr").stat().st_ino != inode
            copied_beside(svc, dst, kept, second)
    finally:
        os.close(held)
    assert tree(dst / "x.zarr") == kept


@contextmanager
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A fresh, small ext4 filesystem on a loop device, mounted; unmounted and detached whatever
    happens. On ext4 a deleted folder's inode goes to the next folder made."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 for a loop-mounted ext4")
    image, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True)
    mnt.mkdir()
    try:
        subprocess.run(["mount", device.stdout.strip(), str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device.stdout.strip()], check=False)


def test_a_retake_in_the_same_inode_is_copied_beside_the_first_take(tmp_path: Path) -> None:
    # Item 9: the service told takes apart by the folder's device and inode, and ext4 gives a
    # deleted folder's inode to the next folder made: the re-take was taken for the same folder.
    dst = tmp_path / "raw"
    dst.mkdir()
    with ext4(tmp_path) as mnt:
        acq = mnt / "acquisition"
        acq.mkdir()
        reports = tmp_path / "reports"
        reports.mkdir()
        with service(tmp_path, acq / "*.zarr", dst, "--report", reports / "{name}.json") as svc:
            take(acq / "x.zarr", 3, 1)
            # Ended, not only marked: a source deleted while the run still looks at it after
            # publishing (its last look for late changes) withdraws the marker, rightly.
            wait_or_tell((reports / "x.zarr.json").exists, 30, "the first take's copy ended", svc)
            assert json.loads((reports / "x.zarr.json").read_text())["targets"][0]["verified"], svc.output()
            kept = tree(dst / "x.zarr")
            assert_same_tree(acq / "x.zarr", dst / "x.zarr")
            inode = (acq / "x.zarr").stat().st_ino
            shutil.rmtree(acq / "x.zarr")
            (acq / "x.zarr").mkdir()
            if (acq / "x.zarr").stat().st_ino != inode:
                pytest.skip("ext4 gave the new folder another inode: nothing to reproduce")
            second = take(acq / "x.zarr", 2, 100)
            copied_beside(svc, dst, kept, second)
        assert tree(dst / "x.zarr") == kept


def test_the_cli_refuses_a_destination_that_holds_another_acquisitions_copy(tmp_path: Path) -> None:
    # Item 9, the CLI form: the source folder deleted and taken again after its copy ended; the
    # new take was copied over the old copy (exit 0).
    src, dst = tmp_path / "acquisition" / "x.zarr", tmp_path / "raw" / "x.zarr"
    dst.parent.mkdir(exist_ok=True)
    take(src, 3, 1)
    first = run(src, dst)
    assert first.returncode == 0, first.stderr
    kept = everything(dst)
    shutil.rmtree(src)
    take(src, 2, 100)
    r = run(src, dst)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert "another acquisition" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert everything(dst) == kept, differences(kept, everything(dst))


def freed_copy(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """acquisition/x.zarr copied to raw/x.zarr with --delete-source: verified, marker published,
    source emptied. Returns (source, destination, the copy's files)."""
    src, dst = tmp_path / "acquisition" / "x.zarr", tmp_path / "raw" / "x.zarr"
    dst.parent.mkdir(exist_ok=True)
    files = take(src, 3, 1)
    r = run(src, dst, "--delete-source")
    assert r.returncode == 0, r.stderr
    assert freed(src), "the source was freed, its folder left"
    assert (dst / "complete").exists()
    assert tree(dst) == files
    return src, dst, files


def test_a_freed_acquisition_run_again_ends_at_once_and_keeps_its_marker(tmp_path: Path) -> None:
    # Item 12a: the same command again over the freed source waited for a marker that had gone
    # with the source's files, forever.
    src, dst, files = freed_copy(tmp_path)
    cmd = softcopy_cmd(src, dst, "--delete-source")
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as e:
        said = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"the same command again did not end within 30 s; it said: {said}")
    assert r.returncode == 0, r.stderr
    assert (dst / "complete").exists(), "the marker of a verified, freed copy stays"
    assert tree(dst) == files


def test_a_service_started_over_a_freed_acquisition_keeps_its_marker(tmp_path: Path) -> None:
    # Item 12b: the service took the freed (empty) folder for an acquisition in flight, started a
    # copy that waited for its marker, and withdrew the copy's marker when stopped.
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    src, dst, files = freed_copy(tmp_path)
    # Another acquisition, finished, taken after x.zarr (names in order): once its report is
    # written, the service has long decided what to do with x.zarr.
    take(src.parent / "y.zarr", 2, 50)
    reports, port = tmp_path / "reports", free_port()
    reports.mkdir()

    def phases() -> dict[str, float] | None:
        """How many acquisitions are in each phase (`softcopy_acquisitions`)."""
        try:
            with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "softcopy_acquisitions":
                for sample in family.samples:
                    phase = str(sample.labels["phase"])
                    out[phase] = out.get(phase, 0) + sample.value
        return out

    args = ("--metrics", f"127.0.0.1:{port}", "--report", reports / "{name}.json")
    with service(tmp_path, src.parent / "*.zarr", dst.parent, *args) as svc:
        wait_or_tell((reports / "y.zarr.json").exists, 30, "y.zarr's report", svc)
        wait_or_tell(lambda: bool(phases()), 30, "the metrics", svc)
        seen = phases()
        svc.send_signal(signal.SIGTERM)
        code, out = finish(svc, 30)
    assert code == 143, out
    assert (dst / "complete").exists(), f"the marker was withdrawn; the service said:\n{out}"
    assert tree(dst) == files
    assert seen is not None and not any(seen.get(p) for p in ACTIVE), f"a copy in flight: {seen}; said:\n{out}"


def test_a_short_lived_name_in_another_case_does_not_remove_a_copy(tmp_path: Path) -> None:
    # Item 8a: at a case-insensitive destination, the mirrored deletion of a short-lived `notes`
    # removed `Notes`'s copy (the two are one name there).
    src = tmp_path / "acquisition"
    src.mkdir()
    (src / "Notes").write_bytes(b"the acquisition's notes")
    with casefold_mount(tmp_path) as share:
        dst, log = share / "acquisition", tmp_path / "softcopy.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(softcopy_cmd(src, dst), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: (dst / "Notes").is_file(), 20, "Notes's copy")
            (src / "notes").write_bytes(b"a moment's notes")
            (src / "notes").unlink()
            (src / "after").write_bytes(b"written after notes was deleted")
            wait_for(lambda: (dst / "after").is_file(), 20, "the next file's copy")
            held = sorted(p.name for p in dst.iterdir())
            assert "Notes" in held, f"Notes's copy was removed: {held}; softcopy said:\n{log.read_text()}"
            assert (dst / "Notes").read_bytes() == b"the acquisition's notes"
            (src / "complete").touch()
            assert proc.wait(60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert_same_tree(src, dst)


def test_folders_that_differ_only_in_case_are_not_verified_as_one(tmp_path: Path) -> None:
    # Item 8b: `Pos0/0` and `pos0/0` went to one folder at a case-insensitive destination, one file
    # stood for both, and the run ended verified (exit 0).
    src = tmp_path / "acquisition"
    for folder, data in (("Pos0", b"upper"), ("pos0", b"lower")):
        (src / folder).mkdir(parents=True)
        (src / folder / "0").write_bytes(data)
    (src / "complete").touch()
    with casefold_mount(tmp_path) as share:
        dst = share / "acquisition"
        r = run(src, dst)
        assert r.returncode == 1, f"exit {r.returncode}: {sorted(p.name for p in dst.rglob('*'))}\n{r.stderr}"
        assert not (dst / "complete").exists()
