"""The ssh destination, live (docs/design.md, "The ssh destination: the SFTP client"):
`softcopy SRC host:/abs/path` through a real sshd on loopback, its SFTP subsystem the storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import conftest
import pytest
import softcopy
from _share import Sshd, without_hasher
from conftest import Softcopy, assert_same_tree, finish, softcopy_cmd, start_writer, wait_for, write_finished_archive
from softcopy._softcopy import SshDestination
from softcopy.config import EngineConfig, Target, destination_of
from test_move import damage


def ssh_command(sshd: Sshd) -> str:
    """How this test's ssh reaches the loopback server (no prompt: BatchMode)."""
    return " ".join(["ssh", "-p", str(sshd.port), "-o", "BatchMode=yes", *sshd.ssh_options()])


def copy_to(src: Path, dst: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(softcopy_cmd(src, dst, *args), check=False, capture_output=True, text=True, timeout=120)


def test_a_finished_archive_is_copied_over_ssh_verified_and_marked(tmp_path: Path, sshd: Sshd) -> None:
    src, remote = tmp_path / "acq.zarr", tmp_path / "server"
    write_finished_archive(src, "v3", timepoints=3)
    remote.mkdir()
    r = copy_to(src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", ssh_command(sshd))
    assert r.returncode == 0, r.stdout + r.stderr
    copy = remote / "acq.zarr"
    assert_same_tree(src, copy)
    assert (copy / "complete").is_file(), "the marker, published last"
    left = [p.name for p in copy.rglob("*") if p.name.startswith(".softcopy-lock") or "partial" in p.name]
    assert left == [], "no claim and no partial left behind"
    # Copied again: nothing to copy, still verified.
    again = copy_to(src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", ssh_command(sshd))
    assert again.returncode == 0, again.stdout + again.stderr


def test_what_a_person_must_act_on_is_one_line_and_exit_2_before_anything_is_copied(tmp_path: Path, sshd: Sshd) -> None:
    src = tmp_path / "acq.zarr"
    write_finished_archive(src, "v3", timepoints=1)
    nobody = "ssh -p 1 -o BatchMode=yes -o ConnectTimeout=5"
    cases = {
        "refused connection": (f"root@127.0.0.1:{tmp_path}/x", nobody, "cannot reach root@127.0.0.1:"),
        "parent missing": (f"root@127.0.0.1:{tmp_path}/no/x", ssh_command(sshd), "does not exist"),
        "a file": (f"root@127.0.0.1:{src}/zarr.json", ssh_command(sshd), "is a file"),
    }
    for what, (dst, cmd, said) in cases.items():
        r = copy_to(src, dst, "--ssh-command", cmd)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2, f"{what}: {r.returncode}\n{r.stdout}{r.stderr}"
        assert said in r.stderr and "Traceback" not in r.stderr, f"{what}: {r.stderr}"
        assert len([line for line in lines if "error" in line.lower()]) == 1, f"{what}: {r.stderr}"
    assert not (tmp_path / "x").exists() and not (tmp_path / "no").exists()


def test_a_connection_killed_mid_copy_pauses_the_target_and_the_copy_resumes_when_sshd_is_back(
    tmp_path: Path, sshd: Sshd, run_softcopy: Callable[..., Softcopy]
) -> None:
    src, remote = tmp_path / "acq.zarr", tmp_path / "server"
    remote.mkdir()
    writer = start_writer(src, "v3", 40, 0.25)
    proc = run_softcopy(
        src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", ssh_command(sshd), "--give-up-after", "300"
    )
    copy = remote / "acq.zarr"
    wait_for(lambda: any(p.name.isdigit() and p.is_file() for p in copy.rglob("*")), 30, "the first chunks over ssh")
    sshd.kill()  # sshd and every session it serves: the connection drops
    wait_for(lambda: "cannot" in proc.output(), 60, "the target to say the destination is away")
    assert proc.poll() is None, proc.output()
    sshd.start()
    assert writer.wait(120) == 0
    code, out = finish(proc, 180)
    assert code == 0, out
    assert "is back" in out, f"the copy went through the outage, and resumed after it: {out}"
    assert_same_tree(src, copy)
    assert (copy / "complete").is_file()
    assert not [p for p in copy.rglob("*") if "partial" in p.name], "nothing half-written left"


def test_a_second_softcopy_on_the_same_ssh_destination_is_refused_while_the_first_runs(
    tmp_path: Path, sshd: Sshd, run_softcopy: Callable[..., Softcopy]
) -> None:
    src, other, remote = tmp_path / "acq.zarr", tmp_path / "other.zarr", tmp_path / "server"
    remote.mkdir()
    write_finished_archive(other, "v3", timepoints=1)
    writer = start_writer(src, "v3", 40, 0.25)
    dst = f"root@127.0.0.1:{remote}/acq.zarr"
    first = run_softcopy(src, dst, "--ssh-command", ssh_command(sshd))
    wait_for(lambda: (remote / "acq.zarr" / ".softcopy-lock").is_file(), 30, "the first run's claim")
    second = copy_to(other, dst, "--ssh-command", ssh_command(sshd))
    assert second.returncode != 0 and "another softcopy" in second.stdout + second.stderr, second
    assert (
        not (remote / "acq.zarr" / "zarr.json").is_file()
        or (remote / "acq.zarr" / "zarr.json").read_bytes() == (src / "zarr.json").read_bytes()
    ), "nothing of the other acquisition written there"
    assert writer.wait(120) == 0
    code, out = finish(first, 180)
    assert code == 0, out
    assert_same_tree(src, remote / "acq.zarr")


def refused(src: Path, dst: str, sshd: Sshd) -> None:
    """`softcopy SRC DST` is refused in one line, exit 2, within 30 s (not left copying)."""
    try:
        r = subprocess.run(
            softcopy_cmd(src, dst, "--ssh-command", ssh_command(sshd)),
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("not refused: still running after 30 s")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_ssh_destination_inside_the_source_on_this_machine_is_refused(tmp_path: Path, sshd: Sshd) -> None:
    # The same machine over ssh (loopback, or the PC's own name): the copy would land inside the
    # acquisition, be walked as part of it, and copy itself again, filling the acquisition's disk.
    src = tmp_path / "acq.zarr"
    write_finished_archive(src, "v3", timepoints=1)
    refused(src, f"root@127.0.0.1:{src}/backup", sshd)
    assert not (src / "backup").exists(), "nothing written into the acquisition"


def targets_file(folder: Path, entries: list[dict[str, object]]) -> Path:
    """A targets file (JSON is YAML) in `folder`."""
    folder.mkdir(exist_ok=True)
    path = folder / "targets.yaml"
    path.write_text(json.dumps({"targets": entries}))
    return path


def test_a_targets_file_with_two_ssh_targets_copies_both_live(
    tmp_path: Path, sshd: Sshd, run_softcopy: Callable[..., Softcopy]
) -> None:
    remote = tmp_path / "server"
    remote.mkdir()
    names = ("a.zarr", "b.zarr")
    writers = [start_writer(tmp_path / n, "v3", 30, 0.1) for n in names]
    entries: list[dict[str, object]] = [
        {
            "source": str(tmp_path / n),
            "destination": f"root@127.0.0.1:{remote}/{n}",
            "ssh_command": ssh_command(sshd),
            "connections": c,
        }
        for n, c in zip(names, (1, 3), strict=True)
    ]
    proc = run_softcopy(targets_file(tmp_path / "conf", entries))
    assert all(w.wait(120) == 0 for w in writers)
    code, out = finish(proc, 180)
    assert code == 0, out
    for n in names:
        assert_same_tree(tmp_path / n, remote / n)
        assert (remote / n / "complete").is_file()


@pytest.mark.parametrize(
    ("what", "destination", "said"),
    [
        ("unknown host", "root@nosuchhost.invalid:{tmp}/x.zarr", "cannot reach root@nosuchhost.invalid:"),
        ("path not absolute", "root@127.0.0.1:relative/x.zarr", "must be absolute"),
        ("parent missing", "root@127.0.0.1:{tmp}/no/x.zarr", "destination root@127.0.0.1:{tmp}/no/x.zarr: its folder"),
    ],
)
def test_a_bad_ssh_target_in_a_targets_file_is_one_line_and_exit_2(
    tmp_path: Path, sshd: Sshd, what: str, destination: str, said: str
) -> None:
    src = tmp_path / "acq.zarr"
    write_finished_archive(src, "v3", timepoints=1)
    command = ssh_command(sshd) + " -o ConnectTimeout=5"
    entry: dict[str, object] = {
        "source": str(src),
        "destination": destination.format(tmp=tmp_path),
        "ssh_command": command,
    }
    file = targets_file(tmp_path / "conf", [entry])
    r = subprocess.run(softcopy_cmd(file), check=False, capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, f"{what}: {r.returncode}\n{r.stdout}{r.stderr}"
    assert said.format(tmp=tmp_path) in r.stderr and "Traceback" not in r.stderr, f"{what}: {r.stderr}"
    assert len(lines) == 1, f"{what}: {r.stderr}"
    assert not (tmp_path / "no").exists() and not list((tmp_path / "conf").glob("root@*")), "nothing made"


def test_the_service_form_copies_each_acquisition_to_an_ssh_root_and_knows_them_verified_at_the_next_start(
    tmp_path: Path, sshd: Sshd, run_softcopy: Callable[..., Softcopy]
) -> None:
    acq, remote, reports = tmp_path / "acq", tmp_path / "server", tmp_path / "reports"
    for folder in (acq, remote, reports):
        folder.mkdir()
    write_finished_archive(acq / "early.zarr", "v3", timepoints=2)
    args = (acq / "*.zarr", f"root@127.0.0.1:{remote}", "--ssh-command", ssh_command(sshd))
    service = run_softcopy(*args, "--report", reports / "{name}.json")
    live = start_writer(acq / "live.zarr", "v3", 20, 0.1)
    assert live.wait(120) == 0

    def verified(name: str) -> bool:
        report = reports / f"{name}.json"
        return report.exists() and json.loads(report.read_text())["status"] == "verified"

    for name in ("early.zarr", "live.zarr"):
        # A service that ended (a refusal) ends the wait at once, with what it said.
        wait_for(lambda name=name: verified(name) or service.poll() is not None, 100, f"{name}'s report")  # type: ignore[misc]
        assert verified(name), service.output()
        assert_same_tree(acq / name, remote / name)
        doc = json.loads((reports / f"{name}.json").read_text())
        assert doc["targets"][0]["destination"] == f"root@127.0.0.1:{remote}/{name}"
    service.send_signal(signal.SIGTERM)
    code, out = finish(service)
    assert code == 143, out
    # Started again: both are known verified from their markers on the server, not copied again.
    again = run_softcopy(*args, "--report", reports / "{name}.json")
    for name in ("early.zarr", "live.zarr"):
        wait_for(lambda name=name: f"{name}: already verified" in again.output(), 60, f"{name} skipped")  # type: ignore[misc]
    again.send_signal(signal.SIGTERM)
    code, out = finish(again)
    assert code == 143, out
    assert "a new acquisition" not in out, out


def verify_cmd(src: Path, dst: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = softcopy_cmd("verify", src, dst, *args)
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def test_softcopy_verify_over_ssh_is_green_on_a_good_copy_and_names_a_file_missing_or_resized_on_the_server(
    tmp_path: Path, sshd: Sshd
) -> None:
    src, remote = tmp_path / "acq.zarr", tmp_path / "server"
    write_finished_archive(src, "v3", timepoints=3)
    remote.mkdir()
    dst = f"root@127.0.0.1:{remote}/acq.zarr"
    assert copy_to(src, dst, "--ssh-command", ssh_command(sshd)).returncode == 0
    good = verify_cmd(src, dst, "--ssh-command", ssh_command(sshd))
    assert good.returncode == 0 and "identical" in good.stderr, good.stdout + good.stderr
    chunks = sorted(p for p in (remote / "acq.zarr").rglob("*") if p.is_file() and p.name.isdigit())
    gone, resized = chunks[0], chunks[1]
    gone.unlink()
    resized.write_bytes(resized.read_bytes() + b"more")
    bad = verify_cmd(src, dst, "--ssh-command", ssh_command(sshd))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    rel = [str(p.relative_to(remote / "acq.zarr")) for p in (gone, resized)]
    assert f"missing: {rel[0]}" in bad.stdout and f"size: {rel[1]}" in bad.stdout, bad.stdout
    checksum = verify_cmd(src, dst, "--ssh-command", ssh_command(sshd), "--checksum")
    assert checksum.returncode == 1 and "Traceback" not in checksum.stderr, checksum.stdout + checksum.stderr
    assert f"missing: {rel[0]}" in checksum.stdout and f"size: {rel[1]}" in checksum.stdout, checksum.stdout


def test_softcopy_copy_takes_an_ssh_destination(tmp_path: Path, sshd: Sshd) -> None:
    src, remote = tmp_path / "acq.zarr", tmp_path / "server"
    write_finished_archive(src, "v3", timepoints=2)
    remote.mkdir()
    dst = f"root@127.0.0.1:{remote}/acq.zarr"
    report = softcopy.copy(src, dst, ssh_command=ssh_command(sshd), connections=2, timeout=120)
    assert report.ok, report
    assert str(report.targets[0].destination) == dst
    assert_same_tree(src, remote / "acq.zarr")


def test_a_str_of_the_remote_form_is_an_ssh_destination_and_a_path_is_always_local(tmp_path: Path) -> None:
    src = tmp_path / "acq.zarr"
    # A `str` is read by the engine's rule at run time; typed callers pass `destination_of(text)`.
    remote = softcopy.Target(src, "cluster:/lab/raw/x.zarr", ssh_command="ssh -p 2222", connections=2)  # type: ignore[arg-type]
    assert isinstance(remote.destination, SshDestination)
    assert (remote.destination.host, remote.destination.path) == ("cluster", "/lab/raw/x.zarr")
    with_port = softcopy.Target(src, destination_of("ssh://me@cluster:2222/lab/raw"))
    assert isinstance(with_port.destination, SshDestination) and with_port.destination.port == 2222
    assert str(with_port.destination / "x.zarr") == "ssh://me@cluster:2222/lab/raw/x.zarr"
    local = softcopy.Target(src, Path("cluster:/lab/raw/x.zarr"))
    assert local.destination == Path("cluster:/lab/raw/x.zarr")


def test_a_copy_left_unfinished_on_an_ssh_root_is_named_let_go_once_and_noted_on_the_server(
    tmp_path: Path, sshd: Sshd, run_softcopy: Callable[..., Softcopy]
) -> None:
    acq, remote = tmp_path / "acq", tmp_path / "server"
    for folder in (acq, remote):
        folder.mkdir()
    go = tmp_path / "go"
    writer = start_writer(acq / "take.zarr", "v3", 40, 0.05, "--hold", str(go))
    args = (acq / "*.zarr", f"root@127.0.0.1:{remote}", "--ssh-command", ssh_command(sshd))
    service = run_softcopy(*args)
    copy = remote / "take.zarr"
    wait_for(lambda: (copy / ".softcopy-origin").is_file() or service.poll() is not None, 60, "the copy recorded")
    # Stopped in flight: it resumes at the next start, were its folder still there. (Not killed: a
    # killed run's lock file on the server keeps the copy claimed, as a live run's.)
    service.send_signal(signal.SIGTERM)
    assert finish(service)[0] == 143
    go.touch()
    assert writer.wait(120) == 0
    (acq / "take.zarr").rename(acq / "aside")  # the take is no longer under a name the pattern matches
    again = run_softcopy(*args)
    # Found over SFTP (unfinished_copies), named, then noted at the copy on the server (note_let_go).
    wait_for(lambda: (copy / ".softcopy-let-go").is_file(), 60, "the note on the server")
    assert "take.zarr: let go" in again.output(), again.output()
    again.send_signal(signal.SIGTERM)
    code, out = finish(again)
    assert code == 143, out
    third = run_softcopy(*args)
    wait_for(lambda: "looked for copies left unfinished" in third.output(), 60, "the third start's look")
    third.send_signal(signal.SIGTERM)
    code, out = finish(third)
    assert code == 143 and "let go" not in out, f"named once, not at each start: {out}"


def test_another_acquisitions_copy_on_the_server_is_refused_in_one_line_before_anything_is_copied(
    tmp_path: Path, sshd: Sshd
) -> None:
    first, second, remote = tmp_path / "first.zarr", tmp_path / "second.zarr", tmp_path / "server"
    write_finished_archive(first, "v3", timepoints=1)
    write_finished_archive(second, "v3", timepoints=2)
    remote.mkdir()
    dst = f"root@127.0.0.1:{remote}/x.zarr"
    assert copy_to(first, dst, "--ssh-command", ssh_command(sshd)).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in (remote / "x.zarr").rglob("*")}
    r = copy_to(second, dst, "--ssh-command", ssh_command(sshd))
    assert r.returncode == 2 and "holds the copy of another acquisition" in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert {p: p.stat().st_mtime_ns for p in (remote / "x.zarr").rglob("*")} == before, "nothing written there"


@pytest.mark.parametrize("root", ["acq", "acq/backup", "."], ids=["the-folder", "inside", "around"])
def test_the_service_forms_ssh_root_on_this_machines_acquisitions_folder_is_refused(
    tmp_path: Path, sshd: Sshd, root: str
) -> None:
    # As a local root (config.check_pair): the root and the acquisitions folder must not contain
    # each other. Over ssh to this very machine, the root itself was never compared: each
    # acquisition was its own "copy", said already verified, or copied beside itself as x-2.zarr,
    # which the pattern then took as a new acquisition.
    acq = tmp_path / "acq"
    (acq / "backup").mkdir(parents=True)
    write_finished_archive(acq / "x.zarr", "v3", timepoints=1)
    refused(acq / "*.zarr", f"root@127.0.0.1:{(tmp_path / root).resolve()}", sshd)
    assert sorted(p.name for p in acq.iterdir()) == ["backup", "x.zarr"], "nothing copied beside the acquisition"


def test_the_service_form_needs_its_ssh_root_itself_one_line_and_exit_2(tmp_path: Path, sshd: Sshd) -> None:
    (tmp_path / "acq").mkdir()
    pattern, root = tmp_path / "acq" / "*.zarr", f"root@127.0.0.1:{tmp_path}/raw"
    r = subprocess.run(
        softcopy_cmd(pattern, root, "--ssh-command", ssh_command(sshd)),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and f"destination {root} does not exist" in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "raw").exists(), "the root is not made (a share not mounted stays empty)"


def test_a_dry_run_to_an_ssh_destination_says_it_did_not_look_there(tmp_path: Path) -> None:
    from softcopy.dryrun import plan

    src = tmp_path / "acq.zarr"
    write_finished_archive(src, "v3", timepoints=1)
    [summary, *_] = plan(softcopy.Target(src, destination_of("cluster:/lab/raw/acq.zarr")))
    assert summary.startswith(f"{src} -> cluster:/lab/raw/acq.zarr: would copy"), summary
    assert "ssh destination not looked at" in summary and "0 already" not in summary, summary


def finished(tmp_path: Path, timepoints: int) -> tuple[Path, Path]:
    """A finished acquisition, and the server's empty folder to copy it into."""
    src, remote = tmp_path / "acq.zarr", tmp_path / "server"
    remote.mkdir()
    write_finished_archive(src, "v3", timepoints=timepoints)
    return src, remote


def proved_by(proof: str, tmp_path: Path, sshd: Sshd) -> str:
    """The ssh command whose host hashes with sha256sum ("server hash") or has no hasher."""
    return ssh_command(sshd) if proof == "server hash" else without_hasher(tmp_path, ssh_command(sshd))


def first_chunk(src: Path) -> str:
    return next(k for k in sorted(conftest.tree(src)) if k.startswith("c/"))


def data_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_delete_source_over_ssh_frees_a_live_acquisition_proven_by_the_servers_hash(
    tmp_path: Path, sshd: Sshd, run_softcopy: Callable[..., Softcopy]
) -> None:
    src, remote, expected = tmp_path / "acq.zarr", tmp_path / "server", tmp_path / "expected.zarr"
    remote.mkdir()
    writer = start_writer(src, "v3", 20, 0.1)
    proc = run_softcopy(src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", ssh_command(sshd), "--delete-source")
    assert writer.wait(120) == 0
    code, out = finish(proc, 180)
    assert code == 0, out
    write_finished_archive(expected, "v3", timepoints=20)  # the writer's bytes, again
    assert conftest.tree(remote / "acq.zarr") == conftest.tree(expected)
    assert data_files(src) == [], f"the acquisition is freed: {data_files(src)[:5]}"
    assert "by the server's sha256sum" in out and "read back" in out, out


@pytest.mark.parametrize("proof", ["server hash", "read back"])
def test_a_copy_damaged_on_the_server_with_its_size_and_mtime_keeps_its_source(
    tmp_path: Path, sshd: Sshd, proof: str
) -> None:
    # One byte flipped on the server after the copy, size and mtime kept: only the contents tell.
    # Proven by the server's digest or read back (a host with no hash command), nothing is freed
    # and the run says which copy differs.
    src, remote = finished(tmp_path, 2)
    before, rel = conftest.tree(src), first_chunk(src)
    command = proved_by(proof, tmp_path, sshd)
    target = Target(
        src, destination_of(f"root@127.0.0.1:{remote}/acq.zarr"), once=True, delete_source=True, ssh_command=command
    )
    engine = softcopy._softcopy.Engine(EngineConfig(target))
    v = conftest.conclude(engine, 120, before=lambda: damage(remote / "acq.zarr" / rel, 0))
    said = " ".join(text for _, text in engine.messages())
    assert not v.verified and not v.freed, v
    assert [p.as_posix() for p in v.content_mismatch] == [rel], v
    assert conftest.tree(src) == before, "nothing freed: a copy was found different"
    assert ("by the server's sha256sum" if proof == "server hash" else "neither b3sum nor sha256sum") in said, said


def test_a_host_without_a_hash_command_has_its_copies_read_back_and_the_source_freed(
    tmp_path: Path, sshd: Sshd
) -> None:
    (src, remote), expected = finished(tmp_path, 2), tmp_path / "expected.zarr"
    write_finished_archive(expected, "v3", timepoints=2)
    r = copy_to(
        src,
        f"root@127.0.0.1:{remote}/acq.zarr",
        "--ssh-command",
        without_hasher(tmp_path, ssh_command(sshd)),
        "--delete-source",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "neither b3sum nor sha256sum: copies are read back" in r.stderr, r.stderr
    assert "proven by the server's" not in r.stderr, r.stderr
    assert conftest.tree(remote / "acq.zarr") == conftest.tree(expected)
    assert data_files(src) == [], data_files(src)


def test_a_name_with_a_newline_and_a_backslash_is_proven_by_the_servers_hash_and_freed(
    tmp_path: Path, sshd: Sshd
) -> None:
    # sha256sum escapes such a name in its answer (a leading backslash): read as printed, it names
    # no file asked for, and the copy would be read back, or worse, another file proven.
    src, remote = finished(tmp_path, 1)
    odd = {"notes\nline.txt": b"a newline in the name", "back\\slash.txt": b"a backslash", "both\\n\n.txt": b"both"}
    for name, data in odd.items():
        (src / name).write_bytes(data)
    files = len(data_files(src))
    r = copy_to(src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", ssh_command(sshd), "--delete-source")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{files - 1} copies proven by the server's sha256sum, 0 read back" in r.stderr, r.stderr  # marker apart
    assert all((remote / "acq.zarr" / name).read_bytes() == data for name, data in odd.items())
    assert data_files(src) == [], data_files(src)


def verify(src: Path, dst: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*softcopy_cmd("verify", src, dst), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("proof", ["server hash", "read back"])
def test_verify_checksum_over_ssh_finds_a_copy_damaged_with_its_size_and_mtime(
    tmp_path: Path, sshd: Sshd, proof: str
) -> None:
    src, remote = finished(tmp_path, 2)
    dst = f"root@127.0.0.1:{remote}/acq.zarr"
    assert copy_to(src, dst, "--ssh-command", ssh_command(sshd)).returncode == 0
    command = proved_by(proof, tmp_path, sshd)
    green = verify(src, dst, "--checksum", "--ssh-command", command)
    assert green.returncode == 0 and "identical" in green.stderr, green.stdout + green.stderr
    rel = first_chunk(src)
    damage(remote / "acq.zarr" / rel, 0)
    red = verify(src, dst, "--checksum", "--ssh-command", command)
    assert red.returncode == 1 and red.stdout.splitlines() == [f"content: {rel}"], red.stdout + red.stderr
    sizes = verify(src, dst, "--ssh-command", command)
    assert sizes.returncode == 0, "by sizes alone the damage is not seen: the contents decide"
    (remote / "acq.zarr" / "complete").unlink()
    unmarked = verify(src, dst, "--ssh-command", command)
    assert unmarked.returncode == 1 and "missing: complete" in unmarked.stdout, unmarked.stdout + unmarked.stderr


def test_verify_over_ssh_says_in_one_line_when_the_host_cannot_be_reached(tmp_path: Path) -> None:
    src = tmp_path / "acq.zarr"
    write_finished_archive(src, "v3", timepoints=1)
    r = verify(src, f"root@127.0.0.1:{tmp_path}/x", "--ssh-command", "ssh -p 1 -o BatchMode=yes -o ConnectTimeout=5")
    assert r.returncode == 2 and "cannot reach" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, r.stderr


def test_checksum_over_ssh_writes_its_manifest_on_the_server_and_the_source_is_freed(
    tmp_path: Path, sshd: Sshd
) -> None:
    # The manifest goes beside the destination, on the server; the copy checks out against it there
    # (the server is this machine: its folder is read directly). The manifest is BLAKE3; the
    # server has only sha256sum, so the freeing's proof hashes the sources with SHA-256.
    src, remote = finished(tmp_path, 2)
    r = copy_to(
        src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", ssh_command(sshd), "--checksum", "--delete-source"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = remote / "acq.zarr.softcopy-manifest.tsv"
    assert manifest.is_file() and not [p.name for p in remote.iterdir() if "partial" in p.name], list(remote.iterdir())
    checked = subprocess.run(
        softcopy_cmd("verify", "--manifest", manifest, remote / "acq.zarr"), capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "copies proven by the server's sha256sum, 0 read back" in r.stderr, r.stderr
    assert data_files(src) == [], data_files(src)


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def wrapped_ssh(sshd: Sshd, folder: Path, *, shell: str, sftp_log: Path) -> str:
    """An `--ssh-command` that reaches the loopback server as `ssh_command` does, but runs on the
    host (this machine): the SFTP session as an sftp-server logging each request to `sftp_log`,
    and a shell asked for as `shell` says: "sh" (a real one), "sync fails" (a shell whose `sync`
    runs once, then fails: the host's disk failing after the start), "sftp only" (an account
    whose every command is the SFTP server, as with ForceCommand internal-sftp)."""
    folder.mkdir(parents=True, exist_ok=True)
    bin_ = folder / "bin"
    bin_.mkdir(exist_ok=True)
    count = folder / "syncs"
    (bin_ / "sync").write_text(
        f"#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}\n"
        f'[ "$n" -eq 0 ] && exec /bin/sync "$@"\necho "sync: Input/output error"; exit 1\n'
    )
    (bin_ / "sync").chmod(0o755)
    remote_shell = {
        "sh": ["sh"],
        "sync fails": ["env", f"PATH={bin_}:/usr/bin:/bin", "sh"],
        "sftp only": [SFTP_SERVER],
    }[shell]
    sftp = ["sh", "-c", f"'exec {SFTP_SERVER} -e -l VERBOSE 2>>{sftp_log}'"]
    wrapper = folder / "ssh"
    wrapper.write_text(
        "#!/usr/bin/env python3\nimport os, sys\nargs = sys.argv[1:]\n"
        f"if args[-1] == 'sh':\n    args[-1:] = {remote_shell!r}\n"
        f"elif args[-1] == 'sftp':\n    args.remove('-s')\n    args[-1:] = {sftp!r}\n"
        "os.execvp('ssh', ['ssh', *args])\n"
    )
    wrapper.chmod(0o755)
    return " ".join([str(wrapper), "-p", str(sshd.port), "-o", "BatchMode=yes", *sshd.ssh_options()])


def fsyncs(log: Path) -> int:
    """How many fsync@openssh.com requests the logged SFTP server ran."""
    return log.read_text().count('fsync "') if log.exists() else 0


class Through(NamedTuple):
    """A copy through `wrapped_ssh`: what softcopy did, its source, the copy, the SFTP log."""

    r: subprocess.CompletedProcess[str]
    src: Path
    copy: Path
    log: Path


def copy_through(tmp_path: Path, sshd: Sshd, shell: str, timepoints: int, *args: str) -> Through:
    src, remote, log = tmp_path / "acq.zarr", tmp_path / "server", tmp_path / "sftp.log"
    write_finished_archive(src, "v3", timepoints=timepoints)
    remote.mkdir()
    cmd = wrapped_ssh(sshd, tmp_path / "ssh", shell=shell, sftp_log=log)
    r = copy_to(src, f"root@127.0.0.1:{remote}/acq.zarr", "--ssh-command", cmd, *args)
    return Through(r, src, remote / "acq.zarr", log)


def test_copies_over_ssh_are_made_durable_by_one_sync_of_the_host_not_one_fsync_each(
    tmp_path: Path, sshd: Sshd
) -> None:
    r, src, copy, log = copy_through(tmp_path, sshd, "sh", 6)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_tree(src, copy)
    files = sum(1 for p in src.rglob("*") if p.is_file())
    assert fsyncs(log) < files / 4, f"{fsyncs(log)} fsyncs for {files} files: one each"
    assert "copies made durable in batches" in r.stderr, r.stderr


def test_a_batch_whose_sync_on_the_host_fails_is_never_marked(tmp_path: Path, sshd: Sshd) -> None:
    r, _, copy, _ = copy_through(tmp_path, sshd, "sync fails", 3, "--give-up-after", "5")
    assert r.returncode != 0, r.stdout + r.stderr
    assert not (copy / "complete").exists(), "a marker over copies no sync made durable"
    assert "sync -f on the host exited 1" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_a_host_without_a_shell_gets_each_copy_fsynced(tmp_path: Path, sshd: Sshd) -> None:
    r, src, copy, log = copy_through(tmp_path, sshd, "sftp only", 3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_tree(src, copy)
    assert "each copy fsynced on its own (no shell on the host" in r.stderr, r.stderr
    files = sum(1 for p in src.rglob("*") if p.is_file())
    assert fsyncs(log) >= files, f"{fsyncs(log)} fsyncs for {files} files"


def test_a_freeing_killed_at_an_unlink_is_finished_by_the_next_run(tmp_path: Path, sshd: Sshd) -> None:
    from test_model import ARRAY
    from test_trust4 import GOING

    src, remote = tmp_path / "run.zarr", tmp_path / "server"
    remote.mkdir()
    for key, data in (("arr/zarr.json", ARRAY), ("arr/c/0/0", b"first"), ("c/0/0", b"plane"), ("c/1/0", b"x")):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    (src / "complete").touch()
    dst = f"root@127.0.0.1:{remote}/out.zarr"
    args = (src, dst, "--delete-source", "--settle-time", "0.01", "--ssh-command", ssh_command(sshd))
    env = {**os.environ, "SOFTCOPY_CLAIM_STALE": "3"}  # the killed run's claim taken over in 3 s, not 30
    kill = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(src / "arr/c/0/0")]
    kill += ["-e", f"trace={GOING}", "-e", f"inject={GOING}:signal=KILL"]

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=120)

    first = run([*kill, *softcopy_cmd(*args)])
    assert first.returncode in (-9, 137), first
    again = run(softcopy_cmd(*args))
    left = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert again.returncode == 0 and left in ([], ["complete"]), (left, again.stdout + again.stderr)
