"""``glusterctl tui --serve`` in a real headless Chromium: the nodes view shows a node's name.

textual-serve draws the dashboard with xterm.js on a canvas (WebGL or 2D), so neither
``--dump-dom`` nor a screenshot contains the text. The test drives Chromium over the DevTools
protocol (``--remote-debugging-port``, a small client over websockets) and reads the terminal
output the page received over its own websocket (``Network.webSocketFrameReceived``): exactly
the bytes xterm.js draws. It also checks that the page's script consumed them (the body gets
the ``-first-byte`` class) and saves a screenshot next to the test's logs for people to look at.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time

import httpx
import pytest

from tests.helpers import BIN, Proc, free_port, port_open, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]")


@pytest.fixture
def chromium_bin():
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/setup installs it)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


class Cdp:
    """The few DevTools protocol calls this test needs, over one websocket."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.next_id = 0
        self.frames: list[bytes] = []

    def call(self, method: str, timeout: float = 15.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self._collect(msg)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
        raise AssertionError(f"no answer to {method} in {timeout}s")

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._collect(json.loads(self.ws.recv(timeout=max(0.05, deadline - time.monotonic()))))
            except TimeoutError:
                return

    def _collect(self, msg: dict) -> None:
        if msg.get("method") == "Network.webSocketFrameReceived":
            frame = msg["params"]["response"]
            data = frame["payloadData"]
            self.frames.append(base64.b64decode(data) if frame.get("opcode") == 2 else data.encode())

    def text(self) -> str:
        return ANSI.sub(b"", b"".join(self.frames)).decode("utf-8", "replace")

    def close(self) -> None:
        self.ws.close()


def test_served_dashboard_shows_nodes_in_chromium(stack, chromium_bin, tmp_path):
    stack.agent("webnode1")
    wait_until(lambda: stack.node_state("webnode1") == "Online", what="webnode1 Online")
    port = free_port()
    served = Proc(
        "tui-serve",
        [BIN, "tui", "--serve", f"127.0.0.1:{port}", "--url", stack.server.url],
        tmp_path / "tui-serve.log",
        env={"GLUSTERCTL_CONFIG_DIR": stack.cli.env["GLUSTERCTL_CONFIG_DIR"]},
    )
    stack.procs.append(served)
    served.start()
    wait_until(lambda: port_open("127.0.0.1", port), timeout=20, what="textual-serve listening")

    profile = tmp_path / "chromium-profile"
    browser = Proc(
        "chromium",
        [
            chromium_bin,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1400,900",
            "about:blank",
        ],
        tmp_path / "chromium.log",
    )
    stack.procs.append(browser)
    browser.start()
    active = profile / "DevToolsActivePort"
    wait_until(lambda: active.exists() and active.read_text().strip(), timeout=30, what="Chromium's DevTools port")
    devtools_port = int(active.read_text().split()[0])
    pages = wait_until(
        lambda: [
            t for t in httpx.get(f"http://127.0.0.1:{devtools_port}/json", timeout=5).json() if t["type"] == "page"
        ],
        timeout=15,
        what="a page target",
    )
    cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
    try:
        cdp.call("Network.enable")
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and "webnode1" not in cdp.text():
            cdp.pump(0.5)
        text = cdp.text()
        assert "webnode1" in text and "Online" in text, f"the served dashboard did not show the node:\n{text[-2000:]}"
        body = cdp.call("Runtime.evaluate", expression="document.body.className")["result"]["value"]
        assert "-first-byte" in body, body
        shot = cdp.call("Page.captureScreenshot", format="png")
        (tmp_path / "served-dashboard.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        cdp.close()
