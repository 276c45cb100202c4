"""The one loop both forms run, a copy and the service: SIGTERM taken like Ctrl-C, the progress
shown while the work steps, and the exit code of a stop (README.md, "Exit codes"); and the copy
form itself (`run_copier`), which the CLI and the demo both drive."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from softcopy.config import Target
from softcopy.display import Display, emit_json, print_report
from softcopy.exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, Terminated, on_sigterm
from softcopy.run import Copier, Progress, Report, write_report


@dataclass(frozen=True)
class Shows:
    """How the progress is shown: where, how often a status line when not on a terminal, as a
    live table, or as JSON lines on stdout."""

    console: Console
    log_every: float
    live: bool
    json_lines: bool


def run_session(
    shows: Shows,
    status: Callable[[], list[Progress]],
    start: Callable[[], None],
    step: Callable[[], bool],
    stop: Callable[[int], None],
) -> int | None:
    """Runs `start()`, then `step()` until it says the work ended, showing `status()` after each.
    Ctrl-C or SIGTERM meanwhile runs `stop(code)` and returns its code, 130 or 143; None when the
    work ended by itself."""
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        start()
        with Display(shows.console, status, shows.log_every, shows.live, shows.json_lines) as display:
            while True:
                ended = step()
                display.step()
                if ended:
                    return None
    except KeyboardInterrupt as e:
        code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
        stop(code)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_copier(
    targets: list[Target],
    console: Console,
    *,
    verbose: bool,
    log_every: float,
    live: bool,
    max_total_rate: int | None = None,
    report_path: Path | None = None,
    json_lines: bool = False,
) -> int:
    """Runs the copy with a progress display; returns the exit code."""
    started = datetime.now(UTC)
    copier = Copier(targets, log_events=verbose, max_total_rate=max_total_rate)
    reports: list[Report] = []

    def step() -> bool:
        return keep(copier.wait(0.25))

    def keep(report: Report | None) -> bool:
        if report is not None:
            reports.append(report)
        return report is not None

    def stop(_code: int) -> None:
        copier.stop()
        keep(copier.wait(30))
        console.print(
            "softcopy: stopped; files already copied are kept, run the same command again to resume", soft_wrap=True
        )

    shows = Shows(console, log_every, live, json_lines)
    code = run_session(shows, copier.status, copier.start, step, stop) or EXIT_OK
    report = reports[-1] if reports else None
    if report is not None:
        print_report(console, report)
        if code == EXIT_OK:
            code = EXIT_OK if report.ok else EXIT_INCOMPLETE
        if json_lines:
            emit_json("report", report.to_json(code, started, datetime.now(UTC)))
        if report_path is not None:
            try:
                write_report(report_path, report, code, started)
            except OSError as e:
                console.print(f"softcopy: cannot write the report {report_path}: {e}", soft_wrap=True)
                code = code or EXIT_INCOMPLETE
    return code
