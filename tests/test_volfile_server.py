"""The agent's volfile server against real GlusterFS 10.3 processes and a raw RPC client.

Real bricks fetch their volfiles from it, a stock `mount -t glusterfs` mounts through it,
an option change pushed with FETCHSPEC reaches a running brick, glfsheal fetches over its unix
socket, and malformed records are answered or cut off while real clients keep being served.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import rpc, volfile_server
from agent.volfile_server import (
    CBK_FETCHSPEC,
    CBK_PROGRAM,
    CBK_VERSION,
    HNDSK_GETSPEC,
    HNDSK_PROGRAM,
    HNDSK_VERSION,
    PMAP_PORTBYBRICK,
    PMAP_PROGRAM,
    PMAP_SIGNIN,
    PMAP_VERSION,
    VolfileKeyError,
    VolfileServer,
)
from control.volgen import BrickSpec, VolumeSpec, brick_volfile, brick_volfile_name, client_volfile
from tests.helpers import free_port, port_open, wait_until

START_TIMEOUT = 30.0
SOCKET_TIMEOUT = 10.0
SHORT_WAIT = 1.0  # how long "must not happen" checks wait
NODE_UUID = "5f1c0c1e-0000-4000-8000-00000000a9e1"
GLFSHEAL = next(
    (p for p in ("/usr/lib/x86_64-linux-gnu/glusterfs/glfsheal", "/usr/sbin/glfsheal") if os.path.exists(p)), None
)

GLUSTER_MARKS = [
    pytest.mark.skipif(
        any(shutil.which(b) is None for b in ("glusterfsd", "glusterfs", "mount.glusterfs")),
        reason="glusterfsd/glusterfs are not installed (Debian glusterfs-server)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="glusterfsd and FUSE mounts need root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing"),
]


def needs_gluster(test):
    for mark in GLUSTER_MARKS:
        test = mark(test)
    return test


# -- a raw RPC client ---------------------------------------------------------------------------


class RawClient:
    """Speaks ONC RPC by hand, so tests can send what no real client would."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT)
        self.xid = 1000

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: bytes = b"",
        *,
        rpcvers: int = rpc.RPC_VERSION,
        flavor: int = rpc.AUTH_GLUSTERFS_V2,
        fragments: int = 1,
    ) -> int:
        self.xid += 1
        p = rpc.Packer().u32(self.xid).u32(rpc.CALL).u32(rpcvers).u32(prog).u32(vers).u32(proc)
        cred = rpc.Packer().i32(os.getpid()).u32(0).u32(0).u32(0).opaque(b"").result()
        record = p.u32(flavor).opaque(cred).u32(rpc.AUTH_NONE).opaque(b"").result() + args
        cut = [len(record) * i // fragments for i in range(fragments + 1)]
        for i in range(fragments):
            last = rpc.LAST_FRAGMENT if i == fragments - 1 else 0
            part = record[cut[i] : cut[i + 1]]
            self.send_raw(struct.pack(">I", last | len(part)) + part)
        return self.xid

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return data

    def record(self) -> bytes:
        data = b""
        while True:
            (header,) = struct.unpack(">I", self._exact(4))
            data += self._exact(header & rpc.FRAGMENT_LENGTH_MASK)
            if header & rpc.LAST_FRAGMENT:
                return data

    def reply(self, xid: int) -> tuple[int, int, rpc.Unpacker]:
        """(reply_stat, accept_stat or reject_stat, rest) of the reply to `xid`."""
        u = rpc.Unpacker(self.record())
        assert (u.u32(), u.u32()) == (xid, rpc.REPLY)
        reply_stat = u.u32()
        if reply_stat == rpc.MSG_ACCEPTED:
            assert (u.u32(), u.opaque(400)) == (rpc.AUTH_NONE, b"")  # verifier
        return reply_stat, u.u32(), u

    def getspec(self, key: str, flags: int = 0) -> tuple[int, int, str]:
        xid = self.call(HNDSK_PROGRAM, HNDSK_VERSION, HNDSK_GETSPEC, getspec_args(key, flags))
        reply_stat, accept_stat, u = self.reply(xid)
        assert (reply_stat, accept_stat) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
        op_ret, op_errno, spec = u.i32(), u.i32(), u.string(1 << 20)
        u.opaque(1 << 20)
        u.done()
        return op_ret, op_errno, spec

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def getspec_args(key: str, flags: int = 0) -> bytes:
    return rpc.Packer().u32(flags).string(key).opaque(b"\0\0\0\0").result()


@pytest.fixture
def server() -> Iterator[VolfileServer]:
    srv = VolfileServer(["127.0.0.1"], free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def raw(server: VolfileServer) -> Iterator[RawClient]:
    client = RawClient(server.port)
    try:
        yield client
    finally:
        client.close()


# -- protocol, with a raw client ----------------------------------------------------------------


def test_visibility_local_and_remote_peers() -> None:
    """Brick/shd keys only for local peers; a client key serves local peers the trusted text."""
    from agent.facts import address_towards

    ip = address_towards("192.0.2.1", 9)  # this host's non-loopback address (no packet is sent)
    if ipaddress.ip_address(ip).is_loopback:
        pytest.skip("this host has no non-loopback address")
    srv = VolfileServer([ip, "127.0.0.1"], free_port())
    srv.set_volfile("gv1.10.0.0.1.data-b1", "brick volfile with password")
    srv.set_volfile("gv1", "trusted client", remote="plain client")
    srv.start()
    local, remote = RawClient(srv.port), RawClient(srv.port, host=ip)
    try:
        assert local.getspec("gv1.10.0.0.1.data-b1") == (27, 0, "brick volfile with password")
        assert local.getspec("/gv1") == (14, 0, "trusted client")
        assert remote.getspec("gv1.10.0.0.1.data-b1") == (-1, errno.ENOENT, "")
        assert remote.getspec("/gv1") == (12, 0, "plain client")
        assert remote.getspec("nothing") == (-1, errno.ENOENT, "")
        # changing only the remote text is a change
        assert srv.set_volfile("gv1", "trusted client", remote="plain client 2")
        assert not srv.set_volfile("gv1", "trusted client", remote="plain client 2")
    finally:
        local.close()
        remote.close()
        srv.stop()


def test_listen_addresses(tmp_path: Path) -> None:
    """The volfile server binds the node's address and loopback (the wildcard alone when that is the address)."""
    from agent.facts import address_towards
    from agent.volfiles import Volfiles, listen_addresses

    assert listen_addresses("192.0.2.7") == ["192.0.2.7", "127.0.0.1"]
    assert listen_addresses("node1.example.com") == ["node1.example.com", "127.0.0.1"]
    assert listen_addresses("fd00::7") == ["fd00::7", "::1"]
    assert listen_addresses("127.0.0.1") == ["127.0.0.1"] and listen_addresses("::1") == ["::1"]
    assert listen_addresses("0.0.0.0") == ["0.0.0.0"] and listen_addresses("::") == ["::"]
    assert listen_addresses("") == ["127.0.0.1"]

    ip = address_towards("192.0.2.1", 9)
    if ipaddress.ip_address(ip).is_loopback:
        pytest.skip("this host has no non-loopback address")
    volfiles = Volfiles(str(tmp_path), ip, free_port())
    volfiles.start()
    try:
        assert volfiles.server.addresses == [ip, "127.0.0.1"]
        assert port_open(ip, volfiles.port) and port_open("127.0.0.1", volfiles.port)
        assert not port_open("127.0.0.2", volfiles.port)  # not the wildcard
        with socket.socket(socket.AF_UNIX) as unix:
            unix.connect(volfiles.unix_path)
    finally:
        volfiles.stop()


def test_is_local_peer() -> None:
    from agent.volfile_server import is_local_peer

    assert is_local_peer(("127.0.0.1", 5)) and is_local_peer(("127.8.0.1", 5)) and is_local_peer(("::1", 5, 0, 0))
    assert is_local_peer(("::ffff:127.0.0.1", 5, 0, 0)) and is_local_peer("")  # a unix socket peer
    assert not is_local_peer(("192.0.2.7", 5)) and not is_local_peer(("::ffff:192.0.2.7", 5, 0, 0))
    assert not is_local_peer(("fe80::1%eth0", 5, 0, 2))


def test_getspec_serves_by_key_and_strips_one_slash(server: VolfileServer, raw: RawClient) -> None:
    assert server.set_volfile("gv1", "volume gv1\nend-volume\n") is True
    assert server.set_volfile("gv1", "volume gv1\nend-volume\n") is False
    assert server.keys() == ["gv1"]
    assert raw.getspec("/gv1", flags=1) == (len("volume gv1\nend-volume\n"), 0, "volume gv1\nend-volume\n")
    text = "é" * 3000  # op_ret counts bytes, not characters
    server.set_volfile("gv1", text)
    assert raw.getspec("gv1") == (len(text.encode()), 0, text)
    assert raw.getspec("nope") == (-1, errno.ENOENT, "")
    assert raw.getspec("x" * 300) == (-1, errno.EINVAL, "")
    assert server.remove_volfile("/gv1") is True and server.remove_volfile("gv1") is False
    assert raw.getspec("gv1") == (-1, errno.ENOENT, "")
    with pytest.raises(VolfileKeyError, match="no spaces"):
        server.set_volfile("a b", "x")


def test_multi_fragment_record_and_auth_flavors(server: VolfileServer, raw: RawClient) -> None:
    server.set_volfile("gv1", "volfile")
    xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, HNDSK_GETSPEC, getspec_args("gv1"), fragments=5)
    reply_stat, accept_stat, u = raw.reply(xid)
    assert (reply_stat, accept_stat, u.i32()) == (rpc.MSG_ACCEPTED, rpc.SUCCESS, len("volfile"))
    for flavor in (rpc.AUTH_NONE, rpc.AUTH_UNIX):
        xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, 0, flavor=flavor)
        assert raw.reply(xid)[:2] == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, 0, flavor=6)  # RPCSEC_GSS
    reply_stat, reject_stat, u = raw.reply(xid)
    assert (reply_stat, reject_stat, u.u32()) == (rpc.MSG_DENIED, rpc.AUTH_ERROR, rpc.AUTH_REJECTEDCRED)


