"""``glusterctl demo``: the one-minute tour on one machine.

Starts a control server (embedded broker, SQLite) and three agents with their own state
directories, creates a replica-3 volume on folders under DIR, mounts it, writes a file
through the mount and shows it on all three bricks. Everything lives under DIR and is
stopped at the end (Ctrl-C, or at once with --exit).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from control.cli.errors import CliError
from control.client import ApiError, Client

T = TypeVar("T")

NODES = ("node1", "node2", "node3")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _until(what: str, cond: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (CliError, ApiError):
            pass
        time.sleep(0.2)
    raise CliError(f"demo: timed out waiting for {what}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="start a server, three local agents and a mounted replica-3 volume (needs root)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--dir", help="where everything lives (default: a new temporary folder)")
    p.add_argument(
        "--exit", action="store_true", help="tear everything down right after the tour instead of waiting for Ctrl-C"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise CliError("the demo mounts a FUSE volume and sets trusted xattrs: run it as root")
    if shutil.which("glusterfsd") is None and not os.path.exists("/usr/sbin/glusterfsd"):
        raise CliError("glusterfsd is not installed: run 'bash .ci/setup' (or apt-get install glusterfs-server)")
    base = Path(args.dir or tempfile.mkdtemp(prefix="glusterctl-demo-")).resolve()
    base.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "control.cli.main"]
    http, mqtt = _free_port(), _free_port()
    env = {**os.environ, "GLUSTERCTL_CONFIG_DIR": str(base / "config"), "GLUSTERCTL_URL": f"http://127.0.0.1:{http}"}
    env.pop("GLUSTERCTL_TOKEN", None)
    procs: list[subprocess.Popen[bytes]] = []
    mnt = base / "mnt"

    def spawn(name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = open(base / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [*exe, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    def cli(*argv: str, stdin: str | None = None) -> str:
        out = subprocess.run([*exe, *argv], input=stdin, capture_output=True, text=True, env=env, timeout=120)
        if out.returncode != 0:
            raise CliError(f"demo: glusterctl {' '.join(argv)} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    try:
        _step(f"control server on http://127.0.0.1:{http} (MQTT 127.0.0.1:{mqtt}), files in {base}")
        spawn(
            "server",
            "server",
            "--data-dir",
            str(base / "server"),
            "--http",
            f"127.0.0.1:{http}",
            "--mqtt",
            f"127.0.0.1:{mqtt}",
        )
        client = Client(env["GLUSTERCTL_URL"], token="")
        _until("the server", lambda: client.request("GET", "/healthz", auth=False)["status"] == "ok")
        password = secrets.token_urlsafe(12)
        cli("user", "create", "admin", "--password-stdin", stdin=password + "\n")
        cli("login", "--username", "admin", "--password-stdin", stdin=password + "\n")
        _step(f"logged in as admin (password {password}; config in {base / 'config'})")
        token = cli("cluster", "token").strip().splitlines()[-1]
        for node in NODES:
            (base / "bricks" / node).mkdir(parents=True, exist_ok=True)
            spawn(
                f"agent-{node}",
                "agent",
                "--mqtt-url",
                f"mqtt://127.0.0.1:{mqtt}",
                "--token",
                token,
                "--node",
                node,
                "--address",
                "127.0.0.1",
                "--state-dir",
                str(base / f"agent-{node}"),
                "--volfile-port",  # three agents on one host: each its own volfile server
                str(_free_port()),
            )
        _step("three agents started; waiting for them to come Online")
        _until("three nodes Online", lambda: cli("node", "list").count("Online") == 3)
        print(cli("cluster", "status"), end="")
        bricks = [f"{n}:{base / 'bricks' / n / 'demo'}" for n in NODES]
        _step(f"glusterctl volume create demo --replica 3 {' '.join(bricks)} --wait")
        print(cli("volume", "create", "demo", "--replica", "3", *bricks, "--wait"), end="")
        _until("bricks Online", lambda: "3/3 bricks online" in cli("volume", "status", "demo"))
        print(cli("volume", "status", "demo"), end="")
        mnt.mkdir(exist_ok=True)
        _step(f"glusterctl mount demo {mnt}")
        print(cli("mount", "demo", str(mnt)), end="")
        (mnt / "hello.txt").write_text("hello from glusterctl\n")
        for node in NODES:
            copy = base / "bricks" / node / "demo" / "hello.txt"
            print(f"    {copy}: {copy.read_text().strip()!r}")
        _step("done: the file written through the mount is on all three bricks")
        if not args.exit:
            print(f"Try: GLUSTERCTL_CONFIG_DIR={base / 'config'} glusterctl volume status demo   (Ctrl-C to stop)")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        _step("cleaning up")
        subprocess.run(["umount", str(mnt)], capture_output=True)
        try:
            cli("volume", "stop", "demo", "--wait", "--timeout", "30")
        except (CliError, subprocess.TimeoutExpired):
            pass
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
