"""Targets files: what is accepted, and the one-line error for everything that is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from softcopy.config import ConfigError, load_targets


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "targets.yaml"
    f.write_text(text)
    return f


def test_two_targets_with_overrides_and_defaults(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "targets:\n"
        "  - source: /acq/a.zarr\n    destination: /cl/a.zarr\n"
        "  - source: ~/b.zarr\n    destination: rel/b.zarr\n    nprocs: 2\n    sleep-time: 1\n",
    )
    a, b = load_targets(f, {"nprocs": 4, "wait_for_source": False})
    assert (a.source, a.destination, a.nprocs, a.wait_for_source) == (Path("/acq/a.zarr"), Path("/cl/a.zarr"), 4, False)
    assert b.source == Path("~/b.zarr").expanduser()
    assert b.destination == tmp_path / "rel" / "b.zarr", "relative to the targets file's folder"
    assert (b.nprocs, b.sleep_time) == (2, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets: [", "not valid YAML"),
        ("{}", "expected a mapping with a 'targets' list"),
        ("- a\n- b\n", "expected a mapping with a 'targets' list"),
        ("targets: []", "'targets' is empty"),
        ("targets: /a", "'targets' must be a list"),
        ("targets:\n  - destination: /b\n", "target 1: missing 'source'"),
        ("targets:\n  - source: /a\n", "target 1: missing 'destination'"),
        ("targets:\n  - source: /a\n    destinaton: /b\n", "unknown key 'destinaton' (did you mean 'destination'?)"),
        ("targets:\n  - source: 5\n    destination: /b\n", "source must be a path"),
        ("targets:\n  - source: /a\n    destination: /b\n    nprocs: -1\n", "nprocs must be a whole number >= 1"),
        ("targets:\n  - source: /a\n    destination: /b\n    nprocs: two\n", "nprocs must be int"),
        ("targets:\n  - source: /a\n    destination: /b\n    sleep_time: -2\n", "sleep_time must be a number"),
        ("targets:\n  - source: /a\n    destination: /a/b\n", "inside the source"),
        ("targets:\n  - source: /a/b\n    destination: /a\n", "inside the destination"),
        ("targets:\n  - source: /a\n    destination: /a\n", "the same folder"),
        (
            "targets:\n  - source: /a\n    destination: /c\n  - source: /b\n    destination: /c\n",
            "same destination",
        ),
        ("targets:\n  - source: /a\n    destination: /b\nextra: 1\n", "unknown top-level key 'extra'"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_targets(f)
    assert message in str(e.value)
    assert str(f) in str(e.value)
    assert "\n" not in str(e.value)


def test_source_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    f = write(tmp_path, "targets:\n  - source: file\n    destination: out\n")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_targets(f)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: b: c", "not valid YAML (line 1, column 5): mapping values are not allowed here"),
        ("targets:\n  - /a\n", "target 1: expected a mapping with 'source' and 'destination'"),
        ("targets:\n  - source: /a\n    destination: 5\n", "target 1: destination must be a path (a string), got 5"),
        (
            "targets:\n  - source: /a\n    destination: /b\n    zzz: 1\n",
            "target 1: unknown key 'zzz' (allowed: source, destination, nprocs, sleep_time,",
        ),
    ],
)
def test_each_bad_file_says_where(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_targets(f)
    assert str(e.value).startswith(f"{f}: {message}"), str(e.value)


def test_a_yaml_error_without_a_position_says_its_first_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_text: str) -> None:
        raise yaml.YAMLError("the reader gave up\nand said more")

    monkeypatch.setattr(yaml, "safe_load", broken)
    f = write(tmp_path, "targets: []")
    with pytest.raises(ConfigError) as e:
        load_targets(f)
    assert str(e.value) == f"{f}: not valid YAML: the reader gave up"


@pytest.mark.parametrize("kind", ["missing", "folder", "not utf-8"])
def test_a_targets_file_that_cannot_be_read_is_one_line(tmp_path: Path, kind: str) -> None:
    f = tmp_path / "targets.yaml"
    if kind == "folder":
        f.mkdir()
    elif kind == "not utf-8":
        f.write_bytes(b"targets: \xff\n")
    with pytest.raises(ConfigError) as e:
        load_targets(f)
    said = "no such targets file" if kind == "missing" else "cannot read: "
    assert str(e.value).startswith(f"{f}: {said}") and "\n" not in str(e.value), str(e.value)


def test_excludes_of_the_command_line_are_added_to_each_targets_own(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "targets:\n  - source: /a\n    destination: /b\n    exclude: '*.tmp'\n  - source: /c\n    destination: /d\n",
    )
    own, none = load_targets(f, {"exclude": ("*.log",)})
    assert (own.exclude, none.exclude) == (("*.log", "*.tmp"), ("*.log",))
    (alone,) = load_targets(write(tmp_path, "targets:\n  - source: /a\n    destination: /b\n    exclude: [x]\n"))
    assert alone.exclude == ("x",)
