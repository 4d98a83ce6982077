"""GET /api/v1/events: the live event stream (server-sent events).

Every client re-reads the Event table by id at its own pace (``control.services.eventfeed``),
so a slow client only ever slows itself. The recorder's in-process listener runs before the
recording transaction commits, so a wake-up is followed by a few quick re-reads, and every
stream also re-reads on a timer as a fallback (events written by another process, a missed
wake-up).

Events go out strictly in id order, and none that commits is ever skipped: an id gap is held
until ``eventfeed.GapWatch`` says the missing ids can no longer appear (on SQLite after
GAP_WAIT_SECONDS, since writers are serialised; on PostgreSQL once no transaction that could
hold them is still open, however long that takes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from control.api.deps import LOGIN, CurrentUser, Hub, permit
from control.errors import InvalidInput
from control.services import authz, eventfeed
from control.services.authz import Action, Scope
from control.services.eventfeed import LoopWaker
from control.services.metrics import COUNTS

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")

# Timing and size constants live at module level so tests and operators can change them.
HEARTBEAT_SECONDS = 15.0  # a comment line at least this often keeps proxies from closing the stream
POLL_SECONDS = 1.0  # fallback re-read of the Event table when no wake-up came
HOT_POLL_SECONDS = 0.05  # re-read this often for HOT_SECONDS after a wake-up (the writer commits after it)
HOT_SECONDS = 1.0
GAP_WAIT_SECONDS = 3.0  # SQLite: an id gap is a rolled-back write; skip it after this long (PostgreSQL: see GapWatch)
BATCH = 500  # rows per read
SHUTDOWN_CHECK_SECONDS = 0.25
GRANTS_REFRESH_SECONDS = 5.0  # a stream re-reads its user's grants this often (grants given or revoked meanwhile)


DESCRIPTION = f"""
Server-sent events (`text/event-stream`): every state change the control service persists
(node Online/Unreachable, task transitions, volume and brick state, ...), in order.

Each change is one message:

```
id: 1234
data: {{"id": 1234, "at": 1717171717.5, "cluster": "default", "kind": "node.state",
        "subject": "node1", "data": {{"state": "Unreachable", "reason": "last will"}}}}
```

- Ids increase monotonically and survive server restarts (events are stored in the database).
- Resume without loss after a disconnect with the `Last-Event-ID` header (browsers' EventSource
  sends it by itself) or `?after=ID`. Without either the stream starts with events that happen
  after the request; `?after=0` replays the whole backlog.
- The first message is `event: hello` with `{{"last_id": N, "oldest_id": M}}`: every change with
  an id above `last_id` will follow, so a client can read current state through REST once it
  has seen `hello` and then apply messages without missing any.
- The server keeps the newest events (`glusterctl server --event-backlog`, default 10000). A client that asks to resume from an id that has
  been pruned first gets `event: reset` with `{{"after": ID, "oldest_id": M}}`: it lost events
  and must reload state through REST; the stream then continues with the oldest kept event.
- Each user sees the events of what it may read: everything of a cluster it holds a role on,
  and of a volume, node or device it was granted; events without a cluster (users) only with a
  global role.
- Filters: `cluster=NAME` (comma-separated list), `kind=KIND` (comma-separated; `task.` or `task`
  matches every `task.*` kind). Events that a filter drops still advance the id: heartbeats
  carry an `id:` line so a resuming client does not fall behind the backlog.
- A comment line (`: keepalive`) at least every {HEARTBEAT_SECONDS:.0f} s (`?heartbeat=SECONDS`)
  keeps proxies from closing an idle stream.
- Kinds today: `user.created`, `user.deleted`, `cluster.created`, `cluster.deleted`,
  `cluster.token_rotated`, `node.registered`, `node.state` (`state`, `reason`), `node.removed`,
  `task.state` (subject: task id; `node`, `kind`, `state`, `reason`, and `fix` when FAILED),
  `volume.state` (subject: volume name; `state`, `reason`), `brick.state` (subject:
  `volume:node:path`; `state`, `pid`), `device.state` (subject: `node:path`; `state`),
  `device.removed`, and `audit` (every change asked of the REST API, subject: the actor; `audit_id`,
  `method`, `route`, `path`, `status`; see `GET /api/v1/audit`): only for global admins, and only on
  streams that name it (`kind=audit`).
"""


# ---- reading ------------------------------------------------------------------------------
def parse_filters(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _message(kind: str | None, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if kind:
        lines.append(f"event: {kind}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), sort_keys=True))
    return ("\n".join(lines) + "\n\n").encode()


def _shutting_down(request: Request) -> bool:
    """True once uvicorn has begun a graceful shutdown.

    uvicorn waits for open responses before it exits and tells a streaming response nothing;
    it only clears ``keep_alive`` of the request cycle, which is the ``receive`` callable's
    owner. Without this check an open stream would hold a stopping server until SIGKILL.
    """
    cycle = getattr(request.receive, "__self__", None)
    return cycle is not None and getattr(cycle, "keep_alive", True) is False


async def _abort_on_shutdown(request: Request) -> None:
    """Drop the connection when the server stops, even while a slow client blocks our writes."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or _shutting_down(request):
        return
    while not _shutting_down(request):
        await asyncio.sleep(SHUTDOWN_CHECK_SECONDS)
    log.info("server stopping: closing an event stream")
    transport.abort()


