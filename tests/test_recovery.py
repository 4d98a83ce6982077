"""Versioned, signed cluster metadata on the agents, and restoring a lost server from their copies."""

from __future__ import annotations

import json

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
