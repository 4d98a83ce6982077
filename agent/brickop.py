"""glusterd's brick-op RPC and GlusterFS's serialized dicts, shared by heal and rebalance.

glusterd talks to its daemons (bricks, self-heal daemon, rebalance) on each one's control
socket (the ``-S``/``--socket-file`` unix socket): program GD_BRICK_PROGRAM 4867634 v2,
argument ``gd1_mgmt_brick_op_req {string name; int op; opaque input; opaque dict}`` where
`input` is a serialized dict; the answer is ``gd1_mgmt_brick_op_rsp {int op_ret; int op_errno;
opaque output; string op_errstr}`` with a serialized dict in `output`.

Dicts (dict_serialize): a count, then per pair the key length, the value length, the key with
its NUL and the value bytes. GlusterFS stores numbers as decimal strings, so every value here
is a NUL-terminated string.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from agent import rpc

GD_BRICK_PROGRAM, GD_BRICK_VERSION = 4867634, 2
GLUSTERD_BRICK_XLATOR_OP = 3
GLUSTERD_BRICK_XLATOR_DEFRAG = 6
RPC_TIMEOUT = 30.0
MAX_REPLY = 1024 * 1024


class BrickOpError(Exception):
    """The call failed; the message starts with a code (ENOTCONN, EACCES, EIO)."""


@dataclass(frozen=True)
class BrickOpReply:
    op_ret: int
    op_errno: int
    output: dict[str, str]
    errstr: str


def serialize_dict(items: dict[str, str]) -> bytes:
    """A GlusterFS dict as dict_serialize writes it (values are NUL-terminated strings)."""
    out = [struct.pack(">i", len(items))]
    for key, value in items.items():
        raw = value.encode() + b"\0"
        out.append(struct.pack(">ii", len(key.encode()), len(raw)) + key.encode() + b"\0" + raw)
    return b"".join(out)


def unserialize_dict(data: bytes) -> dict[str, str]:
    """The pairs of a serialized dict; a truncated tail is dropped."""
    if len(data) < 4:
        return {}
    (count,) = struct.unpack(">i", data[:4])
    pos, out = 4, {}
    for _ in range(max(count, 0)):
        if pos + 8 > len(data):
            break
        keylen, vallen = struct.unpack(">ii", data[pos : pos + 8])
        pos += 8
        if keylen < 0 or vallen < 0 or pos + keylen + 1 + vallen > len(data):
            break
        key = data[pos : pos + keylen].decode(errors="replace")
        pos += keylen + 1
        out[key] = data[pos : pos + vallen].rstrip(b"\0").decode(errors="replace")
        pos += vallen
    return out


def call(control_socket: str, proc: int, name: str, op: int, items: dict[str, str], what: str) -> BrickOpReply:
    """One brick-op call on a daemon's control socket; `what` names the daemon in errors."""
    args = rpc.Packer().string(name).i32(op).opaque(serialize_dict(items)).opaque(b"").result()
    record = rpc.encode_call(1, GD_BRICK_PROGRAM, GD_BRICK_VERSION, proc, args)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(RPC_TIMEOUT)
            sock.connect(control_socket)
            sock.sendall(rpc.frame(record))
            reader = rpc.RecordReader(MAX_REPLY)
            records: list[bytes] = []
            while not records:
                data = sock.recv(65536)
                if not data:
                    raise BrickOpError(f"EIO: the {what} closed its control socket without an answer")
                records = reader.feed(data)
    except (OSError, rpc.RecordTooLarge) as exc:
        raise BrickOpError(f"ENOTCONN: cannot reach the {what} on {control_socket}: {exc}") from None
    u = rpc.Unpacker(records[0])
    try:
        u.u32(), u.u32()  # xid, REPLY
        if u.u32() != rpc.MSG_ACCEPTED:
            raise BrickOpError(f"EACCES: the {what} denied the request")
        u.u32(), u.opaque(rpc.MAX_AUTH_BYTES)  # verifier
        if (accept := u.u32()) != rpc.SUCCESS:
            raise BrickOpError(f"EIO: the {what} refused the request (RPC accept status {accept})")
        op_ret, op_errno = u.i32(), u.i32()
        output = unserialize_dict(u.opaque(MAX_REPLY))
        errstr = u.string(MAX_REPLY)
    except rpc.XdrError as exc:
        raise BrickOpError(f"EIO: malformed answer from the {what}: {exc}") from None
    return BrickOpReply(op_ret, op_errno, output, errstr)
