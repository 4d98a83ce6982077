"""The Ansible roles: lint, syntax, and applied for real to localhost into a temporary root.

The roles run with `-c local` and service management off (no systemd as PID 1 here); every path
they write is rooted in the test's temporary directory. Then the test starts the agent (and the
server) with exactly the command and environment the role wrote: ExecStart and Environment= of
the installed unit, and the EnvironmentFile it names.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import Proc, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(VENV_BIN)) or shutil.which("ansible-playbook")
ANSIBLE_LINT = shutil.which("ansible-lint", path=str(VENV_BIN)) or shutil.which("ansible-lint")
SYSTEM_PYTHON = "/usr/bin/python3"  # the target's interpreter: the apt module needs python3-apt
# What systemd gives a service besides its unit's environment.
SYSTEMD_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.skipif(
    ANSIBLE_PLAYBOOK is None or ANSIBLE_LINT is None,
    reason="ansible-core and ansible-lint come with the test extras: pip install -e '.[test]'",
)


def ansible_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "GLUSTERCTL_"))}
    env.update(
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


def run_role(tmp: Path, role: str, variables: dict, name: str) -> str:
    """Apply one role to localhost; return ansible-playbook's output."""
    playbook = tmp / f"{name}.yml"
    playbook.write_text(
        f"- name: {role} into a temporary root\n  hosts: all\n  gather_facts: false\n  roles:\n    - role: {role}\n"
    )
    extra = tmp / f"{name}-vars.json"
    extra.write_text(json.dumps(variables))
    extra.chmod(0o600)
    proc = subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={SYSTEM_PYTHON}",
            "-e",
            f"@{extra}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=ansible_env(tmp),
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"ansible-playbook {name} exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.M)
    assert match, f"no PLAY RECAP in:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def task_result(output: str, task: str) -> str:
    """The first result word (ok, changed, skipping, ...) printed for a task."""
    match = re.search(rf"TASK \[[^\]]*: {re.escape(task)}\][^\n]*\n(\w+):", output)
    assert match, f"task {task!r} not in:\n{output[-3000:]}"
    return match.group(1)


def parse_env_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile= syntax, as far as the roles use it: KEY=VALUE, # comments."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def service_command(unit: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment systemd would give the unit's ExecStart (a single, plain command)."""
    service = False
    argv: list[str] = []
    env = dict(SYSTEMD_BASE_ENV)
    env_files: list[Path] = []
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            service = line == "[Service]"
            continue
        if not service or not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "Environment":
            env.update(item.split("=", 1) for item in shlex.split(value))
        elif key == "EnvironmentFile":
            env_files.append(Path(value))
    for path in env_files:
        env.update(parse_env_file(path))
    assert argv, f"no ExecStart in {unit}"
    return argv, env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built from a copy so the work tree gets no build/ directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "broker", "control", "agent", "tui"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheels = list((tmp / "dist").glob("glusterctl-*.whl"))
    assert proc.returncode == 0 and len(wheels) == 1, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    return wheels[0]


