"""``glusterctl backup`` / ``glusterctl restore``: one portable file, SQLite and PostgreSQL, checked on both sides."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from tests.helpers import BIN, Server, wait_until
from tests.test_recovery import _differences, _without_times


@pytest.fixture
def store(tmp_path):
    from control.services import clusters
    from control.store import open_database

    db = open_database(None, str(tmp_path / "src"))
    clusters.ensure_default()
    yield db
    db.close()


def _fill() -> None:
    from control.services import clusters, users
    from tests.test_recovery import _enrol

    cluster = clusters.add("c1")
    _enrol(cluster, "n1")
    admin = users.create_user("boss", "correct-horse-battery", admin=True)
    users.create_user("viewer1", "correct-horse-battery", actor=admin)
    users.grant("viewer1", "viewer", cluster, "cluster", "", admin)
    users.login("boss", "correct-horse-battery")


def test_a_backup_restores_across_databases_and_bad_files_and_targets_are_refused(store, tmp_path, postgres_url):
    from control.services import backup, metadata
    from control.store import models as m

    _fill()
    metadata.load_or_create_key(str(tmp_path / "src"))
    body = backup.make(store, str(tmp_path / "src"), "boss", "test")
    assert body["schema_version"] == max(body["migrations"]) and body["counts"]["user"] == 2
    assert body["counts"]["api_token"] == 1 and body["counts"]["node"] == 1
    assert set(body["files"]) == {"metadata.key"}
    path = tmp_path / "b.json"
    backup.write_file(str(path), backup.dumps(body))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(backup.BackupError, match="exists: give a new file name"):
        backup.write_file(str(path), b"x")
    original = backup.load(str(path))["tables"]

    # SQLite -> PostgreSQL -> SQLite: every row as it was
    backup.restore(backup.load(str(path)), postgres_url, str(tmp_path / "pg"))
    key = tmp_path / "pg" / "metadata.key"
    assert (
        key.read_bytes() == (tmp_path / "src" / "metadata.key").read_bytes()
        and stat.S_IMODE(key.stat().st_mode) == 0o600
    )
    again = backup.make(m.database_proxy, None, "boss", "test")
    assert again["database"] == "postgresql" and again["tables"] == original
    backup.restore(again, None, str(tmp_path / "sqlite2"))
    assert backup.make(m.database_proxy, None, "boss", "test")["tables"] == original
    m.User.create(name="late", password_hash="x")  # ids continue after the restored ones (no clash)

    # a non-empty target is refused, and left as it was
    with pytest.raises(backup.BackupError, match=r"is not empty \(3 rows in user.*only into an empty database"):
        backup.restore(backup.load(str(path)), None, str(tmp_path / "sqlite2"))
    with pytest.raises(backup.BackupError, match="is not empty"):
        backup.restore(backup.load(str(path)), postgres_url, str(tmp_path / "pg-again"))

    # a tampered file, a count that lies, a brick without its volume, a newer schema
    tampered = json.loads(path.read_text())
    tampered["tables"]["user"][0]["is_admin"] = not tampered["tables"]["user"][0]["is_admin"]
    with pytest.raises(backup.BackupError, match="checksum does not match"):
        backup.check(tampered)
    cases = {
        "counts": ("count says", lambda b: b["counts"].update(node=5)),
        "dangling": (
            "references are broken: node 1: its cluster 99 is missing",
            lambda b: b["tables"]["node"][0].update(cluster=99),
        ),
        "newer": (
            "newer than this glusterctl",
            lambda b: b.update(schema_version=999, migrations=[*b["migrations"], 999]),
        ),
    }
    for name, (message, spoil) in cases.items():
        bad = json.loads(path.read_text())
        spoil(bad)
        bad["checksum"] = backup.checksum(bad)
        with pytest.raises(backup.BackupError, match=message):
            backup.check(bad)
        with pytest.raises(backup.BackupError, match=message):
            backup.restore(bad, None, str(tmp_path / f"never-{name}"))
        assert not (tmp_path / f"never-{name}").exists()


def test_backup_check_and_restore_commands_say_what_is_wrong(tmp_path):
    import subprocess

    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "glusterctl-backup", "tables": ')
    out = subprocess.run([BIN, "backup", "--check", str(damaged)], capture_output=True, text=True)
    assert out.returncode == 1 and "not JSON: truncated or damaged" in out.stderr
    out = subprocess.run(
        [BIN, "restore", str(damaged), "--data-dir", str(tmp_path / "d")], capture_output=True, text=True
    )
    assert out.returncode == 1 and "not a glusterctl backup" in out.stderr
    out = subprocess.run([BIN, "backup", "--help"], capture_output=True, text=True)
    assert "mode 0600" in " ".join(out.stdout.split())


# ---- a running server with real bricks, restored into SQLite and into PostgreSQL -------------------
def _views(st) -> dict:
    return _without_times(
        {
            "volumes": st.cli.json("volume", "list"),
            "info": st.cli.json("volume", "info", "vb"),
            "nodes": st.cli.json("node", "list"),
        }
    )


def _kept_version(st, node: str) -> int:
    from agent.metadata import MetadataStore

    newest = MetadataStore(str(st.tmp / f"agent-{node}"), "default").newest()
    return newest.version if newest is not None else 0


def _pids(st) -> list:
    return [(b["pid"], b["port"]) for b in st.cli.json("volume", "status", "vb")["bricks"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and need root")
def test_a_running_servers_backup_restores_into_sqlite_and_postgresql(stack, tmp_path, postgres_url):
    from tests.test_volumes import brick, wait_bricks

    st = stack
    for node in ("n1", "n2"):
        st.agent(node)
        (st.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(st.node_state(n) == "Online" for n in ("n1", "n2")), what="nodes Online")
    st.cli.run("volume", "create", "vb", *[brick(st, n, "vb") for n in ("n1", "n2")], "--wait")
    st.cli.run("volume", "set", "vb", "read-only", "on")
    wait_bricks(st, "vb", "Online")
    before, pids = _views(st), _pids(st)

    file = tmp_path / "backup.json"
    out = st.cli.run("backup", str(file))  # through REST, from the running server
    assert "mode 0600" in out.stdout and stat.S_IMODE(file.stat().st_mode) == 0o600
    assert (
        st.cli.run("backup", "--check", str(file))
        .stdout.strip()
        .endswith(f"OK ({json.loads(file.read_text())['checksum']})")
    )
    audit = st.cli.json("audit", "--limit", "5")
    assert any(e["route"] == "/api/v1/backup" and e["actor"] == "admin" and e["status"] == 200 for e in audit), audit
    offline = tmp_path / "offline.json"
    st.cli.run("backup", "--data-dir", str(st.server.data_dir), str(offline))  # read directly, server running
    metadata = ("cluster", "node", "device", "volume", "brick", "user", "api_token")  # not the audit and events
    counts = [{k: json.loads(f.read_text())["counts"][k] for k in metadata} for f in (offline, file)]
    assert counts[0] == counts[1]
    refused = st.cli.run("backup", str(file), check=False)
    assert refused.returncode == 1 and "exists: give a new file name" in refused.stderr

    # a change after the backup: the agents keep a newer metadata version than the backup's
    st.cli.run("user", "create", "late", "--password-stdin", input="correct-horse-late\n")
    st.cli.run("user", "grant", "late", "viewer", "-c", "default")
    wait_until(
        lambda: all(
            _kept_version(st, n) > json.loads(file.read_text())["tables"]["cluster"][0]["metadata_version"]
            for n in ("n1", "n2")
        ),
        timeout=20,
        what="the agents keep the post-backup metadata",
    )
    lost = st.server
    lost.stop()
    targets = {
        "sqlite": (["--data-dir", str(tmp_path / "sqlite")], []),
        "postgresql": (["--data-dir", str(tmp_path / "pg"), "--db", postgres_url], ["--db", postgres_url]),
    }
    for kind, (where, db) in targets.items():
        stale = max(_kept_version(st, n) for n in ("n1", "n2"))  # newer than the backup's
        started = time.monotonic()
        out = st.cli.run("restore", str(file), *where)
        assert "restore: done" in out.stdout and "1 volumes, 2 bricks, 1 users" in out.stdout, out.stdout
        again = st.cli.run("restore", str(file), *where, check=False)
        assert (
            again.returncode == 1 and "is not empty" in again.stderr and "only into an empty database" in again.stderr
        )
        argv = [a for a in lost.argv if a != str(lost.data_dir)]
        argv[argv.index("--data-dir") + 1 : argv.index("--data-dir") + 1] = [where[1]]
        restored_at = time.time()
        server = Server(st.tmp)
        server.http_port, server.mqtt_port, server.url = lost.http_port, lost.mqtt_port, lost.url
        server.argv = [*argv, *db]
        st.procs.append(server)
        st.server = server
        server.start()
        # the users and tokens came back: the CLI's login still works; the agents log in with their own credentials
        wait_until(
            lambda: all(
                n["state"] == "Online" and n["last_seen_at"] > restored_at for n in st.cli.json("node", "list")
            ),
            timeout=30,
            what=f"agents back on the server restored into {kind}",
        )
        # this server moved its version past the agents' copies, so they keep its documents again
        wait_until(
            lambda: all(_kept_version(st, n) > stale for n in ("n1", "n2")),
            timeout=20,
            what="the agents keep the restored server's metadata",
        )
        after = _views(st)
        assert after == before, (kind, _differences(before, after))
        assert _pids(st) == pids, kind  # the same brick processes on the same ports
        print(f"{kind}: restored and serving in {time.monotonic() - started:.1f}s")
        server.stop()
    for node in ("n1", "n2"):  # the restored server signs with the lost one's key: the agents keep its documents
        log = (st.tmp / f"agent-{node}.log").read_text()
        assert "does not verify" not in log and "is pinned" not in log and "verified and kept" in log, log[-2000:]


def test_a_backup_of_an_older_schema_restores_through_the_later_migrations(store, tmp_path):
    from control.services import backup
    from control.store import models as m

    _fill()
    body = backup.make(store, None, "boss", "test")
    # as taken before migration 12 (clusters had no metadata version)
    body["migrations"] = [v for v in body["migrations"] if v != 12]
    body["schema_version"] = max(body["migrations"])
    for row in body["tables"]["cluster"]:
        del row["metadata_version"]
    body["checksum"] = backup.checksum(body)
    lines = backup.restore(body, None, str(tmp_path / "old"))
    from control.store.db import SCHEMA_VERSION

    assert f"schema version {SCHEMA_VERSION}" in lines[0]  # migration 12 ran on the restored rows
    assert sorted(c.name for c in m.Cluster.select()) == ["c1", "default"]
    assert {c.metadata_version for c in m.Cluster.select()} == {0}  # migration 12's default
    assert m.Node.get(m.Node.name == "n1").credential_hash
