"""What a person sees: a live table in a terminal, one status line per interval elsewhere, and the
final summary. Rendering reads status snapshots only; it never slows the copy."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Self

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from softcopy.run import Progress, Report, TargetReport, first_of

log = logging.getLogger("softcopy")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(p: Progress) -> str:
    if p.elapsed <= 0:
        return "-"
    value, unit = human_bytes(p.bytes_copied / p.elapsed).split()
    return f"{float(value):.0f} {unit}/s"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s} s" if s < 60 else f"{s // 60}m{s % 60:02d}" if s < 3600 else f"{s // 3600}h{s // 60 % 60:02d}"


def _percent_eta(p: Progress) -> str:
    """Once the acquisition is over the file set is known: how far, and how long still. In bytes
    where the final sweep counted them (a few large files left weigh more than many small ones
    copied), in files otherwise."""
    if p.bytes_known > 0:
        total, left, per_s = p.bytes_known, min(p.bytes_left, p.bytes_known), p.bytes_copied
    else:
        total, left, per_s = p.known, p.backlog + p.in_flight, p.files_copied
    pct = 100 * max(0, total - left) // max(1, total)
    rate = per_s / p.elapsed if p.elapsed > 0 else 0
    eta = f" ~{_duration(left / rate)}" if rate > 0 and left else ""
    return f"{pct}%{eta}"


def table(progress: list[Progress], title: str = "softcopy", totals: bool = True) -> Table:
    """One row per target (and a total): fits an 80-column terminal. `queue` is files complete at the
    source and not yet copied, `lag` how long the oldest of them has waited; once the acquisition is
    over, the state shows how far the copy is and an estimate of the time left."""
    t = Table(title=title, title_justify="left", expand=False, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    # Everything but the source name keeps its width (no wrapping); a long source name is shortened.
    t.add_column("source", overflow="ellipsis", no_wrap=True, min_width=8)
    t.add_column("state", no_wrap=True)
    for col in ("files", "bytes", "rate", "queue", "lag", "err", "time"):
        t.add_column(col, justify="right", no_wrap=True)
    troubles = []
    for p in progress:
        # "done" only once the engine reached its verdict: never while it still verifies.
        state = {"verified": "done", "incomplete": "INCOMPLETE"}.get(p.phase, p.phase)
        if p.phase == "reconciling" and p.known:
            state = _percent_eta(p)
        if p.paused:
            state = "PAUSED"
            troubles.append(f"{p.source.name}: {p.paused}")
        elif p.destination_trouble:
            state = "PAUSED"
            troubles.append(f"{p.source.name}: destination unavailable: {p.destination_trouble}")
        elif yielding(p):
            state = "yielding"
            troubles.append(f"{p.source.name}: {yielding(p)}")
        t.add_row(
            p.source.name,
            state,
            str(p.files_copied),
            human_bytes(p.bytes_copied),
            _rate(p),
            str(p.backlog + p.in_flight),
            f"{p.oldest_wait:.1f} s",
            str(p.errors),
            _duration(p.elapsed),
        )
    if totals and len(progress) > 1:
        t.add_row(
            "total",
            "",
            str(sum(p.files_copied for p in progress)),
            human_bytes(sum(p.bytes_copied for p in progress)),
            "",
            str(sum(p.backlog + p.in_flight for p in progress)),
            f"{max(p.oldest_wait for p in progress):.1f} s",
            str(sum(p.errors for p in progress)),
            "",
        )
    if troubles:
        t.caption = "\n".join(troubles)
        t.caption_justify = "left"
    return t


def yielding(p: Progress) -> str:
    """What the back-off holds back, while it does (docs/design.md, "Gentle on any scheduler")."""
    b = p.back_off
    if b.state != "yielding":
        return ""
    value, unit = human_bytes(b.rate).split()
    return f"yielding to the acquisition: {float(value):.0f} {unit}/s, {b.reads:.2g} of {b.nprocs} reads in flight"


def status_line(p: Progress) -> str:
    trouble = f" (DESTINATION UNAVAILABLE: {p.destination_trouble})" if p.destination_trouble else ""
    if p.paused:
        trouble = f" (PAUSED: {p.paused})"
    elif yielding(p):
        trouble = f" ({yielding(p)})"
    return (
        f"{p.source.name}: {p.phase}{trouble}, {p.files_copied} files ({human_bytes(p.bytes_copied)}, {_rate(p)}) copied, "
        f"{p.backlog} waiting (oldest {p.oldest_wait:.1f} s), {p.in_flight} copying, {p.errors} errors, "
        f"{p.elapsed:.0f} s"
    )


def emit_json(kind: str, payload: dict[str, Any]) -> None:
    """One JSON line on stdout (`--json`), for programs that drive softcopy."""
    doc = {"type": kind, "time": datetime.now(UTC).isoformat(), **payload}
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


class JsonLogHandler(logging.Handler):
    """Every log record as a JSON line (`{"type": "log", ...}`) on stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        emit_json("log", {"level": record.levelname.lower(), "message": record.getMessage()})


