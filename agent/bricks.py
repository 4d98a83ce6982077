"""Bricks and self-heal daemons on this node: prepare brick directories, run and supervise
``glusterfsd`` (and ``glusterfs`` as self-heal daemon), and report what runs.

Each process fetches its volfile from the agent's volfile server by key
(``-s 127.0.0.1 --volfile-server-port P --volfile-id KEY``, as glusterd starts them), so a
changed volfile reaches it through FETCHSPEC without a restart (see agent/volfiles.py).

Processes daemonise themselves and keep running when the agent restarts; the agent adopts them
again from their pid files. What should run is kept in ``STATE_DIR/volumes/VOLUME_ID/``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from broker.messages import BrickReport, ShdReport
from broker.paths import refuse_local

log = logging.getLogger(__name__)

VOLUME_ID_XATTR = "trusted.glusterfs.volume-id"
# what GlusterFS keeps on a brick root: removed by "volume delete --purge"
GLUSTER_XATTRS = ("trusted.glusterfs.", "trusted.gfid", "trusted.afr.", "trusted.ec.")
START_TIMEOUT = 20.0
PORT_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
SUPERVISE_INTERVAL = 1.0
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
SOCKET_DIR = "/run/glusterctl"


class BrickError(Exception):
    """A brick operation failed; ``reason`` starts with a code (ENOENT, EADDRINUSE, ...)."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.details = details


def find_exe(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener on ``host:port`` would fail: a listener holds it, or a connection uses it.

    Connecting finds only listeners; an outgoing connection whose ephemeral local port is this one
    (the kernel's ephemeral range overlaps GlusterFS's brick ports) is found only by binding.
    """
    if port_open(port, host):
        return True
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as glusterfsd binds
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def pid_running(pid_file: str, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process runs and its command line contains ``marker``."""
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if marker in cmdline and not gone(pid) else None


def gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def log_tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:]).strip()
    except OSError:
        return ""


def oserror(exc: OSError, what: str, **details: Any) -> BrickError:
    code = errno.errorcode.get(exc.errno or 0, "EIO")
    if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
        code = "ENOTSUP"
    return BrickError(f"{code}: {what}: {exc.strerror}", **details)


@dataclass
class Restart:
    attempts: int = 0
    not_before: float = 0.0


