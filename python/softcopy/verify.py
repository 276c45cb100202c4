"""`softcopy verify SRC DST`: compare a copy with its source after the fact (the cluster side's
check, or a second opinion on an old copy). Every difference is printed with its path."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from softcopy import zarr
from softcopy._softcopy import (
    Report,
    SoftcopyError,
    SshDestination,
    check_ssh_destination,
    destination_file,
    verify_manifest,
    verify_trees,
)
from softcopy.config import Destination, destination_of
from softcopy.exits import EXIT_DIFFERENT, EXIT_USAGE

FREEING = ".softcopy-freeing"
"""The folder at a source's root where a freeing sets each file aside before its unlink
(src/end/aside.rs): one left there was stopped mid-way, and only a run's start finishes it (the
version journaled deleted, a writer's new version put back under its name)."""


def freeing_left(folder: Path) -> bool:
    """A freeing stopped mid-way left its folder at the source: what is in it may be a writer's
    version no copy holds, so the copy is not said identical, nor verified earlier by the service,
    until a run finished it (docs/design.md, "The end of a run")."""
    return (folder / FREEING).is_dir()


def differences(r: Report, missing: Sequence[Path], extra: Sequence[Path]) -> list[str]:
    """One line per difference, in a fixed order, each naming the path: `r`'s, with `missing` and
    `extra` standing for its own (the caller adds the marker, which verification leaves out)."""
    lines = [f"missing: {os.fspath(p)}" for p in missing]
    lines += [f"size: {os.fspath(p)} (source {a} bytes, destination {b} bytes)" for p, a, b in r.size_mismatch]
    lines += [f"mtime: {os.fspath(p)} (another modification time)" for p in r.mtime_mismatch]
    lines += [f"content: {os.fspath(p)}" for p in r.content_mismatch]
    lines += [f"shard: {os.fspath(p)} ({why})" for p, why in r.bad_shards]
    lines += [f"partial: {os.fspath(p)}" for p in r.partials]
    lines += [f"stale: {os.fspath(p)} (a chunk the source no longer has)" for p in r.stale_chunks]
    lines += [f"extra: {os.fspath(p)}" for p in extra]
    return lines


class Unusable(click.ClickException):
    """A destination a person must act on (a host not reached, a folder not there): bad input, exit 2."""

    exit_code = EXIT_USAGE


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, metavar="SRC DST | --manifest FILE DST", type=click.Path(path_type=str))
@click.option("--checksum", is_flag=True, help="Also compare every file's contents byte for byte (reads both trees).")
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Check DST against a manifest written by `softcopy --checksum` (no source needed).",
)
@click.option("--marker", default="complete", show_default=True, help="The end-of-acquisition file (compared too).")
@click.option(
    "--ssh-command",
    default=None,
    metavar="CMD",
    help="For a DST of the form HOST:/PATH: the program and its options that reach the host, as softcopy's "
    "own --ssh-command. With --checksum the server hashes its copies (b3sum or sha256sum; the source is hashed "
    "here alike), else they are read back.  [default: ssh -o BatchMode=yes]",
)
def verify_main(
    paths: tuple[str, ...], checksum: bool, manifest: Path | None, marker: str, ssh_command: str | None
) -> None:
    """Compare a copy with its source (SRC DST) or with a manifest (--manifest FILE DST): print each
    difference (missing, extra, size, content) with its path. Exit 0 when identical, 1 for a
    difference, 2 for bad input (a manifest that cannot be read or parsed, a path that is not a folder).
    Zarr arrays are also checked: fill-value chunks absent at the source are fine, shards must be whole.
    DST may be HOST:/PATH (or ssh://HOST[:PORT]/PATH): sizes and whole-second modification times
    are compared over SFTP."""
    if manifest is not None:
        if len(paths) != 1:
            raise click.UsageError("with --manifest, give only DST")
        folder = Path(paths[0])
        if isinstance(destination_of(paths[0]), SshDestination):
            raise click.UsageError("--manifest with an ssh destination is not supported yet")
        _check_dir(folder)
        try:
            v = verify_manifest(manifest, folder)
        except (SoftcopyError, OSError) as e:  # a manifest that cannot be read or parsed: bad input
            raise click.UsageError(f"--manifest {manifest}: {e}") from None
        _finish(differences(v, v.missing, [p for p in v.extra if p.name != marker]), v.files, "hashes")
        return
    if len(paths) != 2:
        raise click.UsageError("give SRC and DST, or --manifest FILE and DST")
    source, destination = Path(paths[0]), destination_of(paths[1])
    _check_dir(source)
    _check_destination(destination, ssh_command)
    arrays, notes = zarr.discover(source)
    try:
        v = verify_trees(source, destination, arrays, content=checksum, marker=marker, ssh_command=ssh_command)
        copied = destination_file(destination, marker, ssh_command=ssh_command)
    except ValueError as e:  # an ssh destination that cannot be reached: bad input, one line
        raise Unusable(str(e)) from None
    except (OSError, SoftcopyError) as e:
        raise click.ClickException(str(e)) from None
    missing, extra = v.missing, v.extra
    if (source / marker).is_file() != (copied is not None and copied.is_file):
        (missing if (source / marker).is_file() else extra).append(Path(marker))
    # An array whose metadata cannot be read cannot be accounted for: a difference, not a note.
    lines = [f"unreadable metadata: {u} (its array's chunks cannot be accounted for)" for u in notes]
    if freeing_left(source):
        lines.append(f"set aside: {source / FREEING} (left by a freeing stopped mid-way; a run finishes it)")
    _finish(lines + differences(v, missing, extra), v.files, "contents and sizes" if checksum else "sizes")


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise click.BadParameter(f"{path} is not a folder")


def _check_destination(destination: Destination, ssh_command: str | None) -> None:
    """A local folder, or an ssh destination reached and there (one line, exit 2, when not)."""
    if isinstance(destination, Path):
        _check_dir(destination)
        return
    try:
        check_ssh_destination(destination, ssh_command, holds_acquisitions=True)
    except ValueError as e:
        raise Unusable(str(e)) from None


def _finish(lines: list[str], files: int, what: str) -> None:
    for line in lines:
        click.echo(line)
    if lines:
        click.echo(f"{len(lines)} differences ({files} files compared by {what})", err=True)
        sys.exit(EXIT_DIFFERENT)
    click.echo(f"identical: {files} files compared by {what}", err=True)
