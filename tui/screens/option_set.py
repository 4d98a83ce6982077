"""Set one volume option: KEY and VALUE, sent as `glusterctl volume set` sends them.

The screen stays open until the server accepts the option; a refusal is shown in it as the CLI shows
it (``error: MESSAGE``, which says what is allowed), so the operator can correct the value. The
options table of the volume screen changes when the ``volume.option`` event arrives, not from here.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from control.client import ApiError


class OptionSetScreen(ModalScreen[dict[str, Any] | None]):
    """Dismissed with the server's answer ({volume, changed, tasks}), or None when cancelled."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, volume: tuple[str, str], key: str = "", value: str = "") -> None:
        super().__init__()
        self.volume, self.key, self.value = volume, key, value
        self.sending = False

    def compose(self) -> ComposeResult:
        cluster, name = self.volume
        with Vertical(id="dialog"):
            yield Label(f"Set an option of volume {name} (cluster {cluster})", id="option-title")
            yield Input(self.key, placeholder="KEY (e.g. performance.write-behind, or write-behind)", id="option-key")
            yield Input(self.value, placeholder="VALUE", id="option-value")
            yield Label("", id="option-error")
            yield Label("Enter sets it, Esc cancels; 'glusterctl volume get VOL all' lists the keys", id="option-hint")

    def on_mount(self) -> None:
        self.query_one("#option-value" if self.key else "#option-key", Input).focus()

    @on(Input.Submitted, "#option-key")
    def key_done(self, _: Input.Submitted) -> None:
        self.query_one("#option-value", Input).focus()

    @on(Input.Submitted, "#option-value")
    def value_done(self, _: Input.Submitted) -> None:
        key = self.query_one("#option-key", Input).value.strip()
        value = self.query_one("#option-value", Input).value
        if not key:
            self.show_error("error: give a KEY, e.g. performance.write-behind")
            self.query_one("#option-key", Input).focus()
            return
        if self.sending:
            return
        self.sending = True
        self.show_error("")
        self._send(key, value)

    def show_error(self, text: str) -> None:
        self.query_one("#option-error", Label).update(text)

    @property
    def error(self) -> str:
        return str(self.query_one("#option-error", Label).content)

    @work(exclusive=True, group="option-set")
    async def _send(self, key: str, value: str) -> None:
        cluster, name = self.volume
        try:
            answer = await self.app.api.request(  # type: ignore[attr-defined]
                "POST", f"/api/v1/clusters/{cluster}/volumes/{name}/options", {key: value}
            )
        except ApiError as exc:
            self.show_error(f"error: {exc}")
            return
        finally:
            self.sending = False
        self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(None)
