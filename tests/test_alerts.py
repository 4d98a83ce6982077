"""Alerts: the evaluation rules, the stored lifecycle and its events, migration 11, the REST/CLI surfaces,
the metric, and the retained monitoring topics followed by a read-only MQTT user while a brick dies."""

from __future__ import annotations

import pytest

from broker.messages import Health
from control.services import alerts
from control.services.alerts import (
    AlertState,
    BrickFact,
    FailedTask,
    Kind,
    NodeFact,
    Snapshot,
    VolumeFact,
    evaluate,
)
from tests.helpers import wait_until

NOW = 1_800_000_000.0


def _vol(name="gv", health=Health.HEALTHY, percent=10.0, bricks=(), state="Started", heal=None) -> VolumeFact:
    return VolumeFact(name, state, health, percent, tuple(bricks), heal)


def kinds(snap: Snapshot) -> dict[str, str]:
    return {kind: subject for kind, subject in evaluate(snap, NOW)}


# ---- evaluation (pure) -------------------------------------------------------------------------
def test_a_healthy_cluster_has_no_alerts():
    snap = Snapshot("c", [NodeFact("n1", "Online")], [_vol(bricks=[BrickFact("n1", "/b", "Online")])])
    assert evaluate(snap, NOW) == {}


def test_unreachable_node_covers_its_bricks_and_an_offline_brick_alerts_on_its_own():
    nodes = [NodeFact("n1", "Online"), NodeFact("n2", "Unreachable")]
    bricks = [BrickFact("n1", "/b1", "Offline"), BrickFact("n2", "/b2", "Offline"), BrickFact("n1", "/b3", "Online")]
    got = evaluate(Snapshot("c", nodes, [_vol(health=Health.DOWN, bricks=bricks)]), NOW)
    assert set(got) == {
        ("node.unreachable", "n2"),
        ("brick.offline", "gv:n1:/b1"),
        ("volume.down", "gv"),
    }
    assert got[("node.unreachable", "n2")].severity.value == "critical"
    assert "n1:/b1" in got[("brick.offline", "gv:n1:/b1")].summary


def test_degraded_and_down_are_separate_kinds_and_stopped_volumes_do_not_alert():
    assert kinds(Snapshot("c", [], [_vol(health=Health.DEGRADED)])) == {"volume.degraded": "gv"}
    stopped = _vol(state="Stopped", health=None, bricks=[BrickFact("n1", "/b", "Offline")])
    assert evaluate(Snapshot("c", [NodeFact("n1", "Online")], [stopped]), NOW) == {}


@pytest.mark.parametrize(
    "percent, expected",
    [(79.9, None), (80.0, "volume.capacity-warning"), (89.99, "volume.capacity-warning"), (90.0, "volume.capacity-critical"), (None, None)],
)  # fmt: skip
def test_capacity_thresholds(percent, expected):
    got = [k for k, _ in evaluate(Snapshot("c", [], [_vol(percent=percent)]), NOW)]
    assert got == ([expected] if expected else [])


def test_heal_backlog_only_when_counts_are_known_and_nonzero():
    assert kinds(Snapshot("c", [], [_vol(heal=None)])) == {}
    assert kinds(Snapshot("c", [], [_vol(heal=0)])) == {}
    assert kinds(Snapshot("c", [], [_vol(heal=12)])) == {"volume.heal-backlog": "gv"}


def test_failed_task_alerts_for_a_window():
    recent = FailedTask("t1", "volume.start", "n1", "volume:gv", "BRICKEXIT: boom", NOW - 60)
    old = FailedTask("t0", "volume.start", "n1", "volume:gv", "ENOENT", NOW - alerts.FAILED_TASK_WINDOW_SECONDS - 1)
    got = evaluate(Snapshot("c", [], [], [recent, old]), NOW)
    assert list(got) == [("task.failed", "t1")]
    assert "BRICKEXIT" in got[("task.failed", "t1")].summary


def test_alert_states_have_one_transition_table():
    alerts.check_transition(AlertState.FIRING, AlertState.RESOLVED)
    with pytest.raises(alerts.IllegalTransition):
        alerts.check_transition(AlertState.RESOLVED, AlertState.FIRING)
    assert set(alerts.SEVERITY) == set(Kind)


# ---- the store: lifecycle and events ------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    from control.store import open_database

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    db = open_database(url, str(tmp_path))
    yield db
    db.close()


