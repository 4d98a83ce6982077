"""Command palette entries (ctrl+p): views, refresh, and every action on every object."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.model import Dashboard


class DashboardActions(Protocol):
    """What the palette needs of the app: its model and the actions it offers."""

    model: Dashboard

    def action_show_tab(self, tab: str) -> Any: ...
    def action_reload(self) -> Any: ...
    def rotate_token(self, cluster: str) -> Any: ...
    def remove_node(self, key: tuple[str, str]) -> Any: ...
    def open_volume(self, key: tuple[str, str]) -> Any: ...
    def volume_op(self, op: str, key: tuple[str, str]) -> Any: ...


class DashboardCommands(Provider):
    def _commands(self) -> Iterator[tuple[str, Callable[[], Any], str]]:
        app = cast(DashboardActions, self.app)
        model = app.model
        for tab, label in (
            ("overview", "Clusters overview"),
            ("nodes", "Nodes"),
            ("volumes", "Volumes"),
            ("tasks", "Tasks"),
            ("failures", "Failure report"),
            ("alerts", "Alerts"),
        ):
            yield f"Show {label}", partial(app.action_show_tab, tab), f"switch to the {label.lower()} view"
        yield "Refresh", app.action_reload, "reload everything from the server"
        for cluster in sorted(model.clusters):
            yield (
                f"Rotate join token of cluster {cluster}",
                partial(app.rotate_token, cluster),
                "new agent connections need the new token",
            )
        for cluster, name in sorted(model.nodes):
            yield f"Remove node {name} ({cluster})", partial(app.remove_node, (cluster, name)), "forget the node"
        for cluster, name in sorted(model.volumes):
            key = (cluster, name)
            yield f"Open volume {name} ({cluster})", partial(app.open_volume, key), "bricks, self-heal daemons, options"
            for op in ("start", "stop", "delete"):
                yield (
                    f"{op.capitalize()} volume {name} ({cluster})",
                    partial(app.volume_op, op, key),
                    f"{op} the volume",
                )

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            if name.startswith(("Show", "Refresh")):
                yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
