"""A minimal inotify reader (ctypes, Linux) for measuring when files land, independent of softcopy."""

from __future__ import annotations

import ctypes
import os
import struct
import time

IN_MOVED_TO = 0x80
IN_CLOSE_WRITE = 0x08
IN_CREATE = 0x100
_HEADER = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(0)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs: dict[int, str] = {}

    def watch(self, path: str, mask: int = IN_MOVED_TO) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.dirs[wd] = path

    def read(self) -> list[tuple[float, str, str, int]]:
        """Blocks for events; returns (monotonic time read, directory, name, mask) for each."""
        buf = os.read(self.fd, 1 << 16)
        now = time.monotonic()
        out, i = [], 0
        while i < len(buf):
            wd, mask, _cookie, length = _HEADER.unpack_from(buf, i)
            name = buf[i + _HEADER.size : i + _HEADER.size + length].rstrip(b"\0").decode()
            out.append((now, self.dirs.get(wd, "?"), name, mask))
            i += _HEADER.size + length
        return out

    def close(self) -> None:
        os.close(self.fd)
