"""The service form (docs/design.md, "Service"): a target whose source has a glob in its last component
(`/acquisition/*.zarr`) copies every folder that matches, present at the start or appearing later,
to `destination/<its name>`, each as an acquisition of its own, until the service is stopped.

The acquisitions folder is watched by the engine's notify watcher (`Arrivals`: names made or moved
in), then listed, so a folder made meanwhile is seen either way. Each acquisition gets a `Copier` of
its own: its own engine, workers, marker, verification, report. Several in flight at once each have
their own workers at idle IO priority; the kernel shares the disk between them and
`--max-total-rate` caps their sum (docs/design.md, "Service").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from rich.console import Console

from softcopy import zarr
from softcopy._softcopy import (
    Owner,
    RateBudget,
    SoftcopyError,
    UnfinishedCopy,
    destination_file,
    destination_owner,
    note_let_go,
    same_filesystem,
    same_folder,
    unfinished_copies,
    verify_trees,
)
from softcopy.config import Destination, Target, matches
from softcopy.display import emit_json, print_report
from softcopy.exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from softcopy.metrics import Row
from softcopy.notify import ServiceManager, Webhook
from softcopy.run import Copier, Progress, Report, TargetReport, write_report
from softcopy.session import Shows, run_session
from softcopy.status import Shown, still
from softcopy.verify import differences, freeing_left
from softcopy.watching import (
    Decided,
    Devices,
    Identity,
    Starter,
    StartRequest,
    Watch,
    acquisitions_in,
    devices_of,
    identity_of,
    shown,
    unmounted,
)

log = logging.getLogger("softcopy")


LOOK_EVERY = 1.0
"""Seconds between two looks at the acquisitions folders and at the folders of the copies in flight."""
RELIST_EVERY = float(os.environ.get("SOFTCOPY_RELIST_EVERY", "10"))
"""Seconds between two listings of each acquisitions folder: a name whose event was lost is found,
the records of ended acquisitions whose folders are gone are dropped, and an ended acquisition's
folder written into again (a take into the folder freed) is taken again. `SOFTCOPY_RELIST_EVERY`
sets it for tests only: a long one proves a folder was heard of, not found by a listing."""
LET_GO_AFTER = 10.0
"""Seconds an acquisition's folder may be away from its name (its copy paused) before it is let go."""
UNMOUNTED = "its filesystem is not mounted there now"
"""What the log says, once, of an acquisition whose folder's filesystem was unmounted."""
RETRY_FIRST, RETRY_MAX = 1.0, 300.0
"""Backoff between two tries at starting a copy that could not start."""
RECENT = 100
"""Ended acquisitions kept for the display and the metrics (the oldest are let go)."""
NOT_BEGUN = ("starting", "waiting")
"""An engine's phases before it found its folder and began copying: nothing of the acquisition may
be at the destination yet."""

WEBHOOK_AT_STOP = 1.5
"""Seconds after a stop began by which the webhook's deliveries are given up (and logged), so the
process ends within the 2 s a stop promises."""


class NotCopied(Enum):
    """Why an acquisition that matched has no copy running."""

    VERIFIED_EARLIER = "verified"
    """Its marker is at the destination as copied: a run verified it."""
    CANNOT_START = "failed"
    """Its copy could not start (its folder could not be looked at, the destination refused,
    claimed by another run): tried again with backoff."""


@dataclass
class Retry:
    """An acquisition whose copy could not start, tried again with backoff."""

    since: float
    tries: int = 0
    next_at: float = 0.0
    told: bool = False
    """Its report and webhook were sent."""


@dataclass
class Trouble:
    """A copy whose destination is unavailable (or that gave up), while it is."""

    since: float
    told: bool = False
    """A person was told (the webhook's `attention`)."""


@dataclass
class Acquisition:
    """One folder that matched, and the copy of it."""

    name: str
    target: Target
    pattern: str
    """The source pattern it matched (the metrics' label)."""
    of: Target
    """The pattern target it matched."""
    copier: Copier | None = None
    report: TargetReport | None = None
    """Set when its copy ended."""
    not_copied: NotCopied | None = None
    """Why it was not copied, when it was not."""
    why: str = ""
    """What kept it from starting (with `NotCopied.CANNOT_START`)."""
    started: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    identity: Identity | None = None
    """The folder's device, inode and birth time: a folder made again under the name is another
    acquisition, also on the same inode. None while it cannot be looked at."""
    devices: Devices = ()
    """The devices its folder and those above it were on when it was taken: an unmount is told
    from a deletion by them (`unmounted`)."""
    parent: Identity | None = None
    """Its acquisitions folder's identity when it was taken: a folder that left its name together
    with its parent (the acquisitions folder moved away) is not followed by its engine."""
    unmounted: bool = False
    """Its filesystem is not mounted where it was (said once; waited for, never let go)."""
    starting: bool = False
    """Its destination is being looked at (by a starter thread)."""
    asked: float = dataclasses.field(default_factory=time.monotonic)
    """When its start was asked for: one that has not finished for `tell_after` s is named, once."""
    start_told: bool = False
    retry: Retry | None = None
    away_since: float | None = None
    """Since when its folder is away from its name while its copy is paused."""
    let_go: str | None = None
    """Why it is being let go (its copy stopped)."""
    trouble: Trouble | None = None
    """Its destination unavailable: kept with it, so it goes when the trouble ends or with it."""
    report_file: Path | None = None
    """Where its reports go, chosen at its first (`report_file`); kept while its start is retried."""
    unreported: bool = False
    """Verified by an earlier run that wrote no report: copied (verified) again for its report,
    whose webhook goes only with the report."""

    @property
    def folder(self) -> Path:
        return self.of.source.parent / self.name

    @property
    def running(self) -> Copier | None:
        """Its copy while it runs: None before it started and once it ended."""
        return self.copier if self.report is None else None

    @property
    def in_flight(self) -> bool:
        return self.running is not None