class BrickManager:
    def __init__(self, state_dir: str, node: str, node_uuid: str, address: str = "127.0.0.1") -> None:
        self.state_dir = state_dir
        # where processes fetch their volfiles: set by the agent once its volfile server listens
        self.volfile_host = "::1" if ":" in address and address != "0.0.0.0" else "127.0.0.1"
        self.volfile_port = 0
        self.node = node
        self.address = address
        self.node_uuid = node_uuid
        self.root = os.path.join(state_dir, "volumes")
        self.logs = os.path.join(state_dir, "logs")
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        # process work is serialised per volume: a slow start of one volume never holds up another's
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()  # guards _locks and _restarts
        self._restarts: dict[str, Restart] = {}
        self._stop = threading.Event()

    def _volume_lock(self, volume_id: str) -> threading.RLock:
        """The lock of one volume's desired state and processes (re-entrant: start calls ensure)."""
        with self._locks_guard:
            return self._locks.setdefault(volume_id, threading.RLock())

    # ---- files ----------------------------------------------------------------------------
    def _vdir(self, volume_id: str) -> str:
        return os.path.join(self.root, volume_id)

    def _desired_path(self, volume_id: str) -> str:
        return os.path.join(self._vdir(volume_id), "desired.json")

    def desired(self, volume_id: str) -> dict[str, Any] | None:
        try:
            with open(self._desired_path(volume_id)) as fh:
                desired: dict[str, Any] = json.load(fh)
                return desired
        except (OSError, ValueError):
            return None

    def _save_desired(self, volume_id: str, desired: dict[str, Any]) -> None:
        os.makedirs(self._vdir(volume_id), exist_ok=True)
        tmp = self._desired_path(volume_id) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(desired, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._desired_path(volume_id))

    def _files(self, volume_id: str, name: str, what: str) -> tuple[str, str, str, str]:
        """(marker, pid file, log file, control socket) of one process; the marker (the pid file, which is
        on the process's command line) is what `pid_running` looks for."""
        vdir = self._vdir(volume_id)
        digest = hashlib.sha1(f"{self.state_dir}/{volume_id}/{what}".encode()).hexdigest()[:20]
        return (
            os.path.join(vdir, f"{what}.pid"),
            os.path.join(vdir, f"{what}.pid"),
            os.path.join(self.logs, f"{name}-{what}.log"),
            os.path.join(SOCKET_DIR, f"{digest}.socket"),
        )

    def volume_ids(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root))
        except OSError:
            return []

    # ---- prepare (volume create) -----------------------------------------------------------
    def prepare(self, volume_id: str, name: str, bricks: list[dict[str, Any]]) -> dict[str, Any]:
        refuse_local([b["path"] for b in bricks], "brick path", self.state_dir, BrickError)
        want = uuid.UUID(volume_id).bytes
        for brick in bricks:
            path = brick["path"]
            parent = os.path.dirname(path.rstrip("/")) or "/"
            if not os.path.isdir(parent):
                raise BrickError(
                    f"ENOENT: the parent directory {parent} of brick {path} does not exist on node {self.node}",
                    path=path,
                )
            try:
                os.makedirs(path, exist_ok=True)
                try:
                    have = os.getxattr(path, VOLUME_ID_XATTR)
                except OSError as exc:
                    if exc.errno not in (errno.ENODATA, getattr(errno, "ENOATTR", errno.ENODATA)):
                        raise
                    have = None
                if have is not None and have != want:
                    other = str(uuid.UUID(bytes=have)) if len(have) == 16 else have.hex()
                    raise BrickError(
                        f"EEXIST: brick path {path} on node {self.node} already belongs to another "
                        f"volume (volume-id {other})",
                        path=path,
                    )
                if have is None:
                    os.setxattr(path, VOLUME_ID_XATTR, want)
                os.makedirs(os.path.join(path, ".glusterfs"), mode=0o600, exist_ok=True)
            except OSError as exc:
                raise oserror(exc, f"preparing brick {path} on node {self.node}", path=path) from None
        with self._volume_lock(volume_id):
            desired = self.desired(volume_id) or {"name": name, "started": False, "bricks": {}, "shd": False}
            desired["name"] = name
            for brick in bricks:
                desired["bricks"][str(brick["index"])] = {"path": brick["path"]}
            self._save_desired(volume_id, desired)
        return {"bricks": [b["path"] for b in bricks]}

    # ---- start ------------------------------------------------------------------------------
    def control_socket(self, volume_id: str, name: str, what: str) -> str:
        """The unix socket a process of this volume listens on for glusterd's brick-op RPCs."""
        return self._files(volume_id, name, what)[3]

    def start(self, volume_id: str, name: str, bricks: list[dict[str, Any]], shd: str | None) -> dict[str, Any]:
        """Start the bricks and the self-heal daemon (key `shd`) that do not run; their volfiles
        must already be served (agent/volfiles.py)."""
        exe = find_exe("glusterfsd")
        if exe is None:
            raise BrickError(f"NOGLUSTERFSD: glusterfsd is not installed on node {self.node}")
        if not self.volfile_port:
            raise BrickError(f"ENOTCONN: the volfile server of node {self.node} is not running")
        with self._volume_lock(volume_id):
            desired = self.desired(volume_id) or {"name": name, "bricks": {}}
            desired.update(name=name, started=True, shd=shd or False)
            for brick in bricks:
                desired["bricks"][str(brick["index"])] = {k: brick[k] for k in ("path", "port", "volfile_id")}
            self._save_desired(volume_id, desired)
            conflicts, failures, started = [], [], {}
            for brick in bricks:
                try:
                    started[brick["index"]] = self._ensure_brick(
                        volume_id, name, brick["index"], desired["bricks"][str(brick["index"])]
                    )
                except BrickError as exc:
                    if str(exc).startswith("EADDRINUSE"):
                        conflicts.append(brick["index"])
                    failures.append(exc)
            if failures:
                err = failures[0]
                if conflicts:
                    err.details["port_conflicts"] = conflicts
                raise err
            shd_pid = self._ensure_shd(volume_id, name, shd) if shd else None
        return {"bricks": {str(i): pid for i, pid in started.items()}, "shd_pid": shd_pid}

    def _volfile_args(self, key: str) -> list[str]:
        return ["-s", self.volfile_host, "--volfile-server-port", str(self.volfile_port), "--volfile-id", key]

    def _ensure_brick(self, volume_id: str, name: str, index: int, brick: dict[str, Any]) -> int:
        marker, pid_file, log_file, sock = self._files(volume_id, name, f"brick-{index}")
        pid = pid_running(pid_file, marker)
        if pid:
            return pid
        if not os.path.isdir(brick["path"]):
            raise BrickError(
                f"ENOENT: brick directory {brick['path']} is missing on node {self.node}", path=brick["path"]
            )
        os.makedirs(SOCKET_DIR, exist_ok=True)
        port = int(brick["port"])
        if port_taken(port, self.address):
            raise BrickError(
                f"EADDRINUSE: port {port} for brick {brick['path']} is already in use on node {self.node}",
                path=brick["path"],
                port=port,
            )
        argv = [
            find_exe("glusterfsd") or "glusterfsd",
            *self._volfile_args(brick.get("volfile_id") or f"{name}.{self.node}"),
            "-p",
            pid_file,
            "-l",
            log_file,
            "-S",
            sock,
            "--brick-name",
            brick["path"],
            "--brick-port",
            str(port),
            "--process-name",
            "brick",
            "--xlator-option",
            f"*-posix.glusterd-uuid={self.node_uuid}",
        ]
        pid = self._spawn(argv, pid_file, marker, log_file, f"brick {brick['path']}", brick["path"], port)
        deadline = time.monotonic() + PORT_TIMEOUT
        while not port_open(port, self.address):
            if not pid_running(pid_file, marker):
                tail = log_tail(log_file)
                code = self._start_failure(tail, port)
                raise BrickError(
                    f"{code}: glusterfsd for brick {brick['path']} (port {port}) exited at start; log tail: {tail}",
                    path=brick["path"],
                    port=port,
                )
            if time.monotonic() > deadline:
                raise BrickError(
                    f"BRICKEXIT: brick {brick['path']} did not listen on port {port} within "
                    f"{PORT_TIMEOUT:.0f}s; log tail: {log_tail(log_file)}",
                    path=brick["path"],
                    port=port,
                )
            time.sleep(0.1)
        log.info("volume %s brick %d (%s) running: pid %d, port %d", name, index, brick["path"], pid, port)
        return pid

    def _ensure_shd(self, volume_id: str, name: str, key: str) -> int:
        marker, pid_file, log_file, sock = self._files(volume_id, name, "shd")
        pid = pid_running(pid_file, marker)
        if pid:
            return pid
        if not self.volfile_port:
            raise BrickError(f"ENOTCONN: the volfile server of node {self.node} is not running")
        exe = find_exe("glusterfs") or "glusterfs"
        argv = [
            exe,
            *self._volfile_args(key),
            "-p",
            pid_file,
            "-l",
            log_file,
            "-S",
            sock,
            "--xlator-option",
            f"*replicate*.node-uuid={self.node_uuid}",
            # not --process-name glustershd: fetched by -s, that name makes glusterfs a multiplexed
            # shd, which attaches graphs only with a "pidfile" in the GETSPEC reply's xdata and
            # otherwise runs with no active graph; a plain client process runs the same shd graph
            "--client-pid=-6",
        ]
        pid = self._spawn(argv, pid_file, marker, log_file, f"self-heal daemon of {name}", "", 0)
        log.info("volume %s self-heal daemon running: pid %d", name, pid)
        return pid

    def _start_failure(self, tail: str, port: int) -> str:
        """EADDRINUSE when the process could not listen on its port, else BRICKEXIT.

        glusterfsd logs "Address already in use" only sometimes within the tail, and the holder may
        be an outgoing connection that is gone by the time we look (the kernel's ephemeral range
        overlaps the brick ports), so "creation of listener failed" counts as the same: the control
        service then moves the brick to another port, a bounded number of times.
        """
        if "Address already in use" in tail or (port and "creation of listener failed" in tail):
            return "EADDRINUSE"
        return "BRICKEXIT"

    def _spawn(
        self, argv: list[str], pid_file: str, marker: str, log_file: str, what: str, path: str, port: int
    ) -> int:
        os.makedirs(SOCKET_DIR, exist_ok=True)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise BrickError(f"NOGLUSTERFSD: {argv[0]} is not installed on node {self.node}") from None
        except subprocess.TimeoutExpired:
            raise BrickError(
                f"ETIMEDOUT: {what} did not finish starting in {START_TIMEOUT:.0f} s", path=path, port=port
            ) from None
        if proc.returncode != 0:
            tail = log_tail(log_file) or proc.stderr.strip()
            code = self._start_failure(tail, port)
            raise BrickError(
                f"{code}: {what} exited at start (status {proc.returncode}); log tail: {tail}", path=path, port=port
            )
        deadline = time.monotonic() + 5
        while (pid := pid_running(pid_file, marker)) is None:
            if time.monotonic() > deadline:
                raise BrickError(
                    f"BRICKEXIT: {what} started but wrote no pid file; log tail: {log_tail(log_file)}",
                    path=path,
                    port=port,
                )
            time.sleep(0.05)
        return pid

    # ---- stop / delete --------------------------------------------------------------------
    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if gone(pid):
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _kill_all(self, pids: list[int]) -> None:
        """SIGTERM every process at once, then wait for them together (SIGKILL after STOP_TIMEOUT):
        a volume's bricks and self-heal daemon exit in parallel, not one after the other."""
        alive = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if not gone(pid)]
            if alive:
                time.sleep(0.05)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _stop_processes(self, volume_id: str, name: str) -> list[int]:
        stopped = []
        vdir = self._vdir(volume_id)
        pid_files = [e for e in sorted(os.listdir(vdir)) if e.endswith(".pid")] if os.path.isdir(vdir) else []
        for entry in pid_files:
            pid = pid_running(os.path.join(vdir, entry), os.path.join(vdir, entry))
            if pid:
                stopped.append(pid)
        self._kill_all(stopped)
        for entry in pid_files:
            try:
                os.unlink(os.path.join(vdir, entry))
            except FileNotFoundError:
                pass
        return stopped

    def stop(self, volume_id: str, name: str) -> dict[str, Any]:
        with self._volume_lock(volume_id):
            desired = self.desired(volume_id)
            if desired is not None:
                desired["started"] = False
                self._save_desired(volume_id, desired)
            stopped = self._stop_processes(volume_id, name)
        log.info("volume %s stopped on this node (pids %s)", name, stopped)
        return {"stopped_pids": stopped}

    def release(self, volume_id: str, name: str, index: int, path: str, last_goes: bool = True) -> dict[str, Any]:
        """A replaced brick: stop its process and forget it, if brick `index` here is still `path` (a
        retried replace finds the new brick there and leaves it). With no brick of the volume left on
        this node (and `last_goes`), its self-heal daemon stops and the volume's state here goes too.
        Data stays."""
        with self._volume_lock(volume_id):
            desired = self.desired(volume_id)
            entry = (desired or {}).get("bricks", {}).get(str(index))
            if desired is None or entry is None or entry.get("path") != path:
                return {"released": False, "left": len((desired or {}).get("bricks", {}))}
            marker, pid_file, _, _ = self._files(volume_id, name, f"brick-{index}")
            pid = pid_running(pid_file, marker)
            if pid:
                self._kill(pid)
            try:
                os.unlink(pid_file)
            except FileNotFoundError:
                pass
            del desired["bricks"][str(index)]
            with self._locks_guard:
                self._restarts.pop(f"{volume_id}/brick-{index}", None)
            left = len(desired["bricks"])
            if left or not last_goes:
                self._save_desired(volume_id, desired)
            else:
                self._stop_processes(volume_id, name)
                shutil.rmtree(self._vdir(volume_id), ignore_errors=True)
                with self._locks_guard:
                    self._restarts = {k: v for k, v in self._restarts.items() if not k.startswith(volume_id)}
        log.info("volume %s brick %d (%s) released (pid %s); %d bricks left here", name, index, path, pid, left)
        return {"released": True, "stopped_pid": pid, "left": left}

    def delete(self, volume_id: str, name: str, bricks: list[dict[str, Any]], purge: bool) -> dict[str, Any]:
        with self._volume_lock(volume_id):
            self._stop_processes(volume_id, name)
            purged = []
            if purge:
                want = uuid.UUID(volume_id).bytes
                for brick in bricks:
                    path = brick["path"]
                    try:
                        if os.getxattr(path, VOLUME_ID_XATTR) != want:
                            continue  # not ours: never touch another volume's metadata
                    except OSError:
                        continue
                    try:
                        for attr in os.listxattr(path):
                            if attr.startswith(GLUSTER_XATTRS):
                                os.removexattr(path, attr)
                        for entry in os.listdir(path):
                            if entry == ".glusterfs" or entry.startswith(".glusterfs-anonymous-inode-"):
                                shutil.rmtree(os.path.join(path, entry), ignore_errors=True)
                    except OSError as exc:
                        raise oserror(exc, f"purging brick {path}", path=path) from None
                    purged.append(path)
            shutil.rmtree(self._vdir(volume_id), ignore_errors=True)
            with self._locks_guard:
                self._restarts = {k: v for k, v in self._restarts.items() if not k.startswith(volume_id)}
        return {"purged": purged}

    # ---- supervision and reports --------------------------------------------------------------
    def supervise_once(self, now: float | None = None) -> None:
        """Restart, with backoff, the bricks and daemons of started volumes that are not running."""
        now = now or time.monotonic()
        for volume_id in self.volume_ids():
            with self._volume_lock(volume_id):
                desired = self.desired(volume_id)
                if not desired or not desired.get("started"):
                    continue
                name = desired["name"]
                todo = [(f"brick-{i}", b) for i, b in desired["bricks"].items() if b.get("port")]
                if desired.get("shd"):
                    todo.append(("shd", None))
                for what, brick in todo:
                    marker, pid_file, _log_file, _ = self._files(volume_id, name, what)
                    key = f"{volume_id}/{what}"
                    running = pid_running(pid_file, marker)
                    with self._locks_guard:
                        if running:
                            if key in self._restarts and now >= self._restarts[key].not_before + 60:
                                del self._restarts[key]  # ran a minute: forget past failures
                            continue
                        state = self._restarts.setdefault(key, Restart())
                        if now < state.not_before:
                            continue
                        state.attempts += 1
                        state.not_before = now + RESTART_BACKOFF[min(state.attempts - 1, len(RESTART_BACKOFF) - 1)]
                    log.warning("volume %s %s is not running: restarting (attempt %d)", name, what, state.attempts)
                    try:
                        if brick is not None:
                            self._ensure_brick(volume_id, name, int(what.split("-")[1]), brick)
                        else:
                            self._ensure_shd(volume_id, name, self._shd_key(name, desired))
                    except BrickError as exc:
                        log.warning("volume %s %s restart failed: %s", name, what, exc)

    @staticmethod
    def _shd_key(name: str, desired: dict[str, Any]) -> str:
        key = desired.get("shd")
        return key if isinstance(key, str) else f"shd/{name}"

    def run_supervisor(self, stop: threading.Event) -> None:
        while not stop.wait(SUPERVISE_INTERVAL):
            try:
                self.supervise_once()
            except Exception:
                log.exception("brick supervisor failed")

    def reports(self) -> tuple[list[BrickReport], list[ShdReport]]:
        bricks, shds = [], []
        for volume_id in self.volume_ids():
            desired = self.desired(volume_id)
            if not desired:
                continue
            for index, brick in desired["bricks"].items():
                marker, pid_file, _, _ = self._files(volume_id, desired["name"], f"brick-{index}")
                pid = pid_running(pid_file, marker)
                bricks.append(
                    BrickReport(
                        volume_id=volume_id,
                        index=int(index),
                        port=int(brick.get("port") or 0),
                        pid=pid,
                        online=pid is not None,
                        **brick_capacity(brick.get("path", "")),
                    )
                )
            if desired.get("shd"):
                marker, pid_file, _, _ = self._files(volume_id, desired["name"], "shd")
                pid = pid_running(pid_file, marker)
                shds.append(ShdReport(volume_id=volume_id, pid=pid, online=pid is not None))
        return bricks, shds


def brick_capacity(path: str) -> dict[str, Any]:
    """The filesystem capacity of a brick path (statvfs: one system call, cheap enough for every heartbeat).

    Free counts the filesystem's free blocks (f_bfree) as gluster-prometheus does, so used + free = total;
    an unreadable or missing path reports nothing rather than zeros.
    """
    if not path:
        return {}
    try:
        st = os.statvfs(path)
    except OSError:
        return {}
    total, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
    return {
        "total_bytes": total,
        "free_bytes": free,
        "used_bytes": max(0, total - free),
        "inodes_total": st.f_files,
        "inodes_free": st.f_ffree,
        "inodes_used": max(0, st.f_files - st.f_ffree),
        "fsid": format(st.f_fsid, "x"),
    }
