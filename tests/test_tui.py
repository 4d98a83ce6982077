"""The Textual dashboard through Textual's pilot: a real server with real agents, and text snapshots
of every view from a fixed data set (an app factory with a stand-in API and a frozen clock)."""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.widgets import TabbedContent

from control.client import AsyncClient, Event, Hello, Reset, Snapshot
from tests.helpers import wait_until
from tests.test_events import db_path, insert_events
from tui.app import GlusterApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.not_logged_in import NotLoggedInScreen
from tui.screens.option_set import OptionSetScreen
from tui.screens.progress import ProgressScreen
from tui.screens.volume_detail import VolumeDetailScreen
from tui.widgets.banner import ConnectionBanner

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (132, 20)
BURST = 1000
NOW = 1_700_000_000.0


def screen_text(app: GlusterApp) -> str:
    """The screen as plain text, as a terminal would show it."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def row_states(app: GlusterApp) -> dict[str, str]:
    return {f"{n['cluster']}/{n['name']}": n["state"] for n in app.model.node_rows()}


def table_text(app: GlusterApp, table_id: str) -> str:
    table = app.query_one(f"#{table_id}")
    return "\n".join(" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count))


async def until(pilot, cond: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``cond`` between pilot pauses; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def soon(cond: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``cond`` every 10 ms without waiting for the app to go idle; return the seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def key_latency(app: GlusterApp, key: str, tab: str) -> float:
    """Seconds from a key reaching the app to the tab it selects being shown.

    Unlike ``pilot.press``, this does not wait for the app to go idle: during a burst the app is busy
    until the burst is drained, and what a user feels is how soon the key takes effect."""
    app.post_message(events.Key(key, key))
    return await soon(lambda: app.query_one(TabbedContent).active == tab, 10, f"key {key!r} to show tab {tab!r}")


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())


# ---- against a real server and real agents --------------------------------------------------
def test_nodes_live_kill_restart_and_banner(stack):
    agents = {n: stack.agent(n) for n in ("node1", "node2", "node3")}
    wait_until(lambda: all(stack.node_state(n) == "Online" for n in agents), what="three nodes Online")
    app = GlusterApp(stack.server.url, stack.cli.token)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(
                pilot,
                lambda: row_states(app) == {f"default/{n}": "Online" for n in agents},
                10,
                "three nodes Online in the nodes view",
            )
            text = screen_text(app)
            assert all(f"node{i}" in text for i in (1, 2, 3)) and text.count("Online") == 3, text

            agents["node2"].kill9()
            took = await until(
                pilot, lambda: row_states(app)["default/node2"] == "Unreachable", 10, "node2 Unreachable in the view"
            )
            await pilot.pause(0.1)
            assert "Unreachable" in screen_text(app)
            assert took < 6  # the last-will comes within 1.5 x keepalive; the view follows within a second
            agents["node2"].start()
            await until(pilot, lambda: row_states(app)["default/node2"] == "Online", 15, "node2 Online again")

            # the server goes away: banner; it comes back: banner gone, live again
            stack.server.stop()
            banner = app.query_one(ConnectionBanner)
            await until(pilot, lambda: banner.display and "Disconnected" in str(banner.render()), 10, "the banner")
            stack.server.start()
            await until(pilot, lambda: not banner.display, 20, "reconnect")
            agents["node3"].kill9()
            await until(
                pilot,
                lambda: row_states(app)["default/node3"] == "Unreachable",
                10,
                "node3 Unreachable after the reconnect",
            )

    run(scenario)


def test_alert_fires_and_resolves_live_when_an_agent_stops_and_returns(stack):
    """A stopped agent makes its node Unreachable: the node.unreachable alert appears in the alerts view and the
    overview's critical count from the event stream, and leaves the firing view when the agent is back."""
    agent = stack.agent("n1")
    wait_until(lambda: stack.node_state("n1") == "Online", what="n1 Online")
    app = GlusterApp(stack.server.url, stack.cli.token)

    def alert_rows() -> str:
        return table_text(app, "alerts-table")

    def critical() -> str:
        return str(app.query_one("#clusters-table").get_row("default")[-2])

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected and app.model.loaded, 10, "connected")
            await pilot.press("6")
            assert "node.unreachable" not in alert_rows() and critical() == "0"
            agent.kill9()
            await until(pilot, lambda: "node.unreachable" in alert_rows(), 15, "the node.unreachable alert")
            row = next(r for r in alert_rows().splitlines() if "node.unreachable" in r)
            assert " critical firing node.unreachable n1 node n1 is Unreachable" in row, row
            assert critical() == "1"
            agent.start()
            await until(pilot, lambda: "node.unreachable" not in alert_rows(), 20, "the alert resolved")
            assert critical() == "0"
            await pilot.press("a")
            await until(pilot, lambda: "resolved" in alert_rows(), 5, "the resolved alert with 'a'")
            assert "node.unreachable n1" in alert_rows()

    run(scenario)


