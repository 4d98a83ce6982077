"""Who may do what: roles, grants, and the one answer to "may ACTOR do ACTION on TARGET".

Roles rank admin > operator > viewer; the actions read, operate and admin need viewer,
operator and admin. A grant gives a role over everything (``global``), one cluster, one
volume, one node, or one registered device (``NODE:PATH``) of a cluster:

* a global grant covers every target; a cluster grant covers the cluster and everything in it;
* a volume grant covers that volume only (not creating others);
* a node grant covers the node and the devices and brick paths on it;
* a device grant covers that registered path or device and the brick paths under it.

``User.is_admin`` is a global admin grant. Every refusal says what was needed and what the
user has, e.g. "user bob needs operator on volume gv1 in cluster prod (has: viewer on cluster prod)".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from broker.paths import PathRefused, check_path
from broker.topics import ANY
from control.errors import Forbidden, InvalidInput, NotFound
from control.services.layout import VolumeRequest, parse_bricks
from control.services.placement import check_brick_homes
from control.store.models import Cluster, Device, Grant, Node, User, Volume

log = logging.getLogger(__name__)


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Action(str, Enum):
    READ = "read"
    OPERATE = "operate"
    ADMIN = "admin"


RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
NEEDS = {Action.READ: Role.VIEWER, Action.OPERATE: Role.OPERATOR, Action.ADMIN: Role.ADMIN}
SCOPES = ("global", "cluster", "volume", "node", "device")


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Target:
    """What an action is on. ``name``: the volume or node; ``path``: a device or brick path on node ``name``."""

    kind: str  # global, cluster, volume, node, device
    cluster: str = ""
    name: str = ""
    path: str = ""

    def __str__(self) -> str:
        where = f"in cluster {self.cluster}"
        if self.kind == "global":
            return "everything"
        if self.kind == "cluster":
            return f"cluster {self.cluster}"
        if self.kind == "device":
            return f"device {self.name}:{self.path} {where}"
        return f"{self.kind} {self.name} {where}"


def on_cluster(cluster: str) -> Target:
    return Target("cluster", cluster)


def on_volume(cluster: str, volume: str) -> Target:
    return Target("volume", cluster, volume)


def on_node(cluster: str, node: str) -> Target:
    return Target("node", cluster, node)


def on_device(cluster: str, node: str, path: str) -> Target:
    return Target("device", cluster, node, path)


EVERYTHING = Target("global")


@dataclass(frozen=True)
class Held:
    """A grant as authorization sees it: names instead of rows. ``device`` is the block device, if any."""

    role: Role
    scope: str
    cluster: str = ""
    name: str = ""  # volume or node name
    path: str = ""  # device grants: the registered path (a block device's mount point)
    device: str = ""  # device grants of block devices: /dev/...

    def covers(self, target: Target) -> bool:
        if self.scope == "global":
            return True
        if target.kind == "global" or self.cluster != target.cluster:
            return False
        if self.scope == "cluster":
            return True
        if self.scope == "volume":
            return target.kind == "volume" and target.name == self.name
        if self.scope == "node":
            return target.kind in ("node", "device") and target.name == self.name
        if self.scope == "device":
            return (
                target.kind == "device"
                and target.name == self.name
                and (under(target.path, self.path) or (bool(self.device) and target.path == self.device))
            )
        return False

    def __str__(self) -> str:
        if self.scope == "global":
            return f"{self.role.value} on everything"
        if self.scope == "cluster":
            return f"{self.role.value} on cluster {self.cluster}"
        what = f"{self.name}:{self.device or self.path}" if self.scope == "device" else self.name
        return f"{self.role.value} on {self.scope} {what} in cluster {self.cluster}"


def held(grant: Grant) -> Held | None:
    """The grant by names; None when its object is gone (a recursive delete nulled the key)."""
    role = Role(grant.role)
    if grant.scope == "global":
        return Held(role, "global")
    cluster = grant.cluster
    if cluster is None:
        return None
    if grant.scope == "cluster":
        return Held(role, "cluster", cluster.name)
    volume, node, dev = grant.volume, grant.node, grant.device
    if grant.scope == "volume" and volume is not None:
        return Held(role, "volume", cluster.name, volume.name)
    if grant.scope == "node" and node is not None:
        return Held(role, "node", cluster.name, node.name)
    if grant.scope == "device" and dev is not None:
        return Held(role, "device", cluster.name, dev.node_name, dev.path, dev.device)
    return None


def grants_of(user: User) -> list[Held]:
    """The user's live grants, with ``is_admin`` as a global admin grant."""
    out = [Held(Role.ADMIN, "global")] if user.is_admin else []
    for grant in Grant.select().where(Grant.user == user).order_by(Grant.id):
        item = held(grant)
        if item is not None and item not in out:
            out.append(item)
    return out


