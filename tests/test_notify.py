"""Webhook delivery over months: a malformed reply, a webhook down for long and a stop while it
retries never lose later notifications, grow without bound or hold the service. Real HTTP servers
on loopback, the real CLI."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import finish, softcopy_cmd, wait_for, write_finished_archive
from softcopy.notify import RETRIES, Webhook
from test_service import Receiver


class RawHook:
    """A webhook receiver that answers its first request with a reply shorter than its own
    Content-Length (what `http.client` raises IncompleteRead for), then every other one with 200,
    keeping the bodies. Written on a bare socket: an HTTP server would not send a malformed reply."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        first = True
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn, conn.makefile("rb") as f:
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = f.read(length)
                if first:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok")
                    first = False
                else:
                    self.bodies.append(json.loads(body))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def test_a_malformed_webhook_reply_does_not_stop_later_notifications() -> None:
    hook = RawHook()
    try:
        webhook = Webhook(hook.url, retries=())
        webhook.send("ended", "softcopy: a.zarr verified", source="/a.zarr")
        webhook.send("ended", "softcopy: b.zarr verified", source="/b.zarr")
        wait_for(lambda: len(hook.bodies) == 1, 10, "the notification after the malformed reply")
        assert [b["text"] for b in hook.bodies] == ["softcopy: b.zarr verified"]
        webhook.close()
    finally:
        hook.close()


def test_the_webhook_queue_is_bounded_and_says_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    # A webhook that hangs: the queue keeps the newest five, drops each older one saying which,
    # and what it kept is delivered once the webhook answers (close delivers what is queued).
    hook = Receiver(held=True)
    webhook = Webhook(hook.url, retries=(), timeout=60, queue_max=5)
    try:
        with caplog.at_level(logging.WARNING, logger="softcopy"):
            webhook.send("ended", "acq0 verified")
            wait_for(hook.holding.is_set, 10, "the first notification in the webhook's hands")
            for i in range(1, 50):
                webhook.send("ended", f"acq{i} verified")
        dropped = [r.getMessage().rsplit(": ", 1)[1] for r in caplog.records if "dropped" in r.getMessage()]
        assert dropped == [f"acq{i} verified" for i in range(1, 45)], dropped
        hook.release()
        webhook.close(timeout=30)
        texts = [b["text"] for b in hook.bodies]
        assert texts == ["acq0 verified", *(f"acq{i} verified" for i in range(45, 50))], texts
    finally:
        hook.close()


def service_with_one_ended(tmp_path: Path, run_softcopy: Any, hook: Receiver) -> Any:
    """A service notifying `hook`, once a finished acquisition's copy has ended."""
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    dst.mkdir()
    write_finished_archive(acq / "done.zarr", "v2dot", 2)
    service = run_softcopy(acq / "*.zarr", dst, "--notify", hook.url, "--report", tmp_path / "{name}.json")
    wait_for(lambda: (tmp_path / "done.zarr.json").exists(), 60, "the acquisition to end")
    return service


def test_the_service_stops_at_once_while_a_webhook_retries(tmp_path: Path, run_softcopy: Any) -> None:
    hook = Receiver(fail=100)
    try:
        service = service_with_one_ended(tmp_path, run_softcopy, hook)
        wait_for(lambda: hook.fail < 100, 30, "the first delivery attempt")
        service.send_signal(signal.SIGTERM)
        code, out = finish(service, 30)
        # The delivery retries with 1, 2, 4, 8 s between tries: the stop did not wait for them all
        # (a busy machine makes fewer tries before the stop, never more).
        assert code == 143, out
        assert 100 - hook.fail < 1 + len(RETRIES), (100 - hook.fail, out)
    finally:
        hook.close()


def test_the_service_stops_within_2_s_while_a_webhook_hangs_and_logs_what_it_did_not_deliver(
    tmp_path: Path, run_softcopy: Any
) -> None:
    """A stop is promised within 2 s (docs/design.md, "Stopping"), also while the webhook holds a
    delivery; what it could not deliver is not lost silently: the log names it."""
    hook = Receiver(held=True)
    try:
        service = service_with_one_ended(tmp_path, run_softcopy, hook)
        assert hook.holding.wait(30), "the delivery never reached the webhook"
        service.send_signal(signal.SIGTERM)
        code, out = finish(service, 2)
        assert code == 143, out
        assert "not delivered" in out and "done.zarr verified" in out, out
    finally:
        hook.close()


@pytest.mark.parametrize("url", ["not-a-url", "ftp://example.org/hook", "http://", "http://host:99999/"])
def test_a_notify_url_that_is_not_one_is_refused_at_the_start(tmp_path: Path, url: str) -> None:
    acq = tmp_path / "acquisition"
    acq.mkdir()
    (tmp_path / "raw").mkdir()
    r = subprocess.run(
        softcopy_cmd(acq / "*.zarr", tmp_path / "raw", "--notify", url),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--notify" in r.stderr and "Traceback" not in r.stderr, r.stderr
