"""Heal: `volume.heal` tasks to the nodes holding bricks, and their results merged per brick.

- info, split-brain, summary: glfsheal on one node sees every brick of the volume (it runs the
  client graph), so one task goes to the first online node holding a brick.
- index: every online node holding bricks gets a task: each self-heal daemon heals its own bricks.

Requests return the task ids at once (the REST call answers 202); `results` merges what the
finished tasks returned, naming bricks NODE:/path (glfsheal names them by volfile address).
"""

from __future__ import annotations

import logging
from typing import Any

from broker.messages import NodeState, TaskKind, TaskState, VolumeState
from control.errors import Conflict, InvalidInput, NotFound
from control.services.tasks import TaskEngine
from control.services.volfiles import bricks_of
from control.store.models import Cluster, Node, Task, Volume

log = logging.getLogger(__name__)

INFO_OPS = ("info", "split-brain", "summary")
OPS = (*INFO_OPS, "index")
HEALABLE = ("replicate", "arbiter", "disperse")


def _volume(cluster: Cluster, name: str) -> Volume:
    volume = Volume.get_or_none((Volume.cluster == cluster) & (Volume.name == name))
    if volume is None:
        raise NotFound(
            f"no volume {name!r} in cluster {cluster.name!r}; see 'glusterctl volume list -c {cluster.name}'"
        )
    return volume


def request(engine: TaskEngine, cluster: Cluster, name: str, op: str) -> list[Task]:
    """Submit and publish the `volume.heal` tasks of `op`; returns them."""
    if op not in OPS:
        raise InvalidInput(f"invalid heal op {op!r}: use one of {', '.join(OPS)}")
    volume = _volume(cluster, name)
    if volume.type not in HEALABLE:
        raise InvalidInput(f"volume {name!r} is {volume.type}: only replicate, arbiter and disperse volumes heal")
    if volume.state != VolumeState.STARTED.value:
        raise Conflict(
            f"volume {name!r} is {volume.state}: start it first (glusterctl volume start -c {cluster.name} {name})"
        )
    online = {
        n.name for n in Node.select(Node.name).where((Node.cluster == cluster) & (Node.state == NodeState.ONLINE.value))
    }
    nodes = [n for n in dict.fromkeys(b.node_name for b in bricks_of(volume)) if n in online]
    if not nodes:
        raise Conflict(f"no node holding a brick of volume {name!r} is Online")
    targets = nodes[:1] if op in INFO_OPS else nodes
    params = {"volume": {"id": volume.id, "name": volume.name, "type": volume.type}, "op": op}
    tasks = [
        engine.submit(cluster, node, TaskKind.VOLUME_HEAL.value, params, target=f"volume:{name}") for node in targets
    ]
    log.info("cluster %s volume %s: heal %s requested on %s", cluster.name, name, op, ",".join(targets))
    engine.publish(tasks)
    return tasks


def _brick_names(volume: Volume) -> dict[str, str]:
    """glfsheal's brick name (ADDRESS:/path, as in the client volfile) -> NODE:/path."""
    addresses = {n.name: n.address or n.name for n in Node.select().where(Node.cluster == volume.cluster_id)}
    names = {}
    for b in bricks_of(volume):
        names[f"{addresses.get(b.node_name, b.node_name)}:{b.path}"] = f"{b.node_name}:{b.path}"
        names.setdefault(f"{b.node_name}:{b.path}", f"{b.node_name}:{b.path}")
    return names


def results(cluster: Cluster, name: str, task_ids: list[str]) -> dict[str, Any]:
    """The merged results of the heal tasks `task_ids` of volume `name`.

    {"op", "done" (all tasks final), "bricks": [{brick, status, entries, files, ...}],
     "nodes": [{node, task, state, reason, triggered?, status?}]}
    """
    volume = _volume(cluster, name)
    if not task_ids:
        raise InvalidInput("give the heal task ids (?task=ID, as the heal request returned them)")
    tasks = list(Task.select().where((Task.id.in_(task_ids)) & (Task.cluster == cluster)))
    found = {t.id for t in tasks}
    missing = [t for t in task_ids if t not in found]
    wrong = [t.id for t in tasks if t.kind != TaskKind.VOLUME_HEAL.value or t.target != f"volume:{name}"]
    if missing or wrong:
        raise NotFound(f"no heal task of volume {name!r} with id {', '.join(missing + wrong)}")
    names = _brick_names(volume)
    order = {n: i for i, n in enumerate(names.values())}
    ops = {str((t.params or {}).get("op")) for t in tasks}
    bricks: dict[str, dict[str, Any]] = {}
    nodes = []
    for task in sorted(tasks, key=lambda t: t.node_name):
        result = task.result or {}
        node: dict[str, Any] = {"node": task.node_name, "task": task.id, "state": task.state, "reason": task.reason}
        if "triggered" in result:
            node.update(triggered=bool(result["triggered"]), status=result.get("status") or {})
        nodes.append(node)
        if task.state != TaskState.DONE.value:
            continue
        for entry in result.get("bricks") or []:
            brick = names.get(str(entry.get("brick")), str(entry.get("brick")))
            bricks.setdefault(brick, {**entry, "brick": brick})
    return {
        "op": ops.pop() if len(ops) == 1 else ",".join(sorted(ops)),
        "done": all(TaskState(t.state).final for t in tasks),
        "bricks": sorted(bricks.values(), key=lambda b: order.get(b["brick"], len(order))),
        "nodes": nodes,
    }
