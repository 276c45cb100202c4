"""The ssh destination's SFTP client, chosen on measurement (docs/design.md, "The ssh destination:
the SFTP client"): the same hot path with each candidate, side by side with rsync over ssh, through
the delay proxy (`_delay.py`) in front of a real sshd on loopback (`_share.py`), at each round trip.

Per file: open a partial name (CREAT|EXCL), write, set the mtime (FSETSTAT), close, posix-rename
to the final name; "fsync" rows also send fsync@openssh.com in the same burst as the writes (no
extra round trip; the server runs it in turn). Each folder is made once, before the files. Clients:
`own` (softcopy's `sftp` module: a writer and a reader thread) and `openssh` (openssh-sftp-client
on a tokio runtime of its own thread), both over the system `ssh -s host sftp` (BatchMode=yes),
driven by `examples/sftp_bench.rs`. Every copy is checked on the server's side: names, bytes and
whole-second mtimes; no partial left. CPU: the client process and its ssh processes (for rsync:
rsync's tree, its ssh measured apart through `-e '/usr/bin/time … ssh'`). The server's CPU is not
counted. As root: `python sftp.py`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _common import Running, differences, machine, rmtree
from _share import Sshd
from network import Proxy, one_stream

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "target"


@dataclass
class Row:
    wall: float
    connect: float | None
    """Seconds to the sessions' logins, within `wall` (rsync's is not told apart)."""
    client_cpu: float
    ssh_cpu: float


def write_per_chunk(root: Path, chunks: int, size: int, per_t: int = 100) -> None:
    """A Zarr v3 tree with a folder per chunk (`c/t/z/0/0`, a chunk per z-plane per timepoint):
    random bytes, whole-second mtimes of the past so a copied mtime is told from a fresh one."""
    rng = os.urandom
    (root / "zarr.json").parent.mkdir(parents=True)
    (root / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    for i in range(chunks):
        p = root / "c" / str(i // per_t) / str(i % per_t) / "0" / "0"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng(size))
        os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))


def fs_type(p: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(p)], capture_output=True, text=True, check=True).stdout.strip()


def checked(src: Path, landed: Path, name: str) -> None:
    """Fails the run if `landed` is not `src` on the server: names, bytes, whole-second mtimes."""
    diff = differences(src, landed)
    for p in src.rglob("*"):
        if p.is_file():
            q = landed / p.relative_to(src)
            if q.exists() and int(q.stat().st_mtime) != int(p.stat().st_mtime):
                diff.append(f"mtime differs: {q}")
    if diff:
        raise SystemExit(f"{name} copied {src} wrong: {diff[:5]}")


def example(debug: bool) -> Path:
    """Builds the driver: release for figures; the dev build for the suite's miniature, which checks the
    bench runs and its copies are whole, not its figures (CI's `cargo test` has built it already, where a
    release build with fat LTO would take most of a test's time)."""
    profile = ["--profile", "dev"] if debug else ["--release"]
    subprocess.run(["cargo", "build", *profile, "--example", "sftp_bench"], cwd=ROOT, check=True)
    return EXAMPLES / ("debug" if debug else "release") / "examples" / "sftp_bench"


def run_client(
    driver: Path, client: str, src: Path, dest: Path, ssh: list[str], sessions: int, window: int, fsync: bool
) -> Row:
    mode = "fsync" if fsync else "nofsync"
    cmd = [str(driver), client, str(src), str(dest), str(sessions), str(window), mode, "--", *ssh]
    out = subprocess.run(cmd, check=False, stderr=subprocess.PIPE, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{client} failed: {out.stderr.strip().splitlines()[-1:]}")
    f = dict(kv.split("=") for line in out.stderr.strip().splitlines()[-2:] for kv in line.split())
    return Row(float(f["wall"]), float(f["connected"]), float(f["client_cpu"]), float(f["ssh_cpu"]))


def run_rsync(src: Path, dest: Path, ssh: list[str], fsync: bool) -> Row:
    with tempfile.NamedTemporaryFile("r", prefix="sftp-bench-ssh-cpu-") as cpu:
        timed_ssh = " ".join(["/usr/bin/time", "-f", "%U+%S", "-o", cpu.name, *ssh])
        cmd = ["rsync", "-a", *(["--fsync"] if fsync else []), "-e", timed_ssh, f"{src}/", f"root@127.0.0.1:{dest}/"]
        m = Running(cmd).wait()
        ssh_cpu = sum(float(x) for x in Path(cpu.name).read_text().strip().splitlines()[-1].split("+"))
    return Row(m.wall, None, m.cpu - ssh_cpu, ssh_cpu)


def contenders(sessions: list[int]) -> list[tuple[str, str, int, bool]]:
    """(label, client, sessions, fsync)."""
    out = []
    for client in ("own", "openssh"):
        for s in sessions:
            out.append((f"{client}, {s} session{'s' * (s > 1)}", client, s, False))
        s = sessions[-1]
        out.append((f"{client}, {s} session{'s' * (s > 1)}, fsync", client, s, True))
    out += [("rsync -a -e ssh", "rsync", 1, False), ("rsync -a --fsync -e ssh", "rsync", 1, True)]
    return out


def measure(src: Path, remote: Path, ssh: list[str], args: argparse.Namespace) -> dict[str, list[Row]]:
    """Every contender `args.repeat` times, the rounds interleaved so that a busy moment of the
    machine falls on all of them alike; each copy checked, then removed."""
    rows: dict[str, list[Row]] = {}
    for _ in range(args.repeat):
        for name, client, sessions, fsync in contenders(args.sessions or [1, 2]):
            landed = remote / f"{client}-{sessions}-{int(fsync)}"
            if client == "rsync":
                row = run_rsync(src, landed, ssh, fsync)
            else:
                cmd = [*ssh, "-s", "root@127.0.0.1", "sftp"]
                row = run_client(args.driver, client, src, landed, cmd, sessions, args.window, fsync)
            checked(src, landed, name)
            rmtree(landed)
            rows.setdefault(name, []).append(row)
    return rows


def line(rtt: float, label: str, name: str, src: Path, rows: list[Row]) -> str:
    """The table's row for one contender: the run of median wall time."""
    files = sum(1 for p in src.rglob("*") if p.is_file())
    mib = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 2**20
    walls = sorted(r.wall for r in rows)
    row = next(r for r in rows if r.wall == walls[len(walls) // 2])
    logins = "" if row.connect is None else f" ({row.connect:.2f})"
    spread = f" ({files / walls[-1]:.0f}–{files / walls[0]:.0f})" if len(rows) > 1 else ""
    return (
        f"| {rtt:g} ms | {label} | {name} | {row.wall:.2f}{logins} | **{files / row.wall:.0f}**{spread} "
        f"| {mib / row.wall:.1f} | {row.client_cpu:.2f} | {row.ssh_cpu:.2f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=2000, help="small chunks, a folder each")
    ap.add_argument("--kib", type=int, default=16)
    ap.add_argument("--big", type=int, default=64, help="large chunks")
    ap.add_argument("--big-mib", type=int, default=8)
    ap.add_argument("--rtt", type=float, action="append", help="round trips in ms (default 0, 2, 10)")
    ap.add_argument("--sessions", type=int, action="append", help="sessions per client (default 1, 2)")
    ap.add_argument("--window", type=int, default=256, help="files in flight")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each contender (the median is shown)")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/softcopy-bench-sftp"))
    ap.add_argument("--remote", type=Path, help="where the server writes (default DIR/remote; e.g. a tmpfs)")
    ap.add_argument("--small-only", action="store_true", help="leave out the large chunks")
    ap.add_argument("--debug-build", action="store_true", help="the driver's dev build (a check, not figures)")
    args = ap.parse_args()
    args.driver = example(args.debug_build)
    rmtree(args.dir)
    small, big = args.dir / "small.zarr", args.dir / "big.zarr"
    remote = args.remote or args.dir / "remote"
    write_per_chunk(small, args.files, args.kib << 10)
    write_per_chunk(big, args.big, args.big_mib << 20, per_t=8)
    remote.mkdir(parents=True)
    sshd = Sshd(args.dir / "sshd", quiet=True)
    sshd.start()
    print(f"# {machine()}")
    print(
        f"# {args.files} x {args.kib} KiB, a folder per chunk; {args.big} x {args.big_mib} MiB; {args.window} files in flight; "
        f"the server writes to {remote} ({fs_type(remote)})"
    )
    print("| round trip | files | client | wall s (logins) | files/s (min–max) | MiB/s | client CPU s | ssh CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for rtt in args.rtt or [0.0, 2.0, 10.0]:
            proxy = Proxy(sshd.port, rtt)
            ssh = ["ssh", "-q", "-p", str(proxy.port), *sshd.ssh_options(), "-o", "BatchMode=yes"]
            try:
                print(f"| {rtt:g} ms | one ssh stream | `ssh cat` | | | {one_stream(sshd, proxy.port):.0f} | | |")
                sets = [(f"{args.kib} KiB", small), (f"{args.big_mib} MiB", big)][: 1 if args.small_only else 2]
                for label, src in sets:
                    for name, rows in measure(src, remote, ssh, args).items():
                        print(line(rtt, label, name, src, rows))
                        sys.stdout.flush()
            finally:
                proxy.close()
    finally:
        sshd.kill()
        rmtree(args.dir)
        rmtree(remote)


if __name__ == "__main__":
    main()
