"""What the service keeps up for months (docs/design.md, "Service, month after month"): the watch on
each acquisitions folder, made again whenever that folder is another one (removed and made again,
a disk remounted) or the watch died; and the start of each copy, whose look at the destination (a
share that may hang) runs on a thread of its own, never on the service's loop."""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from softcopy._softcopy import Arrivals, Owner, SoftcopyError, folder_identity
from softcopy.config import Destination, Target, matches

log = logging.getLogger("softcopy")

Identity = tuple[int, int, int | None, int | None]
"""A folder's device, inode, birth time and filesystem identifier (`folder_identity`)."""


def identity_of(folder: Path) -> Identity | None:
    """The identity of the folder at `folder`; None when nothing is there, or something that is not
    a folder (a file; a link, never followed). Raises OSError or SoftcopyError when it cannot be
    looked at (EIO from a share): that is no evidence of anything."""
    try:
        if not stat.S_ISDIR(folder.lstat().st_mode):
            return None
        return folder_identity(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None


Devices = tuple[int, ...]
"""The device of a folder and of each folder above it, up to the root (`devices_of`)."""


def devices_of(folder: Path) -> Devices:
    """The device each of `folder`, its parent, ... the root is on: where a filesystem is mounted
    in that chain. Raises OSError when one cannot be looked at."""
    return tuple(p.lstat().st_dev for p in (folder, *folder.parents))


def unmounted(folder: Path, devices: Devices) -> bool:
    """Whether a filesystem that was mounted on `folder` or above it is not there now: the first of
    `folder`, its parent, ... that is there is on another device than it was on when `devices` was
    taken (a disk unmounted leaves its mount point, another folder on the filesystem below, or
    nothing where the folder was). A folder deleted or renamed aside leaves its parent on the same
    device (docs/design.md, "Service, month after month")."""
    for path, was in zip((folder, *folder.parents), devices, strict=False):
        try:
            return path.lstat().st_dev != was
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return True  # cannot be looked at: no evidence that it left
    return False


def acquisitions_in(pattern: Target) -> list[str]:
    """The names of the folders in `pattern`'s acquisitions folder that match it, sorted: what the
    service takes and what `--dry-run` plans (a link is never one: it is not followed). Raises
    OSError when the folder cannot be listed."""
    with os.scandir(pattern.source.parent) as entries:
        return sorted(
            e.name for e in entries if matches(e.name, pattern.source.name) and e.is_dir(follow_symlinks=False)
        )


def shown(name: str) -> str:
    """A folder name for a log line or a report: one that is not UTF-8 (surrogate escapes, from
    `os.fsdecode`) is shown with its odd bytes escaped instead of failing the write."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Watch:
    """The watch on one pattern's acquisitions folder; none while that folder is missing."""

    def __init__(self, pattern: Target) -> None:
        self.pattern = pattern
        self.folder = pattern.source.parent
        self._arrivals: Arrivals | None = None
        self._identity: Identity | None = None
        self._said: str | None = None

    @property
    def watching(self) -> bool:
        """Whether the folder is watched (it was there at the last look)."""
        return self._arrivals is not None

    def renew(self) -> bool:
        """Makes the watch (again) when the folder is another one than the one watched, or the watch
        died; True when it was made: the folder must be listed then (names made meanwhile)."""
        try:
            now = identity_of(self.folder)
        except (OSError, SoftcopyError) as e:
            self._say(f"the acquisitions folder {self.folder} cannot be looked at ({e}); looked at again")
            return False
        if now is None:
            self._arrivals = None
            self._say(f"waiting for the acquisitions folder {self.folder}: it is not there (watched once it is)")
            return False
        if self._arrivals is not None and now == self._identity and self._arrivals.alive:
            return False
        try:
            arrivals = Arrivals(self.folder)
        except (OSError, SoftcopyError) as e:
            self._say(f"cannot watch {self.folder} ({e}); tried again")
            return False
        if self._identity is not None:
            log.warning("the acquisitions folder %s is watched again (made again, or its watch died)", self.folder)
        self._arrivals, self._identity, self._said = arrivals, now, None
        return True

    def _say(self, text: str) -> None:
        """Says each new trouble once, not at every look."""
        if text != self._said:
            self._said = text
            log.warning("%s", text)

    def wait(self, timeout: float) -> tuple[list[str], bool]:
        """Names that appeared, and whether the folder must be listed again, within `timeout` s."""
        if self._arrivals is None:
            time.sleep(timeout)  # nothing to hear until the folder is back: the loop's own pace
            return [], False
        return self._arrivals.wait(timeout)


@dataclass(frozen=True)
class StartRequest:
    """A folder that matched, to be looked at before its copy starts."""

    pattern: Target
    folder: Path
    name: str
    identity: Identity
    mtime: int
    """The folder's modification time when it was asked for (before its destination was looked at)."""


@dataclass(frozen=True)
class Decided:
    """Where a folder is copied, or why it cannot be."""

    request: StartRequest
    target: Target | None = None
    verified_earlier: bool = False
    """Its destination holds a verified copy of it already: nothing to do."""
    owner: Owner | None = None
    """Whose copy the destination holds, as its records say (None where it cannot be told)."""
    unreported: bool = False
    """Verified earlier, but no report says so: copied (verified) again, for its report."""
    error: str | None = None


class Starter:
    """Runs `decide` for each request on a thread per destination root, one request at a time
    there: a destination on a dead hard-mounted share blocks the starts to that share, never those
    to another destination nor the service's loop (which goes on collecting, reporting, and naming
    a start that does not finish). The threads are as many as the patterns' destinations."""

    def __init__(self, decide: Callable[[StartRequest], Decided], roots: list[Destination]) -> None:
        self._decide = decide
        self._todo: dict[Destination, queue.SimpleQueue[StartRequest | None]] = {r: queue.SimpleQueue() for r in roots}
        self._done: queue.SimpleQueue[Decided] = queue.SimpleQueue()
        for i, todo in enumerate(self._todo.values()):
            threading.Thread(target=self._run, args=(todo,), name=f"softcopy-starter-{i}", daemon=True).start()

    def ask(self, request: StartRequest) -> None:
        self._todo[request.pattern.destination].put(request)

    def answers(self) -> list[Decided]:
        """What was decided since the last call (never waits)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        for todo in self._todo.values():
            todo.put(None)

    def _run(self, todo: queue.SimpleQueue[StartRequest | None]) -> None:
        while (request := todo.get()) is not None:
            try:
                self._done.put(self._decide(request))
            except Exception as e:  # noqa: BLE001 -- one folder's trouble never ends the starter
                self._done.put(Decided(request, error=str(e)))