def test_burst_of_events_does_not_freeze(stack):
    app = GlusterApp(stack.server.url, stack.cli.token)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected, 10, "connected")
            await pilot.press("4")
            base = app.model.last_event_id or 0
            rows = [
                (
                    "default",
                    "task.state",
                    f"burst{i:04d}",
                    {
                        "node": f"node{i % 50}",
                        "kind": "node.probe",
                        "state": "FAILED" if i % 10 == 0 else "DONE",
                        "reason": "ENOENT: simulated" if i % 10 == 0 else "",
                    },
                )
                for i in range(BURST)
            ]
            start = time.monotonic()
            await asyncio.to_thread(insert_events, db_path(stack), rows)
            # the UI keeps answering keys while the burst is drained
            await soon(lambda: (app.model.last_event_id or 0) > base, 10, "the burst's first events")
            left = base + BURST - (app.model.last_event_id or 0)
            worst = 0.0
            for key, tab in (("5", "failures"), ("4", "tasks")):
                worst = max(worst, await key_latency(app, key, tab))
            drained = await until(
                pilot,
                lambda: (
                    (app.model.last_event_id or 0) >= base + BURST and app.query_one("#tasks-table").row_count >= BURST
                ),
                20,
                "the burst drained",
            )
            elapsed = time.monotonic() - start
            assert elapsed < 15, f"draining {BURST} events took {elapsed:.1f}s"
            assert worst < 2.0, f"a key press took {worst:.2f}s during the burst"
            assert app.batches < BURST / 4, f"{app.batches} redraw batches for {BURST} events: no coalescing"
            await pilot.press("5")
            await pilot.pause(0.2)
            assert "simulated" in screen_text(app)
            print(
                f"burst of {BURST} events drained in {elapsed:.2f}s ({drained:.2f}s after the key presses), "
                f"{app.batches} batches, slowest key {worst * 1000:.0f} ms with {left} events to come"
            )

    run(scenario)


def test_not_logged_in_screen_until_login(stack, tmp_path):
    holder: dict[str, str | None] = {"token": None}
    app = GlusterApp(stack.server.url, None, login_loader=lambda: holder["token"])

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            assert isinstance(app.screen, NotLoggedInScreen)
            assert "glusterctl login --url " + stack.server.url in screen_text(app)
            holder["token"] = stack.cli.token
            await until(
                pilot,
                lambda: not isinstance(app.screen, NotLoggedInScreen) and app.connected,
                10,
                "the dashboard after login",
            )

    run(scenario)


