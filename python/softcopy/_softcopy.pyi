"""Native core of softcopy (Rust). Use the `softcopy` package, not this module directly."""

from os import PathLike
from pathlib import Path
from typing import ClassVar, Literal, TypeAlias, final

from typing_extensions import disjoint_base

from softcopy.config import EngineConfig
from softcopy.zarr import ArraySpec, Unreadable

__all__ = [
    "Arrivals",
    "BackOff",
    "BackOffState",
    "DestinationFile",
    "Engine",
    "Exclude",
    "NotCopiedWhy",
    "Owner",
    "RateBudget",
    "Report",
    "SoftcopyError",
    "SshDestination",
    "Status",
    "UnfinishedCopy",
    "Verdict",
    "__version__",
    "check_ssh_destination",
    "destination_file",
    "destination_owner",
    "folder_identity",
    "note_let_go",
    "same_filesystem",
    "same_folder",
    "unfinished_copies",
    "verify_manifest",
    "verify_trees",
]

def verify_manifest(manifest: str | PathLike[str], destination: str | PathLike[str]) -> Report:
    """Checks `destination` against a manifest: `files` and `bytes` as listed, `missing`,
    `size_mismatch`, `content_mismatch` (hash differs) and `extra` (files the manifest does not
    list); the rest of the report stays empty."""

def verify_trees(
    source: str | PathLike[str],
    destination: str | PathLike[str] | SshDestination,
    arrays: list[ArraySpec],
    *,
    content: bool = False,
    marker: str = "complete",
    ssh_command: str | None = None,
) -> Report:
    """Compares two trees as an engine does at its end, without an engine; with `content`, every pair of
    files of the same size is also compared byte for byte (`content_mismatch`). An ssh destination
    is looked at over SFTP (`ssh_command` reaches it, as a target's): with `content`, its copies are
    hashed by the server where it has b3sum or sha256sum (the source hashed here alike), else read
    back."""

@final
class Exclude:
    """A target's exclude globs: a glob without `/` matches a file's or a folder's name at any
    depth (`*.log`), one with `/` the path from the source root (`logs/*`); `*` and `?` match
    within a name, `**` any number of folders, `[a-z]` / `[!a-z]` one character. A folder that
    matches excludes what it holds. Case is folded on Windows.

    Raises:
        ValueError: for an empty glob.
    """

    def __new__(cls, globs: list[str]) -> Exclude: ...
    def matches(self, rel: str | PathLike[str]) -> bool:
        """Whether `rel` (relative to the source root), or a folder it is in, is excluded."""
    @property
    def globs(self) -> list[str]: ...

@final
class RateBudget:
    """A bandwidth budget in bytes per second (at least 1), held together by every engine it is
    given to as `max_total_rate` (`--max-total-rate`: a run's targets, a service's acquisitions)."""

    def __new__(cls, bytes_per_s: int) -> RateBudget: ...
    @property
    def bytes_per_s(self) -> int: ...

__version__: str

class SoftcopyError(RuntimeError):
    """An error inside softcopy's engine (a fatal fault). The engine's other errors come as Python's
    own: an OS error as the `OSError` subclass for its errno (`PermissionError`,
    `FileNotFoundError`, ...) with the path as its `filename`; bad configuration as `ValueError`."""

