"""softcopy against the usual tools onto a network share with latency (issue 13): a real sshd on
loopback, mounted with sshfs through a delay proxy (`_delay.py`) at each round trip asked for,
small and large tensorstore chunks, one finished archive each, copied with `--once`: small chunks
flat, eight per folder, and a folder per chunk (Zarr v3 2-D planes, `c/t/z/0/0`). Every copy is
checked byte for byte on the server's side. The ssh destination's contenders go through the same
proxy: softcopy over ssh, `rsync -a -e ssh`, `rsync -a --fsync -e ssh` (a fair peer: softcopy
flushes), rclone's sftp backend. Reports wall time, files/s, MiB/s and CPU (the whole process tree
of the copier; sshfs and sshd are not in it), of it the CPU of the copier's ssh processes, and what
one bulk ssh stream carries through the same proxy. Run as root (sshfs is FUSE): `python network.py`."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from _common import Measured, Running, differences, machine, rmtree, write_archive, write_nested, write_planes
from _share import Sshd, descendants

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """The delay proxy in front of sshd, holding each direction for half the round trip."""

    def __init__(self, target: int, rtt_ms: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_delay.py"), str(self.port), str(target), str(rtt_ms / 2)]
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the delay proxy did not listen")
            time.sleep(0.02)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_timed(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[Measured | str, str]:
    """Runs `cmd` under GNU time; why not, if it failed or was not done within `timeout`; and the
    CPU seconds of its ssh processes (`SshCpu`)."""
    r = Running(cmd, start_new_session=True, env=env)
    ssh = SshCpu(r.proc.pid)
    late = threading.Event()

    def kill() -> None:
        late.set()
        os.killpg(r.proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        return r.wait(), ssh.total()
    except SystemExit as e:
        return (f"not done after {timeout:g} s" if late.is_set() else f"failed: {e}"), ssh.total()
    finally:
        timer.cancel()


class Contender(NamedTuple):
    cmd: list[str]
    landed: Path
    """Where its copy lands on the server."""
    env: dict[str, str] | None = None


def builds(given: list[str]) -> dict[str, str]:
    """`--build LABEL=PYTHONPATH` options: other builds of softcopy to run beside this one."""
    out = {}
    for b in given:
        label, sep, path = b.partition("=")
        if not sep or not (Path(path) / "softcopy").is_dir():
            raise SystemExit(f"--build {b}: expected LABEL=DIR, DIR holding the softcopy package")
        out[label] = path
    return out


class SshCpu:
    """The CPU of the ssh processes below a copier, sampled from /proc every 0.1 s while it runs
    (a copier may kill its ssh at the end, so no wrapper around ssh could report it): the copier's
    own CPU column counts its children too; this says how much of it the ssh processes took."""

    def __init__(self, pid: int) -> None:
        self.pid, self.seen, self.done = pid, dict[int, float](), threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.done.wait(0.1):
            for pid in descendants(self.pid):
                with contextlib.suppress(OSError, IndexError):
                    comm, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
                    if comm.endswith("(ssh"):
                        fields = rest.split()
                        self.seen[pid] = (int(fields[11]) + int(fields[12])) / tick

    def total(self) -> str:
        self.done.set()
        self.thread.join()
        return f"{sum(self.seen.values()):.1f}" if self.seen else ""


def contenders(
    src: Path, mnt: Path, remote: Path, sshd: Sshd, proxy: int, only: list[str], other: dict[str, str], rnd: int = 0
) -> dict[str, Contender]:
    """name -> (command, where its copy lands on the server). Names are new for each set and
    round trip: sshfs caches entries, and a folder removed on the server's side may still be
    seen through the mount for a while."""
    tag = f"{src.stem}-{proxy}-{rnd}"
    ssh = " ".join(["ssh", "-p", str(proxy), *sshd.ssh_options()])
    host = "root@127.0.0.1"
    sc = [sys.executable, "-m", "softcopy"]
    out = {
        "softcopy": ([*sc, str(src), str(mnt / f"sc-{tag}"), "--once", "--quiet"], remote / f"sc-{tag}"),
        "softcopy --nprocs 32": (
            [*sc, str(src), str(mnt / f"sc32-{tag}"), "--once", "--quiet", "--nprocs", "32"],
            remote / f"sc32-{tag}",
        ),
        "softcopy over ssh": (
            [*sc, str(src), f"{host}:{remote / f'sch-{tag}'}", "--once", "--quiet", "--ssh-command", ssh],
            remote / f"sch-{tag}",
        ),
        "cp -r": (["cp", "-r", str(src), str(mnt / f"cp-{tag}")], remote / f"cp-{tag}"),
        "rsync -a": (["rsync", "-a", f"{src}/", f"{mnt / f'rs-{tag}'}/"], remote / f"rs-{tag}"),
        "rsync -a -e ssh": (
            ["rsync", "-a", "-e", ssh, f"{src}/", f"{host}:{remote / f'rse-{tag}'}/"],
            remote / f"rse-{tag}",
        ),
        "rsync -a --fsync -e ssh": (
            ["rsync", "-a", "--fsync", "-e", ssh, f"{src}/", f"{host}:{remote / f'rsf-{tag}'}/"],
            remote / f"rsf-{tag}",
        ),
    }
    if shutil.which("rclone"):
        out["rclone copy --transfers 8"] = (
            ["rclone", "copy", "--transfers", "8", str(src), str(mnt / f"rc-{tag}")],
            remote / f"rc-{tag}",
        )
        out["rclone sftp --transfers 8"] = (
            ["rclone", "copy", "--transfers", "8", str(src), f"bench:{remote / f'rcs-{tag}'}"],
            remote / f"rcs-{tag}",
        )
    for label in other:
        out[f"softcopy ({label})"] = (
            [*sc, str(src), str(mnt / f"sc{label}-{tag}"), "--once", "--quiet"],
            remote / f"sc{label}-{tag}",
        )
        out[f"softcopy over ssh ({label})"] = (
            [*sc, str(src), f"{host}:{remote / f'sch{label}-{tag}'}", "--once", "--quiet", "--ssh-command", ssh],
            remote / f"sch{label}-{tag}",
        )
    picked = {k: v for k, v in out.items() if not only or k.split(" (")[0] in only}
    return {k: Contender(cmd, landed, env_of(k, other, sshd, proxy)) for k, (cmd, landed) in picked.items()}


def env_of(name: str, other: dict[str, str], sshd: Sshd, proxy: int) -> dict[str, str] | None:
    """A build's PYTHONPATH for its rows; rclone's sftp remote `bench:` (rclone's own ssh, no
    host key checked: a fresh sshd each run)."""
    if name.startswith("rclone sftp"):
        rc = {
            "TYPE": "sftp",
            "HOST": "127.0.0.1",
            "PORT": str(proxy),
            "USER": "root",
            "KEY_FILE": str(sshd.home / "client"),
        }
        return {**os.environ, **{f"RCLONE_CONFIG_BENCH_{k}": v for k, v in rc.items()}}
    label = name.split(" (", 1)[1].removesuffix(")") if " (" in name else None
    return {**os.environ, "PYTHONPATH": other[label]} if label in other else None


def one_stream(sshd: Sshd, proxy: int, mib: int = 256) -> float:
    """MiB/s one bulk ssh stream carries through the proxy: the time of `mib` MiB to /dev/null,
    less that of an empty session (the handshake's round trips)."""

    def session(n: int) -> float:
        t0 = time.perf_counter()
        cmd = ["ssh", "-q", "-p", str(proxy), *sshd.ssh_options(), "root@127.0.0.1", "cat > /dev/null"]
        feed = subprocess.Popen(["head", "-c", str(n << 20), "/dev/zero"], stdout=subprocess.PIPE)
        subprocess.run(cmd, stdin=feed.stdout, check=True)
        feed.wait()
        return time.perf_counter() - t0

    return mib / max(session(mib) - session(0), 1e-3)


ARCHIVES = ["flat", "nested", "planes", "big"]


def copy_one(src: Path, c: Contender, timeout: float) -> str:
    """The row's figures for one copy of `src` (checked byte for byte, then removed), or why none."""
    files = sum(1 for p in src.rglob("*") if p.is_file())
    mib = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 2**20
    m, ssh = run_timed(c.cmd, timeout, c.env)
    try:
        if isinstance(m, str):
            return f"{m} | | | |"
        diff = [d for d in differences(src, c.landed) if ".softcopy" not in d]
        if diff:
            raise SystemExit(f"{c.cmd} copied {src} wrong: {diff[:5]}")
        return f"{m.wall:.1f} | {files / m.wall:.0f} | {mib / m.wall:.1f} | {m.cpu:.1f} | {ssh}"
    finally:
        rmtree(c.landed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=2000, help="small chunks")
    ap.add_argument("--kib", type=int, default=16, help="size of a small chunk")
    ap.add_argument("--big", type=int, default=64, help="large chunks")
    ap.add_argument("--big-mib", type=int, default=8, help="size of a large chunk")
    ap.add_argument("--rtt", type=float, action="append", help="round trips in ms (default 0, 2, 10)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before a copy counts as not done")
    ap.add_argument("--only", action="append", default=[], help="contenders to run (default all)")
    ap.add_argument("--archive", action="append", choices=ARCHIVES, help="archives to copy (default all)")
    ap.add_argument("--planes", type=int, default=100, help="planes per timepoint, folder per chunk")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every contender, one after another")
    ap.add_argument("--build", action="append", default=[], help="LABEL=DIR: softcopy from DIR (a PYTHONPATH) too")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench-network"))
    args = ap.parse_args()
    rtts = args.rtt or [0.0, 2.0, 10.0]
    rmtree(args.dir)
    args.dir.mkdir(parents=True)
    small, big, remote, mnt = (args.dir / n for n in ("small.zarr", "big.zarr", "remote", "mnt"))
    nested, planes = args.dir / "nested.zarr", args.dir / "planes.zarr"
    wanted = args.archive or ARCHIVES
    write_archive(small, args.files, args.kib << 10)
    write_nested(nested, args.files, args.kib << 10)
    write_planes(planes, args.files, args.kib << 10, args.planes)
    write_archive(big, args.big, args.big_mib << 20)
    other = builds(args.build)
    remote.mkdir()
    mnt.mkdir()
    sshd = Sshd(args.dir / "sshd", quiet=True)
    sshd.start()
    print(f"# {machine()}")
    print(
        f"# sshd on loopback, sshfs through a delay proxy; {args.files} x {args.kib} KiB and {args.big} x {args.big_mib} MiB"
    )
    print("| round trip | files | copier | wall s | files/s | MiB/s | CPU s | of it ssh, CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for rtt in rtts:
            proxy = Proxy(sshd.port, rtt)
            sshd.mount(remote, mnt, port=proxy.port)
            try:
                stream = one_stream(sshd, proxy.port)
                print(f"| {rtt:g} ms | one ssh stream | `ssh cat` | | | {stream:.0f} | | |")
                archives = {
                    "flat": (f"{args.kib} KiB", small),
                    "nested": (f"{args.kib} KiB, 8 per folder", nested),
                    "planes": (f"{args.kib} KiB, folder per chunk", planes),
                    "big": (f"{args.big_mib} MiB", big),
                }
                for key, (label, src) in archives.items():
                    if key in wanted:
                        for rnd in range(args.repeat):
                            found = contenders(src, mnt, remote, sshd, proxy.port, args.only, other, rnd)
                            for name, c in found.items():
                                print(f"| {rtt:g} ms | {label} | {name} | {copy_one(src, c, args.timeout)} |")
                                sys.stdout.flush()
            finally:
                subprocess.run(["fusermount", "-u", str(mnt)], check=False)
                proxy.close()
    finally:
        sshd.kill()
        rmtree(args.dir)


if __name__ == "__main__":
    main()
