"""control.client: the SSE parser, error mapping, and event-stream resume against a real server."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time

import pytest

from broker.messages import FINAL_TASK_STATES, STABLE_VOLUME_STATES, TASK_TRANSITIONS, TaskState, VolumeState
from control.client import (
    ApiError,
    AsyncClient,
    Client,
    Down,
    Event,
    Hello,
    NotLoggedIn,
    Reset,
    SseDecoder,
    SseMessage,
    StreamItem,
    aparse_sse,
    parse_sse,
)
from control.client.base import StreamState
from control.client.states import (
    VOLUME_FAILED_STATES,
    task_done,
    task_failed,
    task_final,
    volume_failed,
    volume_final,
)
from tests.helpers import free_port
from tests.test_events import db_path, insert_events, stored_ids

ITEM_TIMEOUT = 15.0


# ---- the parser --------------------------------------------------------------------------------
def test_parse_sse_ids_multiline_data_and_comments():
    lines = [
        "event: hello",
        'data: {"a": 1}',
        "",
        ": keepalive",
        "",
        "id: 7",
        "data: x",
        "data:  y",  # one leading space is the separator, the second is data
        "data",  # a field name alone: an empty data line
        "",
        "id: 9",
        ": keepalive",
        "",
        "data:no-space",
        "",
    ]
    assert list(parse_sse(lines)) == [
        SseMessage("hello", '{"a": 1}', None),
        SseMessage("message", "x\n y\n", "7"),
        SseMessage("", "", "9"),  # an id-only block: the cursor moved past filtered events
        SseMessage("message", "no-space", None),
    ]


def test_decoder_keeps_last_id_and_retry_and_ignores_bad_fields():
    decoder = SseDecoder()
    out = [decoder.feed(line) for line in ("retry: 2500", "id: 3", "foo: bar", "data: a", "")]
    assert out[:-1] == [None] * 4 and out[-1] == SseMessage("message", "a", "3")
    assert decoder.retry == 2.5 and decoder.last_id == "3"
    for line in ("retry: soon", "id: 4\0", "data: b", ""):
        message = decoder.feed(line)
    assert message == SseMessage("message", "b", None)
    assert decoder.retry == 2.5 and decoder.last_id == "3"  # an id with NUL and a bad retry are ignored
    assert decoder.feed("") is None  # an empty block dispatches nothing


def test_async_parser_matches_the_sync_one():
    lines = ["id: 1", "event: reset", 'data: {"after": 5,', 'data: "oldest_id": 9}', "", "id: 2", ""]

    async def collect() -> list[SseMessage]:
        async def source():
            for line in lines:
                yield line

        return [m async for m in aparse_sse(source())]

    assert asyncio.run(collect()) == list(parse_sse(lines))


def test_stream_state_types_items_and_tracks_the_cursor():
    state = StreamState(Client("http://127.0.0.1:9", token=""), kinds="task.", heartbeat=1)
    decoder = SseDecoder()
    assert state.params == {"heartbeat": 1, "kind": "task."} and "Last-Event-ID" not in state.headers()
    hello = state.item(SseMessage("hello", '{"last_id": 40, "oldest_id": 3}', None), decoder)
    assert hello == Hello(last_id=40, oldest_id=3) and state.last_id == 40  # a fresh stream resumes from hello
    event = state.item(
        SseMessage("message", '{"id": 41, "at": 1.5, "cluster": "c", "kind": "task.state", "subject": "t"}', "41"),
        decoder,
    )
    assert event == Event(id=41, at=1.5, cluster="c", kind="task.state", subject="t", data={})
    assert state.item(SseMessage("", "", "57"), decoder) is None and state.last_id == 57
    assert state.headers()["Last-Event-ID"] == "57"
    reset = state.item(SseMessage("reset", '{"after": 57, "oldest_id": 100}', None), decoder)
    assert reset == Reset(after=57, oldest_id=100) and state.last_id == 99
    assert [state.next_delay() for _ in range(7)] == [0.2, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0]


def test_state_sets_come_from_the_shared_enums():
    assert task_final("DONE") and task_final("FAILED") and not task_final("RUNNING") and not task_final(None)
    assert task_failed("FAILED") and not task_failed("DONE")
    # every ...Failed state of the contract, and only those
    assert {str(s.value) for s in VOLUME_FAILED_STATES} == {s.value for s in VolumeState if s.value.endswith("Failed")}
    assert {"CreateFailed", "StartFailed", "StopFailed", "DeleteFailed", "ExpandFailed"} <= {
        str(s.value) for s in VOLUME_FAILED_STATES
    }
    assert volume_failed("StopFailed") and not volume_failed("Deleted") and not volume_failed("")
    assert task_done("DONE") and not task_done("FAILED") and not task_done(None)
    # a final task state is one the transition table leads nowhere from
    assert FINAL_TASK_STATES == {s for s in TaskState if not TASK_TRANSITIONS[s]} == {TaskState.DONE, TaskState.FAILED}
    assert all(s.final == (s in FINAL_TASK_STATES) for s in TaskState)
    # a volume operation ends where the volume rests, failed, or is gone; never in a running state
    assert {"Created", "Started", "Stopped"} == {str(s.value) for s in STABLE_VOLUME_STATES}
    assert all(volume_final(s) for s in ("Created", "Started", "Stopped", "Deleted", "ExpandFailed"))
    assert not any(volume_final(s) for s in ("Creating", "Starting", "Replacing", "Online", "", None))


# ---- against a real server ----------------------------------------------------------------------
def test_errors_carry_the_servers_detail_and_status(stack):
    good = Client(stack.server.url, token=stack.cli.token)
    with pytest.raises(ApiError) as missing:
        good.get("/api/v1/clusters/nope")
    assert missing.value.status == 404 and "no cluster named 'nope'" in str(missing.value)
    with pytest.raises(NotLoggedIn) as refused:
        Client(stack.server.url, token="not-a-token").get("/api/v1/clusters")
    assert refused.value.status == 401
    with pytest.raises(ApiError) as down:
        Client(f"http://127.0.0.1:{free_port()}", token="").get("/api/v1/clusters")
    assert down.value.status == 0 and "cannot reach the control server" in str(down.value)
    # several servers (docs/ha.md): one that cannot be reached is passed over, in both clients
    dead = f"http://127.0.0.1:{free_port()}"
    listed = Client(f"{dead}, {stack.server.url}/", token=stack.cli.token)
    assert listed.servers == f"{dead},{stack.server.url}"
    assert [c["name"] for c in listed.get("/api/v1/clusters")] == ["default"] and listed.url == stack.server.url
    with pytest.raises(ApiError) as all_down:
        Client(f"{dead},http://127.0.0.1:{free_port()}", token="").get("/api/v1/clusters")
    assert "cannot reach the control server" in str(all_down.value)
    with pytest.raises(ApiError, match=r"invalid control server URL 'ftp://x'.*separated by commas"):
        Client(f"{stack.server.url},ftp://x")
    from control.cli.main import build_parser

    args = build_parser().parse_args(["volume", "list", "--url", dead, "--url", stack.server.url])
    assert args.url == f"{dead},{stack.server.url}"
    clusters = asyncio.run(
        AsyncClient(f"{dead},{stack.server.url}", token=stack.cli.token).request("GET", "/api/v1/clusters")
    )
    assert [c["name"] for c in clusters] == ["default"]

    async def scenario() -> None:
        with pytest.raises(NotLoggedIn):  # the dashboard asks nothing without a login
            await AsyncClient(stack.server.url, token="").request("GET", "/api/v1/clusters")
        with pytest.raises(ApiError) as missing:
            await AsyncClient(stack.server.url, token=stack.cli.token).request("GET", "/api/v1/clusters/nope")
        assert missing.value.status == 404 and "no cluster named 'nope'" in str(missing.value)
        snap = await AsyncClient(stack.server.url, token=stack.cli.token).snapshot()
        assert [c["name"] for c in snap.clusters] == ["default"] and snap.volumes == []

    asyncio.run(scenario())


class Collector:
    """Iterates a sync EventStream in a thread into a queue."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.items: queue.Queue[StreamItem | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.stream:
                self.items.put(item)
        except BaseException as exc:
            self.items.put(exc)

    def next(self, kind: type) -> StreamItem:
        """The next item of type ``kind``, skipping others (Down items while the server restarts)."""
        deadline = time.monotonic() + ITEM_TIMEOUT
        while time.monotonic() < deadline:
            try:
                item = self.items.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, kind):
                return item
        raise AssertionError(f"no {kind.__name__} from the stream in {ITEM_TIMEOUT}s")

    def close(self) -> None:
        self.stream.close()
        self.thread.join(timeout=5)


