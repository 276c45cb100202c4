"""`softcopy --demo`: a simulated acquisition written into a temporary folder while softcopy copies it
live, with the same display and verification as a real run. The writer is tensorstore when it is
installed, otherwise a small built-in writer that follows tensorstore's protocol exactly: each chunk
is written to `K.__lock` and renamed onto `K`, metadata first, the `complete` marker last."""

from __future__ import annotations

import filecmp
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from softcopy.config import make_target
from softcopy.session import run_copier

SHAPE = (8, 256, 256)  # z, y, x per timepoint; one chunk per z-plane: 128 KiB of uint16


def _plane(t: int, z: int) -> bytes:
    # Deterministic, compressible-looking but non-constant data, without numpy.
    row = bytes(((t * 7 + z * 13 + x) & 0xFF) for x in range(SHAPE[2] * 2))
    return row * SHAPE[1]


def write_builtin(root: Path, timepoints: int, interval: float) -> None:
    """A Zarr v2 array written with tensorstore's lock-and-rename protocol."""
    root.mkdir(parents=True)

    def put(key: str, data: bytes) -> None:
        final = root / key
        lock = final.with_name(final.name + ".__lock")
        lock.write_bytes(data)
        os.replace(lock, final)

    meta = {
        "zarr_format": 2,
        "shape": [timepoints, *SHAPE],
        "chunks": [1, 1, SHAPE[1], SHAPE[2]],
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "filters": None,
        "order": "C",
        "dimension_separator": ".",
    }
    put(".zarray", json.dumps(meta, indent=2).encode())
    for t in range(timepoints):
        for z in range(SHAPE[0]):
            put(f"{t}.{z}.0.0", _plane(t, z))
        time.sleep(interval)


def write_tensorstore(root: Path, timepoints: int, interval: float) -> None:
    import numpy as np
    import tensorstore as ts

    arr = ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root)},
            "metadata": {"chunks": [1, 1, SHAPE[1], SHAPE[2]], "compressor": None, "dimension_separator": "."},
        },
        create=True,
        dtype=ts.uint16,
        shape=[timepoints, *SHAPE],
    ).result()
    for t in range(timepoints):
        plane = np.frombuffer(b"".join(_plane(t, z) for z in range(SHAPE[0])), dtype="<u2").reshape(SHAPE)
        arr[t].write(plane).result()
        time.sleep(interval)


def run_demo(console: Console, options: dict[str, Any], timepoints: int = 30, interval: float = 0.2) -> int:
    try:
        import tensorstore  # noqa: F401

        writer, name = write_tensorstore, "tensorstore"
    except ImportError:
        writer, name = write_builtin, "the built-in tensorstore-style writer"
    with tempfile.TemporaryDirectory(prefix="softcopy-demo-") as tmp:
        src, dst = Path(tmp, "acquisition", "demo.zarr"), Path(tmp, "cluster", "demo.zarr")
        src.parent.mkdir()
        dst.parent.mkdir()
        total = timepoints * SHAPE[0] * SHAPE[1] * SHAPE[2] * 2
        console.print(
            f"softcopy demo: {name} writes {timepoints} timepoints ({total >> 20} MiB) into {src}\n"
            f"while softcopy copies it live to {dst}. The copy ends when the writer drops the 'complete' marker."
        )

        def acquire() -> None:
            writer(src, timepoints, interval)
            (src / "complete").touch()

        thread = threading.Thread(target=acquire, name="demo-writer", daemon=True)
        thread.start()
        target = make_target(src, dst, options)
        code = run_copier([target], console, verbose=False, log_every=1.0, live=console.is_terminal)
        thread.join()
        if code == 0:
            same = _identical(src, dst)
            console.print(f"byte-for-byte comparison of all files: {'identical' if same else 'DIFFERENT'}")
            code = 0 if same else 1
        return code


def _identical(a: Path, b: Path) -> bool:
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and not p.name.endswith(".__lock")}
    # softcopy's own state at the destination root (its claim, the move journal) is not a copy.
    other = {
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and not p.relative_to(b).parts[0].startswith(".softcopy")
    }
    return names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
