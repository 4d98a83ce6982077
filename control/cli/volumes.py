"""CLI commands for devices, volumes, mounts and the failure report."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from broker.messages import STABLE_VOLUME_STATES, VOLUME_DELETED, TaskState, VolumeState
from control.cli import heal, rebalance, replace
from control.cli import options as option_commands
from control.cli.errors import CliError
from control.cli.follow import follow_tasks, follow_volume, report
from control.cli.output import console, emit, styled
from control.client import Client, config_dir
from control.client.format import ago, capacity, size

# the state each operation waits for; the follower fails on any *Failed state
FINAL: dict[str, set[str]] = {
    "create": {VolumeState.STARTED},
    "create-only": {VolumeState.CREATED},
    "start": {VolumeState.STARTED},
    "stop": {VolumeState.STOPPED},
    "delete": {VOLUME_DELETED},
    "expand": set(STABLE_VOLUME_STATES),  # back where it was
    "replace-brick": set(STABLE_VOLUME_STATES),
}


def _client(args: argparse.Namespace) -> Client:
    return Client(getattr(args, "url", None), ca=getattr(args, "ca", None))


def _vpath(args: argparse.Namespace, suffix: str = "") -> str:
    return f"/api/v1/clusters/{args.cluster}/volumes/{args.name}{suffix}"


def add_parsers(
    sub: Any,
    common: argparse.ArgumentParser,
    cluster: Callable[[argparse.ArgumentParser], None],
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    devices = sub.add_parser("device", help="register brick homes: directories or block devices").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = devices.add_parser(
        "add", parents=[common], help="register a directory (--path) or an empty block device (--device) on a node"
    )
    cluster(p)
    p.add_argument("node")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--path", help="a directory whose parent exists; must support trusted xattrs")
    what.add_argument("--device", help="an empty block device; the agent formats it XFS (inode size 512) and mounts it")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the agent's answer")
    p.set_defaults(func=device_add)
    p = devices.add_parser("list", parents=[common], help="list registered devices and paths")
    cluster(p)
    p.add_argument("--node")
    output(p)
    p.set_defaults(func=device_list)
    p = devices.add_parser("remove", parents=[common], help="forget a device or path (refused while a brick uses it)")
    cluster(p)
    p.add_argument("node")
    p.add_argument("path", help="the registered path, or the block device")
    p.set_defaults(func=device_remove)

    volumes = sub.add_parser("volume", help="manage volumes").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = volumes.add_parser(
        "create",
        parents=[common],
        help="create (and start) a volume",
        description="Create a volume from NODE:/path bricks (consecutive bricks form the replica or "
        "disperse sets), or with --size on registered devices. It starts unless --no-start.",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("bricks", nargs="*", metavar="NODE:/path")
    p.add_argument("--replica", type=int, default=0, help="replica count: 2 or 3")
    p.add_argument(
        "--arbiter", type=int, default=0, help="1: the last brick of each set is an arbiter (with --replica 2 or 3)"
    )
    p.add_argument("--disperse", type=int, default=0, help="bricks per disperse set (at least 3)")
    p.add_argument("--redundancy", type=int, default=0, help="bricks per disperse set that may fail (default 1)")
    p.add_argument("--size", help="dynamic provisioning: e.g. 100GiB, bricks placed on registered devices")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="volume option, repeatable; checked as 'volume set' checks it (full key, alias or unique short form, "
        "stored under its full name)",
    )
    p.add_argument("--force", action="store_true", help="allow bricks of one set on the same node")
    p.add_argument("--no-start", action="store_true", help="only create; start later with 'volume start'")
    _wait(p)
    p.set_defaults(func=volume_create)
    for verb, helptext in (
        ("start", "start a volume's bricks (and self-heal daemons)"),
        ("stop", "stop a volume's bricks"),
        ("delete", "delete a stopped volume"),
    ):
        p = volumes.add_parser(verb, parents=[common], help=helptext)
        cluster(p)
        p.add_argument("name")
        if verb == "delete":
            p.add_argument(
                "--purge",
                action="store_true",
                help="also remove GlusterFS metadata (volume-id xattr, "
                ".glusterfs) from the brick directories; data files stay",
            )
        _wait(p)
        p.set_defaults(func=volume_op, verb=verb)
    p = volumes.add_parser(
        "reset-state",
        parents=[common],
        help="admins: take a stuck volume back to its last stable state",
        description="Move a volume stuck in Starting, Deleting or a failed state back to its last stable state "
        "(Created, Started or Stopped; CreateFailed if it was never created). The open tasks of its operation "
        "fail with reason RESET. The reason is recorded in the volume's event. Check the bricks afterwards "
        "('volume status'): the reset changes only what glusterctl records.",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="required: confirms overriding the state machine")
    p.add_argument("--reason", required=True, help="why (recorded in the event stream)")
    p.set_defaults(func=volume_reset_state)
    p = volumes.add_parser("list", parents=[common], help="list volumes")
    cluster(p)
    output(p)
    p.set_defaults(func=volume_list)
    for verb, helptext in (
        ("info", "show a volume's layout and options"),
        ("status", "show each brick (node, path, port, pid, Online) and the self-heal daemons"),
    ):
        p = volumes.add_parser(verb, parents=[common], help=helptext)
        cluster(p)
        p.add_argument("name")
        output(p)
        p.set_defaults(func=volume_info if verb == "info" else volume_status)
    p = volumes.add_parser(
        "expand",
        parents=[common],
        help="add bricks to a volume (clients keep running)",
        description="Add bricks (gluster's add-brick): a multiple of the replica or disperse set size, each "
        "consecutive group forming a new set (for arbiter volumes the third brick of each set is the arbiter), "
        "or --size to place one set on registered devices. New bricks start, then every brick, self-heal daemon "
        "and mount switches to the new graph without a restart. New directories use the new sets at once; "
        "existing ones after 'volume rebalance start' (--fix-layout for the layout only). Without bricks or "
        "--size it retries an expand that failed.",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("bricks", nargs="*", metavar="NODE:/path")
    p.add_argument("--size", help="add one set of this size on registered devices, e.g. 100GiB")
    p.add_argument("--force", action="store_true", help="allow bricks of one new set on the same node")
    _wait(p)
    p.set_defaults(func=volume_expand)
    option_commands.add_parsers(volumes, common, cluster, output)
    heal.add_parser(volumes, common, cluster, output)
    rebalance.add_parser(volumes, common, cluster, output)
    replace.add_parser(volumes, common, cluster, _wait, wait_volume)

    p = sub.add_parser(
        "mount",
        parents=[common],
        help="FUSE-mount a volume here (needs root and glusterfs-client)",
        description="Mount a volume with the stock 'mount -t glusterfs -o backup-volfile-servers=A2:A3"
        "[,server-port=P] A1:/VOLUME MOUNTPOINT': the client fetches its volfile from the volfile server "
        "of an online node holding a brick (A1), the other online nodes holding bricks are backups. "
        "mount.glusterfs gives every server one port: the port most of these nodes use is taken and nodes "
        "on another port are left out. Unmount with 'umount MOUNTPOINT'.",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("mountpoint")
    p.add_argument("--log-file", help="client log (default: CONFIG_DIR/logs/CLUSTER-NAME.log)")
    p.set_defaults(func=mount)

    p = sub.add_parser("failurereport", parents=[common], help="the last failures: node, error, reason, how to fix")
    p.add_argument("-c", "--cluster", help="only this cluster (default: all)")
    p.add_argument("--limit", type=int, default=10)
    output(p)
    p.set_defaults(func=failure_report)


def _wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait for the final state; exit 1 if it failed")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait with --wait (default: %(default)s)")


# ---- waiting ---------------------------------------------------------------------------------
def wait_volume(client: Client, args: argparse.Namespace, verb: str, task_ids: list[str]) -> int:
    """Follow the event stream until the operation's final state: 0 done, 1 failed, 2 timed out."""
    result = follow_volume(
        client, args.cluster, args.name, FINAL[verb], args.timeout, out=sys.stdout, task_ids=task_ids
    )
    if result.ok:
        print(f"Volume {args.name} {(result.volume_state or 'Deleted').lower()}.")
        return 0
    if result.timed_out:
        return report(result)
    print(f"Volume {args.name}: {result.volume_state or 'failed'}", file=sys.stderr)
    if not _print_failures(client, args.cluster, target=f"volume:{args.name}", out=sys.stderr, limit=5):
        report(result)
    return result.exit_code


