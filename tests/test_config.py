"""Targets files: what is accepted, and the one-line error for everything that is not."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from softcopy.config import (
    ConfigError,
    Target,
    check_destination_made,
    check_pair,
    check_targets,
    destination_of,
    load_targets,
    make_target,
    parse_rate,
)


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


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"nprocs": 0}, "nprocs must be a whole number >= 1, got 0"),
        ({"nprocs": True}, "nprocs must be int, got True"),
        ({"nprocs": 2.5}, "nprocs must be int, got 2.5"),
        ({"settle_time": -0.5}, "settle_time must be a number of seconds >= 0, got -0.5"),
        ({"give_up_after": float("nan")}, "give_up_after must be a number of seconds >= 0, got nan"),
        ({"sleep_time": False}, "sleep_time must be float, got False"),
        ({"sleep_time": "1"}, "sleep_time must be float, got '1'"),
        ({"once": 1}, "once must be bool, got 1"),
        ({"exclude": ["*.log", ""]}, "exclude must be a list of globs (non-empty strings), got ('*.log', '')"),
        ({"exclude": ["/"]}, "exclude must be a list of globs (non-empty strings), got ('/',)"),
        ({"exclude": 5}, "exclude must be list, got 5"),
        ({"marker": ""}, "marker must be a plain file name, got ''"),
        ({"marker": "a/b"}, "marker must be a plain file name, got 'a/b'"),
        ({"marker": "a\\b"}, "marker must be a plain file name, got 'a\\\\b'"),
        ({"marker": ".."}, "marker must be a plain file name, got '..'"),
        ({"marker": "."}, "marker must be a plain file name, got '.'"),
        ({"max_rate": "fast"}, "max_rate: not a rate: 'fast' (use e.g. 200M for 200 MiB/s)"),
    ],
)
def test_an_option_no_run_could_use_is_one_line_naming_it(
    tmp_path: Path, options: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigError) as e:
        make_target(tmp_path / "a", tmp_path / "b", options, "targets.yaml: target 1: ")
    assert str(e.value) == f"targets.yaml: target 1: {said}"


def test_options_are_taken_as_the_types_they_stand_for(tmp_path: Path) -> None:
    t = make_target(
        tmp_path / "a",
        tmp_path / "b",
        {"nprocs": 3.0, "sleep_time": 2, "give_up_after": 0, "settle_time": None, "max_rate": "1K", "exclude": "*.log"},
    )
    assert (t.nprocs, t.sleep_time, t.give_up_after, t.settle_time, t.max_rate, t.exclude) == (
        3,
        2.0,
        0.0,
        0.05,
        1024,
        ("*.log",),
    )
    assert isinstance(t.nprocs, int) and isinstance(t.sleep_time, float) and isinstance(t.give_up_after, float)
    assert make_target(tmp_path / "a", tmp_path / "b", {"nprocs": 1, "marker": "done.txt"}).nprocs == 1


def test_a_target_made_in_code_keeps_its_excludes_as_a_tuple_and_refuses_one_string(tmp_path: Path) -> None:
    assert Target(tmp_path / "a", tmp_path / "b", exclude=["*.log"]).exclude == ("*.log",)
    with pytest.raises(ConfigError, match="exclude must be a list of globs"):
        Target(tmp_path / "a", tmp_path / "b", exclude="*.log")
    with pytest.raises(ConfigError, match="^nprocs must be a whole number >= 1, got 0$"):
        Target(tmp_path / "a", tmp_path / "b", nprocs=0)


@pytest.mark.parametrize(
    ("source", "destination", "said"),
    [
        ("a", "a", "source and destination are the same folder: {t}/a"),
        ("a", "a/b", "destination {t}/a/b is inside the source {t}/a"),
        ("a/b", "a", "source {t}/a/b is inside the destination {t}/a"),
        ("file", "b", "source {t}/file is a file, not a folder"),
        ("a", "file", "destination {t}/file is a file, not a folder"),
        ("acq/*/x*.zarr", "raw", "a source pattern may only have its glob in the last component: {t}/acq/*/x*.zarr"),
        (
            "acq/*.zarr",
            "acq/raw",
            "destination {t}/acq/raw and the acquisitions folder {t}/acq must not contain each other",
        ),
        ("acq/*.zarr", "", "destination {t} and the acquisitions folder {t}/acq must not contain each other"),
        ("acq/*.zarr", "file", "destination {t}/file is a file, not a folder"),
    ],
)
def test_a_source_and_destination_that_cannot_be_a_pair_are_refused(
    tmp_path: Path, source: str, destination: str, said: str
) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as e:
        check_pair(tmp_path / source, tmp_path / destination, "t: ")
    assert str(e.value) == "t: " + said.format(t=tmp_path)


def test_a_pattern_and_its_destination_beside_it_are_a_pair(tmp_path: Path) -> None:
    check_pair(tmp_path / "acq" / "*.zarr", tmp_path / "raw")
    check_pair(tmp_path / "a", tmp_path / "ab")


@pytest.mark.parametrize(
    ("entries", "said"),
    [
        ([("a", "c", False), ("b", "c", False)], "two targets have the same destination {t}/c"),
        ([("a", "c", False), ("b", "a/x", False)], "destination {t}/a/x is inside the source {t}/a"),
        ([("a", "c", False), ("b", "c/x", False)], "destination {t}/c/x is inside destination {t}/c"),
        ([("a", "c", True), ("a/sub", "d", False)], "source {t}/a/sub is shared with the target of {t}/a, which frees"),
        ([("a/sub", "c", False), ("a", "d", True)], "source {t}/a/sub is shared with the target of {t}/a, which frees"),
        ([("acq/*.zarr", "c", True), ("acq/x.zarr", "d", False)], "source {t}/acq/x.zarr is shared with the target of"),
    ],
)
def test_targets_that_would_write_into_each_other_are_refused(
    tmp_path: Path, entries: list[tuple[str, str, bool]], said: str
) -> None:
    targets = [Target(tmp_path / s, tmp_path / d, delete_source=free) for s, d, free in entries]
    with pytest.raises(ConfigError) as e:
        check_targets(targets, "targets.yaml")
    assert str(e.value).startswith("targets.yaml: " + said.format(t=tmp_path)), str(e.value)


def test_targets_apart_are_taken(tmp_path: Path) -> None:
    check_targets(
        [
            Target(tmp_path / "a", tmp_path / "c", delete_source=True),
            Target(tmp_path / "b", tmp_path / "d", delete_source=True),
            Target(tmp_path / "acq" / "*.zarr", tmp_path / "e"),
        ],
        "targets.yaml",
    )


def test_only_the_destination_folder_itself_is_ever_made(tmp_path: Path) -> None:
    check_destination_made(Target(tmp_path / "a", tmp_path / "new"))
    check_destination_made(Target(tmp_path / "a", tmp_path))
    check_destination_made(Target(tmp_path / "acq" / "*.zarr", tmp_path))
    with pytest.raises(ConfigError) as e:
        check_destination_made(Target(tmp_path / "a", tmp_path / "unmounted" / "raw"))
    assert str(e.value) == (
        f"destination {tmp_path}/unmounted/raw: its folder {tmp_path}/unmounted does not exist "
        "(softcopy makes only the last one)"
    )
    with pytest.raises(ConfigError) as e:
        check_destination_made(Target(tmp_path / "acq" / "*.zarr", tmp_path / "raw"))
    assert str(e.value) == f"destination {tmp_path}/raw does not exist: make it (or mount the share) first"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (0.5, "a rate must be at least 1 byte per second, got 0.5"),
        ("1e300T", "a rate must be a finite number of bytes per second, got '1e300T'"),
        (1 << 64, f"a rate must be below 16 EiB per second, got {1 << 64}"),
        (1.5 * (1 << 64), f"a rate must be below 16 EiB per second, got {1.5 * (1 << 64)!r}"),
        (True, "not a rate: True"),
    ],
)
def test_a_rate_out_of_bounds_says_its_bound(text: object, said: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_rate(text)
    assert str(e.value) == said


def test_the_rates_at_the_bounds_are_taken() -> None:
    assert (parse_rate(1), parse_rate("1"), parse_rate(1 << 63)) == (1, 1, 1 << 63)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"nprocs": True}, "nprocs must be a whole number >= 1, got True"),
        ({"sleep_time": True}, "sleep_time must be a number of seconds >= 0, got True"),
        ({"exclude": ["**x"]}, "exclude must not match Zarr metadata (.zarray): it is part of every acquisition"),
    ],
)
def test_a_target_made_in_code_is_checked_as_one_from_a_file(
    tmp_path: Path, options: dict[str, Any], said: str
) -> None:
    with pytest.raises(ConfigError) as e:
        Target(tmp_path / "a", tmp_path / "b", **options)
    assert str(e.value).startswith(said), str(e.value)


def test_a_glob_is_refused_only_when_empty_or_slashes(tmp_path: Path) -> None:
    assert Target(tmp_path / "a", tmp_path / "b", exclude=["X", "logs/"]).exclude == ("X", "logs/")


def test_yaml_errors_say_the_problem_not_the_context(tmp_path: Path) -> None:
    f = write(tmp_path, "targets: [a, b")
    with pytest.raises(ConfigError) as e:
        load_targets(f)
    assert str(e.value) == f"{f}: not valid YAML (line 1, column 15): expected ',' or ']', but got '<stream end>'"


def test_a_destination_that_cannot_be_looked_at_now_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A dropped share answers EIO: not bad input, the copy waits for it (docs/design.md, "Unavailable is not elsewhere").
    def eio(self: Path) -> bool:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "exists", eio)
    with caplog.at_level(logging.WARNING, logger="softcopy"):
        check_pair(tmp_path / "a", tmp_path / "b")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'a'} cannot be looked at now (Input/output error): it is waited for",
        f"{tmp_path / 'b'} cannot be looked at now (Input/output error): it is waited for",
    ]


def test_a_source_freed_inside_an_acquisitions_folder_watched_by_a_pattern_is_refused(tmp_path: Path) -> None:
    targets = [Target(tmp_path / "acq" / "x.zarr", tmp_path / "c", delete_source=True)]
    targets.append(Target(tmp_path / "acq" / "*.zarr", tmp_path / "d"))
    with pytest.raises(ConfigError) as e:
        check_targets(targets, "targets.yaml")
    assert str(e.value) == (
        f"targets.yaml: source {tmp_path}/acq/*.zarr is shared with the target of {tmp_path}/acq/x.zarr, which frees "
        "it (delete_source): a source may be freed only by the one target that copies it"
    )


def test_an_error_of_the_command_line_names_no_file(tmp_path: Path) -> None:
    same = f"source and destination are the same folder: {tmp_path / 'a'}"
    with pytest.raises(ConfigError, match=f"^{same}$"):
        make_target(tmp_path / "a", tmp_path / "a", {})
    with pytest.raises(ConfigError, match=f"^{same}$"):
        check_pair(tmp_path / "a", tmp_path / "a")


def test_an_ssh_destination_takes_every_option_a_local_one_does(tmp_path: Path) -> None:
    # A pattern (the service form), --checksum and --delete-source over ssh (test_ssh runs them).
    remote = destination_of("cluster:/lab/raw")
    Target(source=tmp_path / "acq/*.zarr", destination=remote)
    Target(source=tmp_path / "acq", destination=remote / "x.zarr", checksum=True, delete_source=True)


def test_a_destination_whose_name_is_not_utf8_is_a_local_folder(tmp_path: Path) -> None:
    # An acquisition named with a byte that is not UTF-8 (`take-\xe9.zarr` from a Latin-1 tool):
    # the service's destination for it could not even be looked at ("surrogates not allowed"),
    # and the acquisition was never copied.
    name = os.fsdecode(b"take-\xe9.zarr")
    t = Target(source=tmp_path / name, destination=tmp_path / "raw" / name)
    assert t.destination == tmp_path / "raw" / name
