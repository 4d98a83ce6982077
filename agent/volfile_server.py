"""A GlusterFS volfile server: the part of glusterd's management port that processes need.

Bricks (`glusterfsd -s HOST --volfile-server-port P --volfile-id KEY`), self-heal daemons,
stock `mount -t glusterfs HOST:/VOL` clients and gfapi programs fetch their volfile from it by
the handshake program's GETSPEC, and refetch when it pushes a FETCHSPEC callback, which is how
option changes reach running processes without a restart. The node agent owns one instance
and feeds it the volfiles the control service generated.

Programs and procedures answered (numbers from GlusterFS 10.3, rpc/rpc-lib/src/protocol-common.h):
- handshake 14398633 v2: NULL, GETSPEC (2), EVENT_NOTIFY (5: a rebalance process's final status,
  ``gf_event_notify_req {int op; opaque dict}``, handed to `on_event` with the keys the connection
  fetched, local peers only). GET_VOLUME_INFO (gfapi's glfs_get_volumeid) gets PROC_UNAVAIL.
- portmap 34123456 v1: SIGNIN (4) and SIGNOUT (5), sent by every brick after it fetched its
  volfile, are recorded and answered op_ret 0 (a failed SIGNIN makes the daemonising parent of
  glusterfsd exit 1 although the brick runs); PORTBYBRICK (1) and BRICKBYPORT (2) answer from
  those sign-ins, so clients whose volfile lacks `remote-port` can still find a brick.
- dump 123451501 v1: NULL, DUMP (our program list), PING.
The server pushes callback program 52743234 v1 FETCHSPEC (1) as a CALL with no arguments.

glfsheal (heal info) only talks to a unix socket (`glfsheal VOL ... glusterd-sock PATH`,
default /var/run/glusterd.socket) and sends GETSPEC with key VOL: pass `unix_path`.

Visibility: every key has the text local peers get (unix socket, loopback addresses) and,
optionally, the text remote TCP peers get; without one a remote peer gets ENOENT, as for an
unknown key. Brick and self-heal daemon volfiles carry the volume's login password, so they
are local only; a client key serves the trusted client volfile locally and the plain one to
remote peers. (glusterd serves everything to anyone.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import itertools
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agent import rpc
from agent.brickop import unserialize_dict

log = logging.getLogger(__name__)

DEFAULT_PORT = 24007
MAX_REQUEST = 64 * 1024  # GlusterFS's management requests are a few hundred bytes
MAX_CONNECTIONS = 512
MAX_PENDING_WRITE = 4 * 1024 * 1024  # queued reply/callback bytes before a peer counts as hung
RECORD_TIMEOUT = 30.0  # a started record must be complete within this
WRITE_TIMEOUT = 30.0
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
NOTIFY_TIMEOUT = 10.0
NAME_MAX = 255  # glusterd refuses keys this long with EINVAL

HNDSK_PROGRAM, HNDSK_VERSION = 14398633, 2
HNDSK_NULL, HNDSK_GETSPEC, HNDSK_EVENT_NOTIFY = 0, 2, 5
PMAP_PROGRAM, PMAP_VERSION = 34123456, 1
PMAP_NULL, PMAP_PORTBYBRICK, PMAP_BRICKBYPORT, PMAP_SIGNIN, PMAP_SIGNOUT = 0, 1, 2, 4, 5
DUMP_PROGRAM, DUMP_VERSION = 123451501, 1
DUMP_NULL, DUMP_DUMP, DUMP_PING = 0, 1, 2
CBK_PROGRAM, CBK_VERSION, CBK_FETCHSPEC = 52743234, 1, 1

PROGRAMS = {
    HNDSK_PROGRAM: ("GlusterFS Handshake", HNDSK_VERSION),
    PMAP_PROGRAM: ("GlusterFS Port-Mapper", PMAP_VERSION),
    DUMP_PROGRAM: ("GF-DUMP", DUMP_VERSION),
}
ACCEPTED_FLAVORS = {rpc.AUTH_NONE, rpc.AUTH_UNIX, rpc.AUTH_GLUSTERFS_V2, rpc.AUTH_GLUSTERFS_V3}


class VolfileKeyError(ValueError):
    """A volfile key that GlusterFS could never ask for."""


def normalise_key(key: str) -> str:
    """The key as glusterd looks it up: without one leading '/' (mount sends "/VOL")."""
    name = key[1:] if key.startswith("/") else key
    if not name or len(name) >= NAME_MAX or any(c.isspace() or c == "\0" for c in name):
        raise VolfileKeyError(f"volfile key {key!r}: 1 to {NAME_MAX - 1} characters, no spaces or NUL")
    return name


class _Drop(Exception):
    """The connection must be closed; the message says why."""


def is_local_peer(peername: object) -> bool:
    """True for a unix-socket peer or a loopback address (IPv4-mapped ones too)."""
    if not isinstance(peername, tuple):
        return True  # a unix socket: only this host's processes reach it (mode 0600)
    try:
        address = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@dataclass(frozen=True)
class _Volfile:
    local: bytes
    remote: bytes | None  # None: remote peers get ENOENT


@dataclass(eq=False)
class _Connection:
    peer: str
    writer: asyncio.StreamWriter
    local: bool = False
    keys: set[str] = field(default_factory=set)
    bricks: dict[str, int] = field(default_factory=dict)  # portmap sign-ins on this connection

    def send(self, record: bytes) -> None:
        """Queue a record; a peer that stopped reading is cut off instead of buffering without end."""
        if self.writer.transport.get_write_buffer_size() > MAX_PENDING_WRITE:
            raise _Drop(f"peer does not read ({MAX_PENDING_WRITE} bytes pending)")
        self.writer.write(rpc.frame(record))


class VolfileServer:
    """Serves volfiles by key on TCP `addresses`:`port` (and optionally a unix socket).

    All public methods are thread-safe; the server runs its own asyncio loop in its own thread.
    """

    def __init__(self, addresses: Sequence[str], port: int = DEFAULT_PORT, *, unix_path: str | None = None) -> None:
        if not addresses and not unix_path:
            raise ValueError("a volfile server needs at least one address or a unix socket path")
        self.addresses = list(addresses)
        self.port = port  # the bound port once started (useful with port 0)
        self.unix_path = unix_path
        self._lock = threading.Lock()
        self._volfiles: dict[str, _Volfile] = {}
        self._connections: set[_Connection] = set()
        self._logged_unknown: set[tuple[int, int, int]] = set()
        self._xids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        # EVENT_NOTIFY: on_event(op, keys the connection fetched, dict); called on the server's thread
        self.on_event: Callable[[int, set[str], dict[str, str]], None] | None = None

    # -- volfiles -----------------------------------------------------------------------------

    def set_volfile(self, key: str, text: str, *, remote: str | None = None) -> bool:
        """Serve `text` under `key` to local peers (unix socket, loopback) and `remote` to remote
        TCP peers (None: they get ENOENT); True if either differs from what was served before."""
        name = normalise_key(key)
        entry = _Volfile(text.encode(), None if remote is None else remote.encode())
        with self._lock:
            changed = self._volfiles.get(name) != entry
            self._volfiles[name] = entry
        if changed:
            log.info(
                "volfile %s set (%d bytes%s)",
                name,
                len(entry.local),
                "" if entry.remote is None else f"; {len(entry.remote)} bytes for remote peers",
            )
        return changed

    def remove_volfile(self, key: str) -> bool:
        """Stop serving `key`; True if it was served."""
        name = normalise_key(key)
        with self._lock:
            removed = self._volfiles.pop(name, None) is not None
        if removed:
            log.info("volfile %s removed", name)
        return removed

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._volfiles)

    def connections(self) -> list[dict[str, object]]:
        """Open connections: peer, the keys it fetched, the bricks it signed in."""
        with self._lock:
            return [{"peer": c.peer, "keys": sorted(c.keys), "bricks": dict(c.bricks)} for c in self._connections]

    def notify(self, keys: Iterable[str] | None = None) -> int:
        """Push FETCHSPEC to every connection that fetched one of `keys` (all connections if
        None); returns how many were sent. The processes then refetch their volfile.
        Call it from any thread but the server's own (it waits for the server's loop)."""
        wanted = None if keys is None else {normalise_key(k) for k in keys}
        loop = self._loop
        if loop is None:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._notify(wanted), loop)
        return future.result(NOTIFY_TIMEOUT)

    async def _notify(self, wanted: set[str] | None) -> int:
        with self._lock:
            targets = [c for c in self._connections if wanted is None or c.keys & wanted]
        sent = 0
        for conn in targets:
            xid = next(self._xids)
            try:
                conn.send(rpc.encode_call(xid, CBK_PROGRAM, CBK_VERSION, CBK_FETCHSPEC))
                sent += 1
                log.info("FETCHSPEC xid %d pushed to %s (keys %s)", xid, conn.peer, ",".join(sorted(conn.keys)))
            except (_Drop, OSError) as exc:
                log.warning("closing connection from %s: %s", conn.peer, exc)
                conn.writer.close()
        return sent

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Listen; returns once every socket is bound, raises OSError if one cannot be."""
        if self._thread is not None:
            raise RuntimeError("volfile server already started")
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name="volfile-server", daemon=True)
        self._thread.start()
        try:
            ready.result(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        loop.create_task(self._listen(ready))
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            for host in self.addresses:
                server = await asyncio.start_server(self._serve, host, self.port, limit=MAX_REQUEST)
                self._servers.append(server)
                self.port = server.sockets[0].getsockname()[1]
            if self.unix_path:
                self._remove_stale_socket(self.unix_path)
                server = await asyncio.start_unix_server(self._serve, self.unix_path, limit=MAX_REQUEST)
                os.chmod(self.unix_path, 0o600)  # trusted volfiles carry the volume's credentials
                self._servers.append(server)
        except OSError as exc:
            ready.set_exception(exc)
            return
        log.info("volfile server listening on %s port %d%s", ",".join(self.addresses), self.port,
                 f" and {self.unix_path}" if self.unix_path else "")  # fmt: skip
        ready.set_result(None)

    @staticmethod
    def _remove_stale_socket(path: str) -> None:
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass

    def stop(self) -> None:
        """Close the listeners and every connection; clients keep running and retry."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        self._loop = self._thread = None
        if self.unix_path:
            self._remove_stale_socket(self.unix_path)
        log.info("volfile server on port %d stopped", self.port)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.writer.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        # connection handlers end on the EOF of their closed transport; cancel any that linger
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=STOP_TIMEOUT / 2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- connections --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = self._peer_name(writer)
        conn = _Connection(peer, writer, local=is_local_peer(writer.get_extra_info("peername")))
        with self._lock:
            full = len(self._connections) >= MAX_CONNECTIONS
            if not full:
                self._connections.add(conn)
        if full:
            log.warning("refusing connection from %s: %d connections open", peer, MAX_CONNECTIONS)
            writer.close()
            return
        log.debug("connection from %s", peer)
        records = rpc.RecordReader(MAX_REQUEST)
        try:
            while True:
                timeout = RECORD_TIMEOUT if records.in_record else None
                try:
                    data = await asyncio.wait_for(reader.read(MAX_REQUEST), timeout)
                except TimeoutError:
                    raise _Drop(f"record incomplete after {RECORD_TIMEOUT}s") from None
                if not data:
                    break
                try:
                    complete = records.feed(data)
                except rpc.RecordTooLarge as exc:
                    raise _Drop(str(exc)) from None
                for record in complete:
                    self._handle(conn, record)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except _Drop as exc:
            log.warning("dropping connection from %s: %s", peer, exc)
        except TimeoutError:
            log.warning("dropping connection from %s: it did not read replies for %ss", peer, WRITE_TIMEOUT)
        except (ConnectionError, OSError) as exc:
            log.debug("connection from %s ended: %s", peer, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
            writer.close()
            log.debug("connection from %s closed", peer)

    def _peer_name(self, writer: asyncio.StreamWriter) -> str:
        """host:port, or the unix socket with the peer's pid (glfsheal and friends)."""
        peername = writer.get_extra_info("peername")
        if isinstance(peername, tuple):
            return f"{peername[0]}:{peername[1]}"
        sock = writer.get_extra_info("socket")
        try:
            pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        except (OSError, AttributeError, struct.error):
            return f"unix:{self.unix_path}"
        return f"unix:{self.unix_path}[pid {pid}]"

    def _handle(self, conn: _Connection, record: bytes) -> None:
        try:
            xid, msg_type = rpc.message_header(record)
        except rpc.XdrError as exc:
            raise _Drop(f"malformed RPC header: {exc}") from None
        if msg_type == rpc.REPLY:
            log.debug("ignoring RPC reply xid %d from %s", xid, conn.peer)
            return
        try:
            call = rpc.decode_call(record)
        except rpc.XdrError as exc:
            raise _Drop(f"malformed RPC call xid {xid}: {exc}") from None
        if call.rpcvers != rpc.RPC_VERSION:
            conn.send(rpc.rpc_mismatch_reply(xid))
            raise _Drop(f"RPC version {call.rpcvers} (only {rpc.RPC_VERSION})")
        if call.cred_flavor not in ACCEPTED_FLAVORS:
            log.warning("refusing call from %s: credential flavor %d", conn.peer, call.cred_flavor)
            conn.send(rpc.auth_error_reply(xid, rpc.AUTH_REJECTEDCRED))
            return
        program = PROGRAMS.get(call.prog)
        if program is None:
            self._log_unknown(conn, call)
            conn.send(rpc.accepted_reply(xid, rpc.PROG_UNAVAIL))
            return
        if call.vers != program[1]:
            self._log_unknown(conn, call)
            conn.send(rpc.accepted_reply(xid, rpc.PROG_MISMATCH, mismatch=(program[1], program[1])))
            return
        try:
            body = self._dispatch(conn, call)
        except rpc.XdrError as exc:
            conn.send(rpc.accepted_reply(xid, rpc.GARBAGE_ARGS))
            raise _Drop(f"malformed arguments to program {call.prog} procedure {call.proc}: {exc}") from None
        if body is None:
            self._log_unknown(conn, call)
            conn.send(rpc.accepted_reply(xid, rpc.PROC_UNAVAIL))
        else:
            conn.send(rpc.accepted_reply(xid, rpc.SUCCESS, body))

    def _log_unknown(self, conn: _Connection, call: rpc.Call) -> None:
        what = (call.prog, call.vers, call.proc)
        with self._lock:
            first = what not in self._logged_unknown
            self._logged_unknown.add(what)
        if first:
            log.warning("unsupported RPC program %d version %d procedure %d from %s (logged once)", *what, conn.peer)

    # -- procedures ---------------------------------------------------------------------------

    def _dispatch(self, conn: _Connection, call: rpc.Call) -> bytes | None:
        """The encoded result of a supported procedure, None for an unsupported one."""
        args = rpc.Unpacker(call.args)
        if call.proc == 0:  # NULL of every program
            args.done()
            return b""
        if call.prog == HNDSK_PROGRAM and call.proc == HNDSK_GETSPEC:
            return self._getspec(conn, args)
        if call.prog == HNDSK_PROGRAM and call.proc == HNDSK_EVENT_NOTIFY:
            return self._event_notify(conn, args)
        if call.prog == PMAP_PROGRAM:
            return self._portmap(conn, call.proc, args)
        if call.prog == DUMP_PROGRAM and call.proc == DUMP_DUMP:
            gfs_id = args.u64()
            args.done()
            out = rpc.Packer().u64(gfs_id).i32(0).i32(0)
            for prognum, (name, version) in PROGRAMS.items():
                out.u32(1).string(name).u64(prognum).u64(version)
            return out.u32(0).result()
        if call.prog == DUMP_PROGRAM and call.proc == DUMP_PING:
            return rpc.Packer().i32(0).i32(0).opaque(b"").result()
        return None

    def _getspec(self, conn: _Connection, args: rpc.Unpacker) -> bytes:
        flags = args.u32()
        key = args.string(MAX_REQUEST)
        args.opaque(MAX_REQUEST)  # xdata: op-versions, brick_name; nothing we need
        args.done()
        try:
            name = normalise_key(key)
        except VolfileKeyError:
            log.warning("GETSPEC from %s: invalid key %r", conn.peer, key[:80])
            return rpc.Packer().i32(-1).i32(errno.EINVAL).string("").opaque(b"").result()
        with self._lock:
            entry = self._volfiles.get(name)
            conn.keys.add(name)  # so a later set_volfile + notify reaches a process that asked early
        spec = None if entry is None else entry.local if conn.local else entry.remote
        if spec is None:
            why = "no volfile" if entry is None else "local peers only: volfile"
            log.warning("GETSPEC from %s: %s %s", conn.peer, why, name)
            return rpc.Packer().i32(-1).i32(errno.ENOENT).string("").opaque(b"").result()
        log.info("GETSPEC from %s: volfile %s (flags %d, %d bytes)", conn.peer, name, flags, len(spec))
        return rpc.Packer().i32(len(spec)).i32(0).opaque(spec).opaque(b"").result()

    def _event_notify(self, conn: _Connection, args: rpc.Unpacker) -> bytes:
        """gf_event_notify_rsp {op_ret, op_errno, dict}: accepted from local peers (the rebalance
        process sends its final status before it exits)."""
        op = args.i32()
        data = unserialize_dict(args.opaque(MAX_REQUEST))
        args.done()
        with self._lock:
            keys = set(conn.keys)
        handler = self.on_event
        if not conn.local or handler is None:
            log.warning("EVENT_NOTIFY %d from %s (keys %s) refused", op, conn.peer, sorted(keys))
            return rpc.Packer().i32(-1).i32(errno.EPERM).opaque(b"").result()
        log.info("EVENT_NOTIFY %d from %s (keys %s): %d values", op, conn.peer, sorted(keys), len(data))
        try:
            handler(op, keys, data)
        except Exception:
            log.exception("EVENT_NOTIFY %d from %s: handler failed", op, conn.peer)
            return rpc.Packer().i32(-1).i32(errno.EIO).opaque(b"").result()
        return rpc.Packer().i32(0).i32(0).opaque(b"").result()

    def _portmap(self, conn: _Connection, proc: int, args: rpc.Unpacker) -> bytes | None:
        if proc == PMAP_SIGNIN:
            brick, port, pid = args.string(MAX_REQUEST), args.i32(), args.i32()
            args.done()
            with self._lock:
                conn.bricks[brick] = port
            log.info("brick %s (pid %d) signed in from %s with port %d", brick, pid, conn.peer, port)
            return rpc.Packer().i32(0).i32(0).result()
        if proc == PMAP_SIGNOUT:
            brick, port = args.string(MAX_REQUEST), args.i32()
            args.i32()  # rdma port
            args.done()
            with self._lock:
                for c in self._connections:
                    c.bricks.pop(brick, None)
            log.info("brick %s (port %d) signed out from %s", brick, port, conn.peer)
            return rpc.Packer().i32(0).i32(0).result()
        if proc == PMAP_PORTBYBRICK:
            brick = args.string(MAX_REQUEST)
            args.done()
            with self._lock:
                found = next((c.bricks[brick] for c in self._connections if brick in c.bricks), 0)
            return rpc.Packer().i32(0 if found else -1).i32(0).i32(0).i32(found).result()
        if proc == PMAP_BRICKBYPORT:
            port = args.i32()
            args.done()
            with self._lock:
                name = next((b for c in self._connections for b, p in c.bricks.items() if p == port), "")
            return rpc.Packer().i32(0 if name else -1).i32(0).i32(0).string(name).result()
        return None
