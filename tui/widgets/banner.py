"""The connection banner: hidden while the event stream is up, "disconnected since" otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.reactive import reactive
from textual.widgets import Static


class ConnectionBanner(Static):
    disconnected_since: reactive[float | None] = reactive(None)
    error: reactive[str] = reactive("")

    def __init__(self, url: str, clock: Callable[[], float] = time.time, **kw: Any) -> None:
        super().__init__("", **kw)
        self.url, self.clock = url, clock

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh_text)
        self.refresh_text()

    def watch_disconnected_since(self) -> None:
        self.refresh_text()

    def watch_error(self) -> None:
        self.refresh_text()

    def refresh_text(self) -> None:
        since = self.disconnected_since
        self.display = since is not None
        if since is None:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(since))
        seconds = max(0, int(self.clock() - since))
        self.update(
            f"Disconnected from {self.url} since {stamp} ({seconds}s): {self.error or 'connecting'}"
            " - reconnecting automatically"
        )
