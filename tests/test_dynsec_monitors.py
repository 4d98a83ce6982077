"""Mosquitto with dynamic security over TLS, and MQTT monitor users that follow glusterctl grants.

A private Mosquitto (plain and TLS listeners, the dynsec plugin) and a real server that manages
it over ``mqtts://`` with ``--mqtt-ca``; agents reach it over TLS too. Monitors log in on the
plain listener (the raw test client speaks plain MQTT; what they may read is the same).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import dynsec
from broker.dynsec import DynsecClient, DynsecConnectError
from broker.topics import Topics
from broker.url import MqttUrl
from control import tls
from tests.conftest import Stack
from tests.helpers import Cli, unique, wait_until
from tests.test_dynsec import ADMIN, Mosquitto, Peer, _need_mosquitto, start_mosquitto

PASSWORD = "viewer-password-1"
# how long a "must not arrive" check listens
QUIET = 1.0


@pytest.fixture
def pki(tmp_path: Path) -> tls.ServerCert:
    return tls.issue_server_cert(str(tmp_path / "pki"), ["127.0.0.1"])


@pytest.fixture
def mosq(tmp_path: Path, pki: tls.ServerCert) -> Iterator[Mosquitto]:
    _need_mosquitto()
    broker = start_mosquitto(tmp_path / "mosquitto", tls_cert=pki)
    yield broker
    broker.proc.stop()


def admin_url(mosq: Mosquitto, ca: str | None) -> MqttUrl:
    assert mosq.tls_port is not None
    return MqttUrl("127.0.0.1", mosq.tls_port, ADMIN, mosq.admin_password, tls=True, ca=ca)


def test_dynsec_admin_over_tls(mosq: Mosquitto, pki: tls.ServerCert, tmp_path: Path) -> None:
    assert pki.ca is not None
    with DynsecClient(admin_url(mosq, pki.ca)) as admin:
        assert ADMIN in admin.list_clients()
    other = tls.ensure_ca(str(tmp_path / "other-ca"))[0]
    for ca, trusted in ((other, f"the CA {other}"), (None, "the system's CAs")):
        started = time.monotonic()
        with pytest.raises(DynsecConnectError, match="certificate is not signed by") as err:
            DynsecClient(admin_url(mosq, ca), timeout=5).connect(timeout=10)
        assert trusted in str(err.value) and "--mqtt-ca FILE" in str(err.value)
        assert time.monotonic() - started < 5, "a refused certificate should fail at once, not at the timeout"


def _dynsec_stack(tmp_path: Path, request: pytest.FixtureRequest, mosq: Mosquitto, ca: str) -> Stack:
    """A server that manages ``mosq`` over mqtts:// as its dynsec admin (not started)."""
    stack = Stack(tmp_path, request, "embedded")
    server = stack.server
    server.mqtt_root = unique("t")
    server.mqtt_port = mosq.port
    argv = server.argv
    argv[argv.index("--mqtt-root") + 1] = server.mqtt_root
    i = argv.index("--mqtt")
    url = f"mqtts://{ADMIN}:{mosq.admin_password}@127.0.0.1:{mosq.tls_port}"
    argv[i : i + 2] = ["--mqtt-url", url, "--mqtt-ca", ca, "--mqtt-dynsec"]
    return stack


def test_server_refuses_a_dynsec_broker_with_a_wrong_ca(mosq: Mosquitto, tmp_path: Path) -> None:
    other = tls.ensure_ca(str(tmp_path / "other-ca"))[0]
    (tmp_path / "s").mkdir()
    wrong = _dynsec_stack(tmp_path / "s", None, mosq, other).server  # type: ignore[arg-type]
    assert wrong.start(wait=False).wait_exit(30) != 0
    log = wrong.log()
    assert f"its certificate is not signed by the CA {other}" in log and "--mqtt-ca FILE" in log, log[-2000:]
    assert mosq.admin_password not in own_lines(log)


def own_lines(log: str) -> str:
    """The process's own output, without the test harness's start lines (which show the argv)."""
    return "\n".join(line for line in log.splitlines() if not line.startswith("===== "))


def monitor_login(mosq: Mosquitto, username: str, password: str) -> Peer | None:
    """A connected monitor, or None when the broker refused the login."""
    peer = Peer(mosq.port, username, password)
    if peer.wait_connack():
        return peer
    peer.close()
    return None