def rows(prefix: str, count: int) -> list[tuple[str, str, str, dict]]:
    return [("default", "task.state", f"{prefix}{i}", {"state": "DONE"}) for i in range(count)]


def test_sync_stream_resumes_with_last_event_id_across_a_server_restart(stack):
    client = Client(stack.server.url, token=stack.cli.token)
    collector = Collector(client.events(kinds="task.", heartbeat=0.5, reconnect=(0.1, 0.2)))
    try:
        hello = collector.next(Hello)
        insert_events(db_path(stack), rows("before", 3))
        seen = [collector.next(Event) for _ in range(3)]
        assert [e.subject for e in seen] == ["before0", "before1", "before2"] and seen[0].id > hello.last_id
        # filtered events still move the cursor (the keepalive's id line)
        insert_events(db_path(stack), [("default", "node.state", "n1", {"state": "Online"})])
        newest = stored_ids(db_path(stack))[-1]
        deadline = time.monotonic() + ITEM_TIMEOUT
        while (collector.stream.last_id or 0) < newest:
            assert time.monotonic() < deadline, f"cursor {collector.stream.last_id} never reached {newest}"
            time.sleep(0.05)

        stack.server.stop()
        collector.next(Down)
        insert_events(db_path(stack), rows("while-down", 3))  # nobody is connected to see these live
        stack.server.start()
        collector.next(Hello)
        missed = [collector.next(Event) for _ in range(3)]
        assert [e.subject for e in missed] == ["while-down0", "while-down1", "while-down2"]
        assert missed[0].id > newest and [e.id for e in missed] == sorted({e.id for e in missed})
        assert collector.stream.last_id == missed[-1].id
    finally:
        collector.close()


