"""The source tree's watch (docs/design.md, "Memory"), read as an adversary: each test reproduces
a finding through the engine on a real filesystem, red before its fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import holds_for, sysctl, wait_for


@pytest.mark.kernel_wide
def test_folders_made_or_moved_while_events_were_lost_are_watched_after_the_rescan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two renames fill a queue of two events; the folder moved in and the folder renamed right
    # after lose their events. The rescan lists their files, but the folder moved in had no
    # watch, and the renamed one was named where it was: a file put in either afterwards was
    # heard by no event, found only by the final look (or, put there after it, not at all).
    # Each later file comes by a rename from outside the tree: one event, which the queue holds.
    import softcopy

    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    (src / "old").mkdir(parents=True)
    (src / "old" / "0").write_bytes(b"0")
    (src / "f1").write_bytes(b"f")
    (outside / "new").mkdir(parents=True)
    (outside / "new" / "0").write_bytes(b"n")
    for late in ["late1", "late2"]:
        (outside / late).write_bytes(late.encode())
    c = softcopy.Copier([softcopy.Target(src, dst)])
    with sysctl("fs.inotify.max_queued_events", 2):  # read when softcopy creates its inotify instance
        c.start()
        wait_for(lambda: c.poll() is None and (dst / "old" / "0").exists(), 10, "the first copy")
    try:
        (src / "f1").rename(src / "f2")
        (outside / "new").rename(src / "new")
        (src / "old").rename(src / "moved")
        wait_for(lambda: c.poll() is None and "events were lost" in caplog.text, 10, "the overflow to be noticed")
        wait_for(lambda: (dst / "new" / "0").exists() and (dst / "moved" / "0").exists(), 20, "the rescan")
        (outside / "late1").rename(src / "new" / "late")
        (outside / "late2").rename(src / "moved" / "late")
        wait_for(lambda: (dst / "new" / "late").exists(), 10, "a file put in the folder moved in, copied live")
        wait_for(lambda: (dst / "moved" / "late").exists(), 10, "a file put in the folder renamed, copied live")
    finally:
        c.stop()
        c.wait(10)


def test_a_filesystem_unmounted_inside_the_source_is_no_deletion_and_its_mount_point_stays_watched(
    tmp_path: Path,
) -> None:
    # A disk mounted in a folder of the acquisition is unmounted during the run (the kernel's
    # IN_UNMOUNT on the folder's watch, then IN_IGNORED). Its files are not deleted: their copies
    # stay. The folder under it (the mount point, on the source's own disk) is a folder of the
    # tree, and what is put in it afterwards is heard.
    import softcopy

    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    (src / "m").mkdir(parents=True)
    outside.mkdir()
    (outside / "late").write_bytes(b"late")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "m")], check=True)
    try:
        (src / "m" / "f").write_bytes(b"f")
        c = softcopy.Copier([softcopy.Target(src, dst)])
        c.start()
        try:
            wait_for(lambda: c.poll() is None and (dst / "m" / "f").exists(), 10, "the first copy")
        finally:
            subprocess.run(["umount", str(src / "m")], check=True)
        try:
            holds_for(lambda: (dst / "m" / "f").exists(), 3, "the unmounted disk's copy kept")
            (outside / "late").rename(src / "m" / "late")
            wait_for(lambda: (dst / "m" / "late").exists(), 10, "a file put in the mount point, copied live")
        finally:
            c.stop()
            c.wait(10)
    finally:
        subprocess.run(["umount", str(src / "m")], check=False, capture_output=True)
