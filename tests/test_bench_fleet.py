"""bench/fleet.py end to end at a small size, so that the benchmark cannot rot: 20 simulated agents on
the embedded broker and SQLite, every figure present, all agents Online, nothing dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fleet_bench_smoke():
    argv = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--agents", "20", "--broker", "embedded"]
    argv += [
        "--db",
        "sqlite",
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
    assert not r["storm"]["refusals"], r["storm"]
    assert r["dropped"] == {"mqtt_messages": 0, "heartbeats": 0}, r["dropped"]
    held = r["held"]
    assert held["cpu_percent"] >= 0 and held["rss_mib"] > 0
    assert held["heartbeats_per_second"] > 0, held
    dispatch = r["dispatch"]
    assert dispatch["failed_count"] == 0, dispatch
    assert 0 < dispatch["p50_ms"] <= dispatch["p99_ms"], dispatch
    frozen = r["frozen"]
    assert frozen["seconds"] is not None and frozen["seconds"] <= frozen["limit"], frozen
    base = r["baseline"]
    assert base["messages_per_second"] > 0 and base["round_trip_p50_ms"] > 0, base
    assert r["log"]["database is locked"] == 0, r["log"]
