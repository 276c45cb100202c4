"""The command line as a user meets it: help, version, options, exit codes, one-line errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import softcopy
from conftest import finish, softcopy_cmd, wait_for, write_finished_archive
from softcopy._softcopy import Engine, folder_identity, verify_manifest, verify_trees
from softcopy.config import EngineConfig, Target


def run(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, timeout=timeout)


def test_help_explains_usage_options_targets_file_and_exit_codes() -> None:
    r = run("--help")
    assert r.returncode == 0
    for text in (
        "TARGETS_FILE",
        "SRC DST",
        "--nprocs",
        "--sleep-time",
        "--wait-for-source",
        "--verbose",
        "--version",
        "targets:",
        "destination:",
        "Exit codes",
        "complete",
        "--demo",
        "--settle-time",
        "--give-up-after",
    ):
        assert text in r.stdout, text


def test_version_matches_the_package() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"softcopy, version {softcopy.__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a TARGETS_FILE, or SRC and DST"),
        (("a", "b", "c"), "give a TARGETS_FILE, or SRC and DST"),
        (("--nprocs", "0", "x", "y"), "--nprocs"),
        (("--nprocs", "many", "x", "y"), "--nprocs"),
        (("--sleep-time", "-1", "x", "y"), "--sleep-time"),
        (("--wait-for-source", "maybe", "x", "y"), "--wait-for-source"),
        (("no-such-targets.yaml",), "no such targets file"),
    ],
)
def test_bad_usage_exits_2_with_one_clear_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = subprocess.run(softcopy_cmd(*args), check=False, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_malformed_targets_file_is_one_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("targets:\n  - source: [unclosed\n")
    r = run(f)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and str(f) in r.stderr and "not valid YAML" in r.stderr


def test_missing_source_without_waiting_is_an_immediate_error(tmp_path: Path) -> None:
    r = run(tmp_path / "nope.zarr", tmp_path / "out", "--wait-for-source", "false")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists(), "nothing written"


def test_missing_source_with_waiting_waits_then_copies(tmp_path: Path, run_softcopy: Any) -> None:
    src, dst = tmp_path / "later.zarr", tmp_path / "out"
    proc = run_softcopy(src, dst)
    wait_for(lambda: "waiting for" in proc.output(), 10, "softcopy to say it waits")
    assert proc.poll() is None
    src.mkdir()
    (src / "a").write_bytes(b"abc")
    (src / "complete").touch()
    code, out = finish(proc)
    assert code == 0, out
    assert (dst / "a").read_bytes() == b"abc"


def test_src_dst_shorthand_with_every_option(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    src.mkdir()
    (src / "x").write_bytes(b"1")
    (src / "done").touch()
    r = run(
        src,
        dst,
        "--nprocs",
        "2",
        "--sleep-time",
        "0.01",
        "--wait-for-source",
        "false",
        "--marker",
        "done",
        "--verbose",
        "--log-every",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert (dst / "x").read_bytes() == b"1" and (dst / "done").exists()
    assert "verified complete" in r.stderr
    assert "event" in r.stderr or "watching" in r.stderr, "--verbose shows engine detail"


def test_quiet_prints_only_the_result(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    src.mkdir()
    (src / "x").write_bytes(b"1")
    r = run(src, dst, "--once", "--quiet")
    assert r.returncode == 0
    assert "INFO" not in r.stderr and "verified complete" in r.stderr


def test_targets_file_options_per_target_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"a")
    f = tmp_path / "conf" / "targets.yaml"
    f.parent.mkdir()
    f.write_text("targets:\n  - source: ../a\n    destination: ../out/a\n    nprocs: 1\n    once: true\n")
    (tmp_path / "out").mkdir()
    r = subprocess.run(softcopy_cmd(f), check=False, capture_output=True, text=True, cwd="/", timeout=30)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "a" / "f").read_bytes() == b"a"


def test_demo_runs_and_verifies() -> None:
    r = run("--demo", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "verified complete" in r.stderr
    assert "identical" in r.stderr


def test_demo_without_tensorstore_uses_the_builtin_lock_and_rename_writer() -> None:
    code = (
        "import sys; sys.modules['tensorstore'] = None\n"  # makes `import tensorstore` fail
        "from softcopy.cli import main; main(['--demo'])"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "built-in tensorstore-style writer" in r.stderr and "identical" in r.stderr


def test_copy_api_turns_ctrl_c_into_a_clean_stop_and_keyboard_interrupt(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    code = (
        "import softcopy, sys\n"
        "try:\n"
        f"    softcopy.copy({str(src)!r}, {str(dst)!r})\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', flush=True); sys.exit(7)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (dst / "a").exists(), 20, "the copy to start")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 7 and "KeyboardInterrupt" in out
    assert not [p for p in dst.iterdir() if p.name.endswith(".softcopy-partial")]


def test_verify_command_names_every_difference_and_catches_one_flipped_byte(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "c" / "0").mkdir(parents=True)
    for i in range(5):
        (src / "c" / "0" / str(i)).write_bytes(bytes([i]) * 4096)
    (src / "complete").touch()
    assert softcopy.copy(src, dst).ok
    r = run("verify", src, dst, "--checksum")
    assert r.returncode == 0 and "identical: 5 files" in r.stderr, r.stderr
    flipped = dst / "c" / "0" / "3"
    st = flipped.stat()
    data = bytearray(flipped.read_bytes())
    data[1000] ^= 1  # one bit, same size, same mtime (bit rot): only a content comparison can see it
    flipped.write_bytes(bytes(data))
    os.utime(flipped, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run("verify", src, dst).returncode == 0, "sizes and mtimes alone cannot see it"
    r = run("verify", src, dst, "--checksum")
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["content: c/0/3"]
    (dst / "c" / "0" / "1").unlink()
    (dst / "c" / "0" / "2").write_bytes(b"short")
    (dst / "stray").write_bytes(b"x")
    r = run("verify", src, dst, "--checksum")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "missing: c/0/1",
        "size: c/0/2 (source 4096 bytes, destination 5 bytes)",
        "content: c/0/3",
        "extra: stray",
    ]


def report_schema() -> dict[str, object]:
    import json

    schema: dict[str, object] = json.loads((Path(__file__).parent.parent / "docs" / "report-schema.json").read_text())
    return schema


def test_report_is_written_valid_and_says_what_happened(tmp_path: Path) -> None:
    import json

    import jsonschema

    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "report.json"
    src.mkdir()
    for i in range(3):
        (src / str(i)).write_bytes(b"x" * (i + 1))  # chunks 0..2 of 5; 3 and 4 are fill value
    meta = '{"shape": [5], "chunks": [1]}'
    (src / ".zarray").write_text(meta)
    r = run(src, dst, "--once", "--report", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["status"] == "verified" and doc["exit_code"] == 0
    [t] = doc["targets"]
    assert (t["files_copied"], t["bytes_copied"], t["expected_chunks"], t["absent_at_source"]) == (
        4,
        6 + len(meta),
        5,
        2,
    )


def test_report_is_written_when_stopped(tmp_path: Path, run_softcopy: Any) -> None:
    import json

    import jsonschema

    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "report.json"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    proc = run_softcopy(src, dst, "--report", out)
    wait_for(lambda: (dst / "a").exists(), 10, "the copy")
    proc.send_signal(signal.SIGTERM)
    code, _ = finish(proc, 5)
    assert code == 143
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["status"] == "interrupted" and doc["exit_code"] == 143


def test_dry_run_says_what_would_be_copied_and_writes_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    write_finished_archive(src, "zarr3", 3)
    (src / "c" / "0" / "0" / "0" / "0.__lock").write_bytes(b"stale")  # never counted
    r = run(src, dst, "--dry-run")
    assert r.returncode == 0, r.stderr
    n = len([p for p in src.rglob("*") if p.is_file()]) - 1
    assert f"would copy {n} files" in r.stderr and "0 already at the destination" in r.stderr
    assert "array .: Zarr v3, shape [3, 4, 64, 64], 24 chunk files expected" in r.stderr
    assert not dst.exists(), "nothing written"


def test_live_display_as_a_person_sees_it_in_a_terminal(tmp_path: Path) -> None:
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    src, dst = tmp_path / "data.zarr", tmp_path / "out.zarr"
    (src / "c").mkdir(parents=True)
    for i in range(12):
        (src / "c" / str(i)).write_bytes(bytes([i]) * 100_000)
    session = f"softcopy-{os.getpid()}"
    cmd = " ".join(softcopy_cmd(src, dst))  # no marker: it keeps watching, the table stays up
    # 80 x 24: the terminal a person most likely has.
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)
    # Keep the pane after softcopy exits, to read what it said last.
    subprocess.run(["tmux", "set-option", "-t", session, "remain-on-exit", "on"], check=True)
    try:

        def pane() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], check=True, capture_output=True, text=True
            ).stdout

        try:
            wait_for(lambda: "copying" in pane() and " 12 " in pane(), 20, "the table to show 12 files copied")
        except AssertionError as e:
            raise AssertionError(f"{e}; the pane shows:\n{pane()}") from None
        screen = pane()
        for header in ("source", "state", "files", "bytes", "rate", "queue", "lag", "err", "time"):
            assert header in screen, screen
        assert "data.zarr" in screen and "1.1 MiB" in screen and "…" not in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        wait_for(lambda: "run the same command again to resume" in pane(), 10, "Ctrl-C to stop it cleanly")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_json_lines_on_stdout_for_programs(tmp_path: Path) -> None:
    import json

    import jsonschema

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    r = run(src, dst, "--once", "--json", "--log-every", "0.1")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]  # every stdout line is JSON
    kinds = [e["type"] for e in events]
    assert "log" in kinds and kinds[-1] == "report"
    report = {k: v for k, v in events[-1].items() if k not in ("type", "time")}
    jsonschema.validate(report, report_schema())
    assert report["status"] == "verified"


def test_checksum_copy_writes_a_manifest_that_verify_checks_without_the_source(tmp_path: Path) -> None:
    src, dst = tmp_path / "acq" / "data.zarr", tmp_path / "cluster" / "data.zarr"
    dst.parent.mkdir(exist_ok=True)
    write_finished_archive(src, "zarr3sharded", 4)
    dst.parent.mkdir(exist_ok=True)
    r = run(src, dst, "--checksum")
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "cluster" / "data.zarr.softcopy-manifest.tsv"  # beside the copy, not in it
    lines = [line for line in manifest.read_text().splitlines() if not line.startswith("#")]
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and p.name != "complete")
    assert [line.split("\t")[2] for line in lines] == files
    r = run("verify", "--manifest", manifest, dst)
    assert r.returncode == 0 and f"identical: {len(files)} files" in r.stderr, r.stdout + r.stderr
    shard = dst / files[0]
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    r = run("verify", "--manifest", manifest, dst)
    assert r.returncode == 1 and r.stdout.splitlines() == [f"content: {files[0]}"], r.stdout


def test_engine_errors_reach_python_as_the_matching_exception(tmp_path: Path) -> None:
    # An OS error is the OSError subclass its errno picks, with errno and path; bad configuration is ValueError.
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as missing:
        folder_identity(tmp_path / "nope")
    assert (missing.value.errno, missing.value.filename) == (errno.ENOENT, str(tmp_path / "nope"))
    with pytest.raises(NotADirectoryError):
        folder_identity(tmp_path / "file" / "x")
    with pytest.raises(IsADirectoryError) as folder:
        verify_manifest(tmp_path, tmp_path)
    assert folder.value.filename == str(tmp_path)
    with pytest.raises(FileNotFoundError) as gone:
        verify_trees(tmp_path, tmp_path / "gone", [])
    assert gone.value.filename == str(tmp_path / "gone")
    with pytest.raises(ValueError, match='unknown copy_method "nope"'):
        Engine(EngineConfig(Target(tmp_path, tmp_path / "out"), copy_method="nope"))  # type: ignore[arg-type]


def test_an_os_error_from_the_engine_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # A destination whose record cannot be read (a folder where the file goes): whose copy it
    # holds cannot be told, which is bad input, said in one line, nothing copied.
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (dst / ".softcopy-origin").mkdir(parents=True)
    r = run(src, dst, "--once")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot tell whose copy the destination holds" in r.stderr and "Is a directory" in r.stderr
    assert not (dst / "a").exists()
    if Path("/proc/self/mem").exists():
        # A manifest whose read fails in the OS (EIO at address 0).
        r = run("verify", "--manifest", "/proc/self/mem", dst)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "Input/output error" in r.stderr and "Traceback" not in r.stderr
