"""The embedded broker in a process of its own, started, watched and stopped by the control service.

The broker's event loop carries every agent's messages; in the server's own Python process it
competed with the REST API and the bridge's database work for one interpreter, so a registration
storm on the embedded broker was bound to one core. Here it runs in a child process
(``python -m broker.process``) that holds no database connection and no secret of its own: it
asks the server whether a login is good over a private socket pair (broker/channel.py), which
answers from the database, and the server asks it to close the sessions of a revoked credential.

The server restarts the broker process when it dies (agents and the bridge connect again by
themselves; the open tasks, which were retained messages, are published again on the bridge's
reconnect). The broker process ends when the server tells it to or when the server is gone: it
ignores SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop signal reach the whole process
group), so the server stops it after its own work, not before.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from broker.channel import Channel, ChannelClosed, ChannelError, RemoteError
from broker.dynsec import node_username
from broker.embedded import Authority, BrokerError, GlusterctlBroker, TlsListener, start_broker
from broker.topics import Topics

log = logging.getLogger("broker.process")  # not __main__ when it runs as the broker process

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as the server's own (control/cli/commands.py)
START_TIMEOUT = 30.0  # the child imports amqtt and binds its listeners
STOP_TIMEOUT = 10.0
SHUTDOWN_GRACE = 5.0  # the broker process's own limit for amqtt's shutdown, within STOP_TIMEOUT
CALL_TIMEOUT = 10.0
RESTART_DELAYS = (0.2, 1.0, 2.0, 5.0, 10.0)  # between tries to start a broker process that died; the last repeats
AUTHORITY_CALLS = ("control_password", "enrolment_ok", "node_ok", "monitor_clusters", "monitor_clusters_now")


class RemoteAuthority:
    """The broker process's Authority: each question goes to the server over the channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def control_password(self) -> str:
        return str(self._channel.call("control_password", timeout=CALL_TIMEOUT))

    def enrolment_ok(self, cluster: str, secret: str) -> bool:
        return bool(self._channel.call("enrolment_ok", cluster, secret, timeout=CALL_TIMEOUT))

    def node_ok(self, cluster: str, node: str, secret: str) -> bool:
        return bool(self._channel.call("node_ok", cluster, node, secret, timeout=CALL_TIMEOUT))

    def monitor_clusters(self, user: str, password: str) -> list[str] | None:
        clusters = self._channel.call("monitor_clusters", user, password, timeout=CALL_TIMEOUT)
        return None if clusters is None else [str(c) for c in clusters]

    def monitor_clusters_now(self, user: str) -> list[str]:
        return [str(c) for c in self._channel.call("monitor_clusters_now", user, timeout=CALL_TIMEOUT)]


