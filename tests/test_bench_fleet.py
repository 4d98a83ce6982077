"""The fleet benchmarks at a small size, so that they cannot rot. bench/fleet.py: 20 simulated agents on
the embedded broker and SQLite, and on a private Mosquitto (anonymous, and with the dynamic security plugin)
and PostgreSQL; every figure present, all
agents Online (again after a reconnect storm), only the keepers receiving the metadata, nothing dropped.
bench/enrolment.py: 150 nodes on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "broker,mosquitto,db",
    [("embedded", "", "sqlite"), ("mosquitto", "private", "postgresql"), ("mosquitto", "dynsec", "postgresql")],
)
def test_fleet_bench_smoke(broker, mosquitto, db, request):
    if broker == "mosquitto":
        if not shutil.which("mosquitto"):
            pytest.skip("no mosquitto binary")
        request.getfixturevalue("postgres_url")  # skips without PostgreSQL
    argv = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--agents", "20", "--broker", broker]
    if mosquitto:
        argv += ["--mosquitto", mosquitto]
    argv += [
        "--db",
        db,
        "--duration",
        "2",
        "--heartbeat",
        "1",
        "--tasks",
        "10",
        "--frozen-keepalive",
        "2",
        "-o",
        "json",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"fleet.py exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(proc.stdout)
    assert r["storm"]["online"] == 20 and r["storm"]["seconds"] is not None, r["storm"]
    assert r["storm"]["server_cpu_seconds"] > 0, r["storm"]
    assert (r["storm"]["broker_cpu_seconds"] is not None) == (broker == "mosquitto"), r["storm"]
    if mosquitto == "dynsec":  # the run's own Mosquitto checked every login: each node has its broker user
        assert r["config"]["broker"] == "mosquitto (dynsec)", r["config"]
    assert not r["storm"]["refusals"], r["storm"]
    reconnect = r["reconnect"]  # every connection dropped at once: all back, registered and Online
    assert reconnect["agents"] == 20 and reconnect["seconds"] is not None, reconnect
    assert 0 < r["metadata"]["agents"] <= 16, r["metadata"]  # only the 16 oldest nodes keep copies
    expected = {"mqtt_messages": 0, "heartbeats": 0, **({"broker": 0} if broker == "mosquitto" else {})}
    assert r["dropped"] == expected, r["dropped"]
    held = r["held"]
    assert held["cpu_percent"] >= 0 and held["rss_mib"] > 0
    assert held["heartbeats_per_second"] > 0, held
    dispatch = r["dispatch"]
    assert dispatch["failed_count"] == 0, dispatch
    assert 0 < dispatch["p50_ms"] <= dispatch["p99_ms"], dispatch
    (frozen,) = r["frozen"]
    assert frozen["seconds"] is not None and frozen["agent_will_seconds"] is not None, frozen
    # the server's own share: from the broker sending the agent's last-will to Unreachable in the REST API
    assert frozen["seconds"] - frozen["agent_will_seconds"] <= 2.0, frozen
    if broker == "embedded":  # Mosquitto 2.0 checks keepalives every 6 s: its last-will can come past the limit
        assert frozen["seconds"] <= frozen["limit"], frozen
    base = r["baseline"]
    assert base["messages_per_second"] > 0 and base["round_trip_p50_ms"] > 0, base
    assert r["log"]["database is locked"] == 0, r["log"]


def test_enrolment_bench_smoke(request):
    """bench/enrolment.py at a small size, both databases: every node stored and answered (the bench exits
    non-zero otherwise), and each figure present and positive."""
    request.getfixturevalue("postgres_url")  # skips without PostgreSQL
    argv = [sys.executable, str(ROOT / "bench" / "enrolment.py"), "--nodes", "150", "-o", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"enrolment.py exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(proc.stdout)
    assert [r["db"] for r in results] == ["sqlite", "postgresql"]
    for result in results:
        for run in ("one by one", "batched"):
            assert set(result[run]) == {"enrol_ms", "enrol_cpu_ms", "hello_ms", "hello_cpu_ms"}
            assert all(value > 0 for value in result[run].values()), result
