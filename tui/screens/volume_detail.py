"""One volume: bricks with node/path/port/pid/state, self-heal daemons, options, rebalance status.

"o" sets an option (OptionSetScreen), "O" resets the option selected in the options table after a
confirmation. The options table follows the model, which the ``volume.option`` events update.

The rebalance section (shown once the volume was ever rebalanced) is read through REST when the
screen opens and again after ``volume.rebalance``/``rebalance.state`` events for the volume; a
burst of them while a read is under way costs one more read, not one per event.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from control.client import ApiError
from control.client.format import capacity_free, size
from tui.screens.confirm import ConfirmScreen
from tui.screens.option_set import OptionSetScreen
from tui.widgets.model_table import state_text
from tui.widgets.volumes_table import volume_type


def sent_text(answer: dict[str, Any], verb: str) -> str:
    """What `glusterctl volume set/reset` prints for the server's answer."""
    changed = answer.get("changed") or {}
    if verb == "set":
        text = "\n".join(f"volume set: success: {k} = {v}" for k, v in changed.items())
    else:
        text = f"volume reset: success: {', '.join(changed)}"
    if answer.get("tasks"):
        text += f"\nNew volfiles sent to {len(answer['tasks'])} node(s)."
    return text


def run_time(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def rebalance_line(status: dict[str, Any]) -> str:
    """The overall line of a rebalance status: aggregate state and the sums over the nodes."""
    total = status.get("total") or {}
    return (
        f"Rebalance ({status.get('command') or 'full'}, run {status.get('run')}): [b]{status.get('state')}[/b]  "
        f"migrated {total.get('files', 0)}/{total.get('lookups', 0)} scanned  failures {total.get('failures', 0)}  "
        f"skipped {total.get('skipped', 0)}  {size(total.get('size', 0))}  run time {run_time(total.get('run_time'))}"
    )


class VolumeDetailScreen(Screen[None]):
    BINDINGS = [
        ("escape", "app.pop_screen", "Back"),
        ("s", "app.volume_action('start')", "Start"),
        ("x", "app.volume_action('stop')", "Stop"),
        ("D", "app.volume_action('delete')", "Delete"),
        ("o", "set_option", "Set option"),
        ("O", "reset_option", "Reset option"),
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
            yield Label(id="rebalance-summary", classes="section")
            yield DataTable(id="rebalance", cursor_type="row")
        yield Footer()

    _drawn_once = False
    _rebalance_wanted = False  # a read is due
    _rebalance_reading = False  # the reader worker runs
    rebalance_reads = 0  # how many times the status was read (coalescing shows here)
    rebalance_error = ""

    def on_mount(self) -> None:
        self._drawn_once = True
        self.query_one("#bricks", DataTable).add_columns("#", "NODE", "PATH", "PORT", "PID", "STATE")
        self.query_one("#shds", DataTable).add_columns("NODE", "STATE")
        self.query_one("#options", DataTable).add_columns("OPTION", "VALUE")
        self.query_one("#rebalance", DataTable).add_columns(
            "NODE", "STATE", "MIGRATED", "SCANNED", "FAILURES", "SKIPPED", "SIZE", "RUN TIME", "ERROR"
        )
        self.redraw()
        self.reload_rebalance()

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
            f"bricks {vol.get('bricks_online', 0)}/{vol.get('bricks_total', 0)}  {capacity_free(vol)}"
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
        selected = self.selected_option()
        options.clear()
        names = sorted(vol.get("options") or {})
        for name in names:
            options.add_row(name, str(vol["options"][name]), key=name)
        if selected in names:
            options.move_cursor(row=names.index(selected), animate=False)
        self.redraw_rebalance()

    # ---- rebalance ----------------------------------------------------------------------------
    def redraw_rebalance(self) -> None:
        status = self.app.model.rebalance_status(self.key)  # type: ignore[attr-defined]
        summary = self.query_one("#rebalance-summary", Label)
        table = self.query_one("#rebalance", DataTable)
        summary.display = bool(status or self.rebalance_error)
        table.display = status is not None
        if status is None:
            summary.update(f"Rebalance: {self.rebalance_error}")
            return
        summary.update(rebalance_line(status) + (f"  ({self.rebalance_error})" if self.rebalance_error else ""))
        table.clear()
        for n in status["nodes"]:
            table.add_row(
                n.get("node", ""),
                n.get("state", ""),
                str(n.get("files", 0)),
                str(n.get("lookups", 0)),
                str(n.get("failures", 0)),
                str(n.get("skipped", 0)),
                size(n.get("size", 0)),
                run_time(n.get("run_time")),
                n.get("error") or "",
            )

    def reload_rebalance(self) -> None:
        """Read the rebalance status again; while a read runs, one more follows it (bursts coalesce)."""
        self._rebalance_wanted = True
        if not self._rebalance_reading:
            self._rebalance_reading = True
            self._read_rebalance()

    @work(group="rebalance")
    async def _read_rebalance(self) -> None:
        try:
            while self._rebalance_wanted:
                self._rebalance_wanted = False
                self.rebalance_reads += 1
                try:
                    status = await self.app.api.rebalance(*self.key)  # type: ignore[attr-defined]
                except ApiError as exc:
                    self.rebalance_error = f"cannot read the status: {exc}"
                else:
                    self.rebalance_error = ""
                    self.app.model.set_rebalance(self.key, status)  # type: ignore[attr-defined]
                self.redraw_rebalance()
        finally:
            self._rebalance_reading = False

    # ---- options ------------------------------------------------------------------------------
    def selected_option(self) -> str | None:
        table = self.query_one("#options", DataTable)
        if not table.row_count or not 0 <= table.cursor_row < table.row_count:
            return None
        return str(table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value)

    def action_set_option(self) -> None:
        def done(answer: dict[str, Any] | None) -> None:
            if answer:
                self.notify(sent_text(answer, "set"))

        self.app.push_screen(OptionSetScreen(self.key), done)

    def action_reset_option(self) -> None:
        option = self.selected_option()
        cluster, name = self.key
        if option is None:
            self.notify(f"no option is set on volume {name}", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._reset(option)

        self.app.push_screen(
            ConfirmScreen(f"Reset option {option} of volume {name} (cluster {cluster}) to its default?"), confirmed
        )

    @work(group="option-reset")
    async def _reset(self, option: str) -> None:
        cluster, name = self.key
        path = f"/api/v1/clusters/{cluster}/volumes/{name}/options/{quote(option, safe='')}"
        try:
            answer = await self.app.api.request("DELETE", path)  # type: ignore[attr-defined]
        except ApiError as exc:
            self.notify(f"error: {exc}", severity="error", timeout=15)
            return
        if answer.get("changed"):
            self.notify(sent_text(answer, "reset"))
        else:
            self.notify(f"volume reset: nothing to reset ({option} is not set)")
