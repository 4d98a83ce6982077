"""The dashboard app: views over the domain model, fed by one event-stream worker.

I/O runs in workers and comes back as messages. Events go into a buffer and one coalescing
``EventsPending`` message tells the app to drain it, so a burst of a thousand events costs a
handful of redraws. No view polls the server per row: rows change when events arrive, and a
slow full refresh (``REFRESH_SECONDS``) only catches what events do not carry (last seen, facts).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, Callable
from contextlib import aclosing

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from control.client import ApiError, AsyncClient, Down, Event, Hello, NotLoggedIn, Reset, StreamItem
from tui.messages import EventsPending, LoggedOut, SnapshotLoaded, StreamDown, StreamUp
from tui.model import Changes, Dashboard
from tui.palette import DashboardCommands
from tui.screens.confirm import ConfirmScreen
from tui.screens.not_logged_in import NotLoggedInScreen
from tui.screens.progress import ProgressScreen
from tui.screens.volume_detail import VolumeDetailScreen
from tui.widgets.alerts_table import AlertsTable
from tui.widgets.banner import ConnectionBanner
from tui.widgets.clusters_table import ClustersTable
from tui.widgets.failures_table import FailuresTable
from tui.widgets.model_table import ModelTable
from tui.widgets.nodes_table import NodesTable
from tui.widgets.tasks_table import TasksTable
from tui.widgets.volumes_table import VolumesTable

REFRESH_SECONDS = 30.0  # full reload for what events do not carry (last seen, facts)
CLOCK_SECONDS = 5.0  # redraw "5s ago" columns
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 3.0, 5.0)
LOGIN_CHECK_SECONDS = 1.0
STREAM_HEARTBEAT = 5.0
REPLAY_KEEP = 5000  # recent events kept to re-apply over a snapshot that was read while they arrived

AREA_TABLES = {
    "clusters": ClustersTable,
    "nodes": NodesTable,
    "volumes": VolumesTable,
    "tasks": TasksTable,
    "alerts": AlertsTable,
}
ALERTS_FIRING_CAPTION = "Firing alerts, newest first (a: resolved ones too)"
ALERTS_ALL_CAPTION = "Firing and resolved alerts, newest first (a: firing only)"


class GlusterApp(App[None]):
    CSS_PATH = "app.tcss"
    AUTO_FOCUS = None
    TITLE = "glusterctl"
    COMMANDS = App.COMMANDS | {DashboardCommands}
    BINDINGS = [
        Binding("1", "show_tab('overview')", "Overview"),
        Binding("2", "show_tab('nodes')", "Nodes"),
        Binding("3", "show_tab('volumes')", "Volumes"),
        Binding("4", "show_tab('tasks')", "Tasks"),
        Binding("5", "show_tab('failures')", "Failures"),
        Binding("6", "show_tab('alerts')", "Alerts"),
        Binding("a", "toggle_resolved_alerts", "Resolved too", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("r", "reload", "Refresh"),
        Binding("s", "volume_action('start')", "Start vol", show=False),
        Binding("x", "volume_action('stop')", "Stop vol", show=False),
        Binding("D", "volume_action('delete')", "Delete vol", show=False),
        Binding("R", "remove_selected_node", "Remove node", show=False),
        Binding("T", "rotate_selected_token", "Rotate token", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        url: str,
        token: str | None = None,
        api: AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        login_loader: Callable[[], str | None] | None = None,
        live: bool = True,
    ) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.api = api or AsyncClient(self.url, token or "")
        self.clock = clock
        self.login_loader = login_loader
        self.live = live  # tests of static views turn the stream off
        self.model = Dashboard(clock)
        self._pending: deque[Event] = deque()
        self._recent: deque[Event] = deque(maxlen=REPLAY_KEEP)
        # one stream for the app's life: every reconnect (and a new login) resumes from its last event id
        self.stream: AsyncIterable[StreamItem] | None = None
        self.batches = 0  # how many EventsPending were handled (coalescing shows here)
        self.connected = False
        self._login_timer: Timer | None = None

    # ---- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield ConnectionBanner(self.url, clock=self.clock)
        yield Input(placeholder="filter rows (Escape clears)", id="filter")
        with TabbedContent(initial="nodes"):
            with TabPane("1 Overview", id="overview"):
                yield ClustersTable(id="clusters-table")
            with TabPane("2 Nodes", id="nodes"):
                yield NodesTable(id="nodes-table")
            with TabPane("3 Volumes", id="volumes"):
                yield Static("This server has no volume endpoints yet.", id="volumes-unavailable")
                yield VolumesTable(id="volumes-table")
            with TabPane("4 Tasks", id="tasks"):
                yield TasksTable(id="tasks-table")
            with TabPane("5 Failures", id="failures"):
                yield FailuresTable(id="failures-table")
            with TabPane("6 Alerts", id="alerts"):
                yield Static(ALERTS_FIRING_CAPTION, id="alerts-caption")
                yield AlertsTable(id="alerts-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).disabled = True  # hidden until "/": keys go to the tables
        self.query_one("#volumes-unavailable").display = False
        self.active_table().focus()
        self.set_interval(CLOCK_SECONDS, lambda: self.redraw({"clusters", "nodes", "tasks", "volumes", "alerts"}))
        self.set_interval(REFRESH_SECONDS, self._periodic_reload)
        if not self.live:
            return
        if not self.api.token:
            self.show_logged_out("")
        else:
            self.start_stream()

    # ---- login --------------------------------------------------------------------------------
    def show_logged_out(self, detail: str) -> None:
        self.connected = False
        if not isinstance(self.screen, NotLoggedInScreen):
            self.push_screen(NotLoggedInScreen(self.url, detail))
        if self._login_timer is None:
            self._login_timer = self.set_interval(LOGIN_CHECK_SECONDS, self._check_login)

    def _check_login(self) -> None:
        token = self.login_loader() if self.login_loader else None
        if token and token != self.api.token:
            self.api.token = token
            if self._login_timer is not None:
                self._login_timer.stop()
            self._login_timer = None
            if isinstance(self.screen, NotLoggedInScreen):
                self.pop_screen()
            self.start_stream()

    def on_logged_out(self, message: LoggedOut) -> None:
        self.show_logged_out(message.detail)

    # ---- the event stream worker ----------------------------------------------------------------
    def start_stream(self) -> None:
        self._stream_worker()

    @work(exclusive=True, group="stream")
    async def _stream_worker(self) -> None:
        if self.stream is None:
            self.stream = self.api.events(heartbeat=STREAM_HEARTBEAT, reconnect=RECONNECT_SECONDS)
        attempt = 0
        try:
            while not await self._follow_stream(self.stream):
                await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
                attempt += 1
        except NotLoggedIn as exc:
            self.post_message(LoggedOut(str(exc)))

    async def _follow_stream(self, stream: AsyncIterable[StreamItem]) -> bool:
        """Hand the stream's items to the app; False when the state could not be read (reconnect, try again)."""
        async with aclosing(aiter(stream)) as items:  # type: ignore[type-var]
            async for item in items:
                if isinstance(item, Event):
                    self._pending.append(item)
                    self.post_message(EventsPending())
                elif isinstance(item, Down):
                    self.post_message(StreamDown(f"event stream from {self.url}: {item.error}"))
                elif isinstance(item, Reset) or (isinstance(item, Hello) and not self.model.loaded):
                    # a fresh start or lost events: read the state; a resumed stream replays what it missed
                    try:
                        await self._load_snapshot(frozenset(AREA_TABLES), since=getattr(item, "last_id", None))
                    except NotLoggedIn:
                        raise
                    except ApiError as exc:
                        self.post_message(StreamDown(str(exc)))
                        return False
                if isinstance(item, Hello):
                    self.post_message(StreamUp())
        return True

    async def _load_snapshot(self, areas: frozenset[str], since: int | None) -> None:
        snapshot = await self.api.snapshot()
        if since is not None and self.model.last_event_id is None:
            self.model.last_event_id = since
        self.post_message(SnapshotLoaded(snapshot, areas))

    @work(exclusive=True, group="reload")
    async def _reload(self, areas: frozenset[str]) -> None:
        try:
            await self._load_snapshot(areas, since=None)
        except NotLoggedIn as exc:
            self.post_message(LoggedOut(str(exc)))
        except ApiError:
            pass  # the stream worker reports the outage

    def _periodic_reload(self) -> None:
        if self.connected:
            self._reload(frozenset(AREA_TABLES))
            self._reload_rebalances()

    def _reload_rebalances(self) -> None:
        """Open volume screens read their rebalance status again (its counters change without events)."""
        for screen in self.screen_stack:
            if isinstance(screen, VolumeDetailScreen):
                screen.reload_rebalance()

    # ---- messages ---------------------------------------------------------------------------------
    def on_stream_up(self, _: StreamUp) -> None:
        self.connected = True
        self.query_one(ConnectionBanner).disconnected_since = None

    def on_stream_down(self, message: StreamDown) -> None:
        banner = self.query_one(ConnectionBanner)
        if self.connected or banner.disconnected_since is None:
            banner.disconnected_since = self.clock()
        banner.error = message.error
        self.connected = False

    def on_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        since = self.model.last_event_id
        changes = self.model.load(message.snapshot, message.areas)
        # events that arrived while the snapshot was read are newer than it: apply them again
        for event in list(self._recent):
            changes.merge(self.model.apply(event))
        self.model.last_event_id = since if since is not None else self.model.last_event_id
        self.query_one("#volumes-unavailable").display = not self.model.volumes_supported
        self.query_one("#volumes-table").display = self.model.volumes_supported
        self.redraw(changes.areas | set(message.areas))

    def on_events_pending(self, _: EventsPending) -> None:
        batch, self._pending = self._pending, deque()
        if not batch:
            return
        self.batches += 1
        changes = Changes()
        for event in batch:
            changes.merge(self.model.apply(event))
        self._recent.extend(batch)
        if changes.reload:
            self._reload(frozenset(changes.reload))
        if changes.rebalance:
            for screen in self.screen_stack:
                if isinstance(screen, VolumeDetailScreen) and screen.key in changes.rebalance:
                    screen.redraw_rebalance()  # what the events carry, until the read brings the rest
                    screen.reload_rebalance()
        self.redraw(changes.areas)

    def redraw(self, areas: set[str]) -> None:
        if not areas:
            return
        for area in areas:
            table = AREA_TABLES.get(area)
            if table is not None:
                self.query_one(table).sync(self.model)
        self.query_one(FailuresTable).sync(self.model)
        for screen in self.screen_stack:
            if isinstance(screen, (ProgressScreen, VolumeDetailScreen)):
                screen.redraw()

    # ---- navigation and filtering -----------------------------------------------------------
    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.active_table().focus()

    def active_table(self) -> ModelTable:
        pane = self.query_one(TabbedContent).active_pane
        if pane is None:
            return self.query_one(NodesTable)
        return pane.query_one(ModelTable)

    def action_toggle_resolved_alerts(self) -> None:
        table = self.query_one(AlertsTable)
        table.show_resolved = not table.show_resolved
        caption = ALERTS_ALL_CAPTION if table.show_resolved else ALERTS_FIRING_CAPTION
        self.query_one("#alerts-caption", Static).update(caption)
        table.sync(self.model)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("-visible")
        box.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        for table in self.query(ModelTable):
            table.filter_text = event.value
            table.sync(self.model)

    @on(Input.Submitted, "#filter")
    def filter_done(self, _: Input.Submitted) -> None:
        self.active_table().focus()

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            box.value = ""
            box.remove_class("-visible")
            box.disabled = True
            self.active_table().focus()
            event.stop()

    def action_reload(self) -> None:
        self._reload(frozenset(AREA_TABLES))
        self._reload_rebalances()

    @on(DataTable.RowSelected, "#volumes-table")
    def volume_selected(self, event: DataTable.RowSelected) -> None:
        cluster, _, name = str(event.row_key.value).partition("/")
        self.open_volume((cluster, name))

    def open_volume(self, key: tuple[str, str]) -> None:
        self.push_screen(VolumeDetailScreen(key))

    # ---- actions with confirmation ------------------------------------------------------------
    def _selected(self, table_type: type[ModelTable]) -> tuple[str, str] | None:
        key = self.query_one(table_type).selected_key()
        if not key or "/" not in key:
            return None
        cluster, _, name = key.partition("/")
        return cluster, name

    def action_volume_action(self, op: str) -> None:
        screen = self.screen
        key = screen.key if isinstance(screen, VolumeDetailScreen) else self._selected(VolumesTable)
        if key is None:
            self.notify("select a volume first (tab 3)", severity="warning")
            return
        self.volume_op(op, key)

    def volume_op(self, op: str, key: tuple[str, str]) -> None:
        cluster, name = key

        def confirmed(yes: bool | None) -> None:
            if yes:
                progress = ProgressScreen(f"{op.capitalize()} volume {name} (cluster {cluster})", [], key)
                self.push_screen(progress)
                self._run_volume_op(op, key, progress)

        self.push_screen(ConfirmScreen(f"{op.capitalize()} volume {name} of cluster {cluster}?"), confirmed)

    @work(group="actions")
    async def _run_volume_op(self, op: str, key: tuple[str, str], progress: ProgressScreen) -> None:
        cluster, name = key
        path = f"/api/v1/clusters/{cluster}/volumes/{name}"
        try:
            if op == "delete":
                answer = await self.api.request("DELETE", path)
            else:
                answer = await self.api.request("POST", f"{path}/{op}")
        except ApiError as exc:
            progress.fail(str(exc))
            return
        answer = answer or {}
        if isinstance(answer.get("volume"), dict):
            vol = answer["volume"]
            self.model.volumes[(vol.get("cluster", cluster), vol.get("name", name))] = vol
        progress.task_ids = list(answer.get("tasks") or [])
        self.redraw({"volumes", "clusters"})

    def action_remove_selected_node(self) -> None:
        key = self._selected(NodesTable)
        if key is None:
            self.notify("select a node first (tab 2)", severity="warning")
            return
        self.remove_node(key)

    def remove_node(self, key: tuple[str, str]) -> None:
        cluster, name = key

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_remove_node(key)

        self.push_screen(ConfirmScreen(f"Remove node {name} from cluster {cluster}? (stop its agent first)"), confirmed)

    @work(group="actions")
    async def _run_remove_node(self, key: tuple[str, str]) -> None:
        cluster, name = key
        try:
            await self.api.request("DELETE", f"/api/v1/clusters/{cluster}/nodes/{name}")
        except ApiError as exc:
            self.notify(f"cannot remove node {name}: {exc}", severity="error", timeout=10)
            return
        self.notify(f"node {name} removed from cluster {cluster}")

    def action_rotate_selected_token(self) -> None:
        tab = self.query_one(TabbedContent).active
        cluster = None
        if tab == "overview":
            cluster = self.query_one(ClustersTable).selected_key()
        elif tab == "nodes":
            sel = self._selected(NodesTable)
            cluster = sel[0] if sel else None
        if not cluster:
            self.notify("select a cluster first (tab 1)", severity="warning")
            return
        self.rotate_token(cluster)

    def rotate_token(self, cluster: str) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_rotate(cluster)

        self.push_screen(
            ConfirmScreen(f"Rotate the join token of cluster {cluster}? Agents that connect later need the new token."),
            confirmed,
        )

    @work(group="actions")
    async def _run_rotate(self, cluster: str) -> None:
        try:
            answer = await self.api.request("POST", f"/api/v1/clusters/{cluster}/token/rotate")
        except ApiError as exc:
            self.notify(f"cannot rotate the token of {cluster}: {exc}", severity="error", timeout=10)
            return
        self.notify(f"new join token of cluster {cluster}:\n{answer['token']}", timeout=60)


def main(url: str | None, serve: str | None) -> int:
    """``glusterctl tui [--url URL] [--serve HOST:PORT]``."""
    import shlex
    import sys

    from control.client import resolve_url, saved_token

    url = resolve_url(url)

    def token_for_url() -> str | None:
        return saved_token(url)

    if serve:
        from textual_serve.server import Server

        from broker.url import parse_host_port

        host, port = parse_host_port(serve, 8000, "--serve")
        command = shlex.join([sys.executable, "-m", "control.cli.main", "tui", "--url", url])
        Server(command, host=host, port=port, title="glusterctl").serve()
        return 0
    GlusterApp(url, token_for_url(), login_loader=token_for_url).run()
    return 0
