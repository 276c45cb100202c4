"""Trust, part four (docs/design.md, "Crash points", "One destination, one acquisition"): a crash while freeing, a disk swapped under the source, a log still
open when it is freed, a destination with no parent, one source freed by two targets, a listing of
the destination that failed once. Each test failed on a738bee, the commit the issue was filed
against."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import softcopy
from conftest import Softcopy, assert_same_tree, conclude, finish, fuse_mount, softcopy_cmd, tree, wait_for
from softcopy.config import EngineConfig, Target
from test_trust2 import archive, run

# --- Item 1: a crash while freeing, then the same command again ---------------------------------


# Freeing sets a file aside (a rename) before it unlinks it (docs/design.md, "The end of a run").
GOING = "unlink,unlinkat,rename,renameat,renameat2"


def killed_at_unlink_of(path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """softcopy run under strace, killed (SIGKILL) on entering the unlink of `path`, or the rename
    that sets it aside to be unlinked: the file is still there, everything freed before it is gone,
    as after a power cut at that moment."""
    cmd = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(path), "-e", f"trace={GOING}"]
    cmd += ["-e", f"inject={GOING}:signal=KILL", *softcopy_cmd(*args)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


def killed_at_failpoint(spec: str, *args: str | Path) -> None:
    """softcopy run with the crash points `spec` (docs/design.md, "Crash points"); it must have been
    killed at one."""
    env = {**os.environ, "SOFTCOPY_FAILPOINTS": spec}
    crash = subprocess.run(softcopy_cmd(*args), env=env, check=False, capture_output=True, text=True, timeout=120)
    assert crash.returncode in (-9, 137), (crash.returncode, crash.stderr)


def test_a_crash_while_freeing_then_the_same_command_again_keeps_every_copy(tmp_path: Path) -> None:
    # Item 1: killed at the unlink of the array's metadata (the chunks already freed, the metadata
    # journaled), the next run took the freed chunks' copies for stale chunks of the array and
    # pruned them: exit 0 "verified", the chunks at neither end.
    src, dst = tmp_path / "acq.zarr", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir(exist_ok=True)
    before = archive(src, 2)
    chunks = sorted(k for k in before if k.startswith("c/"))
    assert chunks and "zarr.json" in before and "complete" in before
    crash = killed_at_unlink_of(src.resolve() / "zarr.json", src, dst, "--delete-source")
    assert crash.returncode in (-9, 137), (crash.returncode, crash.stderr)
    assert not any((src / k).exists() for k in chunks), "the chunks were freed before the crash"
    assert (src / "zarr.json").exists() and (src / "complete").exists(), "killed at the metadata's unlink"
    assert all(tree(dst).get(k) == before[k] for k in chunks), "the freed chunks' copies were there"
    again = run(src, dst, "--delete-source")
    assert again.returncode in (0, 1), again.stderr
    at_dst, at_src = tree(dst), tree(src)
    lost = [k for k in chunks if at_dst.get(k) != before[k]]
    assert not lost, f"exit {again.returncode}: the only copies of {lost} are gone\n{again.stderr}"
    nowhere = [k for k in before if at_dst.get(k) != before[k] and at_src.get(k) != before[k]]
    assert not nowhere, f"lost at both ends: {nowhere}"


def freed_in_part(src: Path, dst: Path) -> tuple[dict[str, bytes], list[str]]:
    """An archive copied, verified, and its freeing killed after two chunks were unlinked: the
    chunks' copies are the only ones left; the rest is at both ends."""
    before = archive(src, 2)
    killed_at_failpoint("free.unlinked=1*off->return", src, dst, "--delete-source")
    freed = sorted(k for k in before if k.startswith("c/") and not (src / k).exists())
    assert len(freed) == 2, freed
    return before, freed


def test_a_new_take_into_a_folder_freed_in_part_never_replaces_the_only_copies(
    tmp_path: Path, run_softcopy: Callable[..., Softcopy]
) -> None:
    # A reviewer's finding: a writer taking again into the folder (its files written anew) while a
    # run watched had each freed chunk's new version copied over the only copy of the one freed.
    src, dst = tmp_path / "acq.zarr", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir()
    before, freed = freed_in_part(src, dst)
    (src / "complete").unlink()  # a new take begins
    proc = run_softcopy(src, dst)
    wait_for(lambda: "watching" in proc.output(), 20, "the run to watch")
    (src / freed[0]).write_bytes(b"the new take's chunk")
    (src / freed[1]).write_bytes(b"another of the new take's")
    (src / freed[1]).unlink()  # and deleted again: no writer's deletion of the copy either
    (src / "complete").touch()
    code, out = finish(proc)
    assert code != 0, out
    assert all(tree(dst).get(k) == before[k] for k in freed), f"the only copies of {freed} are gone:\n{out}"
    assert freed[0] in out, out


