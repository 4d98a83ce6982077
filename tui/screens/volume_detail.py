"""One volume: bricks with node/path/port/pid/state, self-heal daemons, options."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from control.client.format import capacity
from tui.widgets.model_table import state_text
from tui.widgets.volumes_table import volume_type


class VolumeDetailScreen(Screen[None]):
    BINDINGS = [
        ("escape", "app.pop_screen", "Back"),
        ("s", "app.volume_action('start')", "Start"),
        ("x", "app.volume_action('stop')", "Stop"),
        ("D", "app.volume_action('delete')", "Delete"),
    ]

    def __init__(self, key: tuple[str, str]) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Label(id="volume-summary")
            yield Label("Bricks", classes="section")
            yield DataTable(id="bricks", cursor_type="row")
            yield Label("Self-heal daemons", classes="section")
            yield DataTable(id="shds", cursor_type="row")
            yield Label("Options", classes="section")
            yield DataTable(id="options", cursor_type="row")
        yield Footer()

    _drawn_once = False

    def on_mount(self) -> None:
        self._drawn_once = True
        self.query_one("#bricks", DataTable).add_columns("#", "NODE", "PATH", "PORT", "PID", "STATE")
        self.query_one("#shds", DataTable).add_columns("NODE", "STATE")
        self.query_one("#options", DataTable).add_columns("OPTION", "VALUE")
        self.redraw()

    def redraw(self) -> None:
        if not self._drawn_once and not self.is_mounted:
            return  # on_mount draws it
        vol = self.app.model.volumes.get(self.key)  # type: ignore[attr-defined]
        summary = self.query_one("#volume-summary", Label)
        if vol is None:
            summary.update(f"Volume {self.key[1]} of cluster {self.key[0]} is gone")
            return
        summary.update(
            f"Volume [b]{vol['name']}[/b]  cluster {vol['cluster']}  type {volume_type(vol)}  "
            f"state {vol['state']}  health {vol.get('health') or '-'}  "
            f"bricks {vol.get('bricks_online', 0)}/{vol.get('bricks_total', 0)}  {capacity(vol)}"
        )
        bricks = self.query_one("#bricks", DataTable)
        bricks.clear()
        for b in vol.get("bricks") or []:
            bricks.add_row(
                str(b.get("index", "")),
                b.get("node", ""),
                b.get("path", ""),
                str(b.get("port") or "-"),
                str(b.get("pid") or "-"),
                state_text(b.get("state") or "-"),
            )
        shds = self.query_one("#shds", DataTable)
        shds.clear()
        for s in vol.get("shds") or vol.get("self_heal_daemons") or []:
            shds.add_row(s.get("node", ""), state_text(s.get("state") or "-"))
        options = self.query_one("#options", DataTable)
        options.clear()
        for name, value in sorted((vol.get("options") or {}).items()):
            options.add_row(name, str(value))