def already_verified(target: Target) -> bool:
    """The destination holds this acquisition's marker, as copied from its source (same size, same
    modification time): a run verified it, and the acquisition was over. Such a folder is not
    copied or walked again on each start of the service (a lab keeps dozens of finished archives
    beside the live one); `softcopy verify` checks one on demand. The destination's marker is
    looked at through the engine's backend (over SFTP for an ssh destination), never through a link."""
    try:
        src = (target.source / target.marker).stat()
        dst = destination_file(target.destination, target.marker, ssh_command=target.ssh_command)
    except (OSError, SoftcopyError):
        return False
    # A copy carries its source's mtime; SFTP and many shares keep whole seconds.
    return dst is not None and dst.is_file and src.st_size == dst.size and abs(src.st_mtime_ns - dst.mtime_ns) < 2e9


def same_files(target: Target) -> bool:
    """Every file of the source is at the destination with its size and modification time, and
    nothing else is there (`softcopy verify` without contents): a whole walk of both, asked only
    of a copy recorded by inode number alone, whose marker proves nothing (a re-take's may match
    the earlier one's within the timestamps' precision)."""
    arrays, unreadable = zarr.discover(target.source)
    if unreadable:
        return False
    v = verify_trees(target.source, target.destination, arrays, marker=target.marker, ssh_command=target.ssh_command)
    return not differences(v, v.missing, v.extra) and not v.extra


