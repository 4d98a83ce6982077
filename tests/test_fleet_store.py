"""What the fleet's heartbeats cost the store: unchanged heartbeats batched, the silence deadline
column the sweeper reads (migration 15), and that presence still cannot lie. SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid

import peewee as pw
import pytest

from broker.messages import BrickReport, Heartbeat, NodeFacts, Presence


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    from control.services import nodes
    from control.store import open_database

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    db = open_database(url, str(tmp_path))
    nodes.reset_beats()
    yield db
    nodes.reset_beats()
    db.close()


def make_node(name: str, epoch: int = 7, interval: float = 2.0, seen: float | None = None):
    from control.services import clusters
    from control.store.models import Node

    seen = seen or time.time()
    return Node.create(
        cluster=clusters.ensure_default(),
        name=name,
        state="Online",
        agent_id="a" * 32,
        epoch=epoch,
        last_seen_at=seen,
        silence_deadline=seen + max(3 * interval, 5),
        facts={"heartbeat_interval": interval, "hostname": name},
    )


def enrolled_node(name: str, epoch: int) -> str:
    """A node row with a credential: the key its agent proves hellos with."""
    from broker.messages import node_key
    from control.services import enrolment

    row = make_node(name, epoch=epoch)
    secret = "s" * 43
    enrolment.set_credential(row, secret)
    row.save()
    return node_key(secret)


def beat(epoch: int, seq: int, uptime: float, bricks=()) -> Heartbeat:
    facts = NodeFacts(hostname="n1", heartbeat_interval=2.0, uptime_seconds=uptime)
    return Heartbeat(epoch=epoch, seq=seq, at=time.time(), facts=facts, bricks=list(bricks))


def hand_to_bridge(bridge, node: str, leaf: str, payload: bytes) -> None:
    """A message on the node's topic, handed to the bridge as its MQTT network thread does."""
    import paho.mqtt.client as mqtt

    msg = mqtt.MQTTMessage(topic=f"{bridge.topics.node_prefix('default', node)}/{leaf}".encode())
    msg.payload = payload
    bridge._on_message(bridge.client, None, msg)


def test_migration_15_adds_the_columns_and_fills_the_deadline(database):
    from control.store.db import _migration_15
    from control.store.models import Node

    make_node("n1", interval=4.0, seen=1000.0)
    database.execute_sql('DROP INDEX IF EXISTS "node_silence_deadline"')
    for name in ("silence_deadline", "facts_at"):
        database.execute_sql(f'ALTER TABLE "node" DROP COLUMN "{name}"')
    _migration_15(database)
    _migration_15(database)  # idempotent
    assert {"silence_deadline", "facts_at"} <= {c.name for c in database.get_columns("node")}
    assert "node_silence_deadline" in {i.name for i in database.get_indexes("node")}
    row = Node.get(Node.name == "n1")
    assert row.silence_deadline == 1012.0 and row.facts_at == 1000.0


def test_unchanged_heartbeats_are_batched_and_the_uptime_still_moves(database):
    from control.services import nodes, views
    from control.store.models import Node

    make_node("n1")
    t0 = time.time()
    assert nodes.handle_heartbeat("default", "n1", beat(7, 1, 100.0), now=t0)  # the full path
    assert nodes._pending == {}
    assert nodes.handle_heartbeat("default", "n1", beat(7, 2, 102.0), now=t0 + 2)  # kept, not written
    row = Node.get(Node.name == "n1")
    assert row.last_seen_at == t0 and row.facts["uptime_seconds"] == 100.0
    assert nodes.flush_seen() == 1
    row = Node.get(Node.name == "n1")
    assert row.last_seen_at == t0 + 2 and row.silence_deadline == t0 + 2 + 6
    assert row.facts["uptime_seconds"] == 100.0 and row.facts_at == t0
    assert views.node_facts(row)["uptime_seconds"] == 102.0
    # a heartbeat from another connection is refused, batched or not
    assert not nodes.handle_heartbeat("default", "n1", beat(6, 3, 104.0), now=t0 + 4)
    # a change (a brick reported for a volume the node has none of: nothing to write) and a new fact
    changed = Heartbeat(epoch=7, seq=4, at=t0, facts=NodeFacts(hostname="renamed", heartbeat_interval=2.0))
    assert nodes.handle_heartbeat("default", "n1", changed, now=t0 + 6)
    assert Node.get(Node.name == "n1").hostname == "renamed"


