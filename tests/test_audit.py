"""The audit log: every change over REST (who, what, target, result), readable by admins and on the event stream."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from control.cli.audit import parse_since
from control.cli.errors import CliError
from tests.helpers import wait_until

PASSWORD = "long-enough-pw"
SECRET_PASSWORD = "do-not-log-this-pw"


def _login(url: str, user: str, password: str = PASSWORD) -> str:
    resp = httpx.post(f"{url}/api/v1/login", json={"username": user, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class EventReader:
    """Reads one event stream in a thread: the data of every message."""

    def __init__(self, url: str, token: str, kind: str = "audit") -> None:
        self.events: list[dict] = []
        self.status = 0
        self.hello = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, token, kind), daemon=True)
        self._thread.start()
        assert self.hello.wait(10), "no hello on the event stream"

    def _run(self, url: str, token: str, kind: str) -> None:
        params = {"kind": kind, "heartbeat": 0.2}
        with httpx.stream("GET", f"{url}/api/v1/events", params=params, headers=_auth(token), timeout=30) as resp:
            self.status = resp.status_code
            for line in resp.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: hello"):
                    self.hello.set()
                elif line.startswith("data: ") and '"kind"' in line:
                    self.events.append(json.loads(line[6:]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_every_change_is_audited_and_only_admins_read_it(stack):
    url, cli = stack.server.url, stack.cli
    admin = cli.token
    for name, grant in (("viewer1", {"role": "viewer"}), ("cadmin", {"role": "admin", "cluster": "default"})):
        assert cli.api("POST", "/api/v1/users", json={"name": name, "password": PASSWORD}).status_code == 201
        assert cli.api("POST", f"/api/v1/users/{name}/grants", json=grant).status_code == 201
    viewer, cadmin = _login(url, "viewer1"), _login(url, "cadmin")

    admin_stream = EventReader(url, admin)
    admin_unfiltered = EventReader(url, admin, kind="")  # audit events only come when asked for
    viewer_stream = EventReader(url, viewer)
    cadmin_stream = EventReader(url, cadmin)
    try:
        since = time.time()
        # a change that works, one refused, one invalid, one without a token, and a failed login
        made = cli.api("POST", "/api/v1/users", json={"name": "carol", "password": SECRET_PASSWORD})
        assert made.status_code == 201
        refused = httpx.post(f"{url}/api/v1/clusters", json={"name": "prod"}, headers=_auth(viewer))
        assert refused.status_code == 403
        assert cli.api("POST", "/api/v1/clusters", json={"name": "prod"}).status_code == 201
        assert cli.api("POST", "/api/v1/clusters/prod/volumes/nope/start").status_code == 404
        assert httpx.delete(f"{url}/api/v1/clusters/prod").status_code == 401
        bad = httpx.post(f"{url}/api/v1/login", json={"username": "carol", "password": "wrong-" + SECRET_PASSWORD})
        assert bad.status_code == 401
        carol = _login(url, "carol", SECRET_PASSWORD)
        assert httpx.post(f"{url}/api/v1/logout", headers=_auth(carol)).status_code == 204

        rows = cli.api("GET", "/api/v1/audit", params={"since": since}).json()
        newest_first = [(r["actor"], r["method"], r["route"], r["status"]) for r in rows]
        assert newest_first == [
            ("carol", "POST", "/api/v1/logout", 204),
            ("carol", "POST", "/api/v1/login", 200),
            ("", "POST", "/api/v1/login", 401),
            ("", "DELETE", "/api/v1/clusters/{name}", 401),
            ("admin", "POST", "/api/v1/clusters/{name}/volumes/{volume}/start", 404),
            ("admin", "POST", "/api/v1/clusters", 201),
            ("viewer1", "POST", "/api/v1/clusters", 403),
            ("admin", "POST", "/api/v1/users", 201),
        ], newest_first
        by_status = {(r["route"], r["status"]): r for r in rows}
        start = by_status[("/api/v1/clusters/{name}/volumes/{volume}/start", 404)]
        assert start["path"] == "/api/v1/clusters/prod/volumes/nope/start"
        assert start["cluster"] == "prod" and start["params"]["path"] == {"name": "prod", "volume": "nope"}
        assert "no volume" in start["detail"]
        assert by_status[("/api/v1/clusters", 201)]["cluster"] == "prod"
        denied = by_status[("/api/v1/clusters", 403)]
        assert denied["detail"].startswith("user viewer1 needs admin") and denied["address"] == "127.0.0.1"
        assert by_status[("/api/v1/users", 201)]["params"]["body"] == {"name": "carol"}
        assert by_status[("/api/v1/login", 401)]["params"]["body"] == {"username": "carol"}
        # secrets never reach the audit table, its events or the server log
        everything = json.dumps(rows)
        assert SECRET_PASSWORD not in everything and carol not in everything
        assert SECRET_PASSWORD not in stack.server.log() and carol not in stack.server.log()

        # filters
        def actors(**params) -> list[str]:
            resp = cli.api("GET", "/api/v1/audit", params={"since": since, **params})
            assert resp.status_code == 200, resp.text
            return [r["actor"] for r in resp.json()]

        assert actors(user="viewer1") == ["viewer1"]
        assert actors(cluster="prod") == ["", "admin", "admin", "viewer1"]
        assert actors(limit=2) == ["carol", "carol"]
        assert actors(since=time.time() + 60) == []
        assert cli.api("GET", "/api/v1/audit", params={"limit": 0}).status_code == 422
        # admins only: a global viewer and a cluster admin are refused
        for token in (viewer, cadmin):
            resp = httpx.get(f"{url}/api/v1/audit", headers=_auth(token))
            assert resp.status_code == 403 and "needs admin on everything" in resp.json()["detail"]

        # the event stream: global admins get every entry as an `audit` event, nobody else any
        wait_until(lambda: len(admin_stream.events) >= len(rows), what="audit events for the admin")
        audit_ids = {e["data"]["audit_id"] for e in admin_stream.events}
        assert {r["id"] for r in rows} <= audit_ids
        event = next(e for e in admin_stream.events if e["data"]["audit_id"] == start["id"])
        assert event["kind"] == "audit" and event["cluster"] == "prod" and event["subject"] == "admin"
        assert event["data"]["status"] == 404 and event["data"]["route"] == start["route"]
        # the later GETs and their own changes are in order; give the others time to have seen them
        last = cli.api("POST", "/api/v1/clusters", json={"name": "bad name"})
        assert last.status_code == 422
        wait_until(lambda: any(e["data"]["status"] == 422 for e in admin_stream.events), what="the 422 event")
        assert viewer_stream.events == [] and cadmin_stream.events == []
        kinds = {e["kind"] for e in admin_unfiltered.events}
        assert "cluster.created" in kinds and "audit" not in kinds, kinds
        assert viewer_stream.status == 200 and cadmin_stream.status == 200
    finally:
        for reader in (admin_stream, admin_unfiltered, viewer_stream, cadmin_stream):
            reader.close()

    # the CLI
    shown = cli.json("audit", "-c", "prod", "--user", "admin", "--since", "1h")
    assert [(r["method"], r["status"]) for r in shown] == [("POST", 404), ("POST", 201)]
    table = cli.run("audit", "--user", "viewer1").stdout
    assert "viewer1" in table and "403" in table and "/api/v1/clusters" in table
    refused = cli.run("audit", "--since", "yesterday", check=False)
    assert refused.returncode == 1 and "--since 'yesterday'" in refused.stderr


def test_parse_since():
    assert parse_since("2h", now=10000.0) == 10000.0 - 7200
    assert parse_since("30m", now=10000.0) == 10000.0 - 1800
    assert parse_since("1700000000") == 1700000000.0
    for bad in ("", "soon", "-1h", "5w"):
        with pytest.raises(CliError):
            parse_since(bad)


def test_migration_9_is_self_contained_and_idempotent(tmp_path):
    from control.store import open_database
    from control.store.db import _migration_9, migrate
    from control.store.models import AuditEntry, SchemaVersion

    db = open_database(None, str(tmp_path))
    try:
        # a database migrated by a release without the audit log
        db.drop_tables([AuditEntry])
        SchemaVersion.delete().where(SchemaVersion.version == 9).execute()
        assert "audit" not in db.get_tables()
        migrate(db)
        assert "audit" in db.get_tables()
        _migration_9(db)  # again: nothing to do, nothing fails
        assert 9 in {r.version for r in SchemaVersion.select()}
    finally:
        db.close()


def test_audit_entries_are_pruned_after_keep_days(tmp_path):
    from pydantic import ValidationError

    from control.services import audit
    from control.settings import ServerSettings
    from control.store import open_database
    from control.store.models import AuditEntry

    day = 86400.0
    now = 1_800_000_000.0
    db = open_database(None, str(tmp_path))
    try:
        for age_days in (200, 91, 89, 1):
            entry = audit.record(audit.Change("admin", "127.0.0.1", "POST", "/api/v1/users", "/api/v1/users", 201))
            AuditEntry.update(at=now - age_days * day).where(AuditEntry.id == entry.id).execute()
        pruner = audit.AuditPruner(keep_days=90, every=3600)
        assert pruner.run(now=now) == 2
        assert sorted(round((now - e.at) / day) for e in AuditEntry.select()) == [1, 89]
        # within the hour it does not prune again; later the 89-day entry, 91 days old by then, goes
        assert pruner.run(now=now + 1800) is None
        assert pruner.run(now=now + 2 * day) == 1
        assert [round((now - e.at) / day) for e in AuditEntry.select()] == [1]
        with pytest.raises(ValidationError, match="from 1 to 36500"):
            ServerSettings(data_dir=str(tmp_path), audit_keep_days=0)
        assert ServerSettings(data_dir=str(tmp_path)).audit_keep_days == audit.KEEP_DAYS
    finally:
        db.close()
