"""The service form (docs/design.md, "Service"): a source pattern copies every acquisition that matches, as it comes,
until stopped; webhooks and the service manager hear about it. Real writers, a real HTTP receiver
on loopback, a real datagram socket for `$NOTIFY_SOCKET`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Softcopy,
    assert_same_tree,
    finish,
    softcopy_cmd,
    start_writer,
    tree,
    wait_for,
    write_finished_archive,
)
from softcopy.notify import Webhook


class Receiver:
    """A webhook receiver on loopback; answers 500 to the first `fail` requests. With `held`, it
    holds each request until `release()` (`holding` is set once one is in hand)."""

    def __init__(self, fail: int = 0, *, held: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail
        self.holding, self._go = threading.Event(), threading.Event()
        if not held:
            self._go.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.holding.set()
                receiver._go.wait(60)
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self._go.set()

    def close(self) -> None:
        self._go.set()
        self.server.shutdown()
        self.server.server_close()

    def events(self, source_name: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if Path(b["source"]).name == source_name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def chunks(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name[0].isdigit()] if root.exists() else []


def test_a_pattern_copies_each_acquisition_as_it_comes_and_resumes_after_a_restart(
    tmp_path: Path, run_softcopy: Any, receiver: Receiver
) -> None:
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    dst.mkdir()
    acq.mkdir()
    reports.mkdir()
    write_finished_archive(acq / "early.zarr", "v2dot", 3)  # finished before the service started
    (acq / "notes").mkdir()
    (acq / "notes" / "log.txt").write_text("not an acquisition")
    (acq / "other.tif").write_text("nor this")
    args = (acq / "*.zarr", dst, "--report", reports / "{name}.json", "--notify", receiver.url)
    service: Softcopy = run_softcopy(*args)
    wait_for(lambda: (reports / "early.zarr.json").exists(), 60, "the finished acquisition's report")
    assert json.loads((reports / "early.zarr.json").read_text())["status"] == "verified"
    assert_same_tree(acq / "early.zarr", dst / "early.zarr")

    # A live acquisition: its chunks arrive while the writer is still writing.
    # It holds its marker back until told: the chunks arrive before the acquisition ends, whatever
    # the machine's speed.
    go = tmp_path / "go"
    writer = start_writer(acq / "live.zarr", "zarr3", 40, 0.1, "--hold", str(go))
    wait_for(lambda: len(chunks(dst / "live.zarr")) >= 3, 60, "the live acquisition's first chunks")
    assert writer.poll() is None and not (acq / "live.zarr" / "complete").exists(), "arrived before the end"
    assert not (dst / "live.zarr" / "complete").exists()
    # Stopped in the middle, started again: it resumes and ends verified.
    service.send_signal(signal.SIGTERM)
    code, out = finish(service)
    assert code == 143, out
    # Stopped in flight, it has a report saying so; the run that finishes it writes the next.
    assert json.loads((reports / "live.zarr.json").read_text())["status"] == "interrupted"
    service = run_softcopy(*args)
    go.touch()
    assert writer.wait(120) == 0

    def live_verified() -> bool:
        return bool(json.loads((reports / "live.zarr.json").read_text())["status"] == "verified")

    wait_for(live_verified, 60, "the live acquisition's report")
    assert_same_tree(acq / "live.zarr", dst / "live.zarr")
    # The acquisition verified before the restart is recognised, not copied again.
    wait_for(lambda: "early.zarr: already verified" in service.output(), 30, "the restart to skip early.zarr")

    # Two at once.
    writers = [start_writer(acq / f"{n}.zarr", "v2dot", 6, 0.05) for n in ("x", "y")]
    assert all(w.wait(120) == 0 for w in writers)
    for n in ("x", "y"):
        wait_for(lambda n=n: (reports / f"{n}.zarr.json").exists(), 60, f"{n}.zarr's report")  # type: ignore[misc]
        assert_same_tree(acq / f"{n}.zarr", dst / f"{n}.zarr")
    service.send_signal(signal.SIGTERM)
    code, out = finish(service)
    assert code == 143, out
    assert sorted(p.name for p in dst.iterdir()) == ["early.zarr", "live.zarr", "x.zarr", "y.zarr"], "others left alone"
    wait_for(lambda: len(receiver.events("x.zarr")) == 1, 20, "the webhook")
    for name in ("early.zarr", "live.zarr", "x.zarr", "y.zarr"):
        (event,) = receiver.events(name)
        assert event["event"] == "ended" and event["status"] == "verified", event
        assert name in event["text"] and event["report"]["status"] == "verified"


def test_a_webhook_that_fails_is_retried_until_it_works(tmp_path: Path) -> None:
    r = Receiver(fail=2)
    try:
        hook = Webhook(r.url, retries=(0.05, 0.05, 0.05))
        hook.send("ended", "softcopy: a.zarr verified", source="/a.zarr", destination="/b/a.zarr", status="verified")
        hook.close()
        assert [b["text"] for b in r.bodies] == ["softcopy: a.zarr verified"]
        assert r.fail == 0
    finally:
        r.close()


def test_the_service_manager_hears_ready_and_watchdog_pings(tmp_path: Path, run_softcopy: Any) -> None:
    acq, raw = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    raw.mkdir()
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(sock_path))
        s.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen(
            softcopy_cmd(acq / "*.zarr", raw),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            got = [s.recv(256).decode() for _ in range(3)]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 143
        assert got[0] == "READY=1" and got[1:] == ["WATCHDOG=1", "WATCHDOG=1"], got
        assert s.recv(256).decode() == "STOPPING=1"


def test_a_pattern_whose_destination_is_inside_the_acquisitions_folder_is_refused(tmp_path: Path) -> None:
    acq = tmp_path / "acquisition"
    acq.mkdir()
    r = subprocess.run(
        softcopy_cmd(acq / "*.zarr", acq / "copies.zarr"),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "must not contain each other" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_are_served_for_each_acquisition_and_parse(tmp_path: Path, run_softcopy: Any) -> None:
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    acq.mkdir()
    write_finished_archive(acq / "done.zarr", "v2dot", 3)
    port = free_port()
    service = run_softcopy(acq / "*.zarr", dst, "--metrics", f"127.0.0.1:{port}")

    def scrape() -> dict[str, list[Any]]:
        try:
            with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def verified() -> bool:
        phases = scrape().get("softcopy_acquisitions", [])
        return any(s.labels["phase"] == "verified" and s.value == 1 for s in phases)

    wait_for(verified, 60, "the finished acquisition to show as verified")
    m = scrape()
    source = str(acq / "done.zarr")
    copied = {s.labels["source"]: s.value for s in m["softcopy_files_copied"] if s.name.endswith("_total")}
    # Every file but the marker, which the end publishes itself.
    assert copied[source] == sum(1 for p in (acq / "done.zarr").rglob("*") if p.is_file() and p.name != "complete")
    assert {s.labels["source"] for s in m["softcopy_bytes_copied"]} == {source}
    for name in ("softcopy_backlog_files", "softcopy_lag_seconds", "softcopy_errors"):
        assert name in m, sorted(m)
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143


def test_bad_service_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    acq = tmp_path / "acquisition"
    acq.mkdir()
    for args in (
        (tmp_path / "missing" / "*.zarr", tmp_path / "raw", "--wait-for-source", "false"),
        (acq / "*.zarr", tmp_path / "raw", "--metrics", "nine"),
        (acq, tmp_path / "raw", "--notify", "http://127.0.0.1:9/"),
    ):
        r = subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_a_destination_unavailable_too_long_needs_a_person_and_the_webhook_says_so(
    tmp_path: Path, run_softcopy: Any, receiver: Receiver
) -> None:
    # A full destination (tmpfs with a size limit) is waited out, never an error; past
    # --notify-after the webhook is told, once.
    acq, raw = tmp_path / "acquisition", tmp_path / "raw"
    (acq / "big.zarr" / "c").mkdir(parents=True)
    for i in range(6):
        (acq / "big.zarr" / "c" / str(i)).write_bytes(bytes([i]) * (1 << 20))
    raw.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(raw)], check=True)
    try:
        args = (acq / "*.zarr", raw, "--notify", receiver.url, "--notify-after", 0.5, "--nprocs", 2)
        service = run_softcopy(*args)
        wait_for(lambda: len(receiver.events("big.zarr")) >= 1, 60, "the attention notification")
        (event,) = receiver.events("big.zarr")
        assert event["event"] == "attention" and event["status"] == "unavailable", event
        assert "big.zarr needs attention" in event["text"]
        assert service.poll() is None, "a full destination is waited out"
        service.send_signal(signal.SIGTERM)
        assert finish(service)[0] == 143
        assert len(receiver.events("big.zarr")) == 1, "said once"
    finally:
        subprocess.run(["umount", "-l", str(raw)], check=False)


def test_an_acquisition_taken_again_under_the_same_name_is_copied_beside_the_first(
    tmp_path: Path, run_softcopy: Any
) -> None:
    # A folder is one acquisition: a re-take under the same name is copied again, to its own
    # destination (`fish-2.zarr`), never over the first take's copy (docs/design.md, "Service").
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    dst.mkdir()
    acq.mkdir()
    reports.mkdir()
    service = run_softcopy(acq / "*.zarr", dst, "--report", reports / "{name}.json")
    write_finished_archive(acq / "fish.zarr", "v2dot", 2)
    report = reports / "fish.zarr.json"
    wait_for(report.exists, 60, "the first take's report")
    first = report.stat().st_mtime_ns
    first_take = tree(acq / "fish.zarr")
    # The acquisition software deletes the folder and writes it again (another take, more timepoints).
    shutil.rmtree(acq / "fish.zarr")
    write_finished_archive(acq / "fish.zarr", "v2dot", 4)
    second = reports / "fish-2.zarr.json"  # its copy's name: the first take's report is kept
    wait_for(second.exists, 60, "the second take's report")
    assert json.loads(second.read_text())["status"] == "verified"
    assert report.stat().st_mtime_ns == first
    assert_same_tree(acq / "fish.zarr", dst / "fish-2.zarr")
    assert tree(dst / "fish.zarr") == first_take, "the first take's copy is untouched"
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143


def test_a_source_pattern_reaches_softcopy_unexpanded_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # Click expands wildcards in arguments on Windows (os.name == "nt"): `softcopy D:\acq\*.zarr DST`
    # would become a list of folders. softcopy asks it not to.
    import sys
    import types

    import click.core
    from softcopy import cli

    expanded: list[list[str]] = []
    monkeypatch.setattr(click.core, "os", types.SimpleNamespace(**{**vars(os), "name": "nt"}))

    def expand(args: list[str]) -> list[str]:
        expanded.append(args)
        return args

    monkeypatch.setattr(click.core, "_expand_args", expand)
    monkeypatch.setattr(sys, "argv", ["softcopy", "--help"])
    with pytest.raises(SystemExit) as ended:
        cli.entry()
    assert ended.value.code == 0 and expanded == []


def test_an_acquisition_that_cannot_be_copied_is_named_and_the_others_go_on(tmp_path: Path, run_softcopy: Any) -> None:
    acq, dst, reports = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "reports"
    for name in ("blocked.zarr", "good.zarr"):
        write_finished_archive(acq / name, "v2dot", 2)
    dst.mkdir()
    reports.mkdir()
    (dst / "blocked.zarr").write_text("a file where its copy would go")
    service = run_softcopy(acq / "*.zarr", dst, "--report", reports / "{name}.json")
    wait_for((reports / "good.zarr.json").exists, 60, "the good acquisition's report")
    wait_for((reports / "blocked.zarr.json").exists, 60, "the blocked acquisition's report")
    blocked = json.loads((reports / "blocked.zarr.json").read_text())
    assert blocked["status"] != "verified" and "not a folder" in blocked["targets"][0]["fatal"], blocked
    assert json.loads((reports / "good.zarr.json").read_text())["status"] == "verified"
    assert service.poll() is None, "the service goes on"
    assert (dst / "blocked.zarr").read_text() == "a file where its copy would go"
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143
