"""Follow tasks and volumes to a final state for the CLI's ``--wait``, from the event stream.

The stream (``GET /api/v1/events``) is read in a background thread; the caller's thread keeps
the state, draws progress (a rich live table on a terminal, one plain line per change
otherwise) and enforces the timeout. When the stream drops, the reader reconnects with
``Last-Event-ID`` and meanwhile the follower polls the REST API, so nothing is missed.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from control.cli.client import Client, CliError

FINAL_TASK_STATES = frozenset({"DONE", "FAILED"})
VOLUME_FAILED_STATES = frozenset({"CreateFailed", "StartFailed", "StopFailed", "DeleteFailed"})
POLL_SECONDS = 1.0  # REST polling interval while the stream is down
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
HELLO_TIMEOUT = 5.0


@dataclass
class FollowResult:
    """What a follow saw: ``ok`` when everything reached a wanted final state in time."""

    ok: bool
    timed_out: bool = False
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> {node, kind, state, reason}
    volume_state: str | None = None
    failures: list[str] = field(default_factory=list)  # "node: reason (fix: ...)"
    used_stream: bool = True

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else (2 if self.timed_out else 1)


# ---- the stream reader --------------------------------------------------------------------
def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """Yield ``(event, data, id)`` per message from SSE lines; comments yield ``("", "", id)`` if they carry an id."""
    event, data, event_id = "", [], None
    for line in lines:
        if line == "":
            if data:
                yield event or "message", "\n".join(data), event_id
            elif event_id is not None:
                yield "", "", event_id
            event, data, event_id = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


class EventStream:
    """Reads ``/api/v1/events`` in a thread into a queue of ``(kind, payload)``; reconnects by itself.

    Queue items: ``("hello", {...})``, ``("event", {...})``, ``("reset", {...})``,
    ``("down", error text)`` when a connection ends.
    """

    def __init__(
        self, url: str, token: str | None, cluster: str | None = None, kinds: str | None = None, heartbeat: float = 5.0
    ) -> None:
        self.url, self.token = url.rstrip("/"), token
        self.params: dict[str, Any] = {"heartbeat": heartbeat}
        if cluster:
            self.params["cluster"] = cluster
        if kinds:
            self.params["kind"] = kinds
        self.heartbeat = heartbeat
        self.last_id: int | None = None
        self.connected = threading.Event()
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        resp = self._response
        if resp is not None:
            try:
                resp.close()
            except Exception:  # closing from another thread may race with the reader
                pass
        self._thread.join(timeout=2)

    def _run(self) -> None:
        attempt = 0
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = httpx.Timeout(10.0, read=self.heartbeat * 3 + 5)
        with httpx.Client(timeout=timeout) as http:
            while not self._stop.is_set():
                if self.last_id is not None:
                    headers["Last-Event-ID"] = str(self.last_id)
                try:
                    with http.stream("GET", f"{self.url}/api/v1/events", params=self.params, headers=headers) as resp:
                        self._response = resp
                        if resp.status_code != 200:
                            resp.read()
                            raise CliError(f"event stream: HTTP {resp.status_code}: {resp.text[:200]}")
                        for event, data, event_id in parse_sse(resp.iter_lines()):
                            if event_id is not None:
                                self.last_id = int(event_id)
                            if event == "hello":
                                attempt = 0
                                self.connected.set()
                                self.queue.put(("hello", json.loads(data)))
                            elif event == "reset":
                                self.queue.put(("reset", json.loads(data)))
                            elif event == "message":
                                self.queue.put(("event", json.loads(data)))
                            if self._stop.is_set():
                                return
                    error = "the server closed the event stream"
                except (httpx.HTTPError, CliError, ValueError) as exc:
                    error = str(exc) or type(exc).__name__
                finally:
                    self._response = None
                if self._stop.is_set():
                    return
                self.connected.clear()
                self.queue.put(("down", error))
                self._stop.wait(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
                attempt += 1


# ---- progress display ---------------------------------------------------------------------
class Progress:
    """Per-node progress: a rich live table on a terminal, plain lines otherwise."""

    def __init__(self, out: IO[str], title: str) -> None:
        self.out, self.title = out, title
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.rows: dict[str, tuple[str, str, str]] = {}  # key -> (what, state, reason)
        self._live = None
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=out), refresh_per_second=8, transient=False)
            self._live.start()

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_row(f"[bold]{self.title}[/bold]")
        for what, state, reason in self.rows.values():
            final = state in FINAL_TASK_STATES or state in VOLUME_FAILED_STATES or state.endswith(("ed",))
            mark = (
                "[green]✓[/green]"
                if state in ("DONE", "Started", "Stopped", "Created", "Deleted", "Online")
                else "[red]✗[/red]"
                if state in ("FAILED", "Offline") or state in VOLUME_FAILED_STATES
                else Spinner("dots")
                if not final
                else "•"
            )
            table.add_row(mark, what, state, reason)
        return table

    def update(self, key: str, what: str, state: str, reason: str = "") -> None:
        if self.rows.get(key) == (what, state, reason):
            return
        self.rows[key] = (what, state, reason)
        if self._live is not None:
            self._live.update(self._render())
        else:
            self.out.write(f"{what}: {state}{f' ({reason})' if reason else ''}\n")
            self.out.flush()

    def note(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()


# ---- following ------------------------------------------------------------------------------
class _Follower:
    def __init__(
        self,
        client: Client,
        cluster: str | None,
        timeout: float,
        out: IO[str] | None,
        title: str,
        use_stream: bool = True,
    ) -> None:
        self.client, self.cluster, self.timeout = client, cluster, timeout
        self.deadline = time.monotonic() + timeout
        self.progress = Progress(out or sys.stderr, title)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.volume: tuple[str, set[str]] | None = None
        self.volume_state: str | None = None
        self.volume_gone = False
        self.stream = (
            EventStream(client.url, client.token, cluster=cluster, kinds="task.,volume.,brick.") if use_stream else None
        )

    # state changes
    def set_task(self, task_id: str, node: str, kind: str, state: str, reason: str, fix: str | None = None) -> None:
        self.tasks[task_id] = {"node": node, "kind": kind, "state": state, "reason": reason, "fix": fix}
        self.progress.update(task_id, f"{node} {kind}", state, reason)

    def set_volume(self, state: str) -> None:
        self.volume_state = state
        if self.volume:
            self.progress.update("volume", f"volume {self.volume[0]}", state)

    def apply(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event["kind"] == "task.state" and event["subject"] in self.tasks:
            self.set_task(
                event["subject"],
                data.get("node", ""),
                data.get("kind", ""),
                data.get("state", ""),
                data.get("reason", ""),
                data.get("fix"),
            )
        elif (
            event["kind"] == "volume.state"
            and self.volume
            and event["subject"] == self.volume[0]
            and event["cluster"] == self.cluster
        ):
            self.set_volume(data.get("state", ""))
        elif (
            event["kind"] == "brick.state"
            and self.volume
            and event["subject"].startswith(self.volume[0] + ":")
            and event["cluster"] == self.cluster
        ):
            _, node, path = ([*event["subject"].split(":", 2), "", ""])[:3]
            self.progress.update(f"brick:{event['subject']}", f"brick {node}:{path}", data.get("state", ""))

    def reload(self) -> None:
        """Read current state through REST (at start, after a reset, and while the stream is down)."""
        for task_id in list(self.tasks):
            if self.tasks[task_id]["state"] in FINAL_TASK_STATES:
                continue
            task = self.client.get(f"/api/v1/tasks/{task_id}")
            self.set_task(task_id, task["node"], task["kind"], task["state"], task["reason"], task.get("fix"))
        if self.volume:
            try:
                vol = self.client.get(f"/api/v1/clusters/{self.cluster}/volumes/{self.volume[0]}")
            except CliError as exc:
                if "Deleted" in self.volume[1] and ("no volume" in str(exc).lower() or "not found" in str(exc).lower()):
                    self.volume_gone = True
                    self.set_volume("Deleted")
                return
            self.set_volume(vol.get("state", ""))

    def finished(self) -> bool:
        tasks_done = all(t["state"] in FINAL_TASK_STATES for t in self.tasks.values())
        if self.volume is None:
            return tasks_done
        if self.volume_state in VOLUME_FAILED_STATES:
            return tasks_done or any(t["state"] == "FAILED" for t in self.tasks.values())
        return self.volume_state in self.volume[1] and tasks_done

    def run(self) -> FollowResult:
        used_stream = False
        try:
            if self.stream is not None:
                self.stream.start()
                used_stream = self.stream.connected.wait(min(HELLO_TIMEOUT, max(0.1, self.deadline - time.monotonic())))
            self.reload()
            last_poll = time.monotonic()
            stream_down_noted = False
            while not self.finished():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    return self.result(timed_out=True, used_stream=used_stream)
                streaming = self.stream is not None and self.stream.connected.is_set()
                if not streaming and time.monotonic() - last_poll >= POLL_SECONDS:
                    try:
                        self.reload()
                    except CliError as exc:  # the server is restarting: keep trying until the deadline
                        if not stream_down_noted:
                            self.progress.note(f"event stream lost ({exc}); polling until it is back")
                            stream_down_noted = True
                    last_poll = time.monotonic()
                    if self.finished():
                        break
                try:
                    item, payload = (
                        self.stream.queue.get(timeout=min(0.25, remaining))
                        if self.stream
                        else (None, time.sleep(min(0.25, remaining)))
                    )
                except queue.Empty:
                    continue
                if item == "event":
                    self.apply(payload)
                elif item in ("hello", "reset"):
                    if stream_down_noted:
                        self.progress.note("event stream reconnected")
                        stream_down_noted = False
                    try:
                        self.reload()  # after a gap or reset: what happened meanwhile
                    except CliError:
                        pass  # the stream is back, so the next events or polls will tell
                    last_poll = time.monotonic()
                elif item == "down" and not stream_down_noted:
                    self.progress.note(f"event stream lost ({payload}); polling until it is back")
                    stream_down_noted = True
            return self.result(used_stream=used_stream)
        finally:
            if self.stream is not None:
                self.stream.close()
            self.progress.close()

    def result(self, timed_out: bool = False, used_stream: bool = True) -> FollowResult:
        failures = []
        for task in self.tasks.values():
            if task["state"] == "FAILED":
                fix = task.get("fix")
                failures.append(f"{task['node']}: {task['reason'] or 'failed'}" + (f" (fix: {fix})" if fix else ""))
        if self.volume_state in VOLUME_FAILED_STATES and not failures:
            failures.append(f"volume {self.volume[0]}: {self.volume_state}")
        if timed_out:
            waiting = [
                f"{t['node']} {t['kind']} {t['state']}"
                for t in self.tasks.values()
                if t["state"] not in FINAL_TASK_STATES
            ]
            what = ", ".join(waiting) or f"volume {self.volume[0] if self.volume else ''} {self.volume_state}"
            failures.append(
                f"timed out after {self.timeout:.0f}s: still {what} "
                "(a task for an Unreachable node waits QUEUED until it returns)"
            )
        ok = not timed_out and not failures and self.finished()
        return FollowResult(
            ok=ok,
            timed_out=timed_out,
            tasks=dict(self.tasks),
            volume_state=self.volume_state,
            failures=failures,
            used_stream=used_stream,
        )


def follow_tasks(
    client: Client,
    task_ids: Iterable[str],
    timeout: float = 120.0,
    out: IO[str] | None = None,
    cluster: str | None = None,
    title: str = "Waiting for tasks",
    use_stream: bool = True,
) -> FollowResult:
    """Wait until every task is DONE or FAILED (or ``timeout`` seconds passed), showing per-node progress."""
    follower = _Follower(client, cluster, timeout, out, title, use_stream)
    for task_id in task_ids:
        follower.tasks[task_id] = {"node": "?", "kind": "", "state": "QUEUED", "reason": ""}
    return follower.run()


def follow_volume(
    client: Client,
    cluster: str,
    name: str,
    target_states: Iterable[str],
    timeout: float = 300.0,
    out: IO[str] | None = None,
    task_ids: Iterable[str] = (),
    use_stream: bool = True,
) -> FollowResult:
    """Wait until volume ``name`` is in one of ``target_states`` (failing on ``*Failed``) and its tasks are final.

    ``target_states`` containing ``Deleted`` also accepts the volume being gone (HTTP 404).
    """
    follower = _Follower(client, cluster, timeout, out, f"Waiting for volume {name}", use_stream)
    follower.volume = (name, set(target_states))
    for task_id in task_ids:
        follower.tasks[task_id] = {"node": "?", "kind": "", "state": "QUEUED", "reason": ""}
    return follower.run()


def report(result: FollowResult, out: IO[str] | None = None) -> int:
    """Print the failures of ``result`` (to stderr by default); return the exit code for the CLI."""
    out = out or sys.stderr
    for line in result.failures:
        out.write(f"error: {line}\n")
    return result.exit_code
