"""Model-based test (docs/design.md, "Invariants"): random sequences of writer actions and faults against a live engine
on a real filesystem, with the trust invariants checked after every step:

- a file that reached the destination never disappears from it unless its source was deleted while
  the root was present (or the writer replaced the whole root);
- every file at the destination holds a version its source really had (or the damage we did to it);
- with `--delete-source`, no source file is freed unless its copy holds exactly its last version,
  and a history without faults that ends verified has freed them all (a freeing killed is finished
  by the next run).

Writer actions: tensorstore-style rename-publish, in-place write, a same-size rewrite within one
timestamp tick (mtime set back with `utime`), delete, new folders, the root replaced by its writer
(`overwrite=True`, a re-take with fewer files). Faults: a symlinked folder in the destination, the root moved away and back, the root
renamed away for good and a new folder made under its name, a source file made
immutable under `--delete-source` (freeing it fails after it was journaled; a second run follows
the first), lost events (a queue of one
event: every burst overflows and rescans), a stop and restart, a destination copy damaged with size
and mtime kept. The end killed (SIGKILL) at every step of verifying,
publishing and freeing (the crash points of docs/design.md, or strace at the unlink of any file at
either end) and the same command run again; the source's disk unmounted and another mounted in its
place; the destination on a filesystem whose listing of the copy's root fails when a rule arms it;
files deleted while no engine runs (the stale chunks of an array the end must prune); a destination
that folds case, with names at the source that fold to one; a second target copying the same source
(refused with `--delete-source`, else both copies whole, each marker over its own copy only); an
acquisition ended, then `rm -rf` and a new take under its name, which ext4 hands the old folder's
inode (the earlier take's copy and marker stay as they were, never written into).
`SOFTCOPY_MODEL_EXAMPLES` sets how many sequences run (default 80; `make model-long` runs 2000 at random).

Every history begins with a writer at work while the engine watches (a timepoint written and a chunk
deleted once the first chunks arrived), and a run whose events were not lost must have heard every
change (`found_at_end` is 0; docs/design.md, "Live, proven live"): so a watch that drops deletions, or
a tracker deaf to tensorstore's lockfile rename, fails the CI run, not only a long random search.

To an ssh destination (`AcquisitionOverSsh`, `test_model_over_ssh`, a sixth as many sequences): the
same histories, the copy over SFTP to a loopback sshd that writes to a folder the model looks at;
the end killed at its named steps and at a source file's unlink (the server makes the
destination's unlinks, out of strace's reach); a killed run's claim stale in 3 s.

The service form (`Lab`, `test_model_of_the_service`, a sixteenth as many sequences: a service
process per sequence): `softcopy 'ACQ/*.zarr' DST` while two acquisitions are written, end, and are
deleted and taken again under their names once the service reported their copies verified (often on
the old folder's inode); the service killed -9 now or armed to kill itself at an end step, and
started again as systemd would. After every step: a destination folder holds one take's bytes only
(each take tags what it writes), a marker stands only over a copy equal to its take's files and a
marked copy never changes again, nothing copied vanishes; at the end every take is verified.

Replaying a failure: the test prints its profile, its number of sequences and its seed first (shown
with a failure). CI's profile ("softcopy") is derandomized: the same sequences on every run (those of
`Acquisition` from a pinned seed, `CI_SEED`, so that editing its text does not change them), so
`cd tests && SOFTCOPY_MODEL_EXAMPLES=<n> python -m pytest test_model.py` replays it (and the
`@reproduce_failure` blob printed replays the very sequence); it reports the first failing sequence as
found, unshrunk (shrinking real processes takes minutes; histories are at most 8 steps). The random
profile (`make model-long`, `SEED=<seed> make model-long` to replay) shrinks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import softcopy
from _share import Sshd
from conftest import fuse_mount, softcopy_cmd, sysctl, tree, wait_for
from hypothesis import HealthCheck, Phase, event, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from softcopy.config import destination_of
from test_properties import apply
from test_ssh import ssh_command
from test_trust4 import GOING

# `Log` and `log` are one file at a destination that folds case: a source holding both cannot be
# copied there whole (a fault), and neither copy may ever replace the other.
KEYS = ["0.0", "c/0/0", "arr/c/0/0", "arr/c/1/1", "a/b/c/0", "zarr.json", "new/d/0", "Log", "log"]
EXAMPLES = int(os.environ.get("SOFTCOPY_MODEL_EXAMPLES", "80"))
# An array whose chunks are `arr/c/...`: a chunk at the destination its source no longer has reads
# as data where the source reads the fill value, so a verified copy holds none (the end prunes it).
ARRAY_META = "arr/zarr.json"
ARRAY = (
    b'{"zarr_format": 3, "node_type": "array", "shape": [4, 4], "data_type": "uint8", '
    b'"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}}, '
    b'"chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}}, '
    b'"fill_value": 0, "codecs": [{"name": "bytes"}]}'
)
# Where the end is killed (docs/design.md, "Crash points"): a named point and how many passes to let
# by, or the unlink of a file at the source (freeing) or the destination (pruning), by strace.
POINTS = ["verify.start", "verify.prune", "publish.flushed", "publish.marker", "free.journaled", "free.aside"]
POINTS += ["free.unlinked"]
POINTS += ["free.folders", "origin.recorded"]
CRASHES = st.one_of(
    st.none(),
    st.tuples(st.just("point"), st.sampled_from(POINTS), st.integers(0, 2)),
    st.tuples(st.just("unlink"), st.sampled_from([*KEYS, ARRAY_META, "complete"]), st.just(0)),
)
Crash = tuple[str, str, int] | None
# One file's change by a writer: written as its library writes it (tensorstore's lockfile rename,
# its `none` lock's, or in place), or deleted (a chunk back to the fill value).
WRITER_OPS = st.tuples(
    st.sampled_from(["rename", "rename_none", "in_place", "delete"]), st.sampled_from(KEYS), st.binary(max_size=32)
)
WriterOp = tuple[str, str, bytes]


def snapshot(root: Path) -> dict[str, bytes]:
    """Like `tree`, but safe while folders vanish under the walk (the copy goes on meanwhile)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            p = Path(folder, name)
            rel = p.relative_to(root).as_posix()
            if name.endswith(".softcopy-partial") or rel.startswith(".softcopy") or rel == "complete":
                continue
            try:
                out[rel] = p.read_bytes()
            except OSError:
                continue
    return out


def mkdir_reusing(path: Path, ino: int) -> bool:
    """Makes the folder `path` with the inode number `ino` where the filesystem hands it out again
    (ext4 gives a freed inode to one of the next folders made): a re-take that only its birth time
    tells from the folder it replaced. Whether it got that number."""
    made: list[Path] = []
    try:
        for n in range(64):
            made.append(path.with_name(f".retake-{n}"))
            made[-1].mkdir()
            if made[-1].stat().st_ino == ino:
                made.pop().rename(path)
                return True
        return False
    finally:
        for d in made:
            d.rmdir()
        path.mkdir(exist_ok=True)