@final
class Engine:
    """One target being copied: a watcher, a tracker and a pool of copy workers in Rust threads.

    The engine starts at once. Python reads its progress with `status()` and `messages()`; nothing
    in the engine's threads ever runs Python code.

    Args:
        config: the target and the run's options (`softcopy.config.EngineConfig`; each option is
            documented on `Target` and `EngineConfig`). With `evict_after`, a copied file quiet that
            long leaves memory for its folder's record (constant memory over a day-long
            acquisition; see docs/design.md, "Memory"), ignored with checksum, manifest or
            delete_source, which need every file's record at the end. With `back_off`, fewer reads
            are in flight while the source device's write latency rises above its base, more while
            it is back (docs/design.md, "Gentle on any scheduler"); `nprocs`, `sleep_time` and
            `max_rate` stay caps.

    Raises:
        ValueError: an option no engine can use (nprocs 0, negative seconds, an unknown
            copy_method, an exclude glob that is empty or matches Zarr metadata).
    """

    def __new__(cls, config: EngineConfig) -> Engine: ...
    def status(self) -> Status:
        """A snapshot of the target's progress (see `Status`)."""
    def messages(self) -> list[tuple[Literal["debug", "info", "warning", "error"], str]]:
        """Takes the messages queued since the last call (oldest dropped beyond 10 000)."""
    def finish(self) -> None:
        """Declares the acquisition over, as if the marker had appeared."""
    def stop(self) -> None:
        """Stops without finishing; no partial file is ever left under a final name."""
    def wait(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds, without the GIL, for the engine to end; True if it did."""
    @property
    def source(self) -> Path:
        """The resolved source root (as given until the source exists)."""
    @property
    def workers(self) -> int:
        """Its copy workers: the target's `nprocs`, or the default for its kind of destination (8;
        32 to an ssh destination)."""
    @property
    def destination(self) -> Path:
        """The resolved destination root (as given until the source exists)."""
    def expect(self, arrays: list[ArraySpec], unreadable: list[Unreadable] = ...) -> None:
        """Hands over the expected Zarr file set once `status().wants_expected` is true (the
        engine drained). Verifying, publishing the marker and freeing the source then run in the
        engine; `verdict()` says how it ended.

        Args:
            arrays: one per Zarr array, from the final metadata (`softcopy.zarr.discover`); read
                by attribute (path, shape, grid, prefix, separator, and shard's chunks_per_shard,
                index_at_end, crc32c).
            unreadable: each metadata file that could not be read or understood (its path relative
                to the source, and why): the run then ends Incomplete, naming them.
        """
    def verdict(self) -> Verdict | None:
        """How the target ended, once it has (None before, and after a fatal error)."""

@final
class Status:
    """A snapshot of one target's progress, as `Engine.status()` returns it (never changed after)."""

    phase: Literal[
        "starting",
        "waiting",
        "scanning",
        "copying",
        "reconciling",
        "verifying",
        "publishing",
        "freeing",
        "verified",
        "incomplete",
        "stopped",
        "failed",
    ]
    """Where the target is; "verified", "incomplete", "stopped" and "failed" are the end."""
    files_copied: int
    bytes_copied: int
    files_deleted: int
    files_unchanged: int
    """Copies that found the destination already up to date (re-triggers, resumed runs)."""
    redundant: int
    """Copies of a file already copied in this run (rewritten keys)."""
    files_distinct: int
    max_copies: int
    errors: int
    """Copy attempts that failed (each retried with backoff)."""
    failed: int
    """Files given up after repeated failures."""
    backlog: int
    in_flight: int
    writing: int
    """Files open for writing at the source."""
    oldest_wait: float
    """Seconds the oldest waiting file has waited."""
    known: int
    """Files known at the source."""
    settled: int
    """Of those, files settled out of memory."""
    bytes_known: int
    """Bytes the last complete sweep found."""
    bytes_left: int
    """Of those, bytes still to copy."""
    last_error: str | None
    fatal: str | None
    """Why the engine failed, when `phase` is "failed"."""
    elapsed: float
    finishing: bool
    destination_trouble: str | None
    """Why the destination cannot take files now, or None."""
    gave_up: bool
    paused: str | None
    """Why the target is paused (its source root is gone or another folder), or None."""
    wants_expected: bool
    """The engine drained and waits for `expect()`."""
    back_off: BackOff

@disjoint_base
class Report:
    """What a verification found: `verify_trees`, `verify_manifest` and, as the base of `Verdict`, the
    end of a run answer with it.

    `ok` is true when nothing is missing, different (size, modification time, content), partial,
    stale or a broken shard; `extra` files and the notes (`symlinks`, `outside_grid`,
    `bad_shards_at_source`, `pruned`, `excluded`) do not count against it. `content_mismatch`:
    copies read back different (looked for with `content`, a manifest or delete_source).
    """

    ok: bool
    files: int
    bytes: int
    missing: list[Path]
    size_mismatch: list[tuple[Path, int, int]]
    """(path, source size, destination size)."""
    mtime_mismatch: list[Path]
    content_mismatch: list[Path]
    partials: list[Path]
    symlinks: list[Path]
    extra: list[Path]
    stale_chunks: list[Path]
    pruned: list[Path]
    expected_chunks: int
    present_chunks: int
    proven_as_copied: int
    """Files proven by this run's own copies of their current versions, not looked at at the destination."""
    destination_walked: bool
    """Whether verification walked the destination (for partials, stale chunks and extras)."""
    outside_grid: list[Path]
    bad_shards: list[tuple[Path, str]]
    bad_shards_at_source: list[tuple[Path, str]]
    excluded: list[Path]
    excluded_chunks: int

