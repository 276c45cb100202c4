"""What `--delete-source` costs to an ssh destination (docs/design.md, "The ssh destination: proof
by the server's hash"): the proof that each copy is identical by content, by the server hashing its
copies (`sha256sum`, many per command) against reading every copy back over SFTP (a host with no
hash command: an `--ssh-command` whose remote PATH has only sh and xargs).

An archive of FILES x SIZE random bytes is copied by `softcopy SRC host:DST --once` to a real sshd on
loopback (`_share.Sshd`), into a fresh folder, without and with `--delete-source`; the difference is
what freeing costs (the proof, the journal, the unlinks). The proof alone: from the run's last line
before it to its line saying how the copies were proven (`-v` timestamps). Bytes read over the
network: what the client's ssh processes read (their `rchar`, the last of samples every 20 ms: the
socket's bytes and softcopy's few requests). The copies are in the server's page cache in both modes
(just written). As root: `python ssh_freeing.py [--files 2048 --size 1]`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import machine, rmtree
from _share import Sshd, descendants, without_hasher

MIB = 1 << 20


def write_archive(root: Path, files: int, size: int) -> None:
    """Files last written an hour ago: a later run takes their copies as made (size and mtime), not
    copied moments after a change, which it would compare by content before the proof."""
    hour_ago = int(time.time()) - 3600
    for i in range(files):
        folder = root / "c" / str(i // 64)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(i % 64)).write_bytes(os.urandom(size))
        os.utime(folder / str(i % 64), (hour_ago, hour_ago))


def freeing(cmd: list[str]) -> tuple[float, int, str]:
    """Runs `cmd`: wall seconds, bytes its ssh processes read (the last sample of each), output."""
    last: dict[int, int] = {}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for child in descendants(proc.pid):
                read = ssh_read_one(child)
                if read is not None:
                    last[child] = max(last.get(child, 0), read)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.monotonic() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"freeing failed ({proc.returncode}):\n{out}")
    return wall, sum(last.values()), out


def ssh_read_one(pid: int) -> int | None:
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "ssh":
            return None
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return int(io["rchar"])
    except (OSError, ValueError, KeyError):
        return None


def softcopy(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "softcopy", *map(str, args)]


def stamp(line: str) -> float:
    """Seconds of the day of a `-v` log line (`2026-12-06 10:02:14,752 INFO ...`)."""
    clock = line.split()[1]
    h, m, rest = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest.replace(",", "."))


def proof_seconds(out: str) -> float:
    lines = [line for line in out.splitlines() if line[:2] == "20"]
    at = next(i for i, line in enumerate(lines) if "copies proven by" in line)
    return stamp(lines[at]) - stamp(lines[at - 1])


def measure(work: Path, files: int, size: int, ssh: str, command: str) -> str:
    """One mode: a copy without, then with `--delete-source`, each into a fresh folder."""
    runs = {}
    for free in (False, True):
        src, remote = work / "acq", work / "server"
        remote.mkdir()
        write_archive(src, files, size)
        dst = f"root@127.0.0.1:{remote}/acq"
        extra = ["--delete-source", "--ssh-command", command, "-v"] if free else ["--ssh-command", ssh]
        runs[free] = freeing(softcopy(src, dst, "--once", *extra))
        left = [p for p in src.rglob("*") if p.is_file()]
        copies = [p for p in (remote / "acq").rglob("*") if p.is_file() and p.parent.name != "acq"]
        assert len(copies) == files and len(left) == (0 if free else files), (len(left), len(copies), runs[free][2])
        rmtree(remote)
        rmtree(src)
    (copy_s, copy_read, _), (free_s, free_read, out) = runs[False], runs[True]
    said = next(line.split(": ", 1)[-1] for line in out.splitlines() if "copies proven by" in line)
    extra_read = free_read - copy_read
    return (
        f"copy {copy_s:5.1f} s, with --delete-source {free_s:5.1f} s: freeing +{free_s - copy_s:5.1f} s "
        f"(proof {proof_seconds(out):5.1f} s), read over ssh +{extra_read / MIB:7.1f} MiB "
        f"({extra_read / (files * size):.3f} x the archive); {said}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2048)
    ap.add_argument("--size", type=float, default=1, help="MiB per file")
    args = ap.parse_args()
    size = int(args.size * MIB)
    print(machine())
    print(f"{args.files} files x {size / MIB:g} MiB = {args.files * size / MIB:.0f} MiB, sshd on loopback")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(tmp)
        sshd = Sshd(work / "sshd", quiet=True)
        sshd.start()
        try:
            ssh = " ".join(["ssh", "-p", str(sshd.port), "-o", "BatchMode=yes", *sshd.ssh_options()])
            for mode, command in (("server sha256sum", ssh), ("read back", without_hasher(work, ssh))):
                print(f"{mode:16s} {measure(work, args.files, size, ssh, command)}", flush=True)
        finally:
            sshd.kill()


if __name__ == "__main__":
    main()