def test_a_freed_chunk_written_anew_before_the_run_starts_is_not_copied_over_its_only_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq.zarr", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir()
    before, freed = freed_in_part(src, dst)
    (src / freed[0]).write_bytes(b"the new take's chunk")
    r = run(src, dst)
    assert r.returncode == 1, r.stderr
    assert freed[0] in r.stderr and "freed" in r.stderr, r.stderr
    assert all(tree(dst).get(k) == before[k] for k in freed), r.stderr


def test_a_freed_copy_whose_mtime_changed_at_the_destination_is_never_pruned(tmp_path: Path) -> None:
    # A reviewer's finding: a copy of a freed chunk touched at the destination (a backup restore,
    # a migration that keeps no times) no longer looked like the version freed, and verification
    # pruned it as a stale chunk: exit 0, the chunk at neither end.
    src, dst = tmp_path / "acq.zarr", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir()
    before, freed = freed_in_part(src, dst)
    os.utime(dst / freed[0], (1_000_000_000, 1_000_000_000))
    r = run(src, dst, "--delete-source")
    assert tree(dst).get(freed[0]) == before[freed[0]], f"exit {r.returncode}: the only copy is gone\n{r.stderr}"
    assert r.returncode != 0, r.stderr


# --- Item 3: the source's disk unmounted and another mounted in its place ------------------------


@contextmanager
def tmpfs(mnt: Path) -> Iterator[Callable[[], None]]:
    """A tmpfs at `mnt`; yields `swap`, which unmounts it (lazily, as a pulled disk) and mounts a
    new, empty one at the same place. Whatever is mounted there is unmounted at the end."""
    mnt.mkdir(parents=True, exist_ok=True)

    def mount() -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)

    def swap() -> None:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
        mount()

    mount()
    try:
        yield swap
    finally:
        for _ in range(3):
            if not os.path.ismount(mnt):
                break
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_a_source_on_another_disk_mounted_in_its_place_is_not_adopted(
    tmp_path: Path, run_softcopy: Callable[..., Softcopy]
) -> None:
    # Item 3: the disk unmounted was taken for the folder deleted, and the folder of the same name
    # on the disk mounted next was taken for it come back: its files were copied over the first
    # disk's copies, the first disk's other copies pruned as deletions, marker published, exit 0.
    mnt, dst = tmp_path / "disk", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir(exist_ok=True)
    first = {"meta": b"first disk's meta", "c/0": b"first c0", "c/1": b"first c1"}
    second = {
        "meta": b"the second disk's meta",  # the same name, another size
        "c/0": b"other c0",  # the same name and size, other bytes
        "c/7": b"only on the second disk",
    }
    with tmpfs(mnt) as swap:
        src = mnt / "acq.zarr"
        write_files(src, first)
        proc = run_softcopy(src, dst)
        wait_for(lambda: tree(dst) == first, 20, "the first disk's files copied")
        swap()
        write_files(src, second)
        (src / "complete").touch()
        code, out = finish(proc, 30)
    assert code == 1, out
    assert not (dst / "complete").exists(), "no marker over a folder of another disk"
    assert tree(dst) == first, f"the first disk's copies kept as they were, nothing of the second's:\n{out}"


# --- Item 4: a file a writer still has open is not freed -----------------------------------------

HOLDER = """
import sys
f = open(sys.argv[1], "a")
print("open", flush=True)
sys.stdin.readline()
f.write("last line\\n")
f.close()
"""