def test_a_batched_heartbeat_never_revives_an_unreachable_node(database):
    from control.services import nodes
    from control.store.models import Node

    make_node("n1")
    t0 = time.time()
    assert nodes.handle_heartbeat("default", "n1", beat(7, 1, 1.0), now=t0)
    assert nodes.handle_heartbeat("default", "n1", beat(7, 2, 2.0), now=t0 + 1)  # kept
    nodes.handle_presence("default", "n1", Presence(state="offline", epoch=7), now=t0 + 1.5)  # last-will
    nodes.flush_seen()
    assert Node.get(Node.name == "n1").state == "Unreachable"
    # the next heartbeat of that connection takes the full path and brings it back, as before
    assert nodes.handle_heartbeat("default", "n1", beat(7, 3, 3.0), now=t0 + 2)
    assert Node.get(Node.name == "n1").state == "Online"


def test_the_sweeper_finds_silent_nodes_by_their_deadline(database):
    from control.services import nodes
    from control.store.models import Node

    now = time.time()
    make_node("quiet", seen=now - 60)
    make_node("fresh", seen=now)
    kept = make_node("kept", seen=now - 60)
    nodes._pending[kept.id] = (7, now - 1, now + 5)  # a heartbeat that is not written yet
    assert nodes.sweep_silent(now) == 1
    states = {n.name: n.state for n in Node.select()}
    assert states == {"quiet": "Unreachable", "fresh": "Online", "kept": "Online"}


def test_brick_changes_take_the_full_path(database):
    from control.services import clusters, nodes
    from control.store.models import Brick, Volume

    make_node("n1")
    volume = Volume.create(
        id=str(uuid.uuid4()),
        cluster=clusters.ensure_default(),
        name="v",
        type="distribute",
        state="Started",
        auth_username="u",
        auth_password="p",
    )
    Brick.create(volume=volume, index=0, node_name="n1", path="/b", port=49152, state="Offline")
    t0 = time.time()
    assert nodes.handle_heartbeat("default", "n1", beat(7, 1, 1.0), now=t0)
    up = [BrickReport(volume_id=volume.id, index=0, port=49152, pid=42, online=True)]
    assert nodes.handle_heartbeat("default", "n1", beat(7, 2, 2.0, up), now=t0 + 1)
    assert Brick.get().state == "Online" and Brick.get().pid == 42
    # the same report again is not read against the rows: changed by someone else, a brick row is
    # corrected by the next report that differs, or at the latest by the recheck
    Brick.update(state="Offline", pid=None).execute()
    assert nodes.handle_heartbeat("default", "n1", beat(7, 3, 3.0, up), now=t0 + 2)
    assert Brick.get().state == "Offline"
    assert nodes.handle_heartbeat("default", "n1", beat(7, 4, 4.0, up), now=t0 + 1 + nodes.RECHECK_SECONDS)
    assert Brick.get().state == "Online" and Brick.get().pid == 42
    restarted = [BrickReport(volume_id=volume.id, index=0, port=49152, pid=43, online=True)]
    Brick.update(state="Offline", pid=None).execute()
    assert nodes.handle_heartbeat("default", "n1", beat(7, 5, 5.0, restarted), now=t0 + 2 + nodes.RECHECK_SECONDS)
    assert Brick.get().state == "Online" and Brick.get().pid == 43
    # a brick that stops being reported is Offline at the next heartbeat
    assert nodes.handle_heartbeat("default", "n1", beat(7, 6, 6.0), now=t0 + 3 + nodes.RECHECK_SECONDS)
    assert Brick.get().state == "Offline" and Brick.get().pid is None