def test_rpc_errors_and_portmap(server: VolfileServer, raw: RawClient, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="agent.volfile_server")
    xid = raw.call(1298437, 330, 27)  # the FOP program: a brick's, not ours
    assert raw.reply(xid)[:2] == (rpc.MSG_ACCEPTED, rpc.PROG_UNAVAIL)
    xid = raw.call(HNDSK_PROGRAM, 1, HNDSK_GETSPEC, getspec_args("gv1"))
    reply_stat, accept_stat, u = raw.reply(xid)
    assert (reply_stat, accept_stat, u.u32(), u.u32()) == (rpc.MSG_ACCEPTED, rpc.PROG_MISMATCH, 2, 2)
    for _ in range(2):
        xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, 6)  # GET_VOLUME_INFO
        assert raw.reply(xid)[:2] == (rpc.MSG_ACCEPTED, rpc.PROC_UNAVAIL)
    unknown = [
        r.getMessage() for r in caplog.records if "unsupported RPC program 14398633 version 2 procedure 6" in r.message
    ]
    assert len(unknown) == 1 and "127.0.0.1:" in unknown[0]
    assert any("unsupported RPC program 1298437" in r.message for r in caplog.records)

    signin = rpc.Packer().string("/bricks/b1").i32(49152).i32(1234).result()
    xid = raw.call(PMAP_PROGRAM, PMAP_VERSION, PMAP_SIGNIN, signin)
    reply_stat, accept_stat, u = raw.reply(xid)
    assert (reply_stat, accept_stat, u.i32(), u.i32()) == (rpc.MSG_ACCEPTED, rpc.SUCCESS, 0, 0)
    other = RawClient(server.port)
    try:
        for brick, expected in (("/bricks/b1", (0, 0, 0, 49152)), ("/bricks/none", (-1, 0, 0, 0))):
            xid = other.call(PMAP_PROGRAM, PMAP_VERSION, PMAP_PORTBYBRICK, rpc.Packer().string(brick).result())
            reply_stat, accept_stat, u = other.reply(xid)
            assert (u.i32(), u.i32(), u.i32(), u.i32()) == expected
    finally:
        other.close()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-garbage"),
        pytest.param(struct.pack(">I", rpc.LAST_FRAGMENT | 0x7FFFFFF0), id="oversized-length"),
        pytest.param(rpc.frame(b"\0\0\0\1"), id="truncated-header"),
        pytest.param(
            rpc.frame(struct.pack(">IIIIII", 7, 0, 2, HNDSK_PROGRAM, 2, 2) + b"\0\0\0\0\xff\xff"), id="bad-cred"
        ),
    ],
)
def test_malformed_records_close_the_connection(server: VolfileServer, raw: RawClient, caplog, bad: bytes) -> None:
    caplog.set_level(logging.WARNING, logger="agent.volfile_server")
    server.set_volfile("gv1", "volfile")
    raw.send_raw(bad)
    assert raw.closed_by_server()
    assert any("dropping connection from 127.0.0.1:" in r.getMessage() for r in caplog.records)
    after = RawClient(server.port)
    try:
        assert after.getspec("gv1") == (7, 0, "volfile")
    finally:
        after.close()


