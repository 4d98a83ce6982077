"""Fixtures for the volgen tests; the helpers live in volgen_testlib.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers are a sibling module; make them importable whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from volgen_testlib import (
    GLUSTERD_START_TIMEOUT,
    PROCESS_STOP_TIMEOUT,
    PrivateGlusterd,
    local_non_loopback_ip,
)

from tests.helpers import free_port, wait_until


@pytest.fixture(scope="module")
def private_glusterd(tmp_path_factory) -> Iterator[PrivateGlusterd]:
    """Start a glusterd that cannot touch /var/lib/glusterd; always killed at teardown."""
    for binary in ("glusterd", "gluster"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (Debian package glusterfs-server)")
    if os.geteuid() != 0:
        pytest.skip("glusterd must run as root")
    host = local_non_loopback_ip()
    if host is None:
        pytest.skip("no non-loopback IPv4 address: glusterd refuses loopback brick hosts")
    root = tmp_path_factory.mktemp("glusterd")
    workdir, rundir, logdir = root / "wd", root / "run", root / "log"
    for d in (workdir, rundir, logdir):
        d.mkdir()
    sockfile = root / "glusterd.socket"
    pidfile = root / "glusterd.pid"
    volfile = root / "glusterd.vol"
    volfile.write_text(
        "volume management\n"
        "    type mgmt/glusterd\n"
        f"    option working-directory {workdir}\n"
        f"    option run-directory {rundir}\n"
        f"    option logging-directory {logdir}\n"
        f"    option glusterd-sockfile {sockfile}\n"
        "    option transport-type socket\n"
        f"    option transport.socket.listen-port {free_port()}\n"
        "    option transport.socket.bind-address 127.0.0.1\n"
        "    option ping-timeout 0\n"
        "    option event-threads 1\n"
        "end-volume\n"
    )
    proc = subprocess.Popen(
        ["glusterd", "-N", "-f", str(volfile), "-p", str(pidfile), "-l", str(logdir / "glusterd.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gd = PrivateGlusterd(root, workdir, sockfile, host, proc.pid)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"glusterd exited with {proc.returncode}; see {logdir}/glusterd.log")
            return sockfile.exists() and gd.cli("volume", "list").returncode == 0

        wait_until(ready, GLUSTERD_START_TIMEOUT, 0.2, "the private glusterd to answer its CLI")
        yield gd
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=PROCESS_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=PROCESS_STOP_TIMEOUT)
