"""Follow tasks and volumes to a final state for the CLI's ``--wait``, from the event stream.

The stream (``GET /api/v1/events``) is read in a background thread; the caller's thread keeps
the state, draws progress (a rich live table on a terminal, one plain line per change
otherwise) and enforces the timeout. When the stream drops, the reader reconnects with
``Last-Event-ID`` and meanwhile the follower polls the REST API, so nothing is missed.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import RenderableType

from broker.messages import STABLE_VOLUME_STATES, VOLUME_DELETED, BrickState, NodeState, TaskState
from control.client import ApiError, Client, Down, Event, Hello, Reset, StreamItem
from control.client.states import task_failed, task_final, volume_failed, volume_final

POLL_SECONDS = 1.0  # REST polling interval while the stream is down
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
HELLO_TIMEOUT = 5.0
STREAM_HEARTBEAT = 5.0
# states drawn with a check mark or a cross in the live table
GOOD_STATES = frozenset({TaskState.DONE, *STABLE_VOLUME_STATES, VOLUME_DELETED, NodeState.ONLINE, BrickState.ONLINE})
BAD_STATES = frozenset({TaskState.FAILED, BrickState.OFFLINE})


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
class StreamReader:
    """Reads the client's event stream in a thread into a queue of ``Hello``/``Reset``/``Event``/``Down``
    items; the stream reconnects by itself with ``Last-Event-ID``. ``connected`` is set while it is up."""

    def __init__(self, client: Client, cluster: str | None = None, kinds: str | None = None) -> None:
        self.stream = client.events(
            cluster=cluster, kinds=kinds, heartbeat=STREAM_HEARTBEAT, reconnect=RECONNECT_SECONDS
        )
        self.connected = threading.Event()
        self.queue: queue.Queue[StreamItem] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        # the reader may sit in a blocking read until the next event or keep-alive (seconds): it is a
        # daemon thread that stops with the stream, so the command does not wait for it to notice
        self.stream.close()
        self._thread.join(timeout=0.05)

    def _run(self) -> None:
        try:
            for item in self.stream:
                if isinstance(item, Hello):
                    self.connected.set()
                elif isinstance(item, Down):
                    self.connected.clear()
                self.queue.put(item)
        except ApiError as exc:  # the login was refused: REST polling reports it
            self.connected.clear()
            self.queue.put(Down(str(exc)))


# ---- progress display ---------------------------------------------------------------------
class Progress:
    """Per-node progress: a rich live table on a terminal, plain lines otherwise."""

    def __init__(self, out: IO[str], title: str) -> None:
        self.out, self.title = out, title
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.rows: dict[str, tuple[str, str, str]] = {}  # key -> (what, state, reason)
        self._live: Any = None
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=out), refresh_per_second=8, transient=False)
            self._live.start()

    def _render(self) -> RenderableType:
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_row(f"[bold]{self.title}[/bold]")
        for what, state, reason in self.rows.values():
            final = task_final(state) or volume_final(state)
            mark: RenderableType = (
                "[green]✓[/green]"
                if state in GOOD_STATES
                else "[red]✗[/red]"
                if state in BAD_STATES or volume_failed(state)
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
        self.stream = StreamReader(client, cluster=cluster, kinds="task.,volume.,brick.") if use_stream else None

    # state changes
    def set_task(self, task_id: str, node: str, kind: str, state: str, reason: str, fix: str | None = None) -> None:
        self.tasks[task_id] = {"node": node, "kind": kind, "state": state, "reason": reason, "fix": fix}
        self.progress.update(task_id, f"{node} {kind}", state, reason)

    def set_volume(self, state: str) -> None:
        self.volume_state = state
        if self.volume:
            self.progress.update("volume", f"volume {self.volume[0]}", state)

    def apply(self, event: Event) -> None:
        data = event.data
        if event.kind == "task.state" and event.subject in self.tasks:
            self.set_task(
                event.subject,
                data.get("node", ""),
                data.get("kind", ""),
                data.get("state", ""),
                data.get("reason", ""),
                data.get("fix"),
            )
        elif (
            event.kind == "volume.state"
            and self.volume
            and event.subject == self.volume[0]
            and event.cluster == self.cluster
        ):
            self.set_volume(data.get("state", ""))
        elif (
            event.kind == "brick.state"
            and self.volume
            and event.subject.startswith(self.volume[0] + ":")
            and event.cluster == self.cluster
        ):
            _, node, path = ([*event.subject.split(":", 2), "", ""])[:3]
            self.progress.update(f"brick:{event.subject}", f"brick {node}:{path}", data.get("state", ""))

    def reload(self) -> None:
        """Read current state through REST (at start, after a reset, and while the stream is down)."""
        for task_id in list(self.tasks):
            if task_final(self.tasks[task_id]["state"]):
                continue
            task = self.client.get(f"/api/v1/tasks/{task_id}")
            self.set_task(task_id, task["node"], task["kind"], task["state"], task["reason"], task.get("fix"))
        if self.volume:
            try:
                vol = self.client.get(f"/api/v1/clusters/{self.cluster}/volumes/{self.volume[0]}")
            except ApiError as exc:
                if VOLUME_DELETED in self.volume[1] and (
                    "no volume" in str(exc).lower() or "not found" in str(exc).lower()
                ):
                    self.volume_gone = True
                    self.set_volume(VOLUME_DELETED)
                return
            self.set_volume(vol.get("state", ""))

    def finished(self) -> bool:
        tasks_done = all(task_final(t["state"]) for t in self.tasks.values())
        if self.volume is None:
            return tasks_done
        if volume_failed(self.volume_state):
            return tasks_done or any(task_failed(t["state"]) for t in self.tasks.values())
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
                    except ApiError as exc:  # the server is restarting: keep trying until the deadline
                        if not stream_down_noted:
                            self.progress.note(f"event stream lost ({exc}); polling until it is back")
                            stream_down_noted = True
                    last_poll = time.monotonic()
                    if self.finished():
                        break
                if self.stream is None:
                    time.sleep(min(0.25, remaining))
                    continue
                try:
                    item = self.stream.queue.get(timeout=min(0.25, remaining))
                except queue.Empty:
                    continue
                if isinstance(item, Event):
                    self.apply(item)
                elif isinstance(item, (Hello, Reset)):
                    if stream_down_noted:
                        self.progress.note("event stream reconnected")
                        stream_down_noted = False
                    try:
                        self.reload()  # after a gap or reset: what happened meanwhile
                    except ApiError:
                        pass  # the stream is back, so the next events or polls will tell
                    last_poll = time.monotonic()
                elif isinstance(item, Down) and not stream_down_noted:
                    self.progress.note(f"event stream lost ({item.error}); polling until it is back")
                    stream_down_noted = True
            return self.result(used_stream=used_stream)
        finally:
            if self.stream is not None:
                self.stream.close()
            self.progress.close()

    def result(self, timed_out: bool = False, used_stream: bool = True) -> FollowResult:
        failures: list[str] = []
        for task in self.tasks.values():
            if task_failed(task["state"]):
                fix = task.get("fix")
                failures.append(f"{task['node']}: {task['reason'] or 'failed'}" + (f" (fix: {fix})" if fix else ""))
        if volume_failed(self.volume_state) and not failures and self.volume:
            failures.append(f"volume {self.volume[0]}: {self.volume_state}")
        if timed_out:
            waiting = [
                f"{t['node']} {t['kind']} {t['state']}" for t in self.tasks.values() if not task_final(t["state"])
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
        follower.tasks[task_id] = {"node": "?", "kind": "", "state": TaskState.QUEUED.value, "reason": ""}
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
        follower.tasks[task_id] = {"node": "?", "kind": "", "state": TaskState.QUEUED.value, "reason": ""}
    return follower.run()


def report(result: FollowResult, out: IO[str] | None = None) -> int:
    """Print the failures of ``result`` (to stderr by default); return the exit code for the CLI."""
    out = out or sys.stderr
    for line in result.failures:
        out.write(f"error: {line}\n")
    return result.exit_code
