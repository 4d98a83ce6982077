"""Rebalance on this node: GlusterFS's own rebalance process, run and supervised as glusterd does.

glusterd runs one process per node that holds bricks of the volume (glusterd-rebalance.c)::

    glusterfs -s HOST --volfile-id rebalance/VOL \
        --xlator-option *dht.use-readdirp=no --xlator-option *dht.lookup-unhashed=yes \
        --xlator-option *dht.assert-no-child-down=yes --xlator-option *dht.readdir-optimize=on \
        --process-name rebalance --xlator-option *dht.rebalance-cmd=CMD \
        --xlator-option *dht.node-uuid=UUID --xlator-option *dht.commit-hash=HASH \
        --socket-file SOCK --pid-file PID -l LOG

CMD is GF_DEFRAG_CMD_START (1) or START_LAYOUT_FIX (4). UUID is the node's uuid as its bricks
know it (posix's glusterd-uuid): dht asks each set which nodes hold it and migrates a file only
on one of those, so each file moves once. HASH, one per rebalance run and the same on every node,
is written into each directory's layout (trusted.glusterfs.dht.commithash), which lets clients
skip lookups on every set for files not where the layout puts them.

While it runs, dht answers the brick-op RPC GLUSTERD_BRICK_XLATOR_DEFRAG on SOCK, addressed to
its xlator VOL-dht with ``rebalance-command`` = 3 (status) or 2 (stop): files, size, lookups,
failures, skipped, status, run-time, time-left. When it finishes it sends the final status to
its volfile server (EVENT_NOTIFY, see volfile_server.py) and terminates itself.

What the node knows survives agent restarts in ``STATE_DIR/volumes/ID/rebalance/state.json``:
the run, its command and the last status (final once the process reported or exited); the
volfile is kept next to it so a restarted agent serves it again to the process that reconnects.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Any

from agent import brickop, clock
from agent.bricks import BrickError, BrickManager, find_exe, gone, log_tail, pid_running
from agent.volfile_server import VolfileServer
from broker.messages import RebalanceReport, RebalanceState

log = logging.getLogger(__name__)

KEY_PREFIX = "rebalance/"
CMD_START, CMD_STOP, CMD_STATUS, CMD_FIX_LAYOUT = 1, 2, 3, 4
COMMANDS = {"full": CMD_START, "fix-layout": CMD_FIX_LAYOUT}
# GF_DEFRAG_STATUS_*: 0-4, then the same for fix-layout (5-8)
STATES = (
    RebalanceState.NOT_STARTED,
    RebalanceState.IN_PROGRESS,
    RebalanceState.STOPPED,
    RebalanceState.COMPLETED,
    RebalanceState.FAILED,
)
COUNTERS = ("files", "size", "lookups", "failures", "skipped")
POLL_INTERVAL = 2.0  # status polls of running processes
EXIT_GRACE = 5.0  # a process gone without a final status: wait this long for its EVENT_NOTIFY
STOP_TIMEOUT = 30.0
RPC_TIMEOUT = 10.0


class RebalanceError(Exception):
    """A rebalance request failed; the message starts with a code (EBUSY, ENOENT, ...)."""


def state_of(code: int) -> RebalanceState:
    if code < 0:
        return RebalanceState.FAILED
    return STATES[code - 4] if code >= len(STATES) else STATES[code]


def parse_status(data: dict[str, str]) -> dict[str, Any]:
    """dht's status dict (decimal strings) as numbers, with the state in words."""

    def number(key: str) -> int:
        try:
            return int(float(data.get(key) or 0))
        except ValueError:
            return 0

    code = number("status")
    out: dict[str, Any] = {k: number(k) for k in COUNTERS}
    out.update(state=state_of(code).value, status_code=code, run_time=number("run-time"), time_left=number("time-left"))
    return out


