"""The engine built for Windows, running under Wine, driven from Linux (`make test-windows`).

Each test starts `engine.exe SRC DST` (examples/engine.rs) under Wine and acts as the writer:
from Linux for renames, folders and deletions (Wine's ReadDirectoryChangesW sits on inotify, so
it sees them), and from a Wine process (examples/holder.rs) where Windows semantics matter:
share modes, and files held open with no close event ever reported. What Wine cannot show is in
docs/design.md, "Windows". Every wait is a bounded poll.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for  # tests/conftest.py, loaded by pytest before this file

BIN = Path(os.environ.get("SOFTCOPY_WINE_BIN", "target/x86_64-pc-windows-gnu/debug/examples"))
BLOCK = 65536


def win(path: Path) -> str:
    """Wine maps / to Z:."""
    return "Z:" + str(path).replace("/", "\\")


class WineEngine:
    def __init__(self, src: Path, dst: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.out = log.open("wb")
        self.proc = subprocess.Popen(
            ["wine", str(BIN / "engine.exe"), win(src), win(dst), "--verbose", *extra],
            stdout=subprocess.DEVNULL,
            stderr=self.out,
        )

    def watching(self) -> WineEngine:
        """Waits for the engine's first scan; a failure shows what the engine printed."""
        try:
            wait_for(lambda: "watching" in self.text() or self.proc.poll() is not None, 60, "watching")
        except AssertionError:
            raise AssertionError(f"the engine under Wine did not start watching:\n{self.text()}") from None
        assert "watching" in self.text(), f"the engine ended before watching:\n{self.text()}"
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def last_status(self) -> str:
        return [line for line in self.text().splitlines() if line.startswith("status ")][-1]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.out.close()

    def ended(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the engine did not end:\n{self.text()}") from None


class Holder:
    """A Wine process writing PATH in place: BLOCKS blocks of 64 KiB, one every MS ms."""

    def __init__(self, path: Path, share: str, blocks: int, ms: int) -> None:
        self.size = blocks * BLOCK
        self.proc = subprocess.Popen(
            ["wine", str(BIN / "holder.exe"), win(path), share, str(blocks), str(ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "open"

    def closed(self) -> bool:
        return self.proc.poll() is not None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path, list[WineEngine | Holder]]]:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    started: list[WineEngine | Holder] = []
    yield tmp_path / "src", tmp_path / "dst", started
    for p in started:
        p.close()


Dirs = tuple[Path, Path, list["WineEngine | Holder"]]


def holder(dirs: Dirs, path: Path, share: str, blocks: int, ms: int) -> Holder:
    h = Holder(path, share, blocks, ms)
    dirs[2].append(h)
    return h


def engine(dirs: Dirs, *extra: str) -> WineEngine:
    src, dst, started = dirs
    e = WineEngine(src, dst, src.parent / "engine.log", *extra)
    started.append(e)  # closed by the fixture even when the start fails
    return e.watching()


def publish(path: Path, data: bytes) -> None:
    """tensorstore's way: write a temporary name, rename it onto the key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".__lock")
    tmp.write_bytes(data)
    tmp.rename(path)


def arrived(path: Path, data: bytes) -> bool:
    return path.exists() and path.read_bytes() == data


def finish(e: WineEngine, src: Path, dst: Path) -> None:
    (src / "complete").write_bytes(b"")
    assert e.ended() == 0, e.text()
    assert "verdict verified=true" in e.text()
    assert (dst / "complete").exists()


def test_rename_published_chunks_and_new_nested_folders_arrive_before_the_marker(dirs: Dirs) -> None:
    src, dst, _ = dirs
    e = engine(dirs)
    chunks = {f"c/0/{i}": os.urandom(1000 + i) for i in range(20)}
    for key, data in chunks.items():
        publish(src / key, data)
    # Folders made at once with files in them: Wine reports only some of the creations.
    for i in range(6):
        d = src / "deep" / str(i) / "x" / "y"
        d.mkdir(parents=True)
        (d / "f").write_bytes(b"n%d" % i)
        chunks[f"deep/{i}/x/y/f"] = b"n%d" % i
    for key, data in chunks.items():
        wait_for(functools.partial(arrived, dst / key, data), 30, f"{key} before the marker")
    assert not (dst / "complete").exists()
    finish(e, src, dst)
    # One copy per file: the status counts copies, not files.
    assert f"copied={len(chunks)} " in e.last_status(), e.last_status()


def test_a_slow_in_place_writer_is_never_published_before_it_is_whole(dirs: Dirs) -> None:
    src, dst, _ = dirs
    e = engine(dirs)
    h = holder(dirs, src / "shard", "read+write", 30, 100)
    seen_partial = []
    while not h.closed():
        if (dst / "shard").exists() and (dst / "shard").stat().st_size != h.size:
            seen_partial.append((dst / "shard").stat().st_size)
        time.sleep(0.02)
    assert not seen_partial, f"published before the writer closed it: sizes {seen_partial}"
    wait_for(lambda: (dst / "shard").exists() and (dst / "shard").stat().st_size == h.size, 30, "the whole shard")
    assert (dst / "shard").read_bytes() == (src / "shard").read_bytes()
    finish(e, src, dst)


def test_an_in_place_rewrite_of_a_copied_file_is_copied_again_without_a_rescan(dirs: Dirs) -> None:
    src, dst, _ = dirs
    e = engine(dirs)
    (src / "zarr.json").write_bytes(b'{"shape": [1]}')
    wait_for(lambda: (dst / "zarr.json").exists(), 30, "the first version")
    with (src / "zarr.json").open("r+b") as f:
        f.write(b'{"shape": [2]}')
    # No periodic rescan exists: only the write's event can bring the second version.
    wait_for(lambda: (dst / "zarr.json").read_bytes() == b'{"shape": [2]}', 20, "the rewrite")
    finish(e, src, dst)


def test_deletions_and_removed_folders_are_mirrored(dirs: Dirs) -> None:
    src, dst, _ = dirs
    e = engine(dirs)
    for key in ["a", "t/0/0", "t/0/1", "t/1/0"]:
        publish(src / key, key.encode())
    for key in ["a", "t/0/0", "t/0/1", "t/1/0"]:
        wait_for((dst / key).exists, 30, key)
    (src / "a").unlink()
    for f in (src / "t").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((src / "t").rglob("*"), reverse=True):
        d.rmdir()
    (src / "t").rmdir()
    wait_for(lambda: not (dst / "a").exists(), 30, "a deleted")
    wait_for(lambda: not (dst / "t" / "0" / "0").exists() and not (dst / "t" / "1" / "0").exists(), 30, "t's files")
    finish(e, src, dst)


def test_a_writer_that_shares_nothing_is_waited_out_not_given_up(dirs: Dirs) -> None:
    # Held for ~10 s, longer than the failure retries last (6 attempts, ~13 s of backoff would be
    # needed; they used to end after ~6 s with failed=1 and nothing ever re-tried the file).
    src, dst, _ = dirs
    e = engine(dirs)
    h = holder(dirs, src / "locked", "none", 100, 100)
    wait_for(h.closed, 60, "the writer to let go")
    wait_for(lambda: (dst / "locked").exists() and (dst / "locked").stat().st_size == h.size, 30, "the file")
    assert (dst / "locked").read_bytes() == (src / "locked").read_bytes()
    finish(e, src, dst)
    assert "failed=0" in e.last_status() and "errors=0" in e.last_status(), e.last_status()


def test_the_root_deleted_and_recreated_is_followed(dirs: Dirs) -> None:
    src, dst, _ = dirs
    e = engine(dirs)
    publish(src / "old", b"first acquisition")
    wait_for(lambda: (dst / "old").exists(), 30, "old")
    (src / "old").unlink()
    src.rmdir()
    src.mkdir()
    publish(src / "new", b"second")
    wait_for(lambda: (dst / "new").exists() and (dst / "new").read_bytes() == b"second", 30, "a file of the new root")
    finish(e, src, dst)


def test_paths_longer_than_max_path_are_copied(dirs: Dirs) -> None:
    # 260 characters is MAX_PATH; the engine works below the \\?\ form of its roots.
    src, dst, _ = dirs
    e = engine(dirs)
    key = "/".join(f"folder-with-a-rather-long-name-{i:02d}" for i in range(9)) + "/0"
    assert len(win(src / key)) > 300
    publish(src / key, b"far down")
    wait_for(lambda: arrived(dst / key, b"far down"), 30, "the deep file")
    finish(e, src, dst)


def test_delete_source_frees_what_was_copied_and_flushed(dirs: Dirs) -> None:
    # FlushFileBuffers needs a handle opened for writing: the proof's flush through a read-only
    # one failed, and freeing never freed anything under Windows.
    src, dst, _ = dirs
    e = engine(dirs, "--delete-source", "--quiet=0.2")
    files = {f"c/{i}/0": bytes([i]) * 1000 for i in range(4)}
    for key, data in files.items():
        publish(src / key, data)
    wait_for(lambda: all(arrived(dst / k, d) for k, d in files.items()), 30, "the copies")
    finish(e, src, dst)
    kept = [k for k in files if (src / k).exists()]
    assert not kept, f"not freed: {kept}\n{e.text()}"
    assert all(arrived(dst / k, d) for k, d in files.items()), "the copies stand"


def test_every_copy_and_the_marker_are_flushed_before_they_count(tmp_path: Path) -> None:
    # Windows has no flush of a whole filesystem: the marker used to be published with no flush at
    # all. Wine turns FlushFileBuffers into fsync(2) in the calling process, so strace sees each.
    src, dst, trace = tmp_path / "src", tmp_path / "dst", tmp_path / "trace"
    for key in ("c/0/0", "c/1/0", "zarr.json"):
        publish(src / key, key.encode())
    (src / "complete").write_bytes(b"")
    dst.mkdir()
    cmd = ["strace", "-f", "-qq", "-y", "-o", str(trace), "-e", "trace=fsync,fdatasync"]
    cmd += ["wine", str(BIN / "engine.exe"), win(src), win(dst)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    flushed = [line.split("<", 1)[1].split(">", 1)[0] for line in trace.read_text().splitlines() if "sync(" in line]
    partials = [Path(p).name for p in flushed if p.endswith(".softcopy-partial")]
    for key, copies in (("0", 2), ("zarr.json", 1), ("complete", 1)):
        assert sum(name.startswith(f".{key}.") for name in partials) >= copies, (key, flushed)
    marker = max(i for i, p in enumerate(flushed) if Path(p).name.startswith(".complete."))
    assert str(dst) in flushed[marker + 1 :], f"the root folder flushed after the marker: {flushed}"
