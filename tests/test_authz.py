"""Roles and grants: every REST route against every role and grant, filtered lists, brick homes, MQTT monitors.

The route table below names, for each route of the application, a request and the users that
get past authorization ("anything but 403"); a route the table does not know, or one that
declares no permission, fails the test, so new routes must declare theirs.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.routing import APIRoute

from broker.paths import PathRefused, check_path
from broker.topics import Topics
from control.api.app import create_app
from control.api.deps import Permission
from control.services.tasks import TaskEngine
from tests.helpers import wait_until
from tests.mqtt_raw import RawClient

PASSWORD = "long-enough-pw"
# user -> `user grant` arguments (None: an admin made with --admin)
USERS: dict[str, list[str] | None] = {
    "root2": None,
    "gviewer": ["viewer"],
    "cviewer": ["viewer", "-c", "default"],
    "coper": ["operator", "-c", "default"],
    "cadmin": ["admin", "-c", "default"],
    "voper": ["operator", "-c", "default", "--volume", "gv1"],
    "vview": ["viewer", "-c", "default", "--volume", "gv1"],
    "noper": ["operator", "-c", "default", "--node", "n2"],
    "doper": ["operator", "-c", "default", "--device", "n1:POOL"],
    "oview": ["viewer", "-c", "other"],
    "nobody": [],
}
EVERYONE = set(USERS) | {"admin"}
ADMINS = {"admin", "root2"}
CLUSTER_ADMINS = ADMINS | {"cadmin"}
IN_DEFAULT = EVERYONE - {"oview", "nobody"}
READ_N2 = ADMINS | {"gviewer", "cviewer", "coper", "cadmin", "noper"}
OPERATE_N2 = ADMINS | {"coper", "cadmin", "noper"}
READ_GV1 = ADMINS | {"gviewer", "cviewer", "coper", "cadmin", "voper", "vview"}
OPERATE_GV1 = ADMINS | {"coper", "cadmin", "voper"}

# (method, route path) -> (concrete path, request kwargs, users allowed past authorization).
# Changing requests fail after authorization (bad parameters, conflicts) so the table can run in any order.
V = "/api/v1/clusters/default/volumes/gv1"
ROUTES: dict[tuple[str, str], tuple[str, dict, set[str]]] = {
    ("GET", "/healthz"): ("/healthz", {}, EVERYONE),
    ("GET", "/metrics"): ("/metrics", {}, EVERYONE),  # public while the server has no --metrics-token
    ("POST", "/api/v1/login"): ("/api/v1/login", {"json": {"username": "x", "password": "y"}}, EVERYONE),
    ("POST", "/api/v1/logout"): ("/api/v1/logout", {}, EVERYONE),  # with a throwaway token
    ("POST", "/api/v1/users"): ("/api/v1/users", {"json": {"name": "x1", "password": "short"}}, ADMINS),
    ("GET", "/api/v1/users"): ("/api/v1/users", {}, ADMINS),
    ("DELETE", "/api/v1/users/{name}"): ("/api/v1/users/ghost", {}, ADMINS),
    ("GET", "/api/v1/users/{name}/grants"): ("/api/v1/users/admin/grants", {}, {"admin", "root2"}),
    ("POST", "/api/v1/users/{name}/grants"): ("/api/v1/users/nobody/grants", {"json": {"role": "boss"}}, ADMINS),
    ("DELETE", "/api/v1/users/{name}/grants"): ("/api/v1/users/nobody/grants", {"params": {"role": "boss"}}, ADMINS),
    ("GET", "/api/v1/clusters"): ("/api/v1/clusters", {}, EVERYONE),
    ("POST", "/api/v1/clusters"): ("/api/v1/clusters", {"json": {"name": "bad name"}}, ADMINS),
    ("GET", "/api/v1/clusters/{name}"): ("/api/v1/clusters/default", {}, IN_DEFAULT),
    ("DELETE", "/api/v1/clusters/{name}"): ("/api/v1/clusters/default", {}, CLUSTER_ADMINS),
    ("GET", "/api/v1/clusters/{name}/token"): ("/api/v1/clusters/default/token", {}, CLUSTER_ADMINS),
    ("POST", "/api/v1/clusters/{name}/token/rotate"): ("/api/v1/clusters/other/token/rotate", {}, ADMINS),
    ("GET", "/api/v1/nodes"): ("/api/v1/nodes", {}, EVERYONE),
    ("GET", "/api/v1/clusters/{name}/nodes"): ("/api/v1/clusters/default/nodes", {}, IN_DEFAULT),
    ("GET", "/api/v1/clusters/{name}/nodes/{node}"): ("/api/v1/clusters/default/nodes/n2", {}, READ_N2),
    ("DELETE", "/api/v1/clusters/{name}/nodes/{node}"): (
        "/api/v1/clusters/default/nodes/n2",
        {"params": {"force": "maybe"}},
        CLUSTER_ADMINS,
    ),
    # without a CA of its own (no --mqtts) the server signs nothing: allowed callers get 409
    ("POST", "/api/v1/clusters/{name}/nodes/{node}/certificate"): (
        "/api/v1/clusters/default/nodes/n2/certificate",
        {"json": {"csr": "nope"}},
        CLUSTER_ADMINS,
    ),
    # a node that does not exist: allowed callers get 404, nothing changes
    ("POST", "/api/v1/clusters/{name}/nodes/{node}/reenrol"): (
        "/api/v1/clusters/default/nodes/ghost/reenrol",
        {},
        CLUSTER_ADMINS,
    ),
    ("POST", "/api/v1/clusters/{name}/nodes/{node}/probe"): (
        "/api/v1/clusters/default/nodes/n2/probe",
        {"json": {}},
        OPERATE_N2,
    ),
    ("GET", "/api/v1/tasks"): ("/api/v1/tasks", {}, EVERYONE),
    ("GET", "/api/v1/alerts"): ("/api/v1/alerts", {}, EVERYONE),  # lists only what the caller may read
    ("GET", "/api/v1/tasks/{task_id}"): ("/api/v1/tasks/GV1TASK", {}, READ_GV1 | READ_N2),
    ("POST", "/api/v1/clusters/{name}/devices"): (
        "/api/v1/clusters/default/devices",
        {"json": {"node": "n2", "path": "/etc/bricks"}},
        CLUSTER_ADMINS,
    ),
    ("GET", "/api/v1/clusters/{name}/devices"): ("/api/v1/clusters/default/devices", {}, IN_DEFAULT),
    ("DELETE", "/api/v1/clusters/{name}/devices/{node}"): (
        "/api/v1/clusters/default/devices/n1",
        {"params": {"path": "POOL/none"}},
        CLUSTER_ADMINS,
    ),
    ("POST", "/api/v1/clusters/{name}/volumes"): (
        "/api/v1/clusters/default/volumes",
        {"json": {"name": "gv9", "bricks": ["n2:/etc/gv9"], "start": False}},
        ADMINS | {"coper", "cadmin", "voper", "noper", "doper"},
    ),
    ("GET", "/api/v1/clusters/{name}/volumes"): ("/api/v1/clusters/default/volumes", {}, IN_DEFAULT),
    ("GET", "/api/v1/clusters/{name}/volumes/{volume}"): (V, {}, READ_GV1),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/start"): (f"{V}/start", {}, OPERATE_GV1),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/stop"): (f"{V}/stop", {}, OPERATE_GV1),
    ("DELETE", "/api/v1/clusters/{name}/volumes/{volume}"): (V, {"params": {"purge": "maybe"}}, OPERATE_GV1),
    ("GET", "/api/v1/clusters/{name}/volumes/{volume}/volfile"): (f"{V}/volfile", {}, OPERATE_GV1),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/reset-state"): (
        f"{V}/reset-state",
        {"json": {"force": False, "reason": "x"}},
        CLUSTER_ADMINS,
    ),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/volfiles"): (f"{V}/volfiles", {}, OPERATE_GV1),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/expand"): (
        f"{V}/expand",
        {"json": {"bricks": ["no-colon"]}},
        OPERATE_GV1,
    ),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/replace-brick"): (
        f"{V}/replace-brick",
        {"json": {"old": "no-colon", "new": "no-colon"}},
        OPERATE_GV1,
    ),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/rebalance/start"): (
        f"{V}/rebalance/start",
        {"json": {"fix_layout": "maybe"}},
        OPERATE_GV1,
    ),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/rebalance/stop"): (f"{V}/rebalance/stop", {}, OPERATE_GV1),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/rebalance/refresh"): (f"{V}/rebalance/refresh", {}, READ_GV1),
    ("GET", "/api/v1/clusters/{name}/volumes/{volume}/rebalance"): (f"{V}/rebalance", {}, READ_GV1),
    ("GET", "/api/v1/clusters/{name}/volumes/{volume}/options"): (f"{V}/options", {}, READ_GV1),
    ("GET", "/api/v1/clusters/{name}/volumes/{volume}/options/{key}"): (f"{V}/options/no-such-key", {}, READ_GV1),
    ("PUT", "/api/v1/clusters/{name}/volumes/{volume}/options"): (f"{V}/options", {"json": {"x": "1"}}, OPERATE_GV1),
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/options"): (f"{V}/options", {"json": {"x": "1"}}, OPERATE_GV1),
    ("DELETE", "/api/v1/clusters/{name}/volumes/{volume}/options"): (f"{V}/options", {}, OPERATE_GV1),
    ("DELETE", "/api/v1/clusters/{name}/volumes/{volume}/options/{key}"): (f"{V}/options/no-such-key", {}, OPERATE_GV1),
    # heal information needs viewer; an index heal (op "index") operator: see test_index_heal_needs_operator
    ("POST", "/api/v1/clusters/{name}/volumes/{volume}/heal"): (f"{V}/heal", {"json": {"op": "nonsense"}}, READ_GV1),
    ("GET", "/api/v1/clusters/{name}/volumes/{volume}/heal"): (f"{V}/heal", {}, READ_GV1),
    ("GET", "/api/v1/failures"): ("/api/v1/failures", {}, EVERYONE),
    ("GET", "/api/v1/events"): ("/api/v1/events", {}, EVERYONE),
    ("GET", "/api/v1/sessions"): ("/api/v1/sessions", {}, EVERYONE),  # one's own; admins everyone's
    ("DELETE", "/api/v1/sessions/{session_id}"): ("/api/v1/sessions/999999", {}, EVERYONE),  # others': 404
    ("GET", "/api/v1/audit"): ("/api/v1/audit", {}, ADMINS),
    ("POST", "/api/v1/backup"): ("/api/v1/backup", {}, ADMINS),  # the whole database, secrets included
}


def app_routes() -> list[APIRoute]:
    """Every API route of the application, also inside included routers (their own prefix is in their paths)."""
    out: list[APIRoute] = []
    pending = list(create_app(TaskEngine(Topics())).routes)
    while pending:
        route = pending.pop()
        inner = getattr(route, "original_router", None)  # FastAPI's included-router entry
        if inner is not None:
            pending.extend(inner.routes)
        elif isinstance(route, APIRoute):
            out.append(route)
    return out


def permission_of(route: APIRoute) -> Permission | None:
    found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Permission)]
    return found[0] if len(found) == 1 else None


def test_every_route_declares_a_permission_and_is_in_the_table():
    seen = set()
    for route in app_routes():
        assert permission_of(route) is not None, f"{route.path} declares no permission: add dependencies=[permit(...)]"
        for method in route.methods - {"HEAD"}:
            seen.add((method, route.path))
    assert seen == set(ROUTES), f"routes without a table row: {seen - set(ROUTES)}; stale rows: {set(ROUTES) - seen}"


@pytest.mark.parametrize(
    "path",
    ["/", "/etc", "/etc/x", "//etc/x", "/srv/../etc", "/usr/lib", "/lib64/x", "/libx32", "/boot", "/dev/sdb",
     "/proc/1", "/sys", "/run/x", "/var/lib/glusterctl", "/root/b", "relative"],
)  # fmt: skip
def test_system_paths_are_refused(path):
    with pytest.raises(PathRefused):
        check_path(path)


def test_allowed_paths():
    assert check_path("/srv/bricks/b1") == "/srv/bricks/b1"
    assert check_path("/data//x/") == "/data/x"
    assert check_path("/srv/lib/x") == "/srv/lib/x"  # /lib* is a top-level rule
    assert check_path("/dev/sdb", block_device=True) == "/dev/sdb"
    with pytest.raises(PathRefused):
        check_path("/srv/sdb", block_device=True)
    with pytest.raises(PathRefused):
        check_path("/srv/agent/x", state_dir="/srv/agent")


def _token(url: str, user: str) -> str:
    password = "correct-horse" if user == "admin" else PASSWORD  # the stack's first user
    resp = httpx.post(f"{url}/api/v1/login", json={"username": user, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"]


def _call(client: httpx.Client, token: str | None, method: str, path: str, kw: dict) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if path.endswith("/events"):
        with client.stream(method, path, headers=headers, **kw) as resp:
            return resp.status_code
    return client.request(method, path, headers=headers, **kw).status_code


def _names(url: str, token: str, path: str, key: str = "name") -> set[str]:
    resp = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return {row[key] for row in resp.json()}


def _events(url: str, token: str, until_cluster: str, deadline: float = 10.0) -> list[dict]:
    """The stream's replayed events, up to the first one of ``until_cluster``."""
    got: list[dict] = []
    end = time.monotonic() + deadline
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{url}/api/v1/events", params={"after": 0}, headers=headers, timeout=deadline) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"kind"' in line:
                event = json.loads(line[6:])
                got.append(event)
                if event["cluster"] == until_cluster:
                    return got
            assert time.monotonic() < end, f"no event of {until_cluster} within {deadline}s: {got}"
    return got


