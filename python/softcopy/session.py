"""The one loop both forms run, a copy and the service: SIGTERM taken like Ctrl-C, the progress
shown while the work steps, and the exit code of a stop (README.md, "Exit codes")."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

from softcopy.display import Display
from softcopy.exits import EXIT_SIGINT, EXIT_SIGTERM, Terminated, on_sigterm
from softcopy.run import Progress


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
