"""Prometheus metrics for the service form (`--metrics ADDR`), written by prometheus_client at
`/metrics`, and the acquisitions in flight and recently ended as JSON at `/status` (what
`softcopy status` shows; `status.py`). Nothing is served unless asked.

Both are read from snapshots the service's own thread makes each step (`Service.rows`,
`Service.shown`), so the HTTP thread never calls into an engine or walks a dict that is changing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class Row:
    """One acquisition, as the metrics show it."""

    source: str
    pattern: str
    phase: str
    files_copied: int
    bytes_copied: int
    errors: int
    backlog: int
    lag: float


class _Collector(Collector):
    def __init__(self, rows: Callable[[], Sequence[Row]]) -> None:
        self._rows = rows

    def collect(self) -> Iterable[Metric]:
        rows = self._rows()
        families: list[tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, str]] = [
            (CounterMetricFamily, "softcopy_files_copied", "Files copied.", "files_copied"),
            (CounterMetricFamily, "softcopy_bytes_copied", "Bytes copied.", "bytes_copied"),
            (CounterMetricFamily, "softcopy_errors", "Copy errors (each retried, or given up).", "errors"),
            (GaugeMetricFamily, "softcopy_backlog_files", "Files complete at the source, not yet copied.", "backlog"),
            (GaugeMetricFamily, "softcopy_lag_seconds", "How long the oldest file not yet copied has waited.", "lag"),
        ]
        for kind, name, doc, field in families:
            family = kind(name, doc, labels=["source"])
            for r in rows:
                family.add_metric([r.source], getattr(r, field))
            yield family
        phases = GaugeMetricFamily("softcopy_acquisitions", "Acquisitions by phase.", labels=["source", "phase"])
        counts: dict[tuple[str, str], int] = {}
        for r in rows:
            counts[(r.pattern, r.phase)] = counts.get((r.pattern, r.phase), 0) + 1
        for (pattern, phase), n in sorted(counts.items()):
            phases.add_metric([pattern, phase], n)
        yield phases


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `:PORT` (every interface) → (host, port); ValueError with a one-line reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics wants HOST:PORT or :PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(address: tuple[str, int], rows: Callable[[], Sequence[Row]], status: Callable[[], bytes]) -> None:
    """Serves `/metrics` and `/status` on a daemon thread, for as long as the process runs."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(rows))

    def metrics() -> bytes:
        return generate_latest(registry)

    pages: dict[str, tuple[str, Callable[[], bytes]]] = {
        "/metrics": (CONTENT_TYPE_LATEST, metrics),
        "/status": (JSON, status),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path.split("?")[0])
            if page is None:
                self.send_error(404, "softcopy serves /metrics and /status")
                return
            body = page[1]()
            self.send_response(200)
            self.send_header("Content-Type", page[0])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # a scrape every few seconds is no news for the journal

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = _family(address)

    try:
        server = Server(address, Handler)
    except OSError as e:
        raise OSError(f"--metrics {address[0]}:{address[1]}: cannot serve there: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


JSON = "application/json"


def _family(address: tuple[str, int]) -> socket.AddressFamily:
    """IPv4 or IPv6, as the host is written (`[::1]:9108`)."""
    try:
        return socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        return socket.AF_INET  # the bind then says what is wrong with it
