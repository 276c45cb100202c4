"""Zarr awareness: find the arrays under a source root and turn their metadata into `ArraySpec`s,
the plain values from which the engine accounts for every chunk (or shard) file.

Only metadata is read, never chunks, and the walk does not descend into arrays (an array has no
children), so discovering a hierarchy costs one directory listing per group, not per chunk. No Zarr
library is needed: the formats are small JSON documents (Zarr v2: `.zarray`; v3: `zarr.json`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ShardLayout:
    """How a `sharding_indexed` shard file ends (or starts) with its index."""

    chunks_per_shard: int
    index_at_end: bool
    crc32c: bool


@dataclass(frozen=True)
class ArraySpec:
    """One array as its (final) metadata describes it."""

    path: str
    """Relative to the source root, '/'-separated; '' for an array at the root."""
    zarr_format: int
    shape: tuple[int, ...]
    grid: tuple[int, ...]
    """Shape of one file's worth of data: the chunk shape, or the shard shape when sharded."""
    prefix: str | None
    """'c' for Zarr v3's default chunk key encoding, None for v2-style keys."""
    separator: str
    shard: ShardLayout | None = None
    """For sharded arrays: where each shard file keeps its index."""

    @property
    def sharded(self) -> bool:
        return self.shard is not None

    @property
    def expected_files(self) -> int:
        """How many chunk/shard files the grid has room for."""
        return math.prod(-(-s // g) if g else 0 for s, g in zip(self.shape, self.grid, strict=True))

    def key(self, index: tuple[int, ...]) -> str:
        """The file name (relative to the array) of the grid cell `index`."""
        if not index:
            return self.prefix or "0"
        body = self.separator.join(str(i) for i in index)
        return f"{self.prefix}{self.separator}{body}" if self.prefix else body


@dataclass(frozen=True)
class Unreadable:
    """A metadata file that could not be read or understood: its array cannot be accounted for, so
    a run cannot be verified while it is there (its stale chunks would pass as extras)."""

    path: str
    """The metadata file, relative to the source root, '/'-separated."""
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


class MetadataError(ValueError):
    """Metadata that cannot describe an array (reported; the files are still copied and checked)."""


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise MetadataError(f"{what} must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def parse_v2(meta: Any, path: str) -> ArraySpec:
    """`.zarray` → ArraySpec. `dimension_separator` is optional and defaults to '.'."""
    if not isinstance(meta, dict):
        raise MetadataError("not a JSON object")
    shape = _ints(meta.get("shape"), "shape")
    chunks = _ints(meta.get("chunks"), "chunks")
    if len(shape) != len(chunks):
        raise MetadataError(f"shape {shape} and chunks {chunks} differ in length")
    sep = meta.get("dimension_separator") or "."
    if sep not in (".", "/"):
        raise MetadataError(f"dimension_separator must be '.' or '/', got {sep!r}")
    return ArraySpec(path, 2, shape, chunks, None, sep)


def parse_v3(meta: Any, path: str) -> ArraySpec | None:
    """`zarr.json` → ArraySpec, or None for a group. With `sharding_indexed` the regular chunk grid
    is already the shard grid (one file per shard), so sharding changes nothing about file names."""
    if not isinstance(meta, dict):
        raise MetadataError("not a JSON object")
    if meta.get("node_type") != "array":
        return None
    shape = _ints(meta.get("shape"), "shape")
    grid_meta = meta.get("chunk_grid") or {}
    if grid_meta.get("name") != "regular":
        raise MetadataError(f"unsupported chunk_grid {grid_meta.get('name')!r}")
    grid = _ints((grid_meta.get("configuration") or {}).get("chunk_shape"), "chunk_shape")
    if len(shape) != len(grid):
        raise MetadataError(f"shape {shape} and chunk_shape {grid} differ in length")
    enc = meta.get("chunk_key_encoding") or {"name": "default"}
    name = enc.get("name")
    conf = enc.get("configuration") or {}
    if name == "default":
        prefix, sep = "c", conf.get("separator", "/")
    elif name == "v2":
        prefix, sep = None, conf.get("separator", ".")
    else:
        raise MetadataError(f"unsupported chunk_key_encoding {name!r}")
    if sep not in (".", "/"):
        raise MetadataError(f"chunk key separator must be '.' or '/', got {sep!r}")
    codecs = meta.get("codecs") or []
    sharding = next((c for c in codecs if isinstance(c, dict) and c.get("name") == "sharding_indexed"), None)
    return ArraySpec(path, 3, shape, grid, prefix, sep, _shard_layout(sharding, grid) if sharding else None)


def _shard_layout(codec: dict[str, Any], shard_shape: tuple[int, ...]) -> ShardLayout:
    conf = codec.get("configuration") or {}
    inner = _ints(conf.get("chunk_shape"), "sharding chunk_shape")
    if len(inner) != len(shard_shape) or any(i == 0 or s % i for s, i in zip(shard_shape, inner, strict=False)):
        raise MetadataError(f"shard shape {shard_shape} is not a multiple of the inner chunk shape {inner}")
    location = conf.get("index_location", "end")
    if location not in ("start", "end"):
        raise MetadataError(f"unsupported shard index_location {location!r}")
    index_codecs = conf.get("index_codecs") or []
    crc = any(isinstance(c, dict) and c.get("name") == "crc32c" for c in index_codecs)
    return ShardLayout(math.prod(s // i for s, i in zip(shard_shape, inner, strict=True)), location == "end", crc)


def discover(root: str | os.PathLike[str]) -> tuple[list[ArraySpec], list[Unreadable]]:
    """Finds every array under `root` (the root itself may be one).

    Returns:
        The arrays, and every metadata file that could not be read or understood.
    """
    base = Path(root)
    arrays: list[ArraySpec] = []
    notes: list[Unreadable] = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel = Path(dirpath).relative_to(base).as_posix()
        rel = "" if rel == "." else rel
        spec: ArraySpec | None = None
        for name, parse in ((".zarray", parse_v2), ("zarr.json", parse_v3)):
            if name not in filenames:
                continue
            file = Path(dirpath, name)
            try:
                spec = parse(json.loads(file.read_text(encoding="utf-8")), rel)
            except (OSError, ValueError, AttributeError) as e:
                notes.append(Unreadable(file.relative_to(base).as_posix(), str(e)))
            if spec is not None:
                break
        if spec is not None:
            arrays.append(spec)
            dirnames.clear()  # an array has no child nodes: do not walk its chunks
        else:
            dirnames.sort()
    return arrays, notes