@dataclass
class Scope:
    """One user's permissions, loaded once per request (or per refresh of an event stream)."""

    user: str
    grants: list[Held] = field(default_factory=list)

    @classmethod
    def of(cls, user: User) -> Scope:
        return cls(user.name, grants_of(user))

    def role_on(self, target: Target) -> Role | None:
        roles = [g.role for g in self.grants if g.covers(target)]
        return max(roles, key=RANK.__getitem__) if roles else None

    def allows(self, action: Action, target: Target) -> bool:
        role = self.role_on(target)
        return role is not None and RANK[role] >= RANK[NEEDS[action]]

    def refusal(self, action: Action, target: Target) -> str:
        relevant = [g for g in self.grants if g.scope == "global" or (target.cluster and g.cluster == target.cluster)]
        has = ", ".join(str(g) for g in relevant) or (
            f"no grants in cluster {target.cluster}" if target.cluster else "no grants"
        )
        return f"user {self.user} needs {NEEDS[action].value} on {target} (has: {has})"

    def require(self, action: Action, target: Target) -> None:
        if not self.allows(action, target):
            reason = self.refusal(action, target)
            log.info("refused: %s", reason)
            raise Forbidden(reason)

    def in_cluster(self, action: Action, cluster: str) -> bool:
        """Whether some grant at the action's rank reaches into ``cluster`` (a gate; the target is checked later)."""
        need = RANK[NEEDS[action]]
        return any(RANK[g.role] >= need and (g.scope == "global" or g.cluster == cluster) for g in self.grants)

    def require_in_cluster(self, action: Action, cluster: str) -> None:
        if not self.in_cluster(action, cluster):
            target = on_cluster(cluster)
            reason = self.refusal(action, target).replace(f"on {target}", f"on cluster {cluster} or something in it")
            log.info("refused: %s", reason)
            raise Forbidden(reason)

    # ---- what lists show ----------------------------------------------------------------
    def sees_cluster(self, cluster: str) -> bool:
        return self.in_cluster(Action.READ, cluster)

    def sees_node(self, cluster: str, node: str) -> bool:
        return self.allows(Action.READ, on_node(cluster, node)) or any(
            g.scope == "device" and g.cluster == cluster and g.name == node for g in self.grants
        )

    def sees_volume(self, cluster: str, volume: str) -> bool:
        return self.allows(Action.READ, on_volume(cluster, volume))

    def sees_device(self, cluster: str, node: str, path: str) -> bool:
        return self.allows(Action.READ, on_device(cluster, node, path))

    def sees_task(self, cluster: str, node: str, target: str, action: Action = Action.READ) -> bool:
        """A task goes with its cluster or node, or with the volume or device it works on."""
        if self.allows(action, on_node(cluster, node)):
            return True
        kind, _, name = target.partition(":")
        if kind == "volume":
            return self.allows(action, on_volume(cluster, name))
        if kind == "device":
            return self.allows(action, on_device(cluster, node, name))
        return False

    def require_task(self, action: Action, cluster: str, node: str, target: str) -> None:
        if not self.sees_task(cluster, node, target, action):
            kind, _, name = target.partition(":")
            on = on_volume(cluster, name) if kind == "volume" else on_node(cluster, node)
            reason = self.refusal(action, on)
            log.info("refused: %s", reason)
            raise Forbidden(reason)

    def sees_event(self, cluster: str, kind: str, subject: str, data: dict[str, Any]) -> bool:
        """Audit events go to global admins, events without a cluster (users) to global readers; others by subject."""
        if kind == "audit":  # the audit log is for global admins only
            return self.allows(Action.ADMIN, EVERYTHING)
        if not cluster:
            return self.allows(Action.READ, EVERYTHING)
        if self.allows(Action.READ, on_cluster(cluster)):
            return True
        family = kind.split(".")[0]
        if family == "node":
            return self.sees_node(cluster, subject)
        if family == "volume":
            return self.sees_volume(cluster, subject)
        if family == "brick":
            volume, _, rest = subject.partition(":")
            node, _, path = rest.partition(":")
            return self.sees_volume(cluster, volume) or self.sees_device(cluster, node, path)
        if family == "device":
            node, _, path = subject.partition(":")
            return self.sees_device(cluster, node, path)
        if family == "task":
            return self.allows(Action.READ, on_node(cluster, str(data.get("node") or "")))
        return False

    def monitor_clusters(self) -> list[str]:
        """The clusters whose MQTT topics this user may monitor (``[ANY]``: all), by cluster-wide grants."""
        if self.allows(Action.READ, EVERYTHING):
            return [ANY]
        return sorted({g.cluster for g in self.grants if g.scope == "cluster"})

    def device_filter(self, cluster: str, action: Action = Action.OPERATE) -> Callable[[Device], bool]:
        """Which registered devices dynamic placement may use for this user."""
        return lambda dev: self.allows(action, on_device(cluster, dev.node_name, dev.path))