def group_json(data: bytes) -> bytes:
    """Metadata the end can read, carrying `data`: unreadable metadata rightly ends a run Incomplete."""
    return b'{"zarr_format": 3, "node_type": "group", "attributes": {"v": "%s"}}' % data.hex().encode()


class Acquisition(RuleBasedStateMachine):
    # Drawn in this order: CI's histories are the draws of a pinned seed (`CI_SEED`).
    @initialize(
        delete_source=st.booleans(),
        crash=CRASHES,
        disk=st.booleans(),
        dst=st.sampled_from(["local", "faulty", "casefold"]),
        lossy=st.booleans(),
        second=st.sampled_from([False, False, True]),
        opening=st.lists(WRITER_OPS, min_size=1, max_size=4),
    )
    def start(
        self,
        delete_source: bool,
        crash: Crash,
        disk: bool,
        dst: str,
        lossy: bool,
        second: bool,
        opening: list[WriterOp],
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="softcopy-model-"))
        # Half the runs with the kernel's own event queue, half with a queue of one (every burst
        # overflows: lost events, rescans).
        self.lossy = lossy
        # A fault happened (not a writer's action, a stop, a restart or a crash): only then may
        # the end be anything but verified.
        self.faults: list[str] = []
        self.mounts: list[Path] = []  # the source's disks, unmounted at teardown
        self.fuse = ExitStack()  # the destination's FUSE mount, if any
        # The source on a disk of its own (a tmpfs) that a rule can swap for another.
        self.disk = self.tmp / "disk" if disk else None
        if self.disk:
            self.disk.mkdir()
            self._mount_disk()
        base = self.disk or self.tmp
        self.src, self.away = base / "run.zarr", base / "away.zarr"
        self._destination(dst)
        self.src.mkdir()
        self.delete_source = delete_source
        # A second target copying the same source, to a local folder of its own.
        self.second = self.tmp / "out2.zarr" if second else None
        # After a re-take under the copy's name: each copy (and whether its marker stood) as the
        # earlier take's run left it, never to change.
        self.frozen: list[tuple[dict[str, bytes], bool]] | None = None
        self.crash = crash
        self.versions: dict[str, set[bytes]] = {}  # every content a key ever had (source or damage)
        self.current: dict[str, bytes] = {}  # the source now, as the model knows it
        self.deleted: set[str] = set()  # keys whose deletion at the destination is justified
        # Keys the writer deleted while this engine watched the root: their copies go within a
        # bound (a deletion is data: a chunk deleted reads as fill value).
        self.gone_live: set[str] = set()
        self.root_away = False
        self.stuck = False  # the copy did not catch up with the source within the bound
        self.foreign = False  # the root was renamed away for good: another folder is under its name
        self.leftovers: set[str] = set()  # copies of a folder renamed away, kept as extras
        self.archived = 0  # folders renamed away for good so far
        self.unconfirmed = False  # the engine may not follow the folder under the name yet
        self.seen: dict[Path, dict[str, bytes]] = {}
        self.damaged: set[str] = set()
        self.elsewhere = self.tmp / "elsewhere"  # an admin's folder the destination links to
        self.linked = False
        self.pinned: set[str] = set()  # source files made immutable (chattr +i)
        # An acquisition under way: the array's metadata and its first chunks (so that a deletion
        # can be the first thing a history does).
        for key, data in ((ARRAY_META, ARRAY), ("arr/c/0/0", b"first"), ("c/0/0", b"plane")):
            apply(self.src, "rename", key, data)
            self.current[key] = data
            self.versions[key] = {data}
        self.copier = self._start()
        event(f"a second target copies the source: {self.second is not None}")
        # The writer goes on while softcopy watches: what it writes and deletes now is heard, not
        # found by a scan (the first chunks arrive first, so that a deletion deletes a copy).
        self.caught_up()
        self.timepoint(opening)

    def _mount_disk(self) -> None:
        assert self.disk is not None
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(self.disk)], check=True)
        self.mounts.append(self.disk)

    def _destination(self, kind: str) -> None:
        """Sets where the copy goes: `dst` as softcopy is given it, `here` where this machine's
        files reach it (damage, links and the end's kills are made there), `view` where the model
        looks at it (each name as stored, beside any fault)."""
        # Through tests/faulty_fs.py (its root's listing fails once when armed) or
        # tests/casefold_fs.py (case-insensitive, case-preserving: NTFS, SMB, macOS).
        self.arm = self.tmp / "arm" if kind == "faulty" else None
        self.casefold = kind == "casefold"
        self.ssh_command: str | None = None
        self.dst: Path | str = self._share(kind) / "out.zarr" if kind != "local" else self.tmp / "out.zarr"
        self.here = Path(self.dst)
        self.view = self.tmp / "backing" / "out.zarr" if kind != "local" else self.here

    def _share(self, kind: str) -> Path:
        (self.tmp / "backing").mkdir()
        env = {"FAULTY_READDIR": "/out.zarr", "FAULTY_ARM": str(self.arm)} if kind == "faulty" else {}
        return self.fuse.enter_context(fuse_mount(f"{kind}_fs.py", self.tmp / "backing", self.tmp / "share", env))

    def _twin(self, key: str) -> str | None:
        """The other key that is the same file at this destination, if any."""
        if not self.casefold:
            return None
        return next((k for k in KEYS if k != key and k.lower() == key.lower()), None)

    def _views(self) -> list[Path]:
        """Where the model looks at each target's copy, in the targets' order."""
        return [self.view, *([self.second] if self.second else [])]

    def _start(self) -> softcopy.Copier:
        # Settled files leave memory within a few steps, so records meet every action and rescan.
        first = softcopy.Target(
            self.src, destination_of(self.dst), delete_source=self.delete_source, settle_time=0.01, evict_after=0.05
        )
        if self.ssh_command:
            first = replace(first, ssh_command=self.ssh_command, connections=CONNECTIONS)
        # The second a backup to a slower share: still copying when the first one is done.
        second = replace(first, destination=self.second, nprocs=1, sleep_time=0.05) if self.second else None
        targets = [first, *([second] if second else [])]
        if self.second and self.delete_source:
            # One source, one freeing: the second target would mirror the first one's freeing.
            with pytest.raises(softcopy.ConfigError, match="shared"):
                softcopy.Copier(targets)
            self.second = None
            targets = targets[:1]
        c = softcopy.Copier(targets)
        queue = 1 if self.lossy else int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        with sysctl("fs.inotify.max_queued_events", queue):  # read when the engine makes its inotify instance
            c.start()
            wait_for(lambda: c.poll() is not None or c.status()[0].phase in ("copying", "waiting"), 20, "the engine")
        return c

    @precondition(lambda self: not self.root_away)
    @rule(
        kind=st.sampled_from(["rename", "rename_none", "in_place"]),
        key=st.sampled_from(KEYS),
        data=st.binary(max_size=32),
    )
    def write(self, kind: str, key: str, data: bytes) -> None:
        if key in self.pinned:
            return
        if key == "zarr.json":
            data = group_json(data)
        if self._twin(key) in self.current:
            self.faults.append("names that fold to one")
        apply(self.src, kind, key, data)
        self.current[key] = data
        self.versions.setdefault(key, set()).add(data)
        self.gone_live.discard(key)

    @precondition(lambda self: not self.root_away and bool(self.current))
    @rule(data=st.data(), fill=st.integers(0, 255))
    def same_tick_rewrite(self, data: st.DataObject, fill: int) -> None:
        # Same size, other bytes, the mtime set back: only the events (and the ctime) can tell.
        key = data.draw(st.sampled_from(sorted(self.current)))
        if key in self.pinned or key == ARRAY_META:
            return
        path = self.src / key
        old = self.current[key]
        new = bytes([fill]) * len(old)
        if key == "zarr.json":  # still readable, the same size
            new = group_json(bytes([fill]) * ((len(old) - len(group_json(b""))) // 2))
        if new == old or not old:
            return
        st_ = path.stat()
        with path.open("r+b") as f:
            f.write(new)
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        self.current[key] = new
        self.versions[key].add(new)

    @precondition(lambda self: not self.root_away and not self.foreign)
    @rule()
    def rename_away_and_make_anew(self) -> None:
        self.gone_live.clear()
        self.faults.append("renamed away")
        # `mv run.zarr run-old.zarr; mkdir run.zarr`: a new folder under the old name is another
        # acquisition; nothing of the copy may be removed on its account. The folder renamed must
        # be the one the engine copies: right after a root was replaced, or while an engine started
        # without its source waits for it, the engine adopts the first folder it finds under the
        # name, and one it never saw cannot be told from the acquisition. A probe that arrives
        # proves it follows this one.
        if self.unconfirmed:
            probe = os.urandom(8)
            apply(self.src, "rename", "probe", probe)
            self.versions.setdefault("probe", set()).add(probe)

            # Where the root's removal was among the events lost, a re-take cannot be told from
            # another folder: the engine pauses on it for good, and never adopts what comes next.
            # Every target's: the second one, slower, may not have followed yet, and would adopt
            # the folder made after the rename as the re-take (seen: it verified that folder).
            def followed_or_refused(i: int, view: Path) -> bool:
                return snapshot(view).get("probe") == probe or "another folder" in self._paused(i)

            wait_for(
                lambda: all(followed_or_refused(i, v) for i, v in enumerate(self._views())),
                20,
                "the engine to follow this folder, or to refuse it",
            )
            self.unconfirmed = False
        self.archived += 1
        self.src.rename(self.src.parent / f"archived-{self.archived}.zarr")
        self.src.mkdir()
        self.foreign = True
        self.current.clear()

    def _paused(self, target: int = 0) -> str:
        self.copier.poll()
        return self.copier.status()[target].paused or ""

    def _deletable(self) -> list[str]:
        return sorted(set(self.current) - self.pinned - {ARRAY_META})

    @precondition(lambda self: not self.root_away)
    @rule(ops=st.lists(WRITER_OPS, min_size=1, max_size=4))
    def timepoint(self, ops: list[WriterOp]) -> None:
        # A timepoint: a few chunks written, each as its library writes it, and some deleted.
        for kind, key, data in ops:
            if kind != "delete":
                self.write(kind, key, data)
            elif deletable := self._deletable():
                self._delete(deletable[KEYS.index(key) % len(deletable)])

    @precondition(lambda self: not self.root_away and bool(self._deletable()))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        self._delete(data.draw(st.sampled_from(self._deletable())))

    def _delete(self, key: str) -> None:
        (self.src / key).unlink()
        del self.current[key]
        if not self.foreign:
            self.deleted.add(key)
            self.gone_live.add(key)

    @precondition(lambda self: not self.root_away and ("Log" in self.current) != ("log" in self.current))
    @rule(stopped=st.booleans())
    def rename_to_another_case(self, stopped: bool) -> None:
        self.gone_live.clear()
        # `Log` renamed `log` (or back): the same file, its name's case changed. At a destination
        # that folds case, its copy takes the new name; no other file's copy is touched. While no
        # engine watches, the next one finds the old copy under the old case.
        old = "Log" if "Log" in self.current else "log"
        new = "log" if old == "Log" else "Log"
        if old in self.pinned:
            return
        if stopped:
            self.copier.stop()
            assert self.copier.wait(30) is not None
        (self.src / old).rename(self.src / new)
        self.current[new] = self.current.pop(old)
        self.versions.setdefault(new, set()).add(self.current[new])
        if not self.foreign:
            self.deleted.add(old)
        if stopped:
            self._new_engine()
            self.unconfirmed = False

    @precondition(lambda self: not self.root_away and bool(self._deletable()))
    @rule(data=st.data())
    def delete_while_stopped(self, data: st.DataObject) -> None:
        # A chunk deleted while no engine watches: its copy is stale, and only the end's walk of
        # the destination can find it (`fail_next_listing`).
        self.copier.stop()
        assert self.copier.wait(30) is not None
        self.delete(data)
        self._new_engine()
        self.unconfirmed = False

    @precondition(lambda self: not self.root_away and not self.pinned and bool(self.current))
    @rule(data=st.data(), fill=st.integers(0, 255), how=st.sampled_from(["snapshot", "chmod"]))
    def rewrite_unseen_then_touch_the_copies(self, data: st.DataObject, fill: int, how: str) -> None:
        # A chunk corrected while no engine watches, its size and mtime kept (`cp -p`), then the
        # destination's metadata changed without its bytes (a hard-linked snapshot, the archive
        # opened to its group) a while later: every copy's ctime is then after the correction,
        # and only the copy's own record of its source version tells it is stale (docs/design.md,
        # "A version is decided on evidence").
        self.copier.stop()
        assert self.copier.wait(30) is not None
        self.same_tick_rewrite(data, fill)
        last = max(p.stat().st_ctime_ns for p in self.src.rglob("*"))
        # Past the 2 s the clocks were once given (not a synchronisation: the clock must move on).
        wait_for(lambda: time.time_ns() > last + 2_500_000_000, 5, "the clock to pass the margin")
        if how == "snapshot" and self.here == self.view:
            subprocess.run(["cp", "-al", str(self.here), str(self.tmp / f"snapshot{time.time_ns()}")], check=True)
        else:
            subprocess.run(["chmod", "-R", "g+w", str(self.view)], check=True)
        self._new_engine()
        self.unconfirmed = False

    @precondition(lambda self: self.arm is not None)
    @rule()
    def fail_next_listing(self) -> None:
        self.faults.append("listing")
        assert self.arm is not None
        self.arm.touch()

    @precondition(lambda self: self.disk is not None and not self.root_away)
    @rule()
    def swap_the_disk(self) -> None:
        self.gone_live.clear()
        self.faults.append("disk swapped")
        # The source's disk pulled (a lazy unmount) and another mounted in its place, holding a
        # folder of the same name: another acquisition, never mixed into this one's copy.
        assert self.disk is not None
        subprocess.run(["umount", "-l", str(self.disk)], check=True)
        self.mounts.remove(self.disk)
        self._mount_disk()
        self.src.mkdir()
        self.foreign = True
        self.pinned.clear()  # they went with the first disk
        self.current.clear()

    # Not where events are lost: there a root replaced by its writer is at times adopted without
    # its watch, and the run never sees the marker (found by this test, open: see the issue note).
    @precondition(lambda self: not self.lossy and not self.root_away and not self.foreign and not self.pinned)
    @rule()
    def writer_replaces_root(self) -> None:
        self.gone_live.clear()
        # zarr-python / acquire-zarr `overwrite=True`: the root is deleted and made anew.
        shutil.rmtree(self.src)
        self.src.mkdir()
        self.unconfirmed = True
        self.deleted.update(self.current)
        self.current.clear()

    @precondition(lambda self: not self.root_away)
    @rule()
    def move_root_away(self) -> None:
        self.gone_live.clear()
        # The root's return is not always noticed when the marker follows it at once (with events
        # lost, or not): the run then ends Incomplete, "moved away; waiting for it to return"
        # (safe, not live; found by this test, open: see the issue note).
        self.faults.append("root moved away")
        self.src.rename(self.away)
        self.root_away = True

    @precondition(lambda self: self.root_away)
    @rule()
    def move_root_back(self) -> None:
        self.away.rename(self.src)
        self.root_away = False

    def _new_engine(self) -> None:
        # A deletion no engine saw is mirrored at the end only (the prune of stale chunks).
        self.gone_live.clear()
        if self.unconfirmed and not self.root_away:
            # A root replaced while no engine had yet followed it is, to the next engine, a folder
            # it never saw under the copy's name: it may refuse it as another acquisition.
            self.faults.append("restarted before a re-take was followed")
        self.copier = self._start()
        if self.foreign and not self.root_away:
            # A destination belongs to one acquisition (docs/design.md, "One destination, one
            # acquisition"): a new run refuses the folder now under the name, another acquisition,
            # and changes nothing at the destination (one whose source is away refuses it when it
            # comes back).
            report = self.copier.wait(20)
            assert report is not None, "the run ends"
            for t in report.targets:
                assert not t.verified and "another acquisition" in (t.fatal or ""), report

    @rule()
    def stop_and_restart(self) -> None:
        self.copier.stop()
        assert self.copier.wait(30) is not None
        self._new_engine()
        # A new engine adopts the folder there when it starts, or the first one to appear.
        self.unconfirmed = self.root_away

    @precondition(
        lambda self: (
            not self.arm and not self.linked and not self.frozen and not any(k.startswith("new/") for k in self.current)
        )
    )
    @rule()
    def link_in_the_destination(self) -> None:
        self.faults.append("link")
        # `dst/new -> elsewhere`: whatever the source later holds under `new/`
        # is never written, read or deleted through the link.
        if os.path.lexists(self.here / "new") or not self.here.is_dir():
            return
        (self.elsewhere / "d").mkdir(parents=True)
        (self.elsewhere / "d" / "0").write_bytes(b"not the acquisition's")
        (self.here / "new").symlink_to(self.elsewhere)
        self.linked = True

    @precondition(
        lambda self: (
            self.delete_source and not self.disk and not self.root_away and not self.pinned and bool(self.current)
        )
    )
    @rule(data=st.data())
    def pin_a_source_file(self, data: st.DataObject) -> None:
        self.faults.append("pinned")
        # Freeing it will fail (EPERM) after its entry is journaled; the
        # journal must not then speak for a file that is still there.
        key = data.draw(st.sampled_from(sorted(self.current)))
        subprocess.run(["chattr", "+i", str(self.src / key)], check=True)
        self.pinned.add(key)

    @precondition(lambda self: not self.root_away and not self.frozen)
    @rule(pick=st.integers(0, 1 << 16))
    def damage_a_copy(self, pick: int) -> None:
        self.faults.append("damage")
        # Bit rot at the destination: one byte changed, size and mtime kept.
        ok = sorted(k for k, v in snapshot(self.view).items() if v and self.current.get(k) == v)
        if not ok:
            return
        key = ok[pick % len(ok)]
        path = self.here / key
        st_ = path.stat()
        damaged = bytes([path.read_bytes()[0] ^ 1]) + path.read_bytes()[1:]
        path.write_bytes(damaged)
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        self.versions[key].add(damaged)
        self.damaged.add(key)

    @precondition(lambda self: not self.root_away and not self.foreign and not self.unconfirmed)
    @rule()
    def caught_up(self) -> None:
        # Liveness, before any marker: every file the source holds now reaches the destination in
        # its last version within a bound (a damaged copy keeps its size and mtime and is found
        # only by the end's read; nothing goes through a link).
        if self.copier.poll() is not None:
            return
        # Of two names that fold to one, neither copy replaces the other: one of them waits.
        want = {k: v for k, v in self.current.items() if k not in self.damaged and self._twin(k) not in self.current}
        if self.linked:
            want = {k: v for k, v in want.items() if not k.startswith("new/")}

        # And every deletion the engine saw, mirrored (of two names that fold to one, the copy
        # may be the other's).
        gone = {k for k in self.gone_live if k not in self.current and self._twin(k) not in self.current}

        # The second target's copy is local and never damaged: all of the source.
        wants = [want, *([dict(self.current)] if self.second else [])]

        def arrived() -> bool:
            copies = [(snapshot(view), w) for view, w in zip(self._views(), wants, strict=True)]
            return all(all(now.get(k) == v for k, v in w.items()) and not gone & now.keys() for now, w in copies)

        try:
            wait_for(arrived, 20, "liveness: the copy to catch up with the source")
        except AssertionError as e:
            self.stuck = True  # the teardown does not wait for it again
            behind = []
            for view, w in zip(self._views(), wants, strict=True):
                now = snapshot(view)
                behind.append(
                    (str(view), sorted(k for k, v in w.items() if now.get(k) != v), sorted(gone & now.keys()))
                )
            raise AssertionError(
                f"{e}: (copy, not there as last written, not deleted): {behind}; {self.copier.status()}"
            ) from None

    @invariant()
    def nothing_lost_nothing_foreign(self) -> None:
        if not hasattr(self, "copier"):
            return
        self.copier.poll()
        for view in self._views():
            now = snapshot(view)
            for key, content in now.items():
                assert content in self.versions.get(key, set()), f"{key} holds bytes its source never had"
            for key in self.seen.get(view, {}).keys() - now.keys():
                assert key in self.deleted, f"{key} vanished from the destination without a deletion at the source"
            self.seen[view] = now
        # A destination belongs to one acquisition: a re-take under the name is another one.
        for view, (copy, marked) in zip(self._views(), self.frozen or [], strict=self.frozen is not None):
            assert snapshot(view) == copy, "the earlier take's copy changed after a re-take under its name"
            assert (view / "complete").is_file() == marked, "the earlier take's marker changed after a re-take"
        if self.linked:
            assert tree(self.elsewhere) == {"d/0": b"not the acquisition's"}, "written or deleted through a link"

    def _check_end(self, report: softcopy.Report | None) -> None:
        assert report is not None, f"the copy ends: {self.copier.status()}"
        for i, (t, view) in enumerate(zip(report.targets, self._views(), strict=True)):
            self._check_copy(t, view, primary=i == 0)

    def _check_copy(self, t: softcopy.TargetReport, view: Path, primary: bool) -> None:
        """One target's end. Faults at the destination (a link, damage, folded names) are the
        primary target's only."""
        if not self.faults:
            assert t.verified, f"a history without faults ends verified: {t}"
        # Live, proven live: with the kernel's own queue the final look finds nothing the events
        # did not announce (a write or a deletion), whatever else happened.
        assert self.lossy or t.found_at_end == 0, f"the watch missed events: {t}"
        assert not (self.foreign and t.verified), "verified against a folder that is not the acquisition"
        at_dst, at_src = snapshot(view), tree(self.src, skip_marker=True)  # snapshot: links not followed
        if self.frozen is None:
            # The marker means a whole copy of this acquisition, and stands over nothing else
            # (invariant 9); after a re-take, the earlier take's stays as it was (checked always).
            marked = (view / "complete").is_file()
            assert marked == t.verified, f"a marker ({marked}) over a copy verified {t.verified}: {t}"
        damaged = self.damaged if primary else set()
        through_link = primary and self.linked and any(k.startswith("new/") for k in at_src)
        assert not (through_link and t.verified), "verified although a file could only go through a link"
        for key, last in self.current.items():
            if key not in at_src:  # freed by softcopy
                assert self.delete_source, f"{key} deleted at the source without --delete-source"
                assert key not in self.pinned, f"{key} is immutable, yet gone"
                assert at_dst.get(key) == last, f"{key} freed without an identical copy"
        if self.delete_source and t.verified and not self.faults:
            self._freed_whole(t)
        if t.verified:
            # Whole: every file in its last version (a damaged copy keeps its size and mtime, so
            # only reading it, as --delete-source does, can tell); anything more at the
            # destination was deleted at the source, perhaps while no engine watched (kept).
            for key, last in self.current.items():
                assert key in at_dst, f"verified without {key}"
                assert at_dst[key] == last or key in damaged, f"verified with an old {key}"
            assert set(at_dst) - set(self.current) <= self.deleted | self.leftovers, t
            if ARRAY_META in self.current:
                stale = {k for k in at_dst if k.startswith("arr/c/")} - set(self.current) - self.leftovers
                assert not stale, f"verified with stale chunks {sorted(stale)}, read as data: {t}"

    def _freed_whole(self, t: softcopy.TargetReport) -> None:
        """A verified end with `--delete-source` and no fault leaves nothing at the source but its
        marker: a run killed while freeing is finished by the next (docs/design.md, "The end of a
        run": freeing survives a crash at any instant)."""
        left = sorted(tree(self.src, skip_marker=True))
        assert not left, f"verified, yet {left} not freed at the source: {t.source_kept}"

    @precondition(
        lambda self: (
            self.disk is None and not self.root_away and not self.foreign and not self.unconfirmed and not self.pinned
        )
    )
    @rule(data=st.binary(min_size=1, max_size=8))
    def retake_reusing_the_inode(self, data: bytes) -> None:
        # The acquisition ends (its marker over a verified copy), then `rm -rf`
        # and a new take under its name, in a folder ext4 hands the old one's inode. The earlier
        # take's copy, now its only one, and its marker stay as they are: the new take is another
        # acquisition, never written into them, by any target.
        (self.src / "complete").touch()
        self._check_end(self.copier.wait(60))
        self.frozen = [(snapshot(view), (view / "complete").is_file()) for view in self._views()]
        self.faults.append("re-take")  # the next runs refuse it: another acquisition
        self.gone_live.clear()
        old = self.src.stat().st_ino if self.src.exists() else -1
        shutil.rmtree(self.src, ignore_errors=True)
        event(f"a re-take got the old folder's inode: {mkdir_reusing(self.src, old)}")
        self.current.clear()
        for key in ("c/0/0", "0.0"):
            apply(self.src, "rename", key, data)
            self.current[key] = data
            self.versions.setdefault(key, set()).add(data)
        self.foreign = True
        self._new_engine()

    def _crash_at_the_end(self, kind: str, where: str, passes: int) -> None:
        """The end run as its own process, killed at `where`; then the next engine takes over."""
        self.copier.stop()
        assert self.copier.wait(30) is not None
        args: list[str | Path] = [self.src, self.dst, "--settle-time", "0.01", "-q"]
        args += ["--delete-source"] if self.delete_source else []
        args += ["--ssh-command", self.ssh_command, "--connections", str(CONNECTIONS)] if self.ssh_command else []
        env = dict(os.environ)
        pre: list[str] = []
        if kind == "point":
            env["SOFTCOPY_FAILPOINTS"] = f"{where}={passes}*off->return"
        else:  # killed on entering the unlink (or set-aside, or publishing rename) of `where`
            # (at the destination only where softcopy's own process makes it: not over ssh, where
            # the server does; its freeing's unlinks at the source are softcopy's)
            pre = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(self.src / where), "-P", str(self.here / where)]
            pre += ["-e", f"trace={GOING}", "-e", f"inject={GOING}:signal=KILL"]
        r = subprocess.run(
            [*pre, *softcopy_cmd(*args)], check=False, env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode in (-9, 137, 0, 1, 2), (r.returncode, r.stderr)
        self.nothing_lost_nothing_foreign()
        at_dst, at_src = snapshot(self.view), tree(self.src, skip_marker=True)
        for key, last in self.current.items():
            if key not in at_src:
                assert at_dst.get(key) == last, f"{key} freed without an identical copy (killed at {where})"
        self._new_engine()

    def teardown(self) -> None:
        try:
            if not (self.root_away or self.foreign or self.unconfirmed or self.stuck):
                self.caught_up()  # liveness at the end of every history, not only where drawn
            if self.root_away:
                self.away.rename(self.src)
            (self.src / "complete").touch()
            if self.crash:
                self._crash_at_the_end(*self.crash)
            self._check_end(self.copier.wait(60))
            if self.pinned:
                # A second run over what the first freed in part: its journal names a file
                # whose freeing failed and which is still there.
                freed = {k for k in self.current if not (self.src / k).exists()}
                self.current = {k: v for k, v in self.current.items() if k not in freed}
                self.leftovers |= freed  # their copies stay: the journal says they were freed
                (self.src / "complete").unlink(missing_ok=True)  # or the run would end as it starts
                self._new_engine()
                (self.src / "complete").touch()
                self._check_end(self.copier.wait(60))
        finally:
            if hasattr(self, "copier"):  # not where the first engine failed to start: clean up still
                self.copier.stop()
                self.copier.wait(10)
            # Immutable files, wherever a rename took them, are made mutable again.
            subprocess.run(["chattr", "-R", "-i", str(self.tmp)], check=False, capture_output=True)
            for mnt in self.mounts:
                subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
            self.fuse.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


# To an ssh destination, a sixth as many sequences per run (each engine start starts ssh sessions):
# CI's 13 took 47 s on the 2-core machine, its 80 local ones 89 s.
SSH_EXAMPLES = max(EXAMPLES // 6, 4)
CONNECTIONS = 2  # two sessions: requests in flight on both, no order between them, fewer to start


# Lost events (a queue of one) over ssh only in the random search (`make model-long`): in CI's fixed
# histories they met the open finding `test_a_file_deleted_with_its_events_lost_after_a_restart_is_
# mirrored_live` at random (a deletion mirrored past the liveness bound, never a loss), which the
# named test holds; the local machine's fixed histories draw them as before.
LOSSY_OVER_SSH = os.environ.get("SOFTCOPY_HYPOTHESIS") == "random"


class AcquisitionOverSsh(Acquisition):
    """The same histories, the copy over ssh (docs/design.md, "The ssh destination: the SFTP
    client") to the loopback server, which writes to a folder here: the model looks at it as at a
    local copy, and damages and links it there. The end is killed at its named steps and at the
    unlink of a source file as to a local destination; not at a destination's unlink, which the
    server makes, not softcopy (`verify.prune` stands for it). A killed run's claim is taken over
    in seconds (`SOFTCOPY_CLAIM_STALE`, set by the test), not 30."""

    sshd: Sshd  # the test's loopback server, set by the test for its histories

    @initialize(
        delete_source=st.booleans(),
        crash=CRASHES,
        disk=st.booleans(),
        dst=st.just("ssh"),
        lossy=st.booleans() if LOSSY_OVER_SSH else st.just(False),
        second=st.sampled_from([False, False, True]),
        opening=st.lists(WRITER_OPS, min_size=1, max_size=4),
    )
    def start(
        self,
        delete_source: bool,
        crash: Crash,
        disk: bool,
        dst: str,
        lossy: bool,
        second: bool,
        opening: list[WriterOp],
    ) -> None:
        super().start(delete_source, crash, disk, dst, lossy, second, opening)

    def _destination(self, kind: str) -> None:
        server = self.tmp / "server"
        server.mkdir()
        self.arm, self.casefold = None, False
        self.ssh_command = ssh_command(self.sshd)
        self.dst = f"root@127.0.0.1:{server / 'out.zarr'}"
        self.here = self.view = server / "out.zarr"


# The service form: one service over an acquisitions folder, for a few sequences per run (each
# starts a service process and waits for verified copies: seconds each).
SERVICE_EXAMPLES = max(EXAMPLES // 16, 4)
TAKE_KEYS = ["0.0", "c/0/0", "c/1/0"]
NAMES = ["x.zarr", "y.zarr"]
# An end step the service kills itself at (docs/design.md, "Crash points"), at its Nth pass.
CRASH_POINTS = st.tuples(st.sampled_from(POINTS), st.integers(0, 2))
Point = tuple[str, int]


@dataclass
class Take:
    """One acquisition: a folder under the acquisitions folder, from its making to its `rm -rf`.
    Every byte it writes begins with its `tag`, so a copy tells whose it is."""

    name: str
    tag: bytes
    files: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, set[bytes]] = field(default_factory=dict)
    ended: bool = False
    removed: bool = False


class Lab(RuleBasedStateMachine):
    """`softcopy 'ACQ/*.zarr' DST` for months (docs/design.md, "Service"): acquisitions begin, are
    written, end, are removed and taken again under their names (`rm -rf`, a new take, often on
    the old folder's inode), while the service is killed (SIGKILL) at an end step and started
    again. After every step: every destination folder holds one take's bytes only; a marker stands
    only over a copy equal to its take's files, and a copy once marked never changes again."""

    @initialize(
        crash=st.one_of(st.none(), CRASH_POINTS),
        first=st.lists(st.tuples(st.sampled_from(TAKE_KEYS), st.integers(0, 255)), min_size=1, max_size=3),
    )
    def start(self, crash: Point | None, first: list[tuple[str, int]]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="softcopy-lab-"))
        self.acq, self.dst = self.tmp / "acq", self.tmp / "dst"
        self.reports = self.tmp / "reports"
        for folder in (self.acq, self.dst, self.reports):
            folder.mkdir()
        self.takes: list[Take] = []
        self.marked: dict[str, dict[str, bytes]] = {}  # destination folder -> its copy when its marker stood
        self.seen: dict[str, dict[str, bytes]] = {}
        self.services = 0
        self.stack = ExitStack()
        self._serve(crash)
        self.acquire(0, first, ends=False, kill=None, crash=("", 0))  # an acquisition under way

    def _serve(self, crash: Point | None) -> None:
        """Starts the service; `crash`: the end step at which it kills itself (as kill -9)."""
        self.services += 1
        env = {**os.environ, "SOFTCOPY_FAILPOINTS": f"{crash[0]}={crash[1]}*off->return" if crash else ""}
        notify = self.tmp / f"notify-{self.services}.sock"
        sock = self.stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        sock.bind(str(notify))
        sock.settimeout(30)
        self.log = self.tmp / f"service-{self.services}.log"
        with self.log.open("wb") as out:
            args = softcopy_cmd(
                self.acq / "*.zarr", self.dst, "--settle-time", "0.01", "--report", self.reports / "{name}.json"
            )
            self.proc = subprocess.Popen(args, env={**env, "NOTIFY_SOCKET": str(notify)}, stdout=out, stderr=out)
        assert sock.recv(256) == b"READY=1", "the service is ready"

    def _supervise(self) -> None:
        """A service that died (at its crash point) is started again, as systemd would."""
        if self.proc.poll() is not None:
            assert self.proc.returncode in (-9, 137), (self.proc.returncode, self.log.read_text(errors="replace"))
            event("the service killed at an end step")
            self._serve(None)

    def _write(self, take: Take, key: str, fill: int) -> None:
        data = take.tag + bytes([fill]) * (1 + fill % 16)
        apply(self.acq / take.name, "rename", key, data)
        take.files[key] = data
        take.versions.setdefault(key, set()).add(data)

    def _copy_of(self, take: Take) -> str | None:
        """The destination folder whose marker stands over exactly this take's files, once the
        service's report on it says verified: its run is over (a lab deletes an acquisition when
        softcopy says so, not when the marker appears, while the run still watches the source)."""
        return next((d for d, files in self.marked.items() if files == take.files and self._reported(d)), None)

    def _reported(self, copy: str) -> bool:
        # A service killed between the marker and its report leaves no report: the next one
        # says in its log that the copy is already verified (and writes none).
        said = f"already verified at {self.dst / copy};"
        if any(said in log.read_text(errors="replace") for log in self.tmp.glob("service-*.log")):
            return True
        try:
            return bool(json.loads((self.reports / f"{copy}.json").read_text())["status"] == "verified")
        except (OSError, ValueError):
            return False

    def _wait_verified(self, take: Take) -> None:
        def verified() -> bool:
            self._supervise()
            self.one_take_per_copy()
            return self._copy_of(take) is not None

        try:
            wait_for(verified, 40, f"{take.name} ({take.tag!r}) verified at the destination (liveness)")
        except AssertionError as e:
            raise AssertionError(f"{e}; the service said:\n{self.log.read_text(errors='replace')[-3000:]}") from None

    def _retake(self, old: Take) -> Take:
        """One destination, one acquisition (docs/design.md): once its copy is verified, an acquisition is deleted and taken again
        under its name (ext4 often hands the new folder the old one's inode). The new take is
        another acquisition: copied beside, never over the first take's copy."""
        self._wait_verified(old)
        ino = (self.acq / old.name).stat().st_ino
        shutil.rmtree(self.acq / old.name)
        old.removed = True
        event(f"a re-take got the old folder's inode: {mkdir_reusing(self.acq / old.name, ino)}")
        return self._begin(old.name)

    def _begin(self, name: str) -> Take:
        take = Take(name, b"take%03d:" % len(self.takes))
        self.takes.append(take)
        (self.acq / name).mkdir(exist_ok=True)
        return take

    # One rule, so that every step is the writer's (Hypothesis' swarm testing would switch a rule
    # of several off for whole sequences), and a kill -9 after it in a step of four.
    @rule(
        pick=st.integers(0, 1),
        writes=st.lists(st.tuples(st.sampled_from(TAKE_KEYS), st.integers(0, 255)), min_size=1, max_size=3),
        ends=st.booleans(),
        kill=st.sampled_from([None, None, "now", "at an end step"]),
        crash=CRASH_POINTS,
    )
    def acquire(self, pick: int, writes: list[tuple[str, int]], ends: bool, kill: str | None, crash: Point) -> None:
        # A timepoint of the acquisition under this name (a new one where none is, a re-take
        # where one ended), perhaps its end (the marker); then perhaps the service killed
        # (SIGKILL) and started again, armed to kill itself at an end step.
        self._supervise()
        name = NAMES[pick]
        take = next((t for t in self.takes if t.name == name and not t.removed), None)
        if take is None:
            take = self._begin(name)
        elif take.ended:
            take = self._retake(take)
        for key, fill in writes:
            self._write(take, key, fill)
        if ends:
            (self.acq / name / "complete").touch()
            take.ended = True
        if kill:
            self.proc.kill()
            self.proc.wait()
            self._serve(crash if kill == "at an end step" else None)

    @invariant()
    def one_take_per_copy(self) -> None:
        if not hasattr(self, "proc"):
            return
        try:
            self._one_take_per_copy()
        except AssertionError as e:
            said = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("service-*.log")))
            raise AssertionError(f"{e}; the services said:\n{said}") from None

    def _one_take_per_copy(self) -> None:
        by_tag = {t.tag: t for t in self.takes}
        for folder in (p for p in self.dst.iterdir() if p.is_dir() and not p.name.startswith(".")):
            now, d = snapshot(folder), folder.name
            owners = {content[:8] for content in now.values()}
            assert len(owners) <= 1, f"{d} holds the copies of several acquisitions: {sorted(owners)}"
            for key, content in now.items():
                take = by_tag.get(content[:8])
                assert take is not None and content in take.versions.get(key, set()), f"{d}/{key}: bytes never written"
            for key in self.seen.get(d, {}).keys() - now.keys():
                raise AssertionError(f"{d}/{key} vanished from the destination (no take deleted it)")
            self.seen[d] = now
            if d in self.marked:
                assert (folder / "complete").is_file() and now == self.marked[d], f"{d}: a marked copy changed"
            elif (folder / "complete").is_file():
                take = by_tag.get(next(iter(now.values()), b"")[:8])
                assert take is not None and take.ended and now == take.files, f"{d}: a marker over {sorted(now)}"
                self.marked[d] = now

    def teardown(self) -> None:
        try:
            if hasattr(self, "proc"):
                # Every take ends, and each still there is verified within a bound.
                for take in self.takes:
                    if not take.removed:
                        (self.acq / take.name / "complete").touch()
                        take.ended = True
                        self._wait_verified(take)
        finally:
            if hasattr(self, "proc"):
                self.proc.kill()
                self.proc.wait()
            self.stack.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