def test_a_repeated_hello_is_answered_again_until_the_node_changes(database):
    from broker.messages import Hello, node_proof
    from control.services import nodes
    from control.store.models import Node

    key = enrolled_node("n1", epoch=5)

    def hello(epoch: int, nonce: str) -> Hello:
        proof = node_proof(key, "default", "n1", "a" * 32, epoch)
        return Hello(agent_id="a" * 32, epoch=epoch, proof=proof, nonce=nonce, facts=NodeFacts(hostname="n1"))

    t0 = time.time()
    assert nodes.handle_hello("default", "n1", hello(9, "one"), now=t0).accepted
    again = nodes.handle_hello("default", "n1", hello(9, "two"), now=t0 + 1)
    assert again.accepted and again.nonce == "two" and again.epoch == 9
    # later (a control presence asks every agent again) one read of the row answers it, without a write
    seen = Node.get(Node.name == "n1").last_seen_at
    assert nodes.handle_hello("default", "n1", hello(9, "late"), now=t0 + nodes.HELLO_KEEP_SECONDS + 5).accepted
    assert Node.get(Node.name == "n1").last_seen_at == seen
    # a row another server changed meanwhile (it called the node Unreachable): that read sees it, and the
    # hello takes the full path (written, Online again)
    Node.update(state="Unreachable").execute()
    later = t0 + 2 * nodes.HELLO_KEEP_SECONDS + 10
    assert nodes.handle_hello("default", "n1", hello(9, "again"), now=later).accepted
    row = Node.get(Node.name == "n1")
    assert row.state == "Online" and row.last_seen_at == later
    # the node's connection is lost: a repeat of that hello takes the full path, and is judged again
    nodes.handle_presence("default", "n1", Presence(state="offline", epoch=9), now=t0 + 2)
    assert Node.get(Node.name == "n1").state == "Unreachable"
    assert nodes.handle_hello("default", "n1", hello(9, "three"), now=t0 + 3).accepted
    assert Node.get(Node.name == "n1").state == "Online"
    # a wrong proof is never answered from what was kept
    forged = hello(9, "four").model_copy(update={"proof": "0" * 64})
    assert not nodes.handle_hello("default", "n1", forged, now=t0 + 4).accepted


def test_after_a_hello_the_presence_and_first_heartbeat_only_move_the_time(database):
    from broker.messages import Hello, node_proof
    from control.services import nodes
    from control.store.models import Node

    key = enrolled_node("n1", epoch=5)
    row_id = Node.get(Node.name == "n1").id
    facts = NodeFacts(hostname="n1", heartbeat_interval=2.0, uptime_seconds=1.0)
    proof = node_proof(key, "default", "n1", "a" * 32, 9)
    t0 = time.time()
    assert nodes.handle_hello(
        "default", "n1", Hello(agent_id="a" * 32, epoch=9, proof=proof, nonce="x", facts=facts), now=t0
    ).accepted
    nodes.handle_presence("default", "n1", Presence(state="online", epoch=9), now=t0 + 1)
    assert nodes._pending[row_id][:2] == (9, t0 + 1)  # kept, written with the next sweep
    assert nodes.handle_heartbeat("default", "n1", beat(9, 1, 2.0), now=t0 + 2)
    assert nodes._pending[row_id][:2] == (9, t0 + 2)
    assert Node.get(Node.name == "n1").last_seen_at == t0  # the hello's time, until the flush
    nodes.flush_seen()
    assert Node.get(Node.name == "n1").last_seen_at == t0 + 2
    # a presence of an older connection is not taken as this one's, and the last-will still counts
    nodes.handle_presence("default", "n1", Presence(state="online", epoch=5), now=t0 + 3)
    assert nodes._pending == {}
    nodes.handle_presence("default", "n1", Presence(state="offline", epoch=9), now=t0 + 3)
    assert Node.get(Node.name == "n1").state == "Unreachable"
    nodes.handle_presence("default", "n1", Presence(state="offline", epoch=9), now=t0 + 3.5)  # changes nothing
    # Unreachable: a presence online of the connection goes through the row again and brings it back
    nodes.handle_presence("default", "n1", Presence(state="online", epoch=9), now=t0 + 4)
    assert Node.get(Node.name == "n1").state == "Online" and nodes._pending == {}


