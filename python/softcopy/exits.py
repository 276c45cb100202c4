"""Exit codes, and SIGTERM turned into an exception, shared by the copy and the service forms."""

from __future__ import annotations

from types import FrameType
from typing import NoReturn

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
"""`softcopy` (a copy, or the service): 0 every file copied and verified; 1 the copy ended but
something is missing or different (each path listed); 2 bad input or usage (one line, nothing
written); 130 / 143 stopped by Ctrl-C / SIGTERM (a service only ends so). README.md, "Exit codes"."""

EXIT_DIFFERENT = EXIT_INCOMPLETE
"""`softcopy verify`: 0 identical; 1 a difference (each printed with its path), or the trees could
not be read through; 2 bad input: usage, a path that is not a folder, or a manifest that cannot be
read or is not one (never taken for a difference)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping us) handled like Ctrl-C, with its own exit code."""


def on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated()