def test_sync_opens_resolves_and_records_each_transition(database):
    from control.store.models import Alert, Cluster, Event

    Cluster.create(name="c", join_secret="x" * 32)
    degraded = evaluate(Snapshot("c", [], [_vol(health=Health.DEGRADED)]), NOW)
    changes = alerts.sync("c", degraded, NOW)
    assert [(c.alert.kind, c.state) for c in changes] == [("volume.degraded", AlertState.FIRING)]
    assert alerts.sync("c", degraded, NOW + 1) == []  # still firing: nothing new, no second row
    assert Alert.select().count() == 1

    resolved = alerts.sync("c", {}, NOW + 5)
    assert [c.state for c in resolved] == [AlertState.RESOLVED]
    row = Alert.get()
    assert (row.state, row.since, row.until) == ("resolved", NOW, NOW + 5)
    assert alerts.list_alerts("c") == [] and len(alerts.list_alerts("c", include_resolved=True)) == 1

    again = alerts.sync("c", degraded, NOW + 10)  # it comes back: a new alert
    assert again[0].alert.id != row.id
    assert alerts.firing_counts() == {("c", "warning"): 1}
    kinds_recorded = [e.kind for e in Event.select().where(Event.kind.startswith("alert.")).order_by(Event.id)]
    assert kinds_recorded == ["alert.firing", "alert.resolved", "alert.firing"]


def test_migration_11_is_self_contained_and_idempotent(database):
    from control.store.db import _migration_11
    from control.store.models import Alert

    database.execute_sql('DROP TABLE "alert"')
    assert "alert" not in database.get_tables()
    _migration_11(database)
    _migration_11(database)
    assert "alert" in database.get_tables()
    assert Alert.select().count() == 0


# ---- a real cluster: a brick dies and comes back ------------------------------------------------
PASSWORD = "long-enough-pw"
MUST_NOT_ARRIVE_SECONDS = 1.5  # how long a refused publish is given to show up anyway