# ---- devices -----------------------------------------------------------------------------------
def device_add(args: argparse.Namespace) -> int:
    client = _client(args)
    body = {"node": args.node, "path": args.path, "device": args.device}
    answer = client.post(f"/api/v1/clusters/{args.cluster}/devices", body)
    target = args.path or args.device
    if args.no_wait:
        print(f"Device add request sent. Task: {answer['task']['id']}")
        return 0
    followed = follow_tasks(client, [answer["task"]["id"]], 120, out=sys.stderr, cluster=args.cluster)
    if followed.timed_out:
        return report(followed)
    task = client.get(f"/api/v1/tasks/{answer['task']['id']}")
    if task["state"] == TaskState.DONE:
        result = task["result"] or {}
        print(
            f"Registered {target} on {args.node}: {size(result.get('free_bytes'))} free of {size(result.get('total_bytes'))}."
        )
        return 0
    print(f"Registering {target} on {args.node} failed: {task['reason']}\nHow to fix: {task['fix']}", file=sys.stderr)
    return 1


def device_list(args: argparse.Namespace) -> int:
    data = _client(args).get(f"/api/v1/clusters/{args.cluster}/devices", node=args.node)
    emit(
        data,
        args.output,
        [
            ("NODE", "node"),
            ("PATH", "path"),
            ("DEVICE", lambda d: d["device"] or "-"),
            ("STATE", lambda d: styled(d["state"])),
            ("FREE", lambda d: size(d["free_bytes"])),
            ("TOTAL", lambda d: size(d["total_bytes"])),
            ("REASON", "reason"),
        ],
        "devices",
    )
    return 0


