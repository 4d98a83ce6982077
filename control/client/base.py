"""What the sync and async clients share: base URL and token, request building, error mapping,
and the event stream's resume state (``Last-Event-ID``, reconnect delays, typed items)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from control.client.login import resolve_ca, resolve_url, saved_token, split_urls
from control.client.models import Event, Hello, Reset, StreamItem
from control.client.sse import SseDecoder, SseMessage

EVENTS_PATH = "/api/v1/events"
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # delays between reconnects of the event stream
STREAM_CONNECT_TIMEOUT = 10.0


class ApiError(Exception):
    """A request failed: the server's ``detail``, or why there was no answer; ``status`` 0 means no answer.

    ``problem`` is the server's RFC 9457 problem details object (empty when there was none); for
    invalid requests its ``errors`` list names each invalid field (``loc``) and why (``msg``).
    """

    def __init__(self, message: str, status: int = 0, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


class NotLoggedIn(ApiError):
    """HTTP 401: no token, or the server refused it."""


class TooManyAttempts(ApiError):
    """HTTP 429: too many failed logins; ``retry_after`` seconds to wait."""

    @property
    def retry_after(self) -> float:
        return float(self.problem.get("retry_after") or 0)


def error_for(response: httpx.Response, url: str, path: str, has_token: bool) -> ApiError:
    """Map an HTTP error answer (problem details: ``{"status": ..., "detail": ...}``) to one exception."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {}
    detail = problem.get("detail")
    if not isinstance(detail, str):  # a server before problem details, or a proxy's answer
        detail = None
    status = response.status_code
    if status == 401 and not has_token:
        detail = detail or "not logged in"
    message = detail or f"HTTP {status} from {url}{path}"
    if status == 401:
        return NotLoggedIn(message, status, problem)
    if status == 429:
        problem = {**problem, "retry_after": response.headers.get("Retry-After", "0")}
        return TooManyAttempts(message, status, problem)
    return ApiError(message, status, problem)


