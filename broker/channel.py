"""Calls both ways between two processes over one connected socket (the server and its broker process).

One JSON object per line. A request is ``{"id": N, "call": NAME, "args": [...]}``; its answer is
``{"id": N, "result": VALUE}`` or ``{"id": N, "error": TEXT}``. Each side answers only the names
it was given (``handlers``), each call in a worker thread of its own, so a slow answer (a
database query) never holds up the others; answers are matched to calls by id. When the other
side goes away (it exited, or was killed) every call waiting for an answer fails with
``ChannelClosed``, and so does every later one.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

log = logging.getLogger(__name__)

WORKERS = 8  # calls answered at once (a registration storm asks about many logins together)


class ChannelError(Exception):
    """A call over the channel did not get its answer."""


class ChannelClosed(ChannelError):
    """The other side is gone."""


class RemoteError(ChannelError):
    """The other side answered the call with an error (a handler raises it for an expected refusal,
    which is then not logged as a failure)."""


class Channel:
    def __init__(self, sock: socket.socket, handlers: Mapping[str, Callable[..., Any]], name: str) -> None:
        self.name = name
        self._sock = sock
        self._handlers = dict(handlers)
        self._reader = sock.makefile("rb")
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._next_id = 0
        self._workers = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"{name}-call")
        self.closed = threading.Event()
        self.on_close: list[Callable[[], object]] = []
        self._thread = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Ask the other side; its answer, or ChannelClosed, RemoteError, or TimeoutError after ``timeout``."""
        future: Future[Any] = Future()
        with self._lock:
            if self.closed.is_set():
                raise ChannelClosed(f"{self.name}: the other side is gone")
            self._next_id += 1
            call_id = self._next_id
            self._pending[call_id] = future
        try:
            self._send({"id": call_id, "call": name, "args": list(args)})
            return future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"{self.name}: no answer to {name} within {timeout:.0f}s") from None
        finally:
            with self._lock:
                self._pending.pop(call_id, None)

    def close(self) -> None:
        """Stop talking: the other side reads the end of the stream (and so does our reader)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
        self._thread.join(5)
        self._sock.close()

    def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            with self._send_lock:
                self._sock.sendall(line)
        except OSError:
            self._closed()
            raise ChannelClosed(f"{self.name}: the other side is gone") from None

    def _read(self) -> None:
        try:
            for line in self._reader:
                message = json.loads(line)
                if "call" in message:
                    self._workers.submit(self._answer, message)
                    continue
                with self._lock:
                    future = self._pending.get(message.get("id"))
                if future is None:
                    continue  # its caller gave up waiting
                if "error" in message:
                    future.set_exception(RemoteError(message["error"]))
                else:
                    future.set_result(message.get("result"))
        except (OSError, ValueError) as exc:
            if not self.closed.is_set():
                log.warning("%s: reading failed: %s", self.name, exc)
        finally:
            self._closed()
            self._workers.shutdown(wait=False)

    def _answer(self, message: dict[str, Any]) -> None:
        name = message["call"]
        handler = self._handlers.get(name)
        try:
            if handler is None:
                raise RemoteError(f"no such call: {name!r} (known: {', '.join(sorted(self._handlers))})")
            answer: dict[str, Any] = {"id": message["id"], "result": handler(*message.get("args", ()))}
        except Exception as exc:
            if not isinstance(exc, RemoteError | ChannelError):
                log.exception("%s: %s failed", self.name, name)
            answer = {"id": message["id"], "error": str(exc)}
        try:
            self._send(answer)
        except ChannelClosed:
            pass  # the caller is gone

    def _closed(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(ChannelClosed(f"{self.name}: the other side is gone"))
        for callback in self.on_close:
            try:
                callback()
            except Exception:
                log.exception("%s: a close callback failed", self.name)
