"""`softcopy status --metrics ADDR`: what a running service is doing, without Prometheus. The
service serves its acquisitions in flight and the last ones ended as JSON at `http://ADDR/status`,
beside `/metrics` (one HTTP server, the same on Linux and Windows; a local socket would need one
kind per platform); this command fetches it and prints the live display's table.

The document (`SCHEMA` 1): `{"softcopy": version, "schema": 1, "time": ISO 8601, "in_flight":
[row...], "ended": [row...]}`, each row a `Progress` with its paths as strings. An acquisition
that has not started (its destination being looked at, or that could not start and is tried
again) is in flight with the phase `starting` or `cannot start`; an ended one's phase is the
webhook's word for how it ended (verified, incomplete, failed, let go) and its time the copy's.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import click
from rich.console import Console

from softcopy import __version__
from softcopy.config import Destination
from softcopy.display import table
from softcopy.exits import EXIT_INCOMPLETE, EXIT_OK
from softcopy.metrics import parse_address
from softcopy.run import Progress, Yielding

SCHEMA = 1
ASK_FOR = 10.0
"""Seconds the service has to answer."""


@dataclass(frozen=True)
class Shown:
    """What `/status` serves, made by the service's thread each step (never changed after)."""

    in_flight: list[Progress]
    ended: list[Progress]

    def to_json(self) -> bytes:
        doc = {
            "softcopy": __version__,
            "schema": SCHEMA,
            "time": datetime.now(UTC).isoformat(),
            "in_flight": [_row(p) for p in self.in_flight],
            "ended": [_row(p) for p in self.ended],
        }
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Shown:
        """ValueError with a one-line reason when it is not a status document this softcopy reads."""
        try:
            doc = json.loads(data)
            if doc.get("schema") != SCHEMA:
                raise ValueError(f"schema {doc.get('schema')!r} of softcopy {doc.get('softcopy')}, not {SCHEMA}")
            return cls([_progress(r) for r in doc["in_flight"]], [_progress(r) for r in doc["ended"]])
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a softcopy status document ({type(e).__name__}: {e})") from None


def _row(p: Progress) -> dict[str, Any]:
    return {**dataclasses.asdict(p), "source": str(p.source), "destination": str(p.destination)}


def _progress(row: dict[str, Any]) -> Progress:
    paths = {"source": Path(row["source"]), "destination": Path(row["destination"])}
    return Progress(**{**row, **paths, "back_off": Yielding(**row.get("back_off", {}))})


def still(
    source: Path,
    destination: Destination,
    phase: str,
    *,
    files_copied: int = 0,
    bytes_copied: int = 0,
    errors: int = 0,
    elapsed: float = 0.0,
    last_error: str | None = None,
) -> Progress:
    """The row of an acquisition no engine is copying now (not started yet, or ended): every
    other counter zero, every other message none."""
    zero = {f.name: _ZERO[str(f.type)] for f in dataclasses.fields(Progress) if str(f.type) in _ZERO}
    given = {"files_copied": files_copied, "bytes_copied": bytes_copied, "errors": errors, "elapsed": elapsed}
    mine = {"source": source, "destination": destination, "phase": phase, "last_error": last_error}
    return Progress(**{**zero, **given, **mine})


_ZERO: dict[str, Any] = {"int": 0, "float": 0.0, "bool": False, "str | None": None}


def client_address(text: str) -> tuple[str, int]:
    """The address to ask: `--metrics` as the service was given it; every interface (`:9108`)
    is asked on this machine."""
    host, port = parse_address(text)
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port


def fetch(address: tuple[str, int]) -> Shown:
    """Asks the service; OSError (nothing answers) or ValueError (something else answers)."""
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    try:
        with urlopen(f"http://{host}:{address[1]}/status", timeout=ASK_FOR) as r:
            return Shown.from_json(r.read())
    except HTTPError as e:
        raise ValueError(f"it answers HTTP {e.code} at /status: not a softcopy service of this version") from None
    except URLError as e:
        reason = e.reason
        raise OSError(reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--metrics",
    "metrics_addr",
    required=True,
    metavar="ADDR",
    help="The service's --metrics address, as it was given (e.g. 127.0.0.1:9108, or :9108: asked here).",
)
def status_main(metrics_addr: str) -> int:
    """Show what a running service (the form 'softcopy ACQ/*.zarr DST --metrics ADDR') is doing:
    its acquisitions in flight and the last ones ended, as its live display shows them.

    Exit codes: 0 the service answered; 1 nothing answers there (or not a softcopy service);
    2 bad input.
    """
    try:
        address = client_address(metrics_addr)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        shown = fetch(address)
    except (OSError, ValueError) as e:
        where = f"{address[0]}:{address[1]}"
        click.echo(
            f"softcopy: error: no softcopy service answers at {where} ({e}); is one running with --metrics {metrics_addr}?",
            err=True,
        )
        sys.exit(EXIT_INCOMPLETE)
    console = Console()
    console.print(table(shown.in_flight, title=f"softcopy at {address[0]}:{address[1]}: in flight"))
    console.print(table(shown.ended, title="recently ended", totals=False))
    return EXIT_OK
