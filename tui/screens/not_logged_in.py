"""Shown while there is no saved login (or the server refused it); goes away by itself after login."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static


class NotLoggedInScreen(Screen[None]):
    BINDINGS = [("q", "app.quit", "Quit")]

    def __init__(self, url: str, detail: str = "") -> None:
        super().__init__()
        self.url, self.detail = url, detail

    def compose(self) -> ComposeResult:
        with Center():
            with Vertical(id="login-box"):
                yield Static("[b]Not logged in[/b]", id="login-title")
                yield Static(
                    f"The dashboard needs a login for {self.url}."
                    + (f"\nThe server said: {self.detail}" if self.detail else "")
                )
                yield Static(
                    f"In a shell, run:\n\n    glusterctl login --url {self.url}\n\n"
                    "This screen goes away by itself once the login is saved."
                )
        yield Footer()