# ---- views from a fixed data set --------------------------------------------------------------
def sample() -> Snapshot:
    node = {
        "agent_version": "0.1.0",
        "glusterfs_version": "10.3",
        "address": "10.0.0.1",
        "hostname": "",
        "facts": {},
        "devices": [
            {"path": "/exports", "device": "", "state": "Ready", "total_bytes": 1024**4, "free_bytes": 512 * 1024**3}
        ],
        "last_seen_at": NOW - 2,
        "state_changed_at": NOW - 3600,
    }
    nodes = [{**node, "cluster": "prod", "name": f"node{i}", "state": "Online"} for i in (1, 2)]
    nodes.append({**node, "cluster": "prod", "name": "node3", "state": "Unreachable", "state_changed_at": NOW - 90})
    bricks = [
        {
            "index": i,
            "node": f"node{i + 1}",
            "path": f"/bricks/b{i}",
            "port": 49152 + i,
            "pid": 1000 + i,
            "state": "Online" if i < 2 else "Offline",
        }
        for i in range(3)
    ]
    volumes = [
        {
            "cluster": "prod",
            "name": "vol1",
            "id": "v1",
            "type": "Replicate",
            "state": "Started",
            "replica": 3,
            "arbiter": 0,
            "disperse": 0,
            "redundancy": 0,
            "size_bytes": 100 * 1024**3,
            "size": 100 * 1024**3,
            "used": 85 * 1024**3,
            "free": 15 * 1024**3,
            "percent": 85.0,
            "health": "Degraded",
            "created_at": NOW - 7200,
            "bricks_online": 2,
            "bricks_total": 3,
            "options": {"performance.cache-size": "64MB"},
            "bricks": bricks,
        },
        {
            "cluster": "prod",
            "name": "vol2",
            "id": "v2",
            "type": "Distribute",
            "state": "Stopped",
            "replica": 0,
            "arbiter": 0,
            "disperse": 0,
            "redundancy": 0,
            "size_bytes": 10 * 1024**3,
            "created_at": NOW - 3600,
            "bricks_online": 0,
            "bricks_total": 0,
            "options": {},
            "bricks": [],
        },
    ]
    task = {"cluster": "prod", "kind": "node.probe", "params": {}, "result": None, "created_at": NOW - 60}
    tasks = [
        {
            **task,
            "id": "a" * 32,
            "node": "node1",
            "state": "DONE",
            "reason": "",
            "updated_at": NOW - 50,
            "finished_at": NOW - 50,
        },
        {
            **task,
            "id": "b" * 32,
            "node": "node2",
            "state": "FAILED",
            "updated_at": NOW - 40,
            "finished_at": NOW - 40,
            "reason": "ENOENT: directory /data does not exist on node node2",
            "fix": "Log in to node node2 and create the parent directory (/), or choose a brick path whose parent exists.",
        },
    ]
    clusters = [{"name": "prod", "created_at": NOW - 86400, "nodes": 3, "nodes_online": 2}]
    alert = {"cluster": "prod", "state": "firing", "until": None}
    alerts = [
        {
            **alert,
            "id": 4,
            "kind": "volume.capacity-warning",
            "subject": "vol1",
            "severity": "warning",
            "summary": "volume vol1 is 85.0% full (at least 80%)",
            "since": NOW - 30,
        },
        {
            **alert,
            "id": 3,
            "kind": "node.unreachable",
            "subject": "node3",
            "severity": "critical",
            "summary": "node node3 is Unreachable",
            "since": NOW - 90,
        },
        {
            **alert,
            "id": 2,
            "kind": "volume.degraded",
            "subject": "vol1",
            "severity": "warning",
            "summary": "volume vol1 is Degraded: bricks are down, every subvolume still serves",
            "since": NOW - 95,
        },
        {
            **alert,
            "id": 1,
            "kind": "brick.offline",
            "subject": "vol1:node1:/bricks/b0",
            "severity": "critical",
            "summary": "brick node1:/bricks/b0 of volume vol1 is Offline",
            "state": "resolved",
            "since": NOW - 600,
            "until": NOW - 500,
        },
    ]
    return Snapshot(clusters=clusters, nodes=nodes, tasks=tasks, volumes=volumes, alerts=alerts)


REBALANCE_COUNTERS = ("files", "size", "lookups", "failures", "skipped")


def rebalance_sample(run: str | None, nodes: list[dict[str, Any]], state: str = "not started") -> dict[str, Any]:
    """GET .../rebalance's answer: per node rows and their sums, as control.services.rebalance.status makes it."""
    return {
        "volume": "vol1",
        "run": run,
        "command": "full" if run else None,
        "state": state,
        "nodes": nodes,
        "total": {
            **{k: sum(n[k] for n in nodes) for k in REBALANCE_COUNTERS},
            "run_time": max((n["run_time"] for n in nodes), default=0.0),
        },
    }


def rebalance_node(node: str, state: str, files: int, lookups: int, failures: int, run_time: float) -> dict[str, Any]:
    return {
        "node": node,
        "state": state,
        "files": files,
        "size": files * 1024**2,
        "lookups": lookups,
        "failures": failures,
        "skipped": 0,
        "run_time": run_time,
        "error": "",
        "updated_at": NOW,
    }


