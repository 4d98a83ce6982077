"""One function per CLI command: call the REST API, print the answer."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import time
from typing import Any

from pydantic import ValidationError

from broker.messages import NodeState, TaskState
from control.cli import sdnotify
from control.cli.errors import CliError
from control.cli.follow import follow_tasks, report
from control.cli.output import console, emit, styled
from control.client import ApiError, Client, forget_login, save_login
from control.client.format import ago, node_free, size


def _client(args: argparse.Namespace) -> Client:
    return Client(getattr(args, "url", None), ca=getattr(args, "ca", None))


def _settings_kwargs(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # peewee's DEBUG lines carry every query's parameters: join secrets, credential and token hashes
    logging.getLogger("peewee").setLevel(max(logging.INFO, logging.getLogger().level))


def _bad_settings(exc: ValidationError) -> CliError:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"--{where.replace('_', '-')}: {msg}" if where else msg)
    return CliError("; ".join(parts))


# ---- processes ---------------------------------------------------------------------------
def server(args: argparse.Namespace) -> int:
    import asyncio

    from control.server import StartupError, serve
    from control.settings import ServerSettings

    try:
        settings = ServerSettings(
            **_settings_kwargs(
                args,
                [
                    "data_dir",
                    "http",
                    "mqtt",
                    "mqtts",
                    "mqtt_url",
                    "mqtt_ca",
                    "mqtt_dynsec",
                    "mqtt_root",
                    "db",
                    "brick_ports",
                    "event_backlog",
                    "audit_keep_days",
                    "metadata_copies",
                    "log_level",
                    "tls",
                    "tls_cert",
                    "tls_key",
                    "token_ttl_days",
                    "metrics_token",
                    "restore_from_agents",
                    "restore_key",
                ],
            )
        )
    except ValidationError as exc:
        raise _bad_settings(exc) from None
    _setup_logging(settings.log_level)

    def on_ready(bridge: Any) -> None:
        sdnotify.ready("serving", bridge.alive)

    try:
        asyncio.run(serve(settings, ready=on_ready))
    except StartupError as exc:
        raise CliError(str(exc)) from None
    return 0


def agent(args: argparse.Namespace) -> int:
    import signal

    from agent.node import Agent
    from agent.settings import AgentSettings

    try:
        settings = AgentSettings(
            **_settings_kwargs(
                args,
                [
                    "mqtt_url",
                    "mqtt_ca",
                    "mqtt_cert",
                    "mqtt_key",
                    "token",
                    "token_file",
                    "node",
                    "address",
                    "state_dir",
                    "keepalive",
                    "heartbeat",
                    "mqtt_root",
                    "log_level",
                    "volfile_port",
                ],
            )
        )
    except ValidationError as exc:
        raise _bad_settings(exc) from None
    _setup_logging(settings.log_level)
    node_agent = Agent(settings, on_ready=lambda: sdnotify.ready(f"node {settings.node} registered", node_agent.alive))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node_agent.stop(0))
    return node_agent.run()


def tui(args: argparse.Namespace) -> int:
    from tui.app import main as tui_main

    return tui_main(url=args.url, serve=args.serve)


# ---- login and users -----------------------------------------------------------------------
def _read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("GLUSTERCTL_PASSWORD"):
        return os.environ["GLUSTERCTL_PASSWORD"]
    if not sys.stdin.isatty():
        raise CliError("no password: use --password-stdin or set GLUSTERCTL_PASSWORD when not on a terminal")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password (again): ") != password:
        raise CliError("the passwords differ")
    return password


def login(args: argparse.Namespace) -> int:
    client = _client(args)
    username = args.username or (input("Username: ") if sys.stdin.isatty() else None)
    if not username:
        raise CliError("no user name: pass --username")
    answer = client.post("/api/v1/login", {"username": username, "password": _read_password(args)}, auth=False)
    https = any(url.startswith("https://") for url in client.urls)
    path = save_login(client.servers, answer["token"], client.ca if https else None)  # every server of the list
    print(f"Logged in successfully. The token is saved to {path}")
    return 0


def logout(args: argparse.Namespace) -> int:
    client = _client(args)
    if client.token:
        try:
            client.post("/api/v1/logout")
        except ApiError as exc:
            print(f"warning: the server did not revoke the token: {exc}", file=sys.stderr)
    forget_login()
    print("Logged out successfully")
    return 0


def session_list(args: argparse.Namespace) -> int:
    data = _client(args).get("/api/v1/sessions")
    emit(
        data,
        args.output,
        [
            ("ID", "id"),
            ("USER", "user"),
            ("CREATED", lambda r: ago(r["created_at"])),
            ("LAST USED", lambda r: ago(r["last_used_at"]) if r["last_used_at"] else "-"),
            ("EXPIRES", lambda r: time.strftime("%Y-%m-%d %H:%M", time.localtime(r["expires_at"]))),
            ("", lambda r: "(this one)" if r["current"] else ""),
        ],
    )
    return 0


def session_revoke(args: argparse.Namespace) -> int:
    _client(args).delete(f"/api/v1/sessions/{args.session_id}")
    print(f"Session {args.session_id} revoked.")
    return 0


def user_create(args: argparse.Namespace) -> int:
    client = _client(args)
    user = client.post(
        "/api/v1/users", {"name": args.name, "password": _read_password(args, confirm=True), "admin": args.admin}
    )
    print(f"User {user['name']} created{' (admin)' if user['admin'] else ''}.")
    return 0


def user_list(args: argparse.Namespace) -> int:
    data = _client(args).get("/api/v1/users")
    emit(
        data,
        args.output,
        [
            ("NAME", "name"),
            ("ADMIN", lambda u: "yes" if u["admin"] else "no"),
            ("CREATED", lambda u: ago(u["created_at"])),
        ],
        "users",
    )
    return 0


def user_delete(args: argparse.Namespace) -> int:
    _client(args).delete(f"/api/v1/users/{args.name}")
    print(f"User {args.name} deleted.")
    return 0


def _grant_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"role": args.role}
    for key in ("cluster", "volume", "node", "device"):
        if getattr(args, key, None):
            body[key] = getattr(args, key)
    return body


def user_grant(args: argparse.Namespace) -> int:
    grant = _client(args).post(f"/api/v1/users/{args.name}/grants", _grant_body(args))
    print(f"User {args.name} now has {grant['text']}.")
    return 0


def user_revoke(args: argparse.Namespace) -> int:
    _client(args).delete(f"/api/v1/users/{args.name}/grants", **_grant_body(args))
    print(f"Grant revoked from user {args.name}.")
    return 0


def user_show(args: argparse.Namespace) -> int:
    data = _client(args).get(f"/api/v1/users/{args.name}/grants")
    if args.output == "json":
        emit(data, "json", [])
        return 0
    print(f"User: {data['name']}{'  (admin)' if data['admin'] else ''}")
    emit(
        data["grants"],
        "table",
        [
            ("ROLE", "role"),
            ("SCOPE", "scope"),
            ("CLUSTER", lambda g: g["cluster"] or "*"),
            ("ON", lambda g: g["name"] or "-"),
        ],
        "grants",
    )
    return 0


# ---- clusters ------------------------------------------------------------------------------
def cluster_add(args: argparse.Namespace) -> int:
    answer = _client(args).post("/api/v1/clusters", {"name": args.name})
    print(
        f"Cluster {answer['cluster']} added. Start its node agents with this join token (--token or GLUSTERCTL_TOKEN):"
    )
    print(answer["token"])
    return 0


def cluster_list(args: argparse.Namespace) -> int:
    data = _client(args).get("/api/v1/clusters")
    emit(
        data,
        args.output,
        [("NAME", "name"), ("NODES", "nodes"), ("ONLINE", "nodes_online"), ("CREATED", lambda c: ago(c["created_at"]))],
        "clusters",
    )
    return 0


NODE_COLUMNS = [
    ("NODE", "name"),
    ("STATE", lambda n: styled(n["state"])),
    ("ADDRESS", "address"),
    ("LAST SEEN", lambda n: ago(n["last_seen_at"])),
    ("SINCE", lambda n: ago(n["state_changed_at"])),
    ("AGENT", "agent_version"),
    ("GLUSTERFS", lambda n: n["glusterfs_version"] or "-"),
    ("FREE", node_free),
]


def cluster_status(args: argparse.Namespace) -> int:
    name = args.name or args.cluster
    data = _client(args).get(f"/api/v1/clusters/{name}")
    if args.output == "json":
        emit(data, "json", [])
        return 0
    online = sum(1 for n in data["nodes"] if n["state"] == NodeState.ONLINE)
    console.print(f"Cluster: {data['name']}  nodes: {len(data['nodes'])}  online: {online}")
    emit(data["nodes"], "table", NODE_COLUMNS, "nodes")
    return 0


def cluster_token(args: argparse.Namespace) -> int:
    name = args.name or args.cluster
    client = _client(args)
    answer = (
        client.post(f"/api/v1/clusters/{name}/token/rotate")
        if args.rotate
        else client.get(f"/api/v1/clusters/{name}/token")
    )
    if args.rotate:
        print(f"Join token of cluster {name} rotated; agents that reconnect need the new token:")
    print(answer["token"])
    return 0


def cluster_delete(args: argparse.Namespace) -> int:
    _client(args).delete(f"/api/v1/clusters/{args.name}")
    print(f"Cluster {args.name} deleted.")
    return 0


# ---- nodes --------------------------------------------------------------------------------
def node_list(args: argparse.Namespace) -> int:
    client = _client(args)
    data = client.get("/api/v1/nodes") if args.all else client.get(f"/api/v1/clusters/{args.cluster}/nodes")
    columns = ([("CLUSTER", "cluster")] if args.all else []) + NODE_COLUMNS
    emit(data, args.output, columns, "nodes")
    return 0


def node_remove(args: argparse.Namespace) -> int:
    _client(args).delete(f"/api/v1/clusters/{args.cluster}/nodes/{args.node}", force=str(args.force).lower())
    print(f"Node {args.node} removed from cluster {args.cluster}.")
    return 0


def node_reenrol(args: argparse.Namespace) -> int:
    answer = _client(args).post(f"/api/v1/clusters/{args.cluster}/nodes/{args.node}/reenrol")
    print(
        f"Node {args.node} of cluster {args.cluster} may enrol again until "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(answer['reenrol_until']))}: "
        "on that node, delete STATE_DIR/node.secret and start the agent with the join token."
    )
    return 0


def node_certificate(args: argparse.Namespace) -> int:
    try:
        with open(args.csr) as fh:
            csr = fh.read()
    except OSError as exc:
        raise CliError(f"cannot read the certificate signing request {args.csr}: {exc.strerror}") from None
    body = {"csr": csr, "days": args.days}
    answer = _client(args).post(f"/api/v1/clusters/{args.cluster}/nodes/{args.node}/certificate", body)
    for path, pem in ((args.out, answer["certificate"]), (args.ca_out, answer["ca"])):
        if path:
            with open(path, "w") as fh:
                fh.write(pem)
    if args.output == "json":
        emit(answer, "json", [])
        return 0
    if not args.out:
        print(answer["certificate"], end="")
        return 0
    until = time.strftime("%Y-%m-%d", time.localtime(answer["not_after"]))
    ca = args.ca_out or "DATA_DIR/tls/ca.pem"
    print(
        f"Node certificate of {args.node} (cluster {args.cluster}) written to {args.out}, valid until {until}. "
        f"On that node: glusterctl agent --mqtt-url mqtts://SERVER:PORT --mqtt-ca {ca} "
        f"--mqtt-cert {args.out} --mqtt-key KEYFILE (no join token needed)."
    )
    return 0


def node_probe(args: argparse.Namespace) -> int:
    client = _client(args)
    body: dict[str, Any] = {"io_seconds": args.io_seconds}
    if args.path:
        body["path"] = args.path
    task = client.post(f"/api/v1/clusters/{args.cluster}/nodes/{args.node}/probe", body)
    if not args.wait:
        if args.output == "json":
            emit(task, "json", [])
        else:
            print(f"Node probe request sent. Task: {task['id']}")
        return 0
    followed = follow_tasks(client, [task["id"]], args.timeout, out=sys.stderr, cluster=args.cluster)
    if followed.timed_out:
        return report(followed)
    task = client.get(f"/api/v1/tasks/{task['id']}")
    if args.output == "json":
        emit(task, "json", [])
    elif task["state"] == TaskState.DONE:
        result = task["result"] or {}
        for key in sorted(result):
            value = result[key]
            if key.endswith("_bytes"):
                value = size(value)
            print(f"{key}: {value}")
    else:
        print(f"Probe of node {args.node} failed: {task['reason']}\nHow to fix: {task['fix']}", file=sys.stderr)
    return 0 if task["state"] == TaskState.DONE else 1


# ---- tasks --------------------------------------------------------------------------------
TASK_COLUMNS = [
    ("ID", lambda t: t["id"][:12]),
    ("NODE", "node"),
    ("KIND", "kind"),
    ("STATE", lambda t: styled(t["state"])),
    ("UPDATED", lambda t: ago(t["updated_at"])),
    ("REASON", "reason"),
]


def task_list(args: argparse.Namespace) -> int:
    data = _client(args).get("/api/v1/tasks", cluster=args.cluster, node=args.node, state=args.state, limit=args.limit)
    emit(data, args.output, TASK_COLUMNS, "tasks")
    return 0


def task_show(args: argparse.Namespace) -> int:
    task = _client(args).get(f"/api/v1/tasks/{args.task_id}")
    if args.output == "json":
        emit(task, "json", [])
        return 0
    for key in ("id", "cluster", "node", "kind", "state", "reason"):
        print(f"{key}: {task[key]}")
    print(f"params: {task['params']}")
    print(f"result: {task['result']}")
    for ev in task["events"] or []:
        print(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ev['at']))}  {ev['state']}  {ev['reason']}")
    return 0
