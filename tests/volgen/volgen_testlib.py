"""Helpers for the volgen tests: distinct free ports, process control, a private glusterd.

A uniquely named module (not `conftest`) so the tests can import it whatever other
conftest.py files the suite grows.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

GLUSTERD_START_TIMEOUT = 30.0
PROCESS_STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free ports (held open together so the kernel cannot hand one out twice)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = PROCESS_STOP_TIMEOUT) -> None:
    """SIGTERM, wait with a deadline, then SIGKILL. Only for pids this test started."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def local_non_loopback_ip() -> str | None:
    """An address of this machine that glusterd accepts in a brick (it refuses loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
            if not ip.startswith("127.") and ip != "0.0.0.0":
                return ip
        except OSError:
            pass
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            ip = fields[fields.index("inet") + 1].split("/")[0]
            if not ip.startswith("127."):
                return ip
    return None


@dataclass
class PrivateGlusterd:
    """A glusterd with its own working directory, port and CLI socket."""

    root: Path
    workdir: Path
    sockfile: Path
    host: str
    pid: int

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "gluster",
                f"--glusterd-sock={self.sockfile}",
                f"--log-file={self.root / 'log' / 'cli.log'}",
                "--mode=script",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    def vol_dir(self, name: str) -> Path:
        return self.workdir / "vols" / name

    def volume_info(self, name: str) -> dict[str, str]:
        """glusterd's stored `vols/NAME/info` as a dict."""
        info: dict[str, str] = {}
        for line in (self.vol_dir(name) / "info").read_text().splitlines():
            key, _, value = line.partition("=")
            info[key] = value
        return info
