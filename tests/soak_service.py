"""Soak test of the service form (`make soak`, or `python tests/soak_service.py --minutes 10`; a
short form runs in the suite, test_soak_service.py).

One service, the real CLI (`softcopy 'ACQ/*.zarr' DST --delete-source --report 'R/{name}.json'
--notify URL --metrics ADDR`), over many acquisitions made by real writers (tensorstore,
zarr-python) and by hand (files, then the `complete` marker), while the soak aborts some (the writer
killed, the folder then deleted or renamed aside), renames finished ones aside, takes names again
(the folder deleted and made again, often on the same inode, or a new take written into the folder
the service freed), names some in bytes that are not UTF-8, and injects faults: the service stopped
(SIGTERM) or killed (SIGKILL) and started again, the acquisitions folder moved away and made again,
the webhook hanging, answering garbage or 500, and (`--share sshfs`) the destination share dropped
(sshd killed, then started again under sshfs).

Checked after each fault and at the end: nothing lost (every file written to an acquisition whose
folder the soak did not delete is at its source or, byte for byte, in a copy of its name at the
destination). At the end: every acquisition that finished at its name is verified at the destination
(its tree byte-identical, its marker there); one that left its name or was deleted before that, and
every aborted one, is named in a report or a webhook; the service's threads, inotify instances, open
files and RSS (sampled over the run: first, max, last) are back near an idle service's once every
acquisition ended (docs/design.md, "Service, month after month"). Exit 1 with each finding listed,
each with what the soak did to its acquisition and around it, and the service's log lines naming it;
the run's folder (the service's whole log, soak.log, the reports) is then kept and named.

What known bugs did is counted apart (KNOWN BUG lines, not findings); each is kept as an expected
failure in test_soak_service.py.
The seed replays the soak's choices; when they land depends on how fast the machine runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "benches"))
from _share import Sshd
from conftest import softcopy_cmd, tree

MARKER = "complete"
WRITERS = HERE / "writers"
THREADS_SLACK = 2
"""Threads an idle service may have beyond its idle count at the start (a `/status` request's
thread just ending)."""
FDS_SLACK = 4
RSS_GROWTH = 2.0
"""How much larger than idle the service's RSS may be once every acquisition ended (allocator
arenas and caches stay; growth per acquisition would not)."""
LAYOUTS = {
    "tensorstore": [["v2dot"], ["v2slash"], ["zarr3"], ["zarr3sharded"]],
    "zarr-python": [["plain", "2"], ["plain", "3"], ["sharded", "3"]],
}
PLANS = ["normal", "normal", "normal", "abort", "abort", "aside", "retake"]
"""What becomes of an acquisition, drawn from a shuffled deck so a short run has each."""
KINDS = ["hand", "hand", "hand", "tensorstore", "zarr-python"]
FAULTS = ["sigterm", "kill", "remake", "hook"]
LET_GO_AFTER = 10.0
"""The service's `LET_GO_AFTER`: a finding's history shows what happened this long after the take."""
LOG_LINES = 60
"""The service's log lines naming a take printed with a finding (all are in the kept service.log)."""


@dataclass
class Take:
    """One acquisition made under a name, and what the soak knows it holds."""

    name: str
    kind: str
    folder: Path
    """Where it is now at the source (it follows renames)."""
    plan: str
    files: dict[str, bytes] = field(default_factory=dict)
    """What it holds: by hand, each file once written; by a writer, its tree once the writer ended."""
    proc: subprocess.Popen[bytes] | None = None
    todo: list[tuple[str, bytes]] = field(default_factory=list)
    """By hand: the files still to write, the marker last."""
    state: str = "writing"
    """writing, finished (its marker written), aborted."""
    abort_at: float | None = None
    then_at: float | None = None
    """When the plan's next step is due (the folder deleted or renamed aside, a re-take)."""
    deleted: bool = False
    """The soak deleted its folder: its files need be nowhere."""
    left: bool = False
    """Its folder left its name (renamed aside, the acquisitions folder moved away)."""
    gone_at: float | None = None
    """When its folder left its name or was deleted."""
    made_at: float = field(default_factory=time.monotonic)
    verified_at: Path | None = None


@dataclass
class Event:
    """One thing the soak did, to a take or (`take` None) to the whole run."""

    at: float
    """time.monotonic()"""
    wall: str
    """The wall clock, as the service's log writes it."""
    take: Take | None
    what: str


@dataclass
class Footprint:
    threads: int
    inotify: int
    fds: int
    rss_mib: float