def test_monitor_users_follow_grants(
    mosq: Mosquitto, pki: tls.ServerCert, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert pki.ca is not None and mosq.tls_port is not None
    stack = _dynsec_stack(tmp_path, request, mosq, pki.ca)
    peers: list[Peer] = []
    try:
        stack.start()
        assert "mqtts://" in stack.server.log()
        t = Topics(stack.server.mqtt_root)
        cli = stack.cli
        assert cli.api("POST", "/api/v1/clusters", json={"name": "b"}).status_code == 201
        tls_agent = ["--mqtt-url", f"mqtts://127.0.0.1:{mosq.tls_port}", "--mqtt-ca", pki.ca]
        stack.agent("a1", extra=tls_agent)
        stack.agent("b1", token=stack.join_token("b"), extra=tls_agent)
        wait_until(
            lambda: stack.node_state("a1") == "Online" and stack.node_state("b1", "b") == "Online",
            30,
            what="agents Online over TLS",
        )

        vic = dynsec.monitor_username(t, "vic")
        cli.run("user", "create", "vic", "--password-stdin", input=PASSWORD + "\n")
        with DynsecClient(admin_url(mosq, pki.ca)) as admin:
            # created with its password, but disabled: no grants yet
            wait_until(lambda: (info := admin.get_client(vic)) is not None and info.disabled, 15, what="vic disabled")
            assert monitor_login(mosq, vic, PASSWORD) is None

            cli.run("user", "grant", "vic", "viewer", "-c", "default")
            monitor = wait_until(lambda: monitor_login(mosq, vic, PASSWORD), 15, what="vic may log in")
            peers.append(monitor)
            assert monitor.subscribe(t.presence("default", "+")) is True
            assert monitor.subscribe(t.presence("b", "+")) is False
            assert monitor.subscribe(t.tasks_filter("default", "a1")) is False
            got: set[str] = set()
            wait_until(
                lambda: t.presence("default", "a1") in (got.update(m[0] for m in monitor.drain(0.2)) or got),
                15,
                what="a1's retained presence",
            )
            assert t.presence("b", "b1") not in got
            assert monitor_login(mosq, vic, "wrong-password") is None

            # revoking takes the access away before the command returns
            cli.run("user", "revoke", "vic", "viewer", "-c", "default")
            assert monitor.disconnected.wait(10), "the revoked monitor stayed connected"
            assert monitor_login(mosq, vic, PASSWORD) is None

            # a cluster's deletion takes its monitor role and the users' access with it
            assert cli.api("POST", "/api/v1/clusters", json={"name": "gone"}).status_code == 201
            cli.run("user", "grant", "vic", "viewer", "-c", "gone")
            gone_role = dynsec.monitor_rolename(t, "gone")
            wait_until(lambda: (info := admin.get_client(vic)) is not None and info.roles == (gone_role,), 15)
            assert cli.api("DELETE", "/api/v1/clusters/gone").status_code in (200, 204)
            wait_until(lambda: admin.get_role(gone_role) is None, 15, what="the deleted cluster's monitor role gone")
            info = admin.get_client(vic)
            assert info is not None and info.roles == () and info.disabled

            # a broker user made without the password (dynsec turned on after the user existed): a login sets it
            admin.delete_client(vic)
            cli.run("user", "grant", "vic", "viewer", "-c", "b")
            assert "vic may monitor b over MQTT once it logs in" in stack.server.log()
            assert admin.get_client(vic) is None
            vic_cli = Cli(tmp_path / "vic", stack.server)
            vic_cli.run("login", "--username", "vic", "--password-stdin", input=PASSWORD + "\n")
            monitor = wait_until(lambda: monitor_login(mosq, vic, PASSWORD), 15, what="vic may log in after login")
            peers.append(monitor)
            assert monitor.subscribe(t.presence("b", "+")) is True
            assert monitor.subscribe(t.presence("default", "+")) is False
            # logging in again with the same password does not disconnect the monitor
            vic_cli.run("login", "--username", "vic", "--password-stdin", input=PASSWORD + "\n")
            assert not monitor.disconnected.wait(QUIET)

            # deleting the user deletes its broker user
            cli.run("user", "delete", "vic")
            assert monitor.disconnected.wait(10)
            assert admin.get_client(vic) is None
        assert PASSWORD not in stack.server.log()
        assert mosq.admin_password not in own_lines(stack.server.log())
    finally:
        for peer in peers:
            peer.close()
        stack.close()
