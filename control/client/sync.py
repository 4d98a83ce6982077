"""The blocking client (the CLI): REST calls and the event stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

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
from control.client.models import Down, StreamItem
from control.client.sse import SseDecoder, parse_sse


class Client(BaseClient):
    """REST calls that return the decoded JSON answer or raise ``ApiError``."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30.0, ca: str | None = None
    ) -> None:
        super().__init__(url, token, timeout, ca)
        self._clients: dict[str, httpx.Client] = {}

    @property
    def _http(self) -> httpx.Client:
        http = self._clients.get(self.url)
        if http is None:
            http = self._clients[self.url] = httpx.Client(base_url=self.url, timeout=self.timeout, verify=self.verify)
        return http

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        raw: bool = False,
    ) -> Any:
        """``raw``: return the answer's text instead of its JSON."""
        tried = 1
        while True:
            try:
                response = self._http.request(**self.request_args(method, path, body, params, auth))
                break
            except httpx.HTTPError as exc:
                if not self.unreachable(exc, tried):
                    raise transport_error(exc, self.url, self.ca) from None
                self.next_server()
                tried += 1
        return self.answer(response, path, raw)

    def get(self, path: str, /, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, auth: bool = True) -> Any:
        return self.request("POST", path, body=body if body is not None else {}, auth=auth)

    def delete(self, path: str, /, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def events(
        self,
        cluster: str | None = None,
        kinds: str | None = None,
        heartbeat: float = 5.0,
        after: int | None = None,
        reconnect: Sequence[float] = RECONNECT_SECONDS,
    ) -> EventStream:
        """The event stream (``kinds``: comma-separated kinds or prefixes such as ``task.``)."""
        return EventStream(StreamState(self, cluster, kinds, heartbeat, after, reconnect))

    def close(self) -> None:
        for http in self._clients.values():
            http.close()
        self._clients.clear()


class EventStream:
    """Iterate for ``Hello``/``Reset``/``Event``/``Down`` items, reconnecting with ``Last-Event-ID`` after
    each ``Down``, until ``close()`` (callable from another thread). A 401 raises ``NotLoggedIn``."""

    def __init__(self, state: StreamState) -> None:
        self.state = state
        self._closed = threading.Event()
        self._response: httpx.Response | None = None

    @property
    def last_id(self) -> int | None:
        return self.state.last_id

    def __iter__(self) -> Iterator[StreamItem]:
        state = self.state
        with httpx.Client(timeout=state.timeout(), verify=state.client.verify) as http:
            while not self._closed.is_set():
                try:
                    with http.stream("GET", state.url, params=state.params, headers=state.headers()) as response:
                        self._response = response
                        if response.status_code != 200:
                            response.read()
                            raise state.refused(response)
                        decoder = SseDecoder()
                        for message in parse_sse(response.iter_lines(), decoder):
                            item = state.item(message, decoder)
                            if item is not None:
                                yield item
                            if self._closed.is_set():
                                return
                    error = "the server closed the event stream"
                except NotLoggedIn:
                    raise
                except httpx.HTTPError as exc:
                    if refused_certificate(exc):
                        raise transport_error(exc, state.client.url, state.client.ca) from None
                    error = str(exc) or type(exc).__name__
                    if len(state.client.urls) > 1:  # resume on the next server: Last-Event-ID loses nothing
                        state.client.next_server()
                except (ApiError, ValueError) as exc:
                    error = str(exc) or type(exc).__name__
                finally:
                    self._response = None
                if self._closed.is_set():
                    return
                yield Down(error)
                self._closed.wait(state.next_delay())

    def close(self) -> None:
        self._closed.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # closing from another thread may race with the reader
                pass
