"""A DataTable that mirrors rows of the domain model: it updates what changed instead of building again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from broker.messages import BrickState, Health, NodeState, TaskState, VolumeState
from control.client.states import volume_failed
from tui.model import Dashboard

# Removing a row renumbers every row below it; past this many removals, building the table again is cheaper.
REBUILD_AFTER_REMOVING = 32

STATE_STYLES: dict[str, str] = {
    NodeState.ONLINE: "green",
    NodeState.UNREACHABLE: "bold red",
    BrickState.OFFLINE: "red",  # a brick or self-heal daemon
    TaskState.DONE: "green",
    TaskState.FAILED: "bold red",
    TaskState.QUEUED: "yellow",
    TaskState.RUNNING: "cyan",
    VolumeState.STARTED: "green",
    VolumeState.CREATED: "cyan",
    VolumeState.STOPPED: "yellow",
    Health.HEALTHY: "green",  # volume health
    Health.DEGRADED: "yellow",
    Health.DOWN: "bold red",
}


def plain(cells: Iterable[Any]) -> tuple[str, ...]:
    """A row as the text it shows: rows that show the same text may change places unseen."""
    return tuple(str(c) for c in cells)


def state_text(state: str) -> Text:
    style = STATE_STYLES.get(state) or ("bold red" if volume_failed(state) else "cyan" if state.endswith("ing") else "")
    return Text(state, style=style)


class ModelTable(DataTable[Any]):
    """Subclasses give ``COLUMNS`` (key, label) and ``model_rows(model)`` -> [(row key, {column key: cell})]."""

    COLUMNS: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.filter_text = ""
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._sort: tuple[str, bool] | None = None

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        raise NotImplementedError

    def selected_key(self) -> str | None:
        if not self._keys or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except Exception:  # the table is being rebuilt
            return None

    def _matches(self, cells: tuple[Any, ...]) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.lower()
        return any(needle in str(c).lower() for c in cells)

    def sync(self, model: Dashboard) -> None:
        """Bring the table in line with the model: cells that changed are updated, rows that came are
        added and rows that went are removed; the table is built again only when many rows went."""
        wanted: list[tuple[str, tuple[Any, ...]]] = []
        for key, row in self.model_rows(model):
            cells = tuple(row.get(col, "") for col, _ in self.COLUMNS)
            if self._matches(cells):
                wanted.append((key, cells))
        if self._sort is not None:
            index = [c for c, _ in self.COLUMNS].index(self._sort[0])
            wanted.sort(key=lambda kc: str(kc[1][index]), reverse=self._sort[1])
        keys = [k for k, _ in wanted]
        if keys == self._keys:
            self._update_cells(wanted)
            return
        selected = self.selected_key()
        gone = set(self._keys).difference(keys)
        if not self._keys or len(gone) > REBUILD_AFTER_REMOVING:
            self.clear()
            self._keys, self._cells, gone = [], {}, set()
        for key in gone:
            self.remove_row(key)
            del self._cells[key]
        self._update_cells([(key, cells) for key, cells in wanted if key in self._cells])
        for key, cells in wanted:
            if key not in self._cells:
                self.add_row(*cells, key=key)
                self._cells[key] = cells
        if [key for key in self._keys if key not in gone] + [key for key in keys if key not in self._keys] != keys:
            # new rows went to the bottom: put every row in its place
            place = {plain(cells): i for i, (_, cells) in enumerate(wanted)}
            self.sort(key=lambda cells: place.get(plain(cells), len(place)))
        self._keys = keys
        if selected in self._cells:
            self.move_cursor(row=keys.index(selected), animate=False)

    def _update_cells(self, wanted: list[tuple[str, tuple[Any, ...]]]) -> None:
        for key, cells in wanted:
            old = self._cells[key]
            if old == cells:
                continue
            for (col, _), value, before in zip(self.COLUMNS, cells, old):
                if value != before:
                    self.update_cell(key, col, value, update_width=self._widens(col, value))
            self._cells[key] = cells

    def _widens(self, col: str, value: Any) -> bool:
        """Whether ``value`` needs its column wider. Columns never narrow on a cell update: DataTable
        narrows by measuring every cell of the column, for each narrower cell, and a clock tick over a
        thousand task rows would measure a million cells. A column narrows when the rows are rebuilt."""
        return cell_len(str(value)) > self.columns[ColumnKey(col)].content_width

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        col = str(event.column_key.value)
        reverse = bool(self._sort and self._sort[0] == col and not self._sort[1])
        self._sort = (col, reverse)
        self._keys = []  # force a rebuild in the new order
        self.sync(self.app.model)  # type: ignore[attr-defined]
