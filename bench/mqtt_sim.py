"""A small asyncio MQTT 3.1.1 client for the fleet benchmark: thousands of connections in one process.

Only what an agent uses: CONNECT (user, password, last-will, keepalive), SUBSCRIBE, PUBLISH at
QoS 0 and 1 (both ways, with PUBACK), PINGREQ, DISCONNECT. ``freeze()`` stops reading and writing
the socket without closing it, as a hung agent would: only the broker's keepalive can notice.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


class MqttError(Exception):
    """The broker refused or dropped the connection."""


def _str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    length, out = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([(kind << 4) | flags]) + bytes(out) + body


OnMessage = Callable[[str, bytes], None]


class Connection:
    """One MQTT session (clean session)."""

    def __init__(self, on_message: OnMessage | None = None) -> None:
        self.on_message = on_message
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()
        self._next_id = 0
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._connack: asyncio.Future[int] | None = None
        self.frozen = False
        self.last_sent = 0.0  # time.monotonic() of the last packet written: a broker's keepalive counts from it

    async def connect(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 10,
        will: tuple[str, bytes, int, bool] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        flags = 0x02  # clean session
        payload = _str(client_id)
        if will is not None:
            topic, message, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _str(topic) + _str(message)
        if username is not None:
            flags |= 0x80
            payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
        self._connack = asyncio.get_running_loop().create_future()
        self.writer.write(_packet(CONNECT, 0, body))
        self.last_sent = time.monotonic()
        self._tasks.append(asyncio.create_task(self._read_loop()))
        try:
            code = await asyncio.wait_for(self._connack, timeout)
        except (TimeoutError, MqttError):
            self.abort()
            raise MqttError(f"no CONNACK from {host}:{port}") from None
        if code != 0:
            self.abort()
            raise MqttError(f"connection refused (CONNACK {code})")
        self._tasks.append(asyncio.create_task(self._ping_loop(keepalive)))

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 30.0) -> None:
        pid = self._packet_id()
        body = struct.pack("!H", pid) + b"".join(_str(f) + bytes([qos]) for f, qos in filters)
        ack = self._expect(pid)
        self._write(_packet(SUBSCRIBE, 0x02, body))
        await asyncio.wait_for(ack, timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> asyncio.Future[None] | None:
        """Send a PUBLISH; at QoS 1 the future completes with the broker's PUBACK."""
        flags = (qos << 1) | (1 if retain else 0)
        if qos == 0:
            self._write(_packet(PUBLISH, flags, _str(topic) + payload))
            return None
        pid = self._packet_id()
        ack = self._expect(pid)
        self._write(_packet(PUBLISH, flags, _str(topic) + struct.pack("!H", pid) + payload))
        return ack

    def _expect(self, pid: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # most QoS 1 publishes (hellos, heartbeats) are not awaited: a connection lost before their PUBACK
        # is the agent's business, not an unretrieved exception for asyncio to print at exit
        fut.add_done_callback(_retrieve)
        self._acks[pid] = fut
        return fut

    def _write(self, data: bytes) -> None:
        if self.frozen or self.writer is None or self.closed.is_set():
            return
        self.writer.write(data)
        self.last_sent = time.monotonic()

    async def _ping_loop(self, keepalive: int) -> None:
        """PINGREQ once nothing was sent for half the keepalive (as paho does: other packets count)."""
        interval = max(keepalive * 0.5, 0.5)
        while not self.closed.is_set():
            if self.frozen:
                await asyncio.sleep(interval)
                continue
            await asyncio.sleep(max(self.last_sent + interval - time.monotonic(), 0.05))
            if time.monotonic() - self.last_sent >= interval:
                self._write(_packet(PINGREQ, 0, b""))

    async def _read_loop(self) -> None:
        assert self.reader is not None
        try:
            while True:
                head = await self.reader.readexactly(1)
                length, shift = 0, 0
                while True:
                    byte = (await self.reader.readexactly(1))[0]
                    length += (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await self.reader.readexactly(length) if length else b""
                self._handle(head[0] >> 4, head[0] & 0x0F, body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._closed()

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1])
        elif kind == PUBLISH:
            (tlen,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + tlen].decode()
            rest = 2 + tlen
            qos = (flags >> 1) & 0x03
            if qos:
                pid = body[rest : rest + 2]
                rest += 2
                self._write(_packet(PUBACK, 0, pid))
            if self.on_message is not None:
                self.on_message(topic, body[rest:])
        elif kind in (PUBACK, SUBACK):
            (pid,) = struct.unpack_from("!H", body)
            fut = self._acks.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _closed(self) -> None:
        self.closed.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError("connection closed"))
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(MqttError("connection closed"))
        self._acks.clear()

    def freeze(self) -> None:
        """Stop reading and writing, keep the TCP connection open (a hung process)."""
        self.frozen = True
        for task in self._tasks:
            task.cancel()
        if self.writer is not None:
            self.writer.transport.pause_reading()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT (the broker sends the last-will)."""
        for task in self._tasks:
            task.cancel()
        if self.writer is not None:
            self.writer.transport.abort()
        self._closed()

    async def disconnect(self) -> None:
        """A clean DISCONNECT (no last-will)."""
        self._write(_packet(DISCONNECT, 0, b""))
        for task in self._tasks:
            task.cancel()
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self._closed()


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
