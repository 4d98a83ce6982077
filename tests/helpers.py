"""Real processes for tests: the control server, node agents, the CLI; free ports; deadline waits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

BIN = str(Path(sys.executable).parent / "glusterctl")
MOSQUITTO = ("127.0.0.1", 1883)
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(cond: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # the condition may fail while things start
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else "")
    )


class Proc:
    """A child process with its output in a log file; always killed at cleanup."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {' '.join(self.argv)}\n".encode())
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Server(Proc):
    def __init__(
        self,
        tmp: Path,
        broker: str = "embedded",
        db: str | None = None,
        mqtt_root: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.http_port = free_port()
        self.mqtt_port = free_port() if broker == "embedded" else MOSQUITTO[1]
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.broker = broker
        self.mqtt_root = mqtt_root or "glusterctl"
        self.data_dir = tmp / "server"
        argv = [
            BIN,
            "server",
            "--data-dir",
            str(self.data_dir),
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--mqtt-root",
            self.mqtt_root,
        ]
        if broker == "embedded":
            argv += ["--mqtt", f"127.0.0.1:{self.mqtt_port}"]
        else:
            argv += ["--mqtt-url", f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}"]
        if db:
            argv += ["--db", db]
        super().__init__("server", argv + (extra or []), tmp / "server.log")

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self, wait: bool = True) -> Server:
        super().start()
        if wait:
            self.wait_ready()
        return self

    def broker_pid(self) -> int | None:
        """The pid of the embedded broker's process (a child of the server), or None."""
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            for pid in task.read_text().split():
                try:
                    if b"broker.process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
                except FileNotFoundError:
                    continue
        return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        def healthy():
            if not self.alive():
                raise AssertionError(f"server exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/healthz", timeout=2).json()["status"] == "ok"

        wait_until(healthy, timeout, what="server /healthz ok")


class Agent(Proc):
    def __init__(
        self, tmp: Path, server: Server, token: str, node: str, keepalive: int = 2, extra: list[str] | None = None
    ) -> None:
        self.node = node
        self.state_dir = tmp / f"agent-{node}"
        self.volfile_port = free_port()  # agents share this host: each its own volfile server port
        argv = [
            BIN,
            "agent",
            "--mqtt-url",
            server.mqtt_url,
            "--token",
            token,
            "--node",
            node,
            "--state-dir",
            str(self.state_dir),
            "--keepalive",
            str(keepalive),
            "--heartbeat",
            "1",
            "--mqtt-root",
            server.mqtt_root,
            "--address",
            "127.0.0.1",
            "--volfile-port",
            str(self.volfile_port),
        ]
        super().__init__(f"agent-{node}", argv + (extra or []), tmp / f"agent-{node}.log")


class Cli:
    """Runs the real ``glusterctl`` command with its own config dir."""

    def __init__(self, tmp: Path, server: Server) -> None:
        self.server = server
        self.env = {**os.environ, "GLUSTERCTL_CONFIG_DIR": str(tmp / "cli-config"), "GLUSTERCTL_URL": server.url}
        self.env.pop("GLUSTERCTL_PASSWORD", None)

    def run(
        self, *args: str, input: str | None = None, check: bool = True, env: dict | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [BIN, *args], input=input, capture_output=True, text=True, env={**self.env, **(env or {})}, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"glusterctl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    @property
    def token(self) -> str:
        with open(Path(self.env["GLUSTERCTL_CONFIG_DIR"]) / "token.json") as fh:
            return json.load(fh)["token"]

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, f"{self.server.url}{path}", headers=headers, timeout=30, **kw)

    def bootstrap(self, user: str = "admin", password: str = "correct-horse") -> None:
        self.run("user", "create", user, "--password-stdin", input=password + "\n")
        self.run("login", "--username", user, "--password-stdin", input=password + "\n")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def gluster_pids_under(path: Path) -> list[int]:
    """glusterfsd/glusterfs processes whose command line mentions ``path``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            continue
        if not zombie and "glusterfs" in cmd.split(" ")[0] and str(path) in cmd:
            pids.append(int(entry))
    return pids


def mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts") as fh:
        return [line.split()[1] for line in fh if line.split()[1].startswith(str(path))]


def cleanup_gluster(path: Path) -> None:
    """Unmount FUSE mounts and kill brick/self-heal processes a test left under ``path``."""
    for mnt in mounts_under(path):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    for pid in gluster_pids_under(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


PG_BIN = "/usr/lib/postgresql/15/bin"


@contextlib.contextmanager
def private_postgres_cluster() -> Iterator[tuple[str, Callable[..., None]]]:
    """A PostgreSQL instance of the caller alone, on a free port (restarting the shared one would
    disturb other tests): yields its URL and ``ctl(*args)``, which runs pg_ctl on it (stop, start,
    restart). Needs the PostgreSQL 15 server binaries and root (it runs them as ``postgres``)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="gct-pg-"))  # pytest's tmp dirs are closed to the postgres user
    try:
        os.chmod(base, 0o755)
        data = base / "data"
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        port = free_port()
        as_pg = ["runuser", "-u", "postgres", "--"]
        quiet: dict[str, Any] = {
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
        }  # the postmaster keeps pipes
        subprocess.run(
            [*as_pg, f"{PG_BIN}/initdb", "-D", str(data), "--auth=trust", "-U", "postgres"], check=True, **quiet
        )
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"

        def ctl(*args: str) -> None:
            subprocess.run([*as_pg, f"{PG_BIN}/pg_ctl", "-D", str(data), "-o", options, "-w", "-t", "30", *args],
                           check=True, timeout=60, **quiet)  # fmt: skip

        ctl("start", "-l", str(data / "server.log"))
        try:
            wait_until(lambda: port_open("127.0.0.1", port), 30, what="private PostgreSQL up")
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres", ctl
        finally:
            subprocess.run(
                [*as_pg, f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], timeout=60, **quiet
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
