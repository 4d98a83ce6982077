"""Fixtures: real servers, agents, brokers and databases, all cleaned up."""

from __future__ import annotations

import os
import random
from pathlib import Path

import psycopg2
import pytest

from tests.helpers import (
    MOSQUITTO,
    POSTGRES_DSN,
    Agent,
    Cli,
    Proc,
    Server,
    cleanup_gluster,
    port_open,
    unique,
)
from tests.mqtt_raw import clear_retained

os.environ.pop("GLUSTERCTL_URL", None)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _need(host_port: tuple[str, int], what: str) -> None:
    if not port_open(*host_port):
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not running on {host_port[0]}:{host_port[1]} (CI needs it)")
        pytest.skip(f"{what} is not running on {host_port[0]}:{host_port[1]}")


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    _need(("127.0.0.1", 5432), "PostgreSQL")
    name = unique("gct_")
    admin = psycopg2.connect(POSTGRES_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_DSN.rsplit("/", 1)[0] + f"/{name}"
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


class Stack:
    """A control server plus agents, on one broker and one database."""

    def __init__(self, tmp: Path, request, broker: str = "embedded", db: str | None = None) -> None:
        self.tmp, self.request, self.broker, self.db = tmp, request, broker, db
        root = unique("t") if broker == "mosquitto" else None
        # each test its own brick ports, so a leftover brick of another test cannot collide
        low = random.randrange(20000, 32000, 100)  # below the ephemeral range free_port() uses
        self.server = Server(tmp, broker=broker, db=db, mqtt_root=root, extra=["--brick-ports", f"{low}-{low + 99}"])
        self.cli = Cli(tmp, self.server)
        self.procs: list[Proc] = [self.server]

    def start(self, bootstrap: bool = True) -> Stack:
        self.server.start()
        if bootstrap:
            self.cli.bootstrap()
        return self

    def join_token(self, cluster: str = "default") -> str:
        return self.cli.run("cluster", "token", cluster).stdout.strip().splitlines()[-1]

    def agent(self, node: str, token: str | None = None, start: bool = True, **kw) -> Agent:
        agent = Agent(self.tmp, self.server, token or self.join_token(), node, **kw)
        self.procs.append(agent)
        return agent.start() if start else agent

    def nodes(self, cluster: str = "default") -> dict[str, dict]:
        return {n["name"]: n for n in self.cli.api("GET", f"/api/v1/clusters/{cluster}/nodes").json()}

    def node_state(self, node: str, cluster: str = "default") -> str | None:
        info = self.nodes(cluster).get(node)
        return info["state"] if info else None

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=5)
        cleanup_gluster(self.tmp)
        if self.broker == "mosquitto":
            clear_retained(MOSQUITTO[1], self.server.mqtt_root)
        rep = getattr(self.request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for proc in self.procs:
                print(f"----- {proc.name} log (tail) -----\n{proc.log()[-4000:]}")


@pytest.fixture
def make_stack(tmp_path, request):
    stacks: list[Stack] = []

    def make(broker: str = "embedded", db: str | None = None, sub: str = "") -> Stack:
        if broker == "mosquitto":
            _need(MOSQUITTO, "Mosquitto")
        tmp = tmp_path / sub if sub else tmp_path
        tmp.mkdir(exist_ok=True)
        stack = Stack(tmp, request, broker, db)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(make_stack):
    """A started server on the embedded broker and SQLite, with an admin logged in."""
    return make_stack().start()
