"""Orchestration: one native engine per target, all running in parallel; Python only polls their
status, relays their messages to `logging`, hands each engine the expected Zarr file set once it
asks, and presents the verdict the engine reached (docs/design.md, "The end of a run").
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from softcopy import zarr
from softcopy._softcopy import (
    BackOff,
    BackOffState,
    Engine,
    NotCopiedWhy,
    RateBudget,
    SoftcopyError,
    __version__,
)
from softcopy.config import Destination, EngineConfig, Target, check_targets, destination_of, make_target

log = logging.getLogger("softcopy")

MISSED = "found only by the final look at the source"
"""What a report's note says of files no event announced (docs/design.md, "Live, proven live")."""
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

#: How long a wait() call holds before giving Python a chance to handle Ctrl-C.
POLL = 0.1

_STATES: dict[BackOffState, Literal["off", "free", "yielding"]] = {
    BackOffState.Off: "off",
    BackOffState.Free: "free",
    BackOffState.Yielding: "yielding",
}


@dataclass(frozen=True)
class Yielding:
    """How much the back-off holds a copy back (docs/design.md, "Gentle on any scheduler")."""

    state: Literal["off", "free", "yielding"] = "off"
    """off: not running (turned off, or no signal: `signal` says why); free: not backed off for
    others; yielding: backed off for the acquisition's writes while it has something to copy."""
    reads: float = 0.0
    """Reads in flight allowed now; below one, the share of one worker's time."""
    nprocs: int = 0
    """The most reads in flight."""
    held_back_s: float = 0.0
    """Seconds the copy was held back while it had something to copy, since the start."""
    rate: float = 0.0
    """Bytes per second the copy moved over about the last second."""
    signal: str = ""
    """What the back-off steers by, or why it is off."""

    @classmethod
    def of(cls, b: BackOff) -> Yielding:
        return cls(_STATES[b.state], b.reads, b.nprocs, b.held_back_s, b.rate, b.signal)


@dataclass(frozen=True)
class Progress:
    """A snapshot of one target while it runs."""

    source: Path
    destination: Destination
    phase: str
    files_copied: int
    bytes_copied: int
    files_deleted: int
    files_unchanged: int
    redundant: int
    files_distinct: int
    max_copies: int
    errors: int
    failed: int
    backlog: int
    in_flight: int
    writing: int
    oldest_wait: float
    """Seconds the oldest file complete at the source has waited for a worker (the copy's lag)."""
    known: int
    """Files known at the source."""
    settled: int
    """Of those, files copied and quiet, let go from memory for their folder's record."""
    bytes_known: int
    """Bytes of the files the last complete sweep of the source found (0 before one)."""
    bytes_left: int
    """Of those, bytes still to copy (an estimate: the bytes copied since are taken off)."""
    elapsed: float
    finishing: bool
    last_error: str | None
    fatal: str | None
    destination_trouble: str | None
    gave_up: bool
    paused: str | None
    """Why the target is paused (its source root is missing or another folder, or the destination
    leads elsewhere), while it is."""
    wants_expected: bool
    back_off: Yielding = Yielding()
    """How much the back-off holds the copy back."""


@dataclass
class TargetReport:
    """How one target ended."""

    source: Path
    destination: Destination
    phase: str
    files_copied: int = 0
    bytes_copied: int = 0
    files_deleted: int = 0
    redundant: int = 0
    """Copies of files that had been copied before (rewritten keys)."""
    max_copies: int = 0
    """The most copies of any one file."""
    files_distinct: int = 0
    """Distinct files copied at least once."""
    errors: int = 0
    duration: float = 0.0
    verified: bool = False
    files_checked: int = 0
    bytes_checked: int = 0
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[tuple[str, int, int]] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    bad_shards: list[tuple[str, str]] = field(default_factory=list)
    arrays: int = 0
    expected_chunks: int = 0
    present_chunks: int = 0
    proven_as_copied: int = 0
    """Files proven by this run's own copies of their current versions, without a look at the destination."""
    destination_walked: bool = True
    """Whether verification walked the destination (a resumed run does; a run that made every copy need not)."""
    notes: list[str] = field(default_factory=list)
    fatal: str | None = None
    source_deleted: int = 0
    """With delete_source: source files deleted after their copy was proven."""
    source_kept: list[tuple[str, str]] = field(default_factory=list)
    """With delete_source: source files kept, and why."""
    excluded: list[str] = field(default_factory=list)
    """Source files left out by `exclude` (never copied, never verified)."""
    excluded_chunks: int = 0
    """Of those, chunk files inside their array's grid: at the source, not in the copy."""
    files_at_destination: int = 0
    """Of the files checked, those at the destination as copied (what is missing or different aside)."""
    found_at_end: int = 0
    """Files the final look at the source found that no event had announced (events missed): 0 where
    the copy was live throughout."""
    back_off: Yielding = Yielding()
    """The back-off at the end: what it steered by, and how long it held the copy back."""

    @property
    def absent_chunks(self) -> int:
        """Chunk files the final metadata has room for that the source never had (fill value)."""
        return self.expected_chunks - self.present_chunks - self.excluded_chunks

    @property
    def ok(self) -> bool:
        return self.verified and self.fatal is None