class BrokerProcess:
    """The server's handle on its broker process: start, restart when it dies, stop, and the session calls."""

    def __init__(
        self, authority: Authority, topics: Topics, host: str, port: int | None, tls: TlsListener | None = None
    ) -> None:
        self._authority = authority
        self._topics = topics
        self._logged_in: set[str] = set()  # node user names whose login this broker process was told is good
        self._config = {"host": host, "port": port, "root": topics.root, "tls": asdict(tls) if tls else None}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._stopping = threading.Event()
        self._reviver: threading.Thread | None = None
        self.restarts = 0  # broker processes started again after one died
        self.on_restart: list[Callable[[], object]] = []

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        """Start the broker process and wait until it listens. Raises BrokerError."""
        self._stopping.clear()
        self._spawn()

    def stop(self) -> None:
        """Stop the broker process (its clients are disconnected, the last-wills of nodes sent)."""
        self._stopping.set()
        with self._lock:
            proc, channel, reviver = self._proc, self._channel, self._reviver
            self._proc = self._channel = None
        if reviver is not None and reviver is not threading.current_thread():
            reviver.join(START_TIMEOUT + STOP_TIMEOUT)  # it stops what it started once it sees the stop
        if proc is not None and channel is not None:
            _shut(proc, channel)

    # ---- the session calls (from the server's worker threads) ----------------------------------
    def may_have_sessions(self, username: str) -> bool:
        """False if ``username`` has no live session (a broker process that is down has none).

        A node's login is answered here (``node_ok``), so a node that never logged in to the running
        broker process, as at its first enrolment, is known to have none without asking: during a
        registration storm the broker process is the busiest part, and its answer held up every
        enrolment."""
        if username not in self._logged_in:
            return False
        return bool(self._call("may_have_sessions", username, default=False))

    def disconnect_user(self, username: str) -> int:
        """Close every live session of ``username``; the number closed."""
        return int(self._call("disconnect_user", username, default=0))

    def recheck_monitors(self) -> int:
        """Close each monitor session whose clusters changed; the number closed."""
        return int(self._call("recheck_monitors", default=0))

    def _call(self, name: str, *args: Any, default: Any) -> Any:
        channel = self._channel
        if channel is None:
            return default
        try:
            return channel.call(name, *args, timeout=CALL_TIMEOUT)
        except ChannelClosed:
            return default  # no broker process, no sessions; logins are checked again when it is back

    # ---- the process ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)  # the child imports this very package, wherever it was imported from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        command = [sys.executable, "-m", "broker.process", "--fd", str(theirs.fileno()), "--log-level", level]
        with theirs:
            proc = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        handlers = {name: getattr(self._authority, name) for name in AUTHORITY_CALLS}
        handlers["node_ok"] = self._node_ok
        self._logged_in = set()  # a new broker process: no sessions yet
        channel = Channel(ours, handlers, "broker")
        channel.start()
        try:
            channel.call("start", self._config, timeout=START_TIMEOUT)
        except RemoteError as exc:
            channel.close()  # the child reads the end of the stream, and ends
            _end(proc, STOP_TIMEOUT)
            raise BrokerError(str(exc)) from None
        except (ChannelClosed, TimeoutError) as exc:
            channel.close()
            _end(proc, 0)
            raise BrokerError(
                f"the embedded MQTT broker process did not start ({exc}; exit code {proc.poll()})"
            ) from None
        with self._lock:
            self._proc, self._channel = proc, channel
        channel.on_close.append(lambda: self._lost(proc, channel))
        if channel.closed.is_set():  # it died before the callback was in place
            self._lost(proc, channel)
        log.info("embedded MQTT broker running as process %d", proc.pid)

    def _node_ok(self, cluster: str, node: str, secret: str) -> bool:
        ok = self._authority.node_ok(cluster, node, secret)
        if ok:
            self._logged_in.add(node_username(self._topics, cluster, node))
        return ok

    def _lost(self, proc: subprocess.Popen[bytes], channel: Channel) -> None:
        """The broker process's end of the channel closed: unless we are stopping, start another."""
        with self._lock:
            if self._stopping.is_set() or self._proc is not proc:
                return  # stopping, or this one was handled already
            self._proc = self._channel = None
            self._reviver = threading.Thread(
                target=self._revive, args=(proc, channel), name="broker-revive", daemon=True
            )
            self._reviver.start()

    def _revive(self, dead: subprocess.Popen[bytes], channel: Channel) -> None:
        channel.close()
        try:
            code = dead.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            dead.kill()  # it closed its end of the channel but did not exit: it is of no use any more
            code = dead.wait()
        log.error("the embedded MQTT broker (process %d) exited with code %s: starting it again", dead.pid, code)
        attempt = 0
        while not self._stopping.wait(RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)]):
            attempt += 1
            try:
                self._spawn()
            except BrokerError as exc:
                log.error("the embedded MQTT broker could not start again (try %d): %s", attempt, exc)
                continue
            self.restarts += 1
            for callback in self.on_restart:
                callback()
            if self._stopping.is_set():  # stop() came while it was starting: it waits for us to end it
                with self._lock:
                    proc, fresh = self._proc, self._channel
                    self._proc = self._channel = None
                if proc is not None and fresh is not None:
                    _shut(proc, fresh)
            return


