"""A network share for tests and benches: a real sshd on loopback serving SFTP, mounted with
sshfs (the kernel here has no NFS or CIFS client), optionally through the delay proxy
(`_delay.py`) for latency."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first found, from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class TreeCpu:
    """The user + system CPU seconds a process and all below it spend from now until `total`,
    sampled from /proc every 0.1 s: a server's session processes are reaped by the server, never by
    the bench, so wait4 cannot count them. A session that ends between two samples loses at most
    its last 0.1 s: a floor, not an estimate."""

    def __init__(self, pid: int) -> None:
        self.pid, self.tick = pid, os.sysconf("SC_CLK_TCK")
        self.base = self.now()
        self.seen = dict(self.base)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def now(self) -> dict[int, float]:
        out = {}
        for pid in [self.pid, *descendants(self.pid)]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[pid] = (int(fields[11]) + int(fields[12])) / self.tick
        return out

    def sample(self) -> None:
        while not self.done.wait(0.1):
            self.seen.update(self.now())

    def total(self) -> float:
        self.done.set()
        self.thread.join()
        self.seen.update(self.now())
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.seen.items())


class Sshd:
    """A real sshd on loopback serving SFTP, for a network destination mounted with sshfs. It can be
    killed and started again on the same port, as a share that drops and comes back."""

    def __init__(self, home: Path, quiet: bool = False) -> None:
        import socket

        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        for key in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True)
        (home / "authorized_keys").write_text((home / "client.pub").read_text())
        (home / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {home / 'host'}\n"
            f"AuthorizedKeysFile {home / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {home / 'sshd.pid'}\nSubsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.quiet = quiet

    def start(self) -> None:
        import socket

        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.home / "sshd_config")],
            stderr=subprocess.DEVNULL if self.quiet else None,
        )

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        deadline = time.monotonic() + 10
        while not listening():
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not listen within 10 s")
            time.sleep(0.02)

    def kill(self) -> None:
        """Kills this server and every session it serves (and nothing else on the machine): the
        connection drops as in a network outage."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(5)

    def ssh_options(self) -> list[str]:
        """Options for `ssh` to reach this server as root (for `rsync -e`)."""
        return ["-i", str(self.home / "client"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]

    def mount(self, remote: Path, mnt: Path, port: int | None = None) -> None:
        """Mounts `remote` at `mnt` with sshfs, through `port` (a delay proxy) when given. Through
        the proxy the 1 s keepalives are left out: queued behind megabytes of writes they would
        time out and drop a healthy link."""
        alive = "" if port else ",ServerAliveInterval=1,ServerAliveCountMax=2"
        opts = (
            f"IdentityFile={self.home / 'client'},port={port or self.port},StrictHostKeyChecking=no,"
            f"UserKnownHostsFile=/dev/null,reconnect,ConnectTimeout=2{alive}"
        )
        subprocess.run(["sshfs", "-o", opts, f"root@127.0.0.1:{remote}", str(mnt)], check=True)


def without_hasher(work: Path, ssh: str) -> str:
    """`ssh` (an `--ssh-command`) whose remote commands find neither b3sum nor sha256sum on the server:
    its PATH there holds only sh and xargs. The SFTP sessions (`-s`) are as usual."""
    bin_dir, wrapper = work / "bare-bin", work / "ssh-without-hasher"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("/bin/sh", "/usr/bin/xargs"):
        if not (bin_dir / Path(tool).name).exists():
            (bin_dir / Path(tool).name).symlink_to(tool)
    wrapper.write_text(
        "#!/usr/bin/env python3\nimport os, sys\nargs = sys.argv[1:]\n"
        f"if '-s' not in args:\n    args[-1] = 'env PATH={bin_dir} ' + args[-1]\n"
        "os.execvp('ssh', ['ssh', *args])\n"
    )
    wrapper.chmod(0o755)
    return ssh.replace("ssh", str(wrapper), 1)