@dataclass
class Report:
    """How a whole run ended. `ok` is true only when every target was verified complete."""

    targets: list[TargetReport]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(t.ok for t in self.targets)

    def to_json(self, exit_code: int, started: datetime, ended: datetime) -> dict[str, Any]:
        """The document `--report` writes; its schema is docs/report-schema.json."""
        status = "interrupted" if self.interrupted else "verified" if self.ok else "incomplete"
        return {
            "schema": 1,
            "softcopy_version": __version__,
            "status": status,
            "exit_code": exit_code,
            "started": started.isoformat(),
            "ended": ended.isoformat(),
            "targets": [_target_json(t) for t in self.targets],
        }


def _target_json(t: TargetReport) -> dict[str, Any]:
    return {
        "source": os.fspath(t.source),
        "destination": str(t.destination),
        "phase": t.phase,
        "verified": t.verified,
        "files_copied": t.files_copied,
        "bytes_copied": t.bytes_copied,
        "files_deleted": t.files_deleted,
        "redundant_copies": t.redundant,
        "max_copies_per_file": t.max_copies,
        "copy_errors": t.errors,
        "duration_s": round(t.duration, 3),
        "files_checked": t.files_checked,
        "files_at_destination": t.files_at_destination,
        "bytes_checked": t.bytes_checked,
        "arrays": t.arrays,
        "expected_chunks": t.expected_chunks,
        "present_chunks": t.present_chunks,
        "proven_as_copied": t.proven_as_copied,
        "destination_walked": t.destination_walked,
        "absent_at_source": t.absent_chunks,
        "missing": t.missing,
        "size_mismatch": [{"path": p, "source_size": a, "destination_size": b} for p, a, b in t.size_mismatch],
        "partials": t.partials,
        "bad_shards": [{"path": p, "reason": why} for p, why in t.bad_shards],
        "notes": t.notes,
        "fatal": t.fatal,
        "source_deleted": t.source_deleted,
        "source_kept": [{"path": p, "reason": why} for p, why in t.source_kept],
        "excluded": t.excluded,
        "excluded_chunks": t.excluded_chunks,
        "found_at_end": t.found_at_end,
        "back_off": {"signal": t.back_off.signal, "held_back_s": round(t.back_off.held_back_s, 3)},
    }


_NOT_COPIED = {
    NotCopiedWhy.SourceGone: "the source went away",
    NotCopiedWhy.StillOpen: "still open for writing at the source when the acquisition ended",
    NotCopiedWhy.ChangedLate: "changed at the source after it was verified",
}


def first_of(items: Sequence[str], most: int) -> tuple[Sequence[str], int]:
    """The first `most` of `items`, and how many more there are: what a summary shows of a list
    (the report file has them all)."""
    return items[:most], max(0, len(items) - most)


def _some(paths: list[str], most: int = 5) -> str:
    """The first few of a list, and how many more, on one line."""
    shown, more = first_of(paths, most)
    return ", ".join(shown) + (f", and {more} more" if more else "")