def device_remove(args: argparse.Namespace) -> int:
    _client(args).delete(f"/api/v1/clusters/{args.cluster}/devices/{args.node}", path=args.path)
    print(f"{args.path} on {args.node} removed.")
    return 0


# ---- volumes -----------------------------------------------------------------------------------
def volume_create(args: argparse.Namespace) -> int:
    options: dict[str, str] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"invalid --option {item!r}: use KEY=VALUE")
        options[key] = value
    client = _client(args)
    answer = client.post(
        f"/api/v1/clusters/{args.cluster}/volumes",
        {
            "name": args.name,
            "bricks": args.bricks,
            "replica": args.replica,
            "arbiter": args.arbiter,
            "disperse": args.disperse,
            "redundancy": args.redundancy,
            "size": args.size,
            "force": args.force,
            "start": not args.no_start,
            "options": options,
        },
    )
    print("Volume creation request sent.")
    if args.wait:
        return wait_volume(client, args, "create-only" if args.no_start else "create", answer["tasks"])
    return 0


def volume_expand(args: argparse.Namespace) -> int:
    client = _client(args)
    answer = client.post(_vpath(args, "/expand"), {"bricks": args.bricks, "size": args.size, "force": args.force})
    print("Volume expand request sent.")
    return wait_volume(client, args, "expand", answer["tasks"]) if args.wait else 0


