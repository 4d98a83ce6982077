"""Facts about this node that the agent reports in its hello and heartbeats."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
from typing import Any

from broker import __version__


@functools.lru_cache(maxsize=1)
def glusterfs_version() -> str | None:
    exe = shutil.which("glusterfsd") or ("/usr/sbin/glusterfsd" if os.path.exists("/usr/sbin/glusterfsd") else None)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"glusterfs (\S+)", out)
    return match.group(1) if match else None


def address_towards(host: str, port: int) -> str:
    """The local address this host uses to reach ``host`` (no packet is sent)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host, port))
            local: str = sock.getsockname()[0]
            return local
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def uptime() -> float | None:
    try:
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError):
        return None


def node_facts(address: str, heartbeat_interval: float) -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "address": address,
        "agent_version": __version__,
        "glusterfs_version": glusterfs_version(),
        "kernel": os.uname().release,
        "uptime_seconds": uptime(),
        "heartbeat_interval": heartbeat_interval,
    }
