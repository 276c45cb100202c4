"""Trust changes read as an adversary: each test reproduces a finding through the CLI, red before
its fix. docs/design.md's sections "The end of a run" (Freeing) and
"One destination, one acquisition" say what should hold."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import fuse_mount, softcopy_cmd, tree, wait_for
from softcopy._softcopy import folder_identity
from test_soak_service import acquisitions_on_a_disk, assert_none_named_let_go, killed_while_copying, service_folders
from test_trust2 import run
from test_trust4 import write_files
from test_trust4_service import service, wait_or_tell


def test_freeing_frees_a_source_whose_filesystem_cannot_rename_without_replacing(tmp_path: Path) -> None:
    # Setting a file aside needs renameat2(RENAME_NOREPLACE): a FUSE filesystem whose server has
    # no rename2 (fusepy, as tests/faulty_fs.py), sshfs and NFS answer EINVAL. Every file is then
    # kept ("cannot set it aside"), exit 0: --delete-source frees nothing there, where it did.
    backing = tmp_path / "backing"
    backing.mkdir()
    with fuse_mount("faulty_fs.py", backing, tmp_path / "mnt") as mnt:
        src, dst = mnt / "acq", tmp_path / "cluster" / "acq"
        dst.parent.mkdir()
        write_files(src, {"c/0": b"chunk 0", "c/1": b"chunk 1", "complete": b""})
        r = run(src, dst, "--delete-source")
        assert r.returncode == 0, r.stderr
        assert tree(dst) == {"c/0": b"chunk 0", "c/1": b"chunk 1", "complete": b""}
        left = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
        assert not left, f"kept at the source: {left}\n{r.stdout}"


def test_a_file_with_a_long_name_is_freed(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    long = "position-" + "n" * 231  # 240 bytes
    write_files(src, {long: b"a file with a long name", "complete": b""})
    dst.parent.mkdir()
    r = run(src, dst, "--delete-source")
    assert r.returncode == 0, r.stderr
    assert tree(dst) == {long: b"a file with a long name", "complete": b""}
    assert not any(src.iterdir()), r.stdout


def leased(path: Path) -> bool:
    """Whether a process holds a lease on the file at `path` (/proc/locks): freeing holds one from
    its last look at the file through its unlink (mover::free_one)."""
    st = path.stat()
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    return any(" LEASE " in line and where in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_new_version_renamed_over_a_file_being_freed_is_never_deleted(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    write_files(src, {"c0": b"the version copied", "complete": b""})
    dst.parent.mkdir()
    new = tmp_path / "new"
    newest = b"the writer's new version, renamed over c0"
    new.write_bytes(newest)
    # Freeing pauses after its last look at c0 (the lease held); the writer's rename lands there.
    with subprocess.Popen(
        softcopy_cmd(src, dst, "--delete-source"),
        env={**os.environ, "SOFTCOPY_FAILPOINTS": "free.checked=1*sleep(5000)"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as first:
        wait_for(lambda: first.poll() is not None or leased(src / "c0"), 20, "freeing's lease on c0")
        new.rename(src / "c0")
        first.wait(60)
    assert newest in (tree(src).get("c0"), tree(dst).get("c0")), "the writer's last version is at neither end"
    assert not (src / ".softcopy-freeing").exists(), "the folder for files being freed is left behind"


def killed_while_c0_is_set_aside(src: Path, dst: Path, new: Path | None) -> bool:
    """Runs `SRC DST --delete-source` killed once c0 is set aside to be freed; with `new`, the
    writer's new version is renamed over c0 after freeing's last look at it (the lease held, the
    process paused). False if the rename landed before that look (the new version is then simply
    kept): the caller tries again."""
    points = "free.aside=return" + (";free.checked=1*sleep(5000)" if new else "")
    with subprocess.Popen(
        softcopy_cmd(src, dst, "--delete-source"),
        env={**os.environ, "SOFTCOPY_FAILPOINTS": points},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as first:
        if new:
            c0 = src / "c0"
            wait_for(lambda: first.poll() is not None or leased(c0), 20, "freeing's lease on c0")
            new.rename(c0)
        return first.wait(60) == -9


@pytest.mark.parametrize("racing", [False, True], ids=["undisturbed", "a-new-version-renamed-over"])
def test_a_kill_while_a_file_is_set_aside_to_be_freed_loses_nothing_and_the_next_run_finishes(
    tmp_path: Path, racing: bool
) -> None:
    # Killed (as a power cut would end it) with c0 set aside, before its unlink: the next run of the
    # same command deletes it if it is the version journaled, or puts the writer's back.
    newest = b"the writer's new version, renamed over c0"
    for attempt in range(5):
        src, dst = tmp_path / f"{attempt}" / "acq", tmp_path / f"{attempt}" / "cluster" / "acq"
        write_files(src, {"c0": b"the version copied", "complete": b""})
        dst.parent.mkdir()
        new = tmp_path / f"{attempt}" / "new"
        new.write_bytes(newest)
        if killed_while_c0_is_set_aside(src, dst, new if racing else None):
            break
    else:
        pytest.fail("freeing was never killed with c0 set aside")
    assert list((src / ".softcopy-freeing").iterdir()), "nothing was set aside"
    again = run(src, dst, "--delete-source")
    assert not (src / ".softcopy-freeing").exists(), again.stdout + again.stderr
    if racing:
        # The new version is back under its name and kept; the run names it, never verifies it away.
        assert tree(src).get("c0") == newest, again.stdout
        assert again.returncode != 0 or tree(dst).get("c0") == newest, again.stdout
    else:
        assert again.returncode == 0, again.stderr
        assert tree(src) == {}, again.stdout
    copies = tree(dst)
    assert copies.pop("c0") in ((b"the version copied", newest) if racing else (b"the version copied",))
    assert copies == ({} if racing else {"complete": b""}), again.stdout + again.stderr


@contextmanager
def twin_disks(base: Path) -> Iterator[tuple[Path, Path]]:
    """Two fresh tmpfs disks, each with a folder `acq.zarr` made in the same clock tick: the first
    folder of each is inode 2, and birth times are the coarse clock's (one tick, ~4 ms), so the
    two have equal inode and birth time on different devices. Tried again at a tick's edge."""
    disks = (base / "disk1", base / "disk2")
    for d in disks:
        d.mkdir()
    try:
        for _ in range(20):
            for d in disks:
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)], check=True)
            a, b = (d / "acq.zarr" for d in disks)
            a.mkdir()
            b.mkdir()
            (ia, ib) = folder_identity(a), folder_identity(b)
            if ia[0] != ib[0] and ia[1:3] == ib[1:3]:
                yield a, b
                return
            for d in disks:
                subprocess.run(["umount", str(d)], check=True)
        pytest.skip("no two folders with one inode and one birth time in 20 tries")
    finally:
        for d in disks:
            if os.path.ismount(d):
                subprocess.run(["umount", "-l", str(d)], check=False)


