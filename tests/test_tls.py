"""HTTPS for the REST API and the event stream: the server's own CA, a client that verifies, a wrong CA refused."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat

import httpx
import pytest
from pydantic import ValidationError

from broker.dynsec import enrol_username
from broker.topics import Topics
from broker.url import MqttUrl
from control import tls
from control.client import ApiError, Client, Event, Hello
from control.settings import ServerSettings
from tests.helpers import Cli, Proc, Server, free_port, port_open, unique, wait_until


def _https_server(tmp, extra: list[str]) -> tuple[Server, str]:
    server = Server(tmp, extra=extra)
    server.url = f"https://127.0.0.1:{server.http_port}"
    server.start(wait=False)
    ca = str(server.data_dir / "tls" / "ca.pem")

    def healthy() -> bool:
        assert server.alive(), server.log()[-3000:]
        if not os.path.exists(ca):
            return False
        try:
            return httpx.get(f"{server.url}/healthz", verify=ssl.create_default_context(cafile=ca)).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, what="https /healthz")
    return server, ca


def test_https_with_the_servers_own_ca(tmp_path):
    server, ca = _https_server(tmp_path, ["--tls", "auto"])
    try:
        tls_dir = server.data_dir / "tls"
        for key in ("ca.key", "server.key"):
            assert stat.S_IMODE(os.stat(tls_dir / key).st_mode) == 0o600
        assert tls.fingerprint(ca) in server.log()  # printed at start for the user to compare
        assert "https://127.0.0.1" in server.log()
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the port
            httpx.get(f"http://127.0.0.1:{server.http_port}/healthz", timeout=5)

        cli = Cli(tmp_path, server)
        cli.run("user", "create", "admin", "--password-stdin", "--ca", ca, input="correct-horse\n")
        cli.run("login", "-u", "admin", "--password-stdin", "--ca", ca, input="correct-horse\n")
        with open(tmp_path / "cli-config" / "token.json") as fh:
            assert json.load(fh)["ca"] == ca
        assert "default" in cli.run("cluster", "list").stdout  # the saved CA verifies from now on

        # the event stream over https, verified with the saved CA
        client = Client(server.url, token=cli.token, ca=ca)
        stream = client.events(after=0)
        kinds = []
        for item in stream:
            if isinstance(item, Event):
                kinds.append(item.kind)
                break
            assert isinstance(item, Hello), item
        stream.close()
        assert kinds

        # a wrong CA, or none (the system's CAs), is refused with what to do
        other = tls.ensure_ca(str(tmp_path / "other-ca"))[0]
        wrong = cli.run("cluster", "list", "--ca", other, check=False)
        assert wrong.returncode == 1
        assert f"its certificate is not signed by the CA {other}" in wrong.stderr and "--ca FILE" in wrong.stderr
        with pytest.raises(ApiError, match="not signed by the CA"):  # the stream does not retry a refused CA
            next(iter(Client(server.url, token=cli.token, ca=other).events()))
        fresh = Cli(tmp_path / "elsewhere", server)
        none = fresh.run("login", "-u", "admin", "--password-stdin", input="correct-horse\n", check=False)
        assert none.returncode == 1 and "not signed by the system's CAs" in none.stderr
        assert not (tmp_path / "elsewhere" / "cli-config" / "token.json").exists()
    finally:
        server.stop()

    # a restart keeps the CA (clients keep trusting it) and its certificate
    before = tls.fingerprint(ca)
    again, _ = _https_server(tmp_path, ["--tls", "auto"])
    try:
        assert tls.fingerprint(ca) == before
    finally:
        again.stop()


def test_https_with_an_operators_certificate(tmp_path):
    made = tls.issue_server_cert(str(tmp_path / "pki"), ["127.0.0.1"])
    server = Server(tmp_path, extra=["--tls-cert", made.cert, "--tls-key", made.key])
    server.url = f"https://127.0.0.1:{server.http_port}"
    server.start(wait=False)
    context = ssl.create_default_context(cafile=made.ca)

    def healthy() -> bool:
        assert server.alive(), server.log()[-3000:]
        try:
            return httpx.get(f"{server.url}/healthz", verify=context).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 30, what="https /healthz")
        assert not (server.data_dir / "tls").exists()  # no CA of its own when given a certificate
    finally:
        server.stop()


def test_tls_settings_are_checked(tmp_path):
    with pytest.raises(ValidationError, match="go together"):
        ServerSettings(tls_cert=str(tmp_path))
    with pytest.raises(ValidationError, match=r"auto .* or off"):
        ServerSettings(tls="maybe")
    with pytest.raises(ValidationError, match="no such file"):
        ServerSettings(tls_cert="/nonexistent.pem", tls_key="/nonexistent.key")
    assert not ServerSettings(http="127.0.0.1:8080").https()  # loopback only: plain HTTP by default
    assert ServerSettings(http="0.0.0.0:8080").https()  # reachable from elsewhere: HTTPS by default
    assert not ServerSettings(http="0.0.0.0:8080", tls="off").https()
    assert ServerSettings(http="127.0.0.1:8080", tls="auto").https()
    with pytest.raises(ValidationError, match="no listener: add --mqtts"):
        ServerSettings(mqtt="off")
    assert ServerSettings(mqtt="off", mqtts="127.0.0.1:8883").mqtts
    assert MqttUrl.parse("mqtts://h", ca="/x.pem") == MqttUrl("h", 8883, None, None, True, "/x.pem")
    assert MqttUrl.parse("mqtt://h", ca="/x.pem").ca is None
    assert MqttUrl.parse("mqtts://u:p@h:1").redacted() == "mqtts://u:***@h:1"


# ---- MQTT over TLS ---------------------------------------------------------------------------------
def _agent_online(stack, node: str) -> bool:
    return stack.node_state(node) == "Online"


def test_embedded_broker_over_tls_only(make_stack):
    stack = make_stack()
    plain_port, tls_port = stack.server.mqtt_port, free_port()
    stack.server.argv += ["--mqtt", "off", "--mqtts", f"127.0.0.1:{tls_port}"]
    stack.start()
    server = stack.server
    ca = str(server.data_dir / "tls" / "ca.pem")
    assert tls.fingerprint(ca) in server.log() and "mqtts://127.0.0.1" in server.log()
    assert not port_open("127.0.0.1", plain_port)  # plain TCP is off: the bridge itself came over TLS
    tls_url = f"mqtts://127.0.0.1:{tls_port}"

    stack.agent("n1", extra=["--mqtt-url", tls_url, "--mqtt-ca", ca])
    wait_until(lambda: _agent_online(stack, "n1"), 30, what="n1 Online over TLS")

    other = tls.ensure_ca(str(stack.tmp / "other-ca"))[0]
    for node, extra in (("n2", ["--mqtt-ca", other]), ("n3", [])):  # a wrong CA, the system's CAs
        agent = stack.agent(node, extra=["--mqtt-url", tls_url, *extra])
        assert agent.wait_exit(30) == 2
        assert "certificate is not signed by" in agent.log() and "--mqtt-ca FILE" in agent.log()
        assert stack.node_state(node) is None

    # a node certificate enrols instead of the join token; its key never leaves the node
    cert, key = stack.tmp / "c1.pem", _csr(stack.tmp, "c1")
    stack.cli.run("node", "certificate", "c1", "--csr", str(stack.tmp / "c1.csr"), "--out", str(cert))
    with_cert = ["--mqtt-url", tls_url, "--mqtt-ca", ca, "--mqtt-cert", str(cert), "--mqtt-key", str(key)]
    c1 = _tokenless(stack.agent("c1", start=False, extra=with_cert)).start()
    wait_until(lambda: _agent_online(stack, "c1"), 30, what="c1 enrolled by its certificate, Online")
    assert stat.S_IMODE(os.stat(c1.state_dir / "node.secret").st_mode) == 0o600
    issued = [e for e in stack.cli.json("audit") if e["path"].endswith("/nodes/c1/certificate")]
    assert issued and issued[0]["actor"] == "admin" and issued[0]["status"] == 201, issued

    # the certificate names c1 only: the agent will not use it for c2, nor enrol c1 again elsewhere
    c2 = _tokenless(stack.agent("c2", start=False, extra=with_cert)).start()
    assert c2.wait_exit(15) == 1 and "is the certificate of node c1" in c2.log()  # a usage error
    again = _tokenless(stack.agent("c1", start=False, extra=with_cert))
    again.state_dir, again.argv[again.argv.index("--state-dir") + 1] = (
        stack.tmp / "c1-again",
        str(stack.tmp / "c1-again"),
    )
    again.log_path = stack.tmp / "c1-again.log"
    again.start()
    assert again.wait_exit(30) == 2 and "already enrolled" in again.log()

    # at the broker, the certificate's login may enrol c1 and nothing else
    peer = _tls_peer(tls_port, ca, cert, key, enrol_username(Topics(server.mqtt_root), "default"))
    try:
        t = Topics(server.mqtt_root)
        granted: dict[int, list] = {}
        peer.on_subscribe = lambda c, u, mid, codes, props: granted.__setitem__(mid, codes)
        own = peer.subscribe(t.registration("default", "c1"), qos=1)[1]
        other = peer.subscribe(t.registration("default", "n1"), qos=1)[1]
        wait_until(lambda: own in granted and other in granted, what="both SUBACKs")
        assert not granted[own][0].is_failure and granted[other][0].is_failure
    finally:
        peer.loop_stop()
        peer.disconnect()

    # a certificate of another CA, or of another cluster, does not pass the control service's check
    foreign = tls.issue_server_cert(str(stack.tmp / "foreign"), ["127.0.0.1"])
    with pytest.raises(tls.TlsError, match="not signed by this control service"):
        tls.verify_node_certificate(ca, open(foreign.cert).read())
    assert tls.verify_node_certificate(ca, cert.read_text())[:2] == ("default", "c1")
    bad = stack.cli.run("node", "certificate", "c3", "--csr", str(cert), check=False)
    assert bad.returncode == 1 and "not a PEM certificate signing request" in bad.stderr


def _csr(where, node: str):
    """A key (mode 0600) and a CSR for ``node``, made as an operator would on the node."""
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    key_path = where / f"{node}.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    csr = (
        cx509.CertificateSigningRequestBuilder()
        .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "anything-the-node-says")]))
        .sign(key, hashes.SHA256())
    )
    (where / f"{node}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return key_path


def _tokenless(agent):
    i = agent.argv.index("--token")
    del agent.argv[i : i + 2]
    return agent


def _tls_peer(port: int, ca: str, cert, key, username: str):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    peer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("peer-"), protocol=mqtt.MQTTv311)
    peer.tls_set(ca_certs=ca, certfile=str(cert), keyfile=str(key))
    peer.username_pw_set(username)
    peer.connect("127.0.0.1", port)
    peer.loop_start()
    wait_until(peer.is_connected, what="the certificate's enrolment login accepted")
    return peer


def test_mosquitto_over_tls(make_stack, tmp_path):
    if not shutil.which("mosquitto"):
        pytest.skip("mosquitto is not installed")
    made = tls.issue_server_cert(str(tmp_path / "pki"), ["127.0.0.1"])
    port = free_port()
    lines = [
        f"listener {port} 127.0.0.1",
        f"certfile {made.cert}",
        f"keyfile {made.key}",
        "allow_anonymous true",
        "persistence false",
        "log_dest stderr",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # the key file is 0600
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    mosquitto = Proc("mosquitto", ["mosquitto", "-c", str(conf)], tmp_path / "mosquitto.log").start()
    try:
        wait_until(lambda: port_open("127.0.0.1", port) or not mosquitto.alive(), 15, what="mosquitto listening")
        assert mosquitto.alive(), mosquitto.log()[-2000:]
        url = f"mqtts://127.0.0.1:{port}"
        stack = make_stack(sub="stack")
        stack.server.argv += ["--mqtt-url", url, "--mqtt-ca", made.ca, "--mqtt-root", "tlsroot"]
        stack.server.mqtt_root = "tlsroot"
        stack.start()
        assert "mqtts://127.0.0.1" in stack.server.log()
        stack.agent("m1", extra=["--mqtt-url", url, "--mqtt-ca", made.ca])
        wait_until(lambda: _agent_online(stack, "m1"), 30, what="m1 Online over TLS to Mosquitto")
        other = tls.ensure_ca(str(tmp_path / "other-ca"))[0]
        refused = stack.agent("m2", extra=["--mqtt-url", url, "--mqtt-ca", other])
        assert refused.wait_exit(30) == 2 and "certificate is not signed by the CA" in refused.log()
        # the control service refuses an unverified broker too
        wrong = Server(tmp_path / "wrong", extra=["--mqtt-url", url, "--mqtt-ca", other])
        (tmp_path / "wrong").mkdir()
        assert wrong.start(wait=False).wait_exit(40) != 0
        assert f"its certificate is not signed by the CA {other}" in wrong.log()
    finally:
        mosquitto.stop()
