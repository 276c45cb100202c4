"""Webhook delivery over months: a malformed reply, a webhook down for long and a stop while it
retries never lose later notifications, grow without bound or hold the service. Real HTTP servers
on loopback, the real CLI."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import finish, softcopy_cmd, wait_for, write_finished_archive
from softcopy.notify import RETRIES, ServiceManager, Webhook, check_url
from test_service import Receiver


class RawHook:
    """A webhook receiver that answers its first request with a reply shorter than its own
    Content-Length (what `http.client` raises IncompleteRead for), then every other one with 200,
    keeping the bodies. Written on a bare socket: an HTTP server would not send a malformed reply."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[bytes] = []
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
                    self.headers.append(line.strip().lower())
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
        # A receiver (Slack, Teams, a lab's own) takes the body as JSON only when it says it is JSON.
        assert hook.headers[0].startswith(b"post /hook ") and b"content-type: application/json" in hook.headers
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


# --- without a network: the decisions of delivery, retries and the service manager ---------------


@pytest.mark.parametrize("url", ["http://lab-host/hook", "https://lab-host:8443/x", "HTTP://lab-host/"])
def test_an_http_or_https_url_with_a_host_is_taken_as_given(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://lab-host:99999/", "--notify: not a URL: 'http://lab-host:99999/' ("),
        ("ftp://lab-host/hook", "--notify: not an http:// or https:// URL: 'ftp://lab-host/hook'"),
        ("https://", "--notify: not an http:// or https:// URL: 'https://'"),
        ("lab-host/hook", "--notify: not an http:// or https:// URL: 'lab-host/hook'"),
    ],
)
def test_a_url_that_is_not_one_says_so(url: str, said: str) -> None:
    with pytest.raises(ValueError) as e:
        check_url(url)
    assert str(e.value).startswith(said), str(e.value)


class Counted(Webhook):
    """A webhook whose deliveries fail the first `failures` times, recorded with when each was tried."""

    def __init__(self, failures: int, retries: tuple[float, ...]) -> None:
        self.tries: list[tuple[float, dict[str, Any]]] = []
        self.failures = failures
        super().__init__("http://127.0.0.1:9/hook", retries=retries)

    def _post(self, data: bytes) -> None:
        self.tries.append((time.monotonic(), json.loads(data)))
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("refused")


def test_a_delivery_is_retried_after_each_pause_and_its_body_says_what_happened() -> None:
    hook = Counted(failures=2, retries=(0.2, 0.2, 60.0))
    hook.send("ended", "softcopy: a.zarr verified", source="/a.zarr")
    wait_for(lambda: len(hook.tries) == 3, 10, "the third try")
    (t0, body), (t1, _), (t2, _) = hook.tries
    assert body == {"text": "softcopy: a.zarr verified", "event": "ended", "source": "/a.zarr"}
    assert t1 - t0 >= 0.2 and t2 - t1 >= 0.2, "each retry waits its pause"
    hook.close()


def test_a_webhook_that_keeps_failing_is_said_once_and_once_again_when_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = Counted(failures=4, retries=(0.0,))
    with caplog.at_level(logging.INFO, logger="softcopy"):
        hook.send("ended", "first")
        wait_for(lambda: len(hook.tries) == 2, 10, "the first notification's two tries")
        hook.send("ended", "second")
        wait_for(lambda: len(hook.tries) == 4, 10, "the second notification's two tries")
        hook.send("ended", "third")
        hook.send("ended", "fourth")
        hook.close(timeout=10)
    assert [b["text"] for _, b in hook.tries] == ["first"] * 2 + ["second"] * 2 + ["third", "fourth"]
    said = [r.getMessage().split(" (")[0].split(";")[0] for r in caplog.records]
    assert said == [f"the webhook {hook.url} fails", f"the webhook {hook.url} works again"], said


def test_a_webhook_that_works_is_never_said_to_work_again(caplog: pytest.LogCaptureFixture) -> None:
    hook = Counted(failures=0, retries=())
    with caplog.at_level(logging.INFO, logger="softcopy"):
        hook.send("ended", "first")
        hook.close(timeout=10)
    assert len(hook.tries) == 1 and caplog.records == []


def test_close_makes_a_retry_due_within_its_time_and_none_due_after_it() -> None:
    soon = Counted(failures=1, retries=(0.3,))
    soon.send("ended", "retried within the close")
    wait_for(lambda: len(soon.tries) == 1, 10, "the first try")
    soon.close(timeout=10)
    assert [b["text"] for _, b in soon.tries] == ["retried within the close"] * 2
    late = Counted(failures=1, retries=(60.0,))
    late.send("ended", "its retry is due after the close")
    wait_for(lambda: len(late.tries) == 1, 10, "the first try")
    started = time.monotonic()
    late.close(timeout=1.0)
    assert time.monotonic() - started < 1.5 and len(late.tries) == 1


def test_the_service_manager_is_told_each_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        s.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        manager = ServiceManager()
        manager.ready()
        manager.alive()  # no watchdog asked for: no ping
        manager.stopping()
        assert manager.watchdog is None
        assert [s.recv(64), s.recv(64)] == [b"READY=1", b"STOPPING=1"]


def test_an_abstract_notify_socket_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"softcopy-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        ServiceManager().ready()
        assert s.recv(64) == b"READY=1"


def test_the_watchdog_is_pinged_at_half_its_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        manager = ServiceManager()
        assert manager.watchdog == 0.2
        started = time.monotonic()
        manager.alive()
        manager.alive()  # not due yet
        s.settimeout(10)
        assert s.recv(64) == b"WATCHDOG=1"
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(64)

        def pinged() -> bool:
            manager.alive()
            with contextlib.suppress(BlockingIOError):
                return s.recv(64) == b"WATCHDOG=1"
            return False

        wait_for(pinged, 10, "the second ping")
        assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("usec", ["0", "", "soon", "-5"])
def test_no_watchdog_unless_a_positive_interval_is_asked_for(monkeypatch: pytest.MonkeyPatch, usec: str) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert ServiceManager().watchdog is None


def test_a_service_manager_that_cannot_be_reached_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="softcopy"):
        ServiceManager().ready()
    [said] = [r.getMessage() for r in caplog.records]
    assert said.startswith("cannot tell the service manager 'READY=1': ") and "No such file" in said, said


def test_without_a_service_manager_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    manager = ServiceManager()
    manager.ready()
    manager.stopping()