def write_report(path: Path, report: Report, exit_code: int, started: datetime) -> None:
    """Writes the JSON report atomically (a reader never sees half a report)."""
    doc = report.to_json(exit_code, started, datetime.now(UTC))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _progress(engine: Engine, target: Target) -> Progress:
    s = engine.status()
    return Progress(
        source=target.source,
        destination=target.destination,
        phase=s.phase,
        files_copied=s.files_copied,
        bytes_copied=s.bytes_copied,
        files_deleted=s.files_deleted,
        files_unchanged=s.files_unchanged,
        redundant=s.redundant,
        files_distinct=s.files_distinct,
        max_copies=s.max_copies,
        errors=s.errors,
        failed=s.failed,
        backlog=s.backlog,
        in_flight=s.in_flight,
        writing=s.writing,
        oldest_wait=s.oldest_wait,
        known=s.known,
        settled=s.settled,
        bytes_known=s.bytes_known,
        bytes_left=s.bytes_left,
        elapsed=s.elapsed,
        finishing=s.finishing,
        last_error=s.last_error,
        fatal=s.fatal,
        destination_trouble=s.destination_trouble,
        gave_up=s.gave_up,
        paused=s.paused,
        wants_expected=s.wants_expected,
        back_off=Yielding.of(s.back_off),
    )


