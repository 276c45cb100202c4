"""What a service tells the outside: webhook notifications (`--notify URL`) and the service
manager's readiness and watchdog (systemd `Type=notify`).

A webhook is POSTed JSON with a `text` field (which Slack, Teams and Mattermost show as it is) and
`event`, `source`, `destination`, `status`, `report`. Deliveries run on a thread of their own with
retries and backoff, so a webhook that is slow or down never slows or stops a copy; one that keeps
failing is reported once in the log, and once again when it works again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.request
from typing import Any

log = logging.getLogger("softcopy")

RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds before each retry of a delivery that failed."""


class Webhook:
    """POSTs each notification to `url`, in order, on a thread of its own."""

    def __init__(self, url: str, retries: tuple[float, ...] = RETRIES, timeout: float = 10.0) -> None:
        self.url = url
        self._retries = retries
        self._timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._failing = False
        self._thread = threading.Thread(target=self._deliver_all, name="softcopy-notify", daemon=True)
        self._thread.start()

    def send(self, event: str, text: str, **fields: Any) -> None:
        """Queues one notification; returns at once."""
        self._queue.put({"text": text, "event": event, **fields})

    def close(self, timeout: float = 10.0) -> None:
        """Delivers what is queued (for up to `timeout` s), then ends the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _deliver_all(self) -> None:
        while (body := self._queue.get()) is not None:
            self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        for wait in (*self._retries, None):
            request = urllib.request.Request(
                self.url, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    response.read()
                if self._failing:
                    log.info("the webhook %s works again", self.url)
                    self._failing = False
                return
            except (OSError, ValueError) as e:
                if wait is None:
                    if not self._failing:
                        log.warning("the webhook %s fails (%s); notifications are dropped until it works", self.url, e)
                        self._failing = True
                    return
                time.sleep(wait)


class ServiceManager:
    """systemd's notify protocol: one datagram per state to `$NOTIFY_SOCKET` (`READY=1` once
    watching, `WATCHDOG=1` at half of `$WATCHDOG_USEC`, `STOPPING=1`). Nothing without it."""

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        """Seconds between watchdog pings (None: no watchdog asked for)."""
        self._last_ping = 0.0

    def _send(self, state: str) -> None:
        if not self._address or not hasattr(socket, "AF_UNIX"):
            return
        # A leading "@" names a socket in the abstract namespace.
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(address)
                s.sendall(state.encode())
        except OSError as e:
            log.warning("cannot tell the service manager %r: %s", state, e)

    def ready(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def alive(self) -> None:
        """Pings the watchdog when one is due."""
        if self.watchdog is not None and time.monotonic() - self._last_ping >= self.watchdog:
            self._last_ping = time.monotonic()
            self._send("WATCHDOG=1")