class RebalanceManager:
    def __init__(self, bricks: BrickManager, server: VolfileServer) -> None:
        self.bricks = bricks
        self.server = server
        self._lock = threading.RLock()
        server.on_event = self.on_event

    # ---- files ----------------------------------------------------------------------------
    def _dir(self, volume_id: str) -> str:
        return os.path.join(self.bricks.root, volume_id, "rebalance")

    def _files(self, volume_id: str, name: str) -> tuple[str, str, str]:
        """(pid file, which is also the marker on the command line; log file; control socket)."""
        _, _, _, sock = self.bricks._files(volume_id, name, "rebalance")
        return (
            os.path.join(self._dir(volume_id), "rebalance.pid"),
            os.path.join(self.bricks.logs, f"{name}-rebalance.log"),
            sock,
        )

    def load(self, volume_id: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self._dir(volume_id), "state.json")) as fh:
                state: dict[str, Any] = json.load(fh)
                return state
        except (OSError, ValueError):
            return None

    def _save(self, volume_id: str, state: dict[str, Any]) -> None:
        folder = self._dir(volume_id)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = os.path.join(folder, "state.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(path + ".tmp", path)

    def _pid(self, volume_id: str, name: str) -> int | None:
        pid_file = self._files(volume_id, name)[0]
        return pid_running(pid_file, pid_file)

    def restore(self) -> int:
        """At agent start: serve again the volfiles of rebalances that did not finish."""
        count = 0
        for volume_id in self.bricks.volume_ids():
            state = self.load(volume_id)
            if state and not state.get("final"):
                try:
                    with open(os.path.join(self._dir(volume_id), "rebalance.vol")) as fh:
                        self.server.set_volfile(KEY_PREFIX + state["name"], fh.read())
                    count += 1
                except OSError as exc:
                    log.warning("volume %s: cannot serve the rebalance volfile again: %s", state["name"], exc)
        return count

    # ---- requests ---------------------------------------------------------------------------
    def start(
        self, volume_id: str, name: str, volfile: str, command: str, run: str, commit_hash: int
    ) -> dict[str, Any]:
        if command not in COMMANDS:
            raise RebalanceError(f"EINVAL: rebalance command {command!r}: use one of {', '.join(COMMANDS)}")
        if not self.bricks.volfile_port:
            raise RebalanceError(f"ENOTCONN: the volfile server of node {self.bricks.node} is not running")
        with self._lock:
            state = self.load(volume_id)
            pid = self._pid(volume_id, name)
            if state and state.get("run") == run:
                return self._public(state, pid)  # this run again (the task was re-sent): nothing to do
            if pid:
                raise RebalanceError(
                    f"EBUSY: a rebalance of volume {name} runs on node {self.bricks.node} (pid {pid}): stop it first"
                )
            folder = self._dir(volume_id)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            with open(
                os.open(os.path.join(folder, "rebalance.vol"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w"
            ) as fh:
                fh.write(volfile)
            self.server.set_volfile(KEY_PREFIX + name, volfile)  # local peers only: it holds the credentials
            state = {
                "name": name,
                "run": run,
                "command": command,
                "commit_hash": commit_hash,
                "started_at": clock.now(),
                "final": False,
                "status": {**parse_status({"status": "1"}), "state": RebalanceState.IN_PROGRESS.value},
                "source": "start",
            }
            self._save(volume_id, state)
            pid = self._spawn(volume_id, name, COMMANDS[command], commit_hash)
            log.info("volume %s rebalance %s (%s) started: pid %d", name, run, command, pid)
            return self._public(state, pid)

    def _spawn(self, volume_id: str, name: str, cmd: int, commit_hash: int) -> int:
        pid_file, log_file, sock = self._files(volume_id, name)
        argv = [
            find_exe("glusterfs") or "glusterfs",
            "-s",
            self.bricks.volfile_host,
            "--volfile-server-port",
            str(self.bricks.volfile_port),
            "--volfile-id",
            KEY_PREFIX + name,
            *("--xlator-option", "*dht.use-readdirp=no"),
            *("--xlator-option", "*dht.lookup-unhashed=yes"),
            *("--xlator-option", "*dht.assert-no-child-down=yes"),
            *("--xlator-option", "*dht.readdir-optimize=on"),
            *("--process-name", "rebalance"),
            *("--xlator-option", f"*dht.rebalance-cmd={cmd}"),
            *("--xlator-option", f"*dht.node-uuid={self.bricks.node_uuid}"),
            *("--xlator-option", f"*dht.commit-hash={commit_hash}"),
            *("--socket-file", sock),
            *("--pid-file", pid_file),
            *("-l", log_file),
        ]
        try:
            return self.bricks._spawn(argv, pid_file, pid_file, log_file, f"rebalance process of {name}", "", 0)
        except BrickError as exc:
            self._finish(volume_id, {"state": RebalanceState.FAILED.value, "error": str(exc)}, "start")
            raise RebalanceError(str(exc)) from None

    def status(self, volume_id: str, name: str) -> dict[str, Any]:
        """The node's rebalance of the volume: polled live while it runs, else the recorded final status."""
        with self._lock:
            state = self.load(volume_id)
            if state is None:
                return {"state": RebalanceState.NOT_STARTED.value, "run": None}
            pid = self._pid(volume_id, name)
            if pid and not state.get("final"):
                state = self._poll(volume_id, name, state) or state
            return self._public(state, pid)

    def stop(self, volume_id: str, name: str) -> dict[str, Any]:
        """Ask dht to stop (as glusterd does), then wait for the process to end; SIGTERM if it lingers.
        The lock is not held while waiting: the process's EVENT_NOTIFY takes it to record its final status."""
        with self._lock:
            state = self.load(volume_id)
            pid = self._pid(volume_id, name)
            if state is None or (not pid and state.get("final")):
                return self._public(state or {"state": RebalanceState.NOT_STARTED.value}, None)
            if not state.get("final"):
                state["stopping"] = True  # the process's final status is then "stopped" (see on_event)
                self._save(volume_id, state)
        if pid:
            try:
                self._defrag(volume_id, name, CMD_STOP)
            except brickop.BrickOpError as exc:
                log.warning("volume %s: rebalance stop over the socket failed (%s): terminating it", name, exc)
                self._kill(pid)
            deadline = time.monotonic() + STOP_TIMEOUT
            while not gone(pid):
                if time.monotonic() > deadline:
                    log.warning("volume %s: rebalance process %d did not stop: terminating it", name, pid)
                    self._kill(pid)
                    break
                time.sleep(0.1)
        with self._lock:
            state = self.load(volume_id) or state
            if not state.get("final"):
                status = {**state.get("status", {}), "state": RebalanceState.STOPPED.value}
                state = self._finish(volume_id, status, "stop")
        log.info("volume %s rebalance %s stopped on this node", name, state.get("run"))
        return self._public(state, None)

    def _defrag(self, volume_id: str, name: str, cmd: int) -> brickop.BrickOpReply:
        """GLUSTERD_BRICK_XLATOR_DEFRAG to the process's dht xlator (VOL-dht), as glusterd sends it."""
        sock = self._files(volume_id, name)[2]
        return brickop.call(
            sock,
            brickop.GLUSTERD_BRICK_XLATOR_DEFRAG,
            f"{name}-dht",
            0,
            {"rebalance-command": str(cmd)},
            "rebalance process",
        )

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    # ---- status --------------------------------------------------------------------------------
    def _poll(self, volume_id: str, name: str, state: dict[str, Any]) -> dict[str, Any] | None:
        try:
            reply = self._defrag(volume_id, name, CMD_STATUS)
        except brickop.BrickOpError as exc:
            log.debug("volume %s: rebalance status poll failed: %s", name, exc)
            return None
        if not reply.output.get("status"):
            return None
        state["status"] = parse_status(reply.output)
        state["source"] = "poll"
        state["polled_at"] = clock.now()
        self._save(volume_id, state)
        return state

    def _finish(self, volume_id: str, status: dict[str, Any], source: str) -> dict[str, Any]:
        state = self.load(volume_id) or {}
        state.update(status={**state.get("status", {}), **status}, final=True, source=source, finished_at=clock.now())
        self._save(volume_id, state)
        if state.get("name"):
            self.server.remove_volfile(KEY_PREFIX + state["name"])
        return state

    def on_event(self, op: int, keys: set[str], data: dict[str, str]) -> None:
        """EVENT_NOTIFY from a rebalance process: its final status."""
        names = {k[len(KEY_PREFIX) :] for k in keys if k.startswith(KEY_PREFIX)}
        with self._lock:
            for volume_id in self.bricks.volume_ids():
                state = self.load(volume_id)
                if state and state.get("name") in names:
                    status = parse_status(data)
                    if state.get("stopping") and status["state"] == RebalanceState.FAILED.value:
                        # dht interrupted early in its crawl by our stop reports failure: the operator stopped it
                        status["state"] = RebalanceState.STOPPED.value
                    self._finish(volume_id, status, "notify")
                    log.info(
                        "volume %s rebalance %s finished on this node: %s (%d files, %d failures)",
                        state["name"],
                        state.get("run"),
                        status["state"],
                        status["files"],
                        status["failures"],
                    )
                    return
        log.warning("EVENT_NOTIFY %d for %s matches no rebalance of this node", op, sorted(keys))

    def supervise_once(self, now: float | None = None) -> None:
        """Poll running rebalances; record a process that ended without reporting as failed."""
        now = now or clock.now()
        for volume_id in self.bricks.volume_ids():
            with self._lock:
                state = self.load(volume_id)
                if not state or state.get("final"):
                    continue
                name = state["name"]
                if self._pid(volume_id, name):
                    if now - float(state.get("polled_at") or 0) >= POLL_INTERVAL:
                        self._poll(volume_id, name, state)
                    continue
                exited = float(state.setdefault("exited_at", now))
                if now - exited < EXIT_GRACE:
                    self._save(volume_id, state)
                    continue
                last = RebalanceState(state.get("status", {}).get("state", RebalanceState.IN_PROGRESS.value))
                if last.final:
                    self._finish(volume_id, {}, "exit")
                    continue
                tail = log_tail(self._files(volume_id, name)[1], 3)
                log.warning("volume %s rebalance %s: the process ended without a final status", name, state["run"])
                self._finish(
                    volume_id,
                    {"state": RebalanceState.FAILED.value, "error": f"the rebalance process exited; log tail: {tail}"},
                    "exit",
                )

    def run_supervisor(self, stop: threading.Event) -> None:
        while not stop.wait(POLL_INTERVAL / 2):
            try:
                self.supervise_once()
            except Exception:
                log.exception("rebalance supervisor failed")

    def reports(self) -> list[RebalanceReport]:
        """Every recorded run of this node (one per volume) for the heartbeat: the control service follows
        runs from these. A final run is reported on every beat too, so a control service that was down
        when it ended still learns it; the status is the last poll (``supervise_once``), not polled here."""
        out = []
        for volume_id in self.bricks.volume_ids():
            state = self.load(volume_id)
            if not state or not state.get("run"):
                continue
            status = state.get("status") or {}
            try:
                out.append(
                    RebalanceReport(
                        volume_id=volume_id,
                        run=str(state["run"]),
                        state=RebalanceState(status.get("state") or RebalanceState.NOT_STARTED.value),
                        final=bool(state.get("final")),
                        **{k: max(0, int(status.get(k) or 0)) for k in COUNTERS},
                        run_time=max(0.0, float(status.get("run_time") or 0)),
                        error=str(status.get("error") or "")[:2000],
                    )
                )
            except (ValueError, TypeError) as exc:  # a damaged state file must not stop the heartbeat
                log.warning("volume %s: rebalance state not reported: %s", state.get("name", volume_id), exc)
        return out

    def _public(self, state: dict[str, Any], pid: int | None) -> dict[str, Any]:
        status = dict(state.get("status") or {"state": state.get("state", RebalanceState.NOT_STARTED.value)})
        return {
            **status,
            "run": state.get("run"),
            "command": state.get("command"),
            "final": bool(state.get("final")),
            "pid": pid,
            "node_uuid": self.bricks.node_uuid,
        }