class Visibility:
    """What one stream's user may see, re-read every GRANTS_REFRESH_SECONDS."""

    def __init__(self, load: Callable[[], Scope]) -> None:
        self._load = load
        self._scope: Scope | None = None
        self._loaded_at = 0.0

    async def scope(self) -> Scope:
        if self._scope is None or time.monotonic() - self._loaded_at >= GRANTS_REFRESH_SECONDS:
            self._scope = await run_in_threadpool(self._load)
            self._loaded_at = time.monotonic()
        return self._scope


async def stream(
    request: Request,
    waker: LoopWaker,
    after: int | None,
    clusters: list[str],
    kinds: list[str],
    heartbeat: float,
    visibility: Visibility,
) -> AsyncIterator[bytes]:
    watcher = asyncio.create_task(_abort_on_shutdown(request))
    COUNTS.add("event_stream_clients")
    try:
        async for chunk in _stream(request, waker, after, clusters, kinds, heartbeat, visibility):
            yield chunk
    finally:
        COUNTS.add("event_stream_clients", -1)
        watcher.cancel()


async def _stream(
    request: Request,
    waker: LoopWaker,
    after: int | None,
    clusters: list[str],
    kinds: list[str],
    heartbeat: float,
    visibility: Visibility,
) -> AsyncIterator[bytes]:
    oldest, newest = await run_in_threadpool(eventfeed.bounds)
    watch_shutdown = not _shutting_down(request)  # a client that asked for Connection: close
    if after is None:
        cursor = newest
    elif after > newest or (after and oldest and after < oldest - 1):
        # pruned past it, or an id from another database: the client must reload state
        yield _message("reset", {"after": after, "oldest_id": oldest})
        cursor = max(oldest - 1, 0)
    else:
        cursor = after
    yield _message("hello", {"last_id": newest, "oldest_id": oldest})
    last_sent = cursor
    last_write = time.monotonic()
    hot_until = 0.0
    gaps = eventfeed.GapWatch(GAP_WAIT_SECONDS)
    while True:
        rows = await run_in_threadpool(eventfeed.read_after, cursor, BATCH)
        scope = await visibility.scope()
        chunks: list[bytes] = []
        for event_id, at, cluster, kind, subject, data in rows:
            if event_id != cursor + 1:
                first_missing = cursor + 1
                oldest, _ = await run_in_threadpool(eventfeed.bounds)
                if first_missing < oldest:
                    chunks.append(_message("reset", {"after": cursor, "oldest_id": oldest}))
                else:
                    if not await run_in_threadpool(gaps.may_skip, first_missing, event_id - 1):
                        hot_until = time.monotonic() + HOT_SECONDS
                        break  # an earlier transaction may still commit: deliver in order
                    log.info("event ids %d..%d never appeared (rolled back); skipped", first_missing, event_id - 1)
            gaps.clear()
            cursor = event_id
            if clusters and cluster not in clusters:
                continue
            if kind == "audit" and "audit" not in kinds:
                continue  # the audit log comes only to streams that ask for it (kind=audit)
            if not eventfeed.kind_matches(kind, kinds):
                continue
            if not scope.sees_event(cluster, kind, subject, data):
                continue
            chunks.append(
                _message(
                    None,
                    {"id": event_id, "at": at, "cluster": cluster, "kind": kind, "subject": subject, "data": data},
                    event_id,
                )
            )
            last_sent = event_id
        now = time.monotonic()
        if chunks:
            yield b"".join(chunks)
            last_write = now
        elif now - last_write >= heartbeat:
            yield (f"id: {cursor}\n" if cursor > last_sent else "").encode() + b": keepalive\n\n"
            last_sent = max(last_sent, cursor)
            last_write = now
        if watch_shutdown and _shutting_down(request):
            return
        if getattr(getattr(request.receive, "__self__", None), "disconnected", False):
            return  # the client went away (or the connection was aborted at shutdown)
        if len(rows) == BATCH and not gaps.waiting:
            continue
        timeout = HOT_POLL_SECONDS if now < hot_until else min(POLL_SECONDS, heartbeat)
        if await waker.wait(timeout):
            await asyncio.sleep(0.01)  # the writer commits right after its listeners ran
            hot_until = time.monotonic() + HOT_SECONDS


@router.get(
    "/events",
    tags=["events"],
    summary="Live event stream (server-sent events)",
    description=DESCRIPTION,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"}},
    dependencies=[permit(Action.READ, LOGIN)],
)
async def event_stream(
    request: Request,
    actor: CurrentUser,
    hub: Hub,
    cluster: str | None = Query(None, description="only events of these clusters (comma-separated)"),
    kind: str | None = Query(None, description="only these kinds or kind prefixes (comma-separated), e.g. `task.`"),
    after: int | None = Query(None, ge=0, description="resume after this id (like Last-Event-ID); 0: whole backlog"),
    heartbeat: float = Query(HEARTBEAT_SECONDS, ge=0.2, le=300, description="seconds between keepalive comments"),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> StreamingResponse:
    if after is None and last_event_id:
        try:
            after = int(last_event_id)
        except ValueError:
            raise InvalidInput(f"Last-Event-ID must be an event id (a number), not {last_event_id!r}") from None
    if after is not None and after < 0:
        raise InvalidInput("after must be 0 or more")
    visibility = Visibility(lambda: authz.reload(actor))
    body = stream(request, hub.waker(), after, parse_filters(cluster), parse_filters(kind), heartbeat, visibility)
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