class Service:
    """Copies every acquisition matching each pattern target, until `stop()`. Its footprint stays
    bounded whatever happens (docs/design.md, "Service, month after month"): an acquisition whose
    folder left its name is let go, an ended one leaves only its identity while its folder is there,
    and the last `RECENT` ended ones are kept for the display."""

    def __init__(
        self,
        patterns: list[Target],
        *,
        log_events: bool = False,
        max_total_rate: int | None = None,
        ended: Callable[[Acquisition], None] | None = None,
        verified_earlier: Callable[[Acquisition], None] | None = None,
        reported: Callable[[Target], bool] | None = None,
        tell_after: float = 600.0,
    ) -> None:
        self.patterns = patterns
        self._log_events = log_events
        # One budget for every acquisition in flight (docs/design.md, "Service").
        self._budget = None if max_total_rate is None else RateBudget(max_total_rate)
        self._ended = ended
        self._verified_earlier = verified_earlier
        self._reported = reported
        self._tell_after = tell_after
        self._watches = [Watch(p) for p in patterns]
        self._starter = Starter(self._decide, [p.destination for p in patterns])
        self.acquisitions: dict[Path, Acquisition] = {}
        """In flight, starting, or that could not start."""
        self._done: dict[Path, tuple[Identity, int]] = {}
        """Ended (or verified earlier), by folder: not taken again while that folder is there."""
        self.recent: deque[Acquisition] = deque(maxlen=RECENT)
        self._unlooked = list(patterns)
        """Patterns whose destinations have not yet been looked at for copies left unfinished."""
        self._left: queue.SimpleQueue[tuple[Target, list[UnfinishedCopy] | None]] = queue.SimpleQueue()
        """What those looks found (None: the destination could not be listed; looked at again)."""
        self._next_look = self._next_relist = 0.0
        self.rows: list[Row] = []
        """What the metrics show, remade each step (read by the metrics thread)."""
        self.shown = Shown([], [])
        """What `softcopy status` shows, remade each step (read by the metrics thread)."""

    def start(self) -> None:
        """Watches each acquisitions folder, then takes every folder already there. A missing one
        is refused unless its pattern waits for its source: then it is watched once it is there
        (`Watch.renew`, at each step), holding no other pattern meanwhile."""
        for w in self._watches:
            if not w.pattern.wait_for_source and not w.folder.is_dir():
                raise FileNotFoundError(f"the acquisitions folder {w.folder} does not exist (or is not a folder)")
        for w in self._watches:
            w.renew()
        self._relist(time.monotonic())

    def _relist(self, now: float) -> None:
        self._next_relist = now + RELIST_EVERY
        for w in self._watches:
            if w.watching:  # a folder not there is said once by its watch, not at each listing
                self._list(w.pattern)

    def _list(self, pattern: Target) -> None:
        parent = pattern.source.parent
        try:
            names = acquisitions_in(pattern)
        except OSError as e:
            # Missing or unreadable: no evidence about any acquisition; its watch is made again and
            # the folder listed once it is back (`Watch.renew`).
            log.warning("cannot list the acquisitions folder %s: %s", parent, e)
            return
        listed = set(names)
        for gone in [f for f in self._done if f.parent == parent and f.name not in listed]:
            del self._done[gone]
        for name in names:
            self._consider(pattern, name)
        if pattern in self._unlooked:
            self._look_for_left(pattern)

    def _look_for_left(self, pattern: Target) -> None:
        """Once per start, after the first listing of its acquisitions folder: the destination's
        unfinished copies of folders that are not under their names now were left by a service
        killed or stopped before it let them go (renamed aside, deleted); each is named in a report
        and a webhook as let go, then noted so at the copy, so once (docs/design.md, "Service, month
        after month"). Only on evidence: every folder under the pattern has a known identity, and
        the acquisitions folder is on the filesystem the copy's source was on (not unmounted, not
        another disk mounted under the device number it had)."""
        parent = pattern.source.parent
        here = [a.identity for a in self.acquisitions.values() if a.folder.parent == parent]
        here += [identity for f, (identity, _) in self._done.items() if f.parent == parent]
        try:
            disk = identity_of(parent)
        except (OSError, SoftcopyError):
            return
        if disk is None:
            return
        if any(i is None for i in here):
            return  # a folder that could not be looked at may be any copy's source: looked at later
        self._unlooked.remove(pattern)
        known = [i for i in here if i is not None]

        def look() -> None:
            try:
                found = unfinished_copies(pattern.destination, parent, pattern.marker, ssh_command=pattern.ssh_command)
            except (OSError, SoftcopyError) as e:
                log.warning("cannot look for unfinished copies in %s: %s", pattern.destination, e)
                self._left.put((pattern, None))
                return
            # Only copies of folders this pattern takes: a CLI run's copy of another folder there is not its own.
            ours = [u for u in found if matches(u.name, pattern.source.name)]
            left = [
                u for u in ours if same_filesystem(u.source, disk) and not any(same_folder(u.source, i) for i in known)
            ]
            self._left.put((pattern, left))

        threading.Thread(target=look, name="softcopy-left", daemon=True).start()

    def _tell_left(self) -> None:
        """Names each copy found left unfinished (`_look_for_left`) as let go, then notes it so."""
        while True:
            try:
                pattern, left = self._left.get_nowait()
            except queue.Empty:
                return
            if left is None:
                self._unlooked.append(pattern)
                continue
            log.info("looked for copies left unfinished in %s: %d", pattern.destination, len(left))
            for u in left:
                # Named as the service names its acquisitions: in the acquisitions folder.
                name = u.name
                source = pattern.source.parent / name
                why = (
                    f"let go: its folder {source} was not there (deleted or renamed) when the service started "
                    f"again; the copy at {u.copy} is kept as it is, unverified and without its marker"
                )
                log.warning("%s: %s", shown(name), why)
                acq = Acquisition(
                    name, dataclasses.replace(pattern, source=source, destination=u.copy), str(pattern.source), pattern
                )
                acq.let_go, acq.report = why, TargetReport(source, u.copy, "let go", fatal=why)
                if self._ended is not None:
                    self._ended(acq)
                self.recent.append(acq)
                # Told first, noted after: a note lost to a crash only names it once more.
                note = (u.copy, why, pattern.ssh_command)
                threading.Thread(target=_note, args=note, name="softcopy-note", daemon=True).start()

    def _consider(self, pattern: Target, name: str, *, again: bool = False) -> None:
        """A name that appeared or was listed (`again`: an acquisition whose start is retried now)."""
        if not matches(name, pattern.source.name):
            return
        folder = pattern.source.parent / name
        known = self.acquisitions.get(folder)
        if known is not None and known.in_flight:
            # Its engine (and the rule for folders that leave) decides: a look that fails here is no
            # evidence, and never a start that failed (which would start a second copy of it).
            return
        try:
            identity = identity_of(folder)
            devices = devices_of(folder) if identity is not None else ()
            parent = identity_of(folder.parent) if identity is not None else None
        except (OSError, SoftcopyError) as e:
            acq = known or Acquisition(name, pattern, str(pattern.source), pattern)
            self._failed_start(acq, f"its folder cannot be looked at: {e}")
            return
        if identity is None:
            if known is not None and known.retry is not None:
                del self.acquisitions[folder]  # it could not start, and it is gone: nothing to retry
            return
        # In flight or starting: its engine (and the rule for folders that leave) decides. Could not
        # start: tried again when due, or at once when another folder took the name.
        if known is not None and (known.retry is None or (not again and known.identity == identity)):
            return
        done = self._done.get(folder)
        if done is not None and done == (identity, _mtime(folder)):
            return
        # Its folder changed since its copy ended (a take written into the folder freed, whose
        # identity is the same): taken again; the destination's records say where it goes
        # (docs/design.md, "Service, month after month").
        self._done.pop(folder, None)
        acq = Acquisition(
            name,
            pattern,
            str(pattern.source),
            pattern,
            identity=identity,
            devices=devices,
            parent=parent,
            starting=True,
        )
        if known is not None and known.identity in (identity, None):
            # The same take, its start retried (one never looked at is taken for it).
            acq.report_file = known.report_file
            acq.retry = known.retry if known.identity == identity else None
        self.acquisitions[folder] = acq
        self._starter.ask(StartRequest(pattern, folder, name, identity, _mtime(folder)))

    def _decide(self, r: StartRequest) -> Decided:
        """On the starter thread: where the acquisition is copied, or that it was verified earlier."""
        try:
            target, whose = self._destination(r.pattern, r.folder, r.name)
        except (ValueError, OSError, SoftcopyError) as e:
            return Decided(r, error=str(e))
        earlier = whose == Owner.Finished or (whose != Owner.Free and already_verified(target))
        verified = earlier and not freeing_left(r.folder)
        # A copy a run verified and published, and no report says so (the service killed between
        # the marker and the report): a run verifies it again, for a report on evidence, not on
        # the marker alone (docs/design.md, "Service, month after month").
        unreported = verified and whose == Owner.Ours and self._reported is not None and not self._reported(target)
        return Decided(r, target, verified_earlier=verified and not unreported, owner=whose, unreported=unreported)

    def _answer(self, d: Decided) -> None:
        """Starts the copy the starter decided on (an answer for a folder since replaced is dropped)."""
        acq = self.acquisitions.get(d.request.folder)
        if acq is None or not acq.starting or acq.identity != d.request.identity:
            return
        acq.starting = False
        if d.error is not None or d.target is None:
            self._failed_start(acq, d.error or "no destination")
            return
        acq.target = d.target
        if d.verified_earlier:
            acq.not_copied = NotCopied.VERIFIED_EARLIER
            # A copy found with its marker and no record (made by hand, or before softcopy kept
            # records) was verified by no run: no report says it was.
            if self._verified_earlier is not None and d.owner != Owner.Unrecorded:
                self._verified_earlier(acq)
            log.info("%s: already verified at %s; not copied again", shown(acq.name), d.target.destination)
            self._forget(acq, d.request.mtime)
            return
        acq.unreported = d.unreported
        if d.unreported:
            log.info("%s: verified at %s, but no report says so: verified again", shown(acq.name), d.target.destination)
        else:
            log.info("%s: a new acquisition, copied to %s", shown(acq.name), d.target.destination)
        try:
            copier = Copier([d.target], log_events=self._log_events, total_budget=self._budget)
            copier.start()
        except (OSError, ValueError, SoftcopyError) as e:
            self._failed_start(acq, str(e))
            return
        acq.copier, acq.not_copied, acq.why, acq.retry = copier, None, "", None

    def _failed_start(self, acq: Acquisition, why: str) -> None:
        """One acquisition that cannot start (its folder cannot be looked at, its destination
        refused, claimed by another run) does not stop the service: it is tried again with backoff,
        and named in a report and a webhook once it has not started for `tell_after` s."""
        now = time.monotonic()
        self.acquisitions[acq.folder] = acq
        acq.starting, acq.not_copied, acq.why = False, NotCopied.CANNOT_START, why
        r = acq.retry = acq.retry or Retry(since=now)
        r.tries += 1
        wait = min(RETRY_FIRST * 2 ** min(r.tries - 1, 20), RETRY_MAX)
        r.next_at = now + wait
        log.error("%s: cannot be copied (tried %d times; again in %.0f s): %s", shown(acq.name), r.tries, wait, why)
        if not r.told and now - r.since >= self._tell_after:
            r.told = True
            self._tell_cannot_start(acq, f"cannot start: {why}")

    def _tell_cannot_start(self, acq: Acquisition, why: str) -> None:
        """A report and a webhook for an acquisition that has not started (it is still tried)."""
        acq.report = TargetReport(acq.folder, acq.of.destination / acq.name, "failed", fatal=why)
        if self._ended is not None:
            self._ended(acq)
        acq.report = None

    def _still_starting(self, acq: Acquisition, now: float) -> None:
        """Names a start that has not finished for `tell_after` s (its destination hangs), once."""
        acq.start_told = True
        why = f"cannot start (still trying): its destination has not answered for {now - acq.asked:.0f} s"
        log.error("%s: %s", shown(acq.name), why)
        self._tell_cannot_start(acq, why)

    def _destination(self, pattern: Target, folder: Path, name: str) -> tuple[Target, Owner | None]:
        """Where the acquisition in `folder` is copied: `destination/<name>`, unless that holds
        another acquisition's copy (an archive of the same name, an earlier take deleted and taken
        again): then the first of `<stem>-2<suffix>`, `<stem>-3<suffix>`, ... that is free or is
        this acquisition's (docs/design.md, "One destination, one acquisition"). The owner is None
        where it cannot be told."""
        stem, suffix = Path(name).stem, Path(name).suffix
        for n in range(1, 1000):
            candidate = name if n == 1 else f"{stem}-{n}{suffix}"
            target = dataclasses.replace(pattern, source=folder, destination=pattern.destination / candidate)
            try:
                whose, _ = destination_owner(folder, target.destination, target.marker, ssh_command=target.ssh_command)
            except (OSError, SoftcopyError):
                # Cannot be told (a file where the folder would go, an unreadable record): its
                # copy starts and fails there, with a report saying why, and nothing written.
                return target, None
            if whose == Owner.Claimed:
                raise ValueError(f"{target.destination} is another softcopy's destination now")
            # An unrecorded copy is taken as this acquisition's only where its marker shows a
            # verified copy of this very source (one made before softcopy kept records); one
            # recorded by inode number alone, which may be a re-take's that got the number back,
            # only where every file matches too. Neither is ever written into.
            if whose == Owner.Unrecorded and already_verified(target):
                return target, whose
            if whose == Owner.SameNumber and already_verified(target) and same_files(target):
                return target, whose
            if whose in (Owner.Free, Owner.Ours, Owner.Finished):
                if n > 1:
                    log.warning(
                        "%s: %s holds another acquisition's copy; this one is copied to %s",
                        name,
                        pattern.destination / name,
                        target.destination,
                    )
                return target, whose
        raise ValueError(f"no free destination name for {name} in {pattern.destination}")

    def step(self, timeout: float) -> None:
        """Takes new folders (waiting up to `timeout` s for one) and collects ended copies."""
        now = time.monotonic()
        if now >= self._next_look:
            self._look_around(now)
        deadline = now + timeout
        for w in self._watches:
            # At each step, not each look: a folder made in an acquisitions folder made again is
            # heard of at once, not up to a second later (never, if it left meanwhile).
            if w.renew():
                self._list(w.pattern)
            names, relist = w.wait(max(0.0, deadline - time.monotonic()) / len(self._watches))
            for name in names:
                self._consider(w.pattern, name)
            if relist:
                self._list(w.pattern)
        for d in self._starter.answers():
            self._answer(d)
        self._collect()
        self._tell_left()
        self.rows = [self._row(a) for a in (*self.recent, *self.acquisitions.values())]
        self.shown = Shown([self._now(a) for a in self.acquisitions.values()], [_ended(a) for a in self.recent])

    def _look_around(self, now: float) -> None:
        """Each `LOOK_EVERY`: every acquisitions folder listed each `RELIST_EVERY`, starts retried
        when due, and acquisitions whose folders left their names let go."""
        self._next_look = now + LOOK_EVERY
        if now >= self._next_relist:
            self._relist(now)
        for acq in list(self.acquisitions.values()):
            if acq.retry is not None and not acq.starting and now >= acq.retry.next_at:
                self._consider(acq.of, acq.name, again=True)
            elif self._gone_before_copying(acq):
                continue
            elif acq.in_flight and acq.let_go is None:
                self._look_at_folder(acq, now)
            elif acq.starting and not acq.start_told and now - acq.asked >= self._tell_after:
                self._still_starting(acq, now)

    def _gone_before_copying(self, acq: Acquisition) -> bool:
        """Lets an acquisition go at once when its folder is gone from its name before its copy
        began (its start waited for the destination; its engine waits for the folder to appear):
        nothing of it is at the destination, so no later start could name it, and its engine,
        never paused, would wait for ever (docs/design.md, "Service, month after month"). Whether
        it was let go."""
        if acq.let_go is not None or not (acq.starting or self._not_begun(acq)):
            return False
        try:
            if identity_of(acq.folder) is not None or unmounted(acq.folder, acq.devices):
                return False  # there (its copy takes what is there), or waited for
        except (OSError, SoftcopyError):
            return False  # cannot be looked at: no evidence that it left
        # An earlier run's copy of it (a resumed one) may be there: kept, as any copy let go.
        acq.let_go = (
            f"let go: its folder {acq.folder} is gone (deleted or renamed) before its copy began; nothing "
            f"was copied to {acq.of.destination} for it, and any earlier copy there is kept as it is, unverified"
        )
        log.warning("%s: %s", shown(acq.name), acq.let_go)
        if acq.copier is not None:
            acq.copier.stop()  # collected, and named, as any copy let go
            return True
        # Its start's answer, when it comes, finds it gone (`_answer`).
        acq.starting = False
        acq.report = TargetReport(acq.folder, acq.of.destination / acq.name, "let go", fatal=acq.let_go)
        self.acquisitions.pop(acq.folder, None)
        if self._ended is not None:
            self._ended(acq)
        self.recent.append(acq)
        return True

    @staticmethod
    def _not_begun(acq: Acquisition) -> bool:
        copier = acq.running
        return copier is not None and copier.status()[0].phase in NOT_BEGUN

    def _look_at_folder(self, acq: Acquisition, now: float) -> None:
        """Lets an acquisition go once its folder has been away from its name (deleted, renamed
        aside, another folder there) for `LET_GO_AFTER` s while its copy is paused: its engine
        follows only a folder deleted and made again at once (a writer's overwrite), so a copy
        paused so would wait, with its watches and threads, for ever."""
        try:
            here = identity_of(acq.folder)
        except (OSError, SoftcopyError):
            return  # cannot be looked at: no evidence that it left
        assert acq.copier is not None
        # The engine may have adopted a folder made again under the name (then it is not paused);
        # never one whose acquisitions folder left with it: an engine watches its own folder, which
        # moved along unseen, and follows a re-take only inside the same parent.
        follows = acq.copier.status()[0].paused is None and not _moved_with_parent(acq)
        if here == acq.identity or follows:
            if acq.unmounted:
                log.warning("%s: its filesystem is mounted again", shown(acq.name))
            acq.away_since, acq.unmounted = None, False
            return
        if unmounted(acq.folder, acq.devices):
            # Not a deletion: the disk or share it is on went away; its copy waits for it.
            if not acq.unmounted:
                log.warning("%s: %s; its copy waits for it", shown(acq.name), UNMOUNTED)
            acq.away_since, acq.unmounted = None, True
            return
        acq.away_since = acq.away_since or now
        if now - acq.away_since >= LET_GO_AFTER:
            where = "is gone" if here is None else "is another folder now"
            acq.let_go = (
                f"let go: its folder {acq.folder} {where} (deleted or renamed) for over {LET_GO_AFTER:.0f} s; "
                f"the copy at {acq.target.destination} is kept as it is, unverified and without its marker"
            )
            log.warning("%s: %s", shown(acq.name), acq.let_go)
            acq.copier.stop()

    def _collect(self) -> None:
        """Collects the copies that ended; a name whose folder was made again meanwhile (heard
        while the copy ran, and set aside) is looked at once more."""
        for acq, copier in self._copying():
            report = copier.poll()
            if report is None:
                continue
            # Read before anything after the end (its report, a webhook) gives a change time to hide.
            mtime = _mtime(acq.folder)
            self._end(acq, report.targets[0])
            # Its engine is let go: a service runs for months, one acquisition after another.
            acq.copier = None
            if acq.let_go is not None:
                # Told: not named again as left unfinished at the next start (`_look_for_left`).
                note = (acq.target.destination, acq.let_go, acq.target.ssh_command)
                threading.Thread(target=_note, args=note, daemon=True).start()
            self._forget(acq, mtime)
            self._consider(acq.of, acq.name)

    def _end(self, acq: Acquisition, report: TargetReport) -> None:
        """Sets how its copy ended (let go, if it was) and tells it."""
        acq.report = report if acq.let_go is None else dataclasses.replace(report, phase="let go", fatal=acq.let_go)
        if self._ended is not None:
            self._ended(acq)

    def _forget(self, acq: Acquisition, mtime: int) -> None:
        """An acquisition that ended (or was verified earlier) leaves the working set: its identity
        and its folder's modification time `mtime` (read as it ended) are kept while its folder is
        there (not taken again unless changed since), its row among the last `RECENT`."""
        self.acquisitions.pop(acq.folder, None)
        r = acq.report
        # Freed whole, yet files are there again: a take written into the emptied folder before
        # this was collected (its time would hide it): not ended, taken again at once.
        retaken = r is not None and r.source_deleted > 0 and not r.source_kept and _holds_files(acq.folder)
        if acq.let_go is None and acq.identity is not None and not retaken:
            self._done[acq.folder] = (acq.identity, mtime)
        self.recent.append(acq)

    def _row(self, a: Acquisition) -> Row:
        source, pattern = str(a.target.source), a.pattern
        if a.report is not None:
            r = a.report
            return Row(source, pattern, r.phase, r.files_copied, r.bytes_copied, r.errors, 0, 0.0)
        if a.copier is None:
            phase = "starting" if a.starting else a.not_copied.value if a.not_copied is not None else "failed"
            return Row(source, pattern, phase, 0, 0, 0, 0, 0.0)
        p = a.copier.status()[0]
        return Row(source, pattern, p.phase, p.files_copied, p.bytes_copied, p.errors, p.backlog, p.oldest_wait)

    def _now(self, a: Acquisition) -> Progress:
        """An acquisition of the working set as `softcopy status` shows it."""
        if a.copier is not None and a.report is None:
            return a.copier.status()[0]
        phase = "starting" if a.starting else "cannot start"
        return still(a.folder, a.target.destination, phase, errors=a.retry.tries if a.retry else 0, last_error=a.why)

    def _copying(self) -> list[tuple[Acquisition, Copier]]:
        return [(a, copier) for a in self.acquisitions.values() if (copier := a.running) is not None]

    def status(self) -> list[Progress]:
        """One snapshot per acquisition still copying."""
        return [s for _, copier in self._copying() for s in copier.status()]

    def needing_a_person(self, after: float) -> list[tuple[Acquisition, Progress, float]]:
        """Copies in flight whose destination has been unavailable for `after` s, or that gave up,
        with for how long: each once while its trouble lasts (docs/design.md, "Service")."""
        now, due = time.monotonic(), []
        for acq, copier in self._copying():
            p = copier.status()[0]
            if p.destination_trouble is None and not p.gave_up:
                acq.trouble = None
                continue
            t = acq.trouble = acq.trouble or Trouble(now)
            if not t.told and (p.gave_up or now - t.since >= after):
                t.told = True
                due.append((acq, p, now - t.since))
        return due

    def stop(self, timeout: float = 30) -> None:
        """Stops every copy in flight (each resumes on the next start)."""
        self._starter.close()
        # One whose folder left before its copy began is named now: the next start finds nothing of it.
        for acq in list(self.acquisitions.values()):
            self._gone_before_copying(acq)
        copying = self._copying()
        for _, copier in copying:
            copier.stop()
        for a, copier in copying:
            report = copier.wait(timeout)
            if report is not None:
                self._end(a, report.targets[0])


