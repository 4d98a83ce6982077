"""The systemd units: `systemd-analyze verify` and `security` on each, and sd_notify for real.

systemd is not PID 1 on the test machines, so nothing here starts a unit. What systemd would do
is played by the test: it verifies the unit files offline against a temporary root (the host's
unit directory copied in, the unit's ExecStart path present there), and it plays the manager's
end of the notify protocol: a datagram socket in NOTIFY_SOCKET that receives READY=1 and
WATCHDOG=1 with the sender's credentials, as systemd does to enforce NotifyAccess=main.
"""

from __future__ import annotations

import configparser
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import port_open, wait_until

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO / "systemd"
UNITS = ["glusterctl-agent.service", "glusterctl-server.service"]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HOST_UNIT_DIR = Path("/usr/lib/systemd/system")

# "Must not happen" waits: how long READY=1 must stay away while the agent cannot register.
NO_READY_WAIT = 4.0
# WATCHDOG_USEC for the tests: the process pings every half of it.
WATCHDOG_USEC = 1_000_000
# Highest `systemd-analyze security` exposure each unit may have (lower is better); the agent
# must stay root with mount and xattr privileges, so it cannot go as low as the server.
MAX_EXPOSURE = {"glusterctl-server.service": 2.0, "glusterctl-agent.service": 6.0}

needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not HOST_UNIT_DIR.is_dir(),
    reason="systemd-analyze and the systemd unit directory come with Debian's systemd package (.ci/setup installs it)",
)


# ---- offline verification -------------------------------------------------------------------
def unit_exec_path(unit_text: str) -> str:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit_text)
    return parser["Service"]["ExecStart"].split()[0].lstrip("-@:+!")


def offline_root(tmp: Path, units: dict[str, str]) -> Path:
    """A file system root for `systemd-analyze --root`: the host's units, ours, our ExecStart paths."""
    root = tmp / "root"
    shutil.copytree(HOST_UNIT_DIR, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
        exe = root / unit_exec_path(text).lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return root


def analyze_verify(tmp: Path, units: dict[str, str]) -> subprocess.CompletedProcess:
    root = offline_root(tmp, units)
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={root}", *units], capture_output=True, text=True, timeout=60
    )


def assert_verifies(tmp: Path, units: dict[str, str]) -> None:
    """Exit 0 and no output: systemd-analyze only warns (exit 0) about unknown keys."""
    proc = analyze_verify(tmp, units)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        f"systemd-analyze verify {' '.join(units)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )


@needs_analyze
def test_units_verify(tmp_path):
    assert_verifies(tmp_path, {name: (UNIT_DIR / name).read_text() for name in UNITS})


@needs_analyze
def test_verify_catches_a_misspelt_key(tmp_path):
    """The check above is not vacuous: a typo in a unit is reported."""
    text = (UNIT_DIR / "glusterctl-agent.service").read_text().replace("Type=notify", "Tpye=notify")
    proc = analyze_verify(tmp_path, {"glusterctl-agent.service": text})
    assert "Unknown key" in proc.stderr and "Tpye" in proc.stderr


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure(tmp_path, unit):
    root = offline_root(tmp_path, {unit: (UNIT_DIR / unit).read_text()})
    proc = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "security",
            "--offline=true",
            f"--root={root}",
            f"--threshold={int(MAX_EXPOSURE[unit] * 10)}",
            "--no-pager",
            unit,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{unit} exposure above {MAX_EXPOSURE[unit]}:\n{proc.stdout[-3000:]}{proc.stderr}"


