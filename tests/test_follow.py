"""control.cli.follow against a real server and real agents: success, failure, timeout, a dropped stream."""

from __future__ import annotations

import io
import threading
import time

from control.cli import follow
from control.cli.follow import (
    FollowResult,
    follow_tasks,
    follow_volume,
    report,
)
from control.client import Client
from tests.helpers import wait_until
from tests.test_events import db_path, insert_events


def client_for(stack) -> Client:
    return Client(stack.server.url, token=stack.cli.token)


def probe(client: Client, node: str, path: str, io_seconds: float = 0) -> str:
    return client.post(f"/api/v1/clusters/default/nodes/{node}/probe", {"path": path, "io_seconds": io_seconds})["id"]


def test_follow_tasks(stack):
    agents = {n: stack.agent(n) for n in ("node1", "node2")}
    wait_until(
        lambda: stack.node_state("node1") == "Online" and stack.node_state("node2") == "Online", what="two nodes Online"
    )
    client = client_for(stack)

    # success on two nodes at once, plain lines when not a terminal
    out = io.StringIO()
    # node1 runs long enough (3 s) that the follower sees it RUNNING even on a loaded machine;
    # a state that came and went before the stream connected is rightly not shown
    ids = [probe(client, "node1", "/tmp", 3), probe(client, "node2", "/tmp", 1)]
    result = follow_tasks(client, ids, timeout=30, out=out)
    assert result.ok and result.used_stream and result.exit_code == 0, (result, out.getvalue())
    assert {t["state"] for t in result.tasks.values()} == {"DONE"}
    text = out.getvalue()
    assert "node1 node.probe: RUNNING" in text and "node2 node.probe: DONE" in text, text

    # failure: the reason and its fix, exit code 1
    out = io.StringIO()
    bad = probe(client, "node1", "/no/such/dir")
    result = follow_tasks(client, [bad], timeout=30, out=out)
    assert not result.ok and not result.timed_out and result.exit_code == 1
    assert "ENOENT" in result.failures[0] and "fix:" in result.failures[0]
    err = io.StringIO()
    assert report(result, err) == 1 and "error: node1: ENOENT" in err.getvalue()

    # timeout: a task for an Unreachable node waits QUEUED
    agents["node2"].kill9()
    wait_until(lambda: stack.node_state("node2") == "Unreachable", what="node2 Unreachable")
    queued = probe(client, "node2", "/tmp")
    t0 = time.monotonic()
    result = follow_tasks(client, [queued], timeout=1.5, out=io.StringIO())
    assert result.timed_out and result.exit_code == 2 and time.monotonic() - t0 < 5
    assert "QUEUED" in result.failures[-1]

    # the stream drops mid-way (server restart): reconnect / polling still sees the end
    agents["node2"].start()
    slow = probe(client, "node1", "/tmp", 3)
    box: dict[str, FollowResult] = {}
    out = io.StringIO()
    follower = threading.Thread(target=lambda: box.setdefault("r", follow_tasks(client, [slow], timeout=60, out=out)))
    follower.start()
    wait_until(lambda: "RUNNING" in out.getvalue(), what="the slow probe RUNNING")
    stack.server.stop()
    stack.server.start()
    follower.join(timeout=60)
    assert box["r"].ok, (box["r"], out.getvalue())
    assert box["r"].tasks[slow]["state"] == "DONE"
    assert "event stream lost" in out.getvalue()
    assert queued in {t["id"] for t in client.get("/api/v1/tasks")}  # node2's task ran when it returned
    wait_until(lambda: client.get(f"/api/v1/tasks/{queued}")["state"] == "DONE", what="the queued task DONE")


def test_follow_volume_from_events(stack, monkeypatch):
    """Volume states arrive as events (written straight into the database here)."""
    client = client_for(stack)
    streams: list[follow.StreamReader] = []

    class WatchedStream(follow.StreamReader):
        def start(self) -> None:
            streams.append(self)
            super().start()

    monkeypatch.setattr(follow, "StreamReader", WatchedStream)
    box: dict[str, FollowResult] = {}
    out = io.StringIO()
    follower = threading.Thread(
        target=lambda: box.setdefault("r", follow_volume(client, "default", "vol1", {"Started"}, timeout=30, out=out))
    )
    follower.start()
    wait_until(lambda: streams and streams[0].connected.is_set(), what="the follower's event stream connected")
    insert_events(
        db_path(stack),
        [
            ("default", "volume.state", "vol1", {"state": "Starting"}),
            ("default", "brick.state", "vol1:node1:/b1", {"state": "Online"}),
            ("other", "volume.state", "vol1", {"state": "StartFailed"}),
            ("default", "volume.state", "vol1", {"state": "Started"}),
        ],
    )
    follower.join(timeout=30)
    assert box["r"].ok and box["r"].volume_state == "Started", out.getvalue()
    assert "volume vol1: Starting" in out.getvalue() and "brick node1:/b1: Online" in out.getvalue()

    out = io.StringIO()
    threading.Timer(
        0.5, insert_events, args=(db_path(stack), [("default", "volume.state", "vol2", {"state": "StopFailed"})])
    ).start()
    result = follow_volume(client, "default", "vol2", {"Stopped"}, timeout=30, out=out)
    assert not result.ok and result.exit_code == 1 and result.volume_state == "StopFailed"
