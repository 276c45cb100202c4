"""A streaming acquisition written with real acquire-zarr: shards written in place and kept open
for many frames, the index (with CRC32C) written last, metadata in place and after the data.

Usage: python aqz_writer.py PATH LAYOUT FRAMES INTERVAL [--kill-after N]
LAYOUT: plain | multiscale
--kill-after N: SIGKILL this process after N frames (a crashed acquisition: index-less shards,
possibly no metadata); the marker is then never written.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import acquire_zarr as aqz
import numpy as np

Y, X = 64, 64


def main() -> None:
    path, layout, frames, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    kill_after = int(sys.argv[sys.argv.index("--kill-after") + 1]) if "--kill-after" in sys.argv else None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    dims = [
        aqz.Dimension(name="t", kind=aqz.DimensionType.TIME, array_size_px=0, chunk_size_px=2, shard_size_chunks=2),
        aqz.Dimension(name="y", kind=aqz.DimensionType.SPACE, array_size_px=Y, chunk_size_px=32, shard_size_chunks=1),
        aqz.Dimension(name="x", kind=aqz.DimensionType.SPACE, array_size_px=X, chunk_size_px=32, shard_size_chunks=2),
    ]
    array = aqz.ArraySettings(output_key="", dimensions=dims, data_type=np.uint16)
    if layout == "multiscale":
        array.downsampling_method = aqz.DownsamplingMethod.MEAN
    stream = aqz.ZarrStream(aqz.StreamSettings(store_path=path, arrays=[array], overwrite=True))
    rng = np.random.default_rng(0)
    for t in range(frames):
        stream.append(rng.integers(0, 4000, size=(Y, X), dtype=np.uint16))
        if kill_after is not None and t + 1 == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(interval)
    stream.close()
    Path(path, "complete").touch()


if __name__ == "__main__":
    main()
