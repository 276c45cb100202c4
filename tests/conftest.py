"""Shared helpers: real processes, real files, bounded waits (never a sleep as synchronisation)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from softcopy.run import MISSED

# The network share (sshd + sshfs) is shared with benches/network.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from _share import Sshd

WRITER = Path(__file__).parent / "writers" / "ts_writer.py"

# These tests drive real processes and files on a shared 2-core machine: per-example time limits
# would measure the machine, not softcopy. Every wait has its own bounded timeout instead.
# CI is derandomized: the same examples every run (a failure there is reproduced by running the
# suite again; Hypothesis prints the blob that replays it). `make model-long` searches at random,
# with a seed printed at the start (`SOFTCOPY_HYPOTHESIS=random`).
settings.register_profile("softcopy", deadline=None, derandomize=True, database=None, print_blob=True)
settings.register_profile("random", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("SOFTCOPY_HYPOTHESIS", "softcopy"))


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Polls `cond` until it holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def holds_for(cond: Callable[[], bool], seconds: float, what: str) -> None:
    """Asserts that `cond` holds at every look for `seconds`: the check that nothing happens (a
    flood of messages, an early exit) over a bounded window. It synchronises nothing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond(), f"no longer true: {what}"
        time.sleep(0.05)


def tree(root: Path, *, skip_marker: bool = False) -> dict[str, bytes]:
    """Every data file under `root` with its content (writers' locks and temps, and softcopy's
    partials, excluded). Safe to call while files come and go: a file gone by the time it is read
    is left out, as if the walk had come a moment later."""
    out = {}
    for p in root.rglob("*"):
        if p.name.endswith((".__lock", ".partial", ".softcopy-partial")):
            continue
        rel = p.relative_to(root).as_posix()
        if (skip_marker and rel == "complete") or rel.startswith(".softcopy"):
            continue  # softcopy's own state at the destination root (the move journal)
        try:
            if p.is_file():
                out[rel] = p.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def assert_same_tree(src: Path, dst: Path) -> None:
    a, b = tree(src), tree(dst)
    assert sorted(a) == sorted(b), (
        f"only at source: {sorted(set(a) - set(b))[:10]}, only at destination: {sorted(set(b) - set(a))[:10]}"
    )
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"content differs: {different[:10]}"


def softcopy_cmd(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "softcopy", *map(str, args)]


def start_writer(path: Path, layout: str, timepoints: int, interval: float, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WRITER), str(path), layout, str(timepoints), str(interval), *extra])


class Softcopy(subprocess.Popen[bytes]):
    """A softcopy process whose combined output goes to a file, so a test can wait on what it said."""

    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def finish(proc: Softcopy, timeout: float = 60) -> tuple[int, str]:
    """Waits for a softcopy process started with `run_softcopy`; returns (exit code, its output)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"softcopy did not exit within {timeout} s:\n{proc.output()}") from None
    return proc.returncode, proc.output()


@pytest.fixture
def run_softcopy(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Softcopy]]:
    """Starts softcopy processes, killed at the end. Unless the test is marked `events_missed`,
    none of them may have found anything only by its final look: a live copy is proven live."""
    procs: list[Softcopy] = []

    def start(*args: str | os.PathLike[str]) -> Softcopy:
        log = tmp_path_factory.mktemp("log") / "softcopy.log"
        with log.open("wb") as out:
            p = Softcopy(softcopy_cmd(*args), stdout=out, stderr=subprocess.STDOUT)
        p.log = log
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if request.node.get_closest_marker("events_missed") is None:
        for p in procs:
            assert MISSED not in p.output(), f"the watch missed events: {p.output()}"


def conclude(
    engine: Any, timeout: float = 30, before: Callable[[], None] | None = None, *, missed: bool = False
) -> Any:
    """Drives a bare engine to its verdict: once it drained and asks for the expected Zarr file
    set, runs `before` (a fault to inject between drain and verification), hands the set over,
    and waits for the end. Unless `missed` (events lost or made to be missed), the final look
    found nothing the events did not announce."""
    from softcopy.zarr import discover

    wait_for(lambda: engine.status().wants_expected or engine.wait(0), timeout, "the engine to drain")
    if before is not None:
        before()
    if not engine.wait(0):
        arrays, unreadable = discover(engine.source)
        engine.expect(arrays, unreadable)
    assert engine.wait(timeout), engine.status()
    v = engine.verdict()
    assert missed or v is None or v.found_at_end == 0, f"the watch missed {v.found_at_end} files"
    return v


def write_finished_archive(root: Path, layout: str = "v2dot", timepoints: int = 3) -> None:
    subprocess.run([sys.executable, str(WRITER), str(root), layout, str(timepoints), "0"], check=True)


@contextmanager
def fuse_mount(script: str, backing: Path, mnt: Path, env: dict[str, str] | None = None) -> Iterator[Path]:
    """`backing` seen through the FUSE filesystem `tests/<script>` at `mnt` (made here), with
    `env` added to its environment; unmounted whatever happens."""
    mnt.mkdir()
    fs = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name(script)), str(backing), str(mnt)],
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for(lambda: os.path.ismount(mnt), 20, f"the {script} mount")
        yield mnt
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], check=False)
        fs.wait(20)


KERNEL_WIDE_LOCK = Path("/run/lock/softcopy-tests-kernel-wide")
"""Held by every test process while it changes a kernel-wide setting: two test runs on one machine
(two engineers, a helper, CI) never overlap their changes."""
_marked_kernel_wide: list[bool | None] = [None]
"""Whether the running test is marked `kernel_wide` (None outside a test: a script of a test's own)."""


@pytest.fixture(autouse=True)
def _kernel_wide_mark(request: pytest.FixtureRequest) -> Iterator[None]:
    _marked_kernel_wide[0] = request.node.get_closest_marker("kernel_wide") is not None
    yield
    _marked_kernel_wide[0] = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that changes a kernel-wide setting runs alone: never on a worker beside other tests.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        alone = pytest.mark.skip(reason="changes a kernel-wide setting: run the suite serially")
        for item in items:
            if item.get_closest_marker("kernel_wide"):
                item.add_marker(alone)


@contextmanager
def sysctl(name: str, value: int) -> Iterator[None]:
    """Sets a kernel setting for the duration of a block, and restores it whatever happens: a
    SIGTERM (CI's timeout, a person's kill) inside the block unwinds through it instead of ending
    the process with the machine-wide limit still changed. Only in a test marked `kernel_wide`,
    under `KERNEL_WIDE_LOCK`."""
    import fcntl

    assert _marked_kernel_wide[0] is not False, "a test that changes a kernel-wide setting is marked kernel_wide"
    path = Path("/proc/sys") / name.replace(".", "/")

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    KERNEL_WIDE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with KERNEL_WIDE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = path.read_text()
        path.write_text(f"{value}\n")
        try:
            yield
        finally:
            path.write_text(old)
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def busy_loops(n: int = 3) -> Iterator[None]:
    """`n` processes that spin on the CPU for the whole block, in this test's session (so the
    kernel's per-session scheduling groups do not shield softcopy from them): a busy acquisition
    PC. Killed at the end, also on failure."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in loops:
            p.kill()
            p.wait()