def _moved_with_parent(acq: Acquisition) -> bool:
    """Whether the acquisitions folder at `acq`'s parent path is not the one it was taken from
    (moved away, or made again); a parent that cannot be looked at is no evidence."""
    try:
        return acq.parent is not None and identity_of(acq.folder.parent) != acq.parent
    except (OSError, SoftcopyError):
        return False


def _note(copy: Destination, why: str, ssh_command: str | None) -> None:
    # The reason names folders whose names may not be UTF-8: the note is for a person to read.
    # A copy not there (let go before its copy began) is not noted: nothing for a later start to name.
    readable = why.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        note_let_go(copy, readable, ssh_command=ssh_command)
    except (OSError, SoftcopyError) as e:
        log.warning("cannot note at %s that it was let go (it is named again at the next start): %s", copy, e)


def _holds_files(folder: Path) -> bool:
    """Whether any file is below `folder` (it stops at the first); one that cannot be listed in
    full holds something, as far as anyone can tell."""
    try:
        return any(not p.is_dir() for p in folder.rglob("*"))
    except OSError:
        return True


def _mtime(folder: Path) -> int:
    """The folder's modification time (an entry made or removed in it changes it); -1 when it
    cannot be looked at, which matches nothing."""
    try:
        return folder.lstat().st_mtime_ns
    except OSError:
        return -1