def test_malformed_arguments_get_garbage_args_then_close(server: VolfileServer, raw: RawClient) -> None:
    xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, HNDSK_GETSPEC, rpc.Packer().u32(0).u32(1 << 20).result())
    assert raw.reply(xid)[:2] == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)
    assert raw.closed_by_server()


def test_wrong_rpc_version_gets_rpc_mismatch(server: VolfileServer, raw: RawClient) -> None:
    xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, HNDSK_GETSPEC, getspec_args("gv1"), rpcvers=3)
    reply_stat, reject_stat, u = raw.reply(xid)
    assert (reply_stat, reject_stat, u.u32(), u.u32()) == (rpc.MSG_DENIED, rpc.RPC_MISMATCH, 2, 2)
    assert raw.closed_by_server()


def test_hung_client_does_not_block_others(server: VolfileServer, raw: RawClient, monkeypatch) -> None:
    monkeypatch.setattr(volfile_server, "RECORD_TIMEOUT", SHORT_WAIT)
    server.set_volfile("gv1", "volfile")
    hung = RawClient(server.port)
    try:
        hung.send_raw(struct.pack(">I", rpc.LAST_FRAGMENT | 100) + b"only part")
        assert raw.getspec("gv1") == (7, 0, "volfile")
        wait_until(hung.closed_by_server, timeout=SOCKET_TIMEOUT, what="the half-record client to be cut off")
        assert raw.getspec("gv1") == (7, 0, "volfile")
    finally:
        hung.close()


