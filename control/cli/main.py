"""``glusterctl``: one command for the server, the agent, the dashboard and the REST client."""

from __future__ import annotations

import argparse
import sys

from broker import __version__
from control.cli import alerts, audit, backup, commands, completion, demo, volumes
from control.cli.errors import CliError
from control.client import ApiError

DEFAULT_CLUSTER = "default"


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=["table", "json"], default="table", help="output format (default: table)")


def _cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--cluster", default=DEFAULT_CLUSTER, help="cluster name (default: %(default)s)")


class _UrlList(argparse.Action):
    """``--url`` given again adds servers to the list (as commas do)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option: object = None
    ) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{values}" if before else values)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        action=_UrlList,
        help="control server URL; several servers of one control plane separated by commas (or --url given "
        "again), tried in order when one cannot be reached (default: $GLUSTERCTL_URL, the saved login, or "
        "http://127.0.0.1:8080)",
    )
    common.add_argument(
        "--ca",
        metavar="FILE",
        help="CA certificate (PEM) that verifies an https server (default: $GLUSTERCTL_CA, the one saved by "
        "'login --ca', or the system's CAs)",
    )

    parser = argparse.ArgumentParser(
        prog="glusterctl",
        description="External control plane for GlusterFS: control server, node agent and client.",
    )
    parser.add_argument("--version", action="version", version=f"glusterctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # ---- processes ------------------------------------------------------------------------
    p = sub.add_parser(
        "server",
        help="run the control service (REST API, embedded MQTT broker, store)",
        description="Run the control service. Every flag can also be set as GLUSTERCTL_<FLAG> "
        "(e.g. GLUSTERCTL_DATA_DIR). Several servers on one PostgreSQL database (--db) and one external "
        "broker (--mqtt-url), each with its own --data-dir and the same metadata.key, form one control "
        "plane: one leads (PostgreSQL advisory lock, checked every GLUSTERCTL_LEADER_INTERVAL seconds, "
        "default 1), another takes over when it dies (docs/ha.md). SQLite and the embedded broker allow "
        "one server.",
    )
    p.add_argument("--data-dir", help="state directory: SQLite database, broker secret (default: /var/lib/glusterctl)")
    p.add_argument("--http", help="REST API listen address HOST:PORT (default: 127.0.0.1:8080)")
    p.add_argument(
        "--mqtt",
        help="embedded MQTT broker's plain TCP listen address HOST:PORT, or off (then give --mqtts) "
        "(default: 0.0.0.0:1883)",
    )
    p.add_argument(
        "--mqtts",
        metavar="HOST:PORT",
        help="also listen for MQTT over TLS here, with a certificate from the server's own CA in DATA_DIR/tls "
        "(agents: --mqtt-url mqtts://HOST:PORT --mqtt-ca ca.pem)",
    )
    p.add_argument(
        "--mqtt-url",
        help="use this external broker instead of the embedded one: mqtt://USER:PASS@HOST:PORT or mqtts://... "
        "(needed for several servers, docs/ha.md)",
    )
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate (PEM) that verifies an mqtts:// --mqtt-url")
    p.add_argument(
        "--mqtt-dynsec",
        action="store_const",
        const=True,
        help="the --mqtt-url user is a Mosquitto dynamic security admin: keep a broker user per node there "
        "(see docs/mosquitto.md)",
    )
    p.add_argument("--mqtt-root", help="topic root, to share a broker between control planes (default: glusterctl)")
    p.add_argument(
        "--db",
        help="database URL: sqlite:///PATH (default: DATA_DIR/glusterctl.db) or postgresql://USER@HOST:PORT/DB "
        "(PostgreSQL: several servers may share it, docs/ha.md)",
    )
    p.add_argument("--brick-ports", help="port range for bricks on each node, LOW-HIGH (default: 49152-60999)")
    p.add_argument(
        "--event-backlog", type=int, help="events kept for clients that resume the event stream (default: 10000)"
    )
    p.add_argument(
        "--metadata-copies",
        type=int,
        help="nodes per cluster (the oldest) that keep copies of its signed metadata for a restore (default: 16)",
    )
    p.add_argument(
        "--audit-keep-days", type=float, help="audit log entries older than this many days are pruned (default: 90)"
    )
    p.add_argument(
        "--tls",
        choices=["auto", "off"],
        help="auto: serve HTTPS with the server's own CA and certificate, made on the first start in DATA_DIR/tls "
        "(clients: glusterctl login --ca DATA_DIR/tls/ca.pem); off: plain HTTP "
        "(default: auto unless --http listens on loopback only)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM, with its chain)")
    p.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    p.add_argument(
        "--token-ttl-days",
        type=float,
        help="API tokens expire this many days after their login, however much they are used (default: 30)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    p.add_argument(
        "--metrics-token",
        help="GET /metrics needs 'Authorization: Bearer TOKEN' (default: public; prefer GLUSTERCTL_METRICS_TOKEN, "
        "command lines are visible to other users)",
    )
    p.add_argument(
        "--restore-from-agents",
        action="store_const",
        const=True,
        help="on an empty data directory or database: rebuild the clusters from the newest metadata copy the "
        "agents kept (see docs/recovery.md); needs --restore-key",
    )
    p.add_argument(
        "--restore-key",
        metavar="FILE",
        help="the lost server's metadata signing key (its DATA_DIR/metadata.key): only copies it signed are used",
    )
    p.set_defaults(func=commands.server)

    p = sub.add_parser(
        "agent",
        help="run the node agent on a storage node",
        description="Run the node agent. Every flag can also be set as GLUSTERCTL_<FLAG> "
        "(e.g. GLUSTERCTL_TOKEN). The join token is needed only for the first start: the agent then "
        "enrols and keeps its own credential in STATE_DIR/node.secret. Exits 2 when the join token, "
        "the node's credential or the node name is refused; "
        "retries forever while the broker is unreachable; exits 3 when its volfile server cannot listen.",
    )
    p.add_argument(
        "--mqtt-url", help="broker URL: mqtt://HOST:PORT or mqtts://HOST:PORT (default: mqtt://127.0.0.1:1883)"
    )
    p.add_argument(
        "--mqtt-ca",
        metavar="FILE",
        help="CA certificate (PEM) that verifies an mqtts:// broker: the control server's DATA_DIR/tls/ca.pem "
        "(default: the system's CAs); an unverified broker makes the agent exit 2",
    )
    p.add_argument(
        "--mqtt-cert",
        metavar="FILE",
        help="node certificate (PEM) from 'glusterctl node certificate': presented to an mqtts:// broker and, "
        "with no join token, used to enrol (the embedded broker's TLS listener)",
    )
    p.add_argument("--mqtt-key", metavar="FILE", help="the node certificate's private key (PEM, keep it mode 0600)")
    p.add_argument(
        "--token",
        help="the cluster's join token (glusterctl cluster token CLUSTER); needed only until the node is enrolled",
    )
    p.add_argument("--token-file", help="read the join token from this file")
    p.add_argument("--node", help="node name (default: this host's FQDN)")
    p.add_argument(
        "--address",
        help="address clients use to reach this node's bricks (default: the address that reaches the broker)",
    )
    p.add_argument(
        "--state-dir",
        help="agent state: node credential, id, epoch, task journal (default: /var/lib/glusterctl-agent)",
    )
    p.add_argument("--keepalive", type=int, help="MQTT keepalive in seconds (default: 10)")
    p.add_argument("--heartbeat", type=float, help="heartbeat interval in seconds (default: the keepalive)")
    p.add_argument("--mqtt-root", help="topic root (default: glusterctl)")
    p.add_argument(
        "--volfile-port",
        type=int,
        help="TCP port of the volfile server that bricks, self-heal daemons and 'mount -t glusterfs' "
        "fetch volfiles from, on the node's address and loopback (default: 24007, glusterd's port). "
        "Firewall: open this port (24007/tcp by default) on storage nodes to clients, as with glusterd, "
        "besides the brick port range",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    p.set_defaults(func=commands.agent)

    p = sub.add_parser("tui", parents=[common], help="the terminal dashboard (uses the saved login)")
    p.add_argument("--serve", metavar="HOST:PORT", help="serve the dashboard to web browsers on HOST:PORT instead")
    p.set_defaults(func=commands.tui)

    # ---- login and users --------------------------------------------------------------------
    p = sub.add_parser(
        "login",
        parents=[common],
        help="log in and save the token (and --ca for an https URL) to ~/.glusterctl/token.json",
    )
    p.add_argument("--username", "-u", help="user name (prompted when omitted)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=commands.login)

    p = sub.add_parser("logout", parents=[common], help="revoke the saved token and delete it")
    p.set_defaults(func=commands.logout)

    sessions = sub.add_parser("session", help="list and revoke login sessions (API tokens)").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = sessions.add_parser("list", parents=[common], help="your sessions (admins: everyone's), newest first")
    _output(p)
    p.set_defaults(func=commands.session_list)
    p = sessions.add_parser("revoke", parents=[common], help="end a session (yours; admins: anyone's)")
    p.add_argument("session_id", type=int, help="the ID from 'session list'")
    p.set_defaults(func=commands.session_revoke)

    users = sub.add_parser("user", help="manage users").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = users.add_parser(
        "create", parents=[common], help="create a user (the first user needs no login and becomes admin)"
    )
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="make the user an admin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=commands.user_create)
    p = users.add_parser("list", parents=[common], help="list users (admins only)")
    _output(p)
    p.set_defaults(func=commands.user_list)
    p = users.add_parser("delete", parents=[common], help="delete a user (admins only)")
    p.add_argument("name")
    p.set_defaults(func=commands.user_delete)
    for action, helptext in (
        ("grant", "give a user a role over everything, a cluster, a volume, a node or a device (admins only)"),
        ("revoke", "take back a role given with 'user grant' (same arguments; admins only)"),
    ):
        p = users.add_parser(
            action,
            parents=[common],
            help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]}. Roles: admin (everything, including devices, "
            "join tokens, node removal and users), operator (create volumes under registered brick homes or "
            "with --size; start, stop, delete them), viewer (read only). Without -c the role covers every "
            "cluster; -c alone the whole cluster; with --volume, --node or --device only that object.",
        )
        p.add_argument("name", help="user name")
        p.add_argument("role", choices=["admin", "operator", "viewer"])
        p.add_argument("-c", "--cluster", help="the cluster (default: every cluster)")
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--volume", help="only this volume of the cluster")
        scope.add_argument("--node", help="only this node of the cluster (and its devices)")
        scope.add_argument("--device", metavar="NODE:PATH", help="only this registered path or device")
        p.set_defaults(func=getattr(commands, f"user_{action}"))
    p = users.add_parser("show", parents=[common], help="show a user's roles and where they apply")
    p.add_argument("name")
    _output(p)
    p.set_defaults(func=commands.user_show)

    # ---- clusters ---------------------------------------------------------------------------
    clusters = sub.add_parser("cluster", help="manage clusters").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = clusters.add_parser("add", parents=[common], help="register a cluster and print its join token")
    p.add_argument("name")
    p.set_defaults(func=commands.cluster_add)
    p = clusters.add_parser("list", parents=[common], help="list clusters")
    _output(p)
    p.set_defaults(func=commands.cluster_list)
    p = clusters.add_parser("status", parents=[common], help="show each node of a cluster: state, address, last seen")
    p.add_argument("name", nargs="?", help="cluster (default: -c or 'default')")
    _cluster(p)
    _output(p)
    p.set_defaults(func=commands.cluster_status)
    p = clusters.add_parser("token", parents=[common], help="print a cluster's join token (last line: the token alone)")
    p.add_argument("name", nargs="?", help="cluster (default: -c or 'default')")
    _cluster(p)
    p.add_argument(
        "--rotate", action="store_true", help="issue a new token (admins only); new agent connections need it"
    )
    p.set_defaults(func=commands.cluster_token)
    p = clusters.add_parser("delete", parents=[common], help="delete a cluster that has no nodes (admins only)")
    p.add_argument("name")
    p.set_defaults(func=commands.cluster_delete)

    # ---- nodes ----------------------------------------------------------------------------
    nodes = sub.add_parser("node", help="manage nodes").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = nodes.add_parser("list", parents=[common], help="list nodes")
    _cluster(p)
    p.add_argument("--all", action="store_true", help="nodes of every cluster")
    _output(p)
    p.set_defaults(func=commands.node_list)
    p = nodes.add_parser(
        "remove", parents=[common], help="forget a node (stop its agent first; refused while it hosts bricks)"
    )
    _cluster(p)
    p.add_argument("node")
    p.add_argument(
        "--force",
        action="store_true",
        help="remove even while the node is Online or hosts bricks (they are marked Lost)",
    )
    p.set_defaults(func=commands.node_remove)
    p = nodes.add_parser(
        "reenrol",
        parents=[common],
        help="allow an enrolled node name to enrol once more with the join token, within 15 minutes (admins only)",
    )
    _cluster(p)
    p.add_argument("node")
    p.set_defaults(func=commands.node_reenrol)
    p = nodes.add_parser(
        "certificate",
        parents=[common],
        help="sign a node certificate that enrols the node instead of the join token (admins only)",
        description="Sign a client certificate for NODE with the server's own CA, from a certificate signing "
        "request made on the node, so that the key never leaves it: 'openssl req -new -newkey ec -pkeyopt "
        "ec_paramgen_curve:P-256 -nodes -keyout node.key -subj /CN=NODE -out node.csr'. The agent then enrols "
        "over the embedded broker's TLS listener (server --mqtts) with --mqtt-cert/--mqtt-key and no join token. "
        "An enrolled name still needs 'node reenrol' or 'node remove' first.",
    )
    _cluster(p)
    p.add_argument("node")
    p.add_argument("--csr", required=True, metavar="FILE", help="the PEM certificate signing request")
    p.add_argument("--out", metavar="FILE", help="write the certificate here (default: print it)")
    p.add_argument("--ca-out", metavar="FILE", help="also write the server's CA certificate here (agent --mqtt-ca)")
    p.add_argument("--days", type=int, default=365, help="validity in days, 1-1095 (default: 365)")
    _output(p)
    p.set_defaults(func=commands.node_certificate)
    p = nodes.add_parser(
        "probe", parents=[common], help="ask a node's agent for glusterfs version, kernel, free space, xattr support"
    )
    _cluster(p)
    p.add_argument("node")
    p.add_argument("--path", help="absolute path on the node to check (free space, trusted xattrs)")
    p.add_argument("--io-seconds", type=float, default=0, help="also measure write throughput in PATH for N seconds")
    p.add_argument("--wait", action="store_true", help="wait until the task is done and print its result")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait with --wait (default: %(default)s)")
    _output(p)
    p.set_defaults(func=commands.node_probe)

    volumes.add_parsers(sub, common, _cluster, _output)
    demo.add_parser(sub)
    completion.add_parser(sub)
    alerts.add_parser(sub, common, _output)
    audit.add_parser(sub, common, _output)
    backup.add_parsers(sub, common)

    # ---- tasks ----------------------------------------------------------------------------
    tasks = sub.add_parser("task", help="inspect tasks").add_subparsers(dest="action", metavar="ACTION", required=True)
    p = tasks.add_parser("list", parents=[common], help="list tasks, newest first")
    _cluster(p)
    p.add_argument("--node", help="only tasks of this node")
    p.add_argument("--state", help="only tasks in this state (QUEUED, RUNNING, DONE, FAILED, ...)")
    p.add_argument("--limit", type=int, default=50)
    _output(p)
    p.set_defaults(func=commands.task_list)
    p = tasks.add_parser("show", parents=[common], help="show one task with its transitions")
    p.add_argument("task_id")
    _output(p)
    p.set_defaults(func=commands.task_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:  # asked by the completion script
        print("\n".join(completion.candidates(parser, argv[1:])))
        return 0
    args, extra = parser.parse_known_args(argv)
    # bricks (NODE:/path) may come after options: volume create NAME --replica 3 n1:/b n2:/b n3:/b
    if (
        extra
        and isinstance(getattr(args, "bricks", None), list)
        and all(":" in e and not e.startswith("-") for e in extra)
    ):
        args.bricks += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except (CliError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
