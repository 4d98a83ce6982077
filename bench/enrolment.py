"""What a registration storm costs the control service's store, per message: enrolments, then the
hellos of the enrolled agents' next connections, through the bridge's worker.

Each message is a real MQTT message object handed to the bridge as its network thread does
(``_on_message``); the bridge's worker then handles the inbox as in the server: messages that wait
back to back in one transaction (up to ``BATCH_MAX``), their answers published after the commit.
No broker and no simulated agents share the cores, so the figures are the store path alone
(answers go nowhere). The baseline, measured in the same run on the same database, is the same
messages with batches of one: each message a transaction of its own.

    .venv/bin/python bench/enrolment.py [--nodes 3000] [--db sqlite|postgresql|both] [-o json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paho.mqtt.client as mqtt

from bench.fleet import drop_postgres, private_postgres
from broker.messages import Hello, NodeFacts, join_proof, make_join_token, node_key, node_proof
from broker.topics import Topics
from broker.url import MqttUrl
from control import bridge as bridge_module
from control.bridge import Bridge
from control.services import clusters, nodes
from control.services.tasks import TaskEngine
from control.store import open_database
from control.store.models import Node

AGENT = "a" * 32
SECRET = "s" * 43  # every simulated node's secret: the store keeps only its verifier


def hellos(token: str, names: list[str]) -> tuple[list[tuple[str, Hello]], list[tuple[str, Hello]]]:
    """Each node's enrolment hello (join token proof, its new secret), then its next connection's (node proof)."""
    enrol = [
        (n, Hello(agent_id=AGENT, epoch=1, proof=join_proof(token, n, AGENT, 1), nonce="e", node_secret=SECRET))
        for n in names
    ]
    key = node_key(SECRET)
    again = [
        (n, Hello(agent_id=AGENT, epoch=2, proof=node_proof(key, "default", n, AGENT, 2), nonce="h", facts=NodeFacts()))
        for n in names
    ]
    return enrol, again


def through_the_worker(bridge: Bridge, topics: Topics, messages: list[tuple[str, Hello]]) -> tuple[float, float]:
    """Hand ``messages`` to the bridge, then let its worker handle them; (wall, CPU) seconds per message."""
    for name, hello in messages:
        msg = mqtt.MQTTMessage(topic=f"{topics.node_prefix('default', name)}/hello".encode())
        msg.payload = hello.model_dump_json().encode()
        bridge._on_message(bridge.client, None, msg)
    bridge._inbox.put(None)  # the worker stops once it reaches this
    wall, cpu = time.perf_counter(), time.process_time()
    bridge._work()
    return (time.perf_counter() - wall) / len(messages), (time.process_time() - cpu) / len(messages)


def one_run(url: str | None, count: int, batch: int) -> dict[str, float]:
    """A fresh database; ``count`` enrolments, then as many hellos, with batches of at most ``batch``."""
    data_dir = tempfile.mkdtemp(prefix="glusterctl-enrol-")
    database = open_database(url, data_dir)
    nodes.reset_beats()
    token = make_join_token("default", clusters.ensure_default().join_secret)
    topics = Topics()
    bridge = Bridge(MqttUrl("127.0.0.1", 1), topics, TaskEngine(topics))  # never connected: fed by hand
    answers: list[str] = []
    bridge.client.publish = lambda topic, payload, qos=0, retain=False: answers.append(topic)
    enrol, again = hellos(token, [f"n{i:05d}" for i in range(count)])
    saved, bridge_module.BATCH_MAX = bridge_module.BATCH_MAX, batch
    try:
        enrol_wall, enrol_cpu = through_the_worker(bridge, topics, enrol)
        hello_wall, hello_cpu = through_the_worker(bridge, topics, again)
    finally:
        bridge_module.BATCH_MAX = saved
    stored = Node.select().where(Node.epoch == 2).count()
    database.close()
    if stored != count or len(answers) != 2 * count or bridge.dropped_counts():
        raise SystemExit(
            f"wrong run: {stored} of {count} nodes stored, {len(answers)} answers, {bridge.dropped_counts()}"
        )
    return {
        "enrol_ms": enrol_wall * 1000,
        "enrol_cpu_ms": enrol_cpu * 1000,
        "hello_ms": hello_wall * 1000,
        "hello_cpu_ms": hello_cpu * 1000,
    }


def measure(db: str, count: int) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for label, batch in (("one by one", 1), ("batched", bridge_module.BATCH_MAX)):
        name, url = private_postgres() if db == "postgresql" else (None, None)
        try:
            runs[label] = one_run(url, count, batch)
        finally:
            if name is not None:
                drop_postgres(name)
    return {"db": db, "nodes": count, "batch_max": bridge_module.BATCH_MAX, **runs}


def table(result: dict[str, Any]) -> str:
    one, batched = result["one by one"], result["batched"]
    lines = [
        f"{result['db']}, {result['nodes']} nodes (ms per message: wall / CPU of this process)",
        f"{'':28}{'one by one':>18}{'batched (' + str(result['batch_max']) + ')':>18}{'ratio':>8}",
    ]
    for key, label in (("enrol", "enrolment"), ("hello", "hello, next connection")):
        a = f"{one[key + '_ms']:.2f} / {one[key + '_cpu_ms']:.2f}"
        b = f"{batched[key + '_ms']:.2f} / {batched[key + '_cpu_ms']:.2f}"
        lines.append(f"{label:28}{a:>18}{b:>18}{batched[key + '_ms'] / one[key + '_ms']:>8.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3000, help="nodes enrolled in each run (default 3000)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    results = [measure(db, args.nodes) for db in (("sqlite", "postgresql") if args.db == "both" else (args.db,))]
    print(json.dumps(results, indent=2) if args.output == "json" else "\n\n".join(table(r) for r in results))


if __name__ == "__main__":
    main()