def test_roles_and_grants(stack):
    st = stack
    url = st.server.url
    cli = st.cli
    cli.run("cluster", "add", "other")
    for node in ("n1", "n2"):
        (st.tmp / "bricks" / node).mkdir(parents=True)
    st.agent("n1")
    n2 = st.agent("n2")
    wait_until(lambda: st.node_state("n1") == "Online" and st.node_state("n2") == "Online", what="agents Online")
    pool = str(st.tmp / "bricks" / "n1" / "pool")
    cli.run("device", "add", "n1", "--path", pool)
    wait_until(lambda: cli.json("device", "list")[0]["state"] == "Ready", what="pool Ready")
    # n2 goes away: its volumes stay Creating, so start/stop/delete answer 409 and nothing runs
    n2.stop()
    wait_until(lambda: st.node_state("n2") == "Unreachable", what="n2 Unreachable")
    for vol in ("gv1", "gv2"):
        cli.run("volume", "create", vol, f"n2:{st.tmp}/bricks/n2/{vol}", "--no-start")
    gv1_task = next(t["id"] for t in cli.json("task", "list") if t["params"].get("volume", {}).get("name") == "gv1")
    assert cli.api("GET", V).json()["state"] == "Creating"

    tokens: dict[str, str] = {"admin": cli.token}
    flags = {"-c": "cluster", "--volume": "volume", "--node": "node", "--device": "device"}
    for user, grant in USERS.items():
        made = cli.api("POST", "/api/v1/users", json={"name": user, "password": PASSWORD, "admin": grant is None})
        assert made.status_code == 201, made.text
        args = [a.replace("POOL", pool) for a in grant or []]
        if user == "doper":  # one through the CLI, the rest through REST (quicker)
            cli.run("user", "grant", user, *args)
        elif args:
            body = {"role": args[0], **{flags[k]: v for k, v in zip(args[1::2], args[2::2])}}
            assert cli.api("POST", f"/api/v1/users/{user}/grants", json=body).status_code == 201
        tokens[user] = _token(url, user)
    shown = cli.json("user", "show", "doper")
    assert shown["grants"] == [
        {"role": "operator", "scope": "device", "cluster": "default", "name": f"n1:{pool}",
         "text": f"operator on device n1:{pool} in cluster default"}
    ]  # fmt: skip

    # every route, every user: allowed (anything but 403) or refused with what is missing
    def drive(user: str | None) -> list[str]:
        wrong = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for (method, _), (path, kw, allowed) in ROUTES.items():
                path = path.replace("GV1TASK", gv1_task)
                kw = json.loads(json.dumps(kw).replace("POOL", pool))
                if user is None:
                    if path not in ("/healthz", "/metrics", "/api/v1/login", "/api/v1/users"):
                        status = _call(client, None, method, path, kw)
                        if status != 401:
                            wrong.append(f"{method} {path} without a token: {status}, expected 401")
                    continue
                token = _token(url, user) if path.endswith("/logout") else tokens[user]
                status = _call(client, token, method, path, kw)
                if (status != 403) != (user in allowed):
                    expected = "allowed" if user in allowed else 403
                    wrong.append(f"{method} {path} as {user}: {status}, expected {expected}")
        return wrong

    with ThreadPoolExecutor(4) as workers:
        failures = [line for lines in workers.map(drive, [*sorted(EVERYONE), None]) for line in lines]
    assert not failures, "\n".join(failures)

    # heal information is a read; starting an index heal needs operator
    index = {"op": "index"}
    refused = httpx.post(f"{url}{V}/heal", json=index, headers={"Authorization": f"Bearer {tokens['vview']}"})
    assert refused.status_code == 403 and "needs operator on volume gv1" in refused.json()["detail"]
    allowed = httpx.post(f"{url}{V}/heal", json=index, headers={"Authorization": f"Bearer {tokens['voper']}"})
    assert allowed.status_code != 403, allowed.text
    assert (
        httpx.post(
            f"{url}{V}/heal", json={"op": "info"}, headers={"Authorization": f"Bearer {tokens['vview']}"}
        ).status_code
        != 403
    )

    refused = httpx.post(f"{url}{V}/start", headers={"Authorization": f"Bearer {tokens['vview']}"})
    assert refused.json()["detail"] == (
        "user vview needs operator on volume gv1 in cluster default (has: viewer on volume gv1 in cluster default)"
    )
    assert cli.api("GET", "/api/v1/clusters/default/volumes/gv1").json()["state"] == "Creating"

    # lists show only what the caller may see
    assert _names(url, tokens["gviewer"], "/api/v1/clusters") == {"default", "other"}
    assert _names(url, tokens["oview"], "/api/v1/clusters") == {"other"}
    assert _names(url, tokens["vview"], "/api/v1/clusters") == {"default"}
    assert _names(url, tokens["nobody"], "/api/v1/clusters") == set()
    assert _names(url, tokens["cviewer"], "/api/v1/nodes") == {"n1", "n2"}
    assert _names(url, tokens["noper"], "/api/v1/nodes") == {"n2"}
    assert _names(url, tokens["noper"], "/api/v1/clusters/default/nodes") == {"n2"}
    assert _names(url, tokens["vview"], "/api/v1/nodes") == set()
    assert _names(url, tokens["cviewer"], "/api/v1/clusters/default/volumes") == {"gv1", "gv2"}
    assert _names(url, tokens["vview"], "/api/v1/clusters/default/volumes") == {"gv1"}
    assert _names(url, tokens["doper"], "/api/v1/clusters/default/devices", "path") == {pool}
    assert _names(url, tokens["noper"], "/api/v1/clusters/default/devices", "path") == set()
    voper_tasks = httpx.get(f"{url}/api/v1/tasks", headers={"Authorization": f"Bearer {tokens['voper']}"}).json()
    assert {t["params"]["volume"]["name"] for t in voper_tasks} == {"gv1"}
    assert _names(url, tokens["oview"], "/api/v1/tasks") == set()
    assert _names(url, tokens["nobody"], "/api/v1/tasks", "id") == set()
    assert _names(url, tokens["oview"], "/api/v1/tasks?cluster=default") == set()
    # the event stream: a viewer of "other" gets none of default's events before other's creation
    assert {e["cluster"] for e in _events(url, tokens["oview"], "other")} == {"other"}
    assert {e["cluster"] for e in _events(url, tokens["cviewer"], "default")} == {"default"}

    # brick homes: node/device operators only on their grants and under registered homes
    def create(user: str, **body) -> httpx.Response:
        return httpx.post(
            f"{url}/api/v1/clusters/default/volumes",
            json={"start": False, **body},
            headers={"Authorization": f"Bearer {tokens[user]}"},
            timeout=30,
        )

    outside = create("noper", name="gv3", bricks=[f"n2:{st.tmp}/bricks/n2/gv3"])
    assert outside.status_code == 403 and "not under a registered brick home of node n2" in outside.json()["detail"]
    other_node = create("noper", name="gv3", bricks=[f"n1:{pool}/gv3"])
    assert other_node.status_code == 403 and "needs operator on device n1:" in other_node.json()["detail"]
    assert create("voper", name="gv3", bricks=[f"n1:{pool}/gv3"]).status_code == 403
    assert create("doper", name="gv3", bricks=[f"n1:{pool}/gv3"]).status_code == 202
    sized = create("doper", name="gv4", size="1MiB")
    assert sized.status_code == 202 and sized.json()["volume"]["bricks"][0]["path"] == f"{pool}/gv4"
    assert create("noper", name="gv5", size="1MiB").status_code == 403
    for user in ("admin", "coper"):
        etc = create(user, name="gv6", bricks=["n1:/etc/gv6"])
        assert etc.status_code == 422 and "system directory /etc" in etc.json()["detail"], etc.text
    assert create("coper", name="gv6", bricks=[f"n1:{st.tmp}/bricks/n1/gv6"]).status_code == 403
    admin_dev = cli.run("device", "add", "n1", "--path", "/var/lib/glusterctl-x", check=False)
    assert admin_dev.returncode == 1 and "system directory /var/lib" in admin_dev.stderr
    probe = httpx.post(
        f"{url}/api/v1/clusters/default/nodes/n2/probe",
        json={"path": "/srv"},
        headers={"Authorization": f"Bearer {tokens['noper']}"},
    )
    assert probe.status_code == 403 and "needs admin on node n2" in probe.json()["detail"]
    assert "system directory /etc" in cli.run("node", "probe", "n1", "--path", "/etc", check=False).stderr

    # revoke; a volume grant ends with its volume
    cli.run("user", "revoke", "cviewer", "viewer", "-c", "default")
    assert _names(url, tokens["cviewer"], "/api/v1/clusters") == set()
    assert "no such grant" in cli.run("user", "revoke", "cviewer", "viewer", "-c", "default", check=False).stderr

    # MQTT monitoring: viewers of a cluster read that cluster only; no cluster role, no login
    topics = Topics()
    port = st.server.mqtt_port
    watcher = RawClient(port, "oview", PASSWORD, client_id="raw-oview")
    assert watcher.wait_connack()
    try:
        assert watcher.subscribe(f"{topics.base}/clusters/other/nodes/+/heartbeat")
        assert not watcher.subscribe(f"{topics.base}/clusters/default/nodes/+/heartbeat")
        assert not watcher.subscribe(f"{topics.base}/clusters/+/nodes/+/heartbeat")
    finally:
        watcher.close()
    assert not RawClient(port, "nobody", PASSWORD, client_id="raw-nobody").wait_connack()
    assert not RawClient(port, "vview", PASSWORD, client_id="raw-vview").wait_connack()
