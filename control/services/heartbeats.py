"""What agents report in their heartbeats: brick state, self-heal daemons and device space.

Rows are written only when something changed: at thousands of nodes, heartbeats are most of
the control service's writes.
"""

from __future__ import annotations

import logging
import time

from broker.messages import BrickReport, DeviceReport, ShdReport
from control.services import events
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
    apply_bricks(cluster_name, node, bricks, now)
    apply_self_heal_daemons(node, shds, now)
    apply_devices(node, devices)


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
        state = "Online" if rep is not None and rep.online else "Offline"
        pid = rep.pid if rep is not None else None
        if state == brick.state and pid == brick.pid:
            continue
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
        state = "Online" if rep is not None and rep.online else "Offline"
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
            state="Online" if rep.online else "Offline",
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
