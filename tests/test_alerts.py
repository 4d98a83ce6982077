"""Alerts: the evaluation rules, the stored lifecycle and its events, migration 11, the REST/CLI surfaces,
the metric, and the retained monitoring topics followed by a read-only MQTT user while a brick dies."""

from __future__ import annotations

import pytest

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
from control.services.health import Health

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