def verify_context(url: str, ca: str | None) -> ssl.SSLContext | bool:
    """How an https URL's certificate is verified: against ``ca`` (a PEM file), else the system's CAs."""
    if not url.startswith("https://"):
        return True
    try:
        context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(f"cannot use {ca} as the CA certificate of {url}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def refused_certificate(exc: BaseException) -> bool:
    """True when TLS verification refused the server's certificate (no retry helps)."""
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def transport_error(exc: httpx.HTTPError, url: str, ca: str | None = None) -> ApiError:
    """Map a failure to get an answer at all."""
    text = str(exc)
    if refused_certificate(exc):
        trusted = f"the CA {ca}" if ca else "the system's CAs"
        return ApiError(
            f"refusing the control server at {url}: its certificate is not signed by {trusted} ({text}); "
            "pass the server's CA with --ca FILE (its SHA-256 fingerprint is in the server's log)"
        )
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return ApiError(f"the control server at {url} does not speak TLS: use an http:// URL, or start it with --tls")
    if isinstance(exc, httpx.ConnectError):
        return ApiError(
            f"cannot reach the control server at {url}: is it running? "
            "(start it with 'glusterctl server'; pick another with --url)"
        )
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(f"the control server at {url} did not answer in time")
    return ApiError(f"the control server at {url} failed to answer: {exc or type(exc).__name__}")


def without_none(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if v is not None}


class BaseClient:
    """Base URL, token and request building; subclasses add the transport.

    ``url`` None: ``$GLUSTERCTL_URL``, the saved login's URL, or the default. ``token`` None: the
    token saved for that URL; ``""``: no token. ``ca``: the PEM file that verifies an https server
    (None: ``$GLUSTERCTL_CA``, the one saved with the login, or the system's CAs).

    ``url`` may list several servers of one control plane, separated by commas (docs/ha.md): a
    request that cannot reach one (no connection was made, so nothing was sent) goes to the next;
    ``url`` is the one in use, ``servers`` the whole list (what ``login`` saves).
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30.0, ca: str | None = None
    ) -> None:
        try:
            self.servers = resolve_url(url)
        except ValueError as exc:
            raise ApiError(str(exc)) from None
        self.urls = split_urls(self.servers)
        self._current = 0
        self.token = token if token is not None else saved_token(self.servers)
        self.timeout = timeout
        self.ca = resolve_ca(self.servers, ca)
        self._verify = {u: verify_context(u, self.ca) for u in self.urls}

    @property
    def url(self) -> str:
        """The server in use."""
        return self.urls[self._current]

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return self._verify[self.url]

    def next_server(self) -> str:
        """Move on to the next server of the list (round the end); returns it."""
        self._current = (self._current + 1) % len(self.urls)
        return self.url

    def unreachable(self, exc: httpx.HTTPError, tried: int) -> bool:
        """True when ``exc`` means the server in use could not be reached and another one is left to try
        (this is the ``tried``-th): the caller moves on (``next_server``) and sends the request there."""
        return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and tried < len(self.urls)

    def headers(self, auth: bool = True) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}

    def request_args(
        self, method: str, path: str, body: Any, params: dict[str, Any] | None, auth: bool
    ) -> dict[str, Any]:
        return {
            "method": method,
            "url": path,
            "json": body,
            "params": without_none(params),
            "headers": self.headers(auth),
        }

    def answer(self, response: httpx.Response, path: str, raw: bool) -> Any:
        if response.status_code >= 400:
            raise error_for(response, self.url, path, bool(self.token))
        if raw:
            return response.text
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


class StreamState:
    """One event stream's resume state, shared by the sync and async readers.

    Tracks the last event id seen (``id:`` lines, including the id-only keepalives that follow
    filtered events, and ``hello``'s ``last_id`` when starting fresh) and sends it as
    ``Last-Event-ID`` on every reconnect, so a drop loses nothing.
    """

    def __init__(
        self,
        client: BaseClient,
        cluster: str | None = None,
        kinds: str | None = None,
        heartbeat: float = 5.0,
        after: int | None = None,
        reconnect: Sequence[float] = RECONNECT_SECONDS,
    ) -> None:
        self.client = client
        self.params: dict[str, Any] = without_none({"heartbeat": heartbeat, "cluster": cluster, "kind": kinds})
        self.heartbeat = heartbeat
        self.last_id = after
        self.reconnect = tuple(reconnect) or RECONNECT_SECONDS
        self.retry: float | None = None  # the server's retry: field, when it sent one
        self.attempt = 0

    @property
    def url(self) -> str:
        return f"{self.client.url}{EVENTS_PATH}"

    def headers(self) -> dict[str, str]:
        headers = self.client.headers()
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        return headers

    def timeout(self) -> httpx.Timeout:
        # a keepalive comes every heartbeat: three missed ones mean the connection is dead
        return httpx.Timeout(STREAM_CONNECT_TIMEOUT, read=self.heartbeat * 3 + 5)

    def refused(self, response: httpx.Response) -> ApiError:
        """The error for a non-200 answer (read the body first)."""
        return error_for(response, self.client.url, EVENTS_PATH, bool(self.client.token))

    def item(self, message: SseMessage, decoder: SseDecoder) -> StreamItem | None:
        """Advance the cursor past ``message``; return it typed (None for keepalives and unknown events)."""
        if decoder.retry is not None:
            self.retry = decoder.retry
        if message.id is not None and message.id.isdigit():
            self.last_id = int(message.id)
        if message.event == "hello":
            data = json.loads(message.data)
            hello = Hello(last_id=int(data.get("last_id") or 0), oldest_id=int(data.get("oldest_id") or 0))
            self.attempt = 0
            if self.last_id is None:
                self.last_id = hello.last_id  # every later change follows: resume from here
            return hello
        if message.event == "reset":
            data = json.loads(message.data)
            reset = Reset(after=int(data.get("after") or 0), oldest_id=int(data.get("oldest_id") or 0))
            self.last_id = max(reset.oldest_id - 1, 0)  # the server goes on from the oldest kept event
            return reset
        if message.event == "message":
            event = Event.from_dict(json.loads(message.data))
            if message.id is None and event.id:
                self.last_id = event.id
            return event
        return None

    def next_delay(self) -> float:
        """Seconds to wait before the next reconnect (the server's ``retry:`` wins over the backoff)."""
        delay = self.retry if self.retry is not None else self.reconnect[min(self.attempt, len(self.reconnect) - 1)]
        self.attempt += 1
        return delay
