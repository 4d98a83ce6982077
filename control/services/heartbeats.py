"""What agents report in their heartbeats: brick state and capacity, self-heal daemons and device space.

Rows are written only when something changed: at thousands of nodes, heartbeats are most of
the control service's writes.
"""

from __future__ import annotations

import logging
import time

from broker.messages import BrickReport, BrickState, DeviceReport, ShdReport
from control.services import events, metrics
from control.store.db import delete_where
from control.store.models import Brick, Device, Node, SelfHealDaemon, Volume

log = logging.getLogger(__name__)


def apply_heartbeat(
    cluster_name: str,
    node: Node,
    bricks: list[BrickReport],
    shds: list[ShdReport],
    devices: list[DeviceReport],
    now: float | None = None,
) -> None:
    """Brick Online/Offline, self-heal daemons and device space, from one node's heartbeat."""
    now = now or time.time()
    metrics.COUNTS.add("heartbeats_received")
    apply_bricks(cluster_name, node, bricks, now)
    apply_self_heal_daemons(node, shds, now)
    apply_devices(node, devices)


def would_change(
    cluster_id: int, node_name: str, bricks: list[BrickReport], shds: list[ShdReport], devices: list[DeviceReport]
) -> bool:
    """True if applying these reports would write anything (reads only, no transaction)."""
    reported = {(b.volume_id, b.index): b for b in bricks}
    rows = (
        Brick.select(Brick, Volume.id)
        .join(Volume)
        .where((Volume.cluster == cluster_id) & (Brick.node_name == node_name))
    )
    for brick in rows:
        rep = reported.get((brick.volume.id, brick.index))
        state = BrickState.of(rep is not None and rep.online).value
        if state != brick.state or (rep.pid if rep is not None else None) != brick.pid or capacity_change(brick, rep):
            return True
    shd_rows = {
        row.volume_id: row
        for row in SelfHealDaemon.select()
        .join(Volume)
        .where((Volume.cluster == cluster_id) & (SelfHealDaemon.node_name == node_name))
    }
    reported_shds = {r.volume_id: r for r in shds}
    if set(reported_shds) - set(shd_rows):
        return True  # a daemon of a volume not recorded yet (the full path checks the volume exists)
    for volume_id, row in shd_rows.items():
        shd = reported_shds.get(volume_id)
        state = BrickState.of(shd is not None and shd.online).value
        if state != row.state or (shd.pid if shd is not None else None) != row.pid:
            return True
    if devices:
        stored = {
            d.path: (d.total_bytes, d.free_bytes)
            for d in Device.select(Device.path, Device.total_bytes, Device.free_bytes).where(
                (Device.cluster == cluster_id) & (Device.node_name == node_name)
            )
        }
        for dev in devices:
            if dev.path in stored and stored[dev.path] != (dev.total_bytes, dev.free_bytes):
                return True
    return False


def apply_bricks(cluster_name: str, node: Node, reports: list[BrickReport], now: float) -> None:
    """A brick the node does not report is Offline; one event per state change."""
    reported = {(b.volume_id, b.index): b for b in reports}
    rows = (
        Brick.select(Brick, Volume)
        .join(Volume)
        .where((Volume.cluster == node.cluster_id) & (Brick.node_name == node.name))
    )
    for brick in rows:
        rep = reported.get((brick.volume.id, brick.index))
        state = BrickState.of(rep is not None and rep.online).value
        pid = rep.pid if rep is not None else None
        capacity = capacity_change(brick, rep)
        if state == brick.state and pid == brick.pid and not capacity:
            continue
        for name, value in capacity.items():
            setattr(brick, name, value)
        if state != brick.state:
            log.info(
                "cluster %s volume %s brick %s:%s: %s -> %s",
                cluster_name,
                brick.volume.name,
                node.name,
                brick.path,
                brick.state,
                state,
            )
            events.record(
                "brick.state",
                cluster=cluster_name,
                subject=f"{brick.volume.name}:{node.name}:{brick.path}",
                state=state,
                pid=pid,
            )
            brick.state_changed_at = now
        brick.state, brick.pid = state, pid
        brick.save()


CAPACITY_FIELDS = ("total_bytes", "free_bytes", "used_bytes", "inodes_total", "inodes_free", "inodes_used")
# a busy brick's free space moves on every heartbeat: smaller moves than these are not written
CAPACITY_STEP_BYTES = 4 * 1024 * 1024
CAPACITY_STEP_INODES = 64


def capacity_change(brick: Brick, rep: BrickReport | None) -> dict[str, int | str]:
    """The capacity columns to write from ``rep``: all of them when one moved by a step or more, else none.

    A report without capacity (an older agent, an unreadable path) keeps what was stored.
    """
    if rep is None or rep.total_bytes is None:
        return {}
    new: dict[str, int | str] = {name: getattr(rep, name) or 0 for name in CAPACITY_FIELDS}
    new["fsid"] = rep.fsid
    stored = {name: getattr(brick, name) for name in (*CAPACITY_FIELDS, "fsid")}
    if any(stored[name] is None for name in CAPACITY_FIELDS) or stored["fsid"] != rep.fsid:
        return new
    for name in CAPACITY_FIELDS:
        step = CAPACITY_STEP_INODES if name.startswith("inodes") else CAPACITY_STEP_BYTES
        if name in ("total_bytes", "inodes_total"):
            step = 1
        if abs(int(new[name]) - int(stored[name])) >= step:
            return new
    return {}


def apply_self_heal_daemons(node: Node, reports: list[ShdReport], now: float) -> None:
    """One row per (volume, node) the node reported; a daemon it stopped reporting is Offline."""
    reported = {s.volume_id: s for s in reports}
    known = {
        row.volume_id: row
        for row in SelfHealDaemon.select()
        .join(Volume)
        .where((Volume.cluster == node.cluster_id) & (SelfHealDaemon.node_name == node.name))
    }
    for volume_id, row in known.items():
        rep = reported.get(volume_id)
        state = BrickState.of(rep is not None and rep.online).value
        pid = rep.pid if rep is not None else None
        if state == row.state and pid == row.pid:
            continue
        if state != row.state:
            row.state_changed_at = now
        row.state, row.pid = state, pid
        row.save()
    new = [volume_id for volume_id in reported if volume_id not in known]
    if not new:
        return
    # only volumes of the node's cluster: an agent may still run a daemon of a deleted volume
    for volume in Volume.select(Volume.id).where((Volume.cluster == node.cluster_id) & Volume.id.in_(new)):
        rep = reported[volume.id]
        SelfHealDaemon.create(
            volume=volume.id,
            node_name=node.name,
            pid=rep.pid,
            state=BrickState.of(rep.online).value,
            state_changed_at=now,
        )


def apply_devices(node: Node, reports: list[DeviceReport]) -> None:
    for dev in reports:
        Device.update(total_bytes=dev.total_bytes, free_bytes=dev.free_bytes).where(
            (Device.cluster == node.cluster_id)
            & (Device.node_name == node.name)
            & (Device.path == dev.path)
            & ((Device.free_bytes != dev.free_bytes) | (Device.total_bytes != dev.total_bytes))
        ).execute()


def forget_node(node: Node) -> None:
    """Drop what the node's heartbeats reported that lives outside its own row (when it is removed)."""
    volumes = Volume.select(Volume.id).where(Volume.cluster == node.cluster_id)
    delete_where(SelfHealDaemon, (SelfHealDaemon.node_name == node.name) & SelfHealDaemon.volume.in_(volumes))
