"""Size and cost of a cluster's signed metadata document (control/services/metadata.py) at fleet scale.

Builds a cluster of synthetic nodes in a private SQLite database (each node with a host name, an
address, a 32-hex agent id and the 64-hex verifier of its credential, as enrolment writes them;
one device per node; replica-3 volumes over the nodes' devices), then reads, signs and verifies
its document the way the control service and the agents do, and prints the sizes: the JSON
text, the document as sent (zlib, base64), the whole payload published, next to the limits.

    .venv/bin/python bench/metadata_size.py --nodes 10000 --volumes 100 [-o json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.messages import MAX_PAYLOAD_BYTES, METADATA_MAX_BYTES, decode_metadata


def populate(cluster_name: str, nodes: int, volumes: int, bricks_per_volume: int = 30) -> None:
    """Add ``nodes`` synthetic nodes (one device each) and ``volumes`` replica-3 volumes to the cluster
    ``cluster_name`` of the open database, and raise its metadata version once."""
    from control.store.models import Brick, Cluster, Device, Node, Volume
    from control.store.models import database_proxy as db

    cluster = Cluster.get(Cluster.name == cluster_name)
    now = time.time()
    names = [f"gluster-{i:05d}.rack{i // 40:03d}.dc1.example.net" for i in range(nodes)]
    node_rows = [
        {
            "cluster": cluster.id,
            "name": name,
            "state": "Unreachable",  # not Online: nothing sweeps them
            "agent_id": uuid.uuid4().hex,
            "epoch": 1,
            "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            "hostname": name,
            "credential_hash": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
            "facts": {},
            "created_at": now - i,
        }
        for i, name in enumerate(names)
    ]
    device_rows = [
        {
            "cluster": cluster.id,
            "node_name": name,
            "path": "/exports/data1",
            "device": "/dev/sdb",
            "state": "Ready",
            "total_bytes": 8 * 2**40,
            "free_bytes": 8 * 2**40 - i * 2**30,
            "created_at": now - i,
        }
        for i, name in enumerate(names)
    ]
    with db.atomic():
        for start in range(0, nodes, 500):
            Node.insert_many(node_rows[start : start + 500]).execute()
            Device.insert_many(device_rows[start : start + 500]).execute()
        devices = {d.node_name: d.id for d in Device.select().where(Device.cluster == cluster)}
        for v in range(volumes):
            volume = Volume.create(
                id=str(uuid.uuid4()),
                cluster=cluster,
                name=f"vol{v:04d}",
                type="Replicate" if bricks_per_volume == 3 else "Distributed-Replicate",
                replica=3,
                state="Started",
                stable_state="Started",
                options={"performance.quick-read": "off", "cluster.min-free-disk": "10%"},
                auth_username=uuid.uuid4().hex,
                auth_password=uuid.uuid4().hex,
                size_bytes=bricks_per_volume // 3 * 2**40,
            )
            Brick.insert_many(
                {
                    "volume": volume.id,
                    "index": b,
                    "node_name": names[(v * bricks_per_volume + b) % nodes],
                    "path": f"/exports/data1/vol{v:04d}/brick",
                    "port": 49152 + v,
                    "device": devices[names[(v * bricks_per_volume + b) % nodes]],
                    "state": "Online",
                    "pid": 10000 + b,
                }
                for b in range(bricks_per_volume)
            ).execute()
        Cluster.update(metadata_version=Cluster.metadata_version + 1).where(Cluster.id == cluster.id).execute()


def measure(nodes: int, volumes: int, bricks_per_volume: int) -> dict[str, Any]:
    from control.services import clusters, metadata
    from control.store import open_database

    tmp = tempfile.mkdtemp(prefix="glusterctl-metadata-")
    try:
        db = open_database(None, tmp)
        clusters.ensure_default()
        populate("default", nodes, volumes, bricks_per_volume)
        key = metadata.load_or_create_key(tmp)
        t0 = time.perf_counter()
        document = metadata.current("default")
        assert document is not None
        t1 = time.perf_counter()
        envelope = metadata.sign(document, key)
        payload = envelope.model_dump_json().encode()
        t2 = time.perf_counter()
        verified = metadata.verify(envelope, metadata.public_key_text(key))
        t3 = time.perf_counter()
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert len(verified["nodes"]) == nodes
    return {
        "nodes": nodes,
        "volumes": volumes,
        "bricks": volumes * bricks_per_volume,
        "json_bytes": len(decode_metadata(envelope).encode()),
        "encoding": envelope.encoding.value or "plain",
        "document_bytes": len(envelope.document),
        "payload_bytes": len(payload),
        "limit_bytes": METADATA_MAX_BYTES,
        "other_payloads_limit_bytes": MAX_PAYLOAD_BYTES,
        "read_seconds": t1 - t0,
        "sign_seconds": t2 - t1,
        "verify_seconds": t3 - t2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--bricks-per-volume", type=int, default=30)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args()
    r = measure(args.nodes, args.volumes, args.bricks_per_volume)
    if args.output == "json":
        print(json.dumps(r, indent=2))
        return
    kib = 1024
    rows = [
        ("JSON text", f"{r['json_bytes'] / kib:.1f} KiB"),
        (f"document as sent ({r['encoding']})", f"{r['document_bytes'] / kib:.1f} KiB"),
        ("payload published", f"{r['payload_bytes'] / kib:.1f} KiB (limit {r['limit_bytes'] / kib:.0f} KiB)"),
        ("read / sign / verify", f"{r['read_seconds']:.2f} / {r['sign_seconds']:.2f} / {r['verify_seconds']:.2f} s"),
    ]
    print(f"{r['nodes']} nodes, {r['volumes']} volumes, {r['bricks']} bricks")
    for label, value in rows:
        print(f"{label:<26}{value}")


if __name__ == "__main__":
    main()
