"""`softcopy --dry-run`: what a copy would do, now, without writing anything."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from rich.console import Console

from softcopy import zarr
from softcopy._softcopy import Exclude
from softcopy.config import Destination, Target, is_pattern
from softcopy.display import human_bytes
from softcopy.watching import acquisitions_in

#: Never data: lock files and other writers' temporaries (as the engine's tracker decides).
_TEMP_SUFFIXES = (".__lock", ".partial", ".softcopy-partial")
#: Files a freeing set aside beside their names (on a filesystem mounted inside the acquisition):
#: `.softcopy-freeing-<pid>-<ns>-<batch>-<i>` exactly, as `vocab::is_ignored` says; any other name
#: is a person's, copied.
_SET_ASIDE = re.compile(r"\.softcopy-freeing-[0-9]+-[0-9]+-[0-9]+-[0-9]+")


def plan_pattern(pattern: Target) -> list[str]:
    """Lines describing what the service would do now: each folder that matches, planned as its
    acquisition would be copied (to `destination/<its name>`)."""
    parent = pattern.source.parent
    if not parent.is_dir():
        wait = "softcopy would wait for it" if pattern.wait_for_source else "softcopy would refuse it"
        return [f"{parent}: the acquisitions folder does not exist yet; {wait}"]
    found = acquisitions_in(pattern)
    lines = [f"{pattern.source}: {len(found)} folders match now; each new one would be copied as it comes"]
    for name in found:
        lines += plan(dataclasses.replace(pattern, source=parent / name, destination=pattern.destination / name))
    return lines


def plan(target: Target) -> list[str]:
    """Lines describing what copying `target` would do now."""
    if is_pattern(target.source):
        return plan_pattern(target)
    src, dst = target.source, target.destination
    exclude = Exclude(list(target.exclude)) if target.exclude else None
    excluded = 0
    if not src.is_dir():
        return [
            f"{src}: does not exist yet; softcopy would wait for it" if target.wait_for_source else f"{src}: missing"
        ]
    todo = done = 0
    todo_bytes = 0
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            if name.endswith(_TEMP_SUFFIXES) or _SET_ASIDE.fullmatch(name):
                continue
            rel = Path(dirpath, name).relative_to(src)
            if exclude is not None and exclude.matches(rel):
                excluded += 1
                continue
            st = Path(dirpath, name).lstat()
            if _at_destination(dst, rel, st):
                done += 1
            else:
                todo += 1
                todo_bytes += st.st_size
    there = (
        f"{done} already at the destination with the same size and mtime"
        if isinstance(dst, Path)
        else "the ssh destination not looked at (what is there already is not copied again)"
    )
    summary = f"{src} -> {dst}: would copy {todo} files ({human_bytes(todo_bytes)}); {there}"
    lines = [summary]
    if excluded:
        lines.append(f"  {excluded} files excluded (never copied)")
    arrays, notes = zarr.discover(src)
    for a in arrays:
        sharded = ", sharded" if a.sharded else ""
        lines.append(
            f"  array {a.path or '.'}: Zarr v{a.zarr_format}, shape {list(a.shape)}, {a.expected_files} "
            f"{'shard' if a.sharded else 'chunk'} files expected (grid {list(a.grid)}, keys like "
            f"{a.key((0,) * len(a.shape))!r}{sharded})"
        )
    if not arrays:
        lines.append("  no Zarr arrays: the folder would be mirrored file by file")
    lines.extend(f"  note: {n}" for n in notes)
    if not (src / target.marker).exists() and not target.once:
        lines.append(f"  no {target.marker!r} marker yet: the copy would go on until it appears")
    return lines


def _at_destination(dst: Destination, rel: Path, st: os.stat_result) -> bool:
    """Whether the copy of `rel` is at a local destination with its size and mtime (an ssh one is
    not looked at by a dry run: each file would be a round trip)."""
    if not isinstance(dst, Path):
        return False
    try:
        d = (dst / rel).lstat()
    except OSError:
        return False
    return d.st_size == st.st_size and d.st_mtime_ns == st.st_mtime_ns


def dry_run(targets: list[Target], console: Console) -> int:
    for t in targets:
        for line in plan(t):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0