def test_connection_count_is_bounded(server: VolfileServer, monkeypatch) -> None:
    monkeypatch.setattr(volfile_server, "MAX_CONNECTIONS", 2)
    server.set_volfile("gv1", "volfile")
    clients = [RawClient(server.port) for _ in range(2)]
    try:
        for c in clients:
            assert c.getspec("gv1")[0] == 7
        extra = RawClient(server.port)
        assert extra.closed_by_server()
        extra.close()
        clients.pop().close()
        wait_until(lambda: len(server.connections()) == 1, timeout=SOCKET_TIMEOUT, what="a connection slot to free")
        clients.append(RawClient(server.port))
        assert clients[-1].getspec("gv1")[0] == 7
    finally:
        for c in clients:
            c.close()


def test_notify_pushes_fetchspec_to_connections_of_the_key(server: VolfileServer) -> None:
    server.set_volfile("gv1", "one")
    server.set_volfile("gv2", "two")
    a, b = RawClient(server.port), RawClient(server.port)
    try:
        a.getspec("gv1")
        b.getspec("/gv2")
        assert server.notify(["gv1"]) == 1
        calls = []
        for _ in range(2):
            assert server.notify() == 2
        for client, expected in ((a, 3), (b, 2)):
            for _ in range(expected):
                call = rpc.decode_call(client.record())
                assert (call.prog, call.vers, call.proc, call.args) == (CBK_PROGRAM, CBK_VERSION, CBK_FETCHSPEC, b"")
                calls.append(call.xid)
        assert len(set(calls)) == len(calls)  # a fresh xid for every push
        b.sock.settimeout(SHORT_WAIT)
        with pytest.raises(TimeoutError):
            b.record()  # nothing more for gv2
    finally:
        a.close()
        b.close()
    wait_until(lambda: server.connections() == [], timeout=SOCKET_TIMEOUT, what="closed connections to be forgotten")
    assert server.notify() == 0