@final
class Verdict(Report):
    """How a target ended, decided in the engine: what verification found (the `Report` it is,
    empty when verification could not run) and what the end did.

    `verified` is true only when every file arrived with its size and modification time, every
    shard is whole, nothing stale or partial is left, and the marker (if any) was published last.
    `ok` is `verified` here: a report listing nothing wrong is no verified copy when the end
    refused to verify or never ran the verification.
    `not_copied` lists files known at the source that never arrived when verification could not
    run or was undone, and `not_copied_why` says why; `excluded` the source files left out by
    `exclude`; `reason` says why it is not verified when that is not a list of files. With
    delete_source, `freed` says whether the mover ran, and `source_deleted` / `source_kept` what it
    did (each deleted file's copy was proven identical by content first). `found_at_end` counts the
    files the final look at the source found new, changed or gone with no event having said so (0
    where the copy was live throughout).
    """

    verified: bool
    reason: str | None
    not_copied: list[Path]
    not_copied_why: NotCopiedWhy
    marker_published: bool
    freed: bool
    source_deleted: list[Path]
    source_kept: list[tuple[Path, str]]
    folders_removed: int
    found_at_end: int

@final
class BackOffState:
    """Whether the back-off holds the copy back now."""

    Off: ClassVar[BackOffState]
    """Not running: turned off, or no signal to steer by (`BackOff.signal` says which)."""
    Free: ClassVar[BackOffState]
    """Running and not backed off for others (the copy may take all its workers, is starting slowly,
    or has nothing to copy)."""
    Yielding: ClassVar[BackOffState]
    """Running; the copy is held below its workers while it has something to copy."""

@final
class BackOff:
    """The back-off as `Engine.status().back_off` shows it: `state`, `reads` (reads in flight
    allowed now; below one, the share of one worker's time), `nprocs` (the most reads in flight),
    `held_back_s` (seconds the copy was held back while it had something to copy, since the start),
    `rate` (bytes per second the copy moved over about the last second) and `signal` (what the
    back-off steers by, or why it is off)."""

    state: BackOffState
    reads: float
    nprocs: int
    held_back_s: float
    rate: float
    signal: str

@final
class NotCopiedWhy:
    """Why a verdict's `not_copied` files did not arrive."""

    SourceGone: ClassVar[NotCopiedWhy]
    """The source folder went away (moved, unmounted, replaced) before the end."""
    StillOpen: ClassVar[NotCopiedWhy]
    """Still open for writing at the source when the wait for writers ran out."""
    ChangedLate: ClassVar[NotCopiedWhy]
    """Changed at the source after verification; the marker was withdrawn."""

@final
class Owner:
    """Whose copy a destination folder holds, seen from a source folder."""

    Free: ClassVar[Owner]
    """Nothing there (softcopy's own state aside) and nothing recorded."""
    Ours: ClassVar[Owner]
    """Recorded as the copy of this very source folder."""
    SameNumber: ClassVar[Owner]
    """Recorded for a folder with this device and inode number on a filesystem that keeps no birth time:
    this folder, or one made again under the name that got the number back."""
    Unrecorded: ClassVar[Owner]
    """Files there, with no record of whose copy they are."""
    Another: ClassVar[Owner]
    """The copy of another acquisition (a folder made again under the name, a re-take)."""
    Finished: ClassVar[Owner]
    """This acquisition's copy, verified and freed whole at the source: nothing is left to do."""
    Claimed: ClassVar[Owner]
    """Another softcopy run holds it as its destination now."""
    def __eq__(self, value: object, /) -> bool: ...
    def __int__(self) -> int: ...

