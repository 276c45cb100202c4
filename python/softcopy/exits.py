"""Exit codes, and SIGTERM turned into an exception, shared by the copy and the service forms."""

from __future__ import annotations

from types import FrameType
from typing import NoReturn

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping us) handled like Ctrl-C, with its own exit code."""


def on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated()
