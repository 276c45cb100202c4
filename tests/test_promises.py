"""What the README promises a new user, tried as one would: bad input refused at the start in one
line, a missing acquisitions folder waited for, a report for every acquisition (also one stopped
in flight) that counts what is there, --dry-run with a pattern, -q and -v, --json's final line
against the schema, `softcopy verify`'s exit codes. The real CLI on real folders."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import finish, softcopy_cmd, start_writer, wait_for, write_finished_archive
from rich.console import Console
from softcopy.cli import setup_logging
from softcopy.display import summary
from softcopy.run import TargetReport
from test_cli import report_schema


def run(*args: str | Path, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=timeout, **kw)


def one_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert all(w in r.stderr for w in words), r.stderr


@pytest.mark.parametrize(
    "args", [("--no-such-option", "a", "b"), ("--nprocs",), ("--nprocs", "many", "a", "b"), ("verify", "--bogus")]
)
def test_click_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    one_line(run(*args), "--help")


def test_a_report_folder_that_does_not_exist_is_refused_before_copying(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    one_line(run(src, dst, "--once", "--report", tmp_path / "no" / "report.json"), "--report", str(tmp_path / "no"))
    assert not dst.exists()


def test_a_metrics_port_in_use_is_refused_before_copying(tmp_path: Path) -> None:
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    write_finished_archive(acq / "done.zarr", "v2dot", 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line(run(acq / "*.zarr", dst, "--metrics", f"127.0.0.1:{port}"), "--metrics", str(port))
    assert list(dst.iterdir()) == []


def test_a_missing_acquisitions_folder_is_waited_for(tmp_path: Path, run_softcopy: Any) -> None:
    acq, dst, made = tmp_path / "acquisition", tmp_path / "raw", tmp_path / "made"
    dst.mkdir()
    service = run_softcopy(acq / "*.zarr", dst, "--report", tmp_path / "{name}.json")
    wait_for(lambda: "waiting for the acquisitions folder" in service.output(), 30, "the wait to be said")
    assert service.poll() is None
    # The disk is mounted: the folder appears with an acquisition in it.
    write_finished_archive(made / "done.zarr", "v2dot", 2)
    made.rename(acq)
    wait_for(lambda: (tmp_path / "done.zarr.json").exists(), 60, "the acquisition's report")
    assert json.loads((tmp_path / "done.zarr.json").read_text())["status"] == "verified"
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143


def test_acquisitions_in_flight_at_the_stop_get_a_report(tmp_path: Path, run_softcopy: Any) -> None:
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    acq.mkdir()
    dst.mkdir()
    go = tmp_path / "go"
    writer = start_writer(acq / "live.zarr", "zarr3", 40, 0.05, "--hold", str(go))
    try:
        service = run_softcopy(acq / "*.zarr", dst, "--report", tmp_path / "{name}.json")
        wait_for(lambda: (dst / "live.zarr" / "zarr.json").exists(), 60, "the copy to be under way")
        service.send_signal(signal.SIGTERM)
        code, out = finish(service)
        assert code == 143, out
    finally:
        go.touch()
        writer.wait(60)
    doc = json.loads((tmp_path / "live.zarr.json").read_text())
    jsonschema.validate(doc, report_schema())
    assert (doc["status"], doc["exit_code"], doc["targets"][0]["phase"]) == ("interrupted", 143, "stopped"), doc


def test_a_summary_counts_what_is_at_the_destination_and_how_many_more_are_missing() -> None:
    missing = [f"0/{i}" for i in range(89)]
    t = TargetReport(Path("/a/run.zarr"), Path("/b/run.zarr"), "incomplete", files_checked=91, missing=missing)
    t.files_at_destination = 2
    lines = summary(t)
    assert "2 of 91 source files at the destination" in lines[1], lines[1]
    assert sum(line.startswith("  missing: ") for line in lines) == 50
    assert "... and 39 more missing" in "\n".join(lines)


def test_dry_run_with_a_pattern_plans_each_matching_folder(tmp_path: Path) -> None:
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    for name in ("a.zarr", "b.zarr"):
        write_finished_archive(acq / name, "v2dot", 2)
    (acq / "c.tif").write_text("not an acquisition")
    r = run(acq / "*.zarr", dst, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "does not exist" not in r.stderr and "2 folders match" in r.stderr, r.stderr
    assert f"{acq / 'a.zarr'} -> {dst / 'a.zarr'}: would copy" in r.stderr
    assert f"{acq / 'b.zarr'} -> {dst / 'b.zarr'}: would copy" in r.stderr and "c.tif" not in r.stderr
    assert list(dst.iterdir()) == []


def test_quiet_silences_warnings_on_the_console(tmp_path: Path) -> None:
    acq, dst = tmp_path / "acquisition", tmp_path / "raw"
    dst.mkdir()
    write_finished_archive(acq / "done.zarr", "v2dot", 2)
    # A service manager that cannot be told: a warning once the service is up.
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "no-such-socket")}
    said = {}
    for quiet in (False, True):
        report = tmp_path / f"{quiet}" / "done.zarr.json"
        report.parent.mkdir()
        args: list[str | Path] = [acq / "*.zarr", dst / f"{quiet}", "--report", report.parent / "{name}.json"]
        args += ["-q"] if quiet else []
        (dst / f"{quiet}").mkdir()
        p = subprocess.Popen(softcopy_cmd(*args), stderr=subprocess.PIPE, text=True, env=env)
        wait_for(report.exists, 60, "the service to be up and the acquisition copied")
        p.send_signal(signal.SIGTERM)
        _, said[quiet] = p.communicate(timeout=30)
        assert p.returncode == 143, said[quiet]
    assert "cannot tell the service manager" in said[False], said[False]
    assert "cannot tell the service manager" not in said[True], said[True]


def test_quiet_still_prints_errors(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging(Console(file=io.StringIO()), verbose=False, quiet=True)
        logging.getLogger("softcopy").info("an information")
        logging.getLogger("softcopy").warning("a warning")
        logging.getLogger("softcopy").error("an error")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text = capsys.readouterr().err
    assert "an error" in text and "a warning" not in text and "an information" not in text, text


def test_verbose_shows_initialisation_and_the_zarr_analysis(tmp_path: Path) -> None:
    write_finished_archive(tmp_path / "src.zarr", "v2dot", 2)
    r = run(tmp_path / "src.zarr", tmp_path / "dst.zarr", "-v")
    assert r.returncode == 0, r.stderr
    assert "starting: " in r.stderr and "8 workers" in r.stderr, r.stderr
    assert "Zarr analysis: array" in r.stderr and "files expected" in r.stderr, r.stderr


def test_the_json_final_line_validates_against_the_schema(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    r = run(src, tmp_path / "dst", "--once", "--json")
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["type"] == "report"
    jsonschema.validate(last, report_schema())


def test_verify_tells_a_malformed_manifest_from_a_difference(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    assert run(src, dst, "--once", "--checksum").returncode == 0
    manifest = tmp_path / "dst.softcopy-manifest.tsv"
    assert run("verify", "--manifest", manifest, dst).returncode == 0
    (dst / "a").write_bytes(b"b")
    assert run("verify", "--manifest", manifest, dst).returncode == 1
    manifest.write_text("not a manifest\n")
    one_line(run("verify", "--manifest", manifest, dst), "--manifest")


def test_help_shows_the_pattern_form() -> None:
    r = run("--help")
    assert r.returncode == 0 and "'ACQ/*.zarr' DST" in r.stdout, r.stdout
