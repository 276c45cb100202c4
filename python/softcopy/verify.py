"""`softcopy verify SRC DST`: compare a copy with its source after the fact (the cluster side's
check, or a second opinion on an old copy). Every difference is printed with its path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from softcopy import zarr
from softcopy._softcopy import verify_trees


def differences(v: dict[str, Any]) -> list[str]:
    """One line per difference, in a fixed order, each naming the path."""
    lines = [f"missing: {os.fspath(p)}" for p in v["missing"]]
    lines += [f"size: {os.fspath(p)} (source {a} bytes, destination {b} bytes)" for p, a, b in v["size_mismatch"]]
    lines += [f"content: {os.fspath(p)}" for p in v["content_mismatch"]]
    lines += [f"shard: {os.fspath(p)} ({why})" for p, why in v["bad_shards"]]
    lines += [f"partial: {os.fspath(p)}" for p in v["partials"]]
    lines += [f"stale: {os.fspath(p)} (a chunk the source no longer has)" for p in v["stale_chunks"]]
    lines += [f"extra: {os.fspath(p)}" for p in v["extra"]]
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("destination", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checksum", is_flag=True, help="Also compare every file's contents byte for byte (reads both trees).")
@click.option("--marker", default="complete", show_default=True, help="The end-of-acquisition file (compared too).")
def verify_main(source: Path, destination: Path, checksum: bool, marker: str) -> None:
    """Compare DESTINATION with SOURCE: print each difference (missing, extra, size, content) with
    its path. Exit 0 when identical, 1 otherwise. Zarr arrays are also checked: fill-value chunks
    absent at the source are fine, shards must be whole."""
    arrays, notes = zarr.discover(source)
    v = verify_trees(source, destination, [a.as_native() for a in arrays], content=checksum, marker=marker)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if (source / marker).is_file() != (destination / marker).is_file():
        where = "missing" if (source / marker).is_file() else "extra"
        v["missing" if where == "missing" else "extra"].append(Path(marker))
    lines = differences(v)
    for line in lines:
        click.echo(line)
    what = "contents and sizes" if checksum else "sizes"
    if lines:
        click.echo(f"{len(lines)} differences ({v['files']} files compared by {what})", err=True)
        sys.exit(1)
    click.echo(f"identical: {v['files']} files compared by {what}", err=True)