class StandInApi(AsyncClient):
    """Answers from ``sample()`` and records requests; stream items come from ``feed``. Not a server."""

    def __init__(self) -> None:
        super().__init__("http://stand-in.invalid", "token")
        self.requests: list[tuple[str, str]] = []
        self.snapshots = 0
        self.feed: asyncio.Queue = asyncio.Queue()
        self.rebalance_status: dict[str, Any] = rebalance_sample(run=None, nodes=[])
        self.read_delay = 0.0

    async def request(self, method: str, path: str, body: Any = None, params: dict | None = None, raw=False) -> Any:
        self.requests.append((method, path))
        if method == "GET" and path.endswith("/rebalance"):
            await asyncio.sleep(self.read_delay)
            return copy.deepcopy(self.rebalance_status)
        if path.endswith("/start"):
            vol = {**sample().volumes[1], "state": "Starting"}
            return {"volume": vol, "tasks": ["c" * 32]}
        return None

    async def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return sample()

    def events(self, **_):
        async def items():
            yield Hello(last_id=100, oldest_id=1)
            while True:
                item = await self.feed.get()
                yield Event.from_dict(item) if isinstance(item, dict) else item

        return items()


def stand_in_app() -> tuple[GlusterApp, StandInApi]:
    api = StandInApi()
    return GlusterApp(api.url, api=api, clock=lambda: NOW), api


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("GLUSTERCTL_UPDATE_SNAPSHOTS") or not path.exists():
        if os.environ.get("CI") and not path.exists():
            pytest.fail(f"snapshot {path} is missing (make it with GLUSTERCTL_UPDATE_SNAPSHOTS=1)")
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), (
        f"{name} view differs from {path} (GLUSTERCTL_UPDATE_SNAPSHOTS=1 rewrites it)"
    )


def test_view_snapshots():
    app, _ = stand_in_app()

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected and app.model.loaded, 5, "the sample loaded")
            views = (("1", "overview"), ("2", "nodes"), ("3", "volumes"), ("4", "tasks"), ("5", "failures"))
            for key, name in (*views, ("6", "alerts")):
                await pilot.press(key)
                await pilot.pause(0.1)
                assert app.query_one(TabbedContent).active == name
                check_snapshot(f"tui_{name}", screen_text(app))
            await pilot.press("a")  # resolved alerts too
            await pilot.pause(0.1)
            check_snapshot("tui_alerts_all", screen_text(app))
            await pilot.press("a")
            await pilot.press("3", "enter")
            await pilot.pause(0.2)
            assert isinstance(app.screen, VolumeDetailScreen)
            check_snapshot("tui_volume_detail", screen_text(app))

    run(scenario)


def test_filter_sort_palette_and_volume_start_with_the_keyboard():
    app, api = stand_in_app()

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.loaded, 5, "the sample loaded")
            # filter
            await pilot.press("2", "slash", *"node3", "enter")
            await pilot.pause(0.1)
            assert table_text(app, "nodes-table").count("node") == 1 and "node3" in table_text(app, "nodes-table")
            await pilot.press("slash", "escape")
            await pilot.pause(0.1)
            assert app.query_one("#nodes-table").row_count == 3
            # command palette: jump to the failure report
            await pilot.press("ctrl+p", *"failure report")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: app.query_one(TabbedContent).active == "failures", 5, "the palette command")
            # start vol2 (second row) with confirmation; progress follows its task from events
            await pilot.press("3", "down", "s")
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen) and "Start volume vol2" in screen_text(app)
            await pilot.press("y")
            await until(pilot, lambda: isinstance(app.screen, ProgressScreen) and app.screen.task_ids, 5, "progress")
            assert api.requests[-1] == ("POST", "/api/v1/clusters/prod/volumes/vol2/start")
            await api.feed.put(
                {
                    "id": 101,
                    "at": NOW,
                    "cluster": "prod",
                    "kind": "task.state",
                    "subject": "c" * 32,
                    "data": {"node": "node1", "kind": "volume.start", "state": "RUNNING", "reason": ""},
                }
            )
            await until(pilot, lambda: "RUNNING" in screen_text(app), 5, "the task RUNNING")
            await api.feed.put(
                {
                    "id": 102,
                    "at": NOW,
                    "cluster": "prod",
                    "kind": "task.state",
                    "subject": "c" * 32,
                    "data": {"node": "node1", "kind": "volume.start", "state": "DONE", "reason": ""},
                }
            )
            await api.feed.put(
                {
                    "id": 103,
                    "at": NOW,
                    "cluster": "prod",
                    "kind": "volume.state",
                    "subject": "vol2",
                    "data": {"state": "Started"},
                }
            )
            await until(pilot, lambda: "finished" in screen_text(app), 5, "the action finished")
            assert "Started" in screen_text(app)
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert (
                "vol2" in table_text(app, "volumes-table") and app.model.volumes[("prod", "vol2")]["state"] == "Started"
            )
            # stop asks first; "n" cancels without a request
            count = len(api.requests)
            await pilot.press("x", "n")
            await pilot.pause(0.1)
            assert len(api.requests) == count and not isinstance(app.screen, ConfirmScreen)

    run(scenario)


