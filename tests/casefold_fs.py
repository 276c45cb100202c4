"""A case-insensitive, case-preserving filesystem (as NTFS, SMB shares and macOS volumes are by
default), mounted with FUSE over a backing folder: `python casefold_fs.py BACKING MOUNTPOINT`.

This kernel has no casefold support (`CONFIG_UNICODE`), so the tests mount this to get a real
destination where `A` and `a` are one file. Each path component is matched against the names in
the backing folder regardless of case; a new name is stored as given.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any

import fuse  # type: ignore[import-untyped]
from fuse import FUSE, FuseOSError, Operations


class Passthrough(Operations):  # type: ignore[misc]
    """Every operation passed to the backing folder, at the path `_real` gives (tests/faulty_fs.py
    builds on it too)."""

    use_ns = True  # times as integer nanoseconds, as the backing folder keeps them

    def __init__(self, backing: str) -> None:
        self.backing = backing

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")
        out: dict[str, Any] = {k: getattr(st, k) for k in keys}
        out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return out

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._real(path))

    def rename(self, old: str, new: str) -> None:
        # Onto an existing name in another case: that entry is replaced and keeps its stored case.
        os.replace(self._real(old), self._real(new))

    def link(self, target: str, source: str) -> None:
        os.link(self._real(source), self._real(target))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._real(path), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        real = self._real(path)
        if times is None:
            os.utime(real)
            return
        # With utime_omit_ok, a time not to change arrives as UTIME_OMIT (or UTIME_NOW) in tv_nsec.
        st = os.lstat(real)
        now = time.time_ns()
        keep = (st.st_atime_ns, st.st_mtime_ns)
        atime, mtime = ({UTIME_OMIT: k, UTIME_NOW: now}.get(t, t) for t, k in zip(times, keep, strict=True))
        os.utime(real, ns=(atime, mtime))

    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        os.truncate(self._real(path), length)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def open(self, path: str, flags: int) -> int:
        return os.open(self._real(path), flags & ~(os.O_CREAT | os.O_EXCL))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        os.fsync(fh)

    def flush(self, path: str, fh: int) -> None:
        pass

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def symlink(self, target: str, source: str) -> None:
        os.symlink(source, self._real(target))

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)


class CaseFold(Passthrough):
    def _real(self, path: str) -> str:
        """The backing path of `path`, each existing component in its stored case."""
        here = self.backing
        for part in [p for p in path.split("/") if p]:
            try:
                match = next((n for n in os.listdir(here) if n.casefold() == part.casefold()), part)
            except OSError:
                match = part
            here = os.path.join(here, match)
        return here


UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


class _Operations(fuse.fuse_operations):  # type: ignore[misc]
    """fusepy leaves `utime_omit_ok` unset: libfuse2 then turns "set the mtime only" (what
    `futimens` with UTIME_OMIT asks, as softcopy does) into "set both to now"."""

    def __init__(self) -> None:
        super().__init__()
        self.flag_utime_omit_ok = 1


fuse.fuse_operations = _Operations

if __name__ == "__main__":
    # hard_remove: a file removed while open is gone at once (as on a share), not renamed to
    # `.fuse_hidden*`, which would stay in the copy as a file its source never had.
    FUSE(
        CaseFold(sys.argv[1]),
        sys.argv[2],
        foreground=True,
        nothreads=True,
        allow_other=True,
        use_ino=True,
        hard_remove=True,
    )