def test_a_known_agent_connecting_again_moves_its_row_in_one_statement(database):
    from broker.messages import Hello, node_proof
    from control.services import nodes
    from control.store.models import Node

    key = enrolled_node("n1", epoch=5)
    facts = NodeFacts(hostname="n1", heartbeat_interval=2.0)

    def hello(epoch: int, proof: str | None = None, **update) -> Hello:
        proof = proof or node_proof(key, "default", "n1", "a" * 32, epoch)
        return Hello(
            agent_id="a" * 32, epoch=epoch, proof=proof, nonce=f"n{epoch}", facts=facts.model_copy(update=update)
        )

    t0 = time.time()
    assert nodes.handle_hello("default", "n1", hello(9), now=t0).accepted  # the full path keeps the row
    statements = []
    database.execute_sql = lambda sql, params=None, **kw: (
        statements.append(sql) or type(database).execute_sql(database, sql, params, **kw)
    )
    try:
        assert nodes.handle_hello("default", "n1", hello(10), now=t0 + 1).accepted
    finally:
        del database.execute_sql
    assert len(statements) == 1 and statements[0].startswith("UPDATE"), statements  # no transaction
    row = Node.get(Node.name == "n1")
    assert row.epoch == 10 and row.last_seen_at == t0 + 1 and row.state == "Online"
    assert not nodes.handle_heartbeat("default", "n1", beat(9, 1, 1.0), now=t0 + 2)  # the old connection's
    assert nodes.handle_heartbeat("default", "n1", beat(10, 1, 1.0), now=t0 + 2)
    # a forged proof is never taken from what was kept
    assert not nodes.handle_hello("default", "n1", hello(11, proof="0" * 64), now=t0 + 3).accepted
    # the row changed elsewhere (another server called it Unreachable): the full path decides, and writes
    Node.update(state="Unreachable").execute()
    assert nodes.handle_hello("default", "n1", hello(12), now=t0 + 4).accepted
    row = Node.get(Node.name == "n1")
    assert row.epoch == 12 and row.state == "Online"
    # new facts take the full path too
    assert nodes.handle_hello("default", "n1", hello(13, hostname="renamed"), now=t0 + 5).accepted
    assert Node.get(Node.name == "n1").hostname == "renamed"


def test_an_enrolment_asked_again_is_answered_from_what_was_kept_only_with_the_same_secret(database):
    from broker.messages import Hello, join_proof, make_join_token, new_node_secret, node_key
    from control.services import clusters, nodes
    from control.store.models import Event, Node

    cluster = clusters.ensure_default()
    token = make_join_token(cluster.name, cluster.join_secret)
    secret = new_node_secret()

    def enrol(nonce: str, node_secret: str) -> Hello:
        proof = join_proof(token, "n1", "a" * 32, 3)
        return Hello(agent_id="a" * 32, epoch=3, proof=proof, nonce=nonce, node_secret=node_secret, facts=NodeFacts())

    t0 = time.time()
    assert nodes.handle_hello("default", "n1", enrol("one", secret), now=t0).accepted
    events = Event.select().count()
    # its answer was slow: asked again with the same secret, answered without a write
    again = nodes.handle_hello("default", "n1", enrol("two", secret), now=t0 + 1)
    assert again.accepted and again.nonce == "two" and Event.select().count() == events
    # the same connection asking to store another secret is judged again: refused, the first one stays
    other = nodes.handle_hello("default", "n1", enrol("three", new_node_secret()), now=t0 + 2)
    assert not other.accepted and "already enrolled" in other.reason
    assert Node.get(Node.name == "n1").credential_hash == node_key(secret)