def test_stop_and_start_a_real_volume_with_the_keyboard(stack):
    stack.agent("n1")
    (stack.tmp / "bricks").mkdir()
    wait_until(lambda: stack.node_state("n1") == "Online", what="n1 Online")
    stack.cli.run("volume", "create", "tv1", f"n1:{stack.tmp / 'bricks' / 'tv1'}", "--wait", timeout=120)
    app = GlusterApp(stack.server.url, stack.cli.token)

    def state() -> str | None:
        vol = app.model.volumes.get(("default", "tv1"))
        return vol and vol["state"]

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: state() == "Started", 15, "tv1 Started in the model")
            await pilot.press("3")
            await until(pilot, lambda: "tv1" in table_text(app, "volumes-table"), 5, "tv1 in the volumes view")
            for key, final in (("x", "Stopped"), ("s", "Started")):
                await pilot.press(key)
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the confirmation")
                await pilot.press("y")
                await until(pilot, lambda: isinstance(app.screen, ProgressScreen), 5, "the progress screen")
                await until(pilot, lambda: state() == final and "finished" in screen_text(app), 60, f"tv1 {final}")
                assert final in screen_text(app)
                await pilot.press("escape")
                await pilot.pause(0.2)
                assert final in table_text(app, "volumes-table")
        assert stack.cli.json("volume", "status", "tv1")["state"] == "Started"

    run(scenario)


def test_set_and_reset_an_option_on_the_volume_screen(stack):
    """ "o" sets an option (a refusal shows the server's message as the CLI shows it), "O" resets the selected
    one; the options table follows the volume.option events from the stream."""
    stack.agent("n1")
    (stack.tmp / "bricks").mkdir()
    wait_until(lambda: stack.node_state("n1") == "Online", what="n1 Online")
    stack.cli.run("volume", "create", "to1", f"n1:{stack.tmp / 'bricks' / 'to1'}", "--no-start", "--wait", timeout=120)
    app = GlusterApp(stack.server.url, stack.cli.token)

    def options_rows() -> str:
        if not isinstance(app.screen, VolumeDetailScreen):
            return ""
        table = app.screen.query_one("#options")
        return "\n".join(" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count))

    async def set_option(pilot, key: str, value: str) -> OptionSetScreen:
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, OptionSetScreen), 5, "the option screen")
        screen = app.screen
        await pilot.press(*key, "enter", *value, "enter")
        return screen

    async def scenario() -> None:
        async with app.run_test(size=(132, 40)) as pilot:
            await until(pilot, lambda: ("default", "to1") in app.model.volumes, 15, "to1 in the model")
            await pilot.press("3")
            await until(pilot, lambda: "to1" in table_text(app, "volumes-table"), 5, "to1 in the volumes view")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, VolumeDetailScreen), 5, "the volume screen")
            assert options_rows() == ""

            # refused: the message is the CLI's, the screen stays open to correct it
            screen = await set_option(pilot, "write-behnd", "off")
            await until(pilot, lambda: screen.error, 10, "the refusal")
            cli = stack.cli.run("volume", "set", "to1", "write-behnd", "off", check=False).stderr.strip()
            assert screen.error == cli and "did you mean write-behind" in cli, (screen.error, cli)
            assert isinstance(app.screen, OptionSetScreen)
            await pilot.press("escape")
            screen = await set_option(pilot, "ping-timeout", "5000")
            await until(pilot, lambda: "[0 - 1013]" in screen.error, 10, "the range in the refusal")
            await pilot.press("escape")

            # accepted: the short key is stored under its full name; the row comes from the event
            await set_option(pilot, "write-behind", "off")
            await until(pilot, lambda: isinstance(app.screen, VolumeDetailScreen), 10, "the option screen closed")
            await until(pilot, lambda: options_rows() == "performance.write-behind off", 10, "the option row")
            # set by someone else (the CLI): the event brings it too
            stack.cli.run("volume", "set", "to1", "network.ping-timeout", "20")
            await until(
                pilot,
                lambda: options_rows() == "network.ping-timeout 20\nperformance.write-behind off",
                10,
                "the CLI's option in the table",
            )

            # reset the selected row (the second) after a confirmation
            app.screen.query_one("#options").move_cursor(row=1)
            await pilot.press("O")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the confirmation")
            assert "Reset option performance.write-behind of volume to1" in screen_text(app)
            await pilot.press("y")
            await until(pilot, lambda: options_rows() == "network.ping-timeout 20", 10, "the row gone after reset")
        assert stack.cli.json("volume", "info", "to1")["options"] == {"network.ping-timeout": "20"}

    run(scenario)


