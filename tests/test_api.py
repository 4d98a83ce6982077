"""REST: authentication, first user, admin rules, logout, errors, token rotation."""

from __future__ import annotations

import json
import os
import stat

import httpx

from tests.helpers import wait_until


def test_first_user_login_logout(make_stack):
    st = make_stack().start(bootstrap=False)
    url = st.server.url
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "glusterctl"
    assert httpx.get(f"{url}/docs").status_code == 200
    # no users yet: every call but first-user creation, login and /healthz is 401
    for path in ("/api/v1/clusters", "/api/v1/nodes", "/api/v1/tasks", "/api/v1/users"):
        resp = httpx.get(f"{url}{path}")
        assert resp.status_code == 401 and "glusterctl login" in resp.json()["detail"]
    short = httpx.post(f"{url}/api/v1/users", json={"name": "admin", "password": "short"})
    assert short.status_code == 422 and "at least 8" in short.json()["detail"]

    st.cli.bootstrap("admin", "correct-horse")
    path = os.path.join(st.cli.env["GLUSTERCTL_CONFIG_DIR"], "token.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.load(open(path))
    assert saved["url"] == url and saved["token"]
    assert st.cli.json("user", "list") == [
        {"name": "admin", "admin": True, "created_at": st.cli.json("user", "list")[0]["created_at"]}
    ]

    # after the first user, creating users needs an admin token
    anon = httpx.post(f"{url}/api/v1/users", json={"name": "eve", "password": "longenough"})
    assert anon.status_code == 401
    st.cli.run("user", "create", "bob", "--password-stdin", input="bobs-password\n")
    bob = httpx.post(f"{url}/api/v1/login", json={"username": "bob", "password": "bobs-password"}).json()
    assert bob["admin"] is False
    as_bob = {"Authorization": f"Bearer {bob['token']}"}
    assert (
        httpx.post(f"{url}/api/v1/users", json={"name": "carol", "password": "longenough"}, headers=as_bob).status_code
        == 403
    )
    assert httpx.post(f"{url}/api/v1/clusters/default/token/rotate", headers=as_bob).status_code == 403
    assert httpx.get(f"{url}/api/v1/clusters", headers=as_bob).status_code == 200
    wrong = httpx.post(f"{url}/api/v1/login", json={"username": "bob", "password": "nope-nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong user name or password"

    # environment password for scripts
    st.cli.run("login", "-u", "bob", env={"GLUSTERCTL_PASSWORD": "bobs-password"})
    token = st.cli.token
    st.cli.run("logout")
    assert not os.path.exists(path)
    assert httpx.get(f"{url}/api/v1/clusters", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    out = st.cli.run("cluster", "list", check=False)
    assert out.returncode == 1 and "glusterctl login" in out.stderr


def test_errors_are_actionable(stack):
    cli = stack.cli
    missing = cli.run("cluster", "status", "nope", check=False)
    assert missing.returncode == 1 and "no cluster named 'nope'" in missing.stderr and "cluster add" in missing.stderr
    assert "already exists" in cli.run("cluster", "add", "default", check=False).stderr
    gone = cli.run("node", "probe", "ghost", check=False)
    assert gone.returncode == 1 and "no node 'ghost'" in gone.stderr
    bad = cli.api("POST", "/api/v1/clusters/default/nodes/x/probe", json={"io_seconds": -1})
    assert bad.status_code == 422 and "io_seconds" in bad.json()["detail"]
    down = cli.run("cluster", "list", "--url", "http://127.0.0.1:9", check=False)
    assert down.returncode == 1 and "cannot reach the control server" in down.stderr
    assert "unknown task state" in cli.run("task", "list", "--state", "sleepy", check=False).stderr


def test_token_rotation_and_node_remove(stack):
    st = stack
    old = st.join_token()
    first = st.agent("n1", token=old)
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    out = st.cli.run("cluster", "token", "--rotate").stdout.strip().splitlines()
    new = out[-1]
    assert new != old and new == st.join_token()
    # the connected agent stays; a new connection with the old token is refused
    late = st.agent("n2", token=old)
    assert late.wait_exit(20) == 2
    st.agent("n3", token=new)
    wait_until(lambda: st.node_state("n3") == "Online", what="n3 Online with the new token")
    assert st.node_state("n1") == "Online" and first.alive()

    refused = st.cli.run("node", "remove", "n3", check=False)
    assert refused.returncode == 1 and "is Online" in refused.stderr
    first.stop()
    wait_until(lambda: st.node_state("n1") == "Unreachable", what="n1 Unreachable")
    st.cli.run("node", "remove", "n1")
    assert set(st.nodes()) == {"n3"}
