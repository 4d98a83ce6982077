"""How many agent heartbeats per second the control service persists, per database.

Runs the real heartbeat path (check the epoch and what changed; a heartbeat that changes nothing
but the time is kept and written with the other nodes' in one statement, as the bridge's sweeper
does every second; any other updates the node and its bricks in one transaction) against SQLite
and, when reachable, PostgreSQL, and compares it with a baseline measured in the same run on the same database: a bare single-row UPDATE per
heartbeat. The ratio says what the heartbeat logic costs on top of the database's own speed;
heartbeats/s divided by 1/interval says how many nodes one control service can follow
(10 s interval: nodes = 10 x heartbeats/s).

    .venv/bin/python bench/heartbeat_ingest.py [--nodes 200] [--beats 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from broker.messages import BrickReport, Heartbeat, NodeFacts
from control.services import clusters, nodes
from control.store import open_database
from control.store.models import Brick, Node, Volume
from control.store.models import database_proxy as db

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def setup(count: int) -> tuple[list[Node], str]:
    nodes.reset_beats()
    cluster = clusters.ensure_default()
    volume = Volume.create(
        id=str(uuid.uuid4()),
        cluster=cluster,
        name="bench",
        type="distribute",
        state="Started",
        auth_username="u",
        auth_password="p",
    )
    rows = []
    for i in range(count):
        node = Node.create(
            cluster=cluster,
            name=f"node{i}",
            state="Online",
            agent_id="a" * 32,
            epoch=1,
            facts={"heartbeat_interval": 10},
        )
        Brick.create(
            volume=volume, index=i, node_name=node.name, path=f"/exports/b{i}", port=49152, state="Online", pid=1
        )
        rows.append(node)
    return rows, volume.id


def run_heartbeats(count: int, beats: int, volume_id: str) -> float:
    payloads = [
        Heartbeat(
            epoch=1,
            seq=i,
            at=time.time(),
            facts=NodeFacts(hostname=f"node{i % count}", address="10.0.0.1"),
            bricks=[BrickReport(volume_id=volume_id, index=i % count, port=49152, pid=1, online=True)],
        )
        for i in range(beats)
    ]
    start = time.perf_counter()
    for i, beat in enumerate(payloads):
        assert nodes.handle_heartbeat("default", f"node{i % count}", beat)
        if i % count == count - 1:
            nodes.flush_seen()  # the bridge's sweeper writes the kept heartbeats every second
    nodes.flush_seen()
    return beats / (time.perf_counter() - start)


def run_baseline(count: int, beats: int) -> float:
    start = time.perf_counter()
    for i in range(beats):
        with db.atomic():
            Node.update(last_seen_at=time.time()).where(Node.name == f"node{i % count}").execute()
    return beats / (time.perf_counter() - start)


def measure(label: str, url: str | None, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = open_database(url, tmp)
        try:
            _, volume_id = setup(args.nodes)
            baseline = run_baseline(args.nodes, args.beats)
            real = run_heartbeats(args.nodes, args.beats, volume_id)
        finally:
            database.close()
    print(
        f"{label:10s} heartbeats/s {real:8.0f}   baseline updates/s {baseline:8.0f}   "
        f"ratio {real / baseline:5.2f}   nodes at a 10 s interval ~{real * 10:,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--beats", type=int, default=2000)
    args = parser.parse_args()
    measure("sqlite", None, args)
    try:
        import psycopg2

        admin = psycopg2.connect(POSTGRES_ADMIN)
    except Exception as exc:  # no PostgreSQL here: SQLite alone
        print(f"postgresql skipped: {exc}".splitlines()[0])
        return
    admin.autocommit = True
    name = f"gct_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        measure("postgresql", POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}", args)
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


if __name__ == "__main__":
    main()
