"""ModelTable.sync in a small Textual app: rows come, go, change and move, and the table shows the
model's order each time, keeps the selected row, and builds itself again only when many rows went."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import App, ComposeResult

from tui.widgets import model_table
from tui.widgets.model_table import ModelTable


class Rows(ModelTable):
    COLUMNS = [("name", "NAME"), ("state", "STATE")]

    def model_rows(self, model: Any) -> list[tuple[str, dict[str, Any]]]:
        return [(name, {"name": name, "state": state}) for name, state in model]


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Rows()


def shown(table: Rows) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in (table.get_row_at(i) for i in range(table.row_count))]


def test_sync_adds_removes_updates_and_orders_rows_in_place():
    app = TableApp()

    async def scenario() -> None:
        async with app.run_test() as pilot:
            table = app.query_one(Rows)
            clears = 0
            real_clear = table.clear

            def counting_clear(*a: Any, **kw: Any) -> Any:
                nonlocal clears
                clears += 1
                return real_clear(*a, **kw)

            table.clear = counting_clear  # type: ignore[method-assign]

            model = [(f"t{i:03d}", "QUEUED") for i in range(100)]
            table.sync(model)
            assert shown(table) == model and clears == 1  # the first fill

            table.move_cursor(row=10)
            assert table.selected_key() == "t010"

            # new rows on top (newest first), one changed, one gone: no rebuild, the model's order
            model = [("n2", "QUEUED"), ("n1", "QUEUED"), ("n0", "QUEUED")]
            model += [(f"t{i:03d}", "DONE" if i == 50 else "QUEUED") for i in range(1, 100)]
            table.sync(model)
            await pilot.pause()
            assert shown(table) == model and clears == 1
            assert table.selected_key() == "t010" and table.cursor_row == 12  # the cursor followed its row

            # a row moves (sorted by time, it was updated): no rebuild either
            model = [model[-1], *model[:-1]]
            table.sync(model)
            assert shown(table) == model and clears == 1

            # a header click sorts by that column, in place of the model's order
            app.model = model  # type: ignore[attr-defined]  # what a header click reads
            await pilot.click(Rows, offset=(8, 0))  # NAME is 4 wide, plus a cell's padding on each side
            await pilot.pause()
            assert [s for _, s in shown(table)] == sorted(s for _, s in model)

            # more rows gone than REBUILD_AFTER_REMOVING: built again
            table._sort = None
            before = clears
            model = model[: len(model) - model_table.REBUILD_AFTER_REMOVING - 1]
            table.sync(model)
            assert shown(table) == model and clears == before + 1

    asyncio.run(scenario())