def _status(acq: Acquisition, report: TargetReport) -> str:
    """The webhook's word for how an acquisition ended (docs/design.md, "Service, month after month")."""
    if report.ok:
        return "verified"
    if acq.let_go is not None:
        return "let go"
    if acq.not_copied is NotCopied.CANNOT_START or acq.starting:
        return "cannot start"
    return "failed" if report.fatal else "incomplete"


def _ended(acq: Acquisition) -> Progress:
    """An ended acquisition as `softcopy status` shows it (one verified earlier has no report)."""
    r = acq.report
    if r is None:
        return still(acq.folder, acq.target.destination, "verified")
    counts = {"files_copied": r.files_copied, "bytes_copied": r.bytes_copied, "errors": r.errors}
    return still(r.source, r.destination, _status(acq, r), elapsed=r.duration, last_error=r.fatal, **counts)


def _text(acq: Acquisition, report: TargetReport) -> str:
    what = "verified" if report.ok else report.phase
    line = f"softcopy: {shown(acq.name)} {what}: {report.files_at_destination} files at {report.destination}"
    if report.missing:
        line += f"; {len(report.missing)} missing"
    if report.fatal:
        line += f"; {report.fatal}"
    return line


def run_service(
    patterns: list[Target],
    console: Console,
    *,
    log_events: bool,
    max_total_rate: int | None,
    log_every: float,
    live: bool,
    report_path: str | None,
    json_lines: bool,
    webhook: Webhook | None,
    notify_after: float,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Runs the service until SIGTERM or Ctrl-C; returns the exit code (143 or 130: a service
    never ends by itself)."""
    stop_code = [EXIT_SIGTERM]
    """The exit code the report of an acquisition stopped in flight carries."""

    def ended(acq: Acquisition, *, late: bool = False) -> None:
        """Reports how `acq` ended; `late`: a report of a copy verified earlier (see
        `verified_earlier`), whose webhook goes only once the report that records it is written."""
        assert acq.report is not None
        # Stopped in flight: it resumes on the next start; its report says so (no webhook: it did not end).
        report = Report([acq.report], interrupted=acq.report.phase == "stopped")
        code = stop_code[0] if report.interrupted else EXIT_OK if report.ok else EXIT_INCOMPLETE
        print_report(console, report)
        begun = acq.started
        doc = report.to_json(code, begun, datetime.now(UTC))
        if json_lines:
            emit_json("report", doc)
        written = False
        if report_path is not None:
            path = acq.report_file = acq.report_file or report_file(report_path, acq.name, acq.report)
            try:
                write_report(path, report, code, begun)
                written = True
            except OSError as e:
                log.error("cannot write the report %s: %s", path, e)
        # A copy reported late, or verified again for want of a report: its report is what says
        # it was told, so its webhook goes only with it (never again at every start).
        late = late or acq.unreported
        if webhook is not None and not report.interrupted and (written or not late):
            webhook.send(
                "ended",
                _text(acq, acq.report),
                source=str(acq.report.source),
                destination=str(acq.report.destination),
                status=_status(acq, acq.report),
                report=doc,
            )

    # Reports under each acquisition's name: what says an acquisition verified was told (one file
    # for every report holds only the last one's).
    named = report_path if report_path is not None and "{name}" in report_path else None

    def verified_earlier(acq: Acquisition) -> None:
        # A service stopped between an acquisition's marker and its report (a kill, a power cut)
        # wrote none, and a lab's script waiting for it would wait for good. A copy of a source
        # still there is verified again by a run (`_decide`); one whose source a run freed whole
        # (or recorded by inode number alone, walked by `same_files`) has its report written now,
        # with its webhook, from the records (docs/design.md, "Service, month after month").
        if named is None or acq.target is None:
            return
        if _reported(named, acq.name, acq.target):
            return
        acq.report = TargetReport(
            acq.folder,
            acq.target.destination,
            "verified",
            verified=True,
            destination_walked=False,
            notes=[VERIFIED_EARLIER_NOTE],
        )
        try:
            ended(acq, late=True)
        finally:
            acq.report = None

    service = Service(
        patterns,
        log_events=log_events,
        max_total_rate=max_total_rate,
        ended=ended,
        verified_earlier=verified_earlier,
        reported=None if named is None else lambda t: _reported(named, t.source.name, t),
        tell_after=notify_after,
    )
    manager = ServiceManager()
    stopping: list[float] = []

    def start() -> None:
        # Before any copy starts: a port in use is bad input, said before anything is done.
        try:
            if metrics is not None:
                from softcopy.metrics import serve

                serve(metrics, lambda: service.rows, lambda: service.shown.to_json())
                log.info("metrics at http://%s:%d/metrics", *metrics)
            service.start()
        except (OSError, SoftcopyError) as e:
            raise CannotStart(str(e)) from None
        manager.ready()

    def step() -> bool:
        service.step(0.25)
        manager.alive()
        _needs_a_person(service, webhook, notify_after)
        return False  # a service never ends by itself

    def stop(code: int) -> None:
        stopping.append(time.monotonic())
        stop_code[0] = code
        manager.stopping()
        service.stop()
        console.print("softcopy: stopped; acquisitions in flight resume on the next start", soft_wrap=True)

    try:
        code = run_session(Shows(console, log_every, live, json_lines), service.status, start, step, stop)
    except CannotStart as e:
        console.print(f"softcopy: {e}", soft_wrap=True)
        service.stop()
        return EXIT_USAGE
    finally:
        if webhook is not None:
            # A stop keeps its 2 s promise (docs/design.md, "Stopping"): the webhook gets what is left.
            since = time.monotonic() - stopping[0] if stopping else 0.0
            webhook.close(max(0.0, WEBHOOK_AT_STOP - since))
    return EXIT_SIGINT if code is None else code


VERIFIED_EARLIER_NOTE = (
    "verified by an earlier run, which was stopped before it wrote this report; written when the service "
    "started again (the counts are not known)"
)


class CannotStart(Exception):
    """The service could not start (its metrics port taken, its state unreadable): bad input."""


def report_file(template: str, name: str, report: TargetReport) -> Path:
    """Where the first report of a take of the acquisition `name` goes: `{name}` in `template` is
    its copy's name at the destination (`x.zarr`; a re-take copied to `x-2.zarr`, `x-2.zarr`; one
    that could not start, its own name), or the first of `<stem>-2<suffix>`, `<stem>-3<suffix>`, ...
    after it whose report is free: a report of another take of the name is never replaced, only
    one of this very copy stopped with the service (docs/design.md, "Service, month after month")."""
    for path in _report_names(template, name, report.destination):
        if not path.exists() or _stopped_report_of(path, report):
            return path
    return path


def _report_names(template: str, name: str, destination: Destination) -> list[Path]:
    """The paths a report of the copy of the acquisition `name` to `destination` may have, in
    the order `report_file` tries them."""
    stem, suffix = Path(name).stem, Path(name).suffix
    names = dict.fromkeys([destination.name, *(f"{stem}-{n}{suffix}" for n in range(2, 1000))])
    return [Path(template.replace("{name}", candidate)) for candidate in names]


def _stopped_report_of(path: Path, report: TargetReport) -> bool:
    """Whether the report at `path` is of the copy of `report`'s source to its destination, written
    when it was stopped with the service (it resumes, and its report goes on there)."""
    return _status_of(path, report.source, report.destination) == "interrupted"


def _reported(template: str, name: str, target: Target) -> bool:
    """Whether a report says the copy of `target` verified, under any name `report_file` gives."""
    for path in _report_names(template, name, target.destination):
        if not path.exists():
            return False  # `report_file` gives the first free name: none is after it
        if _status_of(path, target.source, target.destination) == "verified":
            return True
    return False


def _status_of(path: Path, source: Path, destination: Destination) -> str | None:
    """The status of the report at `path` if it is of the copy of `source` to `destination`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        (t,) = doc["targets"]
        if t["source"] == os.fspath(source) and t["destination"] == str(destination):
            return str(doc["status"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not a report of this copy: kept
    return None


def _needs_a_person(service: Service, webhook: Webhook | None, after: float) -> None:
    """Tells the webhook once when an acquisition's destination stays unavailable for `after` s."""
    for acq, p, lasted in service.needing_a_person(after):
        if webhook is None:
            continue
        why = "gave up" if p.gave_up else f"destination unavailable for {lasted:.0f} s"
        webhook.send(
            "attention",
            f"softcopy: {shown(acq.name)} needs attention: {why} ({p.destination_trouble})",
            source=str(p.source),
            destination=str(p.destination),
            status="gave up" if p.gave_up else "unavailable",
            report=None,
        )