class Display:
    """Shows progress while `step()` is called: a live table on a terminal, status lines otherwise,
    or JSON status lines on stdout (`--json`)."""

    def __init__(
        self,
        console: Console,
        get: Callable[[], list[Progress]],
        log_every: float,
        live: bool,
        json_lines: bool = False,
    ) -> None:
        self._get = get
        self._log_every = log_every
        self._json = json_lines
        self._next_log = time.monotonic() + log_every
        self._live = Live(console=console, refresh_per_second=4, transient=False) if live and not json_lines else None

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(table(self._get()))
            self._live.__exit__(None, None, None)

    def step(self) -> None:
        if self._live is not None:
            self._live.update(table(self._get()))
        elif self._log_every > 0 and time.monotonic() >= self._next_log:
            self._next_log = time.monotonic() + self._log_every
            if self._json:
                emit_json("status", {"targets": [dataclasses.asdict(p) for p in self._get()]})
                return
            for p in self._get():
                log.info("%s", status_line(p))


SHOWN = 50
"""Paths listed per kind in a summary; the report file has them all."""


def _listed(what: str, items: list[str]) -> list[str]:
    shown, more = first_of(items, SHOWN)
    lines = [f"  {what}: {p}" for p in shown]
    if more:
        lines.append(f"  ... and {more} more {what} (every one in the --report file)")
    return lines


def summary(t: TargetReport) -> list[str]:
    """The lines that say how one target ended."""
    pair = f"{t.source} -> {t.destination}"
    lines: list[str] = []
    if t.fatal:
        return [f"FAILED: {pair}", f"  {t.fatal}"]
    if t.phase == "stopped":
        return [f"stopped: {pair}", f"  {t.files_copied} files copied; run the same command again to resume"]
    lines.append(f"{'verified complete' if t.verified else 'INCOMPLETE'}: {pair}")
    # What is there, not what was looked at: an incomplete run's missing files are not counted.
    there = (
        f"{t.files_checked} files ({human_bytes(t.bytes_checked)}) at the destination"
        if t.verified
        else f"{t.files_at_destination} of {t.files_checked} source files at the destination as copied"
    )
    lines.append(f"  {there}; {t.files_copied} copied in {t.duration:.1f} s")
    if t.back_off.held_back_s >= 1:
        # Why the copy took longer than the disk allows: a lab sees it was yielding, not stuck.
        lines.append(f"  held back {t.back_off.held_back_s:.0f} s, yielding to the acquisition ({t.back_off.signal})")
    if not t.verified:
        lines += _listed("missing", t.missing)
        lines += _listed(
            "size differs", [f"{p} (source {a} bytes, destination {b} bytes)" for p, a, b in t.size_mismatch]
        )
        lines += _listed("partial file left", t.partials)
        lines += _listed("shard not whole at the destination", [f"{p} ({why})" for p, why in t.bad_shards])
    if t.arrays:
        lines.append(
            f"  {t.arrays} Zarr arrays: {t.present_chunks} of {t.expected_chunks} chunk files exist; "
            f"{t.absent_chunks} absent at the source (fill value, not an error)"
        )
    lines.extend(f"  note: {n}" for n in t.notes)
    return lines


def print_report(console: Console, report: Report) -> None:
    for t in report.targets:
        for line in summary(t):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