def footprint(pid: int) -> Footprint | None:
    """The process's threads, inotify instances, open files and RSS; None once it is gone."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
        rss = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x[:6] == "VmRSS:")
    except (OSError, StopIteration):
        return None
    inotify = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            inotify += os.readlink(fd) == "anon_inode:inotify"
    return Footprint(threads, inotify, len(fds), rss / 1024)


class Hook:
    """A webhook receiver on loopback whose behaviour the soak switches: ok (200, the body kept),
    500, garbage (bytes that are no HTTP reply), hang (the request read, never answered until the
    mode changes). A bare socket: an HTTP server would not send garbage."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.bodies: list[dict[str, Any]] = []
        self.served: Counter[str] = Counter()
        self._changed = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str) -> None:
        changed, self._changed, self.mode = self._changed, threading.Event(), mode
        changed.set()  # a hung request ends

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        mode, changed = self.mode, self._changed
        with conn, conn.makefile("rb") as f, contextlib.suppress(OSError, ValueError):
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = f.read(length)
            self.served[mode] += 1
            if mode == "ok":
                self.bodies.append(json.loads(body))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            elif mode == "500":
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            elif mode == "garbage":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\x00\xffnot json")
            else:
                changed.wait(120)

    def close(self) -> None:
        self.set("ok")
        self.sock.close()


class Share:
    """The destination over sshfs through a real sshd, which the soak kills and starts again."""

    def __init__(self, base: Path) -> None:
        self.backing, self.mnt = base / "share", base / "mnt"
        self.backing.mkdir()
        self.mnt.mkdir()
        self.sshd = Sshd(base / "sshd", quiet=True)
        self.sshd.start()
        self.sshd.mount(self.backing, self.mnt)
        self.up = True

    def drop(self) -> None:
        self.sshd.kill()
        self.up = False

    def back(self) -> None:
        self.sshd.start()
        self.up = True

    def close(self) -> None:
        subprocess.run(["fusermount", "-u", "-z", str(self.mnt)], check=False)
        self.sshd.kill()