# -- real GlusterFS processes -------------------------------------------------------------------


def _mounted(mountpoint: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(mountpoint) for line in f)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Gluster:
    """A volfile server, bricks that fetch from it and mounts through it; all undone in close()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sockdir = Path(tempfile.mkdtemp(prefix="vfs", dir="/tmp"))  # unix socket paths < 108 bytes
        self.server = VolfileServer(["127.0.0.1"], free_port(), unix_path=str(self.sockdir / "glusterd.socket"))
        self.server.start()
        self.pidfiles: list[Path] = []
        self.mountpoints: list[Path] = []

    def volume(self, name: str, count: int = 1) -> VolumeSpec:
        bricks = tuple(
            BrickSpec("local", "127.0.0.1", str(self.root / f"{name}-b{i}"), free_port()) for i in range(count)
        )
        kind = {"type": "replicate", "replica": count} if count > 1 else {"type": "distribute"}
        return VolumeSpec(name=name, id=str(uuid.uuid4()), bricks=bricks, **kind)  # type: ignore[arg-type]

    def publish(self, vol: VolumeSpec) -> list[str]:
        """Serve the volume's brick and client volfiles; returns the brick keys."""
        keys = [brick_volfile_name(vol, i).removesuffix(".vol") for i in range(len(vol.bricks))]
        for i, key in enumerate(keys):
            self.server.set_volfile(key, brick_volfile(vol, i))
        self.server.set_volfile(vol.name, client_volfile(vol))
        return keys

    def start_bricks(self, vol: VolumeSpec) -> list[int]:
        pids = []
        for i, (brick, key) in enumerate(zip(vol.bricks, self.publish(vol), strict=True)):
            path = Path(brick.path)
            path.mkdir()
            (path / ".glusterfs").mkdir(mode=0o600)
            os.setxattr(path, "trusted.glusterfs.volume-id", uuid.UUID(vol.id).bytes)
            pidfile = self.root / f"{key}.pid"
            self.pidfiles.append(pidfile)
            command = [
                "glusterfsd",
                "-s", "127.0.0.1",
                "--volfile-server-port", str(self.server.port),
                "--volfile-id", key,
                "-p", str(pidfile),
                "-l", str(self.root / f"{key}.log"),
                "-S", str(self.sockdir / f"b{i}.socket"),
                "--brick-name", brick.path,
                "--brick-port", str(brick.port),
                "--process-name", "brick",
                "--xlator-option", f"*-posix.glusterd-uuid={NODE_UUID}",
            ]  # fmt: skip
            # exit status 0 needs the portmap SIGNIN answered with success
            result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT)
            assert result.returncode == 0, f"glusterfsd {key}: {result.stderr}"
            wait_until(lambda: port_open("127.0.0.1", brick.port), START_TIMEOUT, what=f"brick {key} listening")
            pids.append(int(pidfile.read_text()))
        return pids

    def mount(self, vol: VolumeSpec) -> Path:
        mountpoint = self.root / f"mnt-{vol.name}"
        mountpoint.mkdir()
        self.mountpoints.append(mountpoint)
        options = f"server-port={self.server.port},log-file={self.root / f'mnt-{vol.name}.log'}"
        command = ["mount", "-t", "glusterfs", "-o", options, f"127.0.0.1:/{vol.name}", str(mountpoint)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT)
        assert result.returncode == 0, f"mount: {result.stdout}{result.stderr}"
        wait_until(lambda: _mounted(mountpoint), START_TIMEOUT, what=f"{mountpoint} mounted")
        return mountpoint

    def close(self) -> None:
        for mountpoint in self.mountpoints:
            if _mounted(mountpoint) and subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        for pidfile in self.pidfiles:
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError):
                continue
            if _pid_alive(pid):
                os.kill(pid, 15)
                try:
                    wait_until(lambda: not _pid_alive(pid), 10, what=f"pid {pid} to exit")
                except AssertionError:
                    os.kill(pid, 9)
        self.server.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)


