"""The targets file: YAML in, validated `Target`s out. Every error is one line naming the file, the
target and the key, because the person reading it is setting up a 24-hour run and must fix it fast.

Relative paths and `~` in a targets file are resolved against the folder the file is in (not the
current directory), so the same file works from a service, a cron job or a shell.
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Literal, TypeAlias

import yaml

from softcopy._softcopy import Exclude, RateBudget, SshDestination

log = logging.getLogger("softcopy")


class ConfigError(ValueError):
    """Bad input: a malformed targets file, a bad option, impossible paths. The message is one line."""


Destination: TypeAlias = Path | SshDestination
"""Where a target is copied: a local folder (a `Path`, always local), or an ssh destination, every
look at which goes through the engine's SFTP backend (docs/design.md, "The ssh destination")."""


_RELATIVE_REMOTE = re.compile(r"[^/\\:]{2,}:[^/\\]")
"""`host:path` with a relative path: a host (longer than a drive letter) and no slash after the colon."""


def destination_of(text: str | os.PathLike[str]) -> Destination:
    """A destination as a person names it: an ssh destination when a `str` is of the remote form by
    the engine's rule (`host:/abs`, `ssh://host[:port]/abs`, and no local path of that name); a
    `Path` (or any other path object) is always local. ConfigError for `host:relative` that is no
    local path: SFTP's relative paths start in a home folder, which is no place for a copy."""
    if isinstance(text, str):
        remote = SshDestination.parse(text)
        if remote is not None:
            return remote
        if _RELATIVE_REMOTE.match(text) and not os.path.lexists(text):
            raise ConfigError(
                f"destination {text}: an ssh destination's path must be absolute (host:/path); "
                f"a local name with a colon is written ./{text}"
            )
    return Path(text)


@dataclass(frozen=True)
class Target:
    """One source → destination pair and the options it is copied with."""

    source: Path
    destination: Destination
    """A local folder, or an ssh destination: a `str` given here is read by `destination_of` (the
    remote form is ssh), a `Path` is always local."""
    nprocs: int | None = None
    """Copy workers for this target (None: 8, or 32 to an ssh destination, whose workers wait mostly
    on the network: docs/design.md, "The ssh destination: the SFTP client")."""
    sleep_time: float = 0.0
    """Seconds each worker pauses after each file it copied."""
    wait_for_source: bool = True
    """Wait for a missing source to appear (False: a missing source is an error)."""
    marker: str = "complete"
    """File at the source root that says the acquisition is over; copied last."""
    once: bool = False
    """Copy what is there now and finish, without waiting for the marker."""
    settle_time: float = 0.05
    """Seconds a file written in place must stay closed before it is copied."""
    give_up_after: float = 86400.0
    """Seconds an unavailable destination (full, disconnected) is retried before the copy gives up."""
    max_rate: int | None = None
    """This target's bandwidth budget in bytes per second (None: unlimited)."""
    back_off: bool = True
    """Yield the source disk to the acquisition's writes whatever the IO scheduler: fewer reads in
    flight while the source device's write latency rises above its base (docs/design.md, "Gentle on
    any scheduler"). `nprocs`, `sleep_time` and `max_rate` stay caps."""
    checksum: bool = False
    """Hash every file while copying it, read the copy back, and write a manifest beside the destination."""
    delete_source: bool = False
    """Once the acquisition is complete and the copy verified, delete each source file whose copy is
    proven (fsynced, same size, same hash with `checksum`) and that is unchanged since it was copied."""
    exclude: Sequence[str] = ()
    """Globs of files that are not part of the acquisition (a log the acquisition software keeps
    open): never copied, never waited for, never verified, named in the report (docs/design.md,
    "Excluded files"). Kept as a tuple."""
    evict_after: float | None = 30.0
    """Seconds a copied file stays quiet before it leaves memory for its folder's record (None: never;
    not a command-line option: tests shorten it, docs/design.md "Memory")."""
    ssh_command: str | None = None
    """For an ssh destination (`host:/abs`): the program and its options that reach the host instead
    of `ssh -o BatchMode=yes`, e.g. `ssh -p 2222 -i ~/.ssh/lab_key` (split at spaces; the host and
    `-s sftp` are added). Without BatchMode, a prompt may wait for a person."""
    connections: int = 4
    """For an ssh destination: SSH sessions to it, each its own ssh and SFTP server process (the
    server runs one session's requests one at a time: several overlap their waits)."""
    quiet_time: float = 60.0
    """Seconds the end waits for files still open for writing; and, where no lease can tell whether
    a writer has a file open (not its owner and no CAP_LEASE, no lease support), seconds a file
    found without a close event must go unwritten before it is taken as closed (not a
    command-line option: tests shorten it, docs/design.md "The end of a run")."""

    @property
    def manifest(self) -> Path | None:
        """Where the manifest goes with `checksum`: next to the destination, not inside it (beside an
        ssh destination, a path on its server)."""
        if not self.checksum:
            return None
        d = self.destination if isinstance(self.destination, Path) else Path(self.destination.path)
        return d.with_name(d.name + ".softcopy-manifest.tsv")

    def __post_init__(self) -> None:
        if not isinstance(self.destination, (Path, SshDestination)):
            object.__setattr__(self, "destination", destination_of(self.destination))
        # A frozen dataclass: a list given is kept as a tuple, so a Target stays hashable.
        if not isinstance(self.exclude, str) and isinstance(self.exclude, Sequence):
            object.__setattr__(self, "exclude", tuple(self.exclude))
        check_options(self, where="")


