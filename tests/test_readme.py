"""Every command in the README runs here, so the README cannot drift: the Use commands, the targets
file, the Python example and the systemd unit's ExecStart run against real folders (the README's
/acquisition and /cluster paths are mapped into a temporary folder); the install commands are the
ones the wheel test runs; the two top commands are the ones CI runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_same_tree, softcopy_cmd, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")  # a shell's (and systemd's) line continuation
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def block_with(lang: str, text: str) -> str:
    return next(b for b in blocks(lang) if text in b)


def run_service(argv: list[str], world: Path, names: list[str]) -> None:
    """Runs the service form until every acquisition's report is there, then stops it (SIGTERM).
    A webhook URL is replaced by a local receiver's (tests never reach the network), a metrics
    port by a free one."""
    import http.server
    import signal
    import socket
    import threading

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [f"http://127.0.0.1:{hook.server_address[1]}/" if a.startswith("https://") else a for a in argv]
    argv = [f"127.0.0.1:{port}" if a.endswith(":9108") else a for a in argv]
    argv = [a.replace("/var/log/softcopy", str(world / "reports")) for a in argv]
    (world / "reports").mkdir(exist_ok=True)
    proc = subprocess.Popen(softcopy_cmd(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all((world / "reports" / f"{n}.json").exists() for n in names), 60, "the reports")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        hook.shutdown()
        hook.server_close()
    assert proc.returncode == 143, err


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """The README's /acquisition sources, finished (marker present), under tmp_path."""
    for name in ("data.zarr", "other.zarr"):
        src = tmp_path / "acquisition" / name
        (src / "c" / "0").mkdir(parents=True)
        (src / "c" / "0" / "0").write_bytes(name.encode())
        (src / "zarr.json").write_text('{"node_type": "group"}')
        (src / "complete").touch()
    # The cluster's folders exist (a mounted share): softcopy makes only the last folder of a path.
    for folder in ("project", "lab/raw"):
        (tmp_path / "cluster" / folder).mkdir(parents=True)
    return tmp_path


def mapped(text: str, world: Path) -> str:
    return text.replace("/acquisition", f"{world}/acquisition").replace("/cluster", f"{world}/cluster")


def test_the_two_commands_come_first_and_are_what_ci_runs() -> None:
    first = blocks("bash")[0]
    assert README.index("```bash") < README.index("\n## ")
    assert commands(first) == ["pip install . && softcopy --demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_install_commands_are_the_ones_the_wheel_test_runs() -> None:
    install = commands(blocks("bash")[1])
    assert install[0].startswith("pip install softcopy-") and install[0].endswith(".whl")
    assert install[1].startswith("uvx --from softcopy-") and install[1].endswith("softcopy --help")
    wheel_test = (ROOT / "tests" / "test_wheel.py").read_text()
    assert '"pip"), "install"' in wheel_test and '["uvx", "--from"' in wheel_test


def test_use_commands_and_targets_file(world: Path) -> None:
    targets = world / "targets.yaml"
    targets.write_text(mapped(blocks("yaml")[0], world))
    for line in commands(block_with("bash", "targets.yaml")):
        argv = shlex.split(mapped(line, world).replace("targets.yaml", str(targets)))
        assert argv[0] == "softcopy"
        r = subprocess.run(softcopy_cmd(*argv[1:]), check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (line, r.stderr)
    for name in ("data.zarr", "other.zarr"):
        assert_same_tree(world / "acquisition" / name, world / "cluster" / "project" / name)


def test_verify_commands(world: Path) -> None:
    src, dst = world / "acquisition" / "data.zarr", world / "cluster" / "project" / "data.zarr"
    r = subprocess.run(softcopy_cmd(src, dst, "--checksum"), check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for line in commands(block_with("bash", "softcopy verify")):
        argv = shlex.split(mapped(line, world))
        assert argv[:2] == ["softcopy", "verify"]
        r = subprocess.run(softcopy_cmd(*argv[1:]), check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "identical" in r.stderr, (line, r.stderr)


def test_the_service_form_comes_first_and_runs(world: Path) -> None:
    service = block_with("bash", "*.zarr")
    assert README.index(service) < README.index(block_with("bash", "targets.yaml"))
    [line] = commands(service)
    argv = shlex.split(mapped(line, world))
    assert argv[0] == "softcopy"
    run_service(argv[1:], world, ["data.zarr", "other.zarr"])
    for name in ("data.zarr", "other.zarr"):
        assert_same_tree(world / "acquisition" / name, world / "cluster" / "lab" / "raw" / name)


def test_python_example(world: Path) -> None:
    code = mapped(blocks("python")[0], world)
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("verified")


def test_systemd_unit_runs_its_exec_start(world: Path) -> None:
    unit = blocks("ini")[0]
    exec_start = next(line.split("=", 1)[1] for line in commands(unit) if line.startswith("ExecStart="))
    argv = shlex.split(mapped(exec_start, world))
    assert argv[0].endswith("/bin/softcopy") and argv[1].endswith("*.zarr")
    run_service(argv[1:], world, ["data.zarr", "other.zarr"])
    # Bad input (exit 2) must not be restarted in a loop; crashes are. The service tells systemd
    # when it is ready, and pings its watchdog.
    assert "RestartPreventExitStatus=2" in unit and "Restart=on-failure" in unit
    assert "Type=notify" in unit and "WatchdogSec=" in unit


def test_windows_task_starts_the_service_form() -> None:
    [task] = commands(blocks("bat")[0])
    argv = shlex.split(task, posix=False)
    assert argv[:2] == ["schtasks", "/Create"]
    run = argv[argv.index("/TR") + 1].strip('"')
    assert run.split()[0].endswith("softcopy.exe") and run.split()[1].endswith("*.zarr")


def test_sample_report_matches_the_schema() -> None:
    import json

    import jsonschema

    schema = json.loads((ROOT / "docs" / "report-schema.json").read_text())
    jsonschema.validate(json.loads(blocks("json")[0]), schema)


def test_shown_table_has_the_columns_softcopy_draws() -> None:
    from softcopy.display import table

    shown = blocks("text")[0].splitlines()[1].split()
    assert shown == [c.header for c in table([]).columns]
