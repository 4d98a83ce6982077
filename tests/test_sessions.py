"""Sessions: tokens expire, can be listed and revoked; failed logins slow down; secrets stay out of logs."""

from __future__ import annotations

import httpx
import pytest

from control.errors import TooManyRequests
from control.services.users import ADDRESS_FREE_FAILURES, FREE_FAILURES, LoginLimiter
from tests.helpers import Cli, Server, wait_until


def _login(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/login", json={"username": user, "password": password}, timeout=30)


def test_limiter_delays_grow_per_key():
    limiter = LoginLimiter()
    user, addr = ["user:bob"], ["addr:10.0.0.1"]
    for _ in range(FREE_FAILURES):
        limiter.check(user, now=100.0)
        limiter.failed(user, now=100.0)
    limiter.check(user, now=100.0)  # the free failures cost no wait
    limiter.failed(user, now=100.0)  # the first slowed down one: 1 s
    with pytest.raises(TooManyRequests) as wait:
        limiter.check(user, now=100.5)
    assert wait.value.retry_after == 1 and wait.value.status == 429
    limiter.check(user, now=101.0)
    limiter.failed(user, now=101.0)  # then 2 s
    with pytest.raises(TooManyRequests):
        limiter.check(user, now=102.9)
    limiter.check(user, now=103.0)
    limiter.check(["user:alice"], now=101.0)  # another user is not slowed down
    for _ in range(ADDRESS_FREE_FAILURES):
        limiter.failed(addr, now=200.0)
    limiter.check(addr, now=200.0)
    limiter.failed(addr, now=200.0)
    with pytest.raises(TooManyRequests):
        limiter.check(["user:carol", *addr], now=200.1)  # a blocked address blocks every user from it
    limiter.succeeded(user)
    limiter.check(user, now=101.0)


def test_sessions_list_and_revoke(stack):
    url, cli = stack.server.url, stack.cli
    cli.run("user", "create", "viewer1", "--password-stdin", input="long-enough-pw\n")
    second = _login(url, "admin", "correct-horse").json()["token"]
    viewer = _login(url, "viewer1", "long-enough-pw").json()["token"]

    mine = cli.json("session", "list")
    assert {s["user"] for s in mine} == {"admin", "viewer1"}  # an admin sees everyone's
    assert [s["current"] for s in mine].count(True) == 1
    for s in mine:
        assert s["expires_at"] - s["created_at"] == pytest.approx(30 * 86400)
    as_viewer = httpx.get(f"{url}/api/v1/sessions", headers={"Authorization": f"Bearer {viewer}"}).json()
    assert [s["user"] for s in as_viewer] == ["viewer1"]

    admin_second = next(s["id"] for s in mine if s["user"] == "admin" and not s["current"])
    # a viewer cannot end an admin's session: it does not exist for them
    refused = httpx.delete(f"{url}/api/v1/sessions/{admin_second}", headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 404
    assert httpx.get(f"{url}/api/v1/sessions", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    assert f"Session {admin_second} revoked" in cli.run("session", "revoke", str(admin_second)).stdout
    gone = httpx.get(f"{url}/api/v1/sessions", headers={"Authorization": f"Bearer {second}"})
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
    missing = cli.run("session", "revoke", str(admin_second), check=False)
    assert missing.returncode == 1 and f"no session {admin_second}" in missing.stderr


def test_failed_logins_are_slowed_down(stack):
    url = stack.server.url
    for _ in range(FREE_FAILURES):
        assert _login(url, "admin", "wrong-password").status_code == 401
    assert _login(url, "admin", "wrong-password").status_code == 401  # this one starts the delay
    slowed = _login(url, "admin", "correct-horse")  # even the right password waits
    assert slowed.status_code == 429 and slowed.headers["content-type"] == "application/problem+json"
    assert int(slowed.headers["retry-after"]) >= 1 and "too many failed logins" in slowed.json()["detail"]
    wait_until(lambda: _login(url, "admin", "correct-horse").status_code == 200, 10, what="login after the delay")
    failed = stack.cli.run("login", "-u", "admin", "--password-stdin", input="wrong-password\n", check=False)
    assert failed.returncode == 1 and "wrong user name or password" in failed.stderr


def test_tokens_expire(tmp_path):
    server = Server(tmp_path, extra=["--token-ttl-days", "0.00003"]).start()  # about 2.6 seconds
    try:
        cli = Cli(tmp_path, server)
        cli.bootstrap()
        assert cli.api("GET", "/api/v1/clusters").status_code == 200
        expired = wait_until(
            lambda: (r := cli.api("GET", "/api/v1/clusters")).status_code == 401 and r, 15, what="token expired"
        )
        assert expired.json()["detail"] == "the token expired: log in again with 'glusterctl login'"
        answer = cli.run("cluster", "list", check=False)
        assert answer.returncode == 1 and "log in again" in answer.stderr
    finally:
        server.stop()


def test_secrets_stay_out_of_the_log(tmp_path, postgres_url):
    password = "Pg-S3cret-Passw0rd"
    db = postgres_url.replace("postgres@", f"postgres:{password}@")
    server = Server(tmp_path, db=db, extra=["--log-level", "DEBUG"]).start()
    try:
        cli = Cli(tmp_path, server)
        cli.bootstrap()
        token = cli.token
        join = cli.run("cluster", "token", "default").stdout.strip().splitlines()[-1]
        assert _login(server.url, "admin", "not-the-password").status_code == 401
        assert cli.api("GET", "/api/v1/sessions").status_code == 200
    finally:
        server.stop()
    log = "\n".join(line for line in server.log().splitlines() if not line.startswith("===== start "))
    assert "postgres:***@" in log  # the database is named, without its password
    for secret in (password, token, join, join.split(".", 1)[1], "correct-horse", "not-the-password"):
        assert secret not in log, f"a secret is in the server log: {secret[:4]}..."
