"""A simulated acquisition written with real tensorstore, in its own process, as a microscope would:
timepoint by timepoint, each timepoint in two half-chunk writes (so every chunk is replaced twice),
some planes equal to the fill value (never written; or written and then unlinked), and the
`complete` marker at the end.

Usage: python ts_writer.py PATH LAYOUT TIMEPOINTS INTERVAL [options]
LAYOUT: v2dot | v2slash | zarr3 | zarr3sharded
Options:
  --no-marker         do not write the `complete` marker
  --locking MODE      file_io_locking mode: os (default) | lockfile | none | non_atomic
  --no-sync           file_io_sync false (no fsync before the rename)
  --grow              start with one timepoint and resize the array before each new one
  --shrink            at the end, shrink the array to half its timepoints (chunks beyond are deleted)
  --hold FILE         before the marker, wait (up to 5 minutes) until FILE exists: a test decides when
                      the acquisition ends, so "arrived while the writer was still writing" is no race
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

Z, Y, X = 4, 64, 64


def spec(path: str, layout: str, timepoints: int) -> dict[str, Any]:
    kv = {"driver": "file", "path": path}
    if layout.startswith("v2"):
        sep = "." if layout == "v2dot" else "/"
        return {
            "driver": "zarr",
            "kvstore": kv,
            "metadata": {
                "shape": [timepoints, Z, Y, X],
                "chunks": [1, 2, 32, 32],
                "dtype": "<u2",
                "compressor": None,
                "fill_value": 0,
                "dimension_separator": sep,
            },
        }
    metadata: dict[str, object] = {
        "shape": [timepoints, Z, Y, X],
        "data_type": "uint16",
        "fill_value": 0,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 2, 32, 32]}},
        "chunk_key_encoding": {"name": "default"},
    }
    if layout == "zarr3sharded":
        metadata["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": [2, 4, 32, 32]}}
        metadata["codecs"] = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [1, 2, 32, 32],
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                },
            }
        ]
    return {"driver": "zarr3", "kvstore": kv, "metadata": metadata}


def option(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main() -> None:
    path, layout, timepoints, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    marker = "--no-marker" not in sys.argv
    grow = "--grow" in sys.argv
    s = spec(path, layout, 1 if grow else timepoints)
    s["context"] = {"file_io_locking": {"mode": option("--locking", "os")}, "file_io_sync": "--no-sync" not in sys.argv}
    arr = ts.open(s, create=True).result()
    rng = np.random.default_rng(0)
    for t in range(timepoints):
        if grow and t > 0:
            arr = arr.resize(exclusive_max=[t + 1, Z, Y, X]).result()
        data = rng.integers(1, 4000, size=(Z, Y, X), dtype=np.uint16)
        if t % 3 == 1:
            data[2:] = 0  # fill value: those chunks are never written
        arr[t, :, :, : X // 2].write(data[:, :, : X // 2]).result()
        arr[t, :, :, X // 2 :].write(data[:, :, X // 2 :]).result()
        if t % 4 == 2:
            arr[t, 0:2].write(np.zeros((2, Y, X), dtype=np.uint16)).result()  # existing chunks become fill: unlinked
        time.sleep(interval)
    if "--shrink" in sys.argv:
        arr = arr.resize(exclusive_max=[timepoints // 2, Z, Y, X], resize_metadata_only=False).result()
    hold = option("--hold", "")
    deadline = time.monotonic() + 300
    while hold and not Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if marker:
        Path(path, "complete").touch()


if __name__ == "__main__":
    main()
