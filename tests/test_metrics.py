"""GET /metrics on a real server: gluster-prometheus's families with a cluster label, the control
plane's own, a killed brick seen by the scrape, and the metrics token."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Proc, Server, free_port, wait_until

Labels = frozenset[tuple[str, str]]


def scrape(url: str, token: str | None = None) -> dict[str, dict[Labels, float]]:
    """Every sample of one scrape: sample name -> {labels: value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def one(samples: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    """The value of the single sample of ``name`` whose labels include ``labels``."""
    found = [v for k, v in samples.get(name, {}).items() if set(labels.items()) <= k]
    assert len(found) == 1, f"{name}{labels}: {found} in {samples.get(name)}"
    return found[0]


def brick_volume(st, name: str = "gv") -> list[str]:
    """A replica 2 volume with both bricks on node n1 (one agent is enough for the scrape)."""
    (st.tmp / "bricks").mkdir(exist_ok=True)
    st.agent("n1")
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    bricks = [str(st.tmp / "bricks" / f"{name}-{i}") for i in range(2)]
    st.cli.run("volume", "create", name, "--replica", "2", *[f"n1:{b}" for b in bricks], "--force", "--wait")
    return bricks


def test_metrics_of_a_real_volume_and_a_killed_brick(stack):
    st = stack
    bricks = brick_volume(st)
    url = st.server.url
    total = (fs := os.statvfs(st.tmp)).f_blocks * fs.f_frsize

    def healthy_with_capacity():
        m = scrape(url)
        bytes_total = m.get("gluster_brick_capacity_bytes_total", {})
        return len(bytes_total) == 2 and m if m.get("glusterctl_volume_health") else None

    m = wait_until(healthy_with_capacity, what="both bricks' capacity scraped")
    v = {"cluster": "default", "volume": "gv"}
    for path in bricks:
        assert one(m, "gluster_brick_up", hostname="n1", brick_path=path, **v) == 1
        labels = {"host": "n1", "brick_path": path, "subvolume": "gv-replicate-0", **v}
        assert one(m, "gluster_brick_capacity_bytes_total", **labels) == total
        used = one(m, "gluster_brick_capacity_used_bytes", **labels)
        assert used > 0 and used + one(m, "gluster_brick_capacity_free_bytes", **labels) == total
        inodes = one(m, "gluster_brick_inodes_total", **labels)
        assert one(m, "gluster_brick_inodes_used", **labels) + one(m, "gluster_brick_inodes_free", **labels) == inodes
    assert one(m, "gluster_subvol_capacity_total_bytes", subvolume="gv-replicate-0", **v) == total
    assert one(m, "gluster_subvol_capacity_used_bytes", subvolume="gv-replicate-0", **v) > 0
    assert one(m, "glusterctl_volume_capacity_bytes_total", **v) == total
    assert one(m, "gluster_volume_brick_count", **v) == 2
    assert one(m, "gluster_volume_up", **v) == 1
    assert one(m, "glusterctl_volume_health", health="Healthy", **v) == 1
    assert one(m, "glusterctl_volume_health", health="Degraded", **v) == 0
    assert one(m, "gluster_volume_total_count", cluster="default") == 1
    assert one(m, "gluster_volume_started_count", cluster="default") == 1
    assert one(m, "glusterctl_nodes", cluster="default", state="Online") == 1
    assert one(m, "glusterctl_nodes", cluster="default", state="Unreachable") == 0
    assert one(m, "glusterctl_node_up", cluster="default", node="n1") == 1
    assert one(m, "glusterctl_agents_connected", cluster="default") == 1
    assert one(m, "glusterctl_tasks", cluster="default", kind="volume.start", state="DONE") == 1
    assert one(m, "glusterctl_task_duration_seconds_count", kind="volume.create") == 1
    assert one(m, "glusterctl_task_duration_seconds_bucket", kind="volume.create", le="+Inf") == 1
    assert one(m, "glusterctl_heartbeats_received_total") > 0
    assert one(m, "glusterctl_heartbeats_dropped_total") == 0
    assert one(m, "glusterctl_event_stream_clients") == 0
    assert one(m, "glusterctl_mqtt_connected") == 1

    # kill a brick and take its directory away, so the agent's restarts fail: the scrape sees it down
    victim = st.cli.json("volume", "status", "gv")["bricks"][1]
    hidden = Path(bricks[1] + ".away")
    os.rename(bricks[1], hidden)
    os.kill(victim["pid"], signal.SIGKILL)
    m = wait_until(
        lambda: (m := scrape(url)) and one(m, "gluster_brick_up", brick_path=bricks[1], **v) == 0 and m,
        what="killed brick down in the scrape",
    )
    assert one(m, "glusterctl_volume_health", health="Degraded", **v) == 1  # replica 2: one brick serves
    assert one(m, "gluster_volume_up", **v) == 1
    assert st.cli.json("volume", "status", "gv")["health"] == "Degraded"

    os.rename(hidden, bricks[1])  # the agent's supervisor starts it again
    wait_until(
        lambda: one(scrape(url), "glusterctl_volume_health", health="Healthy", **v) == 1,
        timeout=45,
        what="brick restarted and volume Healthy again",
    )


TOKEN = "m" * 24


@pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")
def test_heal_count_from_the_latest_heal_info(stack):
    """gluster_volume_heal_count per brick, from the latest real heal info: 0 on a healthy volume; with one
    replica's brick down, the entries written meanwhile on the other one, and no series for the down brick."""
    st = stack
    (st.tmp / "bricks").mkdir()
    agents = {node: st.agent(node) for node in ("n1", "n2")}
    wait_until(lambda: all(st.node_state(n) == "Online" for n in ("n1", "n2")), what="n1 and n2 Online")
    paths = {n: str(st.tmp / "bricks" / f"hc-{n}") for n in ("n1", "n2")}
    st.cli.run("volume", "create", "hc", "--replica", "2", *[f"{n}:{p}" for n, p in paths.items()], "--force")
    wait_until(lambda: st.cli.json("volume", "status", "hc")["health"] == "Healthy", what="hc Healthy", timeout=60)
    v = {"cluster": "default", "volume": "hc"}
    assert "gluster_volume_heal_count" not in scrape(st.server.url)  # no heal info yet: unknown, not 0

    assert [b["entries"] for b in st.cli.json("volume", "heal", "hc", "info")["bricks"]] == [0, 0]
    m = scrape(st.server.url)
    for node, path in paths.items():
        assert one(m, "gluster_volume_heal_count", host=node, brick_path=path, **v) == 0

    mnt = st.tmp / "mnt-hc"
    mnt.mkdir()
    st.cli.run("mount", "hc", str(mnt))
    try:
        # n2's agent stops first, or its supervisor would start the brick again
        pid = next(b["pid"] for b in st.cli.json("volume", "status", "hc")["bricks"] if b["node"] == "n2")
        agents["n2"].stop()
        os.kill(pid, signal.SIGKILL)
        for i in range(20):
            (mnt / f"f{i:02d}").write_text(f"file {i}\n")
        info = {b["brick"]: b["entries"] for b in st.cli.json("volume", "heal", "hc", "info")["bricks"]}
        assert info[f"n1:{paths['n1']}"] >= 20 and info[f"n2:{paths['n2']}"] is None, info
        m = scrape(st.server.url)
        assert one(m, "gluster_volume_heal_count", host="n1", **v) == info[f"n1:{paths['n1']}"]
        assert not [k for k in m["gluster_volume_heal_count"] if ("host", "n2") in k]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def token_server(tmp_path):
    server = Server(tmp_path, extra=["--metrics-token", TOKEN])
    try:
        yield server.start()
    finally:
        server.stop()


def test_metrics_token(token_server):
    url = token_server.url
    refused = httpx.get(f"{url}/metrics", timeout=10)
    assert refused.status_code == 401 and "metrics token" in refused.json()["detail"]
    wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer " + "x" * 24}, timeout=10)
    assert wrong.status_code == 401
    m = scrape(url, TOKEN)
    assert one(m, "glusterctl_nodes", cluster="default", state="Online") == 0
    logged = [
        line for line in token_server.log().splitlines() if not line.startswith("===== start")
    ]  # the harness's argv
    assert not [line for line in logged if TOKEN in line]


def test_a_short_metrics_token_is_refused(tmp_path):
    server = Server(tmp_path, extra=["--metrics-token", "short"])
    server.start(wait=False)
    try:
        assert server.wait_exit(30) != 0
        assert "at least 16 characters" in server.log()
    finally:
        server.stop()


# ---- alert rules and the Grafana dashboard ------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "glusterctl.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
SCRAPE_SERIES = {"up"}  # made by Prometheus for every target, not exported


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian's prometheus package (.ci/setup does)"
    return found


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 10 rules found" in check.stdout, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges, strings, functions and
    grouping label lists left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        if match.group(2) is None and match.group(1) not in PROMQL_WORDS:
            names.add(match.group(1))
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names('sum by (le, kind) (rate(x_bucket{a="b",c=~"$v"}[5m])) / on(kind) y > bool 3') == {
        "x_bucket",
        "y",
    }
    assert metric_names("histogram_quantile(0.95, z) or vector(0)") == {"z"}


def exported_series(url: str) -> set[str]:
    """Every series name a scrape can hold, from the families' TYPE lines (also those without samples)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            names.update(
                {"counter": [f"{name}_total"], "histogram": [f"{name}_bucket", f"{name}_sum", f"{name}_count"]}.get(
                    kind, []
                )
            )
    return names


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = []
    pending = list(board["panels"])
    while pending:
        panel = pending.pop()
        pending.extend(panel.get("panels", []))
        exprs.extend(t["expr"] for t in panel.get("targets", []))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"]["query"])
            assert inner, var
            exprs.append(inner.group(1))
    return exprs


def test_dashboard_and_alerts_use_only_exported_metrics(stack):
    exported = exported_series(stack.server.url) | SCRAPE_SERIES
    queries = dashboard_queries()
    used = set().union(*(metric_names(q) for q in queries))
    assert len(queries) > 20 and {"gluster_brick_up", "glusterctl_volume_capacity_used_bytes"} <= used
    assert not used - exported, f"the dashboard reads metrics the server does not export: {used - exported}"
    rules = yaml.safe_load(RULES.read_text())
    rule_metrics = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert not rule_metrics - exported, (
        f"alert rules read metrics the server does not export: {rule_metrics - exported}"
    )
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"}
    assert titles == {"Cluster overview", "Volume capacity", "Bricks", "Nodes", "Tasks"}


# ---- a real Prometheus ----------------------------------------------------------------------------
def short_rules(dest: Path, hold: str = "2s") -> Path:
    """alerts.yml with every ``for`` shortened, for a Prometheus that scrapes and evaluates each second."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = hold
    path = dest / "alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def prometheus_alerts(url: str) -> list[dict]:
    resp = httpx.get(f"{url}/api/v1/alerts", timeout=10)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"]["alerts"])


def test_prometheus_fires_brick_down_for_a_killed_brick(stack):
    st = stack
    exe = shutil.which("prometheus")
    assert exe, "prometheus is missing: install Debian's prometheus package (.ci/setup does)"
    bricks = brick_volume(st)
    wait_until(lambda: st.cli.json("volume", "status", "gv")["health"] == "Healthy", what="gv Healthy")
    home = st.tmp / "prometheus"
    home.mkdir()
    rules = short_rules(home)
    config = home / "prometheus.yml"
    target = st.server.url.removeprefix("http://")
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [{"job_name": "glusterctl", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    prom = Proc(
        "prometheus",
        [exe, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        st.tmp / "prometheus.log",
    )  # fmt: skip
    st.procs.append(prom)  # stopped with the stack, whatever happens here
    prom.start()
    url = f"http://127.0.0.1:{port}"

    def scraped() -> bool:
        assert prom.alive(), prom.log()[-3000:]
        try:
            targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        except httpx.HTTPError:
            return False
        return bool(targets) and targets[0]["health"] == "up"

    wait_until(scraped, timeout=30, what="Prometheus scraping the control service")
    wait_until(
        lambda: httpx.get(f"{url}/api/v1/query", params={"query": "gluster_brick_up"}, timeout=5).json()["data"][
            "result"
        ],
        what="gluster_brick_up in Prometheus",
    )
    assert not [a for a in prometheus_alerts(url) if a["labels"]["alertname"] == "GlusterBrickDown"]

    hidden = Path(bricks[1] + ".away")
    os.rename(bricks[1], hidden)  # the agent cannot restart it
    victim = st.cli.json("volume", "status", "gv")["bricks"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    seen: set[str] = set()

    def brick_down_firing() -> bool:
        for alert in prometheus_alerts(url):
            if alert["labels"]["alertname"] == "GlusterBrickDown" and alert["labels"]["brick_path"] == bricks[1]:
                seen.add(alert["state"])
        return "firing" in seen

    wait_until(brick_down_firing, timeout=30, interval=0.2, what="GlusterBrickDown firing in Prometheus")
    alert = next(a for a in prometheus_alerts(url) if a["labels"]["alertname"] == "GlusterBrickDown")
    assert (
        alert["labels"] | {"severity": "critical", "cluster": "default", "volume": "gv", "hostname": "n1"}
        == alert["labels"]
    )
    assert alert["annotations"]["summary"] == f"brick n1:{bricks[1]} of volume gv is down"
    # replica 2 with one brick left still serves: Degraded, not Down
    wait_until(
        lambda: any(a["labels"]["alertname"] == "GlusterVolumeDegraded" for a in prometheus_alerts(url)),
        what="GlusterVolumeDegraded in Prometheus",
    )
    assert not [a for a in prometheus_alerts(url) if a["labels"]["alertname"] == "GlusterVolumeDown"]
    os.rename(hidden, bricks[1])