@pytest.mark.parametrize("unit", UNITS)
def test_unit_contract(unit):
    """What the service code and the brick supervisor rely on, beyond what verify can see."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((UNIT_DIR / unit).read_text())
    service = parser["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure" and service.get("WatchdogSec")
    kind = unit.split("-")[1].split(".")[0]
    assert service["EnvironmentFile"] == f"/etc/glusterctl/{kind}.env"
    assert service["ExecStart"].split()[1:] == [kind]
    assert parser["Unit"]["StartLimitIntervalSec"] == "0"
    if kind == "agent":
        assert service["KillMode"] == "process"  # bricks survive an agent restart
        assert service["RestartPreventExitStatus"] == "2"  # refused token: retrying cannot help
        assert "CAP_SYS_ADMIN" in service["CapabilityBoundingSet"].split()
        namespaced = {
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "ReadOnlyPaths",
            "ReadWritePaths",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectProc",
            "TemporaryFileSystem",
            "MountFlags",
        }
        assert not namespaced & set(service), "a private mount namespace would hide the agent's mounts"


# ---- the notify protocol for real -------------------------------------------------------------
@dataclass
class Notification:
    at: float
    pid: int
    fields: dict[str, str]


class NotifySocket:
    """The service manager's end of sd_notify: an abstract datagram socket with SO_PASSCRED."""

    def __init__(self) -> None:
        self.address = f"@glusterctl-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.2)
        self.received: list[Notification] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        creds_size = struct.calcsize("3i")
        while not self._closed.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:creds_size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.received.append(Notification(time.monotonic(), pid, fields))

    def env(self, watchdog_usec: int | None = WATCHDOG_USEC) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def messages(self, key: str, value: str = "1") -> list[Notification]:
        with self._lock:
            return [n for n in self.received if n.fields.get(key) == value]

    def wait_for(self, key: str, timeout: float, after: float = 0.0) -> Notification:
        return wait_until(
            lambda: next((n for n in self.messages(key) if n.at > after), None),
            timeout,
            interval=0.05,
            what=f"{key}=1 on NOTIFY_SOCKET",
        )

    def close(self) -> None:
        self._closed.set()
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def test_agent_ready_only_once_online_then_watchdog(make_stack, notify_socket):
    stack = make_stack().start()
    token = stack.join_token()
    node = "sdnotify-node"
    stack.server.stop()

    agent = stack.agent(node, token=token, start=False)
    agent.env.update(notify_socket.env())
    agent.start()
    # The broker and control service are down: the agent retries, and must not claim readiness.
    deadline = time.monotonic() + NO_READY_WAIT
    while time.monotonic() < deadline:
        assert agent.alive(), f"agent exited:\n{agent.log()[-3000:]}"
        assert not notify_socket.received, f"agent notified before registering: {notify_socket.received}"
        time.sleep(0.1)

    stack.server.start()
    ready = notify_socket.wait_for("READY", timeout=30)
    # Right when READY=1 arrives, the control service already has the node Online.
    assert stack.node_state(node) == "Online"
    assert ready.pid == agent.pid, "NotifyAccess=main: READY must come from the main process"
    assert ready.fields.get("STATUS")

    watchdog = notify_socket.wait_for("WATCHDOG", timeout=5 * WATCHDOG_USEC / 1e6, after=ready.at)
    assert watchdog.pid == agent.pid
    second = notify_socket.wait_for("WATCHDOG", timeout=5 * WATCHDOG_USEC / 1e6, after=watchdog.at)
    assert second.at - watchdog.at < WATCHDOG_USEC / 1e6, "pings must come at least every WatchdogSec"
    assert len(notify_socket.messages("READY")) == 1


def test_server_ready_only_when_serving_then_watchdog(make_stack, notify_socket):
    stack = make_stack()
    server = stack.server
    server.env.update(notify_socket.env())
    server.start(wait=False)
    ready = notify_socket.wait_for("READY", timeout=30)
    # READY=1 means: database open, broker listening, REST answering.
    health = httpx.get(f"{server.url}/healthz", timeout=5).json()
    assert health["status"] == "ok", health
    assert port_open("127.0.0.1", server.mqtt_port)
    assert ready.pid == server.pid

    watchdog = notify_socket.wait_for("WATCHDOG", timeout=5 * WATCHDOG_USEC / 1e6, after=ready.at)
    assert watchdog.pid == server.pid
    assert len(notify_socket.messages("READY")) == 1


def test_no_notify_socket_is_fine(stack):
    """Outside systemd (no NOTIFY_SOCKET) the agent runs as before."""
    agent = stack.agent("plain-node")
    wait_until(lambda: stack.node_state("plain-node") == "Online", 30, what="node Online")
    assert agent.alive() and "sd_notify" not in agent.log()


def test_env_of_agent_process_has_no_token_when_token_file_is_used(stack, tmp_path):
    """The unit passes the token as a file name: it never shows in the process environment."""
    token_file = tmp_path / "agent.token"
    token_file.write_text(stack.join_token() + "\n")
    token_file.chmod(0o600)
    agent = stack.agent("tokenfile-node", token="unused", start=False)
    argv = agent.argv
    i = argv.index("--token")
    del argv[i : i + 2]
    agent.env.update(GLUSTERCTL_TOKEN_FILE=str(token_file))
    agent.env.pop("GLUSTERCTL_TOKEN", None)
    agent.start()
    wait_until(lambda: stack.node_state("tokenfile-node") == "Online", 30, what="node Online")
    environ = Path(f"/proc/{agent.pid}/environ").read_bytes().split(b"\0")
    assert not any(entry.startswith(b"GLUSTERCTL_TOKEN=") for entry in environ)