def _shut(proc: subprocess.Popen[bytes], channel: Channel) -> None:
    """Ask a broker process to stop, and wait until it has (killed if it does not within STOP_TIMEOUT)."""
    try:
        channel.call("stop", timeout=STOP_TIMEOUT)
    except (ChannelError, TimeoutError):
        pass  # gone already, or hung: the wait below ends it
    _end(proc, STOP_TIMEOUT)
    channel.close()


def _end(proc: subprocess.Popen[bytes], grace: float) -> None:
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- the broker process itself ---------------------------------------------------------------
class _Child:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.channel: Channel | None = None
        self.broker: GlusterctlBroker | None = None
        self.done = asyncio.Event()
        self.abandoned = False

    def handlers(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "stop": self.stop,
            "may_have_sessions": self.may_have_sessions,
            "disconnect_user": self.disconnect_user,
            "recheck_monitors": self.recheck_monitors,
        }

    def start(self, config: dict[str, Any]) -> bool:
        assert self.channel is not None
        if self.broker is not None:
            raise BrokerError("the broker is running already")
        tls = TlsListener(**config["tls"]) if config.get("tls") else None
        authority = RemoteAuthority(self.channel)
        topics = Topics(config["root"])
        coro = start_broker(config["host"], config["port"], authority, topics, tls)
        try:
            self.broker = asyncio.run_coroutine_threadsafe(coro, self.loop).result(START_TIMEOUT)
        except BrokerError as exc:  # a port in use, say: the server says so, no traceback here
            raise RemoteError(str(exc)) from None
        return True

    def stop(self) -> bool:
        """The server's stop: disconnect every client (their last-wills go out), then end."""
        try:
            self.loop.call_soon_threadsafe(self.done.set)
        except RuntimeError:
            pass  # the loop has ended already
        return True

    def server_gone(self) -> None:
        """The server's end of the channel closed: no login can be checked any more, end at once.

        Nothing is lost: the retained messages live in this process only, and the clients' sockets close
        with it, so agents connect to the next server's broker without waiting for a shutdown.
        """
        self.abandoned = True
        self.stop()

    def may_have_sessions(self, username: str) -> bool:
        return self.broker is not None and self.broker.may_have_sessions(username)

    def disconnect_user(self, username: str) -> int:
        if self.broker is None:
            return 0
        return int(asyncio.run_coroutine_threadsafe(self.broker.disconnect_user(username), self.loop).result())

    def recheck_monitors(self) -> int:
        if self.broker is None:
            return 0
        return int(asyncio.run_coroutine_threadsafe(self.broker.recheck_monitors(), self.loop).result())

    async def serve(self) -> None:
        await self.done.wait()
        if self.broker is None:
            return
        self.broker.stop_listening()  # at once: a new server may be starting on the same ports
        if self.abandoned:
            log.warning("the server is gone: the embedded MQTT broker ends, closing its clients' connections")
            return
        try:
            await asyncio.wait_for(self.broker.shutdown(), SHUTDOWN_GRACE)
        except TimeoutError:
            log.warning(
                "the embedded MQTT broker did not shut down within %.0fs: its connections close now", SHUTDOWN_GRACE
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker.process", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the socket to the server (inherited)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO), stream=sys.stderr, format=LOG_FORMAT
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    child = _Child(loop)
    channel = Channel(socket.socket(fileno=args.fd), child.handlers(), "broker-process")
    child.channel = channel
    channel.on_close.append(child.server_gone)  # after a stop too: then it changes nothing
    channel.start()
    try:
        loop.run_until_complete(child.serve())
    finally:
        logging.shutdown()
        os._exit(0)  # not waiting for worker threads that may still wait on the server: the sockets close now


if __name__ == "__main__":
    sys.exit(main())