# The seed CI's histories of `Acquisition` are drawn from: the one Hypothesis derived from the
# machine's text when they were chosen, pinned so that an edit to that text (a fix, a comment, a
# destination added) does not reshuffle them. A change to its rules or strategies still does.
CI_SEED = int(
    "1292733919014023796385273294861299825269590140397858124092057348885452599963344449319664377149847269807602431194"
    "2659"
)


@pytest.mark.kernel_wide
@pytest.mark.timeout(60 + 10 * EXAMPLES)
def test_model(request: pytest.FixtureRequest) -> None:
    run_model(request, Acquisition, EXAMPLES, pinned=CI_SEED)


@pytest.mark.kernel_wide
@pytest.mark.timeout(60 + 15 * SSH_EXAMPLES)
def test_model_over_ssh(request: pytest.FixtureRequest, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run killed at the end leaves its claim: the next one takes it over once stale.
    monkeypatch.setenv("SOFTCOPY_CLAIM_STALE", "3")
    monkeypatch.setattr(AcquisitionOverSsh, "sshd", sshd, raising=False)
    run_model(request, AcquisitionOverSsh, SSH_EXAMPLES)


@pytest.mark.kernel_wide
def test_a_file_deleted_with_its_events_lost_after_a_restart_is_mirrored_live(monkeypatch: pytest.MonkeyPatch) -> None:
    # The history the random search shrank to (over ssh, seed 1; the same to local folders),
    # replayed step by step on the model, the same checks. `a/b/c/0`, copied before the restart,
    # is settled into its folder's record by the restarted engine; deleted with its event lost, the rescan finds
    # the record failed and must name it from the copies (docs/design.md, "Memory"). Before, its
    # copy stayed until the end, in 12 of 17 replays on the 2-core machine (whether the event is lost
    # is up to the scheduler), so six are run, each a history of its own (all six passing by chance
    # then: under 0.1%). Its end, events lost again, meets the copy of `c/0/0`, deleted before the
    # restart: an extra, no change since verification (docs/design.md, "The end of a run").
    monkeypatch.setattr(sys.modules[__name__], "event", lambda _: None)  # no Hypothesis run to note in
    for _ in range(6):
        replay_a_deletion_lost_after_a_restart()


@pytest.mark.kernel_wide
def test_a_chunk_corrected_unseen_then_its_copy_touched_is_copied_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The model's rule `rewrite_unseen_then_touch_the_copies` on its own, replayed step by step
    # with the model's checks: a resumed run took the stale copy by its ctime (renewed by the
    # snapshot or the chmod) and the copy never caught up (red before the copy's mark, both ways).
    monkeypatch.setattr(sys.modules[__name__], "event", lambda _: None)  # no Hypothesis run to note in
    for how in ("snapshot", "chmod"):
        state = Acquisition()
        try:
            state.start(delete_source=False, crash=None, disk=False, dst="local", lossy=False, second=False, opening=[])
            state.rewrite_unseen_then_touch_the_copies(Picked("c/0/0"), 7, how)
            state.caught_up()
        finally:
            state.teardown()


@pytest.mark.kernel_wide
def test_a_root_made_again_and_again_is_followed_to_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # A history the search found over ssh (also to local folders): the writer deletes and makes
    # the root again five times in quick succession. A root made again is adopted by what its
    # name leads to, then watched by that name; made again once more in between, the watches
    # landed on the newer folder, the adopted one's deletion was never heard, and the run stayed
    # paused ("another folder now") to its end, not verified: 10 of 40 replays before, 0 of 40
    # after (docs/design.md, invariant 8). Twelve replays: all twelve passing by chance then: 3 %.
    monkeypatch.setattr(sys.modules[__name__], "event", lambda _: None)  # no Hypothesis run to note in
    for _ in range(12):
        state = Acquisition()
        try:
            opening = [("in_place", "a/b/c/0", b"B\x86!S")]
            state.start(
                delete_source=False, crash=None, disk=False, dst="local", lossy=False, second=False, opening=opening
            )
            for _ in range(2):
                state.writer_replaces_root()
            state.write(data=b"\xa3\xbc\x9b\xaa", key="0.0", kind="in_place")
            state.write(data=b"+\xb2\x11", key="a/b/c/0", kind="rename_none")
            for _ in range(3):
                state.writer_replaces_root()
            state.nothing_lost_nothing_foreign()
        finally:
            state.teardown()


class Picked:
    """A draw decided in advance: what `st.data()` gives a rule, for a replay."""

    def __init__(self, value: object) -> None:
        self.value = value

    def draw(self, _strategy: object) -> object:
        return self.value


def replay_a_deletion_lost_after_a_restart() -> None:
    state = Acquisition()
    try:
        opening = [("rename", "0.0", b"\xc2\x00\xb7NV\xae\x1c`\x8eG\xb8")]
        state.start(delete_source=False, crash=None, disk=False, dst="local", lossy=True, second=True, opening=opening)
        state.timepoint([("delete", "a/b/c/0", b"")])  # arr/c/0/0
        # a/b/c/0 and Log written, 0.0 and c/0/0 deleted
        writes = [
            ("rename", "a/b/c/0", b"\x82\x97Zq\x81)fF5<"),
            ("delete", "arr/c/1/1", b""),
            ("rename_none", "Log", b"*"),
        ]
        state.timepoint([*writes, ("delete", "log", b"")])
        state.rename_to_another_case(stopped=True)  # stopped, Log renamed log, started again
        state.timepoint(
            [("in_place", "zarr.json", b";`\xf9\xd1\x8c6B\x976"), ("delete", "arr/c/1/1", b""), ("delete", "log", b"")]
        )
        if state.gone_live != {"a/b/c/0", "log"}:  # not the failure: the steps no longer make that history
            raise RuntimeError(f"not the history found: deleted while watched {state.gone_live}")
        writes = [("rename_none", "0.0", b"\xbe\xd1"), ("in_place", "zarr.json", b"\xef,\x9a\xa3\x0f")]
        state.timepoint(
            [*writes, ("in_place", "log", b"\x9c\xc0-"), ("in_place", "zarr.json", b";`\xf9\xd1\x8c6B\x976")]
        )
        state.caught_up()
    finally:
        state.teardown()


@pytest.mark.kernel_wide
@pytest.mark.timeout(60 + 20 * SERVICE_EXAMPLES)
def test_model_of_the_service(request: pytest.FixtureRequest) -> None:
    run_model(request, Lab, SERVICE_EXAMPLES, steps=6)


def run_model(
    request: pytest.FixtureRequest,
    machine: type[RuleBasedStateMachine],
    examples: int,
    steps: int = 8,
    pinned: int | None = None,
) -> None:
    """Runs `examples` histories of `machine`; derandomized (CI), those of the seed `pinned` where
    given, else of the seed Hypothesis derives from `machine`'s text."""
    profile = os.environ.get("SOFTCOPY_HYPOTHESIS", "softcopy")
    given = request.config.getoption("hypothesis_seed", default=None)
    derandomized = given is None and settings().derandomize
    how = "derandomized: the same sequences every run" if derandomized else f"seed {given}"
    print(f"model test: profile {profile}, {examples} sequences, {how}")
    if derandomized and pinned is not None:
        # A subclass carries the seed, and inherits a `@reproduce_failure` put on the machine.
        machine = seed(pinned)(types.new_class(machine.__name__, (machine,)))
    # Derandomized (CI): the first failure as found; shrinking replays real processes for minutes.
    phases = [p for p in Phase if p != Phase.shrink or not derandomized]
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            deadline=None,
            phases=phases,
        ),
    )