class Service:
    """The service process, started (and waited for until it says it is ready) and stopped again."""

    def __init__(self, base: Path, args: list[str]) -> None:
        self.base, self.args, self.log = base, args, base / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stops: list[tuple[str, int, float]] = []
        """(how, exit code, seconds) of each stop."""
        self.stopped_at: list[float] = []
        self.down_since: float | None = time.monotonic()
        self.downs: list[tuple[float, float]] = []
        """(from, to) of each time the service was not running."""

    def start(self) -> int | None:
        """Starts the service: None once it says it is ready, or the exit code it ended with first."""
        self.starts += 1
        sock_path = self.base / f"notify-{self.starts}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, self.log.open("ab") as out:
            s.bind(str(sock_path))
            s.settimeout(0.2)
            env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
            self.proc = proc = subprocess.Popen(softcopy_cmd(*self.args), env=env, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    if s.recv(256) == b"READY=1":
                        if self.down_since is not None:
                            self.downs.append((self.down_since, time.monotonic()))
                        self.down_since = None
                        return None
                if proc.poll() is not None:
                    return proc.returncode
        raise RuntimeError(f"the service did not say it is ready in 60 s; its log ends:\n{self.tail()}")

    def stop(self, how: str) -> None:
        assert self.proc is not None
        t = time.monotonic()
        self.stopped_at.append(t)
        self.down_since = t
        self.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.stops.append((how, code, time.monotonic() - t))

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def copies(dst: Path, name: str) -> list[Path]:
    """The folders at the destination that may hold a copy of an acquisition named `name`: `name`,
    or `<stem>-N<suffix>` where that name held another acquisition's copy."""
    stem, suffix = Path(name).stem, Path(name).suffix
    other = re.compile(re.escape(stem) + r"-\d+" + re.escape(suffix))
    try:
        return sorted(p for p in dst.iterdir() if p.name == name or other.fullmatch(p.name))
    except OSError:
        return []


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def remove_tree(folder: Path) -> None:
    """`rm -rf`, as a person or a writer's overwrite does it, while the service may be freeing the
    same files (--delete-source): a file gone before its unlink is gone all the same."""

    def gone_meanwhile(function: object, path: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
        if not isinstance(exc[1], FileNotFoundError):
            raise exc[1]

    shutil.rmtree(folder, onerror=gone_meanwhile)


@dataclass
class Options:
    minutes: float
    seed: int
    acquisitions: int
    share: str
    """sshfs (the destination through sshd, dropped and back) or local."""
    end_timeout: float = 300.0


@dataclass
class Summary:
    seed: int
    takes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, Footprint]] = field(default_factory=list)
    """(seconds since the start, pid, footprint) of the service over the run."""
    idle: Footprint | None = None
    """The service's footprint before the first acquisition."""
    end: Footprint | None = None
    """Its footprint once every acquisition ended."""
    stops: list[tuple[str, int, float]] = field(default_factory=list)
    webhook: Counter[str] = field(default_factory=Counter)
    named: Counter[str] = field(default_factory=Counter)
    """The statuses in the reports of the acquisitions not verified."""
    unverified: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    """What known bugs did in this run (each kept as an expected failure in test_soak_service.py)."""
    seconds: float = 0.0

    def lines(self) -> list[str]:
        t = self.takes
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.named.items()))
        out = [
            f"seed {self.seed}; {self.seconds:.0f} s",
            (
                f"acquisitions: {t['made']} made ({t['hand']} by hand, {t['tensorstore']} tensorstore, "
                f"{t['zarr-python']} zarr-python; {t['odd name']} named in bytes not UTF-8), {t['finished']} finished, "
                f"{t['aborted']} aborted ({t['never appeared']} before their folder appeared), "
                f"{t['renamed']} renamed aside, {t['re-taken']} re-taken ({t['same inode']} on the same inode, "
                f"{t['into freed']} into the folder freed)"
            ),
            (
                f"outcomes: {t['verified']} verified, {t['named']} named in a report instead ({statuses}), "
                f"{t['deleted unreported']} aborted and deleted before any report, "
                f"{t['never seen']} at their name only while the service was not running"
            ),
            "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            "stops: " + ", ".join(f"{how} exit {code} in {s:.1f} s" for how, code, s in self.stops),
            "webhook requests: " + ", ".join(f"{k} {v}" for k, v in sorted(self.webhook.items())),
        ]
        if self.samples:
            for what in ("threads", "inotify", "fds", "rss_mib"):
                values = [getattr(f, what) for _, _, f in self.samples]
                idle, end = (f"{getattr(f, what):.0f}" if f else "-" for f in (self.idle, self.end))
                out.append(
                    f"service {what}: idle {idle}, first {values[0]:.0f}, max {max(values):.0f}, "
                    f"last {values[-1]:.0f}, once every acquisition ended {end}"
                )
            spans: dict[int, list[float]] = {}
            for at, pid, _ in self.samples:
                spans.setdefault(pid, []).append(at)
            longest = max(max(v) - min(v) for v in spans.values())
            out.append(
                f"({len(self.samples)} samples, one a second, over {len(spans)} service processes; "
                f"the longest lived {longest:.0f} s)"
            )
        out += [f"not verified: {u}" for u in self.unverified]
        out += [f"KNOWN BUG: {k}" for k in self.known]
        out += [f"FINDING: {f}" for f in self.findings] or ["no findings"]
        return out