def volume_op(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.verb == "delete":
        answer = client.delete(_vpath(args), purge=str(args.purge).lower())
    else:
        answer = client.post(_vpath(args, f"/{args.verb}"))
    print(f"Volume {args.verb} request sent.")
    return wait_volume(client, args, args.verb, answer["tasks"]) if args.wait else 0


def volume_reset_state(args: argparse.Namespace) -> int:
    if not args.force:
        raise CliError("reset-state overrides the volume's state machine: add --force to confirm")
    answer = _client(args).post(_vpath(args, "/reset-state"), {"force": True, "reason": args.reason})
    volume = answer["volume"]
    failed = len(answer.get("tasks") or [])
    print(f"Volume {args.name} is now {volume['state']}" + (f"; {failed} open tasks failed." if failed else "."))
    return 0


def _type_text(v: dict[str, Any]) -> str:
    if v["type"] == "disperse":
        return f"disperse {v['disperse']} (redundancy {v['redundancy']})"
    if v["type"] == "arbiter":
        return "replicate 3 (arbiter 1)"
    if v["type"] == "replicate":
        return f"replicate {v['replica']}"
    return "distribute"


def volume_list(args: argparse.Namespace) -> int:
    data = _client(args).get(f"/api/v1/clusters/{args.cluster}/volumes")
    emit(
        data,
        args.output,
        [
            ("NAME", "name"),
            ("TYPE", _type_text),
            ("STATE", lambda v: styled(v["state"])),
            ("HEALTH", lambda v: styled(v.get("health") or "-")),
            ("BRICKS", lambda v: f"{v['bricks_online']}/{v['bricks_total']} online"),
            ("SIZE", lambda v: size(v.get("size"))),
            ("USED", lambda v: size(v.get("used"))),
            ("FREE", lambda v: size(v.get("free"))),
            ("USE%", lambda v: "-" if v.get("percent") is None else f"{v['percent']:.0f}%"),
            ("CREATED", lambda v: ago(v["created_at"])),
        ],
        "volumes",
    )
    return 0


def volume_info(args: argparse.Namespace) -> int:
    v = _client(args).get(_vpath(args))
    if args.output == "json":
        emit(v, "json", [])
        return 0
    sets = v["bricks_total"] // max(1, {"disperse": v["disperse"], "distribute": 1}.get(v["type"], v["replica"]))
    print(
        f"Volume: {v['name']}\nCluster: {v['cluster']}\nID: {v['id']}\nType: {_type_text(v)}\n"
        f"State: {v['state']}\nHealth: {v.get('health') or '-'}\n"
        f"Capacity: {capacity(v)}, {size(v.get('free'))} free\n"
        f"Bricks: {v['bricks_total']} ({sets} x {v['bricks_total'] // max(sets, 1)})"
    )
    for b in v["bricks"]:
        arbiter = " (arbiter)" if v["type"] == "arbiter" and b["index"] % 3 == 2 else ""
        print(f"  Brick{b['index'] + 1}: {b['node']}:{b['path']}{arbiter}")
    if v["options"]:
        print("Options:")
        for key, value in sorted(v["options"].items()):
            print(f"  {key}: {value}")
    return 0


def volume_status(args: argparse.Namespace) -> int:
    v = _client(args).get(_vpath(args))
    if args.output == "json":
        emit(v, "json", [])
        return 0
    console.print(
        f"Volume {v['name']} ({_type_text(v)}): {styled(v['state'])}"
        f"{', ' + styled(v['health']) if v.get('health') else ''}, "
        f"{v['bricks_online']}/{v['bricks_total']} bricks online, {capacity(v)} used"
    )
    emit(
        v["bricks"],
        "table",
        [
            ("BRICK", lambda b: f"{b['node']}:{b['path']}"),
            ("PORT", "port"),
            ("PID", lambda b: b["pid"] or "-"),
            ("STATE", lambda b: styled(b["state"])),
            ("FREE", lambda b: size(b.get("free_bytes"))),
            ("TOTAL", lambda b: size(b.get("total_bytes"))),
        ],
        "bricks",
    )
    if v["self_heal"]:
        emit(
            v["self_heal"],
            "table",
            [
                ("SELF-HEAL DAEMON ON", "node"),
                ("PID", lambda s: s["pid"] or "-"),
                ("STATE", lambda s: styled(s["state"])),
            ],
            "self-heal daemons",
        )
    return 0


# ---- mount --------------------------------------------------------------------------------
DEFAULT_VOLFILE_PORT = 24007


def mount_argv(name: str, mountpoint: str, servers: list[dict[str, Any]], log_file: str) -> list[str]:
    """`mount -t glusterfs` of `name` from the volfile servers `servers` ({address, port}, in brick order).

    mount.glusterfs gives every server one port (`server-port`), so only servers on one port can be
    backups of each other: the port most servers use is taken (on a tie, the port of the earliest), its
    first server is the one mounted from and the others, once each, go to `backup-volfile-servers`
    (colon-separated, IPv6 addresses in brackets as mount.glusterfs wants them). Servers on another
    port are left out."""
    if not servers:
        raise CliError(f"volume {name} has no online node holding a brick: nothing serves its volfile")
    ports = [int(s["port"]) for s in servers]
    port = max(dict.fromkeys(ports), key=ports.count)  # max keeps the earliest of equal counts
    first, *backups = dict.fromkeys(s["address"] for s in servers if int(s["port"]) == port)
    options = [f"log-file={log_file}"]
    if backups:
        options.append("backup-volfile-servers=" + ":".join(f"[{a}]" if ":" in a else a for a in backups))
    if port != DEFAULT_VOLFILE_PORT:
        options.append(f"server-port={port}")
    return ["mount", "-t", "glusterfs", "-o", ",".join(options), f"{first}:/{name}", mountpoint]


def mount(args: argparse.Namespace) -> int:
    volume = _client(args).get(_vpath(args))
    target = os.path.abspath(args.mountpoint)
    if not os.path.isdir(target):
        raise CliError(f"mount point {args.mountpoint} is not a directory")
    log_file = args.log_file or os.path.join(config_dir(), "logs", f"{args.cluster}-{args.name}.log")
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    argv = mount_argv(args.name, target, volume.get("volfile_servers") or [], log_file)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CliError("mount is not installed here") from None
    if proc.returncode != 0:
        hint = (
            ""
            if os.path.exists("/sbin/mount.glusterfs") or os.path.exists("/usr/sbin/mount.glusterfs")
            else (" (mount.glusterfs is missing: Debian/Ubuntu: apt-get install glusterfs-client)")
        )
        raise CliError(
            f"mount failed (exit {proc.returncode}){hint}; see {log_file}: {(proc.stderr or proc.stdout).strip()[-300:]}"
        )
    deadline = time.monotonic() + 15
    while not _mounted(target):
        if time.monotonic() > deadline:
            raise CliError(f"mount returned but {target} is not mounted; see {log_file}")
        time.sleep(0.1)
    print(f"Volume {args.name} mounted on {target} from {argv[-2]} (unmount with: umount {target})")
    return 0


def _mounted(path: str) -> bool:
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == path for line in fh)


# ---- failure report ---------------------------------------------------------------------------
def _print_failures(
    client: Client, cluster: str | None, target: str | None = None, out: IO[str] = sys.stdout, limit: int = 10
) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get("/api/v1/failures", cluster=cluster, limit=limit)
    if target:
        data = [f for f in data if f["target"] == target]
    for f in data:
        what = f["target"].replace(":", " ") if f["target"] else f["kind"]
        print(f"{what}: {f['kind']} failed on node {f['node']} {ago(f['at'])}.\n", file=out)
        detail = f["error"].split(":", 1)[1].strip() if f["error"].startswith(f["code"] + ":") else f["error"]
        print(f"{f['node']} - Failed due to {f['code']}: {detail}\n", file=out)
        print(f"Reason: {f['reason']}\n", file=out)
        print(f"How to fix: {f['fix']}\n", file=out)
    return data


def failure_report(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.output == "json":
        emit(client.get("/api/v1/failures", cluster=args.cluster, limit=args.limit), "json", [])
        return 0
    if not _print_failures(client, args.cluster, limit=args.limit):
        print("No failures.")
    return 0
