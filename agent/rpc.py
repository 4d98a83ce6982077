"""ONC RPC v2 (RFC 5531) over TCP as GlusterFS speaks it: XDR (RFC 4506) and record marking.

Only what a volfile server needs: decoding CALL messages, encoding accepted/denied REPLY
messages, encoding CALL messages for server-to-client callbacks, and reassembling records
from fragments. Every decode checks bounds; malformed input raises `XdrError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RPC_VERSION = 2
CALL, REPLY = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
# accept_stat
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR = range(6)
# reject_stat
RPC_MISMATCH, AUTH_ERROR = 0, 1
# auth_stat
AUTH_OK, AUTH_BADCRED, AUTH_REJECTEDCRED, AUTH_BADVERF = 0, 1, 2, 3

AUTH_NONE, AUTH_UNIX = 0, 1
# GlusterFS's own flavors (rpc/rpc-lib/src/xdr-rpc.h); glusterd accepts them without checking.
AUTH_GLUSTERFS_V2, AUTH_GLUSTERFS_V3 = 390039, 390040
MAX_AUTH_BYTES = 400  # RFC 5531 opaque_auth body<400>

LAST_FRAGMENT = 0x80000000
FRAGMENT_LENGTH_MASK = 0x7FFFFFFF


class XdrError(ValueError):
    """Bytes that are not valid XDR for the expected type."""


class Unpacker:
    """Reads XDR items from a buffer, never past its end."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining:
            raise XdrError(f"needs {n} bytes at offset {self._pos}, {self.remaining} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def i32(self) -> int:
        return int(struct.unpack(">i", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def opaque(self, limit: int) -> bytes:
        """Variable-length opaque<limit>: length, bytes, zero padding to 4."""
        length = self.u32()
        if length > limit:
            raise XdrError(f"opaque of {length} bytes exceeds its limit of {limit}")
        value = bytes(self._take(length))
        pad = (-length) % 4
        if bytes(self._take(pad)) != b"\0" * pad:
            raise XdrError("non-zero XDR padding")
        return value

    def string(self, limit: int) -> str:
        raw = self.opaque(limit)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise XdrError(f"string is not UTF-8: {exc}") from None

    def done(self) -> None:
        if self.remaining:
            raise XdrError(f"{self.remaining} unexpected trailing bytes")


class Packer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u32(self, value: int) -> Packer:
        self._parts.append(struct.pack(">I", value))
        return self

    def i32(self, value: int) -> Packer:
        self._parts.append(struct.pack(">i", value))
        return self

    def u64(self, value: int) -> Packer:
        self._parts.append(struct.pack(">Q", value))
        return self

    def opaque(self, value: bytes) -> Packer:
        self.u32(len(value))
        self._parts.append(value + b"\0" * ((-len(value)) % 4))
        return self

    def string(self, value: str) -> Packer:
        return self.opaque(value.encode())

    def result(self) -> bytes:
        return b"".join(self._parts)


@dataclass(frozen=True)
class Call:
    """A decoded CALL message; `args` are the procedure's still-encoded arguments."""

    xid: int
    rpcvers: int
    prog: int
    vers: int
    proc: int
    cred_flavor: int
    cred_body: bytes
    args: bytes


def message_header(record: bytes) -> tuple[int, int]:
    """(xid, msg_type) of a record; raises XdrError when it is too short."""
    unpacker = Unpacker(record)
    return unpacker.u32(), unpacker.u32()


def decode_call(record: bytes) -> Call:
    """Decode a CALL record. The RPC version is returned, not checked, so that the caller
    can answer RPC_MISMATCH with the right xid."""
    u = Unpacker(record)
    xid, msg_type = u.u32(), u.u32()
    if msg_type != CALL:
        raise XdrError(f"message type {msg_type} is not a CALL")
    rpcvers, prog, vers, proc = u.u32(), u.u32(), u.u32(), u.u32()
    cred_flavor = u.u32()
    cred_body = u.opaque(MAX_AUTH_BYTES)
    u.u32()  # verifier flavor: GlusterFS sends AUTH_NONE and nobody checks it
    u.opaque(MAX_AUTH_BYTES)
    args = bytes(record[len(record) - u.remaining :])
    return Call(xid, rpcvers, prog, vers, proc, cred_flavor, cred_body, args)


def _reply_header(xid: int, reply_stat: int) -> Packer:
    return Packer().u32(xid).u32(REPLY).u32(reply_stat)


def accepted_reply(
    xid: int, accept_stat: int = SUCCESS, body: bytes = b"", mismatch: tuple[int, int] | None = None
) -> bytes:
    """MSG_ACCEPTED with verifier AUTH_NONE; `mismatch` is (low, high) for PROG_MISMATCH."""
    p = _reply_header(xid, MSG_ACCEPTED).u32(AUTH_NONE).opaque(b"").u32(accept_stat)
    if accept_stat == PROG_MISMATCH:
        low, high = mismatch or (0, 0)
        p.u32(low).u32(high)
    return p.result() + body


def rpc_mismatch_reply(xid: int) -> bytes:
    return _reply_header(xid, MSG_DENIED).u32(RPC_MISMATCH).u32(RPC_VERSION).u32(RPC_VERSION).result()


def auth_error_reply(xid: int, auth_stat: int) -> bytes:
    return _reply_header(xid, MSG_DENIED).u32(AUTH_ERROR).u32(auth_stat).result()


def encode_call(xid: int, prog: int, vers: int, proc: int, args: bytes = b"") -> bytes:
    """A CALL with AUTH_NONE credentials and verifier (as glusterd sends its callbacks)."""
    p = Packer().u32(xid).u32(CALL).u32(RPC_VERSION).u32(prog).u32(vers).u32(proc)
    return p.u32(AUTH_NONE).opaque(b"").u32(AUTH_NONE).opaque(b"").result() + args


def frame(record: bytes) -> bytes:
    """One record as a single last fragment."""
    if len(record) > FRAGMENT_LENGTH_MASK:
        raise ValueError(f"record of {len(record)} bytes does not fit one fragment")
    return struct.pack(">I", LAST_FRAGMENT | len(record)) + record


class RecordTooLarge(Exception):
    """A record (or its fragment count) exceeds the reader's limits."""


class RecordReader:
    """Reassembles records from fragments as bytes arrive.

    `feed` returns the complete records found so far; a record above `max_record` bytes or
    with more than `max_fragments` fragments raises RecordTooLarge before it is buffered.
    """

    def __init__(self, max_record: int, max_fragments: int = 64) -> None:
        self.max_record = max_record
        self.max_fragments = max_fragments
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._record_size = 0

    @property
    def in_record(self) -> bool:
        """True while part of a record has arrived and the rest has not."""
        return bool(self._buffer or self._fragments)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        records = []
        while len(self._buffer) >= 4:
            (header,) = struct.unpack(">I", self._buffer[:4])
            length = header & FRAGMENT_LENGTH_MASK
            if self._record_size + length > self.max_record:
                raise RecordTooLarge(f"record of at least {self._record_size + length} bytes exceeds {self.max_record}")
            if len(self._fragments) + 1 > self.max_fragments:
                raise RecordTooLarge(f"record has more than {self.max_fragments} fragments")
            if len(self._buffer) < 4 + length:
                break
            self._fragments.append(bytes(self._buffer[4 : 4 + length]))
            self._record_size += length
            del self._buffer[: 4 + length]
            if header & LAST_FRAGMENT:
                records.append(b"".join(self._fragments))
                self._fragments, self._record_size = [], 0
        return records