class Soak:
    def __init__(self, base: Path, opts: Options, dst: Path, backing: Path, share: Share | None) -> None:
        self.base, self.opts, self.share = base, opts, share
        self.rng = random.Random(opts.seed)
        self.acq, self.dst, self.backing, self.reports = base / "acquisitions", dst, backing, base / "reports"
        for d in (self.acq, self.dst, self.reports):
            d.mkdir(parents=True, exist_ok=True)
        self.hook = Hook()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics = f"127.0.0.1:{s.getsockname()[1]}"
        args = [f"{self.acq}/*.zarr", str(dst), "--delete-source", "--report", f"{self.reports}/{{name}}.json"]
        args += ["--notify", self.hook.url, "--metrics", self.metrics, "--log-every", "10"]
        self.service = Service(base, args)
        self.summary = Summary(opts.seed)
        self.takes: list[Take] = []
        self.decks: dict[str, list[str]] = {}
        self.t0 = time.monotonic()
        self.next_sample = 0.0
        self.back_at: dict[str, float] = {}
        """When the webhook (`hook`) and the share (`share`) come back."""
        self.remake_pending = False
        self.start_pending = False
        """The service could not start (while the share was down): started again once it is back."""
        self.moved_away = 0
        self.hook_modes: list[str] = []
        """The webhook's ways of failing still to come in this fault."""
        self.events: list[Event] = []

    def note(self, what: str, t: Take | None = None) -> None:
        """What the soak did, with the time the service's log uses, in soak.log beside it and in its
        history (of the take `t`, or of the whole run: faults, stops, starts)."""
        wall = f"{datetime.now():%Y-%m-%d %H:%M:%S,%f}"[:-3]
        self.events.append(Event(time.monotonic(), wall, t, what))
        with (self.base / "soak.log").open("a") as f:
            f.write(f"{wall} {what}\n")

    def history(self, t: Take) -> str:
        """What the soak did to the take `t` and what happened to the whole run around it (from a few
        seconds before it was made to `LET_GO_AFTER` and more after its last event), then the
        service's log lines that name it: what a finding needs to be explained."""
        own = [e for e in self.events if e.take is t]
        start, end = t.made_at - 5, (own[-1].at if own else t.made_at) + LET_GO_AFTER + 5
        lines = [
            f"  {e.at - self.t0:7.1f} s  {e.wall}  {e.what}"
            for e in self.events
            if e.take is t or (e.take is None and start <= e.at <= end)
        ]
        # The service logs a name as `shown` gives it, and paths as Python prints them.
        forms = {
            t.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
            t.name.encode("utf-8", "backslashreplace").decode(),
        }
        said = [x for x in self.service.log.read_text(errors="replace").splitlines() if any(f in x for f in forms)]
        more = [f"  ... and {len(said) - LOG_LINES} more"] if len(said) > LOG_LINES else []
        return "\n".join(
            [
                f"  what the soak did to {t.name!r} ({t.kind}, plan {t.plan}), and around it:",
                *lines,
                "  the service's log of it:",
                *(f"  | {x}" for x in said[:LOG_LINES]),
                *more,
            ]
        )

    def draw(self, deck: str, cards: list[str]) -> str:
        """The next card of a shuffled deck (refilled when empty): a short run sees every card."""
        if not self.decks.get(deck):
            self.decks[deck] = self.rng.sample(cards, len(cards))
        return self.decks[deck].pop()

    # --- acquisitions -------------------------------------------------------------------------

    def new_take(self, now: float, name: str | None = None, into_freed: bool = False) -> Take:
        n = self.summary.takes["made"]
        self.summary.takes["new"] += name is None
        odd = name is None and self.draw("odd", ["odd", "plain", "plain", "plain"]) == "odd"
        name = name or (os.fsdecode(f"take{n:04d}-\xe9".encode("latin-1") + b".zarr") if odd else f"take{n:04d}.zarr")
        # tensorstore takes only UTF-8 paths: a name that is not UTF-8 is written by hand.
        kind = "hand" if odd or into_freed or not name.isascii() else self.draw("kind", KINDS)
        t = Take(name, kind, self.acq / name, self.draw("plan", PLANS))
        self.summary.takes.update(["made", kind, *(["odd name"] if odd else [])])
        if kind == "hand":
            t.folder.mkdir(exist_ok=into_freed)
            t.todo = self.hand_files()
        else:
            script = WRITERS / ("ts_writer.py" if kind == "tensorstore" else "zarr_writer.py")
            layout = self.rng.choice(LAYOUTS[kind])
            timepoints, interval = str(self.rng.randrange(3, 7)), str(self.rng.choice([0.05, 0.2]))
            cmd = [sys.executable, str(script), str(t.folder), *layout, timepoints, interval, "--no-marker"]
            t.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        if t.plan == "abort":
            t.abort_at = now + self.rng.uniform(0.2, 3.0)
        self.takes.append(t)
        self.note(f"{t.name!r}: made ({kind}, plan {t.plan})", t)
        return t

    def hand_files(self) -> list[tuple[str, bytes]]:
        """A Zarr v2 array of `t.0` chunks, each as large as the metadata says, the marker last."""
        size, timepoints = self.rng.randrange(512, 32768), self.rng.randrange(3, 12)
        meta = {"zarr_format": 2, "shape": [timepoints, size], "chunks": [1, size], "dtype": "|u1"}
        meta |= {"compressor": None, "fill_value": 0, "order": "C", "filters": None, "dimension_separator": "."}
        chunks = [(f"{t}.0", self.rng.randbytes(size)) for t in range(timepoints)]
        return [(".zarray", json.dumps(meta).encode()), *chunks, (MARKER, b"")]

    def advance(self, t: Take, now: float) -> None:
        """One step of a take being written: a file by hand, or its writer ended; or its abort."""
        # An acquisition planned to abort does so at its time, or at the latest instead of its marker.
        if t.abort_at is not None and (now >= t.abort_at or t.todo == [(MARKER, b"")]):
            self.abort(t, now)
        elif t.proc is not None:
            if t.proc.poll() is None:
                return
            if t.proc.returncode != 0:
                self.summary.findings.append(f"the {t.kind} writer of {t.name} exited {t.proc.returncode}")
                self.abort(t, now)
                return
            t.files = tree(t.folder)
            t.todo = [(MARKER, b"")]
            if t.abort_at is not None:
                self.abort(t, now)
                return
        if t.state == "writing" and t.todo:
            rel, data = t.todo.pop(0)
            (t.folder / rel).write_bytes(data)
            t.files[rel] = data
            if rel == MARKER:
                self.finished(t, now)

    def finished(self, t: Take, now: float) -> None:
        self.note(f"{t.name!r}: finished (marker written)", t)
        t.state = "finished"
        self.summary.takes["finished"] += 1
        if t.plan in ("aside", "retake"):
            t.then_at = now + self.rng.uniform(0.0, 4.0)

    def abort(self, t: Take, now: float) -> None:
        """The acquisition software stops: the writer killed, or no more files by hand; later its
        folder is deleted or renamed aside (a lab's cleanup)."""
        if t.proc is not None and t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()
        t.files = tree(t.folder) if t.proc is not None else t.files
        t.state, t.abort_at, t.todo = "aborted", None, []
        self.note(f"{t.name!r}: aborted", t)
        self.summary.takes["aborted"] += 1
        if not t.folder.exists():
            t.state = "never appeared"  # its writer was killed before it made the folder
            self.summary.takes["never appeared"] += 1
            return
        t.then_at = now + self.rng.uniform(0.0, 2.0)

    def then(self, t: Take, now: float) -> None:
        """The plan's step after a take finished or was aborted."""
        t.then_at = None
        if t.left or t.deleted:
            return  # the acquisitions folder was moved away meanwhile
        if t.state == "aborted" and self.rng.random() < 0.5:
            remove_tree(t.folder)
            t.deleted, t.gone_at = True, now
            self.note(f"{t.name!r}: deleted", t)
        elif t.state == "aborted" or t.plan == "aside":
            self.aside(t)
        else:
            self.retake(t, now)

    def aside(self, t: Take) -> None:
        n = self.summary.takes["renamed"]
        target = t.folder.with_name(f"{t.name}.aside{n}")
        t.folder.rename(target)
        t.folder, t.left, t.gone_at = target, True, time.monotonic()
        self.summary.takes["renamed"] += 1
        self.note(f"{t.name!r}: renamed to {target.name!r}", t)

    def retake(self, t: Take, now: float) -> None:
        """The name taken again: into the folder the service freed (the same folder), or the folder
        deleted and made again at once (often on the same inode)."""
        inode = t.folder.stat().st_ino
        freed = not any(p.is_file() for p in t.folder.rglob("*"))
        into_freed = freed and self.rng.random() < 0.5
        if not into_freed:
            remove_tree(t.folder)
            t.deleted, t.gone_at = True, now
        self.note(f"{t.name!r}: re-taken " + ("into the folder freed" if into_freed else "(deleted, made again)"), t)
        new = self.new_take(now, t.name, into_freed)
        self.summary.takes["re-taken"] += 1
        self.summary.takes["into freed" if into_freed else "deleted and made again"] += 1
        with contextlib.suppress(OSError):
            self.summary.takes["same inode"] += new.folder.stat().st_ino == inode

    # --- faults -------------------------------------------------------------------------------

    def fault(self, now: float) -> None:
        kinds = FAULTS + (["share"] if self.share is not None else [])
        kind = self.draw("fault", kinds)
        self.note(f"fault: {kind}")
        if kind in ("sigterm", "kill") and not self.start_pending:
            self.service.stop(kind)
            how, code, took = self.service.stops[-1]
            self.note(f"the service stopped ({how}): exit {code} in {took:.1f} s")
            self.start_service()
        elif kind == "hook" and "hook" not in self.back_at:
            # Each way of failing in turn, a few seconds each (the ends meanwhile meet each one).
            self.hook_modes = self.rng.sample(["hang", "garbage", "500"], 3)
            self.next_hook_mode(now)
            return
        elif kind == "share" and self.share is not None and self.share.up:
            self.share.drop()
            self.back_at["share"] = now + self.rng.uniform(2.0, 10.0)
            self.note("the share is down (sshd killed)")
        elif kind == "remake":
            self.remake_pending = True  # once no acquisition is being written
            return
        else:
            return
        self.summary.faults[kind] += 1
        self.check_nothing_lost(f"after {kind}")

    def remake(self) -> None:
        """The acquisitions folder moved away with what it holds, and made again (a disk remounted,
        an admin's cleanup)."""
        self.remake_pending = False
        self.moved_away += 1
        self.note("the acquisitions folder moved away and made again")
        away = self.base / f"acquisitions-away{self.moved_away}"
        self.acq.rename(away)
        self.acq.mkdir()
        for t in self.takes:
            if t.folder.parent == self.acq:
                # One renamed aside earlier left its name then, not now.
                t.folder, t.left, t.gone_at = away / t.folder.name, True, t.gone_at or time.monotonic()
        self.summary.faults["acquisitions folder remade"] += 1
        self.check_nothing_lost("after the acquisitions folder was remade")

    def next_hook_mode(self, now: float) -> None:
        if not self.hook_modes:
            del self.back_at["hook"]
            self.hook.set("ok")
            self.note("the webhook is ok again")
            return
        self.hook.set(self.hook_modes.pop())
        self.note(f"the webhook answers {self.hook.mode}")
        self.summary.faults[f"webhook {self.hook.mode}"] += 1
        self.back_at["hook"] = now + self.rng.uniform(2.0, 6.0)

    def comebacks(self, now: float) -> None:
        if now >= self.back_at.get("hook", float("inf")):
            self.next_hook_mode(now)
        if self.share is not None and now >= self.back_at.get("share", float("inf")):
            del self.back_at["share"]
            self.share.back()
            self.note("the share is back")
            self.check_nothing_lost("after the share came back")

    # --- checks -------------------------------------------------------------------------------

    def check_nothing_lost(self, when: str) -> None:
        """Every file of a take whose folder the soak did not delete is at its source or in a copy of
        its name at the destination (read from the share's backing folder: also while it is down)."""
        for t in self.takes:
            if t.deleted:
                continue
            lost = [
                rel for rel, data in t.files.items() if read(t.folder / rel) != data and not self.at_dst(t, rel, data)
            ]
            if lost:
                self.summary.findings.append(f"{when}: {t.name} ({t.kind}) lost {sorted(lost)[:5]}\n{self.history(t)}")

    def at_dst(self, t: Take, rel: str, data: bytes) -> bool:
        return any(read(d / rel) == data for d in copies(self.backing, t.name))

    def verified(self, t: Take, claimed: set[Path]) -> bool:
        """Whether a copy of its name at the destination is this take, whole, with its marker."""
        if t.verified_at is not None:
            return True
        for d in copies(self.backing, t.name):
            if d not in claimed and (d / MARKER).exists() and tree(d) == t.files:
                t.verified_at = d
                claimed.add(d)
                return True
        return False

    def named(self, t: Take) -> str | None:
        """The status a report or a webhook gives the acquisition (made at its name), if any names it."""
        source = str(self.acq / t.name)
        said = [str(b.get("status")) for b in self.hook.bodies if b.get("source") == source]
        with contextlib.suppress(OSError, ValueError, KeyError):
            said.append(str(json.loads((self.reports / f"{t.name}.json").read_text())["status"]))
        # A report of a copy stopped in flight says it resumes on the next start: not its last word.
        return next((w for w in said if w != "interrupted"), said[0] if said else None)

    def probe(self) -> Take:
        """A finished acquisition, written at once."""
        t = Take("probe.zarr", "hand", self.acq / "probe.zarr", "normal")
        t.folder.mkdir()
        for rel, data in self.hand_files():
            (t.folder / rel).write_bytes(data)
            t.files[rel] = data
        t.state = "finished"
        self.takes.append(t)
        self.note(f"{t.name!r}: made and finished", t)
        return t

    def fatal(self, t: Take) -> str:
        """Why the last report of its name says its copy failed ("" when none does)."""
        try:
            return str(json.loads((self.reports / f"{t.name}.json").read_text())["targets"][0]["fatal"] or "")
        except (OSError, ValueError, KeyError, IndexError):
            return ""

    def told(self, t: Take) -> bool:
        """The webhook was told the take was verified."""
        return any(b.get("source") == str(t.folder) and b.get("status") == "verified" for b in self.hook.bodies)

    def in_flight(self) -> list[str] | None:
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/status", timeout=5) as r:
                return [row["source"] for row in json.loads(r.read())["in_flight"]]
        except (OSError, ValueError):
            return None

    def sample(self, now: float) -> None:
        if now < self.next_sample or self.service.proc is None:
            return
        self.next_sample = now + 1.0
        f = footprint(self.service.proc.pid)
        if f is not None:
            self.summary.samples.append((now - self.t0, self.service.proc.pid, f))

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> Summary:
        self.start_service()
        deadline = time.monotonic() + 30
        while self.in_flight() != [] and time.monotonic() < deadline:
            time.sleep(0.1)  # its status answers: every thread an idle service has is there
        self.summary.idle = footprint(self.service.proc.pid) if self.service.proc else None
        self.make()
        self.end()
        return self.summary

    def make(self) -> None:
        opts = self.opts
        seconds = opts.minutes * 60
        spacing = seconds / max(1, opts.acquisitions)
        n_faults = max(len(FAULTS) + 1, round(opts.minutes * 6))
        fault_times = sorted(self.rng.uniform(0.05, 0.9) * seconds for _ in range(n_faults))
        while True:
            now = time.monotonic()
            at = now - self.t0
            making = at < seconds and self.summary.takes["new"] < opts.acquisitions
            self.step(now)
            if fault_times and at >= fault_times[0]:
                fault_times.pop(0)
                self.fault(now)
            writing = [t for t in self.takes if t.state == "writing"]
            if self.remake_pending and not writing:
                self.remake()
            start_due = self.summary.takes["new"] * spacing <= at
            if making and start_due and len(writing) < 3 and not self.remake_pending:
                self.new_take(now)
            if not (making or writing or fault_times or any(t.then_at for t in self.takes)):
                return
            time.sleep(0.05)

    def start_service(self) -> None:
        """Starts the service; one that cannot start while the share is down is started again once
        the share is back (a known bug: it should start and wait, as for a share that drops later)."""
        code = self.service.start()
        self.start_pending = code is not None
        if code is None:
            self.note(
                f"the service is ready (start {self.service.starts}, pid {self.service.proc and self.service.proc.pid})"
            )
            return
        tail = self.service.tail(3)
        if self.share is not None and not self.share.up:
            self.summary.known.append(f"the service exited {code} at its start while the share was down: {tail}")
            self.note(f"the service exited {code} at its start")
            return
        raise RuntimeError(f"the service exited {code} at its start; its log ends:\n{self.service.tail()}")

    def step(self, now: float) -> None:
        proc = self.service.proc
        if self.start_pending:
            if self.share is None or self.share.up:
                self.start_service()
        elif proc is not None and proc.poll() is not None:
            self.summary.findings.append(f"the service exited {proc.returncode} by itself:\n{self.service.tail()}")
            self.start_service()
        self.sample(now)
        self.comebacks(now)
        for t in [t for t in self.takes if t.state == "writing"]:
            self.advance(t, now)
        for t in [t for t in self.takes if t.then_at is not None and now >= t.then_at]:
            self.then(t, now)

    def end(self) -> None:
        """Everything back (the webhook, the share), one more acquisition made (its webhook says
        deliveries still work after every fault), then waits for every acquisition to end."""
        self.back_at, self.hook_modes = {k: 0.0 for k in self.back_at}, []
        self.comebacks(time.monotonic())
        self.remake_pending = False
        if self.start_pending:
            self.start_service()
        probe = self.probe()
        deadline = time.monotonic() + self.opts.end_timeout
        claimed: set[Path] = set()
        waiting: list[Take] = []
        flying: list[str] | None = None
        while time.monotonic() < deadline:
            self.sample(time.monotonic())
            waiting = [t for t in self.takes if t.state == "finished" and not (t.left or t.deleted)]
            waiting = [t for t in waiting if not self.verified(t, claimed)]
            flying = self.in_flight()
            if not waiting and flying == [] and self.told(probe):
                break
            time.sleep(0.5)
        s = self.summary
        if not self.told(probe):
            s.findings.append(f"the webhook was not told that {probe.name}, made after every fault, was verified")
        for t in waiting:
            fatal = self.fatal(t)
            if "Input/output error" in fatal:
                s.known.append(f"{t.name} ({t.kind}) failed at its start while the share was down: {fatal}")
            else:
                s.findings.append(
                    f"{t.name} ({t.kind}) finished at its name and is not verified at {self.dst}\n{self.history(t)}"
                )
        if flying:
            s.findings.append(f"still in flight {self.opts.end_timeout:.0f} s after the last acquisition: {flying}")
        self.check_nothing_lost("at the end")
        self.check_named(claimed)
        self.check_footprint()
        assert self.service.proc is not None
        self.service.stop("sigterm")
        s.stops, s.webhook = self.service.stops, self.hook.served
        s.findings += [f"a stop by {h} exited {c} (not 143)" for h, c, _ in s.stops if h == "sigterm" and c != 143]
        s.findings += [f"a stop by SIGTERM took {d:.1f} s" for h, _, d in s.stops if h == "sigterm" and d > 10]
        s.seconds = time.monotonic() - self.t0

    def check_named(self, claimed: set[Path]) -> None:
        """Each take not verified (aborted, or moved or deleted before it was) is named in a report
        or a webhook."""
        for t in self.takes:
            if t.state == "finished" and self.verified(t, claimed):
                self.summary.takes["verified"] += 1
            elif t.state not in ("finished", "aborted"):
                continue
            elif (status := self.named(t)) not in (None, "interrupted"):
                self.summary.takes["named"] += 1
                self.summary.named[status] += 1
                where = "left its name" if t.left else "deleted" if t.deleted else "at its name"
                self.summary.unverified.append(f"{t.name} ({t.kind}, {t.state}, {where}): {status}")
            elif self.unseen(t):
                self.summary.takes["never seen"] += 1
            elif t.state == "aborted" and t.deleted:
                # Deleted before any report: nothing of it to copy any more; held in flight, it
                # would show in the check that every acquisition ended.
                self.summary.takes["deleted unreported"] += 1
            else:
                said = f"its report says {status}" if status else "nothing names it"
                self.summary.findings.append(
                    f"{t.name} ({t.kind}, {t.state}) is not verified and {said}\n{self.history(t)}"
                )

    def unseen(self, t: Take) -> bool:
        """Whether the take was at its name only while the service was not running."""
        return t.gone_at is not None and any(a <= t.made_at and t.gone_at <= b for a, b in self.service.downs)

    def check_footprint(self) -> None:
        """Once every acquisition ended, the service is back near its idle footprint."""
        s = self.summary
        assert self.service.proc is not None and s.idle is not None
        pid, idle = self.service.proc.pid, s.idle

        def back() -> Footprint | None:
            f = footprint(pid)
            ok = f is not None and f.inotify <= idle.inotify and f.threads <= idle.threads + THREADS_SLACK
            return f if ok and f is not None and f.fds <= idle.fds + FDS_SLACK else None

        deadline = time.monotonic() + 15
        while (f := back()) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        s.end = f or footprint(pid)
        if f is None:
            s.findings.append(f"the footprint once every acquisition ended: {s.end}, idle at the start: {idle}")
        elif f.rss_mib > RSS_GROWTH * idle.rss_mib:
            s.findings.append(f"RSS {f.rss_mib:.0f} MiB once every acquisition ended, {idle.rss_mib:.0f} MiB idle")

    def close(self) -> None:
        if self.service.proc is not None and self.service.proc.poll() is None:
            self.service.proc.kill()
            self.service.proc.wait()
        for t in self.takes:
            if t.proc is not None and t.proc.poll() is None:
                t.proc.kill()
                t.proc.wait()
        self.hook.close()


