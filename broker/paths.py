"""Where bricks and brick homes may live: the one rule the control service and the agents both apply.

A brick directory is served by a root ``glusterfsd`` to every client that mounts the volume, and
a registered path or device is where bricks go; none of them may be a system directory (a brick
in ``/etc`` would hand the node's configuration to anyone who mounts it). The control service
checks the paths users give; each agent checks again the paths it is asked to use, after
resolving symlinks, and also refuses its own state directory (where its credentials live).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable

# Directories (and everything under them) that never hold bricks, registered paths or probes.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run", "/var/lib", "/root")
MAX_PATH = 1024  # the store's column size
DEVICE_DIR = "/dev"
DEVICE_MOUNTS = "devices"  # in an agent's state dir: the mount points of the devices it formatted


class PathRefused(ValueError):
    """A path that must not be used; the message says why and what is allowed."""


def normalise(path: str) -> str:
    """``path`` without ``.``/``..``/repeated slashes (POSIX keeps a leading ``//``; we do not)."""
    norm = posixpath.normpath(path or "")
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def system_dir(path: str) -> str | None:
    """The system directory that contains normalised ``path`` (``/`` itself included), or None."""
    if path == "/":
        return "/"
    top = path.split("/")[1]
    if top.startswith("lib"):  # /lib*: /lib, /lib32, /lib64, /libx32 (and anything else so named)
        return "/" + top
    for root in SYSTEM_DIRS:
        if _under(path, root):
            return root
    return None


def check_path(path: str, what: str = "path", *, block_device: bool = False, state_dir: str | None = None) -> str:
    """The normalised ``path``, or PathRefused.

    ``block_device``: ``path`` names a disk to format (``device add --device``): it must be
    under /dev, which is otherwise refused. ``state_dir``: also refuse this directory (an
    agent passes its own).
    """
    norm = normalise(path)
    if not norm.startswith("/") or len(norm) > MAX_PATH:
        raise PathRefused(f"{what} {path[:80]!r} is not allowed: use an absolute path of at most {MAX_PATH} characters")
    if block_device:
        if not norm.startswith(DEVICE_DIR + "/") or norm.count("/") < 2:
            raise PathRefused(f"{what} {norm!r} must be a block device under /dev (e.g. /dev/sdb)")
        return norm
    root = system_dir(norm)
    if root is not None:
        raise PathRefused(
            f"{what} {norm!r} is inside the system directory {root}: bricks and brick homes may not live in "
            f"{', '.join(('/', '/lib*', *SYSTEM_DIRS))}; use a directory such as /srv/bricks or /data"
        )
    if state_dir and _under(norm, normalise(state_dir)):
        raise PathRefused(f"{what} {norm!r} is inside the agent's state directory {state_dir}: use another directory")
    return norm


def device_mounts(state_dir: str) -> str:
    """Where an agent mounts the block devices it formats (one subdirectory each)."""
    return os.path.join(state_dir, DEVICE_MOUNTS)


def check_local_path(path: str, what: str, state_dir: str, *, block_device: bool = False) -> str:
    """``check_path`` on an agent, for the path as given and with its symlinks resolved.

    Inside the state dir only the mount points of the devices the agent formatted may be used.
    """
    mounts = normalise(device_mounts(state_dir))
    for candidate in (normalise(path), os.path.realpath(path)):
        if not block_device and candidate.startswith(mounts + "/"):
            continue
        check_path(candidate, what, block_device=block_device, state_dir=state_dir)
    return normalise(path)


def refuse_local(
    paths: list[str],
    what: str,
    state_dir: str,
    error: Callable[..., Exception],
    *,
    block_device: bool = False,
) -> None:
    """An agent's guard: raise ``error("EPERM: ...", path=PATH)`` for the first path it must not use."""
    for path in paths:
        try:
            check_local_path(path, what, state_dir, block_device=block_device)
        except PathRefused as exc:
            raise error(f"EPERM: {exc}", path=path) from None