def test_an_acquisition_on_another_disk_is_never_written_into_the_copy_of_one_born_in_the_same_tick(
    tmp_path: Path,
) -> None:
    dst = tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir()
    with twin_disks(tmp_path) as (first, second):
        write_files(first, {"c/0": b"the first disk's chunk 0", "c/1": b"the first disk's chunk 1", "complete": b""})
        write_files(second, {"c/0": b"another acquisition's chunk 0", "complete": b""})
        assert run(first, dst).returncode == 0
        r = run(second, dst)
        # Before the rule (a device must match): refused, "holds the copy of another acquisition".
        assert r.returncode != 0 and "another acquisition" in r.stderr, r.stdout
        assert tree(dst)["c/0"] == b"the first disk's chunk 0"


def test_a_copy_whose_disk_was_swapped_for_another_while_no_service_ran_is_not_named_let_go(tmp_path: Path) -> None:
    with acquisitions_on_a_disk(tmp_path) as (acq, dst, reports, args):
        first_disk = acq.stat().st_dev
        killed_while_copying(tmp_path, args, acq / "x.zarr", dst / "x.zarr")
        # The disk, x.zarr on it, is taken away (to be copied tomorrow); another disk is mounted.
        subprocess.run(["umount", str(acq)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(acq)], check=True)
        if acq.stat().st_dev != first_disk:  # the finding needs the number the kernel gives back
            pytest.skip("the new disk got another device number (a mount elsewhere took the old one)")
        assert_none_named_let_go(tmp_path, args, reports, dst / "x.zarr")