def test_the_recheck_reads_the_row_again_and_writes_only_when_it_changed(database):
    from control.services import nodes
    from control.store.models import Node

    make_node("n1")
    t0 = time.time()
    assert nodes.handle_heartbeat("default", "n1", beat(7, 1, 1.0), now=t0)  # the full path
    later = t0 + nodes.RECHECK_SECONDS + 1
    assert nodes.handle_heartbeat("default", "n1", beat(7, 2, 2.0), now=later)  # read again: unchanged, kept
    assert Node.get(Node.name == "n1").last_seen_at == t0 and nodes._pending
    nodes.flush_seen()
    Node.update(state="Unreachable").execute()  # another server called it Unreachable meanwhile
    much_later = later + nodes.RECHECK_SECONDS + 1
    assert nodes.handle_heartbeat("default", "n1", beat(7, 3, 3.0), now=much_later)
    row = Node.get(Node.name == "n1")
    assert row.state == "Online" and row.last_seen_at == much_later  # the full path wrote it


def test_a_last_will_waits_for_the_hellos_received_behind_it(database):
    """A reconnect storm: the old connection's last-will is read while the node's new hello waits in the
    bridge's inbox. The will is judged after that hello (by its epoch): the node never passes through
    Unreachable and the hello takes the one-statement path. Behind a hello that is refused, the will works."""

    from broker.messages import Hello, node_proof
    from broker.topics import Topics
    from broker.url import MqttUrl
    from control.bridge import Bridge
    from control.services.tasks import TaskEngine
    from control.store.models import Event, Node

    key = enrolled_node("n1", epoch=7)
    topics = Topics()
    bridge = Bridge(MqttUrl("127.0.0.1", 1), topics, TaskEngine(topics))  # never started: fed by hand
    facts = NodeFacts(hostname="n1", heartbeat_interval=2.0)

    def deliver(leaf: str, payload: bytes) -> None:
        hand_to_bridge(bridge, "n1", leaf, payload)

    def hello(epoch: int, proof: str | None = None) -> bytes:
        proof = proof or node_proof(key, "default", "n1", "a" * 32, epoch)
        return Hello(agent_id="a" * 32, epoch=epoch, proof=proof, nonce=f"n{epoch}", facts=facts).model_dump_json()

    def will(epoch: int) -> bytes:
        return Presence(state="offline", epoch=epoch).model_dump_json().encode()

    def step() -> None:
        _, data = bridge._inbox.get_nowait()
        bridge._handle_in_order(*data, bridge._handle_durably)

    def work() -> None:
        while not bridge._inbox.empty():
            step()

    def state_events() -> int:
        return Event.select().where(Event.kind == "node.state").count()

    deliver("hello", hello(8).encode())  # the connection the agent has
    work()
    before = state_events()
    deliver("presence", will(8))
    deliver("hello", hello(9).encode())
    statements = []
    database.execute_sql = lambda sql, params=None, **kw: (
        statements.append(sql) or type(database).execute_sql(database, sql, params, **kw)
    )
    try:
        work()
    finally:
        del database.execute_sql
    row = Node.get(Node.name == "n1")
    assert (row.state, row.epoch) == ("Online", 9) and state_events() == before  # never Unreachable
    assert [s.split()[0] for s in statements] == ["UPDATE"], statements  # the hello's one statement; the will: none
    deliver("presence", will(9))
    deliver("hello", hello(10, proof="0" * 64).encode())  # refused: the will behind it is judged then
    work()
    row = Node.get(Node.name == "n1")
    assert (row.state, row.epoch) == ("Unreachable", 9) and state_events() == before + 1
    # a will waits only for the hellos already waiting when it was read, never for later ones
    deliver("hello", hello(11).encode())
    work()
    deliver("presence", will(11))
    deliver("hello", hello(12, proof="0" * 64).encode())
    step()  # the will: held behind the one hello waiting
    deliver("hello", hello(13, proof="0" * 64).encode())  # came later
    step()  # the hello it waited for (refused): the will is judged now, before the later hello
    assert Node.get(Node.name == "n1").state == "Unreachable"
    work()
    assert not bridge._hellos_waiting and not bridge._wills_held