@dataclass(frozen=True)
class EngineConfig:
    """What one engine (`softcopy._softcopy.Engine`) is started with: its target, and what the run
    around it adds. The engine reads it attribute by attribute."""

    target: Target
    log_events: bool = False
    """Report every filesystem event as a debug message (`--verbose`)."""
    max_total_rate: RateBudget | None = None
    """A budget this target shares with every engine given the same one (`--max-total-rate`)."""
    low_priority: bool = True
    """Idle IO priority and nice 19 in every worker thread."""
    copy_method: Literal["auto", "sendfile", "readwrite"] = "auto"
    """"auto" (copy_file_range, then sendfile, then read/write), or force "sendfile" or
    "readwrite" (tests exercise every fallback)."""


#: Options a targets entry (or the command line) may set, with their types.
OPTIONS: dict[str, type] = {
    "nprocs": int,
    "sleep_time": float,
    "wait_for_source": bool,
    "marker": str,
    "once": bool,
    "settle_time": float,
    "give_up_after": float,
    "max_rate": int,
    "back_off": bool,
    "checksum": bool,
    "delete_source": bool,
    "exclude": list,
    "ssh_command": str,
    "connections": int,
}
_KEYS = ("source", "destination", *OPTIONS)


def check_options(t: Target, where: str) -> None:
    """Raises ConfigError for option values no run could use."""
    for name in ("nprocs", "connections"):
        value = getattr(t, name)
        if value is None and name == "nprocs":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}{name} must be a whole number >= 1, got {value!r}")
    for name in ("sleep_time", "settle_time", "give_up_after"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise ConfigError(f"{where}{name} must be a number of seconds >= 0, got {value!r}")
    if isinstance(t.exclude, str) or not all(isinstance(g, str) and g.strip("/") for g in t.exclude):
        raise ConfigError(f"{where}exclude must be a list of globs (non-empty strings), got {t.exclude!r}")
    try:
        Exclude(list(t.exclude))  # parsed once more by the engine; refused here as bad input
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None
    if not t.marker or "/" in t.marker or "\\" in t.marker or t.marker in (".", ".."):
        raise ConfigError(f"{where}marker must be a plain file name, got {t.marker!r}")


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_rate(value: object) -> int:
    """Bytes per second from `200M`, `1.5G`, `500K`, `200MiB/s` or a plain number (binary units).

    Raises:
        ConfigError: when the value is not a positive rate.
    """
    if isinstance(value, bool):
        raise ConfigError(f"not a rate: {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        text = str(value).strip().upper().removesuffix("/S").removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in _UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            raise ConfigError(f"not a rate: {value!r} (use e.g. 200M for 200 MiB/s)") from None
    # Checked before int(): inf and nan (`.inf` in YAML, `1e400`) would raise there, not here.
    if not math.isfinite(number * _UNITS[unit]):
        raise ConfigError(f"a rate must be a finite number of bytes per second, got {value!r}")
    rate = int(number * _UNITS[unit])
    if rate < 1:
        raise ConfigError(f"a rate must be at least 1 byte per second, got {value!r}")
    if rate >= 1 << 64:
        raise ConfigError(f"a rate must be below 16 EiB per second, got {value!r}")
    return rate


def _resolve(value: object, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}must be a path (a string), got {value!r}")
    p = Path(os.path.expanduser(value))
    return (p if p.is_absolute() else base / p).resolve()


def _resolve_destination(value: object, base: Path, where: str) -> Destination:
    """A targets file's destination: an ssh destination as written (`cluster:/lab/raw/x.zarr`),
    or a local path resolved against the file's folder."""
    if isinstance(value, str) and value.strip():
        try:
            given = destination_of(value)
        except ConfigError as e:
            raise ConfigError(f"{where.removesuffix('destination ')}{e}") from None
        if isinstance(given, SshDestination):
            return given
    return _resolve(value, base, where)


GLOB = frozenset("*?[")


def is_pattern(source: Path) -> bool:
    """Whether a source names acquisitions by a pattern: a glob in its last component
    (`/acquisition/*.zarr`), each matching folder copied to `destination/<its name>`."""
    return any(c in GLOB for c in source.name)


CASE_SENSITIVE_NAMES = os.name != "nt"
"""Whether the platform's file names differ by case alone (not on Windows: NTFS and SMB fold case)."""


def matches(name: str, glob: str, *, case_sensitive: bool = CASE_SENSITIVE_NAMES) -> bool:
    """Whether a folder or file name matches a glob as the platform compares names: on Windows
    `*.zarr` matches `RUN.ZARR`, as Explorer and `dir` would (docs/design.md, "Windows")."""
    if case_sensitive:
        return fnmatch.fnmatchcase(name, glob)
    return fnmatch.fnmatchcase(name.casefold(), glob.casefold())


def is_ssh(destination: Destination) -> bool:
    """Whether the destination is across ssh (decided by `destination_of`, by the engine's rule)."""
    return isinstance(destination, SshDestination)


def check_pair(source: Path, destination: Destination, where: str = "") -> None:
    """Source and destination must be distinct and must not contain each other (an ssh
    destination is on another machine: its server refuses what it must)."""
    if is_pattern(source) and any(c in GLOB for c in str(source.parent.resolve())):
        raise ConfigError(f"{where}a source pattern may only have its glob in the last component: {source}")
    if isinstance(destination, SshDestination):
        return
    if is_pattern(source):
        parent, d = source.parent.resolve(), destination.resolve()
        if d.is_relative_to(parent) or parent.is_relative_to(d):
            raise ConfigError(
                f"{where}destination {d} and the acquisitions folder {parent} must not contain each other"
            )
        if _a_file(d):
            raise ConfigError(f"{where}destination {d} is a file, not a folder")
        return
    s, d = source.resolve(), destination.resolve()
    if s == d:
        raise ConfigError(f"{where}source and destination are the same folder: {s}")
    if d.is_relative_to(s):
        raise ConfigError(f"{where}destination {d} is inside the source {s}")
    if s.is_relative_to(d):
        raise ConfigError(f"{where}source {s} is inside the destination {d}")
    if _a_file(s):
        raise ConfigError(f"{where}source {s} is a file, not a folder")
    if _a_file(d):
        raise ConfigError(f"{where}destination {d} is a file, not a folder")


def _a_file(path: Path) -> bool:
    """Whether `path` is there and is not a folder. A share that cannot be looked at now (EIO from a
    dropped share) is not bad input: it is unavailable, and waited for when its copy starts
    (docs/design.md, "Unavailable is not elsewhere")."""
    try:
        return path.exists() and not path.is_dir()
    except OSError as e:
        log.warning("%s cannot be looked at now (%s): it is waited for", path, e.strerror or e)
        return False


def check_destination_made(t: Target) -> None:
    """Only the destination folder itself is ever made, never its parents (as rsync): a share that
    is not mounted must not receive the copy on the local disk, under its empty mount point. A
    pattern's destination holds each acquisition's folder: it must be there itself."""
    d = t.destination
    if isinstance(d, SshDestination):
        return  # made, and its parent looked at, by the engine over SFTP
    if is_pattern(t.source):
        if not d.is_dir():
            raise ConfigError(f"destination {d} does not exist: make it (or mount the share) first")
    elif not d.exists() and not d.parent.is_dir():
        raise ConfigError(f"destination {d}: its folder {d.parent} does not exist (softcopy makes only the last one)")


def globs(value: Any) -> Any:
    """Excludes as a list of globs, however given: `exclude: "*.log"` (one glob), a list, or the
    command line's repeated `--exclude` (a tuple); anything else is left for `check_options` to
    refuse."""
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else value


def make_target(source: Path, destination: Destination, options: Mapping[str, Any], where: str = "") -> Target:
    """A validated Target from paths and option values (None values mean "use the default")."""
    check_pair(source, destination, where)
    opts = {k: v for k, v in options.items() if v is not None}
    if "max_rate" in opts:
        try:
            opts["max_rate"] = parse_rate(opts["max_rate"])
        except ConfigError as e:
            raise ConfigError(f"{where}max_rate: {e}") from None
    if "exclude" in opts:
        opts["exclude"] = globs(opts["exclude"])
    for key, value in opts.items():
        want = OPTIONS[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            opts[key] = float(value)
        elif want is int and isinstance(value, float) and value.is_integer():
            opts[key] = int(value)
        elif not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where}{key} must be {want.__name__}, got {value!r}")
    try:
        return Target(source=source, destination=destination, **opts)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


def load_targets(path: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None) -> list[Target]:
    """Reads a targets file. `defaults` (e.g. from the command line) apply where an entry sets nothing.

    Raises:
        ConfigError: with a one-line message naming the file, the entry and the key.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such targets file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{file}: not valid YAML{at}: {problem}") from None
    if not isinstance(doc, dict) or "targets" not in doc:
        raise ConfigError(f"{file}: expected a mapping with a 'targets' list")
    unknown = set(doc) - {"targets"}
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key {min(unknown)!r} (only 'targets' is allowed)")
    entries = doc["targets"]
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: 'targets' must be a list of source/destination entries")
    if not entries:
        raise ConfigError(f"{file}: 'targets' is empty; list at least one source/destination pair")
    base = file.resolve().parent
    targets: list[Target] = []
    for i, entry in enumerate(entries, start=1):
        where = f"{file}: target {i}: "
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}expected a mapping with 'source' and 'destination'")
        normalised = {str(k).replace("-", "_"): v for k, v in entry.items()}
        for key in normalised:
            if key not in _KEYS:
                close = difflib.get_close_matches(key, _KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(_KEYS)})"
                raise ConfigError(f"{where}unknown key {key!r}{hint}")
        for key in ("source", "destination"):
            if key not in normalised:
                raise ConfigError(f"{where}missing '{key}'")
        src = _resolve(normalised.pop("source"), base, f"{where}source ")
        dst = _resolve_destination(normalised.pop("destination"), base, f"{where}destination ")
        options = {**(defaults or {}), **normalised}
        # The command line's excludes apply to every target, added to its own.
        own = globs(normalised.get("exclude"))
        if defaults and defaults.get("exclude") and isinstance(own, list):
            options["exclude"] = [*globs(defaults["exclude"]), *own]
        targets.append(make_target(src, dst, options, where))
    check_targets(targets, str(file))
    return targets


def _real(path: Path) -> Path:
    """What a path leads to, compared as the OS does (links resolved; case folded on Windows)."""
    return Path(os.path.normcase(path.resolve()))


def _lands(d: Destination) -> tuple[str, PurePath]:
    """Where a destination leads: its host ("" for this machine) and its path there."""
    if isinstance(d, SshDestination):
        return f"{d.host}:{d.port}", PurePosixPath(d.path)
    return "", _real(d)


def check_targets(targets: list[Target], name: str) -> None:
    """Targets must not write into each other: compared by where their paths lead, not by how
    they are spelt (a link, `..`, another case on Windows). Other processes are kept out by each
    run's claim on its destination (the engine's `.softcopy-lock`)."""
    real = [(t, _real(t.source), _lands(t.destination)) for t in targets]
    for (x, x_src, _), (y, y_src, _) in itertools.permutations(real, 2):
        # One source, one freeing: a target freeing a source another target still copies (or a
        # folder inside it) would have the other mirror those deletions (docs/design.md, invariant 7).
        # Patterns over one acquisitions folder may match the same folders: compared by that folder.
        x_area = x_src.parent if is_pattern(x.source) else x_src
        y_area = y_src.parent if is_pattern(y.source) else y_src
        if x.delete_source and (y_area.is_relative_to(x_area) or x_area.is_relative_to(y_area)):
            raise ConfigError(
                f"{name}: source {y.source} is shared with the target of {x.source}, which frees it "
                "(delete_source): a source may be freed only by the one target that copies it"
            )
    for (x, x_src, (x_host, x_dst)), (y, _, (y_host, y_dst)) in itertools.permutations(real, 2):
        if (y_host, y_dst) == (x_host, x_dst):
            raise ConfigError(f"{name}: two targets have the same destination {y.destination}")
        if not y_host and y_dst.is_relative_to(x_src):
            raise ConfigError(f"{name}: destination {y.destination} is inside the source {x.source}")
        if y_host == x_host and y_dst.is_relative_to(x_dst):
            raise ConfigError(f"{name}: destination {y.destination} is inside destination {x.destination}")
