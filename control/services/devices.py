"""Devices: brick homes registered on nodes (a directory, or a block device the agent formats and mounts)."""

from __future__ import annotations

import posixpath
import uuid

from broker.messages import TaskKind, TaskState
from broker.paths import PathRefused, check_path
from control.errors import Conflict, InvalidInput, NotFound
from control.services import events
from control.services.tasks import TaskEngine
from control.store.models import Brick, Cluster, Device, Node, Task, Volume
from control.store.models import database_proxy as db


class DeviceService:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine
        engine.on_final.append(self.task_finished)

    def add(self, cluster: Cluster, node: str, path: str | None, device: str | None) -> tuple[Device, Task]:
        if bool(path) == bool(device):
            raise InvalidInput("give exactly one of --path DIR or --device /dev/DISK")
        try:
            target = check_path(path or device or "", "--device" if device else "--path", block_device=bool(device))
        except PathRefused as exc:
            raise InvalidInput(str(exc)) from None
        with db.atomic():
            if not Node.select().where((Node.cluster == cluster) & (Node.name == node)).exists():
                raise NotFound(f"no node {node!r} in cluster {cluster.name!r}")
            if (
                Device.select()
                .where(
                    (Device.cluster == cluster)
                    & (Device.node_name == node)
                    & ((Device.path == target) | ((Device.device == target) & (Device.device != "")))
                )
                .exists()
            ):
                raise Conflict(f"{target} is already registered on node {node}")
            # a block device's path becomes its mount point once the agent mounted it
            dev = Device.create(
                cluster=cluster, node_name=node, path=target, device=target if device else "", state="Pending"
            )
            task = self.engine.submit(
                cluster,
                node,
                TaskKind.DEVICE_ADD.value,
                {"path": None if device else target, "device": target if device else None},
                operation=uuid.uuid4().hex,
                target=f"device:{target}",
            )
            dev.task_id = task.id
            dev.save()
            events.record("device.state", cluster=cluster.name, subject=f"{node}:{target}", state="Pending")
        self.engine.publish([task])
        return dev, task

    def task_finished(self, task: Task) -> None:
        if task.kind != TaskKind.DEVICE_ADD.value:
            return
        with db.atomic():
            dev = Device.get_or_none(Device.task_id == task.id)
            if dev is None:
                return
            result = task.result or {}
            if task.state == TaskState.DONE.value:
                dev.state, dev.reason = "Ready", ""
                dev.path = result.get("path") or dev.path
                dev.total_bytes, dev.free_bytes = result.get("total_bytes", 0), result.get("free_bytes", 0)
            else:
                dev.state, dev.reason = "Failed", task.reason
            dev.save()
            events.record(
                "device.state",
                cluster=task.cluster.name,
                subject=f"{dev.node_name}:{dev.device or dev.path}",
                state=dev.state,
                reason=dev.reason,
            )

    @staticmethod
    def list_devices(cluster: Cluster, node: str | None = None) -> list[Device]:
        query = Device.select().where(Device.cluster == cluster)
        if node:
            query = query.where(Device.node_name == node)
        return [*query.order_by(Device.node_name, Device.path)]

    @staticmethod
    def remove(cluster: Cluster, node: str, target: str) -> None:
        target = posixpath.normpath(target)
        with db.atomic():
            dev = Device.get_or_none(
                (Device.cluster == cluster)
                & (Device.node_name == node)
                & ((Device.path == target) | (Device.device == target))
            )
            if dev is None:
                raise NotFound(f"no device or path {target} registered on node {node}")
            users = (
                Brick.select(Brick, Volume)
                .join(Volume)
                .where((Brick.device == dev) | ((Brick.node_name == node) & (Brick.path.startswith(dev.path + "/"))))
            )
            names = sorted({b.volume.name for b in users})
            if names:
                raise Conflict(f"{target} on {node} holds bricks of volume(s) {', '.join(names)}: delete them first")
            dev.delete_instance()
            events.record("device.removed", cluster=cluster.name, subject=f"{node}:{target}")