def test_a_batch_raises_each_clusters_metadata_version_once(database):
    """Changes of metadata in one batch (one transaction) raise their cluster's version once; a batch
    that is rolled back raises nothing, and the next batch raises it again."""
    from control.services import clusters, events
    from control.store.models import Cluster

    clusters.ensure_default()
    Cluster.create(name="other", join_secret="j" * 32)

    def versions() -> dict[str, int]:
        return {c.name: c.metadata_version for c in Cluster.select()}

    start = versions()
    with database.atomic():  # not a batch: each change raises it, as always
        events.record("node.enrolled", cluster="default", subject="n1")
        events.record("node.enrolled", cluster="default", subject="n2")
    assert versions() == {"default": start["default"] + 2, "other": start["other"]}

    start = versions()
    with events.held_until_commit(), database.atomic():
        for node in ("n1", "n2", "n3"):
            events.record("node.registered", cluster="default", subject=node)
        events.record("node.state", cluster="other", subject="n9", state="Online")  # not metadata
        events.record("node.removed", cluster="other", subject="n8")
    assert versions() == {"default": start["default"] + 1, "other": start["other"] + 1}

    with pytest.raises(RuntimeError), events.held_until_commit(), database.atomic():
        events.record("node.registered", cluster="default", subject="n4")
        raise RuntimeError("rolled back")
    with events.held_until_commit(), database.atomic():
        events.record("node.registered", cluster="default", subject="n5")
    assert versions() == {"default": start["default"] + 2, "other": start["other"] + 1}


def test_messages_waiting_together_share_one_transaction_and_answer_after_it(database):
    """Messages waiting back to back are handled in one transaction: another connection sees none of them
    before the commit, their answers go out and the event listeners hear only after it, and a scheduled
    call behind them is not passed. When one fails, the batch is rolled back and each is handled again
    on its own: the others are stored and answered once, the failing one is dropped and counted."""
    import sqlite3

    import psycopg2

    from broker.messages import Hello, node_proof
    from broker.topics import Topics
    from broker.url import MqttUrl
    from control.bridge import Bridge
    from control.services import events
    from control.services.tasks import TaskEngine
    from control.store.models import Node

    keys = {name: enrolled_node(name, epoch=7) for name in ("n1", "n2", "n3")}
    Node.update(state="Unreachable").where(Node.name == "n3").execute()  # its hello records a state event
    if isinstance(database, pw.PostgresqlDatabase):
        other = psycopg2.connect(dbname=database.database, **database.connect_params)
        other.autocommit = True
    else:
        other = sqlite3.connect(database.database)

    def committed_epoch(node: str) -> int:
        cursor = other.cursor()
        cursor.execute(f"SELECT epoch FROM node WHERE name = '{node}'")
        return cursor.fetchone()[0]

    topics = Topics()
    seen_outside: list[int] = []
    failing: set[str] = set()

    class Watched(Bridge):
        def handle(self, topic: str, payload: bytes) -> None:
            super().handle(topic, payload)
            node = topic.split("/")[-2]
            if node == "n3":
                seen_outside.append(committed_epoch("n1"))
            if node in failing:
                raise RuntimeError("a handler failed after its writes")

    bridge = Watched(MqttUrl("127.0.0.1", 1), topics, TaskEngine(topics))  # never started: fed by hand
    answered, heard = [], []
    bridge.client.publish = lambda topic, payload, qos, retain: answered.append((topic, database.in_transaction()))
    unsubscribe = events.subscribe(lambda event: heard.append((event.subject, database.in_transaction())))

    def deliver(node: str, epoch: int) -> None:
        proof = node_proof(keys[node], "default", node, "a" * 32, epoch)
        facts = NodeFacts(hostname=node, heartbeat_interval=2.0)
        hello = Hello(agent_id="a" * 32, epoch=epoch, proof=proof, nonce=f"x{epoch}", facts=facts)
        hand_to_bridge(bridge, node, "hello", hello.model_dump_json().encode())

    def batch_of_three(epoch: int) -> None:
        for node in ("n1", "n2", "n3"):
            deliver(node, epoch)
        _, first = bridge._inbox.get_nowait()
        batch = [first, *bridge._waiting_messages(10)]
        assert [topic.split("/")[-2] for topic, _ in batch] == ["n1", "n2", "n3"]
        bridge._handle_batch(batch)

    try:
        deliver("n1", 8)
        assert bridge.call_soon(lambda: None)
        deliver("n2", 8)  # behind the scheduled call: never in a batch before it
        _, lone = bridge._inbox.get_nowait()
        assert bridge._waiting_messages(10) == []
        bridge._handle_in_order(*lone, bridge._handle_durably)
        assert bridge._inbox.get_nowait()[0] == "call"
        bridge._handle_in_order(*bridge._inbox.get_nowait()[1], bridge._handle_durably)
        answered.clear()

        batch_of_three(9)
        assert seen_outside == [8]  # n1's hello of epoch 9 was not committed while n3's was handled
        assert {row.name: row.epoch for row in Node.select()} == {"n1": 9, "n2": 9, "n3": 9}
        assert [topic.split("/")[-2] for topic, _ in answered] == ["n1", "n2", "n3"]
        assert ("n3", False) in heard and not any(inside for _, inside in answered + heard)  # after the commit
        assert not bridge.dropped_counts()

        answered.clear()
        failing.add("n2")
        batch_of_three(10)  # n2 fails: rolled back, then each on its own
        assert {row.name: row.epoch for row in Node.select()} == {"n1": 10, "n2": 10, "n3": 10}
        assert sorted(topic.split("/")[-2] for topic, _ in answered) == ["n1", "n2", "n3"]  # each once
        assert bridge.dropped_counts() == {"handler-error": 1}
        assert not bridge._hellos_waiting and bridge._inbox.empty()
    finally:
        unsubscribe()
        other.close()