def reload(user: User) -> Scope:
    """The user's permissions as stored now: none once the user is deleted (for long-lived streams)."""
    fresh = User.get_or_none(User.id == user.id)
    return Scope.of(fresh) if fresh is not None else Scope(user.name)


def require(user: User, action: Action, target: Target) -> None:
    Scope.of(user).require(action, target)


# ---- rules that depend on the request's content -------------------------------------------
def check_probe(scope: Scope, cluster: str, node: str, params: dict[str, Any]) -> None:
    """Probing a path (its space, xattrs, write speed) needs admin on the node, and never a system directory."""
    if params.get("path") or params.get("io_seconds"):
        scope.require(Action.ADMIN, on_node(cluster, node))
    if params.get("path"):
        try:
            params["path"] = check_path(str(params["path"]), "probe path")
        except PathRefused as exc:
            raise InvalidInput(str(exc)) from None


def check_volume_create(scope: Scope, cluster: Cluster, req: VolumeRequest) -> None:
    """Operators of the cluster create anywhere; node/device operators only with every brick on their grants.

    Bricks given as NODE:/path must lie under a registered Ready path or device of the node
    unless the user is admin on that node; with ``--size`` placement uses only devices the
    user may operate.
    """
    name = cluster.name
    if req.size_bytes and not req.bricks:
        if not scope.allows(Action.OPERATE, on_cluster(name)):
            usable = scope.device_filter(name)
            if not any(usable(dev) for dev in Device.select().where(Device.cluster == cluster)):
                scope.require(Action.OPERATE, on_cluster(name))
            req.usable_device = usable
        return
    bricks = parse_bricks(cluster, req.bricks)
    for node, path in bricks:
        scope.require(Action.OPERATE, on_device(name, node, path))
    check_brick_homes(cluster, bricks, lambda node: scope.allows(Action.ADMIN, on_node(name, node)))


# ---- the objects grants point at ----------------------------------------------------------
def resolve(cluster: Cluster | None, scope: str, name: str) -> dict[str, Any]:
    """The Grant columns for ``scope``/``name`` in ``cluster``; NotFound when the object does not exist."""
    if scope == "global":
        return {"cluster": None}
    if cluster is None:
        raise InvalidInput(f"a {scope} grant needs a cluster (-c CLUSTER)")
    if scope == "cluster":
        return {"cluster": cluster}
    if scope == "volume":
        volume = Volume.get_or_none((Volume.cluster == cluster) & (Volume.name == name))
        if volume is None:
            raise NotFound(f"no volume {name!r} in cluster {cluster.name!r}")
        return {"cluster": cluster, "volume": volume}
    if scope == "node":
        node = Node.get_or_none((Node.cluster == cluster) & (Node.name == name))
        if node is None:
            raise NotFound(f"no node {name!r} in cluster {cluster.name!r}")
        return {"cluster": cluster, "node": node}
    node_name, sep, path = name.partition(":")
    if scope != "device" or not sep or not node_name or not path:
        raise InvalidInput("a device grant names a registered path or device as NODE:PATH")
    dev = Device.get_or_none(
        (Device.cluster == cluster)
        & (Device.node_name == node_name)
        & ((Device.path == path) | ((Device.device == path) & (Device.device != "")))
    )
    if dev is None:
        raise NotFound(
            f"no device or path {path} registered on node {node_name} in cluster {cluster.name!r}; "
            f"see 'glusterctl device list -c {cluster.name}'"
        )
    return {"cluster": cluster, "device": dev}