@contextlib.contextmanager
def destination(base: Path, share: str) -> Iterator[tuple[Path, Path, Share | None]]:
    """(where the service copies to, where the soak reads it, the share) for a local destination or
    one over sshfs."""
    if share == "local":
        yield base / "raw", base / "raw", None
        return
    s = Share(base)
    try:
        yield s.mnt / "raw", s.backing / "raw", s
    finally:
        s.close()


def run(opts: Options, base: Path) -> Summary:
    with destination(base, opts.share) as (dst, backing, share):
        soak = Soak(base, opts, dst, backing, share)
        try:
            return soak.run()
        finally:
            soak.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10, help="how long acquisitions are made (default 10)")
    ap.add_argument("--seed", type=int, default=None, help="replays a run (default: random, printed)")
    ap.add_argument(
        "--acquisitions", type=int, default=300, help="new acquisitions (default 300; re-takes come on top)"
    )
    ap.add_argument("--share", choices=["sshfs", "local"], default="sshfs", help="the destination (default sshfs)")
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="run in this folder and keep it (default: a new one in /var/tmp, kept only when there is a finding)",
    )
    args = ap.parse_args()
    # A SIGTERM (a timeout, a person's kill) unwinds: the service, the writers and the share go too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"soak_service: --seed {seed} replays this run", flush=True)
    base = args.keep or Path(tempfile.mkdtemp(prefix="soak_service-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    summary: Summary | None = None
    try:
        summary = run(Options(args.minutes, seed, args.acquisitions, args.share), base)
        print("\n".join(summary.lines()))
    finally:
        # What explains a finding (or a soak that broke) is kept: the service's whole log, what the
        # soak did and when, the reports, the acquisitions and their copies.
        if args.keep or summary is None or summary.findings:
            print(f"kept in {base}: service.log (the service's whole log), soak.log (what the soak did), reports/")
        else:
            shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if summary.findings else 0)


if __name__ == "__main__":
    main()