@pytest.fixture
def gluster(tmp_path: Path) -> Iterator[Gluster]:
    g = Gluster(tmp_path)
    try:
        yield g
    finally:
        g.close()


def _write(mountpoint: Path, name: str) -> int:
    """0 if a new file could be written and read back through the mount, else the errno."""
    try:
        (mountpoint / name).write_bytes(name.encode())
        assert (mountpoint / name).read_bytes() == name.encode()
        return 0
    except OSError as exc:
        return exc.errno or -1


@needs_gluster
def test_brick_fetches_volfile_and_signs_in(gluster: Gluster) -> None:
    vol = gluster.volume("vfs1")
    (pid,) = gluster.start_bricks(vol)
    key = brick_volfile_name(vol, 0).removesuffix(".vol")
    (conn,) = gluster.server.connections()
    assert conn["keys"] == [key]
    assert conn["bricks"] == {vol.bricks[0].path: vol.bricks[0].port}
    assert _pid_alive(pid)


@needs_gluster
def test_stock_mount_reads_and_writes(gluster: Gluster) -> None:
    vol = gluster.volume("vfs2")
    gluster.start_bricks(vol)
    mountpoint = gluster.mount(vol)
    assert _write(mountpoint, "hello.txt") == 0
    assert (Path(vol.bricks[0].path) / "hello.txt").read_bytes() == b"hello.txt"
    assert sorted(k for c in gluster.server.connections() for k in c["keys"]) == sorted(
        [vol.name, brick_volfile_name(vol, 0).removesuffix(".vol")]
    )


@needs_gluster
def test_option_change_reaches_running_brick(gluster: Gluster) -> None:
    vol = gluster.volume("vfs3")
    (pid,) = gluster.start_bricks(vol)
    mountpoint = gluster.mount(vol)
    assert _write(mountpoint, "before") == 0
    key = brick_volfile_name(vol, 0).removesuffix(".vol")

    read_only = dataclasses.replace(vol, options={"features.read-only": "on"})
    assert gluster.server.set_volfile(key, brick_volfile(read_only, 0)) is True
    assert gluster.server.notify([key]) == 1  # the brick's connection only, not the mount's
    counter = iter(range(1000))
    wait_until(lambda: _write(mountpoint, f"ro-{next(counter)}") == errno.EROFS, 15, what="writes to fail with EROFS")
    assert (mountpoint / "before").read_bytes() == b"before"
    assert _pid_alive(pid) and int((gluster.root / f"{key}.pid").read_text()) == pid
    assert _mounted(mountpoint)

    assert gluster.server.set_volfile(key, brick_volfile(vol, 0)) is True
    assert gluster.server.notify() == 2  # all connections: the mount refetches an unchanged volfile
    wait_until(lambda: _write(mountpoint, f"rw-{next(counter)}") == 0, 15, what="writes to succeed again")
    assert _pid_alive(pid) and _mounted(mountpoint)