class Copier:
    """Copies several targets in parallel without blocking the caller. A target's destination is a
    local folder or an ssh destination (`Target`: a `str` of the remote form, `cluster:/lab/x.zarr`,
    is ssh by the engine's rule; a `Path` is always local).

    Example:
        with softcopy.Copier([softcopy.Target(src, dst)]) as c:
            while (report := c.wait(1.0)) is None:
                print(c.status())
    """

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        log_events: bool = False,
        max_total_rate: int | None = None,
        total_budget: RateBudget | None = None,
    ) -> None:
        """`max_total_rate` (bytes per second) is a budget for these targets together;
        `total_budget` one shared with other Copiers too (a service's acquisitions), which
        `max_total_rate` must then not be given with."""
        if not targets:
            raise ValueError("at least one target is needed")
        check_targets(list(targets), "targets")
        self.targets = list(targets)
        self._log_events = log_events
        if max_total_rate is not None:
            if total_budget is not None:
                raise ValueError("give max_total_rate or total_budget, not both")
            total_budget = RateBudget(max_total_rate)
        self._budget = total_budget
        self._engines: list[Engine] = []
        self._reports: dict[int, TargetReport] = {}
        self._found: dict[int, tuple[int, list[str]]] = {}
        """Per target: how many Zarr arrays discovery found and what it said, for its report."""
        self._stopped = False

    def start(self) -> None:
        """Starts one engine per target. Returns at once."""
        if self._engines:
            raise RuntimeError("already started")
        for t in self.targets:
            config = EngineConfig(t, log_events=self._log_events, max_total_rate=self._budget)
            engine = Engine(config)
            log.debug(
                "%s: starting: %s -> %s, %s workers, marker %r, settle %.2f s, give up after %.0f s, "
                "max rate %s, total budget %s, exclude %s%s%s",
                t.source.name,
                t.source,
                t.destination,
                engine.workers,
                t.marker,
                t.settle_time,
                t.give_up_after,
                t.max_rate or "none",
                self._budget.bytes_per_s if self._budget is not None else "none",
                list(t.exclude) or "none",
                ", checksum" if t.checksum else "",
                ", delete source" if t.delete_source else "",
            )
            self._engines.append(engine)

    def status(self) -> list[Progress]:
        """One snapshot per target."""
        return [_progress(e, t) for e, t in zip(self._engines, self.targets, strict=True)]

    def finish(self) -> None:
        """Declares every acquisition over (as if each marker had appeared)."""
        for e in self._engines:
            e.finish()

    def stop(self) -> None:
        """Stops every target now. Files already copied stay; a later run resumes."""
        self._stopped = True
        for e in self._engines:
            e.stop()

    def poll(self) -> Report | None:
        """Relays messages, hands each engine that asks the expected Zarr file set, and collects the verdicts;
        the Report once every target ended."""
        if not self._engines:
            raise RuntimeError("start() first")
        for i, (engine, target) in enumerate(zip(self._engines, self.targets, strict=True)):
            for level, text in engine.messages():
                log.log(_LEVELS[level], "%s: %s", target.source.name, text)
            if i not in self._found and engine.status().wants_expected:
                self._found[i] = self._hand_expected(engine)
            if i not in self._reports and engine.wait(0):
                self._reports[i] = self._conclude(engine, target, *self._found.get(i, (0, [])))
        if len(self._reports) == len(self._engines):
            return Report([self._reports[i] for i in range(len(self._engines))], interrupted=self._stopped)
        return None

    def wait(self, timeout: float | None = None) -> Report | None:
        """Blocks (GIL released) until every target ended, or `timeout` seconds passed (then None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            report = self.poll()
            if report is not None:
                return report
            left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if left <= 0:
                return None
            pending = [e for i, e in enumerate(self._engines) if i not in self._reports]
            # Waiting on one engine is enough to sleep; poll() looks at all of them.
            pending[0].wait(left)

    @staticmethod
    def _hand_expected(engine: Engine) -> tuple[int, list[str]]:
        """The engine drained and asks for the expected file set: read the final Zarr metadata
        once and hand it over; verifying, publishing and freeing then happen in the engine."""
        arrays, unreadable = zarr.discover(engine.source)
        name = engine.source.name
        log.debug("%s: Zarr analysis: %d arrays, %d unreadable metadata files", name, len(arrays), len(unreadable))
        for a in arrays:
            log.debug(
                "%s: Zarr analysis: array %s: v%d, shape %s, %s %s: %d files expected",
                name,
                a.path or ".",
                a.zarr_format,
                list(a.shape),
                "shards" if a.sharded else "chunks",
                list(a.grid),
                a.expected_files,
            )
        notes = []
        if not arrays and not unreadable:
            notes.append("no Zarr arrays found: every file was checked, but no expected-chunk check was possible")
        # Unreadable metadata makes the run unverifiable (the engine's verdict names it).
        engine.expect(arrays, unreadable)
        return len(arrays), notes

    def _conclude(self, engine: Engine, target: Target, arrays: int, notes: list[str]) -> TargetReport:
        """Presents what the engine decided; decides nothing itself."""
        s = engine.status()
        r = TargetReport(
            source=engine.source,
            # An ssh destination as the target names it (the engine's is a local path's type).
            destination=engine.destination if isinstance(target.destination, Path) else target.destination,
            phase=s.phase,
            files_copied=s.files_copied,
            bytes_copied=s.bytes_copied,
            files_deleted=s.files_deleted,
            redundant=s.redundant,
            max_copies=s.max_copies,
            files_distinct=s.files_distinct,
            errors=s.errors,
            duration=s.elapsed,
            fatal=s.fatal,
            back_off=Yielding.of(s.back_off),
        )
        for level, text in engine.messages():
            log.log(_LEVELS[level], "%s: %s", target.source.name, text)
        r.arrays = arrays
        r.notes.extend(notes)
        v = engine.verdict()
        if v is None:
            return r
        if v.reason:
            r.notes.append(v.reason)
        r.files_checked, r.bytes_checked = v.files, v.bytes
        different = len(v.missing) + len(v.size_mismatch) + len(v.mtime_mismatch) + len(v.content_mismatch)
        r.files_at_destination = max(0, v.files - different)
        r.missing = [os.fspath(p) for p in v.missing]
        why = _NOT_COPIED[v.not_copied_why]
        r.missing.extend(f"{os.fspath(p)} (not copied: {why})" for p in v.not_copied)
        r.excluded = [os.fspath(p) for p in v.excluded]
        r.found_at_end = v.found_at_end
        if v.found_at_end:
            r.notes.append(f"{v.found_at_end} files {MISSED} (their events were missed)")
        if r.excluded:
            r.notes.append(f"{len(r.excluded)} files excluded (not copied, not verified): {_some(r.excluded)}")
        r.excluded_chunks = v.excluded_chunks
        if v.excluded_chunks:
            r.notes.append(
                f"{v.excluded_chunks} excluded files are chunks of arrays: they stay at the source, "
                "and the copy reads fill value there"
            )
        r.size_mismatch = [(os.fspath(p), a, b) for p, a, b in v.size_mismatch]
        r.missing.extend(f"{os.fspath(p)} (a different modification time at the destination)" for p in v.mtime_mismatch)
        r.missing.extend(f"{os.fspath(p)} (the copy's content differs from the source)" for p in v.content_mismatch)
        r.partials = [os.fspath(p) for p in v.partials]
        r.expected_chunks, r.present_chunks = v.expected_chunks, v.present_chunks
        r.proven_as_copied, r.destination_walked = v.proven_as_copied, v.destination_walked
        r.bad_shards = [(os.fspath(p), why) for p, why in v.bad_shards]
        for p, why in v.bad_shards_at_source:
            r.notes.append(f"shard {os.fspath(p)} is not whole at the source either ({why}); copied as it is")
        if v.symlinks:
            r.notes.append(f"{len(v.symlinks)} symlinks in the source were not copied (never followed)")
        if v.outside_grid:
            r.notes.append(f"{len(v.outside_grid)} chunk files lie outside their array's final shape")
        if target.manifest is not None and v.verified:
            d = target.destination
            where = target.manifest if isinstance(d, Path) else f"{d.host}:{target.manifest}"
            r.notes.append(f"every file hashed while copied and read back; manifest: {where}")
        if v.pruned:
            r.notes.append(
                f"removed {len(v.pruned)} chunk files the source no longer has (deleted while softcopy was not running)"
            )
        r.missing.extend(f"{os.fspath(p)} (stale: the source no longer has it)" for p in v.stale_chunks)
        if v.extra:
            r.notes.append(f"{len(v.extra)} files at the destination are not in the source (left in place)")
        r.verified = v.verified
        if v.freed:
            r.source_deleted = len(v.source_deleted)
            r.source_kept = [(os.fspath(p), why) for p, why in v.source_kept]
            r.notes.append(
                f"freed the source: {r.source_deleted} files deleted, {len(r.source_kept)} kept, "
                f"{v.folders_removed} empty folders removed"
            )
            r.notes.extend(f"kept at the source: {p} ({why})" for p, why in r.source_kept[:20])
        elif target.delete_source:
            why = "the copy is not verified" if not v.verified else "freeing could not start (see the log)"
            r.notes.append(f"the source was not freed: {why}")
        return r

    def __enter__(self) -> Self:
        if not self._engines:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.poll() is None:
            self.stop()
            self.wait(10)


def copy(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    nprocs: int | None = None,
    sleep_time: float = 0.0,
    wait_for_source: bool = True,
    marker: str = "complete",
    once: bool = False,
    settle_time: float = 0.05,
    give_up_after: float = 86400.0,
    exclude: Sequence[str] = (),
    back_off: bool = True,
    ssh_command: str | None = None,
    connections: int = 4,
    timeout: float | None = None,
) -> Report:
    """Copies `source` to `destination` while it is written; returns once it is complete and verified.

    `destination` is a local folder, or, as a `str` of the remote form, an ssh destination
    (`"cluster:/lab/raw/x.zarr"`, `"ssh://me@cluster:2222/lab/raw/x.zarr"`) reached with the system
    `ssh` (`ssh_command` replaces it, e.g. `"ssh -p 2222 -i ~/.ssh/lab_key"`) over `connections`
    SSH sessions; a `Path` is always local.

    The copy ends when the file `marker` appears at the source root (or at once, for `once=True`
    or a source that already has the marker). `exclude` globs name files that are not part of the
    acquisition (e.g. `["*.log"]`): never copied, waited for or verified. `back_off=False` turns off
    the yielding to the acquisition's writes (docs/design.md, "Gentle on any scheduler"). Check `Report.ok`: it is True only when every file
    arrived. Ctrl-C stops the copy cleanly and raises KeyboardInterrupt; a later call resumes.

    Raises:
        ConfigError: bad arguments (e.g. the destination inside the source).
        SoftcopyError: the engine failed (e.g. the source is missing and `wait_for_source=False`).
        TimeoutError: `timeout` seconds passed first (the copy is stopped).
    """
    dst = destination_of(destination)
    target = make_target(
        Path(source).resolve(),
        dst.resolve() if isinstance(dst, Path) else dst,
        {
            "nprocs": nprocs,
            "sleep_time": sleep_time,
            "wait_for_source": wait_for_source,
            "marker": marker,
            "once": once,
            "settle_time": settle_time,
            "give_up_after": give_up_after,
            "exclude": list(exclude),
            "back_off": back_off,
            "ssh_command": ssh_command,
            "connections": connections,
        },
    )
    copier = Copier([target])
    copier.start()
    try:
        report = copier.wait(timeout)
    except BaseException:
        copier.stop()
        copier.wait(10)
        raise
    if report is None:
        copier.stop()
        copier.wait(10)
        raise TimeoutError(f"copy of {source} did not finish within {timeout} s")
    fatal = report.targets[0].fatal
    if fatal:
        raise SoftcopyError(fatal)
    return report
