"""What is not part of the acquisition (`exclude:` per target, `--exclude`, `exclude=` in Python):
a log the acquisition software keeps open for the whole run is never copied, never waited for,
never verified, and named in the report. Real files held open by this process, the real CLI."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import jsonschema
import pytest
import softcopy
from conftest import softcopy_cmd, tree, write_finished_archive
from test_cli import report_schema


@contextmanager
def kept_open(path: Path) -> Iterator[IO[bytes]]:
    """A file the acquisition software has open for writing (its log), for the whole block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(b"acquisition started\n")
        f.flush()
        yield f


def acquisition(root: Path) -> Path:
    write_finished_archive(root / "run.zarr", "v2dot", 2)
    return root / "run.zarr"


def without(files: dict[str, bytes], *names: str) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if not any(k == n or k.startswith(n + "/") for n in names)}


def test_excluded_files_kept_open_are_not_copied_waited_for_or_verified(tmp_path: Path) -> None:
    src, dst, out = acquisition(tmp_path), tmp_path / "copy.zarr", tmp_path / "report.json"
    (src / "logs").mkdir()
    (src / "logs" / "debug.txt").write_text("debug")
    with kept_open(src / "acquisition.log"):
        t0 = time.monotonic()
        r = subprocess.run(
            softcopy_cmd(src, dst, "--exclude", "*.log", "--exclude", "logs", "--report", out),
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
        )
        elapsed = time.monotonic() - t0
    # Not waited for: a file open for writing at the end holds a run for 60 s.
    assert r.returncode == 0 and elapsed < 40, (elapsed, r.stderr)
    assert tree(dst) == without(tree(src), "acquisition.log", "logs")
    assert not (dst / "acquisition.log").exists() and not (dst / "logs").exists()
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, report_schema())
    [t] = doc["targets"]
    assert doc["status"] == "verified" and sorted(t["excluded"]) == ["acquisition.log", "logs/debug.txt"], t
    assert any("2 files excluded" in n for n in t["notes"]), t["notes"]
    assert "2 files excluded" in r.stderr


def test_exclude_in_a_targets_file_adds_to_the_command_line(tmp_path: Path) -> None:
    src = acquisition(tmp_path)
    (src / "preview.png").write_bytes(b"png")
    (tmp_path / "t.yaml").write_text(
        "targets:\n  - source: run.zarr\n    destination: copy.zarr\n    exclude: ['*.png']\n"
    )
    with kept_open(src / "acquisition.log"):
        r = subprocess.run(
            softcopy_cmd(tmp_path / "t.yaml", "--exclude", "*.log"),
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert r.returncode == 0, r.stderr
    assert tree(tmp_path / "copy.zarr") == without(tree(src), "acquisition.log", "preview.png")


def test_exclude_in_python(tmp_path: Path) -> None:
    src = acquisition(tmp_path)
    with kept_open(src / "acquisition.log"):
        report = softcopy.copy(src, tmp_path / "a.zarr", exclude=["*.log"], timeout=60)
        assert report.ok and report.targets[0].excluded == ["acquisition.log"]
        target = softcopy.Target(src, tmp_path / "b.zarr", exclude=["acquisition.log"])
        with softcopy.Copier([target]) as copier:
            done = copier.wait(60)
        assert done is not None and done.ok
    assert not (tmp_path / "a.zarr" / "acquisition.log").exists()
    assert not (tmp_path / "b.zarr" / "acquisition.log").exists()


def test_a_file_still_open_at_the_end_is_named_for_what_it_is(tmp_path: Path) -> None:
    src = acquisition(tmp_path)
    target = softcopy.Target(src, tmp_path / "copy.zarr", quiet_time=1.0)
    with kept_open(src / "acquisition.log"), softcopy.Copier([target]) as copier:
        report = copier.wait(60)
    assert report is not None and not report.ok
    [line] = report.targets[0].missing
    assert line.startswith("acquisition.log (not copied: still open for writing"), line
    assert "went away" not in line


@pytest.mark.parametrize(
    ("yaml_value", "message"),
    [
        ("''", "exclude must be a list of globs"),
        ("[3]", "exclude must be a list of globs"),
        ("{a: 1}", "exclude must be"),
        ("['*.json']", "must not match Zarr metadata (zarr.json)"),
    ],
)
def test_a_bad_exclude_is_one_line_exit_2(tmp_path: Path, yaml_value: str, message: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "t.yaml").write_text(f"targets:\n  - source: src\n    destination: dst\n    exclude: {yaml_value}\n")
    r = subprocess.run(softcopy_cmd(tmp_path / "t.yaml"), check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_excluded_chunks_are_named_as_excluded_and_keep_their_array_readable_at_the_source(tmp_path: Path) -> None:
    """Chunks a lab excludes are not "absent at the source (fill value)": they are there, left out
    on purpose. Freeing keeps the array's metadata (and the marker) while they remain, so the source
    is still a readable archive of what was not copied, never orphan chunks without metadata."""
    src, dst = acquisition(tmp_path), tmp_path / "copy.zarr"
    excluded = sorted(k for k in tree(src) if k.startswith("1."))
    meta = json.loads((src / ".zarray").read_text())
    grid = math.prod(-(-n // c) for n, c in zip(meta["shape"], meta["chunks"], strict=True))
    chunks = sum(1 for k in tree(src) if k[0].isdigit())
    r = subprocess.run(
        softcopy_cmd(src, dst, "--exclude", "1.*", "--delete-source", "--json"),
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    [t] = json.loads(r.stdout.splitlines()[-1])["targets"]
    assert t["absent_at_source"] == grid - chunks and sorted(t["excluded"]) == excluded, t
    assert any(f"{len(excluded)} excluded files are chunks" in n for n in t["notes"]), t["notes"]
    assert sorted(tree(src)) == sorted([".zarray", "complete", *excluded])
    assert not any(k.startswith("1.") for k in tree(dst))


def test_metadata_left_out_deeper_than_the_start_can_tell_is_missing_and_nothing_is_freed(tmp_path: Path) -> None:
    """A glob that meets an array's metadata only below the root passes the start's check; the
    verification names the metadata missing: the copy is not whole, nothing is freed."""
    src, dst = tmp_path / "run", tmp_path / "copy"
    write_finished_archive(src / "arr", "v2dot", 1)
    (src / "arr" / "complete").rename(src / "complete")
    before = tree(src)
    r = subprocess.run(
        softcopy_cmd(src, dst, "--exclude", "arr/.zarray", "--delete-source", "--json"),
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 1, r.stderr
    [t] = json.loads(r.stdout.splitlines()[-1])["targets"]
    assert not t["verified"] and "arr/.zarray" in t["missing"], t
    assert tree(src) == before and not (dst / "complete").exists()