def test_a_copy_of_a_folder_that_is_there_but_not_the_services_is_not_named_let_go(tmp_path: Path) -> None:
    acq, dst, reports, args = service_folders(tmp_path)
    write_files(acq / "calibration", {"dark.tif": b"a dark frame"})
    once = run(acq / "calibration", dst / "calibration", "--once")  # copied by hand, no marker
    assert once.returncode == 0, once.stderr
    assert_none_named_let_go(tmp_path, args, reports, dst / "calibration")


def test_the_let_go_note_is_never_written_through_a_link_planted_in_the_copy(tmp_path: Path) -> None:
    acq, dst, _, args = service_folders(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"a file the destination's users cannot write, the service can")
    with service(tmp_path, *args) as svc:
        (acq / "x.zarr").mkdir()
        (acq / "x.zarr" / "0.0").write_bytes(b"first")  # in flight: no marker
        wait_or_tell((dst / "x.zarr" / "0.0").exists, 30, "the chunk's copy", svc)
        note = dst / "x.zarr" / ".softcopy-let-go"
        note.symlink_to(victim)
        (acq / "x.zarr").rename(acq / "x.aside")  # let go after LET_GO_AFTER

        def noted() -> bool:  # through the link, or the link replaced, or refused (logged)
            return not note.is_symlink() or victim.read_bytes().startswith(b"let go") or "cannot note" in svc.output()

        wait_or_tell(noted, 40, "the let-go note", svc)
    assert victim.read_bytes() == b"a file the destination's users cannot write, the service can"


def test_an_acquisition_about_to_start_on_another_disk_is_not_said_verified(tmp_path: Path) -> None:
    dst = tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir()
    with twin_disks(tmp_path) as (first, second):
        write_files(first, {"c/0": b"the first disk's chunk 0", "complete": b""})
        assert run(first, dst, "--delete-source").returncode == 0
        # The second disk's acquisition has not written its first file yet: softcopy started first.
        r = run(second, dst, "--delete-source")
        said = r.stdout + r.stderr
        assert "verified complete" not in said, said


@contextmanager
def attached(image: Path) -> Iterator[str]:
    """`image` on a loop device (the lowest free one), detached at the end."""
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True)
    try:
        yield loop.stdout.strip()
    finally:
        subprocess.run(["losetup", "-d", loop.stdout.strip()], check=False)


@contextmanager
def mounted(image: Path, at: Path) -> Iterator[int]:
    """`image` mounted at `at` through a loop device; yields the device number it got."""
    with attached(image) as device:
        subprocess.run(["mount", device, str(at)], check=True)
        try:
            yield at.stat().st_dev
        finally:
            subprocess.run(["umount", str(at)], check=False)


def test_a_disk_back_under_another_device_number_is_never_written_into_and_the_likely_cause_is_said(
    tmp_path: Path,
) -> None:
    # After a reboot a disk can come back as another device (sdb as sdc), and a clone of it (a `dd`
    # copy: the same UUID, the same inodes and birth times) looks exactly the same: the copy is
    # never taken as this folder's on that evidence alone (tests/test_trust5_fsid.py shows what the
    # clone would do), and the refusal says why, and what a person can do.
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4")
    image, spare, disk = tmp_path / "disk.img", tmp_path / "spare.img", tmp_path / "disk"
    for f in (image, spare):
        subprocess.run(["truncate", "-s", "32M", str(f)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    disk.mkdir()
    src, dst = disk / "acq", tmp_path / "cluster" / "acq"
    dst.parent.mkdir()
    with mounted(image, disk) as first:
        write_files(src, {"c/0": b"chunk 0", "c/1": b"chunk 1", "complete": b""})
        r = run(src, dst, "--delete-source")
        assert r.returncode == 0 and not (src / "c" / "0").exists(), r.stderr
    # The spare takes the loop device the disk had: the disk comes back under another number.
    with attached(spare), mounted(image, disk) as second:
        assert second != first
        again = run(src, dst, "--delete-source")
        assert again.returncode == 2, again.stdout + again.stderr
        assert "another device number" in again.stderr and ".softcopy-origin" in again.stderr, again.stderr
    assert tree(dst) == {"c/0": b"chunk 0", "c/1": b"chunk 1", "complete": b""}