@final
class SshDestination:
    """An ssh destination (`[user@]host:/abs`, or `ssh://[user@]host[:port]/abs`). Every look at it
    goes through the engine's SFTP backend: it is no local path (no `__fspath__`)."""

    @staticmethod
    def parse(destination: str | PathLike[str]) -> SshDestination | None:
        """The ssh destination `destination` names, by the one rule: a colon before any slash, no
        Windows drive letter before it, an absolute path after it, and no local path of that name.
        None for a local path (a name that is not UTF-8 is one)."""
    def __truediv__(self, name: str | PathLike[str], /) -> SshDestination:
        """The folder `name` (one component) in this one; ValueError for anything else."""
    def __copy__(self) -> SshDestination: ...
    def __deepcopy__(self, memo: object, /) -> SshDestination: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    @property
    def name(self) -> str:
        """The last component of its path."""
    @property
    def host(self) -> str:
        """`host` or `user@host`, as given to ssh."""
    @property
    def port(self) -> int | None: ...
    @property
    def path(self) -> str:
        """Its path on the server (absolute)."""

def check_ssh_destination(
    destination: SshDestination,
    ssh_command: str | None = None,
    *,
    holds_acquisitions: bool = False,
    source: str | PathLike[str] | None = None,
) -> None:
    """Checks an ssh destination before a copy starts: the host reached over SFTP, the folder there
    (or, unless `holds_acquisitions`, its parent to make it in), and not on the `source`'s own
    storage inside or around it (this machine over ssh). ValueError, one line a person can act on,
    when not."""

@final
class DestinationFile:
    """What a file (or folder) at a destination is, as `destination_file` found it."""

    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def is_file(self) -> bool: ...
    @property
    def is_dir(self) -> bool: ...

def destination_file(
    destination: str | PathLike[str] | SshDestination, rel: str | PathLike[str], *, ssh_command: str | None = None
) -> DestinationFile | None:
    """The file `rel` below `destination` (a local folder, or one over ssh), looked at through the
    engine's backend without passing a link; None where it (or the destination) is not there."""

def destination_owner(
    source: str | PathLike[str],
    destination: str | PathLike[str] | SshDestination,
    marker: str = "complete",
    *,
    ssh_command: str | None = None,
) -> tuple[Owner, str]:
    """Whose copy `destination` holds for `source`, and why in words when it is another's."""

FolderTuple: TypeAlias = tuple[int, int, int | None, int | None]

def folder_identity(path: str | PathLike[str]) -> FolderTuple:
    """(device, inode, birth time in ns or None, the filesystem's own identifier or None): a folder
    made again under a name differs."""

def same_folder(a: FolderTuple, b: FolderTuple) -> bool:
    """Whether two identities may be of one folder (a birth time missing on either side cannot
    tell them apart; the filesystem's identifier, where both have one, stands for the device)."""

def same_filesystem(a: FolderTuple, b: FolderTuple) -> bool:
    """Whether two identities are on one filesystem: its own identifier where both know it (a disk
    renumbered after a reboot is still itself), else the device number."""

@final
class UnfinishedCopy:
    """An unfinished copy at a destination: recorded, without its marker, not claimed, not noted as let go."""

    @property
    def copy(self) -> Path | SshDestination: ...
    @property
    def source(self) -> FolderTuple: ...
    @property
    def shown(self) -> str: ...
    @property
    def name(self) -> str: ...

def unfinished_copies(
    destination: str | PathLike[str] | SshDestination,
    acquisitions: str | PathLike[str],
    marker: str = "complete",
    *,
    ssh_command: str | None = None,
) -> list[UnfinishedCopy]:
    """The unfinished copies in `destination` of folders that were in `acquisitions`."""

def note_let_go(copy: str | PathLike[str] | SshDestination, why: str, *, ssh_command: str | None = None) -> bool:
    """Notes at `copy` that its acquisition was let go, and why (told once); False where the copy
    is not there."""

@final
class Arrivals:
    """The watch on an acquisitions folder: the names that appear directly in it."""

    def __new__(cls, folder: Path) -> Arrivals: ...
    def wait(self, timeout: float) -> tuple[list[str], bool]:
        """(names that appeared, whether the folder must be listed again), after up to `timeout` s.
        A name that is not UTF-8 comes as `os.fsdecode` gives it (surrogate escapes)."""
    @property
    def alive(self) -> bool:
        """False once the watch died (nothing more will be heard from it): make another."""