def test_an_enrolment_that_fails_in_a_batch_is_refused_alone_and_the_batch_kept(database):
    """An enrolment whose broker user cannot be made, in a batch: its writes share the batch's transaction
    (no savepoint of its own), so the batch is rolled back and its messages handled one by one: the other
    node is enrolled and answered once, the failing one is refused with the reason and leaves no row."""

    from broker.messages import Hello, Registration, join_proof, make_join_token
    from broker.topics import Topics
    from broker.url import MqttUrl
    from control.bridge import Bridge
    from control.services import clusters, enrolment
    from control.services.tasks import TaskEngine
    from control.store.models import Node

    token = make_join_token("default", clusters.ensure_default().join_secret)

    class BrokerDown(enrolment.NoAccounts):
        """The broker refuses to make one node's user (a dynsec command that failed)."""

        def __init__(self) -> None:
            self.made: list[str] = []

        def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
            if node == "bad":
                raise RuntimeError("dynsec: createClient timed out")
            self.made.append(node)

    accounts = BrokerDown()
    enrolment.use_accounts(accounts)
    topics = Topics()
    bridge = Bridge(MqttUrl("127.0.0.1", 1), topics, TaskEngine(topics))  # never started: fed by hand
    answers: dict[str, Registration] = {}
    bridge.client.publish = lambda topic, payload, qos, retain: answers.__setitem__(
        topic.split("/")[-2], Registration.model_validate_json(payload)
    )
    try:
        for node in ("good", "bad"):
            proof = join_proof(token, node, "a" * 32, 5)
            hello = Hello(agent_id="a" * 32, epoch=5, proof=proof, nonce="n", node_secret="s" * 43, facts=NodeFacts())
            hand_to_bridge(bridge, node, "hello", hello.model_dump_json().encode())
        _, first = bridge._inbox.get_nowait()
        batch = [first, *bridge._waiting_messages(10)]
        assert len(batch) == 2
        bridge._handle_batch(batch)

        assert [row.name for row in Node.select()] == ["good"]
        assert answers["good"].accepted and not answers["bad"].accepted
        assert "could not create the node's broker user" in (answers["bad"].reason or "")
        assert accounts.made == ["good", "good"]  # in the batch, then again on its own, with the same secret
        assert not bridge.dropped_counts()
    finally:
        enrolment.use_accounts(enrolment.NoAccounts())
