"""The asyncio client (the dashboard): REST calls, a snapshot of everything, and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from control.client.base import (
    RECONNECT_SECONDS,
    ApiError,
    BaseClient,
    NotLoggedIn,
    StreamState,
    refused_certificate,
    transport_error,
)
from control.client.models import Down, Snapshot, StreamItem
from control.client.sse import SseDecoder, aparse_sse

SNAPSHOT_TASK_LIMIT = 500
SNAPSHOT_RESOLVED_ALERT_LIMIT = 500  # newest alerts (firing or resolved); every firing one is read as well
SNAPSHOT_FIRING_ALERT_LIMIT = 5000


class AsyncClient(BaseClient):
    """REST calls that return the decoded JSON answer or raise ``ApiError``.

    Without a token every call raises ``NotLoggedIn`` at once: the dashboard has nothing to show
    before a login. Each call opens its own connection, so one client serves any event loop.
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 10.0, ca: str | None = None
    ) -> None:
        super().__init__(url, token, timeout, ca)

    def require_login(self) -> None:
        if not self.token:
            raise NotLoggedIn("not logged in", 401)

    async def request(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None, raw: bool = False
    ) -> Any:
        self.require_login()
        tried = 1
        while True:
            try:
                async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout, verify=self.verify) as http:
                    response = await http.request(**self.request_args(method, path, body, params, True))
                break
            except httpx.HTTPError as exc:
                if not self.unreachable(exc, tried):
                    raise transport_error(exc, self.url, self.ca) from None
                self.next_server()
                tried += 1
        return self.answer(response, path, raw)

    async def snapshot(self) -> Snapshot:
        """Clusters, nodes, the newest tasks, every cluster's volumes, firing and recently resolved alerts."""
        clusters, nodes, tasks, alerts = await asyncio.gather(
            self.request("GET", "/api/v1/clusters"),
            self.request("GET", "/api/v1/nodes"),
            self.request("GET", "/api/v1/tasks", params={"limit": SNAPSHOT_TASK_LIMIT}),
            self.alerts(),
        )
        volumes: list[dict[str, Any]] = []
        for cluster in clusters:
            try:
                volumes.extend(await self.request("GET", f"/api/v1/clusters/{cluster['name']}/volumes"))
            except ApiError as exc:
                if exc.status == 404 and "Not Found" in str(exc):  # a server without volume endpoints
                    return Snapshot(clusters=clusters, nodes=nodes, tasks=tasks, volumes=None, alerts=alerts)
                raise
        return Snapshot(clusters=clusters, nodes=nodes, tasks=tasks, volumes=volumes, alerts=alerts)

    async def alerts(self) -> list[dict[str, Any]]:
        """Every firing alert and the newest resolved ones, newest first ([] from a server without alerts)."""
        try:
            firing, recent = await asyncio.gather(
                self.request("GET", "/api/v1/alerts", params={"limit": SNAPSHOT_FIRING_ALERT_LIMIT}),
                self.request("GET", "/api/v1/alerts", params={"all": "true", "limit": SNAPSHOT_RESOLVED_ALERT_LIMIT}),
            )
        except ApiError as exc:
            if exc.status == 404 and "Not Found" in str(exc):  # a server from before alerts
                return []
            raise
        by_id = {a["id"]: a for a in recent}
        by_id.update({a["id"]: a for a in firing})
        return sorted(by_id.values(), key=lambda a: (a["since"], a["id"]), reverse=True)

    async def rebalance(self, cluster: str, volume: str) -> dict[str, Any] | None:
        """The stored rebalance status of a volume (GET .../rebalance); None from a server without rebalance."""
        path = f"/api/v1/clusters/{quote(cluster, safe='')}/volumes/{quote(volume, safe='')}/rebalance"
        try:
            answer: dict[str, Any] | None = await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404 and "Not Found" in str(exc):  # a server from before rebalance
                return None
            raise
        return answer

    def events(
        self,
        cluster: str | None = None,
        kinds: str | None = None,
        heartbeat: float = 5.0,
        after: int | None = None,
        reconnect: Sequence[float] = RECONNECT_SECONDS,
    ) -> AsyncEventStream:
        """The event stream (``kinds``: comma-separated kinds or prefixes such as ``task.``)."""
        return AsyncEventStream(StreamState(self, cluster, kinds, heartbeat, after, reconnect))


class AsyncEventStream:
    """``async for`` yields ``Hello``/``Reset``/``Event``/``Down`` items, reconnecting with ``Last-Event-ID``
    after each ``Down``; it ends only by cancellation. A 401 (or no token) raises ``NotLoggedIn``.
    Iterating again later resumes from the last id seen."""

    def __init__(self, state: StreamState) -> None:
        self.state = state

    @property
    def last_id(self) -> int | None:
        return self.state.last_id

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[StreamItem]:
        state = self.state
        client = state.client
        while True:
            if isinstance(client, AsyncClient):
                client.require_login()
            try:
                async with httpx.AsyncClient(timeout=state.timeout(), verify=client.verify) as http:
                    async with http.stream("GET", state.url, params=state.params, headers=state.headers()) as response:
                        if response.status_code != 200:
                            await response.aread()
                            raise state.refused(response)
                        decoder = SseDecoder()
                        async for message in aparse_sse(response.aiter_lines(), decoder):
                            item = state.item(message, decoder)
                            if item is not None:
                                yield item
                error = "the server closed the event stream"
            except NotLoggedIn:
                raise
            except httpx.HTTPError as exc:
                if refused_certificate(exc):
                    raise transport_error(exc, client.url, client.ca) from None
                error = str(exc) or type(exc).__name__
                if len(client.urls) > 1:  # resume on the next server: Last-Event-ID loses nothing
                    client.next_server()
            except (ApiError, ValueError) as exc:
                error = str(exc) or type(exc).__name__
            yield Down(error)
            await asyncio.sleep(state.next_delay())
