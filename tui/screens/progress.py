"""Live progress of an action's tasks (from the event stream), with failure reasons."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from broker.messages import TaskState
from control.client.states import task_final
from tui.widgets.model_table import state_text


class ProgressScreen(ModalScreen[None]):
    BINDINGS = [("escape", "dismiss", "Close"), ("enter", "dismiss", "Close")]

    def __init__(self, title: str, task_ids: list[str], volume: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.title_text, self.task_ids, self.volume = title, task_ids, volume
        self.error = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="progress-title")
            yield Static(id="progress-body")
            yield Label("Esc closes (the action goes on)", id="progress-hint")

    _drawn_once = False

    def on_mount(self) -> None:
        self._drawn_once = True
        self.redraw()

    def fail(self, error: str) -> None:
        self.error = error
        self.redraw()

    def redraw(self) -> None:
        if not self._drawn_once and not self.is_mounted:
            return  # on_mount draws it
        model = self.app.model  # type: ignore[attr-defined]
        table = Table.grid(padding=(0, 2))
        if self.volume:
            vol = model.volumes.get(self.volume)
            table.add_row("volume", self.volume[1], state_text(vol["state"]) if vol else "-", "")
        done = True
        for task in model.task_progress(self.task_ids):
            state = task.get("state", TaskState.QUEUED.value)
            done &= task_final(state)
            reason = task.get("reason") or ""
            fix = task.get("fix")
            table.add_row(
                task.get("node", "?"),
                task.get("kind", ""),
                state_text(state),
                reason + (f" (fix: {fix})" if fix else ""),
            )
        if self.error:
            table.add_row("[bold red]error[/]", "", "", self.error)
        elif done and self.task_ids:
            table.add_row("", "", "[bold]finished[/]", "")
        self.query_one("#progress-body", Static).update(table)
