"""Replace-brick's heal mark: tell the replicas that a brick is new and empty, as glusterd does.

After a brick is replaced, nothing on the surviving bricks says that the new one lacks every
file (they were written while all bricks were up), so an index heal would find nothing to do.
glusterd (``glusterd_handle_replicate_brick_ops``) mounts the volume with a special client pid
and sets the virtual xattr ``trusted.replace-brick`` = the client xlator name of
the new brick (``VOL-client-N``) on the mount's root; afr then marks the root pending towards
that brick on the others (metadata and entry), and self-heal walks the tree from there. The
mount here is a short-lived ``glusterfs`` FUSE client of the node's own volfile server.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import tempfile
import time

from agent.bricks import BrickError, find_exe, log_tail

log = logging.getLogger(__name__)

REPLACE_BRICK_XATTR = "trusted.replace-brick"
# GF_CLIENT_PID_ADD_REPLICA_MOUNT: afr 10.3 accepts the xattr only from it (older afr wanted the
# self-heal daemon's -6; checked against glusterfs 10.3 here: -6 gets EPERM, -12 "New brick")
MARK_CLIENT_PID = "-12"
RETRYABLE = (errno.ENOTCONN, errno.EAGAIN, errno.EIO, errno.ENOENT, errno.ESTALE)
MOUNT_TIMEOUT = 30.0  # until the FUSE mount is up
MARK_TIMEOUT = 60.0  # until afr accepts the mark (it needs a lock on a live brick of the set)
UMOUNT_TIMEOUT = 15.0
RETRY_PAUSE = 0.5


def _mounted(path: str) -> bool:
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == path for line in fh if len(line.split()) > 1)


def mark_empty_brick(
    name: str, client_xlator: str, host: str, port: int, state_dir: str, log_file: str
) -> dict[str, str]:
    """Set afr's replace-brick mark for `client_xlator` through a temporary mount of volume `name`."""
    exe = find_exe("glusterfs")
    if exe is None:
        raise BrickError("NOGLUSTERFSD: glusterfs (the client) is not installed on this node")
    if not port:
        raise BrickError("ENOTCONN: the node's volfile server is not running")
    base = os.path.join(state_dir, "mnt")
    os.makedirs(base, mode=0o700, exist_ok=True)
    mnt = tempfile.mkdtemp(prefix=f"replace-{name}-", dir=base)
    argv = [
        exe,
        "-s",
        host,
        "--volfile-server-port",
        str(port),
        "--volfile-id",
        name,
        f"--client-pid={MARK_CLIENT_PID}",
        "-l",
        log_file,
        mnt,
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BrickError(
                f"EMOUNT: mounting volume {name} to mark the new brick failed (status {proc.returncode}); "
                f"log tail: {log_tail(log_file) or proc.stderr.strip()}"
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not _mounted(mnt):
            if time.monotonic() > deadline:
                raise BrickError(f"EMOUNT: volume {name} was not mounted within {MOUNT_TIMEOUT:.0f}s")
            time.sleep(RETRY_PAUSE / 5)
        deadline = time.monotonic() + MARK_TIMEOUT
        while True:
            try:
                os.setxattr(mnt, REPLACE_BRICK_XATTR, client_xlator.encode())
                break
            except OSError as exc:
                if exc.errno not in RETRYABLE or time.monotonic() > deadline:
                    raise BrickError(
                        f"EHEALMARK: afr refused the replace-brick mark for {client_xlator} ({exc.strerror}); "
                        f"log tail: {log_tail(log_file)}"
                    ) from None
                time.sleep(RETRY_PAUSE)
        log.info("volume %s: root marked pending heal towards %s", name, client_xlator)
        return {"marked": client_xlator}
    finally:
        _unmount(mnt)


def _unmount(mnt: str) -> None:
    if _mounted(mnt):
        try:
            subprocess.run(["umount", mnt], capture_output=True, timeout=UMOUNT_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            pass
        if _mounted(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=UMOUNT_TIMEOUT, check=False)
    if not _mounted(mnt):
        try:
            os.rmdir(mnt)  # never a recursive delete: it was a mount point
        except OSError as exc:
            log.warning("cannot remove the temporary mount point %s: %s", mnt, exc.strerror)
