"""Zarr metadata → ArraySpec, checked against what real tensorstore writes (not against our own idea)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import softcopy
from conftest import WRITER, conclude
from hypothesis import given, settings
from hypothesis import strategies as st
from softcopy.config import EngineConfig, Target
from softcopy.zarr import ArraySpec, MetadataError, discover, parse_v2, parse_v3


@pytest.mark.parametrize("layout", ["v2dot", "v2slash", "zarr3", "zarr3sharded"])
def test_expected_keys_match_what_tensorstore_writes(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "a.zarr"
    subprocess.run([sys.executable, str(WRITER), str(root), layout, "6", "0"], check=True)
    [spec], notes = discover(root)
    assert notes == []
    keys = {spec.key(idx) for idx in _grid(spec)}
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    written -= {".zarray", "zarr.json", "complete"}
    assert written, "the writer wrote chunks"
    assert written <= keys, f"keys outside the expected set: {sorted(written - keys)[:5]}"
    assert len(keys) == spec.expected_files
    assert spec.sharded == (layout == "zarr3sharded")


def _grid(spec: ArraySpec) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(-(-s // g)) for s, g in zip(spec.shape, spec.grid, strict=True)))


def test_v2_separator_defaults_to_dot() -> None:
    spec = parse_v2({"shape": [4, 4], "chunks": [2, 2]}, "a")
    assert spec.separator == "." and spec.key((1, 0)) == "1.0"


def test_v3_encodings_and_groups() -> None:
    base = {
        "node_type": "array",
        "shape": [5],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
    }
    d = parse_v3(base, "")
    assert d is not None and d.key((2,)) == "c/2" and d.expected_files == 3
    v2 = parse_v3({**base, "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "/"}}}, "")
    assert v2 is not None and v2.key((2,)) == "2"
    assert parse_v3({"node_type": "group"}, "") is None
    scalar = parse_v3(
        {**base, "shape": [], "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": []}}}, ""
    )
    assert scalar is not None and scalar.key(()) == "c" and scalar.expected_files == 1


@pytest.mark.parametrize(
    "meta",
    [
        [],
        {"shape": "x", "chunks": [1]},
        {"shape": [2], "chunks": [1, 1]},
        {"shape": [2], "chunks": [1], "dimension_separator": "-"},
    ],
)
def test_bad_v2_metadata_is_a_metadata_error(meta: object) -> None:
    with pytest.raises(MetadataError):
        parse_v2(meta, "a")


def test_unreadable_metadata_is_a_note_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ".zarray").write_text("{not json")
    arrays, notes = discover(tmp_path)
    assert arrays == [] and [n.path for n in notes] == ["bad/.zarray"] and "bad/.zarray" in str(notes[0])


def test_discovery_finds_nested_arrays_without_walking_chunks(tmp_path: Path) -> None:
    meta = (
        '{"node_type": "array", "shape": [4], "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}}}'
    )
    for level in ("img/s0", "img/s1"):
        (tmp_path / level / "c").mkdir(parents=True)
        (tmp_path / level / "zarr.json").write_text(meta)
    (tmp_path / "img" / "zarr.json").write_text('{"node_type": "group"}')
    arrays, _ = discover(tmp_path)
    assert sorted(a.path for a in arrays) == ["img/s0", "img/s1"]


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(0, 50), min_size=0, max_size=4).flatmap(
        lambda s: st.tuples(st.just(s), st.lists(st.integers(1, 20), min_size=len(s), max_size=len(s)))
    ),
    v3=st.booleans(),
    sep=st.sampled_from([".", "/"]),
    data=st.data(),
)
def test_keys_written_by_python_are_counted_by_the_native_verifier(
    shape: tuple[list[int], list[int]], v3: bool, sep: str, data: st.DataObject
) -> None:
    # Python names chunk files from metadata; Rust's verify() parses the names back against the grid.
    # Both must agree on every encoding, or fill-value accounting is wrong.
    s, g = shape
    spec = ArraySpec("arr", 3 if v3 else 2, tuple(s), tuple(g), "c" if v3 else None, sep)
    cells = list(itertools.islice(_grid(spec), 200))
    chosen = data.draw(st.lists(st.sampled_from(cells), unique=True, max_size=10)) if cells else []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        arr = src / "arr"
        arr.mkdir(parents=True)
        if v3:
            meta = {
                "zarr_format": 3,
                "node_type": "array",
                "shape": s,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": g}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": sep}},
            }
            (arr / "zarr.json").write_text(json.dumps(meta))
        else:
            meta = {"zarr_format": 2, "shape": s, "chunks": g, "dimension_separator": sep}
            (arr / ".zarray").write_text(json.dumps(meta))
        for idx in chosen:
            key = arr / spec.key(idx)
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(b"x")
        report = softcopy.copy(src, dst, once=True)
        t = report.targets[0]
        assert report.ok and t.arrays == 1
        assert t.expected_chunks == spec.expected_files
        assert t.present_chunks == len(chosen)


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    """A random array layout, as tensorstore spec: shape, chunks, maybe shards, format, key encoding."""
    ndim = draw(st.integers(1, 3))
    chunks = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    shape = [draw(st.integers(1, 3 * c + 2)) for c in chunks]
    sep = draw(st.sampled_from([".", "/"]))
    if draw(st.booleans()):
        return {
            "driver": "zarr",
            "metadata": {"shape": shape, "chunks": chunks, "dimension_separator": sep, "compressor": None},
        }
    meta: dict[str, Any] = {"shape": shape, "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}}}
    meta["chunk_key_encoding"] = {"name": draw(st.sampled_from(["default", "v2"])), "configuration": {"separator": sep}}
    if draw(st.booleans()):
        # Sharded: the regular grid is the shard grid; inner chunks divide it.
        inner = [draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0])) for c in chunks]
        index_codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
        if draw(st.booleans()):
            index_codecs.append({"name": "crc32c"})
        meta["codecs"] = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": inner,
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_codecs": index_codecs,
                    "index_location": draw(st.sampled_from(["start", "end"])),
                },
            }
        ]
    return {"driver": "zarr3", "metadata": meta}


@settings(max_examples=40, deadline=None)
@given(layout=layouts())
def test_expected_keys_equal_the_files_tensorstore_writes_for_a_full_array(layout: dict[str, Any]) -> None:
    import numpy as np
    import tensorstore as ts

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "a.zarr")
        arr = ts.open(
            {**layout, "kvstore": {"driver": "file", "path": str(root)}}, create=True, dtype=ts.uint8
        ).result()
        arr.write(np.full(arr.shape, 7, dtype=np.uint8)).result()  # no fill value anywhere: every file exists
        [spec], notes = discover(root)
        assert notes == []
        written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {".zarray", "zarr.json"}
        assert written == {spec.key(i) for i in _grid(spec)}
        # tensorstore may choose sharding itself when no codecs are given: compare with what it wrote.
        written_meta = (root / "zarr.json").read_text() if layout["driver"] == "zarr3" else ""
        assert spec.sharded == ("sharding_indexed" in written_meta)
        # And the native verifier agrees every shard tensorstore wrote is whole.
        report = softcopy.copy(root, Path(tmp, "copy.zarr"), once=True)
        t = report.targets[0]
        assert report.ok and t.present_chunks == len(written)
        assert not [n for n in t.notes if "not whole" in n], t.notes


def test_a_shard_damaged_at_the_destination_fails_verification(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.zarr", tmp_path / "b.zarr"
    subprocess.run([sys.executable, str(WRITER), str(src), "zarr3sharded", "4", "0"], check=True)
    shard: list[Path] = []

    def damage() -> None:
        # Between the drain and the verification: same size, same mtime, only the CRC32C can tell.
        shard.append(next(p for p in dst.rglob("*") if p.is_file() and p.parent != dst and p.name != "zarr.json"))
        st = shard[0].stat()
        data = bytearray(shard[0].read_bytes())
        data[-6] ^= 0xFF
        shard[0].write_bytes(bytes(data))
        os.utime(shard[0], ns=(st.st_atime_ns, st.st_mtime_ns))

    v = conclude(softcopy._softcopy.Engine(EngineConfig(Target(src, dst, once=True))), before=damage)
    assert not v.verified
    assert [p.as_posix() for p, _ in v.bad_shards] == [shard[0].relative_to(dst).as_posix()]
    assert "CRC32C" in v.bad_shards[0][1]
    assert not (dst / "complete").exists()


V3 = {
    "node_type": "array",
    "shape": [6, 4],
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, 2]}},
}


def sharded(**conf: Any) -> dict[str, Any]:
    return {**V3, "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [1, 1], **conf}}]}


@pytest.mark.parametrize(
    ("meta", "layout"),
    [
        (sharded(), (6, True, False)),
        (sharded(index_location="start", chunk_shape=[3, 1]), (2, False, False)),
        (sharded(index_codecs=[{"name": "bytes"}, {"name": "crc32c"}]), (6, True, True)),
        (sharded(index_codecs=[{"name": "bytes"}, "crc32c"]), (6, True, False)),
    ],
)
def test_a_shard_keeps_its_index_where_its_metadata_says(meta: dict[str, Any], layout: tuple[int, bool, bool]) -> None:
    spec = parse_v3(meta, "a")
    assert spec is not None and spec.shard is not None
    assert (spec.shard.chunks_per_shard, spec.shard.index_at_end, spec.shard.crc32c) == layout
    assert (spec.path, spec.shape, spec.grid, spec.prefix, spec.separator) == ("a", (6, 4), (3, 2), "c", "/")
    assert spec.expected_files == 4


@pytest.mark.parametrize(
    ("meta", "said"),
    [
        ([], "not a JSON object"),
        ({**V3, "shape": [6, True]}, "shape must be a list of non-negative integers, got [6, True]"),
        ({**V3, "shape": [6, -1]}, "shape must be a list of non-negative integers, got [6, -1]"),
        ({**V3, "chunk_grid": {"name": "rectilinear"}}, "unsupported chunk_grid 'rectilinear'"),
        ({**V3, "chunk_grid": None}, "unsupported chunk_grid None"),
        ({**V3, "chunk_grid": {"name": "regular"}}, "chunk_shape must be a list of non-negative integers, got None"),
        ({**V3, "shape": [6]}, "shape (6,) and chunk_shape (3, 2) differ in length"),
        ({**V3, "chunk_key_encoding": {"name": "custom"}}, "unsupported chunk_key_encoding 'custom'"),
        (
            {**V3, "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "-"}}},
            "chunk key separator must be '.' or '/', got '-'",
        ),
        (sharded(chunk_shape=[2, 2]), "shard shape (3, 2) is not a multiple of the inner chunk shape (2, 2)"),
        (sharded(chunk_shape=[0, 1]), "shard shape (3, 2) is not a multiple of the inner chunk shape (0, 1)"),
        (sharded(chunk_shape=[1]), "shard shape (3, 2) is not a multiple of the inner chunk shape (1,)"),
        (sharded(chunk_shape=None), "sharding chunk_shape must be a list of non-negative integers, got None"),
        (sharded(index_location="middle"), "unsupported shard index_location 'middle'"),
    ],
)
def test_v3_metadata_no_array_can_have_says_why(meta: object, said: str) -> None:
    with pytest.raises(MetadataError) as e:
        parse_v3(meta, "a")
    assert str(e.value) == said


@pytest.mark.parametrize(
    ("meta", "said"),
    [
        ({"shape": [2], "chunks": [1, 1]}, "shape (2,) and chunks (1, 1) differ in length"),
        ({"shape": [2], "chunks": [1], "dimension_separator": "-"}, "dimension_separator must be '.' or '/', got '-'"),
        ({"shape": [2], "chunks": "x"}, "chunks must be a list of non-negative integers, got 'x'"),
        ({"shape": "x", "chunks": [1]}, "shape must be a list of non-negative integers, got 'x'"),
        ([], "not a JSON object"),
    ],
)
def test_v2_metadata_no_array_can_have_says_why(meta: object, said: str) -> None:
    with pytest.raises(MetadataError) as e:
        parse_v2(meta, "a")
    assert str(e.value) == said


def test_v2_and_v3_keys_and_counts() -> None:
    v2 = parse_v2({"shape": [5, 0], "chunks": [2, 3], "dimension_separator": None}, "a/b")
    assert (v2.path, v2.zarr_format, v2.prefix, v2.separator, v2.expected_files) == ("a/b", 2, None, ".", 0)
    assert v2.key((2, 0)) == "2.0" and v2.key(()) == "0" and not v2.sharded
    assert parse_v2({"shape": [5], "chunks": [0]}, "").expected_files == 0
    v3 = parse_v3({**V3, "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}}}, "")
    assert v3 is not None and (v3.zarr_format, v3.key((1, 1))) == (3, "c.1.1")
    plain = parse_v3(V3, "")
    assert plain is not None and plain.key((1, 1)) == "c/1/1" and plain.shard is None
    v2_keys = parse_v3({**V3, "chunk_key_encoding": {"name": "v2"}}, "")
    assert v2_keys is not None and (v2_keys.prefix, v2_keys.key((1, 1))) == (None, "1.1")


def test_discovery_of_a_root_array_and_of_metadata_that_cannot_be_understood(tmp_path: Path) -> None:
    (tmp_path / "zarr.json").write_text(json.dumps(V3))
    [root], notes = discover(tmp_path)
    assert root.path == "" and notes == []
    other = tmp_path / "other"
    for name, text in (("b", '{"node_type": "array", "shape": [1], "chunk_grid": "regular"}'), ("a", '{"shape": [1]}')):
        (other / name).mkdir(parents=True)
        (other / name / ("zarr.json" if name == "b" else ".zarray")).write_text(text)
    (other / "c" / "d").mkdir(parents=True)
    (other / "c" / "d" / ".zarray").write_text('{"shape": [4], "chunks": [2]}')
    arrays, notes = discover(other)
    assert [a.path for a in arrays] == ["c/d"]
    assert [str(n) for n in notes] == [
        "a/.zarray: chunks must be a list of non-negative integers, got None",
        "b/zarr.json: 'str' object has no attribute 'get'",
    ]


def test_a_folder_with_both_metadata_is_the_array_that_one_of_them_describes(tmp_path: Path) -> None:
    # Unreadable v2 metadata beside valid v3 metadata: the v3 array is found, the v2 file is a note.
    (tmp_path / ".zarray").write_text("{not json")
    (tmp_path / "zarr.json").write_text(json.dumps(V3))
    arrays, notes = discover(tmp_path)
    assert [a.zarr_format for a in arrays] == [3] and [n.path for n in notes] == [".zarray"]