def test_ansible_lint_production_profile(tmp_path):
    proc = subprocess.run(
        [ANSIBLE_LINT, "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        timeout=300,
    )
    assert proc.returncode == 0, f"ansible-lint:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


def test_site_syntax(tmp_path):
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "--syntax-check", "-i", "inventory/example.yml", "site.yml"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        env=ansible_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, f"syntax check:\n{proc.stdout}\n{proc.stderr}"


def assert_unit_is_the_repo_unit(root: Path, unit: Path, name: str) -> None:
    """The role installs systemd/NAME with only its paths moved under the root."""
    written = unit.read_text().replace(str(root), "")
    assert written.startswith("# Ansible managed\n")
    assert written.removeprefix("# Ansible managed\n") == (REPO / "systemd" / name).read_text()


def test_agent_role_applied_twice_then_the_written_agent_goes_online(stack, tmp_path, wheel):
    root = tmp_path / "root"
    node = "ansible-node"
    variables = {
        "glusterctl_agent_root": str(root),
        "glusterctl_agent_manage_service": False,
        "glusterctl_agent_apt_update_cache": False,  # .ci/setup installed the packages; no download
        "glusterctl_agent_package_source": "wheel",
        "glusterctl_agent_wheel": str(wheel),
        "glusterctl_agent_join_token": stack.join_token(),
        "glusterctl_agent_node": node,
        "glusterctl_agent_mqtt_url": stack.server.mqtt_url,
        "glusterctl_agent_keepalive": 2,
        "glusterctl_agent_address": "127.0.0.1",
        "glusterctl_agent_mqtt_root": stack.server.mqtt_root,
    }
    first = run_role(tmp_path, "glusterctl_agent", variables, "agent-1")
    assert recap(first)["changed"] > 0 and recap(first)["failed"] == 0
    second = run_role(tmp_path, "glusterctl_agent", variables, "agent-2")
    assert recap(second)["changed"] == 0, second[-4000:]
    assert variables["glusterctl_agent_join_token"] not in first + second, "no_log: the token must not be printed"

    unit = root / "etc/systemd/system/glusterctl-agent.service"
    assert_unit_is_the_repo_unit(root, unit, "glusterctl-agent.service")
    token_file = root / "etc/glusterctl/agent.token"
    assert token_file.stat().st_mode & 0o777 == 0o600 and token_file.stat().st_uid == 0
    assert token_file.read_text().strip() == variables["glusterctl_agent_join_token"]

    argv, env = service_command(unit)
    assert argv == [str(root / "opt/glusterctl/venv/bin/glusterctl"), "agent"]
    assert "GLUSTERCTL_TOKEN" not in env and env["GLUSTERCTL_TOKEN_FILE"] == str(token_file)
    agent = Proc("ansible-agent", argv, tmp_path / "ansible-agent.log")
    agent.env = env  # exactly the unit's environment, nothing inherited from the test
    stack.procs.append(agent)
    agent.start()
    wait_until(
        lambda: agent.alive() and stack.node_state(node) == "Online",
        30,
        what=f"node {node} Online (agent log: {agent.log_path})",
    )

    third = run_role(
        tmp_path,
        "glusterctl_agent",
        {
            **variables,
            "glusterctl_agent_wait_online_url": stack.server.url,
            "glusterctl_agent_wait_online_token": stack.cli.token,
            "glusterctl_agent_wait_online_timeout": 20,
        },
        "agent-3",
    )
    assert recap(third)["changed"] == 0
    assert task_result(third, "Wait until the control service reports the node Online") == "ok"
    assert stack.cli.token not in third


def test_server_role_applied_twice_then_the_written_server_serves(tmp_path):
    root = tmp_path / "root"
    venv = root / "opt/glusterctl/venv"
    venv.parent.mkdir(parents=True)
    venv.symlink_to(VENV_BIN.parent)  # package_source=none: glusterctl is already there
    http, mqtt = free_port(), free_port()
    variables = {
        "glusterctl_server_root": str(root),
        "glusterctl_server_manage_service": False,
        "glusterctl_server_apt_update_cache": False,
        "glusterctl_server_package_source": "none",
        "glusterctl_server_http": f"127.0.0.1:{http}",
        "glusterctl_server_mqtt": f"127.0.0.1:{mqtt}",
        "glusterctl_server_admin_password": "correct-horse",
    }
    first = run_role(tmp_path, "glusterctl_server", variables, "server-1")
    assert recap(first)["changed"] > 0
    second = run_role(tmp_path, "glusterctl_server", variables, "server-2")
    assert recap(second)["changed"] == 0, second[-4000:]

    unit = root / "etc/systemd/system/glusterctl-server.service"
    assert_unit_is_the_repo_unit(root, unit, "glusterctl-server.service")
    env_file = root / "etc/glusterctl/server.env"
    assert env_file.stat().st_mode & 0o777 == 0o600

    argv, env = service_command(unit)
    assert argv == [str(venv / "bin/glusterctl"), "server"]
    assert env["GLUSTERCTL_DATA_DIR"] == str(root / "var/lib/glusterctl")
    server = Proc("ansible-server", argv, tmp_path / "ansible-server.log")
    server.env = env
    server.start()
    try:
        url = f"http://127.0.0.1:{http}"
        wait_until(
            lambda: server.alive() and httpx.get(f"{url}/healthz", timeout=2).json()["status"] == "ok",
            30,
            what=f"server from the role's unit healthy (log: {server.log_path})",
        )
        assert port_open("127.0.0.1", mqtt)
        assert (root / "var/lib/glusterctl/glusterctl.db").exists()
    finally:
        server.stop()