@contextmanager
def held_open(path: Path) -> Iterator[Callable[[], None]]:
    """Another process opens `path` for appending and holds it, writing nothing; yields a function
    which makes it write a last line and close."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None

        def write_and_close() -> None:
            holder.communicate("go\n", timeout=20)
            assert holder.returncode == 0

        try:
            assert holder.stdout.readline() == "open\n"
            yield write_and_close
        finally:
            if holder.poll() is None:
                holder.kill()


def test_a_side_file_opened_for_writing_after_its_copy_is_not_freed(tmp_path: Path) -> None:
    # Item 4: a log the acquisition software opened again (for appending) once its copy was made:
    # freed while open, and the line written next went to a file with no name at either end.
    src, dst = tmp_path / "acq.zarr", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir(exist_ok=True)
    archive(src, 2)
    (src / "complete").unlink()
    (src / "acq.log").write_bytes(b"line 1\n")
    engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, delete_source=True, quiet_time=2.0)))
    try:
        wait_for(lambda: tree(dst).get("acq.log") == b"line 1\n", 20, "the log's copy")
        with held_open(src / "acq.log") as write_and_close:
            (src / "complete").touch()
            conclude(engine, 30)
            assert (src / "acq.log").exists(), "freed while a writer has it open"
            write_and_close()
    finally:
        engine.stop()
    assert (src / "acq.log").read_bytes() == b"line 1\nlast line\n", "the last line is at the source"


def test_a_side_file_open_for_writing_is_not_freed_by_a_resumed_run(tmp_path: Path) -> None:
    # Item 4, resumed: the log's copy made by an earlier run, the log open for appending when the
    # run that frees starts. Its copy matched, so nothing asked whether it was open: freed.
    src, dst = tmp_path / "acq.zarr", tmp_path / "cluster" / "acq.zarr"
    dst.parent.mkdir(exist_ok=True)
    archive(src, 2)
    (src / "acq.log").write_bytes(b"line 1\n")
    assert run(src, dst).returncode == 0
    with held_open(src / "acq.log") as write_and_close:
        engine = softcopy._softcopy.Engine(EngineConfig(Target(src, dst, delete_source=True, quiet_time=2.0)))
        try:
            conclude(engine, 30)
        finally:
            engine.stop()
        assert (src / "acq.log").exists(), "freed while a writer has it open"
        write_and_close()
    assert (src / "acq.log").read_bytes() == b"line 1\nlast line\n", "the last line is at the source"


# --- Item 5: a destination whose parent does not exist -------------------------------------------


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_destination_whose_parent_is_missing_is_refused_not_made(tmp_path: Path) -> None:
    # Item 5: every missing parent was made: a mistyped (or unmounted) share became a folder tree
    # on the local disk, copied to and "verified".
    src, missing = tmp_path / "acq.zarr", tmp_path / "missing_parent"
    archive(src, 1)
    r = run(src, missing / "acq.zarr")
    assert r.returncode == 2, r.stderr
    assert str(missing) in one_line(r.stderr), r.stderr
    assert not missing.exists(), "nothing made"


def test_a_missing_destination_of_the_service_form_is_refused_not_made(tmp_path: Path) -> None:
    # Item 5, the service form: its destination is the folder acquisitions go in; it was made.
    acq, raw = tmp_path / "acquisition", tmp_path / "raw"
    archive(acq / "fish.zarr", 1)
    proc = subprocess.Popen(
        softcopy_cmd(f"{acq}/*.zarr", raw), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: proc.poll() is not None or raw.exists(), 20, "softcopy to refuse")
    finally:
        if proc.poll() is None:
            proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2, f"exit {proc.returncode}, {raw} made: {raw.exists()}\n{err}"
    assert str(raw) in one_line(err), err
    assert not raw.exists(), "nothing made"


# --- Item 6: one source, two destinations, --delete-source ---------------------------------------


@pytest.mark.parametrize("alias", [False, True], ids=["same-path", "through-a-link"])
def test_a_source_shared_by_two_targets_with_delete_source_is_refused(tmp_path: Path, alias: bool) -> None:
    # Item 6: the target that frees ran beside the one that copies: the backup could end verified
    # with none of the chunks, freed before it copied them.
    src, a, b = tmp_path / "acq.zarr", tmp_path / "a" / "acq.zarr", tmp_path / "b" / "acq.zarr"
    before = archive(src, 2)
    other = src
    if alias:
        other = tmp_path / "link.zarr"
        other.symlink_to(src)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        f"  - source: {src}\n    destination: {a}\n    delete_source: true\n"
        f"  - source: {other}\n    destination: {b}\n"
    )
    r = run(targets)
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert "shared" in line or "same source" in line, line
    assert not tree(a) and not tree(b), "nothing copied"
    assert tree(src) == before, "the source untouched"


# --- Item 7: one failed listing of the destination at the start ----------------------------------


@contextmanager
def faulty_mount(backing: Path, mnt: Path, folder: str, log: Path) -> Iterator[Path]:
    """`backing` through tests/faulty_fs.py at `mnt`: the first listing of `folder` (a path inside
    the mount) fails with EIO, each failure noted in `log`. Unmounted whatever happens."""
    env = {"FAULTY_READDIR": folder, "FAULTY_TIMES": "1", "FAULTY_LOG": str(log)}
    with fuse_mount("faulty_fs.py", backing, mnt, env) as share:
        yield share


def test_a_failed_listing_of_the_destination_at_the_start_does_not_make_it_fresh(tmp_path: Path) -> None:
    # Item 7: the start's walk of the destination dropped its error and found no file, so the end
    # proved the copy from this run's own records and skipped the walk that prunes stale chunks:
    # exit 0, marker published, the chunks the source no longer has still at the destination.
    src, backing, log = tmp_path / "acq.zarr", tmp_path / "backing", tmp_path / "faults"
    files = archive(src, 2)
    backing.mkdir()
    assert run(src, backing / "acq.zarr", "--once").returncode == 0, "the earlier copy"
    stale = sorted(k for k in files if k.startswith("c/1/"))
    assert stale
    for k in stale:
        (src / k).unlink()  # fill value now: their copies are stale
    with faulty_mount(backing, tmp_path / "share", "/acq.zarr", log) as share:
        dst = share / "acq.zarr"
        r = run(src, dst, "--once")
        assert log.exists() and "EIO readdir /acq.zarr" in log.read_text(), "the fault was hit"
        if r.returncode == 0:
            left = [k for k in stale if (dst / k).exists()]
            assert not left, f"exit 0 with stale chunks at the destination: {left}\n{r.stderr}"
            assert_same_tree(src, dst)


# Items 10 and 11 and a marker that could not be flushed: each end step driven in a process of its
# own, since crash points and dropped capabilities are per process.
END_SCRIPT = """
import json, sys, time
from pathlib import Path
from softcopy._softcopy import Engine
from softcopy.config import EngineConfig, Target
from softcopy.zarr import discover
src, dst, late = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
e = Engine(EngineConfig(Target(src, dst, quiet_time=2.0, settle_time=0.01)))
given, deadline = False, time.monotonic() + 90
while not e.wait(0.05) and time.monotonic() < deadline:
    s = e.status()
    if late and s.phase == "publishing" and not (src / late).exists():
        (src / late).write_bytes(b"a chunk that landed after the final look")
    if s.wants_expected and not given:
        arrays, unreadable = discover(src)
        e.expect(arrays, unreadable)
        given = True
