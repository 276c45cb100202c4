"""An acquisition written with real zarr-python 3 (LocalStore: `.partial` temps, renames, `link` for
implicit groups), in its own process.

Usage: python zarr_writer.py PATH LAYOUT FORMAT TIMEPOINTS INTERVAL [--no-marker]
LAYOUT: plain | sharded | ome | plate | overwrite      FORMAT: 2 | 3
- plain: one array grown by `append` each timepoint (metadata rewritten every time).
- sharded: (format 3) an array with shards of 4 timepoints, written one timepoint at a time
  (each shard rewritten 4 times), with some fill-value planes.
- ome: an OME-Zarr multiscale image (NGFF 0.4 on format 2, 0.5 on format 3): levels s0..s2 written
  level by level, the multiscales attributes written last (as ome-zarr-py does).
- plate: an HCS plate (plate/row/column/field/level) whose wells and fields appear during the run.
- overwrite: write a first dataset, then reopen with mode="w" (the root is removed and recreated)
  and write the final one.
--no-marker: do not write the `complete` marker (the caller writes it, e.g. after reading the tree).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

Format = Literal[2, 3]

Y, X = 32, 32


def frame(t: int) -> np.ndarray:
    return np.random.default_rng(t).integers(1, 1000, size=(Y, X), dtype=np.uint16)


def plain(path: str, fmt: Format, timepoints: int, interval: float) -> None:
    arr = zarr.create_array(path, shape=(0, Y, X), chunks=(1, 16, 16), dtype="uint16", zarr_format=fmt, fill_value=0)
    for t in range(timepoints):
        arr.append(frame(t)[None], axis=0)
        time.sleep(interval)


def sharded(path: str, fmt: Format, timepoints: int, interval: float) -> None:
    arr = zarr.create_array(
        path, shape=(timepoints, Y, X), chunks=(1, 16, 16), shards=(4, 32, 32), dtype="uint16", zarr_format=fmt
    )
    for t in range(timepoints):
        data = frame(t)
        if t % 5 == 3:
            data[:] = 0  # fill value: not written
        arr[t] = data
        time.sleep(interval)


def multiscales(name: str, levels: int, fmt: Format) -> dict[str, Any]:
    datasets = [
        {"path": f"s{i}", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0**i, 2.0**i]}]}
        for i in range(levels)
    ]
    ms = {"name": name, "axes": [{"name": a, "type": "space"} for a in "zyx"], "datasets": datasets}
    if fmt == 2:
        return {"multiscales": [{**ms, "version": "0.4"}]}
    return {"ome": {"version": "0.5", "multiscales": [ms]}}


def image(group: zarr.Group, fmt: Format, timepoints: int, interval: float, name: str) -> None:
    base = np.stack([frame(t) for t in range(timepoints)])
    for level in range(3):
        data = base[:, :: 2**level, :: 2**level]
        arr = group.create_array(f"s{level}", shape=data.shape, chunks=(1, 8, 8), dtype="uint16", fill_value=0)
        for t in range(timepoints):
            arr[t] = data[t]
            time.sleep(interval / 3)
    group.attrs.update(multiscales(name, 3, fmt))


def ome(path: str, fmt: Format, timepoints: int, interval: float) -> None:
    root = zarr.open_group(path, mode="w", zarr_format=fmt)
    image(root, fmt, timepoints, interval, "image")


def plate(path: str, fmt: Format, timepoints: int, interval: float) -> None:
    root = zarr.open_group(path, mode="w", zarr_format=fmt)
    wells = [("A", "1"), ("A", "2"), ("B", "1")]
    meta: dict[str, Any] = {
        "rows": [{"name": "A"}, {"name": "B"}],
        "columns": [{"name": "1"}, {"name": "2"}],
        "wells": [{"path": f"{r}/{c}", "rowIndex": "AB".index(r), "columnIndex": int(c) - 1} for r, c in wells],
    }
    root.attrs.update({"plate": meta} if fmt == 2 else {"ome": {"version": "0.5", "plate": meta}})
    for r, c in wells:
        well = root.require_group(f"{r}/{c}")
        fields = [{"path": "0"}, {"path": "1"}]
        well.attrs.update(
            {"well": {"images": fields}} if fmt == 2 else {"ome": {"version": "0.5", "well": {"images": fields}}}
        )
        for f in ("0", "1"):
            image(well.require_group(f), fmt, max(1, timepoints // 3), interval / 3, f"{r}{c}-{f}")


def overwrite(path: str, fmt: Format, timepoints: int, interval: float) -> None:
    plain(path, fmt, max(1, timepoints // 2), interval)
    root = zarr.open_group(path, mode="w", zarr_format=fmt)  # rmtree of the root, then mkdir
    arr = root.create_array("final", shape=(timepoints, Y, X), chunks=(1, 16, 16), dtype="uint16")
    for t in range(timepoints):
        arr[t] = frame(t + 100)
        time.sleep(interval)


def main() -> None:
    path, layout, timepoints, interval = sys.argv[1], sys.argv[2], int(sys.argv[4]), float(sys.argv[5])
    fmt: Format = 2 if sys.argv[3] == "2" else 3
    {"plain": plain, "sharded": sharded, "ome": ome, "plate": plate, "overwrite": overwrite}[layout](
        path, fmt, timepoints, interval
    )
    if "--no-marker" not in sys.argv:
        Path(path, "complete").touch()


if __name__ == "__main__":
    main()
