"""Async REST and event-stream client for the dashboard (I/O only; runs inside workers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tui.model import Snapshot


class ApiError(Exception):
    """A request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotLoggedIn(ApiError):
    pass


class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        if not self.token:
            raise NotLoggedIn("not logged in", 401)
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as http:
                resp = await http.request(method, path, json=body, params=params, headers=self._headers())
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        if resp.status_code == 401:
            raise NotLoggedIn(_detail(resp), 401)
        if resp.status_code >= 400:
            raise ApiError(_detail(resp), resp.status_code)
        return resp.json() if resp.content else None

    async def snapshot(self) -> Snapshot:
        clusters, nodes, tasks = await asyncio.gather(
            self.request("GET", "/api/v1/clusters"),
            self.request("GET", "/api/v1/nodes"),
            self.request("GET", "/api/v1/tasks", params={"limit": 500}),
        )
        volumes: list[dict] | None = []
        for cluster in clusters:
            try:
                volumes.extend(await self.request("GET", f"/api/v1/clusters/{cluster['name']}/volumes"))
            except ApiError as exc:
                if exc.status == 404 and "Not Found" in str(exc):  # a server without volume endpoints
                    volumes = None
                    break
                raise
        return Snapshot(clusters=clusters, nodes=nodes, tasks=tasks, volumes=volumes)

    async def events(self, after: int | None, heartbeat: float = 5.0) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``(kind, payload)`` from the event stream: hello, reset, event; ends when it drops."""
        if not self.token:
            raise NotLoggedIn("not logged in", 401)
        headers = self._headers()
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        timeout = httpx.Timeout(self.timeout, read=heartbeat * 3 + 5)
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=timeout) as http:
                async with http.stream(
                    "GET", "/api/v1/events", params={"heartbeat": heartbeat}, headers=headers
                ) as resp:
                    if resp.status_code == 401:
                        await resp.aread()
                        raise NotLoggedIn(_detail(resp), 401)
                    if resp.status_code != 200:
                        await resp.aread()
                        raise ApiError(_detail(resp), resp.status_code)
                    event, data = "", []
                    async for line in resp.aiter_lines():
                        if line == "":
                            if data:
                                payload = json.loads("\n".join(data))
                                yield (event if event else "event"), payload
                            event, data = "", []
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip())
        except httpx.HTTPError as exc:
            raise ApiError(f"event stream from {self.url}: {exc or type(exc).__name__}") from None
        raise ApiError(f"the server {self.url} closed the event stream")


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail") or f"HTTP {resp.status_code}")
    except ValueError:
        return f"HTTP {resp.status_code}"
