"""Versioned, signed cluster metadata on the agents, and restoring a lost server from their copies."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from broker.messages import Hello, NodeFacts, join_proof, new_node_secret, node_key


@pytest.fixture
def store(tmp_path):
    from control.services import clusters
    from control.store import open_database

    db = open_database(None, str(tmp_path))
    clusters.ensure_default()
    yield db
    db.close()


def _enrol(cluster, name: str) -> str:
    from control.services import clusters, nodes

    token = clusters.join_token(cluster)
    secret = new_node_secret()
    hello = Hello(
        agent_id="a" * 32,
        epoch=1,
        proof=join_proof(token, name, "a" * 32, 1),
        node_secret=secret,
        facts=NodeFacts(address="192.0.2.1"),
    )
    assert nodes.handle_hello(cluster.name, name, hello).accepted
    return secret


def _version(name: str) -> int:
    from control.store.models import Cluster

    return Cluster.get(Cluster.name == name).metadata_version


def test_metadata_changes_raise_the_version_and_runtime_state_does_not(store):
    from broker.messages import Presence
    from broker.topics import Topics
    from control.services import clusters, nodes, users
    from control.services.devices import DeviceService
    from control.services.tasks import TaskEngine

    cluster = clusters.add("c1")
    assert _version("c1") == 1
    _enrol(cluster, "n1")
    after_enrol = _version("c1")
    assert after_enrol == 2
    nodes.handle_presence("c1", "n1", Presence(state="offline", epoch=1))  # presence is runtime state
    assert _version("c1") == after_enrol
    DeviceService(TaskEngine(Topics())).add(cluster, "n1", "/exports/b1", None)
    assert _version("c1") == after_enrol + 1
    admin = users.create_user("boss", "correct-horse-battery", admin=True)
    users.create_user("viewer1", "correct-horse-battery", actor=admin)
    users.grant("viewer1", "viewer", cluster, "cluster", "", admin)
    assert _version("c1") == after_enrol + 2
    assert _version("default") == 1  # another cluster's changes are not this one's


def test_the_document_carries_what_a_restore_needs_and_no_user_secrets(store):
    from control.services import clusters, metadata, users

    cluster = clusters.add("c2")
    secret = _enrol(cluster, "n1")
    users.create_user("boss", "correct-horse-battery", admin=True)
    doc = metadata.snapshot(clusters.get("c2"))
    assert doc["cluster"] == "c2" and doc["version"] == _version("c2")
    assert doc["nodes"][0]["name"] == "n1" and doc["nodes"][0]["credential_hash"] == node_key(secret)
    text = json.dumps(doc)
    assert "password_hash" not in text and "token_hash" not in text
    assert cluster.join_secret not in text
    assert "correct-horse" not in text


def test_signatures_verify_with_the_pinned_key_only(store, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from control.services import clusters, metadata

    key = metadata.load_or_create_key(str(tmp_path))
    assert oct((tmp_path / metadata.KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert metadata.public_key_text(metadata.load_or_create_key(str(tmp_path))) == metadata.public_key_text(key)
    envelope = metadata.sign(metadata.snapshot(clusters.get("default")), key)
    pinned = metadata.public_key_text(key)
    assert metadata.verify(envelope, pinned)["cluster"] == "default"

    other = Ed25519PrivateKey.generate()
    forged = metadata.sign(metadata.snapshot(clusters.get("default")), other)
    with pytest.raises(metadata.MetadataError, match="does not verify"):
        metadata.verify(forged, pinned)
    tampered = envelope.model_copy(update={"document": envelope.document.replace('"nodes"', '"nodez"')})
    with pytest.raises(metadata.MetadataError, match="does not verify"):
        metadata.verify(tampered, pinned)
    relabelled = envelope.model_copy(update={"version": envelope.version + 5})
    with pytest.raises(metadata.MetadataError):
        metadata.verify(relabelled, pinned)


def test_compressed_documents_sign_their_encoding_and_inflate_within_a_cap(store, tmp_path):
    import base64
    import zlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker.messages import MetadataEncoding, metadata_signed_bytes
    from control.services import clusters, metadata

    key = metadata.load_or_create_key(str(tmp_path))
    pinned = metadata.public_key_text(key)
    doc = metadata.snapshot(clusters.get("default"))
    doc["volumes"] = [{"name": f"v{i}", "options": {"performance.quick-read": "off"}} for i in range(50)]
    envelope = metadata.sign(doc, key)
    assert envelope.encoding is MetadataEncoding.ZLIB and not envelope.document.startswith("{")
    assert metadata.verify(envelope, pinned) == doc
    # the encoding is signed: the same bytes cannot be passed off as plain (nor a plain text as compressed)
    relabelled = envelope.model_copy(update={"encoding": MetadataEncoding.PLAIN})
    with pytest.raises(metadata.MetadataError, match="does not verify"):
        metadata.verify(relabelled, pinned)

    def signed(text: str, encoding: MetadataEncoding, signer=key):
        raw = signer.sign(metadata_signed_bytes("default", doc["version"], text, encoding))
        return envelope.model_copy(  # signed as before digests: over the document itself
            update={"document": text, "encoding": encoding, "digest": "", "signature": base64.b64encode(raw).decode()}
        )

    plain = json.dumps(doc)  # as documents were sent before encodings: still verifies (copies kept then)
    assert metadata.verify(signed(plain, MetadataEncoding.PLAIN), pinned) == doc
    with pytest.raises(metadata.MetadataError, match="does not verify"):
        metadata.verify(
            signed(plain, MetadataEncoding.ZLIB).model_copy(update={"encoding": MetadataEncoding.PLAIN}), pinned
        )

    # a bomb: 65 MiB of JSON whitespace in 65 KiB; signed, it still inflates no further than the cap
    packer = zlib.compressobj(9)
    bomb = packer.compress(b'{"cluster":"default","version":1,"x":"')
    bomb += b"".join(packer.compress(b" " * 2**20) for _ in range(65)) + packer.compress(b'"}') + packer.flush()
    bomb_text = base64.b64encode(bomb).decode()
    assert len(bomb_text) < 256 * 1024
    with pytest.raises(metadata.MetadataError, match="inflates to more than 67108864 bytes"):
        metadata.verify(signed(bomb_text, MetadataEncoding.ZLIB), pinned)
    other = Ed25519PrivateKey.generate()  # unsigned (another key's): refused before anything inflates
    with pytest.raises(metadata.MetadataError, match="does not verify"):
        metadata.verify(signed(bomb_text, MetadataEncoding.ZLIB, other), pinned)


def test_a_copys_header_proves_its_version_alone(store, tmp_path):
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker.messages import MetadataCopy, MetadataRefused, check_metadata_signature, metadata_signed_bytes
    from broker.topics import Topics
    from control.services import clusters, metadata

    key = metadata.load_or_create_key(str(tmp_path))
    pinned = metadata.public_key_text(key)
    doc = metadata.snapshot(clusters.get("default"))
    envelope = metadata.sign(doc, key)
    header = envelope.header()
    assert header is not None and header.version == envelope.version and len(header.digest) == 64
    check_metadata_signature(header, pinned)
    assert len(header.model_dump_json()) < 512  # whatever the document's size
    for tampered in (
        header.model_copy(update={"version": header.version + 1}),
        header.model_copy(update={"digest": "0" * 64}),
        header.model_copy(update={"cluster": "other"}),
    ):
        with pytest.raises(MetadataRefused, match="does not verify"):
            check_metadata_signature(tampered, pinned)
    with pytest.raises(MetadataRefused, match="does not verify"):
        check_metadata_signature(header, metadata.public_key_text(Ed25519PrivateKey.generate()))
    # a whole copy's document must match its signed digest
    swapped = envelope.model_copy(update={"document": envelope.document.replace('"nodes"', '"nodez"')})
    with pytest.raises(MetadataRefused, match="sha256 is not the signed digest"):
        check_metadata_signature(swapped, pinned)
    # a copy kept before digests still verifies whole, and has no header form
    text = json.dumps(doc)
    old = envelope.model_copy(
        update={
            "document": text,
            "encoding": "",
            "digest": "",
            "signature": base64.b64encode(key.sign(metadata_signed_bytes("default", doc["version"], text))).decode(),
        }
    )
    assert old.header() is None and metadata.verify(old, pinned) == doc

    # a server that is not restoring reads the version from the header: a newer one moves its own past it
    class Published(list):
        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
            self.append(topic)

    publisher = metadata.MetadataPublisher(Topics(), Published(), key)
    try:
        before = _version("default")
        ahead = metadata.sign({**doc, "version": before + 5}, key).header()
        assert ahead is not None
        other = metadata.sign({**doc, "version": before + 9}, Ed25519PrivateKey.generate()).header()
        assert not publisher.offered("default", "n1", MetadataCopy(epoch=1, header=other))
        forged = ahead.model_copy(update={"version": before + 9})
        assert not publisher.offered("default", "n1", MetadataCopy(epoch=1, header=forged))
        assert _version("default") == before
        assert publisher.offered("default", "n1", MetadataCopy(epoch=1, header=ahead))
        assert _version("default") == before + 6
        assert not publisher.offered("default", "n1", MetadataCopy(epoch=1, copy=old))  # older, whole: read too
    finally:
        publisher.stop()


def test_a_large_clusters_next_version_waits_for_its_fan_out(store, tmp_path, monkeypatch):
    """Every node receives each version: the next one of a cluster waits as long as bytes x nodes take at
    FANOUT_BYTES_PER_SECOND (here made small), at most FANOUT_PAUSE_MAX; a broker reconnect does not wait."""
    from broker.topics import Topics
    from control.services import clusters, metadata

    monkeypatch.setattr(metadata, "FANOUT_BYTES_PER_SECOND", 100.0)
    for i in range(3):
        _enrol(clusters.get("default"), f"n{i}")

    class Published(list):
        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
            self.append(len(payload))

    sent = Published()
    publisher = metadata.MetadataPublisher(Topics(), sent, metadata.load_or_create_key(str(tmp_path)))
    try:
        assert publisher.publish_changed() == 1
        pause = publisher._next_at["default"] - time.monotonic()
        assert pause == pytest.approx(min(metadata.FANOUT_PAUSE_MAX, sent[0] * 3 / 100.0), abs=1) and pause > 1
        _enrol(clusters.get("default"), "n3")  # a new version
        assert publisher.publish_changed() == 0  # waits
        publisher._next_at["default"] = time.monotonic()  # its pause is over
        assert publisher.publish_changed() == 1 and len(sent) == 2
        _enrol(clusters.get("default"), "n4")
        publisher.republish_all()  # after a reconnect the retained copy may be gone: no wait
        assert publisher.publish_changed() == 1 and len(sent) == 3
    finally:
        publisher.stop()


def test_the_oldest_nodes_keep_copies_and_a_removed_keepers_place_is_taken(store, tmp_path):
    """The registration names the cluster's --metadata-copies oldest nodes; a node enrolled later never displaces
    one, and removing a keeper sends the next oldest node metadata.keep (a cluster that small: nobody)."""
    from broker.messages import TaskKind
    from broker.topics import Topics
    from control.services import clusters, metadata, nodes
    from control.services.tasks import TaskEngine
    from control.store.models import Task

    cluster = clusters.get("default")
    _enrol(cluster, "n1")

    class Quiet:
        def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
            pass

    engine = TaskEngine(Topics())
    key = metadata.load_or_create_key(str(tmp_path))
    publisher = metadata.MetadataPublisher(Topics(), Quiet(), key, copies=3, engine=engine)
    try:
        assert publisher.keeps("default", "n1")  # fewer nodes than copies: every node keeps them
        for name in ("n2", "n3", "n4", "n5"):
            _enrol(cluster, name)
        assert [publisher.keeps("default", n) for n in ("n1", "n2", "n3", "n4", "n5")] == [True] * 3 + [False] * 2
        _enrol(cluster, "n6")
        assert not publisher.keeps("default", "n6")  # enrolled later: never a keeper
        nodes.remove(cluster, "n2", force=True, engine=engine)  # its event lets the loop name the next one
        with publisher._lock:
            lost = publisher._removed_from
        assert lost == {"default"} and "default" not in publisher._keepers
        publisher._promote("default")
        assert [publisher.keeps("default", n) for n in ("n1", "n3", "n4", "n5")] == [True, True, True, False]
        (task,) = Task.select().where(Task.kind == TaskKind.METADATA_KEEP.value)
        assert task.node_name == "n4" and task.params == {"keep": True}
        for name in ("n3", "n4", "n5", "n6"):
            nodes.remove(cluster, name, force=True, engine=engine)
        publisher._promote("default")  # one node left: it keeps copies without being told
        assert publisher.keeps("default", "n1") and Task.select().count() == 1
    finally:
        publisher.stop()


def test_the_agent_keeps_verified_newer_documents_and_refuses_the_rest(tmp_path, caplog):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.metadata import KEEP, MetadataStore
    from control.services import metadata

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    def doc(version: int, cluster: str = "c1", signer=key) -> bytes:
        body = {"cluster": cluster, "version": version, "nodes": [], "volumes": [], "devices": []}
        return metadata.sign(body, signer).model_dump_json().encode()

    store = MetadataStore(str(tmp_path), "c1")
    assert not store.receive(doc(1))  # nothing pinned yet
    store.pin(metadata.public_key_text(key))
    store.pin(metadata.public_key_text(other))  # a later, different key is not pinned
    assert store.pinned() == metadata.public_key_text(key)
    assert oct(os.stat(store.key_path).st_mode & 0o777) == "0o600"
    assert store.receive(doc(3))
    assert not store.receive(doc(4, signer=other)), "forged"
    assert not store.receive(doc(2)), "older"
    assert not store.receive(doc(5, cluster="c2")), "another cluster's"
    assert store.newest().version == 3
    for version in range(4, 4 + KEEP + 2):
        assert store.receive(doc(version))
    files = sorted(os.listdir(store.dir))
    assert len(files) == KEEP and all(
        oct(os.stat(os.path.join(store.dir, f)).st_mode & 0o777) == "0o600" for f in files
    )
    assert store.newest().version == 3 + KEEP + 2
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("does not verify" in m for m in refusals) and any("is kept already" in m for m in refusals)


def test_a_document_over_256_kib_is_published_compressed_and_kept_by_an_agent(stack):
    from agent.metadata import MetadataStore
    from bench.metadata_size import populate
    from broker.messages import MAX_PAYLOAD_BYTES, MetadataEncoding, decode_metadata
    from control.store import open_database
    from tests.helpers import wait_until

    st = stack
    st.agent("n1")
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    wait_until(lambda: _kept(st.tmp / "agent-n1") is not None, what="n1 keeps the first document")
    # NODES enrolled nodes, written straight into the running server's database (enrolling them over MQTT
    # takes minutes): compressed, their document is still over the 256 KiB other payloads are held to
    nodes = 3000
    db = open_database(None, str(st.server.data_dir))
    try:
        populate("default", nodes, volumes=10)
    finally:
        db.close()

    def kept():
        doc = _kept(st.tmp / "agent-n1")
        return doc if doc is not None and len(doc["nodes"]) == nodes + 1 else None

    doc = wait_until(kept, timeout=20, what=f"n1 keeps the {nodes + 1}-node document")
    store = MetadataStore(str(st.tmp / "agent-n1"), "default")
    envelope = store.newest()
    assert envelope is not None and envelope.encoding is MetadataEncoding.ZLIB and doc["version"] == envelope.version
    published = os.path.getsize(os.path.join(store.dir, sorted(os.listdir(store.dir))[-1]))  # kept as received
    raw = len(decode_metadata(envelope).encode())
    assert raw > published > MAX_PAYLOAD_BYTES, (raw, published)
    log = st.server.log()
    assert f"metadata version {envelope.version} published ({published} bytes, zlib)" in log
    assert "not published" not in log


def test_only_keepers_receive_the_document_and_a_new_keeper_gets_it_at_once(make_stack):
    """With --metadata-copies 2 the two oldest of three agents keep copies and the third receives none; when a
    keeper is removed the third is told (task metadata.keep) and keeps the retained document."""
    from tests.helpers import wait_until

    st = make_stack()
    st.server.argv += ["--metadata-copies", "2"]
    st.start()
    agents = {}
    for name in NODES:  # one after another: n1 and n2 are the oldest
        agents[name] = st.agent(name)
        wait_until(lambda name=name: st.node_state(name) == "Online", what=f"{name} Online")
    for name in ("n1", "n2"):
        wait_until(
            lambda name=name: len((_kept(st.tmp / f"agent-{name}") or {}).get("nodes", [])) == 3,
            what=f"{name} keeps the three-node document",
        )
    assert _kept(st.tmp / "agent-n3") is None
    assert "keeps copies of cluster default's metadata" not in agents["n3"].log()
    agents["n1"].stop()
    wait_until(lambda: st.node_state("n1") == "Unreachable", what="n1 Unreachable")
    st.cli.run("node", "remove", "n1")
    doc = wait_until(lambda: _kept(st.tmp / "agent-n3"), what="n3 keeps copies once n1 is removed")
    assert {n["name"] for n in doc["nodes"]} == {"n2", "n3"}
    keep = wait_until(
        lambda: [
            (t["node"], t["state"], t["result"])
            for t in st.cli.api("GET", "/api/v1/tasks", params={"limit": 500}).json()
            if t["kind"] == "metadata.keep" and t["state"] not in ("QUEUED", "RUNNING")
        ],
        what="the metadata.keep task final",
    )
    assert keep == [("n3", "DONE", {"keep": True, "changed": True})], keep
    assert "node n3 keeps copies of cluster default's metadata" in agents["n3"].log()


def test_an_agent_offers_its_copys_header_and_the_whole_copy_when_asked(stack):
    import queue
    import secrets

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.metadata import MetadataStore
    from broker.dynsec import control_username
    from broker.messages import ControlPresence, MetadataCopy, check_metadata_signature, verify_metadata
    from broker.topics import Topics
    from tests.helpers import wait_until

    st = stack
    st.agent("n1")
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    store = MetadataStore(str(st.tmp / "agent-n1"), "default")
    kept = wait_until(store.newest, what="n1 keeps a document")
    pinned = store.pinned() or ""
    topics = Topics(st.server.mqtt_root)
    offers: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    # a second session of the control service's own user: says online as a server start does
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"t-{secrets.token_hex(4)}")
    client.username_pw_set(control_username(topics), (st.server.data_dir / "control.secret").read_text().strip())
    client.on_message = lambda c, u, msg: offers.put(msg.payload)
    client.on_subscribe = lambda *args: subscribed.put(True)
    client.connect("127.0.0.1", st.server.mqtt_port)
    client.loop_start()
    try:
        client.subscribe(topics.metadata_copy("default", "n1"), qos=1)
        subscribed.get(timeout=10)

        def offer(want: str) -> MetadataCopy:
            presence = ControlPresence(state="online", instance="test", at=time.time(), want=want)
            client.publish(topics.control_presence(), presence.model_dump_json(), qos=1)
            return MetadataCopy.model_validate_json(offers.get(timeout=10))

        header_only = offer("")  # what every server reads from the agents: the signed header, no document
        assert header_only.copy_ is None and header_only.header is not None
        assert header_only.header.version >= kept.version
        check_metadata_signature(header_only.header, pinned)
        whole = offer("copies")  # what a restoring server asks for
        assert whole.header is None and whole.copy_ is not None and whole.copy_.version >= header_only.header.version
        assert verify_metadata(whole.copy_, pinned)["version"] == whole.copy_.version
    finally:
        client.loop_stop()
        client.disconnect()
    metrics = st.cli.api("GET", "/metrics").text
    assert re.search(r"^glusterctl_metadata_copy_bytes_total [1-9]", metrics, re.M), metrics[-2000:]


# ---- the whole loss and restore, on real bricks and a real mount -----------------------------------
NODES = ("n1", "n2", "n3")
# times, and the capacity the heartbeats measure (it moves while files are written): not metadata
VOLATILE = ("_at", "last_seen", "uptime", "age", "free", "used", "percent")


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if not any(t in k for t in VOLATILE)}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _views(st) -> dict:
    views = {"volumes": st.cli.json("volume", "list"), "nodes": st.cli.json("node", "list")}
    for name in ("va", "vb"):
        views[f"info {name}"] = st.cli.json("volume", "info", name)
        views[f"status {name}"] = st.cli.json("volume", "status", name)
    return _without_times(views)


def _kept(agent_dir) -> dict | None:
    from agent.metadata import MetadataStore
    from broker.messages import decode_metadata

    newest = MetadataStore(str(agent_dir), "default").newest()
    return json.loads(decode_metadata(newest)) if newest is not None else None


def _mount_works(mnt, name: str) -> None:
    path = os.path.join(mnt, name)
    with open(path, "w") as fh:
        fh.write(name)
    with open(path) as fh:
        assert fh.read() == name


@pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")
def test_a_lost_server_is_restored_from_the_agents_copies(stack, tmp_path):
    from tests.helpers import Server, wait_until
    from tests.test_live_volumes import stock_mount
    from tests.test_volumes import brick, wait_bricks

    st = stack
    for node in NODES:
        st.agent(node)
        (st.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), what="three nodes Online")
    st.cli.run("volume", "create", "va", "--replica", "3", *[brick(st, n, "va") for n in NODES], "--wait")
    st.cli.run("volume", "create", "vb", *[brick(st, n, "vb") for n in NODES], "--wait")
    st.cli.run("volume", "set", "va", "performance.quick-read", "off")
    st.cli.run("volume", "set", "vb", "read-only", "on")
    wait_bricks(st, "va", "Online")
    wait_bricks(st, "vb", "Online")
    mnt = stock_mount(st, "va")
    _mount_works(mnt, "before")
    before = _views(st)

    def kept_everywhere():
        docs = [_kept(st.tmp / f"agent-{n}") for n in NODES]
        return all(
            d and {v["name"]: v["options"] for v in d["volumes"]}.get("vb") == {"features.read-only": "on"}
            for d in docs
        )

    wait_until(kept_everywhere, timeout=20, what="every agent keeps the newest metadata")
    key = tmp_path / "metadata.key.backup"  # the operator's copy of the signing key, kept off the server
    shutil.copy(st.server.data_dir / "metadata.key", key)

    lost = st.server
    lost.kill9()
    shutil.rmtree(lost.data_dir)
    _mount_works(mnt, "server-gone")

    started = time.monotonic()
    new = Server(st.tmp)
    new.http_port, new.mqtt_port, new.url = lost.http_port, lost.mqtt_port, lost.url
    new.argv = [*lost.argv, "--restore-from-agents", "--restore-key", str(key)]
    st.procs.append(new)
    st.server = new
    new.start()
    print(f"restore took {time.monotonic() - started:.1f}s")
    log = new.log()
    assert re.search(r"restore: cluster default: restored from node n[123], metadata version \d+", log), log[-3000:]
    assert "not restored: users, API tokens and sessions" in log
    _mount_works(mnt, "restored")

    (st.tmp / "cli-config" / "token.json").unlink()  # the lost server's token means nothing to the new one
    st.cli.bootstrap()  # users are not kept on agents: the first admin is created again
    wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), timeout=30, what="nodes Online again")
    try:
        wait_until(lambda: _views(st) == before, timeout=20, what="the same views as before the loss")
    finally:
        after = _views(st)
        for view in before:
            assert after[view] == before[view], (view, _differences(before[view], after[view]))
    for name in ("va", "vb"):  # same processes on the same ports
        assert [(b["pid"], b["port"]) for b in after[f"status {name}"]["bricks"]] == [
            (b["pid"], b["port"]) for b in before[f"status {name}"]["bricks"]
        ]

    st.cli.run("volume", "stop", "vb", "--wait")
    st.cli.run("volume", "start", "vb", "--wait")
    wait_bricks(st, "vb", "Online")
    _mount_works(mnt, "after-operations")
    subprocess.run(["umount", mnt], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and need root")
def test_restore_from_agents_keeps_the_mosquitto_dynsec_node_users(tmp_path, request):
    from broker import dynsec
    from broker.dynsec import DynsecClient
    from broker.topics import Topics
    from tests.conftest import Stack
    from tests.helpers import Server, unique, wait_until
    from tests.test_dynsec import ADMIN, _need_mosquitto, start_mosquitto
    from tests.test_volumes import brick, wait_bricks

    _need_mosquitto()
    mosq = start_mosquitto(tmp_path / "mosquitto")
    st = Stack(tmp_path, request, "embedded")
    try:
        server = st.server
        server.mqtt_root, server.mqtt_port = unique("t"), mosq.port
        argv = server.argv
        argv[argv.index("--mqtt-root") + 1] = server.mqtt_root
        i = argv.index("--mqtt")
        argv[i : i + 2] = ["--mqtt-url", f"mqtt://{ADMIN}:{mosq.admin_password}@127.0.0.1:{mosq.port}", "--mqtt-dynsec"]
        st.start()
        nodes = ("n1", "n2")
        for node in nodes:
            st.agent(node)
            (st.tmp / "bricks" / node).mkdir(parents=True)
        wait_until(lambda: all(st.node_state(n) == "Online" for n in nodes), timeout=30, what="nodes Online")
        st.cli.run("volume", "create", "vd", *[brick(st, n, "vd") for n in nodes], "--wait")
        wait_bricks(st, "vd", "Online")
        before = _without_times({"info": st.cli.json("volume", "info", "vd"), "nodes": st.cli.json("node", "list")})
        pids = [(b["pid"], b["port"]) for b in st.cli.json("volume", "status", "vd")["bricks"]]
        wait_until(
            lambda: all((d := _kept(st.tmp / f"agent-{n}")) and d["volumes"] for n in nodes),
            timeout=20,
            what="the agents keep the volume's metadata",
        )
        key = tmp_path / "metadata.key.backup"
        shutil.copy(server.data_dir / "metadata.key", key)
        with DynsecClient(mosq.admin_url()) as admin:
            node_users = {dynsec.node_username(Topics(server.mqtt_root), "default", n) for n in nodes}
            assert node_users <= set(admin.list_clients())

        server.kill9()
        shutil.rmtree(server.data_dir)
        new = Server(st.tmp)
        new.http_port, new.mqtt_port, new.url, new.mqtt_root = server.http_port, mosq.port, server.url, server.mqtt_root
        new.argv = [*argv, "--restore-from-agents", "--restore-key", str(key)]
        st.procs.append(new)
        st.server = new
        started = time.monotonic()
        new.start(wait=False)
        new.wait_ready(timeout=60)
        print(f"restore with --mqtt-dynsec took {time.monotonic() - started:.1f}s")
        assert re.search(r"restore: cluster default: restored from node n[12]", new.log()), new.log()[-3000:]
        (st.tmp / "cli-config" / "token.json").unlink()
        st.cli.bootstrap()
        wait_until(lambda: all(st.node_state(n) == "Online" for n in nodes), timeout=30, what="nodes Online again")
        after = _without_times({"info": st.cli.json("volume", "info", "vd"), "nodes": st.cli.json("node", "list")})
        assert after == before, _differences(before, after)
        assert [(b["pid"], b["port"]) for b in st.cli.json("volume", "status", "vd")["bricks"]] == pids
        with DynsecClient(mosq.admin_url()) as admin:  # the node users outlived the restore's reconciling
            assert node_users <= set(admin.list_clients())
        st.cli.run("volume", "stop", "vd", "--wait")  # the agents act on the restored server's tasks
    finally:
        st.close()
        mosq.proc.stop()