def test_volume_screen_shows_rebalance_and_rereads_it_on_events():
    """The volume screen reads the rebalance status when it opens (per node rows and the overall line), and
    again after rebalance.state/volume.rebalance events for its volume; a burst costs a couple of reads."""
    app, api = stand_in_app()
    path = "/api/v1/clusters/prod/volumes/vol1/rebalance"
    api.rebalance_status = rebalance_sample(
        "r1",
        [
            rebalance_node("node1", "in progress", 120, 300, 0, 65),
            rebalance_node("node2", "completed", 80, 250, 2, 42),
        ],
        state="in progress",
    )

    def reads() -> int:
        return api.requests.count(("GET", path))

    def rebalance_rows() -> str:
        if not isinstance(app.screen, VolumeDetailScreen):
            return ""
        table = app.screen.query_one("#rebalance")
        return "\n".join(" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count))

    def event(event_id: int, kind: str, subject: str, **data: Any) -> dict[str, Any]:
        return {"id": event_id, "at": NOW, "cluster": "prod", "kind": kind, "subject": subject, "data": data}

    async def scenario() -> None:
        async with app.run_test(size=(132, 30)) as pilot:
            await until(pilot, lambda: app.model.loaded, 5, "the sample loaded")
            await pilot.press("3", "enter")
            await until(pilot, lambda: "node1" in rebalance_rows(), 5, "the rebalance rows")
            assert reads() == 1
            assert rebalance_rows().splitlines() == [
                "node1 in progress 120 300 0 0 120.0 MiB 0:01:05 ",
                "node2 completed 80 250 2 0 80.0 MiB 0:00:42 ",
            ]
            text = screen_text(app)
            assert "Rebalance (full, run r1): in progress  migrated 200/550 scanned  failures 2" in text, text
            check_snapshot("tui_volume_rebalance", text)

            # node1 completes: the event's figures at once, then the read brings the rest
            api.rebalance_status = rebalance_sample(
                "r1",
                [
                    rebalance_node("node1", "completed", 150, 310, 1, 90),
                    rebalance_node("node2", "completed", 80, 250, 2, 42),
                ],
                state="completed",
            )
            await api.feed.put(event(101, "rebalance.state", "vol1@node1", run="r1", state="completed", files=150))
            await until(pilot, lambda: "node1 completed 150 310 1" in rebalance_rows(), 5, "node1 completed")
            assert reads() == 2
            assert "Rebalance (full, run r1): completed  migrated 230/560 scanned  failures 3" in screen_text(app)

            # another volume's events read nothing
            await api.feed.put(event(102, "volume.rebalance", "vol2", op="start", run="r2", command="full"))
            await api.feed.put(event(103, "rebalance.state", "vol2@node1", run="r2", state="in progress"))
            await until(pilot, lambda: (app.model.last_event_id or 0) >= 103, 5, "the vol2 events")
            await pilot.pause(0.2)
            assert reads() == 2

            # a burst for this volume while reads are slow: a new run, read a few times, not once per event
            api.read_delay = 0.5
            api.rebalance_status = rebalance_sample(
                "r3", [rebalance_node("node1", "stopped", 5, 9, 0, 3)], state="stopped"
            )
            await api.feed.put(event(104, "volume.rebalance", "vol1", op="start", run="r3", command="full"))
            for i in range(15):  # spread over several batches, each arriving while a read is under way
                await api.feed.put(event(105 + i, "rebalance.state", "vol1@node1", run="r3", state="in progress"))
                await pilot.pause(0.03)
            await until(pilot, lambda: (app.model.last_event_id or 0) >= 119, 5, "the burst")
            await until(pilot, lambda: rebalance_rows() == "node1 stopped 5 9 0 0 5.0 MiB 0:00:03 ", 5, "run r3")
            await pilot.pause(0.6)
            burst_reads = reads() - 2
            assert app.batches > 5 and 1 <= burst_reads <= 6, f"{burst_reads} reads for {app.batches} batches of events"
            assert "Rebalance (full, run r3): stopped" in screen_text(app)

    run(scenario)


def alert_event(event_id: int, kind: str, alert_id: int, **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "at": NOW,
        "cluster": "prod",
        "kind": kind,
        "subject": "vol1:node2:/bricks/b1",
        "data": {
            "id": alert_id,
            "kind": "brick.offline",
            "severity": "critical",
            "summary": "brick node2:/bricks/b1 of volume vol1 is Offline",
            "since": NOW - 5,
            "until": NOW if kind == "alert.resolved" else None,
            **data,
        },
    }


def test_alert_events_update_the_alerts_view_and_the_overview_counts():
    app, api = stand_in_app()

    def overview_alerts() -> tuple[str, str]:
        row = app.query_one("#clusters-table").get_row("prod")
        return str(row[-2]), str(row[-1])

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.loaded, 5, "the sample loaded")
            assert overview_alerts() == ("1", "2")
            await pilot.press("6")
            await api.feed.put(alert_event(101, "alert.firing", 5))
            await until(pilot, lambda: "node2:/bricks/b1" in table_text(app, "alerts-table"), 5, "the firing alert")
            assert overview_alerts() == ("2", "2")
            assert table_text(app, "alerts-table").splitlines()[0].startswith("5s ago prod critical firing")
            await api.feed.put(alert_event(102, "alert.resolved", 5))
            await until(pilot, lambda: "node2:/bricks/b1" not in table_text(app, "alerts-table"), 5, "resolved")
            assert overview_alerts() == ("1", "2")
            await pilot.press("a")
            await pilot.pause(0.1)
            rows = table_text(app, "alerts-table")
            assert "resolved 0s ago" in rows and "node2:/bricks/b1" in rows and "node1:/bricks/b0" in rows, rows

    run(scenario)