v = e.verdict()
print(json.dumps({"verified": v.verified, "reason": v.reason, "not_copied": [str(p) for p in v.not_copied]}))
"""


def end_run(
    src: Path, dst: Path, late: str = "", env: dict[str, str] | None = None, pre: list[str] | None = None
) -> dict[str, object]:
    import json

    cmd = [*(pre or []), sys.executable, "-c", END_SCRIPT, str(src), str(dst), late]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout.splitlines()[-1])
    return out


def test_a_chunk_landing_after_the_final_look_withdraws_the_marker(tmp_path: Path) -> None:
    # Item 11: the watch was dropped right after the final reconcile; a chunk landing while the end
    # steps ran was left out under a published marker, exit 0. The crash point's `sleep` holds the
    # end between flushing the copies and copying the marker, where the script writes the chunk.
    src, dst = tmp_path / "acq.zarr", tmp_path / "dst"
    write_files(src, {"zarr.json": b'{"node_type": "group"}', "c/0": b"first", "complete": b""})
    out = end_run(src, dst, late="c/9", env={"SOFTCOPY_FAILPOINTS": "publish.flushed=sleep(1500)"})
    assert out["verified"] is False, out
    assert "changed after it was verified" in str(out["reason"]), out
    assert not (dst / "complete").exists(), "no marker over a source that moved on"
    assert "c/9" in str(out["not_copied"])


def test_a_file_seen_written_and_never_closed_is_not_verified_without_a_lease(tmp_path: Path) -> None:
    # Item 10: without a lease (not the files' owner, no CAP_LEASE: a service account), a chunk a
    # writer held open and idle was taken as closed by the final reconcile's find and the quiet
    # period, copied half-written and verified. Inotify had reported its writes, never its close.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    write_files(src, {"zarr.json": b'{"node_type": "group"}'})
    os.chown(src, 12345, 12345)
    pre = ["setpriv", "--bounding-set=-lease", "--inh-caps=-lease"]
    proc = subprocess.Popen(
        [*pre, sys.executable, "-c", END_SCRIPT, str(src), str(dst), ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (dst / "zarr.json").exists(), 30, "the first copy")
        with (src / "half").open("wb") as f:
            os.fchown(f.fileno(), 12345, 12345)  # the writer's file, not softcopy's to lease
            f.write(b"the first half")
            f.flush()
            (src / "complete").touch()
            out_text, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    import json

    out = json.loads(out_text.splitlines()[-1])
    assert out["verified"] is False, out
    assert "half" in str(out["not_copied"]), out
    assert not (dst / "complete").exists()