class Watcher:
    """A plain paho MQTT client that keeps the last payload of every topic it receives."""

    def __init__(self, port: int, user: str, password: str, timeout: float = 30) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.last: dict[str, bytes] = {}
        self.granted: dict[int, list] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{user}", protocol=mqtt.MQTTv311)
        self.client.username_pw_set(user, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.granted.__setitem__(mid, codes)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        try:
            wait_until(self.client.is_connected, timeout=timeout, what=f"{user} connected to the broker")
        except AssertionError:
            self.close()
            raise

    @classmethod
    def attempt(cls, port: int, user: str, password: str) -> Watcher | None:
        """A connected watcher, or None when the broker refuses the login."""
        try:
            return cls(port, user, password, timeout=5)
        except (AssertionError, ConnectionError):
            return None

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.last[msg.topic] = bytes(msg.payload)

    def subscribe(self, topic: str) -> bool:
        _, mid = self.client.subscribe(topic, qos=1)
        codes = wait_until(lambda: self.granted.get(mid), what=f"SUBACK for {topic}")
        return not codes[0].is_failure

    def json(self, topic: str) -> dict | None:
        import json

        with self.lock:
            payload = self.last.get(topic)
        return json.loads(payload) if payload else None

    def under(self, prefix: str) -> dict[str, bytes]:
        with self.lock:
            return {t: p for t, p in self.last.items() if t.startswith(prefix)}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alert_events(url: str, headers: dict, ids: set[int], timeout: float = 15.0) -> list[tuple[str, int]]:
    """The alert events of ``ids`` on the event stream, from its start, until each fired and resolved."""
    import json
    import time

    import httpx

    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    params = {"after": 0, "kind": "alert.", "heartbeat": 0.2}
    with httpx.stream("GET", f"{url}/api/v1/events", params=params, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if str(event.get("kind", "")).startswith("alert.") and event["data"]["id"] in ids:
                    seen.append((event["kind"], event["data"]["id"]))
            if len(seen) >= 2 * len(ids) or time.monotonic() > deadline:
                break
    return seen


def test_a_read_only_user_follows_a_brick_that_dies_and_comes_back(stack):
    import json
    import os
    import signal
    from pathlib import Path

    import httpx

    from broker.topics import Topics
    from tests.test_metrics import brick_volume, one, scrape

    st = stack
    cli = st.cli
    bricks = brick_volume(st)
    cli.run("cluster", "add", "other")
    made = cli.api("POST", "/api/v1/users", json={"name": "watch", "password": PASSWORD, "admin": False})
    assert made.status_code == 201, made.text
    granted = cli.api("POST", "/api/v1/users/watch/grants", json={"role": "viewer", "cluster": "default"})
    assert granted.status_code == 201, granted.text
    login = httpx.post(f"{st.server.url}/api/v1/login", json={"username": "watch", "password": PASSWORD})
    viewer = {"Authorization": f"Bearer {login.json()['token']}"}

    t = Topics()
    status, summary = t.volume_status("default", "gv"), t.cluster_summary("default")
    alerts_prefix = t.alert("default", "")
    watcher = Watcher(st.server.mqtt_port, "watch", PASSWORD)
    try:
        for topic in t.monitoring_filters("default"):
            assert watcher.subscribe(topic), topic
        # another cluster's topics, or every cluster's, are refused
        assert not watcher.subscribe(t.cluster_summary("other"))
        assert not watcher.subscribe(t.volume_status("+", "+"))
        assert not watcher.subscribe(f"{t.base}/#")

        healthy = wait_until(
            lambda: (s := watcher.json(status)) and s["health"] == "Healthy" and s["size"] and s,
            what="the volume's retained status, Healthy with its capacity",
        )
        assert (healthy["state"], healthy["bricks_up"], healthy["bricks_total"]) == ("Started", 2, 2)
        assert 0 < healthy["used"] < healthy["size"] and healthy["free"] == healthy["size"] - healthy["used"]
        first = wait_until(lambda: watcher.json(summary), what="the cluster summary")
        assert first["volumes_by_health"]["Healthy"] == 1 and first["alerts_firing"] == {"warning": 0, "critical": 0}
        assert cli.json("alert", "list") == []

        # kill a brick and take its directory away, so the agent's restarts fail until it is back
        victim = cli.json("volume", "status", "gv")["bricks"][1]
        hidden = Path(bricks[1] + ".away")
        os.rename(bricks[1], hidden)
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(
            lambda: (s := watcher.json(status)) and s["health"] == "Degraded" and s["bricks_up"] == 1,
            what="the volume's status Degraded",
        )

        def firing_kinds() -> dict[str, dict]:
            found = {}
            for payload in watcher.under(alerts_prefix).values():
                if payload:
                    alert = json.loads(payload)
                    found[alert["kind"]] = alert
            return found

        alerts_seen = wait_until(
            lambda: (k := firing_kinds()) and {"volume.degraded", "brick.offline"} <= set(k) and k,
            what="the volume.degraded and brick.offline alerts on MQTT",
        )
        degraded = alerts_seen["volume.degraded"]
        assert (degraded["severity"], degraded["subject"], degraded["state"]) == ("warning", "gv", "firing")
        assert alerts_seen["brick.offline"]["subject"] == f"gv:n1:{bricks[1]}"
        assert alerts_seen["brick.offline"]["severity"] == "critical"
        ids = {a["id"] for a in alerts_seen.values()}
        wait_until(
            lambda: (
                (s := watcher.json(summary))
                and s["alerts_firing"]["warning"] >= 1
                and s["volumes_by_health"]["Degraded"] == 1
            ),
            what="the summary counting the alert",
        )

        # the same alerts through REST (a cluster viewer), the CLI, and /metrics
        listed = httpx.get(f"{st.server.url}/api/v1/alerts", headers=viewer).json()
        assert {a["id"] for a in listed if a["kind"] in alerts_seen} == ids
        assert {a["kind"] for a in cli.json("alert", "list", "-c", "default")} >= {"volume.degraded", "brick.offline"}
        assert "volume.degraded" in cli.run("alert", "list").stdout
        m = scrape(st.server.url)
        assert one(m, "glusterctl_alerts_firing", cluster="default", severity="warning") >= 1
        assert one(m, "glusterctl_alerts_firing", cluster="other", severity="critical") == 0

        # the brick comes back: Healthy again, and each alert's retained topic is cleared
        os.rename(hidden, bricks[1])
        wait_until(
            lambda: (s := watcher.json(status)) and s["health"] == "Healthy" and s["bricks_up"] == 2,
            timeout=45,
            what="the volume's status Healthy again",
        )
        wait_until(
            lambda: all(watcher.under(t.alert("default", str(i))).get(t.alert("default", str(i))) == b"" for i in ids),
            what="the resolved alerts' topics cleared",
        )
        assert cli.json("alert", "list") == []
        resolved = {a["id"]: a for a in cli.json("alert", "list", "--all")}
        assert all(resolved[i]["state"] == "resolved" and resolved[i]["until"] >= resolved[i]["since"] for i in ids)

        # each transition was an event on the stream
        transitions = alert_events(st.server.url, viewer, ids)
        assert {(kind, i) for kind, i in transitions} == {
            (k, i) for i in ids for k in ("alert.firing", "alert.resolved")
        }

        # a read-only user cannot publish: its message is not delivered, even back to itself
        fake = t.alert("default", "999999")
        watcher.client.publish(fake, b'{"kind": "fake"}', qos=1, retain=True)
        with pytest.raises(AssertionError):
            wait_until(lambda: fake in watcher.last, timeout=MUST_NOT_ARRIVE_SECONDS, what="a refused publish")

        # revoking the viewer's grant cuts its live MQTT session, and it cannot log in again
        revoked = cli.api("DELETE", "/api/v1/users/watch/grants", params={"role": "viewer", "cluster": "default"})
        assert revoked.status_code == 204, revoked.text
        wait_until(lambda: not watcher.client.is_connected(), what="the revoked viewer's MQTT session closed")
        again = Watcher.attempt(st.server.mqtt_port, "watch", PASSWORD)
        assert again is None, "a user without any grant logged in to the broker"
    finally:
        watcher.close()