def test_reset_reloads_the_state():
    app, api = stand_in_app()

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.loaded and api.snapshots == 1, 5, "the sample loaded")
            await api.feed.put(
                {"id": 101, "at": NOW, "cluster": "prod", "kind": "node.removed", "subject": "node1", "data": {}}
            )
            await until(pilot, lambda: ("prod", "node1") not in app.model.nodes, 5, "node1 removed by an event")
            await api.feed.put(Reset(after=101, oldest_id=500))  # the server lost events: reload everything
            await until(pilot, lambda: api.snapshots == 2, 5, "a reload after the reset")
            assert api.snapshots == 2

    run(scenario)


class CountingClient(AsyncClient):
    """The real client, counting snapshot reads."""

    snapshots = 0

    async def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return await super().snapshot()


def test_resumes_from_the_last_event_id_after_a_reconnect(stack):
    """Events written while the server was down reach the dashboard after it reconnects, without a reload."""
    api = CountingClient(stack.server.url, stack.cli.token)
    app = GlusterApp(stack.server.url, api=api)

    def task_rows(prefix: str) -> list[str]:
        return sorted(t for t in app.model.tasks if t.startswith(prefix))

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected and app.model.loaded, 10, "connected")
            await asyncio.to_thread(
                insert_events, db_path(stack), [("default", "task.state", "live0", {"state": "DONE"})]
            )
            await until(pilot, lambda: task_rows("live") == ["live0"], 10, "a live event")
            await asyncio.to_thread(stack.server.stop)
            await until(pilot, lambda: not app.connected, 10, "the stream down")
            rows = [("default", "task.state", f"gap{i}", {"state": "FAILED", "reason": "r"}) for i in range(3)]
            await asyncio.to_thread(insert_events, db_path(stack), rows)
            await asyncio.to_thread(stack.server.start)
            await until(pilot, lambda: task_rows("gap") == ["gap0", "gap1", "gap2"], 20, "the missed events")
            assert app.connected and api.snapshots == 1  # replayed by the server, not reloaded
            assert app.stream is not None and app.stream.last_id == app.model.last_event_id

    run(scenario)
