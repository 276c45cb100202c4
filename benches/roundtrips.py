"""Round trips per file on a network share: every SFTP request the server answers while a copier
copies a finished archive onto an sshfs mount, counted by kind from the server's own log (sshd's
sftp-server at log level DEBUG3 names each request), divided by the files copied. On a share
with a round trip of R, each request a copy waits for costs R; this is what issue 13 cuts.

    python benches/roundtrips.py [--files 500] [--baseline /tmp/oldvenv/bin/python]

`--baseline` runs the softcopy installed in another Python's environment too, side by side. The
archive is tensorstore's (Zarr v2, 16 KiB chunks, 10 per folder, so both flat and nested costs
show). As root (sshd, FUSE).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import identical, machine, rmtree, write_nested
from _share import Sshd

SFTP_SERVER = "/usr/lib/openssh/sftp-server"  # Debian's openssh-sftp-server, which logs to stderr
REQUEST = re.compile(r"debug\d: request \d+: (?!sent)(\S+)")


def count(log: Path, start: int) -> collections.Counter[str]:
    """Requests by kind logged after byte `start` of the server's log."""
    with log.open("rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return collections.Counter(m.group(1) for m in REQUEST.finditer(text))


def quiet_log(log: Path) -> None:
    """Waits (at most 5 s) until the server's log stops growing: its lines may trail the copy."""
    size, deadline = -1, time.monotonic() + 5
    while log.stat().st_size != size and time.monotonic() < deadline:
        size = log.stat().st_size
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--baseline", help="a Python whose environment has another softcopy installed")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="softcopy-rt-"))
    rmtree(work)  # a --dir given is made afresh (and kept afterwards, to read its log)
    work.mkdir(parents=True)
    src = work / "src.zarr"
    write_nested(src, args.files, 16 << 10, per_folder=10)
    files = sum(1 for p in src.rglob("*") if p.is_file())
    server = Sshd(work / "sshd", quiet=True)
    # Each SFTP request is logged by the server as "request N: KIND".
    config = server.home / "sshd_config"
    config.write_text(
        config.read_text().replace(
            "Subsystem sftp internal-sftp", f"Subsystem sftp {SFTP_SERVER} -e -l DEBUG3 2>>{work / 'sftp.log'}"
        )
    )
    log = work / "sftp.log"
    log.touch()
    copiers = {"softcopy": [sys.executable, "-m", "softcopy"], "cp -r": ["cp", "-r"]}
    if args.baseline:
        copiers = {"softcopy (baseline)": [args.baseline, "-m", "softcopy"], **copiers}
    print(f"machine: {machine()}")
    print(f"archive: {files} files ({args.files} chunks of 16 KiB, 10 per folder, and metadata)")
    server.start()
    remote, mnt = work / "remote", work / "mnt"
    remote.mkdir()
    mnt.mkdir()
    server.mount(remote, mnt)
    try:
        rows = []
        for name, cmd in copiers.items():
            dst = mnt / name.replace(" ", "_").replace("(", "").replace(")", "")
            extra = ["--once"] if "softcopy" in name else []
            start = log.stat().st_size
            subprocess.run([*cmd, str(src), str(dst), *extra], check=True, capture_output=True)
            quiet_log(log)
            kinds = count(log, start)
            if not identical(src, remote / dst.name):
                raise SystemExit(f"{name}: the copy differs from the source")
            rows.append((name, kinds))
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], check=False)
        server.kill()
    every = sorted({k for _, kinds in rows for k in kinds})
    print(f"{'copier':<22} {'per file':>8}  " + "  ".join(f"{k:>8}" for k in every))
    for name, kinds in rows:
        total = sum(kinds.values())
        print(f"{name:<22} {total / files:8.2f}  " + "  ".join(f"{kinds[k] / files:8.2f}" for k in every))
    if not args.dir:
        rmtree(work)


if __name__ == "__main__":
    main()
