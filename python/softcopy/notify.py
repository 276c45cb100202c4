"""What a service tells the outside: webhook notifications (`--notify URL`) and the service
manager's readiness and watchdog (systemd `Type=notify`).

A webhook is POSTed JSON with a `text` field (which Slack, Teams and Mattermost show as it is) and
`event`, `source`, `destination`, `status`, `report`. Deliveries run on a thread of their own with
retries and backoff, so a webhook that is slow or down never slows or stops a copy; one that keeps
failing is reported once in the log, and once again when it works again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger("softcopy")

RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds before each retry of a delivery that failed."""

QUEUE_MAX = 100
"""Notifications waiting for delivery at most; past it the oldest is dropped (docs/design.md, "Service")."""


def check_url(url: str) -> str:
    """The `--notify` URL, checked at the start (a bad one would only fail at the first delivery).

    Raises:
        ValueError: when it is not an http:// or https:// URL with a host.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as e:
        raise ValueError(f"--notify: not a URL: {url!r} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--notify: not an http:// or https:// URL: {url!r}")
    return url


class Webhook:
    """POSTs each notification to `url`, in order, on a thread of its own.

    The queue is bounded: while the webhook is down for long, the oldest waiting notification is
    dropped for each new one, and each drop is logged with its text (the reports on disk keep
    everything). Whatever one delivery raises (a refused connection, a malformed reply), the thread
    goes on to the next notification."""

    def __init__(
        self, url: str, retries: tuple[float, ...] = RETRIES, timeout: float = 10.0, queue_max: int = QUEUE_MAX
    ) -> None:
        self.url = url
        self._retries = retries
        self._timeout = timeout
        # None wakes the thread up to end (put by close()).
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_max)
        self._failing = False
        self._closing = threading.Event()
        """Set by close(): a retry due after its deadline is not made."""
        self._deadline = float("inf")
        self._current: dict[str, Any] | None = None
        """The notification being delivered (for close() to name it if it is left undelivered)."""
        self._thread = threading.Thread(target=self._deliver_all, name="softcopy-notify", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Notifications queued and not yet delivered (nor dropped)."""
        return self._queue.qsize()

    def send(self, event: str, text: str, **fields: Any) -> None:
        """Queues one notification; returns at once (dropping the oldest one when the queue is full)."""
        body = {"text": text, "event": event, **fields}
        while True:
            try:
                self._queue.put_nowait(body)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if dropped is not None:
                    log.warning("the webhook %s is behind; a notification is dropped: %s", self.url, dropped["text"])

    def close(self, timeout: float = 2.0) -> None:
        """Delivers what is queued, retrying only while `timeout` s have not passed, and returns
        by then: a stop is never held long by a failing webhook. What is left undelivered is
        logged with its text (the reports on disk keep everything)."""
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        # A full queue needs no wake-up: the thread is busy, and ends once it emptied it.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return
        left = [self._current, *self._drain()]
        for body in left:
            if body is not None:
                log.warning("the webhook %s: not delivered at the stop: %s", self.url, body["text"])

    def _drain(self) -> list[dict[str, Any] | None]:
        taken = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._queue.get_nowait())
        return taken

    def _deliver_all(self) -> None:
        while not (self._closing.is_set() and self._queue.empty()):
            body = self._queue.get()
            if body is None:
                continue
            # One notification's failure, whatever it is, must not end the delivery of all later ones.
            self._current = body
            try:
                self._deliver(body)
            except Exception as e:  # noqa: BLE001 - see the comment above
                log.error("the webhook %s: a notification could not be delivered: %r", self.url, e)
            self._current = None

    def _deliver(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        for wait in (*self._retries, None):
            try:
                self._post(data)
                if self._failing:
                    log.info("the webhook %s works again", self.url)
                    self._failing = False
                return
            # A malformed reply (http.client.IncompleteRead, not an OSError) is a failure like any.
            except Exception as e:  # noqa: BLE001 - see the comment above
                if wait is None or not self._pause(wait):
                    if not self._failing:
                        log.warning("the webhook %s fails (%s); notifications are dropped until it works", self.url, e)
                        self._failing = True
                    return

    def _pause(self, seconds: float) -> bool:
        """Waits `seconds` before a retry; False, at once, when close() leaves no time for it."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if self._closing.is_set():
                if until > self._deadline:
                    return False
                time.sleep(left)
            else:
                self._closing.wait(left)
        return True

    def _post(self, data: bytes) -> None:
        timeout = self._timeout
        if self._closing.is_set():
            timeout = min(timeout, max(0.1, self._deadline - time.monotonic()))
        request = urllib.request.Request(
            self.url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()


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
