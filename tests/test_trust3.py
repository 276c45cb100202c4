"""Trust, part two (issue 12): the items the audit read but had not reproduced. Each test failed on
3ad56b2, the commit before they were fixed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import softcopy
from conftest import WRITER, softcopy_cmd, tree, wait_for


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=120)


def archive(root: Path, timepoints: int) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(WRITER), str(root), "zarr3", str(timepoints), "0"], check=True)
    return tree(root)


def test_metadata_that_cannot_be_read_at_the_end_makes_the_run_non_zero(tmp_path: Path) -> None:
    # Unreadable metadata dropped its array from the proof: a chunk deleted at the source (fill
    # value) kept its stale copy at the destination as a harmless "extra", exit 0.
    src, dst = tmp_path / "acq.zarr", tmp_path / "dst"
    files = archive(src, 2)
    assert run(src, dst, "--once").returncode == 0
    stale = max(k for k in files if k.startswith("c/"))
    (src / stale).unlink()
    (src / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array", "shape": [')
    r = run(src, dst, "--once")
    assert r.returncode == 1, r.stderr
    assert "zarr.json" in r.stderr and "cannot be accounted for" in r.stderr, r.stderr
    assert not (dst / "complete").exists(), "no marker over an archive that could not be verified"
    # The verify command says so too.
    v = run("verify", src, dst)
    assert v.returncode == 1 and "unreadable metadata: zarr.json" in v.stdout, v.stdout + v.stderr


def test_a_destination_link_re_pointed_mid_run_pauses_the_target(tmp_path: Path) -> None:
    # The root was resolved once: re-pointed mid-run, the old folder went on receiving and was
    # verified and marked, while the name the user gave led elsewhere.
    src, old, new, link = tmp_path / "acq", tmp_path / "old", tmp_path / "new", tmp_path / "dst"
    for d in (src, old, new):
        d.mkdir()
    link.symlink_to(old)
    (src / "first").write_bytes(b"1")
    c = softcopy.Copier([softcopy.Target(src, link, settle_time=0.01)])
    c.start()
    try:
        wait_for(lambda: (old / "first").exists(), 20, "the first copy")
        link.unlink()
        link.symlink_to(new)
        wait_for(lambda: (c.status()[0].paused or "").find("now leads to") >= 0, 20, "the pause")
        (src / "second").write_bytes(b"2")
        (src / "complete").touch()
        report = c.wait(60)
        assert report is not None
    finally:
        c.stop()
        c.wait(10)
    t = report.targets[0]
    assert not t.verified and t.phase == "incomplete", t
    assert not (old / "second").exists(), "nothing more written at the old place once paused"
    assert not (old / "complete").exists() and not (new / "complete").exists(), "no marker anywhere"
    assert any("now leads to" in n for n in t.notes), t.notes
