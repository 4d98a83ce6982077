"""The one client library for glusterctl's REST API and event stream (used by the CLI and the dashboard).

- ``Client`` (blocking) and ``AsyncClient`` (asyncio): REST calls; errors raise ``ApiError``
  (``NotLoggedIn`` for 401) with the server's detail and the HTTP status.
- ``client.events(...)``: typed ``Hello``/``Reset``/``Event``/``Down`` items; reconnects resume
  with ``Last-Event-ID``.
- ``parse_sse``/``aparse_sse``/``SseDecoder``: the server-sent events parser under it.
- The saved login (``load_login``, ``save_login``, ``forget_login``) and base URL resolution.

It talks HTTP only: nothing here imports the server.
"""

from control.client.aio import AsyncClient, AsyncEventStream
from control.client.base import ApiError, NotLoggedIn
from control.client.login import (
    DEFAULT_URL,
    config_dir,
    forget_login,
    load_login,
    resolve_url,
    save_login,
    saved_token,
    token_path,
)
from control.client.models import Down, Event, Hello, Reset, Snapshot, StreamItem
from control.client.sse import SseDecoder, SseMessage, aparse_sse, parse_sse
from control.client.sync import Client, EventStream

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "AsyncClient",
    "AsyncEventStream",
    "Client",
    "Down",
    "Event",
    "EventStream",
    "Hello",
    "NotLoggedIn",
    "Reset",
    "Snapshot",
    "SseDecoder",
    "SseMessage",
    "StreamItem",
    "aparse_sse",
    "config_dir",
    "forget_login",
    "load_login",
    "parse_sse",
    "resolve_url",
    "save_login",
    "saved_token",
    "token_path",
]
