"""A resumed run's look at a copy on a destination that keeps whole seconds, read as an adversary
(docs/design.md, "A version is decided on evidence"): each test reproduces a finding through the
CLI on a real filesystem, red before its fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import wait_for
from test_trust2 import run
from test_trust4 import write_files
from test_trust4_adversary import mounted

SECOND = 1_000_000_000


def test_a_rewrite_within_the_second_a_whole_seconds_copy_keeps_is_copied_though_the_copy_was_linked_since(
    tmp_path: Path,
) -> None:
    # ext4 with 128-byte inodes (ext3's, an old NAS's) keeps whole seconds and a real ctime. The
    # copy of a chunk holds its mtime cut to the second; the writer's next version, the same size,
    # is written within that second (set here, so that the test does not race the clock); a
    # snapshot by hard links (rsnapshot, `cp -al`) then moves the copy's ctime past the source's
    # last change. The next run must copy the new version: its bytes are not the copy's.
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4")
    image, disk = tmp_path / "disk.img", tmp_path / "disk"
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(image)], check=True, capture_output=True)
    disk.mkdir()
    src, dst = tmp_path / "acq", disk / "acq"
    write_files(src, {"c/0": b"chunk 0, first", "c/1": b"chunk 1", "complete": b""})
    with mounted(image, disk):
        r = run(src, dst)
        assert r.returncode == 0, r.stdout + r.stderr
        assert os.stat(dst / "c" / "0").st_mtime_ns % SECOND == 0, "the disk keeps whole seconds"
        first = os.stat(src / "c" / "0").st_mtime_ns
        (src / "c" / "0").write_bytes(b"chunk 0, again")
        os.utime(src / "c" / "0", ns=(first, first + (SECOND - first % SECOND) // 2))
        changed = os.stat(src / "c" / "0").st_ctime_ns
        # The copy's ctime, in whole seconds, more than a tick and the clocks' 2 s after that (the
        # kernel stamps it from its coarse clock, up to a jiffy behind this one: 50 ms more).
        late = changed + 2_010_000_000
        wait_for(lambda: (time.time_ns() - 50_000_000) // SECOND * SECOND > late, 10, "the clock")
        (disk / "snapshot").mkdir()
        os.link(dst / "c" / "0", disk / "snapshot" / "0")
        assert os.stat(dst / "c" / "0").st_ctime_ns > late
        r = run(src, dst)
        said = r.stdout + r.stderr
        assert r.returncode == 0, said
        assert (dst / "c" / "0").read_bytes() == b"chunk 0, again", f"verified over another version: {said}"