def test_sync_stream_resets_when_the_id_is_unknown(stack):
    client = Client(stack.server.url, token=stack.cli.token)
    collector = Collector(client.events(after=10**9, heartbeat=0.5))
    try:
        reset = collector.next(Reset)
        assert reset.after == 10**9
        collector.next(Hello)
        first = collector.next(Event)  # the stream goes on with the oldest kept event
        assert first.id == reset.oldest_id and collector.stream.last_id >= first.id
    finally:
        collector.close()


def test_async_stream_resumes_with_last_event_id_across_a_server_restart(stack):
    client = AsyncClient(stack.server.url, token=stack.cli.token)
    stream = client.events(kinds="task.", heartbeat=0.5, reconnect=(0.1, 0.2))

    async def scenario() -> None:
        items = aiter(stream)

        async def next_of(kind: type) -> StreamItem:
            while True:
                item = await asyncio.wait_for(anext(items), ITEM_TIMEOUT)
                if isinstance(item, kind):
                    return item

        await next_of(Hello)
        await asyncio.to_thread(insert_events, db_path(stack), rows("a", 2))
        first = [await next_of(Event) for _ in range(2)]
        await asyncio.to_thread(stack.server.stop)
        await next_of(Down)
        await asyncio.to_thread(insert_events, db_path(stack), rows("b", 2))
        await asyncio.to_thread(stack.server.start)
        await next_of(Hello)
        missed = [await next_of(Event) for _ in range(2)]
        assert [e.subject for e in first + missed] == ["a0", "a1", "b0", "b1"]
        assert missed[0].id > first[-1].id and stream.last_id == missed[-1].id
        await items.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_the_library_and_the_dashboard_stay_out_of_the_server_and_the_cli():
    code = (
        "import sys, control.client, tui.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['control', 'api'], ['control', 'services'], ['control', 'store'], ['control', 'server'], ['control', 'cli'])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
