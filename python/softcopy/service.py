"""The service form (issue 15): a target whose source has a glob in its last component
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
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from rich.console import Console

from softcopy._softcopy import Arrivals, Owner, RateBudget, SoftcopyError, destination_owner, folder_identity
from softcopy.config import Target, matches
from softcopy.display import Display, emit_json, print_report
from softcopy.exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, Terminated, on_sigterm
from softcopy.metrics import Row
from softcopy.notify import ServiceManager, Webhook
from softcopy.run import Copier, Progress, Report, TargetReport, write_report

log = logging.getLogger("softcopy")


class NotCopied(Enum):
    """Why an acquisition that matched has no copy running."""

    VERIFIED_EARLIER = "verified"
    """Its marker is at the destination as copied: a run verified it."""
    CANNOT_START = "failed"
    """Its copy could not start (the destination refused, or claimed by another run)."""


@dataclass
class Acquisition:
    """One folder that matched, and the copy of it."""

    name: str
    target: Target
    pattern: str
    """The source pattern it matched (the metrics' label)."""
    copier: Copier | None = None
    report: TargetReport | None = None
    """Set when its copy ended."""
    not_copied: NotCopied | None = None
    """Why it was not copied, when it was not."""
    why: str = ""
    """What kept it from starting (with `NotCopied.CANNOT_START`)."""
    started: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    identity: tuple[int, int, int | None] = (0, 0, None)
    """The folder's device, inode and birth time: a folder made again under the name is another
    acquisition, also on the same inode."""

    @property
    def ended(self) -> bool:
        return self.report is not None or self.copier is None


def already_verified(target: Target) -> bool:
    """The destination holds this acquisition's marker, as copied from its source (same size, same
    modification time): a run verified it, and the acquisition was over. Such a folder is not
    copied or walked again on each start of the service (a lab keeps dozens of finished archives
    beside the live one); `softcopy verify` checks one on demand."""
    try:
        src, dst = (target.source / target.marker).stat(), (target.destination / target.marker).stat()
    except OSError:
        return False
    # A copy carries its source's mtime; SFTP and many shares keep whole seconds.
    return src.st_size == dst.st_size and abs(src.st_mtime - dst.st_mtime) < 2.0


class Service:
    """Copies every acquisition matching each pattern target, until `stop()`."""

    def __init__(
        self,
        patterns: list[Target],
        *,
        log_events: bool = False,
        max_total_rate: int | None = None,
        ended: Callable[[Acquisition], None] | None = None,
    ) -> None:
        self.patterns = patterns
        self._log_events = log_events
        # One budget for every acquisition in flight (docs/design.md, "Service").
        self._budget = None if max_total_rate is None else RateBudget(max_total_rate)
        self._ended = ended
        self._watches: list[tuple[Target, Arrivals]] = []
        self.acquisitions: dict[Path, Acquisition] = {}
        self.rows: list[Row] = []
        """What the metrics show, remade each step (read by the metrics thread)."""

    def start(self) -> None:
        """Watches each acquisitions folder, then takes every folder already there."""
        for p in self.patterns:
            parent = p.source.parent
            if not parent.is_dir():
                raise FileNotFoundError(f"the acquisitions folder {parent} does not exist (or is not a folder)")
            self._watches.append((p, Arrivals(parent)))
        for p, _ in self._watches:
            self._list(p)

    def _list(self, pattern: Target) -> None:
        with os.scandir(pattern.source.parent) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                self._consider(pattern, e.name)

    def _consider(self, pattern: Target, name: str) -> None:
        folder = pattern.source.parent / name
        if not matches(name, pattern.source.name):
            return
        try:
            st = folder.lstat()
            if not stat.S_ISDIR(st.st_mode):
                return  # a file, or a symlink (never followed)
            identity = folder_identity(folder)
        except (OSError, SoftcopyError):
            return
        known = self.acquisitions.get(folder)
        # Still copying, or the same folder: nothing new. An acquisition that ended and whose folder
        # was made again under its name (a re-take) is a new acquisition, copied beside the old copy.
        if known is not None and (not known.ended or known.identity == identity):
            return
        try:
            target, whose = self._destination(pattern, folder, name)
        except (ValueError, OSError, SoftcopyError) as e:
            acq = Acquisition(name, pattern, str(pattern.source), identity=identity)
            acq.not_copied, acq.why = NotCopied.CANNOT_START, str(e)
            self.acquisitions[folder] = acq
            log.error("%s: cannot be copied: %s", name, e)
            return
        acq = Acquisition(name, target, str(pattern.source), identity=identity)
        self.acquisitions[folder] = acq
        if whose == Owner.Finished or (whose != Owner.Free and already_verified(target)):
            acq.not_copied = NotCopied.VERIFIED_EARLIER
            log.info("%s: already verified at %s; not copied again", name, target.destination)
            return
        log.info("%s: a new acquisition, copied to %s", name, target.destination)
        try:
            copier = Copier([target], log_events=self._log_events, total_budget=self._budget)
            copier.start()
        except (OSError, ValueError, SoftcopyError) as e:
            # One acquisition that cannot start (its destination refused, claimed by another run)
            # does not stop the service; it is named, and tried again if its folder is made anew.
            acq.not_copied, acq.why = NotCopied.CANNOT_START, str(e)
            log.error("%s: cannot be copied: %s", name, e)
            return
        acq.copier = copier

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
                whose, _ = destination_owner(folder, target.destination, target.marker)
            except SoftcopyError:
                # Cannot be told (a file where the folder would go, an unreadable record): its
                # copy starts and fails there, with a report saying why, and nothing written.
                return target, None
            if whose == Owner.Claimed:
                raise ValueError(f"{target.destination} is another softcopy's destination now")
            # An unrecorded copy is taken as this acquisition's only where its marker shows a
            # verified copy of this very source (one made before softcopy kept records).
            if whose == Owner.Unrecorded and already_verified(target):
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
        deadline = time.monotonic() + timeout
        for p, watch in self._watches:
            names, relist = watch.wait(max(0.0, deadline - time.monotonic()) / len(self._watches))
            for name in names:
                self._consider(p, name)
            if relist:
                self._list(p)
        just_ended = []
        for acq in self.acquisitions.values():
            if acq.copier is not None and acq.report is None:
                report = acq.copier.poll()
                if report is not None:
                    acq.report = report.targets[0]
                    # Its engine is let go: a service runs for months, one acquisition after another.
                    acq.copier = None
                    just_ended.append(acq)
                    if self._ended is not None:
                        self._ended(acq)
        # A folder made again under an ended acquisition's name while it was still copying (its
        # arrival was heard then, and set aside) is a new acquisition: looked at once more now.
        for acq in just_ended:
            pattern = next((p for p, _ in self._watches if str(p.source) == acq.pattern), None)
            if pattern is not None:
                self._consider(pattern, acq.name)
        self.rows = [self._row(a) for a in self.acquisitions.values()]

    def _row(self, a: Acquisition) -> Row:
        source, pattern = str(a.target.source), a.pattern
        if a.report is not None:
            r = a.report
            return Row(source, pattern, r.phase, r.files_copied, r.bytes_copied, r.errors, 0, 0.0)
        if a.copier is None:
            phase = a.not_copied.value if a.not_copied is not None else "failed"
            return Row(source, pattern, phase, 0, 0, 0, 0, 0.0)
        p = a.copier.status()[0]
        return Row(source, pattern, p.phase, p.files_copied, p.bytes_copied, p.errors, p.backlog, p.oldest_wait)

    def _copying(self) -> list[tuple[Acquisition, Copier]]:
        return [(a, a.copier) for a in self.acquisitions.values() if a.copier is not None and a.report is None]

    def status(self) -> list[Progress]:
        """One snapshot per acquisition still copying."""
        return [s for _, copier in self._copying() for s in copier.status()]

    def stop(self, timeout: float = 30) -> None:
        """Stops every copy in flight (each resumes on the next start)."""
        copying = self._copying()
        for _, copier in copying:
            copier.stop()
        for a, copier in copying:
            report = copier.wait(timeout)
            if report is not None:
                a.report = report.targets[0]
                if self._ended is not None:
                    self._ended(a)


def _text(acq: Acquisition, report: TargetReport) -> str:
    what = "verified" if report.ok else report.phase
    line = f"softcopy: {acq.name} {what}: {report.files_at_destination} files at {acq.target.destination}"
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
    trouble_since: dict[Path, float] = {}
    told: set[Path] = set()
    stop_code = [EXIT_SIGTERM]
    """The exit code the report of an acquisition stopped in flight carries."""

    def ended(acq: Acquisition) -> None:
        assert acq.report is not None
        # Stopped in flight: it resumes on the next start; its report says so (no webhook: it did not end).
        report = Report([acq.report], interrupted=acq.report.phase == "stopped")
        code = stop_code[0] if report.interrupted else EXIT_OK if report.ok else EXIT_INCOMPLETE
        print_report(console, report)
        begun = acq.started
        doc = report.to_json(code, begun, datetime.now(UTC))
        if json_lines:
            emit_json("report", doc)
        if report_path is not None:
            path = Path(report_path.replace("{name}", acq.name))
            try:
                write_report(path, report, code, begun)
            except OSError as e:
                log.error("cannot write the report %s: %s", path, e)
        if webhook is not None and not report.interrupted:
            status = "verified" if report.ok else "failed" if acq.report.fatal else "incomplete"
            webhook.send(
                "ended",
                _text(acq, acq.report),
                source=str(acq.target.source),
                destination=str(acq.target.destination),
                status=status,
                report=doc,
            )

    service = Service(patterns, log_events=log_events, max_total_rate=max_total_rate, ended=ended)
    manager = ServiceManager()
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    code = EXIT_SIGINT
    try:
        try:
            # Before any copy starts: a port in use is bad input, said before anything is done.
            if metrics is not None:
                from softcopy.metrics import serve

                serve(metrics, lambda: service.rows)
                log.info("metrics at http://%s:%d/metrics", *metrics)
            _wait_for_folders(patterns, manager)
            service.start()
        except (OSError, SoftcopyError) as e:
            console.print(f"softcopy: {e}", soft_wrap=True)
            service.stop()
            return EXIT_USAGE
        manager.ready()
        with Display(console, service.status, log_every, live, json_lines) as display:
            while True:
                service.step(0.25)
                manager.alive()
                _needs_a_person(service, webhook, notify_after, trouble_since, told)
                display.step()
    except KeyboardInterrupt as e:
        code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
        stop_code[0] = code
        manager.stopping()
        service.stop()
        console.print("softcopy: stopped; acquisitions in flight resume on the next start", soft_wrap=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if webhook is not None:
            webhook.close()
    return code


def _wait_for_folders(patterns: list[Target], manager: ServiceManager) -> None:
    """Waits for a missing acquisitions folder (a disk mounted late) where `wait_for_source` says
    so, telling the service manager it is up meanwhile; one that is not waited for is left to
    `Service.start` to refuse."""
    waiting = [p.source.parent for p in patterns if p.wait_for_source and not p.source.parent.is_dir()]
    if not waiting:
        return
    manager.ready()
    log.warning("waiting for the acquisitions folder %s to appear", ", ".join(map(str, waiting)))
    while not all(folder.is_dir() for folder in waiting):
        manager.alive()
        time.sleep(0.5)  # a poll of a folder that is not there yet; SIGTERM ends it at once
    log.info("the acquisitions folder %s is there", ", ".join(map(str, waiting)))


def _needs_a_person(
    service: Service, webhook: Webhook | None, after: float, since: dict[Path, float], told: set[Path]
) -> None:
    """Tells the webhook once when an acquisition's destination stays unavailable for `after` s."""
    now = time.monotonic()
    for p in service.status():
        key = p.source
        if p.destination_trouble is None and not p.gave_up:
            since.pop(key, None)
            told.discard(key)
            continue
        first = since.setdefault(key, now)
        if webhook is not None and key not in told and (p.gave_up or now - first >= after):
            told.add(key)
            why = "gave up" if p.gave_up else f"destination unavailable for {now - first:.0f} s"
            webhook.send(
                "attention",
                f"softcopy: {key.name} needs attention: {why} ({p.destination_trouble})",
                source=str(p.source),
                destination=str(p.destination),
                status="gave up" if p.gave_up else "unavailable",
                report=None,
            )
