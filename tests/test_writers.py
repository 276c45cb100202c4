"""Every writer a lab uses, live, each with the real library in its own process while softcopy runs:
the destination must end byte-identical to the source and softcopy must exit 0 by itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_same_tree, finish, wait_for

WRITERS = Path(__file__).parent / "writers"


def live(tmp_path: Path, run_softcopy: Any, writer: list[str], *extra: str) -> str:
    """Starts softcopy on a source that does not exist yet, runs the writer, returns softcopy's output."""
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    dst.parent.mkdir(exist_ok=True)
    src.parent.mkdir()
    proc = run_softcopy(src, dst, "--nprocs", "4", *extra)
    wait_for(lambda: "waiting for" in proc.output(), 10, "softcopy to start waiting")
    w = subprocess.run([sys.executable, *writer[:1], str(src), *writer[1:]], check=False, timeout=120)
    assert w.returncode == 0, f"the writer failed: {writer}"
    code, out = finish(proc, 60)
    assert code == 0, out
    assert "not whole" not in out, "every shard a live writer finished must verify as whole"
    assert_same_tree(src, dst)
    return out


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
@pytest.mark.parametrize("locking", ["os", "lockfile", "none", "non_atomic"])
def test_tensorstore_every_locking_mode(tmp_path: Path, run_softcopy: Any, locking: str, sync: bool) -> None:
    args = [str(WRITERS / "ts_writer.py"), "zarr3", "8", "0.02", "--locking", locking, "--grow"]
    out = live(tmp_path, run_softcopy, args + ([] if sync else ["--no-sync"]))
    assert "verified complete" in out


def test_tensorstore_sharded_shrinking_array(tmp_path: Path, run_softcopy: Any) -> None:
    # Whole-shard rewrites (each timepoint rewrites its shard twice), then a shrink deletes shards.
    out = live(tmp_path, run_softcopy, [str(WRITERS / "ts_writer.py"), "zarr3sharded", "8", "0.02", "--shrink"])
    assert "verified complete" in out
    dst = tmp_path / "cluster" / "data.zarr"
    assert json.loads((dst / "zarr.json").read_text())["shape"][0] == 4
    assert not [p for p in dst.glob("c/2/**/*") if p.is_file()], "shards beyond the new shape are gone there too"


@pytest.mark.parametrize(
    ("layout", "fmt"),
    [
        ("plain", 2),
        ("plain", 3),
        ("sharded", 3),
        ("ome", 2),
        ("ome", 3),
        ("plate", 2),
        ("plate", 3),
        ("overwrite", 2),
        ("overwrite", 3),
    ],
)
def test_zarr_python(tmp_path: Path, run_softcopy: Any, layout: str, fmt: int) -> None:
    out = live(tmp_path, run_softcopy, [str(WRITERS / "zarr_writer.py"), layout, str(fmt), "6", "0.02"])
    assert "verified complete" in out


@pytest.mark.parametrize("layout", ["plain", "multiscale"])
def test_acquire_zarr(tmp_path: Path, run_softcopy: Any, layout: str) -> None:
    out = live(tmp_path, run_softcopy, [str(WRITERS / "aqz_writer.py"), layout, "12", "0.02"])
    assert "verified complete" in out
    assert "not whole" not in out


