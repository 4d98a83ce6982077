"""Messages from the I/O workers to the app; bursts coalesce."""

from __future__ import annotations

from textual.message import Message

from control.client import Snapshot


class EventsPending(Message):
    """Events wait in the app's buffer. Many in a row coalesce into one: the handler drains the buffer."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventsPending)


class SnapshotLoaded(Message):
    def __init__(self, snapshot: Snapshot, areas: frozenset[str]) -> None:
        super().__init__()
        self.snapshot, self.areas = snapshot, areas


class StreamUp(Message):
    pass


class StreamDown(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class LoggedOut(Message):
    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail
