"""Every command in the README runs here, so the README cannot drift: the Use commands, the targets
file, the Python example and the systemd unit's ExecStart run against real folders (the README's
/acquisition and /cluster paths are mapped into a temporary folder); the install commands are the
ones the wheel test runs; the two top commands are the ones CI runs."""

from __future__ import annotations

import re
import shlex
import shutil
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
        if "--metrics" in argv:
            show_status(port, names)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        hook.shutdown()
        hook.server_close()
    assert proc.returncode == 143, err


def show_status(port: int, names: list[str]) -> None:
    """The README's `softcopy status` asks the service at its --metrics address: each acquisition
    ended is in its table of those recently ended."""
    [line] = commands(block_with("bash", "softcopy status"))
    argv = shlex.split(line.replace(":9108", f":{port}"))
    assert argv[:2] == ["softcopy", "status"]

    def shown() -> bool:
        r = subprocess.run(softcopy_cmd(*argv[1:]), check=False, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        ended = r.stdout.split("recently ended")[1]
        return all(any(row.split()[:2] == [n, "done"] for row in ended.splitlines()) for n in names)

    wait_for(shown, 30, "softcopy status to show the acquisitions ended")


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


def test_systemd_unit_passes_systemd_analyze_and_ends_well_on_a_stop(tmp_path: Path) -> None:
    unit = blocks("ini")[0]
    settings = dict(line.split("=", 1) for line in commands(unit) if "=" in line)
    # A stop is exit 143, not a failure; the report folder of ExecStart's --report is made for it.
    assert settings["SuccessExitStatus"] == "143" and settings["KillSignal"] == "SIGTERM"
    assert f"/var/log/{settings['LogsDirectory']}/" in settings["ExecStart"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd-analyze wants ExecStart's program to exist: this Python stands in for softcopy.
    path = tmp_path / "softcopy.service"
    path.write_text(unit.replace("/opt/softcopy/bin/softcopy", sys.executable))
    argv = ["systemd-analyze", "verify", "--man=no", str(path)]
    r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and str(path) not in r.stdout + r.stderr, r.stdout + r.stderr


def test_windows_task_starts_the_service_form_without_a_time_limit_or_a_password() -> None:
    task = blocks("powershell")[0]
    execute = re.search(r"-Execute '([^']+)' -Argument '([^']+)'", task)
    assert execute is not None, task
    assert execute[1].endswith("softcopy.exe") and execute[2].split()[0].endswith("*.zarr")
    # Task Scheduler's default stops a task after 72 h; a stored password would be prompted for.
    assert "-ExecutionTimeLimit ([TimeSpan]::Zero)" in task
    assert "-LogonType Interactive" in task and "Password" not in task and "/RP" not in task
    assert "Register-ScheduledTask" in task and "-Settings $settings" in task and "-Principal $principal" in task


# Target options whose default (None) the engine resolves per destination: the README gives the
# local one (and says the ssh one beside it).
ENGINE_CHOOSES = {"nprocs": "8"}


def readme_options() -> dict[str, str]:
    """The options table: each long option and its default as the README says it."""
    rows = re.findall(r"^\| (`-[^|]*) \|\s*([^|]*?)\s*\|", README, re.MULTILINE)
    out = {}
    for names, default in rows:
        long = [n for n in re.findall(r"`([^`]+)`", names) if n.startswith("--")]
        out[long[0].split()[0]] = default.strip().strip("`")
    return out


def as_readme(value: object) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_option_default_in_the_readme_is_the_one_softcopy_uses() -> None:
    import dataclasses

    from softcopy.cli import main
    from softcopy.config import Target

    fields = {f.name: f.default for f in dataclasses.fields(Target)}
    params = {p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0]: p for p in main.params}
    params.update({o: p for p in main.params for o in p.opts if o.startswith("--")})
    shown = readme_options()
    assert set(shown) >= {o for o in params if o.startswith("--")} - {"--help", "--version"}, sorted(params)
    for option, said in shown.items():
        if option in ("--demo", "--version", "--help"):
            continue
        param = params[option]
        name = option[2:].replace("-", "_")
        if name in ENGINE_CHOOSES:
            real = ENGINE_CHOOSES[name]
        elif name in fields:
            real = as_readme(fields[name])  # the target option's default (the CLI passes None: unset)
        elif getattr(param, "is_flag", False):
            real = "true" if param.default else "off"
        else:
            real = as_readme(param.default)
        assert said == ("off" if real == "false" and getattr(param, "is_flag", False) else real), (option, said, real)
        # --help says the same.
        help_text = param.get_help_record(main.make_context("softcopy", ["x"]))
        tag = re.search(r"\[default: ([^\]]+)\]", help_text[1] if help_text else "")
        if tag is not None:
            value = tag[1].split(";")[0]  # click adds a range: "30.0; x>=0"
            real_tag = as_readme(float(value)) if value.replace(".", "").isdigit() else value
            assert real_tag == said, (option, real_tag, said)


def test_every_exit_code_in_the_readme_is_softcopys() -> None:
    from softcopy import exits

    paragraph = README[README.index("**Exit codes:**") :].split("\n\n")[0]
    said = {int(n) for n in re.findall(r"(?<![\w.-])(\d+)(?= every| the copy| bad| /| stopped)", paragraph)}
    assert said == {exits.EXIT_OK, exits.EXIT_INCOMPLETE, exits.EXIT_USAGE, exits.EXIT_SIGINT, exits.EXIT_SIGTERM}
    verify = re.search(r"exit (\d) when\s+identical, (\d) for a difference, (\d) for bad input", README)
    assert verify is not None
    assert tuple(map(int, verify.groups())) == (exits.EXIT_OK, exits.EXIT_DIFFERENT, exits.EXIT_USAGE)


def test_the_file_map_names_files_that_exist() -> None:
    block = README[README.index("## Development") :]
    named = re.findall(r"(?:src|python|docs)/[\w./-]*", block.split("```")[1])
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path).exists(), path


def test_sample_report_matches_the_schema() -> None:
    import json

    import jsonschema

    schema = json.loads((ROOT / "docs" / "report-schema.json").read_text())
    jsonschema.validate(json.loads(blocks("json")[0]), schema)


def test_shown_table_has_the_columns_softcopy_draws() -> None:
    from softcopy.display import table

    shown = blocks("text")[0].splitlines()[1].split()
    assert shown == [c.header for c in table([]).columns]
