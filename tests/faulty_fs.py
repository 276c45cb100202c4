"""A passthrough filesystem whose listing of one folder fails, mounted with FUSE over a backing
folder: `python faulty_fs.py BACKING MOUNTPOINT`.

The fault is set in the environment: `FAULTY_READDIR` is the folder (a path inside the mount,
`/`-separated, `/` for its root) whose listing fails with EIO, the first `FAULTY_TIMES` times it is
listed (1 unless set); every other operation, and every later listing, passes through. With
`FAULTY_ARM` set (a path outside the mount), the listing fails only while that file exists, and the
failure removes it: a test arms one failure whenever it likes. Each failure is written as a line to
the file `FAULTY_LOG`, if set, so a test can tell the fault was hit.

Two more faults, each off unless set: `FAULTY_DOWN` (a path outside the mount): while that file
exists, every operation fails with EIO, as on a share whose server dropped (a soft mount); `FAULTY_HANG`: while that file exists, every
operation waits for it to go (up to 5 minutes), as on a hard-mounted share whose server is gone;
`FAULTY_GETATTR` (a name): a look at any path whose last component is that name fails with EIO,
as a folder on a flaky share that cannot be looked at, while the file `FAULTY_GETATTR_ARM` exists
(outside the mount; always, if that is not set); the kernel then caches no attribute or name.
With `FAULTY_PATH_INODES` set, files are numbered as sshfs numbers them (SFTP has no inode numbers):
by path, so a folder swapped in under a name on the server keeps the number of the one it replaced.
With `FAULTY_NO_LINK` set, a hard link is refused (EPERM), as on exFAT, FAT and shares without them.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any

from casefold_fs import Passthrough  # importing it also sets fusepy's utime_omit_ok
from fuse import FUSE, FuseOSError  # type: ignore[import-untyped]


class Faulty(Passthrough):
    def __init__(self, backing: str, folder: str, times: int, log: str | None, arm: str | None) -> None:
        super().__init__(backing)
        self.folder = "/" + folder.strip("/")
        self.left = times
        self.log = log
        self.arm = arm
        self.down = os.environ.get("FAULTY_DOWN")
        self.hang = os.environ.get("FAULTY_HANG")
        self.bad_name = os.environ.get("FAULTY_GETATTR")
        self.bad_name_arm = os.environ.get("FAULTY_GETATTR_ARM")

    def __call__(self, op: str, *args: Any) -> Any:
        if op not in ("init", "destroy") and self.down is not None and os.path.exists(self.down):
            raise FuseOSError(errno.EIO)
        # A hard-mounted share whose server is gone: the call does not return (bounded here).
        deadline = time.monotonic() + 300
        while op not in ("init", "destroy") and self.hang and os.path.exists(self.hang) and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().__call__(op, *args)

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        # Only a folder that is there fails: a look for a name not made yet says "not there".
        bad = self.bad_name is not None and path.rsplit("/", 1)[-1] == self.bad_name
        if (
            bad
            and os.path.lexists(self._real(path))
            and (self.bad_name_arm is None or os.path.exists(self.bad_name_arm))
        ):
            raise FuseOSError(errno.EIO)
        result: dict[str, Any] = super().getattr(path, fh)
        return result

    def link(self, target: str, source: str) -> None:
        if "FAULTY_NO_LINK" in os.environ:
            raise FuseOSError(errno.EPERM)
        super().link(target, source)

    def armed(self) -> bool:
        if self.arm is None:
            return self.left > 0
        try:
            os.unlink(self.arm)
            return True
        except FileNotFoundError:
            return False

    def readdir(self, path: str, fh: Any) -> list[str]:
        if "/" + path.strip("/") == self.folder and self.armed():
            self.left -= 1
            if self.log:
                with open(self.log, "a") as f:
                    f.write(f"EIO readdir {path}\n")
            raise FuseOSError(errno.EIO)
        result: list[str] = super().readdir(path, fh)
        return result


if __name__ == "__main__":
    fs = Faulty(
        sys.argv[1],
        os.environ.get("FAULTY_READDIR", "/"),
        int(os.environ.get("FAULTY_TIMES", "1")),
        os.environ.get("FAULTY_LOG"),
        os.environ.get("FAULTY_ARM"),
    )
    # hard_remove: a file unlinked while open is gone at once, as on a real filesystem (not kept
    # as a `.fuse_hidden*` file the model would take for a stray copy).
    # With FAULTY_GETATTR, no attribute or name is cached by the kernel: every look reaches the fault.
    uncached = {"attr_timeout": 0, "entry_timeout": 0} if fs.bad_name else {}
    by_path = "FAULTY_PATH_INODES" in os.environ
    FUSE(
        fs,
        sys.argv[2],
        foreground=True,
        nothreads=True,
        allow_other=True,
        use_ino=not by_path,
        hard_remove=True,
        **uncached,
    )
