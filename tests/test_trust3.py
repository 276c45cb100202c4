"""Trust, part two (docs/design.md, "Invariants"): the items the audit read but had not reproduced. Each test failed on
3ad56b2, the commit before they were fixed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import softcopy
from conftest import finish, fuse_mount, tree, wait_for
from test_trust2 import archive, run


def test_metadata_that_cannot_be_read_at_the_end_makes_the_run_non_zero(tmp_path: Path) -> None:
    # Unreadable metadata dropped its array from the proof: a chunk deleted at the source (fill
    # value) kept its stale copy at the destination as a harmless "extra", exit 0.
    src, dst = tmp_path / "acq.zarr", tmp_path / "dst"
    files = archive(src, 2)
    assert run(src, dst, "--once").returncode == 0
    stale = max(k for k in files if k.startswith("c/"))
    (src / stale).unlink()
    (src / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array", "shape": [')
    r = run(src, dst, "--once")
    assert r.returncode == 1, r.stderr
    assert "zarr.json" in r.stderr and "cannot be accounted for" in r.stderr, r.stderr
    assert not (dst / "complete").exists(), "no marker over an archive that could not be verified"
    # The verify command says so too.
    v = run("verify", src, dst)
    assert v.returncode == 1 and "unreadable metadata: zarr.json" in v.stdout, v.stdout + v.stderr


def test_a_destination_link_re_pointed_mid_run_pauses_the_target(tmp_path: Path) -> None:
    # The root was resolved once: re-pointed mid-run, the old folder went on receiving and was
    # verified and marked, while the name the user gave led elsewhere.
    src, old, new, link = tmp_path / "acq", tmp_path / "old", tmp_path / "new", tmp_path / "dst"
    for d in (src, old, new):
        d.mkdir()
    link.symlink_to(old)
    (src / "first").write_bytes(b"1")
    c = softcopy.Copier([softcopy.Target(src, link, settle_time=0.01)])
    c.start()
    try:
        wait_for(lambda: (old / "first").exists(), 20, "the first copy")
        link.unlink()
        link.symlink_to(new)
        wait_for(lambda: (c.status()[0].paused or "").find("now leads to") >= 0, 20, "the pause")
        (src / "second").write_bytes(b"2")
        (src / "complete").touch()
        report = c.wait(60)
        assert report is not None
    finally:
        c.stop()
        c.wait(10)
    t = report.targets[0]
    assert not t.verified and t.phase == "incomplete", t
    assert not (old / "second").exists(), "nothing more written at the old place once paused"
    assert not (old / "complete").exists() and not (new / "complete").exists(), "no marker anywhere"
    assert any("now leads to" in n for n in t.notes), t.notes


def group(root: Path, chunks: dict[str, bytes]) -> None:
    """A Zarr v3 array at `root` with one dimension of 4 chunks, holding `chunks`."""
    root.mkdir(parents=True, exist_ok=True)
    meta = '{"zarr_format": 3, "node_type": "array", "shape": [4], '
    meta += '"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}}}'
    (root / "zarr.json").write_text(meta)
    for key, data in chunks.items():
        (root / "c").mkdir(exist_ok=True)
        (root / "c" / key).write_bytes(data)


def test_a_second_process_cannot_copy_into_a_destination_being_copied_to(tmp_path: Path) -> None:
    # Two processes with one destination: each pruned the other's chunks, and removed the other's
    # partials as "left by an earlier run".
    a, b, dst = tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "dst"
    group(a, {"0": b"a0", "1": b"a1"})
    group(b, {"0": b"b0"})
    with softcopy.Copier([softcopy.Target(a, dst)]):
        wait_for(lambda: (dst / "c" / "1").exists(), 20, "the first process's copy")
        r = run(b, dst, "--once")
        assert r.returncode != 0 and "another softcopy" in r.stderr and str(a) in r.stderr, r.stderr
    assert (dst / "c" / "0").read_bytes() == b"a0" and (dst / "c" / "1").read_bytes() == b"a1"


def test_a_destination_inside_another_runs_destination_is_refused_either_way(tmp_path: Path) -> None:
    # Nested destinations across processes: the outer run's verification took the inner run's
    # chunks for stale chunks of its own array and pruned them.
    inner_src, outer_src, dst = tmp_path / "inner.zarr", tmp_path / "outer", tmp_path / "dst"
    group(inner_src, {"0": b"i0", "1": b"i1", "2": b"i2"})
    group(outer_src / "inner", {"0": b"o0"})  # an array at the same path, with fewer chunks
    dst.mkdir()
    with softcopy.Copier([softcopy.Target(inner_src, dst / "inner")]):
        wait_for(lambda: (dst / "inner" / "c" / "2").exists(), 20, "the inner run's copy")
        r = run(outer_src, dst, "--once")
        assert r.returncode != 0, r.stderr
        assert "another softcopy's destination" in r.stderr, r.stderr
        assert {p.name: p.read_bytes() for p in (dst / "inner" / "c").iterdir()} == {
            "0": b"i0",
            "1": b"i1",
            "2": b"i2",
        }, "nothing of the inner run's copy written over or pruned"
    # The other way round: a run inside a destination being copied to does not start.
    with softcopy.Copier([softcopy.Target(outer_src, tmp_path / "dst2")]):
        wait_for(lambda: (tmp_path / "dst2" / "inner" / "c" / "0").exists(), 20, "the outer run's copy")
        r = run(inner_src, tmp_path / "dst2" / "inner", "--once")
        assert r.returncode != 0 and "is inside" in r.stderr, r.stderr
    assert (tmp_path / "dst2" / "inner" / "c" / "0").read_bytes() == b"o0"


def test_targets_are_compared_by_where_they_lead(tmp_path: Path) -> None:
    # check_targets compared the paths as written: a link to a destination was another one.
    real, alias = tmp_path / "dst", tmp_path / "alias"
    real.mkdir()
    alias.symlink_to(real)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        f"- {{source: {tmp_path / 'a'}, destination: {real / 'x'}}}\n"
        f"- {{source: {tmp_path / 'b'}, destination: {alias / 'x' / 'y'}}}\n"
    )
    r = run(targets, "--once")
    assert r.returncode == 2 and "inside destination" in r.stderr, r.stderr
    try:
        softcopy.Copier([softcopy.Target(tmp_path / "a", real / "x"), softcopy.Target(tmp_path / "b", alias / "x")])
    except ValueError as e:
        assert "same destination" in str(e)
    else:
        raise AssertionError("two targets with one destination were accepted")


def test_names_with_newlines_and_bytes_that_are_not_utf8_survive_the_manifest_and_the_journal(
    tmp_path: Path,
) -> None:
    # The manifest wrote names as they were (a newline split the entry) or lossily (another name):
    # `verify --manifest` failed on a whole copy. The journal wrote them lossily too: a freed file's
    # entry spoke for another name, and the next run took its only copy for a stale one.
    src, dst = tmp_path / "acq", tmp_path / "cluster" / "acq"
    dst.parent.mkdir(exist_ok=True)
    names = [b"new\nline", b"not-utf8-\xff\xfe", b"back\\slash\ttab"]
    (src / "c").mkdir(parents=True)
    for i, raw in enumerate(names):
        (src / "c").joinpath(os.fsdecode(raw)).write_bytes(bytes([i]) * 10)
    (src / "kept").write_bytes(b"stays")
    dst.parent.mkdir(exist_ok=True)
    r = run(src, dst, "--once", "--checksum", "--delete-source")
    assert r.returncode == 0, r.stderr
    manifest = dst.with_name("acq.softcopy-manifest.tsv")
    v = run("verify", "--manifest", manifest, dst)
    assert v.returncode == 0, v.stdout + v.stderr
    assert sorted(os.fsencode(p.name) for p in (dst / "c").iterdir()) == sorted(names)
    # Freed at the source; a second run must account for every copy through the journal.
    assert not (src / "c").exists(), "every file freed, and the folder they left"
    again = run(src, dst, "--once")
    assert again.returncode == 0, again.stderr
    assert sorted(os.fsencode(p.name) for p in (dst / "c").iterdir()) == sorted(names), "no copy pruned"


def test_a_manifest_that_cannot_be_read_is_a_one_line_error(tmp_path: Path) -> None:
    manifest, dst = tmp_path / "m.tsv", tmp_path / "dst"
    dst.mkdir()
    manifest.write_text("# softcopy manifest v2\nnot a line of a manifest\n")
    r = run("verify", "--manifest", manifest, dst)
    # Bad input (exit 2), not a difference found (exit 1): the README's exit codes.
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "line 2" in r.stderr, r.stderr


@contextmanager
def casefold_mount(tmp_path: Path) -> Iterator[Path]:
    """A case-insensitive, case-preserving destination (tests/casefold_fs.py over FUSE), unmounted
    whatever happens."""
    (tmp_path / "backing").mkdir()
    with fuse_mount("casefold_fs.py", tmp_path / "backing", tmp_path / "share") as mnt:
        yield mnt


def test_names_that_differ_only_in_case_are_refused_at_a_case_insensitive_destination(tmp_path: Path) -> None:
    # `Meta` and `meta` collapsed into one file: the second copy replaced the first, and
    # verification passed both names against it (same size), exit 0.
    src = tmp_path / "acq"
    (src / "c").mkdir(parents=True)
    (src / "Meta").write_bytes(b"upper")
    (src / "meta").write_bytes(b"lower")
    (src / "c" / "0").write_bytes(b"chunk")
    with casefold_mount(tmp_path) as share:
        (share / "probe").touch()
        assert (share / "PROBE").exists(), "the mount folds case"
        (share / "probe").unlink()
        dst = share / "acq"
        r = run(src, dst, "--once")
        assert r.returncode == 1, r.stderr
        assert "does not tell upper from lower case" in r.stderr, r.stderr
        [stored] = [p for p in dst.iterdir() if p.name.lower() == "meta"]
        assert stored.read_bytes() == (src / stored.name).read_bytes(), "the first copy was not replaced"
        assert (dst / "c" / "0").read_bytes() == b"chunk"
        assert not (dst / "complete").exists()
        # Without a collision the same destination copies and verifies as any other.
        (src / "meta").unlink()
        (src / "Meta").write_bytes(b"final")
        r = run(src, dst, "--once")
        assert r.returncode == 0, r.stderr
        # softcopy's own records at the root (`.softcopy-*`) are not copies.
        copies = {
            p.name: p.read_bytes()
            for p in dst.iterdir()
            if p.is_file() and p.name != "complete" and not p.name.startswith(".softcopy")
        }
        assert copies == {"Meta": b"final"}, (copies, r.stderr)


@pytest.mark.parametrize(("first", "second"), [("Log.txt", "log.txt"), ("Maße.txt", "MASSE.txt")])
def test_a_new_name_in_another_case_never_replaces_a_freed_files_copy(tmp_path: Path, first: str, second: str) -> None:
    # `Log.txt` freed at the source: its copy is the only one left. A new take writes `log.txt`; at
    # a destination that folds case, the copier took `Log.txt` for the new file's own older copy
    # (the source no longer has it) and renamed over it: verified, exit 0, the log at neither end.
    # `Maße` and `MASSE` are one name there too (folded in full), which lower-casing missed.
    src = tmp_path / "acq"
    (src / "c").mkdir(parents=True)
    (src / first).write_bytes(b"the first take's log")
    (src / "c" / "0").write_bytes(b"chunk")
    with casefold_mount(tmp_path) as share:
        dst = share / "acq"
        r = run(src, dst, "--once", "--delete-source")
        assert r.returncode == 0, r.stderr
        assert not (src / first).exists(), "freed"
        src.mkdir(exist_ok=True)
        (src / second).write_bytes(b"the second take's log")
        r = run(src, dst, "--once", "--delete-source")
        [stored] = [p for p in dst.iterdir() if p.name.casefold() == first.casefold()]
        assert (stored.name, stored.read_bytes()) == (first, b"the first take's log"), r.stderr
        assert r.returncode == 1 and "the only copy of a file freed at the source" in r.stderr, r.stderr
        assert (src / second).read_bytes() == b"the second take's log", "not freed"


def test_the_marker_never_replaces_a_file_named_like_it_in_another_case(tmp_path: Path) -> None:
    # The marker `complete` was published by a view of the destination that did not know it folds
    # case: it replaced the copy of the data file `COMPLETE`, and both sources were freed as
    # proven: verified, exit 0, the operator's notes at neither end.
    src = tmp_path / "acq"
    (src / "c").mkdir(parents=True)
    (src / "c" / "0").write_bytes(b"chunk")
    (src / "COMPLETE").write_bytes(b"the operator's notes")
    (src / "complete").write_bytes(b"done")
    with casefold_mount(tmp_path) as share:
        r = run(src, share / "acq", "--delete-source")
        assert (tmp_path / "backing" / "acq" / "COMPLETE").read_bytes() == b"the operator's notes", r.stderr
        assert r.returncode == 1, r.stderr
        assert (src / "COMPLETE").read_bytes() == b"the operator's notes", "not freed"


def test_a_destination_folder_swapped_on_the_server_is_never_written_into(tmp_path: Path, run_softcopy: Any) -> None:
    # On a share that numbers files by path (sshfs), a folder swapped in under the destination's
    # name keeps the old one's number: the run went on writing into it (another acquisition's copy,
    # its only one once freed), replaced its files and published the marker there: verified, exit 0.
    src, backing = tmp_path / "acq", tmp_path / "backing"
    (src / "c").mkdir(parents=True)
    for i in range(3):
        (src / "c" / str(i)).write_bytes(b"A%d" % i)
    backing.mkdir()
    env = {"FAULTY_PATH_INODES": "1", "FAULTY_READDIR": "/nothing"}
    with fuse_mount("faulty_fs.py", backing, tmp_path / "share", env) as share:
        proc = run_softcopy(src, share / "acq")
        try:
            # The swap comes once the copy is idle: a change made within a second of the last look
            # at the root can still land in a folder swapped in meanwhile (docs/design.md,
            # "Unavailable is not elsewhere").
            want = {f"c/{i}": b"A%d" % i for i in range(3)}
            wait_for(lambda: tree(backing / "acq", skip_marker=True) == want, 30, "the copy")
            # On the server: the copy renamed aside, another acquisition's copy put under its name.
            (backing / "acq").rename(backing / "acq.aside")
            (backing / "acq" / "c").mkdir(parents=True)
            (backing / "acq" / "c" / "1").write_bytes(b"O's only copy")
            wait_for(lambda: "is another folder now" in proc.output(), 30, "the swap to be noticed")
            (src / "c" / "1").write_bytes(b"A1, rewritten")
            (src / "c" / "2").unlink()
            (src / "complete").touch()
            code, out = finish(proc, 90)
        finally:
            proc.kill()  # before the share is unmounted under it
        assert tree(backing / "acq") == {"c/1": b"O's only copy"}, out
        assert code != 0, out


def test_a_file_renamed_to_another_case_between_runs_is_copied_under_its_new_name(tmp_path: Path) -> None:
    # `Log` renamed `log`, same bytes and mtime, while no run watched: the next run looked `log` up
    # at a destination that folds case, found `Log`'s copy, took it for `log`'s and freed `log`,
    # its only copy stored under a name the source never had.
    src = tmp_path / "acq"
    src.mkdir()
    (src / "Log").write_bytes(b"the log")
    with casefold_mount(tmp_path) as share:
        dst = share / "acq"
        assert run(src, dst, "--once").returncode == 0
        (src / "Log").rename(src / "log")
        r = run(src, dst, "--once", "--delete-source")
        assert r.returncode == 0, r.stderr
        stored = [p.name for p in (tmp_path / "backing" / "acq").iterdir() if not p.name.startswith(".softcopy")]
        assert stored == ["log"], r.stderr
        assert (tmp_path / "backing" / "acq" / "log").read_bytes() == b"the log"
