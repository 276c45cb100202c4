"""Property: whatever interleaving of writer operations happens while softcopy runs (or before it
starts), once the marker appears the destination equals the source, file for file, byte for byte,
with no lock, temp or partial file in it."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import softcopy
from conftest import tree, wait_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

KEYS = ["0.0", "c/0/0", "c/1/0", "a/b/c/0", ".zattrs"]
KINDS = ["rename", "rename_none", "zarr_python", "link", "in_place", "delete", "stale_lock", "stale_partial", "sync"]

op = st.tuples(st.sampled_from(KINDS), st.sampled_from(KEYS), st.binary(min_size=0, max_size=64))


def apply(root: Path, kind: str, key: str, data: bytes) -> None:
    """One operation exactly as the writers in writers.md perform it."""
    k = root / key
    k.parent.mkdir(parents=True, exist_ok=True)
    if kind == "rename":  # tensorstore os/lockfile: K.__lock, then rename onto K
        lock = k.with_name(k.name + ".__lock")
        lock.write_bytes(data)
        os.replace(lock, k)
    elif kind == "rename_none":  # tensorstore none: K_<16 hex>.__lock
        lock = k.with_name(f"{k.name}_{secrets.token_hex(8)}.__lock")
        lock.write_bytes(data)
        os.replace(lock, k)
    elif kind == "zarr_python":  # zarr-python 3: <K minus last suffix>.<32 hex>.partial
        tmp = k.with_suffix(f".{secrets.token_hex(16)}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, k)
    elif kind == "link":  # zarr-python set_if_not_exists: link + unlink
        tmp = k.with_suffix(f".{secrets.token_hex(16)}.partial")
        tmp.write_bytes(data)
        if not k.exists():
            os.link(tmp, k)
        tmp.unlink()
    elif kind == "in_place":  # tensorstore non_atomic / side files
        with open(k, "wb") as f:
            f.write(data)
    elif kind == "delete":  # fill value: the chunk is unlinked
        k.unlink(missing_ok=True)
    elif kind == "stale_lock":  # a writer killed mid-write
        k.with_name(k.name + ".__lock").write_bytes(data)
    elif kind == "stale_partial":
        k.with_suffix(f".{secrets.token_hex(16)}.partial").write_bytes(data)


S = "sync"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The orderings that matter most are pinned, so they are tried on every run, not only by chance:
@example(ops=[("rename", "0.0", b"v1"), (S, "", b""), ("delete", "0.0", b"")], start_at=0)  # copied, then fill
@example(ops=[("rename", "c/0/0", b"v1"), (S, "", b""), ("rename", "c/0/0", b"v2")], start_at=0)  # rewritten
@example(ops=[("in_place", ".zattrs", b"a"), (S, "", b""), ("in_place", ".zattrs", b"ab")], start_at=0)
@example(ops=[("rename", "a/b/c/0", b"v1"), ("stale_lock", "a/b/c/0", b"zz")], start_at=1)  # new dirs, stale lock
@given(ops=st.lists(op, min_size=1, max_size=30), start_at=st.integers(0, 30))
def test_any_interleaving_ends_with_destination_equal_to_source(
    ops: list[tuple[str, str, bytes]], start_at: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        src.mkdir()
        copier = softcopy.Copier([softcopy.Target(src, dst, nprocs=2)])
        for i, (kind, key, data) in enumerate(ops):
            if i == start_at:
                copier.start()
            if kind == "sync":
                # Let softcopy catch up before the next operation, so later operations hit files
                # that were already copied (rewrites and deletions of copied files).
                if i >= start_at:
                    wait_for(lambda: tree(dst) == tree(src) if dst.exists() else not tree(src), 10, "catch-up")
                continue
            apply(src, kind, key, data)
        if start_at >= len(ops):
            copier.start()
        (src / "complete").touch()
        report = copier.wait(30)
        assert report is not None, "softcopy did not finish"
        assert report.ok, report
        assert report.targets[0].found_at_end == 0, f"the watch missed events: {report}"
        assert tree(dst) == tree(src)
        leftovers = [p.name for p in dst.rglob("*") if p.name.endswith((".__lock", ".partial", ".softcopy-partial"))]
        assert leftovers == []
