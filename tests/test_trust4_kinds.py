"""Trust, part four (docs/design.md, "Invariants", 8): a name that changes kind at the source. A writer deletes chunk file
`c/0` and makes a folder of that name (an array written again with a deeper chunk key encoding), or
the other way round: the copy of the old kind stood in the way of the new one at every run after,
which ended Incomplete until a person deleted it. The copy in the way is a copy of a file the source
no longer has, removed as any mirrored deletion (docs/design.md, invariant 8)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import assert_same_tree, tree
from test_trust2 import run
from test_trust3 import casefold_mount
from test_trust4 import killed_at_failpoint


def first_take(src: Path, dst: Path, layout: dict[str, bytes]) -> None:
    """`layout` written at the source and copied, verified, to `dst`."""
    for rel, data in layout.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stderr


def file_becomes_folder(src: Path, name: str) -> None:
    (src / name).unlink()
    (src / name).mkdir()
    (src / name / "0").write_bytes(b"deeper chunk")


def folder_becomes_file(src: Path, name: str) -> None:
    shutil.rmtree(src / name)
    (src / name).write_bytes(b"flat chunk")


def test_a_copy_of_a_file_in_the_way_of_a_folder_is_replaced(tmp_path: Path) -> None:
    # A destination file `c/0` where the source now has a folder `c/0/` failed its copy at every
    # run: exit 1, "Not a directory", for ever.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    first_take(src, dst, {"meta.json": b"{}", "c/1": b"chunk 1", "c/0": b"flat chunk"})
    file_becomes_folder(src, "c/0")
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stderr
    assert "verified complete" in r.stderr, r.stderr
    assert_same_tree(src, dst)


def test_a_folder_holding_files_in_the_way_of_a_file_is_kept_and_named(tmp_path: Path) -> None:
    # The converse: what the folder holds may be no copy (an excluded file, a person's note), and
    # a copy the source no longer has is kept unless its deletion was seen. Named, never removed.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    first_take(src, dst, {"meta.json": b"{}", "c/1": b"chunk 1", "c/0/0": b"deeper chunk"})
    folder_becomes_file(src, "c/0")
    r = run(src, dst, "--once")
    assert r.returncode == 1, r.stderr
    assert "c/0" in r.stderr and "move it away" in r.stderr, r.stderr
    assert (dst / "c" / "0" / "0").read_bytes() == b"deeper chunk"


@pytest.mark.parametrize("kinds", ["file in the way", "folder in the way"])
def test_another_names_copy_in_the_way_is_never_removed_where_the_destination_folds_case(
    tmp_path: Path, kinds: str
) -> None:
    # The source has both `Notes` and `notes/` (or `Notes/` and `notes`): at a destination that
    # folds case they are one entry, the copy of the other name, which the source still has.
    src = tmp_path / "acq"
    with casefold_mount(tmp_path) as share:
        dst = share / "acq"
        if kinds == "file in the way":
            first_take(src, dst, {"Notes": b"the operator's notes"})
            (src / "notes").mkdir()
            (src / "notes" / "a").write_bytes(b"a")
            kept = {"Notes": b"the operator's notes"}
        else:
            first_take(src, dst, {"Notes/a": b"a"})
            (src / "notes").write_bytes(b"the operator's notes")
            kept = {"Notes/a": b"a"}
        r = run(src, dst, "--once")
        assert r.returncode == 1, r.stderr
        for rel, data in kept.items():
            assert (tmp_path / "backing" / "acq" / rel).read_bytes() == data, r.stderr
        assert not (dst / "complete").exists()


def test_a_link_in_a_folder_in_the_way_is_not_removed(tmp_path: Path) -> None:
    # softcopy never makes a link: one inside the destination's `c/0/` is someone else's, and the
    # source's `c/0` becoming a file is no evidence about it. The file fails, by name.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    first_take(src, dst, {"c/0/0": b"deeper chunk"})
    (tmp_path / "elsewhere").write_bytes(b"an archive")
    (dst / "c" / "0" / "link").symlink_to(tmp_path / "elsewhere")
    folder_becomes_file(src, "c/0")
    r = run(src, dst, "--once")
    assert r.returncode == 1, r.stderr
    assert (dst / "c" / "0" / "link").is_symlink() and (tmp_path / "elsewhere").read_bytes() == b"an archive"
    assert "c/0" in r.stderr, r.stderr


@pytest.mark.parametrize("change", [file_becomes_folder])
def test_a_crash_between_removing_the_copy_in_the_way_and_copying_loses_nothing(
    tmp_path: Path, change: Callable[[Path, str], None]
) -> None:
    # Killed as a power cut would, right after the copy of the old kind went: the source still has
    # everything, and the same command again copies it.
    src, dst = tmp_path / "acq", tmp_path / "dst"
    layout = {"c/0": b"flat chunk"} if change is file_becomes_folder else {"c/0/0": b"deeper chunk"}
    first_take(src, dst, {"c/1": b"chunk 1", **layout})
    change(src, "c/0")
    before = tree(src)
    killed_at_failpoint("kind.removed=return", src, dst, "--once")
    assert not (dst / "c" / "0").exists(), "killed once the copy in the way was removed"
    assert tree(src) == before
    r = run(src, dst, "--once")
    assert r.returncode == 0, r.stderr
    assert_same_tree(src, dst)
