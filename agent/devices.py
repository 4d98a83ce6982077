"""Brick homes registered on this node: directories, or block devices the agent formats and mounts.

Registered entries are kept in ``STATE_DIR/devices.json``; their space goes into every
heartbeat, and mounts of formatted devices are restored when the agent starts.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import threading
from typing import Any

from agent.bricks import BrickError, oserror
from broker.messages import DeviceReport
from broker.paths import refuse_local

log = logging.getLogger(__name__)

XFS_INODE_SIZE = "512"  # what GlusterFS wants for its xattrs
# how long each tool may take before the task fails with ETIMEDOUT (a hung disk must not hang the agent)
BLKID_TIMEOUT = 30.0
MKFS_TIMEOUT = 300.0  # mkfs.xfs discards (TRIMs) the whole device first: minutes on a large slow disk
MOUNT_TIMEOUT = 60.0


def run_tool(argv: list[str], timeout: float, node: str, device: str) -> subprocess.CompletedProcess[str]:
    """Run a system tool with a deadline; a tool that does not finish is killed and the task fails
    with ``ETIMEDOUT``, one that is not installed with ``ENOENT`` (both BrickError)."""
    tool = os.path.basename(argv[0])
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        log.warning("node %s: %s %s did not finish in %.0f s: killed", node, tool, device, timeout)
        raise BrickError(
            f"ETIMEDOUT: {tool} did not finish in {timeout:.0f} s ({device} on node {node})", path=device
        ) from None
    except FileNotFoundError:
        raise BrickError(f"ENOENT: {tool} is not installed on node {node}", path=device) from None


def check_xattrs(path: str, node: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".glusterctl-xattr-", dir=path)
    try:
        os.setxattr(tmp, "trusted.glusterctl.probe", b"1")
        if os.getxattr(tmp, "trusted.glusterctl.probe") != b"1":
            raise BrickError(f"ENOTSUP: trusted xattrs read back wrong in {path} on node {node}", path=path)
    except OSError as exc:
        raise oserror(exc, f"trusted xattrs in {path} on node {node}", path=path) from None
    finally:
        os.close(fd)
        os.unlink(tmp)


def is_mounted(path: str) -> bool:
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == path for line in fh)


class DeviceManager:
    def __init__(self, state_dir: str, node: str) -> None:
        self.node = node
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "devices.json")
        self.mount_root = os.path.join(state_dir, "devices")
        self._lock = threading.Lock()

    def entries(self) -> list[dict[str, Any]]:
        try:
            with open(self.path) as fh:
                entries: list[dict[str, Any]] = json.load(fh)
                return entries
        except (OSError, ValueError):
            return []

    def _save(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(entries, fh)
        os.replace(tmp, self.path)

    def add_path(self, path: str) -> dict[str, Any]:
        refuse_local([path], "--path", self.state_dir, BrickError)
        parent = os.path.dirname(path.rstrip("/")) or "/"
        if not os.path.isdir(parent):
            raise BrickError(
                f"ENOENT: the parent directory {parent} of {path} does not exist on node {self.node}", path=path
            )
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise oserror(exc, f"creating {path} on node {self.node}", path=path) from None
        check_xattrs(path, self.node)
        return self._register({"path": path, "device": ""})

    def add_device(self, device: str) -> dict[str, Any]:
        refuse_local([device], "--device", self.state_dir, BrickError, block_device=True)
        if not os.path.exists(device):
            raise BrickError(f"ENOENT: block device {device} does not exist on node {self.node}", path=device)
        probe = run_tool(["blkid", "-p", device], BLKID_TIMEOUT, self.node, device)
        if probe.returncode != 2:  # 2: nothing found, the device is empty
            raise BrickError(
                f"EEXIST: {device} on node {self.node} is not empty ({probe.stdout.strip() or probe.stderr.strip()}); "
                "wipe it first (wipefs -a) if its data is not needed",
                path=device,
            )
        mkfs = run_tool(["mkfs.xfs", "-i", f"size={XFS_INODE_SIZE}", device], MKFS_TIMEOUT, self.node, device)
        if mkfs.returncode != 0:
            raise BrickError(
                f"EIO: mkfs.xfs {device} failed on node {self.node}: {mkfs.stderr.strip()[-300:]}", path=device
            )
        mountpoint = os.path.join(self.mount_root, os.path.basename(device))
        os.makedirs(mountpoint, exist_ok=True)
        self._mount(device, mountpoint)
        check_xattrs(mountpoint, self.node)
        return self._register({"path": mountpoint, "device": device})

    def _mount(self, device: str, mountpoint: str) -> None:
        if is_mounted(mountpoint):
            return
        out = run_tool(
            ["mount", "-t", "xfs", "-o", "noatime,inode64", device, mountpoint], MOUNT_TIMEOUT, self.node, device
        )
        if out.returncode != 0:
            raise BrickError(
                f"EIO: mounting {device} on {mountpoint} failed on node {self.node}: {out.stderr.strip()}", path=device
            )

    def _register(self, entry: dict[str, Any]) -> dict[str, Any]:
        st = os.statvfs(entry["path"])
        with self._lock:
            entries = [e for e in self.entries() if e["path"] != entry["path"]]
            entries.append(entry)
            self._save(entries)
        return {**entry, "total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}

    def restore_mounts(self) -> None:
        for entry in self.entries():
            if entry.get("device"):
                try:
                    self._mount(entry["device"], entry["path"])
                except BrickError as exc:
                    log.error("cannot restore the mount of %s: %s", entry["device"], exc)

    def reports(self) -> list[DeviceReport]:
        out = []
        for entry in self.entries():
            try:
                st = os.statvfs(entry["path"])
            except OSError:
                continue
            out.append(
                DeviceReport(
                    path=entry["path"], total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize
                )
            )
        return out