def test_acquire_zarr_killed_writer_shards_are_copied_and_reported(tmp_path: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    dst.parent.mkdir(exist_ok=True)
    src.parent.mkdir()
    proc = run_softcopy(src, dst)
    wait_for(lambda: "waiting for" in proc.output(), 10, "softcopy to start waiting")
    w = subprocess.run(
        [sys.executable, str(WRITERS / "aqz_writer.py"), str(src), "plain", "12", "0.05", "--kill-after", "7"],
        check=False,
        timeout=60,
    )
    assert w.returncode == -9, "the writer was killed"
    assert [p for p in src.rglob("c/1/*/*") if p.is_file()], "the crash left shards without an index"
    (src / "complete").touch()  # the operator declares the acquisition over
    code, out = finish(proc)
    assert code == 0, out
    assert "is not whole at the source either" in out
    assert_same_tree(src, dst)


def test_plain_folder_with_side_files(tmp_path: Path, run_softcopy: Any) -> None:
    # Not Zarr: a microscope's own files. An appended JSON log and a rewritten settings file must end
    # in their final version; there is no expected-file check, and softcopy says so.
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    dst.parent.mkdir(exist_ok=True)
    src.mkdir()
    proc = run_softcopy(src, dst)
    wait_for(lambda: "watching" in proc.output(), 10, "softcopy to watch")
    log = src / "log.json"
    for i in range(20):
        with log.open("a") as f:
            f.write(json.dumps({"frame": i}) + "\n")
        (src / "settings.txt").write_text(f"exposure {i}\n")
        if i % 5 == 0:
            (src / "images" / str(i)).mkdir(parents=True)
            (src / "images" / str(i) / "img.raw").write_bytes(bytes(range(256)) * 40)
    wait_for(lambda: (dst / "log.json").exists() and (dst / "log.json").read_text().count("\n") == 20, 10, "the log")
    (src / "complete").touch()
    code, out = finish(proc)
    assert code == 0, out
    assert "no Zarr arrays found" in out
    assert_same_tree(src, dst)


def test_root_removed_and_recreated_is_followed_live(tmp_path: Path) -> None:
    # zarr-python's mode="w" removes the root directory and makes a new one: every watch inside is
    # gone. softcopy must notice the new root and copy what is written into it *before* the marker
    # (the final rescan alone would hide a lost watch).
    import numpy as np
    import softcopy
    import zarr

    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    zarr.create_array(src, shape=(4, 8), chunks=(1, 8), dtype="uint8")[:] = 1
    with softcopy.Copier([softcopy.Target(src, dst)]) as c:
        wait_for(lambda: (dst / "c" / "3" / "0").exists(), 10, "the first dataset")
        root = zarr.open_group(src, mode="w")
        arr = root.create_array("new", shape=(6, 8), chunks=(1, 8), dtype="uint8")
        arr[:] = np.arange(48, dtype="uint8").reshape(6, 8)
        wait_for(lambda: all((dst / "new" / "c" / str(i) / "0").exists() for i in range(6)), 10, "the new dataset")
        wait_for(lambda: not (dst / "c").exists(), 10, "the old chunks and their folders removed")
        assert not c.status()[0].finishing
        (src / "complete").touch()
        report = c.wait(30)
    assert report is not None and report.ok
    assert_same_tree(src, dst)


def test_a_root_made_again_with_its_marker_at_once_ends_verified(tmp_path: Path) -> None:
    # rm -rf and mkdir at once (a writer's overwrite), a chunk and the marker right after: the old
    # folder's own watch can report its deletion after the new folder was followed, and that late
    # news paused the run, which then ended Incomplete "was deleted; waiting for it to return"
    # (one take in a few: twenty make the race likely).
    import softcopy

    for take in range(20):
        src, dst = tmp_path / f"{take}" / "run.zarr", tmp_path / f"{take}" / "out.zarr"
        (src / "c" / "0").mkdir(parents=True)
        (src / "c" / "0" / "0").write_bytes(b"first take")
        with softcopy.Copier([softcopy.Target(src, dst, settle_time=0.01, evict_after=0.05)]) as c:

            def watching(c: softcopy.Copier = c) -> bool:
                return c.status()[0].phase in ("copying", "waiting")

            wait_for(watching, 10, "the engine to watch")
            shutil.rmtree(src)
            src.mkdir()
            (src / "0.0").write_bytes(b"second take")
            (src / "complete").touch()
            report = c.wait(30)
        assert report is not None and report.ok, f"take {take}: {report}"
        assert_same_tree(src, dst)


def test_source_moved_away_does_not_wipe_the_copy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A root that disappears (moved by someone, a disk unmounted) is not a deletion of the data.
    import softcopy

    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    (src / "c" / "0").mkdir(parents=True)
    for i in range(5):
        (src / "c" / "0" / str(i)).write_bytes(b"chunk %d" % i)
    with softcopy.Copier([softcopy.Target(src, dst)]) as c:
        wait_for(lambda: len(list(dst.glob("c/0/*"))) == 5, 10, "the copy")
        src.rename(tmp_path / "moved.zarr")
        wait_for(lambda: c.poll() is None and "moved away" in caplog.text, 10, "softcopy to notice")
        assert c.status()[0].paused
        assert sorted(p.name for p in dst.glob("c/0/*")) == ["0", "1", "2", "3", "4"]
        c.stop()