@needs_gluster
def test_mount_survives_volfile_server_stop(gluster: Gluster) -> None:
    vol = gluster.volume("vfs4")
    (pid,) = gluster.start_bricks(vol)
    mountpoint = gluster.mount(vol)
    assert _write(mountpoint, "one") == 0
    gluster.server.stop()
    assert not port_open("127.0.0.1", gluster.server.port)
    assert _write(mountpoint, "two") == 0
    assert (mountpoint / "one").read_bytes() == b"one"
    assert _pid_alive(pid) and _mounted(mountpoint)


@needs_gluster
def test_real_clients_still_served_after_malformed_records(gluster: Gluster) -> None:
    vol = gluster.volume("vfs5")
    gluster.publish(vol)
    for bad in (b"garbage!", struct.pack(">I", rpc.LAST_FRAGMENT | 0x7FFFFFF0)):
        raw = RawClient(gluster.server.port)
        raw.send_raw(bad)
        assert raw.closed_by_server()
        raw.close()
    gluster.start_bricks(vol)
    assert _write(gluster.mount(vol), "after") == 0


@needs_gluster
@pytest.mark.skipif(GLFSHEAL is None, reason="glfsheal is not installed")
def test_glfsheal_fetches_over_the_unix_socket(gluster: Gluster) -> None:
    vol = gluster.volume("vfs6", count=3)
    gluster.start_bricks(vol)
    assert GLFSHEAL is not None
    sock = str(gluster.sockdir / "glusterd.socket")
    result = subprocess.run(
        [GLFSHEAL, vol.name, "glusterd-sock", sock], capture_output=True, text=True, timeout=START_TIMEOUT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for brick in vol.bricks:
        assert f"Brick 127.0.0.1:{brick.path}\nStatus: Connected\nNumber of entries: 0" in result.stdout


def test_event_notify_hands_the_status_dict_to_the_agent(server: VolfileServer, raw: RawClient) -> None:
    """A rebalance process's final status (GF_HNDSK_EVENT_NOTIFY) reaches `on_event` with the keys its connection
    fetched; without a handler it is refused."""
    from agent.brickop import serialize_dict

    args = rpc.Packer().i32(0).opaque(serialize_dict({"status": "3", "files": "12", "size": "4096"})).result()
    xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, 5, args)
    reply_stat, accept_stat, u = raw.reply(xid)
    assert (reply_stat, accept_stat, u.i32()) == (rpc.MSG_ACCEPTED, rpc.SUCCESS, -1)
    got: list[tuple[int, set[str], dict[str, str]]] = []
    server.on_event = lambda op, keys, data: got.append((op, keys, data))
    server.set_volfile("rebalance/gv1", "volfile")
    raw.reply(raw.call(HNDSK_PROGRAM, HNDSK_VERSION, HNDSK_GETSPEC, getspec_args("rebalance/gv1")))
    xid = raw.call(HNDSK_PROGRAM, HNDSK_VERSION, 5, args)
    reply_stat, accept_stat, u = raw.reply(xid)
    assert (reply_stat, accept_stat, u.i32(), u.i32()) == (rpc.MSG_ACCEPTED, rpc.SUCCESS, 0, 0)
    assert got == [(0, {"rebalance/gv1"}, {"status": "3", "files": "12", "size": "4096"})]
