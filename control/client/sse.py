"""One server-sent events parser (the WHATWG rules this project's stream uses), for sync and async readers.

``SseDecoder.feed`` takes one line at a time and returns a message when a blank line ends one;
``parse_sse`` and ``aparse_sse`` drive it over sync and async line iterators. A block that only
carries an ``id:`` (the server's keepalive after filtered events) comes out as a message with
``event == ""`` so a reader can advance its resume cursor.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import NamedTuple


class SseMessage(NamedTuple):
    """One dispatched block: ``event`` ("message" unless named; "" for an id-only block), ``data``, ``id``."""

    event: str
    data: str
    id: str | None


class SseDecoder:
    """Line-by-line SSE decoding; keeps the last event id and the server's ``retry:`` (seconds) across blocks."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry: float | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseMessage | None:
        """Take one line (without its line ending); return a message when this line ends one."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keepalive)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:  # the spec ignores ids with NUL
            self._id = value
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None  # unknown fields are ignored

    def _dispatch(self) -> SseMessage | None:
        event, data, event_id = self._event, self._data, self._id
        self._event, self._data, self._id = "", [], None
        if data:
            return SseMessage(event or "message", "\n".join(data), event_id)
        if event_id is not None:
            return SseMessage("", "", event_id)
        return None


def parse_sse(lines: Iterable[str], decoder: SseDecoder | None = None) -> Iterator[SseMessage]:
    """Yield the messages of an SSE line stream."""
    decoder = decoder or SseDecoder()
    for line in lines:
        message = decoder.feed(line)
        if message is not None:
            yield message


async def aparse_sse(lines: AsyncIterable[str], decoder: SseDecoder | None = None) -> AsyncIterator[SseMessage]:
    """Yield the messages of an async SSE line stream."""
    decoder = decoder or SseDecoder()
    async for line in lines:
        message = decoder.feed(line)
        if message is not None:
            yield message
